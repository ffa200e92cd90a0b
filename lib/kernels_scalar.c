/*
 * kernels_scalar.c - the plain serial kernels: the fallback on any CPU and, above all, the oracle
 * every SIMD kernel is tested against.
 *
 * Oracles favour accuracy over speed: products of two floats are exact in double, so the dot
 * products and squared distances accumulate in double and round once at the end. The half
 * conversions are bit manipulation, not a cast through _Float16, so they mean the same thing on
 * every compiler and target, and they match what F16C (vcvtps2ph / vcvtph2ps) produces bit for
 * bit, NaN payloads included: a NaN keeps its sign and top payload bits and comes out quiet.
 *
 * Rejected: Kahan summation in float (double is simpler and at least as exact for n <= 65536),
 * and a half-conversion lookup table (64 KiB of cache for no measurable gain on this path).
 */
#include <math.h>
#include <string.h>

#include "emb_format.h"
#include "emb_kernels.h"
#include "kernels_internal.h"

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE binary32 -> binary16, round to nearest, ties to even. Values at or above 65520 (halfway
 * between the largest half, 65504, and 2^16) become infinity; a NaN keeps its sign and the top
 * ten payload bits and is made quiet (as vcvtps2ph does); subnormal halves are rounded exactly. */
uint16_t emb_f32_to_f16(float f)
{
    const uint32_t x = f32_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;

    if (ax >= 0x7f800000u) { /* infinity or NaN */
        if (ax == 0x7f800000u)
            return sign | 0x7c00u;
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    }
    if (ax >= 0x477ff000u) /* >= 65520: rounds past the largest finite half */
        return sign | 0x7c00u;
    if (ax >= 0x38800000u) { /* >= 2^-14: a normal half */
        /* Rebias the exponent (127 -> 15), then round the 13 dropped bits to nearest even. A
         * carry out of the mantissa correctly bumps the exponent. */
        uint32_t m = ax - 0x38000000u;
        m += 0x0fffu + ((m >> 13) & 1u);
        return (uint16_t)(sign | (m >> 13));
    }
    if (ax <= 0x33000000u) /* <= 2^-25: rounds to zero (2^-25 itself ties to the even 0) */
        return sign;
    /* A subnormal half counts units of 2^-24: value = mant * 2^(e - 150) = mant >> (126 - e)
     * units, with e in [102, 112] so the shift is in [14, 24]. Rounding up from the largest
     * subnormal yields 0x400, the smallest normal, which is the right encoding. */
    const uint32_t e = ax >> 23;
    const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;
    uint32_t r = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u)))
        r++;
    return (uint16_t)(sign | r);
}

/* IEEE binary16 -> binary32, exact. A NaN keeps its sign and payload and is made quiet (as
 * vcvtph2ps does). */
float emb_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu;
    const uint32_t m = h & 0x3ffu;

    if (e == 0x1f)
        return bits_f32(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u));
    if (e == 0) {
        /* Zero or subnormal: m units of 2^-24, exact in float. */
        const float v = (float)m * 0x1p-24f;
        return bits_f32(sign | f32_bits(v));
    }
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

/* bfloat16 is the top half of a binary32: exact, NaNs passed through untouched. */
float emb_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

/* Sum of a[i] * b[i]; exact products accumulated in double, rounded once. */
float emb_dot_f32_scalar(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return (float)s;
}

/* Sum of (a[i] - b[i])^2 in double. */
float emb_l2sq_f32_scalar(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (double)b[i];
        s += d * d;
    }
    return (float)s;
}

/* Sum of half(row[i]) * q[i] in double; the halves widen exactly. */
float emb_dot_f16_scalar(const uint16_t *row, const float *q, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)emb_f16_to_f32(row[i]) * (double)q[i];
    return (float)s;
}

/* Sum of (half(row[i]) - q[i])^2 in double. */
float emb_l2sq_f16_scalar(const uint16_t *row, const float *q, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)emb_f16_to_f32(row[i]) - (double)q[i];
        s += d * d;
    }
    return (float)s;
}

/* Q1_0 row against an f32 query: sum over blocks of d_b * sum_j (bit_j ? q_j : -q_j). Reads
 * exactly q[0..n) and the ceil(n / 128) blocks; sign bits past n are ignored. */
float emb_dot_q1_scalar(const uint8_t *blocks, const float *q, size_t n)
{
    double total = 0.0;
    for (size_t j0 = 0; j0 < n; j0 += EMB_Q1_GROUP, blocks += EMB_Q1_BLOCK) {
        const uint16_t dh = (uint16_t)(blocks[0] | (blocks[1] << 8));
        const uint8_t *qs = blocks + 2;
        const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
        double s = 0.0;
        for (size_t j = 0; j < cnt; j++) {
            /* Negate by flipping the sign bit when the value's bit is 0: random signs would
             * defeat the branch predictor of a conditional. */
            const uint32_t neg = (~(uint32_t)qs[j >> 3] >> (j & 7) & 1u) << 31;
            s += (double)bits_f32(f32_bits(q[j0 + j]) ^ neg);
        }
        total += (double)emb_f16_to_f32(dh) * s;
    }
    return (float)total;
}

void emb_f16_to_f32_scalar(const uint16_t *in, float *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = emb_f16_to_f32(in[i]);
}

void emb_f32_to_f16_scalar(const float *in, uint16_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = emb_f32_to_f16(in[i]);
}

/* ---- many rows, one query: the one-row oracles in a loop ---- */

void emb_dot_f32_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                             size_t n, float *out)
{
    for (size_t i = 0; i < nrows; i++)
        out[i] = emb_dot_f32_scalar((const float *)(const void *)(rows + i * stride), q, n);
}

void emb_l2sq_f32_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                              size_t n, float *out)
{
    for (size_t i = 0; i < nrows; i++)
        out[i] = emb_l2sq_f32_scalar((const float *)(const void *)(rows + i * stride), q, n);
}

void emb_dot_f16_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                             size_t n, float *out)
{
    for (size_t i = 0; i < nrows; i++)
        out[i] = emb_dot_f16_scalar((const uint16_t *)(const void *)(rows + i * stride), q, n);
}

void emb_l2sq_f16_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                              size_t n, float *out)
{
    for (size_t i = 0; i < nrows; i++)
        out[i] = emb_l2sq_f16_scalar((const uint16_t *)(const void *)(rows + i * stride), q, n);
}

void emb_dot_q1_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                            size_t n, float *out)
{
    for (size_t i = 0; i < nrows; i++)
        out[i] = emb_dot_q1_scalar(rows + i * stride, q, n);
}

size_t emb_first_at_least_scalar(const float *x, size_t n, float t)
{
    size_t i = 0;
    while (i < n && !(x[i] >= t))
        i++;
    return i;
}

void emb_cos_rows_scalar(float *x, const float *n2, float qn, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const float den = qn * sqrtf(n2[i]);
        x[i] = den > 0 ? x[i] / den : 0.0f;
    }
}

void emb_q1_norm2_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, size_t n,
                              float *out)
{
    for (size_t i = 0; i < nrows; i++) {
        uint16_t h;
        memcpy(&h, rows + i * stride, sizeof h);
        const float d = emb_f16_to_f32(h);
        out[i] = d * d * (float)n;
    }
}

/* The limit of pair (r, j), rounded as every level rounds it. */
static float tile_limit(const emb_tile_limits *lim, size_t r, size_t j)
{
    return fmaf(-lim->qc[j], lim->rd[r], fmaf(lim->qa[j], lim->rb[r], lim->qe[j])) + lim->rf[r];
}

/* Batch tile oracle: each dot product in double, rounded once, then the limit test. */
void emb_tile_f32_scalar(const float *x, size_t ldx, size_t nr, const float *qt, size_t ldq,
                         size_t nq, size_t n, const emb_tile_limits *lim, float *out,
                         uint16_t *hits)
{
    for (size_t r = 0; r < nr; r++) {
        const float *xr = x + r * ldx;
        for (size_t g = 0; g < (nq + 15) / 16; g++)
            hits[r * (ldq / 16) + g] = 0;
        for (size_t j = 0; j < nq; j++) {
            double s = 0.0;
            for (size_t i = 0; i < n; i++)
                s += (double)xr[i] * (double)qt[i * ldq + j];
            const float d = (float)s;
            out[r * ldq + j] = d;
            if (d >= tile_limit(lim, r, j))
                hits[r * (ldq / 16) + j / 16] |= (uint16_t)(1u << (j % 16));
        }
    }
}

void emb_q1_to_f32_scalar(const uint8_t *blocks, float *out, size_t n)
{
    for (size_t j0 = 0; j0 < n; j0 += EMB_Q1_GROUP, blocks += EMB_Q1_BLOCK) {
        const float d = emb_f16_to_f32((uint16_t)(blocks[0] | blocks[1] << 8));
        const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
        for (size_t j = 0; j < cnt; j++)
            out[j0 + j] = (blocks[2 + j / 8] >> (j % 8) & 1) ? d : -d;
    }
}

/* ---- q1 rows against the query rounded to int8 per block (q1 x q8) ---- */

float emb__q8_block(const float *q, size_t cnt, int8_t *out, int32_t *isum)
{
    float m = 0.0f;
    for (size_t j = 0; j < cnt; j++) {
        const float a = fabsf(q[j]);
        m = a > m ? a : m;
    }
    int32_t s = 0;
    if (m == 0.0f) {
        memset(out, 0, EMB_Q1_GROUP);
        *isum = 0;
        return 0.0f;
    }
    /* Below 127 / FLT_MAX the reciprocal would be infinite: scale the block by 2^64 first
     * (exact; a factor of 1 elsewhere, so other blocks' bits are unchanged). */
    const float scale = m < 0x1p-60f ? 0x1p64f : 1.0f;
    const float inv = 127.0f / (m * scale);
    for (size_t j = 0; j < cnt; j++) {
        /* Adding and subtracting 1.5 * 2^23 rounds to the nearest integer, ties to even, in
         * two float additions (no libm call, the same on every target: the library is built
         * with -ffp-contract=off, so the product is rounded before the sum). A NaN (the
         * library's callers refuse them) counts as 0 rather than reaching the cast. */
        const float y = (q[j] * scale) * inv;
        const float r = (y + 0x1.8p23f) - 0x1.8p23f;
        out[j] = r == r ? (int8_t)r : 0;
        s += out[j];
    }
    memset(out + cnt, 0, EMB_Q1_GROUP - cnt);
    *isum = s;
    return m / 127.0f;
}

size_t emb__q8_group(const float *q, size_t n, size_t g0, int8_t *qi, float *delta, int32_t *isum)
{
    const size_t gn = n - g0 < EMB__Q8_GROUP ? n - g0 : EMB__Q8_GROUP;
    size_t b = 0;
    for (size_t j = 0; j < gn; j += EMB_Q1_GROUP, b++) {
        const size_t cnt = gn - j < EMB_Q1_GROUP ? gn - j : EMB_Q1_GROUP;
        delta[b] = emb__q8_block(q + g0 + j, cnt, qi + j, &isum[b]);
    }
    return b;
}

/* Q1_0 rows against the query rounded to int8 per block: per block, T = sum of i_j over the
 * set bits (exact, in integers), v = 2 T - sum_j i_j = sum_j s_j i_j, and the row's score is
 * the fused sum over blocks, in block order, of (d_b * delta_b) * v_b. Every level computes
 * exactly these operations, so every level returns exactly these bits. */
void emb_dot_q1q8_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                              size_t n, float *out)
{
    int8_t qi[EMB__Q8_GROUP];
    float delta[EMB__Q8_BLOCKS];
    int32_t isum[EMB__Q8_BLOCKS];
    for (size_t i = 0; i < nrows; i++)
        out[i] = 0.0f;
    for (size_t g0 = 0; g0 < n; g0 += EMB__Q8_GROUP) {
        const size_t nb = emb__q8_group(q, n, g0, qi, delta, isum);
        for (size_t i = 0; i < nrows; i++) {
            const uint8_t *blk = rows + i * stride + g0 / EMB_Q1_GROUP * EMB_Q1_BLOCK;
            float tot = out[i];
            for (size_t b = 0; b < nb; b++, blk += EMB_Q1_BLOCK) {
                const float d = emb_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8));
                int32_t t = 0;
                for (size_t j = 0; j < EMB_Q1_GROUP; j++)
                    t += (blk[2 + j / 8] >> (j % 8) & 1) * qi[b * EMB_Q1_GROUP + j];
                tot = fmaf(d * delta[b], (float)(2 * t - isum[b]), tot);
            }
            out[i] = tot;
        }
    }
}

float emb_dot_q1q8_scalar(const uint8_t *blocks, const float *q, size_t n)
{
    float out;
    emb_dot_q1q8_rows_scalar(blocks, 0, 1, q, n, &out);
    return out;
}

/* ---- q1 rows against the query in 1-bit form (q1 x q1) ---- */

/* Bytes [8 h, 8 h + 8) of a block's signs as a little-endian word, assembled byte by byte so
 * that it means the same on any host and at any alignment. */
static uint64_t q1q1_word(const uint8_t *qs, size_t h)
{
    uint64_t w = 0;
    for (size_t i = 0; i < 8; i++)
        w |= (uint64_t)qs[8 * h + i] << (8 * i);
    return w;
}

/* One block of a q1 x q1 sum: the number of values whose signs differ is counted exactly (XOR,
 * then popcount of the valid bits of the words lo and hi against the query's qb[0..1]),
 * v = cnt - 2 * that = sum_j s_j t_j, and (d * qd) * v is fused into tot, d the block's fp16
 * scale widened. */
static float q1q1_block(uint64_t lo, uint64_t hi, uint16_t d16, const uint64_t *qb, float qd,
                        size_t cnt, float tot)
{
    uint64_t m[2];
    emb__q1_valid(cnt, m);
    const int diff =
        __builtin_popcountll((lo ^ qb[0]) & m[0]) + __builtin_popcountll((hi ^ qb[1]) & m[1]);
    return fmaf(emb_f16_to_f32(d16) * qd, (float)((int)cnt - 2 * diff), tot);
}

/* Q1_0 rows against the query's sign bits and scales: out[i] = the fused sum over blocks, in
 * block order from +0, of (d_b * qd[b]) * v_b (q1q1_block). Every level computes exactly these
 * operations. */
void emb_dot_q1q1_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows,
                              const uint64_t *qbits, const float *qd, size_t n, float *out)
{
    for (size_t i = 0; i < nrows; i++) {
        const uint8_t *blk = rows + i * stride;
        float tot = 0.0f;
        for (size_t j0 = 0, b = 0; j0 < n; j0 += EMB_Q1_GROUP, b++, blk += EMB_Q1_BLOCK) {
            const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
            tot = q1q1_block(q1q1_word(blk + 2, 0), q1q1_word(blk + 2, 1),
                             (uint16_t)(blk[0] | blk[1] << 8), qbits + 2 * b, qd[b], cnt, tot);
        }
        out[i] = tot;
    }
}

float emb_dot_q1q1_scalar(const uint8_t *blocks, const uint64_t *qbits, const float *qd, size_t n)
{
    float out;
    emb_dot_q1q1_rows_scalar(blocks, 0, 1, qbits, qd, n, &out);
    return out;
}

/* The same sums read from the interleaved copy: row r's block b is in tile b of group r / 32,
 * its low word at 8 l, its high word at 256 + 8 l and its scale at 512 + 2 l (l = r % 32). */
void emb_dot_q1q1_ilv_scalar(const uint8_t *ilv, size_t r0, size_t nrows, const uint64_t *qbits,
                             const float *qd, size_t n, float *out, float *n2)
{
    const size_t nb = emb_q1_blocks((uint32_t)n);
    for (size_t i = 0; i < nrows; i++) {
        const size_t r = r0 + i, l = r % EMB_Q1I_ROWS;
        const uint8_t *tile = ilv + r / EMB_Q1I_ROWS * nb * EMB_Q1I_TILE;
        float tot = 0.0f;
        for (size_t j0 = 0, b = 0; j0 < n; j0 += EMB_Q1_GROUP, b++, tile += EMB_Q1I_TILE) {
            const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
            const uint8_t *sc = tile + 16 * EMB_Q1I_ROWS + 2 * l;
            const uint16_t d16 = (uint16_t)(sc[0] | sc[1] << 8);
            tot = q1q1_block(q1q1_word(tile + 8 * l, 0),
                             q1q1_word(tile + 8 * EMB_Q1I_ROWS + 8 * l, 0), d16, qbits + 2 * b,
                             qd[b], cnt, tot);
            if (n2) { /* one block: n <= 128 */
                const float d = emb_f16_to_f32(d16);
                n2[i] = d * d * (float)n;
            }
        }
        out[i] = tot;
    }
}
