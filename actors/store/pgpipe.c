/*
 * pgpipe.c - one libpq connection in pipeline mode on a libev loop; see
 * pgpipe.h.
 *
 * Key constraint: the loop never blocks. The connection is opened with
 * PQconnectStartParams/PQconnectPoll, set non-blocking and put in pipeline
 * mode; its first group is the session set-up (the caller's SQL and every
 * PREPARE), and user groups may follow it at once. One ev_io on PQsocket
 * reads results (PQconsumeInput, PQisBusy, PQgetResult) and, while PQflush
 * has output left, waits for write readiness. Results come back in the
 * order the groups were sent, so a FIFO of in-flight groups matches each
 * result to its group: each statement's result is followed by a NULL from
 * PQgetResult, and each Sync's PGRES_PIPELINE_SYNC completes the group at
 * the head of the FIFO.
 *
 * Down or lost connection: every queued and in-flight group is answered
 * -EAGAIN with the reason, new ones are refused until a reconnect (backoff)
 * succeeds; only the very first attempt after pgpipe_new() is waited for.
 * The backoff is capped at 1 s, and a refused group (or pgpipe_wake())
 * brings the next attempt forward to now: a server that returns is in use
 * again within about a second, or at the first request after it. Those
 * early attempts are rate-limited (WAKE_INTERVAL_S after the previous
 * attempt began, never while one is under way), so a flood of requests
 * during an outage is no flood of connection attempts. State changes are
 * logged once each.
 *
 * Freeing: every entry point (a watcher, pgpipe_submit, pgpipe_destroy)
 * counts itself in `depth`; a destroy asked while depth > 0 only sets
 * `doomed`, and the outermost entry point frees the pipe on its way out.
 */
#include "config.h"

#include "actors/store/pgpipe.h"

#include "runtime/backoff.h"
#include "runtime/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONNECT_TIMEOUT_S 5.
#define BACKOFF_MIN_S 0.1
/* Low: while the server is away each retry costs one refused connect(),
 * and the cap bounds how long service stays down after it is back. */
#define BACKOFF_MAX_S 1.
/* Attempts that a waiting caller brings forward start at least this long
 * after the previous attempt began. */
#define WAKE_INTERVAL_S 0.2
/* Groups in the pipeline at once; more wait in a local queue. Bounds
 * libpq's buffers, not throughput: 256 groups are far more than one round
 * trip's worth. */
#define MAX_INFLIGHT 256

struct pgpipe_group {
    pgpipe_group_t *next;
    int stmts[PGPIPE_MAX_STMTS];
    int nstmts;
    int result_format;
    pgpipe_reply_fn cb;
    void *arg;
    int nparams;
    char *values[PGPIPE_MAX_PARAMS];
    int lengths[PGPIPE_MAX_PARAMS];
    int formats[PGPIPE_MAX_PARAMS];
    int nres;
    PGresult *res[PGPIPE_MAX_STMTS];
    /* the pipe's own set-up group: many results, only the first error kept */
    bool setup;
    int expect;
    PGresult *setup_error;
};

typedef enum {
    PG_DOWN,       /* no connection; the retry timer runs */
    PG_CONNECTING, /* PQconnectPoll in progress */
    PG_PREPARING,  /* connected; the set-up group is in the pipeline */
    PG_UP
} pg_state_t;

struct pgpipe {
    struct ev_loop *loop;
    pgpipe_config_t cfg;
    PGconn *conn;
    pg_state_t state;
    bool outage; /* the last attempt failed or the link dropped: refuse at once */
    bool want_write;
    bool awaiting_null; /* a statement's result is in; libpq owes its NULL */
    ev_io io;
    ev_timer retry;
    ev_timer connect_timer;
    backoff_t backoff;
    ev_tstamp attempt_at; /* when the last connection attempt began */
    char last_error[256];

    pgpipe_group_t *inflight, *inflight_tail; /* sent, in pipeline order */
    int ninflight;
    pgpipe_group_t *waiting, *waiting_tail; /* not sent yet */
    int npending;                           /* user groups not answered */

    int depth;   /* entry points under way (see the file comment) */
    bool doomed; /* pgpipe_destroy() was called */
};

static void s_down(pgpipe_t *p, const char *why);
static void s_progress(pgpipe_t *p);
static void s_free(pgpipe_t *p);

/* ------------------------------------------------------------------ helpers */

void pgpipe_oneline(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src && *src ? src : "unknown error");
    char *w = dst;
    for (const char *q = dst; *q; q++) {
        char c = *q == '\n' || *q == '\r' || *q == '\t' ? ' ' : *q;
        if (c == ' ' && (w == dst || w[-1] == ' '))
            continue;
        *w++ = c;
    }
    while (w > dst && w[-1] == ' ')
        w--;
    *w = '\0';
}

/* libpq expands only what looks like a conninfo or URI; a plain database
 * name is fine as it is. */
int pgpipe_conninfo_check(const char *conninfo, char *err, size_t errlen)
{
    if (!conninfo || !*conninfo) {
        snprintf(err, errlen, "no database conninfo given");
        return -1;
    }
    bool looks = strchr(conninfo, '=') || strncmp(conninfo, "postgres://", 11) == 0
                 || strncmp(conninfo, "postgresql://", 13) == 0;
    if (!looks)
        return 0;
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (!opts) {
        char msg[200];
        pgpipe_oneline(msg, sizeof msg, perr ? perr : "out of memory");
        snprintf(err, errlen, "invalid database conninfo: %s", msg);
        PQfreemem(perr);
        return -1;
    }
    PQconninfoFree(opts);
    return 0;
}

static void s_enter(pgpipe_t *p)
{
    p->depth++;
}

/* Leaves an entry point; p is gone afterwards if it was the outermost one
 * of a doomed pipe. */
static void s_leave(pgpipe_t *p)
{
    if (--p->depth == 0 && p->doomed)
        s_free(p);
}

static void s_queue_push(pgpipe_group_t **head, pgpipe_group_t **tail, pgpipe_group_t *g)
{
    g->next = NULL;
    if (*tail)
        (*tail)->next = g;
    else
        *head = g;
    *tail = g;
}

static pgpipe_group_t *s_queue_pop(pgpipe_group_t **head, pgpipe_group_t **tail)
{
    pgpipe_group_t *g = *head;
    if (g) {
        *head = g->next;
        if (!*head)
            *tail = NULL;
        g->next = NULL;
    }
    return g;
}

static bool s_is_error(const PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    return s == PGRES_FATAL_ERROR || s == PGRES_BAD_RESPONSE || s == PGRES_NONFATAL_ERROR;
}

/* ------------------------------------------------------------------ groups */

pgpipe_group_t *pgpipe_group_new(const int *stmts, int nstmts, int result_format,
                                 pgpipe_reply_fn cb, void *arg)
{
    if (nstmts < 0 || nstmts > PGPIPE_MAX_STMTS)
        abort(); /* the caller's table is wrong */
    pgpipe_group_t *g = calloc(1, sizeof *g);
    if (!g)
        abort();
    if (nstmts > 0) /* the set-up group has none (and stmts NULL) */
        memcpy(g->stmts, stmts, (size_t)nstmts * sizeof *stmts);
    g->nstmts = nstmts;
    g->expect = nstmts;
    g->result_format = result_format;
    g->cb = cb;
    g->arg = arg;
    return g;
}

static void s_group_free_params(pgpipe_group_t *g)
{
    for (int i = 0; i < g->nparams; i++) {
        free(g->values[i]);
        g->values[i] = NULL;
    }
    g->nparams = 0;
}

void pgpipe_group_free(pgpipe_group_t **gp)
{
    pgpipe_group_t *g = *gp;
    if (!g)
        return;
    s_group_free_params(g);
    for (int i = 0; i < g->nres && i < PGPIPE_MAX_STMTS; i++)
        PQclear(g->res[i]);
    PQclear(g->setup_error);
    free(g);
    *gp = NULL;
}

static void s_param_take(pgpipe_group_t *g, char *value, int length, int format)
{
    if (g->nparams >= PGPIPE_MAX_PARAMS)
        abort(); /* the caller's statement table is wrong */
    g->values[g->nparams] = value;
    g->lengths[g->nparams] = length;
    g->formats[g->nparams] = format;
    g->nparams++;
}

static char *s_xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

void pgpipe_param_str(pgpipe_group_t *g, const char *s)
{
    s_param_take(g, s ? s_xstrdup(s) : NULL, 0, 0);
}

void pgpipe_param_i64(pgpipe_group_t *g, int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    pgpipe_param_str(g, buf);
}

void pgpipe_param_u64(pgpipe_group_t *g, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    pgpipe_param_str(g, buf);
}

void pgpipe_param_f64(pgpipe_group_t *g, double v)
{
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", v);
    pgpipe_param_str(g, buf);
}

void pgpipe_param_bin_take(pgpipe_group_t *g, void *data, size_t size)
{
    s_param_take(g, data, (int)size, 1);
}

/* Answers g (popped from its queue) and frees it. */
static void s_answer(pgpipe_t *p, pgpipe_group_t *g, int status, const char *reason)
{
    if (g->setup) { /* nobody waits for it */
        pgpipe_group_free(&g);
        return;
    }
    pgpipe_reply_t reply = {.status = status,
                            .reason = reason,
                            .nresults = status == 0 ? g->nres : 0,
                            .nstmts = g->nstmts,
                            .results = g->res};
    for (int i = 0; status == 0 && i < g->nres && !reply.error; i++)
        if (s_is_error(g->res[i]))
            reply.error = g->res[i];
    p->npending--;
    g->cb(p, &reply, g->arg);
    pgpipe_group_free(&g);
}

/* Answers every queued and in-flight group with status. */
static void s_fail_all(pgpipe_t *p, int status, const char *why)
{
    pgpipe_group_t *g;
    while ((g = s_queue_pop(&p->inflight, &p->inflight_tail))) {
        p->ninflight--;
        s_answer(p, g, status, why);
    }
    p->ninflight = 0;
    while ((g = s_queue_pop(&p->waiting, &p->waiting_tail)))
        s_answer(p, g, status, why);
}

/* ------------------------------------------------------------- connection */

static void s_watch(pgpipe_t *p, int events, bool force)
{
    int fd = PQsocket(p->conn);
    if (!force && ev_is_active(&p->io) && p->io.fd == fd
        && (p->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    /* stop and start, not just set: during the connect the socket may be
     * closed and replaced by one with the same number */
    ev_io_stop(p->loop, &p->io);
    if (fd < 0)
        return;
    ev_io_set(&p->io, fd, events);
    ev_io_start(p->loop, &p->io);
}

static void s_close(pgpipe_t *p)
{
    ev_io_stop(p->loop, &p->io);
    ev_timer_stop(p->loop, &p->connect_timer);
    if (p->conn) {
        PQfinish(p->conn);
        p->conn = NULL;
    }
    p->want_write = false;
    p->awaiting_null = false;
}

static void s_schedule_retry(pgpipe_t *p)
{
    ev_timer_stop(p->loop, &p->retry);
    ev_timer_set(&p->retry, backoff_next(&p->backoff), 0.);
    ev_timer_start(p->loop, &p->retry);
}

/* The connection failed, was lost, or could not be used: answer everyone,
 * log the change once, tell the user, and try again later. */
static void s_down(pgpipe_t *p, const char *why)
{
    char reason[256];
    pgpipe_oneline(reason, sizeof reason, why); /* why may live in the PGconn */
    pg_state_t was = p->state;
    s_close(p);
    p->state = PG_DOWN;

    char told[320];
    if (was == PG_UP) {
        log_warn("PostgreSQL connection lost: %s; reconnecting", reason);
        backoff_reset(&p->backoff);
        snprintf(told, sizeof told, "PostgreSQL connection lost (%s)", reason);
    } else {
        if (!p->outage || strcmp(reason, p->last_error) != 0)
            log_warn("PostgreSQL unavailable: %s; retrying (backoff up to %.0f s)", reason,
                     p->backoff.max);
        else
            log_debug("PostgreSQL still unavailable: %s", reason);
        snprintf(told, sizeof told, "PostgreSQL unavailable (%s)", reason);
    }
    snprintf(p->last_error, sizeof p->last_error, "%s", reason);
    p->outage = true;
    s_schedule_retry(p);
    s_fail_all(p, -EAGAIN, told);
    if (p->doomed)
        return;
    if (was == PG_UP && p->cfg.on_disconnect)
        p->cfg.on_disconnect(p, reason, p->cfg.arg);
    else if (was != PG_UP && p->cfg.on_connect)
        p->cfg.on_connect(p, -1, reason, p->cfg.arg);
}

/* The set-up group is answered: the session is ready, or unusable. */
static void s_prepared(pgpipe_t *p, pgpipe_group_t *g)
{
    const PGresult *r = g->setup_error;
    if (r || g->nres < g->expect) {
        char msg[200], why[300];
        pgpipe_oneline(msg, sizeof msg, r ? PQresultErrorMessage(r) : "no result");
        if (p->cfg.setup_hint)
            snprintf(why, sizeof why, "cannot set up the session (%s): %s", p->cfg.setup_hint, msg);
        else
            snprintf(why, sizeof why, "cannot set up the session: %s", msg);
        pgpipe_group_free(&g);
        s_down(p, why);
        return;
    }
    pgpipe_group_free(&g);
    p->state = PG_UP;
    backoff_reset(&p->backoff);
    log_info("PostgreSQL %s: %s:%s, database %s, server %d, pipeline mode",
             p->outage ? "reachable again" : "connected", PQhost(p->conn), PQport(p->conn),
             PQdb(p->conn), PQserverVersion(p->conn));
    p->outage = false;
    p->last_error[0] = '\0';
    if (p->cfg.on_connect)
        p->cfg.on_connect(p, 0, NULL, p->cfg.arg);
}

static void s_notice(void *arg, const char *message)
{
    char line[300];
    pgpipe_oneline(line, sizeof line, message);
    log_debug("PostgreSQL: %s", line);
}

/* Connected: non-blocking, pipeline mode, and the session set up (the
 * caller's SQL, every statement prepared) as the first group in the
 * pipeline; user groups may follow it at once. */
static void s_connected(pgpipe_t *p)
{
    ev_timer_stop(p->loop, &p->connect_timer);
    PQsetNoticeProcessor(p->conn, s_notice, p);
    if (PQsetnonblocking(p->conn, 1) != 0 || PQenterPipelineMode(p->conn) != 1) {
        s_down(p, PQerrorMessage(p->conn));
        return;
    }
    pgpipe_group_t *g = pgpipe_group_new(NULL, 0, 0, NULL, NULL);
    g->setup = true;
    g->expect = (p->cfg.setup_sql ? 1 : 0) + p->cfg.nstmts;
    s_queue_push(&p->inflight, &p->inflight_tail, g);
    p->ninflight++;
    if (p->cfg.setup_sql
        && !PQsendQueryParams(p->conn, p->cfg.setup_sql, 0, NULL, NULL, NULL, NULL, 0)) {
        s_down(p, PQerrorMessage(p->conn));
        return;
    }
    for (int i = 0; i < p->cfg.nstmts; i++) {
        const pgpipe_stmt_t *s = &p->cfg.stmts[i];
        if (!PQsendPrepare(p->conn, s->name, s->sql, s->nparams, s->types)) {
            s_down(p, PQerrorMessage(p->conn));
            return;
        }
    }
    if (!PQpipelineSync(p->conn)) {
        s_down(p, PQerrorMessage(p->conn));
        return;
    }
    p->state = PG_PREPARING;
    s_watch(p, EV_READ, true);
    s_progress(p);
}

static void s_connect_poll(pgpipe_t *p)
{
    switch (PQconnectPoll(p->conn)) {
    case PGRES_POLLING_READING:
        s_watch(p, EV_READ, true);
        break;
    case PGRES_POLLING_WRITING:
        s_watch(p, EV_WRITE, true);
        break;
    case PGRES_POLLING_OK:
        s_connected(p);
        break;
    case PGRES_POLLING_FAILED:
    default:
        s_down(p, PQerrorMessage(p->conn));
        break;
    }
}

static void s_connect(pgpipe_t *p)
{
    /* Our defaults first, the configured conninfo (expanded from "dbname")
     * last: what it sets wins. keepalives and tcp_user_timeout notice a
     * peer that vanished without closing (TCP only). */
    const char *keys[8], *values[8];
    int n = 0;
    if (p->cfg.application_name) {
        keys[n] = "application_name";
        values[n++] = p->cfg.application_name;
    }
    static const char *const defaults[][2] = {{"keepalives_idle", "10"},
                                              {"keepalives_interval", "5"},
                                              {"keepalives_count", "3"},
                                              {"tcp_user_timeout", "30000"}};
    for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i++) {
        keys[n] = defaults[i][0];
        values[n++] = defaults[i][1];
    }
    keys[n] = "dbname";
    values[n++] = p->cfg.conninfo;
    keys[n] = values[n] = NULL;
    p->attempt_at = ev_now(p->loop);
    p->conn = PQconnectStartParams(keys, values, 1);
    if (!p->conn) {
        s_down(p, "out of memory");
        return;
    }
    if (PQstatus(p->conn) == CONNECTION_BAD || PQsocket(p->conn) < 0) {
        s_down(p, PQerrorMessage(p->conn));
        return;
    }
    p->state = PG_CONNECTING;
    ev_timer_set(&p->connect_timer, p->cfg.connect_timeout_s, 0.);
    ev_timer_start(p->loop, &p->connect_timer);
    /* as if PQconnectPoll had returned PGRES_POLLING_WRITING */
    s_watch(p, EV_WRITE, true);
}

static void s_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    pgpipe_t *p = w->data;
    s_enter(p);
    if (p->state == PG_DOWN)
        s_connect(p);
    s_leave(p);
}

static void s_connect_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    pgpipe_t *p = w->data;
    s_enter(p);
    if (p->state == PG_CONNECTING) {
        char why[64];
        snprintf(why, sizeof why, "connection attempt timed out after %.0f s",
                 p->cfg.connect_timeout_s);
        s_down(p, why);
    }
    s_leave(p);
}

/* --------------------------------------------------------------- pipeline */

static bool s_live(const pgpipe_t *p)
{
    return p->conn && !p->doomed && (p->state == PG_UP || p->state == PG_PREPARING);
}

/* Puts g's statements and a Sync into the pipeline. */
static bool s_send(pgpipe_t *p, pgpipe_group_t *g)
{
    s_queue_push(&p->inflight, &p->inflight_tail, g);
    p->ninflight++;
    for (int i = 0; i < g->nstmts; i++) {
        const pgpipe_stmt_t *s = &p->cfg.stmts[g->stmts[i]];
        if (!PQsendQueryPrepared(p->conn, s->name, s->nparams, (const char *const *)g->values,
                                 g->lengths, g->formats, g->result_format)) {
            s_down(p, PQerrorMessage(p->conn));
            return false;
        }
    }
    /* libpq 15 flushes here too; a partial write is finished by s_flush */
    if (!PQpipelineSync(p->conn)) {
        s_down(p, PQerrorMessage(p->conn));
        return false;
    }
    s_group_free_params(g); /* libpq has copied them */
    return true;
}

/* Moves waiting groups into the pipeline; true if any went. */
static bool s_pump(pgpipe_t *p)
{
    bool sent = false;
    while (s_live(p) && p->waiting && p->ninflight < p->cfg.max_inflight) {
        pgpipe_group_t *g = s_queue_pop(&p->waiting, &p->waiting_tail);
        if (!s_send(p, g))
            return sent;
        sent = true;
    }
    return sent;
}

/* Pushes buffered output; watches for write readiness while some is left. */
static int s_flush(pgpipe_t *p)
{
    int rc = PQflush(p->conn);
    if (rc < 0) {
        s_down(p, PQerrorMessage(p->conn));
        return -1;
    }
    p->want_write = rc == 1;
    s_watch(p, EV_READ | (p->want_write ? EV_WRITE : 0), false);
    return 0;
}

/* Takes every result libpq has parsed and completes groups at their Sync.
 * Returns how many groups it completed. */
static int s_drain(pgpipe_t *p)
{
    int done = 0;
    while (s_live(p) && p->inflight) {
        if (PQstatus(p->conn) == CONNECTION_BAD) {
            s_down(p, PQerrorMessage(p->conn));
            return done;
        }
        if (PQisBusy(p->conn))
            return done;
        PGresult *r = PQgetResult(p->conn);
        if (!r) {
            if (p->awaiting_null) {
                p->awaiting_null = false;
                continue;
            }
            return done; /* nothing more parsed yet */
        }
        pgpipe_group_t *g = p->inflight;
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            s_queue_pop(&p->inflight, &p->inflight_tail);
            p->ninflight--;
            done++;
            if (g->setup)
                s_prepared(p, g); /* may take the connection down */
            else
                s_answer(p, g, 0, NULL);
            continue;
        }
        if (!g->setup && g->nres < PGPIPE_MAX_STMTS)
            g->res[g->nres] = r;
        else if (g->setup && !g->setup_error && s_is_error(r))
            g->setup_error = r;
        else
            PQclear(r);
        g->nres++;
        p->awaiting_null = true;
    }
    return done;
}

/* After anything happened: send what waits, flush, complete what is in,
 * and again while that made progress: a callback may have submitted more,
 * a completion makes room in the pipeline, and a flush may have read input
 * into libpq's buffer that no readiness event would announce. */
static void s_progress(pgpipe_t *p)
{
    while (s_live(p)) {
        bool sent = s_pump(p);
        if (!s_live(p) || s_flush(p) < 0)
            return;
        int done = s_drain(p);
        if (!sent && !done)
            return;
    }
}

static void s_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    pgpipe_t *p = w->data;
    s_enter(p);
    if (p->state == PG_CONNECTING) {
        s_connect_poll(p);
    } else if (p->conn) {
        /* a server that ends the session while we are idle is noticed
         * here, not at the next request */
        if ((revents & EV_READ)
            && (!PQconsumeInput(p->conn) || PQstatus(p->conn) == CONNECTION_BAD))
            s_down(p, PQerrorMessage(p->conn));
        else
            s_progress(p);
    }
    s_leave(p);
}

/* ------------------------------------------------------------------ public */

pgpipe_t *pgpipe_new(struct ev_loop *loop, const pgpipe_config_t *cfg, char *err, size_t errlen)
{
    if (pgpipe_conninfo_check(cfg->conninfo, err, errlen) < 0)
        return NULL;
    pgpipe_t *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->loop = loop;
    p->cfg = *cfg;
    if (p->cfg.connect_timeout_s <= 0)
        p->cfg.connect_timeout_s = CONNECT_TIMEOUT_S;
    if (p->cfg.max_inflight <= 0)
        p->cfg.max_inflight = MAX_INFLIGHT;
    backoff_init(&p->backoff, cfg->backoff_min_s > 0 ? cfg->backoff_min_s : BACKOFF_MIN_S,
                 cfg->backoff_max_s > 0 ? cfg->backoff_max_s : BACKOFF_MAX_S, 0);
    ev_init(&p->io, s_io_cb);
    p->io.data = p;
    ev_init(&p->retry, s_retry_cb);
    p->retry.data = p;
    ev_init(&p->connect_timer, s_connect_timeout_cb);
    p->connect_timer.data = p;
    /* the first attempt starts from the loop, so that no callback runs
     * before the caller holds the pipe; groups submitted meanwhile wait */
    p->state = PG_DOWN;
    ev_timer_set(&p->retry, 0., 0.);
    ev_timer_start(loop, &p->retry);
    return p;
}

static void s_free(pgpipe_t *p)
{
    p->depth++; /* callbacks below see a pipe being destroyed */
    s_close(p);
    ev_timer_stop(p->loop, &p->retry);
    s_fail_all(p, -ECANCELED, "the connection is closing");
    free(p);
}

void pgpipe_destroy(pgpipe_t **pp)
{
    pgpipe_t *p = *pp;
    if (!p)
        return;
    *pp = NULL;
    if (p->doomed)
        return;
    p->doomed = true;
    if (p->depth == 0)
        s_free(p);
}

int pgpipe_submit(pgpipe_t *p, pgpipe_group_t **gp)
{
    pgpipe_group_t *g = *gp;
    *gp = NULL;
    for (int i = 0; i < g->nstmts; i++)
        if (g->stmts[i] < 0 || g->stmts[i] >= p->cfg.nstmts
            || p->cfg.stmts[g->stmts[i]].nparams > g->nparams)
            abort(); /* the caller's table and its parameters disagree */
    if (p->doomed || pgpipe_status(p) == PGPIPE_UNAVAILABLE) {
        pgpipe_group_free(&g);
        pgpipe_wake(p); /* someone needs the server: look for it now */
        return -1;
    }
    bool nested = p->depth > 0; /* a callback's submit: the caller's loop sends it */
    s_enter(p);
    p->npending++;
    s_queue_push(&p->waiting, &p->waiting_tail, g);
    if (!nested)
        s_progress(p);
    s_leave(p);
    return 0;
}

/* The attempt starts from the retry timer, not from here: pgpipe_wake()
 * runs inside pgpipe_submit() and the caller's handlers, where a failing
 * attempt's callbacks (on_connect) must not run. */
void pgpipe_wake(pgpipe_t *p)
{
    if (p->doomed || p->state != PG_DOWN || !p->outage)
        return; /* an attempt is under way, or the first one is due now */
    double wait = p->attempt_at + WAKE_INTERVAL_S - ev_now(p->loop);
    if (wait < 0)
        wait = 0;
    if (ev_is_active(&p->retry) && ev_timer_remaining(p->loop, &p->retry) <= wait)
        return;
    ev_timer_stop(p->loop, &p->retry);
    ev_timer_set(&p->retry, wait, 0.);
    ev_timer_start(p->loop, &p->retry);
}

pgpipe_status_t pgpipe_status(const pgpipe_t *p)
{
    if (p->state == PG_UP || p->state == PG_PREPARING)
        return PGPIPE_READY;
    return p->outage ? PGPIPE_UNAVAILABLE : PGPIPE_STARTING;
}

const char *pgpipe_last_error(const pgpipe_t *p)
{
    return p->last_error;
}

int pgpipe_pending(const pgpipe_t *p)
{
    return p->npending;
}
