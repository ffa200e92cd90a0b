/*
 * kernels_avx512vnni.c - the q1 x q8 kernel with AVX-512 VNNI: one vpdpbusd per 64 byte
 * products instead of vpmaddubsw + vpmaddwd + vpaddd. The body is kernels_q1q8_avx512.h, shared
 * with the AVX-512 BW build in kernels_avx512.c; both return the scalar twin's bits.
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx2 -mfma -mf16c (see
 * CMakeLists.txt); kernels.c calls it only when the CPU reports AVX512_VNNI. VNNI is an extra of
 * the AVX-512 level, not a level of its own: EMBD_SIMD still says scalar, avx2 or avx512.
 */
#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#include "emb_format.h"
#include "kernels_internal.h"

#define Q1Q8_NAME   emb__dot_q1q8_rows_avx512vnni_body
#define Q1Q8_DPBUSD _mm512_dpbusd_epi32
#include "kernels_q1q8_avx512.h"

void emb__dot_q1q8_rows_avx512vnni(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                                   size_t n, float *out)
{
    emb__dot_q1q8_rows_avx512vnni_body(rows, stride, nrows, q, n, out);
}

#endif
