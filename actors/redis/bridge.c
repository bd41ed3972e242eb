/*
 * bridge.c - the redis actor's bridge between the local bus and Redis
 * pub/sub: JOB_CANCEL on "cancel" <-> imagejobs:cancel, WORK_AVAILABLE on
 * "work" <-> imagejobs:work, and the job events (JOB_EVENT, JOB_PROGRESS,
 * JOB_PREVIEW, PREVIEW_WANTED: s_bridges), each message encoded from the
 * table exactly as it travels on the bus. What arrives is hostile input: decoded by the
 * table's decoder, of the channel's one type, checked field by field.
 */
#include "config.h"

#include "actors/redis/internal.h"

#include "messages/limits.h"
#include "runtime/clock.h"
#include "runtime/log.h"
#include "runtime/names.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ from Redis */

/* A job id as it may travel: a UUID, lower-cased here so that it compares
 * equal to the one the generators hold. */
static bool s_job_id(char *id)
{
    if (!uuid_valid(id))
        return false;
    redis_lowercase(id);
    return true;
}

/* A cancel as it may travel: a UUID job id (lowercased here), a mode that
 * stops something, a plausible time (every message's origin: s_check).
 * NULL, or why not. */
static const char *s_check_cancel(msg_job_cancel_t *c)
{
    if (!s_job_id(c->job_id))
        return "job id is not a UUID";
    if (c->mode == CANCEL_MODE_NONE)
        return "mode none";
    if (c->requested_at_us < 1 || c->requested_at_us > MAX_REQUESTED_AT_US)
        return "requested_at_us out of range";
    return NULL;
}

static const char *s_check_work(msg_work_available_t *w)
{
    if (!s_job_id(w->job_id))
        return "job id is not a UUID";
    return NULL;
}

/* A cancel of many: ids that are UUIDs (lowercased here), comma-separated,
 * at most JOB_CANCEL_MANY_MAX; otherwise as a single cancel. */
static const char *s_check_cancel_many(msg_job_cancel_many_t *c)
{
    if (!c->job_ids || !*c->job_ids)
        return "no job ids";
    size_t n = 0;
    for (char *p = c->job_ids; *p; n++) {
        size_t k = strcspn(p, ",");
        char id[UUID_STR_LEN];
        if (k != UUID_STR_LEN - 1 || n >= JOB_CANCEL_MANY_MAX)
            return "job ids are not a list of UUIDs";
        memcpy(id, p, k);
        id[k] = '\0';
        if (!uuid_valid(id))
            return "job ids are not a list of UUIDs";
        for (size_t i = 0; i < k; i++)
            p[i] = (char)tolower((unsigned char)p[i]);
        p += k;
        if (*p == ',' && !*++p)
            return "job ids end in a comma";
    }
    if (c->mode == CANCEL_MODE_NONE)
        return "mode none";
    if (c->requested_at_us < 1 || c->requested_at_us > MAX_REQUESTED_AT_US)
        return "requested_at_us out of range";
    return NULL;
}

static const char *s_check_combination_cancel(msg_combination_cancel_t *c)
{
    if (!s_job_id(c->job_id))
        return "job id is not a UUID";
    if (c->combination >= JOB_COMBINATIONS_MAX)
        return "combination out of range";
    if (c->mode == CANCEL_MODE_NONE)
        return "mode none";
    if (c->requested_at_us < 1 || c->requested_at_us > MAX_REQUESTED_AT_US)
        return "requested_at_us out of range";
    return NULL;
}

/* A job event: a real seq, a job, a kind and status the table knows (the
 * decoder checked those), and data that is one line of JSON (an event
 * stream sends it as one "data:" line). */
static const char *s_check_event(msg_job_event_t *e)
{
    if (!s_job_id(e->job_id))
        return "job id is not a UUID";
    if (e->seq == 0)
        return "seq 0";
    if (!e->data || e->data[0] != '{' || strpbrk(e->data, "\r\n"))
        return "data is not one line of JSON";
    if (!uuid_valid(e->log))
        return "log id is not a UUID";
    redis_lowercase(e->log);
    return NULL;
}

static const char *s_check_progress(msg_job_progress_t *p)
{
    if (!s_job_id(p->job_id))
        return "job id is not a UUID";
    if (p->combination >= JOB_COMBINATIONS_MAX || p->image_index >= JOB_IMAGES_MAX
        || p->steps < JOB_STEPS_MIN || p->steps > JOB_STEPS_MAX || p->step > p->steps)
        return "combination, image, step or steps out of range";
    return NULL;
}

static const char *s_check_preview(msg_job_preview_t *p)
{
    static const unsigned char png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (!s_job_id(p->job_id))
        return "job id is not a UUID";
    if (p->combination >= JOB_COMBINATIONS_MAX || p->image_index >= JOB_IMAGES_MAX
        || p->step > JOB_STEPS_MAX)
        return "combination, image or step out of range";
    if (p->width < 1 || p->width > PREVIEW_SIZE_MAX || p->height < 1
        || p->height > PREVIEW_SIZE_MAX)
        return "preview size out of range";
    if (p->png.size < sizeof png_magic || memcmp(p->png.data, png_magic, sizeof png_magic) != 0)
        return "not a PNG";
    return NULL;
}

static const char *s_check_wanted(msg_preview_wanted_t *w)
{
    if (!s_job_id(w->job_id))
        return "job id is not a UUID";
    if (w->ttl_ms < 1 || w->ttl_ms > 60000)
        return "ttl out of range";
    return NULL;
}

/* The channels and what each carries: the bus topic, the one message type,
 * its check, where its origin lives and its longest payload. */
typedef struct {
    const char *channel;
    const char *topic;
    msg_type_t type;
    const char *(*check)(msg_t *m);
    char **(*origin)(msg_t *m);
    size_t payload_max;
} bridge_t;

/* The check and the origin of each bridged message, by name. */
#define S_BRIDGED(name, check)                                                                     \
    static const char *s_check_##name##_msg(msg_t *m)                                              \
    {                                                                                              \
        return check(&m->name);                                                                    \
    }                                                                                              \
    static char **s_##name##_origin(msg_t *m)                                                      \
    {                                                                                              \
        return &m->name.origin;                                                                    \
    }
S_BRIDGED(job_cancel, s_check_cancel)
S_BRIDGED(work_available, s_check_work)
S_BRIDGED(job_cancel_many, s_check_cancel_many)
S_BRIDGED(combination_cancel, s_check_combination_cancel)
S_BRIDGED(job_event, s_check_event)
S_BRIDGED(job_progress, s_check_progress)
S_BRIDGED(job_preview, s_check_preview)
S_BRIDGED(preview_wanted, s_check_wanted)

static const bridge_t s_bridges[] = {
    {REDIS_CANCEL_CHANNEL, TOPIC_CANCEL, MSG_JOB_CANCEL, s_check_job_cancel_msg,
     s_job_cancel_origin, PAYLOAD_MAX},
    {REDIS_WORK_CHANNEL, TOPIC_WORK, MSG_WORK_AVAILABLE, s_check_work_available_msg,
     s_work_available_origin, PAYLOAD_MAX},
    {REDIS_CANCEL_MANY_CHANNEL, TOPIC_CANCEL, MSG_JOB_CANCEL_MANY, s_check_job_cancel_many_msg,
     s_job_cancel_many_origin, EVENT_PAYLOAD_MAX},
    {REDIS_COMBINATION_CANCEL_CHANNEL, TOPIC_CANCEL, MSG_COMBINATION_CANCEL,
     s_check_combination_cancel_msg, s_combination_cancel_origin, PAYLOAD_MAX},
    {REDIS_EVENTS_CHANNEL, TOPIC_JOB_EVENT, MSG_JOB_EVENT, s_check_job_event_msg,
     s_job_event_origin, EVENT_PAYLOAD_MAX},
    {REDIS_PROGRESS_CHANNEL, TOPIC_JOB_PROGRESS, MSG_JOB_PROGRESS, s_check_job_progress_msg,
     s_job_progress_origin, PAYLOAD_MAX},
    {REDIS_PREVIEWS_CHANNEL, TOPIC_JOB_PREVIEW, MSG_JOB_PREVIEW, s_check_job_preview_msg,
     s_job_preview_origin, PREVIEW_PAYLOAD_MAX},
    {REDIS_PREVIEW_WANTED_CHANNEL, TOPIC_PREVIEW_WANTED, MSG_PREVIEW_WANTED,
     s_check_preview_wanted_msg, s_preview_wanted_origin, PAYLOAD_MAX},
};
#define BRIDGES (sizeof s_bridges / sizeof s_bridges[0])

/* b's check of m, and what every bridged message must have: a valid origin.
 * NULL, or why not. */
static const char *s_check(const bridge_t *b, msg_t *m)
{
    const char *bad = b->check(m);
    const char *origin = *b->origin(m);
    if (!bad && (!origin || !redis_instance_valid(origin, strlen(origin))))
        bad = "bad origin";
    return bad;
}

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
        redis_sanitize(shown, sizeof shown, p, len);
        log_warn("dropped a malformed message on %s (%s): \"%s\" (%" PRIu64 " dropped so far)",
                 b->channel, why, shown, st->dropped);
    }
}

/* A payload of b's channel decoded as hostile input and checked: the
 * message (the caller's), or NULL with the reason in why. */
static msg_t *s_check_payload(msg_decoder_t *d, const bridge_t *b, const char *p, size_t len,
                              char *why, size_t whylen)
{
    msg_t *m = NULL;
    why[0] = '\0';
    if (len == 0 || len > b->payload_max)
        snprintf(why, whylen, "empty or too long");
    else if (!(m = msg_decode_with(d, p, len, why, whylen)))
        ;
    else if (m->type != b->type || (m->flags & MSG_FLAG_REPLY))
        snprintf(why, whylen, "a %s, not a %s event", msg_type_name(m->type),
                 msg_type_name(b->type));
    else {
        const char *bad = s_check(b, m);
        if (bad)
            snprintf(why, whylen, "%s", bad);
    }
    if (why[0]) {
        msg_destroy(&m);
        return NULL;
    }
    return m;
}

static const bridge_t *s_bridge_of_channel(const char *channel, size_t chlen)
{
    for (size_t i = 0; i < BRIDGES; i++)
        if (strlen(s_bridges[i].channel) == chlen
            && memcmp(s_bridges[i].channel, channel, chlen) == 0)
            return &s_bridges[i];
    return NULL;
}

msg_t *redis_bridge_check(msg_decoder_t *d, const char *channel, size_t chlen, const char *payload,
                          size_t len, char *why, size_t whylen)
{
    const bridge_t *b = s_bridge_of_channel(channel, chlen);
    if (!b) {
        snprintf(why, whylen, "not a bridged channel");
        return NULL;
    }
    return s_check_payload(d, b, payload, len, why, whylen);
}

/* A message from another instance: decoded as hostile input, checked, and
 * published on the local bus (our own instance's are skipped: they were on
 * this bus before they went out). */
static void s_on_payload(redis_state_t *st, const bridge_t *b, const char *p, size_t len)
{
    char why[160];
    msg_t *m = s_check_payload(st->decoder, b, p, len, why, sizeof why);
    if (!m) {
        s_drop_payload(st, b, why, p, len);
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

void redis_bridge_recheck(redis_state_t *st)
{
    msg_t *ev = msg_new(MSG_CANCEL_RECHECK);
    msg_set_str(&ev->cancel_recheck.origin, st->instance);
    if (actor_publish(st->self, TOPIC_CANCEL, ev) < 0)
        log_error("cannot publish the recheck on the bus");
    msg_destroy(&ev);
}

void redis_bridge_message(redis_state_t *st, const char *channel, size_t chlen, const char *payload,
                          size_t len)
{
    const bridge_t *b = s_bridge_of_channel(channel, chlen);
    if (b)
        s_on_payload(st, b, payload, len);
}

/* ------------------------------------------------------------ to Redis */

static void s_on_event_published(redisAsyncContext *ac, void *reply, void *privdata)
{
    redis_conn_replied(ac->data, ac, reply);
}

/* A bridged event on our bus (JOB_CANCEL from the http actor, WORK_AVAILABLE
 * from the store): PUBLISH it for the other instances, best effort (while
 * Redis is down the durable paths cover it: the flag's queue, the store's
 * cancel, the generators' sweep). What we put on the bus ourselves came
 * from Redis and is not sent back. */
void redis_on_bridged_event(actor_t *self, msg_t *msg)
{
    redis_state_t *st = actor_state(self);
    const bridge_t *b = s_bridge_of_type(msg->type);
    if (strcmp(msg->sender, actor_name(self)) == 0 || !redis_cmd_ready(st))
        return;
    msg_set_str(b->origin(msg), st->instance);
    const char *bad = s_check(b, msg);
    if (bad) {
        log_warn("malformed %s from %s not published (%s)", msg_type_name(msg->type), msg->sender,
                 bad);
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
        redis_conn_sent(conn);
    free(payload);
}

/* Our own recheck, on the topic we subscribe to: nothing to bridge. */
void redis_on_recheck(actor_t *self, msg_t *msg) {}
