/*
 * store.c - the job-store actor: its requests become groups of prepared
 * statements on one PostgreSQL connection in pipeline mode.
 *
 * Key constraint: the loop never blocks. The connection, its reconnects and
 * the pipeline are pgpipe's (actors/store/pgpipe.c); the statements and the
 * operation each request becomes are the table in actors/store/queries.def.
 * What is left here: check a request before any SQL runs, turn it into its
 * operation's parameters, and build the reply from the results.
 *
 * Down or lost connection: pgpipe answers every queued and in-flight group
 * -EAGAIN with the reason, and refuses new ones until a reconnect (100 ms
 * doubling to 1 s) succeeds; each becomes an ERROR -EAGAIN reply. A request
 * refused so, or a HEALTH_CHECK while down, wakes the pipe: its next
 * attempt starts at once (at most one per 0.2 s), so the store serves again
 * right after PostgreSQL's return instead of at the next retry.
 *
 * The SQL, the schema and the locking order that keeps concurrent instances
 * correct are explained in docs/store.md.
 */
#include "config.h"

#include "actors/store.h"
#include "actors/store/check.h"
#include "actors/store/events.h"
#include "actors/store/internal.h"
#include "actors/store/pgpipe.h"
#include "actors/store/result.h"

#include "runtime/log.h"
#include "runtime/metrics.h"
#include "runtime/names.h"
#include "runtime/uuid.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LEASE_DEFAULT_S 15.
/* One pipeline is one queue: a statement stuck behind a row lock held
 * elsewhere would hold up every request behind it, so lock waits are
 * bounded (the request fails -EAGAIN instead). */
#define SETUP_SQL "SET lock_timeout = '10s'"
#define SETUP_HINT "is the schema migrated? run imagejobs migrate"

/* Parameter types; the leading 0 lets a statement have none. */
#define STATEMENT(id, types, sql) static const Oid s_types_##id[] = {0, S_LIST types};
#define QUERY(id, what, types, flags, group, reply, sql) STATEMENT(id, types, sql)
#include "actors/store/queries.def"

static const pgpipe_stmt_t s_stmts[ST_COUNT] = {
#define STATEMENT(id, types, sql)                                                                  \
    [ST_##id] = {"ij_" #id, sql, (int)(sizeof s_types_##id / sizeof(Oid)) - 1, s_types_##id + 1},
#define QUERY(id, what, types, flags, group, reply, sql) STATEMENT(id, types, sql)
#include "actors/store/queries.def"
};

static const query_t s_queries[OP_COUNT] = {
#define QUERY(id, what, types, flags, group, reply, sql)                                           \
    [OP_##id] = {                                                                                  \
        what, flags, (int)(sizeof((int[]){S_LIST group}) / sizeof(int)), {S_LIST group}, reply},
#include "actors/store/queries.def"
};

/* ------------------------------------------------------------- operations */

/* Stopping: the loop may end once nothing is queued or in flight (the
 * claims generators gave back on their way out are written by then). */
static void s_maybe_stopped(store_t *st)
{
    if (st->pipe && actor_is_stopping(st->self) && pgpipe_pending(st->pipe) == 0
        && (!st->clock_pipe || pgpipe_pending(st->clock_pipe) == 0))
        actor_stop_ready(st->self);
}

/* Answers op with its failed statement's error; true if it had one. A
 * group cut short without an error (fewer results than statements) counts
 * as a lost connection. */
bool store_op_failed(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    if (r->error) {
        char msg[300];
        pgpipe_oneline(msg, sizeof msg, PQresultErrorMessage(r->error));
        const char *state = PQresultErrorField(r->error, PG_DIAG_SQLSTATE);
        int code = store_pg_errno(state);
        if (code == -EIO)
            log_warn("%s failed: %s (SQLSTATE %s)", op->q->what, msg, state ? state : "?");
        actor_reply_error(st->self, &op->caller, code, "%s: %s", op->q->what, msg);
        return true;
    }
    if (r->nresults < r->nstmts) {
        actor_reply_error(st->self, &op->caller, -EAGAIN, "%s: PostgreSQL returned no result",
                          op->q->what);
        return true;
    }
    return false;
}

static void s_op_free(op_t *op)
{
    free(op->key);
    free(op->body);
    free(op);
}

/* An operation answered without PostgreSQL: never submitted. */
static void s_op_drop(op_t *op)
{
    pgpipe_group_free(&op->group);
    s_op_free(op);
}

/* pgpipe's callback: every operation ends here, answered exactly once. */
static bool s_keep(store_t *st, const op_t *op);

static void s_op_done(pgpipe_t *p, const pgpipe_reply_t *r, void *arg)
{
    op_t *op = arg;
    store_t *st = op->st;
    if (r->status == -EAGAIN && (op->q->flags & Q_KEEP) && s_keep(st, op))
        ; /* answered: written when PostgreSQL is back */
    else if (r->status == -ECANCELED)
        actor_reply_error(st->self, &op->caller, -EAGAIN, "%s: the store is stopping", op->q->what);
    else if (r->status < 0)
        actor_reply_error(st->self, &op->caller, -EAGAIN, "%s: %s", op->q->what, r->reason);
    else if ((op->q->flags & Q_OWN_ERRORS) || !store_op_failed(st, op, r)) {
        /* committed: its events go out (docs/events.md) */
        if (op->q->stmts[op->q->nstmts - 1] == ST_events_number && r->nresults == r->nstmts)
            store_events_publish(st->self, r->results[r->nstmts - 1]);
        op->q->reply(st, op, r);
    }
    s_op_free(op);
    s_maybe_stopped(st);
}

/* The operation of kind `kind` answering req; job_id (may be NULL) is kept
 * for the reply. Parameters follow with pgpipe_param_*(op->group, ...). */
op_t *store_op_new(store_t *st, int kind, const msg_t *req, const char *job_id)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        abort();
    op->st = st;
    op->q = &s_queries[kind];
    if (req)
        op->caller = actor_caller(req); /* else nobody waits: the store's own */
    if (job_id)
        snprintf(op->job_id, sizeof op->job_id, "%s", job_id);
    op->group = pgpipe_group_new(op->q->stmts, op->q->nstmts, (op->q->flags & Q_BINARY) ? 1 : 0,
                                 s_op_done, op);
    return op;
}

/* Into the pipeline now if connected, to wait for the first connection if
 * it is under way, else answered -EAGAIN at once. */
void store_op_submit(op_t *op)
{
    store_t *st = op->st;
    /* the view's barrier never queues behind the writes (docs/store.md) */
    pgpipe_t *pipe = (op->q->flags & Q_CLOCK) && st->clock_pipe ? st->clock_pipe : st->pipe;
    if (pgpipe_submit(pipe, &op->group) == 0)
        return;
    if ((op->q->flags & Q_KEEP) && s_keep(st, op)) { /* the group went with the submit */
        s_op_free(op);
        return;
    }
    const char *why = pgpipe_last_error(pipe);
    actor_reply_error(st->self, &op->caller, -EAGAIN, "%s: PostgreSQL unavailable (%s)",
                      op->q->what, why[0] ? why : "connecting");
    s_op_free(op);
}

/* Sends m (consumed) to op's caller. */
void store_send_reply(store_t *st, const op_t *op, msg_t **m)
{
    actor_reply_to(st->self, &op->caller, *m);
    msg_destroy(m);
}

/* -------------------------------------------------------------- validation */

/* Refuses req (-EINVAL, "<field> is not a UUID") unless s is one; true
 * when it refused. */
bool store_bad_uuid(store_t *st, const msg_t *req, const char *s, const char *field)
{
    if (s && uuid_valid(s))
        return false;
    actor_caller_t to = actor_caller(req);
    actor_reply_error(st->self, &to, -EINVAL, "%s is not a UUID", field);
    return true;
}

/* Refuses req with code and why when bad; returns bad. */
static bool s_refuse_if(store_t *st, const msg_t *req, bool bad, int code, const char *why)
{
    if (bad) {
        actor_caller_t to = actor_caller(req);
        actor_reply_error(st->self, &to, code, "%s", why);
    }
    return bad;
}

/* ---------------------------------------------------------------- handlers */

/* JOB_GET -> JOB_JSON */

static void s_on_job_get(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    if (store_bad_uuid(st, msg, msg->job_get.job_id, "job_id"))
        return;
    op_t *op = store_op_new(st, OP_job_get, msg, NULL);
    pgpipe_param_str(op->group, msg->job_get.job_id);
    pgpipe_param_u64(op->group, msg->job_get.owner);
    store_op_submit(op);
}

/* The first row of the result, or NULL after answering -ENOENT with
 * missing, when it has none. */
static const PGresult *s_one_row(store_t *st, const op_t *op, const PGresult *res,
                                 const char *missing)
{
    if (PQntuples(res) == 1)
        return res;
    actor_reply_error(st->self, &op->caller, -ENOENT, "%s", missing);
    return NULL;
}

void store_reply_job_json(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = s_one_row(st, op, r->results[0], "Job not found");
    if (!res)
        return;
    msg_t *m = msg_new(MSG_JOB_JSON);
    msg_set_str(&m->job_json.json, store_val(res, 0, 0));
    store_send_reply(st, op, &m);
}

/* A cancel that cannot reach PostgreSQL now is kept, not refused: its
 * event has already stopped the running generators, and the user was told
 * it is taken (JOB_CANCEL_KEPT: HTTP 202). It is written as soon as the
 * connection is back, even for a job no generator was running (a pending
 * job). Kept in memory: an instance that dies before PostgreSQL returns
 * takes its kept cancels of pending jobs with it (running ones are
 * recorded by their generators' stops, which retry until they land).
 * false when the store cannot keep it (full): the caller answers -EAGAIN. */
static bool s_keep(store_t *st, const op_t *op)
{
    struct kept_cancel *k = NULL;
    for (size_t i = 0; i < st->nkept && !k; i++)
        if (strcmp(st->kept[i].job_id, op->job_id) == 0)
            k = &st->kept[i];
    if (!k) {
        if (st->nkept >= KEPT_MAX)
            return false;
        if (!st->kept && !(st->kept = calloc(KEPT_MAX, sizeof *st->kept)))
            abort();
        k = &st->kept[st->nkept++];
        snprintf(k->job_id, sizeof k->job_id, "%s", op->job_id);
        k->mode = op->mode;
        k->requested_at_us = op->requested_at_us;
        snprintf(k->reason, sizeof k->reason, "%s", op->reason);
        snprintf(k->by, sizeof k->by, "%s", op->by);
        log_warn("PostgreSQL unavailable: the cancel of %s is kept for its return (%zu kept)",
                 op->job_id, st->nkept);
    } else if (op->mode == CANCEL_MODE_IMMEDIATE) {
        k->mode = CANCEL_MODE_IMMEDIATE; /* a stronger one upgrades it */
    }
    msg_t *m = msg_new(MSG_JOB_CANCEL_KEPT);
    msg_set_str(&m->job_cancel_kept.job_id, op->job_id);
    m->job_cancel_kept.mode = k->mode;
    store_send_reply(st, op, &m);
    return true;
}

static op_t *s_cancel_op(store_t *st, const msg_t *req, const char *job_id, cancel_mode_t mode,
                         int64_t requested_at_us, const char *reason, const char *by);
static void s_owned_cancel(store_t *st, const op_t *op, uint64_t owner);

/* PostgreSQL is back: the kept cancels go first into the pipeline, before
 * any claim (a kept cancel of a pending job lands before a generator here
 * can start it). Nobody waits for their answers; each publishes its
 * JOB_CANCEL_RECORDED like any other. */
static void s_on_connect(pgpipe_t *p, int status, const char *why, void *arg)
{
    store_t *st = arg;
    atomic_store(&metrics.postgres_up, status == 0); /* also at every deadline tick */
    if (status != 0 || st->nkept == 0)
        return;
    log_info("PostgreSQL is back: writing %zu kept cancels", st->nkept);
    size_t n = st->nkept;
    struct kept_cancel *kept = st->kept;
    st->kept = NULL;
    st->nkept = 0;
    for (size_t i = 0; i < n; i++)
        store_op_submit(s_cancel_op(st, NULL, kept[i].job_id, kept[i].mode, kept[i].requested_at_us,
                                    kept[i].reason, kept[i].by));
    free(kept);
}

/* JOB_CANCEL_REQUEST -> JOB_CANCEL_RESULT: the cancel statement, then the
 * combinations nobody runs are ended and the job finished if none runs. */

static void s_on_job_cancel(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_job_cancel_request_t *b = &msg->job_cancel_request;
    if (store_bad_uuid(st, msg, b->job_id, "job_id"))
        return;
    cancel_mode_t mode = b->mode == CANCEL_MODE_NONE ? CANCEL_MODE_IMMEDIATE : b->mode;
    const char *reason = b->reason && *b->reason ? b->reason : "user";
    if (!b->owner) {
        /* the HTTP actor has told the generators already */
        store_op_submit(
            s_cancel_op(st, msg, b->job_id, mode, b->received_at_us, reason, b->cancelled_by));
        return;
    }
    /* a key's cancel: the job must be its own before anything stops */
    op_t *op = store_op_new(st, OP_job_owned, msg, b->job_id);
    op->mode = mode;
    op->requested_at_us = b->received_at_us;
    op->owner = b->owner;
    snprintf(op->reason, sizeof op->reason, "%s", reason);
    snprintf(op->by, sizeof op->by, "%s", b->cancelled_by ? b->cancelled_by : "");
    uint64_t known;
    if (store_owner_known(st, b->job_id, &known)) { /* no read needed */
        s_owned_cancel(st, op, known);
        s_op_drop(op);
        return;
    }
    pgpipe_param_str(op->group, b->job_id);
    store_op_submit(op);
}

void store_reply_job_owned(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    if (!s_one_row(st, op, r->results[0], "Job not found"))
        return;
    uint64_t owner = (uint64_t)store_i64(r->results[0], 0, 0);
    store_owner_remember(st, op->job_id, owner);
    s_owned_cancel(st, op, owner);
}

/* A key's cancel of a job whose owner is known: another key's is no job;
 * the key's own is told to every generator now (as the HTTP actor tells
 * them of an unrestricted one), then written. */
static void s_owned_cancel(store_t *st, const op_t *op, uint64_t owner)
{
    if (owner != op->owner) {
        actor_reply_error(st->self, &op->caller, -ENOENT, "Job not found");
        return;
    }
    msg_t *ev = msg_new(MSG_JOB_CANCEL);
    msg_set_str(&ev->job_cancel.job_id, op->job_id);
    ev->job_cancel.mode = op->mode;
    ev->job_cancel.requested_at_us = op->requested_at_us;
    msg_set_str(&ev->job_cancel.origin, st->instance);
    if (actor_publish(st->self, TOPIC_CANCEL, ev) < 0)
        log_warn("cannot publish the cancel of job %s", op->job_id);
    msg_destroy(&ev);
    op_t *cancel =
        s_cancel_op(st, NULL, op->job_id, op->mode, op->requested_at_us, op->reason, op->by);
    cancel->caller = op->caller;
    store_op_submit(cancel);
}

/* The cancel statement for job_id, answering req (NULL: nobody waits). */
static op_t *s_cancel_op(store_t *st, const msg_t *req, const char *job_id, cancel_mode_t mode,
                         int64_t requested_at_us, const char *reason, const char *by)
{
    op_t *op = store_op_new(st, OP_job_cancel, req, job_id);
    op->mode = mode;
    op->requested_at_us = requested_at_us;
    snprintf(op->reason, sizeof op->reason, "%s", reason ? reason : "user");
    snprintf(op->by, sizeof op->by, "%s", by ? by : "");
    pgpipe_param_str(op->group, job_id);
    pgpipe_param_str(op->group, cancel_mode_name(mode));
    pgpipe_param_i64(op->group, requested_at_us);
    pgpipe_param_str(op->group, op->reason);
    pgpipe_param_str(op->group, op->by[0] ? op->by : NULL);
    return op;
}

void store_reply_job_cancel_result(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = s_one_row(st, op, r->results[0], "Job not found");
    if (!res)
        return;
    msg_t *m = msg_new(MSG_JOB_CANCEL_RESULT);
    msg_job_cancel_result_t *b = &m->job_cancel_result;
    msg_set_str(&b->job_id, op->job_id);
    /* a processing job with no combination running ended right here */
    const PGresult *fin = r->results[3]; /* job_finish */
    if (store_status(res, 0, 0, &b->prior_status) < 0
        || (PQntuples(fin) == 1 ? store_status(fin, 0, 0, &b->status)
                                : store_status(res, 0, 1, &b->status))
               < 0) {
        msg_destroy(&m);
        actor_reply_error(st->self, &op->caller, -EIO, "job %s has an unknown status", op->job_id);
        return;
    }
    b->completed_images = (uint64_t)store_i64(res, 0, 2);
    b->total_images = (uint64_t)store_i64(res, 0, 3);
    b->requested_at_us = store_i64(res, 0, 5);
    b->mode = store_mode(res, 0, 4);
    bool accepted =
        b->prior_status == JOB_STATUS_PENDING || b->prior_status == JOB_STATUS_PROCESSING;
    atomic_fetch_add(&metrics.cancels_requested, 1);
    cancel_mode_t standing = b->mode != CANCEL_MODE_NONE ? b->mode : op->mode;
    store_send_reply(st, op, &m); /* b goes with m */

    /* the cancel of a running or pending job has landed: the redis actor
     * sets the seed's flag (a repeated cancel of a job still stopping too) */
    if (accepted) {
        msg_t *ev = msg_new(MSG_JOB_CANCEL_RECORDED);
        msg_set_str(&ev->job_cancel_recorded.job_id, op->job_id);
        ev->job_cancel_recorded.mode = standing;
        ev->job_cancel_recorded.requested_at_us = op->requested_at_us;
        if (actor_publish(st->self, TOPIC_JOB_CANCEL_RECORDED, ev) < 0)
            log_warn("cannot publish the cancel record of %s", op->job_id);
        msg_destroy(&ev);
    }
}

/* ATTACHMENT_GET -> ATTACHMENT */

static void s_on_attachment_get(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    if (store_bad_uuid(st, msg, msg->attachment_get.attach_id, "attach_id"))
        return;
    op_t *op = store_op_new(st, OP_attachment_get, msg, NULL);
    pgpipe_param_str(op->group, msg->attachment_get.attach_id);
    pgpipe_param_u64(op->group, msg->attachment_get.owner);
    store_op_submit(op);
}

void store_reply_attachment(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = s_one_row(st, op, r->results[0], "Attachment not found");
    if (!res)
        return;
    msg_t *m = msg_new(MSG_ATTACHMENT);
    /* binary results: text comes as its bytes, NUL-terminated by libpq */
    msg_set_str(&m->attachment.content_type, PQgetvalue(res, 0, 0));
    msg_set_bin(&m->attachment.bytes, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1));
    store_send_reply(st, op, &m);
}

/* HEALTH_CHECK -> HEALTH: a round trip when connected, the state when not */

static void s_health_reply(store_t *st, const actor_caller_t *to, bool ok, const char *detail)
{
    msg_t *m = msg_new(MSG_HEALTH);
    m->health.ok = ok;
    msg_set_str(&m->health.detail, detail);
    actor_reply_to(st->self, to, m);
    msg_destroy(&m);
}

static void s_on_health(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    pgpipe_status_t status = pgpipe_status(st->pipe);
    if (status != PGPIPE_READY) {
        /* /readyz polls this: the poll that follows PostgreSQL's return
         * should find it connected */
        pgpipe_wake(st->pipe);
        const char *why = pgpipe_last_error(st->pipe);
        char detail[300];
        snprintf(detail, sizeof detail, "PostgreSQL %s%s%s",
                 status == PGPIPE_STARTING ? "connecting" : "unavailable", why[0] ? ": " : "", why);
        actor_caller_t to = actor_caller(msg);
        s_health_reply(st, &to, false, detail);
        return;
    }
    store_op_submit(store_op_new(st, OP_health, msg, NULL));
}

void store_reply_health(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    char detail[300];
    if (r->error || r->nresults < 1 || PQntuples(r->results[0]) != 1) {
        char msg[200];
        pgpipe_oneline(msg, sizeof msg, r->error ? PQresultErrorMessage(r->error) : "no result");
        snprintf(detail, sizeof detail, "PostgreSQL error: %s", msg);
        s_health_reply(st, &op->caller, false, detail);
        return;
    }
    snprintf(detail, sizeof detail, "PostgreSQL ok, schema version %s",
             PQgetvalue(r->results[0], 0, 0));
    s_health_reply(st, &op->caller, true, detail);
}

/* WORK_REQUEST -> WORK_ITEM, or ERROR -ENOENT when nothing is claimable */

static void s_on_work_request(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    const char *inst = msg->work_request.instance;
    op_t *op = store_op_new(st, OP_work_claim, msg, NULL);
    pgpipe_param_str(op->group, inst && *inst ? inst : st->instance);
    pgpipe_param_f64(op->group, st->lease_s);
    store_op_submit(op);
}

void store_reply_work_item(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = s_one_row(st, op, r->results[0], "no claimable work");
    if (!res)
        return;
    msg_t *m = msg_new(MSG_WORK_ITEM);
    msg_work_item_t *b = &m->work_item;
    msg_set_str(&b->job_id, store_val(res, 0, 0));
    b->combination = (uint64_t)store_i64(res, 0, 1);
    msg_set_str(&b->prompt, store_val(res, 0, 2));
    b->seed = (uint64_t)store_i64(res, 0, 3);
    b->width = (uint64_t)store_i64(res, 0, 4);
    b->height = (uint64_t)store_i64(res, 0, 5);
    b->steps = (uint64_t)store_i64(res, 0, 6);
    b->images = (uint64_t)store_i64(res, 0, 7);
    b->next_index = (uint64_t)store_i64(res, 0, 8);
    b->cancel_mode = store_mode(res, 0, 9);
    b->owner = (uint64_t)store_i64(res, 0, 10);
    atomic_fetch_add(&metrics.claims, 1);
    store_send_reply(st, op, &m);
}

/* IMAGE_READY -> IMAGE_RECORDED */

static void s_on_image_ready(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_image_ready_t *b = &msg->image_ready;
    char id[UUID_STR_LEN];
    if (store_bad_uuid(st, msg, b->job_id, "job_id")
        || s_refuse_if(st, msg,
                       b->combination > INT32_MAX || b->image_index > INT32_MAX
                           || b->width > INT32_MAX || b->height > INT32_MAX,
                       -EINVAL, "combination, image_index, width or height out of range")
        || s_refuse_if(st, msg, !b->png.data || b->png.size == 0 || b->png.size > INT32_MAX,
                       -EINVAL, "png is empty"))
        return;
    if (uuid_v4(id) < 0) {
        actor_caller_t to = actor_caller(msg);
        actor_reply_error(self, &to, -EAGAIN, "cannot make an attachment id: %s", strerror(errno));
        return;
    }
    op_t *op = store_op_new(st, OP_image_record, msg, b->job_id);
    pgpipe_param_str(op->group, b->job_id);
    pgpipe_param_u64(op->group, b->combination);
    pgpipe_param_u64(op->group, b->image_index);
    pgpipe_param_str(op->group, id);
    /* the PNG goes to libpq without a copy */
    pgpipe_param_bin_take(op->group, b->png.data, b->png.size);
    b->png.data = NULL;
    b->png.size = 0;
    pgpipe_param_u64(op->group, b->width);
    pgpipe_param_u64(op->group, b->height);
    pgpipe_param_f64(op->group, st->lease_s);
    store_op_submit(op);
}

void store_reply_image_recorded(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    if (PQntuples(r->results[0]) != 1 || PQntuples(r->results[1]) != 1) {
        actor_reply_error(st->self, &op->caller, -ENOENT, "Job not found");
        return;
    }
    const PGresult *res = r->results[1];
    if (store_i64(res, 0, 3) == 0) { /* the combination is not running */
        const char *status = store_val(res, 0, 5);
        if (!status)
            actor_reply_error(st->self, &op->caller, -ENOENT, "job %s has no such combination",
                              op->job_id);
        else
            actor_reply_error(st->self, &op->caller, -ENOENT,
                              "combination not running (it is %s) or image index out of "
                              "range (%s per combination)",
                              status, store_val(res, 0, 4) ? store_val(res, 0, 4) : "?");
        return;
    }
    msg_t *m = msg_new(MSG_IMAGE_RECORDED);
    msg_set_str(&m->image_recorded.attach_id, store_val(res, 0, 0));
    m->image_recorded.completed_images = (uint64_t)store_i64(res, 0, 1);
    m->image_recorded.cancel_mode = store_mode(res, 0, 2);
    store_send_reply(st, op, &m);
}

/* TASK_STOPPED -> OK: the combination's end, then the job's if it was the
 * last one running. */

static void s_on_task_stopped(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_task_stopped_t *b = &msg->task_stopped;
    /* outcome and cancel_mode are in range: the decoder checked them */
    if (store_bad_uuid(st, msg, b->job_id, "job_id")
        || s_refuse_if(st, msg, b->combination > INT32_MAX, -EINVAL, "combination out of range"))
        return;
    op_t *op = store_op_new(st, OP_task_stop, msg, b->job_id);
    pgpipe_param_str(op->group, b->job_id);
    pgpipe_param_u64(op->group, b->combination);
    pgpipe_param_str(op->group, task_outcome_name(b->outcome));
    pgpipe_param_i64(op->group, b->observed_at_us);
    pgpipe_param_i64(op->group, b->stopped_at_us);
    pgpipe_param_str(op->group, b->error && *b->error ? b->error : NULL);
    pgpipe_param_str(op->group, b->instance ? b->instance : "");
    pgpipe_param_i64(op->group, b->cancel_requested_at_us);
    pgpipe_param_str(op->group, store_mode_param(b->cancel_mode));
    op->requested_at_us = b->cancel_requested_at_us;
    op->observed_us = b->observed_at_us;
    op->stopped_us = b->stopped_at_us;
    store_op_submit(op);
}

/* A stop applied: counted, with the generator's cancel timings. */
static void s_count_stop(const op_t *op, const PGresult *res)
{
    atomic_fetch_add(&metrics.stops, 1);
    int64_t busy_us = store_i64(res, 0, 3);
    if (busy_us > 0)
        atomic_fetch_add(&metrics.generator_busy_ns, (uint_fast64_t)busy_us * 1000);
    if (op->observed_us > 0 && op->requested_at_us > 0)
        metrics_observe(&metrics.cancel_propagation,
                        (op->observed_us - op->requested_at_us) * 1000);
    if (op->observed_us > 0 && op->stopped_us >= op->observed_us)
        metrics_observe(&metrics.cancel_stop, (op->stopped_us - op->observed_us) * 1000);
}

void store_reply_task_stopped(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    if (!s_one_row(st, op, r->results[0], "Job not found"))
        return;
    const PGresult *res = r->results[2];
    if (PQntuples(res) != 1) {
        actor_reply_error(st->self, &op->caller, -ENOENT, "job %s has no such combination",
                          op->job_id);
        return;
    }
    char detail[200];
    const char *now = store_val(res, 0, 0);
    if (!now) {
        /* a repeat of a stop already recorded, or a holder whose claim was
         * taken over: nothing to do, and nothing to retry */
        const char *holder = store_val(res, 0, 2);
        snprintf(detail, sizeof detail, "not applied: combination is %s%s%s", PQgetvalue(res, 0, 1),
                 holder ? ", claimed by " : "", holder ? holder : "");
    } else {
        s_count_stop(op, res);
        const PGresult *fin = r->results[4];
        if (PQntuples(fin) == 1)
            snprintf(detail, sizeof detail, "combination %s; job %s", now, store_val(fin, 0, 0));
        else
            snprintf(detail, sizeof detail, "combination %s", now);
    }
    msg_t *m = msg_new(MSG_OK);
    msg_set_str(&m->ok.detail, detail);
    store_send_reply(st, op, &m);
}

/* LEASE_RENEW -> LEASE_STATE, or ERROR -ENOENT when the claim is lost */

static void s_on_lease_renew(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_lease_renew_t *b = &msg->lease_renew;
    if (store_bad_uuid(st, msg, b->job_id, "job_id")
        || s_refuse_if(st, msg, b->combination > INT32_MAX, -EINVAL, "combination out of range"))
        return;
    op_t *op = store_op_new(st, OP_lease_renew, msg, NULL);
    pgpipe_param_str(op->group, b->job_id);
    pgpipe_param_u64(op->group, b->combination);
    pgpipe_param_str(op->group, b->instance && *b->instance ? b->instance : st->instance);
    pgpipe_param_f64(op->group, st->lease_s);
    store_op_submit(op);
}

void store_reply_lease_state(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res =
        s_one_row(st, op, r->results[0], "claim lost: the combination is no longer held here");
    if (!res)
        return;
    msg_t *m = msg_new(MSG_LEASE_STATE);
    m->lease_state.cancel_mode = store_mode(res, 0, 0);
    store_send_reply(st, op, &m);
}

/* --------------------------------------------------------------- lifecycle */

/* The reaper (queries.def: reap_cancelled), on the store's own timer. Two
 * rounds in flight at once (a slow server) do no harm: each skips what the
 * other holds, and what is ended stays ended. */
void store_reply_reaped(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = r->results[0];
    if (PQntuples(res) == 1 && store_i64(res, 0, 0) > 0)
        log_info("ended %lld combinations of cancelled jobs whose holder's lease ran out; "
                 "%lld jobs finished",
                 (long long)store_i64(res, 0, 0), (long long)store_i64(res, 0, 1));
}

static void s_reap_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    store_t *st = w->data;
    if (actor_is_stopping(st->self) || pgpipe_status(st->pipe) != PGPIPE_READY)
        return;
    store_op_submit(store_op_new(st, OP_reap_cancelled, NULL, NULL));
}

static void s_deadlines_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    store_t *st = w->data;
    if (!actor_is_stopping(st->self) && pgpipe_status(st->pipe) == PGPIPE_READY)
        store_deadlines_check(st);
}

static char *s_xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

static int s_init(actor_t *self, void *arg)
{
    const store_config_t *cfg = arg;
    store_t *st = calloc(1, sizeof *st);
    if (!st)
        abort();
    st->self = self;
    st->conninfo = s_xstrdup(cfg->conninfo);
    if (cfg->instance && *cfg->instance) {
        st->instance = s_xstrdup(cfg->instance);
    } else {
        char host[64] = "localhost";
        gethostname(host, sizeof host - 1);
        char buf[96];
        snprintf(buf, sizeof buf, "%s-%ld", host, (long)getpid());
        st->instance = s_xstrdup(buf);
    }
    st->lease_s = cfg->lease_s > 0 ? cfg->lease_s : LEASE_DEFAULT_S;
    snprintf(st->app_name, sizeof st->app_name, "imagejobs-store/%s", st->instance);
    st->pipe_cfg = (pgpipe_config_t){.conninfo = st->conninfo,
                                     .application_name = st->app_name,
                                     .setup_sql = SETUP_SQL,
                                     .stmts = s_stmts,
                                     .nstmts = ST_COUNT,
                                     .setup_hint = SETUP_HINT,
                                     .on_connect = s_on_connect,
                                     .arg = st};
    ev_timer_init(&st->reap, s_reap_cb, st->lease_s / 3, st->lease_s / 3);
    st->reap.data = st;
    ev_timer_init(&st->deadlines, s_deadlines_cb, DEADLINE_PERIOD_S, DEADLINE_PERIOD_S);
    st->deadlines.data = st;
    actor_set_state(self, st);
    char err[256];
    /* a database that is down is no failure: the pipe retries on its own */
    st->pipe = pgpipe_new(actor_loop(self), &st->pipe_cfg, err, sizeof err);
    if (!st->pipe) {
        actor_fail(self, "%s", err);
        actor_set_state(self, NULL);
        free(st->conninfo);
        free(st->instance);
        free(st);
        return -1;
    }
    /* a second connection for the job view's barriers: one tiny statement
     * that must not wait behind a create or a claim in the pipeline */
    snprintf(st->clock_app_name, sizeof st->clock_app_name, "imagejobs-clock/%s", st->instance);
    pgpipe_config_t clock_cfg = st->pipe_cfg;
    clock_cfg.application_name = st->clock_app_name;
    clock_cfg.on_connect = NULL;
    st->clock_pipe = pgpipe_new(actor_loop(self), &clock_cfg, err, sizeof err);
    if (!st->clock_pipe)
        log_warn("no connection of its own for the job view's barriers (%s): they share the "
                 "pipeline",
                 err);
    ev_timer_start(actor_loop(self), &st->reap);
    ev_timer_start(actor_loop(self), &st->deadlines);
    return 0;
}

static void s_fini(actor_t *self)
{
    store_t *st = actor_state(self);
    if (!st)
        return;
    ev_timer_stop(actor_loop(self), &st->reap);
    ev_timer_stop(actor_loop(self), &st->deadlines);
    pgpipe_destroy(&st->pipe); /* what is still queued: "the store is stopping" */
    pgpipe_destroy(&st->clock_pipe);
    if (st->nkept)
        log_warn("%zu kept cancels not written: PostgreSQL did not come back before the stop",
                 st->nkept);
    free(st->kept);
    store_owners_free(st);
    free(st->conninfo);
    free(st->instance);
    free(st);
    actor_set_state(self, NULL);
}

static bool s_stopping(actor_t *self)
{
    store_t *st = actor_state(self);
    return pgpipe_pending(st->pipe) == 0
           && (!st->clock_pipe || pgpipe_pending(st->clock_pipe) == 0);
}

static const actor_spec_t s_spec = {
    .init = s_init,
    .stopping = s_stopping,
    .fini = s_fini,
    .handlers =
        {
            [MSG_JOB_CREATE] = store_on_job_create,
            [MSG_JOB_RESUME] = store_on_job_resume,
            [MSG_JOB_GET] = s_on_job_get,
            [MSG_JOB_CANCEL_REQUEST] = s_on_job_cancel,
            [MSG_ATTACHMENT_GET] = s_on_attachment_get,
            [MSG_HEALTH_CHECK] = s_on_health,
            [MSG_WORK_REQUEST] = s_on_work_request,
            [MSG_IMAGE_READY] = s_on_image_ready,
            [MSG_TASK_STOPPED] = s_on_task_stopped,
            [MSG_LEASE_RENEW] = s_on_lease_renew,
            [MSG_JOB_EVENTS_READ] = store_on_events_read,
            [MSG_JOB_LIST] = store_on_job_list,
            [MSG_KEYS_READ] = store_on_keys_read,
            [MSG_JOB_CANCEL_MANY_REQUEST] = store_on_cancel_many,
            [MSG_COMBINATION_CANCEL_REQUEST] = store_on_combination_cancel,
            [MSG_WEBHOOK_CLAIM] = store_on_webhook_claim,
            [MSG_WEBHOOK_RESULT] = store_on_webhook_result,
            [MSG_JOB_VIEW_READ] = store_on_job_view_read,
            [MSG_EVENT_CLOCK_READ] = store_on_event_clock_read,
        },
};

actor_t *store_start(runtime_t *rt, const store_config_t *cfg, char *err, size_t errlen)
{
    if (!cfg) {
        snprintf(err, errlen, "no store configuration");
        return NULL;
    }
    if (pgpipe_conninfo_check(cfg->conninfo, err, errlen) < 0)
        return NULL;
    return actor_new(rt, ACTOR_STORE, &s_spec, (void *)cfg, err, errlen);
}

void store_destroy(actor_t **ap)
{
    actor_destroy(ap);
}
