/*
 * test_crc32c.c - CRC-32C: published check values, the hardware path against the portable
 * slicing-by-8 path on every length 0..300 at every start offset 0..7, and chaining.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c_internal.h"
#include "emb.h"
#include "helpers.h"

/* The hardware path executes the SSE4.2 crc32 instruction: only call it where it exists. */
static int have_hw(void)
{
#if defined(__x86_64__)
    return __builtin_cpu_supports("sse4.2");
#else
    return 0;
#endif
}

/* A reference CRC-32C one bit at a time, straight from the definition (reflected polynomial
 * 0x82F63B78, init and final xor 0xFFFFFFFF): no table, so it shares no code with the library. */
static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

Test(crc32c, check_value_123456789)
{
    cr_assert_eq(emb_crc32c(0, "123456789", 9), 0xE3069283u);
    cr_assert_eq(emb__crc32c_sw(0, "123456789", 9), 0xE3069283u);
    if (have_hw())
        cr_assert_eq(emb__crc32c_hw(0, "123456789", 9), 0xE3069283u);
}

/* RFC 3720 (iSCSI) appendix B.4 vectors. */
Test(crc32c, rfc3720_vectors)
{
    uint8_t buf[32];
    memset(buf, 0, sizeof buf);
    cr_assert_eq(emb_crc32c(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xFF, sizeof buf);
    cr_assert_eq(emb_crc32c(0, buf, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    cr_assert_eq(emb_crc32c(0, buf, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    cr_assert_eq(emb_crc32c(0, buf, 32), 0x113FDB5Cu);
}

Test(crc32c, empty_input_is_identity)
{
    cr_assert_eq(emb_crc32c(0, "", 0), 0u);
    cr_assert_eq(emb_crc32c(0x12345678u, "", 0), 0x12345678u);
    cr_assert_eq(emb__crc32c_sw(0xDEADBEEFu, NULL, 0), 0xDEADBEEFu);
    if (have_hw())
        cr_assert_eq(emb__crc32c_hw(0xDEADBEEFu, NULL, 0), 0xDEADBEEFu);
}

/* Every length 0..300 at every start 0..7: covers the 8-byte main loops, their heads and tails,
 * and unaligned loads. Each buffer is its own malloc so ASan sees reads past the end. */
Test(crc32c, hw_sw_and_bitwise_agree_on_every_length_and_offset)
{
    uint64_t rng = 0xC5C32C;
    for (size_t len = 0; len <= 300; len++) {
        for (size_t start = 0; start < 8; start++) {
            uint8_t *buf = malloc(start + len + 1);
            cr_assert_not_null(buf);
            for (size_t i = 0; i < start + len; i++)
                buf[i] = (uint8_t)th_rand_u64(&rng);
            const uint8_t *p = buf + start;
            uint32_t want = crc_bitwise(0, p, len);
            cr_assert_eq(emb__crc32c_sw(0, p, len), want, "sw len %zu start %zu", len, start);
            if (have_hw())
                cr_assert_eq(emb__crc32c_hw(0, p, len), want, "hw len %zu start %zu", len, start);
            cr_assert_eq(emb_crc32c(0, p, len), want, "dispatch len %zu start %zu", len, start);
            free(buf);
        }
    }
}

Test(crc32c, chaining_equals_one_shot)
{
    uint64_t rng = 42;
    uint8_t buf[1031];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)th_rand_u64(&rng);
    uint32_t whole = emb_crc32c(0, buf, sizeof buf);
    cr_assert_eq(whole, crc_bitwise(0, buf, sizeof buf));
    /* Every split point into two pieces, for both implementations. */
    for (size_t cut = 0; cut <= sizeof buf; cut++) {
        uint32_t a = emb__crc32c_sw(0, buf, cut);
        cr_assert_eq(emb__crc32c_sw(a, buf + cut, sizeof buf - cut), whole, "sw cut %zu", cut);
        if (have_hw()) {
            uint32_t b = emb__crc32c_hw(0, buf, cut);
            cr_assert_eq(emb__crc32c_hw(b, buf + cut, sizeof buf - cut), whole, "hw cut %zu", cut);
            /* The two implementations chain into each other: they share one definition. */
            cr_assert_eq(emb__crc32c_sw(b, buf + cut, sizeof buf - cut), whole, "hw+sw %zu", cut);
            cr_assert_eq(emb__crc32c_hw(a, buf + cut, sizeof buf - cut), whole, "sw+hw %zu", cut);
        }
    }
    /* Many small random pieces. */
    uint32_t crc = 0;
    size_t off = 0;
    while (off < sizeof buf) {
        size_t n = (size_t)(th_rand_u64(&rng) % 23);
        if (n > sizeof buf - off)
            n = sizeof buf - off;
        crc = emb_crc32c(crc, buf + off, n);
        off += n;
    }
    cr_assert_eq(crc, whole);
}

/* A large buffer (crosses the hardware path's long-block loop, if it has one). */
Test(crc32c, large_buffer)
{
    size_t n = (1u << 20) + 13;
    uint8_t *buf = malloc(n);
    cr_assert_not_null(buf);
    uint64_t rng = 7;
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)th_rand_u64(&rng);
    uint32_t want = crc_bitwise(0, buf, n);
    cr_assert_eq(emb__crc32c_sw(0, buf, n), want);
    if (have_hw())
        cr_assert_eq(emb__crc32c_hw(0, buf + 0, n), want);
    cr_assert_eq(emb_crc32c(0, buf, n), want);
    free(buf);
}
