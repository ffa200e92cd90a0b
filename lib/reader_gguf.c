/*
 * reader_gguf.c - GGUF (versions 2 and 3): one embedding tensor, by default token_embd.weight,
 * with the vocabulary (tokenizer.ggml.tokens) as keys.
 *
 * The header is walked once, front to back, through the buffered reader: every string length,
 * array count and tensor extent is checked against what is left of the file before it is used,
 * and the counts in the fixed header are bounded by the smallest encoding of an entry, so a
 * forged count fails at once instead of after billions of iterations. The token strings are not
 * copied: their file offset is remembered and a second small buffer walks them in step with the
 * rows (a 150k-token vocabulary would otherwise cost megabytes of scattered allocations).
 *
 * Types: F32 (0), F16 (1), BF16 (30) and Q1_0 (41: blocks of 128 values, an fp16 scale then 16
 * bytes of sign bits). Q1_0 rows are handed out both decoded and raw, so the store can copy the
 * blocks bit-exact. Anything else is refused by id, in particular 40, which upstream ggml uses for
 * NVFP4 while early PrismML files used it for a 32-value Q1_0 variant: guessing between them would
 * silently produce garbage. Rejected: trusting general.alignment without checking it is a power of
 * two, and reading tensor data through the tensor-info offsets before checking them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reader_internal.h"

#define GGUF_DEFAULT_TENSOR "token_embd.weight"
#define GGUF_DEFAULT_ALIGN  32u
#define GGUF_MAX_KEY        (1u << 16) /* a key or tensor name longer than this is not plausible */
#define GGUF_MAX_DIMS       4u         /* GGML_MAX_DIMS */
#define GGUF_TOKEN_BUF      (256u << 10)

enum {
    GT_U8 = 0,
    GT_I8,
    GT_U16,
    GT_I16,
    GT_U32,
    GT_I32,
    GT_F32,
    GT_BOOL,
    GT_STRING,
    GT_ARRAY,
    GT_U64,
    GT_I64,
    GT_F64,
    GT_COUNT
};

enum { GGML_F32 = 0, GGML_F16 = 1, GGML_BF16 = 30, GGML_Q1_0 = 41 };

typedef struct gguf_state {
    emb__rbuf tok; /* token strings, walked in step with the rows when has_keys */
} gguf_state;

/* Bytes of a scalar value type, 0 for strings, arrays and unknown types. */
static size_t value_size(uint32_t t)
{
    static const uint8_t sz[GT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < GT_COUNT ? sz[t] : 0;
}

static const char *ggml_type_name(uint32_t t)
{
    static const char *const names[] = {
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "(removed Q4_2)",
        "(removed Q4_3)",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "(removed Q4_0_4_4)",
        "(removed Q4_0_4_8)",
        "(removed Q4_0_8_8)",
        "TQ1_0",
        "TQ2_0",
        "(removed IQ4_NL_4_4)",
        "(removed IQ4_NL_4_8)",
        "(removed IQ4_NL_8_8)",
        "MXFP4",
        "NVFP4 upstream, a 32-value Q1_0 in early PrismML files",
        "Q1_0",
    };
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

static int g_trunc(const emb_reader *r, const char *what, emb_error *err)
{
    return emb_error_set(err, EMB_ECORRUPT,
                         "gguf truncated: file ends inside %s at byte offset %llu", what,
                         (unsigned long long)emb__rbuf_tell(&r->in));
}

static int g_u32(emb_reader *r, uint32_t *v, const char *what, emb_error *err)
{
    uint8_t b[4];
    *v = 0; /* defined on every path, also for the compiler's flow analysis */
    int rc = emb__rbuf_read(&r->in, b, 4, err);
    if (rc == 1)
        return g_trunc(r, what, err);
    if (rc < 0)
        return rc;
    *v = emb__le32(b);
    return 0;
}

static int g_u64(emb_reader *r, uint64_t *v, const char *what, emb_error *err)
{
    uint8_t b[8];
    *v = 0; /* defined on every path, also for the compiler's flow analysis */
    int rc = emb__rbuf_read(&r->in, b, 8, err);
    if (rc == 1)
        return g_trunc(r, what, err);
    if (rc < 0)
        return rc;
    *v = emb__le64(b);
    return 0;
}

/* Reads a string's length and checks it against cap and the rest of the file; the position is
 * left at the string's bytes. */
static int g_strlen(emb_reader *r, uint64_t cap, uint64_t *len, const char *what, emb_error *err)
{
    uint64_t at = emb__rbuf_tell(&r->in);
    int rc = g_u64(r, len, what, err);
    if (rc < 0)
        return rc;
    uint64_t pos = emb__rbuf_tell(&r->in), size = r->info.file_bytes;
    if (*len > cap || pos > size || *len > size - pos)
        return emb_error_set(err, EMB_ECORRUPT,
                             "gguf %s at byte offset %llu: length %llu exceeds %s", what,
                             (unsigned long long)at, (unsigned long long)*len,
                             *len > cap ? "the limit" : "the rest of the file");
    return 0;
}

/* Reads a string of at most GGUF_MAX_KEY bytes into buf (GGUF_MAX_KEY + 1 bytes), NUL-terminated
 * (an embedded NUL shows up as *len != strlen(buf)). */
static int g_name(emb_reader *r, char *buf, size_t *len, const char *what, emb_error *err)
{
    uint64_t n;
    int rc = g_strlen(r, GGUF_MAX_KEY, &n, what, err);
    if (rc < 0)
        return rc;
    if ((rc = emb__rbuf_read(&r->in, buf, (size_t)n, err)) == 1)
        return g_trunc(r, what, err);
    if (rc < 0)
        return rc;
    buf[n] = '\0';
    *len = (size_t)n;
    return 0;
}

/* Skips n bytes that the caller has checked against the file size. */
static void g_skip(emb_reader *r, uint64_t n)
{
    emb__rbuf_skip(&r->in, n);
}

static uint64_t remaining(const emb_reader *r)
{
    uint64_t pos = emb__rbuf_tell(&r->in);
    return pos < r->info.file_bytes ? r->info.file_bytes - pos : 0;
}

typedef struct gguf_found {
    uint32_t alignment;
    uint64_t tok_off, tok_count; /* tok_off 0: no token array */
    int have_tensor;
    uint32_t n_dims, type;
    uint64_t dims[GGUF_MAX_DIMS], offset;
} gguf_found;

static int walk_kv(emb_reader *r, uint64_t n_kv, gguf_found *f, char *name, emb_error *err)
{
    int rc;
    for (uint64_t i = 0; i < n_kv; i++) {
        size_t klen = 0;
        if ((rc = g_name(r, name, &klen, "key", err)) < 0)
            return rc;
        int is_align = strcmp(name, "general.alignment") == 0 && klen == 17;
        int is_tok = strcmp(name, "tokenizer.ggml.tokens") == 0 && klen == 21;
        uint32_t type;
        if ((rc = g_u32(r, &type, "a value type", err)) < 0)
            return rc;
        if (type == GT_STRING) {
            uint64_t n;
            if ((rc = g_strlen(r, UINT64_MAX, &n, "string value", err)) < 0)
                return rc;
            g_skip(r, n);
        } else if (type == GT_ARRAY) {
            uint32_t et;
            uint64_t count;
            if ((rc = g_u32(r, &et, "an array type", err)) < 0 ||
                (rc = g_u64(r, &count, "an array count", err)) < 0)
                return rc;
            if (et == GT_STRING) {
                if (count > remaining(r) / 8)
                    return emb_error_set(err, EMB_ECORRUPT,
                                         "gguf key '%.100s': array of %llu strings cannot fit in "
                                         "the %llu bytes left",
                                         name, (unsigned long long)count,
                                         (unsigned long long)remaining(r));
                if (is_tok) {
                    f->tok_off = emb__rbuf_tell(&r->in);
                    f->tok_count = count;
                }
                for (uint64_t k = 0; k < count; k++) {
                    uint64_t n;
                    if ((rc = g_strlen(r, UINT64_MAX, &n, "array string", err)) < 0)
                        return rc;
                    g_skip(r, n);
                }
            } else {
                size_t esz = value_size(et);
                if (!esz)
                    return emb_error_set(
                        err, EMB_ECORRUPT, "gguf key '%.100s': array element type %u is %s", name,
                        et, et == GT_ARRAY ? "a nested array (not allowed)" : "unknown");
                if (count > remaining(r) / esz)
                    return emb_error_set(err, EMB_ECORRUPT,
                                         "gguf key '%.100s': array of %llu values cannot fit in "
                                         "the %llu bytes left",
                                         name, (unsigned long long)count,
                                         (unsigned long long)remaining(r));
                g_skip(r, count * esz);
            }
        } else {
            size_t esz = value_size(type);
            if (!esz)
                return emb_error_set(err, EMB_ECORRUPT, "gguf key '%.100s': unknown value type %u",
                                     name, type);
            if (is_align) {
                uint32_t a;
                if (type != GT_U32)
                    return emb_error_set(err, EMB_ECORRUPT,
                                         "gguf general.alignment has value type %u, not uint32",
                                         type);
                if ((rc = g_u32(r, &a, "general.alignment", err)) < 0)
                    return rc;
                if (a == 0 || (a & (a - 1)) != 0)
                    return emb_error_set(err, EMB_ECORRUPT,
                                         "gguf general.alignment %u is not a power of two", a);
                f->alignment = a;
            } else {
                if (esz > remaining(r))
                    return g_trunc(r, "a value", err);
                g_skip(r, esz);
            }
        }
    }
    return 0;
}

static int walk_tensors(emb_reader *r, uint64_t n_tensors, const char *want, gguf_found *f,
                        char *name, emb_error *err)
{
    int rc;
    size_t want_len = strlen(want);
    for (uint64_t i = 0; i < n_tensors; i++) {
        size_t nlen = 0;
        uint32_t n_dims = 0, type = 0;
        uint64_t dims[GGUF_MAX_DIMS] = {0}, offset = 0;
        if ((rc = g_name(r, name, &nlen, "tensor name", err)) < 0)
            return rc;
        if ((rc = g_u32(r, &n_dims, "a tensor's dimension count", err)) < 0)
            return rc;
        if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
            return emb_error_set(err, EMB_ECORRUPT,
                                 "gguf tensor '%.100s' has %u dimensions "
                                 "(1..%u allowed)",
                                 name, n_dims, GGUF_MAX_DIMS);
        for (uint32_t d = 0; d < n_dims; d++) {
            if ((rc = g_u64(r, &dims[d], "a tensor dimension", err)) < 0)
                return rc;
        }
        if ((rc = g_u32(r, &type, "a tensor type", err)) < 0 ||
            (rc = g_u64(r, &offset, "a tensor offset", err)) < 0)
            return rc;
        if (nlen != want_len || memcmp(name, want, want_len) != 0)
            continue;
        if (f->have_tensor)
            return emb_error_set(err, EMB_ECORRUPT, "gguf names tensor '%.100s' twice", name);
        f->have_tensor = 1;
        f->n_dims = n_dims;
        f->type = type;
        f->offset = offset;
        memcpy(f->dims, dims, sizeof dims);
    }
    return 0;
}

static int gguf_open(emb_reader *r, const char *tensor, emb_error *err)
{
    uint64_t size = r->info.file_bytes;
    const char *want = tensor ? tensor : GGUF_DEFAULT_TENSOR;
    int rc = emb__rbuf_fill(&r->in, 24, err);
    if (rc < 0)
        return rc;
    const uint8_t *h = emb__rbuf_ptr(&r->in);
    if (emb__rbuf_avail(&r->in) < 4 || memcmp(h, "GGUF", 4) != 0)
        return emb_error_set(err, EMB_EFORMAT,
                             "not a GGUF file: bad magic (expected \"GGUF\" at byte 0)");
    if (emb__rbuf_avail(&r->in) < 24)
        return emb_error_set(err, EMB_EFORMAT, "gguf truncated: header shorter than 24 bytes");
    uint32_t version = emb__le32(h + 4);
    if (version != 2 && version != 3)
        return emb_error_set(err, EMB_EUNSUPPORTED,
                             "GGUF version %u is not supported (2 and 3 "
                             "are)%s",
                             version, (version & 0xFFFF) == 0 ? "; the file looks big-endian" : "");
    uint64_t n_tensors = emb__le64(h + 8), n_kv = emb__le64(h + 16);
    r->in.pos += 24;
    /* Smallest encodings: a kv is a length, a type and one byte; a tensor info a length, a
     * dimension count, one dimension, a type and an offset. */
    if (n_kv > (size - 24) / 13 || n_tensors > (size - 24) / 32)
        return emb_error_set(err, EMB_ECORRUPT,
                             "gguf header claims %llu tensors and %llu key-value pairs, more "
                             "than a %llu-byte file can hold",
                             (unsigned long long)n_tensors, (unsigned long long)n_kv,
                             (unsigned long long)size);

    char *name = malloc(GGUF_MAX_KEY + 1);
    if (!name)
        return emb_error_set(err, EMB_ENOMEM, "out of memory reading a GGUF header");
    gguf_found f = {.alignment = GGUF_DEFAULT_ALIGN};
    if ((rc = walk_kv(r, n_kv, &f, name, err)) < 0 ||
        (rc = walk_tensors(r, n_tensors, want, &f, name, err)) < 0) {
        free(name);
        return rc;
    }
    free(name);

    uint64_t pos = emb__rbuf_tell(&r->in);
    uint64_t data_start = pos + (f.alignment - pos % f.alignment) % f.alignment;
    if (pos > size || data_start > size)
        return emb_error_set(err, EMB_ECORRUPT,
                             "gguf data section at byte offset %llu lies past "
                             "the end of the %llu-byte file",
                             (unsigned long long)data_start, (unsigned long long)size);
    if (!f.have_tensor)
        return emb_error_set(err, EMB_ENOTFOUND, "gguf has no tensor '%.100s' (%llu tensors)", want,
                             (unsigned long long)n_tensors);
    for (uint32_t d = 2; d < f.n_dims; d++) {
        if (f.dims[d] != 1)
            return emb_error_set(err, EMB_EUNSUPPORTED,
                                 "gguf tensor '%.100s' has %u dimensions; a 2-D [dim, rows] tensor "
                                 "is needed",
                                 want, f.n_dims);
    }
    if (f.n_dims < 2)
        return emb_error_set(err, EMB_EUNSUPPORTED,
                             "gguf tensor '%.100s' is 1-D; a 2-D [dim, rows] tensor is needed",
                             want);
    uint64_t dim = f.dims[0], rows = f.dims[1];
    switch (f.type) {
    case GGML_F32:
        r->dtype = EMB__DT_F32;
        strcpy(r->info.source_dtype, "f32");
        break;
    case GGML_F16:
        r->dtype = EMB__DT_F16;
        strcpy(r->info.source_dtype, "f16");
        break;
    case GGML_BF16:
        r->dtype = EMB__DT_BF16;
        strcpy(r->info.source_dtype, "bf16");
        break;
    case GGML_Q1_0:
        r->dtype = EMB__DT_Q1;
        strcpy(r->info.source_dtype, "q1_0");
        break;
    default:
        return emb_error_set(err, EMB_EUNSUPPORTED,
                             "gguf tensor '%.100s' has GGML type id %u (%s), which is not "
                             "supported: F32 (0), F16 (1), BF16 (30) and Q1_0 (41) are",
                             want, f.type, ggml_type_name(f.type));
    }
    if (dim < 1 || dim > EMB_MAX_DIM)
        return emb_error_set(err, EMB_EUNSUPPORTED, "gguf tensor '%.100s': dim %llu outside 1..%u",
                             want, (unsigned long long)dim, EMB_MAX_DIM);
    if (r->dtype == EMB__DT_Q1 && dim % EMB_Q1_GROUP != 0)
        return emb_error_set(err, EMB_EUNSUPPORTED,
                             "gguf tensor '%.100s' is Q1_0 with dim %llu, not a multiple of the "
                             "%u-value block",
                             want, (unsigned long long)dim, EMB_Q1_GROUP);
    r->row_bytes = r->dtype == EMB__DT_F32  ? (size_t)dim * 4
                   : r->dtype == EMB__DT_Q1 ? (size_t)(dim / EMB_Q1_GROUP) * EMB_Q1_BLOCK
                                            : (size_t)dim * 2;
    uint64_t bytes;
    if (emb__mul_u64(rows, r->row_bytes, &bytes) != 0)
        return emb_error_set(err, EMB_ECORRUPT, "gguf tensor '%.100s': %llu rows overflow 64 bits",
                             want, (unsigned long long)rows);
    if (f.offset % f.alignment != 0)
        return emb_error_set(err, EMB_ECORRUPT,
                             "gguf tensor '%.100s': offset %llu is not a multiple of the "
                             "alignment %u",
                             want, (unsigned long long)f.offset, f.alignment);
    if (f.offset > size - data_start || bytes > size - data_start - f.offset)
        return emb_error_set(err, EMB_ECORRUPT,
                             "gguf tensor '%.100s': %llu bytes at data offset %llu run past the "
                             "end of the file (data section %llu..%llu)",
                             want, (unsigned long long)bytes, (unsigned long long)f.offset,
                             (unsigned long long)data_start, (unsigned long long)size);

    r->info.rows = rows;
    r->info.dim = (uint32_t)dim;
    r->info.native_q1 = r->dtype == EMB__DT_Q1;
    snprintf(r->info.tensor, sizeof r->info.tensor, "%s", want);
    r->data_off = data_start + f.offset;
    emb__rbuf_seek(&r->in, r->data_off);
    if (f.tok_off && f.tok_count == rows) {
        gguf_state *st = calloc(1, sizeof *st);
        if (!st)
            return emb_error_set(err, EMB_ENOMEM, "out of memory");
        r->priv = st;
        if ((rc = emb__rbuf_init(&st->tok, r->fd, f.tok_off, GGUF_TOKEN_BUF, err)) < 0)
            return rc;
        r->info.has_keys = 1;
    }
    return 0;
}

static int gguf_next(emb_reader *r, emb_row *row, emb_error *err)
{
    if (r->row == r->info.rows)
        return 0;
    int rc;
    if (r->info.has_keys) {
        gguf_state *st = r->priv;
        uint64_t at = emb__rbuf_tell(&st->tok);
        uint8_t b[8];
        if ((rc = emb__rbuf_read(&st->tok, b, 8, err)) < 0)
            return rc;
        if (rc == 1)
            return emb_error_set(err, EMB_ECORRUPT, "gguf token %llu: file ends inside its length",
                                 (unsigned long long)r->row);
        uint64_t len = emb__le64(b);
        if (len > EMB_MAX_KEY)
            return emb_error_set(err, EMB_ECORRUPT,
                                 "gguf token %llu at byte offset %llu: length %llu exceeds the "
                                 "%u-byte key limit",
                                 (unsigned long long)r->row, (unsigned long long)at,
                                 (unsigned long long)len, EMB_MAX_KEY);
        if ((rc = emb__rbuf_fill(&st->tok, (size_t)len, err)) < 0)
            return rc;
        if (emb__rbuf_avail(&st->tok) < len)
            return emb_error_set(err, EMB_ECORRUPT, "gguf token %llu: file ends inside it",
                                 (unsigned long long)r->row);
        row->key = (const char *)emb__rbuf_ptr(&st->tok);
        row->key_len = (size_t)len;
        st->tok.pos += (size_t)len;
    }
    const uint8_t *raw;
    if ((rc = emb__read_bin_row(r, &raw, err)) < 0)
        return rc;
    if (r->info.native_q1)
        row->q1 = raw;
    return 1;
}

static void gguf_close(emb_reader *r)
{
    gguf_state *st = r->priv;
    if (st) {
        emb__rbuf_free(&st->tok);
        free(st);
        r->priv = NULL;
    }
}

const emb__reader_ops emb__gguf_ops = {gguf_open, gguf_next, gguf_close};
