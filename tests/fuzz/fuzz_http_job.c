/*
 * fuzz_http_job.c - libFuzzer harness of the job-create validation
 * (http_input_job, actors/http/input.c): the input is the body of a POST
 * /api/jobs with Content-Type application/json. Never a crash; a refusal
 * has a reason and a 4xx status, an acceptance a JOB_CREATE whose fields
 * are within the documented limits.
 */
#include "config.h"

#include "actors/http/input.h"
#include "messages/limits.h"
#include "runtime/log.h"
#include "tests/fuzz/request.h"

#include <stdio.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    return 0;
}

static void s_fail(const char *what)
{
    fprintf(stderr, "http_input_job: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    http_request_t rq;
    request_make(&rq, "/api/jobs", data, size);
    char job_id[UUID_STR_LEN], why[256] = "";
    uint64_t total = 0;
    int status = 0;
    msg_t *m = http_input_job(&rq, job_id, &total, &status, why, sizeof why);
    if (!m) {
        if (!why[0] || status < 400 || status > 599)
            s_fail("a refusal without a reason or an error status");
    } else {
        const msg_job_create_t *c = &m->job_create;
        if (m->type != MSG_JOB_CREATE || !c->job_id || !uuid_valid(c->job_id) || !c->prompt
            || !c->combinations)
            s_fail("an accepted job without its id, prompt or combinations");
        if (c->width < JOB_SIZE_MIN || c->width > JOB_SIZE_MAX || c->height < JOB_SIZE_MIN
            || c->height > JOB_SIZE_MAX || c->steps < JOB_STEPS_MIN || c->steps > JOB_STEPS_MAX
            || c->images_per_combination < 1 || c->images_per_combination > JOB_IMAGES_MAX)
            s_fail("an accepted job out of the limits");
        if (total < c->images_per_combination
            || total > (uint64_t)JOB_COMBINATIONS_MAX * c->images_per_combination)
            s_fail("total_images out of range");
        msg_destroy(&m);
    }
    request_free(&rq);
    return 0;
}
