/*
 * view.c - the job view: GET /api/jobs/{id} from memory, never stale
 * (docs/store.md, "The job view and its consistency rule").
 *
 * The view lives on the HTTP actor's loop beside the event feed (feed.c)
 * and sees every durable event the feed applies, before the streams do.
 * Its rule, in short:
 *
 * - an entry is a job's document with the event clock v it was read at
 *   (one statement: one snapshot); it goes in only while the feed has
 *   applied nothing past v. An event of the job past v drops it. A job
 *   that has not ended shows global figures too (queue_position, eta_s),
 *   so its entry serves only while the feed has applied nothing past v;
 * - a GET is answered from the view only once the feed has applied
 *   everything up to a barrier: the event clock read from PostgreSQL after
 *   the GET arrived. One barrier is in flight at a time; GETs that arrive
 *   meanwhile wait for the next, whose snapshot postdates them. So a write
 *   acknowledged on any instance before the GET is in the answer;
 * - when the feed is behind the barrier and the events do not arrive by
 *   themselves within VIEW_GRACE_S, it reads the gap from PostgreSQL
 *   (Redis slow or down: the same path); a GET the feed cannot bring up
 *   to date is read from PostgreSQL around the view.
 *
 * Key constraint: nothing waits. A GET is held (its exchange) until a
 * reply, the feed or a fill answers it; the view never blocks the loop.
 */
#include "config.h"

#include "actors/events/internal.h"

#include "runtime/log.h"
#include "runtime/metrics.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define VIEW_BUCKETS_MIN 1024
/* How long GETs wait for the events of their barrier to arrive by
 * themselves (the bus: tens of µs; Redis: well under a millisecond)
 * before the feed reads them from PostgreSQL. */
#define VIEW_GRACE_S 0.002

/* ------------------------------------------------------------ the map */

static size_t s_hash(const char *id)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ull;
    return (size_t)h;
}

static size_t s_cost(const view_entry_t *e)
{
    return sizeof *e + e->len + 1;
}

static view_entry_t **s_slot(view_t *v, const char *id)
{
    view_entry_t **p = &v->buckets[s_hash(id) & (v->nbuckets - 1)];
    while (*p && strcmp((*p)->job_id, id) != 0)
        p = &(*p)->hnext;
    return p;
}

static void s_lru_unlink(view_t *v, view_entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        v->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        v->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void s_lru_front(view_t *v, view_entry_t *e)
{
    e->next = v->lru_head;
    e->prev = NULL;
    if (v->lru_head)
        v->lru_head->prev = e;
    v->lru_head = e;
    if (!v->lru_tail)
        v->lru_tail = e;
}

static void s_gauges(const view_t *v)
{
    atomic_store(&metrics.view_bytes, (int_fast64_t)v->bytes);
    atomic_store(&metrics.view_entries, (int_fast64_t)v->entries);
}

/* Drops the entry *p points at (its hash link). */
static void s_drop_at(view_t *v, view_entry_t **p)
{
    view_entry_t *e = *p;
    *p = e->hnext;
    s_lru_unlink(v, e);
    v->bytes -= s_cost(e);
    v->entries--;
    free(e);
}

static void s_drop(view_t *v, const char *id)
{
    view_entry_t **p = s_slot(v, id);
    if (*p) {
        s_drop_at(v, p);
        s_gauges(v);
    }
}

static void s_grow(view_t *v)
{
    size_t n = v->nbuckets * 2;
    view_entry_t **b = calloc(n, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < v->nbuckets; i++) {
        for (view_entry_t *e = v->buckets[i], *next; e; e = next) {
            next = e->hnext;
            size_t k = s_hash(e->job_id) & (n - 1);
            e->hnext = b[k];
            b[k] = e;
        }
    }
    free(v->buckets);
    v->buckets = b;
    v->nbuckets = n;
}

/* Keeps doc (len bytes) as job_id's entry, replacing any; the least
 * recently used go while the bound is passed. */
static void s_put(view_t *v, const char *job_id, uint64_t owner, uint64_t clock, bool ended,
                  const char *doc, size_t len)
{
    if (sizeof(view_entry_t) + len + 1 > v->limit)
        return;
    s_drop(v, job_id);
    view_entry_t *e = malloc(sizeof *e + len + 1);
    if (!e)
        return;
    memset(e, 0, sizeof *e);
    snprintf(e->job_id, sizeof e->job_id, "%s", job_id);
    e->owner = owner;
    e->clock = clock;
    e->ended = ended;
    e->len = len;
    memcpy(e->doc, doc, len);
    e->doc[len] = '\0';
    while (v->lru_tail && v->bytes + s_cost(e) > v->limit)
        s_drop_at(v, s_slot(v, v->lru_tail->job_id));
    if (v->entries + 1 > v->nbuckets)
        s_grow(v);
    view_entry_t **p = s_slot(v, job_id);
    e->hnext = *p;
    *p = e;
    s_lru_front(v, e);
    v->bytes += s_cost(e);
    v->entries++;
    s_gauges(v);
}

static void s_clear(view_t *v)
{
    while (v->lru_tail)
        s_drop_at(v, s_slot(v, v->lru_tail->job_id));
    s_gauges(v);
}

/* ------------------------------------------------------------ GETs */

static void s_push(view_queue_t *q, view_get_t *g)
{
    g->next = NULL;
    *q->tail = g;
    q->tail = &g->next;
}

static view_get_t *s_pop(view_queue_t *q)
{
    view_get_t *g = q->head;
    if (g) {
        q->head = g->next;
        if (!q->head)
            q->tail = &q->head;
        g->next = NULL;
    }
    return g;
}

static void s_queue_init(view_queue_t *q)
{
    q->head = NULL;
    q->tail = &q->head;
}

static void s_done(view_get_t *g)
{
    http_exchange_release(g->x);
    free(g);
}

/* Answers g with doc (copied), or 404 for another key's job. */
static void s_answer_doc(view_get_t *g, const char *doc, size_t len, uint64_t owner)
{
    if (http_exchange_gone(g->x))
        return;
    if (g->scope && owner != g->scope) {
        g->hub->cfg.error(g->x, 404, "Job not found"); /* as PostgreSQL's OWNED() */
        return;
    }
    char *body = malloc(len + 1);
    if (!body)
        abort();
    memcpy(body, doc, len);
    body[len] = '\0';
    http_respond(g->x, 200, "application/json", NULL, &body, len);
}

/* A read of one job's document from PostgreSQL, shared by every GET of
 * the job that arrived before it was sent (its snapshot postdates them). */
struct view_read {
    view_read_t *next;
    hub_t *hub;
    char job_id[UUID_STR_LEN];
    uint64_t sent; /* the arrival count when it was sent */
    bool cache;    /* it may go into the view */
    view_queue_t gets;
};

static void s_on_read(actor_t *self, int status, msg_t *reply, void *arg);

/* Answers g from PostgreSQL: with a read of its job already sent after
 * it arrived, or a new one. cache: it may go into the view. */
static void s_read(view_get_t *g, bool cache)
{
    hub_t *hub = g->hub;
    view_t *v = &hub->view;
    atomic_fetch_add(cache ? &metrics.view_misses : &metrics.view_bypasses, 1);
    for (view_read_t *r = v->reads; r; r = r->next) {
        if (r->sent >= g->arrival && strcmp(r->job_id, g->job_id) == 0) {
            s_push(&r->gets, g);
            return;
        }
    }
    view_read_t *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->hub = hub;
    snprintf(r->job_id, sizeof r->job_id, "%s", g->job_id);
    r->sent = v->arrivals;
    r->cache = cache;
    s_queue_init(&r->gets);
    s_push(&r->gets, g);
    msg_t *m = msg_new(MSG_JOB_VIEW_READ);
    msg_set_str(&m->job_view_read.job_id, g->job_id);
    int rc = actor_request(hub->self, hub->store, m, hub->cfg.request_timeout_s, s_on_read, r);
    msg_destroy(&m);
    if (rc < 0) {
        log_warn("cannot reach the %s actor for a job: %s", hub->store, strerror(errno));
        if (!http_exchange_gone(g->x))
            hub->cfg.error(g->x, 503, "database unavailable");
        s_done(g);
        free(r);
        return;
    }
    r->next = v->reads;
    v->reads = r;
}

static void s_on_read(actor_t *self, int status, msg_t *reply, void *arg)
{
    view_read_t *rd = arg;
    hub_t *hub = rd->hub;
    view_t *v = &hub->view;
    for (view_read_t **p = &v->reads; *p; p = &(*p)->next) {
        if (*p == rd) {
            *p = rd->next;
            break;
        }
    }
    view_get_t *g;
    if (status != 0 || reply->type != MSG_JOB_VIEW || !reply->job_view.json) {
        while ((g = s_pop(&rd->gets))) {
            if (!http_exchange_gone(g->x)) {
                if (status == 0 && reply->type == MSG_JOB_VIEW)
                    hub->cfg.error(g->x, 500, "internal error");
                else
                    hub->cfg.failed(g->x, status, reply);
            }
            s_done(g);
        }
        free(rd);
        return;
    }
    const msg_job_view_t *r = &reply->job_view;
    size_t len = strlen(r->json);
    /* In only while the feed has applied nothing past the read's clock:
     * then every later event of the job reaches the entry (docs/store.md).
     * Never a 404 (nothing to cache), never another log's. */
    bool ended = r->status != JOB_STATUS_PENDING && r->status != JOB_STATUS_PROCESSING;
    if (rd->cache && r->cacheable && hub->feed.anchored && hub->feed.pos <= r->clock && r->log
        && strcmp(r->log, hub->log) == 0)
        s_put(v, rd->job_id, r->owner, r->clock, ended, r->json, len);
    while ((g = s_pop(&rd->gets))) {
        s_answer_doc(g, r->json, len, r->owner);
        s_done(g);
    }
    free(rd);
}

/* The feed has applied everything up to g's barrier: from the view, or
 * read into it. */
static void s_serve(view_get_t *g)
{
    view_t *v = &g->hub->view;
    view_entry_t **p = s_slot(v, g->job_id);
    view_entry_t *e = *p;
    /* a job not ended shows the whole queue: valid while nothing past its
     * read was applied */
    if (e && !e->ended && e->clock < g->hub->feed.pos) {
        s_drop_at(v, p);
        s_gauges(v);
        e = NULL;
    }
    if (!e) {
        s_read(g, true);
        return;
    }
    atomic_fetch_add(&metrics.view_hits, 1);
    s_lru_unlink(v, e);
    s_lru_front(v, e);
    s_answer_doc(g, e->doc, e->len, e->owner);
    s_done(g);
}

static void s_barrier(hub_t *hub);

static void s_on_barrier(actor_t *self, int status, msg_t *reply, void *arg)
{
    hub_t *hub = arg;
    view_t *v = &hub->view;
    v->barrier = false;
    bool ok = status == 0 && reply->type == MSG_EVENT_CLOCK && reply->event_clock.log;
    if (ok) {
        feed_learn_log(hub, reply->event_clock.log);
        /* the view is empty when the feed is not anchored (view_forget) */
        feed_anchor(hub, reply->event_clock.clock);
    }
    view_get_t *g;
    while ((g = s_pop(&v->batch))) {
        if (!ok) {
            s_read(g, false); /* PostgreSQL answers, or says why not */
        } else if (hub->feed.pos >= reply->event_clock.clock) {
            s_serve(g);
        } else {
            g->need = reply->event_clock.clock;
            s_push(&v->behind, g);
        }
    }
    if (v->behind.head) {
        /* A read of the feed already under way may have begun before this
         * clock: one more follows it. Otherwise the events are most likely
         * on their way (the bus, Redis): a read of the gap only if they
         * are not here within VIEW_GRACE_S. */
        if (hub->feed.filling)
            v->refill = true;
        else if (!ev_is_active(&v->grace))
            ev_timer_start(hub->loop, &v->grace);
    }
    if (v->arrived.head)
        s_barrier(hub);
}

/* Sends the next barrier for the GETs that have arrived. */
static void s_barrier(hub_t *hub)
{
    view_t *v = &hub->view;
    if (v->barrier || !v->arrived.head)
        return;
    msg_t *m = msg_new(MSG_EVENT_CLOCK_READ);
    int rc = actor_request(hub->self, hub->store, m, hub->cfg.request_timeout_s, s_on_barrier, hub);
    msg_destroy(&m);
    /* these GETs' barrier is this one: it is read after they arrived
     * (arrived is not empty: its tail is its last GET's link) */
    v->batch = v->arrived;
    s_queue_init(&v->arrived);
    if (rc == 0) {
        v->barrier = true;
        return;
    }
    log_warn("cannot reach the %s actor for the job view: %s", hub->store, strerror(errno));
    view_get_t *g;
    while ((g = s_pop(&v->batch))) {
        if (!http_exchange_gone(g->x))
            hub->cfg.error(g->x, 503, "database unavailable");
        s_done(g);
    }
}

/* The events a barrier waits for did not come by themselves: the feed
 * reads the gap from PostgreSQL. */
static void s_grace_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    hub_t *hub = w->data;
    if (!hub->view.behind.head || hub->feed.filling)
        return;
    feed_fill(hub);
    if (!hub->feed.filling)
        view_progress(hub, true); /* no read could start: around the view */
}

void hub_job_get(hub_t *hub, http_exchange_t *x, const char *job_id, uint64_t owner)
{
    view_get_t *g = calloc(1, sizeof *g);
    if (!g)
        abort();
    g->hub = hub;
    g->x = x;
    http_exchange_hold(x);
    snprintf(g->job_id, sizeof g->job_id, "%s", job_id);
    g->scope = owner;
    g->arrival = ++hub->view.arrivals;
    s_push(&hub->view.arrived, g);
    s_barrier(hub);
}

/* ------------------------------------------------------------ the feed's calls */

void view_apply(hub_t *hub, const frame_t *f)
{
    view_t *v = &hub->view;
    if (!v->entries)
        return;
    view_entry_t **p = s_slot(v, f->job_id);
    if (*p && (*p)->clock < f->seq) {
        s_drop_at(v, p);
        s_gauges(v);
    }
}

void view_progress(hub_t *hub, bool read_done)
{
    view_t *v = &hub->view;
    /* needs are in barrier order, so the head waits longest */
    while (v->behind.head && v->behind.head->need <= hub->feed.pos && hub->feed.anchored)
        s_serve(s_pop(&v->behind));
    if (!v->behind.head && ev_is_active(&v->grace))
        ev_timer_stop(hub->loop, &v->grace);
    if (!read_done || hub->feed.filling || !v->behind.head)
        return;
    if (v->refill && hub->feed.anchored) {
        v->refill = false;
        feed_fill(hub);
        if (hub->feed.filling)
            return;
    }
    /* a read of the feed that began after they arrived ended short of
     * their barriers (PostgreSQL away, an event it could not take):
     * PostgreSQL answers them */
    view_get_t *g;
    while ((g = s_pop(&v->behind)))
        s_read(g, false);
}

void view_forget(hub_t *hub)
{
    s_clear(&hub->view);
}

/* ------------------------------------------------------------ life */

void view_init(hub_t *hub, size_t limit)
{
    view_t *v = &hub->view;
    memset(v, 0, sizeof *v);
    v->limit = limit;
    s_queue_init(&v->arrived);
    s_queue_init(&v->batch);
    s_queue_init(&v->behind);
    ev_timer_init(&v->grace, s_grace_cb, VIEW_GRACE_S, 0.);
    v->grace.data = hub;
    if (!limit)
        return;
    v->nbuckets = VIEW_BUCKETS_MIN;
    v->buckets = calloc(v->nbuckets, sizeof *v->buckets);
    if (!v->buckets)
        abort();
}

void view_fini(hub_t *hub)
{
    view_t *v = &hub->view;
    ev_timer_stop(hub->loop, &v->grace);
    view_queue_t *qs[] = {&v->arrived, &v->batch, &v->behind};
    for (size_t i = 0; i < sizeof qs / sizeof *qs; i++) {
        view_get_t *g;
        while ((g = s_pop(qs[i]))) {
            if (!http_exchange_gone(g->x))
                hub->cfg.error(g->x, 503, "shutting down: reconnect to another instance");
            s_done(g);
        }
    }
    if (v->buckets)
        s_clear(v);
    free(v->buckets);
    v->buckets = NULL;
}
