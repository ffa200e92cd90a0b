/*
 * test_metrics.c - the Prometheus registry: exact rendered lines, label escaping, table slots,
 * exact totals under concurrent updates, scrapes racing updates and registrations, and
 * `promtool check metrics` on a rendered page when promtool can be had.
 */
#include "metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef EMBD_TEST_STANDALONE
#include <criterion/criterion.h>
#include <criterion/logging.h>
#else
/* Criterion cannot start under ThreadSanitizer: its runner maps a shared arena at a random fixed
 * address, which lands in TSan's reserved ranges ("Could not initialize inheritable arena",
 * Snaipe/Criterion#274). Built with -DEMBD_TEST_STANDALONE (and without -lcriterion), this file
 * brings the few criterion macros it uses and a runner of its own, so the same tests run under
 * -fsanitize=thread: one after another in this process (srv_metrics_init resets the registry);
 * a failed expectation marks the test failed, a failed assertion ends the run. */
#include <stdarg.h>

typedef struct st_test {
    const char *name;
    void (*fn)(void);
} st_test;
static st_test st_tests[32];
static int st_count, st_failures;

static void st_register(const char *name, void (*fn)(void))
{
    if (st_count < (int)(sizeof st_tests / sizeof st_tests[0]))
        st_tests[st_count++] = (st_test){name, fn};
}

/* fmt is "" when the caller gave no message. */
static void st_check(int ok, int fatal, const char *file, int line, const char *expr,
                     const char *fmt, ...)
{
    if (ok)
        return;
    fprintf(stderr, "%s:%d: %s failed: %s\n", file, line, fatal ? "assertion" : "expectation",
            expr);
    if (*fmt) {
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    st_failures++;
    if (fatal)
        exit(1);
}

#define Test(suite, name, ...)                                                                     \
    static void suite##_##name(void);                                                              \
    __attribute__((constructor)) static void suite##_##name##_register(void)                       \
    {                                                                                              \
        st_register(#suite "::" #name, suite##_##name);                                            \
    }                                                                                              \
    static void suite##_##name(void)

#define ST_CHECK(fatal, cond, expr, ...)                                                           \
    st_check(!!(cond), fatal, __FILE__, __LINE__, expr, "" __VA_ARGS__)
#define cr_assert(c, ...)           ST_CHECK(1, c, #c, __VA_ARGS__)
#define cr_expect(c, ...)           ST_CHECK(0, c, #c, __VA_ARGS__)
#define cr_assert_eq(a, b, ...)     ST_CHECK(1, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_expect_eq(a, b, ...)     ST_CHECK(0, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...)    ST_CHECK(1, (a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...)    ST_CHECK(1, (a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_expect_geq(a, b, ...)    ST_CHECK(0, (a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_expect_gt(a, b, ...)     ST_CHECK(0, (a) > (b), #a " > " #b, __VA_ARGS__)
#define cr_assert_not_null(p, ...)  ST_CHECK(1, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_expect_not_null(p, ...)  ST_CHECK(0, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...) ST_CHECK(0, strcmp(a, b) == 0, #a " eq " #b, __VA_ARGS__)
#define cr_expect_str_empty(s, ...) ST_CHECK(0, (s)[0] == '\0', #s " empty", __VA_ARGS__)
#define cr_log_info(...)            (fprintf(stderr, "[----] " __VA_ARGS__), fputc('\n', stderr))
#define cr_skip_test(...)                                                                          \
    do {                                                                                           \
        fprintf(stderr, "[SKIP] " __VA_ARGS__);                                                    \
        fputc('\n', stderr);                                                                       \
        return;                                                                                    \
    } while (0)

int main(void)
{
    for (int i = 0; i < st_count; i++) {
        int before = st_failures;
        fprintf(stderr, "[RUN ] %s\n", st_tests[i].name);
        st_tests[i].fn();
        fprintf(stderr, "[%s] %s\n", st_failures == before ? "DONE" : "FAIL", st_tests[i].name);
    }
    fprintf(stderr, "%d tests, %d failed checks\n", st_count, st_failures);
    return st_failures ? 1 : 0;
}
#endif

/* ---- helpers ---------------------------------------------------------------------------- */

/* Whether text holds line as a whole line. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
    return 0;
}

/* Lines of text that start with prefix. */
static int count_prefix(const char *text, const char *prefix)
{
    int n = 0;
    size_t len = strlen(prefix);
    for (const char *p = text; *p;) {
        if (strncmp(p, prefix, len) == 0)
            n++;
        const char *nl = strchr(p, '\n');
        if (!nl)
            break;
        p = nl + 1;
    }
    return n;
}

/* The value of the sample named series (name plus labels, "embd_x{a=\"b\"}"), or -1. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; (p = strstr(p, series)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

#define expect_line(text, line) cr_expect(has_line(text, line), "missing line: %s", line)

/* A fake table source: the scrape callback reads these. */
typedef struct fake_tables {
    int served[SRV_METRICS_MAX_TABLES];
    srv_table_stats st[SRV_METRICS_MAX_TABLES];
} fake_tables;

static int fake_stats(int slot, srv_table_stats *out, void *ctx)
{
    fake_tables *f = ctx;
    if (slot < 0 || slot >= SRV_METRICS_MAX_TABLES || !f->served[slot])
        return -1;
    *out = f->st[slot];
    return 0;
}

static char *render(fake_tables *f)
{
    size_t len = 0;
    char *text = srv_metrics_render(&len, f ? fake_stats : NULL, f);
    cr_assert_not_null(text);
    cr_assert_eq(strlen(text), len, "len is the text's length");
    cr_assert(len > 0 && text[len - 1] == '\n', "the page ends with a newline");
    return text;
}

/* ---- exact lines ------------------------------------------------------------------------ */

/* The families in the order they must appear, each exactly once. */
static const char *const families[] = {
    "embd_http_requests_total counter",
    "embd_http_request_duration_seconds histogram",
    "embd_http_requests_in_flight gauge",
    "embd_worker_queue_depth gauge",
    "embd_worker_queue_capacity gauge",
    "embd_worker_threads gauge",
    "embd_rows_gathered_total counter",
    "embd_rows_scanned_total counter",
    "embd_searches_total counter",
    "embd_table_rows gauge",
    "embd_table_bytes_mapped gauge",
    "embd_table_bytes_resident gauge",
    "embd_reloads_total counter",
    "embd_process_cpu_seconds_total counter",
    "embd_process_resident_memory_bytes gauge",
    "embd_process_virtual_memory_bytes gauge",
    "embd_process_open_fds gauge",
    "embd_process_max_fds gauge",
    "embd_process_start_time_seconds gauge",
    "embd_build_info gauge",
};

Test(metrics, counters_histogram_and_families)
{
    srv_metrics_init("1.2.3", "avx2");
    /* /healthz: 30 us and exactly 50 us land in le=0.00005 (le is inclusive), 200 us in
     * le=0.00025, 3 s in le=5, 20 s only in +Inf. */
    srv_metrics_request(SRV_ROUTE_HEALTHZ, "GET", 200, 0.00003);
    srv_metrics_request(SRV_ROUTE_HEALTHZ, "GET", 200, 0.00005);
    srv_metrics_request(SRV_ROUTE_HEALTHZ, "GET", 200, 0.0002);
    srv_metrics_request(SRV_ROUTE_HEALTHZ, "HEAD", 503, 3.0);
    srv_metrics_request(SRV_ROUTE_HEALTHZ, "BREW", 418, 20.0);
    /* Out-of-range route and odd durations: counted under "other", at 0 s. */
    srv_metrics_request((srv_route)99, "POST", 404, -1.0);
    srv_metrics_request(SRV_ROUTE_OTHER, NULL, 404, 0.0 / 0.0);
    srv_metrics_in_flight_add(3);
    srv_metrics_in_flight_add(-1);
    srv_metrics_queue_depth_set(5, 64, 8);
    srv_metrics_reload(1);
    srv_metrics_reload(1);
    srv_metrics_reload(0);

    char *t = render(NULL);
    expect_line(t, "embd_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 3");
    expect_line(t, "embd_http_requests_total{route=\"/healthz\",method=\"HEAD\",status=\"503\"} 1");
    expect_line(t,
                "embd_http_requests_total{route=\"/healthz\",method=\"OTHER\",status=\"other\"} 1");
    expect_line(t, "embd_http_requests_total{route=\"other\",method=\"POST\",status=\"404\"} 1");
    expect_line(t, "embd_http_requests_total{route=\"other\",method=\"OTHER\",status=\"404\"} 1");
    /* Only series that happened are listed. */
    cr_expect_eq(count_prefix(t, "embd_http_requests_total{"), 5);

    static const struct {
        const char *le;
        int count;
    } want[] = {
        {"0.00005", 2}, {"0.0001", 2}, {"0.00025", 3}, {"0.0005", 3}, {"0.001", 3}, {"0.0025", 3},
        {"0.005", 3},   {"0.01", 3},   {"0.025", 3},   {"0.05", 3},   {"0.1", 3},   {"0.25", 3},
        {"0.5", 3},     {"1", 3},      {"2.5", 3},     {"5", 4},      {"10", 4},    {"+Inf", 5},
    };
    char line[256];
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        snprintf(line, sizeof line,
                 "embd_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"%s\"} %d",
                 want[i].le, want[i].count);
        expect_line(t, line);
    }
    cr_expect_eq(count_prefix(t, "embd_http_request_duration_seconds_bucket{route=\"/healthz\""),
                 18);
    expect_line(t, "embd_http_request_duration_seconds_sum{route=\"/healthz\"} 23.00028");
    expect_line(t, "embd_http_request_duration_seconds_count{route=\"/healthz\"} 5");
    expect_line(t, "embd_http_request_duration_seconds_bucket{route=\"other\",le=\"0.00005\"} 2");
    expect_line(t, "embd_http_request_duration_seconds_sum{route=\"other\"} 0");
    /* Routes never hit are listed with zeros: every route has its 20 lines. */
    expect_line(t, "embd_http_request_duration_seconds_bucket{route=\"/v1/tables/{table}/rows/"
                   "{id}\",le=\"+Inf\"} 0");
    expect_line(t, "embd_http_request_duration_seconds_count{route=\"/readyz\"} 0");
    cr_expect_eq(count_prefix(t, "embd_http_request_duration_seconds_"), 20 * SRV_ROUTE_COUNT);

    expect_line(t, "embd_http_requests_in_flight 2");
    expect_line(t, "embd_worker_queue_depth 5");
    expect_line(t, "embd_worker_queue_capacity 64");
    expect_line(t, "embd_worker_threads 8");
    expect_line(t, "embd_reloads_total{result=\"ok\"} 2");
    expect_line(t, "embd_reloads_total{result=\"error\"} 1");
    expect_line(t, "embd_build_info{version=\"1.2.3\",simd=\"avx2\"} 1");

    /* One HELP and one TYPE per family, in the fixed order. */
    const char *prev = t;
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        snprintf(line, sizeof line, "# TYPE %s", families[i]);
        cr_expect(has_line(t, line), "missing %s", line);
        char name[128];
        snprintf(name, sizeof name, "%s", families[i]);
        *strchr(name, ' ') = '\0';
        snprintf(line, sizeof line, "# TYPE %s ", name);
        cr_expect_eq(count_prefix(t, line), 1, "%s", line);
        snprintf(line, sizeof line, "# HELP %s ", name);
        cr_expect_eq(count_prefix(t, line), 1, "%s", line);
        const char *at = strstr(t, line);
        cr_expect(at && at >= prev, "%s out of order", name);
        if (at)
            prev = at;
    }
    cr_expect_eq(count_prefix(t, "# TYPE "), (int)(sizeof families / sizeof families[0]));
    cr_expect_eq(count_prefix(t, "# HELP "), (int)(sizeof families / sizeof families[0]));

    /* Process figures are this process's. */
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    snprintf(line, sizeof line, "embd_process_max_fds %" PRIu64, (uint64_t)rl.rlim_cur);
    expect_line(t, line);
    cr_expect_geq(sample(t, "embd_process_open_fds"), 3);
    cr_expect_gt(sample(t, "embd_process_resident_memory_bytes"), 0);
    cr_expect_gt(sample(t, "embd_process_virtual_memory_bytes"),
                 sample(t, "embd_process_resident_memory_bytes"));
    cr_expect_geq(sample(t, "embd_process_cpu_seconds_total"), 0);
    double start = sample(t, "embd_process_start_time_seconds");
    double now = (double)time(NULL);
    cr_expect(start > now - 3600 && start <= now + 1, "start time %f vs now %f", start, now);
    free(t);
}

Test(metrics, tables_and_residency)
{
    srv_metrics_init("0.1.0", "scalar");
    long ps = sysconf(_SC_PAGESIZE);
    /* Four anonymous pages, the first two touched: the "store" starts 100 bytes into the
     * first page and spans two pages' worth, so it ends inside the untouched third page. */
    unsigned char *m =
        mmap(NULL, (size_t)ps * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    m[0] = 1;
    m[ps] = 1;

    int a = srv_metrics_table("alpha");
    int b = srv_metrics_table("beta");
    cr_assert_eq(a, 0);
    cr_assert_eq(b, 1);
    cr_expect_eq(srv_metrics_table("alpha"), a, "a name keeps its slot");
    srv_metrics_rows_gathered(a, 7);
    srv_metrics_rows_gathered(a, 3);
    srv_metrics_rows_scanned(a, 1000);
    srv_metrics_search(a, 0);
    srv_metrics_search(a, 1);
    srv_metrics_search(a, 1);
    srv_metrics_rows_scanned(b, 5);
    srv_metrics_rows_scanned(-1, 5); /* ignored, as are slots past the table */
    srv_metrics_rows_scanned(SRV_METRICS_MAX_TABLES, 5);

    fake_tables f = {0};
    f.served[a] = 1;
    f.st[a] = (srv_table_stats){.rows = 42, .map = m + 100, .map_len = (size_t)ps * 2};
    /* beta is registered but not served: counters stay, gauges go. */
    char *t = render(&f);
    expect_line(t, "embd_rows_gathered_total{table=\"alpha\"} 10");
    expect_line(t, "embd_rows_scanned_total{table=\"alpha\"} 1000");
    expect_line(t, "embd_rows_scanned_total{table=\"beta\"} 5");
    expect_line(t, "embd_rows_gathered_total{table=\"beta\"} 0");
    expect_line(t, "embd_searches_total{table=\"alpha\",mode=\"exact\"} 1");
    expect_line(t, "embd_searches_total{table=\"alpha\",mode=\"two_stage\"} 2");
    expect_line(t, "embd_searches_total{table=\"beta\",mode=\"exact\"} 0");
    expect_line(t, "embd_table_rows{table=\"alpha\"} 42");
    char line[128];
    snprintf(line, sizeof line, "embd_table_bytes_mapped{table=\"alpha\"} %ld", ps * 2);
    expect_line(t, line);
    snprintf(line, sizeof line, "embd_table_bytes_resident{table=\"alpha\"} %ld", ps * 2 - 100);
    expect_line(t, line);
    cr_expect_eq(count_prefix(t, "embd_table_rows{"), 1);
    cr_expect_eq(count_prefix(t, "embd_table_bytes_resident{"), 1);
    free(t);

    /* Touching the third page makes the rest of the range resident; a reload that drops and
     * re-registers the name keeps its counters. */
    m[2 * ps] = 1;
    cr_expect_eq(srv_metrics_table("beta"), b);
    f.served[b] = 1;
    f.st[b] = (srv_table_stats){.rows = 0, .map = NULL, .map_len = 0};
    t = render(&f);
    snprintf(line, sizeof line, "embd_table_bytes_resident{table=\"alpha\"} %ld", ps * 2);
    expect_line(t, line);
    expect_line(t, "embd_table_bytes_resident{table=\"beta\"} 0");
    expect_line(t, "embd_rows_scanned_total{table=\"beta\"} 5");
    free(t);
    munmap(m, (size_t)ps * 4);
}

Test(metrics, unmapped_range_omits_resident)
{
    srv_metrics_init("0.1.0", "scalar");
    long ps = sysconf(_SC_PAGESIZE);
    unsigned char *m = mmap(NULL, (size_t)ps, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    munmap(m, (size_t)ps);
    int a = srv_metrics_table("gone");
    fake_tables f = {0};
    f.served[a] = 1;
    f.st[a] = (srv_table_stats){.rows = 1, .map = m, .map_len = (size_t)ps};
    char *t = render(&f);
    expect_line(t, "embd_table_rows{table=\"gone\"} 1");
    cr_expect_eq(count_prefix(t, "embd_table_bytes_resident{"), 0);
    free(t);
}

Test(metrics, table_slots_fill_up)
{
    srv_metrics_init("0.1.0", "scalar");
    char name[32];
    for (int i = 0; i < SRV_METRICS_MAX_TABLES; i++) {
        snprintf(name, sizeof name, "t%d", i);
        cr_assert_eq(srv_metrics_table(name), i);
    }
    cr_expect_eq(srv_metrics_table("one-too-many"), -1);
    cr_expect_eq(srv_metrics_table("t17"), 17, "known names still resolve when full");
    cr_expect_eq(srv_metrics_table(NULL), -1);
    char *t = render(NULL);
    cr_expect_eq(count_prefix(t, "embd_rows_scanned_total{"), SRV_METRICS_MAX_TABLES);
    free(t);
}

Test(metrics, label_escaping)
{
    srv_metrics_init("1.0 \"quoted\"", "a\\b");
    int s = srv_metrics_table("we\"ird\\name\nx");
    cr_assert_geq(s, 0);
    srv_metrics_rows_gathered(s, 4);
    char *t = render(NULL);
    expect_line(t, "embd_rows_gathered_total{table=\"we\\\"ird\\\\name\\nx\"} 4");
    expect_line(t, "embd_searches_total{table=\"we\\\"ird\\\\name\\nx\",mode=\"exact\"} 0");
    expect_line(t, "embd_build_info{version=\"1.0 \\\"quoted\\\"\",simd=\"a\\\\b\"} 1");
    /* No raw newline leaked into a sample line. */
    cr_expect_eq(count_prefix(t, "x\""), 0);
    free(t);
}

Test(metrics, route_names)
{
    cr_expect_str_eq(srv_route_name(SRV_ROUTE_HEALTHZ), "/healthz");
    cr_expect_str_eq(srv_route_name(SRV_ROUTE_ROW), "/v1/tables/{table}/rows/{id}");
    cr_expect_str_eq(srv_route_name(SRV_ROUTE_COUNT), srv_route_name(SRV_ROUTE_OTHER));
    for (int r = 0; r < SRV_ROUTE_COUNT; r++)
        cr_expect_not_null(srv_route_name((srv_route)r));
}

/* ---- concurrency ------------------------------------------------------------------------ */

#define PER_THREAD 100000

typedef struct worker_arg {
    int table;
    int iterations;
    atomic_int *done;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    for (int i = 0; i < a->iterations; i++) {
        srv_metrics_in_flight_add(1);
        srv_metrics_request(SRV_ROUTE_SEARCH, "POST", 200, 0.001);
        srv_metrics_rows_scanned(a->table, 3);
        srv_metrics_rows_gathered(a->table, 1);
        srv_metrics_search(a->table, i & 1);
        srv_metrics_queue_depth_set((uint32_t)i, 64, 2);
        if (i % 1000 == 0)
            srv_metrics_reload(1);
        srv_metrics_in_flight_add(-1);
    }
    if (a->done)
        atomic_fetch_add(a->done, 1);
    return NULL;
}

Test(metrics, concurrent_updates_are_exact)
{
    srv_metrics_init("0.1.0", "scalar");
    int s = srv_metrics_table("shared");
    pthread_t th[2];
    worker_arg arg = {.table = s, .iterations = PER_THREAD};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, worker, &arg), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);

    char *t = render(NULL);
    expect_line(t, "embd_http_requests_total{route=\"/v1/tables/{table}/search\",method=\"POST\","
                   "status=\"200\"} 200000");
    expect_line(t, "embd_http_request_duration_seconds_bucket{route=\"/v1/tables/{table}/search\","
                   "le=\"0.0005\"} 0");
    expect_line(t, "embd_http_request_duration_seconds_bucket{route=\"/v1/tables/{table}/search\","
                   "le=\"0.001\"} 200000");
    expect_line(t, "embd_http_request_duration_seconds_sum{route=\"/v1/tables/{table}/search\"} "
                   "200");
    expect_line(t, "embd_http_request_duration_seconds_count{route=\"/v1/tables/{table}/search\"} "
                   "200000");
    expect_line(t, "embd_rows_scanned_total{table=\"shared\"} 600000");
    expect_line(t, "embd_rows_gathered_total{table=\"shared\"} 200000");
    expect_line(t, "embd_searches_total{table=\"shared\",mode=\"exact\"} 100000");
    expect_line(t, "embd_searches_total{table=\"shared\",mode=\"two_stage\"} 100000");
    expect_line(t, "embd_reloads_total{result=\"ok\"} 200");
    expect_line(t, "embd_http_requests_in_flight 0");
    free(t);
}

static void *registrar(void *p)
{
    (void)p;
    char name[32];
    for (int i = 0; i < SRV_METRICS_MAX_TABLES; i++) {
        snprintf(name, sizeof name, "late%d", i);
        srv_metrics_table(name);
    }
    return NULL;
}

/* Checks a scrape taken mid-update: for the search route the cumulative buckets never go down
 * and _count equals the +Inf bucket. */
static void check_histogram(const char *t)
{
    const char *pre =
        "embd_http_request_duration_seconds_bucket{route=\"/v1/tables/{table}/search\"";
    double last = 0;
    int buckets = 0;
    for (const char *p = t; (p = strstr(p, pre)) != NULL; p++) {
        const char *sp = strstr(p, "} "); /* the route holds a brace too */
        cr_assert_not_null(sp);
        double v = strtod(sp + 2, NULL);
        cr_assert_geq(v, last, "cumulative buckets decrease");
        last = v;
        buckets++;
    }
    cr_assert_eq(buckets, 18);
    double cnt =
        sample(t, "embd_http_request_duration_seconds_count{route=\"/v1/tables/{table}/search\"}");
    cr_assert_eq(cnt, last, "_count %f != +Inf bucket %f", cnt, last);
}

Test(metrics, render_races_updates)
{
    srv_metrics_init("0.1.0", "scalar");
    int s = srv_metrics_table("shared");
    atomic_int done = 0;
    worker_arg arg = {.table = s, .iterations = PER_THREAD, .done = &done};
    pthread_t th[3];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, worker, &arg), 0);
    cr_assert_eq(pthread_create(&th[2], NULL, registrar, NULL), 0);

    long ps = sysconf(_SC_PAGESIZE);
    unsigned char *m =
        mmap(NULL, (size_t)ps * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    fake_tables f = {0};
    for (int i = 0; i < SRV_METRICS_MAX_TABLES; i++) {
        f.served[i] = 1;
        f.st[i] = (srv_table_stats){.rows = 8, .map = m, .map_len = (size_t)ps * 8};
    }

    int scrapes = 0;
    /* Bounded: at most 5000 scrapes, at least 20 even when the workers are quick. */
    while (scrapes < 5000 && (scrapes < 20 || atomic_load(&done) < 2)) {
        char *t = render(&f);
        check_histogram(t);
        free(t);
        scrapes++;
    }
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    cr_log_info("%d scrapes raced the updates", scrapes);

    char *t = render(&f);
    check_histogram(t);
    expect_line(t, "embd_rows_scanned_total{table=\"shared\"} 600000");
    cr_expect_eq(count_prefix(t, "embd_table_rows{"), SRV_METRICS_MAX_TABLES);
    free(t);
    munmap(m, (size_t)ps * 8);
}

/* ---- promtool --------------------------------------------------------------------------- */

/* The helper script next to this file: $EMBD_PROMTOOL_SH, else EMBD_SOURCE_DIR when the build
 * defines it, else the directory of __FILE__ (relative to where the compiler ran). */
static void promtool_script(char *out, size_t cap)
{
    const char *env = getenv("EMBD_PROMTOOL_SH");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return;
    }
#ifdef EMBD_SOURCE_DIR
    snprintf(out, cap, "%s/tests/server/promtool.sh", EMBD_SOURCE_DIR);
#else
    const char *file = __FILE__;
    const char *slash = strrchr(file, '/');
    if (slash)
        snprintf(out, cap, "%.*s/promtool.sh", (int)(slash - file), file);
    else
        snprintf(out, cap, "promtool.sh");
#endif
}

/* s in single quotes for sh. */
static void shell_quote(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    if (cap < 3)
        return;
    out[n++] = '\'';
    for (; *s && n + 6 < cap; s++) {
        if (*s == '\'') {
            memcpy(out + n, "'\\''", 4);
            n += 4;
        } else {
            out[n++] = *s;
        }
    }
    out[n++] = '\'';
    out[n] = '\0';
}

/* Runs cmd; stdout and stderr together into out. Returns the exit status, or -1. */
static int run(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = 0;
    int c;
    while ((c = fgetc(p)) != EOF)
        if (n + 1 < cap)
            out[n++] = (char)c;
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(metrics, promtool_check_metrics)
{
    char script[1024], qscript[2100], cmd[8192], path[2048], out[16384];
    promtool_script(script, sizeof script);
    if (access(script, R_OK) != 0)
        cr_skip_test("promtool.sh not found at %s (set EMBD_PROMTOOL_SH)", script);
    shell_quote(qscript, sizeof qscript, script);
    /* apt's progress goes to stderr: kept in a file for the skip message. */
    char errf[] = "/tmp/embd-promtool-err-XXXXXX";
    int efd = mkstemp(errf);
    cr_assert_geq(efd, 0);
    close(efd);
    char qerr[200];
    shell_quote(qerr, sizeof qerr, errf);
    snprintf(cmd, sizeof cmd, "sh %s 2>%s", qscript, qerr);
    int got = run(cmd, path, sizeof path) == 0 && path[0];
    if (!got) {
        snprintf(cmd, sizeof cmd, "tail -n 1 %s", qerr);
        run(cmd, out, sizeof out);
    }
    unlink(errf);
    if (!got)
        cr_skip_test("promtool could not be obtained: %s", out[0] ? out : "no reason given\n");
    path[strcspn(path, "\n")] = '\0';

    char qpath[4200];
    shell_quote(qpath, sizeof qpath, path);
    snprintf(cmd, sizeof cmd, "%s --version 2>&1", qpath);
    char version[1024];
    run(cmd, version, sizeof version);
    version[strcspn(version, "\n")] = '\0';
    cr_log_info("%s", version);

    /* A page with every family populated, odd names included. */
    srv_metrics_init("0.1.0-test", "avx2");
    long ps = sysconf(_SC_PAGESIZE);
    unsigned char *m =
        mmap(NULL, (size_t)ps * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    m[0] = 1;
    int a = srv_metrics_table("words");
    int b = srv_metrics_table("odd \"name\" with \\ and\nnewline");
    fake_tables f = {0};
    f.served[a] = f.served[b] = 1;
    f.st[a] = (srv_table_stats){.rows = 10, .map = m, .map_len = (size_t)ps * 2};
    f.st[b] = (srv_table_stats){.rows = 0, .map = NULL, .map_len = 0};
    for (int r = 0; r < SRV_ROUTE_COUNT; r++)
        srv_metrics_request((srv_route)r, r % 2 ? "POST" : "GET", r == 3 ? 999 : 200,
                            0.0001 * (r + 1));
    srv_metrics_request(SRV_ROUTE_OTHER, "PROPFIND", 405, 0.5);
    srv_metrics_rows_gathered(a, 3);
    srv_metrics_rows_scanned(b, 30);
    srv_metrics_search(a, 1);
    srv_metrics_in_flight_add(1);
    srv_metrics_queue_depth_set(1, 8, 2);
    srv_metrics_reload(0);
    char *t = render(&f);

    char file[] = "/tmp/embd-metrics-XXXXXX";
    int fd = mkstemp(file);
    cr_assert_geq(fd, 0);
    size_t len = strlen(t);
    cr_assert_eq(write(fd, t, len), (ssize_t)len);
    close(fd);
    char qfile[200];
    shell_quote(qfile, sizeof qfile, file);
    snprintf(cmd, sizeof cmd, "%s check metrics < %s 2>&1", qpath, qfile);
    int rc = run(cmd, out, sizeof out);
    cr_expect_eq(rc, 0, "promtool exited %d:\n%s", rc, out);
    /* promtool prints nothing for a clean page; any line is a lint finding. */
    cr_expect_str_empty(out, "promtool says:\n%s", out);
    if (rc == 0 && !out[0]) {
        cr_log_info("promtool check metrics: no problems in %zu bytes", len);
        unlink(file);
    } else {
        cr_log_info("page kept at %s", file);
    }
    free(t);
    munmap(m, (size_t)ps * 2);
}
