/*
 * topk.c - the best k hits of a scan, in caller-owned memory.
 *
 * A binary min-heap ordered by "worse": the root is the worst hit kept, so a new hit is compared
 * with one value and, when better, replaces the root and sifts down in O(log k). Hits are
 * totally ordered by (score descending, id ascending), which makes results reproducible
 * whatever the scan order or thread split: among equal scores the higher id is worse and is
 * evicted first. NaN scores are refused at the door, so the order stays total.
 *
 * Rejected: a sorted array with insertion (O(k) per accepted hit; k reaches 1000 with
 * oversampling far beyond), and quickselect over all scores (needs memory proportional to the
 * rows scanned, and nothing on the query path allocates).
 */
#include "emb.h"

/* Nonzero when a ranks below b: lower score, or equal score and higher id. */
static int hit_worse(const emb_hit *a, const emb_hit *b)
{
    return a->score < b->score || (a->score == b->score && a->id > b->id);
}

static void sift_up(emb_hit *h, uint32_t i)
{
    const emb_hit x = h[i];
    while (i > 0) {
        const uint32_t p = (i - 1) / 2;
        if (!hit_worse(&x, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

/* Restores the heap below i among the first n entries. */
static void sift_down(emb_hit *h, uint32_t n, uint32_t i)
{
    const emb_hit x = h[i];
    for (;;) {
        uint64_t c = 2 * (uint64_t)i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && hit_worse(&h[c + 1], &h[c]))
            c++;
        if (!hit_worse(&h[c], &x))
            break;
        h[i] = h[c];
        i = (uint32_t)c;
    }
    h[i] = x;
}

/* Starts an empty heap of at most k hits in buf[k] (caller-owned, borrowed until done). */
void emb_topk_init(emb_topk *t, emb_hit *buf, uint32_t k)
{
    t->hits = buf;
    t->k = k;
    t->n = 0;
}

/* Offers one hit. NaN scores are ignored; when the heap is full, a hit no better than the
 * worst kept is ignored too, else it replaces the worst. O(log k), never allocates. */
void emb_topk_push(emb_topk *t, float score, uint64_t id)
{
    const emb_hit x = {.score = score, ._pad = 0, .id = id};

    if (score != score || t->k == 0)
        return;
    if (t->n < t->k) {
        t->hits[t->n] = x;
        sift_up(t->hits, t->n++);
        return;
    }
    if (!hit_worse(&t->hits[0], &x))
        return;
    t->hits[0] = x;
    sift_down(t->hits, t->n, 0);
}

/* Offers every hit src holds to dst, which then holds the best dst->k of the union. src is only
 * read (its n hits, heap-ordered or already sorted), may have a different k, and must not share
 * dst's buffer. */
void emb_topk_merge(emb_topk *dst, const emb_topk *src)
{
    for (uint32_t i = 0; i < src->n; i++)
        emb_topk_push(dst, src->hits[i].score, src->hits[i].id);
}

/* Heap sort in place: the worst is swapped to the end repeatedly, leaving hits[0..n) best
 * first, ties by lower id first. Returns n. The buffer is no longer a heap afterwards. */
uint32_t emb_topk_sort(emb_topk *t)
{
    emb_hit *h = t->hits;
    for (uint32_t end = t->n; end > 1; end--) {
        const emb_hit worst = h[0];
        h[0] = h[end - 1];
        h[end - 1] = worst;
        sift_down(h, end - 1, 0);
    }
    return t->n;
}
