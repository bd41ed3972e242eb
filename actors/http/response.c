/*
 * response.c - the HTTP server library's output: a whole response (head
 * built here, body written as handed over, with one sendmsg) and streams
 * (head first, then each piece copied into the connection's queue, chunked
 * for HTTP/1.1). A slow reader is bounded by the stall timeout and, for a
 * stream, by the output limit: never by waiting.
 */
#include "config.h"

#include "actors/http/conn.h"

#include "runtime/clock.h"
#include "runtime/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* ------------------------------------------------------------ output */

static const char *s_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 409:
        return "Conflict";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 400 ? "OK" : status < 500 ? "Bad Request" : "Server Error";
    }
}

static size_t s_out_queued(const conn_t *c)
{
    return c->out.buf.len - c->out.off + c->out.body_len - c->out.body_off;
}

void http_out_free(conn_t *c)
{
    http_buf_free(&c->out.buf);
    free(c->out.body);
    c->out = (out_t){0};
}

/* While streaming: read aside (the client's departure, pipelined input)
 * until the pending input is full, and write while anything is queued. */
void http_conn_watch_stream(conn_t *c)
{
    http_conn_watch(c, (c->pend_len < PEND_LIMIT ? EV_READ : 0) | (s_out_queued(c) ? EV_WRITE : 0));
}

/* ------------------------------------------------------------ respond */

/* The status line and headers of x's response into c's output. framing is
 * the Content-Length or Transfer-Encoding line, or NULL. */
static void s_head(conn_t *c, const http_exchange_t *x, int status, const char *content_type,
                   const char *framing, const char *headers, bool keep)
{
    http_server_t *srv = c->srv;
    buf_t *b = &c->out.buf;
    char line[64];
    http_buf_reserve(b, 256);
    snprintf(line, sizeof line, "HTTP/1.1 %d ", status);
    http_buf_adds(b, line);
    http_buf_adds(b, s_reason(status));
    http_buf_add(b, "\r\n", 2);
    if (srv->headers_len)
        http_buf_add(b, srv->cfg.headers, srv->headers_len);
    if (x->extra)
        http_buf_adds(b, x->extra);
    if (content_type) {
        http_buf_add(b, "Content-Type: ", 14);
        http_buf_adds(b, content_type);
        http_buf_add(b, "\r\n", 2);
    }
    if (framing)
        http_buf_adds(b, framing);
    if (headers)
        http_buf_adds(b, headers);
    if (!keep)
        http_buf_adds(b, "Connection: close\r\n");
    else if (x->http10)
        http_buf_adds(b, "Connection: keep-alive\r\n");
    http_buf_add(b, "\r\n", 2);
    if (srv->cfg.on_respond)
        srv->cfg.on_respond(
            status, x->tag,
            x->view.received_at_us ? (clock_wall_us() - x->view.received_at_us) * 1000 : 0,
            srv->cfg.arg);
    log_debug("%s %s: %d", x->view.path ? llhttp_method_name((llhttp_method_t)x->view.method) : "-",
              x->view.path ? x->view.path : "(unparsed)", status);
}

static bool s_status_has_body(int status)
{
    return status != 204 && status != 304 && status >= 200;
}

void http_respond(http_exchange_t *x, int status, const char *content_type, const char *headers,
                  char **bodyp, size_t body_len)
{
    char *body = NULL;
    if (bodyp) {
        body = *bodyp;
        *bodyp = NULL;
    }
    conn_t *c = x->conn;
    if (!c || x->state != X_SERVING) {
        if (!x->gone)
            log_error("a response to an exchange already answered: dropped");
        free(body);
        return;
    }
    bool keep = x->keep_alive && !c->srv->stopping;
    bool has_body = s_status_has_body(status);
    char length[48];
    snprintf(length, sizeof length, "Content-Length: %zu\r\n", body ? body_len : 0);
    s_head(c, x, status, content_type, has_body ? length : NULL, headers, keep);
    http_x_drop_request(x);
    if (x->view.head || !has_body || !body) {
        free(body);
        body = NULL;
        body_len = 0;
    }
    http_x_detach(x, X_DONE);
    c->out.body = body;
    c->out.body_len = body_len;
    c->close_after = !keep;
    c->state = CONN_WRITING;
    c->busy++;
    http_conn_flush(c);
    c->busy--;
    http_x_maybe_free(x);
    http_conn_release(c);
}

/* Writes what it can of the output; the rest on EV_WRITE. When a whole
 * response is out, the next request (already read, or still to come) gets
 * its turn; when a stream's queue is empty, its owner may be told. */
void http_conn_flush(conn_t *c)
{
    out_t *o = &c->out;
    bool wrote = false;
    for (;;) {
        struct iovec iov[2];
        int n = 0;
        if (o->off < o->buf.len)
            iov[n++] = (struct iovec){o->buf.data + o->off, o->buf.len - o->off};
        if (o->body_off < o->body_len)
            iov[n++] = (struct iovec){o->body + o->body_off, o->body_len - o->body_off};
        if (n == 0)
            break;
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->io.fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                /* the client reads slowly: it must make progress within
                 * the stall timeout */
                if (c->state == CONN_STREAMING)
                    http_conn_watch_stream(c);
                else
                    http_conn_watch(c, EV_WRITE);
                if (wrote || !ev_is_active(&c->timer))
                    http_conn_timer(c, c->srv->cfg.stall_timeout_s);
                return;
            }
            log_debug("client gone while writing: %s", strerror(errno));
            http_conn_close(c);
            return;
        }
        wrote = true;
        size_t head = o->buf.len - o->off < (size_t)w ? o->buf.len - o->off : (size_t)w;
        o->off += head;
        o->body_off += (size_t)w - head;
    }
    if (c->state == CONN_STREAMING) {
        /* an idle stream has no deadline; its buffer is kept for the next
         * piece unless it grew large */
        ev_timer_stop(http_conn_loop(c), &c->timer);
        o->buf.len = o->off = 0;
        if (o->buf.cap > 16384)
            http_buf_free(&o->buf);
        http_conn_watch_stream(c);
        http_exchange_t *x = c->x;
        if (wrote && !x->in_call && x->fns.drained)
            x->fns.drained(x, x->fns.arg);
        return;
    }
    http_out_free(c);
    if (c->close_after) {
        http_conn_linger(c);
        return;
    }
    c->state = CONN_READING;
    llhttp_resume(&c->parser);
    http_conn_drive(c);
}

/* ------------------------------------------------------------ streaming */

/* Around a stream call's work on x and its connection c: neither is freed
 * under it, and x's owner is not called back from inside its own call. */
static void s_call_enter(http_exchange_t *x, conn_t *c)
{
    x->in_call++;
    c->busy++;
}

/* Ends the call: frees what it closed. 0, or -1 when x's client is gone. */
static int s_call_leave(http_exchange_t *x, conn_t *c)
{
    c->busy--;
    x->in_call--;
    int rc = x->gone ? -1 : 0;
    http_conn_release(c);
    http_x_maybe_free(x);
    return rc;
}

int http_stream_begin(http_exchange_t *x, int status, const char *content_type, const char *headers,
                      const http_stream_fns_t *fns)
{
    conn_t *c = x->conn;
    if (!c || x->state != X_SERVING)
        return -1;
    /* HTTP/1.0 has no chunks: the close ends the body */
    x->chunked = !x->http10;
    x->no_body = x->view.head || !s_status_has_body(status);
    bool keep = x->chunked && x->keep_alive && !c->srv->stopping;
    s_head(c, x, status, content_type,
           x->chunked && s_status_has_body(status) ? "Transfer-Encoding: chunked\r\n" : NULL,
           headers, keep);
    http_x_drop_request(x);
    x->fns = *fns;
    x->state = X_STREAMING;
    /* a stream's kernel buffer is bounded too: with autotuning it could
     * hold megabytes for a reader that has stopped, out of our sight */
    int sndbuf = (int)c->srv->cfg.stream_sndbuf;
    if (sndbuf > 0 && setsockopt(c->io.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) < 0)
        log_debug("SO_SNDBUF on a stream: %s", strerror(errno));
    c->close_after = !keep;
    c->state = CONN_STREAMING;
    s_call_enter(x, c);
    http_conn_flush(c);
    return s_call_leave(x, c);
}

int http_stream_write(http_exchange_t *x, const void *data, size_t len)
{
    conn_t *c = x->conn;
    if (!c || x->state != X_STREAMING)
        return -1;
    if (x->no_body || len == 0)
        return 0;
    size_t limit = c->srv->cfg.output_limit;
    size_t queued = s_out_queued(c);
    s_call_enter(x, c);
    if (queued && queued + len > limit) {
        log_debug("a stream's reader is %zu bytes behind: closing", queued);
        http_conn_close(c);
    } else {
        out_t *o = &c->out;
        if (o->off > o->buf.cap / 2) { /* keep the queue at the front */
            memmove(o->buf.data, o->buf.data + o->off, o->buf.len - o->off);
            o->buf.len -= o->off;
            o->off = 0;
        }
        if (x->chunked) {
            char size[24];
            int n = snprintf(size, sizeof size, "%zx\r\n", len);
            http_buf_reserve(&o->buf, (size_t)n + len + 2);
            http_buf_add(&o->buf, size, (size_t)n);
            http_buf_add(&o->buf, data, len);
            http_buf_add(&o->buf, "\r\n", 2);
        } else {
            http_buf_add(&o->buf, data, len);
        }
        /* with bytes already queued the socket is full: EV_WRITE is on */
        if (!queued)
            http_conn_flush(c);
        if (c->state == CONN_STREAMING && s_out_queued(c) > limit) {
            log_debug("a stream's reader is %zu bytes behind: closing", s_out_queued(c));
            http_conn_close(c);
        }
    }
    return s_call_leave(x, c);
}

size_t http_stream_queued(const http_exchange_t *x)
{
    return x->conn && x->state == X_STREAMING ? s_out_queued(x->conn) : 0;
}

void http_stream_end(http_exchange_t *x)
{
    conn_t *c = x->conn;
    if (!c || x->state != X_STREAMING) {
        x->state = X_DONE;
        return;
    }
    bool queued = s_out_queued(c) > 0;
    if (x->chunked && !x->no_body)
        http_buf_add(&c->out.buf, "0\r\n\r\n", 5);
    http_x_detach(x, X_DONE);
    c->state = CONN_WRITING;
    c->busy++;
    if (queued) /* EV_WRITE is on already: from now on, for a response */
        http_conn_watch(c, EV_WRITE);
    else
        http_conn_flush(c);
    c->busy--;
    http_x_maybe_free(x);
    http_conn_release(c);
}
