/*
 * api_check.c - the job API with Check assertions (see api_check.h).
 */
#include "config.h"

#include "tests/api_check.h"

#include "tests/fixture.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

api_response_t api_check_call(int port, const char *method, const char *path, const char *headers,
                              const char *body)
{
    api_response_t r;
    int rc = api_request(port, method, path, headers, body, body ? strlen(body) : 0, &r);
    ck_assert_msg(rc == 0, "%s %s on port %d: no response", method, path, port);
    return r;
}

const char *api_check_str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_string(v), "\"%s\" is not a string", key);
    return json_string_value(v);
}

json_int_t api_check_int(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_integer(v), "\"%s\" is not an integer", key);
    return json_integer_value(v);
}

json_t *api_check_job(int port, const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s", id);
    api_response_t r = api_check_call(port, "GET", path, NULL, NULL);
    ck_assert_msg(r.status == 200, "get on port %d: %d %s", port, r.status, r.body);
    json_t *j = json_incref(r.json);
    ck_assert_ptr_nonnull(j);
    api_response_free(&r);
    return j;
}

bool api_check_final(const char *status)
{
    return !strcmp(status, "completed") || !strcmp(status, "failed")
           || !strcmp(status, "user_cancelled");
}

json_t *api_check_wait_final(int port, const char *id, double timeout_s, int poll_ms)
{
    double deadline = fixture_now() + timeout_s;
    for (;;) {
        json_t *j = api_check_job(port, id);
        if (api_check_final(api_check_str(j, "job_status")))
            return j;
        json_decref(j);
        ck_assert_msg(fixture_now() < deadline, "job %s did not end within %.0f s", id, timeout_s);
        fixture_pause_ms(poll_ms);
    }
}

PGconn *api_check_db(const char *conninfo)
{
    PGconn *db = PQconnectdb(conninfo);
    ck_assert_msg(PQstatus(db) == CONNECTION_OK, "database: %s", PQerrorMessage(db));
    return db;
}

long api_check_sql_long(PGconn *db, const char *sql, const char *param)
{
    PGresult *res = PQexecParams(db, sql, 1, NULL, &param, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(db));
    long v = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}
/* conninfo of IMAGEJOBS_TEST_DATABASE with dbname replaced. */
void api_check_conninfo_for(const char *dbname, char *out, size_t len)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(getenv("IMAGEJOBS_TEST_DATABASE"), &err);
    ck_assert_msg(opts != NULL, "IMAGEJOBS_TEST_DATABASE: %s", err ? err : "?");
    size_t n = 0;
    out[0] = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        const char *v = strcmp(o->keyword, "dbname") ? o->val : dbname;
        if (!v || !*v)
            continue;
        n += (size_t)snprintf(out + n, len - n, "%s%s='", n ? " " : "", o->keyword);
        for (const char *p = v; *p && n + 3 < len; p++) {
            if (*p == '\'' || *p == '\\')
                out[n++] = '\\';
            out[n++] = *p;
        }
        n += (size_t)snprintf(out + n, len - n, "'");
        ck_assert_uint_lt(n, len);
    }
    PQconninfoFree(opts);
}

static void s_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* "does not exist, skipping" */
}

void api_check_admin(const char *sql)
{
    char ci[1024];
    api_check_conninfo_for("postgres", ci, sizeof ci);
    PGconn *db = PQconnectdb(ci);
    if (PQstatus(db) == CONNECTION_OK) {
        PQsetNoticeProcessor(db, s_quiet, NULL);
        PGresult *r = PQexec(db, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            fprintf(stderr, "admin SQL: %s: %s", sql, PQerrorMessage(db));
        PQclear(r);
    }
    PQfinish(db);
}

void api_check_database_create(const char *prefix, char *name, size_t namelen, char *conninfo,
                               size_t len)
{
    snprintf(name, namelen, "%s_%d", prefix, (int)getpid());
    api_check_database_drop(name);
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    api_check_admin(sql);
    api_check_conninfo_for(name, conninfo, len);
    PQfinish(api_check_db(conninfo)); /* it exists */
}

void api_check_database_drop(const char *name)
{
    char sql[160];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    api_check_admin(sql);
}
