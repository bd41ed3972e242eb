/*
 * cpu.c - the CPU engine: plain C loops over sampler.h, in tiles run by
 * the process's compute pool (pool.h).
 *
 * Each pixel's update reads only that pixel's state, so a whole step can be
 * queued at once: gen_cpu_advance() submits the step's tiles (bands of rows,
 * each ~0.3-0.6 ms) and returns GEN_WAIT; the pool thread that runs the
 * last tile marks the step done and calls the wakeup; the next
 * gen_cpu_advance() finds it done and returns GEN_MORE without submitting,
 * so between steps (until the next call) no thread touches the state:
 * progress, previews and snapshots read it then.
 *
 * An abort takes the queued tiles off the pool and returns; a tile already
 * running finishes on its own. That is why the buffers live in an image
 * (s_image_t) with a reference count: the engine holds one, a batch in the
 * pool holds one until its done callback, and the last one frees it. The
 * next gen_cpu_begin reuses an image only when the pool no longer holds it,
 * else it takes fresh buffers, so a cancel never waits for a tile. A late
 * wakeup from an aborted step is harmless: "done" is a flag of that image,
 * never of the new one.
 *
 * On an inline pool (no threads: --compute-pool per-generator) the engine
 * computes on the calling thread instead, one band of rows per call, as it
 * did before the pool.
 */
#include "config.h"

#include "actors/generator/engines.h"
#include "actors/generator/pool.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pixels per tile: ~0.3-0.6 ms at the sampler's cost, the longest a cancel
 * waits for a running tile, and short enough that the round-robin turns
 * often between the engines sharing the pool. */
#define S_PIXELS_PER_TILE 2048

/* One image's buffers and the step being run on them. */
typedef struct {
    gen_pool_batch_t batch; /* first: the pool hands it back */
    atomic_int refs;        /* the engine's, and the pool's while a batch is out */
    atomic_bool step_done;  /* set by the last tile's done, read by advance */
    void (*wake)(void *arg);
    void *wake_arg;
    sampler_scene_t scene;
    sampler_step_t step; /* of the batch in the pool; fixed while it is there */
    uint32_t rows;       /* per tile */
    float *state;
    uint8_t *rgb;
    size_t cap_px;
} s_image_t;

struct gen_cpu {
    gen_pool_t *pool;
    gen_pool_client_t *client; /* NULL on an inline pool */
    void (*wake)(void *arg);
    void *wake_arg;

    s_image_t *im;    /* the image begun (finished too), NULL after an abort */
    s_image_t *spare; /* an image no tile uses any more, for the next begin */
    uint32_t steps, k, next_row;
    bool queued; /* step k is in the pool */
    int active;
};

static void s_image_unref(s_image_t *im)
{
    if (im && atomic_fetch_sub(&im->refs, 1) == 1) {
        free(im->state);
        free(im->rgb);
        free(im);
    }
}

static void s_rows(const s_image_t *im, const sampler_step_t *st, uint32_t y0, uint32_t y1)
{
    const sampler_scene_t *sc = &im->scene;
    uint32_t w = sc->width;
    for (uint32_t y = y0; y < y1; y++) {
        float *s = im->state + (size_t)y * w * 3;
        uint8_t *p = im->rgb + (size_t)y * w * 3;
        for (uint32_t x = 0; x < w; x++)
            sampler_step_pixel(sc, st, x, y, s + 3 * x, p + 3 * x);
    }
}

/* On a pool thread. */
static void s_tile(gen_pool_batch_t *b, uint32_t tile)
{
    s_image_t *im = (s_image_t *)b;
    uint32_t y0 = tile * im->rows, y1 = y0 + im->rows;
    s_rows(im, &im->step, y0, y1 < im->scene.height ? y1 : im->scene.height);
}

/* On the pool thread of the last tile (or in gen_pool_abort). */
static void s_tiles_done(gen_pool_batch_t *b, bool completed)
{
    s_image_t *im = (s_image_t *)b;
    void (*wake)(void *) = im->wake;
    void *arg = im->wake_arg;
    if (completed) /* release: the tiles' writes before the flag */
        atomic_store_explicit(&im->step_done, true, memory_order_release);
    s_image_unref(im); /* the engine still holds it, unless it was aborted */
    if (completed && wake)
        wake(arg);
}

gen_cpu_t *gen_cpu_open(gen_pool_t *pool, char *err, size_t errlen)
{
    gen_cpu_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->pool = pool;
    if (gen_pool_threads(pool) > 0 && !(c->client = gen_pool_join(pool))) {
        snprintf(err, errlen, "out of memory");
        free(c);
        return NULL;
    }
    return c;
}

void gen_cpu_close(gen_cpu_t **cp)
{
    gen_cpu_t *c = *cp;
    if (!c)
        return;
    gen_cpu_abort(c);
    gen_pool_leave(&c->client); /* waits for a tile still running */
    s_image_unref(c->spare);
    free(c);
    *cp = NULL;
}

void gen_cpu_set_wakeup(gen_cpu_t *c, void (*fn)(void *arg), void *arg)
{
    c->wake = fn;
    c->wake_arg = arg;
}

int gen_cpu_begin(gen_cpu_t *c, const sampler_scene_t *sc, uint32_t steps, char *err, size_t errlen)
{
    gen_cpu_abort(c);
    size_t px = (size_t)sc->width * sc->height;
    s_image_t *im = c->spare;
    c->spare = NULL;
    if (!im || px > im->cap_px) {
        s_image_unref(im);
        /* no memset: the first step draws the noise and never reads the state */
        im = calloc(1, sizeof *im);
        float *state = malloc(px * 3 * sizeof *state);
        uint8_t *rgb = malloc(px * 3);
        if (!im || !state || !rgb) {
            free(im);
            free(state);
            free(rgb);
            snprintf(err, errlen, "out of memory for a %ux%u image", sc->width, sc->height);
            return -1;
        }
        im->state = state;
        im->rgb = rgb;
        im->cap_px = px;
        atomic_init(&im->refs, 1);
    }
    im->scene = *sc;
    im->batch.run = s_tile;
    im->batch.done = s_tiles_done;
    c->im = im;
    c->steps = steps;
    c->k = 0;
    c->next_row = 0;
    c->active = 1;
    return 0;
}

uint32_t gen_cpu_band_rows(const gen_cpu_t *c, uint32_t width)
{
    uint32_t rows = (uint32_t)(S_PIXELS_PER_TILE / width);
    return rows < 1 ? 1 : rows;
}

/* Inline: one band of rows of step k, here. */
static gen_status_t s_advance_inline(gen_cpu_t *c)
{
    s_image_t *im = c->im;
    sampler_step_t st;
    sampler_step_init(c->k, c->steps, &st);
    uint32_t y0 = c->next_row;
    uint32_t y1 = y0 + gen_cpu_band_rows(c, im->scene.width);
    if (y1 > im->scene.height)
        y1 = im->scene.height;
    s_rows(im, &st, y0, y1);
    c->next_row = y1;
    if (y1 == im->scene.height) {
        c->next_row = 0;
        c->k++;
        if (c->k == c->steps)
            return GEN_DONE;
    }
    return GEN_MORE;
}

gen_status_t gen_cpu_advance(gen_cpu_t *c)
{
    if (!c->active)
        return GEN_ERROR;
    if (c->k == c->steps)
        return GEN_DONE;
    if (!c->client)
        return s_advance_inline(c);
    s_image_t *im = c->im;
    if (c->queued) {
        if (!atomic_load_explicit(&im->step_done, memory_order_acquire))
            return GEN_WAIT; /* the wakeup comes when it is */
        c->queued = false;
        c->k++;
        /* not the next step yet: until the next call the state is quiescent */
        return c->k == c->steps ? GEN_DONE : GEN_MORE;
    }
    sampler_step_init(c->k, c->steps, &im->step);
    im->rows = gen_cpu_band_rows(c, im->scene.width);
    im->batch.ntiles = (im->scene.height + im->rows - 1) / im->rows;
    im->wake = c->wake;
    im->wake_arg = c->wake_arg;
    atomic_store_explicit(&im->step_done, false, memory_order_relaxed);
    atomic_fetch_add(&im->refs, 1); /* the pool's, dropped by s_tiles_done */
    if (gen_pool_submit(c->client, &im->batch) < 0) {
        atomic_fetch_sub(&im->refs, 1);
        return GEN_ERROR; /* cannot happen: one batch at a time */
    }
    c->queued = true;
    return GEN_WAIT;
}

void gen_cpu_wait(gen_cpu_t *c)
{
    if (c->client && c->queued)
        gen_pool_wait(c->client);
}

uint32_t gen_cpu_steps_done(const gen_cpu_t *c)
{
    return c->active ? c->k : 0;
}

const uint8_t *gen_cpu_pixels(const gen_cpu_t *c)
{
    return c->active && c->k == c->steps ? c->im->rgb : NULL;
}

int gen_cpu_snapshot(const gen_cpu_t *c, uint8_t *rgb_out)
{
    if (!c->active || c->queued)
        return -1;
    const sampler_scene_t *sc = &c->im->scene;
    const float *state = c->im->state;
    for (uint32_t y = 0; y < sc->height; y++)
        for (uint32_t x = 0; x < sc->width; x++) {
            size_t i = ((size_t)y * sc->width + x) * 3;
            float v[3];
            /* before the first step has reached a row, its state is the noise */
            if (c->k == 0 && y >= c->next_row)
                sampler_noise(sc, x, y, v);
            else
                memcpy(v, state + i, sizeof v);
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
    if (!c->active || c->k == 0 || c->queued) /* not all written yet, or being written */
        return -1;
    const uint32_t w = c->im->scene.width, h = c->im->scene.height;
    const float *state = c->im->state;
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
                const float *row = state + (size_t)s_tap(y0, y1, j, ty) * w * 3;
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
    s_image_t *im = c->im;
    if (c->queued)
        gen_pool_abort(c->client); /* the queued tiles go; a running one finishes alone */
    c->queued = false;
    c->im = NULL;
    c->active = 0;
    c->k = 0;
    c->next_row = 0;
    if (!im)
        return;
    /* the only holder: its buffers are free for the next image */
    if (atomic_load(&im->refs) == 1 && !c->spare)
        c->spare = im;
    else
        s_image_unref(im);
}
