/*
 * test_parse_float.c - emb_parse_float against glibc strtof: bit-identical on millions of random
 * decimal strings of the shapes real files hold (%.9g shortest-ish, %g, %.3f, %e, long digit runs,
 * subnormals), plus the syntax it must accept and refuse.
 */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emb_reader.h"
#include "helpers.h"

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Parses s with both and asserts identical bits and identical consumption. Only failures reach
 * criterion (it reports every assertion to its runner, too slow for millions). */
static void check_like_strtof(const char *s)
{
    size_t n = strlen(s);
    float got = 0;
    const char *end = emb_parse_float(s, s + n, &got);
    char *ref_end;
    float want = strtof(s, &ref_end);
    if (!end)
        cr_assert_fail("rejected \"%s\"", s);
    if (end != ref_end)
        cr_assert_fail("\"%s\": consumed %td, strtof %td", s, end - s, ref_end - s);
    if (isnan(want)) {
        if (!isnan(got))
            cr_assert_fail("\"%s\": want NaN", s);
        return;
    }
    if (bits_of(got) != bits_of(want))
        cr_assert_fail("\"%s\": got %a (%#x), strtof %a (%#x)", s, (double)got, bits_of(got),
                       (double)want, bits_of(want));
}

Test(parse_float, accepts_what_python_and_c_print)
{
    static const char *const ok[] = {
        "-0.123",
        "1e-05",
        "3.4028235e+38",
        "3.4028236e+38",
        "1.17549435e-38",
        "1.4e-45",
        "7e-46",
        "0",
        "-0",
        "0.0",
        ".5",
        "5.",
        "+1.5",
        "1E5",
        "1e+5",
        "123456789",
        "16777217",
        "0.000000000000000000000000000000000000000000001",
        "1e-50",
        "1e50",
        "9007199254740993",
        "0.30000001192092896",
        "100000000000000000000000000000",
        "0.1000000000000000055511151231257827021181583404541015625",
        "2.5e-1",
        "-1.5E-3",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        check_like_strtof(ok[i]);
    float f;
    const char *s = "-0";
    cr_assert_eq(emb_parse_float(s, s + 2, &f), s + 2);
    cr_assert(signbit(f), "-0 keeps its sign");
}

Test(parse_float, nan_and_infinity_any_case)
{
    static const char *const specials[] = {"nan",  "NaN",      "-nan",      "inf",
                                           "-inf", "Infinity", "-INFINITY", "+inf"};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
        const char *s = specials[i];
        float f = 0;
        const char *e = emb_parse_float(s, s + strlen(s), &f);
        cr_assert_eq(e, s + strlen(s), "\"%s\" fully consumed", s);
        cr_assert(strchr("nN", s[strspn(s, "+-")]) ? isnan(f) : isinf(f), "\"%s\"", s);
        if (s[0] == '-' && isinf(f))
            cr_assert(f < 0);
    }
}

Test(parse_float, rejects_non_numbers)
{
    static const char *const bad[] = {"",   "-",   "+",  "1e", "1e+", "1e-", ".",  "-.",
                                      "e5", "abc", "na", "in", "--1", "+-1", " 1", ".e1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        float f = 42;
        cr_assert_null(emb_parse_float(bad[i], bad[i] + strlen(bad[i]), &f), "accepted \"%s\"",
                       bad[i]);
    }
}

Test(parse_float, stops_at_the_end_pointer_and_after_the_number)
{
    float f;
    const char *s = "12345";
    cr_assert_eq(emb_parse_float(s, s + 2, &f), s + 2);
    cr_assert_eq(f, 12.0f);
    s = "1.5 2";
    cr_assert_eq(emb_parse_float(s, s + 5, &f), s + 3);
    cr_assert_eq(f, 1.5f);
    s = "2.5x";
    cr_assert_eq(emb_parse_float(s, s + 4, &f), s + 3);
    s = "0x10";
    cr_assert_eq(emb_parse_float(s, s + 4, &f), s + 1, "no hex floats");
    s = "1e5"; /* the exponent's digits lie past end: "1e" is not a number */
    cr_assert_null(emb_parse_float(s, s + 2, &f));
    s = "infinity";
    cr_assert_eq(emb_parse_float(s, s + 5, &f), s + 3, "\"infin\" is inf then 'in'");
}

/* Random floats of every exponent (uniform bit patterns, so a quarter of a percent are
 * subnormal) and of the magnitudes embeddings have, printed the ways files print them. */
Test(parse_float, bit_identical_to_strtof_on_random_strings)
{
    static const char *const fmts[] = {"%.9g", "%g", "%.3f", "%e", "%.8e", "%.17g", "%.6f", "%.7g"};
    const size_t n_fmts = sizeof fmts / sizeof fmts[0];
    uint64_t st = 0x5eed;
    char buf[512];
    size_t checked = 0;
    for (int i = 0; i < 400000; i++) {
        float x;
        if (i % 2 == 0) {
            uint32_t u;
            do
                u = (uint32_t)th_rand_u64(&st);
            while ((u & 0x7F800000u) == 0x7F800000u);
            x = float_of(u);
        } else {
            x = th_rand_normal(&st) * (float)pow(10.0, (double)(th_rand_u64(&st) % 7) - 3.0);
        }
        for (size_t f = 0; f < n_fmts; f++) {
            snprintf(buf, sizeof buf, fmts[f], (double)x);
            check_like_strtof(buf);
            checked++;
        }
        /* The midpoint between x and its successor: exactly (printf is exact, and 120 digits
         * hold any float midpoint), which must round to even; to 40 digits, just off it; and to
         * 16 and 17 digits, which parse to exactly the midpoint as a double although the decimal
         * is not the midpoint: the double rounding the fast path must detect. */
        if (fabsf(x) < FLT_MAX) {
            static const char *const mfmts[] = {"%.120e", "%.40g", "%.17g", "%.16g"};
            double mid = ((double)x + (double)nextafterf(x, INFINITY)) / 2;
            for (size_t f = 0; f < sizeof mfmts / sizeof mfmts[0]; f++) {
                snprintf(buf, sizeof buf, mfmts[f], mid);
                check_like_strtof(buf);
                checked++;
            }
        }
    }
    /* Random digit strings: 1..30 significant digits, a random point, a random exponent. */
    for (int i = 0; i < 800000; i++) {
        size_t n = 0;
        if (th_rand_u64(&st) % 2)
            buf[n++] = '-';
        int digits = 1 + (int)(th_rand_u64(&st) % 30);
        int point = (int)(th_rand_u64(&st) % (uint64_t)(digits + 2)) - 1;
        for (int d = 0; d < digits; d++) {
            if (d == point)
                buf[n++] = '.';
            buf[n++] = (char)('0' + th_rand_u64(&st) % 10);
        }
        if (th_rand_u64(&st) % 3)
            n += (size_t)snprintf(buf + n, sizeof buf - n, "e%d",
                                  (int)(th_rand_u64(&st) % 101) - 60);
        buf[n] = '\0';
        check_like_strtof(buf);
        checked++;
    }
    /* Integer midpoints short enough for the fast path: the double is exactly a tie, which the
     * fast path must hand to strtof rather than round twice. */
    for (int i = 0; i < 200000; i++) {
        int e = 1 + (int)(th_rand_u64(&st) % 29);
        uint64_t m = (1ull << 23) + th_rand_u64(&st) % (1ull << 23);
        uint64_t v = (m << e) + (i % 2 ? 1ull << (e - 1) : 0);
        snprintf(buf, sizeof buf, "%s%llu", i % 4 < 2 ? "" : "-", (unsigned long long)v);
        check_like_strtof(buf);
        checked++;
    }
    cr_assert_geq(checked, 4000000u, "checked %zu strings", checked);
}
