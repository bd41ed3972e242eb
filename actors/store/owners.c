/*
 * owners.c - which API key owns a job, remembered by the store
 * (docs/security.md): a key's cancel must know the job is the key's before
 * its event goes out, and a job's owner never changes, so what was read
 * once (or written here at create) stays true. A fixed table of
 * OWNERS_SLOTS entries, direct-mapped by the id's hash: a collision only
 * forgets, and a job not in it is read from PostgreSQL (job_owned).
 */
#include "config.h"

#include "actors/store/internal.h"

#include <stdlib.h>
#include <string.h>

#define OWNERS_SLOTS 16384 /* a power of two */

struct store_owner {
    char job_id[UUID_STR_LEN]; /* "" when free */
    uint64_t owner;
};

static size_t s_slot(const char *job_id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *p = job_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (size_t)h & (OWNERS_SLOTS - 1);
}

void store_owner_remember(store_t *st, const char *job_id, uint64_t owner)
{
    if (!job_id || strlen(job_id) != UUID_STR_LEN - 1)
        return;
    if (!st->owners && !(st->owners = calloc(OWNERS_SLOTS, sizeof *st->owners)))
        abort();
    struct store_owner *e = &st->owners[s_slot(job_id)];
    memcpy(e->job_id, job_id, UUID_STR_LEN);
    e->owner = owner;
}

bool store_owner_known(const store_t *st, const char *job_id, uint64_t *owner)
{
    if (!st->owners || !job_id)
        return false;
    const struct store_owner *e = &st->owners[s_slot(job_id)];
    if (strcmp(e->job_id, job_id) != 0)
        return false;
    *owner = e->owner;
    return true;
}

void store_owners_free(store_t *st)
{
    free(st->owners);
    st->owners = NULL;
}
