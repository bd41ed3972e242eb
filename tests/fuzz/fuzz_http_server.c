/*
 * fuzz_http_server.c - libFuzzer harness of the HTTP server library
 * (actors/http/server.h): the parser, the request limits, keep-alive and
 * pipelining, responses whole, streamed and deferred. The input is raw
 * bytes a client writes on one connection (any number of pipelined
 * requests), then it shuts its side down and reads until the server
 * closes. Whatever the parser underneath, this drives the library the
 * service runs, through its public surface only.
 *
 * One server on a private loop serves every input (the listener stays up
 * between inputs); the loop and the client run on the fuzzer's thread, so
 * each input ends with the connection closed on both sides. A connection
 * that stays open past CLOSE_BOUND_S is a hang: the harness aborts. With
 * IMAGEJOBS_FUZZ_SHOW set, what the server answers goes to stderr (to read
 * what a kept input does: fuzz_http_server FILE).
 *
 * The on_request callback answers like the job API's router: POST /api/jobs
 * and POST /api/jobs/{id}/cancel through the real body checks (input.c),
 * other /api/ paths later from the loop (as the actor answers once the
 * store replies), /stream as a chunked stream, anything else at once with
 * the path and query echoed.
 */
#include "config.h"

#include "actors/http/input.h"
#include "actors/http/server.h"
#include "runtime/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CLOSE_BOUND_S 10.0 /* stall and keep-alive timeouts are 1 s */
#define DEFERRED_MAX 8

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
    struct ev_loop *loop;
    http_server_t *srv;
    struct sockaddr_in addr;

    /* Answers held for the next loop iteration. */
    struct deferred {
        http_exchange_t *x;
        int status;
        char *body;
    } deferred[DEFERRED_MAX];
    int ndeferred;
    ev_idle answer;

    /* The client of the input being run. */
    int fd;
    ev_io io;
    const uint8_t *data;
    size_t size, written;
    bool closed;
    ev_timer bound;
    bool show; /* IMAGEJOBS_FUZZ_SHOW set: the answers go to stderr */
} s;

static char *s_strdup(const char *text)
{
    char *p = strdup(text);
    if (!p)
        abort();
    return p;
}

static char *s_json_error(int status, const char *why)
{
    char text[512];
    snprintf(text, sizeof text, "{\"status\":%d,\"error\":\"%s\"}", status, why);
    return s_strdup(text);
}

/* ---------------------------------------------------------- the server */

/* Answers what was held. http_respond() may hand the connection's next
 * pipelined request to s_on_request before it returns, which may hold it
 * in turn: the queue is taken first, and what is held meanwhile waits for
 * the next iteration. */
static void s_answer_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    ev_idle_stop(loop, w);
    int n = s.ndeferred;
    struct deferred taken[DEFERRED_MAX];
    memcpy(taken, s.deferred, sizeof taken[0] * (size_t)n);
    s.ndeferred = 0;
    for (int i = 0; i < n; i++) {
        char *body = taken[i].body;
        size_t len = strlen(body);
        /* The client may have gone meanwhile: the call takes the body anyway. */
        http_respond(taken[i].x, taken[i].status, "application/json", NULL, &body, len);
        http_exchange_release(taken[i].x);
    }
}

static void s_defer(http_exchange_t *x, int status, char *body)
{
    if (s.ndeferred == DEFERRED_MAX) { /* one request at a time per connection */
        fprintf(stderr, "more than %d requests held at once\n", DEFERRED_MAX);
        abort();
    }
    http_exchange_hold(x);
    s.deferred[s.ndeferred].x = x;
    s.deferred[s.ndeferred].status = status;
    s.deferred[s.ndeferred].body = body;
    s.ndeferred++;
    ev_idle_start(s.loop, &s.answer);
}

static void s_stream_closed(http_exchange_t *x, void *arg) {}

static void s_stream(http_exchange_t *x, const http_request_t *rq)
{
    static const http_stream_fns_t fns = {.closed = s_stream_closed};
    size_t n = rq->query.count;
    if (http_stream_begin(x, 200, "text/plain", "Cache-Control: no-store\r\n", &fns) < 0)
        return;
    for (size_t i = 0; i < n + 1; i++)
        if (http_stream_write(x, "piece\n", 6) < 0)
            return;
    http_stream_end(x);
}

static void s_echo(http_exchange_t *x, const http_request_t *rq)
{
    size_t len = strlen(rq->path) + 64 + rq->body_len;
    for (size_t i = 0; i < rq->query.count; i++)
        len += strlen(rq->query.pairs[i].key) + strlen(rq->query.pairs[i].value) + 2;
    char *body = malloc(len + 1), *w = body;
    if (!body)
        abort();
    w += sprintf(w, "%u %s %zu %s\n", rq->method, rq->path, rq->body_len,
                 rq->content_type ? "typed" : "untyped");
    for (size_t i = 0; i < rq->query.count; i++)
        w += sprintf(w, "%s=%s\n", rq->query.pairs[i].key, rq->query.pairs[i].value);
    memcpy(w, rq->body, rq->body_len);
    w += rq->body_len;
    http_respond(x, 200, "text/plain", NULL, &body, (size_t)(w - body));
}

static bool s_ends_with(const char *s1, const char *tail)
{
    size_t n = strlen(s1), t = strlen(tail);
    return n >= t && strcmp(s1 + n - t, tail) == 0;
}

static void s_on_request(http_exchange_t *x, const http_request_t *rq, void *arg)
{
    char why[256] = "";
    if (strcmp(rq->path, "/api/jobs") == 0) {
        char job_id[UUID_STR_LEN];
        uint64_t total;
        int status;
        msg_t *m = http_input_job(rq, job_id, &total, &status, why, sizeof why);
        if (m) {
            char text[128];
            snprintf(text, sizeof text, "{\"job_id\":\"%s\",\"total_images\":%llu}", job_id,
                     (unsigned long long)total);
            msg_destroy(&m);
            s_defer(x, 201, s_strdup(text));
        } else {
            char *body = s_json_error(status, why);
            http_respond(x, status, "application/json", NULL, &body, strlen(body));
        }
    } else if (strncmp(rq->path, "/api/jobs/", 10) == 0 && s_ends_with(rq->path, "/cancel")) {
        cancel_mode_t mode;
        if (http_input_cancel_mode(rq, &mode, why, sizeof why) == 0)
            s_defer(x, 200, s_strdup(cancel_mode_name(mode)));
        else
            s_defer(x, 400, s_json_error(400, why));
    } else if (strncmp(rq->path, "/api/", 5) == 0) {
        s_defer(x, 404, s_json_error(404, "not found"));
    } else if (strcmp(rq->path, "/stream") == 0) {
        s_stream(x, rq);
    } else {
        s_echo(x, rq);
    }
}

/* The server's own refusals, as the job API answers them. */
static void s_on_error(http_exchange_t *x, int status, const char *message, void *arg)
{
    char *body = s_json_error(status, message);
    http_respond(x, status, "application/json", NULL, &body, strlen(body));
}

/* ---------------------------------------------------------- the client */

static void s_client_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    if ((revents & EV_WRITE) && s.written < s.size) {
        ssize_t n = send(s.fd, s.data + s.written, s.size - s.written, MSG_NOSIGNAL);
        if (n > 0)
            s.written += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EINTR)
            s.written = s.size; /* the server closed first: read what it said */
        if (s.written == s.size) {
            shutdown(s.fd, SHUT_WR);
            ev_io_stop(loop, w);
            ev_io_set(w, s.fd, EV_READ);
            ev_io_start(loop, w);
        }
    }
    if (revents & EV_READ) {
        char buf[16384];
        for (;;) {
            ssize_t n = recv(s.fd, buf, sizeof buf, 0);
            if (n > 0 && s.show)
                fwrite(buf, 1, (size_t)n, stderr);
            if (n > 0)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                break;
            s.closed = true; /* EOF, or a reset by a server that closed unread */
            ev_break(loop, EVBREAK_ONE);
            break;
        }
    }
}

static void s_bound_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    fprintf(stderr, "the server kept the connection open %.0f s after the client's EOF\n",
            CLOSE_BOUND_S);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    s.show = getenv("IMAGEJOBS_FUZZ_SHOW") != NULL;
    s.loop = ev_loop_new(EVFLAG_AUTO);
    http_server_config_t cfg = {
        .loop = s.loop,
        .listen = "127.0.0.1:0",
        .headers = "X-Fuzz: 1\r\n",
        .stall_timeout_s = 1.0,
        .keepalive_timeout_s = 1.0,
        .on_request = s_on_request,
        .on_error = s_on_error,
    };
    char err[256];
    s.srv = http_server_new(&cfg, err, sizeof err);
    if (!s.srv) {
        fprintf(stderr, "http_server_new: %s\n", err);
        exit(1);
    }
    s.addr.sin_family = AF_INET;
    s.addr.sin_port = htons((uint16_t)http_server_port(s.srv));
    s.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ev_idle_init(&s.answer, s_answer_cb);
    ev_timer_init(&s.bound, s_bound_cb, CLOSE_BOUND_S, 0.);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    s.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s.fd < 0
        || (connect(s.fd, (struct sockaddr *)&s.addr, sizeof s.addr) < 0 && errno != EINPROGRESS)) {
        perror("connect");
        abort();
    }
    s.data = data;
    s.size = size;
    s.written = 0;
    s.closed = false;
    if (size == 0)
        shutdown(s.fd, SHUT_WR);
    ev_io_init(&s.io, s_client_cb, s.fd, size ? EV_READ | EV_WRITE : EV_READ);
    ev_io_start(s.loop, &s.io);
    ev_now_update(s.loop);
    ev_timer_set(&s.bound, CLOSE_BOUND_S, 0.);
    ev_timer_start(s.loop, &s.bound);
    while (!s.closed)
        ev_run(s.loop, EVRUN_ONCE);
    ev_io_stop(s.loop, &s.io);
    close(s.fd);
    /* The server's side: closed by now, or at its next read of our close. */
    while (http_server_connections(s.srv) > 0 || s.ndeferred > 0)
        ev_run(s.loop, EVRUN_ONCE);
    ev_timer_stop(s.loop, &s.bound);
    return 0;
}
