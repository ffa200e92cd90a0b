/*
 * cmd_serve.c - `embd serve [OPTIONS] STORE...`: options (each with an EMBD_* environment
 * variable), start-up, and the order of shutdown.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "api.h"
#include "bridge.h"
#include "cli.h"
#include "emb_kernels.h"
#include "jsonw.h"
#include "metrics.h"
#include "pool.h"
#include "srv.h"

typedef struct opt_doc {
    const char *name, *env, *arg, *def, *help;
} opt_doc;

static const opt_doc docs[] = {
    {"listen", "EMBD_LISTEN", "ADDR:PORT", "127.0.0.1:8080",
     "address to listen on ([::1]:8080 for IPv6, 0.0.0.0:8080 for all; port 0 = any free)"},
    {"threads", "EMBD_THREADS", "N", "cores", "worker threads for searches and large gathers"},
    {"loops", "EMBD_LOOPS", "N", "1", "event loops, each with its own SO_REUSEPORT listener"},
    {"queue", "EMBD_QUEUE", "N", "256", "worker queue capacity; when full, 503 + Retry-After"},
    {"max-body", "EMBD_MAX_BODY", "BYTES", "16777216", "largest request body (413 above)"},
    {"max-buffered", "EMBD_MAX_BUFFERED", "BYTES", "268435456",
     "request body bytes held at once per loop (503 + Retry-After above)"},
    {"max-header-size", "EMBD_MAX_HEADER_SIZE", "BYTES", "8192",
     "request line and headers (431 above)"},
    {"max-batch", "EMBD_MAX_BATCH", "N", "1024", "ids, keys or vectors per request"},
    {"max-k", "EMBD_MAX_K", "N", "1000", "largest k for search (at most 1000)"},
    {"timeout", "EMBD_TIMEOUT", "SECONDS", "30", "idle connection timeout and request deadline"},
    {"max-connections", "EMBD_MAX_CONNECTIONS", "N", "10000",
     "open connections per loop (the file limit is raised to fit)"},
    {"api-key-file", "EMBD_API_KEY_FILE", "FILE", "none",
     "require Authorization: Bearer <key> on /v1 (first line of FILE)"},
    {"log-format", "EMBD_LOG_FORMAT", "json|text", "json", "log line format (stderr)"},
    {"log-level", "EMBD_LOG_LEVEL", "LEVEL", "info", "debug, info, warn or error"},
    {"access-log", "EMBD_ACCESS_LOG", "0|1", "0", "one log line per request"},
    {"shutdown-delay", "EMBD_SHUTDOWN_DELAY", "SECONDS", "2",
     "after SIGTERM, answer /readyz 503 this long before closing the listener"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: embd serve [OPTIONS] STORE...\n\n"
                 "Serves stores over HTTP/JSON (API: GET /openapi.yaml). STORE is path.emb (table\n"
                 "named by the file stem), name=path.emb, or a directory (each *.emb in it, named\n"
                 "by its stem); EMBD_STORES may list them instead.\n"
                 "Every option can also be set by its environment variable; options win.\n\n");
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        fprintf(out, "  --%s %s\n      %s\n      env %s, default %s\n", docs[i].name, docs[i].arg,
                docs[i].help, docs[i].env, docs[i].def);
    fprintf(out, "\nSignals: SIGTERM/SIGINT drain and exit 0 (a second one exits at once);\n"
                 "SIGHUP re-opens every store and adds new files of a directory STORE (as POST\n"
                 "/v1/admin/reload does).\n");
}

static int parse_listen(const char *s, srv_config *c)
{
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -1;
        snprintf(c->listen_host, sizeof c->listen_host, "%.*s", (int)(close - s - 1), s + 1);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        snprintf(c->listen_host, sizeof c->listen_host, "%.*s", (int)(colon - s), s);
    }
    unsigned long long port;
    if (cli_parse_u64(colon + 1, 65535, &port) != 0)
        return -1;
    c->listen_port = (uint16_t)port;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !(v >= 0 && v <= 86400))
        return -1;
    *out = v;
    return 0;
}

/* Applies one option value; returns 0 or -1 with a message on stderr. */
static int apply(srv_config *c, const char *name, const char *v)
{
    unsigned long long n;
#define U(field, lo, hi)                                                                           \
    do {                                                                                           \
        if (cli_parse_u64(v, hi, &n) != 0 || n < lo)                                               \
            goto bad;                                                                              \
        c->field = n;                                                                              \
    } while (0)
    if (!strcmp(name, "listen")) {
        if (parse_listen(v, c))
            goto bad;
    } else if (!strcmp(name, "threads"))
        U(threads, 1, 1024);
    else if (!strcmp(name, "loops"))
        U(loops, 1, 64);
    else if (!strcmp(name, "queue"))
        U(queue, 1, 1000000);
    else if (!strcmp(name, "max-body"))
        U(max_body, 64, 1ull << 32);
    else if (!strcmp(name, "max-buffered"))
        U(max_buffered, 4096, 1ull << 40);
    else if (!strcmp(name, "max-header-size"))
        U(max_header, 1024, 1u << 20);
    else if (!strcmp(name, "max-batch"))
        U(max_batch, 1, 100000);
    else if (!strcmp(name, "max-k"))
        U(max_k, 1, EMB_MAX_K);
    else if (!strcmp(name, "max-connections"))
        U(max_connections, 1, 1000000);
    else if (!strcmp(name, "timeout")) {
        if (parse_seconds(v, &c->timeout) || c->timeout < 0.1)
            goto bad;
    } else if (!strcmp(name, "shutdown-delay")) {
        if (parse_seconds(v, &c->shutdown_delay))
            goto bad;
    } else if (!strcmp(name, "api-key-file"))
        c->api_key_file = v;
    else if (!strcmp(name, "log-format")) {
        if (strcmp(v, "json") && strcmp(v, "text"))
            goto bad;
        c->log_json = !strcmp(v, "json");
    } else if (!strcmp(name, "log-level")) {
        static const char *levels[] = {"debug", "info", "warn", "error"};
        int found = -1;
        for (int i = 0; i < 4; i++)
            if (!strcmp(v, levels[i]))
                found = i;
        if (found < 0)
            goto bad;
        c->log_level = found;
    } else if (!strcmp(name, "access-log")) {
        if (strcmp(v, "0") && strcmp(v, "1"))
            goto bad;
        c->access_log = v[0] == '1';
    }
    return 0;
#undef U
bad:
    fprintf(stderr, "embd serve: bad value '%s' for --%s (see embd serve --help)\n", v, name);
    return -1;
}

static int load_api_key(srv_config *c)
{
    FILE *f = fopen(c->api_key_file, "r");
    if (!f) {
        fprintf(stderr, "embd serve: --api-key-file %s: %s\n", c->api_key_file, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    fclose(f);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
        line[--n] = 0;
    if (n < 16) {
        fprintf(stderr, "embd serve: the API key in %s must be at least 16 characters\n",
                c->api_key_file);
        free(line);
        return -1;
    }
    c->api_key = line;
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    srv_config c = {.listen_port = 8080,
                    .loops = 1,
                    .queue = 256,
                    .max_body = 16u << 20,
                    .max_buffered = 256u << 20,
                    .max_header = 8192,
                    .max_batch = 1024,
                    .max_k = EMB_MAX_K,
                    .timeout = 30,
                    .max_connections = 10000,
                    .log_json = 1,
                    .log_level = SRV_LOG_INFO,
                    .shutdown_delay = 2};
    snprintf(c.listen_host, sizeof c.listen_host, "127.0.0.1");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    c.threads = cores > 0 ? (uint32_t)cores : 1;
    enum { N_OPTS = sizeof docs / sizeof docs[0] };
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *v = getenv(docs[i].env);
        if (v && *v && apply(&c, docs[i].name, v) != 0)
            return 2;
    }
    struct option longopts[N_OPTS + 2];
    for (size_t i = 0; i < N_OPTS; i++)
        longopts[i] = (struct option){docs[i].name, required_argument, NULL, 1000 + (int)i};
    longopts[N_OPTS] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[N_OPTS + 1] = (struct option){0, 0, 0, 0};
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (o == 'h') {
            usage(stdout);
            return 0;
        }
        if (o < 1000 || o >= 1000 + (int)N_OPTS) {
            usage(stderr);
            return 2;
        }
        if (apply(&c, docs[o - 1000].name, optarg) != 0)
            return 2;
    }
    char *env_stores = NULL;
    if (optind < argc) {
        c.stores = argv + optind;
        c.n_stores = argc - optind;
    } else if (getenv("EMBD_STORES") && *getenv("EMBD_STORES")) {
        env_stores = strdup(getenv("EMBD_STORES"));
        static char *list[256];
        for (char *tok = strtok(env_stores, " ,"); tok && c.n_stores < 256;
             tok = strtok(NULL, " ,"))
            list[c.n_stores++] = tok;
        c.stores = list;
    }
    if (c.n_stores == 0) {
        fprintf(stderr, "embd serve: no STORE given (arguments or EMBD_STORES)\n");
        usage(stderr);
        free(env_stores);
        return 2;
    }
    if (c.max_buffered <= c.max_body) {
        fprintf(stderr, "embd serve: --max-buffered (%llu) must be larger than --max-body (%llu)\n",
                (unsigned long long)c.max_buffered, (unsigned long long)c.max_body);
        free(env_stores);
        return 2;
    }
    if (c.api_key_file && load_api_key(&c) != 0) {
        free(env_stores);
        return 2;
    }
    /* Room for the connections: raise the soft file limit to the hard one. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        uint64_t room = rl.rlim_cur > 256 ? (rl.rlim_cur - 128) / c.loops : 64;
        if (c.max_connections > room)
            c.max_connections = (uint32_t)room;
    }

    /* Buffers of 256 KiB and more (request bodies up to --max-body, large answers) are mapped
     * and unmapped by glibc, so memory goes back to the system when a burst of large or
     * hostile bodies ends. Its default raises that threshold to the largest buffer freed so
     * far (up to 32 MiB), after which such buffers come from the heap and stay resident. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    srv_log_init(c.log_json, c.log_level);
    json_object_seed(0); /* before any thread starts: jansson's hash seed */
    jsonw_tables_init();
    srv_metrics_init(EMB_VERSION_STRING, emb_kernels_get()->name);
    int status = 1;
    if (srv_tables_open(&c) != 0)
        goto out;
    size_t n;
    srv_table **all = srv_tables_all(&n);
    for (size_t i = 0; all && i < n; i++) {
        const emb_store *s = all[i]->store;
        char rows[32], dim[16], codecs[32];
        snprintf(rows, sizeof rows, "%llu", (unsigned long long)s->rows);
        snprintf(dim, sizeof dim, "%u", s->dim);
        snprintf(codecs, sizeof codecs, "%s%s%s", s->codecs & EMB_CODEC_F32 ? "f32 " : "",
                 s->codecs & EMB_CODEC_F16 ? "f16 " : "", s->codecs & EMB_CODEC_Q1 ? "q1" : "");
        srv_log(SRV_LOG_INFO, "serving table", "table", all[i]->name, "path", all[i]->path, "rows",
                rows, "dim", dim, "codecs", codecs, NULL);
        srv_table_put(all[i]);
    }
    free(all);
    char threads[16];
    snprintf(threads, sizeof threads, "%u", c.threads);
    srv_log(SRV_LOG_INFO, "starting", "version", EMB_VERSION_STRING, "simd",
            emb_kernels_get()->name, "threads", threads, NULL);
    if (srv_pool_start(c.threads, c.queue, srv_api_thread_exit) != 0) {
        srv_log(SRV_LOG_ERROR, "cannot start the worker threads", NULL);
        goto out_tables;
    }
    if (srv_bridge_run(&c) == 0)
        status = 0;
    srv_pool_stop();
    srv_log(SRV_LOG_INFO, status ? "stopped after an error" : "stopped cleanly", NULL);
out_tables:
    srv_tables_close();
out:
    free(c.api_key);
    free(env_stores);
    return status;
}
