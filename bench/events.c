/*
 * bench/events.c - how fast a recorded image reaches the clients of its
 * job's event stream, on this instance and across instances, beside the
 * Redis pub/sub floor; and what an open stream costs the server in memory.
 *
 * One fresh database DBNAME_events, two instances on it: A (--generators
 * 2) makes every image, B (--generators 0) only serves. For 1, 100 and
 * 1,000 streams, read from A (same instance) and then from B (cross
 * instance: each event comes through Redis, imagejobs:events):
 *   - a "blocker" job holds A's two generators, so that the measured job
 *     stays pending while its streams open;
 *   - the event clock is read from the hello of GET /api/events, the job
 *     is created, and N streams GET /api/jobs/{id}/events open with
 *     Last-Event-ID = that clock, so every one of its events reaches every
 *     stream; the server's VmRSS is read before and once every stream has
 *     its snapshot and sits idle (memory per stream);
 *   - the blocker is cancelled, A's generators make the job's images, and
 *     one epoll loop reads every stream (a minimal non-blocking HTTP/1.1
 *     chunked + text/event-stream reader), stamping each read with
 *     CLOCK_REALTIME;
 *   - latency = that stamp - attachments.created_at, which is the
 *     clock_timestamp() of the attachment's insert inside the recording
 *     transaction, just before its COMMIT: the commit, the publish, Redis
 *     (cross), the feed, the fan-out, the kernel and this reader are all
 *     inside it.
 * The floor: PUBLISH -> a subscriber on the same Redis (sync hiredis, one
 * message at a time, the send time in the payload), paced at the rate the
 * images came. It checks its own results: every stream got every image of
 * its job exactly once, in the order of the event clock, and an `end`;
 * every job completed with all its images; every server exits 0 on
 * SIGTERM. Anything else fails the run (exit 1).
 *
 *   cmd/imagejobs-local bench events [--quick] [options]
 */
#include "config.h"

#include "bench/util.h"

#include "tests/api_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct {
    bool quick;
    int combos, images; /* the measured job: combos x images, 64x64, 2 steps */
    int floor_n;
    const char *logs, *redis, *database, *csv;
} s_opt = {.combos = 4, .images = 100, .floor_n = 2000};

static const int STREAMS[] = {1, 100, 1000};
#define NROWS_N (sizeof STREAMS / sizeof STREAMS[0])
#define OPEN_AT_ONCE 128 /* streams connecting or waiting for their snapshot */
#define WAIT_S 120.0     /* for any one phase of a row */

static int s_failures;
static FILE *s_csv; /* --csv */

static void s_usage(FILE *f)
{
    fprintf(f, "usage: bench/events [options]\n"
               "       (run it as: cmd/imagejobs-local bench events [options])\n"
               "\n"
               "  --quick            a small run (under a minute): 2 x 60 images a job\n"
               "  --combinations N   of the measured job (default 4; 2 with --quick)\n"
               "  --images N         per combination (default 100; 60 with --quick)\n"
               "  --floor N          Redis floor samples (default 2000)\n"
               "  --logs DIR         the servers' logs (default: bench/events-logs in the\n"
               "                     build tree)\n"
               "  --redis URL        default $IMAGEJOBS_BENCH_REDIS\n"
               "  --database CONNINFO default $IMAGEJOBS_BENCH_DATABASE; the instances\n"
               "                     share DBNAME_events in the same server, created afresh\n"
               "  --csv FILE         every sample: streams,instance,stream,image,created_us,\n"
               "                     received_us (image = its rank on the event clock)\n"
               "The imagejobs binary comes from $IMAGEJOBS_BIN.\n");
}

static int s_parse_int(const char *what, const char *v, int lo, int hi)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || end == v || n < lo || n > hi) {
        fprintf(stderr, "events: %s must be an integer from %d to %d\n", what, lo, hi);
        exit(2);
    }
    return (int)n;
}

static void s_parse_args(int argc, char **argv)
{
    enum { O_COMBOS = 256, O_IMAGES, O_FLOOR, O_LOGS, O_REDIS, O_DB, O_CSV };
    static const struct option longs[] = {
        {"quick", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"combinations", required_argument, NULL, O_COMBOS},
        {"images", required_argument, NULL, O_IMAGES},
        {"floor", required_argument, NULL, O_FLOOR},
        {"logs", required_argument, NULL, O_LOGS},
        {"redis", required_argument, NULL, O_REDIS},
        {"database", required_argument, NULL, O_DB},
        {"csv", required_argument, NULL, O_CSV},
        {NULL, 0, NULL, 0},
    };
    /* --quick first, so that explicit options given with it win */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0) {
            s_opt.quick = true;
            s_opt.combos = 2;
            s_opt.images = 60;
        }
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'q':
            break;
        case 'h':
            s_usage(stdout);
            exit(0);
        case O_COMBOS:
            s_opt.combos = s_parse_int("--combinations", optarg, 1, 64);
            break;
        case O_IMAGES:
            s_opt.images = s_parse_int("--images", optarg, 1, 100);
            break;
        case O_FLOOR:
            s_opt.floor_n = s_parse_int("--floor", optarg, 10, 1000000);
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
        case O_CSV:
            s_opt.csv = optarg;
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
    bench_services("events", &s_opt.redis, &s_opt.database, &s_opt.logs);
}

/* ================================================================ helpers */

static void s_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "events: ");
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

static void *s_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

/* Wall-clock µs: the same clock as PostgreSQL's clock_timestamp(). */
static int64_t s_real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
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

/* VmRSS of pid in bytes, or -1. */
static long s_rss(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* CPU time (user + system, clock ticks) of process pid (0: this one). */
static long long s_cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    if (pid)
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    else
        snprintf(path, sizeof path, "/proc/self/stat");
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command may hold spaces */
    unsigned long long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (long long)(ut + st);
}

/* Busy CPU time of the whole machine (clock ticks, every core). */
static long long s_busy_ticks(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    unsigned long long v[8] = {0};
    int k = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (k != 8)
        return 0;
    return (long long)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]); /* all but idle, iowait */
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

/* ================================================================ servers */

enum { SRV_A, SRV_B, NSRV };

typedef struct {
    char name[32];
    int port;
    pid_t pid;
    char log[PATH_MAX];
} server_t;

static server_t s_srv[NSRV];
static volatile sig_atomic_t s_pids[NSRV];

static void s_on_signal(int sig)
{
    for (int i = 0; i < NSRV; i++)
        if (s_pids[i] > 0)
            kill((pid_t)s_pids[i], SIGTERM);
    _exit(128 + sig);
}

static void s_stop_servers_at_exit(void)
{
    for (int i = 0; i < NSRV; i++)
        if (s_pids[i] > 0)
            api_stop((pid_t)s_pids[i], 10);
}

static void s_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* Drops and creates DBNAME_events next to the main database; its conninfo
 * (the main one with dbname replaced) into out. */
static void s_fresh_db(PGconn *admin, char *out, size_t len)
{
    char name[256], sql[600];
    if (strstr(s_opt.database, "://"))
        s_die("--database must be a key=value conninfo, not a URI");
    snprintf(name, sizeof name, "%s_events", PQdb(admin));
    char *ident = PQescapeIdentifier(admin, name, strlen(name));
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", ident);
    PQclear(s_sql(admin, sql, 0, NULL));
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", ident);
    PQclear(s_sql(admin, sql, 0, NULL));
    PQfreemem(ident);
    /* a conninfo string: a later dbname keyword wins over an earlier one */
    if ((size_t)snprintf(out, len, "%s dbname='%s'", s_opt.database, name) >= len)
        s_die("database conninfo too long");
}

static void s_start(int i, const char *name, int generators, const char *database)
{
    server_t *s = &s_srv[i];
    char gens[16];
    snprintf(gens, sizeof gens, "%d", generators);
    snprintf(s->name, sizeof s->name, "%s", name);
    if (snprintf(s->log, sizeof s->log, "%s/%s.log", s_opt.logs, name) >= (int)sizeof s->log)
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
static int s_create(int i, const char *tag, int combos, int size, int steps, int images, char *id,
                    size_t idlen)
{
    char body[4096];
    int n = snprintf(body, sizeof body, "{\"prompt\":\"events %s\",\"combinations\":[", tag);
    for (int k = 0; k < combos; k++)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s{\"seed\":%d}", k ? "," : "", k + 1);
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

/* Polls `sql` (one integer, $1 = id) until it returns want. */
static int s_wait(PGconn *db, const char *sql, const char *id, long want, double timeout_s,
                  const char *what)
{
    double deadline = bench_mono() + timeout_s;
    const char *p[1] = {id};
    for (;;) {
        PGresult *r = s_sql(db, sql, 1, p);
        long v = PQntuples(r) ? atol(PQgetvalue(r, 0, 0)) : -1;
        PQclear(r);
        if (v == want)
            return 0;
        if (bench_mono() > deadline) {
            s_fail("%s %s: not done within %.0f s", what, id, timeout_s);
            return -1;
        }
        bench_sleep(0.005);
    }
}

static const char *const SQL_TASKS_PROCESSING =
    "SELECT count(*) FROM job_tasks WHERE job_id = $1 AND status = 'processing'";
static const char *const SQL_JOB_ENDED = "SELECT count(*) FROM jobs WHERE id = $1 "
                                         "AND status IN ('completed', 'user_cancelled', 'failed')";

/* ================================================================ attach ids */

/* Every attachment id seen on any stream of a row, interned to a small
 * index: a stream records (index, time), 12 bytes an event. */
#define ID_LEN 36
static struct {
    char (*ids)[ID_LEN + 1];
    int *slots; /* open addressing: index + 1, 0 = empty */
    size_t n, cap, nslots;
} s_ids;

static uint32_t s_hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

static void s_ids_reset(void)
{
    free(s_ids.ids);
    free(s_ids.slots);
    memset(&s_ids, 0, sizeof s_ids);
    s_ids.nslots = 1 << 14;
    s_ids.slots = calloc(s_ids.nslots, sizeof *s_ids.slots);
    if (!s_ids.slots)
        abort();
}

/* The index of id (n bytes), added when add; -1 when absent or malformed. */
static int s_intern(const char *id, size_t n, bool add)
{
    if (n != ID_LEN)
        return -1;
    size_t mask = s_ids.nslots - 1, k = s_hash(id, n) & mask;
    for (; s_ids.slots[k]; k = (k + 1) & mask)
        if (memcmp(s_ids.ids[s_ids.slots[k] - 1], id, n) == 0)
            return s_ids.slots[k] - 1;
    if (!add || s_ids.n >= s_ids.nslots / 2)
        return -1; /* 8,192 ids a row at most: far more than a job makes */
    if (s_ids.n == s_ids.cap) {
        s_ids.cap = s_ids.cap ? 2 * s_ids.cap : 512;
        s_ids.ids = s_xrealloc(s_ids.ids, s_ids.cap * sizeof *s_ids.ids);
    }
    memcpy(s_ids.ids[s_ids.n], id, n);
    s_ids.ids[s_ids.n][n] = 0;
    s_ids.slots[k] = (int)++s_ids.n;
    return (int)s_ids.n - 1;
}

/* ================================================================ SSE reader */

/* One stream: a non-blocking socket, an HTTP/1.1 response head, a chunked
 * (or close-delimited) body and, inside it, text/event-stream lines. Only
 * what the bench needs is kept: `snapshot`, `hello`, the attach_id of each
 * `image`, `end`. */
typedef enum {
    C_IDLE /* not started */,
    C_CONNECTING,
    C_HEAD,
    C_BODY,
    C_DONE,
    C_FAILED
} conn_state_t;
typedef enum { CH_SIZE, CH_DATA, CH_CRLF, CH_TRAILER } chunk_state_t;

typedef struct {
    int idx;
    int64_t us;
} rec_t;

typedef struct {
    int fd;
    conn_state_t state;
    char req[512];
    char *buf; /* received, not yet parsed */
    size_t len, cap;
    bool chunked;
    chunk_state_t cs;
    size_t chunk_left;
    char *line; /* the event-stream line being read */
    size_t llen, lcap;
    char event[32];
    char *data; /* the event's data lines */
    size_t dlen, dcap;
    bool snapshot, ended;
    char *hello; /* data of the hello event (malloc'd) */
    rec_t *recs;
    size_t nrec, crec;
    size_t bad_ids; /* image events whose attach_id could not be read */
    size_t after_end;
    char err[160];
} conn_t;

typedef struct {
    int ep;
    conn_t *c;
    size_t n;
    size_t next_open; /* streams [0, next_open) were started */
    size_t opening;   /* started, no snapshot (or hello) yet, not finished */
    size_t snapshots, finished;
    int port;
} streams_t;

static void s_conn_fail(streams_t *st, conn_t *c, const char *fmt, ...)
{
    if (c->state == C_FAILED || c->state == C_DONE)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    if (!c->snapshot && !c->hello)
        st->opening--;
    c->state = C_FAILED;
    st->finished++;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void s_conn_done(streams_t *st, conn_t *c)
{
    if (!c->snapshot && !c->hello)
        st->opening--;
    c->state = C_DONE;
    st->finished++;
    close(c->fd);
    c->fd = -1;
}

static void s_append(char **p, size_t *len, size_t *cap, const char *src, size_t n)
{
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *p = s_xrealloc(*p, *cap);
    }
    memcpy(*p + *len, src, n);
    *len += n;
    (*p)[*len] = 0;
}

/* The value of "attach_id":"..." in an image event's data. */
static int s_image_id(const char *data)
{
    const char *p = strstr(data, "\"attach_id\"");
    if (!p)
        return -1;
    p += strlen("\"attach_id\"");
    while (*p == ' ' || *p == ':')
        p++;
    if (*p++ != '"')
        return -1;
    const char *q = strchr(p, '"');
    return q ? s_intern(p, (size_t)(q - p), true) : -1;
}

static void s_dispatch(streams_t *st, conn_t *c, int64_t now)
{
    const char *ev = c->event[0] ? c->event : "message";
    if (!c->dlen) {
        c->event[0] = 0;
        return; /* the standard dispatches nothing without data */
    }
    if (c->ended)
        c->after_end++;
    if (strcmp(ev, "image") == 0) {
        int idx = s_image_id(c->data);
        if (idx < 0) {
            c->bad_ids++;
        } else {
            if (c->nrec == c->crec) {
                c->crec = c->crec ? 2 * c->crec : 256;
                c->recs = s_xrealloc(c->recs, c->crec * sizeof *c->recs);
            }
            c->recs[c->nrec++] = (rec_t){idx, now};
        }
    } else if (strcmp(ev, "snapshot") == 0 && !c->snapshot) {
        c->snapshot = true;
        st->opening--;
        st->snapshots++;
    } else if (strcmp(ev, "hello") == 0 && !c->hello) {
        c->hello = strdup(c->data);
        st->opening--;
        st->snapshots++;
    } else if (strcmp(ev, "end") == 0) {
        c->ended = true;
    }
    c->event[0] = 0;
    c->dlen = 0;
}

/* One complete event-stream line (without its end of line). */
static void s_line(streams_t *st, conn_t *c, const char *l, size_t n, int64_t now)
{
    if (n == 0) {
        s_dispatch(st, c, now);
        return;
    }
    if (l[0] == ':')
        return; /* a comment: ": keep-alive" */
    const char *colon = memchr(l, ':', n);
    size_t flen = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    if (v < l + n && *v == ' ')
        v++;
    size_t vlen = (size_t)(l + n - v);
    if (flen == 5 && memcmp(l, "event", 5) == 0) {
        size_t k = vlen < sizeof c->event - 1 ? vlen : sizeof c->event - 1;
        memcpy(c->event, v, k);
        c->event[k] = 0;
    } else if (flen == 4 && memcmp(l, "data", 4) == 0) {
        if (c->dlen)
            s_append(&c->data, &c->dlen, &c->dcap, "\n", 1);
        s_append(&c->data, &c->dlen, &c->dcap, v, vlen);
    }
    /* id and retry: not needed here */
}

/* Bytes of the event stream itself (the body, de-chunked). Lines end in
 * LF, CRLF or CR; the server writes LF. */
static void s_sse_feed(streams_t *st, conn_t *c, const char *p, size_t n, int64_t now)
{
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (c->llen == 0 && nl) {
            size_t k = take;
            if (k && p[k - 1] == '\r')
                k--;
            s_line(st, c, p, k, now); /* the whole line is here: no copy */
        } else {
            s_append(&c->line, &c->llen, &c->lcap, p, take);
            if (nl) {
                size_t k = c->llen;
                if (k && c->line[k - 1] == '\r')
                    k--;
                s_line(st, c, c->line, k, now);
                c->llen = 0;
            }
        }
        if (!nl)
            return;
        p = nl + 1;
        n -= take + 1;
    }
}

/* Parses what c->buf holds; leaves the incomplete tail there. */
static void s_parse(streams_t *st, conn_t *c, int64_t now)
{
    size_t off = 0;
    if (c->state == C_HEAD) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end) {
            if (c->len > 16384)
                s_conn_fail(st, c, "response head over 16 KiB");
            return;
        }
        *end = 0;
        int status = 0;
        if (sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1 || status != 200) {
            s_conn_fail(st, c, "HTTP %d: %.100s", status, end + 4);
            return;
        }
        for (char *h = c->buf; *h; h++)
            *h = (char)(*h >= 'A' && *h <= 'Z' ? *h + 32 : *h);
        c->chunked = strstr(c->buf, "\r\ntransfer-encoding: chunked") != NULL;
        if (!strstr(c->buf, "\r\ncontent-type: text/event-stream")) {
            s_conn_fail(st, c, "not text/event-stream");
            return;
        }
        off = (size_t)(end + 4 - c->buf);
        c->state = C_BODY;
    }
    while (c->state == C_BODY && off < c->len) {
        char *p = c->buf + off;
        size_t avail = c->len - off;
        if (!c->chunked) {
            s_sse_feed(st, c, p, avail, now);
            off = c->len;
            break;
        }
        if (c->cs == CH_SIZE) {
            char *crlf = memmem(p, avail, "\r\n", 2);
            if (!crlf) {
                if (avail > 64)
                    s_conn_fail(st, c, "malformed chunk size");
                break;
            }
            char *e;
            unsigned long sz = strtoul(p, &e, 16);
            if (e == p) {
                s_conn_fail(st, c, "malformed chunk size");
                break;
            }
            off += (size_t)(crlf + 2 - p);
            c->chunk_left = sz;
            c->cs = sz ? CH_DATA : CH_TRAILER;
            if (!sz) {
                /* the final chunk: the stream ended (its trailer is not read) */
                if (c->ended)
                    s_conn_done(st, c);
                else
                    s_conn_fail(st, c, "stream ended without an end event");
                return;
            }
        } else if (c->cs == CH_DATA) {
            size_t k = avail < c->chunk_left ? avail : c->chunk_left;
            s_sse_feed(st, c, p, k, now);
            off += k;
            c->chunk_left -= k;
            if (!c->chunk_left)
                c->cs = CH_CRLF;
        } else if (c->cs == CH_CRLF) {
            if (avail < 2)
                break;
            if (p[0] != '\r' || p[1] != '\n') {
                s_conn_fail(st, c, "no CRLF after a chunk");
                return;
            }
            off += 2;
            c->cs = CH_SIZE;
        }
    }
    if (c->state == C_FAILED || c->state == C_DONE)
        return;
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

static void s_conn_read(streams_t *st, conn_t *c)
{
    for (;;) {
        if (c->cap - c->len < 16384) {
            c->cap = c->cap ? 2 * c->cap : 32768;
            c->buf = s_xrealloc(c->buf, c->cap);
        }
        size_t room = c->cap - c->len - 1;
        ssize_t n = read(c->fd, c->buf + c->len, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0) {
            s_conn_fail(st, c, "read: %s", strerror(errno));
            return;
        }
        if (n == 0) {
            if (!c->chunked && c->state == C_BODY && c->ended)
                s_conn_done(st, c);
            else
                s_conn_fail(st, c, "closed by the server%s", c->ended ? " after end" : "");
            return;
        }
        int64_t now = s_real_us(); /* the receive time of every event in these bytes */
        c->len += (size_t)n;
        s_parse(st, c, now);
        /* epoll is level-triggered: a short read emptied the socket, and a
         * read only to hear EAGAIN would double the syscalls at 1,000
         * streams */
        if ((c->state != C_HEAD && c->state != C_BODY) || (size_t)n < room)
            return;
    }
}

static void s_conn_start(streams_t *st, size_t i)
{
    conn_t *c = &st->c[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    st->opening++;
    if (c->fd < 0) {
        s_conn_fail(st, c, "socket: %s", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)st->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        s_conn_fail(st, c, "connect: %s", strerror(errno));
        return;
    }
    c->state = C_CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u64 = i};
    if (epoll_ctl(st->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        s_conn_fail(st, c, "epoll_ctl: %s", strerror(errno));
}

/* The connection is up: send the request (it fits any socket buffer). */
static void s_conn_send(streams_t *st, conn_t *c, size_t i)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
        s_conn_fail(st, c, "connect: %s", strerror(err ? err : errno));
        return;
    }
    size_t n = strlen(c->req);
    if (write(c->fd, c->req, n) != (ssize_t)n) {
        s_conn_fail(st, c, "write: %s", strerror(errno));
        return;
    }
    c->state = C_HEAD;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i};
    epoll_ctl(st->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void s_streams_init(streams_t *st, size_t n, int port, const char *path, const char *last_id)
{
    memset(st, 0, sizeof *st);
    st->ep = epoll_create1(EPOLL_CLOEXEC);
    if (st->ep < 0)
        s_die("epoll_create1: %s", strerror(errno));
    st->c = calloc(n, sizeof *st->c);
    if (!st->c)
        abort();
    st->n = n;
    st->port = port;
    for (size_t i = 0; i < n; i++) {
        conn_t *c = &st->c[i];
        c->fd = -1;
        snprintf(c->req, sizeof c->req,
                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: text/event-stream\r\n"
                 "Cache-Control: no-cache\r\n%s%s%s\r\n",
                 path, port, last_id ? "Last-Event-ID: " : "", last_id ? last_id : "",
                 last_id ? "\r\n" : "");
    }
}

static void s_streams_free(streams_t *st)
{
    for (size_t i = 0; i < st->n; i++) {
        conn_t *c = &st->c[i];
        if (c->fd >= 0)
            close(c->fd);
        free(c->buf);
        free(c->line);
        free(c->data);
        free(c->hello);
        free(c->recs);
    }
    free(st->c);
    close(st->ep);
}

/* Runs the loop until every stream was started and has its first event
 * (snapshot or hello) or finished (want_end false), or until every stream
 * finished (want_end true); at most timeout_s. 0, or -1 on the timeout.
 * Streams are started OPEN_AT_ONCE at a time: a burst of 1,000 connects
 * would overflow the listen backlog and wait for SYN retries. */
static int s_pump(streams_t *st, bool want_end, double timeout_s)
{
    double deadline = bench_mono() + timeout_s;
    struct epoll_event evs[256];
    for (;;) {
        while (st->next_open < st->n && st->opening < OPEN_AT_ONCE)
            s_conn_start(st, st->next_open++);
        bool all_started = st->next_open == st->n;
        if (want_end ? st->finished == st->n : all_started && st->opening == 0)
            return 0;
        double left = deadline - bench_mono();
        if (left <= 0)
            return -1;
        int k = epoll_wait(st->ep, evs, 256, left > 0.1 ? 100 : (int)(left * 1000) + 1);
        if (k < 0 && errno != EINTR)
            s_die("epoll_wait: %s", strerror(errno));
        for (int j = 0; j < k; j++) {
            size_t i = (size_t)evs[j].data.u64;
            conn_t *c = &st->c[i];
            if (c->state == C_CONNECTING)
                s_conn_send(st, c, i);
            else if (c->state == C_HEAD || c->state == C_BODY)
                s_conn_read(st, c);
        }
    }
}

/* The event clock now, from the hello of GET /api/events on port. */
static long long s_event_clock(int port)
{
    streams_t st;
    s_streams_init(&st, 1, port, "/api/events", NULL);
    if (s_pump(&st, false, 10) < 0 || !st.c[0].hello)
        s_die("no hello from GET /api/events on port %d: %s", port, st.c[0].err);
    json_t *j = json_loads(st.c[0].hello, 0, NULL);
    json_t *v = json_object_get(j, "event_clock");
    if (!json_is_integer(v))
        s_die("hello without event_clock: %s", st.c[0].hello);
    long long clock = (long long)json_integer_value(v);
    json_decref(j);
    s_streams_free(&st);
    return clock;
}

/* ================================================================ one row */

typedef struct {
    int streams;
    bool cross;
    size_t images;      /* the job's attachments */
    bench_series_t lat; /* ms, every (stream, image) */
    double span_ms;     /* first to last created_at */
    double open_s;      /* opening every stream, to its snapshot */
    long rss0, rss1;    /* serving instance before / with the streams idle */
    double wall_s;      /* delivery: the blocker's cancel to every stream's end */
    double cpu_a, cpu_b, cpu_bench, cpu_other; /* % of one core during delivery */
    double per_stream;                         /* bytes */
    bool ok;
} row_t;

static void s_run_row(PGconn *db, int nstreams, bool cross, row_t *row)
{
    int failures = s_failures;
    int serve = cross ? SRV_B : SRV_A;
    row->streams = nstreams;
    row->cross = cross;
    char blocker[64], job[64], label[64];
    snprintf(label, sizeof label, "%d stream%s, %s instance", nstreams, nstreams > 1 ? "s" : "",
             cross ? "cross" : "same");

    /* hold A's generators, so that the job stays pending while its streams open */
    if (s_create(SRV_A, "blocker", 2, 256, 200, 100, blocker, sizeof blocker) < 0
        || s_wait(db, SQL_TASKS_PROCESSING, blocker, 2, 30, "blocker") < 0)
        s_die("%s: the blocker did not start", label);
    long long clock = s_event_clock(s_srv[serve].port);
    char tag[64];
    snprintf(tag, sizeof tag, "%d %s", nstreams, cross ? "cross" : "same");
    if (s_create(SRV_B, tag, s_opt.combos, 64, 2, s_opt.images, job, sizeof job) < 0)
        s_die("%s: cannot create the job", label);

    row->rss0 = s_rss(s_srv[serve].pid);
    char path[128], last[32];
    snprintf(path, sizeof path, "/api/jobs/%s/events", job);
    snprintf(last, sizeof last, "%lld", clock);
    streams_t st;
    s_ids_reset();
    s_streams_init(&st, (size_t)nstreams, s_srv[serve].port, path, last);
    double t0 = bench_mono();
    if (s_pump(&st, false, WAIT_S) < 0)
        s_fail("%s: %zu of %d streams had their snapshot after %.0f s", label, st.snapshots,
               nstreams, WAIT_S);
    row->open_s = bench_mono() - t0;
    /* idle: nothing is sent on a pending job's streams (keep-alives come
     * after 15 s), so let the server settle, then read its memory */
    s_pump(&st, true, 0.3);
    row->rss1 = s_rss(s_srv[serve].pid);
    row->per_stream = (double)(row->rss1 - row->rss0) / nstreams;

    /* go: the generators leave the blocker for the job */
    long long a0 = s_cpu_ticks(s_srv[SRV_A].pid), b0 = s_cpu_ticks(s_srv[SRV_B].pid),
              me0 = s_cpu_ticks(0), all0 = s_busy_ticks();
    double w0 = bench_mono();
    s_cancel(SRV_A, blocker);
    if (s_pump(&st, true, WAIT_S) < 0)
        s_fail("%s: %zu of %d streams finished within %.0f s", label, st.finished, nstreams,
               WAIT_S);
    row->wall_s = bench_mono() - w0;
    double tick = 100.0 / (double)sysconf(_SC_CLK_TCK) / row->wall_s; /* ticks -> % of a core */
    long long da = s_cpu_ticks(s_srv[SRV_A].pid) - a0, db_ = s_cpu_ticks(s_srv[SRV_B].pid) - b0,
              dme = s_cpu_ticks(0) - me0, dall = s_busy_ticks() - all0;
    row->cpu_a = (double)da * tick;
    row->cpu_b = (double)db_ * tick;
    row->cpu_bench = (double)dme * tick;
    row->cpu_other = (double)(dall - da - db_ - dme) * tick;
    s_wait(db, SQL_JOB_ENDED, blocker, 1, 30, "blocker");

    /* the job's attachments and their created_at, from PostgreSQL */
    const char *p[1] = {job};
    PGresult *r = s_sql(db,
                        "SELECT (SELECT status FROM jobs WHERE id = $1),"
                        " (SELECT completed_images FROM jobs WHERE id = $1),"
                        " (SELECT total_images FROM jobs WHERE id = $1)",
                        1, p);
    if (strcmp(PQgetvalue(r, 0, 0), "completed") != 0
        || strcmp(PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2)) != 0)
        s_fail("%s: job %s ended %s with %s of %s images", label, job, PQgetvalue(r, 0, 0),
               PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
    PQclear(r);
    r = s_sql(
        db,
        "SELECT a.id, (extract(epoch FROM a.created_at) * 1e6)::bigint, e.seq FROM attachments a"
        " LEFT JOIN job_events e ON e.job_id = a.job_id AND e.kind = 'image'"
        "  AND e.data->>'attach_id' = a.id::text"
        " WHERE a.job_id = $1 ORDER BY e.seq, a.created_at",
        1, p);
    size_t na = (size_t)PQntuples(r);
    row->images = na;
    if (na != (size_t)(s_opt.combos * s_opt.images))
        s_fail("%s: %zu attachments, expected %d", label, na, s_opt.combos * s_opt.images);
    /* created_at by interned index, in the order of the events' numbers (the
     * order every stream must see); the ids no stream saw are interned too */
    size_t nids_seen = s_ids.n;
    int64_t *created = calloc(na + nids_seen + 1, sizeof *created);
    int *db_idx = calloc(na + 1, sizeof *db_idx);
    if (!created || !db_idx)
        abort();
    for (size_t k = 0; k < na; k++) {
        const char *id = PQgetvalue(r, (int)k, 0);
        int idx = s_intern(id, strlen(id), true);
        if (idx < 0)
            s_die("attachment id %s", id);
        db_idx[k] = idx;
        created[idx] = atoll(PQgetvalue(r, (int)k, 1));
        if (PQgetisnull(r, (int)k, 2))
            s_fail("%s: attachment %s has no image event in job_events", label, id);
    }
    int64_t first = INT64_MAX, last_at = INT64_MIN;
    for (size_t k = 0; k < na; k++) {
        first = created[db_idx[k]] < first ? created[db_idx[k]] : first;
        last_at = created[db_idx[k]] > last_at ? created[db_idx[k]] : last_at;
    }
    if (na > 1)
        row->span_ms = (double)(last_at - first) / 1000.0;
    PQclear(r);
    int *rank = calloc(s_ids.n + 1, sizeof *rank);
    bool *in_job = calloc(s_ids.n + 1, 1);
    unsigned short *count = calloc(s_ids.n + 1, sizeof *count);
    if (!rank || !in_job || !count)
        abort();
    for (size_t k = 0; k < na; k++) {
        in_job[db_idx[k]] = true;
        rank[db_idx[k]] = (int)k;
    }

    /* every stream: every image exactly once, in clock order, nothing else,
     * an end */
    size_t bad_streams = 0;
    for (size_t i = 0; i < st.n; i++) {
        conn_t *c = &st.c[i];
        memset(count, 0, (s_ids.n + 1) * sizeof *count);
        size_t foreign = 0, dup = 0, missing = 0, disorder = 0;
        int prev = -1;
        for (size_t e = 0; e < c->nrec; e++) {
            int idx = c->recs[e].idx;
            if (!in_job[idx]) {
                foreign++;
                continue;
            }
            if (rank[idx] < prev)
                disorder++;
            prev = rank[idx];
            if (count[idx]++)
                dup++;
            else
                bench_push(&row->lat, (double)(c->recs[e].us - created[idx]) / 1000.0);
            if (s_csv)
                fprintf(s_csv, "%d,%s,%zu,%d,%lld,%lld\n", nstreams, cross ? "cross" : "same", i,
                        rank[idx], (long long)created[idx], (long long)c->recs[e].us);
        }
        for (size_t k = 0; k < na; k++)
            if (!count[db_idx[k]])
                missing++;
        bool ok = c->state == C_DONE && c->ended && !foreign && !dup && !missing && !disorder
                  && !c->bad_ids && !c->after_end;
        if (!ok && bad_streams++ < 5)
            s_fail("%s: stream %zu: %s%s%s, %zu images of %zu (%zu missing, %zu twice, %zu out "
                   "of order, %zu of another job, %zu unreadable), %zu events after end",
                   label, i, c->state == C_DONE ? "done" : "not done", c->err[0] ? ": " : "",
                   c->err, c->nrec, na, missing, dup, disorder, foreign, c->bad_ids, c->after_end);
    }
    if (bad_streams > 5)
        s_fail("%s: %zu streams in all failed", label, bad_streams);
    bench_sort(&row->lat);
    free(created);
    free(db_idx);
    free(rank);
    free(in_job);
    free(count);
    s_streams_free(&st);
    row->ok = s_failures == failures;
}

/* ================================================================ floor */

static redisContext *s_redis_connect(void)
{
    char err[512];
    redisContext *c = bench_redis_connect(s_opt.redis, err, sizeof err);
    if (!c)
        s_die("%s", err);
    return c;
}

/* PUBLISH -> the subscriber's receipt (ms), one message at a time, one
 * every interval_s; the send time (CLOCK_REALTIME) in the payload. One
 * thread: PUBLISH returns once Redis has queued the message to the
 * subscriber, whose socket is then read. */
static void s_redis_floor(bench_series_t *out, double interval_s)
{
    char channel[64];
    snprintf(channel, sizeof channel, "events-bench:floor:%d", (int)getpid());
    redisContext *pub = s_redis_connect(), *sub = s_redis_connect();
    redisReply *r = redisCommand(sub, "SUBSCRIBE %s", channel);
    if (!r)
        s_die("SUBSCRIBE: %s", sub->errstr);
    freeReplyObject(r);
    const int warm = 100;
    for (int i = 0; i < s_opt.floor_n + warm; i++) {
        char payload[64];
        snprintf(payload, sizeof payload, "%d %lld", i, (long long)s_real_us());
        r = redisCommand(pub, "PUBLISH %s %s", channel, payload);
        if (!r)
            s_die("PUBLISH: %s", pub->errstr);
        freeReplyObject(r);
        if (redisGetReply(sub, (void **)&r) != REDIS_OK)
            s_die("subscriber: %s", sub->errstr);
        int64_t now = s_real_us();
        long long seq, sent;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 3
            || r->element[2]->type != REDIS_REPLY_STRING
            || sscanf(r->element[2]->str, "%lld %lld", &seq, &sent) != 2 || seq != i)
            s_die("subscriber: an unexpected reply");
        freeReplyObject(r);
        if (i >= warm)
            bench_push(out, (double)(now - sent) / 1000.0);
        bench_sleep(interval_s);
    }
    redisFree(pub);
    redisFree(sub);
    bench_sort(out);
}

/* ================================================================ main */

static void s_raise_nofile(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        s_die("getrlimit: %s", strerror(errno));
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
        s_die("cannot raise the open-file limit to %lu (hard limit %lu)", (unsigned long)want,
              (unsigned long)rl.rlim_max);
}

static const char *s_met(bool met)
{
    return met ? "met" : "MISSED";
}

int main(int argc, char **argv)
{
    s_parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    atexit(s_stop_servers_at_exit);
    s_raise_nofile(STREAMS[NROWS_N - 1] + 256);
    if (mkdir(s_opt.logs, 0755) < 0 && errno != EEXIST)
        s_die("cannot create %s: %s", s_opt.logs, strerror(errno));
    PGconn *admin = PQconnectdb(s_opt.database);
    if (PQstatus(admin) != CONNECTION_OK)
        s_die("PostgreSQL: %s", PQerrorMessage(admin));
    PQsetNoticeProcessor(admin, s_quiet, NULL);
    if (s_opt.csv && !(s_csv = fopen(s_opt.csv, "w")))
        s_die("cannot write %s: %s", s_opt.csv, strerror(errno));
    if (s_csv)
        fprintf(s_csv, "streams,instance,stream,image,created_us,received_us\n");

    char load0[32], load1[32];
    s_loadavg(load0, sizeof load0);
    double t0 = bench_mono();
    char database[2048];
    s_fresh_db(admin, database, sizeof database);
    s_start(SRV_A, "events-a", 2, database);
    s_start(SRV_B, "events-b", 0, database);
    PGconn *db = PQconnectdb(database);
    if (PQstatus(db) != CONNECTION_OK)
        s_die("PostgreSQL: %s", PQerrorMessage(db));
    PQsetNoticeProcessor(db, s_quiet, NULL);

    row_t rows[2 * NROWS_N];
    memset(rows, 0, sizeof rows);
    for (size_t k = 0; k < NROWS_N; k++)
        for (int cross = 0; cross < 2; cross++) {
            fprintf(stderr, "events: %d stream%s, %s instance...\n", STREAMS[k],
                    STREAMS[k] > 1 ? "s" : "", cross ? "cross" : "same");
            s_run_row(db, STREAMS[k], cross, &rows[2 * k + (size_t)cross]);
        }

    /* the floor, at the rate the images came (the 1-stream cross job) */
    row_t *pace = &rows[1];
    double interval = pace->images > 1 ? pace->span_ms / 1000.0 / (double)(pace->images - 1) : 0;
    if (interval < 0.0002)
        interval = 0.0002;
    if (interval > 0.05)
        interval = 0.05;
    fprintf(stderr, "events: Redis floor, %d messages, one every %.2f ms...\n", s_opt.floor_n,
            interval * 1000);
    bench_series_t floor = {0};
    s_redis_floor(&floor, interval);

    PQfinish(db);
    for (int i = NSRV; i-- > 0;) {
        int stc = api_stop(s_srv[i].pid, 20);
        s_pids[i] = 0;
        if (stc != 0)
            s_fail("%s exited with %d on SIGTERM (see %s)", s_srv[i].name, stc, s_srv[i].log);
    }
    PQfinish(admin);
    if (s_csv && fclose(s_csv) != 0)
        s_fail("writing %s: %s", s_opt.csv, strerror(errno));

    printf("bench/events: A (--generators 2) makes every image, B (--generators 0) serves the "
           "cross-instance streams;\none job of %d x %d images (64x64, 2 steps) per row, "
           "streams opened with Last-Event-ID before the job; %.0f s, load average %s -> %s\n",
           s_opt.combos, s_opt.images, bench_mono() - t0, load0, s_loadavg(load1, sizeof load1));
    printf("latency = receive time (CLOCK_REALTIME at the read) - attachments.created_at "
           "(clock_timestamp() of the insert\ninside the recording transaction, just before its "
           "COMMIT); times in ms\n\n");
    printf("| streams | read from | images | samples | p50 | p99 | max | images/s | events/s | "
           "CPU %% A / B / bench / other |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (size_t k = 0; k < 2 * NROWS_N; k++) {
        row_t *w = &rows[k];
        printf("| %d | %s | %zu | %zu | %.2f | %.2f | %.2f | %.0f | %.0f | %.0f / %.0f / %.0f / "
               "%.0f |%s\n",
               w->streams, w->cross ? "B (cross)" : "A (same)", w->images, w->lat.n,
               bench_pct(&w->lat, 0.5), bench_pct(&w->lat, 0.99),
               w->lat.n ? w->lat.v[w->lat.n - 1] : NAN,
               w->span_ms > 0 ? (double)(w->images - 1) / (w->span_ms / 1000.0) : NAN,
               w->wall_s > 0 ? (double)w->lat.n / w->wall_s : NAN, w->cpu_a, w->cpu_b, w->cpu_bench,
               w->cpu_other, w->ok ? "" : " FAILED");
    }
    printf("| floor | Redis PUBLISH -> subscriber | 1 per %.2f ms | %zu | %.3f | %.3f | %.3f | | | "
           "|\n",
           interval * 1000, floor.n, bench_pct(&floor, 0.5), bench_pct(&floor, 0.99),
           floor.n ? floor.v[floor.n - 1] : NAN);

    printf("\nevents/s: stream events delivered / delivery wall time (the blocker's cancel to "
           "the last end); CPU: %% of one core\nduring delivery (%ld cores; other = PostgreSQL, "
           "Redis, the kernel, the rest of the machine)\n",
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("\nmemory of the serving instance with the streams open and idle (VmRSS):\n\n");
    printf("| streams | instance | RSS before | RSS with streams | per stream | opened in |\n");
    printf("|---|---|---|---|---|---|\n");
    for (size_t k = 0; k < 2 * NROWS_N; k++) {
        row_t *w = &rows[k];
        if (w->streams < 100)
            continue;
        printf("| %d | %s | %.1f MB | %.1f MB | %.0f B | %.2f s |\n", w->streams,
               w->cross ? "B (serves only)" : "A (generating the blocker)", w->rss0 / 1e6,
               w->rss1 / 1e6, w->per_stream, w->open_s);
    }

    double floor99 = bench_pct(&floor, 0.99);
    double cross1 = bench_pct(&rows[1].lat, 0.99);
    double aim_lat = 2 * floor99 + 1.0;
    double mem1000 = rows[2 * NROWS_N - 1].per_stream;
    printf("\naims:\n");
    printf("  cross-instance p99, 1 stream <= 2 x Redis floor p99 + 1 ms: %.2f ms <= %.2f ms: "
           "%s\n",
           cross1, aim_lat, s_met(cross1 <= aim_lat));
    printf("  1,000 streams add <= 10 KB RSS each (B): %.0f B: %s\n", mem1000,
           s_met(mem1000 <= 10000));
    for (size_t k = 0; k < 2 * NROWS_N; k++)
        free(rows[k].lat.v);
    free(floor.v);
    if (s_failures) {
        printf("\nFAILED: %d check%s (see above and %s)\n", s_failures, s_failures > 1 ? "s" : "",
               s_opt.logs);
        return 1;
    }
    printf("\nall checks passed: every stream got every image of its job exactly once, in the "
           "order of the event clock, and its end\n");
    return 0;
}
