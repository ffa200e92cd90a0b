/*
 * test_store.c - the store round trip (emb_writer -> emb_store_open) and the malformed-file suite.
 *
 * The round trip writes every codec combination, with and without keys, over dims that do and do
 * not fill a 64-byte stride or a 128-value Q1 block, and checks every decoded value against the
 * codecs' own one-value functions, the norms, the header and the key index.
 *
 * The malformed-file suite (SQLite's habit) starts from a valid image in memory, breaks exactly
 * one rule, and asserts the exact error code AND a substring of the message naming the check.
 * The header CRC is checked early, so a test that alters a header or table field to reach a
 * deeper check recomputes it (fix_header_crc); one that alters a section payload to reach a
 * verify check recomputes that section's CRC too (fix_section_crc). A bounded random-damage
 * loop then throws flipped bytes, truncations and random field values at open, verify, find,
 * row and search: nothing may crash (run it under ASan).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "emb.h"
#include "emb_kernels.h"
#include "helpers.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const uint32_t codec_sets[] = {
    EMB_CODEC_F32,
    EMB_CODEC_F16,
    EMB_CODEC_Q1,
    EMB_CODEC_F16 | EMB_CODEC_Q1,
    EMB_CODEC_F32 | EMB_CODEC_Q1,
};
static const uint32_t test_dims[] = {1, 7, 64, 128, 200, 300};

/* ---- fixtures --------------------------------------------------------------------------- */

/* A fresh file name in the test's private directory. */
static char *fresh_path(const char *stem)
{
    static unsigned counter;
    char name[128];
    snprintf(name, sizeof name, "%s-%u.emb", stem, counter++);
    return th_path(name);
}

static float *make_rows(uint64_t seed, uint32_t n, uint32_t dim)
{
    float *rows = malloc(((size_t)n * dim + 1) * sizeof *rows);
    cr_assert_not_null(rows);
    th_rand_vec(&seed, rows, (size_t)n * dim);
    return rows;
}

/* Keys of a table: "key-<i>", with every third one carrying NUL and high bytes. */
typedef struct keyset {
    uint32_t n;
    char **k;
    size_t *len;
} keyset;

static keyset make_keys(uint32_t n)
{
    keyset ks = {n, calloc(n, sizeof(char *)), calloc(n, sizeof(size_t))};
    cr_assert(ks.k && ks.len);
    for (uint32_t i = 0; i < n; i++) {
        ks.k[i] = malloc(32);
        cr_assert_not_null(ks.k[i]);
        int m = snprintf(ks.k[i], 32, "key-%u", i);
        ks.len[i] = (size_t)m;
        if (i % 3 == 0) {
            ks.k[i][m] = '\0';
            ks.k[i][m + 1] = (char)0xFF;
            ks.k[i][m + 2] = (char)(i & 0xFF);
            ks.len[i] = (size_t)m + 3;
        }
    }
    return ks;
}

static void free_keys(keyset *ks)
{
    for (uint32_t i = 0; i < ks->n; i++)
        free(ks->k[i]);
    free(ks->k);
    free(ks->len);
}

/* Writes n rows (and keys when ks) to path; asserts success. */
static void write_store(const char *path, const emb_writer_opts *o, const float *rows, uint32_t n,
                        const keyset *ks, const char *meta)
{
    emb_writer *w = NULL;
    emb_error err = {0};
    int rc = emb_writer_open(&w, path, o, &err);
    cr_assert_eq(rc, 0, "emb_writer_open: %s", err.msg);
    for (uint32_t i = 0; i < n; i++) {
        rc = emb_writer_add(w, rows + (size_t)i * o->dim, NULL, ks ? ks->k[i] : NULL,
                            ks ? ks->len[i] : 0, &err);
        cr_assert_eq(rc, 0, "emb_writer_add row %u: %s", i, err.msg);
    }
    cr_assert_eq(emb_writer_rows(w), n);
    rc = emb_writer_finish(w, meta, meta ? strlen(meta) : 0, &err);
    cr_assert_eq(rc, 0, "emb_writer_finish: %s", err.msg);
}

static emb_store *open_ok(const char *path)
{
    emb_store *s = NULL;
    emb_error err = {0};
    int rc = emb_store_open(&s, path, &err);
    cr_assert_eq(rc, 0, "emb_store_open(%s): %s", path, err.msg);
    cr_assert_not_null(s);
    return s;
}

static void verify_ok(const emb_store *s)
{
    emb_error err = {0};
    int rc = emb_store_verify(s, &err);
    cr_assert_eq(rc, 0, "emb_store_verify: %d %s", rc, err.msg);
}

/* ---- image surgery ---------------------------------------------------------------------- */

static emb_header *hdr(uint8_t *img)
{
    return (emb_header *)img; /* malloc'd: aligned for every field */
}

static emb_section *table(uint8_t *img)
{
    return (emb_section *)(img + sizeof(emb_header));
}

/* The table entry of kind, or NULL. */
static emb_section *sec(uint8_t *img, uint32_t kind)
{
    for (uint32_t i = 0; i < hdr(img)->section_count; i++)
        if (table(img)[i].kind == kind)
            return &table(img)[i];
    return NULL;
}

static int sec_index(uint8_t *img, uint32_t kind)
{
    emb_section *e = sec(img, kind);
    cr_assert_not_null(e, "no section %s in the image", emb_section_name(kind));
    return (int)(e - table(img));
}

/* Recomputes header_crc: CRC-32C over [0, header_size) with the field taken as zero. Clamps
 * header_size to the image so a damaged size cannot read past it. */
static void fix_header_crc(uint8_t *img, size_t len)
{
    size_t n = hdr(img)->header_size;
    if (n > len)
        n = len;
    if (n < sizeof(emb_header))
        return;
    uint8_t *copy = malloc(n);
    cr_assert_not_null(copy);
    memcpy(copy, img, n);
    memset(copy + offsetof(emb_header, header_crc), 0, 4);
    hdr(img)->header_crc = emb_crc32c(0, copy, n);
    free(copy);
}

/* Recomputes the CRC of section kind from its payload, then the header CRC. */
static void fix_section_crc(uint8_t *img, size_t len, uint32_t kind)
{
    emb_section *e = sec(img, kind);
    cr_assert_not_null(e);
    e->crc = emb_crc32c(0, img + e->offset, (size_t)e->length);
    fix_header_crc(img, len);
}

/* Drops section kind from the table: the last entry takes its place. */
static void drop_section(uint8_t *img, size_t len, uint32_t kind)
{
    int i = sec_index(img, kind);
    uint32_t n = hdr(img)->section_count;
    table(img)[i] = table(img)[n - 1];
    hdr(img)->section_count = n - 1;
    hdr(img)->header_size -= (uint32_t)sizeof(emb_section);
    fix_header_crc(img, len);
}

static uint8_t *dup_image(const uint8_t *img, size_t len)
{
    uint8_t *c = malloc(len ? len : 1);
    cr_assert_not_null(c);
    memcpy(c, img, len);
    return c;
}

/* A valid image: rows x dim, the given codecs (q1 with its interleaved copy), optional keys
 * ("key-<i>") and metadata. */
static uint8_t *valid_image(uint32_t codecs, uint32_t dim, uint32_t rows, int keys,
                            const char *meta, size_t *len)
{
    emb_writer_opts o = {.dim = dim,
                         .codecs = codecs,
                         .metric = EMB_METRIC_COS,
                         .keys = keys,
                         .q1_interleave = (codecs & EMB_CODEC_Q1) != 0};
    float *data = make_rows(0xBA5E + dim, rows, dim);
    keyset ks = make_keys(rows);
    char *path = fresh_path("base");
    write_store(path, &o, data, rows, keys ? &ks : NULL, meta);
    uint8_t *img = th_read_file(path, len);
    free_keys(&ks);
    free(data);
    free(path);
    return img;
}

/* The standard damaged-file base: dim 7 (f16 rows padded), f16 + q1, keys, metadata. */
static uint8_t *base_keyed(size_t *len)
{
    return valid_image(EMB_CODEC_F16 | EMB_CODEC_Q1, 7, 10, 1, "{\"note\": \"base\"}", len);
}

/* A keyless base, for header checks that the keys rules would otherwise shadow. */
static uint8_t *base_plain(size_t *len)
{
    return valid_image(EMB_CODEC_F32 | EMB_CODEC_Q1, 64, 10, 0, "{\"note\": \"plain\"}", len);
}

/* Asserts that the image fails with code and a message containing want, both through
 * emb_store_open (from a file) and emb_store_parse (from an exact-size heap copy, so ASan sees
 * any read past the end). */
static void expect_fail_at(int line, const uint8_t *img, size_t len, int code, const char *want)
{
    char *path = fresh_path("bad");
    th_write_file(path, img, len);
    emb_store *s = (emb_store *)(uintptr_t)1;
    emb_error err = {0};
    int rc = emb_store_open(&s, path, &err);
    cr_assert_eq(rc, code, "line %d: emb_store_open returned %d (%s), want %d (%s); msg: %s", line,
                 rc, emb_strerror(rc), code, emb_strerror(code), err.msg);
    cr_assert_eq(err.code, code, "line %d: err.code %d", line, err.code);
    cr_assert_not_null(strstr(err.msg, want), "line %d: message \"%s\" does not name \"%s\"", line,
                       err.msg, want);
    cr_assert_eq(s, (emb_store *)(uintptr_t)1, "line %d: *out written on failure", line);
    unlink(path);
    free(path);

    uint8_t *copy = dup_image(img, len);
    emb_store st;
    emb_error perr = {0};
    rc = emb_store_parse(&st, copy, len, &perr);
    cr_assert_eq(rc, code, "line %d: emb_store_parse returned %d, want %d; msg: %s", line, rc, code,
                 perr.msg);
    cr_assert_not_null(strstr(perr.msg, want), "line %d: parse message \"%s\" lacks \"%s\"", line,
                       perr.msg, want);
    free(copy);
}
#define expect_fail(img, len, code, want) expect_fail_at(__LINE__, img, len, code, want)

/* Opens the image from a file (must succeed) and returns the verify result in *err. */
static int verify_image(const uint8_t *img, size_t len, emb_error *err)
{
    char *path = fresh_path("v");
    th_write_file(path, img, len);
    emb_store *s = open_ok(path);
    int rc = emb_store_verify(s, err);
    emb_store_close(s);
    unlink(path);
    free(path);
    return rc;
}

static void expect_verify_at(int line, const uint8_t *img, size_t len, int code, const char *want)
{
    emb_error err = {0};
    int rc = verify_image(img, len, &err);
    cr_assert_eq(rc, code, "line %d: verify returned %d, want %d; msg: %s", line, rc, code,
                 err.msg);
    cr_assert_not_null(strstr(err.msg, want), "line %d: verify message \"%s\" lacks \"%s\"", line,
                       err.msg, want);
}
#define expect_verify(img, len, code, want) expect_verify_at(__LINE__, img, len, code, want)

/* ---- the round trip --------------------------------------------------------------------- */

static uint32_t primary_of(uint32_t codecs)
{
    return (codecs & EMB_CODEC_F32)   ? EMB_CODEC_F32
           : (codecs & EMB_CODEC_F16) ? EMB_CODEC_F16
                                      : EMB_CODEC_Q1;
}

static size_t padded(size_t bytes)
{
    return (bytes + 63) / 64 * 64;
}

/* Checks everything a reader can see of a store written from rows (n x dim). */
static void check_round_trip(const char *path, const emb_writer_opts *o, const float *rows,
                             uint32_t n, const keyset *ks, const char *meta)
{
    const uint32_t dim = o->dim;
    emb_store *s = open_ok(path);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);

    /* Header fields. */
    const emb_header *h = s->header;
    cr_assert_eq(memcmp(h->magic, EMB_MAGIC, 8), 0);
    cr_assert_eq(h->bom, EMB_BOM);
    cr_assert_eq(h->version_major, EMB_VERSION_MAJOR);
    cr_assert_eq(h->version_minor, EMB_VERSION_MINOR);
    cr_assert_eq(h->header_size, 64 + 32 * h->section_count);
    cr_assert_eq(h->rows, n);
    cr_assert_eq(h->dim, dim);
    cr_assert_eq(h->codecs, o->codecs);
    cr_assert_eq(h->metric, (uint32_t)o->metric);
    cr_assert_eq(h->flags,
                 (o->keys ? EMB_FLAG_KEYS : 0u) | (o->normalized ? EMB_FLAG_NORMALIZED : 0u));
    cr_assert_eq(h->file_size, (uint64_t)st.st_size);
    cr_assert_eq(h->reserved, 0);
    cr_assert_eq(s->checksum, h->header_crc);
    cr_assert_eq(s->rows, n);
    cr_assert_eq(s->dim, dim);
    cr_assert_eq(s->codecs, o->codecs);
    cr_assert_eq(s->metric, o->metric);
    cr_assert_eq(s->q1_blocks, (dim + 127) / 128);

    /* The section table: every kind once, aligned, exactly the kinds the options imply. */
    uint32_t seen = 0;
    for (uint32_t i = 0; i < h->section_count; i++) {
        const emb_section *e = &s->sections[i];
        cr_assert(e->kind >= 1 && e->kind <= EMB_SEC_KIND_MAX, "kind %u", e->kind);
        cr_assert_eq(seen & (1u << e->kind), 0, "kind %u twice", e->kind);
        seen |= 1u << e->kind;
        cr_assert_eq(e->offset % EMB_ALIGN, 0, "%s offset %llu", emb_section_name(e->kind),
                     (unsigned long long)e->offset);
        cr_assert_geq(e->offset, h->header_size);
        cr_assert_leq(e->offset + e->length, h->file_size);
        cr_assert_eq(e->flags, 0);
        cr_assert_eq(e->reserved, 0);
    }
    uint32_t want_kinds = 1u << EMB_SEC_NORMS;
    if (meta && *meta)
        want_kinds |= 1u << EMB_SEC_META;
    if (o->codecs & EMB_CODEC_F32)
        want_kinds |= 1u << EMB_SEC_ROWS_F32;
    if (o->codecs & EMB_CODEC_F16)
        want_kinds |= 1u << EMB_SEC_ROWS_F16;
    if (o->codecs & EMB_CODEC_Q1)
        want_kinds |= 1u << EMB_SEC_ROWS_Q1;
    if ((o->codecs & EMB_CODEC_Q1) && o->q1_interleave)
        want_kinds |= 1u << EMB_SEC_ROWS_Q1I;
    if (o->keys)
        want_kinds |=
            (1u << EMB_SEC_KEYS_OFFS) | (1u << EMB_SEC_KEYS_BLOB) | (1u << EMB_SEC_KEYS_HASH);
    cr_assert_eq(seen, want_kinds, "sections 0x%x, want 0x%x", seen, want_kinds);

    /* Strides and pointers. */
    cr_assert_eq(s->stride_f32, (o->codecs & EMB_CODEC_F32) ? padded((size_t)dim * 4) : 0);
    cr_assert_eq(s->stride_f16, (o->codecs & EMB_CODEC_F16) ? padded((size_t)dim * 2) : 0);
    cr_assert_eq(s->stride_q1, (o->codecs & EMB_CODEC_Q1) ? (size_t)s->q1_blocks * 18 : 0);
    cr_assert_eq(s->rows_f32 != NULL, (o->codecs & EMB_CODEC_F32) != 0);
    cr_assert_eq(s->rows_f16 != NULL, (o->codecs & EMB_CODEC_F16) != 0);
    cr_assert_eq(s->rows_q1 != NULL, (o->codecs & EMB_CODEC_Q1) != 0);
    cr_assert_eq(s->rows_q1i != NULL, (o->codecs & EMB_CODEC_Q1) && o->q1_interleave);
    cr_assert_eq(emb_store_primary_codec(s), primary_of(o->codecs));
    if (s->rows_q1i) {
        /* The interleaved copy, byte by byte: each row's words and scale in its group's tiles,
         * zero past the last row. */
        const size_t groups = (n + 31) / 32, tile = 576, nb = s->q1_blocks;
        for (size_t g = 0; g < groups; g++)
            for (size_t b = 0; b < nb; b++)
                for (size_t l = 0; l < 32; l++) {
                    const uint8_t *t = s->rows_q1i + (g * nb + b) * tile;
                    const size_t r = 32 * g + l;
                    uint8_t want[18] = {0};
                    if (r < n)
                        memcpy(want, s->rows_q1 + r * s->stride_q1 + b * 18, 18);
                    cr_assert(memcmp(t + 512 + 2 * l, want, 2) == 0 &&
                                  memcmp(t + 8 * l, want + 2, 8) == 0 &&
                                  memcmp(t + 256 + 8 * l, want + 10, 8) == 0,
                              "rows_q1i: row %zu block %zu", r, b);
                }
    }

    /* Metadata. */
    if (meta && *meta) {
        cr_assert_eq(s->meta_len, strlen(meta));
        cr_assert_eq(memcmp(s->meta, meta, s->meta_len), 0);
    } else {
        cr_assert_null(s->meta);
        cr_assert_eq(s->meta_len, 0);
    }

    /* Every value of every codec, the padding, the norms and emb_store_row. */
    float *want = malloc((size_t)dim * sizeof *want), *got = malloc((size_t)dim * sizeof *got);
    uint8_t *q1 = malloc((size_t)s->q1_blocks * 18);
    cr_assert(want && got && q1);
    for (uint32_t r = 0; r < n; r++) {
        const float *x = rows + (size_t)r * dim;
        if (s->rows_f32) {
            const uint8_t *row = s->rows_f32 + r * s->stride_f32;
            cr_assert_eq(memcmp(row, x, (size_t)dim * 4), 0, "f32 row %u differs", r);
            for (size_t b = (size_t)dim * 4; b < s->stride_f32; b++)
                cr_assert_eq(row[b], 0, "f32 row %u padding byte %zu", r, b);
        }
        if (s->rows_f16) {
            const uint8_t *row = s->rows_f16 + r * s->stride_f16;
            for (uint32_t j = 0; j < dim; j++) {
                uint16_t hv;
                memcpy(&hv, row + 2 * j, 2);
                cr_assert_eq(hv, emb_f32_to_f16(x[j]), "f16 row %u value %u: %#06x vs %#06x", r, j,
                             hv, emb_f32_to_f16(x[j]));
            }
            for (size_t b = (size_t)dim * 2; b < s->stride_f16; b++)
                cr_assert_eq(row[b], 0, "f16 row %u padding byte %zu", r, b);
        }
        if (s->rows_q1) {
            emb_q1_encode(x, dim, q1);
            cr_assert_eq(memcmp(s->rows_q1 + r * s->stride_q1, q1, s->stride_q1), 0,
                         "q1 row %u differs from emb_q1_encode", r);
        }
        /* What emb_store_row must give, from the primary codec. */
        uint32_t p = primary_of(o->codecs);
        for (uint32_t j = 0; j < dim; j++)
            want[j] = p == EMB_CODEC_F32 ? x[j] : emb_f16_to_f32(emb_f32_to_f16(x[j]));
        if (p == EMB_CODEC_Q1)
            emb_q1_decode(q1, dim, want);
        memset(got, 0xAB, (size_t)dim * sizeof *got);
        cr_assert_eq(emb_store_row(s, r, got), 0);
        cr_assert_eq(memcmp(got, want, (size_t)dim * sizeof *got), 0, "emb_store_row(%u)", r);
        double sum = 0;
        for (uint32_t j = 0; j < dim; j++)
            sum += (double)want[j] * want[j];
        double norm = sqrt(sum);
        cr_assert_float_eq(s->norms[r], norm, 1e-6 * norm + 1e-12, "norm of row %u: %g vs %g", r,
                           (double)s->norms[r], norm);
    }
    cr_assert_eq(emb_store_row(s, n, got), EMB_ERANGE);
    cr_assert_eq(emb_store_row(s, UINT64_MAX, got), EMB_ERANGE);

    /* Keys: every key at its row, found by the index; unknown keys not found. */
    const char *k;
    size_t klen;
    uint64_t id = 777;
    if (ks) {
        cr_assert_not_null(s->key_offs);
        for (uint32_t r = 0; r < n; r++) {
            cr_assert_eq(emb_store_key(s, r, &k, &klen), 0);
            cr_assert_eq(klen, ks->len[r], "key %u length", r);
            cr_assert_eq(memcmp(k, ks->k[r], klen), 0, "key %u bytes", r);
            cr_assert_eq(emb_store_find(s, ks->k[r], ks->len[r], &id), 0, "find key %u", r);
            cr_assert_eq(id, r, "key %u found at row %llu", r, (unsigned long long)id);
        }
        cr_assert_eq(emb_store_key(s, n, &k, &klen), EMB_ERANGE);
        static const char *const unknown[] = {"", "key-", "key-99999", "KEY-1", "key-1 "};
        for (size_t i = 0; i < ARRAY_LEN(unknown); i++) {
            const size_t ul = strlen(unknown[i]);
            int is_key = 0;
            for (uint32_t r = 0; r < n; r++)
                is_key |= ks->len[r] == ul && memcmp(ks->k[r], unknown[i], ul) == 0;
            if (!is_key)
                cr_assert_eq(emb_store_find(s, unknown[i], ul, &id), EMB_ENOTFOUND,
                             "unknown key \"%s\" found", unknown[i]);
        }
        /* A key's prefix (the NUL-carrying keys minus their tail) is another key. */
        if (n > 3)
            cr_assert_eq(emb_store_find(s, ks->k[3], ks->len[3] - 1, &id), EMB_ENOTFOUND);
    } else {
        cr_assert_null(s->key_offs);
        cr_assert_eq(emb_store_key(s, 0, &k, &klen), EMB_ENOTFOUND);
        cr_assert_eq(emb_store_find(s, "key-0", 5, &id), EMB_ENOTFOUND);
        cr_assert_eq(id, 777, "id written on failure");
    }

    verify_ok(s);
    emb_store_close(s);
    free(want);
    free(got);
    free(q1);
}

static void round_trip_codecs(uint32_t codecs)
{
    for (size_t d = 0; d < ARRAY_LEN(test_dims); d++) {
        for (int keys = 0; keys < 2; keys++) {
            const uint32_t dim = test_dims[d], n = 37;
            emb_writer_opts o = {.dim = dim,
                                 .codecs = codecs,
                                 .metric = (emb_metric)((d + (size_t)keys) % 3),
                                 .keys = keys,
                                 .normalized = (int)(d % 2),
                                 .q1_interleave = keys};
            float *rows = make_rows(codecs * 1000 + dim, n, dim);
            /* A zero row and a row of extremes (largest finite halves, tiny subnormals). */
            memset(rows + (size_t)5 * dim, 0, (size_t)dim * sizeof(float));
            for (uint32_t j = 0; j < dim; j++)
                rows[(size_t)6 * dim + j] = j % 2 ? 65504.0f : -1e-7f;
            keyset ks = make_keys(n);
            const char *meta = keys ? "{\"oversample_default\": 4}" : NULL;
            char *path = fresh_path("rt");
            write_store(path, &o, rows, n, keys ? &ks : NULL, meta);
            check_round_trip(path, &o, rows, n, keys ? &ks : NULL, meta);
            free(path);
            free_keys(&ks);
            free(rows);
        }
    }
}

Test(store_rt, f32)
{
    round_trip_codecs(EMB_CODEC_F32);
}
Test(store_rt, f16)
{
    round_trip_codecs(EMB_CODEC_F16);
}
Test(store_rt, q1)
{
    round_trip_codecs(EMB_CODEC_Q1);
}
Test(store_rt, f16_q1)
{
    round_trip_codecs(EMB_CODEC_F16 | EMB_CODEC_Q1);
}
Test(store_rt, f32_q1)
{
    round_trip_codecs(EMB_CODEC_F32 | EMB_CODEC_Q1);
}
/* f16 next to exact f32 rows adds nothing, and the norms section could serve only one of
 * them: the writer refuses the pair. */
Test(store_rt, f32_with_f16_refused)
{
    emb_writer_opts o = {.dim = 8, .codecs = EMB_CODEC_F32 | EMB_CODEC_F16 | EMB_CODEC_Q1};
    char *path = fresh_path("f32f16");
    emb_writer *w = NULL;
    emb_error err = {0};
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), EMB_EINVAL);
    cr_assert(strstr(err.msg, "f32 and f16"), "%s", err.msg);
    free(path);
}

Test(store_rt, single_row_and_widest_dim)
{
    for (size_t c = 0; c < ARRAY_LEN(codec_sets); c++) {
        const uint32_t dim = EMB_MAX_DIM;
        emb_writer_opts o = {.dim = dim, .codecs = codec_sets[c], .keys = 1};
        float *rows = make_rows(c, 1, dim);
        keyset ks = make_keys(1);
        char *path = fresh_path("wide");
        write_store(path, &o, rows, 1, &ks, NULL);
        check_round_trip(path, &o, rows, 1, &ks, NULL);
        free(path);
        free_keys(&ks);
        free(rows);
    }
}

/* Many keys: long probe sequences, a table a few pages long. */
Test(store_rt, five_thousand_keys)
{
    const uint32_t n = 5000, dim = 3;
    emb_writer_opts o = {.dim = dim, .codecs = EMB_CODEC_F16, .keys = 1};
    float *rows = make_rows(99, n, dim);
    keyset ks = make_keys(n);
    char *path = fresh_path("many");
    write_store(path, &o, rows, n, &ks, NULL);
    check_round_trip(path, &o, rows, n, &ks, NULL);
    emb_store *s = open_ok(path);
    cr_assert(s->key_hash->capacity >= (uint64_t)n * 4 / 3);
    cr_assert_eq(s->key_hash->capacity & (s->key_hash->capacity - 1), 0);
    cr_assert(s->key_hash->max_probe >= 1 && s->key_hash->max_probe <= s->key_hash->capacity);
    emb_store_close(s);
    free(path);
    free_keys(&ks);
    free(rows);
}

Test(store_rt, keys_with_arbitrary_bytes)
{
    static char long_key[EMB_MAX_KEY];
    memset(long_key, 'x', sizeof long_key);
    long_key[100] = '\0';
    const struct {
        const char *k;
        size_t len;
    } keys[] = {
        {"", 0},
        {"\0", 1},
        {"\0\0", 2},
        {"a\0b", 3},
        {"a\0c", 3},
        {"a", 1},
        {"\xFF\xFE\x80", 3},
        {"eight888", 8},
        {"eight888\0", 9},
        {"sixteen_bytes_16", 16},
        {"new\nline", 8},
        {long_key, EMB_MAX_KEY},
        {long_key, EMB_MAX_KEY - 1},
    };
    const uint32_t n = ARRAY_LEN(keys), dim = 5;
    keyset ks = {n, calloc(n, sizeof(char *)), calloc(n, sizeof(size_t))};
    for (uint32_t i = 0; i < n; i++) {
        ks.k[i] = malloc(keys[i].len + 1);
        memcpy(ks.k[i], keys[i].k, keys[i].len);
        ks.len[i] = keys[i].len;
    }
    float *rows = make_rows(5, n, dim);
    emb_writer_opts o = {.dim = dim, .codecs = EMB_CODEC_F32, .keys = 1};
    char *path = fresh_path("bytes");
    write_store(path, &o, rows, n, &ks, NULL);
    check_round_trip(path, &o, rows, n, &ks, NULL);
    emb_store *s = open_ok(path);
    uint64_t id;
    cr_assert_eq(emb_store_find(s, "\0\0\0", 3, &id), EMB_ENOTFOUND);
    cr_assert_eq(emb_store_find(s, "b", 1, &id), EMB_ENOTFOUND);
    cr_assert_eq(emb_store_find(s, long_key, 101, &id), EMB_ENOTFOUND);
    emb_store_close(s);
    free(path);
    free_keys(&ks);
    free(rows);

    /* A key one byte over the limit is refused by the writer. */
    emb_writer *w;
    emb_error err = {0};
    char big[EMB_MAX_KEY + 1];
    memset(big, 'y', sizeof big);
    float v[1] = {1};
    o.dim = 1;
    path = fresh_path("big");
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), 0, "%s", err.msg);
    cr_assert_eq(emb_writer_add(w, v, NULL, big, sizeof big, &err), EMB_ERANGE);
    cr_assert_eq(emb_writer_add(w, v, NULL, NULL, 0, &err), EMB_EINVAL, "a keyed row needs a key");
    emb_writer_abort(w);
    free(path);
}

/* Every key is empty: the key blob is empty. A duplicate of "" is still a duplicate. */
Test(store_rt, all_keys_empty)
{
    const uint32_t n = 4, dim = 2;
    keyset ks = {n, calloc(n, sizeof(char *)), calloc(n, sizeof(size_t))};
    for (uint32_t i = 0; i < n; i++)
        ks.k[i] = calloc(1, 1);
    float *rows = make_rows(8, n, dim);
    emb_writer_opts o = {.dim = dim, .codecs = EMB_CODEC_F32, .keys = 1};
    char *path = fresh_path("empty-keys");
    emb_writer *w;
    emb_error err = {0};
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), 0, "%s", err.msg);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(emb_writer_add(w, rows + i * dim, NULL, ks.k[i], 0, &err), 0, "%s", err.msg);
    cr_assert_eq(emb_writer_index_keys(w, &err), 0, "%s", err.msg);
    cr_assert_eq(emb_writer_duplicate_keys(w), n - 1);
    cr_assert_eq(emb_writer_finish(w, NULL, 0, &err), 0, "%s", err.msg);
    emb_store *s = open_ok(path);
    uint64_t id = 99;
    cr_assert_eq(emb_store_find(s, "", 0, &id), 0);
    cr_assert_eq(id, 0);
    const char *k;
    size_t klen = 5;
    cr_assert_eq(emb_store_key(s, 3, &k, &klen), 0);
    cr_assert_eq(klen, 0);
    verify_ok(s);
    emb_store_close(s);
    free(path);
    free_keys(&ks);
    free(rows);
}

Test(store_rt, duplicate_keys_map_to_first_row)
{
    static const char *const names[] = {"a", "b", "a", "c", "b", "a", "d", "c"};
    const uint32_t n = ARRAY_LEN(names), dim = 4;
    float *rows = make_rows(77, n, dim);
    emb_writer_opts o = {.dim = dim, .codecs = EMB_CODEC_F16 | EMB_CODEC_Q1, .keys = 1};
    char *path = fresh_path("dups");
    emb_writer *w;
    emb_error err = {0};
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), 0, "%s", err.msg);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(emb_writer_add(w, rows + i * dim, NULL, names[i], 1, &err), 0, "%s", err.msg);
    cr_assert_eq(emb_writer_index_keys(w, &err), 0, "%s", err.msg);
    cr_assert_eq(emb_writer_duplicate_keys(w), 4);
    /* Building twice does not count twice; no rows after the index. */
    cr_assert_eq(emb_writer_index_keys(w, &err), 0);
    cr_assert_eq(emb_writer_duplicate_keys(w), 4);
    cr_assert_eq(emb_writer_add(w, rows, NULL, "e", 1, &err), EMB_EINVAL);
    cr_assert_eq(emb_writer_rows(w), n);
    cr_assert_eq(emb_writer_finish(w, NULL, 0, &err), 0, "%s", err.msg);

    emb_store *s = open_ok(path);
    static const struct {
        const char *k;
        uint64_t row;
    } first[] = {{"a", 0}, {"b", 1}, {"c", 3}, {"d", 6}};
    for (size_t i = 0; i < ARRAY_LEN(first); i++) {
        uint64_t id = 99;
        cr_assert_eq(emb_store_find(s, first[i].k, 1, &id), 0);
        cr_assert_eq(id, first[i].row, "%s -> %llu", first[i].k, (unsigned long long)id);
    }
    /* Later rows with a duplicate key keep their key, reachable by id. */
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        size_t klen;
        cr_assert_eq(emb_store_key(s, i, &k, &klen), 0);
        cr_assert(klen == 1 && k[0] == names[i][0]);
    }
    verify_ok(s);
    emb_store_close(s);
    free(path);
    free(rows);
}

/* Q1 blocks handed to the writer are copied bit-exact, and the norm of a q1-primary store
 * comes from them. */
Test(store_rt, q1_blocks_copied_verbatim)
{
    const uint32_t dim = 200, n = 3;
    float *rows = make_rows(3, n, dim), *other = make_rows(4, n, dim);
    const size_t bs = (size_t)emb_q1_blocks(dim) * 18;
    uint8_t *blocks = malloc(n * bs);
    for (uint32_t i = 0; i < n; i++)
        emb_q1_encode(other + i * dim, dim, blocks + i * bs);
    emb_writer_opts o = {.dim = dim, .codecs = EMB_CODEC_Q1};
    char *path = fresh_path("q1raw");
    emb_writer *w;
    emb_error err = {0};
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), 0, "%s", err.msg);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(emb_writer_add(w, rows + i * dim, blocks + i * bs, NULL, 0, &err), 0);
    cr_assert_eq(emb_writer_finish(w, NULL, 0, &err), 0, "%s", err.msg);
    emb_store *s = open_ok(path);
    for (uint32_t i = 0; i < n; i++) {
        cr_assert_eq(memcmp(s->rows_q1 + i * s->stride_q1, blocks + i * bs, bs), 0);
        float nrm = sqrtf(emb_q1_norm2(blocks + i * bs, dim));
        cr_assert_float_eq(s->norms[i], nrm, 1e-5f * nrm);
    }
    verify_ok(s);
    emb_store_close(s);
    free(path);
    free(rows);
    free(other);
    free(blocks);
}

Test(store_rt, writer_rejects_bad_arguments)
{
    emb_writer *w = NULL;
    emb_error err = {0};
    char *path = fresh_path("args");
    emb_writer_opts o = {.dim = 0, .codecs = EMB_CODEC_F32};
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), EMB_ERANGE);
    cr_assert_not_null(strstr(err.msg, "dim"));
    o.dim = EMB_MAX_DIM + 1;
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), EMB_ERANGE);
    o.dim = 4;
    o.codecs = 0;
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), EMB_EINVAL);
    o.codecs = 8;
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), EMB_EINVAL);
    o.codecs = EMB_CODEC_F16;
    o.metric = (emb_metric)3;
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), EMB_EINVAL);
    o.metric = EMB_METRIC_L2;
    cr_assert_null(w);
    cr_assert_lt(emb_writer_open(&w, "/nonexistent-dir-embd/x.emb", &o, &err), 0);

    cr_assert_eq(emb_writer_open(&w, path, &o, &err), 0, "%s", err.msg);
    float nan_row[4] = {1, NAN, 0, 0}, inf_row[4] = {0, 0, 0, -INFINITY};
    float big_row[4] = {1e6f, 0, 0, 0};
    cr_assert_eq(emb_writer_add(w, nan_row, NULL, NULL, 0, &err), EMB_EINVAL);
    cr_assert_eq(emb_writer_add(w, inf_row, NULL, NULL, 0, &err), EMB_EINVAL);
    cr_assert_eq(emb_writer_add(w, big_row, NULL, NULL, 0, &err), EMB_ERANGE);
    cr_assert_not_null(strstr(err.msg, "f16"), "%s", err.msg);
    cr_assert_eq(emb_writer_rows(w), 0);
    emb_fidelity f;
    cr_assert_eq(emb_writer_fidelity(w, EMB_CODEC_Q1, &f), EMB_EINVAL, "codec not in the writer");
    emb_store view;
    cr_assert_eq(emb_writer_view(w, &view, &err), EMB_EINVAL, "a view of no rows");
    cr_assert_eq(emb_writer_finish(w, NULL, 0, &err), EMB_EINVAL, "a store of no rows");
    cr_assert_eq(access(path, F_OK), -1, "nothing written");
    emb_writer_abort(NULL);
    free(path);
}

/* A rejected row must leave the writer as it was: the rows before and after it make a valid
 * store. (Once the f16 overflow check ran after the row's q1-free bytes were staged.) */
Test(store_rt, rejected_row_leaves_writer_consistent)
{
    const uint32_t dim = 4;
    emb_writer_opts o = {.dim = dim, .codecs = EMB_CODEC_F16 | EMB_CODEC_Q1};
    char *path = fresh_path("rejected");
    emb_writer *w;
    emb_error err = {0};
    float good[2][4] = {{1, 2, 3, 4}, {-1, 0.5f, 0, 2}};
    float big[4] = {1e6f, 0, 0, 0};
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), 0, "%s", err.msg);
    cr_assert_eq(emb_writer_add(w, good[0], NULL, NULL, 0, &err), 0);
    cr_assert_eq(emb_writer_add(w, big, NULL, NULL, 0, &err), EMB_ERANGE);
    cr_assert_eq(emb_writer_add(w, good[1], NULL, NULL, 0, &err), 0);
    cr_assert_eq(emb_writer_rows(w), 2);
    emb_fidelity f;
    cr_assert_eq(emb_writer_fidelity(w, EMB_CODEC_F16, &f), 0);
    cr_assert_eq(f.rows, 2);
    cr_assert_eq(emb_writer_finish(w, NULL, 0, &err), 0, "%s", err.msg);
    emb_store *s = NULL;
    int rc = emb_store_open(&s, path, &err);
    cr_assert_eq(rc, 0, "store written after a rejected row does not open: %s", err.msg);
    verify_ok(s);
    float row[4];
    cr_assert_eq(emb_store_row(s, 1, row), 0);
    cr_assert_eq(memcmp(row, good[1], sizeof row), 0, "row 1 is not the second good row");
    emb_store_close(s);
    free(path);
}

/* A row whose Q1 block scale (mean |x|) overflows f16 must be refused, as an f16 overflow is:
 * accepted, it makes a store whose norms are infinite and which fails its own verify. */
Test(store_rt, q1_scale_overflow_refused_or_sound)
{
    const uint32_t dim = 8;
    float big[8];
    for (uint32_t j = 0; j < dim; j++)
        big[j] = j % 2 ? 1e5f : -1e5f;
    emb_writer_opts o = {.dim = dim, .codecs = EMB_CODEC_Q1};
    char *path = fresh_path("q1big");
    emb_writer *w;
    emb_error err = {0};
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), 0, "%s", err.msg);
    int rc = emb_writer_add(w, big, NULL, NULL, 0, &err);
    if (rc != 0) {
        cr_assert_eq(rc, EMB_ERANGE, "rc %d: %s", rc, err.msg);
        emb_writer_abort(w);
        free(path);
        return;
    }
    cr_assert_eq(emb_writer_finish(w, NULL, 0, &err), 0, "%s", err.msg);
    emb_store *s = open_ok(path);
    rc = emb_store_verify(s, &err);
    cr_assert_eq(rc, 0, "writer accepted a row its store fails to verify: %s", err.msg);
    emb_store_close(s);
    free(path);
}

Test(store_rt, fidelity_and_view)
{
    const uint32_t dim = 64, n = 50;
    float *rows = make_rows(12, n, dim);
    emb_writer_opts o = {.dim = dim, .codecs = EMB_CODEC_F32 | EMB_CODEC_Q1};
    char *path = fresh_path("fid");
    emb_writer *w;
    emb_error err = {0};
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), 0, "%s", err.msg);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(emb_writer_add(w, rows + i * dim, NULL, NULL, 0, &err), 0);
    emb_fidelity f32, f16, q1;
    cr_assert_eq(emb_writer_fidelity(w, EMB_CODEC_F32, &f32), 0);
    cr_assert_eq(emb_writer_fidelity(w, EMB_CODEC_F16, &f16), EMB_EINVAL, "no f16 rows");
    cr_assert_eq(emb_writer_fidelity(w, EMB_CODEC_Q1, &q1), 0);
    cr_assert_eq(f32.rows, n);
    cr_assert_eq(f32.mean_cos, 1.0);
    cr_assert(q1.mean_cos > 0.6 && q1.mean_cos < 0.95, "gaussian q1 cos %g", q1.mean_cos);
    cr_assert(q1.min_cos <= q1.mean_cos && q1.worst_row < n);

    emb_store v;
    cr_assert_eq(emb_writer_view(w, &v, &err), 0, "%s", err.msg);
    cr_assert_eq(v.rows, n);
    cr_assert_eq(v.dim, dim);
    cr_assert_null(v.header);
    cr_assert_eq(memcmp(v.rows_f32, rows, dim * 4), 0);
    float got[64];
    cr_assert_eq(emb_store_row(&v, n - 1, got), 0);
    cr_assert_eq(memcmp(got, rows + (n - 1) * dim, sizeof got), 0);
    cr_assert_eq(emb_writer_finish(w, NULL, 0, &err), 0, "%s", err.msg);
    emb_store *s = open_ok(path);
    verify_ok(s);
    emb_store_close(s);
    free(path);
    free(rows);
}

/* ---- the atomic write ------------------------------------------------------------------- */

/* Counts entries of the test directory whose name starts with prefix. */
static int count_prefixed(const char *prefix)
{
    DIR *d = opendir(th_tmpdir());
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(d);
    return n;
}

static emb_writer *writer_with_rows(const char *path, uint32_t n, uint64_t seed)
{
    const uint32_t dim = 8;
    emb_writer_opts o = {.dim = dim, .codecs = EMB_CODEC_F16 | EMB_CODEC_Q1, .keys = 1};
    emb_writer *w;
    emb_error err = {0};
    cr_assert_eq(emb_writer_open(&w, path, &o, &err), 0, "%s", err.msg);
    float *rows = make_rows(seed, n, dim);
    for (uint32_t i = 0; i < n; i++) {
        char k[16];
        int m = snprintf(k, sizeof k, "r%u", i);
        cr_assert_eq(emb_writer_add(w, rows + i * dim, NULL, k, (size_t)m, &err), 0);
    }
    free(rows);
    return w;
}

static void assert_file_is(const char *path, const char *content)
{
    size_t len;
    char *got = th_read_file(path, &len);
    cr_assert_eq(len, strlen(content), "%s changed size", path);
    cr_assert_eq(memcmp(got, content, len), 0, "%s changed", path);
    free(got);
}

Test(store_atomic, no_temporary_left_and_replace_only_on_success)
{
    static const char old[] = "an older file that must survive every failed write";
    char *path = th_path("atomic.emb");
    th_write_file(path, old, strlen(old));
    emb_error err = {0};

    /* Abort: the old file stays, no temporary is left. */
    emb_writer_abort(writer_with_rows(path, 5, 1));
    assert_file_is(path, old);
    cr_assert_eq(count_prefixed("atomic.emb.tmp."), 0);

    /* Finish failing on its arguments (metadata too large, then no rows): the same. */
    emb_writer *w = writer_with_rows(path, 5, 2);
    cr_assert_eq(emb_writer_finish(w, "{}", (size_t)EMB_MAX_META + 1, &err), EMB_ERANGE);
    assert_file_is(path, old);
    w = writer_with_rows(path, 0, 3);
    cr_assert_eq(emb_writer_finish(w, NULL, 0, &err), EMB_EINVAL);
    assert_file_is(path, old);
    cr_assert_eq(count_prefixed("atomic.emb.tmp."), 0);

    /* Success replaces it, with no temporary and no staging file left behind. */
    w = writer_with_rows(path, 5, 4);
    cr_assert_eq(emb_writer_finish(w, "{}", 2, &err), 0, "%s", err.msg);
    cr_assert_eq(count_prefixed("atomic.emb.tmp."), 0);
    cr_assert_eq(count_prefixed(".embd-stage-"), 0);
    emb_store *s = open_ok(path);
    cr_assert_eq(s->rows, 5);
    verify_ok(s);

    /* A store mapped before a replacement keeps reading the old content. */
    float before[8], after[8];
    cr_assert_eq(emb_store_row(s, 0, before), 0);
    w = writer_with_rows(path, 7, 5);
    cr_assert_eq(emb_writer_finish(w, NULL, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(emb_store_row(s, 0, after), 0);
    cr_assert_eq(memcmp(before, after, sizeof before), 0);
    verify_ok(s);
    emb_store_close(s);
    s = open_ok(path);
    cr_assert_eq(s->rows, 7);
    emb_store_close(s);
    free(path);
}

/* The rename fails (the path is a directory): the temporary is removed, the directory stays. */
Test(store_atomic, failed_rename_removes_temporary)
{
    char *path = th_path("isdir.emb");
    cr_assert_eq(mkdir(path, 0755), 0);
    emb_error err = {0};
    emb_writer *w = writer_with_rows(path, 3, 6);
    int rc = emb_writer_finish(w, NULL, 0, &err);
    cr_assert_lt(rc, 0);
    cr_assert_eq(err.code, rc);
    cr_assert_not_null(strstr(err.msg, "rename"), "%s", err.msg);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    cr_assert_eq(count_prefixed("isdir.emb.tmp."), 0);
    free(path);
}

/* A stale "<path>.tmp.<pid>" (a crashed writer with our pid) is never clobbered silently; the
 * destination is untouched whatever the outcome. */
Test(store_atomic, stale_temporary_with_our_pid)
{
    static const char old[] = "old";
    static const char stale[] = "stale temporary";
    char *path = th_path("stale.emb");
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    th_write_file(path, old, strlen(old));
    th_write_file(tmp, stale, strlen(stale));
    emb_error err = {0};
    emb_writer *w = writer_with_rows(path, 3, 7);
    int rc = emb_writer_finish(w, NULL, 0, &err);
    if (rc == 0) {
        emb_store *s = open_ok(path);
        emb_store_close(s);
    } else {
        cr_assert_eq(rc, -EEXIST, "%d %s", rc, err.msg);
        assert_file_is(path, old);
        assert_file_is(tmp, stale);
    }
    free(path);
}

/* ---- open: file-level errors ------------------------------------------------------------ */

Test(store_open, not_a_file_or_missing)
{
    emb_store *s = NULL;
    emb_error err = {0};
    char *missing = th_path("missing.emb");
    cr_assert_eq(emb_store_open(&s, missing, &err), -ENOENT);
    cr_assert_not_null(strstr(err.msg, "missing.emb"));
    free(missing);
    cr_assert_eq(emb_store_open(&s, th_tmpdir(), &err), EMB_EINVAL);
    cr_assert_not_null(strstr(err.msg, "regular file"), "%s", err.msg);
    cr_assert_null(s);
    emb_store_close(NULL);
}

Test(store_open, valid_bases_open_and_verify)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    cr_assert_eq(verify_image(img, len, NULL), 0);
    free(img);
    img = base_plain(&len);
    cr_assert_eq(verify_image(img, len, NULL), 0);
    free(img);
}

/* ---- the malformed-file suite ----------------------------------------------------------- */

Test(malformed, truncated)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    const uint32_t hs = hdr(img)->header_size;
    expect_fail(img, 0, EMB_ETRUNCATED, "64-byte header");
    expect_fail(img, 10, EMB_ETRUNCATED, "64-byte header");
    expect_fail(img, 63, EMB_ETRUNCATED, "64-byte header");
    expect_fail(img, 64, EMB_ETRUNCATED, "truncated");
    expect_fail(img, hs, EMB_ETRUNCATED, "truncated");
    expect_fail(img, hs + 1, EMB_ETRUNCATED, "truncated");
    expect_fail(img, len / 2, EMB_ETRUNCATED, "truncated");
    expect_fail(img, len - 1, EMB_ETRUNCATED, "truncated");
    /* Every length in between fails as truncated too (the header is intact). */
    for (size_t n = 64; n < len; n += 61)
        expect_fail(img, n, EMB_ETRUNCATED, "file_size");
    free(img);
}

/* A file shorter than its own section table, whose file_size agrees with the file. */
Test(malformed, section_table_past_eof)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    cr_assert_gt(hdr(img)->header_size, 100);
    hdr(img)->file_size = 100;
    expect_fail(img, 100, EMB_ETRUNCATED, "section table");
    free(img);
}

Test(malformed, trailing_bytes)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    uint8_t *big = calloc(1, len + 64);
    memcpy(big, img, len);
    expect_fail(big, len + 1, EMB_ECORRUPT, "trailing");
    expect_fail(big, len + 64, EMB_ECORRUPT, "trailing");
    free(big);
    free(img);
}

Test(malformed, bad_magic)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    for (int i = 0; i < 8; i++) {
        uint8_t *c = dup_image(img, len);
        c[i] ^= 0x20;
        expect_fail(c, len, EMB_ECORRUPT, "magic");
        free(c);
    }
    /* Not even a store: text. */
    uint8_t *c = dup_image(img, len);
    memset(c, 'A', len);
    expect_fail(c, len, EMB_ECORRUPT, "magic");
    free(c);
    free(img);
}

Test(malformed, byte_order)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    hdr(img)->bom = __builtin_bswap32(EMB_BOM);
    expect_fail(img, len, EMB_EBYTEORDER, "big-endian");
    hdr(img)->bom = 0x04030201u ^ 0xFF;
    expect_fail(img, len, EMB_ECORRUPT, "byte-order mark");
    free(img);
}

Test(malformed, version)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    static const uint16_t majors[] = {0, 2, 255, 0xFFFF};
    for (size_t i = 0; i < ARRAY_LEN(majors); i++) {
        uint8_t *c = dup_image(img, len);
        hdr(c)->version_major = majors[i];
        fix_header_crc(c, len);
        expect_fail(c, len, EMB_EVERSION, "version");
        free(c);
    }
    /* Any minor of our major opens. */
    hdr(img)->version_minor = 77;
    fix_header_crc(img, len);
    cr_assert_eq(verify_image(img, len, NULL), 0);
    free(img);
}

Test(malformed, header_crc)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    const uint32_t hs = hdr(img)->header_size;
    /* Every byte the CRC guards and no earlier check reads: rows..flags, header_crc, reserved,
     * and the whole section table. */
    for (uint32_t off = 24; off < hs; off++) {
        if (off >= 48 && off < 56)
            continue; /* file_size: checked against the file before the CRC */
        uint8_t *c = dup_image(img, len);
        c[off] ^= 0x10;
        expect_fail(c, len, EMB_ECHECKSUM, "CRC-32C");
        free(c);
    }
    free(img);
}

Test(malformed, section_count_and_header_size)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    uint8_t *c = dup_image(img, len);
    hdr(c)->section_count = EMB_MAX_SECTIONS + 1;
    hdr(c)->header_size = 64 + 32 * (EMB_MAX_SECTIONS + 1);
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "section_count");
    hdr(c)->section_count = UINT32_MAX;
    expect_fail(c, len, EMB_ECORRUPT, "section_count");
    free(c);

    c = dup_image(img, len);
    hdr(c)->header_size += 32;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "header_size");
    hdr(c)->header_size = 63;
    expect_fail(c, len, EMB_ECORRUPT, "header_size");
    hdr(c)->header_size = UINT32_MAX;
    expect_fail(c, len, EMB_ECORRUPT, "header_size");
    free(c);

    c = dup_image(img, len);
    hdr(c)->section_count -= 1;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "header_size");
    free(c);
    free(img);
}

Test(malformed, header_fields)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    static const struct {
        size_t off, size;
        uint64_t value;
        const char *want;
    } cases[] = {
        {offsetof(emb_header, dim), 4, 0, "dim 0 outside"},
        {offsetof(emb_header, dim), 4, EMB_MAX_DIM + 1, "dim 65537 outside"},
        {offsetof(emb_header, dim), 4, UINT32_MAX, "outside 1..65536"},
        {offsetof(emb_header, rows), 8, 0, "rows is 0"},
        {offsetof(emb_header, rows), 8, UINT32_MAX, "keyed store"},
        {offsetof(emb_header, codecs), 4, 0, "codecs 0x0"},
        {offsetof(emb_header, codecs), 4, 8 | EMB_CODEC_F16 | EMB_CODEC_Q1, "codecs 0xe"},
        {offsetof(emb_header, metric), 4, 3, "metric 3"},
        {offsetof(emb_header, flags), 4, 4 | EMB_FLAG_KEYS, "unknown flags 0x5"},
        {offsetof(emb_header, reserved), 4, 1, "reserved"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint8_t *c = dup_image(img, len);
        if (cases[i].size == 4) {
            uint32_t v = (uint32_t)cases[i].value;
            memcpy(c + cases[i].off, &v, 4);
        } else {
            memcpy(c + cases[i].off, &cases[i].value, 8);
        }
        fix_header_crc(c, len);
        expect_fail(c, len, EMB_ECORRUPT, cases[i].want);
        free(c);
    }
    free(img);
}

Test(malformed, rows_times_stride_overflow)
{
    size_t len;
    uint8_t *img = base_plain(&len);
    static const uint64_t huge[] = {UINT64_C(1) << 62, UINT64_MAX, (UINT64_C(1) << 62) + 1};
    for (size_t i = 0; i < ARRAY_LEN(huge); i++) {
        uint8_t *c = dup_image(img, len);
        hdr(c)->rows = huge[i];
        fix_header_crc(c, len);
        expect_fail(c, len, EMB_ECORRUPT, "overflows 64 bits");
        free(c);
    }
    /* Large but representable: the section lengths no longer match. */
    hdr(img)->rows = UINT64_C(1) << 40;
    fix_header_crc(img, len);
    expect_fail(img, len, EMB_ECORRUPT, "expected");
    free(img);
}

/* Keyless base: every section but norms and meta has a kind-determined length; the others'
 * overflow checks are reached through the row sections. */
Test(malformed, overflow_in_each_row_section)
{
    static const uint32_t sets[] = {EMB_CODEC_F32, EMB_CODEC_F16, EMB_CODEC_Q1};
    for (size_t i = 0; i < ARRAY_LEN(sets); i++) {
        size_t len;
        uint8_t *img = valid_image(sets[i], 300, 3, 0, NULL, &len);
        /* 2^61 rows: norms (4 bytes a row) fits, every row stride (>= 54 bytes) overflows. */
        hdr(img)->rows = UINT64_C(1) << 61;
        /* Put the row section first, so its check runs before norms' length check. */
        int ri = sec_index(img, sets[i] == EMB_CODEC_F32   ? EMB_SEC_ROWS_F32
                                : sets[i] == EMB_CODEC_F16 ? EMB_SEC_ROWS_F16
                                                           : EMB_SEC_ROWS_Q1);
        emb_section tmp = table(img)[0];
        table(img)[0] = table(img)[ri];
        table(img)[ri] = tmp;
        fix_header_crc(img, len);
        expect_fail(img, len, EMB_ECORRUPT, "overflows 64 bits");
        free(img);
    }
}

Test(malformed, section_bounds)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    const int norms = sec_index(img, EMB_SEC_NORMS);
    const int meta = sec_index(img, EMB_SEC_META);
    const int blob = sec_index(img, EMB_SEC_KEYS_BLOB);
    const uint64_t past = (len / 64 + 1) * 64; /* aligned, > len */
    struct {
        int entry;
        uint64_t offset, length; /* UINT64_MAX - 1: keep the entry's value */
        const char *want;
    } cases[] = {
        /* Past the end of the file. */
        {norms, past, UINT64_MAX - 1, "past the end of the file"},
        {norms, past + 64, UINT64_MAX - 1, "past the end of the file"},
        /* Offset near 2^64: offset + length would wrap. */
        {norms, UINT64_MAX & ~UINT64_C(63), UINT64_MAX - 1, "past the end of the file"},
        {meta, UINT64_MAX & ~UINT64_C(63), 128, "past the end of the file"},
        /* Inside the file but running past its end; length near 2^64 (wraps when added). */
        {meta, UINT64_MAX - 1, len, "runs past the end"},
        {meta, UINT64_MAX - 1, UINT64_MAX, "runs past the end"},
        {blob, UINT64_MAX - 1, UINT64_MAX - 63, "runs past the end"},
        {meta, (len - 1) / 64 * 64, 65, "runs past the end"},
        /* Misaligned. */
        {norms, 8, UINT64_MAX - 1, "not a multiple of 64"},
        {meta, 1, UINT64_MAX - 1, "not a multiple of 64"},
        /* Inside the header or the table. */
        {norms, 0, UINT64_MAX - 1, "overlaps the header"},
        {meta, 64, UINT64_MAX - 1, "overlaps the header"},
        /* Wrong length for the rows and dim. */
        {norms, UINT64_MAX - 1, 36, "length 36, expected 40"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint8_t *c = dup_image(img, len);
        emb_section *e = &table(c)[cases[i].entry];
        if (cases[i].offset != UINT64_MAX - 1)
            e->offset = cases[i].offset;
        if (cases[i].length != UINT64_MAX - 1)
            e->length = cases[i].length;
        fix_header_crc(c, len);
        expect_fail(c, len, EMB_ECORRUPT, cases[i].want);
        free(c);
    }
    free(img);
}

Test(malformed, overlapping_sections)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    uint8_t *c = dup_image(img, len);
    /* meta moved onto norms. */
    sec(c, EMB_SEC_META)->offset = sec(c, EMB_SEC_NORMS)->offset;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "sections meta and norms overlap");
    free(c);

    /* keys_blob's tail runs into keys_hash: grow the blob (its length is free). */
    c = dup_image(img, len);
    emb_section *b = sec(c, EMB_SEC_KEYS_BLOB), *h = sec(c, EMB_SEC_KEYS_HASH);
    cr_assert_lt(b->offset, h->offset);
    b->length = h->offset - b->offset + 1;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "sections keys_blob and keys_hash overlap");
    /* Touching is not overlapping. */
    b->length = h->offset - b->offset;
    fix_header_crc(c, len);
    emb_error err = {0};
    cr_assert_neq(verify_image(c, len, &err), 0, "the blob now includes padding");
    free(c);
    free(img);
}

Test(malformed, section_kinds)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    static const uint32_t bad_kinds[] = {0, EMB_SEC_KIND_MAX + 1, 0xFFFFFFFFu};
    for (size_t i = 0; i < ARRAY_LEN(bad_kinds); i++) {
        uint8_t *c = dup_image(img, len);
        table(c)[1].kind = bad_kinds[i];
        fix_header_crc(c, len);
        expect_fail(c, len, EMB_ECORRUPT, "unknown kind");
        free(c);
    }
    /* Duplicate kind: the norms entry claims to be meta. */
    uint8_t *c = dup_image(img, len);
    sec(c, EMB_SEC_NORMS)->kind = EMB_SEC_META;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "section meta appears twice");
    free(c);
    /* Reserved fields. */
    c = dup_image(img, len);
    sec(c, EMB_SEC_ROWS_Q1)->flags = 1;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "rows_q1: reserved fields");
    free(c);
    c = dup_image(img, len);
    sec(c, EMB_SEC_KEYS_OFFS)->reserved = 0x80000000u;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "keys_offs: reserved fields");
    free(c);
    free(img);
}

Test(malformed, codec_bits_and_sections_disagree)
{
    size_t len;
    uint8_t *img = base_keyed(&len); /* f16 + q1 */
    uint8_t *c = dup_image(img, len);
    hdr(c)->codecs |= EMB_CODEC_F32;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "holds both f32 and f16");
    free(c);

    c = dup_image(img, len);
    hdr(c)->codecs = (hdr(c)->codecs & ~(uint32_t)EMB_CODEC_F16) | EMB_CODEC_F32;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "rows_f32 is missing");
    free(c);

    c = dup_image(img, len);
    hdr(c)->codecs &= ~(uint32_t)EMB_CODEC_Q1;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "rows_q1 is present");
    free(c);

    c = dup_image(img, len);
    drop_section(c, len, EMB_SEC_ROWS_F16);
    expect_fail(c, len, EMB_ECORRUPT, "rows_f16 is missing");
    free(c);

    c = dup_image(img, len);
    drop_section(c, len, EMB_SEC_NORMS);
    expect_fail(c, len, EMB_ECORRUPT, "norms is missing");
    free(c);

    /* The keys flag against the three key sections. */
    c = dup_image(img, len);
    hdr(c)->flags &= ~(uint32_t)EMB_FLAG_KEYS;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "keys_offs is present but the keys flag is clear");
    free(c);
    static const uint32_t key_kinds[] = {EMB_SEC_KEYS_OFFS, EMB_SEC_KEYS_BLOB, EMB_SEC_KEYS_HASH};
    static const char *const key_msgs[] = {"keys_offs is missing", "keys_blob is missing",
                                           "keys_hash is missing"};
    for (size_t i = 0; i < 3; i++) {
        c = dup_image(img, len);
        drop_section(c, len, key_kinds[i]);
        expect_fail(c, len, EMB_ECORRUPT, key_msgs[i]);
        free(c);
    }
    free(img);

    img = base_plain(&len);
    hdr(img)->flags |= EMB_FLAG_KEYS;
    fix_header_crc(img, len);
    expect_fail(img, len, EMB_ECORRUPT, "keys_offs is missing but the keys flag is set");
    free(img);
}

/* The key-index header lives in the keys_hash payload, outside the header CRC: open reads it. */
Test(malformed, key_hash_header)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    const emb_section *hs = sec(img, EMB_SEC_KEYS_HASH);
    emb_hash_header good;
    memcpy(&good, img + hs->offset, sizeof good);
    const uint64_t cap = good.capacity;
    struct {
        uint64_t capacity;
        uint32_t max_probe;
        const char *want;
    } cases[] = {
        {cap - 1, good.max_probe, "not a power of two"},
        {cap + 1, good.max_probe, "not a power of two"},
        {3 * cap / 2, good.max_probe, "not a power of two"},
        {0, good.max_probe, "not a power of two"},
        {8, good.max_probe, "not a power of two >= rows"}, /* below rows (10) */
        {UINT64_C(1) << 63, good.max_probe, "not a power of two"},
        {cap * 2, good.max_probe, "does not hold"},
        {cap, 0, "max_probe 0"},
        {cap, (uint32_t)cap + 1, "max_probe"},
        {cap, UINT32_MAX, "max_probe"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint8_t *c = dup_image(img, len);
        emb_hash_header h = good;
        h.capacity = cases[i].capacity;
        h.max_probe = cases[i].max_probe;
        memcpy(c + hs->offset, &h, sizeof h);
        expect_fail(c, len, EMB_ECORRUPT, cases[i].want);
        free(c);
    }
    /* A hash section shorter than its own header. */
    uint8_t *c = dup_image(img, len);
    sec(c, EMB_SEC_KEYS_HASH)->length = 8;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "shorter than its 16-byte header");
    free(c);
    free(img);
}

/* Metadata over 16 MiB: built by hand in memory (the writer refuses it), checked by parse. */
Test(malformed, metadata_too_large)
{
    size_t len;
    uint8_t *img = base_plain(&len);
    const uint64_t off = (len + 63) / 64 * 64, mlen = (uint64_t)EMB_MAX_META + 1;
    const size_t total = (size_t)(off + mlen);
    uint8_t *big = calloc(1, total);
    cr_assert_not_null(big);
    memcpy(big, img, len);
    emb_section *m = sec(big, EMB_SEC_META);
    m->offset = off;
    m->length = mlen;
    hdr(big)->file_size = total;
    fix_header_crc(big, total);
    emb_store s;
    emb_error err = {0};
    cr_assert_eq(emb_store_parse(&s, big, total, &err), EMB_ECORRUPT);
    cr_assert_not_null(strstr(err.msg, "exceeds"), "%s", err.msg);
    /* Exactly the limit is accepted by parse. */
    m->length = EMB_MAX_META;
    hdr(big)->file_size = total - 1;
    fix_header_crc(big, total - 1);
    cr_assert_eq(emb_store_parse(&s, big, total - 1, &err), 0, "%s", err.msg);
    free(big);
    free(img);
}

/* A flipped payload byte: open never reads rows, so it succeeds; verify names the section. */
Test(malformed, flipped_payload_byte_fails_verify)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    const uint32_t n = hdr(img)->section_count;
    for (uint32_t i = 0; i < n; i++) {
        const emb_section e = table(img)[i];
        /* Three places in each section: first byte, middle, last (keys_hash past its header,
         * which open reads). */
        uint64_t first = e.kind == EMB_SEC_KEYS_HASH ? sizeof(emb_hash_header) : 0;
        const uint64_t where[3] = {first, (first + e.length) / 2, e.length - 1};
        for (int w = 0; w < 3; w++) {
            uint8_t *c = dup_image(img, len);
            c[e.offset + where[w]] ^= 0x01;
            char want[64];
            snprintf(want, sizeof want, "section %s: CRC-32C", emb_section_name(e.kind));
            expect_verify(c, len, EMB_ECHECKSUM, want);
            free(c);
        }
    }
    free(img);
}

/* Bytes between sections must be zero. */
Test(malformed, nonzero_gap_byte)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    /* Find a byte no section covers. */
    size_t gap = 0;
    for (size_t off = hdr(img)->header_size; off < len && !gap; off++) {
        int covered = 0;
        for (uint32_t i = 0; i < hdr(img)->section_count; i++)
            if (off >= table(img)[i].offset && off < table(img)[i].offset + table(img)[i].length)
                covered = 1;
        if (!covered)
            gap = off;
    }
    cr_assert_gt(gap, 0, "the base image has no gap between sections");
    img[gap] = 0x5A;
    char want[64];
    snprintf(want, sizeof want, "padding: byte %zu", gap);
    expect_verify(img, len, EMB_ECORRUPT, want);
    free(img);
}

/* Payload damage with the CRCs fixed: verify's structural checks. */
Test(malformed, verify_structural_checks)
{
    size_t len;
    uint8_t *img = base_keyed(&len); /* f16 + q1, dim 7: 50 padding bytes a row */

    /* Non-zero f16 row padding. */
    uint8_t *c = dup_image(img, len);
    c[sec(c, EMB_SEC_ROWS_F16)->offset + 64 * 3 + 14] = 1;
    fix_section_crc(c, len, EMB_SEC_ROWS_F16);
    expect_verify(c, len, EMB_ECORRUPT, "rows_f16: row 3 has non-zero padding at byte 14");
    free(c);

    /* A wrong norm, an infinite norm, a NaN norm. */
    static const float bad_norms[] = {1000.0f, INFINITY, NAN, -1.0f};
    for (size_t i = 0; i < ARRAY_LEN(bad_norms); i++) {
        c = dup_image(img, len);
        memcpy(c + sec(c, EMB_SEC_NORMS)->offset + 4 * 4, &bad_norms[i], 4);
        fix_section_crc(c, len, EMB_SEC_NORMS);
        expect_verify(c, len, EMB_ECORRUPT, "norms: row 4");
        free(c);
    }

    /* A value changed in a row (norm no longer matches). */
    c = dup_image(img, len);
    uint16_t h = 0x5000; /* 32.0 */
    memcpy(c + sec(c, EMB_SEC_ROWS_F16)->offset + 64 * 2, &h, 2);
    fix_section_crc(c, len, EMB_SEC_ROWS_F16);
    expect_verify(c, len, EMB_ECORRUPT, "norms: row 2");
    free(c);

    /* Every slot of the key index emptied: no key is found. */
    c = dup_image(img, len);
    emb_section *hs = sec(c, EMB_SEC_KEYS_HASH);
    memset(c + hs->offset + sizeof(emb_hash_header), 0, hs->length - sizeof(emb_hash_header));
    fix_section_crc(c, len, EMB_SEC_KEYS_HASH);
    expect_verify(c, len, EMB_ECORRUPT, "keys_hash: the key of row 0 is not found");
    free(c);
    free(img);
}

/* The interleaved q1 copy: its length follows from rows and dim (groups of 32 rows, the last
 * padded), it needs the q1 rows it copies, and verify compares it with them, padding included. */
Test(malformed, interleaved_q1)
{
    size_t len;
    uint8_t *img = valid_image(EMB_CODEC_F16 | EMB_CODEC_Q1, 200, 40, 0, NULL, &len);
    cr_assert_eq(sec(img, EMB_SEC_ROWS_Q1I)->length, 2 * 2 * 576);
    cr_assert_eq(verify_image(img, len, NULL), 0);

    uint8_t *c = dup_image(img, len);
    sec(c, EMB_SEC_ROWS_Q1I)->length -= 576;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "section rows_q1i: length 1728, expected 2304");
    free(c);

    c = dup_image(img, len);
    drop_section(c, len, EMB_SEC_ROWS_Q1);
    hdr(c)->codecs &= ~(uint32_t)EMB_CODEC_Q1;
    fix_header_crc(c, len);
    expect_fail(c, len, EMB_ECORRUPT, "rows_q1i is present without rows_q1");
    free(c);

    /* A sign word of row 33, block 1 (group 1), then a byte of the zero row past the last. */
    static const struct {
        size_t at;
        const char *want;
    } flips[] = {{2 * 2 * 576 - 1152 + 576 + 8, "rows_q1i: group 1 (rows 32..) differs"},
                 {2 * 2 * 576 - 576 + 512 + 2 * 31, "rows_q1i: group 1 (rows 32..) differs"},
                 {7, "rows_q1i: group 0 (rows 0..) differs"}};
    for (size_t i = 0; i < ARRAY_LEN(flips); i++) {
        c = dup_image(img, len);
        c[sec(c, EMB_SEC_ROWS_Q1I)->offset + flips[i].at] ^= 0x10;
        fix_section_crc(c, len, EMB_SEC_ROWS_Q1I);
        expect_verify(c, len, EMB_ECORRUPT, flips[i].want);
        free(c);
    }
    free(img);
}

/* Damaged key offsets: emb_store_key and emb_store_find return EMB_ECORRUPT (never crash, never
 * read outside the blob), and verify names keys_offs once the section CRC is made to match. */
Test(malformed, key_offsets)
{
    size_t len;
    uint8_t *img = base_keyed(&len); /* keys "key-<i>", 10 rows */
    const emb_section *os = sec(img, EMB_SEC_KEYS_OFFS);
    const uint64_t blob_len = sec(img, EMB_SEC_KEYS_BLOB)->length;
    struct {
        uint32_t index;
        uint64_t value;
        int bad_row; /* the row whose key access fails, -1 for none */
        const char *want;
    } cases[] = {
        {4, 0, 3, "keys_offs: offsets of row 3"},              /* offs[4] < offs[3] */
        {4, blob_len + 100, 3, "keys_offs: offsets of row 3"}, /* past the blob */
        {4, UINT64_MAX, 3, "keys_offs: offsets of row 3"},
        {0, 1, -1, "keys_offs: first offset is 1"},
        {10, blob_len - 1, -1, "keys_offs: last offset"},
        {10, blob_len + 1, 9, "keys_offs: last offset"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint8_t *c = dup_image(img, len);
        memcpy(c + os->offset + 8 * cases[i].index, &cases[i].value, 8);
        fix_section_crc(c, len, EMB_SEC_KEYS_OFFS);
        expect_verify(c, len, EMB_ECORRUPT, cases[i].want);

        /* Key access on the damaged store (from a file, so the mapping is exact). */
        char *path = fresh_path("offs");
        th_write_file(path, c, len);
        emb_store *s = open_ok(path);
        for (uint32_t r = 0; r < 10; r++) {
            const char *k;
            size_t kl;
            int rc = emb_store_key(s, r, &k, &kl);
            if ((int)r == cases[i].bad_row)
                cr_assert_eq(rc, EMB_ECORRUPT, "case %zu row %u: %d", i, r, rc);
            if (rc == 0)
                cr_assert_leq((uint64_t)(k - (const char *)s->key_blob) + kl, s->key_blob_len);
            char want[16];
            int m = snprintf(want, sizeof want, "key-%u", r);
            uint64_t id;
            rc = emb_store_find(s, want, (size_t)m, &id);
            cr_assert(rc == 0 || rc == EMB_ENOTFOUND || rc == EMB_ECORRUPT, "find rc %d", rc);
            if (rc == 0)
                cr_assert_lt(id, 10);
        }
        emb_store_close(s);
        unlink(path);
        free(path);
        free(c);
    }
    free(img);
}

/* Slots naming rows that do not exist: find says EMB_ECORRUPT, verify names keys_hash. */
Test(malformed, key_slots_naming_bad_rows)
{
    size_t len;
    uint8_t *img = base_keyed(&len);
    const emb_section *hs = sec(img, EMB_SEC_KEYS_HASH);
    emb_hash_header hh;
    memcpy(&hh, img + hs->offset, sizeof hh);
    /* The slot of "key-2". */
    uint64_t h = emb_key_hash("key-2", 5, hh.seed), mask = hh.capacity - 1;
    uint64_t i = h & mask, slot = 0;
    const uint64_t slot0 = hs->offset + sizeof hh;
    for (uint32_t p = 0; p < hh.max_probe; p++, i = (i + 1) & mask) {
        memcpy(&slot, img + slot0 + 8 * i, 8);
        if ((slot >> 32) == (h >> 32) && (slot & 0xFFFFFFFFu) == 3)
            break;
    }
    cr_assert_eq(slot & 0xFFFFFFFFu, 3, "slot of key-2 not found");
    static const uint32_t bad_rows[] = {11, 0, 0xFFFFFFFFu};
    for (size_t b = 0; b < ARRAY_LEN(bad_rows); b++) {
        uint8_t *c = dup_image(img, len);
        uint64_t v = (slot & ~UINT64_C(0xFFFFFFFF)) | bad_rows[b];
        memcpy(c + slot0 + 8 * i, &v, 8);
        fix_section_crc(c, len, EMB_SEC_KEYS_HASH);
        expect_verify(c, len, EMB_ECORRUPT, "keys_hash");
        char *path = fresh_path("slots");
        th_write_file(path, c, len);
        emb_store *s = open_ok(path);
        uint64_t id = 1234;
        int rc = emb_store_find(s, "key-2", 5, &id);
        cr_assert(rc == EMB_ECORRUPT || rc == EMB_ENOTFOUND, "bad row %u: rc %d", bad_rows[b], rc);
        cr_assert_eq(id, 1234);
        emb_store_close(s);
        free(path);
        free(c);
    }
    free(img);
}

/* ---- random damage: nothing may crash --------------------------------------------------- */

/* Exercises every reader on a parsed (possibly damaged) store; returns verify's result. */
static int poke(const emb_store *s)
{
    emb_error err = {0};
    int rc = emb_store_verify(s, &err);
    cr_assert(rc == 0 || rc == EMB_ECHECKSUM || rc == EMB_ECORRUPT || rc == EMB_ENOMEM,
              "verify rc %d", rc);
    float *row = malloc((size_t)s->dim * sizeof *row);
    cr_assert_not_null(row);
    uint64_t nr = s->rows < 64 ? s->rows : 64;
    for (uint64_t r = 0; r < nr; r++) {
        cr_assert_eq(emb_store_row(s, r, row), 0);
        const char *k;
        size_t kl;
        rc = emb_store_key(s, r, &k, &kl);
        cr_assert(rc == 0 || rc == EMB_ECORRUPT || rc == EMB_ENOTFOUND);
        if (rc == 0) {
            cr_assert_leq(kl, EMB_MAX_KEY);
            volatile char sink = kl ? k[kl - 1] : 0;
            (void)sink;
            uint64_t id;
            rc = emb_store_find(s, k, kl, &id);
            cr_assert(rc == 0 || rc == EMB_ECORRUPT || rc == EMB_ENOTFOUND);
            if (rc == 0)
                cr_assert_lt(id, s->rows);
        }
    }
    cr_assert_eq(emb_store_row(s, s->rows, row), EMB_ERANGE);
    for (int i = 0; i < 12; i++) {
        char k[16];
        int m = snprintf(k, sizeof k, i < 10 ? "key-%d" : "nokey-%d", i);
        uint64_t id;
        rc = emb_store_find(s, k, (size_t)m, &id);
        cr_assert(rc == 0 || rc == EMB_ECORRUPT || rc == EMB_ENOTFOUND);
    }
    /* A search reads every row of a codec. */
    if (s->rows <= 4096) {
        for (uint32_t j = 0; j < s->dim; j++)
            row[j] = (float)(j % 5) - 2.0f;
        emb_scratch *sc = emb_scratch_new(s->dim, 100);
        cr_assert_not_null(sc);
        emb_hit hits[5];
        emb_search_params p = {.metric = (emb_metric)(s->rows % 3), .k = 5, .oversample = 2};
        rc = emb_search(s, row, &p, sc, hits);
        cr_assert(rc >= 0 && rc <= 5, "search rc %d", rc);
        for (int i = 0; i < rc; i++)
            cr_assert_lt(hits[i].id, s->rows);
        emb_scratch_free(sc);
    }
    free(row);
    return emb_store_verify(s, NULL);
}

Test(malformed, random_damage_never_crashes, .timeout = 600)
{
    size_t lens[3];
    uint8_t *bases[3] = {
        base_keyed(&lens[0]),
        valid_image(EMB_CODEC_F32 | EMB_CODEC_Q1, 130, 6, 0, "{\"oversample_default\": 3}",
                    &lens[1]),
        valid_image(EMB_CODEC_F16 | EMB_CODEC_Q1, 3, 12, 1, NULL, &lens[2]),
    };
    static const uint64_t interesting[] = {0,          1,          63,         64,
                                           4096,       UINT32_MAX, UINT64_MAX, UINT64_MAX - 63,
                                           1ull << 32, 1ull << 62, 1ull << 63, 0x7FFFFFFF};
    uint64_t rng = 0xDA3A6E;
    int opened = 0, sound = 0;
    for (int it = 0; it < 2000; it++) {
        const int b = it % 3;
        size_t len = lens[b];
        uint8_t *c = malloc(len + 256);
        cr_assert_not_null(c);
        memcpy(c, bases[b], len);
        const uint32_t hs = hdr(c)->header_size;
        const int mode = (int)(th_rand_u64(&rng) % 6);
        switch (mode) {
        case 0: /* random bit flips anywhere */
            for (int f = 0, nf = 1 + (int)(th_rand_u64(&rng) % 4); f < nf; f++)
                c[th_rand_u64(&rng) % len] ^= (uint8_t)(1u << (th_rand_u64(&rng) % 8));
            break;
        case 1: /* truncation */ len = (size_t)(th_rand_u64(&rng) % len); break;
        case 2: /* bytes of the header and table, CRC fixed */
            for (int f = 0, nf = 1 + (int)(th_rand_u64(&rng) % 3); f < nf; f++)
                c[8 + th_rand_u64(&rng) % (hs - 8)] = (uint8_t)th_rand_u64(&rng);
            fix_header_crc(c, len);
            break;
        case 3: { /* an interesting value in a random 4- or 8-byte field, CRC fixed */
            size_t off = 16 + (th_rand_u64(&rng) % ((hs - 16) / 4)) * 4;
            uint64_t v =
                th_rand_u64(&rng) % 3 ? interesting[th_rand_u64(&rng) % 12] : th_rand_u64(&rng);
            if (th_rand_u64(&rng) % 2 && off + 8 <= hs)
                memcpy(c + off, &v, 8);
            else
                memcpy(c + off, &v, 4);
            fix_header_crc(c, len);
            break;
        }
        case 4: { /* a payload byte or word with its section CRC fixed: reaches verify */
            const emb_section *e = &table(c)[th_rand_u64(&rng) % hdr(c)->section_count];
            if (e->length) {
                size_t at = (size_t)(e->offset + th_rand_u64(&rng) % e->length);
                if (th_rand_u64(&rng) % 2 && at + 8 <= e->offset + e->length) {
                    uint64_t v = interesting[th_rand_u64(&rng) % 12];
                    memcpy(c + at, &v, 8);
                } else {
                    c[at] ^= (uint8_t)(1 + th_rand_u64(&rng) % 255);
                }
                fix_section_crc(c, len, e->kind);
            }
            break;
        }
        default: /* appended bytes */
            for (int f = 0; f < 64; f++)
                c[len + (size_t)f] = (uint8_t)th_rand_u64(&rng);
            len += 1 + th_rand_u64(&rng) % 64;
            break;
        }
        /* Parse from an exact-size copy (ASan catches any read past the end). */
        uint8_t *exact = dup_image(c, len);
        emb_store s;
        emb_error err = {0};
        int rc = emb_store_parse(&s, exact, len, &err);
        if (rc == 0) {
            opened++;
            sound += poke(&s) == 0;
        } else {
            cr_assert(rc == EMB_ECORRUPT || rc == EMB_ETRUNCATED || rc == EMB_EVERSION ||
                          rc == EMB_EBYTEORDER || rc == EMB_ECHECKSUM,
                      "iteration %d: rc %d", it, rc);
            cr_assert(err.code == rc && err.msg[0], "iteration %d: no message", it);
        }
        /* Now and then through a real file and mapping. */
        if (it % 50 == 0) {
            char *path = fresh_path("rnd");
            th_write_file(path, c, len);
            emb_store *fs = NULL;
            int frc = emb_store_open(&fs, path, &err);
            cr_assert_eq(frc, rc, "iteration %d: open %d vs parse %d", it, frc, rc);
            if (frc == 0) {
                poke(fs);
                emb_store_close(fs);
            }
            unlink(path);
            free(path);
        }
        free(exact);
        free(c);
    }
    cr_log_info("random damage: %d of 2000 damaged images opened, %d of them verified", opened,
                sound);
    for (int b = 0; b < 3; b++)
        free(bases[b]);
}
