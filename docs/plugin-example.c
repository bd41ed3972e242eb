/*
 * plugin-example.c - the smallest useful imagejobs backend plugin: a
 * gradient that fades in over the steps, tinted by the seed. It shows the
 * whole contract of imagejobs/backend.h: a table, an instance per
 * generator, a step that reads the cancel flag while it works, pixels the
 * plugin owns, errors as a status and a message.
 *
 *   cc -std=c11 -O2 -fPIC -shared $(pkg-config --cflags imagejobs-backend) \
 *      -o example.so plugin-example.c
 *   imagejobs render --backend plugin:$PWD/example.so --prompt hello -o hello.png
 *   imagejobs serve --backend plugin:$PWD/example.so ...
 */
#include <imagejobs/backend.h>

#include <stdio.h>
#include <stdlib.h>

struct imagejobs_backend {
    const imagejobs_backend_cancel_t *cancel; /* the host's; valid until close */
    uint32_t width, height, steps, done;
    uint64_t seed;
    uint8_t *rgb;
    char err[128];
};

static imagejobs_backend_status_t ex_open(const imagejobs_backend_open_args_t *args,
                                          imagejobs_backend_t **out, const char **error)
{
    imagejobs_backend_t *b = calloc(1, sizeof *b);
    if (!b) {
        *error = "example: out of memory"; /* ours: a string literal lives long enough */
        return IMAGEJOBS_BACKEND_NO_MEMORY;
    }
    b->cancel = args->cancel;
    *out = b;
    return IMAGEJOBS_BACKEND_OK;
}

static imagejobs_backend_status_t ex_describe(imagejobs_backend_t *b, imagejobs_backend_info_t *in)
{
    in->name = "example";
    in->version = "1.0";
    in->min_width = in->min_height = 8;
    in->max_width = in->max_height = 1024;
    in->size_multiple = 8;
    return IMAGEJOBS_BACKEND_OK;
}

static imagejobs_backend_status_t ex_begin(imagejobs_backend_t *b,
                                           const imagejobs_backend_image_t *im)
{
    uint8_t *rgb = realloc(b->rgb, (size_t)im->width * im->height * 3);
    if (!rgb) {
        snprintf(b->err, sizeof b->err, "example: no memory for %ux%u", im->width, im->height);
        return IMAGEJOBS_BACKEND_NO_MEMORY;
    }
    b->rgb = rgb;
    b->width = im->width;
    b->height = im->height;
    b->steps = im->steps;
    b->seed = im->seed + im->image_index;
    b->done = 0;
    return IMAGEJOBS_BACKEND_OK;
}

/* One step: every row, with a look at the cancel flag after each one (a
 * real model checks between kernel launches or scheduler iterations). */
static imagejobs_backend_status_t ex_step(imagejobs_backend_t *b, uint32_t *steps_done)
{
    uint32_t level = 255 * (b->done + 1) / b->steps;
    for (uint32_t y = 0; y < b->height; y++) {
        if (imagejobs_backend_cancelled(b->cancel))
            return IMAGEJOBS_BACKEND_CANCELLED;
        for (uint32_t x = 0; x < b->width; x++) {
            uint8_t *p = b->rgb + ((size_t)y * b->width + x) * 3;
            p[0] = (uint8_t)(level * x / b->width);
            p[1] = (uint8_t)(level * y / b->height);
            p[2] = (uint8_t)(b->seed * 37);
        }
    }
    *steps_done = ++b->done;
    return b->done == b->steps ? IMAGEJOBS_BACKEND_DONE : IMAGEJOBS_BACKEND_MORE;
}

static imagejobs_backend_status_t ex_pixels(imagejobs_backend_t *b, imagejobs_backend_pixels_t *px)
{
    if (b->done != b->steps) {
        snprintf(b->err, sizeof b->err, "example: the image is not finished");
        return IMAGEJOBS_BACKEND_ERROR;
    }
    px->data = b->rgb;
    px->width = b->width;
    px->height = b->height;
    px->channels = 3;
    px->stride = (size_t)b->width * 3;
    return IMAGEJOBS_BACKEND_OK;
}

static void ex_abort(imagejobs_backend_t *b)
{
    b->done = 0;
}

static const char *ex_error(imagejobs_backend_t *b)
{
    return b->err;
}

static void ex_close(imagejobs_backend_t *b)
{
    free(b->rgb);
    free(b);
}

static const imagejobs_backend_api_t ex_api = {
    .abi_version = IMAGEJOBS_BACKEND_ABI_VERSION,
    .size = sizeof(imagejobs_backend_api_t),
    .open = ex_open,
    .describe = ex_describe,
    .begin = ex_begin,
    .step = ex_step,
    .preview = NULL, /* optional: no previews */
    .pixels = ex_pixels,
    .abort = ex_abort,
    .error = ex_error,
    .close = ex_close,
};

IMAGEJOBS_BACKEND_DECLARE_ENTRY;
const imagejobs_backend_api_t *imagejobs_backend_entry(void)
{
    return &ex_api;
}
