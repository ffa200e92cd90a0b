/*
 * pool.h - embd's own worker threads with a bounded queue.
 *
 * Not libuv's threadpool: that one is process-global, shared with file and DNS work, and its
 * queue is unbounded. Here a full queue is an answer (503 + Retry-After), not a backlog.
 * A job runs on a worker, then moves to its loop's done queue and the loop is woken; the
 * loop drains every finished job per wake-up (uv_async_send coalesces).
 */
#ifndef SRV_POOL_H
#define SRV_POOL_H

#include <pthread.h>
#include <stdint.h>

typedef struct srv_job srv_job;
typedef struct srv_done_queue srv_done_queue;

struct srv_job {
    /* Runs on a worker thread; returns the job to hand back to its loop (usually j itself), or
     * NULL when nothing is to be delivered yet (a shard of a split job that is not the last). */
    srv_job *(*run)(srv_job *j);
    srv_done_queue *done; /* where the job goes afterwards */
    srv_job *next;        /* private */
};

struct srv_done_queue {
    pthread_mutex_t mu;
    srv_job *head, *tail;
    void (*wake)(void *ctx); /* called by the worker after queueing: uv_async_send */
    void *ctx;
};

void srv_done_queue_init(srv_done_queue *q, void (*wake)(void *), void *ctx);
/* Takes every finished job (a list linked by next, in completion order). Loop thread. */
srv_job *srv_done_queue_take(srv_done_queue *q);

/* Starts threads workers with a queue of capacity jobs; thread_exit (may be NULL) runs on each
 * worker as it exits. Returns 0 or -errno. */
int srv_pool_start(uint32_t threads, uint32_t capacity, void (*thread_exit)(void));
/* Queues j. Returns 0, or -EAGAIN when the queue is full (the caller answers 503). */
int srv_pool_submit(srv_job *j);
/* Queues all n jobs or none: 0, or -EAGAIN when fewer than n slots are free. */
int srv_pool_submit_many(srv_job *const *jobs, uint32_t n);
/* Jobs queued and not yet taken by a worker. */
uint32_t srv_pool_depth(void);
uint32_t srv_pool_capacity(void);
uint32_t srv_pool_threads(void);
/* Lets queued jobs finish, then joins the workers. */
void srv_pool_stop(void);

#endif
