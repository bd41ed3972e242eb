/*
 * sse_client.h - a small blocking client of server-sent event streams
 * (WHATWG HTML, "Server-sent events", text/event-stream) for the tests.
 *
 * One sse_t is one HTTP/1.1 GET on 127.0.0.1: it sends the request, reads
 * the status line and headers, then hands out the events of the body one
 * at a time. The body may be chunked, Content-Length delimited or run until
 * the server closes; the bytes may arrive split anywhere (an event across
 * chunks, a chunk header or a CRLF across reads). Event lines are parsed as
 * the standard says: lines end in LF, CR or CRLF; "field: value" with one
 * leading space of the value dropped; data lines joined with LF; an event
 * is dispatched at a blank line and only when its data is not empty; lines
 * that start with ':' are comments (counted). Bytes are kept as they came
 * (no UTF-8 decoding, a leading BOM excepted).
 *
 * Every wait is bounded by a poll() timeout. Not thread-safe: one thread
 * per sse_t.
 */
#ifndef IMAGEJOBS_TESTS_SSE_CLIENT_H
#define IMAGEJOBS_TESTS_SSE_CLIENT_H

#include <stddef.h>

typedef struct sse sse_t;

/* One dispatched event. The strings belong to the sse_t and stay valid
 * until the next sse_next or sse_close on it. */
typedef struct {
    const char *id;    /* the stream's last event ID at dispatch ("" if none) */
    const char *event; /* the event type; "message" when no event field came */
    const char *data;  /* the data lines joined with LF, NUL-terminated */
    size_t data_len;   /* strlen(data), unless the data held a NUL */
} sse_event_t;

typedef struct {
    const char *last_event_id; /* sent as Last-Event-ID; NULL: none */
    const char *extra_headers; /* "Name: value\r\n" lines; NULL: none */
    int rcvbuf;                /* SO_RCVBUF set before connect; 0: the default */
    int timeout_ms;            /* for connect and the response head; < 0: none */
} sse_opts_t;

/* Connects to 127.0.0.1:port, sends "GET path HTTP/1.1" with Host, Accept:
 * text/event-stream, Cache-Control: no-cache, the optional Last-Event-ID and
 * extra headers, and waits up to timeout_ms for the status line and headers.
 * When the answer is not an event stream (not 200 text/event-stream) its
 * whole body is read too, within the same time, for sse_body. Returns NULL
 * only when the connection cannot be made (errno says why); a head that did
 * not come in time leaves sse_status at 0. The caller owns the result
 * (sse_close). */
sse_t *sse_open(int port, const char *path, const char *last_event_id, const char *extra_headers,
                int timeout_ms);

/* sse_open with all the options (opts NULL: none, and no timeout). */
sse_t *sse_open_opts(int port, const char *path, const sse_opts_t *opts);

/* The HTTP status, or 0 when no complete head came. */
int sse_status(const sse_t *s);

/* The first value of header name (case-insensitive), without surrounding
 * blanks, or NULL when absent. Owned by s. */
const char *sse_header(const sse_t *s, const char *name);

/* The body of an answer that is not an event stream (a 404 or 503 JSON
 * document), NUL-terminated; "" for a stream. Owned by s. */
const char *sse_body(const sse_t *s);

/* Waits up to timeout_ms (< 0: forever) for the next event.
 * 1: *ev holds it.
 * 0: the stream ended cleanly: the final chunk, the end of a Content-Length
 *    body, or EOF of a close-delimited body; an event not yet closed by a
 *    blank line is dropped, as the standard says. Every later call says 0.
 * -1: errno ETIMEDOUT when nothing completed in time, not even the head
 *    (the stream goes on: call again); otherwise an error that stays:
 *    ECONNRESET (the peer reset, or EOF inside a chunked or Content-Length
 *    body), EPROTO (not an event stream, a malformed head or chunk), ENOMEM
 *    (an event past 64 MiB), or a socket error. */
int sse_next(sse_t *s, sse_event_t *ev, int timeout_ms);

/* The stream's last event ID string ("" when none), as the standard keeps
 * it: set at each blank line from the last id field seen, even when no event
 * is dispatched there. Owned by s; copy it before sse_close to reconnect. */
const char *sse_last_event_id(const sse_t *s);

/* How many comment lines (": keep-alive") came so far. */
int sse_comments(const sse_t *s);

/* The last valid retry field in milliseconds, or -1 when none came. */
long sse_retry_ms(const sse_t *s);

/* The connected socket, for a test that wants to poll or shut it down
 * itself; s still owns it. */
int sse_fd(const sse_t *s);

/* Sets SO_RCVBUF on the connected socket. Linux may no longer shrink the
 * window it already advertised: to make the server see a slow reader from
 * the first byte, pass sse_opts_t.rcvbuf, which is set before connect. */
void sse_set_rcvbuf(sse_t *s, int bytes);

/* Closes the connection at once (unread bytes make it a reset) and frees s
 * (NULL is fine). */
void sse_close(sse_t *s);

#endif
