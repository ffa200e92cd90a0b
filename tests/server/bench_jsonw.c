/*
 * bench_jsonw.c - how fast jsonw writes floats, against snprintf("%.9g"); and an exhaustive check
 * of the float text over all 2^32 bit patterns. A standalone program, not a test:
 *
 *   gcc -std=gnu11 -O2 -D_GNU_SOURCE -Iserver server/jsonw.c tests/server/bench_jsonw.c -lm \
 *       -o bench_jsonw
 *   ./bench_jsonw [n]                 time n floats from N(0,1), then n random bit patterns
 *                                     (default 1M), best of 11 runs
 *   ./bench_jsonw --verify [lo hi]    check bit patterns lo..hi-1 (hex; default all 2^32)
 *
 * --verify asserts, for every pattern: NaN and infinities print "null"; otherwise the text is a
 * JSON number, strtof reads it back to the same bits, no decimal with one digit fewer reads back
 * (the two such neighbours of the text are tried; any shorter decimal in the rounding interval
 * would make one of them read back), and when the correctly rounded decimal of the same length
 * (glibc "%.*e") reads back, the text is that decimal (the closest). It prints the first few
 * failures and exits 1 if there are any. All 2^32 take about 80 CPU minutes (Xeon, 2.3 GHz):
 * split the range over processes.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jsonw.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

/* splitmix64 */
static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* A standard normal sample (Box-Muller). */
static float rng_normal(void)
{
    double u1 = ((double)(rng_next() >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(rng_next() >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The best of 11 runs of one way of writing n floats, in ns per float. */
enum { WAY_FORMAT, WAY_ARRAY_REUSED, WAY_ARRAY_FRESH, WAY_PRINTF, WAYS };

static double time_way(int way, const float *v, size_t n, size_t *sink)
{
    static const char *const names[WAYS] = {"srv_format_float", "jsonw_float_array (buffer reused)",
                                            "jsonw_float_array (fresh buffer)",
                                            "snprintf(\"%.9g\")"};
    char buf[64];
    double best = 1e300;
    jsonw w;
    if (jsonw_init(&w, n * 16 + 64))
        exit(1);
    for (int rep = 0; rep < 11; rep++) {
        double t0 = now_ns();
        switch (way) {
        case WAY_FORMAT:
            for (size_t i = 0; i < n; i++)
                *sink += srv_format_float(v[i], buf);
            break;
        case WAY_ARRAY_REUSED:
            w.len = 0;
            jsonw_float_array(&w, v, n);
            *sink += w.len;
            break;
        case WAY_ARRAY_FRESH: {
            jsonw f;
            if (jsonw_init(&f, 0))
                exit(1);
            jsonw_float_array(&f, v, n);
            size_t len;
            char *text = jsonw_steal(&f, &len);
            if (!text)
                exit(1);
            *sink += len;
            free(text);
            break;
        }
        case WAY_PRINTF:
            for (size_t i = 0; i < n; i++)
                *sink += (size_t)snprintf(buf, sizeof buf, "%.9g", (double)v[i]);
            break;
        }
        double t = now_ns() - t0;
        if (t < best)
            best = t;
    }
    jsonw_free(&w);
    printf("  %-36s %6.1f ns/float\n", names[way], best / (double)n);
    return best / (double)n;
}

static int bench(size_t n)
{
    float *v = malloc(n * sizeof *v);
    if (!v)
        return 1;
    size_t sink = 0;
    printf("%zu floats from N(0,1), best of 11 runs:\n", n);
    for (size_t i = 0; i < n; i++)
        v[i] = rng_normal();
    for (int way = 0; way < WAYS; way++)
        time_way(way, v, n, &sink);
    printf("%zu random finite bit patterns:\n", n);
    for (size_t i = 0; i < n; i++) {
        uint32_t b = (uint32_t)rng_next();
        b = (b & 0x7F800000) == 0x7F800000 ? b & 0xBFFFFFFF : b;
        memcpy(&v[i], &b, sizeof b);
    }
    time_way(WAY_FORMAT, v, n, &sink);
    time_way(WAY_PRINTF, v, n, &sink);
    printf("(checksum %zu)\n", sink);
    free(v);
    return 0;
}

/* Parses the decimal text s as d * 10^e with d free of trailing zeros; returns 0, or -1 when s
 * has more than 19 significant digits or is not of the form -?digits[.digits][e[+-]digits]. */
static int parse_decimal(const char *s, uint64_t *d, int *e)
{
    uint64_t m = 0;
    int exp = 0, nd = 0, any = 0;
    if (*s == '-')
        s++;
    for (; *s >= '0' && *s <= '9'; s++, any = 1) {
        if (m || *s != '0') {
            if (++nd > 19)
                return -1;
            m = m * 10 + (uint64_t)(*s - '0');
        }
    }
    if (*s == '.') {
        for (s++; *s >= '0' && *s <= '9'; s++, any = 1) {
            exp--;
            if (m || *s != '0') {
                if (++nd > 19)
                    return -1;
                m = m * 10 + (uint64_t)(*s - '0');
            }
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
    }
    *d = m;
    *e = m ? exp : 0;
    return 0;
}

/* RFC 8259: -? (0 | [1-9][0-9]*) (\.[0-9]+)? ([eE][+-]?[0-9]+)? */
static int is_json_number(const char *s)
{
    if (*s == '-')
        s++;
    if (*s == '0')
        s++;
    else if (*s >= '1' && *s <= '9')
        while (*s >= '0' && *s <= '9')
            s++;
    else
        return 0;
    if (*s == '.') {
        s++;
        if (!(*s >= '0' && *s <= '9'))
            return 0;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!(*s >= '0' && *s <= '9'))
            return 0;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return *s == '\0';
}

static int reads_back(const char *s, uint32_t bits)
{
    float f = strtof(s, NULL);
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b == bits;
}

static unsigned ndigits(uint64_t d)
{
    unsigned n = 1;
    while (d >= 10) {
        d /= 10;
        n++;
    }
    return n;
}

/* Checks one pattern; returns 0 or prints why not and returns 1. */
static int verify_one(uint32_t bits)
{
    float v;
    char text[64], alt[64];
    memcpy(&v, &bits, sizeof v);
    size_t len = srv_format_float(v, text);
    if (len != strlen(text) || len > 15)
        goto fail;
    if (!isfinite(v))
        return strcmp(text, "null") ? (printf("%08" PRIx32 ": \"%s\"\n", bits, text), 1) : 0;
    if (!is_json_number(text) || !reads_back(text, bits))
        goto fail;
    uint64_t d;
    int e;
    if (parse_decimal(text, &d, &e))
        goto fail;
    if (!d)
        return strcmp(text, signbit(v) ? "-0" : "0")
                   ? (printf("%08" PRIx32 ": \"%s\"\n", bits, text), 1)
                   : 0;
    unsigned n = ndigits(d);
    const char *sign = signbit(v) ? "-" : "";
    if (n > 1) {
        for (uint64_t c = d / 10; c <= d / 10 + 1; c++) {
            snprintf(alt, sizeof alt, "%s%" PRIu64 "e%d", sign, c, e + 1);
            if (c && reads_back(alt, bits)) {
                printf("%08" PRIx32 ": \"%s\" but \"%s\" is shorter\n", bits, text, alt);
                return 1;
            }
        }
    }
    snprintf(alt, sizeof alt, "%.*e", (int)n - 1, (double)v);
    if (reads_back(alt, bits)) {
        uint64_t d2;
        int e2;
        if (parse_decimal(alt, &d2, &e2) || d2 != d || e2 != e) {
            printf("%08" PRIx32 ": \"%s\" but \"%s\" is closer\n", bits, text, alt);
            return 1;
        }
    }
    return 0;
fail:
    printf("%08" PRIx32 ": \"%s\" (%a)\n", bits, text, (double)v);
    return 1;
}

static int verify(uint64_t lo, uint64_t hi)
{
    uint64_t failures = 0;
    double t0 = now_ns();
    for (uint64_t b = lo; b < hi; b++) {
        if (verify_one((uint32_t)b) && ++failures >= 20)
            break;
        if ((b & 0xFFFFFFF) == 0xFFFFFFF) {
            printf("  ... %08" PRIx64 " (%.0f s)\n", b, (now_ns() - t0) / 1e9);
            fflush(stdout);
        }
    }
    printf("verified %08" PRIx64 "..%08" PRIx64 ": %" PRIu64 " failures\n", lo, hi - 1, failures);
    return failures != 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && !strcmp(argv[1], "--verify")) {
        uint64_t lo = argc >= 3 ? strtoull(argv[2], NULL, 16) : 0;
        uint64_t hi = argc >= 4 ? strtoull(argv[3], NULL, 16) : (uint64_t)1 << 32;
        return verify(lo, hi > (uint64_t)1 << 32 ? (uint64_t)1 << 32 : hi);
    }
    size_t n = argc >= 2 ? strtoull(argv[1], NULL, 10) : (size_t)1 << 20;
    return bench(n ? n : 1);
}
