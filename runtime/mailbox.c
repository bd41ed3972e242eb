/*
 * mailbox.c - inbox, peer sockets and bus fan-out over ZeroMQ inproc.
 *
 * Why PUSH/PULL and a directory instead of PUB/SUB for the bus: a PUB socket
 * drops at its high-water mark and drops everything published before a new
 * subscriber's subscription has travelled back to it (the slow joiner). Here
 * a subscription is an entry in the runtime's directory, written under a
 * mutex before mailbox_subscribe() returns, and a publish reads the
 * directory and sends one copy of the encoded frame down each subscriber's
 * lossless PUSH pipe. No hop through a broker thread, nothing dropped, no
 * race with a late subscriber.
 */
#include "config.h"

#include "runtime/mailbox.h"

#include "runtime/clock.h"
#include "runtime/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

typedef struct {
    char name[MSG_NAME_MAX];
    uint64_t id;  /* the registration this socket reaches */
    void *socket; /* PUSH connected to inproc://ij/<name> */
} peer_t;

struct mailbox {
    runtime_t *rt;
    char name[MSG_NAME_MAX];
    void *inbox; /* PULL bound to inproc://ij/<name> */
    peer_t *peers;
    size_t npeers, cap;
    uint64_t epoch; /* runtime_epoch() when the peers were last checked */
    uint64_t corr;
    msg_decoder_t *decoder;
};

static void s_endpoint(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "inproc://ij/%s", name);
}

/* No high-water mark (lossless: the queue grows instead of dropping or
 * blocking) and no linger (closing never waits for a peer that is gone). */
static void s_socket_options(void *socket)
{
    int zero = 0;
    zmq_setsockopt(socket, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(socket, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(socket, ZMQ_LINGER, &zero, sizeof zero);
}

mailbox_t *mailbox_new(runtime_t *rt, const char *name)
{
    if (!name || !*name || strlen(name) >= MSG_NAME_MAX) {
        errno = EINVAL;
        return NULL;
    }
    mailbox_t *mb = calloc(1, sizeof *mb);
    if (!mb)
        return NULL;
    mb->rt = rt;
    strcpy(mb->name, name);
    mb->decoder = msg_decoder_new();
    mb->inbox = zmq_socket(runtime_zmq(rt), ZMQ_PULL);
    if (!mb->inbox)
        goto fail;
    s_socket_options(mb->inbox);
    char ep[64];
    s_endpoint(ep, sizeof ep, name);
    if (zmq_bind(mb->inbox, ep) < 0) {
        if (errno == EADDRINUSE)
            errno = EEXIST;
        goto fail;
    }
    /* registered only once bound: a registered name can always be reached */
    if (runtime_register(rt, name) < 0)
        goto fail;
    return mb;
fail:;
    int err = errno;
    if (mb->inbox)
        zmq_close(mb->inbox);
    msg_decoder_destroy(&mb->decoder);
    free(mb);
    errno = err;
    return NULL;
}

void mailbox_destroy(mailbox_t **mbp)
{
    mailbox_t *mb = *mbp;
    if (!mb)
        return;
    /* unregister first: from here on, publishers stop choosing us */
    runtime_unregister(mb->rt, mb->name);
    for (size_t i = 0; i < mb->npeers; i++)
        zmq_close(mb->peers[i].socket);
    free(mb->peers);
    /* zmq_close releases an inproc endpoint later, in ZeroMQ's reaper
     * thread; unbind releases it now, so an actor restarted under the same
     * name can bind it at once */
    char ep[64];
    s_endpoint(ep, sizeof ep, mb->name);
    zmq_unbind(mb->inbox, ep);
    zmq_close(mb->inbox);
    msg_decoder_destroy(&mb->decoder);
    free(mb);
    *mbp = NULL;
}

const char *mailbox_name(const mailbox_t *mb)
{
    return mb->name;
}

runtime_t *mailbox_runtime(const mailbox_t *mb)
{
    return mb->rt;
}

void *mailbox_inbox(mailbox_t *mb)
{
    return mb->inbox;
}

uint64_t mailbox_next_corr(mailbox_t *mb)
{
    return ++mb->corr;
}

/* ------------------------------------------------------------- peers */

static peer_t *s_peer_find(mailbox_t *mb, const char *to)
{
    for (size_t i = 0; i < mb->npeers; i++)
        if (strcmp(mb->peers[i].name, to) == 0)
            return &mb->peers[i];
    return NULL;
}

static void s_peer_drop(mailbox_t *mb, peer_t *p)
{
    zmq_close(p->socket);
    *p = mb->peers[--mb->npeers];
}

/* Some name was released since we last looked: drop every socket whose
 * mailbox is gone or was replaced by a new one of the same name. */
static void s_peers_revalidate(mailbox_t *mb)
{
    mb->epoch = runtime_epoch(mb->rt);
    for (size_t i = 0; i < mb->npeers;) {
        uint64_t id;
        if (runtime_lookup(mb->rt, mb->peers[i].name, &id) && id == mb->peers[i].id)
            i++;
        else
            s_peer_drop(mb, &mb->peers[i]);
    }
}

/* The PUSH socket to `to`, connected on first use. NULL with EHOSTUNREACH
 * when no mailbox holds that name. */
static void *s_peer_socket(mailbox_t *mb, const char *to)
{
    if (runtime_epoch(mb->rt) != mb->epoch)
        s_peers_revalidate(mb);
    peer_t *p = s_peer_find(mb, to);
    if (p)
        return p->socket;
    uint64_t id;
    if (strlen(to) >= MSG_NAME_MAX || !runtime_lookup(mb->rt, to, &id)) {
        errno = EHOSTUNREACH;
        return NULL;
    }
    void *socket = zmq_socket(runtime_zmq(mb->rt), ZMQ_PUSH);
    if (!socket)
        return NULL;
    s_socket_options(socket);
    char ep[64];
    s_endpoint(ep, sizeof ep, to);
    if (zmq_connect(socket, ep) < 0) {
        zmq_close(socket);
        return NULL;
    }
    if (mb->npeers == mb->cap) {
        size_t cap = mb->cap ? mb->cap * 2 : 8;
        peer_t *peers = realloc(mb->peers, cap * sizeof *peers);
        if (!peers)
            abort();
        mb->peers = peers;
        mb->cap = cap;
    }
    p = &mb->peers[mb->npeers++];
    strcpy(p->name, to);
    p->id = id;
    p->socket = socket;
    return socket;
}

/* Sends frame to `to`; the frame is consumed on success. With no HWM a
 * send only fails (EAGAIN) when the pipe is gone: the peer's inbox closed. */
static int s_send_frame(mailbox_t *mb, const char *to, zmq_msg_t *frame)
{
    void *socket = s_peer_socket(mb, to);
    if (!socket)
        return -1;
    if (zmq_msg_send(frame, socket, ZMQ_DONTWAIT) >= 0)
        return 0;
    if (errno == EAGAIN) {
        s_peer_drop(mb, s_peer_find(mb, to));
        errno = EHOSTUNREACH;
    }
    return -1;
}

/* Called by ZeroMQ, in whichever thread drops the last reference. */
static void s_free_frame(void *data, void *hint)
{
    free(data);
}

/* Encodes msg into frame: small messages are copied into ZeroMQ's inline
 * storage, large ones handed over without a copy. */
static int s_encode(mailbox_t *mb, msg_t *msg, zmq_msg_t *frame)
{
    memcpy(msg->sender, mb->name, MSG_NAME_MAX);
    void *data;
    size_t size;
    if (msg_encode(msg, &data, &size) < 0) {
        errno = EINVAL;
        return -1;
    }
    if (size <= 64) {
        zmq_msg_init_size(frame, size);
        memcpy(zmq_msg_data(frame), data, size);
        free(data);
    } else {
        zmq_msg_init_data(frame, data, size, s_free_frame, NULL);
    }
    return 0;
}

int mailbox_send(mailbox_t *mb, const char *to, msg_t *msg)
{
    zmq_msg_t frame;
    if (s_encode(mb, msg, &frame) < 0)
        return -1;
    int rc = s_send_frame(mb, to, &frame);
    if (rc < 0) {
        int err = errno;
        zmq_msg_close(&frame);
        errno = err;
    }
    return rc;
}

int mailbox_subscribe(mailbox_t *mb, const char *prefix)
{
    return runtime_subscribe(mb->rt, mb->name, prefix);
}

int mailbox_publish(mailbox_t *mb, const char *topic, msg_t *msg)
{
    char stack[32][32];
    char(*names)[32] = stack;
    size_t n = runtime_subscribers(mb->rt, topic, names, 32);
    if (n > 32) {
        /* more subscribers than the stack holds: ask again with room */
        size_t want = n + 16;
        names = malloc(want * sizeof *names);
        if (!names)
            abort();
        n = runtime_subscribers(mb->rt, topic, names, want);
        if (n > want)
            n = want;
    }
    msg->flags |= MSG_FLAG_EVENT;
    zmq_msg_t frame;
    int delivered = -1;
    if (s_encode(mb, msg, &frame) == 0) {
        delivered = 0;
        for (size_t i = 0; i < n; i++) {
            zmq_msg_t copy;
            zmq_msg_init(&copy);
            zmq_msg_copy(&copy, &frame); /* shares the buffer, no byte copy */
            if (s_send_frame(mb, names[i], &copy) == 0)
                delivered++;
            else {
                /* unsubscribed and gone between the lookup and the send */
                log_debug("event %s on %s not delivered to %s: %s", msg_type_name(msg->type), topic,
                          names[i], strerror(errno));
                zmq_msg_close(&copy);
            }
        }
        zmq_msg_close(&frame);
    }
    if (names != stack)
        free(names);
    return delivered;
}

/* ------------------------------------------------------------- receive */

int mailbox_try_recv(mailbox_t *mb, msg_t **out)
{
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    if (zmq_msg_recv(&frame, mb->inbox, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&frame);
        return 0;
    }
    char err[160];
    *out =
        msg_decode_with(mb->decoder, zmq_msg_data(&frame), zmq_msg_size(&frame), err, sizeof err);
    zmq_msg_close(&frame);
    if (!*out) {
        log_warn("dropped a malformed message: %s", err);
        return -1;
    }
    return 1;
}

msg_t *mailbox_recv(mailbox_t *mb, int timeout_ms)
{
    int64_t deadline = (clock_mono_ns() / 1000000) + timeout_ms;
    for (;;) {
        msg_t *msg = NULL;
        int rc = mailbox_try_recv(mb, &msg);
        if (rc > 0)
            return msg;
        if (rc < 0)
            continue;
        long wait = -1;
        if (timeout_ms >= 0) {
            wait = (long)(deadline - (clock_mono_ns() / 1000000));
            if (wait < 0)
                return NULL;
        }
        zmq_pollitem_t item = {mb->inbox, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&item, 1, wait);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
    }
}
