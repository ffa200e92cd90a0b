/*
 * test_readers.c - the input readers: every format round-trips (fixtures are built byte by byte
 * here, plus .npy files written by Debian's numpy when it is installed), and every crafted bad
 * file fails with the right code and a message that names the problem.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emb.h"
#include "emb_kernels.h"
#include "emb_reader.h"
#include "helpers.h"

/* ---- byte builder --------------------------------------------------------------------- */

typedef struct bb {
    uint8_t *p;
    size_t n, cap;
} bb;

static void bb_put(bb *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void bb_printf(bb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bb_printf(bb *b, const char *fmt, ...)
{
    char tmp[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    cr_assert(n >= 0 && (size_t)n < sizeof tmp);
    bb_put(b, tmp, (size_t)n);
}

static void bb_u8(bb *b, uint8_t v)
{
    bb_put(b, &v, 1);
}
static void bb_u16(bb *b, uint16_t v)
{
    bb_put(b, (uint8_t[]){(uint8_t)v, (uint8_t)(v >> 8)}, 2);
}
static void bb_u32(bb *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        bb_u8(b, (uint8_t)(v >> (8 * i)));
}
static void bb_u64(bb *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        bb_u8(b, (uint8_t)(v >> (8 * i)));
}
static void bb_f32(bb *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    bb_u32(b, u);
}
static void bb_zero(bb *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bb_u8(b, 0);
}

/* ---- reading helpers ------------------------------------------------------------------ */

static char *write_fixture(const char *name, const bb *b)
{
    char *path = th_path(name);
    th_write_file(path, b->p, b->n);
    return path;
}

/* Opens name (written from b) and expects success. */
static emb_reader *open_ok(const char *name, const bb *b, emb_input_format fmt, const char *tensor)
{
    char *path = write_fixture(name, b);
    emb_reader *r = NULL;
    emb_error e = {0};
    int rc = emb_reader_open(&r, path, fmt, tensor, &e);
    free(path);
    cr_assert_eq(rc, 0, "open %s: %s (%s)", name, emb_strerror(rc), e.msg);
    cr_assert_not_null(r);
    return r;
}

/* Opens and reads every row until an error or the end; returns the first error or 0. The rows
 * read so far are counted in *rows when rows is not NULL. */
static int open_and_drain(const char *name, const bb *b, emb_input_format fmt, const char *tensor,
                          emb_error *e, uint64_t *rows)
{
    char *path = write_fixture(name, b);
    emb_reader *r = NULL;
    memset(e, 0, sizeof *e);
    int rc = emb_reader_open(&r, path, fmt, tensor, e);
    free(path);
    if (rc < 0)
        return rc;
    emb_row row;
    uint64_t n = 0;
    while ((rc = emb_reader_next(r, &row, e)) == 1)
        n++;
    emb_reader_close(r);
    if (rows)
        *rows = n;
    return rc;
}

static void expect_fail(const char *name, const bb *b, emb_input_format fmt, const char *tensor,
                        int code, const char *needle)
{
    emb_error e;
    int rc = open_and_drain(name, b, fmt, tensor, &e, NULL);
    cr_assert_eq(rc, code, "%s: got %d (%s) \"%s\", want %d (%s)", name, rc, emb_strerror(rc),
                 e.msg, code, emb_strerror(code));
    cr_assert_eq(e.code, code, "%s: err->code", name);
    cr_assert_not_null(strstr(e.msg, needle), "%s: message \"%s\" lacks \"%s\"", name, e.msg,
                       needle);
}

static void expect_row(emb_reader *r, const float *want, uint32_t dim, const char *key,
                       size_t key_len, const char *what)
{
    emb_row row;
    emb_error e = {0};
    int rc = emb_reader_next(r, &row, &e);
    cr_assert_eq(rc, 1, "%s: next returned %d (%s)", what, rc, e.msg);
    for (uint32_t i = 0; i < dim; i++) {
        uint32_t a, b;
        memcpy(&a, &row.vec[i], 4);
        memcpy(&b, &want[i], 4);
        cr_assert_eq(a, b, "%s: value %u is %a, want %a", what, i, (double)row.vec[i],
                     (double)want[i]);
    }
    if (key) {
        cr_assert_not_null(row.key, "%s: no key", what);
        cr_assert_eq(row.key_len, key_len, "%s: key length %zu, want %zu", what, row.key_len,
                     key_len);
        cr_assert_eq(memcmp(row.key, key, key_len), 0, "%s: key", what);
    } else {
        cr_assert_null(row.key, "%s: unexpected key", what);
    }
}

static void expect_end(emb_reader *r)
{
    emb_row row;
    emb_error e = {0};
    int rc = emb_reader_next(r, &row, &e);
    cr_assert_eq(rc, 0, "expected the end, got %d (%s)", rc, e.msg);
}

static float rand_val(uint64_t *st)
{
    return th_rand_normal(st);
}

/* ---- formats, names ------------------------------------------------------------------- */

Test(readers, format_names_round_trip)
{
    static const emb_input_format all[] = {
        EMB_INPUT_AUTO,    EMB_INPUT_NPY,      EMB_INPUT_SAFETENSORS, EMB_INPUT_GGUF,
        EMB_INPUT_W2V_BIN, EMB_INPUT_W2V_TEXT, EMB_INPUT_GLOVE,       EMB_INPUT_FVECS,
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        emb_input_format f;
        cr_assert_eq(emb_input_format_parse(emb_input_format_name(all[i]), &f), 0);
        cr_assert_eq(f, all[i]);
    }
    emb_input_format f;
    cr_assert_eq(emb_input_format_parse("vec", &f), 0);
    cr_assert_eq(f, EMB_INPUT_W2V_TEXT);
    cr_assert_str_eq(emb_input_format_name(EMB_INPUT_W2V_BIN), "word2vec");
    cr_assert_eq(emb_input_format_parse("pickle", &f), EMB_EINVAL);
}

Test(readers, missing_file_is_negated_errno)
{
    emb_reader *r = NULL;
    emb_error e = {0};
    char *path = th_path("does-not-exist.npy");
    int rc = emb_reader_open(&r, path, EMB_INPUT_AUTO, NULL, &e);
    free(path);
    cr_assert_eq(rc, -2 /* -ENOENT */, "%d %s", rc, e.msg);
    cr_assert_null(r);
    cr_assert_not_null(strstr(e.msg, "does-not-exist.npy"));
}

Test(readers, unknown_binary_is_eformat)
{
    bb b = {0};
    bb_put(&b, "\x01\x02\x00\x07garbage\x00\xff", 13);
    expect_fail("mystery", &b, EMB_INPUT_AUTO, NULL, EMB_EFORMAT, "unrecognised");
    bb e = {0};
    bb_u8(&e, 0);
    e.n = 0;
    expect_fail("empty", &e, EMB_INPUT_AUTO, NULL, EMB_EFORMAT, "empty");
    free(b.p);
    free(e.p);
}

/* ---- npy ------------------------------------------------------------------------------ */

/* An .npy image: version major (1, 2 or 3), the dict text, padded to 64 like numpy. */
static void npy_header(bb *b, int major, const char *dict)
{
    size_t pre = major == 1 ? 10 : 12;
    size_t len = strlen(dict) + 1;
    size_t pad = (64 - (pre + len) % 64) % 64;
    bb_put(b, "\x93NUMPY", 6);
    bb_u8(b, (uint8_t)major);
    bb_u8(b, 0);
    if (major == 1)
        bb_u16(b, (uint16_t)(len + pad));
    else
        bb_u32(b, (uint32_t)(len + pad));
    bb_put(b, dict, strlen(dict));
    for (size_t i = 0; i < pad; i++)
        bb_u8(b, ' ');
    bb_u8(b, '\n');
}

static void npy_f32(bb *b, int major, uint32_t rows, uint32_t dim, float *vals)
{
    char dict[200];
    snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%u, %u), }",
             rows, dim);
    npy_header(b, major, dict);
    for (size_t i = 0; i < (size_t)rows * dim; i++)
        bb_f32(b, vals[i]);
}

Test(readers, npy_f32_round_trip_all_versions)
{
    uint64_t st = 1;
    float vals[7 * 5];
    th_rand_vec(&st, vals, 7 * 5);
    vals[3] = -0.0f;
    vals[4] = 1e-42f; /* subnormal, kept exactly */
    for (int major = 1; major <= 3; major++) {
        bb b = {0};
        npy_f32(&b, major, 7, 5, vals);
        emb_reader *r = open_ok("a.data", &b, EMB_INPUT_AUTO, NULL); /* magic, not name */
        const emb_reader_info *in = emb_reader_info_get(r);
        cr_assert_eq(in->format, EMB_INPUT_NPY);
        cr_assert_eq(in->rows, 7);
        cr_assert_eq(in->dim, 5);
        cr_assert_eq(in->has_keys, 0);
        cr_assert_str_eq(in->source_dtype, "f32");
        cr_assert_eq(in->file_bytes, b.n);
        for (int i = 0; i < 7; i++)
            expect_row(r, vals + 5 * i, 5, NULL, 0, "npy row");
        expect_end(r);
        cr_assert_eq(emb_reader_bytes_read(r), b.n);
        emb_reader_close(r);
        free(b.p);
    }
}

Test(readers, npy_f16_converted_exactly)
{
    uint64_t st = 2;
    uint16_t h[4 * 3];
    float want[4 * 3];
    bb b = {0};
    npy_header(&b, 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (4, 3), }");
    for (int i = 0; i < 12; i++) {
        h[i] = emb_f32_to_f16(rand_val(&st));
        want[i] = emb_f16_to_f32(h[i]);
        bb_u16(&b, h[i]);
    }
    emb_reader *r = open_ok("h.npy", &b, EMB_INPUT_NPY, NULL);
    cr_assert_str_eq(emb_reader_info_get(r)->source_dtype, "f16");
    for (int i = 0; i < 4; i++)
        expect_row(r, want + 3 * i, 3, NULL, 0, "npy f16 row");
    expect_end(r);
    emb_reader_close(r);
    free(b.p);
}

/* float64 (np.save's default) is read and rounded to the nearest float32; a value beyond the
 * float32 range is refused, not stored as infinity. */
Test(readers, npy_f64_rounded_to_f32)
{
    const double vals[6] = {0.1, -1.0 / 3.0, 1e-300, 123456789.123, -0.0, 2.5};
    bb b = {0};
    npy_header(&b, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }");
    for (int i = 0; i < 6; i++) {
        uint64_t u;
        memcpy(&u, &vals[i], 8);
        bb_u32(&b, (uint32_t)u);
        bb_u32(&b, (uint32_t)(u >> 32));
    }
    emb_reader *r = open_ok("d.npy", &b, EMB_INPUT_AUTO, NULL);
    cr_assert_str_eq(emb_reader_info_get(r)->source_dtype, "f64");
    float want[6];
    for (int i = 0; i < 6; i++)
        want[i] = (float)vals[i];
    expect_row(r, want, 3, NULL, 0, "npy f64 row 0");
    expect_row(r, want + 3, 3, NULL, 0, "npy f64 row 1");
    expect_end(r);
    emb_reader_close(r);
    free(b.p);

    bb big = {0};
    npy_header(&big, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }");
    const double huge[2] = {1.0, 1e300};
    for (int i = 0; i < 2; i++) {
        uint64_t u;
        memcpy(&u, &huge[i], 8);
        bb_u32(&big, (uint32_t)u);
        bb_u32(&big, (uint32_t)(u >> 32));
    }
    emb_reader *r2 = open_ok("big.npy", &big, EMB_INPUT_AUTO, NULL);
    emb_row row;
    emb_error e = {0};
    cr_assert_lt(emb_reader_next(r2, &row, &e), 0, "1e300 does not fit a float32");
    cr_assert(strstr(e.msg, "finite") || strstr(e.msg, "inf"), "%s", e.msg);
    emb_reader_close(r2);
    free(big.p);
}

Test(readers, npy_python2_long_shape_and_double_quotes)
{
    float v[2] = {1.5f, -2.25f};
    bb b = {0};
    npy_header(&b, 1, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (1L, 2L)}");
    bb_f32(&b, v[0]);
    bb_f32(&b, v[1]);
    emb_reader *r = open_ok("py2.npy", &b, EMB_INPUT_AUTO, NULL);
    expect_row(r, v, 2, NULL, 0, "py2");
    expect_end(r);
    emb_reader_close(r);
    free(b.p);
}

static int have_numpy(void)
{
    return th_system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

Test(readers, npy_written_by_numpy)
{
    if (!have_numpy())
        cr_skip("/usr/bin/python3 cannot import numpy");
    char *p32 = th_path("np32.npy"), *p16 = th_path("np16.npy");
    int rc = th_system("/usr/bin/python3 -c \"import numpy as np; "
                       "a = (np.arange(6000, dtype=np.float64).reshape(200, 30) * 0.37 - 1000)"
                       ".astype('<f4'); np.save('%s', a); np.save('%s', a.astype('<f2'))\"",
                       p32, p16);
    cr_assert_eq(rc, 0, "numpy failed");
    emb_error e = {0};
    emb_reader *r = NULL;
    cr_assert_eq(emb_reader_open(&r, p32, EMB_INPUT_AUTO, NULL, &e), 0, "%s", e.msg);
    cr_assert_eq(emb_reader_info_get(r)->rows, 200);
    cr_assert_eq(emb_reader_info_get(r)->dim, 30);
    float want[30];
    for (int i = 0; i < 200; i++) {
        for (int j = 0; j < 30; j++)
            want[j] = (float)((double)(i * 30 + j) * 0.37 - 1000);
        expect_row(r, want, 30, NULL, 0, "numpy f32");
    }
    expect_end(r);
    emb_reader_close(r);

    cr_assert_eq(emb_reader_open(&r, p16, EMB_INPUT_AUTO, NULL, &e), 0, "%s", e.msg);
    cr_assert_str_eq(emb_reader_info_get(r)->source_dtype, "f16");
    for (int i = 0; i < 200; i++) {
        for (int j = 0; j < 30; j++)
            want[j] = emb_f16_to_f32(emb_f32_to_f16((float)((double)(i * 30 + j) * 0.37 - 1000)));
        expect_row(r, want, 30, NULL, 0, "numpy f16");
    }
    expect_end(r);
    emb_reader_close(r);
    free(p32);
    free(p16);
}

Test(readers, npy_numpy_fortran_and_big_endian_refused)
{
    if (!have_numpy())
        cr_skip("/usr/bin/python3 cannot import numpy");
    char *pf = th_path("npf.npy"), *pb = th_path("npb.npy");
    int rc = th_system("/usr/bin/python3 -c \"import numpy as np; "
                       "a = np.ones((4, 3), dtype='<f4'); np.save('%s', np.asfortranarray(a)); "
                       "np.save('%s', a.astype('>f4'))\"",
                       pf, pb);
    cr_assert_eq(rc, 0, "numpy failed");
    emb_error e = {0};
    emb_reader *r = NULL;
    cr_assert_eq(emb_reader_open(&r, pf, EMB_INPUT_AUTO, NULL, &e), EMB_EUNSUPPORTED, "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, "Fortran order"), "%s", e.msg);
    cr_assert_eq(emb_reader_open(&r, pb, EMB_INPUT_AUTO, NULL, &e), EMB_EUNSUPPORTED, "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, "big-endian"), "%s", e.msg);
    free(pf);
    free(pb);
}

static void npy_bad(const char *dict, int code, const char *needle)
{
    bb b = {0};
    npy_header(&b, 1, dict);
    bb_zero(&b, 4 * 2 * 3);
    expect_fail("bad.npy", &b, EMB_INPUT_AUTO, NULL, code, needle);
    free(b.p);
}

Test(readers, npy_bad_headers)
{
    npy_bad("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", EMB_EUNSUPPORTED,
            "big-endian");
    npy_bad("{'descr': '|O', 'fortran_order': False, 'shape': (2, 3), }", EMB_EUNSUPPORTED,
            "pickled");
    npy_bad("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }", EMB_EUNSUPPORTED,
            "'<i8' is not supported");
    npy_bad("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", EMB_EUNSUPPORTED,
            "Fortran order");
    npy_bad("{'descr': '<f4', 'fortran_order': False, 'shape': (24,), }", EMB_EUNSUPPORTED,
            "1 dimensions");
    npy_bad("{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3), }", EMB_ECORRUPT,
            "expected ',' or '}'");
    npy_bad("{'descr' '<f4', 'fortran_order': False, 'shape': (2, 3), }", EMB_ECORRUPT,
            "expected ':'");
    npy_bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", EMB_ECORRUPT,
            "unexpected key");
    npy_bad("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}",
            EMB_ECORRUPT, "duplicate key");
    npy_bad("{'descr': '<f4', 'fortran_order': False}", EMB_ECORRUPT, "lacks 'shape'");
    npy_bad("{'descr': '<f4', 'fortran_order': Nope, 'shape': (2, 3)}", EMB_ECORRUPT,
            "neither True nor False");
    npy_bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3)}", EMB_ECORRUPT,
            "non-negative integer");
    npy_bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} junk", EMB_ECORRUPT,
            "bytes after the header dict");
    npy_bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 0)}", EMB_EUNSUPPORTED, "dim 0");
    npy_bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 1)}", EMB_EUNSUPPORTED,
            "3 dimensions");
}

Test(readers, npy_bad_files)
{
    bb b = {0};
    float v[6] = {1, 2, 3, 4, 5, 6};
    npy_f32(&b, 1, 2, 3, v);
    bb t = {0};
    bb_put(&t, b.p, b.n - 4); /* truncated by one value */
    expect_fail("trunc.npy", &t, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "truncated");
    bb x = {0};
    bb_put(&x, b.p, b.n);
    bb_u8(&x, 0);
    expect_fail("trail.npy", &x, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "1 trailing bytes");
    bb m = {0};
    bb_put(&m, b.p, b.n);
    m.p[1] = 'X';
    expect_fail("magic.npy", &m, EMB_INPUT_NPY, NULL, EMB_EFORMAT, "bad magic");
    expect_fail("magic2.npy", &m, EMB_INPUT_AUTO, NULL, EMB_EFORMAT, "bad magic"); /* by name */
    bb h = {0};
    bb_put(&h, b.p, 60);
    expect_fail("short.npy", &h, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "runs past the end");
    bb v9 = {0};
    bb_put(&v9, b.p, b.n);
    v9.p[6] = 9;
    expect_fail("v9.npy", &v9, EMB_INPUT_AUTO, NULL, EMB_EUNSUPPORTED, "version 9.0");
    bb nan = {0};
    v[4] = NAN;
    npy_f32(&nan, 1, 2, 3, v);
    expect_fail("nan.npy", &nan, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "row 1, value 2 is NaN");
    bb big = {0};
    npy_header(&big, 1,
               "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4)}");
    expect_fail("huge.npy", &big, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "overflows");
    expect_fail("tensor.npy", &b, EMB_INPUT_AUTO, "x", EMB_EINVAL, "tensor name");
    free(b.p);
    free(t.p);
    free(x.p);
    free(m.p);
    free(h.p);
    free(v9.p);
    free(nan.p);
    free(big.p);
}

/* ---- safetensors ---------------------------------------------------------------------- */

/* header JSON (padded with spaces to a multiple of 8 like the reference writer) + data. */
static void st_file(bb *b, const char *json, const void *data, size_t n)
{
    size_t len = strlen(json);
    size_t pad = (8 - len % 8) % 8;
    bb_u64(b, len + pad);
    bb_put(b, json, len);
    for (size_t i = 0; i < pad; i++)
        bb_u8(b, ' ');
    bb_put(b, data, n);
}

Test(readers, safetensors_f32_picks_the_only_2d_tensor)
{
    uint64_t st = 3;
    float bias[4], emb[3 * 4];
    th_rand_vec(&st, bias, 4);
    th_rand_vec(&st, emb, 12);
    bb data = {0};
    bb_put(&data, bias, sizeof bias);
    bb_put(&data, emb, sizeof emb);
    bb b = {0};
    st_file(&b,
            "{\"__metadata__\": {\"format\": \"pt\", \"nested\": [1, 2.5e3, true, null, {}]}, "
            "\"bias\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}, "
            "\"embeddings.weight\": {\"dtype\": \"F32\", \"shape\": [3, 4], "
            "\"data_offsets\": [16, 64]}}",
            data.p, data.n);
    emb_reader *r = open_ok("model.bin", &b, EMB_INPUT_AUTO, NULL); /* magic beats .bin */
    const emb_reader_info *in = emb_reader_info_get(r);
    cr_assert_eq(in->format, EMB_INPUT_SAFETENSORS);
    cr_assert_eq(in->rows, 3);
    cr_assert_eq(in->dim, 4);
    cr_assert_str_eq(in->tensor, "embeddings.weight");
    cr_assert_str_eq(in->source_dtype, "f32");
    for (int i = 0; i < 3; i++)
        expect_row(r, emb + 4 * i, 4, NULL, 0, "st row");
    expect_end(r);
    emb_reader_close(r);
    free(data.p);
    free(b.p);
}

Test(readers, safetensors_f16_bf16_by_name)
{
    uint64_t st = 4;
    uint16_t h[2 * 3], bf[2 * 3];
    float wh[6], wbf[6];
    bb data = {0};
    for (int i = 0; i < 6; i++) {
        float x = rand_val(&st);
        h[i] = emb_f32_to_f16(x);
        wh[i] = emb_f16_to_f32(h[i]);
        uint32_t u;
        memcpy(&u, &x, 4);
        bf[i] = (uint16_t)(u >> 16);
        wbf[i] = emb_bf16_to_f32(bf[i]);
    }
    for (int i = 0; i < 6; i++)
        bb_u16(&data, h[i]);
    for (int i = 0; i < 6; i++)
        bb_u16(&data, bf[i]);
    const char *json = "{\"half\": {\"dtype\": \"F16\", \"shape\": [2, 3], \"data_offsets\": "
                       "[0, 12]}, \"br\\u00e9ve\": {\"dtype\": \"BF16\", \"shape\": [2, 3], "
                       "\"data_offsets\": [12, 24]}}";
    bb b = {0};
    st_file(&b, json, data.p, data.n);
    emb_reader *r = open_ok("two.safetensors", &b, EMB_INPUT_AUTO, "half");
    cr_assert_str_eq(emb_reader_info_get(r)->source_dtype, "f16");
    expect_row(r, wh, 3, NULL, 0, "f16 row 0");
    expect_row(r, wh + 3, 3, NULL, 0, "f16 row 1");
    expect_end(r);
    emb_reader_close(r);
    r = open_ok("two.safetensors", &b, EMB_INPUT_SAFETENSORS, "br\xc3\xa9ve");
    cr_assert_str_eq(emb_reader_info_get(r)->source_dtype, "bf16");
    cr_assert_str_eq(emb_reader_info_get(r)->tensor, "br\xc3\xa9ve");
    expect_row(r, wbf, 3, NULL, 0, "bf16 row 0");
    expect_row(r, wbf + 3, 3, NULL, 0, "bf16 row 1");
    expect_end(r);
    emb_reader_close(r);

    expect_fail("two.safetensors", &b, EMB_INPUT_AUTO, NULL, EMB_EINVAL,
                "2 2-D tensors ('half', 'br\xc3\xa9ve')");
    expect_fail("two.safetensors", &b, EMB_INPUT_AUTO, "nope", EMB_ENOTFOUND, "no tensor 'nope'");
    free(data.p);
    free(b.p);
}

static void st_bad(const char *json, size_t data_len, const char *tensor, int code,
                   const char *needle)
{
    bb b = {0};
    uint8_t *zeros = calloc(1, data_len + 1);
    st_file(&b, json, zeros, data_len);
    free(zeros);
    expect_fail("bad.safetensors", &b, EMB_INPUT_AUTO, tensor, code, needle);
    free(b.p);
}

Test(readers, safetensors_bad_files)
{
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 16]}}", 8, NULL,
           EMB_ECORRUPT, "outside the 8-byte data area");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 16]}, "
           "\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}",
           16, "a", EMB_ECORRUPT, "overlap");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 12]}}", 16, NULL,
           EMB_ECORRUPT, "span 12 bytes");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [16, 0]}}", 16, NULL,
           EMB_ECORRUPT, "outside");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], "
           "\"data_offsets\": [0, 16]}}",
           16, NULL, EMB_ECORRUPT, "overflows");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, "
           "18446744073709551615]}}",
           16, NULL, EMB_ECORRUPT, "outside");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 16]}", 16, NULL,
           EMB_ECORRUPT, "expected '}'");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2.0], \"data_offsets\": [0, 16]}}", 16,
           NULL, EMB_ECORRUPT, "fraction");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 16, 3]}}", 16,
           NULL, EMB_ECORRUPT, "array too long");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2]}}", 16, NULL, EMB_ECORRUPT,
           "lacks \"data_offsets\"");
    st_bad("{\"a\": {\"dtype\": \"I32\", \"shape\": [2, 2], \"data_offsets\": [0, 16]}}", 16, NULL,
           EMB_EUNSUPPORTED, "dtype I32");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [16], \"data_offsets\": [0, 64]}}", 64, "a",
           EMB_EUNSUPPORTED, "1 dimensions");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [16], \"data_offsets\": [0, 64]}}", 64, NULL,
           EMB_ENOTFOUND, "no 2-D tensor");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [1, 1], \"data_offsets\": [0, 4]}, "
           "\"a\": {\"dtype\": \"F32\", \"shape\": [1, 1], \"data_offsets\": [4, 8]}}",
           8, "a", EMB_ECORRUPT, "duplicate tensor name");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [1, 1], \"data_offsets\": [0, 4]}, }", 4, NULL,
           EMB_ECORRUPT, "expected a string");
    st_bad("{\"a\\x\": {}}", 4, NULL, EMB_ECORRUPT, "bad escape");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [1, 1], \"data_offsets\": [0, 4]}} x", 4, NULL,
           EMB_ECORRUPT, "bytes after the header object");

    /* Deep nesting in metadata must fail cleanly, not recurse without bound. */
    bb deep = {0};
    bb_printf(&deep, "{\"__metadata__\": ");
    for (int i = 0; i < 5000; i++)
        bb_u8(&deep, '[');
    for (int i = 0; i < 5000; i++)
        bb_u8(&deep, ']');
    bb_printf(&deep, "}");
    bb_u8(&deep, 0);
    st_bad((const char *)deep.p, 0, NULL, EMB_ECORRUPT, "nesting too deep");

    /* A length prefix larger than the file. */
    bb huge = {0};
    bb_u64(&huge, 1ull << 40);
    bb_printf(&huge, "{}");
    expect_fail("huge.safetensors", &huge, EMB_INPUT_SAFETENSORS, NULL, EMB_EFORMAT,
                "header length");
    free(deep.p);
    free(huge.p);
}

/* ---- GGUF ----------------------------------------------------------------------------- */

enum { GT_U32 = 4, GT_I32 = 5, GT_STRING = 8, GT_ARRAY = 9 };

static void g_str(bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}

static void g_kv_str(bb *b, const char *k, const char *v)
{
    g_str(b, k);
    bb_u32(b, GT_STRING);
    g_str(b, v);
}

static void g_kv_u32(bb *b, const char *k, uint32_t v)
{
    g_str(b, k);
    bb_u32(b, GT_U32);
    bb_u32(b, v);
}

static void g_kv_tokens(bb *b, const char *const *tok, size_t n)
{
    g_str(b, "tokenizer.ggml.tokens");
    bb_u32(b, GT_ARRAY);
    bb_u32(b, GT_STRING);
    bb_u64(b, n);
    for (size_t i = 0; i < n; i++)
        g_str(b, tok[i]);
}

static void g_tensor(bb *b, const char *name, uint64_t ne0, uint64_t ne1, uint32_t type,
                     uint64_t off)
{
    g_str(b, name);
    bb_u32(b, 2);
    bb_u64(b, ne0);
    bb_u64(b, ne1);
    bb_u32(b, type);
    bb_u64(b, off);
}

static void g_align(bb *b, size_t a)
{
    while (b->n % a)
        bb_u8(b, 0);
}

/* A GGUF with: an architecture string, an i32 array, the tokens (ntok of them), alignment 64,
 * a 1-D norm tensor first and token_embd.weight [dim, rows] of type `type` after it. */
static void gguf_file(bb *b, uint32_t version, uint32_t type, uint32_t dim, uint32_t rows,
                      const char *const *tok, size_t ntok, const void *data, size_t n)
{
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, 2);           /* tensors */
    bb_u64(b, tok ? 4 : 3); /* kv pairs */
    g_kv_str(b, "general.architecture", "bert");
    g_str(b, "some.ints");
    bb_u32(b, GT_ARRAY);
    bb_u32(b, GT_I32);
    bb_u64(b, 3);
    bb_u32(b, 1);
    bb_u32(b, 2);
    bb_u32(b, 3);
    if (tok)
        g_kv_tokens(b, tok, ntok);
    g_kv_u32(b, "general.alignment", 64);
    g_str(b, "output_norm.weight");
    bb_u32(b, 1);
    bb_u64(b, 16);
    bb_u32(b, 0);
    bb_u64(b, 0);
    g_tensor(b, "token_embd.weight", dim, rows, type, 64);
    g_align(b, 64);
    bb_zero(b, 64); /* output_norm.weight: 16 floats */
    bb_put(b, data, n);
}

static const char *const toks[] = {"<pad>", "hello", "wor ld", "\xe2\x96\x81the"};

Test(readers, gguf_f32_with_tokens)
{
    uint64_t st = 5;
    float v[4 * 6];
    th_rand_vec(&st, v, 24);
    for (uint32_t version = 2; version <= 3; version++) {
        bb b = {0};
        gguf_file(&b, version, 0, 6, 4, toks, 4, v, sizeof v);
        emb_reader *r = open_ok("m.gguf", &b, EMB_INPUT_AUTO, NULL);
        const emb_reader_info *in = emb_reader_info_get(r);
        cr_assert_eq(in->format, EMB_INPUT_GGUF);
        cr_assert_eq(in->rows, 4);
        cr_assert_eq(in->dim, 6);
        cr_assert_eq(in->has_keys, 1);
        cr_assert_eq(in->native_q1, 0);
        cr_assert_str_eq(in->tensor, "token_embd.weight");
        for (int i = 0; i < 4; i++)
            expect_row(r, v + 6 * i, 6, toks[i], strlen(toks[i]), "gguf f32");
        expect_end(r);
        emb_reader_close(r);
        free(b.p);
    }
}

Test(readers, gguf_f16_bf16_and_token_count_mismatch)
{
    uint64_t st = 6;
    bb d16 = {0}, dbf = {0};
    float w16[4 * 8], wbf[4 * 8];
    for (int i = 0; i < 32; i++) {
        float x = rand_val(&st);
        uint16_t h = emb_f32_to_f16(x);
        w16[i] = emb_f16_to_f32(h);
        bb_u16(&d16, h);
        uint32_t u;
        memcpy(&u, &x, 4);
        wbf[i] = emb_bf16_to_f32((uint16_t)(u >> 16));
        bb_u16(&dbf, (uint16_t)(u >> 16));
    }
    bb b = {0};
    gguf_file(&b, 3, 1, 8, 4, toks, 4, d16.p, d16.n);
    emb_reader *r = open_ok("h.gguf", &b, EMB_INPUT_AUTO, NULL);
    cr_assert_str_eq(emb_reader_info_get(r)->source_dtype, "f16");
    for (int i = 0; i < 4; i++)
        expect_row(r, w16 + 8 * i, 8, toks[i], strlen(toks[i]), "gguf f16");
    expect_end(r);
    emb_reader_close(r);

    bb c = {0};
    gguf_file(&c, 3, 30, 8, 4, toks, 3, dbf.p, dbf.n); /* 3 tokens for 4 rows: no keys */
    r = open_ok("bf.gguf", &c, EMB_INPUT_GGUF, NULL);
    cr_assert_str_eq(emb_reader_info_get(r)->source_dtype, "bf16");
    cr_assert_eq(emb_reader_info_get(r)->has_keys, 0);
    for (int i = 0; i < 4; i++)
        expect_row(r, wbf + 8 * i, 8, NULL, 0, "gguf bf16");
    expect_end(r);
    emb_reader_close(r);

    /* Another tensor by name: the 1-D norm is refused as 1-D. */
    expect_fail("h.gguf", &b, EMB_INPUT_AUTO, "output_norm.weight", EMB_EUNSUPPORTED, "1-D");
    expect_fail("h.gguf", &b, EMB_INPUT_AUTO, "missing.weight", EMB_ENOTFOUND,
                "no tensor 'missing.weight'");
    free(b.p);
    free(c.p);
    free(d16.p);
    free(dbf.p);
}

Test(readers, gguf_q1_0_native_blocks)
{
    uint64_t st = 7;
    const uint32_t dim = 256, rows = 3, nb = 2;
    uint8_t blocks[3 * 2 * 18];
    float x[256];
    for (uint32_t i = 0; i < rows; i++) {
        th_rand_vec(&st, x, dim);
        emb_q1_encode(x, dim, blocks + i * nb * 18);
    }
    bb b = {0};
    gguf_file(&b, 3, 41, dim, rows, toks, 3, blocks, sizeof blocks);
    emb_reader *r = open_ok("q.gguf", &b, EMB_INPUT_AUTO, NULL);
    const emb_reader_info *in = emb_reader_info_get(r);
    cr_assert_eq(in->native_q1, 1);
    cr_assert_str_eq(in->source_dtype, "q1_0");
    cr_assert_eq(in->has_keys, 1);
    for (uint32_t i = 0; i < rows; i++) {
        emb_row row;
        emb_error e = {0};
        cr_assert_eq(emb_reader_next(r, &row, &e), 1, "%s", e.msg);
        cr_assert_not_null(row.q1);
        cr_assert_eq(memcmp(row.q1, blocks + i * nb * 18, nb * 18), 0, "raw blocks of row %u", i);
        float want[256];
        emb_q1_decode(blocks + i * nb * 18, dim, want);
        cr_assert_eq(memcmp(row.vec, want, sizeof want), 0, "decoded row %u", i);
        cr_assert_eq(row.key_len, strlen(toks[i]));
    }
    expect_end(r);
    emb_reader_close(r);

    bb odd = {0};
    gguf_file(&odd, 3, 41, 100, 1, NULL, 0, blocks, 18);
    expect_fail("q100.gguf", &odd, EMB_INPUT_AUTO, NULL, EMB_EUNSUPPORTED, "multiple of the 128");
    free(b.p);
    free(odd.p);
}

Test(readers, gguf_bad_files)
{
    float v[4 * 6] = {0};
    bb t40 = {0};
    gguf_file(&t40, 3, 40, 6, 4, NULL, 0, v, sizeof v);
    expect_fail("t40.gguf", &t40, EMB_INPUT_AUTO, NULL, EMB_EUNSUPPORTED, "type id 40");
    bb t8 = {0};
    gguf_file(&t8, 3, 8, 32, 1, NULL, 0, v, 34);
    expect_fail("t8.gguf", &t8, EMB_INPUT_AUTO, NULL, EMB_EUNSUPPORTED, "type id 8 (Q8_0)");

    bb good = {0};
    gguf_file(&good, 3, 0, 6, 4, toks, 4, v, sizeof v);

    bb trunc = {0};
    bb_put(&trunc, good.p, good.n - 4);
    expect_fail("trunc.gguf", &trunc, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "run past the end");
    bb hdr = {0};
    bb_put(&hdr, good.p, 100);
    expect_fail("hdr.gguf", &hdr, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT,
                "gguf truncated: file ends inside an array count");
    bb tiny = {0};
    bb_put(&tiny, good.p, 20);
    expect_fail("tiny.gguf", &tiny, EMB_INPUT_GGUF, NULL, EMB_EFORMAT, "shorter than 24");

    bb magic = {0};
    bb_put(&magic, good.p, good.n);
    magic.p[0] = 'X';
    expect_fail("magic.gguf", &magic, EMB_INPUT_AUTO, NULL, EMB_EFORMAT, "bad magic");

    bb v1 = {0};
    bb_put(&v1, good.p, good.n);
    v1.p[4] = 1;
    expect_fail("v1.gguf", &v1, EMB_INPUT_AUTO, NULL, EMB_EUNSUPPORTED, "version 1");

    bb counts = {0};
    bb_put(&counts, good.p, good.n);
    memset(counts.p + 16, 0xff, 7); /* kv count ~ 2^56 */
    expect_fail("counts.gguf", &counts, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "more than a");
    bb tcount = {0};
    bb_put(&tcount, good.p, good.n);
    tcount.p[8 + 4] = 1; /* tensor count 2 + 2^32 */
    expect_fail("tcount.gguf", &tcount, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "more than a");

    /* The first key's length field is at 24. */
    bb klen = {0};
    bb_put(&klen, good.p, good.n);
    klen.p[24 + 6] = 1; /* 2^48 + 20 */
    expect_fail("klen.gguf", &klen, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "exceeds the limit");

    /* Hand-built headers for the remaining checks. */
    bb arr = {0};
    bb_put(&arr, "GGUF", 4);
    bb_u32(&arr, 3);
    bb_u64(&arr, 0);
    bb_u64(&arr, 1);
    g_str(&arr, "big.array");
    bb_u32(&arr, GT_ARRAY);
    bb_u32(&arr, GT_I32);
    bb_u64(&arr, 1ull << 60);
    bb_zero(&arr, 64);
    expect_fail("arr.gguf", &arr, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "cannot fit");

    bb nest = {0};
    bb_put(&nest, "GGUF", 4);
    bb_u32(&nest, 3);
    bb_u64(&nest, 0);
    bb_u64(&nest, 1);
    g_str(&nest, "nested");
    bb_u32(&nest, GT_ARRAY);
    bb_u32(&nest, GT_ARRAY);
    bb_u64(&nest, 1);
    bb_zero(&nest, 64);
    expect_fail("nest.gguf", &nest, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "nested array");

    bb vt = {0};
    bb_put(&vt, "GGUF", 4);
    bb_u32(&vt, 3);
    bb_u64(&vt, 0);
    bb_u64(&vt, 1);
    g_str(&vt, "weird");
    bb_u32(&vt, 77);
    bb_zero(&vt, 64);
    expect_fail("vt.gguf", &vt, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "unknown value type 77");

    bb al = {0};
    bb_put(&al, "GGUF", 4);
    bb_u32(&al, 3);
    bb_u64(&al, 0);
    bb_u64(&al, 1);
    g_kv_u32(&al, "general.alignment", 48);
    bb_zero(&al, 64);
    expect_fail("al.gguf", &al, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "not a power of two");

    bb off = {0};
    bb_put(&off, "GGUF", 4);
    bb_u32(&off, 3);
    bb_u64(&off, 1);
    bb_u64(&off, 0);
    g_tensor(&off, "token_embd.weight", 4, 2, 0, 8); /* offset not a multiple of 32 */
    g_align(&off, 32);
    bb_zero(&off, 64);
    expect_fail("off.gguf", &off, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT,
                "not a multiple of the "
                "alignment");

    bb dims = {0};
    bb_put(&dims, "GGUF", 4);
    bb_u32(&dims, 3);
    bb_u64(&dims, 1);
    bb_u64(&dims, 0);
    g_str(&dims, "token_embd.weight");
    bb_u32(&dims, 9);
    bb_zero(&dims, 200);
    expect_fail("dims.gguf", &dims, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "9 dimensions");

    bb big = {0};
    bb_put(&big, "GGUF", 4);
    bb_u32(&big, 3);
    bb_u64(&big, 1);
    bb_u64(&big, 0);
    g_tensor(&big, "token_embd.weight", 4, 1ull << 62, 0, 0);
    g_align(&big, 32);
    bb_zero(&big, 64);
    expect_fail("big.gguf", &big, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "overflow");

    /* A token longer than a key may be. */
    char *longtok = malloc(5001);
    memset(longtok, 'k', 5000);
    longtok[5000] = '\0';
    const char *lt[4] = {"a", longtok, "c", "d"};
    bb lk = {0};
    gguf_file(&lk, 3, 0, 6, 4, lt, 4, v, sizeof v);
    expect_fail("lk.gguf", &lk, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "key limit");
    free(longtok);
    free(t40.p);
    free(t8.p);
    free(good.p);
    free(trunc.p);
    free(hdr.p);
    free(tiny.p);
    free(magic.p);
    free(v1.p);
    free(counts.p);
    free(tcount.p);
    free(klen.p);
    free(arr.p);
    free(nest.p);
    free(vt.p);
    free(al.p);
    free(off.p);
    free(dims.p);
    free(big.p);
    free(lk.p);
}

/* ---- word2vec ------------------------------------------------------------------------- */

/* rows x dim binary word2vec; newline after each row when nl (the original tool). */
static void w2v_bin(bb *b, uint32_t rows, uint32_t dim, const char *const *words, const float *v,
                    int nl)
{
    bb_printf(b, "%u %u\n", rows, dim);
    for (uint32_t i = 0; i < rows; i++) {
        bb_printf(b, "%s ", words[i]);
        for (uint32_t j = 0; j < dim; j++)
            bb_f32(b, v[i * dim + j]);
        if (nl)
            bb_u8(b, '\n');
    }
}

static const char *const words[] = {"king", "queen", "na\xc3\xafve", "x\ty", "END"};

Test(readers, word2vec_binary_both_layouts)
{
    uint64_t st = 8;
    float v[5 * 7];
    th_rand_vec(&st, v, 35);
    for (int nl = 0; nl <= 1; nl++) {
        bb b = {0};
        w2v_bin(&b, 5, 7, words, v, nl);
        emb_reader *r = open_ok(nl ? "w.bin" : "w-gensim", &b, EMB_INPUT_AUTO, NULL);
        const emb_reader_info *in = emb_reader_info_get(r);
        cr_assert_eq(in->format, EMB_INPUT_W2V_BIN);
        cr_assert_eq(in->rows, 5);
        cr_assert_eq(in->dim, 7);
        cr_assert_eq(in->has_keys, 1);
        for (int i = 0; i < 5; i++)
            expect_row(r, v + 7 * i, 7, words[i], strlen(words[i]), "w2v bin");
        expect_end(r);
        cr_assert_eq(emb_reader_bytes_read(r), b.n);
        emb_reader_close(r);
        free(b.p);
    }
}

Test(readers, word2vec_binary_bad_files)
{
    float v[5 * 7] = {0};
    bb more = {0};
    w2v_bin(&more, 5, 7, words, v, 1);
    more.p[0] = '9'; /* promises 9 rows: more than the file can hold */
    expect_fail("more.bin", &more, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "promises 9 rows");

    static const char *const longw[] = {"a-rather-long-word-number-one", "a-rather-long-word-2",
                                        "x"};
    bb few = {0};
    w2v_bin(&few, 2, 2, longw, v, 1);
    few.p[0] = '3'; /* fits the size bound but the third row is missing */
    expect_fail("few.bin", &few, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "promised 3 rows");

    bb trail = {0};
    w2v_bin(&trail, 5, 7, words, v, 0);
    bb_printf(&trail, "extra");
    expect_fail("trail.bin", &trail, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "after the 5 rows");

    bb cut = {0};
    w2v_bin(&cut, 5, 7, words, v, 0);
    cut.n -= 3;
    expect_fail("cut.bin", &cut, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "inside its vector");

    char *lw = malloc(5001);
    memset(lw, 'w', 5000);
    lw[5000] = '\0';
    const char *lws[2] = {"ok", lw};
    float big[2 * 2000] = {0};
    bb lk = {0};
    w2v_bin(&lk, 2, 2000, lws, big, 1);
    expect_fail("lk.bin", &lk, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "word longer than the 4096");
    free(lw);

    bb nan = {0};
    v[7 * 2 + 3] = NAN;
    w2v_bin(&nan, 5, 7, words, v, 1);
    expect_fail("nan.bin", &nan, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "row 2, value 4 is NaN");

    bb hdr = {0};
    bb_printf(&hdr, "five 7\nabc");
    expect_fail("hdr.bin", &hdr, EMB_INPUT_AUTO, NULL, EMB_EFORMAT, "not a word2vec file");
    bb dim0 = {0};
    bb_printf(&dim0, "5 0\n");
    expect_fail("dim0.bin", &dim0, EMB_INPUT_AUTO, NULL, EMB_EUNSUPPORTED, "dim 0");
    bb dimbig = {0};
    bb_printf(&dimbig, "5 70000\n");
    expect_fail("dimbig.bin", &dimbig, EMB_INPUT_AUTO, NULL, EMB_EUNSUPPORTED, "dim 70000");
    free(more.p);
    free(few.p);
    free(trail.p);
    free(cut.p);
    free(lk.p);
    free(nan.p);
    free(hdr.p);
    free(dim0.p);
    free(dimbig.p);
}

static void w2v_text(bb *b, uint32_t rows, uint32_t dim, const char *const *w, const float *v,
                     const char *eol, const char *fmt)
{
    bb_printf(b, "%u %u%s", rows, dim, eol);
    for (uint32_t i = 0; i < rows; i++) {
        bb_printf(b, "%s", w[i]);
        for (uint32_t j = 0; j < dim; j++) {
            bb_u8(b, ' ');
            bb_printf(b, fmt, (double)v[i * dim + j]);
        }
        bb_printf(b, "%s", eol);
    }
}

Test(readers, word2vec_text_and_fasttext_vec)
{
    uint64_t st = 9;
    float v[5 * 6];
    th_rand_vec(&st, v, 30);
    static const char *const w[] = {"king", "queen", "New York", "x\ty", "1"};
    /* %.9g round-trips float32 exactly; fastText's " \n" and CRLF endings. */
    static const char *const eols[] = {"\n", " \n", "\r\n"};
    static const char *const names[] = {"a.txt", "b.vec", "c"};
    for (int k = 0; k < 3; k++) {
        bb b = {0};
        w2v_text(&b, 5, 6, w, v, eols[k], "%.9g");
        emb_reader *r = open_ok(names[k], &b, EMB_INPUT_AUTO, NULL);
        const emb_reader_info *in = emb_reader_info_get(r);
        cr_assert_eq(in->format, EMB_INPUT_W2V_TEXT, "%s detected as %s", names[k],
                     emb_input_format_name(in->format));
        cr_assert_eq(in->rows, 5);
        cr_assert_eq(in->dim, 6);
        cr_assert_str_eq(in->source_dtype, "text");
        for (int i = 0; i < 5; i++)
            expect_row(r, v + 6 * i, 6, w[i], strlen(w[i]), "w2v text");
        expect_end(r);
        emb_reader_close(r);
        free(b.p);
    }
}

Test(readers, word2vec_text_bad_files)
{
    float v[4 * 3] = {0.5f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    static const char *const w[] = {"a", "b", "c", "d"};
    bb few = {0};
    w2v_text(&few, 4, 3, w, v, "\n", "%g");
    few.p[0] = '6';
    expect_fail("few.txt", &few, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT,
                "promised 6 rows, but the file ends after 4 (line 5)");
    bb more = {0};
    w2v_text(&more, 4, 3, w, v, "\n", "%g");
    more.p[0] = '3';
    expect_fail("more.txt", &more, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT,
                "line 5: more rows than the 3");
    bb nan = {0};
    v[2 * 3 + 1] = NAN;
    w2v_text(&nan, 4, 3, w, v, "\n", "%g");
    expect_fail("nan.vec", &nan, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "line 4, value 2 is NaN");
    v[2 * 3 + 1] = -INFINITY;
    bb inf = {0};
    w2v_text(&inf, 4, 3, w, v, "\n", "%g");
    expect_fail("inf.vec", &inf, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "line 4, value 2 is infinite");
    bb word = {0};
    bb_printf(&word, "2 3\na 1 2 3\nb 1 2x 3\n");
    expect_fail("word.vec", &word, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT,
                "line 3, value 2: '2x' is not a number");
    bb shortrow = {0};
    bb_printf(&shortrow, "2 3\na 1 2 3\nb 1 2");
    expect_fail("short.vec", &shortrow, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT,
                "line 3: 2 values, expected 3");
    bb longrow = {0};
    bb_printf(&longrow, "2 3\na 1 2 3\nb 1 2 3 4\n");
    expect_fail("long.vec", &longrow, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "line 3: more than 3");
    bb e1 = {0};
    bb_printf(&e1, "1 2\na 1e 2\n");
    expect_fail("e1.vec", &e1, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "'1e' is not a number");

    bb lk = {0};
    bb_printf(&lk, "2 2\nok 1 2\n");
    for (int i = 0; i < 5000; i++)
        bb_u8(&lk, 'k');
    bb_printf(&lk, " 1 2\n");
    expect_fail("lk.vec", &lk, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT,
                "line 3: word of 5000 bytes exceeds the 4096-byte key limit");
    free(few.p);
    free(more.p);
    free(nan.p);
    free(inf.p);
    free(word.p);
    free(shortrow.p);
    free(longrow.p);
    free(e1.p);
    free(lk.p);
}

/* ---- GloVe ---------------------------------------------------------------------------- */

Test(readers, glove_round_trip_words_with_spaces)
{
    uint64_t st = 10;
    float v[6 * 4];
    th_rand_vec(&st, v, 24);
    static const char *const w[] = {"the", ". . .", "at name@domain.com", "0", "nan", "\xc2\xa0"};
    bb b = {0};
    bb_printf(&b, "\n"); /* a blank first line is skipped */
    for (int i = 0; i < 6; i++) {
        bb_printf(&b, "%s", w[i]);
        for (int j = 0; j < 4; j++)
            bb_printf(&b, " %.9g", (double)v[i * 4 + j]);
        bb_printf(&b, i == 2 ? "\r\n" : i == 5 ? "" : "\n"); /* CRLF once; no final newline */
    }
    emb_reader *r = open_ok("glove.6B.4d.txt", &b, EMB_INPUT_AUTO, NULL);
    const emb_reader_info *in = emb_reader_info_get(r);
    cr_assert_eq(in->format, EMB_INPUT_GLOVE);
    cr_assert_eq(in->rows, UINT64_MAX);
    cr_assert_eq(in->dim, 4);
    for (int i = 0; i < 6; i++)
        expect_row(r, v + 4 * i, 4, w[i], strlen(w[i]), "glove");
    expect_end(r);
    cr_assert_eq(emb_reader_bytes_read(r), b.n);
    emb_reader_close(r);

    /* dim read off a first line whose word has spaces. */
    bb s = {0};
    bb_printf(&s, ". . . 1 2 3\nb 4 5 6\n");
    r = open_ok("s.txt", &s, EMB_INPUT_GLOVE, NULL);
    cr_assert_eq(emb_reader_info_get(r)->dim, 3);
    expect_row(r, (float[]){1, 2, 3}, 3, ". . .", 5, "glove first");
    expect_row(r, (float[]){4, 5, 6}, 3, "b", 1, "glove second");
    expect_end(r);
    emb_reader_close(r);
    free(b.p);
    free(s.p);
}

Test(readers, glove_bad_files)
{
    bb ragged = {0};
    bb_printf(&ragged, "a 1 2 3\nb 4 5 6\nc 7 8\n");
    expect_fail("ragged.txt", &ragged, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT,
                "line 3: 2 values, expected 3");
    bb longer = {0};
    bb_printf(&longer, "a 1 2 3\nb 4 5 6 7\n");
    expect_fail("longer.txt", &longer, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT,
                "line 2: more than 3 values");
    bb inf = {0};
    bb_printf(&inf, "a 1 2 3\nb 4 inf 6\n");
    expect_fail("inf.txt", &inf, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "line 2, value 2 is infinite");
    bb nan = {0};
    bb_printf(&nan, "a 1 2 3\n\nb 4 5 NaN\n");
    expect_fail("nan.txt", &nan, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "line 3, value 3 is NaN");
    bb noval = {0};
    bb_printf(&noval, "a 1 2 3\nb\n");
    expect_fail("noval.txt", &noval, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT,
                "line 2: a word and no values");
    bb empty = {0};
    bb_printf(&empty, "\n\n");
    expect_fail("empty.txt", &empty, EMB_INPUT_AUTO, NULL, EMB_EFORMAT, "no rows");
    bb nonum = {0};
    bb_printf(&nonum, "hello world\n");
    expect_fail("words.txt", &nonum, EMB_INPUT_AUTO, NULL, EMB_EFORMAT, "no numbers");
    free(ragged.p);
    free(longer.p);
    free(inf.p);
    free(nan.p);
    free(noval.p);
    free(empty.p);
    free(nonum.p);
}

/* Many rows through several buffer refills, a line longer than the 4 MiB buffer (growth), and
 * numbers too long for the fast path. */
Test(readers, text_through_buffer_refills)
{
    uint64_t st = 11;
    const uint32_t rows = 60000, dim = 20;
    float *v = malloc(sizeof(float) * rows * dim);
    th_rand_vec(&st, v, (size_t)rows * dim);
    char *path = th_path("big.vec");
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "%u %u\n", rows, dim);
    for (uint32_t i = 0; i < rows; i++) {
        fprintf(f, "w%u", i);
        for (uint32_t j = 0; j < dim; j++)
            fprintf(f, " %.9g", (double)v[i * dim + j]);
        fputc('\n', f);
    }
    cr_assert_eq(fclose(f), 0);
    emb_reader *r = NULL;
    emb_error e = {0};
    cr_assert_eq(emb_reader_open(&r, path, EMB_INPUT_AUTO, NULL, &e), 0, "%s", e.msg);
    char key[32];
    for (uint32_t i = 0; i < rows; i++) {
        snprintf(key, sizeof key, "w%u", i);
        expect_row(r, v + (size_t)i * dim, dim, key, strlen(key), "big text");
    }
    expect_end(r);
    emb_reader_close(r);
    free(v);
    free(path);

    /* One GloVe line of 65536 values of 70 characters each: 4.6 MB. */
    const uint32_t wide = 65536;
    path = th_path("wide.txt");
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("wide", f);
    for (uint32_t j = 0; j < wide; j++)
        fprintf(f, " %u.%066u", j % 10, j); /* > 19 significant digits: the slow path */
    fputc('\n', f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(emb_reader_open(&r, path, EMB_INPUT_AUTO, NULL, &e), 0, "%s", e.msg);
    cr_assert_eq(emb_reader_info_get(r)->dim, wide);
    emb_row row;
    cr_assert_eq(emb_reader_next(r, &row, &e), 1, "%s", e.msg);
    for (uint32_t j = 0; j < wide; j += 997) {
        char num[80];
        snprintf(num, sizeof num, "%u.%066u", j % 10, j);
        cr_assert_eq(row.vec[j], strtof(num, NULL), "value %u", j);
    }
    expect_end(r);
    emb_reader_close(r);
    free(path);
}

/* ---- fvecs ---------------------------------------------------------------------------- */

static void fvecs(bb *b, uint32_t rows, uint32_t dim, const float *v)
{
    for (uint32_t i = 0; i < rows; i++) {
        bb_u32(b, dim);
        for (uint32_t j = 0; j < dim; j++)
            bb_f32(b, v[i * dim + j]);
    }
}

Test(readers, fvecs_round_trip_by_extension_and_content)
{
    uint64_t st = 12;
    float v[9 * 16];
    th_rand_vec(&st, v, 9 * 16);
    bb b = {0};
    fvecs(&b, 9, 16, v);
    static const char *const names[] = {"base.fvecs", "base-noext"};
    for (int k = 0; k < 2; k++) {
        emb_reader *r = open_ok(names[k], &b, EMB_INPUT_AUTO, NULL);
        const emb_reader_info *in = emb_reader_info_get(r);
        cr_assert_eq(in->format, EMB_INPUT_FVECS, "%s", names[k]);
        cr_assert_eq(in->rows, 9);
        cr_assert_eq(in->dim, 16);
        for (int i = 0; i < 9; i++)
            expect_row(r, v + 16 * i, 16, NULL, 0, "fvecs");
        expect_end(r);
        emb_reader_close(r);
    }
    free(b.p);
}

Test(readers, fvecs_bad_files)
{
    float v[3 * 4] = {0};
    bb mis = {0};
    fvecs(&mis, 3, 4, v);
    mis.p[2 * 20] = 5; /* row 2 claims dim 5, same size */
    expect_fail("mis.fvecs", &mis, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT,
                "row 2 at byte offset 40 declares dim 5, but row 0 has dim 4");
    bb cut = {0};
    fvecs(&cut, 3, 4, v);
    cut.n -= 4;
    expect_fail("cut.fvecs", &cut, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "not a multiple");
    bb neg = {0};
    bb_u32(&neg, 0xFFFFFFFFu);
    bb_zero(&neg, 8);
    expect_fail("neg.fvecs", &neg, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT, "declares dim -1");
    bb inf = {0};
    v[5] = INFINITY;
    fvecs(&inf, 3, 4, v);
    expect_fail("inf.fvecs", &inf, EMB_INPUT_AUTO, NULL, EMB_ECORRUPT,
                "row 1, value 2 is infinite");
    free(mis.p);
    free(cut.p);
    free(neg.p);
    free(inf.p);
}

/* ---- damage --------------------------------------------------------------------------- */

/* Every reader on randomly damaged copies of valid files (bytes overwritten, the file cut short
 * or extended): any outcome but a crash, a sanitizer report or an error without a message. */
Test(readers, random_damage_never_crashes)
{
    uint64_t st = 13;
    float v[6 * 8];
    th_rand_vec(&st, v, 48);
    bb fx[7] = {{0}};
    npy_f32(&fx[0], 1, 6, 8, v);
    st_file(&fx[1],
            "{\"__metadata__\": {\"a\": \"b\"}, \"e\": {\"dtype\": \"F32\", \"shape\": [6, 8], "
            "\"data_offsets\": [0, 192]}}",
            v, sizeof v);
    static const char *const tk[] = {"a", "b", "c", "d", "e", "f"};
    gguf_file(&fx[2], 3, 0, 8, 6, tk, 6, v, sizeof v);
    static const char *const w[] = {"a", "bb", "ccc", "d d", "e", "f"};
    w2v_bin(&fx[3], 6, 8, w, v, 1);
    w2v_text(&fx[4], 6, 8, w, v, "\n", "%.9g");
    for (int i = 0; i < 6; i++) {
        bb_printf(&fx[5], "%s", w[i]);
        for (int j = 0; j < 8; j++)
            bb_printf(&fx[5], " %g", (double)v[i * 8 + j]);
        bb_printf(&fx[5], "\n");
    }
    fvecs(&fx[6], 6, 8, v);
    static const emb_input_format forced[7] = {
        EMB_INPUT_NPY,      EMB_INPUT_SAFETENSORS, EMB_INPUT_GGUF,  EMB_INPUT_W2V_BIN,
        EMB_INPUT_W2V_TEXT, EMB_INPUT_GLOVE,       EMB_INPUT_FVECS,
    };
    char *path = th_path("damaged");
    for (int f = 0; f < 7; f++) {
        for (int it = 0; it < 250; it++) {
            bb d = {0};
            bb_put(&d, fx[f].p, fx[f].n);
            uint64_t how = th_rand_u64(&st) % 4;
            if (how == 0) {
                d.n = th_rand_u64(&st) % d.n;
            } else if (how == 1) {
                for (int k = 0; k < 4; k++)
                    bb_u8(&d, (uint8_t)th_rand_u64(&st));
            }
            int flips = 1 + (int)(th_rand_u64(&st) % 4);
            for (int k = 0; k < flips && d.n; k++) {
                size_t at = th_rand_u64(&st) % (d.n < 64 || k ? d.n : 64); /* headers, mostly */
                d.p[at] = (uint8_t)th_rand_u64(&st);
            }
            /* Plain stdio and no passing cr_assert in this loop: criterion reports every
             * assertion to its runner, which would dominate the time. */
            FILE *out = fopen(path, "wb");
            if (!out || fwrite(d.p, 1, d.n, out) != d.n || fclose(out) != 0)
                cr_assert_fail("cannot write %s", path);
            for (int mode = 0; mode < 2; mode++) {
                emb_reader *r = NULL;
                emb_error e = {0};
                int rc = emb_reader_open(&r, path, mode ? forced[f] : EMB_INPUT_AUTO, NULL, &e);
                if (rc == 0) {
                    emb_row row;
                    while ((rc = emb_reader_next(r, &row, &e)) == 1)
                        ;
                    emb_reader_close(r);
                }
                if (rc < 0 && (e.msg[0] == '\0' || e.code != rc))
                    cr_assert_fail("format %d: error %d without a message", f, rc);
            }
            free(d.p);
        }
        free(fx[f].p);
    }
    free(path);
}
