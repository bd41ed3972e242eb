/*
 * result.c - reading PostgreSQL results into the table's types (result.h).
 */
#include "config.h"

#include "actors/store/result.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int store_pg_errno(const char *sqlstate)
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

const char *store_val(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

int64_t store_i64(const PGresult *r, int row, int col)
{
    const char *v = store_val(r, row, col);
    return v ? strtoll(v, NULL, 10) : 0;
}

cancel_mode_t store_mode(const PGresult *r, int row, int col)
{
    const char *v = store_val(r, row, col);
    cancel_mode_t m = CANCEL_MODE_NONE;
    if (v && cancel_mode_parse(v, strlen(v), &m) < 0)
        m = CANCEL_MODE_NONE;
    return m;
}

int store_status(const PGresult *r, int row, int col, job_status_t *out)
{
    const char *v = store_val(r, row, col);
    return v ? job_status_parse(v, strlen(v), out) : -1;
}

const char *store_mode_param(cancel_mode_t m)
{
    return m == CANCEL_MODE_NONE ? NULL : cancel_mode_name(m);
}
