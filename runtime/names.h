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

#endif
