/*
 * request.c - the HTTP server library's exchanges, and reading a request
 * into one: llhttp's callbacks and what it leaves to us (strict framing,
 * see "parsing" below), the 16 KiB and 1 MiB limits, the
 * target's path and query, and the hand-over to on_request. An exchange
 * lives from its request's first byte until its response is handed to the
 * connection (or its client goes) and its user's holds are released.
 */
#include "config.h"

#include "actors/http/conn.h"

#include "runtime/clock.h"

#include <arpa/inet.h>
#include <netinet/in.h>
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
    x->tag = -1;
    c->x = x;
    return x;
}

/* The request's buffers: not needed once its response starts. */
void http_x_drop_request(http_exchange_t *x)
{
    http_buf_free(&x->url);
    http_buf_free(&x->body);
    http_buf_free(&x->kept);
    memset(x->view.kept, 0, sizeof x->view.kept);
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
    free(x->extra);
    free(x);
}

void http_exchange_set_tag(http_exchange_t *x, int tag)
{
    x->tag = tag;
}

void http_exchange_set_headers(http_exchange_t *x, const char *headers)
{
    free(x->extra);
    if (!(x->extra = strdup(headers)))
        abort();
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

/* ------------------------------------------------------------ parsing
 *
 * llhttp, strict (LLHTTP_STRICT_MODE, actors/http.am) with every lenient
 * flag off, does most of RFC 9112's framing rules: no whitespace before a
 * header's colon, CRLF after each chunk's data, one Content-Length and not
 * with Transfer-Encoding, chunked last, no control characters in the target.
 * What it lets through, and what a proxy in front of us might read another
 * way (request smuggling), is refused here: obsolete line folding, a request
 * line without a version (HTTP/0.9) or an empty line where one belongs
 * (s_scan_head, on the raw bytes); versions other than 1.0 and 1.1 (505), a
 * transfer coding before chunked (501), Transfer-Encoding in HTTP/1.0, a
 * missing or repeated Host, a repeated Content-Type (the callbacks). It
 * also has no limit on a request's head: s_scan_head counts it (431).
 */

/* Stops the parser from a callback: the request is refused with status
 * and msg (a static string), or just closed (status -1). */
static int s_fail(conn_t *c, int status, const char *msg)
{
    c->fail = (int16_t)status;
    c->fail_msg = msg;
    return -1;
}

typedef enum {
    SCAN_START,      /* the request's first byte is next */
    SCAN_REQLINE,    /* in the request line */
    SCAN_LINE,       /* in a header line */
    SCAN_LINE_START, /* a header line (or the blank line) starts */
    SCAN_LAST_LF,    /* the blank line's LF is next */
    SCAN_DONE        /* past the head: the body, or nothing */
} scan_t;

/* Follows the request's head through the bytes about to be parsed, up to
 * its blank line: its size (431), and what llhttp accepts but we do not: a
 * line that starts with whitespace (obs-fold, RFC 9112 5.2: a fold
 * continues a value that a proxy may read unfolded), a request line that is
 * not three words (HTTP/0.9's "GET /" would wait for headers that never
 * come), an empty line where the request line belongs (RFC 9112 2.2 lets a
 * server skip it; nothing sends it but a confused client, and skipping it
 * leaves that client unanswered). 0, or -1 with c->fail set. */
static int s_scan_head(conn_t *c, const char *data, size_t len)
{
    for (size_t i = 0; i < len && c->scan != SCAN_DONE; i++) {
        char ch = data[i];
        if (++c->head_len > HEAD_LIMIT)
            return s_fail(c, 431, "request line and headers exceed 16 KiB");
        switch ((scan_t)c->scan) {
        case SCAN_START:
            if (ch == '\r' || ch == '\n')
                return s_fail(c, 400, "malformed HTTP request: an empty line, not a request line");
            c->scan = SCAN_REQLINE;
            break;
        case SCAN_REQLINE:
            if (ch == ' ') {
                if (c->scan_spaces < UINT8_MAX)
                    c->scan_spaces++;
            } else if (ch == '\r' || ch == '\n') {
                if (c->scan_spaces < 2)
                    return s_fail(
                        c, 400, "malformed HTTP request: no HTTP version (HTTP/0.9 is not served)");
                if (c->scan_spaces > 2)
                    return s_fail(c, 400,
                                  "malformed HTTP request: request line is not three words");
                c->scan = ch == '\n' ? SCAN_LINE_START : SCAN_LINE;
            }
            break;
        case SCAN_LINE:
            if (ch == '\n')
                c->scan = SCAN_LINE_START;
            break;
        case SCAN_LINE_START:
            if (ch == ' ' || ch == '\t')
                return s_fail(c, 400, "malformed HTTP request: obsolete line folding");
            c->scan = ch == '\r' ? SCAN_LAST_LF : ch == '\n' ? SCAN_DONE : SCAN_LINE;
            break;
        case SCAN_LAST_LF: /* llhttp checks that it is one */
            c->scan = SCAN_DONE;
            break;
        case SCAN_DONE:
            break;
        }
    }
    return 0;
}

static int s_on_message_begin(llhttp_t *p)
{
    conn_t *c = p->data;
    if (!c->x)
        s_x_new(c);
    /* from its first byte, the request line and headers have this long */
    http_conn_timer(c, c->srv->cfg.stall_timeout_s);
    return 0;
}

static int s_on_url(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    http_buf_add(&c->x->url, at, len);
    return 0;
}

static int s_on_version(llhttp_t *p, const char *at, size_t len)
{
    http_exchange_t *r = ((conn_t *)p->data)->x;
    size_t room = sizeof r->version - 1 - r->version_len;
    if (len > room)
        len = room; /* too long to be a version: it stays one that is not */
    memcpy(r->version + r->version_len, at, len);
    r->version_len = (uint8_t)(r->version_len + len);
    r->version[r->version_len] = '\0';
    return 0;
}

/* A well-formed version: "HTTP/" DIGIT "." DIGIT (RFC 9112 2.3). */
static bool s_version_syntax(const http_exchange_t *r)
{
    const char *v = r->version;
    return r->version_len == 3 && v[0] >= '0' && v[0] <= '9' && v[1] == '.' && v[2] >= '0'
           && v[2] <= '9';
}

static int s_on_version_complete(llhttp_t *p)
{
    /* llhttp takes 0.9 and 2.0 too; the request is framed as 1.x by its
     * sender only when it says 1.0 or 1.1 */
    if (p->http_major != 1 || p->http_minor > 1)
        return s_fail(p->data, 505, "HTTP version not supported (1.0 and 1.1 are)");
    return 0;
}

static int s_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    http_exchange_t *r = c->x;
    if (c->in_body) /* a trailer: nothing of ours */
        return 0;
    if (r->field_long || r->field_len + len >= sizeof r->field)
        r->field_long = true;
    else {
        memcpy(r->field + r->field_len, at, len);
        r->field_len = (uint8_t)(r->field_len + len);
    }
    return 0;
}

/* The name is complete: is it one we keep, or one that may appear once? */
static int s_on_header_field_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    http_exchange_t *r = c->x;
    if (c->in_body)
        return 0;
    r->field[r->field_len] = '\0';
    r->header = HDR_OTHER;
    if (r->field_long) {
        /* none of ours */
    } else if (strcasecmp(r->field, "content-type") == 0) {
        /* two would be read differently by different readers */
        if (r->has_ctype)
            return s_fail(c, 400, "malformed HTTP request: more than one Content-Type");
        r->header = HDR_CONTENT_TYPE;
        r->has_ctype = true;
        r->ctype_len = 0;
        r->ctype_long = false;
        r->ctype[0] = '\0';
    } else if (strcasecmp(r->field, "host") == 0) {
        /* RFC 9112 3.2: exactly one */
        if (r->hosts++)
            return s_fail(c, 400, "malformed HTTP request: more than one Host");
        r->header = HDR_HOST;
    } else if (strcasecmp(r->field, "transfer-encoding") == 0) {
        r->header = HDR_TRANSFER_ENCODING;
        if (r->te_len && !r->te_long) /* one list over several lines */
            r->te[r->te_len++] = ',';
    } else if (strcasecmp(r->field, "expect") == 0) {
        r->header = HDR_EXPECT;
        r->expect_len = 0;
        r->expect_long = false;
        r->expect[0] = '\0';
    }
    const char *const *keep = c->srv->cfg.keep_headers;
    for (uint8_t i = 0; r->header == HDR_OTHER && !r->field_long && keep && keep[i]; i++) {
        if (strcasecmp(r->field, keep[i]) != 0)
            continue;
        /* one value each: two would be read differently by different readers */
        if (r->kept_at[i])
            return s_fail(c, 400, "malformed HTTP request: a header given twice");
        r->header = HDR_KEPT;
        r->kept_now = i;
        if (r->kept.len) /* after the previous value's NUL */
            http_buf_add(&r->kept, "", 1);
        else
            http_buf_add(&r->kept, "", 0);
        r->kept_at[i] = (uint16_t)(r->kept.len + 1);
    }
    r->field_len = 0;
    r->field_long = false;
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

static int s_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    http_exchange_t *r = c->x;
    if (c->in_body)
        return 0;
    if (r->header == HDR_CONTENT_TYPE)
        s_hdr_add(r->ctype, sizeof r->ctype, &r->ctype_len, &r->ctype_long, at, len);
    else if (r->header == HDR_EXPECT)
        s_hdr_add(r->expect, sizeof r->expect, &r->expect_len, &r->expect_long, at, len);
    else if (r->header == HDR_TRANSFER_ENCODING)
        s_hdr_add(r->te, sizeof r->te, &r->te_len, &r->te_long, at, len);
    else if (r->header == HDR_KEPT) {
        if (r->kept.len + len - (r->kept_at[r->kept_now] - 1) > HTTP_KEEP_VALUE_MAX)
            return s_fail(c, 431, "a request header is too long");
        http_buf_add(&r->kept, at, len);
    }
    return 0;
}

/* True when the Transfer-Encoding list names a coding other than chunked
 * (llhttp has checked that chunked comes last, once). */
static bool s_te_has_other(const http_exchange_t *r)
{
    if (r->te_long)
        return true; /* longer than "chunked" said a few times */
    const char *s = r->te;
    while (*s) {
        s += strspn(s, " \t,");
        size_t n = strcspn(s, " \t,");
        if (n && !(n == 7 && strncasecmp(s, "chunked", 7) == 0))
            return true;
        s += n;
    }
    return false;
}

static int s_on_headers_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    http_exchange_t *r = c->x;
    r->keep_alive = llhttp_should_keep_alive(p) != 0;
    r->http10 = p->http_major == 1 && p->http_minor == 0;
    r->view.head = p->method == HTTP_HEAD;
    if (!r->http10 && r->hosts == 0)
        return s_fail(c, 400, "malformed HTTP request: no Host (HTTP/1.1 requires one)");
    if (p->flags & F_TRANSFER_ENCODING) {
        /* RFC 9112 6.1: HTTP/1.0 has no transfer codings, so its framing
         * would be read one way by us and another by an HTTP/1.0 proxy */
        if (r->http10)
            return s_fail(c, 400, "malformed HTTP request: Transfer-Encoding in HTTP/1.0");
        /* RFC 9112 6.1: a coding we do not know, before chunked */
        if ((p->flags & F_CHUNKED) && s_te_has_other(r))
            return s_fail(c, 501, "transfer coding other than chunked is not supported");
    }
    /* refuse an announced oversized body before it is sent */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > BODY_LIMIT)
        return s_fail(c, 413, "request body exceeds 1 MiB");
    bool body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length);
    if (body && !r->http10 && !r->expect_long && r->expect_len == 12
        && strncasecmp(r->expect, "100-continue", 12) == 0) {
        /* the client waits for our word before it sends the body; the
         * socket has nothing else queued, so this cannot be cut short */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (send(c->io.fd, cont, sizeof cont - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof cont - 1))
            return s_fail(c, -1, NULL);
    }
    c->in_body = true;
    http_conn_timer(c, c->srv->cfg.stall_timeout_s); /* the body must make progress */
    return 0;
}

static int s_on_body(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->x->body.len + len > BODY_LIMIT) /* chunked, past the limit */
        return s_fail(c, 413, "request body exceeds 1 MiB");
    http_buf_add(&c->x->body, at, len);
    return 0;
}

static int s_on_message_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    c->in_body = false;
    if (llhttp_get_upgrade(p)) /* what follows is not HTTP: answer, then close */
        c->x->keep_alive = false;
    c->x->view.received_at_us = clock_wall_us();
    /* stop here: the next pipelined request waits for this one's response */
    return HPE_PAUSED;
}

static const llhttp_settings_t s_settings = {
    .on_message_begin = s_on_message_begin,
    .on_url = s_on_url,
    .on_version = s_on_version,
    .on_version_complete = s_on_version_complete,
    .on_header_field = s_on_header_field,
    .on_header_field_complete = s_on_header_field_complete,
    .on_header_value = s_on_header_value,
    .on_headers_complete = s_on_headers_complete,
    .on_body = s_on_body,
    .on_message_complete = s_on_message_complete,
};

void http_conn_parser_init(conn_t *c)
{
    llhttp_init(&c->parser, HTTP_REQUEST, &s_settings);
    c->parser.data = c;
    /* off by default; said here so that nobody turns one on unawares:
     * each is a way to read a request differently from a proxy */
    llhttp_set_lenient_headers(&c->parser, 0);
    llhttp_set_lenient_chunked_length(&c->parser, 0);
    llhttp_set_lenient_keep_alive(&c->parser, 0);
    llhttp_set_lenient_transfer_encoding(&c->parser, 0);
}

/* ------------------------------------------------------------ hand-over */

/* The path and the query of the request target: origin form, or the path
 * and query of an absolute form ("http://host/path?query"). Rewrites the
 * URL buffer in place: the path, its NUL, the query's pairs. */
static void s_target(http_exchange_t *x)
{
    http_request_t *v = &x->view;
    if (!x->url.data) {
        v->path = "";
        return;
    }
    char *url = x->url.data;
    if (url[0] != '/') {
        /* scheme "://" authority, then the path; without a path ("*",
         * CONNECT's authority, "http://host") no route has it */
        size_t scheme =
            strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
        char *path = scheme && strncmp(url + scheme, "://", 3) == 0
                         ? url + scheme + 3 + strcspn(url + scheme + 3, "/?#")
                         : NULL;
        if (!path || *path != '/') {
            v->path = url;
            return;
        }
        memmove(url, path, strlen(path) + 1);
    }
    char *query = NULL, *end = url + strcspn(url, "?#");
    if (*end == '?') {
        query = end + 1;
        query[strcspn(query, "#")] = '\0';
    }
    *end = '\0';
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
    x->view.method = llhttp_get_method(&c->parser);
    s_target(x);
    x->view.body = x->body.data ? x->body.data : "";
    x->view.body_len = x->body.len;
    x->view.content_type = x->has_ctype && !x->ctype_long ? x->ctype : NULL;
    if (x->has_ctype && x->ctype_long)
        x->view.content_type = "(too long)";
    for (int i = 0; i < HTTP_KEEP_HEADERS_MAX; i++)
        x->view.kept[i] = x->kept_at[i] ? x->kept.data + x->kept_at[i] - 1 : NULL;
    c->srv->cfg.on_request(x, &x->view, c->srv->cfg.arg);
}

/* Feeds len bytes at data to the parser. Returns how many it took: fewer
 * when a request completed (it is then being served) or the connection
 * failed. Each call starts at the first byte of a request or inside the
 * one being read: the parser stops at the end of each. */
size_t http_conn_parse(conn_t *c, const char *data, size_t len)
{
    if (!c->x) { /* a new request */
        c->scan = SCAN_START;
        c->scan_spaces = 0;
        c->head_len = c->wire_len = 0;
    }
    c->fail = 0;
    if (s_scan_head(c, data, len) < 0) {
        http_conn_refuse(c, c->fail, c->fail_msg);
        return len;
    }
    llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
    size_t n = e == HPE_OK ? len : (size_t)(llhttp_get_error_pos(&c->parser) - data);
    c->wire_len += (uint32_t)n;
    if (e == HPE_PAUSED) { /* the request is complete */
        s_conn_dispatch(c);
        return n;
    }
    if (e == HPE_OK) {
        /* what is neither head nor body: chunk sizes, extensions, trailers */
        if (c->in_body && c->wire_len - c->head_len - c->x->body.len > FRAMING_LIMIT)
            http_conn_refuse(c, 413, "chunked framing exceeds 64 KiB");
        return len;
    }
    if (c->fail > 0) {
        http_conn_refuse(c, c->fail, c->fail_msg);
    } else if (c->fail < 0) {
        http_conn_close(c);
    } else if (e == HPE_INVALID_VERSION && c->x && s_version_syntax(c->x)) {
        /* well-formed but not 1.0 or 1.1 (llhttp knows only 0.9 to 2.0) */
        http_conn_refuse(c, 505, "HTTP version not supported (1.0 and 1.1 are)");
    } else {
        char msg[160];
        snprintf(msg, sizeof msg, "malformed HTTP request: %s",
                 llhttp_get_error_reason(&c->parser));
        http_conn_refuse(c, 400, msg);
    }
    return len;
}

void http_exchange_peer(const http_exchange_t *x, char *buf, size_t len)
{
    buf[0] = '\0';
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (!x->conn || getpeername(x->conn->io.fd, (struct sockaddr *)&ss, &sl) < 0)
        return;
    char host[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
        snprintf(buf, len, "%s:%d", host, port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
        snprintf(buf, len, "[%s]:%d", host, port);
    }
}
