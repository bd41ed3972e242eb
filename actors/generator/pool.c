/*
 * pool.c - the compute pool: threads that run the tiles of every CPU engine
 * of the process, round-robin across the engines (pool.h).
 *
 * Clients with tiles queued sit on a ring; a thread takes one tile of the
 * client at the ring's head and moves the head on, so each turn of the ring
 * gives every busy engine one tile. Everything is under one mutex: a tile
 * is ~0.3-0.6 ms of work, so a few hundred lock round-trips per step cost
 * nothing next to it. The lock is never held while a tile runs or a done
 * callback runs (a done callback wakes an actor's loop).
 *
 * A pool with no threads ("inline") only says that its engines compute on
 * the thread that advances them, as every engine did before the pool: the
 * CPU engine never submits to it.
 */
#include "config.h"

#include "actors/generator/pool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

struct gen_pool {
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* threads: tiles queued, or stop */
    pthread_cond_t idle_cv; /* gen_pool_wait / leave: a batch is done */
    pthread_t *threads;
    unsigned nthreads;
    int nice;
    bool stop;
    gen_pool_client_t *ring; /* clients with tiles queued; the head is served next */
    uint64_t queued;         /* tiles queued over all clients */
};

struct gen_pool_client {
    gen_pool_t *pool;
    gen_pool_batch_t *batch; /* the batch with tiles still to hand out or finish */
    gen_pool_client_t *prev, *next;
    bool in_ring;
    unsigned batches; /* submitted and not yet through their done callback */
    uint64_t tiles;   /* tiles run */
};

/* ------------------------------------------------------------ the ring */

/* At the tail: it is served after every client already waiting. */
static void s_ring_add(gen_pool_t *p, gen_pool_client_t *c)
{
    if (c->in_ring)
        return;
    c->in_ring = true;
    if (!p->ring) {
        c->prev = c->next = c;
        p->ring = c;
        return;
    }
    gen_pool_client_t *head = p->ring;
    c->next = head;
    c->prev = head->prev;
    head->prev->next = c;
    head->prev = c;
}

static void s_ring_remove(gen_pool_t *p, gen_pool_client_t *c)
{
    if (!c->in_ring)
        return;
    c->in_ring = false;
    if (c->next == c) {
        p->ring = NULL;
    } else {
        c->prev->next = c->next;
        c->next->prev = c->prev;
        if (p->ring == c)
            p->ring = c->next;
    }
    c->prev = c->next = NULL;
}

/* ------------------------------------------------------------ threads */

void gen_pool_nice_self(int nice)
{
    id_t tid = (id_t)syscall(SYS_gettid);
    errno = 0;
    int now = getpriority(PRIO_PROCESS, tid);
    if (errno == 0 && now < nice)
        (void)setpriority(PRIO_PROCESS, tid, nice); /* best effort: only ever lowers */
}

/* Calls b's done without the lock, then counts it off (the lock held on
 * entry and on return). */
static void s_finish(gen_pool_t *p, gen_pool_batch_t *b, bool completed)
{
    gen_pool_client_t *c = b->client;
    pthread_mutex_unlock(&p->mu);
    b->done(b, completed); /* b may be gone from here on */
    pthread_mutex_lock(&p->mu);
    c->batches--;
    pthread_cond_broadcast(&p->idle_cv);
}

static void *s_thread(void *arg)
{
    gen_pool_t *p = arg;
    pthread_setname_np(pthread_self(), "compute");
    gen_pool_nice_self(p->nice);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && !p->ring)
            pthread_cond_wait(&p->work_cv, &p->mu);
        if (!p->ring)
            break; /* stopping, and nothing queued */
        gen_pool_client_t *c = p->ring;
        gen_pool_batch_t *b = c->batch;
        uint32_t tile = b->next++;
        b->running++;
        p->queued--;
        if (b->next == b->ntiles)
            s_ring_remove(p, c);
        else
            p->ring = c->next; /* the next client's turn */
        pthread_mutex_unlock(&p->mu);
        b->run(b, tile);
        /* A thread of the actors preempted by a thread it woke (its store,
         * this pool) waits, runnable, until the kernel next picks; on a
         * 250 Hz kernel that is the next tick, up to 4 ms, if a compute
         * thread has the core. Yielding after each tile (~0.4 ms) lets it
         * in now: stop p99 2.3-3.7 ms against 3.8-6.8 ms without it
         * (bench/README, "One compute pool"), one syscall per tile. */
        sched_yield();
        pthread_mutex_lock(&p->mu);
        b->running--;
        b->finished++;
        c->tiles++;
        if (b->aborted) {
            if (b->running == 0) /* the last tile that was running when it was aborted */
                s_finish(p, b, false);
        } else if (b->finished == b->ntiles) {
            c->batch = NULL;
            s_finish(p, b, true);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ------------------------------------------------------------ the pool */

gen_pool_t *gen_pool_new(unsigned threads, int nice, char *err, size_t errlen)
{
    gen_pool_t *p = calloc(1, sizeof *p);
    if (!p || (threads > 0 && !(p->threads = calloc(threads, sizeof *p->threads)))) {
        free(p);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->nice = nice;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->idle_cv, NULL);
    for (unsigned i = 0; i < threads; i++) {
        int rc = pthread_create(&p->threads[i], NULL, s_thread, p);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start a compute thread: %s", strerror(rc));
            gen_pool_destroy(&p);
            return NULL;
        }
        p->nthreads++;
    }
    return p;
}

void gen_pool_destroy(gen_pool_t **pp)
{
    gen_pool_t *p = *pp;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_cond_destroy(&p->idle_cv);
    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
    *pp = NULL;
}

unsigned gen_pool_threads(const gen_pool_t *p)
{
    return p->nthreads;
}

static pthread_once_t s_process_once = PTHREAD_ONCE_INIT;
static gen_pool_t *s_process;

static void s_process_new(void)
{
    char err[200];
    if (!(s_process = gen_pool_new(gen_cpu_threads(), GEN_POOL_NICE, err, sizeof err)))
        fprintf(stderr, "imagejobs: no compute pool: %s\n", err);
}

/* Made once, never freed: its threads sleep when idle, and the process's
 * exit ends them (a static pointer keeps it reachable for LSan). */
gen_pool_t *gen_pool_process(void)
{
    pthread_once(&s_process_once, s_process_new);
    return s_process;
}

uint64_t gen_pool_queued(gen_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->queued;
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* ------------------------------------------------------------ clients */

gen_pool_client_t *gen_pool_join(gen_pool_t *p)
{
    gen_pool_client_t *c = calloc(1, sizeof *c);
    if (c)
        c->pool = p;
    return c;
}

void gen_pool_leave(gen_pool_client_t **cp)
{
    gen_pool_client_t *c = *cp;
    if (!c)
        return;
    gen_pool_abort(c);
    gen_pool_wait(c);
    free(c);
    *cp = NULL;
}

int gen_pool_submit(gen_pool_client_t *c, gen_pool_batch_t *b)
{
    gen_pool_t *p = c->pool;
    if (b->ntiles == 0 || !b->run || !b->done || p->nthreads == 0)
        return -1;
    pthread_mutex_lock(&p->mu);
    if (c->batch) {
        pthread_mutex_unlock(&p->mu);
        return -1;
    }
    b->next = b->running = b->finished = 0;
    b->aborted = false;
    b->client = c;
    c->batch = b;
    c->batches++;
    p->queued += b->ntiles;
    s_ring_add(p, c);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void gen_pool_abort(gen_pool_client_t *c)
{
    gen_pool_t *p = c->pool;
    pthread_mutex_lock(&p->mu);
    gen_pool_batch_t *b = c->batch;
    if (b) {
        c->batch = NULL;
        s_ring_remove(p, c);
        p->queued -= b->ntiles - b->next;
        b->ntiles = b->next; /* nothing more is handed out */
        b->aborted = true;
        if (b->running == 0) /* else the last running tile calls done */
            s_finish(p, b, false);
    }
    pthread_mutex_unlock(&p->mu);
}

void gen_pool_wait(gen_pool_client_t *c)
{
    gen_pool_t *p = c->pool;
    pthread_mutex_lock(&p->mu);
    while (c->batches > 0)
        pthread_cond_wait(&p->idle_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

uint64_t gen_pool_client_tiles(const gen_pool_client_t *c)
{
    gen_pool_t *p = c->pool;
    pthread_mutex_lock(&p->mu);
    uint64_t n = c->tiles;
    pthread_mutex_unlock(&p->mu);
    return n;
}
