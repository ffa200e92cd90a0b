/*
 * test_http.c - integration tests: the real embd serve on loopback, every endpoint and every
 * documented error status, with libcurl (and raw sockets where curl would fix the request).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "helpers.h"

static th_server srv;

static void start_demo(void)
{
    const char *args[] = {"--threads", "2", "--max-batch", "64", NULL, NULL};
    char store[600];
    snprintf(store, sizeof store, "demo=%s", th_demo_store());
    args[4] = store;
    th_server_start(&srv, args);
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
