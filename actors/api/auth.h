/*
 * auth.h - who is asking (docs/security.md): the HTTP actor's check of
 * `Authorization: Bearer <token>` against a cache of the API keys, kept
 * within half a second of PostgreSQL's on every instance. Internal to the
 * HTTP actor (actors/http.c and actors/api/).
 */
#ifndef IMAGEJOBS_API_AUTH_H
#define IMAGEJOBS_API_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "actors/http/server.h"
#include "runtime/actor.h"

/* The key a request came with. id 0: none (auth off). */
typedef struct {
    uint64_t id;
    bool admin;
    char name[65];
} api_caller_t;

typedef struct auth auth_t;

/* The cache asks `store` for the keys every AUTH_REFRESH_S from self's
 * loop (nothing when !required). */
#define AUTH_REFRESH_S 0.5
/* Past this without a successful read the cache refuses every token
 * (503): a key revoked meanwhile must not keep working here. */
#define AUTH_STALE_S 3.0

auth_t *auth_new(actor_t *self, bool required, const char *store, double timeout_s);
void auth_destroy(auth_t **ap);
bool auth_required(const auth_t *a);

/* Who sent rq: 0 and *out; or the HTTP status to answer (401, 503) with
 * its message and WWW-Authenticate line in *why / *challenge. token_query:
 * the route is an event stream, which may also carry ?access_token=
 * (EventSource cannot send headers). Auth off: 0, out->id = 0. */
int auth_check(auth_t *a, const http_request_t *rq, const char *authorization, bool token_query,
               api_caller_t *out, const char **why, const char **challenge);

#endif
