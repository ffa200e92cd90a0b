/*
 * fault.c - the allocation-failure countdown behind emb_fault.h. The wrappers are the
 * `__wrap_` side of the linker's --wrap option (CMake adds it to every program of a
 * -DEMBD_FAULT_INJECTION=ON build); `__real_malloc` is then the C library's (or ASan's) malloc.
 * The countdown is one atomic: an unarmed build pays one relaxed load per allocation.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "emb_fault.h"

#ifdef EMBD_FAULT_INJECTION

static _Atomic uint64_t countdown;
static atomic_int fired;

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

int emb_fault_enabled(void)
{
    return 1;
}

void emb_fault_arm(uint64_t nth)
{
    atomic_store(&fired, 0);
    atomic_store(&countdown, nth);
}

int emb_fault_fired(void)
{
    return atomic_load(&fired);
}

/* Whether this allocation is the one to fail: decrements the countdown, failing at 1 -> 0. */
static int fail_now(void)
{
    uint64_t c = atomic_load_explicit(&countdown, memory_order_relaxed);
    while (c) {
        if (atomic_compare_exchange_weak(&countdown, &c, c - 1)) {
            if (c != 1)
                return 0;
            atomic_store(&fired, 1);
            errno = ENOMEM;
            return 1;
        }
    }
    return 0;
}

void *__wrap_malloc(size_t n)
{
    return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    return fail_now() ? NULL : __real_strdup(s);
}

#else

int emb_fault_enabled(void)
{
    return 0;
}

void emb_fault_arm(uint64_t nth)
{
    (void)nth;
}

int emb_fault_fired(void)
{
    return 0;
}

#endif
