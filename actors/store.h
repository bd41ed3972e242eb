/*
 * store.h - the job-store actor: PostgreSQL, the source of truth for jobs,
 * their combinations (job_tasks), work claims and images.
 *
 * The actor, named "store", speaks libpq's asynchronous API in pipeline mode
 * inside its own libev loop: nothing it does blocks. It handles JOB_CREATE,
 * JOB_GET, JOB_CANCEL_REQUEST, ATTACHMENT_GET, HEALTH_CHECK (from http) and
 * WORK_REQUEST, IMAGE_READY, TASK_STOPPED, LEASE_RENEW (from generators);
 * messages/messages.def names each reply. Failures are ERROR replies with a
 * negative errno: -EINVAL (refused input), -ENOENT (no such job, attachment,
 * claimable work or claim), -EAGAIN (PostgreSQL unreachable or the
 * connection dropped mid-request: retry later, HTTP 503), -EEXIST (job id
 * taken), -EIO (anything else PostgreSQL refused).
 *
 * Inside: actors/store/store.c (the actor), queries.def (its statements),
 * pgpipe.c (the libpq pipeline engine it runs them on), schema.c
 * (store_migrate). The schema, the statements and why they look the way
 * they do: docs/store.md.
 */
#ifndef IMAGEJOBS_STORE_H
#define IMAGEJOBS_STORE_H

#include <stddef.h>

#include "runtime/actor.h"
#include "runtime/runtime.h"

typedef struct {
    /* libpq conninfo ("host=... dbname=...") or URI; required. */
    const char *conninfo;
    /* This instance's id, written to job_tasks.claimed_by; used when a
     * WORK_REQUEST or LEASE_RENEW names none. NULL: "<hostname>-<pid>". */
    const char *instance;
    /* Claim lease in seconds; <= 0: 15. */
    double lease_s;
} store_config_t;

/* Starts the actor named "store". cfg (and its strings) need only live until
 * this returns. It connects asynchronously (PQconnectStart/PQconnectPoll
 * inside its loop) and retries with backoff (100 ms doubling to 1 s) while
 * PostgreSQL is unreachable, logging one line per state change; start does
 * not fail because the database is down. Requests that arrive while it is
 * down are answered ERROR -EAGAIN at once, and bring the next attempt
 * forward to now (at most one per 0.2 s): it serves again within about a
 * second of PostgreSQL's return. Returns NULL with the reason in err only
 * for a conninfo that cannot parse or an actor that cannot start. Stop it
 * with store_destroy(). */
actor_t *store_start(runtime_t *rt, const store_config_t *cfg, char *err, size_t errlen);

/* Stops the actor once the statements in flight are done (requests still
 * queued are answered -EAGAIN), joins its thread and frees it; NULLs *ap. */
void store_destroy(actor_t **ap);

/* Synchronous schema migration for `imagejobs migrate` and serve start-up
 * (blocking: never call it inside an actor loop). Creates or upgrades the
 * schema idempotently, recording each step in schema_version, inside one
 * transaction under pg_advisory_xact_lock(STORE_MIGRATE_LOCK_KEY), so
 * several instances starting at once migrate once. Every wait is bounded:
 * the connection (3 s unless conninfo sets connect_timeout) and each lock,
 * the advisory one included (2 s): a caller that must stay responsive (to
 * signals) retries instead of hanging. Returns 0, or -1 with the reason in
 * err (PostgreSQL unreachable, the lock held elsewhere for longer, or a
 * schema newer than this binary). */
int store_migrate(const char *conninfo, char *err, size_t errlen);

/* The advisory lock key of store_migrate(): "imagejob" in ASCII. */
#define STORE_MIGRATE_LOCK_KEY "7596553454011015010"

/* The schema version this binary creates. */
#define STORE_SCHEMA_VERSION 12

#endif
