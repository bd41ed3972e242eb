/*
 * check_http.c - the HTTP actor alone, at the message level.
 *
 * Each test starts the actor on a free port and talks to it with a real
 * TCP client (plain blocking sockets with timeouts) from the test thread.
 * The test thread also owns the mailboxes "store" and "redis", which answer
 * the actor's requests with canned replies, and "bus", subscribed to the
 * topic "cancel", which sees what the actor publishes. The end-to-end tests
 * with the real store and redis actors live elsewhere.
 */
#include "config.h"

#include "actors/http.h"
#include "runtime/actor.h"
#include "runtime/log.h"
#include "runtime/mailbox.h"
#include "runtime/runtime.h"
#include "runtime/uuid.h"

#include "tests/runner.h"
#include <arpa/inet.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 15000 /* generous: sanitizer builds on 2 busy cores */
#define JOB "550e8400-e29b-41d4-a716-446655440000"
#define ORIGIN "https://app.example"
#define INSTANCE "test-instance"

static runtime_t *s_rt;
static mailbox_t *s_store, *s_redis, *s_bus;
static actor_t *s_http;
static int s_port;

static int64_t s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double s_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* (Re)starts the actor with these timeouts. */
static void s_http_start(double request_s, double stall_s, double keepalive_s)
{
    http_destroy(&s_http);
    http_config_t cfg = {
        .listen = "127.0.0.1:0",
        .cors_origin = ORIGIN,
        .instance = INSTANCE,
        .request_timeout_s = request_s,
        .stall_timeout_s = stall_s,
        .keepalive_timeout_s = keepalive_s,
    };
    char err[256] = "";
    s_http = http_start(s_rt, &cfg, err, sizeof err);
    ck_assert_msg(s_http != NULL, "http failed to start: %s", err);
    s_port = http_port(s_http);
    ck_assert_int_gt(s_port, 0);
}

static void s_setup(void)
{
    log_set_level(LOG_ERROR);
    s_rt = runtime_new();
    ck_assert_ptr_nonnull(s_rt);
    s_store = mailbox_new(s_rt, "store");
    s_redis = mailbox_new(s_rt, "redis");
    s_bus = mailbox_new(s_rt, "bus");
    ck_assert(s_store && s_redis && s_bus);
    ck_assert_int_eq(mailbox_subscribe(s_bus, "cancel"), 0);
    s_http_start(10., 10., 60.);
}

static void s_teardown(void)
{
    http_destroy(&s_http);
    mailbox_destroy(&s_bus);
    mailbox_destroy(&s_redis);
    mailbox_destroy(&s_store);
    runtime_destroy(&s_rt);
}

/* ------------------------------------------------------------ the client */

typedef struct {
    int fd;
    char *buf; /* received, not yet taken */
    size_t len, cap;
} client_t;

typedef struct {
    int status;
    char *head; /* status line and headers */
    char *body;
    size_t body_len;
    json_t *json; /* the body, when it parses as JSON */
} resp_t;

static void s_timeouts(int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static client_t *s_connect(void)
{
    client_t *c = calloc(1, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(c->fd, 0);
    s_timeouts(c->fd, WAIT_MS);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect: %s",
                  strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return c;
}

static void s_close(client_t **cp)
{
    client_t *c = *cp;
    if (!c)
        return;
    close(c->fd);
    free(c->buf);
    free(c);
    *cp = NULL;
}

static void s_send(client_t *c, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        ck_assert_msg(n > 0, "send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

static void s_sends(client_t *c, const char *s)
{
    s_send(c, s, strlen(s));
}

/* Receives more; returns what recv returned. */
static ssize_t s_fill(client_t *c)
{
    if (c->cap - c->len < 4096) {
        c->cap = c->cap ? c->cap * 2 : 8192;
        c->buf = realloc(c->buf, c->cap);
    }
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n > 0)
        c->len += (size_t)n;
    return n;
}

/* The value of header name (static buffer), or NULL. */
static const char *s_header(const resp_t *r, const char *name)
{
    static char value[1024];
    size_t nl = strlen(name);
    for (const char *line = strstr(r->head, "\r\n"); line && line[2];
         line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            const char *v = h + nl + 1;
            v += strspn(v, " ");
            size_t vl = strcspn(v, "\r");
            if (vl >= sizeof value)
                vl = sizeof value - 1;
            memcpy(value, v, vl);
            value[vl] = '\0';
            return value;
        }
    }
    return NULL;
}

/* Reads one response (skipping interim 1xx ones). 0, or -1 when the
 * connection ended or timed out first. */
static int s_read(client_t *c, resp_t *r)
{
    memset(r, 0, sizeof *r);
    for (;;) {
        char *end = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (!end) {
            if (s_fill(c) <= 0)
                return -1;
            continue;
        }
        size_t head_len = (size_t)(end - c->buf) + 4;
        r->head = strndup(c->buf, head_len);
        ck_assert_msg(strncmp(r->head, "HTTP/1.1 ", 9) == 0, "bad status line: %s", r->head);
        r->status = atoi(r->head + 9);
        if (r->status >= 100 && r->status < 200) {
            memmove(c->buf, c->buf + head_len, c->len - head_len);
            c->len -= head_len;
            free(r->head);
            r->head = NULL;
            continue;
        }
        const char *cl = s_header(r, "Content-Length");
        size_t body_len = cl ? strtoul(cl, NULL, 10) : 0;
        while (c->len < head_len + body_len) {
            if (s_fill(c) <= 0) {
                free(r->head);
                r->head = NULL;
                return -1;
            }
        }
        r->body = malloc(body_len + 1);
        memcpy(r->body, c->buf + head_len, body_len);
        r->body[body_len] = '\0';
        r->body_len = body_len;
        memmove(c->buf, c->buf + head_len + body_len, c->len - head_len - body_len);
        c->len -= head_len + body_len;
        const char *ct = s_header(r, "Content-Type");
        if (body_len && ct && strncmp(ct, "application/json", 16) == 0)
            r->json = json_loadb(r->body, body_len, 0, NULL);
        return 0;
    }
}

static void s_read_ok(client_t *c, resp_t *r)
{
    ck_assert_msg(s_read(c, r) == 0, "no response");
}

static void s_resp_free(resp_t *r)
{
    free(r->head);
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

/* True when the server closes the connection within ms (whatever it sends
 * first is kept in the buffer). */
static bool s_closed_within(client_t *c, int ms)
{
    s_timeouts(c->fd, ms);
    for (;;) {
        ssize_t n = s_fill(c);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n < 0)
            return false;
    }
}

/* A request with an optional body (then with its Content-Length). */
static char *s_request(const char *method, const char *path, const char *ctype, const char *body)
{
    char *out;
    char ct[256] = "", cl[64] = "";
    if (ctype)
        snprintf(ct, sizeof ct, "Content-Type: %s\r\n", ctype);
    if (body)
        snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", strlen(body));
    ck_assert_int_gt(asprintf(&out, "%s %s HTTP/1.1\r\nHost: localhost\r\n%s%s\r\n%s", method, path,
                              ct, cl, body ? body : ""),
                     0);
    return out;
}

/* One request on a fresh connection that needs no store reply. */
static void s_simple(const char *method, const char *path, const char *ctype, const char *body,
                     resp_t *r)
{
    client_t *c = s_connect();
    char *req = s_request(method, path, ctype, body);
    s_sends(c, req);
    free(req);
    s_read_ok(c, r);
    s_close(&c);
}

/* ------------------------------------------------------------ messages */

static msg_t *s_expect_msg(mailbox_t *mb, msg_type_t type)
{
    msg_t *m = mailbox_recv(mb, WAIT_MS);
    ck_assert_msg(m != NULL, "%s: nothing within %d ms", mailbox_name(mb), WAIT_MS);
    ck_assert_msg(m->type == type, "%s: got %s, wanted %s", mailbox_name(mb),
                  msg_type_name(m->type), msg_type_name(type));
    return m;
}

static void s_expect_none(mailbox_t *mb, int ms)
{
    msg_t *m = mailbox_recv(mb, ms);
    ck_assert_msg(m == NULL, "%s: unexpected %s", mailbox_name(mb),
                  m ? msg_type_name(m->type) : "");
}

/* Answers req with reply (consumed), as actor_reply() would. */
static void s_answer(mailbox_t *mb, const msg_t *req, msg_t *reply)
{
    reply->corr = req->corr;
    reply->flags = MSG_FLAG_REPLY;
    ck_assert_int_eq(mailbox_send(mb, req->sender, reply), 0);
    msg_destroy(&reply);
}

static msg_t *s_error_msg(int64_t code, const char *reason)
{
    msg_t *m = msg_new(MSG_ERROR);
    m->error.code = code;
    msg_set_str(&m->error.reason, reason);
    return m;
}

static msg_t *s_cancel_result(const char *prior, uint64_t done, uint64_t total)
{
    msg_t *m = msg_new(MSG_JOB_CANCEL_RESULT);
    msg_set_str(&m->job_cancel_result.job_id, JOB);
    msg_job_cancel_result_t *b = &m->job_cancel_result;
    ck_assert_int_eq(job_status_parse(prior, strlen(prior), &b->prior_status), 0);
    b->status = b->prior_status == JOB_STATUS_PENDING ? JOB_STATUS_USER_CANCELLED : b->prior_status;
    m->job_cancel_result.completed_images = done;
    m->job_cancel_result.total_images = total;
    m->job_cancel_result.requested_at_us = s_now_us();
    return m;
}

/* ------------------------------------------------------------ JSON checks */

static void s_json_size(const resp_t *r, size_t n)
{
    ck_assert_msg(r->json != NULL, "body is not JSON: %s", r->body ? r->body : "(none)");
    ck_assert_msg(json_object_size(r->json) == n, "%zu fields, wanted %zu: %s",
                  json_object_size(r->json), n, r->body);
}

static void s_json_str(const resp_t *r, const char *key, const char *want)
{
    json_t *v = json_object_get(r->json, key);
    ck_assert_msg(json_is_string(v), "%s is not a string in %s", key, r->body);
    ck_assert_str_eq(json_string_value(v), want);
}

static void s_json_int(const resp_t *r, const char *key, long long want)
{
    json_t *v = json_object_get(r->json, key);
    ck_assert_msg(json_is_integer(v), "%s is not an integer in %s", key, r->body);
    ck_assert_int_eq(json_integer_value(v), want);
}

static void s_json_bool(const resp_t *r, const char *key, bool want)
{
    json_t *v = json_object_get(r->json, key);
    ck_assert_msg(json_is_boolean(v), "%s is not a boolean in %s", key, r->body);
    ck_assert_int_eq(json_is_true(v), want);
}

/* {"error": want} exactly, with the status. */
static void s_expect_error(const resp_t *r, int status, const char *want)
{
    ck_assert_msg(r->status == status, "status %d, wanted %d: %s", r->status, status, r->body);
    s_json_size(r, 1);
    s_json_str(r, "error", want);
}

/* {"error": "...want..."}, with the status. */
static void s_expect_error_like(const resp_t *r, int status, const char *want)
{
    ck_assert_msg(r->status == status, "status %d, wanted %d: %s", r->status, status, r->body);
    s_json_size(r, 1);
    const char *e = json_string_value(json_object_get(r->json, "error"));
    ck_assert_msg(e && strstr(e, want), "error '%s' does not mention '%s'", e ? e : "(none)", want);
}

static void s_expect_cors(const resp_t *r)
{
    const char *v = s_header(r, "Access-Control-Allow-Origin");
    ck_assert_msg(v && strcmp(v, ORIGIN) == 0, "no CORS origin in %s", r->head);
}

/* ------------------------------------------------------------ the cancel */

static const char s_curl_cancel[] = "POST /api/jobs/" JOB "/cancel HTTP/1.1\r\n"
                                    "Host: localhost:8080\r\n"
                                    "User-Agent: curl/7.88.1\r\n"
                                    "Accept: */*\r\n\r\n";

static const char s_fetch_cancel[] = "POST /api/jobs/" JOB "/cancel HTTP/1.1\r\n"
                                     "Host: localhost:8080\r\n"
                                     "Origin: " ORIGIN "\r\n"
                                     "Content-Type: application/json\r\n"
                                     "Content-Length: 0\r\n\r\n";

/* Sends raw on c, checks the store's JOB_CANCEL_REQUEST, answers it with
 * result (consumed) and reads the response. */
static void s_cancel_roundtrip(client_t *c, const char *raw, const char *mode, msg_t *result,
                               resp_t *r)
{
    int64_t t0 = s_now_us();
    s_sends(c, raw);
    msg_t *req = s_expect_msg(s_store, MSG_JOB_CANCEL_REQUEST);
    ck_assert_str_eq(req->job_cancel_request.job_id, JOB);
    ck_assert_str_eq(cancel_mode_name(req->job_cancel_request.mode), mode);
    ck_assert_int_ge(req->job_cancel_request.received_at_us, t0);
    ck_assert_int_le(req->job_cancel_request.received_at_us, s_now_us());
    s_answer(s_store, req, result);
    msg_destroy(&req);
    s_read_ok(c, r);
}

/* The cancel went out on the bus (the redis actor bridges it to the other
 * instances; the flag follows the store's JOB_CANCEL_RECORDED): the HTTP
 * actor itself never talks to the redis actor. */
static void s_expect_broadcast(const char *mode)
{
    msg_t *ev = s_expect_msg(s_bus, MSG_JOB_CANCEL);
    ck_assert(ev->flags & MSG_FLAG_EVENT);
    ck_assert_str_eq(ev->job_cancel.job_id, JOB);
    ck_assert_str_eq(cancel_mode_name(ev->job_cancel.mode), mode);
    ck_assert_str_eq(ev->job_cancel.origin, INSTANCE);
    ck_assert_int_gt(ev->job_cancel.requested_at_us, s_now_us() - 60 * 1000000LL);
    ck_assert_int_le(ev->job_cancel.requested_at_us, s_now_us());
    msg_destroy(&ev);
    s_expect_none(s_redis, 50);
}

static void s_expect_no_broadcast(void)
{
    s_expect_none(s_bus, 200);
    s_expect_none(s_redis, 50);
}

/* A well-formed cancel goes out as an event before the store answers,
 * whatever it answers (generators stop first; their stops record the
 * cancel if the store's own write comes later). */
static void s_expect_early_broadcast_only(void)
{
    s_expect_broadcast("immediate");
    s_expect_no_broadcast();
}

/* The success document of the seed, field by field. */
static void s_expect_cancel_success(const resp_t *r, const char *message, const char *status,
                                    long long done, long long total)
{
    ck_assert_int_eq(r->status, 200);
    ck_assert_str_eq(s_header(r, "Content-Type"), "application/json");
    s_expect_cors(r);
    s_json_size(r, 6);
    s_json_bool(r, "success", true);
    s_json_str(r, "message", message);
    s_json_str(r, "job_id", JOB);
    s_json_str(r, "current_status", status);
    s_json_int(r, "completed_images", done);
    s_json_int(r, "total_images", total);
}

START_TEST(test_cancel_running_immediate_with_curl_shape)
{
    client_t *c = s_connect();
    resp_t r;
    s_cancel_roundtrip(c, s_curl_cancel, "immediate", s_cancel_result("processing", 3, 10), &r);
    s_expect_cancel_success(&r, "Cancel request sent. Job will stop at the next step.",
                            "processing", 3, 10);
    s_expect_broadcast("immediate");
    s_resp_free(&r);
    s_close(&c);
}
END_TEST

/* The answer follows the mode that stands (the store's reply): a weaker
 * after_current_image after an immediate one changes nothing and says so;
 * an immediate one after after_current_image promises the next step. */
START_TEST(test_cancel_answer_follows_the_mode_that_stands)
{
    client_t *c = s_connect();
    resp_t r;
    char *raw = s_request("POST", "/api/jobs/" JOB "/cancel", "application/json",
                          "{\"mode\": \"after_current_image\"}");
    msg_t *res = s_cancel_result("processing", 3, 10);
    res->job_cancel_result.mode = CANCEL_MODE_IMMEDIATE;
    s_cancel_roundtrip(c, raw, "after_current_image", res, &r);
    free(raw);
    s_expect_cancel_success(
        &r, "An immediate cancel was already requested. Job will stop at the next step.",
        "processing", 3, 10);
    s_expect_broadcast("after_current_image");
    s_resp_free(&r);
    res = s_cancel_result("processing", 3, 10);
    res->job_cancel_result.mode = CANCEL_MODE_IMMEDIATE;
    s_cancel_roundtrip(c, s_curl_cancel, "immediate", res, &r);
    s_expect_cancel_success(&r, "Cancel request sent. Job will stop at the next step.",
                            "processing", 3, 10);
    s_expect_broadcast("immediate");
    s_resp_free(&r);
    s_close(&c);
}
END_TEST

START_TEST(test_cancel_after_current_image_is_the_seed_document)
{
    client_t *c = s_connect();
    resp_t r;
    char *raw = s_request("POST", "/api/jobs/" JOB "/cancel", "application/json",
                          "{\"mode\": \"after_current_image\"}");
    s_cancel_roundtrip(c, raw, "after_current_image", s_cancel_result("processing", 3, 10), &r);
    free(raw);
    s_expect_cancel_success(&r, "Cancel request sent. Job will stop after current image.",
                            "processing", 3, 10);
    /* the seed's example byte for byte, in order */
    ck_assert_str_eq(r.body, "{\"success\":true,\"message\":\"Cancel request sent. Job will stop "
                             "after current image.\",\"job_id\":\"" JOB "\","
                             "\"current_status\":\"processing\",\"completed_images\":3,"
                             "\"total_images\":10}");
    s_expect_broadcast("after_current_image");
    s_resp_free(&r);
    s_close(&c);
}
END_TEST

START_TEST(test_cancel_with_fetch_shape_empty_json_body)
{
    client_t *c = s_connect();
    resp_t r;
    s_cancel_roundtrip(c, s_fetch_cancel, "immediate", s_cancel_result("processing", 0, 4), &r);
    s_expect_cancel_success(&r, "Cancel request sent. Job will stop at the next step.",
                            "processing", 0, 4);
    s_expect_broadcast("immediate");
    s_resp_free(&r);
    s_close(&c);
}
END_TEST

START_TEST(test_cancel_pending_job)
{
    client_t *c = s_connect();
    resp_t r;
    s_cancel_roundtrip(c, s_curl_cancel, "immediate", s_cancel_result("pending", 0, 8), &r);
    s_expect_cancel_success(&r, "Job cancelled before it started.", "pending", 0, 8);
    s_expect_broadcast("immediate");
    s_resp_free(&r);
    s_close(&c);
}
END_TEST

START_TEST(test_cancel_repeated_while_stopping_is_success_again)
{
    client_t *c = s_connect();
    resp_t r;
    s_cancel_roundtrip(c, s_curl_cancel, "immediate", s_cancel_result("processing", 2, 6), &r);
    s_expect_cancel_success(&r, "Cancel request sent. Job will stop at the next step.",
                            "processing", 2, 6);
    s_expect_broadcast("immediate");
    s_resp_free(&r);
    /* again, on the same connection, while the job is still stopping */
    s_cancel_roundtrip(c, s_curl_cancel, "immediate", s_cancel_result("processing", 2, 6), &r);
    s_expect_cancel_success(&r, "Cancel request sent. Job will stop at the next step.",
                            "processing", 2, 6);
    s_expect_broadcast("immediate");
    s_resp_free(&r);
    s_close(&c);
}
END_TEST

START_TEST(test_cancel_of_ended_jobs_is_not_success)
{
    static const struct {
        const char *status, *message;
    } cases[] = {
        {"completed", "Job already completed"},
        {"failed", "Job already failed"},
        {"user_cancelled", "Job already cancelled"},
    };
    client_t *c = s_connect();
    for (size_t i = 0; i < 3; i++) {
        resp_t r;
        s_cancel_roundtrip(c, s_curl_cancel, "immediate", s_cancel_result(cases[i].status, 10, 10),
                           &r);
        ck_assert_int_eq(r.status, 200);
        s_expect_cors(&r);
        s_json_size(&r, 5);
        s_json_bool(&r, "success", false);
        s_json_str(&r, "message", cases[i].message);
        s_json_str(&r, "job_id", JOB);
        s_json_str(&r, "job_status", cases[i].status);
        s_json_int(&r, "completed_images", 10);
        s_expect_early_broadcast_only();
        s_resp_free(&r);
    }
    s_close(&c);
}
END_TEST

START_TEST(test_cancel_unknown_job_is_404)
{
    client_t *c = s_connect();
    resp_t r;
    s_cancel_roundtrip(c, s_curl_cancel, "immediate", s_error_msg(-ENOENT, "no such job"), &r);
    s_expect_error(&r, 404, "Job not found");
    s_expect_cors(&r);
    s_expect_early_broadcast_only();
    s_resp_free(&r);
    s_close(&c);
}
END_TEST

START_TEST(test_cancel_missing_or_bad_id_is_400)
{
    resp_t r;
    s_simple("POST", "/api/jobs//cancel", NULL, NULL, &r);
    s_expect_error(&r, 400, "jobId is required");
    s_expect_cors(&r);
    s_resp_free(&r);
    static const char *const bad[] = {
        "/api/jobs/not-a-uuid/cancel",
        "/api/jobs/550e8400-e29b-41d4-a716-44665544000g/cancel",
        "/api/jobs/550e8400e29b41d4a716446655440000/cancel",
        "/api/jobs/550e8400-e29b-41d4-a716-4466554400001/cancel",
        "/api/jobs/%35%35%30e8400-e29b-41d4-a716-446655440000/cancel",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s_simple("POST", bad[i], NULL, NULL, &r);
        s_expect_error(&r, 400, "jobId must be a UUID");
        s_resp_free(&r);
    }
    s_expect_none(s_store, 100);
}
END_TEST

START_TEST(test_cancel_id_is_lowercased)
{
    client_t *c = s_connect();
    s_sends(
        c,
        "POST /api/jobs/550E8400-E29B-41D4-A716-446655440000/cancel HTTP/1.1\r\nHost: x\r\n\r\n");
    msg_t *req = s_expect_msg(s_store, MSG_JOB_CANCEL_REQUEST);
    ck_assert_str_eq(req->job_cancel_request.job_id, JOB);
    s_answer(s_store, req, s_cancel_result("processing", 1, 2));
    msg_destroy(&req);
    resp_t r;
    s_read_ok(c, &r);
    s_json_str(&r, "job_id", JOB);
    s_expect_broadcast("immediate");
    s_resp_free(&r);
    s_close(&c);
}
END_TEST

START_TEST(test_cancel_body_variants)
{
    static const struct {
        const char *ctype, *body, *mode;
    } good[] = {
        {"application/json", "{}", "immediate"},
        {"application/json", "{\"mode\":\"immediate\"}", "immediate"},
        {"application/json; charset=utf-8", " {\"mode\" : \"after_current_image\"} ",
         "after_current_image"},
        {NULL, "{\"mode\":\"after_current_image\"}", "after_current_image"},
        {"application/json", "  \r\n", "immediate"},
        {NULL, "", "immediate"},
    };
    client_t *c = s_connect();
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        char *raw = s_request("POST", "/api/jobs/" JOB "/cancel", good[i].ctype, good[i].body);
        resp_t r;
        s_cancel_roundtrip(c, raw, good[i].mode, s_cancel_result("processing", 1, 5), &r);
        ck_assert_int_eq(r.status, 200);
        s_json_bool(&r, "success", true);
        s_expect_broadcast(good[i].mode);
        s_resp_free(&r);
        free(raw);
    }
    static const struct {
        const char *body, *error;
    } bad[] = {
        {"{\"mode\":\"later\"}", "mode must be \"immediate\" or \"after_current_image\""},
        {"{\"mode\":1}", "mode must be \"immediate\" or \"after_current_image\""},
        {"{\"mode\":null}", "mode must be \"immediate\" or \"after_current_image\""},
        {"{\"force\":true}", "unknown field \"force\""},
        {"{\"mode\":\"immediate\",\"mode\":\"immediate\"}", "malformed JSON"},
        {"[]", "request body must be a JSON object"},
        {"\"immediate\"", "request body must be a JSON object"},
        {"{bad json", "malformed JSON"},
        {"mode=immediate", "malformed JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *raw = s_request("POST", "/api/jobs/" JOB "/cancel", "application/json", bad[i].body);
        s_sends(c, raw);
        free(raw);
        resp_t r;
        s_read_ok(c, &r);
        s_expect_error_like(&r, 400, bad[i].error);
        s_resp_free(&r);
    }
    s_expect_none(s_store, 100);
    s_expect_no_broadcast();
    s_close(&c);
}
END_TEST

START_TEST(test_cancel_broadcast_even_when_client_left)
{
    client_t *c = s_connect();
    s_sends(c, s_curl_cancel);
    msg_t *req = s_expect_msg(s_store, MSG_JOB_CANCEL_REQUEST);
    s_close(&c); /* gone before the store answers */
    usleep(50 * 1000);
    s_answer(s_store, req, s_cancel_result("processing", 1, 3));
    msg_destroy(&req);
    s_expect_broadcast("immediate");
    resp_t r;
    s_simple("GET", "/healthz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    s_resp_free(&r);
}
END_TEST

/* ------------------------------------------------------------ POST /api/jobs */

static json_t *s_expect_create(const char *body, const char *ctype, msg_t **reqp)
{
    client_t *c = s_connect();
    char *raw = s_request("POST", "/api/jobs", ctype, body);
    s_sends(c, raw);
    free(raw);
    msg_t *req = s_expect_msg(s_store, MSG_JOB_CREATE);
    ck_assert(uuid_valid(req->job_create.job_id));
    json_t *combos = json_loads(req->job_create.combinations, 0, NULL);
    ck_assert_msg(json_is_array(combos), "combinations: %s", req->job_create.combinations);
    uint64_t total = json_array_size(combos) * req->job_create.images_per_combination;
    msg_t *reply = msg_new(MSG_JOB_CREATED);
    msg_set_str(&reply->job_created.job_id, req->job_create.job_id);
    reply->job_created.status = JOB_STATUS_PENDING;
    reply->job_created.total_images = total;
    s_answer(s_store, req, reply);
    resp_t r;
    s_read_ok(c, &r);
    ck_assert_int_eq(r.status, 201);
    s_expect_cors(&r);
    s_json_size(&r, 3);
    s_json_str(&r, "job_id", req->job_create.job_id);
    s_json_str(&r, "job_status", "pending");
    s_json_int(&r, "total_images", (long long)total);
    char loc[128];
    snprintf(loc, sizeof loc, "/api/jobs/%s", req->job_create.job_id);
    ck_assert_str_eq(s_header(&r, "Location"), loc);
    s_resp_free(&r);
    s_close(&c);
    *reqp = req;
    return combos;
}

START_TEST(test_create_job_defaults)
{
    msg_t *req;
    json_t *combos =
        s_expect_create("{\"prompt\": \"a cat\"}", "application/json; charset=utf-8", &req);
    ck_assert_str_eq(req->job_create.prompt, "a cat");
    ck_assert_uint_eq(req->job_create.images_per_combination, 1);
    ck_assert_uint_eq(req->job_create.width, 512);
    ck_assert_uint_eq(req->job_create.height, 512);
    ck_assert_uint_eq(req->job_create.steps, 30);
    ck_assert_uint_eq(json_array_size(combos), 1);
    json_t *e = json_array_get(combos, 0);
    ck_assert_uint_eq(json_object_size(e), 2);
    ck_assert(json_is_integer(json_object_get(e, "seed")));
    ck_assert_int_ge(json_integer_value(json_object_get(e, "seed")), 0);
    ck_assert_int_le(json_integer_value(json_object_get(e, "seed")), 4294967295LL);
    ck_assert_str_eq(json_string_value(json_object_get(e, "style")), "");
    json_decref(combos);
    msg_destroy(&req);
}
END_TEST

START_TEST(test_create_job_all_fields)
{
    msg_t *req;
    json_t *combos = s_expect_create(
        "{\"prompt\":\"a lighthouse \\u00e0 l'aube\",\"combinations\":[{\"seed\":7,\"style\":"
        "\"oil\"},{\"style\":\"ink\"},{\"seed\":4294967295},{}],\"images_per_combination\":2,"
        "\"width\":640,\"height\":384,\"steps\":12}",
        "application/json", &req);
    ck_assert_str_eq(req->job_create.prompt, "a lighthouse \xc3\xa0 l'aube");
    ck_assert_uint_eq(req->job_create.images_per_combination, 2);
    ck_assert_uint_eq(req->job_create.width, 640);
    ck_assert_uint_eq(req->job_create.height, 384);
    ck_assert_uint_eq(req->job_create.steps, 12);
    ck_assert_uint_eq(json_array_size(combos), 4);
    static const char *const styles[] = {"oil", "ink", "", ""};
    for (size_t i = 0; i < 4; i++) {
        json_t *e = json_array_get(combos, i);
        ck_assert_uint_eq(json_object_size(e), 2);
        ck_assert(json_is_integer(json_object_get(e, "seed")));
        ck_assert_str_eq(json_string_value(json_object_get(e, "style")), styles[i]);
    }
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(combos, 0), "seed")), 7);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(combos, 2), "seed")),
                     4294967295LL);
    json_decref(combos);
    msg_destroy(&req);
}
END_TEST

START_TEST(test_create_job_validation_names_the_field)
{
    char long_prompt[1100], big_combos[2000];
    snprintf(long_prompt, sizeof long_prompt, "{\"prompt\":\"%01001d\"}", 0);
    strcpy(big_combos, "{\"prompt\":\"x\",\"combinations\":[{}");
    for (int i = 1; i < 65; i++)
        strcat(big_combos, ",{}");
    strcat(big_combos, "]}");
    static const struct {
        const char *body, *error;
    } cases[] = {
        {"{}", "prompt is required"},
        {"{\"prompt\":5}", "prompt must be a string"},
        {"{\"prompt\":null}", "prompt must be a string"},
        {"{\"prompt\":\"\"}", "prompt must be 1 to 1000 bytes"},
        {NULL, "prompt must be 1 to 1000 bytes"}, /* long_prompt */
        {"{\"prompt\":\"x\",\"colour\":\"red\"}", "unknown field \"colour\""},
        {"{\"colour\":\"red\",\"prompt\":\"x\"}", "unknown field \"colour\""},
        {"{\"prompt\":\"x\",\"width\":100}", "width must be a multiple of 8"},
        {"{\"prompt\":\"x\",\"width\":4096}", "width must be from 64 to 2048"},
        {"{\"prompt\":\"x\",\"width\":56}", "width must be from 64 to 2048"},
        {"{\"prompt\":\"x\",\"height\":\"512\"}", "height must be an integer"},
        {"{\"prompt\":\"x\",\"height\":-8}", "height must be from 64 to 2048"},
        {"{\"prompt\":\"x\",\"steps\":0}", "steps must be from 1 to 200"},
        {"{\"prompt\":\"x\",\"steps\":201}", "steps must be from 1 to 200"},
        {"{\"prompt\":\"x\",\"steps\":1.5}", "steps must be an integer"},
        {"{\"prompt\":\"x\",\"steps\":true}", "steps must be an integer"},
        {"{\"prompt\":\"x\",\"images_per_combination\":0}",
         "images_per_combination must be from 1 to 100"},
        {"{\"prompt\":\"x\",\"images_per_combination\":101}",
         "images_per_combination must be from 1 to 100"},
        {"{\"prompt\":\"x\",\"combinations\":{}}", "combinations must be an array"},
        {"{\"prompt\":\"x\",\"combinations\":[]}", "combinations must have 1 to 64 elements"},
        {NULL, "combinations must have 1 to 64 elements"}, /* big_combos */
        {"{\"prompt\":\"x\",\"combinations\":[1]}", "combinations[0] must be an object"},
        {"{\"prompt\":\"x\",\"combinations\":[{\"seed\":-1}]}", "combinations[0].seed"},
        {"{\"prompt\":\"x\",\"combinations\":[{},{\"seed\":\"1\"}]}", "combinations[1].seed"},
        {"{\"prompt\":\"x\",\"combinations\":[{\"seed\":4294967296}]}", "combinations[0].seed"},
        {"{\"prompt\":\"x\",\"combinations\":[{\"style\":3}]}",
         "combinations[0].style must be a string"},
        {"{\"prompt\":\"x\",\"combinations\":[{\"colour\":3}]}",
         "unknown field \"combinations[0].colour\""},
        {"{\"prompt\":\"x\"", "malformed JSON"},
        {"{\"prompt\":\"x\",\"prompt\":\"y\"}", "malformed JSON"},
        {"{\"prompt\":\"\xff\"}", "malformed JSON"},
        {"{\"prompt\":\"a\\u0000b\"}", "malformed JSON"},
        {"{\"prompt\":\"x\",\"steps\":99999999999999999999999}", "malformed JSON"},
        {"[1,2]", "request body must be a JSON object"},
        {"", "request body must be a JSON object"},
    };
    client_t *c = s_connect();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *body = cases[i].body;
        if (!body)
            body = strstr(cases[i].error, "prompt") ? long_prompt : big_combos;
        char *raw = s_request("POST", "/api/jobs", "application/json", body);
        s_sends(c, raw);
        free(raw);
        resp_t r;
        s_read_ok(c, &r);
        s_expect_error_like(&r, 400, cases[i].error);
        s_expect_cors(&r);
        s_resp_free(&r);
    }
    s_close(&c);
    s_expect_none(s_store, 100); /* nothing reached the store */
}
END_TEST

START_TEST(test_create_job_needs_json_content_type)
{
    static const char *const types[] = {NULL, "text/plain", "application/x-www-form-urlencoded",
                                        "application/jsonx"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        resp_t r;
        s_simple("POST", "/api/jobs", types[i], "{\"prompt\":\"x\"}", &r);
        s_expect_error(&r, 415, "Content-Type must be application/json");
        s_expect_cors(&r);
        s_resp_free(&r);
    }
    s_expect_none(s_store, 100);
}
END_TEST

/* ------------------------------------------------------------ GET routes */

START_TEST(test_get_job_passes_the_document_through)
{
    static const char doc[] = "{\"job_id\":\"" JOB "\",\"job_status\":\"processing\","
                              "\"completed_images\":3,\"total_images\":10,"
                              "\"generated_attach_ids\":[],\"cancel_requested\":false}";
    client_t *c = s_connect();
    s_sends(
        c,
        "GET /api/jobs/550E8400-e29b-41d4-a716-446655440000?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    msg_t *req = s_expect_msg(s_store, MSG_JOB_GET);
    ck_assert_str_eq(req->job_get.job_id, JOB);
    msg_t *reply = msg_new(MSG_JOB_JSON);
    msg_set_str(&reply->job_json.json, doc);
    s_answer(s_store, req, reply);
    msg_destroy(&req);
    resp_t r;
    s_read_ok(c, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, doc);
    ck_assert_str_eq(s_header(&r, "Content-Type"), "application/json");
    s_expect_cors(&r);
    s_resp_free(&r);

    /* HEAD: the same headers, no body */
    s_sends(c, "HEAD /api/jobs/" JOB " HTTP/1.1\r\nHost: x\r\n\r\n");
    req = s_expect_msg(s_store, MSG_JOB_GET);
    reply = msg_new(MSG_JOB_JSON);
    msg_set_str(&reply->job_json.json, doc);
    s_answer(s_store, req, reply);
    msg_destroy(&req);
    s_timeouts(c->fd, 1000);
    char buf[4096];
    ssize_t n = 0, got;
    while ((got = recv(c->fd, buf + n, sizeof buf - 1 - (size_t)n, 0)) > 0)
        n += got; /* ends by the 1 s timeout: HEAD has no body to wait for */
    buf[n] = '\0';
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", buf);
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", strlen(doc));
    ck_assert_msg(strstr(buf, cl) != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "\r\n\r\n")[4] == '\0', "HEAD sent a body: %s", buf);
    s_close(&c);

    c = s_connect();
    s_sends(c, "GET /api/jobs/" JOB " HTTP/1.1\r\nHost: x\r\n\r\n");
    req = s_expect_msg(s_store, MSG_JOB_GET);
    s_answer(s_store, req, s_error_msg(-ENOENT, "no such job"));
    msg_destroy(&req);
    s_read_ok(c, &r);
    s_expect_error(&r, 404, "Job not found");
    s_resp_free(&r);
    s_close(&c);

    s_simple("GET", "/api/jobs/xyz", NULL, NULL, &r);
    s_expect_error(&r, 400, "jobId must be a UUID");
    s_resp_free(&r);
    s_simple("GET", "/api/jobs/", NULL, NULL, &r);
    s_expect_error(&r, 400, "jobId is required");
    s_resp_free(&r);
}
END_TEST

START_TEST(test_attachment_bytes)
{
    size_t size = 300 * 1024; /* larger than one socket write */
    uint8_t *png = malloc(size);
    for (size_t i = 0; i < size; i++)
        png[i] = (uint8_t)(i * 7919u >> 3);
    memcpy(png, "\x89PNG\r\n\x1a\n\0\0", 10);
    char id[UUID_STR_LEN];
    uuid_v4(id);
    char path[128];
    snprintf(path, sizeof path, "/api/attachments/%s", id);
    client_t *c = s_connect();
    char *raw = s_request("GET", path, NULL, NULL);
    s_sends(c, raw);
    free(raw);
    msg_t *req = s_expect_msg(s_store, MSG_ATTACHMENT_GET);
    ck_assert_str_eq(req->attachment_get.attach_id, id);
    msg_t *reply = msg_new(MSG_ATTACHMENT);
    msg_set_str(&reply->attachment.content_type, "image/png");
    msg_set_bin(&reply->attachment.bytes, png, size);
    s_answer(s_store, req, reply);
    msg_destroy(&req);
    resp_t r;
    s_read_ok(c, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(s_header(&r, "Content-Type"), "image/png");
    s_expect_cors(&r);
    ck_assert_uint_eq(r.body_len, size);
    ck_assert(memcmp(r.body, png, size) == 0);
    s_resp_free(&r);

    raw = s_request("GET", path, NULL, NULL);
    s_sends(c, raw);
    free(raw);
    req = s_expect_msg(s_store, MSG_ATTACHMENT_GET);
    s_answer(s_store, req, s_error_msg(-ENOENT, "no such attachment"));
    msg_destroy(&req);
    s_read_ok(c, &r);
    s_expect_error(&r, 404, "Attachment not found");
    s_resp_free(&r);
    s_close(&c);

    s_simple("GET", "/api/attachments/nope", NULL, NULL, &r);
    s_expect_error(&r, 400, "attachId must be a UUID");
    s_resp_free(&r);
    free(png);
}
END_TEST

/* Sends GET /readyz and answers the two health checks. */
static void s_readyz(bool db, bool redis, bool db_answers, resp_t *r)
{
    client_t *c = s_connect();
    s_sends(c, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    msg_t *a = s_expect_msg(s_store, MSG_HEALTH_CHECK);
    msg_t *b = s_expect_msg(s_redis, MSG_HEALTH_CHECK);
    if (db_answers) {
        msg_t *h = msg_new(MSG_HEALTH);
        h->health.ok = db;
        s_answer(s_store, a, h);
    }
    if (redis) {
        msg_t *h = msg_new(MSG_HEALTH);
        h->health.ok = true;
        s_answer(s_redis, b, h);
    } else {
        s_answer(s_redis, b, s_error_msg(-EAGAIN, "connection refused"));
    }
    msg_destroy(&a);
    msg_destroy(&b);
    s_read_ok(c, r);
    s_close(&c);
}

START_TEST(test_health_and_readiness)
{
    resp_t r;
    s_simple("GET", "/healthz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"status\":\"ok\"}");
    s_resp_free(&r);

    s_readyz(true, true, true, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"status\":\"ready\",\"redis\":true,\"database\":true}");
    s_resp_free(&r);

    s_readyz(true, false, true, &r);
    ck_assert_int_eq(r.status, 503);
    s_json_bool(&r, "redis", false);
    s_json_bool(&r, "database", true);
    s_json_str(&r, "error", "redis unavailable");
    s_resp_free(&r);

    s_readyz(false, true, true, &r);
    ck_assert_int_eq(r.status, 503);
    s_json_bool(&r, "redis", true);
    s_json_bool(&r, "database", false);
    s_resp_free(&r);

    /* a store that does not answer at all */
    s_http_start(0.3, 10., 60.);
    s_readyz(true, true, false, &r);
    ck_assert_int_eq(r.status, 503);
    s_json_bool(&r, "database", false);
    s_json_str(&r, "error", "database unavailable");
    s_resp_free(&r);
}
END_TEST

START_TEST(test_store_unavailable_is_503)
{
    client_t *c = s_connect();
    s_sends(c, s_curl_cancel);
    msg_t *req = s_expect_msg(s_store, MSG_JOB_CANCEL_REQUEST);
    s_answer(s_store, req, s_error_msg(-EAGAIN, "PostgreSQL unreachable"));
    msg_destroy(&req);
    resp_t r;
    s_read_ok(c, &r);
    s_expect_error(&r, 503, "database unavailable");
    s_expect_cors(&r);
    s_resp_free(&r);
    s_expect_early_broadcast_only();
    s_close(&c);

    /* no answer at all */
    s_http_start(0.3, 10., 60.);
    c = s_connect();
    double t0 = s_mono();
    s_sends(c, "GET /api/jobs/" JOB " HTTP/1.1\r\nHost: x\r\n\r\n");
    req = s_expect_msg(s_store, MSG_JOB_GET);
    s_read_ok(c, &r);
    s_expect_error(&r, 503, "database unavailable");
    ck_assert(s_mono() - t0 >= 0.25);
    s_resp_free(&r);
    /* its late reply changes nothing */
    msg_t *reply = msg_new(MSG_JOB_JSON);
    msg_set_str(&reply->job_json.json, "{}");
    s_answer(s_store, req, reply);
    msg_destroy(&req);

    /* no store actor at all */
    mailbox_destroy(&s_store);
    s_sends(c, "GET /api/jobs/" JOB " HTTP/1.1\r\nHost: x\r\n\r\n");
    s_read_ok(c, &r);
    s_expect_error(&r, 503, "database unavailable");
    s_resp_free(&r);
    s_sends(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    s_read_ok(c, &r);
    ck_assert_int_eq(r.status, 200);
    s_resp_free(&r);
    s_close(&c);
}
END_TEST

/* ------------------------------------------------------------ protocol */

START_TEST(test_unknown_path_and_wrong_method)
{
    resp_t r;
    static const char *const paths[] = {
        "/nope", "/index.html", "/api", "/api/jobs/" JOB "/cancel/x", "/api/jobsx", "/healthz/"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        s_simple("GET", paths[i], NULL, NULL, &r);
        s_expect_error(&r, 404, "Not found");
        s_expect_cors(&r);
        s_resp_free(&r);
    }
    /* "/" is the page (actors/api/web.c; tests/check_web.c) */
    s_simple("GET", "/", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(s_header(&r, "Content-Type"), "text/html; charset=utf-8");
    s_resp_free(&r);
    static const struct {
        const char *method, *path, *allow;
    } cases[] = {
        {"PUT", "/api/jobs", "GET, HEAD, POST, OPTIONS"},
        {"DELETE", "/api/jobs/" JOB, "GET, HEAD, OPTIONS"},
        {"POST", "/api/jobs/" JOB, "GET, HEAD, OPTIONS"},
        {"GET", "/api/jobs/" JOB "/cancel", "POST, OPTIONS"},
        {"PUT", "/healthz", "GET, HEAD, OPTIONS"},
        {"PATCH", "/api/attachments/" JOB, "GET, HEAD, OPTIONS"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        s_simple(cases[i].method, cases[i].path, NULL, NULL, &r);
        s_expect_error_like(&r, 405, "not allowed");
        ck_assert_str_eq(s_header(&r, "Allow"), cases[i].allow);
        s_expect_cors(&r);
        s_resp_free(&r);
    }
    s_expect_none(s_store, 100);
}
END_TEST

START_TEST(test_cors_preflight)
{
    static const char *const paths[] = {"/api/jobs/" JOB "/cancel", "/api/jobs", "/api/whatever"};
    for (size_t i = 0; i < 3; i++) {
        client_t *c = s_connect();
        char raw[512];
        snprintf(raw, sizeof raw,
                 "OPTIONS %s HTTP/1.1\r\nHost: api.example\r\nOrigin: " ORIGIN "\r\n"
                 "Access-Control-Request-Method: POST\r\n"
                 "Access-Control-Request-Headers: content-type\r\n\r\n",
                 paths[i]);
        s_sends(c, raw);
        resp_t r;
        s_read_ok(c, &r);
        ck_assert_int_eq(r.status, 204);
        s_expect_cors(&r);
        ck_assert_str_eq(s_header(&r, "Access-Control-Allow-Methods"), "GET, POST, OPTIONS");
        ck_assert_str_eq(
            s_header(&r, "Access-Control-Allow-Headers"),
            "Authorization, Content-Type, Last-Event-ID, Idempotency-Key, Cancel-After");
        ck_assert_ptr_nonnull(s_header(&r, "Access-Control-Max-Age"));
        ck_assert_uint_eq(r.body_len, 0);
        s_resp_free(&r);
        /* the connection goes on */
        s_sends(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        s_read_ok(c, &r);
        ck_assert_int_eq(r.status, 200);
        s_expect_cors(&r);
        s_resp_free(&r);
        s_close(&c);
    }
}
END_TEST

START_TEST(test_oversized_body_is_413)
{
    /* announced: refused before the body is sent */
    client_t *c = s_connect();
    s_sends(c, "POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               "Content-Length: 2000000\r\n\r\n");
    resp_t r;
    s_read_ok(c, &r);
    s_expect_error(&r, 413, "request body exceeds 1 MiB");
    s_expect_cors(&r);
    ck_assert_str_eq(s_header(&r, "Connection"), "close");
    s_resp_free(&r);
    ck_assert(s_closed_within(c, 5000));
    s_close(&c);

    /* with Expect: 100-continue the client never sends it either */
    c = s_connect();
    s_sends(c, "POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               "Expect: 100-continue\r\nContent-Length: 1048577\r\n\r\n");
    s_read_ok(c, &r);
    ck_assert_int_eq(r.status, 413);
    s_resp_free(&r);
    s_close(&c);

    /* chunked: refused once the chunks pass the limit */
    c = s_connect();
    s_sends(c, "POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               "Transfer-Encoding: chunked\r\n\r\n");
    char *chunk = malloc(65536 + 16);
    int hl = sprintf(chunk, "10000\r\n");
    memset(chunk + hl, ' ', 65536);
    memcpy(chunk + hl + 65536, "\r\n", 2);
    for (int i = 0; i < 17; i++) /* 17 x 64 KiB > 1 MiB */
        s_send(c, chunk, (size_t)hl + 65536 + 2);
    free(chunk);
    s_read_ok(c, &r);
    s_expect_error(&r, 413, "request body exceeds 1 MiB");
    s_resp_free(&r);
    s_close(&c);

    /* exactly 1 MiB is fine (whitespace: an empty cancel body) */
    c = s_connect();
    size_t mib = 1024 * 1024;
    char *body = malloc(mib + 1);
    memset(body, ' ', mib);
    body[mib] = '\0';
    char *raw = s_request("POST", "/api/jobs/" JOB "/cancel", NULL, body);
    s_cancel_roundtrip(c, raw, "immediate", s_cancel_result("processing", 0, 1), &r);
    ck_assert_int_eq(r.status, 200);
    s_expect_broadcast("immediate");
    s_resp_free(&r);
    free(raw);
    free(body);
    s_close(&c);
}
END_TEST

START_TEST(test_oversized_headers_are_431)
{
    char *pad = malloc(20000);
    memset(pad, 'a', 19999);
    pad[19999] = '\0';
    client_t *c = s_connect();
    char *raw;
    ck_assert_int_gt(asprintf(&raw, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", pad),
                     0);
    s_sends(c, raw);
    free(raw);
    resp_t r;
    s_read_ok(c, &r);
    s_expect_error(&r, 431, "request line and headers exceed 16 KiB");
    s_expect_cors(&r);
    s_resp_free(&r);
    ck_assert(s_closed_within(c, 5000));
    s_close(&c);

    /* a long URL counts too */
    c = s_connect();
    ck_assert_int_gt(asprintf(&raw, "GET /%s HTTP/1.1\r\nHost: x\r\n\r\n", pad), 0);
    s_sends(c, raw);
    free(raw);
    s_read_ok(c, &r);
    ck_assert_int_eq(r.status, 431);
    s_resp_free(&r);
    s_close(&c);

    /* 15 KiB of headers is within the limit */
    pad[15000] = '\0';
    c = s_connect();
    ck_assert_int_gt(asprintf(&raw, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", pad),
                     0);
    s_sends(c, raw);
    free(raw);
    s_read_ok(c, &r);
    ck_assert_int_eq(r.status, 200);
    s_resp_free(&r);
    s_close(&c);
    free(pad);
}
END_TEST

START_TEST(test_stalled_clients_are_closed)
{
    s_http_start(10., 0.4, 1.0);
    resp_t r;

    /* headers never finished */
    client_t *c = s_connect();
    s_sends(c, "GET /healthz HTTP/1.1\r\nHost: lo");
    double t0 = s_mono();
    ck_assert(s_closed_within(c, 5000));
    ck_assert(s_mono() - t0 >= 0.3);
    ck_assert_msg(c->len == 0 || strstr(c->buf, " 408 ") != NULL, "%.*s", (int)c->len, c->buf);
    s_close(&c);

    /* body never finished */
    c = s_connect();
    s_sends(c, "POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               "Content-Length: 100\r\n\r\n{\"prompt\"");
    ck_assert(s_closed_within(c, 5000));
    s_close(&c);

    /* trickling one byte at a time does not extend the header deadline */
    c = s_connect();
    t0 = s_mono();
    bool closed = false;
    for (int i = 0; i < 40 && !closed; i++) {
        if (send(c->fd, "X", 1, MSG_NOSIGNAL) != 1)
            closed = true;
        else if (i == 0)
            s_sends(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        else
            closed = s_closed_within(c, 100);
    }
    ck_assert_msg(closed, "a trickling client was kept for %.1f s", s_mono() - t0);
    ck_assert(s_mono() - t0 < 3.);
    s_close(&c);

    /* an idle keep-alive connection, after the keep-alive timeout */
    c = s_connect();
    s_sends(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    s_read_ok(c, &r);
    ck_assert_int_eq(r.status, 200);
    s_resp_free(&r);
    t0 = s_mono();
    ck_assert(s_closed_within(c, 5000));
    ck_assert_msg(s_mono() - t0 >= 0.8, "closed after %.2f s", s_mono() - t0);
    ck_assert_uint_eq(c->len, 0); /* closed silently */
    s_close(&c);

    /* the server is fine */
    s_simple("GET", "/healthz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    s_resp_free(&r);
}
END_TEST

START_TEST(test_pipelined_requests_answered_in_order)
{
    static const char *const ids[] = {"11111111-1111-4111-8111-111111111111",
                                      "22222222-2222-4222-8222-222222222222"};
    client_t *c = s_connect();
    char raw[2048];
    snprintf(raw, sizeof raw,
             "GET /api/jobs/%s HTTP/1.1\r\nHost: x\r\n\r\n"
             "POST /api/jobs/" JOB
             "/cancel HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: 30\r\n\r\n{\"mode\":\"after_current_image\"}"
             "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
             "POST /api/jobs//cancel HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
             "GET /api/jobs/%s HTTP/1.1\r\nHost: x\r\n\r\n",
             ids[0], ids[1]);
    s_sends(c, raw);

    /* one request at a time: the cancel reaches the store only after the
     * first GET is answered */
    msg_t *req = s_expect_msg(s_store, MSG_JOB_GET);
    ck_assert_str_eq(req->job_get.job_id, ids[0]);
    s_expect_none(s_store, 200);
    msg_t *reply = msg_new(MSG_JOB_JSON);
    msg_set_str(&reply->job_json.json, "{\"n\":1}");
    s_answer(s_store, req, reply);
    msg_destroy(&req);
    req = s_expect_msg(s_store, MSG_JOB_CANCEL_REQUEST);
    ck_assert_int_eq(req->job_cancel_request.mode, CANCEL_MODE_AFTER_CURRENT_IMAGE);
    s_answer(s_store, req, s_cancel_result("processing", 1, 2));
    msg_destroy(&req);
    req = s_expect_msg(s_store, MSG_JOB_GET);
    ck_assert_str_eq(req->job_get.job_id, ids[1]);
    reply = msg_new(MSG_JOB_JSON);
    msg_set_str(&reply->job_json.json, "{\"n\":6}");
    s_answer(s_store, req, reply);
    msg_destroy(&req);

    resp_t r;
    s_read_ok(c, &r);
    ck_assert_str_eq(r.body, "{\"n\":1}");
    s_resp_free(&r);
    s_read_ok(c, &r);
    s_json_str(&r, "message", "Cancel request sent. Job will stop after current image.");
    s_resp_free(&r);
    s_read_ok(c, &r);
    ck_assert_str_eq(r.body, "{\"status\":\"ok\"}");
    s_resp_free(&r);
    s_read_ok(c, &r);
    ck_assert_int_eq(r.status, 404);
    s_resp_free(&r);
    s_read_ok(c, &r);
    s_expect_error(&r, 400, "jobId is required");
    s_resp_free(&r);
    s_read_ok(c, &r);
    ck_assert_str_eq(r.body, "{\"n\":6}");
    s_resp_free(&r);
    s_expect_broadcast("after_current_image");

    /* 2000 pipelined in one go (more than one read, and more than 16 KiB of
     * request lines in all), all answered in order */
    size_t n = 2000, len = 0;
    char *many = malloc(n * 64);
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(many + len,
                               i % 2 ? "GET /nope%zu HTTP/1.1\r\nHost: x\r\n\r\n"
                                     : "GET /healthz?i=%zu HTTP/1.1\r\nHost: x\r\n\r\n",
                               i);
    s_send(c, many, len);
    free(many);
    for (size_t i = 0; i < n; i++) {
        s_read_ok(c, &r);
        ck_assert_int_eq(r.status, i % 2 ? 404 : 200);
        s_resp_free(&r);
    }
    s_close(&c);
}
END_TEST

START_TEST(test_keep_alive_reuse_and_connection_close)
{
    client_t *c = s_connect();
    resp_t r;
    for (int i = 0; i < 20; i++) {
        s_sends(c, "GET /api/jobs/" JOB " HTTP/1.1\r\nHost: x\r\n\r\n");
        msg_t *req = s_expect_msg(s_store, MSG_JOB_GET);
        msg_t *reply = msg_new(MSG_JOB_JSON);
        msg_set_str(&reply->job_json.json, "{}");
        s_answer(s_store, req, reply);
        msg_destroy(&req);
        s_read_ok(c, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_ptr_null(s_header(&r, "Connection"));
        s_resp_free(&r);
    }
    /* a request cut into one-byte writes */
    static const char frag[] = "POST /api/jobs/" JOB "/cancel HTTP/1.1\r\nHost: x\r\n"
                               "Content-Type: application/json\r\nContent-Length: 30\r\n\r\n"
                               "{\"mode\":\"after_current_image\"}";
    for (size_t i = 0; i < sizeof frag - 1; i++) {
        s_send(c, frag + i, 1);
        if (i % 16 == 0)
            usleep(1000);
    }
    msg_t *req = s_expect_msg(s_store, MSG_JOB_CANCEL_REQUEST);
    ck_assert_int_eq(req->job_cancel_request.mode, CANCEL_MODE_AFTER_CURRENT_IMAGE);
    s_answer(s_store, req, s_cancel_result("processing", 1, 2));
    msg_destroy(&req);
    s_read_ok(c, &r);
    ck_assert_int_eq(r.status, 200);
    s_resp_free(&r);
    s_expect_broadcast("after_current_image");

    /* Connection: close is honoured, and nothing after it is read */
    s_sends(
        c,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    s_read_ok(c, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(s_header(&r, "Connection"), "close");
    s_resp_free(&r);
    ck_assert(s_closed_within(c, 5000));
    ck_assert_uint_eq(c->len, 0);
    s_close(&c);

    /* HTTP/1.0: closed after one response unless it asks to keep alive */
    c = s_connect();
    s_sends(c, "GET /healthz HTTP/1.0\r\n\r\n");
    s_read_ok(c, &r);
    ck_assert_str_eq(s_header(&r, "Connection"), "close");
    s_resp_free(&r);
    ck_assert(s_closed_within(c, 5000));
    s_close(&c);
    c = s_connect();
    s_sends(c, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    s_read_ok(c, &r);
    ck_assert_str_eq(s_header(&r, "Connection"), "keep-alive");
    s_resp_free(&r);
    s_sends(c, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    s_read_ok(c, &r);
    ck_assert_int_eq(r.status, 200);
    s_resp_free(&r);
    s_close(&c);
}
END_TEST

START_TEST(test_abrupt_clients_do_not_disturb_the_server)
{
    resp_t r;
    /* closed mid-body */
    client_t *c = s_connect();
    s_sends(c, "POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               "Content-Length: 100\r\n\r\n{\"prompt\":");
    s_close(&c);
    /* closed mid-headers, reset (SO_LINGER 0) */
    c = s_connect();
    s_sends(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nHo");
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    s_close(&c);
    /* pipelined then gone before reading anything */
    c = s_connect();
    for (int i = 0; i < 50; i++)
        s_sends(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    s_close(&c);
    /* gone while its request waits for the store */
    c = s_connect();
    s_sends(c, "GET /api/jobs/" JOB " HTTP/1.1\r\nHost: x\r\n\r\n");
    msg_t *req = s_expect_msg(s_store, MSG_JOB_GET);
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    s_close(&c);
    usleep(50 * 1000);
    msg_t *reply = msg_new(MSG_JOB_JSON);
    msg_set_str(&reply->job_json.json, "{}");
    s_answer(s_store, req, reply);
    msg_destroy(&req);
    /* garbage */
    static const char *const junk[] = {
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* a TLS hello */
        "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        "BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /api/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    };
    for (size_t i = 0; i < sizeof junk / sizeof *junk; i++) {
        c = s_connect();
        s_sends(c, junk[i]);
        s_read_ok(c, &r);
        s_expect_error_like(&r, 400, "malformed HTTP request");
        ck_assert_str_eq(s_header(&r, "Connection"), "close");
        s_resp_free(&r);
        ck_assert(s_closed_within(c, 5000));
        s_close(&c);
    }
    /* still serving, the full way */
    c = s_connect();
    s_cancel_roundtrip(c, s_curl_cancel, "immediate", s_cancel_result("processing", 3, 10), &r);
    s_expect_cancel_success(&r, "Cancel request sent. Job will stop at the next step.",
                            "processing", 3, 10);
    s_expect_broadcast("immediate");
    s_resp_free(&r);
    s_close(&c);
}
END_TEST

/* Framing that a proxy in front of us could read another way (request
 * smuggling, RFC 9112), and requests we cannot read as HTTP/1.1: each is
 * answered in the API's error format with Connection: close, the
 * connection closes, and nothing reaches the store or the bus (each would
 * otherwise carry a cancel). */
START_TEST(test_lenient_framing_is_refused)
{
#define CANCEL "POST /api/jobs/" JOB "/cancel HTTP/1.1\r\n"
#define SMUGGLED CANCEL "Host: x\r\nContent-Length: 0\r\n\r\n"
    static const struct {
        const char *raw;
        int status;
    } cases[] = {
        {CANCEL "Host: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" SMUGGLED, 400},
        {CANCEL "Host: x\r\nContent-Length : 2\r\n\r\n{}" SMUGGLED, 400},
        {CANCEL "Host: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" SMUGGLED, 400},
        {CANCEL "Host: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n" SMUGGLED, 400},
        {CANCEL "Host: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" SMUGGLED, 501},
        {CANCEL "Content-Length: 0\r\n\r\n", 400},
        {"POST /api/jobs/" JOB "/cancel HTTP/2.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 505},
        {"POST /api/jobs/" JOB "/cancel HTTP/3.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 505},
        {"POST /api/jobs/" JOB "/cancel HTTP/9.9\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 505},
        {CANCEL "Host: x\r\nContent-Type: text/plain\r\nContent-Type: application/json\r\n"
                "Content-Length: 2\r\n\r\n{}",
         400},
        {CANCEL "Host: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", 400},
        {"POST /api/jobs/" JOB "/cancel\t HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 400},
        {"GET /\r\n", 400},
        {"\r\n", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        client_t *c = s_connect();
        s_sends(c, cases[i].raw);
        resp_t r;
        ck_assert_msg(s_read(c, &r) == 0, "case %zu: no answer", i);
        ck_assert_msg(r.status == cases[i].status, "case %zu: status %d, wanted %d: %s", i,
                      r.status, cases[i].status, r.body);
        ck_assert_str_eq(s_header(&r, "Content-Type"), "application/json");
        s_json_size(&r, 1);
        ck_assert(json_is_string(json_object_get(r.json, "error")));
        ck_assert_str_eq(s_header(&r, "Connection"), "close");
        s_expect_cors(&r);
        s_resp_free(&r);
        ck_assert_msg(s_closed_within(c, 5000), "case %zu: the connection stayed open", i);
        s_close(&c);
    }
    s_expect_none(s_store, 100);
    s_expect_no_broadcast();
    /* and the server serves on */
    resp_t r;
    s_simple("GET", "/healthz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    s_resp_free(&r);
#undef SMUGGLED
#undef CANCEL
}
END_TEST

/* Requests an attachment of size bytes on a client with a small receive
 * buffer, so the server must wait for EV_WRITE; returns the expected bytes. */
static uint8_t *s_big_attachment(client_t **cp, size_t size)
{
    client_t *c = calloc(1, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 16384;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    s_timeouts(c->fd, WAIT_MS);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    s_sends(c, "GET /api/attachments/" JOB " HTTP/1.1\r\nHost: x\r\n\r\n");
    msg_t *req = s_expect_msg(s_store, MSG_ATTACHMENT_GET);
    uint8_t *png = malloc(size);
    for (size_t i = 0; i < size; i++)
        png[i] = (uint8_t)(i * 2654435761u >> 13);
    msg_t *reply = msg_new(MSG_ATTACHMENT);
    msg_set_bin(&reply->attachment.bytes, png, size);
    s_answer(s_store, req, reply);
    msg_destroy(&req);
    *cp = c;
    return png;
}

START_TEST(test_slow_and_dead_readers)
{
    s_http_start(10., 0.5, 60.);
    size_t size = 8u << 20; /* more than the kernel buffers on both sides */

    /* a slow reader that keeps making progress gets every byte */
    client_t *c;
    uint8_t *png = s_big_attachment(&c, size);
    usleep(300 * 1000);
    char buf[65536];
    size_t got = 0;
    while (c->len == 0 || !memmem(c->buf, c->len, "\r\n\r\n", 4))
        ck_assert_int_gt(s_fill(c), 0);
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    size_t head = (size_t)(end - c->buf) + 4;
    ck_assert_msg(strncmp(c->buf, "HTTP/1.1 200 ", 13) == 0, "%.*s", (int)head, c->buf);
    got = c->len - head;
    ck_assert(memcmp(c->buf + head, png, got) == 0);
    int reads = 0;
    while (got < size) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        ck_assert_msg(n > 0, "cut off after %zu of %zu bytes", got, size);
        ck_assert(memcmp(buf, png + got, (size_t)n) == 0);
        got += (size_t)n;
        if (++reads % 8 == 0)
            usleep(20 * 1000); /* 8 MiB over ~2 s: longer than the stall timeout */
    }
    ck_assert_uint_eq(got, size);
    /* and the connection is still good */
    s_sends(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    c->len = 0;
    resp_t r;
    s_read_ok(c, &r);
    ck_assert_int_eq(r.status, 200);
    s_resp_free(&r);
    s_close(&c);
    free(png);

    /* a reader that stops reading is dropped after the stall timeout */
    png = s_big_attachment(&c, size);
    usleep(2000 * 1000);
    got = 0;
    bool ended = false;
    s_timeouts(c->fd, 5000);
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            ended = true;
            break;
        }
        if (n < 0)
            break;
        got += (size_t)n;
    }
    ck_assert_msg(ended && got < size, "got %zu of %zu bytes, ended %d", got, size, ended);
    s_close(&c);
    free(png);
    s_simple("GET", "/healthz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    s_resp_free(&r);
}
END_TEST

static long s_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

/* One GET /healthz on a bare socket, read into the stack: the client's own
 * memory stays out of the measurement. */
static int s_bare_healthz(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    s_timeouts(fd, WAIT_MS);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(send(fd, req, sizeof req - 1, MSG_NOSIGNAL), (ssize_t)sizeof req - 1);
    char buf[1024];
    size_t len = 0;
    while (len < 16 || memcmp(buf + len - 16, "{\"status\":\"ok\"}", 15) != 0) {
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        ck_assert_int_gt(n, 0);
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "{\"status\":\"ok\"}"))
            break;
    }
    return fd;
}

START_TEST(test_many_idle_connections_are_cheap)
{
    enum { N = 4000 };
    static int fds[N];
    resp_t r;
    usleep(100 * 1000);
    long before = s_rss_kb();
    for (int i = 0; i < N; i++)
        fds[i] = s_bare_healthz();
    usleep(200 * 1000);
    long after = s_rss_kb();
    double per = (double)(after - before) * 1024. / N;
    fprintf(stderr, "check_http: %d idle keep-alive connections cost %.0f bytes each (RSS)\n", N,
            per);
    ck_assert_msg(per < 10240, "%.0f bytes per idle connection", per);
    /* a new client is served at once */
    double t0 = s_mono();
    s_simple("GET", "/healthz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(s_mono() - t0 < 1.);
    s_resp_free(&r);
    for (int i = 0; i < N; i++)
        close(fds[i]);
}
END_TEST

static double s_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec
           + ru.ru_stime.tv_usec / 1e6;
}

START_TEST(test_out_of_descriptors_does_not_spin)
{
    enum { N = 4 };
    client_t *c[N];
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < N; i++) {
        c[i] = calloc(1, sizeof *c[i]);
        c[i]->fd = socket(AF_INET, SOCK_STREAM, 0);
        s_timeouts(c[i]->fd, WAIT_MS);
    }
    /* no descriptor left for the server: the lowest free one is the limit */
    int lowest = open("/dev/null", O_RDONLY);
    ck_assert_int_ge(lowest, 0);
    close(lowest);
    struct rlimit old, low;
    getrlimit(RLIMIT_NOFILE, &old);
    low = old;
    low.rlim_cur = (rlim_t)lowest;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    for (int i = 0; i < N; i++) /* the kernel completes them; accept4 fails */
        ck_assert_int_eq(connect(c[i]->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    usleep(200 * 1000);
    double cpu0 = s_cpu_s(), t0 = s_mono();
    usleep(1000 * 1000);
    double cpu = s_cpu_s() - cpu0, wall = s_mono() - t0;
    ck_assert_msg(cpu < 0.3 * wall, "%.2f s of CPU in %.2f s while out of descriptors", cpu, wall);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    /* descriptors are back: the waiting clients are served */
    for (int i = 0; i < N; i++) {
        s_sends(c[i], "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        resp_t r;
        s_read_ok(c[i], &r);
        ck_assert_int_eq(r.status, 200);
        s_resp_free(&r);
        s_close(&c[i]);
    }
}
END_TEST

START_TEST(test_listen_errors_are_reported)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, 1), 0);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    http_destroy(&s_http);

    char listen_on[64], err[256] = "";
    snprintf(listen_on, sizeof listen_on, "127.0.0.1:%d", ntohs(sa.sin_port));
    http_config_t cfg = {.listen = listen_on};
    actor_t *a = http_start(s_rt, &cfg, err, sizeof err);
    ck_assert_ptr_null(a);
    ck_assert_msg(strstr(err, "Address already in use") && strstr(err, listen_on), "%s", err);

    static const char *const bad[] = {"nonsense", "127.0.0.1:99999", "127.0.0.1:", "[::1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cfg.listen = bad[i];
        a = http_start(s_rt, &cfg, err, sizeof err);
        ck_assert_ptr_null(a);
        ck_assert_msg(strstr(err, "cannot listen"), "%s", err);
    }
    close(fd);
    /* and the name is free again */
    s_http_start(10., 10., 60.);
}
END_TEST

START_TEST(test_shutdown_stops_accepting)
{
    client_t *idle = s_connect();
    resp_t r;
    s_sends(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    s_read_ok(idle, &r);
    s_resp_free(&r);
    client_t *busy = s_connect();
    s_sends(busy, "GET /api/jobs/" JOB " HTTP/1.1\r\nHost: x\r\n\r\n");
    msg_t *req = s_expect_msg(s_store, MSG_JOB_GET);

    msg_t *shut = msg_new(MSG_SHUTDOWN);
    msg_set_str(&shut->shutdown.reason, "test");
    ck_assert_int_eq(mailbox_send(s_bus, "http", shut), 0);
    msg_destroy(&shut);
    ck_assert(s_closed_within(idle, 5000));
    s_close(&idle);

    /* the request in flight is still answered, then its connection closes */
    msg_t *reply = msg_new(MSG_JOB_JSON);
    msg_set_str(&reply->job_json.json, "{}");
    s_answer(s_store, req, reply);
    msg_destroy(&req);
    s_read_ok(busy, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(s_header(&r, "Connection"), "close");
    s_resp_free(&r);
    ck_assert(s_closed_within(busy, 5000));
    s_close(&busy);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_ne(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(errno, ECONNREFUSED);
    close(fd);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("cancel");
    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_cancel_running_immediate_with_curl_shape);
    tcase_add_test(tc, test_cancel_after_current_image_is_the_seed_document);
    tcase_add_test(tc, test_cancel_answer_follows_the_mode_that_stands);
    tcase_add_test(tc, test_cancel_with_fetch_shape_empty_json_body);
    tcase_add_test(tc, test_cancel_pending_job);
    tcase_add_test(tc, test_cancel_repeated_while_stopping_is_success_again);
    tcase_add_test(tc, test_cancel_of_ended_jobs_is_not_success);
    tcase_add_test(tc, test_cancel_unknown_job_is_404);
    tcase_add_test(tc, test_cancel_missing_or_bad_id_is_400);
    tcase_add_test(tc, test_cancel_id_is_lowercased);
    tcase_add_test(tc, test_cancel_body_variants);
    tcase_add_test(tc, test_cancel_broadcast_even_when_client_left);
    suite_add_tcase(s, tc);

    tc = tcase_create("routes");
    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_create_job_defaults);
    tcase_add_test(tc, test_create_job_all_fields);
    tcase_add_test(tc, test_create_job_validation_names_the_field);
    tcase_add_test(tc, test_create_job_needs_json_content_type);
    tcase_add_test(tc, test_get_job_passes_the_document_through);
    tcase_add_test(tc, test_attachment_bytes);
    tcase_add_test(tc, test_health_and_readiness);
    tcase_add_test(tc, test_store_unavailable_is_503);
    tcase_add_test(tc, test_unknown_path_and_wrong_method);
    tcase_add_test(tc, test_cors_preflight);
    suite_add_tcase(s, tc);

    tc = tcase_create("connections");
    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_oversized_body_is_413);
    tcase_add_test(tc, test_oversized_headers_are_431);
    tcase_add_test(tc, test_stalled_clients_are_closed);
    tcase_add_test(tc, test_pipelined_requests_answered_in_order);
    tcase_add_test(tc, test_keep_alive_reuse_and_connection_close);
    tcase_add_test(tc, test_slow_and_dead_readers);
    tcase_add_test(tc, test_abrupt_clients_do_not_disturb_the_server);
    tcase_add_test(tc, test_lenient_framing_is_refused);
    tcase_add_test(tc, test_many_idle_connections_are_cheap);
    tcase_add_test(tc, test_out_of_descriptors_does_not_spin);
    tcase_add_test(tc, test_listen_errors_are_reported);
    tcase_add_test(tc, test_shutdown_stops_accepting);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
