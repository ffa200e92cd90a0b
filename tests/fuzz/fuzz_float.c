/*
 * fuzz_float.c - the float formatter of server/jsonw.c (every number of every JSON answer).
 *
 * The input is read as little-endian float32 bit patterns (4 bytes each), then again as float64
 * patterns (8 bytes each). Properties of srv_format_float / jsonw_float: a finite float prints
 * as a JSON number (RFC 8259 grammar) of at most 15 bytes that strtof reads back to the same
 * bits (so -0 stays "-0"), with no more significant digits than the shortest "%.<n>g" that reads
 * back (shortest); NaN and infinities print "null". jsonw_float_array writes the same texts
 * between brackets. jsonw_double: a JSON number that strtod reads back, or null.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "jsonw.h"

#define MAX_FLOATS 1024u

/* Whether s[0, n) is a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int is_json_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0')
        i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9')
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    else
        return 0;
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    return i == n;
}

/* Significant digits of a decimal text: digits of the mantissa without leading and trailing
 * zeros ("100" and "0.001" have 1, "1.5e+20" has 2). */
static int sig_digits(const char *s)
{
    char d[64];
    int n = 0;
    for (; *s && *s != 'e' && *s != 'E'; s++)
        if (*s >= '0' && *s <= '9' && n < (int)sizeof d)
            d[n++] = *s;
    int a = 0;
    while (a < n && d[a] == '0')
        a++;
    while (n > a && d[n - 1] == '0')
        n--;
    return n - a;
}

static void check_float(float v)
{
    char out[64];
    memset(out, 'Z', sizeof out);
    size_t n = srv_format_float(v, out);
    FUZZ_CHECK(n == strlen(out), "length %zu, text '%s'", n, out);
    uint32_t bits, back_bits;
    memcpy(&bits, &v, 4);
    if (!isfinite(v)) {
        FUZZ_CHECK(!strcmp(out, "null"), "non-finite 0x%08x prints '%s'", bits, out);
        return;
    }
    FUZZ_CHECK(n <= 15, "0x%08x prints %zu bytes: '%s'", bits, n, out);
    FUZZ_CHECK(is_json_number(out, n), "0x%08x prints '%s', not a JSON number", bits, out);
    float back = strtof(out, NULL);
    memcpy(&back_bits, &back, 4);
    FUZZ_CHECK(back_bits == bits, "0x%08x prints '%s', which reads back as 0x%08x", bits, out,
               back_bits);
    /* The shortest printf text that reads back: no digit fewer is possible. */
    int shortest = 9;
    for (int prec = 1; prec < 9; prec++) {
        char t[64];
        snprintf(t, sizeof t, "%.*g", prec, (double)v);
        if (strtof(t, NULL) == v) {
            shortest = sig_digits(t);
            break;
        }
    }
    FUZZ_CHECK(sig_digits(out) <= shortest, "0x%08x prints '%s' (%d digits); %d digits read back",
               bits, out, sig_digits(out), shortest);
}

static void check_double(double v)
{
    jsonw w;
    FUZZ_CHECK(jsonw_init(&w, 0) == 0, "out of memory");
    jsonw_double(&w, v);
    size_t n;
    char *s = jsonw_steal(&w, &n);
    FUZZ_CHECK(s != NULL, "out of memory");
    if (!isfinite(v)) {
        FUZZ_CHECK(!strcmp(s, "null"), "non-finite double prints '%s'", s);
    } else {
        FUZZ_CHECK(is_json_number(s, n), "%a prints '%s', not a JSON number", v, s);
        double back = strtod(s, NULL);
        FUZZ_CHECK(memcmp(&back, &v, 8) == 0 ||
                       (back == 0 && v == 0 && signbit(back) == signbit(v)),
                   "%a prints '%s', which reads back as %a", v, s, back);
    }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t nf = size / 4 < MAX_FLOATS ? size / 4 : MAX_FLOATS;
    float vals[MAX_FLOATS];
    memcpy(vals, data, nf * 4);
    for (size_t i = 0; i < nf; i++)
        check_float(vals[i]);

    /* The array writer: the same texts, comma-separated, in brackets. */
    jsonw w;
    FUZZ_CHECK(jsonw_init(&w, 0) == 0, "out of memory");
    jsonw_float_array(&w, vals, nf);
    size_t len;
    char *arr = jsonw_steal(&w, &len);
    FUZZ_CHECK(arr && len >= 2 && arr[0] == '[' && arr[len - 1] == ']', "array text");
    const char *p = arr + 1;
    for (size_t i = 0; i < nf; i++) {
        char one[64];
        size_t n = srv_format_float(vals[i], one);
        FUZZ_CHECK(!strncmp(p, one, n) && (p[n] == ',' || p[n] == ']'),
                   "array element %zu is not '%s'", i, one);
        p += n + 1;
    }
    FUZZ_CHECK((size_t)(p - arr) == (nf ? len : len - 1), "array length %zu", len);
    free(arr);

    for (size_t i = 0; i + 8 <= size && i < 8 * 256; i += 8) {
        double d;
        memcpy(&d, data + i, 8);
        check_double(d);
    }
    return 0;
}
