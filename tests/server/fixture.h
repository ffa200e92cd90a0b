/*
 * fixture.h - starts the real `embd serve` on an ephemeral loopback port and talks to it with
 * libcurl. Every exchange is appended to the JSON Lines file named by $EMBD_EXCHANGES (when
 * set) for the OpenAPI contract check (tests/contract/validate.mjs).
 */
#ifndef EMB_TEST_FIXTURE_H
#define EMB_TEST_FIXTURE_H

#include <stddef.h>
#include <sys/types.h>

typedef struct th_server {
    pid_t pid;
    int port;
    char log_path[512];
    char base[64]; /* "http://127.0.0.1:PORT" */
} th_server;

/* Monotonic seconds, and a sleep: for bounded waits (never for timing assertions). */
double th_now_s(void);
void th_sleep_ms(int ms);

/* Packs the demo table (embd gen --kind demo + pack f16+q1) once per process; returns its
 * path (in th_tmpdir()). */
const char *th_demo_store(void);

/* Starts embd serve with extra arguments (NULL-terminated) followed by the stores; waits until
 * it logs "listening" (at most 20 s). Aborts the test on failure. */
void th_server_start(th_server *s, const char *const *args);

/* 1 when $EMBD_TEST_SERVER_BIN runs the suite against another build of the server (the
 * ThreadSanitizer step): its memory and speed are not the release build's, so checks of
 * resource bounds (RSS, descriptors held under load) only log there. */
int th_server_foreign(void);

/* Sends sig and waits (at most 30 s) for the exit; returns the exit status, or -1 when killed
 * by a signal, or -2 on timeout (the process is then killed). */
int th_server_stop(th_server *s, int sig);

typedef struct th_response {
    long status;
    char *body;
    size_t len;
    char content_type[128];
    char request_id[96];
    char etag[64];
    char retry_after[16];
    char allow[64];
    char missing[256];
    char fault_fired[4]; /* X-Embd-Fault-Fired (fault-injection builds, lib/emb_fault.h) */
} th_response;

/* One request: method "GET"/"POST"/..., path like "/v1/tables", body (NULL for none) with
 * Content-Type application/json unless extra headers (NULL-terminated "Name: value" list) say
 * otherwise. Fills r (free with th_response_free). Returns 0, or the curl error code. */
int th_request(const th_server *s, const char *method, const char *path, const char *body,
               const char *const *headers, th_response *r);
void th_response_free(th_response *r);

/* Sends raw bytes on a new TCP connection and reads the answer until the server closes or
 * timeout_ms passes; returns the bytes read (malloc'd, NUL-terminated) and *len. */
char *th_raw(const th_server *s, const char *data, size_t len, int timeout_ms, size_t *out_len);

/* A growable, NUL-terminated byte buffer for curl bodies; free p when done. */
typedef struct th_buf {
    char *p;
    size_t len;
} th_buf;

/* CURLOPT_WRITEFUNCTION appending to the th_buf given as CURLOPT_WRITEDATA. */
size_t th_curl_body(char *data, size_t size, size_t n, void *ud);

/* The VmRSS of the server process in kB (from /proc), or -1. */
long th_server_rss_kb(const th_server *s);

/* The server process's open file descriptors (entries of /proc/PID/fd), or -1. */
int th_server_fd_count(const th_server *s);

/* 1 while the server process runs; 0 once it has exited (it is then reaped and s->pid is 0). */
int th_server_alive(th_server *s);

/* Occurrences of needle in the server's log (stdout and stderr) so far. */
int th_server_log_count(const th_server *s, const char *needle);

/* ---- raw connections: what a client library would not send (slow, half-closed, malformed,
 * many at once). Every wait is bounded by the caller's timeout. ---- */

/* A blocking TCP connection to the server; aborts the test when connect fails. */
int th_connect(const th_server *s);

/* A non-blocking connection whose connect may still be in progress (for many at once); returns
 * the fd or -errno. */
int th_connect_nb(const th_server *s);

/* Sends all len bytes (waiting at most timeout_ms on a non-blocking fd); returns 0, or -errno
 * (-EPIPE, -ECONNRESET: the server closed; -ETIMEDOUT). */
int th_send(int fd, const void *data, size_t len, int timeout_ms);

typedef struct th_raw_result {
    char *data; /* malloc'd, NUL-terminated */
    size_t len;
    int closed; /* the server closed the connection (EOF) or reset it */
} th_raw_result;

/* Reads from fd until the server closes it, timeout_ms passes, or (responses > 0) that many
 * complete responses have arrived (see th_split_responses). Free r->data. */
void th_read(int fd, int timeout_ms, int responses, th_raw_result *r);

/* One HTTP/1.1 response inside a th_raw_result (pointers into its data). */
typedef struct th_http_msg {
    int status;
    const char *head; /* status line and headers, without the blank line */
    size_t head_len;
    const char *body;
    size_t body_len;
} th_http_msg;

/* Splits data into complete responses framed by Content-Length (a response without one ends
 * the split); fills at most cap of out (out NULL: only counts) and returns how many. */
int th_split_responses(const char *data, size_t len, th_http_msg *out, int cap);

/* Copies the value of header name (any case) of m into out; returns 1 when present. */
int th_msg_header(const th_http_msg *m, const char *name, char *out, size_t cap);

#endif
