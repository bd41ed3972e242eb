/*
 * batch.c - the cancel of many jobs (JOB_CANCEL_MANY_REQUEST, docs/api.md),
 * and of one combination of a job (COMBINATION_CANCEL_REQUEST).
 *
 * By ids: one transaction (cancel_many, then the combinations nobody runs,
 * then the jobs that end, then the events), whatever the number of jobs.
 * By a filter: first the ids it matches (jobs_match, at most
 * JOB_CANCEL_MANY_MAX, else -EINVAL), then the same transaction with them.
 * Every job that was pending or processing gets what a single cancel gives
 * it: the seed's Redis flag (JOB_CANCEL_RECORDED, one per job, for the
 * redis actor), its events, and the generators' stop: one JOB_CANCEL_MANY,
 * published here just before the transaction is sent (as a single cancel's
 * event goes out beside its write).
 */
#include "config.h"

#include "actors/store/internal.h"
#include "actors/store/result.h"

#include "messages/limits.h"
#include "runtime/log.h"
#include "runtime/metrics.h"
#include "runtime/names.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The cancel of ids ("{a,b,...}", a uuid[] literal), for from's caller
 * and with its request's fields. */
static void s_submit_cancel(store_t *st, const op_t *from, const char *ids)
{
    op_t *op = store_op_new(st, OP_cancel_many, NULL, NULL);
    { /* the caller and the request's fields, from the first step (or the request) */
        op->caller = from->caller;
        op->mode = from->mode;
        op->requested_at_us = from->requested_at_us;
        op->dry_run = from->dry_run;
        memcpy(op->reason, from->reason, sizeof op->reason);
        memcpy(op->by, from->by, sizeof op->by);
    }
    if (!op->dry_run && ids[0] == '{' && ids[1] && ids[1] != '}') {
        /* every generator hears of it now, before the write (as a single
         * cancel): their stops carry the cancel and record it if they come
         * first; the batch then reads those jobs as running */
        size_t n = strlen(ids);
        msg_t *ev = msg_new(MSG_JOB_CANCEL_MANY);
        ev->job_cancel_many.job_ids = strndup(ids + 1, n - 2);
        if (!ev->job_cancel_many.job_ids)
            abort();
        ev->job_cancel_many.mode = op->mode;
        ev->job_cancel_many.requested_at_us = op->requested_at_us;
        msg_set_str(&ev->job_cancel_many.origin, st->instance);
        if (actor_publish(st->self, TOPIC_CANCEL, ev) < 0)
            log_warn("cannot publish a cancel of many jobs");
        msg_destroy(&ev);
    }
    pgpipe_param_str(op->group, ids);
    pgpipe_param_str(op->group, cancel_mode_name(op->mode));
    pgpipe_param_i64(op->group, op->requested_at_us);
    pgpipe_param_str(op->group, op->reason);
    pgpipe_param_str(op->group, op->by[0] ? op->by : NULL);
    pgpipe_param_str(op->group, op->dry_run ? "true" : "false");
    store_op_submit(op);
}

/* Fills op's cancel fields from the request. */
static void s_take(op_t *op, const msg_job_cancel_many_request_t *b)
{
    op->mode = b->mode == CANCEL_MODE_NONE ? CANCEL_MODE_IMMEDIATE : b->mode;
    op->requested_at_us = b->received_at_us;
    op->dry_run = b->dry_run;
    snprintf(op->reason, sizeof op->reason, "%s", b->reason && *b->reason ? b->reason : "user");
    snprintf(op->by, sizeof op->by, "%s", b->cancelled_by ? b->cancelled_by : "");
}

void store_on_cancel_many(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_job_cancel_many_request_t *b = &msg->job_cancel_many_request;
    char *ids = NULL;
    if (b->job_ids && *b->job_ids) {
        /* "a,b,c" (checked by the HTTP actor; PostgreSQL checks again) */
        size_t n = strlen(b->job_ids);
        if (!(ids = malloc(n + 3)))
            abort();
        snprintf(ids, n + 3, "{%s}", b->job_ids);
        if (!b->owner) { /* every job is the caller's: straight to the cancel */
            op_t tmp = {0};
            s_take(&tmp, b);
            tmp.caller = actor_caller(msg);
            s_submit_cancel(st, &tmp, ids);
            free(ids);
            return;
        }
    }
    /* the ids a filter matches, or those of the ids that are the caller's:
     * the event that stops generators names only jobs the caller owns */
    op_t *op = store_op_new(st, OP_jobs_match, msg, NULL);
    s_take(op, b);
    if (ids) {
        pgpipe_param_str(op->group, NULL);
    } else if (b->statuses && *b->statuses) {
        char list[200];
        snprintf(list, sizeof list, "{%s}", b->statuses);
        pgpipe_param_str(op->group, list);
    } else {
        pgpipe_param_str(op->group, NULL);
    }
    pgpipe_param_str(op->group, ids ? NULL : b->created_before);
    pgpipe_param_str(op->group, ids ? NULL : b->created_after);
    pgpipe_param_str(op->group, ids);
    pgpipe_param_u64(op->group, b->owner);
    free(ids);
    store_op_submit(op);
}

void store_reply_jobs_match(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = r->results[0];
    int64_t n = PQntuples(res) == 1 ? store_i64(res, 0, 1) : -1;
    if (n < 0) {
        actor_reply_error(st->self, &op->caller, -EIO, "cancel match: no row returned");
        return;
    }
    if (n > JOB_CANCEL_MANY_MAX) {
        actor_reply_error(st->self, &op->caller, -EINVAL,
                          "the filter matches more than %d jobs: narrow it", JOB_CANCEL_MANY_MAX);
        return;
    }
    s_submit_cancel(st, op, store_val(res, 0, 0));
}

void store_reply_cancel_many(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = r->results[0];
    if (PQntuples(res) != 1) {
        actor_reply_error(st->self, &op->caller, -EIO, "cancel many: no row returned");
        return;
    }
    msg_t *m = msg_new(MSG_JOB_CANCEL_MANY_RESULT);
    msg_job_cancel_many_result_t *b = &m->job_cancel_many_result;
    msg_set_str(&b->results, store_val(res, 0, 0));
    b->matched = (uint64_t)store_i64(res, 0, 1);
    if (!op->dry_run)
        atomic_fetch_add(&metrics.cancels_requested, b->matched);
    msg_set_str(&b->cancelled, store_val(res, 0, 2));
    /* the seed's flag of each job that got the cancel (the redis actor) */
    for (const char *p = op->dry_run ? NULL : b->cancelled; p && *p;) {
        size_t k = strcspn(p, ",");
        char id[UUID_STR_LEN];
        snprintf(id, sizeof id, "%.*s", (int)(k < sizeof id - 1 ? k : sizeof id - 1), p);
        msg_t *ev = msg_new(MSG_JOB_CANCEL_RECORDED);
        msg_set_str(&ev->job_cancel_recorded.job_id, id);
        ev->job_cancel_recorded.mode = op->mode;
        ev->job_cancel_recorded.requested_at_us = op->requested_at_us;
        if (actor_publish(st->self, TOPIC_JOB_CANCEL_RECORDED, ev) < 0)
            log_warn("cannot publish the cancel record of %s", id);
        msg_destroy(&ev);
        p += k;
        p += *p == ',';
    }
    store_send_reply(st, op, &m);
}

/* COMBINATION_CANCEL_REQUEST -> COMBINATION_CANCEL_RESULT (docs/api.md) */

void store_on_combination_cancel(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_combination_cancel_request_t *b = &msg->combination_cancel_request;
    if (store_bad_uuid(st, msg, b->job_id, "job_id"))
        return;
    if (b->combination >= JOB_COMBINATIONS_MAX) {
        actor_caller_t to = actor_caller(msg);
        actor_reply_error(self, &to, -ENOENT, "Combination not found");
        return;
    }
    op_t *op = store_op_new(st, OP_combination_cancel, msg, b->job_id);
    op->mode = b->mode == CANCEL_MODE_NONE ? CANCEL_MODE_IMMEDIATE : b->mode;
    pgpipe_param_str(op->group, b->job_id);
    pgpipe_param_u64(op->group, b->combination);
    pgpipe_param_str(op->group, cancel_mode_name(op->mode));
    pgpipe_param_i64(op->group, b->received_at_us);
    pgpipe_param_str(op->group, b->cancelled_by);
    pgpipe_param_u64(op->group, b->owner);
    store_op_submit(op);
}

void store_reply_combination_cancel(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = r->results[1];
    if (PQntuples(res) != 1) {
        actor_reply_error(st->self, &op->caller, -ENOENT, "Job not found");
        return;
    }
    const char *prior = store_val(res, 0, 1);
    if (!prior) {
        actor_reply_error(st->self, &op->caller, -ENOENT, "Combination not found");
        return;
    }
    msg_t *m = msg_new(MSG_COMBINATION_CANCEL_RESULT);
    msg_combination_cancel_result_t *b = &m->combination_cancel_result;
    if (store_status(res, 0, 0, &b->job_status) < 0) {
        msg_destroy(&m);
        actor_reply_error(st->self, &op->caller, -EIO, "combination cancel: unknown status");
        return;
    }
    b->prior_pending = strcmp(prior, "pending") == 0;
    b->prior_running = strcmp(prior, "processing") == 0;
    if (!b->prior_pending && !b->prior_running
        && task_outcome_parse(prior, strlen(prior), &b->prior_outcome) < 0)
        b->prior_outcome = TASK_OUTCOME_FAILED;
    b->completed_images = (uint64_t)store_i64(res, 0, 2);
    b->total_images = (uint64_t)store_i64(res, 0, 3);
    b->mode = store_mode(res, 0, 5);
    store_send_reply(st, op, &m);
}
