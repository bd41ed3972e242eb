/*
 * check_mailbox.c - runtime/mailbox.c, from mailboxes on the test thread
 * alone (no actor, no loop): delivery in order with sender and correlation
 * id, names that are unknown, taken or released, the bus's fan-out by
 * topic prefix, and malformed input dropped.
 *
 * Every test builds its runtime inside the test (after Check's fork).
 */
#include "config.h"

#include "runtime/mailbox.h"
#include "runtime/runtime.h"
#include "tests/fixture.h"
#include "tests/runner.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static void s_send_ping(mailbox_t *from, const char *to, uint64_t seq)
{
    msg_t *msg = msg_new(MSG_PING);
    msg->ping.seq = seq;
    msg->corr = seq + 1000;
    ck_assert_int_eq(mailbox_send(from, to, msg), 0);
    ck_assert_str_eq(msg->sender, mailbox_name(from));
    msg_destroy(&msg);
}

static msg_t *s_cancel_event(const char *job_id)
{
    msg_t *ev = msg_new(MSG_JOB_CANCEL);
    msg_set_str(&ev->job_cancel.job_id, job_id);
    ev->job_cancel.mode = CANCEL_MODE_IMMEDIATE;
    return ev;
}

/* Waits until mb's inbox is readable (something arrived, well-formed or not). */
static void s_wait_readable(mailbox_t *mb)
{
    zmq_pollitem_t item = {mailbox_inbox(mb), 0, ZMQ_POLLIN, 0};
    ck_assert_int_eq(zmq_poll(&item, 1, FIXTURE_WAIT_MS), 1);
}

START_TEST(test_messages_arrive_in_order_with_sender_and_corr)
{
    mailbox_t *a = fixture_mailbox("a", NULL), *b = fixture_mailbox("b", NULL);
    ck_assert_str_eq(mailbox_name(a), "a");
    ck_assert_ptr_eq(mailbox_runtime(a), fixture_rt);
    for (uint64_t i = 0; i < 20000; i++)
        s_send_ping(a, "b", i);
    for (uint64_t i = 0; i < 20000; i++) {
        msg_t *m = fixture_expect(b, MSG_PING);
        ck_assert_uint_eq(m->ping.seq, i);
        ck_assert_uint_eq(m->corr, i + 1000);
        ck_assert_str_eq(m->sender, "a");
        ck_assert(!(m->flags & MSG_FLAG_EVENT));
        msg_destroy(&m);
    }
    /* a mailbox may send to itself */
    s_send_ping(b, "b", 7);
    msg_t *m = fixture_expect(b, MSG_PING);
    ck_assert_str_eq(m->sender, "b");
    msg_destroy(&m);
    msg_t *none = NULL;
    ck_assert_int_eq(mailbox_try_recv(b, &none), 0);
    ck_assert_ptr_null(none);
    ck_assert_ptr_null(mailbox_recv(b, 0));
}
END_TEST

START_TEST(test_names_unknown_taken_and_released)
{
    mailbox_t *a = fixture_mailbox("a", NULL);
    msg_t *ping = msg_new(MSG_PING);
    ck_assert_int_eq(mailbox_send(a, "nobody", ping), -1);
    ck_assert_int_eq(errno, EHOSTUNREACH);

    errno = 0;
    ck_assert_ptr_null(mailbox_new(fixture_rt, "a"));
    ck_assert_int_eq(errno, EEXIST);

    /* a name that is released can be sent to no more; taken again, it
     * reaches the new mailbox (the sender's cached socket is not reused) */
    mailbox_t *b = mailbox_new(fixture_rt, "b");
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(mailbox_send(a, "b", ping), 0);
    msg_destroy((msg_t *[]){fixture_expect(b, MSG_PING)});
    mailbox_destroy(&b);
    ck_assert_ptr_null(b);
    ck_assert_int_eq(mailbox_send(a, "b", ping), -1);
    ck_assert_int_eq(errno, EHOSTUNREACH);
    mailbox_t *b2 = fixture_mailbox("b", NULL);
    ping->ping.seq = 42;
    ck_assert_int_eq(mailbox_send(a, "b", ping), 0);
    msg_t *m = fixture_expect(b2, MSG_PING);
    ck_assert_uint_eq(m->ping.seq, 42);
    msg_destroy(&m);
    msg_destroy(&ping);
}
END_TEST

START_TEST(test_bad_names_are_refused)
{
    char longname[64];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    errno = 0;
    ck_assert_ptr_null(mailbox_new(fixture_rt, longname));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(mailbox_new(fixture_rt, ""));
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(test_correlation_ids_unique_never_zero)
{
    mailbox_t *a = fixture_mailbox("a", NULL);
    uint64_t prev = 0;
    for (int i = 0; i < 100000; i++) {
        uint64_t c = mailbox_next_corr(a);
        ck_assert_uint_ne(c, 0);
        ck_assert_uint_ne(c, prev);
        prev = c;
    }
}
END_TEST

START_TEST(test_publish_reaches_every_subscriber_of_the_prefix)
{
    mailbox_t *pub = fixture_mailbox("pub", NULL);
    mailbox_t *all = fixture_mailbox("all", "cancel");
    mailbox_t *narrow = fixture_mailbox("narrow", "cancel.job-1");
    mailbox_t *other = fixture_mailbox("other", "work");

    msg_t *ev = s_cancel_event("job-1");
    ck_assert_int_eq(mailbox_publish(pub, "cancel.job-1", ev), 2);
    ck_assert(ev->flags & MSG_FLAG_EVENT);
    ck_assert_int_eq(mailbox_publish(pub, "cancel.job-2", ev), 1);
    ck_assert_int_eq(mailbox_publish(pub, "nothing", ev), 0);
    msg_destroy(&ev);

    for (int i = 0; i < 2; i++) {
        msg_t *m = fixture_expect(all, MSG_JOB_CANCEL);
        ck_assert(m->flags & MSG_FLAG_EVENT);
        ck_assert_str_eq(m->sender, "pub");
        ck_assert_str_eq(m->job_cancel.job_id, "job-1");
        msg_destroy(&m);
    }
    msg_destroy((msg_t *[]){fixture_expect(narrow, MSG_JOB_CANCEL)});
    /* exactly once each: what was published is all there */
    ck_assert_ptr_null(mailbox_recv(all, 0));
    ck_assert_ptr_null(mailbox_recv(narrow, 0));
    ck_assert_ptr_null(mailbox_recv(other, 0));
    ck_assert_ptr_null(mailbox_recv(pub, 0));
}
END_TEST

START_TEST(test_publisher_that_subscribed_gets_its_own_event)
{
    mailbox_t *self = fixture_mailbox("self", "cancel");
    msg_t *ev = s_cancel_event("job-9");
    ck_assert_int_eq(mailbox_publish(self, "cancel", ev), 1);
    msg_destroy(&ev);
    msg_t *m = fixture_expect(self, MSG_JOB_CANCEL);
    ck_assert_str_eq(m->job_cancel.job_id, "job-9");
    msg_destroy(&m);
}
END_TEST

START_TEST(test_fan_out_to_more_subscribers_than_fit_the_stack)
{
    /* mailbox_publish reads up to 32 names on its stack, then asks again */
    enum { N = 40 };
    mailbox_t *pub = mailbox_new(fixture_rt, "pub");
    mailbox_t *subs[N];
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "sub-%d", i);
        subs[i] = mailbox_new(fixture_rt, name);
        ck_assert_ptr_nonnull(subs[i]);
        ck_assert_int_eq(mailbox_subscribe(subs[i], "cancel"), 0);
    }
    msg_t *ev = s_cancel_event("job-1");
    ck_assert_int_eq(mailbox_publish(pub, "cancel", ev), N);
    msg_destroy(&ev);
    for (int i = 0; i < N; i++) {
        msg_destroy((msg_t *[]){fixture_expect(subs[i], MSG_JOB_CANCEL)});
        mailbox_destroy(&subs[i]);
    }
    /* destroyed mailboxes are subscribers no more */
    ev = s_cancel_event("job-2");
    ck_assert_int_eq(mailbox_publish(pub, "cancel", ev), 0);
    msg_destroy(&ev);
    mailbox_destroy(&pub);
}
END_TEST

START_TEST(test_malformed_input_is_dropped_and_the_next_message_read)
{
    mailbox_t *a = fixture_mailbox("a", NULL), *b = fixture_mailbox("b", NULL);
    void *raw = zmq_socket(runtime_zmq(fixture_rt), ZMQ_PUSH);
    ck_assert_int_eq(zmq_connect(raw, "inproc://ij/b"), 0);
    ck_assert_int_eq(zmq_send(raw, "\x95\x00", 2, 0), 2);
    s_wait_readable(b);
    msg_t *m = NULL;
    ck_assert_int_eq(mailbox_try_recv(b, &m), -1); /* taken and dropped */
    ck_assert_ptr_null(m);

    ck_assert_int_eq(zmq_send(raw, "hello", 5, 0), 5);
    ck_assert_int_eq(zmq_send(raw, "", 0, 0), 0);
    s_send_ping(a, "b", 3);
    m = fixture_expect(b, MSG_PING); /* mailbox_recv skips what it drops */
    ck_assert_uint_eq(m->ping.seq, 3);
    msg_destroy(&m);
    zmq_close(raw);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("mailbox");
    TCase *tc = tcase_create("mailbox");
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_messages_arrive_in_order_with_sender_and_corr);
    tcase_add_test(tc, test_names_unknown_taken_and_released);
    tcase_add_test(tc, test_bad_names_are_refused);
    tcase_add_test(tc, test_correlation_ids_unique_never_zero);
    tcase_add_test(tc, test_publish_reaches_every_subscriber_of_the_prefix);
    tcase_add_test(tc, test_publisher_that_subscribed_gets_its_own_event);
    tcase_add_test(tc, test_fan_out_to_more_subscribers_than_fit_the_stack);
    tcase_add_test(tc, test_malformed_input_is_dropped_and_the_next_message_read);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
