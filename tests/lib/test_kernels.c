/*
 * test_kernels.c - every SIMD level this machine has against the scalar oracle, the half
 * conversions bit for bit, and the dispatcher.
 *
 * Inputs are placed so that their last byte is the last byte before a PROT_NONE page: a kernel
 * that reads one value past n (row or query) dies with SIGSEGV instead of passing by luck. The
 * placement also makes most inputs unaligned to the vector width.
 */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "emb.h"
#include "emb_kernels.h"
#include "helpers.h"
#include "kernels_internal.h"

/* Tolerances are relative to the sum of the magnitudes of the terms (sum |a_i * b_i|, or the
 * result itself for squared distances), the quantity float rounding error scales with; the
 * oracle is double, so the whole difference is the kernel's float accumulation.
 *
 * f32: products are fused (exact) and each lane of each accumulator adds at most
 * n / (lanes * accumulators) + 5 terms (n <= 1000, >= 8 lanes: fewer than 130 roundings of
 * u = 2^-24 each in the worst case, 8e-6); 1e-5 sits above that bound, far below a wrong lane. */
#define TOL_F32 1e-5
/* f16: halves widen to float exactly, so the f32 bound applies unchanged. */
#define TOL_F16 1e-5
/* q1: the sign flips are exact, but a block's sum is rounded before it meets d and the product
 * is rounded again into the accumulator: two more roundings per block than f32. */
#define TOL_Q1 2e-5

static const size_t test_ns[] = {0,   1,   2,   3,   7,   8,   9,   15,   16,   17,  31,
                                 32,  33,  63,  64,  65,  127, 128, 129,  191,  200, 255,
                                 256, 257, 300, 384, 511, 513, 768, 1000, 1024, 1031};
#define N_NS (sizeof test_ns / sizeof test_ns[0])

/* ---- guarded buffers ------------------------------------------------------------------- */

typedef struct guarded {
    void *map;
    size_t len;
} guarded;

/* Returns bytes of writable memory ending exactly at a PROT_NONE page. */
static void *guard_alloc(guarded *g, size_t bytes)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t body = bytes ? (bytes + page - 1) / page * page : page;
    g->len = body + page;
    g->map = mmap(NULL, g->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert(g->map != MAP_FAILED, "mmap of %zu bytes", g->len);
    cr_assert(mprotect((uint8_t *)g->map + body, page, PROT_NONE) == 0);
    return (uint8_t *)g->map + body - bytes;
}

static void guard_free(guarded *g)
{
    munmap(g->map, g->len);
}

/* ---- helpers --------------------------------------------------------------------------- */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The same float, bit for bit, or both NaN (whose payloads the levels need not keep). */
static int same_float(float a, float b)
{
    return f32_bits(a) == f32_bits(b) || (isnan(a) && isnan(b));
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Collects the levels this machine offers; returns their count (scalar always included). */
static size_t levels(const emb_kernels **out)
{
    size_t n = 0;
    for (int l = EMB_SIMD_SCALAR; l <= EMB_SIMD_NEON; l++) {
        const emb_kernels *k = emb_kernels_for((emb_simd)l);
        if (k) {
            cr_assert_eq(k->level, (emb_simd)l);
            out[n++] = k;
        }
    }
    return n;
}

static void check_close(const char *what, const char *level, size_t n, float got, float want,
                        double mag, double tol)
{
    const double err = fabs((double)got - (double)want);
    cr_assert(err <= tol * mag + FLT_MIN,
              "%s[%s] n=%zu: got %.9g want %.9g (|err| %.3g > %.3g * %.6g)", what, level, n,
              (double)got, (double)want, err, tol, mag);
}

/* ---- the levels exist ------------------------------------------------------------------ */

Test(kernels, levels_match_cpu)
{
    cr_assert_not_null(emb_kernels_for(EMB_SIMD_SCALAR));
    cr_assert_str_eq(emb_kernels_for(EMB_SIMD_SCALAR)->name, "scalar");
#if defined(__x86_64__)
    unsigned eax, ebx, ecx, edx;
    __builtin_cpu_init();
    const int f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    const int avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                       __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    cr_assert_eq(emb_kernels_for(EMB_SIMD_AVX2) != NULL, avx2);
    cr_assert_eq(emb_kernels_for(EMB_SIMD_AVX512) != NULL, avx512);
    if (avx2)
        cr_assert_str_eq(emb_kernels_for(EMB_SIMD_AVX2)->name, "avx2");
    if (avx512)
        cr_assert_str_eq(emb_kernels_for(EMB_SIMD_AVX512)->name, "avx512");
    cr_assert_null(emb_kernels_for(EMB_SIMD_NEON));
#endif
}

/* ---- scoring kernels against the oracle ------------------------------------------------ */

Test(kernels, scalar_hand_values)
{
    const float a[3] = {1.0f, 2.0f, 3.0f}, b[3] = {4.0f, -5.0f, 6.0f};
    uint16_t h[3];
    emb_f32_to_f16_scalar(a, h, 3);
    cr_assert_eq(emb_dot_f32_scalar(a, b, 3), 12.0f);
    cr_assert_eq(emb_l2sq_f32_scalar(a, b, 3), 9.0f + 49.0f + 9.0f);
    cr_assert_eq(emb_dot_f16_scalar(h, b, 3), 12.0f);
    cr_assert_eq(emb_l2sq_f16_scalar(h, b, 3), 67.0f);
    cr_assert_eq(emb_dot_f32_scalar(a, b, 0), 0.0f);
}

Test(kernels, f32_all_levels_match_scalar)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    uint64_t seed = 0x5eed0001;
    for (size_t t = 0; t < N_NS; t++) {
        for (int rep = 0; rep < 3; rep++) {
            const size_t n = test_ns[t];
            guarded ga, gb;
            float *a = guard_alloc(&ga, n * sizeof *a), *b = guard_alloc(&gb, n * sizeof *b);
            th_rand_vec(&seed, a, n);
            th_rand_vec(&seed, b, n);
            double mag = 0.0;
            for (size_t i = 0; i < n; i++)
                mag += fabs((double)a[i] * b[i]);
            const float dot = emb_dot_f32_scalar(a, b, n), l2 = emb_l2sq_f32_scalar(a, b, n);
            for (size_t l = 0; l < nl; l++) {
                check_close("dot_f32", lv[l]->name, n, lv[l]->dot_f32(a, b, n), dot, mag, TOL_F32);
                check_close("l2sq_f32", lv[l]->name, n, lv[l]->l2sq_f32(a, b, n), l2, l2, TOL_F32);
            }
            guard_free(&ga);
            guard_free(&gb);
        }
    }
}

Test(kernels, f16_all_levels_match_scalar)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    uint64_t seed = 0x5eed0002;
    for (size_t t = 0; t < N_NS; t++) {
        for (int rep = 0; rep < 3; rep++) {
            const size_t n = test_ns[t];
            guarded gr, gq;
            uint16_t *row = guard_alloc(&gr, n * sizeof *row);
            float *q = guard_alloc(&gq, n * sizeof *q);
            float *x = malloc((n + 1) * sizeof *x);
            th_rand_vec(&seed, x, n);
            th_rand_vec(&seed, q, n);
            emb_f32_to_f16_scalar(x, row, n);
            double mag = 0.0;
            for (size_t i = 0; i < n; i++)
                mag += fabs((double)emb_f16_to_f32(row[i]) * q[i]);
            const float dot = emb_dot_f16_scalar(row, q, n), l2 = emb_l2sq_f16_scalar(row, q, n);
            for (size_t l = 0; l < nl; l++) {
                check_close("dot_f16", lv[l]->name, n, lv[l]->dot_f16(row, q, n), dot, mag,
                            TOL_F16);
                check_close("l2sq_f16", lv[l]->name, n, lv[l]->l2sq_f16(row, q, n), l2, l2,
                            TOL_F16);
            }
            free(x);
            guard_free(&gr);
            guard_free(&gq);
        }
    }
}

Test(kernels, q1_all_levels_match_scalar)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    uint64_t seed = 0x5eed0003;
    for (size_t t = 0; t < N_NS; t++) {
        for (int rep = 0; rep < 3; rep++) {
            const size_t n = test_ns[t];
            const size_t nb = emb_q1_blocks((uint32_t)n);
            guarded gr, gq;
            uint8_t *blocks = guard_alloc(&gr, nb * EMB_Q1_BLOCK);
            float *q = guard_alloc(&gq, n * sizeof *q);
            float *x = malloc((n + 1) * sizeof *x);
            th_rand_vec(&seed, x, n);
            th_rand_vec(&seed, q, n);
            emb_q1_encode(x, (uint32_t)n, blocks);
            if (rep == 2 && nb) {
                /* Garbage in the padding bits must not change the result. */
                const size_t used = n - (nb - 1) * EMB_Q1_GROUP;
                uint8_t *qs = blocks + (nb - 1) * EMB_Q1_BLOCK + 2;
                for (size_t j = used; j < EMB_Q1_GROUP; j++)
                    qs[j / 8] ^= (uint8_t)(1u << (j % 8)) & (uint8_t)th_rand_u64(&seed);
            }
            double mag = 0.0;
            for (size_t i = 0; i < n; i++) {
                const uint8_t *blk = blocks + i / EMB_Q1_GROUP * EMB_Q1_BLOCK;
                const float d = emb_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8));
                mag += fabs((double)d * q[i]);
            }
            const float dot = emb_dot_q1_scalar(blocks, q, n);
            for (size_t l = 0; l < nl; l++)
                check_close("dot_q1", lv[l]->name, n, lv[l]->dot_q1(blocks, q, n), dot, mag,
                            TOL_Q1);
            free(x);
            guard_free(&gr);
            guard_free(&gq);
        }
    }
}

/* Large magnitudes and cancellation: the tolerance is relative to the magnitude sum, so a
 * result near zero must still be within rounding of the oracle. */
Test(kernels, cancellation_all_levels)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    enum { N = 1000 };
    static float a[N], b[N];
    static uint16_t h[N];
    double mag = 0.0;
    for (size_t i = 0; i < N; i++) {
        a[i] = (i % 2 ? -1.0f : 1.0f) * (float)(1000 + i);
        b[i] = 1.0f + (float)(i % 7) * 0.25f;
        mag += fabs((double)a[i] * b[i]);
    }
    emb_f32_to_f16_scalar(a, h, N);
    for (size_t l = 0; l < nl; l++) {
        check_close("dot_f32", lv[l]->name, N, lv[l]->dot_f32(a, b, N), emb_dot_f32_scalar(a, b, N),
                    mag, TOL_F32);
        check_close("dot_f16", lv[l]->name, N, lv[l]->dot_f16(h, b, N), emb_dot_f16_scalar(h, b, N),
                    mag, TOL_F16);
    }
}

/* ---- many rows, one query -------------------------------------------------------------- */

/* Row counts that cross every grouping a rows kernel may use (16-row groups). */
static const size_t test_nrows[] = {1, 2, 15, 16, 17, 31, 33, 40};
#define N_NROWS (sizeof test_nrows / sizeof test_nrows[0])

/* nrows random rows of every codec at the store's strides, the last row's last byte against a
 * guard page; odd rows of q1 have every padding bit of their last block set. */
typedef struct rowset {
    guarded g32, g16, gq1;
    uint8_t *f32, *f16, *q1;
    size_t s32, s16, sq1;
} rowset;

static void rowset_make(rowset *rs, uint64_t *seed, size_t nrows, size_t n)
{
    rs->s32 = (n * 4 + 63) / 64 * 64;
    rs->s16 = (n * 2 + 63) / 64 * 64;
    rs->sq1 = emb_q1_blocks((uint32_t)n) * EMB_Q1_BLOCK;
    /* The last row is only n values long: nothing after it is readable. */
    rs->f32 = guard_alloc(&rs->g32, (nrows - 1) * rs->s32 + n * 4);
    rs->f16 = guard_alloc(&rs->g16, (nrows - 1) * rs->s16 + n * 2);
    rs->q1 = guard_alloc(&rs->gq1, nrows * rs->sq1);
    float *x = malloc((n + 1) * sizeof *x);
    for (size_t r = 0; r < nrows; r++) {
        th_rand_vec(seed, x, n);
        memcpy(rs->f32 + r * rs->s32, x, n * 4);
        emb_f32_to_f16_scalar(x, (uint16_t *)(void *)(rs->f16 + r * rs->s16), n);
        emb_q1_encode(x, (uint32_t)n, rs->q1 + r * rs->sq1);
        const size_t nb = emb_q1_blocks((uint32_t)n);
        if (r % 2 && nb) {
            uint8_t *qs = rs->q1 + r * rs->sq1 + (nb - 1) * EMB_Q1_BLOCK + 2;
            for (size_t j = n - (nb - 1) * EMB_Q1_GROUP; j < EMB_Q1_GROUP; j++)
                qs[j / 8] |= (uint8_t)(1u << (j % 8));
        }
    }
    free(x);
}

static void rowset_free(rowset *rs)
{
    guard_free(&rs->g32);
    guard_free(&rs->g16);
    guard_free(&rs->gq1);
}

/* Every level's many-row kernels return, bit for bit, what its one-row kernels return, and a
 * q1 x q8 or q1 x q1 row scores the same whatever rows share its call. The dimensions around
 * 384 cross the AVX-512 f16 scan's switch to 384 query values held in registers, with and
 * without its 16-value and masked tails. */
Test(kernels, rows_kernels_bit_identical_to_one_row)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    uint64_t seed = 0x5eed0010;
    static const size_t ns[] = {1, 7, 16, 100, 128, 129, 300, 383, 384, 401, 447, 449, 768};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        for (size_t u = 0; u < N_NROWS; u++) {
            const size_t n = ns[t], nrows = test_nrows[u];
            rowset rs;
            rowset_make(&rs, &seed, nrows, n);
            guarded gq;
            float *q = guard_alloc(&gq, n * sizeof *q);
            th_rand_vec(&seed, q, n);
            uint64_t qbits[2 * 6];
            float qd[6];
            emb_q1_encode_query(q, n, qbits, qd);
            float *out = malloc(nrows * sizeof *out), one;
            for (size_t l = 0; l < nl; l++) {
                const emb_kernels *k = lv[l];
#define CHECK_ROWS(rowsfn, onefn, base, stride, type)                                              \
    do {                                                                                           \
        k->rowsfn(base, stride, nrows, q, n, out);                                                 \
        for (size_t r = 0; r < nrows; r++) {                                                       \
            one = k->onefn((const type *)(const void *)(base + r * stride), q, n);                 \
            cr_assert_eq(f32_bits(out[r]), f32_bits(one), "%s[%s] n=%zu nrows=%zu row %zu",        \
                         #rowsfn, k->name, n, nrows, r);                                           \
        }                                                                                          \
    } while (0)
                CHECK_ROWS(dot_f32_rows, dot_f32, rs.f32, rs.s32, float);
                CHECK_ROWS(l2sq_f32_rows, l2sq_f32, rs.f32, rs.s32, float);
                CHECK_ROWS(dot_f16_rows, dot_f16, rs.f16, rs.s16, uint16_t);
                CHECK_ROWS(l2sq_f16_rows, l2sq_f16, rs.f16, rs.s16, uint16_t);
                CHECK_ROWS(dot_q1_rows, dot_q1, rs.q1, rs.sq1, uint8_t);
#undef CHECK_ROWS
                k->dot_q1q8_rows(rs.q1, rs.sq1, nrows, q, n, out);
                for (size_t r = 0; r < nrows; r++) {
                    k->dot_q1q8_rows(rs.q1 + r * rs.sq1, rs.sq1, 1, q, n, &one);
                    cr_assert_eq(f32_bits(out[r]), f32_bits(one),
                                 "q1q8[%s] n=%zu nrows=%zu row %zu", k->name, n, nrows, r);
                }
                k->dot_q1q1_rows(rs.q1, rs.sq1, nrows, qbits, qd, n, out);
                for (size_t r = 0; r < nrows; r++) {
                    k->dot_q1q1_rows(rs.q1 + r * rs.sq1, rs.sq1, 1, qbits, qd, n, &one);
                    cr_assert_eq(f32_bits(out[r]), f32_bits(one),
                                 "q1q1[%s] n=%zu nrows=%zu row %zu", k->name, n, nrows, r);
                }
            }
            free(out);
            guard_free(&gq);
            rowset_free(&rs);
        }
    }
}

/* q1 x q8 is integer arithmetic plus one stated float step per block: every level returns the
 * scalar's bits exactly, across the 4096-value quantisation groups too; and the scalar is the
 * documented arithmetic, redone here in double. */
Test(kernels, q1q8_all_levels_bit_exact)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    uint64_t seed = 0x5eed0011;
    static const size_t ns[] = {1,   2,   64,   127,  128,  129,  255,
                                256, 768, 1000, 4096, 4097, 4300, 9000};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        const size_t n = ns[t], nrows = t % 2 ? 37 : 16;
        rowset rs;
        rowset_make(&rs, &seed, nrows, n);
        guarded gq;
        float *q = guard_alloc(&gq, n * sizeof *q);
        th_rand_vec(&seed, q, n);
        if (t % 3 == 0)
            memset(q, 0, (n < 128 ? n : 128) * sizeof *q); /* an all-zero block */
        float *want = malloc(nrows * sizeof *want), *got = malloc(nrows * sizeof *got);
        emb_dot_q1q8_rows_scalar(rs.q1, rs.sq1, nrows, q, n, want);
        for (size_t l = 0; l < nl; l++) {
            lv[l]->dot_q1q8_rows(rs.q1, rs.sq1, nrows, q, n, got);
            for (size_t r = 0; r < nrows; r++)
                cr_assert_eq(f32_bits(got[r]), f32_bits(want[r]), "[%s] n=%zu row %zu: %a want %a",
                             lv[l]->name, n, r, (double)got[r], (double)want[r]);
        }
#if defined(__x86_64__)
        /* Both AVX-512 builds of the kernel (BW and VNNI), whichever of the two the dispatcher
         * hands out on this CPU. */
        const emb_kernels *both[2] = {&emb__kernels_avx512, &emb__kernels_avx512_vnni};
        for (int v = 0; v < 2 && emb_kernels_for(EMB_SIMD_AVX512); v++) {
            if (v == 1 && !__builtin_cpu_supports("avx512vnni"))
                continue;
            both[v]->dot_q1q8_rows(rs.q1, rs.sq1, nrows, q, n, got);
            for (size_t r = 0; r < nrows; r++)
                cr_assert_eq(f32_bits(got[r]), f32_bits(want[r]), "[avx512 %s] n=%zu row %zu",
                             v ? "vnni" : "bw", n, r);
        }
#endif
        for (size_t r = 0; r < nrows; r++) {
            const uint8_t *blk = rs.q1 + r * rs.sq1;
            double ref = 0, mag = 0;
            for (size_t j0 = 0; j0 < n; j0 += 128, blk += EMB_Q1_BLOCK) {
                const size_t cnt = n - j0 < 128 ? n - j0 : 128;
                float m = 0;
                for (size_t j = 0; j < cnt; j++)
                    m = fmaxf(m, fabsf(q[j0 + j]));
                const double d = emb_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8));
                long v = 0;
                for (size_t j = 0; j < cnt && m > 0; j++) {
                    const long i = lrintf(q[j0 + j] * (127.0f / m));
                    cr_assert(i >= -127 && i <= 127);
                    v += (blk[2 + j / 8] >> (j % 8) & 1) ? i : -i;
                    mag += fabs(d * (double)i * m / 127.0);
                }
                ref += d * (double)v * (m / 127.0f);
            }
            cr_assert(fabs(want[r] - ref) <= 1e-5 * mag + FLT_MIN, "n=%zu row %zu: %g vs %g", n, r,
                      (double)want[r], ref);
        }
        free(want);
        free(got);
        guard_free(&gq);
        rowset_free(&rs);
    }
}

/* ---- q1 x q1 ---------------------------------------------------------------------------- */

/* Every q1 x q1 kernel this machine can run: each level's, and on x86 each of the AVX-512
 * builds (BW and VPOPCNTDQ, with and without VNNI) the CPU has, whichever the dispatcher picks. */
static size_t q1q1_kernels(const emb_kernels **out, const char **names)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    size_t n = 0;
    for (size_t l = 0; l < nl; l++) {
        names[n] = lv[l]->name;
        out[n++] = lv[l];
    }
#if defined(__x86_64__)
    if (emb_kernels_for(EMB_SIMD_AVX512)) {
        const int vnni = __builtin_cpu_supports("avx512vnni");
        const int vpop = __builtin_cpu_supports("avx512vpopcntdq");
        const struct {
            const emb_kernels *k;
            const char *name;
            int ok;
        } all[] = {{&emb__kernels_avx512, "avx512 bw", 1},
                   {&emb__kernels_avx512_vnni, "avx512 vnni", vnni},
                   {&emb__kernels_avx512_vpopcnt, "avx512 vpopcnt", vpop},
                   {&emb__kernels_avx512_vnni_vpopcnt, "avx512 vnni+vpopcnt", vnni && vpop}};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            if (all[i].ok) {
                names[n] = all[i].name;
                out[n++] = all[i].k;
            }
    }
#endif
    return n;
}

/* The documented arithmetic, redone here without popcount: per block, v = sum over the block's
 * values of s_j t_j (+1 when the signs agree, -1 when not), then the fused sum in block order. */
static float q1q1_reference(const uint8_t *blk, const uint64_t *qbits, const float *qd, size_t n)
{
    float tot = 0.0f;
    for (size_t j0 = 0, b = 0; j0 < n; j0 += 128, b++, blk += EMB_Q1_BLOCK) {
        const size_t cnt = n - j0 < 128 ? n - j0 : 128;
        int v = 0;
        for (size_t j = 0; j < cnt; j++) {
            const int r = blk[2 + j / 8] >> (j % 8) & 1;
            const int t = (int)(qbits[2 * b + j / 64] >> (j % 64) & 1);
            v += r == t ? 1 : -1;
        }
        const float d = emb_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8));
        tot = fmaf(d * qd[b], (float)v, tot);
    }
    return tot;
}

/* Compares every kernel with the scalar twin, bit for bit (NaN with NaN), on nrows rows at
 * stride bytes (the last row's last byte against a guard page), and the scalar with the
 * reference. */
static void q1q1_check(const char *what, const uint8_t *rows, size_t stride, size_t nrows,
                       const float *q, size_t n)
{
    const emb_kernels *ks[8];
    const char *names[8];
    const size_t nk = q1q1_kernels(ks, names);
    const size_t nb = emb_q1_blocks((uint32_t)n);
    uint64_t *qbits = malloc(2 * nb * sizeof *qbits);
    float *qd = malloc(nb * sizeof *qd);
    float *want = malloc(nrows * sizeof *want), *got = malloc((nrows + 1) * sizeof *got);
    float *n2 = malloc((nrows + 1) * sizeof *n2);
    cr_assert(qbits && qd && want && got && n2);
    emb_q1_encode_query(q, n, qbits, qd);
    emb_dot_q1q1_rows_scalar(rows, stride, nrows, qbits, qd, n, want);
    for (size_t r = 0; r < nrows; r++) {
        const float ref = q1q1_reference(rows + r * stride, qbits, qd, n);
        cr_assert(same_float(want[r], ref), "%s n=%zu row %zu: scalar %a, reference %a", what, n, r,
                  (double)want[r], (double)ref);
    }
    for (size_t i = 0; i < nk; i++) {
        got[nrows] = 42.0f;
        ks[i]->dot_q1q1_rows(rows, stride, nrows, qbits, qd, n, got);
        cr_assert_eq(got[nrows], 42.0f, "%s [%s] wrote past nrows", what, names[i]);
        for (size_t r = 0; r < nrows; r++)
            cr_assert(same_float(got[r], want[r]),
                      "%s [%s] n=%zu stride %zu nrows %zu row %zu: %a want %a", what, names[i], n,
                      stride, nrows, r, (double)got[r], (double)want[r]);
    }
    /* The same rows interleaved (as a store's rows_q1i section holds them, the last group's
     * tiles against a guard page), every level and the scalar twin, over ranges that start and
     * end inside groups and on their edges. */
    const size_t ng = (nrows + EMB_Q1I_ROWS - 1) / EMB_Q1I_ROWS, tiles = nb * EMB_Q1I_TILE;
    guarded gi;
    uint8_t *ilv = guard_alloc(&gi, ng * tiles);
    for (size_t g = 0; g < ng; g++) {
        const size_t live =
            nrows - g * EMB_Q1I_ROWS < EMB_Q1I_ROWS ? nrows - g * EMB_Q1I_ROWS : EMB_Q1I_ROWS;
        emb_q1_interleave(rows + g * EMB_Q1I_ROWS * stride, stride, live, (uint32_t)n,
                          ilv + g * tiles);
    }
    const size_t spans[][2] = {{0, nrows},
                               {1, nrows - 1},
                               {nrows / 2, nrows - nrows / 2},
                               {nrows - 1, 1},
                               {0, 1},
                               {31 % nrows, nrows - 31 % nrows},
                               {32 % nrows, nrows - 32 % nrows}};
    for (size_t i = 0; i <= nk; i++) {
        const char *name = i < nk ? names[i] : "scalar twin";
        for (size_t sp = 0; sp < sizeof spans / sizeof spans[0]; sp++) {
            const size_t r0 = spans[sp][0], len = spans[sp][1];
            if (len == 0)
                continue;
            /* One-block rows also ask for the norms (every other span), which must be
             * emb_q1_norm2's bits; the kernel must not write past len in either array. */
            const int with_n2 = n <= 128 && sp % 2 == 0;
            got[len] = 42.0f;
            n2[len] = 42.0f;
            (i < nk ? ks[i]->dot_q1q1_ilv : emb_dot_q1q1_ilv_scalar)(ilv, r0, len, qbits, qd, n,
                                                                     got, with_n2 ? n2 : NULL);
            cr_assert_eq(got[len], 42.0f, "%s ilv [%s] wrote past nrows", what, name);
            cr_assert_eq(n2[len], 42.0f, "%s ilv [%s] wrote norms past nrows", what, name);
            for (size_t r = 0; r < len; r++) {
                cr_assert(same_float(got[r], want[r0 + r]),
                          "%s ilv [%s] n=%zu nrows %zu rows [%zu, +%zu) row %zu: %a want %a", what,
                          name, n, nrows, r0, len, r0 + r, (double)got[r], (double)want[r0 + r]);
                if (with_n2) {
                    const float w2 = emb_q1_norm2(rows + (r0 + r) * stride, (uint32_t)n);
                    cr_assert(same_float(n2[r], w2), "%s ilv [%s] n=%zu row %zu: norm %a want %a",
                              what, name, n, r0 + r, (double)n2[r], (double)w2);
                }
            }
        }
    }
    guard_free(&gi);
    free(n2);
    free(qbits);
    free(qd);
    free(want);
    free(got);
}

/* Random rows and queries at every dimension and row count that crosses a grouping (16-row
 * groups, the one-block fast path and the general one), odd rows with every padding bit set;
 * the same rows again at strides that are not 18 x blocks (odd, unaligned), the last row's last
 * byte against a guard page in every case. */
Test(kernels, q1q1_all_levels_bit_exact)
{
    uint64_t seed = 0x5eed0021;
    static const size_t ns[] = {1, 2, 7, 63, 64, 65, 100, 127, 128, 129, 255, 256, 300, 768, 1000};
    static const size_t nrs[] = {1, 2, 15, 16, 17, 31, 32, 33, 40, 64, 100};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        for (size_t u = 0; u < sizeof nrs / sizeof nrs[0]; u++) {
            const size_t n = ns[t], nrows = nrs[u];
            rowset rs;
            rowset_make(&rs, &seed, nrows, n);
            guarded gq;
            float *q = guard_alloc(&gq, n * sizeof *q);
            th_rand_vec(&seed, q, n);
            char what[64];
            snprintf(what, sizeof what, "packed");
            q1q1_check(what, rs.q1, rs.sq1, nrows, q, n);
            static const size_t extra[] = {1, 7, 46};
            const size_t e = extra[(t + u) % 3];
            const size_t stride = rs.sq1 + e;
            guarded gs;
            uint8_t *sp = guard_alloc(&gs, (nrows - 1) * stride + rs.sq1);
            for (size_t r = 0; r < nrows; r++) {
                memcpy(sp + r * stride, rs.q1 + r * rs.sq1, rs.sq1);
                if (r + 1 < nrows)
                    memset(sp + r * stride + rs.sq1, 0xa5, e); /* bytes between rows */
            }
            snprintf(what, sizeof what, "stride +%zu", e);
            q1q1_check(what, sp, stride, nrows, q, n);
            guard_free(&gs);
            guard_free(&gq);
            rowset_free(&rs);
        }
    }
}

/* Adversarial bits and scales: rows of all ones, all zeros, the query's own signs and their
 * complement (the extreme counts 0 and cnt), padding bits set; row scales zero, -0, the largest
 * fp16 (65504), the smallest subnormal, negative, infinite; queries zero, of one sign, huge
 * (near FLT_MAX: the product of scales overflows) and subnormal. */
Test(kernels, q1q1_adversarial_bits_and_scales)
{
    static const uint16_t scales[] = {0x0000, 0x8000, 0x7bff, 0x0001, 0x03ff, 0x3c00,
                                      0xbc00, 0x7c00, 0x0400, 0x5a3c, 0x1234, 0x2e66};
    static const size_t ns[] = {1, 64, 100, 128, 200, 256, 385};
    uint64_t seed = 0x5eed0022;
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        const size_t n = ns[t], nb = emb_q1_blocks((uint32_t)n), stride = nb * EMB_Q1_BLOCK;
        const size_t nrows = 37;
        float *q = malloc(n * sizeof *q);
        uint64_t *qbits = malloc(2 * nb * sizeof *qbits);
        float *qd = malloc(nb * sizeof *qd);
        guarded g;
        uint8_t *rows = guard_alloc(&g, nrows * stride);
        for (int qk = 0; qk < 5; qk++) {
            th_rand_vec(&seed, q, n);
            for (size_t j = 0; j < n; j++) {
                if (qk == 1)
                    q[j] = 0.0f;
                else if (qk == 2)
                    q[j] = fabsf(q[j]) + 1.0f;
                else if (qk == 3)
                    q[j] *= 1.5e38f;
                else if (qk == 4)
                    q[j] *= 1e-41f;
            }
            emb_q1_encode_query(q, n, qbits, qd);
            for (size_t r = 0; r < nrows; r++) {
                for (size_t b = 0; b < nb; b++) {
                    uint8_t *blk = rows + r * stride + b * EMB_Q1_BLOCK;
                    const uint16_t d = scales[(r + b) % (sizeof scales / sizeof scales[0])];
                    blk[0] = (uint8_t)(d & 0xff);
                    blk[1] = (uint8_t)(d >> 8);
                    for (size_t i = 0; i < 16; i++) {
                        const uint8_t qb = (uint8_t)(qbits[2 * b + i / 8] >> (8 * (i % 8)));
                        const int kind = (int)((r / 3 + b) % 5);
                        blk[2 + i] = kind == 0   ? 0xff
                                     : kind == 1 ? 0x00
                                     : kind == 2 ? qb
                                     : kind == 3 ? (uint8_t)~qb
                                                 : (uint8_t)th_rand_u64(&seed);
                    }
                }
            }
            q1q1_check("adversarial", rows, stride, nrows, q, n);
        }
        guard_free(&g);
        free(q);
        free(qbits);
        free(qd);
    }
}

/* The query's 1-bit form: the signs of emb_q1_encode (x >= 0, so -0 is +), bits past n zero,
 * and the mean |q| per block in float, finite for any finite query. */
Test(kernels, q1q1_query_encoding)
{
    static const size_t ns[] = {1, 5, 64, 127, 128, 129, 300};
    uint64_t seed = 0x5eed0023;
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        const size_t n = ns[t], nb = emb_q1_blocks((uint32_t)n);
        float *q = malloc(n * sizeof *q);
        uint8_t *enc = malloc(nb * EMB_Q1_BLOCK);
        uint64_t qbits[6];
        float qd[3];
        th_rand_vec(&seed, q, n);
        q[0] = -0.0f;
        emb_q1_encode(q, (uint32_t)n, enc);
        emb_q1_encode_query(q, n, qbits, qd);
        for (size_t b = 0; b < nb; b++) {
            const size_t cnt = n - 128 * b < 128 ? n - 128 * b : 128;
            double sum = 0;
            for (size_t j = 0; j < 128; j++) {
                const int want = j < cnt ? enc[b * EMB_Q1_BLOCK + 2 + j / 8] >> (j % 8) & 1 : 0;
                cr_assert_eq((int)(qbits[2 * b + j / 64] >> (j % 64) & 1), want,
                             "n=%zu block %zu bit %zu", n, b, j);
                if (j < cnt)
                    sum += fabs((double)q[128 * b + j]);
            }
            cr_assert_eq(f32_bits(qd[b]), f32_bits((float)(sum / (double)cnt)));
        }
        for (size_t j = 0; j < n; j++)
            q[j] = j % 2 ? FLT_MAX : -FLT_MAX;
        emb_q1_encode_query(q, n, qbits, qd);
        for (size_t b = 0; b < nb; b++)
            cr_assert_eq(qd[b], FLT_MAX, "n=%zu block %zu: %g", n, b, (double)qd[b]);
        free(q);
        free(enc);
    }
}

/* The scan's filter: every level finds the first value >= t exactly where the scalar does, at
 * every length and position (tails of every width included), with NaN never qualifying, values
 * equal to t qualifying, -inf thresholds admitting everything but NaN, and no read past n (the
 * array ends against a guard page). */
Test(kernels, first_at_least_all_levels)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    uint64_t seed = 0x5eed0024;
    for (size_t n = 0; n <= 200; n++) {
        guarded g;
        float *x = guard_alloc(&g, n * sizeof *x);
        for (int trial = 0; trial < 12; trial++) {
            for (size_t i = 0; i < n; i++)
                x[i] = th_rand_unit(&seed);
            float t = 2.0f; /* nothing qualifies */
            if (n && trial % 4 != 0) {
                /* One qualifying value at a random position, NaNs and equal values around. */
                const size_t at = (size_t)(th_rand_u64(&seed) % n);
                for (size_t i = 0; i < at; i++)
                    if (th_rand_u64(&seed) % 3 == 0)
                        x[i] = NAN;
                x[at] = trial % 4 == 1 ? 2.0f : trial % 4 == 2 ? INFINITY : 3.0f;
                t = trial % 4 == 3 ? 3.0f : 2.0f;
            }
            if (trial == 11) /* -inf: the first value that is not NaN */
                t = -INFINITY;
            const size_t want = emb_first_at_least_scalar(x, n, t);
            for (size_t i = 0; i < want; i++)
                cr_assert(!(x[i] >= t), "scalar n=%zu: skipped %zu", n, i);
            cr_assert(want == n || x[want] >= t);
            for (size_t l = 0; l < nl; l++)
                cr_assert_eq(lv[l]->first_at_least(x, n, t), want, "[%s] n=%zu trial %d",
                             lv[l]->name, n, trial);
        }
        guard_free(&g);
    }
}

/* Cosines from dot products: every level writes the scalar's bits at every length (tails of
 * every width), with zero, subnormal, huge, infinite and NaN norms and dot products, zero and
 * tiny query norms (0 where the denominator is not > 0), and reads nothing past n. */
Test(kernels, cos_rows_all_levels_bit_exact)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    static const float odd[] = {0.0f, -0.0f, 1e-45f, 1e-40f, 1e30f, 3.4e38f, INFINITY, NAN};
    uint64_t seed = 0x5eed0025;
    for (size_t n = 0; n <= 70; n++) {
        guarded gx, gn;
        float *x = guard_alloc(&gx, n * sizeof *x), *n2 = guard_alloc(&gn, n * sizeof *n2);
        float *want = malloc((n + 1) * sizeof *want), *orig = malloc((n + 1) * sizeof *orig);
        cr_assert(want && orig);
        for (int trial = 0; trial < 8; trial++) {
            for (size_t i = 0; i < n; i++) {
                x[i] = th_rand_unit(&seed) * 100.0f;
                n2[i] = th_rand_unit(&seed) * th_rand_unit(&seed) * 1e4f;
                if (trial > 0 && th_rand_u64(&seed) % 5 == 0)
                    n2[i] = odd[th_rand_u64(&seed) % 8];
                if (trial > 0 && th_rand_u64(&seed) % 7 == 0)
                    x[i] = odd[th_rand_u64(&seed) % 8] * (i % 2 ? -1.0f : 1.0f);
            }
            const float qn = trial == 6 ? 0.0f : trial == 7 ? 1e-30f : th_rand_unit(&seed) + 1.5f;
            memcpy(want, x, n * sizeof *x);
            emb_cos_rows_scalar(want, n2, qn, n);
            for (size_t i = 0; i < n; i++) {
                const float den = qn * sqrtf(n2[i]);
                const float ref = den > 0 ? x[i] / den : 0.0f;
                cr_assert(same_float(ref, want[i]), "scalar n=%zu i=%zu", n, i);
            }
            memcpy(orig, x, n * sizeof *x);
            for (size_t l = 0; l < nl; l++) {
                memcpy(x, orig, n * sizeof *x); /* in place, in the guarded buffer */
                lv[l]->cos_rows(x, n2, qn, n);
                for (size_t i = 0; i < n; i++)
                    cr_assert(same_float(x[i], want[i]), "[%s] n=%zu i=%zu trial %d: %a against %a",
                              lv[l]->name, n, i, trial, (double)x[i], (double)want[i]);
            }
        }
        free(want);
        free(orig);
        guard_free(&gx);
        guard_free(&gn);
    }
}

/* One-block q1 norms: every level writes the scalar twin's bits for every f16 scale (NaN and
 * infinite ones included), at strides 18 and 36, at every count up to 40 (tails of every
 * width), reading nothing past the last row's 4 first bytes (the rows end against a guard
 * page). */
Test(kernels, q1_norm2_rows_all_levels_bit_exact)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    static const size_t strides[] = {EMB_Q1_BLOCK, 2 * EMB_Q1_BLOCK};
    static const size_t dims[] = {1, 77, 128};
    float *want = malloc(65536 * sizeof *want), *got = malloc(65536 * sizeof *got);
    cr_assert(want && got);
    for (size_t si = 0; si < sizeof strides / sizeof strides[0]; si++) {
        const size_t stride = strides[si];
        for (size_t pass = 0; pass <= 40; pass++) {
            /* Counts 0..39 with scattered scales, then every scale once. */
            const size_t total = pass == 40 ? 65536 : pass;
            guarded g;
            uint8_t *rows = guard_alloc(&g, total ? (total - 1) * stride + 4 : 0);
            for (size_t i = 0; i < total; i++) {
                const uint16_t h = (uint16_t)(total == 65536 ? i : i * 2654435761u >> 7);
                memcpy(rows + i * stride, &h, sizeof h);
            }
            for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
                emb_q1_norm2_rows_scalar(rows, stride, total, dims[di], want);
                for (size_t l = 0; l < nl; l++) {
                    lv[l]->q1_norm2_rows(rows, stride, total, dims[di], got);
                    for (size_t i = 0; i < total; i++)
                        cr_assert(same_float(got[i], want[i]),
                                  "[%s] stride %zu rows %zu dim %zu row %zu: %a against %a",
                                  lv[l]->name, stride, total, dims[di], i, (double)got[i],
                                  (double)want[i]);
                }
            }
            guard_free(&g);
        }
    }
    free(want);
    free(got);
}

/* q1 -> f32 (for batches): every level writes emb_q1_decode's bits, -0 for a zero scale
 * included, and nothing past n. */
Test(kernels, q1_to_f32_all_levels_bit_exact)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    uint64_t seed = 0x5eed0013;
    for (size_t t = 0; t < N_NS; t++) {
        const size_t n = test_ns[t];
        rowset rs;
        rowset_make(&rs, &seed, 2, n);
        if (n >= 128)
            memset(rs.q1, 0, 2); /* a zero scale */
        float *want = malloc((n + 1) * sizeof *want), *got = malloc((n + 1) * sizeof *got);
        emb_q1_decode(rs.q1 + rs.sq1, (uint32_t)n, want);
        for (size_t l = 0; l < nl; l++) {
            got[n] = 42.0f;
            lv[l]->q1_to_f32(rs.q1 + rs.sq1, got, n);
            cr_assert_eq(got[n], 42.0f, "[%s] wrote past n", lv[l]->name);
            cr_assert_eq(memcmp(got, want, n * sizeof *got), 0, "[%s] n=%zu", lv[l]->name, n);
            emb_q1_decode(rs.q1, (uint32_t)n, want);
            lv[l]->q1_to_f32(rs.q1, got, n);
            cr_assert_eq(memcmp(got, want, n * sizeof *got), 0, "[%s] n=%zu", lv[l]->name, n);
            emb_q1_decode(rs.q1 + rs.sq1, (uint32_t)n, want);
        }
        free(want);
        free(got);
        rowset_free(&rs);
    }
}

Test(kernels, q8_rounding_rule)
{
    float q[128] = {0};
    int8_t out[128];
    int32_t isum = 1;
    cr_assert_eq(emb__q8_block(q, 128, out, &isum), 0.0f, "all-zero block: delta 0");
    cr_assert_eq(isum, 0);
    /* max |q| = 127: the values themselves; halves go to the even neighbour. */
    const float in[] = {127.0f, -127.0f, 2.5f, -2.5f, 3.5f, 0.5f, -0.5f, 1.49f, 126.5f};
    const int want[] = {127, -127, 2, -2, 4, 0, 0, 1, 126};
    cr_assert_eq(emb__q8_block(in, 9, out, &isum), 1.0f);
    int32_t sum = 0;
    for (int j = 0; j < 9; j++) {
        cr_assert_eq(out[j], want[j], "%g -> %d, want %d", (double)in[j], out[j], want[j]);
        sum += want[j];
    }
    for (int j = 9; j < 128; j++)
        cr_assert_eq(out[j], 0, "values past cnt are zero");
    cr_assert_eq(isum, sum);
    /* The largest magnitude always maps to +-127, however small. */
    const float tiny[] = {1e-30f, -3e-30f, 2e-30f};
    emb__q8_block(tiny, 3, out, &isum);
    cr_assert_eq(out[1], -127);
}

/* ---- batch tile ------------------------------------------------------------------------ */

/* Dot products within the stated bound of the oracle's, and every hit bit equal to "the
 * kernel's own dot product >= the limit rounded as documented"; padding columns never hit. */
Test(kernels, tile_all_levels_match_scalar)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    uint64_t seed = 0x5eed0012;
    static const size_t ns[] = {1, 5, 64, 128, 131, 768};
    static const size_t nqs[] = {1, 15, 16, 17, 31, 32, 33, 64, 70};
    static const size_t nrs[] = {1, 5, 6, 7, 13};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        for (size_t b = 0; b < sizeof nqs / sizeof nqs[0]; b++) {
            const size_t n = ns[a], nq = nqs[b], nr = nrs[(a + b) % 5];
            const size_t ldq = (nq + 15) / 16 * 16, ldx = n + 3, nh = nr * ldq / 16;
            float *x = malloc(nr * ldx * sizeof *x);
            float *qt = aligned_alloc(64, n * ldq * sizeof *qt);
            float *qa = malloc(ldq * 4), *qc = malloc(ldq * 4), *qe = malloc(ldq * 4);
            float *rb = malloc(nr * 4), *rd = malloc(nr * 4), *rf = malloc(nr * 4);
            float *want = malloc(nr * ldq * 4), *got = malloc(nr * ldq * 4);
            uint16_t *hw = malloc(nh * 2), *hg = malloc(nh * 2);
            th_rand_vec(&seed, x, nr * ldx);
            for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < ldq; j++)
                    qt[i * ldq + j] = j < nq ? th_rand_normal(&seed) : 0.0f;
            for (size_t j = 0; j < ldq; j++) {
                qa[j] = th_rand_unit(&seed);
                qc[j] = th_rand_unit(&seed);
                qe[j] = th_rand_unit(&seed) * 3.0f;
            }
            for (size_t r = 0; r < nr; r++) {
                rb[r] = th_rand_unit(&seed);
                rd[r] = th_rand_unit(&seed);
                rf[r] = th_rand_unit(&seed);
            }
            const emb_tile_limits lim = {qa, qc, qe, rb, rd, rf};
            emb_tile_f32_scalar(x, ldx, nr, qt, ldq, nq, n, &lim, want, hw);
            for (size_t l = 0; l < nl; l++) {
                memset(hg, 0xff, nh * 2);
                lv[l]->tile_f32(x, ldx, nr, qt, ldq, nq, n, &lim, got, hg);
                for (size_t r = 0; r < nr; r++) {
                    for (size_t j = 0; j < ldq; j++) {
                        const int bit = hg[r * (ldq / 16) + j / 16] >> (j % 16) & 1;
                        if (j >= nq) {
                            cr_assert_eq(bit, 0, "[%s] padding column %zu hit", lv[l]->name, j);
                            continue;
                        }
                        double mag = 0;
                        for (size_t i = 0; i < n; i++)
                            mag += fabs((double)x[r * ldx + i] * qt[i * ldq + j]);
                        const float g = got[r * ldq + j];
                        /* Both within (n + 2) 2^-24 mag of the exact value. */
                        check_close("tile", lv[l]->name, n, g, want[r * ldq + j], mag,
                                    (double)(n + 2) * 0x1p-23);
                        const float lm = fmaf(-qc[j], rd[r], fmaf(qa[j], rb[r], qe[j])) + rf[r];
                        cr_assert_eq(bit, g >= lm, "[%s] n=%zu nq=%zu r=%zu j=%zu: %g vs %g",
                                     lv[l]->name, n, nq, r, j, (double)g, (double)lm);
                    }
                }
            }
            free(x);
            free(qt);
            free(qa);
            free(qc);
            free(qe);
            free(rb);
            free(rd);
            free(rf);
            free(want);
            free(got);
            free(hw);
            free(hg);
        }
    }
}

/* ---- half conversions ------------------------------------------------------------------ */

Test(kernels, f32_to_f16_known_values)
{
    static const struct {
        float f;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3c00},
        {-2.0f, 0xc000},
        {0.1f, 0x2e66},
        {65504.0f, 0x7bff},
        {65519.99f, 0x7bff},
        {65520.0f, 0x7c00}, /* halfway to 2^16: ties to even, which is infinity */
        {1e6f, 0x7c00},
        {-1e6f, 0xfc00},
        {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00},
        {0x1p-14f, 0x0400},        /* smallest normal */
        {0x1p-24f, 0x0001},        /* smallest subnormal */
        {0x1p-25f, 0x0000},        /* halfway to it: ties to even zero */
        {0x1.000002p-25f, 0x0001}, /* just above halfway */
        {0x1.8p-24f, 0x0002},      /* 1.5 units: ties to even 2 */
        {0x1.4p-23f, 0x0002},      /* 2.5 units: ties to even 2 */
        {0x1.ffep-15f, 0x0400},    /* 1023.5 units: ties to even 1024, the smallest normal */
        {1.0f + 0x1p-11f, 0x3c00}, /* tie, even below */
        {1.0f + 0x3p-11f, 0x3c02}, /* tie, even above */
        {0x1.002002p+0f, 0x3c01},  /* one float ulp above the tie */
        {1e-10f, 0x0000},
        {-1e-10f, 0x8000},
        {FLT_MIN, 0x0000},
        {0x1p-149f, 0x0000}, /* smallest float subnormal */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_assert_eq(emb_f32_to_f16(cases[i].f), cases[i].h, "case %zu: %a -> %#06x, want %#06x", i,
                     (double)cases[i].f, emb_f32_to_f16(cases[i].f), cases[i].h);

    const uint16_t qnan = emb_f32_to_f16(NAN);
    cr_assert_eq(qnan & 0x7e00, 0x7e00, "NaN becomes a quiet NaN: %#06x", qnan);
    const uint16_t snan = emb_f32_to_f16(bits_f32(0x7f800001u));
    cr_assert_eq(snan & 0x7e00, 0x7e00, "signalling NaN with a low payload stays NaN: %#06x", snan);
    cr_assert_eq(emb_f32_to_f16(bits_f32(0xffc00000u)) & 0x8000, 0x8000, "NaN keeps its sign");
}

Test(kernels, f16_round_trip_all_halves)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        const float f = emb_f16_to_f32((uint16_t)h);
        const int nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (nan) {
            cr_assert(isnan(f), "%#06x decodes to NaN", h);
            const uint16_t back = emb_f32_to_f16(f);
            cr_assert_eq(back, h | 0x200, "%#06x: NaN payload and sign kept, quieted", h);
        } else {
            cr_assert_eq(emb_f32_to_f16(f), h, "%#06x -> %a -> %#06x", h, (double)f,
                         emb_f32_to_f16(f));
        }
    }
    /* Spot values of the decoder. */
    cr_assert_eq(emb_f16_to_f32(0x3c00), 1.0f);
    cr_assert_eq(emb_f16_to_f32(0x0001), 0x1p-24f);
    cr_assert_eq(emb_f16_to_f32(0x03ff), 0x3ffp-24f);
    cr_assert_eq(emb_f16_to_f32(0x7bff), 65504.0f);
    cr_assert_eq(emb_f16_to_f32(0xfc00), -INFINITY);
    cr_assert_eq(f32_bits(emb_f16_to_f32(0x8000)), 0x80000000u);
}

/* Rounding at every boundary: the midpoint between two adjacent finite halves goes to the even
 * one, and one float ulp either side of it goes to the nearer one. Checked for every level. */
Test(kernels, f32_to_f16_midpoints_all_levels)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    enum { M = 3 * 0x7c00 };
    float *in = malloc(M * 2 * sizeof *in);
    uint16_t *want = malloc(M * 2 * sizeof *want), *got = malloc(M * 2 * sizeof *got);
    size_t m = 0;
    for (uint32_t h = 0; h < 0x7c00; h++) {
        const float lo = emb_f16_to_f32((uint16_t)h);
        const float hi = h < 0x7bff ? emb_f16_to_f32((uint16_t)(h + 1)) : 65536.0f;
        const float mid = (lo + hi) / 2.0f; /* exact: 12 significant bits */
        const uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        const float pts[3] = {nextafterf(mid, 0.0f), mid, nextafterf(mid, INFINITY)};
        const uint16_t exp[3] = {(uint16_t)h, even, (uint16_t)(h + 1)};
        for (int s = 0; s < 2; s++) {
            for (int p = 0; p < 3; p++) {
                in[m] = s ? -pts[p] : pts[p];
                want[m++] = (uint16_t)(exp[p] | (s ? 0x8000 : 0));
            }
        }
    }
    cr_assert_eq(m, (size_t)M * 2);
    for (size_t i = 0; i < m; i++)
        cr_assert_eq(emb_f32_to_f16(in[i]), want[i], "%a -> %#06x want %#06x", (double)in[i],
                     emb_f32_to_f16(in[i]), want[i]);
    for (size_t l = 0; l < nl; l++) {
        memset(got, 0xab, m * sizeof *got);
        lv[l]->f32_to_f16(in, got, m);
        for (size_t i = 0; i < m; i++)
            cr_assert_eq(got[i], want[i], "[%s] %a -> %#06x want %#06x", lv[l]->name, (double)in[i],
                         got[i], want[i]);
    }
    free(in);
    free(want);
    free(got);
}

/* Every level converts a large sample of all 2^32 floats exactly as the scalar does: a strided
 * sweep of the whole bit space (NaNs, infinities, subnormals, overflow included) plus random
 * floats, in chunks of odd lengths so every tail path runs. NaN payloads are compared too. */
Test(kernels, f32_to_f16_all_levels_bit_exact)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    enum { CHUNK = 1 << 16 };
    float *in = malloc(CHUNK * sizeof *in);
    uint16_t *want = malloc(CHUNK * sizeof *want), *got = malloc(CHUNK * sizeof *got);
    uint64_t seed = 0x5eed0004, bits = 0;
    for (int round = 0; round < 160; round++) {
        for (size_t i = 0; i < CHUNK; i++) {
            if (round % 4 == 3) {
                const uint32_t r = (uint32_t)th_rand_u64(&seed);
                /* Half the samples have exponents around the half range (2^-31 .. 2^16). */
                const uint32_t e = 96u + (r >> 23) % 48u;
                in[i] = bits_f32(i % 2 ? r : (r & 0x807fffffu) | (e << 23));
            } else {
                in[i] = bits_f32((uint32_t)bits);
                bits += 0x4f1bu; /* odd stride: 2^32 / stride ~ 270k samples per lap */
            }
        }
        emb_f32_to_f16_scalar(in, want, CHUNK);
        for (size_t l = 0; l < nl; l++) {
            size_t off = 0, len = 1;
            while (off < CHUNK) {
                const size_t take = len < CHUNK - off ? len : CHUNK - off;
                lv[l]->f32_to_f16(in + off, got + off, take);
                off += take;
                len = len * 3 % 1031 + 1;
            }
            for (size_t i = 0; i < CHUNK; i++)
                cr_assert_eq(got[i], want[i], "[%s] %#010x -> %#06x want %#06x", lv[l]->name,
                             f32_bits(in[i]), got[i], want[i]);
        }
    }
    free(in);
    free(want);
    free(got);
}

Test(kernels, f16_to_f32_all_levels_bit_exact)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    guarded gi;
    uint16_t *in = guard_alloc(&gi, 0x10000 * sizeof *in);
    float *want = malloc(0x10000 * sizeof *want), *got = malloc(0x10001 * sizeof *got);
    for (uint32_t h = 0; h < 0x10000; h++)
        in[h] = (uint16_t)h;
    emb_f16_to_f32_scalar(in, want, 0x10000);
    for (size_t l = 0; l < nl; l++) {
        /* Odd chunk lengths exercise every tail; the last chunk ends at the guard page. */
        size_t off = 0, len = 1;
        got[0x10000] = 42.0f;
        while (off < 0x10000) {
            const size_t take = len < 0x10000 - off ? len : 0x10000 - off;
            lv[l]->f16_to_f32(in + off, got + off, take);
            off += take;
            len = len * 5 % 97 + 1;
        }
        cr_assert_eq(got[0x10000], 42.0f, "[%s] wrote past n", lv[l]->name);
        for (uint32_t h = 0; h < 0x10000; h++)
            cr_assert_eq(f32_bits(got[h]), f32_bits(want[h]), "[%s] %#06x -> %#010x want %#010x",
                         lv[l]->name, h, f32_bits(got[h]), f32_bits(want[h]));
    }
    guard_free(&gi);
    free(want);
    free(got);
}

Test(kernels, conversions_stop_at_n)
{
    const emb_kernels *lv[4];
    const size_t nl = levels(lv);
    for (size_t l = 0; l < nl; l++) {
        for (size_t n = 0; n <= 40; n++) {
            guarded gf, gh;
            float *f = guard_alloc(&gf, n * sizeof *f);
            uint16_t *h = guard_alloc(&gh, n * sizeof *h);
            uint16_t hout[48];
            float fout[48];
            for (size_t i = 0; i < n; i++) {
                f[i] = (float)i - 3.5f;
                h[i] = emb_f32_to_f16(f[i]);
            }
            memset(hout, 0xee, sizeof hout);
            for (size_t i = 0; i < 48; i++)
                fout[i] = -7.0f;
            lv[l]->f32_to_f16(f, hout, n);
            lv[l]->f16_to_f32(h, fout, n);
            for (size_t i = 0; i < 48; i++) {
                cr_assert_eq(hout[i], i < n ? h[i] : 0xeeee, "[%s] n=%zu i=%zu", lv[l]->name, n, i);
                cr_assert_eq(fout[i], i < n ? f[i] : -7.0f, "[%s] n=%zu i=%zu", lv[l]->name, n, i);
            }
            guard_free(&gf);
            guard_free(&gh);
        }
    }
}

Test(kernels, bf16_exact)
{
    cr_assert_eq(emb_bf16_to_f32(0x3f80), 1.0f);
    cr_assert_eq(emb_bf16_to_f32(0xc040), -3.0f);
    cr_assert_eq(emb_bf16_to_f32(0x7f80), INFINITY);
    cr_assert_eq(emb_bf16_to_f32(0x0001), 0x1p-133f);
    for (uint32_t h = 0; h < 0x10000; h++)
        cr_assert_eq(f32_bits(emb_bf16_to_f32((uint16_t)h)), h << 16);
}

/* ---- dispatch -------------------------------------------------------------------------- */

/* The best level this machine has. */
static const emb_kernels *best_level(void)
{
    const emb_kernels *lv[4];
    return lv[levels(lv) - 1];
}

Test(kernels, get_before_init_is_scalar)
{
    cr_assert_eq(emb_kernels_get()->level, EMB_SIMD_SCALAR);
    cr_assert_eq(emb_kernels_get(), emb_kernels_for(EMB_SIMD_SCALAR));
}

Test(kernels, init_by_name)
{
    cr_assert_eq(emb_kernels_init("scalar"), 0);
    cr_assert_eq(emb_kernels_get()->level, EMB_SIMD_SCALAR);
    cr_assert_eq(emb_kernels_init("AVX2"), 0, "names are case-insensitive");
    const emb_kernels *avx2 = emb_kernels_for(EMB_SIMD_AVX2);
    cr_assert_eq(emb_kernels_get(), avx2 ? avx2 : emb_kernels_for(EMB_SIMD_SCALAR));
    cr_assert_eq(emb_kernels_init("avx512"), 0);
    cr_assert_leq(emb_kernels_get()->level, EMB_SIMD_AVX512);
    if (emb_kernels_for(EMB_SIMD_AVX512))
        cr_assert_eq(emb_kernels_get()->level, EMB_SIMD_AVX512);
    else if (emb_kernels_for(EMB_SIMD_AVX2))
        cr_assert_eq(emb_kernels_get()->level, EMB_SIMD_AVX2, "falls back to the best below");
    cr_assert_eq(emb_kernels_init(""), 0);
    cr_assert_eq(emb_kernels_get(), best_level());
}

Test(kernels, init_unknown_name_keeps_best)
{
    emb_kernels_init("scalar");
    cr_assert_eq(emb_kernels_init("sse9"), EMB_EINVAL);
    cr_assert_eq(emb_kernels_get(), best_level());
}

Test(kernels, init_from_environment)
{
    cr_assert_eq(setenv("EMBD_SIMD", "scalar", 1), 0);
    cr_assert_eq(emb_kernels_init(NULL), 0);
    cr_assert_eq(emb_kernels_get()->level, EMB_SIMD_SCALAR);
    cr_assert_eq(setenv("EMBD_SIMD", "", 1), 0);
    cr_assert_eq(emb_kernels_init(NULL), 0);
    cr_assert_eq(emb_kernels_get(), best_level());
    cr_assert_eq(setenv("EMBD_SIMD", "bogus", 1), 0);
    cr_assert_eq(emb_kernels_init(NULL), EMB_EINVAL);
    cr_assert_eq(emb_kernels_get(), best_level());
    cr_assert_eq(unsetenv("EMBD_SIMD"), 0);
    emb_kernels_init("scalar");
    cr_assert_eq(emb_kernels_init(NULL), 0);
    cr_assert_eq(emb_kernels_get(), best_level());
    /* An explicit want wins over the environment. */
    cr_assert_eq(setenv("EMBD_SIMD", "bogus", 1), 0);
    cr_assert_eq(emb_kernels_init("scalar"), 0);
    cr_assert_eq(emb_kernels_get()->level, EMB_SIMD_SCALAR);
}
