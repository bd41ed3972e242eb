/*
 * bench/cancel-latency.c - how fast a cancel stops a running job: events
 * (ours) against the seed's polling design, side by side in one run.
 *
 * It starts its own `imagejobs serve` processes against one Redis and one
 * PostgreSQL server (each group of instances in a database of its own, so
 * that no instance claims another group's work):
 *   event   --cancel-check event, K generators   (same-instance rows)
 *   poll    --cancel-check poll, K generators    (the seed's design)
 *   A, B    two event instances sharing a database; A has no generators,
 *           so every combination runs on B and every cancel sent to A
 *           reaches B through Redis            (cross-instance rows)
 *   pergen  event, K generators, --compute-pool per-generator: each
 *           generator computes its bands on its own thread, as before the
 *           shared compute pool (issue 17)     ("without the pool" rows)
 *   event8, pergen8   the same two with 8 generators and jobs of 8
 *           combinations: more generators than this machine has cores
 * Jobs of K combinations (30 steps at 256x256 by default, many images per
 * combination so none ends on its own) are submitted one at a time, the
 * modes taking turns so that machine noise falls on all of them alike.
 * When every combination of a job is processing, the harness waits a random
 * delay and cancels it, then reads the job back until it is user_cancelled.
 *
 * Measures, in milliseconds:
 *   response     client sends the cancel -> its HTTP answer      (client)
 *   propagation  cancel_requested_at -> cancel_observed_at       (server,
 *   stop         cancel_requested_at -> stopped_at                per
 *                                                                 combination)
 *   ended        cancel_requested_at -> the job's finished_at    (server)
 *   cancelled    client sends the cancel -> GET reads user_cancelled (client)
 * Server timestamps are wall-clock times taken in the serve processes (the
 * http actor when it reads the request, the generator actor when it observes
 * the cancel and when it stops), all on this machine's clock, read back
 * through GET /api/jobs/{id}. The floors, measured in the same run: raw
 * Redis PUBLISH -> subscriber (sync hiredis, two threads), the runtime's
 * inproc mailbox one-way latency (ping-pong), and one PostgreSQL UPDATE
 * round trip (the cancel is written to PostgreSQL before it is published).
 *
 * The run checks its own results: every cancelled job must end
 * user_cancelled, with completed_images == len(generated_attach_ids) == the
 * sum over its combinations, every combination cancelled with both
 * timestamps, in order. Anything else fails the run (exit 1).
 *
 *   cmd/imagejobs-local bench cancel-latency [--quick] [options]
 */
#include "config.h"

#include "bench/util.h"

#include "runtime/actor.h"
#include "runtime/log.h"
#include "runtime/mailbox.h"
#include "runtime/runtime.h"
#include "tests/api_client.h"

#include <errno.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef BENCH_SRCDIR
#define BENCH_SRCDIR "bench"
#endif

/* ================================================================ options */

static struct {
    bool quick;
    int jobs;         /* per mode */
    int combinations; /* K: parallel combinations per job, generators per instance */
    int images;       /* images per combination */
    int steps, size;
    int delay_max_ms;  /* the cancel comes 0..this after every combination runs */
    const char *modes; /* comma-separated mode names, NULL: all */
    const char *rt;    /* serve's --rt-priority, NULL: not given */
    int floor_samples;
    unsigned seed;
    const char *csv, *plot, *logs, *backend;
    const char *redis, *database;
} s_opt = {
    .jobs = 40,
    .combinations = 4,
    .images = 20,
    .steps = 30,
    .size = 256,
    .delay_max_ms = 1500,
    .floor_samples = 20000,
    .seed = 1,
    .backend = "cpu",
};

static void s_usage(FILE *f)
{
    fprintf(f, "usage: bench/cancel-latency [options]\n"
               "       (run it as: cmd/imagejobs-local bench cancel-latency [options])\n"
               "\n"
               "  --quick            a small run (under a minute): 3 jobs per mode, 2,000\n"
               "                     floor samples; ends with 'stop p99 ratio poll/event: X'\n"
               "  --jobs N           jobs per mode (default 40)\n"
               "  --combinations K   parallel combinations per job = generators per\n"
               "                     instance (default 4)\n"
               "  --images N         images per combination (default 20)\n"
               "  --steps N          sampler steps per image (default 30)\n"
               "  --size N           image width and height (default 256)\n"
               "  --delay-max MS     cancel at a random moment 0..MS after every\n"
               "                     combination runs (default 1500)\n"
               "  --modes LIST       comma-separated, of event/immediate,\n"
               "                     event/after_current_image, poll, cross/event/immediate,\n"
               "                     cross/event/after_current_image, per-generator/immediate,\n"
               "                     event/immediate/8, per-generator/immediate/8 (default: all)\n"
               "  --no-cross         the same-instance modes only\n"
               "  --floor-samples N  samples per floor (default 20000)\n"
               "  --seed N           random seed of the cancel moments (default 1)\n"
               "  --backend B        serve's --backend (default cpu)\n"
               "  --rt-priority N    serve's --rt-priority for every server (default: not\n"
               "                     given, ordinary scheduling)\n"
               "  --csv FILE         every sample (default: bench/cancel-latency.csv in\n"
               "                     the build tree, next to $IMAGEJOBS_BIN)\n"
               "  --plot FILE.png    plot the stop-latency distributions (gnuplot,\n"
               "                     installed with apt-get when missing)\n"
               "  --logs DIR         the servers' logs (default: bench/cancel-latency-logs\n"
               "                     in the build tree)\n"
               "  --redis URL        default $IMAGEJOBS_BENCH_REDIS\n"
               "  --database CONNINFO default $IMAGEJOBS_BENCH_DATABASE; the poll and\n"
               "                     cross-instance groups use DBNAME_poll and DBNAME_cross\n"
               "                     in the same server (dropped and created afresh)\n"
               "The imagejobs binary comes from $IMAGEJOBS_BIN.\n");
}

static int s_parse_int(const char *what, const char *v, int lo, int hi)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || end == v || n < lo || n > hi) {
        fprintf(stderr, "cancel-latency: %s must be an integer from %d to %d\n", what, lo, hi);
        exit(2);
    }
    return (int)n;
}

static void s_parse_args(int argc, char **argv)
{
    enum {
        O_JOBS = 256,
        O_COMB,
        O_IMAGES,
        O_STEPS,
        O_SIZE,
        O_DELAY,
        O_NOCROSS,
        O_MODES,
        O_FLOOR,
        O_SEED,
        O_BACKEND,
        O_RT,
        O_CSV,
        O_PLOT,
        O_LOGS,
        O_REDIS,
        O_DB
    };
    static const struct option longs[] = {
        {"quick", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"jobs", required_argument, NULL, O_JOBS},
        {"combinations", required_argument, NULL, O_COMB},
        {"images", required_argument, NULL, O_IMAGES},
        {"steps", required_argument, NULL, O_STEPS},
        {"size", required_argument, NULL, O_SIZE},
        {"delay-max", required_argument, NULL, O_DELAY},
        {"no-cross", no_argument, NULL, O_NOCROSS},
        {"modes", required_argument, NULL, O_MODES},
        {"floor-samples", required_argument, NULL, O_FLOOR},
        {"seed", required_argument, NULL, O_SEED},
        {"backend", required_argument, NULL, O_BACKEND},
        {"rt-priority", required_argument, NULL, O_RT},
        {"csv", required_argument, NULL, O_CSV},
        {"plot", required_argument, NULL, O_PLOT},
        {"logs", required_argument, NULL, O_LOGS},
        {"redis", required_argument, NULL, O_REDIS},
        {"database", required_argument, NULL, O_DB},
        {NULL, 0, NULL, 0},
    };
    /* --quick first, so that explicit options given with it win */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0) {
            s_opt.quick = true;
            s_opt.jobs = 3;
            s_opt.delay_max_ms = 1000;
            s_opt.floor_samples = 2000;
        }
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'q':
            break;
        case 'h':
            s_usage(stdout);
            exit(0);
        case O_JOBS:
            s_opt.jobs = s_parse_int("--jobs", optarg, 1, 100000);
            break;
        case O_COMB:
            s_opt.combinations = s_parse_int("--combinations", optarg, 1, 64);
            break;
        case O_IMAGES:
            s_opt.images = s_parse_int("--images", optarg, 2, 10000);
            break;
        case O_STEPS:
            s_opt.steps = s_parse_int("--steps", optarg, 1, 200);
            break;
        case O_SIZE:
            s_opt.size = s_parse_int("--size", optarg, 64, 2048);
            break;
        case O_DELAY:
            s_opt.delay_max_ms = s_parse_int("--delay-max", optarg, 0, 600000);
            break;
        case O_NOCROSS:
            s_opt.modes = "event/immediate,event/after_current_image,poll,per-generator/immediate,"
                          "event/immediate/8,per-generator/immediate/8";
            break;
        case O_MODES:
            s_opt.modes = optarg;
            break;
        case O_RT:
            s_opt.rt = optarg;
            break;
        case O_FLOOR:
            s_opt.floor_samples = s_parse_int("--floor-samples", optarg, 100, 10000000);
            break;
        case O_SEED:
            s_opt.seed = (unsigned)s_parse_int("--seed", optarg, 0, INT_MAX);
            break;
        case O_BACKEND:
            s_opt.backend = optarg;
            break;
        case O_CSV:
            s_opt.csv = optarg;
            break;
        case O_PLOT:
            s_opt.plot = optarg;
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
    if (s_opt.size % 8) {
        fprintf(stderr, "cancel-latency: --size must be a multiple of 8\n");
        exit(2);
    }
    if (!s_opt.redis)
        s_opt.redis = getenv("IMAGEJOBS_BENCH_REDIS");
    if (!s_opt.database)
        s_opt.database = getenv("IMAGEJOBS_BENCH_DATABASE");
    const char *bin = getenv("IMAGEJOBS_BIN");
    if (!s_opt.redis || !s_opt.database || !bin) {
        fprintf(stderr, "cancel-latency: needs IMAGEJOBS_BIN, a Redis (--redis or "
                        "IMAGEJOBS_BENCH_REDIS) and a PostgreSQL (--database or "
                        "IMAGEJOBS_BENCH_DATABASE); cmd/imagejobs-local bench cancel-latency "
                        "sets them all up\n");
        exit(2);
    }
    /* outputs go to the build tree by default, never the source tree */
    static char csv[PATH_MAX], logs[PATH_MAX];
    const char *slash = strrchr(bin, '/');
    int dirlen = slash ? (int)(slash - bin) : 1;
    const char *dir = slash ? bin : ".";
    if (!s_opt.csv) {
        snprintf(csv, sizeof csv, "%.*s/bench/cancel-latency.csv", dirlen, dir);
        s_opt.csv = csv;
    }
    if (!s_opt.logs) {
        snprintf(logs, sizeof logs, "%.*s/bench/cancel-latency-logs", dirlen, dir);
        s_opt.logs = logs;
    }
}

/* ================================================================ helpers */

static int64_t s_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void s_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cancel-latency: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(3);
}

static const char *s_jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* ================================================================ servers */

typedef struct {
    const char *name;  /* instance id suffix and log name */
    const char *check; /* --cancel-check */
    const char *pool;  /* --compute-pool */
    int generators;
    char database[1024]; /* conninfo */
    int port;
    pid_t pid;
    char log[PATH_MAX];
} server_t;

enum { SRV_EVENT, SRV_POLL, SRV_A, SRV_B, SRV_PERGEN, SRV_EVENT8, SRV_PERGEN8, SRV_COUNT };
static server_t s_srv[SRV_COUNT] = {
    [SRV_EVENT] = {.name = "event", .check = "event", .pool = "shared"},
    [SRV_POLL] = {.name = "poll", .check = "poll", .pool = "shared"},
    [SRV_A] = {.name = "cross-a", .check = "event", .pool = "shared"},
    [SRV_B] = {.name = "cross-b", .check = "event", .pool = "shared"},
    [SRV_PERGEN] = {.name = "pergen", .check = "event", .pool = "per-generator"},
    [SRV_EVENT8] = {.name = "event8", .check = "event", .pool = "shared", .generators = 8},
    [SRV_PERGEN8] = {.name = "pergen8", .check = "event", .pool = "per-generator", .generators = 8},
};
static volatile sig_atomic_t s_pids[SRV_COUNT];

/* Ctrl-C or SIGTERM: take the servers down with us. */
static void s_on_signal(int sig)
{
    for (int i = 0; i < SRV_COUNT; i++)
        if (s_pids[i] > 0)
            kill((pid_t)s_pids[i], SIGTERM);
    _exit(128 + sig);
}

/* Whatever way the run ends early (s_die), no server outlives it. */
static void s_stop_servers_at_exit(void)
{
    for (int i = 0; i < SRV_COUNT; i++)
        if (s_pids[i] > 0)
            api_stop((pid_t)s_pids[i], 10);
}

/* The conninfo of database `name` on the same server as `conninfo`. */
static void s_conninfo_with_db(const char *conninfo, const char *name, char *out, size_t len)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (!opts)
        s_die("cannot parse the database conninfo: %s", err ? err : "?");
    size_t n = 0;
    out[0] = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val || strcmp(o->keyword, "dbname") == 0)
            continue;
        n += (size_t)snprintf(out + n, n < len ? len - n : 0, "%s='", o->keyword);
        for (const char *p = o->val; *p; p++) {
            if (*p == '\'' || *p == '\\')
                n += (size_t)snprintf(out + n, n < len ? len - n : 0, "\\");
            n += (size_t)snprintf(out + n, n < len ? len - n : 0, "%c", *p);
        }
        n += (size_t)snprintf(out + n, n < len ? len - n : 0, "' ");
    }
    n += (size_t)snprintf(out + n, n < len ? len - n : 0, "dbname='%s'", name);
    if (n >= len)
        s_die("database conninfo too long");
    PQconninfoFree(opts);
}

/* A fresh scratch database DBNAME_suffix next to the main one. */
static void s_scratch_db(PGconn *db, const char *suffix, char *out, size_t len)
{
    char name[256], sql[600];
    snprintf(name, sizeof name, "%s_%s", PQdb(db), suffix);
    char *ident = PQescapeIdentifier(db, name, strlen(name));
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", ident);
    PGresult *r = PQexec(db, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        s_die("%s: %s", sql, PQerrorMessage(db));
    PQclear(r);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", ident);
    r = PQexec(db, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        s_die("%s: %s", sql, PQerrorMessage(db));
    PQclear(r);
    PQfreemem(ident);
    s_conninfo_with_db(s_opt.database, name, out, len);
}

static void s_start_server(server_t *s)
{
    char gens[16], instance[64];
    snprintf(gens, sizeof gens, "%d", s->generators);
    snprintf(instance, sizeof instance, "bench-%s", s->name);
    snprintf(s->log, sizeof s->log, "%s/%s.log", s_opt.logs, s->name);
    s->port = api_free_port();
    const char *args[] = {"--redis",
                          s_opt.redis,
                          "--database",
                          s->database,
                          "--generators",
                          gens,
                          "--cancel-check",
                          s->check,
                          "--instance",
                          instance,
                          "--backend",
                          s_opt.backend,
                          "--compute-pool",
                          s->pool,
                          s_opt.rt ? "--rt-priority" : NULL,
                          s_opt.rt,
                          NULL};
    s->pid = api_serve(s->port, args, s->log, 60);
    if (s->pid < 0)
        s_die("the %s server did not become ready; see %s", s->name, s->log);
    s_pids[s - s_srv] = s->pid;
}

/* ================================================================ floors */

/* Raw Redis: PUBLISH from this thread, a second thread blocked in a
 * SUBSCRIBE stamps each message; one message in flight at a time. */
typedef struct {
    redisContext *sub;
    size_t n, warm;
    bench_series_t *out;
    int done_fd[2];
    char error[256];
} redis_floor_t;

static void *s_redis_sub_thread(void *arg)
{
    redis_floor_t *f = arg;
    for (size_t got = 0; got < f->n + f->warm;) {
        redisReply *r;
        if (redisGetReply(f->sub, (void **)&r) != REDIS_OK) {
            snprintf(f->error, sizeof f->error, "subscriber: %s", f->sub->errstr);
            break;
        }
        int64_t now = s_mono_ns();
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3
            && r->element[2]->type == REDIS_REPLY_STRING
            && strcmp(r->element[0]->str, "message") == 0) {
            long long seq, sent;
            if (sscanf(r->element[2]->str, "%lld %lld", &seq, &sent) == 2) {
                if ((size_t)seq >= f->warm)
                    bench_push(f->out, (double)(now - sent) / 1e6);
                got++;
                if (write(f->done_fd[1], "x", 1) != 1)
                    break;
            }
        }
        freeReplyObject(r);
    }
    close(f->done_fd[1]);
    return NULL;
}

static redisContext *s_redis_connect(void)
{
    char err[512];
    redisContext *c = bench_redis_connect(s_opt.redis, err, sizeof err);
    if (!c)
        s_die("%s", err);
    return c;
}

static void s_redis_floor(bench_series_t *out)
{
    redis_floor_t f = {.n = (size_t)s_opt.floor_samples, .warm = 100, .out = out};
    char channel[64];
    snprintf(channel, sizeof channel, "cancel-latency:floor:%d", (int)getpid());
    redisContext *pub = s_redis_connect();
    f.sub = s_redis_connect();
    redisReply *r = redisCommand(f.sub, "SUBSCRIBE %s", channel);
    if (!r)
        s_die("SUBSCRIBE: %s", f.sub->errstr);
    freeReplyObject(r);
    if (pipe(f.done_fd) < 0)
        s_die("pipe: %s", strerror(errno));
    pthread_t t;
    pthread_create(&t, NULL, s_redis_sub_thread, &f);
    for (size_t i = 0; i < f.n + f.warm; i++) {
        char payload[64];
        snprintf(payload, sizeof payload, "%zu %lld", i, (long long)s_mono_ns());
        r = redisCommand(pub, "PUBLISH %s %s", channel, payload);
        if (!r)
            s_die("PUBLISH: %s", pub->errstr);
        freeReplyObject(r);
        char x;
        if (read(f.done_fd[0], &x, 1) != 1)
            break; /* the subscriber gave up */
    }
    pthread_join(t, NULL);
    close(f.done_fd[0]);
    if (f.error[0])
        s_die("Redis floor: %s", f.error);
    redisFree(pub);
    redisFree(f.sub);
}

/* The runtime's inproc mailbox, one way: two actors ping-pong, the ponger
 * stamps each ping against the time carried in it. */
typedef struct {
    size_t n, warm;
    bench_series_t *out; /* written by the ponger only, read after both are joined */
} inproc_floor_t;

static void s_ping(actor_t *self, uint64_t seq)
{
    msg_t *m = msg_new(MSG_PING);
    m->ping.seq = seq;
    m->ping.sent_ns = s_mono_ns();
    actor_send(self, "floor-ponger", m);
    msg_destroy(&m);
}

static int s_pinger_init(actor_t *self, void *arg)
{
    actor_set_state(self, arg);
    s_ping(self, 0);
    return 0;
}

static void s_pinger_on_pong(actor_t *self, msg_t *msg)
{
    inproc_floor_t *f = actor_state(self);
    if (msg->pong.seq + 1 < f->n + f->warm) {
        s_ping(self, msg->pong.seq + 1);
        return;
    }
    msg_t *done = msg_new(MSG_PONG);
    actor_send(self, "floor-main", done);
    msg_destroy(&done);
}

static int s_ponger_init(actor_t *self, void *arg)
{
    actor_set_state(self, arg);
    return 0;
}

static void s_ponger_on_ping(actor_t *self, msg_t *msg)
{
    inproc_floor_t *f = actor_state(self);
    int64_t lat = s_mono_ns() - msg->ping.sent_ns;
    if (msg->ping.seq >= f->warm)
        bench_push(f->out, (double)lat / 1e6);
    msg_t *pong = msg_new(MSG_PONG);
    pong->pong.seq = msg->ping.seq;
    actor_send(self, msg->sender, pong);
    msg_destroy(&pong);
}

static const actor_spec_t s_pinger = {.init = s_pinger_init,
                                      .handlers = {[MSG_PONG] = s_pinger_on_pong}};
static const actor_spec_t s_ponger = {.init = s_ponger_init,
                                      .handlers = {[MSG_PING] = s_ponger_on_ping}};

/* In a thread of its own: runtime_new() blocks SIGINT/SIGTERM in the
 * calling thread, and the main thread must keep taking them. */
static void *s_inproc_floor_thread(void *arg)
{
    inproc_floor_t *f = arg;
    runtime_t *rt = runtime_new();
    mailbox_t *mb = rt ? mailbox_new(rt, "floor-main") : NULL;
    if (!mb)
        s_die("cannot start the runtime");
    char err[256];
    actor_t *b = actor_new(rt, "floor-ponger", &s_ponger, f, err, sizeof err);
    actor_t *a = b ? actor_new(rt, "floor-pinger", &s_pinger, f, err, sizeof err) : NULL;
    if (!a)
        s_die("inproc floor: %s", err);
    msg_t *done = mailbox_recv(mb, 120000);
    if (!done)
        s_die("inproc floor: timed out");
    msg_destroy(&done);
    actor_destroy(&a);
    actor_destroy(&b);
    mailbox_destroy(&mb);
    runtime_destroy(&rt);
    return NULL;
}

static void s_inproc_floor(bench_series_t *out)
{
    inproc_floor_t f = {.n = (size_t)s_opt.floor_samples, .warm = 100, .out = out};
    pthread_t t;
    pthread_create(&t, NULL, s_inproc_floor_thread, &f);
    pthread_join(t, NULL);
}

/* One autocommit UPDATE, the shape of the cancel's own write. */
static void s_pg_floor(PGconn *db, bench_series_t *out)
{
    PGresult *r = PQexec(db, "CREATE TEMP TABLE cancel_latency_floor (id int PRIMARY KEY, "
                             "at timestamptz); INSERT INTO cancel_latency_floor VALUES (1, "
                             "now())");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        s_die("PostgreSQL floor: %s", PQerrorMessage(db));
    PQclear(r);
    size_t n = (size_t)s_opt.floor_samples / 4;
    for (size_t i = 0; i < n + 20; i++) {
        int64_t t0 = s_mono_ns();
        r = PQexec(db, "UPDATE cancel_latency_floor SET at = clock_timestamp() WHERE id = 1");
        int64_t t1 = s_mono_ns();
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            s_die("PostgreSQL floor: %s", PQerrorMessage(db));
        PQclear(r);
        if (i >= 20)
            bench_push(out, (double)(t1 - t0) / 1e6);
    }
}

/* ================================================================ modes */

enum { M_RESPONSE, M_PROPAGATION, M_STOP, M_ENDED, M_CANCELLED, M_COUNT };
static const char *const s_measure[M_COUNT] = {"response", "propagation", "stop", "ended",
                                               "cancelled"};
static const char *const s_measure_what[M_COUNT] = {
    "client: cancel sent -> HTTP answer",
    "server: cancel received -> generator observed it",
    "server: cancel received -> combination stopped",
    "server: cancel received -> job finished_at",
    "client: cancel sent -> GET reads user_cancelled",
};

typedef struct {
    const char *name;
    const char *body; /* the cancel's body, NULL: none (the seed's curl) */
    int server;       /* takes the jobs and the cancels */
    int k;            /* combinations per job; 0: --combinations */
    bool cross;
    bool on;     /* selected for this run */
    bool broken; /* a job of this mode never stopped: skip the rest */
    bench_series_t m[M_COUNT];
    int jobs, failed;
} bench_mode_t;

#define AFTER "{\"mode\":\"after_current_image\"}"
static bench_mode_t s_modes[] = {
    {.name = "event/immediate", .server = SRV_EVENT},
    {.name = "event/after_current_image", .body = AFTER, .server = SRV_EVENT},
    {.name = "poll", .server = SRV_POLL},
    {.name = "cross/event/immediate", .server = SRV_A, .cross = true},
    {.name = "cross/event/after_current_image", .body = AFTER, .server = SRV_A, .cross = true},
    /* issue 17: the shared compute pool against none, with K and with 8 */
    {.name = "per-generator/immediate", .server = SRV_PERGEN},
    {.name = "event/immediate/8", .server = SRV_EVENT8, .k = 8},
    {.name = "per-generator/immediate/8", .server = SRV_PERGEN8, .k = 8},
};
#define NMODES (sizeof s_modes / sizeof *s_modes)
enum { MODE_EVENT, MODE_POLL = 2, MODE_CROSS, MODE_PERGEN = 5, MODE_EVENT8, MODE_PERGEN8 };

static int s_k(const bench_mode_t *m)
{
    return m->k ? m->k : s_opt.combinations;
}

static FILE *s_csv;
static int s_failures;
/* ms per image, from the after_current_image rows: such a combination stops
 * right after recording an image, so (stopped_at - started_at) / images is
 * its own pace under this load */
static bench_series_t s_image_ms;

static void s_csv_row(const bench_mode_t *m, int measure, const char *job, int comb, double ms)
{
    if (comb >= 0)
        fprintf(s_csv, "%s,%s,%s,%d,%.3f\n", m->name, s_measure[measure], job, comb, ms);
    else
        fprintf(s_csv, "%s,%s,%s,,%.3f\n", m->name, s_measure[measure], job, ms);
}

static void s_fail(const bench_mode_t *m, const char *job, json_t *doc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s job %s: ", m->name, job ? job : "-");
    vfprintf(stderr, fmt, ap);
    if (m->cross)
        fprintf(stderr, " (server logs %s, %s)\n", s_srv[SRV_A].log, s_srv[SRV_B].log);
    else
        fprintf(stderr, " (server log %s)\n", s_srv[m->server].log);
    va_end(ap);
    if (doc) {
        char *text = json_dumps(doc, JSON_COMPACT);
        if (text)
            fprintf(stderr, "  GET: %.4000s\n", text);
        free(text);
    }
    s_failures++;
}

/* GET /api/jobs/{id}: the document (caller owns), or NULL. */
static json_t *s_get_job(int port, const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s", id);
    api_response_t r;
    if (api_request(port, "GET", path, NULL, NULL, 0, &r) < 0)
        return NULL;
    json_t *j = r.status == 200 ? json_incref(r.json) : NULL;
    api_response_free(&r);
    return j;
}

static bool s_all_processing(json_t *job, int k)
{
    if (strcmp(s_jstr(job, "job_status"), "processing") != 0)
        return false;
    json_t *combos = json_object_get(job, "combinations");
    if (json_array_size(combos) != (size_t)k)
        return false;
    size_t i;
    json_t *c;
    json_array_foreach(combos, i,
                       c) if (strcmp(s_jstr(c, "status"), "processing") != 0) return false;
    return true;
}

/* Everything a cancelled job must hold; records its samples. Returns 0, or
 * -1 (reported) when something is off. */
static int s_check_and_record(bench_mode_t *m, const char *id, json_t *job, json_int_t at_cancel)
{
    int k = s_k(m);
    if (strcmp(s_jstr(job, "job_status"), "user_cancelled") != 0) {
        s_fail(m, id, job, "ended %s, not user_cancelled", s_jstr(job, "job_status"));
        return -1;
    }
    json_int_t done = json_integer_value(json_object_get(job, "completed_images"));
    json_t *ids = json_object_get(job, "generated_attach_ids");
    json_t *combos = json_object_get(job, "combinations");
    json_int_t sum = 0;
    size_t i;
    json_t *c;
    json_array_foreach(combos, i, c) sum +=
        json_integer_value(json_object_get(c, "completed_images"));
    if (!json_is_array(ids) || (json_int_t)json_array_size(ids) != done || sum != done
        || json_array_size(combos) != (size_t)k) {
        s_fail(m, id, job,
               "inconsistent counts: completed_images %lld, %zu attach ids, "
               "%lld over %zu combinations",
               (long long)done, json_array_size(ids), (long long)sum, json_array_size(combos));
        return -1;
    }
    /* each combination may finish at most the image it had in flight (or
     * was recording) when the cancel was written */
    if (done < at_cancel || done > at_cancel + k) {
        s_fail(m, id, job,
               "%lld images at the cancel, %lld at the end: more than one per "
               "combination after the cancel, or fewer",
               (long long)at_cancel, (long long)done);
        return -1;
    }
    int64_t req = bench_iso_us(json_string_value(json_object_get(job, "cancel_requested_at")));
    int64_t fin = bench_iso_us(json_string_value(json_object_get(job, "finished_at")));
    if (req < 0 || fin < req) {
        s_fail(m, id, job, "cancel_requested_at/finished_at missing or out of order");
        return -1;
    }
    /* check every combination before recording any of them */
    json_array_foreach(combos, i, c)
    {
        int64_t obs = bench_iso_us(json_string_value(json_object_get(c, "cancel_observed_at")));
        int64_t stop = bench_iso_us(json_string_value(json_object_get(c, "stopped_at")));
        if (strcmp(s_jstr(c, "status"), "cancelled") != 0 || obs < 0 || stop < 0) {
            s_fail(m, id, job, "combination %zu ended %s, observed %s, stopped %s", i,
                   s_jstr(c, "status"), obs < 0 ? "never" : "yes", stop < 0 ? "never" : "yes");
            return -1;
        }
        if (obs < req || stop < obs || fin < stop) {
            s_fail(m, id, job,
                   "combination %zu: timestamps out of order (requested %lld, "
                   "observed %+lld us, stopped %+lld us, finished %+lld us)",
                   i, (long long)req, (long long)(obs - req), (long long)(stop - req),
                   (long long)(fin - req));
            return -1;
        }
    }
    json_array_foreach(combos, i, c)
    {
        int64_t obs = bench_iso_us(json_string_value(json_object_get(c, "cancel_observed_at")));
        int64_t stop = bench_iso_us(json_string_value(json_object_get(c, "stopped_at")));
        bench_push(&m->m[M_PROPAGATION], (double)(obs - req) / 1e3);
        bench_push(&m->m[M_STOP], (double)(stop - req) / 1e3);
        s_csv_row(m, M_PROPAGATION, id, (int)i, (double)(obs - req) / 1e3);
        s_csv_row(m, M_STOP, id, (int)i, (double)(stop - req) / 1e3);
        int64_t started = bench_iso_us(json_string_value(json_object_get(c, "started_at")));
        json_int_t n = json_integer_value(json_object_get(c, "completed_images"));
        if (m->body && started > 0 && n > 0)
            bench_push(&s_image_ms, (double)(stop - started) / 1e3 / (double)n);
    }
    bench_push(&m->m[M_ENDED], (double)(fin - req) / 1e3);
    s_csv_row(m, M_ENDED, id, -1, (double)(fin - req) / 1e3);
    return 0;
}

/* One job of mode m: submit, wait until every combination runs, wait a
 * random moment, cancel, read it back until it ends, check, record. */
static void s_run_job(bench_mode_t *m, int round, unsigned *rng)
{
    int port = s_srv[m->server].port, k = s_k(m);
    char body[4096];
    int n = snprintf(body, sizeof body,
                     "{\"prompt\":\"cancel-latency %s round %d\","
                     "\"combinations\":[",
                     m->name, round);
    for (int i = 0; i < k; i++)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s{\"seed\":%d}", i ? "," : "",
                      round * 64 + i + 1);
    snprintf(body + n, sizeof body - (size_t)n,
             "],\"images_per_combination\":%d,"
             "\"width\":%d,\"height\":%d,\"steps\":%d}",
             s_opt.images, s_opt.size, s_opt.size, s_opt.steps);
    api_response_t r;
    if (api_request(port, "POST", "/api/jobs", "Content-Type: application/json\r\n", body,
                    strlen(body), &r)
            < 0
        || r.status != 201) {
        s_fail(m, NULL, r.json, "create: HTTP %d %s", r.status, r.body ? r.body : "");
        api_response_free(&r);
        m->broken = true;
        return;
    }
    char id[64];
    snprintf(id, sizeof id, "%s", s_jstr(r.json, "job_id"));
    api_response_free(&r);
    m->jobs++;

    /* every combination claimed and running */
    double deadline = bench_mono() + 30;
    json_t *job = NULL;
    for (;;) {
        job = s_get_job(port, id);
        if (job && s_all_processing(job, k))
            break;
        if (bench_mono() > deadline) {
            s_fail(m, id, job, "its %d combinations were not all processing within 30 s", k);
            json_decref(job);
            m->broken = true;
            return;
        }
        json_decref(job);
        bench_sleep(0.005);
    }
    json_decref(job);

    /* a random moment within the images in flight */
    bench_sleep((double)(rand_r(rng) % ((unsigned)s_opt.delay_max_ms * 1000 + 1)) / 1e6);

    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    const char *hdr = m->body ? "Content-Type: application/json\r\n" : NULL;
    double t0 = bench_mono();
    int rc = api_request(port, "POST", path, hdr, m->body, m->body ? strlen(m->body) : 0, &r);
    double t1 = bench_mono();
    if (rc < 0 || r.status != 200 || !json_is_true(json_object_get(r.json, "success"))
        || strcmp(s_jstr(r.json, "current_status"), "processing") != 0) {
        s_fail(m, id, r.json, "cancel answered HTTP %d %s", r.status, r.body ? r.body : "");
        api_response_free(&r);
        m->failed++;
        m->broken = true; /* its generators may still be busy with this job */
        return;
    }
    json_int_t at_cancel = json_integer_value(json_object_get(r.json, "completed_images"));
    api_response_free(&r);

    /* read it back until it ends; the interval grows with the wait so the
     * polling neither loads the server nor blurs a short stop */
    deadline = t0 + 60;
    for (;;) {
        job = s_get_job(port, id);
        const char *st = job ? s_jstr(job, "job_status") : "";
        if (!strcmp(st, "user_cancelled") || !strcmp(st, "completed") || !strcmp(st, "failed"))
            break;
        double now = bench_mono();
        if (now > deadline) {
            s_fail(m, id, job, "still %s 60 s after its cancel", st);
            json_decref(job);
            m->broken = true;
            m->failed++;
            return;
        }
        json_decref(job);
        double wait = (now - t0) / 20;
        bench_sleep(wait < 0.001 ? 0.001 : wait > 0.010 ? 0.010 : wait);
    }
    double t2 = bench_mono();
    if (s_check_and_record(m, id, job, at_cancel) == 0) {
        bench_push(&m->m[M_RESPONSE], (t1 - t0) * 1e3);
        bench_push(&m->m[M_CANCELLED], (t2 - t0) * 1e3);
        s_csv_row(m, M_RESPONSE, id, -1, (t1 - t0) * 1e3);
        s_csv_row(m, M_CANCELLED, id, -1, (t2 - t0) * 1e3);
    } else {
        m->failed++;
    }
    json_decref(job);
}

static void s_quiet(void *arg, const char *message) {}

/* --modes: which rows this run measures. */
static void s_select_modes(void)
{
    for (size_t i = 0; i < NMODES; i++)
        s_modes[i].on = s_opt.modes == NULL;
    if (!s_opt.modes)
        return;
    char *list = strdup(s_opt.modes), *save = NULL;
    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        size_t i = 0;
        while (i < NMODES && strcmp(s_modes[i].name, t) != 0)
            i++;
        if (i == NMODES) {
            fprintf(stderr, "cancel-latency: no mode \"%s\" (see --help)\n", t);
            exit(2);
        }
        s_modes[i].on = true;
    }
    free(list);
}

/* ================================================================ report */

/* The 1-minute load average: how busy the machine was besides us. */
static char s_load_start[16];

static const char *s_loadavg(void)
{
    static char buf[16];
    snprintf(buf, sizeof buf, "?");
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%15s", buf) != 1)
            snprintf(buf, sizeof buf, "?");
        fclose(f);
    }
    return buf;
}

static void s_machine(void)
{
    char model[256] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "model name", 10) == 0) {
                char *v = strchr(line, ':');
                if (v) {
                    v += 1 + strspn(v + 1, " \t");
                    v[strcspn(v, "\n")] = 0;
                    snprintf(model, sizeof model, "%s", v);
                }
                break;
            }
        fclose(f);
    }
    printf("machine: %ld cores, %s, load average %s at the start, %s at the end\n",
           sysconf(_SC_NPROCESSORS_ONLN), model, s_load_start, s_loadavg());
}

static void s_floor_row(const char *what, bench_series_t *s)
{
    bench_sort(s);
    printf("  %-38s %6zu %9.3f %9.3f %9.3f %9.3f\n", what, s->n, bench_pct(s, .5), bench_pct(s, .9),
           bench_pct(s, .99), s->n ? s->v[s->n - 1] : NAN);
}

static int s_plot(void)
{
    char cmd[3 * PATH_MAX];
    const char *script = BENCH_SRCDIR "/cancel-latency.sh";
    if (access(script, X_OK) != 0)
        script = "bench/cancel-latency.sh";
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s' >&2", script, s_opt.csv, s_opt.plot);
    if (strchr(s_opt.csv, '\'') || strchr(s_opt.plot, '\'')) {
        fprintf(stderr, "cancel-latency: no quotes in --csv or --plot, please\n");
        return -1;
    }
    int rc = system(cmd);
    if (rc != 0) {
        fprintf(stderr, "cancel-latency: plotting failed (%s)\n", cmd);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    s_parse_args(argc, argv);
    s_select_modes();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    atexit(s_stop_servers_at_exit);
    log_set_level(LOG_WARN);
    double t_start = bench_mono();
    snprintf(s_load_start, sizeof s_load_start, "%s", s_loadavg());

    if (mkdir(s_opt.logs, 0755) < 0 && errno != EEXIST)
        s_die("cannot create %s: %s", s_opt.logs, strerror(errno));
    s_csv = fopen(s_opt.csv, "w");
    if (!s_csv)
        s_die("cannot write %s: %s", s_opt.csv, strerror(errno));
    fprintf(s_csv, "mode,measure,job_id,combination,ms\n");

    /* the databases: one per group of instances, and only the instances
     * the selected modes use */
    PGconn *db = PQconnectdb(s_opt.database);
    if (PQstatus(db) != CONNECTION_OK)
        s_die("PostgreSQL: %s", PQerrorMessage(db));
    PQsetNoticeProcessor(db, s_quiet, NULL); /* "does not exist, skipping" */
    bool use[SRV_COUNT] = {0};
    for (size_t i = 0; i < NMODES; i++)
        if (s_modes[i].on)
            use[s_modes[i].server] = use[s_modes[i].cross ? SRV_B : s_modes[i].server] = true;
    snprintf(s_srv[SRV_EVENT].database, sizeof s_srv[SRV_EVENT].database, "%s", s_opt.database);
    if (use[SRV_POLL])
        s_scratch_db(db, "poll", s_srv[SRV_POLL].database, sizeof s_srv[SRV_POLL].database);
    if (use[SRV_A]) {
        s_scratch_db(db, "cross", s_srv[SRV_A].database, sizeof s_srv[SRV_A].database);
        snprintf(s_srv[SRV_B].database, sizeof s_srv[SRV_B].database, "%s", s_srv[SRV_A].database);
    }
    for (int i = SRV_PERGEN; i < SRV_COUNT; i++) /* a database each: none claims another's work */
        if (use[i])
            s_scratch_db(db, s_srv[i].name, s_srv[i].database, sizeof s_srv[i].database);
    s_srv[SRV_EVENT].generators = s_srv[SRV_POLL].generators = s_srv[SRV_B].generators =
        s_srv[SRV_PERGEN].generators = s_opt.combinations;
    s_srv[SRV_A].generators = 0;
    for (int i = 0; i < SRV_COUNT; i++)
        if (use[i])
            s_start_server(&s_srv[i]);

    /* the floors, with the servers up and idle */
    bench_series_t f_redis = {0}, f_inproc = {0}, f_pg = {0};
    s_redis_floor(&f_redis);
    s_inproc_floor(&f_inproc);
    s_pg_floor(db, &f_pg);
    PQfinish(db);

    /* the modes take turns, job by job */
    unsigned rng = s_opt.seed;
    for (int round = 0; round < s_opt.jobs; round++)
        for (size_t i = 0; i < NMODES; i++)
            if (s_modes[i].on && !s_modes[i].broken)
                s_run_job(&s_modes[i], round, &rng);

    for (int i = SRV_COUNT; i-- > 0;) {
        if (!use[i])
            continue;
        int st = api_stop(s_srv[i].pid, 20);
        s_pids[i] = 0;
        if (st != 0) {
            fprintf(stderr, "FAIL the %s server exited with %d on SIGTERM (see %s)\n",
                    s_srv[i].name, st, s_srv[i].log);
            s_failures++;
        }
    }
    for (size_t i = 0; i < f_redis.n; i++)
        fprintf(s_csv, "floor,redis_publish,,,%.4f\n", f_redis.v[i]);
    for (size_t i = 0; i < f_inproc.n; i++)
        fprintf(s_csv, "floor,inproc_oneway,,,%.4f\n", f_inproc.v[i]);
    for (size_t i = 0; i < f_pg.n; i++)
        fprintf(s_csv, "floor,postgres_update,,,%.4f\n", f_pg.v[i]);
    if (fclose(s_csv) != 0)
        s_die("writing %s failed", s_opt.csv);
    int plot_rc = s_opt.plot ? s_plot() : 0;

    /* ------------------------------------------------------------ the table */
    printf("cancel-latency: %d jobs per mode, %d combinations (8 in the /8 rows) x %d images of "
           "%dx%d, %d steps, "
           "cancel 0..%d ms after all run, backend %s, seed %u\n",
           s_opt.jobs, s_opt.combinations, s_opt.images, s_opt.size, s_opt.size, s_opt.steps,
           s_opt.delay_max_ms, s_opt.backend, s_opt.seed);
    s_machine();
    printf("\n%-33s %-12s %6s %9s %9s %9s %9s\n", "mode", "measure (ms)", "n", "p50", "p90", "p99",
           "max");
    for (size_t i = 0; i < NMODES; i++) {
        bench_mode_t *m = &s_modes[i];
        if (!m->on)
            continue;
        char jobs[64];
        snprintf(jobs, sizeof jobs, "  %d jobs, %d failed", m->jobs, m->failed);
        for (int k = 0; k < M_COUNT; k++) {
            bench_series_t *s = &m->m[k];
            bench_sort(s);
            printf("%-33s %-12s %6zu %9.3f %9.3f %9.3f %9.3f\n",
                   k == 0   ? m->name
                   : k == 1 ? jobs
                            : "",
                   s_measure[k], s->n, bench_pct(s, .5), bench_pct(s, .9), bench_pct(s, .99),
                   s->n ? s->v[s->n - 1] : NAN);
        }
    }
    printf("\nmeasures:\n");
    for (int k = 0; k < M_COUNT; k++)
        printf("  %-12s %s\n", s_measure[k], s_measure_what[k]);

    printf("\nfloors (ms)                              %6s %9s %9s %9s %9s\n", "n", "p50", "p90",
           "p99", "max");
    s_floor_row("redis PUBLISH -> subscriber", &f_redis);
    s_floor_row("inproc mailbox one-way (runtime)", &f_inproc);
    s_floor_row("postgres UPDATE round trip", &f_pg);

    bench_mode_t *ev = &s_modes[MODE_EVENT], *poll = &s_modes[MODE_POLL],
                 *xev = &s_modes[MODE_CROSS];
    double ev99 = bench_pct(&ev->m[M_STOP], .99);
    printf("\n%-33s %16s %16s %16s\n", "mode", "stop p99 / event", "prop p99/inproc",
           "prop p99/redis");
    for (size_t i = 0; i < NMODES; i++) {
        bench_mode_t *m = &s_modes[i];
        if (!m->on)
            continue;
        double p99 = bench_pct(&m->m[M_PROPAGATION], .99);
        printf("%-33s %15.1fx %15.0fx %15.1fx\n", m->name, bench_pct(&m->m[M_STOP], .99) / ev99,
               p99 / bench_pct(&f_inproc, .99), p99 / bench_pct(&f_redis, .99));
    }
    printf("(stop p99 / event: over event/immediate's; prop p99: over the floor's p99)\n");

    /* issue 17: the same rows with the shared compute pool and without it */
    const struct {
        int with, without;
    } pairs[] = {{MODE_EVENT, MODE_PERGEN}, {MODE_EVENT8, MODE_PERGEN8}};
    bool pooled = false;
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
        pooled |= s_modes[pairs[i].with].on && s_modes[pairs[i].without].on;
    if (pooled) {
        printf("\nevent/immediate, compute pool vs none (per-generator: each generator "
               "computes on its own thread, as before the pool), %ld cores:\n",
               sysconf(_SC_NPROCESSORS_ONLN));
        printf("  %-11s %14s %14s %8s %14s %14s\n", "generators", "stop p99 pool", "stop p99 none",
               "none/pool", "prop p99 pool", "prop p99 none");
        for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
            bench_mode_t *w = &s_modes[pairs[i].with], *wo = &s_modes[pairs[i].without];
            if (!w->on || !wo->on)
                continue;
            double a = bench_pct(&w->m[M_STOP], .99), b = bench_pct(&wo->m[M_STOP], .99);
            printf("  %-11d %11.3f ms %11.3f ms %7.1fx %11.3f ms %11.3f ms\n", s_k(w), a, b, b / a,
                   bench_pct(&w->m[M_PROPAGATION], .99), bench_pct(&wo->m[M_PROPAGATION], .99));
        }
    }

    /* the aims, measured against this run */
    bench_sort(&s_image_ms);
    double image = bench_pct(&s_image_ms, .5), step = image / s_opt.steps;
    double poll99 = bench_pct(&poll->m[M_STOP], .99);
    printf("\naims");
    if (s_image_ms.n)
        printf(" (one step under this load ~%.2f ms: median image %.1f ms in the "
               "after_current_image rows / %d steps)",
               step, image, s_opt.steps);
    printf(":\n");
    if (ev->on && s_image_ms.n)
        printf("  event/immediate stop p99 <= one step + 2 ms:  %.3f ms vs %.3f ms  %s\n", ev99,
               step + 2, ev99 <= step + 2 ? "met" : "MISSED");
    if (ev->on && poll->on)
        printf("  poll stop p99 >= 50x event/immediate:         %.1fx  %s\n", poll99 / ev99,
               poll99 >= 50 * ev99 ? "met" : "MISSED");
    if (ev->on) {
        double p = bench_pct(&ev->m[M_PROPAGATION], .99);
        printf("  propagation p99 same-instance < 1 ms:         %.3f ms  %s\n", p,
               p < 1 ? "met" : "MISSED");
    }
    if (xev->on) {
        double p = bench_pct(&xev->m[M_PROPAGATION], .99), fl = bench_pct(&f_redis, .99);
        printf("  propagation p99 cross-instance <= 3x Redis floor p99: %.3f ms = %.1fx  %s\n", p,
               p / fl, p <= 3 * fl ? "met" : "MISSED");
        printf("  propagation p99 cross-instance <= Redis floor p99 + 1 ms: %.3f vs %.3f ms  %s\n",
               p, fl + 1, p <= fl + 1 ? "met" : "MISSED");
    }
    /* issue 17: stop p99 <= 1 ms with the pool, with K and with 8 generators */
    const int pool_rows[] = {MODE_EVENT, MODE_EVENT8};
    for (size_t i = 0; i < sizeof pool_rows / sizeof *pool_rows; i++) {
        bench_mode_t *m = &s_modes[pool_rows[i]];
        if (!m->on)
            continue;
        double p = bench_pct(&m->m[M_STOP], .99), q = bench_pct(&m->m[M_PROPAGATION], .99);
        printf("  stop p99 <= 1 ms, %d generators on %ld cores (pool): %.3f ms  %s"
               "  (propagation p99 %.3f ms  %s)\n",
               s_k(m), sysconf(_SC_NPROCESSORS_ONLN), p, p <= 1 ? "met" : "MISSED", q,
               q <= 1 ? "met" : "MISSED");
    }

    int jobs = 0;
    for (size_t i = 0; i < NMODES; i++)
        jobs += s_modes[i].jobs;
    printf("\n%d jobs, %d problems; samples in %s%s%s; server logs in %s/; %.0f s\n", jobs,
           s_failures, s_opt.csv, s_opt.plot ? ", plot in " : "", s_opt.plot ? s_opt.plot : "",
           s_opt.logs, bench_mono() - t_start);
    if (s_failures)
        printf("RESULT: FAILED (%d problems, listed on stderr)\n", s_failures);
    if (ev->on && poll->on)
        printf("stop p99 ratio poll/event: %.1f\n", poll99 / ev99);
    fflush(stdout);
    return s_failures || plot_rc ? 1 : 0;
}
