/*
 * srv.h - types shared by the parts of `embd serve`.
 *
 * Threads: N loop threads (libuv loop + libmicrohttpd daemon each; only they call MHD_* and
 * jansson) and a pool of worker threads that scan and encode. A request is parsed on its loop
 * into a srv_job, which a worker runs; the job's srv_reply goes back to the loop, which queues
 * it with MHD. Tables are shared by every thread, reference-counted, swapped on reload.
 */
#ifndef SRV_H
#define SRV_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "emb.h"

/* ---- configuration ---------------------------------------------------------------------- */

typedef struct srv_config {
    char listen_host[256];
    uint16_t listen_port;
    uint32_t threads;      /* worker threads */
    uint32_t loops;        /* event loops, each with its own MHD daemon */
    uint32_t queue;        /* worker queue capacity */
    uint64_t max_body;     /* bytes */
    uint64_t max_buffered; /* request body bytes held at once, per loop */
    uint32_t max_header;   /* bytes of request line and headers (431 above) */
    uint32_t max_batch;    /* ids, keys or vectors per request */
    uint32_t max_k;
    double timeout;           /* seconds: idle connections and request deadline */
    uint32_t max_connections; /* per loop */
    const char *api_key_file;
    char *api_key; /* loaded from api_key_file; NULL = no auth */
    int log_json;  /* 1 json, 0 text */
    int log_level; /* SRV_LOG_* */
    int access_log;
    double shutdown_delay; /* seconds readiness is 503 before the listener closes */
    char **stores;         /* STORE arguments: path, name=path or a directory */
    int n_stores;
} srv_config;

/* ---- logging ---------------------------------------------------------------------------- */

enum { SRV_LOG_DEBUG, SRV_LOG_INFO, SRV_LOG_WARN, SRV_LOG_ERROR };

void srv_log_init(int json, int level);
/* One line on stderr: a JSON object {"ts","level","msg", fields...} or "ts level msg k=v". fields
 * is a NULL-terminated list of key, value string pairs. Thread-safe (one write(2) per line). */
void srv_log(int level, const char *msg, ...) __attribute__((sentinel));

/* ---- tables ----------------------------------------------------------------------------- */

typedef struct srv_table {
    char *name, *path;
    emb_store *store;
    uint32_t oversample; /* default from the metadata, else 10 */
    int metrics_slot;
    char etag[32]; /* "\"<checksum>-<rows>\"" */
    atomic_int refs;
} srv_table;

/* Opens every configured store: a STORE that is a directory stands for each `*.emb` file in it
 * (hidden ones skipped; none is an error). cfg must outlive the tables (reload reads it).
 * Returns 0, or -1 after logging which store failed (nothing is left open then). */
int srv_tables_open(const srv_config *cfg);
/* Re-opens every store path; a store that fails keeps its old mapping. Scans the directory
 * STOREs again and adds the tables of new files. Fills the JSON body of the reload answer
 * (malloc'd) into *report, or NULL when out of memory (the log still names each table's
 * outcome). Returns the number of failures, -1 when nothing could be tried. Any thread. */
int srv_tables_reload(char **report, size_t *report_len);
/* A new reference to the table called name (len bytes), or NULL. Any thread. */
srv_table *srv_table_get(const char *name, size_t len);
/* Drops a reference; the last one unmaps. Any thread. */
void srv_table_put(srv_table *t);
/* New references to every table, in name order; *n gets the count. Caller puts each and frees
 * the array. */
srv_table **srv_tables_all(size_t *n);
void srv_tables_close(void);

/* ---- replies ---------------------------------------------------------------------------- */

typedef struct srv_reply {
    unsigned status;
    const char *content_type; /* static string */
    char *body;               /* malloc'd, owned by the reply */
    size_t len;
    char etag[32];       /* empty when none */
    char extra_name[32]; /* one extra header (Allow, Retry-After, X-Embd-Missing) */
    char *extra_value;   /* malloc'd */
} srv_reply;

/* An application/problem+json reply (RFC 9457): type is the slug of a problem type listed in
 * proto/openapi.yaml ("table-not-found" -> "urn:embd:problem:table-not-found"), which also
 * gives the title; detail is printf-style. */
void srv_reply_problem(srv_reply *r, unsigned status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void srv_reply_free(srv_reply *r);

#endif
