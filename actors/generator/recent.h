/*
 * recent.h - the cancel events a generator heard lately, for the job it is
 * about to claim: a claim in flight when a cancel event arrives (nothing
 * ran yet, so the event named nothing of ours) would otherwise run its job
 * until the repeat of the recorded cancel comes, after the cancel's commit.
 * The last RECENT_MAX cancels of one job and the last cancel of many, each
 * for RECENT_WINDOW_S.
 */
#ifndef IMAGEJOBS_GEN_RECENT_H
#define IMAGEJOBS_GEN_RECENT_H

#include <stdbool.h>
#include <stdint.h>

#include "messages/message.h"

#define RECENT_MAX 64
#define RECENT_WINDOW_S 10

typedef struct {
    struct {
        char job_id[40];
        cancel_mode_t mode;
        int64_t requested_us, at_ns;
    } one[RECENT_MAX];
    unsigned next;
    char *many; /* the last JOB_CANCEL_MANY's ids (owned) */
    cancel_mode_t many_mode;
    int64_t many_requested_us, many_at_ns;
} recent_t;

/* Keeps a JOB_CANCEL or JOB_CANCEL_MANY (borrowed); other types are not. */
void recent_note(recent_t *r, const msg_t *msg, int64_t now_ns);

/* A cancel of job_id heard within the window: its mode and time. */
bool recent_find(const recent_t *r, const char *job_id, int64_t now_ns, cancel_mode_t *mode,
                 int64_t *requested_us);

void recent_free(recent_t *r);

#endif
