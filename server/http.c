/*
 * http.c - the libmicrohttpd side of a loop (see http.h).
 *
 * Request life: the first access-handler call checks what must be refused before any body is
 * read (duplicate Content-Length, Content-Length with Transfer-Encoding, a Transfer-Encoding
 * other than chunked, a body over --max-body, a missing API key, an unknown route or method);
 * later calls collect the body; the last call hands the request to api.c. A job for a worker
 * suspends the connection; when it comes back (or its deadline passes) the connection is
 * resumed and the next handler call queues the reply. MHD never times out a suspended
 * connection and cannot see the client leave, so every suspended request carries a deadline.
 *
 * Slow clients: libmicrohttpd's own timeout only closes a connection that sends nothing for
 * --timeout seconds, so a client trickling one byte a second (slowloris) would hold it forever.
 * Each connection therefore records when its current request began (its accept, or the end of
 * the previous request); the 100 ms tick shuts down the socket of any whose request has not
 * arrived in full --timeout seconds later, and libmicrohttpd then closes it without an answer.
 * Rejected: a per-request deadline in the access handler alone (it is not called until the
 * header section is complete, and not at all while bytes trickle in).
 *
 * Framing: a header name that is not an RFC 9110 token ("Content-Length : 5") and a method that
 * is not one are refused with the other framing errors (libmicrohttpd 0.9.75 accepts both, and
 * glues an obs-fold continuation line onto the header *name*, so a folded Content-Length would
 * vanish and its body be read as the next request). Framing errors and 431 close the
 * connection. Other refusals of a request without a body are queued at the handler's last call,
 * which keeps the connection open for the next (pipelined) request; queuing them at the first
 * call would make libmicrohttpd close it.
 *
 * libmicrohttpd 0.9.75 unescapes URLs before routing; that would turn a key "a%2Fb" into two
 * path segments, so unescaping is switched off and each segment and query value is decoded
 * here.
 */
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <malloc.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "api.h"
#include "emb_fault.h"
#include "jsonw.h"
#include "metrics.h"

atomic_int srv_draining;

/* One open connection (libmicrohttpd's socket context). */
struct srv_conn {
    struct MHD_Connection *conn;
    double since;  /* when its current request began: the accept or the previous request's end */
    int receiving; /* that request has not arrived in full yet */
    srv_conn *prev, *next; /* in h->conns */
};

struct srv_request {
    srv_http *h;
    struct MHD_Connection *conn;
    double t0, deadline;
    srv_route route;
    char method[8];
    char request_id[136];
    int started;     /* the first handler call happened */
    int fault_armed; /* X-Embd-Fault-Alloc armed the allocation countdown (test builds) */
    int refused;     /* answered before reading the body */
    int has_body;    /* Content-Length above 0 or Transfer-Encoding */
    int close;       /* answer with Connection: close (framing errors, 431) */
    int sent;        /* the reply is queued with MHD */
    int body_too_large;
    int body_oom;  /* the body buffer could not grow: the rest is discarded, the answer is 500 */
    int body_busy; /* growing it would pass --max-buffered: discarded too, the answer is 503 */
    int gone;      /* the client closed while a worker had the request: close, no answer */
    char *body;
    size_t body_len, body_cap;
    srv_reply reply;
    int have_reply;
    srv_api_job *job; /* running on a worker */
    int suspended;
    srv_request *prev, *next; /* in h->suspended while suspended */
    char *path;               /* decoded copy of the URL path */
    char *url;                /* the URL path as received, for problem "instance" */
    srv_api_request api;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void srv_reply_free(srv_reply *r)
{
    jsonw_release(r->body);
    free(r->extra_value);
    memset(r, 0, sizeof *r);
}

void srv_reply_problem(srv_reply *r, unsigned status, const char *type, const char *fmt, ...)
{
    static const struct {
        const char *type, *title;
    } titles[] = {
        {"bad-framing", "Bad request framing"},
        {"malformed-json", "Malformed JSON"},
        {"wrong-type", "Wrong type"},
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
        {"batch-too-large", "Batch too large"},
        {"headers-too-large", "Request headers too large"},
        {"internal", "Internal error"},
        {"overloaded", "Overloaded"},
        {"draining", "Draining"},
        {"deadline-exceeded", "Deadline exceeded"},
        {"not-ready", "Not ready"},
    };
    const char *title = "Error";
    for (size_t i = 0; i < sizeof titles / sizeof titles[0]; i++)
        if (!strcmp(titles[i].type, type))
            title = titles[i].title;
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    jsonw_release(r->body);
    jsonw w;
    jsonw_init(&w, 256);
    jsonw_cstr(&w, "{\"type\":\"urn:embd:problem:");
    jsonw_cstr(&w, type);
    jsonw_cstr(&w, "\",\"title\":");
    jsonw_string(&w, title, strlen(title));
    jsonw_cstr(&w, ",\"status\":");
    jsonw_u64(&w, status);
    jsonw_cstr(&w, ",\"detail\":");
    jsonw_string(&w, detail, strlen(detail));
    jsonw_cstr(&w, "}");
    r->status = status;
    r->content_type = "application/problem+json";
    r->body = jsonw_steal(&w, &r->len);
}

/* ---- URL handling ---- */

static int hexval(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? (tolower(c) - 'a' + 10) : -1;
}

/* Decodes %XX (and '+' as space when plus) in place; returns the new length, or -1 for a bad
 * escape. */
static long url_decode(char *s, size_t n, int plus)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n)
                return -1;
            int a = hexval((unsigned char)s[i + 1]), b = hexval((unsigned char)s[i + 2]);
            if (a < 0 || b < 0)
                return -1;
            s[o++] = (char)(a * 16 + b);
            i += 2;
        } else if (plus && s[i] == '+') {
            s[o++] = ' ';
        } else {
            s[o++] = s[i];
        }
    }
    return (long)o;
}

static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

int srv_http_route(char *path, srv_route *route, srv_api_request *api)
{
    char *seg[6];
    size_t len[6];
    int n = 0;
    char *p = path;
    if (*p != '/')
        return -1;
    while (*p == '/' && n < 6) {
        p++;
        char *end = strchr(p, '/');
        size_t l = end ? (size_t)(end - p) : strlen(p);
        long d = url_decode(p, l, 0);
        if (d < 0)
            return -1;
        seg[n] = p;
        len[n] = (size_t)d;
        n++;
        if (!end)
            break;
        p = end;
    }
    if (*p == '/' && n == 6) {
        *route = SRV_ROUTE_OTHER;
        return 0;
    }
#define SEG(i, s) (len[i] == sizeof(s) - 1 && !memcmp(seg[i], s, len[i]))
    *route = SRV_ROUTE_OTHER;
    if (n == 1 && SEG(0, "healthz"))
        *route = SRV_ROUTE_HEALTHZ;
    else if (n == 1 && SEG(0, "readyz"))
        *route = SRV_ROUTE_READYZ;
    else if (n == 1 && SEG(0, "metrics"))
        *route = SRV_ROUTE_METRICS;
    else if (n == 1 && SEG(0, "openapi.yaml"))
        *route = SRV_ROUTE_OPENAPI;
    else if (n == 3 && SEG(0, "v1") && SEG(1, "admin") && SEG(2, "reload"))
        *route = SRV_ROUTE_RELOAD;
    else if (n >= 2 && SEG(0, "v1") && SEG(1, "tables")) {
        if (n == 2)
            *route = SRV_ROUTE_TABLES;
        else if (len[2] > 0) {
            api->table = seg[2];
            api->table_len = len[2];
            if (n == 3)
                *route = SRV_ROUTE_TABLE;
            else if (n == 4 && SEG(3, "gather"))
                *route = SRV_ROUTE_GATHER;
            else if (n == 4 && SEG(3, "search"))
                *route = SRV_ROUTE_SEARCH;
            else if (n == 5 && (SEG(3, "rows") || SEG(3, "keys"))) {
                *route = SEG(3, "rows") ? SRV_ROUTE_ROW : SRV_ROUTE_KEY;
                api->item = seg[4];
                api->item_len = len[4];
            }
        }
    }
#undef SEG
    /* Segments are decoded in place; terminate them for the C-string users. */
    for (int i = 0; i < n; i++)
        seg[i][len[i]] = 0;
    return 0;
}

/* Routes a copy of url (srv_http_route); returns 0, -1 for a malformed escape, or -2 when out
 * of memory. */
static int route_path(srv_request *q, const char *url)
{
    q->path = strdup(url);
    if (!q->path)
        return -2;
    return srv_http_route(q->path, &q->route, &q->api);
}

static const char *allowed_methods(srv_route r)
{
    switch (r) {
    case SRV_ROUTE_GATHER:
    case SRV_ROUTE_SEARCH:
    case SRV_ROUTE_RELOAD: return "POST";
    case SRV_ROUTE_OTHER: return NULL;
    default: return "GET, HEAD";
    }
}

/* ---- responses ---- */

/* Adds "instance" (the request path) and "request_id" to a problem body. */
static void complete_problem(srv_request *q, srv_reply *r)
{
    if (!r->body || r->len < 2 || r->body[r->len - 1] != '}')
        return;
    jsonw w;
    jsonw_init(&w, r->len + 256);
    jsonw_raw(&w, r->body, r->len - 1);
    if (q->url) {
        jsonw_cstr(&w, ",\"instance\":");
        jsonw_string(&w, q->url, strlen(q->url));
    }
    jsonw_cstr(&w, ",\"request_id\":");
    jsonw_string(&w, q->request_id, strlen(q->request_id));
    jsonw_char(&w, '}');
    size_t len;
    char *b = jsonw_steal(&w, &len);
    if (b) {
        jsonw_release(r->body);
        r->body = b;
        r->len = len;
    }
}

/* The answer when even a problem's body could not be allocated. */
static const char oom_problem[] = "{\"type\":\"urn:embd:problem:internal\",\"title\":\"Internal "
                                  "error\",\"status\":500,\"detail\":\"out of memory\"}";

static enum MHD_Result send_reply(srv_request *q)
{
    srv_reply *r = &q->reply;
    int problem = r->content_type && !strcmp(r->content_type, "application/problem+json");
    if (problem)
        complete_problem(q, r);
    struct MHD_Response *resp;
    if (problem && !r->body) {
        r->status = 500;
        resp = MHD_create_response_from_buffer(sizeof oom_problem - 1, (void *)oom_problem,
                                               MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer_with_free_callback(r->len, r->body, jsonw_release);
    }
    if (!resp)
        return MHD_NO;
    r->body = NULL; /* owned by MHD now */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r->content_type ? r->content_type : "application/json");
    MHD_add_response_header(resp, "X-Request-Id", q->request_id);
    if (r->etag[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, r->etag);
    if (r->extra_name[0] && r->extra_value)
        MHD_add_response_header(resp, r->extra_name, r->extra_value);
    if (r->status == 503 && !(r->extra_name[0] && !strcmp(r->extra_name, "Retry-After")))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (srv_draining || q->close)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (q->fault_armed) {
        MHD_add_response_header(resp, "X-Embd-Fault-Fired", emb_fault_fired() ? "1" : "0");
        emb_fault_arm(0);
    }
    enum MHD_Result ok = MHD_queue_response(q->conn, r->status, resp);
    MHD_destroy_response(resp);
    q->sent = ok == MHD_YES;
    return ok;
}

static enum MHD_Result answer_now(srv_request *q, unsigned status, const char *type,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result answer_now(srv_request *q, unsigned status, const char *type,
                                  const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    srv_reply_problem(&q->reply, status, type, "%s", detail);
    q->have_reply = 1;
    q->refused = 1;
    if (status == 431 || !strcmp(type, "bad-framing"))
        q->close = 1;
    if (!q->has_body && !q->close)
        return MHD_YES; /* queued at the last handler call: the connection stays open */
    return send_reply(q);
}

/* ---- header checks ---- */

/* --max-header-size bounds the header bytes (names, values, URL) we accept; larger gets a 431
 * problem. libmicrohttpd's own per-connection memory pool is MHD_POOL_EXTRA larger (its header
 * records, the response header), so only a header section beyond the pool gets MHD's plain 431
 * page instead. Keep the pool small: libmicrohttpd 0.9.75 zeroes all of it after every request
 * on a kept-alive connection and half of it again when it shrinks the read buffer (with a 40 KiB
 * pool those memsets were 7% of a single-row lookup's time, at 128 KiB 21%). */
#define MHD_POOL_EXTRA (8u * 1024)

typedef struct header_scan {
    size_t bytes;
    int content_length, transfer_encoding, te_chunked;
    const char *request_id, *auth, *accept, *content_type, *content_length_value;
    const char *bad_name; /* the first header name that is not a token */
} header_scan;

/* An RFC 9110 token (method and header names): 1 or more of ALPHA DIGIT !#$%&'*+-.^_`|~ */
static int is_token(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
            return 0;
    return 1;
}

/* A name that starts like a framing header but is longer: what libmicrohttpd 0.9.75 makes of
 * "Content-Length:" followed by an obs-fold continuation line ("Content-Length5"). */
static int framing_prefix(const char *key)
{
    return (!strncasecmp(key, "Content-Length", 14) && key[14]) ||
           (!strncasecmp(key, "Transfer-Encoding", 17) && key[17]);
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    header_scan *s = cls;
    s->bytes += strlen(key) + (value ? strlen(value) : 0) + 4;
    if (!s->bad_name && (!is_token(key) || framing_prefix(key)))
        s->bad_name = key;
    if (!strcasecmp(key, "Content-Length")) {
        s->content_length++;
        s->content_length_value = value;
    } else if (!strcasecmp(key, "Transfer-Encoding")) {
        s->transfer_encoding++;
        s->te_chunked = value && !strcasecmp(value, "chunked");
    } else if (!strcasecmp(key, "X-Request-Id"))
        s->request_id = value;
    else if (!strcasecmp(key, "Authorization"))
        s->auth = value;
    else if (!strcasecmp(key, "Accept"))
        s->accept = value;
    else if (!strcasecmp(key, "Content-Type"))
        s->content_type = value;
    return MHD_YES;
}

/* A client's X-Request-Id is kept when it is 1..128 printable ASCII characters (! to ~). */
static int valid_request_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= 128 || s[n] < '!' || s[n] > '~')
            return 0;
    return n > 0;
}

/* Constant-time comparison of a presented bearer token with the key. */
static int auth_ok(const srv_config *cfg, const char *header)
{
    if (!cfg->api_key)
        return 1;
    if (!header || strncasecmp(header, "Bearer ", 7) != 0)
        return 0;
    const char *tok = header + 7;
    size_t a = strlen(tok), b = strlen(cfg->api_key);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < b; i++)
        diff |= (unsigned)(unsigned char)(i < a ? tok[i] : 0) ^ (unsigned char)cfg->api_key[i];
    return diff == 0;
}

/* Content-Type is application/json (any case), optionally followed by parameters. */
static int is_json_type(const char *ct)
{
    if (!ct || strncasecmp(ct, "application/json", 16) != 0)
        return 0;
    const char *p = ct + 16;
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == 0 || *p == ';';
}

int srv_http_accepts_binary(const char *accept)
{
    static const char want[] = "application/octet-stream";
    for (const char *p = accept; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n >= sizeof want - 1 && !strncasecmp(p, want, sizeof want - 1)) {
            double weight = 1;
            const char *qp = strstr(p + sizeof want - 1, "q=");
            if (qp && qp < p + n)
                weight = strtod(qp + 2, NULL);
            if (weight > 0)
                return 1;
        }
        p = end ? end + 1 : p + n;
    }
    return 0;
}

static int needs_auth(srv_route r)
{
    return r != SRV_ROUTE_HEALTHZ && r != SRV_ROUTE_READYZ && r != SRV_ROUTE_METRICS &&
           r != SRV_ROUTE_OPENAPI;
}

/* ---- connections ---- */

static srv_conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* The connection's current request arrived in full (received 0) or a new one begins (1). */
static void conn_receiving(struct MHD_Connection *c, int receiving)
{
    srv_conn *sc = conn_of(c);
    if (!sc)
        return;
    if (receiving && !sc->receiving)
        sc->since = now_s();
    sc->receiving = receiving;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    srv_http *h = cls;
    srv_conn *c = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        /* Without memory the connection keeps only libmicrohttpd's idle timeout. */
        if (!(c = calloc(1, sizeof *c)))
            return;
        c->conn = conn;
        c->since = now_s();
        c->receiving = 1;
        c->next = h->conns;
        if (h->conns)
            h->conns->prev = c;
        h->conns = c;
        *socket_context = c;
        if (++h->n_conns > h->conns_peak)
            h->conns_peak = h->n_conns;
        return;
    }
    if (!c)
        return;
    h->n_conns--;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    *socket_context = NULL;
    free(c);
}

/* ---- suspension ---- */

static void unlink_suspended(srv_request *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else if (q->h->suspended == q)
        q->h->suspended = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
}

static void resume(srv_request *q)
{
    unlink_suspended(q);
    q->suspended = 0;
    MHD_resume_connection(q->conn);
}

void srv_http_drain_done(srv_http *h)
{
    srv_job *j = srv_done_queue_take(&h->done);
    while (j) {
        srv_job *next = j->next;
        srv_api_job *aj = (srv_api_job *)j;
        srv_request *q = aj->owner;
        h->jobs_out--;
        if (atomic_load(&aj->canceled) || !q) {
            srv_api_job_free(aj); /* its request was answered already */
        } else {
            q->reply = aj->reply;
            memset(&aj->reply, 0, sizeof aj->reply);
            q->have_reply = 1;
            q->job = NULL;
            srv_api_job_free(aj);
            resume(q);
        }
        j = next;
    }
}

/* Lets go of q's job, if a worker has it: the worker skips it or its answer is dropped, and
 * the completion frees it (srv_http_drain_done). */
static void detach_job(srv_request *q)
{
    if (!q->job)
        return;
    atomic_store(&q->job->canceled, 1);
    q->job->owner = NULL;
    q->job = NULL;
}

static void give_up(srv_request *q, const char *type, const char *why)
{
    detach_job(q);
    srv_reply_problem(&q->reply, 503, type, "%s", why);
    q->have_reply = 1;
    resume(q);
}

/* libmicrohttpd takes each connection's pool (--max-header-size + 8 KiB, under its 32 KiB mmap
 * threshold) from malloc, and glibc keeps the heap pages of pools freed in a burst of
 * connections (5,000 idle ones left ~23 MB resident after they closed). Once the open
 * connections fall to half of a peak of at least TRIM_MIN_PEAK, malloc_trim hands the free
 * pages back; it runs on a timer, at most once per burst, never per request. */
#define TRIM_MIN_PEAK 256u

/* 1 when the peer of a suspended connection has closed it (end of stream or an error). While
 * a request is suspended libmicrohttpd does not watch its socket, so without this a client that
 * gave up (a timeout, a closed load generator) still had its queued work run to the end: after
 * a benchmark of batch searches the workers ran on for seconds for nobody. A client that only
 * shut down its sending side looks the same; libmicrohttpd 0.9.75 would drop its answer on
 * resumption anyway (SECURITY.md). Pipelined bytes waiting are not an end. */
static int client_gone(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return 0;
    char c;
    ssize_t n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Drops the job of a request whose client left (the worker skips it, or its answer is thrown
 * away) and closes the connection without an answer. */
static void drop_gone(srv_request *q)
{
    detach_job(q);
    q->gone = 1;
    srv_log(SRV_LOG_DEBUG, "client left; its queued work was dropped", "id", q->request_id, NULL);
    resume(q);
}

void srv_http_check_deadlines(srv_http *h)
{
    if (h->conns_peak >= TRIM_MIN_PEAK && h->n_conns <= h->conns_peak / 2) {
        malloc_trim(0);
        h->conns_peak = h->n_conns;
    }
    double t = now_s();
    jsonw_trim(t);
    for (srv_request *q = h->suspended, *next; q; q = next) {
        next = q->next;
        if (t >= q->deadline)
            give_up(q, "deadline-exceeded",
                    "the request deadline (--timeout) passed before a worker finished it");
        else if (client_gone(q->conn))
            drop_gone(q);
    }
    /* Slow senders: shutting the socket down makes libmicrohttpd read EOF and close it, and
     * call the completion and close callbacks as for a client that left. */
    for (srv_conn *c = h->conns; c; c = c->next) {
        if (!c->receiving || t - c->since <= h->cfg->timeout)
            continue;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci)
            shutdown(ci->connect_fd, SHUT_RDWR);
        c->receiving = 0;
    }
}

void srv_http_cancel_all(srv_http *h)
{
    while (h->suspended)
        give_up(h->suspended, "draining", "the server is shutting down");
}

/* ---- the access handler ---- */

static enum MHD_Result first_call(srv_request *q, const char *url, const char *method)
{
    srv_http *h = q->h;
    const srv_config *cfg = h->cfg;
    header_scan hs = {0};
    if (emb_fault_enabled()) {
        /* Test builds: fail the Nth allocation made while serving this request. */
        const char *n = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, "X-Embd-Fault-Alloc");
        if (n && atoi(n) > 0) {
            emb_fault_arm((uint64_t)atoi(n));
            q->fault_armed = 1;
        }
    }
    q->url = strdup(url);
    MHD_get_connection_values(q->conn, MHD_HEADER_KIND, scan_header, &hs);
    q->has_body = hs.transfer_encoding ||
                  (hs.content_length_value && strcmp(hs.content_length_value, "0") != 0);
    if (hs.request_id && valid_request_id(hs.request_id)) {
        memcpy(q->request_id, hs.request_id, strlen(hs.request_id) + 1); /* <= 128 bytes */
    } else {
        /* 8 hex digits of the time, 2 of the loop, 6 of a per-loop counter (no printf: this
         * is on every request). */
        uint64_t id = (uint64_t)(time(NULL) & 0xFFFFFFFF) << 32 |
                      (uint64_t)(h->index & 0xFF) << 24 | (h->next_id++ & 0xFFFFFF);
        for (int i = 15; i >= 0; i--, id >>= 4)
            q->request_id[i] = "0123456789abcdef"[id & 15];
        q->request_id[16] = '\0';
    }
    size_t mlen = strlen(method);
    memcpy(q->method, mlen < sizeof q->method ? method : "OTHER",
           mlen < sizeof q->method ? mlen + 1 : sizeof "OTHER");

    if (hs.bytes + strlen(url) > h->cfg->max_header)
        return answer_now(q, 431, "headers-too-large",
                          "the request line and headers exceed %u bytes", h->cfg->max_header);
    /* Refuse what would let a body be read ambiguously, before reading any of it. */
    if (hs.bad_name)
        return answer_now(q, 400, "bad-framing",
                          "header name '%.64s' is not valid (whitespace before the colon, a folded "
                          "line, or a byte outside a token)",
                          hs.bad_name);
    if (!is_token(method))
        return answer_now(q, 400, "bad-framing", "the request method is not a token");
    if (hs.content_length > 1)
        return answer_now(q, 400, "bad-framing", "more than one Content-Length header");
    if (hs.transfer_encoding && hs.content_length)
        return answer_now(q, 400, "bad-framing", "Content-Length together with Transfer-Encoding");
    if (hs.transfer_encoding > 1 || (hs.transfer_encoding && !hs.te_chunked))
        return answer_now(q, 400, "bad-framing", "Transfer-Encoding other than a single 'chunked'");
    int routed = route_path(q, url);
    if (routed == -2)
        return answer_now(q, 500, "internal", "out of memory");
    if (routed != 0)
        return answer_now(q, 400, "bad-framing", "malformed percent-escape in the URL path");
    const char *allow = allowed_methods(q->route);
    if (!allow)
        return answer_now(q, 404, "route-not-found", "no such endpoint: %s", url);
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    int is_post = !strcmp(method, "POST");
    if (!strcmp(allow, "POST") ? !is_post : !is_get) {
        snprintf(q->reply.extra_name, sizeof q->reply.extra_name, "Allow");
        q->reply.extra_value = strdup(allow);
        return answer_now(q, 405, "method-not-allowed", "%s is not allowed here; use %s", method,
                          allow);
    }
    if (needs_auth(q->route) && !auth_ok(cfg, hs.auth)) {
        snprintf(q->reply.extra_name, sizeof q->reply.extra_name, "WWW-Authenticate");
        q->reply.extra_value = strdup("Bearer realm=\"embd\"");
        return answer_now(q, 401, "unauthorized",
                          "missing or wrong API key (Authorization: Bearer <key>)");
    }
    /* The contract's order: unknown table (404), then media type (415), then size (413). */
    if (q->api.table) {
        srv_table *t = srv_table_get(q->api.table, q->api.table_len);
        if (!t)
            return answer_now(q, 404, "table-not-found", "no table named '%.*s'",
                              (int)(q->api.table_len > 200 ? 200 : q->api.table_len), q->api.table);
        srv_table_put(t);
    }
    if ((q->route == SRV_ROUTE_GATHER || q->route == SRV_ROUTE_SEARCH) &&
        !is_json_type(hs.content_type))
        return answer_now(q, 415, "unsupported-media-type",
                          "Content-Type must be application/json");
    const char *cl = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || *end || !isdigit((unsigned char)*cl))
            return answer_now(q, 400, "bad-framing", "bad Content-Length");
        if (n > cfg->max_body)
            return answer_now(q, 413, "body-too-large",
                              "body of %llu bytes exceeds --max-body %llu", n,
                              (unsigned long long)cfg->max_body);
    }
    q->api.route = q->route;
    q->api.method = q->method;
    q->api.content_type = hs.content_type;
    q->api.accept_binary = srv_http_accepts_binary(hs.accept);
    q->api.encoding = MHD_lookup_connection_value(q->conn, MHD_GET_ARGUMENT_KIND, "encoding");
    q->api.dtype = MHD_lookup_connection_value(q->conn, MHD_GET_ARGUMENT_KIND, "dtype");
    return MHD_YES;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls)
{
    (void)version;
    srv_http *h = cls;
    srv_request *q = *con_cls;
    if (!q) {
        /* Allocated by the URI log callback on the very first byte; never NULL here. */
        return MHD_NO;
    }
    if (!q->started) {
        q->started = 1;
        q->h = h;
        q->conn = conn;
        return first_call(q, url, method);
    }
    if (q->refused) {
        /* A refusal waiting for this last call (no body), or one already queued. */
        *upload_data_size = 0;
        if (q->sent)
            return MHD_YES;
        conn_receiving(conn, 0);
        return send_reply(q);
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        /* A body still arriving after --timeout (slowloris): close the connection. */
        if (now_s() - q->t0 > h->cfg->timeout)
            return MHD_NO;
        if (q->body_oom || q->body_busy)
            return MHD_YES;
        if (q->body_too_large || n > h->cfg->max_body - q->body_len) {
            /* A chunked body over the limit (no length was announced): discard the rest and
             * answer 413 at its end (libmicrohttpd 0.9.75 cannot answer mid-upload). */
            q->body_too_large = 1;
            return MHD_YES;
        }
        if (q->body_len + n + 1 > q->body_cap) {
            size_t cap = q->body_cap ? q->body_cap * 2 : 4096;
            while (cap < q->body_len + n + 1)
                cap *= 2;
            if (cap > h->cfg->max_body + 1)
                cap = h->cfg->max_body + 1; /* enough: the body never passes --max-body */
            if (cap - q->body_cap > h->cfg->max_buffered - h->buffered) {
                /* Every connection may send --max-body; together they may not pass the
                 * budget. Discard the rest and answer 503 at the end of the body. */
                q->body_busy = 1;
                return MHD_YES;
            }
            char *b = realloc(q->body, cap);
            if (!b) {
                q->body_oom = 1; /* discard the rest; answer 500 at the end of the body */
                return MHD_YES;
            }
            h->buffered += cap - q->body_cap;
            q->body = b;
            q->body_cap = cap;
        }
        memcpy(q->body + q->body_len, upload_data, n);
        q->body_len += n;
        q->body[q->body_len] = 0;
        return MHD_YES;
    }
    conn_receiving(conn, 0);
    if (q->gone)
        return MHD_NO; /* nobody to answer: libmicrohttpd closes the connection */
    if (q->have_reply)
        return send_reply(q);
    if (q->body_too_large)
        return answer_now(q, 413, "body-too-large", "the body exceeds --max-body %llu",
                          (unsigned long long)h->cfg->max_body);
    if (q->body_oom)
        return answer_now(q, 500, "internal", "out of memory reading the body");
    if (q->body_busy)
        return answer_now(q, 503, "overloaded",
                          "request bodies held at once would exceed --max-buffered %llu bytes; "
                          "retry shortly",
                          (unsigned long long)h->cfg->max_buffered);
    if (q->job)
        return MHD_YES; /* spurious call while suspended */
    q->api.body = q->body ? q->body : "";
    q->api.body_len = q->body_len;
    srv_api_job *job = NULL;
    int rc = srv_api_handle(h->cfg, &q->api, &q->reply, &job);
    if (rc == 0) {
        q->have_reply = 1;
        return send_reply(q);
    }
    job->owner = q;
    job->base.done = &h->done;
    if ((job->n_parts ? srv_pool_submit_many(job->parts, job->n_parts)
                      : srv_pool_submit(&job->base)) != 0) {
        srv_api_job_free(job);
        srv_reply_problem(&q->reply, 503, "overloaded",
                          "the worker queue is full (%u jobs); retry shortly", srv_pool_capacity());
        q->have_reply = 1;
        return send_reply(q);
    }
    h->jobs_out++;
    q->job = job;
    q->deadline = now_s() + h->cfg->timeout;
    q->suspended = 1;
    q->next = h->suspended;
    if (h->suspended)
        h->suspended->prev = q;
    h->suspended = q;
    MHD_suspend_connection(conn);
    return MHD_YES;
}

/* Called on the first line of every request: the request state starts here, so the latency
 * clock includes the headers. */
static void *uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)uri;
    (void)conn;
    srv_http *h = cls;
    srv_request *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->h = h;
    q->t0 = now_s();
    q->route = SRV_ROUTE_OTHER;
    memcpy(q->method, "OTHER", sizeof "OTHER");
    h->in_flight++;
    srv_metrics_in_flight_add(1);
    return q;
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    srv_http *h = cls;
    srv_request *q = *con_cls;
    conn_receiving(conn, 1); /* the next request's time starts now */
    if (!q)
        return;
    *con_cls = NULL;
    if (q->suspended)
        unlink_suspended(q);
    detach_job(q);
    unsigned status = q->have_reply ? q->reply.status : 0;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !q->have_reply)
        status = 0;
    double dt = now_s() - q->t0;
    if (status)
        srv_metrics_request(q->route, q->method, status, dt);
    if (h->cfg->access_log && status) {
        char st[16], ms[32];
        snprintf(st, sizeof st, "%u", status);
        snprintf(ms, sizeof ms, "%.3f", dt * 1000);
        srv_log(SRV_LOG_INFO, "request", "id", q->request_id, "method", q->method, "route",
                srv_route_name(q->route), "status", st, "ms", ms, NULL);
    }
    h->in_flight--;
    srv_metrics_in_flight_add(-1);
    srv_reply_free(&q->reply);
    h->buffered -= q->body_cap;
    free(q->body);
    free(q->path);
    free(q->url);
    free(q);
}

int srv_http_start(srv_http *h, int listen_fd, void (*wake)(void *), void *ctx)
{
    srv_done_queue_init(&h->done, wake, ctx);
    unsigned timeout = h->cfg->timeout < 1 ? 1 : (unsigned)h->cfg->timeout;
    h->daemon = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL, NULL, handler, h,
        MHD_OPTION_LISTEN_SOCKET, listen_fd, MHD_OPTION_CONNECTION_TIMEOUT, timeout,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->cfg->max_connections,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)h->cfg->max_header + MHD_POOL_EXTRA,
        MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_URI_LOG_CALLBACK, uri_log, h,
        MHD_OPTION_NOTIFY_COMPLETED, completed, h, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_END);
    if (!h->daemon) {
        srv_log(SRV_LOG_ERROR, "cannot start the HTTP daemon", NULL);
        return -1;
    }
    return 0;
}

unsigned srv_http_jobs_out(const srv_http *h)
{
    return h->jobs_out;
}

void srv_http_stop(srv_http *h)
{
    if (h->daemon)
        MHD_stop_daemon(h->daemon);
    h->daemon = NULL;
}
