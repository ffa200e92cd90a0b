/* store_internal.h - helpers shared by the store reader, the writer and search. */
#ifndef EMB_STORE_INTERNAL_H
#define EMB_STORE_INTERNAL_H

#include "emb.h"

/* Bytes per row of codec for dim values (f32/f16 padded to EMB_ALIGN, q1 unpadded). */
size_t emb__stride(uint32_t codec, uint32_t dim);

/* CRC-32C of the header and section table with the header_crc field taken as zero. */
uint32_t emb__header_crc(const void *buf, size_t header_size);

/* Decodes row id (which must be < rows) of codec into out[dim]. */
void emb__decode_row(const emb_store *s, uint32_t codec, uint64_t id, float *out);

/* Heap score (higher is better; l2 as -|q - r|^2) of row r in codec for query q with squared
 * norm qn2: for rescoring candidates outside a scan. */
float emb__score(const emb_store *s, uint32_t codec, emb_metric metric, const float *q, float qn2,
                 uint64_t r);

#endif
