/*
 * names.h - the names of the process's actors and of the bus topics, in one
 * place, so that a sender and its receiver cannot spell them differently.
 *
 * Actor names are mailbox names (runtime/mailbox.h); topics are bus topic
 * prefixes (mailbox_subscribe/mailbox_publish). Generators are numbered:
 * "generator-0", "generator-1", ... (GENERATOR_NAME_PREFIX).
 */
#ifndef IMAGEJOBS_NAMES_H
#define IMAGEJOBS_NAMES_H

#define ACTOR_HTTP "http"
#define ACTOR_STORE "store"
#define ACTOR_REDIS "redis"
#define ACTOR_GENERATOR_PREFIX "generator-"

/* A user cancelled a job (JOB_CANCEL), from any instance. */
#define TOPIC_CANCEL "cancel"
/* New work may be claimable (WORK_AVAILABLE), from any instance. */
#define TOPIC_WORK "work"
/* The store wrote a cancel (JOB_CANCEL_RECORDED), on this instance. */
#define TOPIC_JOB_CANCEL_RECORDED "job.cancel_recorded"
/* Job events (docs/events.md), from any instance: durable ones (JOB_EVENT,
 * from the store after its commit), progress and previews (JOB_PROGRESS,
 * JOB_PREVIEW, from generators), and the wish for previews of a job
 * (PREVIEW_WANTED, from the HTTP actor). */
#define TOPIC_JOB_EVENT "job.event"
#define TOPIC_JOB_PROGRESS "job.progress"
#define TOPIC_JOB_PREVIEW "job.preview"
#define TOPIC_PREVIEW_WANTED "preview.wanted" /* not under "job.preview": topics are prefixes */

/* Previews: a generator renders at most this often per combination, the
 * HTTP actor renews a wish this often while a preview stream is open, and
 * a wish lasts this long after its last renewal. */
#define PREVIEW_INTERVAL_MS 250
#define PREVIEW_WANTED_REFRESH_MS 2000
#define PREVIEW_WANTED_TTL_MS 5000
/* The longest side of a preview, pixels. */
#define PREVIEW_SIZE_MAX 128
/* Progress events: at most one per this many ms per combination. */
#define PROGRESS_INTERVAL_MS 100

#endif
