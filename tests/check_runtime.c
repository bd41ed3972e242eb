/*
 * check_runtime.c - runtime/runtime.c itself: the directory of names (a
 * registration id per life of a name, the epoch that tells senders a name
 * was released), bus subscriptions matched by prefix, and SIGINT, SIGTERM
 * and runtime_request_stop turned into runtime_wait_signal's return.
 *
 * Every test builds its runtime inside the test (after Check's fork), so
 * the signals it sends itself reach only its own process.
 */
#include "config.h"

#include "messages/message.h"
#include "runtime/runtime.h"
#include "tests/fixture.h"
#include "tests/runner.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

START_TEST(test_new_and_destroy)
{
    runtime_t *rt = runtime_new();
    ck_assert_ptr_nonnull(rt);
    ck_assert_ptr_nonnull(runtime_zmq(rt));
    runtime_destroy(&rt);
    ck_assert_ptr_null(rt);
    runtime_destroy(&rt); /* NULL: nothing to do */
}
END_TEST

START_TEST(test_names_register_once_with_fresh_ids)
{
    runtime_t *rt = fixture_rt;
    uint64_t id1 = 0, id2 = 0, id3 = 0;
    ck_assert_int_eq(runtime_lookup(rt, "store", NULL), 0);
    ck_assert_int_eq(runtime_register(rt, "store"), 0);
    ck_assert_int_eq(runtime_lookup(rt, "store", &id1), 1);
    ck_assert_uint_ne(id1, 0);

    errno = 0;
    ck_assert_int_eq(runtime_register(rt, "store"), -1);
    ck_assert_int_eq(errno, EEXIST);
    ck_assert_int_eq(runtime_register(rt, "redis"), 0);
    ck_assert_int_eq(runtime_lookup(rt, "redis", &id2), 1);
    ck_assert_uint_ne(id2, id1);

    /* a name released and taken again is a new registration */
    runtime_unregister(rt, "store");
    ck_assert_int_eq(runtime_lookup(rt, "store", NULL), 0);
    ck_assert_int_eq(runtime_register(rt, "store"), 0);
    ck_assert_int_eq(runtime_lookup(rt, "store", &id3), 1);
    ck_assert_uint_ne(id3, id1);
    ck_assert_uint_ne(id3, id2);
    runtime_unregister(rt, "store");
    runtime_unregister(rt, "redis");
    runtime_unregister(rt, "never-there"); /* nothing to do */
}
END_TEST

START_TEST(test_bad_names_are_refused)
{
    char longname[MSG_NAME_MAX + 8];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    errno = 0;
    ck_assert_int_eq(runtime_register(fixture_rt, longname), -1);
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_int_eq(runtime_register(fixture_rt, ""), -1);
    ck_assert_int_eq(errno, EINVAL);
    longname[MSG_NAME_MAX - 1] = 0; /* the longest that fits */
    ck_assert_int_eq(runtime_register(fixture_rt, longname), 0);
    runtime_unregister(fixture_rt, longname);
}
END_TEST

START_TEST(test_epoch_changes_when_a_name_is_released)
{
    runtime_t *rt = fixture_rt;
    uint64_t e0 = runtime_epoch(rt);
    ck_assert_int_eq(runtime_register(rt, "a"), 0);
    ck_assert_int_eq(runtime_subscribe(rt, "a", "cancel"), 0);
    ck_assert_uint_eq(runtime_epoch(rt), e0); /* registering and subscribing do not */
    runtime_unregister(rt, "a");
    uint64_t e1 = runtime_epoch(rt);
    ck_assert_uint_ne(e1, e0);
    runtime_unregister(rt, "a"); /* not registered: no change */
    ck_assert_uint_eq(runtime_epoch(rt), e1);
}
END_TEST

START_TEST(test_subscribers_match_by_prefix)
{
    runtime_t *rt = fixture_rt;
    static const char *const names[] = {"all", "jobs", "one", "work"};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(runtime_register(rt, names[i]), 0);
    ck_assert_int_eq(runtime_subscribe(rt, "all", ""), 0); /* every topic */
    ck_assert_int_eq(runtime_subscribe(rt, "jobs", "cancel"), 0);
    ck_assert_int_eq(runtime_subscribe(rt, "jobs", "cancel.job"), 0); /* counted once */
    ck_assert_int_eq(runtime_subscribe(rt, "one", "cancel.job-1"), 0);
    ck_assert_int_eq(runtime_subscribe(rt, "work", "work"), 0);
    errno = 0;
    ck_assert_int_eq(runtime_subscribe(rt, "nobody", "cancel"), -1);
    ck_assert_int_eq(errno, ENOENT);

    char got[8][MSG_NAME_MAX];
    size_t n = runtime_subscribers(rt, "cancel.job-1", got, 8);
    ck_assert_uint_eq(n, 3);
    int seen_all = 0, seen_jobs = 0, seen_one = 0;
    for (size_t i = 0; i < n; i++) {
        seen_all += !strcmp(got[i], "all");
        seen_jobs += !strcmp(got[i], "jobs");
        seen_one += !strcmp(got[i], "one");
    }
    ck_assert(seen_all == 1 && seen_jobs == 1 && seen_one == 1);
    ck_assert_uint_eq(runtime_subscribers(rt, "cancel.job-2", got, 8), 2);
    ck_assert_uint_eq(runtime_subscribers(rt, "work", got, 8), 2);
    ck_assert_uint_eq(runtime_subscribers(rt, "canc", got, 8), 1); /* only "" */

    /* more subscribers than room: the count says how many there are */
    ck_assert_uint_eq(runtime_subscribers(rt, "cancel", got, 1), 2);
    ck_assert_uint_eq(runtime_subscribers(rt, "cancel", NULL, 0), 2);

    /* released names take their subscriptions with them */
    runtime_unregister(rt, "jobs");
    ck_assert_uint_eq(runtime_subscribers(rt, "cancel.job-1", got, 8), 2);
    ck_assert_int_eq(runtime_register(rt, "jobs"), 0);
    ck_assert_uint_eq(runtime_subscribers(rt, "cancel.job-1", got, 8), 2);
    for (int i = 0; i < 4; i++)
        runtime_unregister(rt, names[i]);
}
END_TEST

static void *s_stopper(void *arg)
{
    runtime_request_stop(arg);
    return NULL;
}

START_TEST(test_request_stop_from_another_thread)
{
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, s_stopper, fixture_rt), 0);
    ck_assert_int_eq(runtime_wait_signal(fixture_rt), SIGTERM);
    pthread_join(t, NULL);
}
END_TEST

START_TEST(test_sigint_and_sigterm_are_taken_by_wait_signal)
{
    /* blocked since runtime_new: pending until wait_signal takes them, not
     * the default action (which would end this process) */
    ck_assert_int_eq(kill(getpid(), SIGINT), 0);
    ck_assert_int_eq(runtime_wait_signal(fixture_rt), SIGINT);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    ck_assert_int_eq(runtime_wait_signal(fixture_rt), SIGTERM);
    sigset_t blocked;
    pthread_sigmask(SIG_BLOCK, NULL, &blocked);
    ck_assert(sigismember(&blocked, SIGINT) && sigismember(&blocked, SIGTERM));
}
END_TEST

static void *s_mask_of_thread(void *arg)
{
    pthread_sigmask(SIG_BLOCK, NULL, arg);
    return NULL;
}

START_TEST(test_threads_started_after_new_inherit_the_mask)
{
    pthread_t t;
    sigset_t seen;
    sigemptyset(&seen);
    ck_assert_int_eq(pthread_create(&t, NULL, s_mask_of_thread, &seen), 0);
    pthread_join(t, NULL);
    ck_assert(sigismember(&seen, SIGINT) && sigismember(&seen, SIGTERM));
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("runtime");
    TCase *tc = tcase_create("runtime");
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_new_and_destroy);
    tcase_add_test(tc, test_names_register_once_with_fresh_ids);
    tcase_add_test(tc, test_bad_names_are_refused);
    tcase_add_test(tc, test_epoch_changes_when_a_name_is_released);
    tcase_add_test(tc, test_subscribers_match_by_prefix);
    tcase_add_test(tc, test_request_stop_from_another_thread);
    tcase_add_test(tc, test_sigint_and_sigterm_are_taken_by_wait_signal);
    tcase_add_test(tc, test_threads_started_after_new_inherit_the_mask);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
