/*
 * test_serve_dir.c - `embd serve DIR`: a STORE that is a directory serves every `*.emb` file in
 * it (table named by the stem, sorted, hidden and other files skipped); start-up refuses an
 * empty directory, `name=DIR` and two files of one name; reload re-opens the files it serves,
 * adds new ones, keeps serving a table whose file has gone and refuses a name collision.
 *
 * The real server on loopback (fixture.c); start-up failures run the binary under timeout(1)
 * and read its exit status and log. No assertion on time; every wait is bounded.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include "helpers.h"

static th_server srv;

static void dir_fini(void)
{
    if (srv.pid > 0)
        th_server_stop(&srv, SIGKILL);
}

TestSuite(serve_dir, .fini = dir_fini);

/* Fills buf with th_tmpdir()/name (no allocation: every path here lives on the stack). */
static const char *tmp_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", th_tmpdir(), name);
    return buf;
}

/* Creates th_tmpdir()/name and fills buf with its path. */
static const char *make_dir(char *buf, size_t size, const char *name)
{
    tmp_path(buf, size, name);
    cr_assert_eq(mkdir(buf, 0755), 0, "mkdir %s: %s", buf, strerror(errno));
    return buf;
}

/* Copies the file from into dir/name through a temporary name and a rename, as a store must
 * arrive where a server may be reading. */
static void put(const char *from, const char *dir, const char *name)
{
    size_t len;
    void *d = th_read_file(from, &len);
    char tmp[700], path[700];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp.1", dir, name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    th_write_file(tmp, d, len);
    free(d);
    cr_assert_eq(rename(tmp, path), 0, "rename %s: %s", path, strerror(errno));
}

/* The demo table packed as f16 only: the same rows as th_demo_store(), other codecs. */
static const char *demo_f16(void)
{
    static char *out;
    if (!out) {
        th_demo_store();
        char *txt = th_path("demo.txt");
        out = th_path("demo-f16.emb");
        cr_assert_eq(
            th_system("'%s' pack '%s' -o '%s' --dtype f16 -q >/dev/null 2>&1", EMBD_BIN, txt, out),
            0, "pack --dtype f16");
        free(txt);
    }
    return out;
}

static json_t *get_json(const char *path, long want_status)
{
    th_response r;
    cr_assert_eq(th_request(&srv, "GET", path, NULL, NULL, &r), 0, "GET %s", path);
    cr_assert_eq(r.status, want_status, "GET %s: %ld %.300s", path, r.status, r.body);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    cr_assert_not_null(j, "GET %s: %.200s", path, r.body);
    th_response_free(&r);
    return j;
}

/* The names /v1/tables lists, joined by commas. */
static void table_names(char *out, size_t cap)
{
    json_t *j = get_json("/v1/tables", 200);
    json_t *list = json_object_get(j, "tables"), *t;
    size_t i, used = 0;
    out[0] = 0;
    json_array_foreach(list, i, t)
    {
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? "," : "",
                                 json_string_value(json_object_get(t, "name")));
        cr_assert_lt(used, cap);
    }
    json_decref(j);
}

static json_t *reload(void)
{
    th_response r;
    cr_assert_eq(th_request(&srv, "POST", "/v1/admin/reload", NULL, NULL, &r), 0);
    cr_assert_eq(r.status, 200, "reload: %ld %.300s", r.status, r.body);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    cr_assert_not_null(j);
    th_response_free(&r);
    return j;
}

static int has_string(const json_t *array, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(array, i, v)
    {
        if (json_is_string(v) && !strcmp(json_string_value(v), s))
            return 1;
    }
    return 0;
}

/* The error given for table name in a reload's "failed" list, or NULL. Borrowed from j. */
static const char *failure_of(const json_t *j, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(j, "failed"), i, v)
    {
        if (!strcmp(json_string_value(json_object_get(v, "table")), name))
            return json_string_value(json_object_get(v, "error"));
    }
    return NULL;
}

/* Runs `embd serve` with args that must make it refuse to start; returns its exit status and
 * its log (malloc'd) in *log. */
static int serve_fails(const char *args, char **log)
{
    static int n;
    char path[600];
    snprintf(path, sizeof path, "%s/refused-%d.log", th_tmpdir(), n++);
    int st = th_system("timeout 20 '%s' serve --listen 127.0.0.1:0 --log-format text %s >'%s' 2>&1",
                       EMBD_BIN, args, path);
    size_t len;
    *log = th_read_file(path, &len);
    return st;
}

Test(serve_dir, every_emb_file_is_a_table_named_by_its_stem)
{
    char d[512], sub[512];
    make_dir(d, sizeof d, "stores");
    put(th_demo_store(), d, "words.emb");
    put(demo_f16(), d, "alpha.emb");
    put(demo_f16(), d, ".hidden.emb");       /* hidden: skipped */
    put(demo_f16(), d, "notes.txt");         /* not *.emb: skipped */
    put(demo_f16(), d, "old.emb.bak");       /* not *.emb: skipped */
    make_dir(sub, sizeof sub, "stores/sub"); /* not a *.emb: skipped */
    const char *args[] = {d, NULL};
    th_server_start(&srv, args);

    char names[256];
    table_names(names, sizeof names);
    cr_expect_str_eq(names, "alpha,words", "sorted by name, only the visible *.emb files");
    json_t *alpha = get_json("/v1/tables/alpha", 200);
    json_t *codecs = json_object_get(alpha, "codecs");
    cr_expect_eq(json_array_size(codecs), 1);
    cr_expect_str_eq(json_string_value(json_array_get(codecs, 0)), "f16");
    json_decref(alpha);
    json_t *row = get_json("/v1/tables/words/keys/apple", 200);
    json_decref(row);
    json_t *nf = get_json("/v1/tables/hidden/rows/0", 404);
    json_decref(nf);
    cr_expect_eq(th_server_stop(&srv, SIGTERM), 0);
}

Test(serve_dir, a_directory_and_a_file_together)
{
    char d[512], other[512];
    make_dir(d, sizeof d, "dir");
    put(th_demo_store(), d, "b.emb");
    put(demo_f16(), th_tmpdir(), "zeta.emb");
    tmp_path(other, sizeof other, "zeta.emb");
    char named[700];
    snprintf(named, sizeof named, "a=%s", other);
    const char *args[] = {d, named, other, NULL};
    th_server_start(&srv, args);
    char names[256];
    table_names(names, sizeof names);
    cr_expect_str_eq(names, "a,b,zeta");
    cr_expect_eq(th_server_stop(&srv, SIGTERM), 0);
}

Test(serve_dir, start_refuses_empty_dir_named_dir_and_name_collisions)
{
    char empty[512], one[512], two[512], bad[512];
    make_dir(empty, sizeof empty, "empty");
    put(demo_f16(), empty, "readme.txt");
    make_dir(one, sizeof one, "one");
    make_dir(two, sizeof two, "two");
    put(demo_f16(), one, "t.emb");
    put(th_demo_store(), two, "t.emb");
    make_dir(bad, sizeof bad, "bad");
    put(demo_f16(), bad, "no spaces.emb");
    /* The arguments of each refused start, and what its log must say. */
    char args[5][1100];
    snprintf(args[0], sizeof args[0], "'%s'", empty);
    snprintf(args[1], sizeof args[1], "'t=%s'", one);
    snprintf(args[2], sizeof args[2], "'%s' '%s'", one, two);
    snprintf(args[3], sizeof args[3], "'%s'", bad);
    snprintf(args[4], sizeof args[4], "'%s/missing'", empty);
    const char *says[5] = {"no *.emb store in the directory", "name=DIR",
                           "two stores with the same table name table=t", "bad table name",
                           "cannot open store"};
    for (int i = 0; i < 5; i++) {
        char *log;
        cr_expect_eq(serve_fails(args[i], &log), 1, "%s", args[i]);
        cr_expect(strstr(log, says[i]), "%s: %s", args[i], log);
        free(log);
    }
}

Test(serve_dir, reload_rescans_adds_new_files_keeps_vanished_refuses_collisions)
{
    char d[512], fixed[512], partial[512];
    make_dir(d, sizeof d, "live");
    put(demo_f16(), d, "a.emb");
    put(demo_f16(), th_tmpdir(), "c.emb");
    tmp_path(fixed, sizeof fixed, "c.emb");
    const char *args[] = {d, fixed, NULL};
    th_server_start(&srv, args);
    char names[256];
    table_names(names, sizeof names);
    cr_assert_str_eq(names, "a,c");

    /* A new file is a new table; a half-written one (temporary name) is not. */
    put(th_demo_store(), d, "b.emb");
    th_write_file(tmp_path(partial, sizeof partial, "live/d.emb.tmp.XXXX"), "partial", 7);
    json_t *j = reload();
    cr_expect(has_string(json_object_get(j, "reloaded"), "a"));
    cr_expect(has_string(json_object_get(j, "reloaded"), "b"), "new file b.emb added");
    cr_expect_eq(json_array_size(json_object_get(j, "failed")), 0);
    json_decref(j);
    table_names(names, sizeof names);
    cr_expect_str_eq(names, "a,b,c");
    json_t *row = get_json("/v1/tables/b/keys/apple", 200);
    json_decref(row);

    /* Renamed over: the table is swapped (its codecs change from f16 to f16+q1). */
    put(th_demo_store(), d, "a.emb");
    j = reload();
    json_decref(j);
    json_t *a = get_json("/v1/tables/a", 200);
    cr_expect_eq(json_array_size(json_object_get(a, "codecs")), 2, "a.emb replaced");
    json_decref(a);

    /* A file that has gone: its table keeps serving and the reload says why. A new file whose
     * stem is the name of a table served from elsewhere is refused. */
    char gone[700];
    snprintf(gone, sizeof gone, "%s/b.emb", d);
    cr_assert_eq(unlink(gone), 0);
    put(demo_f16(), d, "c.emb");
    j = reload();
    const char *why_b = failure_of(j, "b"), *why_c = failure_of(j, "c");
    cr_expect(why_b && strstr(why_b, "No such file"), "b: %s", why_b ? why_b : "(not failed)");
    cr_expect(why_c && strstr(why_c, "two stores with the same table name"), "c: %s",
              why_c ? why_c : "(not failed)");
    json_decref(j);
    row = get_json("/v1/tables/b/keys/apple", 200);
    json_decref(row);
    table_names(names, sizeof names);
    cr_expect_str_eq(names, "a,b,c");

    /* SIGHUP runs the same scan. */
    put(demo_f16(), d, "e.emb");
    cr_assert_eq(kill(srv.pid, SIGHUP), 0);
    int seen = 0;
    for (int i = 0; i < 200 && !seen; i++) {
        th_response r;
        cr_assert_eq(th_request(&srv, "GET", "/v1/tables/e", NULL, NULL, &r), 0);
        seen = r.status == 200;
        th_response_free(&r);
        if (!seen)
            usleep(50000);
    }
    cr_expect(seen, "e.emb served after SIGHUP");
    cr_expect_eq(th_server_stop(&srv, SIGTERM), 0);
}
