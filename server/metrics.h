/*
 * metrics.h - the server's Prometheus metrics: counters, gauges and histograms updated from any
 * thread with relaxed atomics, rendered in the Prometheus text format (version 0.0.4) by the
 * loop thread for GET /metrics.
 *
 * Families (all prefixed embd_): http_requests_total{route,method,status}, http_request_duration
 * _seconds{route} histogram (buckets from 50 us to 10 s, sub-millisecond ones included),
 * http_requests_in_flight, worker_queue_depth, worker_queue_capacity, worker_threads,
 * rows_gathered_total{table}, rows_scanned_total{table}, searches_total{table,mode},
 * table_rows{table}, table_bytes_mapped{table}, table_bytes_resident{table} (mincore of the
 * mapping at scrape time), reloads_total{result}, process_* (cpu_seconds_total,
 * resident_memory_bytes, virtual_memory_bytes, open_fds, max_fds, start_time_seconds),
 * build_info{version,simd} 1. Labels are low-cardinality: routes are templates
 * ("/v1/tables/{table}/rows/{id}"), never ids or keys.
 */
#ifndef SRV_METRICS_H
#define SRV_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Route templates, the label values of route=. */
typedef enum srv_route {
    SRV_ROUTE_HEALTHZ,
    SRV_ROUTE_READYZ,
    SRV_ROUTE_METRICS,
    SRV_ROUTE_OPENAPI,
    SRV_ROUTE_TABLES,
    SRV_ROUTE_TABLE,
    SRV_ROUTE_ROW,
    SRV_ROUTE_KEY,
    SRV_ROUTE_GATHER,
    SRV_ROUTE_SEARCH,
    SRV_ROUTE_RELOAD,
    SRV_ROUTE_OTHER, /* unknown paths (404) */
    SRV_ROUTE_COUNT,
} srv_route;

/* "/healthz", "/v1/tables/{table}/rows/{id}", ... */
const char *srv_route_name(srv_route r);

/* Prepares the registry: version and SIMD level for build_info, the process start time.
 * Call once from the main thread before any other thread starts. */
void srv_metrics_init(const char *version, const char *simd);

/* One finished request: method is "GET", "POST", ... (others counted as "OTHER"), status the
 * HTTP status sent, seconds from the first byte of the request to the queued response. */
void srv_metrics_request(srv_route r, const char *method, unsigned status, double seconds);

void srv_metrics_in_flight_add(int delta);
void srv_metrics_queue_depth_set(uint32_t depth, uint32_t capacity, uint32_t threads);

/* Tables: up to SRV_METRICS_MAX_TABLES names, registered on start and on reload; counters stay
 * with the name across reloads. Returns a slot index, or -1 when full. */
#define SRV_METRICS_MAX_TABLES 64
int srv_metrics_table(const char *name);
void srv_metrics_rows_gathered(int table, uint64_t n);
void srv_metrics_rows_scanned(int table, uint64_t n);
void srv_metrics_search(int table, int two_stage);
void srv_metrics_reload(int ok);

/* What a scrape reports per table: filled by the caller's callback for each registered table. */
typedef struct srv_table_stats {
    uint64_t rows;
    const void *map; /* the mapping, for mincore */
    size_t map_len;
} srv_table_stats;

/* Renders every family into a malloc'd buffer (*len bytes, NUL-terminated). table_stats(i, out,
 * ctx) returns 0 and fills out for a table slot that is currently served, else -1 (then the
 * table's gauges are omitted). Returns NULL when out of memory. Loop thread only. */
char *srv_metrics_render(size_t *len, int (*table_stats)(int slot, srv_table_stats *out, void *ctx),
                         void *ctx);

#endif
