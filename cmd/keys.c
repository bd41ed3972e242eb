/*
 * keys.c - `imagejobs keys`: API keys, straight to PostgreSQL (the same
 * --database / DATABASE_URL as serve). A command, not an actor: it may wait
 * on the database.
 *
 *   keys create --name NAME [--admin] [--max-running-jobs N]
 *               [--max-pending-jobs N] [--rate-limit R/s] [--rate-burst N]
 *   keys list
 *   keys revoke NAME
 *
 * The token is printed once, on stdout and alone on its line; the database
 * keeps only its SHA-256. Every instance's key cache sees a new or revoked
 * key within a second (docs/security.md).
 */
#include "config.h"

#include "cmd/keys.h"

#include "actors/store.h"
#include "runtime/log.h"
#include "runtime/options.h"
#include "runtime/token.h"

#include <libpq-fe.h>
#include <math.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { K_DATABASE, K_NAME, K_ADMIN, K_MAX_RUNNING, K_MAX_PENDING, K_RATE, K_BURST, K_NOPTS };

static const option_t s_options[K_NOPTS] = {
    [K_DATABASE] = {"database", "IMAGEJOBS_DATABASE", "DATABASE_URL", "CONNINFO",
                    "dbname=imagejobs", "PostgreSQL: libpq conninfo or URI"},
    [K_NAME] = {"name", NULL, NULL, "NAME", NULL,
                "create: the key's name (letters, digits, '.', '_', '-'; at most 64)"},
    [K_ADMIN] = {"admin", NULL, NULL, NULL, NULL, "create: sees and cancels every key's jobs"},
    [K_MAX_RUNNING] = {"max-running-jobs", NULL, NULL, "N", NULL,
                       "create: jobs of this key running at once; more wait pending"},
    [K_MAX_PENDING] = {"max-pending-jobs", NULL, NULL, "N", NULL,
                       "create: jobs of this key pending at once; more are refused 429"},
    [K_RATE] = {"rate-limit", NULL, NULL, "R/s", NULL,
                "create: job creates a second (also R/m, R/h), a token bucket shared by "
                "every instance"},
    [K_BURST] = {"rate-burst", NULL, NULL, "N", NULL,
                 "create: creates allowed at once (default: one second's worth, at least 1)"},
};

static const char s_usage[] =
    "usage: imagejobs keys create --name NAME [--admin] [--max-running-jobs N]\n"
    "                             [--max-pending-jobs N] [--rate-limit R/s] [--rate-burst N]\n"
    "       imagejobs keys list\n"
    "       imagejobs keys revoke NAME";

static void s_fail(const char *what, const PGresult *r, PGconn *c)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : PQerrorMessage(c);
    fprintf(stderr, "imagejobs keys: %s: %s%s%s\n", what, msg ? msg : "failed",
            state ? " (SQLSTATE " : "", state ? state : "");
    if (state)
        fputs(")\n", stderr);
}

/* "5", "5/s", "30/m", "100/h" as creates per second; -1 otherwise. */
static double s_rate(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0) || !isfinite(v))
        return -1;
    if (!*end || !strcmp(end, "/s"))
        return v;
    if (!strcmp(end, "/m"))
        return v / 60.;
    if (!strcmp(end, "/h"))
        return v / 3600.;
    return -1;
}

static PGconn *s_connect(const char *conninfo)
{
    char err[512];
    if (store_migrate(conninfo, err, sizeof err) < 0) {
        fprintf(stderr, "imagejobs keys: %s\n", err);
        return NULL;
    }
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        s_fail("cannot connect to PostgreSQL", NULL, c);
        PQfinish(c);
        return NULL;
    }
    return c;
}

static int s_create(const char **v)
{
    char err[256];
    long running = 0, pending = 0, burst = 0;
    double rate = 0;
    if (!v[K_NAME]) {
        fprintf(stderr, "imagejobs keys create: --name is required\n");
        return 2;
    }
    if ((v[K_MAX_RUNNING]
         && options_long("max-running-jobs", v[K_MAX_RUNNING], 1, 1000000, &running, err,
                         sizeof err)
                < 0)
        || (v[K_MAX_PENDING]
            && options_long("max-pending-jobs", v[K_MAX_PENDING], 1, 100000000, &pending, err,
                            sizeof err)
                   < 0)
        || (v[K_BURST]
            && options_long("rate-burst", v[K_BURST], 1, 1000000, &burst, err, sizeof err) < 0)) {
        fprintf(stderr, "imagejobs keys create: %s\n", err);
        return 2;
    }
    if (v[K_RATE] && (rate = s_rate(v[K_RATE])) < 0) {
        fprintf(stderr, "imagejobs keys create: --rate-limit must be a positive number of creates "
                        "per second, as 5/s (or per minute, 30/m; per hour, 100/h)\n");
        return 2;
    }
    if (burst && !rate) {
        fprintf(stderr, "imagejobs keys create: --rate-burst needs --rate-limit\n");
        return 2;
    }
    if (rate && !burst)
        burst = rate < 1 ? 1 : (long)ceil(rate);
    char token[TOKEN_STR_LEN];
    if (token_new(token) < 0) {
        fprintf(stderr, "imagejobs keys create: the kernel gives no randomness\n");
        return 1;
    }
    uint8_t hash[TOKEN_HASH_LEN];
    token_hash(token, strlen(token), hash);
    char hex[2 * TOKEN_HASH_LEN + 1];
    for (size_t i = 0; i < TOKEN_HASH_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02x", hash[i]);
    PGconn *c = s_connect(v[K_DATABASE]);
    if (!c) {
        OPENSSL_cleanse(token, sizeof token);
        return 1;
    }
    char nrun[24], npend[24], nrate[40], nburst[24];
    snprintf(nrun, sizeof nrun, "%ld", running);
    snprintf(npend, sizeof npend, "%ld", pending);
    snprintf(nrate, sizeof nrate, "%.17g", rate);
    snprintf(nburst, sizeof nburst, "%ld", burst);
    const char *params[] = {v[K_NAME], hex,   v[K_ADMIN] ? "true" : "false", nrun, npend,
                            nrate,     nburst};
    PGresult *r = PQexecParams(
        c,
        "INSERT INTO api_keys (name, token_hash, admin, max_running_jobs, max_pending_jobs,"
        "                      rate_per_s, rate_burst)"
        " VALUES ($1, decode($2, 'hex'), $3, NULLIF($4::int, 0), NULLIF($5::int, 0),"
        "         NULLIF($6::float8, 0), NULLIF($7::float8, 0)) RETURNING id",
        7, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state && !strcmp(state, "23505"))
            fprintf(stderr, "imagejobs keys create: a key named '%s' exists (revoke it first)\n",
                    v[K_NAME]);
        else if (state && !strcmp(state, "23514"))
            fprintf(stderr,
                    "imagejobs keys create: --name must be 1 to 64 letters, digits, '.', '_' "
                    "or '-'\n");
        else
            s_fail("cannot create the key", r, c);
        rc = 1;
    } else {
        fprintf(stderr,
                "imagejobs keys: key '%s' created%s. Its token, shown this once (only its "
                "SHA-256 is kept):\n",
                v[K_NAME], v[K_ADMIN] ? " (admin)" : "");
        printf("%s\n", token);
        fflush(stdout);
    }
    OPENSSL_cleanse(token, sizeof token);
    PQclear(r);
    PQfinish(c);
    return rc;
}

static int s_list(const char **v)
{
    PGconn *c = s_connect(v[K_DATABASE]);
    if (!c)
        return 1;
    PGresult *r = PQexec(
        c, "SELECT k.name, CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked'"
           "  WHEN k.admin THEN 'admin' ELSE 'user' END,"
           "  COALESCE(k.max_running_jobs::text, '-'), COALESCE(k.max_pending_jobs::text, '-'),"
           "  COALESCE(round(k.rate_per_s::numeric, 3)::text || '/s', '-'),"
           "  k.running_jobs, (SELECT count(*) FROM jobs j WHERE j.owner_key = k.id"
           "                   AND j.status = 'pending'),"
           "  to_char(k.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),"
           "  COALESCE(to_char(k.revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '')"
           " FROM api_keys k ORDER BY k.revoked_at IS NOT NULL, k.id");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        s_fail("cannot list the keys", r, c);
        PQclear(r);
        PQfinish(c);
        return 1;
    }
    printf("%-24s %-8s %8s %8s %10s %8s %8s  %-19s  %s\n", "NAME", "KIND", "MAX_RUN", "MAX_PEND",
           "RATE", "RUNNING", "PENDING", "CREATED (UTC)", "REVOKED (UTC)");
    for (int i = 0; i < PQntuples(r); i++)
        printf("%-24s %-8s %8s %8s %10s %8s %8s  %-19s  %s\n", PQgetvalue(r, i, 0),
               PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
               PQgetvalue(r, i, 5), PQgetvalue(r, i, 6), PQgetvalue(r, i, 7), PQgetvalue(r, i, 8));
    PQclear(r);
    PQfinish(c);
    return 0;
}

static int s_revoke(const char **v, const char *name)
{
    PGconn *c = s_connect(v[K_DATABASE]);
    if (!c)
        return 1;
    const char *params[] = {name};
    PGresult *r = PQexecParams(c,
                               "UPDATE api_keys SET revoked_at = clock_timestamp()"
                               " WHERE name = $1 AND revoked_at IS NULL RETURNING id",
                               1, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        s_fail("cannot revoke the key", r, c);
        rc = 1;
    } else if (PQntuples(r) == 0) {
        fprintf(stderr, "imagejobs keys revoke: no key named '%s' (or it is revoked already)\n",
                name);
        rc = 1;
    } else {
        fprintf(stderr,
                "imagejobs keys: key '%s' revoked; every instance refuses it within a second\n",
                name);
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

int keys_main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        options_usage(argc < 2 ? stderr : stdout, s_usage, s_options, K_NOPTS);
        return argc < 2 ? 2 : 0;
    }
    log_set_level(LOG_WARN); /* the schema's "up to date" is not this command's output */
    const char *sub = argv[1];
    bool create = !strcmp(sub, "create"), list = !strcmp(sub, "list"),
         revoke = !strcmp(sub, "revoke");
    if (!create && !list && !revoke) {
        fprintf(stderr, "imagejobs keys: unknown command '%s' (create, list or revoke)\n", sub);
        return 2;
    }
    /* revoke's NAME comes first; the options follow (as "keys revoke NAME
     * --database ...") */
    const char *name = NULL;
    int skip = 1;
    if (revoke && argc > 2 && argv[2][0] != '-') {
        name = argv[2];
        skip = 2;
    }
    const char *v[K_NOPTS];
    char err[512];
    int rc =
        options_parse(s_options, K_NOPTS, v, argc - skip, argv + skip, s_usage, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "imagejobs keys %s: %s\n", sub, err);
        return rc < 0 ? 2 : 0;
    }
    if (!create) {
        for (int i = K_NAME; i < K_NOPTS; i++)
            if (v[i]) {
                fprintf(stderr, "imagejobs keys %s: --%s is an option of 'keys create'\n", sub,
                        s_options[i].name);
                return 2;
            }
    }
    if (revoke && !name) {
        fprintf(stderr, "imagejobs keys revoke: which key? (imagejobs keys revoke NAME)\n");
        return 2;
    }
    return create ? s_create(v) : list ? s_list(v) : s_revoke(v, name);
}
