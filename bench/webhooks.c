/*
 * bench/webhooks.c - webhook deliveries (docs/webhooks.md): deliveries/s to
 * a local receiver, event commit -> receiver latency (p50/p99), and what
 * 1,000 pending, failing deliveries cost GET and cancel throughput; beside
 * the floor measured in the same run: raw libcurl POSTs to the same
 * receiver (the multi interface at the same concurrency, and one at a
 * time on a kept connection).
 *
 *   cmd/imagejobs-local bench webhooks [--quick] [--deliveries N] [--samples N]
 *
 * The receiver is tests/receiver.c on 127.0.0.1 (the instances run with
 * --webhook-allow-private); the events are `cancelled` events of pending
 * jobs (generators 0), cancelled by the API: the event's transaction is the
 * cancel's, and `occurred_at` in the body is stamped inside it.
 */
#include "config.h"

#include "bench/util.h"
#include "tests/api_client.h"
#include "tests/receiver.h"

#include <curl/curl.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET "bench-secret"
#define CONCURRENCY 64
#define LOAD_THREADS 8

static struct {
    int deliveries, samples;
    const char *redis, *database, *logs;
} s_opt = {1000, 200, NULL, NULL, NULL};

static receiver_t *s_rcv;
static rcv_hit_t *s_hits;
#define MAX_HITS 20000

/* ------------------------------------------------------------ the floor */

static const char s_body[] =
    "{\"event\": \"cancelled\", \"job_id\": \"32500227-0000-4000-8000-000000000000\", "
    "\"image\": null, \"event_seq\": 1042, \"created_at\": \"2026-12-01T14:48:34.040589Z\", "
    "\"job_status\": \"user_cancelled\", \"started_at\": null, \"delivery_id\": "
    "\"6f1c1f0e-5c3e-4d7a-9a43-8f0b6c1d2e3f\", \"finished_at\": \"2026-12-01T14:48:34.040589Z\", "
    "\"occurred_at\": \"2026-12-01T14:48:34.040589Z\", \"total_images\": 1, \"cancel_reason\": "
    "\"user\", \"completed_images\": 0, \"cancel_requested_at\": null, "
    "\"generated_attach_ids\": []}";

static CURL *s_easy(const char *url, struct curl_slist *h)
{
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, s_body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    return e;
}

typedef struct {
    const char *url;
    int n;
} floor_t;

static void *s_floor_thread(void *arg)
{
    floor_t *f = arg;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    CURL *e = s_easy(f->url, h);
    for (int i = 0; i < f->n; i++)
        curl_easy_perform(e);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    return NULL;
}

/* n POSTs from LOAD_THREADS threads, each one after another on its own
 * kept connection: per second. */
static double s_floor_rate(const char *url, int n)
{
    pthread_t t[LOAD_THREADS];
    floor_t f = {url, n / LOAD_THREADS};
    double t0 = bench_mono();
    for (int i = 0; i < LOAD_THREADS; i++)
        pthread_create(&t[i], NULL, s_floor_thread, &f);
    for (int i = 0; i < LOAD_THREADS; i++)
        pthread_join(t[i], NULL);
    return f.n * LOAD_THREADS / (bench_mono() - t0);
}

static void s_percentiles(double *v, int n, double *p50, double *p99)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    *p50 = v[n / 2];
    *p99 = v[(int)((n - 1) * 0.99)];
}

/* n POSTs one after another on one kept connection: p50, p99 in ms. */
static void s_floor_latency(const char *url, int n, double *p50, double *p99)
{
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    CURL *e = s_easy(url, h);
    double *v = calloc((size_t)n, sizeof *v);
    for (int i = 0; i < n; i++) {
        double t = bench_mono();
        curl_easy_perform(e);
        v[i] = (bench_mono() - t) * 1e3;
    }
    s_percentiles(v, n, p50, p99);
    free(v);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
}

/* ---------------------------------------------------------- the service */

typedef struct {
    int port;
    pid_t pid;
} inst_t;

/* An instance with generators 0; with the secret it delivers, retrying
 * after 0.2 s doubling to 1 s when fast, on the defaults otherwise. */
static inst_t s_start(const char *name, bool secret, bool fast)
{
    inst_t in = {api_free_port(), 0};
    char log[4200];
    snprintf(log, sizeof log, "%s/%s.log", s_opt.logs, name);
    const char *args[] = {"--redis",
                          s_opt.redis,
                          "--database",
                          s_opt.database,
                          "--generators",
                          "0",
                          "--instance",
                          name,
                          "--webhook-allow-private",
                          fast ? "--webhook-retry-base" : NULL,
                          "0.2",
                          "--webhook-retry-max",
                          "1",
                          NULL};
    if (secret)
        setenv("IMAGEJOBS_WEBHOOK_SECRET", SECRET, 1);
    else
        unsetenv("IMAGEJOBS_WEBHOOK_SECRET");
    in.pid = api_serve(in.port, args, log, 60);
    if (in.pid < 0) {
        fprintf(stderr, "webhooks: %s did not start (see %s)\n", name, log);
        exit(1);
    }
    return in;
}

/* A pending job, with a webhook for its cancel or without one; its id. */
static char *s_job(int port, bool hook)
{
    char body[512];
    snprintf(body, sizeof body, "{\"prompt\":\"p\",\"width\":64,\"height\":64,\"steps\":1%s%d%s}",
             hook ? ",\"webhook\":{\"url\":\"http://127.0.0.1:" : "", hook ? rcv_port(s_rcv) : 0,
             hook ? "/h\",\"events\":[\"cancelled\"]}" : "");
    if (!hook)
        snprintf(body, sizeof body, "{\"prompt\":\"p\",\"width\":64,\"height\":64,\"steps\":1}");
    api_response_t r;
    errno = 0;
    if (api_request(port, "POST", "/api/jobs", "Content-Type: application/json\r\n", body,
                    strlen(body), &r)
            < 0
        || r.status != 201) {
        fprintf(stderr, "webhooks: create on port %d failed: %d %s (%s)\n", port, r.status,
                r.body ? r.body : "", strerror(errno));
        exit(1);
    }
    char *id = strdup(json_string_value(json_object_get(r.json, "job_id")));
    api_response_free(&r);
    return id;
}

static void s_cancel_all_pending(int port)
{
    const char *b = "{\"filter\":{\"status\":[\"pending\"]}}";
    api_response_t r;
    if (api_request(port, "POST", "/api/jobs/cancel", "Content-Type: application/json\r\n", b,
                    strlen(b), &r)
            < 0
        || r.status != 200) {
        fprintf(stderr, "webhooks: bulk cancel failed: %d\n", r.status);
        exit(1);
    }
    api_response_free(&r);
}

/* -------------------------------------------------------------- the load */

typedef struct {
    int port;
    char **ids; /* cancels: one job each; NULL: GETs of one job */
    const char *get_id;
    int next, n;
    long done;
    pthread_mutex_t lock;
    double until;
} load_t;

static size_t s_drop(char *p, size_t size, size_t n, void *arg)
{
    return size * n;
}

/* One client thread: requests one after another on one kept connection
 * (libcurl easy), so that the load measures the server, not connects. */
static void *s_load_thread(void *arg)
{
    load_t *l = arg;
    char url[160];
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_drop);
    if (l->ids)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    for (;;) {
        if (l->ids) {
            pthread_mutex_lock(&l->lock);
            int i = l->next < l->n ? l->next++ : -1;
            pthread_mutex_unlock(&l->lock);
            if (i < 0)
                break;
            snprintf(url, sizeof url, "http://127.0.0.1:%d/api/jobs/%s/cancel", l->port, l->ids[i]);
        } else {
            if (bench_mono() >= l->until)
                break;
            snprintf(url, sizeof url, "http://127.0.0.1:%d/api/jobs/%s", l->port, l->get_id);
        }
        curl_easy_setopt(e, CURLOPT_URL, url);
        long status = 0;
        if (curl_easy_perform(e) == CURLE_OK
            && curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200) {
            pthread_mutex_lock(&l->lock);
            l->done++;
            pthread_mutex_unlock(&l->lock);
        }
    }
    curl_easy_cleanup(e);
    return NULL;
}

static double s_run_load(load_t *l, double seconds)
{
    pthread_t t[LOAD_THREADS];
    pthread_mutex_init(&l->lock, NULL);
    double t0 = bench_mono();
    l->until = t0 + seconds;
    for (int i = 0; i < LOAD_THREADS; i++)
        pthread_create(&t[i], NULL, s_load_thread, l);
    for (int i = 0; i < LOAD_THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_mutex_destroy(&l->lock);
    return (double)l->done / (bench_mono() - t0);
}

static void s_sql(const char *sql)
{
    PGconn *db = PQconnectdb(s_opt.database);
    PQclear(PQexec(db, sql));
    PQfinish(db);
}

/* One round on port: GETs/s for a second, then cancels/s of 300 fresh
 * pending jobs. */
static void s_round(int port, const char *get_id, double *gets, double *cancels)
{
    enum { ROUND_JOBS = 300 };
    load_t lg = {.port = port, .get_id = get_id};
    *gets = s_run_load(&lg, 1.0);
    char *ids[ROUND_JOBS];
    for (int i = 0; i < ROUND_JOBS; i++)
        ids[i] = s_job(port, false);
    load_t lc = {.port = port, .ids = ids, .n = ROUND_JOBS};
    *cancels = s_run_load(&lc, 0);
    for (int i = 0; i < ROUND_JOBS; i++)
        free(ids[i]);
}

#define PAIRS 3

static double s_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return v[n / 2];
}

/* GET and cancel throughput on port b relative to port a: rounds on a and
 * b alternate (the one first alternating too) and each pair gives a
 * ratio; the median of PAIRS ratios, and b's median rates. Pairs, not
 * phases measured one after the other: on this shared machine the same
 * configuration measured a minute apart differs by up to half. After a
 * VACUUM: every phase leaves thousands of dead index entries (events
 * numbered, deliveries settled). */
static void s_compare(int a, int b, const char *get_id, double *get_ratio, double *cancel_ratio,
                      double *gets, double *cancels)
{
    double rg[PAIRS], rc[PAIRS], bg[PAIRS], bc[PAIRS];
    s_sql("VACUUM ANALYZE");
    for (int k = 0; k < PAIRS; k++) {
        double ga, ca;
        if (k % 2) {
            s_round(b, get_id, &bg[k], &bc[k]);
            s_round(a, get_id, &ga, &ca);
        } else {
            s_round(a, get_id, &ga, &ca);
            s_round(b, get_id, &bg[k], &bc[k]);
        }
        rg[k] = bg[k] / ga;
        rc[k] = bc[k] / ca;
    }
    *get_ratio = s_median(rg, PAIRS);
    *cancel_ratio = s_median(rc, PAIRS);
    *gets = s_median(bg, PAIRS);
    *cancels = s_median(bc, PAIRS);
}

/* Distinct deliveries answered 200 so far, and the last one's arrival. */
static size_t s_delivered(int64_t *last_us)
{
    size_t n = rcv_hits(s_rcv, s_hits, MAX_HITS), k = 0;
    for (size_t i = 0; i < n && i < MAX_HITS; i++)
        if (s_hits[i].answered == 200) {
            bool seen = false;
            for (size_t j = 0; j < i && !seen; j++)
                seen = s_hits[j].answered == 200 && !strcmp(s_hits[j].delivery, s_hits[i].delivery);
            if (!seen) {
                k++;
                if (last_us && s_hits[i].at_us > *last_us)
                    *last_us = s_hits[i].at_us;
            }
        }
    return k;
}

static void s_pending_to_dead(void)
{
    s_sql("UPDATE webhook_deliveries SET state = 'dead' WHERE state = 'pending'");
}

static void s_usage(FILE *out)
{
    fprintf(out, "usage: webhooks [--quick] [--deliveries N] [--samples N] [--logs DIR] "
                 "[--redis URL] [--database CONNINFO]\n");
}

int main(int argc, char **argv)
{
    enum { O_N = 256, O_S, O_LOGS, O_REDIS, O_DB };
    static const struct option longs[] = {
        {"quick", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"deliveries", required_argument, NULL, O_N},
        {"samples", required_argument, NULL, O_S},
        {"logs", required_argument, NULL, O_LOGS},
        {"redis", required_argument, NULL, O_REDIS},
        {"database", required_argument, NULL, O_DB},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        if (c == 'q') {
            s_opt.deliveries = 200;
            s_opt.samples = 50;
        } else if (c == O_N || c == O_S) {
            int v = atoi(optarg);
            if (v < 10 || v > 10000) {
                fprintf(stderr, "webhooks: counts are 10 to 10000\n");
                return 2;
            }
            *(c == O_N ? &s_opt.deliveries : &s_opt.samples) = v;
        } else if (c == O_LOGS) {
            s_opt.logs = optarg;
        } else if (c == O_REDIS) {
            s_opt.redis = optarg;
        } else if (c == O_DB) {
            s_opt.database = optarg;
        } else {
            s_usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    bench_services("webhooks", &s_opt.redis, &s_opt.database, &s_opt.logs);
    mkdir(s_opt.logs, 0755);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    s_hits = calloc(MAX_HITS, sizeof *s_hits);
    s_rcv = rcv_start(SECRET);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/h", rcv_port(s_rcv));
    int n = s_opt.deliveries;

    /* the floor: the receiver alone, from libcurl */
    double floor_rate = s_floor_rate(url, n), f50, f99;
    s_floor_latency(url, s_opt.samples, &f50, &f99);
    rcv_stop(&s_rcv);
    s_rcv = rcv_start(SECRET);

    /* A accepts (no secret: no webhook actor), B delivers */
    inst_t a = s_start("bench-webhooks-A", false, false);
    inst_t b = s_start("bench-webhooks-B", true, true);
    s_pending_to_dead(); /* an earlier run's leftovers */
    s_cancel_all_pending(a.port);
    char *probe = s_job(a.port, false); /* ended: its GET computes no queue position */
    s_cancel_all_pending(a.port);

    /* GET and cancel throughput, each against A's (no webhook actor): A
     * itself (the noise); B with a webhook actor and nothing pending; B
     * with 1,000 deliveries answered 500 (retried every second at most); B
     * on the default schedule and time-out with 1,000 pending at a
     * receiver that never answers */
    double rg[4], rc[4], g[4], cr[4];
    s_round(a.port, probe, &g[0], &cr[0]); /* warm-up, not counted: plans, caches */
    s_round(b.port, probe, &g[0], &cr[0]);
    s_compare(a.port, a.port, probe, &rg[0], &rc[0], &g[0], &cr[0]);
    s_compare(a.port, b.port, probe, &rg[1], &rc[1], &g[1], &cr[1]);
    rcv_set(s_rcv, 1000000, 0);
    for (int i = 0; i < 1000; i++)
        free(s_job(a.port, true));
    s_cancel_all_pending(a.port);
    double until = bench_mono() + 60;
    while (rcv_hits(s_rcv, NULL, 0) < 1000 && bench_mono() < until)
        bench_sleep(0.01);
    s_compare(a.port, b.port, probe, &rg[2], &rc[2], &g[2], &cr[2]);
    api_stop(b.pid, 20);
    s_pending_to_dead();
    rcv_stop(&s_rcv);
    s_rcv = rcv_start(SECRET);
    rcv_set(s_rcv, 0, -1);
    for (int i = 0; i < 1000; i++)
        free(s_job(a.port, true));
    s_cancel_all_pending(a.port);
    b = s_start("bench-webhooks-B", true, false);
    until = bench_mono() + 60;
    while (rcv_hits(s_rcv, NULL, 0) < CONCURRENCY && bench_mono() < until)
        bench_sleep(0.01);
    s_compare(a.port, b.port, probe, &rg[3], &rc[3], &g[3], &cr[3]);
    size_t held = rcv_hits(s_rcv, NULL, 0);
    api_stop(b.pid, 20);
    s_pending_to_dead();
    rcv_stop(&s_rcv);
    s_rcv = rcv_start(SECRET);

    /* deliveries/s: n pending, then B starts and drains them */
    for (int i = 0; i < n; i++)
        free(s_job(a.port, true));
    s_cancel_all_pending(a.port);
    b = s_start("bench-webhooks-B", true, true);
    int64_t last = 0;
    until = bench_mono() + 120;
    while (s_delivered(NULL) < (size_t)n && bench_mono() < until)
        bench_sleep(0.005);
    size_t drained = s_delivered(&last);
    size_t got = rcv_hits(s_rcv, s_hits, MAX_HITS);
    int64_t first = got ? s_hits[0].at_us : 0;
    for (size_t i = 0; i < got && i < MAX_HITS; i++)
        if (s_hits[i].at_us < first)
            first = s_hits[i].at_us;
    double rate = last > first ? (double)n / ((double)(last - first) / 1e6) : 0;

    /* event commit -> receiver, one at a time */
    double *lat = calloc((size_t)s_opt.samples, sizeof *lat);
    for (int i = 0; i < s_opt.samples; i++) {
        char *id = s_job(b.port, true), path[128];
        size_t before = rcv_hits(s_rcv, NULL, 0);
        snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
        api_response_t r;
        api_request(b.port, "POST", path, NULL, NULL, 0, &r);
        api_response_free(&r);
        until = bench_mono() + 30;
        bool found = false;
        while (!found && bench_mono() < until) {
            size_t k = rcv_hits(s_rcv, s_hits, MAX_HITS);
            for (size_t j = before; j < k && j < MAX_HITS && !found; j++)
                if (!strcmp(s_hits[j].job_id, id)) {
                    lat[i] = (double)(s_hits[j].at_us - s_hits[j].occurred_us) / 1e3;
                    found = true;
                }
            if (!found)
                bench_sleep(0.0002);
        }
        free(id);
        bench_sleep(0.01);
    }
    double l50, l99;
    s_percentiles(lat, s_opt.samples, &l50, &l99);

    printf("webhooks: %d deliveries, %d latency samples, concurrency %d\n", n, s_opt.samples,
           CONCURRENCY);
    printf("  floor  libcurl POSTs to the receiver, %d kept connections: %.0f/s; one at a time: "
           "p50 %.2f ms, p99 %.2f ms\n",
           LOAD_THREADS, floor_rate, f50, f99);
    printf("  webhook actor deliveries: %.0f/s (%zu of %d delivered)\n", rate, drained, n);
    printf("  event commit -> receiver: p50 %.2f ms, p99 %.2f ms\n", l50, l99);
    static const char *const what[] = {"A against itself (the noise)",
                                       "webhook actor, nothing pending",
                                       "1,000 pending answered 500 (retries <= 1 s)",
                                       "1,000 pending at a receiver that hangs (defaults)"};
    printf("  GET and cancel throughput against an instance without a webhook actor, median of "
           "%d pairs:\n",
           PAIRS);
    for (int i = 0; i < 4; i++)
        printf("  %-50s GET %5.0f/s (%+4.0f%%), cancel %5.0f/s (%+4.0f%%)\n", what[i], g[i],
               (rg[i] - 1) * 100, cr[i], (rc[i] - 1) * 100);
    printf("  (the hanging receiver got %zu requests in all, %d at a time: the bound)\n", held,
           CONCURRENCY);
    api_stop(b.pid, 20);
    api_stop(a.pid, 20);
    rcv_stop(&s_rcv);
    free(lat);
    free(s_hits);
    free(probe);
    curl_global_cleanup();
    return 0;
}
