/*
 * clock.h - the two clocks imagejobs reads, named for what they are for.
 *
 * Wall-clock microseconds are what crosses process boundaries (a cancel's
 * requested_at_us, a combination's stopped_at_us, PostgreSQL timestamps):
 * comparable between instances, but they can jump. Monotonic time is for
 * durations and deadlines inside one process: it never jumps.
 */
#ifndef IMAGEJOBS_CLOCK_H
#define IMAGEJOBS_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Wall clock: microseconds since the Unix epoch. */
static inline int64_t clock_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Monotonic clock, nanoseconds from an arbitrary origin. */
static inline int64_t clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Monotonic clock in milliseconds, as a double (for measured durations). */
static inline double clock_mono_ms(void)
{
    return (double)clock_mono_ns() / 1e6;
}

#endif
