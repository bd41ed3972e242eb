/*
 * webhook.c - the webhook actor (actors/webhook.h, docs/webhooks.md): takes
 * due deliveries of the outbox from the store, POSTs each, signed, to its
 * receiver, and reports how the attempt ended; the store keeps the state
 * and the retry schedule, so any instance carries on where another left.
 *
 * Key constraint: nothing here blocks. The transfers are one libcurl multi
 * handle on the actor's libev loop, the standard integration: libcurl tells
 * which sockets to watch (CURLMOPT_SOCKETFUNCTION -> one ev_io each) and
 * when to call it back (CURLMOPT_TIMERFUNCTION -> one ev_timer), and every
 * readiness goes back to it through curl_multi_socket_action(). Names are
 * resolved by libcurl's threaded resolver, off the loop. Finished transfers
 * are read and freed after curl_multi_socket_action() has returned, never
 * inside one of libcurl's callbacks.
 *
 * When to claim: after a job event on the bus (this instance's or, through
 * Redis, another's), after a delivery (its job's next one is now due), and
 * every WEBHOOK_POLL_S for retries and what the bus missed. One claim is in
 * flight at a time; it asks for the free slots only (the concurrency bound).
 */
#include "config.h"

#include "actors/store.h"
#include "actors/webhook.h"

#include "runtime/log.h"
#include "runtime/names.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WEBHOOK_POLL_S 0.5
#define WEBHOOK_REQUEST_TIMEOUT_S 10.0 /* a claim or a result the store does not answer */
#define WEBHOOK_RESPONSE_MAX 65536     /* bytes of a receiver's answer read, the rest dropped */
#define RELEASED_WHY "released: the instance stopped"

typedef struct wh wh_t;

/* One attempt of one delivery: an easy handle and what it needs to live. */
typedef struct delivery {
    wh_t *w;
    CURL *easy;
    struct curl_slist *headers;
    char id[40];
    char job_id[40];
    char *body; /* what is signed and sent (owned) */
    size_t received;
    int opened, refused; /* sockets opened, addresses refused by the guard */
    const char *refused_kind;
    char refused_addr[64];
    char errbuf[CURL_ERROR_SIZE];
    struct delivery *next;
} delivery_t;

/* One socket libcurl wants watched; listed, since libcurl's cleanup may
 * close its cached connections without telling. */
typedef struct sock {
    ev_io io;
    wh_t *w;
    struct sock *prev, *next;
} sock_t;

struct wh {
    actor_t *self;
    struct ev_loop *loop;
    webhook_config_t cfg;
    char *instance, *secret;
    double lease_s;
    CURLM *multi;
    ev_timer curl_timer; /* libcurl's own deadline */
    ev_timer poll;
    int inflight;
    int releasing; /* stopping: releases the store has not answered yet */
    bool claiming, claim_again;
    delivery_t *deliveries;
    sock_t *socks;
};

static void s_claim(wh_t *w);

/* ------------------------------------------------------- libcurl on libev */

static void s_check_done(wh_t *w);

static void s_sock_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    wh_t *w = ((sock_t *)io)->w; /* the action may free the sock_t (CURL_POLL_REMOVE) */
    int action =
        (revents & EV_READ ? CURL_CSELECT_IN : 0) | (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(w->multi, io->fd, action, &running);
    s_check_done(w);
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what libcurl asks, or stop. */
static int s_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    wh_t *w = userp;
    sock_t *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            ev_io_stop(w->loop, &s->io);
            if (s->prev)
                s->prev->next = s->next;
            else
                w->socks = s->next;
            if (s->next)
                s->next->prev = s->prev;
            free(s);
        }
        return 0;
    }
    if (!s) {
        if (!(s = calloc(1, sizeof *s)))
            abort();
        s->w = w;
        s->next = w->socks;
        if (w->socks)
            w->socks->prev = s;
        w->socks = s;
        curl_multi_assign(w->multi, fd, s);
    } else {
        ev_io_stop(w->loop, &s->io);
    }
    int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    ev_io_init(&s->io, s_sock_cb, fd, events);
    ev_io_start(w->loop, &s->io);
    return 0;
}

static void s_curl_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    wh_t *w = t->data;
    int running;
    curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    s_check_done(w);
}

/* CURLMOPT_TIMERFUNCTION: call back in timeout_ms (-1: no timer). Even 0
 * goes through the loop: libcurl must not be re-entered from here. */
static int s_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    wh_t *w = userp;
    ev_timer_stop(w->loop, &w->curl_timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&w->curl_timer, (double)timeout_ms / 1000., 0.);
        ev_timer_start(w->loop, &w->curl_timer);
    }
    return 0;
}

/* ------------------------------------------------------------- a delivery */

/* CURLOPT_OPENSOCKETFUNCTION: the SSRF guard, on the address libcurl is
 * about to connect to (after resolution: what the name resolves to now,
 * not what it resolved to when the job was made). */
static curl_socket_t s_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    delivery_t *d = clientp;
    const char *kind = NULL;
    if (!d->w->cfg.allow_private && !webhook_addr_allowed(&a->addr, &kind)) {
        d->refused++;
        d->refused_kind = kind;
        char host[48] = "?";
        if (a->family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&a->addr)->sin_addr, host, sizeof host);
        else if (a->family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a->addr)->sin6_addr, host, sizeof host);
        snprintf(d->refused_addr, sizeof d->refused_addr, "%s", host);
        return CURL_SOCKET_BAD;
    }
    curl_socket_t fd = socket(a->family, a->socktype, a->protocol);
    if (fd != CURL_SOCKET_BAD)
        d->opened++;
    return fd;
}

/* The receiver's answer is not read beyond its status: counted, dropped. */
static size_t s_discard(char *p, size_t size, size_t n, void *arg)
{
    delivery_t *d = arg;
    d->received += size * n;
    return d->received > WEBHOOK_RESPONSE_MAX ? 0 : size * n;
}

static void s_delivery_free(delivery_t **dp)
{
    delivery_t *d = *dp;
    if (!d)
        return;
    if (d->easy) {
        curl_multi_remove_handle(d->w->multi, d->easy);
        curl_easy_cleanup(d->easy);
    }
    curl_slist_free_all(d->headers);
    free(d->body);
    free(d);
    *dp = NULL;
}

static struct curl_slist *s_header(struct curl_slist *l, const char *name, const char *value)
{
    char line[256];
    snprintf(line, sizeof line, "%s: %s", name, value);
    struct curl_slist *n = curl_slist_append(l, line);
    if (!n)
        abort();
    return n;
}

static int s_report(wh_t *w, const char *id, webhook_outcome_t outcome, long status,
                    const char *error);

/* Starts one attempt of the claimed delivery item (one that cannot start
 * is reported as a failed attempt). */
static void s_deliver(wh_t *w, json_t *item)
{
    const char *id = json_string_value(json_object_get(item, "id"));
    const char *job = json_string_value(json_object_get(item, "job_id"));
    const char *event = json_string_value(json_object_get(item, "event"));
    const char *url = json_string_value(json_object_get(item, "url"));
    json_t *body = json_object_get(item, "body");
    if (!id || !job || !event || !url || !json_is_string(body) || strlen(id) >= 40
        || strlen(job) >= 40 || strlen(event) > 32) {
        log_error("webhook: a claimed delivery is malformed: dropped until its lease ends");
        return;
    }
    delivery_t *d = calloc(1, sizeof *d);
    if (!d)
        abort();
    d->w = w;
    snprintf(d->id, sizeof d->id, "%s", id);
    snprintf(d->job_id, sizeof d->job_id, "%s", job);
    size_t len = json_string_length(body);
    if (!(d->body = malloc(len + 1)))
        abort();
    memcpy(d->body, json_string_value(body), len + 1);
    char sig[160];
    if (webhook_sign(w->secret, (int64_t)time(NULL), d->body, len, sig, sizeof sig) < 0) {
        log_error("webhook: cannot sign delivery %s", id);
        s_report(w, d->id, WEBHOOK_OUTCOME_RETRY, 0, "cannot sign");
        s_delivery_free(&d);
        return;
    }
    d->headers = s_header(NULL, "Content-Type", "application/json");
    d->headers = s_header(d->headers, "Imagejobs-Event", event);
    d->headers = s_header(d->headers, "Imagejobs-Delivery", id);
    d->headers = s_header(d->headers, "Imagejobs-Signature", sig);
    d->headers = s_header(d->headers, "Expect", ""); /* no 100-continue round trip */
    CURL *e = d->easy = curl_easy_init();
    if (!e)
        abort();
    long timeout_ms = (long)(w->cfg.timeout_s * 1000.);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L); /* a redirect is an answer: not 2xx */
    curl_easy_setopt(e, CURLOPT_PROXY, "");          /* no proxy from the environment */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, d->headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "imagejobs-webhook/" PACKAGE_VERSION);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, s_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, d);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_discard);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, d);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, d->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, d);
    if (curl_multi_add_handle(w->multi, e) != CURLM_OK) {
        s_report(w, d->id, WEBHOOK_OUTCOME_RETRY, 0, "cannot start the transfer");
        curl_easy_cleanup(e);
        d->easy = NULL;
        s_delivery_free(&d);
        return;
    }
    d->next = w->deliveries;
    w->deliveries = d;
    w->inflight++;
}

static void s_unlink(wh_t *w, delivery_t *d)
{
    for (delivery_t **p = &w->deliveries; *p; p = &(*p)->next)
        if (*p == d) {
            *p = d->next;
            return;
        }
}

/* The transfers libcurl has finished: their outcome to the store. */
static void s_check_done(wh_t *w)
{
    CURLMsg *m;
    int left, finished = 0;
    while ((m = curl_multi_info_read(w->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        delivery_t *d = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&d);
        CURLcode rc = m->data.result;
        long status = 0;
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        char why[CURL_ERROR_SIZE + 64];
        webhook_outcome_t outcome = WEBHOOK_OUTCOME_RETRY;
        if (d->refused && !d->opened) {
            /* every address the name has now is refused: dead, nothing sent */
            outcome = WEBHOOK_OUTCOME_DEAD;
            snprintf(why, sizeof why, "address %s refused (%s; see --webhook-allow-private)",
                     d->refused_addr, d->refused_kind);
            status = 0;
        } else if (status >= 200 && status < 300
                   && (rc == CURLE_OK
                       || (rc == CURLE_WRITE_ERROR && d->received > WEBHOOK_RESPONSE_MAX))) {
            /* a long answer is cut short on purpose (s_discard): its status counts */
            outcome = WEBHOOK_OUTCOME_DELIVERED;
            why[0] = '\0';
        } else if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && status > 0)) {
            snprintf(why, sizeof why, "HTTP %ld", status);
        } else {
            snprintf(why, sizeof why, "%s", d->errbuf[0] ? d->errbuf : curl_easy_strerror(rc));
            status = 0;
        }
        log_debug("webhook %s (job %s): %s%s%s", d->id, d->job_id, webhook_outcome_name(outcome),
                  why[0] ? ": " : "", why);
        s_report(w, d->id, outcome, status, why);
        s_unlink(w, d);
        s_delivery_free(&d);
        w->inflight--;
        finished++;
    }
    if (finished)
        s_claim(w); /* slots are free */
}

/* ---------------------------------------------------------- the store */

static void s_result_reply(actor_t *self, int status, msg_t *reply, void *arg)
{
    wh_t *w = actor_state(self);
    if (w && arg && --w->releasing == 0) /* the last release of a stop */
        actor_stop_ready(self);
    if (status != 0 || reply->type != MSG_OK)
        log_warn("webhook: an attempt's outcome was not recorded (%s): it is tried again once "
                 "its lease ends",
                 actor_reply_reason(status, reply));
    else if (w)
        s_claim(w); /* a delivered row lets its job's next one go */
}

static int s_report(wh_t *w, const char *id, webhook_outcome_t outcome, long status,
                    const char *error)
{
    msg_t *m = msg_new(MSG_WEBHOOK_RESULT);
    msg_webhook_result_t *b = &m->webhook_result;
    msg_set_str(&b->delivery_id, id);
    msg_set_str(&b->instance, w->instance);
    b->outcome = outcome;
    b->http_status = status > 0 && status <= 999 ? (uint64_t)status : 0;
    msg_set_str(&b->error, error && *error ? error : NULL);
    b->retry_base_s = w->cfg.retry_base_s;
    b->retry_max_s = w->cfg.retry_max_s;
    b->retry_for_s = w->cfg.retry_for_s;
    /* a release's reply is told apart by its arg: the stop waits for it */
    void *arg = outcome == WEBHOOK_OUTCOME_RELEASED ? w : NULL;
    int rc = actor_request(w->self, ACTOR_STORE, m, WEBHOOK_REQUEST_TIMEOUT_S, s_result_reply, arg);
    if (rc < 0)
        log_warn("webhook: cannot send the outcome of %s to the store", id);
    msg_destroy(&m);
    return rc;
}

static void s_claimed(actor_t *self, int status, msg_t *reply, void *arg)
{
    wh_t *w = actor_state(self);
    if (!w)
        return;
    size_t asked = (size_t)(uintptr_t)arg;
    w->claiming = false;
    if (status != 0 || reply->type != MSG_WEBHOOK_CLAIMED) {
        log_debug("webhook: claim failed (%s)", actor_reply_reason(status, reply));
        return; /* the poll tries again */
    }
    json_error_t jerr;
    json_t *items = json_loads(
        reply->webhook_claimed.deliveries ? reply->webhook_claimed.deliveries : "[]", 0, &jerr);
    size_t i, n = json_is_array(items) ? json_array_size(items) : 0;
    json_t *item;
    json_array_foreach(items, i, item)
    {
        const char *id = json_string_value(json_object_get(item, "id"));
        if (!actor_is_stopping(self))
            s_deliver(w, item);
        else if (id && s_report(w, id, WEBHOOK_OUTCOME_RELEASED, 0, RELEASED_WHY) == 0)
            w->releasing++; /* taken while the stop began: given back at once */
    }
    json_decref(items);
    /* a full batch: more may be due; an event heard meanwhile: look again */
    if (n >= asked || w->claim_again) {
        w->claim_again = false;
        s_claim(w);
    }
}

static void s_claim(wh_t *w)
{
    if (actor_is_stopping(w->self))
        return;
    if (w->claiming) {
        w->claim_again = true;
        return;
    }
    int free_slots = w->cfg.concurrency - w->inflight;
    if (free_slots <= 0)
        return; /* a finished transfer claims again */
    msg_t *m = msg_new(MSG_WEBHOOK_CLAIM);
    msg_set_str(&m->webhook_claim.instance, w->instance);
    m->webhook_claim.limit = (uint64_t)free_slots;
    m->webhook_claim.lease_s = w->lease_s;
    if (actor_request(w->self, ACTOR_STORE, m, WEBHOOK_REQUEST_TIMEOUT_S, s_claimed,
                      (void *)(uintptr_t)free_slots)
        == 0)
        w->claiming = true;
    msg_destroy(&m);
}

static void s_poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    s_claim(t->data);
}

/* A job event committed (here or elsewhere): its delivery row is there. */
static void s_on_job_event(actor_t *self, msg_t *msg)
{
    job_event_kind_t k = msg->job_event.kind;
    if (k == JOB_EVENT_STARTED || k == JOB_EVENT_IMAGE || k == JOB_EVENT_END)
        s_claim(actor_state(self));
}

/* ----------------------------------------------------------- lifecycle */

static char *s_dup(const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p)
        abort();
    return p;
}

static int s_init(actor_t *self, void *arg)
{
    const webhook_config_t *cfg = arg;
    wh_t *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    w->self = self;
    w->loop = actor_loop(self);
    w->cfg = *cfg;
    w->instance = s_dup(cfg->instance);
    w->secret = s_dup(cfg->secret);
    w->cfg.instance = w->instance;
    w->cfg.secret = w->secret;
    if (w->cfg.concurrency <= 0)
        w->cfg.concurrency = 64;
    if (w->cfg.timeout_s <= 0)
        w->cfg.timeout_s = 10;
    if (w->cfg.retry_base_s <= 0)
        w->cfg.retry_base_s = 10;
    if (w->cfg.retry_max_s <= 0)
        w->cfg.retry_max_s = 3600;
    if (w->cfg.retry_for_s <= 0)
        w->cfg.retry_for_s = 86400;
    /* longer than any attempt, so that a claim lapses only when its holder
     * is gone (or stuck): then any instance takes it again */
    w->lease_s = 2 * w->cfg.timeout_s + 5;
    if (!(w->multi = curl_multi_init()))
        abort();
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, s_curl_socket);
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, s_curl_timer);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
    curl_multi_setopt(w->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)w->cfg.concurrency);
    ev_timer_init(&w->curl_timer, s_curl_timer_cb, 0., 0.);
    w->curl_timer.data = w;
    ev_timer_init(&w->poll, s_poll_cb, 0., WEBHOOK_POLL_S);
    w->poll.data = w;
    ev_timer_start(w->loop, &w->poll);
    actor_set_state(self, w);
    if (actor_subscribe(self, TOPIC_JOB_EVENT) < 0) {
        actor_fail(self, "webhook: cannot subscribe to job events: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* A stop: the transfers in flight are dropped and their claims given back
 * (due again now, for any instance), instead of waiting for their lease;
 * the loop turns until the store has them (or the stop deadline). The
 * receiver may have had one already: at least once. */
static bool s_stopping(actor_t *self)
{
    wh_t *w = actor_state(self);
    ev_timer_stop(w->loop, &w->poll);
    while (w->deliveries) {
        delivery_t *d = w->deliveries;
        w->deliveries = d->next;
        if (s_report(w, d->id, WEBHOOK_OUTCOME_RELEASED, 0, RELEASED_WHY) == 0)
            w->releasing++;
        s_delivery_free(&d);
        w->inflight--;
    }
    if (w->releasing)
        log_info("webhook: %d deliveries in flight given back", w->releasing);
    return w->releasing == 0;
}

static void s_fini(actor_t *self)
{
    wh_t *w = actor_state(self);
    if (!w)
        return;
    ev_timer_stop(w->loop, &w->poll);
    while (w->deliveries) {
        delivery_t *d = w->deliveries;
        w->deliveries = d->next;
        s_delivery_free(&d);
    }
    curl_multi_cleanup(w->multi);
    while (w->socks) {
        sock_t *s = w->socks;
        w->socks = s->next;
        ev_io_stop(w->loop, &s->io);
        free(s);
    }
    ev_timer_stop(w->loop, &w->curl_timer);
    free(w->instance);
    free(w->secret);
    free(w);
    actor_set_state(self, NULL);
}

static const actor_spec_t s_spec = {
    .init = s_init,
    .stopping = s_stopping,
    .fini = s_fini,
    .handlers = {[MSG_JOB_EVENT] = s_on_job_event},
};

actor_t *webhook_start(runtime_t *rt, const webhook_config_t *cfg, char *err, size_t errlen)
{
    if (!cfg || !cfg->instance || !cfg->secret || !*cfg->secret) {
        snprintf(err, errlen, "webhook: an instance and a non-empty secret are required");
        return NULL;
    }
    static bool global_done; /* curl_global_init once, before any thread uses libcurl */
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
            snprintf(err, errlen, "webhook: libcurl does not initialise");
            return NULL;
        }
        global_done = true;
    }
    return actor_new(rt, ACTOR_WEBHOOK, &s_spec, (void *)cfg, err, errlen);
}

void webhook_destroy(actor_t **ap)
{
    actor_destroy(ap);
}
