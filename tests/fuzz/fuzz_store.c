/*
 * fuzz_store.c - store open, validate and verify (lib/store.c), then what a server does with a
 * store that opened: rows, keys, key lookups, the metadata's oversample and searches.
 *
 * The input is a store file. A random mutation almost never keeps the header CRC right, which
 * would stop every input at that check; so before opening, the target rewrites file_size to the
 * input's size, every in-bounds section CRC and then the header CRC, unless bit 15 of
 * version_minor is set (any minor of major 1 is accepted, so that bit is free): then the input
 * is opened untouched and the size and CRC checks themselves are fuzzed. A valid store is left
 * as it is by the rewrite.
 *
 * Properties: a refused store comes with a message; after a successful open every row of every
 * codec decodes, keys and lookups answer within the mapping, emb_store_row refuses id rows,
 * searches return at most k distinct ids below rows; after a successful verify, additionally,
 * every primary row is finite and every key is found by the index at its own row or an earlier
 * row with the same key.
 */
#include <math.h>
#include <string.h>

#include "emb.h"
#include "emb_kernels.h"
#include "fuzz.h"
#include "store_internal.h"

#define MAX_ROWS_READ 64u
#define SEARCH_K      5u
#define OVERSAMPLE    4u

static void fix_up(uint8_t *buf, size_t size)
{
    emb_header h;
    if (size < sizeof h)
        return;
    memcpy(&h, buf, sizeof h);
    if (h.version_minor & 0x8000u)
        return;
    h.file_size = size;
    memcpy(buf, &h, sizeof h);
    uint32_t count = h.section_count < EMB_MAX_SECTIONS ? h.section_count : EMB_MAX_SECTIONS;
    for (uint32_t i = 0; i < count; i++) {
        size_t at = sizeof h + (size_t)i * sizeof(emb_section);
        emb_section e;
        if (at + sizeof e > size)
            break;
        memcpy(&e, buf + at, sizeof e);
        if (e.offset > size || e.length > size - e.offset)
            continue;
        e.crc = emb_crc32c(0, buf + e.offset, (size_t)e.length);
        memcpy(buf + at, &e, sizeof e);
    }
    if (h.header_size >= sizeof h && h.header_size <= size) {
        uint32_t crc = emb__header_crc(buf, h.header_size);
        memcpy(buf + offsetof(emb_header, header_crc), &crc, sizeof crc);
    }
}

/* Row ids worth reading: the first MAX_ROWS_READ and the last. */
static uint64_t row_id(const emb_store *s, uint32_t i)
{
    return i < MAX_ROWS_READ && i < s->rows ? i : s->rows - 1;
}

static void check_rows(const emb_store *s, int verified, float *row)
{
    static const uint32_t codecs[] = {EMB_CODEC_F32, EMB_CODEC_F16, EMB_CODEC_Q1};
    uint32_t primary = emb_store_primary_codec(s);
    FUZZ_CHECK(s->codecs & primary, "primary codec %u not in codecs 0x%x", primary, s->codecs);
    for (uint32_t i = 0; i <= MAX_ROWS_READ; i++) {
        uint64_t id = row_id(s, i);
        FUZZ_CHECK(emb_store_row(s, id, row) == 0, "row %llu of %llu", (unsigned long long)id,
                   (unsigned long long)s->rows);
        if (verified)
            for (uint32_t j = 0; j < s->dim; j++)
                FUZZ_CHECK(isfinite(row[j]), "verified store, row %llu value %u not finite",
                           (unsigned long long)id, j);
        for (size_t c = 0; c < 3; c++)
            if (s->codecs & codecs[c])
                emb__decode_row(s, codecs[c], id, row);
    }
    FUZZ_CHECK(emb_store_row(s, s->rows, row) == EMB_ERANGE, "row %llu = rows is not refused",
               (unsigned long long)s->rows);
}

static void check_keys(const emb_store *s, int verified, const uint8_t *probe, size_t probe_len)
{
    const char *k;
    size_t len;
    uint64_t id;
    if (!s->key_offs) {
        FUZZ_CHECK(emb_store_key(s, 0, &k, &len) == EMB_ENOTFOUND, "key without keys");
        FUZZ_CHECK(emb_store_find(s, "a", 1, &id) == EMB_ENOTFOUND, "find without keys");
        return;
    }
    FUZZ_CHECK(emb_store_key(s, s->rows, &k, &len) == EMB_ERANGE, "key of row rows");
    for (uint32_t i = 0; i <= MAX_ROWS_READ; i++) {
        uint64_t r = row_id(s, i);
        int rc = emb_store_key(s, r, &k, &len);
        FUZZ_CHECK(rc == 0 || rc == EMB_ECORRUPT, "emb_store_key %d", rc);
        if (verified)
            FUZZ_CHECK(rc == 0, "verified store, key of row %llu: %d", (unsigned long long)r, rc);
        if (rc)
            continue;
        FUZZ_CHECK(len <= EMB_MAX_KEY && (const uint8_t *)k >= s->key_blob &&
                       len <= s->key_blob_len - (uint64_t)((const uint8_t *)k - s->key_blob),
                   "key of row %llu outside the blob", (unsigned long long)r);
        rc = emb_store_find(s, k, len, &id);
        FUZZ_CHECK(rc == 0 || rc == EMB_ENOTFOUND || rc == EMB_ECORRUPT, "find %d", rc);
        if (verified) {
            const char *k2;
            size_t len2;
            FUZZ_CHECK(rc == 0 && id <= r && emb_store_key(s, id, &k2, &len2) == 0 && len2 == len &&
                           !memcmp(k, k2, len),
                       "verified store, the key of row %llu is not found at or before it",
                       (unsigned long long)r);
        }
    }
    int rc = emb_store_find(s, (const char *)probe, probe_len, &id);
    FUZZ_CHECK(rc == 0 || rc == EMB_ENOTFOUND || rc == EMB_ECORRUPT, "find %d", rc);
    if (rc == 0) {
        FUZZ_CHECK(id < s->rows, "find returned row %llu of %llu", (unsigned long long)id,
                   (unsigned long long)s->rows);
        FUZZ_CHECK(emb_store_key(s, id, &k, &len) == 0 && len == probe_len &&
                       !memcmp(k, probe, len),
                   "find returned a row with another key");
    }
}

static void check_hits(const emb_store *s, const emb_hit *hits, int n, uint32_t k)
{
    FUZZ_CHECK(n >= 0 && (uint32_t)n <= k, "%d hits for k %u", n, k);
    for (int i = 0; i < n; i++) {
        FUZZ_CHECK(hits[i].id < s->rows, "hit id %llu of %llu rows", (unsigned long long)hits[i].id,
                   (unsigned long long)s->rows);
        for (int j = 0; j < i; j++)
            FUZZ_CHECK(hits[i].id != hits[j].id, "id %llu returned twice",
                       (unsigned long long)hits[i].id);
    }
}

static void check_search(const emb_store *s, float *queries)
{
    emb_scratch *sc = emb_scratch_new(s->dim, SEARCH_K * OVERSAMPLE);
    emb_batch_scratch *bs = emb_batch_scratch_new(s->dim, 2, SEARCH_K * OVERSAMPLE);
    FUZZ_CHECK(sc && bs, "out of memory for scratch");
    emb_store_row(s, 0, queries);
    emb_store_row(s, s->rows - 1, queries + s->dim);
    for (uint32_t j = 0; j < s->dim; j++) /* a finite second query even when the rows are not */
        if (!isfinite(queries[s->dim + j]))
            queries[s->dim + j] = (float)j;
    emb_hit hits[2 * SEARCH_K];
    uint32_t counts[2];
    uint64_t exclude[1] = {0}, self[2] = {UINT64_MAX, 0};
    /* Exact, then each first stage (q1 x q8, x f32, x q1) of the q1 scan. */
    for (int mode = 0; mode < 4; mode++)
        for (int metric = EMB_METRIC_COS; metric <= EMB_METRIC_L2; metric++) {
            emb_search_params p = {.metric = (emb_metric)metric,
                                   .k = SEARCH_K,
                                   .oversample = OVERSAMPLE,
                                   .exact = mode == 3,
                                   .exclude = exclude,
                                   .n_exclude = 1,
                                   .q1_query = mode < 3 ? (emb_q1_query)mode : EMB_Q1_QUERY_Q8};
            int n = emb_search(s, queries, &p, sc, hits);
            if (n != EMB_EINVAL)
                check_hits(s, hits, n, SEARCH_K);
            n = emb_search(s, queries + s->dim, &p, sc, hits);
            check_hits(s, hits, n, SEARCH_K);
            for (int i = 0; i < n; i++)
                FUZZ_CHECK(hits[i].id != 0, "excluded id 0 returned");
            p.exclude = NULL;
            p.n_exclude = 0;
            if (emb_search_batch(s, queries, 2, &p, self, bs, hits, counts) == 0)
                for (int q = 0; q < 2; q++)
                    check_hits(s, hits + q * SEARCH_K, (int)counts[q], SEARCH_K);
        }
    emb_batch_scratch_free(bs);
    emb_scratch_free(sc);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    emb_kernels_init(NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    FUZZ_CHECK(buf != NULL, "out of memory");
    memcpy(buf, data, size);
    fix_up(buf, size);
    const char *path = fuzz_file(buf, size);
    emb_store *s = NULL;
    emb_error err = {0};
    int rc = emb_store_open(&s, path, &err);
    if (rc != 0) {
        FUZZ_CHECK(rc < 0 && err.code == rc && err.msg[0], "open failed (%d) without a message",
                   rc);
        free(buf);
        return 0;
    }
    FUZZ_CHECK(s->rows >= 1 && s->dim >= 1 && s->dim <= EMB_MAX_DIM, "rows %llu dim %u",
               (unsigned long long)s->rows, s->dim);
    uint32_t os = emb_store_default_oversample(s, 7);
    FUZZ_CHECK(os == 7 || (os >= 1 && os <= EMB_MAX_OVERSAMPLE), "oversample %u", os);
    emb_error verr = {0};
    rc = emb_store_verify(s, &verr);
    FUZZ_CHECK(rc == 0 || (verr.code == rc && verr.msg[0]), "verify failed (%d) without message",
               rc);
    int verified = rc == 0;
    float *row = malloc((size_t)s->dim * 2 * sizeof *row);
    FUZZ_CHECK(row != NULL, "out of memory");
    check_rows(s, verified, row);
    size_t probe_len = size < 16 ? size : 16; /* the input's last bytes as a key to look up */
    check_keys(s, verified, data + size - probe_len, probe_len);
    check_search(s, row);
    free(row);
    emb_store_close(s);
    free(buf);
    return 0;
}
