/*
 * bench/scale.c - what 1, 2 and 3 instances sharing one Redis and one
 * PostgreSQL sustain, on this machine.
 *
 * For each row it creates a fresh database DBNAME_scale, starts N
 * `imagejobs serve` instances on it (--generators 2 each, instance ids
 * scale-1 .. scale-N) and measures, from the servers' own timestamps read
 * back with SQL:
 *   claims/s   a "blocker" job holds every generator; a batch of small jobs
 *              (64x64, 1 step, 1 image per combination) is created through
 *              the instances in turn; the blocker is cancelled, and the
 *              batch's combinations completed / (last stopped_at - first
 *              started_at) is the rate the instances claim, run and end
 *              combinations through the store.
 *   enqueue    jobs of one such combination created one at a time on
 *              instance 1 of an idle system: job_tasks.started_at (the
 *              claim) - jobs.created_at; "remote" is the share claimed by
 *              another instance (woken through Redis).
 *   cancel     jobs of 2N combinations (every generator busy) cancelled on
 *              instance 1 at a random moment: cancel_observed_at -
 *              cancel_requested_at for the combinations that ran on another
 *              instance (N = 1: on the same one).
 * It checks its own results: every job ends completed or user_cancelled
 * with consistent counts (completed_images = len(generated_attach_ids) =
 * the sum over its combinations = its attachments), every server exits 0
 * on SIGTERM. Anything else fails the run (exit 1).
 *
 *   cmd/imagejobs-local bench scale [--quick] [options]
 */
#include "config.h"

#include "bench/util.h"

#include "tests/api_client.h"

#include <errno.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_INSTANCES 8
#define GENERATORS 2

static struct {
    bool quick;
    int max_instances;
    int batch_jobs;   /* claims: jobs of BATCH_COMBOS combinations */
    int enqueue_jobs; /* enqueue-to-start samples */
    int cancel_jobs;
    const char *logs, *redis, *database;
} s_opt = {.max_instances = 3, .batch_jobs = 200, .enqueue_jobs = 200, .cancel_jobs = 30};

#define BATCH_COMBOS 4

static int s_failures;

static void s_usage(FILE *f)
{
    fprintf(f, "usage: bench/scale [options]\n"
               "       (run it as: cmd/imagejobs-local bench scale [options])\n"
               "\n"
               "  --quick            a small run (under a minute)\n"
               "  --instances N      rows for 1..N instances (default 3)\n"
               "  --batch N          claims: jobs of 4 combinations (default 200)\n"
               "  --enqueue N        enqueue-to-start samples (default 200)\n"
               "  --cancels N        cancelled jobs per row (default 30)\n"
               "  --logs DIR         the servers' logs (default: bench/scale-logs in the\n"
               "                     build tree)\n"
               "  --redis URL        default $IMAGEJOBS_BENCH_REDIS\n"
               "  --database CONNINFO default $IMAGEJOBS_BENCH_DATABASE; the instances\n"
               "                     share DBNAME_scale in the same server, dropped and\n"
               "                     created afresh for each row\n"
               "The imagejobs binary comes from $IMAGEJOBS_BIN.\n");
}

static int s_parse_int(const char *what, const char *v, int lo, int hi)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || end == v || n < lo || n > hi) {
        fprintf(stderr, "scale: %s must be an integer from %d to %d\n", what, lo, hi);
        exit(2);
    }
    return (int)n;
}

static void s_parse_args(int argc, char **argv)
{
    enum { O_INST = 256, O_BATCH, O_ENQ, O_CANCELS, O_LOGS, O_REDIS, O_DB };
    static const struct option longs[] = {
        {"quick", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"instances", required_argument, NULL, O_INST},
        {"batch", required_argument, NULL, O_BATCH},
        {"enqueue", required_argument, NULL, O_ENQ},
        {"cancels", required_argument, NULL, O_CANCELS},
        {"logs", required_argument, NULL, O_LOGS},
        {"redis", required_argument, NULL, O_REDIS},
        {"database", required_argument, NULL, O_DB},
        {NULL, 0, NULL, 0},
    };
    /* --quick first, so that explicit options given with it win */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0) {
            s_opt.quick = true;
            s_opt.batch_jobs = 50;
            s_opt.enqueue_jobs = 40;
            s_opt.cancel_jobs = 6;
        }
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'q':
            break;
        case 'h':
            s_usage(stdout);
            exit(0);
        case O_INST:
            s_opt.max_instances = s_parse_int("--instances", optarg, 1, MAX_INSTANCES);
            break;
        case O_BATCH:
            s_opt.batch_jobs = s_parse_int("--batch", optarg, 1, 100000);
            break;
        case O_ENQ:
            s_opt.enqueue_jobs = s_parse_int("--enqueue", optarg, 1, 100000);
            break;
        case O_CANCELS:
            s_opt.cancel_jobs = s_parse_int("--cancels", optarg, 1, 10000);
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
    bench_services("scale", &s_opt.redis, &s_opt.database, &s_opt.logs);
}

/* ================================================================ helpers */

static void s_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "scale: ");
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

typedef struct {
    double *v;
    size_t n;
} series_t;

/* Nearest-rank percentile (p in 0..1) of a sorted series. */
static double s_pct(const series_t *s, double p)
{
    if (!s->n)
        return NAN;
    size_t k = (size_t)ceil(p * (double)s->n);
    return s->v[k ? k - 1 : 0];
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

/* The values of column 0 (and whether column 1 is true) as a sorted series. */
static series_t s_sql_series(PGconn *db, const char *sql, size_t *flagged)
{
    PGresult *r = s_sql(db, sql, 0, NULL);
    series_t s = {calloc((size_t)PQntuples(r) + 1, sizeof(double)), (size_t)PQntuples(r)};
    if (!s.v)
        abort();
    *flagged = 0;
    for (size_t i = 0; i < s.n; i++) {
        s.v[i] = atof(PQgetvalue(r, (int)i, 0));
        if (PQnfields(r) > 1 && PQgetvalue(r, (int)i, 1)[0] == 't')
            (*flagged)++;
    }
    PQclear(r);
    qsort(s.v, s.n, sizeof *s.v, bench_cmp_double);
    return s;
}

/* ================================================================ servers */

typedef struct {
    char name[32];
    int port;
    pid_t pid;
    char log[PATH_MAX];
} server_t;

static server_t s_srv[MAX_INSTANCES];
static volatile sig_atomic_t s_pids[MAX_INSTANCES];

static void s_on_signal(int sig)
{
    for (int i = 0; i < MAX_INSTANCES; i++)
        if (s_pids[i] > 0)
            kill((pid_t)s_pids[i], SIGTERM);
    _exit(128 + sig);
}

static void s_stop_servers_at_exit(void)
{
    for (int i = 0; i < MAX_INSTANCES; i++)
        if (s_pids[i] > 0)
            api_stop((pid_t)s_pids[i], 10);
}

static void s_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* Drops and creates DBNAME_scale next to the main database; its conninfo
 * (the main one with dbname replaced) into out. */
static void s_fresh_db(PGconn *admin, char *out, size_t len)
{
    char name[256], sql[600];
    snprintf(name, sizeof name, "%s_scale", PQdb(admin));
    char *ident = PQescapeIdentifier(admin, name, strlen(name));
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", ident);
    PQclear(s_sql(admin, sql, 0, NULL));
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", ident);
    PQclear(s_sql(admin, sql, 0, NULL));
    PQfreemem(ident);
    /* a conninfo string: a later dbname keyword wins over an earlier one */
    if ((size_t)snprintf(out, len, "%s dbname='%s'", s_opt.database, name) >= len)
        s_die("database conninfo too long");
    if (strstr(s_opt.database, "://"))
        s_die("--database must be a key=value conninfo, not a URI");
}

static void s_start(int i, const char *database)
{
    server_t *s = &s_srv[i];
    char gens[16];
    snprintf(gens, sizeof gens, "%d", GENERATORS);
    snprintf(s->name, sizeof s->name, "scale-%d", i + 1);
    if (snprintf(s->log, sizeof s->log, "%s/%s.log", s_opt.logs, s->name) >= (int)sizeof s->log)
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

/* ================================================================ jobs */

/* POST /api/jobs on instance i: 0 and the id, or -1 (reported). */
static int s_create(int i, const char *tag, int seq, int combos, int size, int steps, int images,
                    char *id, size_t idlen)
{
    char body[4096];
    int n = snprintf(body, sizeof body, "{\"prompt\":\"scale %s %d\",\"combinations\":[", tag, seq);
    for (int k = 0; k < combos; k++)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s{\"seed\":%d}", k ? "," : "",
                      seq * 64 + k + 1);
    snprintf(body + n, sizeof body - (size_t)n,
             "],\"images_per_combination\":%d,\"width\":%d,\"height\":%d,\"steps\":%d}", images,
             size, size, steps);
    api_response_t r;
    int rc = api_request(s_srv[i].port, "POST", "/api/jobs", "Content-Type: application/json\r\n",
                         body, strlen(body), &r);
    const char *jid = json_string_value(json_object_get(r.json, "job_id"));
    if (rc < 0 || r.status != 201 || !jid) {
        s_fail("create on %s: HTTP %d %s", s_srv[i].name, r.status, r.body ? r.body : "");
        api_response_free(&r);
        return -1;
    }
    snprintf(id, idlen, "%s", jid);
    api_response_free(&r);
    return 0;
}

static int s_cancel(int i, const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    api_response_t r;
    int rc = api_request(s_srv[i].port, "POST", path, NULL, NULL, 0, &r);
    int ok = rc == 0 && r.status == 200 && json_is_true(json_object_get(r.json, "success"));
    if (!ok)
        s_fail("cancel %s on %s: HTTP %d %s", id, s_srv[i].name, r.status, r.body ? r.body : "");
    api_response_free(&r);
    return ok ? 0 : -1;
}

/* Polls `sql` (one integer, $1 = id or NULL) until it returns want. */
static int s_wait(PGconn *db, const char *sql, const char *id, long want, double timeout_s,
                  double interval_s, const char *what)
{
    double deadline = bench_mono() + timeout_s;
    const char *p[1] = {id};
    for (;;) {
        PGresult *r = s_sql(db, sql, id ? 1 : 0, p);
        long v = PQntuples(r) ? atol(PQgetvalue(r, 0, 0)) : -1;
        PQclear(r);
        if (v == want)
            return 0;
        if (bench_mono() > deadline) {
            s_fail("%s%s%s: not done within %.0f s", what, id ? " " : "", id ? id : "", timeout_s);
            return -1;
        }
        bench_sleep(interval_s);
    }
}

static const char *const SQL_TASKS_PROCESSING =
    "SELECT count(*) FROM job_tasks WHERE job_id = $1 AND status = 'processing'";
static const char *const SQL_JOB_ENDED = "SELECT count(*) FROM jobs WHERE id = $1 "
                                         "AND status IN ('completed', 'user_cancelled', 'failed')";
static const char *const SQL_OPEN_JOBS =
    "SELECT count(*) FROM jobs WHERE status IN ('pending', 'processing')";

/* Every job ended completed or user_cancelled with consistent counts;
 * returns how many did not. */
static long s_check_db(PGconn *db, long expect_jobs)
{
    PGresult *r =
        s_sql(db,
              "WITH t AS (SELECT job_id, sum(completed_images) AS n,"
              "  bool_and(status = 'completed') AS all_completed,"
              "  bool_and(status = 'cancelled') AS all_cancelled FROM job_tasks GROUP BY job_id),"
              " a AS (SELECT job_id, count(*) AS n FROM attachments GROUP BY job_id)"
              "SELECT j.id, j.status, j.completed_images, j.total_images,"
              "  cardinality(j.generated_attach_ids), t.n, COALESCE(a.n, 0) "
              "FROM jobs j LEFT JOIN t ON t.job_id = j.id LEFT JOIN a ON a.job_id = j.id "
              "WHERE NOT (j.completed_images = cardinality(j.generated_attach_ids)"
              "           AND j.completed_images = COALESCE(t.n, -1)"
              "           AND j.completed_images = COALESCE(a.n, 0)"
              "           AND ((j.status = 'completed' AND t.all_completed"
              "                 AND j.completed_images = j.total_images)"
              "             OR (j.status = 'user_cancelled' AND t.all_cancelled"
              "                 AND j.cancel_requested_at IS NOT NULL)))",
              0, NULL);
    long bad = PQntuples(r);
    for (int i = 0; i < PQntuples(r) && i < 5; i++)
        s_fail("job %s ended %s: completed_images %s of %s, %s attach ids, %s over its "
               "combinations, %s attachments",
               PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
               PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), PQgetvalue(r, i, 6));
    PQclear(r);
    r = s_sql(db, "SELECT count(*) FROM jobs", 0, NULL);
    long n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (n != expect_jobs) {
        s_fail("%ld jobs in the database, %ld created", n, expect_jobs);
        bad++;
    }
    /* the cancelled combinations' timestamps, in order */
    r = s_sql(
        db,
        "SELECT count(*) FROM job_tasks t JOIN jobs j ON j.id = t.job_id "
        "WHERE j.prompt LIKE 'scale cancel %' AND NOT (t.cancel_observed_at >= j.cancel_requested_at"
        "  AND t.stopped_at >= t.cancel_observed_at AND j.finished_at >= t.stopped_at)",
        0, NULL);
    long bad_ts = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (bad_ts) {
        s_fail("%ld cancelled combinations without ordered requested <= observed <= stopped "
               "<= finished timestamps",
               bad_ts);
        bad++;
    }
    return bad;
}

typedef struct {
    int instances;
    long combos;
    double claims_per_s;
    series_t enqueue, cancel;
    size_t enqueue_remote;
    bool ok;
} row_t;

static void s_run_row(PGconn *admin, int n, row_t *row, unsigned *rng)
{
    char database[2048];
    s_fresh_db(admin, database, sizeof database);
    for (int i = 0; i < n; i++)
        s_start(i, database);
    PGconn *db = PQconnectdb(database);
    if (PQstatus(db) != CONNECTION_OK)
        s_die("PostgreSQL: %s", PQerrorMessage(db));
    int failures = s_failures;
    long created = 0;
    char id[64];
    row->instances = n;

    /* (a) claims/s: the blocker holds every generator while the batch is
     * created, so that the batch starts all at once when it is cancelled */
    char blocker[64];
    if (s_create(0, "blocker", 0, n * GENERATORS, 256, 30, 100, blocker, sizeof blocker) == 0) {
        created++;
        if (s_wait(db, SQL_TASKS_PROCESSING, blocker, n * GENERATORS, 30, 0.005, "blocker") == 0) {
            for (int j = 0; j < s_opt.batch_jobs; j++)
                if (s_create(j % n, "batch", j, BATCH_COMBOS, 64, 1, 1, id, sizeof id) == 0)
                    created++;
            s_cancel(0, blocker);
            s_wait(db, SQL_OPEN_JOBS, NULL, 0, 120, 0.02, "the batch");
        }
    }
    PGresult *r =
        s_sql(db,
              "SELECT count(*), extract(epoch FROM max(t.stopped_at) - min(t.started_at)) "
              "FROM job_tasks t JOIN jobs j ON j.id = t.job_id "
              "WHERE j.prompt LIKE 'scale batch %' AND t.status = 'completed'",
              0, NULL);
    row->combos = atol(PQgetvalue(r, 0, 0));
    double span = atof(PQgetvalue(r, 0, 1));
    row->claims_per_s = span > 0 ? (double)row->combos / span : NAN;
    PQclear(r);
    if (row->combos != (long)s_opt.batch_jobs * BATCH_COMBOS)
        s_fail("%d instances: %ld batch combinations completed of %d", n, row->combos,
               s_opt.batch_jobs * BATCH_COMBOS);

    /* (b) enqueue-to-start, one job at a time on an idle system */
    for (int j = 0; j < s_opt.enqueue_jobs; j++) {
        bench_sleep(0.02 + (double)(rand_r(rng) % 20000) / 1e6); /* every generator idle again */
        if (s_create(0, "enqueue", j, 1, 64, 1, 1, id, sizeof id) < 0)
            break;
        created++;
        if (s_wait(db, SQL_JOB_ENDED, id, 1, 30, 0.002, "enqueue job") < 0)
            break;
    }
    size_t remote = 0;
    row->enqueue = s_sql_series(
        db,
        "SELECT extract(epoch FROM t.started_at - j.created_at) * 1000, t.claimed_by <> 'scale-1' "
        "FROM job_tasks t JOIN jobs j ON j.id = t.job_id WHERE j.prompt LIKE 'scale enqueue %'",
        &remote);
    row->enqueue_remote = remote;

    /* (c) cancel propagation: every generator busy with the job, cancel on
     * instance 1 at a random moment */
    for (int j = 0; j < s_opt.cancel_jobs; j++) {
        if (s_create(0, "cancel", j, n * GENERATORS, 128, 30, 100, id, sizeof id) < 0)
            break;
        created++;
        if (s_wait(db, SQL_TASKS_PROCESSING, id, n * GENERATORS, 30, 0.005, "cancel job") < 0)
            break;
        bench_sleep((double)(rand_r(rng) % 300000) / 1e6);
        if (s_cancel(0, id) < 0 || s_wait(db, SQL_JOB_ENDED, id, 1, 30, 0.002, "cancelled job") < 0)
            break;
    }
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT extract(epoch FROM t.cancel_observed_at - j.cancel_requested_at) * 1000 "
             "FROM job_tasks t JOIN jobs j ON j.id = t.job_id WHERE j.prompt LIKE 'scale cancel %%'"
             " AND t.cancel_observed_at IS NOT NULL%s",
             n > 1 ? " AND t.claimed_by <> 'scale-1'" : "");
    size_t unused;
    row->cancel = s_sql_series(db, sql, &unused);
    if (row->cancel.n
        != (size_t)s_opt.cancel_jobs * (size_t)(n > 1 ? (n - 1) * GENERATORS : GENERATORS))
        s_fail("%d instances: %zu cancel propagation samples, expected %d", n, row->cancel.n,
               s_opt.cancel_jobs * (n > 1 ? (n - 1) * GENERATORS : GENERATORS));

    s_check_db(db, created);
    PQfinish(db);
    for (int i = n; i-- > 0;) {
        int st = api_stop(s_srv[i].pid, 20);
        s_pids[i] = 0;
        if (st != 0)
            s_fail("%s exited with %d on SIGTERM (see %s)", s_srv[i].name, st, s_srv[i].log);
    }
    row->ok = s_failures == failures;
}

static const char *s_loadavg(char *buf, size_t len)
{
    double l[1];
    if (getloadavg(l, 1) == 1)
        snprintf(buf, len, "%.2f", l[0]);
    else
        snprintf(buf, len, "?");
    return buf;
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
    unsigned rng = 1;
    row_t rows[MAX_INSTANCES] = {0};
    for (int n = 1; n <= s_opt.max_instances; n++) {
        fprintf(stderr, "scale: %d instance%s...\n", n, n > 1 ? "s" : "");
        s_run_row(admin, n, &rows[n - 1], &rng);
    }
    PQfinish(admin);

    printf("bench/scale: %d generators per instance, one Redis, one PostgreSQL; %.0f s, load "
           "average %s -> %s\n",
           GENERATORS, bench_mono() - t0, load0, s_loadavg(load1, sizeof load1));
    printf("claims: %d jobs x %d combinations (64x64, 1 step, 1 image) at once; enqueue: %d "
           "jobs one at a time on instance 1;\ncancel: %d jobs of 2 x instances combinations "
           "cancelled on instance 1 (times in ms)\n\n",
           s_opt.batch_jobs, BATCH_COMBOS, s_opt.enqueue_jobs, s_opt.cancel_jobs);
    printf("| instances | claims/s | combinations | enqueue->start p50 | p99 | claimed remotely "
           "| cancel propagation | p50 | p99 | samples |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (int n = 1; n <= s_opt.max_instances; n++) {
        row_t *w = &rows[n - 1];
        printf("| %d | %.0f | %ld | %.2f | %.2f | %.0f %% | %s | %.2f | %.2f | %zu |%s\n", n,
               w->claims_per_s, w->combos, s_pct(&w->enqueue, 0.5), s_pct(&w->enqueue, 0.99),
               w->enqueue.n ? 100.0 * (double)w->enqueue_remote / (double)w->enqueue.n : NAN,
               n > 1 ? "other instance" : "same instance", s_pct(&w->cancel, 0.5),
               s_pct(&w->cancel, 0.99), w->cancel.n, w->ok ? "" : " FAILED");
        free(w->enqueue.v);
        free(w->cancel.v);
    }
    if (s_failures) {
        printf("\nFAILED: %d check%s (see above and %s)\n", s_failures, s_failures > 1 ? "s" : "",
               s_opt.logs);
        return 1;
    }
    printf("\nall checks passed\n");
    return 0;
}
