/*
 * deadlines.c - jobs cancelled by their deadlines (docs/api.md).
 *
 * Every instance's store looks every DEADLINE_PERIOD_S for jobs whose
 * due_at has passed (the jobs_due index) and takes them FOR UPDATE SKIP
 * LOCKED: whichever instance looks first cancels a job, whoever accepted
 * it, alive or not; a deadline fires within one period of its time. The
 * cancel is a user's immediate cancel in all but its reason: once it has
 * committed, the generators hear of it (one JOB_CANCEL_MANY, on the bus and
 * through the redis actor on every instance) and the seed's flag is set
 * (JOB_CANCEL_RECORDED, for the redis actor).
 */
#include "config.h"

#include "actors/store/internal.h"
#include "actors/store/result.h"

#include "runtime/log.h"
#include "runtime/metrics.h"
#include "runtime/names.h"
#include "runtime/uuid.h"

#include <stdio.h>
#include <string.h>

void store_deadlines_check(store_t *st)
{
    /* the store's gauges move with the same tick (runtime/metrics.h) */
    atomic_store(&metrics.postgres_up, pgpipe_status(st->pipe) == PGPIPE_READY);
    atomic_store(&metrics.store_pipeline_depth, pgpipe_pending(st->pipe));
    store_op_submit(store_op_new(st, OP_deadlines, NULL, NULL));
}

void store_reply_deadlines(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = r->results[0];
    const char *ids = PQntuples(res) == 1 ? store_val(res, 0, 0) : NULL;
    if (!ids || !*ids)
        return;
    int64_t at_us = store_i64(res, 0, 1);
    log_info("deadlines passed: cancelling %s", ids);
    msg_t *ev = msg_new(MSG_JOB_CANCEL_MANY);
    msg_set_str(&ev->job_cancel_many.job_ids, ids);
    ev->job_cancel_many.mode = CANCEL_MODE_IMMEDIATE;
    ev->job_cancel_many.requested_at_us = at_us;
    msg_set_str(&ev->job_cancel_many.origin, st->instance);
    if (actor_publish(st->self, TOPIC_CANCEL, ev) < 0)
        log_warn("cannot publish the deadline cancels");
    msg_destroy(&ev);
    for (const char *p = ids; *p;) {
        size_t k = strcspn(p, ",");
        char id[UUID_STR_LEN];
        snprintf(id, sizeof id, "%.*s", (int)(k < sizeof id - 1 ? k : sizeof id - 1), p);
        msg_t *rec = msg_new(MSG_JOB_CANCEL_RECORDED);
        msg_set_str(&rec->job_cancel_recorded.job_id, id);
        rec->job_cancel_recorded.mode = CANCEL_MODE_IMMEDIATE;
        rec->job_cancel_recorded.requested_at_us = at_us;
        if (actor_publish(st->self, TOPIC_JOB_CANCEL_RECORDED, rec) < 0)
            log_warn("cannot publish the cancel record of %s", id);
        msg_destroy(&rec);
        p += k;
        p += *p == ',';
    }
}
