/*
 * redis.c - the redis actor (see redis.h for its messages and the channel's
 * payload).
 *
 * Two hiredis async contexts live on the actor's loop: "commands" (SET,
 * PUBLISH, GET) and "subscriber" (SUBSCRIBE imagejobs:cancel; a subscribed
 * context takes no other command). Each one is a small state machine:
 *
 *   DOWN --retry timer--> CONNECTING --connect cb, CLIENT SETNAME answered--> READY
 *                                    (subscriber) --connect cb--> SUBSCRIBING
 *                                                 --SUBSCRIBE confirmed--> READY
 *   any state --error, disconnect cb, watchdog--> CLOSING/DOWN --> retry
 *
 * Rules that keep it safe (hiredis 0.14.1):
 *  - hiredis frees a context itself after its connect callback reported a
 *    failure and after its disconnect callback; we only forget the pointer
 *    there and arm the retry timer. We free a context ourselves only from a
 *    timer (watchdog) or from fini, never inside one of its callbacks.
 *  - When a context goes away, hiredis calls every pending reply callback
 *    with a NULL reply, and only then the disconnect callback. Each callback
 *    therefore treats NULL as "connection lost": the request is answered
 *    -EAGAIN (exactly once: every operation is freed where it is answered)
 *    and a cancel goes back into the queue.
 *  - Reply memory lives only inside the callback: what we keep is copied.
 *  - hiredis has no timeouts here: a 1 s watchdog drops a connection whose
 *    connect, SUBSCRIBE or commands get no answer in time; TCP keepalive
 *    catches a peer that vanished while idle.
 *
 * The actor is a bridge between the local bus and Redis pub/sub: a
 * JOB_CANCEL or WORK_AVAILABLE published on this instance's bus is
 * PUBLISHed, encoded from the message table, on its channel; one arriving
 * on the channel from another instance is decoded (as hostile input) and
 * published on the local bus. What it put on the bus itself is never sent
 * back, and its own instance's messages coming back from Redis are skipped.
 *
 * JOB_CANCEL_RECORDED (the store wrote a cancel) sets the seed's flag and
 * publishes the cancel again. Those that could not be written (Redis down,
 * connection lost mid-way) wait in a bounded FIFO, deduplicated by job id,
 * and are written in a window of FLUSH_WINDOW at a time as soon as the
 * commands connection is READY again. An entry leaves the queue only when
 * Redis acknowledged both its SET and its PUBLISH.
 */
#include "config.h"

#include "actors/redis.h"

#include "runtime/backoff.h"
#include "runtime/clock.h"
#include "runtime/log.h"
#include "runtime/names.h"
#include "runtime/uuid.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#define FLAG_TTL_S 3600          /* the seed's TTL of job:{id}:cancelled */
#define BACKOFF_FIRST_S 0.1      /* first retry after a failure */
#define BACKOFF_MAX_S 5.0        /* retries never wait longer */
#define CONNECT_TIMEOUT_S 5.0    /* connected and first answer, or SUBSCRIBE confirmed */
#define COMMAND_TIMEOUT_S 5.0    /* no reply at all while commands wait */
#define WATCHDOG_PERIOD_S 1.0
#define FLUSH_WINDOW 256         /* queued cancels in flight at once */
#define QUEUE_BUCKETS 16384      /* hash buckets of the queue (power of 2) */
#define PAYLOAD_MAX 1024         /* longest channel message we decode */
#define MAX_REQUESTED_AT_US 4102444800000000LL /* 2100-01-01 */
#define DROP_LOG_FIRST 10        /* malformed messages logged one by one */



typedef enum {
    CONN_DOWN,        /* no context; the retry timer is armed */
    CONN_CONNECTING,  /* context created, connect(2) in progress */
    CONN_SUBSCRIBING, /* subscriber: connected, SUBSCRIBE not confirmed */
    CONN_READY,       /* commands: connected; subscriber: subscribed */
    CONN_CLOSING      /* a reply came back NULL: hiredis is tearing it down */
} conn_state_t;

static const char *const s_state_names[] = {"down", "connecting", "subscribing", "up",
                                            "closing"};

typedef struct redis_state redis_state_t;

typedef struct {
    redis_state_t *st;
    const char *role;           /* "commands" or "subscriber" */
    redisAsyncContext *ac;      /* NULL while down */
    conn_state_t state;
    ev_timer retry;
    backoff_t backoff;          /* the next retry's delay */
    ev_tstamp since;            /* when CONNECTING or SUBSCRIBING began */
    ev_tstamp progress;         /* last reply, or first command after idle */
    unsigned inflight;          /* commands awaiting a reply */
    bool was_ready;             /* has been READY once: "lost" vs "failed" */
    bool outage_logged;         /* the current outage was logged */
    char error[128];            /* why it last went down */
    char refused[96];           /* CLOSING: the refusal that made it unusable */
} conn_t;

/* One cancel as it goes to Redis. */
typedef struct {
    char job_id[UUID_STR_LEN];
    cancel_mode_t mode;
    int64_t requested_at_us;
} cancel_t;

/* A queued cancel: in the FIFO (prev/next) and in its hash bucket. */
typedef struct queued {
    struct queued *prev, *next, *hnext;
    cancel_t c;
} queued_t;

typedef struct {
    redis_state_t *st;
    cancel_t c;
    bool from_queue;   /* counts against the flush window */
    int replies_due;   /* of SET and PUBLISH */
    bool lost;         /* a reply came back NULL */
    long long receivers;
    char error[160];   /* Redis's first error reply */
} cancel_op_t;

typedef struct {
    redis_state_t *st;
    actor_caller_t req;
} flag_op_t;

struct redis_state {
    actor_t *self;
    struct ev_loop *loop;
    char url[256];
    char host[256]; /* TCP host, or "" for a unix socket */
    int port;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char instance[REDIS_INSTANCE_MAX];

    conn_t cmd, sub;
    ev_timer watchdog;
    bool stopping;
    /* The subscription was missing for a while (lost, or never made at the
     * first try): publish a "recheck" when it is confirmed again. */
    bool sub_gap;

    queued_t *buckets[QUEUE_BUCKETS];
    queued_t *head, *tail;
    size_t queued, queue_max;
    bool queue_full_logged;
    unsigned flushing; /* queued cancels in flight */

    uint64_t dropped; /* malformed channel messages */
    msg_decoder_t *decoder;
};

/* What redis_start hands to init (valid during actor_new only). */
typedef struct {
    const char *url;
    char host[256];
    int port;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    const char *instance;
    size_t queue_max;
} start_arg_t;

static void s_conn_connect(conn_t *c);
static void s_flush(redis_state_t *st);

/* ------------------------------------------------------------ helpers */


/* A cancel's mode: "none" is not one. */
static int s_mode_parse(const char *s, size_t len, cancel_mode_t *mode)
{
    return cancel_mode_parse(s, len, mode) == 0 && *mode != CANCEL_MODE_NONE ? 0 : -1;
}

/* 1 to 63 printable ASCII characters, no space: fits the payload and a
 * Redis client name. */
static bool s_instance_valid(const char *s, size_t len)
{
    if (len == 0 || len >= REDIS_INSTANCE_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            return false;
    return true;
}

static void s_lowercase(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* Copies at most 64 bytes of untrusted text for a log line, every byte
 * outside printable ASCII shown as '?'. */
static void s_sanitize(char *out, size_t outlen, const char *in, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 4 < outlen && i < 64; i++)
        out[n++] = (in[i] >= 0x20 && in[i] <= 0x7e) ? in[i] : '?';
    if (len > 64 && n + 4 < outlen) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}


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

static bool s_cmd_ready(const redis_state_t *st)
{
    return st->cmd.ac && st->cmd.state == CONN_READY;
}

/* Accounts for one command sent on c (for the watchdog). */
static void s_conn_sent(conn_t *c)
{
    if (c->inflight++ == 0)
        c->progress = ev_now(c->st->loop);
}

/* Accounts for one reply (NULL included) on context ac. NULL means hiredis
 * is tearing the context down: stop using it now; its disconnect callback
 * (or our own teardown) moves the connection on. */
static void s_conn_replied(conn_t *c, const redisAsyncContext *ac, const void *reply)
{
    if (c->ac != ac)
        return;
    if (c->inflight)
        c->inflight--;
    c->progress = ev_now(c->st->loop);
    if (!reply && c->state != CONN_DOWN)
        c->state = CONN_CLOSING;
}

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
    s_flush(st);
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
static bool s_cancel_reply(redisAsyncContext *ac, redisReply *r, cancel_op_t *op,
                           int ok_type)
{
    s_conn_replied(&op->st->cmd, ac, r);
    conn_t *c = &op->st->cmd;
    if (!r)
        op->lost = true;
    else if (r->type == REDIS_REPLY_ERROR && s_error_is_transient(r)) {
        op->lost = true;
        if (c->ac == ac && c->state == CONN_READY) {
            char why[96];
            s_sanitize(why, sizeof why, r->str, r->len);
            log_info("commands: redis refuses writes for now (%s); cancels kept, reconnecting",
                     why);
            snprintf(c->refused, sizeof c->refused, "%s", why);
            c->state = CONN_CLOSING;
        }
    } else if (r->type == REDIS_REPLY_ERROR) {
        if (!op->error[0])
            s_sanitize(op->error, sizeof op->error, r->str, r->len);
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
    if (redisAsyncCommand(c->ac, s_on_set, op, "SET job:%s:cancelled true EX %d",
                          op->c.job_id, FLAG_TTL_S)
        == REDIS_OK) {
        op->replies_due++;
        s_conn_sent(c);
        if (redisAsyncCommand(c->ac, s_on_publish, op, "PUBLISH %s %b", REDIS_CANCEL_CHANNEL,
                              payload, n)
            == REDIS_OK) {
            op->replies_due++;
            s_conn_sent(c);
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
static void s_flush(redis_state_t *st)
{
    while (st->head && st->flushing < FLUSH_WINDOW && s_cmd_ready(st)) {
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
    s_conn_replied(&st->cmd, ac, r);
    if (!r) {
        actor_reply_error(st->self, &op->req, -EAGAIN,
                       st->stopping ? "redis actor stopping" : "redis connection lost");
    } else if (r->type == REDIS_REPLY_ERROR) {
        char why[160];
        s_sanitize(why, sizeof why, r->str, r->len);
        actor_reply_error(st->self, &op->req, -EIO, "redis: %s", why);
    } else {
        msg_t *flag = msg_new(MSG_REDIS_FLAG);
        flag->redis_flag.set =
            r->type == REDIS_REPLY_STRING && r->len == 4 && memcmp(r->str, "true", 4) == 0;
        actor_reply_to(st->self, &op->req, flag);
        msg_destroy(&flag);
    }
    free(op);
}

/* ------------------------------------------------------------ subscriber */

/* A cancel as it may travel: a UUID job id (lowercased here), a mode that
 * stops something, a plausible time, a valid origin. NULL, or why not. */
static const char *s_check_cancel(msg_job_cancel_t *c)
{
    if (!uuid_valid(c->job_id))
        return "job id is not a UUID";
    s_lowercase(c->job_id);
    if (c->mode == CANCEL_MODE_NONE)
        return "mode none";
    if (c->requested_at_us < 1 || c->requested_at_us > MAX_REQUESTED_AT_US)
        return "requested_at_us out of range";
    if (!c->origin || !s_instance_valid(c->origin, strlen(c->origin)))
        return "bad origin";
    return NULL;
}

static const char *s_check_work(msg_work_available_t *w)
{
    if (!uuid_valid(w->job_id))
        return "job id is not a UUID";
    s_lowercase(w->job_id);
    if (!w->origin || !s_instance_valid(w->origin, strlen(w->origin)))
        return "bad origin";
    return NULL;
}

/* The channels and what each carries: the bus topic, the one message type,
 * its check and where its origin lives. */
typedef struct {
    const char *channel;
    const char *topic;
    msg_type_t type;
    const char *(*check)(msg_t *m);
    char **(*origin)(msg_t *m);
} bridge_t;

static const char *s_check_cancel_msg(msg_t *m) { return s_check_cancel(&m->job_cancel); }
static const char *s_check_work_msg(msg_t *m) { return s_check_work(&m->work_available); }
static char **s_cancel_origin(msg_t *m) { return &m->job_cancel.origin; }
static char **s_work_origin(msg_t *m) { return &m->work_available.origin; }

static const bridge_t s_bridges[] = {
    {REDIS_CANCEL_CHANNEL, TOPIC_CANCEL, MSG_JOB_CANCEL, s_check_cancel_msg, s_cancel_origin},
    {REDIS_WORK_CHANNEL, TOPIC_WORK, MSG_WORK_AVAILABLE, s_check_work_msg, s_work_origin},
};
#define BRIDGES (sizeof s_bridges / sizeof s_bridges[0])

static const bridge_t *s_bridge_of_type(msg_type_t type)
{
    for (size_t i = 0; i < BRIDGES; i++)
        if (s_bridges[i].type == type)
            return &s_bridges[i];
    return NULL;
}

static void s_drop_payload(redis_state_t *st, const bridge_t *b, const char *why, const char *p,
                           size_t len)
{
    st->dropped++;
    if (st->dropped <= DROP_LOG_FIRST || st->dropped % 1000 == 0) {
        char shown[96];
        s_sanitize(shown, sizeof shown, p, len);
        log_warn("dropped a malformed message on %s (%s): \"%s\" (%" PRIu64
                 " dropped so far)",
                 b->channel, why, shown, st->dropped);
    }
}

/* A message from another instance: decoded as hostile input, checked, and
 * published on the local bus (our own instance's are skipped: they were on
 * this bus before they went out). */
static void s_on_payload(redis_state_t *st, const bridge_t *b, const char *p, size_t len)
{
    char why[160] = "";
    msg_t *m = NULL;
    if (len == 0 || len > PAYLOAD_MAX)
        snprintf(why, sizeof why, "empty or too long");
    else if (!(m = msg_decode_with(st->decoder, p, len, why, sizeof why)))
        ;
    else if (m->type != b->type || (m->flags & MSG_FLAG_REPLY))
        snprintf(why, sizeof why, "a %s, not a %s event", msg_type_name(m->type),
                 msg_type_name(b->type));
    else {
        const char *bad = b->check(m);
        if (bad)
            snprintf(why, sizeof why, "%s", bad);
    }
    if (why[0]) {
        s_drop_payload(st, b, why, p, len);
        msg_destroy(&m);
        return;
    }
    const char *origin = *b->origin(m);
    if (strcmp(origin, st->instance) == 0) {
        log_debug("own %s skipped", msg_type_name(m->type));
    } else if (actor_publish(st->self, b->topic, m) < 0) {
        log_error("cannot publish a %s from %s on the bus", msg_type_name(m->type), origin);
    } else {
        log_debug("%s from %s published on the bus", msg_type_name(m->type), origin);
    }
    msg_destroy(&m);
}

static void s_publish_recheck(redis_state_t *st)
{
    msg_t *ev = msg_new(MSG_CANCEL_RECHECK);
    msg_set_str(&ev->cancel_recheck.origin, st->instance);
    if (actor_publish(st->self, TOPIC_CANCEL, ev) < 0)
        log_error("cannot publish the recheck on the bus");
    msg_destroy(&ev);
}

static bool s_reply_is(const redisReply *r, const char *s)
{
    return r->type == REDIS_REPLY_STRING && r->len == strlen(s)
           && memcmp(r->str, s, r->len) == 0;
}

/* Every reply of the subscriber's SUBSCRIBE: its confirmation, then one
 * ["message", channel, payload] per published message. */
static void s_on_subscription(redisAsyncContext *ac, void *reply, void *privdata)
{
    conn_t *c = privdata;
    redis_state_t *st = c->st;
    redisReply *r = reply;
    if (!r) {
        if (c->ac == ac && c->state != CONN_DOWN)
            c->state = CONN_CLOSING;
        return;
    }
    if (st->stopping || c->ac != ac)
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        log_debug("unexpected reply on the subscriber (type %d)", r->type);
        return;
    }
    if (s_reply_is(r->element[0], "subscribe")) {
        if (!s_reply_is(r->element[1], REDIS_CANCEL_CHANNEL))
            return; /* the work channel's confirmation: nothing to do */
        c->state = CONN_READY;
        backoff_reset(&c->backoff);
        if (c->outage_logged)
            log_info("subscriber: back on %s, subscribed to %s", st->url,
                     REDIS_CANCEL_CHANNEL);
        else
            log_info("subscriber: subscribed to %s on %s", REDIS_CANCEL_CHANNEL, st->url);
        c->outage_logged = false;
        c->was_ready = true;
        if (st->sub_gap) {
            /* cancels published while we were not listening are lost to us */
            st->sub_gap = false;
            s_publish_recheck(st);
        }
    } else if (s_reply_is(r->element[0], "message")
               && r->element[2]->type == REDIS_REPLY_STRING) {
        for (size_t i = 0; i < BRIDGES; i++)
            if (s_reply_is(r->element[1], s_bridges[i].channel))
                s_on_payload(st, &s_bridges[i], r->element[2]->str, r->element[2]->len);
    }
}

/* ------------------------------------------------------------ connections */

/* The connection is gone (its context already freed or being freed by
 * hiredis): log the change once and arm the retry. */
static void s_conn_down(conn_t *c, const char *why)
{
    redis_state_t *st = c->st;
    c->ac = NULL;
    c->state = CONN_DOWN;
    c->inflight = 0;
    snprintf(c->error, sizeof c->error, "%s", why && *why ? why : "unknown error");
    if (c == &st->sub)
        st->sub_gap = true;
    if (!c->outage_logged) {
        log_warn("%s: %s %s: %s; retrying", c->role,
                 c->was_ready ? "lost the connection to" : "cannot connect to", st->url,
                 c->error);
        c->outage_logged = true;
    } else {
        log_debug("%s: %s still unreachable: %s", c->role, st->url, c->error);
    }
    /* jittered, so that instances do not retry in step */
    ev_timer_set(&c->retry, backoff_next(&c->backoff), 0.);
    ev_timer_start(st->loop, &c->retry);
}

/* Tears down c's context ourselves (watchdog). Never called from one of its
 * callbacks. Pending callbacks run with NULL replies inside redisAsyncFree;
 * the disconnect callback then sees c->ac != ac and leaves it to us. */
static void s_conn_drop(conn_t *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    redisAsyncFree(ac);
    s_conn_down(c, why);
}

/* The commands connection's first reply (to CLIENT SETNAME): Redis answers,
 * the connection is up. An error reply counts too (an old or restricted
 * server): what matters is that commands are being executed. */
static void s_on_hello(redisAsyncContext *ac, void *reply, void *privdata)
{
    conn_t *c = privdata;
    redis_state_t *st = c->st;
    if (!reply) {
        if (c->ac == ac && c->state != CONN_DOWN)
            c->state = CONN_CLOSING;
        return;
    }
    if (st->stopping || c->ac != ac)
        return;
    c->state = CONN_READY;
    backoff_reset(&c->backoff);
    if (c->outage_logged)
        log_info("commands: back on %s (%zu queued cancels to write)", st->url, st->queued);
    else
        log_info("commands: connected to %s", st->url);
    c->outage_logged = false;
    c->was_ready = true;
    s_flush(st);
}

static void s_on_connect(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;
    redis_state_t *st = c->st;
    if (st->stopping || c->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac when we return */
        s_conn_down(c, ac->c.errstr);
        return;
    }
    /* the const is hiredis's; the context is ours to send on. The TCP
     * connection alone proves little (a frozen server still accepts): each
     * connection is up only once Redis has answered on it, in time (the
     * watchdog times CONNECTING and SUBSCRIBING from here). */
    redisAsyncContext *w = (redisAsyncContext *)ac;
    char name[REDIS_INSTANCE_MAX + 32];
    snprintf(name, sizeof name, "imagejobs:%s:%s", st->instance, c->role);
    c->since = ev_now(st->loop);
    int rc;
    if (c == &st->sub) {
        c->state = CONN_SUBSCRIBING;
        rc = redisAsyncCommand(w, NULL, NULL, "CLIENT SETNAME %s", name);
        if (rc == REDIS_OK)
            rc = redisAsyncCommand(w, s_on_subscription, c, "SUBSCRIBE %s %s",
                                   REDIS_CANCEL_CHANNEL, REDIS_WORK_CHANNEL);
    } else {
        rc = redisAsyncCommand(w, s_on_hello, c, "CLIENT SETNAME %s", name);
    }
    if (rc != REDIS_OK)
        c->state = CONN_CLOSING;
}

static void s_on_disconnect(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;
    if (c->st->stopping || c->ac != ac)
        return; /* fini, or our own teardown */
    /* hiredis frees ac when we return */
    s_conn_down(c, status == REDIS_OK ? "connection closed" : ac->c.errstr);
}

/* Starts a connection attempt; on an immediate failure arms the retry. */
static void s_conn_connect(conn_t *c)
{
    redis_state_t *st = c->st;
    redisAsyncContext *ac =
        st->host[0] ? redisAsyncConnect(st->host, st->port) : redisAsyncConnectUnix(st->path);
    if (!ac) {
        s_conn_down(c, "out of memory");
        return;
    }
    if (ac->err || (st->host[0] && redisEnableKeepAlive(&ac->c) != REDIS_OK)) {
        char why[128];
        snprintf(why, sizeof why, "%s", ac->c.errstr);
        redisAsyncFree(ac); /* not attached, no callbacks: safe here */
        s_conn_down(c, why);
        return;
    }
    ac->data = c;
    /* attach before setting the connect callback: hiredis 0.14.1 arms the
     * write watcher that detects the connection inside SetConnectCallback */
    redisLibevAttach(st->loop, ac);
    redisAsyncSetConnectCallback(ac, s_on_connect);
    redisAsyncSetDisconnectCallback(ac, s_on_disconnect);
    c->ac = ac;
    c->state = CONN_CONNECTING;
    c->since = ev_now(st->loop);
    c->inflight = 0;
    c->refused[0] = '\0';
}

static void s_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    s_conn_connect(w->data);
}

/* Drops connections that stopped answering: hiredis has no timeouts. */
static void s_watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    redis_state_t *st = w->data;
    ev_tstamp now = ev_now(loop);
    conn_t *conns[] = {&st->cmd, &st->sub};
    for (int i = 0; i < 2; i++) {
        conn_t *c = conns[i];
        if (!c->ac)
            continue;
        if (c->state == CONN_CONNECTING && now - c->since > CONNECT_TIMEOUT_S)
            s_conn_drop(c, "no connection or no answer in time");
        else if (c->state == CONN_SUBSCRIBING && now - c->since > CONNECT_TIMEOUT_S)
            s_conn_drop(c, "SUBSCRIBE not confirmed in time");
        else if (c->state == CONN_READY && c->inflight
                 && now - c->progress > COMMAND_TIMEOUT_S)
            s_conn_drop(c, "no reply to commands in time");
        else if (c->state == CONN_CLOSING) /* refused a command, Redis or hiredis */
            s_conn_drop(c, c->refused[0] ? c->refused : "connection unusable");
    }
}

/* ------------------------------------------------------------ handlers */

/* JOB_CANCEL_RECORDED (bus "job.cancel_recorded"): the seed's flag, and the
 * cancel once more for an instance that missed the first event; kept for
 * Redis's return while it is down. */
static void s_on_cancel_recorded(actor_t *self, msg_t *msg)
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
    s_lowercase(c.job_id);
    if (!s_cmd_ready(st)) {
        if (s_queue_push(st, &c) == 0)
            log_debug("cancel flag of %s queued: redis unavailable (%s)", c.job_id,
                      st->cmd.error[0] ? st->cmd.error : s_state_names[st->cmd.state]);
        return;
    }
    cancel_op_t *op = calloc(1, sizeof *op);
    if (!op)
        abort();
    op->st = st;
    op->c = c;
    s_cancel_send(st, op);
}

static void s_on_event_published(redisAsyncContext *ac, void *reply, void *privdata)
{
    s_conn_replied(ac->data, ac, reply);
}

/* A bridged event on our bus (JOB_CANCEL from the http actor, WORK_AVAILABLE
 * from the store): PUBLISH it for the other instances, best effort (while
 * Redis is down the durable paths cover it: the flag's queue, the store's
 * cancel, the generators' sweep). What we put on the bus ourselves came
 * from Redis and is not sent back. */
static void s_on_bridged_event(actor_t *self, msg_t *msg)
{
    redis_state_t *st = actor_state(self);
    const bridge_t *b = s_bridge_of_type(msg->type);
    if (strcmp(msg->sender, actor_name(self)) == 0 || !s_cmd_ready(st))
        return;
    msg_set_str(b->origin(msg), st->instance);
    const char *bad = b->check(msg);
    if (bad) {
        log_warn("malformed %s from %s not published (%s)", msg_type_name(msg->type),
                 msg->sender, bad);
        return;
    }
    snprintf(msg->sender, sizeof msg->sender, "%s", actor_name(self));
    void *payload;
    size_t n;
    if (msg_encode(msg, &payload, &n) < 0)
        return;
    conn_t *conn = &st->cmd;
    if (redisAsyncCommand(conn->ac, s_on_event_published, NULL, "PUBLISH %s %b", b->channel,
                          payload, n)
        == REDIS_OK)
        s_conn_sent(conn);
    free(payload);
}

/* Our own recheck, on the topic we subscribe to: nothing to bridge. */
static void s_on_recheck(actor_t *self, msg_t *msg) {}

static void s_handle_flag_get(actor_t *self, msg_t *msg)
{
    redis_state_t *st = actor_state(self);
    actor_caller_t req = actor_caller(msg);
    if (!uuid_valid(msg->redis_flag_get.job_id)) {
        actor_reply_error(st->self, &req, -EINVAL, "job_id is not a UUID");
        return;
    }
    if (!s_cmd_ready(st)) {
        actor_reply_error(st->self, &req, -EAGAIN, "redis unavailable (%s)",
                       st->cmd.error[0] ? st->cmd.error : s_state_names[st->cmd.state]);
        return;
    }
    char id[UUID_STR_LEN];
    memcpy(id, msg->redis_flag_get.job_id, UUID_STR_LEN);
    s_lowercase(id);
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
    s_conn_sent(&st->cmd);
}

/* Appends to a bounded buffer; truncates, never overflows. */
static void s_append(char *buf, size_t size, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void s_append(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
    if (*len >= size - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, size - *len, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len = *len + (size_t)n < size ? *len + (size_t)n : size - 1;
}

static void s_handle_health(actor_t *self, msg_t *msg)
{
    redis_state_t *st = actor_state(self);
    char detail[768];
    size_t n = 0;
    detail[0] = '\0';
    s_append(detail, sizeof detail, &n, "redis %s: commands %s", st->url,
             s_state_names[st->cmd.state]);
    if (st->cmd.state != CONN_READY && st->cmd.error[0])
        s_append(detail, sizeof detail, &n, " (%s)", st->cmd.error);
    s_append(detail, sizeof detail, &n, ", subscriber %s", s_state_names[st->sub.state]);
    if (st->sub.state != CONN_READY && st->sub.error[0])
        s_append(detail, sizeof detail, &n, " (%s)", st->sub.error);
    if (st->queued)
        s_append(detail, sizeof detail, &n, ", %zu cancels queued", st->queued);
    msg_t *h = msg_new(MSG_HEALTH);
    h->health.ok = st->cmd.state == CONN_READY && st->sub.state == CONN_READY;
    msg_set_str(&h->health.detail, detail);
    actor_reply(self, msg, h);
    msg_destroy(&h);
}

/* ------------------------------------------------------------ lifecycle */

static void s_conn_init(redis_state_t *st, conn_t *c, const char *role)
{
    c->st = st;
    c->role = role;
    c->state = CONN_DOWN;
    uint64_t seed = (uint64_t)clock_wall_us() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)c;
    backoff_init(&c->backoff, BACKOFF_FIRST_S, BACKOFF_MAX_S, seed | 1);
    ev_timer_init(&c->retry, s_retry_cb, 0., 0.);
    c->retry.data = c;
}

static int s_init(actor_t *self, void *arg)
{
    const start_arg_t *a = arg;
    /* what happens here that the other instances must learn */
    if (actor_subscribe(self, TOPIC_WORK) < 0 || actor_subscribe(self, TOPIC_CANCEL) < 0
        || actor_subscribe(self, TOPIC_JOB_CANCEL_RECORDED) < 0) {
        actor_fail(self, "cannot subscribe to the bus");
        return -1;
    }
    redis_state_t *st = calloc(1, sizeof *st);
    if (!st)
        abort();
    st->self = self;
    st->loop = actor_loop(self);
    snprintf(st->url, sizeof st->url, "%s", a->url);
    snprintf(st->host, sizeof st->host, "%s", a->host);
    st->port = a->port;
    snprintf(st->path, sizeof st->path, "%s", a->path);
    snprintf(st->instance, sizeof st->instance, "%s", a->instance);
    st->queue_max = a->queue_max ? a->queue_max : REDIS_QUEUE_MAX_DEFAULT;
    st->decoder = msg_decoder_new();
    s_conn_init(st, &st->cmd, "commands");
    s_conn_init(st, &st->sub, "subscriber");
    ev_timer_init(&st->watchdog, s_watchdog_cb, WATCHDOG_PERIOD_S, WATCHDOG_PERIOD_S);
    st->watchdog.data = st;
    ev_timer_start(st->loop, &st->watchdog);
    actor_set_state(self, st);

    s_conn_connect(&st->cmd);
    s_conn_connect(&st->sub);
    return 0;
}

static void s_fini(actor_t *self)
{
    redis_state_t *st = actor_state(self);
    if (!st)
        return;
    /* From here on every callback that hiredis runs while freeing the
     * contexts answers its request and touches nothing else. */
    st->stopping = true;
    ev_timer_stop(st->loop, &st->watchdog);
    conn_t *conns[] = {&st->cmd, &st->sub};
    for (int i = 0; i < 2; i++) {
        ev_timer_stop(st->loop, &conns[i]->retry);
        redisAsyncContext *ac = conns[i]->ac;
        conns[i]->ac = NULL;
        if (ac)
            redisAsyncFree(ac);
    }
    if (st->queued)
        log_warn("%zu queued cancels not written to Redis at shutdown (PostgreSQL has them)",
                 st->queued);
    while (st->head) {
        queued_t *q = st->head;
        st->head = q->next;
        free(q);
    }
    msg_decoder_destroy(&st->decoder);
    free(st);
    actor_set_state(self, NULL);
}

static const actor_spec_t s_spec = {
    .init = s_init,
    .fini = s_fini,
    .handlers =
        {
            [MSG_JOB_CANCEL] = s_on_bridged_event,
            [MSG_WORK_AVAILABLE] = s_on_bridged_event,
            [MSG_JOB_CANCEL_RECORDED] = s_on_cancel_recorded,
            [MSG_CANCEL_RECHECK] = s_on_recheck,
            [MSG_REDIS_FLAG_GET] = s_handle_flag_get,
            [MSG_HEALTH_CHECK] = s_handle_health,
        },
};

/* ------------------------------------------------------------ start */

/* redis://HOST[:PORT] or an absolute socket path, strictly. */
static int s_url_parse(const char *url, start_arg_t *a, char *err, size_t errlen)
{
    static const char usage[] = "expected redis://HOST[:PORT] or an absolute unix socket path";
    if (!url || !*url) {
        snprintf(err, errlen, "no Redis URL given (%s)", usage);
        return -1;
    }
    if (url[0] == '/') {
        if (strlen(url) >= sizeof a->path) {
            snprintf(err, errlen, "unix socket path longer than %zu bytes: %s",
                     sizeof a->path - 1, url);
            return -1;
        }
        a->host[0] = '\0';
        snprintf(a->path, sizeof a->path, "%s", url);
        return 0;
    }
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) {
        snprintf(err, errlen, "bad Redis URL \"%s\": %s", url, usage);
        return -1;
    }
    p += 8;
    const char *host = p;
    size_t hlen;
    if (*p == '[') { /* [IPv6] */
        const char *end = strchr(p, ']');
        if (!end || end == p + 1) {
            snprintf(err, errlen, "bad Redis URL \"%s\": unterminated [IPv6 address]", url);
            return -1;
        }
        for (const char *q = p + 1; q < end; q++)
            if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.') {
                snprintf(err, errlen, "bad Redis URL \"%s\": bad IPv6 address", url);
                return -1;
            }
        host = p + 1;
        hlen = (size_t)(end - host);
        p = end + 1;
    } else {
        while (isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_')
            p++;
        hlen = (size_t)(p - host);
    }
    if (hlen == 0 || hlen >= sizeof a->host) {
        snprintf(err, errlen, "bad Redis URL \"%s\": %s host (%s)", url,
                 hlen ? "too long a" : "no", usage);
        return -1;
    }
    memcpy(a->host, host, hlen);
    a->host[hlen] = '\0';
    a->port = 6379;
    if (*p == ':') {
        p++;
        long port = 0;
        const char *digits = p;
        while (*p >= '0' && *p <= '9' && p - digits < 6)
            port = port * 10 + (*p++ - '0');
        if (p == digits || port < 1 || port > 65535 || (*p >= '0' && *p <= '9')) {
            snprintf(err, errlen, "bad Redis URL \"%s\": port must be 1 to 65535", url);
            return -1;
        }
        a->port = (int)port;
    }
    if (*p) {
        snprintf(err, errlen, "bad Redis URL \"%s\": unexpected \"%s\" (%s)", url, p, usage);
        return -1;
    }
    return 0;
}

actor_t *redis_start(runtime_t *rt, const redis_config_t *cfg, char *err, size_t errlen)
{
    start_arg_t a = {0};
    if (!cfg) {
        snprintf(err, errlen, "redis: no configuration");
        return NULL;
    }
    char why[512];
    if (s_url_parse(cfg->url, &a, why, sizeof why) < 0) {
        snprintf(err, errlen, "redis: %s", why);
        return NULL;
    }
    if (!cfg->instance || !s_instance_valid(cfg->instance, strlen(cfg->instance))) {
        snprintf(err, errlen,
                 "redis: instance name must be 1 to %d printable ASCII characters without "
                 "spaces",
                 REDIS_INSTANCE_MAX - 1);
        return NULL;
    }
    a.url = cfg->url;
    a.instance = cfg->instance;
    a.queue_max = cfg->queue_max;
    return actor_new(rt, ACTOR_REDIS, &s_spec, &a, err, errlen);
}

void redis_destroy(actor_t **ap)
{
    actor_destroy(ap);
}
