/*
 * kernels_rows.h - the plain many-row kernels of an ISA file: its one-row kernel in a loop over
 * the rows, with the scans' software prefetch. An ISA file includes it after its one-row kernels
 * and instantiates EMB__ROWS once per kernel, so each loop is compiled with that file's target
 * flags and the one-row kernel inlines into it: the many-row results are bit-identical to it.
 */
#ifndef EMB_KERNELS_ROWS_H
#define EMB_KERNELS_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels_internal.h"

/* Software prefetch distance of the many-row scans, when emb__prefetch is set. On the Intel
 * Xeon this was measured on, the hardware's stream prefetcher stops at every 4 KiB page; a scan
 * of 1M x 768 f16 rows on one thread ran at 74-85% of memchr's read rate without this and at
 * 100-146% with it (prefetching 2, 4 or 8 rows of 1536 bytes ahead measured alike). On AMD Zen
 * 5 the same prefetches slowed that scan from 22-25 GB/s to 16 (memchr: 32-34), at every
 * distance from 4 to 64 KiB, so they are off there. Prefetches never fault; they stay inside
 * the rows given all the same. */
#define EMB__PF_BYTES 8192u

/* Prefetches (for reading, into every cache level) the part of row i's successor
 * EMB__PF_BYTES ahead that lies inside the nrows rows, unless emb__prefetch is clear. */
static inline __attribute__((always_inline)) void
emb__prefetch_ahead(const uint8_t *rows, size_t stride, size_t nrows, size_t i)
{
    if (!emb__prefetch)
        return;
    const size_t at = i * stride + EMB__PF_BYTES, end = nrows * stride;
    for (size_t b = 0; b < stride && at + b < end; b += 64)
        __builtin_prefetch(rows + at + b, 0, 3);
}

/* static void name(rows, stride, nrows, q, n, out): out[i] = one((const T *)row i, q, n), with
 * the prefetch when pf is 1. */
#define EMB__ROWS(name, one, T, pf)                                                                \
    static void name(const uint8_t *rows, size_t stride, size_t nrows, const float *q, size_t n,   \
                     float *out)                                                                   \
    {                                                                                              \
        for (size_t i = 0; i < nrows; i++) {                                                       \
            if (pf)                                                                                \
                emb__prefetch_ahead(rows, stride, nrows, i);                                       \
            out[i] = one((const T *)(const void *)(rows + i * stride), q, n);                      \
        }                                                                                          \
    }

#endif
