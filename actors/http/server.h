/*
 * server.h - an HTTP/1.1 server library on one libev loop: the listener,
 * connections, parsing (llhttp, strict), keep-alive and pipelining, limits and
 * timeouts, whole responses and streamed ones. See docs/http.md.
 *
 * It knows nothing of what it serves (the split of nginx's HTTP core and its
 * handlers): every complete request goes to the one on_request callback of
 * its user, who answers it with http_respond() or a stream, at once or
 * later. Everything here runs on the loop's thread, and no call blocks.
 *
 * Order: a connection serves one request at a time. The next pipelined
 * request is parsed only once the current response (a stream included) has
 * been written in full, so responses leave in request order and a client
 * that pipelines faster than it reads is held back by TCP.
 *
 * Limits, fixed by the protocol layer and answered by it: request line and
 * headers 16 KiB (431), body 1 MiB (413, refused before the body is sent
 * when its length is announced), a malformed request (400), a request that
 * does not arrive within the stall timeout (408). Each of these answers
 * closes the connection.
 *
 * Error bodies: those answers go through the user's on_error callback, which
 * answers the exchange as it answers its own errors (the job API sends JSON
 * {"error": ...}); the library has no body format of its own to keep in
 * step with its user's. Without on_error, the message goes out as
 * text/plain.
 */
#ifndef IMAGEJOBS_HTTP_SERVER_H
#define IMAGEJOBS_HTTP_SERVER_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actors/http/query.h"

typedef struct http_server http_server_t;

/* Headers a server can be told to keep for its user, and the longest
 * value kept (a longer one is refused 431, as a head too large is). */
#define HTTP_KEEP_HEADERS_MAX 6
#define HTTP_KEEP_VALUE_MAX 512

/* One request and its response, from the request's first byte until the
 * response has been handed over (or the client has gone). */
typedef struct http_exchange http_exchange_t;

/* A complete request, valid until its response starts (http_respond() or
 * http_stream_begin()) or its client goes. */
typedef struct {
    unsigned method;    /* llhttp_method_t: HTTP_GET, ... */
    bool head;          /* HEAD: the response goes out without its body */
    const char *path;   /* NUL-terminated, without query or fragment, not decoded */
    http_query_t query; /* the query string's pairs, decoded */
    const char *body;   /* NUL-terminated copy of the body (body_len bytes) */
    size_t body_len;
    const char *content_type; /* the Content-Type header, or NULL */
    int64_t received_at_us;   /* wall clock when the request was read in full */
    /* the values of the headers the server was told to keep
     * (http_server_config_t.keep_headers), by position; NULL when absent */
    const char *kept[HTTP_KEEP_HEADERS_MAX];
} http_request_t;

/* The value of the first query pair named key, or NULL. */
static inline const char *http_request_query(const http_request_t *rq, const char *key)
{
    return http_query_get(&rq->query, key);
}

/* A request to answer: x is the user's until it answers it. */
typedef void (*http_request_fn)(http_exchange_t *x, const http_request_t *rq, void *arg);

/* The server refuses a request itself (400, 408, 413, 431) with message:
 * answer x with http_respond() before returning. */
typedef void (*http_error_fn)(http_exchange_t *x, int status, const char *message, void *arg);

typedef struct {
    struct ev_loop *loop;
    /* HOST:PORT ("[::1]:8080" for IPv6; an empty host means every
     * address); port 0 picks a free one. */
    const char *listen;
    /* Header lines (each ending in CRLF) sent first in every response,
     * the server's own answers included; NULL for none. Copied. */
    const char *headers;
    /* A client that leaves a request incomplete, or stops reading what is
     * written to it, this long is disconnected. */
    double stall_timeout_s;
    /* An idle keep-alive connection is closed after this long. */
    double keepalive_timeout_s;
    /* Bytes of a stream queued for a client and not yet written past which
     * the connection is closed (a reader too slow for its stream). 0: 1 MiB. */
    size_t output_limit;
    /* SO_SNDBUF of a streamed response's socket (the kernel's share of
     * what a slow reader has not taken); 0: the kernel's default, which
     * autotunes up to megabytes. */
    size_t stream_sndbuf;
    /* Names of request headers whose values the user reads
     * (http_request_t.kept, in this order), lower case, NULL-terminated, at
     * most HTTP_KEEP_HEADERS_MAX; NULL for none. Not copied: static
     * storage. A header given twice keeps its values joined with ", "
     * (RFC 9110 5.3). */
    const char *const *keep_headers;
    http_request_fn on_request; /* required */
    http_error_fn on_error;     /* NULL: text/plain */
    /* After http_server_shutdown() returned false: the last connection has
     * closed. NULL: not told. */
    void (*on_drained)(void *arg);
    /* Each response as its head goes out (NULL: none): its status, the
     * exchange's tag (http_exchange_set_tag; -1 unless set) and the time
     * since the request was read (0 for the server's own refusals of what
     * it could not read), for the user's metrics. */
    void (*on_respond)(int status, int tag, int64_t since_request_ns, void *arg);
    void *arg; /* passed to the callbacks above */
} http_server_config_t;

/* Binds and listens (cfg is copied). Returns NULL with the reason in err
 * ("cannot listen on ...") when the address cannot be used. */
http_server_t *http_server_new(const http_server_config_t *cfg, char *err, size_t errlen);

/* The port listened on (the one picked, for port 0). */
int http_server_port(const http_server_t *srv);

/* Open connections. */
size_t http_server_connections(const http_server_t *srv);

/* An orderly stop: the listener closes; idle connections close now, busy
 * ones after their response, which says Connection: close. Open streams
 * run on until their owners end them; their connections then close as
 * idle ones. Returns true when no connection is
 * left; otherwise on_drained runs once the last one has closed. */
bool http_server_shutdown(http_server_t *srv);

/* Closes every connection (open streams' closed callbacks run) and frees
 * the server; NULLs *srvp. An exchange still held stays valid until its
 * last release, answered by nobody. */
void http_server_destroy(http_server_t **srvp);

/* --------------------------------------------------------- responding */

/* Answers x: status, the Content-Type (NULL: none), extra header lines
 * (each ending in CRLF, or NULL) and the body (malloc'd, consumed: *bodyp
 * is NULLed; NULL for none). Content-Length and Connection are added here.
 * Once per exchange; x is not the caller's any more after it (unless held).
 * An exchange whose client has gone takes the call and drops the body. */
void http_respond(http_exchange_t *x, int status, const char *content_type, const char *headers,
                  char **bodyp, size_t body_len);

/* Keeps x's memory valid past its answer or its client's departure, for
 * code that will look at it later (a reply to come from another actor);
 * each hold is dropped with one release, which frees x after the last. */
void http_exchange_hold(http_exchange_t *x);
void http_exchange_release(http_exchange_t *x);

/* The client's address as "HOST:PORT" ("[v6]:PORT"), into buf; "" when
 * the client has gone or the address cannot be read. */
void http_exchange_peer(const http_exchange_t *x, char *buf, size_t len);

/* Header lines ("Name: value\r\n"..., copied) for x's response, beside
 * the server's own (http_server_config_t.headers): what depends on the
 * request, as a CORS origin echoed from a list. A later call replaces them. */
void http_exchange_set_headers(http_exchange_t *x, const char *headers);

/* A small number of the user's on x (its route, say), handed to
 * on_respond. */
void http_exchange_set_tag(http_exchange_t *x, int tag);

/* True when x can take no response any more: its client has gone, or it
 * has been answered. */
bool http_exchange_gone(const http_exchange_t *x);

/* ---------------------------------------------------------- streaming */

/* The owner of a stream is told, from the loop, never from inside one of
 * its own calls into the server: */
typedef struct {
    /* the connection ended before http_stream_end(): the client went away,
     * stalled past the stall timeout, or the server is being destroyed.
     * x is invalid once it returns (unless held). Required. */
    void (*closed)(http_exchange_t *x, void *arg);
    /* everything queued has been written, after a write had to queue:
     * the time to produce more. NULL: not told. */
    void (*drained)(http_exchange_t *x, void *arg);
    void *arg;
} http_stream_fns_t;

/* Starts a streamed response to x: the status line and headers go out now;
 * the body follows in http_stream_write()s. HTTP/1.1 gets Transfer-Encoding:
 * chunked and keeps the connection; HTTP/1.0 gets a body delimited by the
 * close. Returns 0, or -1 when the client is already gone (fns will not be
 * called: x is not the caller's any more). */
int http_stream_begin(http_exchange_t *x, int status, const char *content_type, const char *headers,
                      const http_stream_fns_t *fns);

/* Sends len bytes (copied) as the next piece of the body, now or as the
 * client reads. Returns 0, or -1 when the stream is over: the client has
 * gone, or the bytes queued for it passed the output limit and the
 * connection has been closed. After -1 the closed callback does not run
 * and x is not the caller's any more (unless held). Writes to a HEAD
 * request's stream are dropped. */
int http_stream_write(http_exchange_t *x, const void *data, size_t len);

/* Bytes written to x and not yet taken by its client. */
size_t http_stream_queued(const http_exchange_t *x);

/* Ends the body. The connection serves its next request once all of it is
 * out. x is not the caller's any more, and no callback of fns runs. */
void http_stream_end(http_exchange_t *x);

#endif
