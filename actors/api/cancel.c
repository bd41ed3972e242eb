/*
 * cancel.c - the cancel routes: the seed's cancel of one job
 * (POST /api/jobs/{id}/cancel, docs/cancel.md), the cancel of many, by
 * ids or by a filter (POST /api/jobs/cancel, docs/api.md), whose answer
 * holds the seed's answer for each job, and the cancel of one combination
 * (POST /api/jobs/{id}/combinations/{n}/cancel).
 */
#include "config.h"

#include "actors/api/api.h"
#include "actors/http/input.h"

#include "messages/limits.h"
#include "runtime/log.h"
#include "runtime/names.h"
#include "runtime/uuid.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char job_id[UUID_STR_LEN];
    cancel_mode_t mode;
    int64_t received_at_us;
} cancel_t;

/* Tells every generator at once, here (bus) and, through the redis actor's
 * bridge, on every other instance, before the store has written the cancel
 * (no waiting on the store's reply, whatever it says): the PostgreSQL round
 * trip (behind whatever else the store's pipeline holds) is not in the time
 * to stop. A generator that stops records the cancel itself (TASK_STOPPED
 * carries it), so the job ends user_cancelled whichever write lands first;
 * for a job that is not running the event finds nobody and costs nothing.
 * The seed's Redis flag follows the store's JOB_CANCEL_RECORDED. */
static void s_publish_cancel(actor_t *self, const cancel_t *cx)
{
    msg_t *ev = msg_new(MSG_JOB_CANCEL);
    msg_set_str(&ev->job_cancel.job_id, cx->job_id);
    ev->job_cancel.mode = cx->mode;
    ev->job_cancel.requested_at_us = cx->received_at_us;
    msg_set_str(&ev->job_cancel.origin, api_config(self)->instance);
    if (actor_publish(self, TOPIC_CANCEL, ev) < 0)
        log_warn("cannot publish the cancel of job %s", cx->job_id);
    msg_destroy(&ev);
}

/* The seed's answer to a cancel of job_id, from the job's status before
 * it (a repeated cancel of a job still stopping reads as running: the
 * answer then says which mode stands); NULL for a status the table does
 * not know. */
static json_t *s_answer(const char *job_id, job_status_t prior, cancel_mode_t stands,
                        cancel_mode_t asked, uint64_t completed, uint64_t total)
{
    const char *prior_name = job_status_name(prior);
    if (prior == JOB_STATUS_PENDING || prior == JOB_STATUS_PROCESSING) {
        const char *message =
            prior == JOB_STATUS_PENDING ? "Job cancelled before it started."
            : stands == CANCEL_MODE_AFTER_CURRENT_IMAGE
                ? "Cancel request sent. Job will stop after current image."
            : asked == CANCEL_MODE_AFTER_CURRENT_IMAGE
                ? "An immediate cancel was already requested. Job will stop at the next step."
                : "Cancel request sent. Job will stop at the next step.";
        return json_pack("{s:b,s:s,s:s,s:s,s:I,s:I}", "success", 1, "message", message, "job_id",
                         job_id, "current_status", prior_name, "completed_images",
                         (json_int_t)completed, "total_images", (json_int_t)total);
    }
    const char *message = prior == JOB_STATUS_COMPLETED        ? "Job already completed"
                          : prior == JOB_STATUS_FAILED         ? "Job already failed"
                          : prior == JOB_STATUS_USER_CANCELLED ? "Job already cancelled"
                                                               : NULL;
    if (!message) {
        log_error("job %s has an unknown status '%s'", job_id, prior_name ? prior_name : "?");
        return NULL;
    }
    return json_pack("{s:b,s:s,s:s,s:s,s:I}", "success", 0, "message", message, "job_id", job_id,
                     "job_status", prior_name, "completed_images", (json_int_t)completed);
}

static void s_job_cancelled(actor_t *self, http_exchange_t *x, int status, msg_t *reply, void *arg)
{
    cancel_t *cx = arg;
    if (status == 0 && reply->type == MSG_JOB_CANCEL_KEPT) {
        /* PostgreSQL is unreachable: the store keeps the cancel and writes
         * it on its return; the running generators stop now (the event).
         * Taken, not yet recorded: 202, with what is known. */
        if (x) {
            const char *message =
                reply->job_cancel_kept.mode == CANCEL_MODE_AFTER_CURRENT_IMAGE
                    ? "Cancel request accepted. Job will stop after current image; the cancel is "
                      "recorded when the database is back."
                    : "Cancel request accepted. Job will stop at the next step; the cancel is "
                      "recorded when the database is back.";
            api_json(
                x, 202,
                json_pack("{s:b,s:s,s:s}", "success", 1, "message", message, "job_id", cx->job_id),
                NULL);
        }
        free(cx);
        return;
    }
    if (status != 0 || reply->type != MSG_JOB_CANCEL_RESULT) {
        if (x)
            api_backend_failed(x, status, reply, "Job not found", "database");
        free(cx);
        return;
    }
    const msg_job_cancel_result_t *r = &reply->job_cancel_result;
    if (x) {
        /* the mode that stands: an immediate cancel upgrades an earlier
         * after_current_image; a weaker one after it changes nothing */
        cancel_mode_t stands = r->mode != CANCEL_MODE_NONE ? r->mode : cx->mode;
        json_t *doc = s_answer(cx->job_id, r->prior_status, stands, cx->mode, r->completed_images,
                               r->total_images);
        if (doc)
            api_json(x, 200, doc, NULL);
        else
            api_error(x, 500, NULL, "internal error");
    }
    free(cx);
}

void api_job_cancel(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    if (!api_check_id(x, id, "jobId"))
        return;
    /* any Content-Type, or none (the seed's curl): the body is optional */
    char why[256];
    cancel_mode_t mode;
    if (http_input_cancel_mode(rq, &mode, why, sizeof why) < 0) {
        api_error(x, 400, NULL, "%s", why);
        return;
    }
    cancel_t *cx = calloc(1, sizeof *cx);
    if (!cx)
        abort();
    strcpy(cx->job_id, id);
    cx->mode = mode;
    cx->received_at_us = rq->received_at_us;
    msg_t *m = msg_new(MSG_JOB_CANCEL_REQUEST);
    msg_set_str(&m->job_cancel_request.job_id, cx->job_id);
    m->job_cancel_request.mode = mode;
    m->job_cancel_request.received_at_us = cx->received_at_us;
    char by[160];
    api_who(self, x, by, sizeof by);
    msg_set_str(&m->job_cancel_request.reason, "user");
    msg_set_str(&m->job_cancel_request.cancelled_by, by);
    /* a key that sees only its own jobs: the store tells the generators
     * once it knows the job is the key's (docs/security.md) */
    uint64_t scope = m->job_cancel_request.owner = api_scope(self);
    /* the store first, then the event: the store reads the request before
     * any stop the event causes, whenever it can */
    if (api_ask(self, x, api_config(self)->store, &m, s_job_cancelled, cx, "database") < 0) {
        free(cx);
        return;
    }
    if (!scope)
        s_publish_cancel(self, cx);
}

/* ------------------------------------------------------------ many */

typedef struct {
    cancel_mode_t mode;
    int64_t received_at_us;
    bool dry_run;
    json_t *ids; /* the ids asked for, in order (NULL for a filter) */
} many_t;

static void s_many_cancelled(actor_t *self, http_exchange_t *x, int status, msg_t *reply, void *arg)
{
    many_t *mx = arg;
    if (status != 0 || reply->type != MSG_JOB_CANCEL_MANY_RESULT) {
        if (x)
            api_backend_failed(x, status, reply, "Job not found", "database");
        json_decref(mx->ids);
        free(mx);
        return;
    }
    const msg_job_cancel_many_result_t *r = &reply->job_cancel_many_result;
    if (!x) {
        json_decref(mx->ids);
        free(mx);
        return;
    }
    json_t *found = json_loads(r->results ? r->results : "[]", 0, NULL);
    json_t *by_id = json_object(), *jobs = json_array();
    size_t i, cancelled = 0;
    json_t *e;
    json_array_foreach(found, i, e)
    {
        const char *id = json_string_value(json_object_get(e, "job_id"));
        const char *p = json_string_value(json_object_get(e, "prior_status"));
        const char *m = json_string_value(json_object_get(e, "mode"));
        job_status_t prior;
        cancel_mode_t stands = mx->mode;
        if (!id || !p || job_status_parse(p, strlen(p), &prior) < 0)
            continue;
        if (m)
            cancel_mode_parse(m, strlen(m), &stands);
        json_t *a = s_answer(id, prior, stands, mx->mode,
                             (uint64_t)json_integer_value(json_object_get(e, "completed_images")),
                             (uint64_t)json_integer_value(json_object_get(e, "total_images")));
        if (!a)
            continue;
        cancelled += json_is_true(json_object_get(a, "success"));
        if (mx->ids)
            json_object_set_new(by_id, id, a);
        else
            json_array_append_new(jobs, a);
    }
    /* by ids: one answer per id asked for, in its order; unknown ones too */
    json_array_foreach(mx->ids, i, e)
    {
        const char *id = json_string_value(e);
        json_t *a = json_object_get(by_id, id);
        if (a)
            json_array_append(jobs, a);
        else
            json_array_append_new(jobs, json_pack("{s:b,s:s,s:s}", "success", 0, "message",
                                                  "Job not found", "job_id", id));
    }
    json_t *doc = json_pack("{s:I,s:I,s:b,s:o}", "matched", (json_int_t)r->matched, "cancelled",
                            (json_int_t)cancelled, "dry_run", mx->dry_run, "jobs", jobs);
    api_json(x, 200, doc, NULL);
    json_decref(found);
    json_decref(by_id);
    json_decref(mx->ids);
    free(mx);
}

/* POST /api/jobs/cancel: {"job_ids": [...]} or {"filter": {...}}, "mode",
 * "dry_run" (docs/api.md) */
void api_jobs_cancel(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    many_t *mx = calloc(1, sizeof *mx);
    if (!mx)
        abort();
    char why[256];
    msg_t *m = http_input_cancel_many(rq, &mx->ids, why, sizeof why);
    if (!m) {
        api_error(x, 400, NULL, "%s", why);
        free(mx);
        return;
    }
    msg_job_cancel_many_request_t *b = &m->job_cancel_many_request;
    mx->mode = b->mode;
    mx->dry_run = b->dry_run;
    mx->received_at_us = b->received_at_us = rq->received_at_us;
    char by[160];
    api_who(self, x, by, sizeof by);
    msg_set_str(&b->reason, "user");
    msg_set_str(&b->cancelled_by, by);
    b->owner = api_scope(self);
    if (api_ask(self, x, api_config(self)->store, &m, s_many_cancelled, mx, "database") < 0) {
        json_decref(mx->ids);
        free(mx);
    }
}

/* ------------------------------------------------------------ one combination */

typedef struct {
    char job_id[UUID_STR_LEN];
    uint64_t combination;
    cancel_mode_t mode;
    int64_t received_at_us;
} comb_t;

/* The generator holding the combination stops now, here or elsewhere. Sent
 * once the store has marked it (unlike a job's cancel, which goes out at
 * once): the answer then tells this cancel from the stop it causes. A lost
 * event is covered by the mark, which the generator reads at its next
 * recording or lease renewal. */
static void s_publish_combination(actor_t *self, const comb_t *cx, cancel_mode_t mode)
{
    msg_t *ev = msg_new(MSG_COMBINATION_CANCEL);
    msg_set_str(&ev->combination_cancel.job_id, cx->job_id);
    ev->combination_cancel.combination = cx->combination;
    ev->combination_cancel.mode = mode;
    ev->combination_cancel.requested_at_us = cx->received_at_us;
    msg_set_str(&ev->combination_cancel.origin, api_config(self)->instance);
    if (actor_publish(self, TOPIC_CANCEL, ev) < 0)
        log_warn("cannot publish the cancel of %s/%llu", cx->job_id,
                 (unsigned long long)cx->combination);
    msg_destroy(&ev);
}

static void s_combination_cancelled(actor_t *self, http_exchange_t *x, int status, msg_t *reply,
                                    void *arg)
{
    comb_t *cx = arg;
    if (status == 0 && reply->type == MSG_COMBINATION_CANCEL_RESULT
        && reply->combination_cancel_result.prior_running
        && reply->combination_cancel_result.mode != CANCEL_MODE_NONE)
        s_publish_combination(self, cx, reply->combination_cancel_result.mode);
    if (!x) {
        free(cx);
        return;
    }
    if (status != 0 || reply->type != MSG_COMBINATION_CANCEL_RESULT) {
        const char *why = status == 0 && reply->type == MSG_ERROR && reply->error.reason
                              ? reply->error.reason
                              : "";
        api_backend_failed(x, status, reply,
                           strstr(why, "Combination") ? "Combination not found" : "Job not found",
                           "database");
        free(cx);
        return;
    }
    const msg_combination_cancel_result_t *r = &reply->combination_cancel_result;
    bool job_open = r->job_status == JOB_STATUS_PENDING || r->job_status == JOB_STATUS_PROCESSING;
    json_t *doc;
    if (!job_open) {
        /* the job is over: the seed's answer for the job */
        doc = s_answer(cx->job_id, r->job_status, cx->mode, cx->mode, r->completed_images,
                       r->total_images);
    } else if (r->prior_pending || r->prior_running) {
        cancel_mode_t stands = r->mode != CANCEL_MODE_NONE ? r->mode : cx->mode;
        const char *message =
            r->prior_pending ? "Combination cancelled before it started."
            : stands == CANCEL_MODE_AFTER_CURRENT_IMAGE
                ? "Cancel request sent. Combination will stop after current image."
                : "Cancel request sent. Combination will stop at the next step.";
        doc =
            json_pack("{s:b,s:s,s:s,s:I,s:s,s:I,s:I}", "success", 1, "message", message, "job_id",
                      cx->job_id, "combination", (json_int_t)cx->combination, "current_status",
                      r->prior_pending ? "pending" : "processing", "completed_images",
                      (json_int_t)r->completed_images, "total_images", (json_int_t)r->total_images);
    } else {
        char message[64];
        snprintf(message, sizeof message, "Combination already %s",
                 task_outcome_name(r->prior_outcome));
        doc = json_pack("{s:b,s:s,s:s,s:I,s:s,s:I}", "success", 0, "message", message, "job_id",
                        cx->job_id, "combination", (json_int_t)cx->combination, "status",
                        task_outcome_name(r->prior_outcome), "completed_images",
                        (json_int_t)r->completed_images);
    }
    if (doc)
        api_json(x, 200, doc, NULL);
    else
        api_error(x, 500, NULL, "internal error");
    free(cx);
}

/* POST /api/jobs/{id}/combinations/{n}/cancel: that combination stops, the
 * others go on (docs/api.md) */
void api_combination_cancel(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    if (!api_check_id(x, id, "jobId"))
        return;
    /* the n of ".../combinations/{n}/cancel" */
    const char *seg = strstr(rq->path, "/combinations/");
    char *end = NULL;
    unsigned long long n = seg ? strtoull(seg + 14, &end, 10) : 0;
    if (!seg || !end || end == seg + 14 || *end != '/' || !isdigit((unsigned char)seg[14])
        || n >= JOB_COMBINATIONS_MAX) {
        api_error(x, 400, NULL, "combination must be a number from 0 to %d",
                  JOB_COMBINATIONS_MAX - 1);
        return;
    }
    char why[256];
    cancel_mode_t mode;
    if (http_input_cancel_mode(rq, &mode, why, sizeof why) < 0) {
        api_error(x, 400, NULL, "%s", why);
        return;
    }
    comb_t *cx = calloc(1, sizeof *cx);
    if (!cx)
        abort();
    snprintf(cx->job_id, sizeof cx->job_id, "%s", id);
    cx->combination = n;
    cx->mode = mode;
    cx->received_at_us = rq->received_at_us;
    msg_t *m = msg_new(MSG_COMBINATION_CANCEL_REQUEST);
    msg_combination_cancel_request_t *b = &m->combination_cancel_request;
    msg_set_str(&b->job_id, id);
    b->combination = n;
    b->mode = mode;
    b->received_at_us = rq->received_at_us;
    char by[160];
    api_who(self, x, by, sizeof by);
    msg_set_str(&b->cancelled_by, by);
    b->owner = api_scope(self);
    if (api_ask(self, x, api_config(self)->store, &m, s_combination_cancelled, cx, "database")
        < 0) {
        free(cx);
        return;
    }
}
