/*
 * test_jsonw.c - the JSON writer: float text checked against strtof and printf (round trip, no
 * shorter decimal, closest) over specials, every power of two, 10 million random bit patterns,
 * N(0,1) samples and subnormals; strings (escapes, a table of invalid UTF-8, every single byte,
 * random bytes decoded back); integers, doubles, buffer growth and out-of-memory; base64 against
 * RFC 4648 and a bit-by-bit reference encoder.
 *
 * Hot loops report through cr_assert_fail only on failure: criterion records every assertion it
 * is handed, far too slow for millions.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emb_kernels.h"
#include "jsonw.h"

/* ASan aborts on a request for 2^63 bytes instead of returning NULL (unless
 * allocator_may_return_null=1, a setting for the whole binary), so under ASan the tests of a
 * failing realloc are skipped; the size-overflow guards are tested everywhere. */
#if defined(__SANITIZE_ADDRESS__)
#define JW_TEST_HUGE_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JW_TEST_HUGE_MALLOC 0
#endif
#endif
#ifndef JW_TEST_HUGE_MALLOC
#define JW_TEST_HUGE_MALLOC 1
#endif

/* ---- helpers ---- */

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* splitmix64, so every run tests the same values. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* A standard normal sample (Box-Muller). */
static float rng_normal(uint64_t *state)
{
    double u1 = ((double)(rng_next(state) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(rng_next(state) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* RFC 8259 number: -? (0 | [1-9][0-9]*) (\.[0-9]+)? ([eE][+-]?[0-9]+)?, as a state machine. */
static int is_json_number(const char *s, size_t n)
{
    enum { START, MINUS, ZERO, INT, DOT, FRAC, E, ESIGN, EXP, BAD } st = START;
    for (size_t i = 0; i < n && st != BAD; i++) {
        char c = s[i];
        int digit = c >= '0' && c <= '9', e = c == 'e' || c == 'E';
        switch (st) {
        case START: st = c == '-' ? MINUS : c == '0' ? ZERO : digit ? INT : BAD; break;
        case MINUS: st = c == '0' ? ZERO : digit ? INT : BAD; break;
        case ZERO: st = c == '.' ? DOT : e ? E : BAD; break;
        case INT: st = digit ? INT : c == '.' ? DOT : e ? E : BAD; break;
        case DOT: st = digit ? FRAC : BAD; break;
        case FRAC: st = digit ? FRAC : e ? E : BAD; break;
        case E: st = c == '+' || c == '-' ? ESIGN : digit ? EXP : BAD; break;
        case ESIGN:
        case EXP: st = digit ? EXP : BAD; break;
        case BAD: break;
        }
    }
    return st == ZERO || st == INT || st == FRAC || st == EXP;
}

/* Parses decimal text as d * 10^e, d without trailing zeros (d = 0, e = 0 for zero); returns the
 * number of significant digits, or -1 when there are more than 19 or the text is malformed. */
static int parse_decimal(const char *s, uint64_t *d, int *e)
{
    uint64_t m = 0;
    int exp = 0, nd = 0, any = 0;
    if (*s == '-')
        s++;
    for (; *s >= '0' && *s <= '9'; s++, any = 1)
        if (m || *s != '0') {
            if (++nd > 19)
                return -1;
            m = m * 10 + (uint64_t)(*s - '0');
        }
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++, any = 1) {
            exp--;
            if (m || *s != '0') {
                if (++nd > 19)
                    return -1;
                m = m * 10 + (uint64_t)(*s - '0');
            }
        }
    if (!any)
        return -1;
    if (*s == 'e' || *s == 'E') {
        int neg = 0, x = 0;
        s++;
        if (*s == '+' || *s == '-')
            neg = *s++ == '-';
        if (!(*s >= '0' && *s <= '9'))
            return -1;
        for (; *s >= '0' && *s <= '9'; s++)
            x = x * 10 + (*s - '0');
        exp += neg ? -x : x;
    }
    if (*s)
        return -1;
    while (m && m % 10 == 0) {
        m /= 10;
        exp++;
        nd--;
    }
    *d = m;
    *e = m ? exp : 0;
    return m ? nd : 0;
}

static int reads_back(const char *s, float v)
{
    return bits_of(strtof(s, NULL)) == bits_of(v);
}

/* The least p in 1..9 for which printf("%.{p}g") reads back to v. */
static int min_printf_digits(float v)
{
    char t[48];
    for (int p = 1; p < 9; p++) {
        snprintf(t, sizeof t, "%.*g", p, (double)v);
        if (reads_back(t, v))
            return p;
    }
    return 9;
}

/* Checks the text of one float; failures go to criterion with the reason. printf_scan compares
 * the digit count with the least p for which "%.{p}g" reads back (up to eight printf calls) and
 * checks that the text is the closest of its length; the neighbour check proves the first and
 * more with two strtof calls, so the 10 million random patterns scan every eighth only. */
static void check_float_scan(float v, int printf_scan)
{
    char text[48], alt[48];
    memset(text, 'x', sizeof text);
    size_t len = srv_format_float(v, text);
    uint32_t bits = bits_of(v);
    if (len != strlen(text) || len > 15)
        cr_assert_fail("%08" PRIx32 ": length %zu of \"%s\"", bits, len, text);
    for (size_t i = 32; i < sizeof text; i++) /* the header promises 32 bytes suffice */
        if (text[i] != 'x')
            cr_assert_fail("%08" PRIx32 ": wrote byte %zu", bits, i);
    if (!isfinite(v)) {
        if (strcmp(text, "null"))
            cr_assert_fail("%08" PRIx32 ": \"%s\", want null", bits, text);
        return;
    }
    if (!is_json_number(text, len))
        cr_assert_fail("%08" PRIx32 ": \"%s\" is not a JSON number", bits, text);
    if (!reads_back(text, v))
        cr_assert_fail("%08" PRIx32 " (%a): \"%s\" reads back as %a", bits, (double)v, text,
                       (double)strtof(text, NULL));
    uint64_t d;
    int e;
    int n = parse_decimal(text, &d, &e);
    if (n < 0)
        cr_assert_fail("%08" PRIx32 ": cannot parse \"%s\"", bits, text);
    if (v == 0) {
        if (strcmp(text, signbit(v) ? "-0" : "0"))
            cr_assert_fail("%08" PRIx32 ": \"%s\" for zero", bits, text);
        return;
    }
    int pmin = printf_scan ? min_printf_digits(v) : 9;
    if (n > pmin)
        cr_assert_fail("%08" PRIx32 ": \"%s\" has %d digits, %%.%dg reads back", bits, text, n,
                       pmin);
    /* Stronger: no decimal of n - 1 or fewer digits reads back. Such a decimal y, and the text,
     * lie in the rounding interval; so does everything between them, including a multiple of
     * 10^(e+1) next to the text (if y crosses a power of ten, that power is one), and the two
     * multiples next to the text are these. */
    const char *sign = signbit(v) ? "-" : "";
    for (uint64_t c = d / 10; n > 1 && c <= d / 10 + 1; c++) {
        snprintf(alt, sizeof alt, "%s%" PRIu64 "e%d", sign, c, e + 1);
        if (c && reads_back(alt, v))
            cr_assert_fail("%08" PRIx32 ": \"%s\" but \"%s\" is shorter", bits, text, alt);
    }
    /* Closest: when the correctly rounded decimal of n digits reads back, it is the text. */
    if (!printf_scan)
        return;
    snprintf(alt, sizeof alt, "%.*e", n - 1, (double)v);
    uint64_t d2;
    int e2;
    if (reads_back(alt, v) && (parse_decimal(alt, &d2, &e2) != n || d2 != d || e2 != e))
        cr_assert_fail("%08" PRIx32 ": \"%s\" but \"%s\" is closer", bits, text, alt);
}

static void check_float(float v)
{
    check_float_scan(v, 1);
}

/* Steals the buffer of w as a NUL-terminated string (the caller frees it). */
static char *steal_all(jsonw *w)
{
    size_t len = 0;
    char *s = jsonw_steal(w, &len);
    cr_assert_not_null(s);
    cr_assert_eq(strlen(s), len);
    return s;
}

/* ---- floats ---- */

Test(jsonw, float_known_texts)
{
    static const struct {
        float v;
        const char *text;
    } cases[] = {
        {0.0f, "0"},
        {-0.0f, "-0"},
        {1.0f, "1"},
        {-1.0f, "-1"},
        {0.1f, "0.1"},
        {-0.3f, "-0.3"},
        {0.5f, "0.5"},
        {2.5f, "2.5"},
        {100.0f, "100"},
        {123456.0f, "123456"},
        {12345678.0f, "12345678"},
        {16777216.0f, "16777216"},
        {100000.0f, "1e+05"},
        {1e10f, "1e+10"},
        {1.5e20f, "1.5e+20"},
        {1e38f, "1e+38"},
        {0.001f, "0.001"},
        {0.00012f, "0.00012"},
        {1e-4f, "1e-04"},
        {1e-7f, "1e-07"},
        {9.999999e-5f, "9.999999e-05"},
        {3.14159265f, "3.1415927"},
        {-0.123456789f, "-0.12345679"},
        {FLT_MAX, "3.4028235e+38"},
        {-FLT_MAX, "-3.4028235e+38"},
        {FLT_MIN, "1.1754944e-38"},
        {FLT_TRUE_MIN, "1e-45"},
        {2 * FLT_TRUE_MIN, "3e-45"},
        {FLT_EPSILON, "1.1920929e-07"},
        {33554432.0f, "33554432"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[32];
        size_t n = srv_format_float(cases[i].v, text);
        cr_expect_str_eq(text, cases[i].text, "%a", (double)cases[i].v);
        cr_expect_eq(n, strlen(cases[i].text));
        check_float(cases[i].v);
    }
}

Test(jsonw, float_specials_are_null)
{
    const float specials[] = {NAN,
                              -NAN,
                              INFINITY,
                              -INFINITY,
                              float_of(0x7F800001),
                              float_of(0xFFFFFFFF),
                              float_of(0x7FC00000)};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
        char text[32];
        cr_expect_eq(srv_format_float(specials[i], text), 4);
        cr_expect_str_eq(text, "null");
        jsonw w;
        cr_assert_eq(jsonw_init(&w, 0), 0);
        jsonw_char(&w, '[');
        jsonw_float(&w, specials[i]);
        jsonw_char(&w, ']');
        char *s = steal_all(&w);
        cr_expect_str_eq(s, "[null]");
        free(s);
    }
    check_float(0.0f);
    check_float(-0.0f);
}

Test(jsonw, float_every_power_of_two)
{
    for (int e = -149; e <= 127; e++) {
        float v = ldexpf(1.0f, e);
        cr_assert(v != 0 && isfinite(v), "2^%d", e);
        check_float(v);
        check_float(-v);
        /* the neighbours, across the narrower interval below a power of two */
        check_float(nextafterf(v, 0));
        check_float(nextafterf(v, INFINITY));
    }
}

Test(jsonw, float_limits)
{
    const float v[] = {FLT_MAX,
                       FLT_MIN,
                       FLT_TRUE_MIN,
                       nextafterf(FLT_MAX, 0),
                       nextafterf(FLT_MIN, 0),
                       nextafterf(FLT_MIN, 1),
                       nextafterf(FLT_TRUE_MIN, 1),
                       FLT_EPSILON,
                       nextafterf(1.0f, 0),
                       nextafterf(1.0f, 2),
                       16777215.0f,
                       16777217.0f,
                       1e-45f,
                       3.4028235e38f,
                       9.999999e-39f};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        check_float(v[i]);
        check_float(-v[i]);
    }
}

/* Floats whose text goes wrong when one detail of the rounding interval is mishandled (found by
 * breaking it on purpose): bounds always closed (first three), always open (next three), exact
 * integer quotients for k > 0 taken as inexact (next three), the narrower interval below a power
 * of two ignored (last two). */
Test(jsonw, float_interval_edges)
{
    static const uint32_t bits[] = {0x4C4CBEE5, 0x4CFC66C1, 0x4D7F415D, 0xCFF81BDE,
                                    0x4CF4681E, 0xCC56BEB8, 0x4DC5273E, 0x4DF1F8E0,
                                    0x4E776171, 0x0C000000, 0x4C000000};
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++)
        check_float(float_of(bits[i]));
}

/* Checks count bit patterns drawn from seed; NaN and infinity patterns must print null. */
static void check_random_bits(uint64_t seed, uint32_t count)
{
    uint64_t st = seed;
    uint32_t specials = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t bits = (uint32_t)rng_next(&st);
        specials += (bits & 0x7F800000) == 0x7F800000;
        check_float_scan(float_of(bits), i % 8 == 0);
    }
    cr_expect_gt(specials, 0, "no NaN or infinity pattern drawn");
}

/* 10 million patterns in four tests, so that criterion can run them in parallel. */
Test(jsonw, float_random_bits_1)
{
    check_random_bits(1, 2500000);
}

Test(jsonw, float_random_bits_2)
{
    check_random_bits(2, 2500000);
}

Test(jsonw, float_random_bits_3)
{
    check_random_bits(3, 2500000);
}

Test(jsonw, float_random_bits_4)
{
    check_random_bits(4, 2500000);
}

Test(jsonw, float_normal_samples)
{
    uint64_t st = 42;
    for (int i = 0; i < 1000000; i++) {
        float v = rng_normal(&st);
        check_float_scan(v, i % 4 == 0);
        if (i % 8 == 0) {
            check_float(v * 1e-3f);
            check_float(v * 1e4f);
        }
    }
}

Test(jsonw, float_subnormals)
{
    /* the first and last 20000, and every 61st in between (about 140000 in all) */
    for (uint32_t b = 1; b < 0x800000; b += (b < 20000 || b > 0x800000 - 20000) ? 1 : 61) {
        check_float(float_of(b));
        check_float(float_of(b | 0x80000000u));
    }
}

Test(jsonw, json_number_validator)
{
    static const char *const good[] = {"0",     "-0",    "1",         "-12",  "0.5", "1e5",
                                       "1E+05", "1e-07", "-1.5e+20",  "10.0", "0e0", "123.456e-7",
                                       "9",     "1.0E1", "-0.000001", "100"};
    static const char *const bad[] = {"",    "-",  "+1",  ".5",    "5.",   "05",   "-05", "1e",
                                      "1e+", "e5", "1.",  "1.e5",  "0x1",  "null", "NaN", "inf",
                                      "1 ",  " 1", "--1", "1e5.0", "1ee5", "-.5",  "00"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_expect(is_json_number(good[i], strlen(good[i])), "\"%s\"", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect(!is_json_number(bad[i], strlen(bad[i])), "\"%s\"", bad[i]);
}

Test(jsonw, float_array_matches_single_floats)
{
    enum { N = 100000 };
    float *v = malloc(N * sizeof *v);
    cr_assert_not_null(v);
    uint64_t st = 7;
    for (int i = 0; i < N; i++)
        v[i] = i % 1000 == 0 ? NAN : i % 3 ? rng_normal(&st) : float_of((uint32_t)rng_next(&st));
    jsonw a, b;
    cr_assert_eq(jsonw_init(&a, 0), 0);
    cr_assert_eq(jsonw_init(&b, 1), 0);
    jsonw_cstr(&a, "{\"v\":");
    jsonw_float_array(&a, v, N);
    jsonw_char(&a, '}');
    jsonw_cstr(&b, "{\"v\":[");
    for (int i = 0; i < N; i++) {
        if (i)
            jsonw_char(&b, ',');
        jsonw_float(&b, v[i]);
    }
    jsonw_cstr(&b, "]}");
    char *sa = steal_all(&a), *sb = steal_all(&b);
    cr_expect_str_eq(sa, sb);
    cr_expect_eq(strncmp(sa + 6, "null,", 5), 0, "%.20s", sa);
    free(sa);
    free(sb);
    free(v);

    jsonw w;
    cr_assert_eq(jsonw_init(&w, 0), 0);
    jsonw_float_array(&w, NULL, 0);
    const float one[] = {-0.0f};
    jsonw_float_array(&w, one, 1);
    char *s = steal_all(&w);
    cr_expect_str_eq(s, "[][-0]");
    free(s);
}

/* Every f16 value (all 65536 bit patterns, as the exact float), single and in arrays, prints the
 * same through the f16 table as through the digit search, and floats next to them (one ulp
 * off, so not f16 values) take the search. jsonw_tables_init is idempotent. */
Test(jsonw, f16_table_prints_what_the_digit_search_prints)
{
    jsonw_tables_init();
    enum { N = 65536 * 3 };
    float *v = malloc(N * sizeof *v);
    cr_assert_not_null(v);
    for (uint32_t h = 0; h < 65536; h++) {
        uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF, sign = (h & 0x8000u) << 16, bits;
        if (e == 31)
            bits = sign | 0x7F800000u | m << 13;
        else if (e)
            bits = sign | (e + 112) << 23 | m << 13;
        else if (m) {                          /* subnormal: m x 2^-24, normalised */
            int shift = __builtin_clz(m) - 21; /* leading 1 to bit 10 */
            bits = sign | (uint32_t)(113 - shift) << 23 | ((m << shift) & 0x3FF) << 13;
        } else
            bits = sign;
        v[3 * h] = float_of(bits);
        v[3 * h + 1] = float_of(bits + 1);
        v[3 * h + 2] = float_of(bits - (bits & 0x7FFFFFFF ? 1 : 0));
    }
    char want[48], got[64];
    for (int i = 0; i < N; i++) {
        srv_format_float(v[i], want);
        jsonw w;
        cr_assert_eq(jsonw_init(&w, 0), 0);
        jsonw_float(&w, v[i]);
        size_t n;
        char *s = jsonw_steal(&w, &n);
        snprintf(got, sizeof got, "%s", s);
        free(s);
        if (strcmp(got, want))
            cr_assert_fail("%08" PRIx32 ": table \"%s\", search \"%s\"", bits_of(v[i]), got, want);
    }
    jsonw a;
    cr_assert_eq(jsonw_init(&a, 0), 0);
    jsonw_float_array(&a, v, N);
    char *sa = steal_all(&a), *p = sa + 1;
    for (int i = 0; i < N; i++) {
        size_t len = srv_format_float(v[i], want);
        cr_assert(!strncmp(p, want, len) && (p[len] == ',' || p[len] == ']'),
                  "array element %d: want \"%s\" at \"%.20s\"", i, want, p);
        p += len + 1;
    }
    free(sa);
    free(v);
}

/* jsonw_f16_array (rows served straight from an f16 section) writes exactly what
 * jsonw_float_array writes for the same values widened to float: every one of the 65536 bit
 * patterns (NaN and infinities print null), in one array and in short ones (0, 1, 2 values,
 * where the separators and brackets are all there is). Criterion runs each test in its own
 * process, so the first array is printed before jsonw_tables_init (the digit-search fallback)
 * and again after it. */
static char *f16_text_of(const uint16_t *h, size_t n)
{
    jsonw w;
    cr_assert_eq(jsonw_init(&w, 0), 0);
    jsonw_f16_array(&w, h, n);
    return steal_all(&w);
}

static char *f32_text_of(const uint16_t *h, size_t n)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = emb_f16_to_f32(h[i]);
    jsonw w;
    cr_assert_eq(jsonw_init(&w, 0), 0);
    jsonw_float_array(&w, v, n);
    free(v);
    return steal_all(&w);
}

Test(jsonw, f16_array_prints_what_the_float_array_prints)
{
    uint16_t *h = malloc(65536 * sizeof *h);
    cr_assert_not_null(h);
    for (uint32_t i = 0; i < 65536; i++)
        h[i] = (uint16_t)(i * 40503u); /* every pattern once, in a scrambled order */
    for (int pass = 0; pass < 2; pass++) {
        if (pass)
            jsonw_tables_init();
        char *got = f16_text_of(h, 65536), *want = f32_text_of(h, 65536);
        cr_assert_str_eq(got, want, "pass %d: the f16 array differs from the float array", pass);
        cr_assert(strstr(got, "null"), "NaN and infinities print null");
        free(got);
        free(want);
        for (size_t n = 0; n <= 2; n++) {
            got = f16_text_of(h + 1000, n);
            want = f32_text_of(h + 1000, n);
            cr_assert_str_eq(got, want, "pass %d, %zu values", pass, n);
            free(got);
            free(want);
        }
    }
    free(h);
}

/* Answer buffers are recycled per thread: a released buffer is the next one jsonw_init hands
 * out on that thread, and what a thread keeps is freed when it ends (LeakSanitizer checks that
 * in the ASan suite). */
static void *release_many(void *arg)
{
    (void)arg;
    enum { N = 40 }; /* more than a thread keeps */
    char *b[N];
    for (int i = 0; i < N; i++) {
        jsonw w;
        cr_assert_eq(jsonw_init(&w, 100), 0);
        jsonw_cstr(&w, "{}");
        b[i] = jsonw_steal(&w, NULL);
        cr_assert_not_null(b[i]);
    }
    for (int i = 0; i < N; i++)
        jsonw_release(b[i]);
    return NULL;
}

Test(jsonw, answer_buffers_are_recycled_per_thread)
{
    jsonw w;
    cr_assert_eq(jsonw_init(&w, 100), 0);
    jsonw_cstr(&w, "[1,2,3]");
    size_t n;
    char *first = jsonw_steal(&w, &n);
    cr_assert_str_eq(first, "[1,2,3]");
    jsonw_release(first);
    cr_assert_eq(jsonw_init(&w, 200), 0);
    cr_expect_eq(w.buf, first, "the released buffer is reused");
    jsonw_cstr(&w, "{\"a\":1}");
    char *second = jsonw_steal(&w, &n);
    cr_assert_str_eq(second, "{\"a\":1}");
    jsonw_release(second);
    jsonw_release(NULL);
    char *other = malloc(10); /* any malloc'd block may be released */
    cr_assert_not_null(other);
    jsonw_release(other);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, release_many, NULL), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
}

/* Large answers (a gather of 1000 rows is 1.4 MB) are kept for reuse instead of being unmapped
 * and faulted in again, at most four of them up to 16 MiB each, and jsonw_trim frees them once
 * none was taken or kept for two seconds. */
static char *big_answer(size_t n)
{
    jsonw w;
    cr_assert_eq(jsonw_init(&w, n), 0);
    cr_assert_geq(w.cap, n + 1);
    for (size_t i = 0; i < n; i++)
        jsonw_char(&w, (char)('a' + i % 26)); /* every byte written: ASan checks the room */
    char *b = jsonw_steal(&w, NULL);
    cr_assert_not_null(b);
    cr_assert_eq(b[n - 1], (char)('a' + (n - 1) % 26));
    return b;
}

Test(jsonw, large_buffers_are_kept_until_idle)
{
    cr_assert_eq(jsonw_kept_bytes(), 0);
    char *b = big_answer(300 * 1024);
    jsonw_release(b);
    size_t kept = jsonw_kept_bytes();
    cr_expect_geq(kept, 300 * 1024, "a released large answer is kept (%zu bytes kept)", kept);
    b = big_answer(700 * 1024); /* takes the kept block and grows it */
    cr_expect_eq(jsonw_kept_bytes(), 0, "a new large answer takes the kept block");
    jsonw_release(b);
    cr_expect_geq(jsonw_kept_bytes(), 700 * 1024);

    /* At most four are kept; the rest, and any block over 16 MiB, are freed (LeakSanitizer
     * checks in the ASan suite). */
    char *many[6];
    for (int i = 0; i < 6; i++)
        many[i] = big_answer(300 * 1024);
    for (int i = 0; i < 6; i++)
        jsonw_release(many[i]);
    kept = jsonw_kept_bytes();
    cr_expect(kept >= 4 * 300 * 1024 && kept < 5 * 1024 * 1024, "%zu bytes kept", kept);
    char *huge = big_answer(17u << 20);
    char *again = big_answer(300 * 1024);
    jsonw_release(again);
    jsonw_release(huge);
    cr_expect_lt(jsonw_kept_bytes(), (size_t)16 << 20, "a block over 16 MiB is not kept");

    /* Idle for two seconds of the clock jsonw_trim is given: all freed. */
    jsonw_trim(100.0);
    jsonw_trim(101.5);
    cr_expect_gt(jsonw_kept_bytes(), 0, "kept while not idle for long");
    jsonw_trim(102.5);
    cr_expect_eq(jsonw_kept_bytes(), 0, "freed once idle");
    b = big_answer(300 * 1024); /* and large answers still work after a trim */
    jsonw_release(b);
    jsonw_trim(103.0);
    cr_expect_gt(jsonw_kept_bytes(), 0, "a take or keep restarts the idle clock");
    jsonw_trim(106.0);
    cr_expect_eq(jsonw_kept_bytes(), 0);
}

/* ---- doubles and integers ---- */

static char *format_double(double v)
{
    jsonw w;
    cr_assert_eq(jsonw_init(&w, 0), 0);
    jsonw_double(&w, v);
    return steal_all(&w);
}

Test(jsonw, double_texts)
{
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        {0.0, "0"},
        {-0.0, "-0"},
        {1.0, "1"},
        {0.1, "0.1"},
        {-2.5, "-2.5"},
        {1e300, "1e+300"},
        {1.0 / 3, "0.3333333333333333"},
        {DBL_MAX, "1.7976931348623157e+308"},
        {123456789012345680.0, "1.2345678901234568e+17"},
        {5e-324, "5e-324"},
        {-1e-320, "-1e-320"},
        {DBL_MIN, "2.2250738585072014e-308"},
        {NAN, "null"},
        {INFINITY, "null"},
        {-INFINITY, "null"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = format_double(cases[i].v);
        cr_expect_str_eq(s, cases[i].text);
        free(s);
    }
}

Test(jsonw, double_random_bits_round_trip)
{
    uint64_t st = 11;
    for (int i = 0; i < 300000; i++) {
        uint64_t bits = rng_next(&st);
        double v;
        memcpy(&v, &bits, sizeof v);
        char *s = format_double(v);
        if (!isfinite(v)) {
            if (strcmp(s, "null"))
                cr_assert_fail("%016" PRIx64 ": \"%s\"", bits, s);
        } else {
            double back = strtod(s, NULL);
            if (!is_json_number(s, strlen(s)) || memcmp(&back, &v, sizeof v))
                cr_assert_fail("%016" PRIx64 ": \"%s\"", bits, s);
        }
        free(s);
    }
}

Test(jsonw, integers)
{
    static const uint64_t u[] = {
        0,         1, 9, 10, 99, 100, 999, 1000, 4294967295u, 4294967296u, 10000000000000000000u,
        UINT64_MAX};
    static const int64_t s[] = {0, -1, 1, -9, -10, 100, INT64_MAX, INT64_MIN, INT64_MIN + 1};
    uint64_t st = 3;
    for (int i = 0; i < 20000; i++) {
        uint64_t r = rng_next(&st) >> (rng_next(&st) % 64);
        char want[48];
        jsonw w;
        cr_assert_eq(jsonw_init(&w, 0), 0);
        if (i < (int)(sizeof u / sizeof u[0]))
            r = u[i];
        jsonw_u64(&w, r);
        jsonw_char(&w, ' ');
        int64_t x = i < (int)(sizeof s / sizeof s[0]) ? s[i] : (int64_t)r;
        jsonw_i64(&w, x);
        snprintf(want, sizeof want, "%" PRIu64 " %" PRId64, r, x);
        char *got = steal_all(&w);
        if (strcmp(got, want))
            cr_assert_fail("\"%s\", want \"%s\"", got, want);
        free(got);
    }
}

/* ---- strings ---- */

static char *format_string(const char *s, size_t n)
{
    jsonw w;
    cr_assert_eq(jsonw_init(&w, 0), 0);
    jsonw_string(&w, s, n);
    return steal_all(&w);
}

#define FFFD "\xEF\xBF\xBD"

Test(jsonw, string_escapes_and_utf8)
{
    static const struct {
        const char *in;
        size_t len;
        const char *out; /* without the quotes */
    } cases[] = {
        {"", 0, ""},
        {"plain text", 10, "plain text"},
        {"\"", 1, "\\\""},
        {"\\", 1, "\\\\"},
        {"/", 1, "/"},
        {"\n\t\r\b\f", 5, "\\n\\t\\r\\b\\f"},
        {"\x01\x1F\x7F", 3, "\\u0001\\u001f\x7F"},
        {"a\0b", 3, "a\\u0000b"},
        {"\xC2\x80", 2, "\xC2\x80"},                   /* U+0080 */
        {"\xC3\xA9t\xC3\xA9", 5, "\xC3\xA9t\xC3\xA9"}, /* été */
        {"\xE0\xA0\x80", 3, "\xE0\xA0\x80"},           /* U+0800 */
        {"\xE2\x82\xAC", 3, "\xE2\x82\xAC"},           /* € */
        {"\xED\x9F\xBF", 3, "\xED\x9F\xBF"},           /* U+D7FF */
        {"\xEE\x80\x80", 3, "\xEE\x80\x80"},           /* U+E000 */
        {"\xEF\xBF\xBF", 3, "\xEF\xBF\xBF"},           /* U+FFFF */
        {"\xF0\x90\x80\x80", 4, "\xF0\x90\x80\x80"},   /* U+10000 */
        {"\xF0\x9D\x84\x9E", 4, "\xF0\x9D\x84\x9E"},   /* 𝄞 */
        {"\xF4\x8F\xBF\xBF", 4, "\xF4\x8F\xBF\xBF"},   /* U+10FFFF */
        /* overlong forms */
        {"\xC0\x80", 2, FFFD FFFD},
        {"\xC1\xBF", 2, FFFD FFFD},
        {"\xE0\x80\x80", 3, FFFD FFFD FFFD},
        {"\xE0\x9F\xBF", 3, FFFD FFFD FFFD},
        {"\xF0\x80\x80\x80", 4, FFFD FFFD FFFD FFFD},
        {"\xF0\x8F\xBF\xBF", 4, FFFD FFFD FFFD FFFD},
        /* surrogates */
        {"\xED\xA0\x80", 3, FFFD FFFD FFFD},
        {"\xED\xBF\xBF", 3, FFFD FFFD FFFD},
        {"\xED\xA0\xBD\xED\xB2\xA9", 6, FFFD FFFD FFFD FFFD FFFD FFFD},
        /* above U+10FFFF, and bytes that never start a sequence */
        {"\xF4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD},
        {"\xF5\x80\x80\x80", 4, FFFD FFFD FFFD FFFD},
        {"\xF8\x88\x80\x80\x80", 5, FFFD FFFD FFFD FFFD FFFD},
        {"\xFE\xFF", 2, FFFD FFFD},
        /* stray continuation bytes */
        {"\x80", 1, FFFD},
        {"a\xBFz", 3, "a" FFFD "z"},
        /* truncated sequences, at the end and before other text */
        {"\xC3", 1, FFFD},
        {"\xC3"
         "A",
         2, FFFD "A"},
        {"\xE2\x82", 2, FFFD FFFD},
        {"\xE2\x82"
         "A",
         3, FFFD FFFD "A"},
        {"\xF0\x9D\x84", 3, FFFD FFFD FFFD},
        {"\xF0\x9D\x84\"", 4, FFFD FFFD FFFD "\\\""},
        /* recovery: a valid sequence right after an invalid byte */
        {"\xFF\xC3\xA9", 3, FFFD "\xC3\xA9"},
        {"\xE2\xE2\x82\xAC", 4, FFFD "\xE2\x82\xAC"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = format_string(cases[i].in, cases[i].len);
        size_t n = strlen(cases[i].out);
        int ok = strlen(got) == n + 2 && got[0] == '"' && got[n + 1] == '"' &&
                 memcmp(got + 1, cases[i].out, n) == 0;
        cr_expect(ok, "case %zu: got %s", i, got);
        free(got);
    }
}

Test(jsonw, string_every_single_byte)
{
    for (int b = 0; b < 256; b++) {
        char in = (char)b, want[16];
        if (b == '"' || b == '\\')
            snprintf(want, sizeof want, "\"\\%c\"", b);
        else if (b == '\n' || b == '\t' || b == '\r' || b == '\b' || b == '\f')
            snprintf(want, sizeof want, "\"\\%c\"",
                     b == '\n'   ? 'n'
                     : b == '\t' ? 't'
                     : b == '\r' ? 'r'
                     : b == '\b' ? 'b'
                                 : 'f');
        else if (b < 0x20)
            snprintf(want, sizeof want, "\"\\u%04x\"", b);
        else if (b < 0x80)
            snprintf(want, sizeof want, "\"%c\"", b);
        else
            snprintf(want, sizeof want, "\"" FFFD "\"");
        char *got = format_string(&in, 1);
        cr_expect_str_eq(got, want, "byte %#x", b);
        free(got);
    }
}

/* Decodes one UTF-8 code point the long way (no shared code with jsonw.c): returns its length,
 * or 0 when s does not start with a valid, shortest-form, non-surrogate sequence. */
static size_t ref_utf8(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len = s[0] < 0x80         ? 1
                 : (s[0] >> 5) == 6  ? 2
                 : (s[0] >> 4) == 14 ? 3
                 : (s[0] >> 3) == 30 ? 4
                                     : 0;
    if (!len || len > n)
        return 0;
    uint32_t c = len == 1 ? s[0] : s[0] & (0xFFu >> (len + 1));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] >> 6) != 2)
            return 0;
        c = c << 6 | (s[i] & 0x3F);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min[len] || c > 0x10FFFF || (c >= 0xD800 && c < 0xE000))
        return 0;
    *cp = c;
    return len;
}

/* Parses the JSON string text (quotes included), checking its grammar, and returns the code
 * points it holds in cps; -1 when it is not a valid JSON string of valid UTF-8. */
static long parse_json_string(const char *text, uint32_t *cps)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t n = strlen(text), i = 1;
    long k = 0;
    if (n < 2 || s[0] != '"' || s[n - 1] != '"')
        return -1;
    while (i < n - 1) {
        uint32_t cp;
        if (s[i] == '\\') {
            const char *esc = "\"\\/bfnrt", *val = "\"\\/\b\f\n\r\t";
            const char *at = i + 1 < n - 1 ? strchr(esc, s[i + 1]) : NULL;
            if (at && *at) {
                cps[k++] = (unsigned char)val[at - esc];
                i += 2;
                continue;
            }
            unsigned x;
            if (i + 6 > n - 1 || s[i + 1] != 'u' || sscanf(text + i + 2, "%4x", &x) != 1)
                return -1;
            cps[k++] = x;
            i += 6;
            continue;
        }
        if (s[i] < 0x20 || s[i] == '"')
            return -1;
        size_t len = ref_utf8(s + i, n - 1 - i, &cp);
        if (!len)
            return -1;
        cps[k++] = cp;
        i += len;
    }
    return k;
}

Test(jsonw, string_random_bytes_decode_back)
{
    uint64_t st = 5;
    unsigned char in[64];
    uint32_t want[64], got[64 * 6];
    for (int iter = 0; iter < 200000; iter++) {
        size_t n = rng_next(&st) % 64;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = rng_next(&st);
            /* mostly bytes that matter: controls, quotes, lead and continuation bytes */
            static const unsigned char pick[] = {0,    '"',  '\\', '\n', 0x1F, 'a',  0x7F, 0x80,
                                                 0xBF, 0xC2, 0xC3, 0xDF, 0xE0, 0xED, 0xEF, 0xF0,
                                                 0xF4, 0xF5, 0xA0, 0x90, 0x8F, 0xFF, 0xC0, 'z'};
            in[i] = r & 1 ? (unsigned char)(r >> 8) : pick[(r >> 8) % sizeof pick];
        }
        /* the reference: each valid sequence is its code point, each other byte U+FFFD */
        size_t nw = 0;
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            size_t len = ref_utf8(in + i, n - i, &cp);
            want[nw++] = len ? cp : 0xFFFD;
            i += len ? len : 1;
        }
        char *text = format_string((const char *)in, n);
        long k = parse_json_string(text, got);
        if (k != (long)nw || memcmp(got, want, nw * sizeof want[0]))
            cr_assert_fail("iteration %d: %s (%ld code points, want %zu)", iter, text, k, nw);
        free(text);
    }
}

/* ---- buffer ---- */

Test(jsonw, growth_from_tiny_buffers)
{
    jsonw w;
    cr_assert_eq(jsonw_init(&w, 1), 0);
    for (int i = 0; i < 1000000; i++)
        jsonw_char(&w, (char)('a' + i % 26));
    jsonw_string(&w, "xyz", 3);
    jsonw_u64(&w, 42);
    size_t len;
    char *s = jsonw_steal(&w, &len);
    cr_assert_not_null(s);
    cr_assert_eq(len, 1000000 + 5 + 2);
    cr_expect_eq(s[999999], 'a' + 999999 % 26);
    cr_expect_str_eq(s + 1000000, "\"xyz\"42");
    free(s);
    /* stolen: w is empty and usable again */
    cr_expect_null(w.buf);
    cr_expect_eq(w.len, 0);
    jsonw_cstr(&w, "again");
    s = jsonw_steal(&w, NULL);
    cr_expect_str_eq(s, "again");
    free(s);
    /* stealing an empty writer gives an empty string */
    s = jsonw_steal(&w, &len);
    cr_assert_not_null(s);
    cr_expect_str_eq(s, "");
    cr_expect_eq(len, 0);
    free(s);
    jsonw_free(&w);
    jsonw_free(&w);
}

Test(jsonw, out_of_memory_stops_appending)
{
    jsonw w;
    static const float one = 1.0f;
    size_t len = 99;
    cr_assert_eq(jsonw_init(&w, 0), 0);
    jsonw_cstr(&w, "[1");
    /* sizes whose byte count overflows size_t: refused before any allocation */
    jsonw_float_array(&w, &one, SIZE_MAX / 8);
    cr_expect_eq(w.oom, 1);
    cr_expect_eq(w.len, 2);
    jsonw_cstr(&w, ",2]");
    jsonw_char(&w, ',');
    jsonw_float(&w, 1.0f);
    jsonw_double(&w, 1.0);
    jsonw_u64(&w, 1);
    jsonw_i64(&w, -1);
    jsonw_string(&w, "x", 1);
    jsonw_base64(&w, "x", 1);
    jsonw_float_array(&w, &one, 1);
    cr_expect_eq(w.len, 2);
    cr_expect_null(jsonw_steal(&w, &len));
    cr_expect_eq(len, 0);
    /* stolen (and freed): w is empty and usable again */
    cr_expect_eq(w.oom, 0);
    jsonw_string(&w, "x", SIZE_MAX - 1);
    cr_expect_eq(w.oom, 1);
    jsonw_free(&w);
    cr_expect_eq(w.oom, 0);
    jsonw_base64(&w, "x", SIZE_MAX - 1);
    cr_expect_eq(w.oom, 1);
    jsonw_free(&w);
    jsonw_raw(&w, "", SIZE_MAX);
    cr_expect_eq(w.oom, 1);
    cr_expect_null(jsonw_steal(&w, NULL));
    cr_expect_eq(jsonw_init(&w, SIZE_MAX), -ENOMEM);
    cr_expect_eq(w.oom, 1);
    jsonw_free(&w);

    if (!JW_TEST_HUGE_MALLOC)
        return;
    /* a realloc that fails: nothing is read from the source */
    cr_assert_eq(jsonw_init(&w, 0), 0);
    jsonw_cstr(&w, "[1");
    jsonw_raw(&w, "", SIZE_MAX / 2);
    cr_expect_eq(w.oom, 1);
    cr_expect_eq(w.len, 2);
    jsonw_cstr(&w, ",2]");
    cr_expect_eq(w.len, 2);
    cr_expect_null(jsonw_steal(&w, NULL));
    cr_expect_eq(jsonw_init(&w, SIZE_MAX / 2), -ENOMEM);
    cr_expect_eq(w.oom, 1);
    jsonw_cstr(&w, "x");
    cr_expect_null(jsonw_steal(&w, NULL));
}

/* ---- base64 ---- */

static char *encode_b64(const void *data, size_t n)
{
    jsonw w;
    cr_assert_eq(jsonw_init(&w, 0), 0);
    jsonw_base64(&w, data, n);
    return steal_all(&w);
}

/* Bit by bit, the way RFC 4648 section 4 describes it. */
static void ref_b64(const uint8_t *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t nbits = n * 8, o = 0;
    for (size_t bit = 0; bit < nbits; bit += 6) {
        unsigned v = 0;
        for (size_t j = bit; j < bit + 6; j++)
            v = v << 1 | (j < nbits ? (in[j / 8] >> (7 - j % 8)) & 1 : 0);
        out[o++] = a[v];
    }
    while (o % 4)
        out[o++] = '=';
    out[o] = '\0';
}

Test(base64, rfc4648_vectors)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char want[32];
        snprintf(want, sizeof want, "\"%s\"", coded[i]);
        char *got = encode_b64(plain[i], strlen(plain[i]));
        cr_expect_str_eq(got, want);
        free(got);
        uint8_t out[16];
        long n = srv_base64_decode(coded[i], strlen(coded[i]), out);
        cr_expect_eq(n, (long)strlen(plain[i]), "%s", coded[i]);
        cr_expect(n >= 0 && memcmp(out, plain[i], (size_t)n) == 0, "%s", coded[i]);
    }
}

Test(base64, random_round_trips)
{
    uint64_t st = 9;
    uint8_t in[300], back[300];
    char ref[512];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = rng_next(&st) % sizeof in;
        for (size_t i = 0; i < n; i++)
            in[i] = (uint8_t)rng_next(&st);
        char *got = encode_b64(in, n);
        ref_b64(in, n, ref);
        size_t len = strlen(got);
        if (len != strlen(ref) + 2 || memcmp(got + 1, ref, len - 2))
            cr_assert_fail("%zu bytes: %s, want \"%s\"", n, got, ref);
        long m = srv_base64_decode(got + 1, len - 2, back);
        if (m != (long)n || memcmp(back, in, n))
            cr_assert_fail("%zu bytes: %s decodes to %ld bytes", n, got, m);
        free(got);
    }
}

Test(base64, every_byte_and_pair)
{
    for (int a = 0; a < 256; a++)
        for (int b = -1; b < 256; b++) {
            uint8_t in[2] = {(uint8_t)a, (uint8_t)b}, back[3];
            size_t n = b < 0 ? 1 : 2;
            char ref[8];
            ref_b64(in, n, ref);
            long m = srv_base64_decode(ref, 4, back);
            if (m != (long)n || memcmp(back, in, n))
                cr_assert_fail("%02x%02x: %s", a, b & 0xFF, ref);
        }
}

Test(base64, rejects_invalid_text)
{
    static const struct {
        const char *text;
        size_t len;
    } bad[] = {
        {"Z", 1},        {"Zg", 2},     {"Zg=", 3},        {"Zg===", 5},   {"Zm9vY", 5},
        {"Zg=a", 4},     {"Z===", 4},   {"====", 4},       {"=Zg=", 4},    {"Zg==Zg==", 8},
        {"Zm9=Zm9v", 8}, {"Zm9v\n", 5}, {"Zm9v\nZm9v", 9}, {"Zm 9", 4},    {" Zm9", 4},
        {"Zm9-", 4},     {"Zm9_", 4},   {"Zm9\0", 4},      {"\x80Zg=", 4}, {"Zm9v\xC3\xA9==", 8},
        {"Zh==", 4},     {"Zm9=", 4},   {"Zm8=Zm8=", 8},   {"AB=A", 4},
    };
    uint8_t out[16];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_eq(srv_base64_decode(bad[i].text, bad[i].len, out), -1, "case %zu: %.*s", i,
                     (int)bad[i].len, bad[i].text);
    cr_expect_eq(srv_base64_decode("", 0, out), 0);
}

Test(base64, every_character_in_every_position)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int c = 0; c < 256; c++) {
        int in_alphabet = c && strchr(alphabet, c) != NULL;
        uint8_t out[8];
        for (int pos = 0; pos < 8; pos++) {
            /* "AAAAAAAA" with one character replaced; '=' is valid only as the last one or
             * the last two, which this single replacement can only make "AAAAAAA=". */
            char t[8];
            memset(t, 'A', sizeof t);
            t[pos] = (char)c;
            long want = in_alphabet ? 6 : (c == '=' && pos == 7) ? 5 : -1;
            long got = srv_base64_decode(t, sizeof t, out);
            if (got != want)
                cr_assert_fail("byte %#x at %d: %ld, want %ld", c, pos, got, want);
        }
    }
}
