/*
 * imagejobs/backend.h - the plugin interface of imagejobs' generation
 * backends: plain C11 (C++ compatible), nothing else of imagejobs needed.
 *
 * A plugin is a shared object that exports one function,
 *
 *     const imagejobs_backend_api_t *imagejobs_backend_entry(void);
 *
 * (IMAGEJOBS_BACKEND_ENTRY_SYMBOL), returning a table of functions that
 * lives as long as the plugin is loaded. imagejobs loads it with
 * `imagejobs serve --backend plugin:/path/to/libfoo.so` (or plugin:NAME,
 * NAME looked up as NAME.so or imagejobs-backend-NAME.so in --plugin-dir),
 * opens one instance per generator actor, and drives each instance one
 * image at a time:
 *
 *     open -> describe -> { begin -> step ... step (DONE) -> pixels } ... -> close
 *                             any time between two calls: abort
 *
 * Build a plugin with `cc -shared -fPIC $(pkg-config --cflags
 * imagejobs-backend) ...`; docs/backends.md says how, and
 * examples/backend-plugin/ is a complete plugin with its own Makefile.
 *
 * ---------------------------------------------------------------- versions
 * IMAGEJOBS_BACKEND_ABI_MAJOR changes when a change breaks plugins built
 * before it (a field moved, a call's meaning changed): the host refuses a
 * plugin of another major at load. IMAGEJOBS_BACKEND_ABI_MINOR grows with
 * additions at the end of the structures: a host reads only the fields
 * within the table's `size` (what the plugin was built with), so an older
 * plugin keeps loading in a newer host and a newer plugin in an older host
 * of the same major. Every structure the host passes starts with its own
 * `size` for the same reason.
 *
 * ----------------------------------------------------- threads and blocking
 * - The host calls one instance from one thread of its own at a time (a
 *   worker thread per instance, never an actor's event loop): no two calls
 *   on one instance overlap, and they all come from the same thread, the
 *   one that called open (a CUDA context made current in open stays so).
 *   Different instances are called from different threads at once; a
 *   plugin with shared state between its instances locks it itself.
 * - open is never called twice at the same time (the host serialises it).
 * - open, begin, step and pixels may block: load weights, run kernels, wait
 *   for a device. open may take as long as it needs (start-up). begin, step
 *   and pixels must read the cancel flag (below) at least every few
 *   milliseconds (aim for 1-5 ms) while they work, and return
 *   IMAGEJOBS_BACKEND_CANCELLED soon after it is set. A step should also
 *   return within about a second even when not cancelled: the host reports
 *   progress and sees a shutdown between two calls.
 * - describe, preview, abort, error and close should not block for long
 *   (close may wait for a device to finish queued work).
 *
 * ------------------------------------------------------------ cancellation
 * The host owns one cancel flag per instance and hands its address to open
 * (imagejobs_backend_open_args_t.cancel); it stays valid until close
 * returns. The host sets it from another thread when the image in flight
 * must stop (a user's cancel, a shutdown) and clears it before the next
 * begin. A plugin only reads it, with imagejobs_backend_cancelled(), inside
 * its long loops: between two kernel launches, two tiles, two scheduler
 * iterations. After a cancel the host calls abort (or begin of another
 * image, or close); an image that returned CANCELLED is never continued.
 *
 * ------------------------------------------------------------------ errors
 * Every call that can fail returns a status; on an error status, error()
 * gives a message (NUL-terminated, one line) that the plugin owns and keeps
 * valid until the next call on that instance. open, which has no instance
 * yet, hands its message out through *error: owned by the plugin too, valid
 * until the next open or until the plugin is unloaded. The host copies
 * messages at once.
 */
#ifndef IMAGEJOBS_BACKEND_H
#define IMAGEJOBS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifndef __cplusplus
#include <stdatomic.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define IMAGEJOBS_BACKEND_ABI_MAJOR 1
#define IMAGEJOBS_BACKEND_ABI_MINOR 0
/* major << 16 | minor: what a plugin puts in its table's abi_version */
#define IMAGEJOBS_BACKEND_ABI_VERSION                                                              \
    ((uint32_t)IMAGEJOBS_BACKEND_ABI_MAJOR << 16 | (uint32_t)IMAGEJOBS_BACKEND_ABI_MINOR)
#define IMAGEJOBS_BACKEND_ABI_MAJOR_OF(v) ((uint32_t)(v) >> 16)
#define IMAGEJOBS_BACKEND_ABI_MINOR_OF(v) ((uint32_t)(v)&0xffffu)

/* The one symbol a plugin exports, and its type. */
#define IMAGEJOBS_BACKEND_ENTRY_SYMBOL "imagejobs_backend_entry"

/* Symbols a plugin exports: give them default visibility even when the
 * plugin is built with -fvisibility=hidden. */
#if defined(__GNUC__)
#define IMAGEJOBS_BACKEND_EXPORT __attribute__((visibility("default")))
#else
#define IMAGEJOBS_BACKEND_EXPORT
#endif

typedef enum {
    IMAGEJOBS_BACKEND_OK = 0,
    IMAGEJOBS_BACKEND_MORE = 1,         /* step: not the last one yet; call step again */
    IMAGEJOBS_BACKEND_DONE = 2,         /* step: the last step is done; pixels may be read */
    IMAGEJOBS_BACKEND_CANCELLED = 3,    /* returned early because the cancel flag was set */
    IMAGEJOBS_BACKEND_ERROR = -1,       /* failed: error() says why */
    IMAGEJOBS_BACKEND_UNSUPPORTED = -2, /* not with these parameters (a size, a style) */
    IMAGEJOBS_BACKEND_NO_MEMORY = -3
} imagejobs_backend_status_t;

/* The host's cancel flag: 0, or non-zero once the image in flight must
 * stop. An atomic 32-bit word; a plugin reads it with
 * imagejobs_backend_cancelled() and never writes it. */
#ifdef __cplusplus
typedef uint32_t imagejobs_backend_cancel_t; /* read with the __atomic builtins below */
#else
typedef _Atomic uint32_t imagejobs_backend_cancel_t;
#endif

/* Non-zero when the host asked the image in flight to stop. Cheap (one
 * atomic load): call it as often as you like. */
static inline int imagejobs_backend_cancelled(const imagejobs_backend_cancel_t *flag)
{
#ifdef __cplusplus
    return __atomic_load_n(flag, __ATOMIC_ACQUIRE) != 0;
#else
    return atomic_load_explicit(flag, memory_order_acquire) != 0;
#endif
}

/* An instance: the plugin's own type, opaque to the host. */
typedef struct imagejobs_backend imagejobs_backend_t;

/* What open gets. */
typedef struct {
    uint32_t size;       /* sizeof(imagejobs_backend_open_args_t) of the host */
    const char *options; /* --backend-options / IMAGEJOBS_BACKEND_OPTIONS, the
                          * plugin's own syntax; "" when not given. Not kept
                          * by the host after open returns: copy what you need */
    int32_t device;      /* which device this instance should use (the generator's
                          * index modulo the CUDA devices found, else 0) */
    uint32_t index;      /* which generator of the process opens it: 0, 1, ... */
    const imagejobs_backend_cancel_t *cancel; /* valid until close returns */
} imagejobs_backend_open_args_t;

/* describe's flags */
#define IMAGEJOBS_BACKEND_CAN_PREVIEW 1u /* preview is implemented */

/* What an instance can do, filled in by describe (the host zeroes it and
 * sets size first; a plugin fills the fields that fit in size). */
typedef struct {
    uint32_t size;                   /* set by the host: sizeof as it knows it */
    const char *name;                /* short, e.g. "procedural", "sd-turbo"; owned by
                                      * the plugin, valid until close */
    const char *version;             /* the plugin's own version, or NULL */
    uint32_t min_width, max_width;   /* supported sizes; the host refuses a job */
    uint32_t min_height, max_height; /* outside them before begin (0: no limit) */
    uint32_t size_multiple;          /* width and height are multiples of it (0 or 1: any) */
    uint32_t max_steps;              /* 0: no limit of its own */
    uint32_t flags;                  /* IMAGEJOBS_BACKEND_CAN_PREVIEW */
} imagejobs_backend_info_t;

/* One image. Strings are the host's, valid until begin returns. */
typedef struct {
    uint32_t size;      /* sizeof(imagejobs_backend_image_t) of the host */
    const char *prompt; /* UTF-8, not empty; a combination's style is already
                         * joined to it ("prompt, style") by imagejobs */
    const char *style;  /* the style on its own, or "" (see docs/backends.md) */
    uint64_t seed;
    uint32_t image_index;   /* which image of the combination (0, 1, ...): with the
                             * seed it decides the starting noise */
    uint32_t width, height; /* within describe's limits */
    uint32_t steps;         /* >= 1 */
} imagejobs_backend_image_t;

/* The finished image, from pixels: owned by the plugin, valid until the
 * next begin, abort or close. */
typedef struct {
    uint32_t size;          /* set by the host */
    const uint8_t *data;    /* row 0 first */
    uint32_t width, height; /* the image begun */
    uint32_t channels;      /* 3 (RGB8) or 4 (RGBA8: alpha is dropped) */
    size_t stride;          /* bytes from one row to the next (>= width * channels) */
} imagejobs_backend_pixels_t;

/* A small rendering of the current estimate (preview). */
typedef struct {
    uint32_t size;          /* set by the host */
    uint32_t max_side;      /* the longest side the host wants */
    uint8_t *rgb;           /* host's buffer: max_side * max_side * 3 bytes */
    uint32_t width, height; /* set by the plugin: at most max_side each */
} imagejobs_backend_preview_t;

typedef struct {
    uint32_t abi_version; /* IMAGEJOBS_BACKEND_ABI_VERSION the plugin was built with */
    uint32_t size;        /* sizeof(imagejobs_backend_api_t) the plugin was built with */

    /* A new instance in *out, or an error status with the reason in *error. */
    imagejobs_backend_status_t (*open)(const imagejobs_backend_open_args_t *args,
                                       imagejobs_backend_t **out, const char **error);
    /* Fills *info (see imagejobs_backend_info_t). */
    imagejobs_backend_status_t (*describe)(imagejobs_backend_t *b, imagejobs_backend_info_t *info);
    /* Starts an image, dropping any image in flight. Reads the cancel flag
     * if it works for long (a text encoder, an upload). */
    imagejobs_backend_status_t (*begin)(imagejobs_backend_t *b,
                                        const imagejobs_backend_image_t *image);
    /* Runs one step, or part of one, of the image begun: MORE, DONE (after
     * the last step), CANCELLED or an error. *steps_done: full steps done so
     * far (unchanged by a call that did part of a step). */
    imagejobs_backend_status_t (*step)(imagejobs_backend_t *b, uint32_t *steps_done);
    /* Optional (NULL, or describe without IMAGEJOBS_BACKEND_CAN_PREVIEW):
     * the current estimate, downscaled into p->rgb, after at least one step. */
    imagejobs_backend_status_t (*preview)(imagejobs_backend_t *b, imagejobs_backend_preview_t *p);
    /* After DONE: the finished pixels (may decode: reads the cancel flag). */
    imagejobs_backend_status_t (*pixels)(imagejobs_backend_t *b, imagejobs_backend_pixels_t *out);
    /* Drops the image in flight, if any; the instance is ready for begin. */
    void (*abort)(imagejobs_backend_t *b);
    /* The message of the last error on this instance ("" when none). */
    const char *(*error)(imagejobs_backend_t *b);
    /* Frees the instance (waits for its device if it must). */
    void (*close)(imagejobs_backend_t *b);
    /* ABI 1.0 ends here; later minors add fields after this line. */
} imagejobs_backend_api_t;

/* The type of IMAGEJOBS_BACKEND_ENTRY_SYMBOL. */
typedef const imagejobs_backend_api_t *(*imagejobs_backend_entry_fn)(void);

/* Declares the entry point in a plugin's source:
 *     IMAGEJOBS_BACKEND_DECLARE_ENTRY;
 *     const imagejobs_backend_api_t *imagejobs_backend_entry(void) { ... } */
#ifdef __cplusplus
#define IMAGEJOBS_BACKEND_DECLARE_ENTRY                                                            \
    extern "C" IMAGEJOBS_BACKEND_EXPORT const imagejobs_backend_api_t *imagejobs_backend_entry(void)
#else
#define IMAGEJOBS_BACKEND_DECLARE_ENTRY                                                            \
    IMAGEJOBS_BACKEND_EXPORT const imagejobs_backend_api_t *imagejobs_backend_entry(void)
#endif

#ifdef __cplusplus
}
#endif

#endif
