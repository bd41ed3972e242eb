/*
 * metrics.c - the process's Prometheus metrics and their exposition.
 */
#include "config.h"

#include "runtime/metrics.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

metrics_t metrics;

/* Upper bounds in seconds: 0.1 ms to 10 s, for requests and cancels alike. */
static const double s_bounds[METRIC_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0};
static const int s_status_codes[METRIC_STATUSES - 1] = {200, 201, 202, 204, 304, 400, 401, 404,
                                                        405, 409, 413, 415, 429, 431, 500, 503};
static const char *s_routes[METRIC_ROUTES];
static size_t s_nroutes;

void metrics_set_routes(const char *const *names, size_t n)
{
    s_nroutes = n < METRIC_ROUTES - 1 ? n : METRIC_ROUTES - 1;
    for (size_t i = 0; i < s_nroutes; i++)
        s_routes[i] = names[i];
}

void metrics_observe(metric_histogram_t *h, int64_t ns)
{
    if (ns < 0)
        ns = 0;
    double s = (double)ns / 1e9;
    size_t i = 0;
    while (i < METRIC_BUCKETS && s > s_bounds[i])
        i++;
    if (i < METRIC_BUCKETS)
        atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, (uint_fast64_t)ns, memory_order_relaxed);
}

void metrics_http(int route, int status, int64_t duration_ns)
{
    size_t r = route >= 0 && (size_t)route < s_nroutes ? (size_t)route : METRIC_ROUTES - 1;
    size_t s = METRIC_SOTHER;
    for (size_t i = 0; i < METRIC_STATUSES - 1; i++)
        if (s_status_codes[i] == status)
            s = i;
    atomic_fetch_add_explicit(&metrics.http_requests[r][s], 1, memory_order_relaxed);
    metrics_observe(&metrics.http_duration[r], duration_ns);
}

void metrics_job_ended(int end)
{
    if (end >= 0 && end < METRIC_ENDS)
        atomic_fetch_add_explicit(&metrics.jobs_ended[end], 1, memory_order_relaxed);
}

/* ------------------------------------------------------------ exposition */

typedef struct {
    char *p;
    size_t len, cap;
} out_t;

static void s_put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_put(out_t *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->cap = o->cap * 2 + (n > 0 ? (size_t)n : 0);
        if (!(o->p = realloc(o->p, o->cap)))
            abort();
    }
}

static uint64_t s_get(atomic_uint_fast64_t *v)
{
    return (uint64_t)atomic_load_explicit(v, memory_order_relaxed);
}

static void s_head(out_t *o, const char *name, const char *type, const char *help)
{
    s_put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void s_counter(out_t *o, const char *name, const char *help, atomic_uint_fast64_t *v)
{
    s_head(o, name, "counter", help);
    s_put(o, "%s %llu\n", name, (unsigned long long)s_get(v));
}

static void s_gauge(out_t *o, const char *name, const char *help, long long v)
{
    s_head(o, name, "gauge", help);
    s_put(o, "%s %lld\n", name, v);
}

/* The series of one histogram; labels: "" or `route="...",`. */
static void s_histogram_series(out_t *o, const char *name, const char *labels,
                               metric_histogram_t *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < METRIC_BUCKETS; i++) {
        cum += s_get(&h->bucket[i]);
        s_put(o, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, s_bounds[i],
              (unsigned long long)cum);
    }
    uint64_t count = s_get(&h->count);
    s_put(o, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)count);
    char bare[128] = "";
    size_t n = strlen(labels);
    if (n) /* `route="x",` without its comma, in braces */
        snprintf(bare, sizeof bare, "{%.*s}", (int)(n - 1), labels);
    s_put(o, "%s_sum%s %.9f\n%s_count%s %llu\n", name, bare, (double)s_get(&h->sum_ns) / 1e9, name,
          bare, (unsigned long long)count);
}

static long long s_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%lld %lld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

static long long s_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    long long n = 0;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

size_t metrics_render(char **out)
{
    out_t o = {.cap = 16384};
    if (!(o.p = malloc(o.cap)))
        abort();
    s_head(&o, "imagejobs_http_requests_total", "counter",
           "HTTP responses by route (the routing table's pattern) and status");
    for (size_t r = 0; r < METRIC_ROUTES; r++) {
        const char *route = r < s_nroutes ? s_routes[r] : r == METRIC_ROUTES - 1 ? "none" : NULL;
        for (size_t s = 0; route && s < METRIC_STATUSES; s++) {
            uint64_t v = s_get(&metrics.http_requests[r][s]);
            if (!v)
                continue;
            if (s == METRIC_SOTHER)
                s_put(&o, "imagejobs_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                      route, (unsigned long long)v);
            else
                s_put(&o, "imagejobs_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n", route,
                      s_status_codes[s], (unsigned long long)v);
        }
    }
    s_head(&o, "imagejobs_http_request_duration_seconds", "histogram",
           "from a request's arrival to the start of its response, by route");
    for (size_t r = 0; r < METRIC_ROUTES; r++) {
        const char *route = r < s_nroutes ? s_routes[r] : r == METRIC_ROUTES - 1 ? "none" : NULL;
        if (!route || !s_get(&metrics.http_duration[r].count))
            continue;
        char labels[96];
        snprintf(labels, sizeof labels, "route=\"%s\",", route);
        s_histogram_series(&o, "imagejobs_http_request_duration_seconds", labels,
                           &metrics.http_duration[r]);
    }
    s_gauge(&o, "imagejobs_event_streams_open", "server-sent event streams open now",
            (long long)atomic_load(&metrics.streams_open));
    s_counter(&o, "imagejobs_jobs_created_total", "jobs created through this instance",
              &metrics.jobs_created);
    s_head(&o, "imagejobs_jobs_ended_total", "counter",
           "jobs whose end this instance's store committed, by final status");
    static const char *const ends[METRIC_ENDS] = {"completed", "failed", "user_cancelled"};
    for (int i = 0; i < METRIC_ENDS; i++)
        s_put(&o, "imagejobs_jobs_ended_total{status=\"%s\"} %llu\n", ends[i],
              (unsigned long long)s_get(&metrics.jobs_ended[i]));
    s_counter(&o, "imagejobs_images_recorded_total", "images this instance's generators recorded",
              &metrics.images_recorded);
    s_counter(&o, "imagejobs_combinations_started_total",
              "combinations this instance's generators claimed", &metrics.claims);
    s_counter(&o, "imagejobs_combinations_stopped_total",
              "combinations this instance's generators stopped (any outcome)", &metrics.stops);
    s_gauge(&o, "imagejobs_combinations_running", "combinations running on this instance now",
            (long long)(s_get(&metrics.claims) - s_get(&metrics.stops)));
    s_counter(&o, "imagejobs_cancels_total", "cancel requests this instance answered, one per job",
              &metrics.cancels_requested);
    s_head(&o, "imagejobs_cancel_propagation_seconds", "histogram",
           "from a cancel's arrival at any instance to this instance's generator observing it");
    s_histogram_series(&o, "imagejobs_cancel_propagation_seconds", "", &metrics.cancel_propagation);
    s_head(&o, "imagejobs_cancel_stop_seconds", "histogram",
           "from a generator observing a cancel to its combination stopped");
    s_histogram_series(&o, "imagejobs_cancel_stop_seconds", "", &metrics.cancel_stop);
    s_head(&o, "imagejobs_generator_busy_seconds_total", "counter",
           "time this instance's generators spent on combinations (claim to stop)");
    s_put(&o, "imagejobs_generator_busy_seconds_total %.6f\n",
          (double)s_get(&metrics.generator_busy_ns) / 1e9);
    s_gauge(&o, "imagejobs_postgres_up", "1 while the store's PostgreSQL connection is ready",
            (long long)atomic_load(&metrics.postgres_up));
    s_gauge(&o, "imagejobs_redis_up", "1 while the redis actor's connections are up",
            (long long)atomic_load(&metrics.redis_up));
    s_gauge(&o, "imagejobs_store_pipeline_depth", "requests in the store's PostgreSQL pipeline",
            (long long)atomic_load(&metrics.store_pipeline_depth));
    s_counter(&o, "imagejobs_view_hits_total",
              "GET /api/jobs/{id} answered from this instance's job view", &metrics.view_hits);
    s_counter(&o, "imagejobs_view_misses_total",
              "GET /api/jobs/{id} read from PostgreSQL into the job view (not in it, or stale)",
              &metrics.view_misses);
    s_counter(&o, "imagejobs_view_bypasses_total",
              "GET /api/jobs/{id} read from PostgreSQL around the job view (its feed could not "
              "be brought up to date)",
              &metrics.view_bypasses);
    s_gauge(&o, "imagejobs_view_bytes", "bytes the job view holds (at most --view-cache-mb)",
            (long long)atomic_load(&metrics.view_bytes));
    s_gauge(&o, "imagejobs_view_entries", "job documents the job view holds",
            (long long)atomic_load(&metrics.view_entries));
    s_gauge(&o, "process_resident_memory_bytes", "resident memory of the process", s_rss_bytes());
    s_gauge(&o, "process_open_fds", "open file descriptors of the process", s_open_fds());
    *out = o.p;
    return o.len;
}
