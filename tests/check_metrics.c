/*
 * check_metrics.c - GET /metrics (docs/operations.md) on a real `imagejobs
 * serve`: every scrape passes Prometheus' `promtool check metrics`
 * (Debian's prometheus package, installed by cmd/imagejobs-local; its
 * absence fails the test), and the counters move as the test does things:
 * a job created, images recorded, a cancel, its propagation and stop
 * timings, the job's end, the HTTP requests by route, a stream open.
 */
#include "config.h"

#include "tests/api_check.h"
#include "tests/fixture.h"
#include "tests/instances.h"
#include "tests/runner.h"
#include "tests/sse_client.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* One scrape (caller frees), checked by promtool. */
static char *s_scrape(int port)
{
    api_response_t r = api_check_call(port, "GET", "/metrics", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    char ctype[128];
    ck_assert_ptr_nonnull(api_header(&r, "Content-Type", ctype, sizeof ctype));
    ck_assert_ptr_nonnull(strstr(ctype, "version=0.0.4"));
    char *text = strndup(r.body, r.body_len);
    api_response_free(&r);
    /* the scrape on promtool's stdin, what it says into a file */
    char *dir = fixture_tmpdir("ij-scrape"), cmd[512], said[300];
    snprintf(said, sizeof said, "%s/promtool.out", dir);
    snprintf(cmd, sizeof cmd, "promtool check metrics > %s 2>&1", said);
    FILE *p = popen(cmd, "w");
    ck_assert_ptr_nonnull(p);
    fputs(text, p);
    int st = pclose(p);
    char out[4096] = "";
    FILE *f = fopen(said, "r");
    if (f) {
        size_t n = fread(out, 1, sizeof out - 1, f);
        out[n] = '\0';
        fclose(f);
    }
    fixture_remove_tree(dir);
    free(dir);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 127,
                  "promtool is not installed (Debian package prometheus): %s", out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "promtool check metrics: %s\n%s", out,
                  text);
    return text;
}

/* The value of the series named exactly `series` ("name" or
 * "name{labels}"); 0 when absent. */
static double s_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; (p = strstr(p, series)); p += n) {
        bool at_line = p == text || p[-1] == '\n';
        if (at_line && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return 0;
}

START_TEST(test_scrapes_pass_promtool_and_the_counters_follow_a_job)
{
    inst_database("check_metrics");
    inst_t *a = inst_start("A", "1", NULL);
    char *before = s_scrape(a->port);
    ck_assert_double_eq(s_value(before, "imagejobs_postgres_up"), 1);
    ck_assert_double_eq(s_value(before, "imagejobs_redis_up"), 1);
    ck_assert_double_gt(s_value(before, "process_resident_memory_bytes"), 1e6);
    ck_assert_double_gt(s_value(before, "process_open_fds"), 3);

    /* a job that runs; a stream on it; a cancel once images are made */
    char *id = inst_create(a, 1, 128, 30, 100);
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/events", id);
    sse_t *s = sse_open(a->port, path, NULL, NULL, 10000);
    ck_assert_int_eq(sse_status(s), 200);
    for (int i = 0; i < 6000; i++) {
        json_t *j = api_check_job(a->port, id);
        json_int_t made = api_check_int(j, "completed_images");
        json_decref(j);
        if (made >= 2)
            break;
        usleep(10000);
    }
    char *during = s_scrape(a->port);
    ck_assert_double_eq(s_value(during, "imagejobs_event_streams_open"), 1);
    ck_assert_double_eq(s_value(during, "imagejobs_combinations_running"), 1);
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    api_response_t r = api_check_call(a->port, "POST", path, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    api_response_free(&r);
    json_t *job = api_check_wait_final(a->port, id, 60, 20);
    json_int_t made = api_check_int(job, "completed_images");
    json_decref(job);
    sse_close(s);
    /* the stream's close is seen by the server's loop: wait for the gauge */
    char *after = NULL;
    for (int i = 0; i < 500; i++) {
        free(after);
        after = s_scrape(a->port);
        if (s_value(after, "imagejobs_event_streams_open") == 0)
            break;
        usleep(10000);
    }
    ck_assert_double_eq(s_value(after, "imagejobs_event_streams_open"), 0);
    ck_assert_double_eq(s_value(after, "imagejobs_jobs_created_total")
                            - s_value(before, "imagejobs_jobs_created_total"),
                        1);
    ck_assert_double_eq(s_value(after, "imagejobs_images_recorded_total")
                            - s_value(before, "imagejobs_images_recorded_total"),
                        (double)made);
    ck_assert_double_eq(s_value(after, "imagejobs_cancels_total"), 1);
    ck_assert_double_eq(s_value(after, "imagejobs_jobs_ended_total{status=\"user_cancelled\"}"), 1);
    ck_assert_double_eq(s_value(after, "imagejobs_combinations_started_total"), 1);
    ck_assert_double_eq(s_value(after, "imagejobs_combinations_stopped_total"), 1);
    ck_assert_double_eq(s_value(after, "imagejobs_combinations_running"), 0);
    ck_assert_double_eq(s_value(after, "imagejobs_cancel_propagation_seconds_count"), 1);
    ck_assert_double_eq(s_value(after, "imagejobs_cancel_stop_seconds_count"), 1);
    ck_assert_double_eq(s_value(after, "imagejobs_cancel_propagation_seconds_bucket{le=\"+Inf\"}"),
                        1);
    ck_assert_double_gt(s_value(after, "imagejobs_generator_busy_seconds_total"), 0);
    ck_assert_double_eq(
        s_value(after,
                "imagejobs_http_requests_total{route=\"/api/jobs/*/cancel\",status=\"200\"}"),
        1);
    ck_assert_double_eq(
        s_value(after,
                "imagejobs_http_requests_total{route=\"/api/jobs/*/events\",status=\"200\"}"),
        1);
    ck_assert_double_ge(
        s_value(after, "imagejobs_http_request_duration_seconds_count{route=\"/api/jobs/*\"}"), 1);
    /* a 404 is counted under the route that answered it */
    r = api_check_call(a->port, "GET", "/api/jobs/00000000-0000-0000-0000-000000000000", NULL,
                       NULL);
    ck_assert_int_eq(r.status, 404);
    api_response_free(&r);
    r = api_check_call(a->port, "GET", "/no/such/path", NULL, NULL);
    api_response_free(&r);
    char *last = s_scrape(a->port);
    ck_assert_double_eq(
        s_value(last, "imagejobs_http_requests_total{route=\"/api/jobs/*\",status=\"404\"}"), 1);
    ck_assert_double_eq(
        s_value(last, "imagejobs_http_requests_total{route=\"none\",status=\"404\"}"), 1);
    free(before);
    free(during);
    free(after);
    free(last);
    free(id);
    inst_cleanup();
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_scrapes_pass_promtool_and_the_counters_follow_a_job);
    suite_add_tcase(s, tc);
    return s;
}

static int s_before(void)
{
    static const char *const need[] = {"IMAGEJOBS_TEST_REDIS", "IMAGEJOBS_TEST_DATABASE",
                                       "IMAGEJOBS_BIN", NULL};
    return fixture_need_env("the metrics tests", need);
}

const test_program_t test_program = {.suite = s_suite, .before = s_before};
