/*
 * fuzz_api.c - request decoding of every endpoint of embd serve: the path router and the Accept
 * parser of server/http.c, then srv_api_handle (server/api.c) with its jansson decoding, and the
 * worker job when the request makes one, run inline. libmicrohttpd itself is not fuzzed: the
 * input stands for what it hands over.
 *
 * The input is a request in HTTP/1.1's shape, so seeds read like requests and the dictionary's
 * members and routes combine:
 *
 *     POST /v1/tables/t/search?encoding=base64&dtype=f16
 *     Content-Type: application/json
 *     Accept: application/octet-stream
 *
 *     {"key": "apple", "k": 5}
 *
 * The first line is the method and the target (path, then an optional query whose first
 * "encoding" and "dtype" values count, undecoded as the server leaves them); header lines up to
 * an empty line (Content-Type and Accept are used); the rest is the body, NUL bytes included.
 * Three tables are served, written at start-up into a scratch directory: "t" (dim 8, f16+q1,
 * keys), "f" (dim 3, f32, no keys, l2) and "q" (dim 130, q1 only, keys, dot).
 *
 * Properties: the status is one the contract lists for a decoded request (200, 400, 404, 415,
 * 422; never 500); JSON answers parse (jansson) and problems carry their status and a known
 * problem type; a binary gather has its 16-byte header and exactly count x dim values; search
 * hits are distinct, and their scores match the metric recomputed here (check_scores); rows,
 * keys and gathered or pooled vectors are the table's (check_values).
 */
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "emb_kernels.h"
#include "fuzz.h"
#include "http.h"
#include "jsonw.h"
#include "metrics.h"

static srv_config cfg;
static int verbose; /* EMBD_FUZZ_VERBOSE set: print each answer (for reading a reproduction) */

static void write_store(const char *dir, const char *name, uint32_t dim, uint32_t codecs,
                        emb_metric metric, uint32_t rows, int keys, const char *meta)
{
    static const char *const words[] = {"apple", "banana", "cherry", "a/b",   "caf\xc3\xa9",
                                        "x y",   "%41",    "",       "apple", "\"q\"\\"};
    char path[700];
    snprintf(path, sizeof path, "%s/%s.emb", dir, name);
    emb_writer_opts o = {
        .dim = dim, .codecs = codecs, .metric = metric, .keys = keys, .q1_interleave = 1};
    emb_writer *w;
    emb_error err = {0};
    FUZZ_CHECK(emb_writer_open(&w, path, &o, &err) == 0, "writer: %s", err.msg);
    float *v = malloc(dim * sizeof *v);
    FUZZ_CHECK(v != NULL, "out of memory");
    for (uint32_t i = 0; i < rows; i++) {
        for (uint32_t j = 0; j < dim; j++)
            v[j] = sinf((float)(i * 7 + j * 3 + 1)) * (float)(1 + i % 3);
        char key[32];
        if (i < sizeof words / sizeof words[0])
            snprintf(key, sizeof key, "%s", words[i]);
        else
            snprintf(key, sizeof key, "%s%u", name, i);
        FUZZ_CHECK(emb_writer_add(w, v, NULL, keys ? key : NULL, keys ? strlen(key) : 0, &err) == 0,
                   "add: %s", err.msg);
    }
    free(v);
    FUZZ_CHECK(emb_writer_finish(w, meta, meta ? strlen(meta) : 0, &err) == 0, "finish: %s",
               err.msg);
    static char *args[8];
    static int n;
    char arg[800];
    snprintf(arg, sizeof arg, "%s=%s", name, path);
    args[n] = strdup(arg);
    FUZZ_CHECK(args[n] != NULL, "out of memory");
    cfg.stores = args;
    cfg.n_stores = ++n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    emb_kernels_init(NULL);
    verbose = getenv("EMBD_FUZZ_VERBOSE") != NULL;
    json_object_seed(1);
    srv_log_init(1, SRV_LOG_ERROR);
    srv_metrics_init(EMB_VERSION_STRING, emb_kernels_get()->name);
    cfg.max_body = 1u << 20;
    cfg.max_batch = 32;
    cfg.max_k = 50;
    cfg.timeout = 30;
    const char *dir = fuzz_tmpdir();
    write_store(dir, "t", 8, EMB_CODEC_F16 | EMB_CODEC_Q1, EMB_METRIC_COS, 40, 1,
                "{\"oversample_default\": 4, \"source\": {\"format\": \"npy\"}}");
    write_store(dir, "f", 3, EMB_CODEC_F32, EMB_METRIC_L2, 10, 0, NULL);
    write_store(dir, "q", 130, EMB_CODEC_Q1, EMB_METRIC_DOT, 6, 1, "[1]");
    FUZZ_CHECK(srv_tables_open(&cfg) == 0, "cannot open the tables");
    return 0;
}

/* Splits off the line at *p (without "\r\n"); returns it NUL-terminated, or NULL at the end. */
static char *next_line(char **p, char *end)
{
    if (*p >= end)
        return NULL;
    char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
    char *e = nl ? nl : end;
    *p = nl ? nl + 1 : end;
    if (e > s && e[-1] == '\r')
        e--;
    *e = 0;
    return s;
}

/* Sets *encoding and *dtype to the first value of each in the query string q ("a=1&b=2"),
 * leaving them as they are when absent; q is split in place. */
static void query_args(char *q, const char **encoding, const char **dtype)
{
    while (q && *q) {
        char *amp = strchr(q, '&');
        if (amp)
            *amp = 0;
        char *eq = strchr(q, '=');
        if (eq) {
            *eq = 0;
            if (!strcmp(q, "encoding") && !*encoding)
                *encoding = eq + 1;
            else if (!strcmp(q, "dtype") && !*dtype)
                *dtype = eq + 1;
        }
        q = amp ? amp + 1 : NULL;
    }
}

/* The hits of a search answer: ids distinct per list; a cosine is a number in [-1, 1] (with
 * rounding room), an l2 distance a number >= 0 or null, a dot product a number or null (null
 * only when it overflows float32, as the contract says). */
static void check_hits(json_t *hits, const char *metric)
{
    FUZZ_CHECK(json_is_array(hits), "hits are not an array");
    size_t i;
    json_t *h;
    json_array_foreach(hits, i, h)
    {
        json_t *score = json_object_get(h, "score");
        if (!strcmp(metric, "cos"))
            FUZZ_CHECK(json_is_number(score) && fabs(json_number_value(score)) <= 1.001,
                       "cosine score %s is not in [-1, 1]",
                       json_is_number(score) ? "out of range" : "not a number");
        else if (!strcmp(metric, "l2"))
            FUZZ_CHECK(json_is_null(score) ||
                           (json_is_number(score) && json_number_value(score) >= 0),
                       "l2 distance below 0 or not a number");
        else
            FUZZ_CHECK(json_is_null(score) || json_is_number(score), "dot score not a number");
        for (size_t k = 0; k < i; k++)
            FUZZ_CHECK(!json_equal(json_object_get(json_array_get(hits, k), "id"),
                                   json_object_get(h, "id")),
                       "an id appears twice among the hits");
    }
}

static void check_reply(const srv_reply *r, uint32_t gather_dim)
{
    unsigned st = r->status;
    if (verbose)
        fprintf(stderr, "-> %u %s: %.*s\n", st, r->content_type ? r->content_type : "(none)",
                (int)(r->len > 300 ? 300 : r->len), r->body ? r->body : "");
    /* 413: a body with more JSON values than any valid request (srv_api_handle counts them). */
    FUZZ_CHECK(st == 200 || st == 400 || st == 404 || st == 413 || st == 415 || st == 422,
               "status %u: %.*s", st, (int)(r->len > 400 ? 400 : r->len), r->body ? r->body : "");
    FUZZ_CHECK(st != 413 || strstr(r->body, "urn:embd:problem:body-too-large"),
               "413 of another type: %.*s", (int)(r->len > 400 ? 400 : r->len), r->body);
    FUZZ_CHECK(r->content_type && r->body && r->len > 0, "status %u without a body", st);
    if (!strcmp(r->content_type, "application/octet-stream")) {
        FUZZ_CHECK(r->len >= 16 && !memcmp(r->body, "EMBG", 4), "binary gather header");
        uint32_t hdr[3];
        memcpy(hdr, r->body + 4, sizeof hdr);
        FUZZ_CHECK(hdr[1] == gather_dim && hdr[2] <= 1, "binary gather dim %u dtype %u", hdr[1],
                   hdr[2]);
        FUZZ_CHECK(r->len == 16 + (size_t)hdr[0] * hdr[1] * (hdr[2] ? 2 : 4),
                   "binary gather of %zu bytes for %u rows", r->len, hdr[0]);
        return;
    }
    int problem = !strcmp(r->content_type, "application/problem+json");
    if (!problem && strcmp(r->content_type, "application/json"))
        return; /* the spec (yaml) and metrics (text) */
    json_error_t e;
    json_t *j = json_loadb(r->body, r->len, 0, &e);
    FUZZ_CHECK(j != NULL, "status %u: invalid JSON (%s): %.*s", st, e.text,
               (int)(r->len > 400 ? 400 : r->len), r->body);
    FUZZ_CHECK(json_is_object(j), "status %u: the answer is not an object", st);
    FUZZ_CHECK(problem == (st != 200), "status %u with content type %s", st, r->content_type);
    if (problem) {
        json_t *status = json_object_get(j, "status"), *type = json_object_get(j, "type"),
               *title = json_object_get(j, "title");
        FUZZ_CHECK(json_is_integer(status) && json_integer_value(status) == st,
                   "problem status differs from %u", st);
        FUZZ_CHECK(json_is_string(type) &&
                       !strncmp(json_string_value(type), "urn:embd:problem:", 17),
                   "problem type");
        FUZZ_CHECK(json_is_string(title) && strcmp(json_string_value(title), "Error"),
                   "problem type %s has no title: not a type the contract lists",
                   json_string_value(type));
    }
    json_t *results = json_object_get(j, "results"), *metric = json_object_get(j, "metric");
    if (!problem && results) {
        FUZZ_CHECK(json_is_array(results) && json_is_string(metric), "search answer shape");
        json_t *first = json_array_get(results, 0);
        if (first && json_is_array(first)) { /* a batch: one list per query */
            size_t i;
            json_t *list;
            json_array_foreach(results, i, list) check_hits(list, json_string_value(metric));
        } else {
            check_hits(results, json_string_value(metric));
        }
    }
    json_decref(j);
}

/* Checks each hit's score against the metric computed here in double precision from the
 * query as the server read it ((float) of each JSON number) and the row as served
 * (emb_store_row): a cosine within 1e-3 always (it is bounded, whatever the magnitudes); a dot
 * product within 1e-4 x |q| |r| whenever no float32 partial sum can overflow (sum |q_j r_j| <
 * FLT_MAX / 2), where null is allowed; an l2 distance whose square is within 1e-4 x (|q|^2 +
 * |r|^2) whenever |q|^2 + |r|^2 < FLT_MAX / 2. hits is one list, query its dim floats. */
static void check_scores(const emb_store *s, json_t *hits, const char *metric, const float *query)
{
    float *row = malloc((size_t)s->dim * sizeof *row);
    FUZZ_CHECK(row != NULL, "out of memory");
    size_t i;
    json_t *h;
    json_array_foreach(hits, i, h)
    {
        json_t *idj = json_object_get(h, "id"), *score = json_object_get(h, "score");
        FUZZ_CHECK(json_is_integer(idj) &&
                       emb_store_row(s, (uint64_t)json_integer_value(idj), row) == 0,
                   "hit id is not a row");
        double dot = 0, qn2 = 0, rn2 = 0, d2 = 0, abs_dot = 0;
        for (uint32_t j = 0; j < s->dim; j++) {
            dot += (double)query[j] * row[j];
            abs_dot += fabs((double)query[j] * row[j]);
            qn2 += (double)query[j] * query[j];
            rn2 += (double)row[j] * row[j];
            d2 += ((double)query[j] - row[j]) * ((double)query[j] - row[j]);
        }
        double got = json_is_number(score) ? json_number_value(score) : NAN;
        if (!strcmp(metric, "cos")) {
            double want = qn2 > 0 && rn2 > 0 ? dot / sqrt(qn2) / sqrt(rn2) : 0;
            FUZZ_CHECK(fabs(got - want) <= 1e-3, "row %lld: cosine %g, computed %g",
                       (long long)json_integer_value(idj), got, want);
        } else if (!strcmp(metric, "dot")) {
            if (abs_dot < FLT_MAX * 0.5) /* float32 partial sums cannot overflow */
                FUZZ_CHECK(fabs(got - dot) <= 1e-4 * sqrt(qn2) * sqrt(rn2) + 1e-6,
                           "row %lld: dot %g, computed %g", (long long)json_integer_value(idj), got,
                           dot);
        } else if (qn2 + rn2 < FLT_MAX * 0.5) {
            FUZZ_CHECK(fabs(got * got - d2) <= 1e-4 * (qn2 + rn2) + 1e-6,
                       "row %lld: l2 %g, computed %g", (long long)json_integer_value(idj), got,
                       sqrt(d2));
        }
    }
    free(row);
}

/* For a 200 search answer to a query given as JSON numbers ("vector" or "vectors"), or by "id" or
 * "key" (the query is that row), checks the scores (check_scores). Queries by ids, keys (pooled) or
 * base64 are checked for shape only. */
static void check_search_scores(const srv_api_request *q, const srv_reply *r)
{
    if (r->status != 200 || q->route != SRV_ROUTE_SEARCH)
        return;
    json_t *req = json_loadb(q->body, q->body_len, JSON_REJECT_DUPLICATES, NULL);
    json_t *ans = json_loadb(r->body, r->len, 0, NULL);
    srv_table *t = srv_table_get(q->table, q->table_len);
    FUZZ_CHECK(req && ans && t, "a 200 search without its request, answer or table");
    const emb_store *s = t->store;
    json_t *enc = json_object_get(req, "encoding");
    json_t *one = json_object_get(req, "vector"), *many = json_object_get(req, "vectors");
    const char *metric = json_string_value(json_object_get(ans, "metric"));
    json_t *results = json_object_get(ans, "results");
    float *query = malloc((size_t)s->dim * sizeof *query);
    FUZZ_CHECK(query != NULL, "out of memory");
    json_t *idq = json_object_get(req, "id"), *keyq = json_object_get(req, "key");
    uint64_t self = UINT64_MAX;
    if (json_is_integer(idq))
        self = (uint64_t)json_integer_value(idq);
    else if (json_is_string(keyq))
        FUZZ_CHECK(emb_store_find(s, json_string_value(keyq), json_string_length(keyq), &self) == 0,
                   "a 200 search by a key the table does not find");
    if (self != UINT64_MAX) { /* the query is that row */
        FUZZ_CHECK(emb_store_row(s, self, query) == 0, "a 200 search by row %llu of %llu",
                   (unsigned long long)self, (unsigned long long)s->rows);
        check_scores(s, results, metric, query);
        one = many = NULL;
    }
    int numbers = !enc || (json_is_string(enc) && !strcmp(json_string_value(enc), "json"));
    for (size_t n = 0; numbers; n++) {
        json_t *v = one ? (n ? NULL : one) : json_array_get(many, n);
        if (!json_is_array(v))
            break;
        for (uint32_t j = 0; j < s->dim; j++)
            query[j] = (float)json_number_value(json_array_get(v, j));
        check_scores(s, one ? results : json_array_get(results, n), metric, query);
    }
    free(query);
    srv_table_put(t);
    json_decref(req);
    json_decref(ans);
}

/* Checks served values got[dim] against want[dim]: the f16 of want exactly (f16 output, tol 0),
 * else within tol x scale[j] (pooled vectors, summed in another order), a value beyond f16's
 * range being an infinity of its sign in f16 output. */
static void compare_vector(const float *got, const float *want, uint32_t dim, int f16, double tol,
                           const double *scale)
{
    if (f16 && tol == 0) { /* the served f16 text is the f16 of the row */
        uint16_t *h = malloc((size_t)dim * 2);
        float *w16 = malloc((size_t)dim * sizeof *w16);
        FUZZ_CHECK(h && w16, "out of memory");
        emb_kernels_get()->f32_to_f16(want, h, dim);
        emb_kernels_get()->f16_to_f32(h, w16, dim);
        for (uint32_t j = 0; j < dim; j++)
            FUZZ_CHECK(got[j] == w16[j], "f16 value %u: %g, want %g", j, got[j], w16[j]);
        free(h);
        free(w16);
        return;
    }
    for (uint32_t j = 0; j < dim; j++) {
        double slack = tol * (scale ? scale[j] : 0) + (f16 ? fabs(want[j]) * 1e-3 + 1e-7 : 0);
        /* The contract: a value beyond float16's range is an infinity in f16 output. */
        if (f16 && fabs(want[j]) > 65000 && isinf(got[j]) && (got[j] > 0) == (want[j] > 0))
            continue;
        FUZZ_CHECK(fabs((double)got[j] - want[j]) <= slack, "value %u: %.9g, want %.9g", j, got[j],
                   want[j]);
    }
}

/* Checks a served vector v against want[dim]: JSON numbers that read back to exactly want, or
 * base64 of want's f32 bytes or of its f16 conversion (see compare_vector for tol). */
static void check_vector(json_t *v, const float *want, uint32_t dim, int b64, int f16, double tol,
                         const double *scale)
{
    float *got = malloc((size_t)dim * sizeof *got);
    FUZZ_CHECK(got != NULL, "out of memory");
    if (!b64) {
        FUZZ_CHECK(json_is_array(v) && json_array_size(v) == dim, "a vector is not %u numbers",
                   dim);
        for (uint32_t j = 0; j < dim; j++) {
            json_t *x = json_array_get(v, j);
            FUZZ_CHECK(json_is_number(x), "vector value %u is not a number", j);
            got[j] = (float)json_number_value(x);
        }
    } else {
        FUZZ_CHECK(json_is_string(v), "a base64 vector is not a string");
        size_t len = json_string_length(v), esz = f16 ? 2 : 4;
        uint8_t *bytes = malloc(len / 4 * 3 + 4);
        FUZZ_CHECK(bytes != NULL, "out of memory");
        long n = srv_base64_decode(json_string_value(v), len, bytes);
        FUZZ_CHECK(n == (long)(dim * esz), "base64 vector of %ld bytes, not %zu", n, dim * esz);
        if (f16)
            emb_kernels_get()->f16_to_f32((const uint16_t *)bytes, got, dim);
        else
            memcpy(got, bytes, (size_t)dim * 4);
        free(bytes);
    }
    compare_vector(got, want, dim, f16, tol, scale);
    free(got);
}

/* The row a reference names (an integer id, or a key looked up), or UINT64_MAX when the table
 * has no such row. */
static uint64_t resolve(const emb_store *s, json_t *ref)
{
    uint64_t id;
    if (json_is_integer(ref))
        return (uint64_t)json_integer_value(ref) < s->rows ? (uint64_t)json_integer_value(ref)
                                                           : UINT64_MAX;
    if (json_is_string(ref) &&
        emb_store_find(s, json_string_value(ref), json_string_length(ref), &id) == 0)
        return id;
    return UINT64_MAX;
}

/* GET rows/{id} and keys/{key}: the id, the key and the vector served are the row's. */
static void check_row(const srv_api_request *q, const emb_store *s, json_t *ans)
{
    int b64 = q->encoding && !strcmp(q->encoding, "base64");
    int f16 = b64 && q->dtype && !strcmp(q->dtype, "f16");
    json_t *idj = json_object_get(ans, "id");
    FUZZ_CHECK(json_is_integer(idj), "a row answer without an id");
    uint64_t id = (uint64_t)json_integer_value(idj), found;
    if (q->route == SRV_ROUTE_ROW) { /* decimal digits, leading zeros allowed */
        uint64_t asked = 0;
        for (size_t i = 0; i < q->item_len; i++) {
            FUZZ_CHECK(q->item[i] >= '0' && q->item[i] <= '9', "row '%.*s' answered 200",
                       (int)q->item_len, q->item);
            asked = asked * 10 + (uint64_t)(q->item[i] - '0');
        }
        FUZZ_CHECK(asked == id, "asked for row '%.*s', got %llu", (int)q->item_len, q->item,
                   (unsigned long long)id);
    } else {
        FUZZ_CHECK(emb_store_find(s, q->item, q->item_len, &found) == 0 && found == id,
                   "the key's row is not %llu", (unsigned long long)id);
    }
    const char *k;
    size_t klen;
    json_t *key = json_object_get(ans, "key");
    if (emb_store_key(s, id, &k, &klen) == 0)
        FUZZ_CHECK(json_is_string(key) && json_string_length(key) == klen &&
                       !memcmp(json_string_value(key), k, klen),
                   "row %llu is served with another key", (unsigned long long)id);
    else
        FUZZ_CHECK(json_is_null(key), "a key for a row without one");
    float *row = malloc((size_t)s->dim * sizeof *row);
    FUZZ_CHECK(row && emb_store_row(s, id, row) == 0, "row %llu", (unsigned long long)id);
    check_vector(json_object_get(ans, "vector"), row, s->dim, b64, f16, 0, NULL);
    free(row);
}

/* POST gather: each position holds its row (or null when missing, listed in "missing"); a
 * pooled vector is the (weighted) sum or mean of the rows found; the binary form holds the same
 * values after its header, zeros where a row is missing. */
static void check_gather(const emb_store *s, json_t *req, const srv_reply *r, json_t *ans)
{
    json_t *refs = json_object_get(req, "ids");
    if (!refs)
        refs = json_object_get(req, "keys");
    const char *pool = json_string_value(json_object_get(req, "pool"));
    const char *enc = json_string_value(json_object_get(req, "encoding"));
    const char *dtype = json_string_value(json_object_get(req, "dtype"));
    json_t *weights = json_object_get(req, "weights");
    int b64 = enc && !strcmp(enc, "base64"), f16 = b64 && dtype && !strcmp(dtype, "f16");
    int binary = !strcmp(r->content_type, "application/octet-stream");
    size_t n = json_array_size(refs), found = 0, missing = 0;
    uint32_t dim = s->dim;
    float *row = malloc((size_t)dim * sizeof *row), *want = malloc((size_t)dim * sizeof *want);
    double *acc = calloc(dim, sizeof *acc), *scale = calloc(dim, sizeof *scale), wsum = 0;
    FUZZ_CHECK(row && want && acc && scale, "out of memory");
    json_t *vectors = json_object_get(ans, "vectors"), *miss = json_object_get(ans, "missing");
    if (!binary && !pool)
        FUZZ_CHECK(json_array_size(vectors) == n, "%zu vectors for %zu references",
                   json_array_size(vectors), n);
    for (size_t i = 0; i < n; i++) {
        uint64_t id = resolve(s, json_array_get(refs, i));
        if (id == UINT64_MAX) {
            if (!binary)
                FUZZ_CHECK(json_integer_value(json_array_get(miss, missing)) == (json_int_t)i,
                           "position %zu is missing but not listed", i);
            missing++;
            if (!binary && !pool)
                FUZZ_CHECK(json_is_null(json_array_get(vectors, i)), "missing %zu not null", i);
            continue;
        }
        FUZZ_CHECK(emb_store_row(s, id, row) == 0, "row %llu", (unsigned long long)id);
        found++;
        double w = weights ? (float)json_number_value(json_array_get(weights, i)) : 1.0;
        wsum += w;
        for (uint32_t j = 0; j < dim; j++) {
            acc[j] += w * row[j];
            scale[j] += fabs(w * row[j]);
        }
        if (!pool && !binary)
            check_vector(json_array_get(vectors, i), row, dim, b64, f16, 0, NULL);
        if (!pool && binary) {
            const char *at = r->body + 16 + i * dim * (f16 ? 2 : 4);
            if (f16) {
                uint16_t *h = malloc((size_t)dim * 2);
                FUZZ_CHECK(h != NULL, "out of memory");
                emb_kernels_get()->f32_to_f16(row, h, dim);
                FUZZ_CHECK(!memcmp(at, h, (size_t)dim * 2), "binary f16 row %zu differs", i);
                free(h);
            } else {
                FUZZ_CHECK(!memcmp(at, row, (size_t)dim * 4), "binary row %zu differs", i);
            }
        }
    }
    if (!binary)
        FUZZ_CHECK(json_array_size(miss) == missing, "%zu missing listed, %zu missing",
                   json_array_size(miss), missing);
    if (pool && found) {
        int mean = !strcmp(pool, "mean");
        for (uint32_t j = 0; j < dim; j++) {
            want[j] = (float)(mean ? acc[j] / wsum : acc[j]);
            if (mean)
                scale[j] /= fabs(wsum);
        }
        if (binary) {
            /* The values as floats (through JSON they could not be: jansson has no infinity,
             * and a pooled sum past f16's range is one in f16 output). */
            float *got = malloc((size_t)dim * sizeof *got);
            FUZZ_CHECK(got != NULL, "out of memory");
            if (f16)
                emb_kernels_get()->f16_to_f32((const uint16_t *)(const void *)(r->body + 16), got,
                                              dim);
            else
                memcpy(got, r->body + 16, (size_t)dim * 4);
            compare_vector(got, want, dim, f16, 1e-6, scale);
            free(got);
        } else {
            check_vector(json_object_get(ans, "vector"), want, dim, b64, f16, 1e-6, scale);
        }
    } else if (pool && !binary) {
        FUZZ_CHECK(json_is_null(json_object_get(ans, "vector")), "a pool of no rows not null");
    }
    free(row);
    free(want);
    free(acc);
    free(scale);
}

/* Checks the values of 200 answers to row, key and gather requests against the table. */
static void check_values(const srv_api_request *q, const srv_reply *r)
{
    if (r->status != 200 ||
        (q->route != SRV_ROUTE_ROW && q->route != SRV_ROUTE_KEY && q->route != SRV_ROUTE_GATHER))
        return;
    srv_table *t = srv_table_get(q->table, q->table_len);
    FUZZ_CHECK(t != NULL, "a 200 answer from no table");
    int binary = !strcmp(r->content_type, "application/octet-stream");
    json_t *ans = binary ? json_object() : json_loadb(r->body, r->len, 0, NULL);
    FUZZ_CHECK(ans != NULL, "a 200 answer that is not JSON");
    if (q->route == SRV_ROUTE_GATHER) {
        json_t *req = json_loadb(q->body, q->body_len, JSON_REJECT_DUPLICATES, NULL);
        FUZZ_CHECK(req != NULL, "a 200 gather without a request");
        check_gather(t->store, req, r, ans);
        json_decref(req);
    } else {
        check_row(q, t->store, ans);
    }
    json_decref(ans);
    srv_table_put(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    FUZZ_CHECK(buf != NULL, "out of memory");
    memcpy(buf, data, size);
    buf[size] = 0;
    char *p = buf, *end = buf + size;
    char *line = next_line(&p, end);
    if (!line) {
        free(buf);
        return 0;
    }
    char *sp = strchr(line, ' ');
    const char *method = line, *target = "/";
    if (sp) {
        *sp = 0;
        target = sp + 1;
    }
    const char *content_type = NULL, *accept = NULL;
    while ((line = next_line(&p, end)) && *line) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        *colon = 0;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (!strcasecmp(line, "Content-Type"))
            content_type = v;
        else if (!strcasecmp(line, "Accept"))
            accept = v;
    }
    /* The path in its own exact-size buffer, so ASan sees any read past it. */
    size_t plen = strcspn(target, "?");
    char *path = malloc(plen + 1);
    FUZZ_CHECK(path != NULL, "out of memory");
    memcpy(path, target, plen);
    path[plen] = 0;
    srv_api_request q = {0};
    if (target[plen] == '?')
        query_args((char *)target + plen + 1, &q.encoding, &q.dtype);
    srv_route route = SRV_ROUTE_OTHER;
    if (srv_http_route(path, &route, &q) != 0)
        goto out; /* 400 bad-framing in http.c */
    q.route = route;
    q.method = method;
    q.content_type = content_type;
    q.accept_binary = srv_http_accepts_binary(accept);
    q.body = p < end ? p : "";
    q.body_len = p < end ? (size_t)(end - p) : 0;

    uint32_t dim = 0;
    if (q.table) {
        srv_table *t = srv_table_get(q.table, q.table_len);
        if (t) {
            dim = t->store->dim;
            srv_table_put(t);
        }
    }
    srv_reply reply = {0};
    srv_api_job *job = NULL;
    int rc = srv_api_handle(&cfg, &q, &reply, &job);
    if (rc == 0) {
        FUZZ_CHECK(job == NULL, "a reply and a job");
        check_reply(&reply, dim);
        check_values(&q, &reply);
        srv_reply_free(&reply);
    } else {
        FUZZ_CHECK(rc == 1 && job != NULL, "srv_api_handle returned %d", rc);
        srv_job *done = NULL;
        if (job->n_parts) {
            for (uint32_t i = 0; i < job->n_parts; i++) {
                srv_job *d = job->parts[i]->run(job->parts[i]);
                FUZZ_CHECK(!d || d == &job->base, "a part handed back another job");
                if (d)
                    done = d;
            }
        } else {
            done = job->base.run(&job->base);
        }
        FUZZ_CHECK(done == &job->base, "the job was not handed back");
        check_reply(&job->reply, dim);
        check_values(&q, &job->reply);
        check_search_scores(&q, &job->reply);
        srv_api_job_free(job);
        srv_api_thread_exit();
    }
out:
    free(path);
    free(buf);
    return 0;
}
