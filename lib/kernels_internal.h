/*
 * kernels_internal.h - the ISA-specific kernel tables, shared between the files that define them
 * (kernels_avx2.c, kernels_avx512.c) and the dispatcher (kernels.c). Not part of the public API:
 * callers go through emb_kernels_get / emb_kernels_for, which check the CPU first.
 */
#ifndef EMB_KERNELS_INTERNAL_H
#define EMB_KERNELS_INTERNAL_H

#include "emb_kernels.h"

#if defined(__x86_64__)
/* AVX2 + FMA + F16C. Only call through it when the CPU has all three. */
extern const emb_kernels emb__kernels_avx2;
/* AVX-512 F/BW/VL (+ AVX2, FMA, F16C). Only call through it when the CPU has them. */
extern const emb_kernels emb__kernels_avx512;
#endif

#endif
