/*
 * sse.c - the text/event-stream framing of the hub (WHATWG HTML, "Server-sent
 * events"): each event is "id:", "event:" and one "data:" line of JSON, and a
 * blank line. JSON never holds a raw line break (they are escaped inside
 * strings), so one data line is always enough.
 */
#include "config.h"

#include "actors/events/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *sse_frame(uint64_t id, const char *event, const char *data, size_t *len)
{
    char *out;
    int n =
        asprintf(&out, "id: %llu\nevent: %s\ndata: %s\n\n", (unsigned long long)id, event, data);
    if (n < 0)
        abort();
    *len = (size_t)n;
    return out;
}

bool sse_frame_from_json(json_t *e, frame_t *out)
{
    json_t *seq = json_object_get(e, "seq"), *job = json_object_get(e, "job_id");
    json_t *kind = json_object_get(e, "kind"), *status = json_object_get(e, "job_status");
    json_t *data = json_object_get(e, "data");
    const char *k = json_string_value(kind), *st = json_string_value(status);
    const char *j = json_string_value(job);
    memset(out, 0, sizeof *out);
    if (!json_is_integer(seq) || json_integer_value(seq) < 1 || !j || !uuid_valid(j) || !k || !st
        || !json_is_object(data) || job_event_kind_parse(k, strlen(k), &out->kind) < 0
        || job_status_parse(st, strlen(st), &out->status) < 0)
        return false;
    out->seq = (uint64_t)json_integer_value(seq);
    json_int_t owner = json_integer_value(json_object_get(e, "owner"));
    out->owner = owner > 0 ? (uint64_t)owner : 0;
    snprintf(out->job_id, sizeof out->job_id, "%s", j);
    char *text = json_dumps(data, JSON_COMPACT);
    if (!text)
        return false;
    out->frame = sse_frame(out->seq, k, text, &out->len);
    free(text);
    return true;
}

char *sse_base64(const uint8_t *data, size_t n, size_t *len)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t out_len = 4 * ((n + 2) / 3);
    char *out = malloc(out_len + 1), *p = out;
    if (!out)
        abort();
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        *p++ = abc[v >> 18];
        *p++ = abc[(v >> 12) & 63];
        *p++ = abc[(v >> 6) & 63];
        *p++ = abc[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < n ? (uint32_t)data[i + 1] << 8 : 0);
        *p++ = abc[v >> 18];
        *p++ = abc[(v >> 12) & 63];
        *p++ = i + 1 < n ? abc[(v >> 6) & 63] : '=';
        *p++ = '=';
    }
    *p = '\0';
    *len = out_len;
    return out;
}

void frame_clear(frame_t *f)
{
    free(f->frame);
    memset(f, 0, sizeof *f);
}
