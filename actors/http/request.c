/*
 * request.c - the HTTP server library's exchanges, and reading a request
 * into one: http-parser's callbacks, the 16 KiB and 1 MiB limits, the
 * target's path and query, and the hand-over to on_request. An exchange
 * lives from its request's first byte until its response is handed to the
 * connection (or its client goes) and its user's holds are released.
 */
#include "config.h"

#include "actors/http/conn.h"

#include "runtime/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* ------------------------------------------------------------ exchanges */

static http_exchange_t *s_x_new(conn_t *c)
{
    http_exchange_t *x = calloc(1, sizeof *x);
    if (!x)
        abort();
    x->conn = c;
    c->x = x;
    return x;
}

/* The request's buffers: not needed once its response starts. */
void http_x_drop_request(http_exchange_t *x)
{
    http_buf_free(&x->url);
    http_buf_free(&x->body);
    http_query_free(&x->view.query);
    x->view.path = NULL;
    x->view.body = NULL;
    x->view.content_type = NULL;
}

/* Frees x once nobody refers to it: not its connection, no hold, no call
 * of the user's on it still running. */
void http_x_maybe_free(http_exchange_t *x)
{
    if (x->conn || x->holds || x->in_call)
        return;
    http_x_drop_request(x);
    free(x);
}

/* The response has started: x leaves its connection. */
void http_x_detach(http_exchange_t *x, xstate_t state)
{
    x->conn->x = NULL;
    x->conn = NULL;
    x->state = (uint8_t)state;
}

/* Its connection closed before the answer; a stream's owner is told unless
 * it is in a call on x, which returns -1 instead. */
void http_x_gone(http_exchange_t *x)
{
    x->conn = NULL;
    x->gone = true;
    http_x_drop_request(x);
    if (x->state == X_STREAMING && !x->in_call) {
        x->holds++;
        x->fns.closed(x, x->fns.arg);
        x->holds--;
    }
    http_x_maybe_free(x);
}

void http_exchange_hold(http_exchange_t *x)
{
    x->holds++;
}

void http_exchange_release(http_exchange_t *x)
{
    x->holds--;
    http_x_maybe_free(x);
}

bool http_exchange_gone(const http_exchange_t *x)
{
    return x->gone || x->state == X_DONE;
}

/* Answers a request the parser refused (or that timed out) and closes. */
void http_conn_refuse(conn_t *c, int status, const char *msg)
{
    http_exchange_t *x = c->x ? c->x : s_x_new(c);
    x->keep_alive = false;
    x->state = X_SERVING;
    c->state = CONN_SERVING;
    http_conn_watch(c, 0);
    ev_timer_stop(http_conn_loop(c), &c->timer);
    http_server_t *srv = c->srv;
    if (srv->cfg.on_error) {
        srv->cfg.on_error(x, status, msg, srv->cfg.arg);
        return;
    }
    size_t len = strlen(msg);
    char *body = malloc(len + 2);
    if (!body)
        abort();
    memcpy(body, msg, len);
    body[len] = '\n';
    http_respond(x, status, "text/plain; charset=utf-8", NULL, &body, len + 1);
}

/* ------------------------------------------------------------ parsing */

static int s_on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    if (!c->x)
        s_x_new(c);
    /* from its first byte, the request line and headers have this long */
    http_conn_timer(c, c->srv->cfg.stall_timeout_s);
    return 0;
}

static int s_on_url(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    http_buf_add(&c->x->url, at, len);
    return 0;
}

static int s_on_header_field(http_parser *p, const char *at, size_t len)
{
    http_exchange_t *r = ((conn_t *)p->data)->x;
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
static void s_hdr_add(char *dst, size_t cap, uint8_t *len, bool *overflow, const char *at, size_t n)
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
    http_exchange_t *r = ((conn_t *)p->data)->x;
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
    http_exchange_t *r = c->x;
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
    http_conn_timer(c, c->srv->cfg.stall_timeout_s); /* the body must make progress */
    return 0;
}

static int s_on_body(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->x->body.len + len > BODY_LIMIT) { /* chunked, past the limit */
        c->limit = 413;
        return -1;
    }
    http_buf_add(&c->x->body, at, len);
    return 0;
}

static int s_on_message_complete(http_parser *p)
{
    conn_t *c = p->data;
    c->in_body = false;
    if (p->upgrade) /* what follows is not HTTP: answer, then close */
        c->x->keep_alive = false;
    c->x->view.received_at_us = clock_wall_us();
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

/* ------------------------------------------------------------ hand-over */

/* The path and the query of the request target: origin form, or the path
 * and query of an absolute form. Rewrites the URL buffer in place: the
 * path, its NUL, the query's pairs. */
static void s_target(http_exchange_t *x)
{
    http_request_t *v = &x->view;
    if (!x->url.data) {
        v->path = "";
        return;
    }
    char *url = x->url.data, *query = NULL;
    if (url[0] != '/') {
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (http_parser_parse_url(url, x->url.len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH))) {
            v->path = url; /* "*" and the like: no route has it */
            return;
        }
        size_t plen = u.field_data[UF_PATH].len;
        memmove(url, url + u.field_data[UF_PATH].off, plen);
        url[plen] = '\0';
        if (u.field_set & (1 << UF_QUERY)) {
            /* the query lies past the path: moving it left is safe */
            query = url + plen + 1;
            memmove(query, url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
            query[u.field_data[UF_QUERY].len] = '\0';
        }
    } else {
        char *end = url + strcspn(url, "?#");
        if (*end == '?') {
            query = end + 1;
            query[strcspn(query, "#")] = '\0';
        }
        *end = '\0';
    }
    v->path = url;
    if (query && *query)
        http_query_parse(query, &v->query);
}

/* Hands the complete request to the user. */
static void s_conn_dispatch(conn_t *c)
{
    http_exchange_t *x = c->x;
    c->state = CONN_SERVING;
    x->state = X_SERVING;
    /* EV_READ stays on: stopping and restarting it around every request
     * costs two epoll_ctl calls; the rare pipelined input is handled in
     * s_conn_io_cb */
    ev_timer_stop(http_conn_loop(c), &c->timer);
    x->view.method = c->parser.method;
    s_target(x);
    x->view.body = x->body.data ? x->body.data : "";
    x->view.body_len = x->body.len;
    x->view.content_type = x->has_ctype && !x->ctype_long ? x->ctype : NULL;
    if (x->has_ctype && x->ctype_long)
        x->view.content_type = "(too long)";
    c->srv->cfg.on_request(x, &x->view, c->srv->cfg.arg);
}

/* Feeds len bytes at data to the parser. Returns how many it took: fewer
 * when a request completed (it is then being served) or the connection
 * failed. */
size_t http_conn_parse(conn_t *c, const char *data, size_t len)
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
        http_conn_refuse(c, 431, "request line and headers exceed 16 KiB");
    else if (c->limit == 413)
        http_conn_refuse(c, 413, "request body exceeds 1 MiB");
    else if (c->limit < 0)
        http_conn_close(c);
    else {
        char msg[160];
        snprintf(msg, sizeof msg, "malformed HTTP request: %s",
                 e == HPE_OK ? "unexpected data" : http_errno_description(e));
        http_conn_refuse(c, 400, msg);
    }
    return len;
}
