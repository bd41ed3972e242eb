/*
 * http.c - the HTTP actor's connection layer: the listener, connections,
 * parsing with http-parser, limits, timeouts and writing responses. The
 * routes are in http_api.c.
 *
 * One request per connection is served at a time. When http-parser
 * completes a message we pause it and hand the request to the routes; the
 * next pipelined request is parsed only once the response has been written
 * in full. Responses thus leave in request order though store replies come
 * back whenever they do, and a client that pipelines faster than it reads
 * is held back by TCP, not buffered by us.
 *
 * Idle connections are cheap: one conn_t and nothing else. Reads go into
 * one buffer shared by the actor; only the bytes that arrive past a
 * complete request are copied into the connection (pend), and a request's
 * own state (URL, body) is allocated at its first byte and freed with its
 * response.
 *
 * Closing a connection releases its socket and buffers at once, but the
 * struct is freed only at the end of the event callback that closed it,
 * and only once no store request still refers to it: nothing is freed under
 * the feet of the code that is running (Redis ae's deferred free).
 */
#include "config.h"

#include "actors/http.h"

#include "actors/http_api.h"
#include "runtime/clock.h"
#include "runtime/log.h"

#include <assert.h>
#include <errno.h>
#include <http_parser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define HEAD_LIMIT (16u * 1024)       /* request line + headers: 431 past it */
#define BODY_LIMIT (1024u * 1024)     /* request body: 413 past it */
#define READ_BUF (64u * 1024)         /* the actor's one read buffer */
#define LINGER_S 2.0                  /* after a last response, drain input this long */
#define LINGER_BYTES (8u * 1024 * 1024) /* ... or this much, then close */
#define ACCEPT_PAUSE_S 0.25           /* out of descriptors: accept again after this */
#define ACCEPT_BATCH 512              /* accepts per wake-up, so clients get a turn */

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

typedef enum { HDR_OTHER, HDR_CONTENT_TYPE, HDR_EXPECT } header_t;

/* The request being read or served: exists from its first byte to its
 * response. */
typedef struct {
    http_request_t view; /* what the routes see, filled in when complete */
    buf_t url;
    buf_t body;
    char field[16]; /* the header name being read; longer ones aren't ours */
    uint8_t field_len;
    bool field_long;
    bool in_value; /* the last header callback was for a value */
    header_t header;
    char ctype[128];
    uint8_t ctype_len;
    bool has_ctype, ctype_long;
    char expect[16];
    uint8_t expect_len;
    bool expect_long;
    bool keep_alive;
    bool http10;
} req_t;

/* A response being written: head and body, written with one sendmsg. */
typedef struct {
    char *head;
    size_t head_len;
    char *body;
    size_t body_len;
    size_t off; /* bytes of head + body written */
} out_t;

typedef enum {
    CONN_READING,   /* waiting for, or reading, a request */
    CONN_SERVING,   /* a request is with the routes */
    CONN_WRITING,   /* its response is being written */
    CONN_LINGERING, /* the last response is out, write side shut: draining */
    CONN_CLOSED     /* socket closed; the struct waits for its replies */
} conn_state_t;

typedef struct http_server http_server_t;

struct http_conn {
    ev_io io;       /* EV_READ while reading or lingering, EV_WRITE while writing */
    ev_timer timer; /* keep-alive, stall or linger deadline */
    http_parser parser;
    http_server_t *srv;
    struct http_conn *prev, *next; /* the server's open connections */
    req_t *req;
    out_t *out;
    char *pend; /* input read past the request being served */
    uint32_t pend_off, pend_len;
    uint32_t lingered;
    uint16_t pending; /* http_ask()s not answered yet */
    uint8_t state;    /* conn_state_t */
    bool driving;     /* inside s_conn_drive() or s_conn_input() */
    bool in_body;
    bool close_after;
    int16_t limit; /* why a callback stopped the parser: 413, or -1 to just close */
};

typedef struct http_conn conn_t;

struct http_server {
    actor_t *self;
    http_config_t cfg; /* strings owned */
    int port;
    ev_io listener;
    ev_timer accept_pause;
    bool accept_failing; /* out of descriptors: logged once per episode */
    bool stopping; /* SHUTDOWN received: no new connections, no keep-alive */
    conn_t *conns;
    size_t nconns;
    char *rbuf;
};

static void s_conn_drive(conn_t *c);
static void s_conn_flush(conn_t *c);

/* ------------------------------------------------------------ helpers */


static void s_buf_add(buf_t *b, const char *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
            abort();
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

static void s_buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_buf_printf(buf_t *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof line) {
        s_buf_add(b, line, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big)
        abort();
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s_buf_add(b, big, (size_t)n);
    free(big);
}

static const char *s_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return status < 400 ? "OK" : status < 500 ? "Bad Request" : "Server Error";
    }
}

static struct ev_loop *s_loop(conn_t *c)
{
    return actor_loop(c->srv->self);
}

/* (Re)starts the connection's one timer. */
static void s_timer(conn_t *c, double seconds)
{
    c->timer.repeat = seconds;
    ev_timer_again(s_loop(c), &c->timer);
}

/* Watches the socket for events (EV_READ or EV_WRITE), or for nothing. */
static void s_conn_watch(conn_t *c, int events)
{
    struct ev_loop *loop = s_loop(c);
    if (ev_is_active(&c->io) && (c->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(loop, &c->io);
    if (events) {
        ev_io_modify(&c->io, events);
        ev_io_start(loop, &c->io);
    }
}

static void s_req_free(conn_t *c)
{
    if (!c->req)
        return;
    free(c->req->url.data);
    free(c->req->body.data);
    free(c->req);
    c->req = NULL;
    c->in_body = false;
}

static void s_out_free(conn_t *c)
{
    if (!c->out)
        return;
    free(c->out->head);
    free(c->out->body);
    free(c->out);
    c->out = NULL;
}

static void s_pend_free(conn_t *c)
{
    free(c->pend);
    c->pend = NULL;
    c->pend_off = c->pend_len = 0;
}

/* Keeps len bytes read past a complete request for later. */
static void s_pend_add(conn_t *c, const char *data, size_t len)
{
    char *p = malloc(c->pend_len + len);
    if (!p)
        abort();
    if (c->pend_len)
        memcpy(p, c->pend + c->pend_off, c->pend_len);
    memcpy(p + c->pend_len, data, len);
    free(c->pend);
    c->pend = p;
    c->pend_off = 0;
    c->pend_len += (uint32_t)len;
}

/* ------------------------------------------------------ open and close */

/* Releases the socket, watchers and buffers now; the struct itself goes in
 * s_conn_release(). */
static void s_conn_close(conn_t *c)
{
    if (c->state == CONN_CLOSED)
        return;
    http_server_t *srv = c->srv;
    ev_io_stop(s_loop(c), &c->io);
    ev_timer_stop(s_loop(c), &c->timer);
    close(c->io.fd);
    s_req_free(c);
    s_out_free(c);
    s_pend_free(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    srv->nconns--;
    c->state = CONN_CLOSED;
    if (srv->stopping && !srv->conns)
        actor_stop_ready(srv->self); /* the last response of a stop is out */
}

/* Frees a closed connection once nothing refers to it any more. Called last
 * in every event callback that may have closed it. */
static void s_conn_release(conn_t *c)
{
    if (c->state == CONN_CLOSED && c->pending == 0 && !c->driving)
        free(c);
}

/* The last response is out: shut our side and read (and drop) what the
 * client still sends for a moment, so that closing with unread input does
 * not reset the connection before the client has read that response. */
static void s_conn_linger(conn_t *c)
{
    s_req_free(c);
    s_pend_free(c);
    shutdown(c->io.fd, SHUT_WR);
    c->state = CONN_LINGERING;
    c->lingered = 0;
    s_conn_watch(c, EV_READ);
    double t = c->srv->cfg.stall_timeout_s < LINGER_S ? c->srv->cfg.stall_timeout_s : LINGER_S;
    s_timer(c, t);
}

/* ------------------------------------------------------------ respond */

void http_respond(http_exchange_t *x, int status, const char *content_type,
                  const char *headers, char **bodyp, size_t body_len)
{
    conn_t *c = x;
    char *body = NULL;
    if (bodyp) {
        body = *bodyp;
        *bodyp = NULL;
    }
    assert(c->state == CONN_SERVING && c->req);
    http_server_t *srv = c->srv;
    req_t *r = c->req;
    bool keep = r->keep_alive && !srv->stopping;
    bool no_body = status == 204 || status == 304 || status < 200;

    buf_t head = {0};
    s_buf_printf(&head, "HTTP/1.1 %d %s\r\nAccess-Control-Allow-Origin: %s\r\n", status,
                 s_reason(status), srv->cfg.cors_origin);
    if (content_type)
        s_buf_printf(&head, "Content-Type: %s\r\n", content_type);
    if (!no_body)
        s_buf_printf(&head, "Content-Length: %zu\r\n", body ? body_len : 0);
    if (headers)
        s_buf_add(&head, headers, strlen(headers));
    if (!keep)
        s_buf_printf(&head, "Connection: close\r\n");
    else if (r->http10)
        s_buf_printf(&head, "Connection: keep-alive\r\n");
    s_buf_add(&head, "\r\n", 2);

    log_debug("%s %s: %d", r->view.path ? http_method_str((enum http_method)r->view.method) : "-",
              r->view.path ? r->view.path : "(unparsed)", status);
    if (r->view.head || no_body || !body) {
        free(body);
        body = NULL;
        body_len = 0;
    }
    s_req_free(c);
    out_t *o = calloc(1, sizeof *o);
    if (!o)
        abort();
    o->head = head.data;
    o->head_len = head.len;
    o->body = body;
    o->body_len = body_len;
    c->out = o;
    c->close_after = !keep;
    c->state = CONN_WRITING;
    s_conn_flush(c);
}

/* Writes what it can of the response; the rest on EV_WRITE. When it is all
 * out, the next request (already read, or still to come) gets its turn. */
static void s_conn_flush(conn_t *c)
{
    out_t *o = c->out;
    size_t total = o->head_len + o->body_len;
    while (o->off < total) {
        struct iovec iov[2];
        int n = 0;
        if (o->off < o->head_len) {
            iov[n++] = (struct iovec){o->head + o->off, o->head_len - o->off};
            if (o->body_len)
                iov[n++] = (struct iovec){o->body, o->body_len};
        } else {
            iov[n++] = (struct iovec){o->body + (o->off - o->head_len), total - o->off};
        }
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->io.fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                /* the client reads slowly: it must make progress within
                 * the stall timeout */
                s_conn_watch(c, EV_WRITE);
                s_timer(c, c->srv->cfg.stall_timeout_s);
                return;
            }
            log_debug("client gone while writing: %s", strerror(errno));
            s_conn_close(c);
            return;
        }
        o->off += (size_t)w;
    }
    s_out_free(c);
    if (c->close_after) {
        s_conn_linger(c);
        return;
    }
    c->state = CONN_READING;
    http_parser_pause(&c->parser, 0);
    s_conn_drive(c);
}

/* Answers a request the parser refused (or that timed out) and closes. */
static void s_conn_refuse(conn_t *c, int status, const char *msg)
{
    if (!c->req) {
        c->req = calloc(1, sizeof *c->req);
        if (!c->req)
            abort();
    }
    c->req->keep_alive = false;
    c->state = CONN_SERVING;
    s_conn_watch(c, 0);
    ev_timer_stop(s_loop(c), &c->timer);
    http_respond_error(c, status, "%s", msg);
}

/* ------------------------------------------------------------- parsing */

static int s_on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    if (!c->req) {
        c->req = calloc(1, sizeof *c->req);
        if (!c->req)
            abort();
    }
    /* from its first byte, the request line and headers have this long */
    s_timer(c, c->srv->cfg.stall_timeout_s);
    return 0;
}

static int s_on_url(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    s_buf_add(&c->req->url, at, len);
    return 0;
}

static int s_on_header_field(http_parser *p, const char *at, size_t len)
{
    req_t *r = ((conn_t *)p->data)->req;
    if (r->in_value) { /* a new header starts */
        r->in_value = false;
        r->field_len = 0;
        r->field_long = false;
    }
    if (r->field_long || r->field_len + len >= sizeof r->field)
        r->field_long = true;
    else {
        memcpy(r->field + r->field_len, at, len);
        r->field_len = (uint8_t)(r->field_len + len);
    }
    return 0;
}

/* Appends to a fixed header buffer; a value that does not fit is marked. */
static void s_hdr_add(char *dst, size_t cap, uint8_t *len, bool *overflow, const char *at,
                      size_t n)
{
    if (*overflow || *len + n >= cap) {
        *overflow = true;
        return;
    }
    memcpy(dst + *len, at, n);
    *len = (uint8_t)(*len + n);
    dst[*len] = '\0';
}

static int s_on_header_value(http_parser *p, const char *at, size_t len)
{
    req_t *r = ((conn_t *)p->data)->req;
    if (!r->in_value) { /* the name is complete: is it one we keep? */
        r->in_value = true;
        r->field[r->field_len] = '\0';
        r->header = HDR_OTHER;
        if (!r->field_long && strcasecmp(r->field, "content-type") == 0) {
            r->header = HDR_CONTENT_TYPE;
            r->has_ctype = true;
            r->ctype_len = 0;
            r->ctype_long = false;
            r->ctype[0] = '\0';
        } else if (!r->field_long && strcasecmp(r->field, "expect") == 0) {
            r->header = HDR_EXPECT;
            r->expect_len = 0;
            r->expect_long = false;
            r->expect[0] = '\0';
        }
    }
    if (r->header == HDR_CONTENT_TYPE)
        s_hdr_add(r->ctype, sizeof r->ctype, &r->ctype_len, &r->ctype_long, at, len);
    else if (r->header == HDR_EXPECT)
        s_hdr_add(r->expect, sizeof r->expect, &r->expect_len, &r->expect_long, at, len);
    return 0;
}

static int s_on_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    req_t *r = c->req;
    r->keep_alive = http_should_keep_alive(p) != 0;
    r->http10 = p->http_major == 1 && p->http_minor == 0;
    r->view.head = p->method == HTTP_HEAD;
    /* refuse an announced oversized body before it is sent */
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > BODY_LIMIT) {
        c->limit = 413;
        return -1;
    }
    bool body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENTLENGTH) && p->content_length);
    if (body && !r->http10 && !r->expect_long && r->expect_len == 12
        && strncasecmp(r->expect, "100-continue", 12) == 0) {
        /* the client waits for our word before it sends the body; the
         * socket has nothing else queued, so this cannot be cut short */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (send(c->io.fd, cont, sizeof cont - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof cont - 1)) {
            c->limit = -1;
            return -1;
        }
    }
    c->in_body = true;
    s_timer(c, c->srv->cfg.stall_timeout_s); /* the body must make progress */
    return 0;
}

static int s_on_body(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->req->body.len + len > BODY_LIMIT) { /* chunked, past the limit */
        c->limit = 413;
        return -1;
    }
    s_buf_add(&c->req->body, at, len);
    return 0;
}

static int s_on_message_complete(http_parser *p)
{
    conn_t *c = p->data;
    c->in_body = false;
    if (p->upgrade) /* what follows is not HTTP: answer, then close */
        c->req->keep_alive = false;
    c->req->view.received_at_us = clock_wall_us();
    /* stop here: the next pipelined request waits for this one's response */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings s_settings = {
    .on_message_begin = s_on_message_begin,
    .on_url = s_on_url,
    .on_header_field = s_on_header_field,
    .on_header_value = s_on_header_value,
    .on_headers_complete = s_on_headers_complete,
    .on_body = s_on_body,
    .on_message_complete = s_on_message_complete,
};

/* The path of the request target: origin form without its query, or the
 * path of an absolute form. Rewrites the URL buffer in place. */
static const char *s_target_path(req_t *r)
{
    if (!r->url.data)
        return "";
    char *url = r->url.data;
    if (url[0] != '/') {
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (http_parser_parse_url(url, r->url.len, 0, &u) != 0
            || !(u.field_set & (1 << UF_PATH)))
            return url; /* "*" and the like: no route has it */
        memmove(url, url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
        url[u.field_data[UF_PATH].len] = '\0';
    }
    url[strcspn(url, "?#")] = '\0';
    return url;
}

/* Hands the complete request to the routes. */
static void s_conn_dispatch(conn_t *c)
{
    req_t *r = c->req;
    c->state = CONN_SERVING;
    /* EV_READ stays on: stopping and restarting it around every request
     * costs two epoll_ctl calls; the rare pipelined input is handled in
     * s_conn_io_cb */
    ev_timer_stop(s_loop(c), &c->timer);
    r->view.method = c->parser.method;
    r->view.path = s_target_path(r);
    if (!r->body.data)
        s_buf_add(&r->body, "", 0);
    r->view.body = r->body.data;
    r->view.body_len = r->body.len;
    r->view.content_type = r->has_ctype && !r->ctype_long ? r->ctype : NULL;
    if (r->has_ctype && r->ctype_long)
        r->view.content_type = "(too long)";
    http_api_route(c->srv->self, c, &r->view);
}

/* Feeds len bytes at data to the parser. Returns how many it took: fewer
 * when a request completed (it is then being served) or the connection
 * failed. */
static size_t s_conn_parse(conn_t *c, const char *data, size_t len)
{
    size_t n = http_parser_execute(&c->parser, &s_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
        s_conn_dispatch(c);
        return n;
    }
    if (e == HPE_OK && n == len)
        return n;
    if (e == HPE_HEADER_OVERFLOW)
        s_conn_refuse(c, 431, "request line and headers exceed 16 KiB");
    else if (c->limit == 413)
        s_conn_refuse(c, 413, "request body exceeds 1 MiB");
    else if (c->limit < 0)
        s_conn_close(c);
    else {
        char msg[160];
        snprintf(msg, sizeof msg, "malformed HTTP request: %s",
                 e == HPE_OK ? "unexpected data" : http_errno_description(e));
        s_conn_refuse(c, 400, msg);
    }
    return len;
}

/* Serves the requests waiting in pend, one at a time, until one is still
 * being answered or the input runs out; then waits for more input. */
static void s_conn_drive(conn_t *c)
{
    if (c->driving)
        return; /* the caller's loop goes on from here */
    c->driving = true;
    while (c->state == CONN_READING && c->pend_len > 0) {
        size_t n = s_conn_parse(c, c->pend + c->pend_off, c->pend_len);
        if (c->state == CONN_CLOSED || c->state == CONN_LINGERING)
            break; /* pend already freed */
        c->pend_off += (uint32_t)n;
        c->pend_len -= (uint32_t)n;
    }
    if (c->pend && c->pend_len == 0)
        s_pend_free(c);
    c->driving = false;
    if (c->state == CONN_READING) {
        s_conn_watch(c, EV_READ);
        /* between requests: the keep-alive clock. Mid-request, the clock
         * started by its first byte (or its body's last progress) runs on. */
        if (!c->req)
            s_timer(c, c->srv->cfg.keepalive_timeout_s);
    }
}

/* Fresh input from the shared read buffer: parsed in place, and only what
 * lies past a complete request is copied (pend). */
static void s_conn_input(conn_t *c, const char *data, size_t len)
{
    if (c->in_body)
        s_timer(c, c->srv->cfg.stall_timeout_s);
    c->driving = true;
    size_t n = s_conn_parse(c, data, len);
    if (n < len && c->state != CONN_CLOSED && c->state != CONN_LINGERING)
        s_pend_add(c, data + n, len - n);
    c->driving = false;
    s_conn_drive(c);
}

/* ------------------------------------------------------------ events */

static void s_conn_read(conn_t *c)
{
    http_server_t *srv = c->srv;
    ssize_t n = recv(c->io.fd, srv->rbuf, READ_BUF, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        log_debug("read failed: %s", strerror(errno));
        s_conn_close(c);
        return;
    }
    if (n == 0) { /* the client is done; a request it cut short is dropped */
        s_conn_close(c);
        return;
    }
    if (c->state == CONN_LINGERING) {
        c->lingered += (uint32_t)n;
        if (c->lingered > LINGER_BYTES)
            s_conn_close(c);
        return;
    }
    s_conn_input(c, srv->rbuf, (size_t)n);
}

static void s_conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_t *c = w->data;
    if ((revents & EV_READ) && c->state == CONN_SERVING) {
        /* input while a request is served (pipelining): it waits in the
         * socket until the response is out */
        s_conn_watch(c, 0);
    } else if ((revents & EV_READ)
               && (c->state == CONN_READING || c->state == CONN_LINGERING))
        s_conn_read(c);
    else if ((revents & EV_WRITE) && c->state == CONN_WRITING)
        s_conn_flush(c);
    s_conn_release(c);
}

static void s_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    conn_t *c = w->data;
    ev_timer_stop(loop, w);
    if (c->state == CONN_READING && c->req) {
        log_debug("request stalled: closing the connection");
        s_conn_refuse(c, 408, "request not received in time");
    } else if (c->state != CONN_SERVING) {
        /* idle keep-alive, a reader that stopped reading, or lingering */
        s_conn_close(c);
    }
    s_conn_release(c);
}

static void s_conn_new(http_server_t *srv, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn_t *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->srv = srv;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    ev_io_init(&c->io, s_conn_io_cb, fd, EV_READ);
    c->io.data = c;
    ev_timer_init(&c->timer, s_conn_timer_cb, 0., 0.);
    c->timer.data = c;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    c->state = CONN_READING;
    ev_io_start(actor_loop(srv->self), &c->io);
    s_timer(c, srv->cfg.keepalive_timeout_s);
}

static void s_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    http_server_t *srv = w->data;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            srv->accept_failing = false;
            s_conn_new(srv, fd);
            continue;
        }
        switch (errno) {
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
            continue;
        case EAGAIN:
#if EAGAIN != EWOULDBLOCK
        case EWOULDBLOCK:
#endif
            return;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            /* the listener stays readable while the queue waits: stop
             * watching it for a moment instead of spinning on the error */
            if (!srv->accept_failing)
                log_warn("cannot accept (%s, %zu connections open): retrying every %.2f s",
                         strerror(errno), srv->nconns, ACCEPT_PAUSE_S);
            srv->accept_failing = true;
            ev_io_stop(loop, w);
            ev_timer_set(&srv->accept_pause, ACCEPT_PAUSE_S, 0.);
            ev_timer_start(loop, &srv->accept_pause);
            return;
        default:
            log_error("accept failed: %s", strerror(errno));
            return;
        }
    }
}

static void s_accept_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    http_server_t *srv = w->data;
    if (!srv->stopping)
        ev_io_start(loop, &srv->listener);
}

/* ------------------------------------------------------------ routes' side */

typedef struct {
    conn_t *c;
    http_reply_fn cb;
    void *arg;
} ask_t;

static void s_ask_reply(actor_t *self, int status, msg_t *reply, void *arg)
{
    ask_t *a = arg;
    conn_t *c = a->c;
    c->pending--;
    a->cb(self, c->state == CONN_CLOSED ? NULL : c, status, reply, a->arg);
    free(a);
    s_conn_release(c);
}

int http_ask(http_exchange_t *x, const char *to, msg_t *request, http_reply_fn cb, void *arg)
{
    conn_t *c = x;
    ask_t *a = malloc(sizeof *a);
    if (!a)
        abort();
    *a = (ask_t){c, cb, arg};
    if (actor_request(c->srv->self, to, request, c->srv->cfg.request_timeout_s, s_ask_reply,
                      a) < 0) {
        int err = errno;
        free(a);
        errno = err;
        return -1;
    }
    c->pending++;
    return 0;
}

const http_config_t *http_config(actor_t *self)
{
    return &((http_server_t *)actor_state(self))->cfg;
}

/* ------------------------------------------------------------ the actor */

/* Splits HOST:PORT ("[v6]:PORT" too; an empty host is every address). */
static int s_split_address(const char *addr, char *host, size_t hostlen, char *port,
                           size_t portlen)
{
    const char *colon;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':' || (size_t)(end - addr - 1) >= hostlen)
            return -1;
        memcpy(host, addr + 1, (size_t)(end - addr - 1));
        host[end - addr - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= hostlen)
            return -1;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
    }
    const char *p = colon + 1;
    if (!*p || strlen(p) >= portlen || strspn(p, "0123456789") != strlen(p) || atol(p) > 65535)
        return -1;
    strcpy(port, p);
    return 0;
}

static int s_listen(http_server_t *srv, const char *addr)
{
    char host[256], port[8];
    if (s_split_address(addr, host, sizeof host, port, sizeof port) < 0) {
        actor_fail(srv->self, "cannot listen on '%s': expected HOST:PORT", addr);
        return -1;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
    };
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        actor_fail(srv->self, "cannot listen on %s: %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        actor_fail(srv->self, "cannot listen on %s: %s", addr, strerror(err));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    ev_io_init(&srv->listener, s_accept_cb, fd, EV_READ);
    srv->listener.data = srv;
    return 0;
}

static char *s_dup(const char *s, const char *def)
{
    char *p = strdup(s && *s ? s : def);
    if (!p)
        abort();
    return p;
}

static void s_server_free(http_server_t *srv)
{
    free((char *)srv->cfg.listen);
    free((char *)srv->cfg.cors_origin);
    free((char *)srv->cfg.instance);
    free((char *)srv->cfg.store);
    free((char *)srv->cfg.redis);
    free(srv->rbuf);
    free(srv);
}

static int s_init(actor_t *self, void *arg)
{
    const http_config_t *in = arg;
    http_server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        abort();
    srv->self = self;
    srv->cfg.listen = s_dup(in->listen, "127.0.0.1:8080");
    srv->cfg.cors_origin = s_dup(in->cors_origin, "*");
    srv->cfg.instance = s_dup(in->instance, "local");
    srv->cfg.store = s_dup(in->store, "store");
    srv->cfg.redis = s_dup(in->redis, "redis");
    srv->cfg.request_timeout_s = in->request_timeout_s > 0 ? in->request_timeout_s : 5.;
    srv->cfg.stall_timeout_s = in->stall_timeout_s > 0 ? in->stall_timeout_s : 10.;
    srv->cfg.keepalive_timeout_s = in->keepalive_timeout_s > 0 ? in->keepalive_timeout_s : 60.;
    srv->rbuf = malloc(READ_BUF);
    if (!srv->rbuf)
        abort();
    if (strpbrk(srv->cfg.cors_origin, "\r\n")) {
        actor_fail(self, "the CORS origin must be one header value");
        s_server_free(srv);
        return -1;
    }
    if (s_listen(srv, srv->cfg.listen) < 0) {
        s_server_free(srv);
        return -1;
    }
    ev_timer_init(&srv->accept_pause, s_accept_resume_cb, ACCEPT_PAUSE_S, 0.);
    srv->accept_pause.data = srv;
    ev_io_start(actor_loop(self), &srv->listener);
    actor_set_state(self, srv);
    log_info("listening on %s (port %d)", srv->cfg.listen, srv->port);
    return 0;
}

static void s_stop_listening(http_server_t *srv)
{
    if (srv->listener.fd < 0)
        return;
    ev_io_stop(actor_loop(srv->self), &srv->listener);
    ev_timer_stop(actor_loop(srv->self), &srv->accept_pause);
    close(srv->listener.fd);
    srv->listener.fd = -1;
}

static void s_fini(actor_t *self)
{
    http_server_t *srv = actor_state(self);
    s_stop_listening(srv);
    /* the runtime has failed every request still pending (their exchanges
     * were answered 503): no connection is referred to any more */
    while (srv->conns) {
        conn_t *c = srv->conns;
        s_conn_close(c);
        s_conn_release(c);
    }
    s_server_free(srv);
}

/* An orderly stop: no new connections; idle ones close now, busy ones after
 * their response (which says Connection: close). */
static void s_shutdown(http_server_t *srv)
{
    srv->stopping = true;
    s_stop_listening(srv);
    for (conn_t *c = srv->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_READING && !c->req) {
            s_conn_close(c);
            s_conn_release(c);
        }
    }
}

static void s_on_shutdown(actor_t *self, msg_t *msg)
{
    s_shutdown(actor_state(self));
}

/* The actor is asked to stop: the same orderly stop, and the loop ends
 * when the last in-flight response is out (or at the stop deadline, when
 * fini answers what is left with 503). */
static bool s_stopping(actor_t *self)
{
    http_server_t *srv = actor_state(self);
    s_shutdown(srv);
    return srv->conns == NULL;
}

static void s_parser_limits(void)
{
    /* process-wide in http-parser 2.9; this actor is its only user */
    http_parser_set_max_header_size(HEAD_LIMIT);
}

actor_t *http_start(runtime_t *rt, const http_config_t *cfg, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    static const actor_spec_t spec = {
        .init = s_init,
        .stopping = s_stopping,
        .fini = s_fini,
        .handlers = {[MSG_SHUTDOWN] = s_on_shutdown},
    };
    static const http_config_t defaults = {0};
    pthread_once(&once, s_parser_limits);
    return actor_new(rt, "http", &spec, (void *)(cfg ? cfg : &defaults), err, errlen);
}

int http_port(actor_t *http)
{
    return ((http_server_t *)actor_state(http))->port;
}

void http_stop(actor_t **httpp)
{
    actor_destroy(httpp);
}
