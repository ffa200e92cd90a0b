/*
 * crc32c.c - CRC-32C (Castagnoli) for section checksums.
 *
 * CRC-32C because x86 computes it in hardware (SSE4.2 crc32 instruction, about 10 GB/s on one
 * stream here), so verifying a multi-gigabyte store costs little more than reading it, and the
 * polynomial detects every burst error up to 32 bits. The portable path is a slicing-by-8 table.
 * The table is built by a constructor before main, so no thread ever sees it half-built.
 */
#include <string.h>

#include "crc32c_internal.h"
#include "emb.h"

static uint32_t table[8][256];

__attribute__((constructor)) static void crc32c_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xFF];
}

uint32_t emb__crc32c_sw(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;
    crc = ~crc;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= crc;
        crc = table[7][v & 0xFF] ^ table[6][(v >> 8) & 0xFF] ^ table[5][(v >> 16) & 0xFF] ^
              table[4][(v >> 24) & 0xFF] ^ table[3][(v >> 32) & 0xFF] ^ table[2][(v >> 40) & 0xFF] ^
              table[1][(v >> 48) & 0xFF] ^ table[0][v >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
    return ~crc;
}

uint32_t emb_crc32c(uint32_t crc, const void *data, size_t len)
{
#if defined(__x86_64__)
    /* __builtin_cpu_supports reads state set up by libgcc before main: no race. */
    if (__builtin_cpu_supports("sse4.2"))
        return emb__crc32c_hw(crc, data, len);
#endif
    return emb__crc32c_sw(crc, data, len);
}
