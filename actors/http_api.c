/*
 * http_api.c - the routes of the job API (DESIGN.md "HTTP API" and the
 * seed's cancel document): validation, JSON in and out, and the requests to
 * the store and redis actors that answer them.
 *
 * Every error is {"error": "..."}, and a field that is wrong is named in
 * it. Ids are checked with uuid_valid() and lower-cased before they reach
 * another actor, so that a cancel event's job_id compares equal to the one
 * the generators hold.
 */
#include "config.h"

#include "actors/http_api.h"

#include "runtime/log.h"
#include "runtime/names.h"
#include "runtime/uuid.h"

#include <ctype.h>
#include <errno.h>
#include <http_parser.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#define PROMPT_MAX 1000      /* bytes */
#define STYLE_MAX 1000       /* bytes */
#define COMBINATIONS_MAX 64
#define IMAGES_MAX 100       /* per combination */
#define SEED_MAX 4294967295LL
#define NAME_SHOWN 64        /* bytes of a client's field name quoted back */

static const char s_preflight_headers[] = "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
                                          "Access-Control-Allow-Headers: Content-Type\r\n"
                                          "Access-Control-Max-Age: 86400\r\n";

/* ------------------------------------------------------------ responses */

/* Answers with doc (consumed) as the JSON body. */
static void s_respond_json(http_exchange_t *x, int status, json_t *doc, const char *headers)
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

/* Drops a UTF-8 sequence cut short at the end of s (by truncation). */
static void s_utf8_trim(char *s)
{
    size_t n = strlen(s), i = n;
    while (i > 0 && n - i < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0)
        return;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (n - (i - 1) < want)
        s[i - 1] = '\0';
}

static void s_verror(http_exchange_t *x, int status, const char *headers, const char *fmt,
                     va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    s_utf8_trim(msg);
    json_t *doc = json_pack("{s:s}", "error", msg);
    if (!doc) /* not UTF-8 after all: say less rather than nothing */
        doc = json_pack("{s:s}", "error", status >= 500 ? "internal error" : "invalid request");
    s_respond_json(x, status, doc, headers);
}

static void s_error(http_exchange_t *x, int status, const char *headers, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void s_error(http_exchange_t *x, int status, const char *headers, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_verror(x, status, headers, fmt, ap);
    va_end(ap);
}

void http_respond_error(http_exchange_t *x, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_verror(x, status, NULL, fmt, ap);
    va_end(ap);
}

/* A client's field name, shortened (at a character boundary) to quote back. */
static const char *s_shown(const char *name, char buf[NAME_SHOWN + 4])
{
    size_t n = strlen(name);
    if (n <= NAME_SHOWN)
        return name;
    memcpy(buf, name, NAME_SHOWN);
    buf[NAME_SHOWN] = '\0';
    s_utf8_trim(buf);
    strcat(buf, "...");
    return buf;
}

/* Answers a store or redis request that failed: no reply in time (or the
 * actor stopping), or an ERROR reply, or a reply of the wrong kind. */
static void s_backend_failed(http_exchange_t *x, int status, const msg_t *reply,
                             const char *not_found, const char *service)
{
    if (status != 0 || !reply) {
        s_error(x, 503, NULL, "%s unavailable", service);
    } else if (reply->type == MSG_ERROR) {
        const char *why = reply->error.reason ? reply->error.reason : "";
        switch (reply->error.code) {
        case -ENOENT:
            s_error(x, 404, NULL, "%s", not_found);
            break;
        case -EINVAL:
            s_error(x, 400, NULL, "%s", *why ? why : "invalid request");
            break;
        case -EAGAIN:
            s_error(x, 503, NULL, "%s unavailable", service);
            break;
        default:
            log_warn("%s failed a request: %s (%lld)", service, why,
                     (long long)reply->error.code);
            s_error(x, 500, NULL, "internal error");
        }
    } else {
        log_error("unexpected %s reply from %s", msg_type_name(reply->type), reply->sender);
        s_error(x, 500, NULL, "internal error");
    }
}

/* Sends *msgp (destroyed) for the exchange. On failure (the actor is not
 * there) answers 503 and returns -1: cb will not run. */
static int s_ask(http_exchange_t *x, const char *to, msg_t **msgp, http_reply_fn cb, void *arg,
                 const char *service)
{
    int rc = http_ask(x, to, *msgp, cb, arg);
    int err = errno;
    msg_destroy(msgp);
    if (rc < 0) {
        log_warn("cannot reach the %s actor: %s", to, strerror(err));
        s_error(x, 503, NULL, "%s unavailable", service);
    }
    return rc;
}

/* ------------------------------------------------------------ input */

static bool s_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!strchr(" \t\r\n", s[i]) || !s[i])
            return false;
    return true;
}

/* application/json, with or without parameters (charset). */
static bool s_is_json_type(const char *ctype)
{
    if (!ctype)
        return false;
    while (*ctype == ' ' || *ctype == '\t')
        ctype++;
    static const char json[] = "application/json";
    if (strncasecmp(ctype, json, sizeof json - 1) != 0)
        return false;
    const char *rest = ctype + sizeof json - 1;
    rest += strspn(rest, " \t");
    return *rest == '\0' || *rest == ';';
}

/* Checks and lower-cases an id from the path. Answers 400 and returns false
 * when it is missing or not a UUID. */
static bool s_check_id(http_exchange_t *x, char *id, const char *name)
{
    if (!*id) {
        s_error(x, 400, NULL, "%s is required", name);
        return false;
    }
    if (!uuid_valid(id)) {
        s_error(x, 400, NULL, "%s must be a UUID", name);
        return false;
    }
    for (char *p = id; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return true;
}

/* Parses a JSON body that must be an object. NULL with the reason in why. */
static json_t *s_parse_object(const http_request_t *rq, char *why, size_t len)
{
    json_error_t jerr;
    json_t *doc =
        json_loadb(rq->body, rq->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!doc) {
        snprintf(why, len, "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        snprintf(why, len, "request body must be a JSON object");
        json_decref(doc);
        return NULL;
    }
    return doc;
}

static uint32_t s_random_seed(void)
{
    uint32_t seed;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t)sizeof seed)
        return seed;
    struct timespec ts; /* no entropy yet (early boot): any seed will do */
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint32_t)(ts.tv_nsec ^ ts.tv_sec);
}

/* ------------------------------------------------------------ POST /api/jobs */

typedef struct {
    char job_id[UUID_STR_LEN];
    uint64_t total_images;
} create_t;

/* An optional integer field: absent gives def. */
static bool s_int_field(json_t *doc, const char *name, json_int_t def, json_int_t min,
                        json_int_t max, json_int_t multiple, json_int_t *out, char *why,
                        size_t len)
{
    json_t *v = json_object_get(doc, name);
    if (!v) {
        *out = def;
        return true;
    }
    if (!json_is_integer(v)) {
        snprintf(why, len, "%s must be an integer", name);
        return false;
    }
    json_int_t n = json_integer_value(v);
    if (n < min || n > max) {
        snprintf(why, len, "%s must be from %lld to %lld", name, (long long)min, (long long)max);
        return false;
    }
    if (n % multiple) {
        snprintf(why, len, "%s must be a multiple of %lld", name, (long long)multiple);
        return false;
    }
    *out = n;
    return true;
}

/* The combinations, normalized: every element has "seed" and "style".
 * Returns a new array, or NULL with the reason in why. */
static json_t *s_combinations(json_t *v, char *why, size_t len)
{
    json_t *out = json_array();
    if (!v) { /* one combination, random seed, no style */
        json_array_append_new(out, json_pack("{s:I,s:s}", "seed", (json_int_t)s_random_seed(),
                                             "style", ""));
        return out;
    }
    if (!json_is_array(v)) {
        snprintf(why, len, "combinations must be an array");
        goto fail;
    }
    size_t n = json_array_size(v);
    if (n < 1 || n > COMBINATIONS_MAX) {
        snprintf(why, len, "combinations must have 1 to %d elements", COMBINATIONS_MAX);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_object(e)) {
            snprintf(why, len, "combinations[%zu] must be an object", i);
            goto fail;
        }
        const char *key;
        json_t *val;
        json_object_foreach(e, key, val)
        {
            if (strcmp(key, "seed") != 0 && strcmp(key, "style") != 0) {
                char buf[NAME_SHOWN + 4];
                snprintf(why, len, "unknown field \"combinations[%zu].%s\"", i,
                         s_shown(key, buf));
                goto fail;
            }
        }
        json_int_t seed = s_random_seed();
        json_t *sv = json_object_get(e, "seed");
        if (sv) {
            if (!json_is_integer(sv) || json_integer_value(sv) < 0
                || json_integer_value(sv) > SEED_MAX) {
                snprintf(why, len, "combinations[%zu].seed must be an integer from 0 to %lld",
                         i, SEED_MAX);
                goto fail;
            }
            seed = json_integer_value(sv);
        }
        const char *style = "";
        json_t *st = json_object_get(e, "style");
        if (st) {
            if (!json_is_string(st)) {
                snprintf(why, len, "combinations[%zu].style must be a string", i);
                goto fail;
            }
            if (json_string_length(st) > STYLE_MAX) {
                snprintf(why, len, "combinations[%zu].style must be at most %d bytes", i,
                         STYLE_MAX);
                goto fail;
            }
            style = json_string_value(st);
        }
        json_array_append_new(out, json_pack("{s:I,s:s}", "seed", seed, "style", style));
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

static void s_job_created(actor_t *self, http_exchange_t *x, int status, msg_t *reply,
                          void *arg)
{
    create_t *cx = arg;
    if (x && status == 0 && reply->type == MSG_JOB_CREATED) {
        const msg_job_created_t *r = &reply->job_created;
        char location[96];
        snprintf(location, sizeof location, "Location: /api/jobs/%s\r\n", cx->job_id);
        json_t *doc = json_pack("{s:s,s:s,s:I}", "job_id", cx->job_id, "job_status",
                                job_status_name(r->status),
                                "total_images",
                                (json_int_t)(r->total_images ? r->total_images
                                                             : cx->total_images));
        s_respond_json(x, 201, doc, location);
    } else if (x) {
        s_backend_failed(x, status, reply, "Job not found", "database");
    }
    free(cx);
}

static const char *const s_job_fields[] = {"prompt", "combinations", "images_per_combination",
                                           "width",  "height",       "steps"};

static void s_job_create(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    if (s_blank(rq->body, rq->body_len)) {
        s_error(x, 400, NULL, "request body must be a JSON object with a prompt");
        return;
    }
    if (!s_is_json_type(rq->content_type)) {
        s_error(x, 415, NULL, "Content-Type must be application/json");
        return;
    }
    char why[256];
    json_t *doc = s_parse_object(rq, why, sizeof why);
    if (!doc) {
        s_error(x, 400, NULL, "%s", why);
        return;
    }
    json_t *combos = NULL;
    const char *key;
    json_t *val;
    json_object_foreach(doc, key, val)
    {
        size_t i = 0, n = sizeof s_job_fields / sizeof *s_job_fields;
        while (i < n && strcmp(key, s_job_fields[i]) != 0)
            i++;
        if (i == n) {
            char buf[NAME_SHOWN + 4];
            snprintf(why, sizeof why, "unknown field \"%s\"", s_shown(key, buf));
            goto invalid;
        }
    }
    json_t *prompt = json_object_get(doc, "prompt");
    if (!prompt) {
        snprintf(why, sizeof why, "prompt is required");
        goto invalid;
    }
    if (!json_is_string(prompt)) {
        snprintf(why, sizeof why, "prompt must be a string");
        goto invalid;
    }
    if (json_string_length(prompt) < 1 || json_string_length(prompt) > PROMPT_MAX) {
        snprintf(why, sizeof why, "prompt must be 1 to %d bytes", PROMPT_MAX);
        goto invalid;
    }
    json_int_t images, width, height, steps;
    if (!s_int_field(doc, "images_per_combination", 1, 1, IMAGES_MAX, 1, &images, why,
                     sizeof why)
        || !s_int_field(doc, "width", 512, 64, 2048, 8, &width, why, sizeof why)
        || !s_int_field(doc, "height", 512, 64, 2048, 8, &height, why, sizeof why)
        || !s_int_field(doc, "steps", 30, 1, 200, 1, &steps, why, sizeof why))
        goto invalid;
    combos = s_combinations(json_object_get(doc, "combinations"), why, sizeof why);
    if (!combos)
        goto invalid;

    create_t *cx = calloc(1, sizeof *cx);
    if (!cx)
        abort();
    if (uuid_v4(cx->job_id) < 0) {
        log_error("no random job id: %s", strerror(errno));
        s_error(x, 500, NULL, "internal error");
        free(cx);
        json_decref(combos);
        json_decref(doc);
        return;
    }
    cx->total_images = json_array_size(combos) * (uint64_t)images;
    char *combos_text = json_dumps(combos, JSON_COMPACT);
    if (!combos_text)
        abort();
    msg_t *m = msg_new(MSG_JOB_CREATE);
    msg_set_str(&m->job_create.job_id, cx->job_id);
    msg_set_str(&m->job_create.prompt, json_string_value(prompt));
    m->job_create.combinations = combos_text; /* handed over: freed with m */
    m->job_create.images_per_combination = (uint64_t)images;
    m->job_create.width = (uint64_t)width;
    m->job_create.height = (uint64_t)height;
    m->job_create.steps = (uint64_t)steps;
    json_decref(combos);
    json_decref(doc);
    if (s_ask(x, http_config(self)->store, &m, s_job_created, cx, "database") < 0)
        free(cx);
    return;
invalid:
    json_decref(doc);
    s_error(x, 400, NULL, "%s", why);
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
    s_backend_failed(x, status, reply, "Job not found", "database");
}

static void s_job_get(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    if (!s_check_id(x, id, "jobId"))
        return;
    msg_t *m = msg_new(MSG_JOB_GET);
    msg_set_str(&m->job_get.job_id, id);
    s_ask(x, http_config(self)->store, &m, s_job_got, NULL, "database");
}

/* ------------------------------------------------------------ cancel */

typedef struct {
    char job_id[UUID_STR_LEN];
    cancel_mode_t mode;
    int64_t received_at_us;
} cancel_t;

/* The mode from the optional body: none, blank, {} or {"mode": ...}.
 * -1 with the reason in why for anything else. */
static int s_cancel_mode(const http_request_t *rq, cancel_mode_t *mode, char *why, size_t len)
{
    *mode = CANCEL_MODE_IMMEDIATE;
    if (s_blank(rq->body, rq->body_len))
        return 0;
    json_t *doc = s_parse_object(rq, why, len);
    if (!doc)
        return -1;
    int rc = 0;
    const char *key;
    json_t *val;
    json_object_foreach(doc, key, val)
    {
        if (strcmp(key, "mode") != 0) {
            char buf[NAME_SHOWN + 4];
            snprintf(why, len, "unknown field \"%s\"", s_shown(key, buf));
            rc = -1;
            break;
        }
        const char *s = json_string_value(val); /* NULL unless a string */
        if (!s || cancel_mode_parse(s, json_string_length(val), mode) < 0
            || *mode == CANCEL_MODE_NONE) {
            snprintf(why, len, "mode must be \"immediate\" or \"after_current_image\"");
            rc = -1;
            break;
        }
    }
    json_decref(doc);
    return rc;
}

/* Tells every generator at once, here (bus) and, through the redis actor's
 * bridge, on every other instance, before the store has written the cancel
 * (no waiting on the store's reply, whatever it says): the PostgreSQL round
 * trip (behind whatever else the store's pipeline holds) is not in the time
 * to stop. A generator that stops records the cancel itself (TASK_STOPPED
 * carries it), so the job ends user_cancelled whichever write lands first;
 * for a job that is not running the event finds nobody and costs nothing. */
static void s_publish_cancel(actor_t *self, const cancel_t *cx)
{
    msg_t *ev = msg_new(MSG_JOB_CANCEL);
    msg_set_str(&ev->job_cancel.job_id, cx->job_id);
    ev->job_cancel.mode = cx->mode;
    ev->job_cancel.requested_at_us = cx->received_at_us;
    msg_set_str(&ev->job_cancel.origin, http_config(self)->instance);
    if (actor_publish(self, TOPIC_CANCEL, ev) < 0)
        log_warn("cannot publish the cancel of job %s", cx->job_id);
    msg_destroy(&ev);
}

static void s_job_cancelled(actor_t *self, http_exchange_t *x, int status, msg_t *reply,
                            void *arg)
{
    cancel_t *cx = arg;
    if (status != 0 || reply->type != MSG_JOB_CANCEL_RESULT) {
        if (x)
            s_backend_failed(x, status, reply, "Job not found", "database");
        free(cx);
        return;
    }
    const msg_job_cancel_result_t *r = &reply->job_cancel_result;
    const char *prior = job_status_name(r->prior_status);
    bool pending = r->prior_status == JOB_STATUS_PENDING;
    if (pending || r->prior_status == JOB_STATUS_PROCESSING) {
        /* running or waiting (a repeated cancel of a job still stopping
         * lands here too): stopped now, or as the mode says; the store
         * has published the record, the redis actor sets the flag */
        if (x) {
            const char *message = pending ? "Job cancelled before it started."
                                  : cx->mode == CANCEL_MODE_AFTER_CURRENT_IMAGE
                                      ? "Cancel request sent. Job will stop after current image."
                                      : "Cancel request sent. Job will stop at the next step.";
            s_respond_json(x, 200,
                           json_pack("{s:b,s:s,s:s,s:s,s:I,s:I}", "success", 1, "message",
                                     message, "job_id", cx->job_id, "current_status", prior,
                                     "completed_images", (json_int_t)r->completed_images,
                                     "total_images", (json_int_t)r->total_images),
                           NULL);
        }
    } else if (x) {
        const char *message = r->prior_status == JOB_STATUS_COMPLETED ? "Job already completed"
                              : r->prior_status == JOB_STATUS_FAILED  ? "Job already failed"
                              : r->prior_status == JOB_STATUS_USER_CANCELLED
                                  ? "Job already cancelled"
                                  : NULL;
        if (message) {
            s_respond_json(x, 200,
                           json_pack("{s:b,s:s,s:s,s:s,s:I}", "success", 0, "message", message,
                                     "job_id", cx->job_id, "job_status", prior,
                                     "completed_images", (json_int_t)r->completed_images),
                           NULL);
        } else {
            log_error("job %s has an unknown status '%s'", cx->job_id, prior);
            s_error(x, 500, NULL, "internal error");
        }
    }
    free(cx);
}

static void s_job_cancel(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    if (!s_check_id(x, id, "jobId"))
        return;
    /* any Content-Type, or none (the seed's curl): the body is optional */
    char why[256];
    cancel_mode_t mode;
    if (s_cancel_mode(rq, &mode, why, sizeof why) < 0) {
        s_error(x, 400, NULL, "%s", why);
        return;
    }
    cancel_t *cx = calloc(1, sizeof *cx);
    if (!cx)
        abort();
    strcpy(cx->job_id, id);
    cx->mode = mode;
    cx->received_at_us = rq->received_at_us;
    msg_t *m = msg_new(MSG_JOB_CANCEL_REQUEST);
    msg_set_str(&m->job_cancel_request.job_id, cx->job_id);
    m->job_cancel_request.mode = mode;
    m->job_cancel_request.received_at_us = cx->received_at_us;
    /* the store first, then the event: the store reads the request before
     * any stop the event causes, whenever it can */
    if (s_ask(x, http_config(self)->store, &m, s_job_cancelled, cx, "database") < 0) {
        free(cx);
        return;
    }
    s_publish_cancel(self, cx);
}

/* ------------------------------------------------------------ attachments */

static void s_attachment_got(actor_t *self, http_exchange_t *x, int status, msg_t *reply,
                             void *arg)
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
    s_backend_failed(x, status, reply, "Attachment not found", "database");
}

static void s_attachment_get(actor_t *self, http_exchange_t *x, const http_request_t *rq,
                             char *id)
{
    if (!s_check_id(x, id, "attachId"))
        return;
    msg_t *m = msg_new(MSG_ATTACHMENT_GET);
    msg_set_str(&m->attachment_get.attach_id, id);
    s_ask(x, http_config(self)->store, &m, s_attachment_got, NULL, "database");
}

/* ------------------------------------------------------------ health */

static void s_healthz(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    s_respond_json(x, 200, json_pack("{s:s}", "status", "ok"), NULL);
}

enum { READY_DATABASE, READY_REDIS };

typedef struct ready ready_t;
typedef struct {
    ready_t *rd;
    int which;
} ready_slot_t;

struct ready {
    ready_slot_t slot[2];
    bool ok[2];
    int left; /* replies still to come */
};

static void s_ready_answer(http_exchange_t *x, const ready_t *rd)
{
    bool db = rd->ok[READY_DATABASE], redis = rd->ok[READY_REDIS];
    if (db && redis) {
        s_respond_json(x, 200,
                       json_pack("{s:s,s:b,s:b}", "status", "ready", "redis", 1, "database", 1),
                       NULL);
        return;
    }
    const char *error = !db && !redis ? "database and redis unavailable"
                        : !db         ? "database unavailable"
                                      : "redis unavailable";
    s_respond_json(x, 503,
                   json_pack("{s:s,s:b,s:b,s:s}", "status", "unavailable", "redis", redis,
                             "database", db, "error", error),
                   NULL);
}

static void s_ready_reply(actor_t *self, http_exchange_t *x, int status, msg_t *reply,
                          void *arg)
{
    ready_slot_t *slot = arg;
    ready_t *rd = slot->rd;
    rd->ok[slot->which] = status == 0 && reply->type == MSG_HEALTH && reply->health.ok;
    if (--rd->left > 0)
        return;
    if (x)
        s_ready_answer(x, rd);
    free(rd);
}

static void s_readyz(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    const http_config_t *cfg = http_config(self);
    const char *to[2] = {[READY_DATABASE] = cfg->store, [READY_REDIS] = cfg->redis};
    ready_t *rd = calloc(1, sizeof *rd);
    if (!rd)
        abort();
    rd->left = 2;
    int sent = 0;
    for (int i = 0; i < 2; i++) {
        rd->slot[i] = (ready_slot_t){rd, i};
        msg_t *m = msg_new(MSG_HEALTH_CHECK);
        msg_set_str(&m->health_check.from, "http");
        if (http_ask(x, to[i], m, s_ready_reply, &rd->slot[i]) == 0)
            sent++;
        else
            rd->left--; /* not there: not ready */
        msg_destroy(&m);
    }
    if (sent == 0) {
        s_ready_answer(x, rd);
        free(rd);
    }
}

/* ------------------------------------------------------------ routing */

typedef void (*route_fn)(actor_t *self, http_exchange_t *x, const http_request_t *rq,
                         char *id);

typedef struct {
    const char *pattern; /* '*' stands for one path segment: the id */
    const char *allow;
    route_fn get; /* GET and HEAD */
    route_fn post;
} route_t;

static const route_t s_routes[] = {
    {"/api/jobs", "POST, OPTIONS", NULL, s_job_create},
    {"/api/jobs/*", "GET, HEAD, OPTIONS", s_job_get, NULL},
    {"/api/jobs/*/cancel", "POST, OPTIONS", NULL, s_job_cancel},
    {"/api/attachments/*", "GET, HEAD, OPTIONS", s_attachment_get, NULL},
    {"/healthz", "GET, HEAD, OPTIONS", s_healthz, NULL},
    {"/readyz", "GET, HEAD, OPTIONS", s_readyz, NULL},
};

/* Matches path against pattern; the segment at '*' (possibly empty) goes to
 * id, cut to idlen - 1 bytes (too long for a UUID either way). */
static bool s_match(const char *pattern, const char *path, char *id, size_t idlen)
{
    const char *p = pattern, *q = path;
    while (*p) {
        if (*p == '*') {
            size_t n = strcspn(q, "/");
            size_t keep = n < idlen ? n : idlen - 1;
            memcpy(id, q, keep);
            id[keep] = '\0';
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

void http_api_route(actor_t *self, http_exchange_t *x, const http_request_t *rq)
{
    char id[64] = "";
    for (size_t i = 0; i < sizeof s_routes / sizeof *s_routes; i++) {
        const route_t *r = &s_routes[i];
        if (!s_match(r->pattern, rq->path, id, sizeof id))
            continue;
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
            fn(self, x, rq, id);
            return;
        }
        char allow[64];
        snprintf(allow, sizeof allow, "Allow: %s\r\n", r->allow);
        s_error(x, 405, allow, "method %s is not allowed here (allowed: %s)",
                http_method_str((enum http_method)rq->method), r->allow);
        return;
    }
    /* a preflight may come for any API path */
    if (rq->method == HTTP_OPTIONS && strncmp(rq->path, "/api/", 5) == 0) {
        http_respond(x, 204, NULL, s_preflight_headers, NULL, 0);
        return;
    }
    s_error(x, 404, NULL, "Not found");
}
