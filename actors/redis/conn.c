/*
 * conn.c - the redis actor's two hiredis async contexts, "commands" and
 * "subscriber", each a small state machine on the actor's loop (see
 * redis.c's header for the states and the rules that keep them safe).
 */
#include "config.h"

#include "actors/redis/internal.h"

#include "runtime/clock.h"
#include "runtime/log.h"
#include "runtime/metrics.h"
#include "runtime/names.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/adapters/libev.h>

static void s_on_subscription(redisAsyncContext *ac, void *reply, void *privdata);

/* ------------------------------------------------------------ commands */

bool redis_cmd_ready(const redis_state_t *st)
{
    return st->cmd.ac && st->cmd.state == CONN_READY;
}

/* Accounts for one command sent on c (for the watchdog). */
void redis_conn_sent(conn_t *c)
{
    if (c->inflight++ == 0)
        c->progress = ev_now(c->st->loop);
}

/* Accounts for one reply (NULL included) on context ac. NULL means hiredis
 * is tearing the context down: stop using it now; its disconnect callback
 * (or our own teardown) moves the connection on. */
void redis_conn_replied(conn_t *c, const redisAsyncContext *ac, const void *reply)
{
    if (c->ac != ac)
        return;
    if (c->inflight)
        c->inflight--;
    c->progress = ev_now(c->st->loop);
    if (!reply && c->state != CONN_DOWN)
        c->state = CONN_CLOSING;
}

/* ------------------------------------------------------------ connections */

/* The connection is gone (its context already freed or being freed by
 * hiredis): log the change once and arm the retry. */
/* imagejobs_redis_up: both connections answering */
static void s_gauge(const redis_state_t *st)
{
    atomic_store(&metrics.redis_up, st->cmd.state == CONN_READY && st->sub.state == CONN_READY);
}

static void s_conn_down(conn_t *c, const char *why)
{
    redis_state_t *st = c->st;
    c->ac = NULL;
    c->state = CONN_DOWN;
    s_gauge(st);
    c->inflight = 0;
    snprintf(c->error, sizeof c->error, "%s", why && *why ? why : "unknown error");
    if (c == &st->sub)
        st->sub_gap = true;
    if (!c->outage_logged) {
        log_warn("%s: %s %s: %s; retrying", c->role,
                 c->was_ready ? "lost the connection to" : "cannot connect to", st->url, c->error);
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

/* Whether a reply on ac is one to act on: NULL means hiredis is tearing the
 * context down (the connection is unusable from now on), and a reply on a
 * context we already let go of, or while stopping, is stale. */
static bool s_reply_current(conn_t *c, const redisAsyncContext *ac, const void *reply)
{
    if (!reply) {
        if (c->ac == ac && c->state != CONN_DOWN)
            c->state = CONN_CLOSING;
        return false;
    }
    return !c->st->stopping && c->ac == ac;
}

/* The commands connection's first reply (to CLIENT SETNAME): Redis answers,
 * the connection is up. An error reply counts too (an old or restricted
 * server): what matters is that commands are being executed. */
static void s_on_hello(redisAsyncContext *ac, void *reply, void *privdata)
{
    conn_t *c = privdata;
    redis_state_t *st = c->st;
    if (!s_reply_current(c, ac, reply))
        return;
    c->state = CONN_READY;
    s_gauge(st);
    backoff_reset(&c->backoff);
    if (c->outage_logged)
        log_info("commands: back on %s (%zu queued cancels to write)", st->url, st->queued);
    else
        log_info("commands: connected to %s", st->url);
    c->outage_logged = false;
    c->was_ready = true;
    redis_flag_flush(st);
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
            rc = redisAsyncCommand(w, s_on_subscription, c, "SUBSCRIBE %s %s %s %s %s %s %s %s",
                                   REDIS_CANCEL_CHANNEL, REDIS_WORK_CHANNEL,
                                   REDIS_CANCEL_MANY_CHANNEL, REDIS_COMBINATION_CANCEL_CHANNEL,
                                   REDIS_EVENTS_CHANNEL, REDIS_PROGRESS_CHANNEL,
                                   REDIS_PREVIEWS_CHANNEL, REDIS_PREVIEW_WANTED_CHANNEL);
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
void redis_conn_connect(conn_t *c)
{
    redis_state_t *st = c->st;
    c->attempt_at = ev_now(st->loop);
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
    c->since = c->attempt_at;
    c->inflight = 0;
    c->refused[0] = '\0';
}

static void s_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    redis_conn_connect(w->data);
}

/* Only the retry timer is moved: the attempt starts from the loop, never
 * inside the handler of the request that asked (an attempt that fails at
 * once re-arms the timer itself, and the request is answered first). */
void redis_conn_wake(conn_t *c)
{
    redis_state_t *st = c->st;
    if (st->stopping || c->state != CONN_DOWN || c->ac)
        return; /* an attempt is under way, or the connection is there */
    double wait = c->attempt_at + WAKE_INTERVAL_S - ev_now(st->loop);
    if (wait < 0)
        wait = 0;
    if (ev_is_active(&c->retry) && ev_timer_remaining(st->loop, &c->retry) <= wait)
        return;
    ev_timer_stop(st->loop, &c->retry);
    ev_timer_set(&c->retry, wait, 0.);
    ev_timer_start(st->loop, &c->retry);
}

/* Drops connections that stopped answering: hiredis has no timeouts. */
void redis_watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
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
        else if (c->state == CONN_READY && c->inflight && now - c->progress > COMMAND_TIMEOUT_S)
            s_conn_drop(c, "no reply to commands in time");
        else if (c->state == CONN_CLOSING) /* refused a command, Redis or hiredis */
            s_conn_drop(c, c->refused[0] ? c->refused : "connection unusable");
    }
}

void redis_conn_init(redis_state_t *st, conn_t *c, const char *role)
{
    c->st = st;
    c->role = role;
    c->state = CONN_DOWN;
    uint64_t seed = (uint64_t)clock_wall_us() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)c;
    backoff_init(&c->backoff, BACKOFF_FIRST_S, BACKOFF_MAX_S, seed | 1);
    ev_timer_init(&c->retry, s_retry_cb, 0., 0.);
    c->retry.data = c;
}

/* ------------------------------------------------------------ subscriber */

static bool s_reply_is(const redisReply *r, const char *s)
{
    return r->type == REDIS_REPLY_STRING && r->len == strlen(s) && memcmp(r->str, s, r->len) == 0;
}

/* Every reply of the subscriber's SUBSCRIBE: its confirmation, then one
 * ["message", channel, payload] per published message. */
static void s_on_subscription(redisAsyncContext *ac, void *reply, void *privdata)
{
    conn_t *c = privdata;
    redis_state_t *st = c->st;
    redisReply *r = reply;
    if (!s_reply_current(c, ac, r))
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        log_debug("unexpected reply on the subscriber (type %d)", r->type);
        return;
    }
    if (s_reply_is(r->element[0], "subscribe")) {
        if (!s_reply_is(r->element[1], REDIS_CANCEL_CHANNEL))
            return; /* the other channels' confirmations: nothing to do */
        c->state = CONN_READY;
        s_gauge(st);
        backoff_reset(&c->backoff);
        if (c->outage_logged)
            log_info("subscriber: back on %s, subscribed to %s", st->url, REDIS_CANCEL_CHANNEL);
        else
            log_info("subscriber: subscribed to %s on %s", REDIS_CANCEL_CHANNEL, st->url);
        c->outage_logged = false;
        c->was_ready = true;
        if (st->sub_gap) {
            /* cancels published while we were not listening are lost to us */
            st->sub_gap = false;
            redis_bridge_recheck(st);
        }
    } else if (s_reply_is(r->element[0], "message") && r->element[1]->type == REDIS_REPLY_STRING
               && r->element[2]->type == REDIS_REPLY_STRING) {
        redis_bridge_message(st, r->element[1]->str, r->element[1]->len, r->element[2]->str,
                             r->element[2]->len);
    }
}
