/*
 * actor.h - an actor: one thread, one libev loop, one mailbox.
 *
 * actor_new() returns only once the actor's thread has built its loop and
 * mailbox and its init hook has succeeded (or returns NULL with the reason);
 * actor_destroy() asks the thread to stop, waits for it and frees
 * everything. Messages are dispatched by type through the spec's handler
 * table; replies to actor_request() go to the request's callback, matched by
 * correlation id, or time out.
 *
 * Everything below except actor_new/actor_destroy is called from the
 * actor's own thread (its init, handlers, callbacks and watchers).
 */
#ifndef IMAGEJOBS_ACTOR_H
#define IMAGEJOBS_ACTOR_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "messages/message.h"
#include "runtime/mailbox.h"
#include "runtime/runtime.h"

typedef struct actor actor_t;

/* Handles one message; msg is borrowed and freed after the handler returns
 * (steal a STR/BIN field by NULLing it). */
typedef void (*actor_handler_fn)(actor_t *self, msg_t *msg);

/* The outcome of actor_request(): status 0 with the reply (borrowed), or
 * -ETIMEDOUT / -ECANCELED (actor stopping) with reply NULL. */
typedef void (*actor_reply_fn)(actor_t *self, int status, msg_t *reply, void *arg);

typedef struct {
    /* Runs in the actor's thread before actor_new() returns; sets up state,
     * watchers and subscriptions. Returns 0, or -1 after actor_fail(). */
    int (*init)(actor_t *self, void *arg);
    /* Runs in the actor's thread after its loop has ended, before the
     * mailbox closes: stop watchers, free state. */
    void (*fini)(actor_t *self);
    /* Runs in the actor's thread when a stop is asked, after every message
     * already in its inbox has been handled: finish what must not be lost
     * (a claim to give back, statements in flight). Return true to stop now,
     * false to keep the loop turning until actor_stop_ready() is called or
     * the stop deadline passes. NULL: stop at once. */
    bool (*stopping)(actor_t *self);
    /* Dispatch table, indexed by message type. A message with no handler is
     * logged and dropped. */
    actor_handler_fn handlers[MSG_TYPE_COUNT];
} actor_spec_t;

/* Starts actor `name` (unique in rt). Returns NULL and writes the reason to
 * err when the thread, its loop, its mailbox or its init fails. */
actor_t *actor_new(runtime_t *rt, const char *name, const actor_spec_t *spec, void *arg, char *err,
                   size_t errlen);

/* Runs the actor's thread at real-time priority prio (SCHED_FIFO 1..99):
 * it then takes a core from any ordinary thread the moment its inbox or a
 * socket wakes it. 0, or an errno (EPERM without CAP_SYS_NICE or an
 * RLIMIT_RTPRIO that allows it). */
int actor_set_realtime(actor_t *a, int prio);

/* Asks the actor to stop (see actor_spec_t.stopping), waits at most
 * ACTOR_STOP_DEADLINE_S for it to finish, runs fini, joins its thread and
 * frees it; NULLs *ap. Safe to call with *ap NULL. */
void actor_destroy(actor_t **ap);
#define ACTOR_STOP_DEADLINE_S 3.0

/* From the actor's thread, after its stopping hook returned false: it has
 * finished, the loop may end. */
void actor_stop_ready(actor_t *self);

/* True once a stop has been asked (the stopping phase). */
bool actor_is_stopping(const actor_t *self);

const char *actor_name(const actor_t *self);
struct ev_loop *actor_loop(actor_t *self);
mailbox_t *actor_mailbox(actor_t *self);
runtime_t *actor_runtime(actor_t *self);

/* The actor's private state pointer (its own to set in init). */
void *actor_state(actor_t *self);
void actor_set_state(actor_t *self, void *state);

/* Records why init failed (reported by actor_new). */
void actor_fail(actor_t *self, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sends msg (borrowed) to the actor or mailbox `to`. 0 or -1 (errno). */
int actor_send(actor_t *self, const char *to, msg_t *msg);

/* Sends reply (borrowed) to the sender of request, with its correlation id. */
int actor_reply(actor_t *self, const msg_t *request, msg_t *reply);

/* Where a request came from: what an actor keeps to answer it later, once
 * the asynchronous work it started (a statement, a Redis command) is done.
 * An empty sender means nobody waits for the answer. */
typedef struct {
    char sender[MSG_NAME_MAX];
    uint64_t corr;
} actor_caller_t;

/* The caller of request. */
actor_caller_t actor_caller(const msg_t *request);

/* Sends reply (borrowed) to a saved caller. A caller that stopped meanwhile
 * is logged at debug level: returns -1. Nobody waiting (empty sender): 0. */
int actor_reply_to(actor_t *self, const actor_caller_t *to, msg_t *reply);

/* Answers the caller with MSG_ERROR: code (a negative errno) and a reason
 * formatted from fmt. */
int actor_reply_error(actor_t *self, const actor_caller_t *to, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Why a request did not get the reply it wanted, for a log line: the
 * status's strerror, an ERROR reply's reason, or the unexpected reply's
 * type. Never NULL; static or owned by reply. */
const char *actor_reply_reason(int status, const msg_t *reply);

/* Sends request (borrowed) to `to` with a fresh correlation id; cb runs
 * exactly once: with the reply, or after timeout_s with -ETIMEDOUT, or with
 * -ECANCELED if the actor stops first. Returns 0, or -1 if the send failed
 * (cb is then never called). */
int actor_request(actor_t *self, const char *to, msg_t *request, double timeout_s,
                  actor_reply_fn cb, void *arg);

/* Bus: subscribe to topics starting with prefix; publish an event (borrowed)
 * to every subscriber. See mailbox.h. */
int actor_subscribe(actor_t *self, const char *prefix);
int actor_publish(actor_t *self, const char *topic, msg_t *msg);

#endif
