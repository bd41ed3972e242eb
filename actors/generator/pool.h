/*
 * pool.h - the process's compute pool for the CPU engine: a few threads
 * (one per core) that run tiles for every CPU engine of the process.
 * Internal to actors/generator/ (the public part, opening and closing a
 * pool, is in backend.h).
 *
 * An engine joins the pool as a client and submits one batch at a time:
 * the tiles of one step (bands of rows, each well under a millisecond).
 * The pool takes tiles round-robin across the clients with tiles queued,
 * one tile per turn, so engines sharing the cores progress at the same
 * rate. When the last tile of a batch has run, its done callback runs on
 * the pool thread that ran it. gen_pool_abort() removes a client's queued
 * tiles and returns at once: the tiles already running finish on their own
 * and the last of them calls done (completed false). No call but
 * gen_pool_wait, gen_pool_leave and gen_pool_destroy ever waits for a tile.
 */
#ifndef IMAGEJOBS_GEN_POOL_H
#define IMAGEJOBS_GEN_POOL_H

#include "actors/generator/backend.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gen_pool_client gen_pool_client_t;
typedef struct gen_pool_batch gen_pool_batch_t;

/* Submitted by a client; the memory is the client's and must stay valid
 * until done has been called. */
struct gen_pool_batch {
    uint32_t ntiles;
    /* On a pool thread, never under the pool's lock: tile 0..ntiles-1. */
    void (*run)(gen_pool_batch_t *b, uint32_t tile);
    /* Once per batch, when no tile of it runs any more: completed (every
     * tile ran) or aborted. On the pool thread that ran the last tile, or
     * inside gen_pool_abort when no tile was running. Must not call back
     * into the pool. */
    void (*done)(gen_pool_batch_t *b, bool completed);

    /* the pool's, under its lock */
    uint32_t next;     /* tiles handed out */
    uint32_t running;  /* tiles running now */
    uint32_t finished; /* tiles run */
    bool aborted;
    gen_pool_client_t *client;
};

/* A client of p (p outlives it). NULL when out of memory. */
gen_pool_client_t *gen_pool_join(gen_pool_t *p);
/* Aborts the client's batch, waits for its running tiles and done
 * callbacks, frees it; NULLs *cp. Waits: never from an actor's loop. */
void gen_pool_leave(gen_pool_client_t **cp);
/* Queues b's tiles (b->ntiles >= 1, run and done set). -1 when the client
 * still has a batch that is not done or aborted, or ntiles is 0. */
int gen_pool_submit(gen_pool_client_t *c, gen_pool_batch_t *b);
/* Removes the client's queued tiles at once; never waits. */
void gen_pool_abort(gen_pool_client_t *c);
/* Blocks until every batch of c is done (render, tests, benches). */
void gen_pool_wait(gen_pool_client_t *c);

/* Tiles of c run so far (tests: fairness by count, not by time). */
uint64_t gen_pool_client_tiles(const gen_pool_client_t *c);
/* Tiles queued (not started) in p now, over all its clients. */
uint64_t gen_pool_queued(gen_pool_t *p);

/* Lowers the calling thread's priority to nice (Linux keeps nice values
 * per thread); never raises it. */
void gen_pool_nice_self(int nice);

#ifdef __cplusplus
}
#endif

#endif
