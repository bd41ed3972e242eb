/*
 * resume.c - POST /api/jobs/{id}/resume (docs/api.md): a job that ended
 * cancelled or failed becomes a new job of the images it did not make.
 */
#include "config.h"

#include "actors/api/api.h"

#include "runtime/log.h"
#include "runtime/uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char job_id[UUID_STR_LEN]; /* the original */
} resume_t;

static void s_resumed(actor_t *self, http_exchange_t *x, int status, msg_t *reply, void *arg)
{
    resume_t *rx = arg;
    if (!x) {
        free(rx);
        return;
    }
    if (status != 0 || reply->type != MSG_JOB_RESUMED) {
        api_backend_failed(x, status, reply, "Job not found", "database");
        free(rx);
        return;
    }
    const msg_job_resumed_t *r = &reply->job_resumed;
    if (r->job_id) {
        char location[96];
        snprintf(location, sizeof location, "Location: /api/jobs/%s\r\n", r->job_id);
        api_json(x, 201,
                 json_pack("{s:s,s:s,s:I,s:s}", "job_id", r->job_id, "job_status",
                           job_status_name(r->status), "total_images", (json_int_t)r->total_images,
                           "resumed_from", rx->job_id),
                 location);
    } else if (r->resumed_by) {
        api_json(
            x, 409,
            json_pack("{s:s,s:s}", "error", "Job already resumed", "resumed_by", r->resumed_by),
            NULL);
    } else if (r->prior_status == JOB_STATUS_USER_CANCELLED
               || r->prior_status == JOB_STATUS_FAILED) {
        api_error(x, 409, NULL, "Nothing to resume: every image of the job was made");
    } else {
        api_error(x, 409, NULL, "Job is %s: only a cancelled or failed job can be resumed",
                  job_status_name(r->prior_status));
    }
    free(rx);
}

void api_job_resume(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    if (!api_check_id(x, id, "jobId"))
        return;
    resume_t *rx = calloc(1, sizeof *rx);
    char new_id[UUID_STR_LEN];
    if (!rx || uuid_v4(new_id) < 0) {
        free(rx);
        api_error(x, 500, NULL, "internal error");
        return;
    }
    snprintf(rx->job_id, sizeof rx->job_id, "%s", id);
    msg_t *m = msg_new(MSG_JOB_RESUME);
    msg_set_str(&m->job_resume.job_id, id);
    msg_set_str(&m->job_resume.new_id, new_id);
    m->job_resume.owner = api_scope(self);
    if (api_ask(self, x, api_config(self)->store, &m, s_resumed, rx, "database") < 0)
        free(rx);
}
