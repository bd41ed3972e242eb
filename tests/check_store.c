/*
 * check_store.c - the store actor against a real PostgreSQL.
 *
 * IMAGEJOBS_TEST_DATABASE (cmd/imagejobs-local test) names the server. The
 * suite creates a private database there (other test programs running at
 * the same time claim work from their own), migrates it once, and each
 * test starts from empty tables. Tests talk to the store from mailboxes on
 * the test thread; a second runtime with its own "store" plays a second
 * instance with its own connection, so claims and stops really race in
 * PostgreSQL. Without the variable only the tests that need no database
 * run (an unreachable server, refused input).
 */
#include "config.h"

#include "actors/store.h"
#include "messages/limits.h"
#include "runtime/actor.h"
#include "runtime/log.h"
#include "runtime/mailbox.h"
#include "runtime/runtime.h"
#include "runtime/uuid.h"
#include "tests/api_client.h"

#include "tests/runner.h"
#include <arpa/inet.h>

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 30000 /* generous: sanitizer builds on 2 busy cores */

static const char *s_server; /* IMAGEJOBS_TEST_DATABASE, or NULL */
static char *s_db;           /* conninfo of this suite's private database */
static char s_dbname[64];

/* ------------------------------------------------------------ databases */

static int64_t s_now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* The server's conninfo with dbname replaced (keyword form or URI alike). */
static char *s_conninfo_for(const char *dbname)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(s_server, &perr);
    if (!opts) {
        fprintf(stderr, "cannot parse IMAGEJOBS_TEST_DATABASE: %s\n", perr ? perr : "?");
        exit(1);
    }
    size_t cap = 1024, len = 0;
    char *out = calloc(1, cap);
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        const char *v = strcmp(o->keyword, "dbname") == 0 ? dbname : o->val;
        if (!v)
            continue;
        if (len + strlen(o->keyword) + 2 * strlen(v) + 8 > cap) {
            cap = cap * 2 + 2 * strlen(v);
            out = realloc(out, cap);
        }
        len += (size_t)sprintf(out + len, "%s%s='", len ? " " : "", o->keyword);
        for (const char *p = v; *p; p++) {
            if (*p == '\'' || *p == '\\')
                out[len++] = '\\';
            out[len++] = *p;
        }
        out[len++] = '\'';
        out[len] = '\0';
    }
    PQconninfoFree(opts);
    return out;
}

static void s_quiet(void *arg, const char *message) {}

/* Runs sql on conninfo; returns the first value of the first row (malloc'd,
 * "" when none) or NULL on error (printed). */
static char *s_sql(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, s_quiet, NULL);
    PGresult *r = PQexec(c, sql);
    char *out = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK)
        out = strdup(PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    else
        fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    return out;
}

static void s_sql_ok(const char *conninfo, const char *sql)
{
    char *v = s_sql(conninfo, sql);
    ck_assert_msg(v != NULL, "SQL failed: %s", sql);
    free(v);
}

static long s_sql_long(const char *conninfo, const char *sql)
{
    char *v = s_sql(conninfo, sql);
    ck_assert_msg(v != NULL, "SQL failed: %s", sql);
    long n = strtol(v, NULL, 10);
    free(v);
    return n;
}

/* A fresh database on the test server; its conninfo (malloc'd). */
static char *s_create_db(const char *name)
{
    char *admin = s_conninfo_for("postgres");
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    char *v = s_sql(admin, sql);
    free(v);
    /* CREATE DATABASE fails while another session sits in template1: retry */
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    for (int i = 0; i < 50 && !(v = s_sql(admin, sql)); i++)
        usleep(100000);
    free(admin);
    if (!v)
        return NULL;
    free(v);
    return s_conninfo_for(name);
}

static void s_drop_db(const char *name)
{
    char *admin = s_conninfo_for("postgres");
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    free(s_sql(admin, sql));
    free(admin);
}

/* ------------------------------------------------------------ instances */

/* One "instance": a runtime, its store (own connection) and a test mailbox. */
typedef struct {
    runtime_t *rt;
    mailbox_t *mb;
    actor_t *store;
    const char *name;
} inst_t;

static inst_t s_a, s_b;

static msg_t *s_call(inst_t *in, msg_t **reqp);

static void s_inst_start(inst_t *in, const char *conninfo, const char *name, double lease_s)
{
    in->name = name;
    in->rt = runtime_new();
    ck_assert_ptr_nonnull(in->rt);
    in->mb = mailbox_new(in->rt, "test");
    ck_assert_ptr_nonnull(in->mb);
    store_config_t cfg = {.conninfo = conninfo, .instance = name, .lease_s = lease_s};
    char err[256] = "";
    in->store = store_start(in->rt, &cfg, err, sizeof err);
    ck_assert_msg(in->store != NULL, "store_start: %s", err);
}

/* Waits until the store answers HEALTH ok. */
static void s_inst_wait_ready(inst_t *in)
{
    int64_t deadline = s_now_us() + (int64_t)WAIT_MS * 1000;
    for (;;) {
        msg_t *req = msg_new(MSG_HEALTH_CHECK);
        msg_t *r = s_call(in, &req);
        ck_assert_int_eq(r->type, MSG_HEALTH);
        bool ok = r->health.ok;
        msg_destroy(&r);
        if (ok)
            return;
        ck_assert_msg(s_now_us() < deadline, "store never became ready");
        /* nothing to wait on but time: the store connects in the background */
        msg_t *none = mailbox_recv(in->mb, 20);
        msg_destroy(&none);
    }
}

static void s_inst_stop(inst_t *in)
{
    store_destroy(&in->store);
    mailbox_destroy(&in->mb);
    runtime_destroy(&in->rt);
}

/* ------------------------------------------------------------- requests */

static void s_send(inst_t *in, msg_t *req)
{
    req->corr = mailbox_next_corr(in->mb);
    ck_assert_int_eq(mailbox_send(in->mb, "store", req), 0);
}

/* Waits for the reply to corr; events that arrive meanwhile are dropped. */
static msg_t *s_wait_reply(inst_t *in, uint64_t corr)
{
    int64_t deadline = s_now_us() + (int64_t)WAIT_MS * 1000;
    for (;;) {
        int left = (int)((deadline - s_now_us()) / 1000);
        ck_assert_msg(left > 0, "no reply from the store within %d ms", WAIT_MS);
        msg_t *m = mailbox_recv(in->mb, left);
        ck_assert_msg(m != NULL, "no reply from the store within %d ms", WAIT_MS);
        if ((m->flags & MSG_FLAG_REPLY) && m->corr == corr)
            return m;
        msg_destroy(&m);
    }
}

/* Sends *reqp (consumed) to the store and returns its reply. */
static msg_t *s_call(inst_t *in, msg_t **reqp)
{
    s_send(in, *reqp);
    uint64_t corr = (*reqp)->corr;
    msg_destroy(reqp);
    return s_wait_reply(in, corr);
}

static void s_expect_error(msg_t **rp, int code)
{
    msg_t *r = *rp;
    ck_assert_msg(r->type == MSG_ERROR, "expected ERROR %d, got %s", code, msg_type_name(r->type));
    ck_assert_msg(r->error.code == code, "expected ERROR %d, got %d (%s)", code, (int)r->error.code,
                  r->error.reason ? r->error.reason : "");
    ck_assert_ptr_nonnull(r->error.reason);
    msg_destroy(rp);
}

/* Creates a job of n combinations (seeds 100+i, styles "" then "s1"...);
 * writes its id. */
static void s_create(inst_t *in, int n, int per, char id[UUID_STR_LEN])
{
    ck_assert_int_eq(uuid_v4(id), 0);
    char combos[4096] = "[";
    for (int i = 0; i < n; i++) {
        char one[64];
        snprintf(one, sizeof one, "%s{\"seed\": %d, \"style\": \"%s%.0d\"}", i ? "," : "", 100 + i,
                 i ? "s" : "", i);
        strcat(combos, one);
    }
    strcat(combos, "]");
    msg_t *req = msg_new(MSG_JOB_CREATE);
    msg_set_str(&req->job_create.job_id, id);
    msg_set_str(&req->job_create.prompt, "a prompt");
    msg_set_str(&req->job_create.combinations, combos);
    req->job_create.images_per_combination = (uint64_t)per;
    req->job_create.width = 64;
    req->job_create.height = 48;
    req->job_create.steps = 7;
    msg_t *r = s_call(in, &req);
    ck_assert_msg(r->type == MSG_JOB_CREATED, "create: %s %s", msg_type_name(r->type),
                  r->type == MSG_ERROR ? r->error.reason : "");
    ck_assert_str_eq(r->job_created.job_id, id);
    ck_assert_str_eq(job_status_name(r->job_created.status), "pending");
    ck_assert_uint_eq(r->job_created.total_images, (uint64_t)(n * per));
    msg_destroy(&r);
}

static json_t *s_get(inst_t *in, const char *id)
{
    msg_t *req = msg_new(MSG_JOB_GET);
    msg_set_str(&req->job_get.job_id, id);
    msg_t *r = s_call(in, &req);
    ck_assert_msg(r->type == MSG_JOB_JSON, "get: %s", msg_type_name(r->type));
    json_error_t e;
    json_t *j = json_loads(r->job_json.json, 0, &e);
    ck_assert_msg(j != NULL, "GET document is not JSON: %s", e.text);
    msg_destroy(&r);
    return j;
}

static const char *s_jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(v != NULL, "no key %s", key);
    return json_string_value(v); /* NULL for JSON null */
}

static json_int_t s_jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_integer(v), "%s is not an integer", key);
    return json_integer_value(v);
}

static json_t *s_jcombo(json_t *doc, size_t i)
{
    json_t *c = json_array_get(json_object_get(doc, "combinations"), i);
    ck_assert_ptr_nonnull(c);
    return c;
}

static msg_t *s_work_request(inst_t *in)
{
    msg_t *req = msg_new(MSG_WORK_REQUEST);
    msg_set_str(&req->work_request.instance, in->name);
    return req;
}

static msg_t *s_claim(inst_t *in)
{
    msg_t *req = s_work_request(in);
    return s_call(in, &req);
}

static msg_t *s_image_req(const char *id, uint64_t comb, uint64_t index)
{
    msg_t *req = msg_new(MSG_IMAGE_READY);
    msg_set_str(&req->image_ready.job_id, id);
    req->image_ready.combination = comb;
    req->image_ready.image_index = index;
    req->image_ready.width = 64;
    req->image_ready.height = 48;
    /* not a real PNG: bytes that must survive the round trip, NUL included */
    char png[128];
    int n = snprintf(png, sizeof png, "\x89PNG %s/%" PRIu64 "/%" PRIu64 " ", id, comb, index);
    memcpy(png + n + 1,
           "\xff"
           "\0"
           "binary",
           8);
    png[n] = '\0';
    msg_set_bin(&req->image_ready.png, png, (size_t)n + 9);
    return req;
}

static msg_t *s_image(inst_t *in, const char *id, uint64_t comb, uint64_t index)
{
    msg_t *req = s_image_req(id, comb, index);
    return s_call(in, &req);
}

static msg_t *s_stop_req(const char *id, uint64_t comb, const char *outcome, const char *inst,
                         int64_t observed, int64_t stopped, const char *error)
{
    msg_t *req = msg_new(MSG_TASK_STOPPED);
    msg_set_str(&req->task_stopped.job_id, id);
    req->task_stopped.combination = comb;
    ck_assert_int_eq(task_outcome_parse(outcome, strlen(outcome), &req->task_stopped.outcome), 0);
    req->task_stopped.observed_at_us = observed;
    req->task_stopped.stopped_at_us = stopped;
    msg_set_str(&req->task_stopped.error, error);
    msg_set_str(&req->task_stopped.instance, inst);
    return req;
}

/* TASK_STOPPED; expects OK and returns its detail (malloc'd). */
static char *s_stop(inst_t *in, const char *id, uint64_t comb, const char *outcome)
{
    msg_t *req = s_stop_req(id, comb, outcome, in->name, 0, 0, NULL);
    msg_t *r = s_call(in, &req);
    ck_assert_msg(r->type == MSG_OK, "stop: %s %s", msg_type_name(r->type),
                  r->type == MSG_ERROR ? r->error.reason : "");
    char *d = strdup(r->ok.detail ? r->ok.detail : "");
    msg_destroy(&r);
    return d;
}

static msg_t *s_cancel(inst_t *in, const char *id, const char *mode, int64_t at_us)
{
    msg_t *req = msg_new(MSG_JOB_CANCEL_REQUEST);
    msg_set_str(&req->job_cancel_request.job_id, id);
    if (mode)
        ck_assert_int_eq(cancel_mode_parse(mode, strlen(mode), &req->job_cancel_request.mode), 0);
    req->job_cancel_request.received_at_us = at_us;
    return s_call(in, &req);
}

static msg_t *s_lease(inst_t *in, const char *id, uint64_t comb)
{
    msg_t *req = msg_new(MSG_LEASE_RENEW);
    msg_set_str(&req->lease_renew.job_id, id);
    req->lease_renew.combination = comb;
    msg_set_str(&req->lease_renew.instance, in->name);
    return s_call(in, &req);
}

/* ISO 8601 UTC with microseconds, as the store writes it. */
static void s_iso(int64_t us, char out[40])
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char base[24];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 40, "%s.%06dZ", base, (int)(us % 1000000));
}

static bool s_is_iso(const char *s)
{
    if (!s || strlen(s) != 27)
        return false;
    for (int i = 0; i < 27; i++) {
        char c = s[i];
        bool digit = c >= '0' && c <= '9';
        switch (i) {
        case 4:
        case 7:
            if (c != '-')
                return false;
            break;
        case 10:
            if (c != 'T')
                return false;
            break;
        case 13:
        case 16:
            if (c != ':')
                return false;
            break;
        case 19:
            if (c != '.')
                return false;
            break;
        case 26:
            if (c != 'Z')
                return false;
            break;
        default:
            if (!digit)
                return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------- fixtures */

static void s_db_setup(void)
{
    log_set_level(LOG_WARN);
    s_sql_ok(s_db,
             "TRUNCATE webhook_deliveries, idempotency_keys, job_events, attachments, job_tasks, "
             "jobs");
    s_inst_start(&s_a, s_db, "inst-a", 15.);
    s_inst_wait_ready(&s_a);
}

static void s_db_teardown(void)
{
    if (s_b.rt)
        s_inst_stop(&s_b);
    s_inst_stop(&s_a);
}

static void s_start_b(double lease_s)
{
    s_inst_start(&s_b, s_db, "inst-b", lease_s);
    s_inst_wait_ready(&s_b);
}

/* ----------------------------------------------------------- migration */

START_TEST(test_migrate_twice_is_idempotent)
{
    char name[80];
    snprintf(name, sizeof name, "%s_m1", s_dbname);
    char *db = s_create_db(name);
    ck_assert_ptr_nonnull(db);
    char err[256] = "";
    ck_assert_msg(store_migrate(db, err, sizeof err) == 0, "first: %s", err);
    ck_assert_msg(store_migrate(db, err, sizeof err) == 0, "second: %s", err);
    ck_assert_int_eq(s_sql_long(db, "SELECT count(*) FROM schema_version"), STORE_SCHEMA_VERSION);
    ck_assert_int_eq(s_sql_long(db, "SELECT max(version) FROM schema_version"),
                     STORE_SCHEMA_VERSION);
    ck_assert_int_eq(s_sql_long(db, "SELECT count(*) FROM information_schema.tables "
                                    "WHERE table_name IN ('jobs', 'job_tasks', 'attachments')"),
                     3);
    /* a schema newer than the binary is refused, not downgraded */
    s_sql_ok(db, "INSERT INTO schema_version (version) VALUES (999)");
    ck_assert_int_eq(store_migrate(db, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "999") != NULL, "reason: %s", err);
    free(db);
    s_drop_db(name);
}
END_TEST

typedef struct {
    const char *conninfo;
    int rc;
    char err[256];
} migrate_arg_t;

static void *s_migrate_thread(void *arg)
{
    migrate_arg_t *m = arg;
    m->rc = store_migrate(m->conninfo, m->err, sizeof m->err);
    return NULL;
}

START_TEST(test_concurrent_migrations_both_succeed_once)
{
    for (int round = 0; round < 3; round++) {
        char name[80];
        snprintf(name, sizeof name, "%s_m2_%d", s_dbname, round);
        char *db = s_create_db(name);
        ck_assert_ptr_nonnull(db);
        migrate_arg_t args[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            args[i] = (migrate_arg_t){.conninfo = db, .rc = 99};
            ck_assert_int_eq(pthread_create(&th[i], NULL, s_migrate_thread, &args[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            ck_assert_msg(args[i].rc == 0, "migration %d: %s", i, args[i].err);
        }
        ck_assert_int_eq(s_sql_long(db, "SELECT count(*) FROM schema_version"),
                         STORE_SCHEMA_VERSION);
        free(db);
        s_drop_db(name);
    }
}
END_TEST

/* ------------------------------------------------------- create and get */

START_TEST(test_create_then_get_has_every_field)
{
    ck_assert_int_eq(mailbox_subscribe(s_a.mb, "work"), 0);
    char id[UUID_STR_LEN];
    s_create(&s_a, 3, 2, id);

    /* the wake-up for local generators */
    msg_t *ev = mailbox_recv(s_a.mb, WAIT_MS);
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(ev->type, MSG_WORK_AVAILABLE);
    ck_assert(ev->flags & MSG_FLAG_EVENT);
    ck_assert_str_eq(ev->work_available.job_id, id);
    msg_destroy(&ev);

    json_t *doc = s_get(&s_a, id);
    ck_assert_str_eq(s_jstr(doc, "job_id"), id);
    ck_assert_str_eq(s_jstr(doc, "job_status"), "pending");
    ck_assert_str_eq(s_jstr(doc, "prompt"), "a prompt");
    ck_assert_int_eq(s_jint(doc, "width"), 64);
    ck_assert_int_eq(s_jint(doc, "height"), 48);
    ck_assert_int_eq(s_jint(doc, "steps"), 7);
    ck_assert_int_eq(s_jint(doc, "images_per_combination"), 2);
    ck_assert_int_eq(s_jint(doc, "completed_images"), 0);
    ck_assert_int_eq(s_jint(doc, "total_images"), 6);
    ck_assert(json_is_array(json_object_get(doc, "generated_attach_ids")));
    ck_assert_int_eq(json_array_size(json_object_get(doc, "generated_attach_ids")), 0);
    ck_assert(json_is_false(json_object_get(doc, "cancel_requested")));
    ck_assert(json_is_null(json_object_get(doc, "cancel_requested_at")));
    ck_assert(json_is_null(json_object_get(doc, "cancel_mode")));
    ck_assert_msg(s_is_iso(s_jstr(doc, "created_at")), "created_at %s", s_jstr(doc, "created_at"));
    ck_assert(json_is_null(json_object_get(doc, "started_at")));
    ck_assert(json_is_null(json_object_get(doc, "finished_at")));
    ck_assert(json_is_null(json_object_get(doc, "error")));
    ck_assert_int_eq(json_array_size(json_object_get(doc, "combinations")), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *c = s_jcombo(doc, i);
        ck_assert_int_eq(s_jint(c, "combination"), (json_int_t)i);
        ck_assert_int_eq(s_jint(c, "seed"), 100 + (json_int_t)i);
        ck_assert_str_eq(s_jstr(c, "style"), i == 0 ? "" : i == 1 ? "s1" : "s2");
        ck_assert_str_eq(s_jstr(c, "status"), "pending");
        ck_assert_int_eq(s_jint(c, "completed_images"), 0);
        ck_assert_int_eq(s_jint(c, "total_images"), 2);
        ck_assert(json_is_null(json_object_get(c, "claimed_by")));
        ck_assert(json_is_null(json_object_get(c, "cancel_observed_at")));
        ck_assert(json_is_null(json_object_get(c, "stopped_at")));
    }
    json_decref(doc);

    /* unknown, malformed, duplicate */
    char other[UUID_STR_LEN];
    uuid_v4(other);
    msg_t *req = msg_new(MSG_JOB_GET);
    msg_set_str(&req->job_get.job_id, other);
    msg_t *r = s_call(&s_a, &req);
    s_expect_error(&r, -ENOENT);

    req = msg_new(MSG_JOB_CREATE);
    msg_set_str(&req->job_create.job_id, id);
    msg_set_str(&req->job_create.prompt, "again");
    msg_set_str(&req->job_create.combinations, "[{\"seed\": 1, \"style\": \"\"}]");
    req->job_create.images_per_combination = req->job_create.width = 1;
    req->job_create.height = req->job_create.steps = 1;
    r = s_call(&s_a, &req);
    s_expect_error(&r, -EEXIST);
}
END_TEST

START_TEST(test_pipelined_burst_all_answered)
{
    char ids[20][UUID_STR_LEN];
    for (int i = 0; i < 20; i++)
        s_create(&s_a, 1, 1, ids[i]);
    /* 600 requests without waiting: each reply matches its request */
    enum { N = 600 };
    uint64_t corr[N];
    for (int i = 0; i < N; i++) {
        msg_t *req = msg_new(MSG_JOB_GET);
        msg_set_str(&req->job_get.job_id, ids[i % 20]);
        s_send(&s_a, req);
        corr[i] = req->corr;
        msg_destroy(&req);
    }
    for (int i = 0; i < N; i++) {
        msg_t *r = mailbox_recv(s_a.mb, WAIT_MS);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(r->type, MSG_JOB_JSON);
        ck_assert_uint_eq(r->corr, corr[i]); /* one connection: in order */
        ck_assert_msg(strstr(r->job_json.json, ids[i % 20]) != NULL, "reply %d", i);
        msg_destroy(&r);
    }
}
END_TEST

/* --------------------------------------------------------------- claims */

START_TEST(test_claims_each_combination_once_across_instances)
{
    s_start_b(15.);
    char id[UUID_STR_LEN];
    s_create(&s_a, 6, 2, id);

    /* 8 requests at each instance at once: 6 items in all, then nothing */
    enum { PER = 8 };
    uint64_t ca[PER], cb[PER];
    for (int i = 0; i < PER; i++) {
        msg_t *req = s_work_request(&s_a);
        s_send(&s_a, req);
        ca[i] = req->corr;
        msg_destroy(&req);
        req = s_work_request(&s_b);
        s_send(&s_b, req);
        cb[i] = req->corr;
        msg_destroy(&req);
    }
    int seen[6] = {0}, items = 0, none = 0;
    for (int k = 0; k < 2 * PER; k++) {
        inst_t *in = k % 2 ? &s_b : &s_a;
        msg_t *r = s_wait_reply(in, k % 2 ? cb[k / 2] : ca[k / 2]);
        if (r->type == MSG_WORK_ITEM) {
            msg_work_item_t *w = &r->work_item;
            ck_assert_str_eq(w->job_id, id);
            ck_assert_uint_lt(w->combination, 6);
            seen[w->combination]++;
            items++;
            char prompt[64];
            snprintf(prompt, sizeof prompt, w->combination ? "a prompt, s%" PRIu64 : "a prompt",
                     w->combination);
            ck_assert_str_eq(w->prompt, prompt);
            ck_assert_uint_eq(w->seed, 100 + w->combination);
            ck_assert_uint_eq(w->width, 64);
            ck_assert_uint_eq(w->height, 48);
            ck_assert_uint_eq(w->steps, 7);
            ck_assert_uint_eq(w->images, 2);
            ck_assert_uint_eq(w->next_index, 0);
            ck_assert_int_eq(w->cancel_mode, CANCEL_MODE_NONE);
        } else {
            s_expect_error(&r, -ENOENT);
            none++;
        }
        msg_destroy(&r);
    }
    ck_assert_int_eq(items, 6);
    ck_assert_int_eq(none, 2 * PER - 6);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(seen[i], 1);
    msg_t *r = s_claim(&s_a);
    s_expect_error(&r, -ENOENT);
    r = s_claim(&s_b);
    s_expect_error(&r, -ENOENT);

    json_t *doc = s_get(&s_a, id);
    ck_assert_str_eq(s_jstr(doc, "job_status"), "processing");
    ck_assert(s_is_iso(s_jstr(doc, "started_at")));
    for (size_t i = 0; i < 6; i++) {
        json_t *c = s_jcombo(doc, i);
        ck_assert_str_eq(s_jstr(c, "status"), "processing");
        const char *by = s_jstr(c, "claimed_by");
        ck_assert(strcmp(by, "inst-a") == 0 || strcmp(by, "inst-b") == 0);
    }
    json_decref(doc);
}
END_TEST

START_TEST(test_image_recording_is_idempotent)
{
    s_start_b(15.);
    char id[UUID_STR_LEN];
    s_create(&s_a, 2, 3, id);
    for (int i = 0; i < 2; i++) {
        msg_t *r = s_claim(&s_a);
        ck_assert_int_eq(r->type, MSG_WORK_ITEM);
        msg_destroy(&r);
    }
    char ids[3][UUID_STR_LEN];
    const uint64_t order[3][2] = {{0, 0}, {1, 0}, {0, 1}};
    for (int k = 0; k < 3; k++) {
        msg_t *r = s_image(&s_a, id, order[k][0], order[k][1]);
        ck_assert_msg(r->type == MSG_IMAGE_RECORDED, "image: %s",
                      r->type == MSG_ERROR ? r->error.reason : "");
        ck_assert(uuid_valid(r->image_recorded.attach_id));
        ck_assert_uint_eq(r->image_recorded.completed_images, (uint64_t)k + 1);
        ck_assert_int_eq(r->image_recorded.cancel_mode, CANCEL_MODE_NONE);
        snprintf(ids[k], sizeof ids[k], "%s", r->image_recorded.attach_id);
        msg_destroy(&r);
        /* the same image again, from either instance: the same row */
        r = s_image(k % 2 ? &s_b : &s_a, id, order[k][0], order[k][1]);
        ck_assert_int_eq(r->type, MSG_IMAGE_RECORDED);
        ck_assert_str_eq(r->image_recorded.attach_id, ids[k]);
        ck_assert_uint_eq(r->image_recorded.completed_images, (uint64_t)k + 1);
        msg_destroy(&r);
    }

    /* a burst of one new image through both connections: recorded once */
    enum { N = 10 };
    uint64_t ca[N], cb[N];
    for (int i = 0; i < N; i++) {
        msg_t *req = s_image_req(id, 1, 1);
        s_send(&s_a, req);
        ca[i] = req->corr;
        msg_destroy(&req);
        req = s_image_req(id, 1, 1);
        s_send(&s_b, req);
        cb[i] = req->corr;
        msg_destroy(&req);
    }
    char burst[UUID_STR_LEN] = "";
    for (int k = 0; k < 2 * N; k++) {
        msg_t *r = s_wait_reply(k % 2 ? &s_b : &s_a, k % 2 ? cb[k / 2] : ca[k / 2]);
        ck_assert_int_eq(r->type, MSG_IMAGE_RECORDED);
        if (!burst[0])
            snprintf(burst, sizeof burst, "%s", r->image_recorded.attach_id);
        ck_assert_str_eq(r->image_recorded.attach_id, burst);
        msg_destroy(&r);
    }

    json_t *doc = s_get(&s_a, id);
    ck_assert_int_eq(s_jint(doc, "completed_images"), 4);
    json_t *gen = json_object_get(doc, "generated_attach_ids");
    ck_assert_int_eq(json_array_size(gen), 4);
    for (int k = 0; k < 3; k++) /* completion order */
        ck_assert_str_eq(json_string_value(json_array_get(gen, (size_t)k)), ids[k]);
    ck_assert_str_eq(json_string_value(json_array_get(gen, 3)), burst);
    ck_assert_int_eq(s_jint(s_jcombo(doc, 0), "completed_images"), 2);
    ck_assert_int_eq(s_jint(s_jcombo(doc, 1), "completed_images"), 2);
    json_decref(doc);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM attachments WHERE job_id = '%s'", id);
    ck_assert_int_eq(s_sql_long(s_db, sql), 4);

    /* the bytes come back as they went in */
    msg_t *req = msg_new(MSG_ATTACHMENT_GET);
    msg_set_str(&req->attachment_get.attach_id, ids[1]);
    msg_t *r = s_call(&s_a, &req);
    ck_assert_int_eq(r->type, MSG_ATTACHMENT);
    ck_assert_str_eq(r->attachment.content_type, "image/png");
    msg_t *want = s_image_req(id, 1, 0);
    ck_assert_uint_eq(r->attachment.bytes.size, want->image_ready.png.size);
    ck_assert(
        memcmp(r->attachment.bytes.data, want->image_ready.png.data, want->image_ready.png.size)
        == 0);
    msg_destroy(&want);
    msg_destroy(&r);

    char other[UUID_STR_LEN];
    uuid_v4(other);
    req = msg_new(MSG_ATTACHMENT_GET);
    msg_set_str(&req->attachment_get.attach_id, other);
    r = s_call(&s_a, &req);
    s_expect_error(&r, -ENOENT);
    /* out of range, unknown combination, unknown job */
    r = s_image(&s_a, id, 0, 3);
    s_expect_error(&r, -ENOENT);
    r = s_image(&s_a, id, 7, 0);
    s_expect_error(&r, -ENOENT);
    r = s_image(&s_a, other, 0, 0);
    s_expect_error(&r, -ENOENT);
}
END_TEST

/* ---------------------------------------------------------------- events */

static msg_t *s_events_read(inst_t *in, const char *id, uint64_t after, uint64_t limit,
                            bool snapshot)
{
    msg_t *req = msg_new(MSG_JOB_EVENTS_READ);
    msg_set_str(&req->job_events_read.job_id, id);
    req->job_events_read.after_seq = after;
    req->job_events_read.limit = limit;
    req->job_events_read.snapshot = snapshot;
    return s_call(in, &req);
}

static json_t *s_events_json(const msg_t *r)
{
    ck_assert_msg(r->type == MSG_JOB_EVENTS, "events read: %s %s", msg_type_name(r->type),
                  r->type == MSG_ERROR ? r->error.reason : "");
    json_error_t e;
    json_t *a = json_loads(r->job_events.events, 0, &e);
    ck_assert_msg(json_is_array(a), "events are not a JSON array: %s", e.text);
    ck_assert_uint_eq(json_array_size(a), r->job_events.count);
    return a;
}

START_TEST(test_events_are_numbered_in_order_published_and_readable)
{
    s_start_b(15.);
    mailbox_t *watch = mailbox_new(s_a.rt, "watch");
    ck_assert_ptr_nonnull(watch);
    ck_assert_int_eq(mailbox_subscribe(watch, "job.event"), 0);
    mailbox_t *watch_b = mailbox_new(s_b.rt, "watch");
    ck_assert_ptr_nonnull(watch_b);
    ck_assert_int_eq(mailbox_subscribe(watch_b, "job.event"), 0);
    char id[UUID_STR_LEN];
    s_create(&s_a, 2, 2, id);
    for (int i = 0; i < 2; i++) {
        msg_t *r = s_claim(&s_a);
        ck_assert_int_eq(r->type, MSG_WORK_ITEM);
        msg_destroy(&r);
    }
    /* images through both connections, as two instances would */
    char attach[4][UUID_STR_LEN];
    for (int k = 0; k < 4; k++) {
        msg_t *r = s_image(k % 2 ? &s_b : &s_a, id, (uint64_t)k % 2, (uint64_t)k / 2);
        ck_assert_int_eq(r->type, MSG_IMAGE_RECORDED);
        snprintf(attach[k], sizeof attach[k], "%s", r->image_recorded.attach_id);
        msg_destroy(&r);
    }
    free(s_stop(&s_a, id, 0, "completed"));
    free(s_stop(&s_a, id, 1, "completed"));

    /* each claim's combination as `changed` (the job view's, docs/store.md) */
    static const char *const want[] = {"created", "started", "changed", "changed", "image", "image",
                                       "image",   "image",   "stopped", "stopped", "end"};
    enum { N = sizeof want / sizeof *want };
    msg_t *r = s_events_read(&s_a, id, 0, 100, true);
    json_t *a = s_events_json(r);
    ck_assert_uint_eq(json_array_size(a), N);
    json_int_t first = json_integer_value(json_object_get(json_array_get(a, 0), "seq"));
    int images = 0;
    for (size_t i = 0; i < N; i++) {
        json_t *e = json_array_get(a, i);
        ck_assert_str_eq(s_jstr(e, "kind"), want[i]);
        ck_assert_str_eq(s_jstr(e, "job_id"), id);
        /* dense and in order: nothing else happened in this database */
        ck_assert_int_eq(s_jint(e, "seq"), first + (json_int_t)i);
        json_t *d = json_object_get(e, "data");
        ck_assert(json_is_object(d));
        ck_assert_str_eq(s_jstr(d, "job_id"), id);
        if (!strcmp(want[i], "image")) {
            ck_assert_str_eq(s_jstr(d, "attach_id"), attach[images]);
            ck_assert_int_eq(s_jint(d, "completed_images"), ++images);
            ck_assert_int_eq(s_jint(d, "total_images"), 4);
            ck_assert_int_eq(s_jint(d, "combination"), images % 2 ? 0 : 1);
        }
        if (!strcmp(want[i], "stopped")) {
            ck_assert_str_eq(s_jstr(d, "status"), "completed");
            ck_assert(s_is_iso(s_jstr(d, "stopped_at")));
        }
    }
    json_t *end = json_object_get(json_array_get(a, N - 1), "data");
    ck_assert_str_eq(s_jstr(end, "job_status"), "completed");
    ck_assert_str_eq(s_jstr(json_array_get(a, N - 1), "job_status"), "completed");
    json_t *ids = json_object_get(end, "generated_attach_ids");
    ck_assert_uint_eq(json_array_size(ids), 4);
    for (size_t k = 0; k < 4; k++)
        ck_assert_str_eq(json_string_value(json_array_get(ids, k)), attach[k]);
    ck_assert_uint_eq(r->job_events.end_seq, (uint64_t)first + N - 1);
    ck_assert_uint_ge(r->job_events.clock, (uint64_t)first + N - 1);
    json_error_t je;
    json_t *snap = json_loads(r->job_events.snapshot, 0, &je);
    ck_assert_msg(snap != NULL, "snapshot: %s", je.text);
    ck_assert_str_eq(s_jstr(snap, "job_status"), "completed");
    json_decref(snap);
    msg_destroy(&r);

    /* each was on the bus of the instance that made it once the commit was
     * in: together every one, once, each bus in order */
    bool seen[N] = {false};
    mailbox_t *watches[2] = {watch, watch_b};
    for (int w = 0; w < 2; w++) {
        uint64_t last = 0;
        msg_t *ev;
        while ((ev = mailbox_recv(watches[w], 500))) {
            ck_assert_int_eq(ev->type, MSG_JOB_EVENT);
            uint64_t i = ev->job_event.seq - (uint64_t)first;
            ck_assert_uint_lt(i, N);
            ck_assert_msg(!seen[i], "event %" PRIu64 " published twice", ev->job_event.seq);
            seen[i] = true;
            ck_assert_uint_gt(ev->job_event.seq, last);
            last = ev->job_event.seq;
            ck_assert_str_eq(job_event_kind_name(ev->job_event.kind), want[i]);
            json_t *d = json_loads(ev->job_event.data, 0, NULL);
            ck_assert(json_equal(d, json_object_get(json_array_get(a, i), "data")));
            json_decref(d);
            ck_assert_int_gt(ev->job_event.recorded_at_us, 0);
            msg_destroy(&ev);
        }
    }
    for (size_t i = 0; i < N; i++)
        ck_assert_msg(seen[i], "event %s (%zu) never published", want[i], i);
    json_decref(a);

    /* pages: after the fourth, two of them; every job's from the start */
    r = s_events_read(&s_a, id, (uint64_t)first + 3, 2, false);
    a = s_events_json(r);
    ck_assert_uint_eq(r->job_events.count, 2);
    ck_assert_ptr_null(r->job_events.snapshot);
    ck_assert_int_eq(s_jint(json_array_get(a, 0), "seq"), first + 4);
    json_decref(a);
    msg_destroy(&r);
    r = s_events_read(&s_b, NULL, (uint64_t)first - 1, 100, false);
    a = s_events_json(r);
    ck_assert_uint_eq(json_array_size(a), N);
    json_decref(a);
    msg_destroy(&r);

    /* no such job */
    char other[UUID_STR_LEN];
    uuid_v4(other);
    r = s_events_read(&s_a, other, 0, 10, true);
    s_expect_error(&r, -ENOENT);
    mailbox_destroy(&watch);
    mailbox_destroy(&watch_b);
}
END_TEST

START_TEST(test_cancel_events_come_before_the_stops_and_the_end)
{
    char id[UUID_STR_LEN];
    s_create(&s_a, 3, 2, id);
    msg_t *r = s_claim(&s_a); /* combination 0 runs; 1 and 2 stay pending */
    ck_assert_int_eq(r->type, MSG_WORK_ITEM);
    msg_destroy(&r);
    r = s_cancel(&s_a, id, "immediate", s_now_us());
    ck_assert_int_eq(r->type, MSG_JOB_CANCEL_RESULT);
    msg_destroy(&r);
    msg_t *req = s_stop_req(id, 0, "cancelled", s_a.name, s_now_us(), s_now_us(), NULL);
    r = s_call(&s_a, &req);
    ck_assert_int_eq(r->type, MSG_OK);
    msg_destroy(&r);
    r = s_events_read(&s_a, id, 0, 100, false);
    json_t *a = s_events_json(r);
    /* the claim's combination as `changed` (the job view's, docs/store.md) */
    static const char *const want[] = {"created", "started", "changed", "cancel",
                                       "stopped", "stopped", "stopped", "end"};
    ck_assert_uint_eq(json_array_size(a), sizeof want / sizeof *want);
    for (size_t i = 0; i < json_array_size(a); i++)
        ck_assert_str_eq(s_jstr(json_array_get(a, i), "kind"), want[i]);
    json_t *c = json_object_get(json_array_get(a, 3), "data");
    ck_assert_str_eq(s_jstr(c, "mode"), "immediate");
    ck_assert(s_is_iso(s_jstr(c, "cancel_requested_at")));
    json_t *last_stop = json_object_get(json_array_get(a, 6), "data");
    ck_assert_int_eq(s_jint(last_stop, "combination"), 0);
    ck_assert(s_is_iso(s_jstr(last_stop, "cancel_observed_at")));
    ck_assert_str_eq(s_jstr(json_object_get(json_array_get(a, 7), "data"), "job_status"),
                     "user_cancelled");
    json_decref(a);
    msg_destroy(&r);
}
END_TEST

/* --------------------------------------------------------------- cancel */

START_TEST(test_cancel_pending_job_ends_it_at_once)
{
    char id[UUID_STR_LEN];
    s_create(&s_a, 2, 2, id);
    int64_t at = s_now_us();
    msg_t *r = s_cancel(&s_a, id, NULL, at);
    ck_assert_msg(r->type == MSG_JOB_CANCEL_RESULT, "cancel: %s",
                  r->type == MSG_ERROR ? r->error.reason : "");
    msg_job_cancel_result_t *c = &r->job_cancel_result;
    ck_assert_str_eq(c->job_id, id);
    ck_assert_str_eq(job_status_name(c->prior_status), "pending");
    ck_assert_str_eq(job_status_name(c->status), "user_cancelled");
    ck_assert_uint_eq(c->completed_images, 0);
    ck_assert_uint_eq(c->total_images, 4);
    ck_assert_int_eq(c->requested_at_us, at);
    msg_destroy(&r);

    json_t *doc = s_get(&s_a, id);
    char iso[40];
    s_iso(at, iso);
    ck_assert_str_eq(s_jstr(doc, "job_status"), "user_cancelled");
    ck_assert(json_is_true(json_object_get(doc, "cancel_requested")));
    ck_assert_str_eq(s_jstr(doc, "cancel_requested_at"), iso);
    ck_assert_str_eq(s_jstr(doc, "cancel_mode"), "immediate");
    ck_assert(s_is_iso(s_jstr(doc, "finished_at")));
    for (size_t i = 0; i < 2; i++) {
        ck_assert_str_eq(s_jstr(s_jcombo(doc, i), "status"), "cancelled");
        ck_assert(s_is_iso(s_jstr(s_jcombo(doc, i), "stopped_at")));
    }
    json_decref(doc);

    r = s_claim(&s_a);
    s_expect_error(&r, -ENOENT);

    /* again: already requested, the first time stands */
    r = s_cancel(&s_a, id, "after_current_image", at + 5000000);
    ck_assert_int_eq(r->type, MSG_JOB_CANCEL_RESULT);
    ck_assert_str_eq(job_status_name(r->job_cancel_result.prior_status), "user_cancelled");
    ck_assert_str_eq(job_status_name(r->job_cancel_result.status), "user_cancelled");
    ck_assert_int_eq(r->job_cancel_result.requested_at_us, at);
    msg_destroy(&r);

    /* unknown job, bad id, bad mode */
    char other[UUID_STR_LEN];
    uuid_v4(other);
    r = s_cancel(&s_a, other, NULL, at);
    s_expect_error(&r, -ENOENT);
    r = s_cancel(&s_a, "550e8400-e29b-41d4-a716-44665544000", NULL, at);
    s_expect_error(&r, -EINVAL);
    /* a mode outside the table never reaches the store: the decoder drops
     * the message (check_messages) */
}
END_TEST

/* immediate after after_current_image upgrades the cancel: the record
 * says immediate and the holders learn it with their next reply (it once
 * stayed after_current_image, and the job finished its image); a weaker
 * mode after a stronger one changes nothing. */
START_TEST(test_stronger_mode_upgrades_weaker_changes_nothing)
{
    char id[UUID_STR_LEN], id2[UUID_STR_LEN];
    s_create(&s_a, 1, 3, id);
    msg_t *r = s_claim(&s_a);
    ck_assert_int_eq(r->type, MSG_WORK_ITEM);
    ck_assert_str_eq(r->work_item.job_id, id);
    msg_destroy(&r);
    int64_t at = s_now_us();
    r = s_cancel(&s_a, id, "after_current_image", at);
    ck_assert_int_eq(r->type, MSG_JOB_CANCEL_RESULT);
    ck_assert_int_eq(r->job_cancel_result.mode, CANCEL_MODE_AFTER_CURRENT_IMAGE);
    msg_destroy(&r);
    r = s_cancel(&s_a, id, "immediate", at + 1000);
    ck_assert_int_eq(r->type, MSG_JOB_CANCEL_RESULT);
    ck_assert_str_eq(job_status_name(r->job_cancel_result.prior_status), "processing");
    ck_assert_int_eq(r->job_cancel_result.mode, CANCEL_MODE_IMMEDIATE);
    ck_assert_int_eq(r->job_cancel_result.requested_at_us, at); /* the first time stands */
    msg_destroy(&r);
    json_t *doc = s_get(&s_a, id);
    ck_assert_str_eq(s_jstr(doc, "cancel_mode"), "immediate");
    json_decref(doc);
    r = s_lease(&s_a, id, 0);
    ck_assert_int_eq(r->type, MSG_LEASE_STATE);
    ck_assert_int_eq(r->lease_state.cancel_mode, CANCEL_MODE_IMMEDIATE);
    msg_destroy(&r);

    s_create(&s_a, 1, 3, id2);
    r = s_claim(&s_a);
    ck_assert_int_eq(r->type, MSG_WORK_ITEM);
    ck_assert_str_eq(r->work_item.job_id, id2);
    msg_destroy(&r);
    r = s_cancel(&s_a, id2, "immediate", at);
    ck_assert_int_eq(r->job_cancel_result.mode, CANCEL_MODE_IMMEDIATE);
    msg_destroy(&r);
    r = s_cancel(&s_a, id2, "after_current_image", at + 1000);
    ck_assert_int_eq(r->type, MSG_JOB_CANCEL_RESULT);
    ck_assert_int_eq(r->job_cancel_result.mode, CANCEL_MODE_IMMEDIATE);
    msg_destroy(&r);
    doc = s_get(&s_a, id2);
    ck_assert_str_eq(s_jstr(doc, "cancel_mode"), "immediate");
    json_decref(doc);
}
END_TEST

START_TEST(test_cancel_processing_job_then_stops_end_it)
{
    char id[UUID_STR_LEN];
    s_create(&s_a, 3, 2, id);
    for (int i = 0; i < 2; i++) { /* combinations 0 and 1 run, 2 waits */
        msg_t *r = s_claim(&s_a);
        ck_assert_int_eq(r->type, MSG_WORK_ITEM);
        ck_assert_uint_eq(r->work_item.combination, (uint64_t)i);
        msg_destroy(&r);
    }
    msg_t *r = s_image(&s_a, id, 0, 0);
    ck_assert_int_eq(r->type, MSG_IMAGE_RECORDED);
    msg_destroy(&r);

    int64_t at = s_now_us();
    r = s_cancel(&s_a, id, "after_current_image", at);
    ck_assert_int_eq(r->type, MSG_JOB_CANCEL_RESULT);
    ck_assert_str_eq(job_status_name(r->job_cancel_result.prior_status), "processing");
    ck_assert_str_eq(job_status_name(r->job_cancel_result.status), "processing");
    ck_assert_uint_eq(r->job_cancel_result.completed_images, 1);
    ck_assert_uint_eq(r->job_cancel_result.total_images, 6);
    ck_assert_int_eq(r->job_cancel_result.requested_at_us, at);
    msg_destroy(&r);

    /* the same again: the first time and mode stand (an immediate one
     * would upgrade it: test_stronger_mode_upgrades_weaker_changes_nothing) */
    r = s_cancel(&s_a, id, "after_current_image", at + 1000);
    ck_assert_int_eq(r->type, MSG_JOB_CANCEL_RESULT);
    ck_assert_str_eq(job_status_name(r->job_cancel_result.prior_status), "processing");
    ck_assert_int_eq(r->job_cancel_result.requested_at_us, at);
    ck_assert_int_eq(r->job_cancel_result.mode, CANCEL_MODE_AFTER_CURRENT_IMAGE);
    msg_destroy(&r);

    json_t *doc = s_get(&s_a, id);
    ck_assert_str_eq(s_jstr(doc, "job_status"), "processing");
    ck_assert_str_eq(s_jstr(doc, "cancel_mode"), "after_current_image");
    ck_assert_str_eq(s_jstr(s_jcombo(doc, 0), "status"), "processing");
    ck_assert_str_eq(s_jstr(s_jcombo(doc, 1), "status"), "processing");
    ck_assert_str_eq(s_jstr(s_jcombo(doc, 2), "status"), "cancelled"); /* never ran */
    json_decref(doc);

    /* the durable cancel reaches the holders with every reply */
    r = s_image(&s_a, id, 1, 0); /* the in-flight image, kept */
    ck_assert_int_eq(r->type, MSG_IMAGE_RECORDED);
    ck_assert_str_eq(cancel_mode_name(r->image_recorded.cancel_mode), "after_current_image");
    ck_assert_uint_eq(r->image_recorded.completed_images, 2);
    msg_destroy(&r);
    r = s_lease(&s_a, id, 0);
    ck_assert_int_eq(r->type, MSG_LEASE_STATE);
    ck_assert_str_eq(cancel_mode_name(r->lease_state.cancel_mode), "after_current_image");
    msg_destroy(&r);
    r = s_claim(&s_a);
    s_expect_error(&r, -ENOENT);

    int64_t obs0 = at + 1234, stop0 = at + 5678, obs1 = at + 2001, stop1 = at + 9002;
    msg_t *req = s_stop_req(id, 0, "cancelled", "inst-a", obs0, stop0, NULL);
    r = s_call(&s_a, &req);
    ck_assert_int_eq(r->type, MSG_OK);
    ck_assert_str_eq(r->ok.detail, "combination cancelled");
    msg_destroy(&r);
    req = s_stop_req(id, 1, "cancelled", "inst-a", obs1, stop1, NULL);
    r = s_call(&s_a, &req);
    ck_assert_int_eq(r->type, MSG_OK);
    ck_assert_str_eq(r->ok.detail, "combination cancelled; job user_cancelled");
    msg_destroy(&r);

    doc = s_get(&s_a, id);
    char iso[40];
    ck_assert_str_eq(s_jstr(doc, "job_status"), "user_cancelled");
    ck_assert_int_eq(s_jint(doc, "completed_images"), 2);
    ck_assert(s_is_iso(s_jstr(doc, "finished_at")));
    s_iso(obs0, iso);
    ck_assert_str_eq(s_jstr(s_jcombo(doc, 0), "cancel_observed_at"), iso);
    s_iso(stop0, iso);
    ck_assert_str_eq(s_jstr(s_jcombo(doc, 0), "stopped_at"), iso);
    s_iso(obs1, iso);
    ck_assert_str_eq(s_jstr(s_jcombo(doc, 1), "cancel_observed_at"), iso);
    s_iso(stop1, iso);
    ck_assert_str_eq(s_jstr(s_jcombo(doc, 1), "stopped_at"), iso);
    json_decref(doc);

    /* ended: no more images, the cancel reports it */
    r = s_image(&s_a, id, 0, 1);
    s_expect_error(&r, -ENOENT);
    r = s_cancel(&s_a, id, NULL, at + 2000);
    ck_assert_int_eq(r->type, MSG_JOB_CANCEL_RESULT);
    ck_assert_str_eq(job_status_name(r->job_cancel_result.prior_status), "user_cancelled");
    ck_assert_str_eq(job_status_name(r->job_cancel_result.status), "user_cancelled");
    ck_assert_uint_eq(r->job_cancel_result.completed_images, 2);
    msg_destroy(&r);
}
END_TEST

/* The HTTP actor publishes a cancel before the store writes it, so the
 * generators' stops can reach the store first: they carry the cancel, the
 * job still ends user_cancelled, and the cancel's own statement, arriving
 * last, still answers as the first cancel of a running job. */
START_TEST(test_stops_ahead_of_the_cancel_record_it)
{
    char id[UUID_STR_LEN];
    s_create(&s_a, 2, 3, id);
    for (int i = 0; i < 2; i++) {
        msg_t *r = s_claim(&s_a);
        ck_assert_int_eq(r->type, MSG_WORK_ITEM);
        msg_destroy(&r);
    }
    msg_t *r = s_image(&s_a, id, 1, 0);
    ck_assert_int_eq(r->type, MSG_IMAGE_RECORDED);
    msg_destroy(&r);

    int64_t at = s_now_us();
    for (uint64_t comb = 0; comb < 2; comb++) {
        msg_t *req = s_stop_req(id, comb, "cancelled", s_a.name, at + 300, at + 310, NULL);
        req->task_stopped.cancel_requested_at_us = at;
        req->task_stopped.cancel_mode = CANCEL_MODE_IMMEDIATE;
        r = s_call(&s_a, &req);
        ck_assert_int_eq(r->type, MSG_OK);
        msg_destroy(&r);
    }
    json_t *doc = s_get(&s_a, id);
    ck_assert_str_eq(s_jstr(doc, "job_status"), "user_cancelled");
    ck_assert_str_eq(s_jstr(doc, "cancel_mode"), "immediate");
    char iso[40];
    s_iso(at, iso);
    ck_assert_str_eq(s_jstr(doc, "cancel_requested_at"), iso);
    json_decref(doc);

    r = s_cancel(&s_a, id, "immediate", at); /* the HTTP actor's write, last */
    ck_assert_int_eq(r->type, MSG_JOB_CANCEL_RESULT);
    ck_assert_str_eq(job_status_name(r->job_cancel_result.prior_status), "processing");
    ck_assert_uint_eq(r->job_cancel_result.completed_images, 1);
    msg_destroy(&r);
    r = s_cancel(&s_a, id, "immediate", at + 5000); /* a later one: already over */
    ck_assert_str_eq(job_status_name(r->job_cancel_result.prior_status), "user_cancelled");
    msg_destroy(&r);

    /* a stop that carries no cancel (a completion) records none */
    char id2[UUID_STR_LEN];
    s_create(&s_a, 1, 1, id2);
    r = s_claim(&s_a);
    msg_destroy(&r);
    msg_t *req = s_stop_req(id2, 0, "completed", s_a.name, 0, 0, NULL);
    req->task_stopped.cancel_requested_at_us = at;
    req->task_stopped.cancel_mode = CANCEL_MODE_IMMEDIATE;
    r = s_call(&s_a, &req);
    msg_destroy(&r);
    doc = s_get(&s_a, id2);
    ck_assert(json_is_null(json_object_get(doc, "cancel_requested_at")));
    json_decref(doc);
}
END_TEST

/* -------------------------------------------------------- final status */

START_TEST(test_job_ends_in_the_right_status_once)
{
    /* all completed */
    char id[UUID_STR_LEN];
    s_create(&s_a, 2, 1, id);
    for (int i = 0; i < 2; i++) {
        msg_t *r = s_claim(&s_a);
        msg_destroy(&r);
        r = s_image(&s_a, id, (uint64_t)i, 0);
        msg_destroy(&r);
    }
    char *d = s_stop(&s_a, id, 0, "completed");
    ck_assert_str_eq(d, "combination completed");
    free(d);
    d = s_stop(&s_a, id, 1, "completed");
    ck_assert_str_eq(d, "combination completed; job completed");
    free(d);
    d = s_stop(&s_a, id, 1, "completed"); /* a repeat changes nothing */
    ck_assert_msg(strncmp(d, "not applied", 11) == 0, "detail: %s", d);
    free(d);
    json_t *doc = s_get(&s_a, id);
    ck_assert_str_eq(s_jstr(doc, "job_status"), "completed");
    ck_assert(s_is_iso(s_jstr(doc, "finished_at")));
    json_decref(doc);

    /* one failed */
    s_create(&s_a, 2, 1, id);
    for (int i = 0; i < 2; i++) {
        msg_t *r = s_claim(&s_a);
        msg_destroy(&r);
    }
    msg_t *req = s_stop_req(id, 0, "failed", "inst-a", 0, 0, "out of memory");
    msg_t *r = s_call(&s_a, &req);
    ck_assert_int_eq(r->type, MSG_OK);
    msg_destroy(&r);
    d = s_stop(&s_a, id, 1, "completed");
    ck_assert_str_eq(d, "combination completed; job failed");
    free(d);
    doc = s_get(&s_a, id);
    ck_assert_str_eq(s_jstr(doc, "job_status"), "failed");
    ck_assert_str_eq(s_jstr(doc, "error"), "out of memory");
    ck_assert_str_eq(s_jstr(s_jcombo(doc, 0), "error"), "out of memory");
    json_decref(doc);

    /* bad input (an outcome outside the table never reaches the store: the
     * decoder drops the message) */
    req = s_stop_req(id, 9, "completed", "inst-a", 0, 0, NULL);
    r = s_call(&s_a, &req);
    s_expect_error(&r, -ENOENT);
}
END_TEST

START_TEST(test_last_two_stops_race_and_finish_once)
{
    s_start_b(15.);
    for (int round = 0; round < 40; round++) {
        char id[UUID_STR_LEN];
        s_create(&s_a, 2, 1, id);
        msg_t *r = s_claim(&s_a);
        ck_assert_int_eq(r->type, MSG_WORK_ITEM);
        uint64_t ca = r->work_item.combination;
        msg_destroy(&r);
        r = s_claim(&s_b);
        ck_assert_int_eq(r->type, MSG_WORK_ITEM);
        uint64_t cb = r->work_item.combination;
        msg_destroy(&r);
        ck_assert_uint_ne(ca, cb);

        /* both stops at the same moment, on two connections */
        msg_t *qa = s_stop_req(id, ca, "completed", "inst-a", 0, 0, NULL);
        msg_t *qb = s_stop_req(id, cb, round % 2 ? "cancelled" : "completed", "inst-b", 0, 0, NULL);
        s_send(&s_a, qa);
        s_send(&s_b, qb);
        msg_t *ra = s_wait_reply(&s_a, qa->corr);
        msg_t *rb = s_wait_reply(&s_b, qb->corr);
        msg_destroy(&qa);
        msg_destroy(&qb);
        ck_assert_int_eq(ra->type, MSG_OK);
        ck_assert_int_eq(rb->type, MSG_OK);
        int finals =
            (strstr(ra->ok.detail, "; job ") != NULL) + (strstr(rb->ok.detail, "; job ") != NULL);
        ck_assert_msg(finals == 1, "round %d: %s / %s", round, ra->ok.detail, rb->ok.detail);
        msg_destroy(&ra);
        msg_destroy(&rb);
        json_t *doc = s_get(&s_a, id);
        ck_assert_str_eq(s_jstr(doc, "job_status"), "completed");
        ck_assert(s_is_iso(s_jstr(doc, "finished_at")));
        json_decref(doc);
    }
}
END_TEST

/* ----------------------------------------------------- release and lease */

START_TEST(test_released_task_is_claimable_again)
{
    s_start_b(15.);
    char id[UUID_STR_LEN];
    s_create(&s_a, 1, 3, id);
    msg_t *r = s_claim(&s_a);
    ck_assert_int_eq(r->type, MSG_WORK_ITEM);
    msg_destroy(&r);
    r = s_image(&s_a, id, 0, 0);
    ck_assert_int_eq(r->type, MSG_IMAGE_RECORDED);
    msg_destroy(&r);
    r = s_claim(&s_b);
    s_expect_error(&r, -ENOENT);

    char *d = s_stop(&s_a, id, 0, "released");
    ck_assert_str_eq(d, "combination pending");
    free(d);
    json_t *doc = s_get(&s_a, id);
    ck_assert_str_eq(s_jstr(doc, "job_status"), "processing");
    ck_assert_str_eq(s_jstr(s_jcombo(doc, 0), "status"), "pending");
    ck_assert(json_is_null(json_object_get(s_jcombo(doc, 0), "claimed_by")));
    json_decref(doc);
    /* it no longer holds it: it cannot end it either */
    d = s_stop(&s_a, id, 0, "completed");
    ck_assert_str_eq(d, "not applied: combination is pending");
    free(d);

    /* the other instance resumes at the next image, at once */
    r = s_claim(&s_b);
    ck_assert_int_eq(r->type, MSG_WORK_ITEM);
    ck_assert_str_eq(r->work_item.job_id, id);
    ck_assert_uint_eq(r->work_item.next_index, 1);
    msg_destroy(&r);

    /* the former holder can no longer end or release it */
    d = s_stop(&s_a, id, 0, "released");
    ck_assert_str_eq(d, "not applied: combination is processing, claimed by inst-b");
    free(d);
    d = s_stop(&s_a, id, 0, "failed");
    ck_assert_msg(strncmp(d, "not applied", 11) == 0, "detail: %s", d);
    free(d);
    r = s_lease(&s_a, id, 0);
    s_expect_error(&r, -ENOENT);
    r = s_lease(&s_b, id, 0);
    ck_assert_int_eq(r->type, MSG_LEASE_STATE);
    ck_assert_int_eq(r->lease_state.cancel_mode, CANCEL_MODE_NONE);
    msg_destroy(&r);

    /* a release of a job being cancelled ends the combination instead */
    r = s_cancel(&s_a, id, NULL, s_now_us());
    msg_destroy(&r);
    d = s_stop(&s_b, id, 0, "released");
    ck_assert_str_eq(d, "combination cancelled; job user_cancelled");
    free(d);
}
END_TEST

START_TEST(test_expired_lease_is_reclaimable)
{
    /* inst-a holds with a 0.2 s lease and stops renewing, as if it died */
    s_inst_stop(&s_a);
    s_inst_start(&s_a, s_db, "inst-a", 0.2);
    s_inst_wait_ready(&s_a);
    s_start_b(15.);
    char id[UUID_STR_LEN];
    s_create(&s_a, 1, 4, id);
    msg_t *r = s_claim(&s_a);
    ck_assert_int_eq(r->type, MSG_WORK_ITEM);
    msg_destroy(&r);
    int64_t claimed = s_now_us();
    for (int i = 0; i < 2; i++) {
        r = s_image(&s_a, id, 0, (uint64_t)i);
        ck_assert_int_eq(r->type, MSG_IMAGE_RECORDED);
        msg_destroy(&r);
    }
    r = s_claim(&s_b);
    bool early = r->type == MSG_WORK_ITEM;
    int64_t first = s_now_us();
    if (!early)
        s_expect_error(&r, -ENOENT);
    else /* only possible on a machine slow enough to take 0.2 s for it */
        ck_assert_msg(first - claimed >= 150000, "claimed while the lease held");

    /* no event announces an expiry: ask until the claim is free */
    int64_t deadline = s_now_us() + (int64_t)WAIT_MS * 1000;
    while (!early) {
        r = s_claim(&s_b);
        if (r->type == MSG_WORK_ITEM)
            break;
        s_expect_error(&r, -ENOENT);
        ck_assert_msg(s_now_us() < deadline, "lease never expired");
        msg_t *none = mailbox_recv(s_b.mb, 50);
        msg_destroy(&none);
    }
    ck_assert_msg(s_now_us() - claimed >= 150000, "reclaimed after %" PRId64 " us",
                  s_now_us() - claimed);
    ck_assert_str_eq(r->work_item.job_id, id);
    ck_assert_uint_eq(r->work_item.next_index, 2); /* resumes, nothing redone */
    msg_destroy(&r);

    /* the old holder's renewal tells it the claim is gone */
    r = s_lease(&s_a, id, 0);
    s_expect_error(&r, -ENOENT);
    json_t *doc = s_get(&s_a, id);
    ck_assert_str_eq(s_jstr(s_jcombo(doc, 0), "claimed_by"), "inst-b");
    json_decref(doc);
}
END_TEST

/* ------------------------------------------------------- connection loss */

START_TEST(test_killed_connection_is_replaced)
{
    char id[UUID_STR_LEN];
    s_create(&s_a, 1, 1, id);
    ck_assert_int_eq(s_sql_long(s_db, "SELECT count(pg_terminate_backend(pid)) "
                                      "FROM pg_stat_activity "
                                      "WHERE application_name = 'imagejobs-store/inst-a'"),
                     1);
    /* answered every time (EAGAIN while it reconnects), then served again */
    int64_t deadline = s_now_us() + (int64_t)WAIT_MS * 1000;
    int eagain = 0;
    for (;;) {
        msg_t *req = msg_new(MSG_JOB_GET);
        msg_set_str(&req->job_get.job_id, id);
        msg_t *r = s_call(&s_a, &req);
        if (r->type == MSG_JOB_JSON) {
            msg_destroy(&r);
            break;
        }
        eagain++;
        s_expect_error(&r, -EAGAIN);
        ck_assert_msg(s_now_us() < deadline, "never reconnected");
        msg_t *none = mailbox_recv(s_a.mb, 20);
        msg_destroy(&none);
    }
    /* the first request after the kill finds the connection gone */
    ck_assert_int_ge(eagain, 1);
    ck_assert_int_eq(s_sql_long(s_db, "SELECT count(*) FROM pg_stat_activity "
                                      "WHERE application_name = 'imagejobs-store/inst-a'"),
                     1);
}
END_TEST

START_TEST(test_store_started_before_its_database_connects_later)
{
    /* the server answers, the database is not there yet: unavailable */
    char name[80];
    snprintf(name, sizeof name, "%s_late", s_dbname);
    s_drop_db(name);
    char *db = s_conninfo_for(name);
    s_inst_start(&s_b, db, "inst-b", 15.);
    msg_t *req = msg_new(MSG_HEALTH_CHECK);
    msg_t *r = s_call(&s_b, &req);
    ck_assert_int_eq(r->type, MSG_HEALTH);
    ck_assert(!r->health.ok);
    msg_destroy(&r);
    char id[UUID_STR_LEN];
    uuid_v4(id);
    req = msg_new(MSG_JOB_GET);
    msg_set_str(&req->job_get.job_id, id);
    r = s_call(&s_b, &req);
    s_expect_error(&r, -EAGAIN);

    /* it appears: the store connects on its own (backoff at most 1 s) */
    char *made = s_create_db(name);
    ck_assert_ptr_nonnull(made);
    char err[256] = "";
    ck_assert_msg(store_migrate(made, err, sizeof err) == 0, "%s", err);
    s_inst_wait_ready(&s_b);
    s_create(&s_b, 1, 1, id);
    s_inst_stop(&s_b);
    free(made);
    free(db);
    s_drop_db(name);
}
END_TEST

/* Its database missing for 7 s while HEALTH_CHECKs keep coming (the
 * backoff reaches its cap), then there: the store is healthy, and serves a
 * JOB_GET, within 3 s of the database's return. It retries at least every
 * second, and at once (at most every 0.2 s) for a health check or a
 * request it refuses. With the old 5 s cap its attempts came 0.1, 0.3,
 * 0.7, 1.5, 3.1, 6.3 and 11.3 s after the first failure: more than 3 s
 * after a return at 7 s. The bound leaves a second for a busy machine. */
START_TEST(test_database_return_is_served_at_once)
{
    char name[80];
    snprintf(name, sizeof name, "%s_back", s_dbname);
    s_drop_db(name);
    char *db = s_conninfo_for(name);
    s_inst_start(&s_b, db, "inst-b", 15.);
    int64_t until = s_now_us() + 7000000;
    while (s_now_us() < until) {
        msg_t *req = msg_new(MSG_HEALTH_CHECK);
        msg_t *r = s_call(&s_b, &req);
        ck_assert_int_eq(r->type, MSG_HEALTH);
        ck_assert(!r->health.ok);
        msg_destroy(&r);
        msg_t *none = mailbox_recv(s_b.mb, 100); /* the poll interval */
        msg_destroy(&none);
    }

    char *made = s_create_db(name);
    ck_assert_ptr_nonnull(made);
    char err[256] = "";
    ck_assert_msg(store_migrate(made, err, sizeof err) == 0, "%s", err);
    int64_t back = s_now_us(), healthy_at = 0;
    while (!healthy_at) {
        msg_t *req = msg_new(MSG_HEALTH_CHECK);
        msg_t *r = s_call(&s_b, &req);
        ck_assert_int_eq(r->type, MSG_HEALTH);
        if (r->health.ok)
            healthy_at = s_now_us();
        msg_destroy(&r);
        ck_assert_msg(s_now_us() < back + (int64_t)WAIT_MS * 1000, "never healthy again");
        msg_t *none = mailbox_recv(s_b.mb, 50);
        msg_destroy(&none);
    }
    ck_assert_msg(healthy_at - back < 3000000, "healthy %.2f s after the database was back",
                  (double)(healthy_at - back) / 1e6);
    char id[UUID_STR_LEN];
    uuid_v4(id);
    msg_t *req = msg_new(MSG_JOB_GET);
    msg_set_str(&req->job_get.job_id, id);
    msg_t *r = s_call(&s_b, &req);
    s_expect_error(&r, -ENOENT); /* served: no such job, not unavailable */
    s_inst_stop(&s_b);
    free(made);
    free(db);
    s_drop_db(name);
}
END_TEST

/* ------------------------------------------- no database: unreachable */

/* A TCP port on 127.0.0.1 that nothing listens on. */
static int s_dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd); /* bound, never listened: connections are refused */
    return ntohs(a.sin_port);
}

static void s_nodb_setup(void)
{
    log_set_level(LOG_WARN);
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d dbname=none user=nobody",
             s_dead_port());
    s_inst_start(&s_a, conninfo, "inst-x", 15.);
}

static void s_nodb_teardown(void)
{
    s_inst_stop(&s_a);
}

START_TEST(test_unreachable_database_answers_eagain)
{
    char id[UUID_STR_LEN];
    uuid_v4(id);
    for (int round = 0; round < 5; round++) {
        int64_t t0 = s_now_us();
        msg_t *req = msg_new(MSG_JOB_GET);
        msg_set_str(&req->job_get.job_id, id);
        msg_t *r = s_call(&s_a, &req);
        s_expect_error(&r, -EAGAIN);
        req = s_work_request(&s_a);
        r = s_call(&s_a, &req);
        ck_assert_int_eq(r->type, MSG_ERROR);
        ck_assert_int_eq(r->error.code, -EAGAIN);
        ck_assert_msg(strstr(r->error.reason, "PostgreSQL") != NULL, "reason: %s", r->error.reason);
        msg_destroy(&r);
        req = msg_new(MSG_HEALTH_CHECK);
        r = s_call(&s_a, &req);
        ck_assert_int_eq(r->type, MSG_HEALTH);
        ck_assert(!r->health.ok);
        ck_assert_ptr_nonnull(r->health.detail);
        msg_destroy(&r);
        /* promptly: no connect timeout in the way */
        ck_assert_msg(s_now_us() - t0 < 2000000, "took %" PRId64 " us", s_now_us() - t0);
        msg_t *none = mailbox_recv(s_a.mb, 150); /* let a few retries pass */
        msg_destroy(&none);
    }
    char err[256] = "";
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d dbname=none connect_timeout=2",
             s_dead_port());
    ck_assert_int_eq(store_migrate(conninfo, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "cannot connect") != NULL, "reason: %s", err);
}
END_TEST

START_TEST(test_bad_conninfo_fails_start)
{
    store_config_t cfg = {.conninfo = "host='unterminated"};
    char err[256] = "";
    runtime_t *rt = s_a.rt;
    /* the name "store" is taken in s_a's runtime: use a runtime of our own */
    runtime_t *own = runtime_new();
    ck_assert_ptr_null(store_start(own, &cfg, err, sizeof err));
    ck_assert_msg(strstr(err, "conninfo") != NULL, "reason: %s", err);
    cfg.conninfo = NULL;
    ck_assert_ptr_null(store_start(own, &cfg, err, sizeof err));
    ck_assert_ptr_null(store_start(rt, NULL, err, sizeof err));
    runtime_destroy(&own);
}
END_TEST

/* Input is checked before anything reaches PostgreSQL. */
START_TEST(test_malformed_requests_are_refused)
{
    msg_t *req, *r;
    const char *bad_ids[] = {NULL, "", "not-a-uuid", "550e8400-e29b-41d4-a716-44665544000g",
                             "550e8400e29b41d4a716446655440000"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
        req = msg_new(MSG_JOB_GET);
        msg_set_str(&req->job_get.job_id, bad_ids[i]);
        r = s_call(&s_a, &req);
        s_expect_error(&r, -EINVAL);
        req = msg_new(MSG_ATTACHMENT_GET);
        msg_set_str(&req->attachment_get.attach_id, bad_ids[i]);
        r = s_call(&s_a, &req);
        s_expect_error(&r, -EINVAL);
        req = s_image_req("x", 0, 0);
        msg_set_str(&req->image_ready.job_id, bad_ids[i]);
        r = s_call(&s_a, &req);
        s_expect_error(&r, -EINVAL);
        req = s_stop_req("x", 0, "completed", NULL, 0, 0, NULL);
        msg_set_str(&req->task_stopped.job_id, bad_ids[i]);
        r = s_call(&s_a, &req);
        s_expect_error(&r, -EINVAL);
        req = msg_new(MSG_LEASE_RENEW);
        msg_set_str(&req->lease_renew.job_id, bad_ids[i]);
        r = s_call(&s_a, &req);
        s_expect_error(&r, -EINVAL);
    }
    char id[UUID_STR_LEN];
    uuid_v4(id);
    const char *bad_combos[] = {NULL,
                                "",
                                "{",
                                "{}",
                                "[]",
                                "[1]",
                                "[{\"style\": \"x\"}]",
                                "[{\"seed\": -1}]",
                                "[{\"seed\": 1.5}]",
                                "[{\"seed\": 1, \"style\": 3}]",
                                "[{\"seed\": 1, \"seed\": 2}]"};
    for (size_t i = 0; i < sizeof bad_combos / sizeof *bad_combos; i++) {
        req = msg_new(MSG_JOB_CREATE);
        msg_set_str(&req->job_create.job_id, id);
        msg_set_str(&req->job_create.prompt, "p");
        msg_set_str(&req->job_create.combinations, bad_combos[i]);
        req->job_create.images_per_combination = req->job_create.width = 1;
        req->job_create.height = req->job_create.steps = 1;
        r = s_call(&s_a, &req);
        s_expect_error(&r, -EINVAL);
    }
    /* what could not be generated: past the limits of messages/limits.h */
    char big[JOB_STYLE_MAX + 64];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char style[sizeof big + 32];
    snprintf(style, sizeof style, "[{\"seed\": 1, \"style\": \"%s\"}]", big);
    for (int i = 0; i < 2; i++) {
        req = msg_new(MSG_JOB_CREATE);
        msg_set_str(&req->job_create.job_id, id);
        msg_set_str(&req->job_create.prompt, i == 0 ? big : "p");
        msg_set_str(&req->job_create.combinations, i == 0 ? "[{\"seed\": 1}]" : style);
        req->job_create.images_per_combination = req->job_create.width = 1;
        req->job_create.height = req->job_create.steps = 1;
        r = s_call(&s_a, &req);
        s_expect_error(&r, -EINVAL);
    }
    req = msg_new(MSG_JOB_CREATE); /* zero sizes, no prompt */
    msg_set_str(&req->job_create.combinations, "[{\"seed\": 1}]");
    msg_set_str(&req->job_create.prompt, "p");
    r = s_call(&s_a, &req);
    s_expect_error(&r, -EINVAL);
    req = msg_new(MSG_JOB_CREATE);
    msg_set_str(&req->job_create.combinations, "[{\"seed\": 1}]");
    req->job_create.images_per_combination = req->job_create.width = 1;
    req->job_create.height = req->job_create.steps = 1;
    r = s_call(&s_a, &req);
    s_expect_error(&r, -EINVAL);
    req = s_image_req(id, 0, 0); /* empty image */
    msg_set_bin(&req->image_ready.png, NULL, 0);
    r = s_call(&s_a, &req);
    s_expect_error(&r, -EINVAL);
    req = s_image_req(id, (uint64_t)1 << 40, 0);
    r = s_call(&s_a, &req);
    s_expect_error(&r, -EINVAL);
    /* and the actor is still there */
    req = msg_new(MSG_HEALTH_CHECK);
    r = s_call(&s_a, &req);
    ck_assert_int_eq(r->type, MSG_HEALTH);
    msg_destroy(&r);
}
END_TEST

/* ----------------------------------- serve while the migration lock is held */

/* Whether path contains text. */
static bool s_log_has(const char *path, const char *text)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

/* Polls (with a deadline) until a session of `imagejobs migrate` waits for
 * a lock in database name. */
static void s_wait_migration_blocked(const char *admin, const char *name)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s'"
             " AND application_name = 'imagejobs-migrate' AND wait_event_type = 'Lock'",
             name);
    int64_t deadline = s_now_us() + (int64_t)WAIT_MS * 1000;
    while (s_sql_long(admin, sql) < 1) {
        ck_assert_msg(s_now_us() < deadline, "serve never waited for the migration lock");
        usleep(20000);
    }
}

/* `imagejobs serve` while another session holds the migration lock: from
 * its start (held_from_start), or from a retry (the database appears, and
 * is locked, after serve failed a first attempt). Either way SIGTERM ends
 * it, with status 0, within a generous bound, although the lock is still
 * held: each migration attempt gives up on the lock after a while. */
static void s_serve_sigterm_while_locked(bool held_from_start)
{
    char name[80], log[128];
    snprintf(name, sizeof name, "%s_sig", s_dbname);
    snprintf(log, sizeof log, "tests/check_store.serve-%d.log", held_from_start);
    char *admin = s_conninfo_for("postgres");
    char *db = NULL;
    PGconn *holder = NULL;
    if (held_from_start)
        db = s_create_db(name);
    else {
        s_drop_db(name);
        db = s_conninfo_for(name);
    }
    ck_assert_ptr_nonnull(db);
    if (held_from_start) {
        holder = PQconnectdb(db);
        ck_assert_int_eq(PQstatus(holder), CONNECTION_OK);
        PGresult *r = PQexec(holder, "SELECT pg_advisory_lock(" STORE_MIGRATE_LOCK_KEY ")");
        ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
        PQclear(r);
    }
    const char *redis = getenv("IMAGEJOBS_TEST_REDIS");
    const char *args[] = {"--database",   db,  "--redis", redis ? redis : "redis://127.0.0.1:1",
                          "--generators", "0", NULL};
    int port = api_free_port();
    pid_t pid = api_spawn(port, args, log);
    ck_assert_int_gt(pid, 0);
    if (!held_from_start) {
        int64_t deadline = s_now_us() + (int64_t)WAIT_MS * 1000;
        while (!s_log_has(log, "schema not applied yet")) {
            ck_assert_msg(s_now_us() < deadline, "serve did not fail its first migration");
            ck_assert_int_eq(waitpid(pid, NULL, WNOHANG), 0);
            usleep(20000);
        }
        free(db);
        db = s_create_db(name);
        ck_assert_ptr_nonnull(db);
        holder = PQconnectdb(db);
        ck_assert_int_eq(PQstatus(holder), CONNECTION_OK);
        PGresult *r = PQexec(holder, "SELECT pg_advisory_lock(" STORE_MIGRATE_LOCK_KEY ")");
        ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
        PQclear(r);
    }
    s_wait_migration_blocked(admin, name);
    /* SIGTERM, then 10 s (generous: an attempt waits 2 s for the lock) */
    int status = api_stop(pid, 10.);
    ck_assert_msg(status == 0, "serve did not stop on SIGTERM with status 0 (%d; see %s)", status,
                  log);
    PQfinish(holder);
    free(db);
    free(admin);
    s_drop_db(name);
}

START_TEST(test_serve_stops_on_sigterm_while_the_lock_is_held)
{
    s_serve_sigterm_while_locked(true);
}
END_TEST

START_TEST(test_serve_stops_on_sigterm_while_it_retries_the_migration)
{
    s_serve_sigterm_while_locked(false);
}
END_TEST

/* ----------------------------------------------------------------- main */

static Suite *s_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("no database");
    tcase_add_checked_fixture(tc, s_nodb_setup, s_nodb_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_unreachable_database_answers_eagain);
    tcase_add_test(tc, test_bad_conninfo_fails_start);
    tcase_add_test(tc, test_malformed_requests_are_refused);
    suite_add_tcase(s, tc);
    if (!s_db)
        return s;

    tc = tcase_create("migrations");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_migrate_twice_is_idempotent);
    tcase_add_test(tc, test_concurrent_migrations_both_succeed_once);
    suite_add_tcase(s, tc);

    tc = tcase_create("postgresql");
    tcase_add_checked_fixture(tc, s_db_setup, s_db_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_create_then_get_has_every_field);
    tcase_add_test(tc, test_pipelined_burst_all_answered);
    tcase_add_test(tc, test_claims_each_combination_once_across_instances);
    tcase_add_test(tc, test_image_recording_is_idempotent);
    tcase_add_test(tc, test_cancel_pending_job_ends_it_at_once);
    tcase_add_test(tc, test_cancel_processing_job_then_stops_end_it);
    tcase_add_test(tc, test_stronger_mode_upgrades_weaker_changes_nothing);
    tcase_add_test(tc, test_stops_ahead_of_the_cancel_record_it);
    tcase_add_test(tc, test_job_ends_in_the_right_status_once);
    tcase_add_test(tc, test_last_two_stops_race_and_finish_once);
    tcase_add_test(tc, test_released_task_is_claimable_again);
    tcase_add_test(tc, test_expired_lease_is_reclaimable);
    tcase_add_test(tc, test_killed_connection_is_replaced);
    tcase_add_test(tc, test_store_started_before_its_database_connects_later);
    tcase_add_test(tc, test_database_return_is_served_at_once);
    tcase_add_test(tc, test_events_are_numbered_in_order_published_and_readable);
    tcase_add_test(tc, test_cancel_events_come_before_the_stops_and_the_end);
    suite_add_tcase(s, tc);

    if (getenv("IMAGEJOBS_BIN")) { /* the binary: make check sets it */
        tc = tcase_create("serve");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_serve_stops_on_sigterm_while_the_lock_is_held);
        tcase_add_test(tc, test_serve_stops_on_sigterm_while_it_retries_the_migration);
        suite_add_tcase(s, tc);
    }
    return s;
}

/* This suite's own database (claims see only our jobs); without
 * PostgreSQL its tests skip themselves. */
static int s_before(void)
{
    s_server = getenv("IMAGEJOBS_TEST_DATABASE");
    if (s_server && !*s_server)
        s_server = NULL;
    if (!s_server) {
        printf("SKIP: no IMAGEJOBS_TEST_DATABASE (PostgreSQL tests skipped; "
               "run cmd/imagejobs-local test)\n");
        return 0;
    }
    snprintf(s_dbname, sizeof s_dbname, "ij_check_store_%ld", (long)getpid());
    s_db = s_create_db(s_dbname);
    char err[256] = "";
    if (!s_db || store_migrate(s_db, err, sizeof err) < 0) {
        fprintf(stderr, "cannot set up database %s: %s\n", s_dbname, s_db ? err : "create failed");
        return 1;
    }
    return 0;
}

static int s_after(void)
{
    if (s_db) {
        s_drop_db(s_dbname);
        free(s_db);
        s_db = NULL;
    }
    return 0;
}

const test_program_t test_program = {.suite = s_suite, .before = s_before, .after = s_after};
