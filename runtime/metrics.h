/*
 * metrics.h - the process's Prometheus metrics (docs/operations.md): one
 * set per process, updated lock-free from any actor's thread (C11
 * atomics), rendered in the text exposition format by metrics_render()
 * for GET /metrics.
 *
 * Each actor counts what it sees: the HTTP actor its requests and streams,
 * the store what it commits for this instance (jobs created and ended,
 * images, claims and stops, the cancel timings the generators report), the
 * redis actor its connection. Every figure is this instance's; sums across
 * instances are meaningful for the counters and histograms, not for the
 * gauges of connection state.
 */
#ifndef IMAGEJOBS_METRICS_H
#define IMAGEJOBS_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Routes are the HTTP actor's (metrics_set_routes); index METRIC_ROUTES - 1
 * counts what matched none. */
#define METRIC_ROUTES 24
/* Latency buckets, seconds (upper bounds; +Inf implied). */
#define METRIC_BUCKETS 14

typedef struct {
    atomic_uint_fast64_t bucket[METRIC_BUCKETS]; /* not cumulative: one per bound */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum_ns;
} metric_histogram_t;

/* HTTP status classes counted per route. */
enum {
    METRIC_S200,
    METRIC_S201,
    METRIC_S202,
    METRIC_S204,
    METRIC_S304,
    METRIC_S400,
    METRIC_S401,
    METRIC_S404,
    METRIC_S405,
    METRIC_S409,
    METRIC_S413,
    METRIC_S415,
    METRIC_S429,
    METRIC_S431,
    METRIC_S500,
    METRIC_S503,
    METRIC_SOTHER,
    METRIC_STATUSES
};

/* The job statuses a job ends in, as metrics_job_ended() takes them. */
enum { METRIC_END_COMPLETED, METRIC_END_FAILED, METRIC_END_CANCELLED, METRIC_ENDS };

typedef struct {
    atomic_uint_fast64_t http_requests[METRIC_ROUTES][METRIC_STATUSES];
    metric_histogram_t http_duration[METRIC_ROUTES];
    atomic_int_fast64_t streams_open;
    atomic_uint_fast64_t jobs_created;
    atomic_uint_fast64_t jobs_ended[METRIC_ENDS];
    atomic_uint_fast64_t images_recorded;
    atomic_uint_fast64_t claims;            /* combinations this instance started */
    atomic_uint_fast64_t stops;             /* and stopped (any outcome) */
    atomic_uint_fast64_t cancels_requested; /* cancel requests answered (one job each) */
    metric_histogram_t cancel_propagation;  /* cancel received -> a generator observed it */
    metric_histogram_t cancel_stop;         /* observed -> stopped */
    atomic_uint_fast64_t generator_busy_ns; /* claim -> stop, summed over combinations */
    atomic_int_fast64_t postgres_up, redis_up;
    atomic_int_fast64_t store_pipeline_depth; /* requests in the store's pipeline */
    /* the job view (docs/store.md): GETs answered from memory, read from
     * PostgreSQL into it, or read from PostgreSQL around it; its size */
    atomic_uint_fast64_t view_hits, view_misses, view_bypasses;
    atomic_int_fast64_t view_bytes, view_entries;
} metrics_t;

extern metrics_t metrics;

/* The route names (a label each, static strings), in route index order. */
void metrics_set_routes(const char *const *names, size_t n);

/* One HTTP response to route (-1: none matched), with its status and time. */
void metrics_http(int route, int status, int64_t duration_ns);

void metrics_observe(metric_histogram_t *h, int64_t ns);
void metrics_job_ended(int end);

/* The exposition (text format 0.0.4) of every metric, and the process's
 * RSS and open descriptors, malloc'd into *out. Returns its length. */
size_t metrics_render(char **out);

#endif
