/*
 * fuzz_common.c - the in-memory file and the scratch directory of fuzz.h.
 */
#include "fuzz.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int mem_fd = -1;
static char mem_path[64];
static char tmp_dir[512];

const char *fuzz_file(const void *data, size_t size)
{
    if (mem_fd < 0) {
        mem_fd = memfd_create("embd-fuzz", MFD_CLOEXEC);
        FUZZ_CHECK(mem_fd >= 0, "memfd_create failed");
        snprintf(mem_path, sizeof mem_path, "/proc/self/fd/%d", mem_fd);
    }
    FUZZ_CHECK(ftruncate(mem_fd, 0) == 0, "ftruncate failed");
    const char *p = data;
    size_t done = 0;
    while (done < size) {
        ssize_t n = pwrite(mem_fd, p + done, size - done, (off_t)done);
        FUZZ_CHECK(n > 0, "pwrite to the memfd failed");
        done += (size_t)n;
    }
    return mem_path;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_tmp_dir(void)
{
    if (tmp_dir[0])
        nftw(tmp_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_tmpdir(void)
{
    if (tmp_dir[0])
        return tmp_dir;
    const char *base = getenv("TMPDIR");
    struct stat st;
    if (!base || !*base)
        base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
                   ? "/dev/shm"
                   : "/tmp";
    snprintf(tmp_dir, sizeof tmp_dir, "%s/embd-fuzz-XXXXXX", base);
    FUZZ_CHECK(mkdtemp(tmp_dir) != NULL, "mkdtemp(%s) failed", tmp_dir);
    atexit(rm_tmp_dir);
    return tmp_dir;
}
