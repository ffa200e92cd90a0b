/*
 * writer.c - streaming writer of embd stores.
 *
 * Rows arrive one at a time, and the row count may be unknown until the end (GloVe), so each
 * section is first staged in its own unlinked temporary file next to the output (the kernel's
 * page cache holds it, not our heap); emb_writer_finish lays the sections out, copies each
 * staged file into place with copy_file_range (in-kernel, no user-space copy), builds the key
 * index, writes the header last, fsyncs and renames. A crash at any point leaves at most a
 * "<name>.tmp.XXXXXX" file (a unique name), never a half-written store under the final name.
 *
 * Rejected: computing offsets up front and writing rows in place (needs the row count, which
 * text formats do not give); holding rows in memory (a 1M x 768 table is gigabytes).
 *
 * Memory: one row of scratch per codec, a 1 MiB buffer per staged section, and at finish the
 * key index (8 bytes per slot) when the store has keys.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "emb.h"
#include "emb_kernels.h"
#include "store_internal.h"

#define STAGE_BUF (1u << 20)
#define ROW_ALIGN 4096u /* row sections start on a page, for madvise and huge pages */

enum { ST_NORMS, ST_F32, ST_F16, ST_Q1, ST_Q1I, ST_OFFS, ST_BLOB, ST_HASHES, ST_COUNT };

typedef struct stage {
    int fd;
    uint8_t *buf;
    size_t used;
    uint64_t bytes; /* total staged, flushed or not */
    uint32_t crc;
    void *map; /* read-only view (emb_writer_view, finish) */
    size_t map_len;
} stage;

typedef struct fid_acc {
    double sum_cos, min_cos;
    uint64_t worst_row;
} fid_acc;

struct emb_writer {
    emb_writer_opts o;
    char *path, *tmp_path, *dir;
    stage st[ST_COUNT];
    uint64_t rows;
    uint64_t blob_len;
    uint64_t dup_keys;
    size_t stride_f32, stride_f16, stride_q1;
    uint8_t *f32_buf, *f16_buf, *q1_buf; /* one encoded row each; padding stays zero */
    uint8_t *q1_group;                   /* the q1 rows of the group being filled (q1_interleave) */
    uint8_t *q1i_tiles;                  /* that group interleaved */
    float *dec;                          /* dim floats */
    int failed;     /* first staging I/O error; the writer is unusable after it */
    fid_acc fid[3]; /* f32, f16, q1 */
    uint8_t *index; /* the KEYS_HASH section once built */
    size_t index_len;
};

static const uint32_t codec_of_fid[3] = {EMB_CODEC_F32, EMB_CODEC_F16, EMB_CODEC_Q1};

static int stage_open(stage *s, const char *dir, emb_error *err)
{
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/.embd-stage-XXXXXX", dir);
    s->fd = mkostemp(tmpl, O_CLOEXEC);
    if (s->fd < 0)
        return emb_error_set(err, -errno, "cannot create a staging file in %s: %s", dir,
                             strerror(errno));
    unlink(tmpl);
    s->buf = malloc(STAGE_BUF);
    if (!s->buf)
        return emb_error_set(err, EMB_ENOMEM, "out of memory for a staging buffer");
    return 0;
}

static int write_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int pwrite_all(int fd, const void *data, size_t len, uint64_t off)
{
    const uint8_t *p = data;
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

static int stage_flush(stage *s)
{
    if (!s->used)
        return 0;
    int rc = write_all(s->fd, s->buf, s->used);
    s->used = 0;
    return rc;
}

static int stage_put(stage *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    s->crc = emb_crc32c(s->crc, data, len);
    s->bytes += len;
    while (len) {
        size_t n = STAGE_BUF - s->used;
        if (n > len)
            n = len;
        memcpy(s->buf + s->used, p, n);
        s->used += n;
        p += n;
        len -= n;
        if (s->used == STAGE_BUF) {
            int rc = stage_flush(s);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static void stage_unmap(stage *s)
{
    if (s->map)
        munmap(s->map, s->map_len);
    s->map = NULL;
}

static int stage_map(stage *s)
{
    stage_unmap(s);
    int rc = stage_flush(s);
    if (rc || s->bytes == 0)
        return rc;
    void *m = mmap(NULL, (size_t)s->bytes, PROT_READ, MAP_SHARED, s->fd, 0);
    if (m == MAP_FAILED)
        return -errno;
    s->map = m;
    s->map_len = (size_t)s->bytes;
    return 0;
}

static void writer_free(emb_writer *w)
{
    for (int i = 0; i < ST_COUNT; i++) {
        stage_unmap(&w->st[i]);
        if (w->st[i].fd >= 0)
            close(w->st[i].fd);
        free(w->st[i].buf);
    }
    free(w->f32_buf);
    free(w->f16_buf);
    free(w->q1_buf);
    free(w->q1_group);
    free(w->q1i_tiles);
    free(w->dec);
    free(w->index);
    free(w->path);
    free(w->tmp_path);
    free(w->dir);
    free(w);
}

int emb_writer_open(emb_writer **out, const char *path, const emb_writer_opts *o, emb_error *err)
{
    int rc;
    if (o->dim == 0 || o->dim > EMB_MAX_DIM)
        return emb_error_set(err, EMB_ERANGE, "dim %u outside 1..%u", o->dim, EMB_MAX_DIM);
    if (o->codecs == 0 || (o->codecs & ~(uint32_t)(EMB_CODEC_F32 | EMB_CODEC_F16 | EMB_CODEC_Q1)))
        return emb_error_set(err, EMB_EINVAL, "codecs 0x%x: need at least one known codec",
                             o->codecs);
    if ((o->codecs & EMB_CODEC_F32) && (o->codecs & EMB_CODEC_F16))
        return emb_error_set(err, EMB_EINVAL,
                             "codecs f32 and f16 together: f16 adds nothing to exact f32 rows");
    if ((unsigned)o->metric > EMB_METRIC_L2)
        return emb_error_set(err, EMB_EINVAL, "unknown metric %d", (int)o->metric);
    emb_writer *w = calloc(1, sizeof *w);
    if (!w)
        return emb_error_set(err, EMB_ENOMEM, "out of memory");
    for (int i = 0; i < ST_COUNT; i++)
        w->st[i].fd = -1;
    w->o = *o;
    w->stride_f32 = (o->codecs & EMB_CODEC_F32) ? emb__stride(EMB_CODEC_F32, o->dim) : 0;
    w->stride_f16 = (o->codecs & EMB_CODEC_F16) ? emb__stride(EMB_CODEC_F16, o->dim) : 0;
    w->stride_q1 = (o->codecs & EMB_CODEC_Q1) ? emb__stride(EMB_CODEC_Q1, o->dim) : 0;
    size_t plen = strlen(path);
    w->path = strdup(path);
    w->tmp_path = malloc(plen + 32);
    char *pcopy = strdup(path);
    w->f32_buf = calloc(1, w->stride_f32 + 1);
    w->f16_buf = calloc(1, w->stride_f16 + 1);
    w->q1_buf = calloc(1, w->stride_q1 + 1);
    w->dec = calloc(o->dim, sizeof *w->dec);
    const int q1i = w->stride_q1 && o->q1_interleave;
    if (q1i) {
        w->q1_group = malloc(EMB_Q1I_ROWS * w->stride_q1);
        w->q1i_tiles = malloc((size_t)emb_q1_blocks(o->dim) * EMB_Q1I_TILE);
    }
    if (!w->path || !w->tmp_path || !pcopy || !w->f32_buf || !w->f16_buf || !w->q1_buf || !w->dec ||
        (q1i && (!w->q1_group || !w->q1i_tiles))) {
        free(pcopy);
        rc = emb_error_set(err, EMB_ENOMEM, "out of memory");
        goto fail;
    }
    w->dir = strdup(dirname(pcopy));
    free(pcopy);
    if (!w->dir) {
        rc = emb_error_set(err, EMB_ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(w->tmp_path, plen + 32, "%s.tmp.XXXXXX", path);
    int need[ST_COUNT] = {
        [ST_NORMS] = 1,
        [ST_F32] = w->stride_f32 != 0,
        [ST_F16] = w->stride_f16 != 0,
        [ST_Q1] = w->stride_q1 != 0,
        [ST_Q1I] = q1i,
        [ST_OFFS] = o->keys,
        [ST_BLOB] = o->keys,
        [ST_HASHES] = o->keys,
    };
    for (int i = 0; i < ST_COUNT; i++) {
        if (!need[i])
            continue;
        rc = stage_open(&w->st[i], w->dir, err);
        if (rc)
            goto fail;
    }
    for (int i = 0; i < 3; i++)
        w->fid[i].min_cos = 1.0;
    if (o->keys) {
        uint64_t zero = 0;
        rc = stage_put(&w->st[ST_OFFS], &zero, 8);
        if (rc) {
            emb_error_set(err, rc, "staging keys: %s", emb_strerror(rc));
            goto fail;
        }
    }
    *out = w;
    return 0;
fail:
    writer_free(w);
    return rc;
}

/* Cosine between the original row x and its decoded copy y. Double precision (f16 copies sit
 * within 1e-7 of 1), four independent accumulators so the adds pipeline. */
static double cos_vs(const float *x, const float *y, uint32_t n)
{
    double xy[4] = {0}, xx[4] = {0}, yy[4] = {0};
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++) {
            xy[l] += (double)x[i + l] * y[i + l];
            xx[l] += (double)x[i + l] * x[i + l];
            yy[l] += (double)y[i + l] * y[i + l];
        }
    for (; i < n; i++) {
        xy[0] += (double)x[i] * y[i];
        xx[0] += (double)x[i] * x[i];
        yy[0] += (double)y[i] * y[i];
    }
    double sxy = xy[0] + xy[1] + xy[2] + xy[3], sxx = xx[0] + xx[1] + xx[2] + xx[3],
           syy = yy[0] + yy[1] + yy[2] + yy[3];
    if (sxx == 0 && syy == 0)
        return 1.0;
    if (sxx == 0 || syy == 0)
        return 0.0;
    return sxy / sqrt(sxx * syy);
}

static void fid_add(fid_acc *f, double c, uint64_t row)
{
    f->sum_cos += c;
    if (c < f->min_cos) {
        f->min_cos = c;
        f->worst_row = row;
    }
}

static double norm_of(const float *x, uint32_t n)
{
    double acc[4] = {0};
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++)
            acc[l] += (double)x[i + l] * x[i + l];
    for (; i < n; i++)
        acc[0] += (double)x[i] * x[i];
    return sqrt(acc[0] + acc[1] + acc[2] + acc[3]);
}

/* Stages the group of q1 rows collected so far (n of them) interleaved. */
static int stage_q1i_group(emb_writer *w, size_t n)
{
    emb_q1_interleave(w->q1_group, w->stride_q1, n, w->o.dim, w->q1i_tiles);
    return stage_put(&w->st[ST_Q1I], w->q1i_tiles, (size_t)emb_q1_blocks(w->o.dim) * EMB_Q1I_TILE);
}

int emb_writer_add(emb_writer *w, const float *vec, const uint8_t *q1, const char *key, size_t len,
                   emb_error *err)
{
    const uint32_t dim = w->o.dim;
    const emb_kernels *kn = emb_kernels_get();
    int rc;
    if (w->index)
        return emb_error_set(err, EMB_EINVAL, "rows added after the key index was built");
    for (uint32_t j = 0; j < dim; j++)
        if (!isfinite(vec[j]))
            return emb_error_set(err, EMB_EINVAL, "row %llu: value %u is not finite",
                                 (unsigned long long)w->rows, j);
    if (w->o.keys && !key)
        return emb_error_set(err, EMB_EINVAL, "row %llu has no key", (unsigned long long)w->rows);
    if (w->o.keys && len > EMB_MAX_KEY)
        return emb_error_set(err, EMB_ERANGE, "row %llu: key of %zu bytes exceeds %u",
                             (unsigned long long)w->rows, len, EMB_MAX_KEY);
    if (w->o.keys && w->rows >= UINT32_MAX - 1)
        return emb_error_set(err, EMB_ERANGE, "a keyed store holds fewer than 2^32 - 1 rows");

    /* Encode and check every codec first, stage afterwards: a refused row leaves nothing
     * behind. */
    uint16_t *f16 = (uint16_t *)w->f16_buf;
    double cos16 = 1, cosq1 = 1, norm = 0;
    if (w->stride_f32)
        norm = norm_of(vec, dim);
    if (w->stride_f16) {
        kn->f32_to_f16(vec, f16, dim);
        kn->f16_to_f32(f16, w->dec, dim);
        for (uint32_t j = 0; j < dim; j++)
            if (!isfinite(w->dec[j]))
                return emb_error_set(err, EMB_ERANGE,
                                     "row %llu: value %u (%g) overflows f16; use --dtype f32 or "
                                     "--normalize",
                                     (unsigned long long)w->rows, j, (double)vec[j]);
        cos16 = cos_vs(vec, w->dec, dim);
        if (!w->stride_f32)
            norm = norm_of(w->dec, dim);
    }
    if (w->stride_q1) {
        if (q1)
            memcpy(w->q1_buf, q1, w->stride_q1);
        else
            emb_q1_encode(vec, dim, w->q1_buf);
        for (uint32_t b = 0; b < emb_q1_blocks(dim); b++) {
            uint16_t d;
            memcpy(&d, w->q1_buf + (size_t)b * EMB_Q1_BLOCK, 2);
            if (!isfinite(emb_f16_to_f32(d)))
                return emb_error_set(err, EMB_ERANGE,
                                     "row %llu: the 1-bit scale of group %u is not finite (mean "
                                     "|x| overflows f16); use --normalize",
                                     (unsigned long long)w->rows, b);
        }
        emb_q1_decode(w->q1_buf, dim, w->dec);
        cosq1 = cos_vs(vec, w->dec, dim);
        if (!w->stride_f32 && !w->stride_f16)
            norm = sqrt((double)emb_q1_norm2(w->q1_buf, dim));
    }

    if (w->failed)
        return emb_error_set(err, w->failed, "an earlier write failed: %s",
                             emb_strerror(w->failed));
    if (w->stride_f32) {
        memcpy(w->f32_buf, vec, (size_t)dim * 4);
        if ((rc = stage_put(&w->st[ST_F32], w->f32_buf, w->stride_f32)))
            goto io_fail;
        fid_add(&w->fid[0], 1.0, w->rows);
    }
    if (w->stride_f16) {
        if ((rc = stage_put(&w->st[ST_F16], w->f16_buf, w->stride_f16)))
            goto io_fail;
        fid_add(&w->fid[1], cos16, w->rows);
    }
    if (w->stride_q1) {
        if ((rc = stage_put(&w->st[ST_Q1], w->q1_buf, w->stride_q1)))
            goto io_fail;
        fid_add(&w->fid[2], cosq1, w->rows);
        if (w->q1_group) {
            const size_t at = (size_t)(w->rows % EMB_Q1I_ROWS);
            memcpy(w->q1_group + at * w->stride_q1, w->q1_buf, w->stride_q1);
            if (at + 1 == EMB_Q1I_ROWS && (rc = stage_q1i_group(w, EMB_Q1I_ROWS)))
                goto io_fail;
        }
    }
    float nf = (float)norm;
    if ((rc = stage_put(&w->st[ST_NORMS], &nf, 4)))
        goto io_fail;
    if (w->o.keys) {
        uint64_t h = emb_key_hash(key, len, 0);
        w->blob_len += len;
        if ((rc = stage_put(&w->st[ST_BLOB], key, len)) ||
            (rc = stage_put(&w->st[ST_OFFS], &w->blob_len, 8)) ||
            (rc = stage_put(&w->st[ST_HASHES], &h, 8)))
            goto io_fail;
    }
    w->rows++;
    return 0;
io_fail:
    w->failed = rc; /* the staged sections may now disagree: refuse everything after */
    return emb_error_set(err, rc, "writing a staging file in %s: %s", w->dir, emb_strerror(rc));
}

uint64_t emb_writer_rows(const emb_writer *w)
{
    return w->rows;
}

uint64_t emb_writer_duplicate_keys(const emb_writer *w)
{
    return w->dup_keys;
}

int emb_writer_fidelity(const emb_writer *w, uint32_t codec, emb_fidelity *out)
{
    for (int i = 0; i < 3; i++) {
        if (codec_of_fid[i] != codec || !(w->o.codecs & codec))
            continue;
        out->rows = w->rows;
        out->mean_cos = w->rows ? w->fid[i].sum_cos / (double)w->rows : 1.0;
        out->min_cos = w->fid[i].min_cos;
        out->worst_row = w->fid[i].worst_row;
        return 0;
    }
    return EMB_EINVAL;
}

int emb_writer_view(emb_writer *w, emb_store *v, emb_error *err)
{
    static const int row_stages[] = {ST_NORMS, ST_F32, ST_F16, ST_Q1};
    if (w->rows == 0)
        return emb_error_set(err, EMB_EINVAL, "no rows yet");
    for (size_t i = 0; i < sizeof row_stages / sizeof row_stages[0]; i++) {
        stage *s = &w->st[row_stages[i]];
        if (s->fd < 0)
            continue;
        int rc = stage_map(s);
        if (rc)
            return emb_error_set(err, rc, "mapping a staging file: %s", emb_strerror(rc));
    }
    memset(v, 0, sizeof *v);
    v->rows = w->rows;
    v->dim = w->o.dim;
    v->codecs = w->o.codecs;
    v->metric = w->o.metric;
    v->q1_blocks = emb_q1_blocks(w->o.dim);
    v->stride_f32 = w->stride_f32;
    v->stride_f16 = w->stride_f16;
    v->stride_q1 = w->stride_q1;
    v->rows_f32 = w->st[ST_F32].map;
    v->rows_f16 = w->st[ST_F16].map;
    v->rows_q1 = w->st[ST_Q1].map;
    v->norms = w->st[ST_NORMS].map;
    return 0;
}

int emb_writer_index_keys(emb_writer *w, emb_error *err)
{
    int rc;
    if (w->index || !w->o.keys)
        return 0;
    for (int i = 0; i < ST_COUNT; i++)
        if (w->st[i].fd >= 0 && (rc = stage_flush(&w->st[i])))
            return emb_error_set(err, rc, "writing a staging file: %s", emb_strerror(rc));
    if ((rc = stage_map(&w->st[ST_HASHES])) || (rc = stage_map(&w->st[ST_OFFS])) ||
        (rc = stage_map(&w->st[ST_BLOB])))
        return emb_error_set(err, rc, "mapping the staged keys: %s", emb_strerror(rc));
    const uint64_t *hashes = w->st[ST_HASHES].map;
    const uint64_t *offs = w->st[ST_OFFS].map;
    const uint8_t *blob = w->st[ST_BLOB].map;
    uint64_t cap = 16;
    while (cap < w->rows + w->rows / 3 + 1)
        cap <<= 1;
    size_t bytes = sizeof(emb_hash_header) + (size_t)cap * 8;
    uint8_t *sec = calloc(1, bytes);
    if (!sec)
        return emb_error_set(err, EMB_ENOMEM, "out of memory for a key index of %llu slots",
                             (unsigned long long)cap);
    uint64_t *slots = (uint64_t *)(sec + sizeof(emb_hash_header));
    uint64_t mask = cap - 1;
    uint32_t max_probe = 1;
    for (uint64_t r = 0; r < w->rows; r++) {
        uint64_t h = hashes[r];
        uint32_t fp = (uint32_t)(h >> 32);
        uint64_t i = h & mask;
        uint32_t probe = 1;
        int dup = 0;
        for (;; i = (i + 1) & mask, probe++) {
            uint64_t slot = slots[i];
            if (!slot)
                break;
            uint64_t other = (slot & 0xFFFFFFFFu) - 1;
            uint64_t len = offs[r + 1] - offs[r];
            if ((uint32_t)(slot >> 32) == fp && offs[other + 1] - offs[other] == len &&
                (len == 0 || memcmp(blob + offs[other], blob + offs[r], (size_t)len) == 0)) {
                dup = 1;
                break;
            }
        }
        if (dup) {
            w->dup_keys++;
            continue;
        }
        slots[i] = ((uint64_t)fp << 32) | (r + 1);
        if (probe > max_probe)
            max_probe = probe;
    }
    emb_hash_header hh = {.capacity = cap, .max_probe = max_probe, .seed = 0};
    memcpy(sec, &hh, sizeof hh);
    w->index = sec;
    w->index_len = bytes;
    return 0;
}

/* Copies len bytes of fd_in (from 0) to fd_out at off, in the kernel when it can. */
static int copy_into(int fd_in, int fd_out, uint64_t off, uint64_t len)
{
    loff_t in_off = 0, out_off = (loff_t)off;
    while (len) {
        ssize_t n = copy_file_range(fd_in, &in_off, fd_out, &out_off, (size_t)len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len -= (uint64_t)n;
    }
    if (!len)
        return 0;
    /* Fallback (EXDEV, ENOSYS, EINVAL on some filesystems): a plain read/write loop. */
    static const size_t chunk = 1u << 20;
    uint8_t *buf = malloc(chunk);
    if (!buf)
        return EMB_ENOMEM;
    int rc = 0;
    while (len && !rc) {
        size_t want = len < chunk ? (size_t)len : chunk;
        ssize_t n = pread(fd_in, buf, want, in_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : EMB_ETRUNCATED;
            break;
        }
        rc = pwrite_all(fd_out, buf, (size_t)n, (uint64_t)out_off);
        in_off += n;
        out_off += n;
        len -= (uint64_t)n;
    }
    free(buf);
    return rc;
}

static uint64_t align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

int emb_writer_finish(emb_writer *w, const char *meta, size_t meta_len, emb_error *err)
{
    int rc;
    int fd = -1;
    if (w->failed) {
        rc = emb_error_set(err, w->failed, "an earlier write failed: %s", emb_strerror(w->failed));
        goto fail;
    }
    if (w->rows == 0) {
        rc = emb_error_set(err, EMB_EINVAL, "no rows to write");
        goto fail;
    }
    if (meta_len > EMB_MAX_META) {
        rc = emb_error_set(err, EMB_ERANGE, "metadata of %zu bytes exceeds %u", meta_len,
                           EMB_MAX_META);
        goto fail;
    }
    /* The last, partial group of interleaved q1 rows (padded with zero rows). */
    if (w->q1_group && w->rows % EMB_Q1I_ROWS &&
        (rc = stage_q1i_group(w, (size_t)(w->rows % EMB_Q1I_ROWS)))) {
        emb_error_set(err, rc, "writing a staging file: %s", emb_strerror(rc));
        goto fail;
    }
    for (int i = 0; i < ST_COUNT; i++)
        if (w->st[i].fd >= 0 && (rc = stage_flush(&w->st[i]))) {
            emb_error_set(err, rc, "writing a staging file: %s", emb_strerror(rc));
            goto fail;
        }
    if ((rc = emb_writer_index_keys(w, err)))
        goto fail;

    /* Lay out the sections: metadata first (small), then the row sections on page
     * boundaries, then the keys. */
    struct {
        uint32_t kind;
        int stage; /* -1: from memory */
        const void *mem;
        uint64_t len;
        uint32_t crc;
        uint64_t align;
    } plan[EMB_SEC_KIND_MAX];
    uint32_t n = 0;
    if (meta_len)
        plan[n++] = (typeof(plan[0])){
            EMB_SEC_META, -1, meta, meta_len, emb_crc32c(0, meta, meta_len), EMB_ALIGN};
    static const struct {
        int stage;
        uint32_t kind;
        uint64_t align;
    } staged[] = {{ST_NORMS, EMB_SEC_NORMS, EMB_ALIGN},   {ST_F32, EMB_SEC_ROWS_F32, ROW_ALIGN},
                  {ST_F16, EMB_SEC_ROWS_F16, ROW_ALIGN},  {ST_Q1, EMB_SEC_ROWS_Q1, ROW_ALIGN},
                  {ST_Q1I, EMB_SEC_ROWS_Q1I, ROW_ALIGN},  {ST_OFFS, EMB_SEC_KEYS_OFFS, EMB_ALIGN},
                  {ST_BLOB, EMB_SEC_KEYS_BLOB, EMB_ALIGN}};
    for (size_t i = 0; i < sizeof staged / sizeof staged[0]; i++) {
        stage *s = &w->st[staged[i].stage];
        if (s->fd < 0)
            continue;
        plan[n++] = (typeof(plan[0])){staged[i].kind, staged[i].stage, NULL,
                                      s->bytes,       s->crc,          staged[i].align};
    }
    if (w->index)
        plan[n++] = (typeof(plan[0])){
            EMB_SEC_KEYS_HASH, -1, w->index, w->index_len, emb_crc32c(0, w->index, w->index_len),
            EMB_ALIGN};

    uint8_t head[sizeof(emb_header) + EMB_SEC_KIND_MAX * sizeof(emb_section)];
    memset(head, 0, sizeof head);
    uint32_t header_size = (uint32_t)(sizeof(emb_header) + n * sizeof(emb_section));
    uint64_t off = header_size;
    for (uint32_t i = 0; i < n; i++) {
        off = align_up(off, plan[i].align);
        emb_section e = {
            .kind = plan[i].kind, .offset = off, .length = plan[i].len, .crc = plan[i].crc};
        memcpy(head + sizeof(emb_header) + i * sizeof e, &e, sizeof e);
        off += plan[i].len;
    }
    emb_header h = {
        .bom = EMB_BOM,
        .version_major = EMB_VERSION_MAJOR,
        .version_minor = EMB_VERSION_MINOR,
        .header_size = header_size,
        .section_count = n,
        .rows = w->rows,
        .dim = w->o.dim,
        .codecs = w->o.codecs,
        .metric = (uint32_t)w->o.metric,
        .flags = (w->o.keys ? EMB_FLAG_KEYS : 0) | (w->o.normalized ? EMB_FLAG_NORMALIZED : 0),
        .file_size = off,
    };
    memcpy(h.magic, EMB_MAGIC, 8);
    memcpy(head, &h, sizeof h);
    h.header_crc = emb__header_crc(head, header_size);
    memcpy(head, &h, sizeof h);

    fd = mkostemp(w->tmp_path, O_CLOEXEC);
    if (fd < 0) {
        rc = emb_error_set(err, -errno, "%s: %s", w->tmp_path, strerror(errno));
        goto fail;
    }
    if (fchmod(fd, 0644) != 0) {
        rc = emb_error_set(err, -errno, "%s: fchmod: %s", w->tmp_path, strerror(errno));
        goto fail_unlink;
    }
    if (ftruncate(fd, (off_t)h.file_size) != 0) {
        rc = emb_error_set(err, -errno, "%s: ftruncate: %s", w->tmp_path, strerror(errno));
        goto fail_unlink;
    }
    for (uint32_t i = 0; i < n; i++) {
        emb_section e;
        memcpy(&e, head + sizeof(emb_header) + i * sizeof e, sizeof e);
        if (plan[i].stage < 0)
            rc = pwrite_all(fd, plan[i].mem, (size_t)plan[i].len, e.offset);
        else
            rc = copy_into(w->st[plan[i].stage].fd, fd, e.offset, plan[i].len);
        if (rc) {
            emb_error_set(err, rc, "%s: writing section %s: %s", w->tmp_path,
                          emb_section_name(e.kind), emb_strerror(rc));
            goto fail_unlink;
        }
    }
    if ((rc = pwrite_all(fd, head, header_size, 0))) {
        emb_error_set(err, rc, "%s: writing the header: %s", w->tmp_path, emb_strerror(rc));
        goto fail_unlink;
    }
    if (fsync(fd) != 0) {
        rc = emb_error_set(err, -errno, "%s: fsync: %s", w->tmp_path, strerror(errno));
        goto fail_unlink;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = emb_error_set(err, -errno, "%s: close: %s", w->tmp_path, strerror(errno));
        goto fail_unlink;
    }
    fd = -1;
    if (rename(w->tmp_path, w->path) != 0) {
        rc = emb_error_set(err, -errno, "rename %s -> %s: %s", w->tmp_path, w->path,
                           strerror(errno));
        goto fail_unlink;
    }
    int dfd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); /* makes the rename durable; failure here cannot be undone, so not fatal */
        close(dfd);
    }
    writer_free(w);
    return 0;

fail_unlink:
    if (fd >= 0)
        close(fd);
    unlink(w->tmp_path);
fail:
    writer_free(w);
    return rc;
}

void emb_writer_abort(emb_writer *w)
{
    if (w)
        writer_free(w);
}
