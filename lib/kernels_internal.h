/*
 * kernels_internal.h - the ISA-specific kernel tables, shared between the files that define them
 * (kernels_avx2.c, kernels_avx512.c) and the dispatcher (kernels.c). Not part of the public API:
 * callers go through emb_kernels_get / emb_kernels_for, which check the CPU first.
 */
#ifndef EMB_KERNELS_INTERNAL_H
#define EMB_KERNELS_INTERNAL_H

#include "emb.h"
#include "emb_format.h"
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

/* The mask of the valid sign bits of a Q1_0 block holding cnt values (1..128), as its two
 * 64-bit words: every q1 x q1 kernel counts only these. */
static inline void emb__q1_valid(size_t cnt, uint64_t m[2])
{
    m[0] = cnt >= 64 ? ~0ull : (1ull << cnt) - 1u;
    m[1] = cnt >= 128 ? ~0ull : cnt > 64 ? (1ull << (cnt - 64)) - 1u : 0u;
}

/* Whether the many-row scans issue their software prefetches (kernels_rows.h): 1, except on AMD
 * CPUs, where emb_kernels_init clears it. Written only there, before any thread starts. */
extern int emb__prefetch;

/* Scores of whole groups [g0, g0 + ng) of the interleaved q1 copy (32 x ng floats to out, and
 * as many norms to n2 unless it is NULL): the body a level writes for dot_q1q1_ilv, which
 * emb__q1i_drive calls. */
typedef void (*emb__q1i_groups_fn)(const uint8_t *ilv, size_t g0, size_t ng, const uint64_t *qbits,
                                   const float *qd, size_t n, float *out, float *n2);

/* dot_q1q1_ilv from a level's group body: the whole groups straight into out, a group that
 * [r0, r0 + nrows) covers only in part through a 32-float buffer. */
static inline __attribute__((always_inline)) void
emb__q1i_drive(emb__q1i_groups_fn groups, const uint8_t *ilv, size_t r0, size_t nrows,
               const uint64_t *qbits, const float *qd, size_t n, float *out, float *n2)
{
    float part[EMB_Q1I_ROWS], part2[EMB_Q1I_ROWS];
    size_t g = r0 / EMB_Q1I_ROWS, skip = r0 % EMB_Q1I_ROWS;
    while (nrows) {
        if (skip || nrows < EMB_Q1I_ROWS) {
            const size_t take = nrows < EMB_Q1I_ROWS - skip ? nrows : EMB_Q1I_ROWS - skip;
            groups(ilv, g, 1, qbits, qd, n, part, n2 ? part2 : NULL);
            for (size_t i = 0; i < take; i++)
                out[i] = part[skip + i];
            if (n2)
                for (size_t i = 0; i < take; i++)
                    *n2++ = part2[skip + i];
            out += take;
            nrows -= take;
            g++;
            skip = 0;
            continue;
        }
        const size_t whole = nrows / EMB_Q1I_ROWS;
        groups(ilv, g, whole, qbits, qd, n, out, n2);
        out += whole * EMB_Q1I_ROWS;
        if (n2)
            n2 += whole * EMB_Q1I_ROWS;
        nrows -= whole * EMB_Q1I_ROWS;
        g += whole;
    }
}

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
void emb__dot_q1q1_ilv_avx512vpopcnt(const uint8_t *ilv, size_t r0, size_t nrows,
                                     const uint64_t *qbits, const float *qd, size_t n, float *out,
                                     float *n2);
#endif

#if defined(__aarch64__)
/* Advanced SIMD: every AArch64 CPU has it. */
extern const emb_kernels emb__kernels_neon;
#endif

#endif
