/*
 * cmd_bench.c - `embd bench`: how fast and how well searches run, next to the machine's limit.
 *
 * In one run, with this same binary, it measures the machine's read bandwidth (a streaming sum
 * over a buffer much larger than the caches, one thread and all threads) and then, per table and
 * search mode, queries/s and scan GB/s for k nearest neighbours: one query on one thread
 * (emb_search), one query split across all threads (emb_search_scan on row ranges, one heap per
 * thread, emb_topk_merge, emb_search_finish), batches of 64 queries on one thread
 * (emb_search_batch) and on every thread (one independent batch per thread), plus recall@k of
 * each mode against exact f32 search and a check that the split answers equal emb_search's.
 *
 * Tables: by default it generates clustered rows with `embd gen --kind clusters` run in process
 * (cmd_gen, the same generator and seed as the command line, so loadtest/faiss_compare can make
 * identical data) into a temporary directory, N + nq rows as f32 .npy; the first N rows are
 * packed with emb_pack as f16, q1 and f16+q1 stores and the last nq rows are the queries. The
 * .npy stays mapped read-only: it is the f32 ground truth. Writing the stores with emb_writer
 * from rows made here was rejected: it would duplicate the generator, and packing through
 * emb_pack also records the store's default oversampling exactly as `embd pack` does. Stores
 * given with --store are measured too; --npy names the f32 rows they were packed from (for
 * recall; rows past the store's count are the queries unless --queries names a file).
 *
 * Modes per store: "f32" and "f16" (exact scans, codec forced), "q1" (the 1-bit scan alone,
 * q1 x q8: the query rounded to int8 per block, the default), "q1-f32q" (the same against the
 * f32 query), "q1-q1q" (against the query's own signs and block scales: q1 x q1, XOR +
 * popcount), "two-stage" (q1 x q8 scan, k x oversample candidates rescored exactly, at the
 * store's default oversampling) and "two-stage-q1q" (the same with a q1 x q1 scan); then
 * "two-stage xN" and "two-stage-q1q xN" for each N of --oversample, or without it
 * "two-stage-q1q xN" at 2 and 4 times the store's default (a cheaper, less accurate first stage
 * needs more candidates for the same recall). Metric: dot by default (what faiss IndexFlatIP
 * computes).
 *
 * Timing: every measurement runs --repeats slices of --seconds / --repeats each (at least one
 * operation per slice) and reports the best and the median slice. Nothing asserts on time. The
 * one-query modes alternate their slices with slices of the bandwidth test on as many threads
 * (measure_paired), and %bw is the median of the ratios of adjacent slices: on a machine shared
 * with other work the bandwidth itself moves by 2x within minutes, so a ratio of two figures
 * measured apart says little.
 * GB/s counts the bytes a query must read: rows x the scanned codec's row size (plus the
 * rescored candidates' rows for two-stage); for a batch the rows are read once per batch.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "emb.h"
#include "emb_kernels.h"
#include "emb_pack.h"

#define BENCH_MAX_STORES      16
#define BENCH_MAX_TABLES      (BENCH_MAX_STORES + 6)
#define BENCH_MAX_THREADS     256u
#define BENCH_BATCH           64u
#define BENCH_DEFAULT_ROWS    100000ull
#define BENCH_DEFAULT_DIM     128u
#define BENCH_LARGE_ROWS      1000000ull
#define BENCH_LARGE_DIM       768u
#define BENCH_DEFAULT_NQ      1000u
#define BENCH_DEFAULT_RQ      200u
#define BENCH_DEFAULT_REPEATS 5u
#define BENCH_DEFAULT_BW_MIB  1024u
#define BENCH_DEFAULT_SEED    42ull
#define BENCH_CHECK_QUERIES   32u
#define BENCH_TRUTH_BLOCK     64u /* rows scored for all queries before the next block */
#define BENCH_MAX_OVERSAMPLES 6u

/* ---- options --------------------------------------------------------------------------- */

enum { CODEC_SEL_F16 = 1, CODEC_SEL_Q1 = 2, CODEC_SEL_F16Q1 = 4, CODEC_SEL_ALL = 7 };

typedef struct bench_opts {
    uint64_t rows;
    uint32_t dim;
    int large, no_gen;
    unsigned codec_sel;
    const char *stores[BENCH_MAX_STORES];
    int n_stores;
    const char *npy, *queries, *json, *tmpdir;
    uint32_t threads, nq, rq, repeats, k, bw_mib;
    double seconds;
    uint64_t seed;
    emb_metric metric;
    uint32_t oversample[BENCH_MAX_OVERSAMPLES]; /* --oversample: extra two-stage modes */
    uint32_t n_oversample;
} bench_opts;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: embd bench [options]\n"
            "\n"
            "Measures read bandwidth, then scan GB/s, queries/s and recall@k of every search\n"
            "mode on generated tables and on any store given. Prints a table; --json writes it.\n"
            "\n"
            "options:\n"
            "      --rows N            rows of the generated table (default %llu)\n"
            "      --dim D             dimension of the generated table (default %u)\n"
            "      --large             also generate %llu x %u\n"
            "      --no-gen            generate nothing: measure the --store files only\n"
            "      --codec C           f16 | q1 | f16+q1 | all: generated stores (default all)\n"
            "      --store FILE        also measure this store (repeatable, up to %d)\n"
            "      --npy FILE          f32 .npy the --store files were packed from: ground\n"
            "                          truth for recall; rows past the store's are queries\n"
            "      --queries FILE      f32 .npy of queries for the --store files (default: rows\n"
            "                          of --npy past the store's, else rows of the store)\n"
            "      --nq N              queries generated and timed (default %u)\n"
            "      --recall-queries N  queries used for recall (default %u)\n"
            "  -k, --k K               neighbours per query (default 10)\n"
            "      --metric M          dot | cos | l2 (default dot)\n"
            "      --oversample LIST   comma-separated oversampling factors (1..100, up to %u):\n"
            "                          two-stage modes at each, with the q1 x q8 and the q1 x q1\n"
            "                          first stage (default: q1 x q1 at 2x and 4x the store's)\n"
            "  -t, --threads T         threads for the parallel modes (default: online CPUs)\n"
            "  -s, --seconds S         seconds per measurement (default 1)\n"
            "      --repeats R         slices per measurement: best and median (default %u)\n"
            "      --bw-mib M          bandwidth buffer in MiB (default %u)\n"
            "      --seed N            generator seed (default %llu)\n"
            "      --tmpdir DIR        where generated files go (default $TMPDIR or /tmp)\n"
            "      --json OUT          write the results as JSON to OUT\n"
            "  -h, --help              this text\n",
            BENCH_DEFAULT_ROWS, BENCH_DEFAULT_DIM, BENCH_LARGE_ROWS, BENCH_LARGE_DIM,
            BENCH_MAX_STORES, BENCH_DEFAULT_NQ, BENCH_DEFAULT_RQ, BENCH_MAX_OVERSAMPLES,
            BENCH_DEFAULT_REPEATS, BENCH_DEFAULT_BW_MIB, BENCH_DEFAULT_SEED);
}

static int bad_value(const char *opt, const char *value, const char *want)
{
    fprintf(stderr, "embd bench: invalid %s '%s': expected %s\n", opt, value, want);
    return 2;
}

/* Parses argv into o. Returns -1 to go on, or an exit code (0 after --help, 2 on error). */
static int parse_opts(int argc, char **argv, bench_opts *o)
{
    enum {
        OPT_ROWS = 256,
        OPT_DIM,
        OPT_LARGE,
        OPT_NO_GEN,
        OPT_CODEC,
        OPT_STORE,
        OPT_NPY,
        OPT_QUERIES,
        OPT_NQ,
        OPT_RQ,
        OPT_METRIC,
        OPT_REPEATS,
        OPT_BW,
        OPT_SEED,
        OPT_TMPDIR,
        OPT_JSON,
        OPT_OVERSAMPLE
    };
    static const struct option longopts[] = {
        {"rows", required_argument, NULL, OPT_ROWS},
        {"dim", required_argument, NULL, OPT_DIM},
        {"large", no_argument, NULL, OPT_LARGE},
        {"no-gen", no_argument, NULL, OPT_NO_GEN},
        {"codec", required_argument, NULL, OPT_CODEC},
        {"store", required_argument, NULL, OPT_STORE},
        {"npy", required_argument, NULL, OPT_NPY},
        {"queries", required_argument, NULL, OPT_QUERIES},
        {"nq", required_argument, NULL, OPT_NQ},
        {"recall-queries", required_argument, NULL, OPT_RQ},
        {"k", required_argument, NULL, 'k'},
        {"metric", required_argument, NULL, OPT_METRIC},
        {"threads", required_argument, NULL, 't'},
        {"seconds", required_argument, NULL, 's'},
        {"repeats", required_argument, NULL, OPT_REPEATS},
        {"bw-mib", required_argument, NULL, OPT_BW},
        {"seed", required_argument, NULL, OPT_SEED},
        {"tmpdir", required_argument, NULL, OPT_TMPDIR},
        {"json", required_argument, NULL, OPT_JSON},
        {"oversample", required_argument, NULL, OPT_OVERSAMPLE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    unsigned long long v;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    memset(o, 0, sizeof *o);
    o->rows = BENCH_DEFAULT_ROWS;
    o->dim = BENCH_DEFAULT_DIM;
    o->codec_sel = CODEC_SEL_ALL;
    o->threads = ncpu < 1 ? 1 : ncpu > (long)BENCH_MAX_THREADS ? BENCH_MAX_THREADS : (uint32_t)ncpu;
    o->nq = BENCH_DEFAULT_NQ;
    o->rq = BENCH_DEFAULT_RQ;
    o->repeats = BENCH_DEFAULT_REPEATS;
    o->k = 10;
    o->bw_mib = BENCH_DEFAULT_BW_MIB;
    o->seconds = 1.0;
    o->seed = BENCH_DEFAULT_SEED;
    o->metric = EMB_METRIC_DOT;
    optind = 0;
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, ":k:t:s:h", longopts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case OPT_ROWS:
            if (cli_parse_u64(optarg, 1000000000ull, &v) != 0 || v == 0)
                return bad_value("--rows", optarg, "an integer in 1..1000000000");
            o->rows = v;
            break;
        case OPT_DIM:
            if (cli_parse_u64(optarg, 65536, &v) != 0 || v == 0)
                return bad_value("--dim", optarg, "an integer in 1..65536");
            o->dim = (uint32_t)v;
            break;
        case OPT_LARGE: o->large = 1; break;
        case OPT_NO_GEN: o->no_gen = 1; break;
        case OPT_CODEC:
            if (!strcmp(optarg, "f16"))
                o->codec_sel = CODEC_SEL_F16;
            else if (!strcmp(optarg, "q1"))
                o->codec_sel = CODEC_SEL_Q1;
            else if (!strcmp(optarg, "f16+q1"))
                o->codec_sel = CODEC_SEL_F16Q1;
            else if (!strcmp(optarg, "all"))
                o->codec_sel = CODEC_SEL_ALL;
            else
                return bad_value("--codec", optarg, "f16, q1, f16+q1 or all");
            break;
        case OPT_STORE:
            if (o->n_stores == BENCH_MAX_STORES) {
                fprintf(stderr, "embd bench: at most %d --store\n", BENCH_MAX_STORES);
                return 2;
            }
            o->stores[o->n_stores++] = optarg;
            break;
        case OPT_NPY: o->npy = optarg; break;
        case OPT_QUERIES: o->queries = optarg; break;
        case OPT_NQ:
            if (cli_parse_u64(optarg, 1000000, &v) != 0 || v == 0)
                return bad_value("--nq", optarg, "an integer in 1..1000000");
            o->nq = (uint32_t)v;
            break;
        case OPT_RQ:
            if (cli_parse_u64(optarg, 1000000, &v) != 0)
                return bad_value("--recall-queries", optarg, "an integer in 0..1000000");
            o->rq = (uint32_t)v;
            break;
        case 'k':
            if (cli_parse_u64(optarg, EMB_MAX_K, &v) != 0 || v == 0)
                return bad_value("--k", optarg, "an integer in 1..1000");
            o->k = (uint32_t)v;
            break;
        case OPT_METRIC:
            if (emb_metric_parse(optarg, &o->metric) != 0)
                return bad_value("--metric", optarg, "dot, cos or l2");
            break;
        case 't':
            if (cli_parse_u64(optarg, BENCH_MAX_THREADS, &v) != 0 || v == 0)
                return bad_value("--threads", optarg, "an integer in 1..256");
            o->threads = (uint32_t)v;
            break;
        case 's': {
            char *end;
            errno = 0;
            double x = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(x > 0 && x <= 3600))
                return bad_value("--seconds", optarg, "a number in (0, 3600]");
            o->seconds = x;
            break;
        }
        case OPT_REPEATS:
            if (cli_parse_u64(optarg, 1000, &v) != 0 || v == 0)
                return bad_value("--repeats", optarg, "an integer in 1..1000");
            o->repeats = (uint32_t)v;
            break;
        case OPT_BW:
            if (cli_parse_u64(optarg, 1u << 20, &v) != 0 || v == 0)
                return bad_value("--bw-mib", optarg, "an integer in 1..1048576");
            o->bw_mib = (uint32_t)v;
            break;
        case OPT_SEED:
            if (cli_parse_u64(optarg, UINT64_MAX, &v) != 0)
                return bad_value("--seed", optarg, "an unsigned 64-bit integer");
            o->seed = v;
            break;
        case OPT_TMPDIR: o->tmpdir = optarg; break;
        case OPT_JSON: o->json = optarg; break;
        case OPT_OVERSAMPLE: {
            o->n_oversample = 0;
            char buf[256];
            if (strlen(optarg) >= sizeof buf)
                return bad_value("--oversample", optarg,
                                 "up to 6 comma-separated integers in 1..100");
            snprintf(buf, sizeof buf, "%s", optarg);
            char *save = NULL;
            for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o->n_oversample == BENCH_MAX_OVERSAMPLES ||
                    cli_parse_u64(t, EMB_MAX_OVERSAMPLE, &v) != 0 || v == 0)
                    return bad_value("--oversample", optarg,
                                     "up to 6 comma-separated integers in 1..100");
                o->oversample[o->n_oversample++] = (uint32_t)v;
            }
            if (o->n_oversample == 0)
                return bad_value("--oversample", optarg,
                                 "up to 6 comma-separated integers in 1..100");
            break;
        }
        case 'h': usage(stdout); return 0;
        case ':':
            fprintf(stderr, "embd bench: option '%s' needs a value\n", argv[optind - 1]);
            return 2;
        default:
            if (optopt)
                fprintf(stderr, "embd bench: unknown option '-%c'\n", optopt);
            else
                fprintf(stderr, "embd bench: unknown option '%s'\n", argv[optind - 1]);
            fprintf(stderr, "Try 'embd bench --help'.\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "embd bench: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (o->no_gen && o->n_stores == 0) {
        fprintf(stderr, "embd bench: --no-gen needs at least one --store\n");
        return 2;
    }
    if (o->queries && !o->n_stores) {
        fprintf(stderr, "embd bench: --queries applies to --store files\n");
        return 2;
    }
    if (!o->tmpdir) {
        const char *t = getenv("TMPDIR");
        o->tmpdir = t && *t ? t : "/tmp";
    }
    return -1;
}

/* ---- time ------------------------------------------------------------------------------ */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Best and median of one measurement, in units per second. */
typedef struct bench_rate {
    double best, median;
} bench_rate;

/* One operation of a measurement: returns the units it did (queries, bytes), or < 0. */
typedef double (*bench_op)(void *ctx, uint64_t iter);

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Runs op in `repeats` slices of `seconds / repeats` each (at least one op per slice) and
 * returns the best and median rate. Returns 0, or -1 when an op failed. */
static int measure(bench_op op, void *ctx, double seconds, uint32_t repeats, bench_rate *out)
{
    double *rates = malloc(sizeof(double) * repeats);
    if (!rates)
        return -1;
    double slice = seconds / repeats;
    uint64_t iter = 0;
    for (uint32_t r = 0; r < repeats; r++) {
        double units = 0, t0 = now_seconds(), t;
        do {
            double u = op(ctx, iter++);
            if (u < 0) {
                free(rates);
                return -1;
            }
            units += u;
            t = now_seconds();
        } while (t - t0 < slice);
        rates[r] = units / (t - t0);
    }
    qsort(rates, repeats, sizeof *rates, cmp_double);
    out->best = rates[repeats - 1];
    out->median =
        repeats % 2 ? rates[repeats / 2] : (rates[repeats / 2 - 1] + rates[repeats / 2]) / 2;
    free(rates);
    return 0;
}

/* Runs op and ref in alternating slices of seconds / repeats / 2 each (at least one operation
 * per slice) and returns op's rate and, per pair of adjacent slices, op's rate times
 * op_bytes / ref's rate: the share of the reference bandwidth op reached while the machine was
 * in the same state. On a machine shared with other work, rates measured minutes apart can
 * differ by 2x; adjacent slices see the same load. Returns 0 or -1. */
static int measure_paired(bench_op op, void *ctx, double op_bytes, bench_op ref, void *ref_ctx,
                          double seconds, uint32_t repeats, bench_rate *rate, bench_rate *ratio)
{
    double *rates = malloc(sizeof(double) * repeats * 2);
    if (!rates)
        return -1;
    double *ratios = rates + repeats, slice = seconds / repeats / 2;
    uint64_t iter = 0, riter = 0;
    for (uint32_t r = 0; r < repeats; r++) {
        double units = 0, t0 = now_seconds(), t;
        do {
            double u = op(ctx, iter++);
            if (u < 0)
                goto fail;
            units += u;
            t = now_seconds();
        } while (t - t0 < slice);
        rates[r] = units / (t - t0);
        double bytes = 0, t1 = now_seconds();
        do {
            double u = ref(ref_ctx, riter++);
            if (u < 0)
                goto fail;
            bytes += u;
            t = now_seconds();
        } while (t - t1 < slice);
        ratios[r] = rates[r] * op_bytes / (bytes / (t - t1));
    }
    qsort(rates, repeats, sizeof *rates, cmp_double);
    qsort(ratios, repeats, sizeof *ratios, cmp_double);
    rate->best = rates[repeats - 1];
    ratio->best = ratios[repeats - 1];
    rate->median =
        repeats % 2 ? rates[repeats / 2] : (rates[repeats / 2 - 1] + rates[repeats / 2]) / 2;
    ratio->median =
        repeats % 2 ? ratios[repeats / 2] : (ratios[repeats / 2 - 1] + ratios[repeats / 2]) / 2;
    free(rates);
    return 0;
fail:
    free(rates);
    return -1;
}

/* ---- a fixed pool of threads ----------------------------------------------------------- */

/* Runs one job on every thread at once: the calling thread is thread 0 and n - 1 workers wait
 * on a barrier between jobs, so a job costs two barrier crossings, not thread creation. */
typedef struct bench_pool bench_pool;

typedef struct bench_worker {
    bench_pool *pool;
    uint32_t index;
    pthread_t tid;
} bench_worker;

struct bw_ctx;

struct bench_pool {
    uint32_t n;
    /* The read-bandwidth reference the paired measurements alternate with (set once the
     * buffer exists; the pool is what every measurement already has at hand). */
    struct bw_ctx *bw;
    pthread_barrier_t start, done;
    void (*job)(void *ctx, uint32_t thread);
    void *ctx;
    int quit;
    bench_worker *workers;
    /* Start-up gate: workers wait here until every thread exists (go = 1) or one could not be
     * created (go = -1, they exit), so no worker enters a barrier that could never fill. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int go;
};

static void *pool_main(void *arg)
{
    bench_worker *w = arg;
    bench_pool *p = w->pool;
    pthread_mutex_lock(&p->mu);
    while (!p->go)
        pthread_cond_wait(&p->cv, &p->mu);
    int go = p->go;
    pthread_mutex_unlock(&p->mu);
    if (go < 0)
        return NULL;
    for (;;) {
        pthread_barrier_wait(&p->start);
        if (p->quit)
            return NULL;
        p->job(p->ctx, w->index);
        pthread_barrier_wait(&p->done);
    }
}

static void pool_run(bench_pool *p, void (*job)(void *, uint32_t), void *ctx)
{
    p->job = job;
    p->ctx = ctx;
    pthread_barrier_wait(&p->start);
    job(ctx, 0);
    pthread_barrier_wait(&p->done);
}

/* Starts n - 1 workers. Returns 0 or -1 (message printed). */
static int pool_start(bench_pool *p, uint32_t n)
{
    memset(p, 0, sizeof *p);
    p->n = n;
    p->workers = calloc(n, sizeof *p->workers);
    if (!p->workers)
        goto fail_alloc;
    if (pthread_barrier_init(&p->start, NULL, n) != 0)
        goto fail_start;
    if (pthread_barrier_init(&p->done, NULL, n) != 0)
        goto fail_done;
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        goto fail_mu;
    if (pthread_cond_init(&p->cv, NULL) != 0)
        goto fail_cv;
    uint32_t i;
    for (i = 1; i < n; i++) {
        p->workers[i] = (bench_worker){.pool = p, .index = i};
        if (pthread_create(&p->workers[i].tid, NULL, pool_main, &p->workers[i]) != 0)
            break;
    }
    pthread_mutex_lock(&p->mu);
    p->go = i == n ? 1 : -1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (i == n)
        return 0;
    fprintf(stderr, "embd bench: cannot start thread %u\n", i);
    for (uint32_t j = 1; j < i; j++)
        pthread_join(p->workers[j].tid, NULL);
    pthread_cond_destroy(&p->cv);
fail_cv:
    pthread_mutex_destroy(&p->mu);
fail_mu:
    pthread_barrier_destroy(&p->done);
fail_done:
    pthread_barrier_destroy(&p->start);
fail_start:
    free(p->workers);
fail_alloc:
    fprintf(stderr, "embd bench: cannot set up %u threads\n", n);
    return -1;
}

static void pool_stop(bench_pool *p)
{
    p->quit = 1;
    pthread_barrier_wait(&p->start);
    for (uint32_t i = 1; i < p->n; i++)
        pthread_join(p->workers[i].tid, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    pthread_barrier_destroy(&p->done);
    pthread_barrier_destroy(&p->start);
    free(p->workers);
}

/* Splits [0, n) into parts equal ranges; writes part i's bounds. */
static void part_range(uint64_t n, uint32_t parts, uint32_t i, uint64_t *lo, uint64_t *hi)
{
    *lo = n * i / parts;
    *hi = n * (i + 1) / parts;
}

/* ---- read bandwidth -------------------------------------------------------------------- */

typedef struct bw_ctx {
    const unsigned char *buf; /* no zero byte anywhere */
    size_t len;
    bench_pool *pool;
    uint64_t sums[BENCH_MAX_THREADS];
} bw_ctx;

/* Reads len bytes as fast as this machine's C library can: memchr for a byte the buffer does
 * not hold (glibc picks its widest-vector version at run time, so the reference is the fastest
 * read loop there is, whatever the build's target). Rejected: a sum in portable vector C,
 * which the baseline x86-64 target compiles to 16-byte loads and which measured 1.3-1.8x
 * below memchr on the benchmark machine under load, flattering every ratio to it. */
static uint64_t stream_sum(const unsigned char *p, size_t len)
{
    return memchr(p, 0, len) != NULL;
}

static void bw_job(void *arg, uint32_t t)
{
    bw_ctx *c = arg;
    uint64_t lo, hi;
    part_range(c->len / 128, c->pool->n, t, &lo, &hi);
    c->sums[t] = stream_sum(c->buf + lo * 128, (size_t)(hi - lo) * 128);
}

static double bw_one(void *arg, uint64_t iter)
{
    bw_ctx *c = arg;
    (void)iter;
    c->sums[0] = stream_sum(c->buf, c->len);
    return (double)c->len;
}

static double bw_all(void *arg, uint64_t iter)
{
    bw_ctx *c = arg;
    (void)iter;
    pool_run(c->pool, bw_job, c);
    return (double)c->len;
}

/* ---- f32 rows from .npy ---------------------------------------------------------------- */

/* A read-only mapping of a C-order '<f4' .npy file of rows x dim. */
typedef struct bench_npy {
    void *map;
    size_t len;
    const float *x;
    uint64_t rows;
    uint32_t dim;
} bench_npy;

static void npy_close(bench_npy *n)
{
    if (n->map)
        munmap(n->map, n->len);
    memset(n, 0, sizeof *n);
}

/* Maps path and checks that it is a 2-D little-endian f32 C-order array whose data fits the
 * file. Returns 0 or -1 (message printed). */
static int npy_open(bench_npy *n, const char *path)
{
    memset(n, 0, sizeof *n);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "embd bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 16) {
        fprintf(stderr, "embd bench: %s: not a .npy file\n", path);
        close(fd);
        return -1;
    }
    n->len = (size_t)st.st_size;
    n->map = mmap(NULL, n->len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (n->map == MAP_FAILED) {
        n->map = NULL;
        fprintf(stderr, "embd bench: %s: mmap: %s\n", path, strerror(errno));
        return -1;
    }
    const unsigned char *b = n->map;
    size_t hlen, off;
    if (memcmp(b, "\x93NUMPY", 6) != 0)
        goto bad;
    if (b[6] == 1) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
        off = 10;
    } else if (b[6] == 2 || b[6] == 3) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        off = 12;
    } else {
        goto bad;
    }
    if (hlen > n->len - off || hlen > 65536)
        goto bad;
    char dict[65537];
    memcpy(dict, b + off, hlen);
    dict[hlen] = '\0';
    const char *shape = strstr(dict, "'shape':");
    unsigned long long r, d;
    if (!strstr(dict, "'descr': '<f4'") || !strstr(dict, "'fortran_order': False") || !shape ||
        sscanf(shape + 8, " (%llu, %llu)", &r, &d) != 2 || d == 0 || d > 65536)
        goto bad;
    off += hlen;
    if (off % 4 || r > (n->len - off) / 4 / d) /* the data must fit the file */
        goto bad;
    n->x = (const float *)(const void *)(b + off);
    n->rows = r;
    n->dim = (uint32_t)d;
    madvise(n->map, n->len, MADV_WILLNEED);
    return 0;
bad:
    fprintf(stderr, "embd bench: %s: expected a 2-D C-order little-endian f32 .npy\n", path);
    npy_close(n);
    return -1;
}

/* ---- exact f32 ground truth ------------------------------------------------------------ */

typedef struct truth_ctx {
    const float *x; /* rows x dim */
    uint64_t rows;
    uint32_t dim, nq, k;
    const float *q; /* nq x dim */
    emb_metric metric;
    bench_pool *pool;
    emb_hit *bufs;    /* threads x nq x k */
    emb_topk *heaps;  /* threads x nq */
    float *qnorm;     /* nq */
    emb_hit *answers; /* nq x k, sorted best first (the result) */
} truth_ctx;

/* Scores one thread's rows against every query, BENCH_TRUTH_BLOCK rows at a time so that the
 * block stays in L1/L2 while all queries pass over it. */
static void truth_job(void *arg, uint32_t t)
{
    truth_ctx *c = arg;
    const emb_kernels *kn = emb_kernels_get();
    emb_topk *heaps = c->heaps + (size_t)t * c->nq;
    uint64_t lo, hi;
    part_range(c->rows, c->pool->n, t, &lo, &hi);
    for (uint64_t b = lo; b < hi; b += BENCH_TRUTH_BLOCK) {
        uint64_t e = hi - b < BENCH_TRUTH_BLOCK ? hi : b + BENCH_TRUTH_BLOCK;
        for (uint32_t i = 0; i < c->nq; i++) {
            const float *q = c->q + (size_t)i * c->dim;
            for (uint64_t r = b; r < e; r++) {
                const float *x = c->x + r * c->dim;
                float s;
                if (c->metric == EMB_METRIC_L2) {
                    s = -kn->l2sq_f32(x, q, c->dim);
                } else {
                    s = kn->dot_f32(x, q, c->dim);
                    if (c->metric == EMB_METRIC_COS) {
                        float xn = sqrtf(kn->dot_f32(x, x, c->dim)) * c->qnorm[i];
                        s = xn > 0 ? s / xn : 0;
                    }
                }
                emb_topk_push(&heaps[i], s, r);
            }
        }
    }
}

/* Computes the exact top k of nq queries over rows x dim f32 rows on every thread of pool.
 * Returns a new nq x k array of sorted hits (free with free), or NULL when out of memory. */
static emb_hit *truth_new(const float *x, uint64_t rows, uint32_t dim, const float *q, uint32_t nq,
                          uint32_t k, emb_metric metric, bench_pool *pool)
{
    truth_ctx c = {
        .x = x, .rows = rows, .dim = dim, .nq = nq, .k = k, .q = q, .metric = metric, .pool = pool};
    size_t nh = (size_t)pool->n * nq;
    c.bufs = malloc(sizeof *c.bufs * nh * k);
    c.heaps = malloc(sizeof *c.heaps * nh);
    c.qnorm = malloc(sizeof *c.qnorm * nq);
    c.answers = malloc(sizeof *c.answers * (size_t)nq * k);
    if (!c.bufs || !c.heaps || !c.qnorm || !c.answers) {
        free(c.answers);
        c.answers = NULL;
        goto out;
    }
    for (size_t h = 0; h < nh; h++)
        emb_topk_init(&c.heaps[h], c.bufs + h * k, k);
    for (uint32_t i = 0; i < nq; i++) {
        double n2 = 0;
        for (uint32_t j = 0; j < dim; j++)
            n2 += (double)q[(size_t)i * dim + j] * q[(size_t)i * dim + j];
        c.qnorm[i] = (float)sqrt(n2);
    }
    pool_run(pool, truth_job, &c);
    for (uint32_t i = 0; i < nq; i++) {
        for (uint32_t t = 1; t < pool->n; t++)
            emb_topk_merge(&c.heaps[i], &c.heaps[(size_t)t * nq + i]);
        uint32_t n = emb_topk_sort(&c.heaps[i]);
        for (uint32_t j = 0; j < k; j++)
            c.answers[(size_t)i * k + j] =
                j < n ? c.heaps[i].hits[j] : (emb_hit){.score = 0, .id = UINT64_MAX};
    }
out:
    free(c.qnorm);
    free(c.heaps);
    free(c.bufs);
    return c.answers;
}

/* ---- search modes ---------------------------------------------------------------------- */

typedef struct mode_result {
    char mode[24];        /* "f32", "f16", "q1", "q1-q1q", "two-stage", "two-stage-q1q x16" */
    uint32_t scan_codec;  /* EMB_CODEC_* */
    uint32_t candidates;  /* heap size of the scan */
    uint32_t oversample;  /* two-stage only, else 0 */
    double bytes_query;   /* bytes one query reads */
    double bytes_batch;   /* bytes one batch reads (rows once, candidates per query) */
    bench_rate one, all;  /* queries/s: one thread, one query split across all threads */
    bench_rate bw1, bwn;  /* of one and all: scan bytes/s over the read bandwidth of the
                             adjacent slice (see measure_paired) */
    bench_rate b_one;     /* queries/s: batches of 64 on one thread */
    bench_rate b_all;     /* queries/s: one batch of 64 per thread, all threads */
    double recall;        /* recall@k against exact f32; -1 when there is no ground truth */
    uint32_t split_agree; /* split answers equal to emb_search's, out of split_checked */
    uint32_t split_checked;
    uint32_t batch_agree, batch_checked; /* the same for emb_search_batch */
    int failed;
} mode_result;

#define BENCH_MAX_MODES (7 + 2 * BENCH_MAX_OVERSAMPLES)

typedef struct table_result {
    char name[96];
    char path[4096];
    uint64_t rows;
    uint32_t dim, codecs, nq, rq;
    int n_modes;
    mode_result modes[BENCH_MAX_MODES];
} table_result;

/* Everything the timed operations of one mode need; buffers allocated once per table. */
typedef struct run_ctx {
    const emb_store *s;
    emb_search_params p;
    const float *q; /* nq x dim */
    uint32_t nq, dim, batch;
    bench_pool *pool;
    emb_scratch *sc;
    emb_hit *out;        /* k hits */
    emb_hit *heap_bufs;  /* threads x per_thread */
    uint32_t per_thread; /* k x EMB_MAX_OVERSAMPLE: any mode's candidates fit */
    emb_topk heaps[BENCH_MAX_THREADS];
    uint32_t cand;
    const float *cur;
    int rc[BENCH_MAX_THREADS];
    emb_batch_scratch *bs[BENCH_MAX_THREADS];
    emb_hit *bout;    /* threads x batch x k */
    uint32_t *bcount; /* threads x batch */
    uint64_t biter;
} run_ctx;

static void run_free(run_ctx *c)
{
    for (uint32_t t = 0; t < BENCH_MAX_THREADS; t++)
        emb_batch_scratch_free(c->bs[t]);
    emb_scratch_free(c->sc);
    free(c->out);
    free(c->heap_bufs);
    free(c->bout);
    free(c->bcount);
}

/* Allocates c's buffers for store s, queries q and k neighbours. Returns 0 or -1. */
static int run_init(run_ctx *c, const emb_store *s, const float *q, uint32_t nq, uint32_t k,
                    bench_pool *pool)
{
    memset(c, 0, sizeof *c);
    c->s = s;
    c->q = q;
    c->nq = nq;
    c->dim = s->dim;
    c->batch = nq < BENCH_BATCH ? nq : BENCH_BATCH;
    c->pool = pool;
    /* Candidate heaps: k x the largest oversampling there is, so any mode fits. */
    uint32_t cand = k * EMB_MAX_OVERSAMPLE;
    c->per_thread = cand;
    c->sc = emb_scratch_new(s->dim, cand);
    c->out = malloc(sizeof *c->out * k);
    c->heap_bufs = malloc(sizeof *c->heap_bufs * (size_t)cand * pool->n);
    c->bout = malloc(sizeof *c->bout * (size_t)pool->n * c->batch * k);
    c->bcount = malloc(sizeof *c->bcount * (size_t)pool->n * c->batch);
    if (!c->sc || !c->out || !c->heap_bufs || !c->bout || !c->bcount)
        goto fail;
    for (uint32_t t = 0; t < pool->n; t++)
        if (!(c->bs[t] = emb_batch_scratch_new(s->dim, c->batch, cand)))
            goto fail;
    return 0;
fail:
    run_free(c);
    fprintf(stderr, "embd bench: out of memory for search buffers\n");
    return -1;
}

static const float *query_at(const run_ctx *c, uint64_t i)
{
    return c->q + (size_t)(i % c->nq) * c->dim;
}

static double op_single(void *arg, uint64_t iter)
{
    run_ctx *c = arg;
    return emb_search(c->s, query_at(c, iter), &c->p, c->sc, c->out) < 0 ? -1 : 1;
}

static void split_job(void *arg, uint32_t t)
{
    run_ctx *c = arg;
    uint64_t lo, hi;
    part_range(c->s->rows, c->pool->n, t, &lo, &hi);
    emb_topk_init(&c->heaps[t], c->heap_bufs + (size_t)t * c->per_thread, c->cand);
    c->rc[t] = emb_search_scan(c->s, c->cur, &c->p, lo, hi, &c->heaps[t]);
}

/* One query split across the pool: a heap per thread over its rows, merged, then finished.
 * Returns the hit count written to out, or < 0. */
static int split_query(run_ctx *c, const float *q, emb_hit *out)
{
    c->cur = q;
    pool_run(c->pool, split_job, c);
    for (uint32_t t = 0; t < c->pool->n; t++)
        if (c->rc[t] < 0)
            return c->rc[t];
    for (uint32_t t = 1; t < c->pool->n; t++)
        emb_topk_merge(&c->heaps[0], &c->heaps[t]);
    return emb_search_finish(c->s, q, &c->p, &c->heaps[0], c->sc, out);
}

static double op_split(void *arg, uint64_t iter)
{
    run_ctx *c = arg;
    return split_query(c, query_at(c, iter), c->out) < 0 ? -1 : 1;
}

/* First query of batch number n: batches walk the queries, always batch contiguous ones. */
static const float *batch_at(const run_ctx *c, uint64_t n)
{
    uint64_t start = n * c->batch % (c->nq - c->batch + 1);
    return c->q + (size_t)start * c->dim;
}

static int run_batch(run_ctx *c, uint32_t t, uint64_t n)
{
    return emb_search_batch(c->s, batch_at(c, n), c->batch, &c->p, NULL, c->bs[t],
                            c->bout + (size_t)t * c->batch * c->p.k,
                            c->bcount + (size_t)t * c->batch);
}

static double op_batch_one(void *arg, uint64_t iter)
{
    run_ctx *c = arg;
    return run_batch(c, 0, iter) < 0 ? -1 : (double)c->batch;
}

static void batch_job(void *arg, uint32_t t)
{
    run_ctx *c = arg;
    c->rc[t] = run_batch(c, t, c->biter * c->pool->n + t);
}

static double op_batch_all(void *arg, uint64_t iter)
{
    run_ctx *c = arg;
    c->biter = iter;
    pool_run(c->pool, batch_job, c);
    for (uint32_t t = 0; t < c->pool->n; t++)
        if (c->rc[t] < 0)
            return -1;
    return (double)c->batch * c->pool->n;
}

static int same_ids(const emb_hit *a, int na, const emb_hit *b, int nb)
{
    if (na != nb)
        return 0;
    for (int i = 0; i < na; i++)
        if (a[i].id != b[i].id)
            return 0;
    return 1;
}

static size_t codec_stride(const emb_store *s, uint32_t codec)
{
    return codec == EMB_CODEC_Q1    ? s->stride_q1
           : codec == EMB_CODEC_F16 ? s->stride_f16
                                    : s->stride_f32;
}

static const char *codec_name(uint32_t codec)
{
    return codec == EMB_CODEC_Q1 ? "q1" : codec == EMB_CODEC_F16 ? "f16" : "f32";
}

/* Checks, times and scores one mode (m->mode and c->p set by the caller). truth holds rq x k
 * exact hits for the first rq queries, or is NULL. */
static void run_mode(run_ctx *c, mode_result *m, const emb_hit *truth, uint32_t rq,
                     const bench_opts *o)
{
    emb_search_plan pl;
    m->recall = -1;
    if (emb_search_plan_get(c->s, c->q, &c->p, &pl) != 0) {
        m->failed = 1;
        return;
    }
    c->cand = pl.candidates;
    m->scan_codec = pl.scan_codec;
    m->candidates = pl.candidates;
    m->oversample = pl.two_stage ? pl.candidates / c->p.k : 0;
    double scan_bytes = (double)c->s->rows * (double)codec_stride(c->s, pl.scan_codec);
    double rescore = pl.two_stage ? (double)pl.candidates * codec_stride(c->s, pl.exact_codec) : 0;
    m->bytes_query = scan_bytes + rescore;
    m->bytes_batch = scan_bytes + rescore * c->batch;

    /* Correctness first: the split and the batch give emb_search's answers. */
    emb_hit *a = malloc(sizeof *a * c->p.k), *b = malloc(sizeof *b * c->p.k);
    if (!a || !b)
        goto fail;
    uint32_t check = c->nq < BENCH_CHECK_QUERIES ? c->nq : BENCH_CHECK_QUERIES;
    for (uint32_t i = 0; i < check; i++) {
        int na = emb_search(c->s, query_at(c, i), &c->p, c->sc, a);
        int nb = split_query(c, query_at(c, i), b);
        if (na < 0 || nb < 0)
            goto fail;
        m->split_agree += (uint32_t)same_ids(a, na, b, nb);
        m->split_checked++;
    }
    if (run_batch(c, 0, 0) < 0)
        goto fail;
    for (uint32_t i = 0; i < c->batch; i++) {
        int na = emb_search(c->s, c->q + (size_t)i * c->dim, &c->p, c->sc, a);
        if (na < 0)
            goto fail;
        m->batch_agree +=
            (uint32_t)same_ids(a, na, c->bout + (size_t)i * c->p.k, (int)c->bcount[i]);
        m->batch_checked++;
    }

    if (measure_paired(op_single, c, m->bytes_query, bw_one, c->pool->bw, o->seconds, o->repeats,
                       &m->one, &m->bw1) != 0 ||
        measure_paired(op_split, c, m->bytes_query, bw_all, c->pool->bw, o->seconds, o->repeats,
                       &m->all, &m->bwn) != 0 ||
        measure(op_batch_one, c, o->seconds, o->repeats, &m->b_one) != 0 ||
        measure(op_batch_all, c, o->seconds, o->repeats, &m->b_all) != 0)
        goto fail;

    /* Recall through emb_search_batch (checked above to answer as emb_search does): one pass
     * over the rows per batch keeps this short on large tables. */
    if (truth && rq) {
        uint64_t found = 0;
        for (uint32_t i0 = 0; i0 < rq; i0 += c->batch) {
            uint32_t nb = rq - i0 < c->batch ? rq - i0 : c->batch;
            if (emb_search_batch(c->s, c->q + (size_t)i0 * c->dim, nb, &c->p, NULL, c->bs[0],
                                 c->bout, c->bcount) != 0)
                goto fail;
            for (uint32_t i = 0; i < nb; i++) {
                const emb_hit *t = truth + (size_t)(i0 + i) * c->p.k;
                const emb_hit *h = c->bout + (size_t)i * c->p.k;
                for (uint32_t x = 0; x < c->bcount[i]; x++)
                    for (uint32_t j = 0; j < c->p.k; j++)
                        if (t[j].id == h[x].id) {
                            found++;
                            break;
                        }
            }
        }
        m->recall = (double)found / ((double)rq * c->p.k);
    }
    free(a);
    free(b);
    return;
fail:
    fprintf(stderr, "embd bench: mode %s failed\n", m->mode);
    m->failed = 1;
    free(a);
    free(b);
}

/* Measures every mode store s offers. q: nq queries; truth_x: the store's rows as f32 (NULL
 * when unknown). Fills *r. Returns 0 or -1. */
static int bench_store(const emb_store *s, const float *q, uint32_t nq, const float *truth_x,
                       const bench_opts *o, bench_pool *pool, table_result *r)
{
    r->rows = s->rows;
    r->dim = s->dim;
    r->codecs = s->codecs;
    r->nq = nq;
    r->rq = truth_x ? (o->rq < nq ? o->rq : nq) : 0;
    emb_hit *truth = NULL;
    if (r->rq) {
        double t0 = now_seconds();
        truth = truth_new(truth_x, s->rows, s->dim, q, r->rq, o->k, o->metric, pool);
        if (!truth) {
            fprintf(stderr, "embd bench: out of memory for the ground truth\n");
            return -1;
        }
        fprintf(stderr, "embd bench: %s: exact f32 top-%u of %u queries in %.2f s\n", r->name, o->k,
                r->rq, now_seconds() - t0);
    }
    run_ctx c;
    if (run_init(&c, s, q, nq, o->k, pool) != 0) {
        free(truth);
        return -1;
    }
    typedef struct mode_spec {
        char name[24];
        uint32_t need, codec;
        int two_stage;
        emb_q1_query q1q;
        uint32_t oversample; /* two-stage: 0 = the store's default */
    } mode_spec;
    mode_spec modes[BENCH_MAX_MODES] = {
        {"f32", EMB_CODEC_F32, EMB_CODEC_F32, 0, EMB_Q1_QUERY_Q8, 0},
        {"f16", EMB_CODEC_F16, EMB_CODEC_F16, 0, EMB_Q1_QUERY_Q8, 0},
        {"q1", EMB_CODEC_Q1, EMB_CODEC_Q1, 0, EMB_Q1_QUERY_Q8, 0},
        {"q1-f32q", EMB_CODEC_Q1, EMB_CODEC_Q1, 0, EMB_Q1_QUERY_F32, 0},
        {"q1-q1q", EMB_CODEC_Q1, EMB_CODEC_Q1, 0, EMB_Q1_QUERY_Q1, 0},
        {"two-stage", EMB_CODEC_Q1, 0, 1, EMB_Q1_QUERY_Q8, 0},
        {"two-stage-q1q", EMB_CODEC_Q1, 0, 1, EMB_Q1_QUERY_Q1, 0}};
    int n_modes = 7;
    const uint32_t def = emb_store_default_oversample(s, 10);
    for (uint32_t i = 0; i < (o->n_oversample ? o->n_oversample : 2); i++) {
        uint32_t os = o->n_oversample ? o->oversample[i] : def << (i + 1);
        os = os > EMB_MAX_OVERSAMPLE ? EMB_MAX_OVERSAMPLE : os;
        if (!o->n_oversample && i > 0 && os == modes[n_modes - 1].oversample)
            break; /* both capped at the largest factor */
        for (int st = o->n_oversample ? 0 : 1; st < 2; st++) {
            mode_spec *ms = &modes[n_modes++];
            *ms = (mode_spec){.need = EMB_CODEC_Q1,
                              .two_stage = 1,
                              .q1q = st ? EMB_Q1_QUERY_Q1 : EMB_Q1_QUERY_Q8,
                              .oversample = os};
            snprintf(ms->name, sizeof ms->name, "two-stage%s x%u", st ? "-q1q" : "", os);
        }
    }
    for (int i = 0; i < n_modes; i++) {
        if (!(s->codecs & modes[i].need))
            continue;
        if (modes[i].two_stage && !(s->codecs & (EMB_CODEC_F16 | EMB_CODEC_F32)))
            continue;
        mode_result *m = &r->modes[r->n_modes++];
        memset(m, 0, sizeof *m);
        memcpy(m->mode, modes[i].name, sizeof m->mode);
        c.p = (emb_search_params){.metric = o->metric, .k = o->k};
        c.p.codec = (int)modes[i].codec;
        c.p.exact = !modes[i].two_stage;
        c.p.q1_query = modes[i].q1q;
        c.p.oversample = modes[i].oversample;
        fprintf(stderr, "embd bench: %s: %s...\n", r->name, m->mode);
        run_mode(&c, m, truth, r->rq, o);
    }
    run_free(&c);
    free(truth);
    return 0;
}

/* ---- report ---------------------------------------------------------------------------- */

typedef struct bench_run {
    char cpu[128];
    const char *simd;
    uint32_t threads;
    double bw_bytes;
    bench_rate bw_one, bw_all; /* bytes/s */
    table_result *tables;
    int n_tables;
} bench_run;

static void cpu_model(char *out, size_t len)
{
    snprintf(out, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        char *v = strchr(line, ':');
        if (v) {
            v += 1 + (v[1] == ' ');
            v[strcspn(v, "\n")] = '\0';
            snprintf(out, len, "%s", v);
        }
        break;
    }
    fclose(f);
}

static void print_report(const bench_run *b)
{
    printf("\nmachine: %s, %u threads, kernels %s\n", b->cpu, b->threads, b->simd);
    printf("read bandwidth (%.0f MiB streaming sum): 1 thread %.2f GB/s (median %.2f), "
           "%u threads %.2f GB/s (median %.2f)\n",
           b->bw_bytes / 1048576.0, b->bw_one.best / 1e9, b->bw_one.median / 1e9, b->threads,
           b->bw_all.best / 1e9, b->bw_all.median / 1e9);
    printf("queries/s are best (median) of the slices; GB/s from the best; %%bw = median over "
           "slices of the scan's GB/s over the read bandwidth measured in the adjacent slice; "
           "split = one query split across %u threads; b64 = batches of 64\n",
           b->threads);
    for (int t = 0; t < b->n_tables; t++) {
        const table_result *r = &b->tables[t];
        printf("\n%s: %llu x %u, %u queries (recall on %u)\n", r->name, (unsigned long long)r->rows,
               r->dim, r->nq, r->rq);
        printf("%-18s %8s %17s %7s %5s %17s %7s %5s %17s %17s %7s %6s %6s\n", "mode", "MB/query",
               "1t q/s", "GB/s", "%bw", "split q/s", "GB/s", "%bw", "b64 1t q/s", "b64 all q/s",
               "recall", "split=", "batch=");
        for (int i = 0; i < r->n_modes; i++) {
            const mode_result *m = &r->modes[i];
            if (m->failed) {
                printf("%-18s failed\n", m->mode);
                continue;
            }
            char c1[32], c2[32], c3[32], c4[32], rec[16], sp[16], ba[16];
            snprintf(c1, sizeof c1, "%.0f (%.0f)", m->one.best, m->one.median);
            snprintf(c2, sizeof c2, "%.0f (%.0f)", m->all.best, m->all.median);
            snprintf(c3, sizeof c3, "%.0f (%.0f)", m->b_one.best, m->b_one.median);
            snprintf(c4, sizeof c4, "%.0f (%.0f)", m->b_all.best, m->b_all.median);
            if (m->recall >= 0)
                snprintf(rec, sizeof rec, "%.3f", m->recall);
            else
                snprintf(rec, sizeof rec, "-");
            snprintf(sp, sizeof sp, "%u/%u", m->split_agree, m->split_checked);
            snprintf(ba, sizeof ba, "%u/%u", m->batch_agree, m->batch_checked);
            double g1 = m->one.best * m->bytes_query / 1e9, g2 = m->all.best * m->bytes_query / 1e9;
            printf("%-18s %8.2f %17s %7.2f %4.0f%% %17s %7.2f %4.0f%% %17s %17s %7s %6s %6s\n",
                   m->mode, m->bytes_query / 1e6, c1, g1, 100 * m->bw1.median, c2, g2,
                   100 * m->bwn.median, c3, c4, rec, sp, ba);
        }
    }
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_rate(FILE *f, const char *name, bench_rate r, double bytes, double bw)
{
    fprintf(f, "\"%s\": {\"qps_best\": %.3f, \"qps_median\": %.3f", name, r.best, r.median);
    if (bytes > 0)
        fprintf(f, ", \"gbs_best\": %.4f, \"gbs_median\": %.4f, \"bw_ratio\": %.4f",
                r.best * bytes / 1e9, r.median * bytes / 1e9, bw > 0 ? r.best * bytes / bw : 0);
    fprintf(f, "}");
}

/* Writes the run as JSON to path. Returns 0 or -1 (message printed). */
static int write_json(const bench_run *b, const bench_opts *o, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "embd bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "{\n  \"embd_version\": \"%s\",\n  \"machine\": {\"cpu\": ", EMB_VERSION_STRING);
    json_str(f, b->cpu);
    fprintf(f, ", \"threads\": %u, \"kernels\": \"%s\"},\n", b->threads, b->simd);
    fprintf(f,
            "  \"settings\": {\"k\": %u, \"metric\": \"%s\", \"seconds\": %g, \"repeats\": %u, "
            "\"batch\": %u},\n",
            o->k, emb_metric_name(o->metric), o->seconds, o->repeats, BENCH_BATCH);
    fprintf(f,
            "  \"bandwidth\": {\"bytes\": %.0f, \"one_thread_gbs_best\": %.4f, "
            "\"one_thread_gbs_median\": %.4f, \"all_threads_gbs_best\": %.4f, "
            "\"all_threads_gbs_median\": %.4f},\n  \"tables\": [",
            b->bw_bytes, b->bw_one.best / 1e9, b->bw_one.median / 1e9, b->bw_all.best / 1e9,
            b->bw_all.median / 1e9);
    for (int t = 0; t < b->n_tables; t++) {
        const table_result *r = &b->tables[t];
        fprintf(f, "%s\n    {\"name\": ", t ? "," : "");
        json_str(f, r->name);
        fprintf(f, ", \"path\": ");
        json_str(f, r->path);
        fprintf(f,
                ", \"rows\": %llu, \"dim\": %u, \"codecs\": \"%s%s%s\", \"queries\": %u, "
                "\"recall_queries\": %u, \"modes\": [",
                (unsigned long long)r->rows, r->dim, r->codecs & EMB_CODEC_F32 ? "f32 " : "",
                r->codecs & EMB_CODEC_F16 ? "f16 " : "", r->codecs & EMB_CODEC_Q1 ? "q1" : "",
                r->nq, r->rq);
        for (int i = 0; i < r->n_modes; i++) {
            const mode_result *m = &r->modes[i];
            fprintf(f, "%s\n      {\"mode\": \"%s\", \"failed\": %s", i ? "," : "", m->mode,
                    m->failed ? "true" : "false");
            if (!m->failed) {
                fprintf(f,
                        ", \"scan_codec\": \"%s\", \"candidates\": %u, \"oversample\": %u, "
                        "\"bytes_per_query\": %.0f, \"bytes_per_batch\": %.0f,\n       ",
                        codec_name(m->scan_codec), m->candidates, m->oversample, m->bytes_query,
                        m->bytes_batch);
                json_rate(f, "one_thread", m->one, m->bytes_query, b->bw_one.best);
                fprintf(f, ",\n       ");
                json_rate(f, "split_all_threads", m->all, m->bytes_query, b->bw_all.best);
                fprintf(f,
                        ",\n       \"bw_paired\": {\"one_thread_median\": %.4f, "
                        "\"one_thread_best\": %.4f, \"all_threads_median\": %.4f, "
                        "\"all_threads_best\": %.4f}",
                        m->bw1.median, m->bw1.best, m->bwn.median, m->bwn.best);
                fprintf(f, ",\n       ");
                json_rate(f, "batch64_one_thread", m->b_one, m->bytes_batch / BENCH_BATCH,
                          b->bw_one.best);
                fprintf(f, ",\n       ");
                json_rate(f, "batch64_all_threads", m->b_all, m->bytes_batch / BENCH_BATCH,
                          b->bw_all.best);
                fprintf(f, ",\n       \"recall\": ");
                if (m->recall >= 0)
                    fprintf(f, "%.4f", m->recall);
                else
                    fprintf(f, "null");
                fprintf(f,
                        ", \"split_agree\": %u, \"split_checked\": %u, \"batch_agree\": %u, "
                        "\"batch_checked\": %u",
                        m->split_agree, m->split_checked, m->batch_agree, m->batch_checked);
            }
            fprintf(f, "}");
        }
        fprintf(f, "]}");
    }
    fprintf(f, "\n  ]\n}\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "embd bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- generated tables ------------------------------------------------------------------ */

/* Files made in the temporary directory, removed at the end. */
typedef struct bench_files {
    char dir[4096];
    char paths[32][4200];
    int n;
} bench_files;

static const char *files_add(bench_files *f, const char *fmt, unsigned long long rows, unsigned dim,
                             const char *suffix)
{
    if (f->n == (int)(sizeof f->paths / sizeof f->paths[0]))
        return NULL;
    /* Formatted apart first: the directory and the destination live in the same object. */
    char tmp[sizeof f->paths[0]];
    snprintf(tmp, sizeof tmp, fmt, f->dir, rows, dim, suffix);
    char *p = f->paths[f->n++];
    memcpy(p, tmp, sizeof tmp);
    return p;
}

static void files_remove(bench_files *f)
{
    for (int i = 0; i < f->n; i++)
        unlink(f->paths[i]);
    if (f->dir[0])
        rmdir(f->dir);
}

/* Writes rows + nq clustered rows with `embd gen` to npy_path. Returns 0 or -1. */
static int gen_rows(const char *npy_path, uint64_t rows, uint32_t dim, uint64_t seed)
{
    char r[32], d[32], s[32];
    snprintf(r, sizeof r, "%llu", (unsigned long long)rows);
    snprintf(d, sizeof d, "%u", dim);
    snprintf(s, sizeof s, "%llu", (unsigned long long)seed);
    char *argv[] = {"gen", "--kind",  "clusters", "--rows",         r,   "--dim", d, "--seed",
                    s,     "--quiet", "-o",       (char *)npy_path, NULL};
    int argc = (int)(sizeof argv / sizeof argv[0]) - 1;
    return cmd_gen(argc, argv) == 0 ? 0 : -1;
}

/* Packs rows [0, rows) of npy_path into store_path with codecs. Returns 0 or -1. */
static int pack_rows(const char *npy_path, const char *store_path, uint64_t rows, uint32_t codecs,
                     emb_metric metric)
{
    emb_pack_opts po = {.input = npy_path,
                        .output = store_path,
                        .format = EMB_INPUT_NPY,
                        .codecs = codecs,
                        .metric = metric,
                        .row_begin = 0,
                        .row_end = rows,
                        /* Only the two-stage store needs its default oversampling measured. */
                        .eval_queries =
                            (codecs & EMB_CODEC_Q1) && (codecs & EMB_CODEC_F16) ? 100 : 0,
                        .seed = 1};
    emb_pack_report rep;
    emb_error err = {0};
    if (emb_pack(&po, &rep, &err) != 0) {
        fprintf(stderr, "embd bench: packing %s: %s\n", store_path, err.msg);
        return -1;
    }
    return 0;
}

/* Generates one table (rows x dim plus nq query rows), packs the selected stores and measures
 * them into tables[*n...]. Returns 0 or -1. */
static int bench_generated(uint64_t rows, uint32_t dim, const bench_opts *o, bench_files *files,
                           bench_pool *pool, table_result *tables, int *n)
{
    static const struct {
        unsigned sel;
        const char *name;
        uint32_t codecs;
    } kinds[] = {{CODEC_SEL_F16, "f16", EMB_CODEC_F16},
                 {CODEC_SEL_Q1, "q1", EMB_CODEC_Q1},
                 {CODEC_SEL_F16Q1, "f16+q1", EMB_CODEC_F16 | EMB_CODEC_Q1}};
    const char *npy_path = files_add(files, "%s/gen_%llux%u%s", rows, dim, ".npy");
    if (!npy_path)
        return -1;
    double t0 = now_seconds();
    fprintf(stderr, "embd bench: generating %llu x %u (+%u query rows)...\n",
            (unsigned long long)rows, dim, o->nq);
    if (gen_rows(npy_path, rows + o->nq, dim, o->seed) != 0)
        return -1;
    bench_npy npy;
    if (npy_open(&npy, npy_path) != 0)
        return -1;
    int rc = -1;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (!(o->codec_sel & kinds[i].sel))
            continue;
        char suffix[32];
        snprintf(suffix, sizeof suffix, "_%s.emb", kinds[i].name);
        const char *store_path = files_add(files, "%s/gen_%llux%u%s", rows, dim, suffix);
        if (!store_path || pack_rows(npy_path, store_path, rows, kinds[i].codecs, o->metric) != 0)
            goto out;
        emb_store *s;
        emb_error err = {0};
        if (emb_store_open(&s, store_path, &err) != 0) {
            fprintf(stderr, "embd bench: %s: %s\n", store_path, err.msg);
            goto out;
        }
        table_result *r = &tables[*n];
        memset(r, 0, sizeof *r);
        snprintf(r->name, sizeof r->name, "generated %llux%u %s", (unsigned long long)rows, dim,
                 kinds[i].name);
        snprintf(r->path, sizeof r->path, "%s", store_path);
        int brc = bench_store(s, npy.x + rows * dim, o->nq, npy.x, o, pool, r);
        emb_store_close(s);
        if (brc != 0)
            goto out;
        (*n)++;
    }
    fprintf(stderr, "embd bench: %llu x %u done in %.1f s\n", (unsigned long long)rows, dim,
            now_seconds() - t0);
    rc = 0;
out:
    npy_close(&npy);
    return rc;
}

/* Measures one --store file. npy/queries: the shared --npy and --queries mappings (map NULL
 * when not given). Returns 0 or -1. */
static int bench_given(const char *path, const bench_npy *npy, const bench_npy *queries,
                       const bench_opts *o, bench_pool *pool, table_result *r)
{
    emb_store *s;
    emb_error err = {0};
    if (emb_store_open(&s, path, &err) != 0) {
        fprintf(stderr, "embd bench: %s: %s\n", path, err.msg);
        return -1;
    }
    memset(r, 0, sizeof *r);
    const char *base = strrchr(path, '/');
    snprintf(r->name, sizeof r->name, "%s", base ? base + 1 : path);
    snprintf(r->path, sizeof r->path, "%s", path);
    const float *truth_x = NULL, *q = NULL;
    float *owned = NULL;
    uint32_t nq = o->nq;
    if (npy->map && npy->dim == s->dim && npy->rows >= s->rows)
        truth_x = npy->x;
    else if (npy->map)
        fprintf(stderr, "embd bench: %s: --npy is %llu x %u, the store %llu x %u: no recall\n",
                path, (unsigned long long)npy->rows, npy->dim, (unsigned long long)s->rows, s->dim);
    int rc = -1;
    if (queries->map) {
        if (queries->dim != s->dim) {
            fprintf(stderr, "embd bench: %s: --queries has dim %u, the store %u\n", path,
                    queries->dim, s->dim);
            goto out;
        }
        q = queries->x;
        nq = queries->rows < nq ? (uint32_t)queries->rows : nq;
    } else if (truth_x && npy->rows > s->rows) {
        q = npy->x + s->rows * s->dim;
        nq = npy->rows - s->rows < nq ? (uint32_t)(npy->rows - s->rows) : nq;
    } else {
        /* Rows of the store itself, evenly spaced (each finds itself). */
        nq = s->rows < nq ? (uint32_t)s->rows : nq;
        owned = malloc(sizeof *owned * (size_t)nq * s->dim);
        if (!owned) {
            fprintf(stderr, "embd bench: out of memory for queries\n");
            goto out;
        }
        for (uint32_t i = 0; i < nq; i++)
            if (emb_store_row(s, s->rows * i / nq, owned + (size_t)i * s->dim) != 0)
                goto out;
        q = owned;
    }
    if (nq == 0) {
        fprintf(stderr, "embd bench: %s: no queries\n", path);
        goto out;
    }
    rc = bench_store(s, q, nq, truth_x, o, pool, r);
out:
    free(owned);
    emb_store_close(s);
    return rc;
}

/* ---- the command ----------------------------------------------------------------------- */

int cmd_bench(int argc, char **argv)
{
    bench_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc >= 0)
        return rc;
    rc = 1;

    bench_run b;
    memset(&b, 0, sizeof b);
    cpu_model(b.cpu, sizeof b.cpu);
    b.simd = emb_kernels_get()->name;
    b.threads = o.threads;
    b.tables = calloc(BENCH_MAX_TABLES, sizeof *b.tables);
    bench_files *files = calloc(1, sizeof *files);
    bench_npy npy = {0}, queries = {0};
    if (!b.tables || !files) {
        fprintf(stderr, "embd bench: out of memory\n");
        goto fail_alloc;
    }
    if (o.npy && npy_open(&npy, o.npy) != 0)
        goto fail_alloc;
    if (o.queries && npy_open(&queries, o.queries) != 0)
        goto fail_alloc;
    bench_pool pool;
    if (pool_start(&pool, o.threads) != 0)
        goto fail_alloc;

    /* Bandwidth first, while nothing else is in the caches. */
    b.bw_bytes = (double)o.bw_mib * 1048576.0;
    bw_ctx *bw = calloc(1, sizeof *bw);
    unsigned char *buf = malloc((size_t)o.bw_mib << 20);
    if (!bw || !buf) {
        fprintf(stderr, "embd bench: cannot allocate %u MiB for the bandwidth test\n", o.bw_mib);
        free(buf);
        free(bw);
        goto fail_pool;
    }
    for (size_t i = 0; i < (size_t)o.bw_mib << 20; i += 4096)
        memset(buf + i, (int)(i >> 12) % 255 + 1, 4096); /* never 0: see stream_sum */
    *bw = (bw_ctx){.buf = buf, .len = (size_t)o.bw_mib << 20, .pool = &pool};
    fprintf(stderr, "embd bench: read bandwidth...\n");
    int brc = measure(bw_one, bw, o.seconds, o.repeats, &b.bw_one) |
              measure(bw_all, bw, o.seconds, o.repeats, &b.bw_all);
    if (brc != 0)
        goto fail_bw;
    pool.bw = bw;

    if (!o.no_gen) {
        snprintf(files->dir, sizeof files->dir, "%s/embd-bench.XXXXXX", o.tmpdir);
        if (!mkdtemp(files->dir)) {
            fprintf(stderr, "embd bench: mkdtemp in %s: %s\n", o.tmpdir, strerror(errno));
            files->dir[0] = '\0';
            goto fail_pool;
        }
        if (bench_generated(o.rows, o.dim, &o, files, &pool, b.tables, &b.n_tables) != 0)
            goto fail_files;
        if (o.large && !(o.rows == BENCH_LARGE_ROWS && o.dim == BENCH_LARGE_DIM) &&
            bench_generated(BENCH_LARGE_ROWS, BENCH_LARGE_DIM, &o, files, &pool, b.tables,
                            &b.n_tables) != 0)
            goto fail_files;
    }
    for (int i = 0; i < o.n_stores; i++) {
        if (bench_given(o.stores[i], &npy, &queries, &o, &pool, &b.tables[b.n_tables]) != 0)
            goto fail_files;
        b.n_tables++;
    }

    print_report(&b);
    rc = 0;
    if (o.json && write_json(&b, &o, o.json) != 0)
        rc = 1;

fail_files:
    files_remove(files);
fail_bw:
    free(buf);
    free(bw);
fail_pool:
    pool_stop(&pool);
fail_alloc:
    npy_close(&queries);
    npy_close(&npy);
    free(files);
    free(b.tables);
    return rc;
}
