/*
 * kernels_avx512vpopcnt.c - the q1 x q1 kernel with AVX512_VPOPCNTDQ: one vpopcntq per eight
 * 64-bit halves of sign bits instead of two vpshufb nibble lookups, an add and a vpsadbw. The
 * body is kernels_q1q1_avx512.h, shared with the AVX-512 BW build in kernels_avx512.c; both
 * return the scalar twin's bits.
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vpopcntdq -mavx2 -mfma -mf16c -mpopcnt
 * (see CMakeLists.txt); kernels.c calls it only when the CPU reports AVX512_VPOPCNTDQ (Ice Lake
 * and later, Zen 4; not Skylake-SP or Cascade Lake). Like VNNI it is an extra of the AVX-512
 * level, not a level of its own.
 */
#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#include "emb_format.h"
#include "kernels_internal.h"

#define Q1Q1_NAME   emb__dot_q1q1_rows_avx512vpopcnt_body
#define Q1Q1I_NAME  emb__dot_q1q1_ilv_avx512vpopcnt_body
#define Q1Q1_POPCNT _mm512_popcnt_epi64
#include "kernels_q1q1_avx512.h"

void emb__dot_q1q1_rows_avx512vpopcnt(const uint8_t *rows, size_t stride, size_t nrows,
                                      const uint64_t *qbits, const float *qd, size_t n, float *out)
{
    emb__dot_q1q1_rows_avx512vpopcnt_body(rows, stride, nrows, qbits, qd, n, out);
}

void emb__dot_q1q1_ilv_avx512vpopcnt(const uint8_t *ilv, size_t r0, size_t nrows,
                                     const uint64_t *qbits, const float *qd, size_t n, float *out,
                                     float *n2)
{
    emb__dot_q1q1_ilv_avx512vpopcnt_body(ilv, r0, nrows, qbits, qd, n, out, n2);
}

#endif
