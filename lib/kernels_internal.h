/*
 * kernels_internal.h - the ISA-specific kernel tables, shared between the files that define them
 * (kernels_avx2.c, kernels_avx512.c) and the dispatcher (kernels.c). Not part of the public API:
 * callers go through emb_kernels_get / emb_kernels_for, which check the CPU first.
 */
#ifndef EMB_KERNELS_INTERNAL_H
#define EMB_KERNELS_INTERNAL_H

#include "emb_kernels.h"

/* The q1 x q8 kernels quantise the query EMB__Q8_GROUP values (32 blocks) at a time into a
 * stack buffer, so their stack use stays small whatever the dimension. */
#define EMB__Q8_GROUP  4096u
#define EMB__Q8_BLOCKS (EMB__Q8_GROUP / 128u)

/* Rounds one Q1_0 block of the query, q[0..cnt) with cnt in [1, 128], to int8 exactly as every
 * q1 x q8 kernel does: m = max |q_j|, i_j = q_j * (127 / m) rounded to nearest (ties to even),
 * so |i_j| <= 127; out[cnt..128) are zero. Returns delta = m / 127 (0 for an all-zero block, whose
 * i_j are all 0) and stores sum_j i_j in *isum. q must be finite. */
float emb__q8_block(const float *q, size_t cnt, int8_t *out, int32_t *isum);

/* Quantises the blocks of q[g0 .. g0 + min(EMB__Q8_GROUP, n - g0)) into qi (128 per block, tails
 * zero), delta and isum; returns the number of blocks. */
size_t emb__q8_group(const float *q, size_t n, size_t g0, int8_t *qi, float *delta, int32_t *isum);

#if defined(__x86_64__)
/* AVX2 + FMA + F16C. Only call through it when the CPU has all three. */
extern const emb_kernels emb__kernels_avx2;
/* AVX-512 F/BW/VL (+ AVX2, FMA, F16C). Only call through it when the CPU has them. */
extern const emb_kernels emb__kernels_avx512;
/* The same with AVX-512 VNNI (vpdpbusd) for the q1 x q8 kernel, with AVX512_VPOPCNTDQ
 * (vpopcntq) for the q1 x q1 kernel, and with both. */
extern const emb_kernels emb__kernels_avx512_vnni;
extern const emb_kernels emb__kernels_avx512_vpopcnt;
extern const emb_kernels emb__kernels_avx512_vnni_vpopcnt;
void emb__dot_q1q8_rows_avx512vnni(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                                   size_t n, float *out);
void emb__dot_q1q1_rows_avx512vpopcnt(const uint8_t *rows, size_t stride, size_t nrows,
                                      const uint64_t *qbits, const float *qd, size_t n, float *out);
#endif

#if defined(__aarch64__)
/* Advanced SIMD: every AArch64 CPU has it. */
extern const emb_kernels emb__kernels_neon;
#endif

#endif
