/*
 * cpu.c - the CPU engine: plain C loops over sampler.h, in slices.
 *
 * A slice is one band of rows of the current step, sized so it takes a few
 * milliseconds whatever the width: the generator actor gets control back
 * between slices and can see a cancel. Inside a slice the rows are shared
 * (interleaved, so sky rows and mountain rows balance) between the calling
 * thread and a small pool of helper threads owned by this engine; the call
 * returns only when the whole band is done, so between slices no helper is
 * touching the state and the caller may abort, snapshot or start over.
 *
 * Each pixel's update reads only that pixel's state, so a step is done in
 * place, band after band.
 */
#include "config.h"

#include "actors/generator/engines.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pixels one thread does per slice: ~0.3-0.6 ms at the sampler's cost, the
 * longest a cancel waits on a busy generator (helper wake-ups per slice cost
 * ~3% of throughput at this size). */
#define S_PIXELS_PER_THREAD 2048

struct gen_cpu {
    unsigned nthreads; /* including the caller */
    pthread_t *helpers;
    unsigned nhelpers;

    /* the slice being worked on, published under mu */
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* helpers: a new slice (or stop) */
    pthread_cond_t done_cv; /* caller: the last helper finished */
    uint64_t generation;    /* bumped per slice */
    unsigned pending;       /* helpers still in the current slice */
    int stop;
    sampler_step_t step;
    uint32_t y0, y1;

    /* the image */
    sampler_scene_t scene;
    uint32_t steps, k, next_row;
    int active;
    float *state;
    uint8_t *rgb;
    size_t cap_px;
};

typedef struct {
    gen_cpu_t *c;
    unsigned index; /* 1.. (the caller is 0) */
} s_helper_arg_t;

/* Thread `t` of `nthreads` does rows y0 + t, y0 + t + nthreads, ... */
static void s_rows(gen_cpu_t *c, const sampler_step_t *st, uint32_t y0, uint32_t y1, unsigned t)
{
    const sampler_scene_t *sc = &c->scene;
    uint32_t w = sc->width;
    for (uint32_t y = y0 + t; y < y1; y += c->nthreads) {
        float *s = c->state + (size_t)y * w * 3;
        uint8_t *p = c->rgb + (size_t)y * w * 3;
        for (uint32_t x = 0; x < w; x++)
            sampler_step_pixel(sc, st, x, y, s + 3 * x, p + 3 * x);
    }
}

static void *s_helper(void *arg)
{
    s_helper_arg_t *ha = arg;
    gen_cpu_t *c = ha->c;
    unsigned index = ha->index;
    free(ha);
    uint64_t seen = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stop && c->generation == seen)
            pthread_cond_wait(&c->work_cv, &c->mu);
        if (c->stop)
            break;
        seen = c->generation;
        sampler_step_t st = c->step;
        uint32_t y0 = c->y0, y1 = c->y1;
        pthread_mutex_unlock(&c->mu);
        s_rows(c, &st, y0, y1, index);
        pthread_mutex_lock(&c->mu);
        if (--c->pending == 0)
            pthread_cond_signal(&c->done_cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

gen_cpu_t *gen_cpu_open(unsigned threads, char *err, size_t errlen)
{
    gen_cpu_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->nthreads = threads < 1 ? 1 : threads;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->work_cv, NULL);
    pthread_cond_init(&c->done_cv, NULL);
    c->helpers = calloc(c->nthreads, sizeof *c->helpers);
    if (!c->helpers) {
        snprintf(err, errlen, "out of memory");
        gen_cpu_close(&c);
        return NULL;
    }
    for (unsigned i = 1; i < c->nthreads; i++) {
        s_helper_arg_t *ha = malloc(sizeof *ha);
        if (!ha) {
            snprintf(err, errlen, "out of memory");
            gen_cpu_close(&c);
            return NULL;
        }
        ha->c = c;
        ha->index = i;
        int rc = pthread_create(&c->helpers[c->nhelpers], NULL, s_helper, ha);
        if (rc != 0) {
            free(ha);
            snprintf(err, errlen, "cannot start a helper thread: %s", strerror(rc));
            gen_cpu_close(&c);
            return NULL;
        }
        c->nhelpers++;
    }
    return c;
}

void gen_cpu_close(gen_cpu_t **cp)
{
    gen_cpu_t *c = *cp;
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_broadcast(&c->work_cv);
    pthread_mutex_unlock(&c->mu);
    for (unsigned i = 0; i < c->nhelpers; i++)
        pthread_join(c->helpers[i], NULL);
    free(c->helpers);
    pthread_cond_destroy(&c->done_cv);
    pthread_cond_destroy(&c->work_cv);
    pthread_mutex_destroy(&c->mu);
    free(c->state);
    free(c->rgb);
    free(c);
    *cp = NULL;
}

int gen_cpu_begin(gen_cpu_t *c, const sampler_scene_t *sc, uint32_t steps, char *err, size_t errlen)
{
    size_t px = (size_t)sc->width * sc->height;
    if (px > c->cap_px) {
        /* no memset: the first step draws the noise and never reads the state */
        float *state = malloc(px * 3 * sizeof *state);
        uint8_t *rgb = malloc(px * 3);
        if (!state || !rgb) {
            free(state);
            free(rgb);
            snprintf(err, errlen, "out of memory for a %ux%u image", sc->width, sc->height);
            c->active = 0;
            return -1;
        }
        free(c->state);
        free(c->rgb);
        c->state = state;
        c->rgb = rgb;
        c->cap_px = px;
    }
    c->scene = *sc;
    c->steps = steps;
    c->k = 0;
    c->next_row = 0;
    c->active = 1;
    return 0;
}

uint32_t gen_cpu_band_rows(const gen_cpu_t *c, uint32_t width)
{
    uint32_t rows = (uint32_t)((size_t)S_PIXELS_PER_THREAD * c->nthreads / width);
    return rows < c->nthreads ? c->nthreads : rows;
}

gen_status_t gen_cpu_advance(gen_cpu_t *c)
{
    if (!c->active)
        return GEN_ERROR;
    if (c->k == c->steps)
        return GEN_DONE;
    sampler_step_t st;
    sampler_step_init(c->k, c->steps, &st);
    uint32_t y0 = c->next_row;
    uint32_t y1 = y0 + gen_cpu_band_rows(c, c->scene.width);
    if (y1 > c->scene.height)
        y1 = c->scene.height;

    /* publish the slice; helpers take rows t = 1.. and the caller t = 0 */
    if (c->nhelpers > 0) {
        pthread_mutex_lock(&c->mu);
        c->step = st;
        c->y0 = y0;
        c->y1 = y1;
        c->pending = c->nhelpers;
        c->generation++;
        pthread_cond_broadcast(&c->work_cv);
        pthread_mutex_unlock(&c->mu);
    }
    s_rows(c, &st, y0, y1, 0);
    if (c->nhelpers > 0) {
        pthread_mutex_lock(&c->mu);
        while (c->pending > 0)
            pthread_cond_wait(&c->done_cv, &c->mu);
        pthread_mutex_unlock(&c->mu);
    }

    c->next_row = y1;
    if (y1 == c->scene.height) {
        c->next_row = 0;
        c->k++;
        if (c->k == c->steps)
            return GEN_DONE;
    }
    return GEN_MORE;
}

uint32_t gen_cpu_steps_done(const gen_cpu_t *c)
{
    return c->active ? c->k : 0;
}

const uint8_t *gen_cpu_pixels(const gen_cpu_t *c)
{
    return c->active && c->k == c->steps ? c->rgb : NULL;
}

int gen_cpu_snapshot(const gen_cpu_t *c, uint8_t *rgb_out)
{
    if (!c->active)
        return -1;
    const sampler_scene_t *sc = &c->scene;
    for (uint32_t y = 0; y < sc->height; y++)
        for (uint32_t x = 0; x < sc->width; x++) {
            size_t i = ((size_t)y * sc->width + x) * 3;
            float v[3];
            /* before the first step has reached a row, its state is the noise */
            if (c->k == 0 && y >= c->next_row)
                sampler_noise(sc, x, y, v);
            else
                memcpy(v, c->state + i, sizeof v);
            for (int ch = 0; ch < 3; ch++)
                rgb_out[i + ch] = sampler_to_u8(v[ch]);
        }
    return 0;
}

/* sampler_to_u8 without its floorf, a libm call on baseline x86-64 that
 * made a 2048x2048 preview take ~30 ms: the value is at least 0.5, where
 * truncation is floor, so the result is the same for every input. */
static inline uint32_t s_to_u8(float v)
{
    float c = sampler_clamp(0.5f * v + 0.5f, 0.0f, 1.0f);
    return (uint32_t)(c * 255.0f + 0.5f);
}

/* Rows (or columns) of a preview box that are read: all of a box up to
 * S_PREVIEW_TAPS long, else S_PREVIEW_TAPS evenly spaced ones. */
#define S_PREVIEW_TAPS 4

static inline uint32_t s_tap(uint32_t lo, uint32_t hi, uint32_t i, uint32_t taps)
{
    return taps == hi - lo ? lo + i : lo + (uint32_t)((2ull * i + 1) * (hi - lo) / (2ull * taps));
}

/* Each preview pixel is the mean of the 8-bit values of the source pixels
 * in its box: the same values gen_cpu_snapshot gives, averaged (averaging
 * the floats first would differ where sampler_to_u8 clamps: sun, stars).
 * Box edges are floor(i * size / out), so boxes tile the image exactly.
 * Up to 512x512 (boxes of 4x4 at most) every source pixel is read; past
 * it, S_PREVIEW_TAPS x S_PREVIEW_TAPS evenly spaced pixels of each box, so
 * that a preview costs the loop the same ~1 ms whatever the image size
 * (a full read took ~15 ms at 2048x2048: a cancel would wait that long). */
int gen_cpu_preview(const gen_cpu_t *c, uint32_t out_w, uint32_t out_h, uint8_t *rgb_out)
{
    if (!c->active || c->k == 0) /* the state is not all written yet */
        return -1;
    const uint32_t w = c->scene.width, h = c->scene.height;
    for (uint32_t oy = 0; oy < out_h; oy++) {
        uint32_t y0 = (uint32_t)((uint64_t)oy * h / out_h);
        uint32_t y1 = (uint32_t)((uint64_t)(oy + 1) * h / out_h);
        uint32_t ty = y1 - y0 < S_PREVIEW_TAPS ? y1 - y0 : S_PREVIEW_TAPS;
        for (uint32_t ox = 0; ox < out_w; ox++) {
            uint32_t x0 = (uint32_t)((uint64_t)ox * w / out_w);
            uint32_t x1 = (uint32_t)((uint64_t)(ox + 1) * w / out_w);
            uint32_t tx = x1 - x0 < S_PREVIEW_TAPS ? x1 - x0 : S_PREVIEW_TAPS;
            uint32_t sum[3] = {0, 0, 0};
            for (uint32_t j = 0; j < ty; j++) {
                const float *row = c->state + (size_t)s_tap(y0, y1, j, ty) * w * 3;
                for (uint32_t i = 0; i < tx; i++) {
                    const float *px = row + (size_t)s_tap(x0, x1, i, tx) * 3;
                    sum[0] += s_to_u8(px[0]);
                    sum[1] += s_to_u8(px[1]);
                    sum[2] += s_to_u8(px[2]);
                }
            }
            uint32_t n = tx * ty;
            uint8_t *p = rgb_out + ((size_t)oy * out_w + ox) * 3;
            for (int ch = 0; ch < 3; ch++)
                p[ch] = (uint8_t)((sum[ch] + n / 2) / n);
        }
    }
    return 0;
}

void gen_cpu_abort(gen_cpu_t *c)
{
    /* nothing runs between slices: dropping the image is forgetting it */
    c->active = 0;
    c->k = 0;
    c->next_row = 0;
}
