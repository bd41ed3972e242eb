/*
 * redis.c - the redis actor (see redis.h for its messages and the channels'
 * payloads; actors/redis/internal.h for how its files divide the work).
 *
 * Two hiredis async contexts live on the actor's loop: "commands" (SET,
 * PUBLISH, GET) and "subscriber" (SUBSCRIBE imagejobs:cancel imagejobs:work;
 * a subscribed context takes no other command). Each one is a small state machine:
 *
 *   DOWN --retry timer--> CONNECTING --connect cb, CLIENT SETNAME answered--> READY
 *                                    (subscriber) --connect cb--> SUBSCRIBING
 *                                                 --SUBSCRIBE confirmed--> READY
 *   any state --error, disconnect cb, watchdog--> CLOSING/DOWN --> retry
 *
 * The retry waits 100 ms doubling to 1 s, jittered by +-25 % (never above
 * 1 s) so that instances that lost the same server do not retry in step.
 * A request that needs a connection while it is DOWN (a REDIS_FLAG_GET, a
 * JOB_CANCEL_RECORDED that goes to the queue, a HEALTH_CHECK) brings its
 * retry forward to now: service returns right after Redis does. Those
 * early attempts are rate-limited (WAKE_INTERVAL_S after the previous
 * attempt began; none while one is under way), so requests arriving in
 * thousands during an outage cost a few refused connects a second.
 *
 * Rules that keep it safe (hiredis 0.14.1):
 *  - hiredis frees a context itself after its connect callback reported a
 *    failure and after its disconnect callback; we only forget the pointer
 *    there and arm the retry timer. We free a context ourselves only from a
 *    timer (watchdog) or from fini, never inside one of its callbacks.
 *  - When a context goes away, hiredis calls every pending reply callback
 *    with a NULL reply, and only then the disconnect callback. Each callback
 *    therefore treats NULL as "connection lost", and each operation ends
 *    exactly once, where it is freed: a flag read is answered -EAGAIN, a
 *    cancel goes back into the queue.
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

#include "actors/redis/internal.h"

#include "runtime/clock.h"
#include "runtime/log.h"
#include "runtime/names.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What redis_start hands to init (valid during actor_new only). */
typedef struct {
    const char *url;
    char host[256];
    int port;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    const char *instance;
    size_t queue_max;
} start_arg_t;

static const char *const s_state_names[] = {"down", "connecting", "subscribing", "up", "closing"};

/* ------------------------------------------------------------ helpers */

const char *redis_state_name(conn_state_t s)
{
    return (unsigned)s < sizeof s_state_names / sizeof *s_state_names ? s_state_names[s] : "?";
}

/* 1 to 63 printable ASCII characters, no space: fits the payload and a
 * Redis client name. */
bool redis_instance_valid(const char *s, size_t len)
{
    if (len == 0 || len >= REDIS_INSTANCE_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            return false;
    return true;
}

void redis_lowercase(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* Copies at most 64 bytes of untrusted text for a log line, every byte
 * outside printable ASCII shown as '?'. */
void redis_sanitize(char *out, size_t outlen, const char *in, size_t len)
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

/* ------------------------------------------------------------ health */

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
             redis_state_name(st->cmd.state));
    if (st->cmd.state != CONN_READY && st->cmd.error[0])
        s_append(detail, sizeof detail, &n, " (%s)", st->cmd.error);
    s_append(detail, sizeof detail, &n, ", subscriber %s", redis_state_name(st->sub.state));
    if (st->sub.state != CONN_READY && st->sub.error[0])
        s_append(detail, sizeof detail, &n, " (%s)", st->sub.error);
    if (st->queued)
        s_append(detail, sizeof detail, &n, ", %zu cancels queued", st->queued);
    msg_t *h = msg_new(MSG_HEALTH);
    h->health.ok = st->cmd.state == CONN_READY && st->sub.state == CONN_READY;
    msg_set_str(&h->health.detail, detail);
    actor_reply(self, msg, h);
    msg_destroy(&h);
    /* /readyz polls this: the poll after Redis's return should find it up */
    redis_conn_wake(&st->cmd);
    redis_conn_wake(&st->sub);
}

/* ------------------------------------------------------------ lifecycle */

static int s_init(actor_t *self, void *arg)
{
    const start_arg_t *a = arg;
    /* what happens here that the other instances must learn */
    if (actor_subscribe(self, TOPIC_WORK) < 0 || actor_subscribe(self, TOPIC_CANCEL) < 0
        || actor_subscribe(self, TOPIC_JOB_CANCEL_RECORDED) < 0
        || actor_subscribe(self, TOPIC_JOB_EVENT) < 0
        || actor_subscribe(self, TOPIC_JOB_PROGRESS) < 0
        || actor_subscribe(self, TOPIC_JOB_PREVIEW) < 0
        || actor_subscribe(self, TOPIC_PREVIEW_WANTED) < 0) {
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
    redis_conn_init(st, &st->cmd, "commands");
    redis_conn_init(st, &st->sub, "subscriber");
    ev_timer_init(&st->watchdog, redis_watchdog_cb, WATCHDOG_PERIOD_S, WATCHDOG_PERIOD_S);
    st->watchdog.data = st;
    ev_timer_start(st->loop, &st->watchdog);
    actor_set_state(self, st);

    redis_conn_connect(&st->cmd);
    redis_conn_connect(&st->sub);
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
    redis_flag_queue_free(st);
    msg_decoder_destroy(&st->decoder);
    free(st);
    actor_set_state(self, NULL);
}

static const actor_spec_t s_spec = {
    .init = s_init,
    .fini = s_fini,
    .handlers =
        {
            [MSG_JOB_CANCEL] = redis_on_bridged_event,
            [MSG_WORK_AVAILABLE] = redis_on_bridged_event,
            [MSG_JOB_CANCEL_MANY] = redis_on_bridged_event,
            [MSG_COMBINATION_CANCEL] = redis_on_bridged_event,
            [MSG_JOB_EVENT] = redis_on_bridged_event,
            [MSG_JOB_PROGRESS] = redis_on_bridged_event,
            [MSG_JOB_PREVIEW] = redis_on_bridged_event,
            [MSG_PREVIEW_WANTED] = redis_on_bridged_event,
            [MSG_JOB_CANCEL_RECORDED] = redis_on_cancel_recorded,
            [MSG_CANCEL_RECHECK] = redis_on_recheck,
            [MSG_REDIS_FLAG_GET] = redis_on_flag_get,
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
            snprintf(err, errlen, "unix socket path longer than %zu bytes: %s", sizeof a->path - 1,
                     url);
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
        snprintf(err, errlen, "bad Redis URL \"%s\": %s host (%s)", url, hlen ? "too long a" : "no",
                 usage);
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
    if (!cfg->instance || !redis_instance_valid(cfg->instance, strlen(cfg->instance))) {
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
