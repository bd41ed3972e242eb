/*
 * mandelbrot.c - an example imagejobs backend plugin, built out of the tree
 * against the installed <imagejobs/backend.h> (see Makefile and
 * docs/backends.md): a zoom into the Mandelbrot set, one frame per step.
 *
 * The image of a job is a dive towards a point on the set's boundary,
 * chosen by the seed and the image's index; the prompt picks the palette.
 * Step k of n renders the whole frame at zoom depth^(k/n), so the image
 * sharpens into its final view over the steps the way a diffusion model's
 * estimate does, and every step's frame is a preview. The step reads the
 * host's cancel flag after every row (a row takes up to about a millisecond
 * at 512 pixels, a few at 2048) and while it waits out step_ms.
 *
 * Options (--backend-options, comma-separated):
 *   depth=F       the final zoom (default 2000; 1 to 1e9)
 *   iterations=N  iterations per pixel at zoom 1 (default 200), growing
 *                 with the zoom
 *   step_ms=N     a step lasts at least N ms (default 0): a stand-in for a
 *                 heavy model's step, for demos and for tests of the cancel
 *   preview=0|1   offer previews (default 1)
 *   trace=0|1     one line on stderr per image and per step, with the
 *                 wall-clock time, to watch the host drive the plugin
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, nanosleep with -std=c11 */

#include <imagejobs/backend.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Points on the boundary that stay interesting however deep the zoom. */
static const double s_targets[][2] = {
    {-0.743643887037151, 0.131825904205330}, /* seahorse valley */
    {-1.768778833, -0.001738996},            /* a minibrot on the antenna */
    {-0.160701350, 1.037566500},             /* the top of the "north" bulb */
    {0.254987037514477, -0.000567979052847}, /* elephant valley */
    {-1.250660000, 0.020120000},             /* the period-2 bulb's filaments */
    {-0.745428000, 0.113009000},             /* a spiral near seahorse valley */
};
#define S_TARGETS (sizeof s_targets / sizeof *s_targets)

struct imagejobs_backend {
    const imagejobs_backend_cancel_t *cancel; /* the host's; valid until close */
    unsigned index;
    double depth;
    unsigned iterations;
    long step_ms;
    int preview, trace;
    /* the image begun */
    uint32_t width, height, steps, done;
    double cx, cy;  /* where the zoom goes */
    double hue;     /* the palette's phase, from the prompt */
    uint8_t *frame; /* the latest step's frame, RGB8 */
    char err[160];
};

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One trace line, written at once (the host's threads share stderr). */
static void s_trace(const imagejobs_backend_t *b, const char *what, unsigned step, double t,
                    const char *more)
{
    if (!b->trace)
        return;
    char line[256];
    int n = snprintf(line, sizeof line, "mandelbrot[%u]: step %u of %u %s at %.6f%s\n", b->index,
                     step, b->steps, what, t, more);
    if (n <= 0)
        return;
    /* best effort: a line that cannot be written is dropped */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    (void)w;
}

/* ------------------------------------------------------------------ open */

/* Parses "k=v,k=v"; 0, or -1 with the reason in err. */
static int s_options(imagejobs_backend_t *b, const char *o, char *err, size_t errlen)
{
    while (o && *o) {
        size_t n = strcspn(o, ",");
        char opt[128];
        snprintf(opt, sizeof opt, "%.*s", (int)n, o);
        char *v = strchr(opt, '='), *end = NULL;
        double x = v ? strtod(v + 1, &end) : 0;
        if (!v || end == v + 1 || *end) {
            snprintf(err, errlen, "mandelbrot: option '%s' is not key=number", opt);
            return -1;
        }
        *v = 0;
        if (!strcmp(opt, "depth") && x >= 1 && x <= 1e9)
            b->depth = x;
        else if (!strcmp(opt, "iterations") && x >= 1 && x <= 100000)
            b->iterations = (unsigned)x;
        else if (!strcmp(opt, "step_ms") && x >= 0 && x <= 600000)
            b->step_ms = (long)x;
        else if ((!strcmp(opt, "preview") || !strcmp(opt, "trace")) && (x == 0 || x == 1))
            *(opt[0] == 'p' ? &b->preview : &b->trace) = (int)x;
        else {
            snprintf(err, errlen, "mandelbrot: unknown option or value out of range '%s=%s'", opt,
                     v + 1);
            return -1;
        }
        o += n + (o[n] == ',');
    }
    return 0;
}

static imagejobs_backend_status_t mb_open(const imagejobs_backend_open_args_t *args,
                                          imagejobs_backend_t **out, const char **error)
{
    static char why[200]; /* ours until the next open, which the host serialises */
    imagejobs_backend_t *b = calloc(1, sizeof *b);
    if (!b) {
        *error = "mandelbrot: out of memory";
        return IMAGEJOBS_BACKEND_NO_MEMORY;
    }
    b->cancel = args->cancel;
    b->index = args->index;
    b->depth = 2000;
    b->iterations = 200;
    b->preview = 1;
    if (s_options(b, args->options, why, sizeof why) < 0) {
        free(b);
        *error = why;
        return IMAGEJOBS_BACKEND_ERROR;
    }
    *out = b;
    return IMAGEJOBS_BACKEND_OK;
}

static imagejobs_backend_status_t mb_describe(imagejobs_backend_t *b, imagejobs_backend_info_t *in)
{
    in->name = "mandelbrot";
    in->version = "1.0";
    in->min_width = in->min_height = 8;
    in->max_width = in->max_height = 2048;
    in->flags = b->preview ? IMAGEJOBS_BACKEND_CAN_PREVIEW : 0;
    return IMAGEJOBS_BACKEND_OK;
}

/* --------------------------------------------------------------- an image */

static uint64_t s_fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211u;
    return h;
}

static imagejobs_backend_status_t mb_begin(imagejobs_backend_t *b,
                                           const imagejobs_backend_image_t *im)
{
    uint8_t *frame = realloc(b->frame, (size_t)im->width * im->height * 3);
    if (!frame) {
        snprintf(b->err, sizeof b->err, "mandelbrot: no memory for a %ux%u frame", im->width,
                 im->height);
        return IMAGEJOBS_BACKEND_NO_MEMORY;
    }
    b->frame = frame;
    b->width = im->width;
    b->height = im->height;
    b->steps = im->steps;
    b->done = 0;
    const double *t = s_targets[(im->seed * 31 + im->image_index) % S_TARGETS];
    b->cx = t[0];
    b->cy = t[1];
    b->hue = (double)(s_fnv1a(im->prompt) % 1000) / 1000.0;
    s_trace(b, "begun", 0, s_now(), "");
    return IMAGEJOBS_BACKEND_OK;
}

/* A smooth escape count in [0, 1) to a colour (a cosine palette). */
static void s_colour(const imagejobs_backend_t *b, double t, uint8_t *px)
{
    static const double phase[3] = {0.00, 0.10, 0.20};
    for (int c = 0; c < 3; c++) {
        double v = 0.5 + 0.5 * cos(6.283185307179586 * (t + b->hue + phase[c]));
        px[c] = (uint8_t)(v * 255.0 + 0.5);
    }
}

/* Renders row y of the frame at zoom `zoom`. */
static void s_row(imagejobs_backend_t *b, uint32_t y, double zoom, unsigned max_it)
{
    double span = 3.0 / zoom; /* the width of the view in the complex plane */
    double px = span / b->width;
    double ci = b->cy + ((double)y - b->height / 2.0) * px;
    uint8_t *out = b->frame + (size_t)y * b->width * 3;
    for (uint32_t x = 0; x < b->width; x++, out += 3) {
        double cr = b->cx + ((double)x - b->width / 2.0) * px;
        double zr = 0, zi = 0, zr2 = 0, zi2 = 0;
        unsigned it = 0;
        for (; it < max_it && zr2 + zi2 <= 256.0; it++) {
            zi = 2 * zr * zi + ci;
            zr = zr2 - zi2 + cr;
            zr2 = zr * zr;
            zi2 = zi * zi;
        }
        if (it == max_it) {
            out[0] = out[1] = out[2] = 0; /* inside the set */
            continue;
        }
        double mu = it + 1 - log2(log(zr2 + zi2) / 2); /* the smooth count */
        s_colour(b, fmod(mu / 64.0, 1.0), out);
    }
}

/* Waits until `until` (s_now's clock), 1 ms at a time: 0, or -1 as soon as
 * the flag is up. */
static int s_wait_until(const imagejobs_backend_t *b, double until)
{
    while (s_now() < until) {
        if (imagejobs_backend_cancelled(b->cancel))
            return -1;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* One step: the whole frame one zoom level further, the cancel flag read
 * after every row and while the step waits out step_ms. */
static imagejobs_backend_status_t mb_step(imagejobs_backend_t *b, uint32_t *steps_done)
{
    double t0 = s_now();
    unsigned k = b->done + 1;
    s_trace(b, "started", k, t0, "");
    double zoom = pow(b->depth, (double)k / b->steps);
    unsigned max_it = b->iterations + (unsigned)(40 * log2(zoom));
    int cancelled = 0;
    for (uint32_t y = 0; y < b->height && !cancelled; y++) {
        if ((cancelled = imagejobs_backend_cancelled(b->cancel)))
            break;
        s_row(b, y, zoom, max_it);
    }
    if (!cancelled)
        cancelled = s_wait_until(b, t0 + b->step_ms / 1000.0) < 0;
    if (cancelled) {
        char more[96];
        double t = s_now();
        snprintf(more, sizeof more, ", %.0f ms into a step of %ld ms", (t - t0) * 1000, b->step_ms);
        s_trace(b, "cancelled", k, t, more);
        return IMAGEJOBS_BACKEND_CANCELLED;
    }
    b->done = k;
    *steps_done = k;
    s_trace(b, "done", k, s_now(), "");
    return k == b->steps ? IMAGEJOBS_BACKEND_DONE : IMAGEJOBS_BACKEND_MORE;
}

/* The latest frame, box-averaged to fit p->max_side. */
static imagejobs_backend_status_t mb_preview(imagejobs_backend_t *b, imagejobs_backend_preview_t *p)
{
    if (b->done == 0) {
        snprintf(b->err, sizeof b->err, "mandelbrot: no step done yet");
        return IMAGEJOBS_BACKEND_ERROR;
    }
    uint32_t side = b->width > b->height ? b->width : b->height;
    uint32_t f = (side + p->max_side - 1) / p->max_side; /* source pixels per preview pixel */
    p->width = b->width / f ? b->width / f : 1;
    p->height = b->height / f ? b->height / f : 1;
    for (uint32_t y = 0; y < p->height; y++) {
        for (uint32_t x = 0; x < p->width; x++) {
            unsigned sum[3] = {0, 0, 0}, n = 0;
            for (uint32_t dy = 0; dy < f && y * f + dy < b->height; dy++) {
                for (uint32_t dx = 0; dx < f && x * f + dx < b->width; dx++, n++) {
                    const uint8_t *s =
                        b->frame + ((size_t)(y * f + dy) * b->width + x * f + dx) * 3;
                    for (int c = 0; c < 3; c++)
                        sum[c] += s[c];
                }
            }
            for (int c = 0; c < 3; c++)
                p->rgb[((size_t)y * p->width + x) * 3 + c] = (uint8_t)(sum[c] / n);
        }
    }
    return IMAGEJOBS_BACKEND_OK;
}

static imagejobs_backend_status_t mb_pixels(imagejobs_backend_t *b, imagejobs_backend_pixels_t *px)
{
    if (b->done != b->steps) {
        snprintf(b->err, sizeof b->err, "mandelbrot: the image is not finished (%u of %u steps)",
                 b->done, b->steps);
        return IMAGEJOBS_BACKEND_ERROR;
    }
    px->data = b->frame;
    px->width = b->width;
    px->height = b->height;
    px->channels = 3;
    px->stride = (size_t)b->width * 3;
    return IMAGEJOBS_BACKEND_OK;
}

static void mb_abort(imagejobs_backend_t *b)
{
    b->done = 0;
}

static const char *mb_error(imagejobs_backend_t *b)
{
    return b->err;
}

static void mb_close(imagejobs_backend_t *b)
{
    free(b->frame);
    free(b);
}

static const imagejobs_backend_api_t mb_api = {
    .abi_version = IMAGEJOBS_BACKEND_ABI_VERSION,
    .size = sizeof(imagejobs_backend_api_t),
    .open = mb_open,
    .describe = mb_describe,
    .begin = mb_begin,
    .step = mb_step,
    .preview = mb_preview,
    .pixels = mb_pixels,
    .abort = mb_abort,
    .error = mb_error,
    .close = mb_close,
};

IMAGEJOBS_BACKEND_DECLARE_ENTRY;
const imagejobs_backend_api_t *imagejobs_backend_entry(void)
{
    return &mb_api;
}
