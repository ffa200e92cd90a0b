/*
 * jsonutil.c - small jansson helpers shared by the CLI commands.
 */
#include "jsonutil.h"

#include "emb_format.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    unsigned cp = c & (0x7Fu >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

json_t *srv_json_bytes(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_len(u + i, len - i);
        if (!n)
            break;
        i += n;
    }
    if (i == len)
        return json_stringn(s, len);
    char *buf = malloc(len * 3 + 1);
    if (!buf)
        return NULL;
    size_t o = 0;
    for (i = 0; i < len;) {
        size_t n = utf8_len(u + i, len - i);
        if (n) {
            memcpy(buf + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    json_t *j = json_stringn(buf, o);
    free(buf);
    return j;
}

json_t *srv_json_codecs(uint32_t codecs)
{
    json_t *a = json_array();
    if (codecs & EMB_CODEC_F32)
        json_array_append_new(a, json_string("f32"));
    if (codecs & EMB_CODEC_F16)
        json_array_append_new(a, json_string("f16"));
    if (codecs & EMB_CODEC_Q1)
        json_array_append_new(a, json_string("q1"));
    return a;
}

json_t *srv_json_real(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}
