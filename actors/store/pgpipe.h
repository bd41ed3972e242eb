/*
 * pgpipe.h - one PostgreSQL connection driven from a libev loop, in libpq's
 * pipeline mode: an asynchronous context in the shape of hiredis's
 * redisAsyncContext with its adapters/libev.h built in.
 *
 * A pgpipe_t belongs to one loop (one thread). It connects without blocking
 * (PQconnectStartParams/PQconnectPoll), reconnects with backoff (100 ms
 * doubling to 1 s) when the server is unreachable or the connection drops,
 * tries again at once (rate-limited) when a caller needs the server while
 * it is down, and on every new connection runs the caller's set-up SQL and
 * prepares the caller's statements before anything else. Work is submitted
 * as groups: prepared statements sent back to back and closed by a Sync, so
 * the server runs each group as one implicit transaction. Groups go into the pipeline at
 * once, without waiting for earlier results; each group's callback runs
 * exactly once, with its results in statement order.
 *
 * It knows nothing of what the statements mean: that is its user's.
 *
 * Callbacks may submit more groups. They must not free the pipe itself:
 * pgpipe_destroy() called from inside a callback only marks it, and the
 * pipe is freed once the callback has returned (as hiredis does).
 */
#ifndef IMAGEJOBS_PGPIPE_H
#define IMAGEJOBS_PGPIPE_H

#include <ev.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pgpipe pgpipe_t;
typedef struct pgpipe_group pgpipe_group_t;

/* Type OIDs for statement parameters (catalog/pg_type_d.h is a server
 * header). */
#define PGPIPE_BOOL 16
#define PGPIPE_BYTEA 17
#define PGPIPE_INT8 20
#define PGPIPE_INT4 23
#define PGPIPE_TEXT 25
#define PGPIPE_FLOAT8 701
#define PGPIPE_UUID 2950
#define PGPIPE_JSONB 3802
#define PGPIPE_TEXT_ARRAY 1009
#define PGPIPE_UUID_ARRAY 2951

/* Limits of one group (they bound fixed arrays, not throughput). */
#define PGPIPE_MAX_STMTS 8
#define PGPIPE_MAX_PARAMS 16

/* A statement prepared on every connection. */
typedef struct {
    const char *name; /* the prepared statement's name */
    const char *sql;  /* parameters as $1..$n */
    int nparams;
    const Oid *types; /* nparams OIDs (0: let the server infer) */
} pgpipe_stmt_t;

/* What a group's callback receives. Everything is borrowed: valid only
 * during the callback. */
typedef struct {
    /* 0: the group ran; a statement may still have failed (error).
     * -EAGAIN: it did not run, or was cut short: the server is unreachable
     * or the connection was lost (reason says which). -ECANCELED: the pipe
     * was destroyed first. */
    int status;
    const char *reason; /* status != 0: why, one line */
    /* status 0: the first statement that failed (its message and SQLSTATE
     * via PQresultErrorMessage/PQresultErrorField), or NULL */
    const PGresult *error;
    int nresults; /* results received: nstmts unless cut short */
    int nstmts;
    PGresult *const *results; /* in statement order */
} pgpipe_reply_t;

typedef void (*pgpipe_reply_fn)(pgpipe_t *p, const pgpipe_reply_t *reply, void *arg);

/* The session is set up (status 0), or an attempt to connect or set it up
 * failed (status -1, why). Retries follow on their own. */
typedef void (*pgpipe_connect_fn)(pgpipe_t *p, int status, const char *why, void *arg);
/* A session that was up is lost (why); a reconnect follows. */
typedef void (*pgpipe_disconnect_fn)(pgpipe_t *p, const char *why, void *arg);

typedef struct {
    /* libpq conninfo or URI (expanded as "dbname"); required. Its settings
     * win over the pipe's defaults (TCP keepalives, tcp_user_timeout). */
    const char *conninfo;
    const char *application_name; /* NULL: libpq's default */
    /* Run first on every connection (for example SET lock_timeout), or
     * NULL. */
    const char *setup_sql;
    const pgpipe_stmt_t *stmts; /* prepared on every connection */
    int nstmts;
    /* When set-up or prepare fails, the log and the reason say this too
     * (what the operator should check). NULL: nothing. */
    const char *setup_hint;
    double connect_timeout_s;           /* <= 0: 5 */
    double backoff_min_s;               /* <= 0: 0.1 */
    double backoff_max_s;               /* <= 0: 1 */
    int max_inflight;                   /* groups in the pipeline at once; <= 0: 256 */
    pgpipe_connect_fn on_connect;       /* NULL: none */
    pgpipe_disconnect_fn on_disconnect; /* NULL: none */
    void *arg;                          /* for on_connect, on_disconnect */
} pgpipe_config_t;

/* Where the connection stands, as a submitter sees it. */
typedef enum {
    PGPIPE_STARTING,    /* the first attempt is under way: groups wait for it */
    PGPIPE_UNAVAILABLE, /* down, or retrying after a failure: groups are refused */
    PGPIPE_READY        /* connected (set-up may still run): groups go in */
} pgpipe_status_t;

/* A pipe on loop that starts connecting at the loop's next iteration. cfg
 * is copied; its strings and statements must outlive the pipe. NULL with
 * the reason in err for a conninfo that cannot parse. Owned by the caller:
 * pgpipe_destroy(). */
pgpipe_t *pgpipe_new(struct ev_loop *loop, const pgpipe_config_t *cfg, char *err, size_t errlen);

/* Closes the connection and answers every group not yet answered with
 * -ECANCELED; NULLs *pp. Inside a callback of this pipe, the free waits
 * until the callback returns. Safe with *pp NULL. */
void pgpipe_destroy(pgpipe_t **pp);

/* A new group of statements (indexes into cfg->stmts, at most
 * PGPIPE_MAX_STMTS) whose results come back in text (result_format 0) or
 * binary (1) format. cb runs once the group is answered. Owned by the
 * caller until pgpipe_submit() takes it. */
pgpipe_group_t *pgpipe_group_new(const int *stmts, int nstmts, int result_format,
                                 pgpipe_reply_fn cb, void *arg);
void pgpipe_group_free(pgpipe_group_t **gp);

/* The group's parameters, in $n order; every statement of the group takes
 * the first nparams of them (its own count). A NULL string is SQL NULL. */
void pgpipe_param_str(pgpipe_group_t *g, const char *s);
void pgpipe_param_i64(pgpipe_group_t *g, int64_t v);
void pgpipe_param_u64(pgpipe_group_t *g, uint64_t v);
void pgpipe_param_f64(pgpipe_group_t *g, double v);
/* Binary; takes data (malloc'd, size bytes): no copy. */
void pgpipe_param_bin_take(pgpipe_group_t *g, void *data, size_t size);

/* Submits *gp (consumed, NULLed). 0: its callback will run exactly once.
 * -1: refused at once because the server is unavailable (pgpipe_last_error
 * says why); the callback never runs, and the refusal wakes the pipe
 * (pgpipe_wake). */
int pgpipe_submit(pgpipe_t *p, pgpipe_group_t **gp);

/* A caller wants the server (a request is being refused, a health check):
 * while the pipe is unavailable, its next connection attempt starts from
 * the loop now instead of at the backoff's next retry. Rate-limited: an
 * attempt brought forward starts at least 0.2 s after the previous one
 * began, and never while one is under way. The requests that woke it are
 * still refused; those after a successful attempt go in. No callback runs
 * inside this call. */
void pgpipe_wake(pgpipe_t *p);

pgpipe_status_t pgpipe_status(const pgpipe_t *p);
/* Why the last attempt failed or the connection was lost; "" when none
 * since the last success. */
const char *pgpipe_last_error(const pgpipe_t *p);
/* Groups submitted and not answered yet (the pipe's own set-up excluded). */
int pgpipe_pending(const pgpipe_t *p);

/* libpq's messages on one line (they end with a newline and may span
 * several): src, or "unknown error" when empty, into dst. */
void pgpipe_oneline(char *dst, size_t len, const char *src);

/* 0 if conninfo can be used: a plain database name, or a conninfo or URI
 * that parses; else -1 with the reason in err. */
int pgpipe_conninfo_check(const char *conninfo, char *err, size_t errlen);

#endif
