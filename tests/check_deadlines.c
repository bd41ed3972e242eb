/*
 * check_deadlines.c - jobs cancelled by their deadlines (docs/api.md), end
 * to end: cancel_after_s (or Cancel-After) on a running job, also when the
 * instance that accepted it was killed, and start_within_s on a job that
 * never got a generator. Real `imagejobs serve` processes; every wait is
 * for an outcome, with a generous timeout, never on time.
 */
#include "config.h"

#include "tests/api_check.h"
#include "tests/fixture.h"
#include "tests/instances.h"
#include "tests/runner.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* POST /api/jobs with body and extra headers; expects want, returns the job
 * id (caller frees) or NULL. */
static char *s_post(inst_t *in, const char *headers, const char *body, int want)
{
    char h[256];
    snprintf(h, sizeof h, "Content-Type: application/json\r\n%s", headers ? headers : "");
    api_response_t r = api_check_call(in->port, "POST", "/api/jobs", h, body);
    ck_assert_msg(r.status == want, "create %s: %d %s", body, r.status, r.body);
    char *id = want == 201 ? strdup(api_check_str(r.json, "job_id")) : NULL;
    api_response_free(&r);
    return id;
}

static void s_assert_deadline_cancel(json_t *job, const char *reason)
{
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    ck_assert_str_eq(api_check_str(job, "cancel_reason"), reason);
    ck_assert_str_eq(api_check_str(job, "cancel_mode"), "immediate");
    ck_assert_int_eq(api_check_int(job, "completed_images"),
                     (json_int_t)json_array_size(json_object_get(job, "generated_attach_ids")));
}

START_TEST(test_cancel_after_stops_a_running_job_even_without_its_instance)
{
    inst_database("check_deadlines");
    inst_t *a = inst_start("A", "2", NULL), *b = inst_start("B", "0", NULL);
    /* body form, accepted by B, which then dies: A's timer takes it */
    char *id = s_post(b, NULL,
                      "{\"prompt\":\"a long night\",\"images_per_combination\":100,"
                      "\"width\":128,\"height\":128,\"steps\":40,\"cancel_after_s\":3}",
                      201);
    json_t *job = api_check_job(b->port, id);
    ck_assert_int_eq(api_check_int(job, "cancel_after_s"), 3);
    ck_assert_ptr_nonnull(json_string_value(json_object_get(job, "cancel_after")));
    json_decref(job);
    api_kill(b->pid);
    b->pid = 0;
    job = api_check_wait_final(a->port, id, 60, 20);
    s_assert_deadline_cancel(job, "deadline");
    ck_assert_int_gt(api_check_int(job, "completed_images"), 0); /* it ran, and kept them */
    json_t *c0 = json_array_get(json_object_get(job, "combinations"), 0);
    ck_assert_str_eq(api_check_str(c0, "status"), "cancelled");
    ck_assert_ptr_nonnull(json_string_value(json_object_get(c0, "cancel_observed_at")));
    json_decref(job);
    free(id);

    /* header form */
    id = s_post(a, "Cancel-After: 2s\r\n",
                "{\"prompt\":\"a long night\",\"images_per_combination\":100,"
                "\"width\":256,\"height\":256,\"steps\":40}",
                201);
    job = api_check_wait_final(a->port, id, 60, 20);
    s_assert_deadline_cancel(job, "deadline");
    ck_assert_int_eq(api_check_int(job, "cancel_after_s"), 2);
    json_decref(job);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_start_within_cancels_a_job_no_generator_took)
{
    inst_database("check_deadlines");
    inst_t *a = inst_start("A", "1", NULL);
    /* the only generator is busy with this one */
    char *busy = inst_create(a, 1, 256, 40, 100); /* minutes of work */
    for (int i = 0; i < 6000; i++) {
        json_t *j = api_check_job(a->port, busy);
        bool go = !strcmp(api_check_str(j, "job_status"), "processing");
        json_decref(j);
        if (go)
            break;
        usleep(5000);
    }
    char *late =
        s_post(a, NULL, "{\"prompt\":\"p\",\"width\":64,\"height\":64,\"start_within_s\":1}", 201);
    json_t *job = api_check_wait_final(a->port, late, 60, 20);
    s_assert_deadline_cancel(job, "not_started");
    ck_assert(json_is_null(json_object_get(job, "started_at")));
    ck_assert_int_eq(api_check_int(job, "completed_images"), 0);
    json_decref(job);
    /* the busy one goes on, untouched */
    job = api_check_job(a->port, busy);
    ck_assert_str_eq(api_check_str(job, "job_status"), "processing");
    ck_assert(json_is_false(json_object_get(job, "cancel_requested")));
    json_decref(job);
    free(busy);
    free(late);
    inst_cleanup();
}
END_TEST

START_TEST(test_malformed_deadlines_are_refused)
{
    inst_database("check_deadlines");
    inst_t *b = inst_start("B", "0", NULL);
    static const struct {
        const char *headers, *body;
    } bad[] = {
        {"Cancel-After: 2x\r\n", "{\"prompt\":\"p\"}"},
        {"Cancel-After: \r\n", "{\"prompt\":\"p\"}"},
        {"Cancel-After: 0s\r\n", "{\"prompt\":\"p\"}"},
        {"Cancel-After: 31d\r\n", "{\"prompt\":\"p\"}"},
        {"Cancel-After: 5m\r\n", "{\"prompt\":\"p\",\"cancel_after_s\":60}"},
        {NULL, "{\"prompt\":\"p\",\"cancel_after_s\":0}"},
        {NULL, "{\"prompt\":\"p\",\"cancel_after_s\":\"5m\"}"},
        {NULL, "{\"prompt\":\"p\",\"start_within_s\":-1}"},
        {NULL, "{\"prompt\":\"p\",\"start_within_s\":99999999}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        s_post(b, bad[i].headers, bad[i].body, 400);
    /* the same duration both ways is fine; 1h30m is 5400 s */
    char *id = s_post(b, "Cancel-After: 1m\r\n", "{\"prompt\":\"p\",\"cancel_after_s\":60}", 201);
    free(id);
    id = s_post(b, "Cancel-After: 1h30m\r\n", "{\"prompt\":\"p\"}", 201);
    json_t *job = api_check_job(b->port, id);
    ck_assert_int_eq(api_check_int(job, "cancel_after_s"), 5400);
    ck_assert(json_is_null(json_object_get(job, "start_within_s")));
    json_decref(job);
    free(id);
    inst_cleanup();
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("deadlines");
    TCase *tc = tcase_create("deadlines");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_cancel_after_stops_a_running_job_even_without_its_instance);
    tcase_add_test(tc, test_start_within_cancels_a_job_no_generator_took);
    tcase_add_test(tc, test_malformed_deadlines_are_refused);
    suite_add_tcase(s, tc);
    return s;
}

static int s_before(void)
{
    static const char *const need[] = {"IMAGEJOBS_TEST_REDIS", "IMAGEJOBS_TEST_DATABASE",
                                       "IMAGEJOBS_BIN", NULL};
    return fixture_need_env("the deadline tests", need);
}

const test_program_t test_program = {.suite = s_suite, .before = s_before};
