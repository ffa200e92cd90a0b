/*
 * emb_reader.h - streaming readers for the files users already have.
 *
 * A reader yields one row at a time as dim floats (plus its key, and for a GGUF Q1_0 tensor the
 * raw blocks to copy bit-exact), holding at most a small buffer: packing a 3 GB input never
 * holds the input in memory. Every reader treats its file as hostile: every count, size and
 * offset is checked against the file size before use, and errors name the failed check and the
 * byte offset or line number.
 */
#ifndef EMB_READER_H
#define EMB_READER_H

#include <stddef.h>
#include <stdint.h>

#include "emb.h"

typedef enum emb_input_format {
    EMB_INPUT_AUTO = 0,
    EMB_INPUT_NPY,
    EMB_INPUT_SAFETENSORS,
    EMB_INPUT_GGUF,
    EMB_INPUT_W2V_BIN,  /* word2vec binary */
    EMB_INPUT_W2V_TEXT, /* word2vec text and fastText .vec: "rows dim" header line */
    EMB_INPUT_GLOVE,    /* GloVe text: no header */
    EMB_INPUT_FVECS,
} emb_input_format;

/* "npy", "safetensors", "gguf", "word2vec", "word2vec-text", "glove", "fvecs". */
const char *emb_input_format_name(emb_input_format f);
/* Parses a name above (also "auto", "vec" = word2vec-text); returns 0 or EMB_EINVAL. */
int emb_input_format_parse(const char *s, emb_input_format *out);

/* What a reader learned from its file's header. */
typedef struct emb_reader_info {
    emb_input_format format;
    uint64_t rows; /* row count; UINT64_MAX when only known at the end (GloVe) */
    uint32_t dim;
    int has_keys;          /* every row comes with a key */
    int native_q1;         /* rows come as GGML Q1_0 blocks too (GGUF Q1_0) */
    char source_dtype[16]; /* "f32", "f16", "bf16", "q1_0", "text" */
    char tensor[256];      /* tensor name for safetensors / GGUF, else "" */
    uint64_t file_bytes;   /* size of the input file */
} emb_reader_info;

typedef struct emb_reader emb_reader;

/* One row as produced by emb_reader_next. The pointers are borrowed from the reader and valid
 * until the next call. */
typedef struct emb_row {
    const float *vec; /* dim floats */
    const char *key;  /* NULL when the format has no keys */
    size_t key_len;
    const uint8_t *q1; /* emb_q1_blocks(dim) * 18 bytes when info.native_q1, else NULL */
} emb_row;

/* Opens path in format fmt (EMB_INPUT_AUTO detects it from magic bytes, then extension, then
 * content). tensor selects a safetensors or GGUF tensor (NULL: safetensors' only 2-D tensor,
 * GGUF's "token_embd.weight"). Errors: negated errno, EMB_EFORMAT, EMB_ECORRUPT,
 * EMB_EUNSUPPORTED, EMB_ENOTFOUND (tensor), EMB_EINVAL (an ambiguous or misplaced tensor name,
 * not a regular file), EMB_ENOMEM; err says which check failed. */
int emb_reader_open(emb_reader **out, const char *path, emb_input_format fmt, const char *tensor,
                    emb_error *err);

const emb_reader_info *emb_reader_info_get(const emb_reader *r);

/* Produces the next row. Returns 1 with *row filled, 0 at the end of the input, or a negative
 * error (EMB_ECORRUPT with line/offset in err, e.g. a short row, a bad number, trailing bytes,
 * fewer rows than the header promised). */
int emb_reader_next(emb_reader *r, emb_row *row, emb_error *err);

/* Bytes of input consumed so far (for progress and MB/s). */
uint64_t emb_reader_bytes_read(const emb_reader *r);

/* Closes the file and frees. Accepts NULL. */
void emb_reader_close(emb_reader *r);

/* Parses a decimal float in the C locale from [s, end): optional sign, digits, optional
 * fraction and exponent, "nan"/"inf"/"infinity" in any case. Correctly rounded (falls back to
 * strtof beyond the exact fast path). Returns the pointer past the number, or NULL when s does
 * not start with a number. Exposed for tests and fuzzing. */
const char *emb_parse_float(const char *s, const char *end, float *out);

#endif
