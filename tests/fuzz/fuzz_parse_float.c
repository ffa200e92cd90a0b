/*
 * fuzz_parse_float.c - emb_parse_float (lib/parse_float.c), the number parser of the text
 * readers (GloVe, word2vec text), against glibc's strtof.
 *
 * The input is text; numbers are taken from it field by field (split at spaces, as the readers
 * split), each also parsed from every start offset of the first 64 bytes. Properties: when
 * emb_parse_float accepts [s, p), p lies within the field and strtof reads exactly [s, p) to the
 * same float (both NaN for "nan"), so the fast path is correctly rounded; it rejects what has
 * no digit and never reads past the end it is given.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "emb_reader.h"
#include "fuzz.h"

static void check_number(const char *s, const char *end)
{
    /* An exact-size copy: ASan catches a read past end. */
    size_t n = (size_t)(end - s);
    char *copy = malloc(n ? n : 1);
    FUZZ_CHECK(copy != NULL, "out of memory");
    memcpy(copy, s, n);
    float v = 0;
    const char *p = emb_parse_float(copy, copy + n, &v);
    if (p) {
        FUZZ_CHECK(p > copy && p <= copy + n, "end pointer outside the text");
        size_t used = (size_t)(p - copy);
        char *z = malloc(used + 1);
        FUZZ_CHECK(z != NULL, "out of memory");
        memcpy(z, copy, used);
        z[used] = 0;
        char *zend;
        float want = strtof(z, &zend);
        FUZZ_CHECK(zend == z + used, "accepted '%s' but strtof reads %zu of its %zu bytes", z,
                   (size_t)(zend - z), used);
        uint32_t a, b;
        memcpy(&a, &v, 4);
        memcpy(&b, &want, 4);
        FUZZ_CHECK(a == b || (isnan(v) && isnan(want)), "'%s' parses as 0x%08x, strtof 0x%08x", z,
                   a, b);
        free(z);
    } else if (n > 0) {
        /* A field that starts with a digit and holds only digits is a number. */
        size_t i = 0;
        while (i < n && copy[i] >= '0' && copy[i] <= '9')
            i++;
        FUZZ_CHECK(i < n || copy[0] < '0' || copy[0] > '9', "refused all-digit text");
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *end = s + size;
    while (s < end) {
        const char *sp = memchr(s, ' ', (size_t)(end - s));
        const char *e = sp ? sp : end;
        check_number(s, e);
        s = sp ? sp + 1 : end;
    }
    size_t lim = size < 64 ? size : 64;
    for (size_t i = 0; i < lim; i++)
        check_number((const char *)data + i, (const char *)data + size);
    return 0;
}
