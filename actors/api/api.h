/*
 * api.h - what the HTTP actor's route files share (actors/http.c, which
 * owns the actor and the routing table, and the files of actors/api/): answering in
 * the API's JSON, asking another actor for an exchange, checking an id.
 * Nothing outside the HTTP actor includes it.
 */
#ifndef IMAGEJOBS_API_H
#define IMAGEJOBS_API_H

#include <jansson.h>
#include <stdbool.h>

#include "actors/api/auth.h"
#include "actors/http.h"
#include "actors/http/server.h"
#include "messages/message.h"
#include "runtime/actor.h"

/* The actor's state (http.c). */
typedef struct http_actor http_actor_t;

/* The actor's configuration (strings owned by the actor). */
const http_config_t *api_config(actor_t *self);

/* Answers with doc (consumed) as the JSON body. */
void api_json(http_exchange_t *x, int status, json_t *doc, const char *headers);

/* Answers {"error": "<fmt...>"} with status. */
void api_error(http_exchange_t *x, int status, const char *headers, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Answers a store or redis request that failed: no reply in time (503),
 * an ERROR reply (-ENOENT: 404 not_found, -EINVAL: 400, -EAGAIN: 503
 * "<service> unavailable"), or a reply of the wrong kind (500). */
void api_backend_failed(http_exchange_t *x, int status, const msg_t *reply, const char *not_found,
                        const char *service);

/* The outcome of api_ask(): x is NULL when the client has gone meanwhile
 * (the callback still runs, to free arg and finish side effects); status
 * and reply are actor_request()'s. */
typedef void (*http_reply_fn)(actor_t *self, http_exchange_t *x, int status, msg_t *reply,
                              void *arg);

/* Sends *msgp (destroyed) to actor `to` for the exchange. On failure (the
 * actor is not there) answers 503 and returns -1: cb will not run. */
int api_ask(actor_t *self, http_exchange_t *x, const char *to, msg_t **msgp, http_reply_fn cb,
            void *arg, const char *service);

/* The key of the request being routed (id 0: auth off); valid during the
 * route's call only. */
const api_caller_t *api_caller(actor_t *self);

/* The key whose jobs alone the request may see or change: the caller's,
 * or 0 (every job) for an admin key or with auth off. Goes in the owner
 * field of every request to the store (messages.def). */
uint64_t api_scope(actor_t *self);

/* Who asked, for a cancel's audit (cancelled_by): the key's name, or with
 * auth off this instance and the client's address. */
void api_who(actor_t *self, http_exchange_t *x, char *buf, size_t len);

/* Checks and lower-cases an id from the path. Answers 400 and returns false
 * when it is missing or not a UUID. */
bool api_check_id(http_exchange_t *x, char *id, const char *name);

/* Sends request (borrowed) to actor `to` for the exchange, with the
 * configured timeout; cb runs exactly once. Returns 0, or -1 (errno) when
 * it could not be sent: cb will not run (nothing answered). */
int api_send(actor_t *self, http_exchange_t *x, const char *to, msg_t *request, http_reply_fn cb,
             void *arg);

/* The operators' routes (actors/api/ops.c): GET /healthz, /readyz,
 * /metrics. */
void api_healthz(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id);
void api_readyz(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id);
void api_metrics(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id);

/* The cancel routes (actors/api/cancel.c). */
void api_job_cancel(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id);
void api_jobs_cancel(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id);
void api_combination_cancel(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id);

/* POST /api/jobs/{id}/resume (actors/api/resume.c). */
void api_job_resume(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id);

#endif
