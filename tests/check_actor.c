/*
 * check_actor.c - runtime/actor.c: actors under load (every message, in
 * order, through bursts and both directions), request/reply and its
 * timeout, replies to a saved caller, the bus as actors see it, and the
 * lifecycle (start, failed start, stop, restart, dispatch of garbage).
 *
 * Every test builds its runtime inside the test (after Check's fork) and
 * talks to its actors from a mailbox named "test" on the test thread.
 * Actors report back with PONG messages: seq carries a count, sent_ns 1
 * for "as expected" and 0 otherwise.
 */
#include "config.h"

#include "runtime/actor.h"
#include "runtime/mailbox.h"
#include "runtime/runtime.h"
#include "tests/fixture.h"
#include "tests/runner.h"

#include <check.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static mailbox_t *s_test;

static void s_setup(void)
{
    fixture_setup();
    s_test = fixture_mailbox("test", NULL);
}

static void s_report(actor_t *self, uint64_t count, int ok)
{
    msg_t *msg = msg_new(MSG_PONG);
    msg->pong.seq = count;
    msg->pong.sent_ns = ok;
    ck_assert_int_eq(actor_send(self, "test", msg), 0);
    msg_destroy(&msg);
}

static actor_t *s_start(const char *name, const actor_spec_t *spec, void *arg)
{
    char err[256] = "";
    actor_t *a = actor_new(fixture_rt, name, spec, arg, err, sizeof err);
    ck_assert_msg(a != NULL, "actor %s failed to start: %s", name, err);
    return a;
}

static void s_send_ping(mailbox_t *from, const char *to, uint64_t seq)
{
    msg_t *msg = msg_new(MSG_PING);
    msg->ping.seq = seq;
    ck_assert_int_eq(mailbox_send(from, to, msg), 0);
    msg_destroy(&msg);
}

/* ------------------------------------------------- in-order sink actor */

typedef struct {
    uint64_t expect; /* number of pings to receive */
    uint64_t next;   /* next seq expected */
    int in_order;
    unsigned work; /* busy work per message, to make a slow receiver */
    uint64_t checksum;
} sink_t;

static int s_sink_init(actor_t *self, void *arg)
{
    sink_t *st = arg;
    st->in_order = 1;
    actor_set_state(self, st);
    return 0;
}

static void s_sink_ping(actor_t *self, msg_t *msg)
{
    sink_t *st = actor_state(self);
    if (msg->ping.seq != st->next)
        st->in_order = 0;
    st->next++;
    /* real work per message: the sender outruns us and the queue grows */
    for (unsigned i = 0; i < st->work; i++)
        st->checksum = st->checksum * 6364136223846793005ull + msg->ping.seq + i;
    if (st->next == st->expect)
        s_report(self, st->next, st->in_order);
}

static const actor_spec_t s_sink_spec = {
    .init = s_sink_init,
    .handlers = {[MSG_PING] = s_sink_ping},
};

/* ----------------------------------------------- bulk sender actor */

typedef struct {
    actor_t *self;
    const char *to;
    uint64_t total, sent;
    ev_idle idle;
} sender_t;

/* Sends in batches from an idle watcher so the sender's own loop (and its
 * ZeroMQ watcher) keeps turning while it floods the receiver. */
static void s_sender_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    sender_t *st = w->data;
    msg_t *msg = msg_new(MSG_PING);
    for (int i = 0; i < 1000 && st->sent < st->total; i++) {
        msg->ping.seq = st->sent++;
        ck_assert_int_eq(actor_send(st->self, st->to, msg), 0);
    }
    msg_destroy(&msg);
    if (st->sent == st->total)
        ev_idle_stop(loop, w);
}

static int s_sender_init(actor_t *self, void *arg)
{
    sender_t *st = arg;
    st->self = self;
    ev_idle_init(&st->idle, s_sender_idle);
    st->idle.data = st;
    ev_idle_start(actor_loop(self), &st->idle);
    actor_set_state(self, st);
    return 0;
}

static void s_sender_fini(actor_t *self)
{
    sender_t *st = actor_state(self);
    ev_idle_stop(actor_loop(self), &st->idle);
}

static const actor_spec_t s_sender_spec = {
    .init = s_sender_init,
    .fini = s_sender_fini,
};

START_TEST(test_100k_messages_arrive_complete_and_in_order)
{
    sink_t sink = {.expect = 100000};
    sender_t sender = {.to = "sink", .total = 100000};
    actor_t *rx = s_start("sink", &s_sink_spec, &sink);
    actor_t *tx = s_start("sender", &s_sender_spec, &sender);
    msg_t *r = fixture_expect(s_test, MSG_PONG);
    ck_assert_uint_eq(r->pong.seq, 100000);
    ck_assert_int_eq(r->pong.sent_ns, 1);
    msg_destroy(&r);
    actor_destroy(&tx);
    actor_destroy(&rx);
    ck_assert_ptr_null(rx);
}
END_TEST

START_TEST(test_burst_into_slow_receiver_loses_nothing)
{
    /* the test thread sends 200,000 at once; the receiver works on each */
    sink_t sink = {.expect = 200000, .work = 2000};
    actor_t *rx = s_start("slow", &s_sink_spec, &sink);
    for (uint64_t i = 0; i < 200000; i++)
        s_send_ping(s_test, "slow", i);
    msg_t *r = fixture_expect(s_test, MSG_PONG);
    ck_assert_uint_eq(r->pong.seq, 200000);
    ck_assert_int_eq(r->pong.sent_ns, 1);
    msg_destroy(&r);
    actor_destroy(&rx);
}
END_TEST

/* ------------------------------------------ echo: both directions */

static void s_echo_ping(actor_t *self, msg_t *msg)
{
    msg_t *pong = msg_new(MSG_PONG);
    pong->pong.seq = msg->ping.seq;
    pong->pong.sent_ns = msg->ping.sent_ns;
    ck_assert_int_eq(actor_reply(self, msg, pong), 0);
    msg_destroy(&pong);
}

static const actor_spec_t s_echo_spec = {
    .handlers = {[MSG_PING] = s_echo_ping},
};

/* Keeps a window of requests in flight to "echo" and checks every reply
 * comes back, matched by correlation id, in order. */
typedef struct {
    actor_t *self;
    uint64_t total, sent, replies;
    int in_order;
} driver_t;

static void s_driver_send(driver_t *st);

static void s_driver_reply(actor_t *self, int status, msg_t *reply, void *arg)
{
    driver_t *st = arg;
    if (status != 0 || reply->type != MSG_PONG || reply->pong.seq != st->replies)
        st->in_order = 0;
    st->replies++;
    if (st->replies == st->total)
        s_report(self, st->replies, st->in_order);
    else
        s_driver_send(st);
}

static void s_driver_send(driver_t *st)
{
    if (st->sent >= st->total)
        return;
    msg_t *ping = msg_new(MSG_PING);
    ping->ping.seq = st->sent++;
    ck_assert_int_eq(actor_request(st->self, "echo", ping, 60., s_driver_reply, st), 0);
    msg_destroy(&ping);
}

static int s_driver_init(actor_t *self, void *arg)
{
    driver_t *st = arg;
    st->self = self;
    st->in_order = 1;
    for (int i = 0; i < 500; i++) /* a burst of 500 in flight */
        s_driver_send(st);
    return 0;
}

static const actor_spec_t s_driver_spec = {.init = s_driver_init};

START_TEST(test_request_reply_both_directions_no_stall)
{
    driver_t driver = {.total = 50000};
    actor_t *echo = s_start("echo", &s_echo_spec, NULL);
    actor_t *drv = s_start("driver", &s_driver_spec, &driver);
    msg_t *r = fixture_expect(s_test, MSG_PONG);
    ck_assert_uint_eq(r->pong.seq, 50000);
    ck_assert_int_eq(r->pong.sent_ns, 1);
    msg_destroy(&r);
    actor_destroy(&drv);
    actor_destroy(&echo);
}
END_TEST

/* ------------------------------------------------ request timeout */

typedef struct {
    const char *to;
    int status;
} asker_t;

static void s_asker_reply(actor_t *self, int status, msg_t *reply, void *arg)
{
    asker_t *st = arg;
    st->status = status;
    /* report the status as a count: 0 for a reply, ETIMEDOUT for none */
    s_report(self, (uint64_t)-status, reply == NULL);
}

static int s_asker_init(actor_t *self, void *arg)
{
    asker_t *st = arg;
    msg_t *ping = msg_new(MSG_PING);
    int rc = actor_request(self, st->to, ping, 0.2, s_asker_reply, st);
    msg_destroy(&ping);
    if (rc < 0)
        actor_fail(self, "request to %s failed: %s", st->to, strerror(errno));
    return rc;
}

static const actor_spec_t s_asker_spec = {.init = s_asker_init};

/* an actor that takes pings and never answers */
static void s_mute_ping(actor_t *self, msg_t *msg) {}
static const actor_spec_t s_mute_spec = {.handlers = {[MSG_PING] = s_mute_ping}};

START_TEST(test_request_without_reply_times_out)
{
    actor_t *mute = s_start("mute", &s_mute_spec, NULL);
    asker_t asker = {.to = "mute"};
    actor_t *a = s_start("asker", &s_asker_spec, &asker);
    msg_t *r = fixture_expect(s_test, MSG_PONG);
    ck_assert_uint_eq(r->pong.seq, ETIMEDOUT);
    ck_assert_int_eq(r->pong.sent_ns, 1); /* no reply object */
    msg_destroy(&r);
    actor_destroy(&a);

    /* the same request to an actor that answers gets its reply */
    actor_t *echo = s_start("echo", &s_echo_spec, NULL);
    asker_t asker2 = {.to = "echo"};
    a = s_start("asker", &s_asker_spec, &asker2);
    r = fixture_expect(s_test, MSG_PONG);
    ck_assert_uint_eq(r->pong.seq, 0);
    ck_assert_int_eq(r->pong.sent_ns, 0); /* a reply object */
    msg_destroy(&r);
    actor_destroy(&a);
    actor_destroy(&echo);
    actor_destroy(&mute);
}
END_TEST

START_TEST(test_request_to_unknown_actor_fails_at_once)
{
    asker_t asker = {.to = "nobody"};
    char err[256] = "";
    actor_t *a = actor_new(fixture_rt, "asker", &s_asker_spec, &asker, err, sizeof err);
    ck_assert_ptr_null(a);
    ck_assert_msg(strstr(err, "nobody") != NULL, "reason was: %s", err);
}
END_TEST

/* ------------------------------------------------------------- bus */

typedef struct {
    int index;
} subscriber_t;

static int s_subscriber_init(actor_t *self, void *arg)
{
    actor_set_state(self, arg);
    return actor_subscribe(self, "cancel");
}

static void s_subscriber_cancel(actor_t *self, msg_t *msg)
{
    subscriber_t *st = actor_state(self);
    int ok = (msg->flags & MSG_FLAG_EVENT) && msg->job_cancel.job_id
             && strcmp(msg->job_cancel.job_id, "job-1") == 0;
    s_report(self, (uint64_t)st->index, ok);
}

static const actor_spec_t s_subscriber_spec = {
    .init = s_subscriber_init,
    .handlers = {[MSG_JOB_CANCEL] = s_subscriber_cancel},
};

static int s_publish_cancel(const char *topic)
{
    msg_t *ev = msg_new(MSG_JOB_CANCEL);
    msg_set_str(&ev->job_cancel.job_id, "job-1");
    ev->job_cancel.mode = CANCEL_MODE_IMMEDIATE;
    int n = mailbox_publish(s_test, topic, ev);
    msg_destroy(&ev);
    return n;
}

START_TEST(test_one_event_reaches_all_16_subscribers)
{
    actor_t *subs[16];
    subscriber_t st[16];
    for (int i = 0; i < 16; i++) {
        char name[32];
        snprintf(name, sizeof name, "sub-%d", i);
        st[i].index = i;
        subs[i] = s_start(name, &s_subscriber_spec, &st[i]);
    }
    ck_assert_int_eq(s_publish_cancel("cancel"), 16);
    /* a topic nobody subscribed to reaches nobody */
    ck_assert_int_eq(s_publish_cancel("work"), 0);

    int seen[16] = {0};
    for (int i = 0; i < 16; i++) {
        msg_t *r = fixture_expect(s_test, MSG_PONG);
        ck_assert_uint_lt(r->pong.seq, 16);
        ck_assert_int_eq(r->pong.sent_ns, 1);
        seen[r->pong.seq]++;
        msg_destroy(&r);
    }
    for (int i = 0; i < 16; i++)
        ck_assert_int_eq(seen[i], 1);
    /* exactly once: nothing more arrives */
    msg_t *extra = mailbox_recv(s_test, 100);
    ck_assert_ptr_null(extra);
    for (int i = 0; i < 16; i++)
        actor_destroy(&subs[i]);
}
END_TEST

START_TEST(test_event_right_after_subscriber_start_is_not_missed)
{
    for (int round = 0; round < 300; round++) {
        subscriber_t st = {.index = round};
        actor_t *sub = s_start("late", &s_subscriber_spec, &st);
        ck_assert_int_eq(s_publish_cancel("cancel"), 1);
        msg_t *r = fixture_expect(s_test, MSG_PONG);
        ck_assert_uint_eq(r->pong.seq, (uint64_t)round);
        msg_destroy(&r);
        actor_destroy(&sub);
        /* once stopped, it is no longer a subscriber */
        ck_assert_int_eq(s_publish_cancel("cancel"), 0);
    }
}
END_TEST

/* ---------------------------------------------------- lifecycle */

static atomic_int s_inits, s_finis;

static int s_counted_init(actor_t *self, void *arg)
{
    actor_set_state(self, malloc(4096)); /* LSan sees it if fini leaks it */
    atomic_fetch_add(&s_inits, 1);
    return actor_subscribe(self, "cancel");
}

static void s_counted_fini(actor_t *self)
{
    free(actor_state(self));
    atomic_fetch_add(&s_finis, 1);
}

static void s_counted_cancel(actor_t *self, msg_t *msg) {}

static const actor_spec_t s_counted_spec = {
    .init = s_counted_init,
    .fini = s_counted_fini,
    .handlers = {[MSG_JOB_CANCEL] = s_counted_cancel},
};

START_TEST(test_start_and_stop_50_actors)
{
    actor_t *actors[50];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 50; i++) {
            char name[32];
            snprintf(name, sizeof name, "actor-%d", i);
            actors[i] = s_start(name, &s_counted_spec, NULL);
        }
        ck_assert_int_eq(s_publish_cancel("cancel"), 50);
        for (int i = 0; i < 50; i++) {
            actor_destroy(&actors[i]);
            ck_assert_ptr_null(actors[i]);
        }
        ck_assert_int_eq(s_publish_cancel("cancel"), 0);
    }
    ck_assert_int_eq(atomic_load(&s_inits), 150);
    ck_assert_int_eq(atomic_load(&s_finis), 150);
    /* teardown's zmq_ctx_term returns only if every socket was closed */
}
END_TEST

static int s_failing_init(actor_t *self, void *arg)
{
    actor_fail(self, "no database at %s", (const char *)arg);
    return -1;
}

static const actor_spec_t s_failing_spec = {.init = s_failing_init};

START_TEST(test_failed_start_reports_the_reason)
{
    char err[256] = "";
    actor_t *a = actor_new(fixture_rt, "store", &s_failing_spec, "db-host", err, sizeof err);
    ck_assert_ptr_null(a);
    ck_assert_str_eq(err, "store: no database at db-host");
    /* the name is free again */
    a = s_start("store", &s_echo_spec, NULL);
    actor_destroy(&a);
}
END_TEST

START_TEST(test_duplicate_name_is_refused)
{
    actor_t *a = s_start("twin", &s_echo_spec, NULL);
    char err[256] = "";
    actor_t *b = actor_new(fixture_rt, "twin", &s_echo_spec, NULL, err, sizeof err);
    ck_assert_ptr_null(b);
    ck_assert_msg(strstr(err, "twin") != NULL, "reason was: %s", err);
    ck_assert_int_eq(mailbox_new(fixture_rt, "test") == NULL && errno == EEXIST, 1);
    actor_destroy(&a);
}
END_TEST

START_TEST(test_send_to_stopped_actor_fails_then_reaches_restart)
{
    sink_t sink = {.expect = 1};
    actor_t *a = s_start("phoenix", &s_sink_spec, &sink);
    s_send_ping(s_test, "phoenix", 0);
    msg_destroy((msg_t *[]){fixture_expect(s_test, MSG_PONG)});
    actor_destroy(&a);

    msg_t *ping = msg_new(MSG_PING);
    ck_assert_int_eq(mailbox_send(s_test, "phoenix", ping), -1);
    ck_assert_int_eq(errno, EHOSTUNREACH);

    sink_t again = {.expect = 1};
    a = s_start("phoenix", &s_sink_spec, &again);
    ck_assert_int_eq(mailbox_send(s_test, "phoenix", ping), 0);
    msg_t *r = fixture_expect(s_test, MSG_PONG);
    ck_assert_uint_eq(r->pong.seq, 1);
    msg_destroy(&r);
    msg_destroy(&ping);
    actor_destroy(&a);
}
END_TEST

START_TEST(test_garbage_and_unhandled_messages_are_dropped)
{
    sink_t sink = {.expect = 2};
    actor_t *a = s_start("sturdy", &s_sink_spec, &sink);

    /* raw bytes straight into its inbox, bypassing the codec */
    void *raw = zmq_socket(runtime_zmq(fixture_rt), ZMQ_PUSH);
    ck_assert_int_eq(zmq_connect(raw, "inproc://ij/sturdy"), 0);
    static const char junk[][6] = {"\xdd\xff\xff\xff\xff", "hello", "\x95\x00"};
    for (size_t i = 0; i < 3; i++)
        ck_assert_int_ge(zmq_send(raw, junk[i], strlen(junk[i]) + 1, 0), 0);
    zmq_send(raw, "", 0, 0);

    s_send_ping(s_test, "sturdy", 0);
    msg_t *unhandled = msg_new(MSG_WORK_AVAILABLE); /* sink has no handler */
    ck_assert_int_eq(mailbox_send(s_test, "sturdy", unhandled), 0);
    msg_destroy(&unhandled);
    s_send_ping(s_test, "sturdy", 1);

    msg_t *r = fixture_expect(s_test, MSG_PONG);
    ck_assert_uint_eq(r->pong.seq, 2);
    ck_assert_int_eq(r->pong.sent_ns, 1);
    msg_destroy(&r);
    zmq_close(raw);
    actor_destroy(&a);
}
END_TEST

/* ------------------------------------------- replies to a saved caller */

/* Keeps the caller of a PING and answers it only when told to by a later
 * message: WORK_AVAILABLE answers with a PONG, JOB_CANCEL with an error.
 * It tells the test (a plain message, not a reply) when it has kept one. */
typedef struct {
    actor_caller_t caller;
    int kept;
} keeper_t;

static int s_keeper_init(actor_t *self, void *arg)
{
    actor_set_state(self, arg);
    return 0;
}

static void s_keeper_ping(actor_t *self, msg_t *msg)
{
    keeper_t *st = actor_state(self);
    st->caller = actor_caller(msg);
    st->kept = 1;
    s_report(self, msg->ping.seq, 1);
}

static void s_keeper_answer(actor_t *self, msg_t *msg)
{
    keeper_t *st = actor_state(self);
    msg_t *pong = msg_new(MSG_PONG);
    pong->pong.seq = 77;
    s_report(self, (uint64_t)actor_reply_to(self, &st->caller, pong) + 100, st->kept);
    msg_destroy(&pong);
}

static void s_keeper_fail(actor_t *self, msg_t *msg)
{
    keeper_t *st = actor_state(self);
    s_report(self,
             (uint64_t)actor_reply_error(self, &st->caller, -EAGAIN, "database %s is down", "db-1")
                 + 100,
             st->kept);
}

/* OK: answers a caller that is nobody (a message with no sender). */
static void s_keeper_nobody(actor_t *self, msg_t *msg)
{
    msg_t *anonymous = msg_new(MSG_PING);
    actor_caller_t nobody = actor_caller(anonymous);
    msg_destroy(&anonymous);
    msg_t *pong = msg_new(MSG_PONG);
    int a = actor_reply_to(self, &nobody, pong);
    int b = actor_reply_error(self, &nobody, -EIO, "to nobody");
    msg_destroy(&pong);
    s_report(self, nobody.sender[0] == 0 ? 1 : 0, a == 0 && b == 0);
}

static const actor_spec_t s_keeper_spec = {
    .init = s_keeper_init,
    .handlers = {[MSG_PING] = s_keeper_ping,
                 [MSG_WORK_AVAILABLE] = s_keeper_answer,
                 [MSG_JOB_CANCEL] = s_keeper_fail,
                 [MSG_OK] = s_keeper_nobody},
};

/* Sends a PING request to "keeper" from mb and waits until it kept the
 * caller; returns the request's correlation id. */
static uint64_t s_keep(mailbox_t *mb, uint64_t seq)
{
    msg_t *ping = msg_new(MSG_PING);
    ping->ping.seq = seq;
    ping->corr = mailbox_next_corr(mb);
    uint64_t corr = ping->corr;
    ck_assert_int_eq(mailbox_send(mb, "keeper", ping), 0);
    msg_destroy(&ping);
    msg_t *kept = fixture_expect(s_test, MSG_PONG);
    ck_assert_uint_eq(kept->pong.seq, seq);
    ck_assert_msg(!(kept->flags & MSG_FLAG_REPLY), "answered at once instead of keeping it");
    msg_destroy(&kept);
    return corr;
}

static void s_tell_keeper(msg_type_t type)
{
    msg_t *m = msg_new(type);
    if (type == MSG_JOB_CANCEL)
        msg_set_str(&m->job_cancel.job_id, "job-1");
    ck_assert_int_eq(mailbox_send(s_test, "keeper", m), 0);
    msg_destroy(&m);
}

START_TEST(test_kept_caller_gets_the_reply_later)
{
    keeper_t st = {0};
    actor_t *k = s_start("keeper", &s_keeper_spec, &st);
    uint64_t corr = s_keep(s_test, 5);

    s_tell_keeper(MSG_WORK_AVAILABLE);
    msg_t *reply = fixture_expect(s_test, MSG_PONG);
    ck_assert(reply->flags & MSG_FLAG_REPLY);
    ck_assert_uint_eq(reply->corr, corr);
    ck_assert_uint_eq(reply->pong.seq, 77);
    ck_assert_str_eq(reply->sender, "keeper");
    msg_destroy(&reply);
    msg_t *done = fixture_expect(s_test, MSG_PONG);
    ck_assert_uint_eq(done->pong.seq, 100); /* actor_reply_to returned 0 */
    ck_assert_int_eq(done->pong.sent_ns, 1);
    msg_destroy(&done);
    actor_destroy(&k);
}
END_TEST

START_TEST(test_error_reply_carries_code_and_reason)
{
    keeper_t st = {0};
    actor_t *k = s_start("keeper", &s_keeper_spec, &st);
    uint64_t corr = s_keep(s_test, 6);

    s_tell_keeper(MSG_JOB_CANCEL);
    msg_t *reply = fixture_expect(s_test, MSG_ERROR);
    ck_assert(reply->flags & MSG_FLAG_REPLY);
    ck_assert_uint_eq(reply->corr, corr);
    ck_assert_int_eq(reply->error.code, -EAGAIN);
    ck_assert_str_eq(reply->error.reason, "database db-1 is down");
    msg_destroy(&reply);
    msg_t *done = fixture_expect(s_test, MSG_PONG);
    ck_assert_uint_eq(done->pong.seq, 100);
    msg_destroy(&done);
    actor_destroy(&k);
}
END_TEST

START_TEST(test_reply_to_a_caller_that_stopped_fails)
{
    keeper_t st = {0};
    actor_t *k = s_start("keeper", &s_keeper_spec, &st);
    mailbox_t *gone = mailbox_new(fixture_rt, "gone");
    ck_assert_ptr_nonnull(gone);
    s_keep(gone, 7);
    mailbox_destroy(&gone);

    s_tell_keeper(MSG_WORK_AVAILABLE);
    msg_t *done = fixture_expect(s_test, MSG_PONG);
    ck_assert_uint_eq(done->pong.seq, (uint64_t)-1 + 100); /* actor_reply_to returned -1 */
    msg_destroy(&done);
    actor_destroy(&k);
}
END_TEST

START_TEST(test_empty_caller_sends_nothing)
{
    keeper_t st = {0};
    actor_t *k = s_start("keeper", &s_keeper_spec, &st);
    s_tell_keeper(MSG_OK);
    msg_t *done = fixture_expect(s_test, MSG_PONG);
    ck_assert(!(done->flags & MSG_FLAG_REPLY));
    ck_assert_uint_eq(done->pong.seq, 1);    /* the caller was empty */
    ck_assert_int_eq(done->pong.sent_ns, 1); /* both calls returned 0 */
    msg_destroy(&done);
    /* and nothing else came: the report was the keeper's last message,
     * sent after both replies to nobody */
    msg_t *more = NULL;
    ck_assert_int_eq(mailbox_try_recv(s_test, &more), 0);
    actor_destroy(&k);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("actor");
    TCase *tc = tcase_create("actors");
    tcase_add_checked_fixture(tc, s_setup, fixture_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_100k_messages_arrive_complete_and_in_order);
    tcase_add_test(tc, test_burst_into_slow_receiver_loses_nothing);
    tcase_add_test(tc, test_request_reply_both_directions_no_stall);
    tcase_add_test(tc, test_request_without_reply_times_out);
    tcase_add_test(tc, test_request_to_unknown_actor_fails_at_once);
    tcase_add_test(tc, test_one_event_reaches_all_16_subscribers);
    tcase_add_test(tc, test_event_right_after_subscriber_start_is_not_missed);
    tcase_add_test(tc, test_start_and_stop_50_actors);
    tcase_add_test(tc, test_failed_start_reports_the_reason);
    tcase_add_test(tc, test_duplicate_name_is_refused);
    tcase_add_test(tc, test_send_to_stopped_actor_fails_then_reaches_restart);
    tcase_add_test(tc, test_garbage_and_unhandled_messages_are_dropped);
    suite_add_tcase(s, tc);

    tc = tcase_create("replies");
    tcase_add_checked_fixture(tc, s_setup, fixture_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_kept_caller_gets_the_reply_later);
    tcase_add_test(tc, test_error_reply_carries_code_and_reason);
    tcase_add_test(tc, test_reply_to_a_caller_that_stopped_fails);
    tcase_add_test(tc, test_empty_caller_sends_nothing);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
