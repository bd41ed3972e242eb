/*
 * check_instances.c - several `imagejobs serve` instances against one Redis
 * and one PostgreSQL (DESIGN.md, "Several instances"; issue 5), end to end:
 * real processes on their own ports, driven over HTTP, checked through the
 * API, SQL and Redis.
 *
 * Every test makes a database of its own (ij_instances_<pid>, dropped at
 * the end), so that no other test program's server, running in parallel
 * under make -j, claims its work; the instances it starts use that
 * database and the suite's Redis (the Redis outage test starts a private
 * redis-server instead: stopping the shared one would break the others).
 * Leases are short (--lease 3; renewed every second) so that crash
 * recovery is quick. Nothing waits a fixed time for an event: conditions
 * are polled with deadlines, and nothing asserts how fast anything is
 * except where a comment says why the bound is generous.
 *
 * The PostgreSQL outage tests start a private PostgreSQL each (initdb in a
 * temporary directory, as the postgres user when run as root) for the same
 * reason: stopping the suite's would break the tests running beside it.
 */
#include "config.h"

#include "tests/api_check.h"
#include "tests/fixture.h"
#include "tests/runner.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

/* What a test started; the exit handler ends what is left of it, so that a
 * failing test (Check forks each one and exits the child) leaves nothing
 * running and no database behind. */
typedef struct {
    char name[32];
    int port;
    pid_t pid; /* 0 once stopped */
} inst_t;

#define MAX_INST 4
static inst_t s_inst[MAX_INST];
static int s_ninst;
static char s_dbname[64];
static char s_conninfo[1024]; /* the test's own database */
static pid_t s_redis_pid;     /* a private redis-server, or 0 */
static int s_redis_port;
static bool s_cleanup_registered;

static void s_cleanup(void)
{
    for (int i = 0; i < s_ninst; i++)
        if (s_inst[i].pid > 0) {
            api_kill(s_inst[i].pid);
            s_inst[i].pid = 0;
        }
    if (s_redis_pid > 0) {
        kill(s_redis_pid, SIGKILL);
        waitpid(s_redis_pid, NULL, 0);
        s_redis_pid = 0;
    }
    if (s_dbname[0]) {
        api_check_database_drop(s_dbname);
        s_dbname[0] = 0;
    }
}

/* A fresh database of this test's own; its conninfo in s_conninfo. */
static void s_make_database(void)
{
    if (!s_cleanup_registered) {
        atexit(s_cleanup);
        s_cleanup_registered = true;
    }
    api_check_database_create("ij_instances", s_dbname, sizeof s_dbname, s_conninfo,
                              sizeof s_conninfo);
}

/* Starts an instance with `generators` generator actors (not waiting for
 * it); redis: a URL or NULL for the suite's. */
static inst_t *s_spawn_with(const char *name, const char *redis, const char *lease,
                            const char *generators)
{
    ck_assert_int_lt(s_ninst, MAX_INST);
    inst_t *in = &s_inst[s_ninst++];
    snprintf(in->name, sizeof in->name, "%s-%d", name, (int)getpid());
    in->port = api_free_port();
    ck_assert_int_gt(in->port, 0);
    const char *args[] = {"--redis",
                          redis ? redis : getenv("IMAGEJOBS_TEST_REDIS"),
                          "--database",
                          s_conninfo,
                          "--generators",
                          generators,
                          "--lease",
                          lease,
                          "--instance",
                          in->name,
                          NULL};
    char log[256];
    snprintf(log, sizeof log, "tests/check_instances.%s.log", in->name);
    in->pid = api_spawn(in->port, args, log);
    ck_assert_int_gt(in->pid, 0);
    return in;
}

static inst_t *s_spawn(const char *name, const char *redis, const char *lease)
{
    return s_spawn_with(name, redis, lease, "2");
}

static void s_ready(inst_t *in)
{
    ck_assert_msg(api_wait_ready(in->port, in->pid, 60) == 0,
                  "instance %s did not become ready (see tests/check_instances.%s.log)", in->name,
                  in->name);
}

/* Starts n instances together and waits until all are ready. */
static void s_start(int n, inst_t **out, const char *redis, const char *lease)
{
    static const char *const names[] = {"A", "B", "C", "D"};
    for (int i = 0; i < n; i++)
        out[i] = s_spawn(names[i], redis, lease);
    for (int i = 0; i < n; i++)
        s_ready(out[i]);
}

/* SIGTERM; must exit 0 within timeout_s. */
static void s_stop(inst_t *in, double timeout_s)
{
    int st = api_stop(in->pid, timeout_s);
    in->pid = 0;
    ck_assert_msg(st == 0, "instance %s exited with %d on SIGTERM (-1: not within %.0f s)",
                  in->name, st, timeout_s);
}

static void s_stop_all(void)
{
    for (int i = 0; i < s_ninst; i++)
        if (s_inst[i].pid > 0)
            s_stop(&s_inst[i], 10);
}

/* A job of n combinations (seeds 1..n). Returns its id (caller frees). */
static char *s_create(inst_t *in, int combos, int size, int steps, int images)
{
    char body[1024];
    int n = snprintf(body, sizeof body, "{\"prompt\":\"a harbour seen from %s\",\"combinations\":[",
                     in->name);
    for (int i = 0; i < combos; i++)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s{\"seed\":%d}", i ? "," : "", i + 1);
    snprintf(body + n, sizeof body - (size_t)n,
             "],\"images_per_combination\":%d,\"width\":%d,\"height\":%d,\"steps\":%d}", images,
             size, size, steps);
    api_response_t r =
        api_check_call(in->port, "POST", "/api/jobs", "Content-Type: application/json\r\n", body);
    ck_assert_msg(r.status == 201, "create: %d %s", r.status, r.body);
    ck_assert_int_eq(api_check_int(r.json, "total_images"), combos * images);
    char *id = strdup(api_check_str(r.json, "job_id"));
    api_response_free(&r);
    return id;
}

/* Combinations of the job in status 'processing' (per the API). */
static int s_processing(inst_t *in, const char *id)
{
    json_t *j = api_check_job(in->port, id);
    int n = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(j, "combinations"), i, c) n +=
        !strcmp(api_check_str(c, "status"), "processing");
    json_decref(j);
    return n;
}

/* Counters, ids and rows agree; no (combination, image) twice; no image
 * made after the job ended. */
static void s_assert_consistent(PGconn *db, const char *id, json_t *job)
{
    json_int_t done = api_check_int(job, "completed_images");
    json_t *ids = json_object_get(job, "generated_attach_ids");
    ck_assert(json_is_array(ids));
    ck_assert_int_eq((json_int_t)json_array_size(ids), done);
    ck_assert_int_eq(
        api_check_sql_long(db, "select count(*) from attachments where job_id = $1", id), done);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "select count(distinct (combination, image_index)) from "
                                        "attachments where job_id = $1",
                                        id),
                     done);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "select count(distinct x) from jobs, "
                                        "unnest(generated_attach_ids) x where id = $1",
                                        id),
                     done);
    ck_assert_int_eq(
        api_check_sql_long(db,
                           "select count(*) from jobs j, unnest(j.generated_attach_ids) x "
                           "where j.id = $1 and not exists (select 1 from attachments a "
                           "where a.id = x and a.job_id = j.id)",
                           id),
        0);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "select count(*) from attachments a join jobs j on j.id = "
                                        "a.job_id where j.id = $1 and a.created_at > j.finished_at",
                                        id),
                     0);
    /* each combination's counter is its rows */
    ck_assert_int_eq(
        api_check_sql_long(db,
                           "select count(*) from job_tasks t where t.job_id = $1 and "
                           "t.completed_images <> (select count(*) from attachments a "
                           "where a.job_id = t.job_id and a.combination = t.combination)",
                           id),
        0);
    json_int_t sum = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(job, "combinations"), i, c) sum +=
        api_check_int(c, "completed_images");
    ck_assert_int_eq(sum, done);
}

/* A completed job: every image there, exactly once. */
static void s_assert_complete(PGconn *db, const char *id, json_t *job, int total)
{
    ck_assert_str_eq(api_check_str(job, "job_status"), "completed");
    ck_assert_int_eq(api_check_int(job, "completed_images"), total);
    s_assert_consistent(db, id, job);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "select count(*) from job_tasks where job_id = $1 and "
                                        "status <> 'completed'",
                                        id),
                     0);
}

/* Polls key in Redis (port) until it reads "true". */
static void s_wait_flag(int port, const char *id, double timeout_s)
{
    double deadline = fixture_now() + timeout_s;
    for (;;) {
        redisContext *rc = redisConnect("127.0.0.1", port);
        if (rc && !rc->err) {
            redisReply *get = redisCommand(rc, "GET job:%s:cancelled", id);
            int ok = get && get->type == REDIS_REPLY_STRING && !strcmp(get->str, "true");
            if (get)
                freeReplyObject(get);
            redisFree(rc);
            if (ok)
                return;
        } else if (rc) {
            redisFree(rc);
        }
        ck_assert_msg(fixture_now() < deadline, "job:%s:cancelled not in Redis :%d within %.0f s",
                      id, port, timeout_s);
        fixture_pause_ms(50);
    }
}

/* ------------------------------------------------------------ spread */

/* A job created on A spreads over A, B and C: the Redis wake-up
 * (imagejobs:work) reaches B and C at once, so even a small job (it ends
 * in about a second) does not run on A alone, as it would if they waited
 * for their 2 s sweep. */
START_TEST(test_six_combinations_spread_over_three_instances)
{
    s_make_database();
    inst_t *in[3];
    s_start(3, in, NULL, "3");
    char *id = s_create(in[0], 6, 128, 20, 3);
    json_t *job = api_check_wait_final(in[1]->port, id, 50, 50);
    PGconn *db = api_check_db(s_conninfo);
    s_assert_complete(db, id, job, 18);
    json_decref(job);
    /* with 6 combinations and 2 generators each, all 3 are likely: 2 is
     * what cannot fail by chance */
    long holders = api_check_sql_long(db,
                                      "select count(distinct claimed_by) from job_tasks where "
                                      "job_id = $1",
                                      id);
    ck_assert_msg(holders >= 2, "all 6 combinations ran on %ld instance(s)", holders);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "select count(*) from job_tasks where job_id = $1 and "
                                        "claimed_by is null",
                                        id),
                     0);
    /* the same document from every instance */
    for (int i = 0; i < 3; i++) {
        json_t *j = api_check_job(in[i]->port, id);
        ck_assert_str_eq(api_check_str(j, "job_status"), "completed");
        ck_assert_int_eq(api_check_int(j, "completed_images"), 18);
        json_decref(j);
    }
    PQfinish(db);
    free(id);
    s_stop_all();
    s_cleanup();
}
END_TEST

/* ------------------------------------------------------------ cancel */

/* Cancels job id through `via` and reads it through `reader` until it
 * ends: user_cancelled, with every combination cancelled, observed and
 * stopped. The job's document (caller frees). */
static json_t *s_cancel_until_ended(inst_t *via, inst_t *reader, const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    api_response_t r = api_check_call(via->port, "POST", path, NULL, NULL);
    ck_assert_msg(r.status == 200, "cancel: %d %s", r.status, r.body);
    ck_assert(json_is_true(json_object_get(r.json, "success")));
    api_response_free(&r);

    json_t *job = api_check_wait_final(reader->port, id, 30, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    ck_assert(json_is_string(json_object_get(job, "finished_at")));
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(job, "combinations"), i, c)
    {
        ck_assert_str_eq(api_check_str(c, "status"), "cancelled");
        ck_assert_msg(json_is_string(json_object_get(c, "cancel_observed_at")),
                      "combination %zu: no cancel_observed_at", i);
        ck_assert(json_is_string(json_object_get(c, "stopped_at")));
    }
    return job;
}

START_TEST(test_cancel_through_one_instance_stops_all)
{
    s_make_database();
    inst_t *in[3];
    s_start(3, in, NULL, "3");
    char *id = s_create(in[1], 6, 256, 80, 10);
    /* 6 combinations, 6 generators: wait until every one runs somewhere */
    double deadline = fixture_now() + 30;
    while (s_processing(in[2], id) < 6) {
        ck_assert_msg(fixture_now() < deadline, "the 6 combinations never all ran");
        fixture_pause_ms(20);
    }
    PGconn *db = api_check_db(s_conninfo);
    ck_assert_int_ge(api_check_sql_long(db,
                                        "select count(distinct claimed_by) from job_tasks where "
                                        "job_id = $1 and status = 'processing'",
                                        id),
                     3);
    json_t *job = s_cancel_until_ended(in[0], in[2], id);
    ck_assert_int_lt(api_check_int(job, "completed_images"), 60);
    s_assert_consistent(db, id, job);
    json_decref(job);
    s_wait_flag(atoi(getenv("IMAGEJOBS_TEST_REDIS_PORT")), id, 10);
    PQfinish(db);
    free(id);
    s_stop_all();
    s_cleanup();
}
END_TEST

/* Eight busy CPU generators on one instance (more than this machine's
 * cores), all sharing its compute pool: one cancel stops every one of
 * them, and every image made before it is kept. */
START_TEST(test_cancel_with_eight_busy_generators_stops_every_one)
{
    setenv("IMAGEJOBS_BACKEND", "cpu", 1); /* the pool is the CPU backend's */
    s_make_database();
    inst_t *in = s_spawn_with("A", NULL, "3", "8");
    s_ready(in);
    char *id = s_create(in, 8, 128, 20, 100);
    /* every combination runs and has recorded an image */
    double deadline = fixture_now() + 60;
    json_int_t before[8];
    for (;;) {
        json_t *j = api_check_job(in->port, id);
        json_t *combos = json_object_get(j, "combinations");
        ck_assert_int_eq(json_array_size(combos), 8);
        int ready = 0;
        size_t i;
        json_t *c;
        json_array_foreach(combos, i, c)
        {
            before[i] = api_check_int(c, "completed_images");
            ready += !strcmp(api_check_str(c, "status"), "processing") && before[i] >= 1;
        }
        json_decref(j);
        if (ready == 8)
            break;
        ck_assert_msg(fixture_now() < deadline, "the 8 combinations never all ran and recorded");
        fixture_pause_ms(20);
    }
    json_t *job = s_cancel_until_ended(in, in, id);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(job, "combinations"), i, c)
    {
        json_int_t n = api_check_int(c, "completed_images");
        ck_assert_msg(n >= before[i] && n < 100, "combination %zu: %lld images, %lld before", i,
                      (long long)n, (long long)before[i]);
    }
    PGconn *db = api_check_db(s_conninfo);
    s_assert_consistent(db, id, job);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "select count(*) from job_tasks where job_id = $1 and "
                                        "status <> 'cancelled'",
                                        id),
                     0);
    json_decref(job);
    PQfinish(db);
    free(id);
    s_stop_all();
    s_cleanup();
}
END_TEST

/* ------------------------------------------------------------ kill -9 */

START_TEST(test_kill9_one_instance_job_still_completes_once)
{
    s_make_database();
    inst_t *in[2];
    s_start(2, in, NULL, "3");
    char *id = s_create(in[0], 4, 256, 40, 4);
    PGconn *db = api_check_db(s_conninfo);
    /* both hold claims, and B has recorded an image of one of its own:
     * whoever takes it over must resume at the next image */
    const char *params[2] = {id, in[1]->name};
    double deadline = fixture_now() + 30;
    for (;;) {
        PGresult *res = PQexecParams(db,
                                     "select count(distinct claimed_by), count(*) filter "
                                     "(where claimed_by = $2 and completed_images > 0) from "
                                     "job_tasks where job_id = $1 and status = 'processing'",
                                     2, NULL, params, NULL, NULL, 0);
        ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
        int ready = atol(PQgetvalue(res, 0, 0)) == 2 && atol(PQgetvalue(res, 0, 1)) >= 1;
        PQclear(res);
        if (ready)
            break;
        ck_assert_msg(fixture_now() < deadline, "the two instances never both held claims");
        fixture_pause_ms(20);
    }
    ck_assert_int_eq(WTERMSIG(api_kill(in[1]->pid)), SIGKILL);
    in[1]->pid = 0;
    /* what B held when it died, unfinished */
    PGresult *res = PQexecParams(db,
                                 "select count(*) from job_tasks where job_id = $1 and "
                                 "claimed_by = $2 and status = 'processing'",
                                 2, NULL, params, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    long held = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    ck_assert_int_ge(held, 1);

    json_t *job = api_check_wait_final(in[0]->port, id, 55, 50);
    s_assert_complete(db, id, job, 16);
    json_decref(job);
    /* B's combinations were taken over by A once their lease ran out */
    res = PQexecParams(db,
                       "select count(*) from job_tasks where job_id = $1 and "
                       "claimed_by = $2",
                       2, NULL, params, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    ck_assert_int_eq(atol(PQgetvalue(res, 0, 0)), 0);
    PQclear(res);
    ck_assert_int_eq(api_check_sql_long(db, "select count(*) from job_tasks where job_id = $1", id),
                     4);
    params[1] = in[0]->name;
    res = PQexecParams(db,
                       "select count(*) from job_tasks where job_id = $1 and "
                       "claimed_by = $2",
                       2, NULL, params, NULL, NULL, 0);
    ck_assert_int_eq(atol(PQgetvalue(res, 0, 0)), 4);
    PQclear(res);
    PQfinish(db);
    free(id);
    s_stop_all();
    s_cleanup();
}
END_TEST

/* A cancelled job whose instance died: its combination is still
 * `processing`, held by a lease nobody renews, and claims skip cancelled
 * jobs, so nothing took it over; it stayed `processing` forever. Every
 * instance's store now ends such combinations once their lease has run
 * out, and the job ends `user_cancelled` with its images. `first` says
 * when the cancel comes: 'k' after the kill -9 and the restart, 'c' (mode
 * after_current_image) just before the kill. */
static void s_cancel_survives_kill9(char first)
{
    s_make_database();
    inst_t *a = s_spawn("A", NULL, "2");
    s_ready(a);
    char *id = s_create(a, 1, 256, 30, 10);
    PGconn *db = api_check_db(s_conninfo);
    double deadline = fixture_now() + 60;
    while (api_check_sql_long(db, "select completed_images from jobs where id = $1", id) < 2) {
        ck_assert_msg(fixture_now() < deadline, "the job never made 2 images");
        fixture_pause_ms(20);
    }
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    if (first == 'c') {
        api_response_t r =
            api_check_call(a->port, "POST", path, NULL, "{\"mode\":\"after_current_image\"}");
        ck_assert_msg(r.status == 200, "cancel: %d %s", r.status, r.body);
        ck_assert(json_is_true(json_object_get(r.json, "success")));
        api_response_free(&r);
    }
    ck_assert_int_eq(WTERMSIG(api_kill(a->pid)), SIGKILL);
    a->pid = 0;
    /* no generators on B: nothing may resume the job before the cancel, so
     * the dead instance's lapsed lease is all that holds it */
    inst_t *b = s_spawn_with("B", NULL, "2", "0");
    s_ready(b);
    if (first == 'k') {
        api_response_t r = api_check_call(b->port, "POST", path, NULL, NULL);
        ck_assert_msg(r.status == 200, "cancel: %d %s", r.status, r.body);
        ck_assert(json_is_true(json_object_get(r.json, "success")));
        ck_assert_str_eq(api_check_str(r.json, "current_status"), "processing");
        api_response_free(&r);
    }
    /* well within a few lease periods (2 s), on the instance that lives */
    json_t *job = api_check_wait_final(b->port, id, 30, 50);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    ck_assert_int_ge(api_check_int(job, "completed_images"), 2);
    ck_assert_int_lt(api_check_int(job, "completed_images"), 10);
    s_assert_consistent(db, id, job);
    json_t *c = json_array_get(json_object_get(job, "combinations"), 0);
    ck_assert_str_eq(api_check_str(c, "status"), "cancelled");
    ck_assert(json_is_string(json_object_get(c, "stopped_at")));
    json_decref(job);
    PQfinish(db);
    free(id);
    s_stop_all();
    s_cleanup();
}

START_TEST(test_cancel_after_kill9_ends_the_job)
{
    s_cancel_survives_kill9('k');
}
END_TEST

START_TEST(test_kill9_after_cancel_ends_the_job)
{
    s_cancel_survives_kill9('c');
}
END_TEST

/* ------------------------------------------------------------ SIGTERM */

START_TEST(test_sigterm_one_instance_other_resumes_before_lease)
{
    s_make_database();
    inst_t *in[2];
    s_start(2, in, NULL, "30");
    char *id = s_create(in[0], 4, 256, 40, 4);
    PGconn *db = api_check_db(s_conninfo);
    const char *params[2] = {id, in[1]->name};
    double deadline = fixture_now() + 30;
    for (;;) {
        PGresult *res = PQexecParams(db,
                                     "select count(*) from job_tasks where job_id = $1 and "
                                     "claimed_by = $2 and status = 'processing'",
                                     2, NULL, params, NULL, NULL, 0);
        ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
        long held = atol(PQgetvalue(res, 0, 0));
        PQclear(res);
        if (held >= 1)
            break;
        ck_assert_msg(fixture_now() < deadline, "B never held a claim");
        fixture_pause_ms(20);
    }
    double t_term = fixture_now();
    s_stop(in[1], 5); /* exits 0 within 5 s */
    /* what B gave back: unfinished, and no longer B's */
    PGresult *res = PQexecParams(db,
                                 "select count(*) from job_tasks where job_id = $1 and "
                                 "claimed_by = $2 and status <> 'completed'",
                                 2, NULL, params, NULL, NULL, 0);
    ck_assert_int_eq(atol(PQgetvalue(res, 0, 0)), 0);
    PQclear(res);

    /* A resumes B's combinations at once, not when B's 30 s lease would
     * have run out: the whole job ends within 25 s of the SIGTERM. The
     * remaining work takes a few seconds on A alone; 25 s is a generous
     * bound that only a claim waiting out the lease could break. */
    json_t *job = api_check_wait_final(in[0]->port, id, 25 - (fixture_now() - t_term), 50);
    s_assert_complete(db, id, job, 16);
    json_decref(job);
    PQfinish(db);
    free(id);
    s_stop_all();
    s_cleanup();
}
END_TEST

/* ------------------------------------------------------------ Redis outage */

static void s_redis_start(int port, const char *dir)
{
    pid_t pid = api_redis_start(port, dir, 10);
    ck_assert_msg(pid > 0, "redis-server on %d did not start (%s/redis.log)", port, dir);
    s_redis_pid = pid;
    s_redis_port = port;
}

static void s_redis_stop(void)
{
    kill(s_redis_pid, SIGTERM);
    ck_assert_int_eq(waitpid(s_redis_pid, NULL, 0), s_redis_pid);
    s_redis_pid = 0;
}

START_TEST(test_redis_outage_cancel_is_kept_and_flag_written)
{
    s_make_database();
    char dir[] = "/tmp/ij-instances-redis-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    int port = api_free_port();
    s_redis_start(port, dir);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    inst_t *in[1];
    s_start(1, in, url, "3");
    char *id = s_create(in[0], 2, 256, 80, 10);
    double deadline = fixture_now() + 30;
    while (s_processing(in[0], id) < 1) {
        ck_assert_msg(fixture_now() < deadline, "the job never started");
        fixture_pause_ms(20);
    }
    s_redis_stop();

    /* PostgreSQL holds the cancel: the API answers as usual */
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    api_response_t r = api_check_call(in[0]->port, "POST", path, NULL, NULL);
    ck_assert_msg(r.status == 200, "cancel with Redis down: %d %s", r.status, r.body);
    ck_assert(json_is_true(json_object_get(r.json, "success")));
    api_response_free(&r);

    s_redis_start(port, dir); /* back on the same port */
    json_t *job = api_check_wait_final(in[0]->port, id, 30, 50);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    PGconn *db = api_check_db(s_conninfo);
    s_assert_consistent(db, id, job);
    PQfinish(db);
    json_decref(job);
    /* the seed's flag, written once Redis is back */
    s_wait_flag(port, id, 20);
    free(id);
    s_stop_all();
    s_redis_stop();
    s_cleanup();
    char log[512];
    snprintf(log, sizeof log, "%s/redis.log", dir);
    unlink(log);
    rmdir(dir);
}
END_TEST

/* ------------------------------------------------------------ PostgreSQL outage */

/* A private PostgreSQL (stopping the suite's would break the test
 * programs running beside this one): its directory, or "" when none. The
 * directory is named after the runner's pid; the runner's teardown
 * (s_pg_teardown) ends what a failed test left there: a failed assertion
 * leaves the test's process with _exit, so its atexit handlers never run. */
static char s_pg_dir[64];
static int s_pg_port;
static pid_t s_runner_pid; /* the runner's pid (tests run in children) */

/* Runs a PostgreSQL program (argv[0]: its name in IMAGEJOBS_TEST_PGBIN) as
 * postgres when we are root (they refuse root), from s_pg_dir, output to
 * s_pg_dir/cmd.log. Returns its exit status, -1 when it did not exit. */
static int s_pg_run(const char *const *argv)
{
    const char *bin = getenv("IMAGEJOBS_TEST_PGBIN");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", bin ? bin : "/usr/lib/postgresql/15/bin", argv[0]);
    const char *full[16];
    int n = 0;
    if (geteuid() == 0) {
        full[n++] = "runuser";
        full[n++] = "-u";
        full[n++] = "postgres";
        full[n++] = "--";
    }
    full[n++] = path;
    for (int i = 1; argv[i] && n < 15; i++)
        full[n++] = argv[i];
    full[n] = NULL;
    char log[128];
    snprintf(log, sizeof log, "%s/cmd.log", s_pg_dir);
    pid_t pid = api_exec(full, s_pg_dir, log, false);
    if (pid < 0)
        return -1;
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int s_pg_ctl_start(void)
{
    char data[128], log[128], opts[256];
    snprintf(data, sizeof data, "%s/data", s_pg_dir);
    snprintf(log, sizeof log, "%s/pg.log", s_pg_dir);
    snprintf(opts, sizeof opts,
             "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
             "-c synchronous_commit=off",
             s_pg_port, s_pg_dir);
    const char *argv[] = {"pg_ctl", "-D", data, "-l", log,     "-w",
                          "-t",     "30", "-o", opts, "start", NULL};
    return s_pg_run(argv);
}

static int s_pg_ctl_stop(const char *mode)
{
    char data[128];
    snprintf(data, sizeof data, "%s/data", s_pg_dir);
    const char *argv[] = {"pg_ctl", "-D", data, "-m", mode, "-w", "-t", "30", "stop", NULL};
    return s_pg_run(argv);
}

/* Stops the private PostgreSQL if it runs and removes its directory. */
static void s_pg_cleanup(void)
{
    if (!s_pg_dir[0])
        return;
    char pidfile[128];
    snprintf(pidfile, sizeof pidfile, "%s/data/postmaster.pid", s_pg_dir);
    if (access(pidfile, F_OK) == 0)
        s_pg_ctl_stop("immediate");
    fixture_remove_tree(s_pg_dir);
    s_pg_dir[0] = 0;
}

/* In the runner, after the test case: kills an instance a failed test left
 * (its pid in DIR/instance.pid, if it still runs imagejobs), then stops
 * that PostgreSQL and removes its directory. */
static void s_pg_teardown(void)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "/tmp/ij-instances-pg-%d-*", (int)s_runner_pid);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0)
        return;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        if (strlen(g.gl_pathv[i]) >= sizeof s_pg_dir)
            continue;
        strcpy(s_pg_dir, g.gl_pathv[i]);
        char path[128], comm[64] = "";
        snprintf(path, sizeof path, "%s/instance.pid", s_pg_dir);
        FILE *f = fopen(path, "r");
        int pid = 0;
        if (f) {
            if (fscanf(f, "%d", &pid) != 1)
                pid = 0;
            fclose(f);
        }
        snprintf(path, sizeof path, "/proc/%d/comm", pid);
        f = pid > 0 ? fopen(path, "r") : NULL;
        if (f) {
            if (!fgets(comm, sizeof comm, f))
                comm[0] = 0;
            fclose(f);
        }
        if (!strncmp(comm, "imagejobs", 9))
            kill(pid, SIGKILL);
        s_pg_cleanup();
    }
    globfree(&g);
}

/* Makes and starts the private PostgreSQL on a free port; its conninfo
 * (database postgres: the instance migrates it) in s_conninfo. */
static void s_pg_start_private(void)
{
    snprintf(s_pg_dir, sizeof s_pg_dir, "/tmp/ij-instances-pg-%d-XXXXXX", (int)s_runner_pid);
    ck_assert_ptr_nonnull(mkdtemp(s_pg_dir));
    if (geteuid() == 0) {
        /* postgres must own it and reach it (/tmp is world-traversable) */
        struct passwd *pw = getpwnam("postgres");
        ck_assert_msg(pw != NULL, "no postgres user to run PostgreSQL as");
        ck_assert_int_eq(chown(s_pg_dir, pw->pw_uid, pw->pw_gid), 0);
    }
    ck_assert_int_eq(chmod(s_pg_dir, 0755), 0);
    char data[128];
    snprintf(data, sizeof data, "%s/data", s_pg_dir);
    const char *initdb[] = {"initdb", "-D", data,   "-U",          "postgres", "-A",
                            "trust",  "-E", "UTF8", "--no-locale", NULL};
    ck_assert_msg(s_pg_run(initdb) == 0, "initdb failed (see %s/cmd.log)", s_pg_dir);
    s_pg_port = api_free_port();
    ck_assert_int_gt(s_pg_port, 0);
    ck_assert_msg(s_pg_ctl_start() == 0, "PostgreSQL did not start (see %s/pg.log)", s_pg_dir);
    snprintf(s_conninfo, sizeof s_conninfo, "host=127.0.0.1 port=%d dbname=postgres user=postgres",
             s_pg_port);
    PQfinish(api_check_db(s_conninfo));
}

/* Whether a line with both a and b occurs in path after its first from
 * bytes. */
static bool s_file_has(const char *path, long from, const char *a, const char *b)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool found = false;
    if (fseek(f, from, SEEK_SET) == 0) {
        char line[2048];
        while (!found && fgets(line, sizeof line, f))
            found = strstr(line, a) && strstr(line, b);
    }
    fclose(f);
    return found;
}

static long s_file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : 0;
}

/* Tells the teardown which instance runs against the private PostgreSQL
 * (DIR/instance.pid), so a failed test leaves no server behind. */
static void s_pg_watch(const inst_t *in)
{
    char pidfile[128];
    snprintf(pidfile, sizeof pidfile, "%s/instance.pid", s_pg_dir);
    FILE *pf = fopen(pidfile, "w");
    ck_assert_ptr_nonnull(pf);
    fprintf(pf, "%d\n", (int)in->pid);
    fclose(pf);
}

/* PostgreSQL stops mid-job for a few seconds: the API answers 503 for what
 * needs it, the instance stays up, a finished image is held, and once
 * PostgreSQL is back (same port, no restart of the instance) the job
 * completes with every image exactly once. */
START_TEST(test_postgres_outage_job_completes)
{
    s_pg_start_private();
    inst_t *in[1];
    s_start(1, in, NULL, "10");
    s_pg_watch(in[0]);
    char log[256];
    snprintf(log, sizeof log, "tests/check_instances.%s.log", in[0]->name);
    char *id = s_create(in[0], 2, 256, 40, 4);

    /* at least one image recorded, and the job not over */
    double deadline = fixture_now() + 30;
    for (;;) {
        json_t *j = api_check_job(in[0]->port, id);
        json_int_t done = api_check_int(j, "completed_images");
        json_decref(j);
        ck_assert_msg(done < 8, "the job ended before PostgreSQL could be stopped");
        if (done >= 1)
            break;
        ck_assert_msg(fixture_now() < deadline, "no image recorded within 30 s");
        fixture_pause_ms(20);
    }
    long log_at = s_file_size(log);
    ck_assert_msg(s_pg_ctl_stop("fast") == 0, "pg_ctl stop failed (see %s/cmd.log)", s_pg_dir);

    /* the API answers 503 with a JSON error; the instance stays alive */
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s", id);
    api_response_t r = api_check_call(in[0]->port, "GET", path, NULL, NULL);
    ck_assert_msg(r.status == 503, "get with PostgreSQL down: %d %s", r.status, r.body);
    ck_assert_msg(json_is_string(json_object_get(r.json, "error")), "503 body: %s", r.body);
    api_response_free(&r);
    r = api_check_call(in[0]->port, "GET", "/healthz", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    api_response_free(&r);
    ck_assert_int_eq(waitpid(in[0]->pid, NULL, WNOHANG), 0);

    /* generation goes on: both combinations finish an image the store
     * cannot record, and hold it (about an image's time, a second or two) */
    char held[2][160];
    for (int c = 0; c < 2; c++)
        snprintf(held[c], sizeof held[c], "of %s/%d (", id, c);
    deadline = fixture_now() + 20;
    while (!s_file_has(log, log_at, held[0], "; holding it")
           || !s_file_has(log, log_at, held[1], "; holding it")) {
        ck_assert_int_eq(waitpid(in[0]->pid, NULL, WNOHANG), 0);
        ck_assert_msg(fixture_now() < deadline,
                      "not both combinations held an image within 20 s "
                      "(see %s)",
                      log);
        fixture_pause_ms(50);
    }
    ck_assert_int_eq(waitpid(in[0]->pid, NULL, WNOHANG), 0);
    r = api_check_call(in[0]->port, "GET", path, NULL, NULL);
    ck_assert_msg(r.status == 503, "get with PostgreSQL down: %d %s", r.status, r.body);
    api_response_free(&r);

    /* back on the same port: the held images are recorded, the job ends */
    ck_assert_msg(s_pg_ctl_start() == 0, "PostgreSQL did not restart (see %s/pg.log)", s_pg_dir);
    /* 503 until the store has reconnected (its backoff is at most 1 s) */
    json_t *job = NULL;
    deadline = fixture_now() + 30;
    for (;;) {
        r = api_check_call(in[0]->port, "GET", path, NULL, NULL);
        ck_assert_msg(r.status == 200 || r.status == 503, "get: %d %s", r.status, r.body);
        if (r.status == 200 && api_check_final(api_check_str(r.json, "job_status")))
            job = json_incref(r.json);
        api_response_free(&r);
        if (job)
            break;
        ck_assert_msg(fixture_now() < deadline, "job %s did not end within 30 s of the restart",
                      id);
        fixture_pause_ms(50);
    }
    PGconn *db = api_check_db(s_conninfo);
    s_assert_complete(db, id, job, 8);
    PQfinish(db);
    json_decref(job);
    free(id);
    s_stop_all();
    ck_assert_msg(s_pg_ctl_stop("fast") == 0, "pg_ctl stop failed (see %s/cmd.log)", s_pg_dir);
    s_pg_cleanup();
}
END_TEST

/* With PostgreSQL down, a cancel is taken (202, success) and kept, not
 * refused with a 503 that then cancelled anyway: the running job stops at
 * once (the event), and both it and a pending one (no generator ran it)
 * end user_cancelled when PostgreSQL is back. */
START_TEST(test_cancels_during_postgres_outage_are_kept)
{
    s_pg_start_private();
    inst_t *in = s_spawn_with("A", NULL, "10", "1"); /* one generator: the second job waits */
    s_ready(in);
    s_pg_watch(in);
    char *running = s_create(in, 1, 256, 60, 20);
    char *pending = s_create(in, 1, 64, 2, 1);
    double deadline = fixture_now() + 30;
    while (s_processing(in, running) < 1) {
        ck_assert_msg(fixture_now() < deadline, "the first job never ran");
        fixture_pause_ms(20);
    }
    ck_assert_msg(s_pg_ctl_stop("fast") == 0, "pg_ctl stop failed (see %s/cmd.log)", s_pg_dir);
    const char *ids[2] = {pending, running};
    for (int i = 0; i < 2; i++) {
        char path[128];
        snprintf(path, sizeof path, "/api/jobs/%s/cancel", ids[i]);
        api_response_t r = api_check_call(in->port, "POST", path, NULL, NULL);
        ck_assert_msg(r.status == 202, "cancel with PostgreSQL down: %d %s", r.status, r.body);
        ck_assert(json_is_true(json_object_get(r.json, "success")));
        ck_assert_str_eq(api_check_str(r.json, "job_id"), ids[i]);
        api_response_free(&r);
    }
    ck_assert_msg(s_pg_ctl_start() == 0, "PostgreSQL did not restart (see %s/pg.log)", s_pg_dir);
    PGconn *db = api_check_db(s_conninfo);
    for (int i = 0; i < 2; i++) {
        json_t *job = NULL;
        deadline = fixture_now() + 30;
        while (!job) {
            char path[128];
            snprintf(path, sizeof path, "/api/jobs/%s", ids[i]);
            api_response_t r = api_check_call(in->port, "GET", path, NULL, NULL);
            if (r.status == 200 && api_check_final(api_check_str(r.json, "job_status")))
                job = json_incref(r.json);
            api_response_free(&r);
            ck_assert_msg(job || fixture_now() < deadline, "job %s did not end after the restart",
                          ids[i]);
            if (!job)
                fixture_pause_ms(50);
        }
        ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
        ck_assert(json_is_true(json_object_get(job, "cancel_requested")));
        s_assert_consistent(db, ids[i], job);
        json_decref(job);
    }
    ck_assert_int_eq(
        api_check_sql_long(db, "select completed_images from jobs where id = $1", pending), 0);
    PQfinish(db);
    free(running);
    free(pending);
    s_stop_all();
    ck_assert_msg(s_pg_ctl_stop("fast") == 0, "pg_ctl stop failed (see %s/cmd.log)", s_pg_dir);
    s_pg_cleanup();
}
END_TEST

/* The status of GET path on port (the body is dropped). */
static int s_status_of(int port, const char *path)
{
    api_response_t r = api_check_call(port, "GET", path, NULL, NULL);
    int status = r.status;
    api_response_free(&r);
    return status;
}

/* PostgreSQL down for 7 s while /readyz keeps being asked (the store's
 * backoff reaches its cap), then back on the same port: the job document
 * and /readyz answer 200 within 3 s of the restart. The store wakes on
 * the requests that it refuses, and retries at least every second anyway.
 * With the old 5 s cap and no wake, its attempts after the loss came at
 * 0.1, 0.3, 0.7, 1.5, 3.1, 6.3 and 11.3 s: the first after a restart 7 s
 * into the outage was more than 3 s away. The bound leaves a second and
 * more for a busy machine. */
START_TEST(test_postgres_return_is_served_at_once)
{
    s_pg_start_private();
    inst_t *in[1];
    s_start(1, in, NULL, "10");
    s_pg_watch(in[0]);
    char *id = s_create(in[0], 1, 64, 2, 1);
    json_decref(api_check_wait_final(in[0]->port, id, 30, 50));
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s", id);

    ck_assert_msg(s_pg_ctl_stop("fast") == 0, "pg_ctl stop failed (see %s/cmd.log)", s_pg_dir);
    double until = fixture_now() + 7;
    while (fixture_now() < until) {
        int st = s_status_of(in[0]->port, "/readyz");
        ck_assert_msg(st == 503, "/readyz with PostgreSQL down: %d", st);
        fixture_pause_ms(100);
    }
    ck_assert_int_eq(s_status_of(in[0]->port, path), 503);

    ck_assert_msg(s_pg_ctl_start() == 0, "PostgreSQL did not restart (see %s/pg.log)", s_pg_dir);
    double back = fixture_now(), job_at = 0, ready_at = 0;
    while (!job_at || !ready_at) {
        int job = s_status_of(in[0]->port, path), ready = s_status_of(in[0]->port, "/readyz");
        ck_assert_msg(job == 200 || job == 503, "get: %d", job);
        ck_assert_msg(ready == 200 || ready == 503, "/readyz: %d", ready);
        if (!job_at && job == 200)
            job_at = fixture_now();
        if (!ready_at && ready == 200)
            ready_at = fixture_now();
        ck_assert_msg(fixture_now() < back + 30, "still 503 30 s after PostgreSQL's return");
        fixture_pause_ms(50);
    }
    ck_assert_msg(job_at - back < 3., "GET %s answered 200 %.2f s after PostgreSQL was back", path,
                  job_at - back);
    ck_assert_msg(ready_at - back < 3., "/readyz answered 200 %.2f s after PostgreSQL was back",
                  ready_at - back);
    free(id);
    s_stop_all();
    ck_assert_msg(s_pg_ctl_stop("fast") == 0, "pg_ctl stop failed (see %s/cmd.log)", s_pg_dir);
    s_pg_cleanup();
}
END_TEST

/* ------------------------------------------------------------ migration */

START_TEST(test_two_instances_started_together_migrate_once)
{
    s_make_database(); /* fresh: no schema yet */
    inst_t *in[2];
    s_start(2, in, NULL, "3");
    PGconn *db = api_check_db(s_conninfo);
    long rows = api_check_sql_long(db, "select count(*) from schema_version where $1 = $1", "x");
    ck_assert_int_ge(rows, 1);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "select count(distinct version) from schema_version "
                                        "where $1 = $1",
                                        "x"),
                     rows);
    ck_assert_int_eq(
        api_check_sql_long(db, "select max(version) from schema_version where $1 = $1", "x"), rows);
    ck_assert_int_eq(
        api_check_sql_long(db, "select min(version) from schema_version where $1 = $1", "x"), 1);
    PQfinish(db);
    /* both serve: a job made on one completes and reads the same on the other */
    char *id = s_create(in[0], 1, 64, 2, 1);
    json_t *job = api_check_wait_final(in[1]->port, id, 30, 50);
    ck_assert_str_eq(api_check_str(job, "job_status"), "completed");
    json_decref(job);
    free(id);
    s_stop_all();
    s_cleanup();
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("instances");
    TCase *tc = tcase_create("several instances");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, NULL, s_pg_teardown);
    tcase_add_test(tc, test_two_instances_started_together_migrate_once);
    tcase_add_test(tc, test_six_combinations_spread_over_three_instances);
    tcase_add_test(tc, test_cancel_through_one_instance_stops_all);
    tcase_add_test(tc, test_cancel_with_eight_busy_generators_stops_every_one);
    tcase_add_test(tc, test_kill9_one_instance_job_still_completes_once);
    tcase_add_test(tc, test_cancel_after_kill9_ends_the_job);
    tcase_add_test(tc, test_kill9_after_cancel_ends_the_job);
    tcase_add_test(tc, test_sigterm_one_instance_other_resumes_before_lease);
    tcase_add_test(tc, test_redis_outage_cancel_is_kept_and_flag_written);
    tcase_add_test(tc, test_postgres_outage_job_completes);
    tcase_add_test(tc, test_cancels_during_postgres_outage_are_kept);
    tcase_add_test(tc, test_postgres_return_is_served_at_once);
    suite_add_tcase(s, tc);
    return s;
}

static int s_before(void)
{
    static const char *const need[] = {"IMAGEJOBS_TEST_REDIS", "IMAGEJOBS_TEST_REDIS_PORT",
                                       "IMAGEJOBS_TEST_DATABASE", "IMAGEJOBS_BIN", NULL};
    s_runner_pid = getpid();
    return fixture_need_env("the instance tests", need);
}

const test_program_t test_program = {.suite = s_suite, .before = s_before};
