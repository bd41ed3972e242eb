/*
 * check_zwatch.c - runtime/zwatch.c, the one libev watcher on ZMQ_FD, on a
 * loop of the test's own (no actor, no mailbox): many messages, bursts,
 * both directions and a writer that waits for room, none of them stalling.
 *
 * ZMQ_FD is edge-triggered: a watcher that read it as level-triggered, or
 * took a bounded batch and waited on the fd for the rest, would hang here
 * with messages still queued. Each test's loop has a watchdog timer that
 * ends it after WATCHDOG_S, so a stall fails the test instead of hanging
 * it; nothing asserts how fast anything is.
 */
#include "config.h"

#include "runtime/zwatch.h"
#include "tests/runner.h"

#include <check.h>
#include <ev.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define WATCHDOG_S 60.0
#define ENDPOINT "inproc://check-zwatch"

static void *s_ctx;

static void s_setup(void)
{
    s_ctx = zmq_ctx_new();
    ck_assert_ptr_nonnull(s_ctx);
}

static void s_teardown(void)
{
    zmq_ctx_term(s_ctx);
}

static void *s_socket(int type)
{
    void *s = zmq_socket(s_ctx, type);
    ck_assert_ptr_nonnull(s);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    return s;
}

/* The state of one test's loop. */
typedef struct {
    zwatch_t w;
    ev_timer watchdog;
    uint64_t expect, next; /* messages to receive; next sequence number */
    uint64_t sent;         /* messages sent from the loop */
    int in_order, timed_out, stale_calls;
    unsigned batch;  /* at most this many per callback (0: all there is) */
    uint64_t window; /* ping-pong: requests kept in flight */
} run_t;

static void s_watchdog(struct ev_loop *loop, ev_timer *t, int revents)
{
    run_t *r = t->data;
    r->timed_out = 1;
    ev_break(loop, EVBREAK_ALL);
}

/* Runs the loop until the test's callback breaks it or the watchdog fires. */
static void s_run(struct ev_loop *loop, run_t *r)
{
    ev_timer_init(&r->watchdog, s_watchdog, WATCHDOG_S, 0);
    r->watchdog.data = r;
    ev_timer_start(loop, &r->watchdog);
    zwatch_start(loop, &r->w);
    ev_run(loop, 0);
    zwatch_stop(loop, &r->w);
    ev_timer_stop(loop, &r->watchdog);
    ck_assert_msg(!r->timed_out, "stalled: %llu of %llu messages after %.0f s",
                  (unsigned long long)r->next, (unsigned long long)r->expect, WATCHDOG_S);
}

/* Reads up to r->batch messages (all there are when 0) and checks their
 * order; a callback that finds nothing counts as stale. */
static void s_read_cb(struct ev_loop *loop, zwatch_t *w, int revents)
{
    run_t *r = w->data;
    ck_assert(revents & EV_READ);
    unsigned got = 0;
    while (r->batch == 0 || got < r->batch) {
        uint64_t seq;
        int n = zmq_recv(w->socket, &seq, sizeof seq, ZMQ_DONTWAIT);
        if (n < 0) {
            /* EAGAIN re-armed ZMQ_FD: the watcher may skip one check */
            zwatch_drained(w);
            break;
        }
        got++;
        if (n != sizeof seq || seq != r->next)
            r->in_order = 0;
        if (++r->next == r->expect) {
            ev_break(loop, EVBREAK_ALL);
            return;
        }
    }
    if (got == 0)
        r->stale_calls++;
}

/* ------------------------------------------------------- a sending thread */

typedef struct {
    void *socket;
    uint64_t count;
    int echo; /* 1: receive one, send it back, count times */
} peer_t;

static void *s_peer_thread(void *arg)
{
    peer_t *p = arg;
    for (uint64_t i = 0; i < p->count; i++) {
        uint64_t seq = i;
        if (p->echo && zmq_recv(p->socket, &seq, sizeof seq, 0) != sizeof seq)
            break;
        if (zmq_send(p->socket, &seq, sizeof seq, 0) != sizeof seq)
            break;
    }
    return NULL;
}

static void s_many_messages(unsigned batch)
{
    void *rx = s_socket(ZMQ_PAIR), *tx = s_socket(ZMQ_PAIR);
    ck_assert_int_eq(zmq_bind(rx, ENDPOINT), 0);
    ck_assert_int_eq(zmq_connect(tx, ENDPOINT), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    run_t r = {.expect = 100000, .in_order = 1, .batch = batch};
    ck_assert_int_eq(zwatch_init(&r.w, s_read_cb, rx, EV_READ), 0);
    r.w.data = &r;
    peer_t peer = {.socket = tx, .count = r.expect};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, s_peer_thread, &peer), 0);
    s_run(loop, &r);
    pthread_join(t, NULL);
    ck_assert_uint_eq(r.next, r.expect);
    ck_assert(r.in_order);
    ev_loop_destroy(loop);
    zmq_close(tx);
    zmq_close(rx);
}

START_TEST(test_100k_messages_arrive_in_order)
{
    s_many_messages(0);
}
END_TEST

START_TEST(test_bounded_batches_never_stall)
{
    /* the callback returns with messages still queued: the watcher must
     * come back for them although ZMQ_FD will not signal again */
    s_many_messages(7);
}
END_TEST

START_TEST(test_burst_queued_before_the_loop_starts)
{
    void *rx = s_socket(ZMQ_PULL), *tx = s_socket(ZMQ_PUSH);
    ck_assert_int_eq(zmq_bind(rx, ENDPOINT), 0);
    ck_assert_int_eq(zmq_connect(tx, ENDPOINT), 0);
    run_t r = {.expect = 50000, .in_order = 1, .batch = 100};
    for (uint64_t i = 0; i < r.expect; i++)
        ck_assert_int_eq(zmq_send(tx, &i, sizeof i, 0), (int)sizeof i);
    /* the edge happened long before anyone watched the fd */
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_int_eq(zwatch_init(&r.w, s_read_cb, rx, EV_READ), 0);
    r.w.data = &r;
    s_run(loop, &r);
    ck_assert_uint_eq(r.next, r.expect);
    ck_assert(r.in_order);
    ev_loop_destroy(loop);
    zmq_close(tx);
    zmq_close(rx);
}
END_TEST

/* Ping-pong with a window in flight: every send from the callback may eat
 * the edge that announced the next reply. */
static void s_pingpong_cb(struct ev_loop *loop, zwatch_t *w, int revents)
{
    run_t *r = w->data;
    for (;;) {
        uint64_t seq;
        int n = zmq_recv(w->socket, &seq, sizeof seq, ZMQ_DONTWAIT);
        if (n < 0)
            break;
        if (n != sizeof seq || seq != r->next)
            r->in_order = 0;
        if (++r->next == r->expect) {
            ev_break(loop, EVBREAK_ALL);
            return;
        }
        if (r->sent < r->expect) {
            ck_assert_int_eq(zmq_send(w->socket, &r->sent, sizeof r->sent, 0), (int)sizeof r->sent);
            r->sent++;
        }
    }
}

START_TEST(test_both_directions_no_stall)
{
    void *local = s_socket(ZMQ_PAIR), *remote = s_socket(ZMQ_PAIR);
    ck_assert_int_eq(zmq_bind(local, ENDPOINT), 0);
    ck_assert_int_eq(zmq_connect(remote, ENDPOINT), 0);
    run_t r = {.expect = 50000, .in_order = 1, .window = 200};
    peer_t echo = {.socket = remote, .count = r.expect, .echo = 1};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, s_peer_thread, &echo), 0);
    for (; r.sent < r.window; r.sent++)
        ck_assert_int_eq(zmq_send(local, &r.sent, sizeof r.sent, 0), (int)sizeof r.sent);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_int_eq(zwatch_init(&r.w, s_pingpong_cb, local, EV_READ), 0);
    r.w.data = &r;
    s_run(loop, &r);
    pthread_join(t, NULL);
    ck_assert_uint_eq(r.next, r.expect);
    ck_assert(r.in_order);
    ev_loop_destroy(loop);
    zmq_close(remote);
    zmq_close(local);
}
END_TEST

/* A writer: sends while there is room, then waits for EV_WRITE. */
static void s_write_cb(struct ev_loop *loop, zwatch_t *w, int revents)
{
    run_t *r = w->data;
    ck_assert(revents & EV_WRITE);
    while (r->sent < r->expect) {
        if (zmq_send(w->socket, &r->sent, sizeof r->sent, ZMQ_DONTWAIT) < 0)
            return; /* full: the watcher calls again when there is room */
        r->sent++;
    }
    ev_break(loop, EVBREAK_ALL);
}

typedef struct {
    void *socket;
    uint64_t count, got;
    int in_order;
} reader_t;

static void *s_reader_thread(void *arg)
{
    reader_t *rd = arg;
    for (; rd->got < rd->count; rd->got++) {
        uint64_t seq;
        if (zmq_recv(rd->socket, &seq, sizeof seq, 0) != sizeof seq)
            break;
        if (seq != rd->got)
            rd->in_order = 0;
    }
    return NULL;
}

START_TEST(test_writer_waits_for_room_and_finishes)
{
    void *tx = zmq_socket(s_ctx, ZMQ_PUSH), *rx = zmq_socket(s_ctx, ZMQ_PULL);
    int hwm = 16, zero = 0;
    /* small queues: the writer runs out of room many times */
    zmq_setsockopt(tx, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(rx, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(tx, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(rx, ZMQ_LINGER, &zero, sizeof zero);
    ck_assert_int_eq(zmq_bind(rx, ENDPOINT), 0);
    ck_assert_int_eq(zmq_connect(tx, ENDPOINT), 0);
    run_t r = {.expect = 20000};
    reader_t rd = {.socket = rx, .count = r.expect, .in_order = 1};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, s_reader_thread, &rd), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_int_eq(zwatch_init(&r.w, s_write_cb, tx, EV_WRITE), 0);
    r.w.data = &r;
    s_run(loop, &r);
    pthread_join(t, NULL);
    ck_assert_uint_eq(r.sent, r.expect);
    ck_assert_uint_eq(rd.got, r.expect);
    ck_assert(rd.in_order);
    ev_loop_destroy(loop);
    zmq_close(tx);
    zmq_close(rx);
}
END_TEST

START_TEST(test_init_refuses_what_is_not_a_socket)
{
    zwatch_t w;
    ck_assert_int_eq(zwatch_init(&w, s_read_cb, NULL, EV_READ), -1);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("zwatch");
    TCase *tc = tcase_create("zwatch");
    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_100k_messages_arrive_in_order);
    tcase_add_test(tc, test_bounded_batches_never_stall);
    tcase_add_test(tc, test_burst_queued_before_the_loop_starts);
    tcase_add_test(tc, test_both_directions_no_stall);
    tcase_add_test(tc, test_writer_waits_for_room_and_finishes);
    tcase_add_test(tc, test_init_refuses_what_is_not_a_socket);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
