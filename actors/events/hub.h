/*
 * hub.h - the job event streams of the HTTP actor (docs/events.md): every
 * open `GET /api/jobs/{id}/events` and `GET /api/events`, the one ordered
 * feed of durable events they share, and the ephemeral progress and
 * previews.
 *
 * The hub lives on the HTTP actor's loop and is driven by it: the routes
 * hand it requests (hub_open), the actor hands it the bus's job events
 * (hub_on_event, hub_on_progress, hub_on_preview). It asks the store for
 * what PostgreSQL holds (JOB_EVENTS_READ) and never waits: a reply, a
 * timer or a drained client moves it on.
 */
#ifndef IMAGEJOBS_EVENTS_HUB_H
#define IMAGEJOBS_EVENTS_HUB_H

#include <stdbool.h>
#include <stddef.h>

#include "actors/http/server.h"
#include "runtime/actor.h"

typedef struct hub hub_t;

typedef struct {
    const char *store;        /* the store actor's name */
    double request_timeout_s; /* for each read from the store */
    size_t max_streams;       /* open streams past which a new one gets 503 */
    double keepalive_s;       /* a comment after this long of silence */
    /* a stream with more than this queued for its client gets no progress
     * or preview until it drains: the latest of each is held and sent then */
    size_t coalesce_queued;
    /* answers x with a JSON error, as the routes do */
    void (*error)(http_exchange_t *x, int status, const char *message);
    /* the job view's bound in bytes (--view-cache-mb; 0: off) */
    size_t view_bytes;
    /* answers x for a store request that failed (no reply, or an ERROR
     * reply), as the routes do */
    void (*failed)(http_exchange_t *x, int status, const msg_t *reply);
} hub_config_t;

/* Defaults of hub_config_t's zero fields. */
#define HUB_MAX_STREAMS_DEFAULT 10000
#define HUB_KEEPALIVE_S 15.
#define HUB_COALESCE_QUEUED (64 * 1024)

/* A hub on self's loop (cfg copied; store borrowed for the hub's life). */
hub_t *hub_new(actor_t *self, const hub_config_t *cfg);

/* Answers rq with a stream: of job_id's events, or of every job's (job_id
 * NULL). Reads Last-Event-ID from last_event_id (the header, or NULL),
 * ?previews=1 and ?status= from rq. Answers errors itself (400 for bad
 * input, 404 no such job, 503 too many streams or no database, 204 a
 * resume after the job's end). owner: the stream shows only that API
 * key's jobs (0: every job's); another key's job is 404. */
void hub_open(hub_t *hub, http_exchange_t *x, const http_request_t *rq, const char *job_id,
              const char *last_event_id, uint64_t owner);

/* Answers GET /api/jobs/{job_id} (a checked, lower-case id) from the job
 * view when it can, from PostgreSQL when it cannot, never stale
 * (docs/store.md, "The job view and its consistency rule"). owner: the
 * caller's key (0: every job's); another key's job is 404. Only with
 * cfg->view_bytes > 0. */
void hub_job_get(hub_t *hub, http_exchange_t *x, const char *job_id, uint64_t owner);

/* Events from the bus (borrowed). */
void hub_on_event(hub_t *hub, msg_t *msg);
void hub_on_progress(hub_t *hub, msg_t *msg);
void hub_on_preview(hub_t *hub, msg_t *msg);

/* Streams open now (those being opened included). */
size_t hub_streams(const hub_t *hub);

/* An orderly stop: every stream ends now (clients reconnect elsewhere and
 * resume), streams being opened are answered 503, new ones too. */
void hub_shutdown(hub_t *hub);

/* Frees the hub; streams still open are ended. NULLs *hubp. */
void hub_destroy(hub_t **hubp);

#endif
