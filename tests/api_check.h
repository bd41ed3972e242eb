/*
 * api_check.h - the job API from an end-to-end test: api_client.h's calls
 * with Check assertions (a call must be answered, a field must be there and
 * of its type), waiting for a job to move, and reading what the API wrote
 * in PostgreSQL. For check_api.c and
 * check_instances.c; the benchmarks use api_client.h alone.
 */
#ifndef IMAGEJOBS_TESTS_API_CHECK_H
#define IMAGEJOBS_TESTS_API_CHECK_H

#include "tests/api_client.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>

/* One request to the server on port; fails the test when no response
 * comes. The caller frees the response (api_response_free). */
api_response_t api_check_call(int port, const char *method, const char *path, const char *headers,
                              const char *body);

/* Field key of object o, which must be a string / an integer. */
const char *api_check_str(json_t *o, const char *key);
json_int_t api_check_int(json_t *o, const char *key);

/* GET /api/jobs/{id}, which must answer 200 with JSON (caller decrefs). */
json_t *api_check_job(int port, const char *id);

/* Whether a job_status is final: completed, failed or user_cancelled. */
bool api_check_final(const char *status);

/* Polls GET /api/jobs/{id} until the job's status is final, every poll_ms;
 * fails the test after timeout_s. Returns the document (caller decrefs). */
json_t *api_check_wait_final(int port, const char *id, double timeout_s, int poll_ms);

/* A connection to conninfo, which must succeed (caller PQfinish-es). */
PGconn *api_check_db(const char *conninfo);

/* The integer in the first column of the first row of sql, run with one
 * text parameter; fails the test when the statement fails. */
long api_check_sql_long(PGconn *db, const char *sql, const char *param);

/* The conninfo of IMAGEJOBS_TEST_DATABASE with dbname replaced (into out). */
void api_check_conninfo_for(const char *dbname, char *out, size_t len);

/* Runs sql (CREATE/DROP DATABASE...) on the test server's "postgres"
 * database; a failure is printed, not fatal. */
void api_check_admin(const char *sql);

/* A fresh database of the test's own, "<prefix>_<pid>" (one left over by
 * a crashed run is dropped first): its name and conninfo. */
void api_check_database_create(const char *prefix, char *name, size_t namelen, char *conninfo,
                               size_t len);

/* Drops a test's database, whoever is still connected to it. */
void api_check_database_drop(const char *name);

#endif
