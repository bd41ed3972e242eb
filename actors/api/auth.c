/*
 * auth.c - the API key cache and the check of a request's token
 * (docs/security.md).
 *
 * Every AUTH_REFRESH_S the cache sends the store the key clock it holds
 * (KEYS_READ); the store answers the clock and, when it moved (a key made
 * or revoked anywhere), every live key: id, name, SHA-256 of the token,
 * admin. A token is checked here, in memory: its SHA-256 picks a slot of
 * an open-addressing table and the whole hash is compared in constant
 * time. The token itself is never kept, copied or logged.
 */
#include "config.h"

#include "actors/api/auth.h"

#include "runtime/clock.h"
#include "runtime/log.h"
#include "runtime/token.h"

#include <ctype.h>
#include <ev.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t hash[TOKEN_HASH_LEN];
    api_caller_t who;
    bool used;
} slot_t;

struct auth {
    actor_t *self;
    bool required;
    char *store;
    double timeout_s;
    ev_timer refresh;
    bool asking;
    uint64_t version; /* the key clock the table is of (0: none yet) */
    double fresh_at;  /* monotonic ms of the last good read */
    slot_t *slots;    /* capacity a power of two, at most half full */
    size_t capacity;
};

static size_t s_slot_of(const auth_t *a, const uint8_t hash[TOKEN_HASH_LEN])
{
    uint64_t h;
    memcpy(&h, hash, sizeof h); /* SHA-256 output: uniform already */
    return (size_t)h & (a->capacity - 1);
}

/* Builds the table from the store's JSON; -1 (the old table stays) when
 * it is not what the store sends. */
static int s_load(auth_t *a, const char *text)
{
    json_t *arr = json_loads(text, 0, NULL);
    if (!json_is_array(arr)) {
        json_decref(arr);
        return -1;
    }
    size_t n = json_array_size(arr), cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    slot_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        abort();
    auth_t tmp = {.capacity = cap};
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        json_int_t id = json_integer_value(json_object_get(e, "id"));
        const char *name = json_string_value(json_object_get(e, "name"));
        uint8_t hash[TOKEN_HASH_LEN];
        if (id <= 0 || !name
            || token_hash_from_hex(json_string_value(json_object_get(e, "hash")), hash) < 0) {
            free(slots);
            json_decref(arr);
            return -1;
        }
        size_t k = s_slot_of(&tmp, hash);
        while (slots[k].used)
            k = (k + 1) & (cap - 1);
        slot_t *s = &slots[k];
        s->used = true;
        memcpy(s->hash, hash, sizeof hash);
        s->who.id = (uint64_t)id;
        s->who.admin = json_is_true(json_object_get(e, "admin"));
        snprintf(s->who.name, sizeof s->who.name, "%s", name);
    }
    json_decref(arr);
    free(a->slots);
    a->slots = slots;
    a->capacity = cap;
    return 0;
}

static void s_read_reply(actor_t *self, int status, msg_t *reply, void *arg)
{
    auth_t *a = arg;
    a->asking = false;
    if (status != 0 || !reply || reply->type != MSG_KEYS)
        return; /* the next tick asks again; past AUTH_STALE_S tokens get 503 */
    if (reply->keys.keys) {
        if (s_load(a, reply->keys.keys) < 0) {
            log_error("the store sent API keys this instance cannot read");
            return;
        }
        if (a->version)
            log_info("API keys changed (key clock %llu)", (unsigned long long)reply->keys.version);
    }
    a->version = reply->keys.version;
    a->fresh_at = clock_mono_ms();
}

static void s_ask(auth_t *a)
{
    if (a->asking)
        return;
    msg_t *m = msg_new(MSG_KEYS_READ);
    m->keys_read.version = a->version;
    if (actor_request(a->self, a->store, m, a->timeout_s, s_read_reply, a) == 0)
        a->asking = true;
    msg_destroy(&m);
}

static void s_on_refresh(struct ev_loop *loop, ev_timer *w, int revents)
{
    s_ask(w->data);
}

auth_t *auth_new(actor_t *self, bool required, const char *store, double timeout_s)
{
    auth_t *a = calloc(1, sizeof *a);
    if (!a || !(a->store = strdup(store)))
        abort();
    a->self = self;
    a->required = required;
    a->timeout_s = timeout_s < AUTH_REFRESH_S * 4 ? timeout_s : AUTH_REFRESH_S * 4;
    if (required) {
        ev_timer_init(&a->refresh, s_on_refresh, 0., AUTH_REFRESH_S);
        a->refresh.data = a;
        ev_timer_start(actor_loop(self), &a->refresh);
    }
    return a;
}

void auth_destroy(auth_t **ap)
{
    auth_t *a = *ap;
    if (!a)
        return;
    if (a->required)
        ev_timer_stop(actor_loop(a->self), &a->refresh);
    free(a->slots);
    free(a->store);
    free(a);
    *ap = NULL;
}

bool auth_required(const auth_t *a)
{
    return a->required;
}

/* The token of "Bearer <token>" (scheme in any case, RFC 6750), or NULL. */
static const char *s_bearer(const char *h)
{
    if (!h || strncasecmp(h, "bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
        return NULL;
    h += 6;
    while (*h == ' ' || *h == '\t')
        h++;
    return *h ? h : NULL;
}

static const api_caller_t *s_find(const auth_t *a, const char *token)
{
    if (!a->slots)
        return NULL;
    uint8_t hash[TOKEN_HASH_LEN];
    token_hash(token, strlen(token), hash);
    const api_caller_t *found = NULL;
    for (size_t k = s_slot_of(a, hash); a->slots[k].used; k = (k + 1) & (a->capacity - 1))
        if (token_hash_equal(a->slots[k].hash, hash))
            found = &a->slots[k].who;
    return found;
}

int auth_check(auth_t *a, const http_request_t *rq, const char *authorization, bool token_query,
               api_caller_t *out, const char **why, const char **challenge)
{
    memset(out, 0, sizeof *out);
    if (!a->required)
        return 0;
    static const char bare[] = "WWW-Authenticate: Bearer realm=\"imagejobs\"\r\n";
    static const char invalid[] =
        "WWW-Authenticate: Bearer realm=\"imagejobs\", error=\"invalid_token\"\r\n";
    const char *token = NULL;
    if (authorization) {
        if (!(token = s_bearer(authorization))) {
            *why = "the Authorization header must be \"Bearer <token>\"";
            *challenge = invalid;
            return 401;
        }
    } else if (token_query) {
        token = http_request_query(rq, "access_token");
    }
    if (!token || !*token) {
        *why = token_query ? "an API token is required: send Authorization: Bearer <token>, or "
                             "?access_token=<token> on an event stream"
                           : "an API token is required: send Authorization: Bearer <token>";
        *challenge = bare;
        return 401;
    }
    if (!a->version || clock_mono_ms() - a->fresh_at > AUTH_STALE_S * 1000.) {
        s_ask(a);
        *why = "API keys unavailable (the database cannot be read): retry";
        *challenge = NULL;
        return 503;
    }
    const api_caller_t *who = token_well_formed(token) ? s_find(a, token) : NULL;
    if (!who) {
        *why = "invalid API token (unknown or revoked)";
        *challenge = invalid;
        return 401;
    }
    *out = *who;
    return 0;
}
