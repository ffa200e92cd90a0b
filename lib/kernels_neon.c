/*
 * kernels_neon.c - AArch64 Advanced SIMD (NEON) kernels, 4 floats per vector.
 *
 * NEON is part of every AArch64 CPU, so this file needs no target flags and kernels.c offers it
 * whenever the build is for aarch64 (it compiles to nothing elsewhere). tests/cross/aarch64.sh
 * cross-compiles lib/ with Debian's gcc-aarch64-linux-gnu and runs tests/cross/kernels_check.c
 * under qemu-aarch64: every kernel here against its scalar twin. Invariants, as for x86:
 * - No load touches memory past n values of a row or a query: tails go through a zeroed stack
 *   buffer (NEON has no masked loads).
 * - Half conversions are FCVTL / FCVTN under the default FPCR (round to nearest even, no flush
 *   to zero, NaNs quieted with their payload), which is the scalar twins' rounding bit for bit.
 * - Four accumulators hide the FMA latency; the additions differ in order from the scalar
 *   oracle, within the tolerances the tests state. The many-row kernels are the one-row ones
 *   inlined in a loop, so they are bit-identical to them.
 * - q1 x q8 is the scalar twin itself (integer sums, exact; AArch64 has dot-product
 *   instructions only from ARMv8.2, which this level does not assume).
 *
 * q1 x q1: vcntq_u8 of the XOR of signs, pairwise adds down to one count per row (q1q1_group4).
 *
 * Q1_0 against an f32 query: four sign bits become four lane masks (vtstq against 1, 2, 4, 8)
 * whose complement's top bit flips the query's sign (one XOR), as the AVX2 kernel does.
 */
#if defined(__aarch64__)

#include <arm_neon.h>
#include <string.h>

#include "emb_format.h"
#include "kernels_internal.h"
#include "kernels_rows.h"

#define INLINE static inline __attribute__((always_inline))

INLINE float32x4_t f16x4_to_f32(const uint16_t *p)
{
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

/* The low r halves (r < 4) widened, the other lanes zero; reads only r halves. */
INLINE float32x4_t f16_tail(const uint16_t *p, size_t r)
{
    uint16_t buf[4] = {0};
    memcpy(buf, p, r * sizeof *p);
    return f16x4_to_f32(buf);
}

/* The low r floats (r < 4), the other lanes zero; reads only r floats. */
INLINE float32x4_t f32_tail(const float *p, size_t r)
{
    float buf[4] = {0};
    memcpy(buf, p, r * sizeof *p);
    return vld1q_f32(buf);
}

INLINE float32x4_t sqdiff_acc(float32x4_t a, float32x4_t b, float32x4_t acc)
{
    const float32x4_t d = vsubq_f32(a, b);
    return vfmaq_f32(acc, d, d);
}

INLINE float sum4(float32x4_t s0, float32x4_t s1, float32x4_t s2, float32x4_t s3)
{
    return vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
}

INLINE float dot_f32_neon(const float *a, const float *b, size_t n)
{
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
    }
    for (; i + 4 <= n; i += 4)
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    if (i < n)
        s1 = vfmaq_f32(s1, f32_tail(a + i, n - i), f32_tail(b + i, n - i));
    return sum4(s0, s1, s2, s3);
}

INLINE float l2sq_f32_neon(const float *a, const float *b, size_t n)
{
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = sqdiff_acc(vld1q_f32(a + i), vld1q_f32(b + i), s0);
        s1 = sqdiff_acc(vld1q_f32(a + i + 4), vld1q_f32(b + i + 4), s1);
        s2 = sqdiff_acc(vld1q_f32(a + i + 8), vld1q_f32(b + i + 8), s2);
        s3 = sqdiff_acc(vld1q_f32(a + i + 12), vld1q_f32(b + i + 12), s3);
    }
    for (; i + 4 <= n; i += 4)
        s0 = sqdiff_acc(vld1q_f32(a + i), vld1q_f32(b + i), s0);
    if (i < n)
        s1 = sqdiff_acc(f32_tail(a + i, n - i), f32_tail(b + i, n - i), s1);
    return sum4(s0, s1, s2, s3);
}

INLINE float dot_f16_neon(const uint16_t *row, const float *q, size_t n)
{
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = vfmaq_f32(s0, f16x4_to_f32(row + i), vld1q_f32(q + i));
        s1 = vfmaq_f32(s1, f16x4_to_f32(row + i + 4), vld1q_f32(q + i + 4));
        s2 = vfmaq_f32(s2, f16x4_to_f32(row + i + 8), vld1q_f32(q + i + 8));
        s3 = vfmaq_f32(s3, f16x4_to_f32(row + i + 12), vld1q_f32(q + i + 12));
    }
    for (; i + 4 <= n; i += 4)
        s0 = vfmaq_f32(s0, f16x4_to_f32(row + i), vld1q_f32(q + i));
    if (i < n)
        s1 = vfmaq_f32(s1, f16_tail(row + i, n - i), f32_tail(q + i, n - i));
    return sum4(s0, s1, s2, s3);
}

INLINE float l2sq_f16_neon(const uint16_t *row, const float *q, size_t n)
{
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = sqdiff_acc(f16x4_to_f32(row + i), vld1q_f32(q + i), s0);
        s1 = sqdiff_acc(f16x4_to_f32(row + i + 4), vld1q_f32(q + i + 4), s1);
        s2 = sqdiff_acc(f16x4_to_f32(row + i + 8), vld1q_f32(q + i + 8), s2);
        s3 = sqdiff_acc(f16x4_to_f32(row + i + 12), vld1q_f32(q + i + 12), s3);
    }
    for (; i + 4 <= n; i += 4)
        s0 = sqdiff_acc(f16x4_to_f32(row + i), vld1q_f32(q + i), s0);
    if (i < n)
        s1 = sqdiff_acc(f16_tail(row + i, n - i), f32_tail(q + i, n - i), s1);
    return sum4(s0, s1, s2, s3);
}

/* Lane masks (all ones) for the set bits among the low four of nib. */
INLINE uint32x4_t nibble_mask(uint32_t nib)
{
    static const uint32_t bit[4] = {1, 2, 4, 8};
    return vtstq_u32(vdupq_n_u32(nib), vld1q_u32(bit));
}

/* v where the mask is set, -v elsewhere (the sign bit flipped by XOR, so -0 for +0). */
INLINE float32x4_t apply_signs(float32x4_t v, uint32x4_t m)
{
    const uint32x4_t flip = vbicq_u32(vdupq_n_u32(0x80000000u), m);
    return vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(v), flip));
}

INLINE float dot_q1_neon(const uint8_t *blocks, const float *q, size_t n)
{
    float32x4_t t0 = vdupq_n_f32(0), t1 = t0;
    for (size_t j0 = 0, b = 0; j0 < n; j0 += EMB_Q1_GROUP, b++, blocks += EMB_Q1_BLOCK) {
        uint16_t dh;
        memcpy(&dh, blocks, sizeof dh);
        const uint8_t *qs = blocks + 2;
        const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
        float32x4_t s0 = vdupq_n_f32(0), s1 = s0;
        size_t j = 0;
        for (; j + 8 <= cnt; j += 8) {
            const uint32_t byte = qs[j / 8];
            s0 = vaddq_f32(s0, apply_signs(vld1q_f32(q + j0 + j), nibble_mask(byte & 15u)));
            s1 = vaddq_f32(s1, apply_signs(vld1q_f32(q + j0 + j + 4), nibble_mask(byte >> 4)));
        }
        for (; j < cnt; j += 4) {
            /* The last, partial values: zero-filled lanes add +-0. */
            const size_t r = cnt - j < 4 ? cnt - j : 4;
            const uint32_t nib = (uint32_t)(qs[j / 8] >> (j % 8)) & 15u;
            s0 = vaddq_f32(s0, apply_signs(f32_tail(q + j0 + j, r), nibble_mask(nib)));
        }
        const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(dh)));
        if (b & 1)
            t1 = vfmaq_f32(t1, vaddq_f32(s0, s1), d);
        else
            t0 = vfmaq_f32(t0, vaddq_f32(s0, s1), d);
    }
    return vaddvq_f32(vaddq_f32(t0, t1));
}

static float dot_f32_one(const float *a, const float *b, size_t n)
{
    return dot_f32_neon(a, b, n);
}

static float l2sq_f32_one(const float *a, const float *b, size_t n)
{
    return l2sq_f32_neon(a, b, n);
}

static float dot_f16_one(const uint16_t *row, const float *q, size_t n)
{
    return dot_f16_neon(row, q, n);
}

static float l2sq_f16_one(const uint16_t *row, const float *q, size_t n)
{
    return l2sq_f16_neon(row, q, n);
}

static float dot_q1_one(const uint8_t *blocks, const float *q, size_t n)
{
    return dot_q1_neon(blocks, q, n);
}

EMB__ROWS(dot_f32_rows_neon, dot_f32_neon, float, 0)
EMB__ROWS(l2sq_f32_rows_neon, l2sq_f32_neon, float, 0)
EMB__ROWS(dot_f16_rows_neon, dot_f16_neon, uint16_t, 0)
EMB__ROWS(l2sq_f16_rows_neon, l2sq_f16_neon, uint16_t, 0)
EMB__ROWS(dot_q1_rows_neon, dot_q1_neon, uint8_t, 0)

static void q1_to_f32_neon(const uint8_t *blocks, float *out, size_t n)
{
    for (size_t j0 = 0; j0 < n; j0 += EMB_Q1_GROUP, blocks += EMB_Q1_BLOCK) {
        uint16_t dh;
        memcpy(&dh, blocks, sizeof dh);
        const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(dh)));
        const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
        for (size_t j = 0; j < cnt; j += 4) {
            const uint32_t nib = (uint32_t)(blocks[2 + j / 8] >> (j % 8)) & 15u;
            const float32x4_t v = apply_signs(d, nibble_mask(nib));
            if (cnt - j >= 4) {
                vst1q_f32(out + j0 + j, v);
            } else {
                float buf[4];
                vst1q_f32(buf, v);
                memcpy(out + j0 + j, buf, (cnt - j) * sizeof *out);
            }
        }
    }
}

static void f16_to_f32_neon(const uint16_t *in, float *out, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(out + i, f16x4_to_f32(in + i));
    if (i < n) {
        float buf[4];
        vst1q_f32(buf, f16_tail(in + i, n - i));
        memcpy(out + i, buf, (n - i) * sizeof *out);
    }
}

static void f32_to_f16_neon(const float *in, uint16_t *out, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1_u16(out + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(in + i))));
    if (i < n) {
        uint16_t buf[4];
        vst1_u16(buf, vreinterpret_u16_f16(vcvt_f16_f32(f32_tail(in + i, n - i))));
        memcpy(out + i, buf, (n - i) * sizeof *out);
    }
}

/* ---- batch tile: R rows x 8 queries, one accumulator per row and vector of 4 ---- */

INLINE void tile_block_neon(const float *x, size_t ldx, size_t r0, size_t R, const float *qt,
                            size_t ldq, size_t j0, size_t nq, size_t n, const emb_tile_limits *lim,
                            float *out, uint16_t *hits)
{
    float32x4_t acc[4][2];
    for (size_t r = 0; r < R; r++)
        acc[r][0] = acc[r][1] = vdupq_n_f32(0);
    const float *xr = x + r0 * ldx;
    for (size_t i = 0; i < n; i++) {
        const float32x4_t q0 = vld1q_f32(qt + i * ldq + j0);
        const float32x4_t q1 = vld1q_f32(qt + i * ldq + j0 + 4);
        for (size_t r = 0; r < R; r++) {
            const float xv = xr[r * ldx + i];
            acc[r][0] = vfmaq_n_f32(acc[r][0], q0, xv);
            acc[r][1] = vfmaq_n_f32(acc[r][1], q1, xv);
        }
    }
    static const uint32_t weight[4] = {1, 2, 4, 8};
    const uint32x4_t w = vld1q_u32(weight);
    const unsigned keep = nq - j0 < 8 ? (1u << (nq - j0)) - 1u : 0xffu;
    for (size_t r = 0; r < R; r++) {
        const size_t row = r0 + r;
        unsigned m = 0;
        for (size_t h = 0; h < 2; h++) {
            const size_t j = j0 + 4 * h;
            /* fma(-qc, rd, fma(qa, rb, qe)) + rf, each fused step rounded once. */
            float32x4_t l =
                vfmaq_n_f32(vld1q_f32(lim->qe + j), vld1q_f32(lim->qa + j), lim->rb[row]);
            l = vfmsq_n_f32(l, vld1q_f32(lim->qc + j), lim->rd[row]);
            l = vaddq_f32(l, vdupq_n_f32(lim->rf[row]));
            vst1q_f32(out + row * ldq + j, acc[r][h]);
            m |= vaddvq_u32(vandq_u32(vcgeq_f32(acc[r][h], l), w)) << (4 * h);
        }
        hits[row * (ldq / 16) + j0 / 16] |= (uint16_t)((m & keep) << (j0 % 16));
    }
}

static void tile_f32_neon(const float *x, size_t ldx, size_t nr, const float *qt, size_t ldq,
                          size_t nq, size_t n, const emb_tile_limits *lim, float *out,
                          uint16_t *hits)
{
    for (size_t r = 0; r < nr; r++)
        for (size_t g = 0; g < (nq + 15) / 16; g++)
            hits[r * (ldq / 16) + g] = 0;
    for (size_t j0 = 0; j0 < nq; j0 += 8) {
        size_t r0 = 0;
        for (; r0 + 4 <= nr; r0 += 4)
            tile_block_neon(x, ldx, r0, 4, qt, ldq, j0, nq, n, lim, out, hits);
        for (; r0 < nr; r0++)
            tile_block_neon(x, ldx, r0, 1, qt, ldq, j0, nq, n, lim, out, hits);
    }
}

/* ---- q1 x q1: XOR + popcount, four rows at a time ---- */

/* Four rows' counts of differing bits, from four partial sums per row (bytes 4 l .. 4 l + 3
 * for row l): two more pairwise adds leave row l's count in byte l (at most 128), widened to
 * lane l; then v = cnt - 2 pop, exact in float. */
INLINE float32x4_t q1q1_v4(uint8x16_t s, size_t cnt)
{
    s = vpaddq_u8(s, s);
    s = vpaddq_u8(s, s);
    const int32x4_t pop = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(vmovl_u8(vget_low_u8(s)))));
    return vcvtq_f32_s32(vsubq_s32(vdupq_n_s32((int32_t)cnt), vaddq_s32(pop, pop)));
}

/* Rows l < 4 at rows + min(l, live - 1) * stride, block by block: each row's 16 bytes of signs
 * XOR the query's, masked to the valid bits, counted per byte (vcntq_u8) and summed by pairwise
 * adds, the four rows' counts landing in the four lanes (no sum exceeds 128, so bytes hold
 * them); the four fp16 scales widened together; then lane l = fmaf(d_l * qd[b], cnt - 2 pop_l,
 * lane l) from +0, the scalar twin's operations. */
INLINE float32x4_t q1q1_group4(const uint8_t *rows, size_t stride, size_t live,
                               const uint64_t *qbits, const float *qd, size_t n)
{
    float32x4_t tot = vdupq_n_f32(0.0f);
    for (size_t j0 = 0, b = 0; j0 < n; j0 += EMB_Q1_GROUP, b++) {
        const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
        uint64_t m[2];
        emb__q1_valid(cnt, m);
        const uint8x16_t vm =
            vreinterpretq_u8_u64(vcombine_u64(vcreate_u64(m[0]), vcreate_u64(m[1])));
        const uint8x16_t qb = vreinterpretq_u8_u64(
            vcombine_u64(vcreate_u64(qbits[2 * b]), vcreate_u64(qbits[2 * b + 1])));
        uint8x16_t c[4];
        uint16_t dh[4];
        for (size_t l = 0; l < 4; l++) {
            const uint8_t *p = rows + (l < live ? l : live - 1) * stride + b * EMB_Q1_BLOCK;
            memcpy(&dh[l], p, sizeof dh[l]);
            c[l] = vcntq_u8(vandq_u8(veorq_u8(vld1q_u8(p + 2), qb), vm));
        }
        /* 16 -> 8 -> 4 partial sums per row, then q1q1_v4. */
        const float32x4_t v = q1q1_v4(vpaddq_u8(vpaddq_u8(c[0], c[1]), vpaddq_u8(c[2], c[3])), cnt);
        const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dh)));
        tot = vfmaq_f32(tot, vmulq_n_f32(d, qd[b]), v);
    }
    return tot;
}

/* Groups [g0, g0 + ng) of the interleaved q1 copy (dot_q1q1_ilv): per block, four rows a step,
 * two rows' low words in one vector and their high words in another, counted per byte and
 * added (at most 16 a byte), then summed by pairwise adds as q1q1_group4 does; the four scales
 * are one 8-byte load. The same operations as the twin, so its bits. */
static void q1q1_ilv_groups_neon(const uint8_t *ilv, size_t g0, size_t ng, const uint64_t *qbits,
                                 const float *qd, size_t n, float *out, float *n2)
{
    const size_t nb = emb_q1_blocks((uint32_t)n);
    for (size_t g = 0; g < ng; g++, out += EMB_Q1I_ROWS) {
        float32x4_t tot[8];
        for (size_t s4 = 0; s4 < 8; s4++)
            tot[s4] = vdupq_n_f32(0.0f);
        const uint8_t *t = ilv + (g0 + g) * nb * EMB_Q1I_TILE;
        for (size_t j0 = 0, b = 0; j0 < n; j0 += EMB_Q1_GROUP, b++, t += EMB_Q1I_TILE) {
            const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
            uint64_t m[2];
            emb__q1_valid(cnt, m);
            const uint8x16_t q0 = vreinterpretq_u8_u64(vdupq_n_u64(qbits[2 * b]));
            const uint8x16_t q1 = vreinterpretq_u8_u64(vdupq_n_u64(qbits[2 * b + 1]));
            const uint8x16_t vm0 = vreinterpretq_u8_u64(vdupq_n_u64(m[0]));
            const uint8x16_t vm1 = vreinterpretq_u8_u64(vdupq_n_u64(m[1]));
            for (size_t s4 = 0; s4 < 8; s4++) {
                uint8x16_t c[2];
                for (size_t h = 0; h < 2; h++) {
                    const uint8_t *lo = t + 32 * s4 + 16 * h;
                    c[h] = vaddq_u8(vcntq_u8(vandq_u8(veorq_u8(vld1q_u8(lo), q0), vm0)),
                                    vcntq_u8(vandq_u8(veorq_u8(vld1q_u8(lo + 256), q1), vm1)));
                }
                /* 8 -> 4 partial sums per row, then q1q1_v4. */
                const float32x4_t v = q1q1_v4(vpaddq_u8(c[0], c[1]), cnt);
                uint16_t dh[4];
                memcpy(dh, t + 512 + 8 * s4, sizeof dh);
                const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dh)));
                tot[s4] = vfmaq_f32(tot[s4], vmulq_n_f32(d, qd[b]), v);
                if (n2) /* one block per row */
                    vst1q_f32(n2 + 4 * s4, vmulq_n_f32(vmulq_f32(d, d), (float)cnt));
            }
        }
        for (size_t s4 = 0; s4 < 8; s4++)
            vst1q_f32(out + 4 * s4, tot[s4]);
        if (n2)
            n2 += EMB_Q1I_ROWS;
    }
}

static void dot_q1q1_ilv_neon(const uint8_t *ilv, size_t r0, size_t nrows, const uint64_t *qbits,
                              const float *qd, size_t n, float *out, float *n2)
{
    emb__q1i_drive(q1q1_ilv_groups_neon, ilv, r0, nrows, qbits, qd, n, out, n2);
}

/* The scan's filter: four compares per instruction, 16 values per test. */
static size_t first_at_least_neon(const float *x, size_t n, float t)
{
    const float32x4_t vt = vdupq_n_f32(t);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const uint32x4_t m = vorrq_u32(
            vorrq_u32(vcgeq_f32(vld1q_f32(x + i), vt), vcgeq_f32(vld1q_f32(x + i + 4), vt)),
            vorrq_u32(vcgeq_f32(vld1q_f32(x + i + 8), vt), vcgeq_f32(vld1q_f32(x + i + 12), vt)));
        if (vmaxvq_u32(m))
            break;
    }
    for (; i < n; i++)
        if (x[i] >= t)
            return i;
    return n;
}

/* Four cosines per step; the tail as the scalar twin. */
static void cos_rows_neon(float *x, const float *n2, float qn, size_t n)
{
    const float32x4_t vq = vdupq_n_f32(qn);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t den = vmulq_f32(vq, vsqrtq_f32(vld1q_f32(n2 + i)));
        const uint32x4_t ok = vcgtq_f32(den, vdupq_n_f32(0.0f));
        const float32x4_t c = vdivq_f32(vld1q_f32(x + i), den);
        vst1q_f32(x + i, vreinterpretq_f32_u32(vandq_u32(ok, vreinterpretq_u32_f32(c))));
    }
    emb_cos_rows_scalar(x + i, n2 + i, qn, n - i);
}

/* Four scales per step, widened by the half-precision conversion; the tail as the twin. */
static void q1_norm2_rows_neon(const uint8_t *rows, size_t stride, size_t nrows, size_t n,
                               float *out)
{
    const float32x4_t cnt = vdupq_n_f32((float)n);
    size_t i = 0;
    for (; i + 4 <= nrows; i += 4) {
        uint16_t h[4];
        for (size_t l = 0; l < 4; l++)
            memcpy(&h[l], rows + (i + l) * stride, sizeof h[l]);
        const float32x4_t d = f16x4_to_f32(h);
        vst1q_f32(out + i, vmulq_f32(vmulq_f32(d, d), cnt));
    }
    emb_q1_norm2_rows_scalar(rows + i * stride, stride, nrows - i, n, out + i);
}

static void dot_q1q1_rows_neon(const uint8_t *rows, size_t stride, size_t nrows,
                               const uint64_t *qbits, const float *qd, size_t n, float *out)
{
    size_t r0 = 0;
    for (; r0 + 4 <= nrows; r0 += 4)
        vst1q_f32(out + r0, q1q1_group4(rows + r0 * stride, stride, 4, qbits, qd, n));
    if (r0 < nrows) {
        float tmp[4];
        vst1q_f32(tmp, q1q1_group4(rows + r0 * stride, stride, nrows - r0, qbits, qd, n));
        memcpy(out + r0, tmp, (nrows - r0) * sizeof *out);
    }
}

const emb_kernels emb__kernels_neon = {
    .level = EMB_SIMD_NEON,
    .name = "neon",
    .dot_f32 = dot_f32_one,
    .l2sq_f32 = l2sq_f32_one,
    .dot_f16 = dot_f16_one,
    .l2sq_f16 = l2sq_f16_one,
    .dot_q1 = dot_q1_one,
    .f16_to_f32 = f16_to_f32_neon,
    .f32_to_f16 = f32_to_f16_neon,
    .dot_f32_rows = dot_f32_rows_neon,
    .l2sq_f32_rows = l2sq_f32_rows_neon,
    .dot_f16_rows = dot_f16_rows_neon,
    .l2sq_f16_rows = l2sq_f16_rows_neon,
    .dot_q1_rows = dot_q1_rows_neon,
    .q1_to_f32 = q1_to_f32_neon,
    .dot_q1q8_rows = emb_dot_q1q8_rows_scalar,
    .dot_q1q1_rows = dot_q1q1_rows_neon,
    .dot_q1q1_ilv = dot_q1q1_ilv_neon,
    .first_at_least = first_at_least_neon,
    .cos_rows = cos_rows_neon,
    .q1_norm2_rows = q1_norm2_rows_neon,
    .tile_f32 = tile_f32_neon,
};

#endif
