/*
 * check_redis.c - the redis actor against real redis-server processes.
 *
 * The test thread talks to the actor from a mailbox "test": requests and
 * replies (REDIS_FLAG_GET, HEALTH_CHECK), and the bus events a store or an
 * HTTP actor would publish (JOB_CANCEL_RECORDED, JOB_CANCEL,
 * WORK_AVAILABLE). It watches the bus topic "cancel" from a mailbox "bus",
 * and checks Redis itself with synchronous hiredis clients (fine in a test,
 * never in an actor): GET/TTL for the flags, SUBSCRIBE for what other
 * instances receive (decoded with msg_decode), MONITOR for the order of
 * commands, INFO commandstats for how many were executed. The actor sends
 * no reply to an event, so what it did with one is checked there, or in
 * HEALTH's detail (", N cancels queued").
 *
 * Tests that need Redis use IMAGEJOBS_TEST_REDIS (the shared server of
 * cmd/imagejobs-local test); outage tests start their own redis-server on a
 * free port so that they can stop, restart and freeze it. Without
 * IMAGEJOBS_TEST_REDIS those tests print "SKIP: no IMAGEJOBS_TEST_REDIS" and
 * pass; the tests without a server always run.
 *
 * Other test programs may share the Redis server and publish on its
 * channels: messages are matched by the job ids a test made up, or by this
 * program's own origin names (s_instance, s_remote), unique to it.
 */
#include "config.h"

#include "actors/redis.h"
#include "messages/message.h"
#include "runtime/actor.h"
#include "runtime/log.h"
#include "runtime/mailbox.h"
#include "runtime/names.h"
#include "runtime/runtime.h"
#include "runtime/uuid.h"

#include "tests/runner.h"

#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 30000                /* generous: sanitizer builds on 2 busy cores */
#define DEADLINE_S 30.0              /* for "eventually" conditions */
#define AT_US 1764158400123456LL     /* a plausible requested_at_us */
#define MAX_AT_US 4102444800000000LL /* 2100-01-01: the last one accepted */

static runtime_t *s_rt;
static mailbox_t *s_test;                   /* requests, replies, the events it publishes */
static mailbox_t *s_bus;                    /* subscribed to "cancel" */
static char s_instance[REDIS_INSTANCE_MAX]; /* the actor's instance */
static char s_remote[REDIS_INSTANCE_MAX];   /* "another instance" of this test */

/* ------------------------------------------------------------ fixture */

static void s_setup(void)
{
    log_set_level(LOG_WARN);
    snprintf(s_instance, sizeof s_instance, "check-redis-%ld", (long)getpid());
    snprintf(s_remote, sizeof s_remote, "check-redis-remote-%ld", (long)getpid());
    s_rt = runtime_new();
    ck_assert_ptr_nonnull(s_rt);
    s_test = mailbox_new(s_rt, "test");
    ck_assert_ptr_nonnull(s_test);
    s_bus = mailbox_new(s_rt, "bus");
    ck_assert_ptr_nonnull(s_bus);
    ck_assert_int_eq(mailbox_subscribe(s_bus, TOPIC_CANCEL), 0);
}

static void s_teardown(void)
{
    mailbox_destroy(&s_bus);
    mailbox_destroy(&s_test);
    runtime_destroy(&s_rt);
}

/* The shared server's URL, or NULL after printing the skip line. */
static const char *s_shared_url(void)
{
    const char *url = getenv("IMAGEJOBS_TEST_REDIS");
    if (!url || !*url) {
        printf("SKIP: no IMAGEJOBS_TEST_REDIS\n");
        fflush(stdout);
        return NULL;
    }
    return url;
}

#define NEED_REDIS()                                                                               \
    do {                                                                                           \
        if (!s_shared_url())                                                                       \
            return;                                                                                \
    } while (0)

static int s_shared_port(void)
{
    const char *url = getenv("IMAGEJOBS_TEST_REDIS");
    const char *colon = strrchr(url, ':');
    ck_assert_msg(colon != NULL, "IMAGEJOBS_TEST_REDIS has no port: %s", url);
    return atoi(colon + 1);
}

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t s_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Between two polls of a condition (never instead of one). */
static void s_pause_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void s_new_id(char id[UUID_STR_LEN])
{
    ck_assert_int_eq(uuid_v4(id), 0);
}

static void s_upper(char out[UUID_STR_LEN], const char *id)
{
    for (int i = 0; i < UUID_STR_LEN; i++)
        out[i] = (char)toupper((unsigned char)id[i]);
}

/* ------------------------------------------------------------ the actor */

static actor_t *s_start(const char *url, size_t queue_max)
{
    redis_config_t cfg = {.url = url, .instance = s_instance, .queue_max = queue_max};
    char err[256] = "";
    actor_t *a = redis_start(s_rt, &cfg, err, sizeof err);
    ck_assert_msg(a != NULL, "redis_start(%s) failed: %s", url, err);
    return a;
}

/* Sends req (consumed) to the actor; returns its id. */
static uint64_t s_send(msg_t **req)
{
    (*req)->corr = mailbox_next_corr(s_test);
    uint64_t corr = (*req)->corr;
    ck_assert_int_eq(mailbox_send(s_test, REDIS_ACTOR_NAME, *req), 0);
    msg_destroy(req);
    return corr;
}

/* The next message on s_test: the reply to request corr. The actor answers
 * in order and never answers an event, so anything else fails the test. */
static msg_t *s_reply(uint64_t corr)
{
    msg_t *r = mailbox_recv(s_test, WAIT_MS);
    ck_assert_msg(r != NULL, "no reply within %d ms", WAIT_MS);
    ck_assert_msg(r->flags & MSG_FLAG_REPLY, "not a reply: %s", msg_type_name(r->type));
    ck_assert_msg(r->corr == corr, "reply %s #%llu, expected #%llu", msg_type_name(r->type),
                  (unsigned long long)r->corr, (unsigned long long)corr);
    return r;
}

static void s_expect_error(msg_t *r, int code)
{
    ck_assert_msg(r->type == MSG_ERROR, "expected ERROR, got %s", msg_type_name(r->type));
    ck_assert_msg(r->error.code == code, "expected code %d, got %lld (%s)", code,
                  (long long)r->error.code, r->error.reason ? r->error.reason : "");
    ck_assert_ptr_nonnull(r->error.reason);
}

/* Publishes JOB_CANCEL_RECORDED on the bus, as the store does once its
 * write landed. */
static void s_record(const char *job_id, cancel_mode_t mode, int64_t at_us)
{
    msg_t *m = msg_new(MSG_JOB_CANCEL_RECORDED);
    msg_set_str(&m->job_cancel_recorded.job_id, job_id);
    m->job_cancel_recorded.mode = mode;
    m->job_cancel_recorded.requested_at_us = at_us;
    ck_assert_int_ge(mailbox_publish(s_test, TOPIC_JOB_CANCEL_RECORDED, m), 1);
    msg_destroy(&m);
}

static void s_record_now(const char *job_id)
{
    s_record(job_id, CANCEL_MODE_IMMEDIATE, s_wall_us());
}

/* Publishes JOB_CANCEL on the bus topic "cancel", as the HTTP actor does. */
static void s_local_cancel(const char *job_id, cancel_mode_t mode, int64_t at_us,
                           const char *origin)
{
    msg_t *m = msg_new(MSG_JOB_CANCEL);
    msg_set_str(&m->job_cancel.job_id, job_id);
    m->job_cancel.mode = mode;
    m->job_cancel.requested_at_us = at_us;
    msg_set_str(&m->job_cancel.origin, origin);
    ck_assert_int_ge(mailbox_publish(s_test, TOPIC_CANCEL, m), 1);
    msg_destroy(&m);
}

/* Publishes WORK_AVAILABLE on the bus topic "work", as the store does. */
static void s_local_work(const char *job_id)
{
    msg_t *m = msg_new(MSG_WORK_AVAILABLE);
    msg_set_str(&m->work_available.job_id, job_id);
    ck_assert_int_ge(mailbox_publish(s_test, TOPIC_WORK, m), 1);
    msg_destroy(&m);
}

static uint64_t s_send_flag_get(const char *job_id)
{
    msg_t *m = msg_new(MSG_REDIS_FLAG_GET);
    msg_set_str(&m->redis_flag_get.job_id, job_id);
    return s_send(&m);
}

/* REDIS_FLAG_GET: 1 set, 0 not set; fails the test on an error. */
static int s_flag(const char *job_id)
{
    msg_t *r = s_reply(s_send_flag_get(job_id));
    ck_assert_msg(r->type == MSG_REDIS_FLAG, "expected REDIS_FLAG, got %s %s",
                  msg_type_name(r->type),
                  r->type == MSG_ERROR && r->error.reason ? r->error.reason : "");
    int set = r->redis_flag.set;
    msg_destroy(&r);
    return set;
}

static void s_flag_error(const char *job_id, int code)
{
    msg_t *r = s_reply(s_send_flag_get(job_id));
    s_expect_error(r, code);
    msg_destroy(&r);
}

static msg_t *s_health(void)
{
    msg_t *m = msg_new(MSG_HEALTH_CHECK);
    msg_t *r = s_reply(s_send(&m));
    ck_assert_int_eq(r->type, MSG_HEALTH);
    ck_assert_ptr_nonnull(r->health.detail);
    return r;
}

/* Polls HEALTH until its ok is `ok`. */
static void s_wait_health(bool ok)
{
    double end = s_now() + DEADLINE_S;
    for (;;) {
        msg_t *h = s_health();
        bool got = h->health.ok;
        if (got == ok) {
            msg_destroy(&h);
            return;
        }
        ck_assert_msg(s_now() < end, "health never became %s: %s", ok ? "ok" : "not ok",
                      h->health.detail);
        msg_destroy(&h);
        s_pause_ms(10);
    }
}

/* HEALTH now: its detail contains text, or (want false) does not. The
 * actor handles the test's messages in order, so this reflects every event
 * the test published before. */
static void s_assert_detail(const char *text, bool want)
{
    msg_t *h = s_health();
    ck_assert_msg((strstr(h->health.detail, text) != NULL) == want, "detail %s \"%s\": %s",
                  want ? "lacks" : "has", text, h->health.detail);
    msg_destroy(&h);
}

/* Polls HEALTH until its detail contains text, or (want false) no more. */
static void s_wait_detail(const char *text, bool want)
{
    double end = s_now() + DEADLINE_S;
    for (;;) {
        msg_t *h = s_health();
        bool has = strstr(h->health.detail, text) != NULL;
        if (has == want) {
            msg_destroy(&h);
            return;
        }
        ck_assert_msg(s_now() < end, "detail never %s \"%s\": %s", want ? "showed" : "lost", text,
                      h->health.detail);
        msg_destroy(&h);
        s_pause_ms(10);
    }
}

/* Polls HEALTH until Redis's loss is seen on both connections: from then
 * on, while the server stays down, a cancel recorded is queued at once
 * (before, it may go out on a connection not yet known dead, and come back
 * to the queue only when that is found out). */
static void s_wait_down(void)
{
    s_wait_health(false);
    s_wait_detail("commands up", false);
}

/* The detail's count of queued cancels, as the actor spells it. */
static const char *s_queued(size_t n)
{
    static char text[64];
    snprintf(text, sizeof text, ", %zu cancels queued", n);
    return text;
}

/* ------------------------------------------------------------ bus */

/* Whether a bridged message concerns this test: about one of ids (any
 * case: the check of lower-casing is the caller's), or from s_remote. */
static bool s_concerns(const char *job_id, const char *origin, const char *const *ids, size_t nids)
{
    if (origin && strcmp(origin, s_remote) == 0)
        return true;
    for (size_t i = 0; job_id && i < nids; i++)
        if (strcasecmp(job_id, ids[i]) == 0)
            return true;
    return false;
}

/* The next event the actor published on the topic that mb subscribed to
 * and that concerns this test: a CANCEL_RECHECK, or a `type` message about
 * one of ids or from s_remote. The test's own publishes and other jobs'
 * messages (other programs on the shared server) are skipped; a message of
 * any other type from the actor fails the test. */
static msg_t *s_next_bridged(mailbox_t *mb, msg_type_t type, const char *const *ids, size_t nids)
{
    double end = s_now() + WAIT_MS / 1000.0;
    for (;;) {
        int left = (int)((end - s_now()) * 1000);
        ck_assert_msg(left > 0, "no %s event within %d ms", msg_type_name(type), WAIT_MS);
        msg_t *ev = mailbox_recv(mb, left);
        ck_assert_msg(ev != NULL, "no %s event within %d ms", msg_type_name(type), WAIT_MS);
        ck_assert(ev->flags & MSG_FLAG_EVENT);
        if (strcmp(ev->sender, REDIS_ACTOR_NAME) != 0) {
            msg_destroy(&ev);
            continue;
        }
        if (ev->type == MSG_CANCEL_RECHECK)
            return ev;
        ck_assert_msg(ev->type == type, "the actor published a %s, expected %s",
                      msg_type_name(ev->type), msg_type_name(type));
        bool ours =
            type == MSG_JOB_CANCEL
                ? s_concerns(ev->job_cancel.job_id, ev->job_cancel.origin, ids, nids)
                : s_concerns(ev->work_available.job_id, ev->work_available.origin, ids, nids);
        if (ours)
            return ev;
        msg_destroy(&ev);
    }
}

/* The next JOB_CANCEL from the actor about one of ids or from s_remote. */
static msg_t *s_expect_cancel(const char *const *ids, size_t nids)
{
    msg_t *ev = s_next_bridged(s_bus, MSG_JOB_CANCEL, ids, nids);
    ck_assert_msg(ev->type == MSG_JOB_CANCEL, "expected a cancel, got %s", msg_type_name(ev->type));
    return ev;
}

/* The next CANCEL_RECHECK from the actor (cancels of other jobs skipped). */
static void s_expect_recheck(void)
{
    msg_t *ev = s_next_bridged(s_bus, MSG_JOB_CANCEL, NULL, 0);
    ck_assert_msg(ev->type == MSG_CANCEL_RECHECK, "expected a recheck, got %s about %s",
                  msg_type_name(ev->type), ev->job_cancel.job_id);
    ck_assert_pstr_eq(ev->cancel_recheck.origin, s_instance);
    msg_destroy(&ev);
}

/* ------------------------------------------------------------ sync client */

static redisContext *s_sync(int port)
{
    struct timeval tv = {.tv_sec = 10};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    ck_assert_msg(c && !c->err, "cannot connect to 127.0.0.1:%d: %s", port,
                  c ? c->errstr : "out of memory");
    redisSetTimeout(c, tv);
    return c;
}

static redisReply *s_cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    ck_assert_msg(r != NULL, "redis command failed: %s", c->errstr);
    return r;
}

/* GET job:{id}:cancelled as a string ("" when absent). */
static void s_get_flag(redisContext *c, const char *id, char *out, size_t outlen)
{
    redisReply *r = s_cmd(c, "GET job:%s:cancelled", id);
    snprintf(out, outlen, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
}

static long long s_ttl(redisContext *c, const char *id)
{
    redisReply *r = s_cmd(c, "TTL job:%s:cancelled", id);
    ck_assert_int_eq(r->type, REDIS_REPLY_INTEGER);
    long long ttl = r->integer;
    freeReplyObject(r);
    return ttl;
}

/* The flag exists with "true" and the seed's TTL. */
static void s_assert_flag(redisContext *c, const char *id)
{
    char v[64];
    s_get_flag(c, id, v, sizeof v);
    ck_assert_msg(strcmp(v, "true") == 0, "job:%s:cancelled is \"%s\"", id, v);
    long long ttl = s_ttl(c, id);
    ck_assert_msg(ttl > 3590 && ttl <= 3600, "TTL of job:%s:cancelled is %lld", id, ttl);
}

static void s_assert_no_flag(redisContext *c, const char *id)
{
    redisReply *r = s_cmd(c, "EXISTS job:%s:cancelled", id);
    ck_assert_int_eq(r->type, REDIS_REPLY_INTEGER);
    ck_assert_msg(r->integer == 0, "job:%s:cancelled exists", id);
    freeReplyObject(r);
}

/* Polls until job:{id}:cancelled appears (the actor wrote it). */
static void s_wait_flag(redisContext *c, const char *id)
{
    double end = s_now() + DEADLINE_S;
    char v[64];
    for (s_get_flag(c, id, v, sizeof v); strcmp(v, "true") != 0; s_get_flag(c, id, v, sizeof v)) {
        ck_assert_msg(s_now() < end, "job:%s:cancelled never appeared", id);
        s_pause_ms(10);
    }
    s_assert_flag(c, id);
}

static void s_publish(redisContext *c, const char *channel, const void *payload, size_t len)
{
    redisReply *r = s_cmd(c, "PUBLISH %s %b", channel, payload, len);
    ck_assert_int_eq(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
}

/* A client subscribed to channel (confirmed when this returns). */
static redisContext *s_subscriber(int port, const char *channel)
{
    redisContext *c = s_sync(port);
    struct timeval tv = {.tv_sec = WAIT_MS / 1000};
    redisSetTimeout(c, tv);
    redisReply *r = s_cmd(c, "SUBSCRIBE %s", channel);
    ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
    freeReplyObject(r);
    return c;
}

/* The next message on sub that decodes and concerns the test: a JOB_CANCEL
 * WORK_AVAILABLE or JOB_EVENT about one of ids or with origin `origin` (or from
 * s_remote), or a CANCEL_RECHECK with that origin. Everything else (other
 * programs sharing the server) is skipped. The caller owns the message. */
static msg_t *s_channel_next(redisContext *sub, const char *const *ids, size_t nids,
                             const char *origin)
{
    for (;;) {
        redisReply *r = NULL;
        ck_assert_msg(redisGetReply(sub, (void **)&r) == REDIS_OK, "no message on the channel: %s",
                      sub->errstr);
        ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
        ck_assert_uint_eq(r->elements, 3);
        ck_assert_int_eq(r->element[2]->type, REDIS_REPLY_STRING);
        char err[160];
        msg_t *m = msg_decode(r->element[2]->str, r->element[2]->len, err, sizeof err);
        freeReplyObject(r);
        if (!m)
            continue;
        const char *job_id = NULL, *from = NULL;
        if (m->type == MSG_JOB_CANCEL) {
            job_id = m->job_cancel.job_id;
            from = m->job_cancel.origin;
        } else if (m->type == MSG_WORK_AVAILABLE) {
            job_id = m->work_available.job_id;
            from = m->work_available.origin;
        } else if (m->type == MSG_CANCEL_RECHECK) {
            from = m->cancel_recheck.origin;
        } else if (m->type == MSG_JOB_EVENT) {
            job_id = m->job_event.job_id;
            from = m->job_event.origin;
        }
        if (s_concerns(job_id, from, ids, nids) || (from && strcmp(from, origin) == 0))
            return m;
        msg_destroy(&m);
    }
}

/* A JOB_CANCEL as this instance's actor puts it on imagejobs:cancel. */
static void s_assert_own_cancel(const msg_t *m, const char *id, cancel_mode_t mode, int64_t at_us)
{
    ck_assert_msg(m->type == MSG_JOB_CANCEL, "a %s on the channel", msg_type_name(m->type));
    ck_assert(!(m->flags & MSG_FLAG_REPLY));
    ck_assert_pstr_eq(m->job_cancel.job_id, id);
    ck_assert_int_eq(m->job_cancel.mode, mode);
    ck_assert_int_eq(m->job_cancel.requested_at_us, at_us);
    ck_assert_pstr_eq(m->job_cancel.origin, s_instance);
}

/* ------------------------------------------------------------ payloads */

/* msg (consumed) encoded as it travels: a malloc'd buffer. */
static void *s_encode(msg_t **m, size_t *len)
{
    void *data;
    ck_assert_int_eq(msg_encode(*m, &data, len), 0);
    msg_destroy(m);
    return data;
}

static msg_t *s_cancel_msg(const char *id, cancel_mode_t mode, int64_t at_us, const char *origin)
{
    msg_t *m = msg_new(MSG_JOB_CANCEL);
    m->flags = MSG_FLAG_EVENT;
    snprintf(m->sender, sizeof m->sender, "%s", REDIS_ACTOR_NAME);
    msg_set_str(&m->job_cancel.job_id, id);
    m->job_cancel.mode = mode;
    m->job_cancel.requested_at_us = at_us;
    msg_set_str(&m->job_cancel.origin, origin);
    return m;
}

static msg_t *s_work_msg(const char *id, const char *origin)
{
    msg_t *m = msg_new(MSG_WORK_AVAILABLE);
    m->flags = MSG_FLAG_EVENT;
    snprintf(m->sender, sizeof m->sender, "%s", REDIS_ACTOR_NAME);
    msg_set_str(&m->work_available.job_id, id);
    msg_set_str(&m->work_available.origin, origin);
    return m;
}

/* A remote instance's PUBLISH of msg (consumed) on channel. */
static void s_publish_msg(redisContext *c, const char *channel, msg_t *m)
{
    size_t len;
    void *data = s_encode(&m, &len);
    s_publish(c, channel, data, len);
    free(data);
}

/* Hostile payloads, published one by one. */
typedef struct {
    void *data[96];
    size_t len[96];
    int n;
} payloads_t;

static void s_add(payloads_t *p, const void *data, size_t len)
{
    ck_assert_int_lt(p->n, 96);
    p->data[p->n] = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(p->data[p->n]);
    memcpy(p->data[p->n], data, len);
    p->len[p->n++] = len;
}

static void s_add_text(payloads_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_add_text(payloads_t *p, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    s_add(p, buf, (size_t)n);
}

static void s_add_msg(payloads_t *p, msg_t *m)
{
    size_t len;
    void *data = s_encode(&m, &len);
    s_add(p, data, len);
    free(data);
}

static void s_publish_all(redisContext *c, const char *channel, payloads_t *p)
{
    for (int i = 0; i < p->n; i++) {
        s_publish(c, channel, p->data[i], p->len[i]);
        free(p->data[i]);
    }
    p->n = 0;
}

/* Hand-packed envelopes, for the shapes msg_encode never makes. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} pack_t;

static msgpack_packer *s_pack_begin(pack_t *p)
{
    msgpack_sbuffer_init(&p->sb);
    msgpack_packer_init(&p->pk, &p->sb, msgpack_sbuffer_write);
    return &p->pk;
}

static void s_pack_str(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

/* [type, flags, 0, sender, [ (nfields follow) */
static void s_pack_head(msgpack_packer *pk, uint64_t type, uint64_t flags, uint32_t nfields)
{
    msgpack_pack_array(pk, 5);
    msgpack_pack_uint64(pk, type);
    msgpack_pack_uint64(pk, flags);
    msgpack_pack_uint64(pk, 0);
    s_pack_str(pk, REDIS_ACTOR_NAME, strlen(REDIS_ACTOR_NAME));
    msgpack_pack_array(pk, nfields);
}

static void s_pack_end(payloads_t *p, pack_t *pk)
{
    s_add(p, pk->sb.data, pk->sb.size);
    msgpack_sbuffer_destroy(&pk->sb);
}

/* calls of one command on the server since it started (INFO commandstats) */
static long s_calls(redisContext *c, const char *cmd)
{
    redisReply *r = s_cmd(c, "INFO commandstats");
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    char key[64];
    snprintf(key, sizeof key, "cmdstat_%s:calls=", cmd);
    const char *p = strstr(r->str, key);
    long calls = p ? atol(p + strlen(key)) : 0;
    freeReplyObject(r);
    return calls;
}

/* calls of cmd that the server refused to execute (-LOADING among others) */
static long s_rejected(redisContext *c, const char *cmd)
{
    redisReply *r = s_cmd(c, "INFO commandstats");
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    char key[64];
    snprintf(key, sizeof key, "cmdstat_%s:", cmd);
    const char *p = strstr(r->str, key);
    const char *q = p ? strstr(p, "rejected_calls=") : NULL;
    const char *eol = p ? strchr(p, '\n') : NULL;
    long calls = q && (!eol || q < eol) ? atol(q + strlen("rejected_calls=")) : 0;
    freeReplyObject(r);
    return calls;
}

/* Whether the server is still loading its dataset (INFO persistence). */
static bool s_loading(redisContext *c)
{
    redisReply *r = s_cmd(c, "INFO persistence");
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    bool loading = strstr(r->str, "\nloading:1") != NULL;
    freeReplyObject(r);
    return loading;
}

/* The id of the client named name, or -1. */
static long long s_client_id(redisContext *c, const char *name)
{
    redisReply *r = s_cmd(c, "CLIENT LIST");
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    char want[128];
    snprintf(want, sizeof want, " name=%s ", name);
    long long id = -1;
    for (char *line = r->str; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strstr(line, want) && strncmp(line, "id=", 3) == 0)
            id = atoll(line + 3);
        line = nl ? nl + 1 : NULL;
    }
    freeReplyObject(r);
    return id;
}

/* ------------------------------------------------------------ own server */

/* A redis-server of this test: a child process (killed with us, too). */
typedef struct {
    pid_t pid;
    int port;
    char dir[64];
    char sock[128];
    bool unix_socket;
    bool persist; /* AOF, fsync always: what was acknowledged survives SIGKILL */
    /* loads its dump.rdb slowly (a debug setting: 300 µs a key), answering
     * -LOADING meanwhile; s_server_start returns while it loads */
    bool slow_load;
} server_t;

static bool s_port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* A free port below the kernel's ephemeral range, so that no outgoing
 * connection takes it while the server is down between restarts. */
static int s_pick_port(void)
{
    for (int i = 0; i < 2000; i++) {
        int port = 20000 + (int)((getpid() * 131 + i * 7919) % 12000);
        if (s_port_free(port))
            return port;
    }
    ck_abort_msg("no free port");
    return -1;
}

/* PING answered PONG (or, with loading_ok, -LOADING). */
static bool s_ping(int port, bool loading_ok)
{
    struct timeval tv = {.tv_sec = 1};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    bool ok = false;
    if (c && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
        ok = ok
             || (loading_ok && r && r->type == REDIS_REPLY_ERROR
                 && strncmp(r->str, "LOADING", 7) == 0);
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

/* Starts (or restarts, on the same port) s's server and waits for PING. */
static void s_server_start(server_t *s)
{
    if (!s->dir[0]) {
        snprintf(s->dir, sizeof s->dir, "/tmp/check-redis-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(s->dir));
        snprintf(s->sock, sizeof s->sock, "%s/redis.sock", s->dir);
        s->port = s_pick_port();
    }
    char port[16], log[128];
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(log, sizeof log, "%s/redis.log", s->dir);
    const char *argv[32] = {"redis-server", "--port",    port, "--bind",
                            "127.0.0.1",    "--save",    "",   "--dir",
                            s->dir,         "--logfile", log,  "--enable-debug-command",
                            "local"};
    int argc = 13;
    if (s->persist) {
        argv[argc++] = "--appendonly";
        argv[argc++] = "yes";
        argv[argc++] = "--appendfsync";
        argv[argc++] = "always";
    } else {
        argv[argc++] = "--appendonly";
        argv[argc++] = "no";
    }
    if (s->unix_socket) {
        argv[argc++] = "--unixsocket";
        argv[argc++] = s->sock;
    }
    if (s->slow_load) {
        argv[argc++] = "--key-load-delay";
        argv[argc++] = "300";
        argv[argc++] = "--loading-process-events-interval-bytes";
        argv[argc++] = "1024"; /* answers clients while it loads */
    }
    argv[argc] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* dies with the test process, whatever ends it */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        /* the runtime blocked SIGTERM in this thread; exec keeps the mask */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    double end = s_now() + DEADLINE_S;
    while (!s_ping(s->port, s->slow_load)) {
        int status;
        ck_assert_msg(waitpid(pid, &status, WNOHANG) == 0,
                      "redis-server on port %d exited (see %s)", s->port, log);
        ck_assert_msg(s_now() < end, "redis-server on port %d not ready", s->port);
        s_pause_ms(10);
    }
}

/* Stops the server with sig and waits for it to be gone. */
static void s_server_stop(server_t *s, int sig)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, sig);
    int status;
    while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
        ;
    s->pid = 0;
}

static void s_server_cleanup(server_t *s)
{
    s_server_stop(s, SIGKILL);
    if (s->dir[0] && strncmp(s->dir, "/tmp/check-redis-", 17) == 0) {
        char cmd[160];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
        ck_assert_int_eq(system(cmd), 0);
    }
}

static void s_server_url(const server_t *s, char *url, size_t len)
{
    if (s->unix_socket)
        snprintf(url, len, "%s", s->sock);
    else
        snprintf(url, len, "redis://127.0.0.1:%d", s->port);
}

/* Makes the server busy for `seconds` (DEBUG SLEEP from a client that does
 * not wait) and returns once it is: a PING from another client times out. */
static redisContext *s_server_freeze(server_t *s, int seconds)
{
    redisContext *c = s_sync(s->port);
    ck_assert_int_eq(redisAppendCommand(c, "DEBUG SLEEP %d", seconds), REDIS_OK);
    int done = 0;
    while (!done)
        ck_assert_int_eq(redisBufferWrite(c, &done), REDIS_OK);
    double end = s_now() + DEADLINE_S;
    struct timeval tv = {.tv_usec = 200000};
    for (;;) {
        redisContext *p = redisConnectWithTimeout("127.0.0.1", s->port, tv);
        ck_assert_ptr_nonnull(p);
        bool busy = p->err != 0;
        if (!busy) {
            redisSetTimeout(p, tv);
            redisReply *r = redisCommand(p, "PING");
            busy = r == NULL;
            if (r)
                freeReplyObject(r);
        }
        redisFree(p);
        if (busy)
            return c;
        ck_assert_msg(s_now() < end, "DEBUG SLEEP never took effect");
    }
}

/* ============================================================ tests */

START_TEST(test_bad_config_fails_with_reason)
{
    static const char *const bad_urls[] = {
        NULL,
        "",
        "http://127.0.0.1:6379",
        "redis://",
        "redis://:6379",
        "redis://host:",
        "redis://host:0",
        "redis://host:65536",
        "redis://host:1234567",
        "redis://host:63x",
        "redis://host:6379/0",
        "redis://user:pw@host:6379",
        "redis://host name",
        "relative/redis.sock",
        "redis://[::1",
        "redis://[]:6379",
        "redis://[zz]:6379",
        "REDIS://host",
        "unix:///tmp/redis.sock",
    };
    for (size_t i = 0; i < sizeof bad_urls / sizeof *bad_urls; i++) {
        redis_config_t cfg = {.url = bad_urls[i], .instance = "a"};
        char err[256] = "";
        actor_t *a = redis_start(s_rt, &cfg, err, sizeof err);
        ck_assert_msg(a == NULL, "URL \"%s\" was accepted", bad_urls[i] ? bad_urls[i] : "(null)");
        ck_assert_msg(strncmp(err, "redis: ", 7) == 0 && strstr(err, "URL"),
                      "URL \"%s\": unclear reason \"%s\"", bad_urls[i] ? bad_urls[i] : "(null)",
                      err);
    }
    char long_path[200];
    memset(long_path, 'x', sizeof long_path - 1);
    long_path[0] = '/';
    long_path[sizeof long_path - 1] = '\0';
    redis_config_t cfg = {.url = long_path, .instance = "a"};
    char err[256] = "";
    ck_assert_ptr_null(redis_start(s_rt, &cfg, err, sizeof err));
    ck_assert_msg(strstr(err, "socket path") != NULL, "reason: %s", err);

    static const char *const bad_instances[] = {
        NULL,
        "",
        "a b",
        "tab\there",
        "\x01",
        "caf\xc3\xa9",
        "0123456789012345678901234567890123456789012345678901234567890123", /* 64 */
    };
    for (size_t i = 0; i < sizeof bad_instances / sizeof *bad_instances; i++) {
        redis_config_t c2 = {.url = "redis://127.0.0.1:6379", .instance = bad_instances[i]};
        err[0] = '\0';
        ck_assert_ptr_null(redis_start(s_rt, &c2, err, sizeof err));
        ck_assert_msg(strstr(err, "instance") != NULL, "reason: %s", err);
    }
    ck_assert_ptr_null(redis_start(s_rt, NULL, err, sizeof err));
}
END_TEST

/* Needs no server: nothing listens on the socket path. Cancels recorded
 * meanwhile wait in the queue (deduplicated by lower-cased job id; no reply
 * to anyone), malformed ones are not kept, events are dropped, and the
 * requests are refused with the right code. */
START_TEST(test_starts_while_redis_is_down_and_queues)
{
    actor_t *a = s_start("/nonexistent/check-redis.sock", 0);
    msg_t *h = s_health();
    ck_assert_int_eq(h->health.ok, 0);
    ck_assert_msg(strstr(h->health.detail, "commands") && strstr(h->health.detail, "subscriber"),
                  "detail: %s", h->health.detail);
    ck_assert_msg(!strstr(h->health.detail, "queued"), "detail: %s", h->health.detail);
    msg_destroy(&h);

    char id[UUID_STR_LEN], upper[UUID_STR_LEN], id2[UUID_STR_LEN];
    s_new_id(id);
    s_new_id(id2);
    s_upper(upper, id);
    s_record(id, CANCEL_MODE_IMMEDIATE, AT_US);
    /* s_reply fails on any message before HEALTH's reply: nobody is answered */
    s_assert_detail(s_queued(1), true);
    s_record(id, CANCEL_MODE_AFTER_CURRENT_IMAGE, AT_US + 1);
    s_record(upper, CANCEL_MODE_IMMEDIATE, AT_US); /* the same job */
    s_assert_detail(s_queued(1), true);

    /* malformed records: logged and dropped, never queued */
    static const char *const bad_ids[] = {NULL,
                                          "",
                                          "not-a-uuid",
                                          "550e8400-e29b-41d4-a716-44665544000g",
                                          "550e8400-e29b-41d4-a716-4466554400000",
                                          "550e8400e29b41d4a716446655440000"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++)
        s_record(bad_ids[i], CANCEL_MODE_IMMEDIATE, AT_US);
    s_record(id2, CANCEL_MODE_NONE, AT_US);
    s_record(id2, (cancel_mode_t)CANCEL_MODE_COUNT, AT_US); /* out of range: */
    s_record(id2, (cancel_mode_t)200, AT_US);               /* the bus refuses it */
    s_record(id2, CANCEL_MODE_IMMEDIATE, 0);
    s_record(id2, CANCEL_MODE_IMMEDIATE, -1);
    s_record(id2, CANCEL_MODE_IMMEDIATE, INT64_MIN);
    s_record(id2, CANCEL_MODE_IMMEDIATE, MAX_AT_US + 1);
    s_record(id2, CANCEL_MODE_IMMEDIATE, INT64_MAX);
    /* bridged events are dropped while Redis is down, not queued */
    s_local_cancel(id2, CANCEL_MODE_IMMEDIATE, AT_US, NULL);
    s_local_work(id2);
    s_assert_detail(s_queued(1), true);
    /* the same bounds are accepted */
    s_record(id2, CANCEL_MODE_AFTER_CURRENT_IMAGE, MAX_AT_US);
    s_assert_detail(s_queued(2), true);
    char id3[UUID_STR_LEN];
    s_new_id(id3);
    s_record(id3, CANCEL_MODE_IMMEDIATE, 1);
    s_assert_detail(s_queued(3), true);

    s_flag_error(id, -EAGAIN);
    /* malformed requests are refused whatever Redis's state */
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++)
        s_flag_error(bad_ids[i], -EINVAL);
    h = s_health();
    ck_assert_int_eq(h->health.ok, 0);
    msg_destroy(&h);

    /* stopped with cancels queued (the sanitizer build checks the frees) */
    redis_destroy(&a);
    ck_assert_ptr_null(a);
    /* the name is free again, and the queue was the old actor's */
    a = s_start("/nonexistent/check-redis.sock", 0);
    s_assert_detail("queued", false);
    redis_destroy(&a);
}
END_TEST

/* The seed's flag with its TTL, the id lower-cased, SET before PUBLISH, and
 * what other instances receive: the msgpack JOB_CANCEL with this instance
 * as its origin, in the order the cancels were recorded. */
START_TEST(test_cancel_recorded_sets_flag_and_publishes)
{
    NEED_REDIS();
    int port = s_shared_port();
    redisContext *c = s_sync(port);
    redisContext *sub = s_subscriber(port, REDIS_CANCEL_CHANNEL);
    redisContext *mon = s_sync(port);
    struct timeval tv = {.tv_sec = WAIT_MS / 1000};
    redisSetTimeout(mon, tv);
    redisReply *r = s_cmd(mon, "MONITOR");
    ck_assert_int_eq(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);

    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char id[UUID_STR_LEN], upper[UUID_STR_LEN], id2[UUID_STR_LEN];
    s_new_id(id);
    s_new_id(id2);
    s_upper(upper, id);
    const char *ids[] = {id, id2};
    s_record(upper, CANCEL_MODE_AFTER_CURRENT_IMAGE, AT_US);
    s_record(id2, CANCEL_MODE_IMMEDIATE, AT_US + 7);

    /* whoever reacts to the event already finds the flag */
    msg_t *m = s_channel_next(sub, ids, 2, s_instance);
    s_assert_own_cancel(m, id, CANCEL_MODE_AFTER_CURRENT_IMAGE, AT_US);
    ck_assert_str_eq(m->sender, REDIS_ACTOR_NAME);
    msg_destroy(&m);
    s_assert_flag(c, id);
    m = s_channel_next(sub, ids, 2, s_instance);
    s_assert_own_cancel(m, id2, CANCEL_MODE_IMMEDIATE, AT_US + 7);
    msg_destroy(&m);
    s_assert_flag(c, id2);

    /* the order Redis executed them in */
    char set1[128], set2[128];
    snprintf(set1, sizeof set1, "\"SET\" \"job:%s:cancelled\"", id);
    snprintf(set2, sizeof set2, "\"SET\" \"job:%s:cancelled\"", id2);
    const char *pub = "\"PUBLISH\" \"" REDIS_CANCEL_CHANNEL "\"";
    long pos = 0, s1 = 0, p1 = 0, s2 = 0, p2 = 0;
    while (!p2) {
        ck_assert_msg(redisGetReply(mon, (void **)&r) == REDIS_OK, "MONITOR: %s", mon->errstr);
        ck_assert_int_eq(r->type, REDIS_REPLY_STATUS);
        pos++;
        if (strstr(r->str, set1))
            s1 = s1 ? s1 : pos;
        else if (strstr(r->str, set2))
            s2 = s2 ? s2 : pos;
        else if (strstr(r->str, pub) && strstr(r->str, id))
            p1 = p1 ? p1 : pos;
        else if (strstr(r->str, pub) && strstr(r->str, id2))
            p2 = pos;
        freeReplyObject(r);
    }
    ck_assert_msg(s1 && s1 < p1 && p1 < s2 && s2 < p2, "SET %ld PUBLISH %ld SET %ld PUBLISH %ld",
                  s1, p1, s2, p2);
    redisFree(mon);

    /* a cancel recorded again is written again */
    freeReplyObject(s_cmd(c, "DEL job:%s:cancelled", id));
    s_record(id, CANCEL_MODE_IMMEDIATE, AT_US + 9);
    m = s_channel_next(sub, ids, 2, s_instance);
    s_assert_own_cancel(m, id, CANCEL_MODE_IMMEDIATE, AT_US + 9);
    msg_destroy(&m);
    s_assert_flag(c, id);
    /* and none of it was answered */
    s_assert_detail("queued", false);

    redis_destroy(&a);
    redisFree(sub);
    redisFree(c);
}
END_TEST

/* A JOB_CANCEL on the local bus (the HTTP actor's, before the store's write
 * landed): PUBLISHed at once with this instance as its origin, no flag, no
 * reply; a malformed one is not published. */
START_TEST(test_local_cancel_is_published_without_a_flag)
{
    NEED_REDIS();
    int port = s_shared_port();
    redisContext *c = s_sync(port);
    redisContext *sub = s_subscriber(port, REDIS_CANCEL_CHANNEL);
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char id[UUID_STR_LEN], upper[UUID_STR_LEN], bad[UUID_STR_LEN];
    s_new_id(id);
    s_new_id(bad);
    s_upper(upper, id);
    const char *ids[] = {id, bad};
    /* malformed: published neither (the first of ours on the channel is
     * the good one) */
    s_local_cancel("not-a-uuid", CANCEL_MODE_IMMEDIATE, AT_US, NULL);
    s_local_cancel(bad, CANCEL_MODE_NONE, AT_US, NULL);
    s_local_cancel(bad, CANCEL_MODE_IMMEDIATE, 0, NULL);
    s_local_cancel(bad, CANCEL_MODE_IMMEDIATE, MAX_AT_US + 1, NULL);
    /* the origin is the actor's to set, whatever the sender put there */
    s_local_cancel(upper, CANCEL_MODE_IMMEDIATE, 1764158400654321LL, "someone-else");

    msg_t *m = s_channel_next(sub, ids, 2, s_instance);
    s_assert_own_cancel(m, id, CANCEL_MODE_IMMEDIATE, 1764158400654321LL);
    ck_assert(m->flags & MSG_FLAG_EVENT);
    msg_destroy(&m);
    s_assert_no_flag(c, id);
    s_assert_no_flag(c, bad);
    /* s_reply fails on any message before HEALTH's reply: no reply */
    s_assert_detail("queued", false);

    redis_destroy(&a);
    redisFree(sub);
    redisFree(c);
}
END_TEST

/* Work wake-ups between instances: WORK_AVAILABLE on the local bus goes out
 * on imagejobs:work (msgpack, our origin); one from another instance wakes
 * our generators (bus topic "work"); our own is not echoed back, and
 * malformed ones are dropped. */
START_TEST(test_work_wakeups_cross_redis)
{
    NEED_REDIS();
    int port = s_shared_port();
    redisContext *c = s_sync(port);
    redisContext *sub = s_subscriber(port, REDIS_WORK_CHANNEL);
    mailbox_t *work = mailbox_new(s_rt, "work-listener");
    ck_assert_ptr_nonnull(work);
    ck_assert_int_eq(mailbox_subscribe(work, TOPIC_WORK), 0);
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char id[UUID_STR_LEN], own[UUID_STR_LEN], bad[UUID_STR_LEN], remote[UUID_STR_LEN],
        upper[UUID_STR_LEN];
    s_new_id(id);
    s_new_id(own);
    s_new_id(bad);
    s_new_id(remote);
    s_upper(upper, remote);
    const char *ids[] = {id, own, bad, remote};
    s_local_work(id); /* as the store publishes it */
    msg_t *m = s_channel_next(sub, ids, 4, s_instance);
    ck_assert_int_eq(m->type, MSG_WORK_AVAILABLE);
    ck_assert(!(m->flags & MSG_FLAG_REPLY));
    ck_assert_pstr_eq(m->work_available.job_id, id);
    ck_assert_pstr_eq(m->work_available.origin, s_instance);
    msg_destroy(&m);
    /* (Redis delivered it to the actor's subscriber too, before anything
     * this client publishes from here on) */

    payloads_t p = {.n = 0};
    s_add_msg(&p, s_work_msg("not-a-uuid", s_remote));
    s_add_msg(&p, s_work_msg(NULL, s_remote));
    s_add_msg(&p, s_work_msg(bad, NULL));
    s_add_msg(&p, s_work_msg(bad, ""));
    s_add_msg(&p, s_work_msg(bad, "a b"));
    s_add_msg(&p, s_work_msg(bad, "caf\xc3\xa9"));
    s_add_msg(&p, s_cancel_msg(bad, CANCEL_MODE_IMMEDIATE, AT_US, s_remote)); /* wrong type */
    msg_t *reply = s_work_msg(bad, s_remote);
    reply->flags = MSG_FLAG_REPLY;
    s_add_msg(&p, reply);
    s_add_text(&p, "%s %s", bad, s_remote); /* the old text format */
    size_t len;
    msg_t *w = s_work_msg(bad, s_remote);
    void *data = s_encode(&w, &len);
    s_add(&p, data, len - 1); /* truncated */
    char *longer = malloc(len + 1);
    ck_assert_ptr_nonnull(longer);
    memcpy(longer, data, len);
    longer[len] = '\0';
    s_add(&p, longer, len + 1); /* a trailing byte */
    free(longer);
    free(data);
    s_add_msg(&p, s_work_msg(own, s_instance)); /* our own, straight from a client */
    s_publish_all(c, REDIS_WORK_CHANNEL, &p);
    s_publish_msg(c, REDIS_WORK_CHANNEL, s_work_msg(upper, s_remote));

    /* the listener saw the store's publish itself (sender "test"; other
     * programs' wake-ups from the actor skipped), then, from the actor,
     * only the remote one, lower-cased */
    msg_t *ev;
    for (;;) {
        ev = mailbox_recv(work, WAIT_MS);
        ck_assert_ptr_nonnull(ev);
        ck_assert_int_eq(ev->type, MSG_WORK_AVAILABLE);
        if (strcmp(ev->sender, "test") == 0)
            break;
        ck_assert_msg(!s_concerns(ev->work_available.job_id, ev->work_available.origin, ids, 4),
                      "%s from %s before the local publish", ev->work_available.job_id, ev->sender);
        msg_destroy(&ev);
    }
    ck_assert_pstr_eq(ev->work_available.job_id, id);
    msg_destroy(&ev);
    ev = s_next_bridged(work, MSG_WORK_AVAILABLE, ids, 4);
    ck_assert_int_eq(ev->type, MSG_WORK_AVAILABLE);
    ck_assert_pstr_eq(ev->work_available.job_id, remote);
    ck_assert_pstr_eq(ev->work_available.origin, s_remote);
    msg_destroy(&ev);

    redis_destroy(&a);
    mailbox_destroy(&work);
    redisFree(sub);
    redisFree(c);
}
END_TEST

/* A JOB_EVENT as another instance sends it. */
static msg_t *s_event_msg(const char *id, uint64_t seq, const char *data, const char *log,
                          const char *origin)
{
    msg_t *m = msg_new(MSG_JOB_EVENT);
    m->flags = MSG_FLAG_EVENT;
    snprintf(m->sender, sizeof m->sender, "%s", REDIS_ACTOR_NAME);
    msg_set_str(&m->job_event.job_id, id);
    m->job_event.seq = seq;
    m->job_event.kind = JOB_EVENT_IMAGE;
    m->job_event.job_status = JOB_STATUS_PROCESSING;
    msg_set_str(&m->job_event.data, data);
    msg_set_str(&m->job_event.log, log);
    msg_set_str(&m->job_event.origin, origin);
    return m;
}

static msg_t *s_preview_msg(const char *id, uint64_t w, const void *png, size_t len)
{
    msg_t *m = msg_new(MSG_JOB_PREVIEW);
    m->flags = MSG_FLAG_EVENT;
    snprintf(m->sender, sizeof m->sender, "%s", REDIS_ACTOR_NAME);
    msg_set_str(&m->job_preview.job_id, id);
    m->job_preview.width = w;
    m->job_preview.height = 8;
    msg_set_bin(&m->job_preview.png, png, len);
    msg_set_str(&m->job_preview.origin, s_remote);
    return m;
}

/* Job events between instances (docs/events.md): ours go out on
 * imagejobs:events with our origin; another instance's reach the bus,
 * checked: an event whose data would break an event stream's framing, or
 * without a log id, a preview that is not a small PNG, a progress past its
 * steps are dropped. */
START_TEST(test_job_events_cross_redis)
{
    NEED_REDIS();
    int port = s_shared_port();
    redisContext *c = s_sync(port);
    redisContext *sub = s_subscriber(port, REDIS_EVENTS_CHANNEL);
    mailbox_t *events = mailbox_new(s_rt, "event-listener");
    ck_assert_ptr_nonnull(events);
    ck_assert_int_eq(mailbox_subscribe(events, TOPIC_JOB_EVENT), 0);
    ck_assert_int_eq(mailbox_subscribe(events, TOPIC_JOB_PREVIEW), 0);
    ck_assert_int_eq(mailbox_subscribe(events, TOPIC_JOB_PROGRESS), 0);
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char id[UUID_STR_LEN], bad[UUID_STR_LEN], remote[UUID_STR_LEN], log[UUID_STR_LEN];
    s_new_id(id);
    s_new_id(bad);
    s_new_id(remote);
    s_new_id(log);
    const char *ids[] = {id, bad, remote};
    msg_t *m = s_event_msg(id, 7, "{\"job_id\":1}", log, NULL);
    m->flags = 0;
    m->sender[0] = '\0'; /* the test's, not the actor's */
    ck_assert_int_ge(mailbox_publish(s_test, TOPIC_JOB_EVENT, m), 1); /* as the store does */
    msg_destroy(&m);
    m = s_channel_next(sub, ids, 3, s_instance);
    ck_assert_int_eq(m->type, MSG_JOB_EVENT);
    ck_assert_pstr_eq(m->job_event.job_id, id);
    ck_assert_uint_eq(m->job_event.seq, 7);
    ck_assert_pstr_eq(m->job_event.log, log);
    ck_assert_pstr_eq(m->job_event.origin, s_instance);
    msg_destroy(&m);

    payloads_t p = {.n = 0};
    s_add_msg(&p, s_event_msg(bad, 8, "{\"a\":1}\n\ndata: forged", log, s_remote));
    s_add_msg(&p, s_event_msg(bad, 8, "[1]", log, s_remote));
    s_add_msg(&p, s_event_msg(bad, 8, NULL, log, s_remote));
    s_add_msg(&p, s_event_msg(bad, 0, "{}", log, s_remote));
    s_add_msg(&p, s_event_msg(bad, 8, "{}", NULL, s_remote));
    s_add_msg(&p, s_event_msg(bad, 8, "{}", "not-a-log", s_remote));
    s_add_msg(&p, s_event_msg("not-a-uuid", 8, "{}", log, s_remote));
    s_add_msg(&p, s_event_msg(bad, 8, "{}", log, NULL));
    s_publish_all(c, REDIS_EVENTS_CHANNEL, &p);
    static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0};
    s_add_msg(&p, s_preview_msg(bad, 8, "GIF89a....", 10));
    s_add_msg(&p, s_preview_msg(bad, 129, png, sizeof png));
    s_add_msg(&p, s_preview_msg(bad, 0, png, sizeof png));
    s_publish_all(c, REDIS_PREVIEWS_CHANNEL, &p);
    msg_t *pr = msg_new(MSG_JOB_PROGRESS);
    pr->flags = MSG_FLAG_EVENT;
    msg_set_str(&pr->job_progress.job_id, bad);
    pr->job_progress.step = 9;
    pr->job_progress.steps = 8;
    msg_set_str(&pr->job_progress.origin, s_remote);
    s_add_msg(&p, pr);
    s_publish_all(c, REDIS_PROGRESS_CHANNEL, &p);
    /* then good ones, in order */
    s_publish_msg(c, REDIS_EVENTS_CHANNEL, s_event_msg(remote, 9, "{\"job_id\":2}", log, s_remote));
    s_publish_msg(c, REDIS_PREVIEWS_CHANNEL, s_preview_msg(remote, 8, png, sizeof png));

    /* what the actor put on the bus about this test's jobs: the good ones */
    bool got_event = false, got_preview = false;
    double end = s_now() + WAIT_MS / 1000.0;
    while (!got_event || !got_preview) {
        int left = (int)((end - s_now()) * 1000);
        ck_assert_msg(left > 0, "the remote event and preview never reached the bus");
        msg_t *ev = mailbox_recv(events, left);
        ck_assert_ptr_nonnull(ev);
        const char *job = ev->type == MSG_JOB_EVENT     ? ev->job_event.job_id
                          : ev->type == MSG_JOB_PREVIEW ? ev->job_preview.job_id
                                                        : ev->job_progress.job_id;
        if (strcmp(ev->sender, REDIS_ACTOR_NAME) != 0 || !s_concerns(job, NULL, ids, 3)) {
            msg_destroy(&ev); /* the test's own, or other programs' jobs */
            continue;
        }
        ck_assert_msg(strcmp(job, bad) != 0, "a malformed %s reached the bus",
                      msg_type_name(ev->type));
        if (ev->type == MSG_JOB_EVENT) {
            ck_assert_pstr_eq(ev->job_event.job_id, remote);
            ck_assert_uint_eq(ev->job_event.seq, 9);
            ck_assert_pstr_eq(ev->job_event.data, "{\"job_id\":2}");
            got_event = true;
        } else if (ev->type == MSG_JOB_PREVIEW) {
            ck_assert_pstr_eq(ev->job_preview.job_id, remote);
            ck_assert_uint_eq(ev->job_preview.png.size, sizeof png);
            got_preview = true;
        }
        msg_destroy(&ev);
    }

    redis_destroy(&a);
    mailbox_destroy(&events);
    redisFree(sub);
    redisFree(c);
}
END_TEST

static msg_t *s_many_msg(const char *ids, cancel_mode_t mode)
{
    msg_t *m = msg_new(MSG_JOB_CANCEL_MANY);
    m->flags = MSG_FLAG_EVENT;
    snprintf(m->sender, sizeof m->sender, "%s", REDIS_ACTOR_NAME);
    msg_set_str(&m->job_cancel_many.job_ids, ids);
    m->job_cancel_many.mode = mode;
    m->job_cancel_many.requested_at_us = AT_US;
    msg_set_str(&m->job_cancel_many.origin, s_remote);
    return m;
}

static msg_t *s_comb_msg(const char *id, uint64_t comb, cancel_mode_t mode)
{
    msg_t *m = msg_new(MSG_COMBINATION_CANCEL);
    m->flags = MSG_FLAG_EVENT;
    snprintf(m->sender, sizeof m->sender, "%s", REDIS_ACTOR_NAME);
    msg_set_str(&m->combination_cancel.job_id, id);
    m->combination_cancel.combination = comb;
    m->combination_cancel.mode = mode;
    m->combination_cancel.requested_at_us = AT_US;
    msg_set_str(&m->combination_cancel.origin, s_remote);
    return m;
}

/* The cancel of many jobs and of one combination from another instance
 * reach the bus topic "cancel" (ids lower-cased); malformed ones do not. */
START_TEST(test_batch_and_combination_cancels_cross_redis)
{
    NEED_REDIS();
    int port = s_shared_port();
    redisContext *c = s_sync(port);
    mailbox_t *cancels = mailbox_new(s_rt, "cancel-listener");
    ck_assert_ptr_nonnull(cancels);
    ck_assert_int_eq(mailbox_subscribe(cancels, TOPIC_CANCEL), 0);
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);
    char bad[UUID_STR_LEN], r1[UUID_STR_LEN], r2[UUID_STR_LEN], upper[UUID_STR_LEN],
        list[4 * UUID_STR_LEN];
    s_new_id(bad);
    s_new_id(r1);
    s_new_id(r2);
    s_upper(upper, r2);
    payloads_t p = {.n = 0};
    snprintf(list, sizeof list, "%s,not-a-uuid", bad);
    s_add_msg(&p, s_many_msg(list, CANCEL_MODE_IMMEDIATE));
    snprintf(list, sizeof list, "%s,", bad);
    s_add_msg(&p, s_many_msg(list, CANCEL_MODE_IMMEDIATE));
    s_add_msg(&p, s_many_msg(bad, CANCEL_MODE_NONE));
    s_add_msg(&p, s_many_msg("", CANCEL_MODE_IMMEDIATE));
    s_publish_all(c, REDIS_CANCEL_MANY_CHANNEL, &p);
    s_add_msg(&p, s_comb_msg(bad, 64, CANCEL_MODE_IMMEDIATE));
    s_add_msg(&p, s_comb_msg(bad, 0, CANCEL_MODE_NONE));
    s_add_msg(&p, s_comb_msg("nope", 0, CANCEL_MODE_IMMEDIATE));
    s_publish_all(c, REDIS_COMBINATION_CANCEL_CHANNEL, &p);
    snprintf(list, sizeof list, "%s,%s", r1, upper);
    s_publish_msg(c, REDIS_CANCEL_MANY_CHANNEL, s_many_msg(list, CANCEL_MODE_AFTER_CURRENT_IMAGE));
    s_publish_msg(c, REDIS_COMBINATION_CANCEL_CHANNEL, s_comb_msg(r1, 3, CANCEL_MODE_IMMEDIATE));

    bool got_many = false, got_comb = false;
    double end = s_now() + WAIT_MS / 1000.0;
    while (!got_many || !got_comb) {
        int left = (int)((end - s_now()) * 1000);
        ck_assert_msg(left > 0, "the remote cancels never reached the bus");
        msg_t *ev = mailbox_recv(cancels, left);
        ck_assert_ptr_nonnull(ev);
        if (strcmp(ev->sender, REDIS_ACTOR_NAME) != 0) {
            msg_destroy(&ev);
            continue;
        }
        if (ev->type == MSG_JOB_CANCEL_MANY) {
            ck_assert_msg(!uuid_list_has(ev->job_cancel_many.job_ids, bad),
                          "a malformed cancel of many reached the bus");
            if (uuid_list_has(ev->job_cancel_many.job_ids, r1)) {
                ck_assert(uuid_list_has(ev->job_cancel_many.job_ids, r2)); /* lower-cased */
                ck_assert_int_eq(ev->job_cancel_many.mode, CANCEL_MODE_AFTER_CURRENT_IMAGE);
                got_many = true;
            }
        } else if (ev->type == MSG_COMBINATION_CANCEL) {
            ck_assert_msg(strcmp(ev->combination_cancel.job_id, bad) != 0,
                          "a malformed combination cancel reached the bus");
            if (!strcmp(ev->combination_cancel.job_id, r1)) {
                ck_assert_uint_eq(ev->combination_cancel.combination, 3);
                got_comb = true;
            }
        }
        msg_destroy(&ev);
    }
    redis_destroy(&a);
    mailbox_destroy(&cancels);
    redisFree(c);
}
END_TEST

/* Remote cancels reach the bus with their fields (the id lower-cased);
 * this instance's own are skipped, whether the actor or some client put
 * them on the channel. */
START_TEST(test_remote_cancel_reaches_the_bus_own_is_skipped)
{
    NEED_REDIS();
    int port = s_shared_port();
    redisContext *c = s_sync(port);
    redisContext *sub = s_subscriber(port, REDIS_CANCEL_CHANNEL);
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char own[UUID_STR_LEN], own2[UUID_STR_LEN], remote[UUID_STR_LEN], upper[UUID_STR_LEN];
    s_new_id(own);
    s_new_id(own2);
    s_new_id(remote);
    s_upper(upper, remote);
    const char *ids[] = {own, own2, remote};

    /* ours, through the actor (once it is on the channel, Redis has handed
     * it to the actor's subscriber as well) and straight from a client */
    s_local_cancel(own, CANCEL_MODE_IMMEDIATE, AT_US, NULL);
    msg_t *m = s_channel_next(sub, ids, 3, s_instance);
    s_assert_own_cancel(m, own, CANCEL_MODE_IMMEDIATE, AT_US);
    msg_destroy(&m);
    s_record(own2, CANCEL_MODE_IMMEDIATE, AT_US);
    m = s_channel_next(sub, ids, 3, s_instance);
    s_assert_own_cancel(m, own2, CANCEL_MODE_IMMEDIATE, AT_US);
    msg_destroy(&m);
    s_publish_msg(c, REDIS_CANCEL_CHANNEL,
                  s_cancel_msg(own, CANCEL_MODE_IMMEDIATE, AT_US + 1, s_instance));
    /* another instance's, with an upper-case id */
    s_publish_msg(c, REDIS_CANCEL_CHANNEL,
                  s_cancel_msg(upper, CANCEL_MODE_AFTER_CURRENT_IMAGE, AT_US + 2, s_remote));

    msg_t *ev = s_expect_cancel(ids, 3);
    ck_assert_pstr_eq(ev->job_cancel.job_id, remote);
    ck_assert_int_eq(ev->job_cancel.mode, CANCEL_MODE_AFTER_CURRENT_IMAGE);
    ck_assert_int_eq(ev->job_cancel.requested_at_us, AT_US + 2);
    ck_assert_pstr_eq(ev->job_cancel.origin, s_remote);
    msg_destroy(&ev);

    /* a one-character origin is an instance too */
    s_publish_msg(c, REDIS_CANCEL_CHANNEL,
                  s_cancel_msg(remote, CANCEL_MODE_IMMEDIATE, AT_US + 3, "b"));
    ev = s_expect_cancel(ids, 3);
    ck_assert_pstr_eq(ev->job_cancel.job_id, remote);
    ck_assert_int_eq(ev->job_cancel.mode, CANCEL_MODE_IMMEDIATE);
    ck_assert_int_eq(ev->job_cancel.requested_at_us, AT_US + 3);
    ck_assert_pstr_eq(ev->job_cancel.origin, "b");
    msg_destroy(&ev);
    /* the bus event was not sent back to Redis: the next of ours on the
     * channel is the next cancel recorded */
    char last[UUID_STR_LEN];
    s_new_id(last);
    const char *ids2[] = {own, own2, remote, last};
    s_record(last, CANCEL_MODE_IMMEDIATE, AT_US);
    for (;;) {
        m = s_channel_next(sub, ids2, 4, s_instance);
        ck_assert_msg(m->type == MSG_JOB_CANCEL, "a %s on the channel", msg_type_name(m->type));
        bool done = m->job_cancel.origin && strcmp(m->job_cancel.origin, s_instance) == 0;
        if (done) /* ours: the straight one from the client, then the record */
            ck_assert_msg(strcmp(m->job_cancel.job_id, own) == 0
                              || strcmp(m->job_cancel.job_id, last) == 0,
                          "%s published %s", s_instance, m->job_cancel.job_id);
        done = done && strcmp(m->job_cancel.job_id, last) == 0;
        msg_destroy(&m);
        if (done)
            break;
    }

    redis_destroy(&a);
    redisFree(sub);
    redisFree(c);
}
END_TEST

/* Hostile input on the cancel channel: every malformed message is dropped
 * (none reaches the bus), the valid ones around them still do, and the
 * actor keeps working. */
START_TEST(test_malformed_messages_are_dropped_and_the_actor_keeps_working)
{
    NEED_REDIS();
    redisContext *c = s_sync(s_shared_port());
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char id[UUID_STR_LEN], good[UUID_STR_LEN], good2[UUID_STR_LEN], upper2[UUID_STR_LEN];
    s_new_id(id);
    s_new_id(good);
    s_new_id(good2);
    s_upper(upper2, good2);
    const char *ids[] = {id, good, good2};
    const char *o = s_remote;
    const cancel_mode_t im = CANCEL_MODE_IMMEDIATE;
    payloads_t p = {.n = 0};

    /* garbage, and the old text format */
    s_add(&p, "", 0);
    s_add(&p, " ", 1);
    s_add(&p, "\xc1", 1);
    s_add(&p, "\x95", 1);                 /* an array of 5, and nothing in it */
    s_add(&p, "\xdd\xff\xff\xff\xff", 5); /* an array of 2^32-1 */
    unsigned char noise[256];
    for (unsigned i = 0, x = 12345; i < sizeof noise; i++)
        noise[i] = (unsigned char)((x = x * 1103515245u + 12345u) >> 16);
    s_add(&p, noise, sizeof noise);
    s_add_text(&p, "%s immediate 1764158400000000 %s", id, o);
    s_add_text(&p, "%s recheck 1764158400000000 %s", id, o);
    s_add_text(&p, "{\"job_id\":\"%s\",\"mode\":\"immediate\"}", id);

    /* valid encodings of something else */
    msg_t *m = msg_new(MSG_PING);
    m->ping.seq = 1;
    s_add_msg(&p, m);
    s_add_msg(&p, s_work_msg(id, o));
    m = msg_new(MSG_JOB_CANCEL_RECORDED);
    msg_set_str(&m->job_cancel_recorded.job_id, id);
    m->job_cancel_recorded.mode = im;
    m->job_cancel_recorded.requested_at_us = AT_US;
    s_add_msg(&p, m);
    m = msg_new(MSG_CANCEL_RECHECK); /* a recheck is local, never remote */
    msg_set_str(&m->cancel_recheck.origin, o);
    s_add_msg(&p, m);
    m = s_cancel_msg(id, im, AT_US, o);
    m->flags = MSG_FLAG_REPLY;
    s_add_msg(&p, m);
    m = s_cancel_msg(id, im, AT_US, o);
    m->flags = MSG_FLAG_REPLY | MSG_FLAG_EVENT;
    s_add_msg(&p, m);

    /* a JOB_CANCEL with a bad field */
    static const char *const bad_ids[] = {NULL,
                                          "",
                                          "not-a-uuid",
                                          "550e8400-e29b-41d4-a716-44665544000g",
                                          "550e8400-e29b-41d4-a716-4466554400000",
                                          "550e8400-e29b-41d4-a716-44665544000",
                                          "550e8400e29b41d4a716446655440000abcd",
                                          " 550e8400-e29b-41d4-a716-446655440000"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++)
        s_add_msg(&p, s_cancel_msg(bad_ids[i], im, AT_US, o));
    s_add_msg(&p, s_cancel_msg(id, CANCEL_MODE_NONE, AT_US, o));
    s_add_msg(&p, s_cancel_msg(id, (cancel_mode_t)CANCEL_MODE_COUNT, AT_US, o));
    s_add_msg(&p, s_cancel_msg(id, (cancel_mode_t)255, AT_US, o));
    static const int64_t bad_at[] = {0, -5, INT64_MIN, MAX_AT_US + 1, INT64_MAX};
    for (size_t i = 0; i < sizeof bad_at / sizeof *bad_at; i++)
        s_add_msg(&p, s_cancel_msg(id, im, bad_at[i], o));
    char long_origin[80];
    memset(long_origin, 'x', 64);
    long_origin[64] = '\0';
    static const char *const bad_origins[] = {NULL,    "",        " ",           "a b", "tab\there",
                                              "b\x01", "del\x7f", "caf\xc3\xa9", "\xff"};
    for (size_t i = 0; i < sizeof bad_origins / sizeof *bad_origins; i++)
        s_add_msg(&p, s_cancel_msg(id, im, AT_US, bad_origins[i]));
    s_add_msg(&p, s_cancel_msg(id, im, AT_US, long_origin)); /* 64 characters */

    /* shapes msg_encode never makes */
    pack_t pk;
    msgpack_packer *w = s_pack_begin(&pk); /* job_id an integer */
    s_pack_head(w, MSG_JOB_CANCEL, MSG_FLAG_EVENT, 4);
    msgpack_pack_uint64(w, 42);
    msgpack_pack_uint64(w, im);
    msgpack_pack_int64(w, AT_US);
    s_pack_str(w, o, strlen(o));
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* mode as text, the old spelling */
    s_pack_head(w, MSG_JOB_CANCEL, MSG_FLAG_EVENT, 4);
    s_pack_str(w, id, 36);
    s_pack_str(w, "immediate", 9);
    msgpack_pack_int64(w, AT_US);
    s_pack_str(w, o, strlen(o));
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* mode negative */
    s_pack_head(w, MSG_JOB_CANCEL, MSG_FLAG_EVENT, 4);
    s_pack_str(w, id, 36);
    msgpack_pack_int64(w, -1);
    msgpack_pack_int64(w, AT_US);
    s_pack_str(w, o, strlen(o));
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* mode a boolean */
    s_pack_head(w, MSG_JOB_CANCEL, MSG_FLAG_EVENT, 4);
    s_pack_str(w, id, 36);
    msgpack_pack_true(w);
    msgpack_pack_int64(w, AT_US);
    s_pack_str(w, o, strlen(o));
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* requested_at_us as text */
    s_pack_head(w, MSG_JOB_CANCEL, MSG_FLAG_EVENT, 4);
    s_pack_str(w, id, 36);
    msgpack_pack_uint64(w, im);
    s_pack_str(w, "1764158400000000", 16);
    s_pack_str(w, o, strlen(o));
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* requested_at_us a float */
    s_pack_head(w, MSG_JOB_CANCEL, MSG_FLAG_EVENT, 4);
    s_pack_str(w, id, 36);
    msgpack_pack_uint64(w, im);
    msgpack_pack_double(w, 1764158400000000.0);
    s_pack_str(w, o, strlen(o));
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* requested_at_us past INT64_MAX */
    s_pack_head(w, MSG_JOB_CANCEL, MSG_FLAG_EVENT, 4);
    s_pack_str(w, id, 36);
    msgpack_pack_uint64(w, im);
    msgpack_pack_uint64(w, UINT64_MAX);
    s_pack_str(w, o, strlen(o));
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* origin as bin */
    s_pack_head(w, MSG_JOB_CANCEL, MSG_FLAG_EVENT, 4);
    s_pack_str(w, id, 36);
    msgpack_pack_uint64(w, im);
    msgpack_pack_int64(w, AT_US);
    msgpack_pack_bin(w, strlen(o));
    msgpack_pack_bin_body(w, o, strlen(o));
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* a NUL inside the job id */
    s_pack_head(w, MSG_JOB_CANCEL, MSG_FLAG_EVENT, 4);
    char with_nul[UUID_STR_LEN + 1];
    memcpy(with_nul, id, UUID_STR_LEN); /* the id and its NUL */
    with_nul[UUID_STR_LEN] = 'x';
    s_pack_str(w, with_nul, sizeof with_nul);
    msgpack_pack_uint64(w, im);
    msgpack_pack_int64(w, AT_US);
    s_pack_str(w, o, strlen(o));
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* 3 fields: no origin */
    s_pack_head(w, MSG_JOB_CANCEL, MSG_FLAG_EVENT, 3);
    s_pack_str(w, id, 36);
    msgpack_pack_uint64(w, im);
    msgpack_pack_int64(w, AT_US);
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* 5 fields */
    s_pack_head(w, MSG_JOB_CANCEL, MSG_FLAG_EVENT, 5);
    s_pack_str(w, id, 36);
    msgpack_pack_uint64(w, im);
    msgpack_pack_int64(w, AT_US);
    s_pack_str(w, o, strlen(o));
    msgpack_pack_nil(w);
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* the body a map */
    msgpack_pack_array(w, 5);
    msgpack_pack_uint64(w, MSG_JOB_CANCEL);
    msgpack_pack_uint64(w, MSG_FLAG_EVENT);
    msgpack_pack_uint64(w, 0);
    s_pack_str(w, "redis", 5);
    msgpack_pack_map(w, 1);
    s_pack_str(w, "job_id", 6);
    s_pack_str(w, id, 36);
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* the envelope without a body */
    msgpack_pack_array(w, 4);
    msgpack_pack_uint64(w, MSG_JOB_CANCEL);
    msgpack_pack_uint64(w, MSG_FLAG_EVENT);
    msgpack_pack_uint64(w, 0);
    s_pack_str(w, "redis", 5);
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* the type by name */
    msgpack_pack_array(w, 5);
    s_pack_str(w, "job_cancel", 10);
    msgpack_pack_uint64(w, MSG_FLAG_EVENT);
    msgpack_pack_uint64(w, 0);
    s_pack_str(w, "redis", 5);
    msgpack_pack_array(w, 0);
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* an unknown type */
    s_pack_head(w, 9999, MSG_FLAG_EVENT, 4);
    s_pack_str(w, id, 36);
    msgpack_pack_uint64(w, im);
    msgpack_pack_int64(w, AT_US);
    s_pack_str(w, o, strlen(o));
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* an unknown flag */
    s_pack_head(w, MSG_JOB_CANCEL, MSG_FLAG_EVENT | 0x80, 4);
    s_pack_str(w, id, 36);
    msgpack_pack_uint64(w, im);
    msgpack_pack_int64(w, AT_US);
    s_pack_str(w, o, strlen(o));
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* a sender longer than a name */
    msgpack_pack_array(w, 5);
    msgpack_pack_uint64(w, MSG_JOB_CANCEL);
    msgpack_pack_uint64(w, MSG_FLAG_EVENT);
    msgpack_pack_uint64(w, 0);
    s_pack_str(w, long_origin, 40);
    msgpack_pack_array(w, 4);
    s_pack_str(w, id, 36);
    msgpack_pack_uint64(w, im);
    msgpack_pack_int64(w, AT_US);
    s_pack_str(w, o, strlen(o));
    s_pack_end(&p, &pk);
    w = s_pack_begin(&pk); /* not an envelope: the id alone */
    s_pack_str(w, id, 36);
    s_pack_end(&p, &pk);

    /* a valid one cut short, with trailing bytes, twice in one payload */
    size_t len;
    m = s_cancel_msg(id, im, AT_US, o);
    char *valid = s_encode(&m, &len);
    s_add(&p, valid, len - 1);
    s_add(&p, valid, len / 2);
    s_add(&p, valid, 1);
    char *twice = malloc(2 * len);
    ck_assert_ptr_nonnull(twice);
    memcpy(twice, valid, len);
    memcpy(twice + len, valid, len);
    s_add(&p, twice, len + 1);
    s_add(&p, twice, 2 * len);
    free(twice);
    free(valid);
    s_publish_all(c, REDIS_CANCEL_CHANNEL, &p);

    /* 1 MiB: a JOB_CANCEL whose origin is most of it, and bytes alone */
    size_t big = 1 << 20;
    char *huge = malloc(big + 1);
    ck_assert_ptr_nonnull(huge);
    memset(huge, 'a', big);
    huge[big] = '\0';
    m = s_cancel_msg(id, im, AT_US, huge);
    valid = s_encode(&m, &len);
    s_publish(c, REDIS_CANCEL_CHANNEL, valid, len);
    free(valid);
    memcpy(huge, id, 36);
    s_publish(c, REDIS_CANCEL_CHANNEL, huge, big);
    free(huge);

    /* the first events about these jobs are the good ones: all above
     * dropped; the bounds themselves are accepted */
    char edge[64];
    snprintf(edge, sizeof edge, "!~%.61s",
             "0123456789012345678901234567890123456789012345678901234567890");
    ck_assert_uint_eq(strlen(edge), 63);
    s_publish_msg(c, REDIS_CANCEL_CHANNEL, s_cancel_msg(good, im, MAX_AT_US, edge));
    s_publish_msg(c, REDIS_CANCEL_CHANNEL,
                  s_cancel_msg(upper2, CANCEL_MODE_AFTER_CURRENT_IMAGE, 1, o));
    msg_t *ev = s_expect_cancel(ids, 3);
    ck_assert_pstr_eq(ev->job_cancel.job_id, good);
    ck_assert_int_eq(ev->job_cancel.mode, CANCEL_MODE_IMMEDIATE);
    ck_assert_int_eq(ev->job_cancel.requested_at_us, MAX_AT_US);
    ck_assert_pstr_eq(ev->job_cancel.origin, edge);
    msg_destroy(&ev);
    ev = s_expect_cancel(ids, 3);
    ck_assert_pstr_eq(ev->job_cancel.job_id, good2);
    ck_assert_int_eq(ev->job_cancel.mode, CANCEL_MODE_AFTER_CURRENT_IMAGE);
    ck_assert_int_eq(ev->job_cancel.requested_at_us, 1);
    ck_assert_pstr_eq(ev->job_cancel.origin, o);
    msg_destroy(&ev);

    /* and it still does its work */
    msg_t *h = s_health();
    ck_assert_msg(h->health.ok, "detail: %s", h->health.detail);
    msg_destroy(&h);
    s_record_now(id);
    s_wait_flag(c, id);
    ck_assert_int_eq(s_flag(id), 1);

    redis_destroy(&a);
    redisFree(c);
}
END_TEST

START_TEST(test_flag_get)
{
    NEED_REDIS();
    redisContext *c = s_sync(s_shared_port());
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char set[UUID_STR_LEN], unset[UUID_STR_LEN], other[UUID_STR_LEN], upper[UUID_STR_LEN];
    s_new_id(set);
    s_new_id(unset);
    s_new_id(other);
    freeReplyObject(s_cmd(c, "SET job:%s:cancelled true EX 60", set));
    freeReplyObject(s_cmd(c, "SET job:%s:cancelled TRUE EX 60", other));
    ck_assert_int_eq(s_flag(set), 1);
    ck_assert_int_eq(s_flag(unset), 0);
    ck_assert_int_eq(s_flag(other), 0); /* only the seed's exact "true" */
    s_upper(upper, set);
    ck_assert_int_eq(s_flag(upper), 1);
    s_flag_error("not-a-uuid", -EINVAL);
    s_flag_error(NULL, -EINVAL);
    /* a cancel recorded through the actor is seen by the poll */
    s_record_now(unset);
    double end = s_now() + DEADLINE_S;
    while (!s_flag(unset)) {
        ck_assert_msg(s_now() < end, "the recorded cancel never showed in REDIS_FLAG_GET");
        s_pause_ms(10);
    }
    s_assert_flag(c, unset);

    redis_destroy(&a);
    redisFree(c);
}
END_TEST

START_TEST(test_subscriber_reconnects_and_asks_for_a_recheck)
{
    NEED_REDIS();
    redisContext *c = s_sync(s_shared_port());
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char name[128];
    snprintf(name, sizeof name, "imagejobs:%s:subscriber", s_instance);
    long long id = s_client_id(c, name);
    ck_assert_msg(id > 0, "no client named %s", name);
    freeReplyObject(s_cmd(c, "CLIENT KILL ID %lld", id));

    s_expect_recheck();
    s_wait_health(true);

    /* resubscribed: remote cancels arrive again */
    char job[UUID_STR_LEN];
    s_new_id(job);
    const char *ids[] = {job};
    s_publish_msg(c, REDIS_CANCEL_CHANNEL,
                  s_cancel_msg(job, CANCEL_MODE_IMMEDIATE, AT_US, "elsewhere"));
    msg_t *ev = s_expect_cancel(ids, 1);
    ck_assert_pstr_eq(ev->job_cancel.origin, "elsewhere");
    msg_destroy(&ev);

    /* the commands connection killed: a cancel recorded at once is written
     * once it is back (queued, or lost in flight and queued again) */
    snprintf(name, sizeof name, "imagejobs:%s:commands", s_instance);
    id = s_client_id(c, name);
    ck_assert_msg(id > 0, "no client named %s", name);
    freeReplyObject(s_cmd(c, "CLIENT KILL ID %lld", id));
    s_new_id(job);
    s_record_now(job);
    s_wait_flag(c, job);
    s_wait_health(true);
    /* the subscription was never lost: no recheck, the next event is the
     * next remote cancel */
    char job2[UUID_STR_LEN];
    s_new_id(job2);
    const char *ids2[] = {job2};
    s_publish_msg(c, REDIS_CANCEL_CHANNEL,
                  s_cancel_msg(job2, CANCEL_MODE_IMMEDIATE, AT_US, "elsewhere"));
    ev = s_expect_cancel(ids2, 1);
    ck_assert_pstr_eq(ev->job_cancel.job_id, job2);
    msg_destroy(&ev);

    redis_destroy(&a);
    redisFree(c);
}
END_TEST

START_TEST(test_outage_queues_cancels_and_writes_them_on_return)
{
    NEED_REDIS();
    server_t srv = {0};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);

    s_server_stop(&srv, SIGTERM);
    s_wait_down();
    msg_t *h = s_health();
    ck_assert_msg(strstr(h->health.detail, "down") || strstr(h->health.detail, "closing")
                      || strstr(h->health.detail, "connecting"),
                  "detail: %s", h->health.detail);
    msg_destroy(&h);

    char id1[UUID_STR_LEN], id2[UUID_STR_LEN], id3[UUID_STR_LEN], ev_id[UUID_STR_LEN];
    s_new_id(id1);
    s_new_id(id2);
    s_new_id(id3);
    s_new_id(ev_id);
    s_record_now(id1);
    s_record_now(id2);
    s_record_now(id1);                                         /* deduplicated */
    s_local_cancel(ev_id, CANCEL_MODE_IMMEDIATE, AT_US, NULL); /* dropped */
    s_local_work(ev_id);                                       /* dropped */
    s_flag_error(id1, -EAGAIN);
    s_assert_detail(s_queued(2), true);

    s_server_start(&srv); /* same port */
    s_expect_recheck();

    redisContext *c = s_sync(srv.port);
    s_wait_flag(c, id1);
    s_wait_flag(c, id2);
    s_wait_health(true);
    s_assert_detail("queued", false);
    /* commands are ordered on the connection: once this cancel is on the
     * channel, everything sent before it has been executed */
    redisContext *sub = s_subscriber(srv.port, REDIS_CANCEL_CHANNEL);
    const char *ids[] = {id3};
    s_record_now(id3);
    msg_t *m = s_channel_next(sub, ids, 1, s_instance);
    ck_assert_pstr_eq(m->job_cancel.job_id, id3);
    msg_destroy(&m);
    s_assert_flag(c, id3);
    ck_assert_int_eq(s_calls(c, "set"), 3);
    ck_assert_int_eq(s_calls(c, "publish"), 3); /* the events were not kept */
    ck_assert_int_eq(s_flag(id1), 1);

    redisFree(sub);
    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

START_TEST(test_redis_down_at_start_then_up)
{
    NEED_REDIS();
    server_t srv = {0};
    s_server_start(&srv);
    s_server_stop(&srv, SIGTERM); /* port and directory chosen, nothing listens */
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    msg_t *h = s_health();
    ck_assert_int_eq(h->health.ok, 0);
    msg_destroy(&h);
    char id[UUID_STR_LEN];
    s_new_id(id);
    s_record_now(id);
    s_assert_detail(s_queued(1), true);

    s_server_start(&srv);
    s_expect_recheck(); /* the first subscription counts as one that came back */
    redisContext *c = s_sync(srv.port);
    s_wait_flag(c, id);
    s_wait_health(true);
    s_assert_detail("queued", false);

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

/* The server's INFO field `name` (a number), e.g. total_connections_received. */
static long s_info_long(redisContext *c, const char *name)
{
    redisReply *r = s_cmd(c, "INFO stats");
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    char key[80];
    snprintf(key, sizeof key, "%s:", name);
    const char *p = strstr(r->str, key);
    ck_assert_msg(p != NULL, "INFO stats has no %s", name);
    long v = atol(p + strlen(key));
    freeReplyObject(r);
    return v;
}

/* Whether a flag read, refused while Redis is down, says text. */
static bool s_flag_refused_with(const char *id, const char *text)
{
    msg_t *r = s_reply(s_send_flag_get(id));
    s_expect_error(r, -EAGAIN);
    bool has = strstr(r->error.reason, text) != NULL;
    msg_destroy(&r);
    return has;
}

/* Redis (on a unix socket) down for 6 s while flag reads keep coming, so
 * that the backoff reaches its cap, then back: the requests bring the
 * retry forward, and both connections are up and a flag read is answered
 * within 3 s of the return. The return follows a connection attempt
 * closely: a plain file put where the socket was makes the next attempt
 * fail with "Connection refused" instead of "No such file", which the
 * refused reads report; the file goes and the server starts right after.
 * With a 5 s cap (3.75 to 5 s jittered) and no wake, the next attempt was
 * then more than 3.5 s after the return. The bound is about five times
 * what it takes here (a 50 ms poll, the 0.2 s wake interval). The
 * connections the restarted server received show no connect storm. */
START_TEST(test_return_is_noticed_by_the_next_request)
{
    NEED_REDIS();
    server_t srv = {.unix_socket = true};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);

    s_server_stop(&srv, SIGTERM);
    s_wait_down();
    char id[UUID_STR_LEN], queued[UUID_STR_LEN];
    s_new_id(id);
    s_new_id(queued);
    s_record_now(queued);
    double until = s_now() + 6.;
    while (s_now() < until) {
        s_flag_error(id, -EAGAIN);
        s_pause_ms(50);
    }
    unlink(srv.sock); /* redis-server removes it on SIGTERM: make sure */
    ck_assert_msg(s_flag_refused_with(id, "No such file"), "not refused for the missing socket");
    int fd = open(srv.sock, O_CREAT | O_WRONLY, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    until = s_now() + DEADLINE_S;
    while (!s_flag_refused_with(id, "refused")) {
        ck_assert_msg(s_now() < until, "no connection attempt within %.0f s", DEADLINE_S);
        s_pause_ms(20);
    }
    ck_assert_int_eq(unlink(srv.sock), 0);

    s_server_start(&srv); /* same socket and port; returns once PING is answered */
    double back = s_now(), flag_at = 0, health_at = 0;
    while (!flag_at || !health_at) {
        msg_t *r = s_reply(s_send_flag_get(id));
        if (!flag_at && r->type == MSG_REDIS_FLAG)
            flag_at = s_now();
        else if (!flag_at)
            s_expect_error(r, -EAGAIN);
        msg_destroy(&r);
        r = s_health();
        if (!health_at && r->health.ok)
            health_at = s_now();
        msg_destroy(&r);
        ck_assert_msg(s_now() < back + DEADLINE_S, "not back within %.0f s", DEADLINE_S);
        s_pause_ms(50);
    }
    ck_assert_msg(flag_at - back < 3., "flag read answered %.2f s after Redis was back",
                  flag_at - back);
    ck_assert_msg(health_at - back < 3., "healthy %.2f s after Redis was back", health_at - back);
    redisContext *c = s_sync(srv.port);
    s_wait_flag(c, queued);
    /* the readiness PING, this client, and one connection per context */
    long conns = s_info_long(c, "total_connections_received");
    ck_assert_msg(conns <= 5, "%ld connections since the restart", conns);

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

/* Redis killed while it holds the cancel's SET and PUBLISH and a GET
 * unanswered: the GET is answered -EAGAIN once, the cancel goes back into
 * the queue and is written on Redis's return. */
START_TEST(test_connection_lost_mid_command_requeues_the_cancel)
{
    NEED_REDIS();
    server_t srv = {0};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);

    redisContext *frozen = s_server_freeze(&srv, 60);
    char id[UUID_STR_LEN];
    s_new_id(id);
    s_record_now(id);
    uint64_t flag = s_send_flag_get(id);
    /* the actor has sent all three commands once it answers this: the
     * cancel is in flight, not in the queue */
    msg_t *m = msg_new(MSG_HEALTH_CHECK);
    uint64_t health = s_send(&m);
    msg_t *r = s_reply(health);
    ck_assert_int_eq(r->type, MSG_HEALTH);
    ck_assert_msg(!strstr(r->health.detail, "queued"), "detail: %s", r->health.detail);
    msg_destroy(&r);

    s_server_stop(&srv, SIGKILL);
    redisFree(frozen);
    r = s_reply(flag);
    s_expect_error(r, -EAGAIN);
    msg_destroy(&r);
    /* the server stays down until the test restarts it */
    s_wait_detail(s_queued(1), true);

    s_server_start(&srv);
    redisContext *c = s_sync(srv.port);
    s_wait_flag(c, id);
    s_wait_health(true);
    s_assert_detail("queued", false);
    /* exactly once: no second answer to the GET is waiting */
    r = mailbox_recv(s_test, 0);
    ck_assert_ptr_null(r);

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

/* Redis alive but silent: the watchdog gives up on the connection (about
 * 5 s), answers the GET, puts the cancel back into the queue, and the
 * cancel is written once Redis answers again. */
START_TEST(test_unanswered_commands_time_out)
{
    NEED_REDIS();
    server_t srv = {0};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);

    redisContext *frozen = s_server_freeze(&srv, 120);
    char id[UUID_STR_LEN];
    s_new_id(id);
    s_record_now(id);
    msg_t *r = s_reply(s_send_flag_get(id));
    s_expect_error(r, -EAGAIN);
    ck_assert_msg(strstr(r->error.reason, "lost"), "reason: %s", r->error.reason);
    msg_destroy(&r);
    /* dropped in the same step as the GET was answered: the cancel is
     * queued; a server that accepts connections but does not answer is not
     * up (and whichever watchdog timeout fired last is the reason shown) */
    msg_t *h = s_health();
    ck_assert_msg(!h->health.ok, "detail: %s", h->health.detail);
    ck_assert_msg(strstr(h->health.detail, s_queued(1)), "detail: %s", h->health.detail);
    ck_assert_msg(strstr(h->health.detail, " in time)"), "detail: %s", h->health.detail);
    msg_destroy(&h);

    s_server_stop(&srv, SIGKILL);
    redisFree(frozen);
    s_server_start(&srv);
    redisContext *c = s_sync(srv.port);
    s_wait_flag(c, id);
    s_wait_health(true);
    s_assert_detail("queued", false);

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

/* Redis back with a dataset to load: meanwhile it accepts connections and
 * answers CLIENT SETNAME, SUBSCRIBE and PUBLISH, but refuses SET with
 * -LOADING. A cancel queued during the outage and tried then is kept, and
 * written once the load is done. */
START_TEST(test_cancel_kept_while_redis_loads)
{
    NEED_REDIS();
    server_t srv = {.slow_load = true};
    s_server_start(&srv);
    redisContext *c = s_sync(srv.port);
    /* 20,000 keys: about 6 s to load at 300 µs a key */
    freeReplyObject(s_cmd(c, "DEBUG POPULATE 20000 check-redis-load"));
    redisReply *r = s_cmd(c, "SAVE");
    ck_assert_int_eq(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(c);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);

    s_server_stop(&srv, SIGKILL);
    s_wait_down();
    char id[UUID_STR_LEN];
    s_new_id(id);
    s_record_now(id);
    s_assert_detail(s_queued(1), true);

    s_server_start(&srv); /* returns while it loads */
    c = s_sync(srv.port);
    /* the actor is back and has tried the SET while Redis loads */
    double end = s_now() + DEADLINE_S;
    while (s_rejected(c, "set") < 1) {
        ck_assert_msg(s_loading(c), "Redis loaded before the actor tried the SET");
        ck_assert_msg(s_now() < end, "the actor never tried the SET");
        s_pause_ms(10);
    }
    s_wait_flag(c, id); /* GET is refused too until the load is done */
    s_wait_health(true);
    s_wait_detail("queued", false);

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

START_TEST(test_large_backlog_is_written_on_return)
{
    NEED_REDIS();
    enum { N = 1000 }; /* several flush windows */
    server_t srv = {0};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);
    s_server_stop(&srv, SIGTERM);
    s_wait_down();

    static char ids[N][UUID_STR_LEN];
    for (int i = 0; i < N; i++) {
        s_new_id(ids[i]);
        s_record(ids[i], i % 2 ? CANCEL_MODE_IMMEDIATE : CANCEL_MODE_AFTER_CURRENT_IMAGE,
                 AT_US + i);
    }
    s_assert_detail(s_queued(N), true);

    s_server_start(&srv);
    redisContext *c = s_sync(srv.port);
    double end = s_now() + DEADLINE_S;
    while (s_calls(c, "publish") < N) {
        ck_assert_msg(s_now() < end, "only %ld of %d cancels written", s_calls(c, "publish"), N);
        s_pause_ms(10);
    }
    for (int i = 0; i < N; i++)
        s_assert_flag(c, ids[i]);
    ck_assert_int_eq(s_calls(c, "set"), N);
    ck_assert_int_eq(s_calls(c, "publish"), N);
    s_assert_detail("queued", false);

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

/* Cancels stream in while Redis is killed and restarted under them (AOF,
 * fsync always: what Redis acknowledged survives): those caught in flight
 * or recorded during the outage are queued, and every flag ends up set. */
START_TEST(test_no_cancel_lost_across_restarts)
{
    NEED_REDIS();
    enum { BATCH = 100, BATCHES = 12 };
    server_t srv = {.persist = true};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);

    static char ids[BATCH * BATCHES][UUID_STR_LEN];
    for (int b = 0; b < BATCHES; b++) {
        for (int i = 0; i < BATCH; i++) {
            s_new_id(ids[b * BATCH + i]);
            s_record_now(ids[b * BATCH + i]);
        }
        if (b == 2 || b == 7) {
            /* once the actor has handled the batch: with commands in flight */
            msg_t *h = s_health();
            msg_destroy(&h);
            s_server_stop(&srv, SIGKILL);
        }
        if (b == 3 || b == 8) /* Redis down: the outage's cancels wait */
            s_wait_detail(" cancels queued", true);
        if (b == 4 || b == 9)
            s_server_start(&srv);
    }
    redisContext *c = s_sync(srv.port);
    for (int i = 0; i < BATCH * BATCHES; i++)
        s_wait_flag(c, ids[i]);
    s_wait_health(true);
    s_wait_detail("queued", false);
    /* nobody was answered */
    ck_assert_ptr_null(mailbox_recv(s_test, 0));

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

START_TEST(test_queue_is_bounded)
{
    NEED_REDIS();
    server_t srv = {0};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 3);
    s_wait_health(true);
    s_server_stop(&srv, SIGTERM);
    s_wait_down();

    char ids[5][UUID_STR_LEN];
    for (int i = 0; i < 5; i++) {
        s_new_id(ids[i]);
        s_record_now(ids[i]);
        s_assert_detail(s_queued(i < 3 ? (size_t)i + 1 : 3), true);
    }
    s_record_now(ids[0]); /* already queued: still kept, once */
    s_record_now(ids[3]); /* still no room */
    s_assert_detail(s_queued(3), true);

    s_server_start(&srv);
    redisContext *c = s_sync(srv.port);
    for (int i = 0; i < 3; i++)
        s_wait_flag(c, ids[i]);
    s_wait_health(true);
    s_assert_detail("queued", false);
    /* room again; and once this one is on the channel, everything sent
     * before it has been executed */
    redisContext *sub = s_subscriber(srv.port, REDIS_CANCEL_CHANNEL);
    char extra[UUID_STR_LEN];
    s_new_id(extra);
    const char *eids[] = {extra};
    s_record_now(extra);
    msg_t *m = s_channel_next(sub, eids, 1, s_instance);
    ck_assert_pstr_eq(m->job_cancel.job_id, extra);
    msg_destroy(&m);
    s_assert_flag(c, extra);
    s_assert_no_flag(c, ids[3]);
    s_assert_no_flag(c, ids[4]);
    ck_assert_int_eq(s_calls(c, "set"), 4);
    ck_assert_int_eq(s_calls(c, "publish"), 4);

    redisFree(sub);
    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

START_TEST(test_unix_socket)
{
    NEED_REDIS();
    server_t srv = {.unix_socket = true};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    ck_assert_int_eq(url[0], '/');
    actor_t *a = s_start(url, 0);
    s_wait_health(true);
    char id[UUID_STR_LEN], remote[UUID_STR_LEN];
    s_new_id(id);
    s_new_id(remote);
    redisContext *c = s_sync(srv.port); /* the same server over TCP */
    s_record_now(id);
    s_wait_flag(c, id);
    ck_assert_int_eq(s_flag(id), 1);
    /* the subscriber, too */
    const char *ids[] = {remote};
    s_publish_msg(c, REDIS_CANCEL_CHANNEL,
                  s_cancel_msg(remote, CANCEL_MODE_IMMEDIATE, AT_US, s_remote));
    msg_t *ev = s_expect_cancel(ids, 1);
    ck_assert_pstr_eq(ev->job_cancel.job_id, remote);
    msg_destroy(&ev);

    /* down and back over the socket as well */
    s_server_stop(&srv, SIGTERM);
    s_wait_health(false);
    s_server_start(&srv);
    s_wait_health(true);
    s_expect_recheck();

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

/* Stopped while Redis holds a cancel's commands and a GET unanswered: the
 * GET is answered -EAGAIN (once), nothing else is, and the actor goes
 * without a crash or a leak (the sanitizer build checks). */
START_TEST(test_stop_with_commands_in_flight)
{
    NEED_REDIS();
    server_t srv = {0};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);

    redisContext *frozen = s_server_freeze(&srv, 60);
    char id[UUID_STR_LEN], id2[UUID_STR_LEN];
    s_new_id(id);
    s_new_id(id2);
    s_record_now(id);
    s_local_cancel(id2, CANCEL_MODE_IMMEDIATE, AT_US, NULL);
    s_local_work(id2);
    uint64_t flag = s_send_flag_get(id);
    msg_t *m = msg_new(MSG_HEALTH_CHECK);
    msg_t *r = s_reply(s_send(&m)); /* everything above was sent to Redis */
    ck_assert_msg(!strstr(r->health.detail, "queued"), "detail: %s", r->health.detail);
    msg_destroy(&r);

    redis_destroy(&a);
    ck_assert_ptr_null(a);
    r = s_reply(flag);
    s_expect_error(r, -EAGAIN);
    ck_assert_msg(strstr(r->error.reason, "stopping"), "reason: %s", r->error.reason);
    msg_destroy(&r);
    ck_assert_ptr_null(mailbox_recv(s_test, 0));

    redisFree(frozen);
    s_server_cleanup(&srv);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("redis");
    TCase *tc = tcase_create("redis");
    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_bad_config_fails_with_reason);
    tcase_add_test(tc, test_starts_while_redis_is_down_and_queues);
    tcase_add_test(tc, test_cancel_recorded_sets_flag_and_publishes);
    tcase_add_test(tc, test_local_cancel_is_published_without_a_flag);
    tcase_add_test(tc, test_work_wakeups_cross_redis);
    tcase_add_test(tc, test_remote_cancel_reaches_the_bus_own_is_skipped);
    tcase_add_test(tc, test_malformed_messages_are_dropped_and_the_actor_keeps_working);
    tcase_add_test(tc, test_job_events_cross_redis);
    tcase_add_test(tc, test_batch_and_combination_cancels_cross_redis);
    tcase_add_test(tc, test_flag_get);
    tcase_add_test(tc, test_subscriber_reconnects_and_asks_for_a_recheck);
    tcase_add_test(tc, test_outage_queues_cancels_and_writes_them_on_return);
    tcase_add_test(tc, test_redis_down_at_start_then_up);
    tcase_add_test(tc, test_return_is_noticed_by_the_next_request);
    tcase_add_test(tc, test_connection_lost_mid_command_requeues_the_cancel);
    tcase_add_test(tc, test_unanswered_commands_time_out);
    tcase_add_test(tc, test_cancel_kept_while_redis_loads);
    tcase_add_test(tc, test_large_backlog_is_written_on_return);
    tcase_add_test(tc, test_no_cancel_lost_across_restarts);
    tcase_add_test(tc, test_queue_is_bounded);
    tcase_add_test(tc, test_unix_socket);
    tcase_add_test(tc, test_stop_with_commands_in_flight);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
