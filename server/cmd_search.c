/*
 * cmd_search.c - `embd search STORE (--id N | --key K | --vector V) [-k 10]`: nearest
 * neighbours from the command line, for debugging and for the demo.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "emb.h"
#include "emb_reader.h"
#include "jsonutil.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: embd search STORE (--id N | --key K | --vector \"v1,v2,...\") [options]\n"
            "\n"
            "Prints the nearest neighbours, one per line: rank, id, key, score. A query by id or\n"
            "key excludes that row from the results.\n"
            "\n"
            "options:\n"
            "  -i, --id N            query with row N\n"
            "  -K, --key KEY         query with the row whose key is KEY\n"
            "  -v, --vector LIST     query with dim comma-separated numbers\n"
            "  -k, --k N             neighbours to return, 1..%u (default 10)\n"
            "  -m, --metric M        cos|dot|l2 (default: the store's)\n"
            "  -x, --exact           skip the 1-bit stage (exact scan of f16/f32 rows)\n"
            "  -o, --oversample N    two-stage candidates = k x N (default: the store's, from\n"
            "                        embd pack's evaluation, else 10)\n"
            "  -f, --first-stage Q   what the 1-bit rows are scored against: q8 (the query\n"
            "                        rounded to int8 per 128 values, default), q1 (its signs and\n"
            "                        block scales: XOR + popcount, faster, less accurate: use a\n"
            "                        larger --oversample) or f32\n"
            "  -j, --json            JSON output\n"
            "  -h, --help            this text\n",
            EMB_MAX_K);
}

/* Parses "v1,v2,..." into out[dim]; returns 0 or -1 with a message on stderr. */
static int parse_vector(const char *s, float *out, uint32_t dim)
{
    const char *p = s, *end = s + strlen(s);
    for (uint32_t i = 0; i < dim; i++) {
        while (p < end && (*p == ' ' || *p == '['))
            p++;
        const char *next = emb_parse_float(p, end, &out[i]);
        if (!next) {
            fprintf(stderr, "embd search: --vector: value %u is not a number\n", i);
            return -1;
        }
        p = next;
        while (p < end && *p == ' ')
            p++;
        if (i + 1 < dim) {
            if (p >= end || *p != ',') {
                fprintf(stderr, "embd search: --vector has %u values, the store has dim %u\n",
                        i + 1, dim);
                return -1;
            }
            p++;
        }
    }
    while (p < end && (*p == ' ' || *p == ']'))
        p++;
    if (p != end) {
        fprintf(stderr, "embd search: --vector has more than dim (%u) values\n", dim);
        return -1;
    }
    return 0;
}

int cmd_search(int argc, char **argv)
{
    static const struct option longopts[] = {{"id", required_argument, 0, 'i'},
                                             {"key", required_argument, 0, 'K'},
                                             {"vector", required_argument, 0, 'v'},
                                             {"k", required_argument, 0, 'k'},
                                             {"metric", required_argument, 0, 'm'},
                                             {"exact", no_argument, 0, 'x'},
                                             {"oversample", required_argument, 0, 'o'},
                                             {"first-stage", required_argument, 0, 'f'},
                                             {"json", no_argument, 0, 'j'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char *id_s = NULL, *key = NULL, *vec_s = NULL, *metric_s = NULL;
    emb_q1_query q1q = EMB_Q1_QUERY_Q8;
    unsigned long long v, k = 10, os = 0, id = 0;
    int exact = 0, json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "i:K:v:k:m:xo:f:jh", longopts, NULL)) != -1) {
        switch (c) {
        case 'i': id_s = optarg; break;
        case 'K': key = optarg; break;
        case 'v': vec_s = optarg; break;
        case 'k':
            if (cli_parse_u64(optarg, EMB_MAX_K, &v) != 0 || v == 0) {
                fprintf(stderr, "embd search: -k wants 1..%u\n", EMB_MAX_K);
                return 2;
            }
            k = v;
            break;
        case 'm': metric_s = optarg; break;
        case 'x': exact = 1; break;
        case 'o':
            if (cli_parse_u64(optarg, EMB_MAX_OVERSAMPLE, &v) != 0 || v == 0) {
                fprintf(stderr, "embd search: --oversample wants 1..%u\n", EMB_MAX_OVERSAMPLE);
                return 2;
            }
            os = v;
            break;
        case 'f':
            if (emb_q1_query_parse(optarg, &q1q) != 0) {
                fprintf(stderr, "embd search: --first-stage wants q8, q1 or f32\n");
                return 2;
            }
            break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || (!!id_s + !!key + !!vec_s) != 1) {
        fprintf(stderr, "embd search: need STORE and exactly one of --id, --key, --vector\n");
        usage(stderr);
        return 2;
    }
    emb_store *s;
    emb_error err = {0};
    if (emb_store_open(&s, argv[optind], &err) != 0) {
        fprintf(stderr, "embd search: %s\n", err.msg);
        return 1;
    }
    int status = 1;
    float *q = malloc((size_t)s->dim * sizeof *q);
    emb_hit *hits = malloc((size_t)EMB_MAX_K * sizeof *hits);
    emb_scratch *sc = emb_scratch_new(s->dim, (uint32_t)k * EMB_MAX_OVERSAMPLE);
    emb_search_params p = {.metric = s->metric,
                           .k = (uint32_t)k,
                           .oversample = (uint32_t)os,
                           .exact = exact,
                           .q1_query = q1q};
    if (!q || !hits || !sc) {
        fprintf(stderr, "embd search: out of memory\n");
        goto out;
    }
    if (metric_s && emb_metric_parse(metric_s, &p.metric) != 0) {
        fprintf(stderr, "embd search: --metric must be cos, dot or l2\n");
        status = 2;
        goto out;
    }
    if (id_s) {
        if (cli_parse_u64(id_s, UINT64_MAX, &id) != 0 || id >= s->rows) {
            fprintf(stderr, "embd search: --id %s: the store has rows 0..%llu\n", id_s,
                    (unsigned long long)s->rows - 1);
            goto out;
        }
    } else if (key) {
        uint64_t found;
        int rc = emb_store_find(s, key, strlen(key), &found);
        if (rc) {
            fprintf(stderr, "embd search: key '%s': %s\n", key,
                    rc == EMB_ENOTFOUND && !s->key_offs ? "the store has no keys"
                                                        : emb_strerror(rc));
            goto out;
        }
        id = found;
    }
    uint64_t self = id;
    if (vec_s) {
        if (parse_vector(vec_s, q, s->dim) != 0)
            goto out;
    } else {
        emb_store_row(s, id, q);
        p.exclude = &self;
        p.n_exclude = 1;
    }
    int n = emb_search(s, q, &p, sc, hits);
    if (n < 0) {
        fprintf(stderr, "embd search: %s\n", emb_strerror(n));
        goto out;
    }
    json_t *arr = json ? json_array() : NULL;
    for (int i = 0; i < n; i++) {
        const char *kk = NULL;
        size_t klen = 0;
        int has_key = emb_store_key(s, hits[i].id, &kk, &klen) == 0;
        if (json) {
            json_t *o = json_pack("{s:i, s:I}", "rank", i + 1, "id", (json_int_t)hits[i].id);
            if (has_key)
                json_object_set_new(o, "key", srv_json_bytes(kk, klen));
            json_object_set_new(o, "score", srv_json_real(hits[i].score));
            json_array_append_new(arr, o);
        } else {
            printf("%4d  %10llu  %-24.*s  %.6f\n", i + 1, (unsigned long long)hits[i].id,
                   has_key ? (int)klen : 1, has_key ? kk : "-", (double)hits[i].score);
        }
    }
    if (json) {
        json_t *o = json_pack("{s:s, s:o}", "metric", emb_metric_name(p.metric), "results", arr);
        char *txt = json_dumps(o, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
        printf("%s\n", txt ? txt : "{}");
        free(txt);
        json_decref(o);
    }
    status = 0;
out:
    free(q);
    free(hits);
    emb_scratch_free(sc);
    emb_store_close(s);
    return status;
}
