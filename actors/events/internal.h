/*
 * internal.h - the insides of the event hub, shared by its files and by
 * nothing else: hub.c (streams: opening, catching up, writing, ending),
 * feed.c (the one ordered feed of durable events and its ring) and sse.c
 * (the text/event-stream framing).
 */
#ifndef IMAGEJOBS_EVENTS_INTERNAL_H
#define IMAGEJOBS_EVENTS_INTERNAL_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "actors/events/hub.h"
#include "messages/message.h"
#include "runtime/uuid.h"

#define FEED_RING 4096              /* durable events kept for streams that join late */
#define FEED_PENDING 4096           /* events ahead of a gap kept while it is filled */
#define READ_LIMIT 1000             /* events per read from the store */
#define POLL_S 1.0                  /* the feed asks PostgreSQL this often while streams are open */
#define TICK_S 1.0                  /* keep-alives and preview wishes are looked at this often */
#define CATCHUP_QUEUED (256 * 1024) /* a catch-up reads its next page below this */

/* One durable event, framed once for every stream that gets it. */
typedef struct {
    uint64_t seq;
    char job_id[UUID_STR_LEN];
    job_event_kind_t kind;
    job_status_t status;
    char *frame; /* "id: ...\nevent: ...\ndata: ...\n\n" */
    size_t len;
    char log[UUID_STR_LEN]; /* the event log it belongs to (a live one's) */
    uint64_t owner;         /* the job's API key (0: none) */
} frame_t;

typedef enum {
    S_OPENING, /* its first read is with the store; nothing answered yet */
    S_CATCHUP, /* answered; reading what it missed from PostgreSQL */
    S_WAITING, /* read up to pos, ahead of the feed: joins when the feed gets there */
    S_LIVE     /* gets every event of the feed as it comes */
} sstate_t;

typedef struct stream stream_t;
struct stream {
    hub_t *hub;
    stream_t *prev, *next;
    http_exchange_t *x;        /* held until the stream is freed */
    char job_id[UUID_STR_LEN]; /* "" for every job */
    unsigned status_mask;      /* every job's stream: the statuses it wants */
    uint64_t owner;            /* only this key's jobs (0: every job's) */
    bool previews;
    bool begun;       /* the response started */
    bool over;        /* ended or closed: freed when no read is in flight */
    bool asking;      /* a read is with the store */
    bool page_wanted; /* a catch-up page waits for the client to drain */
    uint8_t state;    /* sstate_t */
    uint64_t pos;     /* every event up to here was sent (or was not this stream's) */
    bool resuming;    /* a Last-Event-ID came (0 included: from the start) */
    uint64_t resume;  /* its value */
    double last_write;
    /* the latest progress and preview held back while the client is slow */
    char *held[2];
};

/* The one ordered feed: durable events in seq order, without gaps. */
typedef struct {
    bool anchored;    /* pos is known */
    uint64_t pos;     /* the last event dispatched */
    uint64_t ring_lo; /* the ring holds lo..pos (lo > pos: empty) */
    frame_t ring[FEED_RING];
    frame_t *pending; /* ahead of pos + 1, sorted, npending */
    size_t npending;
    bool filling; /* a read of what comes after pos is with the store */
} feed_t;

/* One cached document of the job view (view.c). */
typedef struct view_entry view_entry_t;
struct view_entry {
    view_entry_t *hnext;       /* the hash chain */
    view_entry_t *prev, *next; /* the LRU list: head most recent */
    char job_id[UUID_STR_LEN];
    uint64_t owner; /* the job's API key (0: none) */
    uint64_t clock; /* the event clock the document was read at */
    bool ended;     /* the job's own fields are all it shows */
    size_t len;
    char doc[]; /* len bytes and a NUL */
};

/* A GET /api/jobs/{id} on its way through the view. */
typedef struct view_get view_get_t;
struct view_get {
    view_get_t *next;
    hub_t *hub;
    http_exchange_t *x; /* held until answered */
    char job_id[UUID_STR_LEN];
    uint64_t scope;   /* the caller's key (0: every job's) */
    uint64_t need;    /* the feed answers once it has applied up to here */
    uint64_t arrival; /* its place in the order GETs arrived */
};

typedef struct view_read view_read_t; /* view.c */

typedef struct {
    view_get_t *head, **tail;
} view_queue_t;

/* The job view: documents by job id, LRU by bytes (docs/store.md). */
typedef struct {
    size_t limit; /* bytes; 0: off */
    size_t bytes, entries;
    view_entry_t **buckets;
    size_t nbuckets; /* a power of two */
    view_entry_t *lru_head, *lru_tail;
    bool barrier;         /* an EVENT_CLOCK_READ is with the store */
    view_queue_t arrived; /* GETs that wait for the next barrier */
    view_queue_t batch;   /* GETs that wait for the barrier in flight */
    view_queue_t behind;  /* GETs that wait for the feed to reach their need */
    bool refill;          /* behind waits for a read of the feed begun after it */
    uint64_t arrivals;    /* GETs so far */
    view_read_t *reads;   /* reads of documents with the store */
    ev_timer grace;       /* behind: the feed reads the gap when it fires */
} view_t;

struct hub {
    actor_t *self;
    hub_config_t cfg;
    char *store;
    struct ev_loop *loop;
    stream_t *streams;
    size_t nstreams;
    bool stopping;
    feed_t feed;
    ev_timer tick, poll;
    double wished_at; /* preview wishes last published */
    /* our database's event log id, from the store's reads: a live event of
     * another log (another deployment on the same Redis) is not ours */
    char log[UUID_STR_LEN];
    view_t view;
};

/* ---------------------------------------------------------------- sse.c */

/* A durable event's frame from its parts; data is one line of JSON. */
char *sse_frame(uint64_t id, const char *event, const char *data, size_t *len);
/* The frame of one element of a JOB_EVENTS array ({seq, job_id, kind,
 * job_status, data}); false when it is not one. */
bool sse_frame_from_json(json_t *e, frame_t *out);
/* base64 of n bytes (RFC 4648, with padding), malloc'd. */
char *sse_base64(const uint8_t *data, size_t n, size_t *len);
void frame_clear(frame_t *f);

/* ---------------------------------------------------------------- feed.c */

void feed_init(hub_t *hub);
void feed_fini(hub_t *hub);
/* A live event from the bus (JOB_EVENT). */
void feed_on_event(hub_t *hub, const msg_job_event_t *e);
/* A stream read up to pos, every event of its own included: where it joins
 * (hub_stream_join). complete: the read covered the whole log up to pos
 * (the feed may anchor there). */
void feed_join(hub_t *hub, stream_t *s, uint64_t pos, bool complete);
/* Reads what comes after pos now (a gap, or the poll). */
void feed_fill(hub_t *hub);
/* A read from the store named the event log: ours from now on (a new one,
 * the database was replaced: the feed starts over). */
void feed_learn_log(hub_t *hub, const char *log);

/* ---------------------------------------------------------------- view.c */

void view_init(hub_t *hub, size_t limit);
void view_fini(hub_t *hub);
/* The feed applies durable event f (before the streams get it). */
void view_apply(hub_t *hub, const frame_t *f);
/* The feed has moved on, or a read of it ended: GETs waiting for it go. */
void view_progress(hub_t *hub, bool read_done);
/* The feed forgets its log: so does the view. */
void view_forget(hub_t *hub);
/* The feed must run even with no stream open. */
static inline bool hub_feed_wanted(const hub_t *hub)
{
    return hub->nstreams > 0 || hub->view.limit > 0;
}
/* Anchors the unanchored feed at pos: every event up to it is known. */
void feed_anchor(hub_t *hub, uint64_t pos);

/* ---------------------------------------------------------------- hub.c */

/* The feed's calls into the streams: one durable event for everyone, in
 * order; and a stream that joins goes live (after the frames it missed,
 * from the ring) or reads again from pos. */
void hub_dispatch(hub_t *hub, const frame_t *f);
void hub_stream_write_frame(stream_t *s, const frame_t *f);
void hub_stream_live(stream_t *s);
void hub_stream_read_more(stream_t *s);

/* The server's callbacks of a stream (http_stream_fns_t). */
void hub_stream_closed(http_exchange_t *x, void *arg);
void hub_stream_drained(http_exchange_t *x, void *arg);

/* True when f is for s (its job, or its statuses). */
bool hub_stream_wants(const stream_t *s, const frame_t *f);

#endif
