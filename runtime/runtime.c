/*
 * runtime.c - ZeroMQ context, mailbox directory, bus subscriptions, signals.
 */
#include "config.h"

#include "runtime/runtime.h"

#include "messages/message.h"
#include "runtime/log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

_Static_assert(MSG_NAME_MAX == 32, "runtime_subscribers() copies 32-byte names");

typedef struct {
    char name[MSG_NAME_MAX];
    uint64_t id;
    char **topics; /* prefixes this mailbox subscribed to */
    size_t ntopics;
} entry_t;

struct runtime {
    void *zmq;
    pthread_mutex_t lock; /* guards entries */
    entry_t *entries;
    size_t nentries, cap;
    pid_t pid;
    uint64_t next_id;       /* under lock */
    _Atomic uint64_t epoch; /* bumped by every unregister */
};

runtime_t *runtime_new(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* a peer closing an HTTP or Redis socket must be an error, not death */
    signal(SIGPIPE, SIG_IGN);

    runtime_t *rt = calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    rt->zmq = zmq_ctx_new();
    if (!rt->zmq) {
        free(rt);
        return NULL;
    }
    /* inproc needs no I/O thread; one is enough for tcp/ipc if ever used */
    zmq_ctx_set(rt->zmq, ZMQ_IO_THREADS, 1);
    zmq_ctx_set(rt->zmq, ZMQ_MAX_SOCKETS, 65536);
    pthread_mutex_init(&rt->lock, NULL);
    rt->pid = getpid();
    return rt;
}

void runtime_destroy(runtime_t **rtp)
{
    runtime_t *rt = *rtp;
    if (!rt)
        return;
    if (rt->nentries)
        log_warn("runtime destroyed with %zu mailboxes still open (first: %s)", rt->nentries,
                 rt->entries[0].name);
    zmq_ctx_term(rt->zmq);
    for (size_t i = 0; i < rt->nentries; i++) {
        for (size_t t = 0; t < rt->entries[i].ntopics; t++)
            free(rt->entries[i].topics[t]);
        free(rt->entries[i].topics);
    }
    free(rt->entries);
    pthread_mutex_destroy(&rt->lock);
    free(rt);
    *rtp = NULL;
}

void *runtime_zmq(runtime_t *rt)
{
    return rt->zmq;
}

int runtime_wait_signal(runtime_t *rt)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    return sig;
}

void runtime_request_stop(runtime_t *rt)
{
    /* process-directed: every thread blocks SIGTERM, so sigwait() takes it */
    kill(rt->pid, SIGTERM);
}

/* ---------------------------------------------------------- directory */

static entry_t *s_find(runtime_t *rt, const char *name)
{
    for (size_t i = 0; i < rt->nentries; i++)
        if (strcmp(rt->entries[i].name, name) == 0)
            return &rt->entries[i];
    return NULL;
}

int runtime_register(runtime_t *rt, const char *name)
{
    if (strlen(name) >= MSG_NAME_MAX || !*name) {
        errno = EINVAL;
        return -1;
    }
    int rc = 0;
    pthread_mutex_lock(&rt->lock);
    if (s_find(rt, name)) {
        errno = EEXIST;
        rc = -1;
    } else {
        if (rt->nentries == rt->cap) {
            size_t cap = rt->cap ? rt->cap * 2 : 16;
            entry_t *e = realloc(rt->entries, cap * sizeof *e);
            if (!e)
                abort();
            rt->entries = e;
            rt->cap = cap;
        }
        entry_t *e = &rt->entries[rt->nentries++];
        memset(e, 0, sizeof *e);
        strcpy(e->name, name);
        e->id = ++rt->next_id;
    }
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

void runtime_unregister(runtime_t *rt, const char *name)
{
    pthread_mutex_lock(&rt->lock);
    entry_t *e = s_find(rt, name);
    if (e) {
        for (size_t t = 0; t < e->ntopics; t++)
            free(e->topics[t]);
        free(e->topics);
        *e = rt->entries[--rt->nentries];
        atomic_fetch_add(&rt->epoch, 1);
    }
    pthread_mutex_unlock(&rt->lock);
}

int runtime_lookup(runtime_t *rt, const char *name, uint64_t *id)
{
    pthread_mutex_lock(&rt->lock);
    entry_t *e = s_find(rt, name);
    if (e && id)
        *id = e->id;
    pthread_mutex_unlock(&rt->lock);
    return e != NULL;
}

uint64_t runtime_epoch(runtime_t *rt)
{
    return atomic_load(&rt->epoch);
}

int runtime_subscribe(runtime_t *rt, const char *name, const char *prefix)
{
    int rc = -1;
    pthread_mutex_lock(&rt->lock);
    entry_t *e = s_find(rt, name);
    if (!e) {
        errno = ENOENT;
    } else {
        char **t = realloc(e->topics, (e->ntopics + 1) * sizeof *t);
        char *copy = strdup(prefix);
        if (!t || !copy)
            abort();
        e->topics = t;
        e->topics[e->ntopics++] = copy;
        rc = 0;
    }
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

size_t runtime_subscribers(runtime_t *rt, const char *topic, char (*names)[32], size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&rt->lock);
    for (size_t i = 0; i < rt->nentries; i++) {
        entry_t *e = &rt->entries[i];
        for (size_t t = 0; t < e->ntopics; t++) {
            if (strncmp(topic, e->topics[t], strlen(e->topics[t])) == 0) {
                if (n < max)
                    memcpy(names[n], e->name, MSG_NAME_MAX);
                n++;
                break;
            }
        }
    }
    pthread_mutex_unlock(&rt->lock);
    return n;
}
