/*
 * cmd_gen.c - `embd gen`: writes input files for demos and benchmarks.
 *
 * Two kinds. "demo" writes a GloVe text table (no header, "word v1 ... vd", "%.6g" in the C
 * locale) of about 300 real English words in 12 topics: each topic is a random unit direction,
 * each word that direction plus noise, and a few words with two senses ("orange", "mercury",
 * "python", "jaguar", ...) sit between their two topics, so `embd search demo.emb --key apple`
 * answers with fruits and a search for "orange" with fruits and colours. "clusters" writes N rows
 * drawn around C random centres as a .npy file (v1 header, '<f4' or '<f2', data 64-aligned) or,
 * when the output ends in .txt, as GloVe text with keys "item<N>"; --keys-out writes the keys
 * alone, one a line, for `embd pack --keys`. Keys count rows from 0, like store row ids.
 *
 * Speed: 1M x 768 f32 is 3 GB, so it must be made no slower than the disk takes it, in little
 * memory. Rows are made in blocks of at most 4096 rows and 16 MiB; a worker thread fills one
 * block while the calling thread writes the other, so memory is two blocks plus the centres
 * and the time is the write's. Noise comes from eight xoshiro128+ lanes held in GCC/Clang
 * vector types (SSE2 on x86-64 without target flags, plain code where there is no SIMD), and
 * each gaussian is the sum of four 16-bit uniforms (Irwin-Hall, n = 4: unit variance after
 * scaling, tails cut at 3.46 sigma, which clustered test data does not miss): about 1.2 ns of
 * CPU per value. Box-Muller was rejected: logf and sincosf cost more, and their last bits differ
 * between libm versions, which would make the bytes depend on the C library. Text output is
 * bound by number formatting, so format_g6 prints "%.6g" itself from the exact binary value for
 * the usual range (byte-identical to glibc, checked exhaustively) at a fifth of snprintf's cost.
 *
 * Determinism: the same options and seed give the same bytes, whatever the block size. One
 * thread makes every row in order; each streamed value is (centre + k) * scale with the centre
 * kept in noise units and k an exact integer, an add then a multiply that no compiler may fuse
 * into an FMA, so clusters output does not depend on the compiler or its flags either (GCC -O2,
 * GCC -O0 with sanitizers and Clang -O2 agree). The small demo table uses double arithmetic
 * that a target with FMA contraction (aarch64) may round differently in the last place.
 *
 * Files are written to "<out>.tmp.XXXXXX", fsynced and renamed over <out>, so a reader never sees a
 * half-written file under the final name; on failure the temporary file is removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define GEN_MAX_ROWS          1000000000ull
#define GEN_MAX_DIM           65536u
#define GEN_MAX_SEED          18446744073709551615ull
#define GEN_BLOCK_ROWS        4096u
#define GEN_BLOCK_BYTES       (16u << 20)
#define GEN_CENTRES_MAX_BYTES (1ull << 30)
#define GEN_TEXT_BUF          (1u << 20)
#define GEN_NPY_BUF           (64u << 10) /* header and tiny blocks; larger blocks bypass it */
#define GEN_LANES             8u
#define GEN_DEFAULT_ROWS      100000ull
#define GEN_DEFAULT_CLUSTERS  1000ull
#define GEN_DEFAULT_SEED      42ull
#define GEN_DEMO_DIM          64u
#define GEN_CLUSTERS_DIM      768u
#define GEN_DEMO_NOISE        0.6
#define GEN_CLUSTERS_NOISE    0.35
#define GEN_MIN_NOISE         1e-6
#define GEN_MAX_NOISE         100.0

/* The sum of four uniform 16-bit values has mean 2 * 65535 and standard deviation
 * sqrt((65536^2 - 1) / 3); GEN_GAUSS_SCALE turns the centred sum into a unit gaussian. */
#define GEN_GAUSS_MEAN  131070
#define GEN_GAUSS_SCALE 2.6428997921303014e-05

/* PRNG stream numbers, so every use draws from its own independent sequence. */
enum { GEN_STREAM_ASSIGN = 1, GEN_STREAM_DEMO = 2, GEN_STREAM_CENTRES = 16, GEN_STREAM_NOISE = 32 };

/* ---- random numbers ------------------------------------------------------------------- */

typedef struct gen_rng {
    uint64_t s[4];
} gen_rng;

/* GCC and Clang vector extensions: no target flags and no ISA-specific code (the compiler
 * lowers them to scalar code on a target without SIMD), with the exact integer and IEEE results
 * of the scalar expressions. Vectors are passed by pointer, never by value, to stay clear of
 * ABI differences. */
typedef uint32_t gen_u32x4 __attribute__((vector_size(16)));
typedef int32_t gen_i32x4 __attribute__((vector_size(16)));
typedef float gen_f32x4 __attribute__((vector_size(16)));
typedef uint16_t gen_u16x4 __attribute__((vector_size(8)));

/* Eight xoshiro128+ generators side by side: lanes 0-3 in vector 0, lanes 4-7 in vector 1. */
typedef struct gen_lanes {
    gen_u32x4 s0[2], s1[2], s2[2], s3[2];
} gen_lanes;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* Seeds stream number `stream` of `seed` through splitmix64, as the xoshiro authors advise
 * (never all-zero: splitmix64 is a bijection of a counter, four outputs cannot all be 0). */
static void rng_seed(gen_rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ rotl64(stream * 0xd1b54a32d192ed03ull, 32);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static uint64_t rng_next(gen_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = s[0] + s[3];
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Maps a 64-bit random value to an approximately gaussian integer with mean 0 and standard
 * deviation 1 / GEN_GAUSS_SCALE (about 37837), in [-131070, 131070]. */
static int32_t gauss_units(uint64_t x)
{
    /* Two 32-bit partial sums side by side, then their sum: fewer operations than four
     * separate extractions; neither sum (at most 131070) carries into the other. */
    uint64_t pair = (x & 0x0000ffff0000ffffull) + ((x >> 16) & 0x0000ffff0000ffffull);
    return (int32_t)((uint32_t)pair + (uint32_t)(pair >> 32)) - GEN_GAUSS_MEAN;
}

/* A unit gaussian as a double (for the small demo table). */
static double rng_gauss(gen_rng *r)
{
    return (double)gauss_units(rng_next(r)) * GEN_GAUSS_SCALE;
}

/* A uniform double in [0, 1) with 53 random bits. */
static double rng_unit(gen_rng *r)
{
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Seeds lane i from stream first + i of seed (never all-zero, which xoshiro cannot leave). */
static void lanes_seed(gen_lanes *l, uint64_t seed, uint64_t first)
{
    for (unsigned i = 0; i < GEN_LANES; i++) {
        gen_rng r;
        rng_seed(&r, seed, first + i);
        uint32_t w[4] = {(uint32_t)r.s[0], (uint32_t)(r.s[0] >> 32), (uint32_t)r.s[1],
                         (uint32_t)(r.s[1] >> 32)};
        if (!(w[0] | w[1] | w[2] | w[3]))
            w[0] = 1;
        l->s0[i / 4][i % 4] = w[0];
        l->s1[i / 4][i % 4] = w[1];
        l->s2[i / 4][i % 4] = w[2];
        l->s3[i / 4][i % 4] = w[3];
    }
}

/* One xoshiro128+ step of four lanes of l (vector v); the outputs go to *out. */
static inline void lanes_step(gen_lanes *l, int v, gen_u32x4 *out)
{
    gen_u32x4 t = l->s1[v] << 9;
    *out = l->s0[v] + l->s3[v];
    l->s2[v] ^= l->s0[v];
    l->s3[v] ^= l->s1[v];
    l->s1[v] ^= l->s2[v];
    l->s0[v] ^= l->s3[v];
    l->s2[v] ^= t;
    l->s3[v] = (l->s3[v] << 11) | (l->s3[v] >> 21);
}

/* Four gaussian integers from lanes 4v..4v+3, distributed as gauss_units: each lane takes two
 * steps and sums the four 16-bit halves of its two outputs. */
static inline void lanes_gauss4(gen_lanes *l, int v, gen_i32x4 *k)
{
    gen_u32x4 x, y;
    lanes_step(l, v, &x);
    lanes_step(l, v, &y);
    *k = (gen_i32x4)((x & 0xffff) + (x >> 16) + (y & 0xffff) + (y >> 16)) - GEN_GAUSS_MEAN;
}

/* Eight gaussian integers, lane i's in k[i / 4][i % 4]. Callers pass a local copy of the lanes
 * so that the state can stay in registers (written out without a loop for the same reason). */
static inline void lanes_gauss(gen_lanes *l, gen_i32x4 k[2])
{
    lanes_gauss4(l, 0, &k[0]);
    lanes_gauss4(l, 1, &k[1]);
}

/* IEEE binary16 from float: round to nearest even, overflow to infinity, NaN kept quiet,
 * subnormals rounded exactly. */
static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) /* infinity or NaN */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 | ((ax >> 13) & 0x3ff) : 0));
    if (ax >= 0x477ff000) /* at least 65520: rounds past the largest half, 65504 */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000) {    /* below 2^-14: a half subnormal, or zero */
        if (ax <= 0x33000000) /* at most 2^-25, which ties to zero */
            return sign;
        uint32_t m = (ax & 0x7fffff) | 0x800000;
        unsigned shift = 126 - (ax >> 23);
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = (ax >> 13) - (112u << 10), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

/* Converts n floats to binary16 exactly as f32_to_f16 does. Four values at a time take a
 * branch-free path, valid when every result is a normal half (all of them in practice); a group
 * with any other value is redone one value at a time by f32_to_f16. */
static void f16_row(const float *restrict in, uint16_t *restrict out, uint32_t n)
{
    uint32_t j = 0;
    for (; j + 4 <= n; j += 4) {
        gen_u32x4 x;
        memcpy(&x, in + j, sizeof x);
        gen_u32x4 ax = x & 0x7fffffff;
        gen_i32x4 other = ax - 0x38800000u >= 0x477ff000u - 0x38800000u;
        gen_u32x4 h =
            (((ax + 0xfff + ((ax >> 13) & 1)) >> 13) - (112u << 10)) | ((x >> 16) & 0x8000);
        gen_u16x4 h16 = __builtin_convertvector(h, gen_u16x4);
        memcpy(out + j, &h16, sizeof h16);
        if (other[0] | other[1] | other[2] | other[3])
            for (uint32_t i = 0; i < 4; i++)
                out[j + i] = f32_to_f16(in[j + i]);
    }
    for (; j < n; j++)
        out[j] = f32_to_f16(in[j]);
}

/* ---- output files --------------------------------------------------------------------- */

/* A file written through "<path>.tmp.XXXXXX" and renamed into place by out_commit. */
typedef struct gen_out {
    int fd;
    const char *path; /* borrowed from argv */
    char *tmp;        /* owned */
    char *buf;        /* owned, cap bytes */
    size_t len, cap;
    uint64_t bytes; /* written to the file so far */
} gen_out;

static void out_init(gen_out *o)
{
    memset(o, 0, sizeof *o);
    o->fd = -1;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n < (1u << 30) ? n : (1u << 30));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO; /* no progress: never loop forever */
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Creates a new "<path>.tmp.XXXXXX" (unique, as the store writer's: two gens to one path never
 * share it) with a cap-byte write buffer. Returns 0, or -1 with a message printed. */
static int out_open(gen_out *o, const char *path, size_t cap)
{
    size_t n = strlen(path);
    o->path = path;
    o->tmp = malloc(n + 12);
    o->buf = malloc(cap);
    if (!o->tmp || !o->buf) {
        fprintf(stderr, "embd gen: out of memory\n");
        return -1;
    }
    memcpy(o->tmp, path, n);
    memcpy(o->tmp + n, ".tmp.XXXXXX", 12);
    o->cap = cap;
    o->fd = mkostemp(o->tmp, O_CLOEXEC);
    if (o->fd >= 0 && fchmod(o->fd, 0644) != 0) { /* mkostemp makes 0600; as the store writer */
        fprintf(stderr, "embd gen: cannot chmod '%s': %s\n", o->tmp, strerror(errno));
        close(o->fd);
        unlink(o->tmp);
        o->fd = -1;
        return -1;
    }
    if (o->fd < 0) {
        fprintf(stderr, "embd gen: cannot create '%s': %s\n", o->tmp, strerror(errno));
        return -1;
    }
    return 0;
}

static int out_flush(gen_out *o)
{
    if (o->len > 0 && write_all(o->fd, o->buf, o->len) != 0) {
        fprintf(stderr, "embd gen: cannot write '%s': %s\n", o->tmp, strerror(errno));
        return -1;
    }
    o->bytes += o->len;
    o->len = 0;
    return 0;
}

/* Appends n bytes; writes large runs straight through. Returns 0 or -1 (message printed). */
static int out_write(gen_out *o, const void *p, size_t n)
{
    if (n > o->cap - o->len && out_flush(o) != 0)
        return -1;
    if (n >= o->cap) {
        if (write_all(o->fd, p, n) != 0) {
            fprintf(stderr, "embd gen: cannot write '%s': %s\n", o->tmp, strerror(errno));
            return -1;
        }
        o->bytes += n;
        return 0;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

static void out_free(gen_out *o)
{
    free(o->tmp);
    free(o->buf);
    out_init(o);
}

/* Flushes, fsyncs, closes and renames the file into place, then frees o. Returns 0 or -1
 * (message printed; the temporary file is removed). */
static int out_commit(gen_out *o)
{
    const char *what = "write";
    if (out_flush(o) != 0)
        goto fail;
    what = "sync";
    if (fsync(o->fd) != 0)
        goto fail_errno;
    what = "close";
    int fd = o->fd;
    o->fd = -1;
    if (close(fd) != 0)
        goto fail_errno;
    what = "rename";
    if (rename(o->tmp, o->path) != 0)
        goto fail_errno;
    out_free(o);
    return 0;

fail_errno:
    fprintf(stderr, "embd gen: cannot %s '%s': %s\n", what, o->tmp, strerror(errno));
fail:
    if (o->fd >= 0)
        close(o->fd);
    unlink(o->tmp);
    out_free(o);
    return -1;
}

/* Closes and removes the temporary file, then frees o. Accepts an unopened o. */
static void out_abort(gen_out *o)
{
    if (o->fd >= 0) {
        close(o->fd);
        unlink(o->tmp);
    }
    out_free(o);
}

/* floor(|v| * 10^p), |v| = m * 2^e, with the remainder's place against half a unit: returns
 * the quotient and sets *round_up when the exact value rounds (half to even) to quotient + 1.
 * Callers keep both sides below 2^62: p in -5..11, |v| in [1e-5, 1e9). */
static uint64_t scaled_digits(uint32_t m, int e, int p, int *round_up)
{
    static const uint64_t pow10[] = {1ull,         10ull,         100ull,         1000ull,
                                     10000ull,     100000ull,     1000000ull,     10000000ull,
                                     100000000ull, 1000000000ull, 10000000000ull, 100000000000ull};
    uint64_t num = m, den = 1;
    if (p >= 0)
        num *= pow10[p];
    else
        den = pow10[-p];
    if (e >= 0)
        num <<= e;
    else
        den <<= -e;
    uint64_t q = num / den, r = num % den;
    *round_up = 2 * r > den || (2 * r == den && (q & 1));
    return q;
}

/* Writes " " and v as printf's "%.6g" would in the C locale into dst (at least 24 bytes) and
 * returns the length. The common range, 1e-5 <= |v| < 1e9, is formatted here from the exact
 * binary value with integer arithmetic, rounding half to even as glibc does, at a fifth of
 * snprintf's cost (text output is otherwise bound by it); everything else (zero, tiny, huge,
 * infinities, NaN) goes to snprintf. */
static size_t format_g6(char *dst, float v)
{
    uint32_t x;
    memcpy(&x, &v, sizeof x);
    uint32_t ax = x & 0x7fffffff;
    if (ax < 0x3727c5ac || ax >= 0x4e6e6b28)
        return (size_t)snprintf(dst, 24, " %.6g", (double)v);

    /* |v| = m * 2^e; find the decimal exponent x10 with 10^5 <= |v| * 10^(5 - x10) < 10^6,
     * starting from floor(log2 |v| * 0.30103), which is within one of it. */
    uint32_t m = (ax & 0x7fffff) | 0x800000;
    int e = (int)(ax >> 23) - 150, b = (int)(ax >> 23) - 127;
    int x10 = b >= 0 ? (b * 1233) >> 12 : -((-b * 1233 + 4095) >> 12);
    int up;
    uint64_t q = scaled_digits(m, e, 5 - x10, &up);
    while (q >= 1000000)
        q = scaled_digits(m, e, 5 - ++x10, &up);
    while (q < 100000)
        q = scaled_digits(m, e, 5 - --x10, &up);
    q += (uint64_t)up;
    if (q == 1000000) {
        q = 100000;
        x10++;
    }

    char digits[6];
    for (int i = 5; i >= 0; i--, q /= 10)
        digits[i] = (char)('0' + q % 10);
    int nd = 6; /* significant digits left after dropping trailing zeros, as %g does */
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;

    char *p = dst;
    *p++ = ' ';
    if (x >> 31)
        *p++ = '-';
    if (x10 < -4 || x10 >= 6) { /* d[.ddddd]e[+-]XX */
        *p++ = digits[0];
        if (nd > 1) {
            *p++ = '.';
            for (int i = 1; i < nd; i++)
                *p++ = digits[i];
        }
        int ax10 = x10 < 0 ? -x10 : x10;
        *p++ = 'e';
        *p++ = x10 < 0 ? '-' : '+';
        *p++ = (char)('0' + ax10 / 10);
        *p++ = (char)('0' + ax10 % 10);
    } else if (x10 >= 0) { /* ddd[.ddd] */
        for (int i = 0; i <= x10; i++)
            *p++ = digits[i];
        if (nd > x10 + 1) {
            *p++ = '.';
            for (int i = x10 + 1; i < nd; i++)
                *p++ = digits[i];
        }
    } else { /* 0.000ddd */
        *p++ = '0';
        *p++ = '.';
        for (int i = -1; i > x10; i--)
            *p++ = '0';
        for (int i = 0; i < nd; i++)
            *p++ = digits[i];
    }
    return (size_t)(p - dst);
}

/* Appends " %.6g" of v (see format_g6). Returns 0 or -1. */
static int out_value(gen_out *o, float v)
{
    if (o->cap - o->len < 32 && out_flush(o) != 0)
        return -1;
    o->len += format_g6(o->buf + o->len, v);
    return 0;
}

static int out_text(gen_out *o, const char *s)
{
    return out_write(o, s, strlen(s));
}

/* ---- options -------------------------------------------------------------------------- */

typedef enum gen_kind { GEN_KIND_DEMO, GEN_KIND_CLUSTERS } gen_kind;

typedef struct gen_opts {
    gen_kind kind;
    const char *out;      /* NULL when only keys are wanted */
    const char *keys_out; /* NULL when not wanted */
    uint64_t rows, clusters, seed;
    uint32_t dim;
    double noise;
    int f16;  /* .npy element type is '<f2' */
    int text; /* -o gets GloVe text (always for demo, for clusters when it ends in .txt) */
    int quiet;
} gen_opts;

/* Progress and the closing summary. */
typedef struct gen_clock {
    struct timespec start, last;
    int tty;
} gen_clock;

static double seconds_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) * 1e-9;
}

static void progress(gen_clock *c, uint64_t done, uint64_t total)
{
    if (!c->tty || seconds_since(&c->last) < 1.0)
        return;
    clock_gettime(CLOCK_MONOTONIC, &c->last);
    fprintf(stderr, "\rembd gen: %llu / %llu rows (%.0f%%)", (unsigned long long)done,
            (unsigned long long)total, 100.0 * (double)done / (double)total);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: embd gen --kind demo|clusters -o FILE [options]\n"
            "\n"
            "Writes input files for demos and benchmarks.\n"
            "\n"
            "  -k, --kind KIND      what to generate (required):\n"
            "                         demo      ~300 English words in 12 topics, GloVe text, so\n"
            "                                   neighbours make sense (apple finds fruits)\n"
            "                         clusters  --rows rows around --clusters random centres;\n"
            "                                   .npy, or GloVe text with keys item<N> for .txt\n"
            "  -o, --output FILE    file to write; written to FILE.tmp.XXXXXX, then renamed\n"
            "                       (required unless --keys-out is given)\n"
            "  -n, --rows N         clusters: rows, 1..%llu (default %llu)\n"
            "  -d, --dim D          values per row, 1..%u (default %u for demo, %u for clusters)\n"
            "  -c, --clusters C     clusters: centres, 1..rows (default %llu, or rows if fewer)\n"
            "      --noise X        noise norm / centre norm, 0 or %g..%g (default %g for demo,\n"
            "                       %g for clusters)\n"
            "  -s, --seed S         PRNG seed; same seed and options, same bytes (default %llu)\n"
            "      --dtype T        clusters .npy element type: f32 or f16 (default f32)\n"
            "      --keys-out FILE  also write every row's key, one a line (default none)\n"
            "  -q, --quiet          no progress or summary (default off)\n"
            "  -h, --help           print this help and exit\n"
            "\n"
            "examples:\n"
            "  embd gen --kind demo -o demo.txt\n"
            "  embd gen --kind clusters --rows 1000000 --dim 768 -o bench.npy\n"
            "  embd gen --kind clusters --rows 100000 --dim 300 -o bench.txt\n",
            GEN_MAX_ROWS, GEN_DEFAULT_ROWS, GEN_MAX_DIM, GEN_DEMO_DIM, GEN_CLUSTERS_DIM,
            GEN_DEFAULT_CLUSTERS, GEN_MIN_NOISE, GEN_MAX_NOISE, GEN_DEMO_NOISE, GEN_CLUSTERS_NOISE,
            GEN_DEFAULT_SEED);
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

static int bad_value(const char *opt, const char *value, const char *want)
{
    fprintf(stderr, "embd gen: invalid %s '%s': expected %s\n", opt, value, want);
    return 2;
}

/* Parses argv into o. Returns -1 to go on, or an exit code (0 after --help, 2 on a usage
 * error, with a message printed). */
static int parse_opts(int argc, char **argv, gen_opts *o)
{
    enum { OPT_NOISE = 256, OPT_DTYPE, OPT_KEYS_OUT };
    static const struct option longopts[] = {
        {"kind", required_argument, NULL, 'k'},
        {"output", required_argument, NULL, 'o'},
        {"rows", required_argument, NULL, 'n'},
        {"dim", required_argument, NULL, 'd'},
        {"clusters", required_argument, NULL, 'c'},
        {"noise", required_argument, NULL, OPT_NOISE},
        {"seed", required_argument, NULL, 's'},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"keys-out", required_argument, NULL, OPT_KEYS_OUT},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *kind = NULL, *rows = NULL, *clusters = NULL, *dtype = NULL;
    unsigned long long v;
    int have_dim = 0, have_noise = 0;

    memset(o, 0, sizeof *o);
    o->seed = GEN_DEFAULT_SEED;
    optind = 0; /* GNU: restart scanning, so cmd_gen can run more than once in a process */
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, ":k:o:n:d:c:s:qh", longopts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'k': kind = optarg; break;
        case 'o': o->out = optarg; break;
        case 'n': rows = optarg; break;
        case 'd':
            if (cli_parse_u64(optarg, GEN_MAX_DIM, &v) != 0 || v == 0)
                return bad_value("--dim", optarg, "an integer in 1..65536");
            o->dim = (uint32_t)v;
            have_dim = 1;
            break;
        case 'c': clusters = optarg; break;
        case OPT_NOISE: {
            char *end;
            errno = 0;
            double x = strtod(optarg, &end);
            if (errno || end == optarg || *end ||
                !(x == 0 || (x >= GEN_MIN_NOISE && x <= GEN_MAX_NOISE)))
                return bad_value("--noise", optarg, "0, or a number in 1e-06..100");
            o->noise = x;
            have_noise = 1;
            break;
        }
        case 's':
            if (cli_parse_u64(optarg, GEN_MAX_SEED, &v) != 0)
                return bad_value("--seed", optarg, "an unsigned 64-bit integer");
            o->seed = v;
            break;
        case OPT_DTYPE:
            if (strcmp(optarg, "f32") && strcmp(optarg, "f16"))
                return bad_value("--dtype", optarg, "f32 or f16");
            dtype = optarg;
            break;
        case OPT_KEYS_OUT: o->keys_out = optarg; break;
        case 'q': o->quiet = 1; break;
        case 'h': usage(stdout); return 0;
        case ':':
            fprintf(stderr, "embd gen: option '%s' needs a value\n", argv[optind - 1]);
            return 2;
        default:
            if (optopt)
                fprintf(stderr, "embd gen: unknown option '-%c'\n", optopt);
            else
                fprintf(stderr, "embd gen: unknown option '%s'\n", argv[optind - 1]);
            fprintf(stderr, "Try 'embd gen --help'.\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "embd gen: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }

    if (!kind) {
        fprintf(stderr, "embd gen: --kind is required (demo or clusters); see --help\n");
        return 2;
    }
    if (!strcmp(kind, "demo"))
        o->kind = GEN_KIND_DEMO;
    else if (!strcmp(kind, "clusters"))
        o->kind = GEN_KIND_CLUSTERS;
    else
        return bad_value("--kind", kind, "demo or clusters");
    if ((o->out && !*o->out) || (o->keys_out && !*o->keys_out)) {
        fprintf(stderr, "embd gen: empty file name\n");
        return 2;
    }
    if (!o->out && !o->keys_out) {
        fprintf(stderr, "embd gen: say where to write with -o FILE (or --keys-out FILE)\n");
        return 2;
    }
    if (o->out && o->keys_out && !strcmp(o->out, o->keys_out)) {
        fprintf(stderr, "embd gen: -o and --keys-out name the same file\n");
        return 2;
    }
    if (!have_dim)
        o->dim = o->kind == GEN_KIND_DEMO ? GEN_DEMO_DIM : GEN_CLUSTERS_DIM;
    if (!have_noise)
        o->noise = o->kind == GEN_KIND_DEMO ? GEN_DEMO_NOISE : GEN_CLUSTERS_NOISE;

    if (o->kind == GEN_KIND_DEMO) {
        const char *only = rows ? "--rows" : clusters ? "--clusters" : dtype ? "--dtype" : NULL;
        if (only) {
            fprintf(stderr, "embd gen: %s applies to --kind clusters only\n", only);
            return 2;
        }
        if (o->out && has_suffix(o->out, ".npy")) {
            fprintf(stderr, "embd gen: --kind demo writes GloVe text; name it .txt\n");
            return 2;
        }
        o->text = 1;
        return -1;
    }

    o->rows = GEN_DEFAULT_ROWS;
    if (rows && (cli_parse_u64(rows, GEN_MAX_ROWS, &v) != 0 || v == 0))
        return bad_value("--rows", rows, "an integer in 1..1000000000");
    if (rows)
        o->rows = v;
    o->clusters = o->rows < GEN_DEFAULT_CLUSTERS ? o->rows : GEN_DEFAULT_CLUSTERS;
    if (clusters && (cli_parse_u64(clusters, o->rows, &v) != 0 || v == 0)) {
        fprintf(stderr,
                "embd gen: invalid --clusters '%s': expected an integer in 1..%llu "
                "(the row count)\n",
                clusters, (unsigned long long)o->rows);
        return 2;
    }
    if (clusters)
        o->clusters = v;
    if (o->clusters * o->dim > GEN_CENTRES_MAX_BYTES / sizeof(float)) {
        fprintf(stderr,
                "embd gen: %llu centres of %u values would need %.1f GiB; lower "
                "--clusters or --dim\n",
                (unsigned long long)o->clusters, o->dim,
                (double)o->clusters * o->dim * sizeof(float) / (1u << 30));
        return 2;
    }
    if (o->out) {
        if (has_suffix(o->out, ".txt"))
            o->text = 1;
        else if (!has_suffix(o->out, ".npy")) {
            fprintf(stderr, "embd gen: -o must end in .npy or .txt for --kind clusters\n");
            return 2;
        }
    }
    if (dtype && o->text) {
        fprintf(stderr, "embd gen: --dtype applies to .npy output only\n");
        return 2;
    }
    o->f16 = dtype && !strcmp(dtype, "f16");
    return -1;
}

/* ---- the demo table -------------------------------------------------------------------- */

enum {
    T_FRUITS,
    T_COLOURS,
    T_ANIMALS,
    T_COUNTRIES,
    T_INSTRUMENTS,
    T_VEHICLES,
    T_LANGUAGES,
    T_PLANETS,
    T_SPORTS,
    T_METALS,
    T_WEATHER,
    T_BODY,
    T_COUNT
};

static const char *const demo_fruits[] = {
    "apple",     "banana",    "cherry",     "grape",     "lemon",       "mango",      "peach",
    "pear",      "plum",      "strawberry", "raspberry", "blueberry",   "watermelon", "pineapple",
    "apricot",   "papaya",    "coconut",    "fig",       "pomegranate", "grapefruit", "tangerine",
    "nectarine", "cranberry", "blackberry", "melon",     "guava",       NULL};
static const char *const demo_colours[] = {
    "red",    "blue",   "green",  "yellow",   "purple",  "pink",      "brown",   "black", "white",
    "grey",   "violet", "indigo", "crimson",  "scarlet", "turquoise", "magenta", "cyan",  "beige",
    "maroon", "navy",   "teal",   "lavender", "ivory",   "amber",     NULL};
static const char *const demo_animals[] = {
    "dog",   "cat",     "horse",    "cow",       "sheep",    "goat",   "pig",
    "lion",  "tiger",   "elephant", "giraffe",   "zebra",    "monkey", "bear",
    "wolf",  "fox",     "rabbit",   "deer",      "kangaroo", "camel",  "squirrel",
    "otter", "leopard", "cheetah",  "crocodile", NULL};
static const char *const demo_countries[] = {
    "france",    "germany", "italy",   "spain",    "portugal", "japan",   "china",
    "india",     "brazil",  "canada",  "mexico",   "egypt",    "kenya",   "nigeria",
    "norway",    "sweden",  "finland", "poland",   "greece",   "ireland", "australia",
    "argentina", "peru",    "vietnam", "thailand", NULL};
static const char *const demo_instruments[] = {
    "piano",     "guitar",    "violin",     "cello", "flute",     "clarinet",  "trumpet",
    "trombone",  "saxophone", "drum",       "harp",  "banjo",     "ukulele",   "mandolin",
    "accordion", "oboe",      "bassoon",    "tuba",  "harmonica", "xylophone", "bagpipes",
    "sitar",     "viola",     "tambourine", NULL};
static const char *const demo_vehicles[] = {
    "car",  "truck", "bus",       "bicycle", "motorcycle", "train",      "tram",
    "van",  "taxi",  "scooter",   "tractor", "ambulance",  "helicopter", "airplane",
    "boat", "ship",  "submarine", "yacht",   "canoe",      "limousine",  "minivan",
    "jeep", "lorry", "ferry",     NULL};
static const char *const demo_languages[] = {
    "java",    "javascript", "typescript", "kotlin", "haskell", "perl",   "php",
    "fortran", "cobol",      "lisp",       "scheme", "erlang",  "elixir", "scala",
    "clojure", "pascal",     "ada",        "prolog", "lua",     "julia",  "golang",
    "ocaml",   "smalltalk",  "matlab",     NULL};
static const char *const demo_planets[] = {
    "venus",  "earth",     "mars",   "jupiter", "saturn",   "uranus",   "neptune",
    "pluto",  "moon",      "sun",    "comet",   "asteroid", "galaxy",   "nebula",
    "ceres",  "eris",      "titan",  "europa",  "ganymede", "callisto", "phobos",
    "deimos", "enceladus", "triton", "charon",  NULL};
static const char *const demo_sports[] = {
    "football", "soccer",       "tennis",    "basketball", "baseball", "golf",   "hockey",
    "rugby",    "volleyball",   "badminton", "swimming",   "cycling",  "boxing", "wrestling",
    "skiing",   "snowboarding", "surfing",   "archery",    "fencing",  "rowing", "sailing",
    "karate",   "judo",         "bowling",   "handball",   "lacrosse", NULL};
static const char *const demo_metals[] = {
    "iron",     "copper", "zinc",     "tin",      "lead",      "nickel",  "aluminium", "titanium",
    "platinum", "cobalt", "chromium", "tungsten", "magnesium", "lithium", "sodium",    "potassium",
    "uranium",  "bronze", "brass",    "steel",    "palladium", NULL};
static const char *const demo_weather[] = {
    "rain",      "snow",     "wind",     "storm",   "thunder",  "lightning", "fog",
    "mist",      "hail",     "sleet",    "drizzle", "cloud",    "sunshine",  "rainbow",
    "hurricane", "tornado",  "blizzard", "frost",   "humidity", "breeze",    "monsoon",
    "drought",   "heatwave", "typhoon",  "gale",    NULL};
static const char *const demo_body[] = {
    "head", "arm",   "leg",    "hand",    "foot",  "finger", "toe",    "knee",  "elbow", "shoulder",
    "neck", "nose",  "ear",    "eye",     "mouth", "tooth",  "tongue", "lip",   "chin",  "heart",
    "lung", "liver", "kidney", "stomach", "brain", "skin",   "spine",  "ankle", "wrist", NULL};

static const char *const *const demo_topics[T_COUNT] = {
    [T_FRUITS] = demo_fruits,           [T_COLOURS] = demo_colours,
    [T_ANIMALS] = demo_animals,         [T_COUNTRIES] = demo_countries,
    [T_INSTRUMENTS] = demo_instruments, [T_VEHICLES] = demo_vehicles,
    [T_LANGUAGES] = demo_languages,     [T_PLANETS] = demo_planets,
    [T_SPORTS] = demo_sports,           [T_METALS] = demo_metals,
    [T_WEATHER] = demo_weather,         [T_BODY] = demo_body,
};

/* Words with two senses, placed between the centres of their two topics. */
typedef struct demo_shared {
    const char *word;
    int a, b;
} demo_shared;

static const demo_shared demo_two_senses[] = {
    {"orange", T_FRUITS, T_COLOURS},   {"lime", T_FRUITS, T_COLOURS},
    {"kiwi", T_FRUITS, T_ANIMALS},     {"python", T_ANIMALS, T_LANGUAGES},
    {"jaguar", T_ANIMALS, T_VEHICLES}, {"mustang", T_ANIMALS, T_VEHICLES},
    {"mercury", T_PLANETS, T_METALS},  {"gold", T_METALS, T_COLOURS},
    {"silver", T_METALS, T_COLOURS},   {"turkey", T_COUNTRIES, T_ANIMALS},
    {"organ", T_INSTRUMENTS, T_BODY},  {"ruby", T_LANGUAGES, T_COLOURS},
    {"rust", T_LANGUAGES, T_METALS},   {"swift", T_LANGUAGES, T_ANIMALS},
    {"cricket", T_SPORTS, T_ANIMALS},  {"chile", T_COUNTRIES, T_FRUITS},
};

#define DEMO_N_SHARED (sizeof demo_two_senses / sizeof demo_two_senses[0])

/* Scales v[0..dim) to unit length (left alone when zero). */
static void normalise(double *v, uint32_t dim)
{
    double n2 = 0;
    for (uint32_t j = 0; j < dim; j++)
        n2 += v[j] * v[j];
    if (n2 > 0) {
        double inv = 1.0 / sqrt(n2);
        for (uint32_t j = 0; j < dim; j++)
            v[j] *= inv;
    }
}

/* Writes one demo row: base (unit length) plus gaussian noise of expected norm noise * spread,
 * spread uniform in [0.75, 1.25) so that neighbours are not all equally close. */
static int demo_row(gen_out *o, gen_rng *r, const char *word, const double *base, uint32_t dim,
                    double noise)
{
    double sigma = noise * (0.75 + 0.5 * rng_unit(r)) / sqrt((double)dim);
    if (out_text(o, word) != 0)
        return -1;
    for (uint32_t j = 0; j < dim; j++) {
        double v = base[j] + sigma * rng_gauss(r);
        if (out_value(o, (float)v) != 0)
            return -1;
    }
    return out_write(o, "\n", 1);
}

/* Writes the demo table (when o is open) and its keys (when keys is open). Returns the row
 * count, or -1 (message printed). */
static long demo_write(gen_out *o, gen_out *keys, uint32_t dim, uint64_t seed, double noise)
{
    long rows = -1;
    double *centres = malloc(sizeof(double) * dim * (T_COUNT + 1));
    if (!centres) {
        fprintf(stderr, "embd gen: out of memory\n");
        return -1;
    }
    double *mix = centres + (size_t)dim * T_COUNT;
    gen_rng r;
    rng_seed(&r, seed, GEN_STREAM_DEMO);
    for (int t = 0; t < T_COUNT; t++) {
        double *c = centres + (size_t)dim * t;
        for (uint32_t j = 0; j < dim; j++)
            c[j] = rng_gauss(&r);
        normalise(c, dim);
    }

    long n = 0;
    for (int t = 0; t < T_COUNT; t++) {
        for (const char *const *w = demo_topics[t]; *w; w++, n++) {
            if (o->fd >= 0 && demo_row(o, &r, *w, centres + (size_t)dim * t, dim, noise) != 0)
                goto out;
            if (keys->fd >= 0 && (out_text(keys, *w) != 0 || out_write(keys, "\n", 1) != 0))
                goto out;
        }
    }
    for (size_t i = 0; i < DEMO_N_SHARED; i++, n++) {
        const demo_shared *s = &demo_two_senses[i];
        for (uint32_t j = 0; j < dim; j++)
            mix[j] = centres[(size_t)dim * s->a + j] + centres[(size_t)dim * s->b + j];
        normalise(mix, dim);
        if (o->fd >= 0 && demo_row(o, &r, s->word, mix, dim, noise) != 0)
            goto out;
        if (keys->fd >= 0 && (out_text(keys, s->word) != 0 || out_write(keys, "\n", 1) != 0))
            goto out;
    }
    rows = n;
out:
    free(centres);
    return rows;
}

/* ---- clustered rows -------------------------------------------------------------------- */

/* The .npy v1 header for rows x dim of '<f4' or '<f2', padded with spaces so the data starts at
 * a multiple of 64. Writes into hdr (at least 128 bytes) and returns its length. */
static size_t npy_header(char *hdr, uint64_t rows, uint32_t dim, int f16)
{
    char dict[96];
    int n = snprintf(dict, sizeof dict,
                     "{'descr': '%s', 'fortran_order': False, 'shape': (%llu, %u), }",
                     f16 ? "<f2" : "<f4", (unsigned long long)rows, dim);
    size_t total = (10 + (size_t)n + 1 + 63) / 64 * 64;
    size_t hlen = total - 10;
    memcpy(hdr, "\x93NUMPY\x01\x00", 8);
    hdr[8] = (char)(hlen & 0xff);
    hdr[9] = (char)(hlen >> 8);
    memcpy(hdr + 10, dict, (size_t)n);
    memset(hdr + 10 + n, ' ', hlen - (size_t)n - 1);
    hdr[total - 1] = '\n';
    return total;
}

/* Everything the row generator needs; owned buffers freed by clusters_free. */
typedef struct gen_clusters {
    uint32_t dim;
    uint64_t n_centres;
    float *centres; /* n_centres x dim, in noise units (or absolute when noise is 0) */
    float scale;    /* noise units to values; 0 when noise is 0 */
    gen_rng assign; /* which centre each row belongs to */
    gen_lanes lanes;
} gen_clusters;

static void clusters_free(gen_clusters *g)
{
    free(g->centres);
    g->centres = NULL;
}

static int clusters_init(gen_clusters *g, const gen_opts *o)
{
    memset(g, 0, sizeof *g);
    g->dim = o->dim;
    g->n_centres = o->clusters;
    g->centres = malloc(sizeof(float) * o->clusters * o->dim);
    if (!g->centres) {
        fprintf(stderr, "embd gen: out of memory for %llu centres of %u values\n",
                (unsigned long long)o->clusters, o->dim);
        return -1;
    }
    /* Centres are unit gaussians per value, stored divided by the noise scale so that a value
     * is (centre + k) * scale with k the integer gaussian (see the design comment). Each
     * centre, like each row, uses ceil(dim / 8) groups of eight draws. */
    gen_lanes cl;
    lanes_seed(&cl, o->seed, GEN_STREAM_CENTRES);
    for (uint64_t c = 0; c < o->clusters; c++) {
        float *dst = g->centres + c * o->dim;
        for (uint32_t j = 0; j < o->dim; j += GEN_LANES) {
            gen_i32x4 k[2];
            lanes_gauss(&cl, k);
            for (uint32_t i = 0; i < GEN_LANES && j + i < o->dim; i++) {
                int32_t ki = k[i / 4][i % 4];
                dst[j + i] = o->noise > 0 ? (float)((double)ki / o->noise)
                                          : (float)ki * (float)GEN_GAUSS_SCALE;
            }
        }
    }
    g->scale = (float)(o->noise * GEN_GAUSS_SCALE);
    rng_seed(&g->assign, o->seed, GEN_STREAM_ASSIGN);
    lanes_seed(&g->lanes, o->seed, GEN_STREAM_NOISE);
    return 0;
}

/* Produces the next row into out[dim]. */
static void clusters_row(gen_clusters *g, float *out)
{
    uint64_t c = ((rng_next(&g->assign) >> 32) * g->n_centres) >> 32;
    const float *centre = g->centres + c * g->dim;
    if (g->scale == 0) {
        memcpy(out, centre, sizeof(float) * g->dim);
        return;
    }
    gen_lanes st = g->lanes;
    float s = g->scale;
    uint32_t dim = g->dim, j = 0;
    gen_i32x4 k[2];
    for (; j + GEN_LANES <= dim; j += GEN_LANES) {
        lanes_gauss(&st, k);
        for (int v = 0; v < 2; v++) {
            gen_f32x4 c4;
            memcpy(&c4, centre + j + 4 * v, sizeof c4);
            gen_f32x4 r4 = (c4 + __builtin_convertvector(k[v], gen_f32x4)) * s;
            memcpy(out + j + 4 * v, &r4, sizeof r4);
        }
    }
    if (j < dim) { /* the last group: same arithmetic, the draws past dim are dropped */
        lanes_gauss(&st, k);
        for (uint32_t i = 0; j + i < dim; i++)
            out[j + i] = (centre[j + i] + (float)k[i / 4][i % 4]) * s;
    }
    g->lanes = st;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
static void to_little_endian(void *p, size_t n, size_t width)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++, b += width)
        for (size_t lo = 0, hi = width - 1; lo < hi; lo++, hi--) {
            unsigned char t = b[lo];
            b[lo] = b[hi];
            b[hi] = t;
        }
}
#else
static void to_little_endian(void *p, size_t n, size_t width)
{
    (void)p, (void)n, (void)width;
}
#endif

/* The .npy pipeline: a worker thread fills one block buffer while the calling thread writes the
 * other, so generating overlaps writing instead of adding to it. One thread still makes every
 * row in order, so the bytes do not depend on the pipeline or the block size. */
typedef struct gen_pipe {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* at most one thread waits at a time, so signal is enough */
    gen_clusters g;
    uint64_t rows;
    uint32_t dim;
    int f16;
    size_t block, row_bytes;
    char *buf[2];
    size_t fill[2]; /* rows ready in buf[i]; 0 when the buffer is free */
    int stop;       /* set by the writer after a failure: the worker quits */
    float *row;     /* f16 scratch, dim floats */
} gen_pipe;

/* Makes the next n rows into buf (worker thread). */
static void pipe_make(gen_pipe *p, char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *dst = buf + i * p->row_bytes;
        if (!p->f16) {
            clusters_row(&p->g, (float *)(void *)dst);
            continue;
        }
        clusters_row(&p->g, p->row);
        f16_row(p->row, (uint16_t *)(void *)dst, p->dim);
    }
    to_little_endian(buf, n * p->dim, p->f16 ? 2 : 4);
}

static void *pipe_worker(void *arg)
{
    gen_pipe *p = arg;
    uint64_t done = 0;
    for (unsigned b = 0; done < p->rows; b ^= 1) {
        pthread_mutex_lock(&p->mu);
        while (p->fill[b] && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        int stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            break;
        size_t n = p->rows - done < p->block ? (size_t)(p->rows - done) : p->block;
        pipe_make(p, p->buf[b], n);
        pthread_mutex_lock(&p->mu);
        p->fill[b] = n;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        done += n;
    }
    return NULL;
}

/* Writes the blocks the worker makes, in order (calling thread). Returns 0 or -1. */
static int pipe_drain(gen_pipe *p, gen_out *o, gen_clock *clk)
{
    uint64_t done = 0;
    for (unsigned b = 0; done < p->rows; b ^= 1) {
        pthread_mutex_lock(&p->mu);
        while (!p->fill[b])
            pthread_cond_wait(&p->cv, &p->mu);
        size_t n = p->fill[b];
        pthread_mutex_unlock(&p->mu);
        int rc = out_write(o, p->buf[b], n * p->row_bytes);
        pthread_mutex_lock(&p->mu);
        if (rc != 0)
            p->stop = 1;
        else
            p->fill[b] = 0;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        if (rc != 0)
            return -1;
        done += n;
        progress(clk, done, p->rows);
    }
    return 0;
}

/* Streams the rows into o as a .npy file. Returns 0 or -1 (message printed). */
static int clusters_npy(gen_out *o, const gen_opts *opt, gen_clock *clk)
{
    int rc = -1, err = 0;
    gen_pipe p;
    memset(&p, 0, sizeof p);
    p.rows = opt->rows;
    p.dim = opt->dim;
    p.f16 = opt->f16;
    p.row_bytes = (opt->f16 ? 2 : 4) * (size_t)opt->dim;
    p.block = GEN_BLOCK_BYTES / p.row_bytes;
    p.block = p.block < 1 ? 1 : p.block > GEN_BLOCK_ROWS ? GEN_BLOCK_ROWS : p.block;
    if (clusters_init(&p.g, opt) != 0)
        return -1;
    p.buf[0] = malloc(p.row_bytes * p.block);
    p.buf[1] = malloc(p.row_bytes * p.block);
    p.row = malloc(sizeof(float) * opt->dim);
    if (!p.buf[0] || !p.buf[1] || !p.row) {
        fprintf(stderr, "embd gen: out of memory\n");
        goto fail_buffers;
    }
    char hdr[128];
    if (out_write(o, hdr, npy_header(hdr, opt->rows, opt->dim, opt->f16)) != 0 || out_flush(o) != 0)
        goto fail_buffers;
    if ((err = pthread_mutex_init(&p.mu, NULL)) != 0)
        goto fail_mutex;
    if ((err = pthread_cond_init(&p.cv, NULL)) != 0)
        goto fail_cond;
    pthread_t worker;
    if ((err = pthread_create(&worker, NULL, pipe_worker, &p)) != 0)
        goto fail_thread;
    rc = pipe_drain(&p, o, clk);
    pthread_join(worker, NULL);

fail_thread:
    pthread_cond_destroy(&p.cv);
fail_cond:
    pthread_mutex_destroy(&p.mu);
fail_mutex:
    if (err)
        fprintf(stderr, "embd gen: cannot start the generator thread: %s\n", strerror(err));
fail_buffers:
    free(p.row);
    free(p.buf[1]);
    free(p.buf[0]);
    clusters_free(&p.g);
    return rc;
}

/* Streams the rows into o as GloVe text with keys item<N>. Returns 0 or -1. */
static int clusters_text(gen_out *o, const gen_opts *opt, gen_clock *clk)
{
    int rc = -1;
    gen_clusters g;
    if (clusters_init(&g, opt) != 0)
        return -1;
    float *row = malloc(sizeof(float) * opt->dim);
    if (!row) {
        fprintf(stderr, "embd gen: out of memory\n");
        goto out;
    }
    for (uint64_t i = 0; i < opt->rows; i++) {
        char key[32];
        snprintf(key, sizeof key, "item%llu", (unsigned long long)i);
        clusters_row(&g, row);
        if (out_text(o, key) != 0)
            goto out;
        for (uint32_t j = 0; j < opt->dim; j++)
            if (out_value(o, row[j]) != 0)
                goto out;
        if (out_write(o, "\n", 1) != 0)
            goto out;
        if ((i & 4095) == 4095)
            progress(clk, i + 1, opt->rows);
    }
    rc = 0;
out:
    free(row);
    clusters_free(&g);
    return rc;
}

static int item_keys(gen_out *o, uint64_t rows)
{
    for (uint64_t i = 0; i < rows; i++) {
        char key[32];
        int n = snprintf(key, sizeof key, "item%llu\n", (unsigned long long)i);
        if (out_write(o, key, (size_t)n) != 0)
            return -1;
    }
    return 0;
}

/* ---- the command ----------------------------------------------------------------------- */

int cmd_gen(int argc, char **argv)
{
    gen_opts opt;
    int rc = parse_opts(argc, argv, &opt);
    if (rc >= 0)
        return rc;

    /* "%.6g" must print a '.' whatever locale the process runs in. */
    locale_t c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    locale_t saved = c_locale ? uselocale(c_locale) : (locale_t)0;
    gen_clock clk = {.tty = !opt.quiet && isatty(STDERR_FILENO)};
    clock_gettime(CLOCK_MONOTONIC, &clk.start);
    clk.last = clk.start;

    gen_out out, keys;
    out_init(&out);
    out_init(&keys);
    rc = 1;
    if (opt.out && out_open(&out, opt.out, opt.text ? GEN_TEXT_BUF : GEN_NPY_BUF) != 0)
        goto fail;
    if (opt.keys_out && out_open(&keys, opt.keys_out, GEN_TEXT_BUF) != 0)
        goto fail;

    if (opt.kind == GEN_KIND_DEMO) {
        long n = demo_write(&out, &keys, opt.dim, opt.seed, opt.noise);
        if (n < 0)
            goto fail;
        opt.rows = (uint64_t)n;
    } else {
        if (opt.out &&
            (opt.text ? clusters_text(&out, &opt, &clk) : clusters_npy(&out, &opt, &clk)) != 0)
            goto fail;
        if (opt.keys_out && item_keys(&keys, opt.rows) != 0)
            goto fail;
    }
    if (clk.tty && opt.kind == GEN_KIND_CLUSTERS)
        fprintf(stderr, "\r\033[K");

    uint64_t bytes = out.bytes + out.len;
    if (opt.out && out_commit(&out) != 0)
        goto fail;
    if (opt.keys_out && out_commit(&keys) != 0)
        goto fail;
    rc = 0;
    if (!opt.quiet) {
        double secs = seconds_since(&clk.start);
        const char *what = opt.text ? "text" : opt.f16 ? "f16" : "f32";
        if (opt.out)
            printf("embd gen: wrote %llu rows x %u (%s) to %s: %.1f MB in %.2f s, %.0f MB/s\n",
                   (unsigned long long)opt.rows, opt.dim, what, opt.out, (double)bytes / 1e6, secs,
                   (double)bytes / 1e6 / (secs > 0 ? secs : 1e-9));
        if (opt.keys_out)
            printf("embd gen: wrote %llu keys to %s\n", (unsigned long long)opt.rows, opt.keys_out);
    }

fail:
    out_abort(&out);
    out_abort(&keys);
    if (saved)
        uselocale(saved);
    if (c_locale)
        freelocale(c_locale);
    return rc;
}
