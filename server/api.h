/*
 * api.h - the HTTP/JSON API of embd serve, independent of libmicrohttpd and libuv.
 *
 * http.c routes a request, collects its body and calls srv_api_handle on the loop thread.
 * Cheap requests are answered there; requests that scan or encode much come back as a job for
 * the worker pool, whose run() fills job->reply without touching jansson.
 */
#ifndef SRV_API_H
#define SRV_API_H

#include <stdatomic.h>

#include "metrics.h"
#include "pool.h"
#include "srv.h"

typedef struct srv_api_request {
    srv_route route;
    const char *method;
    const char *table; /* path segment, percent-decoded; NULL when the route has none */
    size_t table_len;
    const char *item; /* id or key segment, percent-decoded */
    size_t item_len;
    const char *encoding, *dtype; /* query arguments, NULL when absent */
    int accept_binary;            /* Accept: application/octet-stream */
    const char *body;
    size_t body_len;
    const char *content_type;
} srv_api_request;

typedef struct srv_api_job {
    srv_job base;
    srv_reply reply;
    atomic_int canceled; /* the request gave up (deadline, shutdown): drop the reply */
    void *owner;         /* the http request waiting for it */
    void *work;          /* private to api.c */
    /* When n_parts > 0 the job is split: submit parts (all or none) instead of the job; the
     * last part to finish hands the job itself back to base.done. */
    srv_job **parts;
    uint32_t n_parts;
} srv_api_job;

/* Handles r. Returns 0 with *reply filled, or 1 with *job set (run it on a worker; its reply
 * is the answer). Loop thread. */
int srv_api_handle(const srv_config *cfg, const srv_api_request *r, srv_reply *reply,
                   srv_api_job **job);
/* Frees a job (its reply too unless moved out) and drops its table reference. */
void srv_api_job_free(srv_api_job *j);

/* Frees a worker thread's search scratch; the pool calls it as each worker exits. */
void srv_api_thread_exit(void);

#endif
