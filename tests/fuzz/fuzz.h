/*
 * fuzz.h - what the fuzz targets share: the libFuzzer entry points, property checks that crash
 * (so libFuzzer records the input), and an in-memory file for the code that takes a path.
 *
 * Each fuzz_<name>.c defines LLVMFuzzerTestOneInput and may define LLVMFuzzerInitialize. The
 * same source links two ways: with clang's -fsanitize=fuzzer (libFuzzer's main, EMBD_FUZZ=ON)
 * and, in every ordinary build, with replay.c, whose main runs each file of the target's corpus
 * and regressions directories once (a ctest test). So a crash input committed under
 * tests/fuzz/regressions/<name>/ is replayed by CI's release and ASan suites from then on.
 *
 * Rejected: a mock file layer for the readers and the store (they take a path and use open,
 * pread and mmap: a memfd is a real file, needs no disk, and costs two system calls per input).
 */
#ifndef EMBD_FUZZ_H
#define EMBD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A property the code under test promises; a violation aborts with a message naming it, which
 * libFuzzer (and the replay driver under ASan) reports as a crash. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property failed: %s: ", __FILE__, __LINE__, #cond);            \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Replaces the content of this process's in-memory file (a memfd, created on first use) with
 * data[size] and returns a path that opens it ("/proc/self/fd/N", static storage). Aborts when
 * the file cannot be made: the target could test nothing. */
const char *fuzz_file(const void *data, size_t size);

/* A new directory for files a target writes (under TMPDIR, else /dev/shm, else /tmp), removed
 * at exit; returns its path (static storage). */
const char *fuzz_tmpdir(void);

#endif
