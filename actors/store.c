/*
 * store.c - the job-store actor: PostgreSQL through libpq's asynchronous API,
 * in pipeline mode, inside the actor's libev loop.
 *
 * Key constraint: the loop never blocks. The connection is opened with
 * PQconnectStart/PQconnectPoll, set non-blocking, and put in pipeline mode;
 * every request becomes a short group of prepared statements followed by a
 * Sync (one implicit transaction), appended to the pipeline at once. One
 * ev_io on PQsocket reads results (PQconsumeInput, PQisBusy, PQgetResult)
 * and, while PQflush has output left, waits for write readiness. Results
 * come back in the order the groups were sent, so a FIFO of in-flight
 * operations matches each result to the request it answers: many concurrent
 * requests share one connection and one round trip instead of queueing
 * behind each other's latency.
 *
 * Down or lost connection: every queued and in-flight request is answered
 * ERROR -EAGAIN with the reason, new requests too until a reconnect (100 ms
 * doubling to 5 s) succeeds. State changes are logged once each.
 *
 * The SQL, the schema and the locking order that keeps concurrent instances
 * correct are explained in docs/store.md.
 */
#include "config.h"

#include "actors/store.h"

#include "runtime/log.h"
#include "runtime/names.h"
#include "runtime/uuid.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STORE_ACTOR "store"
#define LEASE_DEFAULT_S 15.
#define BACKOFF_MIN_S 0.1
#define BACKOFF_MAX_S 5.
#define CONNECT_TIMEOUT_S 5.
/* Operations in the pipeline at once; more wait in a local queue. Bounds
 * libpq's buffers, not throughput: 256 groups are far more than one
 * round trip's worth. */
#define MAX_INFLIGHT 256
#define MAX_PARAMS 10
#define MAX_COMBINATIONS 10000
/* Advisory lock key of store_migrate(): "imagejob" in ASCII. */
#define MIGRATE_LOCK_KEY "7596553454011015010"

/* Type OIDs (catalog/pg_type_d.h is a server header). */
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT4 23
#define OID_TEXT 25
#define OID_FLOAT8 701
#define OID_UUID 2950
#define OID_JSONB 3802

/* ------------------------------------------------------------------ schema */

/* Each step runs once, in order, inside store_migrate()'s transaction; step
 * N brings the schema to version N. Append steps, never edit one. */
static const char *const s_migrations[STORE_SCHEMA_VERSION] = {
    /* 1: jobs, their combinations, their images */
    "CREATE TABLE jobs ("
    "  id uuid PRIMARY KEY,"
    "  status text NOT NULL DEFAULT 'pending' CHECK (status IN"
    "    ('pending', 'processing', 'completed', 'failed', 'user_cancelled')),"
    "  prompt text NOT NULL,"
    "  params jsonb NOT NULL,"
    "  total_images integer NOT NULL CHECK (total_images > 0),"
    "  completed_images integer NOT NULL DEFAULT 0 CHECK (completed_images >= 0),"
    "  generated_attach_ids uuid[] NOT NULL DEFAULT '{}',"
    "  cancel_requested_at timestamptz,"
    "  cancel_mode text CHECK (cancel_mode IN ('immediate', 'after_current_image')),"
    "  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    "  started_at timestamptz,"
    "  finished_at timestamptz,"
    "  error text);"
    "CREATE TABLE job_tasks ("
    "  job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  combination integer NOT NULL CHECK (combination >= 0),"
    "  seed bigint NOT NULL,"
    "  style text NOT NULL DEFAULT '',"
    "  status text NOT NULL DEFAULT 'pending' CHECK (status IN"
    "    ('pending', 'processing', 'completed', 'failed', 'cancelled')),"
    "  completed_images integer NOT NULL DEFAULT 0 CHECK (completed_images >= 0),"
    "  claimed_by text,"
    "  lease_until timestamptz,"
    "  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    "  started_at timestamptz,"
    "  cancel_observed_at timestamptz,"
    "  stopped_at timestamptz,"
    "  error text,"
    "  PRIMARY KEY (job_id, combination));"
    /* the claim scans only unfinished tasks, oldest job first */
    "CREATE INDEX job_tasks_open ON job_tasks (created_at, job_id, combination)"
    "  WHERE status IN ('pending', 'processing');"
    "CREATE TABLE attachments ("
    "  id uuid PRIMARY KEY,"
    "  job_id uuid NOT NULL,"
    "  combination integer NOT NULL,"
    "  image_index integer NOT NULL CHECK (image_index >= 0),"
    "  content_type text NOT NULL,"
    "  bytes bytea NOT NULL,"
    "  width integer,"
    "  height integer,"
    "  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    "  UNIQUE (job_id, combination, image_index),"
    "  FOREIGN KEY (job_id, combination) REFERENCES job_tasks ON DELETE CASCADE);",
};

/* -------------------------------------------------------------- statements */

/* A timestamp as JSON-ready ISO 8601 UTC text with microseconds, or NULL. */
#define ISO(ts) "to_char((" ts ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
/* µs since the epoch ($n, int8) as a timestamptz; NULL when 0 or less. */
#define FROM_US(p) "(CASE WHEN " p " > 0 THEN to_timestamp(" p "::float8 / 1000000) END)"

enum {
    ST_JOB_CREATE,
    ST_JOB_GET,
    ST_JOB_CANCEL,
    ST_TASKS_CANCEL,
    ST_JOB_FINISH,
    ST_ATTACHMENT_GET,
    ST_HEALTH,
    ST_WORK_CLAIM,
    ST_JOB_LOCK,
    ST_IMAGE_RECORD,
    ST_CANCEL_FROM_STOP,
    ST_TASK_STOP,
    ST_LEASE_RENEW,
    ST_COUNT
};

typedef struct {
    const char *name;
    int nparams;
    Oid types[MAX_PARAMS];
    const char *sql;
} stmt_t;

/* Every statement is prepared once per connection. The statements of one
 * operation take the same parameter list; a helper statement in a group
 * (lock, finish) uses a prefix of it ($1 = job id). */
static const stmt_t s_stmts[ST_COUNT] = {
    /* $1 id, $2 prompt, $3 combinations, $4 images per combination, $5 width,
     * $6 height, $7 steps: the job and one task per combination, one
     * statement (FK checks run at its end, after both inserts). */
    [ST_JOB_CREATE] = {"ij_job_create", 7,
        {OID_UUID, OID_TEXT, OID_JSONB, OID_INT4, OID_INT4, OID_INT4, OID_INT4},
        "WITH j AS ("
        "  INSERT INTO jobs (id, prompt, params, total_images)"
        "  VALUES ($1, $2, jsonb_build_object('width', $5, 'height', $6, 'steps', $7,"
        "          'images_per_combination', $4, 'combinations', jsonb_array_length($3)),"
        "          jsonb_array_length($3) * $4)"
        "  RETURNING id, status, total_images, created_at),"
        " t AS ("
        "  INSERT INTO job_tasks (job_id, combination, seed, style, created_at)"
        "  SELECT j.id, e.ord - 1, (e.v ->> 'seed')::bigint, COALESCE(e.v ->> 'style', ''),"
        "         j.created_at"
        "  FROM j, jsonb_array_elements($3) WITH ORDINALITY AS e (v, ord))"
        "SELECT id, status, total_images FROM j"},

    /* $1 id: the GET document, built here as JSON */
    [ST_JOB_GET] = {"ij_job_get", 1, {OID_UUID},
        "SELECT json_build_object("
        " 'job_id', j.id,"
        " 'job_status', j.status,"
        " 'prompt', j.prompt,"
        " 'width', (j.params ->> 'width')::int,"
        " 'height', (j.params ->> 'height')::int,"
        " 'steps', (j.params ->> 'steps')::int,"
        " 'images_per_combination', (j.params ->> 'images_per_combination')::int,"
        " 'completed_images', j.completed_images,"
        " 'total_images', j.total_images,"
        " 'generated_attach_ids', to_json(j.generated_attach_ids),"
        " 'cancel_requested', j.cancel_requested_at IS NOT NULL,"
        " 'cancel_requested_at', " ISO("j.cancel_requested_at") ","
        " 'cancel_mode', j.cancel_mode,"
        " 'created_at', " ISO("j.created_at") ","
        " 'started_at', " ISO("j.started_at") ","
        " 'finished_at', " ISO("j.finished_at") ","
        " 'error', j.error,"
        " 'combinations', COALESCE((SELECT json_agg(json_build_object("
        "     'combination', t.combination,"
        "     'seed', t.seed,"
        "     'style', t.style,"
        "     'status', t.status,"
        "     'completed_images', t.completed_images,"
        "     'total_images', (j.params ->> 'images_per_combination')::int,"
        "     'claimed_by', t.claimed_by,"
        "     'started_at', " ISO("t.started_at") ","
        "     'cancel_observed_at', " ISO("t.cancel_observed_at") ","
        "     'stopped_at', " ISO("t.stopped_at") ","
        "     'error', t.error) ORDER BY t.combination)"
        "   FROM job_tasks t WHERE t.job_id = j.id), '[]'::json))::text "
        "FROM jobs j WHERE j.id = $1"},

    /* $1 id, $2 mode, $3 received at (µs): the cancel, one statement. FOR
     * UPDATE (not NO KEY UPDATE) so that it conflicts with the KEY SHARE a
     * claim takes: no claim starts on a job while its cancel is written.
     * Returns the status and counters from before, whether a cancel was
     * already requested, and the cancel time that stands. */
    [ST_JOB_CANCEL] = {"ij_job_cancel", 3, {OID_UUID, OID_TEXT, OID_INT8},
        "WITH locked AS ("
        "  SELECT id, status, completed_images, total_images, cancel_requested_at"
        "  FROM jobs WHERE id = $1 AND status IN ('pending', 'processing') FOR UPDATE),"
        /* an ended job is only read: locking it would give the no-op a
         * transaction id and a WAL flush at commit (a repeated cancel from
         * an impatient user costs a disk flush otherwise). A job that ends
         * while we wait for its lock reads as it was when the statement
         * began: the answer says "cancel sent" to a job that just ended,
         * which then simply stays ended. */
        " prior AS ("
        "  SELECT * FROM locked"
        "  UNION ALL"
        "  SELECT id, status, completed_images, total_images, cancel_requested_at"
        "  FROM jobs WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM locked)),"
        " upd AS ("
        "  UPDATE jobs j SET"
        "    cancel_requested_at = COALESCE(j.cancel_requested_at, " FROM_US("$3") ","
        "                                   clock_timestamp()),"
        "    cancel_mode = COALESCE(j.cancel_mode, $2),"
        "    status = CASE WHEN j.status = 'pending' THEN 'user_cancelled' ELSE j.status END,"
        "    finished_at = CASE WHEN j.status = 'pending' THEN clock_timestamp()"
        "                       ELSE j.finished_at END"
        "  FROM locked WHERE j.id = locked.id"
        "  RETURNING j.status, j.cancel_requested_at)"
        "SELECT CASE WHEN u.status IS NULL AND p.status = 'user_cancelled'"
        "             AND p.cancel_requested_at = " FROM_US("$3") " THEN 'processing'"
        "             ELSE p.status END,"
        "       COALESCE(u.status, p.status), p.completed_images, p.total_images,"
        "       p.cancel_requested_at IS DISTINCT FROM " FROM_US("$3")
        "       AND p.cancel_requested_at IS NOT NULL,"
        "       COALESCE((extract(epoch FROM COALESCE(u.cancel_requested_at,"
        "                 p.cancel_requested_at)) * 1000000)::int8, 0)"
        "FROM prior p LEFT JOIN upd u ON true"},

    /* $1 id: combinations nobody runs of a job with a cancel requested will
     * never run: end them now (after a cancel, and after a release). */
    [ST_TASKS_CANCEL] = {"ij_tasks_cancel", 1, {OID_UUID},
        "UPDATE job_tasks t SET status = 'cancelled', stopped_at = clock_timestamp(),"
        "  lease_until = NULL "
        "FROM jobs j WHERE j.id = $1 AND t.job_id = j.id AND t.status = 'pending'"
        "  AND j.cancel_requested_at IS NOT NULL"},

    /* $1 id: the job's final status, set once, when no combination is left
     * to run. Runs after the job row is locked by an earlier statement of
     * the same transaction, so it sees every task update committed before
     * (READ COMMITTED: a fresh snapshot per statement). */
    [ST_JOB_FINISH] = {"ij_job_finish", 1, {OID_UUID},
        "UPDATE jobs j SET"
        "  status = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'user_cancelled'"
        "                WHEN EXISTS (SELECT 1 FROM job_tasks t"
        "                             WHERE t.job_id = j.id AND t.status = 'failed')"
        "                THEN 'failed' ELSE 'completed' END,"
        "  finished_at = clock_timestamp(),"
        "  error = COALESCE(j.error, (SELECT t.error FROM job_tasks t"
        "                             WHERE t.job_id = j.id AND t.status = 'failed'"
        "                             ORDER BY t.combination LIMIT 1)) "
        "WHERE j.id = $1 AND j.status IN ('pending', 'processing')"
        "  AND NOT EXISTS (SELECT 1 FROM job_tasks t WHERE t.job_id = j.id"
        "                  AND t.status IN ('pending', 'processing')) "
        "RETURNING j.status"},

    /* $1 id (binary result) */
    [ST_ATTACHMENT_GET] = {"ij_attachment_get", 1, {OID_UUID},
        "SELECT content_type, bytes FROM attachments WHERE id = $1"},

    [ST_HEALTH] = {"ij_health", 0, {0},
        "SELECT COALESCE(max(version), 0) FROM schema_version"},

    /* $1 instance, $2 lease (s): claim one combination. The task row is
     * locked SKIP LOCKED (concurrent claimers pass each other) and the job
     * row KEY SHARE SKIP LOCKED: shared with other claimers, skipped while a
     * cancel holds it. A pending task, or a processing one whose holder's
     * lease ran out (it crashed), of a job not cancelled and not finished. */
    [ST_WORK_CLAIM] = {"ij_work_claim", 2, {OID_TEXT, OID_FLOAT8},
        "WITH c AS ("
        "  SELECT t.job_id, t.combination FROM job_tasks t JOIN jobs j ON j.id = t.job_id"
        "  WHERE t.status IN ('pending', 'processing')"
        "    AND (t.status = 'pending' OR t.lease_until < now())"
        "    AND j.status IN ('pending', 'processing') AND j.cancel_requested_at IS NULL"
        "  ORDER BY t.created_at, t.job_id, t.combination"
        "  LIMIT 1"
        "  FOR NO KEY UPDATE OF t SKIP LOCKED FOR KEY SHARE OF j SKIP LOCKED),"
        " ut AS ("
        "  UPDATE job_tasks t SET status = 'processing', claimed_by = $1,"
        "    lease_until = now() + make_interval(secs => $2),"
        "    started_at = COALESCE(t.started_at, now())"
        "  FROM c WHERE t.job_id = c.job_id AND t.combination = c.combination"
        "  RETURNING t.job_id, t.combination, t.seed, t.style, t.completed_images),"
        " uj AS ("
        "  UPDATE jobs j SET status = 'processing', started_at = COALESCE(j.started_at, now())"
        "  FROM c WHERE j.id = c.job_id AND j.status = 'pending' RETURNING j.id)"
        "SELECT ut.job_id, ut.combination,"
        "  j.prompt || CASE WHEN ut.style <> '' THEN ', ' || ut.style ELSE '' END,"
        "  ut.seed, (j.params ->> 'width')::int, (j.params ->> 'height')::int,"
        "  (j.params ->> 'steps')::int, (j.params ->> 'images_per_combination')::int,"
        "  ut.completed_images, j.cancel_mode "
        "FROM ut JOIN jobs j ON j.id = ut.job_id"},

    /* $1 id: first statement of a recording or a stop. Every writer locks
     * the job row before any task row (a claim never waits for one), so
     * writers of one job take turns and never deadlock. */
    [ST_JOB_LOCK] = {"ij_job_lock", 1, {OID_UUID},
        "SELECT status FROM jobs WHERE id = $1 FOR NO KEY UPDATE"},

    /* The TASK_STOPPED parameters ($1 id, $3 outcome, $8 cancel received
     * at (µs), $9 its mode): a generator stopped by a cancel event, which
     * the HTTP actor publishes before its own write of the cancel, records
     * the cancel if that write has not landed yet, so the job still ends
     * user_cancelled (and the cancel is durable even if that write never
     * lands). The same µs value lets the cancel statement recognise it. */
    [ST_CANCEL_FROM_STOP] = {"ij_cancel_from_stop", 9,
        {OID_UUID, OID_INT4, OID_TEXT, OID_INT8, OID_INT8, OID_TEXT, OID_TEXT, OID_INT8,
         OID_TEXT},
        "UPDATE jobs SET"
        "  cancel_requested_at = COALESCE(cancel_requested_at, " FROM_US("$8") "),"
        "  cancel_mode = COALESCE(cancel_mode, $9)"
        "WHERE id = $1 AND $3 = 'cancelled' AND $8 > 0 AND $9 IS NOT NULL"
        "  AND status IN ('pending', 'processing')"},

    /* $1 id, $2 combination, $3 image index, $4 new attachment id, $5 png,
     * $6 width, $7 height, $8 lease (s): one image, idempotent on (job,
     * combination, index). Counters move only when the row was inserted; a
     * repeat returns the attachment recorded first. */
    [ST_IMAGE_RECORD] = {"ij_image_record", 8,
        {OID_UUID, OID_INT4, OID_INT4, OID_UUID, OID_BYTEA, OID_INT4, OID_INT4, OID_FLOAT8},
        "WITH j AS ("
        "  SELECT id, status, completed_images, cancel_mode,"
        "         (params ->> 'images_per_combination')::int AS per"
        "  FROM jobs WHERE id = $1),"
        " t AS ("
        "  SELECT k.job_id, k.combination FROM job_tasks k, j"
        "  WHERE k.job_id = $1 AND k.combination = $2"
        "    AND k.status IN ('pending', 'processing')"
        "    AND j.status IN ('pending', 'processing') AND $3 < j.per"
        "  FOR NO KEY UPDATE OF k),"
        " ins AS ("
        "  INSERT INTO attachments (id, job_id, combination, image_index, content_type,"
        "                           bytes, width, height)"
        "  SELECT $4, t.job_id, t.combination, $3, 'image/png', $5, $6, $7 FROM t"
        "  ON CONFLICT (job_id, combination, image_index) DO NOTHING"
        "  RETURNING id),"
        " ut AS ("
        "  UPDATE job_tasks x SET"
        "    completed_images = x.completed_images + (SELECT count(*) FROM ins),"
        "    lease_until = CASE WHEN x.status = 'processing'"
        "                       THEN now() + make_interval(secs => $8) END"
        "  FROM t WHERE x.job_id = t.job_id AND x.combination = t.combination"
        "  RETURNING x.completed_images),"
        " uj AS ("
        "  UPDATE jobs y SET completed_images = y.completed_images + 1,"
        "    generated_attach_ids = array_append(y.generated_attach_ids, ins.id)"
        "  FROM ins WHERE y.id = $1"
        "  RETURNING y.completed_images)"
        "SELECT COALESCE((SELECT id FROM ins),"
        "                (SELECT a.id FROM attachments a WHERE a.job_id = $1"
        "                 AND a.combination = $2 AND a.image_index = $3)),"
        "  COALESCE((SELECT completed_images FROM uj), j.completed_images),"
        "  j.cancel_mode, (SELECT count(*) FROM t), j.per,"
        "  (SELECT s.status FROM job_tasks s WHERE s.job_id = $1 AND s.combination = $2) "
        "FROM j"},

    /* $1 id, $2 combination, $3 outcome, $4 observed (µs), $5 stopped (µs),
     * $6 error, $7 instance ('' = any): the combination's end, applied only
     * while it has not ended and, with an instance, only while that instance
     * holds it (a holder whose lease lapsed cannot end it). A release
     * makes it claimable again at once (or ends it, if the job is being
     * cancelled). Returns the new status (NULL: not applied) and the status
     * and holder it had. */
    [ST_TASK_STOP] = {"ij_task_stop", 7,
        {OID_UUID, OID_INT4, OID_TEXT, OID_INT8, OID_INT8, OID_TEXT, OID_TEXT},
        "WITH u AS ("
        "  UPDATE job_tasks t SET"
        "    status = CASE WHEN $3 <> 'released' THEN $3"
        "                  WHEN j.cancel_requested_at IS NULL THEN 'pending'"
        "                  ELSE 'cancelled' END,"
        "    claimed_by = CASE WHEN $3 = 'released' THEN NULL ELSE t.claimed_by END,"
        "    lease_until = NULL,"
        "    cancel_observed_at = COALESCE(" FROM_US("$4") ", t.cancel_observed_at),"
        "    stopped_at = CASE WHEN $3 = 'released' AND j.cancel_requested_at IS NULL"
        "                      THEN t.stopped_at"
        "                      ELSE COALESCE(" FROM_US("$5") ", clock_timestamp()) END,"
        "    error = COALESCE($6, t.error)"
        "  FROM jobs j"
        "  WHERE j.id = t.job_id AND t.job_id = $1 AND t.combination = $2"
        "    AND (($7 = '' AND t.status IN ('pending', 'processing'))"
        "         OR (t.status = 'processing' AND t.claimed_by = $7))"
        "  RETURNING t.status)"
        "SELECT (SELECT status FROM u), s.status, s.claimed_by FROM job_tasks s "
        "WHERE s.job_id = $1 AND s.combination = $2"},

    /* $1 id, $2 combination, $3 instance, $4 lease (s): extend the holder's
     * lease; with the job's durable cancel. No row: the claim is lost. */
    [ST_LEASE_RENEW] = {"ij_lease_renew", 4, {OID_UUID, OID_INT4, OID_TEXT, OID_FLOAT8},
        "WITH t AS ("
        "  UPDATE job_tasks SET lease_until = now() + make_interval(secs => $4)"
        "  WHERE job_id = $1 AND combination = $2 AND status = 'processing'"
        "    AND claimed_by = $3"
        "  RETURNING job_id)"
        "SELECT j.cancel_mode FROM t JOIN jobs j ON j.id = t.job_id"},
};

/* --------------------------------------------------------------- the actor */

typedef struct store store_t;
typedef struct op op_t;
typedef void (*op_done_fn)(store_t *st, op_t *op);

/* What a request becomes: statements sent as one group, then a Sync. */
typedef struct {
    const char *what;
    int nstmts;
    int stmts[5];
    int binary; /* results in binary format (bytea without hex) */
    op_done_fn done;
} op_kind_t;

/* The connection's first group: SET lock_timeout, then every PREPARE. */
#define SETUP_SQL "SET lock_timeout = '10s'"
#define OP_MAX_RESULTS (ST_COUNT + 1) /* the set-up group is the largest */

struct op {
    op_t *next;
    const op_kind_t *kind;
    char sender[MSG_NAME_MAX]; /* "" for the store's own prepare group */
    uint64_t corr;
    int nparams;
    char *values[MAX_PARAMS];
    int lengths[MAX_PARAMS];
    int formats[MAX_PARAMS];
    int nres;
    PGresult *res[OP_MAX_RESULTS];
    char job_id[UUID_STR_LEN];
    cancel_mode_t mode;     /* a cancel's, for the event once it landed */
    int64_t requested_at_us;
};

typedef enum {
    PG_DOWN,       /* no connection; the retry timer runs */
    PG_CONNECTING, /* PQconnectPoll in progress */
    PG_PREPARING,  /* connected; the prepare group is in the pipeline */
    PG_UP
} pg_state_t;

struct store {
    actor_t *self;
    struct ev_loop *loop;
    char *conninfo;
    char *instance;
    double lease_s;
    char app_name[64];

    PGconn *conn;
    pg_state_t state;
    bool outage; /* the last attempt failed or the link dropped: answer at once */
    bool want_write;
    bool awaiting_null; /* a statement's result is in; libpq owes its NULL */
    ev_io io;
    ev_timer retry;
    ev_timer connect_timer;
    double backoff;
    char last_error[256];

    op_t *inflight, *inflight_tail; /* sent, in pipeline order */
    int ninflight;
    op_t *waiting, *waiting_tail; /* not sent yet */
};

static void s_down(store_t *st, const char *why);
static void s_progress(store_t *st);

/* Stopping: the loop may end once nothing is queued or in flight (the
 * claims generators gave back on their way out are written by then). */
static void s_maybe_stopped(store_t *st)
{
    if (actor_is_stopping(st->self) && !st->inflight && !st->waiting)
        actor_stop_ready(st->self);
}

/* ------------------------------------------------------------------ helpers */

/* libpq messages end with a newline and may span lines: one log line. */
static void s_oneline(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src && *src ? src : "unknown error");
    char *w = dst;
    for (const char *p = dst; *p; p++) {
        char c = *p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p;
        if (c == ' ' && (w == dst || w[-1] == ' '))
            continue;
        *w++ = c;
    }
    while (w > dst && w[-1] == ' ')
        w--;
    *w = '\0';
}

static char *s_xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

static char *s_printf_dup(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *s_printf_dup(const char *fmt, ...)
{
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return s_xstrdup(buf);
}

static void s_queue_push(op_t **head, op_t **tail, op_t *op)
{
    op->next = NULL;
    if (*tail)
        (*tail)->next = op;
    else
        *head = op;
    *tail = op;
}

static op_t *s_queue_pop(op_t **head, op_t **tail)
{
    op_t *op = *head;
    if (op) {
        *head = op->next;
        if (!*head)
            *tail = NULL;
        op->next = NULL;
    }
    return op;
}

/* ---------------------------------------------------------------- replies */

/* Sends reply to the requester of op; consumes reply. */
static void s_reply(store_t *st, const op_t *op, msg_t **reply)
{
    if (op->sender[0]) {
        msg_t req;
        memset(&req, 0, sizeof req);
        req.corr = op->corr;
        memcpy(req.sender, op->sender, MSG_NAME_MAX);
        if (actor_reply(st->self, &req, *reply) < 0) /* the requester stopped */
            log_debug("reply %s to %s not delivered: %s", msg_type_name((*reply)->type),
                      op->sender, strerror(errno));
    }
    msg_destroy(reply);
}

static void s_reply_error(store_t *st, const op_t *op, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void s_reply_error(store_t *st, const op_t *op, int code, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    msg_t *m = msg_new(MSG_ERROR);
    m->error.code = code;
    msg_set_str(&m->error.reason, reason);
    s_reply(st, op, &m);
}

/* The same for a request refused before it became an operation. */
static void s_refuse(store_t *st, const msg_t *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void s_refuse(store_t *st, const msg_t *req, int code, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    msg_t *m = msg_new(MSG_ERROR);
    m->error.code = code;
    msg_set_str(&m->error.reason, reason);
    if (actor_reply(st->self, req, m) < 0)
        log_debug("error reply to %s not delivered: %s", req->sender, strerror(errno));
    msg_destroy(&m);
}

/* ------------------------------------------------------------- operations */

static op_t *s_op_new(const op_kind_t *kind, const msg_t *req)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        abort();
    op->kind = kind;
    if (req) {
        memcpy(op->sender, req->sender, MSG_NAME_MAX);
        op->sender[MSG_NAME_MAX - 1] = '\0';
        op->corr = req->corr;
    }
    return op;
}

static void s_op_free_params(op_t *op)
{
    for (int i = 0; i < op->nparams; i++) {
        free(op->values[i]);
        op->values[i] = NULL;
    }
    op->nparams = 0;
}

static void s_op_free(op_t **opp)
{
    op_t *op = *opp;
    if (!op)
        return;
    s_op_free_params(op);
    for (int i = 0; i < op->nres; i++)
        PQclear(op->res[i]);
    free(op);
    *opp = NULL;
}

/* Parameters, in $n order. Text format unless said otherwise; a NULL
 * string is SQL NULL. */
static void s_param_take(op_t *op, char *value, int length, int format)
{
    if (op->nparams >= MAX_PARAMS)
        abort(); /* our own statement table is wrong */
    op->values[op->nparams] = value;
    op->lengths[op->nparams] = length;
    op->formats[op->nparams] = format;
    op->nparams++;
}

static void s_param_str(op_t *op, const char *s)
{
    s_param_take(op, s ? s_xstrdup(s) : NULL, 0, 0);
}

static void s_param_u64(op_t *op, uint64_t v)
{
    s_param_take(op, s_printf_dup("%" PRIu64, v), 0, 0);
}

static void s_param_i64(op_t *op, int64_t v)
{
    s_param_take(op, s_printf_dup("%" PRId64, v), 0, 0);
}

static void s_param_f64(op_t *op, double v)
{
    s_param_take(op, s_printf_dup("%.17g", v), 0, 0);
}

/* Takes the buffer out of the message (no copy of a PNG). */
static void s_param_bin_steal(op_t *op, msg_bin_t *b)
{
    s_param_take(op, (char *)b->data, (int)b->size, 1);
    b->data = NULL;
    b->size = 0;
}

/* The first statement of op that failed, or NULL. */
static const PGresult *s_op_error(const op_t *op)
{
    for (int i = 0; i < op->nres; i++)
        if (PQresultStatus(op->res[i]) == PGRES_FATAL_ERROR
            || PQresultStatus(op->res[i]) == PGRES_BAD_RESPONSE
            || PQresultStatus(op->res[i]) == PGRES_NONFATAL_ERROR)
            return op->res[i];
    return NULL;
}

/* A PostgreSQL error as an errno for the requester: refused input is
 * -EINVAL, a taken id -EEXIST, what may work on a retry (connection,
 * deadlock, serialization, shutdown, resources) -EAGAIN, else -EIO. */
static int s_pg_errno(const char *sqlstate)
{
    if (!sqlstate || strlen(sqlstate) != 5)
        return -EIO;
    if (strcmp(sqlstate, "23505") == 0)
        return -EEXIST;
    if (strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0)
        return -EINVAL;
    if (strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "40", 2) == 0
        || strncmp(sqlstate, "53", 2) == 0 || strncmp(sqlstate, "57", 2) == 0
        || strncmp(sqlstate, "55", 2) == 0)
        return -EAGAIN;
    return -EIO;
}

/* Answers op with its failed statement's error; true if it had one. A
 * statement cut short without an error (fewer results than statements)
 * counts as a lost connection. */
static bool s_op_failed(store_t *st, op_t *op)
{
    const PGresult *r = s_op_error(op);
    if (r) {
        char msg[300];
        s_oneline(msg, sizeof msg, PQresultErrorMessage(r));
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        int code = s_pg_errno(state);
        if (code == -EIO)
            log_warn("%s failed: %s (SQLSTATE %s)", op->kind->what, msg, state ? state : "?");
        s_reply_error(st, op, code, "%s: %s", op->kind->what, msg);
        return true;
    }
    if (op->nres < op->kind->nstmts) {
        s_reply_error(st, op, -EAGAIN, "%s: PostgreSQL returned no result", op->kind->what);
        return true;
    }
    return false;
}

static const char *s_val(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

static int64_t s_i64(const PGresult *r, int row, int col)
{
    const char *v = s_val(r, row, col);
    return v ? strtoll(v, NULL, 10) : 0;
}

/* A cancel mode column: NULL is NONE; an unknown text too (the schema's
 * CHECK allows none). */
static cancel_mode_t s_mode(const PGresult *r, int row, int col)
{
    const char *v = s_val(r, row, col);
    cancel_mode_t m = CANCEL_MODE_NONE;
    if (v && cancel_mode_parse(v, strlen(v), &m) < 0)
        m = CANCEL_MODE_NONE;
    return m;
}

/* A status column; -1 for a value the table does not know. */
static int s_status(const PGresult *r, int row, int col, job_status_t *out)
{
    const char *v = s_val(r, row, col);
    return v ? job_status_parse(v, strlen(v), out) : -1;
}

/* A cancel mode as a statement parameter: NONE is NULL. */
static const char *s_mode_param(cancel_mode_t m)
{
    return m == CANCEL_MODE_NONE ? NULL : cancel_mode_name(m);
}

/* ------------------------------------------------------------ connection */

static void s_watch(store_t *st, int events, bool force)
{
    int fd = PQsocket(st->conn);
    if (!force && ev_is_active(&st->io) && st->io.fd == fd
        && (st->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    /* stop and start, not just set: during the connect the socket may be
     * closed and replaced by one with the same number */
    ev_io_stop(st->loop, &st->io);
    if (fd < 0)
        return;
    ev_io_set(&st->io, fd, events);
    ev_io_start(st->loop, &st->io);
}

static void s_close(store_t *st)
{
    ev_io_stop(st->loop, &st->io);
    ev_timer_stop(st->loop, &st->connect_timer);
    if (st->conn) {
        PQfinish(st->conn);
        st->conn = NULL;
    }
    st->want_write = false;
    st->awaiting_null = false;
}

/* Answers every queued and in-flight operation with -EAGAIN. */
static void s_fail_all(store_t *st, const char *why)
{
    op_t *op;
    while ((op = s_queue_pop(&st->inflight, &st->inflight_tail))) {
        st->ninflight--;
        s_reply_error(st, op, -EAGAIN, "%s: %s", op->kind->what, why);
        s_op_free(&op);
    }
    st->ninflight = 0;
    while ((op = s_queue_pop(&st->waiting, &st->waiting_tail))) {
        s_reply_error(st, op, -EAGAIN, "%s: %s", op->kind->what, why);
        s_op_free(&op);
    }
    s_maybe_stopped(st);
}

static void s_schedule_retry(store_t *st)
{
    ev_timer_stop(st->loop, &st->retry);
    ev_timer_set(&st->retry, st->backoff, 0.);
    ev_timer_start(st->loop, &st->retry);
    st->backoff = st->backoff * 2 < BACKOFF_MAX_S ? st->backoff * 2 : BACKOFF_MAX_S;
}

/* The connection failed, was lost, or could not be used: answer everyone,
 * log the change once, and try again later. */
static void s_down(store_t *st, const char *why)
{
    char reason[256];
    s_oneline(reason, sizeof reason, why); /* why may live in the PGconn */
    pg_state_t was = st->state;
    s_close(st);
    st->state = PG_DOWN;

    char told[320];
    if (was == PG_UP) {
        log_warn("PostgreSQL connection lost: %s; reconnecting", reason);
        st->backoff = BACKOFF_MIN_S;
        snprintf(told, sizeof told, "PostgreSQL connection lost (%s)", reason);
    } else {
        if (!st->outage || strcmp(reason, st->last_error) != 0)
            log_warn("PostgreSQL unavailable: %s; retrying (backoff up to %.0f s)", reason,
                     BACKOFF_MAX_S);
        else
            log_debug("PostgreSQL still unavailable: %s", reason);
        snprintf(told, sizeof told, "PostgreSQL unavailable (%s)", reason);
    }
    snprintf(st->last_error, sizeof st->last_error, "%s", reason);
    st->outage = true;
    s_fail_all(st, told);
    s_schedule_retry(st);
}

static void s_prepare_done(store_t *st, op_t *op)
{
    const PGresult *r = s_op_error(op);
    if (r || op->nres < op->kind->nstmts) {
        char msg[200], why[300];
        s_oneline(msg, sizeof msg, r ? PQresultErrorMessage(r) : "no result");
        snprintf(why, sizeof why,
                 "cannot set up the session (is the schema migrated? run imagejobs "
                 "migrate): %s",
                 msg);
        s_down(st, why);
        return;
    }
    st->state = PG_UP;
    st->backoff = BACKOFF_MIN_S;
    log_info("PostgreSQL %s: %s:%s, database %s, server %d, pipeline mode",
             st->outage ? "reachable again" : "connected", PQhost(st->conn), PQport(st->conn),
             PQdb(st->conn), PQserverVersion(st->conn));
    st->outage = false;
    st->last_error[0] = '\0';
}

static const op_kind_t s_prepare_kind = {
    .what = "prepare", .nstmts = ST_COUNT + 1, .done = s_prepare_done};

static void s_notice(void *arg, const char *message)
{
    char line[300];
    s_oneline(line, sizeof line, message);
    log_debug("PostgreSQL: %s", line);
}

/* Connected: non-blocking, pipeline mode, and the session set up (lock
 * timeout, every statement prepared) as the first group in the pipeline;
 * requests may follow it at once. */
static void s_connected(store_t *st)
{
    ev_timer_stop(st->loop, &st->connect_timer);
    PQsetNoticeProcessor(st->conn, s_notice, st);
    if (PQsetnonblocking(st->conn, 1) != 0 || PQenterPipelineMode(st->conn) != 1) {
        s_down(st, PQerrorMessage(st->conn));
        return;
    }
    op_t *op = s_op_new(&s_prepare_kind, NULL);
    s_queue_push(&st->inflight, &st->inflight_tail, op);
    st->ninflight++;
    /* one pipeline is one queue: a statement stuck behind a row lock held
     * elsewhere would hold up every request behind it, so lock waits are
     * bounded (the request fails -EAGAIN instead) */
    if (!PQsendQueryParams(st->conn, SETUP_SQL, 0, NULL, NULL, NULL, NULL, 0)) {
        s_down(st, PQerrorMessage(st->conn));
        return;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        const stmt_t *s = &s_stmts[i];
        if (!PQsendPrepare(st->conn, s->name, s->sql, s->nparams, s->types)) {
            s_down(st, PQerrorMessage(st->conn));
            return;
        }
    }
    if (!PQpipelineSync(st->conn)) {
        s_down(st, PQerrorMessage(st->conn));
        return;
    }
    st->state = PG_PREPARING;
    s_watch(st, EV_READ, true);
    s_progress(st);
}

static void s_connect_poll(store_t *st)
{
    switch (PQconnectPoll(st->conn)) {
    case PGRES_POLLING_READING:
        s_watch(st, EV_READ, true);
        break;
    case PGRES_POLLING_WRITING:
        s_watch(st, EV_WRITE, true);
        break;
    case PGRES_POLLING_OK:
        s_connected(st);
        break;
    case PGRES_POLLING_FAILED:
    default:
        s_down(st, PQerrorMessage(st->conn));
        break;
    }
}

static void s_connect(store_t *st)
{
    /* Our defaults first, the configured conninfo (expanded from "dbname")
     * last: what it sets wins. keepalives and tcp_user_timeout notice a
     * peer that vanished without closing (TCP only). */
    const char *const keys[] = {"application_name", "keepalives_idle", "keepalives_interval",
                                "keepalives_count", "tcp_user_timeout", "dbname", NULL};
    const char *const values[] = {st->app_name, "10", "5", "3", "30000", st->conninfo, NULL};
    st->conn = PQconnectStartParams(keys, values, 1);
    if (!st->conn) {
        s_down(st, "out of memory");
        return;
    }
    if (PQstatus(st->conn) == CONNECTION_BAD || PQsocket(st->conn) < 0) {
        s_down(st, PQerrorMessage(st->conn));
        return;
    }
    st->state = PG_CONNECTING;
    ev_timer_set(&st->connect_timer, CONNECT_TIMEOUT_S, 0.);
    ev_timer_start(st->loop, &st->connect_timer);
    /* as if PQconnectPoll had returned PGRES_POLLING_WRITING */
    s_watch(st, EV_WRITE, true);
}

static void s_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    store_t *st = w->data;
    if (st->state == PG_DOWN)
        s_connect(st);
}

static void s_connect_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    store_t *st = w->data;
    if (st->state == PG_CONNECTING) {
        char why[64];
        snprintf(why, sizeof why, "connection attempt timed out after %.0f s",
                 CONNECT_TIMEOUT_S);
        s_down(st, why);
    }
}

/* -------------------------------------------------------------- pipeline */

/* Puts op's statements and a Sync into the pipeline. */
static bool s_send(store_t *st, op_t *op)
{
    s_queue_push(&st->inflight, &st->inflight_tail, op);
    st->ninflight++;
    for (int i = 0; i < op->kind->nstmts; i++) {
        const stmt_t *s = &s_stmts[op->kind->stmts[i]];
        if (!PQsendQueryPrepared(st->conn, s->name, s->nparams,
                                 (const char *const *)op->values, op->lengths, op->formats,
                                 op->kind->binary)) {
            s_down(st, PQerrorMessage(st->conn));
            return false;
        }
    }
    /* libpq 15 flushes here too; a partial write is finished by s_flush */
    if (!PQpipelineSync(st->conn)) {
        s_down(st, PQerrorMessage(st->conn));
        return false;
    }
    s_op_free_params(op); /* libpq has copied them */
    return true;
}

/* Moves waiting operations into the pipeline; true if any went. */
static bool s_pump(store_t *st)
{
    bool sent = false;
    while (st->conn && (st->state == PG_UP || st->state == PG_PREPARING) && st->waiting
           && st->ninflight < MAX_INFLIGHT) {
        op_t *op = s_queue_pop(&st->waiting, &st->waiting_tail);
        if (!s_send(st, op))
            return sent;
        sent = true;
    }
    return sent;
}

/* Pushes buffered output; watches for write readiness while some is left. */
static int s_flush(store_t *st)
{
    int rc = PQflush(st->conn);
    if (rc < 0) {
        s_down(st, PQerrorMessage(st->conn));
        return -1;
    }
    st->want_write = rc == 1;
    s_watch(st, EV_READ | (st->want_write ? EV_WRITE : 0), false);
    return 0;
}

/* Takes every result libpq has parsed and completes operations at their
 * Sync. Results of one statement end with a NULL from PQgetResult; a Sync's
 * result has none after it. */
static void s_drain(store_t *st)
{
    while (st->conn && st->inflight) {
        if (PQstatus(st->conn) == CONNECTION_BAD) {
            s_down(st, PQerrorMessage(st->conn));
            return;
        }
        if (PQisBusy(st->conn))
            return;
        PGresult *r = PQgetResult(st->conn);
        if (!r) {
            if (st->awaiting_null) {
                st->awaiting_null = false;
                continue;
            }
            return; /* nothing more parsed yet */
        }
        op_t *op = st->inflight;
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            s_queue_pop(&st->inflight, &st->inflight_tail);
            st->ninflight--;
            op->kind->done(st, op); /* may take the connection down */
            s_op_free(&op);
            s_maybe_stopped(st);
            continue;
        }
        if (op->nres < OP_MAX_RESULTS)
            op->res[op->nres++] = r;
        else
            PQclear(r);
        st->awaiting_null = true;
    }
}

/* After anything happened: complete what is in, send what waits, flush. */
static void s_progress(store_t *st)
{
    while (st->conn && (st->state == PG_UP || st->state == PG_PREPARING)) {
        s_drain(st);
        if (!st->conn)
            return;
        bool sent = s_pump(st);
        if (!st->conn || s_flush(st) < 0)
            return;
        /* flushing may have read input into libpq's buffer, which no
         * readiness event would announce: drain once more */
        if (!sent)
            break;
    }
    if (st->conn && (st->state == PG_UP || st->state == PG_PREPARING))
        s_drain(st);
}

static void s_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    store_t *st = w->data;
    if (st->state == PG_CONNECTING) {
        s_connect_poll(st);
        return;
    }
    if (!st->conn)
        return;
    /* a server that ends the session while we are idle is noticed here,
     * not at the next request */
    if ((revents & EV_READ)
        && (!PQconsumeInput(st->conn) || PQstatus(st->conn) == CONNECTION_BAD)) {
        s_down(st, PQerrorMessage(st->conn));
        return;
    }
    s_progress(st);
}

/* Queues op: into the pipeline now if connected, to wait for the first
 * connection if it is under way, else answered -EAGAIN at once. */
static void s_submit(store_t *st, op_t *op)
{
    bool accept = st->state == PG_UP || st->state == PG_PREPARING
                  || (st->state == PG_CONNECTING && !st->outage);
    if (!accept) {
        s_reply_error(st, op, -EAGAIN, "%s: PostgreSQL unavailable (%s)", op->kind->what,
                      st->last_error[0] ? st->last_error : "connecting");
        s_op_free(&op);
        return;
    }
    s_queue_push(&st->waiting, &st->waiting_tail, op);
    if (st->state != PG_CONNECTING)
        s_progress(st);
}

/* -------------------------------------------------------------- validation */

static bool s_uuid_ok(const char *s)
{
    return s && uuid_valid(s);
}

/* Checks the combinations JSON: a non-empty array of objects with an
 * integer seed >= 0 and, if present, a string (or null) style. */
static int s_check_combinations(const char *text, size_t *count, char *why, size_t len)
{
    if (!text) {
        snprintf(why, len, "combinations is required");
        return -1;
    }
    json_error_t e;
    json_t *a = json_loads(text, JSON_REJECT_DUPLICATES, &e);
    if (!a) {
        snprintf(why, len, "combinations is not valid JSON: %s", e.text);
        return -1;
    }
    int rc = 0;
    size_t n = json_is_array(a) ? json_array_size(a) : 0;
    if (!json_is_array(a) || n == 0 || n > MAX_COMBINATIONS) {
        snprintf(why, len, "combinations must be an array of 1 to %d objects",
                 MAX_COMBINATIONS);
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *c = json_array_get(a, i);
        json_t *seed = json_object_get(c, "seed");
        json_t *style = json_object_get(c, "style");
        if (!json_is_object(c)) {
            snprintf(why, len, "combinations[%zu] must be an object", i);
            rc = -1;
        } else if (!json_is_integer(seed) || json_integer_value(seed) < 0) {
            snprintf(why, len, "combinations[%zu].seed must be an integer >= 0", i);
            rc = -1;
        } else if (style && !json_is_string(style) && !json_is_null(style)) {
            snprintf(why, len, "combinations[%zu].style must be a string", i);
            rc = -1;
        }
    }
    json_decref(a);
    *count = n;
    return rc;
}

/* ---------------------------------------------------------------- handlers */

/* JOB_CREATE -> JOB_CREATED, then WORK_AVAILABLE on the bus */

static void s_job_create_done(store_t *st, op_t *op)
{
    if (s_op_failed(st, op))
        return;
    const PGresult *r = op->res[0];
    if (PQntuples(r) != 1) {
        s_reply_error(st, op, -EIO, "job create: no row returned");
        return;
    }
    msg_t *m = msg_new(MSG_JOB_CREATED);
    msg_set_str(&m->job_created.job_id, s_val(r, 0, 0));
    if (s_status(r, 0, 1, &m->job_created.status) < 0) {
        msg_destroy(&m);
        s_reply_error(st, op, -EIO, "job create: unknown status %s", s_val(r, 0, 1));
        return;
    }
    m->job_created.total_images = (uint64_t)s_i64(r, 0, 2);
    s_reply(st, op, &m);

    /* local generators wake now; the redis actor tells other instances */
    msg_t *ev = msg_new(MSG_WORK_AVAILABLE);
    msg_set_str(&ev->work_available.job_id, op->job_id);
    if (actor_publish(st->self, TOPIC_WORK, ev) < 0)
        log_warn("cannot publish work for %s", op->job_id);
    msg_destroy(&ev);
}

static const op_kind_t s_job_create_kind = {
    .what = "job create", .nstmts = 1, .stmts = {ST_JOB_CREATE}, .done = s_job_create_done};

static void s_on_job_create(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_job_create_t *b = &msg->job_create;
    char id[UUID_STR_LEN], why[200];
    size_t n = 0;
    if (b->job_id && *b->job_id) {
        if (!s_uuid_ok(b->job_id)) {
            s_refuse(st, msg, -EINVAL, "job_id is not a UUID");
            return;
        }
        snprintf(id, sizeof id, "%s", b->job_id);
    } else if (uuid_v4(id) < 0) {
        s_refuse(st, msg, -EAGAIN, "cannot make a job id: %s", strerror(errno));
        return;
    }
    if (!b->prompt) {
        s_refuse(st, msg, -EINVAL, "prompt is required");
        return;
    }
    if (b->images_per_combination < 1 || b->images_per_combination > INT32_MAX
        || b->width < 1 || b->width > INT32_MAX || b->height < 1 || b->height > INT32_MAX
        || b->steps < 1 || b->steps > INT32_MAX) {
        s_refuse(st, msg, -EINVAL,
                 "images_per_combination, width, height and steps must be positive");
        return;
    }
    if (s_check_combinations(b->combinations, &n, why, sizeof why) < 0) {
        s_refuse(st, msg, -EINVAL, "%s", why);
        return;
    }
    if (b->images_per_combination * n > INT32_MAX) {
        s_refuse(st, msg, -EINVAL, "too many images in one job");
        return;
    }
    op_t *op = s_op_new(&s_job_create_kind, msg);
    snprintf(op->job_id, sizeof op->job_id, "%s", id);
    s_param_str(op, id);
    s_param_str(op, b->prompt);
    s_param_str(op, b->combinations);
    s_param_u64(op, b->images_per_combination);
    s_param_u64(op, b->width);
    s_param_u64(op, b->height);
    s_param_u64(op, b->steps);
    s_submit(st, op);
}

/* JOB_GET -> JOB_JSON */

static void s_job_get_done(store_t *st, op_t *op)
{
    if (s_op_failed(st, op))
        return;
    const PGresult *r = op->res[0];
    if (PQntuples(r) != 1) {
        s_reply_error(st, op, -ENOENT, "Job not found");
        return;
    }
    msg_t *m = msg_new(MSG_JOB_JSON);
    msg_set_str(&m->job_json.json, s_val(r, 0, 0));
    s_reply(st, op, &m);
}

static const op_kind_t s_job_get_kind = {
    .what = "job get", .nstmts = 1, .stmts = {ST_JOB_GET}, .done = s_job_get_done};

static void s_on_job_get(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    if (!s_uuid_ok(msg->job_get.job_id)) {
        s_refuse(st, msg, -EINVAL, "job_id is not a UUID");
        return;
    }
    op_t *op = s_op_new(&s_job_get_kind, msg);
    s_param_str(op, msg->job_get.job_id);
    s_submit(st, op);
}

/* JOB_CANCEL_REQUEST -> JOB_CANCEL_RESULT: the cancel statement, then the
 * combinations nobody runs are ended and the job finished if none runs. */

static void s_job_cancel_done(store_t *st, op_t *op)
{
    if (s_op_failed(st, op))
        return;
    const PGresult *r = op->res[0];
    if (PQntuples(r) != 1) {
        s_reply_error(st, op, -ENOENT, "Job not found");
        return;
    }
    msg_t *m = msg_new(MSG_JOB_CANCEL_RESULT);
    msg_job_cancel_result_t *b = &m->job_cancel_result;
    msg_set_str(&b->job_id, op->job_id);
    /* a processing job with no combination running ended right here */
    const PGresult *fin = op->res[2];
    if (s_status(r, 0, 0, &b->prior_status) < 0
        || (PQntuples(fin) == 1 ? s_status(fin, 0, 0, &b->status)
                                : s_status(r, 0, 1, &b->status))
               < 0) {
        msg_destroy(&m);
        s_reply_error(st, op, -EIO, "job %s has an unknown status", op->job_id);
        return;
    }
    b->completed_images = (uint64_t)s_i64(r, 0, 2);
    b->total_images = (uint64_t)s_i64(r, 0, 3);
    b->requested_at_us = s_i64(r, 0, 5);
    bool accepted = b->prior_status == JOB_STATUS_PENDING
                    || b->prior_status == JOB_STATUS_PROCESSING;
    s_reply(st, op, &m);

    /* the cancel of a running or pending job has landed: the redis actor
     * sets the seed's flag (a repeated cancel of a job still stopping too) */
    if (accepted) {
        msg_t *ev = msg_new(MSG_JOB_CANCEL_RECORDED);
        msg_set_str(&ev->job_cancel_recorded.job_id, op->job_id);
        ev->job_cancel_recorded.mode = op->mode;
        ev->job_cancel_recorded.requested_at_us = op->requested_at_us;
        if (actor_publish(st->self, TOPIC_JOB_CANCEL_RECORDED, ev) < 0)
            log_warn("cannot publish the cancel record of %s", op->job_id);
        msg_destroy(&ev);
    }
}

static const op_kind_t s_job_cancel_kind = {
    .what = "job cancel",
    .nstmts = 3,
    .stmts = {ST_JOB_CANCEL, ST_TASKS_CANCEL, ST_JOB_FINISH},
    .done = s_job_cancel_done};

static void s_on_job_cancel(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_job_cancel_request_t *b = &msg->job_cancel_request;
    if (!s_uuid_ok(b->job_id)) {
        s_refuse(st, msg, -EINVAL, "job_id is not a UUID");
        return;
    }
    cancel_mode_t mode = b->mode == CANCEL_MODE_NONE ? CANCEL_MODE_IMMEDIATE : b->mode;
    op_t *op = s_op_new(&s_job_cancel_kind, msg);
    snprintf(op->job_id, sizeof op->job_id, "%s", b->job_id);
    op->mode = mode;
    op->requested_at_us = b->received_at_us;
    s_param_str(op, b->job_id);
    s_param_str(op, cancel_mode_name(mode));
    s_param_i64(op, b->received_at_us);
    s_submit(st, op);
}

/* ATTACHMENT_GET -> ATTACHMENT */

static void s_attachment_done(store_t *st, op_t *op)
{
    if (s_op_failed(st, op))
        return;
    const PGresult *r = op->res[0];
    if (PQntuples(r) != 1) {
        s_reply_error(st, op, -ENOENT, "Attachment not found");
        return;
    }
    msg_t *m = msg_new(MSG_ATTACHMENT);
    /* binary results: text comes as its bytes, NUL-terminated by libpq */
    msg_set_str(&m->attachment.content_type, PQgetvalue(r, 0, 0));
    msg_set_bin(&m->attachment.bytes, PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1));
    s_reply(st, op, &m);
}

static const op_kind_t s_attachment_kind = {.what = "attachment get",
                                            .nstmts = 1,
                                            .stmts = {ST_ATTACHMENT_GET},
                                            .binary = 1,
                                            .done = s_attachment_done};

static void s_on_attachment_get(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    if (!s_uuid_ok(msg->attachment_get.attach_id)) {
        s_refuse(st, msg, -EINVAL, "attach_id is not a UUID");
        return;
    }
    op_t *op = s_op_new(&s_attachment_kind, msg);
    s_param_str(op, msg->attachment_get.attach_id);
    s_submit(st, op);
}

/* HEALTH_CHECK -> HEALTH: a round trip when connected, the state when not */

static void s_health_reply(store_t *st, const op_t *op, bool ok, const char *detail)
{
    msg_t *m = msg_new(MSG_HEALTH);
    m->health.ok = ok;
    msg_set_str(&m->health.detail, detail);
    s_reply(st, op, &m);
}

static void s_health_done(store_t *st, op_t *op)
{
    const PGresult *err = s_op_error(op);
    char detail[300];
    if (err || op->nres < 1 || PQntuples(op->res[0]) != 1) {
        char msg[200];
        s_oneline(msg, sizeof msg, err ? PQresultErrorMessage(err) : "no result");
        snprintf(detail, sizeof detail, "PostgreSQL error: %s", msg);
        s_health_reply(st, op, false, detail);
        return;
    }
    snprintf(detail, sizeof detail, "PostgreSQL ok, schema version %s",
             PQgetvalue(op->res[0], 0, 0));
    s_health_reply(st, op, true, detail);
}

static const op_kind_t s_health_kind = {
    .what = "health", .nstmts = 1, .stmts = {ST_HEALTH}, .done = s_health_done};

static void s_on_health(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    op_t *op = s_op_new(&s_health_kind, msg);
    if (st->state != PG_UP && st->state != PG_PREPARING) {
        char detail[300];
        snprintf(detail, sizeof detail, "PostgreSQL %s%s%s",
                 st->state == PG_CONNECTING && !st->outage ? "connecting" : "unavailable",
                 st->last_error[0] ? ": " : "", st->last_error);
        s_health_reply(st, op, false, detail);
        s_op_free(&op);
        return;
    }
    s_submit(st, op);
}

/* WORK_REQUEST -> WORK_ITEM, or ERROR -ENOENT when nothing is claimable */

static void s_work_done(store_t *st, op_t *op)
{
    if (s_op_failed(st, op))
        return;
    const PGresult *r = op->res[0];
    if (PQntuples(r) != 1) {
        s_reply_error(st, op, -ENOENT, "no claimable work");
        return;
    }
    msg_t *m = msg_new(MSG_WORK_ITEM);
    msg_work_item_t *b = &m->work_item;
    msg_set_str(&b->job_id, s_val(r, 0, 0));
    b->combination = (uint64_t)s_i64(r, 0, 1);
    msg_set_str(&b->prompt, s_val(r, 0, 2));
    b->seed = (uint64_t)s_i64(r, 0, 3);
    b->width = (uint64_t)s_i64(r, 0, 4);
    b->height = (uint64_t)s_i64(r, 0, 5);
    b->steps = (uint64_t)s_i64(r, 0, 6);
    b->images = (uint64_t)s_i64(r, 0, 7);
    b->next_index = (uint64_t)s_i64(r, 0, 8);
    b->cancel_mode = s_mode(r, 0, 9);
    s_reply(st, op, &m);
}

static const op_kind_t s_work_kind = {
    .what = "work claim", .nstmts = 1, .stmts = {ST_WORK_CLAIM}, .done = s_work_done};

static void s_on_work_request(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    const char *inst = msg->work_request.instance;
    op_t *op = s_op_new(&s_work_kind, msg);
    s_param_str(op, inst && *inst ? inst : st->instance);
    s_param_f64(op, st->lease_s);
    s_submit(st, op);
}

/* IMAGE_READY -> IMAGE_RECORDED */

static void s_image_done(store_t *st, op_t *op)
{
    if (s_op_failed(st, op))
        return;
    if (PQntuples(op->res[0]) != 1 || PQntuples(op->res[1]) != 1) {
        s_reply_error(st, op, -ENOENT, "Job not found");
        return;
    }
    const PGresult *r = op->res[1];
    if (s_i64(r, 0, 3) == 0) { /* the combination is not running */
        const char *status = s_val(r, 0, 5);
        if (!status)
            s_reply_error(st, op, -ENOENT, "job %s has no such combination", op->job_id);
        else
            s_reply_error(st, op, -ENOENT,
                          "combination not running (it is %s) or image index out of range "
                          "(%s per combination)",
                          status, s_val(r, 0, 4) ? s_val(r, 0, 4) : "?");
        return;
    }
    msg_t *m = msg_new(MSG_IMAGE_RECORDED);
    msg_set_str(&m->image_recorded.attach_id, s_val(r, 0, 0));
    m->image_recorded.completed_images = (uint64_t)s_i64(r, 0, 1);
    m->image_recorded.cancel_mode = s_mode(r, 0, 2);
    s_reply(st, op, &m);
}

static const op_kind_t s_image_kind = {.what = "image record",
                                       .nstmts = 2,
                                       .stmts = {ST_JOB_LOCK, ST_IMAGE_RECORD},
                                       .done = s_image_done};

static void s_on_image_ready(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_image_ready_t *b = &msg->image_ready;
    char id[UUID_STR_LEN];
    if (!s_uuid_ok(b->job_id)) {
        s_refuse(st, msg, -EINVAL, "job_id is not a UUID");
        return;
    }
    if (b->combination > INT32_MAX || b->image_index > INT32_MAX || b->width > INT32_MAX
        || b->height > INT32_MAX) {
        s_refuse(st, msg, -EINVAL, "combination, image_index, width or height out of range");
        return;
    }
    if (!b->png.data || b->png.size == 0 || b->png.size > INT32_MAX) {
        s_refuse(st, msg, -EINVAL, "png is empty");
        return;
    }
    if (uuid_v4(id) < 0) {
        s_refuse(st, msg, -EAGAIN, "cannot make an attachment id: %s", strerror(errno));
        return;
    }
    op_t *op = s_op_new(&s_image_kind, msg);
    snprintf(op->job_id, sizeof op->job_id, "%s", b->job_id);
    s_param_str(op, b->job_id);
    s_param_u64(op, b->combination);
    s_param_u64(op, b->image_index);
    s_param_str(op, id);
    s_param_bin_steal(op, &b->png);
    s_param_u64(op, b->width);
    s_param_u64(op, b->height);
    s_param_f64(op, st->lease_s);
    s_submit(st, op);
}

/* TASK_STOPPED -> OK: the combination's end, then the job's if it was the
 * last one running. */

static void s_task_stop_done(store_t *st, op_t *op)
{
    if (s_op_failed(st, op))
        return;
    if (PQntuples(op->res[0]) != 1) {
        s_reply_error(st, op, -ENOENT, "Job not found");
        return;
    }
    const PGresult *r = op->res[2];
    if (PQntuples(r) != 1) {
        s_reply_error(st, op, -ENOENT, "job %s has no such combination", op->job_id);
        return;
    }
    char detail[200];
    const char *now = s_val(r, 0, 0);
    if (!now) {
        /* a repeat of a stop already recorded, or a holder whose claim was
         * taken over: nothing to do, and nothing to retry */
        const char *holder = s_val(r, 0, 2);
        snprintf(detail, sizeof detail, "not applied: combination is %s%s%s",
                 PQgetvalue(r, 0, 1), holder ? ", claimed by " : "", holder ? holder : "");
    } else {
        const PGresult *fin = op->res[4];
        if (PQntuples(fin) == 1)
            snprintf(detail, sizeof detail, "combination %s; job %s", now, s_val(fin, 0, 0));
        else
            snprintf(detail, sizeof detail, "combination %s", now);
    }
    msg_t *m = msg_new(MSG_OK);
    msg_set_str(&m->ok.detail, detail);
    s_reply(st, op, &m);
}

static const op_kind_t s_task_stop_kind = {
    .what = "task stop",
    .nstmts = 5,
    .stmts = {ST_JOB_LOCK, ST_CANCEL_FROM_STOP, ST_TASK_STOP, ST_TASKS_CANCEL, ST_JOB_FINISH},
    .done = s_task_stop_done};

static void s_on_task_stopped(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_task_stopped_t *b = &msg->task_stopped;
    if (!s_uuid_ok(b->job_id)) {
        s_refuse(st, msg, -EINVAL, "job_id is not a UUID");
        return;
    }
    if (b->combination > INT32_MAX) {
        s_refuse(st, msg, -EINVAL, "combination out of range");
        return;
    }
    op_t *op = s_op_new(&s_task_stop_kind, msg);
    snprintf(op->job_id, sizeof op->job_id, "%s", b->job_id);
    s_param_str(op, b->job_id);
    s_param_u64(op, b->combination);
    s_param_str(op, task_outcome_name(b->outcome));
    s_param_i64(op, b->observed_at_us);
    s_param_i64(op, b->stopped_at_us);
    s_param_str(op, b->error && *b->error ? b->error : NULL);
    s_param_str(op, b->instance ? b->instance : "");
    s_param_i64(op, b->cancel_requested_at_us);
    s_param_str(op, s_mode_param(b->cancel_mode));
    s_submit(st, op);
}

/* LEASE_RENEW -> LEASE_STATE, or ERROR -ENOENT when the claim is lost */

static void s_lease_done(store_t *st, op_t *op)
{
    if (s_op_failed(st, op))
        return;
    const PGresult *r = op->res[0];
    if (PQntuples(r) != 1) {
        s_reply_error(st, op, -ENOENT, "claim lost: the combination is no longer held here");
        return;
    }
    msg_t *m = msg_new(MSG_LEASE_STATE);
    m->lease_state.cancel_mode = s_mode(r, 0, 0);
    s_reply(st, op, &m);
}

static const op_kind_t s_lease_kind = {
    .what = "lease renew", .nstmts = 1, .stmts = {ST_LEASE_RENEW}, .done = s_lease_done};

static void s_on_lease_renew(actor_t *self, msg_t *msg)
{
    store_t *st = actor_state(self);
    msg_lease_renew_t *b = &msg->lease_renew;
    if (!s_uuid_ok(b->job_id)) {
        s_refuse(st, msg, -EINVAL, "job_id is not a UUID");
        return;
    }
    if (b->combination > INT32_MAX) {
        s_refuse(st, msg, -EINVAL, "combination out of range");
        return;
    }
    op_t *op = s_op_new(&s_lease_kind, msg);
    s_param_str(op, b->job_id);
    s_param_u64(op, b->combination);
    s_param_str(op, b->instance && *b->instance ? b->instance : st->instance);
    s_param_f64(op, st->lease_s);
    s_submit(st, op);
}

/* --------------------------------------------------------------- lifecycle */

static int s_init(actor_t *self, void *arg)
{
    const store_config_t *cfg = arg;
    store_t *st = calloc(1, sizeof *st);
    if (!st)
        abort();
    st->self = self;
    st->loop = actor_loop(self);
    st->conninfo = s_xstrdup(cfg->conninfo);
    if (cfg->instance && *cfg->instance) {
        st->instance = s_xstrdup(cfg->instance);
    } else {
        char host[64] = "localhost";
        gethostname(host, sizeof host - 1);
        char buf[96];
        snprintf(buf, sizeof buf, "%s-%ld", host, (long)getpid());
        st->instance = s_xstrdup(buf);
    }
    st->lease_s = cfg->lease_s > 0 ? cfg->lease_s : LEASE_DEFAULT_S;
    snprintf(st->app_name, sizeof st->app_name, "imagejobs-store/%s", st->instance);
    st->backoff = BACKOFF_MIN_S;
    ev_init(&st->io, s_io_cb);
    st->io.data = st;
    ev_init(&st->retry, s_retry_cb);
    st->retry.data = st;
    ev_init(&st->connect_timer, s_connect_timeout_cb);
    st->connect_timer.data = st;
    actor_set_state(self, st);
    s_connect(st); /* a failure here only schedules a retry */
    return 0;
}

static void s_fini(actor_t *self)
{
    store_t *st = actor_state(self);
    s_close(st);
    ev_timer_stop(st->loop, &st->retry);
    s_fail_all(st, "the store is stopping");
    free(st->conninfo);
    free(st->instance);
    free(st);
    actor_set_state(self, NULL);
}

static bool s_stopping(actor_t *self)
{
    store_t *st = actor_state(self);
    return !st->inflight && !st->waiting;
}

static const actor_spec_t s_spec = {
    .init = s_init,
    .stopping = s_stopping,
    .fini = s_fini,
    .handlers =
        {
            [MSG_JOB_CREATE] = s_on_job_create,
            [MSG_JOB_GET] = s_on_job_get,
            [MSG_JOB_CANCEL_REQUEST] = s_on_job_cancel,
            [MSG_ATTACHMENT_GET] = s_on_attachment_get,
            [MSG_HEALTH_CHECK] = s_on_health,
            [MSG_WORK_REQUEST] = s_on_work_request,
            [MSG_IMAGE_READY] = s_on_image_ready,
            [MSG_TASK_STOPPED] = s_on_task_stopped,
            [MSG_LEASE_RENEW] = s_on_lease_renew,
        },
};

/* A plain database name is fine too (libpq expands only what looks like a
 * conninfo or URI); anything that looks like one must parse. */
static int s_conninfo_check(const char *conninfo, char *err, size_t errlen)
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
        s_oneline(msg, sizeof msg, perr ? perr : "out of memory");
        snprintf(err, errlen, "invalid database conninfo: %s", msg);
        PQfreemem(perr);
        return -1;
    }
    PQconninfoFree(opts);
    return 0;
}

actor_t *store_start(runtime_t *rt, const store_config_t *cfg, char *err, size_t errlen)
{
    if (!cfg || s_conninfo_check(cfg->conninfo, err, errlen) < 0) {
        if (!cfg)
            snprintf(err, errlen, "no store configuration");
        return NULL;
    }
    return actor_new(rt, STORE_ACTOR, &s_spec, (void *)cfg, err, errlen);
}

/* ---------------------------------------------------------------- migrate */

static void s_quiet(void *arg, const char *message) {}

/* Runs sql (may hold several statements); -1 with the reason in err. */
static int s_exec(PGconn *c, const char *sql, PGresult **out, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType es = PQresultStatus(r);
    if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK) {
        char msg[300];
        s_oneline(msg, sizeof msg, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
        snprintf(err, errlen, "schema migration failed: %s", msg);
        PQclear(r);
        return -1;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return 0;
}

int store_migrate(const char *conninfo, char *err, size_t errlen)
{
    if (s_conninfo_check(conninfo, err, errlen) < 0)
        return -1;
    const char *const keys[] = {"application_name", "connect_timeout", "dbname", NULL};
    const char *const values[] = {"imagejobs-migrate", "10", conninfo, NULL};
    PGconn *c = PQconnectdbParams(keys, values, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        char msg[300];
        s_oneline(msg, sizeof msg, c ? PQerrorMessage(c) : "out of memory");
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", msg);
        PQfinish(c);
        return -1;
    }
    PQsetNoticeProcessor(c, s_quiet, NULL); /* "already exists, skipping" */

    PGresult *r = NULL;
    int from = 0, rc = -1;
    /* Everything in one transaction under one advisory lock: a second
     * instance waits here and then finds the work done. */
    if (s_exec(c, "BEGIN", NULL, err, errlen) < 0
        || s_exec(c, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")", NULL, err, errlen)
               < 0
        || s_exec(c,
                  "CREATE TABLE IF NOT EXISTS schema_version ("
                  "  version integer PRIMARY KEY,"
                  "  applied_at timestamptz NOT NULL DEFAULT clock_timestamp())",
                  NULL, err, errlen)
               < 0
        || s_exec(c, "SELECT COALESCE(max(version), 0) FROM schema_version", &r, err, errlen)
               < 0)
        goto out;
    from = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (from > STORE_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "database schema is at version %d, newer than this binary's %d: "
                 "upgrade imagejobs",
                 from, STORE_SCHEMA_VERSION);
        goto out;
    }
    for (int v = from + 1; v <= STORE_SCHEMA_VERSION; v++) {
        char record[96];
        snprintf(record, sizeof record, "INSERT INTO schema_version (version) VALUES (%d)", v);
        if (s_exec(c, s_migrations[v - 1], NULL, err, errlen) < 0
            || s_exec(c, record, NULL, err, errlen) < 0)
            goto out;
    }
    if (s_exec(c, "COMMIT", NULL, err, errlen) < 0)
        goto out;
    if (from == STORE_SCHEMA_VERSION)
        log_info("schema at version %d", from);
    else
        log_info("schema migrated from version %d to %d", from, STORE_SCHEMA_VERSION);
    rc = 0;
out:
    PQfinish(c); /* an open transaction is rolled back */
    return rc;
}
