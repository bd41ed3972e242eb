/*
 * fuzz_http_cancel.c - libFuzzer harness of the cancel body
 * (http_input_cancel_mode, actors/http/input.c): the input is the body of
 * a POST /api/jobs/{id}/cancel. Never a crash; an accepted body gives a
 * mode that stops something, a refused one a reason.
 */
#include "config.h"

#include "actors/http/input.h"
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
    request_free(&rq);
    return 0;
}
