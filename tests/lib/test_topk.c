/*
 * test_topk.c - the bounded heap against a brute-force sort, with scores drawn from a handful of
 * values so ties are everywhere and the id tie-break decides most places.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "emb.h"
#include "helpers.h"

/* Best first: higher score, then lower id. */
static int cmp_best_first(const void *pa, const void *pb)
{
    const emb_hit *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* n hits with distinct shuffled ids and scores from a small set (heavy ties); about one in 16
 * scores is NaN when with_nan. */
static void make_hits(uint64_t *seed, emb_hit *h, size_t n, int with_nan)
{
    for (size_t i = 0; i < n; i++) {
        h[i].id = i * 7 + 3;
        h[i]._pad = 0;
        const uint64_t r = th_rand_u64(seed);
        h[i].score = (float)(int)(r % 9) * 0.5f - 2.0f;
        if (with_nan && (r >> 32) % 16 == 0)
            h[i].score = NAN;
        if ((r >> 40) % 97 == 0)
            h[i].score = (r >> 50) % 2 ? INFINITY : -INFINITY;
    }
    for (size_t i = n; i > 1; i--) { /* shuffle the push order */
        const size_t j = th_rand_u64(seed) % i;
        const emb_hit t = h[i - 1];
        h[i - 1] = h[j];
        h[j] = t;
    }
}

/* The expected answer: non-NaN hits sorted best first, truncated to k. Returns the count. */
static size_t brute_force(const emb_hit *h, size_t n, uint32_t k, emb_hit *out)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!isnan(h[i].score))
            out[m++] = h[i];
    qsort(out, m, sizeof *out, cmp_best_first);
    return m < k ? m : k;
}

static void assert_same(const emb_hit *got, size_t ngot, const emb_hit *want, size_t nwant,
                        const char *what, size_t n, uint32_t k)
{
    cr_assert_eq(ngot, nwant, "%s n=%zu k=%u: %zu hits, want %zu", what, n, k, ngot, nwant);
    for (size_t i = 0; i < ngot; i++)
        cr_assert(got[i].id == want[i].id && got[i].score == want[i].score,
                  "%s n=%zu k=%u: place %zu is (%g, %llu), want (%g, %llu)", what, n, k, i,
                  (double)got[i].score, (unsigned long long)got[i].id, (double)want[i].score,
                  (unsigned long long)want[i].id);
}

/* Every parent ranks no better than its children. */
static void assert_heap(const emb_topk *t)
{
    for (uint32_t i = 1; i < t->n; i++) {
        const emb_hit *p = &t->hits[(i - 1) / 2], *c = &t->hits[i];
        cr_assert(p->score < c->score || (p->score == c->score && p->id >= c->id),
                  "heap order broken at %u", i);
    }
}

static const uint32_t test_ks[] = {1, 2, 3, 10, 100, 1000};
static const size_t test_sizes[] = {0, 1, 5, 10, 999, 1000, 1001, 5000};

Test(topk, matches_brute_force_with_ties)
{
    uint64_t seed = 0x5eed0201;
    emb_hit *hits = malloc(5000 * sizeof *hits), *want = malloc(5000 * sizeof *want);
    emb_hit *buf = malloc((5000 + 7) * sizeof *buf);
    for (size_t s = 0; s < sizeof test_sizes / sizeof test_sizes[0]; s++) {
        const size_t n = test_sizes[s];
        /* k past n too: the heap then holds everything that is not NaN. */
        const uint32_t ks[] = {test_ks[0], test_ks[1], test_ks[2],     test_ks[3],
                               test_ks[4], test_ks[5], (uint32_t)n + 7};
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            for (int with_nan = 0; with_nan < 2; with_nan++) {
                const uint32_t k = ks[ki];
                make_hits(&seed, hits, n, with_nan);
                emb_topk t;
                emb_topk_init(&t, buf, k);
                for (size_t i = 0; i < n; i++) {
                    emb_topk_push(&t, hits[i].score, hits[i].id);
                    cr_assert_leq(t.n, k);
                }
                assert_heap(&t);
                const size_t nwant = brute_force(hits, n, k, want);
                const uint32_t ngot = emb_topk_sort(&t);
                assert_same(t.hits, ngot, want, nwant, "push", n, k);
            }
        }
    }
    free(hits);
    free(want);
    free(buf);
}

Test(topk, merge_equals_union)
{
    uint64_t seed = 0x5eed0202;
    emb_hit *hits = malloc(5000 * sizeof *hits), *want = malloc(5000 * sizeof *want);
    emb_hit *ba = malloc(5007 * sizeof *ba), *bb = malloc(5007 * sizeof *bb);
    for (size_t s = 0; s < sizeof test_sizes / sizeof test_sizes[0]; s++) {
        const size_t n = test_sizes[s];
        for (size_t ki = 0; ki < sizeof test_ks / sizeof test_ks[0]; ki++) {
            const uint32_t k = test_ks[ki];
            make_hits(&seed, hits, n, 1);
            /* Split at a random point, as two worker threads would. */
            const size_t cut = n ? th_rand_u64(&seed) % (n + 1) : 0;
            emb_topk a, b;
            emb_topk_init(&a, ba, k);
            emb_topk_init(&b, bb, k);
            for (size_t i = 0; i < cut; i++)
                emb_topk_push(&a, hits[i].score, hits[i].id);
            for (size_t i = cut; i < n; i++)
                emb_topk_push(&b, hits[i].score, hits[i].id);
            emb_topk_merge(&a, &b);
            assert_heap(&a);
            const size_t nwant = brute_force(hits, n, k, want);
            const uint32_t ngot = emb_topk_sort(&a);
            assert_same(a.hits, ngot, want, nwant, "merge", n, k);
        }
    }
    free(hits);
    free(want);
    free(ba);
    free(bb);
}

Test(topk, ties_keep_lower_id)
{
    emb_hit buf[3];
    emb_topk t;
    emb_topk_init(&t, buf, 3);
    for (uint64_t id = 10; id > 0; id--)
        emb_topk_push(&t, 1.0f, id);
    cr_assert_eq(emb_topk_sort(&t), 3);
    cr_assert_eq(buf[0].id, 1);
    cr_assert_eq(buf[1].id, 2);
    cr_assert_eq(buf[2].id, 3);

    emb_topk_init(&t, buf, 3);
    for (uint64_t id = 1; id <= 10; id++)
        emb_topk_push(&t, 1.0f, id);
    cr_assert_eq(emb_topk_sort(&t), 3);
    cr_assert_eq(buf[0].id, 1);
    cr_assert_eq(buf[2].id, 3);
}

Test(topk, full_heap_ignores_worse_hits)
{
    emb_hit buf[4];
    emb_topk t;
    emb_topk_init(&t, buf, 4);
    emb_topk_push(&t, 5.0f, 50);
    emb_topk_push(&t, 3.0f, 30);
    emb_topk_push(&t, 4.0f, 40);
    emb_topk_push(&t, 3.0f, 31);
    emb_hit before[4];
    memcpy(before, buf, sizeof buf);
    emb_topk_push(&t, 2.0f, 1);  /* lower score */
    emb_topk_push(&t, 3.0f, 32); /* equal to the worst score, higher id */
    emb_topk_push(&t, 3.0f, 31); /* equal to the worst hit itself */
    emb_topk_push(&t, NAN, 0);
    emb_topk_push(&t, -INFINITY, 0);
    cr_assert_eq(t.n, 4);
    cr_assert_eq(memcmp(before, buf, sizeof buf), 0, "the heap did not move");
    emb_topk_push(&t, 3.0f, 29); /* equal score, lower id: evicts (3, 31) */
    cr_assert_eq(emb_topk_sort(&t), 4);
    const uint64_t ids[4] = {50, 40, 29, 30};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(buf[i].id, ids[i], "place %d", i);
}

Test(topk, nan_never_inserted)
{
    emb_hit buf[8];
    emb_topk t;
    emb_topk_init(&t, buf, 8);
    emb_topk_push(&t, NAN, 1);
    emb_topk_push(&t, -NAN, 2);
    cr_assert_eq(t.n, 0);
    emb_topk_push(&t, -1.0f, 3);
    emb_topk_push(&t, NAN, 4);
    cr_assert_eq(emb_topk_sort(&t), 1);
    cr_assert_eq(buf[0].id, 3);
}

Test(topk, zero_k_and_empty)
{
    emb_hit buf[1] = {{.score = 7.0f, .id = 99}};
    emb_topk t;
    emb_topk_init(&t, buf, 0);
    emb_topk_push(&t, 1.0f, 1);
    cr_assert_eq(t.n, 0);
    cr_assert_eq(emb_topk_sort(&t), 0);
    cr_assert_eq(buf[0].id, 99, "k = 0 never writes the buffer");

    emb_topk_init(&t, buf, 1);
    cr_assert_eq(emb_topk_sort(&t), 0);
    emb_topk_push(&t, 1.0f, 1);
    emb_topk_push(&t, 2.0f, 2);
    emb_topk_push(&t, 0.5f, 3);
    cr_assert_eq(emb_topk_sort(&t), 1);
    cr_assert_eq(buf[0].id, 2);
}

/* Merging an empty heap, into an empty heap, and heaps of different k. */
Test(topk, merge_edges)
{
    emb_hit ba[5], bb[2];
    emb_topk a, b;
    emb_topk_init(&a, ba, 5);
    emb_topk_init(&b, bb, 2);
    emb_topk_merge(&a, &b);
    cr_assert_eq(a.n, 0);
    emb_topk_push(&b, 1.0f, 10);
    emb_topk_push(&b, 2.0f, 20);
    emb_topk_push(&b, 3.0f, 30);
    emb_topk_merge(&a, &b);
    cr_assert_eq(a.n, 2);
    emb_topk_push(&a, 2.0f, 5);
    cr_assert_eq(emb_topk_sort(&a), 3);
    cr_assert_eq(ba[0].id, 30);
    cr_assert_eq(ba[1].id, 5);
    cr_assert_eq(ba[2].id, 20);
    cr_assert_eq(b.n, 2, "src is unchanged");
}
