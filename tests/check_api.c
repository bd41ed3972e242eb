/*
 * check_api.c - the job API end to end: a real `imagejobs serve` process
 * against the real Redis and PostgreSQL that cmd/imagejobs-local test
 * starts, driven over HTTP, checked through the API, SQL and Redis.
 *
 * One server serves every test (Check forks each test; the server is a
 * separate process started before them). Every test makes its own jobs.
 */
#include "config.h"

#include "actors/generator/png.h"
#include "tests/api_check.h"
#include "tests/fixture.h"
#include "tests/runner.h"

#include <check.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int s_port;

/* ------------------------------------------------------------ helpers */

static api_response_t s_call(const char *method, const char *path, const char *headers,
                             const char *body)
{
    return api_check_call(s_port, method, path, headers, body);
}

/* POST /api/jobs; returns the job id (caller frees). */
static char *s_create(const char *body, json_int_t expect_total)
{
    api_response_t r = s_call("POST", "/api/jobs", "Content-Type: application/json\r\n", body);
    ck_assert_msg(r.status == 201, "create: %d %s", r.status, r.body);
    ck_assert_ptr_nonnull(r.json);
    ck_assert_str_eq(api_check_str(r.json, "job_status"), "pending");
    ck_assert_int_eq(api_check_int(r.json, "total_images"), expect_total);
    char *id = strdup(api_check_str(r.json, "job_id"));
    ck_assert_uint_eq(json_object_size(r.json), 3);
    api_response_free(&r);
    return id;
}

/* Polls GET until the job's completed_images reaches min_done (or it
 * ends); returns the document. */
static json_t *s_wait_progress(const char *id, json_int_t min_done, double timeout_s)
{
    double deadline = fixture_now() + timeout_s;
    for (;;) {
        json_t *j = api_check_job(s_port, id);
        if (api_check_int(j, "completed_images") >= min_done
            || api_check_final(api_check_str(j, "job_status")))
            return j;
        json_decref(j);
        ck_assert_msg(fixture_now() < deadline, "job %s made no progress", id);
        fixture_pause_ms(20);
    }
}

static api_response_t s_cancel(const char *id, const char *headers, const char *body)
{
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    return s_call("POST", path, headers, body);
}

/* Everything a stopped job must hold: counters, ids and rows agree, every
 * image decodes, none was made after the job ended. */
static void s_assert_consistent(const char *id, json_t *job)
{
    json_int_t done = api_check_int(job, "completed_images");
    json_t *ids = json_object_get(job, "generated_attach_ids");
    ck_assert(json_is_array(ids));
    ck_assert_int_eq((json_int_t)json_array_size(ids), done);
    PGconn *db = api_check_db(getenv("IMAGEJOBS_TEST_DATABASE"));
    ck_assert_int_eq(
        api_check_sql_long(db, "select count(*) from attachments where job_id = $1", id), done);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "select count(*) from attachments a join jobs j on j.id = "
                                        "a.job_id where j.id = $1 and a.created_at > j.finished_at",
                                        id),
                     0);
    json_int_t sum = 0;
    json_t *combos = json_object_get(job, "combinations");
    size_t i;
    json_t *c;
    json_array_foreach(combos, i, c) sum += api_check_int(c, "completed_images");
    ck_assert_int_eq(sum, done);
    PQfinish(db);

    json_t *aid;
    json_array_foreach(ids, i, aid)
    {
        char path[128];
        snprintf(path, sizeof path, "/api/attachments/%s", json_string_value(aid));
        api_response_t r = s_call("GET", path, NULL, NULL);
        ck_assert_int_eq(r.status, 200);
        char ct[64];
        ck_assert_str_eq(api_header(&r, "content-type", ct, sizeof ct), "image/png");
        uint8_t *rgb;
        uint32_t w, h;
        char err[128];
        ck_assert_msg(gen_png_decode((uint8_t *)r.body, r.body_len, &rgb, &w, &h, err, sizeof err)
                          == 0,
                      "attachment %zu does not decode: %s", i, err);
        free(rgb);
        api_response_free(&r);
    }
}

/* The seed's flag: written by the redis actor just after the HTTP answer,
 * so wait (bounded) for it to appear. Returns its TTL. */
static long s_redis_ttl(const char *id)
{
    redisContext *rc = redisConnect("127.0.0.1", atoi(getenv("IMAGEJOBS_TEST_REDIS_PORT")));
    ck_assert(rc && !rc->err);
    double deadline = fixture_now() + 10;
    redisReply *get;
    while ((get = redisCommand(rc, "GET job:%s:cancelled", id))->type == REDIS_REPLY_NIL) {
        freeReplyObject(get);
        ck_assert_msg(fixture_now() < deadline, "job:%s:cancelled never appeared", id);
        fixture_pause_ms(5);
    }
    ck_assert_int_eq(get->type, REDIS_REPLY_STRING);
    ck_assert_str_eq(get->str, "true");
    freeReplyObject(get);
    redisReply *ttl = redisCommand(rc, "TTL job:%s:cancelled", id);
    long v = ttl->integer;
    freeReplyObject(ttl);
    redisFree(rc);
    return v;
}

/* A job that keeps both generators busy for a long while. */
#define LONG_JOB                                                                                   \
    "{\"prompt\":\"a lighthouse on a stormy coast\",\"combinations\":[{\"seed\":1},"               \
    "{\"seed\":2,\"style\":\"oil painting\"}],\"images_per_combination\":4,"                       \
    "\"width\":256,\"height\":256,\"steps\":80}"

/* ------------------------------------------------------------ the seed's responses */

START_TEST(test_cancel_running_job_answers_as_the_document)
{
    char *id = s_create(LONG_JOB, 8);
    json_decref(s_wait_progress(id, 1, 120));

    /* the document's curl: no body, no Content-Type */
    api_response_t r = s_cancel(id, NULL, NULL);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
    ck_assert_uint_eq(json_object_size(r.json), 6);
    ck_assert(json_is_true(json_object_get(r.json, "success")));
    ck_assert_str_eq(api_check_str(r.json, "job_id"), id);
    ck_assert_str_eq(api_check_str(r.json, "current_status"), "processing");
    ck_assert_str_eq(api_check_str(r.json, "message"),
                     "Cancel request sent. Job will stop at the next step.");
    json_int_t at_cancel = api_check_int(r.json, "completed_images");
    ck_assert_int_ge(at_cancel, 1);
    ck_assert_int_eq(api_check_int(r.json, "total_images"), 8);
    api_response_free(&r);

    long ttl = s_redis_ttl(id);
    ck_assert_msg(ttl > 3590 && ttl <= 3600, "TTL %ld", ttl);

    json_t *job = api_check_wait_final(s_port, id, 60, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    ck_assert(json_is_true(json_object_get(job, "cancel_requested")));
    ck_assert(json_is_string(json_object_get(job, "cancel_requested_at")));
    /* immediate: the in-flight images are dropped; one per combination may
     * have been finishing its recording at that moment */
    json_int_t done = api_check_int(job, "completed_images");
    ck_assert_int_ge(done, at_cancel);
    ck_assert_int_le(done, at_cancel + 2);
    json_t *combos = json_object_get(job, "combinations");
    size_t i;
    json_t *c;
    json_array_foreach(combos, i, c)
    {
        if (!strcmp(api_check_str(c, "status"), "cancelled")) {
            ck_assert(json_is_string(json_object_get(c, "cancel_observed_at")));
            ck_assert(json_is_string(json_object_get(c, "stopped_at")));
        }
    }
    s_assert_consistent(id, job);
    json_decref(job);

    /* once stopped: the document's "already" answer */
    r = s_cancel(id, "Content-Type: application/json\r\n", "");
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(json_object_size(r.json), 5);
    ck_assert(json_is_false(json_object_get(r.json, "success")));
    ck_assert_str_eq(api_check_str(r.json, "message"), "Job already cancelled");
    ck_assert_str_eq(api_check_str(r.json, "job_status"), "user_cancelled");
    ck_assert_str_eq(api_check_str(r.json, "job_id"), id);
    ck_assert_int_eq(api_check_int(r.json, "completed_images"), done);
    api_response_free(&r);
    free(id);
}
END_TEST

START_TEST(test_after_current_image_keeps_the_inflight_image)
{
    char *id = s_create("{\"prompt\":\"dunes at noon\",\"images_per_combination\":4,"
                        "\"width\":512,\"height\":512,\"steps\":60}",
                        4);
    json_decref(s_wait_progress(id, 1, 120));
    api_response_t r =
        s_cancel(id, "Content-Type: application/json\r\n", "{\"mode\":\"after_current_image\"}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(api_check_str(r.json, "message"),
                     "Cancel request sent. Job will stop after current image.");
    json_int_t at_cancel = api_check_int(r.json, "completed_images");
    api_response_free(&r);
    json_t *job = api_check_wait_final(s_port, id, 60, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    /* the image in flight when the cancel came is finished and kept */
    ck_assert_int_eq(api_check_int(job, "completed_images"), at_cancel + 1);
    s_assert_consistent(id, job);
    json_decref(job);
    free(id);
}
END_TEST

/* after_current_image, then immediate 0.1 s later: the second answer
 * promises the next step, and the job keeps that promise (it once
 * finished its image, and cancel_mode stayed after_current_image). */
START_TEST(test_immediate_upgrades_after_current_image)
{
    char *id = s_create("{\"prompt\":\"a glacier under stars\",\"width\":1024,\"height\":1024,"
                        "\"steps\":60}",
                        1);
    double deadline = fixture_now() + 60;
    for (;;) { /* its one combination runs */
        json_t *j = api_check_job(s_port, id);
        json_t *c = json_array_get(json_object_get(j, "combinations"), 0);
        int running = !strcmp(api_check_str(c, "status"), "processing");
        json_decref(j);
        if (running)
            break;
        ck_assert_msg(fixture_now() < deadline, "the job never ran");
        fixture_pause_ms(20);
    }
    api_response_t r =
        s_cancel(id, "Content-Type: application/json\r\n", "{\"mode\":\"after_current_image\"}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(api_check_str(r.json, "message"),
                     "Cancel request sent. Job will stop after current image.");
    api_response_free(&r);
    fixture_pause_ms(100);
    r = s_cancel(id, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert(json_is_true(json_object_get(r.json, "success")));
    ck_assert_str_eq(api_check_str(r.json, "message"),
                     "Cancel request sent. Job will stop at the next step.");
    api_response_free(&r);
    json_t *job = api_check_wait_final(s_port, id, 60, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    ck_assert_str_eq(api_check_str(job, "cancel_mode"), "immediate");
    ck_assert_int_eq(api_check_int(job, "completed_images"), 0); /* dropped, as promised */
    s_assert_consistent(id, job);
    json_decref(job);
    free(id);
}
END_TEST

START_TEST(test_cancel_pending_job_at_once)
{
    /* two long jobs occupy both generators; the third waits */
    char *busy1 = s_create(LONG_JOB, 8);
    char *busy2 = s_create(LONG_JOB, 8);
    char *id = s_create("{\"prompt\":\"waiting\"}", 1);
    json_t *job = api_check_job(s_port, id);
    ck_assert_str_eq(api_check_str(job, "job_status"), "pending");
    json_decref(job);

    api_response_t r = s_cancel(id, "Content-Type: application/json\r\n", "{}");
    ck_assert_int_eq(r.status, 200);
    ck_assert(json_is_true(json_object_get(r.json, "success")));
    ck_assert_str_eq(api_check_str(r.json, "current_status"), "pending");
    ck_assert_int_eq(api_check_int(r.json, "completed_images"), 0);
    ck_assert_int_eq(api_check_int(r.json, "total_images"), 1);
    api_response_free(&r);
    job = api_check_job(s_port, id); /* no waiting: it is cancelled already */
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    ck_assert_int_eq(api_check_int(job, "completed_images"), 0);
    json_decref(job);

    for (int k = 0; k < 2; k++) {
        const char *b = k ? busy2 : busy1;
        r = s_cancel(b, NULL, NULL);
        ck_assert_int_eq(r.status, 200);
        api_response_free(&r);
        /* a repeated cancel while it stops is a success too */
        r = s_cancel(b, NULL, NULL);
        ck_assert_int_eq(r.status, 200);
        json_t *ok = json_object_get(r.json, "success");
        const char *st = json_is_true(ok) ? api_check_str(r.json, "current_status") : "";
        ck_assert(json_is_false(ok) || !strcmp(st, "processing") || !strcmp(st, "pending"));
        api_response_free(&r);
        json_t *j = api_check_wait_final(s_port, b, 60, 20);
        ck_assert_str_eq(api_check_str(j, "job_status"), "user_cancelled");
        s_assert_consistent(b, j);
        json_decref(j);
    }
    free(busy1);
    free(busy2);
    free(id);
}
END_TEST

START_TEST(test_cancel_completed_job)
{
    char *id = s_create("{\"prompt\":\"a small red square\",\"width\":64,\"height\":64,"
                        "\"steps\":2}",
                        1);
    json_t *job = api_check_wait_final(s_port, id, 60, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "completed");
    ck_assert_int_eq(api_check_int(job, "completed_images"), 1);
    s_assert_consistent(id, job);
    json_decref(job);
    api_response_t r = s_cancel(id, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(json_object_size(r.json), 5);
    ck_assert(json_is_false(json_object_get(r.json, "success")));
    ck_assert_str_eq(api_check_str(r.json, "message"), "Job already completed");
    ck_assert_str_eq(api_check_str(r.json, "job_status"), "completed");
    ck_assert_int_eq(api_check_int(r.json, "completed_images"), 1);
    api_response_free(&r);
    free(id);
}
END_TEST

START_TEST(test_cancel_errors_as_the_document)
{
    api_response_t r = s_cancel("550e8400-e29b-41d4-a716-446655440000", NULL, NULL);
    ck_assert_int_eq(r.status, 404);
    ck_assert_uint_eq(json_object_size(r.json), 1);
    ck_assert_str_eq(api_check_str(r.json, "error"), "Job not found");
    api_response_free(&r);

    r = s_call("POST", "/api/jobs//cancel", NULL, NULL);
    ck_assert_int_eq(r.status, 400);
    ck_assert_str_eq(api_check_str(r.json, "error"), "jobId is required");
    api_response_free(&r);

    r = s_cancel("not-a-uuid", NULL, NULL);
    ck_assert_int_eq(r.status, 400);
    ck_assert_ptr_nonnull(json_object_get(r.json, "error"));
    api_response_free(&r);

    r = s_cancel("550e8400-e29b-41d4-a716-446655440000", "Content-Type: application/json\r\n",
                 "{\"mode\":\"sometime\"}");
    ck_assert_int_eq(r.status, 400);
    api_response_free(&r);

    /* a browser's preflight */
    r = s_call("OPTIONS", "/api/jobs/550e8400-e29b-41d4-a716-446655440000/cancel",
               "Origin: http://localhost:3000\r\nAccess-Control-Request-Method: POST\r\n"
               "Access-Control-Request-Headers: content-type\r\n",
               NULL);
    ck_assert_int_lt(r.status, 300);
    char v[256];
    ck_assert_ptr_nonnull(api_header(&r, "access-control-allow-origin", v, sizeof v));
    ck_assert_ptr_nonnull(api_header(&r, "access-control-allow-methods", v, sizeof v));
    ck_assert_ptr_nonnull(strstr(v, "POST"));
    api_response_free(&r);
}
END_TEST

/* ------------------------------------------------------------ many jobs */

START_TEST(test_50_jobs_half_cancelled_all_end_consistent)
{
    enum { JOBS = 50 };
    char *ids[JOBS];
    unsigned seed = 12345;
    for (int i = 0; i < JOBS; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"prompt\":\"job %d\",\"combinations\":[{\"seed\":%d},{\"seed\":%d},"
                 "{\"seed\":%d},{\"seed\":%d,\"style\":\"ink\"}],\"images_per_combination\":2,"
                 "\"width\":64,\"height\":64,\"steps\":6}",
                 i, i, i + 1, i + 2, i + 3);
        ids[i] = s_create(body, 8);
        if (i % 2 == 1) {
            /* cancel the previous job at a random moment: now, or a little later */
            fixture_pause_ms((int)(rand_r(&seed) % 30));
            api_response_t r = s_cancel(ids[i - 1], NULL, NULL);
            ck_assert_int_eq(r.status, 200);
            api_response_free(&r);
        }
    }
    PGconn *db = api_check_db(getenv("IMAGEJOBS_TEST_DATABASE"));
    for (int i = 0; i < JOBS; i++) {
        json_t *job = api_check_wait_final(s_port, ids[i], 120, 20);
        const char *st = api_check_str(job, "job_status");
        if (i % 2 == 0) /* cancelled, unless it was done before the cancel came */
            ck_assert_msg(!strcmp(st, "user_cancelled") || !strcmp(st, "completed"), "%s", st);
        else
            ck_assert_str_eq(st, "completed");
        if (!strcmp(st, "completed"))
            ck_assert_int_eq(api_check_int(job, "completed_images"), 8);
        ck_assert_int_eq(
            api_check_sql_long(db, "select count(*) from attachments where job_id = $1", ids[i]),
            api_check_int(job, "completed_images"));
        ck_assert_int_eq((json_int_t)json_array_size(json_object_get(job, "generated_attach_ids")),
                         api_check_int(job, "completed_images"));
        json_decref(job);
        free(ids[i]);
    }
    PQfinish(db);
}
END_TEST

/* ------------------------------------------------------------ bad input */

START_TEST(test_bad_input_changes_nothing_and_server_keeps_serving)
{
    PGconn *db = api_check_db(getenv("IMAGEJOBS_TEST_DATABASE"));
    long before = api_check_sql_long(db, "select count(*) from jobs where $1 = $1", "x");
    static const char *const bodies[] = {
        "{\"prompt\":",
        "[]",
        "{\"prompt\":42}",
        "{\"prompt\":\"x\",\"width\":4096}",
        "{\"prompt\":\"x\",\"steps\":0}",
        "{\"prompt\":\"x\",\"colour\":\"red\"}",
        "{\"prompt\":\"\"}",
        "{\"prompt\":\"x\",\"combinations\":\"all\"}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        api_response_t r =
            s_call("POST", "/api/jobs", "Content-Type: application/json\r\n", bodies[i]);
        ck_assert_msg(r.status == 400, "%s -> %d", bodies[i], r.status);
        ck_assert_ptr_nonnull(json_object_get(r.json, "error"));
        api_response_free(&r);
    }
    api_response_t r = s_call("POST", "/api/jobs", "Content-Type: text/plain\r\n", "hi");
    ck_assert_int_eq(r.status, 415);
    api_response_free(&r);
    r = s_call("GET", "/api/nowhere", NULL, NULL);
    ck_assert_int_eq(r.status, 404);
    api_response_free(&r);
    r = s_call("DELETE", "/api/jobs", NULL, NULL);
    ck_assert_int_eq(r.status, 405);
    char allow[64];
    ck_assert_ptr_nonnull(api_header(&r, "allow", allow, sizeof allow));
    api_response_free(&r);
    r = s_call("GET", "/api/attachments/not-a-uuid", NULL, NULL);
    ck_assert_int_eq(r.status, 400);
    api_response_free(&r);
    r = s_call("GET", "/api/attachments/550e8400-e29b-41d4-a716-446655440000", NULL, NULL);
    ck_assert_int_eq(r.status, 404);
    api_response_free(&r);

    char *big = malloc(2 * 1024 * 1024);
    memset(big, 'a', 2 * 1024 * 1024 - 1);
    big[2 * 1024 * 1024 - 1] = 0;
    r = s_call("POST", "/api/jobs", "Content-Type: application/json\r\n", big);
    ck_assert_int_eq(r.status, 413);
    api_response_free(&r);
    char *header = malloc(32 * 1024);
    snprintf(header, 32 * 1024, "X-Big: %0*d\r\n", 20000, 0);
    r = s_call("GET", "/healthz", header, NULL);
    ck_assert_int_eq(r.status, 431);
    api_response_free(&r);
    free(header);
    free(big);

    ck_assert_int_eq(api_check_sql_long(db, "select count(*) from jobs where $1 = $1", "x"),
                     before);
    PQfinish(db);
    r = s_call("GET", "/healthz", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    api_response_free(&r);
}
END_TEST

/* ------------------------------------------------------------ shutdown */

static pid_t s_server;

/* 1 when pid has exited (a zombie waiting for our parent, or gone). */
static int s_exited(pid_t pid)
{
    char path[64], stat[256] = "";
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = 0;
    const char *close_paren = strrchr(stat, ')');
    return close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z';
}

/* Runs last: SIGTERM mid-job. The server must be gone within 5 s, having
 * given its claims back (pending, unclaimed: another instance resumes at
 * once, not when the lease runs out) and kept every image it made. The
 * runner's after hook then checks its exit status. */
START_TEST(test_sigterm_releases_claims_and_keeps_images)
{
    char *id = s_create(LONG_JOB, 8);
    json_decref(s_wait_progress(id, 1, 120));
    double t0 = fixture_now();
    kill(s_server, SIGTERM);
    while (!s_exited(s_server)) {
        ck_assert_msg(fixture_now() - t0 < 5.0, "still running 5 s after SIGTERM");
        fixture_pause_ms(10);
    }
    PGconn *db = api_check_db(getenv("IMAGEJOBS_TEST_DATABASE"));
    ck_assert_int_eq(api_check_sql_long(db,
                                        "select count(*) from job_tasks where job_id = $1 and "
                                        "(status = 'processing' or claimed_by is not null and "
                                        "status = 'pending')",
                                        id),
                     0);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "select count(*) from job_tasks where job_id = $1 and "
                                        "status = 'pending'",
                                        id),
                     2);
    long done = api_check_sql_long(db, "select completed_images from jobs where id = $1", id);
    ck_assert_int_ge(done, 1);
    ck_assert_int_eq(
        api_check_sql_long(db, "select count(*) from attachments where job_id = $1", id), done);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "select coalesce(array_length(generated_attach_ids, 1), 0) "
                                        "from jobs where id = $1",
                                        id),
                     done);
    PQfinish(db);
    free(id);
}
END_TEST

/* The longest prompt and style the API accepts are generated, not refused
 * by the generator later (the store joins them as "prompt, style": a job
 * with 1,000 bytes of each once always ended failed). */
START_TEST(test_longest_prompt_and_style_are_generated)
{
    char prompt[1001], style[1001];
    memset(prompt, 'p', 1000);
    prompt[1000] = '\0';
    memset(style, 's', 1000);
    style[1000] = '\0';
    memcpy(prompt, "a lighthouse ", 13);
    memcpy(style, "oil painting ", 13);
    json_t *doc = json_pack("{s:s,s:[{s:i,s:s}],s:i,s:i,s:i}", "prompt", prompt, "combinations",
                            "seed", 1, "style", style, "width", 64, "height", 64, "steps", 1);
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    char *id = s_create(body, 1);
    free(body);
    json_t *job = api_check_wait_final(s_port, id, 60, 20);
    ck_assert_msg(strcmp(api_check_str(job, "job_status"), "completed") == 0, "ended %s: %s",
                  api_check_str(job, "job_status"),
                  json_string_value(json_object_get(job, "error")));
    ck_assert_int_eq(api_check_int(job, "completed_images"), 1);
    json_decref(job);
    /* one byte more is refused at the door, with nothing created */
    char longer[1002];
    memset(longer, 'p', 1001);
    longer[1001] = '\0';
    doc = json_pack("{s:s}", "prompt", longer);
    body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    api_response_t r = s_call("POST", "/api/jobs", "Content-Type: application/json\r\n", body);
    ck_assert_int_eq(r.status, 400);
    api_response_free(&r);
    free(body);
    free(id);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("end-to-end");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_cancel_errors_as_the_document);
    tcase_add_test(tc, test_cancel_completed_job);
    tcase_add_test(tc, test_longest_prompt_and_style_are_generated);
    tcase_add_test(tc, test_cancel_running_job_answers_as_the_document);
    tcase_add_test(tc, test_after_current_image_keeps_the_inflight_image);
    tcase_add_test(tc, test_immediate_upgrades_after_current_image);
    tcase_add_test(tc, test_cancel_pending_job_at_once);
    tcase_add_test(tc, test_50_jobs_half_cancelled_all_end_consistent);
    tcase_add_test(tc, test_bad_input_changes_nothing_and_server_keeps_serving);
    tcase_add_test(tc, test_sigterm_releases_claims_and_keeps_images); /* last */
    suite_add_tcase(s, tc);
    return s;
}

/* One server for every test: started before Check forks them. */
static int s_before(void)
{
    static const char *const need[] = {"IMAGEJOBS_TEST_REDIS", "IMAGEJOBS_TEST_DATABASE",
                                       "IMAGEJOBS_BIN", NULL};
    int rc = fixture_need_env("the end-to-end tests", need);
    if (rc != 0)
        return rc;
    s_port = api_free_port();
    const char *args[] = {"--redis",
                          getenv("IMAGEJOBS_TEST_REDIS"),
                          "--database",
                          getenv("IMAGEJOBS_TEST_DATABASE"),
                          "--generators",
                          "2",
                          "--instance",
                          "e2e",
                          NULL};
    s_server = api_serve(s_port, args, "tests/check_api.server.log", 60);
    if (s_server < 0) {
        fprintf(stderr, "check_api: the server did not become ready; see "
                        "tests/check_api.server.log\n");
        return 1;
    }
    return 0;
}

/* The last test stopped the server with SIGTERM: it must have exited 0. */
static int s_after(void)
{
    int status = api_stop(s_server, 10); /* collects it if the last test stopped it */
    if (status != 0) {
        fprintf(stderr, "check_api: the server exited with %d on SIGTERM\n", status);
        return 1;
    }
    return 0;
}

const test_program_t test_program = {.suite = s_suite, .before = s_before, .after = s_after};
