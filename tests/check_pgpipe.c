/*
 * check_pgpipe.c - the libpq pipeline engine (actors/store/pgpipe.c) on its
 * own, on a libev loop of the test, against real PostgreSQL servers.
 *
 * IMAGEJOBS_TEST_DATABASE (cmd/imagejobs-local test) names the shared test
 * server: pipelined groups, failing statements, binary results, callbacks
 * that submit or destroy, a backend killed under the pipe. The server
 * restarts (survived; a return found within the backoff cap; a return
 * found by the first group after it) run on a private PostgreSQL each
 * (initdb in /tmp, from IMAGEJOBS_TEST_PGBIN) because stopping the shared
 * one would break the test programs running beside this one. Without the
 * variable only the tests that need no server run (nothing listens, bad
 * conninfo, retries brought forward by refused groups).
 */
#include "config.h"

#include "actors/store/pgpipe.h"
#include "runtime/log.h"

#include "tests/fixture.h"
#include "tests/runner.h"
#include <arpa/inet.h>

#include <check.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WAIT_S 30. /* generous: sanitizer builds on 2 busy cores */

static const char *s_server; /* IMAGEJOBS_TEST_DATABASE, or NULL */
static pid_t s_runner_pid;

/* ------------------------------------------------------------- statements */

enum { ST_ADD_ONE, ST_DIVIDE, ST_ECHO_BYTES, ST_BACKEND_PID, ST_COUNT };

static const Oid s_int8[] = {PGPIPE_INT8};
static const Oid s_int4[] = {PGPIPE_INT4};
static const Oid s_bytea[] = {PGPIPE_BYTEA};

static const pgpipe_stmt_t s_stmts[ST_COUNT] = {
    [ST_ADD_ONE] = {"t_add_one", "SELECT $1::int8 + 1", 1, s_int8},
    [ST_DIVIDE] = {"t_divide", "SELECT 100 / $1::int4", 1, s_int4},
    [ST_ECHO_BYTES] = {"t_echo", "SELECT $1::bytea", 1, s_bytea},
    [ST_BACKEND_PID] = {"t_pid", "SELECT pg_backend_pid()", 0, NULL},
};

/* --------------------------------------------------------------- harness */

/* What the callbacks saw. */
typedef struct {
    struct ev_loop *loop;
    pgpipe_t *pipe;
    pgpipe_config_t cfg;
    char app_name[64];
    int connects, connect_failures, disconnects;
    double connected_at, failed_at, lost_at; /* s_mono() of the last of each */
    double first_ok_at;                      /* of the first group answered 0, or 0 */
    int refused, accepted;                   /* the ticker's submits (s_tick_cb) */
    char why[512];
    int answered;
    int statuses[1024];
    char values[1024][64];
    char reasons[1024][256];
    /* a callback's own action: submit a follow-up, destroy the pipe */
    int chain_left;
    bool destroy_in_callback;
} ctx_t;

static ctx_t s_ctx;
static bool s_timed_out;
static int s_max_inflight; /* for the next s_open(); 0: the default */
static double s_backoff_s; /* for the next s_open(): first and max retry delay; 0: defaults */

/* Monotonic seconds. */
static double s_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void s_on_connect(pgpipe_t *p, int status, const char *why, void *arg)
{
    ctx_t *c = arg;
    if (status == 0) {
        c->connects++;
        c->connected_at = s_mono();
    } else {
        c->connect_failures++;
        c->failed_at = s_mono();
        snprintf(c->why, sizeof c->why, "%s", why);
    }
}

static void s_on_disconnect(pgpipe_t *p, const char *why, void *arg)
{
    ctx_t *c = arg;
    c->disconnects++;
    c->lost_at = s_mono();
    snprintf(c->why, sizeof c->why, "%s", why);
}

static void s_submit_one(ctx_t *c, int stmt, const char *param);

/* Records the first value of a group's last result (or its error). */
static void s_on_reply(pgpipe_t *p, const pgpipe_reply_t *r, void *arg)
{
    ctx_t *c = arg;
    int i = c->answered++;
    ck_assert_int_lt(i, 1024);
    c->statuses[i] = r->status;
    if (r->status == 0 && !c->first_ok_at)
        c->first_ok_at = s_mono();
    c->values[i][0] = '\0';
    snprintf(c->reasons[i], sizeof c->reasons[i], "%s", r->reason ? r->reason : "");
    if (r->status == 0 && r->error) {
        snprintf(c->values[i], sizeof c->values[i], "error %s",
                 PQresultErrorField(r->error, PG_DIAG_SQLSTATE));
    } else if (r->status == 0) {
        ck_assert_int_eq(r->nresults, r->nstmts);
        const PGresult *res = r->results[r->nresults - 1];
        ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
        int len = PQgetlength(res, 0, 0);
        memcpy(c->values[i], PQgetvalue(res, 0, 0), len < 63 ? (size_t)len : 63);
        c->values[i][len < 63 ? len : 63] = '\0';
    }
    if (c->destroy_in_callback) {
        c->destroy_in_callback = false;
        pgpipe_destroy(&c->pipe);
        ck_assert_ptr_null(c->pipe);
    }
    if (c->chain_left > 0 && c->pipe) {
        c->chain_left--;
        char v[32];
        snprintf(v, sizeof v, "%d", i + 1);
        s_submit_one(c, ST_ADD_ONE, v);
    }
}

/* A group of one statement with one text parameter (or none). */
static void s_submit_one(ctx_t *c, int stmt, const char *param)
{
    int stmts[] = {stmt};
    pgpipe_group_t *g = pgpipe_group_new(stmts, 1, 0, s_on_reply, c);
    if (param)
        pgpipe_param_str(g, param);
    ck_assert_int_eq(pgpipe_submit(c->pipe, &g), 0);
    ck_assert_ptr_null(g);
}

static void s_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    s_timed_out = true;
}

/* Turns the loop until *counter reaches target (a callback moves it) or
 * wait_s have passed; whether it got there. */
static bool s_run_within(const int *counter, int target, double wait_s)
{
    ev_timer t;
    ev_timer_init(&t, s_deadline_cb, wait_s, 0.);
    ev_timer_start(s_ctx.loop, &t);
    s_timed_out = false;
    while (*counter < target && !s_timed_out)
        ev_run(s_ctx.loop, EVRUN_ONCE);
    ev_timer_stop(s_ctx.loop, &t);
    return *counter >= target;
}

/* Turns the loop until *counter reaches target (a callback moves it). */
static void s_run_until(const int *counter, int target, const char *what)
{
    bool ok = s_run_within(counter, target, WAIT_S);
    ck_assert_msg(ok, "%s: not within %.0f s (%d of %d; last reason: %s)", what, WAIT_S, *counter,
                  target, s_ctx.why);
}

/* Turns the loop for wait_s. */
static void s_run_for(double wait_s)
{
    int never = 0;
    s_run_within(&never, 1, wait_s);
}

/* A repeating timer that submits one ST_ADD_ONE group per tick ("41"),
 * counting refusals, until one is accepted (then it stops). */
static void s_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    ctx_t *c = w->data;
    int stmts[] = {ST_ADD_ONE};
    pgpipe_group_t *g = pgpipe_group_new(stmts, 1, 0, s_on_reply, c);
    pgpipe_param_str(g, "41");
    if (pgpipe_submit(c->pipe, &g) == 0) {
        c->accepted++;
        ev_timer_stop(loop, w);
    } else {
        c->refused++;
    }
}

/* A pipe on conninfo with the test statements. */
static void s_open(const char *conninfo, const pgpipe_stmt_t *stmts, int nstmts)
{
    memset(&s_ctx, 0, sizeof s_ctx);
    s_ctx.loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(s_ctx.loop);
    snprintf(s_ctx.app_name, sizeof s_ctx.app_name, "pgpipe-test-%d", (int)getpid());
    s_ctx.cfg = (pgpipe_config_t){.conninfo = conninfo,
                                  .application_name = s_ctx.app_name,
                                  .setup_sql = "SET lock_timeout = '5s'",
                                  .stmts = stmts,
                                  .nstmts = nstmts,
                                  .setup_hint = "test hint",
                                  .max_inflight = s_max_inflight,
                                  .backoff_min_s = s_backoff_s,
                                  .backoff_max_s = s_backoff_s,
                                  .on_connect = s_on_connect,
                                  .on_disconnect = s_on_disconnect,
                                  .arg = &s_ctx};
    char err[256] = "";
    s_ctx.pipe = pgpipe_new(s_ctx.loop, &s_ctx.cfg, err, sizeof err);
    ck_assert_msg(s_ctx.pipe != NULL, "pgpipe_new: %s", err);
}

static void s_close(void)
{
    pgpipe_destroy(&s_ctx.pipe);
    ev_loop_destroy(s_ctx.loop);
    s_ctx.loop = NULL;
}

/* Runs sql on conninfo from the test (blocking is fine here); the first
 * value, or "" (malloc'd); NULL on error. */
static char *s_sql(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    char *out = NULL;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK)
            out = strdup(PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
        PQclear(r);
    }
    PQfinish(c);
    return out;
}

/* A TCP port on 127.0.0.1 that nothing listens on. */
static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd); /* bound, never listened: connections are refused */
    return ntohs(a.sin_port);
}

/* ----------------------------------------------------------- no server */

START_TEST(test_unreachable_server_answers_eagain_then_refuses)
{
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d dbname=none", s_free_port());
    s_open(conninfo, s_stmts, ST_COUNT);
    /* before the first attempt: the group waits for it */
    ck_assert_int_eq(pgpipe_status(s_ctx.pipe), PGPIPE_STARTING);
    s_submit_one(&s_ctx, ST_ADD_ONE, "1");
    s_run_until(&s_ctx.answered, 1, "an answer");
    ck_assert_int_eq(s_ctx.statuses[0], -EAGAIN);
    ck_assert_msg(strstr(s_ctx.reasons[0], "PostgreSQL unavailable") != NULL, "reason: %s",
                  s_ctx.reasons[0]);
    ck_assert_int_ge(s_ctx.connect_failures, 1);
    ck_assert_int_eq(s_ctx.connects, 0);
    /* after it: refused at once, with the reason */
    ck_assert_int_eq(pgpipe_status(s_ctx.pipe), PGPIPE_UNAVAILABLE);
    ck_assert_str_ne(pgpipe_last_error(s_ctx.pipe), "");
    int stmts[] = {ST_ADD_ONE};
    pgpipe_group_t *g = pgpipe_group_new(stmts, 1, 0, s_on_reply, &s_ctx);
    pgpipe_param_i64(g, 1);
    ck_assert_int_eq(pgpipe_submit(s_ctx.pipe, &g), -1);
    ck_assert_ptr_null(g);
    /* and it keeps retrying on its own (backoff from 0.1 s) */
    s_run_until(&s_ctx.connect_failures, 3, "three attempts");
    ck_assert_int_eq(s_ctx.answered, 1);
    ck_assert_int_eq(pgpipe_pending(s_ctx.pipe), 0);
    s_close();
}
END_TEST

START_TEST(test_bad_conninfo_is_refused)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    pgpipe_config_t cfg = {.conninfo = "host='unterminated", .stmts = s_stmts, .nstmts = ST_COUNT};
    char err[256] = "";
    ck_assert_ptr_null(pgpipe_new(loop, &cfg, err, sizeof err));
    ck_assert_msg(strstr(err, "conninfo") != NULL, "reason: %s", err);
    cfg.conninfo = "";
    ck_assert_ptr_null(pgpipe_new(loop, &cfg, err, sizeof err));
    ck_assert_int_eq(pgpipe_conninfo_check("imagejobs", err, sizeof err), 0);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_destroy_answers_what_waits)
{
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d dbname=none", s_free_port());
    s_open(conninfo, s_stmts, ST_COUNT);
    for (int i = 0; i < 3; i++)
        s_submit_one(&s_ctx, ST_ADD_ONE, "1");
    ck_assert_int_eq(pgpipe_pending(s_ctx.pipe), 3);
    pgpipe_destroy(&s_ctx.pipe);
    ck_assert_ptr_null(s_ctx.pipe);
    ck_assert_int_eq(s_ctx.answered, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(s_ctx.statuses[i], -ECANCELED);
    s_close();
}
END_TEST

/* A flood of refused groups while the server is away. */
static void s_flood_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    ctx_t *c = w->data;
    for (int i = 0; i < 10; i++) {
        int stmts[] = {ST_ADD_ONE};
        pgpipe_group_t *g = pgpipe_group_new(stmts, 1, 0, s_on_reply, c);
        pgpipe_param_str(g, "1");
        ck_assert_int_eq(pgpipe_submit(c->pipe, &g), -1);
        c->refused++;
    }
}

START_TEST(test_refused_group_brings_the_retry_forward_rate_limited)
{
    log_set_level(LOG_ERROR);
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d dbname=none", s_free_port());
    s_backoff_s = 60.; /* the timer alone would try again a minute later */
    s_open(conninfo, s_stmts, ST_COUNT);
    s_run_until(&s_ctx.connect_failures, 1, "the first attempt");

    /* one refused group: the next attempt comes now, not in a minute */
    int stmts[] = {ST_ADD_ONE};
    pgpipe_group_t *g = pgpipe_group_new(stmts, 1, 0, s_on_reply, &s_ctx);
    pgpipe_param_i64(g, 1);
    ck_assert_int_eq(pgpipe_submit(s_ctx.pipe, &g), -1);
    ck_assert_int_eq(s_ctx.connect_failures, 1); /* from the loop, not inside the submit */
    ck_assert_msg(s_run_within(&s_ctx.connect_failures, 2, 10.),
                  "no attempt within 10 s of a refused group");

    /* 10 refused groups a millisecond for 2 s: a few attempts, no storm
     * (at most one per 0.2 s, about 10; one per refusal would be
     * thousands) */
    int before = s_ctx.connect_failures;
    ev_timer flood;
    ev_timer_init(&flood, s_flood_cb, 0.001, 0.001);
    flood.data = &s_ctx;
    ev_timer_start(s_ctx.loop, &flood);
    s_run_for(2.);
    ev_timer_stop(s_ctx.loop, &flood);
    int attempts = s_ctx.connect_failures - before;
    ck_assert_int_ge(s_ctx.refused, 500);
    ck_assert_msg(attempts >= 2 && attempts <= 12, "%d attempts for %d refused groups in 2 s",
                  attempts, s_ctx.refused);
    ck_assert_int_eq(s_ctx.answered, 0);
    ck_assert_int_eq(pgpipe_pending(s_ctx.pipe), 0);
    s_close();
}
END_TEST

/* ------------------------------------------------------- the test server */

static void s_open_ready(void)
{
    log_set_level(LOG_WARN);
    s_open(s_server, s_stmts, ST_COUNT);
    s_run_until(&s_ctx.connects, 1, "connected");
    ck_assert_int_eq(pgpipe_status(s_ctx.pipe), PGPIPE_READY);
    ck_assert_str_eq(pgpipe_last_error(s_ctx.pipe), "");
}

START_TEST(test_groups_are_answered_in_order)
{
    s_max_inflight = 16; /* most of them wait in the local queue */
    s_open_ready();
    enum { N = 1000 };
    for (int i = 0; i < N; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        s_submit_one(&s_ctx, ST_ADD_ONE, v);
    }
    ck_assert_int_le(pgpipe_pending(s_ctx.pipe), N);
    s_run_until(&s_ctx.answered, N, "every group answered");
    for (int i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", i + 1);
        ck_assert_int_eq(s_ctx.statuses[i], 0);
        ck_assert_str_eq(s_ctx.values[i], want);
    }
    ck_assert_int_eq(pgpipe_pending(s_ctx.pipe), 0);
    s_close();
}
END_TEST

START_TEST(test_groups_wait_for_the_first_connection)
{
    log_set_level(LOG_WARN);
    s_open(s_server, s_stmts, ST_COUNT);
    for (int i = 0; i < 5; i++)
        s_submit_one(&s_ctx, ST_ADD_ONE, "41");
    s_run_until(&s_ctx.answered, 5, "answers");
    for (int i = 0; i < 5; i++)
        ck_assert_str_eq(s_ctx.values[i], "42");
    ck_assert_int_eq(s_ctx.connects, 1);
    s_close();
}
END_TEST

START_TEST(test_failed_statement_aborts_only_its_group)
{
    s_open_ready();
    int stmts[] = {ST_ADD_ONE, ST_DIVIDE, ST_ADD_ONE};
    pgpipe_group_t *g = pgpipe_group_new(stmts, 3, 0, s_on_reply, &s_ctx);
    pgpipe_param_str(g, "0");
    ck_assert_int_eq(pgpipe_submit(s_ctx.pipe, &g), 0);
    s_submit_one(&s_ctx, ST_DIVIDE, "4");
    s_run_until(&s_ctx.answered, 2, "answers");
    ck_assert_int_eq(s_ctx.statuses[0], 0);
    ck_assert_str_eq(s_ctx.values[0], "error 22012"); /* division_by_zero */
    ck_assert_str_eq(s_ctx.values[1], "25");
    s_close();
}
END_TEST

static void s_on_bytes(pgpipe_t *p, const pgpipe_reply_t *r, void *arg)
{
    ctx_t *c = arg;
    ck_assert_int_eq(r->status, 0);
    ck_assert_ptr_null(r->error);
    const PGresult *res = r->results[0];
    ck_assert_int_eq(PQgetlength(res, 0, 0), 6);
    ck_assert_int_eq(memcmp(PQgetvalue(res, 0, 0), "a\0b\xff\0c", 6), 0);
    c->answered++;
}

START_TEST(test_binary_parameters_and_results)
{
    s_open_ready();
    int stmts[] = {ST_ECHO_BYTES};
    pgpipe_group_t *g = pgpipe_group_new(stmts, 1, 1, s_on_bytes, &s_ctx);
    char *bytes = malloc(6);
    memcpy(bytes, "a\0b\xff\0c", 6);
    pgpipe_param_bin_take(g, bytes, 6); /* the group frees it */
    ck_assert_int_eq(pgpipe_submit(s_ctx.pipe, &g), 0);
    s_run_until(&s_ctx.answered, 1, "the bytes");
    s_close();
}
END_TEST

START_TEST(test_callbacks_may_submit)
{
    s_open_ready();
    s_ctx.chain_left = 99;
    s_submit_one(&s_ctx, ST_ADD_ONE, "0");
    s_run_until(&s_ctx.answered, 100, "a chain of 100 groups");
    for (int i = 0; i < 100; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", i + 1);
        ck_assert_str_eq(s_ctx.values[i], want);
    }
    s_close();
}
END_TEST

START_TEST(test_destroy_inside_a_callback_is_deferred)
{
    s_open_ready();
    s_ctx.destroy_in_callback = true;
    for (int i = 0; i < 4; i++)
        s_submit_one(&s_ctx, ST_ADD_ONE, "1");
    s_run_until(&s_ctx.answered, 4, "answers");
    ck_assert_ptr_null(s_ctx.pipe);
    ck_assert_int_eq(s_ctx.statuses[0], 0);
    for (int i = 1; i < 4; i++)
        ck_assert_int_eq(s_ctx.statuses[i], -ECANCELED);
    s_close();
}
END_TEST

START_TEST(test_setup_failure_is_reported_with_the_hint)
{
    log_set_level(LOG_ERROR);
    static const pgpipe_stmt_t bad[] = {{"t_bad", "SELECT * FROM no_such_table", 0, NULL}};
    s_open(s_server, bad, 1);
    int stmts[] = {0};
    pgpipe_group_t *g = pgpipe_group_new(stmts, 1, 0, s_on_reply, &s_ctx);
    ck_assert_int_eq(pgpipe_submit(s_ctx.pipe, &g), 0);
    s_run_until(&s_ctx.connect_failures, 1, "a failed set-up");
    ck_assert_msg(strstr(s_ctx.why, "cannot set up the session (test hint)") != NULL
                      && strstr(s_ctx.why, "no_such_table") != NULL,
                  "reason: %s", s_ctx.why);
    ck_assert_int_eq(s_ctx.answered, 1);
    ck_assert_int_eq(s_ctx.statuses[0], -EAGAIN);
    ck_assert_int_eq(s_ctx.connects, 0);
    s_close();
}
END_TEST

START_TEST(test_refusing_server_is_unavailable)
{
    log_set_level(LOG_ERROR);
    /* the server answers, the database is not there */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(s_server, &perr);
    ck_assert_ptr_nonnull(opts);
    char conninfo[512] = "";
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && strcmp(o->keyword, "dbname") != 0)
            snprintf(conninfo + strlen(conninfo), sizeof conninfo - strlen(conninfo), "%s='%s' ",
                     o->keyword, o->val);
    strcat(conninfo, "dbname=ij_pgpipe_no_such_db");
    PQconninfoFree(opts);
    s_open(conninfo, s_stmts, ST_COUNT);
    s_run_until(&s_ctx.connect_failures, 1, "a refusal");
    ck_assert_msg(strstr(s_ctx.why, "does not exist") != NULL, "reason: %s", s_ctx.why);
    ck_assert_int_eq(pgpipe_status(s_ctx.pipe), PGPIPE_UNAVAILABLE);
    s_close();
}
END_TEST

START_TEST(test_killed_backend_is_replaced)
{
    s_open_ready();
    s_submit_one(&s_ctx, ST_BACKEND_PID, NULL);
    s_run_until(&s_ctx.answered, 1, "the backend pid");
    char first[64];
    snprintf(first, sizeof first, "%s", s_ctx.values[0]);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(pg_terminate_backend(%s))", first);
    char *v = s_sql(s_server, sql);
    ck_assert_ptr_nonnull(v);
    ck_assert_str_eq(v, "1");
    free(v);
    /* noticed while idle, then a new session on its own */
    s_run_until(&s_ctx.disconnects, 1, "the loss");
    s_run_until(&s_ctx.connects, 2, "a reconnect");
    s_submit_one(&s_ctx, ST_BACKEND_PID, NULL);
    s_run_until(&s_ctx.answered, 2, "the new backend pid");
    ck_assert_str_ne(s_ctx.values[1], first);
    s_close();
}
END_TEST

/* --------------------------------------------- a private server: restart */

static char s_pg_dir[64];
static int s_pg_port;

/* Runs a PostgreSQL program (argv[0]: its name in IMAGEJOBS_TEST_PGBIN) as
 * postgres when we are root (they refuse root), output to DIR/cmd.log.
 * Returns its exit status, -1 when it did not exit. */
static int s_pg_run(const char *const *argv)
{
    const char *bin = getenv("IMAGEJOBS_TEST_PGBIN");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", bin ? bin : "/usr/lib/postgresql/15/bin", argv[0]);
    const char *full[20] = {"runuser", "-u", "postgres", "--"};
    int n = geteuid() == 0 ? 4 : 0;
    full[n++] = path;
    for (int i = 1; argv[i] && n < 19; i++)
        full[n++] = argv[i];
    full[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        char log[128];
        snprintf(log, sizeof log, "%s/cmd.log", s_pg_dir);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        if (chdir(s_pg_dir) != 0)
            _exit(126);
        execvp(full[0], (char *const *)full);
        _exit(127);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int s_pg_ctl(const char *action, const char *mode)
{
    char data[128], log[128], opts[256];
    snprintf(data, sizeof data, "%s/data", s_pg_dir);
    snprintf(log, sizeof log, "%s/pg.log", s_pg_dir);
    snprintf(opts, sizeof opts, "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", s_pg_port,
             s_pg_dir);
    const char *start[] = {"pg_ctl", "-D", data, "-l", log,     "-w",
                           "-t",     "30", "-o", opts, "start", NULL};
    const char *stop[] = {"pg_ctl", "-D", data, "-m", mode, "-w", "-t", "30", "stop", NULL};
    return s_pg_run(strcmp(action, "start") == 0 ? start : stop);
}

/* In the runner, after the test case: stops what a failed test left
 * running and removes the directory (a failed assertion leaves the test's
 * process with _exit, without cleaning up). */
static void s_pg_teardown(void)
{
    snprintf(s_pg_dir, sizeof s_pg_dir, "/tmp/ij-pgpipe-%d", (int)s_runner_pid);
    char pidfile[128];
    snprintf(pidfile, sizeof pidfile, "%s/data/postmaster.pid", s_pg_dir);
    if (access(pidfile, F_OK) == 0)
        s_pg_ctl("stop", "immediate");
    fixture_remove_tree(s_pg_dir);
}

/* Makes and starts the private server (one per test case: its teardown
 * removes it); its conninfo into conninfo. */
static void s_pg_start_private(char *conninfo, size_t len)
{
    log_set_level(LOG_ERROR);
    snprintf(s_pg_dir, sizeof s_pg_dir, "/tmp/ij-pgpipe-%d", (int)s_runner_pid);
    ck_assert_int_eq(mkdir(s_pg_dir, 0755), 0);
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        ck_assert_msg(pw != NULL, "no postgres user to run PostgreSQL as");
        ck_assert_int_eq(chown(s_pg_dir, pw->pw_uid, pw->pw_gid), 0);
    }
    char data[128];
    snprintf(data, sizeof data, "%s/data", s_pg_dir);
    const char *initdb[] = {"initdb", "-D", data,   "-U",          "postgres", "-A",
                            "trust",  "-E", "UTF8", "--no-locale", NULL};
    ck_assert_msg(s_pg_run(initdb) == 0, "initdb failed (see %s/cmd.log)", s_pg_dir);
    s_pg_port = s_free_port();
    ck_assert_msg(s_pg_ctl("start", NULL) == 0, "no start (see %s/pg.log)", s_pg_dir);
    snprintf(conninfo, len, "host=127.0.0.1 port=%d dbname=postgres user=postgres", s_pg_port);
}

START_TEST(test_server_restart_is_survived)
{
    char conninfo[128];
    s_pg_start_private(conninfo, sizeof conninfo);

    s_open(conninfo, s_stmts, ST_COUNT);
    s_run_until(&s_ctx.connects, 1, "connected");
    s_submit_one(&s_ctx, ST_ADD_ONE, "1");
    s_run_until(&s_ctx.answered, 1, "an answer");
    ck_assert_str_eq(s_ctx.values[0], "2");

    /* down: the loss is noticed while idle, and new groups are refused */
    ck_assert_msg(s_pg_ctl("stop", "fast") == 0, "no stop (see %s/cmd.log)", s_pg_dir);
    s_run_until(&s_ctx.disconnects, 1, "the loss");
    s_run_until(&s_ctx.connect_failures, 1, "a failed reconnect");
    ck_assert_int_eq(pgpipe_status(s_ctx.pipe), PGPIPE_UNAVAILABLE);
    int stmts[] = {ST_ADD_ONE};
    pgpipe_group_t *g = pgpipe_group_new(stmts, 1, 0, s_on_reply, &s_ctx);
    pgpipe_param_i64(g, 1);
    ck_assert_int_eq(pgpipe_submit(s_ctx.pipe, &g), -1);

    /* back on the same port: reconnected on its own (backoff at most 1 s),
     * statements prepared again */
    ck_assert_msg(s_pg_ctl("start", NULL) == 0, "no restart (see %s/pg.log)", s_pg_dir);
    s_run_until(&s_ctx.connects, 2, "a reconnect");
    s_submit_one(&s_ctx, ST_ADD_ONE, "2");
    s_run_until(&s_ctx.answered, 2, "an answer after the restart");
    ck_assert_int_eq(s_ctx.statuses[1], 0);
    ck_assert_str_eq(s_ctx.values[1], "3");
    s_close();
    ck_assert_int_eq(s_pg_ctl("stop", "fast"), 0);
}
END_TEST

/* Down long enough for the backoff to reach its cap, then back, and
 * nothing asks for the server: the pipe finds it at its next retry, at
 * most 1 s away. (With a 5 s cap the attempt after the one the test waits
 * for was 5 s away; its reconnect came about 4 s after the restart.) The
 * 3 s bound leaves two seconds for a busy machine, and is still under what
 * the old cap gave. */
START_TEST(test_server_return_is_found_within_the_backoff_cap)
{
    char conninfo[128];
    s_pg_start_private(conninfo, sizeof conninfo);
    s_open(conninfo, s_stmts, ST_COUNT);
    s_run_until(&s_ctx.connects, 1, "connected");

    ck_assert_msg(s_pg_ctl("stop", "fast") == 0, "no stop (see %s/cmd.log)", s_pg_dir);
    s_run_until(&s_ctx.disconnects, 1, "the loss");
    /* an attempt fails 6 s or more into the outage: the delays have
     * doubled past any cap below 3.2 s by then */
    while (s_ctx.failed_at < s_ctx.lost_at + 6.)
        s_run_until(&s_ctx.connect_failures, s_ctx.connect_failures + 1, "a failed attempt");

    ck_assert_msg(s_pg_ctl("start", NULL) == 0, "no restart (see %s/pg.log)", s_pg_dir);
    double back = s_mono();
    s_run_until(&s_ctx.connects, 2, "a reconnect");
    ck_assert_msg(s_ctx.connected_at - back < 3.,
                  "reconnected %.2f s after PostgreSQL was back (%.2f s after the last failed "
                  "attempt)",
                  s_ctx.connected_at - back, s_ctx.connected_at - s_ctx.failed_at);
    s_submit_one(&s_ctx, ST_ADD_ONE, "2");
    s_run_until(&s_ctx.answered, 1, "an answer after the restart");
    ck_assert_int_eq(s_ctx.statuses[0], 0);
    ck_assert_str_eq(s_ctx.values[0], "3");
    s_close();
    ck_assert_int_eq(s_pg_ctl("stop", "fast"), 0);
}
END_TEST

/* Groups keep arriving while the server is away, with retries a minute
 * apart: a refused group brings the next attempt forward, so the first
 * group after the server's return that finds the pipe ready is answered
 * within the 3 s bound (two seconds for a busy machine: the tick is 50 ms, the
 * wake interval 0.2 s). Without that, nothing would connect for a minute. */
START_TEST(test_refused_group_finds_the_returned_server_at_once)
{
    char conninfo[128];
    s_pg_start_private(conninfo, sizeof conninfo);
    s_backoff_s = 60.;
    s_open(conninfo, s_stmts, ST_COUNT);
    s_run_until(&s_ctx.connects, 1, "connected");

    ck_assert_msg(s_pg_ctl("stop", "fast") == 0, "no stop (see %s/cmd.log)", s_pg_dir);
    s_run_until(&s_ctx.disconnects, 1, "the loss");
    ev_timer tick;
    ev_timer_init(&tick, s_tick_cb, 0.05, 0.05);
    tick.data = &s_ctx;
    ev_timer_start(s_ctx.loop, &tick);
    s_run_for(1.5);
    ck_assert_int_eq(s_ctx.accepted, 0);
    ck_assert_int_ge(s_ctx.refused, 5);
    /* the refusals woke it, a few times a second and no more */
    ck_assert_msg(s_ctx.connect_failures >= 1 && s_ctx.connect_failures <= 10,
                  "%d attempts in 1.5 s of refused groups", s_ctx.connect_failures);

    ck_assert_msg(s_pg_ctl("start", NULL) == 0, "no restart (see %s/pg.log)", s_pg_dir);
    double back = s_mono();
    ck_assert_msg(s_run_within(&s_ctx.answered, 1, 10.),
                  "no group answered within 10 s of PostgreSQL's return (%d refused)",
                  s_ctx.refused);
    ev_timer_stop(s_ctx.loop, &tick);
    ck_assert_int_eq(s_ctx.statuses[0], 0);
    ck_assert_str_eq(s_ctx.values[0], "42");
    ck_assert_msg(s_ctx.first_ok_at - back < 3., "first answer %.2f s after PostgreSQL was back",
                  s_ctx.first_ok_at - back);
    ck_assert_int_eq(s_ctx.connects, 2);
    s_close();
    ck_assert_int_eq(s_pg_ctl("stop", "fast"), 0);
}
END_TEST

/* ------------------------------------------------------------------ main */

static Suite *s_suite(void)
{
    Suite *s = suite_create("pgpipe");
    TCase *tc = tcase_create("no server");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_unreachable_server_answers_eagain_then_refuses);
    tcase_add_test(tc, test_bad_conninfo_is_refused);
    tcase_add_test(tc, test_destroy_answers_what_waits);
    tcase_add_test(tc, test_refused_group_brings_the_retry_forward_rate_limited);
    suite_add_tcase(s, tc);
    if (!s_server)
        return s;

    tc = tcase_create("postgresql");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_groups_are_answered_in_order);
    tcase_add_test(tc, test_groups_wait_for_the_first_connection);
    tcase_add_test(tc, test_failed_statement_aborts_only_its_group);
    tcase_add_test(tc, test_binary_parameters_and_results);
    tcase_add_test(tc, test_callbacks_may_submit);
    tcase_add_test(tc, test_destroy_inside_a_callback_is_deferred);
    tcase_add_test(tc, test_setup_failure_is_reported_with_the_hint);
    tcase_add_test(tc, test_refusing_server_is_unavailable);
    tcase_add_test(tc, test_killed_backend_is_replaced);
    suite_add_tcase(s, tc);

    tc = tcase_create("restart");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, NULL, s_pg_teardown);
    tcase_add_test(tc, test_server_restart_is_survived);
    suite_add_tcase(s, tc);

    /* one private server per case: its teardown removes it */
    tc = tcase_create("return after the backoff cap");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, NULL, s_pg_teardown);
    tcase_add_test(tc, test_server_return_is_found_within_the_backoff_cap);
    suite_add_tcase(s, tc);

    tc = tcase_create("return at the first request");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, NULL, s_pg_teardown);
    tcase_add_test(tc, test_refused_group_finds_the_returned_server_at_once);
    suite_add_tcase(s, tc);
    return s;
}

/* The tests that need PostgreSQL skip themselves without it. */
static int s_before(void)
{
    s_server = getenv("IMAGEJOBS_TEST_DATABASE");
    if (s_server && !*s_server)
        s_server = NULL;
    if (!s_server)
        printf("SKIP: no IMAGEJOBS_TEST_DATABASE (PostgreSQL tests skipped; "
               "run cmd/imagejobs-local test)\n");
    s_runner_pid = getpid();
    return 0;
}

const test_program_t test_program = {.suite = s_suite, .before = s_before};
