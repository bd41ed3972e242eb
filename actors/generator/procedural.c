/*
 * procedural.c - the built-in procedural sampler as a backend plugin
 * (imagejobs-backend-procedural.so), built from the sampler's own sources
 * (sampler.h, sampler.c) against the public interface
 * include/imagejobs/backend.h and nothing else of imagejobs.
 *
 * It proves the interface: the same job gives byte-identical images
 * through --backend cpu and through --backend plugin:procedural, because
 * each pixel's update is a pure function of that pixel's state and the
 * step (sampler.h), whatever order or thread computes it. A step is one
 * full pass over the image on the calling thread (the host's worker); the
 * cancel flag is read every S_PIXELS_PER_CHECK pixels (well under a
 * millisecond of work), so a cancel never waits for a step to end.
 *
 * Options (--backend-options): "" or a comma-separated list of
 *   preview=0|1   offer previews (default 1)
 */
#include "config.h"

#include "imagejobs/backend.h"

#include "actors/generator/sampler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pixels between two reads of the cancel flag: ~0.3-0.5 ms of work. */
#define S_PIXELS_PER_CHECK 2048
#define S_SIZE_MIN 64
#define S_SIZE_MAX 2048
#define S_SIZE_MULTIPLE 8
#define S_STEPS_MAX 200

struct imagejobs_backend {
    const imagejobs_backend_cancel_t *cancel;
    int preview;
    sampler_scene_t scene;
    uint32_t steps, k;
    int active;
    float *state;
    uint8_t *rgb;
    size_t cap_px;
    char err[256];
};

static char s_open_err[256];

static imagejobs_backend_status_t s_open(const imagejobs_backend_open_args_t *args,
                                         imagejobs_backend_t **out, const char **error)
{
    *out = NULL;
    int preview = 1;
    const char *o = args->options ? args->options : "";
    while (*o) {
        size_t n = strcspn(o, ",");
        if (n == 9 && !strncmp(o, "preview=0", n))
            preview = 0;
        else if (n == 9 && !strncmp(o, "preview=1", n))
            preview = 1;
        else if (n > 0) {
            snprintf(s_open_err, sizeof s_open_err,
                     "procedural: unknown option '%.*s' (known: preview=0|1)", (int)n, o);
            *error = s_open_err;
            return IMAGEJOBS_BACKEND_ERROR;
        }
        o += n;
        if (*o == ',')
            o++;
    }
    imagejobs_backend_t *b = calloc(1, sizeof *b);
    if (!b) {
        *error = "procedural: out of memory";
        return IMAGEJOBS_BACKEND_NO_MEMORY;
    }
    b->cancel = args->cancel;
    b->preview = preview;
    *out = b;
    return IMAGEJOBS_BACKEND_OK;
}

static imagejobs_backend_status_t s_describe(imagejobs_backend_t *b, imagejobs_backend_info_t *in)
{
    in->name = "procedural";
    in->version = "1";
    in->min_width = in->min_height = S_SIZE_MIN;
    in->max_width = in->max_height = S_SIZE_MAX;
    in->size_multiple = S_SIZE_MULTIPLE;
    in->max_steps = S_STEPS_MAX;
    in->flags = b->preview ? IMAGEJOBS_BACKEND_CAN_PREVIEW : 0;
    return IMAGEJOBS_BACKEND_OK;
}

static imagejobs_backend_status_t s_begin(imagejobs_backend_t *b,
                                          const imagejobs_backend_image_t *im)
{
    b->active = 0;
    if (!im->prompt || !*im->prompt || im->steps < 1 || im->steps > S_STEPS_MAX
        || im->width < S_SIZE_MIN || im->width > S_SIZE_MAX || im->height < S_SIZE_MIN
        || im->height > S_SIZE_MAX) {
        snprintf(b->err, sizeof b->err, "procedural: unsupported image %ux%u, %u steps", im->width,
                 im->height, im->steps);
        return IMAGEJOBS_BACKEND_UNSUPPORTED;
    }
    size_t px = (size_t)im->width * im->height;
    if (px > b->cap_px) {
        /* no memset: the first step draws the noise and never reads the state */
        float *state = malloc(px * 3 * sizeof *state);
        uint8_t *rgb = malloc(px * 3);
        if (!state || !rgb) {
            free(state);
            free(rgb);
            snprintf(b->err, sizeof b->err, "procedural: out of memory for %ux%u", im->width,
                     im->height);
            return IMAGEJOBS_BACKEND_NO_MEMORY;
        }
        free(b->state);
        free(b->rgb);
        b->state = state;
        b->rgb = rgb;
        b->cap_px = px;
    }
    sampler_scene_init(&b->scene, im->prompt, im->seed, im->image_index, im->width, im->height);
    b->steps = im->steps;
    b->k = 0;
    b->active = 1;
    return IMAGEJOBS_BACKEND_OK;
}

/* One full step over every pixel, row after row; the cancel flag is read
 * every S_PIXELS_PER_CHECK pixels. A cancelled step leaves the state half
 * updated: the host never continues it (it aborts or begins anew). */
static imagejobs_backend_status_t s_step(imagejobs_backend_t *b, uint32_t *steps_done)
{
    if (!b->active) {
        snprintf(b->err, sizeof b->err, "procedural: no image begun");
        return IMAGEJOBS_BACKEND_ERROR;
    }
    const sampler_scene_t *sc = &b->scene;
    if (b->k < b->steps) {
        sampler_step_t st;
        sampler_step_init(b->k, b->steps, &st);
        uint32_t w = sc->width, since = 0;
        for (uint32_t y = 0; y < sc->height; y++) {
            float *s = b->state + (size_t)y * w * 3;
            uint8_t *p = b->rgb + (size_t)y * w * 3;
            for (uint32_t x = 0; x < w; x++)
                sampler_step_pixel(sc, &st, x, y, s + 3 * x, p + 3 * x);
            since += w;
            if (since >= S_PIXELS_PER_CHECK) {
                since = 0;
                if (imagejobs_backend_cancelled(b->cancel)) {
                    b->active = 0;
                    return IMAGEJOBS_BACKEND_CANCELLED;
                }
            }
        }
        b->k++;
    }
    *steps_done = b->k;
    return b->k == b->steps ? IMAGEJOBS_BACKEND_DONE : IMAGEJOBS_BACKEND_MORE;
}

/* sampler_to_u8 without floorf (see cpu.c's s_to_u8: same result). */
static inline uint32_t s_to_u8(float v)
{
    float c = sampler_clamp(0.5f * v + 0.5f, 0.0f, 1.0f);
    return (uint32_t)(c * 255.0f + 0.5f);
}

/* The current state box-averaged so that the longest side is at most
 * max_side (the mean of each box's 8-bit values, as the CPU engine's). */
static imagejobs_backend_status_t s_preview(imagejobs_backend_t *b, imagejobs_backend_preview_t *pv)
{
    if (!b->preview || !b->active || b->k == 0 || pv->max_side == 0) {
        snprintf(b->err, sizeof b->err, "procedural: no preview (%s)",
                 !b->preview ? "preview=0" : "no step done yet");
        return IMAGEJOBS_BACKEND_UNSUPPORTED;
    }
    uint32_t w = b->scene.width, h = b->scene.height, ow = w, oh = h;
    if (w > pv->max_side || h > pv->max_side) {
        uint32_t lng = w > h ? w : h;
        ow = (uint32_t)(((uint64_t)w * pv->max_side + lng / 2) / lng);
        oh = (uint32_t)(((uint64_t)h * pv->max_side + lng / 2) / lng);
        ow = ow ? ow : 1;
        oh = oh ? oh : 1;
    }
    for (uint32_t oy = 0; oy < oh; oy++) {
        uint32_t y0 = (uint32_t)((uint64_t)oy * h / oh),
                 y1 = (uint32_t)((uint64_t)(oy + 1) * h / oh);
        for (uint32_t ox = 0; ox < ow; ox++) {
            uint32_t x0 = (uint32_t)((uint64_t)ox * w / ow);
            uint32_t x1 = (uint32_t)((uint64_t)(ox + 1) * w / ow);
            uint32_t sum[3] = {0, 0, 0}, n = (y1 - y0) * (x1 - x0);
            for (uint32_t y = y0; y < y1; y++)
                for (uint32_t x = x0; x < x1; x++) {
                    const float *px = b->state + ((size_t)y * w + x) * 3;
                    for (int c = 0; c < 3; c++)
                        sum[c] += s_to_u8(px[c]);
                }
            uint8_t *o = pv->rgb + ((size_t)oy * ow + ox) * 3;
            for (int c = 0; c < 3; c++)
                o[c] = (uint8_t)((sum[c] + n / 2) / n);
        }
    }
    pv->width = ow;
    pv->height = oh;
    return IMAGEJOBS_BACKEND_OK;
}

static imagejobs_backend_status_t s_pixels(imagejobs_backend_t *b, imagejobs_backend_pixels_t *out)
{
    if (!b->active || b->k != b->steps) {
        snprintf(b->err, sizeof b->err, "procedural: the image is not finished");
        return IMAGEJOBS_BACKEND_ERROR;
    }
    out->data = b->rgb;
    out->width = b->scene.width;
    out->height = b->scene.height;
    out->channels = 3;
    out->stride = (size_t)b->scene.width * 3;
    return IMAGEJOBS_BACKEND_OK;
}

static void s_abort(imagejobs_backend_t *b)
{
    b->active = 0;
    b->k = 0;
}

static const char *s_error(imagejobs_backend_t *b)
{
    return b->err;
}

static void s_close(imagejobs_backend_t *b)
{
    free(b->state);
    free(b->rgb);
    free(b);
}

static const imagejobs_backend_api_t s_api = {
    .abi_version = IMAGEJOBS_BACKEND_ABI_VERSION,
    .size = sizeof(imagejobs_backend_api_t),
    .open = s_open,
    .describe = s_describe,
    .begin = s_begin,
    .step = s_step,
    .preview = s_preview,
    .pixels = s_pixels,
    .abort = s_abort,
    .error = s_error,
    .close = s_close,
};

IMAGEJOBS_BACKEND_DECLARE_ENTRY;
const imagejobs_backend_api_t *imagejobs_backend_entry(void)
{
    return &s_api;
}
