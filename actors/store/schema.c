/*
 * schema.c - store_migrate(): the PostgreSQL schema, created or upgraded
 * step by step and recorded in schema_version.
 *
 * Key constraint: this is the one place that talks to PostgreSQL
 * synchronously (PQconnectdbParams, PQexec), for `imagejobs migrate` and
 * serve's start-up, never inside an actor loop; and every wait in it is
 * bounded (connect_timeout, lock_timeout), so that serve, which retries it
 * while it also waits for SIGTERM, always gets back to its signal check.
 */
#include "config.h"

#include "actors/store.h"
#include "actors/store/pgpipe.h"

#include "runtime/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds of one attempt; a caller that wants to wait longer retries. */
#define MIGRATE_CONNECT_TIMEOUT "3" /* seconds, libpq's connect_timeout */
#define MIGRATE_LOCK_TIMEOUT "2s"   /* for the advisory lock and the DDL's locks */

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

static void s_quiet(void *arg, const char *message) {}

/* Runs sql (may hold several statements); -1 with the reason in err. */
static int s_exec(PGconn *c, const char *sql, PGresult **out, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType es = PQresultStatus(r);
    if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK) {
        char msg[300];
        pgpipe_oneline(msg, sizeof msg, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        if (state && strcmp(state, "55P03") == 0) /* lock_not_available */
            snprintf(err, errlen,
                     "schema migration failed: a lock was not granted within " MIGRATE_LOCK_TIMEOUT
                     " (another instance migrating?): %s",
                     msg);
        else
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
    if (pgpipe_conninfo_check(conninfo, err, errlen) < 0)
        return -1;
    const char *const keys[] = {"application_name", "connect_timeout", "dbname", NULL};
    const char *const values[] = {"imagejobs-migrate", MIGRATE_CONNECT_TIMEOUT, conninfo, NULL};
    PGconn *c = PQconnectdbParams(keys, values, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        char msg[300];
        pgpipe_oneline(msg, sizeof msg, c ? PQerrorMessage(c) : "out of memory");
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", msg);
        PQfinish(c);
        return -1;
    }
    PQsetNoticeProcessor(c, s_quiet, NULL); /* "already exists, skipping" */

    PGresult *r = NULL;
    int from = 0, rc = -1;
    /* Everything in one transaction under one advisory lock: a second
     * instance waits here (at most the lock timeout) and then finds the
     * work done. */
    if (s_exec(c, "SET lock_timeout = '" MIGRATE_LOCK_TIMEOUT "'", NULL, err, errlen) < 0
        || s_exec(c, "BEGIN", NULL, err, errlen) < 0
        || s_exec(c, "SELECT pg_advisory_xact_lock(" STORE_MIGRATE_LOCK_KEY ")", NULL, err, errlen)
               < 0
        || s_exec(c,
                  "CREATE TABLE IF NOT EXISTS schema_version ("
                  "  version integer PRIMARY KEY,"
                  "  applied_at timestamptz NOT NULL DEFAULT clock_timestamp())",
                  NULL, err, errlen)
               < 0
        || s_exec(c, "SELECT COALESCE(max(version), 0) FROM schema_version", &r, err, errlen) < 0)
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
