/*
 * check_sse_client.c - tests/sse_client.c, the tests' event-stream client,
 * against a tiny server in a thread of the test that writes canned bytes in
 * random pieces with small pauses: chunked and close-delimited bodies, CR,
 * LF and CRLF line ends, every field, comments, events without data, the
 * clean end, errors, timeouts and a 100 KB data line. With IMAGEJOBS_JS_DIR
 * (cmd/imagejobs-local test) tests/js/sse-watch.mjs reads the same server
 * through a real EventSource.
 */
#include "config.h"

#include "tests/js_client.h"
#include "tests/runner.h"
#include "tests/sse_client.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 20000  /* what a test waits for what must come */
#define MAX_CONNS 3    /* connections one server answers */
#define MAX_SEGMENTS 4 /* pieces of one answer, written one "go" apart */

/* ------------------------------------------------------ the test server */

typedef struct {
    const char *p;
    size_t len;
} seg_t;

typedef struct {
    /* set by the test before srv_start */
    seg_t conn[MAX_CONNS][MAX_SEGMENTS]; /* the answers, connection by connection */
    int n_conns;
    unsigned seed;    /* for the random pieces */
    int max_piece;    /* pieces of 1..max_piece bytes (0: all at once) */
    int max_delay_us; /* a pause of 0..max_delay_us after each piece */
    bool close_after; /* close after the last segment, or wait for the client */

    /* the server's */
    int listen_fd;
    int port;
    int go[2]; /* the test writes a byte to send the next segment */
    pthread_t thread;
    char request[MAX_CONNS][8192]; /* what each client sent */
    int served;
} srv_t;

static void s_sleep_us(int us)
{
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* Whether fd became readable within ms. */
static bool s_readable(int fd, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, ms) == 1;
}

static void s_write_pieces(srv_t *v, int fd, const char *p, size_t n)
{
    while (n) {
        size_t k = n;
        if (v->max_piece > 0) {
            k = 1 + (size_t)(rand_r(&v->seed) % v->max_piece);
            if (k > n)
                k = n;
        }
        ssize_t w = send(fd, p, k, MSG_NOSIGNAL);
        if (w <= 0)
            return; /* the client went away */
        p += w;
        n -= (size_t)w;
        if (v->max_delay_us > 0)
            s_sleep_us(rand_r(&v->seed) % (v->max_delay_us + 1));
    }
}

static void *s_serve(void *arg)
{
    srv_t *v = arg;
    for (int c = 0; c < v->n_conns; c++) {
        if (!s_readable(v->listen_fd, WAIT_MS))
            break;
        int fd = accept(v->listen_fd, NULL, NULL);
        if (fd < 0)
            break;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        size_t got = 0;
        while (got + 1 < sizeof v->request[c] && !strstr(v->request[c], "\r\n\r\n")
               && s_readable(fd, WAIT_MS)) {
            ssize_t r = recv(fd, v->request[c] + got, sizeof v->request[c] - 1 - got, 0);
            if (r <= 0)
                break;
            got += (size_t)r;
            v->request[c][got] = '\0';
        }
        for (int i = 0; i < MAX_SEGMENTS && v->conn[c][i].p; i++) {
            char go;
            if (i > 0 && (!s_readable(v->go[0], WAIT_MS) || read(v->go[0], &go, 1) != 1))
                break;
            s_write_pieces(v, fd, v->conn[c][i].p, v->conn[c][i].len);
        }
        if (!v->close_after) /* until the client closes */
            while (s_readable(fd, WAIT_MS)) {
                char b[512];
                if (recv(fd, b, sizeof b, 0) <= 0)
                    break;
            }
        close(fd);
        v->served++;
    }
    return NULL;
}

static void srv_start(srv_t *v)
{
    v->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(v->listen_fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(v->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(v->listen_fd, 8), 0);
    socklen_t len = sizeof a;
    ck_assert_int_eq(getsockname(v->listen_fd, (struct sockaddr *)&a, &len), 0);
    v->port = ntohs(a.sin_port);
    ck_assert_int_eq(pipe2(v->go, O_CLOEXEC), 0);
    ck_assert_int_eq(pthread_create(&v->thread, NULL, s_serve, v), 0);
}

/* Lets the server write its next segment. */
static void srv_go(srv_t *v)
{
    ck_assert_int_eq(write(v->go[1], "g", 1), 1);
}

static void srv_stop(srv_t *v)
{
    pthread_join(v->thread, NULL);
    close(v->listen_fd);
    close(v->go[0]);
    close(v->go[1]);
}

static seg_t s_seg(const char *p)
{
    return (seg_t){p, strlen(p)};
}

/* ------------------------------------------------------------- bodies */

/* body as a chunked body: chunks of 1..max_chunk bytes, some with an
 * extension, the final chunk, sometimes a trailer. Caller frees. */
static char *s_chunked(const char *body, size_t n, unsigned *seed, int max_chunk, size_t *out_len)
{
    size_t cap = n * 16 + 64; /* a 1-byte chunk takes at most 12 */
    char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    size_t len = 0;
    for (size_t at = 0; at < n;) {
        size_t k = 1 + (size_t)(rand_r(seed) % max_chunk);
        if (k > n - at)
            k = n - at;
        len +=
            (size_t)snprintf(out + len, cap - len, rand_r(seed) % 7 ? "%zx\r\n" : "%zX;x=1\r\n", k);
        memcpy(out + len, body + at, k);
        len += k;
        memcpy(out + len, "\r\n", 2);
        len += 2;
        at += k;
    }
    len += (size_t)snprintf(out + len, cap - len, "%s",
                            rand_r(seed) % 2 ? "0\r\n\r\n" : "0\r\nX-Trailer: 1\r\n\r\n");
    *out_len = len;
    return out;
}

static const char s_stream_head[] = "HTTP/1.1 200 OK\r\n"
                                    "Content-Type: text/event-stream; charset=utf-8\r\n"
                                    "Cache-Control: no-cache\r\n"
                                    "Transfer-Encoding: chunked\r\n\r\n";
static const char s_close_head[] = "HTTP/1.1 200 OK\r\n"
                                   "content-type: text/event-stream\r\n"
                                   "Connection: close\r\n\r\n";

/* Every rule at once, with every line end. The NUL in an id makes it
 * ignored, so the events after it still carry id 4. */
static const char s_body[] = "\xEF\xBB\xBF: keep-alive\n"
                             "id: 1\nevent: snapshot\ndata: {\"a\":1}\n\n"
                             ": keep-alive\r\n"
                             "event: progress\r\nid: 2\r\ndata: {\"step\":1}\r\n\r\n"
                             "event: progress\rid: 3\rdata: line1\rdata: line2\r\r"
                             "retry: 1500\nretry: 12a\n"
                             "data\n\n"
                             "id: 4\nevent: ghost\n\n"
                             "data:no-space\nfoo: bar\nid: 9\0x\n\n"
                             "data:  two\r\n\n"
                             "data: a\ndata:\ndata: b\n\n"
                             "event: end\nid: 5\ndata: {}\n\n";

typedef struct {
    const char *id, *event, *data;
} want_t;

static const want_t s_want[] = {
    {"1", "snapshot", "{\"a\":1}"},
    {"2", "progress", "{\"step\":1}"},
    {"3", "progress", "line1\nline2"},
    {"3", "message", ""},
    /* "ghost" had no data: not dispatched, but its id 4 counts */
    {"4", "message", "no-space"},
    {"4", "message", " two"},
    {"4", "message", "a\n\nb"},
    {"5", "end", "{}"},
};
#define N_WANT (sizeof s_want / sizeof *s_want)

/* Reads every event of s and checks them against s_want, then the end. */
static void s_expect_all(sse_t *s)
{
    ck_assert_int_eq(sse_status(s), 200);
    for (size_t i = 0; i < N_WANT; i++) {
        sse_event_t ev;
        int r = sse_next(s, &ev, WAIT_MS);
        ck_assert_msg(r == 1, "event %zu: sse_next %d (%s)", i, r, strerror(errno));
        ck_assert_str_eq(ev.id, s_want[i].id);
        ck_assert_str_eq(ev.event, s_want[i].event);
        ck_assert_str_eq(ev.data, s_want[i].data);
        ck_assert_uint_eq(ev.data_len, strlen(s_want[i].data));
    }
    sse_event_t ev;
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 0);
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 0); /* and it stays ended */
    ck_assert_str_eq(sse_last_event_id(s), "5");
    ck_assert_int_eq(sse_comments(s), 2);
    ck_assert_int_eq(sse_retry_ms(s), 1500);
}

/* ---------------------------------------------------------------- tests */

START_TEST(test_chunked_random_splits)
{
    for (unsigned seed = 1; seed <= 40; seed++) {
        srv_t v = {.n_conns = 1, .seed = seed, .close_after = seed % 2 == 0};
        unsigned cs = seed * 7919;
        size_t len;
        /* from one-byte chunks read one byte at a time to large ones */
        char *body =
            s_chunked(s_body, sizeof s_body - 1, &cs, seed <= 4 ? 1 : 1 + (int)seed * 3, &len);
        v.conn[0][0] = s_seg(s_stream_head);
        v.conn[0][1] = (seg_t){body, len};
        v.max_piece = seed <= 2 ? 1 : (int)(seed % 13) + 1;
        v.max_delay_us = seed % 3 ? 200 : 0;
        srv_start(&v);
        sse_t *s = sse_open(v.port, "/api/jobs/x/events", NULL, NULL, WAIT_MS);
        ck_assert_ptr_nonnull(s);
        ck_assert_str_eq(sse_header(s, "CONTENT-type"), "text/event-stream; charset=utf-8");
        ck_assert_str_eq(sse_header(s, "transfer-encoding"), "chunked");
        ck_assert_ptr_null(sse_header(s, "content-length"));
        ck_assert_str_eq(sse_body(s), "");
        srv_go(&v);
        s_expect_all(s);
        sse_close(s);
        srv_stop(&v);
        free(body);
    }
}
END_TEST

START_TEST(test_close_delimited)
{
    for (unsigned seed = 1; seed <= 20; seed++) {
        srv_t v = {.n_conns = 1, .seed = seed, .close_after = true};
        v.conn[0][0] = s_seg(s_close_head);
        v.conn[0][1] = (seg_t){s_body, sizeof s_body - 1};
        v.max_piece = seed == 1 ? 1 : (int)seed * 5;
        v.max_delay_us = 100;
        srv_start(&v);
        sse_t *s = sse_open(v.port, "/api/events", NULL, NULL, WAIT_MS);
        ck_assert_ptr_nonnull(s);
        srv_go(&v);
        s_expect_all(s);
        sse_close(s);
        srv_stop(&v);
    }
}
END_TEST

/* The CR of a CRLF at the end of one chunk, its LF in the next (and, one
 * byte a write, in another read): one line end, not two, or "a" would be
 * dispatched at a blank line that is not there. */
START_TEST(test_crlf_split_across_chunks)
{
    /* chunks: "data: a\r" | "\ndata: b\r" | "\n\r" | "\n" */
    static const char chunked[] = "8\r\ndata: a\r\r\n9\r\n\ndata: b\r\r\n"
                                  "2\r\n\n\r\r\n1\r\n\n\r\n0\r\n\r\n";
    srv_t v = {.n_conns = 1, .close_after = false};
    v.conn[0][0] = s_seg(s_stream_head);
    v.conn[0][1] = s_seg(chunked);
    v.max_piece = 1;
    v.max_delay_us = 300;
    srv_start(&v);
    sse_t *s = sse_open(v.port, "/e", NULL, NULL, WAIT_MS);
    ck_assert_ptr_nonnull(s);
    srv_go(&v);
    sse_event_t ev;
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 1);
    ck_assert_str_eq(ev.data, "a\nb");
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 0);
    sse_close(s);
    srv_stop(&v);
}
END_TEST

/* A preview's data URL: one 200 KB line that arrives in small chunks. */
START_TEST(test_large_data_line)
{
    size_t big = 200 * 1024;
    char *body = malloc(big + 128);
    ck_assert_ptr_nonnull(body);
    int n = sprintf(body, "id: 7\nevent: preview\ndata: {\"url\":\"data:image/png;base64,");
    size_t at = (size_t)n;
    for (size_t i = 0; i < big; i++)
        body[at++] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i % 64];
    at += (size_t)sprintf(body + at, "\"}\n\nevent: end\ndata: {}\n\n");
    unsigned seed = 3;
    size_t len;
    char *chunked = s_chunked(body, at, &seed, 1000, &len);
    srv_t v = {.n_conns = 1, .seed = 5, .max_piece = 3000, .max_delay_us = 0};
    v.conn[0][0] = s_seg(s_stream_head);
    v.conn[0][1] = (seg_t){chunked, len};
    srv_start(&v);
    sse_t *s = sse_open(v.port, "/api/jobs/x/events?previews=1", NULL, NULL, WAIT_MS);
    ck_assert_ptr_nonnull(s);
    srv_go(&v);
    sse_event_t ev;
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 1);
    ck_assert_str_eq(ev.event, "preview");
    ck_assert_str_eq(ev.id, "7");
    ck_assert_uint_eq(ev.data_len, big + strlen("{\"url\":\"data:image/png;base64,\"}"));
    ck_assert(memcmp(ev.data, body + strlen("id: 7\nevent: preview\ndata: "), ev.data_len) == 0);
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 1);
    ck_assert_str_eq(ev.event, "end");
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 0);
    sse_close(s);
    srv_stop(&v);
    free(chunked);
    free(body);
}
END_TEST

/* The request: path, Host, Accept, Last-Event-ID, the extra headers. */
START_TEST(test_request_headers)
{
    srv_t v = {.n_conns = 1, .close_after = true};
    v.conn[0][0] = s_seg("HTTP/1.1 204 No Content\r\n\r\n");
    srv_start(&v);
    sse_t *s =
        sse_open(v.port, "/api/events?status=running", "42", "X-A: 1\r\nX-B: two\r\n", WAIT_MS);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(sse_status(s), 204);
    sse_event_t ev;
    errno = 0;
    ck_assert_int_eq(sse_next(s, &ev, 100), -1);
    ck_assert_int_eq(errno, EPROTO); /* not a stream */
    sse_close(s);
    srv_stop(&v);
    const char *r = v.request[0];
    ck_assert_msg(strncmp(r, "GET /api/events?status=running HTTP/1.1\r\n", 41) == 0, "%s", r);
    ck_assert_ptr_nonnull(strstr(r, "\r\nHost: 127.0.0.1:"));
    ck_assert_ptr_nonnull(strstr(r, "\r\nAccept: text/event-stream\r\n"));
    ck_assert_ptr_nonnull(strstr(r, "\r\nLast-Event-ID: 42\r\n"));
    ck_assert_ptr_nonnull(strstr(r, "\r\nX-A: 1\r\nX-B: two\r\n\r\n"));
}
END_TEST

/* A 503 (or 404) JSON answer: status, headers and the body, however framed. */
START_TEST(test_error_answer_body)
{
    static const char json[] = "{\"error\":\"overloaded\",\"retry_after_s\":1}";
    char length_answer[512], chunked_answer[512];
    snprintf(length_answer, sizeof length_answer,
             "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
             "Retry-After: 1\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(json), json);
    snprintf(chunked_answer, sizeof chunked_answer,
             "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
             "Transfer-Encoding: chunked\r\n\r\n5\r\n%.5s\r\n%zx\r\n%s\r\n0\r\n\r\n",
             json, strlen(json) - 5, json + 5);
    const char *answers[] = {length_answer, chunked_answer};
    int statuses[] = {503, 404};
    for (int i = 0; i < 2; i++) {
        /* the server keeps the connection open: the body's framing ends it */
        srv_t v = {.n_conns = 1, .seed = 9, .max_piece = 7, .max_delay_us = 200};
        v.conn[0][0] = s_seg(answers[i]);
        srv_start(&v);
        sse_t *s = sse_open(v.port, "/api/jobs/nope/events", NULL, NULL, WAIT_MS);
        ck_assert_ptr_nonnull(s);
        ck_assert_int_eq(sse_status(s), statuses[i]);
        ck_assert_str_eq(sse_header(s, "content-type"), "application/json");
        ck_assert_str_eq(sse_body(s), json);
        sse_event_t ev;
        ck_assert_int_eq(sse_next(s, &ev, 100), -1);
        ck_assert_int_eq(errno, EPROTO);
        sse_close(s);
        srv_stop(&v);
    }
}
END_TEST

/* Nothing in time is ETIMEDOUT and not the end: the stream goes on. */
START_TEST(test_timeout_then_more)
{
    srv_t v = {.n_conns = 1};
    v.conn[0][0] = s_seg(s_stream_head);
    v.conn[0][1] = s_seg("d\r\n: keep-alive\n\r\n7\r\ndata: x\r\n");
    v.conn[0][2] = s_seg("2\r\n\n\n\r\n0\r\n\r\n");
    srv_start(&v);
    sse_t *s = sse_open(v.port, "/e", NULL, NULL, WAIT_MS);
    ck_assert_ptr_nonnull(s);
    sse_event_t ev;
    errno = 0;
    ck_assert_int_eq(sse_next(s, &ev, 50), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    srv_go(&v);
    /* the comment comes, then the half event; still no event */
    for (int i = 0; i < 200 && sse_comments(s) == 0; i++)
        ck_assert_int_eq(sse_next(s, &ev, 20), -1);
    ck_assert_int_eq(sse_comments(s), 1);
    ck_assert_int_eq(sse_next(s, &ev, 100), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    srv_go(&v);
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 1);
    ck_assert_str_eq(ev.data, "x");
    ck_assert_str_eq(ev.event, "message");
    ck_assert_str_eq(ev.id, "");
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 0);
    sse_close(s);
    srv_stop(&v);
}
END_TEST

/* EOF inside a chunked body is no clean end, and the open event is lost. */
START_TEST(test_truncated_chunked)
{
    srv_t v = {.n_conns = 1, .close_after = true};
    v.conn[0][0] = s_seg(s_stream_head);
    v.conn[0][1] = s_seg("b\r\ndata: 1\n\nda\r\n5\r\nta: 2");
    srv_start(&v);
    sse_t *s = sse_open(v.port, "/e", NULL, NULL, WAIT_MS);
    ck_assert_ptr_nonnull(s);
    srv_go(&v);
    sse_event_t ev;
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 1);
    ck_assert_str_eq(ev.data, "1");
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), -1);
    ck_assert_int_eq(errno, ECONNRESET);
    ck_assert_int_eq(sse_next(s, &ev, 10), -1);
    ck_assert_int_eq(errno, ECONNRESET);
    sse_close(s);
    srv_stop(&v);
}
END_TEST

/* A close-delimited stream that ends inside an event: the end is clean,
 * the unfinished event is dropped (as the standard says). The block with an
 * id and no data dispatches nothing but sets the last event ID. */
START_TEST(test_eof_drops_unfinished_event)
{
    srv_t v = {.n_conns = 1, .close_after = true};
    v.conn[0][0] = s_seg(s_close_head);
    v.conn[0][1] = s_seg("data: 1\n\nid: 6\n\nid: 8\ndata: 2\n");
    srv_start(&v);
    sse_t *s = sse_open(v.port, "/e", NULL, NULL, WAIT_MS);
    ck_assert_ptr_nonnull(s);
    srv_go(&v);
    sse_event_t ev;
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 1);
    ck_assert_str_eq(ev.data, "1");
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 0);
    ck_assert_str_eq(sse_last_event_id(s), "6");
    sse_close(s);
    srv_stop(&v);
}
END_TEST

/* A stream with a Content-Length ends with it; EOF before it is no end. */
START_TEST(test_content_length_stream)
{
    for (int cut = 0; cut < 2; cut++) {
        srv_t v = {.n_conns = 1, .close_after = true, .seed = 4, .max_piece = 3};
        /* "data: 1\n\n" is 9 bytes; the cut answer promises 30 */
        v.conn[0][0] = s_seg(cut ? "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                   "Content-Length: 30\r\n\r\ndata: 1\n\n"
                                 : "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                   "Content-Length: 9\r\n\r\ndata: 1\n\ndata: not body\n\n");
        srv_start(&v);
        sse_t *s = sse_open(v.port, "/e", NULL, NULL, WAIT_MS);
        ck_assert_ptr_nonnull(s);
        sse_event_t ev;
        ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 1);
        ck_assert_str_eq(ev.data, "1");
        if (cut) {
            ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), -1);
            ck_assert_int_eq(errno, ECONNRESET);
        } else {
            ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 0);
        }
        sse_close(s);
        srv_stop(&v);
    }
}
END_TEST

/* Thousands of small events in few reads, in order: what a fast server
 * sends when the reader was slow. */
START_TEST(test_many_events)
{
    enum { N = 5000 };
    char *body = malloc(N * 64);
    ck_assert_ptr_nonnull(body);
    size_t at = 0;
    for (int i = 0; i < N; i++)
        at += (size_t)sprintf(body + at, "id: %d\nevent: progress\ndata: {\"step\":%d}\n\n", i, i);
    unsigned seed = 8;
    size_t len;
    char *chunked = s_chunked(body, at, &seed, 5000, &len);
    srv_t v = {.n_conns = 1, .seed = 6, .max_piece = 20000};
    v.conn[0][0] = s_seg(s_stream_head);
    v.conn[0][1] = (seg_t){chunked, len};
    srv_start(&v);
    sse_t *s = sse_open(v.port, "/api/events", NULL, NULL, WAIT_MS);
    ck_assert_ptr_nonnull(s);
    srv_go(&v);
    for (int i = 0; i < N; i++) {
        sse_event_t ev;
        ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 1);
        char want[64];
        snprintf(want, sizeof want, "{\"step\":%d}", i);
        ck_assert_str_eq(ev.data, want);
        ck_assert_int_eq(atoi(ev.id), i);
    }
    sse_event_t ev;
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 0);
    sse_close(s);
    srv_stop(&v);
    free(chunked);
    free(body);
}
END_TEST

START_TEST(test_malformed_chunk)
{
    srv_t v = {.n_conns = 1, .close_after = false};
    v.conn[0][0] = s_seg(s_stream_head);
    v.conn[0][1] = s_seg("zz\r\ndata: 1\n\n\r\n");
    srv_start(&v);
    sse_t *s = sse_open(v.port, "/e", NULL, NULL, WAIT_MS);
    ck_assert_ptr_nonnull(s);
    srv_go(&v);
    sse_event_t ev;
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), -1);
    ck_assert_int_eq(errno, EPROTO);
    sse_close(s);
    srv_stop(&v);
}
END_TEST

START_TEST(test_connect_refused_is_null)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd); /* bound, never listening: nothing there now */
    errno = 0;
    ck_assert_ptr_null(sse_open(ntohs(a.sin_port), "/e", NULL, NULL, WAIT_MS));
    ck_assert_int_eq(errno, ECONNREFUSED);
}
END_TEST

/* A head that never comes: not NULL, status 0, and a timeout. */
START_TEST(test_no_head_in_time)
{
    srv_t v = {.n_conns = 1};
    v.conn[0][0] = s_seg("HTTP/1.1 200 OK\r\n");
    v.conn[0][1] = s_seg("Content-Type: text/event-stream\r\n\r\ndata: late\n\n");
    srv_start(&v);
    sse_t *s = sse_open(v.port, "/e", NULL, NULL, 100);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(sse_status(s), 0);
    srv_go(&v);
    sse_event_t ev;
    ck_assert_int_eq(sse_next(s, &ev, WAIT_MS), 1); /* the head came later */
    ck_assert_int_eq(sse_status(s), 200);
    ck_assert_str_eq(ev.data, "late");
    sse_close(s);
    srv_stop(&v);
}
END_TEST

/* The small receive buffer is set before connect, for a test that stops
 * reading; the socket is the caller's to poll. */
START_TEST(test_rcvbuf_and_fd)
{
    srv_t v = {.n_conns = 1};
    v.conn[0][0] = s_seg(s_stream_head);
    srv_start(&v);
    sse_opts_t o = {.rcvbuf = 4096, .timeout_ms = WAIT_MS};
    sse_t *s = sse_open_opts(v.port, "/e", &o);
    ck_assert_ptr_nonnull(s);
    int got = 0;
    socklen_t len = sizeof got;
    ck_assert_int_eq(getsockopt(sse_fd(s), SOL_SOCKET, SO_RCVBUF, &got, &len), 0);
    ck_assert_int_le(got, 2 * 4096 + 1024); /* Linux doubles what it was asked */
    sse_set_rcvbuf(s, 8192);
    ck_assert_int_eq(sse_status(s), 200);
    sse_close(s);
    srv_stop(&v);
}
END_TEST

/* --------------------------------------------- the real EventSource (JS) */

static const char s_js_body[] = ": keep-alive\n\n"
                                "id: 1\nevent: snapshot\ndata: {\"status\":\"running\"}\n\n"
                                "id: 2\nevent: progress\ndata: {\"step\":3}\n\n"
                                "id: 3\nevent: end\ndata: {\"status\":\"succeeded\"}\n\n";

static char *s_url(const srv_t *v, const char *path)
{
    char *url;
    ck_assert_int_gt(asprintf(&url, "http://127.0.0.1:%d%s", v->port, path), 0);
    return url;
}

START_TEST(test_js_reads_a_stream)
{
    if (!js_available()) {
        printf("SKIP: no IMAGEJOBS_JS_DIR (cmd/imagejobs-local test)\n");
        return;
    }
    unsigned seed = 11;
    size_t len;
    char *chunked = s_chunked(s_js_body, sizeof s_js_body - 1, &seed, 9, &len);
    srv_t v = {.n_conns = 1, .seed = 2, .max_piece = 5, .max_delay_us = 300};
    v.conn[0][0] = s_seg(s_stream_head);
    v.conn[0][1] = (seg_t){chunked, len};
    srv_start(&v);
    srv_go(&v);
    char *url = s_url(&v, "/api/jobs/x/events");
    char *out = NULL;
    int rc = js_sse_watch(url, "7", NULL, WAIT_MS, &out);
    ck_assert_msg(rc == 0, "sse-watch exited %d; printed: %s", rc, out);
    ck_assert_str_eq(out, "{\"type\":\"snapshot\",\"id\":\"1\",\"data\":{\"status\":\"running\"}}\n"
                          "{\"type\":\"progress\",\"id\":\"2\",\"data\":{\"step\":3}}\n"
                          "{\"type\":\"end\",\"id\":\"3\",\"data\":{\"status\":\"succeeded\"}}\n");
    srv_stop(&v);
    ck_assert_ptr_nonnull(strcasestr(v.request[0], "\r\nlast-event-id: 7\r\n"));
    ck_assert_ptr_nonnull(strcasestr(v.request[0], "\r\naccept: text/event-stream\r\n"));
    free(out);
    free(url);
    free(chunked);
}
END_TEST

/* A dropped connection: EventSource comes back with the last id it saw. */
START_TEST(test_js_reconnects_with_last_event_id)
{
    if (!js_available()) {
        printf("SKIP: no IMAGEJOBS_JS_DIR (cmd/imagejobs-local test)\n");
        return;
    }
    srv_t v = {.n_conns = 2, .close_after = true};
    v.conn[0][0] = s_seg(s_close_head);
    v.conn[0][1] = s_seg("retry: 50\nid: 1\nevent: snapshot\ndata: {}\n\n");
    v.conn[1][0] = s_seg(s_close_head);
    v.conn[1][1] = s_seg("id: 2\nevent: end\ndata: {}\n\n");
    srv_start(&v);
    srv_go(&v); /* the go for each connection's second segment */
    srv_go(&v);
    char *url = s_url(&v, "/api/jobs/x/events");
    char *out = NULL;
    int rc = js_sse_watch(url, NULL, "end", WAIT_MS, &out);
    ck_assert_msg(rc == 0, "sse-watch exited %d; printed: %s", rc, out);
    ck_assert_str_eq(out, "{\"type\":\"snapshot\",\"id\":\"1\",\"data\":{}}\n"
                          "{\"type\":\"end\",\"id\":\"2\",\"data\":{}}\n");
    srv_stop(&v);
    ck_assert_int_eq(v.served, 2);
    ck_assert_ptr_null(strcasestr(v.request[0], "last-event-id"));
    ck_assert_ptr_nonnull(strcasestr(v.request[1], "\r\nlast-event-id: 1\r\n"));
    free(out);
    free(url);
}
END_TEST

START_TEST(test_js_timeout_and_http_error)
{
    if (!js_available()) {
        printf("SKIP: no IMAGEJOBS_JS_DIR (cmd/imagejobs-local test)\n");
        return;
    }
    /* a stream that only keeps alive: exit 1 at the timeout */
    srv_t v = {.n_conns = 1};
    v.conn[0][0] = s_seg("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         "Transfer-Encoding: chunked\r\n\r\ne\r\n: keep-alive\n\n\r\n");
    srv_start(&v);
    char *url = s_url(&v, "/api/events");
    char *out = NULL;
    ck_assert_int_eq(js_sse_watch(url, NULL, NULL, 500, &out), 1);
    ck_assert_str_eq(out, "");
    free(out);
    free(url);
    srv_stop(&v);

    /* a 503: EventSource gives up at once, exit 1 */
    srv_t w = {.n_conns = 1, .close_after = true};
    w.conn[0][0] = s_seg("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                         "Content-Length: 2\r\n\r\n{}");
    srv_start(&w);
    url = s_url(&w, "/api/events");
    double t0 = (double)time(NULL);
    ck_assert_int_eq(js_sse_watch(url, NULL, NULL, WAIT_MS, &out), 1);
    ck_assert_double_lt((double)time(NULL) - t0, WAIT_MS / 1000.0);
    free(out);
    free(url);
    srv_stop(&w);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("sse_client");
    TCase *tc = tcase_create("parser");
    tcase_add_test(tc, test_chunked_random_splits);
    tcase_add_test(tc, test_close_delimited);
    tcase_add_test(tc, test_crlf_split_across_chunks);
    tcase_add_test(tc, test_large_data_line);
    tcase_add_test(tc, test_request_headers);
    tcase_add_test(tc, test_error_answer_body);
    tcase_add_test(tc, test_timeout_then_more);
    tcase_add_test(tc, test_truncated_chunked);
    tcase_add_test(tc, test_eof_drops_unfinished_event);
    tcase_add_test(tc, test_content_length_stream);
    tcase_add_test(tc, test_many_events);
    tcase_add_test(tc, test_malformed_chunk);
    tcase_add_test(tc, test_connect_refused_is_null);
    tcase_add_test(tc, test_no_head_in_time);
    tcase_add_test(tc, test_rcvbuf_and_fd);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    TCase *js = tcase_create("eventsource");
    tcase_add_test(js, test_js_reads_a_stream);
    tcase_add_test(js, test_js_reconnects_with_last_event_id);
    tcase_add_test(js, test_js_timeout_and_http_error);
    tcase_set_timeout(js, 120);
    suite_add_tcase(s, js);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
