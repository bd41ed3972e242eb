/*
 * webhooks.c - the store's side of the webhook outbox (docs/webhooks.md):
 * the webhook actor takes due deliveries (WEBHOOK_CLAIM -> WEBHOOK_CLAIMED)
 * and records how each attempt ended (WEBHOOK_RESULT -> OK).
 *
 * The rows themselves are written by PostgreSQL, in the transaction of the
 * change they report (schema.c, version 9); the retry schedule is computed
 * by the result's statement from the parameters the actor sends, so every
 * instance retries on the schedule it was started with.
 */
#include "config.h"

#include "actors/store/internal.h"
#include "actors/store/result.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>

#define WEBHOOK_CLAIM_MAX 1000

void store_on_webhook_claim(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_webhook_claim_t *b = &msg->webhook_claim;
    if (b->limit < 1 || b->limit > WEBHOOK_CLAIM_MAX || !(b->lease_s > 0 && b->lease_s < 86400)) {
        actor_caller_t to = actor_caller(msg);
        actor_reply_error(self, &to, -EINVAL, "webhook claim: limit 1 to %d, lease in (0, 1 d)",
                          WEBHOOK_CLAIM_MAX);
        return;
    }
    op_t *op = store_op_new(st, OP_webhook_claim, msg, NULL);
    pgpipe_param_str(op->group, b->instance && *b->instance ? b->instance : st->instance);
    pgpipe_param_u64(op->group, b->limit);
    pgpipe_param_f64(op->group, b->lease_s);
    store_op_submit(op);
}

void store_reply_webhook_claimed(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = r->results[0];
    msg_t *m = msg_new(MSG_WEBHOOK_CLAIMED);
    msg_set_str(&m->webhook_claimed.deliveries, PQntuples(res) == 1 ? store_val(res, 0, 0) : "[]");
    m->webhook_claimed.count = PQntuples(res) == 1 ? (uint64_t)store_i64(res, 0, 1) : 0;
    store_send_reply(st, op, &m);
}

static bool s_seconds_ok(double s)
{
    return isfinite(s) && s > 0 && s <= 30 * 86400.;
}

void store_on_webhook_result(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_webhook_result_t *b = &msg->webhook_result;
    if (store_bad_uuid(st, msg, b->delivery_id, "delivery_id"))
        return;
    if (b->http_status > 999 || !s_seconds_ok(b->retry_base_s) || !s_seconds_ok(b->retry_max_s)
        || !s_seconds_ok(b->retry_for_s)) {
        actor_caller_t to = actor_caller(msg);
        actor_reply_error(self, &to, -EINVAL,
                          "webhook result: http_status above 999 or a retry time out of range");
        return;
    }
    op_t *op = store_op_new(st, OP_webhook_done, msg, NULL);
    pgpipe_param_str(op->group, b->delivery_id);
    pgpipe_param_str(op->group, b->instance && *b->instance ? b->instance : st->instance);
    pgpipe_param_str(op->group, webhook_outcome_name(b->outcome));
    pgpipe_param_u64(op->group, b->http_status);
    pgpipe_param_str(op->group, b->error && *b->error ? b->error : NULL);
    pgpipe_param_f64(op->group, b->retry_base_s);
    pgpipe_param_f64(op->group, b->retry_max_s);
    pgpipe_param_f64(op->group, b->retry_for_s);
    store_op_submit(op);
}

void store_reply_webhook_done(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = r->results[0];
    msg_t *m = msg_new(MSG_OK);
    /* no row: the claim's lease ran out and another instance holds it now
     * (or it was settled): that one's outcome counts */
    msg_set_str(&m->ok.detail, PQntuples(res) == 1 ? store_val(res, 0, 0)
                                                   : "not applied: claimed elsewhere or settled");
    store_send_reply(st, op, &m);
}
