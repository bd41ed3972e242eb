/*
 * api_client.c - see api_client.h.
 */
#include "config.h"

#include "tests/api_client.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int s_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int s_write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* With IMAGEJOBS_RESPONSE_LOG set (cmd/imagejobs-local test sets it), one
 * JSON line per response into that file, appended in one write: what
 * tests/test_openapi.sh validates against docs/openapi.json. */
static void s_log_response(const char *method, const char *path, const api_response_t *r)
{
    const char *file = getenv("IMAGEJOBS_RESPONSE_LOG");
    if (!file || !*file)
        return;
    char ct[128] = "";
    api_header(r, "content-type", ct, sizeof ct);
    json_t *line = json_pack("{s:s,s:s,s:i,s:s,s:O?}", "method", method, "path", path, "status",
                             r->status, "content_type", ct, "body", r->json);
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    json_decref(line);
    if (!text)
        return;
    size_t n = strlen(text);
    text[n] = '\n'; /* replaces the NUL: written with its length */
    int fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, text, n + 1);
        (void)w;
        close(fd);
    }
    free(text);
}

int api_request(int port, const char *method, const char *path, const char *extra_headers,
                const char *body, size_t body_len, api_response_t *out)
{
    memset(out, 0, sizeof *out);
    int fd = s_connect(port);
    if (fd < 0)
        return -1;
    size_t cap_head = 1024 + strlen(path) + (extra_headers ? strlen(extra_headers) : 0);
    char *head = malloc(cap_head);
    int n = snprintf(head, cap_head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s",
                     method, path, extra_headers ? extra_headers : "");
    if (body)
        n += snprintf(head + n, cap_head - (size_t)n, "Content-Length: %zu\r\n", body_len);
    n += snprintf(head + n, cap_head - (size_t)n, "\r\n");
    /* the server may answer (413, 431) and close before reading it all */
    int wrote =
        s_write_all(fd, head, (size_t)n) == 0 && (!body || s_write_all(fd, body, body_len) == 0);
    free(head);
    (void)wrote;
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.1 %d", &out->status) != 1) {
        free(buf);
        return -1;
    }
    size_t hlen = (size_t)(sep - buf);
    if (hlen >= sizeof out->headers)
        hlen = sizeof out->headers - 1;
    for (size_t i = 0; i < hlen; i++)
        out->headers[i] = buf[i];
    out->body_len = len - (size_t)(sep + 4 - buf);
    out->body = malloc(out->body_len + 1);
    memcpy(out->body, sep + 4, out->body_len);
    out->body[out->body_len] = 0;
    free(buf);
    char ct[128];
    if (api_header(out, "content-type", ct, sizeof ct) && strstr(ct, "application/json"))
        out->json = json_loadb(out->body, out->body_len, 0, NULL);
    s_log_response(method, path, out);
    return 0;
}

void api_response_free(api_response_t *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

const char *api_header(const api_response_t *r, const char *name, char *buf, size_t len)
{
    size_t nlen = strlen(name);
    for (const char *line = strstr(r->headers, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ')
                v++;
            size_t i = 0;
            while (v[i] && v[i] != '\r' && i + 1 < len) {
                buf[i] = v[i];
                i++;
            }
            buf[i] = 0;
            return buf;
        }
    }
    return NULL;
}

int api_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0
        || getsockname(fd, (struct sockaddr *)&a, &alen) < 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

pid_t api_serve(int port, const char *const *args, const char *log_path, double timeout_s)
{
    pid_t pid = api_spawn(port, args, log_path);
    if (pid < 0)
        return -1;
    if (api_wait_ready(port, pid, timeout_s) < 0) {
        kill(pid, SIGKILL); /* if it died, this is a no-op */
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

int api_stop(pid_t pid, double timeout_s)
{
    kill(pid, SIGTERM);
    double deadline = s_now() + timeout_s;
    int st;
    while (s_now() < deadline) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

pid_t api_exec(const char *const *argv, const char *dir, const char *log_path, bool truncate)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | (truncate ? O_TRUNC : 0), 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        if (dir && chdir(dir) != 0)
            _exit(126);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid < 0 ? -1 : pid;
}

pid_t api_spawn(int port, const char *const *args, const char *log_path)
{
    const char *bin = getenv("IMAGEJOBS_BIN");
    if (!bin)
        return -1;
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    /* auth off unless the test says otherwise (a later --auth wins) */
    const char *argv[64] = {bin, "serve", "--listen", listen, "--auth", "off"};
    int argc = 6;
    for (int i = 0; args && args[i] && argc < 62; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    return api_exec(argv, NULL, log_path, true);
}

int api_wait_ready(int port, pid_t pid, double timeout_s)
{
    double deadline = s_now() + timeout_s;
    while (s_now() < deadline) {
        api_response_t r;
        if (api_request(port, "GET", "/readyz", NULL, NULL, 0, &r) == 0) {
            int ok = r.status == 200;
            api_response_free(&r);
            if (ok)
                return 0;
        }
        if (kill(pid, 0) < 0)
            return -1;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return -1; /* it died (and is collected) */
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL); /* polling a condition with a deadline */
    }
    return -1;
}

int api_kill(pid_t pid)
{
    int st = 0;
    kill(pid, SIGKILL);
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return st;
}

pid_t api_redis_start(int port, const char *dir, double timeout_s)
{
    char portstr[16], log[512];
    snprintf(portstr, sizeof portstr, "%d", port);
    snprintf(log, sizeof log, "%s/redis.log", dir);
    const char *argv[] = {"redis-server", "--port", portstr, "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no",     "--dir", dir,      NULL};
    pid_t pid = api_exec(argv, NULL, log, false);
    if (pid < 0)
        return -1;
    struct timespec t0, now, pause = {0, 20 * 1000000L};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        redisContext *rc = redisConnect("127.0.0.1", port);
        bool ok = false;
        if (rc && !rc->err) {
            redisReply *r = redisCommand(rc, "PING");
            ok = r && r->type == REDIS_REPLY_STATUS;
            if (r)
                freeReplyObject(r);
        }
        if (rc)
            redisFree(rc);
        if (ok)
            return pid;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return -1;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9 > timeout_s) {
            api_kill(pid);
            return -1;
        }
        nanosleep(&pause, NULL); /* polling a process's readiness, with a deadline */
    }
}
