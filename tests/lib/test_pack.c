/*
 * test_pack.c - emb_pack end to end on small inputs written here: an .npy v1.0 f32 file holding
 * a clustered table and a GloVe text file with keys.
 *
 * The clustered table (20 tight clusters) has well separated neighbours, so f16 search must find
 * nearly exactly the f32 neighbours, whichever way pack computes the ground truth: from the
 * staged f32 rows (stores with f32) or by re-reading the input (stores without). The metadata
 * is checked with a small strict JSON validator written here (test_lib links no JSON library)
 * plus substrings. Recall numbers are only asserted where the data make them certain; two-stage
 * recall is not monotonic in the oversampling factor and is never asserted to be.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "emb.h"
#include "emb_fault.h"
#include "emb_kernels.h"
#include "emb_pack.h"
#include "helpers.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const uint32_t factors[EMB_EVAL_MAX_OS] = {1, 2, 4, 8, 16, 32, 64, 100};

/* ---- inputs ----------------------------------------------------------------------------- */

static char *fresh_path(const char *stem, const char *ext)
{
    static unsigned counter;
    char name[256];
    snprintf(name, sizeof name, "%s-%u%s", stem, counter++, ext);
    return th_path(name);
}

/* n x dim rows in `clusters` tight clusters: center ~ N(0, 1), row = center + 0.15 N(0, 1). */
static float *clustered(uint64_t seed, uint32_t n, uint32_t dim, uint32_t clusters)
{
    float *c = malloc((size_t)clusters * dim * sizeof *c);
    float *t = malloc((size_t)n * dim * sizeof *t);
    cr_assert(c && t);
    th_rand_vec(&seed, c, (size_t)clusters * dim);
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < dim; j++)
            t[(size_t)i * dim + j] =
                c[(size_t)(i % clusters) * dim + j] + 0.15f * th_rand_normal(&seed);
    free(c);
    return t;
}

/* Writes an .npy v1.0 file of n x dim little-endian f32 (numpy's layout: the header padded with
 * spaces and a final newline so the data starts on a 64-byte boundary). */
static void write_npy(const char *path, const float *t, uint32_t n, uint32_t dim)
{
    char dict[256];
    int dl = snprintf(dict, sizeof dict,
                      "{'descr': '<f4', 'fortran_order': False, 'shape': (%u, %u), }", n, dim);
    size_t hl = (size_t)dl + 1;
    while ((10 + hl) % 64)
        hl++;
    size_t total = 10 + hl + (size_t)n * dim * 4;
    uint8_t *buf = malloc(total);
    cr_assert_not_null(buf);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (uint8_t)(hl & 0xFF);
    buf[9] = (uint8_t)(hl >> 8);
    memset(buf + 10, ' ', hl);
    memcpy(buf + 10, dict, (size_t)dl);
    buf[10 + hl - 1] = '\n';
    memcpy(buf + 10 + hl, t, (size_t)n * dim * 4);
    th_write_file(path, buf, total);
    free(buf);
}

/* Writes a GloVe text file: "<key> v1 ... vdim" per line, values with 9 significant digits (so
 * they read back as the same floats). */
static void write_glove(const char *path, const float *t, uint32_t n, uint32_t dim,
                        const char *const *keys)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (uint32_t i = 0; i < n; i++) {
        fputs(keys[i], f);
        for (uint32_t j = 0; j < dim; j++)
            fprintf(f, " %.9g", (double)t[(size_t)i * dim + j]);
        fputc('\n', f);
    }
    cr_assert_eq(fclose(f), 0);
}

/* Writes lines "<prefix><i>" for i in [0, n). */
static void write_keys(const char *path, const char *prefix, uint32_t n)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (uint32_t i = 0; i < n; i++)
        fprintf(f, "%s%u\n", prefix, i);
    cr_assert_eq(fclose(f), 0);
}

/* The fixture most tests share: 2000 x 64, 20 clusters, as .npy. */
static const uint32_t N = 2000, DIM = 64;

static char *npy_fixture(float **table)
{
    float *t = clustered(0xC1A55, N, DIM, 20);
    char *path = fresh_path("table", ".npy");
    write_npy(path, t, N, DIM);
    if (table)
        *table = t;
    else
        free(t);
    return path;
}

static emb_pack_opts opts_for(const char *in, const char *out, uint32_t codecs)
{
    emb_pack_opts o = {.input = in,
                       .output = out,
                       .format = EMB_INPUT_AUTO,
                       .codecs = codecs,
                       .metric = EMB_METRIC_COS,
                       .row_begin = 0,
                       .row_end = UINT64_MAX,
                       .eval_queries = 200,
                       .seed = 12345};
    return o;
}

static void pack_ok(const emb_pack_opts *o, emb_pack_report *rep)
{
    emb_error err = {0};
    int rc = emb_pack(o, rep, &err);
    cr_assert_eq(rc, 0, "emb_pack(%s): %d %s", o->input, rc, err.msg);
}

static emb_store *open_verified(const char *path)
{
    emb_store *s;
    emb_error err = {0};
    cr_assert_eq(emb_store_open(&s, path, &err), 0, "%s", err.msg);
    int rc = emb_store_verify(s, &err);
    cr_assert_eq(rc, 0, "pack output fails verify: %s", err.msg);
    return s;
}

/* ---- a strict JSON validator (RFC 8259), for the metadata -------------------------------- */

typedef struct jp {
    const char *p, *end;
    int depth;
} jp;

static void j_ws(jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int j_value(jp *j);

static int j_lit(jp *j, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return 0;
    j->p += n;
    return 1;
}

/* One UTF-8 sequence (no overlongs, no surrogates, at most U+10FFFF). */
static int j_utf8(jp *j)
{
    const unsigned char *u = (const unsigned char *)j->p;
    size_t left = (size_t)(j->end - j->p);
    unsigned c = u[0];
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || n > left)
        return 0;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t i = 1; i < n; i++) {
        if ((u[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (u[i] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    j->p += n;
    return 1;
}

static int j_string(jp *j)
{
    if (j->p >= j->end || *j->p != '"')
        return 0;
    j->p++;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            j->p++;
            if (j->p >= j->end)
                return 0;
            char e = *j->p++;
            if (e == 'u') {
                for (int i = 0; i < 4; i++, j->p++)
                    if (j->p >= j->end || !strchr("0123456789abcdefABCDEF", *j->p) || !*j->p)
                        return 0;
            } else if (!strchr("\"\\/bfnrt", e) || !e) {
                return 0;
            }
        } else if (!j_utf8(j)) {
            return 0;
        }
    }
    if (j->p >= j->end)
        return 0;
    j->p++;
    return 1;
}

static int j_digits(jp *j)
{
    const char *s = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > s;
}

static int j_number(jp *j)
{
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p < j->end && *j->p == '0')
        j->p++;
    else if (!j_digits(j))
        return 0;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!j_digits(j))
            return 0;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (!j_digits(j))
            return 0;
    }
    return 1;
}

static int j_container(jp *j, char open, char close)
{
    if (++j->depth > 32)
        return 0;
    j->p++; /* open */
    (void)open;
    j_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return 1;
    }
    for (;;) {
        j_ws(j);
        if (close == '}') {
            if (!j_string(j))
                return 0;
            j_ws(j);
            if (j->p >= j->end || *j->p != ':')
                return 0;
            j->p++;
            j_ws(j);
        }
        if (!j_value(j))
            return 0;
        j_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == close) {
            j->p++;
            j->depth--;
            return 1;
        }
        return 0;
    }
}

static int j_value(jp *j)
{
    if (j->p >= j->end)
        return 0;
    switch (*j->p) {
    case '{': return j_container(j, '{', '}');
    case '[': return j_container(j, '[', ']');
    case '"': return j_string(j);
    case 't': return j_lit(j, "true");
    case 'f': return j_lit(j, "false");
    case 'n': return j_lit(j, "null");
    default: return j_number(j);
    }
}

/* 1 when [s, s + n) is exactly one JSON object (whitespace around it allowed). */
static int json_object_ok(const char *s, size_t n)
{
    jp j = {s, s + n, 0};
    j_ws(&j);
    if (j.p >= j.end || *j.p != '{' || !j_value(&j))
        return 0;
    j_ws(&j);
    return j.p == j.end;
}

Test(pack_json, validator_self_test)
{
    static const char *const good[] = {"{}", " {\"a\": [1, -2.5e+3, true, null, {}]}\n",
                                       "{\"s\": \"\\u00e9\\n\\\"\", \"u\": \"\xC3\xA9\"}"};
    static const char *const bad[] = {"{",           "{\"a\" 1}",         "{\"a\": 01}",
                                      "{\"a\": .5}", "{\"a\": nan}",      "{\"a\": \"\x01\"}",
                                      "{\"a\": 1,}", "{\"a\": \"\xFF\"}", "[]",
                                      "{} {}",       "{\"a\": \"\\x\"}"};
    for (size_t i = 0; i < ARRAY_LEN(good); i++)
        cr_assert(json_object_ok(good[i], strlen(good[i])), "good %zu", i);
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        cr_assert(!json_object_ok(bad[i], strlen(bad[i])), "bad %zu: %s", i, bad[i]);
}

/* ---- report checks ---------------------------------------------------------------------- */

static void assert_meta_has(const char *meta, const char *want)
{
    cr_assert_not_null(strstr(meta, want), "metadata lacks %s:\n%s", want, meta);
}

/* Everything that must hold of any report with an evaluation. */
static void check_report(const emb_pack_report *rep, const emb_pack_opts *o, uint64_t rows,
                         uint32_t dim)
{
    cr_assert_eq(rep->rows, rows);
    cr_assert_eq(rep->dim, dim);
    cr_assert_eq(rep->codecs, o->codecs);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(rep->has_fidelity[i], (o->codecs & (1u << i)) != 0, "fidelity %d", i);
        if (!rep->has_fidelity[i])
            continue;
        cr_assert_eq(rep->fidelity[i].rows, rows);
        cr_assert(rep->fidelity[i].min_cos <= rep->fidelity[i].mean_cos + 1e-12);
        cr_assert(rep->fidelity[i].mean_cos <= 1.0 + 1e-9);
        cr_assert_lt(rep->fidelity[i].worst_row, rows);
    }
    if (o->codecs & EMB_CODEC_F32)
        cr_assert_eq(rep->fidelity[0].mean_cos, 1.0);
    if (o->codecs & EMB_CODEC_F16)
        cr_assert_gt(rep->fidelity[1].mean_cos, 0.999, "f16 mean cos %g",
                     rep->fidelity[1].mean_cos);
    if (o->codecs & EMB_CODEC_Q1)
        cr_assert(rep->fidelity[2].mean_cos > 0.6 && rep->fidelity[2].mean_cos < 1.0,
                  "q1 mean cos %g", rep->fidelity[2].mean_cos);

    const uint32_t want_q = o->eval_queries < rows ? o->eval_queries : (uint32_t)rows;
    cr_assert_eq(rep->eval_queries, want_q);
    const int has_f16 = (o->codecs & EMB_CODEC_F16) != 0, has_q1 = (o->codecs & EMB_CODEC_Q1) != 0;
    const int two_stage = has_q1 && (o->codecs & (EMB_CODEC_F32 | EMB_CODEC_F16));
    if (want_q == 0) {
        cr_assert_eq(rep->recall_f16, -1);
        cr_assert_eq(rep->recall_q1, -1);
        cr_assert_eq(rep->n_oversample, 0);
        cr_assert_eq(rep->oversample_default, 0);
        return;
    }
    if (has_f16)
        cr_assert(rep->recall_f16 >= 0 && rep->recall_f16 <= 1, "%g", rep->recall_f16);
    else
        cr_assert_eq(rep->recall_f16, -1);
    if (has_q1)
        cr_assert(rep->recall_q1 >= 0 && rep->recall_q1 <= 1, "%g", rep->recall_q1);
    else
        cr_assert_eq(rep->recall_q1, -1);
    if (!two_stage) {
        cr_assert_eq(rep->n_oversample, 0);
        cr_assert_eq(rep->oversample_default, 0);
        return;
    }
    cr_assert_eq(rep->n_oversample, EMB_EVAL_MAX_OS);
    double best = -1;
    int first_reached = -1;
    for (uint32_t f = 0; f < rep->n_oversample; f++) {
        cr_assert_eq(rep->oversample[f], factors[f]);
        double r = rep->recall_two_stage[f];
        cr_assert(r >= 0 && r <= 1, "two-stage recall %g at %u", r, factors[f]);
        best = fmax(best, r);
        if (first_reached < 0 && r >= 0.95)
            first_reached = (int)f;
    }
    int among = 0;
    for (uint32_t f = 0; f < rep->n_oversample; f++)
        among |= rep->oversample_default == factors[f];
    cr_assert(among, "oversample_default %u is not a measured factor", rep->oversample_default);
    cr_assert_eq(rep->oversample_reached, first_reached >= 0);
    if (first_reached >= 0) {
        cr_assert_eq(rep->oversample_default, factors[first_reached]);
    } else {
        /* The best factor (the smallest one reaching the best recall). */
        uint32_t f = 0;
        while (rep->recall_two_stage[f] < best)
            f++;
        cr_assert_eq(rep->oversample_default, factors[f]);
    }
}

/* The metadata: strict JSON, the fields pack promises, and the same text in the store. */
static void check_meta(const emb_pack_report *rep, const emb_pack_opts *o, const emb_store *s)
{
    cr_assert_not_null(s->meta);
    cr_assert(json_object_ok(s->meta, s->meta_len), "metadata is not one JSON object:\n%.*s",
              (int)s->meta_len, s->meta);
    size_t n = strlen(rep->meta);
    if (s->meta_len < sizeof rep->meta)
        cr_assert(n == s->meta_len && memcmp(rep->meta, s->meta, n) == 0, "rep.meta differs");
    char want[128];
    snprintf(want, sizeof want, "\"rows\": %llu", (unsigned long long)rep->rows);
    assert_meta_has(rep->meta, want);
    snprintf(want, sizeof want, "\"dim\": %u", rep->dim);
    assert_meta_has(rep->meta, want);
    snprintf(want, sizeof want, "\"metric\": \"%s\"", emb_metric_name(o->metric));
    assert_meta_has(rep->meta, want);
    assert_meta_has(rep->meta, o->normalize ? "\"normalized\": true" : "\"normalized\": false");
    snprintf(want, sizeof want, "\"duplicate_keys\": %llu",
             (unsigned long long)rep->duplicate_keys);
    assert_meta_has(rep->meta, want);
    assert_meta_has(rep->meta, "\"packer\": \"embd ");
    if (rep->oversample_default) {
        snprintf(want, sizeof want, "\"oversample_default\": %u", rep->oversample_default);
        assert_meta_has(rep->meta, want);
        cr_assert_eq(emb_store_default_oversample(s, 0), rep->oversample_default);
    } else {
        cr_assert_null(strstr(rep->meta, "oversample_default"));
        cr_assert_eq(emb_store_default_oversample(s, 42), 42);
    }
    if (rep->eval_queries)
        assert_meta_has(rep->meta, "\"recall_at_10\": {");
    else
        cr_assert_null(strstr(rep->meta, "recall_at_10"));
}

static void check_store_header(const emb_store *s, const emb_pack_report *rep,
                               const emb_pack_opts *o)
{
    cr_assert_eq(s->rows, rep->rows);
    cr_assert_eq(s->dim, rep->dim);
    cr_assert_eq(s->codecs, o->codecs);
    cr_assert_eq(s->metric, o->metric);
    cr_assert_eq((s->flags & EMB_FLAG_NORMALIZED) != 0, o->normalize != 0);
}

/* ---- the tests -------------------------------------------------------------------------- */

Test(pack, npy_f16_q1_report_and_store)
{
    float *t;
    char *in = npy_fixture(&t), *out = fresh_path("packed", ".emb");
    emb_pack_opts o = opts_for(in, out, EMB_CODEC_F16 | EMB_CODEC_Q1);
    emb_pack_report rep;
    pack_ok(&o, &rep);
    check_report(&rep, &o, N, DIM);
    cr_assert_eq(rep.input.format, EMB_INPUT_NPY);
    cr_assert_eq(rep.input.rows, N);
    cr_assert_eq(rep.input.dim, DIM);
    cr_assert_str_eq(rep.input.source_dtype, "f32");
    cr_assert_eq(rep.duplicate_keys, 0);
    cr_assert_geq(rep.recall_f16, 0.98, "f16 recall %g on a clustered table", rep.recall_f16);
    cr_assert(rep.oversample_reached, "two-stage never reached 0.95 on a clustered table");
    cr_assert_geq(rep.total_seconds, rep.read_seconds);

    emb_store *s = open_verified(out);
    check_store_header(s, &rep, &o);
    check_meta(&rep, &o, s);
    assert_meta_has(rep.meta, "\"codecs\": [\"f16\", \"q1\"]");
    assert_meta_has(rep.meta, "\"format\": \"npy\"");
    assert_meta_has(rep.meta, "\"dtype\": \"f32\"");
    cr_assert_null(s->key_offs);
    /* The rows are the input's, encoded. */
    for (uint32_t r = 0; r < N; r += 97) {
        float row[64];
        cr_assert_eq(emb_store_row(s, r, row), 0);
        for (uint32_t j = 0; j < DIM; j++)
            cr_assert_eq(row[j], emb_f16_to_f32(emb_f32_to_f16(t[(size_t)r * DIM + j])));
    }
    emb_store_close(s);
    free(t);
    free(in);
    free(out);
}

/* f32 in the store: ground truth from the staged rows; without: from a second read of the
 * input. The q1 rows are the same in both stores, so both truths must give the same q1 recall,
 * and the f16 rows must find the f32 neighbours. */
Test(pack, ground_truth_paths_agree)
{
    char *in = npy_fixture(NULL);
    static const emb_metric metrics[] = {EMB_METRIC_L2, EMB_METRIC_DOT, EMB_METRIC_COS};
    for (size_t m = 0; m < ARRAY_LEN(metrics); m++) {
        char *out1 = fresh_path("f32path", ".emb"), *out2 = fresh_path("reread", ".emb");
        emb_pack_opts a = opts_for(in, out1, EMB_CODEC_F32 | EMB_CODEC_Q1);
        emb_pack_opts b = opts_for(in, out2, EMB_CODEC_F16 | EMB_CODEC_Q1);
        a.metric = b.metric = metrics[m];
        emb_pack_report ra, rb;
        pack_ok(&a, &ra);
        pack_ok(&b, &rb);
        check_report(&ra, &a, N, DIM);
        check_report(&rb, &b, N, DIM);
        const char *name = emb_metric_name(metrics[m]);
        cr_assert_eq(ra.recall_f16, -1, "%s: no f16 rows, no f16 recall", name);
        cr_assert_geq(rb.recall_f16, 0.98, "%s re-read path: f16 recall %g", name, rb.recall_f16);
        /* The q1 rows are identical; only near-ties of the truth may differ. */
        cr_assert_leq(fabs(ra.recall_q1 - rb.recall_q1), 0.02, "%s: q1 %g vs %g", name,
                      ra.recall_q1, rb.recall_q1);
        emb_store *s = open_verified(out1);
        check_meta(&ra, &a, s);
        emb_store_close(s);
        s = open_verified(out2);
        check_meta(&rb, &b, s);
        emb_store_close(s);
        free(out1);
        free(out2);
    }
    free(in);
}

Test(pack, single_codec_stores)
{
    char *in = npy_fixture(NULL);
    static const uint32_t sets[] = {EMB_CODEC_F32, EMB_CODEC_F16, EMB_CODEC_Q1,
                                    EMB_CODEC_F32 | EMB_CODEC_Q1};
    for (size_t c = 0; c < ARRAY_LEN(sets); c++) {
        char *out = fresh_path("single", ".emb");
        emb_pack_opts o = opts_for(in, out, sets[c]);
        o.eval_queries = 50;
        emb_pack_report rep;
        pack_ok(&o, &rep);
        check_report(&rep, &o, N, DIM);
        if (sets[c] == EMB_CODEC_F16)
            cr_assert_geq(rep.recall_f16, 0.98);
        emb_store *s = open_verified(out);
        check_store_header(s, &rep, &o);
        check_meta(&rep, &o, s);
        emb_store_close(s);
        free(out);
    }
    free(in);
}

Test(pack, row_range)
{
    float *t;
    char *in = npy_fixture(&t);
    /* f32 store: row 0 of the output is input row 100. */
    char *out = fresh_path("range", ".emb");
    emb_pack_opts o = opts_for(in, out, EMB_CODEC_F32);
    o.row_begin = 100;
    o.row_end = 600;
    emb_pack_report rep;
    pack_ok(&o, &rep);
    check_report(&rep, &o, 500, DIM);
    emb_store *s = open_verified(out);
    check_meta(&rep, &o, s);
    assert_meta_has(rep.meta, "\"rows_begin\": 100");
    float row[64];
    for (uint32_t r = 0; r < 500; r += 499) {
        cr_assert_eq(emb_store_row(s, r, row), 0);
        cr_assert_eq(memcmp(row, t + (size_t)(100 + r) * DIM, sizeof row), 0, "row %u", r);
    }
    emb_store_close(s);
    free(out);

    /* The re-read path honours the range too (else its truth names other rows). */
    out = fresh_path("range-reread", ".emb");
    o = opts_for(in, out, EMB_CODEC_F16 | EMB_CODEC_Q1);
    o.row_begin = 1000;
    o.row_end = 1700;
    pack_ok(&o, &rep);
    check_report(&rep, &o, 700, DIM);
    cr_assert_geq(rep.recall_f16, 0.98, "re-read with a range: f16 recall %g", rep.recall_f16);
    s = open_verified(out);
    cr_assert_eq(emb_store_row(s, 0, row), 0);
    cr_assert_eq(row[3], emb_f16_to_f32(emb_f32_to_f16(t[(size_t)1000 * DIM + 3])));
    emb_store_close(s);
    free(out);

    /* An end past the input is clipped. */
    out = fresh_path("range-clip", ".emb");
    o = opts_for(in, out, EMB_CODEC_F16);
    o.row_begin = 1950;
    o.row_end = 1u << 30;
    o.eval_queries = 20;
    pack_ok(&o, &rep);
    check_report(&rep, &o, 50, DIM);
    free(out);

    /* Empty ranges. */
    emb_error err = {0};
    out = fresh_path("range-empty", ".emb");
    o = opts_for(in, out, EMB_CODEC_F16);
    o.row_begin = 10;
    o.row_end = 10;
    cr_assert_eq(emb_pack(&o, &rep, &err), EMB_EINVAL);
    cr_assert_not_null(strstr(err.msg, "empty row range"), "%s", err.msg);
    o.row_end = 5;
    cr_assert_eq(emb_pack(&o, &rep, &err), EMB_EINVAL);
    o.row_begin = 5000;
    o.row_end = UINT64_MAX;
    cr_assert_eq(emb_pack(&o, &rep, &err), EMB_EINVAL);
    cr_assert_not_null(strstr(err.msg, "no rows"), "%s", err.msg);
    cr_assert_eq(access(out, F_OK), -1, "a failed pack left %s", out);
    free(out);
    free(t);
    free(in);
}

Test(pack, keys_file)
{
    char *in = npy_fixture(NULL);
    char *keys = fresh_path("keys", ".txt");
    write_keys(keys, "w", N);
    char *out = fresh_path("keyed", ".emb");
    emb_pack_opts o = opts_for(in, out, EMB_CODEC_F16 | EMB_CODEC_Q1);
    o.keys_file = keys;
    emb_pack_report rep;
    pack_ok(&o, &rep);
    check_report(&rep, &o, N, DIM);
    cr_assert_eq(rep.duplicate_keys, 0);
    emb_store *s = open_verified(out);
    check_meta(&rep, &o, s);
    cr_assert(s->flags & EMB_FLAG_KEYS);
    for (uint32_t r = 0; r < N; r += 37) {
        char k[16];
        int m = snprintf(k, sizeof k, "w%u", r);
        uint64_t id;
        cr_assert_eq(emb_store_find(s, k, (size_t)m, &id), 0, "%s", k);
        cr_assert_eq(id, r);
    }
    emb_store_close(s);
    free(out);

    /* With a row range, line i still names input row i. */
    out = fresh_path("keyed-range", ".emb");
    o.output = out;
    o.row_begin = 100;
    o.row_end = 200;
    o.eval_queries = 10;
    pack_ok(&o, &rep);
    s = open_verified(out);
    uint64_t id;
    cr_assert_eq(emb_store_find(s, "w150", 4, &id), 0);
    cr_assert_eq(id, 50);
    cr_assert_eq(emb_store_find(s, "w50", 3, &id), EMB_ENOTFOUND);
    cr_assert_eq(emb_store_find(s, "w200", 4, &id), EMB_ENOTFOUND);
    emb_store_close(s);
    free(out);

    /* Duplicate lines: counted, the first row wins, the count is in the metadata. */
    char *dkeys = fresh_path("dupkeys", ".txt");
    FILE *f = fopen(dkeys, "w");
    for (uint32_t i = 0; i < N; i++)
        fprintf(f, "d%u\r\n", i % 1500); /* CRLF lines; 500 duplicates */
    fclose(f);
    out = fresh_path("dups", ".emb");
    o = opts_for(in, out, EMB_CODEC_F16);
    o.keys_file = dkeys;
    o.eval_queries = 10;
    pack_ok(&o, &rep);
    cr_assert_eq(rep.duplicate_keys, 500);
    s = open_verified(out);
    check_meta(&rep, &o, s);
    assert_meta_has(rep.meta, "\"duplicate_keys\": 500");
    cr_assert_eq(emb_store_find(s, "d7", 2, &id), 0);
    cr_assert_eq(id, 7);
    const char *k;
    size_t kl;
    cr_assert_eq(emb_store_key(s, 1507, &k, &kl), 0);
    cr_assert(kl == 2 && memcmp(k, "d7", 2) == 0, "CR kept in key");
    emb_store_close(s);
    free(out);
    free(dkeys);
    free(keys);
    free(in);
}

Test(pack, keys_file_wrong_length)
{
    char *in = npy_fixture(NULL);
    static const char old[] = "existing output";
    char *out = fresh_path("keys-bad", ".emb");
    th_write_file(out, old, strlen(old));
    static const uint32_t counts[] = {N - 1, 0, N + 1, N + 100};
    static const char *const msgs[] = {"keys file", "keys file", "more lines", "more lines"};
    for (size_t i = 0; i < ARRAY_LEN(counts); i++) {
        char *keys = fresh_path("keys-n", ".txt");
        write_keys(keys, "k", counts[i]);
        emb_pack_opts o = opts_for(in, out, EMB_CODEC_F16 | EMB_CODEC_Q1);
        o.keys_file = keys;
        emb_pack_report rep;
        emb_error err = {0};
        cr_assert_eq(emb_pack(&o, &rep, &err), EMB_EINVAL, "%u lines", counts[i]);
        cr_assert_not_null(strstr(err.msg, msgs[i]), "%u lines: %s", counts[i], err.msg);
        size_t len;
        char *got = th_read_file(out, &len);
        cr_assert(len == strlen(old) && memcmp(got, old, len) == 0, "output replaced");
        free(got);
        free(keys);
    }
    /* A missing keys file. */
    emb_pack_opts o = opts_for(in, out, EMB_CODEC_F16);
    char *missing = th_path("no-such-keys.txt");
    o.keys_file = missing;
    emb_pack_report rep;
    emb_error err = {0};
    cr_assert_eq(emb_pack(&o, &rep, &err), -ENOENT);
    free(missing);
    free(out);
    free(in);
}

/* Too many lines is an error too when the row range runs past the input's end: the input
 * ended, so every line should have been used. */
Test(pack, keys_file_longer_than_input_with_a_range)
{
    char *in = npy_fixture(NULL), *out = fresh_path("keys-long", ".emb");
    char *keys = fresh_path("keys-long", ".txt");
    write_keys(keys, "k", N + 5);
    emb_pack_opts o = opts_for(in, out, EMB_CODEC_F16);
    o.keys_file = keys;
    o.row_end = N + 100;
    o.eval_queries = 0;
    emb_pack_report rep;
    emb_error err = {0};
    int rc = emb_pack(&o, &rep, &err);
    cr_assert_eq(rc, EMB_EINVAL, "a keys file of %u lines for %u rows (range end %u) was accepted",
                 N + 5, N, N + 100);
    cr_assert_not_null(strstr(err.msg, "more lines"), "%s", err.msg);
    cr_assert_eq(access(out, F_OK), -1, "a failed pack left %s", out);
    free(keys);
    free(in);
    free(out);
}

Test(pack, normalize)
{
    char *in = npy_fixture(NULL);
    static const uint32_t sets[] = {EMB_CODEC_F32 | EMB_CODEC_Q1, EMB_CODEC_F16 | EMB_CODEC_Q1};
    for (size_t c = 0; c < ARRAY_LEN(sets); c++) {
        char *out = fresh_path("norm", ".emb");
        emb_pack_opts o = opts_for(in, out, sets[c]);
        o.normalize = 1;
        emb_pack_report rep;
        pack_ok(&o, &rep);
        check_report(&rep, &o, N, DIM);
        emb_store *s = open_verified(out);
        check_store_header(s, &rep, &o);
        check_meta(&rep, &o, s);
        const float tol = sets[c] & EMB_CODEC_F32 ? 1e-5f : 2e-3f;
        for (uint32_t r = 0; r < N; r++)
            cr_assert_float_eq(s->norms[r], 1.0f, tol, "row %u norm %g", r, (double)s->norms[r]);
        if (sets[c] & EMB_CODEC_F16)
            cr_assert_geq(rep.recall_f16, 0.98);
        emb_store_close(s);
        free(out);
    }
    free(in);
}

Test(pack, glove_with_keys)
{
    const uint32_t n = 600, dim = 16;
    float *t = clustered(77, n, dim, 12);
    char **keys = malloc(n * sizeof *keys);
    for (uint32_t i = 0; i < n; i++) {
        keys[i] = malloc(32);
        if (i == 3)
            snprintf(keys[i], 32, "caf\xC3\xA9");
        else if (i == 4)
            snprintf(keys[i], 32, "a\"quote\\");
        else
            snprintf(keys[i], 32, "word%u", i);
    }
    char *in = fresh_path("vectors", ".txt");
    write_glove(in, t, n, dim, (const char *const *)keys);
    char *out = fresh_path("glove", ".emb");
    emb_pack_opts o = opts_for(in, out, EMB_CODEC_F16 | EMB_CODEC_Q1);
    emb_pack_report rep;
    pack_ok(&o, &rep);
    check_report(&rep, &o, n, dim);
    cr_assert_eq(rep.input.format, EMB_INPUT_GLOVE);
    cr_assert(rep.input.has_keys);
    cr_assert_geq(rep.recall_f16, 0.98, "GloVe re-read: f16 recall %g", rep.recall_f16);
    emb_store *s = open_verified(out);
    check_meta(&rep, &o, s);
    assert_meta_has(rep.meta, "\"format\": \"glove\"");
    for (uint32_t r = 0; r < n; r++) {
        uint64_t id;
        cr_assert_eq(emb_store_find(s, keys[r], strlen(keys[r]), &id), 0, "%s", keys[r]);
        cr_assert_eq(id, r);
        float row[16];
        cr_assert_eq(emb_store_row(s, r, row), 0);
        for (uint32_t j = 0; j < dim; j++)
            cr_assert_eq(row[j], emb_f16_to_f32(emb_f32_to_f16(t[(size_t)r * dim + j])),
                         "row %u value %u", r, j);
    }
    emb_store_close(s);

    /* A keys file overrides the GloVe words. */
    char *kf = fresh_path("glove-keys", ".txt");
    write_keys(kf, "alt", n);
    free(out);
    out = fresh_path("glove-alt", ".emb");
    o.output = out;
    o.keys_file = kf;
    o.eval_queries = 0;
    pack_ok(&o, &rep);
    s = open_verified(out);
    uint64_t id;
    cr_assert_eq(emb_store_find(s, "alt9", 4, &id), 0);
    cr_assert_eq(id, 9);
    cr_assert_eq(emb_store_find(s, "word9", 5, &id), EMB_ENOTFOUND);
    emb_store_close(s);
    for (uint32_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
    free(kf);
    free(t);
    free(in);
    free(out);
}

Test(pack, no_evaluation)
{
    char *in = npy_fixture(NULL), *out = fresh_path("noeval", ".emb");
    emb_pack_opts o = opts_for(in, out, EMB_CODEC_F16 | EMB_CODEC_Q1);
    o.eval_queries = 0;
    emb_pack_report rep;
    pack_ok(&o, &rep);
    check_report(&rep, &o, N, DIM);
    emb_store *s = open_verified(out);
    check_meta(&rep, &o, s);
    emb_store_close(s);
    free(in);
    free(out);
}

/* More queries asked than rows: every row is a query (each excluding itself). */
Test(pack, more_queries_than_rows)
{
    const uint32_t n = 300, dim = 24;
    float *t = clustered(5, n, dim, 6);
    char *in = fresh_path("small", ".npy"), *out = fresh_path("small", ".emb");
    write_npy(in, t, n, dim);
    emb_pack_opts o = opts_for(in, out, EMB_CODEC_F16 | EMB_CODEC_Q1);
    o.eval_queries = 1000;
    emb_pack_report rep;
    pack_ok(&o, &rep);
    check_report(&rep, &o, n, dim);
    cr_assert_eq(rep.eval_queries, n);
    cr_assert_geq(rep.recall_f16, 0.98);
    /* A single row: its only query excludes the only row. */
    char *in1 = fresh_path("one", ".npy"), *out1 = fresh_path("one", ".emb");
    write_npy(in1, t, 1, dim);
    o = opts_for(in1, out1, EMB_CODEC_F16 | EMB_CODEC_Q1);
    pack_ok(&o, &rep);
    cr_assert_eq(rep.rows, 1);
    cr_assert_eq(rep.eval_queries, 1);
    emb_store *s = open_verified(out1);
    check_meta(&rep, &o, s);
    emb_store_close(s);
    free(in1);
    free(out1);
    free(t);
    free(in);
    free(out);
}

/* Odd bytes in the input's path end up escaped in the metadata, which stays valid JSON. */
Test(pack, metadata_escapes_the_source_path)
{
    const uint32_t n = 40, dim = 8;
    float *t = clustered(9, n, dim, 4);
    char *in = fresh_path("we\"ird\\na\x01me\xFF\xC3", ".npy");
    char *out = fresh_path("escaped", ".emb");
    write_npy(in, t, n, dim);
    emb_pack_opts o = opts_for(in, out, EMB_CODEC_F16 | EMB_CODEC_Q1);
    o.eval_queries = 5;
    emb_pack_report rep;
    pack_ok(&o, &rep);
    emb_store *s = open_verified(out);
    check_meta(&rep, &o, s);
    assert_meta_has(rep.meta, "we\\\"ird\\\\na\\u0001me\xEF\xBF\xBD\xEF\xBF\xBD");
    emb_store_close(s);
    free(t);
    free(in);
    free(out);
}

typedef struct progress_log {
    int calls;
    int reading;
    uint64_t last_rows;
} progress_log;

static void on_progress(void *ctx, const emb_pack_progress *p)
{
    progress_log *l = ctx;
    l->calls++;
    cr_assert_not_null(p->phase);
    if (strcmp(p->phase, "reading") == 0)
        l->reading++;
    cr_assert_leq(p->bytes, p->total_bytes);
    l->last_rows = p->rows;
}

Test(pack, progress_and_missing_input)
{
    char *in = npy_fixture(NULL), *out = fresh_path("progress", ".emb");
    emb_pack_opts o = opts_for(in, out, EMB_CODEC_F16);
    progress_log log = {0};
    o.progress = on_progress;
    o.progress_ctx = &log;
    o.eval_queries = 10;
    emb_pack_report rep;
    pack_ok(&o, &rep);
    cr_assert_geq(log.reading, 1);
    cr_assert_eq(log.last_rows, N);
    cr_assert_eq(rep.input_bytes, rep.input.file_bytes);

    emb_error err = {0};
    char *missing = th_path("no-such-input.npy"), *out2 = fresh_path("never", ".emb");
    o = opts_for(missing, out2, EMB_CODEC_F16);
    cr_assert_eq(emb_pack(&o, &rep, &err), -ENOENT, "%s", err.msg);
    cr_assert_eq(access(out2, F_OK), -1);
    free(missing);
    free(out2);
    free(in);
    free(out);
}

/* ---- allocation failure (builds with -DEMBD_FAULT_INJECTION=ON, lib/emb_fault.h) -------- */

/* Fails the nth allocation of one pack (reader, writer, fidelity, recall) and of one open +
 * verify + key lookup, for every n until an operation completes without reaching n. Each
 * failure must come back as an error with a message (ENOMEM where an allocation failed), leave
 * no output file behind, and leak nothing (the ASan suite checks leaks at exit). */
Test(fault, pack_and_open_fail_cleanly_at_every_allocation)
{
    if (!emb_fault_enabled())
        cr_skip_test("built without EMBD_FAULT_INJECTION");
    float *t = clustered(0xFA17, 300, DIM, 5);
    char *in = fresh_path("fault", ".npy"), *keys = fresh_path("fault", ".keys"),
         *out = fresh_path("fault", ".emb");
    write_npy(in, t, 300, DIM);
    free(t);
    write_keys(keys, "k", 300);
    emb_pack_opts o = opts_for(in, out, EMB_CODEC_F16 | EMB_CODEC_Q1);
    o.keys_file = keys;
    o.eval_queries = 20;

    uint64_t n = 1, failures = 0;
    for (; n < 100000; n++) {
        emb_pack_report rep;
        emb_error err = {0};
        unlink(out);
        emb_fault_arm(n);
        int rc = emb_pack(&o, &rep, &err);
        int fired = emb_fault_fired();
        emb_fault_arm(0);
        if (!fired) {
            cr_assert_eq(rc, 0, "pack without a failure: %s", err.msg);
            break;
        }
        failures++;
        if (rc != 0) {
            cr_expect(err.msg[0], "allocation %llu: an error without a message (%d)",
                      (unsigned long long)n, rc);
            cr_expect(access(out, F_OK) != 0, "allocation %llu: a failed pack left %s",
                      (unsigned long long)n, out);
        }
    }
    cr_expect_gt(failures, 10, "pack allocates (%llu failures injected)",
                 (unsigned long long)failures);
    cr_log_info("pack: failed each of its %llu allocations in turn", (unsigned long long)failures);

    for (n = 1; n < 100000; n++) {
        emb_store *s = NULL;
        emb_error err = {0};
        emb_fault_arm(n);
        int rc = emb_store_open(&s, out, &err);
        if (rc == 0) {
            rc = emb_store_verify(s, &err);
            uint64_t id = 0;
            if (rc == 0)
                rc = emb_store_find(s, "k42", 3, &id);
            cr_expect(rc != 0 || id == 42);
            emb_store_close(s);
        }
        int fired = emb_fault_fired();
        emb_fault_arm(0);
        if (!fired) {
            cr_assert_eq(rc, 0, "open without a failure: %s", err.msg);
            break;
        }
        cr_expect(rc == EMB_ENOMEM && err.msg[0], "allocation %llu of open: rc %d '%s'",
                  (unsigned long long)n, rc, err.msg);
    }
    cr_expect_geq(n, 2, "open allocates at least once");
    free(in);
    free(keys);
    free(out);
}
