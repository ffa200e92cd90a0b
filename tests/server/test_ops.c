/*
 * test_ops.c - operations against the real embd serve on loopback: reload (SIGHUP and POST
 * /v1/admin/reload) and shutdown (SIGTERM, --shutdown-delay) under a bounded concurrent load,
 * the API key, and the limits (--max-body, --max-batch, --max-k, --queue).
 *
 * Every loop is bounded in iterations and in time; nothing asserts on timing. Load threads use
 * their own libcurl handles (keep-alive) and never call criterion asserts; the main thread
 * checks what they counted.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
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

static void ops_fini(void)
{
    if (srv.pid > 0)
        th_server_stop(&srv, SIGKILL);
}

TestSuite(ops, .fini = ops_fini);

/* ---- requests through the fixture (recorded for the contract check) ---- */

static th_response req(const char *method, const char *path, const char *body,
                       const char *const *headers)
{
    th_response r;
    int rc = th_request(&srv, method, path, body, headers, &r);
    cr_assert_eq(rc, 0, "%s %s: curl error %d", method, path, rc);
    return r;
}

/* Checks status, problem+json and the problem type; returns 1 when all hold. */
static int problem(const th_response *r, long status, const char *type, const char *what)
{
    char want[96];
    snprintf(want, sizeof want, "urn:embd:problem:%s", type);
    json_t *j = json_loadb(r->body, r->len, 0, NULL);
    const char *t = j ? json_string_value(json_object_get(j, "type")) : NULL;
    int ok = r->status == status && !strcmp(r->content_type, "application/problem+json") && t &&
             !strcmp(t, want) && json_integer_value(json_object_get(j, "status")) == status &&
             r->request_id[0];
    cr_expect(ok, "%s: got %ld %s %.300s; want %ld %s", what, r->status, r->content_type, r->body,
              status, want);
    json_decref(j);
    return ok;
}

static json_t *ok_json(const th_response *r, const char *what)
{
    cr_assert_eq(r->status, 200, "%s: %ld %.300s", what, r->status, r->body);
    cr_assert_str_eq(r->content_type, "application/json", "%s", what);
    json_t *j = json_loadb(r->body, r->len, 0, NULL);
    cr_assert_not_null(j, "%s: %.200s", what, r->body);
    return j;
}

/* ---- raw sockets (headers curl would not show the fixture, requests curl would fix) ----
 * Sending and reading go through the fixture (th_send, th_read); this connect returns -1
 * instead of failing the test, because the shutdown test waits for connections to be refused. */

static int raw_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int raw_status(const char *resp)
{
    int st = 0;
    return sscanf(resp, "HTTP/1.%*d %d", &st) == 1 ? st : 0;
}

/* The value of header name in a raw response, into out; 0 when absent. */
static int raw_header(const char *resp, const char *name, char *out, size_t cap)
{
    const char *end = strstr(resp, "\r\n\r\n");
    size_t nl = strlen(name);
    for (const char *p = strstr(resp, "\r\n"); p && (!end || p < end); p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (!strncasecmp(line, name, nl) && line[nl] == ':') {
            const char *v = line + nl + 1, *eol = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(eol ? eol - v : (long)strlen(v)), v);
            return 1;
        }
    }
    return 0;
}

/* ---- stores ---- */

static void copy_file(const char *from, const char *to)
{
    size_t len;
    void *d = th_read_file(from, &len);
    th_write_file(to, d, len);
    free(d);
}

/* Writes data to path via path.tmp + rename: how a store must be replaced. */
static void replace_by_rename(const char *from, const char *path, size_t truncate_to)
{
    size_t len;
    void *d = th_read_file(from, &len);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    th_write_file(tmp, d, truncate_to && truncate_to < len ? truncate_to : len);
    free(d);
    cr_assert_eq(rename(tmp, path), 0, "rename %s over %s: %s", tmp, path, strerror(errno));
}

/* The demo packed again with --normalize: the same keys, row 0 of norm 1. */
static char *normalized_demo(void)
{
    th_demo_store();
    char *txt = th_path("demo.txt"), *out = th_path("demo-normalized.emb");
    cr_assert_eq(
        th_system("'%s' pack '%s' -o '%s' --normalize -q >/dev/null 2>&1", EMBD_BIN, txt, out), 0,
        "pack --normalize");
    free(txt);
    return out;
}

static void table_state(const char *table, char *crc, size_t crc_cap, char *etag, size_t etag_cap)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/tables/%s", table);
    th_response r = req("GET", path, NULL, NULL);
    json_t *j = ok_json(&r, path);
    snprintf(crc, crc_cap, "%s", json_string_value(json_object_get(j, "checksum")));
    snprintf(etag, etag_cap, "%s", r.etag);
    json_decref(j);
    th_response_free(&r);
}

static double row0_norm(const char *body)
{
    json_t *j = json_loadb(body, strlen(body), 0, NULL);
    json_t *v = json_object_get(j, "vector");
    double s = 0;
    for (size_t i = 0; i < json_array_size(v); i++)
        s += json_number_value(json_array_get(v, i)) * json_number_value(json_array_get(v, i));
    json_decref(j);
    return sqrt(s);
}

/* ---- the load: threads with their own keep-alive handles ---- */

enum { LOAD_THREADS = 4, LOAD_MAX = 3000 };

typedef struct load_rec {
    double t0; /* when the request started */
    int rc;    /* CURLcode */
    long status;
} load_rec;

typedef struct load_thread {
    pthread_t th;
    int index, max_iter;
    double deadline;
    const char *table;
    atomic_int *stop;
    atomic_int done;        /* requests finished */
    int stop_on_conn_error; /* shutdown: stop at the first refused connection */
    const char *old_row0;   /* reload: row 0 as first served */
    char *other_row0[4];    /* distinct row 0 answers that are not old_row0 */
    int n_other;
    int during_reload; /* requests that finished while *reloading was set */
    atomic_int *reloading;
    load_rec *recs;
    int n;
    char first_fail[300];
} load_thread;

static int conn_error(int rc)
{
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR ||
           rc == CURLE_SEND_ERROR;
}

static void *load_main(void *arg)
{
    load_thread *t = arg;
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    char row_url[256], search_url[256], body[64];
    snprintf(row_url, sizeof row_url, "%s/v1/tables/%s/rows/0", srv.base, t->table);
    snprintf(search_url, sizeof search_url, "%s/v1/tables/%s/search", srv.base, t->table);
    struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, th_curl_body);
    for (int i = 0;
         i < t->max_iter && i < LOAD_MAX && !atomic_load(t->stop) && th_now_s() < t->deadline;
         i++) {
        th_buf b = {0};
        int is_row = (i + t->index) % 2 == 0;
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
        if (is_row) {
            curl_easy_setopt(c, CURLOPT_URL, row_url);
            curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
            curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
        } else {
            snprintf(body, sizeof body, "{\"id\":%d,\"k\":5}", (i * 7 + t->index) % 314);
            curl_easy_setopt(c, CURLOPT_URL, search_url);
            curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        }
        load_rec *r = &t->recs[t->n];
        r->t0 = th_now_s();
        r->rc = (int)curl_easy_perform(c);
        r->status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        t->n++;
        if ((r->rc || r->status != 200) && !t->first_fail[0])
            snprintf(t->first_fail, sizeof t->first_fail, "%s: curl %d, status %ld: %.200s",
                     is_row ? "GET rows/0" : body, r->rc, r->status, b.p ? b.p : "");
        if (t->reloading && atomic_load(t->reloading))
            t->during_reload++;
        if (is_row && r->rc == 0 && r->status == 200 && t->old_row0 && b.p &&
            strcmp(b.p, t->old_row0)) {
            int known = 0;
            for (int k = 0; k < t->n_other; k++)
                known |= !strcmp(t->other_row0[k], b.p);
            if (!known && t->n_other < 4)
                t->other_row0[t->n_other++] = strdup(b.p);
        }
        free(b.p);
        atomic_fetch_add(&t->done, 1);
        if (t->stop_on_conn_error && conn_error(r->rc))
            break;
        th_sleep_ms(1);
    }
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return NULL;
}

static void load_start(load_thread *t, int n, const char *table, atomic_int *stop,
                       atomic_int *reloading, const char *old_row0, int stop_on_conn_error)
{
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before the threads */
    for (int i = 0; i < n; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].index = i;
        t[i].max_iter = LOAD_MAX;
        t[i].deadline = th_now_s() + 15;
        t[i].table = table;
        t[i].stop = stop;
        t[i].reloading = reloading;
        t[i].old_row0 = old_row0;
        t[i].stop_on_conn_error = stop_on_conn_error;
        t[i].recs = calloc(LOAD_MAX, sizeof *t[i].recs);
        cr_assert_eq(pthread_create(&t[i].th, NULL, load_main, &t[i]), 0);
    }
}

/* Waits (at most 10 s) until every thread finished at least min requests. */
static void load_warm(load_thread *t, int n, int min)
{
    double t0 = th_now_s();
    for (int i = 0; i < n; i++)
        while (atomic_load(&t[i].done) < min && th_now_s() - t0 < 10)
            th_sleep_ms(5);
    for (int i = 0; i < n; i++)
        cr_assert_geq(atomic_load(&t[i].done), min, "load thread %d is not running", i);
}

/* Waits (at most 5 s) until the threads together finished extra more requests. */
static void load_progress(load_thread *t, int n, int extra)
{
    int start = 0, now = 0;
    for (int i = 0; i < n; i++)
        start += atomic_load(&t[i].done);
    double t0 = th_now_s();
    do {
        th_sleep_ms(5);
        now = 0;
        for (int i = 0; i < n; i++)
            now += atomic_load(&t[i].done);
    } while (now - start < extra && th_now_s() - t0 < 5);
}

static void load_join(load_thread *t, int n)
{
    for (int i = 0; i < n; i++)
        pthread_join(t[i].th, NULL);
}

static void load_free(load_thread *t, int n)
{
    for (int i = 0; i < n; i++) {
        free(t[i].recs);
        for (int k = 0; k < t[i].n_other; k++)
            free(t[i].other_row0[k]);
    }
}

/* ==== reload under load ==== */

Test(ops, reload_under_load_sighup_admin_and_a_truncated_store)
{
    char *path = th_path("t.emb");
    copy_file(th_demo_store(), path);
    char *normalized = normalized_demo();
    char arg[600];
    snprintf(arg, sizeof arg, "t=%s", path);
    const char *args[] = {"--threads", "2", arg, NULL};
    th_server_start(&srv, args);

    char crc1[16], etag1[80], crc2[16], etag2[80], crc[16], etag[80];
    table_state("t", crc1, sizeof crc1, etag1, sizeof etag1);
    th_response r = req("GET", "/v1/tables/t/rows/0", NULL, NULL);
    cr_assert_eq(r.status, 200);
    char *old_row0 = strdup(r.body);
    th_response_free(&r);
    cr_assert(fabs(row0_norm(old_row0) - 1) > 0.05, "the demo's row 0 is not of norm 1");

    atomic_int stop = 0, reloading = 0;
    load_thread lt[LOAD_THREADS];
    load_start(lt, LOAD_THREADS, "t", &stop, &reloading, old_row0, 0);
    load_warm(lt, LOAD_THREADS, 20);
    atomic_store(&reloading, 1);

    /* 1. rename a different store over the file, SIGHUP, wait until answers switch. */
    replace_by_rename(normalized, path, 0);
    cr_assert_eq(kill(srv.pid, SIGHUP), 0);
    char *new_row0 = NULL;
    double t0 = th_now_s();
    for (int i = 0; i < 500 && th_now_s() - t0 < 10; i++) {
        table_state("t", crc, sizeof crc, etag, sizeof etag);
        if (strcmp(crc, crc1)) {
            r = req("GET", "/v1/tables/t/rows/0", NULL, NULL);
            if (r.status == 200 && strcmp(r.body, old_row0)) {
                new_row0 = strdup(r.body);
                th_response_free(&r);
                break;
            }
            th_response_free(&r);
        }
        th_sleep_ms(20);
    }
    cr_assert_not_null(new_row0, "after SIGHUP the table never switched to the new store");
    table_state("t", crc2, sizeof crc2, etag2, sizeof etag2);
    cr_expect_str_neq(crc2, crc1, "the checksum changed");
    cr_expect_str_neq(etag2, etag1, "the ETag changed");
    cr_expect(!strncmp(etag2 + 1, crc2, 8), "the ETag %s starts with the new checksum %s", etag2,
              crc2);
    cr_expect(fabs(row0_norm(new_row0) - 1) < 1e-2, "row 0 is the normalized one (norm %g)",
              row0_norm(new_row0));
    load_progress(lt, LOAD_THREADS, 100);

    /* 2. POST /v1/admin/reload re-opens the (same) file. */
    r = req("POST", "/v1/admin/reload", NULL, NULL);
    json_t *j = ok_json(&r, "POST /v1/admin/reload");
    char *s = json_dumps(j, JSON_COMPACT);
    cr_expect_str_eq(s, "{\"reloaded\":[\"t\"],\"failed\":[]}");
    free(s);
    json_decref(j);
    th_response_free(&r);
    table_state("t", crc, sizeof crc, etag, sizeof etag);
    cr_expect_str_eq(crc, crc2, "the same file: the same checksum");
    cr_expect_str_eq(etag, etag2, "the same file: the same ETag");
    load_progress(lt, LOAD_THREADS, 100);

    /* 3. a truncated store is refused and the old one keeps serving. */
    size_t len;
    free(th_read_file(normalized, &len));
    replace_by_rename(normalized, path, len / 2);
    r = req("POST", "/v1/admin/reload", NULL, NULL);
    j = ok_json(&r, "POST /v1/admin/reload (truncated)");
    json_t *reloaded = json_object_get(j, "reloaded"), *failed = json_object_get(j, "failed");
    cr_expect(json_is_array(reloaded) && json_array_size(reloaded) == 0, "nothing reloaded: %s",
              r.body);
    cr_assert(json_is_array(failed) && json_array_size(failed) == 1, "one failure: %s", r.body);
    json_t *f0 = json_array_get(failed, 0);
    cr_expect_str_eq(json_string_value(json_object_get(f0, "table")), "t");
    const char *err = json_string_value(json_object_get(f0, "error"));
    cr_expect(err && *err, "the failure says why: %s", r.body);
    json_decref(j);
    th_response_free(&r);
    load_progress(lt, LOAD_THREADS, 100);
    /* The same through SIGHUP: wait (at most 5 s) until the log shows a second refusal. */
    int before = th_server_log_count(&srv, "reload failed");
    cr_expect_geq(before, 1, "the refused reload is logged");
    cr_assert_eq(kill(srv.pid, SIGHUP), 0);
    for (int i = 0; i < 250 && th_server_log_count(&srv, "reload failed") <= before; i++)
        th_sleep_ms(20);
    cr_expect_gt(th_server_log_count(&srv, "reload failed"), before,
                 "SIGHUP with a truncated store is refused");
    table_state("t", crc, sizeof crc, etag, sizeof etag);
    cr_expect_str_eq(crc, crc2, "still the last good store");
    r = req("GET", "/v1/tables/t/rows/0", NULL, NULL);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, new_row0, "row 0 still comes from the last good store");
    th_response_free(&r);
    r = req("POST", "/v1/tables/t/search", "{\"key\":\"apple\",\"k\":3}", NULL);
    cr_expect_eq(r.status, 200, "searches still work: %s", r.body);
    th_response_free(&r);

    /* Let the load run on the settled table a little, then stop it. */
    load_progress(lt, LOAD_THREADS, 100);
    atomic_store(&reloading, 0);
    load_progress(lt, LOAD_THREADS, 100);
    atomic_store(&stop, 1);
    load_join(lt, LOAD_THREADS);

    int total = 0, failures = 0, during = 0;
    for (int i = 0; i < LOAD_THREADS; i++) {
        total += lt[i].n;
        during += lt[i].during_reload;
        for (int k = 0; k < lt[i].n; k++)
            if (lt[i].recs[k].rc || lt[i].recs[k].status != 200)
                failures++;
        if (lt[i].first_fail[0])
            cr_log_error("load thread %d: %s", i, lt[i].first_fail);
        for (int k = 0; k < lt[i].n_other; k++)
            cr_expect_str_eq(lt[i].other_row0[k], new_row0,
                             "every row 0 answer is the old or the new row, never another");
    }
    cr_expect_eq(failures, 0, "%d of %d requests failed during the reloads", failures, total);
    cr_expect_gt(during, 0, "the load overlapped the reloads");
    cr_log_info("reload under load: %d requests, %d during the reloads", total, during);

    int rc = th_server_stop(&srv, SIGTERM);
    cr_expect_eq(rc, 0, "exit status %d", rc);
    load_free(lt, LOAD_THREADS);
    free(old_row0);
    free(new_row0);
    free(normalized);
    free(path);
}

/* ==== shutdown under load ==== */

Test(ops, sigterm_drains_in_flight_requests_readyz_503_during_delay)
{
    char arg[600];
    snprintf(arg, sizeof arg, "t=%s", th_demo_store());
    const char *args[] = {"--threads", "2", "--shutdown-delay", "1", arg, NULL};
    th_server_start(&srv, args);

    atomic_int stop = 0;
    load_thread lt[LOAD_THREADS];
    load_start(lt, LOAD_THREADS, "t", &stop, NULL, NULL, 1);
    load_warm(lt, LOAD_THREADS, 20);

    /* A request in flight across the whole shutdown: headers and half of its body now, the
     * rest after the listener has closed. */
    const char *body = "{\"key\":\"apple\",\"k\":4,\"exact\":true}";
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "POST /v1/tables/t/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%.10s",
                      strlen(body), body);
    int slow = raw_connect();
    cr_assert_geq(slow, 0);
    th_send(slow, head, (size_t)hl, 5000);
    th_sleep_ms(50);

    double t_sig = th_now_s();
    cr_assert_eq(kill(srv.pid, SIGTERM), 0);

    /* During --shutdown-delay: /readyz 503 draining with Retry-After, /healthz 200. */
    int saw_503 = 0, gone = 0;
    for (int i = 0; i < 500 && th_now_s() - t_sig < 5 && !saw_503 && !gone; i++) {
        th_response r;
        if (th_request(&srv, "GET", "/readyz", NULL, NULL, &r) != 0) {
            gone = 1; /* the listener closed already */
        } else {
            if (r.status == 503) {
                saw_503 = 1;
                problem(&r, 503, "draining", "GET /readyz while draining");
                cr_expect(r.retry_after[0] &&
                              strspn(r.retry_after, "0123456789") == strlen(r.retry_after),
                          "Retry-After '%s'", r.retry_after);
            } else {
                cr_expect_eq(r.status, 200, "/readyz before the drain shows: %ld", r.status);
            }
            th_response_free(&r);
        }
        th_sleep_ms(10);
    }
    cr_expect(saw_503, "/readyz never answered 503 during --shutdown-delay");
    if (saw_503) {
        th_response r;
        if (th_request(&srv, "GET", "/healthz", NULL, NULL, &r) == 0) { /* unless it closed */
            cr_expect_eq(r.status, 200, "/healthz stays 200 while draining");
            th_response_free(&r);
        }
    }

    /* Wait (at most 5 s) for the listener to close: new connections are refused. */
    int refused = 0;
    for (int i = 0; i < 250 && !refused; i++) {
        int fd = raw_connect();
        if (fd < 0)
            refused = 1;
        else
            close(fd);
        if (!refused)
            th_sleep_ms(20);
    }
    cr_expect(refused, "the listener closed after --shutdown-delay");

    /* The in-flight request completes. */
    th_send(slow, body + 10, strlen(body) - 10, 5000);
    th_raw_result got;
    th_read(slow, 10000, 0, &got);
    char *resp = got.data;
    close(slow);
    cr_expect_eq(raw_status(resp), 200, "the request in flight at SIGTERM: %.300s", resp);
    cr_expect(strstr(resp, "\"results\""), "%.300s", resp);
    free(resp);

    int rc = th_server_stop(&srv, 0); /* signal 0: only wait for the exit */
    cr_expect_eq(rc, 0, "exit status after SIGTERM: %d", rc);
    atomic_store(&stop, 1);
    load_join(lt, LOAD_THREADS);

    int before = 0, after_ok = 0, after_refused = 0;
    for (int i = 0; i < LOAD_THREADS; i++)
        for (int k = 0; k < lt[i].n; k++) {
            const load_rec *r = &lt[i].recs[k];
            if (r->t0 < t_sig) {
                before++;
                cr_expect(r->rc == 0 && r->status == 200,
                          "thread %d request %d started before SIGTERM: curl %d status %ld", i, k,
                          r->rc, r->status);
            } else if (r->rc == 0) {
                after_ok++;
                cr_expect(r->status == 200 || r->status == 503,
                          "thread %d request %d after SIGTERM: status %ld", i, k, r->status);
            } else {
                after_refused++;
                cr_expect(conn_error(r->rc), "thread %d request %d after SIGTERM: curl error %d", i,
                          k, r->rc);
            }
        }
    cr_log_info("shutdown under load: %d requests before SIGTERM, %d answered after, %d refused",
                before, after_ok, after_refused);
    load_free(lt, LOAD_THREADS);
}

/* ==== API key ==== */

#define API_KEY "0123456789abcdef-secret-key"

static void start_with_key(void)
{
    char *keyfile = th_path("api.key");
    th_write_file(keyfile, API_KEY "\n", strlen(API_KEY) + 1);
    char a[600], s[600];
    snprintf(a, sizeof a, "%s", keyfile);
    snprintf(s, sizeof s, "demo=%s", th_demo_store());
    const char *args[] = {"--api-key-file", a, s, NULL};
    th_server_start(&srv, args);
    free(keyfile);
}

Test(ops, api_key_guards_v1_only)
{
    start_with_key();
    const char *good[] = {"Authorization: Bearer " API_KEY, NULL};
    const char *wrong[] = {"Authorization: Bearer 0123456789abcdef-secret-kez", NULL};
    const char *prefix[] = {"Authorization: Bearer 0123456789abcdef", NULL};
    const char *longer[] = {"Authorization: Bearer " API_KEY "x", NULL};
    const char *basic[] = {"Authorization: Basic " API_KEY, NULL};
    const char *bare[] = {"Authorization: " API_KEY, NULL};
    const char *const *bad[] = {NULL, wrong, prefix, longer, basic, bare};
    const struct {
        const char *method, *path, *body;
    } v1[] = {{"GET", "/v1/tables", NULL},
              {"GET", "/v1/tables/demo", NULL},
              {"GET", "/v1/tables/demo/rows/0", NULL},
              {"GET", "/v1/tables/demo/keys/apple", NULL},
              {"POST", "/v1/tables/demo/gather", "{\"ids\":[0]}"},
              {"POST", "/v1/tables/demo/search", "{\"key\":\"apple\",\"k\":2}"},
              {"POST", "/v1/admin/reload", NULL}};
    for (size_t i = 0; i < sizeof v1 / sizeof v1[0]; i++) {
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            char what[160];
            snprintf(what, sizeof what, "%s %s with credentials #%zu", v1[i].method, v1[i].path, b);
            th_response r = req(v1[i].method, v1[i].path, v1[i].body, bad[b]);
            problem(&r, 401, "unauthorized", what);
            th_response_free(&r);
        }
        th_response r = req(v1[i].method, v1[i].path, v1[i].body, good);
        cr_expect_eq(r.status, 200, "%s %s with the key: %ld %.200s", v1[i].method, v1[i].path,
                     r.status, r.body);
        th_response_free(&r);
    }
    /* Health, readiness, metrics and the contract stay open. */
    const char *open_paths[] = {"/healthz", "/readyz", "/metrics", "/openapi.yaml"};
    for (size_t i = 0; i < 4; i++) {
        th_response r = req("GET", open_paths[i], NULL, NULL);
        cr_expect_eq(r.status, 200, "%s without a key", open_paths[i]);
        th_response_free(&r);
        r = req("GET", open_paths[i], NULL, wrong);
        cr_expect_eq(r.status, 200, "%s with a wrong key", open_paths[i]);
        th_response_free(&r);
    }
    /* Precedence: 404 path and 405 come before 401; 401 before an unknown table. */
    th_response r = req("GET", "/v2/tables", NULL, NULL);
    problem(&r, 404, "route-not-found", "GET /v2/tables without a key");
    th_response_free(&r);
    r = req("GET", "/v1/tables/demo/search", NULL, NULL);
    problem(&r, 405, "method-not-allowed", "GET search without a key");
    th_response_free(&r);
    r = req("GET", "/v1/tables/nope", NULL, NULL);
    problem(&r, 401, "unauthorized", "unknown table without a key");
    th_response_free(&r);
    r = req("GET", "/v1/tables/nope", NULL, good);
    problem(&r, 404, "table-not-found", "unknown table with the key");
    th_response_free(&r);
    r = req("POST", "/v1/tables/demo/search", "{", NULL);
    problem(&r, 401, "unauthorized", "a malformed body without a key");
    th_response_free(&r);
    int rc = th_server_stop(&srv, SIGTERM);
    cr_expect_eq(rc, 0);
}

Test(ops, unauthorized_carries_www_authenticate_bearer_realm)
{
    /* "a missing or wrong key is 401 with WWW-Authenticate: Bearer realm="embd"" */
    start_with_key();
    const char *reqs[] = {"GET /v1/tables HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                          "GET /v1/tables HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                          "nope-nope-nope-nope\r\nConnection: close\r\n\r\n"};
    for (int i = 0; i < 2; i++) {
        int fd = raw_connect();
        cr_assert_geq(fd, 0);
        th_send(fd, reqs[i], strlen(reqs[i]), 5000);
        th_raw_result got;
        th_read(fd, 5000, 0, &got);
        char *resp = got.data;
        close(fd);
        cr_expect_eq(raw_status(resp), 401, "%.200s", resp);
        char www[128] = "";
        cr_expect(raw_header(resp, "WWW-Authenticate", www, sizeof www), "WWW-Authenticate");
        cr_expect_str_eq(www, "Bearer realm=\"embd\"", "WWW-Authenticate: %s", www);
        free(resp);
    }
    th_server_stop(&srv, SIGTERM);
}

/* ==== limits ==== */

static void start_limited(void)
{
    char s[600];
    snprintf(s, sizeof s, "demo=%s", th_demo_store());
    const char *args[] = {"--max-body", "1024", "--max-batch", "8", "--max-k", "20", s, NULL};
    th_server_start(&srv, args);
}

/* A search body of exactly len bytes (padded with spaces). */
static char *padded(const char *json, size_t len)
{
    char *b = malloc(len + 1);
    size_t n = strlen(json);
    cr_assert_leq(n, len);
    memcpy(b, json, n);
    memset(b + n, ' ', len - n);
    b[len] = 0;
    return b;
}

Test(ops, max_body_batch_and_k)
{
    start_limited();
    char *b = padded("{\"key\":\"apple\",\"k\":2}", 1024);
    th_response r = req("POST", "/v1/tables/demo/search", b, NULL);
    cr_expect_eq(r.status, 200, "a body of exactly --max-body: %ld %s", r.status, r.body);
    th_response_free(&r);
    free(b);
    b = padded("{\"key\":\"apple\",\"k\":2}", 1025);
    r = req("POST", "/v1/tables/demo/search", b, NULL);
    problem(&r, 413, "body-too-large", "1025 bytes");
    th_response_free(&r);
    free(b);
    b = padded("{\"ids\":[0]}", 200000);
    r = req("POST", "/v1/tables/demo/gather", b, NULL);
    problem(&r, 413, "body-too-large", "200000 bytes");
    th_response_free(&r);
    free(b);

    /* Refused from Content-Length alone, before the body is sent. */
    const char *head = "POST /v1/tables/demo/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n";
    int fd = raw_connect();
    cr_assert_geq(fd, 0);
    th_send(fd, head, strlen(head), 5000);
    th_raw_result got;
    th_read(fd, 5000, 0, &got);
    char *resp = got.data;
    close(fd);
    cr_expect_eq(raw_status(resp), 413, "413 before the body: %.300s", resp);
    cr_expect(strstr(resp, "urn:embd:problem:body-too-large"), "%.300s", resp);
    free(resp);

    /* --max-batch 8 and --max-k 20. */
    r = req("POST", "/v1/tables/demo/gather", "{\"ids\":[0,1,2,3,4,5,6,7]}", NULL);
    cr_expect_eq(r.status, 200);
    th_response_free(&r);
    r = req("POST", "/v1/tables/demo/gather", "{\"ids\":[0,1,2,3,4,5,6,7,8]}", NULL);
    problem(&r, 422, "batch-too-large", "9 ids");
    th_response_free(&r);
    r = req("POST", "/v1/tables/demo/gather",
            "{\"keys\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"]}", NULL);
    problem(&r, 422, "batch-too-large", "9 keys");
    th_response_free(&r);
    r = req("POST", "/v1/tables/demo/search", "{\"ids\":[0,1,2,3,4,5,6,7,8]}", NULL);
    problem(&r, 422, "batch-too-large", "9 ids in a search");
    th_response_free(&r);
    r = req("POST", "/v1/tables/demo/search", "{\"vectors\":[[1],[1],[1],[1],[1],[1],[1],[1],[1]]}",
            NULL);
    problem(&r, 422, "batch-too-large", "9 vectors");
    th_response_free(&r);
    r = req("POST", "/v1/tables/demo/search", "{\"key\":\"apple\",\"k\":20}", NULL);
    cr_expect_eq(r.status, 200, "k = --max-k");
    th_response_free(&r);
    r = req("POST", "/v1/tables/demo/search", "{\"key\":\"apple\",\"k\":21}", NULL);
    problem(&r, 422, "invalid-value", "k over --max-k");
    th_response_free(&r);
    int rc = th_server_stop(&srv, SIGTERM);
    cr_expect_eq(rc, 0);
}

Test(ops, chunked_body_over_max_body_is_413)
{
    /* PayloadTooLarge: "larger than --max-body bytes (from Content-Length, before reading, or
     * while reading a chunked body)". */
    start_limited();
    char req_buf[8192];
    int n =
        sprintf(req_buf, "POST /v1/tables/demo/gather HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    n += sprintf(req_buf + n, "a\r\n{\"ids\":[0\r\n");
    for (int i = 0; i < 20; i++) {
        n += sprintf(req_buf + n, "64\r\n");
        for (int k = 0; k < 50; k++)
            n += sprintf(req_buf + n, ",0");
        n += sprintf(req_buf + n, "\r\n");
    }
    n += sprintf(req_buf + n, "2\r\n]}\r\n0\r\n\r\n");
    int fd = raw_connect();
    cr_assert_geq(fd, 0);
    th_send(fd, req_buf, (size_t)n, 5000);
    th_raw_result got;
    th_read(fd, 5000, 0, &got);
    char *resp = got.data;
    close(fd);
    cr_expect_eq(raw_status(resp), 413, "a 2 KB chunked body over --max-body 1024: got '%.300s'%s",
                 resp, got.closed ? " (connection closed)" : "");
    cr_expect(strstr(resp, "urn:embd:problem:body-too-large"), "%.300s", resp);
    free(resp);
    th_server_stop(&srv, SIGTERM);
}

Test(ops, limits_precedence_table_and_media_type_before_413)
{
    /* "... 404 unknown table; 415; 413; 400 body syntax ..." */
    start_limited();
    char *b = padded("{\"key\":\"apple\"}", 2000);
    th_response r = req("POST", "/v1/tables/nope/search", b, NULL);
    problem(&r, 404, "table-not-found", "unknown table with a body over --max-body");
    th_response_free(&r);
    const char *plain[] = {"Content-Type: text/plain", NULL};
    r = req("POST", "/v1/tables/demo/search", b, plain);
    problem(&r, 415, "unsupported-media-type", "text/plain with a body over --max-body");
    th_response_free(&r);
    free(b);
    th_server_stop(&srv, SIGTERM);
}

/* ==== 503: the worker queue full ==== */

typedef struct burst_resp {
    th_buf body;
    char retry_after[32], request_id[160], etag[80];
    long status;
    char ctype[128];
    int rc;
} burst_resp;

static size_t burst_header(char *data, size_t size, size_t n, void *ud)
{
    burst_resp *b = ud;
    size_t len = size * n;
    const char *names[] = {"Retry-After:", "X-Request-Id:", "ETag:"};
    char *dst[] = {b->retry_after, b->request_id, b->etag};
    size_t cap[] = {sizeof b->retry_after, sizeof b->request_id, sizeof b->etag};
    for (int i = 0; i < 3; i++) {
        size_t nl = strlen(names[i]);
        if (len > nl && !strncasecmp(data, names[i], nl)) {
            const char *v = data + nl;
            size_t vl = len - nl;
            while (vl && *v == ' ')
                v++, vl--;
            while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
                vl--;
            snprintf(dst[i], cap[i], "%.*s", (int)vl, v);
        }
    }
    return len;
}

/* Appends one exchange to $EMBD_EXCHANGES (one write(2); the body is JSON text here). */
static void record(const char *path, const burst_resp *b)
{
    const char *file = getenv("EMBD_EXCHANGES");
    if (!file || !*file)
        return;
    char *line = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&line, &len);
    if (!f)
        return;
    fprintf(
        f,
        "{\"method\":\"POST\",\"path\":\"%s\",\"status\":%ld,\"content_type\":\"%s\",\"body\":\"",
        path, b->status, b->ctype);
    for (size_t i = 0; i < b->body.len; i++) {
        unsigned char c = (unsigned char)b->body.p[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fprintf(f, "\",\"headers\":{\"X-Request-Id\":\"%s\"", b->request_id);
    if (b->retry_after[0])
        fprintf(f, ",\"Retry-After\":\"%s\"", b->retry_after);
    if (b->etag[0]) {
        fprintf(f, ",\"ETag\":\"");
        for (const char *e = b->etag; *e; e++) {
            if (*e == '"' || *e == '\\')
                fputc('\\', f);
            fputc(*e, f);
        }
        fputc('"', f);
    }
    fprintf(f, "},\"note\":\"test_ops.c burst\"}\n");
    fclose(f);
    int fd = open(file, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, line, len);
        (void)w;
        close(fd);
    }
    free(line);
}

/* n concurrent searches with curl multi; fills out[n]. Bounded by 60 s. */
static void burst(int n, burst_resp *out)
{
    CURLM *m = curl_multi_init();
    CURL **h = calloc((size_t)n, sizeof *h);
    char(*bodies)[96] = calloc((size_t)n, sizeof *bodies);
    struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
    hl = curl_slist_append(hl, "Expect:");
    char url[128];
    snprintf(url, sizeof url, "%s/v1/tables/big/search", srv.base);
    for (int i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        h[i] = curl_easy_init();
        snprintf(bodies[i], sizeof bodies[i], "{\"id\":%d,\"k\":100,\"exact\":true}", i * 997);
        curl_easy_setopt(h[i], CURLOPT_URL, url);
        curl_easy_setopt(h[i], CURLOPT_POSTFIELDS, bodies[i]);
        curl_easy_setopt(h[i], CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(h[i], CURLOPT_WRITEFUNCTION, th_curl_body);
        curl_easy_setopt(h[i], CURLOPT_WRITEDATA, &out[i].body);
        curl_easy_setopt(h[i], CURLOPT_HEADERFUNCTION, burst_header);
        curl_easy_setopt(h[i], CURLOPT_HEADERDATA, &out[i]);
        curl_easy_setopt(h[i], CURLOPT_TIMEOUT, 60L);
        curl_easy_setopt(h[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h[i], CURLOPT_PRIVATE, &out[i]);
        curl_multi_add_handle(m, h[i]);
    }
    int running = 1;
    double t0 = th_now_s();
    while (running && th_now_s() - t0 < 60) {
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)))
        if (msg->msg == CURLMSG_DONE) {
            burst_resp *b;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&b);
            b->rc = msg->data.result;
        }
    for (int i = 0; i < n; i++) {
        curl_easy_getinfo(h[i], CURLINFO_RESPONSE_CODE, &out[i].status);
        char *ct = NULL;
        curl_easy_getinfo(h[i], CURLINFO_CONTENT_TYPE, &ct);
        snprintf(out[i].ctype, sizeof out[i].ctype, "%s", ct ? ct : "");
        if (out[i].status)
            record("/v1/tables/big/search", &out[i]);
        curl_multi_remove_handle(m, h[i]);
        curl_easy_cleanup(h[i]);
    }
    curl_slist_free_all(hl);
    curl_multi_cleanup(m);
    free(h);
    free(bodies);
}

/* Generates and packs 200000 x 256 clustered rows (an exact search over them takes tens of ms)
 * in the test's directory and writes the STORE argument "big=PATH" into arg. */
static void make_big_store(char *arg, size_t cap)
{
    char *npy = th_path("big.npy"), *store = th_path("big.emb");
    cr_assert_eq(
        th_system("'%s' gen --kind clusters --rows 200000 --dim 256 --dtype f16 -o '%s' -q "
                  ">/dev/null 2>&1 && '%s' pack '%s' -o '%s' -e 0 -q >/dev/null 2>&1",
                  EMBD_BIN, npy, EMBD_BIN, npy, store),
        0, "generating and packing 200000 x 256");
    unlink(npy);
    snprintf(arg, cap, "big=%s", store);
    free(npy);
    free(store);
}

Test(ops, queue_full_is_503_with_retry_after_then_recovers)
{
    char arg[600];
    make_big_store(arg, sizeof arg);
    const char *args[] = {"--threads", "1", "--queue", "1", arg, NULL};
    th_server_start(&srv, args);
    th_response r =
        req("POST", "/v1/tables/big/search", "{\"id\":1,\"k\":10,\"exact\":true}", NULL);
    cr_assert_eq(r.status, 200, "warm-up: %ld %.200s", r.status, r.body);
    th_response_free(&r);

    enum { N = 32 };
    burst_resp out[N];
    int ok = 0, busy = 0, other = 0;
    for (int round = 0; round < 3 && !busy; round++) {
        burst(N, out);
        for (int i = 0; i < N; i++) {
            if (out[i].rc == 0 && out[i].status == 200) {
                ok++;
                cr_expect(strstr(out[i].body.p ? out[i].body.p : "", "\"results\""));
            } else if (out[i].rc == 0 && out[i].status == 503) {
                busy++;
                cr_expect_str_eq(out[i].ctype, "application/problem+json");
                cr_expect(out[i].body.p &&
                              strstr(out[i].body.p, "\"type\":\"urn:embd:problem:overloaded\""),
                          "503 type: %s", out[i].body.p);
                cr_expect(out[i].retry_after[0] && strspn(out[i].retry_after, "0123456789") ==
                                                       strlen(out[i].retry_after),
                          "503 Retry-After '%s'", out[i].retry_after);
                cr_expect(out[i].request_id[0]);
            } else {
                other++;
                cr_expect(0, "burst request %d: curl %d status %ld %.200s", i, out[i].rc,
                          out[i].status, out[i].body.p ? out[i].body.p : "");
            }
            free(out[i].body.p);
        }
    }
    cr_expect_gt(busy, 0, "a burst of %d exact searches on --threads 1 --queue 1 got no 503", N);
    cr_expect_gt(ok, 0, "and some were served");
    cr_expect_eq(other, 0);
    cr_log_info("burst: %d served, %d overloaded", ok, busy);

    /* The server recovers: a single request is answered (bounded retries). */
    long st = 0;
    for (int i = 0; i < 50 && st != 200; i++) {
        r = req("POST", "/v1/tables/big/search", "{\"id\":2,\"k\":5}", NULL);
        st = r.status;
        th_response_free(&r);
        if (st != 200)
            th_sleep_ms(100);
    }
    cr_expect_eq(st, 200, "after the burst the server answers 200");
    r = req("GET", "/healthz", NULL, NULL);
    cr_expect_eq(r.status, 200);
    th_response_free(&r);
    int rc = th_server_stop(&srv, SIGTERM);
    cr_expect_eq(rc, 0);
}

/* ==== clients that leave while a worker has their request ==== */

/* The number after `name` on its own line of a scrape (the first such sample), or -1. */
static long scrape_value(const char *name)
{
    th_response r = req("GET", "/metrics", NULL, NULL);
    long v = -1;
    const char *p = r.body ? strstr(r.body, name) : NULL;
    if (r.status == 200 && p)
        v = strtol(p + strlen(name), NULL, 10);
    th_response_free(&r);
    return v;
}

/* 24 clients each send a batch of 64 exact searches over 200000 x 256 rows (tens of ms each on
 * the one worker) and close their connections at once. libmicrohttpd does not watch a suspended
 * connection, so before the server looked for the end of each stream every one of those batches
 * ran, for nobody, while new clients waited; now the work of the clients that left is dropped
 * and far fewer than 24 run. Waits (at most 60 s) for the count of searches run to settle. */
Test(ops, work_of_clients_that_left_is_dropped)
{
    char arg[600];
    make_big_store(arg, sizeof arg);
    const char *args[] = {"--threads", "1", "--queue", "64", "--max-batch", "64", arg, NULL};
    th_server_start(&srv, args);

    /* One batch body: 64 queries of 256 values. */
    size_t cap = 64 * 256 * 12 + 256, n = 0;
    char *body = malloc(cap);
    cr_assert_not_null(body);
    n += (size_t)snprintf(body + n, cap - n, "{\"k\":10,\"exact\":true,\"vectors\":[");
    uint64_t seed = 42;
    for (int q = 0; q < 64; q++) {
        n += (size_t)snprintf(body + n, cap - n, "%s[", q ? "," : "");
        for (int j = 0; j < 256; j++)
            n += (size_t)snprintf(body + n, cap - n, "%s%.4f", j ? "," : "", th_rand_normal(&seed));
        n += (size_t)snprintf(body + n, cap - n, "]");
    }
    n += (size_t)snprintf(body + n, cap - n, "]}");
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "POST /v1/tables/big/search HTTP/1.1\r\nHost: x\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      n);
    long before = scrape_value("\nembd_searches_total{table=\"big\",mode=\"exact\"} ");
    cr_assert_eq(before, 0, "no search has run yet");

    enum { N = 24 };
    int fd[N];
    for (int i = 0; i < N; i++) {
        fd[i] = th_connect(&srv);
        cr_assert_geq(fd[i], 0);
        cr_assert_eq(th_send(fd[i], head, (size_t)hl, 5000), 0);
        cr_assert_eq(th_send(fd[i], body, n, 5000), 0);
    }
    th_sleep_ms(50); /* the requests are read and queued */
    for (int i = 0; i < N; i++)
        close(fd[i]);
    free(body);

    long ran = -1, last = -2;
    double t0 = th_now_s();
    while (th_now_s() - t0 < 60 && ran != last) {
        last = ran;
        th_sleep_ms(1000);
        ran = scrape_value("\nembd_searches_total{table=\"big\",mode=\"exact\"} ");
    }
    cr_expect_eq(ran, last, "the count of searches run settled within 60 s");
    cr_log_info("%ld of %d batches from clients that left ran", ran, N);
    cr_expect_lt(ran, N, "the work of clients that had left was dropped (%ld of %d ran)", ran, N);
    th_response r = req("POST", "/v1/tables/big/search", "{\"id\":2,\"k\":5}", NULL);
    cr_expect_eq(r.status, 200, "the server still answers: %ld", r.status);
    th_response_free(&r);
    cr_expect_eq(th_server_stop(&srv, SIGTERM), 0);
}

/* ==== several loops ==== */

/* --loops 2: two daemons on SO_REUSEPORT listeners share the tables and the worker pool; a
 * bounded concurrent load (new connections spread over both listeners) is served without a
 * failure, the metrics count every request, and SIGTERM drains both loops and exits 0. */
Test(ops, two_loops_share_tables_and_workers)
{
    char store[600];
    snprintf(store, sizeof store, "t=%s", th_demo_store());
    const char *args[] = {"--loops", "2", "--threads", "2", store, NULL};
    th_server_start(&srv, args);
    enum { N = 4 };
    load_thread t[N];
    atomic_int stop;
    atomic_init(&stop, 0);
    load_start(t, N, "t", &stop, NULL, NULL, 0);
    for (int i = 0; i < N; i++)
        t[i].max_iter = 100;
    load_join(t, N);
    int total = 0;
    for (int i = 0; i < N; i++) {
        cr_expect_str_empty(t[i].first_fail, "thread %d: %s", i, t[i].first_fail);
        total += t[i].n;
    }
    cr_expect_gt(total, 0);
    th_response r = req("GET", "/metrics", NULL, NULL);
    cr_assert_eq(r.status, 200);
    long served = 0;
    for (const char *p = r.body; (p = strstr(p, "\nembd_http_requests_total{")); p++) {
        const char *end = strstr(p, "} "), *eol = strchr(p + 1, '\n');
        if (!end || !eol || end > eol)
            continue;
        char labels[512];
        snprintf(labels, sizeof labels, "%.*s", (int)(end - p), p);
        if (strstr(labels, "status=\"200\"") &&
            (strstr(labels, "/rows/{id}") || strstr(labels, "/search")))
            served += atol(end + 2);
    }
    cr_expect_geq(served, total, "metrics count %ld answered rows/search, the load sent %d", served,
                  total);
    th_response_free(&r);
    load_free(t, N);
    cr_expect_eq(th_server_stop(&srv, SIGTERM), 0, "both loops drain and the exit code is 0");
}

/* ==== one query split across the workers ==== */

/* On a table large enough to split (100k x 128 f16: 25 MB per exact scan), a server with two
 * workers splits each query into row ranges and merges them; its answers must equal those of a
 * one-worker server, which scans in one piece, for every metric, exact and two-stage. */
Test(ops, split_query_answers_equal_unsplit)
{
    char *npy = th_path("split.npy"), *emb = th_path("split.emb");
    cr_assert_eq(th_system("'%s' gen --kind clusters --rows 100000 --dim 128 --clusters 200 -o "
                           "'%s' -q && '%s' pack '%s' -o '%s' --eval-queries 0 -q >/dev/null",
                           EMBD_BIN, npy, EMBD_BIN, npy, emb),
                 0);
    char store[600];
    snprintf(store, sizeof store, "s=%s", emb);
    th_server one, two;
    const char *a1[] = {"--threads", "1", store, NULL};
    const char *a2[] = {"--threads", "2", store, NULL};
    th_server_start(&one, a1);
    th_server_start(&two, a2);
    static const char *bodies[] = {
        "{\"id\":7,\"k\":50,\"exact\":true}",
        "{\"id\":99,\"k\":10,\"exact\":true,\"metric\":\"l2\"}",
        "{\"id\":12345,\"k\":1000,\"exact\":true,\"metric\":\"dot\",\"exclude_ids\":[1,2,3]}",
        "{\"id\":5,\"k\":10,\"oversample\":100}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        th_response r1, r2;
        cr_assert_eq(th_request(&one, "POST", "/v1/tables/s/search", bodies[i], NULL, &r1), 0);
        cr_assert_eq(th_request(&two, "POST", "/v1/tables/s/search", bodies[i], NULL, &r2), 0);
        cr_assert_eq(r1.status, 200, "%s", r1.body);
        cr_assert_eq(r2.status, 200, "%s", r2.body);
        cr_expect_str_eq(r2.body, r1.body, "split and unsplit answers differ for %s", bodies[i]);
        th_response_free(&r1);
        th_response_free(&r2);
    }
    cr_expect_eq(th_server_stop(&one, SIGTERM), 0);
    cr_expect_eq(th_server_stop(&two, SIGTERM), 0);
    free(npy);
    free(emb);
}

/* ==== faults: the store file changes under the server ==== */

/* Starts the server on a private copy of the demo store named "f" at *path (th_tmpdir). */
static void start_on_copy(const char *name, char **path)
{
    *path = th_path(name);
    copy_file(th_demo_store(), *path);
    char arg[600];
    snprintf(arg, sizeof arg, "f=%s", *path);
    const char *args[] = {arg, NULL};
    th_server_start(&srv, args);
}

static char *get_body(const char *path)
{
    th_response r = req("GET", path, NULL, NULL);
    cr_assert_eq(r.status, 200, "GET %s: %ld %.200s", path, r.status, r.body);
    char *b = strdup(r.body);
    th_response_free(&r);
    return b;
}

/* The mapping outlives the name: a store renamed or deleted while served keeps answering from
 * the mapping, byte for byte; a reload that cannot open the path keeps the old table. */
Test(ops, store_renamed_or_deleted_keeps_serving_from_the_mapping)
{
    char *path;
    start_on_copy("fault-unlink.emb", &path);
    char *row = get_body("/v1/tables/f/rows/7"), *key = get_body("/v1/tables/f/keys/apple");
    char moved[640];
    snprintf(moved, sizeof moved, "%s.moved", path);
    cr_assert_eq(rename(path, moved), 0);
    char *b = get_body("/v1/tables/f/rows/7");
    cr_expect_str_eq(b, row, "after rename");
    free(b);
    cr_assert_eq(unlink(moved), 0);
    b = get_body("/v1/tables/f/rows/7");
    cr_expect_str_eq(b, row, "after unlink");
    free(b);
    b = get_body("/v1/tables/f/keys/apple");
    cr_expect_str_eq(b, key, "key lookup after unlink");
    free(b);
    th_response r = req("POST", "/v1/tables/f/search", "{\"key\":\"apple\",\"k\":3}", NULL);
    cr_expect_eq(r.status, 200, "search after unlink: %.200s", r.body);
    th_response_free(&r);

    r = req("POST", "/v1/admin/reload", NULL, NULL);
    json_t *j = ok_json(&r, "reload with the file gone");
    json_t *f0 = json_array_get(json_object_get(j, "failed"), 0);
    const char *err = json_string_value(json_object_get(f0, "error"));
    cr_expect(json_array_size(json_object_get(j, "reloaded")) == 0 && err &&
                  strstr(err, "No such file or directory"),
              "%.300s", r.body);
    json_decref(j);
    th_response_free(&r);
    b = get_body("/v1/tables/f/rows/7");
    cr_expect_str_eq(b, row, "the old mapping serves after the failed reload");
    free(b);
    cr_expect_eq(th_server_stop(&srv, SIGTERM), 0);
    free(row);
    free(key);
    free(path);
}

/* A reload that finds a damaged file (renamed over the store, as replacements must be) refuses
 * it with the failed check in the log, and the old table keeps serving. Each damage is one the
 * validating open detects without reading rows; damage inside the rows is found by `embd
 * verify`, which reads every checksum (README: operations). */
Test(ops, reload_with_a_damaged_store_keeps_the_old_table)
{
    char *path;
    start_on_copy("fault-corrupt.emb", &path);
    char *row = get_body("/v1/tables/f/rows/3");
    size_t len;
    unsigned char *good = th_read_file(path, &len);
    struct {
        const char *what;
        size_t off; /* byte to flip, or len for "zeros" / "text" */
    } damage[] = {
        {"magic", 0},
        {"header field (rows)", 24},
        {"section table entry", 64 + 8},
        {"file of zeros", SIZE_MAX},
        {"text file", SIZE_MAX - 1},
    };
    char tmp[640];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    for (size_t i = 0; i < sizeof damage / sizeof damage[0]; i++) {
        unsigned char *bad = malloc(len);
        memcpy(bad, good, len);
        size_t bad_len = len;
        if (damage[i].off == SIZE_MAX)
            memset(bad, 0, len);
        else if (damage[i].off == SIZE_MAX - 1)
            bad_len = (size_t)snprintf((char *)bad, len, "this is not a store\n");
        else
            bad[damage[i].off] ^= 0x40;
        th_write_file(tmp, bad, bad_len);
        free(bad);
        cr_assert_eq(rename(tmp, path), 0);
        int before = th_server_log_count(&srv, "reload failed");
        th_response r = req("POST", "/v1/admin/reload", NULL, NULL);
        json_t *j = ok_json(&r, damage[i].what);
        json_t *failed = json_object_get(j, "failed");
        const char *t = json_string_value(json_object_get(json_array_get(failed, 0), "table"));
        cr_expect(json_array_size(failed) == 1 && t && !strcmp(t, "f"), "%s: %.200s",
                  damage[i].what, r.body);
        json_decref(j);
        th_response_free(&r);
        cr_expect_eq(th_server_log_count(&srv, "reload failed"), before + 1, "%s: logged",
                     damage[i].what);
        char *b = get_body("/v1/tables/f/rows/3");
        cr_expect_str_eq(b, row, "%s: the old table serves", damage[i].what);
        free(b);
    }
    /* The sound file again: the reload takes it. */
    th_write_file(tmp, good, len);
    cr_assert_eq(rename(tmp, path), 0);
    th_response r = req("POST", "/v1/admin/reload", NULL, NULL);
    cr_expect(strstr(r.body, "\"reloaded\":[\"f\"]"), "%.200s", r.body);
    th_response_free(&r);
    th_response h = req("GET", "/healthz", NULL, NULL);
    cr_expect_eq(h.status, 200);
    th_response_free(&h);
    cr_expect_eq(th_server_stop(&srv, SIGTERM), 0);
    free(good);
    free(row);
    free(path);
}

/* A store truncated in place while mapped (what the README forbids): reading a vanished page
 * raises SIGBUS, and the server logs which store, at which offset, and exits 74 (EX_IOERR)
 * instead of serving bytes that no longer exist. */
Test(ops, store_truncated_in_place_exits_74_naming_the_store)
{
    char *path;
    start_on_copy("fault-truncate.emb", &path);
    size_t len;
    free(th_read_file(path, &len));
    cr_assert_gt(len, 3 * 4096, "the demo store spans several pages (%zu bytes)", len);
    th_response r = req("GET", "/v1/tables/f/rows/0", NULL, NULL);
    json_t *j = ok_json(&r, "row 0");
    json_decref(j);
    th_response_free(&r);
    cr_assert_eq(truncate(path, 4096), 0, "truncate: %s", strerror(errno));
    /* An exact search reads every row, so it touches the vanished pages. */
    th_response s;
    int rc = th_request(&srv, "POST", "/v1/tables/f/search", "{\"id\":0,\"k\":3,\"exact\":true}",
                        NULL, &s);
    cr_expect(rc != 0, "no answer after the pages vanished (got curl %d, status %ld)", rc,
              s.status);
    th_response_free(&s);
    cr_expect_eq(th_server_stop(&srv, 0), 74, "exit status");
    cr_expect_eq(th_server_log_count(&srv, "SIGBUS: a store file was truncated"), 1);
    cr_expect_eq(th_server_log_count(&srv, path), 2,
                 "the path is in the serving line and the SIGBUS line");
    free(path);
}

/* ==== allocation failure on the request path (-DEMBD_FAULT_INJECTION=ON builds) ==== */

/* For each kind of request, fails the 1st, 2nd, ... allocation made while serving it (the
 * X-Embd-Fault-Alloc header arms lib/emb_fault.h's countdown; X-Embd-Fault-Fired says whether
 * it was reached) until one completes without reaching it. Every failed allocation must give a
 * 500 or 503 problem, or a 2xx where the server can do without it (a problem's "instance", a
 * reload that reports the table as failed), never a crash or a closed connection; the server
 * then still answers, and at exit (under ASan) leaks nothing: exit status 0. */
Test(ops, every_allocation_of_a_request_fails_cleanly)
{
    const char *args[] = {"--threads", "2", th_demo_store(), NULL};
    th_server_start(&srv, args);
    /* The fault header is honoured by fault-injection builds only; ask the server. */
    th_response probe;
    const char *h1[] = {"X-Embd-Fault-Alloc: 1000000", NULL};
    cr_assert_eq(th_request(&srv, "GET", "/healthz", NULL, h1, &probe), 0);
    int enabled = probe.fault_fired[0] != 0;
    th_response_free(&probe);
    if (!enabled) {
        th_server_stop(&srv, SIGTERM);
        cr_skip_test("the server was built without EMBD_FAULT_INJECTION");
    }
    static const struct {
        const char *method, *path, *body;
    } reqs[] = {
        {"GET", "/v1/tables", NULL},
        {"GET", "/v1/tables/demo", NULL},
        {"GET", "/v1/tables/demo/rows/5", NULL},
        {"GET", "/v1/tables/demo/rows/5?encoding=base64", NULL},
        {"GET", "/v1/tables/demo/keys/apple", NULL},
        {"POST", "/v1/tables/demo/gather", "{\"ids\":[1,2,3,999999]}"},
        {"POST", "/v1/tables/demo/gather", "{\"keys\":[\"apple\",\"nokey\"],\"pool\":\"mean\"}"},
        {"POST", "/v1/tables/demo/gather?encoding=base64", "{\"ids\":[1,2,3]}"},
        {"POST", "/v1/tables/demo/search", "{\"key\":\"apple\",\"k\":5}"},
        {"POST", "/v1/tables/demo/search", "{\"id\":3,\"k\":5,\"exact\":true}"},
        {"POST", "/v1/tables/demo/search", "{\"keys\":[\"apple\",\"mercury\"],\"k\":3}"},
        {"POST", "/v1/tables/demo/search",
         "{\"vectors\":[[1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,"
         "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1],[0,1,0,0,0,0,0,0,0,0,0,"
         "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,"
         "0,0,0,0,0,0,0,0,0]],\"k\":2}"},
        {"POST", "/v1/admin/reload", NULL},
        {"GET", "/metrics", NULL},
        {"GET", "/openapi.yaml", NULL},
    };
    const char *hdr[] = {NULL, NULL};
    char fault[64];
    hdr[0] = fault;
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        int failed = 0, closed = 0, answered_ok = 0, n;
        for (n = 1; n <= 2000; n++) {
            snprintf(fault, sizeof fault, "X-Embd-Fault-Alloc: %d", n);
            th_response r;
            int rc = th_request(&srv, reqs[i].method, reqs[i].path, reqs[i].body, hdr, &r);
            if (rc != 0) {
                closed++;
                failed++;
                cr_expect(0, "%s %s, allocation %d failed: the connection closed (curl %d)",
                          reqs[i].method, reqs[i].path, n, rc);
                th_response_free(&r);
                if (closed > 3)
                    break; /* the server is gone: stop here, the failures say why */
                continue;
            }
            int fired = !strcmp(r.fault_fired, "1");
            if (!fired) {
                cr_expect(r.status < 400, "%s %s without a failure: %ld %.200s", reqs[i].method,
                          reqs[i].path, r.status, r.body);
                th_response_free(&r);
                break;
            }
            failed++;
            if (r.status < 400)
                answered_ok++; /* a failure the server worked around (e.g. a log buffer) */
            else
                cr_expect(r.status == 500 || r.status == 503,
                          "%s %s, allocation %d failed: status %ld %.200s", reqs[i].method,
                          reqs[i].path, n, r.status, r.body);
            th_response_free(&r);
        }
        cr_expect_leq(n, 2000, "%s %s: bounded", reqs[i].method, reqs[i].path);
        th_response h = req("GET", "/healthz", NULL, NULL);
        cr_expect_eq(h.status, 200);
        th_response_free(&h);
        cr_log_info("%s %s: %d allocations failed in turn (%d closed, %d still 2xx)",
                    reqs[i].method, reqs[i].path, failed, closed, answered_ok);
    }
    cr_expect_eq(th_server_stop(&srv, SIGTERM), 0, "exit status (ASan: no leak)");
}

/* Regression (found by the allocation-failure test): a worker's per-query hit counts were
 * grown only with its hit buffer, so a batch of 2 with k=3 after a single search with k=10
 * (6 hits fit the 10 already there) wrote past a count array of one. On one worker thread the
 * sequence reuses the same scratch; ASan catches the overflow, the answers must hold. */
Test(ops, batch_search_after_a_single_search_on_the_same_worker)
{
    const char *args[] = {"--threads", "1", th_demo_store(), NULL};
    th_server_start(&srv, args);
    th_response r = req("POST", "/v1/tables/demo/search", "{\"key\":\"apple\",\"k\":10}", NULL);
    json_t *j = ok_json(&r, "single search k=10");
    json_decref(j);
    th_response_free(&r);
    r = req("POST", "/v1/tables/demo/search", "{\"keys\":[\"apple\",\"mercury\"],\"k\":3}", NULL);
    j = ok_json(&r, "pooled keys k=3");
    json_decref(j);
    th_response_free(&r);
    char body[4096];
    size_t n = (size_t)snprintf(body, sizeof body, "{\"k\":3,\"vectors\":[");
    for (int q = 0; q < 3; q++) {
        n += (size_t)snprintf(body + n, sizeof body - n, "%s[", q ? "," : "");
        for (int d = 0; d < 64; d++)
            n += (size_t)snprintf(body + n, sizeof body - n, "%s%d", d ? "," : "", d == q);
        n += (size_t)snprintf(body + n, sizeof body - n, "]");
    }
    snprintf(body + n, sizeof body - n, "]}");
    r = req("POST", "/v1/tables/demo/search", body, NULL);
    j = ok_json(&r, "batch of 3, k=3");
    json_t *results = json_object_get(j, "results");
    cr_expect_eq(json_array_size(results), 3, "%.300s", r.body);
    for (size_t i = 0; i < json_array_size(results); i++) {
        json_t *q = json_array_get(results, i);
        json_t *hits = json_is_array(q) ? q : json_object_get(q, "hits");
        cr_expect_eq(json_array_size(hits), 3, "query %zu: %.300s", i, r.body);
    }
    json_decref(j);
    th_response_free(&r);
    cr_expect_eq(th_server_stop(&srv, SIGTERM), 0);
}

/* ==== --max-buffered: request bodies held at once, per loop ==== */

/* Builds "POST /v1/tables/demo/gather" with a body of exactly len bytes ({"ids":[1]} padded
 * with spaces, valid JSON); returns the header and body as one malloc'd string, *out_len. */
static char *padded_gather(size_t len, size_t *out_len)
{
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "POST /v1/tables/demo/gather HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      "application/json\r\nContent-Length: %zu\r\n\r\n",
                      len);
    char *m = malloc((size_t)hl + len + 1);
    memcpy(m, head, (size_t)hl);
    memset(m + hl, ' ', len);
    memcpy(m + hl, "{\"ids\":[1]}", 11);
    m[(size_t)hl + len] = 0;
    *out_len = (size_t)hl + len;
    return m;
}

/* Each connection may send --max-body, but the bodies held at once may not pass
 * --max-buffered: a body that would is discarded and answered 503 + Retry-After, the bodies
 * already held are answered as usual, and once they are gone the budget is free again. */
Test(ops, max_buffered_bounds_bodies_held_at_once)
{
    const char *args[] = {"--max-buffered", "300000",        "--max-body",
                          "250000",         th_demo_store(), NULL};
    th_server_start(&srv, args);
    size_t big_len, small_len;
    char *big = padded_gather(200000, &big_len), *small = padded_gather(40000, &small_len);
    size_t head_len = big_len - 200000;

    /* 1. A slow client holds 150 KB of its 200 KB body (a 256 KiB buffer). */
    int slow = th_connect(&srv);
    cr_assert_geq(slow, 0);
    cr_assert_eq(th_send(slow, big, head_len + 150000, 5000), 0);
    th_sleep_ms(300); /* let the loop read it: a bounded wait, not a timing assertion */

    /* 2. Another client's 40 KB body (a 64 KiB buffer) does not fit what is left: 503 +
     * Retry-After. */
    int other = th_connect(&srv);
    cr_assert_geq(other, 0);
    cr_assert_eq(th_send(other, small, small_len, 5000), 0);
    th_raw_result got;
    th_read(other, 10000, 1, &got);
    th_http_msg m;
    cr_assert_eq(th_split_responses(got.data, got.len, &m, 1), 1, "%.300s", got.data);
    char retry[32] = "";
    cr_expect_eq(m.status, 503, "%.300s", got.data);
    cr_expect(th_msg_header(&m, "Retry-After", retry, sizeof retry) && retry[0]);
    cr_expect(strstr(got.data, "--max-buffered"), "%.300s", got.data);
    free(got.data);
    close(other);

    /* 3. The slow client finishes: it is answered as usual. */
    cr_assert_eq(th_send(slow, big + head_len + 150000, big_len - head_len - 150000, 5000), 0);
    th_read(slow, 10000, 1, &got);
    cr_assert_eq(th_split_responses(got.data, got.len, &m, 1), 1, "%.300s", got.data);
    cr_expect_eq(m.status, 200, "%.300s", got.data);
    free(got.data);
    close(slow);

    /* 4. With nothing held, the same 40 KB body is served. */
    th_response r = req("GET", "/healthz", NULL, NULL);
    th_response_free(&r);
    int again = th_connect(&srv);
    cr_assert_geq(again, 0);
    cr_assert_eq(th_send(again, small, small_len, 5000), 0);
    th_read(again, 10000, 1, &got);
    cr_assert_eq(th_split_responses(got.data, got.len, &m, 1), 1, "%.300s", got.data);
    cr_expect_eq(m.status, 200, "after the slow body was answered: %.300s", got.data);
    free(got.data);
    close(again);
    free(big);
    free(small);
    cr_expect_eq(th_server_stop(&srv, SIGTERM), 0);
}
