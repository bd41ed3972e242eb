/*
 * wishes.h - the jobs whose previews someone wants, each until a deadline
 * (monotonic ns): a generator renders previews only of those. A small
 * fixed table; when it is full the wish that ends first makes room.
 */
#ifndef IMAGEJOBS_GEN_WISHES_H
#define IMAGEJOBS_GEN_WISHES_H

#include <stdbool.h>
#include <stdint.h>

#define WISHES_MAX 256
#define WISHES_TTL_MAX_MS 60000 /* the longest wish honoured (a peer's ttl_ms is input) */
#define WISHES_ID_MAX 64        /* job ids are UUIDs: 36 characters */

typedef struct {
    struct {
        char job_id[WISHES_ID_MAX];
        int64_t until_ns;
    } at[WISHES_MAX];
    unsigned n;
} wishes_t;

/* Someone wants previews of job_id for ttl_ms more (capped) from now_ns.
 * An id that is empty or too long is no job of ours: ignored. */
void wishes_add(wishes_t *w, const char *job_id, uint64_t ttl_ms, int64_t now_ns);

/* Whether someone still wants previews of job_id; forgets the expired
 * wishes on the way. */
bool wishes_want(wishes_t *w, const char *job_id, int64_t now_ns);

#endif
