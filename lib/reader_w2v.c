/*
 * reader_w2v.c - word2vec files: binary ("<rows> <dim>\n" then per row a word, a space and dim
 * raw little-endian float32) and text (the same header, then "word v1 ... vdim" per line, which is
 * also fastText's .vec).
 *
 * Binary rows: whitespace before each word is skipped, because the original tool writes a '\n'
 * after every row and gensim 4 writes none; the word runs to the next space and may hold any
 * other byte. The row count in the header is a promise checked both ways: fewer rows, or bytes
 * after the last promised row, are errors. Rejected: reading the word byte by byte through a
 * getc-style loop (the buffered window holds a whole row, so one memchr finds the space).
 * Text rows share the GloVe row parser (reader_glove.c), so words containing spaces and
 * fastText's trailing space work the same in both.
 */
#include <string.h>

#include "reader_internal.h"

#define W2V_HEADER_MAX 256u /* the header line must end within this many bytes */

static int is_ws(uint8_t c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* Parses the "<rows> <dim>" line and leaves r->in after its '\n'. */
static int w2v_header(emb_reader *r, const char *kind, emb_error *err)
{
    int rc = emb__rbuf_fill(&r->in, W2V_HEADER_MAX, err);
    if (rc < 0)
        return rc;
    const uint8_t *p = emb__rbuf_ptr(&r->in);
    size_t n = emb__rbuf_avail(&r->in);
    const uint8_t *nl = memchr(p, '\n', n);
    if (!nl)
        return emb_error_set(err, EMB_EFORMAT,
                             "not a %s file: no \"<rows> <dim>\" header line in the first %u bytes",
                             kind, W2V_HEADER_MAX);
    uint64_t v[2] = {0, 0};
    const uint8_t *q = p;
    for (int f = 0; f < 2; f++) {
        while (f == 1 && q < nl && *q == ' ')
            q++;
        const uint8_t *start = q;
        while (q < nl && *q >= '0' && *q <= '9') {
            if (v[f] > (UINT64_MAX - 9) / 10)
                return emb_error_set(err, EMB_ECORRUPT, "%s header: count overflows", kind);
            v[f] = v[f] * 10 + (uint64_t)(*q - '0');
            q++;
        }
        if (q == start || (f == 0 && (q == nl || *q != ' ')))
            return emb_error_set(err, EMB_EFORMAT,
                                 "not a %s file: line 1 is not a \"<rows> <dim>\" header", kind);
    }
    while (q < nl && (*q == ' ' || *q == '\r'))
        q++;
    if (q != nl)
        return emb_error_set(err, EMB_EFORMAT,
                             "not a %s file: line 1 is not a \"<rows> <dim>\" header", kind);
    if (v[1] < 1 || v[1] > EMB_MAX_DIM)
        return emb_error_set(err, EMB_EUNSUPPORTED, "%s header: dim %llu outside 1..%u", kind,
                             (unsigned long long)v[1], EMB_MAX_DIM);
    r->info.rows = v[0];
    r->info.dim = (uint32_t)v[1];
    r->info.has_keys = 1;
    r->in.pos += (size_t)(nl - p) + 1;
    r->line = 1;
    return 0;
}

/* ---- binary --------------------------------------------------------------------------- */

static int w2v_bin_open(emb_reader *r, const char *tensor, emb_error *err)
{
    (void)tensor;
    int rc = w2v_header(r, "word2vec", err);
    if (rc < 0)
        return rc;
    r->dtype = EMB__DT_F32;
    r->row_bytes = (size_t)r->info.dim * 4;
    strcpy(r->info.source_dtype, "f32");
    /* Each row takes at least a one-byte word, a space and its floats. */
    uint64_t left = r->info.file_bytes - emb__rbuf_tell(&r->in);
    uint64_t max_rows = left / (2 + r->row_bytes);
    if (r->info.rows > max_rows)
        return emb_error_set(err, EMB_ECORRUPT,
                             "word2vec header promises %llu rows of %u floats, but the %llu bytes "
                             "after it hold at most %llu",
                             (unsigned long long)r->info.rows, r->info.dim,
                             (unsigned long long)left, (unsigned long long)max_rows);
    return 0;
}

/* Skips whitespace; returns 1 when a non-whitespace byte follows, 0 at end of file. */
static int skip_ws(emb__rbuf *b, emb_error *err)
{
    for (;;) {
        while (b->pos < b->len && is_ws(b->buf[b->pos]))
            b->pos++;
        if (b->pos < b->len)
            return 1;
        int rc = emb__rbuf_fill(b, 1, err);
        if (rc < 0)
            return rc;
        if (emb__rbuf_avail(b) == 0)
            return 0;
    }
}

static int w2v_bin_next(emb_reader *r, emb_row *row, emb_error *err)
{
    emb__rbuf *b = &r->in;
    int rc = skip_ws(b, err);
    if (rc < 0)
        return rc;
    if (r->row == r->info.rows) {
        if (rc == 1)
            return emb_error_set(err, EMB_ECORRUPT,
                                 "word2vec: bytes at offset %llu after the %llu rows the header "
                                 "promised",
                                 (unsigned long long)emb__rbuf_tell(b),
                                 (unsigned long long)r->info.rows);
        return 0;
    }
    uint64_t at = emb__rbuf_tell(b);
    if (rc == 0)
        return emb_error_set(err, EMB_ECORRUPT,
                             "word2vec header promised %llu rows, but the file ends after %llu "
                             "(byte offset %llu)",
                             (unsigned long long)r->info.rows, (unsigned long long)r->row,
                             (unsigned long long)at);
    if ((rc = emb__rbuf_fill(b, EMB_MAX_KEY + 1 + r->row_bytes, err)) < 0)
        return rc;
    const uint8_t *p = emb__rbuf_ptr(b);
    size_t avail = emb__rbuf_avail(b);
    const uint8_t *sp = memchr(p, ' ', avail < EMB_MAX_KEY + 1 ? avail : EMB_MAX_KEY + 1);
    if (!sp) {
        if (avail > EMB_MAX_KEY)
            return emb_error_set(err, EMB_ECORRUPT,
                                 "word2vec row %llu at byte offset %llu: word longer than the "
                                 "%u-byte key limit",
                                 (unsigned long long)r->row, (unsigned long long)at, EMB_MAX_KEY);
        return emb_error_set(err, EMB_ECORRUPT,
                             "word2vec row %llu at byte offset %llu: file ends inside the word "
                             "(the header promised %llu rows)",
                             (unsigned long long)r->row, (unsigned long long)at,
                             (unsigned long long)r->info.rows);
    }
    size_t klen = (size_t)(sp - p);
    if (avail - klen - 1 < r->row_bytes)
        return emb_error_set(err, EMB_ECORRUPT,
                             "word2vec row %llu at byte offset %llu: file ends inside its vector "
                             "(%zu of %zu bytes; the header promised %llu rows)",
                             (unsigned long long)r->row, (unsigned long long)at, avail - klen - 1,
                             r->row_bytes, (unsigned long long)r->info.rows);
    row->key = (const char *)p;
    row->key_len = klen;
    b->pos += klen + 1;
    if ((rc = emb__read_bin_row(r, NULL, err)) < 0)
        return rc;
    return 1;
}

const emb__reader_ops emb__w2v_bin_ops = {w2v_bin_open, w2v_bin_next, NULL};

/* ---- text ----------------------------------------------------------------------------- */

static int w2v_text_open(emb_reader *r, const char *tensor, emb_error *err)
{
    (void)tensor;
    int rc = w2v_header(r, "word2vec text", err);
    if (rc < 0)
        return rc;
    strcpy(r->info.source_dtype, "text");
    return 0;
}

static int w2v_text_next(emb_reader *r, emb_row *row, emb_error *err)
{
    const char *line, *end;
    for (;;) {
        int rc = emb__text_line(&r->in, &line, &end, err);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            if (r->row < r->info.rows)
                return emb_error_set(err, EMB_ECORRUPT,
                                     "word2vec text header promised %llu rows, but the file ends "
                                     "after %llu (line %llu)",
                                     (unsigned long long)r->info.rows, (unsigned long long)r->row,
                                     (unsigned long long)r->line);
            return 0;
        }
        r->line++;
        if (line != end)
            break;
    }
    if (r->row == r->info.rows)
        return emb_error_set(err, EMB_ECORRUPT,
                             "word2vec text line %llu: more rows than the %llu the header "
                             "promised",
                             (unsigned long long)r->line, (unsigned long long)r->info.rows);
    int rc = emb__text_row(line, end, r->info.dim, r->vec, &row->key, &row->key_len, r->line, err);
    return rc < 0 ? rc : 1;
}

const emb__reader_ops emb__w2v_text_ops = {w2v_text_open, w2v_text_next, NULL};
