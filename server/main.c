/*
 * main.c - the embd executable: dispatches to a subcommand.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "emb.h"
#include "emb_kernels.h"

typedef struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand subcommands[] = {
    {"pack", cmd_pack, "convert .npy, safetensors, GGUF, word2vec, GloVe or fvecs into a store"},
    {"info", cmd_info, "describe a store: header, sections, codecs, keys, metadata"},
    {"verify", cmd_verify, "check every section and checksum of a store"},
    {"search", cmd_search, "nearest neighbours of a row, a key or a vector"},
    {"serve", cmd_serve, "serve stores over HTTP/JSON"},
    {"gen", cmd_gen, "generate demo and benchmark data (clustered vectors, readable keys)"},
    {"bench", cmd_bench, "measure bandwidth, scan GB/s, queries/s and recall of every search mode"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: embd [--version] [--help] COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(out, "  %-8s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(out, "\n'embd COMMAND --help' describes each command's options.\n"
                 "Environment: EMBD_SIMD=scalar|avx2|avx512 narrows the SIMD kernels.\n");
}

int cli_parse_u64(const char *s, unsigned long long max, unsigned long long *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("embd %s\n", EMB_VERSION_STRING);
        return 0;
    }
    if (emb_kernels_init(NULL) != 0)
        fprintf(stderr, "embd: warning: unknown EMBD_SIMD value, using the best level\n");
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (!strcmp(argv[1], subcommands[i].name))
            return subcommands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "embd: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
