/*
 * offload.h - runs CPU-heavy work (a PNG encode) on a helper thread so the
 * owning actor's loop keeps turning, and hands each result back on that loop.
 *
 * An offload belongs to one actor: it is created, fed and destroyed from the
 * actor's thread, and its done callback runs there too, once per submitted
 * job, in submission order. The helper thread never touches the loop except
 * through an ev_async (the one cross-thread libev call that is safe).
 */
#ifndef IMAGEJOBS_OFFLOAD_H
#define IMAGEJOBS_OFFLOAD_H

#include <ev.h>

typedef struct offload offload_t;

/* Runs on the helper thread: does the job's work, writing its results into
 * the job itself. */
typedef void (*offload_work_fn)(void *job);
/* Runs on the loop's thread once the work is done (or, at destroy, for a job
 * whose work never ran: ran is 0). Owns job from then on. */
typedef void (*offload_done_fn)(void *job, int ran, void *arg);

/* Starts the helper thread for loop. Returns NULL (errno) if it cannot. */
offload_t *offload_new(struct ev_loop *loop, offload_done_fn done, void *arg);

/* Queues job for work (job is the caller's until done gets it back). */
void offload_submit(offload_t *o, offload_work_fn work, void *job);

/* Waits for the job being worked on, hands every job back through done
 * (finished ones with ran 1, queued ones with ran 0), joins the thread and
 * frees; NULLs *op. From the loop's thread, outside done. */
void offload_destroy(offload_t **op);

#endif
