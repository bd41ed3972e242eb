/*
 * bench/util.h - the few helpers every benchmark program needs: a
 * monotonic clock in seconds, a sleep that survives signals, the
 * comparison for sorting samples, a series of samples with its
 * percentiles, and a synchronous Redis connection.
 */
#ifndef IMAGEJOBS_BENCH_UTIL_H
#define IMAGEJOBS_BENCH_UTIL_H

#include <errno.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Pacing a load, or polling a condition with a deadline: never a stand-in
 * for an event the program could wait on. */
static inline void bench_sleep(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A growable array of samples, in whatever unit the bench reports. */
typedef struct {
    double *v;
    size_t n, cap;
} bench_series_t;

static inline void bench_push(bench_series_t *s, double x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v)
            abort();
    }
    s->v[s->n++] = x;
}

static inline void bench_sort(bench_series_t *s)
{
    if (s->n)
        qsort(s->v, s->n, sizeof *s->v, bench_cmp_double);
}

/* Nearest-rank percentile (p in 0..1) of a sorted series; NAN when empty. */
static inline double bench_pct(const bench_series_t *s, double p)
{
    if (!s->n)
        return NAN;
    size_t k = (size_t)ceil(p * (double)s->n);
    return s->v[k ? k - 1 : 0];
}

static inline double bench_max(const bench_series_t *s)
{
    return s->n ? s->v[s->n - 1] : NAN;
}

/* "2026-11-26T13:32:08.418054Z" (the job document's timestamps) -> µs since
 * the epoch; -1 when s is NULL or not that. */
static inline int64_t bench_iso_us(const char *s)
{
    struct tm tm = {0};
    int us = 0, n = 0;
    if (!s
        || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%6d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &us, &n)
               != 7
        || s[n] != 'Z')
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000000 + us;
}

/* A synchronous hiredis connection to url ("redis://HOST:PORT" or a unix
 * socket path), 5 s timeout; NULL with the reason in err. */
static inline redisContext *bench_redis_connect(const char *url, char *err, size_t errlen)
{
    struct timeval tv = {5, 0};
    redisContext *c;
    if (strncmp(url, "redis://", 8) == 0) {
        char host[256] = "127.0.0.1";
        int port = 6379;
        const char *hp = url + 8, *colon = strrchr(hp, ':');
        size_t hl = colon ? (size_t)(colon - hp) : strcspn(hp, "/");
        if (hl && hl < sizeof host) {
            memcpy(host, hp, hl);
            host[hl] = 0;
        }
        if (colon)
            port = atoi(colon + 1);
        c = redisConnectWithTimeout(host, port, tv);
    } else {
        c = redisConnectUnixWithTimeout(url, tv);
    }
    if (!c || c->err) {
        snprintf(err, errlen, "cannot connect to Redis at %s: %s", url,
                 c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    return c;
}

/* The services a bench runs against: *redis and *database from the
 * environment cmd/imagejobs-local bench sets up (IMAGEJOBS_BENCH_REDIS,
 * IMAGEJOBS_BENCH_DATABASE) unless an option gave them, IMAGEJOBS_BIN
 * required too (exit 2 naming prog otherwise), and *logs by default
 * <the binary's directory>/bench/<prog>-logs. */
static inline void bench_services(const char *prog, const char **redis, const char **database,
                                  const char **logs)
{
    static char dir[4096];
    if (!*redis)
        *redis = getenv("IMAGEJOBS_BENCH_REDIS");
    if (!*database)
        *database = getenv("IMAGEJOBS_BENCH_DATABASE");
    const char *bin = getenv("IMAGEJOBS_BIN");
    if (!*redis || !*database || !bin) {
        fprintf(stderr,
                "%s: needs IMAGEJOBS_BIN, a Redis (--redis or IMAGEJOBS_BENCH_REDIS) and a "
                "PostgreSQL (--database or IMAGEJOBS_BENCH_DATABASE); cmd/imagejobs-local bench "
                "%s sets them all up\n",
                prog, prog);
        exit(2);
    }
    if (!*logs) {
        const char *slash = strrchr(bin, '/');
        snprintf(dir, sizeof dir, "%.*s/bench/%s-logs", slash ? (int)(slash - bin) : 1,
                 slash ? bin : ".", prog);
        *logs = dir;
    }
}

#endif
