/*
 * emb_pack.h - turning an input file into a store, and measuring what quantization cost.
 */
#ifndef EMB_PACK_H
#define EMB_PACK_H

#include <stdint.h>

#include "emb.h"
#include "emb_reader.h"

#define EMB_EVAL_K      10u
#define EMB_EVAL_MAX_OS 8u /* oversampling factors tried: 1, 2, 4, 8, 16, 32, 64, 100 */

typedef struct emb_pack_progress {
    uint64_t rows, total_rows; /* total_rows UINT64_MAX when unknown */
    uint64_t bytes, total_bytes;
    const char *phase; /* "reading", "evaluating" */
} emb_pack_progress;

typedef struct emb_pack_opts {
    const char *input, *output;
    emb_input_format format;
    const char *tensor;          /* NULL: the format's default */
    const char *keys_file;       /* one key per line, overrides the input's keys */
    uint32_t codecs;             /* EMB_CODEC_* bits */
    emb_metric metric;           /* default metric recorded in the store and used for evaluation */
    int normalize;               /* L2-normalise rows before encoding */
    int no_q1_interleave;        /* skip the interleaved copy of the q1 rows (EMB_SEC_ROWS_Q1I) */
    uint64_t row_begin, row_end; /* keep rows [begin, end); end UINT64_MAX = all */
    uint32_t eval_queries;       /* sample size for recall; 0 skips the evaluation */
    uint64_t seed;               /* for the sample */
    /* Called now and then (at most every 64 Ki rows); may be NULL. */
    void (*progress)(void *ctx, const emb_pack_progress *p);
    void *progress_ctx;
} emb_pack_opts;

typedef struct emb_pack_report {
    emb_reader_info input;
    uint64_t rows;
    uint32_t dim, codecs;
    double read_seconds, total_seconds;
    uint64_t input_bytes;
    uint64_t duplicate_keys;
    int has_fidelity[3]; /* f32, f16, q1 */
    emb_fidelity fidelity[3];
    /* Recall@10 against exact f32 search over the original rows, on eval_queries rows sampled
     * uniformly (each query excludes its own row); -1 when not measured. */
    uint32_t eval_queries;
    double recall_f16;     /* exact search on the f16 rows */
    double recall_q1;      /* q1-only search */
    uint32_t n_oversample; /* two-stage factors measured */
    uint32_t oversample[EMB_EVAL_MAX_OS];
    double recall_two_stage[EMB_EVAL_MAX_OS];
    uint32_t oversample_default; /* smallest factor reaching 0.95, else the best; 0 if none */
    int oversample_reached;      /* 1 when oversample_default reaches 0.95 */
    char meta[4096];             /* the metadata JSON written into the store (truncated here) */
} emb_pack_report;

/* Streams o->input into a new store at o->output (written atomically), measures fidelity and,
 * unless eval_queries is 0, recall. Fills *rep. Returns 0 or an error described in err. */
int emb_pack(const emb_pack_opts *o, emb_pack_report *rep, emb_error *err);

#endif
