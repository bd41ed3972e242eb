/*
 * receiver.h - a webhook receiver for the tests and the bench: an HTTP
 * server (the project's actors/http library) on a thread and libev loop of
 * its own, on 127.0.0.1 and a free port. It checks every request's
 * Imagejobs-Signature with OpenSSL's HMAC (not with the code under test),
 * and records every attempt; it can answer 500 to the first attempts of
 * each delivery, or hold requests unanswered (a receiver that hangs).
 */
#ifndef IMAGEJOBS_TESTS_RECEIVER_H
#define IMAGEJOBS_TESTS_RECEIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct receiver receiver_t;

/* One request as it arrived. */
typedef struct {
    char delivery[40]; /* Imagejobs-Delivery */
    char event[16];    /* Imagejobs-Event */
    char job_id[40];   /* from the body */
    char body_event[16];
    long long seq; /* the body's event_seq */
    int attempt;   /* 1 for the first request with this delivery id, ... */
    bool signed_ok;
    int answered;        /* 200, 500, or 0 while held */
    int64_t at_us;       /* wall clock when it arrived */
    int64_t occurred_us; /* the body's occurred_at (0: none) */
} rcv_hit_t;

/* A receiver checking signatures with secret; NULL when it cannot listen. */
receiver_t *rcv_start(const char *secret);
int rcv_port(const receiver_t *r);

/* Answer 500 to the first `fail` attempts of each delivery id, and hold
 * (never answer) the first `hold` attempts of each (-1: every one). */
void rcv_set(receiver_t *r, int fail, int hold);

/* Requests so far (held ones included); at most max copied into out. */
size_t rcv_hits(receiver_t *r, rcv_hit_t *out, size_t max);

/* Stops the thread, closes every connection, frees; NULLs *rp. */
void rcv_stop(receiver_t **rp);

#endif
