/*
 * http_api.h - the seam between the HTTP actor's connection layer (http.c)
 * and its routes (http_api.c). Private to the http actor.
 *
 * The connection layer reads one complete request at a time from a
 * connection and hands it to http_api_route(); the routes answer it exactly
 * once with http_respond(), at once or from the callback of an http_ask().
 * Until then the connection reads nothing more, which is what keeps
 * pipelined responses in request order.
 */
#ifndef IMAGEJOBS_HTTP_API_H
#define IMAGEJOBS_HTTP_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actors/http.h"
#include "messages/message.h"
#include "runtime/actor.h"

/* One request being served on one connection, until it is answered. */
typedef struct http_conn http_exchange_t;

/* A complete request, valid until the exchange is answered. */
typedef struct {
    unsigned method;          /* enum http_method */
    bool head;                /* HEAD: the response goes out without its body */
    const char *path;         /* NUL-terminated, without query or fragment */
    const char *body;         /* NUL-terminated copy of the body (body_len bytes) */
    size_t body_len;
    const char *content_type; /* the Content-Type header, or NULL */
    int64_t received_at_us;   /* wall clock when the request was read in full */
} http_request_t;

/* Implemented by http_api.c: answers req on x (now or later). */
void http_api_route(actor_t *self, http_exchange_t *x, const http_request_t *req);

/* The actor's configuration, defaults filled in. */
const http_config_t *http_config(actor_t *self);

/* Answers the exchange: status, the Content-Type (NULL: none), extra header
 * lines (each ending in CRLF, or NULL), and the body (malloc'd, consumed:
 * *bodyp is NULLed; NULL for none). The CORS, Content-Length and
 * Connection headers are added here. Called exactly once per exchange. */
void http_respond(http_exchange_t *x, int status, const char *content_type,
                  const char *headers, char **bodyp, size_t body_len);

/* Answers the exchange with {"error": "<message>"} (implemented in
 * http_api.c, where the JSON is). */
void http_respond_error(http_exchange_t *x, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The outcome of http_ask(): x is NULL when the client has gone meanwhile
 * (the callback still runs, to free arg and finish side effects); status
 * and reply are actor_request()'s. */
typedef void (*http_reply_fn)(actor_t *self, http_exchange_t *x, int status, msg_t *reply,
                              void *arg);

/* Sends request (borrowed) to actor `to` for the exchange, with the
 * configured timeout; cb runs exactly once. Returns 0, or -1 (errno) when
 * it could not be sent: cb will not run. */
int http_ask(http_exchange_t *x, const char *to, msg_t *request, http_reply_fn cb, void *arg);

#endif
