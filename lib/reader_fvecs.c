/*
 * reader_fvecs.c - .fvecs (the TEXMEX / ANN-benchmark layout): per row an int32 LE dim, then dim
 * float32 LE. No keys.
 *
 * The first row's dim fixes the row size; the file size must then be an exact multiple of
 * 4 + 4 * dim, and every row's prefix must repeat the same dim, so a truncated or concatenated
 * file is caught (the size at open, a mismatched prefix at the row). Rejected: allowing ragged
 * rows (the format permits them in principle, but a store holds one dim, and every public
 * dataset in this format is uniform).
 */
#include <string.h>

#include "reader_internal.h"

static int fvecs_open(emb_reader *r, const char *tensor, emb_error *err)
{
    (void)tensor;
    uint64_t size = r->info.file_bytes;
    uint8_t b[4];
    int rc = emb__rbuf_read(&r->in, b, 4, err);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return emb_error_set(err, EMB_EFORMAT, "fvecs file of %llu bytes holds no row",
                             (unsigned long long)size);
    int32_t d = (int32_t)emb__le32(b);
    if (d <= 0)
        return emb_error_set(err, EMB_ECORRUPT, "fvecs row 0 at byte offset 0 declares dim %d",
                             (int)d);
    if ((uint32_t)d > EMB_MAX_DIM)
        return emb_error_set(err, EMB_EUNSUPPORTED, "fvecs dim %d outside 1..%u", (int)d,
                             EMB_MAX_DIM);
    uint64_t row = 4 + 4 * (uint64_t)d;
    if (size % row != 0)
        return emb_error_set(err, EMB_ECORRUPT,
                             "fvecs file size %llu is not a multiple of the %llu-byte row (dim "
                             "%d): truncated or mixed rows",
                             (unsigned long long)size, (unsigned long long)row, (int)d);
    r->info.rows = size / row;
    r->info.dim = (uint32_t)d;
    strcpy(r->info.source_dtype, "f32");
    r->dtype = EMB__DT_F32;
    r->row_bytes = (size_t)d * 4;
    emb__rbuf_seek(&r->in, 0);
    return 0;
}

static int fvecs_next(emb_reader *r, emb_row *row, emb_error *err)
{
    (void)row;
    if (r->row == r->info.rows)
        return 0;
    uint64_t at = emb__rbuf_tell(&r->in);
    uint8_t b[4];
    int rc = emb__rbuf_read(&r->in, b, 4, err);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return emb_error_set(err, EMB_ECORRUPT, "fvecs row %llu at byte offset %llu: file ends",
                             (unsigned long long)r->row, (unsigned long long)at);
    uint32_t d = emb__le32(b);
    if (d != r->info.dim)
        return emb_error_set(err, EMB_ECORRUPT,
                             "fvecs row %llu at byte offset %llu declares dim %d, but row 0 has "
                             "dim %u",
                             (unsigned long long)r->row, (unsigned long long)at, (int)(int32_t)d,
                             r->info.dim);
    rc = emb__read_bin_row(r, NULL, err);
    return rc < 0 ? rc : 1;
}

const emb__reader_ops emb__fvecs_ops = {fvecs_open, fvecs_next, NULL};
