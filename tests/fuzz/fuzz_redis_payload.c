/*
 * fuzz_redis_payload.c - libFuzzer harness of the Redis pub/sub payload
 * check (redis_bridge_check, actors/redis/bridge.c: what the bridge runs on
 * every message of another instance). The input's first byte picks the
 * channel (its value modulo the number of channels: cancel, work, cancel
 * of many, combination cancel, events, progress, previews, preview
 * wishes), the rest is the payload. Never a crash; an accepted message is
 * of the channel's type, not a reply, with a UUID job id (a list of them
 * for a cancel of many).
 *
 * With IMAGEJOBS_FUZZ_DUMP=DIR it writes its seed corpus instead: valid
 * cancels (both modes) and work announcements, and every other type of the
 * table on the cancel channel (each one refused there).
 */
#include "config.h"

#include "actors/redis/internal.h"
#include "runtime/log.h"
#include "tests/fuzz/sample.h"

#include <stdio.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static msg_decoder_t *s_decoder;

static msg_t *s_cancel(cancel_mode_t mode)
{
    msg_t *m = sample_message(MSG_JOB_CANCEL);
    m->job_cancel.mode = mode;
    msg_set_str(&m->job_cancel.origin, SAMPLE_ORIGIN);
    return m;
}

static void s_dump(const char *dir)
{
    sample_dump(dir, "cancel-immediate", 0, s_cancel(CANCEL_MODE_IMMEDIATE));
    sample_dump(dir, "cancel-after-current-image", 0, s_cancel(CANCEL_MODE_AFTER_CURRENT_IMAGE));
    msg_t *w = sample_message(MSG_WORK_AVAILABLE);
    msg_set_str(&w->work_available.origin, SAMPLE_ORIGIN);
    sample_dump(dir, "work-available", 1, w);
    for (unsigned t = 0; t < MSG_TYPE_COUNT; t++) {
        char name[64];
        snprintf(name, sizeof name, "other-%02u-%s", t, msg_type_name(t));
        sample_dump(dir, name, 0, sample_message((msg_type_t)t));
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("IMAGEJOBS_FUZZ_DUMP");
    if (dir) {
        s_dump(dir);
        exit(0);
    }
    log_set_level(LOG_ERROR);
    s_decoder = msg_decoder_new();
    return 0;
}

/* Every bridged channel and the one type it carries. */
static const struct {
    const char *channel;
    msg_type_t type;
} s_channels[] = {
    {REDIS_CANCEL_CHANNEL, MSG_JOB_CANCEL},
    {REDIS_WORK_CHANNEL, MSG_WORK_AVAILABLE},
    {REDIS_CANCEL_MANY_CHANNEL, MSG_JOB_CANCEL_MANY},
    {REDIS_COMBINATION_CANCEL_CHANNEL, MSG_COMBINATION_CANCEL},
    {REDIS_EVENTS_CHANNEL, MSG_JOB_EVENT},
    {REDIS_PROGRESS_CHANNEL, MSG_JOB_PROGRESS},
    {REDIS_PREVIEWS_CHANNEL, MSG_JOB_PREVIEW},
    {REDIS_PREVIEW_WANTED_CHANNEL, MSG_PREVIEW_WANTED},
};

/* The job id an accepted message names (a list for a cancel of many). */
static const char *s_job_of(const msg_t *m)
{
    switch (m->type) {
    case MSG_JOB_CANCEL:
        return m->job_cancel.job_id;
    case MSG_WORK_AVAILABLE:
        return m->work_available.job_id;
    case MSG_COMBINATION_CANCEL:
        return m->combination_cancel.job_id;
    case MSG_JOB_EVENT:
        return m->job_event.job_id;
    case MSG_JOB_PROGRESS:
        return m->job_progress.job_id;
    case MSG_JOB_PREVIEW:
        return m->job_preview.job_id;
    case MSG_PREVIEW_WANTED:
        return m->preview_wanted.job_id;
    default:
        return NULL;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t k = data[0] % (sizeof s_channels / sizeof *s_channels);
    const char *channel = s_channels[k].channel;
    char why[160] = "";
    msg_t *m = redis_bridge_check(s_decoder, channel, strlen(channel), (const char *)data + 1,
                                  size - 1, why, sizeof why);
    if (!m) {
        if (!why[0]) {
            fprintf(stderr, "redis_bridge_check: refused without a reason\n");
            abort();
        }
        return 0;
    }
    const char *job_id = s_job_of(m);
    bool listed =
        m->type == MSG_JOB_CANCEL_MANY && m->job_cancel_many.job_ids && *m->job_cancel_many.job_ids;
    if (m->type != s_channels[k].type || (m->flags & MSG_FLAG_REPLY)
        || (!listed && !uuid_valid(job_id))) {
        fprintf(stderr, "redis_bridge_check: accepted a %s it should refuse on %s\n",
                msg_type_name(m->type), channel);
        abort();
    }
    msg_destroy(&m);
    return 0;
}
