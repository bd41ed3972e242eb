/*
 * log.c - line-atomic logging with time, level and actor (thread) name, as
 * text or as JSON lines (jansson builds them).
 */
#include "config.h"

#include "runtime/log.h"

#include <ctype.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static atomic_int s_level = LOG_INFO;
static atomic_int s_format = LOG_TEXT;
static char s_instance[64];
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

void log_set_format(log_format_t format)
{
    atomic_store(&s_format, (int)format);
}

int log_format_parse(const char *s, log_format_t *format)
{
    if (!strcasecmp(s, "text"))
        *format = LOG_TEXT;
    else if (!strcasecmp(s, "json"))
        *format = LOG_JSON;
    else
        return -1;
    return 0;
}

void log_set_instance(const char *instance)
{
    snprintf(s_instance, sizeof s_instance, "%s", instance ? instance : "");
}

void log_set_thread_name(const char *name)
{
    snprintf(s_thread_name, sizeof s_thread_name, "%s", name ? name : "");
    /* and the kernel's name of the thread (15 bytes), for top -H, ps -L,
     * perf and gdb */
    char comm[16];
    snprintf(comm, sizeof comm, "%.15s", s_thread_name);
    pthread_setname_np(pthread_self(), comm);
}

const char *log_thread_name(void)
{
    return s_thread_name[0] ? s_thread_name : "main";
}

/* The first job id (a UUID) in msg, into id; its combination ("<id>/<n>")
 * into *comb, or -1. false when msg names none. */
static bool s_job_of(const char *msg, char id[37], long *comb)
{
    for (const char *p = msg; *p; p++) {
        size_t i = 0;
        for (; i < 36 && p[i]; i++) {
            bool want_dash = i == 8 || i == 13 || i == 18 || i == 23;
            if (want_dash ? p[i] != '-' : !isxdigit((unsigned char)p[i]))
                break;
        }
        if (i < 36 || isxdigit((unsigned char)p[36]) || (p > msg && isxdigit((unsigned char)p[-1])))
            continue;
        memcpy(id, p, 36);
        id[36] = '\0';
        *comb = -1;
        if (p[36] == '/' && isdigit((unsigned char)p[37]))
            *comb = strtol(p + 37, NULL, 10);
        return true;
    }
    return false;
}

/* One JSON line for msg into line; its length (0 when it cannot be made). */
static size_t s_json_line(char *line, size_t len, const char *time, log_level_t level,
                          const char *msg)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    json_t *o =
        json_pack("{s:s,s:s,s:s}", "time", time, "level", names[level], "actor", log_thread_name());
    if (!o)
        return 0;
    if (s_instance[0])
        json_object_set_new(o, "instance", json_string(s_instance));
    json_t *m = json_string(msg);
    if (!m) { /* not UTF-8: its other bytes shown as '?' */
        char safe[2048];
        size_t i = 0;
        for (; msg[i] && i < sizeof safe - 1; i++)
            safe[i] = (unsigned char)msg[i] < 0x80 ? msg[i] : '?';
        safe[i] = '\0';
        m = json_string(safe);
    }
    json_object_set_new(o, "msg", m ? m : json_string(""));
    char id[37];
    long comb;
    if (s_job_of(msg, id, &comb)) {
        json_object_set_new(o, "job_id", json_string(id));
        if (comb >= 0)
            json_object_set_new(o, "combination", json_integer(comb));
    }
    size_t n = json_dumpb(o, line, len - 1, JSON_COMPACT);
    json_decref(o);
    if (n == 0 || n > len - 1)
        return 0;
    line[n++] = '\n';
    return n;
}

void log_write(log_level_t level, const char *fmt, ...)
{
    static const char *const tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    if ((int)level < atomic_load(&s_level))
        return;

    char line[2048], stamp[40];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t k = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + k, sizeof stamp - k, ".%06ldZ", (long)tv.tv_usec);
    if (atomic_load(&s_format) == LOG_JSON) {
        char msg[1536], json[4096];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        size_t n = s_json_line(json, sizeof json, stamp, level, msg);
        if (n) {
            ssize_t w = write(STDERR_FILENO, json, n);
            (void)w;
        }
        return;
    }
    size_t n =
        (size_t)snprintf(line, sizeof line, "%s %s [%s] ", stamp, tags[level], log_thread_name());

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
