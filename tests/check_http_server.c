/*
 * check_http_server.c - the HTTP server library alone (actors/http/server.h),
 * with no actor and no route: a libev loop on a thread of the test's own
 * serves a few paths, and the test thread talks to it over real sockets.
 *
 * The loop's side records what its callbacks saw (requests, a stream's end,
 * its owner told that the client left, a write refused) under a lock; the
 * test thread waits on a condition variable for what it expects, never on
 * a sleep.
 *
 * Paths served: /plain?i=N answers "plain N"; /echo answers the path and
 * the query pairs, one "key=value" a line; /stream?id=K&n=N streams N pieces
 * (s_piece) as fast as the client takes them, then ends; /half?n=N streams
 * N pieces and then neither writes nor ends; /flood writes without looking
 * at what is queued.
 */
#include "config.h"

#include "actors/http/server.h"
#include "runtime/log.h"

#include "tests/runner.h"
#include <arpa/inet.h>

#include <check.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 15000   /* generous: sanitizer builds on 2 busy cores */
#define HIGH_WATER 4096 /* the producers' own limit on what they queue */
#define LOG_MAX 64

/* ------------------------------------------------------------ the loop */

typedef struct producer producer_t;
static producer_t *s_last_producer; /* the stream s_stream() began last */

/* What the loop's callbacks saw, shared with the test thread. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int closed;       /* streams whose owner was told by the closed callback */
    int write_failed; /* streams whose owner learned it from a write's -1 */
    int blocked;      /* times a producer waited for drained */
    int drained;      /* on_drained: the last connection of a shutdown closed */
    int ended;        /* streams ended */
    size_t flooded;   /* bytes /flood had written when its write failed */
    char log[LOG_MAX][48];
    int nlog;
} s_seen = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static struct {
    pthread_t thread;
    struct ev_loop *loop;
    ev_async stop;
    ev_async shutdown;
    producer_t *parked; /* /park's stream, ended by the shutdown */
    http_server_t *srv;
    http_server_config_t cfg;
    int port;
    char err[256];
    bool ready;
} s_h;

static void s_note(int *counter, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_note(int *counter, const char *fmt, ...)
{
    pthread_mutex_lock(&s_seen.lock);
    if (counter)
        (*counter)++;
    if (fmt && s_seen.nlog < LOG_MAX) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s_seen.log[s_seen.nlog++], sizeof s_seen.log[0], fmt, ap);
        va_end(ap);
    }
    pthread_cond_broadcast(&s_seen.cond);
    pthread_mutex_unlock(&s_seen.lock);
}

/* Waits until *counter reaches want; false when WAIT_MS passed first. */
static bool s_wait_for(const int *counter, int want)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&s_seen.lock);
    int rc = 0;
    while (*counter < want && rc == 0)
        rc = pthread_cond_timedwait(&s_seen.cond, &s_seen.lock, &deadline);
    bool ok = *counter >= want;
    pthread_mutex_unlock(&s_seen.lock);
    return ok;
}

static int s_get(const int *counter)
{
    pthread_mutex_lock(&s_seen.lock);
    int v = *counter;
    pthread_mutex_unlock(&s_seen.lock);
    return v;
}

/* Piece i of stream id: 16 to 1039 bytes, every one different. 10,000 of
 * them (5 MB) are more than the kernel's socket buffers hold. */
static size_t s_piece(int id, int i, char *out)
{
    size_t len = 16 + (size_t)(i * 7919 % 1024);
    int n = snprintf(out, len + 1, "%d:%d:", id, i);
    for (size_t j = (size_t)n; j < len - 1; j++)
        out[j] = (char)('a' + (i + j) % 26);
    out[len - 1] = '\n';
    return len;
}

struct producer {
    http_exchange_t *x;
    int id, i, n;
    bool half; /* stop after n pieces without ending */
};

/* Writes pieces until its own high-water mark, then waits for drained. */
static void s_produce(producer_t *p)
{
    char piece[1100];
    while (p->i < p->n) {
        if (http_stream_queued(p->x) >= HIGH_WATER) {
            s_note(&s_seen.blocked, NULL);
            return;
        }
        size_t len = s_piece(p->id, p->i++, piece);
        if (http_stream_write(p->x, piece, len) < 0) {
            s_note(&s_seen.write_failed, "write failed %d", p->id);
            free(p);
            return;
        }
    }
    if (p->half)
        return; /* the client is to leave with the stream open */
    s_note(&s_seen.ended, "end %d", p->id);
    http_stream_end(p->x);
    free(p);
}

static void s_drained(http_exchange_t *x, void *arg)
{
    s_produce(arg);
}

static void s_closed(http_exchange_t *x, void *arg)
{
    producer_t *p = arg;
    s_note(&s_seen.closed, "closed %d", p->id);
    free(p);
}

static void s_stream(http_exchange_t *x, const http_request_t *rq, bool half)
{
    producer_t *p = calloc(1, sizeof *p);
    if (!p)
        abort(); /* not ck_assert: this is the loop's thread */
    const char *id = http_request_query(rq, "id"), *n = http_request_query(rq, "n");
    *p = (producer_t){x, id ? atoi(id) : 0, 0, n ? atoi(n) : 0, half};
    s_note(NULL, "begin %d", p->id);
    http_stream_fns_t fns = {s_closed, s_drained, p};
    if (http_stream_begin(x, 200, "text/plain", "X-Stream: yes\r\n", &fns) < 0) {
        free(p);
        return;
    }
    s_last_producer = p;
    s_produce(p);
}

static void s_flood_closed(http_exchange_t *x, void *arg)
{
    s_note(&s_seen.closed, "closed flood");
}

/* Writes 1 KiB pieces, regardless of what is queued, until refused. */
static void s_flood(http_exchange_t *x)
{
    http_stream_fns_t fns = {s_flood_closed, NULL, NULL};
    if (http_stream_begin(x, 200, "application/octet-stream", NULL, &fns) < 0)
        abort();
    char piece[1024];
    memset(piece, 'f', sizeof piece);
    size_t total = 0;
    while (total < ((size_t)256 << 20) && http_stream_write(x, piece, sizeof piece) == 0)
        total += sizeof piece;
    pthread_mutex_lock(&s_seen.lock);
    s_seen.flooded = total;
    pthread_mutex_unlock(&s_seen.lock);
    s_note(&s_seen.write_failed, "flood refused");
}

static char *s_strdup_or_die(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

static void s_on_request(http_exchange_t *x, const http_request_t *rq, void *arg)
{
    if (strcmp(rq->path, "/stream") == 0 || strcmp(rq->path, "/half") == 0
        || strcmp(rq->path, "/park") == 0) {
        bool park = rq->path[1] == 'p'; /* rq is gone once the stream begins */
        s_stream(x, rq, rq->path[1] != 's');
        if (park)
            s_h.parked = s_last_producer;
    } else if (strcmp(rq->path, "/flood") == 0) {
        s_flood(x);
    } else if (strcmp(rq->path, "/echo") == 0) {
        size_t len = strlen(rq->path) + 6;
        for (size_t i = 0; i < rq->query.count; i++)
            len += strlen(rq->query.pairs[i].key) + strlen(rq->query.pairs[i].value) + 2;
        char *body = malloc(len + 1), *w = body;
        w += sprintf(w, "path=%s\n", rq->path);
        for (size_t i = 0; i < rq->query.count; i++)
            w += sprintf(w, "%s=%s\n", rq->query.pairs[i].key, rq->query.pairs[i].value);
        http_respond(x, 200, "text/plain", NULL, &body, (size_t)(w - body));
    } else {
        const char *i = http_request_query(rq, "i");
        s_note(NULL, "plain %s", i ? i : "-");
        char text[64];
        snprintf(text, sizeof text, "plain %s", i ? i : "-");
        char *body = s_strdup_or_die(text);
        http_respond(x, 200, "text/plain", NULL, &body, strlen(text));
    }
}

/* The server's own refusals, in a format of the test's. */
static void s_on_error(http_exchange_t *x, int status, const char *message, void *arg)
{
    char text[256];
    snprintf(text, sizeof text, "<%d %s>", status, message);
    char *body = s_strdup_or_die(text);
    http_respond(x, status, "text/x-test", NULL, &body, strlen(text));
}

static void s_stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

static void s_on_drained(void *arg)
{
    s_note(&s_seen.drained, "drained");
}

/* Shuts the server down, then ends the parked stream. */
static void s_shutdown_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    s_note(NULL, http_server_shutdown(s_h.srv) ? "shutdown idle" : "shutdown busy");
    producer_t *p = s_h.parked;
    s_h.parked = NULL;
    if (p) {
        p->half = false;
        p->n++;
        s_produce(p);
    }
}

static void *s_loop_main(void *arg)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ev_async_init(&s_h.stop, s_stop_cb);
    ev_async_start(loop, &s_h.stop);
    ev_async_init(&s_h.shutdown, s_shutdown_cb);
    ev_async_start(loop, &s_h.shutdown);
    s_h.cfg.loop = loop;
    http_server_t *srv = http_server_new(&s_h.cfg, s_h.err, sizeof s_h.err);
    pthread_mutex_lock(&s_seen.lock);
    s_h.loop = loop;
    s_h.srv = srv;
    s_h.port = srv ? http_server_port(srv) : 0;
    s_h.ready = true;
    pthread_cond_broadcast(&s_seen.cond);
    pthread_mutex_unlock(&s_seen.lock);
    if (srv)
        ev_run(loop, 0);
    http_server_destroy(&srv);
    ev_loop_destroy(loop);
    return NULL;
}

/* Starts the loop thread with a server configured as cfg says. */
static void s_serve(size_t output_limit, bool own_errors)
{
    s_h.cfg = (http_server_config_t){
        .listen = "127.0.0.1:0",
        .headers = "X-Server: check\r\n",
        .stall_timeout_s = 10.,
        .keepalive_timeout_s = 60.,
        .output_limit = output_limit,
        .on_request = s_on_request,
        .on_error = own_errors ? s_on_error : NULL,
        .on_drained = s_on_drained,
    };
    s_h.ready = false;
    ck_assert_int_eq(pthread_create(&s_h.thread, NULL, s_loop_main, NULL), 0);
    pthread_mutex_lock(&s_seen.lock);
    while (!s_h.ready)
        pthread_cond_wait(&s_seen.cond, &s_seen.lock);
    pthread_mutex_unlock(&s_seen.lock);
    ck_assert_msg(s_h.srv != NULL, "server failed to start: %s", s_h.err);
}

static void s_setup(void)
{
    log_set_level(LOG_ERROR);
    s_serve(0, true);
}

static void s_teardown(void)
{
    ev_async_send(s_h.loop, &s_h.stop);
    pthread_join(s_h.thread, NULL);
}

/* ------------------------------------------------------------ the client */

typedef struct {
    int fd;
    char *buf; /* received, not yet taken */
    size_t len, cap;
} client_t;

static client_t *s_connect_rcvbuf(int rcvbuf)
{
    client_t *c = calloc(1, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(c->fd, 0);
    if (rcvbuf)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = {WAIT_MS / 1000, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s_h.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect: %s",
                  strerror(errno));
    return c;
}

static client_t *s_connect(void)
{
    return s_connect_rcvbuf(0);
}

static void s_close(client_t **cp)
{
    close((*cp)->fd);
    free((*cp)->buf);
    free(*cp);
    *cp = NULL;
}

static void s_sends(client_t *c, const char *s)
{
    size_t len = strlen(s);
    while (len) {
        ssize_t n = send(c->fd, s, len, MSG_NOSIGNAL);
        ck_assert_msg(n > 0, "send: %s", strerror(errno));
        s += n;
        len -= (size_t)n;
    }
}

/* Receives at most max more bytes; returns what recv returned. */
static ssize_t s_fill(client_t *c, size_t max)
{
    if (c->cap - c->len < max) {
        c->cap = c->len + max;
        c->buf = realloc(c->buf, c->cap);
    }
    ssize_t n = recv(c->fd, c->buf + c->len, max, 0);
    if (n > 0)
        c->len += (size_t)n;
    return n;
}

/* Takes n bytes off the front of the buffer. */
static void s_take(client_t *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Until the buffer holds needle (or n bytes when needle is NULL); returns
 * where it ends, or 0 when the connection ended first. */
static size_t s_until(client_t *c, const char *needle, size_t n, size_t step)
{
    for (;;) {
        if (needle) {
            char *at = c->len ? memmem(c->buf, c->len, needle, strlen(needle)) : NULL;
            if (at)
                return (size_t)(at - c->buf) + strlen(needle);
        } else if (c->len >= n) {
            return n;
        }
        if (s_fill(c, step) <= 0)
            return 0;
    }
}

typedef struct {
    int status;
    char head[2048];
    char *body;
    size_t body_len;
} resp_t;

static bool s_has_header(const resp_t *r, const char *line)
{
    return strcasestr(r->head, line) != NULL;
}

/* Reads one response: Content-Length, chunked (decoded) or up to the close.
 * step is the most each recv takes: a small one makes a slow reader. */
static void s_read_step(client_t *c, resp_t *r, size_t step)
{
    memset(r, 0, sizeof *r);
    size_t end = s_until(c, "\r\n\r\n", 0, step);
    ck_assert_msg(end > 0, "no response head");
    ck_assert_uint_lt(end, sizeof r->head);
    memcpy(r->head, c->buf, end);
    s_take(c, end);
    ck_assert_msg(sscanf(r->head, "HTTP/1.1 %d ", &r->status) == 1, "%s", r->head);
    size_t cap = 4096;
    r->body = malloc(cap);
    const char *cl = strcasestr(r->head, "\r\nContent-Length: ");
    if (cl) {
        size_t n = strtoul(cl + 18, NULL, 10);
        ck_assert_uint_eq(s_until(c, NULL, n, step), n);
        r->body = realloc(r->body, n + 1);
        memcpy(r->body, c->buf, n);
        r->body_len = n;
        s_take(c, n);
    } else if (s_has_header(r, "\r\nTransfer-Encoding: chunked\r\n")) {
        for (;;) {
            size_t line = s_until(c, "\r\n", 0, step);
            ck_assert_msg(line > 0, "stream cut after %zu bytes", r->body_len);
            char *stop;
            size_t n = strtoul(c->buf, &stop, 16);
            ck_assert_msg(stop == c->buf + line - 2, "bad chunk size line");
            s_take(c, line);
            ck_assert_uint_eq(s_until(c, NULL, n + 2, step), n + 2);
            ck_assert(memcmp(c->buf + n, "\r\n", 2) == 0);
            while (r->body_len + n + 1 > cap)
                r->body = realloc(r->body, cap *= 2);
            memcpy(r->body + r->body_len, c->buf, n);
            r->body_len += n;
            s_take(c, n + 2);
            if (n == 0)
                break;
        }
    } else { /* delimited by the close */
        while (s_fill(c, step) > 0)
            ;
        r->body = realloc(r->body, c->len + 1);
        memcpy(r->body, c->buf, c->len);
        r->body_len = c->len;
        s_take(c, c->len);
    }
    r->body[r->body_len] = '\0';
}

static void s_read(client_t *c, resp_t *r)
{
    s_read_step(c, r, 65536);
}

/* The body stream id of n pieces should have. */
static char *s_expected(int id, int n, size_t *len)
{
    char *all = malloc((size_t)n * 1040 + 1), piece[1100];
    *len = 0;
    for (int i = 0; i < n; i++) {
        size_t k = s_piece(id, i, piece);
        memcpy(all + *len, piece, k);
        *len += k;
    }
    all[*len] = '\0';
    return all;
}

static void s_expect_stream(const resp_t *r, int id, int n)
{
    size_t len;
    char *want = s_expected(id, n, &len);
    ck_assert_int_eq(r->status, 200);
    ck_assert_msg(s_has_header(r, "\r\nX-Server: check\r\n"), "%s", r->head);
    ck_assert_msg(s_has_header(r, "\r\nX-Stream: yes\r\n"), "%s", r->head);
    ck_assert_msg(r->body_len == len, "%zu bytes, wanted %zu", r->body_len, len);
    ck_assert_msg(memcmp(r->body, want, len) == 0, "the stream's bytes differ");
    free(want);
}

/* True once the server has closed c (what it sent first is dropped). */
static bool s_closed_by_server(client_t *c)
{
    char buf[65536];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n < 0)
            return false;
    }
}

static void s_plain_ok(int i)
{
    client_t *c = s_connect();
    char req[64];
    snprintf(req, sizeof req, "GET /plain?i=%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
    s_sends(c, req);
    resp_t r;
    s_read(c, &r);
    ck_assert_int_eq(r.status, 200);
    snprintf(req, sizeof req, "plain %d", i);
    ck_assert_str_eq(r.body, req);
    free(r.body);
    s_close(&c);
}

/* ------------------------------------------------------------ query */

START_TEST(test_query_parsing)
{
    static const struct {
        const char *raw;
        const char *pairs[12]; /* key, value, ...; NULL-ended */
    } cases[] = {
        {"limit=10&cursor=abc", {"limit", "10", "cursor", "abc", NULL}},
        {"a=1&a=2&a=", {"a", "1", "a", "2", "a", "", NULL}},
        {"q=red+fox&x=%20y%2Bz", {"q", "red fox", "x", " y+z", NULL}},
        {"flag&&b=&=v", {"flag", "", "b", "", "", "v", NULL}},
        {"e=%C3%A9t%C3%A9", {"e", "\xc3\xa9t\xc3\xa9", NULL}},
        {"bad=%zz%4&nul=%00&pct=100%", {"bad", "%zz%4", "nul", "%00", "pct", "100%", NULL}},
        {"k%3Dx=v%26w=z", {"k=x", "v&w=z", NULL}},
        {"", {NULL}},
        {"&&", {NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *raw = strdup(cases[i].raw);
        http_query_t q;
        http_query_parse(raw, &q);
        size_t n = 0;
        while (cases[i].pairs[2 * n])
            n++;
        ck_assert_msg(q.count == n, "'%s': %zu pairs, wanted %zu", cases[i].raw, q.count, n);
        for (size_t k = 0; k < n; k++) {
            ck_assert_str_eq(q.pairs[k].key, cases[i].pairs[2 * k]);
            ck_assert_str_eq(q.pairs[k].value, cases[i].pairs[2 * k + 1]);
        }
        if (n == 0)
            ck_assert_ptr_null(q.pairs);
        http_query_free(&q);
        free(raw);
    }
    char raw[] = "a=1&b=2&a=3";
    http_query_t q;
    http_query_parse(raw, &q);
    ck_assert_str_eq(http_query_get(&q, "a"), "1"); /* the first of repeated keys */
    ck_assert_str_eq(http_query_get(&q, "b"), "2");
    ck_assert_ptr_null(http_query_get(&q, "c"));
    http_query_free(&q);
}
END_TEST

START_TEST(test_query_reaches_the_request)
{
    client_t *c = s_connect();
    resp_t r;
    static const struct {
        const char *target, *want;
    } cases[] = {
        {"/echo?limit=5&tag=a+b&tag=c%2Fd#frag", "path=/echo\nlimit=5\ntag=a b\ntag=c/d\n"},
        {"/echo", "path=/echo\n"},
        {"/echo?", "path=/echo\n"},
        {"/echo#x?y=1", "path=/echo\n"},
        {"http://example.com/echo?abs=1", "path=/echo\nabs=1\n"},
        {"http://example.com/echo", "path=/echo\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char req[256];
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", cases[i].target);
        s_sends(c, req);
        s_read(c, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_msg(strcmp(r.body, cases[i].want) == 0, "%s: %s", cases[i].target, r.body);
        free(r.body);
    }
    s_close(&c);
}
END_TEST

/* ------------------------------------------------------------ streams */

START_TEST(test_stream_of_10000_pieces_to_a_slow_reader)
{
    enum { N = 10000 };
    /* a small receive window: the server must queue and wait for EV_WRITE */
    client_t *c = s_connect_rcvbuf(4096);
    s_sends(c, "GET /stream?id=1&n=10000 HTTP/1.1\r\nHost: x\r\n\r\n");
    /* the client reads nothing until the producer has had to wait */
    ck_assert_msg(s_wait_for(&s_seen.blocked, 1), "the stream never filled the socket (ended %d)",
                  s_get(&s_seen.ended));
    resp_t r;
    s_read_step(c, &r, 512); /* and then a little at a time */
    s_expect_stream(&r, 1, N);
    ck_assert_int_eq(s_get(&s_seen.ended), 1);
    ck_assert_int_eq(s_get(&s_seen.closed), 0);
    ck_assert_int_eq(s_get(&s_seen.write_failed), 0);
    free(r.body);
    /* the connection serves on */
    s_sends(c, "GET /plain?i=7 HTTP/1.1\r\nHost: x\r\n\r\n");
    s_read(c, &r);
    ck_assert_str_eq(r.body, "plain 7");
    free(r.body);
    s_close(&c);
}
END_TEST

START_TEST(test_stream_abandoned_halfway)
{
    /* the producer has written its half and waits: the client's departure
     * reaches it only through the closed callback */
    client_t *c = s_connect();
    s_sends(c, "GET /half?id=2&n=5000 HTTP/1.1\r\nHost: x\r\n\r\n");
    char last[1100];
    last[s_piece(2, 4999, last)] = '\0';
    ck_assert_uint_gt(s_until(c, last, 0, 65536), 0);
    ck_assert_int_eq(s_get(&s_seen.closed), 0);
    s_close(&c);
    ck_assert_msg(s_wait_for(&s_seen.closed, 1), "the owner was not told the client left");

    /* gone while the producer is writing: told exactly once, one way or
     * the other */
    c = s_connect_rcvbuf(4096);
    s_sends(c, "GET /stream?id=3&n=1000000 HTTP/1.1\r\nHost: x\r\n\r\n");
    resp_t r;
    ck_assert_uint_gt(s_until(c, "\r\n\r\n", 0, 512), 0);
    ck_assert_uint_gt(s_until(c, NULL, c->len + 20000, 512), 0);
    struct linger lg = {1, 0}; /* reset, as a killed browser tab does */
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    s_close(&c);
    pthread_mutex_lock(&s_seen.lock);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_MS / 1000;
    while (s_seen.closed + s_seen.write_failed < 2
           && pthread_cond_timedwait(&s_seen.cond, &s_seen.lock, &deadline) == 0)
        ;
    int told = s_seen.closed + s_seen.write_failed;
    pthread_mutex_unlock(&s_seen.lock);
    ck_assert_int_eq(told, 2);
    ck_assert_int_eq(s_get(&s_seen.ended), 0);

    /* the server is fine and serves others */
    s_plain_ok(1);
    c = s_connect();
    s_sends(c, "GET /stream?id=4&n=300 HTTP/1.1\r\nHost: x\r\n\r\n");
    s_read(c, &r);
    s_expect_stream(&r, 4, 300);
    free(r.body);
    s_close(&c);
    ck_assert_int_eq(s_get(&s_seen.closed) + s_get(&s_seen.write_failed), 2);
}
END_TEST

START_TEST(test_output_limit_closes_a_reader_that_never_reads)
{
    s_teardown();
    s_serve(64 * 1024, true);
    client_t *c = s_connect_rcvbuf(4096);
    s_sends(c, "GET /flood HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_msg(s_wait_for(&s_seen.write_failed, 1), "the flood was never refused");
    pthread_mutex_lock(&s_seen.lock);
    size_t flooded = s_seen.flooded;
    pthread_mutex_unlock(&s_seen.lock);
    /* refused once the kernel's buffers and our 64 KiB were full */
    ck_assert_msg(flooded < ((size_t)256 << 20), "wrote %zu bytes", flooded);
    ck_assert(s_closed_by_server(c));
    s_close(&c);
    /* the owner learned it from the write, and only so */
    ck_assert_int_eq(s_get(&s_seen.closed), 0);
    s_plain_ok(2);
}
END_TEST

START_TEST(test_pipelined_requests_behind_a_stream_keep_their_order)
{
    client_t *c = s_connect();
    s_sends(c, "GET /plain?i=1 HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /stream?id=5&n=3000 HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /plain?i=2 HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /stream?id=6&n=10 HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /plain?i=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    resp_t r;
    s_read(c, &r);
    ck_assert_str_eq(r.body, "plain 1");
    free(r.body);
    s_read(c, &r);
    s_expect_stream(&r, 5, 3000);
    free(r.body);
    s_read(c, &r);
    ck_assert_str_eq(r.body, "plain 2");
    free(r.body);
    s_read(c, &r);
    s_expect_stream(&r, 6, 10);
    free(r.body);
    s_read(c, &r);
    ck_assert_str_eq(r.body, "plain 3");
    ck_assert(s_has_header(&r, "\r\nConnection: close\r\n"));
    free(r.body);
    ck_assert(s_closed_by_server(c));
    s_close(&c);
    /* each request reached the loop only after the one before was answered */
    static const char *const order[] = {"plain 1", "begin 5", "end 5",  "plain 2",
                                        "begin 6", "end 6",   "plain 3"};
    pthread_mutex_lock(&s_seen.lock);
    ck_assert_int_eq(s_seen.nlog, 7);
    for (int i = 0; i < 7; i++)
        ck_assert_str_eq(s_seen.log[i], order[i]);
    pthread_mutex_unlock(&s_seen.lock);
}
END_TEST

START_TEST(test_http10_and_head_streams)
{
    /* HTTP/1.0: no chunks, the close ends the body */
    client_t *c = s_connect();
    s_sends(c, "GET /stream?id=7&n=500 HTTP/1.0\r\n\r\n");
    resp_t r;
    s_read(c, &r);
    ck_assert(!s_has_header(&r, "Transfer-Encoding"));
    ck_assert(s_has_header(&r, "\r\nConnection: close\r\n"));
    s_expect_stream(&r, 7, 500);
    free(r.body);
    s_close(&c);

    /* HEAD: the head of the stream, no body, and the connection goes on */
    c = s_connect();
    s_sends(
        c,
        "HEAD /stream?id=8&n=50 HTTP/1.1\r\nHost: x\r\n\r\nGET /plain?i=4 HTTP/1.1\r\nHost: x\r\n\r\n");
    size_t end = s_until(c, "\r\n\r\n", 0, 65536);
    ck_assert_uint_gt(end, 0);
    ck_assert(memmem(c->buf, end, "Transfer-Encoding: chunked", 26) != NULL);
    s_take(c, end);
    s_read(c, &r);
    ck_assert_str_eq(r.body, "plain 4");
    free(r.body);
    s_close(&c);
}
END_TEST

START_TEST(test_shutdown_lets_streams_finish_then_closes)
{
    /* a stream that began before the shutdown promised keep-alive: once
     * it has ended, its connection is idle and closes like the others */
    client_t *c = s_connect();
    s_sends(c, "GET /park?id=9&n=3 HTTP/1.1\r\nHost: x\r\n\r\n");
    char last[1100];
    last[s_piece(9, 2, last)] = '\0';
    ck_assert_uint_gt(s_until(c, last, 0, 65536), 0);
    client_t *idle = s_connect();
    s_sends(idle, "GET /plain?i=5 HTTP/1.1\r\nHost: x\r\n\r\n");
    resp_t r;
    s_read(idle, &r);
    free(r.body);

    ev_async_send(s_h.loop, &s_h.shutdown);
    ck_assert(s_closed_by_server(idle));
    s_close(&idle);
    s_read(c, &r);
    ck_assert(!s_has_header(&r, "Connection: close"));
    s_expect_stream(&r, 9, 4);
    free(r.body);
    ck_assert_msg(s_closed_by_server(c), "the connection stayed open after its stream");
    s_close(&c);
    ck_assert(s_wait_for(&s_seen.drained, 1));
    pthread_mutex_lock(&s_seen.lock);
    ck_assert_str_eq(s_seen.log[s_seen.nlog - 3], "shutdown busy");
    pthread_mutex_unlock(&s_seen.lock);
}
END_TEST

/* ------------------------------------------------------------ own answers */

START_TEST(test_own_refusals_use_the_users_format)
{
    char *pad = malloc(20001);
    memset(pad, 'a', 20000);
    pad[20000] = '\0';
    char *raw;
    ck_assert_int_gt(asprintf(&raw, "GET /plain HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", pad), 0);
    client_t *c = s_connect();
    s_sends(c, raw);
    resp_t r;
    s_read(c, &r);
    ck_assert_int_eq(r.status, 431);
    ck_assert_str_eq(r.body, "<431 request line and headers exceed 16 KiB>");
    ck_assert(s_has_header(&r, "\r\nX-Server: check\r\n"));
    ck_assert(s_has_header(&r, "\r\nContent-Type: text/x-test\r\n"));
    ck_assert(s_has_header(&r, "\r\nConnection: close\r\n"));
    free(r.body);
    ck_assert(s_closed_by_server(c));
    s_close(&c);

    /* without on_error: the message as text */
    s_teardown();
    s_serve(0, false);
    c = s_connect();
    s_sends(c, "POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n");
    s_read(c, &r);
    ck_assert_int_eq(r.status, 413);
    ck_assert_str_eq(r.body, "request body exceeds 1 MiB\n");
    ck_assert(s_has_header(&r, "\r\nContent-Type: text/plain; charset=utf-8\r\n"));
    free(r.body);
    s_close(&c);
    c = s_connect();
    s_sends(c, "GET /plain HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
    s_read(c, &r);
    ck_assert_int_eq(r.status, 400);
    ck_assert_msg(strncmp(r.body, "malformed HTTP request", 22) == 0, "%s", r.body);
    free(r.body);
    s_close(&c);
    free(raw);
    free(pad);
}
END_TEST

/* ------------------------------------------------------------ strict framing */

/* The requests served so far ("plain N" notes). */
static int s_plain_served(void)
{
    pthread_mutex_lock(&s_seen.lock);
    int n = 0;
    for (int i = 0; i < s_seen.nlog; i++)
        n += strncmp(s_seen.log[i], "plain ", 6) == 0;
    pthread_mutex_unlock(&s_seen.lock);
    return n;
}

/* raw, sent on a fresh connection, is answered status in the user's error
 * format with Connection: close, and the connection closes; no request
 * (neither raw's nor one smuggled after it) reaches on_request. */
static void s_refused(const char *raw, size_t len, int status)
{
    int served = s_plain_served();
    client_t *c = s_connect();
    while (len) {
        ssize_t n = send(c->fd, raw, len, MSG_NOSIGNAL);
        ck_assert_msg(n > 0, "send: %s", strerror(errno));
        raw += n;
        len -= (size_t)n;
    }
    resp_t r;
    s_read(c, &r);
    ck_assert_msg(r.status == status, "status %d, wanted %d: %s", r.status, status, r.body);
    char want[16];
    snprintf(want, sizeof want, "<%d ", status);
    ck_assert_msg(strncmp(r.body, want, strlen(want)) == 0, "not the user's format: %s", r.body);
    ck_assert_msg(s_has_header(&r, "\r\nContent-Type: text/x-test\r\n"), "%s", r.head);
    ck_assert_msg(s_has_header(&r, "\r\nConnection: close\r\n"), "%s", r.head);
    free(r.body);
    ck_assert_msg(s_closed_by_server(c), "the connection stayed open");
    s_close(&c);
    ck_assert_int_eq(s_plain_served(), served);
}

#define S_REFUSED(lit, status) s_refused(lit, sizeof lit - 1, status)

/* What the requests below would smuggle if their framing were honoured. */
#define SMUGGLED "GET /plain?i=smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

START_TEST(test_space_before_colon_is_400)
{
    S_REFUSED("POST /plain?i=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"
              "0\r\n\r\n" SMUGGLED,
              400);
    S_REFUSED("POST /plain?i=1 HTTP/1.1\r\nHost: x\r\nContent-Length : 2\r\n\r\nab" SMUGGLED, 400);
    s_plain_ok(1);
}
END_TEST

START_TEST(test_obs_fold_is_400)
{
    S_REFUSED("POST /plain?i=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
              "0\r\n\r\n" SMUGGLED,
              400);
    S_REFUSED("GET /plain?i=1 HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\tc\r\n\r\n", 400);
    /* whitespace before the first header line is a fold of the request line */
    S_REFUSED("GET /plain?i=1 HTTP/1.1\r\nHost: x\r\n Host: x\r\n\r\n", 400);
    s_plain_ok(2);
}
END_TEST

START_TEST(test_chunk_data_without_crlf_is_400)
{
    S_REFUSED("POST /plain?i=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              "2\r\nabXX0\r\n\r\n" SMUGGLED,
              400);
    S_REFUSED("POST /plain?i=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              "2\r\nab0\r\n\r\n" SMUGGLED,
              400);
    s_plain_ok(3);
}
END_TEST

START_TEST(test_unknown_transfer_coding_is_501)
{
    S_REFUSED("POST /plain?i=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
              "0\r\n\r\n" SMUGGLED,
              501);
    /* the same list over two header lines */
    S_REFUSED("POST /plain?i=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
              "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" SMUGGLED,
              501);
    /* chunked not last: the length cannot be known (RFC 9112 6.3) */
    S_REFUSED("POST /plain?i=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
              "0\r\n\r\n" SMUGGLED,
              400);
    S_REFUSED("POST /plain?i=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
    /* HTTP/1.0 has no transfer codings: its framing is faulty (RFC 9112 6.1) */
    S_REFUSED("POST /plain?i=1 HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    s_plain_ok(4);
}
END_TEST

START_TEST(test_missing_or_repeated_host_is_400)
{
    S_REFUSED("GET /plain?i=1 HTTP/1.1\r\n\r\n", 400);
    S_REFUSED("GET /plain?i=1 HTTP/1.1\r\nX-Host: x\r\n\r\n", 400);
    S_REFUSED("GET /plain?i=1 HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400);
    S_REFUSED("GET /plain?i=1 HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n", 400);
    s_plain_ok(5);
}
END_TEST

START_TEST(test_other_versions_are_505)
{
    S_REFUSED("GET /plain?i=1 HTTP/2.0\r\nHost: x\r\n\r\n", 505);
    S_REFUSED("GET /plain?i=1 HTTP/3.0\r\nHost: x\r\n\r\n", 505);
    S_REFUSED("GET /plain?i=1 HTTP/9.9\r\nHost: x\r\n\r\n", 505);
    S_REFUSED("GET /plain?i=1 HTTP/1.2\r\nHost: x\r\n\r\n", 505);
    S_REFUSED("GET /plain?i=1 HTTP/0.9\r\nHost: x\r\n\r\n", 505);
    S_REFUSED("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505);
    /* not a version at all */
    S_REFUSED("GET /plain?i=1 HTTP/1.x\r\nHost: x\r\n\r\n", 400);
    S_REFUSED("GET /plain?i=1 HTTP/11.1\r\nHost: x\r\n\r\n", 400);
    s_plain_ok(6);
}
END_TEST

START_TEST(test_repeated_content_type_or_length_is_400)
{
    S_REFUSED("POST /plain?i=1 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
              "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
              400);
    S_REFUSED("POST /plain?i=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
              "Content-Length: 2\r\n\r\nab",
              400);
    s_plain_ok(7);
}
END_TEST

START_TEST(test_tab_in_url_is_400)
{
    S_REFUSED("GET /plain?i=1\tx HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    S_REFUSED("GET /pla\tin?i=1 HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    s_plain_ok(8);
}
END_TEST

START_TEST(test_http09_line_and_empty_line_are_400)
{
    S_REFUSED("GET /\r\n", 400);
    S_REFUSED("GET /plain?i=1\r\n\r\n", 400);
    S_REFUSED("\r\n", 400);
    /* an empty line where the next request line belongs */
    client_t *c = s_connect();
    s_sends(c, "GET /plain?i=9 HTTP/1.1\r\nHost: x\r\n\r\n\r\n");
    resp_t r;
    s_read(c, &r);
    ck_assert_str_eq(r.body, "plain 9");
    free(r.body);
    s_read(c, &r);
    ck_assert_int_eq(r.status, 400);
    ck_assert(s_has_header(&r, "\r\nConnection: close\r\n"));
    free(r.body);
    ck_assert(s_closed_by_server(c));
    s_close(&c);
    s_plain_ok(10);
}
END_TEST

/* getsockname() fails in this thread from now on (seccomp): -1 if the
 * kernel refuses the filter. */
static int s_fail_getsockname(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getsockname, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOBUFS & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof *f, .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

START_TEST(test_getsockname_failure_is_reported)
{
    /* the port is the listener's only address for port 0: a server that
     * cannot learn it must not start with a made-up one */
    log_set_level(LOG_ERROR);
    ck_assert_msg(s_fail_getsockname() == 0, "seccomp: %s", strerror(errno));
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    http_server_config_t cfg = {
        .loop = loop,
        .listen = "127.0.0.1:0",
        .on_request = s_on_request,
    };
    char err[256] = "";
    http_server_t *srv = http_server_new(&cfg, err, sizeof err);
    ck_assert_msg(srv == NULL, "started on port %d", srv ? http_server_port(srv) : 0);
    ck_assert_msg(strstr(err, "cannot listen on 127.0.0.1:0") && strstr(err, "getsockname"), "%s",
                  err);
    ev_loop_destroy(loop);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("http_server");
    TCase *tc = tcase_create("query");
    tcase_add_test(tc, test_query_parsing);
    tcase_add_test(tc, test_getsockname_failure_is_reported);
    suite_add_tcase(s, tc);

    tc = tcase_create("server");
    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_query_reaches_the_request);
    tcase_add_test(tc, test_stream_of_10000_pieces_to_a_slow_reader);
    tcase_add_test(tc, test_stream_abandoned_halfway);
    tcase_add_test(tc, test_output_limit_closes_a_reader_that_never_reads);
    tcase_add_test(tc, test_pipelined_requests_behind_a_stream_keep_their_order);
    tcase_add_test(tc, test_http10_and_head_streams);
    tcase_add_test(tc, test_shutdown_lets_streams_finish_then_closes);
    tcase_add_test(tc, test_own_refusals_use_the_users_format);
    tcase_add_test(tc, test_space_before_colon_is_400);
    tcase_add_test(tc, test_obs_fold_is_400);
    tcase_add_test(tc, test_chunk_data_without_crlf_is_400);
    tcase_add_test(tc, test_unknown_transfer_coding_is_501);
    tcase_add_test(tc, test_missing_or_repeated_host_is_400);
    tcase_add_test(tc, test_other_versions_are_505);
    tcase_add_test(tc, test_repeated_content_type_or_length_is_400);
    tcase_add_test(tc, test_tab_in_url_is_400);
    tcase_add_test(tc, test_http09_line_and_empty_line_are_400);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
