/*
 * main.c - the embd executable: dispatches to a subcommand.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "emb.h"
#include "emb_kernels.h"
#include "srv.h"

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

/* A store file truncated or rewritten in place while mapped: the kernel raises SIGBUS on the
 * pages that vanished. The faulting thread cannot go on (the bytes it was reading no longer
 * exist) and nothing it read can be trusted, so the process names the store in one log line and
 * exits with CLI_EXIT_STORE_CHANGED; a supervisor restarts it on the file as it now is. A SIGBUS
 * anywhere else is a bug: the default action (core) is restored and the access faults again. */
static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
    (void)uctx;
    uint64_t off = 0;
    const char *path = emb_store_mapping_at(si->si_addr, &off);
    if (!path) {
        signal(sig, SIG_DFL);
        return;
    }
    char num[24], *p = num + sizeof num;
    *--p = 0;
    do
        *--p = (char)('0' + off % 10);
    while (off /= 10);
    srv_log(SRV_LOG_ERROR,
            "SIGBUS: a store file was truncated or rewritten in place while mapped; exiting "
            "(replace a store by renaming a new file over it)",
            "path", path, "offset", p, "exit_code", CLI_EXIT_STORE_CHANGED_STR, NULL);
    _exit(CLI_EXIT_STORE_CHANGED);
}

int main(int argc, char **argv)
{
    struct sigaction sa = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    srv_log_init(0, SRV_LOG_INFO); /* text for the CLI; serve sets its own format */
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
