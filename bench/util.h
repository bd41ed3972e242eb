/*
 * bench/util.h - the few helpers every benchmark program needs: a
 * monotonic clock in seconds, a sleep that survives signals, and the
 * comparison for sorting samples.
 */
#ifndef IMAGEJOBS_BENCH_UTIL_H
#define IMAGEJOBS_BENCH_UTIL_H

#include <errno.h>
#include <time.h>

static inline double bench_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Pacing a load, or polling a condition with a deadline: never a stand-in
 * for an event the program could wait on. */
static inline void bench_sleep(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
