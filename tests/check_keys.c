/*
 * check_keys.c - API keys, ownership, quotas and fair claims
 * (docs/security.md), end to end: keys made with `imagejobs keys`, real
 * `imagejobs serve` processes with --auth required, the suite's Redis and
 * PostgreSQL. Every wait is for an outcome, with a generous timeout; what
 * must not happen is checked in the database and in what did happen later
 * (the job went on making images), never by waiting a while.
 */
#include "config.h"

#include "runtime/token.h"
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

#define AUTH "--auth", "required", "--log-level", "debug"

/* ------------------------------------------------------------ keys */

/* Runs `imagejobs keys ARGS --database <the test's>`: its exit status, its
 * stdout into out (may be NULL). */
static int s_keys(char *out, size_t outlen, const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' keys %s --database '%s' 2>>tests/check_keys.cli.log",
             getenv("IMAGEJOBS_BIN"), args, inst_conninfo);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    int st = pclose(p);
    if (out)
        snprintf(out, outlen, "%s", buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A new key's token (caller frees): `keys create --name NAME EXTRA`. */
static char *s_key(const char *name, const char *extra)
{
    char args[512], out[512];
    snprintf(args, sizeof args, "create --name %s %s", name, extra ? extra : "");
    ck_assert_int_eq(s_keys(out, sizeof out, args), 0);
    out[strcspn(out, "\n")] = '\0';
    ck_assert_msg(token_well_formed(out), "not a token: '%s'", out);
    return strdup(out);
}

/* ------------------------------------------------------------ requests */

static api_response_t s_call(inst_t *in, const char *method, const char *path, const char *token,
                             const char *body)
{
    char h[256] = "";
    if (token)
        snprintf(h, sizeof h, "Authorization: Bearer %s\r\n", token);
    if (body)
        strcat(h, "Content-Type: application/json\r\n");
    return api_check_call(in->port, method, path, h, body);
}

/* method path with token must answer want; with a body of {"error": msg}
 * when msg is given. */
static void s_expect(inst_t *in, const char *method, const char *path, const char *token,
                     const char *body, int want, const char *msg)
{
    api_response_t r = s_call(in, method, path, token, body);
    ck_assert_msg(r.status == want, "%s %s: %d %s (wanted %d)", method, path, r.status, r.body,
                  want);
    if (msg) {
        ck_assert_ptr_nonnull(r.json);
        ck_assert_str_eq(api_check_str(r.json, "error"), msg);
    }
    api_response_free(&r);
}

static char *s_create(inst_t *in, const char *token, const char *body, int want)
{
    api_response_t r = s_call(in, "POST", "/api/jobs", token, body);
    ck_assert_msg(r.status == want, "create: %d %s (wanted %d)", r.status, r.body, want);
    char *id = want == 201 ? strdup(api_check_str(r.json, "job_id")) : NULL;
    api_response_free(&r);
    return id;
}

static json_t *s_job(inst_t *in, const char *token, const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s", id);
    api_response_t r = s_call(in, "GET", path, token, NULL);
    ck_assert_msg(r.status == 200, "GET %s: %d %s", id, r.status, r.body);
    json_t *doc = json_incref(r.json);
    api_response_free(&r);
    return doc;
}

/* Waits until the job's status is one of `want` ("processing" etc.). */
static json_t *s_wait_status(inst_t *in, const char *token, const char *id, const char *want)
{
    for (int i = 0; i < 6000; i++) {
        json_t *j = s_job(in, token, id);
        if (strstr(want, api_check_str(j, "job_status")))
            return j;
        json_decref(j);
        usleep(10000);
    }
    ck_abort_msg("job %s never became %s", id, want);
    return NULL;
}

/* Waits until the job has made at least n images. */
static json_t *s_wait_images(inst_t *in, const char *token, const char *id, json_int_t n)
{
    for (int i = 0; i < 12000; i++) {
        json_t *j = s_job(in, token, id);
        if (api_check_int(j, "completed_images") >= n)
            return j;
        json_decref(j);
        usleep(10000);
    }
    ck_abort_msg("job %s never made %lld images", id, (long long)n);
    return NULL;
}

static const char s_long[] = "{\"prompt\":\"a long night\",\"images_per_combination\":100,"
                             "\"width\":128,\"height\":128,\"steps\":30}";
static const char s_tiny[] = "{\"prompt\":\"a small dot\",\"width\":64,\"height\":64,\"steps\":2}";

/* The log of instance in must not hold the token or the hex of its hash
 * (any 16 digits of it). */
static void s_assert_log_clean(const inst_t *in, const char *token)
{
    char path[256];
    snprintf(path, sizeof path, "tests/check_keys.%s.log", in->name);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    static char text[1 << 22];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    ck_assert_msg(n > 0, "%s is empty", path);
    uint8_t hash[TOKEN_HASH_LEN];
    token_hash(token, strlen(token), hash);
    char hex[2 * TOKEN_HASH_LEN + 1];
    for (size_t i = 0; i < TOKEN_HASH_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02x", hash[i]);
    ck_assert_msg(!strstr(text, token), "%s holds a token", path);
    ck_assert_msg(!strstr(text, token + strlen(TOKEN_PREFIX)), "%s holds a token's digits", path);
    for (size_t i = 0; i + 16 <= 2 * TOKEN_HASH_LEN; i += 8) {
        char part[17];
        memcpy(part, hex + i, 16);
        part[16] = '\0';
        ck_assert_msg(!strstr(text, part), "%s holds part of a token's hash", path);
    }
}

/* ------------------------------------------------------------ tests */

START_TEST(test_keys_are_made_stored_as_hashes_listed_and_revoked)
{
    inst_database("check_keys");
    char *token = s_key("alice", NULL);
    PGconn *db = api_check_db(inst_conninfo);
    /* only the SHA-256 is kept: no column of the row holds the token */
    uint8_t hash[TOKEN_HASH_LEN];
    token_hash(token, strlen(token), hash);
    char hex[2 * TOKEN_HASH_LEN + 1];
    for (size_t i = 0; i < TOKEN_HASH_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02x", hash[i]);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "SELECT count(*) FROM api_keys WHERE name = 'alice'"
                                        " AND encode(token_hash, 'hex') = $1",
                                        hex),
                     1);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "SELECT count(*) FROM api_keys k"
                                        " WHERE strpos(k::text, substr($1, 4)) > 0",
                                        token),
                     0);
    /* a second token differs */
    char *other = s_key("bob", "--max-running-jobs 2 --rate-limit 30/m");
    ck_assert_str_ne(token, other);
    /* refusals */
    ck_assert_int_eq(s_keys(NULL, 0, "create --name alice"), 1); /* taken */
    ck_assert_int_eq(s_keys(NULL, 0, "create --name 'a b'"), 1);
    ck_assert_int_eq(s_keys(NULL, 0, "create"), 2);
    ck_assert_int_eq(s_keys(NULL, 0, "create --name c --rate-limit fast"), 2);
    ck_assert_int_eq(s_keys(NULL, 0, "create --name c --max-running-jobs 0"), 2);
    ck_assert_int_eq(s_keys(NULL, 0, "list --admin"), 2);
    ck_assert_int_eq(s_keys(NULL, 0, "rotate"), 2);
    /* the list names them and holds no token */
    char out[4096];
    ck_assert_int_eq(s_keys(out, sizeof out, "list"), 0);
    ck_assert_ptr_nonnull(strstr(out, "alice"));
    ck_assert_ptr_nonnull(strstr(out, "bob"));
    ck_assert_ptr_null(strstr(out, token));
    ck_assert_ptr_null(strstr(out, hex));
    /* revoke, once */
    ck_assert_int_eq(s_keys(NULL, 0, "revoke alice"), 0);
    ck_assert_int_eq(s_keys(NULL, 0, "revoke alice"), 1);
    ck_assert_int_eq(s_keys(NULL, 0, "revoke nobody"), 1);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "SELECT count(*) FROM api_keys WHERE name = $1"
                                        " AND revoked_at IS NOT NULL",
                                        "alice"),
                     1);
    /* the name is free again */
    free(s_key("alice", "--admin"));
    PQfinish(db);
    free(token);
    free(other);
    inst_cleanup();
}
END_TEST

START_TEST(test_another_keys_job_is_not_found_on_any_route)
{
    inst_database("check_keys");
    char *alice = s_key("alice", NULL), *bob = s_key("bob", NULL), *root = s_key("root", "--admin");
    inst_t *a = inst_start("A", "2", AUTH, NULL);
    /* bob watches every job's events from the start */
    char hdr[160];
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", bob);
    sse_t *bob_all = sse_open(a->port, "/api/events", NULL, hdr, 10000);
    ck_assert_ptr_nonnull(bob_all);
    ck_assert_int_eq(sse_status(bob_all), 200);

    char *job = s_create(a, alice, s_long, 201);
    json_t *j = s_wait_images(a, alice, job, 1);
    const char *att =
        json_string_value(json_array_get(json_object_get(j, "generated_attach_ids"), 0));
    ck_assert_ptr_nonnull(att);
    char *attach = strdup(att);
    json_decref(j);

    /* bob, on every route that names alice's job: 404, as for no job */
    char path[256];
    static const char *const posts[] = {"cancel", "resume", "combinations/0/cancel"};
    for (size_t i = 0; i < sizeof posts / sizeof *posts; i++) {
        snprintf(path, sizeof path, "/api/jobs/%s/%s", job, posts[i]);
        s_expect(a, "POST", path, bob, NULL, 404, "Job not found");
    }
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", job);
    s_expect(a, "POST", path, bob, "{\"mode\":\"after_current_image\"}", 404, "Job not found");
    snprintf(path, sizeof path, "/api/jobs/%s", job);
    s_expect(a, "GET", path, bob, NULL, 404, "Job not found");
    snprintf(path, sizeof path, "/api/attachments/%s", attach);
    s_expect(a, "GET", path, bob, NULL, 404, "Attachment not found");
    s_expect(a, "GET", path, alice, NULL, 200, NULL);
    snprintf(path, sizeof path, "/api/jobs/%s/events", job);
    sse_t *s = sse_open(a->port, path, NULL, hdr, 10000);
    ck_assert_int_eq(sse_status(s), 404);
    sse_close(s);
    snprintf(path, sizeof path, "/api/jobs/%s/events?access_token=%s", job, bob);
    s = sse_open(a->port, path, NULL, NULL, 10000);
    ck_assert_int_eq(sse_status(s), 404);
    sse_close(s);
    /* lists and cancels of many see none of it */
    api_response_t r = s_call(a, "GET", "/api/jobs", bob, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(api_check_int(r.json, "count"), 0);
    api_response_free(&r);
    char body[256];
    snprintf(body, sizeof body, "{\"job_ids\":[\"%s\"]}", job);
    r = s_call(a, "POST", "/api/jobs/cancel", bob, body);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(api_check_int(r.json, "matched"), 0);
    ck_assert_int_eq(api_check_int(r.json, "cancelled"), 0);
    api_response_free(&r);
    r = s_call(a, "POST", "/api/jobs/cancel", bob, "{\"filter\":{}}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(api_check_int(r.json, "matched"), 0);
    api_response_free(&r);

    /* nothing changed: no cancel written, none heard (the job goes on
     * making images after every attempt), no job made by the resume */
    j = s_job(a, alice, job);
    json_int_t done = api_check_int(j, "completed_images");
    json_decref(j);
    json_decref(s_wait_images(a, alice, job, done + 2));
    PGconn *db = api_check_db(inst_conninfo);
    ck_assert_int_eq(
        api_check_sql_long(db,
                           "SELECT count(*) FROM jobs WHERE id = $1::uuid"
                           " AND status = 'processing' AND cancel_requested_at IS NULL",
                           job),
        1);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "SELECT count(*) FROM job_tasks WHERE job_id = $1::uuid"
                                        " AND cancel_requested_at IS NOT NULL",
                                        job),
                     0);
    ck_assert_int_eq(api_check_sql_long(db, "SELECT count(*) FROM jobs WHERE $1 = $1", "x"), 1);

    /* bob's own job: his stream shows it, and nothing of alice's */
    char *mine = s_create(a, bob, s_tiny, 201);
    bool ended = false;
    sse_event_t ev;
    while (!ended) {
        ck_assert_int_eq(sse_next(bob_all, &ev, 60000), 1);
        ck_assert_msg(!strstr(ev.data, job), "bob's stream shows alice's job: %s %s", ev.event,
                      ev.data);
        ended = !strcmp(ev.event, "end") && strstr(ev.data, mine);
    }
    sse_close(bob_all);

    /* the admin sees and cancels everything, and the cancel names it */
    snprintf(path, sizeof path, "/api/jobs/%s", job);
    s_expect(a, "GET", path, root, NULL, 200, NULL);
    r = s_call(a, "GET", "/api/jobs", root, NULL);
    ck_assert_int_eq(api_check_int(r.json, "count"), 2);
    api_response_free(&r);
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", job);
    s_expect(a, "POST", path, root, NULL, 200, NULL);
    j = s_wait_status(a, alice, job, "user_cancelled");
    ck_assert_str_eq(api_check_str(j, "cancelled_by"), "root");
    ck_assert_int_ge(api_check_int(j, "completed_images"), done + 2);
    json_decref(j);
    /* the owner resumes it; the new job is the owner's too */
    snprintf(path, sizeof path, "/api/jobs/%s/resume", job);
    r = s_call(a, "POST", path, alice, NULL);
    ck_assert_int_eq(r.status, 201);
    char *resumed = strdup(api_check_str(r.json, "job_id"));
    api_response_free(&r);
    snprintf(path, sizeof path, "/api/jobs/%s", resumed);
    s_expect(a, "GET", path, bob, NULL, 404, "Job not found");
    r = s_call(a, "POST", "/api/jobs/cancel", alice, "{\"filter\":{}}");
    ck_assert_int_eq(api_check_int(r.json, "cancelled"), 1);
    api_response_free(&r);
    j = s_wait_status(a, alice, resumed, "user_cancelled");
    ck_assert_str_eq(api_check_str(j, "cancelled_by"), "alice");
    json_decref(j);

    /* the instance's log (at debug) never holds a token or its hash */
    const char *tokens[] = {alice, bob, root};
    for (size_t i = 0; i < 3; i++)
        s_assert_log_clean(a, tokens[i]);
    PQfinish(db);
    free(job);
    free(mine);
    free(attach);
    free(resumed);
    free(alice);
    free(bob);
    free(root);
    inst_cleanup();
}
END_TEST

START_TEST(test_requests_without_a_working_token_are_refused_everywhere)
{
    inst_database("check_keys");
    char *alice = s_key("alice", NULL);
    inst_t *a = inst_start("A", "0", AUTH, NULL), *b = inst_start("B", "0", AUTH, NULL);
    static const char *const bad[] = {
        NULL,                                        /* no header */
        "Authorization: Basic YWxpY2U6c2VjcmV0\r\n", /* another scheme */
        "Authorization: Bearer\r\n",                 /* no token */
        "Authorization: Bearer ij_0000000000000000000000000000000000000000000000000000000000000000\r\n",
        "Authorization: Bearer not-a-token\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        api_response_t r =
            api_check_call(a->port, "POST", "/api/jobs", bad[i] ? bad[i] : "", s_tiny);
        ck_assert_msg(r.status == 401, "case %zu: %d %s", i, r.status, r.body);
        char www[160];
        ck_assert_ptr_nonnull(api_header(&r, "WWW-Authenticate", www, sizeof www));
        ck_assert_ptr_nonnull(strstr(www, "Bearer"));
        ck_assert_ptr_nonnull(api_check_str(r.json, "error"));
        api_response_free(&r);
    }
    /* ?access_token= is for the event streams only */
    char path[256];
    snprintf(path, sizeof path, "/api/jobs?access_token=%s", alice);
    s_expect(a, "GET", path, NULL, NULL, 401, NULL);
    snprintf(path, sizeof path, "/api/events?access_token=%s", alice);
    sse_t *s = sse_open(a->port, path, NULL, NULL, 10000);
    ck_assert_int_eq(sse_status(s), 200);
    sse_close(s);
    /* health needs no key */
    s_expect(a, "GET", "/healthz", NULL, NULL, 200, NULL);
    /* the key works on both instances; revoked, on neither */
    char *id = s_create(b, alice, s_tiny, 201);
    s_expect(a, "GET", "/api/jobs", alice, NULL, 200, NULL);
    ck_assert_int_eq(s_keys(NULL, 0, "revoke alice"), 0);
    inst_t *both[] = {b, a};
    for (int k = 0; k < 2; k++) {
        int status = 0;
        for (int i = 0; i < 1000 && status != 401; i++) {
            api_response_t r = s_call(both[k], "GET", "/api/jobs", alice, NULL);
            status = r.status;
            api_response_free(&r);
            if (status != 401)
                usleep(10000);
        }
        ck_assert_int_eq(status, 401);
    }
    s_create(a, alice, s_tiny, 401);
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    s_expect(b, "POST", path, alice, NULL, 401, NULL);
    /* nothing changed: the one job made while the key worked, untouched */
    PGconn *db = api_check_db(inst_conninfo);
    ck_assert_int_eq(api_check_sql_long(db, "SELECT count(*) FROM jobs WHERE $1 = $1", "x"), 1);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "SELECT count(*) FROM jobs WHERE id = $1::uuid"
                                        " AND cancel_requested_at IS NULL",
                                        id),
                     1);
    PQfinish(db);
    free(id);
    free(alice);
    inst_cleanup();
}
END_TEST

START_TEST(test_max_running_jobs_holds_a_keys_next_job_while_others_run)
{
    inst_database("check_keys");
    char *lim = s_key("lim", "--max-running-jobs 1"), *free_key = s_key("free", NULL),
         *mp = s_key("mp", "--max-pending-jobs 1"), *root = s_key("root", "--admin");
    inst_t *a = inst_start("A", "2", AUTH, NULL);
    char *first = s_create(a, lim, s_long, 201);
    json_decref(s_wait_status(a, lim, first, "processing"));
    char *second = s_create(a, lim, s_long, 201);
    char *other = s_create(a, free_key, s_long, 201);
    /* the other key's job takes the free generator at once; lim's second
     * waits, though a generator was free when it came */
    json_decref(s_wait_images(a, free_key, other, 1));
    json_t *j = s_job(a, lim, second);
    ck_assert_str_eq(api_check_str(j, "job_status"), "pending");
    json_decref(j);
    PGconn *db = api_check_db(inst_conninfo);
    ck_assert_int_eq(
        api_check_sql_long(db, "SELECT running_jobs FROM api_keys WHERE name = $1", "lim"), 1);
    /* pending jobs past mp's limit are refused (every generator is busy) */
    char *p1 = s_create(a, mp, s_tiny, 201);
    api_response_t r = s_call(a, "POST", "/api/jobs", mp, s_tiny);
    ck_assert_int_eq(r.status, 429);
    char retry[32];
    ck_assert_ptr_nonnull(api_header(&r, "Retry-After", retry, sizeof retry));
    ck_assert_int_ge(atoi(retry), 1);
    api_response_free(&r);
    /* the first ends: the second starts */
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", first);
    s_expect(a, "POST", path, lim, NULL, 200, NULL);
    json_decref(s_wait_images(a, lim, second, 1));
    j = s_job(a, root, first);
    ck_assert_str_eq(api_check_str(j, "job_status"), "user_cancelled");
    json_decref(j);
    ck_assert_int_eq(
        api_check_sql_long(db,
                           "SELECT count(*) FROM jobs a, jobs b WHERE a.id = $1::uuid"
                           " AND b.id = (SELECT id FROM jobs WHERE owner_key ="
                           "  a.owner_key AND id <> a.id) AND b.started_at >= a.finished_at",
                           first),
        1);
    s_expect(a, "POST", "/api/jobs/cancel", root, "{\"filter\":{}}", 200, NULL);
    PQfinish(db);
    free(first);
    free(second);
    free(other);
    free(p1);
    free(lim);
    free(free_key);
    free(mp);
    free(root);
    inst_cleanup();
}
END_TEST

START_TEST(test_one_keys_queue_does_not_hold_back_another_keys_job)
{
    inst_database("check_keys");
    char *heavy = s_key("heavy", NULL), *light = s_key("light", NULL),
         *root = s_key("root", "--admin");
    inst_t *a = inst_start("A", "1", AUTH, NULL);
    static const char job[] = "{\"prompt\":\"one of many\",\"width\":256,\"height\":256,"
                              "\"steps\":20}";
    for (int i = 0; i < 200; i++)
        free(s_create(a, heavy, job, 201));
    char *single = s_create(a, light, job, 201);
    json_decref(s_wait_status(a, light, single, "completed"));
    /* counted in claims, not time: heavy's jobs started before light's */
    PGconn *db = api_check_db(inst_conninfo);
    long before =
        api_check_sql_long(db,
                           "SELECT count(*) FROM jobs h, jobs l WHERE l.id = $1::uuid"
                           " AND h.owner_key <> l.owner_key AND h.started_at < l.started_at",
                           single);
    ck_assert_msg(before < 100, "light's job waited for %ld of heavy's 200", before);
    s_expect(a, "POST", "/api/jobs/cancel", root, "{\"filter\":{}}", 200, NULL);
    PQfinish(db);
    free(single);
    free(heavy);
    free(light);
    free(root);
    inst_cleanup();
}
END_TEST

START_TEST(test_the_rate_limit_is_one_bucket_across_instances)
{
    inst_database("check_keys");
    /* 3 at once, then one a minute: the test's requests take far less */
    char *rl = s_key("rl", "--rate-limit 1/m --rate-burst 3");
    inst_t *a = inst_start("A", "0", AUTH, NULL), *b = inst_start("B", "0", AUTH, NULL);
    int made = 0, refused = 0;
    for (int i = 0; i < 8; i++) {
        api_response_t r = s_call(i % 2 ? b : a, "POST", "/api/jobs", rl, s_tiny);
        ck_assert_msg(r.status == 201 || r.status == 429, "%d %s", r.status, r.body);
        if (r.status == 429) {
            char retry[32];
            ck_assert_ptr_nonnull(api_header(&r, "Retry-After", retry, sizeof retry));
            ck_assert_int_ge(atoi(retry), 1);
            refused++;
        } else {
            made++;
        }
        api_response_free(&r);
    }
    ck_assert_int_eq(made, 3);
    ck_assert_int_eq(refused, 5);
    PGconn *db = api_check_db(inst_conninfo);
    ck_assert_int_eq(api_check_sql_long(db, "SELECT count(*) FROM jobs WHERE $1 = $1", "x"), 3);
    PQfinish(db);
    free(rl);
    inst_cleanup();
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("keys");
    TCase *tc = tcase_create("keys");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_keys_are_made_stored_as_hashes_listed_and_revoked);
    tcase_add_test(tc, test_another_keys_job_is_not_found_on_any_route);
    tcase_add_test(tc, test_requests_without_a_working_token_are_refused_everywhere);
    tcase_add_test(tc, test_max_running_jobs_holds_a_keys_next_job_while_others_run);
    tcase_add_test(tc, test_one_keys_queue_does_not_hold_back_another_keys_job);
    tcase_add_test(tc, test_the_rate_limit_is_one_bucket_across_instances);
    suite_add_tcase(s, tc);
    return s;
}

static int s_before(void)
{
    static const char *const need[] = {"IMAGEJOBS_TEST_REDIS", "IMAGEJOBS_TEST_DATABASE",
                                       "IMAGEJOBS_BIN", NULL};
    return fixture_need_env("the API key tests", need);
}

const test_program_t test_program = {.suite = s_suite, .before = s_before};
