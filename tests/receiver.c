/*
 * receiver.c - see receiver.h.
 */
#include "config.h"

#include "tests/receiver.h"

#include "actors/http/server.h"

#include <ev.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define RCV_MAX_HITS 20000
#define RCV_MAX_HELD 1024

struct receiver {
    struct ev_loop *loop;
    http_server_t *srv;
    ev_async stop;
    pthread_t thread;
    pthread_mutex_t lock;
    char secret[256];
    int fail, hold;
    rcv_hit_t *hits;
    size_t nhits;
    http_exchange_t *held[RCV_MAX_HELD];
    size_t nheld;
};

static const char *const s_keep[] = {"imagejobs-event", "imagejobs-delivery", "imagejobs-signature",
                                     NULL};

/* "t=<t>,v1=<hex>" over "<t>.<body>", checked the way a receiver would */
static bool s_signed_ok(const char *secret, const char *sig, const char *body, size_t len)
{
    long long t;
    char hex[65];
    if (!sig || sscanf(sig, "t=%lld,v1=%64[0-9a-f]", &t, hex) != 2 || strlen(hex) != 64)
        return false;
    char *msg = NULL;
    size_t n = (size_t)asprintf(&msg, "%lld.", t);
    msg = realloc(msg, n + len + 1);
    memcpy(msg + n, body, len);
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg, n + len, mac, &maclen);
    free(msg);
    char want[65];
    for (unsigned int i = 0; i < maclen; i++)
        snprintf(want + 2 * i, 3, "%02x", mac[i]);
    return maclen == 32 && strcmp(want, hex) == 0;
}

static void s_on_request(http_exchange_t *x, const http_request_t *rq, void *arg)
{
    receiver_t *r = arg;
    rcv_hit_t h = {0};
    struct timeval tv;
    gettimeofday(&tv, NULL);
    h.at_us = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
    snprintf(h.event, sizeof h.event, "%s", rq->kept[0] ? rq->kept[0] : "");
    snprintf(h.delivery, sizeof h.delivery, "%s", rq->kept[1] ? rq->kept[1] : "");
    h.signed_ok = s_signed_ok(r->secret, rq->kept[2], rq->body, rq->body_len);
    json_t *doc = json_loadb(rq->body, rq->body_len, 0, NULL);
    const char *job = json_string_value(json_object_get(doc, "job_id"));
    const char *ev = json_string_value(json_object_get(doc, "event"));
    snprintf(h.job_id, sizeof h.job_id, "%s", job ? job : "");
    snprintf(h.body_event, sizeof h.body_event, "%s", ev ? ev : "");
    h.seq = (long long)json_integer_value(json_object_get(doc, "event_seq"));
    const char *at = json_string_value(json_object_get(doc, "occurred_at"));
    struct tm tm = {0};
    int us = 0;
    if (at
        && sscanf(at, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                  &tm.tm_min, &tm.tm_sec, &us)
               == 7) {
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        h.occurred_us = (int64_t)timegm(&tm) * 1000000 + us;
    }
    json_decref(doc);

    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->nhits; i++)
        if (strcmp(r->hits[i].delivery, h.delivery) == 0)
            h.attempt++;
    h.attempt++;
    bool hold = (r->hold < 0 || h.attempt <= r->hold) && r->nheld < RCV_MAX_HELD;
    h.answered = hold ? 0 : h.attempt <= r->fail ? 500 : 200;
    if (r->nhits < RCV_MAX_HITS)
        r->hits[r->nhits++] = h;
    if (hold) {
        http_exchange_hold(x);
        r->held[r->nheld++] = x;
    }
    pthread_mutex_unlock(&r->lock);
    if (!hold)
        http_respond(x, h.answered, NULL, NULL, NULL, 0);
}

static void s_stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

static void *s_run(void *arg)
{
    receiver_t *r = arg;
    ev_run(r->loop, 0);
    return NULL;
}

receiver_t *rcv_start(const char *secret)
{
    receiver_t *r = calloc(1, sizeof *r);
    if (!r || !(r->hits = calloc(RCV_MAX_HITS, sizeof *r->hits)))
        abort();
    snprintf(r->secret, sizeof r->secret, "%s", secret);
    pthread_mutex_init(&r->lock, NULL);
    r->loop = ev_loop_new(EVFLAG_AUTO);
    http_server_config_t cfg = {.loop = r->loop,
                                .listen = "127.0.0.1:0",
                                .stall_timeout_s = 60,
                                .keepalive_timeout_s = 60,
                                .keep_headers = s_keep,
                                .on_request = s_on_request,
                                .arg = r};
    char err[256];
    if (!(r->srv = http_server_new(&cfg, err, sizeof err))) {
        fprintf(stderr, "receiver: %s\n", err);
        ev_loop_destroy(r->loop);
        free(r->hits);
        free(r);
        return NULL;
    }
    ev_async_init(&r->stop, s_stop_cb);
    ev_async_start(r->loop, &r->stop);
    /* the loop is the thread's from here on */
    if (pthread_create(&r->thread, NULL, s_run, r) != 0)
        abort();
    return r;
}

int rcv_port(const receiver_t *r)
{
    return http_server_port(r->srv);
}

void rcv_set(receiver_t *r, int fail, int hold)
{
    pthread_mutex_lock(&r->lock);
    r->fail = fail;
    r->hold = hold;
    pthread_mutex_unlock(&r->lock);
}

size_t rcv_hits(receiver_t *r, rcv_hit_t *out, size_t max)
{
    pthread_mutex_lock(&r->lock);
    size_t n = r->nhits;
    if (out)
        memcpy(out, r->hits, (n < max ? n : max) * sizeof *out);
    pthread_mutex_unlock(&r->lock);
    return n;
}

void rcv_stop(receiver_t **rp)
{
    receiver_t *r = *rp;
    if (!r)
        return;
    ev_async_send(r->loop, &r->stop);
    pthread_join(r->thread, NULL);
    http_server_destroy(&r->srv);
    for (size_t i = 0; i < r->nheld; i++)
        http_exchange_release(r->held[i]);
    ev_async_stop(r->loop, &r->stop);
    ev_loop_destroy(r->loop);
    pthread_mutex_destroy(&r->lock);
    free(r->hits);
    free(r);
    *rp = NULL;
}
