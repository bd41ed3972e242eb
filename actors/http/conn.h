/*
 * conn.h - the insides of the HTTP server library, shared by its files and
 * by nothing else: server.c (the listener, connections, reading, closing),
 * request.c (exchanges, parsing a request and handing it over) and
 * response.c (writing responses and streams). See server.c's header for the
 * rules on ownership and deferred freeing.
 */
#ifndef IMAGEJOBS_HTTP_CONN_H
#define IMAGEJOBS_HTTP_CONN_H

#include <ev.h>
#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actors/http/server.h"

#define HEAD_LIMIT (16u * 1024)   /* request line + headers: 431 past it */
#define BODY_LIMIT (1024u * 1024) /* request body: 413 past it */
#define PEND_LIMIT (64u * 1024)   /* input read aside while a stream runs */
/* a chunked body's framing (sizes, extensions, trailers): 413 past it */
#define FRAMING_LIMIT (64u * 1024)

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

typedef enum {
    HDR_OTHER,
    HDR_CONTENT_TYPE,
    HDR_EXPECT,
    HDR_HOST,
    HDR_TRANSFER_ENCODING,
    HDR_KEPT
} header_t;

typedef enum {
    X_READING,   /* its request is being read */
    X_SERVING,   /* with the user, not answered */
    X_STREAMING, /* a stream's body is being written */
    X_DONE       /* answered: the response is the connection's */
} xstate_t;

typedef struct http_conn conn_t;

struct http_exchange {
    http_request_t view; /* what the user sees, filled in when complete */
    conn_t *conn;        /* NULL once answered or once the client has gone */
    buf_t url;
    buf_t body;
    http_stream_fns_t fns;
    uint16_t holds;
    uint8_t in_call; /* inside one of the user's calls on it */
    uint8_t state;   /* xstate_t */
    bool gone;       /* the client left before the answer */
    char *extra;     /* http_exchange_set_headers(): in its response's head */
    int tag;         /* http_exchange_set_tag(); -1 */
    bool chunked;    /* a stream framed in chunks (HTTP/1.1) */
    bool no_body;    /* a stream whose writes are dropped (HEAD, 204, 304) */
    /* parsing */
    char field[24]; /* the header name being read; longer ones aren't ours */
    uint8_t field_len;
    bool field_long;
    header_t header;
    uint8_t hosts;   /* Host header lines */
    char version[8]; /* the request line's version, "1.1" */
    uint8_t version_len;
    char te[48]; /* the Transfer-Encoding lines, joined with commas */
    uint8_t te_len;
    bool te_long;
    char ctype[128];
    uint8_t ctype_len;
    bool has_ctype, ctype_long;
    char expect[16];
    uint8_t expect_len;
    bool expect_long;
    /* the kept headers' values, back to back, each NUL-terminated; kept_at
     * is 1 + the offset of each (0: absent); kept_now the one being read */
    buf_t kept;
    uint16_t kept_at[HTTP_KEEP_HEADERS_MAX];
    uint8_t kept_now;
    bool keep_alive;
    bool http10;
};

/* What a connection writes: head (and a stream's framed pieces) in buf from
 * off, then a whole response's body as it was handed over (not copied). */
typedef struct {
    buf_t buf;
    size_t off;
    char *body;
    size_t body_len, body_off;
} out_t;

typedef enum {
    CONN_READING,   /* waiting for, or reading, a request */
    CONN_SERVING,   /* a request is with the user */
    CONN_STREAMING, /* its response is a stream that has not ended */
    CONN_WRITING,   /* a complete response is being written */
    CONN_LINGERING, /* the last response is out, write side shut: draining */
    CONN_CLOSED     /* socket closed; the struct waits for the frames using it */
} conn_state_t;

struct http_conn {
    ev_io io;       /* EV_READ while reading or lingering, EV_WRITE while writing */
    ev_timer timer; /* keep-alive, stall or linger deadline */
    llhttp_t parser;
    http_server_t *srv;
    conn_t *prev, *next; /* the server's open connections */
    http_exchange_t *x;  /* the request being read, served or streamed */
    out_t out;
    char *pend; /* input read past the request being served */
    uint32_t pend_off, pend_len;
    uint32_t lingered;
    uint8_t state; /* conn_state_t */
    uint8_t busy;  /* frames of ours on the stack that use the struct */
    bool driving;  /* inside http_conn_drive() or s_conn_input() */
    bool in_body;
    bool close_after;
    /* the request being read, as it arrives (request.c's s_scan_head) */
    uint8_t scan;        /* where in its head */
    uint8_t scan_spaces; /* spaces in its request line */
    uint32_t head_len;   /* bytes of its request line and headers so far */
    uint32_t wire_len;   /* bytes of it parsed so far */
    /* why a callback stopped the parser: the status to answer with its
     * message, or -1 to just close */
    int16_t fail;
    const char *fail_msg;
};

struct http_server {
    http_server_config_t cfg; /* listen and headers owned */
    size_t headers_len;
    int port;
    ev_io listener;
    ev_timer accept_pause;
    bool accept_failing; /* out of descriptors: logged once per episode */
    bool stopping;       /* shutdown: no new connections, no keep-alive */
    conn_t *conns;
    size_t nconns;
    char *rbuf;
};

static inline struct ev_loop *http_conn_loop(conn_t *c)
{
    return c->srv->cfg.loop;
}

/* server.c */
void http_buf_reserve(buf_t *b, size_t more);
void http_buf_add(buf_t *b, const char *data, size_t len);
void http_buf_adds(buf_t *b, const char *s);
void http_buf_free(buf_t *b);
/* (Re)starts the connection's one timer. */
void http_conn_timer(conn_t *c, double seconds);
/* Watches the socket for events (EV_READ and/or EV_WRITE), or for nothing. */
void http_conn_watch(conn_t *c, int events);
/* Releases the socket, watchers and buffers now (telling the exchange);
 * the struct goes in http_conn_release(). */
void http_conn_close(conn_t *c);
/* Frees a closed connection once nothing uses it any more. */
void http_conn_release(conn_t *c);
/* After the last response: shut our side, drain input a moment, close. */
void http_conn_linger(conn_t *c);
/* Serves the pipelined requests waiting in pend, then waits for input. */
void http_conn_drive(conn_t *c);

/* request.c */
/* Sets up the connection's parser (strict, every lenient flag off). */
void http_conn_parser_init(conn_t *c);
/* Feeds len bytes to the parser; returns how many it took (fewer when a
 * request completed and is being served, or the connection failed). */
size_t http_conn_parse(conn_t *c, const char *data, size_t len);
/* Answers a request the server refuses itself, and closes after it. */
void http_conn_refuse(conn_t *c, int status, const char *msg);
/* The request's buffers: not needed once its response starts. */
void http_x_drop_request(http_exchange_t *x);
/* Frees x once nothing refers to it. */
void http_x_maybe_free(http_exchange_t *x);
/* The response has started: x leaves its connection. */
void http_x_detach(http_exchange_t *x, xstate_t state);
/* x's connection closed before its answer. */
void http_x_gone(http_exchange_t *x);

/* response.c */
/* Writes what it can of the output; the rest on EV_WRITE. */
void http_conn_flush(conn_t *c);
/* While streaming: read aside until pend is full, write while queued. */
void http_conn_watch_stream(conn_t *c);
void http_out_free(conn_t *c);

#endif
