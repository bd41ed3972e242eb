/*
 * js_client.c - see js_client.h.
 */
#include "config.h"

#include "tests/js_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *s_env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static long long s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool js_available(void)
{
    const char *dir = s_env("IMAGEJOBS_JS_DIR");
    if (!dir)
        return false;
    char path[4096];
    snprintf(path, sizeof path, "%s/sse-watch.mjs", dir);
    if (access(path, R_OK) != 0)
        return false;
    snprintf(path, sizeof path, "%s/node_modules/eventsource/package.json", dir);
    return access(path, R_OK) == 0;
}

int js_sse_watch(const char *url, const char *last_event_id, const char *until, int timeout_ms,
                 char **out_stdout)
{
    if (out_stdout)
        *out_stdout = NULL;
    const char *dir = s_env("IMAGEJOBS_JS_DIR");
    if (!dir)
        return -1;
    const char *node = s_env("IMAGEJOBS_NODE");
    char script[4096], ms[32];
    snprintf(script, sizeof script, "%s/sse-watch.mjs", dir);
    snprintf(ms, sizeof ms, "%d", timeout_ms);
    const char *argv[12];
    int n = 0;
    argv[n++] = node ? node : "node";
    argv[n++] = script;
    argv[n++] = url;
    if (last_event_id) {
        argv[n++] = "--last-event-id";
        argv[n++] = last_event_id;
    }
    argv[n++] = "--until";
    argv[n++] = until ? until : "end";
    argv[n++] = "--timeout-ms";
    argv[n++] = ms;
    argv[n] = NULL;

    int out[2];
    if (pipe2(out, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(out[0]);
        close(out[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        /* the runtime blocks SIGINT and SIGTERM in the test process, and
         * exec would keep that mask */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out[1]);

    long long deadline = s_now_ms() + (timeout_ms > 0 ? timeout_ms : 0) + 10000;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    bool killed = false;
    for (;;) {
        long long left = deadline - s_now_ms();
        if (left <= 0) {
            kill(pid, SIGKILL);
            killed = true;
            break;
        }
        struct pollfd pfd = {.fd = out[0], .events = POLLIN};
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue; /* the deadline check above ends it */
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *p = realloc(buf, cap);
            if (!p)
                break;
            buf = p;
        }
        ssize_t got = read(out[0], buf + len, cap - len - 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break; /* EOF: it exited (or closed stdout) */
        len += (size_t)got;
    }
    close(out[0]);

    int status = 0;
    /* stdout closed: it exits now; bound the wait all the same */
    while (!killed && waitpid(pid, &status, WNOHANG) == 0) {
        if (s_now_ms() > deadline) {
            kill(pid, SIGKILL);
            killed = true;
            break;
        }
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (killed)
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    if (out_stdout) {
        if (!buf)
            buf = calloc(1, 1);
        else
            buf[len] = '\0';
        *out_stdout = buf;
    } else {
        free(buf);
    }
    if (killed || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}
