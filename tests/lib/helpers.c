/*
 * helpers.c - shared fixtures for the library tests.
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[512];

/* Removes the temporary directory at exit unless $EMBD_TEST_KEEP is set (then its path is
 * printed: server logs and generated files stay for a post-mortem). */
static void th_cleanup(void)
{
    const char *keep = getenv("EMBD_TEST_KEEP");
    if (keep && *keep) {
        fprintf(stderr, "kept %s (EMBD_TEST_KEEP)\n", tmpdir);
        return;
    }
    if (tmpdir[0]) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) {
            /* Nothing to do: a leftover temporary directory is harmless. */
        }
    }
}

const char *th_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/embd-test-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpdir))
            cr_assert_fail("mkdtemp(%s) failed", tmpdir);
        atexit(th_cleanup);
    }
    return tmpdir;
}

char *th_path(const char *name)
{
    const char *d = th_tmpdir();
    size_t n = strlen(d) + strlen(name) + 2;
    char *p = malloc(n);
    cr_assert_not_null(p);
    snprintf(p, n, "%s/%s", d, name);
    return p;
}

void th_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "fopen(%s)", path);
    cr_assert_eq(fwrite(data, 1, len, f), len, "fwrite(%s)", path);
    cr_assert_eq(fclose(f), 0);
}

void *th_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "fopen(%s)", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    cr_assert_geq(n, 0);
    rewind(f);
    void *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    ((char *)buf)[n] = 0; /* callers may print it as a string */
    fclose(f);
    *len = (size_t)n;
    return buf;
}

uint64_t th_rand_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float th_rand_unit(uint64_t *s)
{
    return (float)((double)(th_rand_u64(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

float th_rand_normal(uint64_t *s)
{
    double u1 = ((double)(th_rand_u64(s) >> 11) + 1.0) * 0x1.0p-53;
    double u2 = (double)(th_rand_u64(s) >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void th_rand_vec(uint64_t *s, float *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = th_rand_normal(s);
}

int th_system(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}
