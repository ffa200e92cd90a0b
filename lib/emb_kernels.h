/*
 * emb_kernels.h - scoring and conversion kernels with run-time CPU dispatch.
 *
 * Every kernel has a plain serial twin (the *_scalar functions), kept forever as the test oracle.
 * ISA-specific kernels live in their own files compiled with their own target flags
 * (kernels_avx2.c, kernels_avx512.c). The dispatch table is chosen once by emb_kernels_init,
 * before any worker thread starts, and never changes afterwards (no lazily initialised function
 * pointers: that would be a data race).
 *
 * Row layouts (see emb_format.h): f16 rows are IEEE binary16, f32 rows float, q1 rows GGML
 * Q1_0 blocks. Kernels take n = the number of values to use; callers pass dim. Queries are
 * f32, except for q1 x q1, whose query is in 1-bit form (emb_q1_encode_query).
 *
 * Canonical scores: for each level, the one-row kernel (dot_f16, dot_q1, ...) defines the score
 * of a row, and the many-row kernels (*_rows) return bit for bit the same value for every row,
 * whatever the number of rows or their grouping. That is what lets a scan split across threads,
 * rescoring, and a batch answer exactly what one query on one thread answers. The batch tile
 * kernel (tile_f32) is the exception: it is a fast filter whose results are within a stated
 * bound of the exact dot product, and callers confirm its hits with the one-row kernel.
 */
#ifndef EMB_KERNELS_H
#define EMB_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef enum emb_simd {
    EMB_SIMD_SCALAR = 0,
    EMB_SIMD_AVX2 = 1,   /* AVX2 + FMA + F16C */
    EMB_SIMD_AVX512 = 2, /* AVX-512 F/BW/VL (+ VPOPCNTDQ where present) */
    EMB_SIMD_NEON = 3,
} emb_simd;

/* The limit a batch tile compares each dot product with, in terms the caller keeps per query
 * (qa, qc, qe: ldq values each, finite) and per row (rb, rd, rf: nr values each):
 * lim(r, j) = fma(-qc[j], rd[r], fma(qa[j], rb[r], qe[j])) + rf[r], rounded exactly so (fused
 * multiply-adds, then one add) at every level. search.c expresses "this pair may beat the
 * query's worst kept hit" for every metric in this form. */
typedef struct emb_tile_limits {
    const float *qa, *qc, *qe;
    const float *rb, *rd, *rf;
} emb_tile_limits;

typedef struct emb_kernels {
    emb_simd level;
    const char *name; /* "scalar", "avx2", "avx512", "neon" */
    float (*dot_f32)(const float *a, const float *b, size_t n);
    float (*l2sq_f32)(const float *a, const float *b, size_t n);
    float (*dot_f16)(const uint16_t *row, const float *q, size_t n);
    float (*l2sq_f16)(const uint16_t *row, const float *q, size_t n);
    /* q1 row (dim values, emb_q1_blocks(dim) blocks) against an f32 query: sum of d_b * s_j * q_j,
     * computed without dequantising the row to memory. */
    float (*dot_q1)(const uint8_t *blocks, const float *q, size_t n);
    void (*f16_to_f32)(const uint16_t *in, float *out, size_t n);
    void (*f32_to_f16)(const float *in, uint16_t *out, size_t n);
    /* Many rows against one query: out[i] = the one-row kernel on row i, which starts at
     * rows + i * stride bytes, for i in [0, nrows). Bit-identical to the one-row kernel. */
    void (*dot_f32_rows)(const uint8_t *rows, size_t stride, size_t nrows, const float *q, size_t n,
                         float *out);
    void (*l2sq_f32_rows)(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                          size_t n, float *out);
    void (*dot_f16_rows)(const uint8_t *rows, size_t stride, size_t nrows, const float *q, size_t n,
                         float *out);
    void (*l2sq_f16_rows)(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                          size_t n, float *out);
    void (*dot_q1_rows)(const uint8_t *rows, size_t stride, size_t nrows, const float *q, size_t n,
                        float *out);
    /* Q1_0 row (n values) decoded to floats, +d or -d each: exactly emb_q1_decode. */
    void (*q1_to_f32)(const uint8_t *blocks, float *out, size_t n);
    /* Q1_0 rows against the query rounded to int8 per 128-value block (q1 x q8; the rounding
     * and the arithmetic are those of emb_dot_q1q8_rows_scalar): what the 1-bit stage of a
     * search uses unless told to use the f32 query. Integer dot products plus one fused
     * multiply-add per block in block order, so every level returns the scalar's bits exactly.
     * n <= EMB_MAX_DIM, q finite. */
    void (*dot_q1q8_rows)(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                          size_t n, float *out);
    /* Q1_0 rows against the query in 1-bit form too (q1 x q1: XOR + popcount), the query given
     * as emb_q1_encode_query writes it (qbits: two little-endian words of signs per block, the
     * bits past n zero; qd: one float scale per block). out[i] starts at +0 and, per block b in
     * block order, becomes fmaf(d_b * qd[b], (float)(cnt_b - 2 * popcount((r_b ^ q_b) &
     * valid_b)), out[i]): d_b the row's fp16 scale widened, cnt_b the values the block holds
     * (128, or n % 128 for the last), valid_b the mask of those values' bits (the row's bits
     * past n are never counted). The product d_b * qd[b] is rounded to float, then fused; the
     * integer part is exact, so every level returns the scalar's bits. n <= EMB_MAX_DIM. */
    void (*dot_q1q1_rows)(const uint8_t *rows, size_t stride, size_t nrows, const uint64_t *qbits,
                          const float *qd, size_t n, float *out);
    /* dot_q1q1_rows over the interleaved copy of the q1 rows (EMB_SEC_ROWS_Q1I, emb_format.h;
     * ilv is the section's first byte): rows [r0, r0 + nrows) of a table of n values per row,
     * out[i] for row r0 + i, the same bits as dot_q1q1_rows on the same rows. Groups of 32 rows
     * whose tiles hold each block's low sign words, high words and scales side by side: whole
     * vectors of them load, and no shuffle has to find them. Reads only the tiles of the groups
     * those rows lie in. n <= EMB_MAX_DIM. When n2 is not NULL (only for one-block rows, n <=
     * 128) n2[i] becomes the row's emb_q1_norm2, d * d * n in float as q1_norm2_rows computes
     * it, from the scales the kernel loads anyway (a cosine scan then needs no second pass). */
    void (*dot_q1q1_ilv)(const uint8_t *ilv, size_t r0, size_t nrows, const uint64_t *qbits,
                         const float *qd, size_t n, float *out, float *n2);
    /* The scan's filter: the first i in [0, n) with x[i] >= t (an ordered compare: a NaN never
     * qualifies, and t = -inf admits every other value), or n when there is none. Exact, so every
     * level returns the same index. */
    size_t (*first_at_least)(const float *x, size_t n, float t);
    /* Cosines from dot products: x[i] becomes x[i] / (qn * sqrtf(n2[i])) when that denominator
     * is > 0 (an ordered compare), else +0 (a zero row or query, a NaN norm). A product, a square
     * root and a quotient, each correctly rounded, so every level returns the scalar's bits. */
    void (*cos_rows)(float *x, const float *n2, float qn, size_t n);
    /* emb_q1_norm2 of one-block Q1_0 rows (n <= 128 values; row i at rows + i * stride, stride
     * >= 18): d * d * n in float from each row's fp16 scale d, which is emb_q1_norm2's value
     * exactly (d * d is exact in float, and the product rounds once). Reads the first 4 bytes
     * of each row. */
    void (*q1_norm2_rows)(const uint8_t *rows, size_t stride, size_t nrows, size_t n, float *out);
    /* Batch tile (see emb_tile_limits): for r < nr and j < nq, out[r * ldq + j] = the dot
     * product of f32 row r (x + r * ldx, n values) with query j, the queries stored transposed
     * (value i of query j at qt[i * ldq + j]; ldq a multiple of 16, qt 64-byte aligned, the
     * padding columns [nq, round_up(nq, 16)) readable and zero). Bit j % 16 of
     * hits[r * (ldq / 16) + j / 16] is set when that dot product is >= the pair's limit; the
     * words for j < round_up(nq, 16) are written whole (bits past nq clear), no others, so a
     * caller may pass a slice of wider arrays (qt + j0, out + j0, hits + j0 / 16, limits + j0). The
     * order of the additions is the kernel's own: each result is within (n + 2) * 2^-24 * sum_i
     * |x_i q_i| of the exact dot product, but not bit-identical to dot_f32. */
    void (*tile_f32)(const float *x, size_t ldx, size_t nr, const float *qt, size_t ldq, size_t nq,
                     size_t n, const emb_tile_limits *lim, float *out, uint16_t *hits);
} emb_kernels;

/* Chooses the best level the CPU supports, narrowed by want ("scalar", "avx2", "avx512"; NULL or
 * "" = best; otherwise the EMBD_SIMD environment variable when want is NULL). Call once from main
 * before starting threads. Returns 0, or EMB_EINVAL for an unknown name (and keeps the best). A
 * level the CPU lacks falls back to the best one below it. */
int emb_kernels_init(const char *want);

/* The table chosen by emb_kernels_init (the scalar one before it runs). */
const emb_kernels *emb_kernels_get(void);

/* The table for one level, or NULL when this CPU or build lacks it (for tests and bench). */
const emb_kernels *emb_kernels_for(emb_simd level);

/* Scalar references. */
float emb_dot_f32_scalar(const float *a, const float *b, size_t n);
float emb_l2sq_f32_scalar(const float *a, const float *b, size_t n);
float emb_dot_f16_scalar(const uint16_t *row, const float *q, size_t n);
float emb_l2sq_f16_scalar(const uint16_t *row, const float *q, size_t n);
float emb_dot_q1_scalar(const uint8_t *blocks, const float *q, size_t n);
void emb_f16_to_f32_scalar(const uint16_t *in, float *out, size_t n);
void emb_f32_to_f16_scalar(const float *in, uint16_t *out, size_t n);
void emb_dot_f32_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                             size_t n, float *out);
void emb_l2sq_f32_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                              size_t n, float *out);
void emb_dot_f16_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                             size_t n, float *out);
void emb_l2sq_f16_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                              size_t n, float *out);
void emb_dot_q1_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                            size_t n, float *out);
void emb_q1_to_f32_scalar(const uint8_t *blocks, float *out, size_t n);
void emb_dot_q1q8_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, const float *q,
                              size_t n, float *out);
float emb_dot_q1q8_scalar(const uint8_t *blocks, const float *q, size_t n);
void emb_cos_rows_scalar(float *x, const float *n2, float qn, size_t n);
void emb_q1_norm2_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows, size_t n,
                              float *out);
void emb_dot_q1q1_rows_scalar(const uint8_t *rows, size_t stride, size_t nrows,
                              const uint64_t *qbits, const float *qd, size_t n, float *out);
float emb_dot_q1q1_scalar(const uint8_t *blocks, const uint64_t *qbits, const float *qd, size_t n);
void emb_dot_q1q1_ilv_scalar(const uint8_t *ilv, size_t r0, size_t nrows, const uint64_t *qbits,
                             const float *qd, size_t n, float *out, float *n2);
size_t emb_first_at_least_scalar(const float *x, size_t n, float t);

/* The query of a q1 x q1 scan, made once per query: per block of 128 values (the last holds
 * n % 128 when n is not a multiple of 128), bit j of the block is q_j >= 0, stored in
 * qbits[2 b + j / 64] at bit j % 64, with the bits past n zero (the sign bits of emb_q1_encode);
 * qd[b] = mean |q_j| over the block's values, summed in double and rounded once to float. The
 * scale stays a float rather than an fp16 as in the rows: a query is any finite vector, and an
 * fp16 scale would overflow above 65504 and vanish below 2^-24. Writes 2 * emb_q1_blocks(n)
 * words and emb_q1_blocks(n) floats; reads exactly q[0..n). */
void emb_q1_encode_query(const float *q, size_t n, uint64_t *qbits, float *qd);
void emb_tile_f32_scalar(const float *x, size_t ldx, size_t nr, const float *qt, size_t ldq,
                         size_t nq, size_t n, const emb_tile_limits *lim, float *out,
                         uint16_t *hits);

/* One-value IEEE binary16 conversions: round to nearest even, overflow to infinity, NaN kept
 * (quiet), subnormals exact. */
uint16_t emb_f32_to_f16(float f);
float emb_f16_to_f32(uint16_t h);
/* bfloat16 to float (exact). */
float emb_bf16_to_f32(uint16_t h);

#endif
