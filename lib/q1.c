/*
 * q1.c - the Q1_0 row codec: GGML's 1-bit format, byte for byte.
 *
 * A block covers 128 values: a little-endian fp16 scale d, then 16 bytes of signs, value j in
 * bit j % 8 of byte j / 8. Encoding follows ggml's quantize_row_q1_0_ref exactly so stores and
 * GGUF files agree bit for bit: |x| is summed in float in element order, d = sum / count
 * rounded to fp16 (nearest even), bit = x >= 0 (so -0.0 and +0.0 both encode as +d). For a dim
 * that is not a multiple of 128 the last block averages only the values present and its
 * unused bits are zero; ggml itself never sees such rows, so this is the natural extension.
 *
 * Rejected: a least-squares refit of d after rounding signs (ggml does not, and bit-exact
 * agreement with ggml matters more than a sliver of accuracy), and summing in double (would
 * round differently from ggml for some inputs).
 */
#include <math.h>
#include <string.h>

#include "emb.h"
#include "emb_kernels.h"

/* Values held by the block that starts at value j0 of a dim-value row. */
static uint32_t block_count(uint32_t dim, uint32_t j0)
{
    return dim - j0 < EMB_Q1_GROUP ? dim - j0 : EMB_Q1_GROUP;
}

static float block_scale(const uint8_t *blk)
{
    return emb_f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8)));
}

/* Writes emb_q1_blocks(dim) * EMB_Q1_BLOCK bytes to out; reads exactly x[0..dim). */
void emb_q1_encode(const float *x, uint32_t dim, uint8_t *out)
{
    for (uint32_t j0 = 0; j0 < dim; j0 += EMB_Q1_GROUP, out += EMB_Q1_BLOCK) {
        const uint32_t cnt = block_count(dim, j0);
        const float *xb = x + j0;
        float sum = 0.0f;
        for (uint32_t j = 0; j < cnt; j++)
            sum += fabsf(xb[j]);
        const uint16_t d = emb_f32_to_f16(sum / (float)cnt);
        out[0] = (uint8_t)(d & 0xffu);
        out[1] = (uint8_t)(d >> 8);
        memset(out + 2, 0, EMB_Q1_BLOCK - 2);
        /* Branch-free: signs are random, and a mispredicted branch per value cost 5x. */
        for (uint32_t j = 0; j < cnt; j++)
            out[2 + j / 8] |= (uint8_t)((uint32_t)(xb[j] >= 0.0f) << (j % 8));
    }
}

/* Writes out[0..dim): +d for a set bit, -d for a clear one. Bits past dim are not read. */
void emb_q1_decode(const uint8_t *blocks, uint32_t dim, float *out)
{
    for (uint32_t j0 = 0; j0 < dim; j0 += EMB_Q1_GROUP, blocks += EMB_Q1_BLOCK) {
        const uint32_t cnt = block_count(dim, j0);
        const float d = block_scale(blocks);
        const float pm[2] = {-d, d}; /* indexed by the bit: no branch on random signs */
        const uint8_t *qs = blocks + 2;
        for (uint32_t j = 0; j < cnt; j++)
            out[j0 + j] = pm[(qs[j / 8] >> (j % 8)) & 1u];
    }
}

/* Squared L2 norm of the decoded row: every value is +-d, so each block adds d^2 times the
 * values it holds. Accumulated in double, rounded once. */
float emb_q1_norm2(const uint8_t *blocks, uint32_t dim)
{
    double s = 0.0;
    for (uint32_t j0 = 0; j0 < dim; j0 += EMB_Q1_GROUP, blocks += EMB_Q1_BLOCK) {
        const double d = block_scale(blocks);
        s += d * d * (double)block_count(dim, j0);
    }
    return (float)s;
}

/* Tile b of the group: the rows' low sign words at 8 r, their high words at 256 + 8 r, their
 * scales at 512 + 2 r (r = 0..31), byte for byte as the rows hold them. */
void emb_q1_interleave(const uint8_t *rows, size_t stride, size_t nrows, uint32_t dim, uint8_t *out)
{
    const uint32_t nb = emb_q1_blocks(dim);
    memset(out, 0, (size_t)nb * EMB_Q1I_TILE);
    for (uint32_t b = 0; b < nb; b++, out += EMB_Q1I_TILE)
        for (size_t r = 0; r < nrows; r++) {
            const uint8_t *blk = rows + r * stride + (size_t)b * EMB_Q1_BLOCK;
            memcpy(out + 8 * r, blk + 2, 8);
            memcpy(out + 8 * EMB_Q1I_ROWS + 8 * r, blk + 10, 8);
            memcpy(out + 16 * EMB_Q1I_ROWS + 2 * r, blk, 2);
        }
}

/* The query's 1-bit form for q1 x q1 (emb_kernels.h): the signs as emb_q1_encode sets them, in
 * words, and a float scale per block. The mean is taken in double so that no finite query
 * overflows it (128 values near FLT_MAX sum past float's range); it is at most max |q_j|, so
 * the float it rounds to is finite. */
void emb_q1_encode_query(const float *q, size_t n, uint64_t *qbits, float *qd)
{
    for (size_t j0 = 0, b = 0; j0 < n; j0 += EMB_Q1_GROUP, b++) {
        const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
        double sum = 0.0;
        uint64_t w[2] = {0, 0};
        for (size_t j = 0; j < cnt; j++) {
            sum += fabs((double)q[j0 + j]);
            w[j / 64] |= (uint64_t)(q[j0 + j] >= 0.0f) << (j % 64);
        }
        qbits[2 * b] = w[0];
        qbits[2 * b + 1] = w[1];
        qd[b] = (float)(sum / (double)cnt);
    }
}
