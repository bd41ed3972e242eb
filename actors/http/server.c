/*
 * server.c - the HTTP server library (see server.h and docs/http.md): the
 * listener, connections, reading and closing. Parsing and handing a
 * request over is in request.c, writing responses and streams in
 * response.c; conn.h holds what they share.
 *
 * One request per connection is served at a time. When llhttp
 * completes a message we pause it and hand the request to on_request; the
 * next pipelined request is parsed only once the response has been written
 * in full. While a stream runs, what the client sends is read aside (to
 * notice that it has gone) into the connection's pending input, up to a
 * limit, and parsed after the stream.
 *
 * Idle connections are cheap: one conn_t and nothing else. Reads go into
 * one buffer shared by the server; only the bytes that arrive past a
 * complete request are copied into the connection (pend), and an exchange
 * (URL, body) is allocated at its request's first byte.
 *
 * Closing a connection releases its socket and buffers at once, but the
 * struct is freed only once no frame of ours on the stack uses it (busy),
 * and an exchange only once its user's holds are released: nothing is freed
 * under the feet of the code that is running (Redis ae's deferred free).
 */
#include "config.h"

#include "actors/http/conn.h"

#include "runtime/log.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUF (64u * 1024)           /* the server's one read buffer */
#define OUTPUT_LIMIT (1024u * 1024)     /* default output_limit */
#define LINGER_S 2.0                    /* after a last response, drain input this long */
#define LINGER_BYTES (8u * 1024 * 1024) /* ... or this much, then close */
#define ACCEPT_PAUSE_S 0.25             /* out of descriptors: accept again after this */
#define ACCEPT_BATCH 512                /* accepts per wake-up, so clients get a turn */

/* ------------------------------------------------------------ helpers */

void http_buf_reserve(buf_t *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 128;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        abort();
    b->data = p;
    b->cap = cap;
}

void http_buf_add(buf_t *b, const char *data, size_t len)
{
    http_buf_reserve(b, len);
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void http_buf_adds(buf_t *b, const char *s)
{
    http_buf_add(b, s, strlen(s));
}

void http_buf_free(buf_t *b)
{
    free(b->data);
    *b = (buf_t){0};
}

/* (Re)starts the connection's one timer. */
void http_conn_timer(conn_t *c, double seconds)
{
    c->timer.repeat = seconds;
    ev_timer_again(http_conn_loop(c), &c->timer);
}

/* Watches the socket for events (EV_READ and/or EV_WRITE), or for nothing. */
void http_conn_watch(conn_t *c, int events)
{
    struct ev_loop *loop = http_conn_loop(c);
    if (ev_is_active(&c->io) && (c->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(loop, &c->io);
    if (events) {
        ev_io_modify(&c->io, events);
        ev_io_start(loop, &c->io);
    }
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

/* ------------------------------------------------------------ open and close */

/* Releases the socket, watchers and buffers now; the struct itself goes in
 * http_conn_release(). */
void http_conn_close(conn_t *c)
{
    if (c->state == CONN_CLOSED)
        return;
    http_server_t *srv = c->srv;
    ev_io_stop(http_conn_loop(c), &c->io);
    ev_timer_stop(http_conn_loop(c), &c->timer);
    close(c->io.fd);
    http_exchange_t *x = c->x;
    c->x = NULL;
    http_out_free(c);
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
    if (x)
        http_x_gone(x);
    if (srv->stopping && !srv->conns && srv->cfg.on_drained)
        srv->cfg.on_drained(srv->cfg.arg); /* the last response of a stop is out */
}

/* Frees a closed connection once nothing uses it any more. Called last in
 * every event callback and call that may have closed it. */
void http_conn_release(conn_t *c)
{
    if (c->state == CONN_CLOSED && c->busy == 0 && !c->driving)
        free(c);
}

/* The last response is out: shut our side and read (and drop) what the
 * client still sends for a moment, so that closing with unread input does
 * not reset the connection before the client has read that response. */
void http_conn_linger(conn_t *c)
{
    s_pend_free(c);
    shutdown(c->io.fd, SHUT_WR);
    c->state = CONN_LINGERING;
    c->lingered = 0;
    http_conn_watch(c, EV_READ);
    double t = c->srv->cfg.stall_timeout_s < LINGER_S ? c->srv->cfg.stall_timeout_s : LINGER_S;
    http_conn_timer(c, t);
}

/* Serves the requests waiting in pend, one at a time, until one is still
 * being answered or the input runs out; then waits for more input. */
void http_conn_drive(conn_t *c)
{
    if (c->driving)
        return; /* the caller's loop goes on from here */
    c->driving = true;
    while (c->state == CONN_READING && c->pend_len > 0) {
        size_t n = http_conn_parse(c, c->pend + c->pend_off, c->pend_len);
        if (c->state == CONN_CLOSED || c->state == CONN_LINGERING)
            break; /* pend already freed */
        c->pend_off += (uint32_t)n;
        c->pend_len -= (uint32_t)n;
    }
    if (c->pend && c->pend_len == 0)
        s_pend_free(c);
    c->driving = false;
    if (c->state == CONN_READING && !c->x && c->srv->stopping) {
        /* idle after a stream that began before the shutdown (its head
         * promised keep-alive): idle connections close at a shutdown */
        http_conn_close(c);
    } else if (c->state == CONN_READING) {
        http_conn_watch(c, EV_READ);
        /* between requests: the keep-alive clock. Mid-request, the clock
         * started by its first byte (or its body's last progress) runs on. */
        if (!c->x)
            http_conn_timer(c, c->srv->cfg.keepalive_timeout_s);
    } else if (c->state == CONN_STREAMING) {
        http_conn_watch_stream(c);
    }
}

/* ------------------------------------------------------------ reading */

/* Fresh input from the shared read buffer: parsed in place, and only what
 * lies past a complete request is copied (pend). */
static void s_conn_input(conn_t *c, const char *data, size_t len)
{
    if (c->in_body)
        http_conn_timer(c, c->srv->cfg.stall_timeout_s);
    c->driving = true;
    size_t n = http_conn_parse(c, data, len);
    if (n < len && c->state != CONN_CLOSED && c->state != CONN_LINGERING)
        s_pend_add(c, data + n, len - n);
    c->driving = false;
    http_conn_drive(c);
}

static void s_conn_read(conn_t *c)
{
    http_server_t *srv = c->srv;
    size_t room = READ_BUF;
    if (c->state == CONN_STREAMING) /* read aside, up to the limit */
        room = PEND_LIMIT - c->pend_len;
    if (room == 0)
        return;
    ssize_t n = recv(c->io.fd, srv->rbuf, room, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        log_debug("read failed: %s", strerror(errno));
        http_conn_close(c);
        return;
    }
    if (n == 0) { /* the client is done; a request it cut short is dropped */
        http_conn_close(c);
        return;
    }
    if (c->state == CONN_LINGERING) {
        c->lingered += (uint32_t)n;
        if (c->lingered > LINGER_BYTES)
            http_conn_close(c);
        return;
    }
    if (c->state == CONN_STREAMING) {
        s_pend_add(c, srv->rbuf, (size_t)n);
        http_conn_watch_stream(c);
        return;
    }
    s_conn_input(c, srv->rbuf, (size_t)n);
}

/* ------------------------------------------------------------ events */

static void s_conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_t *c = w->data;
    c->busy++;
    if ((revents & EV_READ) && c->state == CONN_SERVING) {
        /* input while a request is served (pipelining): it waits in the
         * socket until the response is out */
        http_conn_watch(c, 0);
    } else if ((revents & EV_READ)
               && (c->state == CONN_READING || c->state == CONN_LINGERING
                   || c->state == CONN_STREAMING))
        s_conn_read(c);
    if ((revents & EV_WRITE) && (c->state == CONN_WRITING || c->state == CONN_STREAMING))
        http_conn_flush(c);
    c->busy--;
    http_conn_release(c);
}

static void s_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    conn_t *c = w->data;
    ev_timer_stop(loop, w);
    c->busy++;
    if (c->state == CONN_READING && c->x) {
        log_debug("request stalled: closing the connection");
        http_conn_refuse(c, 408, "request not received in time");
    } else if (c->state != CONN_SERVING) {
        /* idle keep-alive, a reader that stopped reading, or lingering */
        http_conn_close(c);
    }
    c->busy--;
    http_conn_release(c);
}

static void s_conn_new(http_server_t *srv, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn_t *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->srv = srv;
    http_conn_parser_init(c);
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
    ev_io_start(srv->cfg.loop, &c->io);
    http_conn_timer(c, srv->cfg.keepalive_timeout_s);
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

/* ------------------------------------------------------------ the server */

/* Splits HOST:PORT ("[v6]:PORT" too; an empty host is every address). */
static int s_split_address(const char *addr, char *host, size_t hostlen, char *port, size_t portlen)
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

/* A listening socket on addr, and the port it got. -1 with the reason. */
static int s_listen(const char *addr, int *portp, char *err, size_t errlen)
{
    char host[256], port[8];
    if (s_split_address(addr, host, sizeof host, port, sizeof port) < 0) {
        snprintf(err, errlen, "cannot listen on '%s': expected HOST:PORT", addr);
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
        snprintf(err, errlen, "cannot listen on %s: %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(e));
        return -1;
    }
    /* the port is what callers (port 0) connect to: without it, no server */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(err, errlen, "cannot listen on %s: getsockname: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    *portp = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static void s_server_free(http_server_t *srv)
{
    free((char *)srv->cfg.listen);
    free((char *)srv->cfg.headers);
    free(srv->rbuf);
    free(srv);
}

static char *s_strdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

http_server_t *http_server_new(const http_server_config_t *cfg, char *err, size_t errlen)
{
    if (!cfg->loop || !cfg->listen || !cfg->on_request) {
        snprintf(err, errlen, "an HTTP server needs a loop, an address and on_request");
        return NULL;
    }
    http_server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        abort();
    srv->cfg = *cfg;
    srv->cfg.listen = s_strdup(cfg->listen);
    srv->cfg.headers = s_strdup(cfg->headers ? cfg->headers : "");
    srv->headers_len = strlen(srv->cfg.headers);
    if (!srv->cfg.output_limit)
        srv->cfg.output_limit = OUTPUT_LIMIT;
    srv->rbuf = malloc(READ_BUF);
    if (!srv->rbuf)
        abort();
    int fd = s_listen(srv->cfg.listen, &srv->port, err, errlen);
    if (fd < 0) {
        s_server_free(srv);
        return NULL;
    }
    ev_io_init(&srv->listener, s_accept_cb, fd, EV_READ);
    srv->listener.data = srv;
    ev_timer_init(&srv->accept_pause, s_accept_resume_cb, ACCEPT_PAUSE_S, 0.);
    srv->accept_pause.data = srv;
    ev_io_start(srv->cfg.loop, &srv->listener);
    log_info("listening on %s (port %d)", srv->cfg.listen, srv->port);
    return srv;
}

int http_server_port(const http_server_t *srv)
{
    return srv->port;
}

size_t http_server_connections(const http_server_t *srv)
{
    return srv->nconns;
}

static void s_stop_listening(http_server_t *srv)
{
    if (srv->listener.fd < 0)
        return;
    ev_io_stop(srv->cfg.loop, &srv->listener);
    ev_timer_stop(srv->cfg.loop, &srv->accept_pause);
    close(srv->listener.fd);
    srv->listener.fd = -1;
}

bool http_server_shutdown(http_server_t *srv)
{
    srv->stopping = true;
    s_stop_listening(srv);
    for (conn_t *c = srv->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_READING && !c->x) {
            http_conn_close(c);
            http_conn_release(c);
        }
    }
    return srv->conns == NULL;
}

void http_server_destroy(http_server_t **srvp)
{
    http_server_t *srv = *srvp;
    if (!srv)
        return;
    *srvp = NULL;
    s_stop_listening(srv);
    srv->cfg.on_drained = NULL;
    while (srv->conns) {
        conn_t *c = srv->conns;
        http_conn_close(c);
        http_conn_release(c);
    }
    s_server_free(srv);
}
