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
 * always f32.
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

/* One-value IEEE binary16 conversions: round to nearest even, overflow to infinity, NaN kept
 * (quiet), subnormals exact. */
uint16_t emb_f32_to_f16(float f);
float emb_f16_to_f32(uint16_t h);
/* bfloat16 to float (exact). */
float emb_bf16_to_f32(uint16_t h);

#endif
