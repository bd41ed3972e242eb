/*
 * mailbox.h - a named, lossless inbox plus the sockets to reach other
 * mailboxes by name, and the bus publish that fans an event out to every
 * subscribed mailbox.
 *
 * Every actor owns one mailbox; a thread that is not an actor (main, a test,
 * a benchmark) may own one too. A mailbox belongs to the thread that created
 * it: it must be used and destroyed there (ZeroMQ sockets are not thread
 * safe). Delivery is lossless and ordered per sender: inboxes are PULL
 * sockets with no high-water mark, sends never block and never drop; a send
 * to a name no mailbox holds fails with EHOSTUNREACH.
 */
#ifndef IMAGEJOBS_MAILBOX_H
#define IMAGEJOBS_MAILBOX_H

#include "messages/message.h"
#include "runtime/runtime.h"

typedef struct mailbox mailbox_t;

/* Creates the mailbox `name` (unique in rt) in the calling thread. Returns
 * NULL with errno (EEXIST when the name is taken). */
mailbox_t *mailbox_new(runtime_t *rt, const char *name);

/* Unsubscribes, releases the name and closes every socket; NULLs *mbp. */
void mailbox_destroy(mailbox_t **mbp);

const char *mailbox_name(const mailbox_t *mb);
runtime_t *mailbox_runtime(const mailbox_t *mb);

/* The inbox socket, to hand to a zwatch (readable: mailbox_try_recv). */
void *mailbox_inbox(mailbox_t *mb);

/* A fresh correlation id, never 0, unique within this mailbox. */
uint64_t mailbox_next_corr(mailbox_t *mb);

/* Sends msg (borrowed; its sender is set to this mailbox) to mailbox `to`.
 * Returns 0, or -1 with errno (EHOSTUNREACH: no such mailbox). */
int mailbox_send(mailbox_t *mb, const char *to, msg_t *msg);

/* Subscribes this mailbox to every bus topic starting with prefix. Events
 * published after it returns are delivered: there is no slow joiner. */
int mailbox_subscribe(mailbox_t *mb, const char *prefix);

/* Publishes msg (borrowed; flagged MSG_FLAG_EVENT) on topic: encoded once
 * and delivered to every subscribed mailbox, this one included if it
 * subscribed. Returns the number of mailboxes it was delivered to, or -1. */
int mailbox_publish(mailbox_t *mb, const char *topic, msg_t *msg);

/* Takes one message without waiting. Returns 1 and a message the caller owns
 * in *out, 0 when the inbox is empty, -1 when a malformed message was taken
 * and dropped (logged) — call again. */
int mailbox_try_recv(mailbox_t *mb, msg_t **out);

/* Waits up to timeout_ms (-1: forever) for a well-formed message; for
 * threads without a loop. Returns it (caller owns) or NULL on timeout. */
msg_t *mailbox_recv(mailbox_t *mb, int timeout_ms);

#endif
