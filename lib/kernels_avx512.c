/*
 * kernels_avx512.c - AVX-512 (F/BW/VL) kernels, 16 floats per vector.
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma -mf16c -mpopcnt (see CMakeLists.txt);
 * nothing here runs unless kernels.c has checked the CPU. Invariants:
 * - No load touches memory past n values of a row or a query: the tail is a masked load, which
 *   cannot fault on masked-off lanes (rows live in a memory map whose end may be a page edge).
 * - Half conversions use vcvtph2ps / vcvtps2ph with round-to-nearest-even, so they agree bit for
 *   bit with the scalar twins.
 * - Reductions use four independent accumulators so the FMA latency is hidden; the order of
 *   additions therefore differs from the scalar oracle, within the tolerances the tests state.
 * - The many-row kernels inline the one-row ones (bit-identical results) and prefetch ahead.
 *
 * Q1_0 against the f32 query (q1 x f32): each 16-bit chunk of a block's sign bits is the mask of
 * a zero-masking add, so one instruction per 16 values sums the query over the set bits (S);
 * the block contributes d * (2 S - sum of the block's query), the first part accumulated in a
 * vector, the second in a scalar, both fused. Rejected: negating by a masked subtract (needs
 * the inverted mask: one more instruction per chunk), and dequantising the row to floats first
 * (a store and reload per value). The default q1 x q8 kernel is kernels_q1q8_avx512.h.
 *
 * Batch tile: 6 rows x 32 queries of accumulators (12 zmm), one broadcast row value and two
 * query vectors per step: FMA-bound, the rows widened to f32 once per block by the caller.
 */
#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "emb_format.h"
#include "kernels_internal.h"
#include "kernels_rows.h"

/* An unaligned little-endian uint16 in a row (Q1_0 blocks are 18 bytes, so half of them are
 * not 2-byte aligned): the attribute makes the compiler and UBSan treat the access as such. */
typedef uint16_t u16u __attribute__((aligned(1), may_alias));

/* Mask of the low r lanes, r in [0, 16). */
static inline __mmask16 tail_mask(size_t r)
{
    return (__mmask16)((1u << r) - 1u);
}

static inline __m512 sqdiff_acc(__m512 a, __m512 b, __m512 acc)
{
    const __m512 d = _mm512_sub_ps(a, b);
    return _mm512_fmadd_ps(d, d, acc);
}

/* Sixteen halves widened to floats. */
static inline __m512 load_f16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

/* The low r halves (r < 16) widened, the other lanes zero; reads only r halves. */
static inline __m512 load_f16_tail(const uint16_t *p, __mmask16 m)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

static inline __m512 mul_acc(__m512 a, __m512 b, __m512 acc)
{
    return _mm512_fmadd_ps(a, b, acc);
}

/* The one-row kernels from value i on, given their four sums so far (ACC: mul_acc for dot,
 * sqdiff_acc for l2; LOAD / LOADT: sixteen row values, and the low ones of a masked tail, as
 * floats): 64 values a step into s0..s3, then 16 into s0, a masked tail into s1, and
 * (s0 + s1) + (s2 + s3) reduced. From i = 0 with zero sums it is the whole kernel. */
#define ROW_FROM(name, T, LOAD, LOADT, ACC)                                                        \
    static inline __attribute__((always_inline)) float name(const T *row, const float *q,          \
                                                            size_t n, size_t i, __m512 s0,         \
                                                            __m512 s1, __m512 s2, __m512 s3)       \
    {                                                                                              \
        for (; i + 64 <= n; i += 64) {                                                             \
            s0 = ACC(LOAD(row + i), _mm512_loadu_ps(q + i), s0);                                   \
            s1 = ACC(LOAD(row + i + 16), _mm512_loadu_ps(q + i + 16), s1);                         \
            s2 = ACC(LOAD(row + i + 32), _mm512_loadu_ps(q + i + 32), s2);                         \
            s3 = ACC(LOAD(row + i + 48), _mm512_loadu_ps(q + i + 48), s3);                         \
        }                                                                                          \
        for (; i + 16 <= n; i += 16)                                                               \
            s0 = ACC(LOAD(row + i), _mm512_loadu_ps(q + i), s0);                                   \
        if (i < n) {                                                                               \
            const __mmask16 m = tail_mask(n - i);                                                  \
            s1 = ACC(LOADT(row + i, m), _mm512_maskz_loadu_ps(m, q + i), s1);                      \
        }                                                                                          \
        return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));  \
    }

static inline __m512 load_f32(const float *p)
{
    return _mm512_loadu_ps(p);
}

static inline __m512 load_f32_tail(const float *p, __mmask16 m)
{
    return _mm512_maskz_loadu_ps(m, p);
}

ROW_FROM(dot_f16_from, uint16_t, load_f16, load_f16_tail, mul_acc)
ROW_FROM(l2sq_f16_from, uint16_t, load_f16, load_f16_tail, sqdiff_acc)
ROW_FROM(dot_f32_from, float, load_f32, load_f32_tail, mul_acc)
ROW_FROM(l2sq_f32_from, float, load_f32, load_f32_tail, sqdiff_acc)

static inline __attribute__((always_inline)) float dot_f32_avx512(const float *a, const float *b,
                                                                  size_t n)
{
    const __m512 z = _mm512_setzero_ps();
    return dot_f32_from(a, b, n, 0, z, z, z, z);
}

static inline __attribute__((always_inline)) float l2sq_f32_avx512(const float *a, const float *b,
                                                                   size_t n)
{
    const __m512 z = _mm512_setzero_ps();
    return l2sq_f32_from(a, b, n, 0, z, z, z, z);
}

static inline __attribute__((always_inline)) float dot_f16_avx512(const uint16_t *row,
                                                                  const float *q, size_t n)
{
    const __m512 z = _mm512_setzero_ps();
    return dot_f16_from(row, q, n, 0, z, z, z, z);
}

static inline __attribute__((always_inline)) float l2sq_f16_avx512(const uint16_t *row,
                                                                   const float *q, size_t n)
{
    const __m512 z = _mm512_setzero_ps();
    return l2sq_f16_from(row, q, n, 0, z, z, z, z);
}

/* Sums of the query over each Q1_0 block (qsum[b] over values [128 b, min(128 b + 128, n))), in
 * the order every q1 kernel of this level uses. */
static void q1_query_sums(const float *q, size_t n, float *qsum)
{
    for (size_t j0 = 0, b = 0; j0 < n; j0 += EMB_Q1_GROUP, b++) {
        const size_t rem = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
        __m512 s = _mm512_setzero_ps();
        for (size_t c = 0; c * 16 < rem; c++) {
            const __mmask16 m = rem - c * 16 >= 16 ? (__mmask16)0xffff : tail_mask(rem - c * 16);
            s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, q + j0 + c * 16));
        }
        qsum[b] = _mm512_reduce_add_ps(s);
    }
}

/* The canonical q1 score of one row at this level: sum over blocks of
 * d_b * (2 * (sum of q_j whose bit is 1) - qsum[b]), the masked sums taken with the sign bits
 * as the masks of zero-masking adds (one instruction per 16 values, no negation), the d_b
 * products accumulated in one vector, the qsum terms in one scalar, both fused. */
static inline __attribute__((always_inline)) float q1_row(const uint8_t *blk, const float *q,
                                                          size_t n, const float *qsum)
{
    __m512 t = _mm512_setzero_ps();
    float c = 0.0f;
    const size_t full = n / EMB_Q1_GROUP;
    size_t b = 0;
    for (; b < full; b++, blk += EMB_Q1_BLOCK, q += EMB_Q1_GROUP) {
        const u16u *w = (const u16u *)(const void *)(blk + 2);
        const float d = _cvtsh_ss(*(const u16u *)(const void *)blk);
        __m512 va = _mm512_maskz_loadu_ps(_cvtu32_mask16(w[0]), q);
        __m512 vb = _mm512_maskz_loadu_ps(_cvtu32_mask16(w[1]), q + 16);
        va = _mm512_mask_add_ps(va, _cvtu32_mask16(w[2]), va, _mm512_loadu_ps(q + 32));
        vb = _mm512_mask_add_ps(vb, _cvtu32_mask16(w[3]), vb, _mm512_loadu_ps(q + 48));
        va = _mm512_mask_add_ps(va, _cvtu32_mask16(w[4]), va, _mm512_loadu_ps(q + 64));
        vb = _mm512_mask_add_ps(vb, _cvtu32_mask16(w[5]), vb, _mm512_loadu_ps(q + 80));
        va = _mm512_mask_add_ps(va, _cvtu32_mask16(w[6]), va, _mm512_loadu_ps(q + 96));
        vb = _mm512_mask_add_ps(vb, _cvtu32_mask16(w[7]), vb, _mm512_loadu_ps(q + 112));
        t = _mm512_fmadd_ps(_mm512_add_ps(va, vb), _mm512_set1_ps(d), t);
        c = fmaf(d, qsum[b], c);
    }
    const size_t rem = n - full * EMB_Q1_GROUP;
    if (rem) {
        /* Last, partial block: masks also stop at q[n - 1], so bits past n are never used. */
        uint16_t dh, w[8];
        memcpy(&dh, blk, sizeof dh);
        memcpy(w, blk + 2, sizeof w);
        const float d = _cvtsh_ss(dh);
        __m512 va = _mm512_setzero_ps(), vb = _mm512_setzero_ps();
        for (size_t ch = 0; ch * 16 < rem; ch++) {
            const size_t r = rem - ch * 16;
            const __mmask16 m = (__mmask16)(w[ch] & (r >= 16 ? 0xffffu : tail_mask(r)));
            if (ch & 1)
                vb = _mm512_add_ps(vb, _mm512_maskz_loadu_ps(m, q + ch * 16));
            else
                va = _mm512_add_ps(va, _mm512_maskz_loadu_ps(m, q + ch * 16));
        }
        t = _mm512_fmadd_ps(_mm512_add_ps(va, vb), _mm512_set1_ps(d), t);
        c = fmaf(d, qsum[b], c);
    }
    return fmaf(2.0f, _mm512_reduce_add_ps(t), -c);
}

static void dot_q1_rows_avx512(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                               size_t n, float *out)
{
    float qsum[EMB_MAX_DIM / EMB_Q1_GROUP];
    q1_query_sums(q, n, qsum);
    for (size_t i = 0; i < nrows; i++)
        out[i] = q1_row(rows + i * stride, q, n, qsum);
}

static float dot_q1_avx512(const uint8_t *blocks, const float *q, size_t n)
{
    float out;
    dot_q1_rows_avx512(blocks, 0, 1, q, n, &out);
    return out;
}

/* Q1_0 blocks to floats: each 16-bit chunk of signs picks +d or -d per lane. */
static void q1_to_f32_avx512(const uint8_t *blocks, float *out, size_t n)
{
    for (size_t j0 = 0; j0 < n; j0 += EMB_Q1_GROUP, blocks += EMB_Q1_BLOCK) {
        const u16u *w = (const u16u *)(const void *)(blocks + 2);
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(*(const u16u *)(const void *)blocks));
        /* -d by flipping the sign bit, so a zero scale gives -0 as emb_q1_decode does. */
        const __m512 nd = _mm512_castsi512_ps(
            _mm512_xor_si512(_mm512_castps_si512(d), _mm512_set1_epi32((int)0x80000000u)));
        const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
        for (size_t c = 0; c * 16 < cnt; c++) {
            const __m512 v = _mm512_mask_blend_ps(_cvtu32_mask16(w[c]), nd, d);
            const __mmask16 m = cnt - c * 16 >= 16 ? (__mmask16)0xffff : tail_mask(cnt - c * 16);
            _mm512_mask_storeu_ps(out + j0 + c * 16, m, v);
        }
    }
}

/* ---- q1 x q8 without VNNI: vpmaddubsw pairs, then vpmaddwd by ones ---- */

static inline __m512i dpbusd_bw(__m512i acc, __m512i a, __m512i b)
{
    return _mm512_add_epi32(acc,
                            _mm512_madd_epi16(_mm512_maddubs_epi16(a, b), _mm512_set1_epi16(1)));
}

#define Q1Q8_NAME   dot_q1q8_rows_avx512
#define Q1Q8_DPBUSD dpbusd_bw
#include "kernels_q1q8_avx512.h"
#undef Q1Q8_NAME
#undef Q1Q8_DPBUSD

/* ---- q1 x q1 without VPOPCNTDQ: nibble counts by vpshufb, summed per 64 bits by vpsadbw ---- */

static inline __m512i popcnt64_bw(__m512i x)
{
    const __m512i lut =
        _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));
    const __m512i lo = _mm512_and_si512(x, _mm512_set1_epi8(0x0f));
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), _mm512_set1_epi8(0x0f));
    const __m512i c = _mm512_add_epi8(_mm512_shuffle_epi8(lut, lo), _mm512_shuffle_epi8(lut, hi));
    return _mm512_sad_epu8(c, _mm512_setzero_si512());
}

#define Q1Q1_NAME   dot_q1q1_rows_avx512
#define Q1Q1I_NAME  dot_q1q1_ilv_avx512
#define Q1Q1_POPCNT popcnt64_bw
#include "kernels_q1q1_avx512.h"
#undef Q1Q1_NAME
#undef Q1Q1I_NAME
#undef Q1Q1_POPCNT

/* ---- many rows, one query: the one-row kernels inlined in a loop (bit-identical) ---- */

/* Many f32 or f16 rows of n >= 384 values: the query's first 384 values stay in 24 registers
 * for the whole call instead of being loaded again for every row. Those loads all hit L1, yet
 * on Zen 5 they held a 1M x 768 f16 scan from DRAM to 77-81% of memchr's read rate; with the
 * registers 102-107% (embd bench --large). f32 rows, which bring as many bytes as the query
 * loads, scanned alike either way (85-90% and 88% at 1M x 768); they share the code. The first
 * six 64-value steps are the one-row kernel's, with the same operands in the same order, and
 * ROW_FROM goes on from value 384, so the bits are the one-row kernel's. */
#define QREG_STEPS 6

#define QREG_ROWS(name, T, from, LOAD, ACC)                                                        \
    static void name(const uint8_t *rows, size_t stride, size_t nrows, const float *q, size_t n,   \
                     float *out)                                                                   \
    {                                                                                              \
        const __m512 z = _mm512_setzero_ps();                                                      \
        if (n < 64 * QREG_STEPS) {                                                                 \
            for (size_t r = 0; r < nrows; r++) {                                                   \
                emb__prefetch_ahead(rows, stride, nrows, r);                                       \
                out[r] = from((const T *)(const void *)(rows + r * stride), q, n, 0, z, z, z, z);  \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        __m512 qr[4 * QREG_STEPS];                                                                 \
        for (size_t j = 0; j < 4 * QREG_STEPS; j++)                                                \
            qr[j] = _mm512_loadu_ps(q + 16 * j);                                                   \
        for (size_t r = 0; r < nrows; r++) {                                                       \
            emb__prefetch_ahead(rows, stride, nrows, r);                                           \
            const T *row = (const T *)(const void *)(rows + r * stride);                           \
            __m512 s0 = z, s1 = z, s2 = z, s3 = z;                                                 \
            _Pragma("GCC unroll 6") for (size_t j = 0; j < QREG_STEPS; j++)                        \
            {                                                                                      \
                s0 = ACC(LOAD(row + 64 * j), qr[4 * j], s0);                                       \
                s1 = ACC(LOAD(row + 64 * j + 16), qr[4 * j + 1], s1);                              \
                s2 = ACC(LOAD(row + 64 * j + 32), qr[4 * j + 2], s2);                              \
                s3 = ACC(LOAD(row + 64 * j + 48), qr[4 * j + 3], s3);                              \
            }                                                                                      \
            out[r] = from(row, q, n, 64 * QREG_STEPS, s0, s1, s2, s3);                             \
        }                                                                                          \
    }

QREG_ROWS(dot_f32_rows_avx512, float, dot_f32_from, load_f32, mul_acc)
QREG_ROWS(l2sq_f32_rows_avx512, float, l2sq_f32_from, load_f32, sqdiff_acc)
QREG_ROWS(dot_f16_rows_avx512, uint16_t, dot_f16_from, load_f16, mul_acc)
QREG_ROWS(l2sq_f16_rows_avx512, uint16_t, l2sq_f16_from, load_f16, sqdiff_acc)

/* ---- the scan's filter ---- */

/* Sixteen compares per instruction into a mask, 64 values per test: the rows of a scan that
 * cannot enter the heap cost a fraction of an instruction each. */
static size_t first_at_least_avx512(const float *x, size_t n, float t)
{
    const __m512 vt = _mm512_set1_ps(t);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        const __mmask16 m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), vt, _CMP_GE_OQ);
        const __mmask16 m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 16), vt, _CMP_GE_OQ);
        const __mmask16 m2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 32), vt, _CMP_GE_OQ);
        const __mmask16 m3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 48), vt, _CMP_GE_OQ);
        const uint64_t m =
            (uint64_t)m0 | (uint64_t)m1 << 16 | (uint64_t)m2 << 32 | (uint64_t)m3 << 48;
        if (m)
            return i + (size_t)__builtin_ctzll(m);
    }
    for (; i < n; i += 16) {
        const __mmask16 lm = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        const __mmask16 m =
            _mm512_mask_cmp_ps_mask(lm, _mm512_maskz_loadu_ps(lm, x + i), vt, _CMP_GE_OQ);
        if (m)
            return i + (size_t)__builtin_ctz(m);
    }
    return n;
}

/* ---- batch tile ---- */

/* R rows x C vectors of 16 queries, starting at row r0 and query j0: dot products by fused
 * multiply-adds in value order (one accumulator per row and vector, so R x C independent
 * chains hide the latency), then the limit test. R and C are constants at every call. */
static inline __attribute__((always_inline)) void
tile_block_avx512(const float *x, size_t ldx, size_t r0, size_t R, const float *qt, size_t ldq,
                  size_t j0, size_t C, size_t nq, size_t n, const emb_tile_limits *lim, float *out,
                  uint16_t *hits)
{
    __m512 acc[6][2];
#pragma GCC unroll 6
    for (size_t r = 0; r < R; r++)
#pragma GCC unroll 2
        for (size_t c = 0; c < C; c++)
            acc[r][c] = _mm512_setzero_ps();
    const float *xr = x + r0 * ldx;
    for (size_t i = 0; i < n; i++) {
        __m512 qv[2];
#pragma GCC unroll 2
        for (size_t c = 0; c < C; c++)
            qv[c] = _mm512_load_ps(qt + i * ldq + j0 + 16 * c);
#pragma GCC unroll 6
        for (size_t r = 0; r < R; r++) {
            const __m512 xv = _mm512_set1_ps(xr[r * ldx + i]);
#pragma GCC unroll 2
            for (size_t c = 0; c < C; c++)
                acc[r][c] = _mm512_fmadd_ps(xv, qv[c], acc[r][c]);
        }
    }
#pragma GCC unroll 6
    for (size_t r = 0; r < R; r++) {
        const size_t row = r0 + r;
        const __m512 rb = _mm512_set1_ps(lim->rb[row]), rd = _mm512_set1_ps(lim->rd[row]);
        const __m512 rf = _mm512_set1_ps(lim->rf[row]);
#pragma GCC unroll 2
        for (size_t c = 0; c < C; c++) {
            const size_t j = j0 + 16 * c;
            __m512 l =
                _mm512_fmadd_ps(_mm512_loadu_ps(lim->qa + j), rb, _mm512_loadu_ps(lim->qe + j));
            l = _mm512_add_ps(_mm512_fnmadd_ps(_mm512_loadu_ps(lim->qc + j), rd, l), rf);
            _mm512_storeu_ps(out + row * ldq + j, acc[r][c]);
            __mmask16 m = _mm512_cmp_ps_mask(acc[r][c], l, _CMP_GE_OQ);
            if (nq - j < 16)
                m &= tail_mask(nq - j);
            hits[row * (ldq / 16) + j / 16] = (uint16_t)m;
        }
    }
}

static void tile_f32_avx512(const float *x, size_t ldx, size_t nr, const float *qt, size_t ldq,
                            size_t nq, size_t n, const emb_tile_limits *lim, float *out,
                            uint16_t *hits)
{
    size_t j0 = 0;
    /* Two vectors of queries while more than 16 remain (the padding covers the second one),
     * then one. */
    for (; j0 + 16 < nq; j0 += 32) {
        size_t r0 = 0;
        for (; r0 + 6 <= nr; r0 += 6)
            tile_block_avx512(x, ldx, r0, 6, qt, ldq, j0, 2, nq, n, lim, out, hits);
        for (; r0 < nr; r0++)
            tile_block_avx512(x, ldx, r0, 1, qt, ldq, j0, 2, nq, n, lim, out, hits);
    }
    if (j0 < nq) {
        size_t r0 = 0;
        for (; r0 + 6 <= nr; r0 += 6)
            tile_block_avx512(x, ldx, r0, 6, qt, ldq, j0, 1, nq, n, lim, out, hits);
        for (; r0 < nr; r0++)
            tile_block_avx512(x, ldx, r0, 1, qt, ldq, j0, 1, nq, n, lim, out, hits);
    }
}

static void f16_to_f32_avx512(const uint16_t *in, float *out, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, load_f16(in + i));
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(out + i, m, load_f16_tail(in + i, m));
    }
}

static void f32_to_f16_avx512(const float *in, uint16_t *out, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i h =
            _mm512_cvtps_ph(_mm512_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_storeu_si256((__m256i *)(out + i), h);
    }
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        const __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, in + i),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(out + i, m, h);
    }
}

/* Sixteen cosines per step, the tail under a mask. */
static void cos_rows_avx512(float *x, const float *n2, float qn, size_t n)
{
    const __m512 vq = _mm512_set1_ps(qn);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 lm = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        const __m512 den = _mm512_mul_ps(vq, _mm512_sqrt_ps(_mm512_maskz_loadu_ps(lm, n2 + i)));
        const __mmask16 ok = _mm512_mask_cmp_ps_mask(lm, den, _mm512_setzero_ps(), _CMP_GT_OQ);
        _mm512_mask_storeu_ps(x + i, lm,
                              _mm512_maskz_div_ps(ok, _mm512_maskz_loadu_ps(lm, x + i), den));
    }
}

/* Sixteen scales per step by a 32-bit gather (the first 4 bytes of each row, masked lanes not
 * read), narrowed to their low halves and widened. */
static void q1_norm2_rows_avx512(const uint8_t *rows, size_t stride, size_t nrows, size_t n,
                                 float *out)
{
    const __m512i offs =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)stride));
    const __m512 cnt = _mm512_set1_ps((float)n);
    for (size_t i = 0; i < nrows; i += 16) {
        const __mmask16 lm = nrows - i >= 16 ? (__mmask16)0xffff : tail_mask(nrows - i);
        const __m512i g =
            _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), lm, offs, rows + i * stride, 1);
        const __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
        _mm512_mask_storeu_ps(out + i, lm, _mm512_mul_ps(_mm512_mul_ps(d, d), cnt));
    }
}

/* The AVX-512 tables: one per combination of the two extras this level may use, VNNI for q1 x
 * q8 (kernels_avx512vnni.c) and VPOPCNTDQ for q1 x q1 (kernels_avx512vpopcnt.c); kernels.c
 * picks the one the CPU has. Every other kernel is the same, and so is every result. */
#define AVX512_TABLE(q1q8, q1q1, q1q1i)                                                            \
    {                                                                                              \
        .level = EMB_SIMD_AVX512, .name = "avx512", .dot_f32 = dot_f32_avx512,                     \
        .l2sq_f32 = l2sq_f32_avx512, .dot_f16 = dot_f16_avx512, .l2sq_f16 = l2sq_f16_avx512,       \
        .dot_q1 = dot_q1_avx512, .f16_to_f32 = f16_to_f32_avx512, .f32_to_f16 = f32_to_f16_avx512, \
        .dot_f32_rows = dot_f32_rows_avx512, .l2sq_f32_rows = l2sq_f32_rows_avx512,                \
        .dot_f16_rows = dot_f16_rows_avx512, .l2sq_f16_rows = l2sq_f16_rows_avx512,                \
        .dot_q1_rows = dot_q1_rows_avx512, .q1_to_f32 = q1_to_f32_avx512, .dot_q1q8_rows = q1q8,   \
        .dot_q1q1_rows = q1q1, .dot_q1q1_ilv = q1q1i, .first_at_least = first_at_least_avx512,     \
        .cos_rows = cos_rows_avx512, .q1_norm2_rows = q1_norm2_rows_avx512,                        \
        .tile_f32 = tile_f32_avx512,                                                               \
    }

const emb_kernels emb__kernels_avx512 =
    AVX512_TABLE(dot_q1q8_rows_avx512, dot_q1q1_rows_avx512, dot_q1q1_ilv_avx512);
const emb_kernels emb__kernels_avx512_vnni =
    AVX512_TABLE(emb__dot_q1q8_rows_avx512vnni, dot_q1q1_rows_avx512, dot_q1q1_ilv_avx512);
const emb_kernels emb__kernels_avx512_vpopcnt = AVX512_TABLE(
    dot_q1q8_rows_avx512, emb__dot_q1q1_rows_avx512vpopcnt, emb__dot_q1q1_ilv_avx512vpopcnt);
const emb_kernels emb__kernels_avx512_vnni_vpopcnt =
    AVX512_TABLE(emb__dot_q1q8_rows_avx512vnni, emb__dot_q1q1_rows_avx512vpopcnt,
                 emb__dot_q1q1_ilv_avx512vpopcnt);

#endif
