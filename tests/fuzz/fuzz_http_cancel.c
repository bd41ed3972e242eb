/*
 * fuzz_http_cancel.c - libFuzzer harness of the cancel body
 * (http_input_cancel_mode, actors/http/input.c): the input is the body of
 * a POST /api/jobs/{id}/cancel, and the same bytes as the body of a POST
 * /api/jobs/cancel (http_input_cancel_many). Never a crash; an accepted
 * body gives a mode that stops something (and, for many, valid ids or a
 * filter), a refused one a reason.
 */
#include "config.h"

#include "actors/http/input.h"
#include "runtime/log.h"
#include "runtime/uuid.h"
#include "tests/fuzz/request.h"

#include <stdio.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    http_request_t rq;
    request_make(&rq, "/api/jobs/0b9f3c2e-6d1a-4c8e-9f7b-2a5d4e6f8a1c/cancel", data, size);
    cancel_mode_t mode = CANCEL_MODE_NONE;
    char why[256] = "";
    int rc = http_input_cancel_mode(&rq, &mode, why, sizeof why);
    if (rc == 0 && mode != CANCEL_MODE_IMMEDIATE && mode != CANCEL_MODE_AFTER_CURRENT_IMAGE) {
        fprintf(stderr, "http_input_cancel_mode: accepted mode %d\n", (int)mode);
        abort();
    }
    if (rc != 0 && (rc != -1 || !why[0])) {
        fprintf(stderr, "http_input_cancel_mode: refused (%d) without a reason\n", rc);
        abort();
    }
    /* the same bytes as the body of POST /api/jobs/cancel */
    json_t *ids = NULL;
    why[0] = '\0';
    msg_t *m = http_input_cancel_many(&rq, &ids, why, sizeof why);
    if (!m && !why[0]) {
        fprintf(stderr, "http_input_cancel_many: refused without a reason\n");
        abort();
    }
    if (m) {
        const msg_job_cancel_many_request_t *b = &m->job_cancel_many_request;
        bool by_ids = b->job_ids != NULL;
        size_t i;
        json_t *e;
        json_array_foreach(ids, i, e) if (!uuid_valid(json_string_value(e))
                                          || !uuid_list_has(b->job_ids, json_string_value(e)))
        {
            fprintf(stderr, "http_input_cancel_many: a job id that is not one\n");
            abort();
        }
        if (by_ids != (ids != NULL) || (by_ids && json_array_size(ids) == 0)
            || b->mode == CANCEL_MODE_NONE) {
            fprintf(stderr, "http_input_cancel_many: accepted an inconsistent request\n");
            abort();
        }
        msg_destroy(&m);
    }
    json_decref(ids);
    request_free(&rq);
    return 0;
}
