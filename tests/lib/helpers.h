/*
 * helpers.h - shared fixtures for the library tests: temporary directories, files, data.
 */
#ifndef EMB_TEST_HELPERS_H
#define EMB_TEST_HELPERS_H

#include <stddef.h>
#include <stdint.h>

/* A fresh private directory under $TMPDIR (or /tmp) for this process, created on first use and
 * removed with its contents at exit. Borrowed string. */
const char *th_tmpdir(void);

/* Joins th_tmpdir() and name into a static-lifetime copy (leaked on purpose in tests). */
char *th_path(const char *name);

/* Writes len bytes to path (truncating); aborts the test on failure. */
void th_write_file(const char *path, const void *data, size_t len);

/* Reads a whole file into a malloc'd, NUL-terminated buffer; *len gets the size. Aborts the
 * test on failure. */
void *th_read_file(const char *path, size_t *len);

/* Deterministic pseudo-random numbers (splitmix64 state). */
uint64_t th_rand_u64(uint64_t *state);
/* Uniform in [-1, 1). */
float th_rand_unit(uint64_t *state);
/* Standard normal (Box-Muller). */
float th_rand_normal(uint64_t *state);
/* Fills out[n] with standard normals. */
void th_rand_vec(uint64_t *state, float *out, size_t n);

/* Runs a shell command, returns its exit status (or -1). */
int th_system(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
