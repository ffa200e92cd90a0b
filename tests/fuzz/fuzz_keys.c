/*
 * fuzz_keys.c - the key index: the writer builds it (lib/writer.c), emb_store_find reads it
 * (lib/store.c).
 *
 * The input is a list of keys, one per line (a final line without '\n' counts; a '\r' stays in
 * its key). Each key becomes a row of a small f16 store written with emb_writer into a scratch
 * directory; the store is opened and verified, and then every key and two near misses of each
 * (one byte more, one byte fewer) are looked up.
 *
 * Properties: a key longer than EMB_MAX_KEY is refused with EMB_ERANGE and the others are
 * written; the store verifies; the writer's duplicate count is the number of keys seen before;
 * a lookup finds a string exactly when it is a key, and then at the first row holding it.
 */
#include <stdlib.h>
#include <string.h>

#include "emb.h"
#include "emb_kernels.h"
#include "fuzz.h"

#define MAX_KEYS 256u
#define DIM      4u

typedef struct key {
    const char *p;
    size_t len;
    uint64_t row; /* the row it was written to */
} key;

/* Orders keys by length, then bytes, then row: equal keys sit together, first row first. */
static int key_cmp(const void *a, const void *b)
{
    const key *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    int c = memcmp(x->p, y->p, x->len);
    if (c)
        return c;
    return x->row < y->row ? -1 : x->row > y->row;
}

/* The first row holding [p, p + len) among n keys sorted by key_cmp, or UINT64_MAX. */
static uint64_t first_index(const key *sorted, size_t n, const char *p, size_t len)
{
    size_t lo = 0, hi = n;
    key probe = {p, len, 0};
    while (lo < hi) { /* the first position not below probe */
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(&sorted[mid], &probe) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < n && sorted[lo].len == len && !memcmp(sorted[lo].p, p, len))
        return sorted[lo].row;
    return UINT64_MAX;
}

static void check_lookup(const emb_store *s, const key *sorted, size_t n, const char *p, size_t len)
{
    uint64_t id = UINT64_MAX, want = first_index(sorted, n, p, len);
    int rc = emb_store_find(s, p, len, &id);
    if (want == UINT64_MAX) {
        FUZZ_CHECK(rc == EMB_ENOTFOUND, "a string that is no key: find %d (row %llu)", rc,
                   (unsigned long long)id);
        return;
    }
    FUZZ_CHECK(rc == 0, "key of row %llu (%zu bytes) not found: %d", (unsigned long long)want, len,
               rc);
    FUZZ_CHECK(id == want, "key found at row %llu, first held by row %llu", (unsigned long long)id,
               (unsigned long long)want);
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
    static char path[600];
    if (!path[0])
        snprintf(path, sizeof path, "%s/keys.emb", fuzz_tmpdir());
    key keys[MAX_KEYS];
    size_t n = 0;
    const char *p = (const char *)data, *end = p + size;
    while (p < end && n < MAX_KEYS) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        keys[n].p = p;
        keys[n].len = (size_t)(e - p);
        keys[n].row = n;
        n++;
        p = nl ? nl + 1 : end;
    }
    if (n == 0)
        return 0;

    emb_writer_opts o = {.dim = DIM, .codecs = EMB_CODEC_F16, .metric = EMB_METRIC_COS, .keys = 1};
    emb_writer *w = NULL;
    emb_error err = {0};
    FUZZ_CHECK(emb_writer_open(&w, path, &o, &err) == 0, "writer: %s", err.msg);
    key kept[MAX_KEYS], sorted[MAX_KEYS];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        float v[DIM] = {(float)(i + 1), -(float)(i % 3), 0.5f, (float)(i % 2)};
        int rc = emb_writer_add(w, v, NULL, keys[i].p, keys[i].len, &err);
        if (keys[i].len > EMB_MAX_KEY) {
            FUZZ_CHECK(rc == EMB_ERANGE, "a key of %zu bytes: add returned %d", keys[i].len, rc);
            continue;
        }
        FUZZ_CHECK(rc == 0, "add key %zu: %s", i, err.msg);
        kept[m] = keys[i];
        kept[m].row = m;
        m++;
    }
    if (m == 0) {
        emb_writer_abort(w);
        return 0;
    }
    memcpy(sorted, kept, m * sizeof *kept);
    qsort(sorted, m, sizeof *sorted, key_cmp);
    uint64_t dups = 0; /* keys equal to the one before them in sorted order */
    for (size_t i = 1; i < m; i++)
        dups += sorted[i].len == sorted[i - 1].len &&
                !memcmp(sorted[i].p, sorted[i - 1].p, sorted[i].len);
    FUZZ_CHECK(emb_writer_index_keys(w, &err) == 0, "index: %s", err.msg);
    FUZZ_CHECK(emb_writer_duplicate_keys(w) == dups, "writer counts %llu duplicates, not %llu",
               (unsigned long long)emb_writer_duplicate_keys(w), (unsigned long long)dups);
    FUZZ_CHECK(emb_writer_finish(w, NULL, 0, &err) == 0, "finish: %s", err.msg);

    emb_store *s = NULL;
    FUZZ_CHECK(emb_store_open(&s, path, &err) == 0, "open: %s", err.msg);
    FUZZ_CHECK(s->rows == m && s->key_offs, "rows %llu of %zu keys", (unsigned long long)s->rows,
               m);
    FUZZ_CHECK(emb_store_verify(s, &err) == 0, "verify: %s", err.msg);
    char probe[EMB_MAX_KEY + 1];
    for (size_t i = 0; i < m; i++) {
        const char *k;
        size_t len;
        FUZZ_CHECK(emb_store_key(s, i, &k, &len) == 0 && len == kept[i].len &&
                       !memcmp(k, kept[i].p, len),
                   "row %zu does not hold its key", i);
        check_lookup(s, sorted, m, kept[i].p, kept[i].len);
        memcpy(probe, kept[i].p, kept[i].len);
        probe[kept[i].len] = (char)(kept[(i + 1) % m].len ? kept[(i + 1) % m].p[0] : 'x');
        check_lookup(s, sorted, m, probe, kept[i].len + 1);
        if (kept[i].len)
            check_lookup(s, sorted, m, kept[i].p, kept[i].len - 1);
    }
    emb_store_close(s);
    return 0;
}
