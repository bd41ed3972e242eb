/*
 * hub.c - the event streams (hub.h, docs/events.md).
 *
 * A stream's life: OPENING (its first read, with the store: the job's
 * snapshot and, on a resume, what the client missed since Last-Event-ID, in
 * one snapshot of the database with the event clock), then the response
 * starts; CATCHUP while it pages through more of PostgreSQL; then it joins
 * the feed (feed.c) at the clock of its last read: LIVE at once when the
 * feed is there, WAITING when the feed is behind, or after the frames it
 * missed from the ring. A LIVE stream's position is the feed's.
 *
 * Key constraints: nothing here waits, and nothing here slows the job
 * down: the producers have published and gone on. A slow client gets its
 * durable events queued (the server closes it past its output limit, and
 * it resumes from its last id) and no progress or preview while it is
 * behind: only the latest of each is held for it. Every event carries an
 * id: a durable one its seq, an ephemeral one the stream's position, so a
 * resume after either loses no durable event and repeats none.
 *
 * A stream is freed only from the hub's own frames (s_settle), never from
 * inside a write: the loops that write to many streams keep their place.
 */
#include "config.h"

#include "actors/events/internal.h"

#include "runtime/log.h"
#include "runtime/metrics.h"
#include "runtime/names.h"

#include <errno.h>
#include <inttypes.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char s_stream_headers[] = "Cache-Control: no-store\r\n"
                                       "X-Accel-Buffering: no\r\n";

enum { HELD_PROGRESS, HELD_PREVIEW };
static const char *const s_held_names[] = {"progress", "preview"};

/* ------------------------------------------------------------ streams */

static void s_free(stream_t *s)
{
    hub_t *hub = s->hub;
    if (s->prev)
        s->prev->next = s->next;
    else
        hub->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    hub->nstreams--;
    atomic_fetch_sub(&metrics.streams_open, 1);
    free(s->held[0]);
    free(s->held[1]);
    http_exchange_release(s->x);
    free(s);
}

/* Frees s once it is over and no read of its is in flight. */
static void s_settle(stream_t *s)
{
    if (s->over && !s->asking)
        s_free(s);
}

/* Ends s: the body's end goes out (the client reconnects and resumes). */
static void s_end(stream_t *s)
{
    if (s->over)
        return;
    s->over = true;
    if (s->begun)
        http_stream_end(s->x);
}

/* Sends len bytes; on failure (the client gone or too far behind) s is over. */
static void s_write(stream_t *s, const char *data, size_t len)
{
    if (s->over)
        return;
    if (http_stream_write(s->x, data, len) < 0) {
        s->over = true; /* the server has closed it: no callback follows */
        return;
    }
    s->last_write = ev_now(s->hub->loop);
}

bool hub_stream_wants(const stream_t *s, const frame_t *f)
{
    if (f->kind == JOB_EVENT_CHANGED)
        return false; /* the job view's, never a stream's */
    if (s->owner && f->owner != s->owner)
        return false; /* another key's job (docs/security.md) */
    if (s->job_id[0])
        return strcmp(s->job_id, f->job_id) == 0;
    return (s->status_mask & (1u << f->status)) != 0;
}

void hub_stream_write_frame(stream_t *s, const frame_t *f)
{
    s_write(s, f->frame, f->len);
    if (s->job_id[0] && f->kind == JOB_EVENT_END)
        s_end(s); /* the job is over, and so is its stream */
}

void hub_stream_live(stream_t *s)
{
    s->state = S_LIVE;
    s->pos = s->hub->feed.pos;
}

void hub_dispatch(hub_t *hub, const frame_t *f)
{
    view_apply(hub, f);
    for (stream_t *s = hub->streams, *next; s; s = next) {
        next = s->next;
        if (s->over)
            continue;
        if (s->state == S_WAITING && f->seq > s->pos)
            s->state = S_LIVE; /* the feed has reached it: f is pos + 1 */
        if (s->state != S_LIVE)
            continue;
        if (hub_stream_wants(s, f))
            hub_stream_write_frame(s, f);
        s->pos = f->seq;
        s_settle(s);
    }
}

/* ------------------------------------------------------------ reading */

static void s_on_read(actor_t *self, int status, msg_t *reply, void *arg);

/* Asks the store for s's events after `after` (and its snapshot). On
 * failure s is over (answered 503 when not begun). */
static void s_read(stream_t *s, uint64_t after, bool snapshot)
{
    hub_t *hub = s->hub;
    msg_t *m = msg_new(MSG_JOB_EVENTS_READ);
    if (s->job_id[0])
        msg_set_str(&m->job_events_read.job_id, s->job_id);
    m->job_events_read.after_seq = after;
    m->job_events_read.limit = READ_LIMIT;
    m->job_events_read.snapshot = snapshot;
    m->job_events_read.owner = s->owner;
    int rc = actor_request(hub->self, hub->store, m, hub->cfg.request_timeout_s, s_on_read, s);
    msg_destroy(&m);
    if (rc == 0) {
        s->asking = true;
        return;
    }
    log_warn("cannot reach the %s actor for an event stream: %s", hub->store, strerror(errno));
    if (!s->begun && !s->over)
        hub->cfg.error(s->x, 503, "database unavailable");
    s->over = true;
    s_end(s);
}

void hub_stream_read_more(stream_t *s)
{
    s->state = S_CATCHUP;
    if (http_stream_queued(s->x) > CATCHUP_QUEUED)
        s->page_wanted = true; /* when the client has taken what it has */
    else
        s_read(s, s->pos, false);
}

/* The `end` event of a job that ended before its stream opened, from its
 * snapshot: the fields of the end event. */
static void s_write_end_from(stream_t *s, json_t *doc, uint64_t id)
{
    json_t *d = json_object();
    static const char *const keys[] = {"job_id",       "job_status",           "completed_images",
                                       "total_images", "generated_attach_ids", "finished_at",
                                       "error"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        json_t *v = json_object_get(doc, keys[i]);
        json_object_set(d, keys[i], v ? v : json_null());
    }
    char *text = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    size_t len;
    char *frame = sse_frame(id, "end", text ? text : "{}", &len);
    free(text);
    s_write(s, frame, len);
    free(frame);
    s_end(s);
}

/* The first reply: answer the request, start the stream, say where it is. */
static bool s_begin(stream_t *s, const msg_job_events_t *r)
{
    hub_t *hub = s->hub;
    json_t *doc = NULL;
    if (s->job_id[0]) {
        doc = r->snapshot ? json_loads(r->snapshot, 0, NULL) : NULL;
        if (!doc) {
            hub->cfg.error(s->x, 500, "internal error");
            s->over = true;
            return false;
        }
        if (s->resuming && r->end_seq && s->resume >= r->end_seq) {
            /* the client has seen the end: 204 tells an EventSource to stop */
            http_respond(s->x, 204, NULL, NULL, NULL, 0);
            s->over = true;
            json_decref(doc);
            return false;
        }
    }
    http_stream_fns_t fns = {0};
    fns.closed = hub_stream_closed;
    fns.drained = hub_stream_drained;
    fns.arg = s;
    if (http_stream_begin(s->x, 200, "text/event-stream; charset=utf-8", s_stream_headers, &fns)
        < 0) {
        s->over = true;
        json_decref(doc);
        return false;
    }
    s->begun = true;
    s_write(s, "retry: 1000\n\n", 13);
    uint64_t here = s->resuming ? s->resume : r->clock;
    size_t len;
    char *frame;
    if (s->job_id[0]) {
        frame = sse_frame(here, "snapshot", r->snapshot, &len);
    } else {
        char data[96];
        snprintf(data, sizeof data, "{\"event_clock\":%" PRIu64 "}", r->clock);
        frame = sse_frame(here, "hello", data, &len);
    }
    s_write(s, frame, len);
    free(frame);
    s->state = S_CATCHUP;
    s->pos = here;
    if (doc && !s->resuming && r->end_seq)
        s_write_end_from(s, doc, r->end_seq);
    else if (doc && !s->resuming) {
        json_t *st = json_object_get(doc, "job_status");
        const char *v = json_string_value(st);
        job_status_t status;
        /* ended before events were kept (an older schema): the same end */
        if (v && job_status_parse(v, strlen(v), &status) == 0 && status != JOB_STATUS_PENDING
            && status != JOB_STATUS_PROCESSING)
            s_write_end_from(s, doc, r->clock);
    }
    json_decref(doc);
    return !s->over;
}

static void s_on_read(actor_t *self, int status, msg_t *reply, void *arg)
{
    stream_t *s = arg;
    hub_t *hub = s->hub;
    s->asking = false;
    if (s->over) {
        s_settle(s);
        return;
    }
    if (status != 0 || reply->type != MSG_JOB_EVENTS) {
        if (!s->begun) {
            if (status == 0 && reply->type == MSG_ERROR && reply->error.code == -ENOENT)
                hub->cfg.error(s->x, 404, "Job not found");
            else
                hub->cfg.error(s->x, 503, "database unavailable");
            s->over = true;
        }
        s_end(s); /* begun: the client resumes when the database is back */
        s_settle(s);
        return;
    }
    const msg_job_events_t *r = &reply->job_events;
    feed_learn_log(hub, r->log);
    if (!s->begun && !s_begin(s, r)) {
        s_settle(s);
        return;
    }
    json_t *a = json_loads(r->events ? r->events : "[]", 0, NULL);
    size_t n = json_array_size(a);
    for (size_t i = 0; i < n && !s->over; i++) {
        frame_t fr;
        if (!sse_frame_from_json(json_array_get(a, i), &fr)) {
            log_error("the store read a malformed event: skipped");
            continue;
        }
        if (fr.seq > s->pos) {
            if (hub_stream_wants(s, &fr))
                hub_stream_write_frame(s, &fr);
            s->pos = fr.seq;
        }
        frame_clear(&fr);
    }
    json_decref(a);
    if (!s->over) {
        if (n == READ_LIMIT)
            hub_stream_read_more(s); /* a page: more follow */
        else
            feed_join(hub, s, r->clock > s->pos ? r->clock : s->pos, true);
    }
    s_settle(s);
}

/* ------------------------------------------------------------ callbacks */

void hub_stream_closed(http_exchange_t *x, void *arg)
{
    stream_t *s = arg;
    s->over = true; /* the client has gone; the server has closed it */
    s_settle(s);
}

/* The client has taken what was queued: what was held back goes now. */
void hub_stream_drained(http_exchange_t *x, void *arg)
{
    stream_t *s = arg;
    for (int i = 0; i < 2 && !s->over; i++) {
        if (!s->held[i])
            continue;
        size_t len;
        char *frame = sse_frame(s->pos, s_held_names[i], s->held[i], &len);
        free(s->held[i]);
        s->held[i] = NULL;
        s_write(s, frame, len);
        free(frame);
    }
    if (!s->over && s->page_wanted && !s->asking) {
        s->page_wanted = false;
        s_read(s, s->pos, false);
    }
    s_settle(s);
}

/* ------------------------------------------------------------ ephemeral */

/* Sends an ephemeral event (data: JSON text) to each live stream that
 * wants it, or holds it for a slow one; owner (NULL: already checked): the
 * job's key, which a key's stream must be. */
static void s_ephemeral(hub_t *hub, int which, const char *job_id, const uint64_t *owner,
                        const char *data, bool (*wants)(const stream_t *s, const char *job_id))
{
    char *frame = NULL;
    size_t len = 0;
    for (stream_t *s = hub->streams, *next; s; s = next) {
        next = s->next;
        if (s->over || s->state != S_LIVE || (owner && s->owner && s->owner != *owner)
            || !wants(s, job_id))
            continue;
        if (http_stream_queued(s->x) > hub->cfg.coalesce_queued) {
            free(s->held[which]);
            s->held[which] = strdup(data);
            continue;
        }
        if (!frame) /* live streams are all at the feed's position */
            frame = sse_frame(hub->feed.pos, s_held_names[which], data, &len);
        s_write(s, frame, len);
        s_settle(s);
    }
    free(frame);
}

static bool s_wants_progress(const stream_t *s, const char *job_id)
{
    if (s->job_id[0])
        return strcmp(s->job_id, job_id) == 0;
    return (s->status_mask & (1u << JOB_STATUS_PROCESSING)) != 0;
}

static bool s_wants_preview(const stream_t *s, const char *job_id)
{
    return s->previews && strcmp(s->job_id, job_id) == 0;
}

void hub_on_event(hub_t *hub, msg_t *msg)
{
    feed_on_event(hub, &msg->job_event);
}

void hub_on_progress(hub_t *hub, msg_t *msg)
{
    const msg_job_progress_t *p = &msg->job_progress;
    if (hub->nstreams == 0 || !p->job_id)
        return;
    char data[256];
    snprintf(data, sizeof data,
             "{\"job_id\":\"%s\",\"combination\":%" PRIu64 ",\"image_index\":%" PRIu64
             ",\"step\":%" PRIu64 ",\"steps\":%" PRIu64 "}",
             p->job_id, p->combination, p->image_index, p->step, p->steps);
    s_ephemeral(hub, HELD_PROGRESS, p->job_id, &p->owner, data, s_wants_progress);
}

void hub_on_preview(hub_t *hub, msg_t *msg)
{
    const msg_job_preview_t *p = &msg->job_preview;
    if (!p->job_id)
        return;
    bool anyone = false;
    for (stream_t *s = hub->streams; s && !anyone; s = s->next)
        anyone = !s->over && s->state == S_LIVE && s_wants_preview(s, p->job_id);
    if (!anyone)
        return;
    size_t b64len;
    char *b64 = sse_base64(p->png.data, p->png.size, &b64len);
    char *data;
    if (asprintf(&data,
                 "{\"job_id\":\"%s\",\"combination\":%" PRIu64 ",\"image_index\":%" PRIu64
                 ",\"step\":%" PRIu64 ",\"width\":%" PRIu64 ",\"height\":%" PRIu64
                 ",\"data\":\"data:image/png;base64,%s\"}",
                 p->job_id, p->combination, p->image_index, p->step, p->width, p->height, b64)
        < 0)
        abort();
    free(b64);
    /* a job's own stream only, whose owner was checked when it opened */
    s_ephemeral(hub, HELD_PREVIEW, p->job_id, NULL, data, s_wants_preview);
    free(data);
}

/* ------------------------------------------------------------ timers */

static void s_want_previews(hub_t *hub, const char *job_id)
{
    msg_t *m = msg_new(MSG_PREVIEW_WANTED);
    msg_set_str(&m->preview_wanted.job_id, job_id);
    m->preview_wanted.ttl_ms = PREVIEW_WANTED_TTL_MS;
    if (actor_publish(hub->self, TOPIC_PREVIEW_WANTED, m) < 0)
        log_warn("cannot publish a preview wish for %s", job_id);
    msg_destroy(&m);
}

/* Keep-alives for silent streams; the preview wishes renewed. */
static void s_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    hub_t *hub = w->data;
    double now = ev_now(loop);
    static const char ka[] = ": keep-alive\n\n";
    for (stream_t *s = hub->streams, *next; s; s = next) {
        next = s->next;
        if (s->begun && !s->over && now - s->last_write >= hub->cfg.keepalive_s)
            s_write(s, ka, sizeof ka - 1);
        s_settle(s);
    }
    static const double every = PREVIEW_WANTED_REFRESH_MS / 1000.;
    if (now - hub->wished_at < every - TICK_S / 2)
        return;
    hub->wished_at = now;
    for (stream_t *s = hub->streams; s; s = s->next) {
        if (!s->previews || s->over)
            continue;
        bool first = true; /* one wish per job */
        for (stream_t *t = hub->streams; t != s && first; t = t->next)
            first = !(t->previews && !t->over && strcmp(t->job_id, s->job_id) == 0);
        if (first)
            s_want_previews(hub, s->job_id);
    }
}

/* The feed's poll: only while something needs the feed. */
static void s_poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    feed_fill(w->data);
}

/* ------------------------------------------------------------ opening */

/* A Last-Event-ID: decimal digits, at most 18 of them. */
static int s_parse_id(const char *v, uint64_t *out)
{
    size_t n = strspn(v, "0123456789");
    if (n == 0 || n > 18 || v[n])
        return -1;
    *out = strtoull(v, NULL, 10);
    return 0;
}

/* "pending,processing" into a mask of job_status_t bits. */
static int s_parse_statuses(const char *v, unsigned *mask, char *bad, size_t badlen)
{
    *mask = 0;
    while (*v) {
        size_t n = strcspn(v, ",");
        job_status_t st;
        if (job_status_parse(v, n, &st) < 0) {
            snprintf(bad, badlen, "%.*s", (int)(n < 40 ? n : 40), v);
            return -1;
        }
        *mask |= 1u << st;
        v += n;
        v += *v == ',';
    }
    return *mask ? 0 : -1;
}

void hub_open(hub_t *hub, http_exchange_t *x, const http_request_t *rq, const char *job_id,
              const char *last_event_id, uint64_t owner)
{
    const char *q_last = http_request_query(rq, "last_event_id");
    const char *q_previews = http_request_query(rq, "previews");
    const char *q_status = http_request_query(rq, "status");
    uint64_t resume = 0;
    bool resuming = false;
    const char *id_text = last_event_id && *last_event_id ? last_event_id : q_last;
    if (id_text && *id_text && s_parse_id(id_text, &resume) < 0) {
        hub->cfg.error(x, 400, "Last-Event-ID must be an event id of this service (digits)");
        return;
    }
    resuming = id_text && *id_text;
    bool previews = false;
    if (q_previews) {
        if (!strcmp(q_previews, "1") || !strcmp(q_previews, "true"))
            previews = job_id != NULL; /* every job's stream has none */
        else if (strcmp(q_previews, "0") && strcmp(q_previews, "false")) {
            hub->cfg.error(x, 400, "previews must be 1 or 0");
            return;
        }
    }
    unsigned mask = ~0u;
    if (q_status && !job_id) {
        char bad[48] = "";
        if (s_parse_statuses(q_status, &mask, bad, sizeof bad) < 0) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "status must be a comma-separated list of pending, processing, completed, "
                     "failed, user_cancelled%s%s",
                     bad[0] ? "; not " : "", bad);
            hub->cfg.error(x, 400, msg);
            return;
        }
    }
    if (rq->head) { /* what a GET would start, without the stream */
        http_respond(x, 200, "text/event-stream; charset=utf-8", s_stream_headers, NULL, 0);
        return;
    }
    if (hub->stopping) {
        hub->cfg.error(x, 503, "shutting down: reconnect to another instance");
        return;
    }
    if (hub->nstreams >= hub->cfg.max_streams) {
        char msg[96];
        snprintf(msg, sizeof msg, "too many event streams (at most %zu on this instance)",
                 hub->cfg.max_streams);
        hub->cfg.error(x, 503, msg);
        return;
    }
    stream_t *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->hub = hub;
    s->x = x;
    http_exchange_hold(x);
    if (job_id)
        snprintf(s->job_id, sizeof s->job_id, "%s", job_id);
    s->status_mask = mask;
    s->owner = owner;
    s->previews = previews;
    s->resume = resume;
    s->resuming = resuming;
    s->state = S_OPENING;
    s->last_write = ev_now(hub->loop);
    s->next = hub->streams;
    if (hub->streams)
        hub->streams->prev = s;
    hub->streams = s;
    hub->nstreams++;
    atomic_fetch_add(&metrics.streams_open, 1);
    if (previews)
        s_want_previews(hub, s->job_id); /* generators start now, not at the next renewal */
    /* a fresh stream reads no past events, only the clock (and snapshot) */
    s_read(s, resuming ? resume : (uint64_t)INT64_MAX, job_id != NULL);
    s_settle(s);
}

/* ------------------------------------------------------------ the hub */

hub_t *hub_new(actor_t *self, const hub_config_t *cfg)
{
    hub_t *hub = calloc(1, sizeof *hub);
    if (!hub)
        abort();
    hub->self = self;
    hub->cfg = *cfg;
    hub->store = strdup(cfg->store ? cfg->store : ACTOR_STORE);
    if (!hub->store)
        abort();
    hub->cfg.store = hub->store;
    if (!hub->cfg.max_streams)
        hub->cfg.max_streams = HUB_MAX_STREAMS_DEFAULT;
    if (hub->cfg.keepalive_s <= 0)
        hub->cfg.keepalive_s = HUB_KEEPALIVE_S;
    if (!hub->cfg.coalesce_queued)
        hub->cfg.coalesce_queued = HUB_COALESCE_QUEUED;
    if (hub->cfg.request_timeout_s <= 0)
        hub->cfg.request_timeout_s = 5.;
    hub->loop = actor_loop(self);
    feed_init(hub);
    view_init(hub, cfg->view_bytes);
    ev_timer_init(&hub->tick, s_tick_cb, TICK_S, TICK_S);
    hub->tick.data = hub;
    ev_timer_start(hub->loop, &hub->tick);
    ev_timer_init(&hub->poll, s_poll_cb, POLL_S, POLL_S);
    hub->poll.data = hub;
    ev_timer_start(hub->loop, &hub->poll);
    return hub;
}

size_t hub_streams(const hub_t *hub)
{
    return hub->nstreams;
}

void hub_shutdown(hub_t *hub)
{
    hub->stopping = true;
    for (stream_t *s = hub->streams, *next; s; s = next) {
        next = s->next;
        if (!s->begun && !s->over) {
            hub->cfg.error(s->x, 503, "shutting down: reconnect to another instance");
            s->over = true;
        }
        s_end(s);
        s_settle(s);
    }
}

void hub_destroy(hub_t **hubp)
{
    hub_t *hub = *hubp;
    if (!hub)
        return;
    ev_timer_stop(hub->loop, &hub->tick);
    ev_timer_stop(hub->loop, &hub->poll);
    while (hub->streams) {
        stream_t *s = hub->streams;
        s_end(s);
        s_free(s); /* the runtime has failed every read in flight by now */
    }
    view_fini(hub);
    feed_fini(hub);
    free(hub->store);
    free(hub);
    *hubp = NULL;
}
