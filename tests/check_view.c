/*
 * check_view.c - the job view (docs/store.md, "The job view and its
 * consistency rule"), end to end: real `imagejobs serve` processes on the
 * suite's (or a private) Redis and the test's own database, real HTTP.
 * What the view answers is compared byte for byte with what an instance
 * with the view off (--view-cache-mb 0: every GET from PostgreSQL)
 * answers, and with the answers of the writes themselves. No timing is
 * asserted: every wait is for an outcome, with a generous deadline.
 */
#include "config.h"

#include "runtime/token.h"
#include "tests/api_check.h"
#include "tests/fixture.h"
#include "tests/instances.h"
#include "tests/runner.h"

#include <check.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define OFF "--view-cache-mb", "0"

/* ------------------------------------------------------------ helpers */

/* GET path on in with headers (may be NULL): status and body (caller frees). */
static char *s_get(const inst_t *in, const char *path, const char *headers, int *status)
{
    api_response_t r = api_check_call(in->port, "GET", path, headers, NULL);
    *status = r.status;
    char *body = strdup(r.body ? r.body : "");
    api_response_free(&r);
    return body;
}

/* GET /api/jobs/{id} on in: must answer 200; the body (caller frees). */
static char *s_doc(const inst_t *in, const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s", id);
    int status;
    char *body = s_get(in, path, NULL, &status);
    ck_assert_msg(status == 200, "GET %s on %s: %d %s", path, in->name, status, body);
    return body;
}

/* A metric of in's /metrics (a line "name value"). */
static long long s_metric(const inst_t *in, const char *name)
{
    int status;
    char *body = s_get(in, "/metrics", NULL, &status);
    ck_assert_int_eq(status, 200);
    size_t n = strlen(name);
    long long v = -1;
    for (char *p = body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') {
            v = atoll(p + n + 1);
            break;
        }
    }
    free(body);
    ck_assert_msg(v >= 0, "no metric %s", name);
    return v;
}

static json_t *s_json(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    ck_assert_msg(j != NULL, "not JSON: %s", text);
    return j;
}

/* POST path on in with body (may be NULL): must answer want; the JSON. */
static json_t *s_post(const inst_t *in, const char *path, const char *body, int want)
{
    api_response_t r = api_check_call(in->port, "POST", path,
                                      body ? "Content-Type: application/json\r\n" : NULL, body);
    ck_assert_msg(r.status == want, "POST %s: %d %s (wanted %d)", path, r.status, r.body, want);
    json_t *j = json_incref(r.json);
    ck_assert_ptr_nonnull(j);
    api_response_free(&r);
    return j;
}

/* ------------------------------------------------------------ read after write */

START_TEST(test_a_write_on_one_instance_is_read_at_once_on_another)
{
    inst_database("check_view");
    inst_t *a = inst_start("A", "0", NULL);
    inst_t *b = inst_start("B", "0", NULL);      /* the view, on by default */
    inst_t *c = inst_start("C", "0", OFF, NULL); /* PostgreSQL's answer */
    for (int i = 0; i < 40; i++) {
        char *id = inst_create(a, 1 + i % 3, 64, 4, 2);
        /* the create, at once on B: then cached there (pending) */
        char *before = s_doc(b, id);
        json_t *d = s_json(before);
        ck_assert_str_eq(api_check_str(d, "job_status"), "pending");
        json_decref(d);
        free(s_doc(b, id));
        /* the cancel on A; its answer's counters on B at once */
        char path[160];
        snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
        json_t *ans = s_post(a, path, NULL, 200);
        ck_assert(json_is_true(json_object_get(ans, "success")));
        char *after = s_doc(b, id);
        d = s_json(after);
        ck_assert_str_eq(api_check_str(d, "job_status"), "user_cancelled");
        ck_assert(json_is_true(json_object_get(d, "cancel_requested")));
        ck_assert_int_eq(api_check_int(d, "completed_images"),
                         api_check_int(ans, "completed_images"));
        ck_assert_int_eq(api_check_int(d, "total_images"), api_check_int(ans, "total_images"));
        json_decref(d);
        json_decref(ans);
        char *truth = s_doc(c, id);
        ck_assert_str_eq(after, truth);
        free(truth);
        free(after);
        /* a resume on A shows on the original, cached ended on B */
        free(s_doc(b, id));
        snprintf(path, sizeof path, "/api/jobs/%s/resume", id);
        json_t *res = s_post(a, path, NULL, 201);
        char *orig = s_doc(b, id);
        d = s_json(orig);
        ck_assert_str_eq(api_check_str(d, "resumed_by"), api_check_str(res, "job_id"));
        json_decref(d);
        truth = s_doc(c, id);
        ck_assert_str_eq(orig, truth);
        free(truth);
        free(orig);
        json_decref(res);
        free(before);
        free(id);
    }
    ck_assert_int_gt(s_metric(b, "imagejobs_view_hits_total"), 0);
    inst_cleanup();
}
END_TEST

/* ------------------------------------------------------------ exact while jobs run */

START_TEST(test_the_view_answers_what_postgresql_answers_while_jobs_run)
{
    inst_database("check_view");
    inst_t *g = inst_start("G", "2", OFF, NULL); /* runs the jobs */
    inst_t *b = inst_start("B", "0", NULL);
    inst_t *c = inst_start("C", "0", OFF, NULL);
    enum { JOBS = 6 };
    char *ids[JOBS];
    for (int i = 0; i < JOBS; i++)
        ids[i] = inst_create(g, 2, 64, 30, 3); /* more than the generators: some wait */
    int conclusive = 0, running = 0, pending = 0, ended = 0;
    double deadline = fixture_now() + 240;
    bool all_ended = false;
    while (!all_ended) {
        ck_assert_msg(fixture_now() < deadline, "the jobs did not end");
        all_ended = true;
        for (int i = 0; i < JOBS; i++) {
            /* PostgreSQL before and after the view's answer: when both say
             * the same, nothing changed meanwhile, and the view must too */
            char *c1 = s_doc(c, ids[i]);
            char *v = s_doc(b, ids[i]);
            char *c2 = s_doc(c, ids[i]);
            if (strcmp(c1, c2) == 0) {
                ck_assert_msg(strcmp(v, c1) == 0, "the view differs:\n  view %s\n  pg   %s", v, c1);
                conclusive++;
                json_t *d = s_json(v);
                const char *st = api_check_str(d, "job_status");
                if (!strcmp(st, "processing"))
                    running++;
                else if (!strcmp(st, "pending"))
                    pending++;
                else
                    ended++;
                json_decref(d);
            }
            json_t *d = s_json(c2);
            if (!api_check_final(api_check_str(d, "job_status")))
                all_ended = false;
            json_decref(d);
            free(c1);
            free(v);
            free(c2);
        }
    }
    /* and once more, every job ended: from the view */
    long long hits = s_metric(b, "imagejobs_view_hits_total");
    for (int i = 0; i < JOBS; i++) {
        char *v = s_doc(b, ids[i]);
        char *v2 = s_doc(b, ids[i]);
        char *t = s_doc(c, ids[i]);
        ck_assert_str_eq(v, t);
        ck_assert_str_eq(v2, t);
        free(v);
        free(v2);
        free(t);
        ended++;
        free(ids[i]);
    }
    ck_assert_int_gt(s_metric(b, "imagejobs_view_hits_total"), hits);
    fprintf(stderr, "check_view: %d conclusive comparisons: %d running, %d pending, %d ended\n",
            conclusive, running, pending, ended);
    ck_assert_int_gt(conclusive, 0);
    ck_assert_int_gt(running, 0);
    inst_cleanup();
}
END_TEST

/* ------------------------------------------------------------ Redis down */

static pid_t s_redis_pid;

static void s_redis_start(int port, const char *dir)
{
    s_redis_pid = api_redis_start(port, dir, 10);
    ck_assert_msg(s_redis_pid > 0, "redis-server on %d did not start (%s/redis.log)", port, dir);
}

static void s_redis_stop(void)
{
    kill(s_redis_pid, SIGTERM);
    ck_assert_int_eq(waitpid(s_redis_pid, NULL, 0), s_redis_pid);
    s_redis_pid = 0;
}

/* Writes on a, GETs on b (the view) and c (PostgreSQL): the same. */
static void s_write_and_compare(inst_t *a, inst_t *b, inst_t *c, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        char *id = inst_create(a, 2, 64, 4, 1);
        char *v = s_doc(b, id), *t = s_doc(c, id);
        ck_assert_str_eq(v, t);
        free(v);
        free(t);
        char path[160];
        snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
        json_decref(s_post(a, path, NULL, 200));
        for (int k = 0; k < 2; k++) {
            v = s_doc(b, id);
            t = s_doc(c, id);
            ck_assert_str_eq(v, t);
            json_t *d = s_json(v);
            ck_assert_str_eq(api_check_str(d, "job_status"), "user_cancelled");
            json_decref(d);
            free(v);
            free(t);
        }
        free(id);
    }
}

START_TEST(test_with_redis_down_the_view_is_never_stale)
{
    inst_database("check_view");
    char *dir = fixture_tmpdir("ij-view-redis");
    int port = api_free_port();
    s_redis_start(port, dir);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    setenv("IMAGEJOBS_TEST_REDIS", url, 1); /* this test's instances: the private Redis */
    inst_t *a = inst_start("A", "0", OFF, NULL);
    inst_t *b = inst_start("B", "0", NULL);
    inst_t *c = inst_start("C", "0", OFF, NULL);
    s_write_and_compare(a, b, c, 5);

    s_redis_stop();
    s_write_and_compare(a, b, c, 10);

    s_redis_start(port, dir);
    s_write_and_compare(a, b, c, 5);
    /* back: ended jobs come from the view again */
    char *id = inst_create(a, 1, 64, 4, 1);
    char path[160];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    json_decref(s_post(a, path, NULL, 200));
    free(s_doc(b, id));
    long long hits = s_metric(b, "imagejobs_view_hits_total");
    char *v = s_doc(b, id), *t = s_doc(c, id);
    ck_assert_str_eq(v, t);
    ck_assert_int_gt(s_metric(b, "imagejobs_view_hits_total"), hits);
    free(v);
    free(t);
    free(id);
    inst_cleanup();
    s_redis_stop();
    fixture_remove_tree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------ the bound */

START_TEST(test_the_view_stays_within_its_bound)
{
    inst_database("check_view");
    inst_t *a = inst_start("A", "0", OFF, NULL);
    inst_t *b = inst_start("B", "0", "--view-cache-mb", "1", NULL);
    /* documents of ~2 KB: 1 MiB holds a few hundred of them */
    char prompt[1001];
    memset(prompt, 'p', 1000);
    prompt[1000] = '\0';
    enum { JOBS = 700 };
    char *ids[JOBS];
    char body[1400];
    snprintf(body, sizeof body, "{\"prompt\":\"%s\",\"width\":64,\"height\":64,\"steps\":2}",
             prompt);
    for (int i = 0; i < JOBS; i++)
        ids[i] = inst_post_job(a, body);
    json_decref(s_post(a, "/api/jobs/cancel", "{\"filter\":{\"status\":[\"pending\"]}}", 200));
    for (int i = 0; i < JOBS; i++)
        free(s_doc(b, ids[i]));
    long long bytes = s_metric(b, "imagejobs_view_bytes");
    long long entries = s_metric(b, "imagejobs_view_entries");
    fprintf(stderr, "check_view: %lld entries, %lld bytes\n", entries, bytes);
    ck_assert_int_le(bytes, 1 << 20);
    ck_assert_int_gt(entries, 100);
    ck_assert_int_lt(entries, JOBS);
    /* the first ones were evicted, and are read again, the same */
    char *v = s_doc(b, ids[0]), *t = s_doc(a, ids[0]);
    ck_assert_str_eq(v, t);
    free(v);
    free(t);
    for (int i = 0; i < JOBS; i++)
        free(ids[i]);
    inst_cleanup();
}
END_TEST

/* ------------------------------------------------------------ owners */

static char *s_key(const char *name, const char *extra)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "'%s' keys create --name %s %s --database '%s' 2>>tests/check_view.cli.log",
             getenv("IMAGEJOBS_BIN"), name, extra ? extra : "", inst_conninfo);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char out[512];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    ck_assert_int_eq(pclose(p), 0);
    out[strcspn(out, "\n")] = '\0';
    ck_assert_msg(token_well_formed(out), "not a token: '%s'", out);
    return strdup(out);
}

START_TEST(test_another_keys_job_is_not_found_in_the_view_either)
{
    inst_database("check_view");
    char *alice = s_key("alice", NULL), *bob = s_key("bob", NULL), *root = s_key("root", "--admin");
    inst_t *a = inst_start("A", "0", "--auth", "required", OFF, NULL);
    inst_t *b = inst_start("B", "0", "--auth", "required", NULL);
    char ha[160], hb[160], hr[160];
    snprintf(ha, sizeof ha, "Authorization: Bearer %s\r\n", alice);
    snprintf(hb, sizeof hb, "Authorization: Bearer %s\r\n", bob);
    snprintf(hr, sizeof hr, "Authorization: Bearer %s\r\n", root);
    char hc[256];
    snprintf(hc, sizeof hc, "%sContent-Type: application/json\r\n", ha);
    api_response_t r =
        api_check_call(a->port, "POST", "/api/jobs", hc, "{\"prompt\":\"mine\",\"steps\":2}");
    ck_assert_msg(r.status == 201, "create: %d %s", r.status, r.body);
    char *id = strdup(api_check_str(r.json, "job_id"));
    api_response_free(&r);
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s", id);
    for (int round = 0; round < 2; round++) { /* a miss, then from the view */
        int sa, sb, sr, pa, pb;
        char *va = s_get(b, path, ha, &sa), *vb = s_get(b, path, hb, &sb),
             *vr = s_get(b, path, hr, &sr);
        char *ta = s_get(a, path, ha, &pa), *tb = s_get(a, path, hb, &pb);
        ck_assert_int_eq(sa, 200);
        ck_assert_int_eq(sr, 200);
        ck_assert_int_eq(sb, 404);
        ck_assert_int_eq(pb, 404);
        ck_assert_int_eq(pa, 200);
        ck_assert_str_eq(vb, tb); /* {"error":"Job not found"}, byte for byte */
        ck_assert_str_eq(va, vr);
        ck_assert_str_eq(va, ta);
        free(va);
        free(vb);
        free(vr);
        free(ta);
        free(tb);
    }
    ck_assert_int_gt(s_metric(b, "imagejobs_view_hits_total"), 0);
    free(id);
    free(alice);
    free(bob);
    free(root);
    inst_cleanup();
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("view");
    TCase *tc = tcase_create("view");
    tcase_set_timeout(tc, 400);
    tcase_add_test(tc, test_a_write_on_one_instance_is_read_at_once_on_another);
    tcase_add_test(tc, test_the_view_answers_what_postgresql_answers_while_jobs_run);
    tcase_add_test(tc, test_with_redis_down_the_view_is_never_stale);
    tcase_add_test(tc, test_the_view_stays_within_its_bound);
    tcase_add_test(tc, test_another_keys_job_is_not_found_in_the_view_either);
    suite_add_tcase(s, tc);
    return s;
}

static int s_before(void)
{
    static const char *const need[] = {"IMAGEJOBS_TEST_REDIS", "IMAGEJOBS_TEST_DATABASE",
                                       "IMAGEJOBS_BIN", NULL};
    return fixture_need_env("the job view tests", need);
}

const test_program_t test_program = {.suite = s_suite, .before = s_before};
