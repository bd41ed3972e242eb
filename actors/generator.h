/*
 * generator.h - a generator actor: takes one combination at a time from the
 * store, renders its images step by step on its backend, records each one,
 * and stops at once when a cancel event for its job arrives.
 *
 * Messages handled: WORK_AVAILABLE (bus "work": ask the store for work now),
 * JOB_CANCEL (bus "cancel": stop), CANCEL_RECHECK (bus "cancel": re-read the
 * durable cancel from the store), PREVIEW_WANTED (bus "preview.wanted":
 * render previews of that job for ttl_ms).
 * Events published: JOB_PROGRESS (bus "job.progress") after completed
 * steps, JOB_PREVIEW (bus "job.preview") while previews are wanted.
 * Requests sent: WORK_REQUEST, IMAGE_READY, TASK_STOPPED, LEASE_RENEW to the
 * store; REDIS_FLAG_GET to redis in poll mode.
 */
#ifndef IMAGEJOBS_GENERATOR_H
#define IMAGEJOBS_GENERATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actors/generator/backend.h"
#include "runtime/actor.h"

typedef struct {
    const char *name;     /* actor name, e.g. "generator-0" */
    const char *instance; /* this process's instance id (claims) */
    const char *store;    /* actor to ask for work; default "store" */
    const char *redis;    /* actor for poll mode; default "redis" */
    gen_backend_kind_t backend;
    const gen_plugin_t *plugin; /* GEN_BACKEND_PLUGIN: loaded by the caller, outlives the actor */
    int device;                 /* CUDA device (a plugin's: its open's device) */
    gen_pool_t *pool;     /* CPU backend's compute pool (outlives the actor); NULL: the process's */
    bool poll_mode;       /* --cancel-check=poll: the seed's design, no events */
    double sweep_s;       /* ask for work this often when idle; default 2 */
    double lease_renew_s; /* renew the claim this often; default 5 */
    double request_timeout_s; /* store/redis replies; default 10 */
    /* Called on the encoder thread before each PNG encode (NULL: none):
     * lets a test hold an encode to show the loop keeps reading meanwhile. */
    void (*before_encode)(void *arg);
    void *before_encode_arg;
} generator_config_t;

/* The most generator actors one process runs. */
#define GENERATORS_MAX 64

/* How many generators `--generators auto` starts: one per GPU when there
 * are GPUs, else one per core; never more than GENERATORS_MAX, never 0. */
unsigned generator_auto_count(long cores, int gpus);

/* Starts the actor; returns once its backend is open (NULL + reason: e.g.
 * --backend=cuda with no device). The config is copied. */
actor_t *generator_start(runtime_t *rt, const generator_config_t *cfg, char *err, size_t errlen);

/* Previews rendered (and published) by all generators of this process so
 * far; any thread may read it. */
uint64_t generator_previews_rendered(void);

/* Stops the actor (its claim is given back first) and frees it; NULLs *ap. */
void generator_destroy(actor_t **ap);

#endif
