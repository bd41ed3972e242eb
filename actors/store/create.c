/*
 * create.c - a job's creation (JOB_CREATE -> JOB_CREATED), once per
 * Idempotency-Key, and a job made from what a cancelled or failed one left
 * (JOB_RESUME -> JOB_RESUMED).
 *
 * With a key, the key's row goes in with the job, in the same statement: a
 * key already taken (within its 24 hours) makes the statement fail with a
 * unique violation, whichever instance took it first, and the create then
 * answers from the key's job: the same job for the same request, -EEXIST
 * (HTTP 409) for another. The job is made once, whatever the races.
 */
#include "config.h"

#include "actors/store/check.h"
#include "actors/store/internal.h"
#include "actors/store/result.h"

#include "runtime/log.h"
#include "runtime/names.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *s_dup(const char *s)
{
    char *p = s ? strdup(s) : NULL;
    if (s && !p)
        abort();
    return p;
}

void store_on_job_create(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_job_create_t *b = &msg->job_create;
    actor_caller_t to = actor_caller(msg);
    char id[UUID_STR_LEN], why[200];
    size_t n = 0;
    if (b->job_id && *b->job_id) {
        if (store_bad_uuid(st, msg, b->job_id, "job_id"))
            return;
        snprintf(id, sizeof id, "%s", b->job_id);
    } else if (uuid_v4(id) < 0) {
        actor_reply_error(self, &to, -EAGAIN, "cannot make a job id: %s", strerror(errno));
        return;
    }
    if (store_check_job(b, &n, why, sizeof why) < 0) {
        actor_reply_error(self, &to, -EINVAL, "%s", why);
        return;
    }
    bool keyed = b->idempotency_key && *b->idempotency_key;
    op_t *op = store_op_new(st, OP_job_create, msg, id);
    if (keyed) {
        op->key = s_dup(b->idempotency_key);
        op->body = s_dup(b->request_body ? b->request_body : "");
    }
    pgpipe_param_str(op->group, id);
    pgpipe_param_str(op->group, b->prompt);
    pgpipe_param_str(op->group, b->combinations);
    pgpipe_param_u64(op->group, b->images_per_combination);
    pgpipe_param_u64(op->group, b->width);
    pgpipe_param_u64(op->group, b->height);
    pgpipe_param_u64(op->group, b->steps);
    pgpipe_param_i64(op->group, b->priority);
    pgpipe_param_str(op->group, op->key);
    pgpipe_param_str(op->group, op->body ? op->body : "");
    pgpipe_param_u64(op->group, b->cancel_after_s);
    pgpipe_param_u64(op->group, b->start_within_s);
    pgpipe_param_u64(op->group, b->owner);
    op->owner = b->owner;
    pgpipe_param_str(op->group, b->webhook_url && *b->webhook_url ? b->webhook_url : NULL);
    if (b->webhook_url && *b->webhook_url) { /* "a,b" as the array literal {a,b} */
        char events[128];
        snprintf(events, sizeof events, "{%s}", b->webhook_events ? b->webhook_events : "");
        pgpipe_param_str(op->group, events);
    } else {
        pgpipe_param_str(op->group, NULL);
    }
    store_op_submit(op);
}

/* The create was refused by the key's quota or rate limit (ij_key_admit):
 * -EDQUOT with the seconds to wait (HTTP 429, Retry-After), or the key
 * was revoked meanwhile (-EACCES: HTTP 401). */
static bool s_key_refused(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const char *state = r->error ? PQresultErrorField(r->error, PG_DIAG_SQLSTATE) : NULL;
    if (!state || (strcmp(state, "IJ429") != 0 && strcmp(state, "IJ401") != 0))
        return false;
    const char *text = PQresultErrorField(r->error, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(r->error, PG_DIAG_MESSAGE_DETAIL);
    msg_t *m = msg_new(MSG_ERROR);
    m->error.code = strcmp(state, "IJ429") == 0 ? -EDQUOT : -EACCES;
    msg_set_str(&m->error.reason, text ? text : "refused");
    long wait = detail ? strtol(detail, NULL, 10) : 1;
    m->error.retry_after_s = (uint64_t)(wait < 1 ? 1 : wait);
    actor_reply_to(st->self, &op->caller, m);
    msg_destroy(&m);
    return true;
}

/* The create failed because its key is taken. */
static bool s_key_taken(const op_t *op, const pgpipe_reply_t *r)
{
    if (!op->key || !r->error)
        return false;
    const char *state = PQresultErrorField(r->error, PG_DIAG_SQLSTATE);
    const char *constraint = PQresultErrorField(r->error, PG_DIAG_CONSTRAINT_NAME);
    return state && strcmp(state, "23505") == 0 && constraint
           && strcmp(constraint, "idempotency_keys_pkey") == 0;
}

void store_reply_job_created(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    if (s_key_taken(op, r)) {
        /* a new statement: its snapshot sees the row of whoever took the key */
        op_t *look = store_op_new(st, OP_idempotency_lookup, NULL, NULL);
        look->caller = op->caller;
        pgpipe_param_str(look->group, op->key);
        pgpipe_param_str(look->group, op->body);
        pgpipe_param_u64(look->group, op->owner);
        store_op_submit(look);
        return;
    }
    if (s_key_refused(st, op, r) || store_op_failed(st, op, r))
        return;
    const PGresult *res = r->results[2];
    if (PQntuples(res) != 1) {
        actor_reply_error(st->self, &op->caller, -EIO, "job create: no row returned");
        return;
    }
    msg_t *m = msg_new(MSG_JOB_CREATED);
    msg_set_str(&m->job_created.job_id, store_val(res, 0, 0));
    if (store_status(res, 0, 1, &m->job_created.status) < 0) {
        msg_destroy(&m);
        actor_reply_error(st->self, &op->caller, -EIO, "job create: unknown status");
        return;
    }
    m->job_created.total_images = (uint64_t)store_i64(res, 0, 2);
    store_send_reply(st, op, &m);
    store_owner_remember(st, op->job_id, op->owner); /* for its key's cancels */

    /* local generators wake now; the redis actor tells other instances */
    msg_t *ev = msg_new(MSG_WORK_AVAILABLE);
    msg_set_str(&ev->work_available.job_id, op->job_id);
    if (actor_publish(st->self, TOPIC_WORK, ev) < 0)
        log_warn("cannot publish work for %s", op->job_id);
    msg_destroy(&ev);
}

void store_reply_idempotency_lookup(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = r->results[0];
    if (PQntuples(res) != 1) {
        /* taken, then expired or its job deleted in between: rare; a retry works */
        actor_reply_error(st->self, &op->caller, -EAGAIN,
                          "the Idempotency-Key changed hands meanwhile: retry");
        return;
    }
    const char *same = store_val(res, 0, 3);
    if (!same || strcmp(same, "t") != 0) {
        actor_reply_error(st->self, &op->caller, -EEXIST,
                          "Idempotency-Key already used with a different request");
        return;
    }
    msg_t *m = msg_new(MSG_JOB_CREATED);
    msg_set_str(&m->job_created.job_id, store_val(res, 0, 0));
    if (store_status(res, 0, 1, &m->job_created.status) < 0) {
        msg_destroy(&m);
        actor_reply_error(st->self, &op->caller, -EIO, "job create: unknown status");
        return;
    }
    m->job_created.total_images = (uint64_t)store_i64(res, 0, 2);
    m->job_created.replayed = true;
    store_send_reply(st, op, &m);
}

/* JOB_RESUME -> JOB_RESUMED (docs/api.md) */

void store_on_job_resume(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_job_resume_t *b = &msg->job_resume;
    if (store_bad_uuid(st, msg, b->job_id, "job_id")
        || store_bad_uuid(st, msg, b->new_id, "new_id"))
        return;
    op_t *op = store_op_new(st, OP_job_resume, msg, b->new_id);
    pgpipe_param_str(op->group, b->job_id);
    pgpipe_param_str(op->group, b->new_id);
    pgpipe_param_u64(op->group, b->owner);
    store_op_submit(op);
}

void store_reply_job_resumed(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = r->results[0];
    if (PQntuples(res) != 1) {
        actor_reply_error(st->self, &op->caller, -ENOENT, "Job not found");
        return;
    }
    msg_t *m = msg_new(MSG_JOB_RESUMED);
    msg_job_resumed_t *b = &m->job_resumed;
    if (store_status(res, 0, 0, &b->prior_status) < 0) {
        msg_destroy(&m);
        actor_reply_error(st->self, &op->caller, -EIO, "job resume: unknown status");
        return;
    }
    msg_set_str(&b->resumed_by, store_val(res, 0, 1));
    msg_set_str(&b->job_id, store_val(res, 0, 2));
    if (b->job_id) {
        store_status(res, 0, 3, &b->status);
        b->total_images = (uint64_t)store_i64(res, 0, 4);
    }
    bool made = b->job_id != NULL;
    store_send_reply(st, op, &m);
    if (made) { /* its combinations can be claimed now, here and elsewhere */
        msg_t *ev = msg_new(MSG_WORK_AVAILABLE);
        msg_set_str(&ev->work_available.job_id, op->job_id);
        if (actor_publish(st->self, TOPIC_WORK, ev) < 0)
            log_warn("cannot publish work for %s", op->job_id);
        msg_destroy(&ev);
    }
}
