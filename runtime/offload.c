/*
 * offload.c - one helper thread per offload, a FIFO of jobs in, a FIFO of
 * finished jobs out, an ev_async to wake the owner's loop.
 */
#include "config.h"

#include "runtime/offload.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct job {
    struct job *next;
    offload_work_fn work;
    void *data;
} job_t;

typedef struct {
    job_t *head, *tail;
} fifo_t;

struct offload {
    struct ev_loop *loop;
    offload_done_fn done;
    void *arg;
    ev_async wake;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    fifo_t todo;     /* guarded by lock */
    fifo_t finished; /* guarded by lock */
    bool quit;       /* guarded by lock */
};

static void s_push(fifo_t *f, job_t *j)
{
    j->next = NULL;
    if (f->tail)
        f->tail->next = j;
    else
        f->head = j;
    f->tail = j;
}

static job_t *s_take_all(fifo_t *f)
{
    job_t *j = f->head;
    f->head = f->tail = NULL;
    return j;
}

static void *s_thread(void *arg)
{
    offload_t *o = arg;
    pthread_setname_np(pthread_self(), "offload");
    pthread_mutex_lock(&o->lock);
    for (;;) {
        while (!o->todo.head && !o->quit)
            pthread_cond_wait(&o->cond, &o->lock);
        if (!o->todo.head) /* quit, nothing left to start */
            break;
        job_t *j = o->todo.head;
        o->todo.head = j->next;
        if (!o->todo.head)
            o->todo.tail = NULL;
        if (o->quit) { /* not started: handed back unworked by destroy */
            s_push(&o->finished, j);
            j->work = NULL;
            continue;
        }
        pthread_mutex_unlock(&o->lock);
        j->work(j->data);
        pthread_mutex_lock(&o->lock);
        s_push(&o->finished, j);
        ev_async_send(o->loop, &o->wake);
    }
    pthread_mutex_unlock(&o->lock);
    return NULL;
}

/* Hands every finished job back, in order. */
static void s_deliver(offload_t *o)
{
    pthread_mutex_lock(&o->lock);
    job_t *j = s_take_all(&o->finished);
    pthread_mutex_unlock(&o->lock);
    while (j) {
        job_t *next = j->next;
        int ran = j->work != NULL;
        void *data = j->data;
        free(j);
        o->done(data, ran, o->arg);
        j = next;
    }
}

static void s_wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    s_deliver(w->data);
}

offload_t *offload_new(struct ev_loop *loop, offload_done_fn done, void *arg)
{
    offload_t *o = calloc(1, sizeof *o);
    if (!o)
        abort();
    o->loop = loop;
    o->done = done;
    o->arg = arg;
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->cond, NULL);
    ev_async_init(&o->wake, s_wake_cb);
    o->wake.data = o;
    int rc = pthread_create(&o->thread, NULL, s_thread, o);
    if (rc != 0) {
        pthread_cond_destroy(&o->cond);
        pthread_mutex_destroy(&o->lock);
        free(o);
        errno = rc;
        return NULL;
    }
    ev_async_start(loop, &o->wake);
    return o;
}

void offload_submit(offload_t *o, offload_work_fn work, void *data)
{
    job_t *j = calloc(1, sizeof *j);
    if (!j)
        abort();
    j->work = work;
    j->data = data;
    pthread_mutex_lock(&o->lock);
    s_push(&o->todo, j);
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->lock);
}

void offload_destroy(offload_t **op)
{
    offload_t *o = *op;
    if (!o)
        return;
    pthread_mutex_lock(&o->lock);
    o->quit = true;
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->lock);
    pthread_join(o->thread, NULL);
    ev_async_stop(o->loop, &o->wake);
    s_deliver(o);
    pthread_cond_destroy(&o->cond);
    pthread_mutex_destroy(&o->lock);
    free(o);
    *op = NULL;
}
