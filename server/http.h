/*
 * http.h - the libmicrohttpd side of one event loop: the access handler, request state,
 * suspension while a worker runs, deadlines, and turning srv_reply into MHD responses.
 * Knows MHD, not libuv: bridge.c drives it (MHD_run on readiness and timeouts).
 */
#ifndef SRV_HTTP_H
#define SRV_HTTP_H

#include <stdatomic.h>
#include <stdint.h>

#include "api.h"
#include "pool.h"
#include "srv.h"

struct MHD_Daemon;
typedef struct srv_request srv_request;
typedef struct srv_conn srv_conn;

typedef struct srv_http {
    const srv_config *cfg;
    struct MHD_Daemon *daemon;
    srv_done_queue done;    /* finished jobs of this loop */
    srv_request *suspended; /* doubly linked: requests waiting for a worker */
    srv_conn *conns;        /* doubly linked: every open connection of this loop */
    unsigned n_conns;       /* open connections (tracked ones) */
    unsigned conns_peak;    /* most open at once since the last heap trim */
    unsigned in_flight;     /* requests between first byte and completion */
    unsigned jobs_out;      /* jobs submitted and not yet drained back */
    uint64_t buffered;      /* bytes of request-body buffers held (--max-buffered) */
    uint64_t next_id;       /* request id counter */
    unsigned index;         /* loop number */
} srv_http;

/* Set when shutdown begins: /readyz answers 503 and new work gets 503. Any thread. */
extern atomic_int srv_draining;

/* Starts the MHD daemon of h on listen_fd (external epoll, suspend/resume, timeouts, limits).
 * wake(ctx) is called by workers when a job of this loop finishes. Returns 0 or -1 (logged). */
int srv_http_start(srv_http *h, int listen_fd, void (*wake)(void *), void *ctx);
/* Resumes the connections whose jobs finished (loop thread, from the async callback). */
void srv_http_drain_done(srv_http *h);
/* Answers 503 to suspended requests past their deadline, drops the work of suspended requests
 * whose client has closed, closes connections whose request has not arrived in full --timeout
 * seconds after it began, and gives the heap back after a burst of connections has closed
 * (loop thread, from a timer). */
void srv_http_check_deadlines(srv_http *h);
/* Shutdown: answers every suspended request with 503 (their jobs finish and are dropped). */
void srv_http_cancel_all(srv_http *h);
/* Jobs still running on workers for this loop (they must come back before the daemon stops). */
unsigned srv_http_jobs_out(const srv_http *h);
void srv_http_stop(srv_http *h);

/* Routes a URL path (still percent-encoded, without the query string) by splitting it into
 * segments and decoding each in place: path is modified, and api->table and api->item point
 * into it. Sets *route (SRV_ROUTE_OTHER when nothing matches). Returns 0, or -1 for a malformed
 * escape or a path not starting with '/'. Touches no MHD state and no table (the fuzzers call
 * it directly). */
int srv_http_route(char *path, srv_route *route, srv_api_request *api);
/* Whether an Accept header value lists application/octet-stream with a q above 0 (NULL: no). */
int srv_http_accepts_binary(const char *accept);

#endif
