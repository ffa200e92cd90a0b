/*
 * kernels_avx512.c - AVX-512 (F/BW/VL) kernels, 16 floats per vector.
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vpopcntdq -mavx2 -mfma -mf16c (see
 * CMakeLists.txt); nothing here runs unless kernels.c has checked the CPU. Invariants:
 * - No load touches memory past n values of a row or a query: the tail is a masked load, which
 *   cannot fault on masked-off lanes (rows live in a memory map whose end may be a page edge).
 * - Half conversions use vcvtph2ps / vcvtps2ph with round-to-nearest-even, so they agree bit for
 *   bit with the scalar twins.
 * - Reductions use four independent accumulators so the FMA latency is hidden; the order of
 *   additions therefore differs from the scalar oracle, within the tolerances the tests state.
 *
 * Q1_0: each 16-bit chunk of a block's sign bits is used directly as a __mmask16; a masked
 * subtract negates the query lanes whose bit is 0, the eight chunks of a block are summed, and
 * the block sum is scaled by d with one FMA into a vector accumulator (no horizontal sum per
 * block). Rejected: dequantising the row to floats first (a store and reload per value), and the
 * popcount identity 2 * sum(bit = 1) - sum(q), which costs the same number of vector ops.
 */
#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#include "emb_format.h"
#include "kernels_internal.h"

/* Mask of the low r lanes, r in [0, 16). */
static inline __mmask16 tail_mask(size_t r)
{
    return (__mmask16)((1u << r) - 1u);
}

static float dot_f32_avx512(const float *a, const float *b, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static inline __m512 sqdiff_acc(__m512 a, __m512 b, __m512 acc)
{
    const __m512 d = _mm512_sub_ps(a, b);
    return _mm512_fmadd_ps(d, d, acc);
}

static float l2sq_f32_avx512(const float *a, const float *b, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = sqdiff_acc(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = sqdiff_acc(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = sqdiff_acc(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = sqdiff_acc(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = sqdiff_acc(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        s1 = sqdiff_acc(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
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

static float dot_f16_avx512(const uint16_t *row, const float *q, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(load_f16(row + i), _mm512_loadu_ps(q + i), s0);
        s1 = _mm512_fmadd_ps(load_f16(row + i + 16), _mm512_loadu_ps(q + i + 16), s1);
        s2 = _mm512_fmadd_ps(load_f16(row + i + 32), _mm512_loadu_ps(q + i + 32), s2);
        s3 = _mm512_fmadd_ps(load_f16(row + i + 48), _mm512_loadu_ps(q + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(load_f16(row + i), _mm512_loadu_ps(q + i), s0);
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        s1 = _mm512_fmadd_ps(load_f16_tail(row + i, m), _mm512_maskz_loadu_ps(m, q + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static float l2sq_f16_avx512(const uint16_t *row, const float *q, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = sqdiff_acc(load_f16(row + i), _mm512_loadu_ps(q + i), s0);
        s1 = sqdiff_acc(load_f16(row + i + 16), _mm512_loadu_ps(q + i + 16), s1);
        s2 = sqdiff_acc(load_f16(row + i + 32), _mm512_loadu_ps(q + i + 32), s2);
        s3 = sqdiff_acc(load_f16(row + i + 48), _mm512_loadu_ps(q + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = sqdiff_acc(load_f16(row + i), _mm512_loadu_ps(q + i), s0);
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        s1 = sqdiff_acc(load_f16_tail(row + i, m), _mm512_maskz_loadu_ps(m, q + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

/* q where the sign bit is 1, -q where it is 0. */
static inline __m512 apply_signs(__m512 q, __mmask16 bits)
{
    return _mm512_mask_sub_ps(q, (__mmask16)~bits, _mm512_setzero_ps(), q);
}

static float dot_q1_avx512(const uint8_t *blocks, const float *q, size_t n)
{
    __m512 t0 = _mm512_setzero_ps(), t1 = _mm512_setzero_ps();
    const size_t full = n / EMB_Q1_GROUP;
    size_t b = 0;
    for (; b < full; b++, blocks += EMB_Q1_BLOCK, q += EMB_Q1_GROUP) {
        uint16_t dh, w[8];
        memcpy(&dh, blocks, sizeof dh); /* little-endian host */
        memcpy(w, blocks + 2, sizeof w);
        const __m512 a0 = apply_signs(_mm512_loadu_ps(q), w[0]);
        const __m512 a1 = apply_signs(_mm512_loadu_ps(q + 16), w[1]);
        const __m512 a2 = apply_signs(_mm512_loadu_ps(q + 32), w[2]);
        const __m512 a3 = apply_signs(_mm512_loadu_ps(q + 48), w[3]);
        const __m512 a4 = apply_signs(_mm512_loadu_ps(q + 64), w[4]);
        const __m512 a5 = apply_signs(_mm512_loadu_ps(q + 80), w[5]);
        const __m512 a6 = apply_signs(_mm512_loadu_ps(q + 96), w[6]);
        const __m512 a7 = apply_signs(_mm512_loadu_ps(q + 112), w[7]);
        const __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                                       _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
        /* Alternate the two accumulators to halve the FMA dependency chain. */
        if (b & 1)
            t1 = _mm512_fmadd_ps(s, _mm512_set1_ps(_cvtsh_ss(dh)), t1);
        else
            t0 = _mm512_fmadd_ps(s, _mm512_set1_ps(_cvtsh_ss(dh)), t0);
    }
    const size_t rem = n - full * EMB_Q1_GROUP;
    if (rem) {
        /* Last, partial block: masked loads stop at q[n - 1]; lanes past n load 0, and +-0
         * leaves the sum unchanged whatever their sign bits say. */
        uint16_t dh, w[8];
        memcpy(&dh, blocks, sizeof dh);
        memcpy(w, blocks + 2, sizeof w);
        __m512 s = _mm512_setzero_ps();
        for (size_t c = 0; c * 16 < rem; c++) {
            const size_t r = rem - c * 16;
            const __mmask16 m = r >= 16 ? (__mmask16)0xffff : tail_mask(r);
            s = _mm512_add_ps(s, apply_signs(_mm512_maskz_loadu_ps(m, q + c * 16), w[c]));
        }
        t0 = _mm512_fmadd_ps(s, _mm512_set1_ps(_cvtsh_ss(dh)), t0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(t0, t1));
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

const emb_kernels emb__kernels_avx512 = {
    .level = EMB_SIMD_AVX512,
    .name = "avx512",
    .dot_f32 = dot_f32_avx512,
    .l2sq_f32 = l2sq_f32_avx512,
    .dot_f16 = dot_f16_avx512,
    .l2sq_f16 = l2sq_f16_avx512,
    .dot_q1 = dot_q1_avx512,
    .f16_to_f32 = f16_to_f32_avx512,
    .f32_to_f16 = f32_to_f16_avx512,
};

#endif
