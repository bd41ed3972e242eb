/*
 * bench/queue.c - the queue operations of the API: a bulk cancel of many
 * jobs in one request, and paging through the job list.
 *
 * Cancel: a fresh database DBNAME_queue, two `imagejobs serve` instances
 * (--generators 2 each, CPU backend). Each round creates `jobs` jobs of one
 * combination (100 images, 64x64, 200 steps: a combination runs for
 * seconds) through the instances in turn, so that the four generators run
 * the oldest four and the rest wait; once all four run:
 *   single  (the floor, same load) one running job is cancelled with
 *           POST /api/jobs/{id}/cancel, and the next pending job is
 *           claimed in its place; `singles` times a round;
 *   bulk    one POST /api/jobs/cancel {"job_ids": [every job of the
 *           round]} on instance 1.
 * For both: the request's own latency (connect to the last byte of the
 * answer) and, from the servers' timestamps read back with SQL,
 * propagation = cancel_observed_at - cancel_requested_at of each
 * combination that was running (one sample per generator), stop =
 * stopped_at - cancel_requested_at. "All observed" is a round's largest
 * propagation: when the last generator had seen the bulk cancel.
 *
 * List: a fresh database again, one instance with --generators 0, `list`
 * pending jobs of one combination inserted in one SQL statement as the
 * server's job create inserts them (jobs and job_tasks; the insert
 * trigger stages the `created` events), then ANALYZE. One keep-alive
 * connection, closed loop, one request in flight: GET /api/jobs?limit=50
 * and ?status=pending&limit=200 following next_cursor to the end, with
 * GET /healthz before and after them (the floor of the HTTP path); each
 * request's latency is write -> the Content-Length bytes of its body read.
 *
 * It checks its own results, and any wrong answer fails the run (exit 1):
 * the bulk answer (matched = the jobs given, cancelled = those not already
 * cancelled by a single cancel, every job answered once in the order
 * given, success true, or false with "Job already cancelled" for the
 * singles), every job ends user_cancelled with consistent counts and
 * ordered timestamps, one propagation sample per generator; every walk
 * sees each job exactly once, newest first, count = len(jobs), and (all
 * jobs pending, one priority) queue_position = the number of older jobs;
 * every server exits 0 on SIGTERM. No timing is asserted.
 *
 *   cmd/imagejobs-local bench queue [--quick] [options]
 */
#include "config.h"

#include "bench/util.h"

#include "tests/api_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define INSTANCES 2
#define GENERATORS 2
#define RUNNING (INSTANCES * GENERATORS)

static struct {
    int rounds, jobs, singles, list_jobs, healthz;
    const char *logs, *redis, *database;
} s_opt = {.rounds = 5, .jobs = 1000, .singles = 4, .list_jobs = 10000, .healthz = 20000};

static int s_failures;

static void s_usage(FILE *f)
{
    fprintf(f, "usage: bench/queue [options]\n"
               "       (run it as: cmd/imagejobs-local bench queue [options])\n"
               "\n"
               "  --quick            a small run (2 rounds of 300 jobs, 2,000 listed)\n"
               "  --rounds N         bulk cancel rounds (default 5)\n"
               "  --jobs N           jobs per round, all in one bulk cancel (default 1000)\n"
               "  --singles N        single cancels per round, the floor (default 4)\n"
               "  --list N           jobs in the database for the list walks (default 10000)\n"
               "  --healthz N        GET /healthz requests, the HTTP floor (default 20000)\n"
               "  --logs DIR         the servers' logs (default: bench/queue-logs in the\n"
               "                     build tree)\n"
               "  --redis URL        default $IMAGEJOBS_BENCH_REDIS\n"
               "  --database CONNINFO default $IMAGEJOBS_BENCH_DATABASE; the servers use\n"
               "                     DBNAME_queue in the same server, dropped and created\n"
               "                     afresh for each part\n"
               "The imagejobs binary comes from $IMAGEJOBS_BIN.\n");
}

static int s_parse_int(const char *what, const char *v, int lo, int hi)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || end == v || n < lo || n > hi) {
        fprintf(stderr, "queue: %s must be an integer from %d to %d\n", what, lo, hi);
        exit(2);
    }
    return (int)n;
}

static void s_parse_args(int argc, char **argv)
{
    enum { O_ROUNDS = 256, O_JOBS, O_SINGLES, O_LIST, O_HEALTHZ, O_LOGS, O_REDIS, O_DB };
    static const struct option longs[] = {
        {"quick", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"rounds", required_argument, NULL, O_ROUNDS},
        {"jobs", required_argument, NULL, O_JOBS},
        {"singles", required_argument, NULL, O_SINGLES},
        {"list", required_argument, NULL, O_LIST},
        {"healthz", required_argument, NULL, O_HEALTHZ},
        {"logs", required_argument, NULL, O_LOGS},
        {"redis", required_argument, NULL, O_REDIS},
        {"database", required_argument, NULL, O_DB},
        {NULL, 0, NULL, 0},
    };
    /* --quick first, so that explicit options given with it win */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0) {
            s_opt.rounds = 2;
            s_opt.jobs = 300;
            s_opt.singles = 1;
            s_opt.list_jobs = 2000;
            s_opt.healthz = 5000;
        }
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'q':
            break;
        case 'h':
            s_usage(stdout);
            exit(0);
        case O_ROUNDS:
            s_opt.rounds = s_parse_int("--rounds", optarg, 1, 1000);
            break;
        case O_JOBS: /* the bulk cancel takes at most 10,000 ids */
            s_opt.jobs = s_parse_int("--jobs", optarg, RUNNING + 1, 10000);
            break;
        case O_SINGLES:
            s_opt.singles = s_parse_int("--singles", optarg, 0, 100);
            break;
        case O_LIST:
            s_opt.list_jobs = s_parse_int("--list", optarg, 1, 10000000);
            break;
        case O_HEALTHZ:
            s_opt.healthz = s_parse_int("--healthz", optarg, 1, 100000000);
            break;
        case O_LOGS:
            s_opt.logs = optarg;
            break;
        case O_REDIS:
            s_opt.redis = optarg;
            break;
        case O_DB:
            s_opt.database = optarg;
            break;
        default:
            s_usage(stderr);
            exit(2);
        }
    }
    if (optind < argc) {
        s_usage(stderr);
        exit(2);
    }
    if (s_opt.singles >= s_opt.jobs - RUNNING) {
        fprintf(stderr, "queue: --singles must leave pending jobs to claim\n");
        exit(2);
    }
    bench_services("queue", &s_opt.redis, &s_opt.database, &s_opt.logs);
}

/* ================================================================ helpers */

static void s_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "queue: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(3);
}

static void s_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    s_failures++;
}

/* One statement with text parameters; the result (caller clears), or dies. */
static PGresult *s_sql(PGconn *db, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(db, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        s_die("%s: %s", sql, PQerrorMessage(db));
    return r;
}

static long s_sql_long(PGconn *db, const char *sql, int n, const char *const *params)
{
    PGresult *r = s_sql(db, sql, n, params);
    long v = PQntuples(r) ? atol(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

/* Polls `sql` (one integer, $1 = param or none) until it returns want. */
static int s_wait(PGconn *db, const char *sql, const char *param, long want, double timeout_s,
                  const char *what)
{
    double deadline = bench_mono() + timeout_s;
    const char *p[1] = {param};
    for (;;) {
        long v = s_sql_long(db, sql, param ? 1 : 0, p);
        if (v == want)
            return 0;
        if (bench_mono() > deadline) {
            s_fail("%s: %ld, not %ld within %.0f s", what, v, want, timeout_s);
            return -1;
        }
        bench_sleep(0.002);
    }
}

static void s_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* ================================================================ servers */

typedef struct {
    char name[32];
    int port;
    pid_t pid;
    char log[PATH_MAX];
} server_t;

static server_t s_srv[INSTANCES];
static volatile sig_atomic_t s_pids[INSTANCES];

static void s_on_signal(int sig)
{
    for (int i = 0; i < INSTANCES; i++)
        if (s_pids[i] > 0)
            kill((pid_t)s_pids[i], SIGTERM);
    _exit(128 + sig);
}

static void s_stop_servers_at_exit(void)
{
    for (int i = 0; i < INSTANCES; i++)
        if (s_pids[i] > 0)
            api_stop((pid_t)s_pids[i], 10);
}

/* Drops and creates DBNAME_queue next to the main database; its conninfo
 * (the main one with dbname replaced) into out. */
static void s_fresh_db(PGconn *admin, char *out, size_t len)
{
    char name[256], sql[600];
    snprintf(name, sizeof name, "%s_queue", PQdb(admin));
    char *ident = PQescapeIdentifier(admin, name, strlen(name));
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", ident);
    PQclear(s_sql(admin, sql, 0, NULL));
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", ident);
    PQclear(s_sql(admin, sql, 0, NULL));
    PQfreemem(ident);
    if (strstr(s_opt.database, "://"))
        s_die("--database must be a key=value conninfo, not a URI");
    /* a conninfo string: a later dbname keyword wins over an earlier one */
    if ((size_t)snprintf(out, len, "%s dbname='%s'", s_opt.database, name) >= len)
        s_die("database conninfo too long");
}

static void s_start(int i, const char *database, int generators)
{
    server_t *s = &s_srv[i];
    char gens[16];
    snprintf(gens, sizeof gens, "%d", generators);
    snprintf(s->name, sizeof s->name, "queue-%d", i + 1);
    if (snprintf(s->log, sizeof s->log, "%s/queue-%d.log", s_opt.logs, i + 1) >= (int)sizeof s->log)
        s_die("--logs path too long");
    s->port = api_free_port();
    const char *args[] = {"--redis",      s_opt.redis, "--database", database,
                          "--generators", gens,        "--instance", s->name,
                          "--backend",    "cpu",       NULL};
    s->pid = api_serve(s->port, args, s->log, 60);
    if (s->pid < 0)
        s_die("%s did not become ready; see %s", s->name, s->log);
    s_pids[i] = s->pid;
}

static void s_stop(int n)
{
    for (int i = n; i-- > 0;) {
        int st = api_stop(s_srv[i].pid, 20);
        s_pids[i] = 0;
        if (st != 0)
            s_fail("%s exited with %d on SIGTERM (see %s)", s_srv[i].name, st, s_srv[i].log);
    }
}

/* ================================================================ cancel */

/* POST /api/jobs on instance i, one combination that runs for seconds:
 * 0 and the id, or -1 (reported). */
static int s_create(int i, int round, int seq, char *id, size_t idlen)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"prompt\":\"queue r%d %d\",\"combinations\":[{\"seed\":%d}],"
             "\"images_per_combination\":100,\"width\":64,\"height\":64,\"steps\":200}",
             round, seq, round * 100000 + seq + 1);
    api_response_t r;
    int rc = api_request(s_srv[i].port, "POST", "/api/jobs", "Content-Type: application/json\r\n",
                         body, strlen(body), &r);
    const char *jid = json_string_value(json_object_get(r.json, "job_id"));
    int ok = rc == 0 && r.status == 201 && jid && strlen(jid) < idlen;
    if (ok)
        snprintf(id, idlen, "%s", jid);
    else
        s_fail("create on %s: HTTP %d %s", s_srv[i].name, r.status, r.body ? r.body : "");
    api_response_free(&r);
    return ok ? 0 : -1;
}

static const char *const SQL_RUNNING = "SELECT count(*) FROM job_tasks WHERE status = 'processing'";
static const char *const SQL_OPEN_JOBS =
    "SELECT count(*) FROM jobs WHERE status IN ('pending', 'processing')";
static const char *const SQL_JOB_ENDED = "SELECT count(*) FROM jobs WHERE id = $1 "
                                         "AND status IN ('completed', 'user_cancelled', 'failed')";

/* propagation and stop (ms) of the combinations of the jobs $1 (uuid[]
 * literal), less those of $2, that were running when the cancel arrived.
 * (The cancel of many reaches the generators before its transaction runs:
 * one whose job it stopped may claim another job of the batch meanwhile,
 * and hears of that one's cancel later, from the redis actor's repeat of
 * each recorded cancel. That late start is not a generator that was
 * running, and not a sample.) */
static const char *const SQL_SAMPLES =
    "SELECT extract(epoch FROM t.cancel_observed_at - j.cancel_requested_at) * 1000,"
    "       extract(epoch FROM t.stopped_at - j.cancel_requested_at) * 1000 "
    "FROM job_tasks t JOIN jobs j ON j.id = t.job_id "
    "WHERE j.id = ANY ($1::uuid[]) AND NOT (j.id = ANY ($2::uuid[]))"
    "  AND t.cancel_observed_at IS NOT NULL AND t.started_at < j.cancel_requested_at";

typedef struct {
    bench_series_t latency, propagation, stop; /* ms */
    bench_series_t all_observed;               /* bulk: a round's largest propagation */
    bench_series_t by_round;                   /* bulk: latency per round, in order */
} cancel_rows_t;

/* Adds the samples of SQL_SAMPLES to row; returns how many, and the
 * largest propagation in *max. */
static size_t s_samples(PGconn *db, const char *ids, const char *except, cancel_rows_t *row,
                        double *max)
{
    const char *p[2] = {ids, except};
    PGresult *r = s_sql(db, SQL_SAMPLES, 2, p);
    *max = NAN;
    for (int i = 0; i < PQntuples(r); i++) {
        double prop = atof(PQgetvalue(r, i, 0));
        bench_push(&row->propagation, prop);
        bench_push(&row->stop, atof(PQgetvalue(r, i, 1)));
        if (i == 0 || prop > *max)
            *max = prop;
    }
    size_t n = (size_t)PQntuples(r);
    PQclear(r);
    return n;
}

/* A uuid[] literal of n ids of 36 characters. */
static char *s_uuid_array(char (*ids)[64], int n)
{
    char *a = malloc((size_t)n * 38 + 3), *p = a;
    if (!a)
        abort();
    *p++ = '{';
    for (int i = 0; i < n; i++)
        p += sprintf(p, "%s%s", i ? "," : "", ids[i]);
    *p++ = '}';
    *p = 0;
    return a;
}

/* One single cancel of a running job, under the same load as the bulk:
 * its latency and samples go in row; the id into id. */
static void s_single(PGconn *db, cancel_rows_t *row, char *id, size_t idlen)
{
    PGresult *r = s_sql(db,
                        "SELECT job_id FROM job_tasks WHERE status = 'processing' "
                        "ORDER BY random() LIMIT 1",
                        0, NULL);
    if (PQntuples(r) != 1)
        s_die("no running combination to cancel");
    snprintf(id, idlen, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    api_response_t a;
    double t0 = bench_mono();
    int rc = api_request(s_srv[0].port, "POST", path, NULL, NULL, 0, &a);
    double ms = (bench_mono() - t0) * 1000;
    const char *cur = json_string_value(json_object_get(a.json, "current_status"));
    if (rc < 0 || a.status != 200 || !json_is_true(json_object_get(a.json, "success")) || !cur
        || strcmp(cur, "processing") != 0)
        s_fail("single cancel of running %s: HTTP %d %s", id, a.status, a.body ? a.body : "");
    else
        bench_push(&row->latency, ms);
    api_response_free(&a);
    if (s_wait(db, SQL_JOB_ENDED, id, 1, 30, "single-cancelled job ended") < 0)
        return;
    char one[80], none[] = "{}";
    snprintf(one, sizeof one, "{%s}", id);
    double m;
    size_t n = s_samples(db, one, none, row, &m);
    if (n != 1)
        s_fail("single cancel of %s: %zu combinations observed it, not 1", id, n);
}

/* Checks the bulk answer against the ids sent; singles[] were cancelled
 * before. */
static void s_check_bulk(const api_response_t *a, char (*ids)[64], int n, char (*singles)[64],
                         int nsingles)
{
    json_t *jobs = json_object_get(a->json, "jobs");
    json_int_t matched = json_integer_value(json_object_get(a->json, "matched"));
    json_int_t cancelled = json_integer_value(json_object_get(a->json, "cancelled"));
    if (a->status != 200 || !json_is_array(jobs)) {
        s_fail("bulk cancel: HTTP %d %.300s", a->status, a->body ? a->body : "");
        return;
    }
    if (matched != n || cancelled != n - nsingles || (int)json_array_size(jobs) != n
        || !json_is_false(json_object_get(a->json, "dry_run")))
        s_fail("bulk cancel of %d (%d cancelled before): matched %lld, cancelled %lld, %zu "
               "answers, dry_run %s",
               n, nsingles, (long long)matched, (long long)cancelled, json_array_size(jobs),
               json_is_false(json_object_get(a->json, "dry_run")) ? "false" : "not false");
    int bad = 0;
    for (size_t i = 0; i < json_array_size(jobs) && i < (size_t)n; i++) {
        json_t *j = json_array_get(jobs, i);
        const char *jid = json_string_value(json_object_get(j, "job_id"));
        const char *msg = json_string_value(json_object_get(j, "message"));
        bool single = false;
        for (int k = 0; k < nsingles; k++)
            single = single || (jid && strcmp(jid, singles[k]) == 0);
        bool ok = jid && strcmp(jid, ids[i]) == 0
                  && (single ? json_is_false(json_object_get(j, "success")) && msg
                                   && strcmp(msg, "Job already cancelled") == 0
                             : json_is_true(json_object_get(j, "success")));
        if (!ok && bad++ < 3) {
            char *s = json_dumps(j, JSON_COMPACT);
            s_fail("bulk answer %zu (sent %s): %s", i, ids[i], s ? s : "?");
            free(s);
        }
    }
    if (bad > 3)
        s_fail("bulk cancel: %d wrong answers in all", bad);
}

/* Every job ended user_cancelled, consistent counts, ordered timestamps;
 * expect jobs in the database. */
static void s_check_cancelled(PGconn *db, long expect)
{
    PGresult *r =
        s_sql(db,
              "WITH t AS (SELECT job_id, sum(completed_images) AS n,"
              "  bool_and(status = 'cancelled') AS all_cancelled FROM job_tasks GROUP BY job_id),"
              " a AS (SELECT job_id, count(*) AS n FROM attachments GROUP BY job_id)"
              "SELECT j.id, j.status, j.completed_images, cardinality(j.generated_attach_ids),"
              "  t.n, COALESCE(a.n, 0) "
              "FROM jobs j LEFT JOIN t ON t.job_id = j.id LEFT JOIN a ON a.job_id = j.id "
              "WHERE NOT (j.status = 'user_cancelled' AND t.all_cancelled"
              "  AND j.cancel_requested_at IS NOT NULL AND j.finished_at IS NOT NULL"
              "  AND j.completed_images = cardinality(j.generated_attach_ids)"
              "  AND j.completed_images = COALESCE(t.n, -1)"
              "  AND j.completed_images = COALESCE(a.n, 0))",
              0, NULL);
    for (int i = 0; i < PQntuples(r) && i < 5; i++)
        s_fail("job %s ended %s: completed_images %s, %s attach ids, %s over its combination, "
               "%s attachments",
               PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
               PQgetvalue(r, i, 4), PQgetvalue(r, i, 5));
    if (PQntuples(r) > 5)
        s_fail("%d jobs in all did not end user_cancelled consistently", PQntuples(r));
    PQclear(r);
    long n = s_sql_long(db, "SELECT count(*) FROM jobs", 0, NULL);
    if (n != expect)
        s_fail("%ld jobs in the database, %ld created", n, expect);
    long bad = s_sql_long(
        db,
        "SELECT count(*) FROM job_tasks t JOIN jobs j ON j.id = t.job_id "
        "WHERE t.started_at IS NOT NULL AND NOT (t.cancel_observed_at >= j.cancel_requested_at"
        "  AND t.stopped_at >= t.cancel_observed_at AND j.finished_at >= t.stopped_at)",
        0, NULL);
    if (bad)
        s_fail("%ld started combinations without ordered requested <= observed <= stopped <= "
               "finished timestamps",
               bad);
}

static void s_run_cancel(PGconn *admin, cancel_rows_t *bulk, cancel_rows_t *single)
{
    char database[2048];
    s_fresh_db(admin, database, sizeof database);
    for (int i = 0; i < INSTANCES; i++)
        s_start(i, database, GENERATORS);
    PGconn *db = PQconnectdb(database);
    if (PQstatus(db) != CONNECTION_OK)
        s_die("PostgreSQL: %s", PQerrorMessage(db));
    char(*ids)[64] = calloc((size_t)s_opt.jobs, sizeof *ids);
    char(*singles)[64] = calloc((size_t)s_opt.singles + 1, sizeof *singles);
    if (!ids || !singles)
        abort();
    long created = 0;
    size_t body_cap = (size_t)s_opt.jobs * 40 + 64;
    char *body = malloc(body_cap);
    if (!body)
        abort();

    for (int round = 0; round < s_opt.rounds; round++) {
        fprintf(stderr, "queue: cancel round %d of %d...\n", round + 1, s_opt.rounds);
        for (int j = 0; j < s_opt.jobs; j++) {
            if (s_create(j % INSTANCES, round, j, ids[j], sizeof ids[j]) < 0)
                goto out;
            created++;
        }
        if (s_wait(db, SQL_RUNNING, NULL, RUNNING, 30, "running combinations") < 0)
            goto out;

        /* the floor: one job at a time, every generator busy each time */
        for (int k = 0; k < s_opt.singles; k++) {
            s_single(db, single, singles[k], sizeof singles[k]);
            if (s_wait(db, SQL_RUNNING, NULL, RUNNING, 30, "running combinations") < 0)
                goto out;
        }

        size_t n = (size_t)snprintf(body, body_cap, "{\"job_ids\":[");
        for (int j = 0; j < s_opt.jobs; j++)
            n += (size_t)snprintf(body + n, body_cap - n, "%s\"%s\"", j ? "," : "", ids[j]);
        n += (size_t)snprintf(body + n, body_cap - n, "]}");
        api_response_t a;
        double t0 = bench_mono();
        int rc = api_request(s_srv[0].port, "POST", "/api/jobs/cancel",
                             "Content-Type: application/json\r\n", body, n, &a);
        double ms = (bench_mono() - t0) * 1000;
        if (rc < 0)
            s_fail("bulk cancel: no answer");
        else
            bench_push(&bulk->latency, ms);
        bench_push(&bulk->by_round, ms);
        s_check_bulk(&a, ids, s_opt.jobs, singles, s_opt.singles);
        api_response_free(&a);
        if (s_wait(db, SQL_OPEN_JOBS, NULL, 0, 60, "open jobs after the bulk cancel") < 0)
            goto out;

        char *all = s_uuid_array(ids, s_opt.jobs), *except = s_uuid_array(singles, s_opt.singles);
        double max;
        size_t got = s_samples(db, all, except, bulk, &max);
        free(all);
        free(except);
        if (got != RUNNING)
            s_fail("round %d: %zu generators observed the bulk cancel, %d were running", round + 1,
                   got, RUNNING);
        if (got)
            bench_push(&bulk->all_observed, max);
    }
    s_check_cancelled(db, created);
out:
    free(body);
    free(ids);
    free(singles);
    PQfinish(db);
    s_stop(INSTANCES);
    bench_sort(&bulk->latency);
    bench_sort(&bulk->propagation);
    bench_sort(&bulk->stop);
    bench_sort(&bulk->all_observed);
    bench_sort(&single->latency);
    bench_sort(&single->propagation);
    bench_sort(&single->stop);
}

/* ================================================================ list */

/* A keep-alive HTTP/1.1 connection, one request in flight. */
typedef struct {
    int fd;
    char *buf;
    size_t cap, len;
} kconn_t;

static int s_kconn_open(kconn_t *c, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -1;
    struct timeval tv = {60, 0};
    int one = 1;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0)
        return -1;
    c->cap = 1 << 20;
    c->buf = malloc(c->cap + 1);
    return c->buf ? 0 : -1;
}

static void s_kconn_close(kconn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    c->fd = -1;
    c->buf = NULL;
}

/* GET path; the status, and the body (in c->buf, NUL-terminated, valid
 * until the next request). -1 on a socket error or a response this client
 * does not read (no Content-Length). */
static int s_kget(kconn_t *c, const char *path, int *status, const char **body, size_t *blen)
{
    char req[2048];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (n < 0 || (size_t)n >= sizeof req)
        return -1;
    for (int off = 0; off < n;) {
        ssize_t w = write(c->fd, req + off, (size_t)(n - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        off += (int)w;
    }
    c->len = 0;
    size_t head = 0, want = 0;
    for (;;) {
        if (c->len == c->cap) {
            c->cap *= 2;
            char *b = realloc(c->buf, c->cap + 1);
            if (!b)
                abort();
            c->buf = b;
        }
        ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c->len += (size_t)r;
        c->buf[c->len] = 0;
        if (!head) {
            char *e = strstr(c->buf, "\r\n\r\n");
            if (!e)
                continue;
            head = (size_t)(e - c->buf) + 4;
            if (sscanf(c->buf, "HTTP/1.1 %d", status) != 1)
                return -1;
            const char *cl = NULL;
            for (const char *p = c->buf; p < e; p = strstr(p, "\r\n") + 2)
                if (strncasecmp(p, "content-length:", 15) == 0) {
                    cl = p + 15;
                    break;
                }
            if (!cl)
                return -1;
            want = head + strtoul(cl, NULL, 10);
        }
        if (c->len >= want)
            break;
    }
    if (c->len != want) /* one request in flight: nothing may follow */
        return -1;
    *body = c->buf + head;
    *blen = want - head;
    return 0;
}

typedef struct {
    const char *name;
    int pages;
    long jobs;
    double seconds;
    bench_series_t page_ms;
} walk_t;

/* Percent-encodes s into out for a query string. */
static void s_urlencode(const char *s, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < len; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
            || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = 0;
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Follows next_cursor from the first page of `query` to the end, checking
 * every page; expect jobs, all pending, all of one priority. */
static void s_walk(kconn_t *c, const char *query, long expect, walk_t *w)
{
    char path[1024], cursor[512] = "", prev_created[64] = "";
    char **seen = calloc((size_t)expect + 1, sizeof *seen);
    if (!seen)
        abort();
    long n = 0;
    int bad = 0;
    double t0 = bench_mono();
    for (;;) {
        char enc[1024];
        s_urlencode(cursor, enc, sizeof enc);
        snprintf(path, sizeof path, "/api/jobs?%s%s%s", query, *cursor ? "&cursor=" : "", enc);
        int status = 0;
        const char *body;
        size_t blen;
        double p0 = bench_mono();
        if (s_kget(c, path, &status, &body, &blen) < 0)
            s_die("%s: no answer (or one this client cannot read)", path);
        bench_push(&w->page_ms, (bench_mono() - p0) * 1000);
        w->pages++;
        json_error_t err;
        json_t *page = json_loadb(body, blen, 0, &err);
        json_t *jobs = json_object_get(page, "jobs");
        if (status != 200 || !json_is_array(jobs)) {
            s_fail("%s: HTTP %d %.200s", path, status, body);
            json_decref(page);
            break;
        }
        if (json_integer_value(json_object_get(page, "count")) != (json_int_t)json_array_size(jobs))
            s_fail("%s: count %lld, %zu jobs", path,
                   (long long)json_integer_value(json_object_get(page, "count")),
                   json_array_size(jobs));
        for (size_t i = 0; i < json_array_size(jobs); i++, n++) {
            json_t *j = json_array_get(jobs, i);
            const char *id = json_string_value(json_object_get(j, "job_id"));
            const char *st = json_string_value(json_object_get(j, "job_status"));
            const char *created = json_string_value(json_object_get(j, "created_at"));
            json_t *qp = json_object_get(j, "queue_position");
            /* newest first, so the k-th job has expect - 1 - k older ones */
            bool ok = id && st && strcmp(st, "pending") == 0 && created
                      && strlen(created) < sizeof prev_created
                      && (!*prev_created || strcmp(created, prev_created) <= 0)
                      && json_is_integer(qp) && json_integer_value(qp) == expect - 1 - n
                      && n < expect;
            if (!ok && bad++ < 3) {
                char *s = json_dumps(j, JSON_COMPACT);
                s_fail("%s: job %ld of the walk: %s", query, n, s ? s : "?");
                free(s);
            }
            if (created && strlen(created) < sizeof prev_created)
                snprintf(prev_created, sizeof prev_created, "%s", created);
            if (n < expect && id)
                seen[n] = strdup(id);
        }
        const char *next = json_string_value(json_object_get(page, "next_cursor"));
        if (!next) {
            bool is_null = json_is_null(json_object_get(page, "next_cursor"));
            json_decref(page);
            if (!is_null)
                s_fail("%s: next_cursor neither a string nor null", path);
            break;
        }
        if (strlen(next) >= sizeof cursor) {
            s_fail("%s: next_cursor of %zu bytes", path, strlen(next));
            json_decref(page);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", next);
        json_decref(page);
        if (n > expect) {
            s_fail("%s: more than %ld jobs", query, expect);
            break;
        }
    }
    w->seconds = bench_mono() - t0;
    w->jobs = n;
    if (bad > 3)
        s_fail("%s: %d wrong jobs in all", query, bad);
    if (n != expect)
        s_fail("%s: %ld jobs over %d pages, %ld in the database", query, n, w->pages, expect);
    long m = n < expect ? n : expect;
    for (long i = 0; i < m; i++)
        if (!seen[i])
            seen[i] = strdup("");
    qsort(seen, (size_t)m, sizeof *seen, s_cmp_str);
    for (long i = 1; i < m; i++)
        if (strcmp(seen[i], seen[i - 1]) == 0) {
            s_fail("%s: job %s on more than one page", query, seen[i]);
            break;
        }
    for (long i = 0; i < m; i++)
        free(seen[i]);
    free(seen);
    bench_sort(&w->page_ms);
}

typedef struct {
    double rps;
    bench_series_t us;
} healthz_t;

typedef struct {
    healthz_t healthz[2]; /* before and after the walks */
    walk_t walks[2];
    double insert_s;
} list_rows_t;

/* GET /healthz on c, one at a time, after a warm-up of 1,000. */
static void s_healthz(kconn_t *c, healthz_t *h)
{
    int status = 0;
    const char *body;
    size_t blen;
    for (int i = 0; i < 1000; i++)
        if (s_kget(c, "/healthz", &status, &body, &blen) < 0 || status != 200)
            s_die("GET /healthz: HTTP %d", status);
    double t0 = bench_mono();
    for (int i = 0; i < s_opt.healthz; i++) {
        double r0 = bench_mono();
        if (s_kget(c, "/healthz", &status, &body, &blen) < 0 || status != 200) {
            s_fail("GET /healthz: HTTP %d", status);
            break;
        }
        bench_push(&h->us, (bench_mono() - r0) * 1e6);
    }
    h->rps = (double)h->us.n / (bench_mono() - t0);
    bench_sort(&h->us);
}

static void s_run_list(PGconn *admin, list_rows_t *out)
{
    char database[2048];
    s_fresh_db(admin, database, sizeof database);
    s_start(0, database, 0); /* migrates the schema */
    PGconn *db = PQconnectdb(database);
    if (PQstatus(db) != CONNECTION_OK)
        s_die("PostgreSQL: %s", PQerrorMessage(db));
    PQsetNoticeProcessor(db, s_quiet, NULL);

    /* what job_create (actors/store/queries.def) inserts for one pending
     * job of one combination, 64x64, 30 steps, 4 images */
    char count[32];
    snprintf(count, sizeof count, "%d", s_opt.list_jobs);
    const char *p[1] = {count};
    double t0 = bench_mono();
    PQclear(s_sql(db,
                  "WITH j AS ("
                  "  INSERT INTO jobs (id, prompt, params, total_images, priority)"
                  "  SELECT gen_random_uuid(), 'queue list ' || g,"
                  "    jsonb_build_object('width', 64, 'height', 64, 'steps', 30,"
                  "      'images_per_combination', 4, 'combinations', 1), 4, 0"
                  "  FROM generate_series(1, $1::int) g"
                  "  RETURNING id, created_at, priority)"
                  "INSERT INTO job_tasks (job_id, combination, seed, style, created_at, priority)"
                  "SELECT id, 0, 1, '', created_at, priority FROM j",
                  1, p));
    PQclear(s_sql(db, "ANALYZE", 0, NULL));
    out->insert_s = bench_mono() - t0;
    long pending = s_sql_long(db, "SELECT count(*) FROM jobs WHERE status = 'pending'", 0, NULL);
    if (pending != s_opt.list_jobs)
        s_die("%ld pending jobs inserted, not %d", pending, s_opt.list_jobs);

    kconn_t c;
    if (s_kconn_open(&c, s_srv[0].port) < 0)
        s_die("cannot connect to %s", s_srv[0].name);
    s_healthz(&c, &out->healthz[0]);
    out->walks[0].name = "limit=50";
    s_walk(&c, "limit=50", s_opt.list_jobs, &out->walks[0]);
    out->walks[1].name = "status=pending&limit=200";
    s_walk(&c, "status=pending&limit=200", s_opt.list_jobs, &out->walks[1]);
    s_healthz(&c, &out->healthz[1]);
    s_kconn_close(&c);
    PQfinish(db);
    s_stop(1);
}

/* ================================================================ main */

static const char *s_loadavg(char *buf, size_t len)
{
    double l[1];
    if (getloadavg(l, 1) == 1)
        snprintf(buf, len, "%.2f", l[0]);
    else
        snprintf(buf, len, "?");
    return buf;
}

static void s_cancel_line(const char *what, const cancel_rows_t *r, const char *note)
{
    printf("| %s | %zu | %.2f | %.2f | %.2f | %zu | %.2f | %.2f | %.2f | %.2f | %.2f |%s\n", what,
           r->latency.n, bench_pct(&r->latency, 0.5), bench_pct(&r->latency, 0.99),
           bench_max(&r->latency), r->propagation.n, bench_pct(&r->propagation, 0.5),
           bench_pct(&r->propagation, 0.99), bench_max(&r->propagation), bench_pct(&r->stop, 0.5),
           bench_pct(&r->stop, 0.99), note);
}

int main(int argc, char **argv)
{
    s_parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    atexit(s_stop_servers_at_exit);
    if (mkdir(s_opt.logs, 0755) < 0 && errno != EEXIST)
        s_die("cannot create %s: %s", s_opt.logs, strerror(errno));
    PGconn *admin = PQconnectdb(s_opt.database);
    if (PQstatus(admin) != CONNECTION_OK)
        s_die("PostgreSQL: %s", PQerrorMessage(admin));
    PQsetNoticeProcessor(admin, s_quiet, NULL);

    char load0[32], load1[32];
    s_loadavg(load0, sizeof load0);
    double t0 = bench_mono();
    cancel_rows_t bulk = {0}, single = {0};
    list_rows_t list = {0};
    s_run_cancel(admin, &bulk, &single);
    fprintf(stderr, "queue: list...\n");
    s_run_list(admin, &list);
    PQfinish(admin);

    printf("bench/queue: %.0f s, load average %s -> %s\n\n", bench_mono() - t0, load0,
           s_loadavg(load1, sizeof load1));
    printf("cancel: %d instances x %d CPU generators; %d rounds of %d jobs (1 combination of "
           "100 images, 64x64, 200 steps),\n%d running and the rest pending; per round %d "
           "single cancel%s of a running job, then one bulk cancel of all %d on instance 1 "
           "(ms)\n\n",
           INSTANCES, GENERATORS, s_opt.rounds, s_opt.jobs, RUNNING, s_opt.singles,
           s_opt.singles == 1 ? "" : "s", s_opt.jobs);
    printf("| cancel | requests | latency p50 | p99 | max | generator samples | propagation p50 "
           "| p99 | max | stop p50 | p99 |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    char what[96];
    snprintf(what, sizeof what, "POST /api/jobs/cancel, %d ids", s_opt.jobs);
    s_cancel_line(what, &bulk, "");
    s_cancel_line("floor: POST /api/jobs/{id}/cancel", &single, "");
    printf("\nbulk latency by round (ms):");
    for (size_t i = 0; i < bulk.by_round.n; i++)
        printf(" %.0f", bulk.by_round.v[i]);
    printf("\nall %d generators observed the bulk cancel, per round (ms): p50 %.2f, max %.2f "
           "(%zu rounds)\n\n",
           RUNNING, bench_pct(&bulk.all_observed, 0.5), bench_max(&bulk.all_observed),
           bulk.all_observed.n);

    printf("list: %d pending jobs (inserted in %.2f s), one keep-alive connection, closed loop\n\n",
           s_opt.list_jobs, list.insert_s);
    printf("| GET | pages | jobs | pages/s | jobs/s | page ms p50 | p99 | max |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < 2; i++) {
        walk_t *w = &list.walks[i];
        printf("| /api/jobs?%s | %d | %ld | %.1f | %.0f | %.2f | %.2f | %.2f |\n", w->name,
               w->pages, w->jobs, w->seconds > 0 ? w->pages / w->seconds : NAN,
               w->seconds > 0 ? (double)w->jobs / w->seconds : NAN, bench_pct(&w->page_ms, 0.5),
               bench_pct(&w->page_ms, 0.99), bench_max(&w->page_ms));
    }
    for (int i = 0; i < 2; i++) {
        healthz_t *h = &list.healthz[i];
        printf("| floor: /healthz, %s the walks | %zu requests | | %.0f req/s | | %.3f | %.3f | "
               "%.3f |\n",
               i ? "after" : "before", h->us.n, h->rps, bench_pct(&h->us, 0.5) / 1000,
               bench_pct(&h->us, 0.99) / 1000, bench_max(&h->us) / 1000);
        free(h->us.v);
    }

    free(bulk.latency.v);
    free(bulk.propagation.v);
    free(bulk.stop.v);
    free(bulk.all_observed.v);
    free(bulk.by_round.v);
    free(single.latency.v);
    free(single.propagation.v);
    free(single.stop.v);
    free(list.walks[0].page_ms.v);
    free(list.walks[1].page_ms.v);
    if (s_failures) {
        printf("\nFAILED: %d check%s (see above and %s)\n", s_failures, s_failures > 1 ? "s" : "",
               s_opt.logs);
        return 1;
    }
    printf("\nall checks passed\n");
    return 0;
}
