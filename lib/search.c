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
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "emb.h"
#include "emb_kernels.h"
#include "store_internal.h"

struct emb_scratch {
    uint32_t dim, max_cand;
    emb_hit *cand; /* max_cand */
    emb_hit *best; /* EMB_MAX_K */
};

emb_scratch *emb_scratch_new(uint32_t dim, uint32_t max_candidates)
{
    if (max_candidates < EMB_MAX_K)
        max_candidates = EMB_MAX_K;
    emb_scratch *sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    sc->dim = dim;
    sc->max_cand = max_candidates;
    sc->cand = malloc((size_t)max_candidates * sizeof *sc->cand);
    sc->best = malloc((size_t)EMB_MAX_K * sizeof *sc->best);
    if (!sc->cand || !sc->best) {
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
    free(sc);
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
    int q1_f32; /* q1 rows against the f32 query (else the int8-rounded one) */
} query_ctx;

static float cos_of(float dot, float qn, float rn)
{
    float den = qn * rn;
    return den > 0 ? dot / den : 0.0f;
}

/* Heap scores (higher is better) of rows [r0, r0 + nr) of codec into out[nr]. Every score of
 * a row goes through here, one row or many: the many-row kernels are bit-identical to the
 * one-row ones, so a row scores the same in a scan, a split scan, a rescoring or a batch. */
static void score_rows(const query_ctx *c, uint32_t codec, uint64_t r0, size_t nr, float *out)
{
    const emb_store *s = c->s;
    const uint32_t dim = s->dim;
    if (codec == EMB_CODEC_Q1) {
        const uint8_t *rows = s->rows_q1 + r0 * s->stride_q1;
        (c->q1_f32 ? c->kn->dot_q1_rows : c->kn->dot_q1q8_rows)(rows, s->stride_q1, nr, c->q, dim,
                                                                out);
        if (c->metric == EMB_METRIC_DOT)
            return;
        for (size_t i = 0; i < nr; i++) {
            const float rn2 = emb_q1_norm2(rows + i * s->stride_q1, dim);
            out[i] = c->metric == EMB_METRIC_COS ? cos_of(out[i], c->qn, sqrtf(rn2))
                                                 : -(c->qn2 - 2 * out[i] + rn2);
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

/* Rows scored per kernel call in a scan: enough to amortise the call and the query set-up,
 * few enough that the scores stay in L1. */
#define SCAN_ROWS 512u

/* Offers the scores sc[0..n) of rows r0.. to t, skipping p's exclusions and the id self. Most
 * rows lose to the worst hit kept, so that test comes first and costs one compare; exclusions
 * are looked up only for rows that would enter the heap. */
static void offer(emb_topk *t, const float *sc, size_t n, uint64_t r0, const emb_search_params *p,
                  uint64_t self)
{
    if (t->k == 0)
        return;
    float worst = t->n == t->k ? t->hits[0].score : -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!(sc[i] >= worst)) /* also drops NaN, which the heap refuses anyway */
            continue;
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
        offer(t, sc, n, r0, p, self);
    }
}

static void scan(const query_ctx *c, uint32_t codec, const emb_search_params *p, emb_topk *t)
{
    scan_range(c, codec, p, UINT64_MAX, t, 0, c->s->rows);
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
    if (p->k == 0 || p->k > EMB_MAX_K || (unsigned)p->metric > EMB_METRIC_L2)
        return EMB_EINVAL;
    *c = (query_ctx){
        .s = s, .kn = emb_kernels_get(), .q = query, .metric = p->metric, .q1_f32 = p->q1_f32};
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
    scan(&c, pl.scan_codec, p, &heap);
    return emb_search_finish(s, query, p, &heap, sc, out);
}

/* ---- many queries in one pass ------------------------------------------------------------ */

/* Bytes of rows scored for every query before moving on: small enough that the block stays in
 * L2 (1 MiB per core on the machines we measure) next to the queries. */
#define BATCH_BLOCK_BYTES (256u << 10)

struct emb_batch_scratch {
    uint32_t dim, max_nq, max_cand;
    emb_hit *cand;   /* max_nq x max_cand */
    emb_hit *best;   /* max_nq x EMB_MAX_K */
    emb_topk *heaps; /* max_nq */
    query_ctx *ctx;  /* max_nq */
};

emb_batch_scratch *emb_batch_scratch_new(uint32_t dim, uint32_t max_nq, uint32_t max_candidates)
{
    if (max_candidates < EMB_MAX_K)
        max_candidates = EMB_MAX_K;
    if (max_nq == 0)
        return NULL;
    emb_batch_scratch *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->dim = dim;
    b->max_nq = max_nq;
    b->max_cand = max_candidates;
    b->cand = malloc((size_t)max_nq * max_candidates * sizeof *b->cand);
    b->best = malloc((size_t)max_nq * EMB_MAX_K * sizeof *b->best);
    b->heaps = malloc((size_t)max_nq * sizeof *b->heaps);
    b->ctx = malloc((size_t)max_nq * sizeof *b->ctx);
    if (!b->cand || !b->best || !b->heaps || !b->ctx) {
        emb_batch_scratch_free(b);
        return NULL;
    }
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
    free(b);
}

/* One pass over the rows of codec for all queries, block by block, into heaps[i]. */
static void scan_blocked(const emb_batch_scratch *b, uint32_t nq, uint32_t codec,
                         const emb_search_params *p, const uint64_t *self, emb_topk *heaps)
{
    const emb_store *s = b->ctx[0].s;
    size_t stride = codec == EMB_CODEC_Q1    ? s->stride_q1
                    : codec == EMB_CODEC_F16 ? s->stride_f16
                                             : s->stride_f32;
    uint64_t block = BATCH_BLOCK_BYTES / stride;
    if (block == 0)
        block = 1;
    for (uint64_t lo = 0; lo < s->rows; lo += block) {
        uint64_t hi = s->rows - lo < block ? s->rows : lo + block;
        for (uint32_t i = 0; i < nq; i++)
            scan_range(&b->ctx[i], codec, p, self ? self[i] : UINT64_MAX, &heaps[i], lo, hi);
    }
}

int emb_search_batch(const emb_store *s, const float *queries, uint32_t nq,
                     const emb_search_params *p, const uint64_t *self, emb_batch_scratch *b,
                     emb_hit *out, uint32_t *counts)
{
    if (nq == 0 || nq > b->max_nq || p->k == 0 || p->k > EMB_MAX_K ||
        (unsigned)p->metric > EMB_METRIC_L2 || b->dim != s->dim)
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
                                .q1_f32 = p->q1_f32};
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
        scan_blocked(b, nq, codec, p, self, b->heaps);
    } else {
        uint32_t os = p->oversample ? p->oversample : emb_store_default_oversample(s, 10);
        if (os > EMB_MAX_OVERSAMPLE)
            return EMB_EINVAL;
        uint64_t want = (uint64_t)p->k * os;
        if (want > b->max_cand)
            want = b->max_cand;
        for (uint32_t i = 0; i < nq; i++)
            emb_topk_init(&b->heaps[i], b->cand + (size_t)i * b->max_cand, (uint32_t)want);
        scan_blocked(b, nq, EMB_CODEC_Q1, p, self, b->heaps);
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
