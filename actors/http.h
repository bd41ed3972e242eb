/*
 * http.h - the HTTP actor: the job API of DESIGN.md ("HTTP API") on
 * HTTP/1.1 with keep-alive and pipelining, CORS, and JSON bodies.
 *
 * The actor is named "http" (ACTOR_HTTP). It owns an HTTP server
 * (actors/http/server.h: the listener, every client connection, limits and
 * timeouts) on its own libev loop, and turns each request into a request
 * to the store actor (and, on a cancel, an event on the bus topic "cancel"
 * and a request to the redis actor). http.c holds the routes, and
 * actors/http/input.c the checks of request bodies.
 *
 * Limits (the server's): request line and headers 16 KiB (431 past it),
 * body 1 MiB (413). HEAD is answered as GET without the body.
 */
#ifndef IMAGEJOBS_HTTP_H
#define IMAGEJOBS_HTTP_H

#include <stddef.h>

#include "runtime/actor.h"
#include "runtime/runtime.h"

typedef struct {
    /* HOST:PORT to listen on ("[::1]:8080" for IPv6; an empty host means
     * every address); port 0 picks a free port. Default 127.0.0.1:8080. */
    const char *listen;
    /* Access-Control-Allow-Origin: "*", one origin, or a comma-separated
     * list (an Origin among them is echoed back). Default "*" with auth
     * off, none with auth required. */
    const char *cors_origin;
    /* Every /api/ route needs an API key (docs/security.md). */
    bool auth_required;
    /* This instance's id: the origin of the cancels it publishes.
     * Default "local". */
    const char *instance;
    /* Names of the actors asked for jobs and for Redis. Defaults "store"
     * and "redis". */
    const char *store;
    const char *redis;
    /* How long to wait for a store or redis reply before answering 503.
     * Default 5 s. */
    double request_timeout_s;
    /* A client that leaves a request (headers or body) incomplete, or stops
     * reading its response, this long is disconnected. The request line and
     * headers must all arrive within it; the body must make progress within
     * it. Default 10 s. */
    double stall_timeout_s;
    /* An idle keep-alive connection is closed after this long. Default
     * 60 s. */
    double keepalive_timeout_s;
    /* Event streams open at once past which a new one is refused 503
     * (--max-streams). Default 10,000. */
    size_t max_streams;
    /* Bytes queued for a slow stream client past which it is disconnected
     * (the server's output limit). Default 1 MiB. */
    size_t stream_buffer;
    /* A stream silent this long gets a ": keep-alive" comment. Default 15 s. */
    double keepalive_s;
    /* The job view's bound in bytes (--view-cache-mb): GET /api/jobs/{id}
     * from memory, kept exact by the job events (docs/store.md). 0: off,
     * every GET reads PostgreSQL. */
    size_t view_bytes;
} http_config_t;

/* Starts the http actor: binds and listens on cfg->listen before returning
 * (strings are copied). Returns NULL with the reason in err when the
 * address cannot be used (taken, malformed) or the actor cannot start. */
actor_t *http_start(runtime_t *rt, const http_config_t *cfg, char *err, size_t errlen);

/* The port the actor listens on (the one picked, for port 0). Any thread. */
int http_port(actor_t *http);

/* Stops the actor: closes the listener and every connection (requests
 * still waiting for the store are answered 503 first), joins the thread,
 * NULLs *httpp. */
void http_destroy(actor_t **httpp);

#endif
