/*
 * pack.c - embd pack: stream an input file into a store and measure what quantization cost.
 *
 * Pass 1 streams the reader into the writer, keeping a uniform reservoir sample of the
 * (normalised) original rows as evaluation queries. The ground truth for recall is exact f32
 * search over the ORIGINAL rows: when the store keeps f32 the staged rows are the originals;
 * otherwise pass 2 re-reads the input (no copy of the originals is ever held, so memory stays
 * bounded by the output) and scores every row against all sampled queries. Then each stored
 * codec is searched through the writer's read-only view of the staged rows: f16 exact, q1 only,
 * and two-stage for each oversampling factor. One q1 scan per query serves every factor: the
 * best k x f candidates are a prefix of the best k x f_max.
 *
 * The metadata section is JSON text written here with a minimal escaper; libembd reads back
 * only "oversample_default" (see emb_store_default_oversample).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "emb_kernels.h"
#include "emb_pack.h"
#include "store_internal.h"

static const uint32_t os_factors[EMB_EVAL_MAX_OS] = {1, 2, 4, 8, 16, 32, 64, 100};

#define EVAL_BATCH 64u /* queries searched together in one pass over the rows */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void normalize(float *v, uint32_t n)
{
    double s = 0;
    for (uint32_t i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    if (s > 0) {
        float inv = (float)(1.0 / sqrt(s));
        for (uint32_t i = 0; i < n; i++)
            v[i] *= inv;
    }
}

/* Reads one line of the keys file into *buf (without the newline or a trailing CR). Returns
 * the length, or -1 at end of file. */
static ssize_t read_key(FILE *f, char **buf, size_t *cap)
{
    ssize_t n = getline(buf, cap, f);
    if (n < 0)
        return -1;
    if (n && (*buf)[n - 1] == '\n')
        n--;
    if (n && (*buf)[n - 1] == '\r')
        n--;
    return n;
}

typedef struct sample {
    uint32_t n, cap;
    uint64_t *ids;
    float *vecs; /* cap x dim */
} sample;

/* State shared by both passes. */
typedef struct packer {
    const emb_pack_opts *o;
    emb_pack_report *rep;
    uint32_t dim;
    float *row; /* dim floats: the current (normalised) row */
    sample smp;
    uint64_t seen; /* rows kept so far in this pass */
    int at_eof;    /* the reader reached the end of its input */
} packer;

/* Pulls the next row inside [row_begin, row_end) into p->row. Returns 1, 0 at the end, or a
 * negative error. *index gets the input row number; *raw the reader's row. */
static int next_row(packer *p, emb_reader *r, uint64_t *input_index, emb_row *raw, FILE *keys,
                    char **kbuf, size_t *kcap, ssize_t *klen, emb_error *err)
{
    for (;;) {
        int rc = emb_reader_next(r, raw, err);
        if (rc == 0)
            p->at_eof = 1;
        if (rc <= 0)
            return rc;
        uint64_t i = *input_index;
        (*input_index)++;
        if (keys) {
            *klen = read_key(keys, kbuf, kcap);
            if (*klen < 0)
                return emb_error_set(err, EMB_EINVAL,
                                     "keys file %s has %llu lines but the input has more rows",
                                     p->o->keys_file, (unsigned long long)i);
        }
        if (i < p->o->row_begin)
            continue;
        if (i >= p->o->row_end)
            return 0;
        memcpy(p->row, raw->vec, (size_t)p->dim * sizeof(float));
        if (p->o->normalize)
            normalize(p->row, p->dim);
        return 1;
    }
}

static void progress(const packer *p, const char *phase, uint64_t rows, emb_reader *r)
{
    if (!p->o->progress)
        return;
    const emb_reader_info *in = emb_reader_info_get(r);
    emb_pack_progress pr = {.rows = rows,
                            .total_rows = in->rows,
                            .bytes = emb_reader_bytes_read(r),
                            .total_bytes = in->file_bytes,
                            .phase = phase};
    p->o->progress(p->o->progress_ctx, &pr);
}

/* Pass 2: exact f32 top-k of every sampled query over the original rows (re-read). */
static int ground_truth_reread(packer *p, emb_topk *truth, emb_error *err)
{
    const emb_pack_opts *o = p->o;
    const emb_kernels *kn = emb_kernels_get();
    emb_reader *r;
    int rc = emb_reader_open(&r, o->input, o->format, o->tensor, err);
    if (rc)
        return rc;
    float *qn = malloc((size_t)p->smp.n * sizeof *qn);
    if (!qn) {
        emb_reader_close(r);
        return emb_error_set(err, EMB_ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < p->smp.n; i++)
        qn[i] = sqrtf(kn->dot_f32(p->smp.vecs + (size_t)i * p->dim,
                                  p->smp.vecs + (size_t)i * p->dim, p->dim));
    uint64_t input_index = 0, kept = 0;
    emb_row raw;
    p->seen = 0;
    while ((rc = next_row(p, r, &input_index, &raw, NULL, NULL, NULL, NULL, err)) == 1) {
        float rn = sqrtf(kn->dot_f32(p->row, p->row, p->dim));
        for (uint32_t i = 0; i < p->smp.n; i++) {
            if (p->smp.ids[i] == kept)
                continue;
            const float *q = p->smp.vecs + (size_t)i * p->dim;
            float sc;
            if (o->metric == EMB_METRIC_L2) {
                sc = -kn->l2sq_f32(p->row, q, p->dim);
            } else {
                sc = kn->dot_f32(p->row, q, p->dim);
                if (o->metric == EMB_METRIC_COS)
                    sc = qn[i] * rn > 0 ? sc / (qn[i] * rn) : 0.0f;
            }
            emb_topk_push(&truth[i], sc, kept);
        }
        kept++;
        if ((kept & 0xFFFF) == 0)
            progress(p, "evaluating", kept, r);
    }
    free(qn);
    emb_reader_close(r);
    if (rc < 0)
        return rc;
    if (kept != p->rep->rows)
        return emb_error_set(err, EMB_ECORRUPT,
                             "%s changed while packing: %llu rows on the second read, %llu on "
                             "the first",
                             o->input, (unsigned long long)kept, (unsigned long long)p->rep->rows);
    return 0;
}

/* Ground truth from the staged f32 rows (they are the originals): sorted lists into truth. */
static int ground_truth_staged(packer *p, const emb_store *view, emb_topk *truth, emb_error *err)
{
    emb_batch_scratch *bs = emb_batch_scratch_new(p->dim, EVAL_BATCH, EMB_EVAL_K);
    emb_hit *out = malloc((size_t)EVAL_BATCH * EMB_EVAL_K * sizeof *out);
    uint32_t counts[EVAL_BATCH];
    int rc = 0;
    if (!bs || !out) {
        rc = emb_error_set(err, EMB_ENOMEM, "out of memory");
        goto out;
    }
    emb_search_params sp = {.metric = p->o->metric, .k = EMB_EVAL_K, .codec = EMB_CODEC_F32};
    for (uint32_t i0 = 0; i0 < p->smp.n && !rc; i0 += EVAL_BATCH) {
        uint32_t nb = p->smp.n - i0 < EVAL_BATCH ? p->smp.n - i0 : EVAL_BATCH;
        rc = emb_search_batch(view, p->smp.vecs + (size_t)i0 * p->dim, nb, &sp, p->smp.ids + i0, bs,
                              out, counts);
        if (rc) {
            rc = emb_error_set(err, rc, "evaluation search failed: %s", emb_strerror(rc));
            break;
        }
        for (uint32_t i = 0; i < nb; i++) {
            memcpy(truth[i0 + i].hits, out + (size_t)i * EMB_EVAL_K, counts[i] * sizeof *out);
            truth[i0 + i].n = counts[i];
        }
    }
out:
    emb_batch_scratch_free(bs);
    free(out);
    return rc;
}

static double overlap(const emb_hit *a, uint32_t na, const emb_hit *b, uint32_t nb)
{
    uint32_t hit = 0;
    for (uint32_t i = 0; i < na; i++)
        for (uint32_t j = 0; j < nb; j++)
            if (a[i].id == b[j].id) {
                hit++;
                break;
            }
    return nb ? (double)hit / nb : 1.0;
}

/* Measures recall of every stored codec and of the two-stage search against truth (sorted
 * hit lists, best first). */
static int evaluate(packer *p, const emb_store *view, emb_topk *truth, emb_error *err)
{
    emb_pack_report *rep = p->rep;
    const uint32_t k = EMB_EVAL_K;
    int has_q1 = (view->codecs & EMB_CODEC_Q1) != 0;
    int has_f16 = (view->codecs & EMB_CODEC_F16) != 0;
    uint32_t exact = emb_store_primary_codec(view);
    int two_stage = has_q1 && exact != EMB_CODEC_Q1;
    uint32_t n_os = 0;
    if (two_stage)
        while (n_os < EMB_EVAL_MAX_OS && (uint64_t)k * os_factors[n_os] <= EMB_MAX_K)
            n_os++;
    uint32_t max_cand = n_os ? k * os_factors[n_os - 1] : k;
    emb_batch_scratch *bs = emb_batch_scratch_new(p->dim, EVAL_BATCH, max_cand);
    emb_hit *cand = malloc((size_t)EVAL_BATCH * max_cand * sizeof *cand);
    emb_hit *got = malloc((size_t)EVAL_BATCH * k * sizeof *got);
    emb_hit *heapbuf = malloc((size_t)k * sizeof *heapbuf);
    uint32_t ncand[EVAL_BATCH], ngot[EVAL_BATCH];
    double sum_f16 = 0, sum_q1 = 0, sum_ts[EMB_EVAL_MAX_OS] = {0};
    int rc = 0;
    if (!bs || !cand || !got || !heapbuf) {
        rc = emb_error_set(err, EMB_ENOMEM, "out of memory");
        goto out;
    }
    /* Queries go in batches: one pass over the rows per batch instead of one per query. */
    for (uint32_t i0 = 0; i0 < p->smp.n; i0 += EVAL_BATCH) {
        uint32_t nb = p->smp.n - i0 < EVAL_BATCH ? p->smp.n - i0 : EVAL_BATCH;
        const float *qs = p->smp.vecs + (size_t)i0 * p->dim;
        const uint64_t *self = p->smp.ids + i0;
        emb_search_params sp = {.metric = p->o->metric, .k = k};
        if (has_f16) {
            sp.codec = EMB_CODEC_F16;
            if ((rc = emb_search_batch(view, qs, nb, &sp, self, bs, got, ngot))) {
                rc = emb_error_set(err, rc, "evaluation search failed: %s", emb_strerror(rc));
                goto out;
            }
            for (uint32_t i = 0; i < nb; i++)
                sum_f16 +=
                    overlap(got + (size_t)i * k, ngot[i], truth[i0 + i].hits, truth[i0 + i].n);
        }
        if (!has_q1)
            continue;
        sp.codec = EMB_CODEC_Q1;
        sp.k = max_cand;
        if ((rc = emb_search_batch(view, qs, nb, &sp, self, bs, cand, ncand))) {
            rc = emb_error_set(err, rc, "evaluation search failed: %s", emb_strerror(rc));
            goto out;
        }
        for (uint32_t i = 0; i < nb; i++) {
            const float *q = qs + (size_t)i * p->dim;
            const emb_hit *ci = cand + (size_t)i * max_cand;
            const emb_topk *t = &truth[i0 + i];
            sum_q1 += overlap(ci, ncand[i] < k ? ncand[i] : k, t->hits, t->n);
            float qn2 = emb_kernels_get()->dot_f32(q, q, p->dim);
            for (uint32_t f = 0; f < n_os; f++) {
                emb_topk best;
                emb_topk_init(&best, heapbuf, k);
                uint32_t m = k * os_factors[f];
                for (uint32_t c = 0; c < m && c < ncand[i]; c++)
                    emb_topk_push(&best, emb__score(view, exact, p->o->metric, q, qn2, ci[c].id),
                                  ci[c].id);
                uint32_t nbest = emb_topk_sort(&best);
                sum_ts[f] += overlap(best.hits, nbest, t->hits, t->n);
            }
        }
    }
    double nq = p->smp.n;
    rep->eval_queries = p->smp.n;
    rep->recall_f16 = has_f16 ? sum_f16 / nq : -1;
    rep->recall_q1 = has_q1 ? sum_q1 / nq : -1;
    rep->n_oversample = n_os;
    double best = -1;
    for (uint32_t f = 0; f < n_os; f++) {
        rep->oversample[f] = os_factors[f];
        rep->recall_two_stage[f] = sum_ts[f] / nq;
        if (!rep->oversample_reached && rep->recall_two_stage[f] >= 0.95) {
            rep->oversample_default = os_factors[f];
            rep->oversample_reached = 1;
        }
        if (rep->recall_two_stage[f] > best) {
            best = rep->recall_two_stage[f];
            if (!rep->oversample_reached)
                rep->oversample_default = os_factors[f];
        }
    }
out:
    emb_batch_scratch_free(bs);
    free(cand);
    free(got);
    free(heapbuf);
    return rc;
}

/* ---- metadata JSON ---- */

typedef struct jbuf {
    char *p;
    size_t len, cap;
    int oom;
} jbuf;

static void jput(jbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void jprintf(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jprintf(jbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        jput(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Writes s as a JSON string; bytes that are not valid UTF-8 become U+FFFD. */
static void jstr(jbuf *b, const char *s)
{
    jput(b, "\"", 1);
    const unsigned char *u = (const unsigned char *)s;
    while (*u) {
        unsigned c = *u;
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        for (size_t i = 1; i < n; i++)
            if ((u[i] & 0xC0) != 0x80)
                n = 0;
        if (n == 0) {
            jput(b, "\xEF\xBF\xBD", 3);
            u++;
        } else if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            jput(b, e, 2);
            u++;
        } else if (c < 0x20) {
            jprintf(b, "\\u%04x", c);
            u++;
        } else {
            jput(b, (const char *)u, n);
            u += n;
        }
    }
    jput(b, "\"", 1);
}

static const char *codec_name(uint32_t c)
{
    return c == EMB_CODEC_F32 ? "f32" : c == EMB_CODEC_F16 ? "f16" : "q1";
}

static void jnum(jbuf *b, double v)
{
    if (isfinite(v))
        jprintf(b, "%.6g", v);
    else
        jput(b, "null", 4);
}

static char *make_meta(const emb_pack_opts *o, const emb_pack_report *rep, size_t *len)
{
    jbuf b = {0};
    char when[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    jput(&b, "{\"packer\": ", 11);
    jstr(&b, "embd " EMB_VERSION_STRING);
    jput(&b, ", \"created\": ", 13);
    jstr(&b, when);
    jput(&b, ", \"source\": {\"path\": ", 21);
    jstr(&b, o->input);
    jput(&b, ", \"format\": ", 12);
    jstr(&b, emb_input_format_name(rep->input.format));
    jput(&b, ", \"dtype\": ", 11);
    jstr(&b, rep->input.source_dtype);
    if (rep->input.tensor[0]) {
        jput(&b, ", \"tensor\": ", 12);
        jstr(&b, rep->input.tensor);
    }
    jprintf(&b, ", \"bytes\": %llu", (unsigned long long)rep->input.file_bytes);
    if (o->row_begin || o->row_end != UINT64_MAX)
        jprintf(&b, ", \"rows_begin\": %llu", (unsigned long long)o->row_begin);
    jprintf(&b, "}, \"rows\": %llu, \"dim\": %u, \"codecs\": [", (unsigned long long)rep->rows,
            rep->dim);
    int first = 1;
    for (uint32_t c = EMB_CODEC_F32; c <= EMB_CODEC_Q1; c <<= 1)
        if (rep->codecs & c) {
            jprintf(&b, "%s\"%s\"", first ? "" : ", ", codec_name(c));
            first = 0;
        }
    jprintf(&b, "], \"metric\": \"%s\", \"normalized\": %s, \"duplicate_keys\": %llu",
            emb_metric_name(o->metric), o->normalize ? "true" : "false",
            (unsigned long long)rep->duplicate_keys);
    jput(&b, ", \"quantization\": {", 19);
    first = 1;
    for (int i = 0; i < 3; i++) {
        if (!rep->has_fidelity[i])
            continue;
        jprintf(&b, "%s\"%s\": {\"mean_cos\": ", first ? "" : ", ", codec_name(1u << i));
        jnum(&b, rep->fidelity[i].mean_cos);
        jput(&b, ", \"min_cos\": ", 13);
        jnum(&b, rep->fidelity[i].min_cos);
        jprintf(&b, ", \"worst_row\": %llu}", (unsigned long long)rep->fidelity[i].worst_row);
        first = 0;
    }
    jput(&b, "}", 1);
    if (rep->eval_queries) {
        jprintf(&b, ", \"recall_at_10\": {\"queries\": %u, \"metric\": \"%s\"", rep->eval_queries,
                emb_metric_name(o->metric));
        if (rep->recall_f16 >= 0) {
            jput(&b, ", \"f16\": ", 9);
            jnum(&b, rep->recall_f16);
        }
        if (rep->recall_q1 >= 0) {
            jput(&b, ", \"q1\": ", 8);
            jnum(&b, rep->recall_q1);
        }
        if (rep->n_oversample) {
            jput(&b, ", \"two_stage\": {", 16);
            for (uint32_t f = 0; f < rep->n_oversample; f++) {
                jprintf(&b, "%s\"%u\": ", f ? ", " : "", rep->oversample[f]);
                jnum(&b, rep->recall_two_stage[f]);
            }
            jput(&b, "}", 1);
        }
        jput(&b, "}", 1);
    }
    if (rep->oversample_default)
        jprintf(&b, ", \"oversample_default\": %u, \"oversample_reached\": %s",
                rep->oversample_default, rep->oversample_reached ? "true" : "false");
    jput(&b, "}\n", 2);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

int emb_pack(const emb_pack_opts *o, emb_pack_report *rep, emb_error *err)
{
    int rc;
    double t0 = now_s();
    memset(rep, 0, sizeof *rep);
    rep->recall_f16 = rep->recall_q1 = -1;
    emb_reader *r = NULL;
    emb_writer *w = NULL;
    FILE *keys = NULL;
    char *kbuf = NULL, *meta = NULL;
    size_t kcap = 0, meta_len = 0;
    emb_topk *truth = NULL;
    emb_hit *truth_buf = NULL;
    packer p = {.o = o, .rep = rep};

    if (o->row_end <= o->row_begin)
        return emb_error_set(err, EMB_EINVAL, "empty row range [%llu, %llu)",
                             (unsigned long long)o->row_begin, (unsigned long long)o->row_end);
    if ((rc = emb_reader_open(&r, o->input, o->format, o->tensor, err)))
        return rc;
    rep->input = *emb_reader_info_get(r);
    p.dim = rep->input.dim;
    if (o->keys_file && !(keys = fopen(o->keys_file, "r"))) {
        rc = emb_error_set(err, -errno, "%s: %s", o->keys_file, strerror(errno));
        goto fail;
    }
    int with_keys = keys != NULL || rep->input.has_keys;
    emb_writer_opts wo = {.dim = p.dim,
                          .codecs = o->codecs,
                          .metric = o->metric,
                          .keys = with_keys,
                          .normalized = o->normalize,
                          .q1_interleave = !o->no_q1_interleave};
    if ((rc = emb_writer_open(&w, o->output, &wo, err)))
        goto fail;
    p.row = malloc((size_t)p.dim * sizeof *p.row);
    p.smp.cap = o->eval_queries;
    p.smp.ids = malloc(((size_t)p.smp.cap + 1) * sizeof *p.smp.ids);
    p.smp.vecs = malloc(((size_t)p.smp.cap + 1) * p.dim * sizeof *p.smp.vecs);
    if (!p.row || !p.smp.ids || !p.smp.vecs) {
        rc = emb_error_set(err, EMB_ENOMEM, "out of memory");
        goto fail;
    }

    /* Pass 1. */
    uint64_t input_index = 0, rng = o->seed ? o->seed : 0x5EEDull;
    emb_row raw;
    ssize_t klen = 0;
    while ((rc = next_row(&p, r, &input_index, &raw, keys, &kbuf, &kcap, &klen, err)) == 1) {
        const uint8_t *q1 = raw.q1 && !o->normalize ? raw.q1 : NULL;
        const char *key = keys ? kbuf : raw.key;
        size_t key_len = keys ? (size_t)klen : raw.key_len;
        if ((rc = emb_writer_add(w, p.row, q1, key, key_len, err)))
            goto fail;
        uint64_t id = p.seen++;
        if (p.smp.cap) {
            uint64_t slot = id < p.smp.cap ? id : rng_next(&rng) % (id + 1);
            if (slot < p.smp.cap) {
                if (id < p.smp.cap)
                    p.smp.n++;
                p.smp.ids[slot] = id;
                memcpy(p.smp.vecs + slot * p.dim, p.row, (size_t)p.dim * sizeof(float));
            }
        }
        if ((p.seen & 0xFFFF) == 0)
            progress(&p, "reading", input_index, r);
    }
    if (rc < 0)
        goto fail;
    if (keys && p.at_eof && read_key(keys, &kbuf, &kcap) >= 0) {
        rc =
            emb_error_set(err, EMB_EINVAL, "keys file %s has more lines than the input's %llu rows",
                          o->keys_file, (unsigned long long)input_index);
        goto fail;
    }
    rep->rows = emb_writer_rows(w);
    if (rep->rows == 0) {
        rc = emb_error_set(err, EMB_EINVAL, "%s: no rows in the selected range", o->input);
        goto fail;
    }
    progress(&p, "reading", input_index, r);
    rep->input_bytes = emb_reader_bytes_read(r);
    rep->read_seconds = now_s() - t0;
    rep->dim = p.dim;
    rep->codecs = o->codecs;
    for (int i = 0; i < 3; i++)
        rep->has_fidelity[i] = emb_writer_fidelity(w, 1u << i, &rep->fidelity[i]) == 0;
    emb_reader_close(r);
    r = NULL;

    /* Evaluation. */
    if (p.smp.n) {
        emb_store view;
        if ((rc = emb_writer_view(w, &view, err)))
            goto fail;
        truth = malloc((size_t)p.smp.n * sizeof *truth);
        truth_buf = malloc((size_t)p.smp.n * EMB_EVAL_K * sizeof *truth_buf);
        if (!truth || !truth_buf) {
            rc = emb_error_set(err, EMB_ENOMEM, "out of memory");
            goto fail;
        }
        for (uint32_t i = 0; i < p.smp.n; i++)
            emb_topk_init(&truth[i], truth_buf + (size_t)i * EMB_EVAL_K, EMB_EVAL_K);
        if (view.codecs & EMB_CODEC_F32) {
            if ((rc = ground_truth_staged(&p, &view, truth, err)))
                goto fail;
        } else {
            if ((rc = ground_truth_reread(&p, truth, err)))
                goto fail;
            for (uint32_t i = 0; i < p.smp.n; i++)
                emb_topk_sort(&truth[i]);
        }
        if ((rc = evaluate(&p, &view, truth, err)))
            goto fail;
    }
    if (with_keys && (rc = emb_writer_index_keys(w, err)))
        goto fail;
    rep->duplicate_keys = emb_writer_duplicate_keys(w);
    meta = make_meta(o, rep, &meta_len);
    if (!meta) {
        rc = emb_error_set(err, EMB_ENOMEM, "out of memory");
        goto fail;
    }
    rc = emb_writer_finish(w, meta, meta_len, err);
    w = NULL;
    if (rc)
        goto fail;
    snprintf(rep->meta, sizeof rep->meta, "%s", meta);
    rep->total_seconds = now_s() - t0;
    rc = 0;
fail:
    emb_writer_abort(w);
    emb_reader_close(r);
    if (keys)
        fclose(keys);
    free(kbuf);
    free(meta);
    free(truth);
    free(truth_buf);
    free(p.row);
    free(p.smp.ids);
    free(p.smp.vecs);
    return rc;
}
