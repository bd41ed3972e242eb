/*
 * internal.h - the insides of the store actor, shared by its files and by
 * nothing else: store.c (the actor, the write side: jobs, claims, images,
 * stops, cancels), create.c (a job's creation), batch.c (the cancel of many jobs) and reads.c (the
 * read side: event reads, the job list). The operations are the rows of queries.def; see store.c's
 * header.
 */
#ifndef IMAGEJOBS_STORE_INTERNAL_H
#define IMAGEJOBS_STORE_INTERNAL_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "actors/store.h"
#include "actors/store/pgpipe.h"
#include "runtime/uuid.h"

typedef struct store store_t;
typedef struct op op_t;

struct store {
    actor_t *self;
    pgpipe_t *pipe;
    pgpipe_config_t pipe_cfg;
    pgpipe_t *clock_pipe; /* the job view's barriers (Q_CLOCK), on a connection of their own */
    char clock_app_name[80];
    char *conninfo;
    char *instance;
    double lease_s;
    char app_name[64];
    ev_timer reap;      /* ends cancelled jobs' abandoned combinations */
    ev_timer deadlines; /* cancels the jobs whose deadline passed */
    /* Cancels received while PostgreSQL was unreachable, written on its
     * return: one per job (the first time, the strongest mode). */
    struct kept_cancel {
        char job_id[UUID_STR_LEN];
        cancel_mode_t mode;
        int64_t requested_at_us;
        char reason[16];
        char by[128];
    } * kept;
    size_t nkept;
    struct store_owner *owners; /* owners.c: job id -> API key, remembered */
};

/* Most cancels kept for PostgreSQL's return; past it a cancel is refused
 * with 503, honestly. */
#define KEPT_MAX 10000
/* Most events one read returns (a reader pages through more). */
#define EVENTS_READ_MAX 1000

/* ---------------------------------------------------------- the query table */

/* QUERY flags (queries.def) */
enum { Q_BINARY = 1, Q_OWN_ERRORS = 2, Q_KEEP = 4, Q_CLOCK = 8 };

#define S_LIST(...) __VA_ARGS__

/* Statements, in table order. */
enum {
#define STATEMENT(id, types, sql) ST_##id,
#define QUERY(id, what, types, flags, group, reply, sql) ST_##id,
#include "actors/store/queries.def"
    ST_COUNT
};

/* Operations: one per QUERY row. */
enum {
#define QUERY(id, what, types, flags, group, reply, sql) OP_##id,
#include "actors/store/queries.def"
    OP_COUNT
};

/* Builds and sends the reply of an operation from its results: the
 * statements of its group, in order. */
typedef void (*reply_fn)(store_t *st, const op_t *op, const pgpipe_reply_t *r);

/* An operation: its statements (a group) and its reply. */
typedef struct {
    const char *what;
    int flags;
    int nstmts;
    int stmts[PGPIPE_MAX_STMTS];
    reply_fn reply;
} query_t;

/* A request on its way through the pipeline. */
struct op {
    store_t *st;
    const query_t *q;
    actor_caller_t caller;
    char job_id[UUID_STR_LEN];
    cancel_mode_t mode; /* a cancel's, for the event once it landed */
    int64_t requested_at_us;
    char reason[16]; /* a cancel's reason and who asked, for a kept one */
    char by[128];
    bool dry_run;                    /* a cancel of many that only says what it would do */
    uint64_t owner;                  /* the caller's API key (0: any job), or a create's */
    int64_t observed_us, stopped_us; /* a stop's times, for the metrics */
    char *key, *body;                /* a create's Idempotency-Key and canonical body (owned) */
    pgpipe_group_t *group;           /* until submitted */
};

/* Each operation's reply (store.c, reads.c). */
#define QUERY(id, what, types, flags, group, reply, sql)                                           \
    void reply(store_t *st, const op_t *op, const pgpipe_reply_t *r);
#include "actors/store/queries.def"

/* The operation of kind `kind` answering req (NULL: nobody waits); job_id
 * (may be NULL) is kept for the reply. Parameters follow with
 * pgpipe_param_*(op->group, ...). */
op_t *store_op_new(store_t *st, int kind, const msg_t *req, const char *job_id);

/* Into the pipeline now if connected, to wait for the first connection if
 * it is under way, else answered -EAGAIN at once. */
void store_op_submit(op_t *op);

/* For a reply of an operation with Q_OWN_ERRORS: answers op with its failed
 * statement's error and returns true, when it failed. */
bool store_op_failed(store_t *st, const op_t *op, const pgpipe_reply_t *r);

/* Sends m (consumed) to op's caller. */
void store_send_reply(store_t *st, const op_t *op, msg_t **m);

/* Refuses req (-EINVAL, "<field> is not a UUID") unless s is one; true
 * when it refused. */
bool store_bad_uuid(store_t *st, const msg_t *req, const char *s, const char *field);

/* The read side's handlers (reads.c). */
void store_on_events_read(actor_t *self, msg_t *msg);
void store_on_job_list(actor_t *self, msg_t *msg);
void store_on_keys_read(actor_t *self, msg_t *msg);
/* Create a job, once per Idempotency-Key (create.c). */
void store_on_job_create(actor_t *self, msg_t *msg);
void store_on_job_resume(actor_t *self, msg_t *msg);
/* Cancels the jobs whose deadline has passed (deadlines.c). */
void store_deadlines_check(store_t *st);
#define DEADLINE_PERIOD_S 0.25
/* Who owns a job (owners.c): remembered at create and when read; a job's
 * owner (0: none) never changes. known: false when it is not remembered. */
void store_owner_remember(store_t *st, const char *job_id, uint64_t owner);
bool store_owner_known(const store_t *st, const char *job_id, uint64_t *owner);
void store_owners_free(store_t *st);
/* The job view's reads (view.c). */
void store_on_job_view_read(actor_t *self, msg_t *msg);
void store_on_event_clock_read(actor_t *self, msg_t *msg);
/* Cancel many (batch.c). */
void store_on_cancel_many(actor_t *self, msg_t *msg);
void store_on_combination_cancel(actor_t *self, msg_t *msg);
/* The webhook outbox (webhooks.c). */
void store_on_webhook_claim(actor_t *self, msg_t *msg);
void store_on_webhook_result(actor_t *self, msg_t *msg);

#endif
