/*
 * backend.h - the generation engine: one image at a time, in bounded slices,
 * on the CPU or on a CUDA device.
 *
 * A backend belongs to one generator actor and is used from that actor's
 * thread only. gen_begin() starts an image; the actor then calls
 * gen_advance() from its loop, one slice per call, checking its sockets for
 * a cancel in between: on the CPU a call queues one step's tiles on the
 * process's compute pool (pool.h) and never computes (on an inline pool:
 * one band of rows, ~0.5 ms), on CUDA a call enqueues at most one step;
 * neither blocks. The per-pixel math (sampler.h) is shared by both backends, so the
 * same parameters give the same picture on either (within 2/255).
 *
 * A third engine runs a plugin (include/imagejobs/backend.h) loaded at
 * start-up with gen_plugin_load(): its calls run on a worker thread of the
 * backend and gen_advance() returns GEN_WAIT meanwhile, as on CUDA; the
 * wakeup callback says when to call it again (actors/generator/plugin.c).
 */
#ifndef IMAGEJOBS_GEN_BACKEND_H
#define IMAGEJOBS_GEN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "messages/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits of gen_params_t, checked by gen_params_check(): whatever a job
 * may ask for (messages/limits.h). */
#define GEN_PROMPT_MAX JOB_GENERATION_PROMPT_MAX
#define GEN_SIZE_MIN JOB_SIZE_MIN
#define GEN_SIZE_MAX JOB_SIZE_MAX
#define GEN_SIZE_MULTIPLE JOB_SIZE_MULTIPLE
#define GEN_STEPS_MIN JOB_STEPS_MIN
#define GEN_STEPS_MAX JOB_STEPS_MAX

typedef enum {
    GEN_BACKEND_AUTO,
    GEN_BACKEND_CPU,
    GEN_BACKEND_CUDA,
    GEN_BACKEND_PLUGIN
} gen_backend_kind_t;

/* "auto", "cpu", "cuda" or "plugin:PATH|NAME" (GEN_BACKEND_PLUGIN); -1 for
 * anything else. */
int gen_backend_kind_parse(const char *s, gen_backend_kind_t *out);

/* What follows "plugin:" in a --backend value (a path or a name), or NULL
 * when s is not a plugin's. */
const char *gen_backend_plugin_spec(const char *s);

/* A plugin library, loaded once per process and shared by the generators
 * that open instances of it (read-only to them). */
typedef struct gen_plugin gen_plugin_t;

/* dlopens a plugin: spec is a path (anything with a '/') or a name, looked
 * up in dir as NAME.so then imagejobs-backend-NAME.so. Checks the entry
 * symbol, the ABI major and the table's size. options (copied; NULL: "")
 * go to every instance's open. NULL with one line saying why in err (file
 * missing, not loadable, symbol missing, ABI mismatch). */
gen_plugin_t *gen_plugin_load(const char *spec, const char *dir, const char *options, char *err,
                              size_t errlen);
/* After every backend of it is closed; NULLs *pp. */
void gen_plugin_unload(gen_plugin_t **pp);
/* The file it was loaded from. */
const char *gen_plugin_path(const gen_plugin_t *pl);

/* CUDA devices usable now; 0 without a driver or device (error 35 on a
 * machine with no GPU), or in a build without CUDA. */
int gen_cuda_device_count(void);

typedef struct {
    const char *prompt; /* required, 1..GEN_PROMPT_MAX bytes; not kept */
    uint64_t seed;
    uint32_t image_index;   /* which image of the combination: part of the noise counter */
    uint32_t width, height; /* GEN_SIZE_MIN..GEN_SIZE_MAX, multiples of 8 */
    uint32_t steps;         /* GEN_STEPS_MIN..GEN_STEPS_MAX */
} gen_params_t;

/* 0, or -1 with a message naming the offending field ("width must be ..."). */
int gen_params_check(const gen_params_t *p, char *err, size_t errlen);

typedef struct gen_backend gen_backend_t;

/* The compute pool CPU engines run their tiles on (actors/generator/pool.h):
 * threads shared by every CPU backend opened on it, which run the tiles of
 * all of them round-robin, at nice `nice` (GEN_POOL_NICE: batch work, below
 * the control path). A pool of 0 threads is "inline": its engines compute
 * on the thread that calls gen_advance, one band of rows per call, as
 * every engine did before the pool (--compute-pool per-generator). NULL
 * with the reason in err. */
typedef struct gen_pool gen_pool_t;
#define GEN_POOL_NICE 10
gen_pool_t *gen_pool_new(unsigned threads, int nice, char *err, size_t errlen);
/* Joins the threads, frees; NULLs *pp. After every backend on it is closed. */
void gen_pool_destroy(gen_pool_t **pp);
unsigned gen_pool_threads(const gen_pool_t *p);
/* The process's own pool, made on first use with gen_cpu_threads() threads
 * at GEN_POOL_NICE and never freed (NULL if it could not start): the pool
 * of backends opened without one. */
gen_pool_t *gen_pool_process(void);

/* Opens a backend. AUTO picks CUDA when a device exists and opens, else the
 * CPU (with one log line saying why); CUDA with no usable device fails.
 * NULL with the reason in err. The CPU backend runs on gen_pool_process().
 * gen_backend_open_device: the same on CUDA device `device` (one generator
 * actor per GPU); gen_backend_open uses device 0. */
gen_backend_t *gen_backend_open(gen_backend_kind_t kind, char *err, size_t errlen);
gen_backend_t *gen_backend_open_device(gen_backend_kind_t kind, int device, char *err,
                                       size_t errlen);
/* The same with the CPU backend on the caller's pool (NULL: the process's;
 * it must outlive the backend): a service shares one pool between its
 * generators. */
gen_backend_t *gen_backend_open_with(gen_backend_kind_t kind, int device, gen_pool_t *pool,
                                     char *err, size_t errlen);
/* The same, and for GEN_BACKEND_PLUGIN an instance of plugin (which must
 * outlive the backend) opened on its worker thread with device. */
gen_backend_t *gen_backend_open_for(gen_backend_kind_t kind, const gen_plugin_t *plugin, int device,
                                    gen_pool_t *pool, char *err, size_t errlen);
/* Leaves the pool (waiting for a tile still running) / waits for the
 * device, frees everything, NULLs *bp. Never from an actor's loop. */
void gen_backend_close(gen_backend_t **bp);
/* "cpu", "cuda" or "plugin:NAME" (NAME: what the plugin calls itself). */
const char *gen_backend_name(const gen_backend_t *b);

/* Threads of the process's compute pool: IMAGEJOBS_GEN_THREADS when set
 * (1..64), else the online CPUs (at most 16). */
unsigned gen_cpu_threads(void);

/* CUDA: fn(arg) is called from a CUDA host-callback thread each time a
 * queued step (or the final copy) completes; it must only do something
 * thread-safe such as ev_async_send(). Set it before the first gen_begin.
 * Plugin: the same, from the backend's worker thread after each call into
 * the plugin. CPU: the same, from the pool thread that ran the last tile of
 * a step (never on an inline pool, where gen_advance never waits). A
 * wakeup may come late, for an image aborted since: gen_advance then just
 * says GEN_WAIT or goes on with the current image. */
void gen_backend_set_wakeup(gen_backend_t *b, void (*fn)(void *arg), void *arg);

/* Starts an image, dropping any in-flight one. -1 with the reason in err
 * (and gen_error) when the parameters are invalid. Cheap: no pixel work. */
int gen_begin(gen_backend_t *b, const gen_params_t *p, char *err, size_t errlen);

typedef enum { GEN_MORE = 0, GEN_WAIT = 1, GEN_DONE = 2, GEN_ERROR = -1 } gen_status_t;

/* Does one bounded slice of work.
 *   CPU:  queues the tiles of the next step on the pool and returns
 *         GEN_WAIT; once they have all run, GEN_MORE (the state is
 *         quiescent until the next call: progress, previews, snapshots),
 *         and GEN_DONE after the last step. Never computes on the caller.
 *         On an inline pool: one band of rows of the current step,
 *         synchronously (~0.5 ms), GEN_MORE until the last band.
 *   CUDA: finds the in-flight step finished (cudaEventQuery) and/or
 *         enqueues the next one; GEN_WAIT while the device is busy (wait
 *         for the wakeup callback, or poll). Never blocks.
 * GEN_DONE when all steps are done and gen_pixels() is readable (repeats
 * until the next gen_begin). GEN_ERROR with gen_error() set, also when no
 * image was begun. */
gen_status_t gen_advance(gen_backend_t *b);

/* Steps completed of the current image. */
uint32_t gen_steps_done(const gen_backend_t *b);

/* After GEN_DONE: RGB8 pixels, width*height*3 bytes, owned by the backend,
 * valid until the next gen_begin, gen_abort or close. NULL before. */
const uint8_t *gen_pixels(const gen_backend_t *b);

/* Tests/debugging: RGB8 image of the current state (width*height*3 bytes
 * into rgb_out): the starting noise before the first step. On CUDA it
 * waits for the device: never call it from an actor loop. 0 or -1. */
int gen_snapshot(gen_backend_t *b, uint8_t *rgb_out);

/* Live previews: a small RGB8 rendering of the image in flight, the current
 * state (what gen_snapshot gives, so after GEN_DONE the finished image)
 * box-averaged so that its longest side is at most max_side, keeping the
 * aspect ratio (an image no larger than that, e.g. 64x64 for 128, is copied
 * as it is). rgb_out holds max_side * max_side * 3 bytes; *w_out, *h_out
 * get the preview's size. Between slices only: it reads the state on the
 * calling thread, every source pixel once (about 1 ms at 512x512 and
 * 15 ms at 2048x2048 on one core).
 * 0, or -1 (gen_error says why) before the first step of an image is done,
 * for max_side 0, and always on CUDA ("previews not supported on cuda"):
 * the state lives on the device, and fetching it would make the actor's
 * loop wait for the stream. */
int gen_preview(gen_backend_t *b, uint32_t max_side, uint8_t *rgb_out, uint32_t *w_out,
                uint32_t *h_out);
/* After gen_preview failed: true when asking again later may succeed. A
 * plugin's previews are rendered on its worker after each step, starting
 * with the first ask of an image, which finds none yet (the plugin's state
 * is the worker's while a step runs: the loop never reads it). */
bool gen_preview_pending(const gen_backend_t *b);

/* Drops the in-flight image at once (a queued GPU step finishes on its own,
 * unobserved; a CPU step's queued tiles are taken off the pool and the
 * ones running, at most one per pool thread, finish on their own, on
 * buffers the next image does not use); the backend is ready for
 * gen_begin. Never waits. */
void gen_abort(gen_backend_t *b);

/* After GEN_WAIT: blocks until the backend has something to say (render,
 * tests, benches; never from an actor's loop). 0, or -1 with gen_error. */
int gen_wait(gen_backend_t *b);

/* The last error ("" when none). Owned by the backend. */
const char *gen_error(const gen_backend_t *b);

/* Runs a whole image synchronously: gen_begin, then every slice (waiting on
 * the device when it must). For render, tests and benches, never for an
 * actor loop. *rgb_out is malloc'd (caller frees); ms_per_step (may be
 * NULL) gets the mean wall time per step. 0, or -1 with the reason in err. */
int gen_render_sync(gen_backend_t *b, const gen_params_t *p, uint8_t **rgb_out, double *ms_per_step,
                    char *err, size_t errlen);

/* Tiles (or, on an inline pool, slices) the CPU backend cuts a step of
 * width x height into (1 for CUDA): lets tests check that a step is not
 * one unbounded block of work. */
uint32_t gen_slices_per_step(const gen_backend_t *b, uint32_t width, uint32_t height);

#ifdef __cplusplus
}
#endif

#endif
