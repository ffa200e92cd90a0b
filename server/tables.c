/*
 * tables.c - the served tables: open, look up by name, reference-count, reload.
 *
 * The registry is an array of pointers guarded by a mutex held only to look up and take a
 * reference, so any loop thread can serve while another reloads. Reload opens every path anew
 * (a store is replaced by renaming a new file over it, never rewritten in place) and swaps each
 * table that opened; in-flight requests keep their reference to the old mapping, unmapped when
 * the last one is put. A store that fails to open keeps serving its old mapping.
 *
 * A STORE argument that is a directory stands for every `*.emb` file in it (hidden files
 * skipped), each a table named by its file stem. Reload scans such a directory again and adds
 * the tables of new files; a table whose file has gone keeps serving (its re-open fails and is
 * reported), so tables are never removed while the server runs: a restart does that. Watching
 * the directory (inotify) was rejected: a reload is an explicit act, and a half-copied file
 * never has the final `.emb` name when it is written the documented way (temporary name, then
 * rename).
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "jsonw.h"
#include "metrics.h"
#include "srv.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static srv_table **tables; /* sorted by name */
static size_t n_tables, cap_tables;
static const srv_config *config; /* the STORE arguments: directories are scanned on reload */

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

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The table name of a store path: its file name without the last extension. */
static void path_stem(const char *path, char *name, size_t size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    snprintf(name, size, "%.*s", (int)(dot && dot != base ? dot - base : (long)strlen(base)), base);
}

static int name_ok(const char *name)
{
    return name[0] && strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789_-.") == strlen(name);
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int store_file(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return e->d_name[0] != '.' && n > 4 && !strcmp(e->d_name + n - 4, ".emb");
}

/* Lists the `*.emb` files of directory dir, hidden ones skipped, as paths sorted by file name.
 * Returns the count with *out a malloc'd array of malloc'd paths (free each, then the array),
 * or a negated errno with *out untouched. */
static int scan_dir(const char *dir, char ***out)
{
    struct dirent **ents;
    int n = scandir(dir, &ents, store_file, NULL);
    if (n < 0)
        return -errno;
    char **paths = calloc((size_t)n + 1, sizeof *paths);
    int rc = paths ? n : -ENOMEM;
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    for (int i = 0; i < n; i++) {
        if (rc >= 0) {
            size_t len = dl + 1 + strlen(ents[i]->d_name) + 1;
            if (!(paths[i] = malloc(len)))
                rc = -ENOMEM;
            else
                snprintf(paths[i], len, "%.*s/%s", (int)dl, dir, ents[i]->d_name);
        }
        free(ents[i]);
    }
    free(ents);
    if (rc < 0) {
        for (int i = 0; paths && i < n; i++)
            free(paths[i]);
        free(paths);
        return rc;
    }
    qsort(paths, (size_t)n, sizeof *paths, by_string);
    *out = paths;
    return n;
}

static void free_paths(char **paths, int n)
{
    for (int i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
}

/* The registered table called name, or NULL. Caller holds mu or is the only thread. */
static srv_table *find_locked(const char *name)
{
    for (size_t i = 0; i < n_tables; i++)
        if (!strcmp(tables[i]->name, name))
            return tables[i];
    return NULL;
}

/* Puts t into the registry, kept sorted by name; the registry takes the caller's reference.
 * Returns 0 or -1 (out of memory; t is untouched). Caller holds mu or is the only thread. */
static int insert_locked(srv_table *t)
{
    if (n_tables == cap_tables) {
        size_t cap = cap_tables ? cap_tables * 2 : 16;
        srv_table **grown = realloc(tables, cap * sizeof *grown);
        if (!grown)
            return -1;
        tables = grown;
        cap_tables = cap;
    }
    size_t at = n_tables;
    while (at > 0 && strcmp(tables[at - 1]->name, t->name) > 0)
        at--;
    memmove(tables + at + 1, tables + at, (n_tables - at) * sizeof *tables);
    tables[at] = t;
    n_tables++;
    return 0;
}

/* Opens the store at path as table name and registers it. Returns 0, or -1 after logging why
 * (bad name, a name already served, a store that does not open). Start-up only. */
static int add_at_start(const char *name, const char *path)
{
    if (!name_ok(name)) {
        srv_log(SRV_LOG_ERROR, "bad table name: use letters, digits, _ - .", "store", path, NULL);
        return -1;
    }
    const srv_table *other = find_locked(name);
    if (other) {
        srv_log(SRV_LOG_ERROR, "two stores with the same table name", "table", name, "path", path,
                "other", other->path, NULL);
        return -1;
    }
    emb_error err = {0};
    srv_table *t = table_open(name, path, &err);
    if (!t) {
        srv_log(SRV_LOG_ERROR, "cannot open store", "table", name, "error", err.msg, NULL);
        return -1;
    }
    if (insert_locked(t) != 0) {
        srv_log(SRV_LOG_ERROR, "out of memory", NULL);
        srv_table_put(t);
        return -1;
    }
    return 0;
}

/* One STORE argument at start-up: name=path, a directory of stores, or a path. */
static int open_arg(const char *arg)
{
    char name[256];
    const char *eq = strchr(arg, '=');
    if (eq) {
        if (is_dir(eq + 1)) {
            srv_log(SRV_LOG_ERROR, "name=DIR: a directory holds one table per file; give it alone",
                    "store", arg, NULL);
            return -1;
        }
        snprintf(name, sizeof name, "%.*s", (int)(eq - arg), arg);
        return add_at_start(name, eq + 1);
    }
    if (!is_dir(arg)) {
        path_stem(arg, name, sizeof name);
        return add_at_start(name, arg);
    }
    char **paths = NULL;
    int n = scan_dir(arg, &paths);
    if (n < 0) {
        srv_log(SRV_LOG_ERROR, "cannot read the store directory", "dir", arg, "error", strerror(-n),
                NULL);
        return -1;
    }
    int rc = 0;
    if (n == 0) {
        srv_log(SRV_LOG_ERROR, "no *.emb store in the directory", "dir", arg, NULL);
        rc = -1;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        path_stem(paths[i], name, sizeof name);
        rc = add_at_start(name, paths[i]);
    }
    free_paths(paths, n);
    return rc;
}

int srv_tables_open(const srv_config *cfg)
{
    config = cfg;
    for (int i = 0; i < cfg->n_stores; i++)
        if (open_arg(cfg->stores[i]) != 0) {
            srv_tables_close();
            return -1;
        }
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

/* Appends {"table": name, "error": msg} to the failure list of a reload report. */
static void report_failure(jsonw *bad, int *failures, const char *name, const char *msg)
{
    if ((*failures)++)
        jsonw_char(bad, ',');
    jsonw_cstr(bad, "{\"table\":");
    jsonw_string(bad, name, strlen(name));
    jsonw_cstr(bad, ",\"error\":");
    jsonw_string(bad, msg, strlen(msg));
    jsonw_char(bad, '}');
    srv_metrics_reload(0);
}

static void report_ok(jsonw *ok, int *n_ok, const char *name)
{
    if ((*n_ok)++)
        jsonw_char(ok, ',');
    jsonw_string(ok, name, strlen(name));
    srv_metrics_reload(1);
}

/* Scans the directory arguments again and registers the stores of files that are new since
 * the last scan. A file whose stem names a table already served from another path is refused
 * (reported); a file whose stem is not a valid table name, or a directory that cannot be read,
 * is logged and counted as a failure but not listed (the report lists table names only). */
static void rescan_dirs(jsonw *ok, int *n_ok, jsonw *bad, int *failures)
{
    for (int a = 0; config && a < config->n_stores; a++) {
        const char *dir = config->stores[a];
        if (strchr(dir, '=') || !is_dir(dir))
            continue;
        char **paths = NULL;
        int n = scan_dir(dir, &paths);
        if (n < 0) {
            (*failures)++;
            srv_metrics_reload(0);
            srv_log(SRV_LOG_ERROR, "reload: cannot read the store directory", "dir", dir, "error",
                    strerror(-n), NULL);
            continue;
        }
        for (int i = 0; i < n; i++) {
            char name[256];
            path_stem(paths[i], name, sizeof name);
            if (!name_ok(name)) {
                (*failures)++;
                srv_metrics_reload(0);
                srv_log(SRV_LOG_ERROR, "reload: bad table name: use letters, digits, _ - .",
                        "store", paths[i], NULL);
                continue;
            }
            pthread_mutex_lock(&mu);
            const srv_table *other = find_locked(name);
            int same = other && !strcmp(other->path, paths[i]);
            char other_path[512];
            snprintf(other_path, sizeof other_path, "%s", other ? other->path : "");
            pthread_mutex_unlock(&mu);
            if (same)
                continue; /* re-opened with the tables already served */
            if (other) {
                char msg[1200];
                snprintf(msg, sizeof msg, "%s: two stores with the same table name (the other: %s)",
                         paths[i], other_path);
                srv_log(SRV_LOG_ERROR, "reload: two stores with the same table name", "table", name,
                        "path", paths[i], "other", other_path, NULL);
                report_failure(bad, failures, name, msg);
                continue;
            }
            emb_error err = {0};
            srv_table *t = table_open(name, paths[i], &err);
            if (t) {
                pthread_mutex_lock(&mu);
                if (insert_locked(t) != 0) {
                    emb_error_set(&err, EMB_ENOMEM, "out of memory");
                    srv_table_put(t);
                    t = NULL;
                }
                pthread_mutex_unlock(&mu);
            }
            if (!t) {
                srv_log(SRV_LOG_ERROR, "reload: cannot open a new store", "table", name, "error",
                        err.msg, NULL);
                report_failure(bad, failures, name, err.msg);
                continue;
            }
            char crc[16];
            snprintf(crc, sizeof crc, "%08x", t->store->checksum);
            srv_log(SRV_LOG_INFO, "added table", "table", name, "path", paths[i], "checksum", crc,
                    NULL);
            report_ok(ok, n_ok, name);
        }
        free_paths(paths, n);
    }
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
            srv_log(SRV_LOG_ERROR, "reload failed; the old store keeps serving", "table",
                    old[i]->name, "error", err.msg, NULL);
            report_failure(&bad, &failures, old[i]->name, err.msg);
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
        report_ok(&ok, &n_ok, t->name);
    }
    for (size_t i = 0; i < n; i++)
        srv_table_put(old[i]);
    free(old);
    rescan_dirs(&ok, &n_ok, &bad, &failures);
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
    n_tables = cap_tables = 0;
    pthread_mutex_unlock(&mu);
}
