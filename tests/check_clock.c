/*
 * check_clock.c - runtime/clock.h: the wall clock reads the Unix epoch in
 * microseconds, the monotonic clock never goes back, and its units agree.
 * Each reading is bracketed by the system's own clocks: nothing here
 * depends on how fast the machine is.
 */
#include "config.h"

#include "runtime/clock.h"
#include "tests/runner.h"

#include <check.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static int64_t s_sys_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

START_TEST(test_wall_clock_is_epoch_microseconds)
{
    int64_t before = s_sys_ns(CLOCK_REALTIME) / 1000;
    int64_t us = clock_wall_us();
    int64_t after = s_sys_ns(CLOCK_REALTIME) / 1000;
    /* a jump of the wall clock between the readings could break the
     * bracket; it would have to happen within these few instructions */
    ck_assert_int_ge(us, before);
    ck_assert_int_le(us, after);
    /* microseconds, not milliseconds or nanoseconds: after 2020, before 2100 */
    ck_assert_int_gt(us, 1577836800LL * 1000000);
    ck_assert_int_lt(us, 4102444800LL * 1000000);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    ck_assert_int_le(us / 1000000, (int64_t)tv.tv_sec);
}
END_TEST

START_TEST(test_monotonic_never_goes_back)
{
    int64_t prev = clock_mono_ns();
    for (int i = 0; i < 100000; i++) {
        int64_t now = clock_mono_ns();
        ck_assert_int_ge(now, prev);
        prev = now;
    }
}
END_TEST

START_TEST(test_monotonic_units_agree)
{
    int64_t a = s_sys_ns(CLOCK_MONOTONIC);
    int64_t ns = clock_mono_ns();
    double ms = clock_mono_ms();
    int64_t b = s_sys_ns(CLOCK_MONOTONIC);
    ck_assert_int_ge(ns, a);
    ck_assert_int_le(ns, b);
    /* the same clock, in milliseconds (a double carries ns to < 1 us here) */
    ck_assert_double_ge(ms, (double)a / 1e6 - 1e-3);
    ck_assert_double_le(ms, (double)b / 1e6 + 1e-3);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("clock");
    TCase *tc = tcase_create("clock");
    tcase_add_test(tc, test_wall_clock_is_epoch_microseconds);
    tcase_add_test(tc, test_monotonic_never_goes_back);
    tcase_add_test(tc, test_monotonic_units_agree);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
