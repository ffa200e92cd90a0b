/*
 * gather_encode.c - the server-side cost of a gather response at the library level: for n
 * random ids, encode the answer with jsonw exactly as server/api.c's gather_run does
 * ({"vectors":[...],"missing":[]}): as JSON numbers (rows of an f16 store straight from the
 * mapping through the f16 text table, as put_row_f16 does; others decoded first) and as base64
 * f32 (decoded with emb_store_row); no HTTP, no socket. Prints the median and best of `reps` runs. Built and
 * run by run.sh:
 *
 *   cc -std=gnu11 -O2 -D_GNU_SOURCE -Ilib -Iserver loadtest/http/gather_encode.c server/jsonw.c \
 *       BUILD/libembd_lib.a -lm -lpthread -o gather_encode
 *   ./gather_encode STORE.emb [n=1000] [reps=51]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "emb.h"
#include "jsonw.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One gather answer; returns its length. */
static size_t encode(const emb_store *s, const uint64_t *ids, size_t n, int base64, float *v)
{
    jsonw w;
    size_t per = base64 ? (size_t)s->dim * 6 : (size_t)s->dim * 14;
    jsonw_init(&w, n * (per + 4) + n * 8 + 64);
    jsonw_cstr(&w, "{\"vectors\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            jsonw_char(&w, ',');
        if (!base64 && emb_store_primary_codec(s) == EMB_CODEC_F16) {
            jsonw_f16_array(&w, (const uint16_t *)(s->rows_f16 + ids[i] * s->stride_f16), s->dim);
            continue;
        }
        emb_store_row(s, ids[i], v);
        if (base64)
            jsonw_base64(&w, v, (size_t)s->dim * 4);
        else
            jsonw_float_array(&w, v, s->dim);
    }
    jsonw_cstr(&w, "],\"missing\":[]}");
    size_t len;
    free(jsonw_steal(&w, &len));
    return len;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: gather_encode STORE.emb [n] [reps]\n");
        return 2;
    }
    size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000;
    int reps = argc > 3 ? atoi(argv[3]) : 51;
    if (n == 0 || reps < 1) {
        fprintf(stderr, "gather_encode: n and reps must be positive\n");
        return 2;
    }
    jsonw_tables_init(); /* as embd serve does at start */
    emb_store *s;
    emb_error err;
    if (emb_store_open(&s, argv[1], &err) != 0) {
        fprintf(stderr, "gather_encode: cannot open %s\n", argv[1]);
        return 1;
    }
    uint64_t *ids = malloc(n * sizeof *ids);
    float *v = malloc((size_t)s->dim * sizeof *v);
    double *t = malloc((size_t)reps * sizeof *t);
    uint64_t x = 42;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        ids[i] = (x >> 33) % s->rows;
    }
    for (int b64 = 0; b64 <= 1; b64++) {
        size_t len = encode(s, ids, n, b64, v); /* warm up: page in the rows */
        for (int r = 0; r < reps; r++) {
            double t0 = now_ms();
            encode(s, ids, n, b64, v);
            t[r] = now_ms() - t0;
        }
        qsort(t, (size_t)reps, sizeof *t, cmp_double);
        printf("%s %zu rows x %u -> %zu B: median %.3f ms, best %.3f ms (%d runs, one thread)\n",
               b64 ? "base64" : "json", n, s->dim, len, t[reps / 2], t[0], reps);
    }
    free(t);
    free(v);
    free(ids);
    emb_store_close(s);
    return 0;
}
