/*
 * parse_float.c - emb_parse_float: decimal text to float, correctly rounded, in the C locale.
 *
 * Text embeddings are tens of millions of numbers, so the common case must not call strtof (a
 * locale lookup and a multi-precision path per number). The fast path is exact by
 * construction: up to 19 significant digits accumulate into m; when m <= 2^53 and the decimal
 * exponent k satisfies |k| <= 22, both m and 10^|k| are exact doubles, so m * 10^k (or m / 10^-k)
 * is one correctly rounded double operation. Rounding that double to float could round twice,
 * but only when the double lands exactly on a midpoint between two floats: every float and every
 * float midpoint is itself a double, and rounding to nearest is monotone, so a double that is not
 * a midpoint rounds to the same float as the exact value. Midpoints (low 29 mantissa bits ==
 * 0x10000000) go to the slow path. In range: 1e-22 <= |x| < 2^53 * 1e22 < FLT_MAX, so the result
 * is a normal float and the bit test is valid. Shortest-repr output of float32 (at most 9
 * digits) and "%.6f"-style text all take the fast path.
 *
 * The slow path rewrites the number without its decimal point ("12.5e3" -> "125e2"), which
 * keeps the value exact and makes it independent of LC_NUMERIC, then calls glibc's strtof, which
 * is correctly rounded. Rejected: the float-only fast path (m < 2^24, |k| <= 10) accepts far
 * fewer inputs; strtof_l with a lazily created locale (a static initialised on first use is a
 * data race, and pthread_once for one call site is heavier than the rewrite); Eisel-Lemire (a
 * 128-bit table for a case the double path already covers on our inputs).
 *
 * Syntax (stricter than strtof): [+-] then digits with an optional '.' (at least one digit), then
 * an optional exponent [eE][+-]digits that must have a digit ("1e" is rejected), or nan / inf /
 * infinity in any case. No hex floats, no leading spaces: the caller splits fields.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emb_reader.h"

#define MAX_SIG 19           /* significant digits that fit a uint64 */
#define EXP_CAP 1000000000LL /* saturate explicit exponents here: far past any float */

static const double pow10_exact[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

static int is_digit(char c)
{
    return (unsigned char)(c - '0') < 10;
}

/* Case-insensitive match of the lower-case word w at [p, end); returns its length or 0. */
static size_t match_word(const char *p, const char *end, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if ((p[i] | 0x20) != w[i])
            return 0;
    }
    return n;
}

/* Correctly rounded conversion of the already validated number [s, e) through strtof. Digits
 * and exponent are rewritten as "[-]DIGITSeEXP" so no decimal point (hence no locale) is
 * involved. Returns 0, or -1 when memory for a very long number cannot be had. */
static int slow_path(const char *s, const char *e, float *out)
{
    char small[256];
    size_t cap = (size_t)(e - s) + 32;
    char *buf = cap <= sizeof small ? small : malloc(cap);
    if (!buf)
        return -1;
    const char *p = s;
    size_t n = 0;
    if (*p == '+' || *p == '-') {
        if (*p == '-')
            buf[n++] = '-';
        p++;
    }
    long long nfrac = 0;
    int seen_point = 0;
    for (; p < e && (is_digit(*p) || *p == '.'); p++) {
        if (*p == '.') {
            seen_point = 1;
            continue;
        }
        buf[n++] = *p; /* leading zeros are harmless to strtof */
        nfrac += seen_point;
    }
    long long ex = 0;
    if (p < e) { /* [eE][+-]digits, validated by the caller */
        p++;
        int eneg = 0;
        if (*p == '+' || *p == '-')
            eneg = *p++ == '-';
        for (; p < e; p++) {
            if (ex < EXP_CAP)
                ex = ex * 10 + (*p - '0');
        }
        if (eneg)
            ex = -ex;
    }
    ex -= nfrac;
    snprintf(buf + n, cap - n, "e%lld", ex); /* cap leaves 32 bytes for it */
    *out = strtof(buf, NULL);
    if (buf != small)
        free(buf);
    return 0;
}

/* The mantissa of the digits (and at most one point) in [s, e) when there are more than
 * MAX_SIG of them: the first MAX_SIG significant digits go into the result, *k gets the power of
 * ten to scale it by, and *dropped whether a nonzero digit was left out. */
static uint64_t long_mantissa(const char *s, const char *e, long long *k, int *dropped)
{
    uint64_t m = 0;
    int nsig = 0, frac = 0;
    *k = 0;
    for (; s < e; s++) {
        if (*s == '.') {
            frac = 1;
            continue;
        }
        unsigned d = (unsigned)(*s - '0');
        if (nsig == 0 && d == 0) {
            *k -= frac;
            continue;
        }
        if (nsig < MAX_SIG) {
            m = m * 10 + d;
            nsig++;
            *k -= frac;
        } else {
            *k += !frac;
            *dropped |= d != 0;
        }
    }
    return m;
}

const char *emb_parse_float(const char *s, const char *end, float *out)
{
    const char *p = s;
    int neg = 0;
    if (p < end && (*p == '-' || *p == '+')) {
        neg = *p == '-';
        p++;
    }
    if (p == end)
        return NULL;
    if ((*p | 0x20) == 'n' || (*p | 0x20) == 'i') {
        size_t n;
        float v;
        if ((n = match_word(p, end, "nan")) != 0)
            v = NAN;
        else if ((n = match_word(p, end, "infinity")) != 0 || (n = match_word(p, end, "inf")) != 0)
            v = INFINITY;
        else
            return NULL;
        *out = neg ? -v : v;
        return p + n;
    }

    /* Digits, with an optional point. Up to MAX_SIG digits in all (the common case) m cannot
     * overflow, leading zeros included (they add nothing to m), so the loops stay branch-light;
     * longer numbers are rescanned digit by digit. */
    uint64_t m = 0;
    long long k; /* value = m * 10^k, before dropped digits */
    int dropped = 0;
    const char *ds = p;
    while (p < end && is_digit(*p))
        m = m * 10 + (uint64_t)(*p++ - '0');
    size_t ndig = (size_t)(p - ds), nfrac = 0;
    if (p < end && *p == '.') {
        const char *fs = ++p;
        while (p < end && is_digit(*p))
            m = m * 10 + (uint64_t)(*p++ - '0');
        nfrac = (size_t)(p - fs);
        ndig += nfrac;
    }
    if (ndig == 0)
        return NULL;
    if (ndig <= MAX_SIG)
        k = -(long long)nfrac;
    else
        m = long_mantissa(ds, p, &k, &dropped);
    if (p < end && (*p | 0x20) == 'e') {
        const char *q = p + 1;
        int eneg = 0;
        if (q < end && (*q == '+' || *q == '-'))
            eneg = *q++ == '-';
        if (q == end || !is_digit(*q))
            return NULL;
        long long ex = 0;
        for (; q < end && is_digit(*q); q++) {
            if (ex < EXP_CAP)
                ex = ex * 10 + (*q - '0');
        }
        k += eneg ? -ex : ex;
        p = q;
    }

    if (m == 0) {
        *out = neg ? -0.0f : 0.0f;
        return p;
    }
#if FLT_EVAL_METHOD == 0
    if (!dropped && m <= (1ull << 53) && k >= -22 && k <= 22) {
        double d = (double)m;
        d = k < 0 ? d / pow10_exact[-k] : d * pow10_exact[k];
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        if ((bits & 0x1FFFFFFFu) != 0x10000000u) {
            float f = (float)d;
            *out = neg ? -f : f;
            return p;
        }
    }
#endif
    if (slow_path(s, p, out) != 0)
        return NULL;
    return p;
}
