/*
 * check_backoff.c - runtime/backoff.h: the delays double from `first`,
 * reach `max` and never exceed it; jitter stays within [0.75, 1.25) of the
 * delay and under max; a reset starts again from `first`.
 */
#include "config.h"

#include "runtime/backoff.h"
#include "tests/runner.h"

#include <check.h>
#include <stdlib.h>

START_TEST(test_doubles_up_to_max_and_stays_there)
{
    /* the defect this header fixed: doubling "while below 5" from 0.2
     * waited 0.2, 0.4, 0.8, 1.6, 3.2 and then 6.4 */
    static const double want[] = {0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0};
    backoff_t b;
    backoff_init(&b, 0.2, 5.0, 0);
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        ck_assert_double_eq_tol(backoff_next(&b), want[i], 1e-12);
}
END_TEST

START_TEST(test_never_exceeds_max_and_reaches_it)
{
    static const double firsts[] = {0.001, 0.1, 0.2, 0.3, 1.0, 2.5, 4.9, 5.0};
    for (size_t f = 0; f < sizeof firsts / sizeof *firsts; f++) {
        backoff_t b;
        backoff_init(&b, firsts[f], 5.0, 0);
        double prev = 0;
        int reached = 0;
        for (int i = 0; i < 100; i++) {
            double d = backoff_next(&b);
            ck_assert_msg(d <= 5.0, "first %g: delay %d is %g > max", firsts[f], i, d);
            ck_assert_msg(d >= prev, "first %g: delay %d shrank to %g", firsts[f], i, d);
            reached |= d == 5.0;
            prev = d;
        }
        ck_assert_msg(reached, "first %g: the delay never reached max", firsts[f]);
    }
}
END_TEST

START_TEST(test_first_above_max_waits_max)
{
    backoff_t b;
    backoff_init(&b, 10.0, 5.0, 0);
    ck_assert_double_eq(backoff_next(&b), 5.0);
    ck_assert_double_eq(backoff_next(&b), 5.0);
    backoff_reset(&b);
    ck_assert_double_eq(backoff_next(&b), 5.0);
}
END_TEST

START_TEST(test_reset_starts_from_first)
{
    backoff_t b;
    backoff_init(&b, 0.1, 5.0, 0);
    for (int i = 0; i < 10; i++)
        backoff_next(&b);
    ck_assert_double_eq(backoff_next(&b), 5.0);
    backoff_reset(&b);
    ck_assert_double_eq_tol(backoff_next(&b), 0.1, 1e-12);
    ck_assert_double_eq_tol(backoff_next(&b), 0.2, 1e-12);
}
END_TEST

START_TEST(test_jitter_within_a_quarter_and_under_max)
{
    int varied = 0;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        backoff_t plain, jittered;
        backoff_init(&plain, 0.2, 5.0, 0);
        backoff_init(&jittered, 0.2, 5.0, seed * 0x9e3779b97f4a7c15ull);
        double first_factor = 0;
        for (int i = 0; i < 12; i++) {
            double nominal = backoff_next(&plain), d = backoff_next(&jittered);
            ck_assert_msg(d >= 0.75 * nominal && d < 1.25 * nominal,
                          "seed %llu: delay %d is %g, nominal %g", (unsigned long long)seed, i, d,
                          nominal);
            ck_assert_msg(d <= 5.0, "seed %llu: delay %d is %g > max", (unsigned long long)seed, i,
                          d);
            if (i == 0)
                first_factor = d / nominal;
            else if (nominal < 5.0 && d / nominal != first_factor)
                varied = 1;
        }
    }
    /* jitter that is always the same factor spreads nothing */
    ck_assert(varied);
}
END_TEST

START_TEST(test_jitter_spreads_instances)
{
    /* two instances that lost the same server retry at different moments */
    backoff_t a, b;
    backoff_init(&a, 1.0, 60.0, 12345);
    backoff_init(&b, 1.0, 60.0, 67890);
    int differ = 0;
    for (int i = 0; i < 5; i++)
        differ += backoff_next(&a) != backoff_next(&b);
    ck_assert_int_gt(differ, 0);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("backoff");
    TCase *tc = tcase_create("backoff");
    tcase_add_test(tc, test_doubles_up_to_max_and_stays_there);
    tcase_add_test(tc, test_never_exceeds_max_and_reaches_it);
    tcase_add_test(tc, test_first_above_max_waits_max);
    tcase_add_test(tc, test_reset_starts_from_first);
    tcase_add_test(tc, test_jitter_within_a_quarter_and_under_max);
    tcase_add_test(tc, test_jitter_spreads_instances);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
