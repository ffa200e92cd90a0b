/*
 * test_search.c - emb_search against a brute-force reference written here.
 *
 * The reference decodes each row of the searched codec straight from the store's bytes with the
 * codecs' one-value functions, scores it in double precision by the documented formulas (cos
 * divides by the norms section for f32/f16 rows and by the block-scale norm for q1; l2 is a
 * distance), and sorts by score, then id. emb_search computes in float with SIMD kernels, so
 * scores are compared with a tolerance relative to the sum of the magnitudes of the terms, and
 * ids are compared exactly wherever the reference's neighbours are farther apart than that
 * tolerance. Duplicate rows score bit-identically and must come back in id order.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emb.h"
#include "emb_kernels.h"
#include "helpers.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const emb_metric all_metrics[] = {EMB_METRIC_COS, EMB_METRIC_DOT, EMB_METRIC_L2};

/* ---- fixtures --------------------------------------------------------------------------- */

static char *fresh_path(const char *stem)
{
    static unsigned counter;
    char name[128];
    snprintf(name, sizeof name, "%s-%u.emb", stem, counter++);
    return th_path(name);
}

/* n x dim normal rows; rows 10, 20 and 30 copy row 5, row 7 is zero, rows 40..42 copy row 41
 * scaled by 2 (same direction: equal cos, different dot and l2). */
static float *make_table(uint64_t seed, uint32_t n, uint32_t dim)
{
    float *t = malloc(((size_t)n * dim + 1) * sizeof *t);
    cr_assert_not_null(t);
    th_rand_vec(&seed, t, (size_t)n * dim);
    static const uint32_t dups[] = {10, 20, 30};
    for (size_t i = 0; i < ARRAY_LEN(dups); i++)
        if (dups[i] < n)
            memcpy(t + (size_t)dups[i] * dim, t + (size_t)5 * dim, dim * sizeof *t);
    if (n > 7)
        memset(t + (size_t)7 * dim, 0, dim * sizeof *t);
    if (n > 42)
        for (uint32_t j = 0; j < dim; j++)
            t[(size_t)42 * dim + j] = 2 * t[(size_t)41 * dim + j];
    return t;
}

/* A store of n rows; with q1_interleave, q1 rows get the interleaved copy as well. */
static emb_store *build_with(uint32_t codecs, uint32_t dim, uint32_t n, const float *rows,
                             const char *meta, int q1_interleave)
{
    char *path = fresh_path("search");
    emb_writer_opts o = {
        .dim = dim, .codecs = codecs, .metric = EMB_METRIC_COS, .q1_interleave = q1_interleave};
    emb_writer *w;
    emb_error err = {0};
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), 0, "%s", err.msg);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(emb_writer_add(w, rows + (size_t)i * dim, NULL, NULL, 0, &err), 0, "%s",
                     err.msg);
    cr_assert_eq(emb_writer_finish(w, meta, meta ? strlen(meta) : 0, &err), 0, "%s", err.msg);
    emb_store *s;
    cr_assert_eq(emb_store_open(&s, path, &err), 0, "%s", err.msg);
    free(path);
    cr_assert_eq(s->rows_q1i != NULL, q1_interleave && (codecs & EMB_CODEC_Q1) != 0);
    return s;
}

static emb_store *build(uint32_t codecs, uint32_t dim, uint32_t n, const float *rows,
                        const char *meta)
{
    return build_with(codecs, dim, n, rows, meta, 0);
}

/* ---- the reference ---------------------------------------------------------------------- */

typedef struct ref_hit {
    double score; /* higher is better: l2 holds the negated squared distance */
    double tol;   /* in the same units */
    uint64_t id;
} ref_hit;

/* Row r of codec, decoded from the store's bytes. */
static void decode(const emb_store *s, uint32_t codec, uint64_t r, float *out)
{
    if (codec == EMB_CODEC_F32) {
        memcpy(out, s->rows_f32 + r * s->stride_f32, s->dim * sizeof *out);
    } else if (codec == EMB_CODEC_F16) {
        const uint8_t *row = s->rows_f16 + r * s->stride_f16;
        for (uint32_t j = 0; j < s->dim; j++) {
            uint16_t h;
            memcpy(&h, row + 2 * j, 2);
            out[j] = emb_f16_to_f32(h);
        }
    } else {
        emb_q1_decode(s->rows_q1 + r * s->stride_q1, s->dim, out);
    }
}

/* Best first, then lower id: a total order. */
static int ref_cmp(const void *a, const void *b)
{
    const ref_hit *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The query as the q1 stage sees it by default (emb_search_params.q1_query = EMB_Q1_QUERY_Q8),
 * written here from the documented rule: per block of 128 values, m = max |q_j|, i_j = q_j *
 * 127 / m rounded to nearest (ties to even), and the value used is i_j * m / 127. */
static void q8_round(const float *q, uint32_t dim, double *out)
{
    for (uint32_t j0 = 0; j0 < dim; j0 += 128) {
        const uint32_t cnt = dim - j0 < 128 ? dim - j0 : 128;
        float m = 0;
        for (uint32_t j = 0; j < cnt; j++)
            m = fmaxf(m, fabsf(q[j0 + j]));
        for (uint32_t j = 0; j < cnt; j++)
            out[j0 + j] = m > 0 ? (double)nearbyintf(q[j0 + j] * (127.0f / m)) * (m / 127.0f) : 0;
    }
}

/* The query as a q1 x q1 stage sees it (EMB_Q1_QUERY_Q1), from the documented rule: per block,
 * +t for q_j >= 0 and -t otherwise, t = mean |q_j| over the block rounded to float. */
static void q1_round(const float *q, uint32_t dim, double *out)
{
    for (uint32_t j0 = 0; j0 < dim; j0 += 128) {
        const uint32_t cnt = dim - j0 < 128 ? dim - j0 : 128;
        double sum = 0;
        for (uint32_t j = 0; j < cnt; j++)
            sum += fabs((double)q[j0 + j]);
        const double t = (float)(sum / cnt);
        for (uint32_t j = 0; j < cnt; j++)
            out[j0 + j] = q[j0 + j] >= 0 ? t : -t;
    }
}

static size_t reference_q1(const emb_store *s, uint32_t codec, emb_metric m, const float *q,
                           const uint64_t *excl, uint32_t n_excl, emb_q1_query q1q, ref_hit *out)
{
    const uint32_t dim = s->dim;
    float *v = malloc(dim * sizeof *v);
    double *qq = malloc(dim * sizeof *qq);
    cr_assert(v && qq);
    for (uint32_t j = 0; j < dim; j++)
        qq[j] = q[j];
    if (codec == EMB_CODEC_Q1 && q1q == EMB_Q1_QUERY_Q8)
        q8_round(q, dim, qq);
    else if (codec == EMB_CODEC_Q1 && q1q == EMB_Q1_QUERY_Q1)
        q1_round(q, dim, qq);
    double qn2 = 0;
    for (uint32_t j = 0; j < dim; j++)
        qn2 += (double)q[j] * q[j];
    size_t n = 0;
    for (uint64_t r = 0; r < s->rows; r++) {
        int skip = 0;
        for (uint32_t e = 0; e < n_excl; e++)
            skip |= excl[e] == r;
        if (skip)
            continue;
        decode(s, codec, r, v);
        double dot = 0, mag = 0, rn2 = 0, d2 = 0;
        for (uint32_t j = 0; j < dim; j++) {
            dot += qq[j] * v[j];
            mag += fabs(qq[j] * v[j]);
            rn2 += (double)v[j] * v[j];
            d2 += (qq[j] - v[j]) * (qq[j] - v[j]);
        }
        /* The q1 stage's l2 is |q|^2 - 2 dot + |row|^2 with the unrounded query's norm. */
        if (codec == EMB_CODEC_Q1)
            d2 = qn2 - 2 * dot + rn2;
        ref_hit h = {.id = r};
        if (m == EMB_METRIC_DOT) {
            h.score = dot;
            h.tol = 1e-4 * mag + 1e-6;
        } else if (m == EMB_METRIC_COS) {
            /* The norms section holds the primary codec's norms; another codec's rows have
             * their own (an f16 row is not as long as its f32 original). */
            double rn = codec == emb_store_primary_codec(s) ? (double)s->norms[r] : sqrt(rn2);
            double den = sqrt(qn2) * rn;
            h.score = den > 0 ? dot / den : 0.0;
            h.tol = den > 0 ? 1e-4 * mag / den + 1e-6 : 1e-6;
        } else {
            h.score = -d2;
            h.tol = 1e-4 * (qn2 + rn2 + 2 * mag) + 1e-6;
        }
        out[n++] = h;
    }
    free(v);
    free(qq);
    qsort(out, n, sizeof *out, ref_cmp);
    return n;
}

/* Scores every row (exclusions dropped) and sorts by score then id; returns the count. q1 rows
 * are scored against the query form q1q names (reference_q1), the int8-rounded one here. */
static size_t reference(const emb_store *s, uint32_t codec, emb_metric m, const float *q,
                        const uint64_t *excl, uint32_t n_excl, ref_hit *out)
{
    return reference_q1(s, codec, m, q, excl, n_excl, EMB_Q1_QUERY_Q8, out);
}

static const char *const q1_query_names[] = {"q8 query", "f32 query", "q1 query"};

/* emb_search's reported score in the reference's units. */
static double as_ref_units(emb_metric m, float score)
{
    return m == EMB_METRIC_L2 ? -(double)score * score : score;
}

/* Asserts that got[n] is a correct top-k of the reference. */
static void assert_matches(const char *what, emb_metric m, const emb_hit *got, int n,
                           const ref_hit *ref, size_t nref, uint32_t k, const uint64_t *excl,
                           uint32_t n_excl, uint64_t rows)
{
    size_t want_n = nref < k ? nref : k;
    cr_assert_eq((size_t)n, want_n, "%s: %d hits, want %zu", what, n, want_n);
    double gtol = 0;
    for (size_t i = 0; i < nref; i++)
        gtol = fmax(gtol, ref[i].tol);
    for (int i = 0; i < n; i++) {
        cr_assert_lt(got[i].id, rows, "%s: id %llu", what, (unsigned long long)got[i].id);
        for (uint32_t e = 0; e < n_excl; e++)
            cr_assert_neq(got[i].id, excl[e], "%s: excluded id %llu returned", what,
                          (unsigned long long)excl[e]);
        for (int j = 0; j < i; j++)
            cr_assert_neq(got[i].id, got[j].id, "%s: id %llu twice", what,
                          (unsigned long long)got[i].id);
        if (m == EMB_METRIC_L2)
            cr_assert(got[i].score >= 0 && isfinite(got[i].score), "%s: l2 distance %g", what,
                      (double)got[i].score);
        /* The hit's own score is right... */
        const ref_hit *own = NULL;
        for (size_t r = 0; r < nref && !own; r++)
            if (ref[r].id == got[i].id)
                own = &ref[r];
        cr_assert_not_null(own, "%s: id %llu is not a candidate", what,
                           (unsigned long long)got[i].id);
        double g = as_ref_units(m, got[i].score);
        cr_assert(fabs(g - own->score) <= own->tol, "%s: id %llu scores %.9g, reference %.9g", what,
                  (unsigned long long)got[i].id, g, own->score);
        /* ...and it is as good as the reference's hit at the same rank. */
        cr_assert(fabs(g - ref[i].score) <= gtol, "%s: rank %d scores %.9g, reference %.9g", what,
                  i, g, ref[i].score);
        /* Where the reference's rank i is clearly separated, the id is exact. */
        int isolated = (i == 0 || ref[i - 1].score - ref[i].score > 2 * gtol) &&
                       ((size_t)i + 1 >= nref || ref[i].score - ref[i + 1].score > 2 * gtol);
        if (isolated)
            cr_assert_eq(got[i].id, ref[i].id, "%s: rank %d is id %llu, reference %llu", what, i,
                         (unsigned long long)got[i].id, (unsigned long long)ref[i].id);
        /* Best first; equal scores in id order. */
        if (i > 0) {
            if (m == EMB_METRIC_L2)
                cr_assert(got[i].score >= got[i - 1].score, "%s: rank %d out of order", what, i);
            else
                cr_assert(got[i].score <= got[i - 1].score, "%s: rank %d out of order", what, i);
            /* (Not for l2: the reported sqrt can round two different squared distances to
             * one float, and those keep their squared-distance order.) */
            if (got[i].score == got[i - 1].score && m != EMB_METRIC_L2)
                cr_assert_gt(got[i].id, got[i - 1].id, "%s: tie at rank %d not in id order", what,
                             i);
        }
    }
}

static const char *codec_name(uint32_t c)
{
    return c == EMB_CODEC_F32 ? "f32" : c == EMB_CODEC_F16 ? "f16" : "q1";
}

/* Every metric in the mask (bit per emb_metric), every k, with and without exclusions, for one
 * codec of one store. */
static void check_codec(const emb_store *s, uint32_t codec, unsigned metric_mask, uint64_t seed)
{
    const uint32_t dim = s->dim;
    const uint64_t rows = s->rows;
    static const uint32_t ks[] = {1, 10, 1000, 3};
    const uint64_t excl[] = {0, 5, 6, 41, rows - 1, rows + 5};
    ref_hit *ref = malloc(rows * sizeof *ref);
    emb_hit *got = malloc(EMB_MAX_K * sizeof *got);
    float *q = malloc(dim * sizeof *q);
    emb_scratch *sc = emb_scratch_new(dim, 1000);
    cr_assert(ref && got && q && sc);
    for (int qi = 0; qi < 4; qi++) {
        /* Random queries, then a query equal to row 5 (ties at the top: rows 10, 20, 30). */
        if (qi < 3)
            th_rand_vec(&seed, q, dim);
        else
            decode(s, EMB_CODEC_F32 & s->codecs ? EMB_CODEC_F32 : codec, 5, q);
        for (size_t mi = 0; mi < ARRAY_LEN(all_metrics); mi++) {
            for (size_t ki = 0; ki < ARRAY_LEN(ks); ki++) {
                for (int ex = 0; ex < 2 * (codec == EMB_CODEC_Q1 ? 3 : 1); ex++) {
                    const emb_metric m = all_metrics[mi];
                    if (!(metric_mask & (1u << m)))
                        continue;
                    /* q1: every query form (int8-rounded, f32, 1-bit). */
                    const emb_q1_query q1q = (emb_q1_query)(ex / 2);
                    emb_search_params p = {.metric = m,
                                           .k = ks[ki],
                                           .codec = (int)codec,
                                           .exclude = ex % 2 ? excl : NULL,
                                           .n_exclude = ex % 2 ? (uint32_t)ARRAY_LEN(excl) : 0,
                                           .q1_query = q1q};
                    int n = emb_search(s, q, &p, sc, got);
                    cr_assert_geq(n, 0, "emb_search: %d", n);
                    size_t nref = reference_q1(s, codec, m, q, p.exclude, p.n_exclude, q1q, ref);
                    char what[128];
                    snprintf(what, sizeof what, "%s (%s) dim %u %s k %u query %d excl %d",
                             codec_name(codec), q1_query_names[q1q], dim, emb_metric_name(m),
                             ks[ki], qi, ex % 2);
                    assert_matches(what, m, got, n, ref, nref, ks[ki], p.exclude, p.n_exclude,
                                   rows);
                }
            }
        }
    }
    emb_scratch_free(sc);
    free(ref);
    free(got);
    free(q);
}

Test(search, brute_force_every_codec_metric_k)
{
    static const uint32_t dims[] = {1, 7, 64, 128, 200, 300};
    for (size_t d = 0; d < ARRAY_LEN(dims); d++) {
        const uint32_t dim = dims[d], n = 600;
        float *t = make_table(100 + dim, n, dim);
        emb_store *s = build(EMB_CODEC_F32 | EMB_CODEC_Q1, dim, n, t, NULL);
        check_codec(s, EMB_CODEC_F32, 7, dim);
        check_codec(s, EMB_CODEC_Q1, 7, dim + 2);
        emb_store_close(s);
        s = build(EMB_CODEC_F16 | EMB_CODEC_Q1, dim, n, t, NULL);
        check_codec(s, EMB_CODEC_F16, 7, dim + 3);
        check_codec(s, EMB_CODEC_Q1, 7, dim + 4);
        emb_store_close(s);
        free(t);
    }
}

/* Single-codec stores searched with the automatic choice (no q1 stage possible). */
Test(search, automatic_codec_on_single_codec_stores)
{
    static const uint32_t sets[] = {EMB_CODEC_F32, EMB_CODEC_F16, EMB_CODEC_Q1};
    const uint32_t dim = 33, n = 300;
    float *t = make_table(7, n, dim);
    for (size_t c = 0; c < ARRAY_LEN(sets); c++) {
        emb_store *s = build(sets[c], dim, n, t, NULL);
        uint64_t seed = c;
        float q[33];
        th_rand_vec(&seed, q, dim);
        emb_hit got[10], forced[10];
        emb_scratch *sc = emb_scratch_new(dim, 0);
        for (size_t mi = 0; mi < ARRAY_LEN(all_metrics); mi++) {
            emb_search_params p = {.metric = all_metrics[mi], .k = 10};
            int n1 = emb_search(s, q, &p, sc, got);
            p.codec = (int)sets[c];
            int n2 = emb_search(s, q, &p, sc, forced);
            cr_assert_eq(n1, 10);
            cr_assert_eq(n2, 10);
            cr_assert_eq(memcmp(got, forced, sizeof got), 0, "%s auto != forced",
                         codec_name(sets[c]));
        }
        emb_scratch_free(sc);
        emb_store_close(s);
    }
    free(t);
}

/* Duplicate rows: ties come back in id order, and k cutting a tie keeps the lowest ids. */
Test(search, ties_in_id_order)
{
    const uint32_t dim = 16, n = 200;
    float *t = make_table(9, n, dim);
    /* Five more copies of row 5, interleaved with other rows. */
    static const uint32_t more[] = {99, 12, 150, 199, 64};
    for (size_t i = 0; i < ARRAY_LEN(more); i++)
        memcpy(t + (size_t)more[i] * dim, t + (size_t)5 * dim, dim * sizeof *t);
    const uint64_t group[] = {5, 10, 12, 20, 30, 64, 99, 150, 199};
    emb_scratch *sc = emb_scratch_new(dim, 1000);
    emb_hit got[1000];
    static const uint32_t codecs[] = {EMB_CODEC_F32, EMB_CODEC_F16, EMB_CODEC_Q1};
    for (size_t c = 0; c < 3; c++) {
        emb_store *s = build(codecs[c] | EMB_CODEC_Q1, dim, n, t, NULL);
        for (size_t mi = 0; mi < ARRAY_LEN(all_metrics); mi++) {
            const emb_metric m = all_metrics[mi];
            /* The query is row 5 itself (as stored): for cos and l2 the group is the top. */
            float q[16];
            decode(s, codecs[c], 5, q);
            if (m != EMB_METRIC_DOT) {
                emb_search_params p = {.metric = m, .k = 4, .codec = (int)codecs[c]};
                cr_assert_eq(emb_search(s, q, &p, sc, got), 4);
                for (int i = 0; i < 4; i++)
                    cr_assert_eq(got[i].id, group[i], "%s %s rank %d: id %llu, want %llu",
                                 codec_name(codecs[c]), emb_metric_name(m), i,
                                 (unsigned long long)got[i].id, (unsigned long long)group[i]);
                /* Excluding the query's own row: the next copies move up. */
                const uint64_t ex[] = {5, 12};
                p.exclude = ex;
                p.n_exclude = 2;
                cr_assert_eq(emb_search(s, q, &p, sc, got), 4);
                cr_assert(got[0].id == 10 && got[1].id == 20 && got[2].id == 30 && got[3].id == 64);
            }
            /* Any query: the group's members appear in id order with one score. */
            uint64_t seed = 11 + c;
            th_rand_vec(&seed, q, dim);
            emb_search_params p = {.metric = m, .k = 1000, .codec = (int)codecs[c]};
            int nh = emb_search(s, q, &p, sc, got);
            cr_assert_eq(nh, (int)n);
            int last = -1;
            float score = 0;
            for (size_t g = 0; g < ARRAY_LEN(group); g++) {
                int pos = -1;
                for (int i = 0; i < nh; i++)
                    if (got[i].id == group[g])
                        pos = i;
                cr_assert_gt(pos, last, "%s %s: copy %llu out of id order", codec_name(codecs[c]),
                             emb_metric_name(m), (unsigned long long)group[g]);
                if (last >= 0)
                    cr_assert_eq(got[pos].score, score);
                score = got[pos].score;
                last = pos;
            }
        }
        emb_store_close(s);
    }
    emb_scratch_free(sc);
    free(t);
}

Test(search, zero_query)
{
    const uint32_t dim = 9, n = 50;
    float *t = make_table(13, n, dim);
    emb_store *s = build(EMB_CODEC_F32 | EMB_CODEC_Q1, dim, n, t, NULL);
    emb_store *s16 = build(EMB_CODEC_F16, dim, n, t, NULL);
    emb_scratch *sc = emb_scratch_new(dim, 0);
    float q[9] = {0};
    emb_hit got[10];
    /* cos: every score is 0, so the lowest ids win. */
    static const int codecs[] = {0, EMB_CODEC_F32, EMB_CODEC_F16, EMB_CODEC_Q1};
    for (size_t c = 0; c < ARRAY_LEN(codecs); c++) {
        emb_search_params p = {.metric = EMB_METRIC_COS, .k = 10, .codec = codecs[c]};
        cr_assert_eq(emb_search(codecs[c] == EMB_CODEC_F16 ? s16 : s, q, &p, sc, got), 10);
        for (int i = 0; i < 10; i++) {
            cr_assert_eq(got[i].score, 0.0f);
            cr_assert_eq(got[i].id, (uint64_t)i);
        }
    }
    emb_store_close(s16);
    /* l2: the distance is the row's norm; the zero row (7) is first. */
    emb_search_params p = {.metric = EMB_METRIC_L2, .k = 10, .codec = EMB_CODEC_F32};
    cr_assert_eq(emb_search(s, q, &p, sc, got), 10);
    cr_assert_eq(got[0].id, 7);
    cr_assert_eq(got[0].score, 0.0f);
    for (int i = 1; i < 10; i++)
        cr_assert_float_eq(got[i].score, s->norms[got[i].id], 1e-5f * s->norms[got[i].id]);
    emb_scratch_free(sc);
    emb_store_close(s);
    free(t);
}

/* ---- two-stage ------------------------------------------------------------------------- */

/* With k x oversample >= rows every row is rescored: two-stage equals exact search bit for bit. */
Test(search, two_stage_huge_oversample_equals_exact)
{
    static const uint32_t sets[] = {EMB_CODEC_F16 | EMB_CODEC_Q1, EMB_CODEC_F32 | EMB_CODEC_Q1};
    const uint32_t dim = 48, n = 800;
    float *t = make_table(21, n, dim);
    const uint64_t excl[] = {3, 4, 77, 799};
    for (size_t c = 0; c < ARRAY_LEN(sets); c++) {
        emb_store *s = build(sets[c], dim, n, t, NULL);
        emb_scratch *sc = emb_scratch_new(dim, 1000);
        emb_hit ts[1000], ex[1000];
        uint64_t seed = 5;
        float q[48];
        for (int qi = 0; qi < 5; qi++) {
            th_rand_vec(&seed, q, dim);
            for (size_t mi = 0; mi < ARRAY_LEN(all_metrics); mi++) {
                static const uint32_t ks[] = {10, 50, 1000};
                for (size_t ki = 0; ki < ARRAY_LEN(ks); ki++) {
                    for (int e = 0; e < 2; e++) {
                        emb_search_params p = {.metric = all_metrics[mi],
                                               .k = ks[ki],
                                               .oversample = 100,
                                               .exclude = e ? excl : NULL,
                                               .n_exclude = e ? 4 : 0};
                        int a = emb_search(s, q, &p, sc, ts);
                        p.exact = 1;
                        int b = emb_search(s, q, &p, sc, ex);
                        cr_assert_eq(a, b);
                        cr_assert_eq(a, (int)(ks[ki] < n - 4 * e ? ks[ki] : n - 4 * e));
                        for (int i = 0; i < a; i++) {
                            cr_assert_eq(ts[i].id, ex[i].id, "set %zu %s k %u rank %d", c,
                                         emb_metric_name(all_metrics[mi]), ks[ki], i);
                            cr_assert_eq(ts[i].score, ex[i].score);
                        }
                    }
                }
            }
        }
        emb_scratch_free(sc);
        emb_store_close(s);
    }
    free(t);
}

/* Small oversampling: the answer is the exact rescoring of some candidates, never an excluded
 * id, sorted, and as many hits as asked. */
Test(search, two_stage_small_oversample)
{
    const uint32_t dim = 64, n = 3000;
    float *t = make_table(31, n, dim);
    emb_store *s = build(EMB_CODEC_F16 | EMB_CODEC_Q1, dim, n, t, NULL);
    emb_scratch *sc = emb_scratch_new(dim, 1000);
    ref_hit *ref = malloc(n * sizeof *ref);
    emb_hit got[100], top[1000];
    uint64_t seed = 17;
    float q[64];
    for (int qi = 0; qi < 4; qi++) {
        th_rand_vec(&seed, q, dim);
        for (size_t mi = 0; mi < ARRAY_LEN(all_metrics); mi++) {
            const emb_metric m = all_metrics[mi];
            /* Exclude the exact top 50 (sorted ascending by id). */
            emb_search_params p = {.metric = m, .k = 50, .exact = 1};
            cr_assert_eq(emb_search(s, q, &p, sc, top), 50);
            uint64_t excl[50];
            for (int i = 0; i < 50; i++)
                excl[i] = top[i].id;
            for (int i = 1; i < 50; i++)
                for (int j = i; j > 0 && excl[j - 1] > excl[j]; j--) {
                    uint64_t x = excl[j];
                    excl[j] = excl[j - 1];
                    excl[j - 1] = x;
                }
            static const uint32_t oss[] = {1, 2, 3};
            for (size_t oi = 0; oi < ARRAY_LEN(oss); oi++) {
                emb_search_params tp = {
                    .metric = m, .k = 10, .oversample = oss[oi], .exclude = excl, .n_exclude = 50};
                int nh = emb_search(s, q, &tp, sc, got);
                cr_assert_eq(nh, 10);
                size_t nref = reference(s, EMB_CODEC_F16, m, q, excl, 50, ref);
                for (int i = 0; i < nh; i++) {
                    for (int e = 0; e < 50; e++)
                        cr_assert_neq(got[i].id, excl[e], "excluded id %llu returned",
                                      (unsigned long long)excl[e]);
                    const ref_hit *own = NULL;
                    for (size_t r = 0; r < nref && !own; r++)
                        if (ref[r].id == got[i].id)
                            own = &ref[r];
                    cr_assert_not_null(own);
                    cr_assert(fabs(as_ref_units(m, got[i].score) - own->score) <= own->tol,
                              "two-stage score of %llu is not its exact f16 score",
                              (unsigned long long)got[i].id);
                    if (i > 0) {
                        if (m == EMB_METRIC_L2)
                            cr_assert(got[i].score >= got[i - 1].score);
                        else
                            cr_assert(got[i].score <= got[i - 1].score);
                    }
                }
            }
        }
    }
    free(ref);
    emb_scratch_free(sc);
    emb_store_close(s);
    free(t);
}

/* The q1 x q1 stage's heap score of every row, from the scalar twin, transformed by the metric
 * with the float operations search.c documents (cos: dot / (|q| |row|), |row| from the block
 * scales; l2: -(|q|^2 - 2 dot + |row|^2)); test_lib is built with -ffp-contract=off like the
 * library, so these are the same roundings. */
static void q1q1_stage_scores(const emb_store *s, emb_metric m, const float *q, float *out)
{
    const uint32_t dim = s->dim, nb = emb_q1_blocks(dim);
    uint64_t *qbits = malloc(2 * nb * sizeof *qbits);
    float *qd = malloc(nb * sizeof *qd);
    cr_assert(qbits && qd);
    emb_q1_encode_query(q, dim, qbits, qd);
    emb_dot_q1q1_rows_scalar(s->rows_q1, s->stride_q1, s->rows, qbits, qd, dim, out);
    double qn2d = 0;
    for (uint32_t j = 0; j < dim; j++)
        qn2d += (double)q[j] * q[j];
    const float qn2 = (float)qn2d, qn = (float)sqrt(qn2d);
    for (uint64_t r = 0; r < s->rows && m != EMB_METRIC_DOT; r++) {
        const float rn2 = emb_q1_norm2(s->rows_q1 + r * s->stride_q1, dim);
        if (m == EMB_METRIC_COS) {
            const float den = qn * sqrtf(rn2);
            out[r] = den > 0 ? out[r] / den : 0.0f;
        } else {
            out[r] = -(qn2 - 2 * out[r] + rn2);
        }
    }
    free(qbits);
    free(qd);
}

typedef struct cand {
    float score;
    uint64_t id;
} cand;

/* Best first, then the lower id: the heap's order. */
static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Two-stage search with the q1 x q1 first stage against a brute-force reference: the first
 * stage's candidates are the k x oversample best rows by the scalar twin's scores (ties to the
 * lower id, exclusions dropped), exactly the set the search keeps; the answer must be the best
 * k of those by the exact codec's score (the reference in double, ids exact where separated).
 * Dims below, at and above one block, dim 1, every metric, k up to 1000, f16 and f32 rows, with
 * and without the interleaved q1 copy (600 rows: the last group of 32 partial, the split at
 * row 200 inside a group); the single query, the batch and the split scan give the same hits. */
Test(search, two_stage_q1q1_brute_force)
{
    static const uint32_t dims[] = {1, 7, 100, 128, 129, 300};
    static const uint32_t sets[] = {EMB_CODEC_F16 | EMB_CODEC_Q1, EMB_CODEC_F32 | EMB_CODEC_Q1};
    static const uint32_t ks[] = {1, 10, 37, 1000};
    static const uint32_t oss[] = {1, 3, 20};
    const uint64_t excl[] = {0, 5, 6, 41, 599};
    const uint32_t n = 600;
    for (size_t d = 0; d < ARRAY_LEN(dims); d++) {
        const uint32_t dim = dims[d];
        float *t = make_table(900 + dim, n, dim);
        for (size_t c = 0; c < 2 * ARRAY_LEN(sets); c++) {
            emb_store *s = build_with(sets[c / 2], dim, n, t, NULL, (int)(c % 2));
            const uint32_t exact = emb_store_primary_codec(s);
            emb_scratch *sc = emb_scratch_new(dim, 1000 * 20);
            emb_batch_scratch *bs = emb_batch_scratch_new(dim, 3, 1000 * 20);
            float *q = malloc(3 * (size_t)dim * sizeof *q), *st = malloc(n * sizeof *st);
            cand *cs = malloc(n * sizeof *cs);
            ref_hit *all = malloc(n * sizeof *all), *ref = malloc(n * sizeof *ref);
            emb_hit *got = malloc(EMB_MAX_K * sizeof *got), *bgot = malloc(3 * 1000 * sizeof *bgot);
            emb_hit *split = malloc(EMB_MAX_K * sizeof *split);
            emb_hit *bufs = malloc(2 * (size_t)20000 * sizeof *bufs);
            cr_assert(sc && bs && q && st && cs && all && ref && got && bgot && split && bufs);
            uint64_t seed = 7 * dim + c;
            th_rand_vec(&seed, q, 3 * (size_t)dim);
            decode(s, exact, 5, q + dim); /* a row of the table: its copies tie */
            for (size_t mi = 0; mi < ARRAY_LEN(all_metrics); mi++) {
                const emb_metric m = all_metrics[mi];
                for (size_t ki = 0; ki < ARRAY_LEN(ks); ki++) {
                    for (size_t oi = 0; oi < ARRAY_LEN(oss); oi++) {
                        const int ex = (int)((ki + oi) % 2);
                        emb_search_params p = {.metric = m,
                                               .k = ks[ki],
                                               .oversample = oss[oi],
                                               .exclude = ex ? excl : NULL,
                                               .n_exclude = ex ? (uint32_t)ARRAY_LEN(excl) : 0,
                                               .q1_query = EMB_Q1_QUERY_Q1};
                        uint32_t counts[3];
                        cr_assert_eq(emb_search_batch(s, q, 3, &p, NULL, bs, bgot, counts), 0);
                        for (int qi = 0; qi < 3; qi++) {
                            const float *qq = q + (size_t)qi * dim;
                            /* The first stage, by hand. */
                            q1q1_stage_scores(s, m, qq, st);
                            size_t nc = 0;
                            for (uint64_t r = 0; r < n; r++) {
                                int skip = 0;
                                for (uint32_t e = 0; e < p.n_exclude; e++)
                                    skip |= p.exclude[e] == r;
                                if (!skip && !isnan(st[r]))
                                    cs[nc++] = (cand){st[r], r};
                            }
                            qsort(cs, nc, sizeof *cs, cand_cmp);
                            const size_t want = (size_t)p.k * p.oversample;
                            if (nc > want)
                                nc = want;
                            /* The exact scores of those candidates, best first. */
                            const size_t nall =
                                reference(s, exact, m, qq, p.exclude, p.n_exclude, all);
                            size_t nref = 0;
                            for (size_t i = 0; i < nall; i++)
                                for (size_t j = 0; j < nc; j++)
                                    if (cs[j].id == all[i].id) {
                                        ref[nref++] = all[i];
                                        break;
                                    }
                            cr_assert_eq(nref, nc);
                            const int nh = emb_search(s, qq, &p, sc, got);
                            char what[160];
                            snprintf(what, sizeof what,
                                     "q1q1 two-stage %s dim %u %s k %u os %u query %d excl %d",
                                     codec_name(exact), dim, emb_metric_name(m), p.k, p.oversample,
                                     qi, ex);
                            assert_matches(what, m, got, nh, ref, nref, p.k, p.exclude, p.n_exclude,
                                           n);
                            /* The batch and a scan split in two answer the same, bit for bit. */
                            cr_assert_eq((int)counts[qi], nh, "%s: batch count", what);
                            emb_search_plan pl;
                            cr_assert_eq(emb_search_plan_get(s, qq, &p, &pl), 0);
                            emb_topk parts[2];
                            emb_topk_init(&parts[0], bufs, pl.candidates);
                            emb_topk_init(&parts[1], bufs + 20000, pl.candidates);
                            cr_assert_eq(emb_search_scan(s, qq, &p, 0, n / 3, &parts[0]), 0);
                            cr_assert_eq(emb_search_scan(s, qq, &p, n / 3, n, &parts[1]), 0);
                            emb_topk_merge(&parts[0], &parts[1]);
                            cr_assert_eq(emb_search_finish(s, qq, &p, &parts[0], sc, split), nh);
                            for (int i = 0; i < nh; i++) {
                                const emb_hit *b = bgot + (size_t)qi * p.k + i;
                                cr_assert(b->id == got[i].id && b->score == got[i].score,
                                          "%s: batch rank %d", what, i);
                                cr_assert(split[i].id == got[i].id &&
                                              split[i].score == got[i].score,
                                          "%s: split rank %d", what, i);
                            }
                        }
                    }
                }
            }
            free(bufs);
            free(split);
            free(bgot);
            free(got);
            free(ref);
            free(all);
            free(cs);
            free(st);
            free(q);
            emb_batch_scratch_free(bs);
            emb_scratch_free(sc);
            emb_store_close(s);
        }
        free(t);
    }
}

/* The query form is checked like the other parameters, by name too. */
Test(search, q1_query_parse_and_bad_value)
{
    emb_q1_query v;
    cr_assert_eq(emb_q1_query_parse("q8", &v), 0);
    cr_assert_eq(v, EMB_Q1_QUERY_Q8);
    cr_assert_eq(emb_q1_query_parse("f32", &v), 0);
    cr_assert_eq(v, EMB_Q1_QUERY_F32);
    cr_assert_eq(emb_q1_query_parse("q1", &v), 0);
    cr_assert_eq(v, EMB_Q1_QUERY_Q1);
    cr_assert_eq(emb_q1_query_parse("Q1", &v), EMB_EINVAL);
    cr_assert_eq(emb_q1_query_parse("", &v), EMB_EINVAL);
    cr_assert_eq(emb_q1_query_parse("q1 ", &v), EMB_EINVAL);
    cr_assert_str_eq(emb_q1_query_name(EMB_Q1_QUERY_Q1), "q1");
    cr_assert_str_eq(emb_q1_query_name((emb_q1_query)3), "unknown");
    const uint32_t dim = 4, n = 20;
    float *t = make_table(62, n, dim);
    emb_store *s = build(EMB_CODEC_F16 | EMB_CODEC_Q1, dim, n, t, NULL);
    emb_scratch *sc = emb_scratch_new(dim, 0);
    emb_batch_scratch *bs = emb_batch_scratch_new(dim, 1, 0);
    emb_hit got[10];
    uint32_t count;
    float q[4] = {1, -2, 3, 0};
    emb_search_params p = {.metric = EMB_METRIC_COS, .k = 5, .q1_query = (emb_q1_query)3};
    cr_assert_eq(emb_search(s, q, &p, sc, got), EMB_EINVAL);
    cr_assert_eq(emb_search_batch(s, q, 1, &p, NULL, bs, got, &count), EMB_EINVAL);
    emb_topk h;
    emb_topk_init(&h, got, 5);
    cr_assert_eq(emb_search_scan(s, q, &p, 0, n, &h), EMB_EINVAL);
    p.q1_query = (emb_q1_query)-1;
    cr_assert_eq(emb_search(s, q, &p, sc, got), EMB_EINVAL);
    p.q1_query = EMB_Q1_QUERY_Q1;
    cr_assert_eq(emb_search(s, q, &p, sc, got), 5);
    emb_batch_scratch_free(bs);
    emb_scratch_free(sc);
    emb_store_close(s);
    free(t);
}

/* The q1 stage never returns an excluded id even when they fill the whole candidate list. */
Test(search, two_stage_exclusions_fill_candidates)
{
    const uint32_t dim = 8, n = 100;
    float *t = make_table(41, n, dim);
    emb_store *s = build(EMB_CODEC_F16 | EMB_CODEC_Q1, dim, n, t, NULL);
    emb_scratch *sc = emb_scratch_new(dim, 1000);
    uint64_t excl[99];
    for (int i = 0; i < 99; i++)
        excl[i] = (uint64_t)i + 1; /* everything but row 0 */
    float q[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    emb_hit got[10];
    for (size_t mi = 0; mi < ARRAY_LEN(all_metrics); mi++) {
        emb_search_params p = {
            .metric = all_metrics[mi], .k = 10, .oversample = 1, .exclude = excl, .n_exclude = 99};
        cr_assert_eq(emb_search(s, q, &p, sc, got), 1);
        cr_assert_eq(got[0].id, 0);
        uint64_t all[100];
        for (int i = 0; i < 100; i++)
            all[i] = (uint64_t)i;
        p.exclude = all;
        p.n_exclude = 100;
        cr_assert_eq(emb_search(s, q, &p, sc, got), 0);
        p.exact = 1;
        cr_assert_eq(emb_search(s, q, &p, sc, got), 0);
    }
    emb_scratch_free(sc);
    emb_store_close(s);
    free(t);
}

/* ---- the default oversampling factor --------------------------------------------------- */

/* A store view over exactly meta_len bytes of heap: ASan sees any read past the metadata. */
static uint32_t oversample_of(const char *text, uint32_t fallback)
{
    size_t len = strlen(text);
    char *m = malloc(len ? len : 1);
    memcpy(m, text, len);
    emb_store s;
    memset(&s, 0, sizeof s);
    s.meta = m;
    s.meta_len = len;
    uint32_t v = emb_store_default_oversample(&s, fallback);
    free(m);
    return v;
}

Test(search, default_oversample_from_metadata)
{
    cr_assert_eq(oversample_of("{\"oversample_default\": 7}", 10), 7);
    cr_assert_eq(oversample_of("{\"oversample_default\":12}", 10), 12);
    cr_assert_eq(oversample_of("{\"a\": 1, \"oversample_default\":   100, \"b\": 2}", 10), 100);
    cr_assert_eq(oversample_of("{\"oversample_default\": 1}", 10), 1);
    /* Out of range, not a number, absent: the fallback. */
    cr_assert_eq(oversample_of("{\"oversample_default\": 0}", 10), 10);
    cr_assert_eq(oversample_of("{\"oversample_default\": 101}", 10), 10);
    cr_assert_eq(oversample_of("{\"oversample_default\": 12345}", 10), 10);
    cr_assert_eq(oversample_of("{\"oversample_default\": -3}", 10), 10);
    cr_assert_eq(oversample_of("{\"oversample_default\": \"4\"}", 10), 10);
    cr_assert_eq(oversample_of("{\"oversample\": 4}", 9), 9);
    cr_assert_eq(oversample_of("", 9), 9);
    cr_assert_eq(oversample_of("{}", 3), 3);
    /* Cut off right after the key or inside it: no read past the end. */
    cr_assert_eq(oversample_of("{\"oversample_default\":", 8), 8);
    cr_assert_eq(oversample_of("{\"oversample_default\": ", 8), 8);
    cr_assert_eq(oversample_of("{\"oversample_defa", 8), 8);
    emb_store none;
    memset(&none, 0, sizeof none);
    cr_assert_eq(emb_store_default_oversample(&none, 6), 6);

    /* Through a store file, and used by a two-stage search with oversample 0. */
    const uint32_t dim = 16, n = 900;
    float *t = make_table(51, n, dim);
    emb_store *s = build(EMB_CODEC_F16 | EMB_CODEC_Q1, dim, n, t,
                         "{\"packer\": \"test\", \"oversample_default\": 100}");
    cr_assert_eq(emb_store_default_oversample(s, 10), 100);
    emb_scratch *sc = emb_scratch_new(dim, 1000);
    emb_hit a[10], b[10];
    float q[16];
    uint64_t seed = 3;
    th_rand_vec(&seed, q, dim);
    emb_search_params p = {.metric = EMB_METRIC_COS, .k = 10};
    cr_assert_eq(emb_search(s, q, &p, sc, a), 10);
    p.exact = 1;
    cr_assert_eq(emb_search(s, q, &p, sc, b), 10);
    cr_assert_eq(memcmp(a, b, sizeof a), 0, "oversample 100 from the metadata was not used");
    emb_scratch_free(sc);
    emb_store_close(s);
    s = build(EMB_CODEC_F16, dim, 5, t, NULL);
    cr_assert_eq(emb_store_default_oversample(s, 10), 10);
    emb_store_close(s);
    free(t);
}

/* ---- bad arguments --------------------------------------------------------------------- */

Test(search, bad_arguments)
{
    const uint32_t dim = 4, n = 20;
    float *t = make_table(61, n, dim);
    emb_store *s = build(EMB_CODEC_F16 | EMB_CODEC_Q1, dim, n, t, NULL);
    emb_scratch *sc = emb_scratch_new(dim, 0), *wrong = emb_scratch_new(dim + 1, 0);
    emb_hit got[EMB_MAX_K];
    float q[4] = {1, 0, 0, 0};
    emb_search_params p = {.metric = EMB_METRIC_COS, .k = 0};
    cr_assert_eq(emb_search(s, q, &p, sc, got), EMB_EINVAL, "k = 0");
    p.k = EMB_MAX_K + 1;
    cr_assert_eq(emb_search(s, q, &p, sc, got), EMB_EINVAL, "k > 1000");
    p.k = UINT32_MAX;
    cr_assert_eq(emb_search(s, q, &p, sc, got), EMB_EINVAL);
    p.k = EMB_MAX_K;
    cr_assert_eq(emb_search(s, q, &p, sc, got), (int)n, "k = 1000 > rows");
    p.k = 5;
    p.metric = (emb_metric)3;
    cr_assert_eq(emb_search(s, q, &p, sc, got), EMB_EINVAL, "metric");
    p.metric = EMB_METRIC_DOT;
    cr_assert_eq(emb_search(s, q, &p, wrong, got), EMB_EINVAL, "scratch of another dim");
    static const float poison[] = {NAN, -NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < ARRAY_LEN(poison); i++) {
        for (uint32_t j = 0; j < dim; j++) {
            float bad[4] = {1, 2, 3, 4};
            bad[j] = poison[i];
            for (size_t mi = 0; mi < ARRAY_LEN(all_metrics); mi++) {
                p.metric = all_metrics[mi];
                cr_assert_eq(emb_search(s, bad, &p, sc, got), EMB_EINVAL, "poison %zu at %u", i, j);
                p.exact = 1;
                cr_assert_eq(emb_search(s, bad, &p, sc, got), EMB_EINVAL);
                p.exact = 0;
            }
        }
    }
    p.metric = EMB_METRIC_COS;
    p.codec = EMB_CODEC_F32;
    cr_assert_eq(emb_search(s, q, &p, sc, got), EMB_EINVAL, "codec the store lacks");
    p.codec = EMB_CODEC_F16 | EMB_CODEC_Q1;
    cr_assert_eq(emb_search(s, q, &p, sc, got), EMB_EINVAL, "two codecs at once");
    p.codec = 8;
    cr_assert_eq(emb_search(s, q, &p, sc, got), EMB_EINVAL, "unknown codec");
    p.codec = -1;
    cr_assert_eq(emb_search(s, q, &p, sc, got), EMB_EINVAL, "negative codec");
    p.codec = 0;
    p.oversample = EMB_MAX_OVERSAMPLE + 1;
    cr_assert_eq(emb_search(s, q, &p, sc, got), EMB_EINVAL, "oversample > 100");
    p.oversample = EMB_MAX_OVERSAMPLE;
    cr_assert_eq(emb_search(s, q, &p, sc, got), 5);
    emb_scratch_free(sc);
    emb_scratch_free(wrong);
    emb_scratch_free(NULL);
    emb_store_close(s);
    free(t);
}

/* A scan split into shards (as the server splits one query across its workers), merged and
 * finished, gives exactly emb_search's answer, for exact and two-stage plans. */
Test(search, sharded_scan_merged_equals_one_scan)
{
    static const uint32_t sets[] = {EMB_CODEC_F16 | EMB_CODEC_Q1, EMB_CODEC_F32, EMB_CODEC_Q1};
    const uint32_t dim = 40, n = 1000;
    float *t = make_table(77, n, dim);
    emb_hit *one = malloc(1000 * sizeof *one), *split = malloc(1000 * sizeof *split);
    emb_hit *bufs = malloc((size_t)4 * 1000 * sizeof *bufs);
    for (size_t c = 0; c < ARRAY_LEN(sets); c++) {
        emb_store *s = build(sets[c], dim, n, t, NULL);
        emb_scratch *sc = emb_scratch_new(dim, 1000);
        uint64_t seed = 99 + c;
        float q[40];
        for (int qi = 0; qi < 4; qi++) {
            th_rand_vec(&seed, q, dim);
            for (size_t mi = 0; mi < 3 * ARRAY_LEN(all_metrics); mi++) {
                const uint64_t ex[] = {2, 500};
                emb_search_params p = {.metric = all_metrics[mi % 3],
                                       .k = 25,
                                       .oversample = 4,
                                       .exclude = ex,
                                       .n_exclude = 2,
                                       .q1_query = (emb_q1_query)(mi / 3)};
                int n1 = emb_search(s, q, &p, sc, one);
                cr_assert_gt(n1, 0);
                emb_search_plan pl;
                cr_assert_eq(emb_search_plan_get(s, q, &p, &pl), 0);
                emb_topk parts[4];
                const uint64_t cuts[5] = {0, 1, 333, 777, n}; /* uneven, one tiny shard */
                for (int i = 0; i < 4; i++) {
                    emb_topk_init(&parts[i], bufs + (size_t)i * 1000, pl.candidates);
                    cr_assert_eq(emb_search_scan(s, q, &p, cuts[i], cuts[i + 1], &parts[i]), 0);
                }
                for (int i = 1; i < 4; i++)
                    emb_topk_merge(&parts[0], &parts[i]);
                int n2 = emb_search_finish(s, q, &p, &parts[0], sc, split);
                cr_assert_eq(n2, n1);
                for (int i = 0; i < n1; i++) {
                    cr_assert_eq(split[i].id, one[i].id, "codecs %u metric %zu rank %d", sets[c],
                                 mi, i);
                    cr_assert_eq(split[i].score, one[i].score);
                }
            }
        }
        emb_search_params bad = {.metric = EMB_METRIC_COS, .k = 5};
        emb_topk h;
        emb_topk_init(&h, bufs, 5);
        cr_assert_eq(emb_search_scan(s, q, &bad, 10, 5, &h), EMB_ERANGE);
        cr_assert_eq(emb_search_scan(s, q, &bad, 0, n + 1, &h), EMB_ERANGE);
        emb_scratch_free(sc);
        emb_store_close(s);
    }
    free(one);
    free(split);
    free(bufs);
    free(t);
}

/* ---- batches ----------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* emb_search_batch answers every query exactly as emb_search does (ids and score bits), on both
 * of its paths (narrow batches query by query, wide ones through the tile filter), for every
 * codec, metric, k, exclusion and self-exclusion; near-ties are the point: the table has
 * duplicate rows, a zero row and rows that differ only in length, and some queries are rows of
 * the table or zero. */
static void check_batch(const emb_store *s, uint32_t nq, const emb_search_params *p, uint64_t seed)
{
    const uint32_t dim = s->dim;
    float *qs = malloc((size_t)nq * dim * sizeof *qs);
    uint64_t *self = malloc(nq * sizeof *self);
    th_rand_vec(&seed, qs, (size_t)nq * dim);
    for (uint32_t i = 0; i < nq; i++) {
        self[i] = i % 3 == 0 ? (uint64_t)(i * 7) % s->rows : UINT64_MAX;
        if (i % 5 == 1) /* a row of the table: ties with its copies */
            decode(s, emb_store_primary_codec(s), (uint64_t)(5 + i) % s->rows,
                   qs + (size_t)i * dim);
        if (i == 2) /* a zero query: every score 0, ids in order */
            memset(qs + (size_t)i * dim, 0, dim * sizeof *qs);
    }
    emb_batch_scratch *bs = emb_batch_scratch_new(dim, nq, p->k * 100);
    emb_scratch *sc = emb_scratch_new(dim, p->k * 100);
    emb_hit *got = malloc((size_t)nq * p->k * sizeof *got), *one = malloc(p->k * sizeof *one);
    uint32_t *counts = malloc(nq * sizeof *counts);
    uint64_t *ex = malloc((p->n_exclude + 1) * sizeof *ex);
    cr_assert(bs && sc && got && one && counts && ex);
    cr_assert_eq(emb_search_batch(s, qs, nq, p, self, bs, got, counts), 0);
    for (uint32_t i = 0; i < nq; i++) {
        /* The single query with self added to the exclusions (sorted, no duplicates). */
        emb_search_params p1 = *p;
        uint32_t ne = 0;
        for (uint32_t e = 0; e < p->n_exclude; e++)
            ex[ne++] = p->exclude[e];
        if (self[i] != UINT64_MAX)
            ex[ne++] = self[i];
        qsort(ex, ne, sizeof *ex, cmp_u64);
        uint32_t nd = 0;
        for (uint32_t e = 0; e < ne; e++)
            if (nd == 0 || ex[nd - 1] != ex[e])
                ex[nd++] = ex[e];
        ne = nd;
        p1.exclude = ex;
        p1.n_exclude = ne;
        const int n1 = emb_search(s, qs + (size_t)i * dim, &p1, sc, one);
        cr_assert_eq((int)counts[i], n1, "nq %u query %u: %u hits, single %d", nq, i, counts[i],
                     n1);
        for (int r = 0; r < n1; r++) {
            const emb_hit *h = got + (size_t)i * p->k + r;
            cr_assert_eq(h->id, one[r].id,
                         "nq %u codec %d metric %s k %u query %u rank %d: %llu != %llu", nq,
                         p->codec, emb_metric_name(p->metric), p->k, i, r,
                         (unsigned long long)h->id, (unsigned long long)one[r].id);
            cr_assert_eq(h->score, one[r].score, "query %u rank %d: %a != %a", i, r,
                         (double)h->score, (double)one[r].score);
        }
    }
    free(ex);
    free(counts);
    free(one);
    free(got);
    emb_scratch_free(sc);
    emb_batch_scratch_free(bs);
    free(self);
    free(qs);
}

Test(search, batch_equals_single_queries)
{
    static const uint32_t dims[] = {1, 7, 64, 200};
    static const uint32_t nqs[] = {1, 7, 8, 33, 70};
    static const uint32_t sets[] = {EMB_CODEC_F16 | EMB_CODEC_Q1, EMB_CODEC_F32 | EMB_CODEC_Q1};
    const uint64_t excl[] = {0, 3, 41, 250};
    for (size_t d = 0; d < ARRAY_LEN(dims); d++) {
        const uint32_t dim = dims[d], n = 400;
        float *t = make_table(500 + dim, n, dim);
        for (size_t c = 0; c < ARRAY_LEN(sets); c++) {
            emb_store *s = build(sets[c], dim, n, t, NULL);
            const int codecs[] = {0, EMB_CODEC_Q1, (int)(sets[c] & ~EMB_CODEC_Q1)};
            for (size_t q = 0; q < ARRAY_LEN(nqs); q++) {
                for (size_t mi = 0; mi < ARRAY_LEN(all_metrics); mi++) {
                    for (size_t ci = 0; ci < ARRAY_LEN(codecs); ci++) {
                        const uint32_t k = (q + ci) % 3 == 0 ? 1 : (q + ci) % 3 == 1 ? 10 : 50;
                        emb_search_params p = {.metric = all_metrics[mi],
                                               .k = k,
                                               .codec = codecs[ci],
                                               .oversample = 3,
                                               .exclude = mi == 1 ? excl : NULL,
                                               .n_exclude = mi == 1 ? 4 : 0,
                                               .q1_query = (emb_q1_query)((q + mi) % 3)};
                        check_batch(s, nqs[q], &p, dim * 1000 + q * 10 + mi);
                    }
                }
            }
            emb_store_close(s);
        }
        free(t);
    }
}

/* Rows that differ from one another by a few ulps: the tile filter's margin decides on almost
 * every row, so a margin too tight to cover the rounding would drop rows a single query keeps. */
Test(search, batch_equals_single_on_near_ties)
{
    static const uint32_t dims[] = {64, 300};
    static const uint32_t sets[] = {EMB_CODEC_F32 | EMB_CODEC_Q1, EMB_CODEC_F16 | EMB_CODEC_Q1};
    for (size_t d = 0; d < ARRAY_LEN(dims); d++) {
        const uint32_t dim = dims[d], n = 300;
        uint64_t seed = 4242 + dim;
        float *t = malloc((size_t)n * dim * sizeof *t);
        th_rand_vec(&seed, t, dim);
        for (uint32_t r = 1; r < n; r++)
            for (uint32_t j = 0; j < dim; j++)
                t[(size_t)r * dim + j] = t[j] * (1.0f + 2e-7f * th_rand_unit(&seed));
        for (size_t c = 0; c < ARRAY_LEN(sets); c++) {
            emb_store *s = build(sets[c], dim, n, t, NULL);
            for (size_t mi = 0; mi < ARRAY_LEN(all_metrics); mi++) {
                for (int codec = 0; codec < 2; codec++) {
                    emb_search_params p = {.metric = all_metrics[mi],
                                           .k = 10,
                                           .oversample = 2,
                                           .codec = codec ? (int)(sets[c] & ~EMB_CODEC_Q1) : 0};
                    check_batch(s, 16, &p, dim + mi);
                }
            }
            emb_store_close(s);
        }
        free(t);
    }
}
