/*
 * kernels_check.c - every kernel level this build has against the scalar twins, without
 * criterion (whose aarch64 build Debian does not ship for cross use): built by
 * tests/cross/aarch64.sh with gcc-aarch64-linux-gnu and run under qemu-aarch64, so the NEON
 * kernels are tested on every CI run of an x86 machine. It also builds under the native
 * compiler (the same checks then cover scalar, AVX2 and AVX-512).
 *
 * The checks mirror tests/lib/test_kernels.c and test_search.c: tolerances relative to the sum
 * of the magnitudes of the terms, inputs ending at a PROT_NONE page so a read past n faults,
 * conversions and q1 x q8 bit-exact, many-row kernels bit-identical to one-row ones, the batch
 * tile within its bound, and emb_search_batch answering as emb_search. Prints
 * "N passed, N failed"; exits 1 on any failure.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "emb.h"
#include "emb_kernels.h"
#include "kernels_internal.h"

static int passed, failed;

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Counts one check; prints the first failures only. */
static void check(int ok, const char *fmt, ...)
{
    if (ok) {
        passed++;
        return;
    }
    if (failed++ < 20) {
        va_list ap;
        va_start(ap, fmt);
        fputs("FAIL: ", stdout);
        vprintf(fmt, ap);
        fputc('\n', stdout);
        va_end(ap);
    }
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rand_u64(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Roughly normal: the sum of four uniforms in [-1, 1), scaled. */
static float rand_f(void)
{
    float s = 0;
    for (int i = 0; i < 4; i++)
        s += (float)(rand_u64() >> 40) / (float)(1u << 23) - 1.0f;
    return s;
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

typedef struct guarded {
    void *map;
    size_t len;
} guarded;

/* bytes of writable memory ending at a PROT_NONE page. */
static void *guard_alloc(guarded *g, size_t bytes)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t body = bytes ? (bytes + page - 1) / page * page : page;
    g->len = body + page;
    g->map = mmap(NULL, g->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->map == MAP_FAILED || mprotect((uint8_t *)g->map + body, page, PROT_NONE) != 0) {
        perror("mmap");
        exit(2);
    }
    return (uint8_t *)g->map + body - bytes;
}

static void guard_free(guarded *g)
{
    munmap(g->map, g->len);
}

static const size_t ns[] = {0,  1,  3,   4,   5,   7,   8,   15,  16,  17,
                            33, 64, 127, 128, 129, 200, 300, 768, 1031};
#define N_NS (sizeof ns / sizeof ns[0])

static void close_to(const char *what, const char *lvl, size_t n, float got, float want, double mag,
                     double tol)
{
    const double err = fabs((double)got - (double)want);
    check(err <= tol * mag + FLT_MIN, "%s[%s] n=%zu: got %.9g want %.9g", what, lvl, n, (double)got,
          (double)want);
}

static void check_level(const emb_kernels *k)
{
    /* One-row scoring kernels against the oracles, and the many-row ones against one-row. */
    for (size_t t = 0; t < N_NS; t++) {
        const size_t n = ns[t], nrows = 3, nb = emb_q1_blocks((uint32_t)n);
        const size_t s32 = (n * 4 + 63) / 64 * 64, s16 = (n * 2 + 63) / 64 * 64;
        const size_t sq1 = nb * EMB_Q1_BLOCK;
        guarded g32, g16, gq1, gq;
        uint8_t *r32 = guard_alloc(&g32, (nrows - 1) * s32 + n * 4);
        uint8_t *r16 = guard_alloc(&g16, (nrows - 1) * s16 + n * 2);
        uint8_t *rq1 = guard_alloc(&gq1, nrows * sq1);
        float *q = guard_alloc(&gq, n * 4);
        float *x = malloc((n + 1) * 4), *dec = malloc((n + 1) * 4), *dec2 = malloc((n + 1) * 4);
        for (size_t j = 0; j < n; j++)
            q[j] = rand_f();
        for (size_t r = 0; r < nrows; r++) {
            for (size_t j = 0; j < n; j++)
                x[j] = rand_f();
            memcpy(r32 + r * s32, x, n * 4);
            emb_f32_to_f16_scalar(x, (uint16_t *)(void *)(r16 + r * s16), n);
            emb_q1_encode(x, (uint32_t)n, rq1 + r * sq1);
        }
        const float *a = (const float *)(void *)r32;
        const uint16_t *h = (const uint16_t *)(void *)r16;
        double m32 = 0, m16 = 0, mq1 = 0;
        emb_q1_decode(rq1, (uint32_t)n, dec);
        for (size_t j = 0; j < n; j++) {
            m32 += fabs((double)a[j] * q[j]);
            m16 += fabs((double)emb_f16_to_f32(h[j]) * q[j]);
            mq1 += fabs((double)dec[j] * q[j]);
        }
        const float l32 = emb_l2sq_f32_scalar(a, q, n), l16 = emb_l2sq_f16_scalar(h, q, n);
        close_to("dot_f32", k->name, n, k->dot_f32(a, q, n), emb_dot_f32_scalar(a, q, n), m32,
                 1e-5);
        close_to("l2sq_f32", k->name, n, k->l2sq_f32(a, q, n), l32, l32, 1e-5);
        close_to("dot_f16", k->name, n, k->dot_f16(h, q, n), emb_dot_f16_scalar(h, q, n), m16,
                 1e-5);
        close_to("l2sq_f16", k->name, n, k->l2sq_f16(h, q, n), l16, l16, 1e-5);
        close_to("dot_q1", k->name, n, k->dot_q1(rq1, q, n), emb_dot_q1_scalar(rq1, q, n), mq1,
                 2e-5);
        k->q1_to_f32(rq1, dec2, n);
        check(memcmp(dec, dec2, n * 4) == 0, "q1_to_f32[%s] n=%zu differs from emb_q1_decode",
              k->name, n);
        float out[3], want[3];
        k->dot_f32_rows(r32, s32, nrows, q, n, out);
        for (size_t r = 0; r < nrows; r++)
            check(bits(out[r]) == bits(k->dot_f32((const float *)(void *)(r32 + r * s32), q, n)),
                  "dot_f32_rows[%s] n=%zu row %zu", k->name, n, r);
        k->l2sq_f16_rows(r16, s16, nrows, q, n, out);
        for (size_t r = 0; r < nrows; r++)
            check(bits(out[r]) ==
                      bits(k->l2sq_f16((const uint16_t *)(void *)(r16 + r * s16), q, n)),
                  "l2sq_f16_rows[%s] n=%zu row %zu", k->name, n, r);
        k->dot_f16_rows(r16, s16, nrows, q, n, out);
        for (size_t r = 0; r < nrows; r++)
            check(bits(out[r]) == bits(k->dot_f16((const uint16_t *)(void *)(r16 + r * s16), q, n)),
                  "dot_f16_rows[%s] n=%zu row %zu", k->name, n, r);
        k->dot_q1_rows(rq1, sq1, nrows, q, n, out);
        for (size_t r = 0; r < nrows; r++)
            check(bits(out[r]) == bits(k->dot_q1(rq1 + r * sq1, q, n)),
                  "dot_q1_rows[%s] n=%zu row %zu", k->name, n, r);
        k->dot_q1q8_rows(rq1, sq1, nrows, q, n, out);
        emb_dot_q1q8_rows_scalar(rq1, sq1, nrows, q, n, want);
        for (size_t r = 0; r < nrows; r++)
            check(bits(out[r]) == bits(want[r]), "dot_q1q8_rows[%s] n=%zu row %zu", k->name, n, r);
        size_t at = k->first_at_least(q, n, 0.5f);
        check(at == emb_first_at_least_scalar(q, n, 0.5f), "first_at_least[%s] n=%zu", k->name, n);
        free(x);
        free(dec);
        free(dec2);
        guard_free(&g32);
        guard_free(&g16);
        guard_free(&gq1);
        guard_free(&gq);
    }

    /* q1 x q1, bit for bit, on 1..9 rows (partial and full groups of four) at the packed stride
     * and at an odd one, the padding bits of the last block set on every other row. */
    for (size_t t = 0; t < N_NS; t++) {
        const size_t n = ns[t], nb = emb_q1_blocks((uint32_t)n);
        if (n == 0)
            continue;
        for (size_t extra = 0; extra <= 5; extra += 5) {
            const size_t stride = nb * EMB_Q1_BLOCK + extra, nrows = 9;
            guarded gr;
            uint8_t *rows = guard_alloc(&gr, (nrows - 1) * stride + nb * EMB_Q1_BLOCK);
            float *x = malloc(n * 4), out[9], want[9];
            uint64_t *qbits = malloc(2 * nb * sizeof *qbits);
            float *qd = malloc(nb * sizeof *qd);
            for (size_t r = 0; r < nrows; r++) {
                for (size_t j = 0; j < n; j++)
                    x[j] = rand_f();
                emb_q1_encode(x, (uint32_t)n, rows + r * stride);
                if (r % 2)
                    for (size_t j = n - (nb - 1) * 128; j < 128; j++)
                        rows[r * stride + (nb - 1) * EMB_Q1_BLOCK + 2 + j / 8] |=
                            (uint8_t)(1u << (j % 8));
            }
            emb_q1_encode_query(x, n, qbits, qd);
            for (size_t m = 1; m <= nrows; m += 4) {
                k->dot_q1q1_rows(rows, stride, m, qbits, qd, n, out);
                emb_dot_q1q1_rows_scalar(rows, stride, m, qbits, qd, n, want);
                for (size_t r = 0; r < m; r++)
                    check(bits(out[r]) == bits(want[r]),
                          "dot_q1q1_rows[%s] n=%zu stride %zu rows %zu row %zu", k->name, n, stride,
                          m, r);
            }
            /* The same rows interleaved (one group of 32, 9 live), from every start. */
            uint8_t *ilv = malloc(nb * EMB_Q1I_TILE);
            emb_q1_interleave(rows, stride, nrows, (uint32_t)n, ilv);
            emb_dot_q1q1_rows_scalar(rows, stride, nrows, qbits, qd, n, want);
            for (size_t r0 = 0; r0 < nrows; r0 += 2) {
                float n2[9];
                k->dot_q1q1_ilv(ilv, r0, nrows - r0, qbits, qd, n, out, n <= 128 ? n2 : NULL);
                for (size_t r = r0; r < nrows; r++) {
                    check(bits(out[r - r0]) == bits(want[r]),
                          "dot_q1q1_ilv[%s] n=%zu rows [%zu, %zu) row %zu", k->name, n, r0, nrows,
                          r);
                    if (n <= 128)
                        check(bits(n2[r - r0]) ==
                                  bits(emb_q1_norm2(rows + r * stride, (uint32_t)n)),
                              "dot_q1q1_ilv[%s] n=%zu row %zu: norm", k->name, n, r);
                }
            }
            free(ilv);
            free(x);
            free(qbits);
            free(qd);
            guard_free(&gr);
        }
    }

    /* The scan filter: the first value >= t, NaN never, at every length up to 70. */
    for (size_t n = 0; n <= 70; n++) {
        float v[70];
        for (size_t i = 0; i < n; i++)
            v[i] = i % 7 == 3 ? NAN : rand_f();
        for (int ti = 0; ti < 3; ti++) {
            const float t = ti == 0 ? -INFINITY : ti == 1 ? 0.9f : 2.0f;
            check(k->first_at_least(v, n, t) == emb_first_at_least_scalar(v, n, t),
                  "first_at_least[%s] n=%zu t=%g", k->name, n, (double)t);
        }
    }

    /* Cosines from dot products, bit for bit, zero and NaN norms among them. */
    for (size_t n = 0; n <= 70; n++) {
        float x[70], n2[70], want[70];
        for (size_t i = 0; i < n; i++) {
            x[i] = rand_f() * 10.0f;
            n2[i] = i % 9 == 4 ? 0.0f : i % 11 == 5 ? NAN : rand_f() * rand_f() * 100.0f;
        }
        memcpy(want, x, sizeof x);
        emb_cos_rows_scalar(want, n2, 1.75f, n);
        k->cos_rows(x, n2, 1.75f, n);
        check(memcmp(x, want, n * sizeof *x) == 0, "cos_rows[%s] n=%zu", k->name, n);
    }

    /* One-block q1 norms, bit for bit: every f16 scale as a row of 18 bytes. */
    {
        uint8_t *rows = calloc(65536, 18);
        float *want = malloc(65536 * 4), *got = malloc(65536 * 4);
        for (uint32_t h = 0; h < 65536; h++) {
            const uint16_t hh = (uint16_t)h;
            memcpy(rows + (size_t)h * 18, &hh, 2);
        }
        for (size_t nrows = 65536; nrows > 65530; nrows -= 3) {
            emb_q1_norm2_rows_scalar(rows, 18, nrows, 128, want);
            k->q1_norm2_rows(rows, 18, nrows, 128, got);
            size_t bad = 0;
            for (size_t i = 0; i < nrows; i++)
                bad += !(memcmp(&got[i], &want[i], 4) == 0 || (isnan(got[i]) && isnan(want[i])));
            check(bad == 0, "q1_norm2_rows[%s] rows %zu: %zu differ", k->name, nrows, bad);
        }
        free(rows);
        free(want);
        free(got);
    }

    /* Half conversions, bit for bit: every half, then a strided sweep of all floats. */
    guarded gh;
    uint16_t *hin = guard_alloc(&gh, 65536 * 2), *hout = malloc(65536 * 2);
    float *fw = malloc(65536 * 4), *fg = malloc(65536 * 4), *fin = malloc(65536 * 4);
    for (uint32_t i = 0; i < 65536; i++)
        hin[i] = (uint16_t)i;
    emb_f16_to_f32_scalar(hin, fw, 65536);
    for (size_t off = 0, len = 1; off < 65536; off += len, len = len * 5 % 97 + 1)
        k->f16_to_f32(hin + off, fg + off, off + len <= 65536 ? len : 65536 - off);
    check(memcmp(fw, fg, 65536 * 4) == 0, "f16_to_f32[%s] differs from the scalar", k->name);
    uint64_t b = 0;
    for (int round = 0; round < 40; round++) {
        for (size_t i = 0; i < 65536; i++, b += 0x4f1bu)
            fin[i] = from_bits((uint32_t)(round % 2 ? rand_u64() : b));
        emb_f32_to_f16_scalar(fin, hin, 65536);
        for (size_t off = 0, len = 1; off < 65536; off += len, len = len * 3 % 1031 + 1)
            k->f32_to_f16(fin + off, hout + off, off + len <= 65536 ? len : 65536 - off);
        size_t bad = 0;
        for (size_t i = 0; i < 65536; i++)
            bad += hout[i] != hin[i];
        check(bad == 0, "f32_to_f16[%s] round %d: %zu of 65536 differ", k->name, round, bad);
    }
    guard_free(&gh);
    free(hout);
    free(fw);
    free(fg);
    free(fin);

    /* The batch tile: dots within the bound, hit bits = own dot >= the rounded limit. */
    static const size_t tn[] = {1, 5, 128, 131};
    static const size_t tq[] = {1, 7, 8, 15, 16, 17, 33, 64};
    for (size_t a = 0; a < 4; a++) {
        for (size_t c = 0; c < 8; c++) {
            const size_t n = tn[a], nq = tq[c], nr = 5 + a, ldq = (nq + 15) / 16 * 16;
            float *x = malloc(nr * n * 4), *qt = aligned_alloc(64, n * ldq * 4);
            float *lv = malloc(ldq * 3 * 4), *rv = malloc(nr * 3 * 4), *out = malloc(nr * ldq * 4);
            uint16_t *hits = malloc(nr * ldq / 16 * 2);
            for (size_t i = 0; i < nr * n; i++)
                x[i] = rand_f();
            for (size_t i = 0; i < n * ldq; i++)
                qt[i] = i % ldq < nq ? rand_f() : 0.0f;
            for (size_t i = 0; i < ldq * 3; i++)
                lv[i] = rand_f();
            for (size_t i = 0; i < nr * 3; i++)
                rv[i] = rand_f();
            const emb_tile_limits lim = {lv, lv + ldq, lv + 2 * ldq, rv, rv + nr, rv + 2 * nr};
            k->tile_f32(x, n, nr, qt, ldq, nq, n, &lim, out, hits);
            for (size_t r = 0; r < nr; r++) {
                for (size_t j = 0; j < ldq; j++) {
                    const int hit = hits[r * (ldq / 16) + j / 16] >> (j % 16) & 1;
                    if (j >= nq) {
                        check(!hit, "tile[%s] padding column %zu hit", k->name, j);
                        continue;
                    }
                    double exact = 0, mag = 0;
                    for (size_t i = 0; i < n; i++) {
                        exact += (double)x[r * n + i] * qt[i * ldq + j];
                        mag += fabs((double)x[r * n + i] * qt[i * ldq + j]);
                    }
                    const float d = out[r * ldq + j];
                    close_to("tile", k->name, n, d, (float)exact, mag, (double)(n + 2) * 0x1p-23);
                    const float l =
                        fmaf(-lim.qc[j], lim.rd[r], fmaf(lim.qa[j], lim.rb[r], lim.qe[j])) +
                        lim.rf[r];
                    check(hit == (d >= l), "tile[%s] n=%zu nq=%zu r=%zu j=%zu hit bit", k->name, n,
                          nq, r, j);
                }
            }
            free(x);
            free(qt);
            free(lv);
            free(rv);
            free(out);
            free(hits);
        }
    }
}

/* emb_search_batch (tile path and narrow path) answers as emb_search, through the library. */
static void check_search(const char *dir)
{
    const uint32_t dim = 96, n = 700, nq = 20;
    char path[512];
    snprintf(path, sizeof path, "%s/cross.emb", dir);
    float *rows = malloc((size_t)n * dim * 4), *qs = malloc((size_t)nq * dim * 4);
    for (size_t i = 0; i < (size_t)n * dim; i++)
        rows[i] = rand_f();
    for (size_t i = 0; i < (size_t)nq * dim; i++)
        qs[i] = rand_f();
    memcpy(rows + 10 * dim, rows + 5 * dim, dim * 4); /* a tie */
    emb_writer_opts o = {.dim = dim,
                         .codecs = EMB_CODEC_F16 | EMB_CODEC_Q1,
                         .metric = EMB_METRIC_COS,
                         .q1_interleave = 1};
    emb_writer *w;
    emb_error err = {0};
    emb_store *s = NULL;
    if (emb_writer_open(&w, path, &o, &err) != 0) {
        check(0, "writer: %s", err.msg);
        goto out;
    }
    for (uint32_t i = 0; i < n; i++)
        emb_writer_add(w, rows + (size_t)i * dim, NULL, NULL, 0, &err);
    if (emb_writer_finish(w, NULL, 0, &err) != 0 || emb_store_open(&s, path, &err) != 0) {
        check(0, "store: %s", err.msg);
        goto out;
    }
    emb_batch_scratch *bs = emb_batch_scratch_new(dim, nq, 1000);
    emb_scratch *sc = emb_scratch_new(dim, 1000);
    emb_hit got[20 * 10], one[10];
    uint32_t counts[20];
    for (int mode = 0; mode < 9; mode++) {
        /* Two-stage (q1 x q8), exact, then two-stage with the q1 x q1 first stage. */
        emb_search_params p = {.metric = (emb_metric)(mode % 3),
                               .k = 10,
                               .oversample = 4,
                               .exact = mode >= 3 && mode < 6,
                               .q1_query = mode >= 6 ? EMB_Q1_QUERY_Q1 : EMB_Q1_QUERY_Q8};
        for (uint32_t m = 1; m <= nq; m += nq - 1) { /* 1 query (narrow), 20 (tile) */
            check(emb_search_batch(s, qs, m, &p, NULL, bs, got, counts) == 0, "batch failed");
            for (uint32_t i = 0; i < m; i++) {
                const int c = emb_search(s, qs + (size_t)i * dim, &p, sc, one);
                int same = c == (int)counts[i];
                for (int r = 0; same && r < c; r++)
                    same = got[i * 10 + r].id == one[r].id &&
                           bits(got[i * 10 + r].score) == bits(one[r].score);
                check(same, "%s: batch of %u, mode %d, query %u differs from emb_search",
                      emb_kernels_get()->name, m, mode, i);
            }
        }
    }
    emb_batch_scratch_free(bs);
    emb_scratch_free(sc);
out:
    if (s)
        emb_store_close(s);
    unlink(path);
    free(rows);
    free(qs);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    const emb_kernels *best = NULL;
    for (int l = EMB_SIMD_SCALAR; l <= EMB_SIMD_NEON; l++) {
        const emb_kernels *k = emb_kernels_for((emb_simd)l);
        if (!k)
            continue;
        printf("level %s\n", k->name);
        check_level(k);
        best = k;
    }
#if defined(__aarch64__)
    check(emb_kernels_for(EMB_SIMD_NEON) != NULL, "aarch64 build without the NEON level");
#endif
    check(emb_kernels_init(NULL) == 0 && emb_kernels_get() == best, "init picks the best level");
    check_search(dir);
    check(emb_kernels_init("scalar") == 0 && emb_kernels_get()->level == EMB_SIMD_SCALAR,
          "EMBD_SIMD=scalar narrows");
    check_search(dir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
