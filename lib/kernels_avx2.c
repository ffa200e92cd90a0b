/*
 * kernels_avx2.c - AVX2 + FMA + F16C kernels, 8 floats per vector.
 *
 * Compiled with -mavx2 -mfma -mf16c -mpopcnt (see CMakeLists.txt); nothing here runs unless
 * kernels.c has checked the CPU. Invariants:
 * - No load touches memory past n values of a row or a query. Float tails use vmaskmovps, which
 *   cannot fault on masked-off lanes; AVX2 has no 16-bit masked load, so half tails are copied
 *   into a small zeroed stack buffer first (rows live in a memory map whose end may be a page
 *   edge).
 * - Half conversions use vcvtph2ps / vcvtps2ph with round-to-nearest-even, so they agree bit for
 *   bit with the scalar twins.
 * - Four independent accumulators hide the FMA latency; the summation order therefore differs
 *   from the scalar oracle, within the tolerances the tests state.
 *
 * Q1_0: AVX2 has no mask registers, so sign bits become lane masks arithmetically. A 32-bit word
 * of inverted sign bits (32 values) is broadcast and shifted left per lane by 31 - bit index
 * (vpsllvd), which moves each value's inverted bit into that lane's float sign position; XOR with
 * the query then negates exactly the lanes whose bit is 0. That is four instructions per eight
 * values, against five for the broadcast / and / compare / blend alternative.
 * The q1 x q8 kernel spreads sign bytes over byte lanes with vpshufb instead (see
 * dot_q1q8_rows_avx2), and the batch tile keeps 4 rows x 16 queries in 8 ymm accumulators.
 */
#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "emb_format.h"
#include "kernels_internal.h"
#include "kernels_rows.h"

/* Lane mask (all ones) for the low r lanes, r in [0, 8]. */
static inline __m256i lane_mask(size_t r)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Horizontal sum of eight floats. */
static inline float hsum(__m256 v)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
}

static inline __attribute__((always_inline)) float dot_f32_avx2(const float *a, const float *b,
                                                                size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    if (i < n) {
        const __m256i m = lane_mask(n - i);
        s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), s1);
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

static inline __m256 sqdiff_acc(__m256 a, __m256 b, __m256 acc)
{
    const __m256 d = _mm256_sub_ps(a, b);
    return _mm256_fmadd_ps(d, d, acc);
}

static inline __attribute__((always_inline)) float l2sq_f32_avx2(const float *a, const float *b,
                                                                 size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = sqdiff_acc(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = sqdiff_acc(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = sqdiff_acc(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = sqdiff_acc(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = sqdiff_acc(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    if (i < n) {
        const __m256i m = lane_mask(n - i);
        s1 = sqdiff_acc(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), s1);
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

/* Eight halves widened to floats. */
static inline __m256 load_f16(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* The low r halves (r < 8) widened, the other lanes zero; reads only r halves. */
static inline __m256 load_f16_tail(const uint16_t *p, size_t r)
{
    uint16_t buf[8] = {0};
    memcpy(buf, p, r * sizeof *p);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)buf));
}

static inline __attribute__((always_inline)) float dot_f16_avx2(const uint16_t *row, const float *q,
                                                                size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(load_f16(row + i), _mm256_loadu_ps(q + i), s0);
        s1 = _mm256_fmadd_ps(load_f16(row + i + 8), _mm256_loadu_ps(q + i + 8), s1);
        s2 = _mm256_fmadd_ps(load_f16(row + i + 16), _mm256_loadu_ps(q + i + 16), s2);
        s3 = _mm256_fmadd_ps(load_f16(row + i + 24), _mm256_loadu_ps(q + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(load_f16(row + i), _mm256_loadu_ps(q + i), s0);
    if (i < n) {
        const __m256i m = lane_mask(n - i);
        s1 = _mm256_fmadd_ps(load_f16_tail(row + i, n - i), _mm256_maskload_ps(q + i, m), s1);
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

static inline __attribute__((always_inline)) float l2sq_f16_avx2(const uint16_t *row,
                                                                 const float *q, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = sqdiff_acc(load_f16(row + i), _mm256_loadu_ps(q + i), s0);
        s1 = sqdiff_acc(load_f16(row + i + 8), _mm256_loadu_ps(q + i + 8), s1);
        s2 = sqdiff_acc(load_f16(row + i + 16), _mm256_loadu_ps(q + i + 16), s2);
        s3 = sqdiff_acc(load_f16(row + i + 24), _mm256_loadu_ps(q + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = sqdiff_acc(load_f16(row + i), _mm256_loadu_ps(q + i), s0);
    if (i < n) {
        const __m256i m = lane_mask(n - i);
        s1 = sqdiff_acc(load_f16_tail(row + i, n - i), _mm256_maskload_ps(q + i, m), s1);
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

/* Eight signed query values: q where the sign bit is 1, -q where it is 0. nbits holds the
 * inverted sign bits of 32 values in every lane; shift[j] = 31 - (bit index of lane j). */
static inline __m256 apply_signs(__m256 q, __m256i nbits, __m256i shift)
{
    const __m256i flip =
        _mm256_and_si256(_mm256_sllv_epi32(nbits, shift), _mm256_set1_epi32((int)0x80000000u));
    return _mm256_xor_ps(q, _mm256_castsi256_ps(flip));
}

static inline __attribute__((always_inline)) float dot_q1_avx2(const uint8_t *blocks,
                                                               const float *q, size_t n)
{
    /* Shift counts for the four groups of eight values in one 32-bit word of sign bits. */
    const __m256i sh0 = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
    const __m256i sh1 = _mm256_setr_epi32(23, 22, 21, 20, 19, 18, 17, 16);
    const __m256i sh2 = _mm256_setr_epi32(15, 14, 13, 12, 11, 10, 9, 8);
    const __m256i sh3 = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
    const size_t full = n / EMB_Q1_GROUP;
    size_t b = 0;
    for (; b < full; b++, blocks += EMB_Q1_BLOCK, q += EMB_Q1_GROUP) {
        uint16_t dh;
        uint32_t w[4];
        memcpy(&dh, blocks, sizeof dh); /* little-endian host */
        memcpy(w, blocks + 2, sizeof w);
        /* Four partial sums, so each add chain is four deep per block. */
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            const __m256i nb = _mm256_set1_epi32((int)~w[k]);
            const float *qk = q + 32 * k;
            s0 = _mm256_add_ps(s0, apply_signs(_mm256_loadu_ps(qk), nb, sh0));
            s1 = _mm256_add_ps(s1, apply_signs(_mm256_loadu_ps(qk + 8), nb, sh1));
            s2 = _mm256_add_ps(s2, apply_signs(_mm256_loadu_ps(qk + 16), nb, sh2));
            s3 = _mm256_add_ps(s3, apply_signs(_mm256_loadu_ps(qk + 24), nb, sh3));
        }
        /* Alternate the two accumulators to halve the FMA dependency chain. */
        const __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(dh));
        if (b & 1)
            t1 = _mm256_fmadd_ps(s, d, t1);
        else
            t0 = _mm256_fmadd_ps(s, d, t0);
    }
    const size_t rem = n - full * EMB_Q1_GROUP;
    if (rem) {
        /* Last, partial block: masked loads stop at q[n - 1]; lanes past n load 0, and +-0
         * leaves the sum unchanged whatever their sign bits say. */
        const __m256i shifts[4] = {sh0, sh1, sh2, sh3};
        uint16_t dh;
        uint32_t w[4];
        memcpy(&dh, blocks, sizeof dh);
        memcpy(w, blocks + 2, sizeof w);
        __m256 s = _mm256_setzero_ps();
        for (size_t c = 0; c * 8 < rem; c++) {
            const size_t r = rem - c * 8;
            const __m256i nb = _mm256_set1_epi32((int)~w[c / 4]);
            const __m256 qv =
                r >= 8 ? _mm256_loadu_ps(q + c * 8) : _mm256_maskload_ps(q + c * 8, lane_mask(r));
            s = _mm256_add_ps(s, apply_signs(qv, nb, shifts[c % 4]));
        }
        t0 = _mm256_fmadd_ps(s, _mm256_set1_ps(_cvtsh_ss(dh)), t0);
    }
    return hsum(_mm256_add_ps(t0, t1));
}

static void f16_to_f32_avx2(const uint16_t *in, float *out, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, load_f16(in + i));
    if (i < n)
        _mm256_maskstore_ps(out + i, lane_mask(n - i), load_f16_tail(in + i, n - i));
}

static void f32_to_f16_avx2(const float *in, uint16_t *out, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(out + i), h);
    }
    if (i < n) {
        uint16_t buf[8];
        const __m256 v = _mm256_maskload_ps(in + i, lane_mask(n - i));
        _mm_storeu_si128((__m128i *)buf, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
        memcpy(out + i, buf, (n - i) * sizeof *out);
    }
}

/* ---- many rows, one query: the one-row kernels inlined in a loop (bit-identical) ---- */

EMB__ROWS(dot_f32_rows_avx2, dot_f32_avx2, float, 1)
EMB__ROWS(l2sq_f32_rows_avx2, l2sq_f32_avx2, float, 1)
EMB__ROWS(dot_f16_rows_avx2, dot_f16_avx2, uint16_t, 1)
EMB__ROWS(l2sq_f16_rows_avx2, l2sq_f16_avx2, uint16_t, 1)
EMB__ROWS(dot_q1_rows_avx2, dot_q1_avx2, uint8_t, 0)

/* Q1_0 blocks to floats: the inverted sign bits moved to each lane's sign position (as in
 * apply_signs) and XORed into +d. */
static void q1_to_f32_avx2(const uint8_t *blocks, float *out, size_t n)
{
    const __m256i sh[4] = {_mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24),
                           _mm256_setr_epi32(23, 22, 21, 20, 19, 18, 17, 16),
                           _mm256_setr_epi32(15, 14, 13, 12, 11, 10, 9, 8),
                           _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0)};
    for (size_t j0 = 0; j0 < n; j0 += EMB_Q1_GROUP, blocks += EMB_Q1_BLOCK) {
        uint16_t dh;
        uint32_t w[4];
        memcpy(&dh, blocks, sizeof dh);
        memcpy(w, blocks + 2, sizeof w);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(dh));
        const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
        for (size_t c = 0; c * 8 < cnt; c++) {
            const __m256 v = apply_signs(d, _mm256_set1_epi32((int)~w[c / 4]), sh[c % 4]);
            if (cnt - c * 8 >= 8)
                _mm256_storeu_ps(out + j0 + c * 8, v);
            else
                _mm256_maskstore_ps(out + j0 + c * 8, lane_mask(cnt - c * 8), v);
        }
    }
}

/* ---- q1 x q8 ---- */

/* Sum of the eight 32-bit lanes. */
static inline int32_t hsum_epi32(__m256i v)
{
    __m128i x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4e));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xb1));
    return _mm_cvtsi128_si32(x);
}

/* Q1_0 rows against the query rounded to int8 (the scalar twin's arithmetic, so its bits): per
 * 32 values, the 4 bytes of signs are broadcast, each byte spread over 8 lanes (vpshufb), its
 * bit isolated and turned into a 0/1 byte (and, min), and vpmaddubsw + vpmaddwd sum the
 * products with the int8 query into 32-bit lanes. */
static void dot_q1q8_rows_avx2(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                               size_t n, float *out)
{
    _Alignas(32) int8_t qi[EMB__Q8_GROUP];
    float delta[EMB__Q8_BLOCKS];
    int32_t isum[EMB__Q8_BLOCKS];
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                            2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bitsel = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (size_t i = 0; i < nrows; i++)
        out[i] = 0.0f;
    for (size_t g0 = 0; g0 < n; g0 += EMB__Q8_GROUP) {
        const size_t nb = emb__q8_group(q, n, g0, qi, delta, isum);
        for (size_t i = 0; i < nrows; i++) {
            const uint8_t *blk = rows + i * stride + g0 / EMB_Q1_GROUP * EMB_Q1_BLOCK;
            float tot = out[i];
            for (size_t b = 0; b < nb; b++, blk += EMB_Q1_BLOCK) {
                uint16_t dh;
                memcpy(&dh, blk, sizeof dh);
                __m256i acc = _mm256_setzero_si256();
                for (size_t c = 0; c < 4; c++) {
                    uint32_t w;
                    memcpy(&w, blk + 2 + 4 * c, sizeof w);
                    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)w), spread);
                    const __m256i a = _mm256_min_epu8(_mm256_and_si256(v, bitsel), ones8);
                    const __m256i qv =
                        _mm256_load_si256((const __m256i *)(const void *)(qi + b * 128 + 32 * c));
                    acc = _mm256_add_epi32(acc,
                                           _mm256_madd_epi16(_mm256_maddubs_epi16(a, qv), ones16));
                }
                const int32_t t = hsum_epi32(acc);
                tot = fmaf(_cvtsh_ss(dh) * delta[b], (float)(2 * t - isum[b]), tot);
            }
            out[i] = tot;
        }
    }
}

/* ---- batch tile ---- */

/* R rows x 16 queries (two vectors) from row r0 and query j0: fused multiply-adds in value
 * order, one accumulator per row and vector (2 R independent chains), then the limit test. R is
 * a constant at every call. */
static inline __attribute__((always_inline)) void
tile_block_avx2(const float *x, size_t ldx, size_t r0, size_t R, const float *qt, size_t ldq,
                size_t j0, size_t nq, size_t n, const emb_tile_limits *lim, float *out,
                uint16_t *hits)
{
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (size_t r = 0; r < R; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    const float *xr = x + r0 * ldx;
    for (size_t i = 0; i < n; i++) {
        const __m256 q0 = _mm256_load_ps(qt + i * ldq + j0);
        const __m256 q1 = _mm256_load_ps(qt + i * ldq + j0 + 8);
#pragma GCC unroll 4
        for (size_t r = 0; r < R; r++) {
            const __m256 xv = _mm256_broadcast_ss(xr + r * ldx + i);
            acc[r][0] = _mm256_fmadd_ps(xv, q0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(xv, q1, acc[r][1]);
        }
    }
#pragma GCC unroll 4
    for (size_t r = 0; r < R; r++) {
        const size_t row = r0 + r;
        const __m256 rb = _mm256_set1_ps(lim->rb[row]), rd = _mm256_set1_ps(lim->rd[row]);
        const __m256 rf = _mm256_set1_ps(lim->rf[row]);
        unsigned m = 0;
        for (size_t h = 0; h < 2; h++) {
            const size_t j = j0 + 8 * h;
            __m256 l =
                _mm256_fmadd_ps(_mm256_loadu_ps(lim->qa + j), rb, _mm256_loadu_ps(lim->qe + j));
            l = _mm256_add_ps(_mm256_fnmadd_ps(_mm256_loadu_ps(lim->qc + j), rd, l), rf);
            _mm256_storeu_ps(out + row * ldq + j, acc[r][h]);
            m |= (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(acc[r][h], l, _CMP_GE_OQ)) << (8 * h);
        }
        if (nq - j0 < 16)
            m &= (1u << (nq - j0)) - 1u;
        hits[row * (ldq / 16) + j0 / 16] = (uint16_t)m;
    }
}

static void tile_f32_avx2(const float *x, size_t ldx, size_t nr, const float *qt, size_t ldq,
                          size_t nq, size_t n, const emb_tile_limits *lim, float *out,
                          uint16_t *hits)
{
    for (size_t j0 = 0; j0 < nq; j0 += 16) {
        size_t r0 = 0;
        for (; r0 + 4 <= nr; r0 += 4)
            tile_block_avx2(x, ldx, r0, 4, qt, ldq, j0, nq, n, lim, out, hits);
        for (; r0 < nr; r0++)
            tile_block_avx2(x, ldx, r0, 1, qt, ldq, j0, nq, n, lim, out, hits);
    }
}

/* ---- q1 x q1: XOR + popcount ---- */

/* Eight rows at a time (row l at rows + min(l, live - 1) * stride), block by block: each row's
 * two words of sign bits XOR the query's, popcnt of the valid bits, the eight counts and the
 * eight fp16 scales widened together, then lane l = fmaf(d_l * qd[b], cnt - 2 pop_l, lane l)
 * from +0: the scalar twin's operations, so its bits. AVX2 has no vector popcount; the scalar
 * popcnt does one 64-bit word per cycle, two per row and block. */
static inline __attribute__((always_inline)) __m256 q1q1_group8(const uint8_t *rows, size_t stride,
                                                                size_t live, const uint64_t *qbits,
                                                                const float *qd, size_t n)
{
    __m256 tot = _mm256_setzero_ps();
    for (size_t j0 = 0, b = 0; j0 < n; j0 += EMB_Q1_GROUP, b++) {
        const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
        uint64_t m[2];
        emb__q1_valid(cnt, m);
        const uint64_t m0 = m[0], m1 = m[1];
        const uint64_t q0 = qbits[2 * b], q1 = qbits[2 * b + 1];
        int pop[8];
        uint16_t dh[8];
#pragma GCC unroll 8
        for (size_t l = 0; l < 8; l++) {
            const uint8_t *p = rows + (l < live ? l : live - 1) * stride + b * EMB_Q1_BLOCK;
            uint64_t w0, w1;
            memcpy(&dh[l], p, sizeof dh[l]);
            memcpy(&w0, p + 2, sizeof w0);
            memcpy(&w1, p + 10, sizeof w1);
            pop[l] = __builtin_popcountll((w0 ^ q0) & m0) + __builtin_popcountll((w1 ^ q1) & m1);
        }
        /* Built in registers: eight small stores read back by one wide load would miss the
         * store-to-load forwarding and stall every group. */
        const __m256i pv =
            _mm256_setr_epi32(pop[0], pop[1], pop[2], pop[3], pop[4], pop[5], pop[6], pop[7]);
        const __m256 v = _mm256_cvtepi32_ps(
            _mm256_sub_epi32(_mm256_set1_epi32((int)cnt), _mm256_add_epi32(pv, pv)));
        const __m128i dv = _mm_setr_epi16((short)dh[0], (short)dh[1], (short)dh[2], (short)dh[3],
                                          (short)dh[4], (short)dh[5], (short)dh[6], (short)dh[7]);
        const __m256 d = _mm256_cvtph_ps(dv);
        tot = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(qd[b])), v, tot);
    }
    return tot;
}

/* The bits set in each byte of (x ^ q) & m, by two vpshufb nibble lookups. */
static inline __m256i q1i_bytecount(__m256i x, __m256i q, __m256i m)
{
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                         1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m256i v = _mm256_and_si256(_mm256_xor_si256(x, q), m);
    return _mm256_add_epi8(
        _mm256_shuffle_epi8(lut, _mm256_and_si256(v, nib)),
        _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), nib)));
}

/* Groups [g0, g0 + ng) of the interleaved q1 copy (dot_q1q1_ilv): per block, eight rows a step,
 * four rows' low and high words per vector pair, their byte counts added (at most 16 a byte)
 * and summed per row by vpsadbw; the eight counts and the eight scales (one 16-byte load) then
 * as q1q1_group8 does, so the same bits. */
static void q1q1_ilv_groups_avx2(const uint8_t *ilv, size_t g0, size_t ng, const uint64_t *qbits,
                                 const float *qd, size_t n, float *out, float *n2)
{
    const size_t nb = emb_q1_blocks((uint32_t)n);
    const uint8_t *tile0 = ilv + g0 * nb * EMB_Q1I_TILE;
    for (size_t g = 0; g < ng; g++, out += EMB_Q1I_ROWS) {
        __m256 tot[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                         _mm256_setzero_ps()};
        const uint8_t *t = tile0 + g * nb * EMB_Q1I_TILE;
        for (size_t j0 = 0, b = 0; j0 < n; j0 += EMB_Q1_GROUP, b++, t += EMB_Q1I_TILE) {
            const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
            const __m256i q0 = _mm256_set1_epi64x((long long)qbits[2 * b]);
            const __m256i q1 = _mm256_set1_epi64x((long long)qbits[2 * b + 1]);
            uint64_t m[2];
            emb__q1_valid(cnt, m);
            const __m256i m0 = _mm256_set1_epi64x((long long)m[0]);
            const __m256i m1 = _mm256_set1_epi64x((long long)m[1]);
            const __m256 vqd = _mm256_set1_ps(qd[b]);
#pragma GCC unroll 4
            for (size_t s8 = 0; s8 < 4; s8++) {
                __m256i c[2];
                for (size_t h = 0; h < 2; h++) {
                    const uint8_t *lo = t + 64 * s8 + 32 * h;
                    c[h] = _mm256_sad_epu8(
                        _mm256_add_epi8(
                            q1i_bytecount(_mm256_loadu_si256((const __m256i *)(const void *)lo), q0,
                                          m0),
                            q1i_bytecount(
                                _mm256_loadu_si256((const __m256i *)(const void *)(lo + 256)), q1,
                                m1)),
                        _mm256_setzero_si256());
                }
                /* Rows 0 1 4 5 | 2 3 6 7 from the low dwords, then the middle pairs swapped. */
                const __m256i pop = _mm256_permute4x64_epi64(
                    _mm256_castps_si256(_mm256_shuffle_ps(_mm256_castsi256_ps(c[0]),
                                                          _mm256_castsi256_ps(c[1]), 0x88)),
                    0xD8);
                const __m256 v = _mm256_cvtepi32_ps(
                    _mm256_sub_epi32(_mm256_set1_epi32((int)cnt), _mm256_add_epi32(pop, pop)));
                const __m256 d = _mm256_cvtph_ps(
                    _mm_loadu_si128((const __m128i *)(const void *)(t + 512 + 16 * s8)));
                tot[s8] = _mm256_fmadd_ps(_mm256_mul_ps(d, vqd), v, tot[s8]);
                if (n2) /* one block per row */
                    _mm256_storeu_ps(n2 + 8 * s8, _mm256_mul_ps(_mm256_mul_ps(d, d),
                                                                _mm256_set1_ps((float)cnt)));
            }
        }
        for (size_t s8 = 0; s8 < 4; s8++)
            _mm256_storeu_ps(out + 8 * s8, tot[s8]);
        if (n2)
            n2 += EMB_Q1I_ROWS;
    }
}

static void dot_q1q1_ilv_avx2(const uint8_t *ilv, size_t r0, size_t nrows, const uint64_t *qbits,
                              const float *qd, size_t n, float *out, float *n2)
{
    emb__q1i_drive(q1q1_ilv_groups_avx2, ilv, r0, nrows, qbits, qd, n, out, n2);
}

/* ---- the scan's filter: eight compares per instruction, 32 values per test ---- */

static size_t first_at_least_avx2(const float *x, size_t n, float t)
{
    const __m256 vt = _mm256_set1_ps(t);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const unsigned m0 =
            (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), vt, _CMP_GE_OQ));
        const unsigned m1 =
            (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i + 8), vt, _CMP_GE_OQ));
        const unsigned m2 = (unsigned)_mm256_movemask_ps(
            _mm256_cmp_ps(_mm256_loadu_ps(x + i + 16), vt, _CMP_GE_OQ));
        const unsigned m3 = (unsigned)_mm256_movemask_ps(
            _mm256_cmp_ps(_mm256_loadu_ps(x + i + 24), vt, _CMP_GE_OQ));
        const unsigned m = m0 | m1 << 8 | m2 << 16 | m3 << 24;
        if (m)
            return i + (size_t)__builtin_ctz(m);
    }
    for (; i < n; i++)
        if (x[i] >= t)
            return i;
    return n;
}

/* Eight cosines per step; the tail as the scalar twin. */
static void cos_rows_avx2(float *x, const float *n2, float qn, size_t n)
{
    const __m256 vq = _mm256_set1_ps(qn);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 den = _mm256_mul_ps(vq, _mm256_sqrt_ps(_mm256_loadu_ps(n2 + i)));
        const __m256 ok = _mm256_cmp_ps(den, _mm256_setzero_ps(), _CMP_GT_OQ);
        _mm256_storeu_ps(x + i, _mm256_and_ps(ok, _mm256_div_ps(_mm256_loadu_ps(x + i), den)));
    }
    emb_cos_rows_scalar(x + i, n2 + i, qn, n - i);
}

/* Eight scales per step by a 32-bit gather (the first 4 bytes of each row), their low halves
 * packed and widened; a short last step gathers only the rows it has. */
static void q1_norm2_rows_avx2(const uint8_t *rows, size_t stride, size_t nrows, size_t n,
                               float *out)
{
    const __m256i offs = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                            _mm256_set1_epi32((int)stride));
    const __m256 cnt = _mm256_set1_ps((float)n);
    for (size_t i = 0; i < nrows; i += 8) {
        const size_t live = nrows - i < 8 ? nrows - i : 8;
        const __m256i m = lane_mask(live);
        const __m256i g = _mm256_and_si256(
            _mm256_mask_i32gather_epi32(_mm256_setzero_si256(),
                                        (const int *)(const void *)(rows + i * stride), offs, m, 1),
            _mm256_set1_epi32(0xffff));
        const __m128i h =
            _mm_packus_epi32(_mm256_castsi256_si128(g), _mm256_extracti128_si256(g, 1));
        const __m256 d = _mm256_cvtph_ps(h);
        _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(_mm256_mul_ps(d, d), cnt));
    }
}

static void dot_q1q1_rows_avx2(const uint8_t *rows, size_t stride, size_t nrows,
                               const uint64_t *qbits, const float *qd, size_t n, float *out)
{
    size_t r0 = 0;
    for (; r0 + 8 <= nrows; r0 += 8) {
        for (size_t at = r0 * stride + EMB__PF_BYTES, to = at + 8 * stride;
             emb__prefetch && at < to; at += 64)
            if (at < nrows * stride)
                _mm_prefetch((const char *)rows + at, _MM_HINT_T0);
        _mm256_storeu_ps(out + r0, q1q1_group8(rows + r0 * stride, stride, 8, qbits, qd, n));
    }
    if (r0 < nrows) {
        float tmp[8];
        _mm256_storeu_ps(tmp, q1q1_group8(rows + r0 * stride, stride, nrows - r0, qbits, qd, n));
        memcpy(out + r0, tmp, (nrows - r0) * sizeof *out);
    }
}

const emb_kernels emb__kernels_avx2 = {
    .level = EMB_SIMD_AVX2,
    .name = "avx2",
    .dot_f32 = dot_f32_avx2,
    .l2sq_f32 = l2sq_f32_avx2,
    .dot_f16 = dot_f16_avx2,
    .l2sq_f16 = l2sq_f16_avx2,
    .dot_q1 = dot_q1_avx2,
    .f16_to_f32 = f16_to_f32_avx2,
    .f32_to_f16 = f32_to_f16_avx2,
    .dot_f32_rows = dot_f32_rows_avx2,
    .l2sq_f32_rows = l2sq_f32_rows_avx2,
    .dot_f16_rows = dot_f16_rows_avx2,
    .l2sq_f16_rows = l2sq_f16_rows_avx2,
    .dot_q1_rows = dot_q1_rows_avx2,
    .q1_to_f32 = q1_to_f32_avx2,
    .dot_q1q8_rows = dot_q1q8_rows_avx2,
    .dot_q1q1_rows = dot_q1q1_rows_avx2,
    .dot_q1q1_ilv = dot_q1q1_ilv_avx2,
    .first_at_least = first_at_least_avx2,
    .cos_rows = cos_rows_avx2,
    .q1_norm2_rows = q1_norm2_rows_avx2,
    .tile_f32 = tile_f32_avx2,
};

#endif
