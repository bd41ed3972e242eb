/*
 * bench/bus.c - what the runtime costs over raw ZeroMQ.
 *
 * Measures, in one run, each against the same figure for bare ZeroMQ
 * sockets and blocking threads:
 *   - mailbox one-way latency (ping-pong, one message in flight) vs PAIR;
 *   - mailbox throughput (one sender floods one receiver) vs PAIR;
 *   - event fan-out latency to 1 and 16 subscribers (publish, wait for
 *     every ack, publish again) vs PUB to SUB threads with HWM 0.
 * One-way latency is the receiver's CLOCK_MONOTONIC minus the sender's
 * timestamp carried in the message. Each latency figure comes from at least
 * 100,000 received messages.
 *
 *   bench/bus [--quick]
 */
#include "config.h"

#include "runtime/actor.h"
#include "runtime/log.h"
#include "runtime/mailbox.h"
#include "runtime/runtime.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

static size_t s_samples = 100000; /* latency messages per figure */
static size_t s_flood = 1000000;  /* throughput messages */

static int64_t s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int s_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef struct {
    double p50, p99; /* µs */
} pct_t;

static pct_t s_percentiles(int64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, s_cmp);
    pct_t p = {v[n / 2] / 1000.0, v[(size_t)((double)n * 0.99)] / 1000.0};
    return p;
}

static void s_die(const char *what)
{
    fprintf(stderr, "bench/bus: %s\n", what);
    exit(1);
}

/* ==================================================== runtime: one-way */

typedef struct {
    actor_t *self;
    size_t n, done;
    int64_t *lat; /* written by the ponger only */
    int64_t t0, t1;
} pingpong_t;

static void s_send_ping(actor_t *self, uint64_t seq)
{
    msg_t *m = msg_new(MSG_PING);
    m->ping.seq = seq;
    m->ping.sent_ns = s_now_ns();
    if (actor_send(self, "ponger", m) < 0)
        s_die("send to ponger failed");
    msg_destroy(&m);
}

static int s_pinger_init(actor_t *self, void *arg)
{
    pingpong_t *pp = arg;
    actor_set_state(self, pp);
    s_send_ping(self, 0);
    return 0;
}

static void s_pinger_pong(actor_t *self, msg_t *msg)
{
    pingpong_t *pp = actor_state(self);
    if (msg->pong.seq + 1 < pp->n) {
        s_send_ping(self, msg->pong.seq + 1);
        return;
    }
    msg_t *done = msg_new(MSG_PONG);
    actor_send(self, "bench", done);
    msg_destroy(&done);
}

static int s_ponger_init(actor_t *self, void *arg)
{
    actor_set_state(self, arg);
    return 0;
}

static void s_ponger_ping(actor_t *self, msg_t *msg)
{
    pingpong_t *pp = actor_state(self);
    pp->lat[msg->ping.seq] = s_now_ns() - msg->ping.sent_ns;
    msg_t *pong = msg_new(MSG_PONG);
    pong->pong.seq = msg->ping.seq;
    actor_send(self, msg->sender, pong);
    msg_destroy(&pong);
}

static const actor_spec_t s_pinger = {.init = s_pinger_init,
                                      .handlers = {[MSG_PONG] = s_pinger_pong}};
static const actor_spec_t s_ponger = {.init = s_ponger_init,
                                      .handlers = {[MSG_PING] = s_ponger_ping}};

static actor_t *s_start(runtime_t *rt, const char *name, const actor_spec_t *spec, void *arg)
{
    char err[256];
    actor_t *a = actor_new(rt, name, spec, arg, err, sizeof err);
    if (!a)
        s_die(err);
    return a;
}

static void s_wait_done(mailbox_t *mb)
{
    msg_t *m = mailbox_recv(mb, 600000);
    if (!m)
        s_die("timed out waiting for a benchmark to finish");
    msg_destroy(&m);
}

static pct_t s_runtime_oneway(runtime_t *rt, mailbox_t *mb)
{
    pingpong_t pp = {.n = s_samples};
    pp.lat = calloc(pp.n, sizeof *pp.lat);
    actor_t *b = s_start(rt, "ponger", &s_ponger, &pp);
    actor_t *a = s_start(rt, "pinger", &s_pinger, &pp);
    s_wait_done(mb);
    actor_destroy(&a);
    actor_destroy(&b);
    pct_t p = s_percentiles(pp.lat, pp.n);
    free(pp.lat);
    return p;
}

/* ================================================= runtime: throughput */

typedef struct {
    actor_t *self;
    size_t n, sent, got;
    int64_t t0;
    ev_idle idle;
} flood_t;

static void s_flood_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    flood_t *f = w->data;
    msg_t *m = msg_new(MSG_PING);
    for (int i = 0; i < 4096 && f->sent < f->n; i++) {
        m->ping.seq = f->sent++;
        if (actor_send(f->self, "drain", m) < 0)
            s_die("flood send failed");
    }
    msg_destroy(&m);
    if (f->sent == f->n)
        ev_idle_stop(loop, w);
}

static int s_flooder_init(actor_t *self, void *arg)
{
    flood_t *f = arg;
    f->self = self;
    actor_set_state(self, f);
    f->t0 = s_now_ns();
    ev_idle_init(&f->idle, s_flood_idle);
    f->idle.data = f;
    ev_idle_start(actor_loop(self), &f->idle);
    return 0;
}

static void s_flooder_fini(actor_t *self)
{
    flood_t *f = actor_state(self);
    ev_idle_stop(actor_loop(self), &f->idle);
}

static int s_drain_init(actor_t *self, void *arg)
{
    actor_set_state(self, arg);
    return 0;
}

static void s_drain_ping(actor_t *self, msg_t *msg)
{
    flood_t *f = actor_state(self);
    if (++f->got == f->n) {
        msg_t *done = msg_new(MSG_PONG);
        done->pong.sent_ns = s_now_ns() - f->t0;
        actor_send(self, "bench", done);
        msg_destroy(&done);
    }
}

static const actor_spec_t s_flooder = {.init = s_flooder_init, .fini = s_flooder_fini};
static const actor_spec_t s_drain = {.init = s_drain_init, .handlers = {[MSG_PING] = s_drain_ping}};

static double s_runtime_throughput(runtime_t *rt, mailbox_t *mb)
{
    flood_t f = {.n = s_flood};
    actor_t *d = s_start(rt, "drain", &s_drain, &f);
    actor_t *s = s_start(rt, "flooder", &s_flooder, &f);
    msg_t *m = mailbox_recv(mb, 600000);
    if (!m)
        s_die("throughput run timed out");
    double secs = m->pong.sent_ns / 1e9;
    msg_destroy(&m);
    actor_destroy(&s);
    actor_destroy(&d);
    return (double)f.n / secs;
}

/* ==================================================== runtime: fan-out */

typedef struct {
    actor_t *self;
    int subscribers;
    size_t events, published, acks;
    int64_t *lat; /* subscribers × events, each subscriber its own row */
} fan_t;

typedef struct {
    fan_t *fan;
    int index;
} fan_sub_t;

static void s_fan_publish(fan_t *fan)
{
    msg_t *ev = msg_new(MSG_PING);
    ev->ping.seq = fan->published++;
    ev->ping.sent_ns = s_now_ns();
    if (actor_publish(fan->self, "bench", ev) != fan->subscribers)
        s_die("an event did not reach every subscriber");
    msg_destroy(&ev);
}

static int s_fan_pub_init(actor_t *self, void *arg)
{
    fan_t *fan = arg;
    fan->self = self;
    actor_set_state(self, fan);
    s_fan_publish(fan);
    return 0;
}

static void s_fan_pub_ack(actor_t *self, msg_t *msg)
{
    fan_t *fan = actor_state(self);
    if (++fan->acks < (size_t)fan->subscribers * fan->published)
        return;
    if (fan->published < fan->events) {
        s_fan_publish(fan);
        return;
    }
    msg_t *done = msg_new(MSG_PONG);
    actor_send(self, "bench", done);
    msg_destroy(&done);
}

static int s_fan_sub_init(actor_t *self, void *arg)
{
    actor_set_state(self, arg);
    return actor_subscribe(self, "bench");
}

static void s_fan_sub_event(actor_t *self, msg_t *msg)
{
    fan_sub_t *sub = actor_state(self);
    fan_t *fan = sub->fan;
    fan->lat[(size_t)sub->index * fan->events + msg->ping.seq] = s_now_ns() - msg->ping.sent_ns;
    msg_t *ack = msg_new(MSG_PONG);
    actor_send(self, "publisher", ack);
    msg_destroy(&ack);
}

static const actor_spec_t s_fan_pub = {.init = s_fan_pub_init,
                                       .handlers = {[MSG_PONG] = s_fan_pub_ack}};
static const actor_spec_t s_fan_sub = {.init = s_fan_sub_init,
                                       .handlers = {[MSG_PING] = s_fan_sub_event}};

static pct_t s_runtime_fanout(runtime_t *rt, mailbox_t *mb, int subscribers)
{
    fan_t fan = {.subscribers = subscribers};
    fan.events = (s_samples + subscribers - 1) / subscribers;
    fan.lat = calloc(fan.events * subscribers, sizeof *fan.lat);
    actor_t *subs[16];
    fan_sub_t st[16];
    for (int i = 0; i < subscribers; i++) {
        char name[32];
        snprintf(name, sizeof name, "sub-%d", i);
        st[i] = (fan_sub_t){&fan, i};
        subs[i] = s_start(rt, name, &s_fan_sub, &st[i]);
    }
    actor_t *pub = s_start(rt, "publisher", &s_fan_pub, &fan);
    s_wait_done(mb);
    actor_destroy(&pub);
    for (int i = 0; i < subscribers; i++)
        actor_destroy(&subs[i]);
    pct_t p = s_percentiles(fan.lat, fan.events * subscribers);
    free(fan.lat);
    return p;
}

/* ======================================================= raw ZeroMQ */

static void s_raw_opts(void *s)
{
    int zero = 0;
    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
}

typedef struct {
    void *ctx;
    size_t n;
    int64_t *lat;
    int flood; /* 0: ping-pong echo, 1: count a flood */
    int64_t elapsed;
} raw_pair_t;

/* the far end of the PAIR: echoes pings (recording one-way latency), or
 * counts a flood */
static void *s_raw_pair_peer(void *arg)
{
    raw_pair_t *r = arg;
    void *s = zmq_socket(r->ctx, ZMQ_PAIR);
    s_raw_opts(s);
    zmq_connect(s, r->flood ? "inproc://raw-flood" : "inproc://raw-pair");
    int64_t buf[2];
    for (size_t i = 0; i < r->n; i++) {
        if (zmq_recv(s, buf, sizeof buf, 0) < 0)
            s_die("raw recv");
        if (r->flood)
            continue;
        r->lat[i] = s_now_ns() - buf[1];
        zmq_send(s, buf, sizeof buf, 0);
    }
    if (r->flood) {
        buf[1] = s_now_ns();
        zmq_send(s, buf, sizeof buf, 0);
    }
    zmq_close(s);
    return NULL;
}

static void s_raw_pair(void *ctx, raw_pair_t *r)
{
    void *s = zmq_socket(ctx, ZMQ_PAIR);
    s_raw_opts(s);
    if (zmq_bind(s, r->flood ? "inproc://raw-flood" : "inproc://raw-pair") < 0)
        s_die("raw bind failed");
    r->ctx = ctx;
    pthread_t t;
    pthread_create(&t, NULL, s_raw_pair_peer, r);
    int64_t buf[2] = {0, 0};
    int64_t t0 = s_now_ns();
    for (size_t i = 0; i < r->n; i++) {
        buf[0] = (int64_t)i;
        buf[1] = s_now_ns();
        zmq_send(s, buf, sizeof buf, 0);
        if (!r->flood)
            zmq_recv(s, buf, sizeof buf, 0);
    }
    if (r->flood) {
        zmq_recv(s, buf, sizeof buf, 0);
        r->elapsed = buf[1] - t0;
    }
    pthread_join(t, NULL);
    zmq_close(s);
}

typedef struct {
    void *ctx;
    int index;
    size_t events;
    int64_t *lat;
    char pub_ep[64], ack_ep[64];
} raw_sub_t;

static void *s_raw_sub_thread(void *arg)
{
    raw_sub_t *r = arg;
    void *sub = zmq_socket(r->ctx, ZMQ_SUB);
    void *ack = zmq_socket(r->ctx, ZMQ_PUSH);
    s_raw_opts(sub);
    s_raw_opts(ack);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    zmq_connect(sub, r->pub_ep);
    zmq_connect(ack, r->ack_ep);
    int64_t buf[2];
    /* warm-up: the publisher repeats a hello (seq -1) until all have it */
    int hello = 0;
    for (size_t got = 0; got < r->events;) {
        if (zmq_recv(sub, buf, sizeof buf, 0) < 0)
            s_die("raw sub recv");
        if (buf[0] < 0) {
            if (!hello) {
                hello = 1;
                zmq_send(ack, buf, sizeof buf, 0);
            }
            continue;
        }
        r->lat[(size_t)r->index * r->events + (size_t)buf[0]] = s_now_ns() - buf[1];
        zmq_send(ack, buf, sizeof buf, 0);
        got++;
    }
    zmq_close(sub);
    zmq_close(ack);
    return NULL;
}

static pct_t s_raw_fanout(void *ctx, int subscribers)
{
    size_t events = (s_samples + subscribers - 1) / subscribers;
    int64_t *lat = calloc(events * subscribers, sizeof *lat);
    void *pub = zmq_socket(ctx, ZMQ_PUB);
    void *acks = zmq_socket(ctx, ZMQ_PULL);
    s_raw_opts(pub);
    s_raw_opts(acks);
    /* endpoints are released asynchronously after zmq_close: a fresh name
     * per run, so a second run never binds a name still in use */
    char pub_ep[64], ack_ep[64];
    snprintf(pub_ep, sizeof pub_ep, "inproc://raw-pub-%d", subscribers);
    snprintf(ack_ep, sizeof ack_ep, "inproc://raw-ack-%d", subscribers);
    if (zmq_bind(pub, pub_ep) < 0 || zmq_bind(acks, ack_ep) < 0)
        s_die("raw bind failed");
    pthread_t t[16];
    raw_sub_t r[16];
    for (int i = 0; i < subscribers; i++) {
        r[i] = (raw_sub_t){ctx, i, events, lat, "", ""};
        strcpy(r[i].pub_ep, pub_ep);
        strcpy(r[i].ack_ep, ack_ep);
        pthread_create(&t[i], NULL, s_raw_sub_thread, &r[i]);
    }
    int64_t buf[2] = {-1, 0};
    /* the slow joiner: publish hellos until every subscriber has one */
    for (int ready = 0; ready < subscribers;) {
        zmq_send(pub, buf, sizeof buf, 0);
        zmq_pollitem_t it = {acks, 0, ZMQ_POLLIN, 0};
        while (zmq_poll(&it, 1, 1) > 0 && ready < subscribers) {
            zmq_recv(acks, buf, sizeof buf, 0);
            ready++;
        }
        buf[0] = -1;
    }
    for (size_t e = 0; e < events; e++) {
        buf[0] = (int64_t)e;
        buf[1] = s_now_ns();
        zmq_send(pub, buf, sizeof buf, 0);
        for (int i = 0; i < subscribers; i++)
            zmq_recv(acks, buf, sizeof buf, 0);
    }
    for (int i = 0; i < subscribers; i++)
        pthread_join(t[i], NULL);
    zmq_close(pub);
    zmq_close(acks);
    pct_t p = s_percentiles(lat, events * subscribers);
    free(lat);
    return p;
}

/* ============================================================ report */

static void s_row(const char *what, pct_t rt, pct_t raw)
{
    printf("%-28s %9.1f %9.1f   %9.1f %9.1f   %+7.0f%% %+7.0f%%\n", what, rt.p50, rt.p99, raw.p50,
           raw.p99, 100.0 * (rt.p50 / raw.p50 - 1), 100.0 * (rt.p99 / raw.p99 - 1));
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--quick") == 0) {
        s_samples = 10000;
        s_flood = 100000;
    } else if (argc > 1) {
        fprintf(stderr, "usage: bench/bus [--quick]\n");
        return 2;
    }
    log_set_level(LOG_WARN);
    runtime_t *rt = runtime_new();
    mailbox_t *mb = mailbox_new(rt, "bench");
    if (!rt || !mb)
        s_die("cannot start the runtime");

    pct_t rt_one = s_runtime_oneway(rt, mb);
    double rt_tput = s_runtime_throughput(rt, mb);
    pct_t rt_fan1 = s_runtime_fanout(rt, mb, 1);
    pct_t rt_fan16 = s_runtime_fanout(rt, mb, 16);

    void *ctx = runtime_zmq(rt);
    raw_pair_t one = {.n = s_samples};
    one.lat = calloc(one.n, sizeof *one.lat);
    s_raw_pair(ctx, &one);
    pct_t raw_one = s_percentiles(one.lat, one.n);
    free(one.lat);
    raw_pair_t flood = {.n = s_flood, .flood = 1};
    s_raw_pair(ctx, &flood);
    double raw_tput = (double)flood.n / (flood.elapsed / 1e9);
    pct_t raw_fan1 = s_raw_fanout(ctx, 1);
    pct_t raw_fan16 = s_raw_fanout(ctx, 16);

    printf("bench/bus: %zu latency samples per row, %zu messages for throughput\n\n", s_samples,
           s_flood);
    printf("%-28s %9s %9s   %9s %9s   %8s %8s\n", "", "runtime", "", "raw zmq", "", "overhead", "");
    printf("%-28s %9s %9s   %9s %9s   %8s %8s\n", "latency (µs)", "p50", "p99", "p50", "p99", "p50",
           "p99");
    s_row("mailbox one-way", rt_one, raw_one);
    s_row("event fan-out, 1 sub", rt_fan1, raw_fan1);
    s_row("event fan-out, 16 subs", rt_fan16, raw_fan16);
    printf("\n%-28s %9.0f msg/s   raw PAIR %9.0f msg/s   (%+.0f%%)\n", "mailbox throughput",
           rt_tput, raw_tput, 100.0 * (rt_tput / raw_tput - 1));

    mailbox_destroy(&mb);
    runtime_destroy(&rt);
    return 0;
}
