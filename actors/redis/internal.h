/*
 * internal.h - what the files of the redis actor share: its state, the two
 * connections' state machine, and the functions each file offers the
 * others. Not for anything outside actors/redis*.
 *
 *   conn.c    the two hiredis contexts: connect, retry, watchdog, SUBSCRIBE
 *   flag.c    the seed's flag: SET + PUBLISH on a recorded cancel, the queue
 *             while Redis is down, GET for poll mode
 *   bridge.c  bus topics <-> Redis channels, hostile channel messages
 *   redis.c   the actor: start, lifecycle, health, small helpers
 */
#ifndef IMAGEJOBS_ACTORS_REDIS_INTERNAL_H
#define IMAGEJOBS_ACTORS_REDIS_INTERNAL_H

#include "actors/redis.h"

#include "runtime/backoff.h"
#include "runtime/uuid.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#define FLAG_TTL_S 3600       /* the seed's TTL of job:{id}:cancelled */
#define BACKOFF_FIRST_S 0.1   /* first retry after a failure */
#define BACKOFF_MAX_S 1.0     /* retries never wait longer: Redis is back in use within 1 s */
#define WAKE_INTERVAL_S 0.2   /* a retry brought forward: this long after the last attempt */
#define CONNECT_TIMEOUT_S 5.0 /* connected and first answer, or SUBSCRIBE confirmed */
#define COMMAND_TIMEOUT_S 5.0 /* no reply at all while commands wait */
#define WATCHDOG_PERIOD_S 1.0
#define FLUSH_WINDOW 256                       /* queued cancels in flight at once */
#define QUEUE_BUCKETS 16384                    /* hash buckets of the queue (power of 2) */
#define PAYLOAD_MAX 1024                       /* longest cancel or work message we decode */
#define EVENT_PAYLOAD_MAX (1024 * 1024)        /* longest job event (an end lists 6,400 ids) */
#define PREVIEW_PAYLOAD_MAX (256 * 1024)       /* longest preview (a PNG of 128 x 128) */
#define MAX_REQUESTED_AT_US 4102444800000000LL /* 2100-01-01 */
#define DROP_LOG_FIRST 10                      /* malformed messages logged one by one */

typedef enum {
    CONN_DOWN,        /* no context; the retry timer is armed */
    CONN_CONNECTING,  /* context created, connect(2) in progress */
    CONN_SUBSCRIBING, /* subscriber: connected, SUBSCRIBE not confirmed */
    CONN_READY,       /* commands: connected; subscriber: subscribed */
    CONN_CLOSING      /* a reply came back NULL: hiredis is tearing it down */
} conn_state_t;

typedef struct redis_state redis_state_t;

typedef struct {
    redis_state_t *st;
    const char *role;      /* "commands" or "subscriber" */
    redisAsyncContext *ac; /* NULL while down */
    conn_state_t state;
    ev_timer retry;
    backoff_t backoff;    /* the next retry's delay */
    ev_tstamp attempt_at; /* when the last connection attempt began */
    ev_tstamp since;      /* when CONNECTING or SUBSCRIBING began */
    ev_tstamp progress;   /* last reply, or first command after idle */
    unsigned inflight;    /* commands awaiting a reply */
    bool was_ready;       /* has been READY once: "lost" vs "failed" */
    bool outage_logged;   /* the current outage was logged */
    char error[128];      /* why it last went down */
    char refused[96];     /* CLOSING: the refusal that made it unusable */
} conn_t;

/* One cancel as it goes to Redis. */
typedef struct {
    char job_id[UUID_STR_LEN];
    cancel_mode_t mode;
    int64_t requested_at_us;
} cancel_t;

/* A queued cancel: in the FIFO (prev/next) and in its hash bucket. */
typedef struct queued {
    struct queued *prev, *next, *hnext;
    cancel_t c;
} queued_t;

struct redis_state {
    actor_t *self;
    struct ev_loop *loop;
    char url[256];
    char host[256]; /* TCP host, or "" for a unix socket */
    int port;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char instance[REDIS_INSTANCE_MAX];

    conn_t cmd, sub;
    ev_timer watchdog;
    bool stopping;
    /* The subscription was missing for a while (lost, or never made at the
     * first try): publish a "recheck" when it is confirmed again. */
    bool sub_gap;

    queued_t *buckets[QUEUE_BUCKETS];
    queued_t *head, *tail;
    size_t queued, queue_max;
    bool queue_full_logged;
    unsigned flushing; /* queued cancels in flight */

    uint64_t dropped; /* malformed channel messages */
    msg_decoder_t *decoder;
};

/* --- redis.c ------------------------------------------------------------ */

/* "down", "connecting", ... for logs and health. */
const char *redis_state_name(conn_state_t s);
/* 1 to 63 printable ASCII characters, no space: fits a Redis client name. */
bool redis_instance_valid(const char *s, size_t len);
void redis_lowercase(char *s);
/* At most 64 bytes of untrusted text for a log line, every byte outside
 * printable ASCII shown as '?'. */
void redis_sanitize(char *out, size_t outlen, const char *in, size_t len);

/* --- conn.c ------------------------------------------------------------- */

void redis_conn_init(redis_state_t *st, conn_t *c, const char *role);
/* Starts a connection attempt; on an immediate failure arms the retry. */
void redis_conn_connect(conn_t *c);
/* A request needs c while it is down: its next attempt starts from the
 * loop now rather than at the backoff's retry, at most one per
 * WAKE_INTERVAL_S and never while one is under way. */
void redis_conn_wake(conn_t *c);
/* The commands connection takes commands now. */
bool redis_cmd_ready(const redis_state_t *st);
/* Accounts for one command sent on c, and for one reply (NULL included:
 * hiredis is tearing the context down) on context ac. */
void redis_conn_sent(conn_t *c);
void redis_conn_replied(conn_t *c, const redisAsyncContext *ac, const void *reply);
/* Drops connections that stopped answering: hiredis has no timeouts. */
void redis_watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* --- flag.c ------------------------------------------------------------- */

/* Writes queued cancels while the commands connection is up. */
void redis_flag_flush(redis_state_t *st);
/* Frees the queue (fini). */
void redis_flag_queue_free(redis_state_t *st);
void redis_on_cancel_recorded(actor_t *self, msg_t *msg);
void redis_on_flag_get(actor_t *self, msg_t *msg);

/* --- bridge.c ----------------------------------------------------------- */

/* One ["message", channel, payload] of the subscriber. */
void redis_bridge_message(redis_state_t *st, const char *channel, size_t chlen, const char *payload,
                          size_t len);
/* The check of one payload of a bridged channel (imagejobs:cancel,
 * imagejobs:work), the one redis_bridge_message() runs: decoded with d as
 * hostile input, of the channel's one type, checked field by field. Returns
 * the message (the caller's), or NULL with the reason in why (an unknown
 * channel included). Exposed for tests/fuzz/. */
msg_t *redis_bridge_check(msg_decoder_t *d, const char *channel, size_t chlen, const char *payload,
                          size_t len, char *why, size_t whylen);
/* The subscription is back after a gap: CANCEL_RECHECK on the bus. */
void redis_bridge_recheck(redis_state_t *st);
void redis_on_bridged_event(actor_t *self, msg_t *msg);
void redis_on_recheck(actor_t *self, msg_t *msg);

#endif
