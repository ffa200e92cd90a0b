/*
 * reader_safetensors.c - safetensors files: one 2-D F32, F16 or BF16 tensor streamed row by row.
 *
 * Layout: uint64 LE N, N bytes of JSON naming each tensor's dtype, shape and [begin, end) byte
 * range relative to the data area at 8 + N. The JSON is read by a small strict scanner written
 * here: lib/ stays free of jansson (the server's JSON library, and a recursive parser), and
 * the scanner needs only objects, arrays, strings (with escapes), integers and skipping of
 * everything else, with nesting bounded so a hostile header cannot exhaust the stack. Every
 * tensor, not just the chosen one, is checked: offsets inside the data area, no overlaps, and
 * end - begin == prod(shape) * itemsize for every dtype we know the size of (overflow-safe).
 * Rejected: trusting the chosen tensor alone (an overlapping neighbour is how a crafted file
 * makes two tensors share bytes, and it costs nothing to refuse).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reader_internal.h"

#define ST_MAX_HEADER (100u << 20)
#define ST_MAX_DEPTH  64
#define ST_MAX_RANK   16u

typedef struct st_tensor {
    char *name; /* decoded, NUL-terminated (may also contain NUL bytes) */
    size_t name_len;
    char dtype[16]; /* "" when longer than 15 bytes (then unknown) */
    uint32_t rank;
    uint64_t shape[ST_MAX_RANK];
    uint64_t begin, end;
} st_tensor;

typedef struct st_list {
    st_tensor *t;
    size_t n, cap;
} st_list;

typedef struct js {
    const uint8_t *p, *end, *base;
} js;

static int js_fail(const js *j, emb_error *err, const char *what)
{
    return emb_error_set(err, EMB_ECORRUPT, "safetensors header: %s at byte offset %llu", what,
                         (unsigned long long)(8 + (uint64_t)(j->p - j->base)));
}

static void js_ws(js *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int js_expect(js *j, char c, emb_error *err)
{
    js_ws(j);
    if (j->p >= j->end || *j->p != (uint8_t)c) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", c);
        return js_fail(j, err, what);
    }
    j->p++;
    return 0;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

static int js_hex4(js *j, unsigned *u)
{
    if (j->end - j->p < 4)
        return -1;
    *u = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(j->p[i]);
        if (h < 0)
            return -1;
        *u = (*u << 4) | (unsigned)h;
    }
    j->p += 4;
    return 0;
}

/* Parses a JSON string at j->p (after whitespace). With out, stores a malloc'd decoded copy
 * (NUL-terminated) in *out and its length in *len; without, only validates. */
static int js_string(js *j, char **out, size_t *len, emb_error *err)
{
    js_ws(j);
    if (j->p >= j->end || *j->p != '"')
        return js_fail(j, err, "expected a string");
    j->p++;
    const uint8_t *start = j->p;
    const uint8_t *q = start;
    while (q < j->end && *q != '"') { /* find the closing quote; decoding never grows */
        if (*q == '\\')
            q++;
        q++;
    }
    if (q >= j->end)
        return js_fail(j, err, "unterminated string");
    char *buf = NULL;
    if (out) {
        buf = malloc((size_t)(q - start) + 1);
        if (!buf)
            return emb_error_set(err, EMB_ENOMEM, "out of memory reading the safetensors header");
    }
    size_t n = 0;
    while (*j->p != '"') {
        uint8_t c = *j->p;
        if (c < 0x20) {
            free(buf);
            return js_fail(j, err, "control character inside a string");
        }
        if (c != '\\') {
            if (buf)
                buf[n] = (char)c;
            n++;
            j->p++;
            continue;
        }
        j->p++;
        c = *j->p++;
        unsigned u;
        switch (c) {
        case '"':
        case '\\':
        case '/': break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u':
            if (js_hex4(j, &u) != 0)
                goto bad_escape;
            if (u >= 0xD800 && u <= 0xDBFF) {
                unsigned lo;
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u')
                    goto bad_escape;
                j->p += 2;
                if (js_hex4(j, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
                    goto bad_escape;
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            } else if (u >= 0xDC00 && u <= 0xDFFF) {
                goto bad_escape;
            }
            if (buf) { /* UTF-8: at most 4 bytes for at least 6 escape bytes */
                if (u < 0x80) {
                    buf[n] = (char)u;
                } else if (u < 0x800) {
                    buf[n] = (char)(0xC0 | (u >> 6));
                    buf[n + 1] = (char)(0x80 | (u & 0x3F));
                } else if (u < 0x10000) {
                    buf[n] = (char)(0xE0 | (u >> 12));
                    buf[n + 1] = (char)(0x80 | ((u >> 6) & 0x3F));
                    buf[n + 2] = (char)(0x80 | (u & 0x3F));
                } else {
                    buf[n] = (char)(0xF0 | (u >> 18));
                    buf[n + 1] = (char)(0x80 | ((u >> 12) & 0x3F));
                    buf[n + 2] = (char)(0x80 | ((u >> 6) & 0x3F));
                    buf[n + 3] = (char)(0x80 | (u & 0x3F));
                }
            }
            n += u < 0x80 ? 1 : u < 0x800 ? 2 : u < 0x10000 ? 3 : 4;
            continue;
        default: goto bad_escape;
        }
        if (buf)
            buf[n] = (char)c;
        n++;
    }
    j->p++;
    if (out) {
        buf[n] = '\0';
        *out = buf;
        *len = n;
    }
    return 0;

bad_escape:
    free(buf);
    return js_fail(j, err, "bad escape in a string");
}

static int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* A non-negative integer without sign, fraction or exponent. */
static int js_uint(js *j, uint64_t *v, emb_error *err)
{
    js_ws(j);
    const uint8_t *start = j->p;
    uint64_t x = 0;
    while (j->p < j->end && is_digit(*j->p)) {
        uint64_t d = (uint64_t)(*j->p - '0');
        if (x > UINT64_MAX / 10 || (x == UINT64_MAX / 10 && d > UINT64_MAX % 10))
            return js_fail(j, err, "integer overflows 64 bits");
        x = x * 10 + d;
        j->p++;
    }
    if (j->p == start)
        return js_fail(j, err, "expected a non-negative integer");
    if (j->p - start > 1 && *start == '0')
        return js_fail(j, err, "integer with a leading zero");
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return js_fail(j, err, "expected an integer, found a fraction");
    *v = x;
    return 0;
}

static int js_number(js *j, emb_error *err)
{
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p >= j->end || !is_digit(*j->p))
        return js_fail(j, err, "bad number");
    if (*j->p == '0')
        j->p++;
    else
        while (j->p < j->end && is_digit(*j->p))
            j->p++;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (j->p >= j->end || !is_digit(*j->p))
            return js_fail(j, err, "bad number");
        while (j->p < j->end && is_digit(*j->p))
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || !is_digit(*j->p))
            return js_fail(j, err, "bad number");
        while (j->p < j->end && is_digit(*j->p))
            j->p++;
    }
    return 0;
}

static int js_literal(js *j, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n) != 0)
        return -1;
    j->p += n;
    return 0;
}

/* Validates and skips one value of any kind, nesting at most ST_MAX_DEPTH deep. */
static int js_skip(js *j, int depth, emb_error *err)
{
    int rc;
    if (depth > ST_MAX_DEPTH)
        return js_fail(j, err, "nesting too deep");
    js_ws(j);
    if (j->p >= j->end)
        return js_fail(j, err, "expected a value");
    switch (*j->p) {
    case '"': return js_string(j, NULL, NULL, err);
    case '{':
        j->p++;
        js_ws(j);
        if (j->p < j->end && *j->p == '}') {
            j->p++;
            return 0;
        }
        for (;;) {
            if ((rc = js_string(j, NULL, NULL, err)) < 0 || (rc = js_expect(j, ':', err)) < 0 ||
                (rc = js_skip(j, depth + 1, err)) < 0)
                return rc;
            js_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            return js_expect(j, '}', err);
        }
    case '[':
        j->p++;
        js_ws(j);
        if (j->p < j->end && *j->p == ']') {
            j->p++;
            return 0;
        }
        for (;;) {
            if ((rc = js_skip(j, depth + 1, err)) < 0)
                return rc;
            js_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            return js_expect(j, ']', err);
        }
    case 't': return js_literal(j, "true") == 0 ? 0 : js_fail(j, err, "bad literal");
    case 'f': return js_literal(j, "false") == 0 ? 0 : js_fail(j, err, "bad literal");
    case 'n': return js_literal(j, "null") == 0 ? 0 : js_fail(j, err, "bad literal");
    default: return js_number(j, err);
    }
}

/* "[u, u, ...]" into v (at most max entries); *n gets the count. */
static int js_uint_array(js *j, uint64_t *v, uint32_t max, uint32_t *n, emb_error *err)
{
    int rc;
    *n = 0;
    if ((rc = js_expect(j, '[', err)) < 0)
        return rc;
    js_ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return 0;
    }
    for (;;) {
        if (*n == max)
            return js_fail(j, err, "array too long");
        if ((rc = js_uint(j, &v[(*n)++], err)) < 0)
            return rc;
        js_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        return js_expect(j, ']', err);
    }
}

/* One tensor's description object. */
static int st_tensor_parse(js *j, st_tensor *t, emb_error *err)
{
    int rc;
    int have_dtype = 0, have_shape = 0, have_offs = 0;
    if ((rc = js_expect(j, '{', err)) < 0)
        return rc;
    js_ws(j);
    if (j->p < j->end && *j->p == '}')
        return js_fail(j, err, "empty tensor description");
    for (;;) {
        char *k;
        size_t kn;
        if ((rc = js_string(j, &k, &kn, err)) < 0)
            return rc;
        if ((rc = js_expect(j, ':', err)) < 0) {
            free(k);
            return rc;
        }
        int which = kn == 5 && strcmp(k, "dtype") == 0           ? 1
                    : kn == 5 && strcmp(k, "shape") == 0         ? 2
                    : kn == 12 && strcmp(k, "data_offsets") == 0 ? 3
                                                                 : 0;
        free(k);
        if ((which == 1 && have_dtype) || (which == 2 && have_shape) || (which == 3 && have_offs))
            return js_fail(j, err, "duplicate field in a tensor description");
        if (which == 1) {
            char *d;
            size_t dn;
            if ((rc = js_string(j, &d, &dn, err)) < 0)
                return rc;
            if (dn < sizeof t->dtype && memchr(d, 0, dn) == NULL)
                memcpy(t->dtype, d, dn + 1);
            else
                t->dtype[0] = '\0';
            free(d);
            have_dtype = 1;
        } else if (which == 2) {
            if ((rc = js_uint_array(j, t->shape, ST_MAX_RANK, &t->rank, err)) < 0)
                return rc;
            have_shape = 1;
        } else if (which == 3) {
            uint64_t o[2];
            uint32_t n;
            if ((rc = js_uint_array(j, o, 2, &n, err)) < 0)
                return rc;
            if (n != 2)
                return js_fail(j, err, "data_offsets must hold exactly [begin, end]");
            t->begin = o[0];
            t->end = o[1];
            have_offs = 1;
        } else if ((rc = js_skip(j, 2, err)) < 0) {
            return rc;
        }
        js_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if ((rc = js_expect(j, '}', err)) < 0)
            return rc;
        break;
    }
    if (!have_dtype || !have_shape || !have_offs)
        return js_fail(j, err,
                       !have_dtype   ? "tensor description lacks \"dtype\""
                       : !have_shape ? "tensor description lacks \"shape\""
                                     : "tensor description lacks \"data_offsets\"");
    return 0;
}

static void st_list_free(st_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->t[i].name);
    free(l->t);
    memset(l, 0, sizeof *l);
}

/* The whole header: {"name": {...}, "__metadata__": {...}, ...}. */
static int st_header_parse(js *j, st_list *l, emb_error *err)
{
    int rc, have_meta = 0;
    if ((rc = js_expect(j, '{', err)) < 0)
        return rc;
    js_ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
    } else {
        for (;;) {
            char *name;
            size_t nlen;
            if ((rc = js_string(j, &name, &nlen, err)) < 0)
                return rc;
            if ((rc = js_expect(j, ':', err)) < 0) {
                free(name);
                return rc;
            }
            if (strcmp(name, "__metadata__") == 0 && nlen == 12) {
                free(name);
                if (have_meta)
                    return js_fail(j, err, "duplicate \"__metadata__\"");
                have_meta = 1;
                if ((rc = js_skip(j, 1, err)) < 0)
                    return rc;
            } else {
                if (l->n == l->cap) {
                    size_t ncap = l->cap ? l->cap * 2 : 16;
                    st_tensor *nt = realloc(l->t, ncap * sizeof *nt);
                    if (!nt) {
                        free(name);
                        return emb_error_set(err, EMB_ENOMEM, "out of memory listing tensors");
                    }
                    l->t = nt;
                    l->cap = ncap;
                }
                st_tensor *t = &l->t[l->n++];
                memset(t, 0, sizeof *t);
                t->name = name;
                t->name_len = nlen;
                if ((rc = st_tensor_parse(j, t, err)) < 0)
                    return rc;
            }
            js_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if ((rc = js_expect(j, '}', err)) < 0)
                return rc;
            break;
        }
    }
    js_ws(j);
    if (j->p != j->end)
        return js_fail(j, err, "bytes after the header object");
    return 0;
}

static size_t dtype_size(const char *d)
{
    static const struct {
        const char *name;
        size_t size;
    } t[] = {
        {"F64", 8},  {"F32", 4},     {"F16", 2},     {"BF16", 2},    {"I64", 8}, {"I32", 4},
        {"I16", 2},  {"I8", 1},      {"U64", 8},     {"U32", 4},     {"U16", 2}, {"U8", 1},
        {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (strcmp(d, t[i].name) == 0)
            return t[i].size;
    }
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    const st_tensor *x = *(st_tensor *const *)a, *y = *(st_tensor *const *)b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c)
        return c;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

static int cmp_begin(const void *a, const void *b)
{
    const st_tensor *x = *(st_tensor *const *)a, *y = *(st_tensor *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Checks every tensor's range and size, then uniqueness of names and absence of overlaps. */
static int st_validate(const st_list *l, uint64_t data_len, emb_error *err)
{
    for (size_t i = 0; i < l->n; i++) {
        const st_tensor *t = &l->t[i];
        if (t->begin > t->end || t->end > data_len)
            return emb_error_set(err, EMB_ECORRUPT,
                                 "safetensors tensor '%.100s': data_offsets [%llu, %llu] lie "
                                 "outside the %llu-byte data area",
                                 t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                                 (unsigned long long)data_len);
        size_t isz = dtype_size(t->dtype);
        if (!isz)
            continue; /* a dtype we do not know the width of; bounds and overlap still hold */
        uint64_t bytes = isz;
        for (uint32_t d = 0; d < t->rank; d++) {
            if (emb__mul_u64(bytes, t->shape[d], &bytes) != 0)
                return emb_error_set(err, EMB_ECORRUPT,
                                     "safetensors tensor '%.100s': shape overflows 64 bits",
                                     t->name);
        }
        if (bytes != t->end - t->begin)
            return emb_error_set(err, EMB_ECORRUPT,
                                 "safetensors tensor '%.100s': data_offsets span %llu bytes but "
                                 "its shape and dtype %s need %llu",
                                 t->name, (unsigned long long)(t->end - t->begin), t->dtype,
                                 (unsigned long long)bytes);
    }
    if (l->n < 2)
        return 0;
    st_tensor **v = malloc(l->n * sizeof *v);
    if (!v)
        return emb_error_set(err, EMB_ENOMEM, "out of memory checking tensors");
    for (size_t i = 0; i < l->n; i++)
        v[i] = &l->t[i];
    int rc = 0;
    qsort(v, l->n, sizeof *v, cmp_name);
    for (size_t i = 1; i < l->n && rc == 0; i++) {
        if (cmp_name(&v[i - 1], &v[i]) == 0)
            rc = emb_error_set(err, EMB_ECORRUPT, "safetensors: duplicate tensor name '%.100s'",
                               v[i]->name);
    }
    qsort(v, l->n, sizeof *v, cmp_begin);
    const st_tensor *prev = NULL;
    for (size_t i = 0; i < l->n && rc == 0; i++) {
        if (v[i]->begin == v[i]->end)
            continue; /* empty tensors occupy nothing */
        if (prev && v[i]->begin < prev->end)
            rc = emb_error_set(err, EMB_ECORRUPT,
                               "safetensors tensors '%.100s' [%llu, %llu) and '%.100s' [%llu, "
                               "%llu) overlap",
                               prev->name, (unsigned long long)prev->begin,
                               (unsigned long long)prev->end, v[i]->name,
                               (unsigned long long)v[i]->begin, (unsigned long long)v[i]->end);
        prev = v[i];
    }
    free(v);
    return rc;
}

/* Appends "'a', 'b', ..." for the 2-D tensors of l into buf (truncated with "..."). */
static void list_2d(const st_list *l, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < l->n; i++) {
        if (l->t[i].rank != 2)
            continue;
        int w = snprintf(buf + n, cap - n, "%s'%s'", n ? ", " : "", l->t[i].name);
        if (w < 0 || (size_t)w >= cap - n) {
            if (cap > 4)
                strcpy(buf + cap - 4, "...");
            return;
        }
        n += (size_t)w;
    }
}

static int st_open(emb_reader *r, const char *tensor, emb_error *err)
{
    uint64_t size = r->info.file_bytes;
    int rc = emb__rbuf_fill(&r->in, 9, err);
    if (rc < 0)
        return rc;
    if (emb__rbuf_avail(&r->in) < 9)
        return emb_error_set(err, EMB_EFORMAT, "not a safetensors file: only %zu bytes",
                             emb__rbuf_avail(&r->in));
    uint64_t hlen = emb__le64(emb__rbuf_ptr(&r->in));
    if (hlen > ST_MAX_HEADER || hlen > size - 8)
        return emb_error_set(err, EMB_EFORMAT,
                             "not a safetensors file: header length %llu exceeds the file (%llu "
                             "bytes) or the %u-byte limit",
                             (unsigned long long)hlen, (unsigned long long)size, ST_MAX_HEADER);
    if (emb__rbuf_ptr(&r->in)[8] != '{')
        return emb_error_set(err, EMB_EFORMAT,
                             "not a safetensors file: the header does not start with '{'");
    rc = emb__rbuf_fill(&r->in, (size_t)(8 + hlen), err);
    if (rc < 0)
        return rc;
    if (emb__rbuf_avail(&r->in) < 8 + hlen)
        return emb_error_set(err, EMB_ECORRUPT, "safetensors: file shrank while reading it");

    st_list l = {0};
    js j = {emb__rbuf_ptr(&r->in) + 8, emb__rbuf_ptr(&r->in) + 8 + hlen, emb__rbuf_ptr(&r->in) + 8};
    uint64_t data_len = size - 8 - hlen;
    if ((rc = st_header_parse(&j, &l, err)) < 0 || (rc = st_validate(&l, data_len, err)) < 0)
        goto out;

    const st_tensor *t = NULL;
    if (tensor) {
        size_t want = strlen(tensor);
        for (size_t i = 0; i < l.n && !t; i++) {
            if (l.t[i].name_len == want && memcmp(l.t[i].name, tensor, want) == 0)
                t = &l.t[i];
        }
        if (!t) {
            char names[300];
            list_2d(&l, names, sizeof names);
            rc = emb_error_set(err, EMB_ENOTFOUND,
                               "safetensors has no tensor '%.100s' (2-D tensors: %s)", tensor,
                               names[0] ? names : "none");
            goto out;
        }
    } else {
        size_t n2 = 0;
        for (size_t i = 0; i < l.n; i++) {
            if (l.t[i].rank == 2) {
                n2++;
                t = &l.t[i];
            }
        }
        if (n2 != 1) {
            char names[300];
            list_2d(&l, names, sizeof names);
            if (n2 == 0)
                rc = emb_error_set(err, EMB_ENOTFOUND,
                                   "safetensors holds no 2-D tensor (%zu "
                                   "tensors in all)",
                                   l.n);
            else
                rc = emb_error_set(err, EMB_EINVAL,
                                   "safetensors holds %zu 2-D tensors (%s); choose one by name", n2,
                                   names);
            goto out;
        }
    }
    if (t->rank != 2) {
        rc = emb_error_set(err, EMB_EUNSUPPORTED,
                           "safetensors tensor '%.100s' has %u dimensions; a 2-D (rows, dim) "
                           "tensor is needed",
                           t->name, t->rank);
        goto out;
    }
    if (strcmp(t->dtype, "F32") == 0) {
        r->dtype = EMB__DT_F32;
        strcpy(r->info.source_dtype, "f32");
    } else if (strcmp(t->dtype, "F16") == 0) {
        r->dtype = EMB__DT_F16;
        strcpy(r->info.source_dtype, "f16");
    } else if (strcmp(t->dtype, "BF16") == 0) {
        r->dtype = EMB__DT_BF16;
        strcpy(r->info.source_dtype, "bf16");
    } else {
        rc = emb_error_set(err, EMB_EUNSUPPORTED,
                           "safetensors tensor '%.100s' has dtype %s (F32, F16 and BF16 are "
                           "supported)",
                           t->name, t->dtype[0] ? t->dtype : "(unknown)");
        goto out;
    }
    if (t->shape[1] < 1 || t->shape[1] > EMB_MAX_DIM) {
        rc = emb_error_set(err, EMB_EUNSUPPORTED,
                           "safetensors tensor '%.100s': dim %llu outside "
                           "1..%u",
                           t->name, (unsigned long long)t->shape[1], EMB_MAX_DIM);
        goto out;
    }
    r->info.rows = t->shape[0];
    r->info.dim = (uint32_t)t->shape[1];
    r->row_bytes = (size_t)r->info.dim * (r->dtype == EMB__DT_F32 ? 4 : 2);
    r->data_off = 8 + hlen + t->begin;
    snprintf(r->info.tensor, sizeof r->info.tensor, "%s", t->name);
    /* The header may have grown the buffer to 100 MB: start over with a normal one. */
    emb__rbuf_free(&r->in);
    rc = emb__rbuf_init(&r->in, r->fd, r->data_off, EMB__RBUF_CAP, err);
out:
    st_list_free(&l);
    return rc;
}

static int st_next(emb_reader *r, emb_row *row, emb_error *err)
{
    (void)row;
    if (r->row == r->info.rows)
        return 0;
    int rc = emb__read_bin_row(r, NULL, err);
    return rc < 0 ? rc : 1;
}

const emb__reader_ops emb__safetensors_ops = {st_open, st_next, NULL};
