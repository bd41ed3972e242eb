/*
 * check_events.c - the job event streams end to end (docs/events.md): real
 * `imagejobs serve` processes sharing the suite's Redis and a PostgreSQL
 * database of each test's own, read by a real SSE client (tests/sse_client.h)
 * and by the npm `eventsource` package (a browser's EventSource for Node).
 *
 * What is checked is what a user sees: a stream on one instance of a job
 * that runs on another, the cancel in the stream, lossless resume across
 * instances and a restart, previews only when asked for, a slow reader
 * cut off while others are served, a thousand streams on one job, limits.
 * No assertion is on time: every wait is for an event, with a generous
 * timeout.
 */
#include "config.h"

#include "actors/generator/png.h"
#include "tests/api_check.h"
#include "tests/fixture.h"
#include "tests/instances.h"
#include "tests/js_client.h"
#include "tests/runner.h"
#include "tests/sse_client.h"

#include <check.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#define EVENT_WAIT_MS 60000 /* per event: sanitizer builds on 2 busy cores */

/* ------------------------------------------------------------ reading */

/* One event as a test keeps it. */
typedef struct {
    char event[16];
    uint64_t id;
    json_t *data;
} rec_t;

static void s_rec_free(rec_t *r)
{
    json_decref(r->data);
    r->data = NULL;
}

static bool s_durable(const char *event)
{
    static const char *const kinds[] = {"created", "started", "image", "cancel", "stopped", "end"};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        if (!strcmp(event, kinds[i]))
            return true;
    return false;
}

/* The next event: 1 (in r), 0 the stream ended. Every event has an id and
 * one JSON object of data; fails the test on anything else. */
static int s_next(sse_t *s, rec_t *r)
{
    sse_event_t ev;
    int rc = sse_next(s, &ev, EVENT_WAIT_MS);
    ck_assert_msg(rc >= 0, "no event within %d ms (%s)", EVENT_WAIT_MS, strerror(errno));
    if (rc == 0)
        return 0;
    snprintf(r->event, sizeof r->event, "%s", ev.event);
    ck_assert_msg(ev.id[0], "event %s without an id", ev.event);
    char *end;
    r->id = strtoull(ev.id, &end, 10);
    ck_assert_msg(*end == '\0', "event id %s is not a number", ev.id);
    json_error_t je;
    r->data = json_loads(ev.data, 0, &je);
    ck_assert_msg(json_is_object(r->data), "%s data is not a JSON object: %s", ev.event, je.text);
    return 1;
}

static sse_t *s_open(inst_t *in, const char *path, const char *last_id)
{
    sse_t *s = sse_open(in->port, path, last_id, NULL, 20000);
    ck_assert_ptr_nonnull(s);
    ck_assert_msg(sse_status(s) == 200, "GET %s: %d %s", path, sse_status(s),
                  sse_body(s) ? sse_body(s) : "");
    const char *ct = sse_header(s, "content-type");
    ck_assert_msg(ct && !strncmp(ct, "text/event-stream", 17), "content type %s", ct ? ct : "-");
    return s;
}

static void s_job_path(char *out, size_t len, const char *id, const char *query)
{
    snprintf(out, len, "/api/jobs/%s/events%s", id, query ? query : "");
}

/* The event clock now, from the hello of every job's stream on in. */
static uint64_t s_clock(inst_t *in)
{
    sse_t *s = s_open(in, "/api/events", NULL);
    rec_t r;
    ck_assert_int_eq(s_next(s, &r), 1);
    ck_assert_str_eq(r.event, "hello");
    uint64_t c = r.id;
    ck_assert_int_eq(api_check_int(r.data, "event_clock"), (json_int_t)c);
    s_rec_free(&r);
    sse_close(s);
    return c;
}

/* Reads s to its end (or until `images` image events when > 0), appending
 * the image events' attach ids to ids and checking the order rules: a
 * snapshot first, durable ids increasing, nothing after end. Returns the
 * last durable event's kind seen ("" for none) in last (16 bytes). */
typedef struct {
    json_t *ids;  /* attach ids of image events, in order */
    int previews; /* preview events */
    int stopped;  /* stopped events */
    bool cancel;  /* a cancel event came */
    bool end;     /* the end event came */
    bool ended;   /* the stream ended (after the end event) */
    json_t *end_data;
    uint64_t last_id;
} seen_t;

static void s_seen_init(seen_t *v)
{
    memset(v, 0, sizeof *v);
    v->ids = json_array();
}

static void s_seen_free(seen_t *v)
{
    json_decref(v->ids);
    json_decref(v->end_data);
}

static void s_read(sse_t *s, const char *job, seen_t *v, int images, bool expect_snapshot)
{
    rec_t r;
    bool first = true;
    int got = 0;
    while (images <= 0 || got < images) {
        if (s_next(s, &r) == 0) {
            ck_assert_msg(v->end, "the stream ended before its end event");
            v->ended = true;
            return;
        }
        ck_assert_msg(!v->end, "%s after the end event", r.event);
        if (first && expect_snapshot) {
            ck_assert_str_eq(r.event, "snapshot");
            ck_assert_str_eq(api_check_str(r.data, "job_id"), job);
        }
        first = false;
        if (s_durable(r.event)) {
            ck_assert_msg(r.id > v->last_id, "%s id %" PRIu64 " after %" PRIu64, r.event, r.id,
                          v->last_id);
            v->last_id = r.id;
            ck_assert_str_eq(api_check_str(r.data, "job_id"), job);
        } else {
            ck_assert_msg(r.id >= v->last_id, "%s id %" PRIu64 " before %" PRIu64, r.event, r.id,
                          v->last_id);
        }
        if (!strcmp(r.event, "image")) {
            json_array_append(v->ids, json_object_get(r.data, "attach_id"));
            ck_assert_int_ge(api_check_int(r.data, "completed_images"), 1);
            ck_assert_int_le(api_check_int(r.data, "completed_images"),
                             api_check_int(r.data, "total_images"));
            got++;
        } else if (!strcmp(r.event, "preview")) {
            v->previews++;
        } else if (!strcmp(r.event, "stopped")) {
            v->stopped++;
        } else if (!strcmp(r.event, "cancel")) {
            v->cancel = true;
        } else if (!strcmp(r.event, "end")) {
            v->end = true;
            v->end_data = json_incref(r.data);
        }
        s_rec_free(&r);
    }
}

/* ids equals the job's final generated_attach_ids, in order. */
static void s_assert_all_images(json_t *ids, json_t *job)
{
    json_t *want = json_object_get(job, "generated_attach_ids");
    ck_assert_msg(json_equal(ids, want), "image events %s, job %s", json_dumps(ids, 0),
                  json_dumps(want, 0));
}

/* ------------------------------------------------------------ tests */

START_TEST(test_stream_on_b_of_a_job_running_on_a)
{
    inst_database("ij_events");
    inst_t *a = inst_start("A", "2", NULL);
    inst_t *b = inst_start("B", "0", NULL);
    uint64_t c = s_clock(b);
    char *id = inst_create(a, 2, 64, 8, 3);
    char path[128], last[32];
    s_job_path(path, sizeof path, id, NULL);
    snprintf(last, sizeof last, "%" PRIu64, c);
    sse_t *s = s_open(b, path, last); /* from before the job: every event of it */
    const char *cors = sse_header(s, "access-control-allow-origin");
    ck_assert_msg(cors && !strcmp(cors, "*"), "CORS header %s", cors ? cors : "-");
    seen_t v;
    s_seen_init(&v);
    s_read(s, id, &v, 0, true);
    ck_assert(v.ended);
    ck_assert_int_eq(v.stopped, 2);
    json_t *job = api_check_job(a->port, id);
    ck_assert_str_eq(api_check_str(job, "job_status"), "completed");
    ck_assert_int_eq(json_array_size(v.ids), 6);
    s_assert_all_images(v.ids, job);
    ck_assert_str_eq(api_check_str(v.end_data, "job_status"), "completed");
    ck_assert(json_equal(json_object_get(v.end_data, "generated_attach_ids"),
                         json_object_get(job, "generated_attach_ids")));
    ck_assert_int_eq(api_check_int(v.end_data, "completed_images"), 6);
    ck_assert_int_eq(api_check_int(v.end_data, "total_images"), 6);
    json_decref(job);
    s_seen_free(&v);
    sse_close(s);

    /* opened on the ended job: its snapshot and its end, then the end of
     * the stream; resumed past the end: 204, so an EventSource stops */
    s = s_open(b, path, NULL);
    rec_t r;
    ck_assert_int_eq(s_next(s, &r), 1);
    ck_assert_str_eq(r.event, "snapshot");
    ck_assert_str_eq(api_check_str(r.data, "job_status"), "completed");
    s_rec_free(&r);
    ck_assert_int_eq(s_next(s, &r), 1);
    ck_assert_str_eq(r.event, "end");
    uint64_t end_id = r.id;
    s_rec_free(&r);
    ck_assert_int_eq(s_next(s, &r), 0);
    sse_close(s);
    snprintf(last, sizeof last, "%" PRIu64, end_id);
    s = sse_open(b->port, path, last, NULL, 20000);
    ck_assert_int_eq(sse_status(s), 204);
    sse_close(s);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_cancel_through_a_while_streaming_from_b)
{
    inst_database("ij_events");
    inst_t *a = inst_start("A", "2", NULL);
    inst_t *b = inst_start("B", "0", NULL);
    char *id = inst_create(a, 2, 64, 20, 100);
    char path[128];
    s_job_path(path, sizeof path, id, NULL);
    sse_t *s = s_open(b, path, NULL);
    rec_t r;
    ck_assert_int_eq(s_next(s, &r), 1);
    ck_assert_str_eq(r.event, "snapshot");
    json_t *before = json_incref(json_object_get(r.data, "generated_attach_ids"));
    s_rec_free(&r);
    seen_t v;
    s_seen_init(&v);
    s_read(s, id, &v, 1, false); /* it runs */
    char cpath[128];
    snprintf(cpath, sizeof cpath, "/api/jobs/%s/cancel", id);
    api_response_t cr = api_check_call(a->port, "POST", cpath, NULL, NULL);
    ck_assert_msg(cr.status == 200, "cancel: %d %s", cr.status, cr.body);
    api_response_free(&cr);
    /* then: the cancel, one stop per running combination, the end */
    bool cancel_first = false;
    for (;;) {
        ck_assert_int_eq(s_next(s, &r), 1);
        if (!strcmp(r.event, "cancel")) {
            ck_assert_int_eq(v.stopped, 0);
            cancel_first = true;
            ck_assert_str_eq(api_check_str(r.data, "job_id"), id);
            ck_assert_ptr_nonnull(
                json_string_value(json_object_get(r.data, "cancel_requested_at")));
            ck_assert_ptr_nonnull(json_string_value(json_object_get(r.data, "mode")));
            ck_assert_ptr_nonnull(json_object_get(r.data, "reason"));
        } else if (!strcmp(r.event, "stopped")) {
            ck_assert_msg(cancel_first, "a stop before the cancel");
            v.stopped++;
            ck_assert_str_eq(api_check_str(r.data, "status"), "cancelled");
            ck_assert_ptr_nonnull(json_string_value(json_object_get(r.data, "cancel_observed_at")));
            ck_assert_ptr_nonnull(json_string_value(json_object_get(r.data, "stopped_at")));
        } else if (!strcmp(r.event, "image")) {
            json_array_append(v.ids, json_object_get(r.data, "attach_id"));
        } else if (!strcmp(r.event, "end")) {
            ck_assert_msg(cancel_first, "the end before the cancel");
            ck_assert_int_eq(v.stopped, 2);
            v.end_data = json_incref(r.data);
            s_rec_free(&r);
            break;
        }
        s_rec_free(&r);
    }
    ck_assert_int_eq(s_next(s, &r), 0); /* and the stream ends */
    sse_close(s);
    ck_assert_str_eq(api_check_str(v.end_data, "job_status"), "user_cancelled");
    json_t *job = api_check_job(a->port, id);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    json_array_extend(before, v.ids); /* made before the stream opened, and during it */
    s_assert_all_images(before, job);
    ck_assert(json_equal(json_object_get(v.end_data, "generated_attach_ids"),
                         json_object_get(job, "generated_attach_ids")));
    json_decref(job);
    json_decref(before);
    s_seen_free(&v);
    free(id);
    inst_cleanup();
}
END_TEST

/* Waits until the job has at least n images (or has ended). */
static void s_wait_images(inst_t *in, const char *id, int n)
{
    for (int i = 0; i < 6000; i++) {
        json_t *job = api_check_job(in->port, id);
        bool done = api_check_int(job, "completed_images") >= n
                    || api_check_final(api_check_str(job, "job_status"));
        json_decref(job);
        if (done)
            return;
        usleep(20000);
    }
    ck_abort_msg("the job never reached %d images", n);
}

START_TEST(test_resume_on_another_instance_and_after_a_restart)
{
    inst_database("ij_events");
    inst_t *a = inst_start("A", "1", NULL);
    inst_t *b = inst_start("B", "0", NULL);
    uint64_t c = s_clock(b);
    char *id = inst_create(a, 1, 128, 12, 8);
    char path[128], last[32];
    s_job_path(path, sizeof path, id, NULL);
    seen_t v;
    s_seen_init(&v);

    /* on B until the second image, then the connection drops */
    snprintf(last, sizeof last, "%" PRIu64, c);
    sse_t *s = s_open(b, path, last);
    s_read(s, id, &v, 2, true);
    snprintf(last, sizeof last, "%s", sse_last_event_id(s));
    sse_close(s);
    s_wait_images(a, id, 4); /* two more are made meanwhile */

    /* on A, from the last id B gave */
    s = s_open(a, path, last);
    rec_t r;
    ck_assert_int_eq(s_next(s, &r), 1);
    ck_assert_str_eq(r.event, "snapshot");
    ck_assert_uint_eq(r.id, strtoull(last, NULL, 10));
    s_rec_free(&r);
    int before = (int)json_array_size(v.ids);
    s_read(s, id, &v, 2, false);
    ck_assert_int_ge((int)json_array_size(v.ids), before + (v.end ? 0 : 2));
    snprintf(last, sizeof last, "%s", sse_last_event_id(s));
    sse_close(s);

    /* B restarts; the rest from it */
    if (!v.end) {
        inst_restart(b);
        s = s_open(b, path, last);
        s_read(s, id, &v, 0, true);
        sse_close(s);
    }
    ck_assert(v.end);
    json_t *job = api_check_job(a->port, id);
    ck_assert_str_eq(api_check_str(job, "job_status"), "completed");
    ck_assert_int_eq(json_array_size(v.ids), 8);
    s_assert_all_images(v.ids, job); /* every image once, in order */
    json_decref(job);
    s_seen_free(&v);
    free(id);
    inst_cleanup();
}
END_TEST

/* Preview messages about job seen on Redis's preview channel within ms. */
static int s_redis_previews(redisContext *rc, const char *job, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    redisSetTimeout(rc, tv);
    int n = 0;
    void *reply;
    while (redisGetReply(rc, &reply) == REDIS_OK) {
        redisReply *r = reply;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3
            && r->element[2]->type == REDIS_REPLY_STRING
            && memmem(r->element[2]->str, r->element[2]->len, job, strlen(job)))
            n++;
        freeReplyObject(r);
    }
    rc->err = 0; /* the timeout */
    return n;
}

START_TEST(test_previews_only_when_asked)
{
    inst_database("ij_events");
    inst_t *a = inst_start("A", "1", NULL);
    redisContext *rc = redisConnect("127.0.0.1", atoi(getenv("IMAGEJOBS_TEST_REDIS_PORT")));
    ck_assert(rc && !rc->err);
    redisReply *sub = redisCommand(rc, "SUBSCRIBE imagejobs:previews");
    ck_assert_ptr_nonnull(sub);
    freeReplyObject(sub);

    /* nobody asks: none is made, on any instance */
    uint64_t c = s_clock(a);
    char *quiet = inst_create(a, 1, 256, 30, 2);
    char path[160], last[32];
    snprintf(last, sizeof last, "%" PRIu64, c);
    s_job_path(path, sizeof path, quiet, NULL);
    sse_t *s = s_open(a, path, last);
    seen_t v;
    s_seen_init(&v);
    s_read(s, quiet, &v, 0, true);
    sse_close(s);
    ck_assert_int_eq(v.previews, 0);
    ck_assert_int_eq(s_redis_previews(rc, quiet, 300), 0);
    s_seen_free(&v);

    /* one client asks: previews of the stated size */
    char *watched = inst_create(a, 1, 512, 40, 3);
    s_job_path(path, sizeof path, watched, "?previews=1");
    s = s_open(a, path, NULL);
    rec_t r;
    int previews = 0;
    for (;;) {
        ck_assert_int_eq(s_next(s, &r), 1);
        if (!strcmp(r.event, "end")) {
            s_rec_free(&r);
            break;
        }
        if (!strcmp(r.event, "preview")) {
            previews++;
            json_int_t w = api_check_int(r.data, "width"), h = api_check_int(r.data, "height");
            ck_assert(w >= 1 && w <= 128 && h >= 1 && h <= 128);
            const char *url = api_check_str(r.data, "data");
            static const char prefix[] = "data:image/png;base64,";
            ck_assert_msg(!strncmp(url, prefix, sizeof prefix - 1), "preview data %.40s", url);
            /* base64 back to bytes, then the PNG decoded */
            const char *b64 = url + sizeof prefix - 1;
            size_t n = strlen(b64), k = 0;
            uint8_t *png = malloc(n);
            uint32_t acc = 0;
            int bits = 0;
            for (size_t i = 0; i < n && b64[i] != '='; i++) {
                const char *abc =
                    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                const char *p = strchr(abc, b64[i]);
                ck_assert_ptr_nonnull(p);
                acc = acc << 6 | (uint32_t)(p - abc);
                if ((bits += 6) >= 8) {
                    bits -= 8;
                    png[k++] = (uint8_t)(acc >> bits);
                }
            }
            uint8_t *rgb = NULL;
            uint32_t pw, ph;
            char err[128];
            ck_assert_msg(gen_png_decode(png, k, &rgb, &pw, &ph, err, sizeof err) == 0, "%s", err);
            ck_assert_int_eq(pw, w);
            ck_assert_int_eq(ph, h);
            free(rgb);
            free(png);
        }
        s_rec_free(&r);
    }
    sse_close(s);
    ck_assert_int_gt(previews, 0);
    ck_assert_int_gt(s_redis_previews(rc, watched, 300), 0);
    redisFree(rc);
    free(quiet);
    free(watched);
    inst_cleanup();
}
END_TEST

START_TEST(test_a_reader_that_stops_is_cut_off_others_are_served)
{
    inst_database("ij_events");
    inst_t *a = inst_start("A", "2", NULL);
    inst_t *b = inst_start("B", "0", "--stream-buffer", "16384", NULL);
    char *id = inst_create(a, 2, 256, 20, 6);
    char path[160];
    s_job_path(path, sizeof path, id, "?previews=1");
    sse_opts_t o = {.rcvbuf = 2048, .timeout_ms = 20000};
    sse_t *stuck = sse_open_opts(b->port, path, &o);
    ck_assert_int_eq(sse_status(stuck), 200);
    s_job_path(path, sizeof path, id, NULL);
    sse_t *s = s_open(b, path, NULL);
    seen_t v;
    s_seen_init(&v);
    s_read(s, id, &v, 0, true);
    ck_assert(v.ended);
    sse_close(s);
    s_seen_free(&v);
    /* the one that never read was disconnected before its end */
    sse_event_t ev;
    bool end = false;
    int rc;
    while ((rc = sse_next(stuck, &ev, EVENT_WAIT_MS)) == 1)
        end = end || !strcmp(ev.event, "end");
    ck_assert_msg(rc == -1 && errno != ETIMEDOUT, "the stalled stream was not cut off (%d, %s)", rc,
                  strerror(errno));
    ck_assert_msg(!end, "the stalled stream got its end: it was never cut off");
    sse_close(stuck);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_a_thousand_streams_on_one_job_all_get_the_end)
{
    enum { N = 1000 };
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < N + 256) {
        rl.rlim_cur = rl.rlim_max < N + 512 ? rl.rlim_max : N + 512;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    ck_assert_msg(rl.rlim_cur >= N + 256, "need %d open files, may have %llu", N + 256,
                  (unsigned long long)rl.rlim_cur);
    inst_database("ij_events");
    inst_t *a = inst_start("A", "2", NULL);
    inst_t *b = inst_start("B", "0", NULL);
    uint64_t c = s_clock(b);
    char *id = inst_create(a, 2, 128, 16, 3);
    char path[128], last[32];
    s_job_path(path, sizeof path, id, NULL);
    snprintf(last, sizeof last, "%" PRIu64, c);
    static sse_t *streams[N];
    for (int i = 0; i < N; i++)
        streams[i] = s_open(b, path, last);
    json_t *job = api_check_wait_final(a->port, id, 120, 50);
    for (int i = 0; i < N; i++) {
        seen_t v;
        s_seen_init(&v);
        s_read(streams[i], id, &v, 0, true);
        ck_assert_msg(v.ended, "stream %d did not end", i);
        s_assert_all_images(v.ids, job);
        s_seen_free(&v);
        sse_close(streams[i]);
    }
    json_decref(job);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_limits_and_bad_requests)
{
    inst_database("ij_events");
    inst_t *b = inst_start("B", "0", "--max-streams", "2", NULL);
    char *id = inst_create(b, 1, 64, 2, 1); /* pending: B runs nothing */
    char path[128];
    s_job_path(path, sizeof path, id, NULL);
    sse_t *one = s_open(b, path, NULL), *two = s_open(b, "/api/events", NULL);
    sse_t *three = sse_open(b->port, path, NULL, NULL, 20000);
    ck_assert_int_eq(sse_status(three), 503);
    ck_assert_ptr_nonnull(strstr(sse_body(three), "\"error\""));
    sse_close(three);
    sse_close(one); /* frees its place at once */
    for (int i = 0; i < 500; i++) {
        three = sse_open(b->port, path, NULL, NULL, 20000);
        if (sse_status(three) == 200)
            break;
        sse_close(three);
        three = NULL;
        usleep(10000);
    }
    ck_assert_msg(three != NULL, "a closed stream's place was never freed");
    sse_close(three);
    sse_close(two);

    static const struct {
        const char *path, *last;
        int status;
    } bad[] = {
        {"/api/jobs/not-a-uuid/events", NULL, 400},
        {"/api/jobs/2b0d6a76-3a0e-4d36-9a51-5f3c1e8a0c11/events", NULL, 404},
        {"/api/events?status=running", NULL, 400},
        {"/api/events", "12x", 400},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sse_t *s = sse_open(b->port, bad[i].path, bad[i].last, NULL, 20000);
        ck_assert_msg(sse_status(s) == bad[i].status, "%s: %d, not %d", bad[i].path, sse_status(s),
                      bad[i].status);
        ck_assert_ptr_nonnull(strstr(sse_body(s), "\"error\""));
        sse_close(s);
    }
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_every_jobs_stream_and_its_status_filter)
{
    inst_database("ij_events");
    inst_t *a = inst_start("A", "2", NULL);
    sse_t *all = s_open(a, "/api/events", NULL);
    sse_t *ended = s_open(a, "/api/events?status=completed,user_cancelled", NULL);
    rec_t r;
    ck_assert_int_eq(s_next(all, &r), 1);
    ck_assert_str_eq(r.event, "hello");
    s_rec_free(&r);
    ck_assert_int_eq(s_next(ended, &r), 1);
    ck_assert_str_eq(r.event, "hello");
    s_rec_free(&r);
    char *id = inst_create(a, 2, 64, 4, 2);
    /* everything, from created to end; the ephemeral progress is not
     * ordered with the durable events (docs/events.md): it may come first */
    do {
        ck_assert_int_eq(s_next(all, &r), 1);
        if (!strcmp(r.event, "progress"))
            s_rec_free(&r);
        else
            break;
    } while (true);
    ck_assert_str_eq(r.event, "created");
    ck_assert_str_eq(api_check_str(r.data, "job_id"), id);
    s_rec_free(&r);
    int images = 0;
    for (;;) {
        ck_assert_int_eq(s_next(all, &r), 1);
        ck_assert_msg(strcmp(r.event, "preview"), "a preview on every job's stream");
        images += !strcmp(r.event, "image");
        bool end = !strcmp(r.event, "end");
        s_rec_free(&r);
        if (end)
            break;
    }
    ck_assert_int_eq(images, 4);
    /* only what happened while the job was completed: the last stop, the end */
    int n = 0;
    for (;;) {
        ck_assert_int_eq(s_next(ended, &r), 1);
        ck_assert_msg(!strcmp(r.event, "stopped") || !strcmp(r.event, "end"),
                      "%s on a stream of ended jobs", r.event);
        n++;
        bool end = !strcmp(r.event, "end");
        s_rec_free(&r);
        if (end)
            break;
    }
    ck_assert_int_ge(n, 2);
    sse_close(all);
    sse_close(ended);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_a_real_eventsource_follows_a_job)
{
    if (!js_available()) {
        /* cmd/imagejobs-local test installs it; a bare `make check` may not */
        fprintf(stderr, "SKIP: no IMAGEJOBS_JS_DIR with the eventsource package\n");
        return;
    }
    inst_database("ij_events");
    inst_t *a = inst_start("A", "2", NULL);
    inst_t *b = inst_start("B", "0", NULL);
    uint64_t c = s_clock(b);
    char *id = inst_create(a, 2, 64, 6, 2);
    char url[256], last[32];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/jobs/%s/events", b->port, id);
    snprintf(last, sizeof last, "%" PRIu64, c);
    char *out = NULL;
    int rc = js_sse_watch(url, last, "end", EVENT_WAIT_MS, &out);
    ck_assert_msg(rc == 0, "sse-watch.mjs exited %d: %s", rc, out ? out : "");
    /* one JSON line per event: the snapshot first, the end last */
    json_t *ids = json_array();
    char *save = NULL, *first = NULL, *lastline = NULL;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *e = json_loads(line, 0, NULL);
        ck_assert_msg(e != NULL, "not JSON: %s", line);
        const char *type = api_check_str(e, "type");
        if (!first)
            first = strdup(type);
        free(lastline);
        lastline = strdup(type);
        if (!strcmp(type, "image"))
            json_array_append(ids, json_object_get(json_object_get(e, "data"), "attach_id"));
        json_decref(e);
    }
    ck_assert_str_eq(first, "snapshot");
    ck_assert_str_eq(lastline, "end");
    json_t *job = api_check_wait_final(a->port, id, 60, 50);
    s_assert_all_images(ids, job);
    json_decref(job);
    json_decref(ids);
    free(first);
    free(lastline);
    free(out);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_another_deployment_on_the_same_redis_is_not_ours)
{
    inst_database("ij_events");
    inst_other_database();
    inst_t *a = inst_start("A", "1", NULL);
    /* X: another deployment (its own database) on the same Redis, whose
     * event numbers run over the same range as A's */
    ck_assert_int_lt(inst_n, INST_MAX);
    inst_t *x = &inst_all[inst_n++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "X-%d", (int)getpid());
    snprintf(x->generators, sizeof x->generators, "1");
    x->conninfo = inst_other_conninfo;
    x->port = api_free_port();
    inst_launch(x);
    uint64_t c = s_clock(a);
    char *mine = inst_create(a, 1, 64, 4, 6);
    char *theirs[3];
    for (int i = 0; i < 3; i++)
        theirs[i] = inst_create(x, 1, 64, 4, 4);
    char path[128], last[32];
    s_job_path(path, sizeof path, mine, NULL);
    snprintf(last, sizeof last, "%" PRIu64, c);
    sse_t *s = s_open(a, path, last);
    seen_t v;
    s_seen_init(&v);
    s_read(s, mine, &v, 0, true);
    sse_close(s);
    json_t *job = api_check_job(a->port, mine);
    s_assert_all_images(v.ids, job); /* exactly ours: none of theirs, none lost */
    json_decref(job);
    s_seen_free(&v);
    for (int i = 0; i < 3; i++)
        json_decref(api_check_wait_final(x->port, theirs[i], 60, 50)), free(theirs[i]);
    free(mine);
    inst_cleanup();
}
END_TEST

START_TEST(test_a_silent_stream_gets_keep_alives)
{
    inst_database("ij_events");
    inst_t *b = inst_start("B", "0", "--stream-keepalive", "1", NULL);
    char *id = inst_create(b, 1, 64, 2, 1); /* pending: B runs nothing, nothing happens */
    char path[128];
    s_job_path(path, sizeof path, id, NULL);
    sse_t *s = s_open(b, path, NULL);
    rec_t r;
    ck_assert_int_eq(s_next(s, &r), 1);
    ck_assert_str_eq(r.event, "snapshot");
    s_rec_free(&r);
    sse_event_t ev;
    /* no event comes, but comments do, and the stream stays open */
    for (int i = 0; i < 600 && sse_comments(s) < 2; i++) {
        ck_assert_int_eq(sse_next(s, &ev, 100), -1);
        ck_assert_msg(errno == ETIMEDOUT, "the stream broke: %s", strerror(errno));
    }
    ck_assert_int_ge(sse_comments(s), 2);
    ck_assert_int_eq(sse_retry_ms(s), 1000);
    sse_close(s);
    free(id);
    inst_cleanup();
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("events");
    TCase *tc = tcase_create("streams");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_stream_on_b_of_a_job_running_on_a);
    tcase_add_test(tc, test_cancel_through_a_while_streaming_from_b);
    tcase_add_test(tc, test_resume_on_another_instance_and_after_a_restart);
    tcase_add_test(tc, test_previews_only_when_asked);
    tcase_add_test(tc, test_a_reader_that_stops_is_cut_off_others_are_served);
    tcase_add_test(tc, test_a_thousand_streams_on_one_job_all_get_the_end);
    tcase_add_test(tc, test_limits_and_bad_requests);
    tcase_add_test(tc, test_every_jobs_stream_and_its_status_filter);
    tcase_add_test(tc, test_a_real_eventsource_follows_a_job);
    tcase_add_test(tc, test_another_deployment_on_the_same_redis_is_not_ours);
    tcase_add_test(tc, test_a_silent_stream_gets_keep_alives);
    suite_add_tcase(s, tc);
    return s;
}

static int s_before(void)
{
    static const char *const need[] = {"IMAGEJOBS_TEST_REDIS", "IMAGEJOBS_TEST_REDIS_PORT",
                                       "IMAGEJOBS_TEST_DATABASE", "IMAGEJOBS_BIN", NULL};
    return fixture_need_env("the event stream tests", need);
}

const test_program_t test_program = {.suite = s_suite, .before = s_before};
