/*
 * wishes.c - the preview wishes of a generator (wishes.h).
 */
#include "config.h"

#include "actors/generator/wishes.h"

#include <stdio.h>
#include <string.h>

#define MS_NS 1000000LL

void wishes_add(wishes_t *w, const char *job_id, uint64_t ttl_ms, int64_t now_ns)
{
    if (!job_id || !*job_id || strlen(job_id) >= sizeof w->at[0].job_id)
        return;
    int64_t until =
        now_ns + (int64_t)(ttl_ms < WISHES_TTL_MAX_MS ? ttl_ms : WISHES_TTL_MAX_MS) * MS_NS;
    /* the wish to renew, else a free slot, else the one that ends first */
    unsigned i, oldest = 0;
    for (i = 0; i < w->n && strcmp(w->at[i].job_id, job_id) != 0; i++)
        if (w->at[i].until_ns - w->at[oldest].until_ns < 0)
            oldest = i;
    if (i == w->n) {
        if (w->n < WISHES_MAX)
            w->n++;
        else
            i = oldest;
        snprintf(w->at[i].job_id, sizeof w->at[i].job_id, "%s", job_id);
    }
    w->at[i].until_ns = until;
}

bool wishes_want(wishes_t *w, const char *job_id, int64_t now_ns)
{
    bool found = false;
    for (unsigned i = 0; i < w->n;) {
        if (now_ns - w->at[i].until_ns >= 0) {
            w->at[i] = w->at[--w->n]; /* expired: the last one takes its slot */
            continue;
        }
        found = found || strcmp(w->at[i].job_id, job_id) == 0;
        i++;
    }
    return found;
}
