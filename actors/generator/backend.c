/*
 * backend.c - opens the CPU, the CUDA or the plugin engine and puts one
 * interface in front of them: parameter checks, the scene built from the
 * prompt (for the built-in engines), errors.
 *
 * The engines do the pixel work; this file never blocks except in
 * gen_render_sync(), which is for render, tests and benches.
 */
#include "config.h"

#include "actors/generator/backend.h"

#include "actors/generator/engines.h"
#include "actors/generator/pool.h"
#include "runtime/clock.h"
#include "runtime/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct gen_backend {
    gen_backend_kind_t kind; /* CPU, CUDA or PLUGIN, never AUTO */
    gen_cpu_t *cpu;
    gen_cuda_t *cuda;
    gen_plug_t *plug;
    uint32_t width, height, steps;
    int active;
    char err[256];
};

int gen_backend_kind_parse(const char *s, gen_backend_kind_t *out)
{
    if (!s)
        return -1;
    if (!strcmp(s, "auto"))
        *out = GEN_BACKEND_AUTO;
    else if (!strcmp(s, "cpu"))
        *out = GEN_BACKEND_CPU;
    else if (!strcmp(s, "cuda"))
        *out = GEN_BACKEND_CUDA;
    else if (gen_backend_plugin_spec(s))
        *out = GEN_BACKEND_PLUGIN;
    else
        return -1;
    return 0;
}

const char *gen_backend_plugin_spec(const char *s)
{
    return s && !strncmp(s, "plugin:", 7) ? s + 7 : NULL;
}

int gen_cuda_device_count(void)
{
    return gen_cuda_count();
}

unsigned gen_cpu_threads(void)
{
    const char *env = getenv("IMAGEJOBS_GEN_THREADS");
    if (env && *env) {
        char *end;
        long n = strtol(env, &end, 10);
        if (!*end && n >= 1 && n <= 64)
            return (unsigned)n;
        log_warn("IMAGEJOBS_GEN_THREADS='%s' is not 1..64: ignored", env);
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 16 ? 16 : (unsigned)n);
}

int gen_params_check(const gen_params_t *p, char *err, size_t errlen)
{
    if (!p->prompt || !p->prompt[0]) {
        snprintf(err, errlen, "prompt must not be empty");
        return -1;
    }
    size_t len = strnlen(p->prompt, GEN_PROMPT_MAX + 1);
    if (len > GEN_PROMPT_MAX) {
        snprintf(err, errlen, "prompt must be at most %d bytes", GEN_PROMPT_MAX);
        return -1;
    }
    const struct {
        const char *name;
        uint32_t v;
    } sizes[] = {{"width", p->width}, {"height", p->height}};
    for (size_t i = 0; i < 2; i++)
        if (sizes[i].v < GEN_SIZE_MIN || sizes[i].v > GEN_SIZE_MAX
            || sizes[i].v % GEN_SIZE_MULTIPLE) {
            snprintf(err, errlen, "%s must be a multiple of %d from %d to %d, not %u",
                     sizes[i].name, GEN_SIZE_MULTIPLE, GEN_SIZE_MIN, GEN_SIZE_MAX, sizes[i].v);
            return -1;
        }
    if (p->steps < GEN_STEPS_MIN || p->steps > GEN_STEPS_MAX) {
        snprintf(err, errlen, "steps must be from %d to %d, not %u", GEN_STEPS_MIN, GEN_STEPS_MAX,
                 p->steps);
        return -1;
    }
    return 0;
}

gen_backend_t *gen_backend_open(gen_backend_kind_t kind, char *err, size_t errlen)
{
    return gen_backend_open_device(kind, 0, err, errlen);
}

gen_backend_t *gen_backend_open_device(gen_backend_kind_t kind, int device, char *err,
                                       size_t errlen)
{
    return gen_backend_open_with(kind, device, 0, err, errlen);
}

gen_backend_t *gen_backend_open_with(gen_backend_kind_t kind, int device, gen_pool_t *pool,
                                     char *err, size_t errlen)
{
    return gen_backend_open_for(kind, NULL, device, pool, err, errlen);
}

gen_backend_t *gen_backend_open_for(gen_backend_kind_t kind, const gen_plugin_t *plugin, int device,
                                    gen_pool_t *pool, char *err, size_t errlen)
{
    if (kind == GEN_BACKEND_PLUGIN && !plugin) {
        snprintf(err, errlen, "the plugin backend needs a plugin loaded (gen_plugin_load)");
        return NULL;
    }
    gen_backend_t *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (kind == GEN_BACKEND_PLUGIN) {
        b->kind = kind;
        if (gen_plug_open(plugin, device, &b->plug, err, errlen) < 0) {
            free(b);
            return NULL;
        }
        return b;
    }
    char why[200];
    if (kind == GEN_BACKEND_AUTO) {
        if (gen_cuda_count() == 0) {
            log_info("generator: no CUDA device, using the CPU backend");
            kind = GEN_BACKEND_CPU;
        } else if (gen_cuda_open(device, &b->cuda, why, sizeof why) < 0) {
            /* a device that is there but unusable (memory, mode): still auto */
            log_warn("generator: CUDA device unusable (%s), using the CPU backend", why);
            kind = GEN_BACKEND_CPU;
        } else {
            kind = GEN_BACKEND_CUDA;
        }
    } else if (kind == GEN_BACKEND_CUDA && gen_cuda_open(device, &b->cuda, why, sizeof why) < 0) {
        snprintf(err, errlen, "cannot use the CUDA backend: %s", why);
        free(b);
        return NULL;
    }
    b->kind = kind;
    if (kind == GEN_BACKEND_CPU) {
        if (!pool && !(pool = gen_pool_process())) {
            snprintf(err, errlen, "the CPU backend has no compute pool (threads refused)");
            free(b);
            return NULL;
        }
        /* inline, this thread computes: batch work, below the control path */
        if (gen_pool_threads(pool) == 0)
            gen_pool_nice_self(GEN_POOL_NICE);
        if (!(b->cpu = gen_cpu_open(pool, err, errlen))) {
            free(b);
            return NULL;
        }
    }
    return b;
}

void gen_backend_close(gen_backend_t **bp)
{
    gen_backend_t *b = *bp;
    if (!b)
        return;
    gen_cpu_close(&b->cpu);
    gen_cuda_close(&b->cuda);
    gen_plug_close(&b->plug);
    free(b);
    *bp = NULL;
}

const char *gen_backend_name(const gen_backend_t *b)
{
    if (b->plug)
        return gen_plug_name(b->plug);
    return b->kind == GEN_BACKEND_CUDA ? "cuda" : "cpu";
}

void gen_backend_set_wakeup(gen_backend_t *b, void (*fn)(void *arg), void *arg)
{
    if (b->cuda)
        gen_cuda_set_wakeup(b->cuda, fn, arg);
    if (b->plug)
        gen_plug_set_wakeup(b->plug, fn, arg);
    if (b->cpu)
        gen_cpu_set_wakeup(b->cpu, fn, arg);
}

int gen_begin(gen_backend_t *b, const gen_params_t *p, char *err, size_t errlen)
{
    gen_abort(b);
    if (gen_params_check(p, b->err, sizeof b->err) < 0) {
        snprintf(err, errlen, "%s", b->err);
        return -1;
    }
    int rc;
    if (b->plug) { /* the plugin makes its own scene, on its worker */
        rc = gen_plug_begin(b->plug, p->prompt, p->seed, p->image_index, p->width, p->height,
                            p->steps, b->err, sizeof b->err);
    } else {
        sampler_scene_t sc;
        sampler_scene_init(&sc, p->prompt, p->seed, p->image_index, p->width, p->height);
        rc = b->cuda ? gen_cuda_begin(b->cuda, &sc, p->steps)
                     : gen_cpu_begin(b->cpu, &sc, p->steps, b->err, sizeof b->err);
        if (rc < 0 && b->cuda)
            snprintf(b->err, sizeof b->err, "%s", gen_cuda_error(b->cuda));
    }
    if (rc < 0) {
        snprintf(err, errlen, "%s", b->err);
        return -1;
    }
    b->width = p->width;
    b->height = p->height;
    b->steps = p->steps;
    b->active = 1;
    return 0;
}

gen_status_t gen_advance(gen_backend_t *b)
{
    if (!b->active) {
        snprintf(b->err, sizeof b->err, "no image in progress");
        return GEN_ERROR;
    }
    if (b->plug) {
        gen_status_t st = gen_plug_advance(b->plug);
        if (st == GEN_ERROR)
            snprintf(b->err, sizeof b->err, "%s", gen_plug_error(b->plug));
        return st;
    }
    gen_status_t st = b->cuda ? gen_cuda_advance(b->cuda) : gen_cpu_advance(b->cpu);
    if (st == GEN_ERROR && b->cuda)
        snprintf(b->err, sizeof b->err, "%s", gen_cuda_error(b->cuda));
    return st;
}

uint32_t gen_steps_done(const gen_backend_t *b)
{
    if (!b->active)
        return 0;
    if (b->plug)
        return gen_plug_steps_done(b->plug);
    return b->cuda ? gen_cuda_steps_done(b->cuda) : gen_cpu_steps_done(b->cpu);
}

const uint8_t *gen_pixels(const gen_backend_t *b)
{
    if (!b->active)
        return NULL;
    if (b->plug)
        return gen_plug_pixels(b->plug);
    return b->cuda ? gen_cuda_pixels(b->cuda) : gen_cpu_pixels(b->cpu);
}

int gen_snapshot(gen_backend_t *b, uint8_t *rgb_out)
{
    if (!b->active) {
        snprintf(b->err, sizeof b->err, "no image in progress");
        return -1;
    }
    if (b->plug) {
        snprintf(b->err, sizeof b->err, "no snapshots from a plugin");
        return -1;
    }
    if (b->cuda) {
        if (gen_cuda_snapshot(b->cuda, rgb_out) < 0) {
            snprintf(b->err, sizeof b->err, "%s", gen_cuda_error(b->cuda));
            return -1;
        }
        return 0;
    }
    return gen_cpu_snapshot(b->cpu, rgb_out);
}

int gen_preview(gen_backend_t *b, uint32_t max_side, uint8_t *rgb_out, uint32_t *w_out,
                uint32_t *h_out)
{
    if (b->cuda) {
        /* the state is on the device: a copy would wait for the stream */
        snprintf(b->err, sizeof b->err, "previews not supported on cuda");
        return -1;
    }
    if (b->plug) { /* rendered on the plugin's worker after each step */
        if (gen_plug_preview(b->plug, max_side, rgb_out, w_out, h_out) < 0) {
            snprintf(b->err, sizeof b->err, "%s", gen_plug_error(b->plug));
            return -1;
        }
        return 0;
    }
    if (!b->active || gen_cpu_steps_done(b->cpu) == 0) {
        snprintf(b->err, sizeof b->err, "no step of an image done yet");
        return -1;
    }
    if (max_side == 0) {
        snprintf(b->err, sizeof b->err, "a preview needs a size of at least 1");
        return -1;
    }
    /* the longest side becomes max_side, the other one keeps the ratio
     * (rounded, at least 1); a small image stays as it is */
    uint32_t w = b->width, h = b->height;
    if (w > max_side || h > max_side) {
        uint32_t lng = w > h ? w : h;
        uint32_t sw = (uint32_t)(((uint64_t)w * max_side + lng / 2) / lng);
        uint32_t sh = (uint32_t)(((uint64_t)h * max_side + lng / 2) / lng);
        w = sw ? sw : 1;
        h = sh ? sh : 1;
    }
    if (gen_cpu_preview(b->cpu, w, h, rgb_out) < 0) {
        snprintf(b->err, sizeof b->err, "no step of an image done yet");
        return -1;
    }
    *w_out = w;
    *h_out = h;
    return 0;
}

bool gen_preview_pending(const gen_backend_t *b)
{
    return b->plug && gen_plug_preview_pending(b->plug);
}

void gen_abort(gen_backend_t *b)
{
    if (b->cuda)
        gen_cuda_abort(b->cuda);
    if (b->cpu)
        gen_cpu_abort(b->cpu);
    if (b->plug)
        gen_plug_abort(b->plug);
    b->active = 0;
}

const char *gen_error(const gen_backend_t *b)
{
    return b->err;
}

uint32_t gen_slices_per_step(const gen_backend_t *b, uint32_t width, uint32_t height)
{
    if (b->cuda || b->plug || width == 0)
        return 1;
    uint32_t rows = gen_cpu_band_rows(b->cpu, width);
    return (height + rows - 1) / rows;
}

int gen_wait(gen_backend_t *b)
{
    if (b->cuda && gen_cuda_wait(b->cuda) < 0) {
        snprintf(b->err, sizeof b->err, "%s", gen_cuda_error(b->cuda));
        return -1;
    }
    if (b->plug)
        gen_plug_wait(b->plug);
    if (b->cpu)
        gen_cpu_wait(b->cpu);
    return 0;
}

int gen_render_sync(gen_backend_t *b, const gen_params_t *p, uint8_t **rgb_out, double *ms_per_step,
                    char *err, size_t errlen)
{
    *rgb_out = NULL;
    if (gen_begin(b, p, err, errlen) < 0)
        return -1;
    size_t len = (size_t)p->width * p->height * 3;
    uint8_t *rgb = malloc(len);
    if (!rgb) {
        snprintf(err, errlen, "out of memory");
        gen_abort(b);
        return -1;
    }
    double t0 = clock_mono_ms();
    for (;;) {
        gen_status_t st = gen_advance(b);
        if (st == GEN_DONE)
            break;
        if (st == GEN_ERROR) {
            snprintf(err, errlen, "%s", b->err);
            free(rgb);
            gen_abort(b);
            return -1;
        }
        /* a step is queued: here (not in an actor) we may simply wait */
        if (st == GEN_WAIT && gen_wait(b) < 0) {
            snprintf(err, errlen, "%s", b->err);
            free(rgb);
            gen_abort(b);
            return -1;
        }
    }
    if (ms_per_step)
        *ms_per_step = (clock_mono_ms() - t0) / p->steps;
    memcpy(rgb, gen_pixels(b), len);
    *rgb_out = rgb;
    return 0;
}
