/*
 * emb.h - libembd's public API: errors, the store, search, and the writer.
 *
 * libembd knows nothing of HTTP, JSON parsing, threads or event loops: the CLI, the server and
 * the tests all call the same functions. Kernels live in emb_kernels.h, input readers in
 * emb_reader.h, the on-disk layout in emb_format.h.
 *
 * Conventions: functions return 0 (or a count) on success and a negative code on failure, a
 * negated errno for system errors or an EMB_E* code below. Functions that can fail for a reason
 * worth telling a human take a caller-owned emb_error and write a sentence into it naming the
 * check that failed. Out-parameters are written last, only on success.
 */
#ifndef EMB_H
#define EMB_H

#include <stddef.h>
#include <stdint.h>

#include "emb_format.h"

#define EMB_VERSION_STRING "0.1.0"

/* ---- errors ---------------------------------------------------------------------------- */

enum {
    EMB_ECORRUPT = -10001,     /* a store or input file fails a structural check */
    EMB_EVERSION = -10002,     /* unknown store format version */
    EMB_EBYTEORDER = -10003,   /* store written with a foreign byte order */
    EMB_ECHECKSUM = -10004,    /* a checksum does not match */
    EMB_ETRUNCATED = -10005,   /* file shorter than its header says */
    EMB_EFORMAT = -10006,      /* input file is not in the expected format */
    EMB_EUNSUPPORTED = -10007, /* valid input we do not handle (dtype, layout) */
    EMB_EINVAL = -10008,       /* bad argument */
    EMB_ENOTFOUND = -10009,    /* no such id, key or tensor */
    EMB_ERANGE = -10010,       /* value out of range (dim, k, id) */
    EMB_ENOMEM = -10011,       /* allocation failed */
};

typedef struct emb_error {
    int code;      /* last error code, 0 when none */
    char msg[512]; /* a sentence naming the failed check, offsets included */
} emb_error;

/* Prepends "prefix: " to err's message (truncating the end if needed). Accepts NULL err. */
void emb_error_prefix(emb_error *err, const char *prefix);

/* Returns a static, human-readable name for an error code (EMB_E* or negated errno). */
const char *emb_strerror(int code);

/* Records code and a printf-style message in err (which may be NULL); returns code. */
int emb_error_set(emb_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- metrics --------------------------------------------------------------------------- */

typedef enum emb_metric {
    EMB_METRIC_COS = 0, /* cosine similarity, higher is better */
    EMB_METRIC_DOT = 1, /* inner product, higher is better */
    EMB_METRIC_L2 = 2,  /* Euclidean distance, lower is better */
} emb_metric;

const char *emb_metric_name(emb_metric m);
/* Parses "cos", "dot" or "l2"; returns 0 or EMB_EINVAL. */
int emb_metric_parse(const char *s, emb_metric *out);

/* ---- checksums ------------------------------------------------------------------------- */

/* CRC-32C (Castagnoli), reflected, init and final xor 0xFFFFFFFF. Chain by passing the
 * previous result as crc (start with 0). */
uint32_t emb_crc32c(uint32_t crc, const void *data, size_t len);

/* ---- the store ------------------------------------------------------------------------- */

typedef struct emb_store {
    /* Read-only after emb_store_open; borrowed pointers into the mapping. */
    const emb_header *header;
    const emb_section *sections;
    uint64_t rows;
    uint32_t dim;
    uint32_t codecs;   /* EMB_CODEC_* bits */
    emb_metric metric; /* default metric */
    uint32_t flags;
    size_t stride_f32, stride_f16, stride_q1;     /* bytes per row, 0 when the codec is absent */
    uint32_t q1_blocks;                           /* Q1_0 blocks per row */
    const uint8_t *rows_f32, *rows_f16, *rows_q1; /* NULL when absent */
    const uint8_t *rows_q1i; /* the q1 rows interleaved (EMB_SEC_ROWS_Q1I), NULL when absent */
    const float *norms;
    const char *meta; /* not NUL-terminated */
    size_t meta_len;
    const uint64_t *key_offs;
    const uint8_t *key_blob;
    uint64_t key_blob_len;
    const emb_hash_header *key_hash;
    const uint64_t *key_slots;
    uint32_t checksum; /* identifies the content: the header CRC, which covers every section CRC */
    /* Private. */
    void *_map;
    size_t _map_len;
} emb_store;

/* Maps path read-only and validates the header and every section bound without reading the
 * rows: open time does not grow with the file. On success *out is a new store owned by the
 * caller (free with emb_store_close). Errors: negated errno from open/fstat/mmap; EMB_ETRUNCATED,
 * EMB_ECORRUPT, EMB_EVERSION, EMB_EBYTEORDER, EMB_ECHECKSUM (header CRC), EMB_ENOMEM. */
int emb_store_open(emb_store **out, const char *path, emb_error *err);

/* Validates a store image already in memory (used by emb_store_open and the fuzzers); fills
 * *s with borrowed pointers into buf. Same errors as emb_store_open. */
int emb_store_parse(emb_store *s, const void *buf, size_t len, emb_error *err);

/* Unmaps and frees. Accepts NULL. */
void emb_store_close(emb_store *s);

/* Async-signal-safe, for a SIGBUS handler: the path (borrowed, possibly truncated to 239 bytes)
 * of the open store whose mapping contains addr, with addr's offset in the file in *offset; NULL
 * when addr is in no store opened by emb_store_open (only the first 64 open at once are
 * tracked). A store file truncated in place while mapped raises SIGBUS on the vanished pages. */
const char *emb_store_mapping_at(const void *addr, uint64_t *offset);

/* Reads every section, checks each CRC, the key offsets, the key index and the padding.
 * Returns 0 when sound, else the first failure (EMB_ECHECKSUM or EMB_ECORRUPT) described in err. */
int emb_store_verify(const emb_store *s, emb_error *err);

/* Best available codec for exact answers: F32 if present, else F16, else Q1. */
uint32_t emb_store_primary_codec(const emb_store *s);

/* Decodes row id into out[dim] from the primary codec. Returns 0 or EMB_ERANGE. */
int emb_store_row(const emb_store *s, uint64_t id, float *out);

/* Borrowed view of row id's key (not NUL-terminated). Returns 0, EMB_ENOTFOUND when the store
 * has no keys, EMB_ERANGE for a bad id, EMB_ECORRUPT when the offsets are damaged. */
int emb_store_key(const emb_store *s, uint64_t id, const char **key, size_t *len);

/* Finds the row of key. Returns 0 and *id, EMB_ENOTFOUND, or EMB_ECORRUPT. Reads O(1) slots. */
int emb_store_find(const emb_store *s, const char *key, size_t len, uint64_t *id);

/* The 64-bit hash the key index uses. */
uint64_t emb_key_hash(const void *key, size_t len, uint32_t seed);

/* Section kind name ("rows_f16", ...) for messages; "unknown" otherwise. */
const char *emb_section_name(uint32_t kind);

/* ---- top-k ----------------------------------------------------------------------------- */

typedef struct emb_hit {
    float score; /* higher is better inside the heap (l2 is stored negated) */
    uint32_t _pad;
    uint64_t id;
} emb_hit;

/* A bounded min-heap of the best k hits seen. The caller owns hits[k]; nothing allocates. Ties
 * on score keep the lower id. */
typedef struct emb_topk {
    emb_hit *hits;
    uint32_t k, n;
} emb_topk;

void emb_topk_init(emb_topk *t, emb_hit *buf, uint32_t k);
void emb_topk_push(emb_topk *t, float score, uint64_t id);
/* Merges src into dst (both heaps). */
void emb_topk_merge(emb_topk *dst, const emb_topk *src);
/* Sorts the held hits best first (ties: lower id first); returns the count. The heap is no
 * longer a heap afterwards: re-init before pushing again. */
uint32_t emb_topk_sort(emb_topk *t);

/* ---- search ---------------------------------------------------------------------------- */

#define EMB_MAX_K          1000u
#define EMB_MAX_OVERSAMPLE 100u

/* What the 1-bit stage scores the q1 rows against (emb_search_params.q1_query). */
typedef enum emb_q1_query {
    /* The query rounded to int8 per 128 values (q1 x q8): the default; 2-2.5x faster than
     * q1 x f32 with recall@10 unchanged to the third decimal on the tables measured. */
    EMB_Q1_QUERY_Q8 = 0,
    /* The f32 query (q1 x f32): the reference. */
    EMB_Q1_QUERY_F32 = 1,
    /* The query in 1-bit form too, its signs and a mean |q| per 128 values (q1 x q1: XOR +
     * popcount): about 4x cheaper per row than q1 x q8, at a lower recall (a two-stage search
     * needs a larger oversample for the same answer). */
    EMB_Q1_QUERY_Q1 = 2,
} emb_q1_query;

/* "q8", "f32", "q1"; "unknown" otherwise. */
const char *emb_q1_query_name(emb_q1_query q);
/* Parses one of those names; returns 0 or EMB_EINVAL. */
int emb_q1_query_parse(const char *s, emb_q1_query *out);

typedef struct emb_search_params {
    emb_metric metric;
    uint32_t k;          /* 1..EMB_MAX_K */
    uint32_t oversample; /* two-stage: keep k * oversample q1 candidates; 0 = store default */
    int exact;           /* skip the q1 stage even when the store has f16 or f32 */
    int codec;           /* 0 = automatic; else force one EMB_CODEC_* (for evaluation) */
    const uint64_t
        *exclude; /* sorted ascending: ids never returned (a query by id excludes itself) */
    uint32_t n_exclude;
    /* The query form q1 scans (the two-stage first stage, or codec EMB_CODEC_Q1) score the
     * 1-bit rows against; 0 = EMB_Q1_QUERY_Q8. */
    emb_q1_query q1_query;
} emb_search_params;

/* Per-thread scratch for searches: preallocated once, so no query allocates. */
typedef struct emb_scratch emb_scratch;

/* Allocates scratch for queries of dim values with k * oversample up to max_candidates (and the
 * query's 1-bit form for q1 x q1). */
emb_scratch *emb_scratch_new(uint32_t dim, uint32_t max_candidates);
void emb_scratch_free(emb_scratch *sc);

/* Exact or two-stage nearest-neighbour search for one query of s->dim floats. Writes up to
 * p->k hits best first into out (scores as the metric reports them: l2 is a distance) and
 * returns their count, or EMB_ERANGE / EMB_EINVAL. Automatic codec choice: f16+q1 (or f32+q1)
 * stores scan q1 and rescore k * oversample candidates exactly unless p->exact; otherwise the
 * primary codec is scanned. */
int emb_search(const emb_store *s, const float *query, const emb_search_params *p, emb_scratch *sc,
               emb_hit *out);

/* How emb_search runs a query, for callers that split the scan across threads:
 * emb_search_plan_get says which codec is scanned and how many candidates each part keeps;
 * emb_search_scan scores rows [lo, hi) into a heap of that size (one per thread); the heaps are
 * merged (emb_topk_merge) and emb_search_finish rescores (two-stage), sorts and writes the
 * hits exactly as emb_search would. */
typedef struct emb_search_plan {
    uint32_t scan_codec;  /* EMB_CODEC_* scanned over every row */
    uint32_t exact_codec; /* codec of the rescoring (two-stage) */
    int two_stage;
    uint32_t candidates; /* heap size for the scan: k, or k x oversample */
} emb_search_plan;

int emb_search_plan_get(const emb_store *s, const float *query, const emb_search_params *p,
                        emb_search_plan *out);
/* Scores rows [lo, hi) into heap (initialised by the caller with plan.candidates slots).
 * Returns 0, EMB_EINVAL or EMB_ERANGE. Any thread; reads only the store. */
int emb_search_scan(const emb_store *s, const float *query, const emb_search_params *p, uint64_t lo,
                    uint64_t hi, emb_topk *heap);
/* Turns the merged candidate heap into up to p->k sorted hits in out; sc gives the rescoring
 * heap. Returns the count or EMB_EINVAL. The candidate heap is sorted in place. */
int emb_search_finish(const emb_store *s, const float *query, const emb_search_params *p,
                      emb_topk *candidates, emb_scratch *sc, emb_hit *out);

/* Scratch for emb_search_batch: heaps for up to max_nq queries. */
typedef struct emb_batch_scratch emb_batch_scratch;

emb_batch_scratch *emb_batch_scratch_new(uint32_t dim, uint32_t max_nq, uint32_t max_candidates);
void emb_batch_scratch_free(emb_batch_scratch *b);

/* Searches nq queries (nq x dim floats, row-major) in one pass over the rows, block by block,
 * so each block is read from memory once for all queries: the same answers as nq calls of
 * emb_search, for far fewer bytes moved. p applies to every query; self (optional) excludes
 * one more id per query (UINT64_MAX for none). Writes query i's hits to out[i * p->k ...] and
 * their count to counts[i]. Returns 0 or EMB_EINVAL (nq 0 or above the scratch's, bad k,
 * metric or codec, non-finite query). Nothing allocates. */
int emb_search_batch(const emb_store *s, const float *queries, uint32_t nq,
                     const emb_search_params *p, const uint64_t *self, emb_batch_scratch *b,
                     emb_hit *out, uint32_t *counts);

/* Default oversampling factor recorded by embd pack in the metadata ("oversample_default"),
 * or fallback when absent. */
uint32_t emb_store_default_oversample(const emb_store *s, uint32_t fallback);

/* ---- writer ---------------------------------------------------------------------------- */

typedef struct emb_writer emb_writer;

typedef struct emb_writer_opts {
    uint32_t dim;
    uint32_t codecs;   /* EMB_CODEC_* bits, at least one */
    emb_metric metric; /* default metric recorded in the header */
    int keys;          /* every row will come with a key */
    int normalized;    /* rows were L2-normalised (recorded as a flag) */
    int q1_interleave; /* with q1: also write the rows interleaved for scans (EMB_SEC_ROWS_Q1I) */
} emb_writer_opts;

/* Prepares to stream rows into a new store at path (written at finish to a unique
 * "<path>.tmp.XXXXXX", then renamed). Rows are staged
 * in per-section temporary files so memory stays bounded by one row. Errors: negated errno,
 * EMB_EINVAL, EMB_ERANGE (dim). */
int emb_writer_open(emb_writer **out, const char *path, const emb_writer_opts *o, emb_error *err);

/* Appends one row. vec holds dim floats (used for f32/f16/q1 encoding and the norm); q1, when
 * non-NULL, holds the row's Q1_0 blocks to copy bit-exact instead of re-encoding. key (len
 * bytes) is required when opts.keys. */
int emb_writer_add(emb_writer *w, const float *vec, const uint8_t *q1, const char *key, size_t len,
                   emb_error *err);

/* Rows added so far. */
uint64_t emb_writer_rows(const emb_writer *w);

/* Assembles the final file: sections, key index, metadata (meta, meta_len bytes of JSON text),
 * header; fsyncs and renames over path, then fsyncs the directory. Frees w in every case. */
int emb_writer_finish(emb_writer *w, const char *meta, size_t meta_len, emb_error *err);

/* Removes the temporary files and frees w. Accepts NULL. */
void emb_writer_abort(emb_writer *w);

/* How faithfully one codec stores the rows added so far: the cosine between each original row
 * and its decoded copy (1 for a zero row stored as zero). */
typedef struct emb_fidelity {
    uint64_t rows;
    double mean_cos;
    double min_cos;
    uint64_t worst_row; /* the row with min_cos */
} emb_fidelity;

/* Fills *out for codec (one of the writer's). Returns 0 or EMB_EINVAL. */
int emb_writer_fidelity(const emb_writer *w, uint32_t codec, emb_fidelity *out);

/* Builds the key index from the keys added so far (finish does it when not done yet); after
 * it, no more rows may be added. Returns 0 or an error. */
int emb_writer_index_keys(emb_writer *w, emb_error *err);

/* Keys seen again after their first row, counted by emb_writer_index_keys: the index maps a
 * key to its first row; later rows with the same key stay reachable by id. */
uint64_t emb_writer_duplicate_keys(const emb_writer *w);

/* Fills *view with a read-only store over the rows added so far (rows, norms; no keys, no
 * metadata, header NULL), so pack can measure search quality before the file is final. The
 * view is valid until the next emb_writer_add, _finish or _abort. */
int emb_writer_view(emb_writer *w, emb_store *view, emb_error *err);

/* ---- Q1_0 ------------------------------------------------------------------------------ */

/* Blocks per row of dim values: ceil(dim / 128). */
static inline uint32_t emb_q1_blocks(uint32_t dim)
{
    return (dim + EMB_Q1_GROUP - 1) / EMB_Q1_GROUP;
}

/* Encodes dim floats as GGML Q1_0 blocks: per group d = mean |x| over the values present (the
 * last group of a dim that is not a multiple of 128 averages only its dim % 128 values), bit j
 * = x_j >= 0, LSB first; bits past dim are 0. Writes emb_q1_blocks(dim) * 18 bytes. */
void emb_q1_encode(const float *x, uint32_t dim, uint8_t *out);

/* Decodes blocks to dim floats (+d or -d). */
void emb_q1_decode(const uint8_t *blocks, uint32_t dim, float *out);

/* Squared L2 norm of a Q1_0 row: sum over blocks of d^2 * (values in the block). */
float emb_q1_norm2(const uint8_t *blocks, uint32_t dim);

/* One group of the interleaved q1 section (EMB_SEC_ROWS_Q1I, emb_format.h): nrows (1..32)
 * Q1_0 rows of dim values at rows, stride bytes apart, written as emb_q1_blocks(dim) tiles of
 * EMB_Q1I_TILE bytes to out; the rows past nrows are zero. The bytes are copied, not
 * interpreted, so damaged rows interleave as they are. */
void emb_q1_interleave(const uint8_t *rows, size_t stride, size_t nrows, uint32_t dim,
                       uint8_t *out);

#endif
