/*
 * check_generator.c - the generation engine: Philox, parameter limits,
 * determinism, variety, picture quality, step-by-step progress, bounded
 * slices and abort, previews, backend selection, PNG, and CPU/CUDA parity.
 *
 * Nothing here asserts on timing. Tests that need a CUDA device print
 * "SKIP: no CUDA device" (and the parity test "parity: skipped (no CUDA
 * device)") and pass when there is none, unless IMAGEJOBS_REQUIRE_CUDA=1
 * (bench/gpu-check sets it), which turns a missing device into a failure.
 */
#include "config.h"

#include "actors/generator/backend.h"
#include "actors/generator/png.h"
#include "actors/generator/sampler.h"
#include "runtime/clock.h"
#include "runtime/names.h"
#include "tests/runner.h"

#include <check.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

static gen_backend_t *s_open(gen_backend_kind_t kind)
{
    char err[256] = "";
    gen_backend_t *b = gen_backend_open(kind, err, sizeof err);
    ck_assert_msg(b != NULL, "gen_backend_open: %s", err);
    return b;
}

/* A CPU backend on a pool of its own with `threads` threads (0: inline);
 * *pool is the caller's to destroy after the backend. */
static gen_backend_t *s_open_on(unsigned threads, gen_pool_t **pool)
{
    char err[256] = "";
    ck_assert_msg((*pool = gen_pool_new(threads, 0, err, sizeof err)) != NULL, "pool: %s", err);
    gen_backend_t *b = gen_backend_open_with(GEN_BACKEND_CPU, 0, *pool, err, sizeof err);
    ck_assert_msg(b != NULL, "gen_backend_open_with: %s", err);
    return b;
}

/* gen_advance, waiting out GEN_WAIT as render does: on the pool, one call
 * is one step (GEN_MORE once it has run). */
static gen_status_t s_advance(gen_backend_t *b)
{
    gen_status_t st;
    while ((st = gen_advance(b)) == GEN_WAIT)
        ck_assert_int_eq(gen_wait(b), 0);
    return st;
}

static gen_params_t s_params(const char *prompt, uint64_t seed, uint32_t w, uint32_t h,
                             uint32_t steps)
{
    gen_params_t p = {.prompt = prompt, .seed = seed, .width = w, .height = h, .steps = steps};
    return p;
}

static uint8_t *s_render(gen_backend_t *b, const gen_params_t *p)
{
    char err[256] = "";
    uint8_t *rgb = NULL;
    ck_assert_msg(gen_render_sync(b, p, &rgb, NULL, err, sizeof err) == 0, "render: %s", err);
    return rgb;
}

/* Mean absolute difference per channel value, in 0..255. */
static double s_mean_abs_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += abs((int)a[i] - (int)b[i]);
    return sum / (double)n;
}

static int s_max_abs_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > m)
            m = d;
    }
    return m;
}

/* Standard deviation of channel c. */
static double s_stddev(const uint8_t *rgb, size_t px, int c)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < px; i++) {
        double v = rgb[i * 3 + c];
        s += v;
        s2 += v * v;
    }
    double mean = s / (double)px;
    return sqrt(s2 / (double)px - mean * mean);
}

/* Pearson correlation of all channel values of a and b. */
static double s_correlation(const uint8_t *a, const uint8_t *b, size_t n)
{
    double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
    for (size_t i = 0; i < n; i++) {
        sa += a[i];
        sb += b[i];
        saa += (double)a[i] * a[i];
        sbb += (double)b[i] * b[i];
        sab += (double)a[i] * b[i];
    }
    double cov = sab / n - (sa / n) * (sb / n);
    double va = saa / n - (sa / n) * (sa / n), vb = sbb / n - (sb / n) * (sb / n);
    return cov / sqrt(va * vb + 1e-12);
}

/* Mean |difference| between horizontally neighbouring channel values. */
static double s_roughness(const uint8_t *rgb, uint32_t w, uint32_t h)
{
    double sum = 0;
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x + 1 < w; x++)
            for (int c = 0; c < 3; c++) {
                size_t i = ((size_t)y * w + x) * 3 + c;
                sum += abs((int)rgb[i] - (int)rgb[i + 3]);
            }
    return sum / ((double)h * (w - 1) * 3);
}

/* CUDA tests: 1 when they may run; 0 when they must skip (and say so). */
static int s_have_cuda(const char *what)
{
    if (gen_cuda_device_count() > 0)
        return 1;
    const char *req = getenv("IMAGEJOBS_REQUIRE_CUDA");
    ck_assert_msg(!(req && !strcmp(req, "1")),
                  "%s: IMAGEJOBS_REQUIRE_CUDA=1 but no CUDA device is usable", what);
    printf("SKIP: no CUDA device (%s)\n", what);
    fflush(stdout);
    return 0;
}

/* ----------------------------------------------------------------- philox */

START_TEST(test_philox_known_answers)
{
    /* Random123 kat_vectors: counter, key -> output */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        sampler_philox(kat[i], kat[i] + 4, out);
        for (int k = 0; k < 4; k++)
            ck_assert_uint_eq(out[k], kat[i][6 + k]);
    }
}
END_TEST

START_TEST(test_noise_is_gaussian)
{
    sampler_scene_t sc;
    sampler_scene_init(&sc, "x", 42, 0, 256, 256);
    double s = 0, s2 = 0;
    int n = 0;
    for (uint32_t y = 0; y < 256; y++)
        for (uint32_t x = 0; x < 256; x++) {
            float v[3];
            sampler_noise(&sc, x, y, v);
            for (int c = 0; c < 3; c++, n++) {
                s += v[c];
                s2 += (double)v[c] * v[c];
            }
        }
    double mean = s / n, var = s2 / n - mean * mean;
    ck_assert_msg(fabs(mean) < 0.02, "noise mean %f", mean);
    ck_assert_msg(fabs(var - 1.0) < 0.03, "noise variance %f", var);
}
END_TEST

/* ------------------------------------------------------------ parameters */

static void s_expect_bad(gen_params_t p, const char *field)
{
    char err[256] = "";
    ck_assert_int_eq(gen_params_check(&p, err, sizeof err), -1);
    ck_assert_msg(strstr(err, field) != NULL, "error '%s' does not name %s", err, field);
    gen_backend_t *b = s_open(GEN_BACKEND_CPU);
    err[0] = 0;
    ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), -1);
    ck_assert_msg(strstr(err, field) != NULL, "gen_begin error '%s' does not name %s", err, field);
    ck_assert_str_eq(gen_error(b), err);
    ck_assert_int_eq(gen_advance(b), GEN_ERROR);
    gen_backend_close(&b);
    ck_assert_ptr_null(b);
}

START_TEST(test_limits)
{
    gen_params_t ok = s_params("a hill", 1, 64, 2048, 1);
    char err[256];
    ck_assert_int_eq(gen_params_check(&ok, err, sizeof err), 0);
    ok.steps = 200;
    ok.width = 2048;
    ok.height = 64;
    ck_assert_int_eq(gen_params_check(&ok, err, sizeof err), 0);

    gen_params_t p = ok;
    p.width = 56;
    s_expect_bad(p, "width");
    p.width = 2056;
    s_expect_bad(p, "width");
    p.width = 100; /* not a multiple of 8 */
    s_expect_bad(p, "width");
    p = ok;
    p.height = 0;
    s_expect_bad(p, "height");
    p.height = 4096;
    s_expect_bad(p, "height");
    p.height = 65;
    s_expect_bad(p, "height");
    p = ok;
    p.steps = 0;
    s_expect_bad(p, "steps");
    p.steps = 201;
    s_expect_bad(p, "steps");
    p = ok;
    p.prompt = "";
    s_expect_bad(p, "prompt");
    p.prompt = NULL;
    s_expect_bad(p, "prompt");
    char *longp = malloc(GEN_PROMPT_MAX + 2);
    memset(longp, 'a', GEN_PROMPT_MAX + 1);
    longp[GEN_PROMPT_MAX + 1] = 0;
    p.prompt = longp;
    s_expect_bad(p, "prompt");
    longp[GEN_PROMPT_MAX] = 0; /* exactly the maximum is fine */
    ck_assert_int_eq(gen_params_check(&p, err, sizeof err), 0);
    free(longp);
}
END_TEST

START_TEST(test_kind_parse)
{
    gen_backend_kind_t k;
    ck_assert_int_eq(gen_backend_kind_parse("auto", &k), 0);
    ck_assert_int_eq(k, GEN_BACKEND_AUTO);
    ck_assert_int_eq(gen_backend_kind_parse("cpu", &k), 0);
    ck_assert_int_eq(k, GEN_BACKEND_CPU);
    ck_assert_int_eq(gen_backend_kind_parse("cuda", &k), 0);
    ck_assert_int_eq(k, GEN_BACKEND_CUDA);
    ck_assert_int_eq(gen_backend_kind_parse("gpu", &k), -1);
    ck_assert_int_eq(gen_backend_kind_parse("", &k), -1);
    ck_assert_int_eq(gen_backend_kind_parse(NULL, &k), -1);
}
END_TEST

/* ------------------------------------------------------------ the images */

START_TEST(test_deterministic_png)
{
    gen_params_t p = s_params("a red fox in a snowy forest", 7, 128, 96, 12);
    gen_backend_t *b = s_open(GEN_BACKEND_CPU);
    uint8_t *a = s_render(b, &p), *c = s_render(b, &p);
    uint8_t *pa, *pc;
    size_t la, lc;
    char err[256];
    ck_assert_int_eq(gen_png_encode(a, p.width, p.height, &pa, &la, err, sizeof err), 0);
    ck_assert_int_eq(gen_png_encode(c, p.width, p.height, &pc, &lc, err, sizeof err), 0);
    ck_assert_uint_eq(la, lc);
    ck_assert_int_eq(memcmp(pa, pc, la), 0);
    gen_backend_close(&b);

    /* the thread count must not matter either: one thread, a fresh backend */
    setenv("IMAGEJOBS_GEN_THREADS", "1", 1);
    b = s_open(GEN_BACKEND_CPU);
    unsetenv("IMAGEJOBS_GEN_THREADS");
    uint8_t *d = s_render(b, &p);
    ck_assert_int_eq(memcmp(a, d, (size_t)p.width * p.height * 3), 0);
    gen_backend_close(&b);
    free(pa);
    free(pc);
    free(a);
    free(c);
    free(d);
}
END_TEST

START_TEST(test_prompts_seeds_indices_differ)
{
    const uint32_t w = 128, h = 128;
    const size_t n = (size_t)w * h * 3;
    gen_backend_t *b = s_open(GEN_BACKEND_CPU);
    gen_params_t p = s_params("mountains at sunset", 1, w, h, 10);
    uint8_t *base = s_render(b, &p);
    const char *prompts[] = {"a red fox in a snowy forest", "abstract neon swirl",
                             "a quiet lake at night", "a cat playing the piano"};
    for (size_t i = 0; i < sizeof prompts / sizeof *prompts; i++) {
        gen_params_t q = p;
        q.prompt = prompts[i];
        uint8_t *o = s_render(b, &q);
        double d = s_mean_abs_diff(base, o, n);
        ck_assert_msg(d > 12.0, "prompt '%s' vs '%s': mean difference %.1f", prompts[i], p.prompt,
                      d);
        free(o);
    }
    for (uint64_t seed = 2; seed < 6; seed++) {
        gen_params_t q = p;
        q.seed = seed;
        uint8_t *o = s_render(b, &q);
        double d = s_mean_abs_diff(base, o, n);
        ck_assert_msg(d > 6.0, "seed %llu vs 1: mean difference %.1f", (unsigned long long)seed, d);
        free(o);
    }
    gen_params_t q = p;
    q.image_index = 1;
    uint8_t *o = s_render(b, &q);
    double d = s_mean_abs_diff(base, o, n);
    ck_assert_msg(d > 6.0, "image index 1 vs 0: mean difference %.1f", d);
    free(o);
    free(base);
    gen_backend_close(&b);
}
END_TEST

/* Finished images are pictures: coloured and varied, far from the noise
 * they started from, and smooth where noise is rough. */
START_TEST(test_not_trivial)
{
    const char *prompts[] = {"a red fox in a snowy forest", "abstract swirl", "mountains at night",
                             "desert dunes", "a lighthouse on the coast"};
    const uint32_t w = 192, h = 128;
    const size_t px = (size_t)w * h;
    gen_backend_t *b = s_open(GEN_BACKEND_CPU);
    uint8_t *noise = malloc(px * 3);
    for (size_t i = 0; i < sizeof prompts / sizeof *prompts; i++) {
        gen_params_t p = s_params(prompts[i], 3, w, h, 15);
        char err[256];
        ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), 0);
        ck_assert_int_eq(gen_snapshot(b, noise), 0);
        uint8_t *img = s_render(b, &p);
        double sd_sum = 0;
        for (int c = 0; c < 3; c++) {
            double sd = s_stddev(img, px, c);
            ck_assert_msg(sd > 6.0, "'%s': channel %d is flat (stddev %.1f)", prompts[i], c, sd);
            sd_sum += sd;
        }
        ck_assert_msg(sd_sum > 40.0, "'%s': little contrast (stddev sum %.1f)", prompts[i], sd_sum);
        double d = s_mean_abs_diff(img, noise, px * 3);
        double r = s_correlation(img, noise, px * 3);
        ck_assert_msg(d > 40.0 && fabs(r) < 0.3,
                      "'%s': too close to its noise (mean diff %.1f, correlation %.2f)", prompts[i],
                      d, r);
        double rough = s_roughness(img, w, h), nrough = s_roughness(noise, w, h);
        ck_assert_msg(rough < 0.2 * nrough, "'%s': noise-like (neighbour diff %.1f vs %.1f)",
                      prompts[i], rough, nrough);
        free(img);
    }
    free(noise);
    gen_backend_close(&b);
}
END_TEST

START_TEST(test_each_step_changes_state)
{
    const uint32_t w = 128, h = 128, steps = 12;
    const size_t n = (size_t)w * h * 3;
    gen_backend_t *b = s_open(GEN_BACKEND_CPU);
    gen_params_t p = s_params("green valley in summer", 5, w, h, steps);
    char err[256];
    ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), 0);
    ck_assert_ptr_null(gen_pixels(b));
    uint8_t *prev = malloc(n), *cur = malloc(n);
    ck_assert_int_eq(gen_snapshot(b, prev), 0);
    for (uint32_t k = 1; k <= steps; k++) {
        gen_status_t st;
        do
            st = s_advance(b);
        while (st == GEN_MORE && gen_steps_done(b) < k);
        ck_assert_int_ne(st, GEN_ERROR);
        ck_assert_uint_eq(gen_steps_done(b), k);
        ck_assert_int_eq(st, k == steps ? GEN_DONE : GEN_MORE);
        ck_assert_int_eq(gen_snapshot(b, cur), 0);
        size_t changed = 0;
        for (size_t i = 0; i < n; i++)
            changed += cur[i] != prev[i];
        ck_assert_msg(changed > n / 20, "step %u changed only %zu of %zu values", k, changed, n);
        memcpy(prev, cur, n);
    }
    ck_assert_ptr_nonnull(gen_pixels(b));
    ck_assert_int_eq(memcmp(gen_pixels(b), cur, n), 0);
    ck_assert_int_eq(gen_advance(b), GEN_DONE); /* stays done */
    free(prev);
    free(cur);
    gen_backend_close(&b);
}
END_TEST

/* A 512x512 CPU step is cut into several tiles on the pool, several
 * slices inline; an abort in the middle of a step leaves the backend
 * reusable, and the next image is unaffected, on either. */
START_TEST(test_slices_and_abort)
{
    const uint32_t w = 512, h = 512;
    gen_params_t p = s_params("mountains at sunset", 9, w, h, 3);
    gen_params_t small = s_params("abstract", 2, 64, 64, 2);
    char err[256];
    gen_backend_t *b = s_open(GEN_BACKEND_CPU);
    uint8_t *fresh = s_render(b, &p);
    gen_backend_close(&b);

    /* inline: one band per call, on this thread */
    gen_pool_t *inl;
    b = s_open_on(0, &inl);
    ck_assert_uint_gt(gen_slices_per_step(b, w, h), 1);
    ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), 0);
    uint32_t slices = 0;
    while (gen_steps_done(b) == 0) {
        ck_assert_int_eq(gen_advance(b), GEN_MORE);
        slices++;
    }
    ck_assert_uint_gt(slices, 1);
    ck_assert_uint_eq(slices, gen_slices_per_step(b, w, h));
    printf("slices: %u per 512x512 CPU step\n", slices);
    for (uint32_t i = 0; i < slices / 2; i++) /* half-way through the second step */
        ck_assert_int_eq(gen_advance(b), GEN_MORE);
    gen_abort(b);
    ck_assert_uint_eq(gen_steps_done(b), 0);
    ck_assert_ptr_null(gen_pixels(b));
    ck_assert_int_eq(gen_advance(b), GEN_ERROR);
    uint8_t *s1 = s_render(b, &small);
    uint8_t *again = s_render(b, &p);
    ck_assert_int_eq(memcmp(again, fresh, (size_t)w * h * 3), 0);
    free(again);
    free(s1);
    gen_backend_close(&b);
    gen_pool_destroy(&inl);

    /* on a pool: a step is queued whole and the call returns; aborted
     * with its tiles queued or running, again and again */
    gen_pool_t *pool;
    b = s_open_on(2, &pool);
    ck_assert_uint_gt(gen_slices_per_step(b, w, h), 1);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), 0);
        if (i % 2)
            ck_assert_int_eq(s_advance(b), GEN_MORE); /* step 1 done */
        ck_assert_int_eq(gen_advance(b), GEN_WAIT);   /* a step queued */
        gen_abort(b);
        ck_assert_uint_eq(gen_steps_done(b), 0);
        ck_assert_ptr_null(gen_pixels(b));
        ck_assert_int_eq(gen_advance(b), GEN_ERROR);
    }
    s1 = s_render(b, &small);
    again = s_render(b, &p);
    ck_assert_int_eq(memcmp(again, fresh, (size_t)w * h * 3), 0);
    gen_backend_close(&b);
    gen_pool_destroy(&pool);
    free(s1);
    free(again);
    free(fresh);
}
END_TEST

static atomic_int s_cpu_wakeups;

static void s_cpu_wakeup(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* On the pool, the wakeup comes once per step, from the pool, and every
 * GEN_WAIT is followed by one (a loop that waits for it never hangs). */
START_TEST(test_cpu_wakeup_per_step)
{
    gen_backend_t *b = s_open(GEN_BACKEND_CPU);
    gen_backend_set_wakeup(b, s_cpu_wakeup, &s_cpu_wakeups);
    gen_params_t p = s_params("a quiet lake", 4, 256, 128, 5);
    char err[256];
    ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), 0);
    int waits = 0;
    gen_status_t st;
    while ((st = gen_advance(b)) != GEN_DONE) {
        ck_assert_int_ne(st, GEN_ERROR);
        if (st == GEN_WAIT) {
            ck_assert_int_eq(gen_wait(b), 0);
            waits++;
            ck_assert_int_eq(atomic_load(&s_cpu_wakeups), waits);
        }
    }
    ck_assert_int_eq(waits, 5);
    ck_assert_uint_eq(gen_steps_done(b), 5);
    uint8_t *again = s_render(b, &p);
    ck_assert_int_eq(memcmp(again, gen_pixels(b), 256 * 128 * 3), 0);
    ck_assert_int_eq(atomic_load(&s_cpu_wakeups), 10);
    free(again);
    gen_backend_close(&b);
}
END_TEST

/* A begin while an image is half done drops it. */
START_TEST(test_begin_drops_in_flight)
{
    gen_backend_t *b = s_open(GEN_BACKEND_CPU);
    gen_params_t p = s_params("a quiet lake", 4, 128, 128, 6);
    gen_params_t other = s_params("abstract", 4, 256, 64, 6);
    char err[256];
    ck_assert_int_eq(gen_begin(b, &other, err, sizeof err), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_ne(gen_advance(b), GEN_ERROR);
    uint8_t *a = s_render(b, &p);
    gen_backend_close(&b);
    b = s_open(GEN_BACKEND_CPU);
    uint8_t *c = s_render(b, &p);
    ck_assert_int_eq(memcmp(a, c, 128 * 128 * 3), 0);
    free(a);
    free(c);
    gen_backend_close(&b);
}
END_TEST

/* -------------------------------------------------------------- previews */

/* The reference: img (w x h RGB8) box-averaged by an integer factor f. */
static uint8_t *s_box(const uint8_t *img, uint32_t w, uint32_t h, uint32_t f)
{
    uint32_t ow = w / f, oh = h / f;
    uint8_t *out = malloc((size_t)ow * oh * 3);
    for (uint32_t oy = 0; oy < oh; oy++)
        for (uint32_t ox = 0; ox < ow; ox++)
            for (int c = 0; c < 3; c++) {
                double sum = 0;
                for (uint32_t y = oy * f; y < (oy + 1) * f; y++)
                    for (uint32_t x = ox * f; x < (ox + 1) * f; x++)
                        sum += img[((size_t)y * w + x) * 3 + c];
                out[((size_t)oy * ow + ox) * 3 + c] = (uint8_t)lround(sum / (f * f));
            }
    return out;
}

/* Runs the image in flight up to the end of step k. */
static void s_advance_to_step(gen_backend_t *b, uint32_t k)
{
    while (gen_steps_done(b) < k)
        ck_assert_int_ne(s_advance(b), GEN_ERROR);
    ck_assert_uint_eq(gen_steps_done(b), k);
}

/* The preview of a 512x256 image is 128x64, and it is the snapshot of the
 * state box-averaged 4x4, after a first step, in the middle and at the
 * end; a 64x64 image stays 64x64 and is the snapshot itself. */
START_TEST(test_preview_is_a_downsample)
{
    const uint32_t w = 512, h = 256, steps = 6;
    gen_backend_t *b = s_open(GEN_BACKEND_CPU);
    uint8_t *prev = malloc(PREVIEW_SIZE_MAX * PREVIEW_SIZE_MAX * 3);
    uint8_t *full = malloc((size_t)w * h * 3);
    uint32_t pw = 0, ph = 0;
    char err[256];

    ck_assert_int_eq(gen_preview(b, PREVIEW_SIZE_MAX, prev, &pw, &ph), -1); /* no image */
    ck_assert_str_ne(gen_error(b), "");
    gen_params_t p = s_params("mountains at sunset", 8, w, h, steps);
    ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), 0);
    ck_assert_int_eq(gen_preview(b, PREVIEW_SIZE_MAX, prev, &pw, &ph), -1); /* no step yet */
    ck_assert_int_eq(gen_advance(b), GEN_WAIT);
    ck_assert_int_eq(gen_preview(b, PREVIEW_SIZE_MAX, prev, &pw, &ph), -1); /* step 1 queued */
    ck_assert_int_eq(gen_snapshot(b, full), -1); /* the pool's meanwhile */

    const uint32_t at[] = {1, 3, steps};
    for (size_t i = 0; i < sizeof at / sizeof *at; i++) {
        s_advance_to_step(b, at[i]);
        ck_assert_int_eq(gen_preview(b, PREVIEW_SIZE_MAX, prev, &pw, &ph), 0);
        ck_assert_uint_eq(pw, 128);
        ck_assert_uint_eq(ph, 64);
        ck_assert_int_eq(gen_snapshot(b, full), 0);
        uint8_t *ref = s_box(full, w, h, 4);
        int m = s_max_abs_diff(prev, ref, (size_t)pw * ph * 3);
        ck_assert_msg(m <= 1, "step %u: preview differs from the box average by %d", at[i], m);
        free(ref);
    }
    ck_assert_int_eq(gen_advance(b), GEN_DONE);
    ck_assert_int_eq(gen_preview(b, 0, prev, &pw, &ph), -1);
    gen_abort(b);
    ck_assert_int_eq(gen_preview(b, PREVIEW_SIZE_MAX, prev, &pw, &ph), -1);

    gen_params_t small = s_params("abstract", 3, 64, 64, 3);
    ck_assert_int_eq(gen_begin(b, &small, err, sizeof err), 0);
    s_advance_to_step(b, 2);
    ck_assert_int_eq(gen_preview(b, PREVIEW_SIZE_MAX, prev, &pw, &ph), 0);
    ck_assert_uint_eq(pw, 64);
    ck_assert_uint_eq(ph, 64);
    ck_assert_int_eq(gen_snapshot(b, full), 0);
    ck_assert_int_eq(memcmp(prev, full, 64 * 64 * 3), 0);
    free(full);
    free(prev);
    gen_backend_close(&b);
}
END_TEST

/* Sizes that do not divide: the longest side is the limit, the other
 * keeps the ratio (rounded), portrait and landscape alike; and a flat
 * colour region stays that colour (the boxes tile the image, none empty). */
START_TEST(test_preview_sizes)
{
    const struct {
        uint32_t w, h, max, pw, ph;
    } cases[] = {
        {200, 120, 128, 128, 77},    {120, 200, 128, 77, 128}, {2048, 64, 128, 128, 4},
        {64, 2048, 128, 4, 128},     {128, 64, 128, 128, 64},  {136, 136, 128, 128, 128},
        {2048, 2048, 128, 128, 128}, {512, 256, 1, 1, 1},
    };
    gen_backend_t *b = s_open(GEN_BACKEND_CPU);
    uint8_t *prev = malloc(PREVIEW_SIZE_MAX * PREVIEW_SIZE_MAX * 3);
    char err[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        gen_params_t p = s_params("a quiet lake", 2, cases[i].w, cases[i].h, 1);
        ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), 0);
        s_advance_to_step(b, 1);
        uint32_t pw = 0, ph = 0;
        ck_assert_int_eq(gen_preview(b, cases[i].max, prev, &pw, &ph), 0);
        ck_assert_msg(pw == cases[i].pw && ph == cases[i].ph, "%ux%u max %u: %ux%u, not %ux%u",
                      cases[i].w, cases[i].h, cases[i].max, pw, ph, cases[i].pw, cases[i].ph);
    }
    free(prev);
    gen_backend_close(&b);
}
END_TEST

/* Not an assertion (the machine is noisy): what a preview costs on the
 * generator's loop, which decides that the generator encodes it inline. */
START_TEST(test_preview_cost)
{
    const uint32_t sizes[] = {512, 2048};
    gen_backend_t *b = s_open(GEN_BACKEND_CPU);
    uint8_t *prev = malloc(PREVIEW_SIZE_MAX * PREVIEW_SIZE_MAX * 3);
    char err[256];
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        gen_params_t p = s_params("a red fox", 1, sizes[i], sizes[i], 1);
        ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), 0);
        s_advance_to_step(b, 1);
        uint32_t pw, ph;
        const int reps = 5;
        double t0 = clock_mono_ms();
        for (int r = 0; r < reps; r++)
            ck_assert_int_eq(gen_preview(b, PREVIEW_SIZE_MAX, prev, &pw, &ph), 0);
        double down = (clock_mono_ms() - t0) / reps;
        uint8_t *png;
        size_t len = 0;
        t0 = clock_mono_ms();
        for (int r = 0; r < reps; r++) {
            ck_assert_int_eq(gen_png_encode(prev, pw, ph, &png, &len, err, sizeof err), 0);
            free(png);
        }
        double enc = (clock_mono_ms() - t0) / reps;
        printf("preview cost: %ux%u -> %ux%u: downsample %.3f ms, png encode %.3f ms (%zu bytes)\n",
               sizes[i], sizes[i], pw, ph, down, enc, len);
    }
    free(prev);
    gen_backend_close(&b);
}
END_TEST

/* -------------------------------------------------------------- backends */

/* Runs gen_backend_open(kind) with stderr captured; returns the backend
 * (or NULL) and the captured text in buf. */
static gen_backend_t *s_open_captured(gen_backend_kind_t kind, char *err, size_t errlen, char *buf,
                                      size_t buflen)
{
    char path[] = "/tmp/check_generator.XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    gen_backend_t *b = gen_backend_open(kind, err, errlen);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, buf, buflen - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    close(fd);
    return b;
}

START_TEST(test_backend_selection)
{
    char err[256] = "", log[4096];
    int devices = gen_cuda_device_count();
    ck_assert_int_ge(devices, 0);
    gen_backend_t *b = s_open_captured(GEN_BACKEND_AUTO, err, sizeof err, log, sizeof log);
    ck_assert_msg(b != NULL, "auto: %s", err);
    if (devices == 0) {
        ck_assert_str_eq(gen_backend_name(b), "cpu");
        /* exactly one line, saying why */
        const char *nl = strchr(log, '\n');
        ck_assert_msg(nl && !strchr(nl + 1, '\n') && strstr(log, "no CUDA device")
                          && strstr(log, "CPU"),
                      "auto fallback log: '%s'", log);
    } else {
        ck_assert_str_eq(gen_backend_name(b), "cuda");
    }
    gen_backend_close(&b);

    b = s_open_captured(GEN_BACKEND_CUDA, err, sizeof err, log, sizeof log);
    if (devices == 0) {
        ck_assert_ptr_null(b);
        ck_assert_msg(strstr(err, "CUDA") != NULL, "cuda without a device: '%s'", err);
        printf("cuda without a device: %s\n", err);
    } else {
        ck_assert_msg(b != NULL, "cuda: %s", err);
        ck_assert_str_eq(gen_backend_name(b), "cuda");
        gen_backend_close(&b);
    }

    b = s_open(GEN_BACKEND_CPU);
    ck_assert_str_eq(gen_backend_name(b), "cpu");
    gen_backend_set_wakeup(b, NULL, NULL); /* a no-op on the CPU */
    gen_backend_close(&b);
    gen_backend_close(&b); /* NULL is fine */
}
END_TEST

START_TEST(test_png_roundtrip)
{
    const uint32_t w = 96, h = 64;
    gen_backend_t *b = s_open(GEN_BACKEND_CPU);
    gen_params_t p = s_params("a red fox", 1, w, h, 4);
    uint8_t *rgb = s_render(b, &p);
    uint8_t *png, *back;
    size_t len;
    uint32_t bw, bh;
    char err[256];
    ck_assert_int_eq(gen_png_encode(rgb, w, h, &png, &len, err, sizeof err), 0);
    ck_assert_uint_gt(len, 8);
    ck_assert_int_eq(memcmp(png, "\x89PNG\r\n\x1a\n", 8), 0);
    ck_assert_int_eq(gen_png_decode(png, len, &back, &bw, &bh, err, sizeof err), 0);
    ck_assert_uint_eq(bw, w);
    ck_assert_uint_eq(bh, h);
    ck_assert_int_eq(memcmp(back, rgb, (size_t)w * h * 3), 0);
    free(back);
    /* hostile input is an error, not a crash */
    ck_assert_int_eq(gen_png_decode(png, len / 2, &back, &bw, &bh, err, sizeof err), -1);
    ck_assert_ptr_null(back);
    ck_assert_int_eq(
        gen_png_decode((const uint8_t *)"not a png", 9, &back, &bw, &bh, err, sizeof err), -1);
    free(png);
    free(rgb);
    gen_backend_close(&b);
}
END_TEST

/* ------------------------------------------------------------------ CUDA */

START_TEST(test_parity_cpu_cuda)
{
    if (!s_have_cuda("parity")) {
        printf("parity: skipped (no CUDA device)\n");
        fflush(stdout);
        return;
    }
    const char *prompts[] = {"a red fox in a snowy forest", "abstract neon swirl",
                             "a quiet lake at sunset", "mountains at night"};
    gen_backend_t *cpu = s_open(GEN_BACKEND_CPU), *gpu = s_open(GEN_BACKEND_CUDA);
    int worst = 0;
    for (size_t i = 0; i < sizeof prompts / sizeof *prompts; i++) {
        gen_params_t p = s_params(prompts[i], 11 + i, 256, 256, 20);
        uint8_t *a = s_render(cpu, &p), *g = s_render(gpu, &p);
        int m = s_max_abs_diff(a, g, 256 * 256 * 3);
        double mean = s_mean_abs_diff(a, g, 256 * 256 * 3);
        printf("parity: '%s' 256x256 20 steps: max diff %d/255, mean %.4f\n", prompts[i], m, mean);
        ck_assert_msg(m <= 2, "'%s': CPU and CUDA differ by %d/255", prompts[i], m);
        worst = m > worst ? m : worst;
        free(a);
        free(g);
    }
    printf("parity: ran, max diff %d/255 (limit 2)\n", worst);
    fflush(stdout);
    gen_backend_close(&gpu);
    gen_backend_close(&cpu);
}
END_TEST

static atomic_int s_wakeups;

static void s_count_wakeup(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* The CUDA rhythm: every advance returns at once; one step at a time is
 * queued; each completion calls the wakeup; an abort mid-image leaves the
 * backend reusable. */
START_TEST(test_cuda_async)
{
    if (!s_have_cuda("cuda async"))
        return;
    gen_backend_t *b = s_open(GEN_BACKEND_CUDA);
    gen_backend_set_wakeup(b, s_count_wakeup, &s_wakeups);
    gen_params_t p = s_params("mountains at sunset", 3, 512, 512, 10);
    char err[256];
    ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), 0);
    gen_status_t st;
    uint32_t last = 0;
    while ((st = gen_advance(b)) != GEN_DONE) {
        ck_assert_msg(st == GEN_WAIT, "advance: %d (%s)", st, gen_error(b));
        uint32_t done = gen_steps_done(b);
        ck_assert_uint_le(done, last + 1); /* never more than one step per advance */
        last = done;
        usleep(50);
    }
    ck_assert_uint_eq(gen_steps_done(b), 10);
    for (int i = 0; i < 1000 && atomic_load(&s_wakeups) < 10; i++)
        usleep(1000);
    ck_assert_int_eq(atomic_load(&s_wakeups), 10);
    uint8_t *first = malloc(512 * 512 * 3);
    memcpy(first, gen_pixels(b), 512 * 512 * 3);

    ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), 0);
    ck_assert_int_eq(gen_advance(b), GEN_WAIT);
    gen_abort(b);
    uint8_t *again = s_render(b, &p);
    ck_assert_int_eq(memcmp(first, again, 512 * 512 * 3), 0);
    free(first);
    free(again);
    gen_backend_close(&b);
}
END_TEST

/* On CUDA a preview is refused at once, never waited for. */
START_TEST(test_cuda_preview_refused)
{
    if (!s_have_cuda("cuda preview"))
        return;
    gen_backend_t *b = s_open(GEN_BACKEND_CUDA);
    gen_params_t p = s_params("mountains at sunset", 3, 256, 256, 4);
    uint8_t *rgb = s_render(b, &p);
    uint8_t *prev = malloc(PREVIEW_SIZE_MAX * PREVIEW_SIZE_MAX * 3);
    uint32_t pw, ph;
    ck_assert_int_eq(gen_preview(b, PREVIEW_SIZE_MAX, prev, &pw, &ph), -1);
    ck_assert_str_eq(gen_error(b), "previews not supported on cuda");
    free(prev);
    free(rgb);
    gen_backend_close(&b);
}
END_TEST

/* ------------------------------------------------------------------ suite */

static Suite *s_suite(void)
{
    Suite *s = suite_create("generator");
    TCase *tc = tcase_create("sampler");
    tcase_add_test(tc, test_philox_known_answers);
    tcase_add_test(tc, test_noise_is_gaussian);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_kind_parse);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("images");
    tcase_add_test(tc, test_deterministic_png);
    tcase_add_test(tc, test_prompts_seeds_indices_differ);
    tcase_add_test(tc, test_not_trivial);
    tcase_add_test(tc, test_each_step_changes_state);
    tcase_add_test(tc, test_slices_and_abort);
    tcase_add_test(tc, test_begin_drops_in_flight);
    tcase_add_test(tc, test_cpu_wakeup_per_step);
    tcase_add_test(tc, test_png_roundtrip);
    tcase_add_test(tc, test_preview_is_a_downsample);
    tcase_add_test(tc, test_preview_sizes);
    tcase_add_test(tc, test_preview_cost);
    /* sanitizer builds are several times slower */
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);

    tc = tcase_create("backends");
    tcase_add_test(tc, test_backend_selection);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    /* its own case, so a skip is visible on its own line */
    tc = tcase_create("cuda");
    tcase_add_test(tc, test_parity_cpu_cuda);
    tcase_add_test(tc, test_cuda_async);
    tcase_add_test(tc, test_cuda_preview_refused);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
