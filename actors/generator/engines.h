/*
 * engines.h - what backend.c needs from the engines: cpu.c, cuda.cu (or
 * cuda_none.c in a build without CUDA), and plugin.c. Internal to
 * actors/generator/.
 *
 * backend.c validates parameters, builds the scene and keeps the common
 * bookkeeping; an engine owns its buffers and runs the steps. The CUDA
 * functions are extern "C" wrappers that return a status and keep the
 * reason in the engine (gen_cuda_error), as .cu files in this tree must.
 */
#ifndef IMAGEJOBS_GEN_ENGINES_H
#define IMAGEJOBS_GEN_ENGINES_H

#include "actors/generator/backend.h"
#include "actors/generator/sampler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ cpu.c */

typedef struct gen_cpu gen_cpu_t;

/* An engine on pool (an inline pool: computes on the caller's thread). */
gen_cpu_t *gen_cpu_open(gen_pool_t *pool, char *err, size_t errlen);
/* Aborts, waits for the engine's tiles still running, frees. */
void gen_cpu_close(gen_cpu_t **cp);
/* From a pool thread when a step's tiles have all run (backend.h). */
void gen_cpu_set_wakeup(gen_cpu_t *c, void (*fn)(void *arg), void *arg);
/* Takes a copy of *sc; allocates the state for its size. 0 or -1. */
int gen_cpu_begin(gen_cpu_t *c, const sampler_scene_t *sc, uint32_t steps, char *err,
                  size_t errlen);
/* Queues the next step (GEN_WAIT), finds it done (GEN_MORE, GEN_DONE);
 * inline: one band of rows, GEN_MORE or GEN_DONE. */
gen_status_t gen_cpu_advance(gen_cpu_t *c);
/* Blocks until the queued step has run (render, tests, benches). */
void gen_cpu_wait(gen_cpu_t *c);
uint32_t gen_cpu_steps_done(const gen_cpu_t *c);
const uint8_t *gen_cpu_pixels(const gen_cpu_t *c);
/* -1 also while a step is queued or running (the state is the pool's). */
int gen_cpu_snapshot(const gen_cpu_t *c, uint8_t *rgb_out);
/* Takes the queued tiles off the pool; never waits. */
void gen_cpu_abort(gen_cpu_t *c);
/* The current state box-averaged to out_w x out_h (each at most the
 * image's size) into rgb_out. -1 before the first step is done, and while
 * a step is queued or running. */
int gen_cpu_preview(const gen_cpu_t *c, uint32_t out_w, uint32_t out_h, uint8_t *rgb_out);
/* Rows per tile (per slice, inline) for an image of this width. */
uint32_t gen_cpu_band_rows(const gen_cpu_t *c, uint32_t width);

/* ---------------------------------------------------- cuda.cu / cuda_none.c */

typedef struct gen_cuda gen_cuda_t;

/* Devices usable now (0 on any error). */
int gen_cuda_count(void);
/* 0 and *out, or -1 with the reason in err. */
int gen_cuda_open(int device, gen_cuda_t **out, char *err, size_t errlen);
void gen_cuda_close(gen_cuda_t **gp);
void gen_cuda_set_wakeup(gen_cuda_t *g, void (*fn)(void *arg), void *arg);
int gen_cuda_begin(gen_cuda_t *g, const sampler_scene_t *sc, uint32_t steps);
/* Never blocks: GEN_WAIT, GEN_DONE or GEN_ERROR. */
gen_status_t gen_cuda_advance(gen_cuda_t *g);
/* Blocks until the queued work is done (render/tests/bench only). 0 or -1. */
int gen_cuda_wait(gen_cuda_t *g);
uint32_t gen_cuda_steps_done(const gen_cuda_t *g);
const uint8_t *gen_cuda_pixels(const gen_cuda_t *g);
int gen_cuda_snapshot(gen_cuda_t *g, uint8_t *rgb_out);
void gen_cuda_abort(gen_cuda_t *g);
const char *gen_cuda_error(const gen_cuda_t *g);

/* ------------------------------------------------------------ plugin.c */

typedef struct gen_plug gen_plug_t;

/* An instance of lib: starts its worker thread, which calls the plugin's
 * open and describe; returns when they are done (start-up only). 0 and
 * *out, or -1 with the plugin's reason in err. */
int gen_plug_open(const gen_plugin_t *lib, int device, gen_plug_t **out, char *err, size_t errlen);
/* Raises the cancel flag, joins the worker (which closes the instance). */
void gen_plug_close(gen_plug_t **pp);
const char *gen_plug_name(const gen_plug_t *p);
void gen_plug_set_wakeup(gen_plug_t *p, void (*fn)(void *arg), void *arg);
/* The plugin's own limits (describe). 0 or -1 with the reason in err. */
int gen_plug_check(const gen_plug_t *p, uint32_t width, uint32_t height, uint32_t steps, char *err,
                   size_t errlen);
/* Queues the image's begin on the worker (aborting any in flight); never
 * blocks. -1 when the plugin's limits refuse it. */
int gen_plug_begin(gen_plug_t *p, const char *prompt, uint64_t seed, uint32_t image_index,
                   uint32_t width, uint32_t height, uint32_t steps, char *err, size_t errlen);
/* Never blocks: GEN_WAIT while the worker is in the plugin, GEN_DONE once
 * the pixels are fetched, GEN_ERROR with gen_plug_error set. */
gen_status_t gen_plug_advance(gen_plug_t *p);
/* Blocks until the worker is done with the last command (render, tests). */
int gen_plug_wait(gen_plug_t *p);
uint32_t gen_plug_steps_done(const gen_plug_t *p);
const uint8_t *gen_plug_pixels(const gen_plug_t *p);
/* The latest preview the worker rendered of the current image (after a
 * step), copied out: 0, or -1 with gen_plug_error set; then
 * gen_plug_preview_pending says whether one is on its way (the first ask
 * of an image starts the worker rendering them). Never blocks. */
int gen_plug_preview(gen_plug_t *p, uint32_t max_side, uint8_t *rgb_out, uint32_t *w_out,
                     uint32_t *h_out);
bool gen_plug_preview_pending(const gen_plug_t *p);
/* Raises the cancel flag and queues the plugin's abort; returns at once. */
void gen_plug_abort(gen_plug_t *p);
const char *gen_plug_error(const gen_plug_t *p);

#ifdef __cplusplus
}
#endif

#endif
