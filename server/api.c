/*
 * api.c - the endpoints of embd serve (the contract is proto/openapi.yaml).
 *
 * Loop thread: routing by srv_route, JSON request decoding with jansson (JSON_REJECT_DUPLICATES,
 * exact body length) into plain C structs, and the cheap answers (health, tables, one row,
 * small gathers). Worker threads: searches and large gathers, encoded with jsonw (never
 * jansson). A job holds a reference to its table, so a reload during the job is harmless.
 *
 * Status codes: 400 malformed JSON or a wrong type; 404 unknown table, id or key; 413 body too
 * large (http.c), or holding more JSON values than any valid request (check_value_count); 415
 * a body that is not application/json; 422 valid JSON with bad values
 * (dimension, k, non-finite numbers, negative or overflowing ids, empty or oversized batches).
 */
#include "api.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emb_kernels.h"
#include "jsonw.h"
#include "jsonutil.h"

extern atomic_int srv_draining;
extern const char srv_openapi_yaml[];
extern const unsigned long srv_openapi_yaml_len;

/* Ids are exact JSON integers: 0..2^53-1 (what every JSON client can hold). */
#define MAX_ID ((UINT64_C(1) << 53) - 1)

#define INLINE_GATHER_VALUES 16384u

/* Candidate slots one search request may hold (16 bytes each: 64 MiB): bounds a worker's
 * scratch whatever the batch size, k and oversample. */
#define MAX_CANDIDATE_SLOTS                                                                        \
    (4u << 20) /* gathers up to this many values are encoded on the loop                           \
                */

/* ---- small helpers ---- */

static void reply_body(srv_reply *r, unsigned status, const char *ctype, char *body, size_t len)
{
    r->status = status;
    r->content_type = ctype;
    r->body = body;
    r->len = len;
}

static void reply_jsonw(srv_reply *r, jsonw *w)
{
    size_t len;
    char *b = jsonw_steal(w, &len);
    if (!b) {
        srv_reply_problem(r, 500, "internal", "out of memory encoding the response");
        return;
    }
    reply_body(r, 200, "application/json", b, len);
}

static void reply_json(srv_reply *r, json_t *j)
{
    char *b = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(j);
    if (!b) {
        srv_reply_problem(r, 500, "internal", "out of memory encoding the response");
        return;
    }
    reply_body(r, 200, "application/json", b, strlen(b));
}

static srv_table *table_or_404(const srv_api_request *q, srv_reply *r)
{
    srv_table *t = srv_table_get(q->table, q->table_len);
    if (!t)
        srv_reply_problem(r, 404, "table-not-found", "no table named '%.*s'",
                          (int)(q->table_len > 200 ? 200 : q->table_len), q->table);
    return t;
}

typedef enum { ENC_JSON, ENC_B64_F32, ENC_B64_F16 } vec_encoding;

/* Parses encoding/dtype (from the query string or the body). Returns 0 or 422 in r. */
static int parse_encoding(const char *enc, const char *dtype, vec_encoding *out, srv_reply *r)
{
    if (!enc || !strcmp(enc, "json")) {
        *out = ENC_JSON; /* dtype is ignored: JSON numbers carry the f32 values */
        return 0;
    }
    if (strcmp(enc, "base64")) {
        srv_reply_problem(r, 422, "invalid-value", "encoding must be 'json' or 'base64'");
        return -1;
    }
    if (!dtype || !strcmp(dtype, "f32"))
        *out = ENC_B64_F32;
    else if (!strcmp(dtype, "f16"))
        *out = ENC_B64_F16;
    else {
        srv_reply_problem(r, 422, "invalid-value", "dtype must be 'f32' or 'f16'");
        return -1;
    }
    return 0;
}

/* Appends row values (dim floats in v) in the chosen encoding. Any thread. */
static void put_vector(jsonw *w, const float *v, uint32_t dim, vec_encoding enc, uint16_t *tmp16)
{
    if (enc == ENC_JSON) {
        jsonw_float_array(w, v, dim);
    } else if (enc == ENC_B64_F32) {
        jsonw_base64(w, v, (size_t)dim * 4);
    } else {
        emb_kernels_get()->f32_to_f16(v, tmp16, dim);
        jsonw_base64(w, tmp16, (size_t)dim * 2);
    }
}

/* Appends row id of s straight from its f16 section when that is what a lookup serves (no f32
 * section) and the encoding is JSON or base64 f16: the same text or bytes as decoding it and
 * calling put_vector, without the conversions. Returns 1 when it wrote, 0 when the caller must
 * decode the row and call put_vector. Any thread. */
static int put_row_f16(jsonw *w, const emb_store *s, uint64_t id, vec_encoding enc)
{
    if (enc == ENC_B64_F32 || emb_store_primary_codec(s) != EMB_CODEC_F16)
        return 0;
    const uint16_t *h = (const uint16_t *)(s->rows_f16 + id * s->stride_f16);
    if (enc == ENC_JSON)
        jsonw_f16_array(w, h, s->dim);
    else
        jsonw_base64(w, h, (size_t)s->dim * 2);
    return 1;
}

static void put_key(jsonw *w, const emb_store *s, uint64_t id)
{
    const char *k;
    size_t len;
    if (emb_store_key(s, id, &k, &len) == 0)
        jsonw_string(w, k, len);
    else
        jsonw_cstr(w, "null");
}

/* ---- tables ---- */

static json_t *table_json(const srv_table *t)
{
    const emb_store *s = t->store;
    json_t *codecs = srv_json_codecs(s->codecs);
    char crc[16];
    snprintf(crc, sizeof crc, "%08x", s->checksum);
    json_t *meta = NULL;
    if (s->meta) {
        json_error_t e;
        meta = json_loadb(s->meta, s->meta_len, JSON_REJECT_DUPLICATES, &e);
        if (meta && !json_is_object(meta)) {
            json_decref(meta);
            meta = NULL;
        }
    }
    return json_pack("{s:s, s:I, s:i, s:o, s:s, s:b, s:s, s:i, s:b, s:o}", "name", t->name, "rows",
                     (json_int_t)s->rows, "dim", (int)s->dim, "codecs", codecs, "metric",
                     emb_metric_name(s->metric), "keys", s->key_offs != NULL, "checksum", crc,
                     "oversample_default", (int)t->oversample, "normalized",
                     (s->flags & EMB_FLAG_NORMALIZED) != 0, "metadata",
                     meta ? meta : json_object());
}

static void get_tables(srv_reply *r)
{
    size_t n;
    srv_table **all = srv_tables_all(&n);
    if (!all) {
        srv_reply_problem(r, 500, "internal", "out of memory");
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, table_json(all[i]));
        srv_table_put(all[i]);
    }
    free(all);
    reply_json(r, json_pack("{s:o}", "tables", arr));
}

static void get_table(const srv_api_request *q, srv_reply *r)
{
    srv_table *t = table_or_404(q, r);
    if (!t)
        return;
    reply_json(r, table_json(t));
    memcpy(r->etag, t->etag, sizeof r->etag);
    srv_table_put(t);
}

/* ---- one row ---- */

/* Parses a decimal id: 0 ok, -1 not an integer in 0..MAX_ID. */
static int parse_id(const char *s, size_t n, uint64_t *out)
{
    if (n == 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > MAX_ID)
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > MAX_ID)
        return -1;
    *out = v;
    return 0;
}

static void get_row(const srv_api_request *q, srv_reply *r)
{
    vec_encoding enc;
    if (parse_encoding(q->encoding, q->dtype, &enc, r) != 0)
        return;
    srv_table *t = table_or_404(q, r);
    if (!t)
        return;
    const emb_store *s = t->store;
    uint64_t id;
    if (q->route == SRV_ROUTE_ROW) {
        if (parse_id(q->item, q->item_len, &id) != 0) {
            srv_reply_problem(r, 422, "invalid-value", "row id must be an integer in 0..2^53-1");
            goto out;
        }
        if (id >= s->rows) {
            srv_reply_problem(r, 404, "row-not-found", "table '%s' has rows 0..%llu; no row %llu",
                              t->name, (unsigned long long)s->rows - 1, (unsigned long long)id);
            goto out;
        }
    } else {
        if (q->item_len > EMB_MAX_KEY) {
            srv_reply_problem(r, 422, "invalid-value", "a key is at most %u bytes", EMB_MAX_KEY);
            goto out;
        }
        int rc = emb_store_find(s, q->item, q->item_len, &id);
        if (rc) {
            srv_reply_problem(r, 404, "key-not-found", "%s",
                              !s->key_offs ? "this table has no keys" : "no row with this key");
            goto out;
        }
    }
    jsonw w;
    jsonw_init(&w, (size_t)s->dim * 16 + 128);
    jsonw_cstr(&w, "{\"id\":");
    jsonw_u64(&w, id);
    jsonw_cstr(&w, ",\"key\":");
    put_key(&w, s, id);
    jsonw_cstr(&w, ",\"vector\":");
    if (!put_row_f16(&w, s, id, enc)) {
        float *v = malloc((size_t)s->dim * 6);
        if (!v) {
            jsonw_free(&w);
            srv_reply_problem(r, 500, "internal", "out of memory");
            goto out;
        }
        emb_store_row(s, id, v);
        put_vector(&w, v, s->dim, enc, (uint16_t *)(v + s->dim));
        free(v);
    }
    jsonw_char(&w, '}');
    reply_jsonw(r, &w);
    memcpy(r->etag, t->etag, sizeof r->etag);
    srv_metrics_rows_gathered(t->metrics_slot, 1);
out:
    srv_table_put(t);
}

/* ---- request bodies ---- */

/* Refuses (413, into r) a body with more JSON values than any valid request to the table can
 * hold, before jansson builds it: jansson spends about 40 bytes on a number and 200 on an empty
 * object, so 16 MiB of "{}," would cost over a gigabyte, and glibc keeps much of it after the
 * free. The largest valid bodies are a search batch (--max-batch vectors of dim numbers, plus
 * --max-batch exclude_ids) and a pooled gather (--max-batch ids and as many weights); so at
 * most --max-batch x (dim + 3) + 64 values (counted as commas plus opening brackets outside
 * strings: an upper bound for any text) and --max-batch + 64 arrays and objects. The scan is
 * linear and allocates nothing; it does not validate (jansson does, next). Returns 0 or -1. */
static int check_value_count(const srv_config *cfg, const srv_api_request *q, srv_reply *r)
{
    uint64_t dim = 0;
    srv_table *t = srv_table_get(q->table, q->table_len);
    if (t) {
        dim = t->store->dim;
        srv_table_put(t);
    }
    uint64_t max_values = (uint64_t)cfg->max_batch * (dim + 3) + 64;
    uint64_t max_containers = (uint64_t)cfg->max_batch + 64;
    uint64_t values = 1, containers = 0;
    int in_string = 0;
    for (size_t i = 0; i < q->body_len; i++) {
        char c = q->body[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == ',') {
            values++;
        } else if (c == '[' || c == '{') {
            values++;
            containers++;
        }
    }
    if (values <= max_values && containers <= max_containers)
        return 0;
    srv_reply_problem(r, 413, "body-too-large",
                      "the body holds about %llu JSON values and %llu arrays or objects; a request "
                      "to this table holds at most %llu and %llu (--max-batch x (dim + 3) + 64, "
                      "--max-batch + 64)",
                      (unsigned long long)values, (unsigned long long)containers,
                      (unsigned long long)max_values, (unsigned long long)max_containers);
    return -1;
}

/* Decodes the body as one JSON object; on failure fills r (400/413/415/422) and returns NULL. */
static json_t *parse_body(const srv_config *cfg, const srv_api_request *q, srv_reply *r)
{
    if (q->content_type && strncasecmp(q->content_type, "application/json", 16) != 0) {
        srv_reply_problem(r, 415, "unsupported-media-type",
                          "Content-Type must be application/json");
        return NULL;
    }
    if (check_value_count(cfg, q, r) != 0)
        return NULL;
    json_error_t e;
    json_t *j = json_loadb(q->body, q->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    if (!j) {
        /* Valid JSON that jansson cannot hold: a real beyond double (non-finite) or an integer
         * beyond 64 bits (an id or k out of range). */
        int real = strstr(e.text, "real number overflow") != NULL;
        int big = strstr(e.text, "too big") != NULL;
        srv_reply_problem(r, real || big ? 422 : 400,
                          real  ? "non-finite"
                          : big ? "invalid-value"
                                : "malformed-json",
                          "%s at line %d column %d", e.text, e.line, e.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        srv_reply_problem(r, 400, "wrong-type", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Reads an optional string member; returns 0 (absent: *out NULL) or -1 with 400 in r. */
static int opt_string(json_t *o, const char *name, const char **out, srv_reply *r)
{
    json_t *v = json_object_get(o, name);
    *out = NULL;
    if (!v)
        return 0;
    if (!json_is_string(v)) {
        srv_reply_problem(r, 400, "wrong-type", "'%s' must be a string", name);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

static int opt_bool(json_t *o, const char *name, int *out, srv_reply *r)
{
    json_t *v = json_object_get(o, name);
    if (!v)
        return 0;
    if (!json_is_boolean(v)) {
        srv_reply_problem(r, 400, "wrong-type", "'%s' must be true or false", name);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

/* Reads an optional integer member within [lo, hi]. */
static int opt_int(json_t *o, const char *name, json_int_t lo, json_int_t hi, json_int_t *out,
                   srv_reply *r)
{
    json_t *v = json_object_get(o, name);
    if (!v)
        return 0;
    if (!json_is_integer(v)) {
        srv_reply_problem(r, json_is_number(v) ? 422 : 400,
                          json_is_number(v) ? "invalid-value" : "wrong-type",
                          "'%s' must be an integer", name);
        return -1;
    }
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        srv_reply_problem(r, 422, "invalid-value", "'%s' must be in %lld..%lld", name,
                          (long long)lo, (long long)hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* JSON types a member may have. */
enum { T_NUM = 1, T_STR = 2, T_ARR = 4, T_BOOL = 8 };

typedef struct member {
    const char *name;
    int types;
} member;

/* Checks every member's JSON type first (400 wrong-type), then refuses members this endpoint
 * does not know (422: a typo must not be silently ignored). Values are checked afterwards, so
 * a wrong type always wins over a bad value, as the contract orders them. */
static int check_members(json_t *o, const member *spec, srv_reply *r)
{
    static const char *const type_names[] = {"", "a number", "a string", "", "an array"};
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        for (size_t i = 0; spec[i].name; i++) {
            if (strcmp(key, spec[i].name))
                continue;
            int t = json_is_number(v)    ? T_NUM
                    : json_is_string(v)  ? T_STR
                    : json_is_array(v)   ? T_ARR
                    : json_is_boolean(v) ? T_BOOL
                                         : 0;
            if (!(t & spec[i].types)) {
                srv_reply_problem(r, 400, "wrong-type", "'%s' must be %s", key,
                                  spec[i].types == T_BOOL ? "true or false"
                                  : spec[i].types == (T_ARR | T_STR)
                                      ? "an array or a base64 string"
                                      : type_names[spec[i].types & 7]);
                return -1;
            }
        }
    }
    json_object_foreach(o, key, v)
    {
        int ok = 0;
        for (size_t i = 0; spec[i].name; i++)
            if (!strcmp(key, spec[i].name))
                ok = 1;
        if (!ok) {
            srv_reply_problem(r, 422, "invalid-value", "unknown member '%s'", key);
            return -1;
        }
    }
    return 0;
}

/* Reads a JSON integer id (0..MAX_ID): a number that is not an integer is 422. */
static int json_id(json_t *x, const char *what, size_t i, uint64_t *out, srv_reply *r)
{
    if (!json_is_number(x)) {
        srv_reply_problem(r, 400, "wrong-type", "%s[%zu] is not a number", what, i);
        return -1;
    }
    if (!json_is_integer(x) || json_integer_value(x) < 0 ||
        (uint64_t)json_integer_value(x) > MAX_ID) {
        srv_reply_problem(r, 422, "invalid-value", "%s[%zu] is not an integer in 0..2^53-1", what,
                          i);
        return -1;
    }
    *out = (uint64_t)json_integer_value(x);
    return 0;
}

/* Converts a JSON vector (array of numbers, or a base64 string under enc) to dim floats. */
static int parse_vector(json_t *v, const char *what, uint32_t dim, vec_encoding enc, float *out,
                        srv_reply *r)
{
    if (json_is_string(v)) {
        if (enc == ENC_JSON) {
            srv_reply_problem(r, 400, "wrong-type",
                              "'%s' is a string: set \"encoding\": \"base64\"", what);
            return -1;
        }
        size_t len = json_string_length(v), want = (size_t)dim * (enc == ENC_B64_F16 ? 2 : 4);
        if (len != (want + 2) / 3 * 4) {
            srv_reply_problem(r, 422, "wrong-dimension",
                              "'%s' has %zu base64 characters; dim %u needs %zu", what, len, dim,
                              (want + 2) / 3 * 4);
            return -1;
        }
        uint8_t *bytes = malloc(len / 4 * 3 + 4);
        if (!bytes) {
            srv_reply_problem(r, 500, "internal", "out of memory");
            return -1;
        }
        long n = srv_base64_decode(json_string_value(v), len, bytes);
        if (n != (long)want) {
            free(bytes);
            srv_reply_problem(r, 422, "invalid-value", "'%s' is not valid base64 of %zu bytes",
                              what, want);
            return -1;
        }
        if (enc == ENC_B64_F16)
            emb_kernels_get()->f16_to_f32((const uint16_t *)bytes, out, dim);
        else
            memcpy(out, bytes, want);
        free(bytes);
    } else if (json_is_array(v)) {
        if (json_array_size(v) != dim) {
            srv_reply_problem(r, 422, "wrong-dimension",
                              "'%s' has %zu values; the table's dim is %u", what,
                              json_array_size(v), dim);
            return -1;
        }
        for (uint32_t i = 0; i < dim; i++) {
            json_t *x = json_array_get(v, i);
            if (!json_is_number(x)) {
                srv_reply_problem(r, 400, "wrong-type", "'%s'[%u] is not a number", what, i);
                return -1;
            }
            out[i] = (float)json_number_value(x);
        }
    } else {
        srv_reply_problem(r, 400, "wrong-type",
                          "'%s' must be an array of numbers or a base64 string", what);
        return -1;
    }
    double norm2 = 0;
    for (uint32_t i = 0; i < dim; i++) {
        if (!isfinite(out[i])) {
            srv_reply_problem(r, 422, "non-finite", "'%s'[%u] is not a finite float32", what, i);
            return -1;
        }
        norm2 += (double)out[i] * out[i];
    }
    /* Finite values can still make float32 scores overflow (64 values of 3.4e38: the cosine
     * came out 0, a two-stage search found nothing); below 2^60 no score against rows of
     * ordinary magnitude does, for any metric. */
    if (norm2 > 0x1p120) {
        srv_reply_problem(r, 422, "non-finite",
                          "'%s' has an L2 norm of %.3g; above 2^60 its scores overflow float32",
                          what, sqrt(norm2));
        return -1;
    }
    return 0;
}

/* Resolves "ids" (integers) or "keys" (strings) to row ids; missing ones get UINT64_MAX. */
static int parse_refs(json_t *arr, int keys, const srv_table *t, uint32_t max_batch,
                      uint64_t **ids_out, size_t *n_out, srv_reply *r)
{
    const char *what = keys ? "keys" : "ids";
    if (!json_is_array(arr)) {
        srv_reply_problem(r, 400, "wrong-type", "'%s' must be an array", what);
        return -1;
    }
    size_t n = json_array_size(arr);
    if (n == 0 || n > max_batch) {
        srv_reply_problem(r, 422, n ? "batch-too-large" : "invalid-value",
                          "'%s' must hold 1..%u items (--max-batch), not %zu", what, max_batch, n);
        return -1;
    }
    if (keys && !t->store->key_offs) {
        srv_reply_problem(r, 422, "invalid-value", "table '%s' has no keys; use 'ids'", t->name);
        return -1;
    }
    uint64_t *ids = malloc(n * sizeof *ids);
    if (!ids) {
        srv_reply_problem(r, 500, "internal", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(arr, i);
        if (keys) {
            if (!json_is_string(x)) {
                free(ids);
                srv_reply_problem(r, 400, "wrong-type", "keys[%zu] is not a string", i);
                return -1;
            }
            if (json_string_length(x) > EMB_MAX_KEY) {
                free(ids);
                srv_reply_problem(r, 422, "invalid-value", "keys[%zu] is longer than %u bytes", i,
                                  EMB_MAX_KEY);
                return -1;
            }
            uint64_t id;
            ids[i] = emb_store_find(t->store, json_string_value(x), json_string_length(x), &id)
                         ? UINT64_MAX
                         : id;
        } else {
            uint64_t v;
            if (json_id(x, "ids", i, &v, r)) {
                free(ids);
                return -1;
            }
            ids[i] = v < t->store->rows ? v : UINT64_MAX;
        }
    }
    *ids_out = ids;
    *n_out = n;
    return 0;
}

/* ---- gather ---- */

typedef struct gather_work {
    srv_table *t;
    uint64_t *ids;
    size_t n;
    int pool; /* 0 none, 1 mean, 2 sum */
    float *weights;
    vec_encoding enc;
    int binary;
} gather_work;

static void gather_free(gather_work *g)
{
    if (!g)
        return;
    srv_table_put(g->t);
    free(g->ids);
    free(g->weights);
    free(g);
}

/* Appends the positions of the missing ids, comma-separated; returns how many. */
static size_t put_missing_list(jsonw *w, const gather_work *g)
{
    size_t n = 0;
    for (size_t i = 0; i < g->n; i++)
        if (g->ids[i] == UINT64_MAX) {
            if (n++)
                jsonw_char(w, ',');
            jsonw_u64(w, i);
        }
    return n;
}

static void put_missing(jsonw *w, const gather_work *g)
{
    jsonw_cstr(w, "\"missing\":[");
    put_missing_list(w, g);
    jsonw_char(w, ']');
}

/* Pools the found rows into out[dim] (sum or weighted mean, accumulated in double). Returns the
 * rows found; -1 with 422 in r when a mean's weights sum to 0 or the result is not a finite
 * float32. */
static long pool_rows(const gather_work *g, float *row, double *acc, float *out, srv_reply *r)
{
    const emb_store *s = g->t->store;
    const uint32_t dim = s->dim;
    memset(acc, 0, (size_t)dim * sizeof *acc);
    double wsum = 0;
    long found = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (g->ids[i] == UINT64_MAX)
            continue;
        emb_store_row(s, g->ids[i], row);
        found++;
        double wi = g->weights ? g->weights[i] : 1.0;
        wsum += wi;
        for (uint32_t j = 0; j < dim; j++)
            acc[j] += wi * row[j];
    }
    if (found && g->pool == 1) {
        if (wsum == 0) {
            srv_reply_problem(r, 422, "invalid-value",
                              "the weights of the rows found sum to 0: no mean");
            return -1;
        }
        for (uint32_t j = 0; j < dim; j++)
            acc[j] /= wsum;
    }
    for (uint32_t j = 0; j < dim; j++) {
        out[j] = (float)acc[j];
        if (!isfinite(out[j])) {
            srv_reply_problem(r, 422, "non-finite", "the pooled value %u overflows float32", j);
            return -1;
        }
    }
    return found;
}

/* Encodes the gather answer into r. Any thread. */
static void gather_run(gather_work *g, srv_reply *r)
{
    const emb_store *s = g->t->store;
    const uint32_t dim = s->dim;
    float *v = malloc((size_t)dim * (4 + 4 + 2));
    double *acc = malloc((size_t)dim * sizeof *acc);
    if (!v || !acc) {
        free(v);
        free(acc);
        srv_reply_problem(r, 500, "internal", "out of memory");
        return;
    }
    float *pooled = v + dim;
    uint16_t *tmp16 = (uint16_t *)(pooled + dim);
    long found = 0;
    if (g->pool && (found = pool_rows(g, v, acc, pooled, r)) < 0)
        goto out;
    if (g->binary) {
        size_t esz = g->enc == ENC_B64_F16 ? 2 : 4, n = g->pool ? 1 : g->n;
        size_t len = 16 + n * dim * esz;
        uint8_t *b = calloc(1, len);
        if (!b) {
            srv_reply_problem(r, 500, "internal", "out of memory");
            goto out;
        }
        memcpy(b, "EMBG", 4);
        uint32_t hdr[3] = {(uint32_t)n, dim, esz == 2 ? 1u : 0u};
        memcpy(b + 4, hdr, sizeof hdr);
        for (size_t i = 0; i < n; i++) {
            const float *src = pooled;
            if (!g->pool) {
                if (g->ids[i] == UINT64_MAX)
                    continue; /* stays zero */
                emb_store_row(s, g->ids[i], v);
                found++;
                src = v;
            }
            if (esz == 4)
                memcpy(b + 16 + i * dim * 4, src, (size_t)dim * 4);
            else
                emb_kernels_get()->f32_to_f16(src, (uint16_t *)(b + 16 + i * dim * 2), dim);
        }
        reply_body(r, 200, "application/octet-stream", (char *)b, len);
        jsonw m;
        jsonw_init(&m, 64);
        size_t ml;
        if (put_missing_list(&m, g)) { /* an empty header cannot be sent: absent when none */
            snprintf(r->extra_name, sizeof r->extra_name, "X-Embd-Missing");
            r->extra_value = jsonw_steal(&m, &ml);
        }
        jsonw_free(&m);
    } else {
        jsonw w;
        size_t per = g->enc == ENC_JSON ? (size_t)dim * 14 : (size_t)dim * 6;
        jsonw_init(&w, (g->pool ? 1 : g->n) * (per + 4) + g->n * 8 + 64);
        if (g->pool) {
            jsonw_cstr(&w, "{\"vector\":");
            if (found)
                put_vector(&w, pooled, dim, g->enc, tmp16);
            else
                jsonw_cstr(&w, "null");
        } else {
            jsonw_cstr(&w, "{\"vectors\":[");
            for (size_t i = 0; i < g->n; i++) {
                if (i)
                    jsonw_char(&w, ',');
                if (g->ids[i] == UINT64_MAX) {
                    jsonw_cstr(&w, "null");
                    continue;
                }
                found++;
                if (!put_row_f16(&w, s, g->ids[i], g->enc)) {
                    emb_store_row(s, g->ids[i], v);
                    put_vector(&w, v, dim, g->enc, tmp16);
                }
            }
            jsonw_char(&w, ']');
        }
        jsonw_char(&w, ',');
        put_missing(&w, g);
        jsonw_char(&w, '}');
        reply_jsonw(r, &w);
    }
    memcpy(r->etag, g->t->etag, sizeof r->etag);
    srv_metrics_rows_gathered(g->t->metrics_slot, (uint64_t)found);
out:
    free(v);
    free(acc);
}

static int post_gather(const srv_config *cfg, const srv_api_request *q, srv_reply *r,
                       gather_work **out)
{
    static const member members[] = {{"ids", T_ARR},   {"keys", T_ARR},    {"on_missing", T_STR},
                                     {"pool", T_STR},  {"weights", T_ARR}, {"encoding", T_STR},
                                     {"dtype", T_STR}, {NULL, 0}};
    json_t *j = parse_body(cfg, q, r);
    if (!j)
        return -1;
    gather_work *g = calloc(1, sizeof *g);
    const char *on_missing, *pool, *enc, *dtype;
    json_t *ids = json_object_get(j, "ids"), *keys = json_object_get(j, "keys");
    if (!g) {
        srv_reply_problem(r, 500, "internal", "out of memory");
        goto fail;
    }
    if (check_members(j, members, r) || opt_string(j, "on_missing", &on_missing, r) ||
        opt_string(j, "pool", &pool, r) || opt_string(j, "encoding", &enc, r) ||
        opt_string(j, "dtype", &dtype, r) || parse_encoding(enc, dtype, &g->enc, r))
        goto fail;
    if (!!ids == !!keys) {
        srv_reply_problem(r, 422, "invalid-value", "give exactly one of 'ids' and 'keys'");
        goto fail;
    }
    if (on_missing && strcmp(on_missing, "null") && strcmp(on_missing, "error")) {
        srv_reply_problem(r, 422, "invalid-value", "'on_missing' must be 'null' or 'error'");
        goto fail;
    }
    if (pool && strcmp(pool, "mean") && strcmp(pool, "sum")) {
        srv_reply_problem(r, 422, "invalid-value", "'pool' must be 'mean' or 'sum'");
        goto fail;
    }
    g->pool = !pool ? 0 : !strcmp(pool, "mean") ? 1 : 2;
    if (!(g->t = table_or_404(q, r)))
        goto fail;
    if (parse_refs(ids ? ids : keys, keys != NULL, g->t, cfg->max_batch, &g->ids, &g->n, r))
        goto fail;
    json_t *wj = json_object_get(j, "weights");
    if (wj) {
        if (!g->pool) {
            srv_reply_problem(r, 422, "invalid-value", "'weights' needs 'pool'");
            goto fail;
        }
        if (!json_is_array(wj) || json_array_size(wj) != g->n) {
            srv_reply_problem(r, json_is_array(wj) ? 422 : 400,
                              json_is_array(wj) ? "invalid-value" : "wrong-type",
                              "'weights' must be an array of %zu numbers", g->n);
            goto fail;
        }
        if (!(g->weights = malloc(g->n * sizeof *g->weights))) {
            srv_reply_problem(r, 500, "internal", "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < g->n; i++) {
            json_t *x = json_array_get(wj, i);
            if (!json_is_number(x)) {
                srv_reply_problem(r, 400, "wrong-type", "weights[%zu] is not a number", i);
                goto fail;
            }
            g->weights[i] = (float)json_number_value(x);
            if (!isfinite(g->weights[i])) {
                srv_reply_problem(r, 422, "non-finite", "weights[%zu] is not a finite float32", i);
                goto fail;
            }
        }
    }
    if (on_missing && !strcmp(on_missing, "error"))
        for (size_t i = 0; i < g->n; i++)
            if (g->ids[i] == UINT64_MAX) {
                json_t *x = json_array_get(ids ? ids : keys, i);
                if (keys)
                    srv_reply_problem(r, 404, "key-not-found",
                                      "keys[%zu] ('%.200s') is not in table '%s'", i,
                                      json_string_value(x), g->t->name);
                else
                    srv_reply_problem(r, 404, "row-not-found",
                                      "ids[%zu] (%lld) is not a row of table '%s'", i,
                                      (long long)json_integer_value(x), g->t->name);
                goto fail;
            }
    g->binary = q->accept_binary;
    json_decref(j);
    *out = g;
    return 0;
fail:
    gather_free(g);
    json_decref(j);
    return -1;
}

/* ---- search ---- */

typedef struct search_work {
    srv_table *t;
    float *queries; /* nq x dim */
    uint32_t nq;
    int batch; /* answer with a list per query */
    emb_search_params p;
    uint64_t *exclude; /* sorted, deduplicated */
    uint64_t self;     /* a query by id/key: that row (also in exclude) */
    int include_vectors;
    vec_encoding enc;
    uint32_t candidates; /* per query: k, or k x oversample (emb_search_plan) */
    /* A split query (split_search): one part per worker, the last one finishes. */
    struct search_part *parts;
    emb_hit *part_bufs;
    uint32_t n_parts;
    atomic_uint parts_left;
    const srv_config *cfg;
} search_work;

static void search_free(search_work *w)
{
    if (!w)
        return;
    srv_table_put(w->t);
    free(w->queries);
    free(w->exclude);
    free(w->parts);
    free(w->part_bufs);
    free(w);
}

/* Scales a query of dim values by a power of two so that its largest |value| lies in [0.5, 1),
 * for cosine searches. A cosine does not depend on the query's length, but float32 arithmetic
 * does: values near 1e38 overflow the dot product or the norms' product (every score came back
 * 0 or null), values near 1e-38 lose their bits. The scaling is exact, so an ordinary query
 * gets the same answer to the bit, and every intermediate stays in range. */
static void cos_scale_query(float *q, uint32_t dim)
{
    float big = 0;
    for (uint32_t j = 0; j < dim; j++)
        big = fmaxf(big, fabsf(q[j]));
    if (big == 0)
        return;
    int e;
    frexpf(big, &e);
    for (uint32_t j = 0; j < dim; j++)
        q[j] = ldexpf(q[j], -e);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Per worker thread: reused scratch, so no query allocates once a thread is warm. */
static __thread emb_scratch *tl_scratch;
static __thread emb_batch_scratch *tl_batch;
static __thread uint32_t tl_dim, tl_cand, tl_batch_dim, tl_batch_n, tl_batch_cand, tl_counts_cap;
static __thread uint64_t tl_hits_cap;
static __thread emb_hit *tl_hits;
static __thread uint32_t *tl_counts;

static void put_hits(jsonw *w, const search_work *sw, const emb_hit *h, uint32_t n, float *v,
                     uint16_t *tmp16)
{
    const emb_store *s = sw->t->store;
    jsonw_char(w, '[');
    for (uint32_t i = 0; i < n; i++) {
        if (i)
            jsonw_char(w, ',');
        jsonw_cstr(w, "{\"id\":");
        jsonw_u64(w, h[i].id);
        jsonw_cstr(w, ",\"key\":");
        put_key(w, s, h[i].id);
        jsonw_cstr(w, ",\"score\":");
        jsonw_float(w, h[i].score);
        if (sw->include_vectors) {
            jsonw_cstr(w, ",\"vector\":");
            if (!put_row_f16(w, s, h[i].id, sw->enc)) {
                emb_store_row(s, h[i].id, v);
                put_vector(w, v, s->dim, sw->enc, tmp16);
            }
        }
        jsonw_char(w, '}');
    }
    jsonw_char(w, ']');
}

/* Makes sure this worker's scratch fits nq queries of dim keeping cand candidates and k hits
 * each; it grows to the largest request seen (bounded by MAX_CANDIDATE_SLOTS) and is reused,
 * so a warm worker allocates nothing per query. Returns 0 or -1 (out of memory). */
static int thread_scratch(uint32_t dim, uint32_t nq, uint32_t k, uint32_t cand)
{
    if (nq == 1) {
        if (!tl_scratch || tl_dim != dim || tl_cand < cand) {
            emb_scratch_free(tl_scratch);
            tl_scratch = emb_scratch_new(dim, cand);
            tl_dim = dim;
            tl_cand = tl_scratch ? cand : 0;
        }
    } else if (!tl_batch || tl_batch_dim != dim || tl_batch_n < nq || tl_batch_cand < cand) {
        emb_batch_scratch_free(tl_batch);
        tl_batch = emb_batch_scratch_new(dim, nq, cand);
        tl_batch_dim = dim;
        tl_batch_n = tl_batch ? nq : 0;
        tl_batch_cand = tl_batch ? cand : 0;
    }
    /* Hits and per-query counts grow separately: nq x k may fit the hits of an earlier
     * request with fewer queries while the counts do not. */
    if ((uint64_t)nq * k > tl_hits_cap) {
        free(tl_hits);
        tl_hits = malloc((size_t)nq * k * sizeof *tl_hits);
        tl_hits_cap = tl_hits ? (uint64_t)nq * k : 0;
    }
    if (nq > tl_counts_cap) {
        free(tl_counts);
        tl_counts = malloc((size_t)nq * sizeof *tl_counts);
        tl_counts_cap = tl_counts ? nq : 0;
    }
    return (nq == 1 ? !tl_scratch : !tl_batch) || tl_hits_cap < (uint64_t)nq * k ||
                   tl_counts_cap < nq
               ? -1
               : 0;
}

/* Encodes the hits of every query (tl_hits, tl_counts) as the search answer. */
static void search_reply(search_work *sw, srv_reply *r)
{
    const emb_store *s = sw->t->store;
    const uint32_t dim = s->dim;
    float *v = malloc((size_t)dim * 6);
    if (!v) {
        srv_reply_problem(r, 500, "internal", "out of memory");
        return;
    }
    int two_stage =
        !sw->p.exact && (s->codecs & EMB_CODEC_Q1) && emb_store_primary_codec(s) != EMB_CODEC_Q1;
    srv_metrics_rows_scanned(sw->t->metrics_slot, s->rows * sw->nq);
    srv_metrics_search(sw->t->metrics_slot, two_stage);
    jsonw w;
    jsonw_init(&w, (size_t)sw->nq * sw->p.k * (sw->include_vectors ? dim * 14 + 80 : 80) + 128);
    jsonw_cstr(&w, "{\"results\":");
    if (sw->batch)
        jsonw_char(&w, '[');
    for (uint32_t i = 0; i < sw->nq; i++) {
        if (i)
            jsonw_char(&w, ',');
        put_hits(&w, sw, tl_hits + (size_t)i * sw->p.k, tl_counts[i], v, (uint16_t *)(v + dim));
    }
    if (sw->batch)
        jsonw_char(&w, ']');
    jsonw_cstr(&w, ",\"metric\":\"");
    jsonw_cstr(&w, emb_metric_name(sw->p.metric));
    jsonw_cstr(&w, "\",\"k\":");
    jsonw_u64(&w, sw->p.k);
    jsonw_cstr(&w, two_stage ? ",\"mode\":\"two_stage\"}" : ",\"mode\":\"exact\"}");
    free(v);
    reply_jsonw(r, &w);
    memcpy(r->etag, sw->t->etag, sizeof r->etag);
}

static void search_run(search_work *sw, srv_reply *r, const srv_config *cfg)
{
    const emb_store *s = sw->t->store;
    (void)cfg;
    if (thread_scratch(s->dim, sw->nq, sw->p.k, sw->candidates) != 0) {
        srv_reply_problem(r, 500, "internal", "out of memory for search scratch");
        return;
    }
    int rc;
    if (sw->nq == 1) {
        rc = emb_search(s, sw->queries, &sw->p, tl_scratch, tl_hits);
        if (rc >= 0) {
            tl_counts[0] = (uint32_t)rc;
            rc = 0;
        }
    } else {
        rc = emb_search_batch(s, sw->queries, sw->nq, &sw->p, NULL, tl_batch, tl_hits, tl_counts);
    }
    if (rc < 0) {
        srv_reply_problem(r, 422, "invalid-value", "search failed: %s", emb_strerror(rc));
        return;
    }
    search_reply(sw, r);
}

/* ---- one query split across the workers ---- */

/* Bytes scanned below which a query is not split: thread hand-offs cost more than the scan. */
#define SPLIT_MIN_BYTES (4u << 20)

typedef struct search_part {
    srv_job base;
    srv_api_job *parent;
    search_work *sw;
    uint64_t lo, hi;
    emb_topk heap;
} search_part;

/* Scans one row range; the last part to finish merges, rescores and encodes the answer, and
 * hands the parent job back to its loop. */
static srv_job *part_run(srv_job *base)
{
    search_part *pt = (search_part *)base;
    search_work *sw = pt->sw;
    srv_api_job *parent = pt->parent;
    if (!atomic_load(&parent->canceled))
        emb_search_scan(sw->t->store, sw->queries, &sw->p, pt->lo, pt->hi, &pt->heap);
    if (atomic_fetch_sub(&sw->parts_left, 1) != 1)
        return NULL;
    if (atomic_load(&parent->canceled))
        return &parent->base;
    search_part *all = sw->parts;
    for (uint32_t i = 1; i < sw->n_parts; i++)
        emb_topk_merge(&all[0].heap, &all[i].heap);
    if (thread_scratch(sw->t->store->dim, 1, sw->p.k, sw->candidates) != 0) {
        srv_reply_problem(&parent->reply, 500, "internal", "out of memory for search scratch");
        return &parent->base;
    }
    int n = emb_search_finish(sw->t->store, sw->queries, &sw->p, &all[0].heap, tl_scratch, tl_hits);
    if (n < 0) {
        srv_reply_problem(&parent->reply, 422, "invalid-value", "search failed: %s",
                          emb_strerror(n));
        return &parent->base;
    }
    tl_counts[0] = (uint32_t)n;
    search_reply(sw, &parent->reply);
    return &parent->base;
}

/* Splits a one-query search over a large table into one part per worker. Returns 0 when split
 * (j->parts set), 1 when not worth it, -1 when out of memory. */
static int split_search(const srv_config *cfg, search_work *sw, srv_api_job *j)
{
    const emb_store *s = sw->t->store;
    emb_search_plan pl;
    if (sw->nq != 1 || emb_search_plan_get(s, sw->queries, &sw->p, &pl) != 0)
        return 1;
    size_t stride = pl.scan_codec == EMB_CODEC_Q1    ? s->stride_q1
                    : pl.scan_codec == EMB_CODEC_F16 ? s->stride_f16
                                                     : s->stride_f32;
    uint32_t n = srv_pool_threads();
    if (n < 2 || (double)s->rows * stride < SPLIT_MIN_BYTES || s->rows < n)
        return 1;
    search_part *parts = calloc(n, sizeof *parts);
    srv_job **jobs = calloc(n, sizeof *jobs);
    emb_hit *bufs = malloc((size_t)n * pl.candidates * sizeof *bufs);
    if (!parts || !jobs || !bufs) {
        free(parts);
        free(jobs);
        free(bufs);
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        parts[i].base.run = part_run;
        parts[i].parent = j;
        parts[i].sw = sw;
        parts[i].lo = s->rows * i / n;
        parts[i].hi = s->rows * (i + 1) / n;
        emb_topk_init(&parts[i].heap, bufs + (size_t)i * pl.candidates, pl.candidates);
        jobs[i] = &parts[i].base;
    }
    sw->parts = parts;
    sw->part_bufs = bufs;
    sw->n_parts = n;
    sw->cfg = cfg;
    atomic_init(&sw->parts_left, n);
    j->parts = jobs;
    j->n_parts = n;
    return 0;
}

static int post_search(const srv_config *cfg, const srv_api_request *q, srv_reply *r,
                       search_work **out)
{
    static const member members[] = {{"vector", T_ARR | T_STR},
                                     {"id", T_NUM},
                                     {"key", T_STR},
                                     {"ids", T_ARR},
                                     {"keys", T_ARR},
                                     {"vectors", T_ARR},
                                     {"k", T_NUM},
                                     {"metric", T_STR},
                                     {"exclude_ids", T_ARR},
                                     {"include_vectors", T_BOOL},
                                     {"exact", T_BOOL},
                                     {"oversample", T_NUM},
                                     {"first_stage", T_STR},
                                     {"encoding", T_STR},
                                     {"dtype", T_STR},
                                     {NULL, 0}};
    static const char *const queries[] = {"vector", "id", "key", "ids", "keys", "vectors"};
    json_t *j = parse_body(cfg, q, r);
    if (!j)
        return -1;
    search_work *sw = calloc(1, sizeof *sw);
    const char *metric, *enc, *dtype, *first;
    json_int_t k = 10, os = 0;
    uint64_t *refs = NULL;
    size_t n_refs = 0;
    if (!sw) {
        srv_reply_problem(r, 500, "internal", "out of memory");
        goto fail;
    }
    sw->self = UINT64_MAX;
    if (check_members(j, members, r) || opt_string(j, "metric", &metric, r) ||
        opt_string(j, "encoding", &enc, r) || opt_string(j, "dtype", &dtype, r) ||
        parse_encoding(enc, dtype, &sw->enc, r) || opt_int(j, "k", 1, cfg->max_k, &k, r) ||
        opt_int(j, "oversample", 1, EMB_MAX_OVERSAMPLE, &os, r) ||
        opt_string(j, "first_stage", &first, r) || opt_bool(j, "exact", &sw->p.exact, r) ||
        opt_bool(j, "include_vectors", &sw->include_vectors, r))
        goto fail;
    const char *which = NULL;
    int nwhich = 0;
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++)
        if (json_object_get(j, queries[i])) {
            which = queries[i];
            nwhich++;
        }
    if (nwhich != 1) {
        srv_reply_problem(r, 422, "invalid-value",
                          "give exactly one query: vector, id, key, ids, keys or vectors");
        goto fail;
    }
    if (!(sw->t = table_or_404(q, r)))
        goto fail;
    const emb_store *s = sw->t->store;
    sw->p.metric = s->metric;
    if (metric && emb_metric_parse(metric, &sw->p.metric) != 0) {
        srv_reply_problem(r, 422, "invalid-value", "'metric' must be cos, dot or l2");
        goto fail;
    }
    /* What the 1-bit stage scores rows against: q8 (default), q1 (XOR + popcount) or f32. */
    if (first && emb_q1_query_parse(first, &sw->p.q1_query) != 0) {
        srv_reply_problem(r, 422, "invalid-value", "'first_stage' must be q8, q1 or f32");
        goto fail;
    }
    sw->p.k = (uint32_t)k;
    sw->p.oversample = os ? (uint32_t)os : sw->t->oversample;
    json_t *qv = json_object_get(j, which);
    sw->nq = 1;
    if (!strcmp(which, "vectors")) {
        if (!json_is_array(qv)) {
            srv_reply_problem(r, 400, "wrong-type", "'vectors' must be an array of vectors");
            goto fail;
        }
        size_t n = json_array_size(qv);
        if (n == 0 || n > cfg->max_batch) {
            srv_reply_problem(r, 422, n ? "batch-too-large" : "invalid-value",
                              "'vectors' must hold 1..%u vectors, not %zu", cfg->max_batch, n);
            goto fail;
        }
        sw->nq = (uint32_t)n;
        sw->batch = 1;
    }
    sw->queries = malloc((size_t)sw->nq * s->dim * sizeof *sw->queries);
    if (!sw->queries) {
        srv_reply_problem(r, 500, "internal", "out of memory");
        goto fail;
    }
    if (!strcmp(which, "vector")) {
        if (parse_vector(qv, "vector", s->dim, sw->enc, sw->queries, r))
            goto fail;
    } else if (!strcmp(which, "vectors")) {
        for (uint32_t i = 0; i < sw->nq; i++) {
            char what[32];
            snprintf(what, sizeof what, "vectors[%u]", i);
            if (parse_vector(json_array_get(qv, i), what, s->dim, sw->enc,
                             sw->queries + (size_t)i * s->dim, r))
                goto fail;
        }
    } else if (!strcmp(which, "id") || !strcmp(which, "key")) {
        uint64_t id;
        if (!strcmp(which, "id")) {
            if (json_id(qv, "id", 0, &id, r))
                goto fail;
            if (id >= s->rows) {
                srv_reply_problem(r, 404, "row-not-found", "no row %llu in table '%s'",
                                  (unsigned long long)id, sw->t->name);
                goto fail;
            }
        } else {
            if (!json_is_string(qv)) {
                srv_reply_problem(r, 400, "wrong-type", "'key' must be a string");
                goto fail;
            }
            if (json_string_length(qv) > EMB_MAX_KEY) {
                srv_reply_problem(r, 422, "invalid-value", "'key' is longer than %u bytes",
                                  EMB_MAX_KEY);
                goto fail;
            }
            if (!s->key_offs) {
                srv_reply_problem(r, 422, "invalid-value", "table '%s' has no keys; use 'id'",
                                  sw->t->name);
                goto fail;
            }
            if (emb_store_find(s, json_string_value(qv), json_string_length(qv), &id)) {
                srv_reply_problem(r, 404, "key-not-found", "no row with key '%.200s' in table '%s'",
                                  json_string_value(qv), sw->t->name);
                goto fail;
            }
        }
        emb_store_row(s, id, sw->queries);
        sw->self = id;
    } else {
        /* ids / keys: the mean of their rows; all of them excluded from the results. */
        if (parse_refs(qv, !strcmp(which, "keys"), sw->t, cfg->max_batch, &refs, &n_refs, r))
            goto fail;
        float *row = malloc((size_t)s->dim * sizeof *row);
        if (!row) {
            srv_reply_problem(r, 500, "internal", "out of memory");
            goto fail;
        }
        memset(sw->queries, 0, (size_t)s->dim * sizeof *sw->queries);
        for (size_t i = 0; i < n_refs; i++) {
            if (refs[i] == UINT64_MAX) {
                free(row);
                srv_reply_problem(r, 404,
                                  !strcmp(which, "keys") ? "key-not-found" : "row-not-found",
                                  "%s[%zu] is not in table '%s'", which, i, sw->t->name);
                goto fail;
            }
            emb_store_row(s, refs[i], row);
            for (uint32_t d = 0; d < s->dim; d++)
                sw->queries[d] += row[d] / (float)n_refs;
        }
        free(row);
    }
    if (sw->p.metric == EMB_METRIC_COS)
        for (uint32_t i = 0; i < sw->nq; i++)
            cos_scale_query(sw->queries + (size_t)i * s->dim, s->dim);
    /* Exclusions: exclude_ids, the query row, the pooled rows; sorted and deduplicated. */
    json_t *ex = json_object_get(j, "exclude_ids");
    size_t n_ex = ex ? json_array_size(ex) : 0;
    if (ex && !json_is_array(ex)) {
        srv_reply_problem(r, 400, "wrong-type", "'exclude_ids' must be an array of integers");
        goto fail;
    }
    if (n_ex > cfg->max_batch) {
        srv_reply_problem(r, 422, "batch-too-large", "'exclude_ids' holds more than %u ids",
                          cfg->max_batch);
        goto fail;
    }
    sw->exclude = malloc((n_ex + n_refs + 1) * sizeof *sw->exclude);
    if (!sw->exclude) {
        srv_reply_problem(r, 500, "internal", "out of memory");
        goto fail;
    }
    size_t m = 0;
    for (size_t i = 0; i < n_ex; i++) {
        json_t *x = json_array_get(ex, i);
        if (json_id(x, "exclude_ids", i, &sw->exclude[m], r))
            goto fail;
        m++;
    }
    for (size_t i = 0; i < n_refs; i++)
        sw->exclude[m++] = refs[i];
    if (sw->self != UINT64_MAX)
        sw->exclude[m++] = sw->self;
    qsort(sw->exclude, m, sizeof *sw->exclude, cmp_u64);
    size_t u = 0;
    for (size_t i = 0; i < m; i++)
        if (!u || sw->exclude[u - 1] != sw->exclude[i])
            sw->exclude[u++] = sw->exclude[i];
    sw->p.exclude = sw->exclude;
    sw->p.n_exclude = (uint32_t)u;
    emb_search_plan pl;
    if (emb_search_plan_get(s, sw->queries, &sw->p, &pl) != 0) {
        srv_reply_problem(r, 422, "invalid-value", "this search cannot be planned");
        goto fail;
    }
    sw->candidates = pl.candidates;
    if ((uint64_t)sw->nq * pl.candidates > MAX_CANDIDATE_SLOTS) {
        srv_reply_problem(r, 422, "invalid-value",
                          "queries x k x oversample = %llu candidates exceeds %u; use fewer "
                          "queries, a smaller k or oversample",
                          (unsigned long long)sw->nq * pl.candidates, MAX_CANDIDATE_SLOTS);
        goto fail;
    }
    free(refs);
    json_decref(j);
    *out = sw;
    return 0;
fail:
    free(refs);
    search_free(sw);
    json_decref(j);
    return -1;
}

/* ---- jobs ---- */

typedef struct api_work {
    const srv_config *cfg;
    gather_work *gather;
    search_work *search;
} api_work;

static srv_job *job_run(srv_job *base)
{
    srv_api_job *j = (srv_api_job *)base;
    api_work *w = j->work;
    if (atomic_load(&j->canceled))
        return base; /* nobody waits for it any more */
    if (w->gather)
        gather_run(w->gather, &j->reply);
    else
        search_run(w->search, &j->reply, w->cfg);
    return base;
}

static srv_api_job *job_new(const srv_config *cfg, gather_work *g, search_work *s)
{
    srv_api_job *j = calloc(1, sizeof *j);
    api_work *w = calloc(1, sizeof *w);
    if (!j || !w) {
        free(j);
        free(w);
        return NULL;
    }
    w->cfg = cfg;
    w->gather = g;
    w->search = s;
    j->base.run = job_run;
    j->work = w;
    atomic_init(&j->canceled, 0);
    return j;
}

void srv_api_job_free(srv_api_job *j)
{
    if (!j)
        return;
    api_work *w = j->work;
    if (w) {
        gather_free(w->gather);
        search_free(w->search);
        free(w);
    }
    srv_reply_free(&j->reply);
    free(j->parts);
    free(j);
}

/* ---- metrics ---- */

typedef struct stats_ctx {
    srv_table **all;
    size_t n;
} stats_ctx;

static int table_stats(int slot, srv_table_stats *out, void *ctx)
{
    const stats_ctx *c = ctx;
    for (size_t i = 0; i < c->n; i++)
        if (c->all[i]->metrics_slot == slot) {
            out->rows = c->all[i]->store->rows;
            out->map = c->all[i]->store->_map;
            out->map_len = c->all[i]->store->_map_len;
            return 0;
        }
    return -1;
}

static void get_metrics(srv_reply *r)
{
    stats_ctx c = {0};
    c.all = srv_tables_all(&c.n);
    size_t len;
    char *text = c.all ? srv_metrics_render(&len, table_stats, &c) : NULL;
    for (size_t i = 0; c.all && i < c.n; i++)
        srv_table_put(c.all[i]);
    free(c.all);
    if (!text) {
        srv_reply_problem(r, 500, "internal", "out of memory rendering metrics");
        return;
    }
    reply_body(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

void srv_api_thread_exit(void)
{
    emb_scratch_free(tl_scratch);
    emb_batch_scratch_free(tl_batch);
    free(tl_hits);
    free(tl_counts);
    tl_scratch = NULL;
    tl_batch = NULL;
    tl_hits = NULL;
    tl_counts = NULL;
    tl_cand = tl_batch_n = tl_batch_cand = tl_counts_cap = 0;
    tl_hits_cap = 0;
}

/* ---- dispatch ---- */

int srv_api_handle(const srv_config *cfg, const srv_api_request *q, srv_reply *r, srv_api_job **job)
{
    switch (q->route) {
    case SRV_ROUTE_HEALTHZ:
        reply_body(r, 200, "application/json", strdup("{\"status\":\"ok\"}"), 15);
        return 0;
    case SRV_ROUTE_READYZ:
        if (atomic_load(&srv_draining))
            srv_reply_problem(r, 503, "draining", "draining: the server is shutting down");
        else
            reply_body(r, 200, "application/json", strdup("{\"status\":\"ready\"}"), 18);
        return 0;
    case SRV_ROUTE_METRICS: get_metrics(r); return 0;
    case SRV_ROUTE_OPENAPI: {
        char *b = malloc(srv_openapi_yaml_len + 1);
        if (!b) {
            srv_reply_problem(r, 500, "internal", "out of memory");
            return 0;
        }
        memcpy(b, srv_openapi_yaml, srv_openapi_yaml_len);
        reply_body(r, 200, "application/yaml", b, srv_openapi_yaml_len);
        return 0;
    }
    case SRV_ROUTE_TABLES: get_tables(r); return 0;
    case SRV_ROUTE_TABLE: get_table(q, r); return 0;
    case SRV_ROUTE_ROW:
    case SRV_ROUTE_KEY: get_row(q, r); return 0;
    case SRV_ROUTE_RELOAD: {
        char *report;
        size_t len;
        srv_tables_reload(&report, &len);
        if (!report)
            srv_reply_problem(r, 500, "internal", "out of memory");
        else
            reply_body(r, 200, "application/json", report, len);
        return 0;
    }
    case SRV_ROUTE_GATHER: {
        gather_work *g;
        if (post_gather(cfg, q, r, &g) != 0)
            return 0;
        if (g->n * g->t->store->dim <= INLINE_GATHER_VALUES) {
            gather_run(g, r);
            gather_free(g);
            return 0;
        }
        if (!(*job = job_new(cfg, g, NULL))) {
            gather_free(g);
            srv_reply_problem(r, 500, "internal", "out of memory");
            return 0;
        }
        return 1;
    }
    case SRV_ROUTE_SEARCH: {
        search_work *s;
        if (post_search(cfg, q, r, &s) != 0)
            return 0;
        if (!(*job = job_new(cfg, NULL, s))) {
            search_free(s);
            srv_reply_problem(r, 500, "internal", "out of memory");
            return 0;
        }
        if (split_search(cfg, s, *job) < 0) {
            srv_api_job_free(*job);
            *job = NULL;
            srv_reply_problem(r, 500, "internal", "out of memory");
            return 0;
        }
        return 1;
    }
    default: srv_reply_problem(r, 404, "route-not-found", "no such endpoint"); return 0;
    }
}
