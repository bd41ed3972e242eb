/*
 * check.c - see check.h.
 */
#include "config.h"

#include "actors/store/check.h"

#include "messages/limits.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int s_check_combinations(const char *text, size_t *count, char *why, size_t len)
{
    if (!text) {
        snprintf(why, len, "combinations is required");
        return -1;
    }
    json_error_t e;
    json_t *a = json_loads(text, JSON_REJECT_DUPLICATES, &e);
    if (!a) {
        snprintf(why, len, "combinations is not valid JSON: %s", e.text);
        return -1;
    }
    int rc = 0;
    size_t n = json_is_array(a) ? json_array_size(a) : 0;
    if (!json_is_array(a) || n == 0 || n > JOB_COMBINATIONS_MAX) {
        snprintf(why, len, "combinations must be an array of 1 to %d objects",
                 JOB_COMBINATIONS_MAX);
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *c = json_array_get(a, i);
        json_t *seed = json_object_get(c, "seed");
        json_t *style = json_object_get(c, "style");
        if (!json_is_object(c)) {
            snprintf(why, len, "combinations[%zu] must be an object", i);
            rc = -1;
        } else if (!json_is_integer(seed) || json_integer_value(seed) < 0) {
            snprintf(why, len, "combinations[%zu].seed must be an integer >= 0", i);
            rc = -1;
        } else if (style && !json_is_string(style) && !json_is_null(style)) {
            snprintf(why, len, "combinations[%zu].style must be a string", i);
            rc = -1;
        } else if (json_is_string(style) && json_string_length(style) > JOB_STYLE_MAX) {
            snprintf(why, len, "combinations[%zu].style must be at most %d bytes", i,
                     JOB_STYLE_MAX);
            rc = -1;
        }
    }
    json_decref(a);
    *count = n;
    return rc;
}

/* The webhook's URL was parsed by the http actor (an http or https URL);
 * here only what the SQL relies on: its length, and events that are names
 * of WEBHOOK_EVENTS_ALL, comma-separated. */
static int s_check_webhook(const msg_job_create_t *b, char *why, size_t len)
{
    if (strlen(b->webhook_url) > WEBHOOK_URL_MAX) {
        snprintf(why, len, "webhook.url must be at most %d bytes", WEBHOOK_URL_MAX);
        return -1;
    }
    const char *p = b->webhook_events ? b->webhook_events : "";
    do {
        size_t k = strcspn(p, ",");
        const char *all = WEBHOOK_EVENTS_ALL;
        bool known = false;
        while (*all && !known) {
            size_t n = strcspn(all, ",");
            known = n == k && strncmp(all, p, k) == 0;
            all += n + (all[n] == ',');
        }
        if (!known) {
            snprintf(why, len, "webhook.events must name events of %s", WEBHOOK_EVENTS_ALL);
            return -1;
        }
        p += k;
    } while (*p++ == ',');
    return 0;
}

int store_check_job(const msg_job_create_t *b, size_t *ncombinations, char *why, size_t len)
{
    if (!b->prompt) {
        snprintf(why, len, "prompt is required");
        return -1;
    }
    if (strlen(b->prompt) > JOB_PROMPT_MAX) {
        snprintf(why, len, "prompt must be at most %d bytes", JOB_PROMPT_MAX);
        return -1;
    }
    if (b->images_per_combination < 1 || b->images_per_combination > INT32_MAX || b->width < 1
        || b->width > INT32_MAX || b->height < 1 || b->height > INT32_MAX || b->steps < 1
        || b->steps > INT32_MAX) {
        snprintf(why, len, "images_per_combination, width, height and steps must be positive");
        return -1;
    }
    if (b->cancel_after_s > JOB_DEADLINE_MAX_S || b->start_within_s > JOB_DEADLINE_MAX_S) {
        snprintf(why, len, "deadlines must be at most %d s", JOB_DEADLINE_MAX_S);
        return -1;
    }
    if (b->priority < JOB_PRIORITY_MIN || b->priority > JOB_PRIORITY_MAX) {
        snprintf(why, len, "priority must be %d to %d", JOB_PRIORITY_MIN, JOB_PRIORITY_MAX);
        return -1;
    }
    if (b->webhook_url && *b->webhook_url && s_check_webhook(b, why, len) < 0)
        return -1;
    if (s_check_combinations(b->combinations, ncombinations, why, len) < 0)
        return -1;
    if (b->images_per_combination * *ncombinations > INT32_MAX) {
        snprintf(why, len, "too many images in one job");
        return -1;
    }
    return 0;
}
