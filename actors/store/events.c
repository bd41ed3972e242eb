/*
 * events.c - job events leave the store (events.h, docs/events.md).
 *
 * Key constraint: an event goes out only after its transaction committed
 * (pgpipe runs a group's callback at its Sync, once the implicit
 * transaction is over), so a stream never shows an image or a stop that a
 * crash could still undo. Publishing is a non-blocking bus send: nothing
 * on the job's path waits for a reader.
 */
#include "config.h"

#include "actors/store/events.h"
#include "actors/store/result.h"

#include "runtime/clock.h"
#include "runtime/log.h"
#include "runtime/metrics.h"
#include "runtime/names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* This instance's commits, counted (runtime/metrics.h). */
static void s_count(const msg_job_event_t *e)
{
    if (e->kind == JOB_EVENT_IMAGE)
        atomic_fetch_add(&metrics.images_recorded, 1);
    else if (e->kind == JOB_EVENT_END)
        metrics_job_ended(e->job_status == JOB_STATUS_COMPLETED ? METRIC_END_COMPLETED
                          : e->job_status == JOB_STATUS_FAILED  ? METRIC_END_FAILED
                                                                : METRIC_END_CANCELLED);
    else if (e->kind == JOB_EVENT_CREATED)
        atomic_fetch_add(&metrics.jobs_created, 1);
}

void store_events_publish(actor_t *self, const PGresult *numbered)
{
    int rows = PQntuples(numbered);
    if (rows == 0 || PQnfields(numbered) < 7)
        return;
    int64_t now_us = clock_wall_us();
    for (int i = 0; i < rows; i++) {
        const char *kind = store_val(numbered, i, 2);
        msg_t *ev = msg_new(MSG_JOB_EVENT);
        msg_job_event_t *e = &ev->job_event;
        e->seq = (uint64_t)store_i64(numbered, i, 0);
        msg_set_str(&e->job_id, store_val(numbered, i, 1));
        msg_set_str(&e->data, store_val(numbered, i, 4));
        msg_set_str(&e->log, store_val(numbered, i, 5));
        e->owner = (uint64_t)store_i64(numbered, i, 6); /* NULL: 0, none */
        e->recorded_at_us = now_us;
        if (!kind || job_event_kind_parse(kind, strlen(kind), &e->kind) < 0
            || store_status(numbered, i, 3, &e->job_status) < 0 || !e->job_id || !e->data
            || !e->log) {
            log_error("event %llu has an unknown kind or status: not published",
                      (unsigned long long)e->seq);
        } else if ((s_count(e), actor_publish(self, TOPIC_JOB_EVENT, ev) < 0)) {
            /* readers catch up from PostgreSQL (docs/events.md) */
            log_warn("cannot publish event %llu on the bus", (unsigned long long)e->seq);
        }
        msg_destroy(&ev);
    }
}

msg_t *store_events_reply(const PGresult *res)
{
    if (PQntuples(res) != 1 || PQnfields(res) < 6)
        return NULL;
    msg_t *m = msg_new(MSG_JOB_EVENTS);
    msg_job_events_t *e = &m->job_events;
    e->clock = (uint64_t)store_i64(res, 0, 0);
    msg_set_str(&e->events, store_val(res, 0, 1));
    e->count = (uint64_t)store_i64(res, 0, 2);
    msg_set_str(&e->snapshot, store_val(res, 0, 3));
    e->end_seq = (uint64_t)store_i64(res, 0, 4);
    msg_set_str(&e->log, store_val(res, 0, 5));
    return m;
}
