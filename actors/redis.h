/*
 * redis.h - the redis actor: the seed's cancel flag and the cancel channel
 * between instances, over two hiredis async connections on the actor's own
 * libev loop (one for commands, one for SUBSCRIBE).
 *
 * Messages it handles (messages/messages.def):
 *   REDIS_CANCEL    SET job:{id}:cancelled "true" EX 3600, then PUBLISH the
 *                   cancel on imagejobs:cancel. Reply OK once Redis has
 *                   acknowledged both; ERROR -EAGAIN at once while Redis is
 *                   unreachable (the cancel is then queued and written when
 *                   Redis returns); ERROR -EINVAL for a malformed request;
 *                   ERROR -EIO when Redis answered with an error.
 *   REDIS_FLAG_GET  GET job:{id}:cancelled. Reply REDIS_FLAG {set: value is
 *                   "true"}, or ERROR -EAGAIN while Redis is unreachable.
 *   HEALTH_CHECK    Reply HEALTH {ok: both connections up and subscribed}.
 * Job ids are UUIDs, lowercased before they reach Redis. A REDIS_CANCEL with
 * mode NULL means "immediate"; requested_at_us 0 means "now".
 *
 * Events it publishes on the bus topic "cancel" (JOB_CANCEL):
 *   - every cancel that *another* instance published on imagejobs:cancel
 *     (cancels of this instance are skipped: its http actor already put them
 *     on the local bus);
 *   - {job_id NULL, mode "recheck"} whenever the subscription comes back
 *     after a time without it (a lost connection, or Redis down at start):
 *     cancels may have been missed, generators re-read them from the store.
 *
 * The channel's payload is one line of four fields separated by one space:
 *
 *   <jobId> <mode> <requested_at_us> <instance>
 *   550e8400-e29b-41d4-a716-446655440000 immediate 1764158400123456 host-a
 *
 * jobId a canonical UUID; mode "immediate" or "after_current_image";
 * requested_at_us decimal µs since the epoch (1 .. year 2100); instance 1 to
 * 63 printable ASCII characters, no space. Anything else is logged and
 * dropped.
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
 * not wait for Redis: when Redis is down it keeps retrying with backoff and
 * logs each change of state once. Returns NULL with the reason in err for a
 * bad URL or instance name, or when the actor cannot start. Stop it with
 * redis_destroy(). */
actor_t *redis_start(runtime_t *rt, const redis_config_t *cfg, char *err, size_t errlen);

/* Stops the actor and frees it (actor_destroy); NULLs *ap. Requests still
 * waiting on Redis are answered ERROR -EAGAIN before it goes. */
void redis_destroy(actor_t **ap);

#endif
