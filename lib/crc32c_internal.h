/* crc32c_internal.h - the two CRC-32C implementations behind emb_crc32c (for tests). */
#ifndef EMB_CRC32C_INTERNAL_H
#define EMB_CRC32C_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

uint32_t emb__crc32c_sw(uint32_t crc, const void *data, size_t len);
uint32_t emb__crc32c_hw(uint32_t crc, const void *data, size_t len);

#endif
