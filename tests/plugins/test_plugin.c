/*
 * test_plugin.c - backend plugins for tests/check_plugin.c, one source
 * built into one shared object per behaviour (tests/tests.am), against
 * include/imagejobs/backend.h alone:
 *
 *   (default)       slow.so: each step takes step_ms (default 30000) but
 *                   reads the cancel flag every millisecond; it writes what
 *                   happens to log=PATH, one line per event, so a test can
 *                   tell an interrupted step from a finished one
 *   TP_NO_ENTRY     no-entry.so: exports no imagejobs_backend_entry
 *   TP_ABI_MAJOR=N  abi-N.so: a table of another ABI major
 *   TP_OPEN_FAILS   open-fails.so: open always refuses, with a message
 *   TP_NEWER_MINOR  minor-99.so: ABI 1.99 with a longer table (a newer plugin
 *                   of the same major: must load)
 *   TP_SHORT_TABLE  short-table.so: a table that ends before ABI 1.0's does
 *   TP_OPEN_CRASHES open-crashes.so: open dies of a SIGSEGV (a write
 *                   through a null pointer the compiler cannot see)
 *
 * Options (--backend-options): comma-separated step_ms=N, log=PATH.
 * Errors on demand, per image, from its prompt: "fail:begin" fails in
 * begin, "fail:step:N" in step N, "fail:pixels" in pixels, each with a
 * message naming the call, as a broken model would.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, with -std=c11 */

#include "imagejobs/backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef TP_ABI_MAJOR
#define TP_ABI_MAJOR IMAGEJOBS_BACKEND_ABI_MAJOR
#endif
#ifdef TP_NEWER_MINOR
#define TP_ABI_MINOR 99
#else
#define TP_ABI_MINOR IMAGEJOBS_BACKEND_ABI_MINOR
#endif

struct imagejobs_backend {
    const imagejobs_backend_cancel_t *cancel;
    unsigned index;
    long step_ms;
    char log[512];
    uint32_t width, height, steps, k;
    uint32_t fail_step; /* the prompt's "fail:step:N", or 0 */
    int fail_pixels;    /* the prompt's "fail:pixels" */
    uint8_t *rgb;
    char err[128];
};

#ifdef TP_OPEN_CRASHES
static int *volatile tp_nowhere; /* NULL, but the compiler cannot know it */

/* A real fault: under --enable-sanitizers, UBSan would otherwise report the
 * store to NULL and exit before the fault, and the host's handler (what
 * the test is about) would never run. */
__attribute__((no_sanitize("undefined"))) static void tp_crash(void)
{
    *tp_nowhere = 1;
}
#endif

static void s_log(imagejobs_backend_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void s_log(imagejobs_backend_t *b, const char *fmt, ...)
{
    if (!b->log[0])
        return;
    FILE *f = fopen(b->log, "a");
    if (!f)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(f, "instance %u: ", b->index);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    va_end(ap);
    fclose(f);
}

static imagejobs_backend_status_t s_open(const imagejobs_backend_open_args_t *args,
                                         imagejobs_backend_t **out, const char **error)
{
#if defined(TP_OPEN_FAILS)
    (void)args;
    *out = NULL;
    *error = "test plugin: open refused (built with TP_OPEN_FAILS)";
    return IMAGEJOBS_BACKEND_ERROR;
#elif defined(TP_OPEN_CRASHES)
    (void)args;
    (void)error;
    *out = NULL;
    tp_crash();
    return IMAGEJOBS_BACKEND_ERROR;
#else
    imagejobs_backend_t *b = calloc(1, sizeof *b);
    if (!b) {
        *error = "test plugin: out of memory";
        return IMAGEJOBS_BACKEND_NO_MEMORY;
    }
    b->cancel = args->cancel;
    b->index = args->index;
    b->step_ms = 30000;
    const char *o = args->options;
    while (o && *o) {
        size_t n = strcspn(o, ",");
        if (!strncmp(o, "step_ms=", 8))
            b->step_ms = strtol(o + 8, NULL, 10);
        else if (!strncmp(o, "log=", 4))
            snprintf(b->log, sizeof b->log, "%.*s", (int)(n - 4), o + 4);
        o += n;
        if (*o == ',')
            o++;
    }
    s_log(b, "open device %d", (int)args->device);
    *out = b;
    return IMAGEJOBS_BACKEND_OK;
#endif
}

static imagejobs_backend_status_t s_describe(imagejobs_backend_t *b, imagejobs_backend_info_t *in)
{
    in->name = "slow-test";
    in->min_width = in->min_height = 8;
    in->max_width = in->max_height = 512;
    return IMAGEJOBS_BACKEND_OK;
}

static imagejobs_backend_status_t s_begin(imagejobs_backend_t *b,
                                          const imagejobs_backend_image_t *im)
{
    uint8_t *rgb = realloc(b->rgb, (size_t)im->width * im->height * 3);
    if (!rgb) {
        snprintf(b->err, sizeof b->err, "out of memory");
        return IMAGEJOBS_BACKEND_NO_MEMORY;
    }
    b->rgb = rgb;
    b->width = im->width;
    b->height = im->height;
    b->steps = im->steps;
    b->k = 0;
    b->fail_step = 0;
    b->fail_pixels = !strncmp(im->prompt, "fail:pixels", 11);
    if (!strncmp(im->prompt, "fail:step:", 10))
        b->fail_step = (uint32_t)strtoul(im->prompt + 10, NULL, 10);
    s_log(b, "begin image %u %ux%u %u steps", im->image_index, im->width, im->height, im->steps);
    if (!strncmp(im->prompt, "fail:begin", 10)) {
        snprintf(b->err, sizeof b->err, "test plugin: begin failed, as the prompt asked");
        return IMAGEJOBS_BACKEND_ERROR;
    }
    return IMAGEJOBS_BACKEND_OK;
}

/* step_ms of "work", one millisecond at a time, the flag read between. */
static imagejobs_backend_status_t s_step(imagejobs_backend_t *b, uint32_t *steps_done)
{
    s_log(b, "step %u started", b->k + 1);
    if (b->k + 1 == b->fail_step) {
        snprintf(b->err, sizeof b->err, "test plugin: step %u failed, as the prompt asked",
                 b->k + 1);
        return IMAGEJOBS_BACKEND_ERROR;
    }
    for (long ms = 0; ms < b->step_ms; ms++) {
        if (imagejobs_backend_cancelled(b->cancel)) {
            s_log(b, "step %u interrupted by the cancel flag after %ld ms", b->k + 1, ms);
            return IMAGEJOBS_BACKEND_CANCELLED;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    b->k++;
    s_log(b, "step %u done", b->k);
    *steps_done = b->k;
    return b->k == b->steps ? IMAGEJOBS_BACKEND_DONE : IMAGEJOBS_BACKEND_MORE;
}

static imagejobs_backend_status_t s_pixels(imagejobs_backend_t *b, imagejobs_backend_pixels_t *out)
{
    if (b->fail_pixels) {
        snprintf(b->err, sizeof b->err, "test plugin: pixels failed, as the prompt asked");
        return IMAGEJOBS_BACKEND_ERROR;
    }
    for (size_t i = 0; i < (size_t)b->width * b->height * 3; i++)
        b->rgb[i] = (uint8_t)(i * 7);
    out->data = b->rgb;
    out->width = b->width;
    out->height = b->height;
    out->channels = 3;
    out->stride = (size_t)b->width * 3;
    return IMAGEJOBS_BACKEND_OK;
}

static void s_abort(imagejobs_backend_t *b)
{
    s_log(b, "abort");
    b->k = 0;
}

static const char *s_error(imagejobs_backend_t *b)
{
    return b->err;
}

static void s_close(imagejobs_backend_t *b)
{
    s_log(b, "close");
    free(b->rgb);
    free(b);
}

/* The table's functions, in ABI 1.0's order. */
#define TP_FUNCTIONS                                                                               \
    .open = s_open, .describe = s_describe, .begin = s_begin, .step = s_step, .pixels = s_pixels,  \
    .abort = s_abort, .error = s_error, .close = s_close

#if defined(TP_NEWER_MINOR)
/* what a plugin of a later minor looks like: the 1.0 table, then more */
static const struct {
    imagejobs_backend_api_t v1_0;
    void (*later)(void);
} s_newer = {{.abi_version = (uint32_t)TP_ABI_MAJOR << 16 | TP_ABI_MINOR,
              .size = sizeof(imagejobs_backend_api_t) + sizeof(void (*)(void)),
              TP_FUNCTIONS},
             NULL};
#define s_api s_newer.v1_0
#else
static const imagejobs_backend_api_t s_api = {
    .abi_version = (uint32_t)TP_ABI_MAJOR << 16 | TP_ABI_MINOR,
#ifdef TP_SHORT_TABLE
    .size = offsetof(imagejobs_backend_api_t, close), /* built against an older, shorter one */
#else
    .size = sizeof(imagejobs_backend_api_t),
#endif
    TP_FUNCTIONS};
#endif

#ifdef TP_NO_ENTRY
/* the table under another name: loadable, but not a backend plugin */
IMAGEJOBS_BACKEND_EXPORT const imagejobs_backend_api_t *not_the_entry(void);
const imagejobs_backend_api_t *not_the_entry(void)
{
    return &s_api;
}
#else
IMAGEJOBS_BACKEND_DECLARE_ENTRY;
const imagejobs_backend_api_t *imagejobs_backend_entry(void)
{
    return &s_api;
}
#endif
