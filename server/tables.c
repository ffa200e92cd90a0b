/*
 * tables.c - the served tables: open, look up by name, reference-count, reload.
 *
 * The registry is an array of pointers guarded by a mutex held only to look up and take a
 * reference, so any loop thread can serve while another reloads. Reload opens every path anew
 * (a store is replaced by renaming a new file over it, never rewritten in place) and swaps each
 * table that opened; in-flight requests keep their reference to the old mapping, unmapped when
 * the last one is put. A store that fails to open keeps serving its old mapping.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonw.h"
#include "metrics.h"
#include "srv.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static srv_table **tables; /* sorted by name */
static size_t n_tables;

static srv_table *table_open(const char *name, const char *path, emb_error *err)
{
    emb_store *s;
    if (emb_store_open(&s, path, err) != 0)
        return NULL;
    srv_table *t = calloc(1, sizeof *t);
    if (!t || !(t->name = strdup(name)) || !(t->path = strdup(path))) {
        if (t) {
            free(t->name);
            free(t);
        }
        emb_store_close(s);
        emb_error_set(err, EMB_ENOMEM, "out of memory");
        return NULL;
    }
    t->store = s;
    t->oversample = emb_store_default_oversample(s, 10);
    t->metrics_slot = srv_metrics_table(name);
    snprintf(t->etag, sizeof t->etag, "\"%08x-%llx\"", s->checksum, (unsigned long long)s->rows);
    atomic_init(&t->refs, 1);
    return t;
}

void srv_table_put(srv_table *t)
{
    if (t && atomic_fetch_sub(&t->refs, 1) == 1) {
        emb_store_close(t->store);
        free(t->name);
        free(t->path);
        free(t);
    }
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(srv_table *const *)a)->name, (*(srv_table *const *)b)->name);
}

int srv_tables_open(const srv_config *cfg)
{
    tables = calloc((size_t)cfg->n_stores, sizeof *tables);
    if (!tables)
        return -1;
    for (int i = 0; i < cfg->n_stores; i++) {
        const char *arg = cfg->stores[i], *eq = strchr(arg, '=');
        char name[256];
        const char *path;
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - arg), arg);
            path = eq + 1;
        } else {
            const char *base = strrchr(arg, '/');
            base = base ? base + 1 : arg;
            const char *dot = strrchr(base, '.');
            snprintf(name, sizeof name, "%.*s",
                     (int)(dot && dot != base ? dot - base : (long)strlen(base)), base);
            path = arg;
        }
        if (!name[0] || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789_-.") != strlen(name)) {
            srv_log(SRV_LOG_ERROR, "bad table name: use letters, digits, _ - .", "store", arg,
                    NULL);
            return -1;
        }
        for (size_t j = 0; j < n_tables; j++)
            if (!strcmp(tables[j]->name, name)) {
                srv_log(SRV_LOG_ERROR, "two stores with the same table name", "table", name, NULL);
                return -1;
            }
        emb_error err = {0};
        srv_table *t = table_open(name, path, &err);
        if (!t) {
            srv_log(SRV_LOG_ERROR, "cannot open store", "table", name, "error", err.msg, NULL);
            return -1;
        }
        tables[n_tables++] = t;
    }
    qsort(tables, n_tables, sizeof *tables, by_name);
    return 0;
}

srv_table *srv_table_get(const char *name, size_t len)
{
    srv_table *found = NULL;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n_tables; i++)
        if (strlen(tables[i]->name) == len && !memcmp(tables[i]->name, name, len)) {
            found = tables[i];
            atomic_fetch_add(&found->refs, 1);
            break;
        }
    pthread_mutex_unlock(&mu);
    return found;
}

srv_table **srv_tables_all(size_t *n)
{
    pthread_mutex_lock(&mu);
    srv_table **all = malloc((n_tables ? n_tables : 1) * sizeof *all);
    if (all) {
        for (size_t i = 0; i < n_tables; i++) {
            all[i] = tables[i];
            atomic_fetch_add(&all[i]->refs, 1);
        }
        *n = n_tables;
    }
    pthread_mutex_unlock(&mu);
    return all;
}

int srv_tables_reload(char **report, size_t *report_len)
{
    static pthread_mutex_t reload_mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&reload_mu); /* one reload at a time; lookups go on meanwhile */
    size_t n;
    srv_table **old = srv_tables_all(&n);
    if (!old) {
        *report = NULL; /* out of memory: nothing was reloaded */
        pthread_mutex_unlock(&reload_mu);
        return -1;
    }
    jsonw ok, bad;
    jsonw_init(&ok, 256);
    jsonw_init(&bad, 256);
    jsonw_char(&ok, '[');
    jsonw_char(&bad, '[');
    int failures = 0, n_ok = 0;
    for (size_t i = 0; i < n; i++) {
        emb_error err = {0};
        srv_table *t = table_open(old[i]->name, old[i]->path, &err);
        if (!t) {
            failures++;
            srv_log(SRV_LOG_ERROR, "reload failed; the old store keeps serving", "table",
                    old[i]->name, "error", err.msg, NULL);
            if (failures > 1)
                jsonw_char(&bad, ',');
            jsonw_cstr(&bad, "{\"table\":");
            jsonw_string(&bad, old[i]->name, strlen(old[i]->name));
            jsonw_cstr(&bad, ",\"error\":");
            jsonw_string(&bad, err.msg, strlen(err.msg));
            jsonw_char(&bad, '}');
            srv_metrics_reload(0);
            continue;
        }
        pthread_mutex_lock(&mu);
        srv_table *prev = NULL;
        for (size_t j = 0; j < n_tables; j++)
            if (tables[j] == old[i]) {
                prev = tables[j];
                tables[j] = t;
            }
        pthread_mutex_unlock(&mu);
        srv_table_put(prev); /* the registry's reference */
        char crc[16];
        snprintf(crc, sizeof crc, "%08x", t->store->checksum);
        srv_log(SRV_LOG_INFO, "reloaded", "table", t->name, "path", t->path, "checksum", crc, NULL);
        if (n_ok++)
            jsonw_char(&ok, ',');
        jsonw_string(&ok, t->name, strlen(t->name));
        srv_metrics_reload(1);
    }
    for (size_t i = 0; i < n; i++)
        srv_table_put(old[i]);
    free(old);
    jsonw_char(&ok, ']');
    jsonw_char(&bad, ']');
    jsonw out;
    jsonw_init(&out, ok.len + bad.len + 32);
    jsonw_cstr(&out, "{\"reloaded\":");
    jsonw_raw(&out, ok.buf, ok.len);
    jsonw_cstr(&out, ",\"failed\":");
    jsonw_raw(&out, bad.buf, bad.len);
    jsonw_cstr(&out, "}");
    if (ok.oom || bad.oom)
        out.oom = 1; /* a report short of a table is no report: the caller answers 500 */
    jsonw_free(&ok);
    jsonw_free(&bad);
    *report = jsonw_steal(&out, report_len);
    pthread_mutex_unlock(&reload_mu);
    return failures;
}

void srv_tables_close(void)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n_tables; i++)
        srv_table_put(tables[i]);
    free(tables);
    tables = NULL;
    n_tables = 0;
    pthread_mutex_unlock(&mu);
}
