/*
 * jsonw.c - the JSON writer: one growable buffer, shortest float text, strict UTF-8, base64.
 *
 * Floats. A response may carry a million floats, so their text is the hot path. Each float is
 * written as the shortest decimal that strtof reads back to the same bits and, among those, the
 * one closest to the float: what Ryu or Schubfach print. The algorithm follows Giulietti's
 * Schubfach, redone for binary32 with wider arithmetic so that its exactness is plain to see
 * instead of resting on a proof about 64-bit approximations:
 *  - v = c * 2^q rounds from the interval [(4c - 2) * 2^(q-2), (4c + 2) * 2^(q-2)] (4c - 1 below
 *    a power of two, where the gap below is half the gap above), closed when c is even (strtof
 *    breaks ties to even) and open when c is odd.
 *  - k is chosen so that 10^k <= interval width < 10^(k+1): at most one multiple of 10^(k+1)
 *    lies in the interval, and s = floor(v / 10^k) or s + 1 always does.
 *  - u * 2^q / 10^k for the centre and both bounds is u * G >> 127, a 192-bit product with a
 *    128-bit G from pow10_tab. For k <= 0, G is 5^-k shifted, exact; for -27 <= k <= 0 (|v| from
 *    about 1e-27 to 16) it fits one word, so one multiply per bound does. For k > 0, G is 10^-k
 *    rounded up: its error moves the product by under 2^-97, while a non-integer quotient
 *    u * 2^q / 5^k is at least 5^-31 > 2^-72 from an integer, so the floor is exact and a
 *    fraction below 2^-80 means "an integer". The scaled values are rounded to odd (floor, lowest
 *    bit set when inexact), which keeps every comparison the selection makes against even
 *    numbers (4s, 4t, 2(s + t)) exact.
 *  - Java's Schubfach skips the shorter candidate below s = 100 to keep two digits ("4.9E-324");
 *    here the bar is s = 10, below which that candidate is not shorter, so the text is the true
 *    shortest ("1e-45" for FLT_TRUE_MIN).
 * All 2^32 bit patterns were checked against glibc (round trip, no shorter decimal reads back,
 * the closest of its length): tests/server/bench_jsonw.c --verify. Rejected: printf("%.9g")
 * (about ten times slower, and not shortest: 0.1f prints as 0.100000001); %.6g to %.9g with a
 * strtof check (several printf and strtof calls per float); Grisu (needs a fallback).
 *
 * The text is the shorter of plain ("0.001", "-12.5", "100") and exponent form ("1e-07",
 * "1.5e+20": printf style, a sign and two exponent digits), plain on a tie: always a valid JSON
 * number, at most 15 bytes. Doubles take the simple route (%.15g, %.16g, %.17g, the first that
 * strtod reads back; from %.1g for subnormals): shortest, except that next to a power of two,
 * where the gap below is narrower, 17 digits may appear where 16 would do. printf and strtod
 * follow LC_NUMERIC, which must stay "C": embd never calls setlocale.
 *
 * Strings are copied in runs; only '"', '\\', control bytes and non-ASCII bytes leave the run.
 * Valid UTF-8 passes through; each byte that does not start a valid sequence (overlong,
 * surrogate, above U+10FFFF, truncated, stray continuation) becomes U+FFFD, as jsonutil.c does.
 *
 * Invariants: w->len < w->cap whenever w->buf is set (room for the NUL jsonw_steal adds); once
 * w->oom is set nothing is appended until the buffer is stolen or freed.
 */
#include "jsonw.h"

#include "emb_kernels.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JW_DEFAULT_CAP 256

/* The longest float text: sign, nine digits, point and exponent ("-1.00192186e-36"). */
#define JW_FLOAT_MAX 15
/* put_float may write this many bytes from where it starts, past its text. */
#define JW_FLOAT_SLACK 32

/* ---- buffer ---- */

/* Grows w so that extra more bytes and a NUL fit; sets oom and returns -1 on failure. */
static int jw_grow(jsonw *w, size_t extra)
{
    if (extra > SIZE_MAX - 1 - w->len) {
        w->oom = 1;
        return -1;
    }
    size_t need = w->len + extra + 1;
    size_t cap = w->cap ? w->cap : JW_DEFAULT_CAP;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *nb = realloc(w->buf, cap);
    if (!nb) {
        w->oom = 1;
        return -1;
    }
    w->buf = nb;
    w->cap = cap;
    return 0;
}

/* Makes room for extra bytes; returns 0, or -1 (and appends nothing further) once out of memory. */
static inline int jw_reserve(jsonw *w, size_t extra)
{
    if (w->oom)
        return -1;
    if (extra < w->cap - w->len)
        return 0;
    return jw_grow(w, extra);
}

/* ---- recycled buffers ---- */

/* An answer of a few KiB (a single-row lookup's is 1.4 KiB at dim 128) falls in glibc's large
 * bins: its malloc and free, and the fastbin consolidation a large malloc sets off, were 30% of
 * a lookup's user-space instructions. So buffers of up to JW_POOL_BUF bytes come from a
 * per-thread stack of at most JW_POOL_MAX blocks, and jsonw_release puts any malloc'd block of
 * that usable size back on the releasing thread's stack (a body built by a worker and released
 * by a loop moves to the loop's). The stacks hold at most 512 KiB per thread; a thread's stack
 * is freed when the thread ends. */
#define JW_POOL_BUF (16u * 1024)
#define JW_POOL_MAX 32

typedef struct jw_pool {
    unsigned n;
    void *b[JW_POOL_MAX];
} jw_pool;

static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static int pool_ok;

static void pool_drop(void *p)
{
    jw_pool *pl = p;
    for (unsigned i = 0; i < pl->n; i++)
        free(pl->b[i]);
    free(pl);
}

static void pool_key_init(void)
{
    pool_ok = pthread_key_create(&pool_key, pool_drop) == 0;
}

/* This thread's stack, or NULL (no memory, no key: buffers then come from malloc). */
static jw_pool *pool_get(void)
{
    pthread_once(&pool_once, pool_key_init);
    if (!pool_ok)
        return NULL;
    jw_pool *pl = pthread_getspecific(pool_key);
    if (!pl && (pl = calloc(1, sizeof *pl)) && pthread_setspecific(pool_key, pl) != 0) {
        free(pl);
        pl = NULL;
    }
    return pl;
}

/* ---- kept large buffers ---- */

/* A buffer of JW_BIG_MIN bytes or more is past glibc's mmap threshold (cmd_serve.c sets it, so
 * that memory goes back after a burst), so each was mapped on its first touch and unmapped on
 * free: a 1000-row gather faulted its 1.4 MB answer in page by page and unmapped it with a TLB
 * shootdown, about a fifth of its CPU. Up to JW_BIG_MAX such blocks of at most JW_BIG_LIMIT
 * bytes are kept instead, in one list shared by every thread (a worker builds an answer, a
 * loop releases it), under a mutex taken twice per large answer. jsonw_trim, from the loops'
 * tick, frees them once none was taken or kept for JW_BIG_IDLE seconds, so an idle server
 * still gives the memory back. */
#define JW_BIG_MIN   (256u * 1024)
#define JW_BIG_LIMIT ((size_t)16 << 20)
#define JW_BIG_MAX   4u
#define JW_BIG_IDLE  2.0

static pthread_mutex_t big_mu = PTHREAD_MUTEX_INITIALIZER;
static void *big[JW_BIG_MAX];
static unsigned n_big;
static unsigned long big_uses; /* takes and keeps so far */

/* A kept block, or NULL. */
static void *big_take(void)
{
    void *b = NULL;
    pthread_mutex_lock(&big_mu);
    if (n_big) {
        b = big[--n_big];
        big_uses++;
    }
    pthread_mutex_unlock(&big_mu);
    return b;
}

/* Keeps block p of usable size u when it is large and there is room; returns 1 when kept. */
static int big_keep(void *p, size_t u)
{
    if (u < JW_BIG_MIN || u > JW_BIG_LIMIT)
        return 0;
    int kept = 0;
    pthread_mutex_lock(&big_mu);
    if (n_big < JW_BIG_MAX) {
        big[n_big++] = p;
        big_uses++;
        kept = 1;
    }
    pthread_mutex_unlock(&big_mu);
    return kept;
}

void jsonw_trim(double now)
{
    static unsigned long seen;
    static double since;
    void *drop[JW_BIG_MAX];
    unsigned n = 0;
    pthread_mutex_lock(&big_mu);
    if (big_uses != seen) {
        seen = big_uses;
        since = now;
    } else if (now - since >= JW_BIG_IDLE) {
        n = n_big;
        memcpy(drop, big, n * sizeof big[0]);
        n_big = 0;
    }
    pthread_mutex_unlock(&big_mu);
    for (unsigned i = 0; i < n; i++)
        free(drop[i]);
}

size_t jsonw_kept_bytes(void)
{
    size_t bytes = 0;
    pthread_mutex_lock(&big_mu);
    for (unsigned i = 0; i < n_big; i++)
        bytes += malloc_usable_size(big[i]);
    pthread_mutex_unlock(&big_mu);
    return bytes;
}

void jsonw_release(void *p)
{
    if (!p)
        return;
    size_t u = malloc_usable_size(p);
    jw_pool *pl;
    if (u >= JW_POOL_BUF && u < 2 * JW_POOL_BUF && (pl = pool_get()) && pl->n < JW_POOL_MAX) {
        pl->b[pl->n++] = p;
        return;
    }
    if (!big_keep(p, u))
        free(p);
}

int jsonw_init(jsonw *w, size_t cap)
{
    memset(w, 0, sizeof *w);
    if (!cap)
        cap = JW_DEFAULT_CAP;
    if (cap < JW_POOL_BUF) {
        jw_pool *pl = pool_get();
        w->buf = pl && pl->n ? pl->b[--pl->n] : malloc(JW_POOL_BUF);
        cap = JW_POOL_BUF - 1;
    } else if (cap + 1 >= JW_BIG_MIN && cap != SIZE_MAX && (w->buf = big_take())) {
        size_t u = malloc_usable_size(w->buf);
        if (u < cap + 1) {
            /* mremap for a mapped block: its pages stay, only the new ones fault in. */
            char *nb = realloc(w->buf, cap + 1);
            if (!nb)
                free(w->buf);
            w->buf = nb;
            u = cap + 1;
        }
        cap = u - 1;
    } else if (cap != SIZE_MAX) {
        w->buf = malloc(cap + 1);
    }
    if (!w->buf) {
        w->oom = 1;
        return -ENOMEM;
    }
    w->cap = cap + 1;
    return 0;
}

void jsonw_free(jsonw *w)
{
    jsonw_release(w->buf);
    memset(w, 0, sizeof *w);
}

char *jsonw_steal(jsonw *w, size_t *len)
{
    char *b = NULL;
    size_t n = 0;
    if (!w->oom && jw_reserve(w, 0) == 0) {
        b = w->buf;
        n = w->len;
        b[n] = '\0';
    } else {
        jsonw_release(w->buf);
    }
    memset(w, 0, sizeof *w);
    if (len)
        *len = n;
    return b;
}

void jsonw_raw(jsonw *w, const char *s, size_t n)
{
    if (jw_reserve(w, n))
        return;
    if (n)
        memcpy(w->buf + w->len, s, n);
    w->len += n;
}

void jsonw_cstr(jsonw *w, const char *s)
{
    jsonw_raw(w, s, strlen(s));
}

void jsonw_char(jsonw *w, char c)
{
    if (jw_reserve(w, 1))
        return;
    w->buf[w->len++] = c;
}

/* ---- integers ---- */

static const char digit_pairs[200] = "00010203040506070809101112131415161718192021222324"
                                     "25262728293031323334353637383940414243444546474849"
                                     "50515253545556575859606162636465666768697071727374"
                                     "75767778798081828384858687888990919293949596979899";

/* Writes v and returns its length (at most 20). */
static size_t put_u64(char *out, uint64_t v)
{
    char tmp[20];
    char *p = tmp + sizeof tmp;
    while (v >= 100) {
        p -= 2;
        memcpy(p, digit_pairs + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10) {
        p -= 2;
        memcpy(p, digit_pairs + 2 * v, 2);
    } else {
        *--p = (char)('0' + v);
    }
    size_t n = (size_t)(tmp + sizeof tmp - p);
    memcpy(out, p, n);
    return n;
}

void jsonw_u64(jsonw *w, uint64_t v)
{
    if (jw_reserve(w, 20))
        return;
    w->len += put_u64(w->buf + w->len, v);
}

void jsonw_i64(jsonw *w, int64_t v)
{
    if (jw_reserve(w, 21))
        return;
    uint64_t m = (uint64_t)v;
    if (v < 0) {
        w->buf[w->len++] = '-';
        m = 0 - m;
    }
    w->len += put_u64(w->buf + w->len, m);
}

/* ---- floats ---- */

/* 10^-k as G * 2^(beta - 127) with G in [2^127, 2^128) and beta = floor(log2(10^-k)), for
 * k = -45..31 (index k + 45). For k <= 0, G = 5^-k << (127 - floor(log2(5^-k))), exact; for k > 0,
 * G = ceil(2^(127 - beta) / 10^k). Generated with Python's exact integers; its low word is zero
 * exactly for -27 <= k <= 0. */
static const struct jw_pow10 {
    uint64_t hi, lo;
    int32_t beta;
} pow10_tab[77] = {
    {0xb35dbf821ae4f38bu, 0xdda2802c8a800000u, 149},  /* 10^45 */
    {0x8f7e32ce7bea5c6fu, 0xe4820023a2000000u, 146},  /* 10^44 */
    {0xe596b7b0c643c719u, 0x6d9ccd05d0000000u, 142},  /* 10^43 */
    {0xb7abc627050305adu, 0xf14a3d9e40000000u, 139},  /* 10^42 */
    {0x92efd1b8d0cf37beu, 0x5aa1cae500000000u, 136},  /* 10^41 */
    {0xeb194f8e1ae525fdu, 0x5dcfab0800000000u, 132},  /* 10^40 */
    {0xbc143fa4e250eb31u, 0x17d955a000000000u, 129},  /* 10^39 */
    {0x96769950b50d88f4u, 0x1314448000000000u, 126},  /* 10^38 */
    {0xf0bdc21abb48db20u, 0x1e86d40000000000u, 122},  /* 10^37 */
    {0xc097ce7bc90715b3u, 0x4b9f100000000000u, 119},  /* 10^36 */
    {0x9a130b963a6c115cu, 0x3c7f400000000000u, 116},  /* 10^35 */
    {0xf684df56c3e01bc6u, 0xc732000000000000u, 112},  /* 10^34 */
    {0xc5371912364ce305u, 0x6c28000000000000u, 109},  /* 10^33 */
    {0x9dc5ada82b70b59du, 0xf020000000000000u, 106},  /* 10^32 */
    {0xfc6f7c4045812296u, 0x4d00000000000000u, 102},  /* 10^31 */
    {0xc9f2c9cd04674edeu, 0xa400000000000000u, 99},   /* 10^30 */
    {0xa18f07d736b90be5u, 0x5000000000000000u, 96},   /* 10^29 */
    {0x813f3978f8940984u, 0x4000000000000000u, 93},   /* 10^28 */
    {0xcecb8f27f4200f3au, 0x0000000000000000u, 89},   /* 10^27 */
    {0xa56fa5b99019a5c8u, 0x0000000000000000u, 86},   /* 10^26 */
    {0x84595161401484a0u, 0x0000000000000000u, 83},   /* 10^25 */
    {0xd3c21bcecceda100u, 0x0000000000000000u, 79},   /* 10^24 */
    {0xa968163f0a57b400u, 0x0000000000000000u, 76},   /* 10^23 */
    {0x878678326eac9000u, 0x0000000000000000u, 73},   /* 10^22 */
    {0xd8d726b7177a8000u, 0x0000000000000000u, 69},   /* 10^21 */
    {0xad78ebc5ac620000u, 0x0000000000000000u, 66},   /* 10^20 */
    {0x8ac7230489e80000u, 0x0000000000000000u, 63},   /* 10^19 */
    {0xde0b6b3a76400000u, 0x0000000000000000u, 59},   /* 10^18 */
    {0xb1a2bc2ec5000000u, 0x0000000000000000u, 56},   /* 10^17 */
    {0x8e1bc9bf04000000u, 0x0000000000000000u, 53},   /* 10^16 */
    {0xe35fa931a0000000u, 0x0000000000000000u, 49},   /* 10^15 */
    {0xb5e620f480000000u, 0x0000000000000000u, 46},   /* 10^14 */
    {0x9184e72a00000000u, 0x0000000000000000u, 43},   /* 10^13 */
    {0xe8d4a51000000000u, 0x0000000000000000u, 39},   /* 10^12 */
    {0xba43b74000000000u, 0x0000000000000000u, 36},   /* 10^11 */
    {0x9502f90000000000u, 0x0000000000000000u, 33},   /* 10^10 */
    {0xee6b280000000000u, 0x0000000000000000u, 29},   /* 10^9 */
    {0xbebc200000000000u, 0x0000000000000000u, 26},   /* 10^8 */
    {0x9896800000000000u, 0x0000000000000000u, 23},   /* 10^7 */
    {0xf424000000000000u, 0x0000000000000000u, 19},   /* 10^6 */
    {0xc350000000000000u, 0x0000000000000000u, 16},   /* 10^5 */
    {0x9c40000000000000u, 0x0000000000000000u, 13},   /* 10^4 */
    {0xfa00000000000000u, 0x0000000000000000u, 9},    /* 10^3 */
    {0xc800000000000000u, 0x0000000000000000u, 6},    /* 10^2 */
    {0xa000000000000000u, 0x0000000000000000u, 3},    /* 10^1 */
    {0x8000000000000000u, 0x0000000000000000u, 0},    /* 10^0 */
    {0xccccccccccccccccu, 0xcccccccccccccccdu, -4},   /* 10^-1 */
    {0xa3d70a3d70a3d70au, 0x3d70a3d70a3d70a4u, -7},   /* 10^-2 */
    {0x83126e978d4fdf3bu, 0x645a1cac083126eau, -10},  /* 10^-3 */
    {0xd1b71758e219652bu, 0xd3c36113404ea4a9u, -14},  /* 10^-4 */
    {0xa7c5ac471b478423u, 0x0fcf80dc33721d54u, -17},  /* 10^-5 */
    {0x8637bd05af6c69b5u, 0xa63f9a49c2c1b110u, -20},  /* 10^-6 */
    {0xd6bf94d5e57a42bcu, 0x3d32907604691b4du, -24},  /* 10^-7 */
    {0xabcc77118461cefcu, 0xfdc20d2b36ba7c3eu, -27},  /* 10^-8 */
    {0x89705f4136b4a597u, 0x31680a88f8953031u, -30},  /* 10^-9 */
    {0xdbe6fecebdedd5beu, 0xb573440e5a884d1cu, -34},  /* 10^-10 */
    {0xafebff0bcb24aafeu, 0xf78f69a51539d749u, -37},  /* 10^-11 */
    {0x8cbccc096f5088cbu, 0xf93f87b7442e45d4u, -40},  /* 10^-12 */
    {0xe12e13424bb40e13u, 0x2865a5f206b06fbau, -44},  /* 10^-13 */
    {0xb424dc35095cd80fu, 0x538484c19ef38c95u, -47},  /* 10^-14 */
    {0x901d7cf73ab0acd9u, 0x0f9d37014bf60a11u, -50},  /* 10^-15 */
    {0xe69594bec44de15bu, 0x4c2ebe687989a9b4u, -54},  /* 10^-16 */
    {0xb877aa3236a4b449u, 0x09befeb9fad487c3u, -57},  /* 10^-17 */
    {0x9392ee8e921d5d07u, 0x3aff322e62439fd0u, -60},  /* 10^-18 */
    {0xec1e4a7db69561a5u, 0x2b31e9e3d06c32e6u, -64},  /* 10^-19 */
    {0xbce5086492111aeau, 0x88f4bb1ca6bcf585u, -67},  /* 10^-20 */
    {0x971da05074da7beeu, 0xd3f6fc16ebca5e04u, -70},  /* 10^-21 */
    {0xf1c90080baf72cb1u, 0x5324c68b12dd6339u, -74},  /* 10^-22 */
    {0xc16d9a0095928a27u, 0x75b7053c0f178294u, -77},  /* 10^-23 */
    {0x9abe14cd44753b52u, 0xc4926a9672793543u, -80},  /* 10^-24 */
    {0xf79687aed3eec551u, 0x3a83ddbd83f52205u, -84},  /* 10^-25 */
    {0xc612062576589ddau, 0x95364afe032a819eu, -87},  /* 10^-26 */
    {0x9e74d1b791e07e48u, 0x775ea264cf55347eu, -90},  /* 10^-27 */
    {0xfd87b5f28300ca0du, 0x8bca9d6e188853fdu, -94},  /* 10^-28 */
    {0xcad2f7f5359a3b3eu, 0x096ee45813a04331u, -97},  /* 10^-29 */
    {0xa2425ff75e14fc31u, 0xa1258379a94d028eu, -100}, /* 10^-30 */
    {0x81ceb32c4b43fcf4u, 0x80eacf948770ced8u, -103}, /* 10^-31 */
};

/* floor(u * G / 2^127) rounded to odd: the lowest bit is set when the quotient is not an integer
 * (fraction bits outside sticky_lo in the low word are ignored, see the design comment). */
static inline uint32_t scale_odd(uint64_t u, const struct jw_pow10 *g, uint64_t sticky_lo)
{
    unsigned __int128 lo = (unsigned __int128)u * g->lo;
    unsigned __int128 hi = (unsigned __int128)u * g->hi + (uint64_t)(lo >> 64);
    uint64_t frac = ((uint64_t)hi & (UINT64_MAX >> 1)) | ((uint64_t)lo & sticky_lo);
    return (uint32_t)(hi >> 63) | (frac != 0);
}

/* scale_odd() when the low word of G is zero. */
static inline uint32_t scale_odd64(uint64_t u, uint64_t g_hi)
{
    unsigned __int128 p = (unsigned __int128)u * g_hi;
    return (uint32_t)(p >> 63) | (((uint64_t)p & (UINT64_MAX >> 1)) != 0);
}

/* The shortest, closest decimal of the positive finite float with these bits (sign clear, not
 * zero): returns digits d (possibly with trailing zeros, below 2^28) and sets *e so that the
 * decimal is d * 10^*e. The choice is made with masks rather than branches: on random data each
 * of its tests goes either way, and a mispredicted branch costs more than the whole computation. */
static uint32_t float_shortest(uint32_t bits, int *e)
{
    uint32_t ex = bits >> 23, f = bits & 0x7FFFFF;
    uint32_t c = ex ? f | 1u << 23 : f;
    int q = ex ? (int)ex - 150 : -149;
    uint32_t irregular = f == 0 && ex > 1;
    /* floor(log10(2^q)), or floor(log10(3/4 * 2^q)) for the narrower interval: both formulas
     * were checked exact for every q from -149 to 104 (>> of a negative int is arithmetic in
     * gcc and clang). */
    int k = (q * 78913 - (irregular ? 32751 : 0)) >> 18;
    const struct jw_pow10 *g = &pow10_tab[k + 45];
    int h = q + g->beta; /* 0..3: puts the integer part of u * 2^q / 10^k at bit 127 */
    uint64_t sticky_lo = k > 0 ? UINT64_MAX << 47 : UINT64_MAX;
    uint64_t cb = (uint64_t)c << 2;
    uint32_t vb, vbl, vbr;
    if (g->lo == 0) {
        /* 10^-k for -27 <= k <= 0 (|v| in about [1e-27, 16)): G is 5^-k shifted, one word. */
        vb = scale_odd64(cb << h, g->hi);
        vbl = scale_odd64((cb - 2 + irregular) << h, g->hi);
        vbr = scale_odd64((cb + 2) << h, g->hi);
    } else {
        vb = scale_odd(cb << h, g, sticky_lo);
        vbl = scale_odd((cb - 2 + irregular) << h, g, sticky_lo);
        vbr = scale_odd((cb + 2) << h, g, sticky_lo);
    }
    uint32_t open = c & 1; /* the bounds belong to the interval only when c is even */
    uint32_t s = vb >> 2, t = s + 1;

    /* One digit fewer (10 * sp or 10 * (sp + 1)) wins when exactly one of them is in the
     * interval; two cannot be, as the interval is narrower than 10^(k+1). Below s = 10 they
     * would not be shorter. */
    uint32_t sp = s / 10;
    uint32_t lo_in = vbl + open <= sp * 40;
    uint32_t hi_in = (sp + 1) * 40 + open <= vbr;
    uint32_t use_short = (s >= 10) & (lo_in ^ hi_in);
    /* Else s or t, whichever is in the interval; both may be: then the closer, even on a tie. */
    uint32_t s_in = vbl + open <= s << 2;
    uint32_t t_in = (t << 2) + open <= vbr;
    int32_t cmp = (int32_t)(vb - ((s + t) << 1));
    uint32_t closer_t = (cmp > 0) | ((cmp == 0) & s);
    uint32_t take_t = s_in ^ t_in ? t_in : closer_t;
    uint32_t d = s + take_t;
    uint32_t d_short = sp + hi_in;
    uint32_t m = 0 - use_short;
    *e = k + (int)use_short;
    return (d & ~m) | (d_short & m);
}

/* The eight decimal digits of x < 10^8 as byte values 0..9, the most significant in the lowest
 * byte: halves of four digits, quarters of two, then single digits, each step dividing every lane
 * at once by a multiply and shift that is exact in its range. */
static inline uint64_t digits8(uint32_t x)
{
    uint64_t v = x / 10000 | (uint64_t)(x % 10000) << 32;
    uint64_t q = (v * 10486) >> 20 & 0x0000007F0000007Fu; /* lanes / 100 */
    v = q | (v - q * 100) << 16;
    q = (v * 103) >> 10 & 0x000F000F000F000Fu; /* lanes / 10 */
    return q | (v - q * 10) << 8;
}

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "put_float stores digits8() as little-endian bytes"
#endif

/* Writes the text of v and returns its length (at most JW_FLOAT_MAX). It may scribble up to
 * JW_FLOAT_SLACK bytes from out, past the text: callers leave that room.
 *
 * The digits of d sit in a field of '0's, the units digit (place 10^k) at S[24], so place 10^j is
 * S[24 + k - j] whatever the length of d: plain text is then two fixed-size copies (integer part,
 * fraction) and a '.', without loops or branches on the digit count. */
static size_t put_float(char *out, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    char *p = out;
    *p = '-';
    p += bits >> 31;
    bits &= 0x7FFFFFFF;
    if (bits >= 0x7F800000) {
        memcpy(out, "null", 4);
        return 4;
    }
    if (!bits) {
        *p++ = '0';
        return (size_t)(p - out);
    }
    int k;
    uint32_t d = float_shortest(bits, &k);
    uint32_t top = d / 100000000; /* 0..2 */
    uint64_t low = digits8(d - top * 100000000);
    char S[64];
    memset(S, '0', sizeof S);
    S[16] = (char)('0' + top);
    uint64_t ascii = low + 0x3030303030303030u;
    memcpy(S + 17, &ascii, 8);
    int nd = top ? 9 : 8 - (__builtin_ctzll(low | 1ull << 63) >> 3); /* digits of d */
    int tz = low ? __builtin_clzll(low) >> 3 : 8;                    /* its trailing zeros */
    int n = nd - tz;                                                 /* significant digits */
    int e = k + tz;       /* the place of the last significant digit */
    int e10 = k + nd - 1; /* the place of the first */

    int len_exp = n + (n > 1) + 4;
    int len_plain = e >= 0 ? n + e : e10 >= 0 ? n + 1 : n + 1 - e10;
    if (len_plain <= len_exp) {
        /* S[24 + k - j0 ..] is the integer part from place j0 down to place 0, then S[25 + k ..]
         * the fraction from place -1 down to e. */
        int j0 = e10 > 0 ? e10 : 0;
        memcpy(p, S + 24 + k - j0, 16);
        p[j0 + 1] = '.';
        memcpy(p + j0 + 2, S + 25 + k, 16);
        return (size_t)(p - out) + (size_t)(j0 + 1) + (size_t)(e < 0 ? 1 - e : 0);
    }
    memcpy(p + 1, S + 25 - nd, 16);
    p[0] = p[1];
    p[1] = '.';
    p += n > 1 ? n + 1 : 1;
    int a = e10 < 0 ? -e10 : e10; /* at most 45 */
    p[0] = 'e';
    p[1] = e10 < 0 ? '-' : '+';
    memcpy(p + 2, digit_pairs + 2 * a, 2);
    return (size_t)(p + 4 - out);
}

/* The text of every f16 value, indexed by its bits: 15 bytes of put_float's text of the value
 * as a float ("null" for infinities and NaN), then its length. Stores keep rows as f16, so
 * nearly every float a lookup or a gather prints is one of these, and a 16-byte copy replaces
 * the digit search (about 30 ns per value here). Filled by jsonw_tables_init before any thread
 * starts and read-only after; until then every float takes put_float. 1 MiB. */
static char f16_text[65536][16];
static int f16_ready;

void jsonw_tables_init(void)
{
    for (uint32_t h = 0; h < 65536; h++) {
        char text[JW_FLOAT_MAX + JW_FLOAT_SLACK];
        size_t n = put_float(text, emb_f16_to_f32((uint16_t)h));
        memcpy(f16_text[h], text, n);
        f16_text[h][15] = (char)n;
    }
    f16_ready = 1;
}

/* put_float through f16_text when v is an f16 value with a normal exponent, or a zero. */
static inline size_t put_float_fast(char *out, float v)
{
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    uint32_t e = (b >> 23) & 0xFF, mag = b & 0x7FFFFFFF;
    if (f16_ready && !(b & 0x1FFF) && (e - 113u < 30u || !mag)) {
        uint32_t h = (b >> 16 & 0x8000) | (mag ? (e - 112) << 10 | (b >> 13 & 0x3FF) : 0);
        memcpy(out, f16_text[h], 16); /* the length byte lands in the scribble room */
        return (unsigned char)f16_text[h][15];
    }
    return put_float(out, v);
}

size_t srv_format_float(float v, char *out)
{
    size_t n = put_float(out, v);
    out[n] = '\0';
    return n;
}

void jsonw_float(jsonw *w, float v)
{
    if (jw_reserve(w, JW_FLOAT_SLACK))
        return;
    w->len += put_float_fast(w->buf + w->len, v);
}

/* Opens an array of n numbers with one reservation (each number and its comma fit in 16 bytes,
 * the last one's scribbling in the slack): returns where the first number goes, or NULL once out
 * of memory. array_close ends it at p. */
static char *array_open(jsonw *w, size_t n)
{
    if (n > (SIZE_MAX - 2 - JW_FLOAT_SLACK) / (JW_FLOAT_MAX + 1)) {
        w->oom = 1;
        return NULL;
    }
    if (jw_reserve(w, n * (JW_FLOAT_MAX + 1) + 2 + JW_FLOAT_SLACK))
        return NULL;
    char *p = w->buf + w->len;
    *p = '[';
    return p + 1;
}

static void array_close(jsonw *w, char *p)
{
    *p++ = ']';
    w->len = (size_t)(p - w->buf);
}

void jsonw_float_array(jsonw *w, const float *v, size_t n)
{
    char *p = array_open(w, n);
    if (!p)
        return;
    for (size_t i = 0; i < n; i++) {
        if (i)
            *p++ = ',';
        p += put_float_fast(p, v[i]);
    }
    array_close(w, p);
}

void jsonw_f16_array(jsonw *w, const uint16_t *h, size_t n)
{
    if (!f16_ready) {
        /* Before jsonw_tables_init (tests, tools): the same text through put_float. */
        jsonw_char(w, '[');
        for (size_t i = 0; i < n; i++) {
            if (i)
                jsonw_char(w, ',');
            jsonw_float(w, emb_f16_to_f32(h[i]));
        }
        jsonw_char(w, ']');
        return;
    }
    char *p = array_open(w, n);
    if (!p)
        return;
    for (size_t i = 0; i < n; i++) {
        if (i)
            *p++ = ',';
        memcpy(p, f16_text[h[i]], 16); /* the length byte lands in the scribble room */
        p += (unsigned char)f16_text[h[i]][15];
    }
    array_close(w, p);
}

void jsonw_double(jsonw *w, double v)
{
    char tmp[32];
    int n = 0;
    if (!isfinite(v)) {
        jsonw_raw(w, "null", 4);
        return;
    }
    /* 15 digits read back whenever any shorter text does, for normal doubles; subnormals have
     * fewer significant bits, so their search starts at one digit. */
    for (int prec = fabs(v) < DBL_MIN ? 1 : 15; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    jsonw_raw(w, tmp, (size_t)n);
}

/* ---- strings ---- */

/* 0: copied as is; 1: escaped; 2: the start (or not) of a multi-byte UTF-8 sequence. */
static const uint8_t str_class[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

/* The length of the valid UTF-8 sequence of 2 to 4 bytes starting at s (n bytes left), or 0:
 * overlong forms, surrogates, code points above U+10FFFF and truncated sequences are invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c >= 0xC2 && c <= 0xDF)
        return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0))
            return 0; /* overlong, or a surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90))
            return 0; /* overlong, or above U+10FFFF */
        return 4;
    }
    return 0; /* a continuation byte, C0, C1 or F5..FF */
}

void jsonw_string(jsonw *w, const char *s, size_t n)
{
    static const char hex[16] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    if (n > SIZE_MAX - 2) {
        w->oom = 1;
        return;
    }
    if (jw_reserve(w, n + 2))
        return;
    w->buf[w->len++] = '"';
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        for (;;) {
            while (j < n && !str_class[u[j]])
                j++;
            if (j < n && str_class[u[j]] == 2) {
                size_t m = utf8_seq(u + j, n - j);
                if (m) {
                    j += m;
                    continue;
                }
            }
            break;
        }
        jsonw_raw(w, s + i, j - i);
        if (j == n)
            break;
        if (jw_reserve(w, 6))
            return;
        char *p = w->buf + w->len;
        unsigned c = u[j];
        if (c >= 0x80) {
            memcpy(p, "\xEF\xBF\xBD", 3);
            w->len += 3;
        } else if (c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r' || c == '\b' ||
                   c == '\f') {
            p[0] = '\\';
            p[1] = c == '\n'   ? 'n'
                   : c == '\t' ? 't'
                   : c == '\r' ? 'r'
                   : c == '\b' ? 'b'
                   : c == '\f' ? 'f'
                               : (char)c;
            w->len += 2;
        } else {
            memcpy(p, "\\u00", 4);
            p[4] = hex[c >> 4];
            p[5] = hex[c & 15];
            w->len += 6;
        }
        i = j + 1;
    }
    jsonw_char(w, '"');
}

/* ---- base64 ---- */

static const char b64_alphabet[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The value of each alphabet character plus one; 0 for every other byte, '=' included. */
static const uint8_t b64_value[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,
    ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
};

void jsonw_base64(jsonw *w, const void *data, size_t n)
{
    const uint8_t *in = data;
    if (n / 3 > (SIZE_MAX - 8) / 4) {
        w->oom = 1;
        return;
    }
    if (jw_reserve(w, (n + 2) / 3 * 4 + 2))
        return;
    char *p = w->buf + w->len;
    *p++ = '"';
    size_t i = 0;
    for (; n - i >= 3; i += 3) {
        uint32_t x = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        p[0] = b64_alphabet[x >> 18];
        p[1] = b64_alphabet[x >> 12 & 63];
        p[2] = b64_alphabet[x >> 6 & 63];
        p[3] = b64_alphabet[x & 63];
        p += 4;
    }
    if (n - i) {
        uint32_t x = (uint32_t)in[i] << 16 | (n - i == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        p[0] = b64_alphabet[x >> 18];
        p[1] = b64_alphabet[x >> 12 & 63];
        p[2] = n - i == 2 ? b64_alphabet[x >> 6 & 63] : '=';
        p[3] = '=';
        p += 4;
    }
    *p++ = '"';
    w->len = (size_t)(p - w->buf);
}

/* Trailing bits that a canonical encoder leaves zero must be zero: "Zh==" is refused, so each
 * byte string has exactly one accepted text. */
long srv_base64_decode(const char *in, size_t len, uint8_t *out)
{
    const unsigned char *u = (const unsigned char *)in;
    if (len % 4 || len / 4 * 3 > (size_t)LONG_MAX)
        return -1;
    if (!len)
        return 0;
    size_t o = 0, last = len - 4;
    for (size_t i = 0; i < last; i += 4) {
        uint32_t a = b64_value[u[i]], b = b64_value[u[i + 1]], c = b64_value[u[i + 2]],
                 d = b64_value[u[i + 3]];
        if (!a || !b || !c || !d)
            return -1;
        uint32_t x = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6 | (d - 1);
        out[o] = (uint8_t)(x >> 16);
        out[o + 1] = (uint8_t)(x >> 8);
        out[o + 2] = (uint8_t)x;
        o += 3;
    }
    const unsigned char *t = u + last;
    uint32_t a = b64_value[t[0]], b = b64_value[t[1]];
    if (!a || !b)
        return -1;
    uint32_t x = (a - 1) << 18 | (b - 1) << 12;
    if (t[2] == '=') {
        if (t[3] != '=' || (x & 0xFFFF))
            return -1;
        out[o++] = (uint8_t)(x >> 16);
        return (long)o;
    }
    uint32_t c = b64_value[t[2]];
    if (!c)
        return -1;
    x |= (c - 1) << 6;
    if (t[3] == '=') {
        if (x & 0xFF)
            return -1;
        out[o] = (uint8_t)(x >> 16);
        out[o + 1] = (uint8_t)(x >> 8);
        return (long)o + 2;
    }
    uint32_t d = b64_value[t[3]];
    if (!d)
        return -1;
    x |= d - 1;
    out[o] = (uint8_t)(x >> 16);
    out[o + 1] = (uint8_t)(x >> 8);
    out[o + 2] = (uint8_t)x;
    return (long)o + 3;
}
