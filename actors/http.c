/*
 * http.c - the HTTP actor: the routes of the job API (DESIGN.md "HTTP API"
 * and the seed's cancel document) on the server library of
 * actors/http/server.h, which it owns. A route checks its input
 * (actors/http/input.h), asks the store or redis actor with
 * actor_request() and answers from the reply, in JSON.
 *
 * Every error is {"error": "..."}, the server library's own refusals (431,
 * 413, 400, 408) included, and a field that is wrong is named in it. Ids
 * are checked with uuid_valid() and lower-cased before they reach another
 * actor, so that a cancel event's job_id compares equal to the one the
 * generators hold.
 */
#include "config.h"

#include "actors/http.h"

#include "actors/api/api.h"
#include "actors/api/web.h"
#include "actors/events/hub.h"
#include "actors/http/input.h"
#include "actors/http/server.h"
#include "messages/limits.h"
#include "runtime/log.h"
#include "runtime/metrics.h"
#include "runtime/names.h"
#include "runtime/uuid.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <llhttp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char s_preflight_headers[] = "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
                                          "Access-Control-Allow-Headers: Authorization, "
                                          "Content-Type, Last-Event-ID, Idempotency-Key, "
                                          "Cancel-After\r\n"
                                          "Access-Control-Max-Age: 86400\r\n";

/* The actor's state. */
struct http_actor {
    actor_t *self;
    http_config_t cfg; /* strings owned */
    http_server_t *server;
    hub_t *hub; /* the event streams */
    int port;
    auth_t *auth;
    api_caller_t caller; /* the key of the request being routed */
    /* --cors-origin as a list (more than one): an Origin among them is
     * echoed back, with Vary: Origin */
    char **origins;
    size_t norigins;
};

/* The kernel's send buffer of an event stream: enough for a preview in
 * flight; what a slow reader leaves beyond it counts against the stream's
 * output limit (--stream-buffer). */
#define STREAM_SNDBUF (64 * 1024)

/* Request headers the routes read (http_request_t.kept, in this order) */ /* clang-format off */
enum { KEPT_LAST_EVENT_ID, KEPT_IDEMPOTENCY_KEY, KEPT_CANCEL_AFTER, KEPT_AUTHORIZATION, KEPT_ORIGIN,
       KEPT_IF_NONE_MATCH };
static const char *const s_kept_headers[] = {"last-event-id", "idempotency-key", "cancel-after",
    "authorization", "origin", "if-none-match", NULL};
/* clang-format on */

const http_config_t *api_config(actor_t *self)
{
    return &((http_actor_t *)actor_state(self))->cfg;
}

const api_caller_t *api_caller(actor_t *self)
{
    return &((http_actor_t *)actor_state(self))->caller;
}

uint64_t api_scope(actor_t *self)
{
    const api_caller_t *c = api_caller(self);
    return c->admin ? 0 : c->id;
}

void api_who(actor_t *self, http_exchange_t *x, char *buf, size_t len)
{
    const api_caller_t *c = api_caller(self);
    if (c->id) {
        snprintf(buf, len, "%s", c->name);
        return;
    }
    char peer[80];
    http_exchange_peer(x, peer, sizeof peer);
    snprintf(buf, len, "%s/%s", api_config(self)->instance, peer[0] ? peer : "?");
}

/* ------------------------------------------------------------ responses */

/* Answers with doc (consumed) as the JSON body. */
void api_json(http_exchange_t *x, int status, json_t *doc, const char *headers)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text) {
        log_error("cannot encode a JSON response");
        status = 500;
        text = strdup("{\"error\":\"internal error\"}");
        if (!text)
            abort();
    }
    http_respond(x, status, "application/json", headers, &text, strlen(text));
}

void api_error(http_exchange_t *x, int status, const char *headers, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    http_utf8_trim(msg);
    json_t *doc = json_pack("{s:s}", "error", msg);
    if (!doc) /* not UTF-8 after all: say less rather than nothing */
        doc = json_pack("{s:s}", "error", status >= 500 ? "internal error" : "invalid request");
    api_json(x, status, doc, headers);
}

/* The server's own refusals, in the API's error format. */
static void s_on_error(http_exchange_t *x, int status, const char *message, void *arg)
{
    api_error(x, status, NULL, "%s", message);
}

/* Answers a store or redis request that failed: no reply in time (or the
 * actor stopping), or an ERROR reply, or a reply of the wrong kind. */
void api_backend_failed(http_exchange_t *x, int status, const msg_t *reply, const char *not_found,
                        const char *service)
{
    if (status != 0 || !reply) {
        api_error(x, 503, NULL, "%s unavailable", service);
    } else if (reply->type == MSG_ERROR) {
        const char *why = reply->error.reason ? reply->error.reason : "";
        switch (reply->error.code) {
        case -ENOENT:
            api_error(x, 404, NULL, "%s", not_found);
            break;
        case -EINVAL:
            api_error(x, 400, NULL, "%s", *why ? why : "invalid request");
            break;
        case -EAGAIN:
            api_error(x, 503, NULL, "%s unavailable", service);
            break;
        case -EEXIST:
            api_error(x, 409, NULL, "%s", *why ? why : "conflict");
            break;
        case -EDQUOT: { /* a key's quota or rate limit */
            char retry[48];
            snprintf(
                retry, sizeof retry, "Retry-After: %llu\r\n",
                (unsigned long long)(reply->error.retry_after_s ? reply->error.retry_after_s : 1));
            api_error(x, 429, retry, "%s", *why ? why : "too many requests");
            break;
        }
        case -EACCES:
            api_error(x, 401,
                      "WWW-Authenticate: Bearer realm=\"imagejobs\", error=\"invalid_token\"\r\n",
                      "%s", *why ? why : "invalid API token");
            break;
        default:
            log_warn("%s failed a request: %s (%lld)", service, why, (long long)reply->error.code);
            api_error(x, 500, NULL, "internal error");
        }
    } else {
        log_error("unexpected %s reply from %s", msg_type_name(reply->type), reply->sender);
        api_error(x, 500, NULL, "internal error");
    }
}

/* ------------------------------------------------------------ asking */

typedef struct {
    http_exchange_t *x; /* held until the reply */
    http_reply_fn cb;
    void *arg;
} ask_t;

static void s_ask_reply(actor_t *self, int status, msg_t *reply, void *arg)
{
    ask_t *a = arg;
    http_exchange_t *x = a->x;
    a->cb(self, http_exchange_gone(x) ? NULL : x, status, reply, a->arg);
    http_exchange_release(x);
    free(a);
}

/* Sends request (borrowed) to actor `to` for the exchange, with the
 * configured timeout; cb runs exactly once. Returns 0, or -1 (errno) when
 * it could not be sent: cb will not run. */
int api_send(actor_t *self, http_exchange_t *x, const char *to, msg_t *request, http_reply_fn cb,
             void *arg)
{
    ask_t *a = malloc(sizeof *a);
    if (!a)
        abort();
    *a = (ask_t){x, cb, arg};
    if (actor_request(self, to, request, api_config(self)->request_timeout_s, s_ask_reply, a) < 0) {
        int err = errno;
        free(a);
        errno = err;
        return -1;
    }
    http_exchange_hold(x);
    return 0;
}

/* Sends *msgp (destroyed) for the exchange. On failure (the actor is not
 * there) answers 503 and returns -1: cb will not run. */
int api_ask(actor_t *self, http_exchange_t *x, const char *to, msg_t **msgp, http_reply_fn cb,
            void *arg, const char *service)
{
    int rc = api_send(self, x, to, *msgp, cb, arg);
    int err = errno;
    msg_destroy(msgp);
    if (rc < 0) {
        log_warn("cannot reach the %s actor: %s", to, strerror(err));
        api_error(x, 503, NULL, "%s unavailable", service);
    }
    return rc;
}

/* Checks and lower-cases an id from the path. Answers 400 and returns false
 * when it is missing or not a UUID. */
bool api_check_id(http_exchange_t *x, char *id, const char *name)
{
    if (!*id) {
        api_error(x, 400, NULL, "%s is required", name);
        return false;
    }
    if (!uuid_valid(id)) {
        api_error(x, 400, NULL, "%s must be a UUID", name);
        return false;
    }
    for (char *p = id; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return true;
}

/* ------------------------------------------------------------ POST /api/jobs */

typedef struct {
    char job_id[UUID_STR_LEN];
    uint64_t total_images;
} create_t;

static void s_job_created(actor_t *self, http_exchange_t *x, int status, msg_t *reply, void *arg)
{
    create_t *cx = arg;
    if (x && status == 0 && reply->type == MSG_JOB_CREATED) {
        const msg_job_created_t *r = &reply->job_created;
        /* a replayed Idempotency-Key names the job it made first */
        const char *id = r->replayed && r->job_id ? r->job_id : cx->job_id;
        char headers[160];
        snprintf(headers, sizeof headers, "Location: /api/jobs/%s\r\n%s", id,
                 r->replayed ? "Idempotent-Replayed: true\r\n" : "");
        json_t *doc = json_pack("{s:s,s:s,s:I}", "job_id", id, "job_status",
                                job_status_name(r->status), "total_images",
                                (json_int_t)(r->total_images ? r->total_images : cx->total_images));
        api_json(x, 201, doc, headers);
    } else if (x) {
        api_backend_failed(x, status, reply, "Job not found", "database");
    }
    free(cx);
}

static void s_job_create(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    create_t *cx = calloc(1, sizeof *cx);
    if (!cx)
        abort();
    int status;
    char why[256];
    msg_t *m = http_input_job(rq, cx->job_id, &cx->total_images, &status, why, sizeof why);
    if (!m) {
        api_error(x, status, NULL, "%s", why);
        free(cx);
        return;
    }
    const char *after = rq->kept[KEPT_CANCEL_AFTER];
    if (after) {
        /* Replicate's header; the body's field, if any, must say the same */
        uint64_t secs;
        if (http_input_duration(after, &secs) < 0) {
            msg_destroy(&m);
            free(cx);
            api_error(x, 400, NULL,
                      "Cancel-After must be a duration such as 90s, 5m or 1h (at most %d s)",
                      JOB_DEADLINE_MAX_S);
            return;
        }
        if (m->job_create.cancel_after_s && m->job_create.cancel_after_s != secs) {
            msg_destroy(&m);
            free(cx);
            api_error(x, 400, NULL, "Cancel-After and cancel_after_s differ");
            return;
        }
        m->job_create.cancel_after_s = secs;
    }
    const char *key = rq->kept[KEPT_IDEMPOTENCY_KEY];
    if (key) {
        /* visible ASCII, as Stripe's and the IETF draft's keys are */
        size_t n = strlen(key);
        bool ok = n >= 1 && n <= 255;
        for (size_t i = 0; ok && i < n; i++)
            ok = key[i] > 0x20 && key[i] < 0x7f;
        if (!ok) {
            msg_destroy(&m);
            free(cx);
            api_error(x, 400, NULL, "Idempotency-Key must be 1 to 255 visible ASCII characters");
            return;
        }
        /* the same request, whatever its spacing or key order */
        json_t *doc = json_loadb(rq->body, rq->body_len, 0, NULL);
        char *canon = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(doc);
        msg_set_str(&m->job_create.idempotency_key, key);
        msg_set_str(&m->job_create.request_body, canon ? canon : "");
        free(canon);
    }
    m->job_create.owner = api_caller(self)->id;
    if (api_ask(self, x, api_config(self)->store, &m, s_job_created, cx, "database") < 0)
        free(cx);
}

/* ------------------------------------------------------------ GET /api/jobs/{id} */

static void s_job_got(actor_t *self, http_exchange_t *x, int status, msg_t *reply, void *arg)
{
    if (!x)
        return;
    if (status == 0 && reply->type == MSG_JOB_JSON && reply->job_json.json) {
        char *json = reply->job_json.json; /* stolen from the reply */
        reply->job_json.json = NULL;
        size_t len = strlen(json);
        http_respond(x, 200, "application/json", NULL, &json, len);
        return;
    }
    api_backend_failed(x, status, reply, "Job not found", "database");
}

static void s_job_get(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    if (!api_check_id(x, id, "jobId"))
        return;
    if (api_config(self)->view_bytes) { /* from memory when it is exact (docs/store.md) */
        hub_job_get(((http_actor_t *)actor_state(self))->hub, x, id, api_scope(self));
        return;
    }
    msg_t *m = msg_new(MSG_JOB_GET);
    msg_set_str(&m->job_get.job_id, id);
    m->job_get.owner = api_scope(self);
    api_ask(self, x, api_config(self)->store, &m, s_job_got, NULL, "database");
}

/* ------------------------------------------------------------ GET /api/jobs */

static void s_job_listed(actor_t *self, http_exchange_t *x, int status, msg_t *reply, void *arg)
{
    if (!x)
        return;
    if (status != 0 || reply->type != MSG_JOB_LIST_PAGE) {
        api_backend_failed(x, status, reply, "Not found", "database");
        return;
    }
    const msg_job_list_page_t *p = &reply->job_list_page;
    json_t *items = json_loads(p->items ? p->items : "[]", 0, NULL);
    if (!json_is_array(items)) {
        json_decref(items);
        api_error(x, 500, NULL, "internal error");
        return;
    }
    json_t *doc = json_pack("{s:o,s:I}", "jobs", items, "count", (json_int_t)p->count);
    json_object_set_new(doc, "next_cursor",
                        p->next_cursor ? json_string(p->next_cursor) : json_null());
    api_json(x, 200, doc, NULL);
}

/* ?status=pending,processing &limit=1..200 &cursor=<us>:<id> (docs/api.md) */
static void s_job_list(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    const char *status = http_request_query(rq, "status");
    const char *limit = http_request_query(rq, "limit");
    const char *cursor = http_request_query(rq, "cursor");
    msg_t *m = msg_new(MSG_JOB_LIST);
    m->job_list.owner = api_scope(self);
    if (status && *status) {
        for (const char *p = status; *p;) {
            size_t n = strcspn(p, ",");
            job_status_t st;
            if (job_status_parse(p, n, &st) < 0) {
                msg_destroy(&m);
                api_error(x, 400, NULL,
                          "status must be a comma-separated list of pending, processing, "
                          "completed, failed, user_cancelled");
                return;
            }
            p += n;
            p += *p == ',';
        }
        msg_set_str(&m->job_list.statuses, status);
    }
    m->job_list.limit = JOB_LIST_LIMIT_DEFAULT;
    if (limit) {
        char *end;
        long n = strtol(limit, &end, 10);
        if (!*limit || *end || n < 1 || n > JOB_LIST_LIMIT_MAX) {
            msg_destroy(&m);
            api_error(x, 400, NULL, "limit must be from 1 to %d", JOB_LIST_LIMIT_MAX);
            return;
        }
        m->job_list.limit = (uint64_t)n;
    }
    if (cursor) {
        /* "<µs>:<job id>", as the previous page's next_cursor said */
        char *end;
        long long us = strtoll(cursor, &end, 10);
        if (us <= 0 || *end != ':' || !uuid_valid(end + 1)) {
            msg_destroy(&m);
            api_error(x, 400, NULL, "cursor must be a next_cursor of this list");
            return;
        }
        m->job_list.before_us = us;
        msg_set_str(&m->job_list.before_id, end + 1);
    }
    api_ask(self, x, api_config(self)->store, &m, s_job_listed, NULL, "database");
}

/* ------------------------------------------------------------ attachments */

static void s_attachment_got(actor_t *self, http_exchange_t *x, int status, msg_t *reply, void *arg)
{
    if (!x)
        return;
    if (status == 0 && reply->type == MSG_ATTACHMENT) {
        const char *ctype = reply->attachment.content_type;
        if (!ctype || !*ctype || strpbrk(ctype, "\r\n"))
            ctype = "image/png";
        char *bytes = (char *)reply->attachment.bytes.data; /* stolen from the reply */
        size_t size = reply->attachment.bytes.size;
        reply->attachment.bytes.data = NULL;
        reply->attachment.bytes.size = 0;
        /* an attachment id never names other bytes */
        http_respond(x, 200, ctype, "Cache-Control: public, max-age=31536000, immutable\r\n",
                     &bytes, size);
        return;
    }
    api_backend_failed(x, status, reply, "Attachment not found", "database");
}

static void s_attachment_get(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    if (!api_check_id(x, id, "attachId"))
        return;
    msg_t *m = msg_new(MSG_ATTACHMENT_GET);
    msg_set_str(&m->attachment_get.attach_id, id);
    m->attachment_get.owner = api_scope(self);
    api_ask(self, x, api_config(self)->store, &m, s_attachment_got, NULL, "database");
}

/* ------------------------------------------------------------ events */

static hub_t *s_hub(actor_t *self)
{
    return ((http_actor_t *)actor_state(self))->hub;
}

/* GET /api/jobs/{id}/events: the job's stream (docs/events.md) */
static void s_job_events(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    if (!api_check_id(x, id, "jobId"))
        return;
    hub_open(s_hub(self), x, rq, id, rq->kept[KEPT_LAST_EVENT_ID], api_scope(self));
}

/* GET /api/events: every job's */
static void s_all_events(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    hub_open(s_hub(self), x, rq, NULL, rq->kept[KEPT_LAST_EVENT_ID], api_scope(self));
}

static void s_hub_error(http_exchange_t *x, int status, const char *message)
{
    api_error(x, status, NULL, "%s", message);
}

static void s_hub_failed(http_exchange_t *x, int status, const msg_t *reply)
{
    api_backend_failed(x, status, reply, "Job not found", "database");
}

static void s_on_job_event(actor_t *self, msg_t *msg)
{
    hub_on_event(s_hub(self), msg);
}

static void s_on_job_progress(actor_t *self, msg_t *msg)
{
    hub_on_progress(s_hub(self), msg);
}

static void s_on_job_preview(actor_t *self, msg_t *msg)
{
    hub_on_preview(s_hub(self), msg);
}

static void s_web(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{ /* the page (actors/api/web.c): public, as /healthz is */
    web_serve(x, rq, rq->kept[KEPT_IF_NONE_MATCH]);
}
/* ------------------------------------------------------------ routing */

typedef void (*route_fn)(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id);

typedef struct {
    const char *pattern; /* '*' stands for one path segment: the id */
    const char *allow;
    route_fn get; /* GET and HEAD */
    route_fn post;
    bool stream; /* an event stream: the token may come as ?access_token= */
} route_t;

/* Every /api/ route needs a key when auth is on (docs/security.md). */
static const route_t s_routes[] = {
    {"/api/jobs", "GET, HEAD, POST, OPTIONS", s_job_list, s_job_create, false},
    {"/api/jobs/cancel", "POST, OPTIONS", NULL, api_jobs_cancel, false}, /* before /api/jobs/{id} */
    {"/api/jobs/*", "GET, HEAD, OPTIONS", s_job_get, NULL, false},
    {"/api/jobs/*/cancel", "POST, OPTIONS", NULL, api_job_cancel, false},
    {"/api/jobs/*/resume", "POST, OPTIONS", NULL, api_job_resume, false},
    {"/api/jobs/*/combinations/*/cancel", "POST, OPTIONS", NULL, api_combination_cancel, false},
    {"/api/jobs/*/events", "GET, HEAD, OPTIONS", s_job_events, NULL, true},
    {"/api/events", "GET, HEAD, OPTIONS", s_all_events, NULL, true},
    {"/api/attachments/*", "GET, HEAD, OPTIONS", s_attachment_get, NULL, false},
    {"/healthz", "GET, HEAD, OPTIONS", api_healthz, NULL, false},
    {"/readyz", "GET, HEAD, OPTIONS", api_readyz, NULL, false},
    {"/metrics", "GET, HEAD, OPTIONS", api_metrics, NULL, false},
    {"/*", "GET, HEAD", s_web, NULL, false}, /* the page: "/", "/app.js", ... (last) */
};
#define NROUTES (sizeof s_routes / sizeof *s_routes)

/* Every response, counted by route and status (runtime/metrics.h). */
static void s_on_respond(int status, int tag, int64_t since_request_ns, void *arg)
{
    metrics_http(tag, status, since_request_ns);
}

/* The key rq came with, into the actor's caller; false after answering
 * 401 (or 503: the keys cannot be read) when it has none that works. */
static bool s_authenticate(actor_t *self, http_exchange_t *x, const http_request_t *rq,
                           const route_t *r)
{
    http_actor_t *st = actor_state(self);
    const char *why = NULL, *challenge = NULL;
    int status = auth_check(st->auth, rq, rq->kept[KEPT_AUTHORIZATION], r->stream, &st->caller,
                            &why, &challenge);
    if (status == 0)
        return true;
    api_error(x, status, challenge, "%s", why);
    return false;
}

/* CORS for a list of origins: the request's Origin, when it is one. */
static void s_cors(http_actor_t *st, http_exchange_t *x, const http_request_t *rq)
{
    const char *origin = rq->kept[KEPT_ORIGIN];
    for (size_t i = 0; origin && i < st->norigins; i++) {
        if (strcmp(origin, st->origins[i]) == 0) {
            char h[300];
            snprintf(h, sizeof h, "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n",
                     st->origins[i]);
            http_exchange_set_headers(x, h);
            return;
        }
    }
    http_exchange_set_headers(x, "Vary: Origin\r\n");
}

/* Matches path against pattern ('*': one segment, possibly empty); the
 * segment at the first '*' goes to id, cut to idlen - 1 bytes (too long for
 * a UUID either way). */
static bool s_match(const char *pattern, const char *path, char *id, size_t idlen)
{
    const char *p = pattern, *q = path;
    bool captured = false;
    while (*p) {
        if (*p == '*') {
            size_t n = strcspn(q, "/");
            size_t keep = n < idlen ? n : idlen - 1;
            if (!captured) { /* the first: the id; a route reads the others itself */
                memcpy(id, q, keep);
                id[keep] = '\0';
                captured = true;
            }
            p++;
            q += n;
        } else if (*p == *q) {
            p++;
            q++;
        } else {
            return false;
        }
    }
    return *q == '\0';
}

/* The server's on_request: finds the route and runs it. */
static void s_route(http_exchange_t *x, const http_request_t *rq, void *arg)
{
    actor_t *self = arg;
    http_actor_t *st = actor_state(self);
    char id[64] = "";
    if (st->norigins)
        s_cors(st, x, rq);
    for (size_t i = 0; i < NROUTES; i++) {
        const route_t *r = &s_routes[i];
        if (!s_match(r->pattern, rq->path, id, sizeof id))
            continue;
        http_exchange_set_tag(x, (int)i);
        route_fn fn = NULL;
        if (rq->method == HTTP_GET || rq->method == HTTP_HEAD)
            fn = r->get;
        else if (rq->method == HTTP_POST)
            fn = r->post;
        else if (rq->method == HTTP_OPTIONS) {
            http_respond(x, 204, NULL, s_preflight_headers, NULL, 0);
            return;
        }
        if (fn) {
            if (strncmp(rq->path, "/api/", 5) == 0 && !s_authenticate(self, x, rq, r))
                return;
            fn(self, x, rq, id);
            memset(&st->caller, 0, sizeof st->caller);
            return;
        }
        char allow[64];
        snprintf(allow, sizeof allow, "Allow: %s\r\n", r->allow);
        api_error(x, 405, allow, "method %s is not allowed here (allowed: %s)",
                  llhttp_method_name((llhttp_method_t)rq->method), r->allow);
        return;
    }
    /* a preflight may come for any API path */
    if (rq->method == HTTP_OPTIONS && strncmp(rq->path, "/api/", 5) == 0) {
        http_respond(x, 204, NULL, s_preflight_headers, NULL, 0);
        return;
    }
    api_error(x, 404, NULL, "Not found");
}

/* ------------------------------------------------------------ the actor */

static char *s_dup(const char *s, const char *def)
{
    char *p = strdup(s && *s ? s : def);
    if (!p)
        abort();
    return p;
}

static void s_state_free(http_actor_t *st)
{
    for (size_t i = 0; i < st->norigins; i++)
        free(st->origins[i]);
    free(st->origins);
    auth_destroy(&st->auth);
    free((char *)st->cfg.listen);
    free((char *)st->cfg.cors_origin);
    free((char *)st->cfg.instance);
    free((char *)st->cfg.store);
    free((char *)st->cfg.redis);
    free(st);
}

/* After a shutdown: the last in-flight response is out. */
static void s_drained(void *arg)
{
    actor_stop_ready(arg);
}

static int s_init(actor_t *self, void *arg)
{
    const http_config_t *in = arg;
    http_actor_t *st = calloc(1, sizeof *st);
    if (!st)
        abort();
    st->self = self;
    st->cfg.listen = s_dup(in->listen, "127.0.0.1:8080");
    /* "*" only when auth is off, or when asked for (docs/security.md) */
    st->cfg.cors_origin = s_dup(in->cors_origin, in->auth_required ? "" : "*");
    st->cfg.auth_required = in->auth_required;
    st->cfg.instance = s_dup(in->instance, "local");
    st->cfg.store = s_dup(in->store, ACTOR_STORE);
    st->cfg.redis = s_dup(in->redis, ACTOR_REDIS);
    st->cfg.request_timeout_s = in->request_timeout_s > 0 ? in->request_timeout_s : 5.;
    st->cfg.stall_timeout_s = in->stall_timeout_s > 0 ? in->stall_timeout_s : 10.;
    st->cfg.keepalive_timeout_s = in->keepalive_timeout_s > 0 ? in->keepalive_timeout_s : 60.;
    st->cfg.view_bytes = in->view_bytes;
    if (strpbrk(st->cfg.cors_origin, "\r\n")) {
        actor_fail(self, "the CORS origin must be one header value");
        s_state_free(st);
        return -1;
    }
    /* CORS on every response, the server's own refusals included: one
     * origin (or "*") in every response's headers; a list, per request */
    char *cors;
    const char *co = st->cfg.cors_origin;
    if (strchr(co, ',')) {
        for (const char *p = co; *p;) {
            size_t n = strcspn(p, ",");
            while (n && (*p == ' '))
                p++, n--;
            size_t k = n;
            while (k && p[k - 1] == ' ')
                k--;
            if (k) {
                if (!(st->origins = realloc(st->origins, (st->norigins + 1) * sizeof *st->origins))
                    || !(st->origins[st->norigins++] = strndup(p, k)))
                    abort();
            }
            p += n;
            p += *p == ',';
        }
        cors = strdup("");
    } else if (*co) {
        if (asprintf(&cors, "Access-Control-Allow-Origin: %s\r\n%s", co,
                     strcmp(co, "*") ? "Vary: Origin\r\n" : "")
            < 0)
            abort();
    } else {
        cors = strdup("");
    }
    if (!cors)
        abort();
    http_server_config_t scfg = {
        .loop = actor_loop(self),
        .listen = st->cfg.listen,
        .headers = cors,
        .stall_timeout_s = st->cfg.stall_timeout_s,
        .keepalive_timeout_s = st->cfg.keepalive_timeout_s,
        .output_limit = in->stream_buffer,
        .stream_sndbuf = STREAM_SNDBUF,
        .keep_headers = s_kept_headers,
        .on_request = s_route,
        .on_error = s_on_error,
        .on_drained = s_drained,
        .on_respond = s_on_respond,
        .arg = self,
    };
    char err[512];
    st->server = http_server_new(&scfg, err, sizeof err);
    free(cors);
    if (!st->server) {
        actor_fail(self, "%s", err);
        s_state_free(st);
        return -1;
    }
    st->port = http_server_port(st->server);
    const char *names[NROUTES];
    for (size_t i = 0; i < NROUTES; i++)
        names[i] = s_routes[i].pattern;
    metrics_set_routes(names, NROUTES);
    hub_config_t hcfg = {
        .store = st->cfg.store,
        .request_timeout_s = st->cfg.request_timeout_s,
        .max_streams = in->max_streams,
        .keepalive_s = in->keepalive_s,
        /* progress and previews wait for a slow client well before it is cut off */
        .coalesce_queued = in->stream_buffer && in->stream_buffer / 4 < HUB_COALESCE_QUEUED
                               ? in->stream_buffer / 4
                               : HUB_COALESCE_QUEUED,
        .error = s_hub_error,
        .failed = s_hub_failed,
        .view_bytes = in->view_bytes,
    };
    st->hub = hub_new(self, &hcfg);
    st->auth = auth_new(self, st->cfg.auth_required, st->cfg.store, st->cfg.request_timeout_s);
    /* every instance's job events, for the streams */
    if (actor_subscribe(self, TOPIC_JOB_EVENT) < 0 || actor_subscribe(self, TOPIC_JOB_PROGRESS) < 0
        || actor_subscribe(self, TOPIC_JOB_PREVIEW) < 0) {
        actor_fail(self, "cannot subscribe to the bus");
        hub_destroy(&st->hub);
        http_server_destroy(&st->server);
        s_state_free(st);
        return -1;
    }
    actor_set_state(self, st);
    return 0;
}

static void s_fini(actor_t *self)
{
    http_actor_t *st = actor_state(self);
    /* the runtime has failed every request still pending (their exchanges
     * were answered 503 and released) */
    hub_destroy(&st->hub);
    http_server_destroy(&st->server);
    s_state_free(st);
}

/* An orderly stop: no new connections; idle ones close now, busy ones after
 * their response (which says Connection: close). */
static void s_on_shutdown(actor_t *self, msg_t *msg)
{
    hub_shutdown(s_hub(self)); /* streams end: their clients resume elsewhere */
    http_server_shutdown(((http_actor_t *)actor_state(self))->server);
}

/* The actor is asked to stop: the same orderly stop, and the loop ends
 * when the last in-flight response is out (or at the stop deadline, when
 * fini answers what is left with 503). */
static bool s_stopping(actor_t *self)
{
    hub_shutdown(s_hub(self));
    return http_server_shutdown(((http_actor_t *)actor_state(self))->server);
}

actor_t *http_start(runtime_t *rt, const http_config_t *cfg, char *err, size_t errlen)
{
    static const actor_spec_t spec = {
        .init = s_init,
        .stopping = s_stopping,
        .fini = s_fini,
        .handlers =
            {
                [MSG_SHUTDOWN] = s_on_shutdown,
                [MSG_JOB_EVENT] = s_on_job_event,
                [MSG_JOB_PROGRESS] = s_on_job_progress,
                [MSG_JOB_PREVIEW] = s_on_job_preview,
            },
    };
    static const http_config_t defaults = {0};
    return actor_new(rt, ACTOR_HTTP, &spec, (void *)(cfg ? cfg : &defaults), err, errlen);
}

int http_port(actor_t *http)
{
    return ((http_actor_t *)actor_state(http))->port;
}

void http_destroy(actor_t **httpp)
{
    actor_destroy(httpp);
}
