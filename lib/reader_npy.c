/*
 * reader_npy.c - NumPy .npy files (format versions 1.0, 2.0 and 3.0) holding a 2-D float32 or
 * float16 array in C order.
 *
 * The header is a Python dict literal. It is parsed by a strict little recogniser that knows
 * exactly the three keys numpy writes ('descr', 'fortran_order', 'shape') and the literal forms
 * they take (a string, True/False, a tuple of integers); anything else is refused. Rejected:
 * evaluating the literal (the header is attacker-controlled text) and scanning for substrings
 * (a 'descr' inside another string would fool it). The file size must equal the header plus
 * rows * dim * itemsize exactly, so truncation and trailing bytes are both caught at open.
 */
#include <string.h>

#include "reader_internal.h"

#define NPY_MAX_HEADER (1u << 20) /* numpy itself refuses headers over 10000 bytes by default */
#define NPY_MAX_NDIM   32u

typedef struct npy_scan {
    const char *p, *end, *base;
    uint64_t base_off; /* file offset of base, for messages */
} npy_scan;

static void sc_ws(npy_scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int sc_fail(npy_scan *s, emb_error *err, const char *what)
{
    return emb_error_set(err, EMB_ECORRUPT, "npy header: %s at byte offset %llu", what,
                         (unsigned long long)(s->base_off + (uint64_t)(s->p - s->base)));
}

/* A quoted string without escapes; [*v, *v + *n) is its content. */
static int sc_string(npy_scan *s, const char **v, size_t *n, emb_error *err)
{
    if (s->p >= s->end || (*s->p != '\'' && *s->p != '"'))
        return sc_fail(s, err, "expected a quoted string");
    char q = *s->p++;
    const char *start = s->p;
    while (s->p < s->end && *s->p != q) {
        if (*s->p == '\\' || *s->p == '\n')
            return sc_fail(s, err, "escape or newline inside a string");
        s->p++;
    }
    if (s->p >= s->end)
        return sc_fail(s, err, "unterminated string");
    *v = start;
    *n = (size_t)(s->p - start);
    s->p++;
    return 0;
}

static int sc_word(npy_scan *s, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0)
        return 0;
    s->p += n;
    return 1;
}

/* A tuple of non-negative integers: "()", "(5,)", "(400000, 300)"; Python 2 files may write
 * "300L". */
static int sc_shape(npy_scan *s, uint64_t *shape, uint32_t *ndim, emb_error *err)
{
    if (s->p >= s->end || *s->p != '(')
        return sc_fail(s, err, "'shape' is not a tuple");
    s->p++;
    *ndim = 0;
    for (;;) {
        sc_ws(s);
        if (s->p < s->end && *s->p == ')') {
            s->p++;
            return 0;
        }
        if (*ndim == NPY_MAX_NDIM)
            return sc_fail(s, err, "too many dimensions in 'shape'");
        uint64_t v = 0;
        const char *start = s->p;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
            if (v > (UINT64_MAX - 9) / 10)
                return sc_fail(s, err, "dimension in 'shape' overflows");
            v = v * 10 + (uint64_t)(*s->p - '0');
            s->p++;
        }
        if (s->p == start)
            return sc_fail(s, err, "expected a non-negative integer in 'shape'");
        if (s->p < s->end && *s->p == 'L')
            s->p++;
        shape[(*ndim)++] = v;
        sc_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == ')') {
            if (*ndim == 1)
                return sc_fail(s, err, "one-element tuple without a trailing comma");
            s->p++;
            return 0;
        }
        return sc_fail(s, err, "expected ',' or ')' in 'shape'");
    }
}

/* Maps a descr to a dtype, or explains why not. */
static int npy_descr(const char *d, size_t n, emb__dtype *dt, emb_error *err)
{
    if (n == 3 && (d[0] == '<' || d[0] == '=') && d[1] == 'f' &&
        (d[2] == '4' || d[2] == '2' || d[2] == '8')) {
        /* '=' is native order; libembd only builds for little-endian hosts' on-disk layouts. */
        *dt = d[2] == '4' ? EMB__DT_F32 : d[2] == '2' ? EMB__DT_F16 : EMB__DT_F64;
        return 0;
    }
    if (n >= 1 && d[0] == '>')
        return emb_error_set(err, EMB_EUNSUPPORTED,
                             "npy dtype '%.*s' is big-endian; convert with "
                             "arr.astype('<f4') first",
                             (int)n, d);
    if (n >= 2 && d[1] == 'O')
        return emb_error_set(err, EMB_EUNSUPPORTED,
                             "npy dtype '%.*s' holds pickled Python objects, which are never "
                             "loaded; save a float32 array instead",
                             (int)n, d);
    return emb_error_set(err, EMB_EUNSUPPORTED,
                         "npy dtype '%.*s' is not supported (float32 '<f4', float16 '<f2' or "
                         "float64 '<f8' only)",
                         (int)(n > 32 ? 32 : n), d);
}

static int npy_open(emb_reader *r, const char *tensor, emb_error *err)
{
    (void)tensor;
    uint64_t size = r->info.file_bytes;
    int rc = emb__rbuf_fill(&r->in, 12, err);
    if (rc < 0)
        return rc;
    const uint8_t *p = emb__rbuf_ptr(&r->in);
    size_t avail = emb__rbuf_avail(&r->in);
    if (avail < 10 || memcmp(p, "\x93NUMPY", 6) != 0)
        return emb_error_set(err, EMB_EFORMAT,
                             "not an .npy file: bad magic (expected "
                             "\\x93NUMPY at byte 0)");
    uint8_t major = p[6], minor = p[7];
    uint64_t hoff, hlen;
    if (major == 1) {
        hlen = emb__le16(p + 8);
        hoff = 10;
    } else if (major == 2 || major == 3) {
        if (avail < 12)
            return emb_error_set(err, EMB_ECORRUPT, "npy: file ends inside the header length");
        hlen = emb__le32(p + 8);
        hoff = 12;
    } else {
        return emb_error_set(err, EMB_EUNSUPPORTED,
                             "npy format version %u.%u is not supported "
                             "(1.0, 2.0 and 3.0 are)",
                             major, minor);
    }
    if (hlen > NPY_MAX_HEADER)
        return emb_error_set(err, EMB_ECORRUPT, "npy header length %llu exceeds the %u-byte limit",
                             (unsigned long long)hlen, NPY_MAX_HEADER);
    if (hlen > size - hoff)
        return emb_error_set(err, EMB_ECORRUPT,
                             "npy truncated: header length %llu runs past the end of the "
                             "%llu-byte file",
                             (unsigned long long)hlen, (unsigned long long)size);
    rc = emb__rbuf_fill(&r->in, (size_t)(hoff + hlen), err);
    if (rc < 0)
        return rc;
    if (emb__rbuf_avail(&r->in) < hoff + hlen)
        return emb_error_set(err, EMB_ECORRUPT, "npy: file shrank while reading its header");
    p = emb__rbuf_ptr(&r->in);

    npy_scan s = {(const char *)p + hoff, (const char *)p + hoff + hlen, (const char *)p + hoff,
                  hoff};
    const char *descr = NULL;
    size_t descr_len = 0;
    int fortran = -1;
    uint64_t shape[NPY_MAX_NDIM];
    uint32_t ndim = 0;
    int have_shape = 0;
    sc_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return sc_fail(&s, err, "expected '{' opening the header dict");
    s.p++;
    for (;;) {
        sc_ws(&s);
        if (s.p < s.end && *s.p == '}') {
            s.p++;
            break;
        }
        const char *k;
        size_t kn;
        if ((rc = sc_string(&s, &k, &kn, err)) < 0)
            return rc;
        sc_ws(&s);
        if (s.p >= s.end || *s.p != ':')
            return sc_fail(&s, err, "expected ':' after a key");
        s.p++;
        sc_ws(&s);
        if (kn == 5 && memcmp(k, "descr", 5) == 0) {
            if (descr)
                return sc_fail(&s, err, "duplicate key 'descr'");
            if (s.p < s.end && *s.p == '[')
                return emb_error_set(err, EMB_EUNSUPPORTED,
                                     "npy holds a structured dtype; a plain float32 or float16 "
                                     "array is needed");
            if ((rc = sc_string(&s, &descr, &descr_len, err)) < 0)
                return rc;
        } else if (kn == 13 && memcmp(k, "fortran_order", 13) == 0) {
            if (fortran >= 0)
                return sc_fail(&s, err, "duplicate key 'fortran_order'");
            if (sc_word(&s, "True"))
                fortran = 1;
            else if (sc_word(&s, "False"))
                fortran = 0;
            else
                return sc_fail(&s, err, "'fortran_order' is neither True nor False");
        } else if (kn == 5 && memcmp(k, "shape", 5) == 0) {
            if (have_shape)
                return sc_fail(&s, err, "duplicate key 'shape'");
            if ((rc = sc_shape(&s, shape, &ndim, err)) < 0)
                return rc;
            have_shape = 1;
        } else {
            return sc_fail(&s, err, "unexpected key in the header dict");
        }
        sc_ws(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        if (s.p < s.end && *s.p == '}') {
            s.p++;
            break;
        }
        return sc_fail(&s, err, "expected ',' or '}' after a value");
    }
    sc_ws(&s);
    if (s.p != s.end)
        return sc_fail(&s, err, "bytes after the header dict");
    if (!descr || fortran < 0 || !have_shape)
        return emb_error_set(err, EMB_ECORRUPT, "npy header lacks '%s'",
                             !descr        ? "descr"
                             : fortran < 0 ? "fortran_order"
                                           : "shape");

    if ((rc = npy_descr(descr, descr_len, &r->dtype, err)) < 0)
        return rc;
    if (fortran)
        return emb_error_set(err, EMB_EUNSUPPORTED,
                             "npy array is in Fortran order (fortran_order: True); save it with "
                             "np.ascontiguousarray first");
    if (ndim != 2)
        return emb_error_set(err, EMB_EUNSUPPORTED,
                             "npy array has %u dimensions; a 2-D (rows, dim) array is needed",
                             ndim);
    if (shape[1] < 1 || shape[1] > EMB_MAX_DIM)
        return emb_error_set(err, EMB_EUNSUPPORTED, "npy dim %llu outside 1..%u",
                             (unsigned long long)shape[1], EMB_MAX_DIM);
    size_t item = r->dtype == EMB__DT_F64 ? 8 : r->dtype == EMB__DT_F32 ? 4 : 2;
    uint64_t data_off = hoff + hlen, bytes;
    r->row_bytes = (size_t)shape[1] * item;
    if (emb__mul_u64(shape[0], r->row_bytes, &bytes) != 0)
        return emb_error_set(err, EMB_ECORRUPT, "npy shape (%llu, %llu) overflows 64 bits",
                             (unsigned long long)shape[0], (unsigned long long)shape[1]);
    if (bytes > size - data_off)
        return emb_error_set(err, EMB_ECORRUPT,
                             "npy truncated: shape (%llu, %llu) needs %llu data bytes from offset "
                             "%llu but the file has %llu",
                             (unsigned long long)shape[0], (unsigned long long)shape[1],
                             (unsigned long long)bytes, (unsigned long long)data_off,
                             (unsigned long long)(size - data_off));
    if (bytes != size - data_off)
        return emb_error_set(err, EMB_ECORRUPT,
                             "npy has %llu trailing bytes after the data of shape (%llu, %llu)",
                             (unsigned long long)(size - data_off - bytes),
                             (unsigned long long)shape[0], (unsigned long long)shape[1]);
    r->info.rows = shape[0];
    r->info.dim = (uint32_t)shape[1];
    strcpy(r->info.source_dtype, r->dtype == EMB__DT_F64   ? "f64"
                                 : r->dtype == EMB__DT_F32 ? "f32"
                                                           : "f16");
    r->data_off = data_off;
    r->in.pos += (size_t)data_off;
    return 0;
}

static int npy_next(emb_reader *r, emb_row *row, emb_error *err)
{
    (void)row;
    if (r->row == r->info.rows)
        return 0;
    int rc = emb__read_bin_row(r, NULL, err);
    return rc < 0 ? rc : 1;
}

const emb__reader_ops emb__npy_ops = {npy_open, npy_next, NULL};
