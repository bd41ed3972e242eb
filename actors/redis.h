/*
 * redis.h - the redis actor: the seed's cancel flag, and the bridge that
 * carries cancels and work wake-ups between instances over Redis pub/sub,
 * on two hiredis async connections on the actor's own libev loop (one for
 * commands, one for SUBSCRIBE).
 *
 * The bridge (bus topic <-> channel, one message type each):
 *   "cancel" JOB_CANCEL      <-> imagejobs:cancel
 *   "work"   WORK_AVAILABLE  <-> imagejobs:work
 * An event published on this instance's bus (by anyone but this actor) is
 * PUBLISHed with its origin set to this instance, best effort (dropped while
 * Redis is down: the durable paths cover it). A channel message is the
 * msgpack encoding of the message from messages.def (msg_encode); one that
 * arrives is decoded as hostile input and checked (the type the channel
 * carries, a UUID job id, lowercased; for a cancel a mode other than none
 * and requested_at_us within 1 .. year 2100; an origin of 1 to 63 printable
 * ASCII characters, no space); anything else is logged and dropped. A valid
 * one from another instance is published on the local bus; this instance's
 * own are skipped (they were on this bus before they went out).
 *
 * Messages it handles (messages/messages.def):
 *   JOB_CANCEL_RECORDED  (bus "job.cancel_recorded", from the store once its
 *                   write landed) SET job:{id}:cancelled "true" EX 3600, then
 *                   PUBLISH the cancel again on imagejobs:cancel. While
 *                   Redis is unreachable the cancel waits in a bounded queue
 *                   (one entry per job) and is written when Redis returns.
 *   REDIS_FLAG_GET  GET job:{id}:cancelled. Reply REDIS_FLAG {set: value is
 *                   "true"}, or ERROR -EAGAIN while Redis is unreachable,
 *                   -EINVAL for a job id that is not a UUID.
 *   HEALTH_CHECK    Reply HEALTH {ok: both connections up and subscribed;
 *                   detail names the state of each and the queued cancels}.
 *
 * Events it publishes on the bus topic "cancel": JOB_CANCEL from other
 * instances, and CANCEL_RECHECK whenever the subscription comes back after
 * a time without it (a lost connection, or Redis down at start): cancels
 * may have been missed, generators re-read them from the store.
 */
#ifndef IMAGEJOBS_ACTORS_REDIS_H
#define IMAGEJOBS_ACTORS_REDIS_H

#include <stddef.h>

#include "runtime/actor.h"
#include "runtime/names.h"
#include "runtime/runtime.h"

#define REDIS_ACTOR_NAME ACTOR_REDIS
#define REDIS_CANCEL_CHANNEL "imagejobs:cancel"
/* "<jobId> <instance>": a job was created, idle generators elsewhere may
 * claim its combinations now rather than at their next sweep. */
#define REDIS_WORK_CHANNEL "imagejobs:work"
/* Job events between instances (docs/events.md), each a message of the
 * table encoded as on the bus: JOB_EVENT, JOB_PROGRESS, JOB_PREVIEW and
 * PREVIEW_WANTED. */
#define REDIS_EVENTS_CHANNEL "imagejobs:events"
/* JOB_CANCEL_MANY: the cancel of many jobs in one message. */
#define REDIS_CANCEL_MANY_CHANNEL "imagejobs:cancel_many"
/* COMBINATION_CANCEL: one combination of a job stops, the others go on. */
#define REDIS_COMBINATION_CANCEL_CHANNEL "imagejobs:combination_cancel"
#define REDIS_PROGRESS_CHANNEL "imagejobs:progress"
#define REDIS_PREVIEWS_CHANNEL "imagejobs:previews"
#define REDIS_PREVIEW_WANTED_CHANNEL "imagejobs:preview_wanted"
/* Cancels remembered while Redis is down (cfg.queue_max 0). */
#define REDIS_QUEUE_MAX_DEFAULT 100000
/* Longest instance name, including the terminating NUL. */
#define REDIS_INSTANCE_MAX 64

typedef struct {
    /* redis://HOST[:PORT] (port 6379 by default; HOST a name, an IPv4
     * address or a bracketed IPv6 address), or an absolute path: a unix
     * socket. Anything else makes redis_start fail. */
    const char *url;
    /* This instance's name: the origin of the cancels it publishes. 1 to 63
     * printable ASCII characters, no space. */
    const char *instance;
    /* Most cancels kept for Redis's return while it is down (deduplicated
     * by job id); 0: REDIS_QUEUE_MAX_DEFAULT. */
    size_t queue_max;
} redis_config_t;

/* Starts the actor named "redis". cfg is read during the call only. It does
 * not wait for Redis: when Redis is down it keeps retrying with backoff
 * (100 ms doubling to 1 s, jittered; a request that needs Redis brings the
 * next attempt forward, at most one per 0.2 s) and logs each change of
 * state once. Returns NULL with the reason in err for a bad URL or
 * instance name, or when the actor cannot start. Stop it with
 * redis_destroy(). */
actor_t *redis_start(runtime_t *rt, const redis_config_t *cfg, char *err, size_t errlen);

/* Stops the actor and frees it (actor_destroy); NULLs *ap. Requests still
 * waiting on Redis are answered ERROR -EAGAIN before it goes. */
void redis_destroy(actor_t **ap);

#endif
