/*
 * cmd_pack.c - `embd pack INPUT -o OUT.emb`: the command-line face of emb_pack.
 *
 * Shows a progress line on stderr when stderr is a terminal, and always ends with a summary:
 * what was read, how fast, and what quantization cost (fidelity and recall), with a warning
 * when 1-bit codes lose much on this table.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "emb_pack.h"

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: embd pack INPUT -o OUT.emb [options]\n"
        "\n"
        "Converts an embedding table into an embd store, written atomically.\n"
        "Inputs: .npy (f32/f16/f64, C order), safetensors (F32/F16/BF16), GGUF (F32/F16/BF16/\n"
        "Q1_0, tokens as keys), word2vec binary and text, fastText .vec, GloVe text, fvecs.\n"
        "\n"
        "options:\n"
        "  -o, --output FILE      the store to write (required)\n"
        "  -f, --format FMT       auto|npy|safetensors|gguf|word2vec|word2vec-text|glove|fvecs\n"
        "                         (default auto: magic bytes, then extension, then content)\n"
        "  -t, --tensor NAME      safetensors/GGUF tensor (default: the only 2-D tensor;\n"
        "                         GGUF: token_embd.weight)\n"
        "  -d, --dtype CODECS     f16 | q1 | f16+q1 | f32 | f32+q1 (default f16+q1)\n"
        "  -k, --keys FILE        one key per line for inputs without keys (overrides the\n"
        "                         input's own keys); line i is the key of input row i\n"
        "  -n, --normalize        L2-normalise every row before encoding\n"
        "      --no-q1-interleave skip the second, interleaved copy of the q1 rows that q1 x q1\n"
        "                         scans read (18 bytes per 128 values per row)\n"
        "  -m, --metric M         default metric stored and used for evaluation: cos|dot|l2\n"
        "                         (default cos)\n"
        "  -r, --rows A:B         keep input rows [A, B) only (a shard; B may be empty)\n"
        "  -e, --eval-queries N   rows sampled to measure recall@10 (default 100, 0 = skip)\n"
        "  -s, --seed N           seed of that sample (default 1)\n"
        "  -j, --json             print the report (the stored metadata) as JSON on stdout\n"
        "  -q, --quiet            no progress line\n"
        "  -h, --help             this text\n");
}

static int parse_codecs(const char *s, uint32_t *out)
{
    static const struct {
        const char *name;
        uint32_t codecs;
    } all[] = {{"f16", EMB_CODEC_F16},
               {"q1", EMB_CODEC_Q1},
               {"f16+q1", EMB_CODEC_F16 | EMB_CODEC_Q1},
               {"q1+f16", EMB_CODEC_F16 | EMB_CODEC_Q1},
               {"f32", EMB_CODEC_F32},
               {"f32+q1", EMB_CODEC_F32 | EMB_CODEC_Q1}};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(s, all[i].name)) {
            *out = all[i].codecs;
            return 0;
        }
    return -1;
}

static int parse_range(const char *s, uint64_t *a, uint64_t *b)
{
    const char *colon = strchr(s, ':');
    if (!colon)
        return -1;
    char first[32];
    size_t n = (size_t)(colon - s);
    if (n == 0 || n >= sizeof first)
        return -1;
    memcpy(first, s, n);
    first[n] = 0;
    unsigned long long x, y = UINT64_MAX;
    if (cli_parse_u64(first, UINT64_MAX - 1, &x) != 0)
        return -1;
    if (colon[1] && cli_parse_u64(colon + 1, UINT64_MAX - 1, &y) != 0)
        return -1;
    if (y <= x)
        return -1;
    *a = x;
    *b = y;
    return 0;
}

typedef struct progress_state {
    double t0, last;
    int shown;
} progress_state;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void on_progress(void *ctx, const emb_pack_progress *p)
{
    progress_state *st = ctx;
    double t = now_s();
    if (t - st->last < 0.2)
        return;
    st->last = t;
    double el = t - st->t0;
    double mbs = el > 0 ? (double)p->bytes / el / 1e6 : 0;
    double frac = p->total_bytes ? (double)p->bytes / (double)p->total_bytes : 0;
    if (frac > 1)
        frac = 1;
    double eta = frac > 0 ? el / frac - el : 0;
    fprintf(stderr, "\r  %-10s %12llu rows  %5.1f%%  %8.1f MB/s  ETA %5.0fs ", p->phase,
            (unsigned long long)p->rows, frac * 100, mbs, eta);
    st->shown = 1;
}

static void print_summary(const emb_pack_opts *o, const emb_pack_report *r)
{
    static const char *names[3] = {"f32", "f16", "q1"};
    struct stat st;
    long long out_bytes = stat(o->output, &st) == 0 ? (long long)st.st_size : -1;
    double mbs = r->read_seconds > 0 ? (double)r->input_bytes / r->read_seconds / 1e6 : 0;
    printf("packed %llu rows x %u from %s (%s %s, %.1f MB) in %.2f s (read %.1f MB/s) -> %s "
           "(%.1f MB)\n",
           (unsigned long long)r->rows, r->dim, o->input, emb_input_format_name(r->input.format),
           r->input.source_dtype, (double)r->input.file_bytes / 1e6, r->total_seconds, mbs,
           o->output, (double)out_bytes / 1e6);
    printf("fidelity (cosine of each stored row to its original):");
    for (int i = 0; i < 3; i++)
        if (r->has_fidelity[i])
            printf("  %s mean %.6f worst %.6f (row %llu)", names[i], r->fidelity[i].mean_cos,
                   r->fidelity[i].min_cos, (unsigned long long)r->fidelity[i].worst_row);
    printf("\n");
    if (r->duplicate_keys)
        printf("duplicate keys: %llu (the index maps each to its first row)\n",
               (unsigned long long)r->duplicate_keys);
    if (!r->eval_queries)
        return;
    printf("recall@10 vs exact f32 search, %u sampled queries (%s):", r->eval_queries,
           emb_metric_name(o->metric));
    if (r->recall_f16 >= 0)
        printf("  f16 %.3f", r->recall_f16);
    if (r->recall_q1 >= 0)
        printf("  q1-only %.3f", r->recall_q1);
    printf("\n");
    if (r->n_oversample) {
        printf("two-stage (q1 scan, exact rescoring) by oversampling factor:");
        for (uint32_t f = 0; f < r->n_oversample; f++)
            printf("  x%u %.3f", r->oversample[f], r->recall_two_stage[f]);
        printf("\n");
        double best = 0;
        for (uint32_t f = 0; f < r->n_oversample; f++)
            if (r->oversample[f] == r->oversample_default)
                best = r->recall_two_stage[f];
        if (r->oversample_reached)
            printf("default oversample: %u (smallest factor with recall@10 >= 0.95: %.3f)\n",
                   r->oversample_default, best);
        else
            printf("warning: no oversampling factor reaches recall@10 0.95 on this table; best "
                   "%.3f at x%u, stored as the default. Prefer exact search (f16) here.\n",
                   best, r->oversample_default);
    }
    if (r->recall_q1 >= 0 && r->recall_q1 < 0.5)
        printf("warning: 1-bit codes lose much on this table (q1-only recall@10 %.3f)\n",
               r->recall_q1);
}

int cmd_pack(int argc, char **argv)
{
    static const struct option longopts[] = {{"output", required_argument, 0, 'o'},
                                             {"format", required_argument, 0, 'f'},
                                             {"tensor", required_argument, 0, 't'},
                                             {"dtype", required_argument, 0, 'd'},
                                             {"keys", required_argument, 0, 'k'},
                                             {"normalize", no_argument, 0, 'n'},
                                             {"no-q1-interleave", no_argument, 0, 'I'},
                                             {"metric", required_argument, 0, 'm'},
                                             {"rows", required_argument, 0, 'r'},
                                             {"eval-queries", required_argument, 0, 'e'},
                                             {"seed", required_argument, 0, 's'},
                                             {"json", no_argument, 0, 'j'},
                                             {"quiet", no_argument, 0, 'q'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    emb_pack_opts o = {.codecs = EMB_CODEC_F16 | EMB_CODEC_Q1,
                       .metric = EMB_METRIC_COS,
                       .row_end = UINT64_MAX,
                       .eval_queries = 100,
                       .seed = 1};
    int json = 0, quiet = 0, c;
    unsigned long long v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:f:t:d:k:nm:r:e:s:jqh", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': o.output = optarg; break;
        case 'f':
            if (emb_input_format_parse(optarg, &o.format) != 0) {
                fprintf(stderr, "embd pack: unknown --format '%s'\n", optarg);
                return 2;
            }
            break;
        case 't': o.tensor = optarg; break;
        case 'd':
            if (parse_codecs(optarg, &o.codecs) != 0) {
                fprintf(stderr, "embd pack: --dtype must be f16, q1, f16+q1, f32 or f32+q1\n");
                return 2;
            }
            break;
        case 'k': o.keys_file = optarg; break;
        case 'n': o.normalize = 1; break;
        case 'I': o.no_q1_interleave = 1; break;
        case 'm':
            if (emb_metric_parse(optarg, &o.metric) != 0) {
                fprintf(stderr, "embd pack: --metric must be cos, dot or l2\n");
                return 2;
            }
            break;
        case 'r':
            if (parse_range(optarg, &o.row_begin, &o.row_end) != 0) {
                fprintf(stderr, "embd pack: --rows wants A:B with A < B (or A:)\n");
                return 2;
            }
            break;
        case 'e':
            if (cli_parse_u64(optarg, 100000, &v) != 0) {
                fprintf(stderr, "embd pack: --eval-queries wants 0..100000\n");
                return 2;
            }
            o.eval_queries = (uint32_t)v;
            break;
        case 's':
            if (cli_parse_u64(optarg, UINT64_MAX, &v) != 0) {
                fprintf(stderr, "embd pack: --seed wants a non-negative integer\n");
                return 2;
            }
            o.seed = v;
            break;
        case 'j': json = 1; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || !o.output) {
        fprintf(stderr, "embd pack: need one INPUT and -o OUT.emb\n");
        usage(stderr);
        return 2;
    }
    o.input = argv[optind];
    progress_state ps = {.t0 = now_s()};
    if (!quiet && isatty(STDERR_FILENO)) {
        o.progress = on_progress;
        o.progress_ctx = &ps;
    }
    emb_pack_report *rep = malloc(sizeof *rep);
    if (!rep) {
        fprintf(stderr, "embd pack: out of memory\n");
        return 1;
    }
    emb_error err = {0};
    int rc = emb_pack(&o, rep, &err);
    if (ps.shown)
        fprintf(stderr, "\r%80s\r", "");
    if (rc) {
        fprintf(stderr, "embd pack: %s\n", err.msg[0] ? err.msg : emb_strerror(rc));
        free(rep);
        return 1;
    }
    if (json)
        fputs(rep->meta, stdout);
    else
        print_summary(&o, rep);
    free(rep);
    return 0;
}
