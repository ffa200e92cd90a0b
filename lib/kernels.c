/*
 * kernels.c - run-time choice of the kernel table.
 *
 * The CPU is asked once (cpuid/xgetbv through __builtin_cpu_supports, which on gcc >= 11 also
 * checks that the OS saves the AVX / AVX-512 register state) and emb_kernels_init stores one
 * pointer to a static const table before any worker thread starts. Nothing is lazily
 * initialised: the pointer is written only by emb_kernels_init, so readers need no atomics.
 *
 * Levels are ordered by the emb_simd enum. A request for a level names a ceiling: the best level
 * at or below it that this build and CPU have is used, so "avx512" on an AVX2-only machine runs
 * AVX2 and anything on an x86 build without the SIMD files runs scalar. The AVX-512 level has
 * four tables, with or without the VNNI build of q1 x q8 and the VPOPCNTDQ build of q1 x q1,
 * chosen by the CPU (one name, the same results bit for bit). NEON is the level of aarch64 builds
 * (every AArch64 CPU has it).
 *
 * Rejected: GNU ifunc resolvers (glibc-only, and tests could not narrow the level), and picking
 * per kernel rather than per table (one level per process keeps benchmarks interpretable).
 */
#include <stdlib.h>
#include <strings.h>

#include "emb.h"
#include "emb_kernels.h"
#include "kernels_internal.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

static const emb_kernels scalar_kernels = {
    .level = EMB_SIMD_SCALAR,
    .name = "scalar",
    .dot_f32 = emb_dot_f32_scalar,
    .l2sq_f32 = emb_l2sq_f32_scalar,
    .dot_f16 = emb_dot_f16_scalar,
    .l2sq_f16 = emb_l2sq_f16_scalar,
    .dot_q1 = emb_dot_q1_scalar,
    .f16_to_f32 = emb_f16_to_f32_scalar,
    .f32_to_f16 = emb_f32_to_f16_scalar,
    .dot_f32_rows = emb_dot_f32_rows_scalar,
    .l2sq_f32_rows = emb_l2sq_f32_rows_scalar,
    .dot_f16_rows = emb_dot_f16_rows_scalar,
    .l2sq_f16_rows = emb_l2sq_f16_rows_scalar,
    .dot_q1_rows = emb_dot_q1_rows_scalar,
    .q1_to_f32 = emb_q1_to_f32_scalar,
    .dot_q1q8_rows = emb_dot_q1q8_rows_scalar,
    .dot_q1q1_rows = emb_dot_q1q1_rows_scalar,
    .dot_q1q1_ilv = emb_dot_q1q1_ilv_scalar,
    .first_at_least = emb_first_at_least_scalar,
    .cos_rows = emb_cos_rows_scalar,
    .q1_norm2_rows = emb_q1_norm2_rows_scalar,
    .tile_f32 = emb_tile_f32_scalar,
};

/* Written only by emb_kernels_init, which runs before any thread starts. */
static const emb_kernels *active_kernels = &scalar_kernels;
int emb__prefetch = 1;

/* The scans' software prefetch helps on Intel and hurts on AMD (kernels_rows.h). */
static int cpu_wants_prefetch(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    return !__builtin_cpu_is("amd");
#else
    return 1;
#endif
}

#if defined(__x86_64__)
/* F16C straight from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know
 * "f16c". It uses the YMM state whose OS support the "avx2" check already covers. */
static int cpu_has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

/* POPCNT (the q1 x q1 kernels' scalar counts): every AVX2 CPU has it, but it is its own CPUID
 * bit, so it is checked like the others. */
static int cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c() &&
           __builtin_cpu_supports("popcnt");
}

static int cpu_has_avx512(void)
{
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

/* AVX512_VNNI and AVX512_VPOPCNTDQ from CPUID leaf 7 sub-leaf 0 (ECX bits 11 and 14); the
 * register state is the one the AVX-512 check already covers. */
static int cpu_has_avx512vnni(void)
{
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & bit_AVX512VNNI);
}

static int cpu_has_avx512vpopcnt(void)
{
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & bit_AVX512VPOPCNTDQ);
}
#endif

/* The table of one level, or NULL when this build or CPU lacks it. */
const emb_kernels *emb_kernels_for(emb_simd level)
{
    switch (level) {
    case EMB_SIMD_SCALAR: return &scalar_kernels;
#if defined(__x86_64__)
    case EMB_SIMD_AVX2: return cpu_has_avx2() ? &emb__kernels_avx2 : NULL;
    case EMB_SIMD_AVX512:
        if (!cpu_has_avx512())
            return NULL;
        if (cpu_has_avx512vpopcnt())
            return cpu_has_avx512vnni() ? &emb__kernels_avx512_vnni_vpopcnt
                                        : &emb__kernels_avx512_vpopcnt;
        return cpu_has_avx512vnni() ? &emb__kernels_avx512_vnni : &emb__kernels_avx512;
#endif
#if defined(__aarch64__)
    case EMB_SIMD_NEON: return &emb__kernels_neon;
#endif
    default: return NULL;
    }
}

/* The best table at or below ceiling; scalar at worst. */
static const emb_kernels *best_at_most(emb_simd ceiling)
{
    for (int l = (int)ceiling; l > (int)EMB_SIMD_SCALAR; l--) {
        const emb_kernels *k = emb_kernels_for((emb_simd)l);
        if (k)
            return k;
    }
    return &scalar_kernels;
}

/* Maps a level name to its enum; returns 0 or -1 for an unknown name. */
static int parse_level(const char *s, emb_simd *out)
{
    static const struct {
        const char *name;
        emb_simd level;
    } names[] = {
        {"scalar", EMB_SIMD_SCALAR},
        {"avx2", EMB_SIMD_AVX2},
        {"avx512", EMB_SIMD_AVX512},
        {"neon", EMB_SIMD_NEON},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -1;
}

/* Selects the table for the process: want, or $EMBD_SIMD when want is NULL, names a ceiling
 * ("scalar", "avx2", "avx512", "neon", any case); NULL or "" means the best. Returns 0, or
 * EMB_EINVAL for an unknown name, in which case the best table is selected anyway. Not
 * thread-safe: call once before starting threads. */
int emb_kernels_init(const char *want)
{
    const emb_kernels *best = best_at_most(EMB_SIMD_NEON);
    emb_simd level;

    emb__prefetch = cpu_wants_prefetch();
    if (!want)
        want = getenv("EMBD_SIMD");
    if (!want || !*want) {
        active_kernels = best;
        return 0;
    }
    if (parse_level(want, &level) != 0) {
        active_kernels = best;
        return EMB_EINVAL;
    }
    active_kernels = best_at_most(level);
    return 0;
}

/* The selected table (borrowed, static lifetime); the scalar one before emb_kernels_init. */
const emb_kernels *emb_kernels_get(void)
{
    return active_kernels;
}
