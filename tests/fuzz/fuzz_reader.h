/*
 * fuzz_reader.h - the body shared by the input-reader targets (fuzz_npy.c, fuzz_glove.c, ...):
 * the input becomes a file, emb_reader_open opens it in one named format, and emb_reader_next
 * reads up to FUZZ_READER_MAX_ROWS rows.
 *
 * Properties, besides no crash, leak or undefined behaviour: a failure comes with a message;
 * the header's dim is in 1..EMB_MAX_DIM; every row handed out has dim finite values, a key of
 * at most EMB_MAX_KEY bytes when the format has keys, and Q1_0 blocks when info.native_q1; a
 * reader that ends cleanly has produced exactly the rows its header announced.
 */
#ifndef EMBD_FUZZ_READER_H
#define EMBD_FUZZ_READER_H

#include <math.h>
#include <string.h>

#include "emb_reader.h"
#include "fuzz.h"

#define FUZZ_READER_MAX_ROWS 4096u

/* Where key and block bytes are summed, so the reads that let ASan check them stay. */
static volatile unsigned fuzz_reader_sink;

static int fuzz_reader(const uint8_t *data, size_t size, emb_input_format fmt)
{
    const char *path = fuzz_file(data, size);
    emb_reader *r = NULL;
    emb_error err = {0};
    int rc = emb_reader_open(&r, path, fmt, NULL, &err);
    if (rc != 0) {
        FUZZ_CHECK(rc < 0 && err.code == rc && err.msg[0], "open failed (%d) without a message",
                   rc);
        return 0;
    }
    const emb_reader_info *info = emb_reader_info_get(r);
    FUZZ_CHECK(info->dim >= 1 && info->dim <= EMB_MAX_DIM, "dim %u", info->dim);
    FUZZ_CHECK(fmt == EMB_INPUT_AUTO ? info->format != EMB_INPUT_AUTO : info->format == fmt,
               "format %d, asked for %d", (int)info->format, (int)fmt);
    FUZZ_CHECK(info->file_bytes == size, "file_bytes %llu of %zu",
               (unsigned long long)info->file_bytes, size);
    uint64_t n = 0;
    while (n < FUZZ_READER_MAX_ROWS) {
        emb_row row;
        rc = emb_reader_next(r, &row, &err);
        if (rc <= 0)
            break;
        n++;
        for (uint32_t i = 0; i < info->dim; i++)
            FUZZ_CHECK(isfinite(row.vec[i]), "row %llu value %u is not finite",
                       (unsigned long long)n - 1, i);
        if (info->has_keys) {
            FUZZ_CHECK(row.key != NULL, "row %llu has no key", (unsigned long long)n - 1);
            FUZZ_CHECK(row.key_len <= EMB_MAX_KEY, "key of %zu bytes", row.key_len);
            for (size_t i = 0; i < row.key_len; i++)
                fuzz_reader_sink +=
                    (unsigned char)row.key[i]; /* ASan checks every byte is readable */
        }
        if (info->native_q1) {
            FUZZ_CHECK(row.q1 != NULL, "native q1 without blocks");
            for (size_t i = 0; i < (size_t)emb_q1_blocks(info->dim) * EMB_Q1_BLOCK; i++)
                fuzz_reader_sink += row.q1[i];
        }
        FUZZ_CHECK(emb_reader_bytes_read(r) <= size, "read %llu bytes of %zu",
                   (unsigned long long)emb_reader_bytes_read(r), size);
    }
    if (rc < 0)
        FUZZ_CHECK(err.code == rc && err.msg[0], "row error %d without a message", rc);
    if (rc == 0 && info->rows != UINT64_MAX)
        FUZZ_CHECK(n == info->rows, "clean end after %llu rows; the header said %llu",
                   (unsigned long long)n, (unsigned long long)info->rows);
    emb_reader_close(r);
    return 0;
}

#endif
