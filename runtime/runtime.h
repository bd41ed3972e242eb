/*
 * runtime.h - what every actor of one process shares: the ZeroMQ context,
 * the directory of mailbox names, the bus's topic subscriptions, and the
 * turning of SIGINT/SIGTERM into an orderly shutdown.
 *
 * The directory is the only state shared between threads; it is guarded by
 * one mutex and touched on start/stop, subscribe and publish, never per
 * direct message.
 */
#ifndef IMAGEJOBS_RUNTIME_H
#define IMAGEJOBS_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

typedef struct runtime runtime_t;

/* Creates the runtime. Blocks SIGINT and SIGTERM in the calling thread so
 * that every thread started after it inherits the mask and the signals are
 * taken only by runtime_wait_signal(). Returns NULL on failure (errno). */
runtime_t *runtime_new(void);

/* Terminates the ZeroMQ context; every mailbox must be destroyed first.
 * NULLs *rtp. */
void runtime_destroy(runtime_t **rtp);

/* The process-wide ZeroMQ context (owned by the runtime). */
void *runtime_zmq(runtime_t *rt);

/* Waits for SIGINT, SIGTERM or runtime_request_stop(); returns the signal. */
int runtime_wait_signal(runtime_t *rt);

/* Asks the thread in runtime_wait_signal() to return (any thread, any time):
 * how an actor asks for the process to stop. */
void runtime_request_stop(runtime_t *rt);

/* --- directory (used by mailbox.c) ---------------------------------------- */

/* Claims name; -1 with errno EEXIST if another mailbox holds it. */
int runtime_register(runtime_t *rt, const char *name);
/* Releases name and every subscription it held. */
void runtime_unregister(runtime_t *rt, const char *name);
/* 1 if a live mailbox holds name, with the id of that registration (unique
 * for the life of the runtime: a restarted actor gets a new one). */
int runtime_lookup(runtime_t *rt, const char *name, uint64_t *id);

/* Changes whenever a name is released. A sender that caches sockets to
 * names revalidates them when it changes: a socket to a closed inbox may
 * still accept a send for a while (ZeroMQ learns of the closed pipe
 * asynchronously), and that message would be lost. */
uint64_t runtime_epoch(runtime_t *rt);

/* Subscribes mailbox name to every topic starting with prefix. Effective
 * for every publish that begins after it returns. */
int runtime_subscribe(runtime_t *rt, const char *name, const char *prefix);

/* Copies into names (a caller-provided array of max entries, each
 * MSG_NAME_MAX bytes) the subscribers of topic; returns how many there are
 * (which may exceed max). */
size_t runtime_subscribers(runtime_t *rt, const char *topic, char (*names)[32], size_t max);

#endif
