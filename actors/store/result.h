/*
 * result.h - reading the store's PostgreSQL results (text format) into the
 * message table's types, for every file of the store actor.
 */
#ifndef IMAGEJOBS_STORE_RESULT_H
#define IMAGEJOBS_STORE_RESULT_H

#include <libpq-fe.h>
#include <stdint.h>

#include "messages/message.h"

/* A PostgreSQL error as an errno for the requester: refused input is
 * -EINVAL, a taken id -EEXIST, what may work on a retry (connection,
 * deadlock, serialization, shutdown, resources) -EAGAIN, else -EIO. */
int store_pg_errno(const char *sqlstate);

/* The value at (row, col), or NULL for SQL NULL. */
const char *store_val(const PGresult *r, int row, int col);

/* An integer column; 0 for NULL. */
int64_t store_i64(const PGresult *r, int row, int col);

/* A cancel mode column: NULL is NONE (the schema's CHECK allows no other
 * text than the table's). */
cancel_mode_t store_mode(const PGresult *r, int row, int col);

/* A status column; -1 for NULL or a value the table does not know. */
int store_status(const PGresult *r, int row, int col, job_status_t *out);

/* A cancel mode as a statement parameter: NONE is NULL. */
const char *store_mode_param(cancel_mode_t m);

#endif
