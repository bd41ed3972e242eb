/*
 * backoff.h - the delay before the next retry of something that failed
 * (a connection to Redis or PostgreSQL, a request to a busy actor).
 *
 * The delay starts at `first`, doubles after every failure and never
 * exceeds `max` (a naive "double while below max" overshoots: 0.2 s
 * doubling "up to 5 s" would wait 6.4 s). Optional jitter spreads the
 * retries of many instances that lost the same server at the same moment.
 */
#ifndef IMAGEJOBS_BACKOFF_H
#define IMAGEJOBS_BACKOFF_H

#include <stdint.h>

typedef struct {
    double first; /* seconds: the first retry's delay */
    double max;   /* seconds: no delay is longer */
    double next;  /* seconds: the next retry's delay */
    uint64_t rng; /* jitter state; 0: no jitter */
} backoff_t;

/* A backoff that waits `first`, then twice as long each time, up to `max`
 * (a `first` above `max` waits `max`). seed != 0 turns jitter on: each
 * delay is scaled by a factor in [0.75, 1.25), never above max. */
static inline void backoff_init(backoff_t *b, double first, double max, uint64_t seed)
{
    first = first < max ? first : max;
    b->first = first;
    b->max = max;
    b->next = first;
    b->rng = seed;
}

/* After a success: the next failure waits `first` again. */
static inline void backoff_reset(backoff_t *b)
{
    b->next = b->first;
}

/* After a failure: the delay to wait now (seconds); the following one doubles. */
static inline double backoff_next(backoff_t *b)
{
    double delay = b->next;
    b->next = b->next * 2 < b->max ? b->next * 2 : b->max;
    if (b->rng) {
        /* xorshift64: enough to decorrelate instances, no shared state */
        b->rng ^= b->rng << 13;
        b->rng ^= b->rng >> 7;
        b->rng ^= b->rng << 17;
        delay *= 0.75 + (double)(b->rng % 1000) / 2000.0;
        if (delay > b->max)
            delay = b->max;
    }
    return delay;
}

#endif
