/*
 * zwatch.c - libev watcher for a ZeroMQ socket (see zwatch.h for why it
 * takes four libev watchers to watch one socket).
 */
#include "config.h"

#include "runtime/zwatch.h"

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#define CONTAINER(ptr, member) ((zwatch_t *)((char *)(ptr)-offsetof(zwatch_t, member)))

/* The wanted subset of the socket's ZMQ_EVENTS as libev events, or
 * EV_ERROR when they cannot be read (the socket is being closed). */
static int s_ready(zwatch_t *w)
{
    uint32_t zevents = 0;
    size_t size = sizeof zevents;
    if (zmq_getsockopt(w->socket, ZMQ_EVENTS, &zevents, &size) < 0)
        return EV_ERROR;
    int revents = 0;
    if ((w->events & EV_READ) && (zevents & ZMQ_POLLIN))
        revents |= EV_READ;
    if ((w->events & EV_WRITE) && (zevents & ZMQ_POLLOUT))
        revents |= EV_WRITE;
    return revents;
}

static void s_prepare_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
    zwatch_t *w = CONTAINER(p, prepare);
    if (w->drained) {
        w->drained = 0;
        ev_io_start(loop, &w->io);
        return;
    }
    /* Ready now (or broken): do not sleep, let check_cb run right away.
     * Otherwise sleep on the fd until the socket's state changes. */
    if (s_ready(w))
        ev_idle_start(loop, &w->idle);
    else
        ev_io_start(loop, &w->io);
}

static void s_check_cb(struct ev_loop *loop, ev_check *c, int revents)
{
    zwatch_t *w = CONTAINER(c, check);
    /* libev may invoke this before or after the io/idle callbacks of the
     * same iteration: they either ran (fired) or are still pending. */
    int fired = w->fired || ev_is_pending(&w->io) || ev_is_pending(&w->idle);
    w->fired = 0;
    ev_io_stop(loop, &w->io); /* also clears a pending event */
    ev_idle_stop(loop, &w->idle);
    /* Neither fired: the socket's state has not changed since prepare_cb
     * found it not ready. */
    if (!fired)
        return;
    /* A read-only callback finds out for itself with a non-blocking
     * receive, which costs what a ZMQ_EVENTS query would. */
    int ready = w->events == EV_READ ? EV_READ : s_ready(w);
    if (ready)
        w->cb(loop, w, ready);
}

/* The io and idle watchers only wake the loop; the work is in check_cb. */
static void s_wake_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    CONTAINER(io, io)->fired = 1;
}

static void s_idle_cb(struct ev_loop *loop, ev_idle *idle, int revents)
{
    CONTAINER(idle, idle)->fired = 1;
}

void zwatch_drained(zwatch_t *w)
{
    w->drained = 1;
}

int zwatch_init(zwatch_t *w, zwatch_fn cb, void *socket, int events)
{
    int fd;
    size_t size = sizeof fd;
    if (zmq_getsockopt(socket, ZMQ_FD, &fd, &size) < 0)
        return -1;
    w->socket = socket;
    w->events = events;
    w->cb = cb;
    w->fired = w->drained = 0;
    ev_io_init(&w->io, s_wake_cb, fd, EV_READ);
    ev_prepare_init(&w->prepare, s_prepare_cb);
    ev_check_init(&w->check, s_check_cb);
    ev_idle_init(&w->idle, s_idle_cb);
    return 0;
}

void zwatch_start(struct ev_loop *loop, zwatch_t *w)
{
    ev_prepare_start(loop, &w->prepare);
    ev_check_start(loop, &w->check);
}

void zwatch_stop(struct ev_loop *loop, zwatch_t *w)
{
    ev_prepare_stop(loop, &w->prepare);
    ev_check_stop(loop, &w->check);
    ev_io_stop(loop, &w->io);
    ev_idle_stop(loop, &w->idle);
}
