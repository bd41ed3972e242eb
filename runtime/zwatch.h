/*
 * zwatch.h - brings a ZeroMQ socket into a libev loop. The only place in
 * imagejobs that watches ZMQ_FD.
 *
 * ZMQ_FD is edge-triggered: it becomes readable when the socket's state
 * changes, not while messages wait, and any zmq call on the socket (a send
 * included) may consume that edge. So readiness is always taken from
 * ZMQ_EVENTS: an ev_prepare reads it before the loop sleeps and keeps an
 * ev_idle running while the socket is still ready, so the loop never blocks
 * with messages pending; an ev_check calls back once per loop iteration
 * while the socket is ready. The callback may handle a bounded batch and
 * return: whatever is left is picked up on the next iteration. A read-only
 * watcher's callback may be called when nothing is there (the edge was
 * stale): it must use non-blocking receives.
 */
#ifndef IMAGEJOBS_ZWATCH_H
#define IMAGEJOBS_ZWATCH_H

#include <ev.h>

typedef struct zwatch zwatch_t;

/* revents is EV_READ and/or EV_WRITE, or EV_ERROR if ZMQ_EVENTS failed. */
typedef void (*zwatch_fn)(struct ev_loop *loop, zwatch_t *w, int revents);

struct zwatch {
    ev_io io;
    ev_prepare prepare;
    ev_check check;
    ev_idle idle;
    void *socket;
    int events; /* EV_READ and/or EV_WRITE wanted */
    int fired;  /* io or idle woke the loop this iteration */
    int drained;
    zwatch_fn cb;
    void *data; /* for the owner */
};

/* Sets up w for socket (not started). events: EV_READ and/or EV_WRITE. */
int zwatch_init(zwatch_t *w, zwatch_fn cb, void *socket, int events);
void zwatch_start(struct ev_loop *loop, zwatch_t *w);

/* For a read-only watcher: the owner just got EAGAIN from a non-blocking
 * receive and will not touch the socket again before the loop sleeps. That
 * receive processed ZeroMQ's pending commands and re-armed ZMQ_FD, so the
 * next ZMQ_EVENTS check can be skipped (one syscall less per wake-up). */
void zwatch_drained(zwatch_t *w);
void zwatch_stop(struct ev_loop *loop, zwatch_t *w);

#endif
