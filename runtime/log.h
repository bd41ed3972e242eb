/*
 * log.h - one line per event on stderr: UTC time, level, actor name, text.
 *
 *   2026-11-26T12:00:00.123456Z INFO  [store] schema at version 1
 *
 * The actor name is per thread (set by the runtime when an actor starts);
 * each line goes out in a single write(2), so lines from threads never mix.
 *
 * With LOG_JSON (`--log-format json`) each line is one JSON object instead,
 * for log stacks (docs/operations.md):
 *
 *   {"time":"2026-11-26T12:00:00.123456Z","level":"info","actor":"store",
 *    "instance":"web-1","msg":"...","job_id":"...","combination":0}
 *
 * job_id is the first job id the message names and combination the number
 * after it in "<job id>/<n>" (the form every line about one combination
 * uses); both are absent when the message names none.
 */
#ifndef IMAGEJOBS_LOG_H
#define IMAGEJOBS_LOG_H

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level_t;

typedef enum { LOG_TEXT, LOG_JSON } log_format_t;

/* The line format (default LOG_TEXT); "text" or "json", -1 if neither. */
void log_set_format(log_format_t format);
int log_format_parse(const char *s, log_format_t *format);
/* The instance id in every JSON line (copied; NULL: none). Call before
 * other threads log. */
void log_set_instance(const char *instance);

/* Lines below level are dropped. Default LOG_INFO. */
void log_set_level(log_level_t level);
/* Parses "debug", "info", "warn" or "error"; -1 if none of them. */
int log_level_parse(const char *s, log_level_t *level);
/* Names the calling thread in its log lines (copied; NULL for "main"). */
void log_set_thread_name(const char *name);
const char *log_thread_name(void);

void log_write(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
