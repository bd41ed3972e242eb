/*
 * log.c - line-atomic logging with time, level and actor (thread) name.
 */
#include "config.h"

#include "runtime/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static atomic_int s_level = LOG_INFO;
static _Thread_local char s_thread_name[32] = "";

void log_set_level(log_level_t level)
{
    atomic_store(&s_level, (int)level);
}

int log_level_parse(const char *s, log_level_t *level)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0) {
            *level = (log_level_t)i;
            return 0;
        }
    return -1;
}

void log_set_thread_name(const char *name)
{
    snprintf(s_thread_name, sizeof s_thread_name, "%s", name ? name : "");
}

const char *log_thread_name(void)
{
    return s_thread_name[0] ? s_thread_name : "main";
}

void log_write(log_level_t level, const char *fmt, ...)
{
    static const char *const tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    if ((int)level < atomic_load(&s_level))
        return;

    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%06ldZ %s [%s] ", (long)tv.tv_usec,
                          tags[level], log_thread_name());

    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    /* a line longer than the buffer is cut, never split */
    n = (m < 0) ? n : (n + (size_t)m < sizeof line - 1 ? n + (size_t)m : sizeof line - 2);
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
