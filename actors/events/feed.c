/*
 * feed.c - the hub's one ordered feed of durable job events.
 *
 * Durable events are numbered by PostgreSQL's event clock: dense, and in
 * commit order (docs/events.md). They reach this instance on the bus, its
 * own from the store and other instances' through Redis, and may arrive out
 * of order (two instances publish independently) or not at all (Redis
 * down, a message dropped). The feed turns them back into the log: it
 * dispatches seq pos + 1 and only that; an event further ahead waits in
 * `pending` while the feed reads the gap from PostgreSQL, which has every
 * event up to the clock. A poll while streams are open covers a feed that
 * hears nothing at all. So every stream sees every event once, in order,
 * whatever Redis did.
 *
 * The ring keeps the last FEED_RING events dispatched, for a stream that
 * finished reading PostgreSQL a little behind the feed. With no stream open
 * and the job view off the feed forgets everything and does nothing; the
 * next stream (or the view's first barrier) anchors it. The view (view.c)
 * sees every event before the streams do, and forgets when the feed does.
 */
#include "config.h"

#include "actors/events/internal.h"

#include "runtime/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void feed_init(hub_t *hub)
{
    feed_t *f = &hub->feed;
    memset(f, 0, sizeof *f);
    f->pending = calloc(FEED_PENDING, sizeof *f->pending);
    if (!f->pending)
        abort();
}

/* Forgets the log: nothing is open that needs it (or it is another
 * log's); the job view forgets with it. */
static void s_reset(hub_t *hub)
{
    feed_t *f = &hub->feed;
    view_forget(hub);
    for (size_t i = 0; i < FEED_RING; i++)
        frame_clear(&f->ring[i]);
    for (size_t i = 0; i < f->npending; i++)
        frame_clear(&f->pending[i]);
    f->npending = 0;
    f->anchored = false;
    f->pos = 0;
    f->ring_lo = 1;
}

void feed_fini(hub_t *hub)
{
    s_reset(hub);
    free(hub->feed.pending);
    hub->feed.pending = NULL;
}

/* Event pos + 1 (consumed): into the ring, then to every stream. */
static void s_advance(hub_t *hub, frame_t *fr)
{
    feed_t *f = &hub->feed;
    frame_t *slot = &f->ring[fr->seq % FEED_RING];
    frame_clear(slot);
    *slot = *fr;
    memset(fr, 0, sizeof *fr);
    f->pos = slot->seq;
    if (f->pos >= FEED_RING && f->ring_lo < f->pos - FEED_RING + 1)
        f->ring_lo = f->pos - FEED_RING + 1;
    hub_dispatch(hub, slot);
    view_progress(hub, false);
}

/* Dispatches what pending holds from pos + 1 on; drops what is behind. */
static void s_drain(hub_t *hub)
{
    feed_t *f = &hub->feed;
    size_t i = 0;
    for (; i < f->npending && f->pending[i].seq <= f->pos + 1; i++) {
        if (f->pending[i].seq == f->pos + 1)
            s_advance(hub, &f->pending[i]);
        else
            frame_clear(&f->pending[i]);
    }
    memmove(f->pending, f->pending + i, (f->npending - i) * sizeof *f->pending);
    f->npending -= i;
}

/* Keeps fr (consumed) ahead of a gap, in order, once. */
static void s_keep(feed_t *f, frame_t *fr)
{
    size_t i = 0;
    while (i < f->npending && f->pending[i].seq < fr->seq)
        i++;
    if ((i < f->npending && f->pending[i].seq == fr->seq) || f->npending == FEED_PENDING) {
        /* a repeat; or too far ahead: the gap's read brings it again */
        frame_clear(fr);
        return;
    }
    memmove(f->pending + i + 1, f->pending + i, (f->npending - i) * sizeof *f->pending);
    f->pending[i] = *fr;
    f->npending++;
    memset(fr, 0, sizeof *fr);
}

/* Takes fr (consumed) wherever it belongs. */
static void s_take(hub_t *hub, frame_t *fr)
{
    feed_t *f = &hub->feed;
    if (f->anchored && fr->seq <= f->pos)
        frame_clear(fr);
    else if (f->anchored && fr->seq == f->pos + 1) {
        s_advance(hub, fr);
        s_drain(hub);
    } else
        s_keep(f, fr);
}

/* Drops what pending holds of another log than ours. */
static void s_keep_ours(hub_t *hub)
{
    feed_t *f = &hub->feed;
    size_t k = 0;
    for (size_t i = 0; i < f->npending; i++) {
        if (strcmp(f->pending[i].log, hub->log) == 0)
            f->pending[k++] = f->pending[i];
        else
            frame_clear(&f->pending[i]);
    }
    f->npending = k;
}

void feed_learn_log(hub_t *hub, const char *log)
{
    if (!log || strcmp(hub->log, log) == 0)
        return;
    if (hub->log[0]) {
        log_warn("the event log changed (%s, was %s): the database was replaced; streams "
                 "follow the new one",
                 log, hub->log);
        s_reset(hub);
    }
    snprintf(hub->log, sizeof hub->log, "%s", log);
    s_keep_ours(hub);
}

void feed_on_event(hub_t *hub, const msg_job_event_t *e)
{
    if (!hub_feed_wanted(hub)) {
        if (hub->feed.anchored)
            s_reset(hub);
        return;
    }
    if (!e->log || (hub->log[0] && strcmp(e->log, hub->log) != 0))
        return; /* another deployment's, on the same Redis */
    if (!hub->feed.anchored && hub->nstreams == 0)
        return; /* the view's first barrier anchors the feed: nothing to keep */
    frame_t fr = {.seq = e->seq, .kind = e->kind, .status = e->job_status, .owner = e->owner};
    snprintf(fr.job_id, sizeof fr.job_id, "%s", e->job_id);
    snprintf(fr.log, sizeof fr.log, "%s", e->log);
    fr.frame = sse_frame(e->seq, job_event_kind_name(e->kind), e->data, &fr.len);
    s_take(hub, &fr);
    if (hub->feed.npending)
        feed_fill(hub); /* a gap: PostgreSQL has it */
}

static void s_on_fill(actor_t *self, int status, msg_t *reply, void *arg)
{
    hub_t *hub = arg;
    feed_t *f = &hub->feed;
    f->filling = false;
    if (status != 0 || reply->type != MSG_JOB_EVENTS) {
        log_debug("the event feed could not read PostgreSQL (%s): next poll",
                  status ? strerror(-status) : msg_type_name(reply->type));
        view_progress(hub, true);
        return;
    }
    feed_learn_log(hub, reply->job_events.log);
    if (!hub_feed_wanted(hub) || !f->anchored) {
        view_progress(hub, true);
        return;
    }
    uint64_t was = f->pos;
    json_t *a = json_loads(reply->job_events.events ? reply->job_events.events : "[]", 0, NULL);
    size_t n = json_array_size(a);
    for (size_t i = 0; i < n; i++) {
        frame_t fr;
        if (!sse_frame_from_json(json_array_get(a, i), &fr)) {
            log_error("the store read a malformed event: the feed skips it");
            continue;
        }
        snprintf(fr.log, sizeof fr.log, "%s", hub->log);
        s_take(hub, &fr);
    }
    json_decref(a);
    s_drain(hub);
    if (n)
        log_debug("event feed read %zu events from PostgreSQL, now at %llu", n,
                  (unsigned long long)f->pos);
    /* more to read; a gap this read did not close waits for the poll
     * rather than spinning on the store */
    if (n == READ_LIMIT || (f->npending && f->pos > was))
        feed_fill(hub);
    view_progress(hub, !f->filling);
}

void feed_fill(hub_t *hub)
{
    feed_t *f = &hub->feed;
    if (f->filling || !f->anchored || !hub_feed_wanted(hub))
        return;
    msg_t *m = msg_new(MSG_JOB_EVENTS_READ);
    m->job_events_read.after_seq = f->pos;
    m->job_events_read.limit = READ_LIMIT;
    if (actor_request(hub->self, hub->store, m, hub->cfg.request_timeout_s, s_on_fill, hub) == 0) {
        f->filling = true;
        if (f->npending) /* a gap, not the poll */
            log_debug("event feed at %llu, %zu ahead from %llu: reading the gap",
                      (unsigned long long)f->pos, f->npending,
                      (unsigned long long)f->pending[0].seq);
    }
    msg_destroy(&m);
}

void feed_anchor(hub_t *hub, uint64_t pos)
{
    feed_t *f = &hub->feed;
    if (f->anchored)
        return;
    f->anchored = true;
    f->pos = pos;
    f->ring_lo = pos + 1;
    s_drain(hub);
    if (f->npending)
        feed_fill(hub);
}

void feed_join(hub_t *hub, stream_t *s, uint64_t pos, bool complete)
{
    feed_t *f = &hub->feed;
    if (!f->anchored && complete)
        feed_anchor(hub, pos);
    if (!f->anchored) {
        s->pos = pos;
        hub_stream_read_more(s);
        return;
    }
    if (pos == f->pos) {
        hub_stream_live(s);
    } else if (pos > f->pos) {
        /* PostgreSQL is ahead of what reached us: the feed reads it */
        s->state = S_WAITING;
        s->pos = pos;
        feed_fill(hub);
    } else if (pos + 1 >= f->ring_lo) {
        for (uint64_t q = pos + 1; q <= f->pos && !s->over; q++) {
            const frame_t *fr = &f->ring[q % FEED_RING];
            if (hub_stream_wants(s, fr))
                hub_stream_write_frame(s, fr);
            s->pos = q;
        }
        if (!s->over)
            hub_stream_live(s);
    } else {
        s->pos = pos; /* further behind than the ring: read again */
        hub_stream_read_more(s);
    }
}
