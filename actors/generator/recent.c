/*
 * recent.c - the cancel events a generator heard lately (recent.h).
 */
#include "config.h"

#include "actors/generator/recent.h"

#include "runtime/uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW_NS ((int64_t)RECENT_WINDOW_S * 1000000000LL)

void recent_note(recent_t *r, const msg_t *msg, int64_t now_ns)
{
    if (msg->type == MSG_JOB_CANCEL && msg->job_cancel.job_id
        && strlen(msg->job_cancel.job_id) < sizeof r->one[0].job_id) {
        unsigned i = r->next++ % RECENT_MAX;
        snprintf(r->one[i].job_id, sizeof r->one[i].job_id, "%s", msg->job_cancel.job_id);
        r->one[i].mode = msg->job_cancel.mode;
        r->one[i].requested_us = msg->job_cancel.requested_at_us;
        r->one[i].at_ns = now_ns;
    } else if (msg->type == MSG_JOB_CANCEL_MANY && msg->job_cancel_many.job_ids) {
        free(r->many);
        r->many = strdup(msg->job_cancel_many.job_ids);
        r->many_mode = msg->job_cancel_many.mode;
        r->many_requested_us = msg->job_cancel_many.requested_at_us;
        r->many_at_ns = now_ns;
    }
}

bool recent_find(const recent_t *r, const char *job_id, int64_t now_ns, cancel_mode_t *mode,
                 int64_t *requested_us)
{
    for (unsigned i = 0; i < RECENT_MAX; i++)
        if (r->one[i].at_ns && now_ns - r->one[i].at_ns < WINDOW_NS
            && strcmp(r->one[i].job_id, job_id) == 0) {
            *mode = r->one[i].mode;
            *requested_us = r->one[i].requested_us;
            return true;
        }
    if (r->many && now_ns - r->many_at_ns < WINDOW_NS && uuid_list_has(r->many, job_id)) {
        *mode = r->many_mode;
        *requested_us = r->many_requested_us;
        return true;
    }
    return false;
}

void recent_free(recent_t *r)
{
    free(r->many);
    r->many = NULL;
}
