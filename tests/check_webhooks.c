/*
 * check_webhooks.c - webhooks end to end (docs/webhooks.md): real
 * `imagejobs serve` processes on the suite's Redis and a database of the
 * test's own, and a receiver run by the test (tests/receiver.c) that checks
 * every signature with OpenSSL and records every attempt by its
 * Imagejobs-Delivery id. Every wait is for an outcome, polled, with a
 * generous timeout, never a sleep standing for one.
 */
#include "config.h"

#include "tests/api_check.h"
#include "tests/fixture.h"
#include "tests/instances.h"
#include "tests/receiver.h"
#include "tests/runner.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SECRET "s3cret-for-the-tests"
#define MAX_HITS 4096

static rcv_hit_t s_hits[MAX_HITS];

/* A job with a webhook to port (events: a JSON array, or NULL for the
 * default); its id (caller frees). */
static char *s_create(inst_t *in, int port, const char *events, int combos, int images, int steps,
                      int size)
{
    char body[1024], ev[256] = "";
    if (events)
        snprintf(ev, sizeof ev, ",\"events\":%s", events);
    snprintf(body, sizeof body,
             "{\"prompt\":\"a harbour at dawn\",\"combinations\":[{\"seed\":1}%s],"
             "\"images_per_combination\":%d,\"width\":%d,\"height\":%d,\"steps\":%d,"
             "\"webhook\":{\"url\":\"http://127.0.0.1:%d/hooks/x?k=1\"%s}}",
             combos > 1 ? ",{\"seed\":2}" : "", images, size, size, steps, port, ev);
    return inst_post_job(in, body);
}

/* The job's webhook_deliveries count of state. */
static json_int_t s_deliveries(inst_t *in, const char *id, const char *state)
{
    json_t *job = api_check_job(in->port, id);
    json_t *d = json_object_get(job, "webhook_deliveries");
    ck_assert_msg(json_is_object(d), "no webhook_deliveries in the job document");
    json_int_t n = api_check_int(d, state);
    json_decref(job);
    return n;
}

/* Distinct delivery ids of job that got a 200 (at least once: a delivery
 * may arrive again). */
static size_t s_delivered(receiver_t *r, const char *job)
{
    size_t n = rcv_hits(r, s_hits, MAX_HITS), k = 0;
    for (size_t i = 0; i < n && i < MAX_HITS; i++) {
        if (s_hits[i].answered != 200 || strcmp(s_hits[i].job_id, job) != 0)
            continue;
        size_t j = 0;
        while (j < i
               && !(s_hits[j].answered == 200 && !strcmp(s_hits[j].delivery, s_hits[i].delivery)))
            j++;
        k += j == i;
    }
    return k;
}

/* Polls until the receiver has `want` deliveries answered 200 for job. */
static void s_wait_delivered(receiver_t *r, const char *job, size_t want, double timeout_s)
{
    double until = fixture_now() + timeout_s;
    while (s_delivered(r, job) < want) {
        ck_assert_msg(fixture_now() < until, "job %s: %zu of %zu deliveries after %.0f s", job,
                      s_delivered(r, job), want, timeout_s);
        fixture_pause_ms(20);
    }
}

/* Polls until the job's webhook_deliveries has want in state. */
static void s_wait_state(inst_t *in, const char *id, const char *state, json_int_t want,
                         double timeout_s)
{
    double until = fixture_now() + timeout_s;
    while (s_deliveries(in, id, state) != want) {
        ck_assert_msg(fixture_now() < until, "job %s: not %lld %s after %.0f s", id,
                      (long long)want, state, timeout_s);
        fixture_pause_ms(20);
    }
}

static void s_env(const char *base, const char *max)
{
    setenv("IMAGEJOBS_WEBHOOK_SECRET", SECRET, 1);
    setenv("IMAGEJOBS_WEBHOOK_RETRY_BASE", base, 1);
    setenv("IMAGEJOBS_WEBHOOK_RETRY_MAX", max, 1);
}

START_TEST(test_every_event_arrives_signed_and_in_order)
{
    s_env("0.05", "0.5");
    inst_database("check_webhooks");
    receiver_t *r = rcv_start(SECRET);
    ck_assert_ptr_nonnull(r);
    inst_t *a = inst_start("A", "2", "--webhook-allow-private", NULL);
    inst_t *b = inst_start("B", "1", "--webhook-allow-private", NULL);
    enum { JOBS = 4 };
    char *ids[JOBS];
    const char *all = "[\"started\",\"image\",\"completed\",\"cancelled\",\"failed\"]";
    for (int i = 0; i < JOBS - 1; i++)
        ids[i] = s_create(i % 2 ? b : a, rcv_port(r), all, 2, 2, 3, 64);
    ids[JOBS - 1] = s_create(a, rcv_port(r), NULL, 1, 1, 2, 64); /* default: the terminal events */
    size_t want[JOBS] = {6, 6, 6, 1};                            /* started, 4 images, completed */
    for (int i = 0; i < JOBS; i++) {
        json_t *job = api_check_wait_final(a->port, ids[i], 120, 20);
        ck_assert_str_eq(api_check_str(job, "job_status"), "completed");
        json_t *hook = json_object_get(job, "webhook");
        ck_assert_ptr_nonnull(strstr(api_check_str(hook, "url"), "/hooks/x?k=1"));
        ck_assert_int_eq(json_array_size(json_object_get(hook, "events")), i < JOBS - 1 ? 5 : 3);
        json_decref(job);
        s_wait_delivered(r, ids[i], want[i], 60);
        s_wait_state(b, ids[i], "delivered", (json_int_t)want[i], 30);
        ck_assert_int_eq(s_deliveries(a, ids[i], "pending"), 0);
        ck_assert_int_eq(s_deliveries(a, ids[i], "dead"), 0);
    }
    size_t n = rcv_hits(r, s_hits, MAX_HITS);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(s_hits[i].signed_ok, "delivery %s: bad signature", s_hits[i].delivery);
        ck_assert_str_eq(s_hits[i].event, s_hits[i].body_event);
    }
    /* per job, each new delivery comes after the one before it on the event clock */
    for (int j = 0; j < JOBS; j++) {
        long long last = 0;
        const char *first = NULL, *final = NULL;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(s_hits[i].job_id, ids[j]) != 0 || s_hits[i].attempt != 1)
                continue;
            ck_assert_msg(s_hits[i].seq > last, "job %s: event %lld after %lld", ids[j],
                          s_hits[i].seq, last);
            last = s_hits[i].seq;
            if (!first)
                first = s_hits[i].event;
            final = s_hits[i].event;
        }
        ck_assert_str_eq(first, j < JOBS - 1 ? "started" : "completed");
        ck_assert_str_eq(final, "completed");
    }
    rcv_stop(&r);
    for (int i = 0; i < JOBS; i++)
        free(ids[i]);
    inst_cleanup();
}
END_TEST

START_TEST(test_refused_three_times_then_delivered_with_the_same_id)
{
    s_env("0.05", "0.3");
    inst_database("check_webhooks");
    receiver_t *r = rcv_start(SECRET);
    rcv_set(r, 3, 0);
    inst_t *a = inst_start("A", "1", "--webhook-allow-private", NULL);
    char *id = s_create(a, rcv_port(r), "[\"completed\"]", 1, 1, 2, 64);
    s_wait_delivered(r, id, 1, 60);
    size_t n = rcv_hits(r, s_hits, MAX_HITS);
    ck_assert_int_eq(n, 4);
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(s_hits[i].delivery, s_hits[0].delivery);
        ck_assert_int_eq(s_hits[i].attempt, (int)i + 1);
        ck_assert_int_eq(s_hits[i].answered, i < 3 ? 500 : 200);
        ck_assert(s_hits[i].signed_ok);
    }
    s_wait_state(a, id, "delivered", 1, 30);
    rcv_stop(&r);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_still_failing_after_the_retry_window_is_dead)
{
    s_env("0.05", "0.2");
    setenv("IMAGEJOBS_WEBHOOK_RETRY_FOR", "1", 1); /* the 24 h of production, shortened */
    inst_database("check_webhooks");
    receiver_t *r = rcv_start(SECRET);
    rcv_set(r, 1000000, 0); /* 500, always */
    inst_t *a = inst_start("A", "1", "--webhook-allow-private", NULL);
    char *id = s_create(a, rcv_port(r), "[\"completed\"]", 1, 1, 2, 64);
    s_wait_state(a, id, "dead", 1, 60);
    ck_assert_int_eq(s_deliveries(a, id, "pending"), 0);
    size_t n = rcv_hits(r, s_hits, MAX_HITS);
    ck_assert_int_ge(n, 2); /* retried meanwhile, then given up */
    for (size_t i = 0; i < n; i++)
        ck_assert_str_eq(s_hits[i].delivery, s_hits[0].delivery);
    /* given up: no attempt after it is marked dead */
    size_t settled = rcv_hits(r, NULL, 0);
    fixture_pause_ms(1000); /* longer than the longest retry delay (0.2 s) */
    ck_assert_int_eq(rcv_hits(r, NULL, 0), settled);
    unsetenv("IMAGEJOBS_WEBHOOK_RETRY_FOR");
    rcv_stop(&r);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_a_hanging_receiver_delays_no_job_no_cancel_no_other_receiver)
{
    s_env("0.05", "0.5");
    inst_database("check_webhooks");
    receiver_t *hung = rcv_start(SECRET), *other = rcv_start(SECRET);
    rcv_set(hung, 0, -1);
    inst_t *a = inst_start("A", "2", "--webhook-allow-private", "--webhook-timeout", "60", NULL);
    const char *all = "[\"started\",\"image\",\"completed\",\"cancelled\"]";
    char *slow = s_create(a, rcv_port(hung), all, 1, 100, 40, 256);
    double until = fixture_now() + 60;
    while (rcv_hits(hung, NULL, 0) == 0) { /* its "started" is held */
        ck_assert_msg(fixture_now() < until, "the hanging receiver got nothing");
        fixture_pause_ms(10);
    }
    char *quick = s_create(a, rcv_port(other), all, 2, 2, 3, 64);
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", slow);
    api_response_t c = api_check_call(a->port, "POST", path, NULL, NULL);
    ck_assert_int_eq(c.status, 200);
    ck_assert(json_is_true(json_object_get(c.json, "success")));
    api_response_free(&c);
    json_t *job = api_check_wait_final(a->port, slow, 60, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    json_decref(job);
    job = api_check_wait_final(a->port, quick, 60, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "completed");
    json_decref(job);
    s_wait_delivered(other, quick, 6, 60);
    /* meanwhile the hanging one still holds its first request, alone: the
     * job's later events wait behind it (per-job order) */
    ck_assert_int_eq(rcv_hits(hung, s_hits, MAX_HITS), 1);
    ck_assert_int_eq(s_hits[0].answered, 0);
    ck_assert_int_gt(s_deliveries(a, slow, "pending"), 1);
    inst_cleanup(); /* before the receivers: a delivery in flight holds a connection */
    rcv_stop(&hung);
    rcv_stop(&other);
    free(slow);
    free(quick);
}
END_TEST

START_TEST(test_a_killed_instance_delivery_goes_out_from_another)
{
    s_env("0.05", "0.5");
    inst_database("check_webhooks");
    receiver_t *r = rcv_start(SECRET);
    rcv_set(r, 0, 1); /* the first attempt never gets an answer */
    inst_t *a = inst_start("A", "1", "--webhook-allow-private", "--webhook-timeout", "3", NULL);
    char *id = s_create(a, rcv_port(r), NULL, 1, 1, 2, 64);
    double until = fixture_now() + 60;
    while (rcv_hits(r, NULL, 0) == 0) {
        ck_assert_msg(fixture_now() < until, "no delivery from A");
        fixture_pause_ms(5);
    }
    /* the event committed, its delivery is in flight: A dies before it
     * learns the outcome */
    api_kill(a->pid);
    a->pid = 0;
    inst_t *b = inst_start("B", "0", "--webhook-allow-private", "--webhook-timeout", "3", NULL);
    s_wait_delivered(r, id, 1, 60); /* once A's claim has lapsed */
    size_t n = rcv_hits(r, s_hits, MAX_HITS);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(s_hits[1].delivery, s_hits[0].delivery);
    ck_assert_str_eq(s_hits[1].event, "completed");
    s_wait_state(b, id, "delivered", 1, 30);
    rcv_stop(&r);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_a_stopped_instance_gives_its_deliveries_back)
{
    s_env("0.05", "0.5");
    inst_database("check_webhooks");
    receiver_t *r = rcv_start(SECRET);
    rcv_set(r, 0, 1); /* the first attempt never gets an answer */
    /* a lease of 125 s: only a release lets B deliver within the wait below */
    inst_t *a = inst_start("A", "1", "--webhook-allow-private", "--webhook-timeout", "60", NULL);
    char *id = s_create(a, rcv_port(r), NULL, 1, 1, 2, 64);
    double until = fixture_now() + 60;
    while (rcv_hits(r, NULL, 0) == 0) {
        ck_assert_msg(fixture_now() < until, "no delivery from A");
        fixture_pause_ms(5);
    }
    ck_assert_int_eq(api_stop(a->pid, 20), 0);
    a->pid = 0;
    inst_t *b = inst_start("B", "0", "--webhook-allow-private", NULL);
    s_wait_delivered(r, id, 1, 60);
    ck_assert_int_eq(rcv_hits(r, s_hits, MAX_HITS), 2);
    ck_assert_str_eq(s_hits[1].delivery, s_hits[0].delivery);
    s_wait_state(b, id, "delivered", 1, 30);
    rcv_stop(&r);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_a_private_address_is_refused_and_marked_dead)
{
    s_env("0.05", "0.5");
    inst_database("check_webhooks");
    receiver_t *r = rcv_start(SECRET);
    inst_t *a = inst_start("A", "1", NULL);
    char *id = s_create(a, rcv_port(r), "[\"started\",\"completed\"]", 1, 1, 2, 64);
    s_wait_state(a, id, "dead", 2, 60);
    ck_assert_int_eq(s_deliveries(a, id, "delivered"), 0);
    ck_assert_int_eq(rcv_hits(r, NULL, 0), 0); /* nothing was sent */
    rcv_stop(&r);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_a_malformed_webhook_is_refused_at_create)
{
    s_env("0.05", "0.5");
    inst_database("check_webhooks");
    inst_t *a = inst_start("A", "0", NULL);
    static const char *const bad[] = {
        "\"x\"",
        "{}",
        "{\"url\":5}",
        "{\"url\":\"not a url\"}",
        "{\"url\":\"ftp://example.com/x\"}",
        "{\"url\":\"file:///etc/passwd\"}",
        "{\"url\":\"http://\"}",
        "{\"url\":\"example.com/hook\"}",
        "{\"url\":\"https://user:pw@example.com/\"}",
        "{\"url\":\"https://example.com/\",\"events\":[]}",
        "{\"url\":\"https://example.com/\",\"events\":[\"nope\"]}",
        "{\"url\":\"https://example.com/\",\"events\":[\"image\",\"image\"]}",
        "{\"url\":\"https://example.com/\",\"events\":\"image\"}",
        "{\"url\":\"https://example.com/\",\"secret\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char body[512];
        snprintf(body, sizeof body, "{\"prompt\":\"p\",\"webhook\":%s}", bad[i]);
        api_response_t r = api_check_call(a->port, "POST", "/api/jobs",
                                          "Content-Type: application/json\r\n", body);
        ck_assert_msg(r.status == 400, "%s: %d %s", bad[i], r.status, r.body);
        ck_assert_ptr_nonnull(strstr(api_check_str(r.json, "error"), "webhook"));
        api_response_free(&r);
    }
    api_response_t r =
        api_check_call(a->port, "POST", "/api/jobs", "Content-Type: application/json\r\n",
                       "{\"prompt\":\"p\",\"webhook\":{\"url\":\"HTTPS://Example.COM:8443/h\"}}");
    ck_assert_int_eq(r.status, 201);
    json_t *job = api_check_job(a->port, api_check_str(r.json, "job_id"));
    ck_assert_str_eq(api_check_str(json_object_get(job, "webhook"), "url"),
                     "HTTPS://Example.COM:8443/h");
    json_decref(job);
    api_response_free(&r);
    /* no webhook: the fields are null */
    char *plain = inst_create(a, 1, 64, 2, 1);
    job = api_check_job(a->port, plain);
    ck_assert(json_is_null(json_object_get(job, "webhook")));
    ck_assert(json_is_null(json_object_get(job, "webhook_deliveries")));
    json_decref(job);
    free(plain);
    inst_cleanup();
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("webhooks");
    TCase *tc = tcase_create("webhooks");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_every_event_arrives_signed_and_in_order);
    tcase_add_test(tc, test_refused_three_times_then_delivered_with_the_same_id);
    tcase_add_test(tc, test_still_failing_after_the_retry_window_is_dead);
    tcase_add_test(tc, test_a_hanging_receiver_delays_no_job_no_cancel_no_other_receiver);
    tcase_add_test(tc, test_a_killed_instance_delivery_goes_out_from_another);
    tcase_add_test(tc, test_a_stopped_instance_gives_its_deliveries_back);
    tcase_add_test(tc, test_a_private_address_is_refused_and_marked_dead);
    tcase_add_test(tc, test_a_malformed_webhook_is_refused_at_create);
    suite_add_tcase(s, tc);
    return s;
}

static int s_before(void)
{
    static const char *const need[] = {"IMAGEJOBS_TEST_REDIS", "IMAGEJOBS_TEST_DATABASE",
                                       "IMAGEJOBS_BIN", NULL};
    return fixture_need_env("the webhook tests", need);
}

const test_program_t test_program = {.suite = s_suite, .before = s_before};
