/*
 * kernels_q1q8_avx512.h - the AVX-512 q1 x q8 kernel body, included twice: by kernels_avx512.c
 * (AVX-512 BW: the byte products by vpmaddubsw + vpmaddwd) and by kernels_avx512vnni.c (one
 * vpdpbusd). The includer defines Q1Q8_DPBUSD(acc, a, b) (acc += sum of the four products of
 * unsigned a and signed b bytes per 32-bit lane) and Q1Q8_NAME, the function's name. Both ways
 * give the same integers, so the two builds return the same bits, those of the scalar twin.
 *
 * Sixteen rows at a time: for each block, the sign bits of every row become a byte mask
 * (kmovq, then a zero-masked move of ones: bytes 0 or 1), multiplied with the query's int8
 * block and summed into 32-bit lanes; the 16 accumulators are reduced together by a transpose
 * (45 instructions for 16 rows, instead of a horizontal sum per row) and the block's
 * (d * delta) * (2 T - sum i) is fused into each row's total, lane r holding row r. Sums of
 * integers are exact in any order; the float steps are the scalar twin's, per lane. A group of
 * fewer than 16 rows repeats its last row (a valid read) and drops the extra lanes.
 */
#ifndef Q1Q8_NAME
#error "define Q1Q8_NAME and Q1Q8_DPBUSD before including kernels_q1q8_avx512.h"
#endif

#ifndef Q1Q8_PF_BYTES
#define Q1Q8_PF_BYTES 8192u
#endif

/* Lane r of the result = sum of the 16 lanes of a[r]. */
static inline __m512i q1q8_reduce16(__m512i a[16])
{
    __m512i v[8], w[4], x[2];
    /* Rows 2m and 2m + 1: halves of v[m] hold their 8 partial sums. */
#pragma GCC unroll 8
    for (int m = 0; m < 8; m++)
        v[m] = _mm512_add_epi32(_mm512_shuffle_i32x4(a[2 * m], a[2 * m + 1], 0x44),
                                _mm512_shuffle_i32x4(a[2 * m], a[2 * m + 1], 0xee));
        /* Quarter t of w[p] holds row 4 p + t (4 partial sums). */
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++)
        w[p] = _mm512_add_epi32(_mm512_shuffle_i32x4(v[2 * p], v[2 * p + 1], 0x88),
                                _mm512_shuffle_i32x4(v[2 * p], v[2 * p + 1], 0xdd));
        /* Quarter t of x[0]: rows t, 4 + t, t, 4 + t; of x[1]: rows 8 + t, 12 + t, ... */
#pragma GCC unroll 2
    for (int p = 0; p < 2; p++)
        x[p] = _mm512_add_epi32(_mm512_unpacklo_epi32(w[2 * p], w[2 * p + 1]),
                                _mm512_unpackhi_epi32(w[2 * p], w[2 * p + 1]));
    /* Lane 4 t + m holds row 4 m + t: a transpose of 4 x 4 puts row r in lane r. */
    const __m512i s =
        _mm512_add_epi32(_mm512_unpacklo_epi64(x[0], x[1]), _mm512_unpackhi_epi64(x[0], x[1]));
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_epi32(idx, s);
}

/* Adds the blocks [0, nb) of 16 rows (row l at base + min(l, live - 1) * stride; live is a
 * constant 16 for full groups) into tot, lane l for row l. */
static inline __attribute__((always_inline)) __m512
q1q8_group(const uint8_t *base, size_t stride, size_t live, const int8_t *qi, const float *delta,
           const int32_t *isum, size_t nb, __m512 tot)
{
    const __m512i ones = _mm512_set1_epi8(1);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i offs = _mm512_mullo_epi32(
        _mm512_min_epu32(iota, _mm512_set1_epi32((int)live - 1)), _mm512_set1_epi32((int)stride));
    for (size_t b = 0; b < nb; b++, base += EMB_Q1_BLOCK) {
        const __m512i q0 = _mm512_load_si512(qi + b * EMB_Q1_GROUP);
        const __m512i q1 = _mm512_load_si512(qi + b * EMB_Q1_GROUP + 64);
        __m512i acc[16];
#pragma GCC unroll 16
        for (size_t l = 0; l < 16; l++) {
            const uint8_t *p = base + (l < live ? l : live - 1) * stride;
            uint64_t w0, w1;
            memcpy(&w0, p + 2, sizeof w0);
            memcpy(&w1, p + 10, sizeof w1);
            const __m512i a0 = _mm512_maskz_mov_epi8(_cvtu64_mask64(w0), ones);
            const __m512i a1 = _mm512_maskz_mov_epi8(_cvtu64_mask64(w1), ones);
            acc[l] = Q1Q8_DPBUSD(Q1Q8_DPBUSD(_mm512_setzero_si512(), a0, q0), a1, q1);
        }
        const __m512i t = q1q8_reduce16(acc);
        const __m512 v = _mm512_cvtepi32_ps(
            _mm512_sub_epi32(_mm512_slli_epi32(t, 1), _mm512_set1_epi32(isum[b])));
        /* The 16 scales: a 32-bit gather at each block's start, low halves kept. */
        const __m512i g = _mm512_i32gather_epi32(offs, base, 1);
        const __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
        tot = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(delta[b])), v, tot);
    }
    return tot;
}

static void Q1Q8_NAME(const uint8_t *rows, size_t stride, size_t nrows, const float *q, size_t n,
                      float *out)
{
    _Alignas(64) int8_t qi[EMB__Q8_GROUP];
    float delta[EMB__Q8_BLOCKS];
    int32_t isum[EMB__Q8_BLOCKS];
    for (size_t i = 0; i < nrows; i++)
        out[i] = 0.0f;
    for (size_t g0 = 0; g0 < n; g0 += EMB__Q8_GROUP) {
        const size_t nb = emb__q8_group(q, n, g0, qi, delta, isum);
        const uint8_t *base = rows + g0 / EMB_Q1_GROUP * EMB_Q1_BLOCK;
        size_t r0 = 0;
        for (; r0 + 16 <= nrows; r0 += 16) {
            /* The rows 8 KiB ahead, as the other many-row scans do (a 1M x 768 q1 scan ran at
             * 39% of memchr's read rate without it). */
            const size_t from = r0 * stride + Q1Q8_PF_BYTES,
                         to = (r0 + 16) * stride + Q1Q8_PF_BYTES;
            for (size_t at = from; emb__prefetch && at < to && at < nrows * stride; at += 64)
                _mm_prefetch((const char *)rows + at, _MM_HINT_T0);
            const __m512 tot = _mm512_loadu_ps(out + r0);
            _mm512_storeu_ps(out + r0,
                             q1q8_group(base + r0 * stride, stride, 16, qi, delta, isum, nb, tot));
        }
        if (r0 < nrows) {
            const size_t live = nrows - r0;
            const __mmask16 lm = (__mmask16)((1u << live) - 1u);
            const __m512 tot = _mm512_maskz_loadu_ps(lm, out + r0);
            _mm512_mask_storeu_ps(
                out + r0, lm,
                q1q8_group(base + r0 * stride, stride, live, qi, delta, isum, nb, tot));
        }
    }
}
