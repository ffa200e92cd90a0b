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
} query_ctx;

static float cos_of(float dot, float qn, float rn)
{
    float den = qn * rn;
    return den > 0 ? dot / den : 0.0f;
}

/* Heap score (higher is better) of row r in codec. */
static float score_row(const query_ctx *c, uint32_t codec, uint64_t r)
{
    const emb_store *s = c->s;
    const uint32_t dim = s->dim;
    if (codec == EMB_CODEC_Q1) {
        const uint8_t *row = s->rows_q1 + r * s->stride_q1;
        float dot = c->kn->dot_q1(row, c->q, dim);
        if (c->metric == EMB_METRIC_DOT)
            return dot;
        float rn2 = emb_q1_norm2(row, dim);
        if (c->metric == EMB_METRIC_COS)
            return cos_of(dot, c->qn, sqrtf(rn2));
        return -(c->qn2 - 2 * dot + rn2);
    }
    if (codec == EMB_CODEC_F16) {
        const uint16_t *row = (const uint16_t *)(s->rows_f16 + r * s->stride_f16);
        if (c->metric == EMB_METRIC_L2)
            return -c->kn->l2sq_f16(row, c->q, dim);
        float dot = c->kn->dot_f16(row, c->q, dim);
        return c->metric == EMB_METRIC_DOT ? dot : cos_of(dot, c->qn, s->norms[r]);
    }
    const float *row = (const float *)(s->rows_f32 + r * s->stride_f32);
    if (c->metric == EMB_METRIC_L2)
        return -c->kn->l2sq_f32(row, c->q, dim);
    float dot = c->kn->dot_f32(row, c->q, dim);
    return c->metric == EMB_METRIC_DOT ? dot : cos_of(dot, c->qn, s->norms[r]);
}

float emb__score(const emb_store *s, uint32_t codec, emb_metric metric, const float *q,
                 float qn2, uint64_t r)
{
    query_ctx c = {.s = s, .kn = emb_kernels_get(), .q = q, .qn = sqrtf(qn2), .qn2 = qn2,
                   .metric = metric};
    return score_row(&c, codec, r);
}

static void scan(const query_ctx *c, uint32_t codec, const emb_search_params *p, emb_topk *t)
{
    for (uint64_t r = 0; r < c->s->rows; r++) {
        float sc = score_row(c, codec, r);
        if (p->n_exclude && excluded(p, r))
            continue;
        emb_topk_push(t, sc, r);
    }
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

int emb_search(const emb_store *s, const float *query, const emb_search_params *p,
               emb_scratch *sc, emb_hit *out)
{
    if (p->k == 0 || p->k > EMB_MAX_K || (unsigned)p->metric > EMB_METRIC_L2 || sc->dim != s->dim)
        return EMB_EINVAL;
    query_ctx c = {.s = s, .kn = emb_kernels_get(), .q = query, .metric = p->metric};
    double qn2 = 0;
    for (uint32_t j = 0; j < s->dim; j++) {
        if (!isfinite(query[j]))
            return EMB_EINVAL;
        qn2 += (double)query[j] * query[j];
    }
    c.qn2 = (float)qn2;
    c.qn = (float)sqrt(qn2);

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

    emb_topk best;
    emb_topk_init(&best, sc->best, p->k);
    if (!two_stage) {
        scan(&c, codec, p, &best);
    } else {
        uint32_t os = p->oversample ? p->oversample : emb_store_default_oversample(s, 10);
        if (os > EMB_MAX_OVERSAMPLE)
            return EMB_EINVAL;
        uint64_t want = (uint64_t)p->k * os;
        if (want > sc->max_cand)
            want = sc->max_cand;
        emb_topk cand;
        emb_topk_init(&cand, sc->cand, (uint32_t)want);
        scan(&c, EMB_CODEC_Q1, p, &cand);
        for (uint32_t i = 0; i < cand.n; i++) {
            uint64_t r = cand.hits[i].id;
            emb_topk_push(&best, score_row(&c, primary, r), r);
        }
    }
    uint32_t n = emb_topk_sort(&best);
    for (uint32_t i = 0; i < n; i++) {
        out[i] = best.hits[i];
        if (p->metric == EMB_METRIC_L2)
            out[i].score = sqrtf(fmaxf(0.0f, -out[i].score));
    }
    return (int)n;
}
