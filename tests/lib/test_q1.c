/*
 * test_q1.c - the Q1_0 codec: hand-computed blocks byte for byte, partial last blocks, and the
 * identities decode, dot and norm2 must satisfy.
 */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "emb.h"
#include "emb_kernels.h"
#include "helpers.h"

static const uint32_t test_dims[] = {1,   2,   7,   8,   9,   100, 127, 128,  129,
                                     200, 255, 256, 257, 300, 384, 768, 1000, 1024};

static void assert_bytes(const uint8_t *got, const uint8_t *want, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "%s: byte %zu is %#04x, want %#04x", what, i, got[i],
                     want[i]);
}

/* One full block worked out by hand. |x| alternates 0.5 (even j) and 1.0 (odd j), except
 * x0 = -0.0 and |x2| = 1.0, which keeps the sum at 64 * 0.5 + 64 * 1.0 = 96: d = 96 / 128 =
 * 0.75 = fp16 0x3a00 (bytes 00 3a). x_j is negative when j % 3 == 0, except x0 = -0.0, which
 * is >= 0 and so encodes as +d. The signs repeat every 24 values (3 bytes):
 *   j  0..7 : 1 1 1 0 1 1 0 1 (LSB first; bit 0 set for -0.0) = 0b10110111 = 0xb7
 *   j  8..15: 1 0 1 1 0 1 1 0                                  = 0b01101101 = 0x6d
 *   j 16..23: 1 1 0 1 1 0 1 1                                  = 0b11011011 = 0xdb
 *   j 24..31: 0 1 1 0 1 1 0 1 (like j 0..7 without the -0.0)  = 0b10110110 = 0xb6
 * then 6d db b6 ... up to byte 15 (j 120..127, 120 % 3 == 0) = 0xb6. */
Test(q1, hand_computed_block)
{
    static const uint8_t want[18] = {0x00, 0x3a, 0xb7, 0x6d, 0xdb, 0xb6, 0x6d, 0xdb, 0xb6,
                                     0x6d, 0xdb, 0xb6, 0x6d, 0xdb, 0xb6, 0x6d, 0xdb, 0xb6};
    float x[128];
    uint8_t out[19];
    for (int j = 0; j < 128; j++) {
        const float mag = (j % 2 || j == 2) ? 1.0f : 0.5f;
        x[j] = j % 3 == 0 ? -mag : mag;
    }
    x[0] = -0.0f;
    out[18] = 0x5a;
    emb_q1_encode(x, 128, out);
    assert_bytes(out, want, 18, "hand block");
    cr_assert_eq(out[18], 0x5a, "wrote past the block");

    float dec[128];
    emb_q1_decode(out, 128, dec);
    for (int j = 0; j < 128; j++)
        cr_assert_eq(dec[j], (j % 3 == 0 && j != 0) ? -0.75f : 0.75f, "j=%d", j);
    cr_assert_eq(emb_q1_norm2(out, 128), 128 * 0.75f * 0.75f);
}

/* dim 200 = 128 + 72. Block 0: +3, -3 alternating: d = 3.0 = 0x4200, signs 0x55. Block 1: 36
 * values of 0.25 then 36 of 0.75, all positive: d is the mean over the 72 values present,
 * (9 + 27) / 72 = 0.5 = 0x3800 (averaging over 128 would give 0.28125); bits 0..71 set = nine
 * 0xff bytes, bits 72..127 are padding and must be zero. */
Test(q1, partial_last_block_dim_200)
{
    uint8_t want[36] = {0x00, 0x42};
    memset(want + 2, 0x55, 16);
    want[18] = 0x00;
    want[19] = 0x38;
    memset(want + 20, 0xff, 9);
    memset(want + 29, 0x00, 7);

    float x[200];
    for (int j = 0; j < 128; j++)
        x[j] = j % 2 ? -3.0f : 3.0f;
    for (int k = 0; k < 72; k++)
        x[128 + k] = k < 36 ? 0.25f : 0.75f;
    uint8_t out[36 + 1];
    memset(out, 0xcc, sizeof out);
    emb_q1_encode(x, 200, out);
    assert_bytes(out, want, 36, "dim 200");
    cr_assert_eq(out[36], 0xcc, "wrote past the last block");
    cr_assert_eq(emb_q1_norm2(out, 200), 128 * 9.0f + 72 * 0.25f);
}

/* dim 131: block 1 holds {-1, 2, -3}: d = 6 / 3 = 2.0 = 0x4000, bits 0b010 = 0x02. */
Test(q1, partial_last_block_dim_131)
{
    uint8_t want[36] = {0x00, 0x3c};
    memset(want + 2, 0xff, 16);
    want[18] = 0x00;
    want[19] = 0x40;
    want[20] = 0x02;

    float x[131];
    for (int j = 0; j < 128; j++)
        x[j] = 1.0f;
    x[128] = -1.0f;
    x[129] = 2.0f;
    x[130] = -3.0f;
    uint8_t out[36];
    memset(out, 0xcc, sizeof out);
    emb_q1_encode(x, 131, out);
    assert_bytes(out, want, 36, "dim 131");

    float dec[131];
    emb_q1_decode(out, 131, dec);
    cr_assert_eq(dec[127], 1.0f);
    cr_assert_eq(dec[128], -2.0f);
    cr_assert_eq(dec[129], 2.0f);
    cr_assert_eq(dec[130], -2.0f);
}

Test(q1, zeros_encode_as_plus_zero_scale)
{
    float x[130] = {0};
    x[5] = -0.0f;
    uint8_t out[36];
    emb_q1_encode(x, 130, out);
    cr_assert_eq(out[0], 0);
    cr_assert_eq(out[1], 0);
    for (int i = 2; i < 18; i++)
        cr_assert_eq(out[i], 0xff, "zeros are >= 0: byte %d", i);
    cr_assert_eq(out[20], 0x03);
    for (int i = 21; i < 36; i++)
        cr_assert_eq(out[i], 0, "padding byte %d", i);
    cr_assert_eq(emb_q1_norm2(out, 130), 0.0f);
}

/* A scale past the largest half overflows to infinity, as GGML's conversion does. */
Test(q1, huge_values_overflow_scale)
{
    float x[128];
    for (int j = 0; j < 128; j++)
        x[j] = 1e5f;
    uint8_t out[18];
    emb_q1_encode(x, 128, out);
    cr_assert_eq(out[0] | out[1] << 8, 0x7c00);
}

/* Random rows: every decoded value has the input's sign (x >= 0 -> +d) and its block's scale,
 * the scale is the block's mean |x| to fp16 precision, padding bits are zero, and the dot and
 * norm2 identities hold. */
Test(q1, random_rows_identities)
{
    uint64_t seed = 0x5eed0101;
    for (size_t t = 0; t < sizeof test_dims / sizeof test_dims[0]; t++) {
        for (int rep = 0; rep < 4; rep++) {
            const uint32_t dim = test_dims[t];
            const uint32_t nb = emb_q1_blocks(dim);
            float *x = malloc(dim * sizeof *x), *q = malloc(dim * sizeof *q);
            float *dec = malloc(dim * sizeof *dec);
            uint8_t *blocks = malloc((size_t)nb * EMB_Q1_BLOCK + 1);
            th_rand_vec(&seed, x, dim);
            th_rand_vec(&seed, q, dim);
            if (rep == 3) /* scaled down so some scales are subnormal halves */
                for (uint32_t j = 0; j < dim; j++)
                    x[j] *= 1e-6f;
            blocks[(size_t)nb * EMB_Q1_BLOCK] = 0x77;
            emb_q1_encode(x, dim, blocks);
            cr_assert_eq(blocks[(size_t)nb * EMB_Q1_BLOCK], 0x77, "dim %u: wrote past", dim);
            emb_q1_decode(blocks, dim, dec);

            double dot = 0.0, mag = 0.0, norm2 = 0.0;
            for (uint32_t b = 0; b < nb; b++) {
                const uint8_t *blk = blocks + (size_t)b * EMB_Q1_BLOCK;
                const float d = emb_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8));
                const uint32_t j0 = b * EMB_Q1_GROUP;
                const uint32_t cnt = dim - j0 < EMB_Q1_GROUP ? dim - j0 : EMB_Q1_GROUP;
                double mean = 0.0;
                for (uint32_t j = 0; j < cnt; j++)
                    mean += fabs((double)x[j0 + j]);
                mean /= cnt;
                /* fp16 keeps 11 significant bits; subnormal halves are 2^-24 apart. */
                cr_assert(fabs(d - mean) <= mean * 0x1p-11 + 0x1p-25 + mean * 1e-6,
                          "dim %u block %u: d %a, mean %a", dim, b, (double)d, mean);
                for (uint32_t j = cnt; j < EMB_Q1_GROUP; j++)
                    cr_assert_eq((blk[2 + j / 8] >> (j % 8)) & 1, 0, "dim %u pad bit %u", dim, j);
                for (uint32_t j = 0; j < cnt; j++) {
                    const float v = dec[j0 + j];
                    cr_assert_eq(fabsf(v), d, "dim %u value %u", dim, j0 + j);
                    cr_assert_eq(signbit(v) != 0, !(x[j0 + j] >= 0.0f), "dim %u value %u", dim,
                                 j0 + j);
                }
            }
            for (uint32_t j = 0; j < dim; j++) {
                dot += (double)dec[j] * q[j];
                mag += fabs((double)dec[j] * q[j]);
                norm2 += (double)dec[j] * dec[j];
            }
            const float got = emb_dot_q1_scalar(blocks, q, dim);
            cr_assert(fabs(got - dot) <= 1e-6 * mag + FLT_MIN, "dim %u: dot %.9g want %.9g", dim,
                      (double)got, dot);
            const float n2 = emb_q1_norm2(blocks, dim);
            cr_assert(fabs(n2 - norm2) <= 1e-6 * norm2 + FLT_MIN, "dim %u: norm2 %.9g want %.9g",
                      dim, (double)n2, norm2);
            free(x);
            free(q);
            free(dec);
            free(blocks);
        }
    }
}

/* Re-encoding a decoded row reproduces the blocks exactly: every value of a block is +-d, so the
 * mean |x| is d itself (a float sum of up to 128 copies of an 11-bit d needs at most 18 bits, so
 * it is exact, and so is the division), and the signs are those bits. */
/* The search takes a one-block row's norm² from the kernels' q1_norm2_rows, d * d * dim in
 * float; its scalar twin gives emb_q1_norm2's value to the bit for every f16 scale d and every
 * one-block dim (d * d is exact in float and the product rounds once). */
Test(q1, one_block_norm2_rows_equal_emb_q1_norm2)
{
    static const uint32_t dims[] = {1, 2, 3, 7, 64, 100, 127, 128};
    uint8_t *rows = calloc(65536, EMB_Q1_BLOCK);
    float *got = malloc(65536 * sizeof *got);
    cr_assert(rows && got);
    for (uint32_t h = 0; h < 65536; h++) {
        const uint16_t hh = (uint16_t)h;
        memcpy(rows + (size_t)h * EMB_Q1_BLOCK, &hh, sizeof hh);
    }
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        const uint32_t dim = dims[di];
        emb_q1_norm2_rows_scalar(rows, EMB_Q1_BLOCK, 65536, dim, got);
        for (uint32_t h = 0; h < 65536; h++) {
            const float want = emb_q1_norm2(rows + (size_t)h * EMB_Q1_BLOCK, dim);
            cr_assert(memcmp(&want, &got[h], sizeof want) == 0 || (isnan(want) && isnan(got[h])),
                      "dim %u scale 0x%04x: %a against emb_q1_norm2's %a", dim, h, (double)got[h],
                      (double)want);
        }
    }
    free(rows);
    free(got);
}

Test(q1, encode_decode_fixed_point)
{
    uint64_t seed = 0x5eed0102;
    for (size_t t = 0; t < sizeof test_dims / sizeof test_dims[0]; t++) {
        const uint32_t dim = test_dims[t];
        const size_t bytes = (size_t)emb_q1_blocks(dim) * EMB_Q1_BLOCK;
        float *x = malloc(dim * sizeof *x), *dec = malloc(dim * sizeof *dec);
        uint8_t *a = malloc(bytes), *b = malloc(bytes);
        th_rand_vec(&seed, x, dim);
        emb_q1_encode(x, dim, a);
        emb_q1_decode(a, dim, dec);
        emb_q1_encode(dec, dim, b);
        cr_assert_eq(memcmp(a, b, bytes), 0, "dim %u", dim);
        free(x);
        free(dec);
        free(a);
        free(b);
    }
}
