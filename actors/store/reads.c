/*
 * reads.c - the store's read side: past job events (JOB_EVENTS_READ, for
 * the event streams), pages of the job list (JOB_LIST) and the API keys
 * for the HTTP actor's cache (KEYS_READ). Each is one statement of
 * queries.def that builds its JSON in PostgreSQL.
 */
#include "config.h"

#include "actors/store/events.h"
#include "actors/store/internal.h"
#include "actors/store/result.h"

#include "messages/limits.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JOB_EVENTS_READ -> JOB_EVENTS (docs/events.md) */

void store_on_events_read(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_job_events_read_t *b = &msg->job_events_read;
    bool one = b->job_id && *b->job_id;
    if (one && store_bad_uuid(st, msg, b->job_id, "job_id"))
        return;
    int64_t limit =
        b->limit < 1 || b->limit > EVENTS_READ_MAX ? EVENTS_READ_MAX : (int64_t)b->limit;
    op_t *op = store_op_new(st, one ? OP_events_of_job : OP_events_all, msg, b->job_id);
    if (one)
        pgpipe_param_str(op->group, b->job_id);
    pgpipe_param_i64(op->group, b->after_seq > INT64_MAX ? INT64_MAX : (int64_t)b->after_seq);
    pgpipe_param_i64(op->group, limit);
    if (one)
        pgpipe_param_str(op->group, b->snapshot ? "true" : "false");
    pgpipe_param_u64(op->group, b->owner);
    store_op_submit(op);
}

void store_reply_job_events(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    msg_t *m = store_events_reply(r->results[0]);
    if (!m)
        actor_reply_error(st->self, &op->caller, -ENOENT, "no such job");
    else
        store_send_reply(st, op, &m);
}

/* JOB_LIST -> JOB_LIST_PAGE (docs/api.md) */

/* "pending,processing" as a PostgreSQL text[] literal, each name checked;
 * -1 for a name that is not a status. */
static int s_status_array(const char *list, char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "{");
    while (*list) {
        size_t k = strcspn(list, ",");
        job_status_t status;
        if (job_status_parse(list, k, &status) < 0 || n + 24 >= len)
            return -1;
        n += (size_t)snprintf(out + n, len - n, "%s%s", n > 1 ? "," : "", job_status_name(status));
        list += k;
        list += *list == ',';
    }
    snprintf(out + n, len - n, "}");
    return n > 1 ? 0 : -1;
}

void store_on_job_list(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_job_list_t *b = &msg->job_list;
    char statuses[160];
    bool all = !b->statuses || !*b->statuses;
    if (!all && s_status_array(b->statuses, statuses, sizeof statuses) < 0) {
        actor_caller_t to = actor_caller(msg);
        actor_reply_error(self, &to, -EINVAL, "statuses: not a list of job statuses");
        return;
    }
    if (b->before_us < 0 || (b->before_us > 0 && store_bad_uuid(st, msg, b->before_id, "cursor")))
        return;
    uint64_t limit =
        b->limit < 1 || b->limit > JOB_LIST_LIMIT_MAX ? JOB_LIST_LIMIT_DEFAULT : b->limit;
    op_t *op = store_op_new(st, OP_job_list, msg, NULL);
    pgpipe_param_str(op->group, all ? NULL : statuses);
    pgpipe_param_i64(op->group, b->before_us);
    pgpipe_param_str(op->group, b->before_us > 0 ? b->before_id : NULL);
    pgpipe_param_u64(op->group, limit);
    pgpipe_param_u64(op->group, b->owner);
    op->requested_at_us = (int64_t)limit; /* for the reply: a full page has a next one */
    store_op_submit(op);
}

void store_reply_job_list(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = r->results[0];
    if (PQntuples(res) != 1) {
        actor_reply_error(st->self, &op->caller, -EIO, "job list: no row returned");
        return;
    }
    msg_t *m = msg_new(MSG_JOB_LIST_PAGE);
    msg_set_str(&m->job_list_page.items, store_val(res, 0, 0));
    m->job_list_page.count = (uint64_t)store_i64(res, 0, 1);
    if ((int64_t)m->job_list_page.count == op->requested_at_us)
        msg_set_str(&m->job_list_page.next_cursor, store_val(res, 0, 2));
    store_send_reply(st, op, &m);
}

/* KEYS_READ -> KEYS (docs/security.md) */

void store_on_keys_read(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    op_t *op = store_op_new(st, OP_keys_read, msg, NULL);
    pgpipe_param_u64(op->group, msg->keys_read.version);
    store_op_submit(op);
}

void store_reply_keys(store_t *st, const op_t *op, const pgpipe_reply_t *r)
{
    const PGresult *res = r->results[0];
    if (PQntuples(res) != 1) {
        actor_reply_error(st->self, &op->caller, -EIO, "keys read: no row returned");
        return;
    }
    msg_t *m = msg_new(MSG_KEYS);
    m->keys.version = (uint64_t)store_i64(res, 0, 0);
    msg_set_str(&m->keys.keys, store_val(res, 0, 1));
    store_send_reply(st, op, &m);
}
