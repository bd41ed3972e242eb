/*
 * check_queue.c - the queue as users see it (docs/api.md), end to end: the
 * job list with its filters and cursor, priorities and the claim order,
 * queue positions and ETAs, and the cancel's audit (who, why). Real
 * `imagejobs serve` processes on the suite's Redis and a PostgreSQL
 * database of each test's own; no assertion on time.
 */
#include "config.h"

#include "tests/api_check.h"
#include "tests/fixture.h"
#include "tests/instances.h"
#include "tests/runner.h"

#include <check.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A job of one combination with that priority ("" for none). */
static char *s_create_priority(inst_t *in, const char *priority)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"prompt\":\"a quiet street\",\"width\":64,\"height\":64,\"steps\":4%s%s}",
             *priority ? ",\"priority\":" : "", priority);
    api_response_t r =
        api_check_call(in->port, "POST", "/api/jobs", "Content-Type: application/json\r\n", body);
    ck_assert_msg(r.status == 201, "create: %d %s", r.status, r.body);
    char *id = strdup(api_check_str(r.json, "job_id"));
    api_response_free(&r);
    return id;
}

static api_response_t s_list(inst_t *in, const char *query)
{
    char path[600];
    snprintf(path, sizeof path, "/api/jobs%s", query);
    return api_check_call(in->port, "GET", path, NULL, NULL);
}

/* Every page of the list (query: "?limit=N&status=..."), appended to ids. */
static int s_list_all(inst_t *in, const char *query, json_t *ids)
{
    char q[512], cursor[128] = "";
    int pages = 0;
    for (;;) {
        snprintf(q, sizeof q, "%s%s%s", query, cursor[0] ? "&cursor=" : "", cursor);
        api_response_t r = s_list(in, q);
        ck_assert_msg(r.status == 200, "list %s: %d %s", q, r.status, r.body);
        json_t *jobs = json_object_get(r.json, "jobs");
        ck_assert(json_is_array(jobs));
        ck_assert_int_eq(api_check_int(r.json, "count"), (json_int_t)json_array_size(jobs));
        size_t i;
        json_t *j;
        json_array_foreach(jobs, i, j)
        {
            /* a summary: these fields, and nothing of the document's bulk */
            static const char *const keys[] = {"job_id",           "job_status",       "prompt",
                                               "completed_images", "total_images",     "created_at",
                                               "finished_at",      "cancel_requested", "priority"};
            for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
                ck_assert_msg(json_object_get(j, keys[k]), "no %s in a list item", keys[k]);
            ck_assert_ptr_null(json_object_get(j, "generated_attach_ids"));
            json_array_append(ids, json_object_get(j, "job_id"));
        }
        pages++;
        json_t *next = json_object_get(r.json, "next_cursor");
        if (json_is_null(next)) {
            api_response_free(&r);
            return pages;
        }
        snprintf(cursor, sizeof cursor, "%s", json_string_value(next));
        api_response_free(&r);
    }
}

static bool s_has(json_t *ids, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) if (!strcmp(json_string_value(v), id)) return true;
    return false;
}

static void s_cancel(inst_t *in, const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    api_response_t r = api_check_call(in->port, "POST", path, NULL, NULL);
    ck_assert_msg(r.status == 200, "cancel: %d %s", r.status, r.body);
    api_response_free(&r);
}

START_TEST(test_list_is_newest_first_filtered_and_paged)
{
    inst_database("check_queue");
    inst_t *b = inst_start("B", "0", NULL); /* runs nothing: every job stays pending */
    enum { N = 7 };
    char *ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = inst_create(b, 1, 64, 2, 1);
    s_cancel(b, ids[1]);
    s_cancel(b, ids[4]);

    json_t *all = json_array();
    ck_assert_int_eq(s_list_all(b, "?limit=3", all), 3); /* 3 + 3 + 1 */
    ck_assert_int_eq(json_array_size(all), N);
    for (int i = 0; i < N; i++) /* newest first */
        ck_assert_str_eq(json_string_value(json_array_get(all, (size_t)i)), ids[N - 1 - i]);
    json_decref(all);

    json_t *cancelled = json_array();
    s_list_all(b, "?status=user_cancelled", cancelled);
    ck_assert_int_eq(json_array_size(cancelled), 2);
    ck_assert_str_eq(json_string_value(json_array_get(cancelled, 0)), ids[4]);
    ck_assert_str_eq(json_string_value(json_array_get(cancelled, 1)), ids[1]);
    json_decref(cancelled);
    json_t *some = json_array();
    s_list_all(b, "?status=pending,user_cancelled&limit=200", some);
    ck_assert_int_eq(json_array_size(some), N);
    json_decref(some);

    static const char *const bad[] = {"?limit=0",         "?limit=201",
                                      "?limit=x",         "?status=running",
                                      "?cursor=nonsense", "?cursor=12:not-a-uuid"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        api_response_t r = s_list(b, bad[i]);
        ck_assert_msg(r.status == 400, "%s: %d %s", bad[i], r.status, r.body);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(r.json, "error")));
        api_response_free(&r);
    }
    for (int i = 0; i < N; i++)
        free(ids[i]);
    inst_cleanup();
}
END_TEST

START_TEST(test_paging_while_jobs_are_created_skips_none_repeats_none)
{
    inst_database("check_queue");
    inst_t *a = inst_start("A", "0", NULL), *b = inst_start("B", "0", NULL);
    enum { N = 30 };
    char *ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = inst_create(i % 2 ? a : b, 1, 64, 2, 1);
    /* page through B while A creates a job before every page */
    json_t *seen = json_array();
    char q[256], cursor[128] = "";
    int extra = 0;
    for (;;) {
        free(inst_create(a, 1, 64, 2, 1));
        extra++;
        snprintf(q, sizeof q, "?limit=4%s%s", cursor[0] ? "&cursor=" : "", cursor);
        api_response_t r = s_list(b, q);
        ck_assert_int_eq(r.status, 200);
        size_t i;
        json_t *j;
        json_array_foreach(json_object_get(r.json, "jobs"), i, j)
        {
            const char *id = api_check_str(j, "job_id");
            ck_assert_msg(!s_has(seen, id), "job %s on two pages", id);
            json_array_append_new(seen, json_string(id));
        }
        json_t *next = json_object_get(r.json, "next_cursor");
        bool last = json_is_null(next);
        if (!last)
            snprintf(cursor, sizeof cursor, "%s", json_string_value(next));
        api_response_free(&r);
        if (last)
            break;
    }
    for (int i = 0; i < N; i++) {
        ck_assert_msg(s_has(seen, ids[i]), "job %d of those that existed was skipped", i);
        free(ids[i]);
    }
    ck_assert_int_ge(extra, N / 4);
    json_decref(seen);
    inst_cleanup();
}
END_TEST

START_TEST(test_priority_orders_the_claims_and_the_queue)
{
    inst_database("check_queue");
    inst_t *b = inst_start("B", "0", NULL);
    char *low = s_create_priority(b, "-3");
    char *first = s_create_priority(b, "");
    char *second = s_create_priority(b, "0");
    char *high = s_create_priority(b, "5");
    /* claims will go high, first, second, low */
    static const struct {
        int which;
        json_int_t position;
    } want[] = {{3, 0}, {1, 1}, {2, 2}, {0, 3}};
    char *all[] = {low, first, second, high};
    for (size_t i = 0; i < 4; i++) {
        json_t *job = api_check_job(b->port, all[want[i].which]);
        ck_assert_int_eq(api_check_int(job, "queue_position"), want[i].position);
        ck_assert(json_is_null(json_object_get(job, "eta_s"))); /* nothing measured yet */
        json_decref(job);
    }
    json_t *job = api_check_job(b->port, high);
    ck_assert_int_eq(api_check_int(job, "priority"), 5);
    json_decref(job);
    static const char *const bad[] = {"11", "-11", "\"high\"", "1.5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"prompt\":\"p\",\"priority\":%s}", bad[i]);
        api_response_t r = api_check_call(b->port, "POST", "/api/jobs",
                                          "Content-Type: application/json\r\n", body);
        ck_assert_msg(r.status == 400, "priority %s: %d %s", bad[i], r.status, r.body);
        ck_assert_ptr_nonnull(strstr(api_check_str(r.json, "error"), "priority"));
        api_response_free(&r);
    }

    /* one generator on another instance takes them in that order */
    inst_t *a = inst_start("A", "1", NULL);
    const char *order[] = {high, first, second, low};
    char prev[64] = "";
    for (size_t i = 0; i < 4; i++) {
        json_t *done = api_check_wait_final(a->port, order[i], 60, 20);
        ck_assert_str_eq(api_check_str(done, "job_status"), "completed");
        const char *started = api_check_str(done, "started_at");
        ck_assert_msg(strcmp(started, prev) > 0, "job %zu started at %s, before %s", i, started,
                      prev);
        snprintf(prev, sizeof prev, "%s", started);
        ck_assert(json_is_null(json_object_get(done, "queue_position")));
        ck_assert(json_is_null(json_object_get(done, "eta_s")));
        json_decref(done);
    }
    inst_cleanup();
    free(low);
    free(first);
    free(second);
    free(high);
}
END_TEST

START_TEST(test_eta_and_queue_position_follow_the_work)
{
    inst_database("check_queue");
    inst_t *a = inst_start("A", "1", NULL);
    /* images to measure the rate on */
    char *warm = inst_create(a, 1, 64, 4, 3);
    json_decref(api_check_wait_final(a->port, warm, 60, 20));
    free(warm);
    inst_t *b = inst_start("B", "0", NULL);
    ck_assert_int_eq(api_stop(a->pid, 20), 0); /* nothing runs now */
    a->pid = 0;
    char *one = inst_create(b, 2, 512, 50, 4), *two = inst_create(b, 1, 512, 50, 4);
    json_t *j1 = api_check_job(b->port, one), *j2 = api_check_job(b->port, two);
    ck_assert_int_eq(api_check_int(j1, "queue_position"), 0);
    ck_assert_int_eq(api_check_int(j2, "queue_position"), 2); /* one's two combinations first */
    json_t *e1 = json_object_get(j1, "eta_s"), *e2 = json_object_get(j2, "eta_s");
    ck_assert_msg(json_is_number(e1) && json_is_number(e2), "no ETA: %s, %s",
                  json_dumps(e1, JSON_ENCODE_ANY), json_dumps(e2, JSON_ENCODE_ANY));
    ck_assert(json_number_value(e1) > 0);
    ck_assert(json_number_value(e2) > json_number_value(e1)); /* it waits for one's work */
    json_decref(j1);
    json_decref(j2);
    free(one);
    free(two);
    inst_cleanup();
}
END_TEST

START_TEST(test_a_cancel_records_who_and_why)
{
    inst_database("check_queue");
    inst_t *a = inst_start("A", "1", NULL), *b = inst_start("B", "0", NULL);
    char *running = inst_create(a, 1, 64, 20, 100);
    for (int i = 0; i < 3000; i++) { /* it runs */
        json_t *j = api_check_job(a->port, running);
        bool go = !strcmp(api_check_str(j, "job_status"), "processing");
        json_decref(j);
        if (go)
            break;
        usleep(10000);
    }
    s_cancel(b, running); /* through the other instance */
    json_t *job = api_check_wait_final(a->port, running, 60, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    ck_assert_str_eq(api_check_str(job, "cancel_reason"), "user");
    const char *by = api_check_str(job, "cancelled_by");
    char want[64];
    snprintf(want, sizeof want, "%s/127.0.0.1:", b->name);
    ck_assert_msg(!strncmp(by, want, strlen(want)), "cancelled_by %s, not %s...", by, want);
    json_decref(job);
    /* a job never cancelled has neither */
    char *other = inst_create(b, 1, 64, 2, 1);
    job = api_check_job(b->port, other);
    ck_assert(json_is_null(json_object_get(job, "cancel_reason")));
    ck_assert(json_is_null(json_object_get(job, "cancelled_by")));
    json_decref(job);
    free(other);
    free(running);
    inst_cleanup();
}
END_TEST

static api_response_t s_cancel_many(inst_t *in, const char *body)
{
    return api_check_call(in->port, "POST", "/api/jobs/cancel",
                          "Content-Type: application/json\r\n", body);
}

/* Waits until the job is processing (a generator holds it). */
static void s_wait_processing(inst_t *in, const char *id)
{
    for (int i = 0; i < 6000; i++) {
        json_t *j = api_check_job(in->port, id);
        bool go = !strcmp(api_check_str(j, "job_status"), "processing");
        json_decref(j);
        if (go)
            return;
        usleep(10000);
    }
    ck_abort_msg("job %s never started", id);
}

static bool s_flag(const char *id)
{
    redisContext *c = redisConnect("127.0.0.1", atoi(getenv("IMAGEJOBS_TEST_REDIS_PORT")));
    ck_assert(c && !c->err);
    redisReply *r = redisCommand(c, "GET job:%s:cancelled", id);
    bool set = r && r->type == REDIS_REPLY_STRING && !strcmp(r->str, "true");
    freeReplyObject(r);
    redisFree(c);
    return set;
}

START_TEST(test_cancel_many_by_ids_and_by_filter)
{
    inst_database("check_queue");
    inst_t *a = inst_start("A", "2", NULL), *b = inst_start("B", "0", NULL);
    char *done = inst_create(a, 1, 64, 2, 1);
    json_decref(api_check_wait_final(a->port, done, 60, 20));
    char *r1 = inst_create(a, 1, 64, 20, 100), *r2 = inst_create(a, 1, 64, 20, 100);
    s_wait_processing(a, r1);
    s_wait_processing(a, r2);
    /* queued; p2 ahead of p1 in the claims: the generator the cancel below frees
     * (its event goes out before the write) takes p2, and p1 stays pending */
    char *p1 = inst_create(a, 1, 64, 2, 1);
    api_response_t made =
        api_check_call(a->port, "POST", "/api/jobs", "Content-Type: application/json\r\n",
                       "{\"prompt\":\"a quiet street\",\"images_per_combination\":100,\"width\":64,"
                       "\"height\":64,\"steps\":20,\"priority\":1}");
    ck_assert_int_eq(made.status, 201);
    char *p2 = strdup(api_check_str(made.json, "job_id"));
    api_response_free(&made);
    const char *unknown = "2b0d6a76-3a0e-4d36-9a51-5f3c1e8a0c11";

    /* by ids, through the instance that runs nothing */
    char body[1024];
    snprintf(body, sizeof body, "{\"job_ids\":[\"%s\",\"%s\",\"%s\",\"%s\",\"%s\"]}", r1, p1, done,
             unknown, r1);
    api_response_t r = s_cancel_many(b, body);
    ck_assert_msg(r.status == 200, "cancel many: %d %s", r.status, r.body);
    ck_assert_int_eq(api_check_int(r.json, "matched"), 3);
    ck_assert_int_eq(api_check_int(r.json, "cancelled"), 2);
    json_t *jobs = json_object_get(r.json, "jobs");
    ck_assert_int_eq(json_array_size(jobs), 4); /* the repeated id answered once */
    static const char *const messages[] = {"Cancel request sent. Job will stop at the next step.",
                                           "Job cancelled before it started.",
                                           "Job already completed", "Job not found"};
    const char *order[] = {r1, p1, done, unknown};
    for (size_t i = 0; i < 4; i++) {
        json_t *e = json_array_get(jobs, i);
        ck_assert_str_eq(api_check_str(e, "job_id"), order[i]);
        ck_assert_str_eq(api_check_str(e, "message"), messages[i]);
        ck_assert_int_eq(json_is_true(json_object_get(e, "success")), i < 2);
    }
    api_response_free(&r);
    json_t *job = api_check_wait_final(a->port, r1, 60, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    ck_assert_int_eq(api_check_int(job, "completed_images"),
                     (json_int_t)json_array_size(json_object_get(job, "generated_attach_ids")));
    ck_assert_ptr_nonnull(json_string_value(json_object_get(
        json_array_get(json_object_get(job, "combinations"), 0), "cancel_observed_at")));
    ck_assert_str_eq(api_check_str(job, "cancel_reason"), "user");
    json_decref(job);
    job = api_check_job(b->port, p1);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    json_decref(job);
    for (int i = 0; i < 500 && !(s_flag(r1) && s_flag(p1)); i++)
        usleep(10000);
    ck_assert(s_flag(r1) && s_flag(p1)); /* the seed's flag, each */
    ck_assert(!s_flag(done));

    /* by a filter: a dry run changes nothing, then the real one */
    r = s_cancel_many(b, "{\"filter\":{\"status\":[\"pending\",\"processing\"]},\"dry_run\":true}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(api_check_int(r.json, "matched"), 2);
    ck_assert(json_is_true(json_object_get(r.json, "dry_run")));
    api_response_free(&r);
    job = api_check_job(a->port, r2);
    ck_assert_str_eq(api_check_str(job, "job_status"), "processing");
    json_decref(job);
    /* by creation time: after p1 (p2 alone), then the processing ones before it (r2) */
    job = api_check_job(a->port, p1);
    char at[64];
    snprintf(at, sizeof at, "%s", api_check_str(job, "created_at"));
    json_decref(job);
    snprintf(body, sizeof body, "{\"filter\":{\"created_after\":\"%s\"}}", at);
    r = s_cancel_many(a, body);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(api_check_int(r.json, "matched"), 1);
    ck_assert_str_eq(api_check_str(json_array_get(json_object_get(r.json, "jobs"), 0), "job_id"),
                     p2);
    api_response_free(&r);
    snprintf(body, sizeof body,
             "{\"filter\":{\"status\":[\"processing\"],\"created_before\":\"%s\"},"
             "\"mode\":\"after_current_image\"}",
             at);
    r = s_cancel_many(a, body);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(api_check_int(r.json, "matched"), 1);
    ck_assert_str_eq(api_check_str(json_array_get(json_object_get(r.json, "jobs"), 0), "job_id"),
                     r2);
    api_response_free(&r);
    const char *ended[] = {r2, p2};
    for (int i = 0; i < 2; i++) {
        job = api_check_wait_final(a->port, ended[i], 60, 20);
        ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
        json_decref(job);
    }
    job = api_check_job(a->port, r2);
    ck_assert_str_eq(api_check_str(job, "cancel_mode"), "after_current_image");
    json_decref(job);

    static const char *const bad[] = {
        "{}",
        "{\"job_ids\":[]}",
        "{\"job_ids\":[\"x\"]}",
        "{\"job_ids\":[\"2b0d6a76-3a0e-4d36-9a51-5f3c1e8a0c11\"],\"filter\":{}}",
        "{\"filter\":{\"status\":[\"bogus\"]}}",
        "{\"filter\":{\"created_before\":\"not a date\"}}",
        "{\"filter\":{\"owner\":\"me\"}}",
        "{\"filter\":{},\"mode\":\"later\"}",
        "{\"filter\":{},\"dry_run\":\"yes\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        r = s_cancel_many(b, bad[i]);
        ck_assert_msg(r.status == 400, "%s: %d %s", bad[i], r.status, r.body);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(r.json, "error")));
        api_response_free(&r);
    }
    free(done);
    free(r1);
    free(r2);
    free(p1);
    free(p2);
    inst_cleanup();
}
END_TEST

static api_response_t s_create_keyed(inst_t *in, const char *key, const char *body)
{
    char headers[400];
    snprintf(headers, sizeof headers, "Content-Type: application/json\r\nIdempotency-Key: %s\r\n",
             key);
    return api_check_call(in->port, "POST", "/api/jobs", headers, body);
}

START_TEST(test_an_idempotency_key_makes_one_job)
{
    inst_database("check_queue");
    inst_t *a = inst_start("A", "0", NULL), *b = inst_start("B", "0", NULL);
    const char *body = "{\"prompt\":\"a red kite\",\"width\":64,\"height\":64,\"steps\":2}";
    /* the same request, spelled otherwise */
    const char *same =
        "{ \"steps\": 2, \"height\": 64, \"width\": 64, \"prompt\": \"a red kite\" }";
    api_response_t r1 = s_create_keyed(a, "order-1234", body);
    ck_assert_int_eq(r1.status, 201);
    const char *id = api_check_str(r1.json, "job_id");
    api_response_t r2 = s_create_keyed(b, "order-1234", same); /* another instance */
    ck_assert_msg(r2.status == 201, "replay: %d %s", r2.status, r2.body);
    ck_assert_str_eq(api_check_str(r2.json, "job_id"), id);
    char v[64];
    ck_assert_str_eq(api_header(&r2, "idempotent-replayed", v, sizeof v), "true");
    ck_assert_ptr_null(api_header(&r1, "idempotent-replayed", v, sizeof v));
    api_response_free(&r2);
    /* another body with the key: refused */
    api_response_t r3 = s_create_keyed(a, "order-1234", "{\"prompt\":\"a blue kite\"}");
    ck_assert_msg(r3.status == 409, "conflict: %d %s", r3.status, r3.body);
    ck_assert_ptr_nonnull(strstr(api_check_str(r3.json, "error"), "Idempotency-Key"));
    api_response_free(&r3);
    /* one job in all, and another key makes another */
    json_t *ids = json_array();
    s_list_all(a, "", ids);
    ck_assert_int_eq(json_array_size(ids), 1);
    json_decref(ids);
    api_response_t r4 = s_create_keyed(a, "order-1235", body);
    ck_assert_int_eq(r4.status, 201);
    ck_assert_str_ne(api_check_str(r4.json, "job_id"), id);
    api_response_free(&r4);
    /* many at once through both instances: still one job for the key */
    enum { N = 8 };
    pid_t kids[N];
    for (int i = 0; i < N; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            api_response_t r = s_create_keyed(i % 2 ? a : b, "burst-1", body);
            _exit(r.status == 201 ? 0 : 1);
        }
    }
    for (int i = 0; i < N; i++) {
        int st;
        waitpid(kids[i], &st, 0);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a concurrent create was refused");
    }
    ids = json_array();
    s_list_all(a, "", ids);
    ck_assert_int_eq(json_array_size(ids), 3);
    json_decref(ids);
    api_response_t bad = s_create_keyed(a, "", body);
    ck_assert_int_eq(bad.status, 400);
    api_response_free(&bad);
    api_response_free(&r1);
    inst_cleanup();
}
END_TEST

static int s_resume(inst_t *in, const char *id, api_response_t *out)
{
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/resume", id);
    *out = api_check_call(in->port, "POST", path, NULL, NULL);
    return out->status;
}

/* The PNG of (combination, index) among the images of jobs a and b. */
static char *s_png(PGconn *db, const char *a, const char *b, int comb, int index, size_t *len,
                   int *copies)
{
    char ci[16], ii[16];
    snprintf(ci, sizeof ci, "%d", comb);
    snprintf(ii, sizeof ii, "%d", index);
    const char *params[] = {a, b ? b : a, ci, ii};
    PGresult *r = PQexecParams(db,
                               "SELECT bytes FROM attachments WHERE job_id IN ($1, $2) AND "
                               "combination = $3::int AND image_index = $4::int",
                               4, NULL, params, NULL, NULL, 1);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    *copies = PQntuples(r);
    char *out = NULL;
    if (*copies) {
        *len = (size_t)PQgetlength(r, 0, 0);
        out = malloc(*len);
        memcpy(out, PQgetvalue(r, 0, 0), *len);
    }
    PQclear(r);
    return out;
}

START_TEST(test_resume_makes_what_the_cancel_left_byte_for_byte)
{
    inst_database("check_queue");
    inst_t *a = inst_start("A", "2", NULL), *b = inst_start("B", "0", NULL);
    enum { COMBOS = 2, PER = 32 };
    char *whole = inst_create(a, COMBOS, 128, 20, PER); /* never cancelled: the reference */
    json_decref(api_check_wait_final(a->port, whole, 120, 20));
    char *cut = inst_create(a, COMBOS, 128, 20, PER); /* the same request */
    for (int i = 0; i < 6000; i++) {
        json_t *j = api_check_job(a->port, cut);
        bool go = api_check_int(j, "completed_images") >= 3;
        json_decref(j);
        if (go)
            break;
        usleep(5000);
    }
    s_cancel(a, cut);
    json_t *job = api_check_wait_final(a->port, cut, 60, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    json_int_t made = api_check_int(job, "completed_images");
    ck_assert_int_lt(made, COMBOS * PER);
    json_decref(job);

    api_response_t r;
    ck_assert_int_eq(s_resume(b, cut, &r), 201); /* through the instance that runs nothing */
    char *rest = strdup(api_check_str(r.json, "job_id"));
    ck_assert_int_eq(api_check_int(r.json, "total_images"), COMBOS * PER - made);
    ck_assert_str_eq(api_check_str(r.json, "resumed_from"), cut);
    api_response_free(&r);
    job = api_check_wait_final(a->port, rest, 120, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "completed");
    ck_assert_int_eq(api_check_int(job, "completed_images"), COMBOS * PER - made);
    ck_assert_str_eq(api_check_str(job, "resumed_from"), cut);
    json_decref(job);
    job = api_check_job(a->port, cut);
    ck_assert_str_eq(api_check_str(job, "resumed_by"), rest);
    json_decref(job);

    /* the two together are the uncancelled job, image for image, byte for byte */
    PGconn *db = api_check_db(inst_conninfo);
    for (int c = 0; c < COMBOS; c++)
        for (int i = 0; i < PER; i++) {
            size_t n1 = 0, n2 = 0;
            int k1, k2;
            char *want = s_png(db, whole, NULL, c, i, &n1, &k1);
            char *got = s_png(db, cut, rest, c, i, &n2, &k2);
            ck_assert_msg(k1 == 1 && k2 == 1, "image %d/%d: %d in the reference, %d resumed", c, i,
                          k1, k2);
            ck_assert_msg(n1 == n2 && memcmp(want, got, n1) == 0,
                          "image %d/%d differs from the uncancelled job's", c, i);
            free(want);
            free(got);
        }
    PQfinish(db);

    /* once only; not a finished or running job; not an unknown one */
    ck_assert_int_eq(s_resume(a, cut, &r), 409);
    ck_assert_str_eq(api_check_str(r.json, "resumed_by"), rest);
    api_response_free(&r);
    ck_assert_int_eq(s_resume(a, whole, &r), 409);
    ck_assert_ptr_nonnull(strstr(api_check_str(r.json, "error"), "completed"));
    api_response_free(&r);
    ck_assert_int_eq(s_resume(a, "2b0d6a76-3a0e-4d36-9a51-5f3c1e8a0c11", &r), 404);
    api_response_free(&r);
    ck_assert_int_eq(s_resume(a, "nope", &r), 400);
    api_response_free(&r);
    free(whole);
    free(cut);
    free(rest);
    inst_cleanup();
}
END_TEST

static int s_cancel_combination(inst_t *in, const char *id, const char *n, api_response_t *out)
{
    char path[160];
    snprintf(path, sizeof path, "/api/jobs/%s/combinations/%s/cancel", id, n);
    *out = api_check_call(in->port, "POST", path, NULL, NULL);
    return out->status;
}

START_TEST(test_one_combination_stops_the_others_go_on)
{
    inst_database("check_queue");
    inst_t *a = inst_start("A", "2", NULL), *b = inst_start("B", "0", NULL);
    /* two run (two generators), the third waits */
    char *id = inst_create(a, 3, 64, 10, 24);
    for (int i = 0; i < 6000; i++) {
        json_t *j = api_check_job(a->port, id);
        json_t *c1 = json_array_get(json_object_get(j, "combinations"), 1);
        bool go = api_check_int(c1, "completed_images") >= 2;
        json_decref(j);
        if (go)
            break;
        usleep(5000);
    }
    api_response_t r;
    /* the waiting one first (a generator freed by the other would take it) */
    ck_assert_int_eq(s_cancel_combination(b, id, "2", &r), 200); /* through the other instance */
    ck_assert_str_eq(api_check_str(r.json, "message"), "Combination cancelled before it started.");
    api_response_free(&r);
    ck_assert_int_eq(s_cancel_combination(b, id, "1", &r), 200);
    ck_assert_msg(json_is_true(json_object_get(r.json, "success")), "%s", r.body);
    ck_assert_int_eq(api_check_int(r.json, "combination"), 1);
    ck_assert_str_eq(api_check_str(r.json, "current_status"), "processing");
    api_response_free(&r);

    json_t *job = api_check_wait_final(a->port, id, 120, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "completed");
    json_t *combos = json_object_get(job, "combinations");
    json_t *c0 = json_array_get(combos, 0), *c1 = json_array_get(combos, 1),
           *c2 = json_array_get(combos, 2);
    ck_assert_str_eq(api_check_str(c0, "status"), "completed");
    ck_assert_int_eq(api_check_int(c0, "completed_images"), 24);
    ck_assert_str_eq(api_check_str(c1, "status"), "cancelled");
    json_int_t kept = api_check_int(c1, "completed_images");
    ck_assert_int_ge(kept, 2);
    ck_assert_int_lt(kept, 24);
    ck_assert_ptr_nonnull(json_string_value(json_object_get(c1, "cancel_observed_at")));
    ck_assert_ptr_nonnull(json_string_value(json_object_get(c1, "cancelled_by")));
    ck_assert_str_eq(api_check_str(c2, "status"), "cancelled");
    ck_assert_int_eq(api_check_int(c2, "completed_images"), 0);
    /* the job was not cancelled; the images of the stopped combination are kept */
    ck_assert(json_is_false(json_object_get(job, "cancel_requested")));
    ck_assert_int_eq(api_check_int(job, "completed_images"), 24 + kept);
    ck_assert_int_eq(json_array_size(json_object_get(job, "generated_attach_ids")),
                     (size_t)(24 + kept));
    json_decref(job);

    /* again: already ended; the job's other answers; errors */
    ck_assert_int_eq(s_cancel_combination(a, id, "1", &r), 200);
    ck_assert(json_is_false(json_object_get(r.json, "success")));
    api_response_free(&r);
    ck_assert_int_eq(s_cancel_combination(a, id, "7", &r), 404);
    ck_assert_str_eq(api_check_str(r.json, "error"), "Combination not found");
    api_response_free(&r);
    ck_assert_int_eq(s_cancel_combination(a, id, "x", &r), 400);
    api_response_free(&r);
    ck_assert_int_eq(s_cancel_combination(a, "2b0d6a76-3a0e-4d36-9a51-5f3c1e8a0c11", "0", &r), 404);
    ck_assert_str_eq(api_check_str(r.json, "error"), "Job not found");
    api_response_free(&r);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_a_cancelled_combination_whose_holder_died_is_ended)
{
    inst_database("check_queue");
    inst_t *a = inst_start("A", "1", "--lease", "2", NULL);
    inst_t *b = inst_start("B", "0", NULL);
    char *id = inst_create(a, 2, 64, 10, 40);
    s_wait_processing(a, id);
    api_kill(a->pid); /* kill -9, its claim on combination 0 held */
    a->pid = 0;
    api_response_t r;
    ck_assert_int_eq(s_cancel_combination(b, id, "0", &r), 200);
    ck_assert_str_eq(api_check_str(r.json, "current_status"), "processing");
    api_response_free(&r);
    /* another instance: it never runs combination 0 again, ends it once the
     * dead holder's lease is over, and runs combination 1 */
    inst_t *c = inst_start("C", "1", "--lease", "2", NULL);
    json_t *job = api_check_wait_final(c->port, id, 120, 50);
    ck_assert_str_eq(api_check_str(job, "job_status"), "completed");
    json_t *c0 = json_array_get(json_object_get(job, "combinations"), 0);
    json_t *c1 = json_array_get(json_object_get(job, "combinations"), 1);
    ck_assert_str_eq(api_check_str(c0, "status"), "cancelled");
    ck_assert_str_eq(api_check_str(c1, "status"), "completed");
    ck_assert_int_eq(api_check_int(c1, "completed_images"), 40);
    ck_assert_str_ne(api_check_str(c0, "claimed_by"), c->name);
    json_decref(job);
    free(id);
    inst_cleanup();
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("queue");
    TCase *tc = tcase_create("queue");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_list_is_newest_first_filtered_and_paged);
    tcase_add_test(tc, test_paging_while_jobs_are_created_skips_none_repeats_none);
    tcase_add_test(tc, test_priority_orders_the_claims_and_the_queue);
    tcase_add_test(tc, test_eta_and_queue_position_follow_the_work);
    tcase_add_test(tc, test_a_cancel_records_who_and_why);
    tcase_add_test(tc, test_cancel_many_by_ids_and_by_filter);
    tcase_add_test(tc, test_an_idempotency_key_makes_one_job);
    tcase_add_test(tc, test_resume_makes_what_the_cancel_left_byte_for_byte);
    tcase_add_test(tc, test_one_combination_stops_the_others_go_on);
    tcase_add_test(tc, test_a_cancelled_combination_whose_holder_died_is_ended);
    suite_add_tcase(s, tc);
    return s;
}

static int s_before(void)
{
    static const char *const need[] = {"IMAGEJOBS_TEST_REDIS", "IMAGEJOBS_TEST_REDIS_PORT",
                                       "IMAGEJOBS_TEST_DATABASE", "IMAGEJOBS_BIN", NULL};
    return fixture_need_env("the queue tests", need);
}

const test_program_t test_program = {.suite = s_suite, .before = s_before};
