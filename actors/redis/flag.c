/*
 * flag.c - the seed's cancel flag: on JOB_CANCEL_RECORDED, SET
 * job:{id}:cancelled "true" EX 3600 then PUBLISH the cancel again,
 * pipelined in that order; while Redis is down, a bounded FIFO of cancels,
 * deduplicated by job id, written FLUSH_WINDOW at a time on its return (an
 * entry leaves the queue only when Redis acknowledged both commands); GET
 * for the seed's polling design.
 */
#include "config.h"

#include "actors/redis/internal.h"

#include "runtime/clock.h"
#include "runtime/log.h"
#include "runtime/names.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    redis_state_t *st;
    cancel_t c;
    bool from_queue; /* counts against the flush window */
    int replies_due; /* of SET and PUBLISH */
    bool lost;       /* a reply came back NULL */
    long long receivers;
    char error[160]; /* Redis's first error reply */
} cancel_op_t;

typedef struct {
    redis_state_t *st;
    actor_caller_t req;
} flag_op_t;

/* ------------------------------------------------------------ queue */

static uint32_t s_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h & (QUEUE_BUCKETS - 1);
}

static queued_t **s_queue_find(redis_state_t *st, const char *job_id)
{
    queued_t **pp = &st->buckets[s_hash(job_id)];
    while (*pp && strcmp((*pp)->c.job_id, job_id) != 0)
        pp = &(*pp)->hnext;
    return pp;
}

/* Unlinks *pp (a hash-chain slot) from the chain and from the FIFO. */
static queued_t *s_queue_unlink(redis_state_t *st, queued_t **pp)
{
    queued_t *q = *pp;
    *pp = q->hnext;
    if (q->prev)
        q->prev->next = q->next;
    else
        st->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        st->tail = q->prev;
    if (--st->queued == 0)
        st->queue_full_logged = false;
    return q;
}

/* Remembers c for Redis's return. A job already queued keeps its first
 * cancel (the store, too, keeps the first mode). Returns 0, or -1 when the
 * queue is full. */
static int s_queue_push(redis_state_t *st, const cancel_t *c)
{
    queued_t **pp = s_queue_find(st, c->job_id);
    if (*pp)
        return 0;
    if (st->queued >= st->queue_max) {
        if (!st->queue_full_logged)
            log_warn("cancel queue full (%zu): cancels are not kept for Redis until it "
                     "drains (PostgreSQL still has them)",
                     st->queued);
        st->queue_full_logged = true;
        return -1;
    }
    queued_t *q = calloc(1, sizeof *q);
    if (!q)
        abort();
    q->c = *c;
    *pp = q;
    q->prev = st->tail;
    if (st->tail)
        st->tail->next = q;
    else
        st->head = q;
    st->tail = q;
    st->queued++;
    return 0;
}

/* Forgets the queued cancel of job_id, if any (it has been written). */
static void s_queue_forget(redis_state_t *st, const char *job_id)
{
    queued_t **pp = s_queue_find(st, job_id);
    if (*pp)
        free(s_queue_unlink(st, pp));
}

/* ------------------------------------------------------------ commands */

static void s_cancel_done(cancel_op_t *op)
{
    redis_state_t *st = op->st;
    if (op->from_queue)
        st->flushing--;
    if (st->stopping) {
        log_warn("cancel flag of %s not confirmed before the stop (PostgreSQL has the cancel)",
                 op->c.job_id);
    } else if (op->lost) {
        int kept = s_queue_push(st, &op->c);
        log_debug("cancel flag of %s not acknowledged (connection lost); %s", op->c.job_id,
                  kept == 0 ? "queued" : "queue full");
    } else if (op->error[0]) {
        log_warn("redis refused the cancel flag of %s: %s", op->c.job_id, op->error);
    } else {
        s_queue_forget(st, op->c.job_id); /* a duplicate queued meanwhile */
        log_debug("cancel flag of %s set; published to %lld subscribers", op->c.job_id,
                  op->receivers);
    }
    free(op);
    redis_flag_flush(st);
}

/* An error reply that means "not now" rather than "never": Redis restarted
 * and is loading its dataset (it accepts connections and answers CLIENT,
 * SUBSCRIBE and PUBLISH meanwhile, but refuses SET), a script keeps it
 * busy, or a replica lost its master. */
static bool s_error_is_transient(const redisReply *r)
{
    static const char *const codes[] = {"LOADING", "BUSY", "MASTERDOWN"};
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        size_t n = strlen(codes[i]);
        if (r->len >= n && memcmp(r->str, codes[i], n) == 0 && (r->len == n || r->str[n] == ' '))
            return true;
    }
    return false;
}

/* Common part of the SET and PUBLISH callbacks; returns true when the op is
 * complete. A transient refusal counts as a lost reply: the cancel goes
 * back into the queue, and the connection is marked unusable so that the
 * watchdog drops it and the retry comes with backoff (retrying from here
 * would spin for as long as Redis loads). */
static bool s_cancel_reply(redisAsyncContext *ac, redisReply *r, cancel_op_t *op, int ok_type)
{
    redis_conn_replied(&op->st->cmd, ac, r);
    conn_t *c = &op->st->cmd;
    if (!r)
        op->lost = true;
    else if (r->type == REDIS_REPLY_ERROR && s_error_is_transient(r)) {
        op->lost = true;
        if (c->ac == ac && c->state == CONN_READY) {
            char why[96];
            redis_sanitize(why, sizeof why, r->str, r->len);
            log_info("commands: redis refuses writes for now (%s); cancels kept, reconnecting",
                     why);
            snprintf(c->refused, sizeof c->refused, "%s", why);
            c->state = CONN_CLOSING;
        }
    } else if (r->type == REDIS_REPLY_ERROR) {
        if (!op->error[0])
            redis_sanitize(op->error, sizeof op->error, r->str, r->len);
    } else if ((int)r->type != ok_type && !op->error[0]) {
        snprintf(op->error, sizeof op->error, "unexpected reply type %d", r->type);
    }
    return --op->replies_due == 0;
}

static void s_on_set(redisAsyncContext *ac, void *reply, void *privdata)
{
    cancel_op_t *op = privdata;
    if (s_cancel_reply(ac, reply, op, REDIS_REPLY_STATUS))
        s_cancel_done(op);
}

static void s_on_publish(redisAsyncContext *ac, void *reply, void *privdata)
{
    cancel_op_t *op = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_INTEGER)
        op->receivers = r->integer;
    if (s_cancel_reply(ac, r, op, REDIS_REPLY_INTEGER))
        s_cancel_done(op);
}

/* The channel's message for cancel c: JOB_CANCEL from this instance,
 * encoded (*payload malloc'd, the caller frees). */
static void s_cancel_payload(const redis_state_t *st, const cancel_t *c, void **payload,
                             size_t *len)
{
    msg_t *m = msg_new(MSG_JOB_CANCEL);
    msg_set_str(&m->job_cancel.job_id, c->job_id);
    m->job_cancel.mode = c->mode;
    m->job_cancel.requested_at_us = c->requested_at_us;
    msg_set_str(&m->job_cancel.origin, st->instance);
    m->flags = MSG_FLAG_EVENT;
    snprintf(m->sender, sizeof m->sender, "%s", actor_name(st->self));
    if (msg_encode(m, payload, len) < 0)
        abort(); /* a type of the table always encodes */
    msg_destroy(&m);
}

/* Sends SET then PUBLISH (pipelined, in that order, so that whoever reacts
 * to the event already finds the flag). Consumes op. */
static void s_cancel_send(redis_state_t *st, cancel_op_t *op)
{
    conn_t *c = &st->cmd;
    void *payload;
    size_t n;
    s_cancel_payload(st, &op->c, &payload, &n);
    op->replies_due = 0;
    if (redisAsyncCommand(c->ac, s_on_set, op, "SET job:%s:cancelled true EX %d", op->c.job_id,
                          FLAG_TTL_S)
        == REDIS_OK) {
        op->replies_due++;
        redis_conn_sent(c);
        if (redisAsyncCommand(c->ac, s_on_publish, op, "PUBLISH %s %b", REDIS_CANCEL_CHANNEL,
                              payload, n)
            == REDIS_OK) {
            op->replies_due++;
            redis_conn_sent(c);
            free(payload);
            return;
        }
    }
    free(payload);
    /* hiredis refuses commands only on a context it is tearing down */
    c->state = CONN_CLOSING;
    op->lost = true;
    if (op->replies_due == 0)
        s_cancel_done(op);
}

/* Writes queued cancels while the commands connection is up, at most
 * FLUSH_WINDOW at a time; each completion calls back here for more. */
void redis_flag_flush(redis_state_t *st)
{
    while (st->head && st->flushing < FLUSH_WINDOW && redis_cmd_ready(st)) {
        queued_t *q = s_queue_unlink(st, s_queue_find(st, st->head->c.job_id));
        cancel_op_t *op = calloc(1, sizeof *op);
        if (!op)
            abort();
        op->st = st;
        op->c = q->c;
        op->from_queue = true;
        free(q);
        st->flushing++;
        s_cancel_send(st, op);
    }
}

static void s_on_flag(redisAsyncContext *ac, void *reply, void *privdata)
{
    flag_op_t *op = privdata;
    redis_state_t *st = op->st;
    redisReply *r = reply;
    redis_conn_replied(&st->cmd, ac, r);
    if (!r) {
        actor_reply_error(st->self, &op->req, -EAGAIN,
                          st->stopping ? "redis actor stopping" : "redis connection lost");
    } else if (r->type == REDIS_REPLY_ERROR) {
        char why[160];
        redis_sanitize(why, sizeof why, r->str, r->len);
        /* "not now" (loading, busy) is unavailable, like a lost connection */
        actor_reply_error(st->self, &op->req, s_error_is_transient(r) ? -EAGAIN : -EIO, "redis: %s",
                          why);
    } else {
        msg_t *flag = msg_new(MSG_REDIS_FLAG);
        flag->redis_flag.set =
            r->type == REDIS_REPLY_STRING && r->len == 4 && memcmp(r->str, "true", 4) == 0;
        actor_reply_to(st->self, &op->req, flag);
        msg_destroy(&flag);
    }
    free(op);
}

/* ------------------------------------------------------------ handlers */

/* JOB_CANCEL_RECORDED (bus "job.cancel_recorded"): the seed's flag, and the
 * cancel once more for an instance that missed the first event; kept for
 * Redis's return while it is down. */
void redis_on_cancel_recorded(actor_t *self, msg_t *msg)
{
    redis_state_t *st = actor_state(self);
    const msg_job_cancel_recorded_t *rc = &msg->job_cancel_recorded;
    cancel_t c = {.mode = rc->mode, .requested_at_us = rc->requested_at_us};
    if (!uuid_valid(rc->job_id) || c.mode == CANCEL_MODE_NONE || c.requested_at_us < 1
        || c.requested_at_us > MAX_REQUESTED_AT_US) {
        log_warn("malformed cancel record from %s dropped", msg->sender);
        return;
    }
    memcpy(c.job_id, rc->job_id, UUID_STR_LEN);
    redis_lowercase(c.job_id);
    if (!redis_cmd_ready(st)) {
        if (s_queue_push(st, &c) == 0)
            log_debug("cancel flag of %s queued: redis unavailable (%s)", c.job_id,
                      st->cmd.error[0] ? st->cmd.error : redis_state_name(st->cmd.state));
        redis_conn_wake(&st->cmd); /* written as soon as Redis answers again */
        return;
    }
    cancel_op_t *op = calloc(1, sizeof *op);
    if (!op)
        abort();
    op->st = st;
    op->c = c;
    s_cancel_send(st, op);
}

void redis_on_flag_get(actor_t *self, msg_t *msg)
{
    redis_state_t *st = actor_state(self);
    actor_caller_t req = actor_caller(msg);
    if (!uuid_valid(msg->redis_flag_get.job_id)) {
        actor_reply_error(st->self, &req, -EINVAL, "job_id is not a UUID");
        return;
    }
    if (!redis_cmd_ready(st)) {
        actor_reply_error(st->self, &req, -EAGAIN, "redis unavailable (%s)",
                          st->cmd.error[0] ? st->cmd.error : redis_state_name(st->cmd.state));
        redis_conn_wake(&st->cmd); /* the next poll may find it back */
        return;
    }
    char id[UUID_STR_LEN];
    memcpy(id, msg->redis_flag_get.job_id, UUID_STR_LEN);
    redis_lowercase(id);
    flag_op_t *op = calloc(1, sizeof *op);
    if (!op)
        abort();
    op->st = st;
    op->req = req;
    if (redisAsyncCommand(st->cmd.ac, s_on_flag, op, "GET job:%s:cancelled", id) != REDIS_OK) {
        st->cmd.state = CONN_CLOSING;
        actor_reply_error(st->self, &op->req, -EAGAIN, "redis connection lost");
        free(op);
        return;
    }
    redis_conn_sent(&st->cmd);
}

/* The queue at shutdown: what was not written is only logged (PostgreSQL
 * has every cancel). */
void redis_flag_queue_free(redis_state_t *st)
{
    if (st->queued)
        log_warn("%zu queued cancels not written to Redis at shutdown (PostgreSQL has them)",
                 st->queued);
    while (st->head) {
        queued_t *q = st->head;
        st->head = q->next;
        free(q);
    }
}
