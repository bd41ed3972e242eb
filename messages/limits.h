/*
 * limits.h - what a job may ask for, in one place: the HTTP actor refuses
 * more, the store checks it again, and the generator accepts all of it.
 *
 * A combination's prompt is the job's prompt and its style joined as
 * "prompt, style" (by the store, when it hands the work out), so the
 * generator takes up to JOB_GENERATION_PROMPT_MAX bytes: everything the API
 * accepts can be generated.
 */
#ifndef IMAGEJOBS_LIMITS_H
#define IMAGEJOBS_LIMITS_H

#define JOB_PROMPT_MAX 1000 /* bytes of a job's prompt (at least 1) */
#define JOB_STYLE_MAX 1000  /* bytes of one combination's style */
#define JOB_PROMPT_STYLE_SEPARATOR ", "
/* The longest prompt a generator is handed: prompt + ", " + style. */
#define JOB_GENERATION_PROMPT_MAX                                                                  \
    (JOB_PROMPT_MAX + (int)sizeof JOB_PROMPT_STYLE_SEPARATOR - 1 + JOB_STYLE_MAX)

#define JOB_COMBINATIONS_MAX 64
#define JOB_IMAGES_MAX 100 /* per combination */
#define JOB_SEED_MAX 4294967295LL

#define JOB_SIZE_MIN 64 /* width and height, pixels */
#define JOB_SIZE_MAX 2048
#define JOB_SIZE_MULTIPLE 8
#define JOB_STEPS_MIN 1
#define JOB_STEPS_MAX 200
#define JOB_PRIORITY_MIN -10 /* claims take higher priorities first */
#define JOB_PRIORITY_MAX 10
#define JOB_LIST_LIMIT_MAX 200 /* jobs per page of GET /api/jobs */
#define JOB_LIST_LIMIT_DEFAULT 50
#define JOB_CANCEL_MANY_MAX 10000
#define JOB_DEADLINE_MAX_S 2592000 /* a job's deadlines: at most 30 days */ /* jobs one POST /api/jobs/cancel may cancel */
#define WEBHOOK_URL_MAX 2048   /* bytes of a job's webhook URL */
/* The events a webhook may ask for (docs/webhooks.md), comma-separated as
 * they travel in JOB_CREATE, and the default (the terminal ones). */
#define WEBHOOK_EVENTS_ALL "started,image,completed,cancelled,failed"
#define WEBHOOK_EVENTS_DEFAULT "completed,cancelled,failed"

#endif
