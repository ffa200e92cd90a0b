/*
 * q1_rows.c - the 1-bit stage's kernels alone: nanoseconds per row of q1 x q8 and q1 x q1 (and
 * q1 x f32) over `rows` random Q1_0 rows of `dim` values, 2048 rows per call as a scan makes
 * them, for every table this CPU has (scalar, AVX2, each AVX-512 build). Prints the best of
 * `reps` passes per kernel, three rounds in a row (the machine is shared: compare rounds). A
 * benchmark, never a test; each kernel's output is first checked against the scalar twin.
 *
 *   cc -std=gnu11 -O2 -D_GNU_SOURCE -Ilib loadtest/kernels/q1_rows.c BUILD/libembd_lib.a \
 *       -lm -lpthread -o q1_rows
 *   ./q1_rows [dim=128] [rows=100000] [reps=30]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "emb.h"
#include "emb_kernels.h"
#include "kernels_internal.h"

#define CHUNK 2048u

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* Uniform in [-1, 1). */
static float rand_f(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((int64_t)rng >> 40) / (float)(1 << 23);
}

typedef struct table {
    const char *name;
    const emb_kernels *k;
} table;

int main(int argc, char **argv)
{
    const size_t dim = argc > 1 ? strtoul(argv[1], NULL, 10) : 128;
    const size_t rows = argc > 2 ? strtoul(argv[2], NULL, 10) : 100000;
    const int reps = argc > 3 ? atoi(argv[3]) : 30;
    if (dim < 1 || dim > EMB_MAX_DIM || rows < 1 || reps < 1) {
        fprintf(stderr, "usage: q1_rows [dim 1..65536] [rows >= 1] [reps >= 1]\n");
        return 2;
    }
    const size_t nb = emb_q1_blocks((uint32_t)dim), stride = nb * EMB_Q1_BLOCK;
    const size_t ng = (rows + EMB_Q1I_ROWS - 1) / EMB_Q1I_ROWS, tiles = nb * EMB_Q1I_TILE;
    uint8_t *r = malloc(rows * stride), *ilv = aligned_alloc(64, ng * tiles);
    float *q = malloc(dim * sizeof *q), *out = malloc(CHUNK * sizeof *out);
    float *want = malloc(CHUNK * sizeof *want);
    uint64_t *qbits = malloc(2 * nb * sizeof *qbits);
    float *qd = malloc(nb * sizeof *qd);
    if (!r || !ilv || !q || !out || !want || !qbits || !qd) {
        fprintf(stderr, "q1_rows: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < rows; i++) {
        for (size_t j = 0; j < dim; j++)
            q[j] = rand_f();
        emb_q1_encode(q, (uint32_t)dim, r + i * stride);
    }
    for (size_t g = 0; g < ng; g++) {
        const size_t live =
            rows - g * EMB_Q1I_ROWS < EMB_Q1I_ROWS ? rows - g * EMB_Q1I_ROWS : EMB_Q1I_ROWS;
        emb_q1_interleave(r + g * EMB_Q1I_ROWS * stride, stride, live, (uint32_t)dim,
                          ilv + g * tiles);
    }
    for (size_t j = 0; j < dim; j++)
        q[j] = rand_f();
    emb_q1_encode_query(q, dim, qbits, qd);

    table t[8];
    int nt = 0;
    for (int l = EMB_SIMD_SCALAR; l <= EMB_SIMD_NEON; l++) {
        const emb_kernels *k = emb_kernels_for((emb_simd)l);
        if (k && l != EMB_SIMD_AVX512)
            t[nt++] = (table){k->name, k};
    }
#if defined(__x86_64__)
    if (emb_kernels_for(EMB_SIMD_AVX512)) {
        const emb_kernels *best = emb_kernels_for(EMB_SIMD_AVX512);
        t[nt++] = (table){"avx512 (bw)", &emb__kernels_avx512};
        if (best != &emb__kernels_avx512)
            t[nt++] = (table){"avx512 (dispatched)", best};
    }
#endif
    const size_t check = rows < CHUNK ? rows : CHUNK;
    emb_dot_q1q1_rows_scalar(r, stride, check, qbits, qd, dim, want);
    for (int i = 0; i < nt; i++) {
        t[i].k->dot_q1q1_rows(r, stride, check, qbits, qd, dim, out);
        if (memcmp(out, want, check * sizeof *out) != 0) {
            fprintf(stderr, "q1_rows: %s q1 x q1 differs from the scalar twin\n", t[i].name);
            return 1;
        }
        t[i].k->dot_q1q1_ilv(ilv, 0, check, qbits, qd, dim, out, NULL);
        if (memcmp(out, want, check * sizeof *out) != 0) {
            fprintf(stderr, "q1_rows: %s interleaved q1 x q1 differs from the scalar twin\n",
                    t[i].name);
            return 1;
        }
    }
    printf("%zu rows x %zu (%zu bytes a row), best of %d passes, ns per row\n", rows, dim, stride,
           reps);
    printf("%-22s %10s %10s %10s %10s\n", "table", "q1 x q1", "q1 x q8", "q1 x f32", "q1q1 ilv");
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < nt; i++) {
            double best[4] = {1e30, 1e30, 1e30, 1e30};
            for (int kind = 0; kind < 4; kind++) {
                /* The scalar kernels are slow: fewer passes. */
                const int n = t[i].k->level == EMB_SIMD_SCALAR ? 2 : reps;
                for (int p = 0; p < n; p++) {
                    const double t0 = now_s();
                    for (size_t r0 = 0; r0 < rows; r0 += CHUNK) {
                        const size_t m = rows - r0 < CHUNK ? rows - r0 : CHUNK;
                        const uint8_t *at = r + r0 * stride;
                        if (kind == 0)
                            t[i].k->dot_q1q1_rows(at, stride, m, qbits, qd, dim, out);
                        else if (kind == 3)
                            t[i].k->dot_q1q1_ilv(ilv, r0, m, qbits, qd, dim, out, NULL);
                        else if (kind == 1)
                            t[i].k->dot_q1q8_rows(at, stride, m, q, dim, out);
                        else
                            t[i].k->dot_q1_rows(at, stride, m, q, dim, out);
                    }
                    const double dt = now_s() - t0;
                    best[kind] = dt < best[kind] ? dt : best[kind];
                }
            }
            printf("%-22s %10.3f %10.3f %10.3f %10.3f\n", t[i].name, best[0] / rows * 1e9,
                   best[1] / rows * 1e9, best[2] / rows * 1e9, best[3] / rows * 1e9);
        }
    }
    free(r);
    free(ilv);
    free(q);
    free(out);
    free(want);
    free(qbits);
    free(qd);
    return 0;
}
