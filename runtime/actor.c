/*
 * actor.c - actor threads: start handshake, inbox dispatch, request/reply
 * bookkeeping, stop and join.
 */
#include "config.h"

#include "runtime/actor.h"

#include "runtime/log.h"
#include "runtime/zwatch.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* Messages handled per loop iteration before other watchers get a turn. */
#define INBOX_BATCH 64
/* Buckets of the pending-request table (a power of two). */
#define PENDING_BUCKETS 256

typedef struct pending {
    struct pending *next;
    actor_t *self;
    uint64_t corr;
    actor_reply_fn cb;
    void *arg;
    ev_timer timer;
} pending_t;

struct actor {
    runtime_t *rt;
    char name[MSG_NAME_MAX];
    const actor_spec_t *spec;
    void *arg;
    void *state;

    pthread_t thread;
    struct ev_loop *loop;
    mailbox_t *mailbox;
    zwatch_t inbox_watch;
    ev_async stop_async; /* the one cross-thread signal: "stop" */
    ev_timer stop_deadline;
    bool stop_requested;

    pending_t *pending[PENDING_BUCKETS];

    /* start handshake: the creating thread waits for started != 0 */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int started; /* 1 ready, -1 failed */
    char error[256];
};

/* ------------------------------------------------------------ requests */

static pending_t **s_bucket(actor_t *self, uint64_t corr)
{
    return &self->pending[corr & (PENDING_BUCKETS - 1)];
}

static pending_t *s_pending_take(actor_t *self, uint64_t corr)
{
    for (pending_t **pp = s_bucket(self, corr); *pp; pp = &(*pp)->next) {
        if ((*pp)->corr == corr) {
            pending_t *p = *pp;
            *pp = p->next;
            ev_timer_stop(self->loop, &p->timer);
            return p;
        }
    }
    return NULL;
}

static void s_request_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    pending_t *p = t->data;
    actor_t *self = p->self;
    p = s_pending_take(self, p->corr);
    if (!p)
        return;
    p->cb(self, -ETIMEDOUT, NULL, p->arg);
    free(p);
}

int actor_request(actor_t *self, const char *to, msg_t *request, double timeout_s,
                  actor_reply_fn cb, void *arg)
{
    request->corr = mailbox_next_corr(self->mailbox);
    request->flags &= ~(uint32_t)MSG_FLAG_REPLY;
    if (mailbox_send(self->mailbox, to, request) < 0)
        return -1;
    pending_t *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->self = self;
    p->corr = request->corr;
    p->cb = cb;
    p->arg = arg;
    ev_timer_init(&p->timer, s_request_timeout, timeout_s, 0.);
    p->timer.data = p;
    ev_timer_start(self->loop, &p->timer);
    pending_t **bucket = s_bucket(self, p->corr);
    p->next = *bucket;
    *bucket = p;
    return 0;
}

int actor_reply(actor_t *self, const msg_t *request, msg_t *reply)
{
    reply->corr = request->corr;
    reply->flags |= MSG_FLAG_REPLY;
    return mailbox_send(self->mailbox, request->sender, reply);
}

const char *actor_reply_reason(int status, const msg_t *reply)
{
    if (status != 0)
        return strerror(-status);
    if (!reply)
        return "no reply";
    if (reply->type == MSG_ERROR)
        return reply->error.reason ? reply->error.reason : "error without a reason";
    return msg_type_name(reply->type); /* the caller did not expect this type */
}

actor_caller_t actor_caller(const msg_t *request)
{
    actor_caller_t c;
    memcpy(c.sender, request->sender, sizeof c.sender);
    c.sender[sizeof c.sender - 1] = '\0';
    c.corr = request->corr;
    return c;
}

int actor_reply_to(actor_t *self, const actor_caller_t *to, msg_t *reply)
{
    if (!to->sender[0])
        return 0;
    reply->corr = to->corr;
    reply->flags |= MSG_FLAG_REPLY;
    if (mailbox_send(self->mailbox, to->sender, reply) < 0) {
        log_debug("%s: reply %s to %s not delivered: %s", self->name, msg_type_name(reply->type),
                  to->sender, strerror(errno));
        return -1;
    }
    return 0;
}

int actor_reply_error(actor_t *self, const actor_caller_t *to, int code, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    msg_t *m = msg_new(MSG_ERROR);
    m->error.code = code;
    msg_set_str(&m->error.reason, reason);
    int rc = actor_reply_to(self, to, m);
    msg_destroy(&m);
    return rc;
}

/* Every request still waiting learns that it never will get its reply. */
static void s_cancel_pending(actor_t *self)
{
    for (size_t b = 0; b < PENDING_BUCKETS; b++) {
        while (self->pending[b]) {
            pending_t *p = s_pending_take(self, self->pending[b]->corr);
            p->cb(self, -ECANCELED, NULL, p->arg);
            free(p);
        }
    }
}

/* ------------------------------------------------------------ dispatch */

static void s_dispatch(actor_t *self, msg_t *msg)
{
    if (msg->flags & MSG_FLAG_REPLY) {
        pending_t *p = s_pending_take(self, msg->corr);
        if (p) {
            p->cb(self, 0, msg, p->arg);
            free(p);
        } else {
            log_debug("late or unknown reply %s #%llu from %s dropped", msg_type_name(msg->type),
                      (unsigned long long)msg->corr, msg->sender);
        }
        return;
    }
    actor_handler_fn fn = self->spec->handlers[msg->type];
    if (fn)
        fn(self, msg);
    else
        log_warn("no handler for %s from %s; dropped", msg_type_name(msg->type), msg->sender);
}

static void s_inbox_cb(struct ev_loop *loop, zwatch_t *w, int revents)
{
    actor_t *self = w->data;
    if (revents & EV_ERROR) {
        log_error("inbox failed; stopping its watcher");
        zwatch_stop(loop, w);
        return;
    }
    /* bounded: timers and other sockets get their turn between batches */
    for (int i = 0; i < INBOX_BATCH; i++) {
        msg_t *msg = NULL;
        int rc = mailbox_try_recv(self->mailbox, &msg);
        if (rc == 0) {
            zwatch_drained(w);
            break;
        }
        if (rc > 0) {
            s_dispatch(self, msg);
            msg_destroy(&msg);
        }
    }
}

static void s_stop_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    log_warn("not finished %.1f s after the stop was asked: stopping anyway",
             ACTOR_STOP_DEADLINE_S);
    ev_break(loop, EVBREAK_ALL);
}

/* A stop was asked: handle what is already in the inbox (a claim released
 * by a generator that stopped just before must reach the store), then let
 * the actor finish its own work if it has a stopping hook. */
static void s_stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    actor_t *self = w->data;
    if (self->stop_requested)
        return;
    self->stop_requested = true;
    msg_t *msg = NULL;
    int rc, budget = 100000; /* a sender that never stops cannot hold us */
    while (budget-- > 0 && (rc = mailbox_try_recv(self->mailbox, &msg)) != 0) {
        if (rc > 0) {
            s_dispatch(self, msg);
            msg_destroy(&msg);
        }
    }
    if (!self->spec->stopping || self->spec->stopping(self)) {
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    ev_timer_start(loop, &self->stop_deadline);
}

void actor_stop_ready(actor_t *self)
{
    if (self->stop_requested)
        ev_break(self->loop, EVBREAK_ALL);
}

bool actor_is_stopping(const actor_t *self)
{
    return self->stop_requested;
}

/* ------------------------------------------------------------ lifecycle */

static void s_started(actor_t *self, int state)
{
    pthread_mutex_lock(&self->lock);
    self->started = state;
    pthread_cond_signal(&self->cond);
    pthread_mutex_unlock(&self->lock);
}

static void *s_thread(void *arg)
{
    actor_t *self = arg;
    log_set_thread_name(self->name);

    self->loop = ev_loop_new(EVFLAG_AUTO);
    if (!self->loop) {
        actor_fail(self, "cannot create its event loop");
        s_started(self, -1);
        return NULL;
    }
    self->mailbox = mailbox_new(self->rt, self->name);
    if (!self->mailbox) {
        actor_fail(self, "cannot open mailbox %s: %s", self->name, strerror(errno));
        ev_loop_destroy(self->loop);
        s_started(self, -1);
        return NULL;
    }
    if (zwatch_init(&self->inbox_watch, s_inbox_cb, mailbox_inbox(self->mailbox), EV_READ) < 0) {
        actor_fail(self, "cannot watch mailbox %s: %s", self->name, zmq_strerror(errno));
        mailbox_destroy(&self->mailbox);
        ev_loop_destroy(self->loop);
        s_started(self, -1);
        return NULL;
    }
    self->inbox_watch.data = self;
    zwatch_start(self->loop, &self->inbox_watch);
    ev_async_init(&self->stop_async, s_stop_cb);
    self->stop_async.data = self;
    ev_async_start(self->loop, &self->stop_async);
    ev_timer_init(&self->stop_deadline, s_stop_deadline_cb, ACTOR_STOP_DEADLINE_S, 0.);

    if (self->spec->init && self->spec->init(self, self->arg) < 0) {
        if (!self->error[0])
            actor_fail(self, "init failed");
        s_cancel_pending(self);
        zwatch_stop(self->loop, &self->inbox_watch);
        mailbox_destroy(&self->mailbox);
        ev_loop_destroy(self->loop);
        s_started(self, -1);
        return NULL;
    }
    s_started(self, 1);
    log_debug("started");

    ev_run(self->loop, 0);

    s_cancel_pending(self);
    if (self->spec->fini)
        self->spec->fini(self);
    zwatch_stop(self->loop, &self->inbox_watch);
    ev_async_stop(self->loop, &self->stop_async);
    ev_timer_stop(self->loop, &self->stop_deadline);
    mailbox_destroy(&self->mailbox);
    ev_loop_destroy(self->loop);
    log_debug("stopped");
    return NULL;
}

actor_t *actor_new(runtime_t *rt, const char *name, const actor_spec_t *spec, void *arg, char *err,
                   size_t errlen)
{
    if (!name || !*name || strlen(name) >= MSG_NAME_MAX) {
        snprintf(err, errlen, "actor name must be 1 to %d bytes", MSG_NAME_MAX - 1);
        return NULL;
    }
    actor_t *self = calloc(1, sizeof *self);
    if (!self)
        abort();
    self->rt = rt;
    strcpy(self->name, name);
    self->spec = spec;
    self->arg = arg;
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->cond, NULL);

    int rc = pthread_create(&self->thread, NULL, s_thread, self);
    if (rc != 0) {
        snprintf(err, errlen, "%s: cannot start thread: %s", name, strerror(rc));
        pthread_cond_destroy(&self->cond);
        pthread_mutex_destroy(&self->lock);
        free(self);
        return NULL;
    }
    pthread_mutex_lock(&self->lock);
    while (self->started == 0)
        pthread_cond_wait(&self->cond, &self->lock);
    pthread_mutex_unlock(&self->lock);

    if (self->started < 0) {
        pthread_join(self->thread, NULL);
        snprintf(err, errlen, "%s: %s", name, self->error);
        pthread_cond_destroy(&self->cond);
        pthread_mutex_destroy(&self->lock);
        free(self);
        return NULL;
    }
    return self;
}

void actor_destroy(actor_t **ap)
{
    actor_t *self = *ap;
    if (!self)
        return;
    /* ev_async_send is the one libev call that is safe from another thread */
    ev_async_send(self->loop, &self->stop_async);
    pthread_join(self->thread, NULL);
    pthread_cond_destroy(&self->cond);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *ap = NULL;
}

/* ------------------------------------------------------------ accessors */

const char *actor_name(const actor_t *self)
{
    return self->name;
}
struct ev_loop *actor_loop(actor_t *self)
{
    return self->loop;
}
mailbox_t *actor_mailbox(actor_t *self)
{
    return self->mailbox;
}
runtime_t *actor_runtime(actor_t *self)
{
    return self->rt;
}
void *actor_state(actor_t *self)
{
    return self->state;
}
void actor_set_state(actor_t *self, void *state)
{
    self->state = state;
}

void actor_fail(actor_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->error, sizeof self->error, fmt, ap);
    va_end(ap);
}

int actor_send(actor_t *self, const char *to, msg_t *msg)
{
    return mailbox_send(self->mailbox, to, msg);
}

int actor_subscribe(actor_t *self, const char *prefix)
{
    return mailbox_subscribe(self->mailbox, prefix);
}

int actor_set_realtime(actor_t *a, int prio)
{
    struct sched_param sp = {.sched_priority = prio};
    return pthread_setschedparam(a->thread, SCHED_FIFO, &sp);
}

int actor_publish(actor_t *self, const char *topic, msg_t *msg)
{
    return mailbox_publish(self->mailbox, topic, msg);
}
