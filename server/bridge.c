/*
 * bridge.c - libuv drives libmicrohttpd: the one file that sees both uv.h and microhttpd.h.
 *
 * Each loop runs MHD in external-polling mode: MHD's epoll fd is watched by a uv_poll, MHD's
 * own timeout by a uv_timer, finished worker jobs arrive through a uv_async (which coalesces:
 * the callback drains every finished job), and a 100 ms tick enforces request deadlines and
 * walks the shutdown phases. Loop 0 runs on the main thread and owns the signals; loops 1..N-1
 * run on their own threads, each with its own daemon on its own SO_REUSEPORT listener.
 *
 * Shutdown (SIGTERM/SIGINT, or srv_bridge_shutdown): readiness goes 503 at once; after
 * --shutdown-delay each daemon stops accepting (MHD_quiesce_daemon); in-flight requests finish
 * (at most --timeout, then they are answered 503); every job comes back from the workers; the
 * daemon stops; the loop ends. A second signal exits at once.
 */
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "bridge.h"
#include "http.h"
#include "metrics.h"
#include "pool.h"

enum { PHASE_SERVING, PHASE_DELAY, PHASE_DRAINING, PHASE_STOPPED };

typedef struct srv_loop {
    uv_loop_t loop;
    uv_poll_t poll;
    uv_timer_t timer, tick;
    uv_async_t done_async, stop_async;
    uv_signal_t sigterm, sigint, sighup;
    srv_http http;
    int listen_fd;
    int phase;
    uint64_t phase_ms;
    pthread_t thread;
} srv_loop;

static srv_loop *loops;
static uint32_t n_loops;
static const srv_config *config;
static atomic_int signals_seen;

static void run_mhd(srv_loop *l);

static void on_mhd_timer(uv_timer_t *t)
{
    run_mhd(t->data);
}

static void run_mhd(srv_loop *l)
{
    if (!l->http.daemon)
        return;
    MHD_run(l->http.daemon);
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(l->http.daemon, &ms) == MHD_YES)
        uv_timer_start(&l->timer, on_mhd_timer, ms, 0);
    else
        uv_timer_stop(&l->timer);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    run_mhd(p->data);
}

static void wake(void *ctx)
{
    uv_async_send(ctx);
}

static void on_done(uv_async_t *a)
{
    srv_loop *l = a->data;
    srv_http_drain_done(&l->http);
    run_mhd(l); /* external polling: MHD_run after MHD_resume_connection */
}

static void close_all(srv_loop *l)
{
    uv_poll_stop(&l->poll);
    uv_close((uv_handle_t *)&l->poll, NULL);
    uv_close((uv_handle_t *)&l->timer, NULL);
    uv_close((uv_handle_t *)&l->tick, NULL);
    uv_close((uv_handle_t *)&l->done_async, NULL);
    uv_close((uv_handle_t *)&l->stop_async, NULL);
    if (l == &loops[0]) {
        uv_close((uv_handle_t *)&l->sigterm, NULL);
        uv_close((uv_handle_t *)&l->sigint, NULL);
        uv_close((uv_handle_t *)&l->sighup, NULL);
    }
}

static void on_tick(uv_timer_t *t)
{
    srv_loop *l = t->data;
    srv_http_check_deadlines(&l->http);
    srv_metrics_queue_depth_set(srv_pool_depth(), srv_pool_capacity(), srv_pool_threads());
    uint64_t now = uv_now(&l->loop), elapsed = now - l->phase_ms;
    if (l->phase == PHASE_DELAY && elapsed >= (uint64_t)(config->shutdown_delay * 1000)) {
        MHD_socket fd = MHD_quiesce_daemon(l->http.daemon);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
        l->phase = PHASE_DRAINING;
        l->phase_ms = now;
        elapsed = 0;
    }
    if (l->phase == PHASE_DRAINING) {
        if (l->http.in_flight && elapsed >= (uint64_t)(config->timeout * 1000))
            srv_http_cancel_all(&l->http);
        if (!l->http.in_flight && !srv_http_jobs_out(&l->http)) {
            srv_http_stop(&l->http);
            l->phase = PHASE_STOPPED;
            close_all(l);
            return;
        }
    }
    run_mhd(l);
}

static void begin_shutdown(srv_loop *l)
{
    if (l->phase != PHASE_SERVING)
        return;
    l->phase = PHASE_DELAY;
    l->phase_ms = uv_now(&l->loop);
}

static void on_stop(uv_async_t *a)
{
    begin_shutdown(a->data);
}

void srv_bridge_shutdown(void)
{
    if (atomic_exchange(&srv_draining, 1))
        return;
    srv_log(SRV_LOG_INFO, "shutting down: readiness is 503, draining", NULL);
    for (uint32_t i = 0; i < n_loops; i++)
        uv_async_send(&loops[i].stop_async);
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (signum == SIGHUP) {
        char *report = NULL;
        size_t len;
        int failed = srv_tables_reload(&report, &len);
        srv_log(failed ? SRV_LOG_WARN : SRV_LOG_INFO, "SIGHUP reload", "result",
                report ? report : "", NULL);
        free(report);
        return;
    }
    (void)s;
    if (atomic_fetch_add(&signals_seen, 1) > 0) {
        srv_log(SRV_LOG_WARN, "second signal: exiting at once", NULL);
        _exit(1);
    }
    srv_bridge_shutdown();
}

/* Binds a listening socket on host:port with SO_REUSEPORT. Returns the fd or -1 (logged). */
static int listen_on(const char *host, uint16_t port, uint16_t *bound)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai;
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    int rc = getaddrinfo(host[0] ? host : NULL, ps, &hints, &ai);
    if (rc) {
        srv_log(SRV_LOG_ERROR, "cannot resolve the listen address", "host", host, "error",
                gai_strerror(rc), NULL);
        return -1;
    }
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        srv_log(SRV_LOG_ERROR, "cannot listen", "host", host, "port", ps, "error", strerror(errno),
                NULL);
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static int loop_init(srv_loop *l, unsigned index, int fd)
{
    uv_loop_init(&l->loop);
    l->listen_fd = fd;
    l->http.cfg = config;
    l->http.index = index;
    uv_async_init(&l->loop, &l->done_async, on_done);
    l->done_async.data = l;
    uv_async_init(&l->loop, &l->stop_async, on_stop);
    l->stop_async.data = l;
    if (srv_http_start(&l->http, fd, wake, &l->done_async) != 0)
        return -1;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(l->http.daemon, MHD_DAEMON_INFO_EPOLL_FD);
    uv_poll_init(&l->loop, &l->poll, di->epoll_fd);
    l->poll.data = l;
    uv_poll_start(&l->poll, UV_READABLE, on_poll);
    uv_timer_init(&l->loop, &l->timer);
    l->timer.data = l;
    uv_timer_init(&l->loop, &l->tick);
    l->tick.data = l;
    uv_timer_start(&l->tick, on_tick, 100, 100);
    return 0;
}

static void *loop_thread(void *arg)
{
    srv_loop *l = arg;
    run_mhd(l);
    uv_run(&l->loop, UV_RUN_DEFAULT);
    return NULL;
}

int srv_bridge_run(const srv_config *cfg)
{
    config = cfg;
    n_loops = cfg->loops;
    loops = calloc(n_loops, sizeof *loops);
    if (!loops)
        return -1;
    uint16_t port = cfg->listen_port, bound = 0;
    for (uint32_t i = 0; i < n_loops; i++) {
        int fd = listen_on(cfg->listen_host, port, &bound);
        if (fd < 0)
            return -1;
        port = bound; /* with port 0, every further listener shares the first one's port */
        if (loop_init(&loops[i], i, fd) != 0)
            return -1;
    }
    srv_loop *l0 = &loops[0];
    signal(SIGPIPE, SIG_IGN);
    uv_signal_init(&l0->loop, &l0->sigterm);
    uv_signal_init(&l0->loop, &l0->sigint);
    uv_signal_init(&l0->loop, &l0->sighup);
    uv_signal_start(&l0->sigterm, on_signal, SIGTERM);
    uv_signal_start(&l0->sigint, on_signal, SIGINT);
    uv_signal_start(&l0->sighup, on_signal, SIGHUP);
    char where[300], n[16];
    snprintf(where, sizeof where, "http://%s%s%s:%u", strchr(cfg->listen_host, ':') ? "[" : "",
             cfg->listen_host, strchr(cfg->listen_host, ':') ? "]" : "", bound);
    snprintf(n, sizeof n, "%u", n_loops);
    srv_log(SRV_LOG_INFO, "listening", "url", where, "loops", n, NULL);
    for (uint32_t i = 1; i < n_loops; i++)
        pthread_create(&loops[i].thread, NULL, loop_thread, &loops[i]);
    run_mhd(l0);
    uv_run(&l0->loop, UV_RUN_DEFAULT);
    for (uint32_t i = 1; i < n_loops; i++)
        pthread_join(loops[i].thread, NULL);
    for (uint32_t i = 0; i < n_loops; i++)
        uv_loop_close(&loops[i].loop);
    free(loops);
    loops = NULL;
    return 0;
}
