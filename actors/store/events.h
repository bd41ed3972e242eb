/*
 * events.h - the store's side of the job events (docs/events.md): after a
 * transaction committed, the events it numbered go on the bus; a read of
 * past events becomes a JOB_EVENTS reply.
 */
#ifndef IMAGEJOBS_STORE_EVENTS_H
#define IMAGEJOBS_STORE_EVENTS_H

#include <libpq-fe.h>

#include "runtime/actor.h"

/* Publishes each row of numbered (the result of ST_events_number: seq,
 * job_id, kind, job_status, data) as a JOB_EVENT on TOPIC_JOB_EVENT, in
 * order. Call only once the transaction has committed. */
void store_events_publish(actor_t *self, const PGresult *numbered);

/* The JOB_EVENTS reply of an events read (ST_events_of_job or
 * ST_events_all: clock, events, count, snapshot, end seq), or NULL when
 * the result has no row (the job does not exist). */
msg_t *store_events_reply(const PGresult *res);

#endif
