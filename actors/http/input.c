/*
 * input.c - see input.h. Nothing here answers a client or talks to an
 * actor: the routes in http.c do, with what these functions return.
 */
#include "config.h"

#include "actors/http/input.h"

#include "actors/webhook.h"
#include "messages/limits.h"
#include "runtime/log.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#define NAME_SHOWN 64 /* bytes of a client's field name quoted back */

void http_utf8_trim(char *s)
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

/* A client's field name, shortened (at a character boundary) to quote back. */
static const char *s_shown(const char *name, char buf[NAME_SHOWN + 4])
{
    size_t n = strlen(name);
    if (n <= NAME_SHOWN)
        return name;
    memcpy(buf, name, NAME_SHOWN);
    buf[NAME_SHOWN] = '\0';
    http_utf8_trim(buf);
    strcat(buf, "...");
    return buf;
}

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

/* An optional integer field: absent gives def. */
static bool s_int_field(json_t *doc, const char *name, json_int_t def, json_int_t min,
                        json_int_t max, json_int_t multiple, json_int_t *out, char *why, size_t len)
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
        json_array_append_new(
            out, json_pack("{s:I,s:s}", "seed", (json_int_t)s_random_seed(), "style", ""));
        return out;
    }
    if (!json_is_array(v)) {
        snprintf(why, len, "combinations must be an array");
        goto fail;
    }
    size_t n = json_array_size(v);
    if (n < 1 || n > JOB_COMBINATIONS_MAX) {
        snprintf(why, len, "combinations must have 1 to %d elements", JOB_COMBINATIONS_MAX);
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
                snprintf(why, len, "unknown field \"combinations[%zu].%s\"", i, s_shown(key, buf));
                goto fail;
            }
        }
        json_int_t seed = s_random_seed();
        json_t *sv = json_object_get(e, "seed");
        if (sv) {
            if (!json_is_integer(sv) || json_integer_value(sv) < 0
                || json_integer_value(sv) > JOB_SEED_MAX) {
                snprintf(why, len, "combinations[%zu].seed must be an integer from 0 to %lld", i,
                         JOB_SEED_MAX);
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
            if (json_string_length(st) > JOB_STYLE_MAX) {
                snprintf(why, len, "combinations[%zu].style must be at most %d bytes", i,
                         JOB_STYLE_MAX);
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

static const char *const s_job_fields[] = {
    "prompt", "combinations", "images_per_combination", "width",          "height",
    "steps",  "priority",     "cancel_after_s",         "start_within_s", "webhook"};

/* "webhook": {"url": "https://...", "events": [...]} into m: the URL an
 * http(s) URL that parses (its address is checked at each delivery), the
 * events names of WEBHOOK_EVENTS_ALL, each once (default: the terminal
 * ones). false with the reason in why. */
static bool s_webhook(json_t *hook, msg_t *m, char *why, size_t whylen)
{
    if (!hook)
        return true;
    const char *key;
    json_t *val;
    if (!json_is_object(hook)) {
        snprintf(why, whylen, "webhook must be an object with a url");
        return false;
    }
    json_object_foreach(hook, key, val)
    {
        if (strcmp(key, "url") != 0 && strcmp(key, "events") != 0) {
            char buf[NAME_SHOWN + 4];
            snprintf(why, whylen, "unknown field \"webhook.%s\"", s_shown(key, buf));
            return false;
        }
    }
    json_t *url = json_object_get(hook, "url");
    if (!json_is_string(url)) {
        snprintf(why, whylen, "webhook.url must be a string");
        return false;
    }
    if (json_string_length(url) > WEBHOOK_URL_MAX) {
        snprintf(why, whylen, "webhook.url must be at most %d bytes", WEBHOOK_URL_MAX);
        return false;
    }
    if (strlen(json_string_value(url)) != json_string_length(url)
        || webhook_url_check(json_string_value(url), why, whylen) < 0)
        return false;
    char events[sizeof WEBHOOK_EVENTS_ALL] = "";
    json_t *list = json_object_get(hook, "events");
    if (!list) {
        snprintf(events, sizeof events, "%s", WEBHOOK_EVENTS_DEFAULT);
    } else {
        static const char *const names[] = {"started", "image", "completed", "cancelled", "failed"};
        bool seen[5] = {false};
        size_t i;
        json_t *e;
        if (!json_is_array(list) || json_array_size(list) == 0) {
            snprintf(why, whylen, "webhook.events must be a non-empty array of %s",
                     WEBHOOK_EVENTS_ALL);
            return false;
        }
        json_array_foreach(list, i, e)
        {
            size_t k = 0;
            while (k < 5 && !(json_is_string(e) && strcmp(json_string_value(e), names[k]) == 0))
                k++;
            if (k == 5 || seen[k]) {
                snprintf(why, whylen, "webhook.events[%zu] must be one of %s, each once", i,
                         WEBHOOK_EVENTS_ALL);
                return false;
            }
            seen[k] = true;
        }
        for (size_t k = 0; k < 5; k++)
            if (seen[k])
                snprintf(events + strlen(events), sizeof events - strlen(events), "%s%s",
                         events[0] ? "," : "", names[k]);
    }
    msg_set_str(&m->job_create.webhook_url, json_string_value(url));
    msg_set_str(&m->job_create.webhook_events, events);
    return true;
}

/* The fields of the job's document, checked; NULL with the reason in why. */
static msg_t *s_job_message(json_t *doc, char job_id[UUID_STR_LEN], uint64_t *total_images,
                            int *status, char *why, size_t whylen)
{
    const char *key;
    json_t *val;
    json_object_foreach(doc, key, val)
    {
        size_t i = 0, n = sizeof s_job_fields / sizeof *s_job_fields;
        while (i < n && strcmp(key, s_job_fields[i]) != 0)
            i++;
        if (i == n) {
            char buf[NAME_SHOWN + 4];
            snprintf(why, whylen, "unknown field \"%s\"", s_shown(key, buf));
            return NULL;
        }
    }
    json_t *prompt = json_object_get(doc, "prompt");
    if (!prompt) {
        snprintf(why, whylen, "prompt is required");
        return NULL;
    }
    if (!json_is_string(prompt)) {
        snprintf(why, whylen, "prompt must be a string");
        return NULL;
    }
    if (json_string_length(prompt) < 1 || json_string_length(prompt) > JOB_PROMPT_MAX) {
        snprintf(why, whylen, "prompt must be 1 to %d bytes", JOB_PROMPT_MAX);
        return NULL;
    }
    json_int_t images, width, height, steps, priority, cancel_after, start_within;
    if (!s_int_field(doc, "images_per_combination", 1, 1, JOB_IMAGES_MAX, 1, &images, why, whylen)
        || !s_int_field(doc, "width", 512, JOB_SIZE_MIN, JOB_SIZE_MAX, JOB_SIZE_MULTIPLE, &width,
                        why, whylen)
        || !s_int_field(doc, "height", 512, JOB_SIZE_MIN, JOB_SIZE_MAX, JOB_SIZE_MULTIPLE, &height,
                        why, whylen)
        || !s_int_field(doc, "steps", 30, JOB_STEPS_MIN, JOB_STEPS_MAX, 1, &steps, why, whylen)
        || !s_int_field(doc, "priority", 0, JOB_PRIORITY_MIN, JOB_PRIORITY_MAX, 1, &priority, why,
                        whylen)
        || !s_int_field(doc, "cancel_after_s", 0, 1, JOB_DEADLINE_MAX_S, 1, &cancel_after, why,
                        whylen)
        || !s_int_field(doc, "start_within_s", 0, 1, JOB_DEADLINE_MAX_S, 1, &start_within, why,
                        whylen))
        return NULL;
    json_t *combos = s_combinations(json_object_get(doc, "combinations"), why, whylen);
    if (!combos)
        return NULL;
    if (uuid_v4(job_id) < 0) {
        log_error("no random job id: %s", strerror(errno));
        *status = 500;
        snprintf(why, whylen, "internal error");
        json_decref(combos);
        return NULL;
    }
    *total_images = json_array_size(combos) * (uint64_t)images;
    char *combos_text = json_dumps(combos, JSON_COMPACT);
    json_decref(combos);
    if (!combos_text)
        abort();
    msg_t *m = msg_new(MSG_JOB_CREATE);
    msg_set_str(&m->job_create.job_id, job_id);
    msg_set_str(&m->job_create.prompt, json_string_value(prompt));
    m->job_create.combinations = combos_text; /* handed over: freed with m */
    m->job_create.images_per_combination = (uint64_t)images;
    m->job_create.width = (uint64_t)width;
    m->job_create.height = (uint64_t)height;
    m->job_create.steps = (uint64_t)steps;
    m->job_create.priority = (int64_t)priority;
    m->job_create.cancel_after_s = (uint64_t)cancel_after;
    m->job_create.start_within_s = (uint64_t)start_within;
    if (!s_webhook(json_object_get(doc, "webhook"), m, why, whylen)) {
        msg_destroy(&m);
        return NULL;
    }
    return m;
}

msg_t *http_input_job(const http_request_t *rq, char job_id[UUID_STR_LEN], uint64_t *total_images,
                      int *status, char *why, size_t whylen)
{
    *status = 400;
    if (s_blank(rq->body, rq->body_len)) {
        snprintf(why, whylen, "request body must be a JSON object with a prompt");
        return NULL;
    }
    if (!s_is_json_type(rq->content_type)) {
        *status = 415;
        snprintf(why, whylen, "Content-Type must be application/json");
        return NULL;
    }
    json_t *doc = s_parse_object(rq, why, whylen);
    if (!doc)
        return NULL;
    msg_t *m = s_job_message(doc, job_id, total_images, status, why, whylen);
    json_decref(doc);
    return m;
}

/* ------------------------------------------------------------ cancel */

int http_input_cancel_mode(const http_request_t *rq, cancel_mode_t *mode, char *why, size_t whylen)
{
    *mode = CANCEL_MODE_IMMEDIATE;
    if (s_blank(rq->body, rq->body_len))
        return 0;
    json_t *doc = s_parse_object(rq, why, whylen);
    if (!doc)
        return -1;
    int rc = 0;
    const char *key;
    json_t *val;
    json_object_foreach(doc, key, val)
    {
        if (strcmp(key, "mode") != 0) {
            char buf[NAME_SHOWN + 4];
            snprintf(why, whylen, "unknown field \"%s\"", s_shown(key, buf));
            rc = -1;
            break;
        }
        const char *s = json_string_value(val); /* NULL unless a string */
        if (!s || cancel_mode_parse(s, json_string_length(val), mode) < 0
            || *mode == CANCEL_MODE_NONE) {
            snprintf(why, whylen, "mode must be \"immediate\" or \"after_current_image\"");
            rc = -1;
            break;
        }
    }
    json_decref(doc);
    return rc;
}

/* ------------------------------------------------------------ POST /api/jobs/cancel */

/* The mode field's value, or -1 with why. */
static int s_mode_of(json_t *v, cancel_mode_t *mode, char *why, size_t whylen)
{
    const char *s = json_string_value(v);
    if (!s || cancel_mode_parse(s, json_string_length(v), mode) < 0 || *mode == CANCEL_MODE_NONE) {
        snprintf(why, whylen, "mode must be \"immediate\" or \"after_current_image\"");
        return -1;
    }
    return 0;
}

/* job_ids: UUIDs, lower-cased, each once, at most JOB_CANCEL_MANY_MAX;
 * into *ids (an array, in order) and text (comma-separated). */
static int s_job_ids(json_t *v, json_t **ids, char **text, char *why, size_t whylen)
{
    size_t n = json_array_size(v);
    if (!json_is_array(v) || n == 0 || n > JOB_CANCEL_MANY_MAX) {
        snprintf(why, whylen, "job_ids must be an array of 1 to %d job ids", JOB_CANCEL_MANY_MAX);
        return -1;
    }
    json_t *seen = json_object();
    *ids = json_array();
    char *out = malloc(n * UUID_STR_LEN + 1), *p = out;
    if (!out)
        abort();
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        const char *s = json_string_value(e);
        if (!s || !uuid_valid(s)) {
            snprintf(why, whylen, "job_ids[%zu] must be a UUID", i);
            json_decref(seen);
            json_decref(*ids);
            *ids = NULL;
            free(out);
            return -1;
        }
        char id[UUID_STR_LEN];
        for (int k = 0; k < UUID_STR_LEN; k++)
            id[k] = (char)tolower((unsigned char)s[k]);
        if (json_object_get(seen, id))
            continue; /* asked twice: answered once */
        json_object_set_new(seen, id, json_true());
        json_array_append_new(*ids, json_string(id));
        p += sprintf(p, "%s%s", p == out ? "" : ",", id);
    }
    json_decref(seen);
    *text = out;
    return 0;
}

/* filter: {"status": [...], "created_before": "...", "created_after": "..."} */
static int s_filter(json_t *f, msg_job_cancel_many_request_t *b, char *why, size_t whylen)
{
    if (!json_is_object(f)) {
        snprintf(why, whylen, "filter must be an object");
        return -1;
    }
    const char *key;
    json_t *val;
    json_object_foreach(f, key, val)
    {
        if (!strcmp(key, "status")) {
            size_t n = json_array_size(val), i;
            if (!json_is_array(val) || n == 0) {
                snprintf(why, whylen, "filter.status must be a non-empty array of statuses");
                return -1;
            }
            char list[160] = "";
            json_t *e;
            json_array_foreach(val, i, e)
            {
                const char *s = json_string_value(e);
                job_status_t st;
                if (!s || job_status_parse(s, json_string_length(e), &st) < 0
                    || strlen(list) + 20 >= sizeof list) {
                    snprintf(why, whylen,
                             "filter.status[%zu] must be pending, processing, completed, failed or "
                             "user_cancelled",
                             i);
                    return -1;
                }
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                         list[0] ? "," : "", job_status_name(st));
            }
            msg_set_str(&b->statuses, list);
        } else if (!strcmp(key, "created_before") || !strcmp(key, "created_after")) {
            const char *s = json_string_value(val);
            if (!s || !*s || json_string_length(val) > 64) {
                snprintf(why, whylen, "filter.%s must be a timestamp (ISO 8601)", key);
                return -1;
            }
            msg_set_str(!strcmp(key, "created_before") ? &b->created_before : &b->created_after, s);
        } else {
            char buf[NAME_SHOWN + 4];
            snprintf(why, whylen, "unknown field \"filter.%s\"", s_shown(key, buf));
            return -1;
        }
    }
    return 0;
}

msg_t *http_input_cancel_many(const http_request_t *rq, json_t **ids, char *why, size_t whylen)
{
    *ids = NULL;
    if (s_blank(rq->body, rq->body_len)) {
        snprintf(why, whylen, "request body must be a JSON object with job_ids or filter");
        return NULL;
    }
    json_t *doc = s_parse_object(rq, why, whylen);
    if (!doc)
        return NULL;
    msg_t *m = msg_new(MSG_JOB_CANCEL_MANY_REQUEST);
    msg_job_cancel_many_request_t *b = &m->job_cancel_many_request;
    b->mode = CANCEL_MODE_IMMEDIATE;
    json_t *job_ids = NULL, *filter = NULL;
    const char *key;
    json_t *val;
    int rc = 0;
    json_object_foreach(doc, key, val)
    {
        if (!strcmp(key, "job_ids"))
            job_ids = val;
        else if (!strcmp(key, "filter"))
            filter = val;
        else if (!strcmp(key, "mode"))
            rc = s_mode_of(val, &b->mode, why, whylen);
        else if (!strcmp(key, "dry_run")) {
            if (!json_is_boolean(val)) {
                snprintf(why, whylen, "dry_run must be true or false");
                rc = -1;
            }
            b->dry_run = json_is_true(val);
        } else {
            char buf[NAME_SHOWN + 4];
            snprintf(why, whylen, "unknown field \"%s\"", s_shown(key, buf));
            rc = -1;
        }
        if (rc < 0)
            break;
    }
    if (rc == 0 && !job_ids == !filter) {
        snprintf(why, whylen, "give either job_ids or filter");
        rc = -1;
    }
    if (rc == 0 && job_ids)
        rc = s_job_ids(job_ids, ids, &b->job_ids, why, whylen);
    if (rc == 0 && filter)
        rc = s_filter(filter, b, why, whylen);
    json_decref(doc);
    if (rc < 0) {
        msg_destroy(&m);
        json_decref(*ids);
        *ids = NULL;
    }
    return m;
}

/* ------------------------------------------------------------ Cancel-After */

int http_input_duration(const char *v, uint64_t *seconds)
{
    uint64_t total = 0;
    const char *p = v;
    if (!p || !*p)
        return -1;
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return -1;
        uint64_t n = 0;
        for (; isdigit((unsigned char)*p); p++) {
            n = n * 10 + (uint64_t)(*p - '0');
            if (n > JOB_DEADLINE_MAX_S)
                return -1;
        }
        uint64_t unit = 1;
        if (*p == 'h')
            unit = 3600;
        else if (*p == 'm')
            unit = 60;
        else if (*p == 's')
            unit = 1;
        else if (*p || p == v)
            return -1;
        if (*p)
            p++;
        total += n * unit;
        if (total > JOB_DEADLINE_MAX_S)
            return -1;
    }
    if (total < 1)
        return -1;
    *seconds = total;
    return 0;
}
