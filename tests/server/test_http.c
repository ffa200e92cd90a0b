/*
 * test_http.c - integration tests: the real embd serve on loopback, every endpoint and every
 * documented error status, with libcurl (and raw sockets where curl would fix the request).
 *
 * Suites: http (the demo table, --max-batch 64), wide (the demo with --max-batch 1000, for
 * gathers big enough to go to the worker pool and brute-force checks of search), odd (stores
 * packed here with keys holding '/', ' ', '%', '?', '#', '+' and non-ASCII, a keyless table).
 * Every check names status, Content-Type and the problem "type" the contract
 * (proto/openapi.yaml) gives. Exchanges are recorded to $EMBD_EXCHANGES with their headers for
 * tests/contract/validate.mjs (HEAD and raw-socket exchanges are not: the contract has no HEAD
 * operations).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fixture.h"
#include "helpers.h"

static th_server srv;
static const th_server *cur; /* the server the hx_ helpers talk to */

static void start_demo(void)
{
    const char *args[] = {"--threads", "2", "--max-batch", "64", NULL, NULL};
    char store[600];
    snprintf(store, sizeof store, "demo=%s", th_demo_store());
    args[4] = store;
    th_server_start(&srv, args);
    cur = &srv;
}

static void stop_demo(void)
{
    int rc = th_server_stop(&srv, SIGTERM);
    cr_expect_eq(rc, 0, "embd serve exits 0 after SIGTERM (got %d)", rc);
}

TestSuite(http, .init = start_demo, .fini = stop_demo, .timeout = 120);

/* GET path expecting status; returns the response (caller frees). */
static th_response get(const char *path, long status)
{
    th_response r;
    cr_assert_eq(th_request(&srv, "GET", path, NULL, NULL, &r), 0, "GET %s", path);
    cr_assert_eq(r.status, status, "GET %s: status %ld, want %ld: %s", path, r.status, status,
                 r.body);
    cr_assert(r.request_id[0], "GET %s: no X-Request-Id", path);
    return r;
}

static th_response post(const char *path, const char *body, long status)
{
    th_response r;
    cr_assert_eq(th_request(&srv, "POST", path, body, NULL, &r), 0, "POST %s", path);
    cr_assert_eq(r.status, status, "POST %s %s: status %ld, want %ld: %s", path, body, r.status,
                 status, r.body);
    cr_assert(r.request_id[0]);
    if (status >= 400)
        cr_assert_str_eq(r.content_type, "application/problem+json", "errors are problem+json");
    return r;
}

Test(http, health_ready_metrics_openapi)
{
    th_response r = get("/healthz", 200);
    cr_assert(strstr(r.body, "\"ok\""));
    th_response_free(&r);
    r = get("/readyz", 200);
    th_response_free(&r);
    r = get("/metrics", 200);
    cr_assert(strstr(r.content_type, "text/plain"));
    cr_assert(strstr(r.body, "embd_build_info"), "%s", r.body);
    th_response_free(&r);
    r = get("/openapi.yaml", 200);
    cr_assert(strstr(r.body, "openapi: 3.1"), "%.200s", r.body);
    th_response_free(&r);
}

Test(http, tables_and_table)
{
    th_response r = get("/v1/tables", 200);
    cr_assert(strstr(r.body, "\"name\":\"demo\""), "%s", r.body);
    th_response_free(&r);
    r = get("/v1/tables/demo", 200);
    cr_assert(strstr(r.body, "\"dim\":64"), "%s", r.body);
    cr_assert(strstr(r.body, "\"recall_at_10\""), "metadata carries the pack figures");
    cr_assert(r.etag[0], "table responses carry an ETag");
    th_response_free(&r);
    r = get("/v1/tables/nope", 404);
    th_response_free(&r);
}

Test(http, row_and_key)
{
    th_response r = get("/v1/tables/demo/rows/0", 200);
    cr_assert(strstr(r.body, "\"id\":0"), "%s", r.body);
    cr_assert(strstr(r.body, "\"vector\":["), "%s", r.body);
    th_response_free(&r);
    r = get("/v1/tables/demo/keys/apple", 200);
    cr_assert(strstr(r.body, "\"key\":\"apple\""), "%s", r.body);
    th_response_free(&r);
    r = get("/v1/tables/demo/rows/0?encoding=base64&dtype=f16", 200);
    cr_assert(strstr(r.body, "\"vector\":\""), "%s", r.body);
    th_response_free(&r);
    r = get("/v1/tables/demo/rows/999999", 404);
    th_response_free(&r);
    r = get("/v1/tables/demo/rows/-1", 422);
    th_response_free(&r);
    r = get("/v1/tables/demo/rows/abc", 422);
    th_response_free(&r);
    r = get("/v1/tables/demo/keys/no-such-key", 404);
    th_response_free(&r);
}

Test(http, gather)
{
    th_response r = post("/v1/tables/demo/gather", "{\"ids\":[0,5,99999]}", 200);
    cr_assert(strstr(r.body, "\"missing\":[2]"), "%s", r.body);
    cr_assert(strstr(r.body, ",null]"), "%s", r.body);
    th_response_free(&r);
    r = post("/v1/tables/demo/gather", "{\"keys\":[\"apple\",\"zzz\"],\"on_missing\":\"error\"}",
             404);
    th_response_free(&r);
    r = post("/v1/tables/demo/gather", "{\"keys\":[\"apple\",\"pear\"],\"pool\":\"mean\"}", 200);
    cr_assert(strstr(r.body, "\"vector\":["), "%s", r.body);
    th_response_free(&r);
}

Test(http, search)
{
    th_response r = post("/v1/tables/demo/search", "{\"key\":\"apple\",\"k\":5}", 200);
    cr_assert(strstr(r.body, "\"results\":[{"), "%s", r.body);
    cr_assert_null(strstr(r.body, "\"key\":\"apple\""), "the query row is excluded: %s", r.body);
    th_response_free(&r);
    r = post("/v1/tables/demo/search", "{\"id\":3,\"k\":3,\"exact\":true,\"metric\":\"l2\"}", 200);
    cr_assert(strstr(r.body, "\"mode\":\"exact\""), "%s", r.body);
    th_response_free(&r);
    r = post("/v1/tables/demo/search", "{\"keys\":[\"apple\",\"pear\"],\"k\":3}", 200);
    th_response_free(&r);
}

Test(http, errors)
{
    th_response r = post("/v1/tables/demo/search", "{\"key\":", 400);
    th_response_free(&r);
    r = post("/v1/tables/demo/search", "{\"key\":\"apple\",\"k\":0}", 422);
    th_response_free(&r);
    r = post("/v1/tables/demo/search", "{\"key\":\"apple\",\"k\":\"ten\"}", 400);
    th_response_free(&r);
    r = post("/v1/tables/demo/search", "{\"vector\":[1,2,3]}", 422);
    th_response_free(&r);
    r = post("/v1/tables/demo/search", "{\"key\":\"apple\",\"key\":\"pear\"}", 400);
    th_response_free(&r);
    r = post("/v1/tables/demo/search", "{\"vector\":[1e39]}", 422);
    th_response_free(&r);
    r = get("/v1/tables/demo/search", 405);
    cr_assert_str_eq(r.allow, "POST");
    th_response_free(&r);
    r = get("/nowhere", 404);
    th_response_free(&r);
}

/* ==== a client that keeps every response header, and records them for the contract check ==== */

typedef struct hx_resp {
    long status;
    int rc; /* CURLcode */
    char *body;
    size_t len;
    char what[160]; /* "METHOD path" for messages */
    char hdrs[8192];
    size_t hdrs_len;
    char ctype[128], rid[200], etag[80], retry[32], allow[64], www[128], clen[32], conn[32];
    char missing[1024];
    int has_missing;
} hx_resp;

static size_t hx_on_body(char *data, size_t size, size_t n, void *ud)
{
    hx_resp *r = ud;
    size_t add = size * n;
    char *p = realloc(r->body, r->len + add + 1);
    if (!p)
        return 0;
    memcpy(p + r->len, data, add);
    r->body = p;
    r->len += add;
    r->body[r->len] = 0;
    return add;
}

static int hx_copy(char *dst, size_t cap, const char *line, size_t n, const char *name)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(line, name, nl) || line[nl] != ':')
        return 0;
    const char *v = line + nl + 1;
    while (v < line + n && *v == ' ')
        v++;
    size_t vl = (size_t)(line + n - v);
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    snprintf(dst, cap, "%.*s", (int)vl, v);
    return 1;
}

static size_t hx_on_header(char *data, size_t size, size_t n, void *ud)
{
    hx_resp *r = ud;
    size_t len = size * n;
    if (len >= 5 && !strncmp(data, "HTTP/", 5)) { /* a new response (after a 1xx): start over */
        r->hdrs_len = 0;
        r->ctype[0] = r->rid[0] = r->etag[0] = r->retry[0] = r->allow[0] = r->www[0] = 0;
        r->clen[0] = r->conn[0] = r->missing[0] = 0;
        r->has_missing = 0;
    }
    if (r->hdrs_len + len < sizeof r->hdrs) {
        memcpy(r->hdrs + r->hdrs_len, data, len);
        r->hdrs_len += len;
        r->hdrs[r->hdrs_len] = 0;
    }
    hx_copy(r->ctype, sizeof r->ctype, data, len, "Content-Type");
    hx_copy(r->rid, sizeof r->rid, data, len, "X-Request-Id");
    hx_copy(r->etag, sizeof r->etag, data, len, "ETag");
    hx_copy(r->retry, sizeof r->retry, data, len, "Retry-After");
    hx_copy(r->allow, sizeof r->allow, data, len, "Allow");
    hx_copy(r->www, sizeof r->www, data, len, "WWW-Authenticate");
    hx_copy(r->clen, sizeof r->clen, data, len, "Content-Length");
    hx_copy(r->conn, sizeof r->conn, data, len, "Connection");
    if (hx_copy(r->missing, sizeof r->missing, data, len, "X-Embd-Missing"))
        r->has_missing = 1;
    return len;
}

/* Appends s as a JSON string; bytes >= 0x80 are kept (UTF-8) unless binary. */
static void json_str(FILE *f, const char *s, size_t n, int binary)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == 0x7f || (binary && c >= 0x80))
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* One JSON line per exchange to $EMBD_EXCHANGES, written with a single write(2) (O_APPEND), so
 * concurrent writers never interleave. */
static void hx_record(const char *method, const char *path, const hx_resp *r)
{
    const char *file = getenv("EMBD_EXCHANGES");
    if (!file || !*file || !strcmp(method, "HEAD"))
        return;
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    if (!f)
        return;
    int binary = strstr(r->ctype, "octet-stream") != NULL;
    fprintf(f, "{\"method\":\"%s\",\"path\":", method);
    json_str(f, path, strlen(path), 1);
    fprintf(f, ",\"status\":%ld,\"content_type\":", r->status);
    json_str(f, r->ctype, strlen(r->ctype), 0);
    fprintf(f, ",\"body\":");
    json_str(f, r->body ? r->body : "", r->len, binary);
    fprintf(f, ",\"headers\":{");
    const struct {
        const char *name, *value;
        int present;
    } h[] = {{"X-Request-Id", r->rid, r->rid[0] != 0},
             {"ETag", r->etag, r->etag[0] != 0},
             {"Retry-After", r->retry, r->retry[0] != 0},
             {"Allow", r->allow, r->allow[0] != 0},
             {"WWW-Authenticate", r->www, r->www[0] != 0},
             {"X-Embd-Missing", r->missing, r->has_missing}};
    int first = 1;
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
        if (h[i].present) {
            fprintf(f, "%s\"%s\":", first ? "" : ",", h[i].name);
            json_str(f, h[i].value, strlen(h[i].value), 1);
            first = 0;
        }
    fprintf(f, "},\"note\":\"test_http.c\"}\n");
    fclose(f);
    int fd = open(file, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, buf, blen);
        (void)w;
        close(fd);
    }
    free(buf);
}

/* One request to cur. body may hold NULs (blen); headers is a NULL-terminated list. */
static hx_resp hx_req(const char *method, const char *path, const char *body, size_t blen,
                      const char *const *headers)
{
    hx_resp r;
    memset(&r, 0, sizeof r);
    snprintf(r.what, sizeof r.what, "%s %.140s", method, path);
    CURL *c = curl_easy_init();
    cr_assert_not_null(c);
    char url[8192];
    snprintf(url, sizeof url, "%s%s", cur->base, path);
    struct curl_slist *hl = NULL;
    int has_ct = 0;
    for (int i = 0; headers && headers[i]; i++) {
        hl = curl_slist_append(hl, headers[i]);
        if (!strncasecmp(headers[i], "Content-Type", 12))
            has_ct = 1;
    }
    if (body && !has_ct)
        hl = curl_slist_append(hl, "Content-Type: application/json");
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)blen);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, hx_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, hx_on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    r.rc = (int)curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    if (!r.body)
        r.body = calloc(1, 1);
    cr_assert_eq(r.rc, 0, "%s: curl error %d (%s)", r.what, r.rc, curl_easy_strerror(r.rc));
    hx_record(method, path, &r);
    return r;
}

static void hx_free(hx_resp *r)
{
    free(r->body);
    r->body = NULL;
}

static hx_resp GET(const char *path)
{
    return hx_req("GET", path, NULL, 0, NULL);
}

static hx_resp POST(const char *path, const char *body)
{
    return hx_req("POST", path, body, strlen(body), NULL);
}

/* Asserts a 2xx JSON answer and returns the parsed body (caller decrefs). */
static json_t *ok_json(const hx_resp *r, long status)
{
    cr_assert_eq(r->status, status, "%s: status %ld, want %ld: %.300s", r->what, r->status, status,
                 r->body);
    cr_assert_str_eq(r->ctype, "application/json", "%s: Content-Type %s", r->what, r->ctype);
    cr_assert(r->rid[0], "%s: no X-Request-Id", r->what);
    json_error_t e;
    json_t *j = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &e);
    cr_assert_not_null(j, "%s: body is not JSON (%s): %.200s", r->what, e.text, r->body);
    return j;
}

/* Checks (without stopping the test) that r is the problem the contract gives: status,
 * Content-Type application/problem+json, "type" urn:embd:problem:<type>, "status" and a
 * non-empty "detail"; and an X-Request-Id header. Returns 1 when all hold. */
static int problem(const hx_resp *r, long status, const char *type)
{
    int ok = 1;
    char want[96];
    snprintf(want, sizeof want, "urn:embd:problem:%s", type);
#define PCHECK(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            cr_expect(0, __VA_ARGS__);                                                             \
            ok = 0;                                                                                \
        }                                                                                          \
    } while (0)
    PCHECK(r->status == status, "%s: status %ld, want %ld (%s): %.300s", r->what, r->status, status,
           type, r->body);
    PCHECK(!strcmp(r->ctype, "application/problem+json"),
           "%s: Content-Type '%s', want application/problem+json", r->what, r->ctype);
    PCHECK(r->rid[0], "%s: no X-Request-Id", r->what);
    json_error_t e;
    json_t *j = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &e);
    PCHECK(j && json_is_object(j), "%s: problem body is not a JSON object: %.200s", r->what,
           r->body);
    if (j && json_is_object(j)) {
        const char *t = json_string_value(json_object_get(j, "type"));
        PCHECK(t && !strcmp(t, want), "%s: type %s, want %s (detail: %s)", r->what,
               t ? t : "(none)", want, json_string_value(json_object_get(j, "detail")));
        PCHECK(json_integer_value(json_object_get(j, "status")) == status,
               "%s: problem status member is not %ld", r->what, status);
        const char *d = json_string_value(json_object_get(j, "detail"));
        PCHECK(d && *d, "%s: no detail", r->what);
        PCHECK(json_string_value(json_object_get(j, "title")), "%s: no title", r->what);
    }
    json_decref(j);
#undef PCHECK
    return ok;
}

/* Request + problem check in one: method path body expecting status and type. */
static void expect_problem(const char *method, const char *path, const char *body, long status,
                           const char *type)
{
    hx_resp r = hx_req(method, path, body, body ? strlen(body) : 0, NULL);
    if (!problem(&r, status, type) && body)
        cr_log_error("  request body was: %.300s", body);
    hx_free(&r);
}

static void search_problem(const char *body, long status, const char *type)
{
    expect_problem("POST", "/v1/tables/demo/search", body, status, type);
}

static void gather_problem(const char *body, long status, const char *type)
{
    expect_problem("POST", "/v1/tables/demo/gather", body, status, type);
}

/* ==== small decoders ==== */

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Standard base64 with padding; returns the byte count or -1. */
static long b64_decode(const char *s, uint8_t *out, size_t cap)
{
    size_t n = strlen(s), o = 0;
    if (n % 4)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else {
                if (pad)
                    return -1;
                v[k] = b64val((unsigned char)s[i + k]);
                if (v[k] < 0)
                    return -1;
            }
        }
        uint32_t x =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        uint8_t b[3] = {(uint8_t)(x >> 16), (uint8_t)(x >> 8), (uint8_t)x};
        for (int k = 0; k < 3 - pad; k++) {
            if (o >= cap)
                return -1;
            out[o++] = b[k];
        }
    }
    return (long)o;
}

static void b64_encode(const uint8_t *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t x = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = a[x >> 18 & 63];
        out[o++] = a[x >> 12 & 63];
        out[o++] = i + 1 < n ? a[x >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? a[x & 63] : '=';
    }
    out[o] = 0;
}

static float f16_to_f32(uint16_t h)
{
    int e = h >> 10 & 31, m = h & 1023;
    float v = e == 0    ? ldexpf((float)m, -24)
              : e == 31 ? (m ? NAN : INFINITY)
                        : ldexpf((float)(m | 1024), e - 25);
    return h & 0x8000 ? -v : v;
}

static uint16_t f32_to_f16(float f) /* round to nearest even; normal range only */
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)(x >> 16 & 0x8000);
    float a = fabsf(f);
    if (a == 0)
        return sign;
    int e;
    float m = frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    if (e - 1 < -14) {       /* subnormal */
        return sign | (uint16_t)lrintf(ldexpf(a, 24));
    }
    long mant = lrintf(ldexpf(m, 11)); /* 1024..2048 */
    if (mant == 2048) {
        mant = 1024;
        e++;
    }
    return sign | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)(mant - 1024);
}

/* f16 precision: the two values agree to the half-float rounding step of a. */
static int near_f16(double a, double b)
{
    return fabs(a - b) <= fabs(a) * (1.0 / 2048) + 6.0e-8;
}

/* A JSON vector (array of numbers) into out[dim]; asserts the shape. */
static void json_vec(json_t *v, float *out, size_t dim, const char *what)
{
    cr_assert(json_is_array(v), "%s: not an array", what);
    cr_assert_eq(json_array_size(v), dim, "%s: %zu values, want %zu", what, json_array_size(v),
                 dim);
    for (size_t i = 0; i < dim; i++) {
        json_t *x = json_array_get(v, i);
        cr_assert(json_is_number(x), "%s[%zu] is not a number", what, i);
        out[i] = (float)json_number_value(x);
    }
}

/* A base64 vector into out[dim] (f32 or f16 bytes); asserts the length. */
static void b64_vec(json_t *v, float *out, size_t dim, int f16, const char *what)
{
    cr_assert(json_is_string(v), "%s: not a base64 string", what);
    uint8_t *bytes = malloc(dim * 4 + 8);
    long n = b64_decode(json_string_value(v), bytes, dim * 4 + 8);
    cr_assert_eq(n, (long)(dim * (f16 ? 2 : 4)), "%s: %ld bytes, want %zu", what, n,
                 dim * (f16 ? 2 : 4));
    for (size_t i = 0; i < dim; i++) {
        if (f16) {
            uint16_t h;
            memcpy(&h, bytes + 2 * i, 2);
            out[i] = f16_to_f32(h);
        } else {
            memcpy(out + i, bytes + 4 * i, 4);
        }
    }
    free(bytes);
}

/* The JSON vector of one row of the demo table on cur. */
static void row_of(const char *table, uint64_t id, float *out, size_t dim)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/tables/%s/rows/%llu", table, (unsigned long long)id);
    hx_resp r = GET(path);
    json_t *j = ok_json(&r, 200);
    json_vec(json_object_get(j, "vector"), out, dim, path);
    json_decref(j);
    hx_free(&r);
}

/* A JSON array text of dim floats (shortest round-trip form). */
static char *vec_text(const float *v, size_t dim)
{
    char *s = malloc(dim * 20 + 4), *p = s;
    *p++ = '[';
    for (size_t i = 0; i < dim; i++)
        p += sprintf(p, "%s%.9g", i ? "," : "", v[i]);
    *p++ = ']';
    *p = 0;
    return s;
}

/* Percent-encodes every byte outside RFC 3986's unreserved set. */
static void pct(const char *s, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            strchr("-._~", c)) {
            *out++ = (char)c;
        } else {
            *out++ = '%';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        }
    }
    *out = 0;
}

/* ==== raw sockets: requests curl would fix, and whether the server closed ==== */

typedef th_raw_result raw_result;

/* Sends data on a new connection and reads the answer (until EOF or timeout_ms). */
static raw_result raw_exchange(const th_server *s, const char *data, size_t len, int timeout_ms)
{
    int fd = th_connect(s);
    th_send(fd, data, len, timeout_ms); /* a server that closes early is what some tests want */
    raw_result rr;
    th_read(fd, timeout_ms, 0, &rr);
    close(fd);
    return rr;
}

static int raw_status(const raw_result *rr)
{
    int st = 0;
    if (sscanf(rr->data, "HTTP/1.%*d %d", &st) != 1)
        return 0;
    return st;
}

/* The value of a header of a raw response (into out), or 0 when absent. */
static int raw_header(const raw_result *rr, const char *name, char *out, size_t cap)
{
    const char *end = strstr(rr->data, "\r\n\r\n");
    for (const char *p = strstr(rr->data, "\r\n"); p && (!end || p < end);
         p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2, *eol = strstr(line, "\r\n");
        if (!eol)
            break;
        if (hx_copy(out, cap, line, (size_t)(eol - line), name))
            return 1;
    }
    return 0;
}

static const char *raw_body(const raw_result *rr)
{
    const char *end = strstr(rr->data, "\r\n\r\n");
    return end ? end + 4 : "";
}

/* ==== the service endpoints ==== */

Test(http, service_endpoints_exact_bodies_and_types)
{
    cur = &srv;
    hx_resp r = GET("/healthz");
    json_t *j = ok_json(&r, 200);
    cr_expect_str_eq(json_string_value(json_object_get(j, "status")), "ok");
    cr_expect_eq(json_object_size(j), 1, "Health has only status: %s", r.body);
    json_decref(j);
    hx_free(&r);

    r = GET("/readyz");
    j = ok_json(&r, 200);
    cr_expect_str_eq(json_string_value(json_object_get(j, "status")), "ready");
    cr_expect_eq(json_object_size(j), 1, "Ready has only status: %s", r.body);
    json_decref(j);
    hx_free(&r);

    r = GET("/metrics");
    cr_assert_eq(r.status, 200);
    cr_expect(!strncmp(r.ctype, "text/plain; version=0.0.4", 25), "metrics Content-Type %s",
              r.ctype);
    cr_expect(strstr(r.body, "# TYPE embd_http_requests_total counter"), "%.300s", r.body);
    cr_expect(strstr(r.body, "embd_table_rows{table=\"demo\"} 314"), "%.300s", r.body);
    cr_expect(r.rid[0]);
    hx_free(&r);

    r = GET("/openapi.yaml");
    cr_assert_eq(r.status, 200);
    cr_expect_str_eq(r.ctype, "application/yaml");
    size_t len;
    char *spec = th_read_file(EMBD_SOURCE_DIR "/proto/openapi.yaml", &len);
    cr_expect_eq(r.len, len, "GET /openapi.yaml is proto/openapi.yaml byte for byte (%zu vs %zu)",
                 r.len, len);
    cr_expect(r.len == len && !memcmp(r.body, spec, len), "the served contract differs");
    free(spec);
    hx_free(&r);
}

Test(http, head_on_every_get_route)
{
    cur = &srv;
    static const char *paths[] = {"/healthz",
                                  "/readyz",
                                  "/metrics",
                                  "/openapi.yaml",
                                  "/v1/tables",
                                  "/v1/tables/demo",
                                  "/v1/tables/demo/rows/7",
                                  "/v1/tables/demo/rows/7?encoding=base64&dtype=f16",
                                  "/v1/tables/demo/keys/apple"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        hx_resp g = GET(paths[i]);
        hx_resp h = hx_req("HEAD", paths[i], NULL, 0, NULL);
        cr_expect_eq(h.status, 200, "HEAD %s: %ld", paths[i], h.status);
        cr_expect_str_eq(h.ctype, g.ctype, "HEAD %s: Content-Type as GET", paths[i]);
        cr_expect_eq(h.len, 0, "HEAD %s has no body", paths[i]);
        cr_expect(h.rid[0], "HEAD %s: X-Request-Id", paths[i]);
        if (strncmp(paths[i], "/metrics", 8) && h.clen[0])
            cr_expect_eq(strtoul(h.clen, NULL, 10), g.len, "HEAD %s: Content-Length %s vs %zu",
                         paths[i], h.clen, g.len);
        if (!strncmp(paths[i], "/v1/tables/", 11))
            cr_expect_str_eq(h.etag, g.etag, "HEAD %s: the ETag of GET", paths[i]);
        hx_free(&g);
        hx_free(&h);
    }
    hx_resp h = hx_req("HEAD", "/v1/tables/nope", NULL, 0, NULL);
    cr_expect_eq(h.status, 404);
    cr_expect_str_eq(h.ctype, "application/problem+json");
    hx_free(&h);
    h = hx_req("HEAD", "/v1/tables/demo/search", NULL, 0, NULL);
    cr_expect_eq(h.status, 405);
    cr_expect_str_eq(h.allow, "POST");
    hx_free(&h);
}

/* ==== tables ==== */

Test(http, tables_list_and_table_document)
{
    cur = &srv;
    hx_resp r = GET("/v1/tables");
    json_t *j = ok_json(&r, 200);
    json_t *tabs = json_object_get(j, "tables");
    cr_assert(json_is_array(tabs) && json_array_size(tabs) == 1, "%s", r.body);
    json_t *t = json_array_get(tabs, 0);
    cr_expect_str_eq(json_string_value(json_object_get(t, "name")), "demo");
    cr_expect_eq(json_integer_value(json_object_get(t, "rows")), 314);
    cr_expect_eq(json_integer_value(json_object_get(t, "dim")), 64);
    json_t *codecs = json_object_get(t, "codecs");
    cr_expect(json_array_size(codecs) == 2 &&
                  !strcmp(json_string_value(json_array_get(codecs, 0)), "f16") &&
                  !strcmp(json_string_value(json_array_get(codecs, 1)), "q1"),
              "codecs [f16, q1]");
    cr_expect_str_eq(json_string_value(json_object_get(t, "metric")), "cos");
    cr_expect(json_is_true(json_object_get(t, "keys")));
    cr_expect(json_is_false(json_object_get(t, "normalized")));
    cr_expect_eq(json_integer_value(json_object_get(t, "oversample_default")), 2);
    const char *crc = json_string_value(json_object_get(t, "checksum"));
    cr_assert(crc && strlen(crc) == 8 && strspn(crc, "0123456789abcdef") == 8, "checksum %s", crc);
    cr_expect(json_is_object(json_object_get(t, "metadata")));

    hx_resp one = GET("/v1/tables/demo");
    json_t *tj = ok_json(&one, 200);
    cr_expect(json_equal(tj, t), "GET /v1/tables/demo is the list's entry");
    /* ETag: strong, starts with the checksum, stable. */
    char want[16];
    snprintf(want, sizeof want, "\"%.8s", crc);
    cr_expect(!strncmp(one.etag, want, 9), "ETag %s starts with the checksum %s", one.etag, crc);
    size_t el = strlen(one.etag);
    cr_expect(el >= 10 && one.etag[el - 1] == '"' && strncmp(one.etag, "W/", 2),
              "a strong, quoted ETag: %s", one.etag);
    for (int i = 0; i < 3; i++) {
        hx_resp again = GET("/v1/tables/demo");
        cr_expect_str_eq(again.etag, one.etag, "the ETag is stable across requests");
        hx_free(&again);
    }
    json_decref(tj);
    json_decref(j);
    hx_free(&one);
    hx_free(&r);
    r = GET("/v1/tables/nope");
    problem(&r, 404, "table-not-found");
    hx_free(&r);
}

Test(http, etag_on_every_answer_about_a_table)
{
    /* "Responses about one table (/v1/tables/{table} and everything under it) that succeed
     * carry an ETag"; gather and search 200s declare it required. */
    cur = &srv;
    hx_resp one = GET("/v1/tables/demo");
    cr_assert(one.etag[0]);
    const char *under[][2] = {{"GET", "/v1/tables/demo/rows/3"},
                              {"GET", "/v1/tables/demo/keys/apple"},
                              {"POST", "/v1/tables/demo/gather"},
                              {"POST", "/v1/tables/demo/search"}};
    for (size_t i = 0; i < 4; i++) {
        const char *body = !strcmp(under[i][0], "GET")     ? NULL
                           : strstr(under[i][1], "gather") ? "{\"ids\":[1,2]}"
                                                           : "{\"key\":\"apple\",\"k\":2}";
        hx_resp u = hx_req(under[i][0], under[i][1], body, body ? strlen(body) : 0, NULL);
        cr_expect_eq(u.status, 200, "%s", u.what);
        cr_expect_str_eq(u.etag, one.etag, "%s: ETag '%s', want the table's %s", u.what, u.etag,
                         one.etag);
        hx_free(&u);
    }
    hx_free(&one);
}

/* ==== one row ==== */

Test(http, row_json_base64_f32_and_f16_agree)
{
    cur = &srv;
    for (int id = 0; id < 314; id += 61) {
        char path[128];
        float js[64], b32[64], b16[64];
        snprintf(path, sizeof path, "/v1/tables/demo/rows/%d", id);
        hx_resp r = GET(path);
        json_t *j = ok_json(&r, 200);
        cr_expect_eq(json_integer_value(json_object_get(j, "id")), id);
        cr_expect(json_is_string(json_object_get(j, "key")), "demo rows have keys");
        json_vec(json_object_get(j, "vector"), js, 64, path);
        cr_expect_eq(json_object_size(j), 3, "id, key, vector: %s", r.body);
        json_decref(j);
        hx_free(&r);

        snprintf(path, sizeof path, "/v1/tables/demo/rows/%d?encoding=base64", id);
        r = GET(path);
        j = ok_json(&r, 200);
        b64_vec(json_object_get(j, "vector"), b32, 64, 0, path);
        json_decref(j);
        hx_free(&r);

        snprintf(path, sizeof path, "/v1/tables/demo/rows/%d?encoding=base64&dtype=f16", id);
        r = GET(path);
        j = ok_json(&r, 200);
        b64_vec(json_object_get(j, "vector"), b16, 64, 1, path);
        json_decref(j);
        hx_free(&r);

        for (int i = 0; i < 64; i++) {
            cr_expect(near_f16(js[i], b32[i]), "row %d [%d]: json %.9g, base64 f32 %.9g", id, i,
                      js[i], b32[i]);
            cr_expect(near_f16(js[i], b16[i]), "row %d [%d]: json %.9g, base64 f16 %.9g", id, i,
                      js[i], b16[i]);
        }
    }
    hx_resp r = GET("/v1/tables/demo/rows/5?encoding=json&dtype=f32");
    json_decref(ok_json(&r, 200));
    hx_free(&r);
}

Test(http, row_query_options_invalid)
{
    cur = &srv;
    expect_problem("GET", "/v1/tables/demo/rows/0?encoding=hex", NULL, 422, "invalid-value");
    expect_problem("GET", "/v1/tables/demo/rows/0?encoding=base64&dtype=f64", NULL, 422,
                   "invalid-value");
    expect_problem("GET", "/v1/tables/demo/keys/apple?encoding=base32", NULL, 422, "invalid-value");
    /* Unknown query parameters are ignored. */
    hx_resp r = GET("/v1/tables/demo/rows/0?frobnicate=1");
    json_decref(ok_json(&r, 200));
    hx_free(&r);
}

Test(http, row_dtype_is_ignored_with_json_encoding)
{
    /* openapi: parameter dtype "With encoding=base64, the float width of the bytes; ignored
     * with json." */
    cur = &srv;
    hx_resp r = GET("/v1/tables/demo/rows/0?dtype=f16");
    cr_expect_eq(r.status, 200, "GET rows/0?dtype=f16: %ld %s", r.status, r.body);
    hx_free(&r);
    r = GET("/v1/tables/demo/keys/apple?encoding=json&dtype=f16");
    cr_expect_eq(r.status, 200, "GET keys/apple?encoding=json&dtype=f16: %ld %s", r.status, r.body);
    hx_free(&r);
}

Test(http, row_ids_in_the_path)
{
    cur = &srv;
    hx_resp r = GET("/v1/tables/demo/rows/313");
    json_decref(ok_json(&r, 200));
    hx_free(&r);
    r = GET("/v1/tables/demo/rows/007");
    json_t *j = ok_json(&r, 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "id")), 7, "leading zeros are digits");
    json_decref(j);
    hx_free(&r);
    expect_problem("GET", "/v1/tables/demo/rows/314", NULL, 404, "row-not-found");
    expect_problem("GET", "/v1/tables/demo/rows/9007199254740991", NULL, 404, "row-not-found");
    expect_problem("GET", "/v1/tables/demo/rows/9007199254740992", NULL, 422, "invalid-value");
    expect_problem("GET", "/v1/tables/demo/rows/9223372036854775808", NULL, 422, "invalid-value");
    expect_problem("GET", "/v1/tables/demo/rows/18446744073709551617", NULL, 422, "invalid-value");
    expect_problem("GET", "/v1/tables/demo/rows/-1", NULL, 422, "invalid-value");
    expect_problem("GET", "/v1/tables/demo/rows/+1", NULL, 422, "invalid-value");
    expect_problem("GET", "/v1/tables/demo/rows/1.0", NULL, 422, "invalid-value");
    expect_problem("GET", "/v1/tables/demo/rows/1e2", NULL, 422, "invalid-value");
    expect_problem("GET", "/v1/tables/demo/rows/0x10", NULL, 422, "invalid-value");
    expect_problem("GET", "/v1/tables/demo/rows/apple", NULL, 422, "invalid-value");
    expect_problem("GET", "/v1/tables/demo/rows/%20", NULL, 422, "invalid-value");
    expect_problem("GET", "/v1/tables/demo2/rows/0", NULL, 404, "table-not-found");
    expect_problem("GET", "/v1/tables/demo2/keys/apple", NULL, 404, "table-not-found");
}

Test(http, row_id_with_many_leading_zeros)
{
    /* RowId: "one or more ASCII digits"; only the value (<= 2^53-1) limits it. */
    cur = &srv;
    hx_resp r = GET("/v1/tables/demo/rows/00000000000000000000042");
    cr_expect_eq(r.status, 200, "rows/00000000000000000000042 (value 42): %ld %s", r.status,
                 r.body);
    hx_free(&r);
}

Test(http, keys_plain_and_percent_encoded)
{
    cur = &srv;
    float a[64], b[64];
    row_of("demo", 0, a, 64);
    const char *paths[] = {"/v1/tables/demo/keys/apple", "/v1/tables/demo/keys/%61pple",
                           "/v1/tables/demo/keys/%61%70%70%6C%65", "/v1/tables/demo/keys/appl%65"};
    for (size_t i = 0; i < 4; i++) {
        hx_resp r = GET(paths[i]);
        json_t *j = ok_json(&r, 200);
        cr_expect_eq(json_integer_value(json_object_get(j, "id")), 0, "%s", paths[i]);
        cr_expect_str_eq(json_string_value(json_object_get(j, "key")), "apple");
        json_vec(json_object_get(j, "vector"), b, 64, paths[i]);
        cr_expect(!memcmp(a, b, sizeof a), "%s: the vector of rows/0", paths[i]);
        json_decref(j);
        hx_free(&r);
    }
    hx_resp r = GET("/v1/tables/demo/keys/mercury?encoding=base64&dtype=f16");
    json_t *j = ok_json(&r, 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "id")), 304);
    json_decref(j);
    hx_free(&r);
    expect_problem("GET", "/v1/tables/demo/keys/Apple", NULL, 404, "key-not-found");
    expect_problem("GET", "/v1/tables/demo/keys/apple%20", NULL, 404, "key-not-found");
    expect_problem("GET", "/v1/tables/demo/keys/kiwi%20fruit", NULL, 404, "key-not-found");
}

Test(http, key_longer_than_4096_bytes)
{
    /* Keys are at most 4096 bytes: a longer one is 422 (openapi: getRowByKey 422). */
    cur = &srv;
    char *path = malloc(8000);
    strcpy(path, "/v1/tables/demo/keys/");
    memset(path + strlen(path), 'k', 4096);
    path[21 + 4096] = 0;
    expect_problem("GET", path, NULL, 404, "key-not-found"); /* 4096 bytes: allowed, absent */
    strcat(path, "k");
    expect_problem("GET", path, NULL, 422, "invalid-value");
    char *body = malloc(8000);
    snprintf(body, 8000, "{\"key\":\"%s\"}", path + 21);
    search_problem(body, 422, "invalid-value");
    snprintf(body, 8000, "{\"keys\":[\"%s\"]}", path + 21);
    gather_problem(body, 422, "invalid-value");
    free(body);
    free(path);
}

/* ==== gather ==== */

Test(http, gather_ids_keys_and_missing_in_request_order)
{
    cur = &srv;
    float r0[64], r5[64], r313[64], r1[64], v[64];
    row_of("demo", 0, r0, 64);
    row_of("demo", 5, r5, 64);
    row_of("demo", 313, r313, 64);
    row_of("demo", 1, r1, 64);
    hx_resp r = POST("/v1/tables/demo/gather", "{\"ids\":[5,99999,0,313,314,5]}");
    json_t *j = ok_json(&r, 200);
    json_t *vs = json_object_get(j, "vectors");
    cr_assert_eq(json_array_size(vs), 6, "%s", r.body);
    json_vec(json_array_get(vs, 0), v, 64, "vectors[0]");
    cr_expect(!memcmp(v, r5, sizeof v), "vectors[0] is row 5");
    cr_expect(json_is_null(json_array_get(vs, 1)));
    json_vec(json_array_get(vs, 2), v, 64, "vectors[2]");
    cr_expect(!memcmp(v, r0, sizeof v), "vectors[2] is row 0");
    json_vec(json_array_get(vs, 3), v, 64, "vectors[3]");
    cr_expect(!memcmp(v, r313, sizeof v), "vectors[3] is row 313");
    cr_expect(json_is_null(json_array_get(vs, 4)));
    json_vec(json_array_get(vs, 5), v, 64, "vectors[5]");
    cr_expect(!memcmp(v, r5, sizeof v), "a repeated id is returned twice");
    json_t *miss = json_object_get(j, "missing");
    cr_expect(json_array_size(miss) == 2 && json_integer_value(json_array_get(miss, 0)) == 1 &&
                  json_integer_value(json_array_get(miss, 1)) == 4,
              "missing [1,4]: %s", r.body);
    cr_expect(!r.has_missing, "X-Embd-Missing is for binary gathers only");
    json_decref(j);
    hx_free(&r);

    r = POST("/v1/tables/demo/gather",
             "{\"keys\":[\"banana\",\"zzz\",\"apple\"],\"on_missing\":\"null\"}");
    j = ok_json(&r, 200);
    vs = json_object_get(j, "vectors");
    cr_assert_eq(json_array_size(vs), 3);
    json_vec(json_array_get(vs, 0), v, 64, "vectors[0]");
    cr_expect(!memcmp(v, r1, sizeof v), "banana is row 1");
    cr_expect(json_is_null(json_array_get(vs, 1)));
    json_vec(json_array_get(vs, 2), v, 64, "vectors[2]");
    cr_expect(!memcmp(v, r0, sizeof v), "apple is row 0");
    miss = json_object_get(j, "missing");
    cr_expect(json_array_size(miss) == 1 && json_integer_value(json_array_get(miss, 0)) == 1,
              "missing [1]: %s", r.body);
    json_decref(j);
    hx_free(&r);

    r = POST("/v1/tables/demo/gather", "{\"ids\":[1,2]}");
    j = ok_json(&r, 200);
    cr_expect_eq(json_array_size(json_object_get(j, "missing")), 0, "missing [] when none");
    json_decref(j);
    hx_free(&r);
}

Test(http, gather_on_missing_error)
{
    cur = &srv;
    gather_problem("{\"ids\":[0,314],\"on_missing\":\"error\"}", 404, "row-not-found");
    gather_problem("{\"ids\":[0,9007199254740991],\"on_missing\":\"error\"}", 404, "row-not-found");
    gather_problem("{\"keys\":[\"apple\",\"zzz\"],\"on_missing\":\"error\"}", 404, "key-not-found");
    gather_problem("{\"keys\":[\"zzz\"],\"on_missing\":\"error\",\"pool\":\"mean\"}", 404,
                   "key-not-found");
    gather_problem("{\"ids\":[0],\"on_missing\":\"skip\"}", 422, "invalid-value");
    hx_resp r = POST("/v1/tables/demo/gather", "{\"ids\":[0,1],\"on_missing\":\"error\"}");
    json_decref(ok_json(&r, 200));
    hx_free(&r);
}

/* The pooled vector of a gather against sum w_i row_i (/ sum w_i) computed here. */
static void check_pool(const char *body, const int *ids, const double *w, int n, int mean,
                       const char *missing_json)
{
    float rows[8][64], got[64];
    double acc[64] = {0}, ws = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] >= 314)
            continue;
        row_of("demo", (uint64_t)ids[i], rows[i], 64);
        for (int d = 0; d < 64; d++)
            acc[d] += w[i] * rows[i][d];
        ws += w[i];
    }
    hx_resp r = POST("/v1/tables/demo/gather", body);
    json_t *j = ok_json(&r, 200);
    json_vec(json_object_get(j, "vector"), got, 64, body);
    for (int d = 0; d < 64; d++) {
        double want = mean ? acc[d] / ws : acc[d];
        cr_expect(fabs(got[d] - want) <= 1e-6 + 1e-5 * fabs(want), "%s: [%d] %.9g, want %.9g", body,
                  d, got[d], want);
    }
    char *miss = json_dumps(json_object_get(j, "missing"), JSON_COMPACT);
    cr_expect_str_eq(miss, missing_json, "%s: missing", body);
    free(miss);
    cr_expect_eq(json_object_size(j), 2, "vector and missing only: %.200s", r.body);
    json_decref(j);
    hx_free(&r);
}

Test(http, gather_pool_mean_and_sum_with_weights)
{
    cur = &srv;
    int ids[] = {0, 1, 304};
    double ones[] = {1, 1, 1}, w[] = {3, 2, 1}, neg[] = {0.5, -2, 4.25};
    check_pool("{\"ids\":[0,1,304],\"pool\":\"mean\"}", ids, ones, 3, 1, "[]");
    check_pool("{\"ids\":[0,1,304],\"pool\":\"sum\"}", ids, ones, 3, 0, "[]");
    check_pool(
        "{\"keys\":[\"apple\",\"banana\",\"mercury\"],\"pool\":\"mean\",\"weights\":[3,2,1]}", ids,
        w, 3, 1, "[]");
    check_pool("{\"ids\":[0,1,304],\"pool\":\"sum\",\"weights\":[0.5,-2,4.25]}", ids, neg, 3, 0,
               "[]");
    int miss_ids[] = {0, 99999, 304};
    double mw[] = {3, 100, 1};
    check_pool("{\"ids\":[0,99999,304],\"pool\":\"mean\",\"weights\":[3,100,1]}", miss_ids, mw, 3,
               1, "[1]");
    /* No row found: the pooled vector is null. */
    hx_resp r = POST("/v1/tables/demo/gather", "{\"keys\":[\"yyy\",\"zzz\"],\"pool\":\"sum\"}");
    json_t *j = ok_json(&r, 200);
    cr_expect(json_is_null(json_object_get(j, "vector")), "%s", r.body);
    cr_expect_eq(json_array_size(json_object_get(j, "missing")), 2);
    json_decref(j);
    hx_free(&r);
    /* base64 pooled. */
    r = POST("/v1/tables/demo/gather",
             "{\"ids\":[0,1],\"pool\":\"mean\",\"encoding\":\"base64\",\"dtype\":\"f16\"}");
    j = ok_json(&r, 200);
    float a[64], b[64], got[64];
    row_of("demo", 0, a, 64);
    row_of("demo", 1, b, 64);
    b64_vec(json_object_get(j, "vector"), got, 64, 1, "pooled f16");
    for (int d = 0; d < 64; d++)
        cr_expect(near_f16((a[d] + b[d]) / 2, got[d]), "[%d] %g vs %g", d, got[d],
                  (a[d] + b[d]) / 2);
    json_decref(j);
    hx_free(&r);
}

Test(http, gather_pool_is_computed_in_double)
{
    /* "computed in double precision and rounded to float32": 1e8*row0 + row1 - 1e8*row0 is
     * exactly row1 in double (every product is exact); float accumulation loses row1. */
    cur = &srv;
    float r1[64], got[64];
    row_of("demo", 1, r1, 64);
    hx_resp r = POST("/v1/tables/demo/gather",
                     "{\"ids\":[0,1,0],\"pool\":\"sum\",\"weights\":[100000000,1,-100000000]}");
    json_t *j = ok_json(&r, 200);
    json_vec(json_object_get(j, "vector"), got, 64, "pooled");
    int bad = 0;
    for (int d = 0; d < 64; d++)
        if (got[d] != r1[d] && bad++ < 3)
            cr_expect(0, "[%d] %.9g, want row 1's %.9g", d, got[d], r1[d]);
    cr_expect_eq(bad, 0, "%d of 64 values differ from the exact result", bad);
    json_decref(j);
    hx_free(&r);
}

Test(http, gather_pool_mean_with_zero_weight_sum)
{
    /* openapi gather 422: "`mean` whose weights of the rows found add up to 0". */
    cur = &srv;
    gather_problem("{\"ids\":[0,1],\"pool\":\"mean\",\"weights\":[1,-1]}", 422, "invalid-value");
    gather_problem("{\"ids\":[0,99999],\"pool\":\"mean\",\"weights\":[0,5]}", 422, "invalid-value");
}

Test(http, gather_pool_overflowing_float32)
{
    /* openapi: "a pooled vector that overflows float32 (non-finite)". Row 4 of apple is 0.434:
     * 3 x 3e38 x 0.434 > FLT_MAX. */
    cur = &srv;
    gather_problem("{\"ids\":[0,0,0],\"pool\":\"sum\",\"weights\":[3e38,3e38,3e38]}", 422,
                   "non-finite");
}

Test(http, gather_base64_f32_and_f16)
{
    cur = &srv;
    float js[64], b[64];
    row_of("demo", 42, js, 64);
    const char *bodies[] = {"{\"ids\":[42,99999],\"encoding\":\"base64\"}",
                            "{\"ids\":[42,99999],\"encoding\":\"base64\",\"dtype\":\"f32\"}",
                            "{\"ids\":[42,99999],\"encoding\":\"base64\",\"dtype\":\"f16\"}"};
    for (int k = 0; k < 3; k++) {
        hx_resp r = POST("/v1/tables/demo/gather", bodies[k]);
        json_t *j = ok_json(&r, 200);
        json_t *vs = json_object_get(j, "vectors");
        cr_assert_eq(json_array_size(vs), 2);
        b64_vec(json_array_get(vs, 0), b, 64, k == 2, bodies[k]);
        for (int d = 0; d < 64; d++)
            cr_expect(near_f16(js[d], b[d]), "%s [%d]: %g vs %g", bodies[k], d, b[d], js[d]);
        cr_expect(json_is_null(json_array_get(vs, 1)));
        json_decref(j);
        hx_free(&r);
    }
}

/* Parses an EMBG answer; returns a pointer to the rows. */
static const uint8_t *embg(const hx_resp *r, uint32_t count, uint32_t dim, uint32_t dtype)
{
    cr_assert_eq(r->status, 200, "%s: %ld %.200s", r->what, r->status, r->body);
    cr_assert_str_eq(r->ctype, "application/octet-stream");
    cr_assert_geq(r->len, 16);
    cr_assert(!memcmp(r->body, "EMBG", 4), "magic");
    uint32_t h[3];
    memcpy(h, r->body + 4, 12);
    cr_expect_eq(h[0], count, "count %u, want %u", h[0], count);
    cr_expect_eq(h[1], dim, "dim %u", h[1]);
    cr_expect_eq(h[2], dtype, "dtype %u", h[2]);
    cr_assert_eq(r->len, 16 + (size_t)count * dim * (dtype ? 2 : 4), "length %zu", r->len);
    return (const uint8_t *)r->body + 16;
}

Test(http, gather_binary_octet_stream)
{
    cur = &srv;
    float r0[64], r2[64], v[64];
    row_of("demo", 0, r0, 64);
    row_of("demo", 2, r2, 64);
    const char *acc[] = {"Accept: application/octet-stream", NULL};
    const char *body = "{\"ids\":[0,99999,2,314]}";
    hx_resp r = hx_req("POST", "/v1/tables/demo/gather", body, strlen(body), acc);
    const uint8_t *p = embg(&r, 4, 64, 0);
    memcpy(v, p, 256);
    cr_expect(!memcmp(v, r0, 256), "row 0");
    for (int i = 0; i < 256; i++)
        cr_expect_eq(p[256 + i], 0, "a missing row is zero bytes");
    memcpy(v, p + 512, 256);
    cr_expect(!memcmp(v, r2, 256), "row 2");
    cr_expect(r.has_missing, "binary gathers carry X-Embd-Missing");
    cr_expect_str_eq(r.missing, "1,3");
    hx_free(&r);

    /* f16, by key, no missing: X-Embd-Missing present and empty. */
    body = "{\"keys\":[\"apple\"],\"dtype\":\"f16\",\"encoding\":\"base64\"}";
    const char *acc2[] = {"Accept: text/html;q=0.5, application/octet-stream", NULL};
    r = hx_req("POST", "/v1/tables/demo/gather", body, strlen(body), acc2);
    p = embg(&r, 1, 64, 1);
    for (int d = 0; d < 64; d++) {
        uint16_t h;
        memcpy(&h, p + 2 * d, 2);
        cr_expect(near_f16(r0[d], f16_to_f32(h)), "[%d]", d);
    }
    hx_free(&r);

    /* pooled: one row. */
    body = "{\"ids\":[0,2,99999],\"pool\":\"mean\"}";
    r = hx_req("POST", "/v1/tables/demo/gather", body, strlen(body), acc);
    p = embg(&r, 1, 64, 0);
    memcpy(v, p, 256);
    for (int d = 0; d < 64; d++)
        cr_expect(fabsf(v[d] - (r0[d] + r2[d]) / 2) < 1e-6f, "[%d]", d);
    cr_expect_str_eq(r.missing, "2");
    hx_free(&r);

    /* Errors stay problem+json. */
    body = "{\"ids\":[0]}";
    r = hx_req("POST", "/v1/tables/nope/gather", body, strlen(body), acc);
    problem(&r, 404, "table-not-found");
    hx_free(&r);
    body = "{\"ids\":[0,314],\"on_missing\":\"error\"}";
    r = hx_req("POST", "/v1/tables/demo/gather", body, strlen(body), acc);
    problem(&r, 404, "row-not-found");
    hx_free(&r);

    /* Accept without octet-stream: JSON. */
    const char *accj[] = {"Accept: application/json", NULL};
    body = "{\"ids\":[0]}";
    r = hx_req("POST", "/v1/tables/demo/gather", body, strlen(body), accj);
    json_decref(ok_json(&r, 200));
    hx_free(&r);
}

Test(http, gather_binary_no_missing_header_when_none)
{
    /* X-Embd-Missing lists the missing positions of a binary gather; an empty header value
     * cannot be sent, so it is absent when nothing is missing (openapi.yaml says so). */
    cur = &srv;
    const char *acc[] = {"Accept: application/octet-stream", NULL};
    const char *body = "{\"ids\":[0,1]}";
    hx_resp r = hx_req("POST", "/v1/tables/demo/gather", body, strlen(body), acc);
    embg(&r, 2, 64, 0);
    cr_expect(!r.has_missing, "X-Embd-Missing is absent when no row is missing: %s", r.hdrs);
    hx_free(&r);
}

Test(http, gather_binary_needs_a_nonzero_q)
{
    /* openapi: binary "when the request's Accept header names application/octet-stream (with a
     * non-zero q); otherwise, whatever Accept says, with JSON". */
    cur = &srv;
    const char *acc[] = {"Accept: application/octet-stream;q=0, application/json", NULL};
    const char *body = "{\"ids\":[0]}";
    hx_resp r = hx_req("POST", "/v1/tables/demo/gather", body, strlen(body), acc);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.ctype, "application/json", "q=0 refuses octet-stream");
    hx_free(&r);
}

Test(http, gather_errors)
{
    cur = &srv;
    char big[1024], *p = big;
    p += sprintf(p, "{\"ids\":[");
    for (int i = 0; i < 65; i++)
        p += sprintf(p, "%s%d", i ? "," : "", i);
    sprintf(p, "]}");
    gather_problem(big, 422, "batch-too-large"); /* --max-batch 64 */
    gather_problem("{\"ids\":[0],\"keys\":[\"apple\"]}", 422, "invalid-value");
    gather_problem("{\"pool\":\"mean\"}", 422, "invalid-value");
    gather_problem("{\"ids\":[0],\"idz\":[1]}", 422, "invalid-value");
    gather_problem("{\"ids\":[0],\"pool\":\"max\"}", 422, "invalid-value");
    gather_problem("{\"ids\":[0],\"weights\":[1]}", 422, "invalid-value");
    gather_problem("{\"ids\":[0,1],\"pool\":\"sum\",\"weights\":[1]}", 422, "invalid-value");
    gather_problem("{\"ids\":[0],\"pool\":\"sum\",\"weights\":[1e39]}", 422, "non-finite");
    gather_problem("{\"ids\":[0],\"encoding\":\"hex\"}", 422, "invalid-value");
    gather_problem("{\"ids\":[0],\"encoding\":\"base64\",\"dtype\":\"f64\"}", 422, "invalid-value");
    gather_problem("{\"ids\":[-1]}", 422, "invalid-value");
    gather_problem("{\"ids\":[9007199254740992]}", 422, "invalid-value");
    gather_problem("{\"ids\":0}", 400, "wrong-type");
    gather_problem("{\"ids\":[\"1\"]}", 400, "wrong-type");
    gather_problem("{\"ids\":[null]}", 400, "wrong-type");
    gather_problem("{\"keys\":[1]}", 400, "wrong-type");
    gather_problem("{\"ids\":[0],\"pool\":1}", 400, "wrong-type");
    gather_problem("{\"ids\":[0],\"pool\":\"sum\",\"weights\":[\"1\"]}", 400, "wrong-type");
    gather_problem("{\"ids\":[0],\"pool\":\"sum\",\"weights\":1}", 400, "wrong-type");
    gather_problem("{\"ids\":[0],\"on_missing\":true}", 400, "wrong-type");
    expect_problem("POST", "/v1/tables/nope/gather", "{\"ids\":[0]}", 404, "table-not-found");
}

Test(http, ids_beyond_64_bits_are_invalid_values)
{
    /* "A negative id, a larger one (even one beyond 64 bits) ... is 422": invalid-value;
     * non-finite is for numbers outside the float32 range, which 2^63 is not. */
    cur = &srv;
    gather_problem("{\"ids\":[9223372036854775808]}", 422, "invalid-value");
    gather_problem("{\"ids\":[18446744073709551616]}", 422, "invalid-value");
    search_problem("{\"id\":9223372036854775808}", 422, "invalid-value");
}

Test(http, ids_with_fraction_or_exponent_are_422)
{
    /* "a number written with a fraction or an exponent (3.5, 3.0, 1e2) is 422; a non-number
     * is 400". */
    cur = &srv;
    gather_problem("{\"ids\":[3.5]}", 422, "invalid-value");
    gather_problem("{\"ids\":[3.0]}", 422, "invalid-value");
    gather_problem("{\"ids\":[1e2]}", 422, "invalid-value");
    search_problem("{\"id\":3.0}", 422, "invalid-value");
    search_problem("{\"id\":1e2}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"exclude_ids\":[2.5]}", 422, "invalid-value");
}

Test(http, empty_lists_are_invalid_values)
{
    /* openapi gather 422 example "empty ids": invalid-value "ids: must not be empty";
     * batch-too-large is "more than --max-batch". */
    cur = &srv;
    gather_problem("{\"ids\":[]}", 422, "invalid-value");
    gather_problem("{\"keys\":[]}", 422, "invalid-value");
    search_problem("{\"ids\":[]}", 422, "invalid-value");
    search_problem("{\"keys\":[]}", 422, "invalid-value");
    search_problem("{\"vectors\":[]}", 422, "invalid-value");
}

/* ==== search ==== */

/* Checks a hit list: at most k hits, sorted (descending, or ascending for l2), never an id of
 * excl; returns the list. */
static json_t *hits_ok(json_t *list, size_t k, int ascending, const uint64_t *excl, int n_excl,
                       const char *what)
{
    cr_assert(json_is_array(list), "%s: results is not a list", what);
    cr_expect_leq(json_array_size(list), k, "%s: at most k hits", what);
    double prev = ascending ? -INFINITY : INFINITY;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *h = json_array_get(list, i);
        json_int_t id = json_integer_value(json_object_get(h, "id"));
        double s = json_number_value(json_object_get(h, "score"));
        cr_expect(json_is_integer(json_object_get(h, "id")) && id >= 0 && id < 314, "%s: id", what);
        cr_expect(json_is_string(json_object_get(h, "key")), "%s: key", what);
        cr_expect(json_is_number(json_object_get(h, "score")), "%s: score", what);
        cr_expect(ascending ? s >= prev : s <= prev, "%s: hit %zu score %g after %g: not sorted",
                  what, i, s, prev);
        prev = s;
        for (int e = 0; e < n_excl; e++)
            cr_expect_neq((uint64_t)id, excl[e], "%s: excluded id %llu returned", what,
                          (unsigned long long)excl[e]);
    }
    return list;
}

static json_t *search_ok(const char *body)
{
    hx_resp r = POST("/v1/tables/demo/search", body);
    json_t *j = ok_json(&r, 200);
    hx_free(&r);
    return j;
}

Test(http, search_by_id_key_ids_keys_never_returns_the_query_rows)
{
    cur = &srv;
    uint64_t e0[] = {0}, e304[] = {304}, e01[] = {0, 1}, e_ak[] = {0, 1, 304};
    json_t *j = search_ok("{\"id\":0,\"k\":10}");
    cr_expect_eq(json_array_size(hits_ok(json_object_get(j, "results"), 10, 0, e0, 1, "id 0")), 10);
    cr_expect_str_eq(json_string_value(json_object_get(j, "metric")), "cos");
    cr_expect_eq(json_integer_value(json_object_get(j, "k")), 10, "default k 10");
    cr_expect_str_eq(json_string_value(json_object_get(j, "mode")), "two_stage");
    json_decref(j);
    j = search_ok("{\"key\":\"mercury\",\"k\":313}");
    cr_expect_eq(
        json_array_size(hits_ok(json_object_get(j, "results"), 313, 0, e304, 1, "mercury")), 313,
        "k = rows - 1: every other row");
    json_decref(j);
    j = search_ok("{\"key\":\"mercury\",\"k\":1000,\"exact\":true}");
    cr_expect_eq(
        json_array_size(hits_ok(json_object_get(j, "results"), 1000, 0, e304, 1, "k 1000")), 313,
        "fewer than k only when the table runs out");
    json_decref(j);
    j = search_ok("{\"ids\":[0,1],\"k\":20}");
    hits_ok(json_object_get(j, "results"), 20, 0, e01, 2, "ids [0,1]");
    json_decref(j);
    j = search_ok("{\"keys\":[\"apple\",\"banana\",\"mercury\"],\"k\":20,\"exact\":true}");
    hits_ok(json_object_get(j, "results"), 20, 0, e_ak, 3, "keys");
    cr_expect_str_eq(json_string_value(json_object_get(j, "mode")), "exact");
    json_decref(j);
    j = search_ok("{\"id\":0,\"k\":20,\"metric\":\"l2\",\"exact\":true}");
    hits_ok(json_object_get(j, "results"), 20, 1, e0, 1, "l2 by id");
    json_decref(j);
}

Test(http, search_by_vector_json_and_base64)
{
    cur = &srv;
    float r0[64];
    row_of("demo", 0, r0, 64);
    char *vj = vec_text(r0, 64);
    char body[4096];
    snprintf(body, sizeof body, "{\"vector\":%s,\"k\":3,\"exact\":true}", vj);
    json_t *j = search_ok(body);
    json_t *res = hits_ok(json_object_get(j, "results"), 3, 0, NULL, 0, "vector");
    cr_expect_eq(json_integer_value(json_object_get(json_array_get(res, 0), "id")), 0,
                 "a vector query is not excluded: row 0 finds itself first");
    cr_expect(fabs(json_number_value(json_object_get(json_array_get(res, 0), "score")) - 1) < 1e-5,
              "cos of a row with itself is 1");
    char *first = json_dumps(res, JSON_COMPACT);
    json_decref(j);

    char b64[512];
    b64_encode((const uint8_t *)r0, 256, b64);
    snprintf(body, sizeof body,
             "{\"vector\":\"%s\",\"encoding\":\"base64\",\"k\":3,\"exact\":true}", b64);
    j = search_ok(body);
    char *second = json_dumps(json_object_get(j, "results"), JSON_COMPACT);
    cr_expect_str_eq(second, first, "base64 f32 query = JSON query");
    json_decref(j);
    free(second);

    uint16_t h[64];
    for (int i = 0; i < 64; i++)
        h[i] = f32_to_f16(r0[i]);
    b64_encode((const uint8_t *)h, 128, b64);
    snprintf(body, sizeof body,
             "{\"vector\":\"%s\",\"encoding\":\"base64\",\"dtype\":\"f16\",\"k\":3,\"exact\":true}",
             b64);
    j = search_ok(body);
    second = json_dumps(json_object_get(j, "results"), JSON_COMPACT);
    cr_expect_str_eq(second, first, "base64 f16 query of f16 rows = JSON query");
    json_decref(j);
    free(second);
    free(first);
    free(vj);
}

Test(http, search_batch_vectors_is_a_list_of_lists)
{
    cur = &srv;
    float r0[64], r304[64];
    row_of("demo", 0, r0, 64);
    row_of("demo", 304, r304, 64);
    char *a = vec_text(r0, 64);
    char b64[512], body[8192];
    b64_encode((const uint8_t *)r304, 256, b64);
    snprintf(body, sizeof body, "{\"vectors\":[%s,\"%s\"],\"encoding\":\"base64\",\"k\":2}", a,
             b64);
    json_t *j = search_ok(body);
    json_t *res = json_object_get(j, "results");
    cr_assert(json_is_array(res) && json_array_size(res) == 2, "two lists");
    hits_ok(json_array_get(res, 0), 2, 0, NULL, 0, "batch[0]");
    hits_ok(json_array_get(res, 1), 2, 0, NULL, 0, "batch[1]");
    cr_expect_eq(json_array_size(json_array_get(res, 0)), 2);
    cr_expect_eq(
        json_integer_value(json_object_get(json_array_get(json_array_get(res, 0), 0), "id")), 0);
    cr_expect_eq(
        json_integer_value(json_object_get(json_array_get(json_array_get(res, 1), 0), "id")), 304);
    json_decref(j);
    /* One vector in "vectors" is still a list of lists. */
    snprintf(body, sizeof body, "{\"vectors\":[%s],\"k\":4}", a);
    j = search_ok(body);
    res = json_object_get(j, "results");
    cr_expect(json_is_array(res) && json_array_size(res) == 1 &&
                  json_is_array(json_array_get(res, 0)) &&
                  json_array_size(json_array_get(res, 0)) == 4,
              "[[4 hits]]");
    json_decref(j);
    free(a);
}

Test(http, search_metrics_k_and_sort_order)
{
    cur = &srv;
    const char *m[] = {"cos", "dot", "l2"};
    for (int i = 0; i < 3; i++) {
        for (int exact = 0; exact < 2; exact++) {
            char body[256];
            snprintf(body, sizeof body,
                     "{\"key\":\"apple\",\"k\":7,\"metric\":\"%s\",\"exact\":%s}", m[i],
                     exact ? "true" : "false");
            json_t *j = search_ok(body);
            uint64_t self = 0;
            json_t *res = hits_ok(json_object_get(j, "results"), 7, i == 2, &self, 1, body);
            cr_expect_eq(json_array_size(res), 7, "%s: k hits", body);
            cr_expect_str_eq(json_string_value(json_object_get(j, "metric")), m[i]);
            cr_expect_eq(json_integer_value(json_object_get(j, "k")), 7);
            cr_expect_str_eq(json_string_value(json_object_get(j, "mode")),
                             exact ? "exact" : "two_stage");
            if (i == 2)
                cr_expect_gt(json_number_value(json_object_get(json_array_get(res, 0), "score")), 0,
                             "l2 distances are positive for other rows");
            json_decref(j);
        }
    }
}

Test(http, search_exclude_ids_include_vectors_oversample)
{
    cur = &srv;
    json_t *j = search_ok("{\"key\":\"apple\",\"k\":5,\"exact\":true}");
    json_t *res = json_object_get(j, "results");
    uint64_t top[2] = {(uint64_t)json_integer_value(json_object_get(json_array_get(res, 0), "id")),
                       (uint64_t)json_integer_value(json_object_get(json_array_get(res, 1), "id"))};
    json_decref(j);
    char body[512];
    snprintf(body, sizeof body,
             "{\"key\":\"apple\",\"k\":5,\"exact\":true,\"exclude_ids\":[%llu,%llu,99999,"
             "9007199254740991]}",
             (unsigned long long)top[0], (unsigned long long)top[1]);
    j = search_ok(body);
    uint64_t ex[3] = {0, top[0], top[1]};
    cr_expect_eq(json_array_size(hits_ok(json_object_get(j, "results"), 5, 0, ex, 3, body)), 5,
                 "exclusions do not shrink k; unknown ids are ignored");
    json_decref(j);

    j = search_ok("{\"key\":\"apple\",\"k\":3,\"include_vectors\":true}");
    res = hits_ok(json_object_get(j, "results"), 3, 0, NULL, 0, "include_vectors");
    for (size_t i = 0; i < json_array_size(res); i++) {
        json_t *h = json_array_get(res, i);
        float v[64], want[64];
        json_vec(json_object_get(h, "vector"), v, 64, "hit vector");
        row_of("demo", (uint64_t)json_integer_value(json_object_get(h, "id")), want, 64);
        cr_expect(!memcmp(v, want, sizeof v), "a hit's vector is its row");
    }
    json_decref(j);
    j = search_ok("{\"key\":\"apple\",\"k\":3,\"include_vectors\":true,\"encoding\":\"base64\","
                  "\"dtype\":\"f16\"}");
    res = json_object_get(j, "results");
    for (size_t i = 0; i < json_array_size(res); i++) {
        json_t *h = json_array_get(res, i);
        float v[64], want[64];
        b64_vec(json_object_get(h, "vector"), v, 64, 1, "hit vector f16");
        row_of("demo", (uint64_t)json_integer_value(json_object_get(h, "id")), want, 64);
        for (int d = 0; d < 64; d++)
            cr_expect(near_f16(want[d], v[d]), "hit %zu [%d]", i, d);
    }
    json_decref(j);
    j = search_ok("{\"key\":\"apple\",\"k\":3}");
    cr_expect_null(json_object_get(json_array_get(json_object_get(j, "results"), 0), "vector"),
                   "no vector unless include_vectors");
    json_decref(j);

    for (int os = 1; os <= 100; os *= 10) {
        snprintf(body, sizeof body, "{\"key\":\"apple\",\"k\":10,\"oversample\":%d}", os);
        j = search_ok(body);
        cr_expect_str_eq(json_string_value(json_object_get(j, "mode")), "two_stage");
        hits_ok(json_object_get(j, "results"), 10, 0, NULL, 0, body);
        json_decref(j);
    }
    j = search_ok("{\"key\":\"apple\",\"k\":10,\"oversample\":100,\"exact\":true}");
    cr_expect_str_eq(json_string_value(json_object_get(j, "mode")), "exact");
    json_decref(j);
    j = search_ok("{\"key\":\"apple\",\"k\":10,\"exact\":false}");
    cr_expect_str_eq(json_string_value(json_object_get(j, "mode")), "two_stage");
    json_decref(j);
}

/* The first stage is a request option: "q1" (XOR + popcount) and "f32" answer like "q8", and
 * with an oversample that makes every row a candidate (10 x 100 >= 314 rows) all three answer
 * exactly what an exact search answers, for every metric and for a batch; a name it does not
 * know is a 422, a non-string a 400. */
Test(http, search_first_stage)
{
    cur = &srv;
    const char *m[] = {"cos", "dot", "l2"};
    const char *stages[] = {"q8", "q1", "f32"};
    for (int i = 0; i < 3; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"key\":\"apple\",\"k\":10,\"metric\":\"%s\",\"exact\":true}",
                 m[i]);
        json_t *ex = search_ok(body);
        char *want = json_dumps(json_object_get(ex, "results"), JSON_COMPACT);
        for (int st = 0; st < 3; st++) {
            snprintf(body, sizeof body,
                     "{\"key\":\"apple\",\"k\":10,\"metric\":\"%s\",\"oversample\":100,"
                     "\"first_stage\":\"%s\"}",
                     m[i], stages[st]);
            json_t *j = search_ok(body);
            cr_expect_str_eq(json_string_value(json_object_get(j, "mode")), "two_stage");
            char *got = json_dumps(json_object_get(j, "results"), JSON_COMPACT);
            cr_expect_str_eq(got, want, "%s: every row a candidate, so the exact answer", body);
            free(got);
            json_decref(j);
            /* A small oversample: k hits, sorted, without the query's row. */
            snprintf(body, sizeof body,
                     "{\"key\":\"apple\",\"k\":5,\"metric\":\"%s\",\"oversample\":2,"
                     "\"first_stage\":\"%s\"}",
                     m[i], stages[st]);
            j = search_ok(body);
            uint64_t self = 0;
            hits_ok(json_object_get(j, "results"), 5, i == 2, &self, 0, body);
            cr_expect_eq(json_array_size(json_object_get(j, "results")), 5, "%s", body);
            json_decref(j);
        }
        free(want);
        json_decref(ex);
    }
    /* A batch with the q1 x q1 stage: each list as the single query answers it. */
    json_t *one = search_ok("{\"id\":3,\"k\":4,\"first_stage\":\"q1\",\"oversample\":3}");
    float v[64];
    row_of("demo", 3, v, 64);
    char body[4096], *p = body;
    p += sprintf(p, "{\"k\":4,\"first_stage\":\"q1\",\"oversample\":3,\"exclude_ids\":[3],"
                    "\"vectors\":[[");
    for (int d = 0; d < 64; d++)
        p += sprintf(p, "%s%.9g", d ? "," : "", (double)v[d]);
    p += sprintf(p, "],[1"); /* a second query: the first axis */
    for (int d = 1; d < 64; d++)
        p += sprintf(p, ",0");
    sprintf(p, "]]}");
    json_t *b = search_ok(body);
    json_t *lists = json_object_get(b, "results");
    cr_assert(json_is_array(lists) && json_array_size(lists) == 2, "two result lists");
    char *x = json_dumps(json_array_get(lists, 0), JSON_COMPACT);
    char *y = json_dumps(json_object_get(one, "results"), JSON_COMPACT);
    cr_expect_str_eq(x, y, "batch list 0 = the single query by id 3");
    free(x);
    free(y);
    json_decref(b);
    json_decref(one);

    search_problem("{\"key\":\"apple\",\"first_stage\":\"q4\"}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"first_stage\":\"Q1\"}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"first_stage\":\"\"}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"first_stage\":1}", 400, "wrong-type");
    search_problem("{\"key\":\"apple\",\"first_stage\":null}", 400, "wrong-type");
}

Test(http, search_errors)
{
    cur = &srv;
    search_problem("{\"vector\":[1,2,3]}", 422, "wrong-dimension");
    search_problem("{\"vector\":\"AAAAAAAAAAA=\",\"encoding\":\"base64\"}", 422, "wrong-dimension");
    search_problem("{\"vectors\":[[1,2]]}", 422, "wrong-dimension");
    char body[4096], *p = body;
    /* 64 values, one of them out of the float32 range. */
    p += sprintf(p, "{\"vector\":[1e39");
    for (int i = 1; i < 64; i++)
        p += sprintf(p, ",0.5");
    sprintf(p, "]}");
    search_problem(body, 422, "non-finite");
    p = body;
    p += sprintf(p, "{\"vector\":[0.5");
    for (int i = 1; i < 64; i++)
        p += sprintf(p, i == 63 ? ",-3.5e38" : ",0.5");
    sprintf(p, "]}");
    search_problem(body, 422, "non-finite");
    /* A base64 vector of the right length but not base64. */
    char bad[400];
    memset(bad, '!', 344);
    bad[344] = 0;
    snprintf(body, sizeof body, "{\"vector\":\"%s\",\"encoding\":\"base64\"}", bad);
    search_problem(body, 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"k\":0}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"k\":1001}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"k\":-3}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"k\":\"5\"}", 400, "wrong-type");
    search_problem("{\"key\":\"apple\",\"oversample\":0}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"oversample\":101}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"metric\":\"manhattan\"}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"metric\":1}", 400, "wrong-type");
    search_problem("{\"key\":\"apple\",\"encoding\":\"hex\"}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"encoding\":\"base64\",\"dtype\":\"bf16\"}", 422,
                   "invalid-value");
    search_problem("{\"key\":\"apple\",\"exact\":\"yes\"}", 400, "wrong-type");
    search_problem("{\"key\":\"apple\",\"include_vectors\":1}", 400, "wrong-type");
    search_problem("{\"key\":\"apple\",\"kk\":3}", 422, "invalid-value");
    search_problem("{}", 422, "invalid-value");
    search_problem("{\"k\":3}", 422, "invalid-value");
    search_problem("{\"id\":1,\"key\":\"apple\"}", 422, "invalid-value");
    search_problem("{\"vector\":[],\"vectors\":[]}", 422, "invalid-value");
    search_problem("{\"id\":-1}", 422, "invalid-value");
    search_problem("{\"id\":9007199254740992}", 422, "invalid-value");
    search_problem("{\"id\":\"3\"}", 400, "wrong-type");
    search_problem("{\"key\":3}", 400, "wrong-type");
    search_problem("{\"ids\":[0,-1]}", 422, "invalid-value");
    search_problem("{\"vector\":\"AAAA\"}", 400, "wrong-type"); /* a string without base64 */
    search_problem("{\"vector\":{}}", 400, "wrong-type");
    p = body;
    p += sprintf(p, "{\"vectors\":[[\"x\"");
    for (int i = 1; i < 64; i++)
        p += sprintf(p, ",0.5");
    sprintf(p, "]]}");
    search_problem(body, 400, "wrong-type");
    search_problem("{\"key\":\"apple\",\"exclude_ids\":[-1]}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"exclude_ids\":\"1\"}", 400, "wrong-type");
    search_problem("{\"id\":314}", 404, "row-not-found");
    search_problem("{\"id\":9007199254740991}", 404, "row-not-found");
    search_problem("{\"key\":\"zzz\"}", 404, "key-not-found");
    search_problem("{\"ids\":[0,314]}", 404, "row-not-found");
    search_problem("{\"keys\":[\"apple\",\"zzz\"]}", 404, "key-not-found");
    p = body;
    p += sprintf(p, "{\"ids\":[");
    for (int i = 0; i < 65; i++)
        p += sprintf(p, "%s%d", i ? "," : "", i);
    sprintf(p, "]}");
    search_problem(body, 422, "batch-too-large");
    p = body;
    p += sprintf(p, "{\"vectors\":[");
    for (int i = 0; i < 65; i++)
        p += sprintf(p, "%s[1]", i ? "," : "");
    sprintf(p, "]}");
    search_problem(body, 422, "batch-too-large");
    expect_problem("POST", "/v1/tables/nope/search", "{\"key\":\"apple\"}", 404, "table-not-found");
}

/* ==== request bodies ==== */

Test(http, malformed_and_mistyped_bodies)
{
    cur = &srv;
    search_problem("{\"key\":", 400, "malformed-json");
    search_problem("{\"key\":\"apple\"} x", 400, "malformed-json");
    search_problem("{\"key\":\"apple\"}{}", 400, "malformed-json");
    search_problem("{\"key\":\"apple\"},", 400, "malformed-json");
    search_problem("{\"key\":\"apple\",\"key\":\"banana\"}", 400, "malformed-json");
    search_problem("{\"key\":\"apple\",\"k\":1,\"k\":1}", 400, "malformed-json");
    search_problem("", 400, "malformed-json");
    search_problem("{'key':'apple'}", 400, "malformed-json");
    search_problem("{\"key\":\"apple\",}", 400, "malformed-json");
    search_problem("{\"vector\":[NaN]}", 400, "malformed-json");
    search_problem("[{\"key\":\"apple\"}]", 400, "wrong-type");
    gather_problem("{\"ids\":[1,2]", 400, "malformed-json");
    gather_problem("{\"ids\":[1],\"ids\":[2]}", 400, "malformed-json");
    gather_problem("[]", 400, "wrong-type");
    /* Invalid UTF-8 inside a string. */
    gather_problem("{\"keys\":[\"a\xff\"]}", 400, "malformed-json");
    /* A body with a NUL byte. */
    hx_resp r = hx_req("POST", "/v1/tables/demo/search", "{\"key\":\"apple\"}\0", 16, NULL);
    problem(&r, 400, "malformed-json");
    hx_free(&r);
    /* Whitespace around the value is fine. */
    r = POST("/v1/tables/demo/search", " \r\n\t{\"key\":\"apple\",\"k\":1} \n");
    json_decref(ok_json(&r, 200));
    hx_free(&r);
}

Test(http, content_type_must_be_json)
{
    cur = &srv;
    const char *plain[] = {"Content-Type: text/plain", NULL};
    const char *body = "{\"key\":\"apple\"}";
    hx_resp r = hx_req("POST", "/v1/tables/demo/search", body, strlen(body), plain);
    problem(&r, 415, "unsupported-media-type");
    hx_free(&r);
    const char *form[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    r = hx_req("POST", "/v1/tables/demo/gather", "{\"ids\":[0]}", 11, form);
    problem(&r, 415, "unsupported-media-type");
    hx_free(&r);
    const char *cs[] = {"Content-Type: application/json; charset=utf-8", NULL};
    r = hx_req("POST", "/v1/tables/demo/search", body, strlen(body), cs);
    json_decref(ok_json(&r, 200));
    hx_free(&r);
    const char *upper[] = {"Content-Type: Application/JSON", NULL};
    r = hx_req("POST", "/v1/tables/demo/search", body, strlen(body), upper);
    json_decref(ok_json(&r, 200));
    hx_free(&r);
}

Test(http, content_type_missing_or_merely_prefixed)
{
    /* UnsupportedMediaType: "The request has a body whose Content-Type is missing or not
     * application/json". */
    cur = &srv;
    const char *none[] = {"Content-Type:", NULL}; /* curl: drop the header */
    const char *body = "{\"key\":\"apple\"}";
    hx_resp r = hx_req("POST", "/v1/tables/demo/search", body, strlen(body), none);
    problem(&r, 415, "unsupported-media-type");
    hx_free(&r);
    const char *seq[] = {"Content-Type: application/json-seq", NULL};
    r = hx_req("POST", "/v1/tables/demo/search", body, strlen(body), seq);
    problem(&r, 415, "unsupported-media-type");
    hx_free(&r);
}

Test(http, non_object_bodies_are_wrong_type)
{
    /* wrong-type: "the body is not an object, or a member has the wrong JSON type". */
    cur = &srv;
    search_problem("\"apple\"", 400, "wrong-type");
    search_problem("42", 400, "wrong-type");
    search_problem("null", 400, "wrong-type");
    gather_problem("true", 400, "wrong-type");
}

Test(http, metric_outside_the_enum)
{
    /* Metric: enum [cos, dot, l2]; "an unknown metric ... is 422". */
    cur = &srv;
    search_problem("{\"key\":\"apple\",\"metric\":\"cosine\"}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"metric\":\"COS\"}", 422, "invalid-value");
    search_problem("{\"key\":\"apple\",\"metric\":\"euclidean\"}", 422, "invalid-value");
}

/* ==== routes, methods ==== */

Test(http, unknown_paths_and_methods)
{
    cur = &srv;
    const char *paths[] = {"/nowhere",
                           "/v1",
                           "/v1/",
                           "/v1/tables/demo/rows",
                           "/v1/tables/demo/x",
                           "/v2/tables",
                           "/v1/tables/demo/rows/0/extra",
                           "/healthz/x",
                           "/v1/admin"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        expect_problem("GET", paths[i], NULL, 404, "route-not-found");
    const struct {
        const char *method, *path, *allow;
    } m[] = {{"GET", "/v1/tables/demo/search", "POST"},
             {"GET", "/v1/tables/demo/gather", "POST"},
             {"GET", "/v1/admin/reload", "POST"},
             {"PUT", "/v1/tables/demo/search", "POST"},
             {"DELETE", "/v1/tables", "GET, HEAD"},
             {"POST", "/healthz", "GET, HEAD"},
             {"POST", "/v1/tables/demo", "GET, HEAD"},
             {"PATCH", "/v1/tables/demo/rows/0", "GET, HEAD"},
             {"POST", "/v1/tables/demo/keys/apple", "GET, HEAD"},
             {"OPTIONS", "/metrics", "GET, HEAD"}};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        hx_resp r = hx_req(m[i].method, m[i].path, NULL, 0, NULL);
        problem(&r, 405, "method-not-allowed");
        cr_expect_str_eq(r.allow, m[i].allow, "%s: Allow '%s'", r.what, r.allow);
        hx_free(&r);
    }
}

/* ==== X-Request-Id ==== */

static int printable_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '!' || s[i] > '~')
            return 0;
    return 1;
}

Test(http, request_id_echoed_or_generated_unique)
{
    cur = &srv;
    const char *h[] = {"X-Request-Id: trace-42_a.b:c", NULL};
    hx_resp r = hx_req("GET", "/healthz", NULL, 0, h);
    cr_expect_str_eq(r.rid, "trace-42_a.b:c");
    hx_free(&r);
    r = hx_req("GET", "/v1/tables/nope", NULL, 0, h);
    cr_expect_str_eq(r.rid, "trace-42_a.b:c", "echoed on errors too");
    hx_free(&r);
    /* Generated ones: valid and unique. */
    char seen[60][200];
    for (int i = 0; i < 60; i++) {
        r = GET(i % 2 ? "/healthz" : "/v1/tables/demo/rows/1");
        cr_expect(printable_id(r.rid), "generated id '%s'", r.rid);
        snprintf(seen[i], sizeof seen[i], "%s", r.rid);
        for (int k = 0; k < i; k++)
            cr_expect_str_neq(seen[k], seen[i], "request ids repeat: %s", seen[i]);
        hx_free(&r);
    }
    /* Invalid ones are replaced. */
    char long_id[200];
    memset(long_id, 'x', 129);
    long_id[129] = 0;
    char hdr[256];
    snprintf(hdr, sizeof hdr, "X-Request-Id: %s", long_id);
    const char *bad[][2] = {
        {"X-Request-Id: has space", NULL}, {"X-Request-Id;", NULL}, {hdr, NULL}};
    for (int i = 0; i < 3; i++) {
        r = hx_req("GET", "/healthz", NULL, 0, bad[i]);
        cr_expect(printable_id(r.rid), "replaced by a valid id: '%s'", r.rid);
        cr_expect_str_neq(r.rid, "has space");
        cr_expect(strlen(r.rid) <= 128);
        hx_free(&r);
    }
}

Test(http, request_id_any_printable_ascii_up_to_128)
{
    /* "the client's X-Request-Id when it is 1 to 128 printable ASCII characters (! to ~)". */
    cur = &srv;
    char id128[129];
    memset(id128, 'r', 128);
    id128[128] = 0;
    const char *ids[] = {"a/b?c=d&e!~", "{uuid}#1", "\"quoted\"", id128, "x"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char hdr[200];
        snprintf(hdr, sizeof hdr, "X-Request-Id: %s", ids[i]);
        const char *h[] = {hdr, NULL};
        hx_resp r = hx_req("GET", "/healthz", NULL, 0, h);
        cr_expect_str_eq(r.rid, ids[i], "X-Request-Id '%.40s' (%zu chars) not echoed: got '%s'",
                         ids[i], strlen(ids[i]), r.rid);
        hx_free(&r);
    }
}

/* ==== problem documents ==== */

static const char *spec_title(const char *type)
{
    static const char *t[][2] = {{"malformed-json", "Malformed JSON"},
                                 {"wrong-type", "Wrong type"},
                                 {"bad-framing", "Bad request framing"},
                                 {"unauthorized", "Unauthorized"},
                                 {"route-not-found", "Not found"},
                                 {"table-not-found", "Table not found"},
                                 {"row-not-found", "Row not found"},
                                 {"key-not-found", "Key not found"},
                                 {"method-not-allowed", "Method not allowed"},
                                 {"body-too-large", "Body too large"},
                                 {"unsupported-media-type", "Unsupported media type"},
                                 {"invalid-value", "Invalid value"},
                                 {"wrong-dimension", "Wrong dimension"},
                                 {"non-finite", "Non-finite value"},
                                 {"batch-too-large", "Batch too large"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(t[i][0], type))
            return t[i][1];
    return "?";
}

Test(http, problem_title_instance_and_request_id)
{
    /* "Every error is application/problem+json with type, title, status, detail, and instance
     * (the request path) and request_id when known"; title is the fixed text of the type. */
    cur = &srv;
    const struct {
        const char *method, *path, *body, *type;
    } c[] = {{"POST", "/v1/tables/demo/search", "{", "malformed-json"},
             {"POST", "/v1/tables/demo/search", "[]", "wrong-type"},
             {"GET", "/nowhere", NULL, "route-not-found"},
             {"GET", "/v1/tables/demo2", NULL, "table-not-found"},
             {"GET", "/v1/tables/demo/rows/314", NULL, "row-not-found"},
             {"GET", "/v1/tables/demo/keys/zzz", NULL, "key-not-found"},
             {"DELETE", "/v1/tables/demo", NULL, "method-not-allowed"},
             {"GET", "/v1/tables/demo/rows/x", NULL, "invalid-value"},
             {"POST", "/v1/tables/demo/search", "{\"vector\":[1]}", "wrong-dimension"},
             {"POST", "/v1/tables/demo/gather", "{\"ids\":[0],\"pool\":\"sum\",\"weights\":[1e39]}",
              "non-finite"}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char rid[64];
        snprintf(rid, sizeof rid, "X-Request-Id: problem-%zu", i);
        const char *h[] = {rid, NULL};
        hx_resp r = hx_req(c[i].method, c[i].path, c[i].body, c[i].body ? strlen(c[i].body) : 0, h);
        json_t *j = json_loadb(r.body, r.len, 0, NULL);
        cr_assert_not_null(j, "%s: %s", r.what, r.body);
        const char *type = json_string_value(json_object_get(j, "type"));
        char want_type[80];
        snprintf(want_type, sizeof want_type, "urn:embd:problem:%s", c[i].type);
        cr_expect_str_eq(type ? type : "", want_type, "%s", r.what);
        const char *title = json_string_value(json_object_get(j, "title"));
        cr_expect_str_eq(title ? title : "", spec_title(c[i].type), "%s: title", r.what);
        const char *inst = json_string_value(json_object_get(j, "instance"));
        cr_expect(inst && !strcmp(inst, c[i].path), "%s: instance %s, want the request path",
                  r.what, inst ? inst : "(missing)");
        const char *reqid = json_string_value(json_object_get(j, "request_id"));
        cr_expect(reqid && !strcmp(reqid, rid + 14), "%s: request_id %s, want %s", r.what,
                  reqid ? reqid : "(missing)", rid + 14);
        json_decref(j);
        hx_free(&r);
    }
}

/* ==== framing: refused before the body is read (raw sockets: curl would fix these) ==== */

static void framing_refused(const char *headers, const char *why)
{
    /* The body is announced but never sent: an answer proves it was not waited for. */
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "POST /v1/tables/demo/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\nX-Request-Id: framing-1\r\n%s\r\n",
                     headers);
    raw_result rr = raw_exchange(cur, req, (size_t)n, 5000);
    cr_expect_eq(raw_status(&rr), 400, "%s: %.300s", why, rr.data);
    char ct[128] = "";
    raw_header(&rr, "Content-Type", ct, sizeof ct);
    cr_expect_str_eq(ct, "application/problem+json", "%s", why);
    cr_expect(strstr(raw_body(&rr), "\"type\":\"urn:embd:problem:bad-framing\""), "%s: %s", why,
              raw_body(&rr));
    char rid[64] = "";
    raw_header(&rr, "X-Request-Id", rid, sizeof rid);
    cr_expect_str_eq(rid, "framing-1", "%s", why);
    cr_expect(rr.closed, "%s: the connection is closed after a framing error", why);
    free(rr.data);
}

Test(http, request_smuggling_refused_before_the_body)
{
    cur = &srv;
    framing_refused("Content-Length: 16\r\nContent-Length: 16\r\n", "two Content-Length");
    framing_refused("Content-Length: 16\r\nContent-Length: 17\r\n", "two different Content-Length");
    framing_refused("Content-Length: 16\r\nTransfer-Encoding: chunked\r\n", "CL + TE");
    framing_refused("Transfer-Encoding: chunked\r\nContent-Length: 16\r\n", "TE + CL");
    framing_refused("Transfer-Encoding: gzip\r\n", "TE gzip");
    framing_refused("Transfer-Encoding: gzip, chunked\r\n", "TE gzip, chunked");
    /* And the server is fine afterwards; a plain chunked body works. */
    const char *ok = "POST /v1/tables/demo/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                     "Connection: close\r\n\r\n"
                     "8\r\n{\"key\":\"\r\n9\r\napple\",\"k\r\n5\r\n\":2}\n\r\n0\r\n\r\n";
    raw_result rr = raw_exchange(cur, ok, strlen(ok), 5000);
    cr_expect_eq(raw_status(&rr), 200, "chunked body: %.300s", rr.data);
    cr_expect(strstr(raw_body(&rr), "\"results\""), "%s", rr.data);
    free(rr.data);
}

Test(http, framing_problem_title)
{
    /* The bad-framing title is "Bad request framing" (the table in openapi.yaml). */
    cur = &srv;
    const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                      "Content-Length: 0\r\n\r\n";
    raw_result rr = raw_exchange(cur, req, strlen(req), 5000);
    cr_expect_eq(raw_status(&rr), 400);
    cr_expect(strstr(raw_body(&rr), "\"title\":\"Bad request framing\""), "%s", raw_body(&rr));
    free(rr.data);
}

/* ==== 431: header sections too large ==== */

/* GET /healthz with one X-Pad header of pad bytes. */
static raw_result big_header_request(size_t pad)
{
    char *req = malloc(pad + 256);
    int n =
        sprintf(req, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: big-1\r\nX-Pad: ");
    memset(req + n, 'p', pad);
    n += (int)pad;
    n += sprintf(req + n, "\r\nConnection: close\r\n\r\n");
    raw_result rr = raw_exchange(cur, req, (size_t)n, 5000);
    free(req);
    return rr;
}

static int is_431_problem(const raw_result *rr)
{
    char ct[128] = "", rid[128] = "";
    raw_header(rr, "Content-Type", ct, sizeof ct);
    raw_header(rr, "X-Request-Id", rid, sizeof rid);
    return raw_status(rr) == 431 && !strcmp(ct, "application/problem+json") &&
           strstr(raw_body(rr), "\"type\":\"urn:embd:problem:headers-too-large\"") &&
           strstr(raw_body(rr), "\"title\":\"Request headers too large\"") && rid[0];
}

Test(http, header_sections_too_large_get_431)
{
    /* The contract names no limit. Header sections of growing size: each is 200 or 431, once
     * 431 always 431, and 431 from 64 KiB on. The server's own limit must come before
     * libmicrohttpd's connection pool, so the smallest refused size gets the contract's
     * problem+json; sizes past the pool are answered by libmicrohttpd itself. Observed
     * (7698f56: 24 KiB limit, 40 KiB pool): from about 40 KiB on, MHD's fixed HTML page
     * "<html><head><title>Request too big</title>..." with status 431, no Content-Type and no
     * X-Request-Id. That deviation is logged here (and reported), not failed. */
    cur = &srv;
    static const size_t sizes[] = {4096,  8192,  16384, 20000, 24000,  28000, 32000,
                                   36000, 48000, 65636, 70000, 100000, 200000};
    size_t first_431 = 0;
    char html[512] = "";
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        raw_result rr = big_header_request(sizes[i]);
        int st = raw_status(&rr);
        cr_expect(st == 200 || st == 431, "a %zu-byte header: status %d: %.200s", sizes[i], st,
                  rr.data);
        if (first_431)
            cr_expect_eq(st, 431, "a %zu-byte header after %zu was refused: %d", sizes[i],
                         first_431, st);
        if (sizes[i] >= 65536)
            cr_expect_eq(st, 431, "a header section over 64 KiB (%zu bytes): %d", sizes[i], st);
        if (st == 431) {
            cr_expect(rr.closed, "%zu: the connection is closed after a 431", sizes[i]);
            if (!first_431) {
                first_431 = sizes[i];
                cr_expect(is_431_problem(&rr),
                          "the smallest refused header section (%zu bytes) gets the contract's "
                          "431 problem: %.300s",
                          sizes[i], rr.data);
            } else if (!is_431_problem(&rr)) {
                size_t l = strlen(html);
                snprintf(html + l, sizeof html - l, "%s%zu", l ? ", " : "", sizes[i]);
            }
        }
        free(rr.data);
    }
    cr_expect_neq(first_431, 0, "no header section was refused");
    /* Many moderate headers (700 x 110 bytes = 77 KB). */
    char *req = malloc(100000);
    int n = sprintf(req, "GET /v1/tables HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (int i = 0; i < 700; i++)
        n += sprintf(req + n, "X-H%03d: %0100d\r\n", i, 0);
    n += sprintf(req + n, "Connection: close\r\n\r\n");
    raw_result rr = raw_exchange(cur, req, (size_t)n, 5000);
    cr_expect_eq(raw_status(&rr), 431, "700 headers of 100 bytes: %.200s", rr.data);
    if (!is_431_problem(&rr)) {
        size_t l = strlen(html);
        snprintf(html + l, sizeof html - l, "%s700 headers", l ? ", " : "");
    }
    free(rr.data);
    free(req);
    if (html[0])
        cr_log_info("431 not problem+json (libmicrohttpd's own HTML page, no Content-Type, no "
                    "X-Request-Id) for header sections of: %s bytes; the server's own 431 "
                    "starts at %zu",
                    html, first_431);
    /* The server still serves. */
    rr = big_header_request(100);
    cr_expect_eq(raw_status(&rr), 200, "%.200s", rr.data);
    free(rr.data);
}

/* --max-header-size moves the server's own limit (and libmicrohttpd's pool with it): at the
 * default 8 KiB a 7000-byte header section is served and a 9000-byte one gets the 431 problem;
 * at 32 KiB a 20000-byte one is served and a 33000-byte one gets the problem, not
 * libmicrohttpd's page. Out-of-range values are refused at start. */
Test(http, max_header_size_sets_the_limit)
{
    cur = &srv;
    raw_result rr = big_header_request(7000);
    cr_expect_eq(raw_status(&rr), 200, "7000 bytes at the default limit: %.200s", rr.data);
    free(rr.data);
    rr = big_header_request(9000);
    cr_expect(is_431_problem(&rr), "9000 bytes at the default limit: %.300s", rr.data);
    free(rr.data);

    th_server wide;
    const char *args[] = {"--max-header-size", "32768", NULL, NULL};
    char store[600];
    snprintf(store, sizeof store, "demo=%s", th_demo_store());
    args[2] = store;
    th_server_start(&wide, args);
    cur = &wide;
    rr = big_header_request(20000);
    cr_expect_eq(raw_status(&rr), 200, "20000 bytes under --max-header-size 32768: %.200s",
                 rr.data);
    free(rr.data);
    rr = big_header_request(33000);
    cr_expect(is_431_problem(&rr), "33000 bytes over --max-header-size 32768: %.300s", rr.data);
    free(rr.data);
    cur = &srv;
    cr_expect_eq(th_server_stop(&wide, SIGTERM), 0);

    for (int i = 0; i < 2; i++) {
        const char *v = i ? "2000000" : "512";
        int rc = th_system("timeout 20 '%s' serve --listen 127.0.0.1:0 --max-header-size %s '%s' "
                           "2>/dev/null",
                           EMBD_BIN, v, store);
        cr_expect_eq(rc, 2, "--max-header-size %s: exit %d, want 2 (a usage error)", v, rc);
    }
}

/* ==== precedence: "A request with several faults gets the first in this order: 431 and 400
 * framing; 404 unknown path or 405; 401; 404 unknown table; 415; 413; 400 body syntax and
 * types; 422 values; 404 unknown id or key" ==== */

Test(http, error_precedence)
{
    cur = &srv;
    /* 405 before 404 table. */
    expect_problem("GET", "/v1/tables/nope/search", NULL, 405, "method-not-allowed");
    /* unknown table before 415, before body syntax, before 422. */
    const char *plain[] = {"Content-Type: text/plain", NULL};
    hx_resp r = hx_req("POST", "/v1/tables/nope/search", "{", 1, plain);
    problem(&r, 404, "table-not-found");
    hx_free(&r);
    expect_problem("POST", "/v1/tables/nope/search", "{", 404, "table-not-found");
    expect_problem("POST", "/v1/tables/nope/gather", "{\"ids\":[-1]}", 404, "table-not-found");
    expect_problem("POST", "/v1/tables/nope/search", "{\"kk\":1}", 404, "table-not-found");
    /* 415 before body syntax. */
    r = hx_req("POST", "/v1/tables/demo/search", "{", 1, plain);
    problem(&r, 415, "unsupported-media-type");
    hx_free(&r);
    /* 400 types before 422 values. */
    search_problem("{\"key\":\"apple\",\"k\":0,\"exact\":\"yes\"}", 400, "wrong-type");
    search_problem("{\"kk\":1,\"k\":\"x\"}", 400, "wrong-type");
    /* 422 values before 404 ids. */
    search_problem("{\"id\":314,\"k\":0}", 422, "invalid-value");
    gather_problem("{\"ids\":[314],\"on_missing\":\"error\",\"pool\":\"max\"}", 422,
                   "invalid-value");
    /* route before method. */
    expect_problem("DELETE", "/nowhere", NULL, 404, "route-not-found");
}

Test(http, authorization_header_ignored_without_api_key)
{
    cur = &srv;
    const char *h[] = {"Authorization: Bearer whatever-this-is-not-checked", NULL};
    hx_resp r = hx_req("GET", "/v1/tables", NULL, 0, h);
    json_decref(ok_json(&r, 200));
    hx_free(&r);
    const char *h2[] = {"Authorization: Basic dXNlcjpwYXNz", NULL};
    r = hx_req("POST", "/v1/tables/demo/search", "{\"id\":1,\"k\":1}", 14, h2);
    json_decref(ok_json(&r, 200));
    hx_free(&r);
}

Test(http, admin_reload_unchanged_store)
{
    cur = &srv;
    hx_resp t1 = GET("/v1/tables/demo");
    hx_resp r = hx_req("POST", "/v1/admin/reload", NULL, 0, NULL);
    json_t *j = ok_json(&r, 200);
    char *s = json_dumps(j, JSON_COMPACT);
    cr_expect_str_eq(s, "{\"reloaded\":[\"demo\"],\"failed\":[]}");
    free(s);
    json_decref(j);
    hx_free(&r);
    /* A body is ignored, whatever it is. */
    r = hx_req("POST", "/v1/admin/reload", "{\"ignored\":true}", 16, NULL);
    json_decref(ok_json(&r, 200));
    hx_free(&r);
    hx_resp t2 = GET("/v1/tables/demo");
    cr_expect_str_eq(t2.etag, t1.etag, "the same file: the same ETag");
    hx_free(&t1);
    hx_free(&t2);
}

/* ==== wide: --max-batch 1000, gathers that go to the worker pool ==== */

static th_server wide_srv;

static void start_wide(void)
{
    const char *args[] = {"--threads", "2", "--max-batch", "1000", NULL, NULL};
    char store[600];
    snprintf(store, sizeof store, "demo=%s", th_demo_store());
    args[4] = store;
    th_server_start(&wide_srv, args);
    cur = &wide_srv;
}

static void stop_wide(void)
{
    int rc = th_server_stop(&wide_srv, SIGTERM);
    cr_expect_eq(rc, 0, "embd serve exits 0 after SIGTERM (got %d)", rc);
}

TestSuite(wide, .init = start_wide, .fini = stop_wide);

static char *ids_body(int from, int to, const char *extra)
{
    char *b = malloc(16 * (size_t)(to - from) + 256), *p = b;
    p += sprintf(p, "{\"ids\":[");
    for (int i = from; i < to; i++)
        p += sprintf(p, "%s%d", i > from ? "," : "", i);
    sprintf(p, "]%s}", extra);
    return b;
}

/* All 314 rows of the demo (gathered inline, 200 at a time: 12800 values). */
static float (*all_rows(void))[64]
{
    float(*rows)[64] = malloc(314 * sizeof *rows);
    for (int from = 0; from < 314; from += 200) {
        int to = from + 200 < 314 ? from + 200 : 314;
        char *b = ids_body(from, to, "");
        hx_resp r = POST("/v1/tables/demo/gather", b);
        json_t *j = ok_json(&r, 200);
        for (int i = from; i < to; i++)
            json_vec(json_array_get(json_object_get(j, "vectors"), (size_t)(i - from)), rows[i], 64,
                     "row");
        json_decref(j);
        hx_free(&r);
        free(b);
    }
    return rows;
}

Test(wide, gather_of_300_rows_on_the_worker_pool)
{
    float(*rows)[64] = all_rows();
    /* 300 ids x 64 = 19200 values > 16384: encoded on a worker. 7 missing ones interleaved. */
    char *b = malloc(8192), *p = b;
    p += sprintf(p, "{\"ids\":[");
    for (int i = 0; i < 300; i++)
        p += sprintf(p, "%s%d", i ? "," : "", i % 43 == 42 ? 5000 + i : (i * 7) % 314);
    strcpy(p, "]");
    p += 1;
    char *tail = p;
    const char *variants[] = {"}", ",\"encoding\":\"base64\"}",
                              ",\"encoding\":\"base64\",\"dtype\":\"f16\"}"};
    for (int v = 0; v < 3; v++) {
        strcpy(tail, variants[v]);
        hx_resp r = POST("/v1/tables/demo/gather", b);
        json_t *j = ok_json(&r, 200);
        json_t *vs = json_object_get(j, "vectors");
        cr_assert_eq(json_array_size(vs), 300);
        int n_missing = 0;
        for (int i = 0; i < 300; i++) {
            json_t *x = json_array_get(vs, (size_t)i);
            if (i % 43 == 42) {
                cr_expect(json_is_null(x), "[%d] missing", i);
                n_missing++;
                continue;
            }
            float got[64];
            if (v == 0)
                json_vec(x, got, 64, "row");
            else
                b64_vec(x, got, 64, v == 2, "row");
            const float *want = rows[(i * 7) % 314];
            for (int d = 0; d < 64; d++)
                if (!near_f16(want[d], got[d])) {
                    cr_expect(0, "variant %d [%d][%d]: %g vs %g", v, i, d, got[d], want[d]);
                    break;
                }
        }
        cr_expect_eq(json_array_size(json_object_get(j, "missing")), (size_t)n_missing);
        cr_expect_eq(json_integer_value(json_array_get(json_object_get(j, "missing"), 0)), 42);
        json_decref(j);
        hx_free(&r);
    }
    /* Binary, f32 and f16. */
    strcpy(tail, "}");
    for (int dt = 0; dt < 2; dt++) {
        if (dt)
            strcpy(tail, ",\"encoding\":\"base64\",\"dtype\":\"f16\"}");
        const char *acc[] = {"Accept: application/octet-stream", NULL};
        hx_resp r = hx_req("POST", "/v1/tables/demo/gather", b, strlen(b), acc);
        const uint8_t *rowsb = embg(&r, 300, 64, (uint32_t)dt);
        for (int i = 0; i < 300; i++) {
            for (int d = 0; d < 64; d++) {
                float got;
                if (dt) {
                    uint16_t h;
                    memcpy(&h, rowsb + ((size_t)i * 64 + d) * 2, 2);
                    got = f16_to_f32(h);
                } else {
                    memcpy(&got, rowsb + ((size_t)i * 64 + d) * 4, 4);
                }
                float want = i % 43 == 42 ? 0.0f : rows[(i * 7) % 314][d];
                if (!near_f16(want, got)) {
                    cr_expect(0, "binary dtype %d [%d][%d]: %g vs %g", dt, i, d, got, want);
                    break;
                }
            }
        }
        cr_expect_str_eq(r.missing, "42,85,128,171,214,257");
        hx_free(&r);
    }
    /* Pooled over 300: the mean of the rows found. */
    strcpy(tail, ",\"pool\":\"mean\"}");
    hx_resp r = POST("/v1/tables/demo/gather", b);
    json_t *j = ok_json(&r, 200);
    float got[64];
    json_vec(json_object_get(j, "vector"), got, 64, "pooled");
    for (int d = 0; d < 64; d++) {
        double s = 0;
        int n = 0;
        for (int i = 0; i < 300; i++)
            if (i % 43 != 42) {
                s += rows[(i * 7) % 314][d];
                n++;
            }
        cr_expect(fabs(got[d] - s / n) < 1e-5, "pooled [%d] %g vs %g", d, got[d], s / n);
    }
    json_decref(j);
    hx_free(&r);
    free(b);
    free(rows);
}

Test(wide, gather_300_keys_equals_300_ids)
{
    char *keys = malloc(300 * 64 + 64), *p = keys;
    p += sprintf(p, "{\"keys\":[");
    for (int i = 0; i < 300; i++) {
        char path[64];
        snprintf(path, sizeof path, "/v1/tables/demo/rows/%d", i);
        hx_resp r = GET(path);
        json_t *j = ok_json(&r, 200);
        p += sprintf(p, "%s\"%s\"", i ? "," : "", json_string_value(json_object_get(j, "key")));
        json_decref(j);
        hx_free(&r);
    }
    strcpy(p, "]}");
    char *ids = ids_body(0, 300, "");
    hx_resp a = POST("/v1/tables/demo/gather", keys);
    hx_resp b = POST("/v1/tables/demo/gather", ids);
    cr_expect_eq(a.status, 200);
    cr_expect(a.len == b.len && !memcmp(a.body, b.body, a.len),
              "a gather by the 300 keys answers as the one by their ids (duplicate keys aside)");
    hx_free(&a);
    hx_free(&b);
    free(keys);
    free(ids);
}

Test(wide, batch_limits_at_1000)
{
    char *b = malloc(20000), *p = b;
    p += sprintf(p, "{\"ids\":[");
    for (int i = 0; i < 1000; i++)
        p += sprintf(p, "%s%d", i ? "," : "", i % 314);
    strcpy(p, "]}");
    hx_resp r = POST("/v1/tables/demo/gather", b);
    json_decref(ok_json(&r, 200));
    hx_free(&r);
    strcpy(p, ",1]}");
    gather_problem(b, 422, "batch-too-large");
    search_problem(b, 422, "batch-too-large");
    free(b);
}

/* Brute force over the rows: the true score of row i for query q. */
static double true_score(const float *q, const float *row, int metric)
{
    double dot = 0, nq = 0, nr = 0, l2 = 0;
    for (int d = 0; d < 64; d++) {
        dot += (double)q[d] * row[d];
        nq += (double)q[d] * q[d];
        nr += (double)row[d] * row[d];
        l2 += ((double)q[d] - row[d]) * ((double)q[d] - row[d]);
    }
    return metric == 0 ? dot / sqrt(nq * nr) : metric == 1 ? dot : sqrt(l2);
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

Test(wide, search_scores_against_brute_force)
{
    float(*rows)[64] = all_rows();
    const char *metrics[] = {"cos", "dot", "l2"};
    const int queries[] = {0, 17, 150, 304, 313};
    for (int m = 0; m < 3; m++) {
        for (int qi = 0; qi < 5; qi++) {
            int q = queries[qi];
            double all[314];
            int n = 0;
            for (int i = 0; i < 314; i++)
                if (i != q)
                    all[n++] = (m == 2 ? -1 : 1) * true_score(rows[q], rows[i], m);
            qsort(all, (size_t)n, sizeof *all, cmp_desc);
            for (int exact = 0; exact < 2; exact++) {
                char body[160];
                snprintf(body, sizeof body, "{\"id\":%d,\"k\":10,\"metric\":\"%s\",\"exact\":%s}",
                         q, metrics[m], exact ? "true" : "false");
                json_t *j = search_ok(body);
                json_t *res = json_object_get(j, "results");
                cr_assert_eq(json_array_size(res), 10, "%s", body);
                for (size_t i = 0; i < 10; i++) {
                    json_t *h = json_array_get(res, i);
                    json_int_t id = json_integer_value(json_object_get(h, "id"));
                    double s = json_number_value(json_object_get(h, "score"));
                    double t = true_score(rows[q], rows[id], m);
                    cr_expect(fabs(s - t) <= 1e-4 * (1 + fabs(t)),
                              "%s: hit %zu (id %lld) score %.7g, true %.7g", body, i, (long long)id,
                              s, t);
                    if (exact)
                        cr_expect(fabs(s - (m == 2 ? -1 : 1) * all[i]) <= 1e-4 * (1 + fabs(t)),
                                  "%s: rank %zu score %.7g, brute force %.7g", body, i, s,
                                  (m == 2 ? -1 : 1) * all[i]);
                }
                json_decref(j);
            }
        }
    }
    free(rows);
}

Test(wide, search_batch_equals_single_queries_and_pooled_300)
{
    float(*rows)[64] = all_rows();
    char *body = malloc(200000), *p = body;
    p += sprintf(p, "{\"vectors\":[");
    for (int i = 0; i < 50; i++) {
        char *v = vec_text(rows[i * 6], 64);
        p += sprintf(p, "%s%s", i ? "," : "", v);
        free(v);
    }
    strcpy(p, "],\"k\":5,\"exact\":true}");
    json_t *j = search_ok(body);
    json_t *res = json_object_get(j, "results");
    cr_assert_eq(json_array_size(res), 50);
    for (int i = 0; i < 50; i += 7) {
        char *v = vec_text(rows[i * 6], 64);
        char one[4096];
        snprintf(one, sizeof one, "{\"vector\":%s,\"k\":5,\"exact\":true}", v);
        free(v);
        json_t *s = search_ok(one);
        char *a = json_dumps(json_object_get(s, "results"), JSON_COMPACT);
        char *b = json_dumps(json_array_get(res, (size_t)i), JSON_COMPACT);
        cr_expect_str_eq(b, a, "batch[%d] = the single query", i);
        free(a);
        free(b);
        json_decref(s);
    }
    json_decref(j);
    free(body);
    /* Pooled query of 300 ids: none of them comes back. */
    char *ids = ids_body(0, 300, ",\"k\":14,\"exact\":true");
    j = search_ok(ids);
    res = json_object_get(j, "results");
    cr_expect_eq(json_array_size(res), 14, "exactly the 14 rows not in the query");
    for (size_t i = 0; i < json_array_size(res); i++)
        cr_expect_geq(json_integer_value(json_object_get(json_array_get(res, i), "id")), 300);
    json_decref(j);
    free(ids);
    free(rows);
}

/* ==== odd: keys with '/', ' ', '%', '?', '#', '+', non-ASCII; a keyless table ==== */

static th_server odd_srv;

enum { ODD_ROWS = 12, ODD_DIM = 8 };
static const char *const odd_keys[ODD_ROWS] = {
    "a/b",  "kiwi fruit", "caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
    "100%", "q?x=1",      "h#t",         "plus+sign",
    "dup",  "dup",        "back\\slash", "quote\"d"};

static float odd_value(int i, int j)
{
    return (float)(i + 1) * 0.125f + (float)j * 0.0625f * (((i + j) & 1) ? -1.0f : 1.0f);
}

static void start_odd(void)
{
    /* An f32 .npy and a keys file; packed with --keys (f32) and without keys (f32+q1). */
    char hdr[128];
    int hl =
        snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }",
                 ODD_ROWS, ODD_DIM);
    while ((10 + hl + 1) % 64)
        hdr[hl++] = ' ';
    hdr[hl++] = '\n';
    size_t len = 10 + (size_t)hl + ODD_ROWS * ODD_DIM * 4;
    uint8_t *npy = malloc(len);
    memcpy(npy, "\x93NUMPY\x01\x00", 8);
    npy[8] = (uint8_t)(hl & 0xff);
    npy[9] = (uint8_t)(hl >> 8);
    memcpy(npy + 10, hdr, (size_t)hl);
    for (int i = 0; i < ODD_ROWS; i++)
        for (int j = 0; j < ODD_DIM; j++) {
            float v = odd_value(i, j);
            memcpy(npy + 10 + hl + ((size_t)i * ODD_DIM + j) * 4, &v, 4);
        }
    char *npy_path = th_path("odd.npy"), *keys_path = th_path("odd.keys");
    th_write_file(npy_path, npy, len);
    char keys[512] = "";
    for (int i = 0; i < ODD_ROWS; i++) {
        strcat(keys, odd_keys[i]);
        strcat(keys, "\n");
    }
    th_write_file(keys_path, keys, strlen(keys));
    char *odd = th_path("odd.emb"), *nokeys = th_path("nokeys.emb");
    cr_assert_eq(th_system("'%s' pack '%s' --keys '%s' -o '%s' --dtype f32 -q >/dev/null 2>&1 && "
                           "'%s' pack '%s' -o '%s' --dtype f32+q1 -q >/dev/null 2>&1",
                           EMBD_BIN, npy_path, keys_path, odd, EMBD_BIN, npy_path, nokeys),
                 0, "packing the odd stores");
    char a[600], b[600], c[600];
    snprintf(a, sizeof a, "odd=%s", odd);
    snprintf(b, sizeof b, "nokeys=%s", nokeys);
    snprintf(c, sizeof c, "demo=%s", th_demo_store());
    const char *args[] = {"--threads", "2", a, b, c, NULL};
    th_server_start(&odd_srv, args);
    cur = &odd_srv;
    free(npy);
    free(npy_path);
    free(keys_path);
    free(odd);
    free(nokeys);
}

static void stop_odd(void)
{
    int rc = th_server_stop(&odd_srv, SIGTERM);
    cr_expect_eq(rc, 0, "embd serve exits 0 after SIGTERM (got %d)", rc);
}

TestSuite(odd, .init = start_odd, .fini = stop_odd);

Test(odd, keys_with_reserved_and_unicode_bytes_percent_encoded)
{
    for (int i = 0; i < ODD_ROWS; i++) {
        char enc[256], path[320];
        pct(odd_keys[i], enc);
        snprintf(path, sizeof path, "/v1/tables/odd/keys/%s", enc);
        hx_resp r = GET(path);
        json_t *j = ok_json(&r, 200);
        int want_id = i == 9 ? 8 : i; /* a duplicated key finds its first row */
        cr_expect_eq(json_integer_value(json_object_get(j, "id")), want_id, "%s", path);
        cr_expect_str_eq(json_string_value(json_object_get(j, "key")), odd_keys[i], "%s", path);
        float v[ODD_DIM];
        json_vec(json_object_get(j, "vector"), v, ODD_DIM, path);
        for (int d = 0; d < ODD_DIM; d++)
            cr_expect_eq(v[d], odd_value(want_id, d), "%s [%d]: f32 rows are exact", path, d);
        json_decref(j);
        hx_free(&r);
    }
    /* The second "dup" is reachable by id, with its key. */
    hx_resp r = GET("/v1/tables/odd/rows/9");
    json_t *j = ok_json(&r, 200);
    cr_expect_str_eq(json_string_value(json_object_get(j, "key")), "dup");
    json_decref(j);
    hx_free(&r);
}

Test(odd, path_decoding_of_keys)
{
    const struct {
        const char *path;
        int id; /* -1: key-not-found, -2: route-not-found */
    } c[] = {{"/v1/tables/odd/keys/a%2Fb", 0},
             {"/v1/tables/odd/keys/a%2fb", 0},
             {"/v1/tables/odd/keys/a/b", -2},
             {"/v1/tables/odd/keys/kiwi%20fruit", 1},
             {"/v1/tables/odd/keys/kiwi+fruit", -1},
             {"/v1/tables/odd/keys/plus+sign", 7},
             {"/v1/tables/odd/keys/plus%2Bsign", 7},
             {"/v1/tables/odd/keys/caf%C3%A9", 2},
             {"/v1/tables/odd/keys/cafe", -1},
             {"/v1/tables/odd/keys/%E6%97%A5%E6%9C%AC%E8%AA%9E", 3},
             {"/v1/tables/odd/keys/100%25", 4},
             {"/v1/tables/odd/keys/q%3Fx=1", 5},
             {"/v1/tables/odd/keys/q%3Fx%3D1", 5},
             {"/v1/tables/odd/keys/q?x=1", -1}, /* the key is "q"; x=1 a query parameter */
             {"/v1/tables/odd/keys/h%23t", 6},
             {"/v1/tables/odd/keys/back%5Cslash", 10},
             {"/v1/tables/odd/keys/quote%22d", 11}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        hx_resp r = GET(c[i].path);
        if (c[i].id >= 0) {
            json_t *j = ok_json(&r, 200);
            cr_expect_eq(json_integer_value(json_object_get(j, "id")), c[i].id, "%s", c[i].path);
            json_decref(j);
        } else {
            problem(&r, 404, c[i].id == -1 ? "key-not-found" : "route-not-found");
        }
        hx_free(&r);
    }
}

Test(odd, gather_and_search_by_odd_keys)
{
    char body[1024] = "{\"keys\":[";
    for (int i = ODD_ROWS - 1; i >= 0; i--) {
        char k[64];
        json_t *s = json_string(odd_keys[i]);
        char *t = json_dumps(s, JSON_ENCODE_ANY);
        snprintf(k, sizeof k, "%s,", t);
        strcat(body, k);
        free(t);
        json_decref(s);
    }
    strcat(body, "\"nope\"],\"encoding\":\"base64\"}");
    hx_resp r = POST("/v1/tables/odd/gather", body);
    json_t *j = ok_json(&r, 200);
    json_t *vs = json_object_get(j, "vectors");
    cr_assert_eq(json_array_size(vs), ODD_ROWS + 1);
    for (int p = 0; p < ODD_ROWS; p++) {
        int i = ODD_ROWS - 1 - p, id = i == 9 ? 8 : i;
        float v[ODD_DIM];
        b64_vec(json_array_get(vs, (size_t)p), v, ODD_DIM, 0, "odd row");
        for (int d = 0; d < ODD_DIM; d++)
            cr_expect_eq(v[d], odd_value(id, d), "key %s [%d]", odd_keys[i], d);
    }
    cr_expect(json_is_null(json_array_get(vs, ODD_ROWS)));
    json_decref(j);
    hx_free(&r);

    r = POST("/v1/tables/odd/search", "{\"key\":\"a/b\",\"k\":100,\"exact\":true}");
    j = ok_json(&r, 200);
    json_t *res = json_object_get(j, "results");
    cr_expect_eq(json_array_size(res), ODD_ROWS - 1, "every row but the query's");
    for (size_t i = 0; i < json_array_size(res); i++) {
        json_t *h = json_array_get(res, i);
        json_int_t id = json_integer_value(json_object_get(h, "id"));
        cr_expect_neq(id, 0);
        cr_expect_str_eq(json_string_value(json_object_get(h, "key")), odd_keys[id]);
    }
    json_decref(j);
    hx_free(&r);
    r = POST("/v1/tables/odd/search", "{\"key\":\"caf\xc3\xa9\",\"k\":3,\"metric\":\"dot\"}");
    json_decref(ok_json(&r, 200));
    hx_free(&r);
}

Test(odd, keyless_table)
{
    hx_resp r = GET("/v1/tables/nokeys");
    json_t *j = ok_json(&r, 200);
    cr_expect(json_is_false(json_object_get(j, "keys")));
    json_t *codecs = json_object_get(j, "codecs");
    cr_expect(json_array_size(codecs) == 2 &&
                  !strcmp(json_string_value(json_array_get(codecs, 0)), "f32") &&
                  !strcmp(json_string_value(json_array_get(codecs, 1)), "q1"),
              "codecs [f32, q1]: %s", r.body);
    json_decref(j);
    hx_free(&r);
    r = GET("/v1/tables/nokeys/rows/3");
    j = ok_json(&r, 200);
    cr_expect(json_is_null(json_object_get(j, "key")), "key null without keys: %s", r.body);
    json_decref(j);
    hx_free(&r);
    expect_problem("GET", "/v1/tables/nokeys/keys/a%2Fb", NULL, 404, "key-not-found");
    expect_problem("GET", "/v1/tables/nokeys/keys/0", NULL, 404, "key-not-found");
    expect_problem("POST", "/v1/tables/nokeys/gather", "{\"keys\":[\"a/b\"]}", 422,
                   "invalid-value");
    expect_problem("POST", "/v1/tables/nokeys/search", "{\"key\":\"a/b\"}", 422, "invalid-value");
    expect_problem("POST", "/v1/tables/nokeys/search", "{\"keys\":[\"a/b\"]}", 422,
                   "invalid-value");
    r = POST("/v1/tables/nokeys/search", "{\"id\":0,\"k\":3}");
    j = ok_json(&r, 200);
    json_t *res = json_object_get(j, "results");
    cr_expect_eq(json_array_size(res), 3);
    for (size_t i = 0; i < json_array_size(res); i++)
        cr_expect(json_is_null(json_object_get(json_array_get(res, i), "key")), "hit key null");
    cr_expect_str_eq(json_string_value(json_object_get(j, "mode")), "two_stage");
    json_decref(j);
    hx_free(&r);
}

Test(odd, tables_in_name_order_and_etag_per_table)
{
    hx_resp r = GET("/v1/tables");
    json_t *j = ok_json(&r, 200);
    json_t *t = json_object_get(j, "tables");
    cr_assert_eq(json_array_size(t), 3);
    const char *names[] = {"demo", "nokeys", "odd"};
    char crc[3][16];
    for (int i = 0; i < 3; i++) {
        cr_expect_str_eq(json_string_value(json_object_get(json_array_get(t, (size_t)i), "name")),
                         names[i], "name order");
        snprintf(crc[i], sizeof crc[i], "%s",
                 json_string_value(json_object_get(json_array_get(t, (size_t)i), "checksum")));
    }
    json_decref(j);
    hx_free(&r);
    char etags[3][80];
    for (int i = 0; i < 3; i++) {
        char path[64], want[32];
        snprintf(path, sizeof path, "/v1/tables/%s", names[i]);
        r = GET(path);
        cr_expect_eq(r.status, 200);
        snprintf(want, sizeof want, "\"%.8s", crc[i]);
        cr_expect(!strncmp(r.etag, want, 9), "%s: ETag %s starts with its checksum %s", path,
                  r.etag, crc[i]);
        snprintf(etags[i], sizeof etags[i], "%s", r.etag);
        hx_free(&r);
    }
    cr_expect_str_neq(etags[0], etags[1]);
    cr_expect_str_neq(etags[0], etags[2]);
    cr_expect_str_neq(etags[1], etags[2], "the same rows, another store: another ETag");
}

Test(odd, base64_f32_is_the_stored_bytes)
{
    for (int i = 0; i < ODD_ROWS; i++) {
        char path[96];
        snprintf(path, sizeof path, "/v1/tables/odd/rows/%d?encoding=base64", i);
        hx_resp r = GET(path);
        json_t *j = ok_json(&r, 200);
        float v[ODD_DIM];
        b64_vec(json_object_get(j, "vector"), v, ODD_DIM, 0, path);
        for (int d = 0; d < ODD_DIM; d++)
            cr_expect_eq(v[d], odd_value(i, d), "%s [%d]", path, d);
        json_decref(j);
        hx_free(&r);
    }
}

/* A batch whose queries x k x oversample would need more candidate slots than a worker may
 * hold is refused with 422 before any scan (64 x 1000 x 100 = 6.4M > 4M). */
Test(http, batch_candidate_budget_is_422)
{
    size_t cap = 64 * (64 * 4 + 4) + 128, n = 0;
    char *body = malloc(cap);
    n += (size_t)snprintf(body + n, cap - n, "{\"k\":1000,\"oversample\":100,\"vectors\":[");
    for (int q = 0; q < 64; q++) {
        body[n++] = q ? ',' : '[';
        if (q)
            body[n++] = '[';
        for (int d = 0; d < 64; d++)
            n += (size_t)snprintf(body + n, cap - n, "%s0.5", d ? "," : "");
        body[n++] = ']';
    }
    n += (size_t)snprintf(body + n, cap - n, "]}");
    th_response r;
    cr_assert_eq(th_request(&srv, "POST", "/v1/tables/demo/search", body, NULL, &r), 0);
    cr_expect_eq(r.status, 422, "%s", r.body);
    cr_expect(strstr(r.body, "candidates exceeds"), "%s", r.body);
    th_response_free(&r);
    free(body);
}
