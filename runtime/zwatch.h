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
 * return: whatever is left is picked up on the next iteration.
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
    zwatch_fn cb;
    void *data; /* for the owner */
};

/* Sets up w for socket (not started). events: EV_READ and/or EV_WRITE. */
int zwatch_init(zwatch_t *w, zwatch_fn cb, void *socket, int events);
void zwatch_start(struct ev_loop *loop, zwatch_t *w);
void zwatch_stop(struct ev_loop *loop, zwatch_t *w);

#endif
