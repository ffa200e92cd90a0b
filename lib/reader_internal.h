/*
 * reader_internal.h - what the input readers share: the reader object, a small vtable per
 * format, the buffered-input layer and the row helpers.
 *
 * Each format lives in its own file (reader_npy.c, reader_safetensors.c, ...) and exports one
 * emb__reader_ops table; reader.c detects the format, opens the file and dispatches. Input goes
 * through emb__rbuf: pread(2) into one large buffer that is refilled as it drains, so a 3 GB
 * input costs a few MiB of memory and a handful of system calls per buffer, and text parsers
 * scan lines in place without copying them. pread (not read) lets a second buffer walk another
 * part of the same file (GGUF token strings) without disturbing the first.
 *
 * Rejected: mmap of the whole input (a file truncated while being read turns into SIGBUS
 * instead of an error, and one sequential pass gains nothing from it); stdio getline per line
 * (a copy, a lock and a call per line, where memchr over a 4 MiB window finds line ends at
 * memory speed).
 */
#ifndef EMB_READER_INTERNAL_H
#define EMB_READER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "emb.h"
#include "emb_reader.h"

#define EMB__RBUF_CAP     (4u << 20)   /* default buffer: 4 MiB */
#define EMB__RBUF_MAX_CAP (256u << 20) /* a text line longer than this is refused */

/* A read-ahead window over a file: bytes buf[pos, len) are the file's bytes from offset
 * off + pos on. */
typedef struct emb__rbuf {
    int fd; /* borrowed */
    uint8_t *buf;
    size_t cap;      /* allocated bytes */
    size_t pos, len; /* unread window */
    uint64_t off;    /* file offset of buf[0] */
    int eof;         /* a read returned 0: nothing follows buf[len) */
} emb__rbuf;

/* Prepares b to read fd from offset start with a cap-byte buffer. Returns 0 or EMB_ENOMEM. */
int emb__rbuf_init(emb__rbuf *b, int fd, uint64_t start, size_t cap, emb_error *err);
void emb__rbuf_free(emb__rbuf *b);

/* Makes at least n unread bytes available at emb__rbuf_ptr(b) unless the file ends first,
 * growing the buffer when n exceeds it (up to EMB__RBUF_MAX_CAP). Returns 0 (check
 * emb__rbuf_avail: fewer than n bytes means end of file), a negated errno, or EMB_ENOMEM. */
int emb__rbuf_fill(emb__rbuf *b, size_t n, emb_error *err);

/* Moves the read position to absolute file offset off, dropping the window. */
void emb__rbuf_seek(emb__rbuf *b, uint64_t off);

/* Skips n bytes (within the window or by seeking past it). */
void emb__rbuf_skip(emb__rbuf *b, uint64_t n);

/* Copies exactly n bytes to dst. Returns 0, a negative error, or 1 when the file ends first. */
int emb__rbuf_read(emb__rbuf *b, void *dst, size_t n, emb_error *err);

static inline const uint8_t *emb__rbuf_ptr(const emb__rbuf *b)
{
    return b->buf + b->pos;
}
static inline size_t emb__rbuf_avail(const emb__rbuf *b)
{
    return b->len - b->pos;
}
static inline uint64_t emb__rbuf_tell(const emb__rbuf *b)
{
    return b->off + b->pos;
}

/* Source element types of binary formats. */
typedef enum emb__dtype {
    EMB__DT_F32 = 0,
    EMB__DT_F16,
    EMB__DT_BF16,
    EMB__DT_Q1,  /* GGML Q1_0 blocks */
    EMB__DT_F64, /* float64, rounded to the nearest float32 (np.save's default dtype) */
} emb__dtype;

typedef struct emb__reader_ops {
    /* Reads and validates the header from r->in (positioned at 0); fills r->info (rows, dim,
     * has_keys, native_q1, source_dtype, tensor) and leaves r->in at the first row. r->info.format
     * and file_bytes are set by the caller. Returns 0 or an error described in err; r->ops->close
     * is still called afterwards. */
    int (*open)(emb_reader *r, const char *tensor, emb_error *err);
    /* Produces one row into r->vec (and key / q1 pointers); same contract as emb_reader_next. */
    int (*next)(emb_reader *r, emb_row *row, emb_error *err);
    /* Frees format state (r->priv). May be NULL. */
    void (*close)(emb_reader *r);
} emb__reader_ops;

struct emb_reader {
    const emb__reader_ops *ops;
    emb_reader_info info;
    int fd;
    emb__rbuf in;
    uint64_t row;  /* rows produced so far */
    uint64_t line; /* text formats: lines consumed so far (1-based line of the last one) */
    float *vec;    /* info.dim floats: the row handed out */
    /* Binary tensor formats (npy, safetensors, GGUF, fvecs): rows are row_bytes each. */
    emb__dtype dtype;
    size_t row_bytes;
    uint64_t data_off; /* file offset of row 0 */
    void *priv;        /* format state */
};

extern const emb__reader_ops emb__npy_ops;
extern const emb__reader_ops emb__safetensors_ops;
extern const emb__reader_ops emb__gguf_ops;
extern const emb__reader_ops emb__w2v_bin_ops;
extern const emb__reader_ops emb__w2v_text_ops;
extern const emb__reader_ops emb__glove_ops;
extern const emb__reader_ops emb__fvecs_ops;

/* Reads the next binary row (r->row_bytes at the current position) and converts it to
 * r->vec from r->dtype; for Q1 *raw points at the row's blocks in the buffer (borrowed, valid
 * until the next read). Rejects NaN and infinities. Returns 0, or EMB_ECORRUPT naming the row and
 * offset when the file ends early or a value is not finite. */
int emb__read_bin_row(emb_reader *r, const uint8_t **raw, emb_error *err);

/* Checks that r->vec holds finite values; else EMB_ECORRUPT naming where (a sentence fragment
 * such as "row 12" or "line 40"). */
int emb__check_finite(const emb_reader *r, const char *where_kind, uint64_t where, emb_error *err);

/* Little-endian loads from unaligned memory. */
static inline uint16_t emb__le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t emb__le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t emb__le64(const uint8_t *p)
{
    return (uint64_t)emb__le32(p) | ((uint64_t)emb__le32(p + 4) << 32);
}

/* *out = a * b unless that overflows; returns 0 or -1. */
static inline int emb__mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}

/* Text helpers (reader_glove.c), shared with the word2vec text reader. */

/* Parses one text row [line, end) (no '\n'; a trailing '\r' and spaces already stripped) of
 * the form "word v1 ... vdim" into vec: the word is everything before the last dim
 * space-separated fields, so words containing spaces work. Writes the word span to *key and
 * *key_len (borrowed from line). Returns 0 or EMB_ECORRUPT naming line_no and the problem. */
int emb__text_row(const char *line, const char *end, uint32_t dim, float *vec, const char **key,
                  size_t *key_len, uint64_t line_no, emb_error *err);

/* Returns the next line of b without its '\n' (and without trailing '\r' and spaces) in
 * [*line, *end), borrowed until the next call. Returns 1, 0 at end of input, or a negative
 * error (a line longer than EMB__RBUF_MAX_CAP). A final line without '\n' counts. */
int emb__text_line(emb__rbuf *b, const char **line, const char **end, emb_error *err);

#endif
