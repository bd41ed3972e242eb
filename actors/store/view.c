/*
 * view.c - the store's side of the job view (docs/store.md, "The job view
 * and its consistency rule"): a job's document with the event clock it was
 * read at (JOB_VIEW_READ), and the event clock alone (EVENT_CLOCK_READ,
 * the view's barrier). Each is one statement of queries.def, so what it
 * returns is one snapshot of the database.
 */
#include "config.h"

#include "actors/store/internal.h"
#include "actors/store/result.h"

#include <errno.h>
#include <string.h>

/* JOB_VIEW_READ -> JOB_VIEW */

void store_on_job_view_read(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    if (store_bad_uuid(st, msg, msg->job_view_read.job_id, "job_id"))
        return;
    op_t *op = store_op_new(st, OP_job_view, msg, NULL);
    pgpipe_param_str(op->group, msg->job_view_read.job_id);
    store_op_submit(op);
}

void store_reply_job_view(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = r->results[0];
    if (PQntuples(res) != 1) {
        actor_reply_error(st->self, &op->caller, -ENOENT, "Job not found");
        return;
    }
    msg_t *m = msg_new(MSG_JOB_VIEW);
    msg_job_view_t *v = &m->job_view;
    msg_set_str(&v->json, store_val(res, 0, 0));
    v->clock = (uint64_t)store_i64(res, 0, 1);
    v->owner = (uint64_t)store_i64(res, 0, 2);
    if (store_status(res, 0, 3, &v->status) < 0) {
        msg_destroy(&m);
        actor_reply_error(st->self, &op->caller, -EIO, "job view read: unknown status");
        return;
    }
    const char *c = store_val(res, 0, 4);
    v->cacheable = c && c[0] == 't';
    msg_set_str(&v->log, store_val(res, 0, 5));
    store_send_reply(st, op, &m);
}

/* EVENT_CLOCK_READ -> EVENT_CLOCK */

void store_on_event_clock_read(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    store_op_submit(store_op_new(st, OP_event_clock, msg, NULL));
}

void store_reply_event_clock(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = r->results[0];
    if (PQntuples(res) != 1) {
        actor_reply_error(st->self, &op->caller, -EIO, "event clock read: no row returned");
        return;
    }
    msg_t *m = msg_new(MSG_EVENT_CLOCK);
    m->event_clock.clock = (uint64_t)store_i64(res, 0, 0);
    msg_set_str(&m->event_clock.log, store_val(res, 0, 1));
    store_send_reply(st, op, &m);
}
