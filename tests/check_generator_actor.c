/*
 * check_generator_actor.c - the generator actor's protocol and its cancel
 * point, its progress and preview events, driven from the test thread: a
 * mailbox named "store" hands out work and answers recordings, one named
 * "redis" answers flag reads, others watch the bus.
 */
#include "config.h"

#include "actors/generator.h"
#include "actors/generator/png.h"
#include "runtime/names.h"
#include "tests/fixture.h"
#include "tests/runner.h"

#include <check.h>
#include <errno.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define JOB "0b8a8c3e-6a43-4e53-9d6c-2f1d7e8e2a10"

static mailbox_t *s_store, *s_redis;

static void s_setup(void)
{
    fixture_setup();
    s_store = fixture_mailbox("store", NULL);
    s_redis = fixture_mailbox("redis", NULL);
}

static generator_config_t s_config(void)
{
    generator_config_t cfg = {
        .name = "generator-0",
        .instance = "test-instance",
        .backend = GEN_BACKEND_CPU,
        .sweep_s = 60.,       /* only events and replies move it */
        .lease_renew_s = 60., /* no renewals unless a test asks */
        .request_timeout_s = 30.,
    };
    return cfg;
}

static actor_t *s_start(const generator_config_t *cfg)
{
    char err[256] = "";
    actor_t *a = generator_start(fixture_rt, cfg, err, sizeof err);
    ck_assert_msg(a != NULL, "generator failed to start: %s", err);
    return a;
}

static void s_give_work_sized(const msg_t *req, uint64_t width, uint64_t height, uint64_t steps,
                              uint64_t images, uint64_t next_index)
{
    msg_t *w = msg_new(MSG_WORK_ITEM);
    msg_set_str(&w->work_item.job_id, JOB);
    w->work_item.combination = 3;
    msg_set_str(&w->work_item.prompt, "a red fox in a snowy forest, watercolor");
    w->work_item.seed = 7;
    w->work_item.width = width;
    w->work_item.height = height;
    w->work_item.steps = steps;
    w->work_item.images = images;
    w->work_item.next_index = next_index;
    fixture_answer(s_store, req, &w);
}

static void s_give_work(const msg_t *req, uint64_t size, uint64_t steps, uint64_t images,
                        uint64_t next_index)
{
    s_give_work_sized(req, size, size, steps, images, next_index);
}

static void s_no_work(const msg_t *req)
{
    msg_t *e = fixture_error(-ENOENT, "nothing claimable");
    fixture_answer(s_store, req, &e);
}

static void s_recorded(const msg_t *req, cancel_mode_t cancel_mode)
{
    msg_t *r = msg_new(MSG_IMAGE_RECORDED);
    msg_set_str(&r->image_recorded.attach_id, "a");
    r->image_recorded.cancel_mode = cancel_mode;
    fixture_answer(s_store, req, &r);
}

static void s_ok(const msg_t *req)
{
    msg_t *ok = msg_new(MSG_OK);
    fixture_answer(s_store, req, &ok);
}

/* The generator ends its combination with `outcome`; the store takes it. */
static void s_expect_stopped(task_outcome_t outcome)
{
    msg_t *stop = fixture_expect(s_store, MSG_TASK_STOPPED);
    ck_assert_str_eq(task_outcome_name(stop->task_stopped.outcome), task_outcome_name(outcome));
    s_ok(stop);
    msg_destroy(&stop);
}

static void s_lease_state(const msg_t *req, cancel_mode_t cancel_mode)
{
    msg_t *r = msg_new(MSG_LEASE_STATE);
    r->lease_state.cancel_mode = cancel_mode;
    fixture_answer(s_store, req, &r);
}

static void s_publish_cancel(const char *job_id, cancel_mode_t mode)
{
    msg_t *ev = msg_new(MSG_JOB_CANCEL);
    msg_set_str(&ev->job_cancel.job_id, job_id);
    ev->job_cancel.mode = mode;
    mailbox_publish(s_store, TOPIC_CANCEL, ev);
    msg_destroy(&ev);
}

static void s_publish_recheck(void)
{
    msg_t *ev = msg_new(MSG_CANCEL_RECHECK);
    mailbox_publish(s_store, TOPIC_CANCEL, ev);
    msg_destroy(&ev);
}

/* Claims work: expects the WORK_REQUEST and answers it. */
static void s_claim(uint64_t size, uint64_t steps, uint64_t images, uint64_t next_index)
{
    msg_t *req = fixture_expect(s_store, MSG_WORK_REQUEST);
    ck_assert_str_eq(req->work_request.instance, "test-instance");
    s_give_work(req, size, steps, images, next_index);
    msg_destroy(&req);
}

static void s_check_png(const msg_t *m, uint64_t size)
{
    uint8_t *rgb = NULL;
    uint32_t w = 0, h = 0;
    char err[128];
    ck_assert_int_eq(gen_png_decode(m->image_ready.png.data, m->image_ready.png.size, &rgb, &w, &h,
                                    err, sizeof err),
                     0);
    ck_assert_uint_eq(w, size);
    ck_assert_uint_eq(h, size);
    free(rgb);
}

START_TEST(test_records_every_image_then_completes)
{
    generator_config_t cfg = s_config();
    actor_t *g = s_start(&cfg);
    s_claim(64, 4, 3, 1); /* resume at image 1 of 3 */
    for (uint64_t i = 1; i < 3; i++) {
        msg_t *img = fixture_expect(s_store, MSG_IMAGE_READY);
        ck_assert_str_eq(img->image_ready.job_id, JOB);
        ck_assert_uint_eq(img->image_ready.combination, 3);
        ck_assert_uint_eq(img->image_ready.image_index, i);
        s_check_png(img, 64);
        s_recorded(img, CANCEL_MODE_NONE);
        msg_destroy(&img);
    }
    msg_t *stop = fixture_expect(s_store, MSG_TASK_STOPPED);
    ck_assert_int_eq(stop->task_stopped.outcome, TASK_OUTCOME_COMPLETED);
    ck_assert_uint_eq(stop->task_stopped.combination, 3);
    ck_assert_int_eq(stop->task_stopped.observed_at_us, 0);
    s_ok(stop);
    msg_destroy(&stop);
    /* idle again: it asks for more */
    msg_t *req = fixture_expect(s_store, MSG_WORK_REQUEST);
    s_no_work(req);
    msg_destroy(&req);
    generator_destroy(&g);
}
END_TEST

/* A step of a 2048x2048 image takes a large fraction of a second on the
 * CPU; the cancel is sent while the first step runs. Stopping with fewer
 * than two steps done shows the cancel was taken between two slices of a
 * step, not at a step's end or an image's end. */
START_TEST(test_immediate_cancel_stops_within_a_step)
{
    generator_config_t cfg = s_config();
    cfg.lease_renew_s = 0.02; /* renewals show the loop turning mid-image */
    actor_t *g = s_start(&cfg);
    s_claim(2048, 200, 2, 0);
    for (int i = 0; i < 2; i++) {
        msg_t *renew = fixture_expect(s_store, MSG_LEASE_RENEW);
        ck_assert_str_eq(renew->lease_renew.job_id, JOB);
        s_lease_state(renew, CANCEL_MODE_NONE);
        msg_destroy(&renew);
    }
    s_publish_cancel("another-job", CANCEL_MODE_IMMEDIATE); /* not ours: ignored */
    s_publish_cancel(JOB, CANCEL_MODE_IMMEDIATE);
    msg_t *m;
    do { /* renewals may still be in the queue */
        m = fixture_expect_any(s_store);
        ck_assert_msg(m->type != MSG_IMAGE_READY, "an image was finished after the cancel");
        if (m->type == MSG_LEASE_RENEW) {
            s_lease_state(m, CANCEL_MODE_NONE);
            msg_destroy(&m);
        }
    } while (!m);
    ck_assert_int_eq(m->type, MSG_TASK_STOPPED);
    ck_assert_int_eq(m->task_stopped.outcome, TASK_OUTCOME_CANCELLED);
    ck_assert_uint_le(m->task_stopped.steps_done, 1);
    ck_assert_int_gt(m->task_stopped.observed_at_us, 0);
    ck_assert_int_ge(m->task_stopped.stopped_at_us, m->task_stopped.observed_at_us);
    s_ok(m);
    msg_destroy(&m);
    generator_destroy(&g);
}
END_TEST

START_TEST(test_after_current_image_keeps_the_inflight_image)
{
    generator_config_t cfg = s_config();
    cfg.lease_renew_s = 0.02;
    actor_t *g = s_start(&cfg);
    s_claim(256, 200, 5, 0); /* an image takes ~1.5 s or more */
    msg_t *renew = fixture_expect(s_store, MSG_LEASE_RENEW);
    s_lease_state(renew, CANCEL_MODE_NONE);
    msg_destroy(&renew);
    s_publish_cancel(JOB, CANCEL_MODE_AFTER_CURRENT_IMAGE);
    int images = 0;
    for (;;) {
        msg_t *m = fixture_expect_any(s_store);
        if (m->type == MSG_LEASE_RENEW) {
            s_lease_state(m, CANCEL_MODE_NONE);
        } else if (m->type == MSG_IMAGE_READY) {
            ck_assert_uint_eq(m->image_ready.image_index, 0);
            s_check_png(m, 256);
            images++;
            s_recorded(m, CANCEL_MODE_AFTER_CURRENT_IMAGE);
        } else {
            ck_assert_int_eq(m->type, MSG_TASK_STOPPED);
            ck_assert_int_eq(m->task_stopped.outcome, TASK_OUTCOME_CANCELLED);
            ck_assert_uint_eq(m->task_stopped.steps_done, 0); /* nothing dropped */
            s_ok(m);
            msg_destroy(&m);
            break;
        }
        msg_destroy(&m);
    }
    ck_assert_int_eq(images, 1);
    generator_destroy(&g);
}
END_TEST

START_TEST(test_durable_cancel_from_the_store_stops_before_next_image)
{
    generator_config_t cfg = s_config();
    actor_t *g = s_start(&cfg);
    s_claim(64, 3, 4, 0);
    msg_t *img = fixture_expect(s_store, MSG_IMAGE_READY);
    s_recorded(img, CANCEL_MODE_IMMEDIATE); /* a cancel the events never brought */
    msg_destroy(&img);
    s_expect_stopped(TASK_OUTCOME_CANCELLED);
    generator_destroy(&g);
}
END_TEST

START_TEST(test_recheck_after_reconnect_reads_the_store)
{
    generator_config_t cfg = s_config();
    actor_t *g = s_start(&cfg);
    s_claim(1024, 200, 1, 0);
    s_publish_recheck();
    msg_t *renew = fixture_expect(s_store, MSG_LEASE_RENEW); /* at once, not in 60 s */
    s_lease_state(renew, CANCEL_MODE_IMMEDIATE);
    msg_destroy(&renew);
    msg_t *stop = fixture_expect(s_store, MSG_TASK_STOPPED);
    ck_assert_int_eq(stop->task_stopped.outcome, TASK_OUTCOME_CANCELLED);
    ck_assert_uint_lt(stop->task_stopped.steps_done, 200);
    s_ok(stop);
    msg_destroy(&stop);
    generator_destroy(&g);
}
END_TEST

/* A cancel that arrives while the claim is in flight (the generator runs
 * nothing yet: the event names nothing of its) still stops the job the
 * claim brings, at once, and the stop carries the cancel; one of another
 * job does not. */
START_TEST(test_cancel_heard_while_claiming_stops_the_claimed_job)
{
    generator_config_t cfg = s_config();
    actor_t *g = s_start(&cfg);
    msg_t *req = fixture_expect(s_store, MSG_WORK_REQUEST);
    msg_t *ev = msg_new(MSG_JOB_CANCEL);
    msg_set_str(&ev->job_cancel.job_id, "5d7e2a55-0c1b-4f1e-8a0b-6a1b2c3d4e5f"); /* another */
    ev->job_cancel.mode = CANCEL_MODE_IMMEDIATE;
    ev->job_cancel.requested_at_us = 1700000000000001;
    ck_assert_int_eq(mailbox_publish(s_store, TOPIC_CANCEL, ev), 1);
    msg_set_str(&ev->job_cancel.job_id, JOB);
    ev->job_cancel.requested_at_us = 1700000000000002;
    ck_assert_int_eq(mailbox_publish(s_store, TOPIC_CANCEL, ev), 1);
    msg_destroy(&ev);
    s_give_work(req, 64, 4, 3, 0); /* after the events: the same sender, in order */
    msg_destroy(&req);
    msg_t *stop = fixture_expect(s_store, MSG_TASK_STOPPED); /* no image first */
    ck_assert_str_eq(task_outcome_name(stop->task_stopped.outcome), "cancelled");
    ck_assert_int_eq(stop->task_stopped.cancel_requested_at_us, 1700000000000002);
    ck_assert_int_eq(stop->task_stopped.cancel_mode, CANCEL_MODE_IMMEDIATE);
    s_ok(stop);
    msg_destroy(&stop);
    generator_destroy(&g);
}
END_TEST

START_TEST(test_work_event_wakes_an_idle_generator)
{
    generator_config_t cfg = s_config();
    actor_t *g = s_start(&cfg);
    msg_t *req = fixture_expect(s_store, MSG_WORK_REQUEST);
    s_no_work(req);
    msg_destroy(&req);
    msg_t *ev = msg_new(MSG_WORK_AVAILABLE);
    msg_set_str(&ev->work_available.job_id, JOB);
    ck_assert_int_eq(mailbox_publish(s_store, TOPIC_WORK, ev), 1);
    msg_destroy(&ev);
    req = fixture_expect(s_store, MSG_WORK_REQUEST); /* the sweep is 60 s away */
    s_no_work(req);
    msg_destroy(&req);
    generator_destroy(&g);
}
END_TEST

START_TEST(test_poll_mode_reads_the_redis_flag_before_each_image)
{
    generator_config_t cfg = s_config();
    cfg.poll_mode = true;
    actor_t *g = s_start(&cfg);
    s_claim(64, 3, 5, 0);
    /* the seed's design has no events: nothing subscribes to cancels */
    s_publish_cancel(JOB, CANCEL_MODE_IMMEDIATE);
    for (int i = 0; i < 2; i++) {
        msg_t *flag = fixture_expect(s_redis, MSG_REDIS_FLAG_GET);
        ck_assert_str_eq(flag->redis_flag_get.job_id, JOB);
        msg_t *r = msg_new(MSG_REDIS_FLAG);
        r->redis_flag.set = i == 1;
        fixture_answer(s_redis, flag, &r);
        msg_destroy(&flag);
        if (i == 0) {
            msg_t *img = fixture_expect(s_store, MSG_IMAGE_READY);
            s_recorded(img, CANCEL_MODE_NONE);
            msg_destroy(&img);
        }
    }
    s_expect_stopped(TASK_OUTCOME_CANCELLED);
    generator_destroy(&g);
}
END_TEST

START_TEST(test_unrecorded_image_is_held_and_sent_again)
{
    generator_config_t cfg = s_config();
    actor_t *g = s_start(&cfg);
    s_claim(64, 2, 1, 0);
    msg_t *img = fixture_expect(s_store, MSG_IMAGE_READY);
    msg_t *e = fixture_error(-EAGAIN, "database unavailable");
    fixture_answer(s_store, img, &e);
    msg_t *again = fixture_expect(s_store, MSG_IMAGE_READY);
    ck_assert_uint_eq(again->image_ready.image_index, 0);
    ck_assert_uint_eq(again->image_ready.png.size, img->image_ready.png.size);
    ck_assert_mem_eq(again->image_ready.png.data, img->image_ready.png.data,
                     img->image_ready.png.size);
    s_recorded(again, CANCEL_MODE_NONE);
    msg_destroy(&again);
    msg_destroy(&img);
    s_expect_stopped(TASK_OUTCOME_COMPLETED);
    generator_destroy(&g);
}
END_TEST

START_TEST(test_shutdown_gives_the_claim_back)
{
    generator_config_t cfg = s_config();
    cfg.lease_renew_s = 0.02;
    actor_t *g = s_start(&cfg);
    s_claim(1024, 200, 3, 0);
    /* a renewal shows it is rendering the claimed work */
    msg_t *renew = fixture_expect(s_store, MSG_LEASE_RENEW);
    msg_destroy(&renew);
    generator_destroy(&g);
    msg_t *stop;
    while ((stop = fixture_expect_any(s_store))->type == MSG_LEASE_RENEW)
        msg_destroy(&stop);
    ck_assert_int_eq(stop->type, MSG_TASK_STOPPED);
    ck_assert_int_eq(stop->task_stopped.outcome, TASK_OUTCOME_RELEASED);
    ck_assert_str_eq(stop->task_stopped.instance, "test-instance");
    ck_assert_str_eq(stop->task_stopped.job_id, JOB);
    msg_destroy(&stop);
}
END_TEST

/* A claim whose reply is still in the inbox when the stop comes is given
 * back too: a stop first handles what the inbox holds. */
START_TEST(test_claim_arriving_with_the_stop_is_given_back)
{
    generator_config_t cfg = s_config();
    actor_t *g = s_start(&cfg);
    msg_t *req = fixture_expect(s_store, MSG_WORK_REQUEST);
    s_give_work(req, 1024, 200, 3, 0);
    msg_destroy(&req);
    generator_destroy(&g); /* races the reply on purpose: either order must release */
    msg_t *stop = fixture_expect(s_store, MSG_TASK_STOPPED);
    ck_assert_int_eq(stop->task_stopped.outcome, TASK_OUTCOME_RELEASED);
    ck_assert_str_eq(stop->task_stopped.job_id, JOB);
    msg_destroy(&stop);
}
END_TEST

START_TEST(test_lost_claim_is_dropped_without_a_stop)
{
    generator_config_t cfg = s_config();
    cfg.lease_renew_s = 0.02;
    actor_t *g = s_start(&cfg);
    s_claim(1024, 200, 3, 0);
    msg_t *renew = fixture_expect(s_store, MSG_LEASE_RENEW);
    msg_t *e = fixture_error(-ENOENT, "claimed by another instance");
    fixture_answer(s_store, renew, &e);
    msg_destroy(&renew);
    msg_t *m = fixture_expect(s_store, MSG_WORK_REQUEST); /* no TASK_STOPPED first */
    s_no_work(m);
    msg_destroy(&m);
    generator_destroy(&g);
}
END_TEST

START_TEST(test_cuda_without_a_device_is_a_clear_error)
{
    if (gen_cuda_device_count() > 0) {
        printf("SKIP: a CUDA device is present\n");
        return;
    }
    generator_config_t cfg = s_config();
    cfg.backend = GEN_BACKEND_CUDA;
    char err[256] = "";
    actor_t *g = generator_start(fixture_rt, &cfg, err, sizeof err);
    ck_assert_ptr_null(g);
    ck_assert_msg(strstr(err, "CUDA") != NULL, "reason was: %s", err);
}
END_TEST

/* The encode of a finished image runs off the generator's loop: held on
 * the encoder thread, it does not keep a cancel from being observed and
 * acted on (the encode once ran on the loop, between a cancel and its
 * observation: this test hung there). */
typedef struct {
    sem_t entered, release;
} hold_t;

static void s_hold_encode(void *arg)
{
    hold_t *h = arg;
    sem_post(&h->entered);
    sem_wait(&h->release);
}

START_TEST(test_cancel_is_observed_while_an_image_is_encoded)
{
    hold_t h;
    sem_init(&h.entered, 0, 0);
    sem_init(&h.release, 0, 0);
    generator_config_t cfg = s_config();
    cfg.before_encode = s_hold_encode;
    cfg.before_encode_arg = &h;
    actor_t *g = s_start(&cfg);
    s_claim(64, 2, 3, 0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    ck_assert_int_eq(sem_timedwait(&h.entered, &until), 0); /* image 0 is being encoded */
    s_publish_cancel(JOB, CANCEL_MODE_IMMEDIATE);
    msg_t *stop = fixture_expect(s_store, MSG_TASK_STOPPED); /* the encode still held */
    ck_assert_int_eq(stop->task_stopped.outcome, TASK_OUTCOME_CANCELLED);
    ck_assert_int_gt(stop->task_stopped.observed_at_us, 0);
    s_ok(stop);
    msg_destroy(&stop);
    sem_post(&h.release);
    /* the held image was not recorded: next comes the idle generator's ask */
    msg_t *req = fixture_expect(s_store, MSG_WORK_REQUEST);
    s_no_work(req);
    msg_destroy(&req);
    generator_destroy(&g);
    sem_destroy(&h.entered);
    sem_destroy(&h.release);
}
END_TEST

/* An immediate cancel after an after_current_image one upgrades it: the
 * image in flight is dropped at the next step after all (it was finished
 * and recorded, for a job that had been promised "the next step"). */
START_TEST(test_immediate_upgrades_after_current_image)
{
    generator_config_t cfg = s_config();
    actor_t *g = s_start(&cfg);
    s_claim(512, 200, 3, 0); /* an image takes many seconds */
    s_publish_cancel(JOB, CANCEL_MODE_AFTER_CURRENT_IMAGE);
    s_publish_cancel(JOB, CANCEL_MODE_IMMEDIATE);
    msg_t *m = fixture_expect_any(s_store);
    ck_assert_msg(m->type == MSG_TASK_STOPPED, "got %s: the image was finished",
                  msg_type_name(m->type));
    ck_assert_int_eq(m->task_stopped.outcome, TASK_OUTCOME_CANCELLED);
    ck_assert_uint_lt(m->task_stopped.steps_done, 200);
    s_ok(m);
    msg_destroy(&m);
    generator_destroy(&g);
}
END_TEST

/* --generators auto on a host with more cores (or GPUs) than the process
 * has room for generators: serve once wrote past its array of 64. */
START_TEST(test_auto_count_is_clamped)
{
    ck_assert_uint_eq(generator_auto_count(2, 0), 2);
    ck_assert_uint_eq(generator_auto_count(0, 0), 1);
    ck_assert_uint_eq(generator_auto_count(16, 4), 4);
    ck_assert_uint_eq(generator_auto_count(GENERATORS_MAX, 0), GENERATORS_MAX);
    ck_assert_uint_eq(generator_auto_count(192, 0), GENERATORS_MAX);
    ck_assert_uint_eq(generator_auto_count(8, 200), GENERATORS_MAX);
}
END_TEST

/* A reply of a type the generator did not ask for is logged and retried,
 * never read as an ERROR (its reason pointer would be some other field). */
START_TEST(test_unexpected_reply_type_is_held_and_retried)
{
    generator_config_t cfg = s_config();
    actor_t *g = s_start(&cfg);
    s_claim(64, 2, 1, 0);
    msg_t *img = fixture_expect(s_store, MSG_IMAGE_READY);
    msg_t *wrong = msg_new(MSG_PONG); /* sent_ns overlays error.reason */
    wrong->pong.sent_ns = 0x1234;
    fixture_answer(s_store, img, &wrong);
    msg_t *again = fixture_expect(s_store, MSG_IMAGE_READY);
    ck_assert_uint_eq(again->image_ready.image_index, 0);
    s_recorded(again, CANCEL_MODE_NONE);
    msg_destroy(&again);
    msg_destroy(&img);
    msg_t *stop = fixture_expect(s_store, MSG_TASK_STOPPED);
    msg_t *e = msg_new(MSG_ERROR); /* an ERROR with no reason at all */
    e->error.code = -EAGAIN;
    fixture_answer(s_store, stop, &e);
    msg_destroy(&stop);
    s_expect_stopped(TASK_OUTCOME_COMPLETED);
    generator_destroy(&g);
}
END_TEST

/* ------------------------------------------------------ progress, previews */

/* Someone wants previews of job_id for ttl_ms. Published from the "store"
 * mailbox: it reaches the generator before a work reply sent after it. */
static void s_publish_wanted(const char *job_id, uint64_t ttl_ms)
{
    msg_t *ev = msg_new(MSG_PREVIEW_WANTED);
    msg_set_str(&ev->preview_wanted.job_id, job_id);
    ev->preview_wanted.ttl_ms = ttl_ms;
    ck_assert_int_ge(mailbox_publish(s_store, TOPIC_PREVIEW_WANTED, ev), 1);
    msg_destroy(&ev);
}

/* Claims a width x height job of `steps` steps and `images` images, records
 * every image and the completion, and answers the idle ask after it. */
static void s_run_job(uint64_t width, uint64_t height, uint64_t steps, uint64_t images)
{
    msg_t *req = fixture_expect(s_store, MSG_WORK_REQUEST);
    s_give_work_sized(req, width, height, steps, images, 0);
    msg_destroy(&req);
    for (uint64_t i = 0; i < images; i++) {
        msg_t *img = fixture_expect(s_store, MSG_IMAGE_READY);
        ck_assert_uint_eq(img->image_ready.image_index, i);
        s_recorded(img, CANCEL_MODE_NONE);
        msg_destroy(&img);
    }
    s_expect_stopped(TASK_OUTCOME_COMPLETED);
    req = fixture_expect(s_store, MSG_WORK_REQUEST);
    s_no_work(req);
    msg_destroy(&req);
}

/* Takes every preview the generator rendered since `before` (all were
 * published before the job's completion) and checks each; nothing more
 * comes. Returns how many. */
static uint64_t s_take_previews(mailbox_t *mb, uint64_t before, uint64_t steps, uint64_t images,
                                uint32_t want_w, uint32_t want_h)
{
    uint64_t n = generator_previews_rendered() - before;
    for (uint64_t i = 0; i < n; i++) {
        msg_t *m = fixture_expect(mb, MSG_JOB_PREVIEW);
        ck_assert_str_eq(m->job_preview.job_id, JOB);
        ck_assert_uint_eq(m->job_preview.combination, 3);
        ck_assert_uint_lt(m->job_preview.image_index, images);
        ck_assert_uint_ge(m->job_preview.step, 1);
        ck_assert_uint_le(m->job_preview.step, steps);
        ck_assert_ptr_null(m->job_preview.origin);
        ck_assert_uint_eq(m->job_preview.width, want_w);
        ck_assert_uint_eq(m->job_preview.height, want_h);
        uint8_t *rgb = NULL;
        uint32_t w = 0, h = 0;
        char err[128];
        ck_assert_msg(gen_png_decode(m->job_preview.png.data, m->job_preview.png.size, &rgb, &w, &h,
                                     err, sizeof err)
                          == 0,
                      "preview %llu: %s", (unsigned long long)i, err);
        ck_assert_uint_eq(w, m->job_preview.width);
        ck_assert_uint_eq(h, m->job_preview.height);
        ck_assert_uint_le(w, PREVIEW_SIZE_MAX);
        ck_assert_uint_le(h, PREVIEW_SIZE_MAX);
        free(rgb);
        msg_destroy(&m);
    }
    fixture_expect_none(mb, 200);
    ck_assert_uint_eq(generator_previews_rendered() - before, n);
    return n;
}

/* N steps x M images: progress in order, every image's last step there,
 * never more events than steps; and with nobody asking, no preview at all
 * (not even rendered: the counter stays). */
START_TEST(test_progress_of_every_image)
{
    const uint64_t steps = 12, images = 3;
    mailbox_t *progress = fixture_mailbox("watch-progress", TOPIC_JOB_PROGRESS);
    mailbox_t *previews = fixture_mailbox("watch-previews", TOPIC_JOB_PREVIEW);
    uint64_t before = generator_previews_rendered();
    generator_config_t cfg = s_config();
    actor_t *g = s_start(&cfg);
    s_run_job(128, 128, steps, images);

    uint64_t last_image = 0, last_step = 0, events = 0;
    uint64_t per_image[3] = {0, 0, 0};
    bool ended[3] = {false, false, false};
    while (!ended[images - 1]) { /* all were published before the completion */
        msg_t *m = fixture_expect(progress, MSG_JOB_PROGRESS);
        const msg_job_progress_t *p = &m->job_progress;
        ck_assert_str_eq(p->job_id, JOB);
        ck_assert_uint_eq(p->combination, 3);
        ck_assert_uint_eq(p->steps, steps);
        ck_assert_ptr_null(p->origin);
        ck_assert_uint_lt(p->image_index, images);
        ck_assert_uint_ge(p->step, 1);
        ck_assert_uint_le(p->step, steps);
        ck_assert_msg(events == 0 || p->image_index > last_image
                          || (p->image_index == last_image && p->step > last_step),
                      "(%llu, %llu) after (%llu, %llu)", (unsigned long long)p->image_index,
                      (unsigned long long)p->step, (unsigned long long)last_image,
                      (unsigned long long)last_step);
        last_image = p->image_index;
        last_step = p->step;
        ck_assert_uint_le(++per_image[p->image_index], steps);
        if (p->step == steps)
            ended[p->image_index] = true;
        events++;
        msg_destroy(&m);
    }
    for (uint64_t i = 0; i < images; i++)
        ck_assert_msg(ended[i], "no progress event for the last step of image %llu",
                      (unsigned long long)i);
    fixture_expect_none(progress, 200);
    fixture_expect_none(previews, 200);
    ck_assert_uint_eq(generator_previews_rendered(), before);
    generator_destroy(&g);
}
END_TEST

/* Once someone wants them, previews arrive: PNGs of the stated size, the
 * longest side PREVIEW_SIZE_MAX, the aspect ratio kept. */
START_TEST(test_previews_while_wanted)
{
    const uint64_t steps = 40, images = 2;
    mailbox_t *previews = fixture_mailbox("watch-previews", TOPIC_JOB_PREVIEW);
    uint64_t before = generator_previews_rendered();
    generator_config_t cfg = s_config();
    actor_t *g = s_start(&cfg);
    s_publish_wanted(JOB, PREVIEW_WANTED_TTL_MS * 6); /* outlives the test */
    s_run_job(256, 128, steps, images);
    uint64_t n = s_take_previews(previews, before, steps, images, 128, 64);
    ck_assert_uint_ge(n, 1); /* the first step is always shown */
    printf("previews: %llu of a 256x128 job of %llu x %llu steps\n", (unsigned long long)n,
           (unsigned long long)images, (unsigned long long)steps);
    generator_destroy(&g);
}
END_TEST

/* A wish for another job, or one that has already run out (ttl 0), makes
 * no preview of this one. */
START_TEST(test_no_previews_for_other_jobs)
{
    mailbox_t *previews = fixture_mailbox("watch-previews", TOPIC_JOB_PREVIEW);
    uint64_t before = generator_previews_rendered();
    generator_config_t cfg = s_config();
    actor_t *g = s_start(&cfg);
    s_publish_wanted("6f1c1d2e-0000-4000-8000-000000000000", PREVIEW_WANTED_TTL_MS * 6);
    s_publish_wanted(JOB, 0);
    s_run_job(128, 128, 12, 2);
    ck_assert_uint_eq(s_take_previews(previews, before, 12, 2, 128, 128), 0);
    generator_destroy(&g);
}
END_TEST

/* The table of wishes is bounded: past 256 jobs, the wish that ends first
 * makes room; a renewed wish is the newest again. */
START_TEST(test_wanted_table_drops_the_oldest)
{
    mailbox_t *previews = fixture_mailbox("watch-previews", TOPIC_JOB_PREVIEW);
    uint64_t before = generator_previews_rendered();
    generator_config_t cfg = s_config();
    actor_t *g = s_start(&cfg);
    s_publish_wanted(JOB, PREVIEW_WANTED_TTL_MS * 6);
    char other[64];
    for (int i = 0; i < 256; i++) { /* the 256th pushes JOB out */
        snprintf(other, sizeof other, "6f1c1d2e-0000-4000-8000-%012d", i);
        s_publish_wanted(other, PREVIEW_WANTED_TTL_MS * 6);
    }
    s_run_job(128, 128, 12, 1);
    ck_assert_uint_eq(s_take_previews(previews, before, 12, 1, 128, 128), 0);

    s_publish_wanted(JOB, PREVIEW_WANTED_TTL_MS * 6); /* back in, another one out */
    msg_t *ev = msg_new(MSG_WORK_AVAILABLE);
    msg_set_str(&ev->work_available.job_id, JOB);
    mailbox_publish(s_store, TOPIC_WORK, ev);
    msg_destroy(&ev);
    s_run_job(128, 128, 12, 1);
    ck_assert_uint_ge(s_take_previews(previews, before, 12, 1, 128, 128), 1);
    generator_destroy(&g);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("generator_actor");
    TCase *tc = tcase_create("protocol");
    tcase_add_checked_fixture(tc, s_setup, fixture_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_records_every_image_then_completes);
    tcase_add_test(tc, test_immediate_cancel_stops_within_a_step);
    tcase_add_test(tc, test_after_current_image_keeps_the_inflight_image);
    tcase_add_test(tc, test_durable_cancel_from_the_store_stops_before_next_image);
    tcase_add_test(tc, test_recheck_after_reconnect_reads_the_store);
    tcase_add_test(tc, test_work_event_wakes_an_idle_generator);
    tcase_add_test(tc, test_cancel_heard_while_claiming_stops_the_claimed_job);
    tcase_add_test(tc, test_poll_mode_reads_the_redis_flag_before_each_image);
    tcase_add_test(tc, test_unrecorded_image_is_held_and_sent_again);
    tcase_add_test(tc, test_shutdown_gives_the_claim_back);
    tcase_add_test(tc, test_claim_arriving_with_the_stop_is_given_back);
    tcase_add_test(tc, test_lost_claim_is_dropped_without_a_stop);
    tcase_add_test(tc, test_cuda_without_a_device_is_a_clear_error);
    tcase_add_test(tc, test_auto_count_is_clamped);
    tcase_add_test(tc, test_immediate_upgrades_after_current_image);
    tcase_add_test(tc, test_cancel_is_observed_while_an_image_is_encoded);
    tcase_add_test(tc, test_unexpected_reply_type_is_held_and_retried);
    suite_add_tcase(s, tc);

    tc = tcase_create("events");
    tcase_add_checked_fixture(tc, s_setup, fixture_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_progress_of_every_image);
    tcase_add_test(tc, test_previews_while_wanted);
    tcase_add_test(tc, test_no_previews_for_other_jobs);
    tcase_add_test(tc, test_wanted_table_drops_the_oldest);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
