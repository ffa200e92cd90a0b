/*
 * pool.c - worker threads and a bounded ring of jobs (see pool.h).
 */
#include "pool.h"

#include <errno.h>
#include <stdlib.h>

#include "emb.h"

static struct {
    pthread_mutex_t mu;
    pthread_cond_t nonempty;
    srv_job **ring;
    uint32_t cap, head, count;
    pthread_t *threads;
    uint32_t n_threads;
    int stopping;
    void (*thread_exit)(void);
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .nonempty = PTHREAD_COND_INITIALIZER};

void srv_done_queue_init(srv_done_queue *q, void (*wake)(void *), void *ctx)
{
    pthread_mutex_init(&q->mu, NULL);
    q->head = q->tail = NULL;
    q->wake = wake;
    q->ctx = ctx;
}

srv_job *srv_done_queue_take(srv_done_queue *q)
{
    pthread_mutex_lock(&q->mu);
    srv_job *j = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return j;
}

static void finish(srv_job *j)
{
    srv_done_queue *q = j->done;
    j->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    pthread_mutex_unlock(&q->mu);
    q->wake(q->ctx);
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&pool.mu);
        while (!pool.count && !pool.stopping)
            pthread_cond_wait(&pool.nonempty, &pool.mu);
        if (!pool.count && pool.stopping) {
            pthread_mutex_unlock(&pool.mu);
            if (pool.thread_exit)
                pool.thread_exit();
            return NULL;
        }
        srv_job *j = pool.ring[pool.head];
        pool.head = (pool.head + 1) % pool.cap;
        pool.count--;
        pthread_mutex_unlock(&pool.mu);
        srv_job *deliver = j->run(j);
        if (deliver)
            finish(deliver);
    }
}

int srv_pool_start(uint32_t threads, uint32_t capacity, void (*thread_exit)(void))
{
    pool.thread_exit = thread_exit;
    if (threads == 0 || capacity == 0)
        return -EINVAL;
    pool.ring = calloc(capacity, sizeof *pool.ring);
    pool.threads = calloc(threads, sizeof *pool.threads);
    if (!pool.ring || !pool.threads)
        return -ENOMEM;
    pool.cap = capacity;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1u << 20);
    for (uint32_t i = 0; i < threads; i++) {
        int rc = pthread_create(&pool.threads[i], &attr, worker, NULL);
        if (rc) {
            pthread_attr_destroy(&attr);
            srv_pool_stop();
            return -rc;
        }
        pool.n_threads++;
    }
    pthread_attr_destroy(&attr);
    return 0;
}

int srv_pool_submit_many(srv_job *const *jobs, uint32_t n)
{
    pthread_mutex_lock(&pool.mu);
    if (pool.cap - pool.count < n || pool.stopping) {
        pthread_mutex_unlock(&pool.mu);
        return -EAGAIN;
    }
    for (uint32_t i = 0; i < n; i++) {
        pool.ring[(pool.head + pool.count) % pool.cap] = jobs[i];
        pool.count++;
    }
    if (n == 1)
        pthread_cond_signal(&pool.nonempty);
    else
        pthread_cond_broadcast(&pool.nonempty);
    pthread_mutex_unlock(&pool.mu);
    return 0;
}

int srv_pool_submit(srv_job *j)
{
    return srv_pool_submit_many(&j, 1);
}

uint32_t srv_pool_depth(void)
{
    pthread_mutex_lock(&pool.mu);
    uint32_t n = pool.count;
    pthread_mutex_unlock(&pool.mu);
    return n;
}

uint32_t srv_pool_capacity(void)
{
    return pool.cap;
}

uint32_t srv_pool_threads(void)
{
    return pool.n_threads;
}

void srv_pool_stop(void)
{
    pthread_mutex_lock(&pool.mu);
    pool.stopping = 1;
    pthread_cond_broadcast(&pool.nonempty);
    pthread_mutex_unlock(&pool.mu);
    for (uint32_t i = 0; i < pool.n_threads; i++)
        pthread_join(pool.threads[i], NULL);
    pool.n_threads = 0;
    free(pool.threads);
    free(pool.ring);
    pool.threads = NULL;
    pool.ring = NULL;
}
