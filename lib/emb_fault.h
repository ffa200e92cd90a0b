/*
 * emb_fault.h - allocation-failure injection for tests (builds with -DEMBD_FAULT_INJECTION=ON).
 *
 * Such builds link every program with `-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,
 * --wrap=strdup`, so each allocation made by embd's own code (lib/, server/, the tests) goes
 * through lib/fault.c, which can fail the Nth one after emb_fault_arm(N). Allocations inside
 * shared libraries (jansson, libmicrohttpd, libuv) are not covered: jansson 2.14 asserts in its
 * string lexer when an allocation fails mid-token (load.c, lex_scan_string), so routing its
 * allocator here (json_set_alloc_funcs) would only test that known abort.
 *
 * Tests arm a countdown, run one operation (a store open, one HTTP request via the
 * X-Embd-Fault-Alloc request header), and check the result is an error, never a crash, and
 * (under ASan) never a leak. Without EMBD_FAULT_INJECTION these are no-ops and
 * emb_fault_enabled() is 0.
 */
#ifndef EMB_FAULT_H
#define EMB_FAULT_H

#include <stddef.h>
#include <stdint.h>

/* 1 when built with fault injection. */
int emb_fault_enabled(void);

/* The nth allocation from now fails (returns NULL, errno ENOMEM), once; 0 disarms. Counts
 * allocations on every thread: arm it only while one operation runs. */
void emb_fault_arm(uint64_t nth);

/* Whether the armed failure has happened since the last emb_fault_arm. */
int emb_fault_fired(void);

#endif
