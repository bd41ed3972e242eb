/*
 * check_offload.c - runtime/offload: work runs on the helper thread while
 * the owner's loop keeps turning, results come back on the loop's thread,
 * in order, exactly once; destroy hands back what never ran.
 */
#include "config.h"

#include "runtime/offload.h"

#include "tests/runner.h"

#include <check.h>
#include <ev.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>

typedef struct {
    int seq;
    pthread_t worked_on;
    sem_t *started; /* the work posts it first, when set */
    sem_t *release; /* then waits for it, when set */
} job_t;

typedef struct {
    struct ev_loop *loop;
    pthread_t loop_thread;
    int done, ran, expected;
    int order_ok;
    int next_seq;
    sem_t release, started;
    ev_timer release_timer;
} state_t;

static void s_work(void *data)
{
    job_t *j = data;
    j->worked_on = pthread_self();
    if (j->started)
        sem_post(j->started);
    if (j->release)
        sem_wait(j->release);
}

static void s_done(void *data, int ran, void *arg)
{
    job_t *j = data;
    state_t *st = arg;
    ck_assert(pthread_equal(pthread_self(), st->loop_thread));
    if (ran)
        ck_assert(!pthread_equal(j->worked_on, st->loop_thread));
    if (j->seq != st->next_seq++)
        st->order_ok = 0;
    st->done++;
    st->ran += ran;
    free(j);
    if (st->done == st->expected)
        ev_break(st->loop, EVBREAK_ALL);
}

static void s_release_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    state_t *st = w->data;
    sem_post(&st->release);
}

static void s_init(state_t *st, int expected)
{
    st->loop = ev_loop_new(EVFLAG_AUTO);
    st->loop_thread = pthread_self();
    st->expected = expected;
    st->order_ok = 1;
    sem_init(&st->release, 0, 0);
    sem_init(&st->started, 0, 0);
}

static void s_fini(state_t *st)
{
    sem_destroy(&st->release);
    sem_destroy(&st->started);
    ev_loop_destroy(st->loop);
}

static job_t *s_job(int seq, sem_t *release)
{
    job_t *j = calloc(1, sizeof *j);
    ck_assert_ptr_nonnull(j);
    j->seq = seq;
    j->release = release;
    return j;
}

/* The work can only finish once the loop has run a timer: were it run on
 * the loop's thread, the loop could never get there (the test would hang
 * and time out). */
START_TEST(test_loop_turns_while_work_runs)
{
    state_t st = {0};
    s_init(&st, 1);
    offload_t *o = offload_new(st.loop, s_done, &st);
    ck_assert_ptr_nonnull(o);
    ev_timer_init(&st.release_timer, s_release_cb, 0.001, 0.);
    st.release_timer.data = &st;
    ev_timer_start(st.loop, &st.release_timer);
    offload_submit(o, s_work, s_job(0, &st.release));
    ev_run(st.loop, 0);
    ck_assert_int_eq(st.done, 1);
    ck_assert_int_eq(st.ran, 1);
    offload_destroy(&o);
    ck_assert_ptr_null(o);
    s_fini(&st);
}
END_TEST

START_TEST(test_results_in_order_exactly_once)
{
    enum { N = 2000 };
    state_t st = {0};
    s_init(&st, N);
    offload_t *o = offload_new(st.loop, s_done, &st);
    for (int i = 0; i < N; i++)
        offload_submit(o, s_work, s_job(i, NULL));
    ev_run(st.loop, 0);
    ck_assert_int_eq(st.done, N);
    ck_assert_int_eq(st.ran, N);
    ck_assert_int_eq(st.order_ok, 1);
    offload_destroy(&o);
    ck_assert_int_eq(st.done, N); /* nothing handed back twice */
    s_fini(&st);
}
END_TEST

/* Destroy once the first job has started and others wait: the started one
 * finishes and comes back as run, every job comes back once, in order
 * (the waiting ones as run or unrun, as the race with destroy goes). */
START_TEST(test_destroy_hands_back_what_never_ran)
{
    state_t st = {0};
    s_init(&st, -1);
    offload_t *o = offload_new(st.loop, s_done, &st);
    job_t *first = s_job(0, &st.release);
    first->started = &st.started;
    offload_submit(o, s_work, first);
    for (int i = 1; i < 5; i++)
        offload_submit(o, s_work, s_job(i, NULL));
    sem_wait(&st.started);
    sem_post(&st.release);
    offload_destroy(&o);
    ck_assert_int_eq(st.done, 5);
    ck_assert_int_ge(st.ran, 1);
    ck_assert_int_eq(st.order_ok, 1);
    s_fini(&st);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("offload");
    TCase *tc = tcase_create("offload");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_loop_turns_while_work_runs);
    tcase_add_test(tc, test_results_in_order_exactly_once);
    tcase_add_test(tc, test_destroy_hands_back_what_never_ran);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
