/*
 * reader.c - emb_reader_open and friends: format detection, dispatch to the per-format vtables,
 * and the buffered-input layer every format reads through.
 *
 * Detection trusts evidence in order of strength: magic bytes ("\x93NUMPY", "GGUF", a
 * safetensors length prefix followed by '{'), then the file name's extension, then content (an
 * fvecs dimension prefix; a "<rows> <dim>" first line means word2vec, binary when the bytes after
 * the first word are not number text; anything else that is text is GloVe). Rejected: content
 * sniffing before the extension (a .bin word2vec file whose first vector happens to look like
 * digits would be misread), and guessing at all when the caller names a format.
 *
 * Invariants: the reader holds one buffer (plus a small second one for GGUF token strings)
 * whatever the file size; every row handed out has dim finite floats.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "emb_kernels.h"
#include "reader_internal.h"

#define SNIFF_BYTES (64u << 10)

/* ---- buffered input ------------------------------------------------------------------- */

int emb__rbuf_init(emb__rbuf *b, int fd, uint64_t start, size_t cap, emb_error *err)
{
    memset(b, 0, sizeof *b);
    b->buf = malloc(cap);
    if (!b->buf)
        return emb_error_set(err, EMB_ENOMEM, "cannot allocate a %zu-byte input buffer", cap);
    b->fd = fd;
    b->cap = cap;
    b->off = start;
    return 0;
}

void emb__rbuf_free(emb__rbuf *b)
{
    free(b->buf);
    b->buf = NULL;
}

int emb__rbuf_fill(emb__rbuf *b, size_t n, emb_error *err)
{
    while (b->len - b->pos < n && !b->eof) {
        if (n > b->cap - b->pos) {
            /* Not enough room after pos: slide the unread bytes to the front, grow if needed. */
            if (b->pos > 0) {
                memmove(b->buf, b->buf + b->pos, b->len - b->pos);
                b->off += b->pos;
                b->len -= b->pos;
                b->pos = 0;
            }
            if (n > b->cap) {
                if (n > EMB__RBUF_MAX_CAP)
                    return emb_error_set(err, EMB_ECORRUPT,
                                         "a record at byte offset %llu needs more than %u bytes "
                                         "(a line without a newline?)",
                                         (unsigned long long)b->off, EMB__RBUF_MAX_CAP);
                size_t ncap = b->cap * 2 > n ? b->cap * 2 : n;
                if (ncap > EMB__RBUF_MAX_CAP)
                    ncap = EMB__RBUF_MAX_CAP;
                uint8_t *nb = realloc(b->buf, ncap);
                if (!nb)
                    return emb_error_set(err, EMB_ENOMEM,
                                         "cannot grow the input buffer to %zu bytes", ncap);
                b->buf = nb;
                b->cap = ncap;
            }
        }
        ssize_t got = pread(b->fd, b->buf + b->len, b->cap - b->len, (off_t)(b->off + b->len));
        if (got < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            return emb_error_set(err, -e, "read at byte offset %llu: %s",
                                 (unsigned long long)(b->off + b->len), strerror(e));
        }
        if (got == 0)
            b->eof = 1;
        b->len += (size_t)got;
    }
    return 0;
}

void emb__rbuf_seek(emb__rbuf *b, uint64_t off)
{
    b->off = off;
    b->pos = b->len = 0;
    b->eof = 0;
}

void emb__rbuf_skip(emb__rbuf *b, uint64_t n)
{
    if (n <= b->len - b->pos)
        b->pos += (size_t)n;
    else
        emb__rbuf_seek(b, emb__rbuf_tell(b) + n);
}

int emb__rbuf_read(emb__rbuf *b, void *dst, size_t n, emb_error *err)
{
    int rc = emb__rbuf_fill(b, n, err);
    if (rc < 0)
        return rc;
    if (emb__rbuf_avail(b) < n)
        return 1;
    memcpy(dst, emb__rbuf_ptr(b), n);
    b->pos += n;
    return 0;
}

int emb__text_line(emb__rbuf *b, const char **line, const char **end, emb_error *err)
{
    size_t scanned = 0;
    const char *s, *e;
    for (;;) {
        s = (const char *)b->buf + b->pos;
        size_t avail = b->len - b->pos;
        const char *nl = memchr(s + scanned, '\n', avail - scanned);
        if (nl) {
            e = nl;
            b->pos += (size_t)(nl - s) + 1;
            break;
        }
        if (b->eof) {
            if (avail == 0)
                return 0;
            e = s + avail;
            b->pos = b->len;
            break;
        }
        scanned = avail;
        int rc = emb__rbuf_fill(b, avail + 1, err);
        if (rc < 0)
            return rc;
    }
    while (e > s && (e[-1] == '\r' || e[-1] == ' '))
        e--;
    *line = s;
    *end = e;
    return 1;
}

/* ---- rows ----------------------------------------------------------------------------- */

int emb__check_finite(const emb_reader *r, const char *where_kind, uint64_t where, emb_error *err)
{
    const float *v = r->vec;
    for (uint32_t i = 0; i < r->info.dim; i++) {
        if (!isfinite(v[i]))
            return emb_error_set(
                err, EMB_ECORRUPT, "%s %llu, value %u is %s: a store must hold finite numbers",
                where_kind, (unsigned long long)where, i + 1, isnan(v[i]) ? "NaN" : "infinite");
    }
    return 0;
}

int emb__read_bin_row(emb_reader *r, const uint8_t **raw, emb_error *err)
{
    uint64_t at = emb__rbuf_tell(&r->in);
    int rc = emb__rbuf_fill(&r->in, r->row_bytes, err);
    if (rc < 0)
        return rc;
    if (emb__rbuf_avail(&r->in) < r->row_bytes)
        return emb_error_set(err, EMB_ECORRUPT,
                             "row %llu at byte offset %llu: file ends after %zu of its %zu bytes",
                             (unsigned long long)r->row, (unsigned long long)at,
                             emb__rbuf_avail(&r->in), r->row_bytes);
    const uint8_t *p = emb__rbuf_ptr(&r->in);
    uint32_t dim = r->info.dim;
    float *v = r->vec;
    switch (r->dtype) {
    case EMB__DT_F32:
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(v, p, (size_t)dim * 4);
#else
        for (uint32_t i = 0; i < dim; i++) {
            uint32_t u = emb__le32(p + 4 * (size_t)i);
            memcpy(&v[i], &u, 4);
        }
#endif
        break;
    case EMB__DT_F16:
        for (uint32_t i = 0; i < dim; i++)
            v[i] = emb_f16_to_f32(emb__le16(p + 2 * (size_t)i));
        break;
    case EMB__DT_BF16:
        for (uint32_t i = 0; i < dim; i++)
            v[i] = emb_bf16_to_f32(emb__le16(p + 2 * (size_t)i));
        break;
    case EMB__DT_Q1: emb_q1_decode(p, dim, v); break;
    case EMB__DT_F64:
        for (uint32_t i = 0; i < dim; i++) {
            uint64_t u = (uint64_t)emb__le32(p + 8 * (size_t)i) |
                         (uint64_t)emb__le32(p + 8 * (size_t)i + 4) << 32;
            double d;
            memcpy(&d, &u, 8);
            v[i] = (float)d; /* beyond float32 it becomes inf, refused below */
        }
        break;
    }
    if (raw)
        *raw = p;
    r->in.pos += r->row_bytes;
    return emb__check_finite(r, "row", r->row, err);
}

/* ---- formats -------------------------------------------------------------------------- */

static const struct {
    emb_input_format fmt;
    const char *name;
    const emb__reader_ops *ops;
} formats[] = {
    {EMB_INPUT_NPY, "npy", &emb__npy_ops},
    {EMB_INPUT_SAFETENSORS, "safetensors", &emb__safetensors_ops},
    {EMB_INPUT_GGUF, "gguf", &emb__gguf_ops},
    {EMB_INPUT_W2V_BIN, "word2vec", &emb__w2v_bin_ops},
    {EMB_INPUT_W2V_TEXT, "word2vec-text", &emb__w2v_text_ops},
    {EMB_INPUT_GLOVE, "glove", &emb__glove_ops},
    {EMB_INPUT_FVECS, "fvecs", &emb__fvecs_ops},
};
#define N_FORMATS (sizeof formats / sizeof formats[0])

const char *emb_input_format_name(emb_input_format f)
{
    if (f == EMB_INPUT_AUTO)
        return "auto";
    for (size_t i = 0; i < N_FORMATS; i++) {
        if (formats[i].fmt == f)
            return formats[i].name;
    }
    return "unknown";
}

int emb_input_format_parse(const char *s, emb_input_format *out)
{
    if (strcmp(s, "auto") == 0) {
        *out = EMB_INPUT_AUTO;
        return 0;
    }
    if (strcmp(s, "vec") == 0) {
        *out = EMB_INPUT_W2V_TEXT;
        return 0;
    }
    for (size_t i = 0; i < N_FORMATS; i++) {
        if (strcmp(s, formats[i].name) == 0) {
            *out = formats[i].fmt;
            return 0;
        }
    }
    return EMB_EINVAL;
}

static const emb__reader_ops *ops_for(emb_input_format f)
{
    for (size_t i = 0; i < N_FORMATS; i++) {
        if (formats[i].fmt == f)
            return formats[i].ops;
    }
    return NULL;
}

/* ---- detection ------------------------------------------------------------------------ */

static emb_input_format from_extension(const char *path)
{
    static const struct {
        const char *ext;
        emb_input_format fmt;
    } exts[] = {
        {".npy", EMB_INPUT_NPY},      {".safetensors", EMB_INPUT_SAFETENSORS},
        {".gguf", EMB_INPUT_GGUF},    {".bin", EMB_INPUT_W2V_BIN},
        {".vec", EMB_INPUT_W2V_TEXT}, {".fvecs", EMB_INPUT_FVECS},
    };
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    if (!dot)
        return EMB_INPUT_AUTO;
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        if (strcasecmp(dot, exts[i].ext) == 0)
            return exts[i].fmt;
    }
    return EMB_INPUT_AUTO; /* .txt and the rest: look at the content */
}

/* Parses "<uint> <uint>" followed by optional spaces / '\r' then '\n' at the start of [p, end).
 * Returns the offset just past the '\n', or 0 when the first line is not such a header. */
static size_t w2v_header_len(const uint8_t *p, size_t n, uint64_t *rows, uint64_t *dim)
{
    size_t i = 0;
    uint64_t v[2] = {0, 0};
    for (int f = 0; f < 2; f++) {
        if (f == 1) {
            if (i >= n || p[i] != ' ')
                return 0;
            while (i < n && p[i] == ' ')
                i++;
        }
        size_t start = i;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            if (v[f] > (UINT64_MAX - 9) / 10)
                return 0;
            v[f] = v[f] * 10 + (uint64_t)(p[i] - '0');
            i++;
        }
        if (i == start)
            return 0;
    }
    while (i < n && (p[i] == ' ' || p[i] == '\r'))
        i++;
    if (i >= n || p[i] != '\n')
        return 0;
    *rows = v[0];
    *dim = v[1];
    return i + 1;
}

/* After a word2vec header: is the first row's vector number text? Looks at the bytes after the
 * first word up to the end of its line or dim * 4 bytes, whichever comes first: number text
 * holds only digits, signs, points, exponents, nan/inf and spaces, while binary floats almost
 * surely hold some other byte (or a '\n' before any digit). */
static int w2v_row_is_text(const uint8_t *p, size_t n, uint64_t dim)
{
    size_t i = 0;
    while (i < n && (p[i] == '\n' || p[i] == '\r' || p[i] == ' ' || p[i] == '\t'))
        i++;
    while (i < n && p[i] != ' ')
        i++;
    if (i >= n)
        return 1; /* no evidence either way: the text reader gives the clearer errors */
    i++;
    size_t look = n - i;
    if (dim < look / 4)
        look = (size_t)dim * 4;
    int digits = 0;
    for (size_t j = i; j < i + look && p[j] != '\n'; j++) {
        uint8_t c = p[j];
        if (c >= '0' && c <= '9')
            digits++;
        else if (c == 0 || !strchr(" \r.-+eEnaifNAIF", c))
            return 0;
    }
    return digits > 0;
}

static int detect(emb_reader *r, const char *path, emb_input_format *out, emb_error *err)
{
    int rc = emb__rbuf_fill(&r->in, SNIFF_BYTES, err);
    if (rc < 0)
        return rc;
    const uint8_t *p = emb__rbuf_ptr(&r->in);
    size_t n = emb__rbuf_avail(&r->in);
    uint64_t size = r->info.file_bytes;
    if (n >= 6 && memcmp(p, "\x93NUMPY", 6) == 0) {
        *out = EMB_INPUT_NPY;
        return 0;
    }
    if (n >= 4 && memcmp(p, "GGUF", 4) == 0) {
        *out = EMB_INPUT_GGUF;
        return 0;
    }
    if (n >= 9 && p[8] == '{') {
        uint64_t hl = emb__le64(p);
        if (hl >= 2 && hl <= size - 8) {
            *out = EMB_INPUT_SAFETENSORS;
            return 0;
        }
    }
    emb_input_format f = from_extension(path);
    if (f != EMB_INPUT_AUTO) {
        *out = f;
        return 0;
    }
    if (n == 0)
        return emb_error_set(err, EMB_EFORMAT, "empty file: cannot tell its format");
    if (n >= 4) {
        uint32_t d = emb__le32(p);
        uint64_t rb = 4 + 4 * (uint64_t)d;
        if (d >= 1 && d <= EMB_MAX_DIM && size % rb == 0 &&
            (size == rb || (n >= rb + 4 && emb__le32(p + rb) == d))) {
            *out = EMB_INPUT_FVECS;
            return 0;
        }
    }
    uint64_t rows, dim;
    size_t h = w2v_header_len(p, n, &rows, &dim);
    if (h) {
        *out = w2v_row_is_text(p + h, n - h, dim) ? EMB_INPUT_W2V_TEXT : EMB_INPUT_W2V_BIN;
        return 0;
    }
    if (memchr(p, 0, n))
        return emb_error_set(err, EMB_EFORMAT,
                             "unrecognised input: binary data without a known magic number or "
                             "extension; name the format explicitly");
    *out = EMB_INPUT_GLOVE;
    return 0;
}

/* ---- the reader ----------------------------------------------------------------------- */

int emb_reader_open(emb_reader **out, const char *path, emb_input_format fmt, const char *tensor,
                    emb_error *err)
{
    int rc;
    emb_reader *r = calloc(1, sizeof *r);
    if (!r)
        return emb_error_set(err, EMB_ENOMEM, "cannot allocate a reader");
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        rc = -errno;
        emb_error_set(err, rc, "cannot open %s: %s", path, strerror(-rc));
        goto fail_free;
    }
    struct stat st;
    if (fstat(r->fd, &st) != 0) {
        rc = -errno;
        emb_error_set(err, rc, "cannot stat %s: %s", path, strerror(-rc));
        goto fail_close;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = emb_error_set(err, EMB_EINVAL, "%s is not a regular file", path);
        goto fail_close;
    }
    r->info.file_bytes = (uint64_t)st.st_size;
    rc = emb__rbuf_init(&r->in, r->fd, 0, EMB__RBUF_CAP, err);
    if (rc < 0)
        goto fail_close;
    if (fmt == EMB_INPUT_AUTO) {
        rc = detect(r, path, &fmt, err); /* only peeks: the buffer stays at offset 0 */
        if (rc < 0)
            goto fail_buf;
    }
    r->ops = ops_for(fmt);
    if (!r->ops) {
        rc = emb_error_set(err, EMB_EINVAL, "unknown input format %d", (int)fmt);
        goto fail_buf;
    }
    if (tensor && fmt != EMB_INPUT_SAFETENSORS && fmt != EMB_INPUT_GGUF) {
        rc = emb_error_set(err, EMB_EINVAL,
                           "a tensor name applies only to safetensors and GGUF "
                           "input, not %s",
                           emb_input_format_name(fmt));
        goto fail_buf;
    }
    r->info.format = fmt;
    rc = r->ops->open(r, tensor, err);
    if (rc < 0)
        goto fail_ops;
    if (r->info.dim < 1 || r->info.dim > EMB_MAX_DIM) { /* each format checks; never reached */
        rc = emb_error_set(err, EMB_ECORRUPT, "dim %u outside 1..%u", r->info.dim, EMB_MAX_DIM);
        goto fail_ops;
    }
    r->vec = malloc((size_t)r->info.dim * sizeof(float));
    if (!r->vec) {
        rc = emb_error_set(err, EMB_ENOMEM, "cannot allocate a row of %u floats", r->info.dim);
        goto fail_ops;
    }
    *out = r;
    return 0;

fail_ops:
    if (r->ops->close)
        r->ops->close(r);
fail_buf:
    emb__rbuf_free(&r->in);
fail_close:
    close(r->fd);
fail_free:
    free(r);
    return rc;
}

const emb_reader_info *emb_reader_info_get(const emb_reader *r)
{
    return &r->info;
}

int emb_reader_next(emb_reader *r, emb_row *row, emb_error *err)
{
    emb_row tmp = {r->vec, NULL, 0, NULL};
    int rc = r->ops->next(r, &tmp, err);
    if (rc == 1) {
        r->row++;
        *row = tmp;
    }
    return rc;
}

uint64_t emb_reader_bytes_read(const emb_reader *r)
{
    return emb__rbuf_tell(&r->in);
}

void emb_reader_close(emb_reader *r)
{
    if (!r)
        return;
    if (r->ops->close)
        r->ops->close(r);
    free(r->vec);
    emb__rbuf_free(&r->in);
    close(r->fd);
    free(r);
}
