/*
 * metrics.c - the server's Prometheus registry: fixed arrays of relaxed C11 atomics, rendered
 * in the text format (version 0.0.4).
 *
 * Every series the server can produce is known in advance: routes x methods x status codes for
 * the request counter, routes x buckets for the latency histogram, SRV_METRICS_MAX_TABLES table
 * slots. So the registry is one static struct of atomics with no allocation and no lock on the
 * update path: a worker bumps a counter with one relaxed fetch_add. Relaxed is enough because
 * nothing is inferred from the order of two different counters; a scrape is a snapshot of each
 * counter on its own, which is what Prometheus expects.
 *
 * Histograms keep per-bucket (non-cumulative) counts and a nanosecond sum. The renderer adds the
 * buckets up as it reads them, so the cumulative buckets it prints are monotonic and _count
 * always equals the +Inf bucket even while observations arrive; only _sum may lag or lead the
 * buckets by the observations in flight. Rejected: a separate _count atomic (it could disagree
 * with the buckets in a scrape) and a double sum (no portable atomic add on doubles, and a CAS
 * loop on the hot path for nothing: nanoseconds in a uint64 last 584 years).
 *
 * Table names are the one piece of state that is not an atomic counter. A slot's name is written
 * once, before the slot count is published with a release store; readers load the count with
 * acquire and only read names below it, and names never change or move afterwards. Registration
 * itself (rare: start-up and reload) takes a mutex so that two threads registering the same name
 * cannot create two slots; the update and render paths never take it.
 *
 * Invariants: the update functions never allocate, block or fail; srv_metrics_render only reads
 * the registry, so scrapes may run on several loop threads at once; a series, once printed, is
 * printed in every later scrape (counters never go back to "absent").
 */
#include "metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---- label sets ------------------------------------------------------------------------- */

static const char *const route_names[SRV_ROUTE_COUNT] = {
    [SRV_ROUTE_HEALTHZ] = "/healthz",
    [SRV_ROUTE_READYZ] = "/readyz",
    [SRV_ROUTE_METRICS] = "/metrics",
    [SRV_ROUTE_OPENAPI] = "/openapi.yaml",
    [SRV_ROUTE_TABLES] = "/v1/tables",
    [SRV_ROUTE_TABLE] = "/v1/tables/{table}",
    [SRV_ROUTE_ROW] = "/v1/tables/{table}/rows/{id}",
    [SRV_ROUTE_KEY] = "/v1/tables/{table}/keys/{key}",
    [SRV_ROUTE_GATHER] = "/v1/tables/{table}/gather",
    [SRV_ROUTE_SEARCH] = "/v1/tables/{table}/search",
    [SRV_ROUTE_RELOAD] = "/v1/admin/reload",
    [SRV_ROUTE_OTHER] = "other",
};

/* The last entry, "OTHER", counts every method not listed before it. */
static const char *const method_names[] = {"GET",    "HEAD",  "POST",    "PUT",
                                           "DELETE", "PATCH", "OPTIONS", "OTHER"};
#define N_METHODS (sizeof method_names / sizeof method_names[0])

/* The statuses the server sends; anything else is counted under status="other". */
static const unsigned status_codes[] = {200, 204, 304, 400, 401, 404, 405,
                                        408, 413, 415, 422, 431, 500, 503};
#define N_CODES  (sizeof status_codes / sizeof status_codes[0])
#define N_STATUS (N_CODES + 1)

/* Upper bounds (le) of the finite buckets, in nanoseconds and as printed; then +Inf. */
static const uint64_t bucket_ns[] = {
    50000,     100000,     250000,     500000,     1000000,     2500000,
    5000000,   10000000,   25000000,   50000000,   100000000,   250000000,
    500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};
#define N_FINITE  (sizeof bucket_ns / sizeof bucket_ns[0])
#define N_BUCKETS (N_FINITE + 1)
static const char *const bucket_le[N_BUCKETS] = {
    "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",    "0.1",    "0.25",    "0.5",    "1",     "2.5",    "5",     "10",   "+Inf",
};

_Static_assert(sizeof bucket_le / sizeof bucket_le[0] == N_BUCKETS, "one le label per bucket");

enum { RELOAD_OK, RELOAD_ERROR, N_RELOAD };
enum { MODE_EXACT, MODE_TWO_STAGE, N_MODES };
static const char *const mode_names[N_MODES] = {"exact", "two_stage"};

/* ---- the registry ----------------------------------------------------------------------- */

typedef _Atomic uint64_t counter;

static struct {
    counter requests[SRV_ROUTE_COUNT][N_METHODS][N_STATUS];
    counter duration_bucket[SRV_ROUTE_COUNT][N_BUCKETS]; /* not cumulative */
    counter duration_sum_ns[SRV_ROUTE_COUNT];
    _Atomic int64_t in_flight;
    _Atomic uint32_t queue_depth, queue_capacity, worker_threads;

    counter rows_gathered[SRV_METRICS_MAX_TABLES];
    counter rows_scanned[SRV_METRICS_MAX_TABLES];
    counter searches[SRV_METRICS_MAX_TABLES][N_MODES];
    counter reloads[N_RELOAD];

    _Atomic int n_tables;                      /* published with release after the name */
    char *table_names[SRV_METRICS_MAX_TABLES]; /* owned; immutable once published */

    char version[64], simd[32];
    uint64_t start_ns; /* process start, Unix time in nanoseconds */
    long clk_tck, page_size;
} reg;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

#define RELAXED memory_order_relaxed

static void count(counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, RELAXED);
}

static uint64_t load(counter *c)
{
    return atomic_load_explicit(c, RELAXED);
}

/* ---- /proc readers ---------------------------------------------------------------------- */

/* What /proc/self/stat says about this process; times in clock ticks. */
typedef struct proc_stat {
    uint64_t utime, stime, starttime, vsize, rss_pages;
} proc_stat;

/* Reads /proc/self/stat. The command name (field 2) may hold spaces and parentheses, so the
 * fields are counted from the last ')'. Returns 0, or -1 when the file is missing or odd. */
static int read_proc_stat(proc_stat *out)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p++;
    /* Fields 3 (state) to 24 (rss); index 0 is field 3. */
    uint64_t field[22];
    for (int i = 0; i < 22; i++) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            return -1;
        if (i == 0) {
            field[i] = 0;
            p++; /* the state letter */
            continue;
        }
        char *end;
        /* Some fields are signed (priority, nice); the ones used here never are. */
        field[i] = strtoull(p, &end, 10);
        if (end == p)
            return -1;
        p = end;
    }
    out->utime = field[14 - 3];
    out->stime = field[15 - 3];
    out->starttime = field[22 - 3];
    out->vsize = field[23 - 3];
    out->rss_pages = field[24 - 3];
    return 0;
}

/* The boot time from the btime line of /proc/stat, in Unix seconds, or 0. */
static uint64_t boot_time(void)
{
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return 0;
    char *line = NULL;
    size_t cap = 0;
    uint64_t t = 0;
    while (getline(&line, &cap, f) > 0) {
        if (strncmp(line, "btime ", 6) == 0) {
            t = strtoull(line + 6, NULL, 10);
            break;
        }
    }
    free(line);
    fclose(f);
    return t;
}

/* Clock ticks to nanoseconds without overflow for any plausible uptime or CPU time. */
static uint64_t ticks_ns(uint64_t ticks, uint64_t hz)
{
    return ticks / hz * 1000000000u + ticks % hz * 1000000000u / hz;
}

/* Open descriptors: the entries of /proc/self/fd other than the one the listing itself uses.
 * Returns -1 when /proc is not there. */
static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int self = dirfd(d);
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (atoi(e->d_name) == self)
            continue;
        n++;
    }
    closedir(d);
    return n;
}

/* ---- the text buffer -------------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
    int oom;
} buf;

static void buf_reserve(buf *b, size_t more)
{
    if (b->oom || b->cap - b->len > more)
        return;
    size_t cap = b->cap ? b->cap : 16384;
    while (cap - b->len <= more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

__attribute__((format(printf, 2, 3))) static void buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    buf_reserve(b, (size_t)n);
    if (b->oom)
        return;
    if ((size_t)n < sizeof tmp) {
        memcpy(b->p + b->len, tmp, (size_t)n + 1);
    } else {
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

static void buf_put(buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_puts(buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

/* A label value between the quotes: backslash, double quote and newline escaped as the text
 * format requires; every other byte as is. */
static void buf_label_value(buf *b, const char *s)
{
    const char *run = s;
    for (; *s; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;
        if (!esc)
            continue;
        buf_put(b, run, (size_t)(s - run));
        buf_puts(b, esc);
        run = s + 1;
    }
    buf_put(b, run, (size_t)(s - run));
}

/* A nanosecond quantity as decimal seconds, exactly, without trailing zeros ("0.00015", "2"). */
static void buf_seconds(buf *b, uint64_t ns)
{
    uint64_t frac = ns % 1000000000u;
    if (frac == 0) {
        buf_printf(b, "%" PRIu64, ns / 1000000000u);
        return;
    }
    char digits[10];
    snprintf(digits, sizeof digits, "%09" PRIu64, frac);
    int n = 9;
    while (digits[n - 1] == '0')
        n--;
    buf_printf(b, "%" PRIu64 ".%.*s", ns / 1000000000u, n, digits);
}

/* The # HELP and # TYPE lines of one family. */
static void family(buf *b, const char *name, const char *type, const char *help)
{
    buf_printf(b, "# HELP embd_%s %s\n# TYPE embd_%s %s\n", name, help, name, type);
}

/* name{label="value"} v, for the per-table families. */
static void table_sample(buf *b, const char *name, const char *table, uint64_t v)
{
    buf_printf(b, "embd_%s{table=\"", name);
    buf_label_value(b, table);
    buf_printf(b, "\"} %" PRIu64 "\n", v);
}

/* ---- mincore ---------------------------------------------------------------------------- */

/* Pages asked of mincore per call: bounds the vector to 64 KiB whatever the mapping's size. */
#define MINCORE_CHUNK 65536

/* Bytes of [map, map + len) that are resident, counting partial first and last pages only for
 * the part inside the range. vec holds MINCORE_CHUNK entries. Returns 0, or -1 when mincore
 * fails (the range is not mapped). */
static int resident_bytes(const void *map, size_t len, long page_size, unsigned char *vec,
                          uint64_t *out)
{
    uintptr_t ps = (uintptr_t)page_size;
    uintptr_t lo = (uintptr_t)map, hi = lo + len;
    uintptr_t start = lo & ~(ps - 1);
    size_t pages = (size_t)((hi - start + ps - 1) / ps);
    uint64_t bytes = 0;
    for (size_t done = 0; done < pages;) {
        size_t n = pages - done < MINCORE_CHUNK ? pages - done : MINCORE_CHUNK;
        uintptr_t base = start + done * ps;
        if (mincore((void *)base, n * ps, vec) != 0)
            return -1;
        for (size_t i = 0; i < n; i++) {
            if (!(vec[i] & 1))
                continue;
            uintptr_t p0 = base + i * ps, p1 = p0 + ps;
            bytes += (p1 < hi ? p1 : hi) - (p0 > lo ? p0 : lo);
        }
        done += n;
    }
    *out = bytes;
    return 0;
}

/* ---- the public API --------------------------------------------------------------------- */

const char *srv_route_name(srv_route r)
{
    if ((unsigned)r >= SRV_ROUTE_COUNT)
        r = SRV_ROUTE_OTHER;
    return route_names[r];
}

static void copy_label(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

void srv_metrics_init(const char *version, const char *simd)
{
    /* A second call (a test, or a restart in the same process) starts from zero. */
    for (int i = 0; i < SRV_METRICS_MAX_TABLES; i++) {
        free(reg.table_names[i]);
        reg.table_names[i] = NULL;
    }
    memset(&reg, 0, sizeof reg); /* no other thread runs yet */
    copy_label(reg.version, sizeof reg.version, version);
    copy_label(reg.simd, sizeof reg.simd, simd);

    reg.clk_tck = sysconf(_SC_CLK_TCK);
    if (reg.clk_tck <= 0)
        reg.clk_tck = 100;
    reg.page_size = sysconf(_SC_PAGESIZE);
    if (reg.page_size <= 0)
        reg.page_size = 4096;

    /* Boot time plus the start tick, as the kernel sees it; else the wall clock now. */
    proc_stat ps;
    uint64_t btime = boot_time();
    if (btime && read_proc_stat(&ps) == 0) {
        reg.start_ns = btime * 1000000000u + ticks_ns(ps.starttime, (uint64_t)reg.clk_tck);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        reg.start_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
}

static size_t method_index(const char *method)
{
    for (size_t i = 0; method && i < N_METHODS - 1; i++)
        if (strcmp(method, method_names[i]) == 0)
            return i;
    return N_METHODS - 1;
}

static size_t status_index(unsigned status)
{
    for (size_t i = 0; i < N_CODES; i++)
        if (status_codes[i] == status)
            return i;
    return N_CODES;
}

void srv_metrics_request(srv_route r, const char *method, unsigned status, double seconds)
{
    if ((unsigned)r >= SRV_ROUTE_COUNT)
        r = SRV_ROUTE_OTHER;
    count(&reg.requests[r][method_index(method)][status_index(status)], 1);

    /* NaN and negative durations (a clock step) count as 0; absurd ones are clamped. */
    uint64_t ns = 0;
    if (seconds > 0)
        ns = seconds < 1e9 ? (uint64_t)(seconds * 1e9 + 0.5) : (uint64_t)1e18;
    size_t b = 0;
    while (b < N_FINITE && ns > bucket_ns[b])
        b++;
    count(&reg.duration_bucket[r][b], 1);
    count(&reg.duration_sum_ns[r], ns);
}

void srv_metrics_in_flight_add(int delta)
{
    atomic_fetch_add_explicit(&reg.in_flight, delta, RELAXED);
}

void srv_metrics_queue_depth_set(uint32_t depth, uint32_t capacity, uint32_t threads)
{
    atomic_store_explicit(&reg.queue_depth, depth, RELAXED);
    atomic_store_explicit(&reg.queue_capacity, capacity, RELAXED);
    atomic_store_explicit(&reg.worker_threads, threads, RELAXED);
}

int srv_metrics_table(const char *name)
{
    if (!name)
        return -1;
    pthread_mutex_lock(&table_lock);
    int n = atomic_load_explicit(&reg.n_tables, RELAXED); /* only changed under the lock */
    int slot = -1;
    for (int i = 0; i < n; i++) {
        if (strcmp(reg.table_names[i], name) == 0) {
            slot = i;
            break;
        }
    }
    if (slot < 0 && n < SRV_METRICS_MAX_TABLES) {
        char *copy = strdup(name);
        if (copy) {
            reg.table_names[n] = copy;
            atomic_store_explicit(&reg.n_tables, n + 1, memory_order_release);
            slot = n;
        }
    }
    pthread_mutex_unlock(&table_lock);
    return slot;
}

static int valid_slot(int table)
{
    return table >= 0 && table < SRV_METRICS_MAX_TABLES;
}

void srv_metrics_rows_gathered(int table, uint64_t n)
{
    if (valid_slot(table))
        count(&reg.rows_gathered[table], n);
}

void srv_metrics_rows_scanned(int table, uint64_t n)
{
    if (valid_slot(table))
        count(&reg.rows_scanned[table], n);
}

void srv_metrics_search(int table, int two_stage)
{
    if (valid_slot(table))
        count(&reg.searches[table][two_stage ? MODE_TWO_STAGE : MODE_EXACT], 1);
}

void srv_metrics_reload(int ok)
{
    count(&reg.reloads[ok ? RELOAD_OK : RELOAD_ERROR], 1);
}

/* ---- rendering -------------------------------------------------------------------------- */

static void render_http(buf *b)
{
    family(b, "http_requests_total", "counter", "HTTP requests answered, by route template.");
    /* Only the combinations seen so far: most of routes x methods x statuses never happen. */
    for (int r = 0; r < SRV_ROUTE_COUNT; r++) {
        for (size_t m = 0; m < N_METHODS; m++) {
            for (size_t s = 0; s < N_STATUS; s++) {
                uint64_t v = load(&reg.requests[r][m][s]);
                if (!v)
                    continue;
                buf_puts(b, "embd_http_requests_total{route=\"");
                buf_label_value(b, route_names[r]);
                if (s < N_CODES)
                    buf_printf(b, "\",method=\"%s\",status=\"%u\"} %" PRIu64 "\n", method_names[m],
                               status_codes[s], v);
                else
                    buf_printf(b, "\",method=\"%s\",status=\"other\"} %" PRIu64 "\n",
                               method_names[m], v);
            }
        }
    }

    family(b, "http_request_duration_seconds", "histogram",
           "Time from the first byte of a request to its queued response.");
    /* Every route, zeros included: the label set is small and known. */
    for (int r = 0; r < SRV_ROUTE_COUNT; r++) {
        uint64_t cum = 0;
        for (size_t i = 0; i < N_BUCKETS; i++) {
            cum += load(&reg.duration_bucket[r][i]);
            buf_puts(b, "embd_http_request_duration_seconds_bucket{route=\"");
            buf_label_value(b, route_names[r]);
            buf_printf(b, "\",le=\"%s\"} %" PRIu64 "\n", bucket_le[i], cum);
        }
        buf_puts(b, "embd_http_request_duration_seconds_sum{route=\"");
        buf_label_value(b, route_names[r]);
        buf_puts(b, "\"} ");
        buf_seconds(b, load(&reg.duration_sum_ns[r]));
        buf_puts(b, "\nembd_http_request_duration_seconds_count{route=\"");
        buf_label_value(b, route_names[r]);
        buf_printf(b, "\"} %" PRIu64 "\n", cum);
    }

    family(b, "http_requests_in_flight", "gauge", "Requests received and not yet answered.");
    buf_printf(b, "embd_http_requests_in_flight %" PRId64 "\n",
               atomic_load_explicit(&reg.in_flight, RELAXED));
}

static void render_workers(buf *b)
{
    family(b, "worker_queue_depth", "gauge", "Jobs waiting for a worker thread.");
    buf_printf(b, "embd_worker_queue_depth %" PRIu32 "\n",
               atomic_load_explicit(&reg.queue_depth, RELAXED));
    family(b, "worker_queue_capacity", "gauge", "Jobs the worker queue holds before 503.");
    buf_printf(b, "embd_worker_queue_capacity %" PRIu32 "\n",
               atomic_load_explicit(&reg.queue_capacity, RELAXED));
    family(b, "worker_threads", "gauge", "Worker threads.");
    buf_printf(b, "embd_worker_threads %" PRIu32 "\n",
               atomic_load_explicit(&reg.worker_threads, RELAXED));
}

/* Per-table state read once per scrape, so every family sees the same answer. */
typedef struct table_snap {
    int served, resident_ok;
    srv_table_stats st;
    uint64_t resident;
} table_snap;

static void render_tables(buf *b, int n, const table_snap *snap)
{
    family(b, "rows_gathered_total", "counter", "Rows returned by gather, row and key lookups.");
    for (int i = 0; i < n; i++)
        table_sample(b, "rows_gathered_total", reg.table_names[i], load(&reg.rows_gathered[i]));
    family(b, "rows_scanned_total", "counter", "Rows scored by searches.");
    for (int i = 0; i < n; i++)
        table_sample(b, "rows_scanned_total", reg.table_names[i], load(&reg.rows_scanned[i]));
    family(b, "searches_total", "counter", "Searches run, by mode (exact or two_stage).");
    for (int i = 0; i < n; i++) {
        for (int m = 0; m < N_MODES; m++) {
            buf_puts(b, "embd_searches_total{table=\"");
            buf_label_value(b, reg.table_names[i]);
            buf_printf(b, "\",mode=\"%s\"} %" PRIu64 "\n", mode_names[m],
                       load(&reg.searches[i][m]));
        }
    }

    family(b, "table_rows", "gauge", "Rows in the store being served.");
    for (int i = 0; i < n; i++)
        if (snap[i].served)
            table_sample(b, "table_rows", reg.table_names[i], snap[i].st.rows);
    family(b, "table_bytes_mapped", "gauge", "Bytes of the store's memory mapping.");
    for (int i = 0; i < n; i++)
        if (snap[i].served)
            table_sample(b, "table_bytes_mapped", reg.table_names[i], snap[i].st.map_len);
    family(b, "table_bytes_resident", "gauge",
           "Bytes of the store's mapping resident in the page cache (mincore at scrape time).");
    for (int i = 0; i < n; i++)
        if (snap[i].served && snap[i].resident_ok)
            table_sample(b, "table_bytes_resident", reg.table_names[i], snap[i].resident);
}

static void render_process(buf *b)
{
    proc_stat ps;
    if (read_proc_stat(&ps) == 0) {
        family(b, "process_cpu_seconds_total", "counter", "User and system CPU time spent.");
        buf_puts(b, "embd_process_cpu_seconds_total ");
        buf_seconds(b, ticks_ns(ps.utime + ps.stime, (uint64_t)reg.clk_tck));
        buf_puts(b, "\n");
        family(b, "process_resident_memory_bytes", "gauge", "Resident memory size.");
        buf_printf(b, "embd_process_resident_memory_bytes %" PRIu64 "\n",
                   ps.rss_pages * (uint64_t)reg.page_size);
        family(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size.");
        buf_printf(b, "embd_process_virtual_memory_bytes %" PRIu64 "\n", ps.vsize);
    }
    long fds = open_fds();
    if (fds >= 0) {
        family(b, "process_open_fds", "gauge", "Open file descriptors.");
        buf_printf(b, "embd_process_open_fds %ld\n", fds);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        family(b, "process_max_fds", "gauge", "Limit on open file descriptors (RLIMIT_NOFILE).");
        buf_printf(b, "embd_process_max_fds %" PRIu64 "\n", (uint64_t)rl.rlim_cur);
    }
    family(b, "process_start_time_seconds", "gauge", "Start time of the process, Unix seconds.");
    buf_puts(b, "embd_process_start_time_seconds ");
    buf_seconds(b, reg.start_ns);
    buf_puts(b, "\n");
}

char *srv_metrics_render(size_t *len, int (*table_stats)(int slot, srv_table_stats *out, void *ctx),
                         void *ctx)
{
    buf b = {0};
    int n = atomic_load_explicit(&reg.n_tables, memory_order_acquire);
    table_snap snap[SRV_METRICS_MAX_TABLES];
    unsigned char *vec = NULL;
    for (int i = 0; i < n; i++) {
        table_snap *t = &snap[i];
        memset(t, 0, sizeof *t);
        if (!table_stats || table_stats(i, &t->st, ctx) != 0)
            continue;
        t->served = 1;
        if (!t->st.map || !t->st.map_len) {
            t->resident_ok = 1;
            continue;
        }
        if (!vec && !(vec = malloc(MINCORE_CHUNK)))
            return NULL; /* a scrape is whole or an error, never silently short of a series */
        t->resident_ok =
            resident_bytes(t->st.map, t->st.map_len, reg.page_size, vec, &t->resident) == 0;
    }
    free(vec);

    buf_reserve(&b, 0);
    render_http(&b);
    render_workers(&b);
    render_tables(&b, n, snap);
    family(&b, "reloads_total", "counter", "Table reloads, by result (ok or error).");
    buf_printf(&b, "embd_reloads_total{result=\"ok\"} %" PRIu64 "\n",
               load(&reg.reloads[RELOAD_OK]));
    buf_printf(&b, "embd_reloads_total{result=\"error\"} %" PRIu64 "\n",
               load(&reg.reloads[RELOAD_ERROR]));
    render_process(&b);
    family(&b, "build_info", "gauge", "Build version and the SIMD level in use; always 1.");
    buf_puts(&b, "embd_build_info{version=\"");
    buf_label_value(&b, reg.version);
    buf_puts(&b, "\",simd=\"");
    buf_label_value(&b, reg.simd);
    buf_puts(&b, "\"} 1\n");

    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}
