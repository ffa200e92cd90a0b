/*
 * search.c - exact and two-stage nearest-neighbour search over one store.
 *
 * Exact search scans every row of one codec with the dispatched kernel and keeps the best k in
 * a bounded heap. Two-stage search (stores with q1 and f16 or f32) scans the 1-bit rows, keeps
 * k x oversample candidates, and rescores only those from the exact codec: the scan reads
 * 1.125 bits per value instead of 16.
 *
 * Scores: cos = dot / (|q| |r|) with |r| from the norms section (0 when either norm is 0);
 * dot; l2 ranks by -|q - r|^2 inside the heap and reports the distance |q - r|. The q1 stage
 * ranks by the same metric on the dequantised row, with its norm from the block scales, so the
 * stage never needs the exact row. Nothing here allocates: emb_scratch is made once per thread.
 *
 * Rows are scored SCAN_ROWS at a time by the many-row kernels, which return the one-row
 * kernels' bits, and only rows that beat the worst kept hit reach the heap. The q1 stage scores
 * against the query form emb_search_params.q1_query names: q1 x q8 (the query rounded to int8
 * per block, the default), q1 x f32, or q1 x q1 (the query's signs and block scales, made once
 * per scan call by emb_q1_encode_query into the caller's scratch or, for emb_search_scan, a
 * stack buffer: a deterministic function of the query, so every part of a split scan scores
 * with the same bits). Batches: see "many queries in one pass" below.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "emb.h"
#include "emb_kernels.h"
#include "kernels_internal.h"
#include "store_internal.h"

struct emb_scratch {
    uint32_t dim, max_cand;
    emb_hit *cand;   /* max_cand */
    emb_hit *best;   /* EMB_MAX_K */
    uint64_t *qbits; /* 2 x emb_q1_blocks(dim): the query's signs, for q1 x q1 */
    float *qd;       /* emb_q1_blocks(dim): its block scales */
};

emb_scratch *emb_scratch_new(uint32_t dim, uint32_t max_candidates)
{
    if (max_candidates < EMB_MAX_K)
        max_candidates = EMB_MAX_K;
    emb_scratch *sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    const size_t nb = emb_q1_blocks(dim) ? emb_q1_blocks(dim) : 1;
    sc->dim = dim;
    sc->max_cand = max_candidates;
    sc->cand = malloc((size_t)max_candidates * sizeof *sc->cand);
    sc->best = malloc((size_t)EMB_MAX_K * sizeof *sc->best);
    sc->qbits = malloc(2 * nb * sizeof *sc->qbits);
    sc->qd = malloc(nb * sizeof *sc->qd);
    if (!sc->cand || !sc->best || !sc->qbits || !sc->qd) {
        emb_scratch_free(sc);
        return NULL;
    }
    return sc;
}

void emb_scratch_free(emb_scratch *sc)
{
    if (!sc)
        return;
    free(sc->cand);
    free(sc->best);
    free(sc->qbits);
    free(sc->qd);
    free(sc);
}

const char *emb_q1_query_name(emb_q1_query q)
{
    switch (q) {
    case EMB_Q1_QUERY_Q8: return "q8";
    case EMB_Q1_QUERY_F32: return "f32";
    case EMB_Q1_QUERY_Q1: return "q1";
    }
    return "unknown";
}

int emb_q1_query_parse(const char *s, emb_q1_query *out)
{
    static const emb_q1_query all[] = {EMB_Q1_QUERY_Q8, EMB_Q1_QUERY_F32, EMB_Q1_QUERY_Q1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (strcmp(s, emb_q1_query_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return EMB_EINVAL;
}

static int excluded(const emb_search_params *p, uint64_t id)
{
    uint32_t lo = 0, hi = p->n_exclude;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (p->exclude[mid] == id)
            return 1;
        if (p->exclude[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* What one scan needs to score a row: the query, its norm, the metric. */
typedef struct query_ctx {
    const emb_store *s;
    const emb_kernels *kn;
    const float *q;
    float qn, qn2;
    emb_metric metric;
    emb_q1_query q1q; /* what q1 rows are scored against */
    /* For q1 x q1: the query's 1-bit form (set by with_q1_query before a q1 scan). */
    const uint64_t *qbits;
    const float *qd;
} query_ctx;

static float cos_of(float dot, float qn, float rn)
{
    float den = qn * rn;
    return den > 0 ? dot / den : 0.0f;
}

/* Rows whose q1 norms score_rows computes at a time. */
#define Q1_NORM_ROWS 256u

/* emb_q1_norm2 of nr q1 rows into rn2: one-block rows (dim <= 128) by the kernel (d * d * dim
 * from the scales, 16 rows a step; per row this was a call, a software f16 conversion and double
 * arithmetic, half of a cosine q1 scan), several blocks row by row. */
static void q1_norms2(const emb_kernels *kn, const uint8_t *rows, size_t stride, size_t nr,
                      uint32_t dim, float *rn2)
{
    if (dim <= EMB_Q1_GROUP) {
        kn->q1_norm2_rows(rows, stride, nr, dim, rn2);
        return;
    }
    for (size_t i = 0; i < nr; i++)
        rn2[i] = emb_q1_norm2(rows + i * stride, dim);
}

/* Rows scored per kernel call in a scan: enough to amortise the call and the query set-up (q1
 * x q8 rounds the query once per call, a fifth of the scan's time at 512 rows per call),
 * few enough that the 8 KiB of scores stay in L1. */
#define SCAN_ROWS 2048u

/* Heap scores (higher is better) of rows [r0, r0 + nr) of codec into out[nr], nr <= SCAN_ROWS.
 * Every score of a row goes through here, one row or many: the many-row kernels are
 * bit-identical to the one-row ones, so a row scores the same in a scan, a split scan, a
 * rescoring or a batch. */
static void score_rows(const query_ctx *c, uint32_t codec, uint64_t r0, size_t nr, float *out)
{
    const emb_store *s = c->s;
    const uint32_t dim = s->dim;
    if (codec == EMB_CODEC_Q1) {
        const uint8_t *rows = s->rows_q1 + r0 * s->stride_q1;
        /* q1 x q1 over 32 rows or more reads the interleaved copy when the store has one, and
         * for one-block rows takes their norms from the scales it loads (reading them from the
         * rows, one scale every 18 bytes, cost as much as the scan itself). */
        const int ilv = c->q1q == EMB_Q1_QUERY_Q1 && s->rows_q1i && nr >= EMB_Q1I_ROWS;
        const int ilv_norms = ilv && c->metric != EMB_METRIC_DOT && dim <= EMB_Q1_GROUP;
        float rn2[SCAN_ROWS];
        if (ilv)
            c->kn->dot_q1q1_ilv(s->rows_q1i, r0, nr, c->qbits, c->qd, dim, out,
                                ilv_norms ? rn2 : NULL);
        else if (c->q1q == EMB_Q1_QUERY_Q1)
            c->kn->dot_q1q1_rows(rows, s->stride_q1, nr, c->qbits, c->qd, dim, out);
        else
            (c->q1q == EMB_Q1_QUERY_F32 ? c->kn->dot_q1_rows : c->kn->dot_q1q8_rows)(
                rows, s->stride_q1, nr, c->q, dim, out);
        if (c->metric == EMB_METRIC_DOT)
            return;
        for (size_t i0 = 0; i0 < nr; i0 += Q1_NORM_ROWS) {
            const size_t n = nr - i0 < Q1_NORM_ROWS ? nr - i0 : Q1_NORM_ROWS;
            if (!ilv_norms)
                q1_norms2(c->kn, rows + i0 * s->stride_q1, s->stride_q1, n, dim, rn2 + i0);
            if (c->metric == EMB_METRIC_COS)
                c->kn->cos_rows(out + i0, rn2 + i0, c->qn, n); /* cos_of(out, qn, sqrtf(rn2)) */
            else
                for (size_t i = 0; i < n; i++)
                    out[i0 + i] = -(c->qn2 - 2 * out[i0 + i] + rn2[i0 + i]);
        }
        return;
    }
    const int f16 = codec == EMB_CODEC_F16;
    const uint8_t *rows = f16 ? s->rows_f16 + r0 * s->stride_f16 : s->rows_f32 + r0 * s->stride_f32;
    const size_t stride = f16 ? s->stride_f16 : s->stride_f32;
    if (c->metric == EMB_METRIC_L2) {
        (f16 ? c->kn->l2sq_f16_rows : c->kn->l2sq_f32_rows)(rows, stride, nr, c->q, dim, out);
        for (size_t i = 0; i < nr; i++)
            out[i] = -out[i];
        return;
    }
    (f16 ? c->kn->dot_f16_rows : c->kn->dot_f32_rows)(rows, stride, nr, c->q, dim, out);
    if (c->metric == EMB_METRIC_COS)
        for (size_t i = 0; i < nr; i++)
            out[i] = cos_of(out[i], c->qn, s->norms[r0 + i]);
}

/* Heap score of row r in codec. */
static float score_row(const query_ctx *c, uint32_t codec, uint64_t r)
{
    float out;
    score_rows(c, codec, r, 1, &out);
    return out;
}

float emb__score(const emb_store *s, uint32_t codec, emb_metric metric, const float *q, float qn2,
                 uint64_t r)
{
    query_ctx c = {
        .s = s, .kn = emb_kernels_get(), .q = q, .qn = sqrtf(qn2), .qn2 = qn2, .metric = metric};
    return score_row(&c, codec, r);
}

/* Offers the scores sc[0..n) of rows r0.. to t, skipping p's exclusions and the id self. Most
 * rows lose to the worst hit kept, so that test comes first: the kernels' filter skips to the
 * next row that does not (16 compares per instruction with AVX-512; the compiler's SSE loop it
 * replaced took a third of a q1 x q1 scan's time). Exclusions are looked up only for rows that
 * would enter the heap; NaN scores never pass. */
static void offer(const emb_kernels *kn, emb_topk *t, const float *sc, size_t n, uint64_t r0,
                  const emb_search_params *p, uint64_t self)
{
    if (t->k == 0)
        return;
    float worst = t->n == t->k ? t->hits[0].score : -INFINITY;
    for (size_t i = 0; i < n; i++) {
        i += kn->first_at_least(sc + i, n - i, worst);
        if (i == n)
            break;
        const uint64_t r = r0 + i;
        if (r == self || (p->n_exclude && excluded(p, r)))
            continue;
        emb_topk_push(t, sc[i], r);
        if (t->n == t->k)
            worst = t->hits[0].score;
    }
}

/* Scores rows [lo, hi) into t, skipping p's exclusions and the id self. */
static void scan_range(const query_ctx *c, uint32_t codec, const emb_search_params *p,
                       uint64_t self, emb_topk *t, uint64_t lo, uint64_t hi)
{
    float sc[SCAN_ROWS];
    for (uint64_t r0 = lo; r0 < hi; r0 += SCAN_ROWS) {
        const size_t n = hi - r0 < SCAN_ROWS ? (size_t)(hi - r0) : SCAN_ROWS;
        score_rows(c, codec, r0, n, sc);
        offer(c->kn, t, sc, n, r0, p, self);
    }
}

static void scan(const query_ctx *c, uint32_t codec, const emb_search_params *p, emb_topk *t)
{
    scan_range(c, codec, p, UINT64_MAX, t, 0, c->s->rows);
}

/* Makes c ready to score codec's rows: for a q1 x q1 scan, the query's 1-bit form goes into
 * qbits[2 x blocks] and qd[blocks] (the caller's buffers, kept for as long as c is used). */
static void with_q1_query(query_ctx *c, uint32_t codec, uint64_t *qbits, float *qd)
{
    if (codec != EMB_CODEC_Q1 || c->q1q != EMB_Q1_QUERY_Q1)
        return;
    emb_q1_encode_query(c->q, c->s->dim, qbits, qd);
    c->qbits = qbits;
    c->qd = qd;
}

uint32_t emb_store_default_oversample(const emb_store *s, uint32_t fallback)
{
    /* The key is written at the top level of the metadata by embd pack; the library reads
     * only this one number, so a full JSON parser is not worth having here. */
    static const char key[] = "\"oversample_default\":";
    if (!s->meta)
        return fallback;
    const char *end = s->meta + s->meta_len;
    for (const char *p = s->meta; (size_t)(end - p) > sizeof key; p++) {
        if (memcmp(p, key, sizeof key - 1) != 0)
            continue;
        p += sizeof key - 1;
        while (p < end && *p == ' ')
            p++;
        uint32_t v = 0;
        int digits = 0;
        while (p < end && *p >= '0' && *p <= '9' && digits < 4) {
            v = v * 10 + (uint32_t)(*p++ - '0');
            digits++;
        }
        return digits && v >= 1 && v <= EMB_MAX_OVERSAMPLE ? v : fallback;
    }
    return fallback;
}

/* Fills c for query and resolves how p searches s. Returns 0 or EMB_EINVAL. */
static int plan(const emb_store *s, const float *query, const emb_search_params *p, query_ctx *c,
                emb_search_plan *pl)
{
    if (p->k == 0 || p->k > EMB_MAX_K || (unsigned)p->metric > EMB_METRIC_L2 ||
        (unsigned)p->q1_query > EMB_Q1_QUERY_Q1)
        return EMB_EINVAL;
    *c = (query_ctx){
        .s = s, .kn = emb_kernels_get(), .q = query, .metric = p->metric, .q1q = p->q1_query};
    double qn2 = 0;
    for (uint32_t j = 0; j < s->dim; j++) {
        if (!isfinite(query[j]))
            return EMB_EINVAL;
        qn2 += (double)query[j] * query[j];
    }
    c->qn2 = (float)qn2;
    c->qn = (float)sqrt(qn2);
    pl->exact_codec = emb_store_primary_codec(s);
    pl->scan_codec = pl->exact_codec;
    pl->two_stage = 0;
    pl->candidates = p->k;
    if (p->codec) {
        if (!(s->codecs & (uint32_t)p->codec) ||
            (p->codec != EMB_CODEC_F32 && p->codec != EMB_CODEC_F16 && p->codec != EMB_CODEC_Q1))
            return EMB_EINVAL;
        pl->scan_codec = (uint32_t)p->codec;
    } else if (!p->exact && (s->codecs & EMB_CODEC_Q1) && pl->exact_codec != EMB_CODEC_Q1) {
        uint32_t os = p->oversample ? p->oversample : emb_store_default_oversample(s, 10);
        if (os > EMB_MAX_OVERSAMPLE)
            return EMB_EINVAL;
        pl->two_stage = 1;
        pl->scan_codec = EMB_CODEC_Q1;
        pl->candidates = p->k * os;
    }
    return 0;
}

int emb_search_plan_get(const emb_store *s, const float *query, const emb_search_params *p,
                        emb_search_plan *out)
{
    query_ctx c;
    return plan(s, query, p, &c, out);
}

int emb_search_scan(const emb_store *s, const float *query, const emb_search_params *p, uint64_t lo,
                    uint64_t hi, emb_topk *heap)
{
    query_ctx c;
    emb_search_plan pl;
    int rc = plan(s, query, p, &c, &pl);
    if (rc)
        return rc;
    if (lo > hi || hi > s->rows)
        return EMB_ERANGE;
    /* 10 KiB at most (EMB_MAX_DIM): this call has no scratch, and encoding the query once per
     * call costs a few dim operations next to a scan of rows. */
    uint64_t qbits[2 * (EMB_MAX_DIM / EMB_Q1_GROUP)];
    float qd[EMB_MAX_DIM / EMB_Q1_GROUP];
    with_q1_query(&c, pl.scan_codec, qbits, qd);
    scan_range(&c, pl.scan_codec, p, UINT64_MAX, heap, lo, hi);
    return 0;
}

int emb_search_finish(const emb_store *s, const float *query, const emb_search_params *p,
                      emb_topk *candidates, emb_scratch *sc, emb_hit *out)
{
    query_ctx c;
    emb_search_plan pl;
    int rc = plan(s, query, p, &c, &pl);
    if (rc)
        return rc;
    emb_topk best;
    if (pl.two_stage) {
        emb_topk_init(&best, sc->best, p->k);
        for (uint32_t i = 0; i < candidates->n; i++) {
            uint64_t r = candidates->hits[i].id;
            emb_topk_push(&best, score_row(&c, pl.exact_codec, r), r);
        }
    } else {
        best = *candidates;
    }
    uint32_t n = emb_topk_sort(&best);
    if (n > p->k)
        n = p->k;
    for (uint32_t i = 0; i < n; i++) {
        out[i] = best.hits[i];
        if (p->metric == EMB_METRIC_L2)
            out[i].score = sqrtf(fmaxf(0.0f, -out[i].score));
    }
    return (int)n;
}

int emb_search(const emb_store *s, const float *query, const emb_search_params *p, emb_scratch *sc,
               emb_hit *out)
{
    query_ctx c;
    emb_search_plan pl;
    if (sc->dim != s->dim)
        return EMB_EINVAL;
    int rc = plan(s, query, p, &c, &pl);
    if (rc)
        return rc;
    uint32_t want = pl.candidates < sc->max_cand ? pl.candidates : sc->max_cand;
    emb_topk heap;
    emb_topk_init(&heap, pl.two_stage ? sc->cand : sc->best, pl.two_stage ? want : p->k);
    with_q1_query(&c, pl.scan_codec, sc->qbits, sc->qd);
    scan(&c, pl.scan_codec, p, &heap);
    return emb_search_finish(s, query, p, &heap, sc, out);
}

/* ---- many queries in one pass ------------------------------------------------------------ */

/* A batch reads each block of rows once for all its queries. Small batches score the block with
 * the many-row kernels, query by query (the block stays in L2). From BATCH_TILE_MIN queries on,
 * the block is widened to f32 once (f16 converted, q1 decoded to +-d) and the batch tile kernel
 * multiplies it with all queries at once, 6 rows x 32 queries per step in registers. The tile's
 * sums are not the canonical scores (another order of additions; for q1 the f32 product of the
 * decoded row with the int8-rounded query), so the tile only filters: a pair is confirmed with
 * the one-row kernel when its tile estimate could reach the query's worst kept hit, with a
 * margin that bounds both computations' rounding (see limits_for). Everything that enters a
 * heap is a canonical score, so a batch answers exactly what emb_search answers.
 *
 * Rejected: making the tile itself bit-identical to the one-row kernels (it would need their
 * four accumulators and horizontal sums per pair, the very cost the tile removes), and BLAS
 * (no dependency, and the filter would still be needed for the exact scores). */

/* Bytes of a block of rows, widened to f32: stays in L2 with the transposed queries. */
#define BATCH_BLOCK_BYTES (96u << 10)
/* Queries per tile call: their transposed slice (dim x 64 floats) stays in L2. */
#define BATCH_QUERIES 64u
/* Below this many queries the tile's 16-wide columns are mostly padding. */
#define BATCH_TILE_MIN 8u

struct emb_batch_scratch {
    uint32_t dim, max_nq, max_cand, ldq, ldx, block;
    emb_hit *cand;   /* max_nq x max_cand */
    emb_hit *best;   /* max_nq x EMB_MAX_K */
    emb_topk *heaps; /* max_nq */
    query_ctx *ctx;  /* max_nq */
    /* The tile path: */
    float *qt;           /* dim x ldq, 64-byte aligned: query j's value i at qt[i * ldq + j] */
    float *qa, *qc, *qe; /* ldq: per-query terms of the limit */
    float *worst;        /* ldq: the worst kept score of each heap, -inf while not full */
    float *xb;           /* block x ldx, 64-byte aligned: the block's rows as f32 */
    float *rb, *rd, *rf; /* block: per-row terms of the limit */
    float *xn;           /* block: |row| of the widened row */
    float *dots;         /* block x ldq: the tile's estimates */
    uint16_t *hits;      /* block x ldq / 16 */
    int8_t *qi;          /* EMB_Q1_GROUP: one block of a query rounded to int8 */
    uint64_t *qbits;     /* max_nq x 2 x blocks: each query's signs, for q1 x q1 */
    float *qd;           /* max_nq x blocks: its block scales */
    uint32_t nb;         /* emb_q1_blocks(dim) */
};

static void *alloc64(size_t bytes)
{
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

emb_batch_scratch *emb_batch_scratch_new(uint32_t dim, uint32_t max_nq, uint32_t max_candidates)
{
    if (max_candidates < EMB_MAX_K)
        max_candidates = EMB_MAX_K;
    if (max_nq == 0 || dim == 0)
        return NULL;
    emb_batch_scratch *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->dim = dim;
    b->max_nq = max_nq;
    b->max_cand = max_candidates;
    b->ldq = (max_nq + 15) / 16 * 16;
    b->ldx = (dim + 15) / 16 * 16;
    b->block = BATCH_BLOCK_BYTES / (b->ldx * 4u);
    if (b->block < 6)
        b->block = 6;
    const size_t ldq = b->ldq, blk = b->block;
    b->cand = malloc((size_t)max_nq * max_candidates * sizeof *b->cand);
    b->best = malloc((size_t)max_nq * EMB_MAX_K * sizeof *b->best);
    b->heaps = malloc((size_t)max_nq * sizeof *b->heaps);
    b->ctx = malloc((size_t)max_nq * sizeof *b->ctx);
    b->qt = alloc64((size_t)dim * ldq * sizeof *b->qt);
    b->qa = malloc(ldq * 4 * sizeof *b->qa);
    b->xb = alloc64(blk * b->ldx * sizeof *b->xb);
    b->rb = malloc(blk * 4 * sizeof *b->rb);
    b->dots = alloc64(blk * ldq * sizeof *b->dots);
    b->hits = malloc(blk * (ldq / 16) * sizeof *b->hits);
    b->qi = malloc(EMB_Q1_GROUP);
    b->nb = emb_q1_blocks(dim);
    b->qbits = malloc((size_t)max_nq * 2 * b->nb * sizeof *b->qbits);
    b->qd = malloc((size_t)max_nq * b->nb * sizeof *b->qd);
    if (!b->cand || !b->best || !b->heaps || !b->ctx || !b->qt || !b->qa || !b->xb || !b->rb ||
        !b->dots || !b->hits || !b->qi || !b->qbits || !b->qd) {
        emb_batch_scratch_free(b);
        return NULL;
    }
    b->qc = b->qa + ldq;
    b->qe = b->qa + 2 * ldq;
    b->worst = b->qa + 3 * ldq;
    b->rd = b->rb + blk;
    b->rf = b->rb + 2 * blk;
    b->xn = b->rb + 3 * blk;
    return b;
}

void emb_batch_scratch_free(emb_batch_scratch *b)
{
    if (!b)
        return;
    free(b->cand);
    free(b->best);
    free(b->heaps);
    free(b->ctx);
    free(b->qt);
    free(b->qa);
    free(b->xb);
    free(b->rb);
    free(b->dots);
    free(b->hits);
    free(b->qi);
    free(b->qbits);
    free(b->qd);
    free(b);
}

static size_t codec_stride(const emb_store *s, uint32_t codec)
{
    return codec == EMB_CODEC_Q1    ? s->stride_q1
           : codec == EMB_CODEC_F16 ? s->stride_f16
                                    : s->stride_f32;
}

/* One pass over the rows of codec for all queries, block by block, with the many-row kernels
 * query by query, into heaps[i]. */
static void scan_blocked(const emb_batch_scratch *b, uint32_t nq, uint32_t codec,
                         const emb_search_params *p, const uint64_t *self, emb_topk *heaps)
{
    const emb_store *s = b->ctx[0].s;
    uint64_t block = (256u << 10) / codec_stride(s, codec);
    if (block == 0)
        block = 1;
    for (uint64_t lo = 0; lo < s->rows; lo += block) {
        uint64_t hi = s->rows - lo < block ? s->rows : lo + block;
        for (uint32_t i = 0; i < nq; i++)
            scan_range(&b->ctx[i], codec, p, self ? self[i] : UINT64_MAX, &heaps[i], lo, hi);
    }
}

/* Relative margin of the tile filter for n values: the tile's sum and the canonical one are
 * each within (n + 2) 2^-24 sum |x_i q_i| <= (n + 2) 2^-24 |x| |q| of the exact product; four
 * times that covers both, the rounding of the limit and of |x| itself. */
static float tile_kappa(uint32_t n)
{
    return 4.0f * (float)(n + 16) * 0x1p-24f;
}

/* Sets query j's limit terms from its heap: while the heap is not full every pair is a hit;
 * then a pair (r, j) is a hit when the tile's dot could give a score >= the worst kept one.
 * With W the worst score, q = |query|, x = |row| (widened), rn = the norm the canonical score
 * divides by, k = tile_kappa, the dot-product limits are:
 *   dot  W - k q x
 *   cos  q rn (W - 2^-22) - k q x
 *   l2   (W + q^2 (1 - k)) / 2 + x^2 (1 - k) / 2 - k q x
 * A zero (or overflowing) query, and a zero (or overflowing) row, make every pair they are in a
 * hit: the limit is -inf, built so that no infinity meets a zero (which would give NaN, never a
 * hit), and the one-row kernel decides. */
static void limits_for(emb_batch_scratch *b, uint32_t j, float kappa)
{
    const query_ctx *c = &b->ctx[j];
    const emb_topk *t = &b->heaps[j];
    const float w = t->k && t->n == t->k ? t->hits[0].score : -INFINITY;
    b->worst[j] = w;
    b->qa[j] = 0.0f;
    b->qc[j] = kappa * c->qn;
    b->qe[j] = w;
    if (w == -INFINITY || !(c->qn > 0.0f) || !isfinite(c->qn2)) {
        b->qc[j] = 0.0f;
        b->qe[j] = -INFINITY;
    } else if (c->metric == EMB_METRIC_COS) {
        b->qa[j] = c->qn * (w - 0x1p-22f);
        b->qe[j] = 0.0f;
    } else if (c->metric == EMB_METRIC_L2) {
        b->qe[j] = (w + c->qn2 * (1.0f - kappa)) * 0.5f;
    }
}

/* Widens rows [r0, r0 + nr) of codec into b->xb and sets their limit terms. */
static void widen_block(emb_batch_scratch *b, uint32_t codec, emb_metric metric, uint64_t r0,
                        size_t nr, float kappa)
{
    const query_ctx *c = &b->ctx[0];
    const emb_store *s = c->s;
    const uint32_t dim = s->dim;
    for (size_t r = 0; r < nr; r++) {
        float *x = b->xb + r * b->ldx;
        float rn;
        if (codec == EMB_CODEC_Q1) {
            const uint8_t *row = s->rows_q1 + (r0 + r) * s->stride_q1;
            c->kn->q1_to_f32(row, x, dim);
            rn = sqrtf(emb_q1_norm2(row, dim));
        } else if (codec == EMB_CODEC_F16) {
            c->kn->f16_to_f32((const uint16_t *)(s->rows_f16 + (r0 + r) * s->stride_f16), x, dim);
            rn = s->norms[r0 + r];
        } else {
            memcpy(x, s->rows_f32 + (r0 + r) * s->stride_f32, dim * sizeof *x);
            rn = s->norms[r0 + r];
        }
        const float xn2 = c->kn->dot_f32(x, x, dim);
        const float xn = sqrtf(xn2);
        b->xn[r] = xn;
        b->rb[r] = metric == EMB_METRIC_COS ? rn : 0.0f;
        b->rd[r] = xn;
        b->rf[r] = metric == EMB_METRIC_L2 ? xn2 * (1.0f - kappa) * 0.5f : 0.0f;
        if (!isfinite(xn2) || (metric == EMB_METRIC_COS && !(rn > 0.0f))) {
            /* Always a hit, with no infinity that could meet a zero in the limit: a zero row
             * (cos scores it 0) or one whose squared norm overflows. */
            b->rb[r] = b->rd[r] = 0.0f;
            b->rf[r] = -INFINITY;
        }
    }
}

/* Writes query j (of dim values) transposed into column j of b->qt: the f32 values, or for a
 * q1 scan the values the q1 x q8 kernel uses (each block rounded to int8, times its delta). */
static void put_query(emb_batch_scratch *b, uint32_t j, const float *q, uint32_t dim, int q8)
{
    for (uint32_t i0 = 0; i0 < dim; i0 += EMB_Q1_GROUP) {
        const uint32_t cnt = dim - i0 < EMB_Q1_GROUP ? dim - i0 : EMB_Q1_GROUP;
        if (!q8) {
            for (uint32_t i = 0; i < cnt; i++)
                b->qt[(size_t)(i0 + i) * b->ldq + j] = q[i0 + i];
            continue;
        }
        int32_t isum;
        const float delta = emb__q8_block(q + i0, cnt, b->qi, &isum);
        for (uint32_t i = 0; i < cnt; i++)
            b->qt[(size_t)(i0 + i) * b->ldq + j] = delta * (float)b->qi[i];
    }
}

/* One pass over the rows of codec for all nq queries with the tile filter (see above). */
static void scan_tiled(emb_batch_scratch *b, uint32_t nq, uint32_t codec,
                       const emb_search_params *p, const uint64_t *self)
{
    const query_ctx *c0 = &b->ctx[0];
    const emb_store *s = c0->s;
    const uint32_t dim = s->dim, ldq = b->ldq;
    const float kappa = tile_kappa(dim);
    const int q8 = codec == EMB_CODEC_Q1 && p->q1_query == EMB_Q1_QUERY_Q8;
    for (uint32_t j = 0; j < ldq; j++) {
        if (j < nq) {
            put_query(b, j, b->ctx[j].q, dim, q8);
            limits_for(b, j, kappa);
        } else {
            for (uint32_t i = 0; i < dim; i++)
                b->qt[(size_t)i * ldq + j] = 0.0f;
            b->qa[j] = b->qc[j] = b->qe[j] = 0.0f;
        }
    }
    for (uint64_t r0 = 0; r0 < s->rows; r0 += b->block) {
        const size_t nr = s->rows - r0 < b->block ? (size_t)(s->rows - r0) : b->block;
        widen_block(b, codec, c0->metric, r0, nr, kappa);
        for (uint32_t j0 = 0; j0 < nq; j0 += BATCH_QUERIES) {
            const uint32_t qn = nq - j0 < BATCH_QUERIES ? nq - j0 : BATCH_QUERIES;
            const emb_tile_limits lim = {b->qa + j0, b->qc + j0, b->qe + j0, b->rb, b->rd, b->rf};
            c0->kn->tile_f32(b->xb, b->ldx, nr, b->qt + j0, ldq, qn, dim, &lim, b->dots + j0,
                             b->hits + j0 / 16);
        }
        /* Confirm the hits in row order, so each heap sees rows as a scan would. */
        for (size_t r = 0; r < nr; r++) {
            const uint16_t *h = b->hits + r * (ldq / 16);
            for (uint32_t g = 0; g < (nq + 15) / 16; g++) {
                for (unsigned m = h[g]; m; m &= m - 1) {
                    const uint32_t j = g * 16 + (uint32_t)__builtin_ctz(m);
                    const uint64_t row = r0 + r;
                    const float sc = score_row(&b->ctx[j], codec, row);
                    if (!(sc >= b->worst[j]))
                        continue;
                    if ((self && row == self[j]) || (p->n_exclude && excluded(p, row)))
                        continue;
                    emb_topk_push(&b->heaps[j], sc, row);
                    limits_for(b, j, kappa);
                }
            }
        }
    }
}

/* Scans codec for all queries into b->heaps, with the tile when the batch is wide enough and
 * the codec gains from it: q1 x q8 and q1 x q1 cost less per row and query than widening the
 * row to f32 and a tile does, so q1 blocks go query by query through them (unless the f32
 * query is asked for). */
static void scan_batch(emb_batch_scratch *b, uint32_t nq, uint32_t codec,
                       const emb_search_params *p, const uint64_t *self)
{
    for (uint32_t i = 0; i < nq; i++)
        with_q1_query(&b->ctx[i], codec, b->qbits + (size_t)i * 2 * b->nb,
                      b->qd + (size_t)i * b->nb);
    if (nq >= BATCH_TILE_MIN && (codec != EMB_CODEC_Q1 || p->q1_query == EMB_Q1_QUERY_F32))
        scan_tiled(b, nq, codec, p, self);
    else
        scan_blocked(b, nq, codec, p, self, b->heaps);
}

int emb_search_batch(const emb_store *s, const float *queries, uint32_t nq,
                     const emb_search_params *p, const uint64_t *self, emb_batch_scratch *b,
                     emb_hit *out, uint32_t *counts)
{
    if (nq == 0 || nq > b->max_nq || p->k == 0 || p->k > EMB_MAX_K ||
        (unsigned)p->metric > EMB_METRIC_L2 || (unsigned)p->q1_query > EMB_Q1_QUERY_Q1 ||
        b->dim != s->dim)
        return EMB_EINVAL;
    const emb_kernels *kn = emb_kernels_get();
    for (uint32_t i = 0; i < nq; i++) {
        const float *q = queries + (size_t)i * s->dim;
        double qn2 = 0;
        for (uint32_t j = 0; j < s->dim; j++) {
            if (!isfinite(q[j]))
                return EMB_EINVAL;
            qn2 += (double)q[j] * q[j];
        }
        b->ctx[i] = (query_ctx){.s = s,
                                .kn = kn,
                                .q = q,
                                .qn = (float)sqrt(qn2),
                                .qn2 = (float)qn2,
                                .metric = p->metric,
                                .q1q = p->q1_query};
    }
    uint32_t primary = emb_store_primary_codec(s);
    uint32_t codec = primary;
    int two_stage = 0;
    if (p->codec) {
        if (!(s->codecs & (uint32_t)p->codec) ||
            (p->codec != EMB_CODEC_F32 && p->codec != EMB_CODEC_F16 && p->codec != EMB_CODEC_Q1))
            return EMB_EINVAL;
        codec = (uint32_t)p->codec;
    } else if (!p->exact && (s->codecs & EMB_CODEC_Q1) && primary != EMB_CODEC_Q1) {
        two_stage = 1;
    }
    if (!two_stage) {
        for (uint32_t i = 0; i < nq; i++)
            emb_topk_init(&b->heaps[i], b->best + (size_t)i * EMB_MAX_K, p->k);
        scan_batch(b, nq, codec, p, self);
    } else {
        uint32_t os = p->oversample ? p->oversample : emb_store_default_oversample(s, 10);
        if (os > EMB_MAX_OVERSAMPLE)
            return EMB_EINVAL;
        uint64_t want = (uint64_t)p->k * os;
        if (want > b->max_cand)
            want = b->max_cand;
        for (uint32_t i = 0; i < nq; i++)
            emb_topk_init(&b->heaps[i], b->cand + (size_t)i * b->max_cand, (uint32_t)want);
        scan_batch(b, nq, EMB_CODEC_Q1, p, self);
        for (uint32_t i = 0; i < nq; i++) {
            emb_topk best;
            emb_topk_init(&best, b->best + (size_t)i * EMB_MAX_K, p->k);
            for (uint32_t c = 0; c < b->heaps[i].n; c++) {
                uint64_t r = b->heaps[i].hits[c].id;
                emb_topk_push(&best, score_row(&b->ctx[i], primary, r), r);
            }
            b->heaps[i] = best;
        }
    }
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t n = emb_topk_sort(&b->heaps[i]);
        emb_hit *o = out + (size_t)i * p->k;
        for (uint32_t j = 0; j < n; j++) {
            o[j] = b->heaps[i].hits[j];
            if (p->metric == EMB_METRIC_L2)
                o[j].score = sqrtf(fmaxf(0.0f, -o[j].score));
        }
        counts[i] = n;
    }
    return 0;
}
