/*
 * generator.c - the generator actor.
 *
 * The work is driven from the actor's own loop: an ev_idle watcher calls
 * gen_advance() once per loop iteration, which queues one step (on the CPU
 * compute pool or the CUDA stream; one band of rows on an inline pool).
 * Between two calls the loop turns, the inbox watcher runs, and a
 * JOB_CANCEL for the running job is handled at once: in immediate mode the
 * in-flight image is dropped (gen_abort never waits), in
 * after_current_image mode it is finished and recorded first. While a step
 * runs gen_advance() returns GEN_WAIT; the pool's last tile or CUDA's host
 * callback wakes the loop through an ev_async, so the loop never spins.
 *
 * A cancel can also arrive durably, from the store: in the reply to each
 * recorded image, to each lease renewal, and after a Redis reconnect
 * (CANCEL_RECHECK), so a lost pub/sub message never lets a job run to its
 * end.
 *
 * A finished image is encoded to PNG on a helper thread (runtime/offload.h):
 * the encode takes milliseconds (tens at 2048x2048), and the loop must keep
 * reading its inbox meanwhile, so that a cancel is observed at once.
 *
 * Between slices it also tells the bus how far the image in flight is
 * (JOB_PROGRESS, at most one per PROGRESS_INTERVAL_MS per combination, and
 * always an image's last step) and, only while someone wants them
 * (PREVIEW_WANTED), shows it (JOB_PREVIEW, at most one per
 * PREVIEW_INTERVAL_MS). Both are fire and forget: nothing waits on them.
 *
 * Phases of one combination:
 *   IDLE -> (poll mode: CHECKING) -> RUNNING -> ENCODING -> RECORDING -> next
 *   image ... -> STOPPING (TASK_STOPPED sent, retried until the store has
 *   it) -> IDLE
 */
#include "config.h"

#include "actors/generator.h"

#include "actors/generator/png.h"
#include "actors/generator/pool.h"
#include "actors/generator/recent.h"
#include "actors/generator/wishes.h"
#include "runtime/backoff.h"
#include "runtime/clock.h"
#include "runtime/log.h"
#include "runtime/names.h"
#include "runtime/offload.h"
#include "runtime/uuid.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A recording or a stop the store could not take is sent again after
 * RETRY_FIRST_S, doubling up to RETRY_MAX_S. */
#define RETRY_FIRST_S 0.2
#define RETRY_MAX_S 5.0
#define MS_NS 1000000LL

/* Previews rendered by every generator of the process (tests read it). */
static atomic_uint_fast64_t s_previews_rendered;

typedef enum { IDLE, CHECKING, RUNNING, ENCODING, RECORDING, STOPPING } phase_t;

typedef struct {
    actor_t *self;
    generator_config_t cfg;
    char name[MSG_NAME_MAX], instance[128], store[MSG_NAME_MAX], redis[MSG_NAME_MAX];
    gen_backend_t *backend;
    struct ev_loop *loop;

    ev_idle slice;  /* runs one gen_advance per loop iteration */
    ev_async wake;  /* CUDA: a queued step finished */
    ev_timer sweep; /* idle: ask for work now and then */
    ev_timer lease; /* working: renew the claim */
    ev_timer retry; /* re-send a recording or a stop the store missed */

    phase_t phase;
    bool asking; /* a WORK_REQUEST is in flight */
    bool have_item;
    bool lost;            /* the claim went to another instance */
    uint64_t item_seq;    /* which claim this is (stale lease replies) */
    uint64_t lease_seq;   /* item_seq of the lease renewal in flight, or 0 */
    msg_work_item_t item; /* strings owned */
    uint64_t index;       /* image being made */

    cancel_mode_t cancel; /* NONE until a cancel is observed */
    int64_t observed_us;
    int64_t idle_stop_us;        /* an immediate cancel came while no work ran (recording) */
    int64_t cancel_requested_us; /* from the event; 0 when the store told us */
    uint64_t steps_at_stop;

    msg_t *pending; /* IMAGE_READY or TASK_STOPPED awaiting the store */
    backoff_t backoff;

    /* While encoding, the helper thread reads the backend's pixels: no
     * gen_begin (so no new claim) until it is done. */
    offload_t *encoder;
    bool encoding;
    bool closing; /* fini: finished encodes are only freed */

    /* Progress and previews of the running combination (monotonic ns). */
    uint32_t steps_seen;      /* gen_steps_done after the last slice */
    int64_t progress_due_ns;  /* no JOB_PROGRESS before, but an image's last step */
    int64_t preview_due_ns;   /* no preview before */
    bool preview_unsupported; /* the backend said no: not asked again */
    bool preview_encoding;    /* one preview at a time on the encoder */
    wishes_t wishes;          /* jobs whose previews someone wants */
    recent_t recent;          /* cancels heard lately, for a claim in flight */
} gen_actor_t;

/* One PNG encode, off the loop: a finished image, or a preview. */
typedef struct {
    bool preview;       /* a preview: its own pixels, published when done */
    const uint8_t *rgb; /* the backend's pixels, or a preview's */
    uint8_t *own;       /* a preview's pixels (owned) */
    uint32_t width, height;
    uint64_t item_seq; /* the claim it belongs to */
    uint64_t index;    /* and the image */
    uint64_t step;     /* a preview's step */
    void (*before)(void *arg);
    void *before_arg;
    uint8_t *png;
    size_t len;
    int rc;
    char err[200];
} encode_t;

static void s_ask_work(gen_actor_t *g);
static void s_next_image(gen_actor_t *g);
static void s_stop(gen_actor_t *g, task_outcome_t outcome, const char *error);
static void s_send_pending(gen_actor_t *g);
static void s_encode_work(void *job);

static void s_item_clear(gen_actor_t *g)
{
    free(g->item.job_id);
    free(g->item.prompt);
    memset(&g->item, 0, sizeof g->item);
    g->have_item = false;
    g->lost = false;
    g->cancel = CANCEL_MODE_NONE;
    g->observed_us = g->idle_stop_us = 0;
    g->cancel_requested_us = 0;
    g->steps_at_stop = 0;
    ev_timer_stop(g->loop, &g->lease);
}

/* Lets go of a claim another instance now holds: no TASK_STOPPED, its new
 * holder resumes at the next image not recorded. Only called when no flag,
 * record or stop request is in flight for it. */
static void s_drop(gen_actor_t *g)
{
    log_warn("claim on %s/%llu lost; dropping it", g->item.job_id,
             (unsigned long long)g->item.combination);
    gen_abort(g->backend);
    ev_idle_stop(g->loop, &g->slice);
    msg_destroy(&g->pending);
    s_item_clear(g);
    g->phase = IDLE;
    s_ask_work(g);
}

/* Whether a reply that arrives in `phase` is still awaited: not once the
 * actor stops or has moved on, and not for a claim another instance took
 * over meanwhile (dropped now). */
static bool s_awaited(gen_actor_t *g, int status, phase_t phase)
{
    if (status == -ECANCELED || g->phase != phase)
        return false;
    if (g->lost) {
        s_drop(g);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------ cancel */

/* A cancel for the running job, from an event (requested_us: when the
 * cancel was received) or from the store (requested_us 0). */
/* Only immediate is stronger than after_current_image: an immediate cancel
 * upgrades one already observed (the job stops at the next step after all),
 * anything else after a cancel changes nothing. */
static void s_cancel(gen_actor_t *g, cancel_mode_t mode, int64_t requested_us)
{
    if (mode == CANCEL_MODE_NONE || !g->have_item || g->phase == STOPPING)
        return;
    bool upgrade = g->cancel == CANCEL_MODE_AFTER_CURRENT_IMAGE && mode == CANCEL_MODE_IMMEDIATE;
    if (g->cancel != CANCEL_MODE_NONE && !upgrade)
        return;
    if (!upgrade) { /* the first cancel is the one observed, and the one reported */
        g->observed_us = clock_wall_us();
        g->cancel_requested_us = requested_us;
    }
    g->cancel = mode;
    log_info("cancel of %s/%llu %s (%s) at step %u", g->item.job_id,
             (unsigned long long)g->item.combination, upgrade ? "upgraded" : "observed",
             cancel_mode_name(mode), gen_steps_done(g->backend));
    switch (g->phase) {
    case RUNNING:
    case ENCODING:
        if (mode == CANCEL_MODE_IMMEDIATE)
            s_stop(g, TASK_OUTCOME_CANCELLED, NULL); /* drops the image not yet recorded */
        break;
    case CHECKING:
    case RECORDING:
        /* acted on when that reply comes; no work runs meanwhile: stopped */
        if (mode == CANCEL_MODE_IMMEDIATE)
            g->idle_stop_us = clock_wall_us();
        break;
    default:
        break;
    }
}

/* A cancel event: of a job, of many, or of one combination (its stop reports
 * no cancel of the job). Ours when it names what we run; kept a while for a
 * claim in flight. In poll mode (the seed's) only the Redis flag counts. */
static void s_on_cancel_event(actor_t *self, msg_t *msg)
{
    gen_actor_t *g = actor_state(self);
    if (!g->cfg.poll_mode)
        recent_note(&g->recent, msg, clock_mono_ns());
    if (g->cfg.poll_mode || !g->have_item)
        return;
    const msg_job_cancel_t *one = &msg->job_cancel;
    const msg_job_cancel_many_t *many = &msg->job_cancel_many;
    const msg_combination_cancel_t *c = &msg->combination_cancel;
    if (msg->type == MSG_JOB_CANCEL && one->job_id && !strcmp(one->job_id, g->item.job_id))
        s_cancel(g, one->mode, one->requested_at_us);
    else if (msg->type == MSG_JOB_CANCEL_MANY && uuid_list_has(many->job_ids, g->item.job_id))
        s_cancel(g, many->mode, many->requested_at_us);
    else if (msg->type == MSG_COMBINATION_CANCEL && c->job_id && !strcmp(c->job_id, g->item.job_id)
             && c->combination == g->item.combination)
        s_cancel(g, c->mode, 0);
}

/* Redis reconnected: cancel events may have been lost; ask the store now. */
static void s_on_recheck(actor_t *self, msg_t *msg)
{
    gen_actor_t *g = actor_state(self);
    if (!g->cfg.poll_mode && g->have_item && g->phase != STOPPING)
        ev_feed_event(g->loop, &g->lease, EV_TIMER);
}

/* g->pending (a recording or a stop) goes to the store again after the
 * backoff, which doubles up to RETRY_MAX_S. */
static void s_retry_later(gen_actor_t *g)
{
    ev_timer_set(&g->retry, backoff_next(&g->backoff), 0.);
    ev_timer_start(g->loop, &g->retry);
}

/* ------------------------------------------------------------ stopping */

static void s_on_stopped(actor_t *self, int status, msg_t *reply, void *arg)
{
    gen_actor_t *g = arg;
    if (status == -ECANCELED || g->phase != STOPPING)
        return;
    if (status != 0 || reply->type != MSG_OK) {
        log_warn("store did not take the stop of %s/%llu (%s); retrying", g->item.job_id,
                 (unsigned long long)g->item.combination, actor_reply_reason(status, reply));
        s_retry_later(g);
        return;
    }
    msg_destroy(&g->pending);
    s_item_clear(g);
    g->phase = IDLE;
    if (actor_is_stopping(g->self))
        actor_stop_ready(g->self);
    else
        s_ask_work(g);
}

/* Ends the combination here: drops any in-flight image and tells the store. */
static void s_stop(gen_actor_t *g, task_outcome_t outcome, const char *error)
{
    if (g->phase == RUNNING) {
        g->steps_at_stop = gen_steps_done(g->backend);
        gen_abort(g->backend);
    }
    ev_idle_stop(g->loop, &g->slice);
    ev_timer_stop(g->loop, &g->lease);
    g->phase = STOPPING;

    msg_t *m = msg_new(MSG_TASK_STOPPED);
    msg_set_str(&m->task_stopped.job_id, g->item.job_id);
    m->task_stopped.combination = g->item.combination;
    m->task_stopped.outcome = outcome;
    m->task_stopped.observed_at_us = g->observed_us;
    m->task_stopped.stopped_at_us = g->idle_stop_us ? g->idle_stop_us : clock_wall_us();
    msg_set_str(&m->task_stopped.error, error);
    m->task_stopped.steps_done = g->steps_at_stop;
    msg_set_str(&m->task_stopped.instance, g->instance);
    if (outcome == TASK_OUTCOME_CANCELLED && g->cancel_requested_us > 0) {
        m->task_stopped.cancel_requested_at_us = g->cancel_requested_us;
        m->task_stopped.cancel_mode = g->cancel;
    }
    if (outcome == TASK_OUTCOME_CANCELLED)
        log_info("%s/%llu stopped %lld us after the cancel was observed", g->item.job_id,
                 (unsigned long long)g->item.combination,
                 (long long)(m->task_stopped.stopped_at_us - g->observed_us));
    msg_destroy(&g->pending);
    g->pending = m;
    backoff_reset(&g->backoff);
    s_send_pending(g);
}

/* ------------------------------------------------------------ progress, previews */

/* PREVIEW_WANTED: someone watches job_id's previews for ttl_ms more. */
static void s_on_preview_wanted(actor_t *self, msg_t *msg)
{
    gen_actor_t *g = actor_state(self);
    wishes_add(&g->wishes, msg->preview_wanted.job_id, msg->preview_wanted.ttl_ms, clock_mono_ns());
}

static void s_publish_progress(gen_actor_t *g, uint32_t step)
{
    msg_t *m = msg_new(MSG_JOB_PROGRESS);
    msg_set_str(&m->job_progress.job_id, g->item.job_id);
    m->job_progress.combination = g->item.combination;
    m->job_progress.image_index = g->index;
    m->job_progress.step = step;
    m->job_progress.steps = g->item.steps;
    m->job_progress.owner = g->item.owner; /* a key's event stream shows only its jobs */
    if (actor_publish(g->self, TOPIC_JOB_PROGRESS, m) < 0)
        log_debug("progress of %s not published", g->item.job_id);
    msg_destroy(&m);
}

/* Renders a preview of the image in flight and has it encoded. The
 * downsample runs here, between slices, as it must (the state is being
 * rewritten by the next slice); the PNG encode goes to the encoder thread,
 * as a finished image's does: 0.5-0.6 ms for 128x128 with png.c's fast
 * settings (tests/check_generator.c prints it, "preview cost"), longer than
 * a slice, and more than the ~0.3 ms worth spending on the loop. */
static void s_render_preview(gen_actor_t *g, uint32_t step)
{
    encode_t *e = calloc(1, sizeof *e);
    uint8_t *rgb = malloc(PREVIEW_SIZE_MAX * PREVIEW_SIZE_MAX * 3);
    if (!e || !rgb)
        abort();
    if (gen_preview(g->backend, PREVIEW_SIZE_MAX, rgb, &e->width, &e->height) < 0) {
        if ((g->preview_unsupported = !gen_preview_pending(g->backend))) /* else: ask again */
            log_info("no previews of %s/%llu: %s", g->item.job_id,
                     (unsigned long long)g->item.combination, gen_error(g->backend));
        free(rgb);
        free(e);
        return;
    }
    e->preview = true;
    e->rgb = e->own = rgb;
    e->item_seq = g->item_seq;
    e->index = g->index;
    e->step = step;
    g->preview_encoding = true;
    offload_submit(g->encoder, s_encode_work, e);
}

/* Back on the loop: a preview of a claim still held goes on the bus. */
static void s_publish_preview(gen_actor_t *g, encode_t *e)
{
    g->preview_encoding = false;
    if (e->rc < 0) {
        log_warn("preview not encoded: %s", e->err);
        return;
    }
    if (!g->have_item || e->item_seq != g->item_seq || g->phase == STOPPING)
        return; /* that combination ended meanwhile */
    msg_t *m = msg_new(MSG_JOB_PREVIEW);
    msg_set_str(&m->job_preview.job_id, g->item.job_id);
    m->job_preview.combination = g->item.combination;
    m->job_preview.image_index = e->index;
    m->job_preview.step = e->step;
    m->job_preview.width = e->width;
    m->job_preview.height = e->height;
    m->job_preview.png.data = e->png; /* ownership moves into the message */
    m->job_preview.png.size = e->len;
    e->png = NULL;
    atomic_fetch_add(&s_previews_rendered, 1);
    if (actor_publish(g->self, TOPIC_JOB_PREVIEW, m) < 0)
        log_debug("preview of %s/%llu not published", g->item.job_id,
                  (unsigned long long)g->item.combination);
    msg_destroy(&m);
}

/* After each slice: when it completed a step, progress (throttled, but an
 * image's last step always goes out) and, if someone watches this job, a
 * preview (throttled). With nobody watching, no preview work at all. */
static void s_after_slice(gen_actor_t *g)
{
    uint32_t step = gen_steps_done(g->backend);
    if (step == g->steps_seen)
        return;
    g->steps_seen = step;
    int64_t now = clock_mono_ns();
    if (step >= g->item.steps || now - g->progress_due_ns >= 0) {
        s_publish_progress(g, step);
        g->progress_due_ns = now + PROGRESS_INTERVAL_MS * MS_NS;
    }
    if (g->wishes.n > 0 && !g->preview_unsupported && !g->preview_encoding
        && now - g->preview_due_ns >= 0 && wishes_want(&g->wishes, g->item.job_id, now)) {
        s_render_preview(g, step);
        g->preview_due_ns = now + PREVIEW_INTERVAL_MS * MS_NS;
    }
}

/* ------------------------------------------------------------ images */

static void s_on_recorded(actor_t *self, int status, msg_t *reply, void *arg)
{
    gen_actor_t *g = arg;
    if (!s_awaited(g, status, RECORDING))
        return;
    if (status != 0 || reply->type != MSG_IMAGE_RECORDED) {
        /* the image is held and sent again: the store records it once */
        log_warn("store did not record image %llu of %s/%llu (%s); holding it",
                 (unsigned long long)g->index, g->item.job_id,
                 (unsigned long long)g->item.combination, actor_reply_reason(status, reply));
        s_retry_later(g);
        return;
    }
    msg_destroy(&g->pending);
    g->index++;
    s_cancel(g, reply->image_recorded.cancel_mode, 0); /* durable, if any */
    if (g->cancel != CANCEL_MODE_NONE)
        s_stop(g, TASK_OUTCOME_CANCELLED, NULL);
    else if (actor_is_stopping(g->self))
        s_stop(g, TASK_OUTCOME_RELEASED, NULL); /* the image is safe: give the rest back */
    else
        s_next_image(g);
}

static void s_send_pending(gen_actor_t *g)
{
    actor_reply_fn cb = g->pending->type == MSG_IMAGE_READY ? s_on_recorded : s_on_stopped;
    if (actor_request(g->self, g->store, g->pending, g->cfg.request_timeout_s, cb, g) < 0) {
        log_warn("cannot reach %s: %s; retrying", g->store, strerror(errno));
        s_retry_later(g);
    }
}

static void s_retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    gen_actor_t *g = t->data;
    if (g->pending)
        s_send_pending(g);
}

/* The helper thread's part: the encode itself. */
static void s_encode_work(void *job)
{
    encode_t *e = job;
    gen_pool_nice_self(GEN_POOL_NICE); /* batch work, like the compute pool's */
    if (e->before)
        e->before(e->before_arg);
    e->rc = gen_png_encode(e->rgb, e->width, e->height, &e->png, &e->len, e->err, sizeof e->err);
}

static void s_record(gen_actor_t *g, uint8_t **png, size_t len);

/* Back on the loop: record the PNG, unless the combination stopped (or
 * moved on) while it was being made. */
static void s_encoded(void *job, int ran, void *arg)
{
    encode_t *e = job;
    gen_actor_t *g = arg;
    if (e->preview) {
        if (!g->closing && ran)
            s_publish_preview(g, e);
        free(e->png);
        free(e->own);
        free(e);
        return;
    }
    g->encoding = false;
    if (!g->closing && ran && g->phase == ENCODING && g->have_item && e->item_seq == g->item_seq
        && e->index == g->index) {
        if (e->rc < 0)
            s_stop(g, TASK_OUTCOME_FAILED, e->err);
        else
            s_record(g, &e->png, e->len);
    }
    free(e->png);
    free(e);
    if (!g->closing && g->phase == IDLE)
        s_ask_work(g); /* a claim waited for the pixels to be free */
}

/* The image is finished: encode it on the helper thread. */
static void s_image_done(gen_actor_t *g)
{
    ev_idle_stop(g->loop, &g->slice);
    encode_t *e = calloc(1, sizeof *e);
    if (!e)
        abort();
    e->rgb = gen_pixels(g->backend);
    e->width = (uint32_t)g->item.width;
    e->height = (uint32_t)g->item.height;
    e->item_seq = g->item_seq;
    e->before = g->cfg.before_encode;
    e->before_arg = g->cfg.before_encode_arg;
    e->index = g->index;
    g->phase = ENCODING;
    g->encoding = true;
    offload_submit(g->encoder, s_encode_work, e);
}

/* Hands a finished image (png consumed) to the store. */
static void s_record(gen_actor_t *g, uint8_t **png, size_t len)
{
    uint32_t w = (uint32_t)g->item.width, h = (uint32_t)g->item.height;
    msg_t *m = msg_new(MSG_IMAGE_READY);
    msg_set_str(&m->image_ready.job_id, g->item.job_id);
    m->image_ready.combination = g->item.combination;
    m->image_ready.image_index = g->index;
    m->image_ready.width = w;
    m->image_ready.height = h;
    m->image_ready.png.data = *png; /* ownership moves into the message */
    m->image_ready.png.size = len;
    *png = NULL;
    g->phase = RECORDING;
    msg_destroy(&g->pending);
    g->pending = m;
    backoff_reset(&g->backoff);
    s_send_pending(g);
}

static void s_slice_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    gen_actor_t *g = w->data;
    gen_status_t st = gen_advance(g->backend);
    if (st != GEN_ERROR)
        s_after_slice(g); /* before GEN_DONE hands the pixels to the encoder */
    switch (st) {
    case GEN_MORE:
        break;
    case GEN_WAIT:
        ev_idle_stop(loop, w); /* the backend's wakeup restarts us */
        break;
    case GEN_DONE:
        s_image_done(g);
        break;
    case GEN_ERROR:
    default:
        s_stop(g, TASK_OUTCOME_FAILED, gen_error(g->backend));
        break;
    }
}

static void s_wakeup(void *arg)
{
    gen_actor_t *g = arg;
    ev_async_send(g->loop, &g->wake); /* from a CUDA callback thread */
}

static void s_wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    gen_actor_t *g = w->data;
    if (g->phase == RUNNING) /* a wakeup from an aborted step is ignored */
        ev_idle_start(loop, &g->slice);
}

static void s_begin_image(gen_actor_t *g)
{
    gen_params_t p = {
        .prompt = g->item.prompt,
        .seed = g->item.seed,
        .image_index = (uint32_t)g->index,
        .width = (uint32_t)g->item.width,
        .height = (uint32_t)g->item.height,
        .steps = (uint32_t)g->item.steps,
    };
    char err[200];
    if (gen_begin(g->backend, &p, err, sizeof err) < 0) {
        s_stop(g, TASK_OUTCOME_FAILED, err);
        return;
    }
    g->phase = RUNNING;
    g->steps_seen = 0;
    ev_idle_start(g->loop, &g->slice);
}

static void s_on_flag(actor_t *self, int status, msg_t *reply, void *arg)
{
    gen_actor_t *g = arg;
    if (!s_awaited(g, status, CHECKING))
        return;
    if (status == 0 && reply->type == MSG_REDIS_FLAG && reply->redis_flag.set) {
        s_cancel(g, CANCEL_MODE_IMMEDIATE, 0); /* the seed's flag: PostgreSQL has it */
        s_stop(g, TASK_OUTCOME_CANCELLED, NULL);
        return;
    }
    if (status != 0 || reply->type != MSG_REDIS_FLAG)
        log_warn("cancel flag of %s unreadable (%s); going on", g->item.job_id,
                 status ? strerror(-status) : "error reply");
    if (actor_is_stopping(g->self))
        s_stop(g, TASK_OUTCOME_RELEASED, NULL);
    else
        s_begin_image(g);
}

/* Before each new image: done, cancelled, or (poll mode) ask Redis. */
static void s_next_image(gen_actor_t *g)
{
    if (g->cancel != CANCEL_MODE_NONE) {
        s_stop(g, TASK_OUTCOME_CANCELLED, NULL);
        return;
    }
    if (g->index >= g->item.images) {
        s_stop(g, TASK_OUTCOME_COMPLETED, NULL);
        return;
    }
    if (!g->cfg.poll_mode) {
        s_begin_image(g);
        return;
    }
    g->phase = CHECKING;
    msg_t *m = msg_new(MSG_REDIS_FLAG_GET);
    msg_set_str(&m->redis_flag_get.job_id, g->item.job_id);
    if (actor_request(g->self, g->redis, m, g->cfg.request_timeout_s, s_on_flag, g) < 0) {
        log_warn("cannot reach %s for the cancel flag: %s", g->redis, strerror(errno));
        s_begin_image(g);
    }
    msg_destroy(&m);
}

/* ------------------------------------------------------------ claims */

static void s_on_lease(actor_t *self, int status, msg_t *reply, void *arg)
{
    gen_actor_t *g = arg;
    uint64_t seq = g->lease_seq;
    g->lease_seq = 0;
    /* a renewal of an earlier claim says nothing about this one */
    if (status == -ECANCELED || !g->have_item || seq != g->item_seq || g->phase == STOPPING)
        return;
    if (status == 0 && reply->type == MSG_LEASE_STATE) {
        if (!g->cfg.poll_mode)
            s_cancel(g, reply->lease_state.cancel_mode, 0);
        return;
    }
    if (status == 0 && reply->type == MSG_ERROR && reply->error.code == -ENOENT) {
        /* another instance holds it now (our lease ran out): let go, at
         * once if nothing is in flight, else when that reply is in */
        g->lost = true;
        if (g->phase == RUNNING)
            s_drop(g);
    }
    /* other errors: the store is unreachable; the next renewal retries */
}

static void s_lease_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    gen_actor_t *g = t->data;
    if (!g->have_item || g->phase == STOPPING || g->lease_seq)
        return; /* one renewal in flight at a time */
    msg_t *m = msg_new(MSG_LEASE_RENEW);
    msg_set_str(&m->lease_renew.job_id, g->item.job_id);
    m->lease_renew.combination = g->item.combination;
    msg_set_str(&m->lease_renew.instance, g->instance);
    if (actor_request(g->self, g->store, m, g->cfg.request_timeout_s, s_on_lease, g) == 0)
        g->lease_seq = g->item_seq;
    msg_destroy(&m);
}

static void s_on_work(actor_t *self, int status, msg_t *reply, void *arg)
{
    gen_actor_t *g = arg;
    g->asking = false;
    if (status == -ECANCELED)
        return;
    if (actor_is_stopping(self) && !(status == 0 && reply->type == MSG_WORK_ITEM)) {
        actor_stop_ready(self);
        return;
    }
    if (status != 0 || reply->type != MSG_WORK_ITEM) {
        if (status != 0 || reply->type != MSG_ERROR || reply->error.code != -ENOENT)
            log_debug("no work from %s: %s", g->store, actor_reply_reason(status, reply));
        return; /* the sweep timer or a work event asks again */
    }
    if (g->have_item) /* cannot happen: we ask only when idle */
        return;
    g->item = reply->work_item;
    memset(&reply->work_item, 0, sizeof reply->work_item); /* take the strings */
    g->have_item = true;
    g->item_seq++;
    g->index = g->item.next_index;
    g->progress_due_ns = g->preview_due_ns = 0; /* the intervals are per combination */
    g->preview_unsupported = false;
    if (actor_is_stopping(g->self)) { /* claimed as the stop came: give it back */
        s_stop(g, TASK_OUTCOME_RELEASED, NULL);
        return;
    }
    log_info("claimed %s/%llu: %llu images from %llu, %llux%llu, %llu steps", g->item.job_id,
             (unsigned long long)g->item.combination, (unsigned long long)g->item.images,
             (unsigned long long)g->index, (unsigned long long)g->item.width,
             (unsigned long long)g->item.height, (unsigned long long)g->item.steps);
    ev_timer_again(g->loop, &g->lease);
    cancel_mode_t mode = g->item.cancel_mode;
    int64_t at_us = 0; /* a cancel heard while we asked for it stands too */
    if (!g->cfg.poll_mode) {
        recent_find(&g->recent, g->item.job_id, clock_mono_ns(), &mode, &at_us);
        s_cancel(g, mode, at_us);
    }
    s_next_image(g);
}

static void s_ask_work(gen_actor_t *g)
{
    if (g->phase != IDLE || g->asking || g->encoding || actor_is_stopping(g->self))
        return;
    msg_t *m = msg_new(MSG_WORK_REQUEST);
    msg_set_str(&m->work_request.instance, g->instance);
    if (actor_request(g->self, g->store, m, g->cfg.request_timeout_s, s_on_work, g) == 0)
        g->asking = true;
    msg_destroy(&m);
}

static void s_on_work_event(actor_t *self, msg_t *msg)
{
    s_ask_work(actor_state(self));
}

static void s_sweep_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    s_ask_work(t->data);
}

/* ------------------------------------------------------------ lifecycle */

static int s_init(actor_t *self, void *arg)
{
    const generator_config_t *cfg = arg;
    gen_actor_t *g = calloc(1, sizeof *g);
    if (!g)
        abort();
    g->self = self;
    g->loop = actor_loop(self);
    g->cfg = *cfg;
    snprintf(g->name, sizeof g->name, "%s", actor_name(self));
    snprintf(g->instance, sizeof g->instance, "%s", cfg->instance ? cfg->instance : "local");
    snprintf(g->store, sizeof g->store, "%s", cfg->store ? cfg->store : ACTOR_STORE);
    snprintf(g->redis, sizeof g->redis, "%s", cfg->redis ? cfg->redis : ACTOR_REDIS);
    g->cfg.name = g->cfg.instance = g->cfg.store = g->cfg.redis = NULL; /* not kept */
    if (g->cfg.sweep_s <= 0)
        g->cfg.sweep_s = 2.;
    if (g->cfg.lease_renew_s <= 0)
        g->cfg.lease_renew_s = 5.;
    if (g->cfg.request_timeout_s <= 0)
        g->cfg.request_timeout_s = 10.;
    backoff_init(&g->backoff, RETRY_FIRST_S, RETRY_MAX_S, 0);
    actor_set_state(self, g);

    /* This thread does control work only and stays at nice 0, so that it
     * preempts the compute pool (GEN_POOL_NICE) the moment a cancel comes;
     * its encoder lowers itself (s_encode_work). On an inline pool the
     * backend lowers this thread, which then computes (backend.c). */
    char err[256];
    g->backend =
        gen_backend_open_for(cfg->backend, cfg->plugin, cfg->device, cfg->pool, err, sizeof err);
    if (!g->backend) {
        actor_fail(self, "%s", err);
        free(g);
        actor_set_state(self, NULL);
        return -1;
    }
    gen_backend_set_wakeup(g->backend, s_wakeup, g);
    g->encoder = offload_new(g->loop, s_encoded, g);
    if (!g->encoder) {
        actor_fail(self, "cannot start the PNG encoder thread: %s", strerror(errno));
        gen_backend_close(&g->backend);
        free(g);
        actor_set_state(self, NULL);
        return -1;
    }

    ev_idle_init(&g->slice, s_slice_cb);
    g->slice.data = g;
    ev_async_init(&g->wake, s_wake_cb);
    g->wake.data = g;
    ev_async_start(g->loop, &g->wake);
    ev_timer_init(&g->sweep, s_sweep_cb, g->cfg.sweep_s, g->cfg.sweep_s);
    g->sweep.data = g;
    ev_timer_start(g->loop, &g->sweep);
    ev_init(&g->lease, s_lease_cb);
    g->lease.repeat = g->cfg.lease_renew_s;
    g->lease.data = g;
    ev_init(&g->retry, s_retry_cb);
    g->retry.data = g;

    if ((!g->cfg.poll_mode && actor_subscribe(self, TOPIC_CANCEL) < 0)
        || actor_subscribe(self, TOPIC_WORK) < 0
        || actor_subscribe(self, TOPIC_PREVIEW_WANTED) < 0) {
        actor_fail(self, "cannot subscribe to the bus");
        offload_destroy(&g->encoder);
        gen_backend_close(&g->backend);
        free(g);
        actor_set_state(self, NULL);
        return -1;
    }
    log_info("ready on the %s backend%s", gen_backend_name(g->backend),
             g->cfg.poll_mode ? " (poll mode: Redis flag before each image)" : "");
    s_ask_work(g);
    return 0;
}

/* A stop is asked: the in-flight image is dropped, a finished one still
 * being recorded is waited for, and the claim is given back ("released")
 * so another instance resumes at once; the loop ends when the store has
 * acknowledged. */
static bool s_stopping(actor_t *self)
{
    gen_actor_t *g = actor_state(self);
    ev_timer_stop(g->loop, &g->sweep);
    switch (g->phase) {
    case IDLE:
        return !g->asking; /* else the claim in flight is given back */
    case RUNNING:
        s_stop(g, TASK_OUTCOME_RELEASED, NULL);
        return false;
    default: /* CHECKING, ENCODING, RECORDING, STOPPING: their reply moves us on */
        return false;
    }
}

/* After the loop: if the stop deadline passed first, a last best-effort
 * release (fire and forget: the store answers a mailbox that is gone). */
static void s_fini(actor_t *self)
{
    gen_actor_t *g = actor_state(self);
    if (g->have_item && g->phase != STOPPING) {
        if (g->pending && g->pending->type == MSG_IMAGE_READY)
            actor_send(self, g->store, g->pending);
        msg_t *m = msg_new(MSG_TASK_STOPPED);
        msg_set_str(&m->task_stopped.job_id, g->item.job_id);
        m->task_stopped.combination = g->item.combination;
        m->task_stopped.outcome = TASK_OUTCOME_RELEASED;
        m->task_stopped.stopped_at_us = clock_wall_us();
        m->task_stopped.steps_done = gen_steps_done(g->backend);
        msg_set_str(&m->task_stopped.instance, g->instance);
        actor_send(self, g->store, m);
        msg_destroy(&m);
    } else if (g->phase == STOPPING && g->pending) {
        actor_send(self, g->store, g->pending); /* one last try */
    }
    ev_idle_stop(g->loop, &g->slice);
    ev_async_stop(g->loop, &g->wake);
    ev_timer_stop(g->loop, &g->sweep);
    ev_timer_stop(g->loop, &g->lease);
    ev_timer_stop(g->loop, &g->retry);
    g->closing = true;
    offload_destroy(&g->encoder);   /* before the pixels it may read go */
    gen_backend_close(&g->backend); /* waits for the device: no more wakeups */
    msg_destroy(&g->pending);
    s_item_clear(g);
    recent_free(&g->recent);
    free(g);
}

static const actor_spec_t s_spec = {
    .init = s_init,
    .stopping = s_stopping,
    .fini = s_fini,
    .handlers =
        {
            [MSG_JOB_CANCEL] = s_on_cancel_event,
            [MSG_JOB_CANCEL_MANY] = s_on_cancel_event,
            [MSG_COMBINATION_CANCEL] = s_on_cancel_event,
            [MSG_CANCEL_RECHECK] = s_on_recheck,
            [MSG_WORK_AVAILABLE] = s_on_work_event,
            [MSG_PREVIEW_WANTED] = s_on_preview_wanted,
        },
};

uint64_t generator_previews_rendered(void)
{
    return atomic_load(&s_previews_rendered);
}

unsigned generator_auto_count(long cores, int gpus)
{
    long n = gpus > 0 ? gpus : cores;
    return n < 1 ? 1 : n > GENERATORS_MAX ? GENERATORS_MAX : (unsigned)n;
}

actor_t *generator_start(runtime_t *rt, const generator_config_t *cfg, char *err, size_t errlen)
{
    return actor_new(rt, cfg->name, &s_spec, (void *)cfg, err, errlen);
}

void generator_destroy(actor_t **ap)
{
    actor_destroy(ap);
}
