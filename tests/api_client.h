/*
 * api_client.h - a small blocking HTTP/1.1 client and a server launcher for
 * the end-to-end tests (Connection: close, timeouts on every socket call).
 */
#ifndef IMAGEJOBS_TESTS_API_CLIENT_H
#define IMAGEJOBS_TESTS_API_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct {
    int status;         /* 0 when no response came */
    char headers[8192]; /* raw header block, lowercased names */
    char *body;         /* NUL-terminated, malloc'd */
    size_t body_len;
    json_t *json; /* parsed body when it is JSON, else NULL */
} api_response_t;

/* Sends one request (extra_headers: "Name: value\r\n" lines or NULL; body
 * may be NULL) and reads the whole response. 0, or -1 on a socket error. */
int api_request(int port, const char *method, const char *path, const char *extra_headers,
                const char *body, size_t body_len, api_response_t *out);
void api_response_free(api_response_t *r);

/* The value of a response header (case-insensitive name) copied into buf,
 * or NULL when absent. */
const char *api_header(const api_response_t *r, const char *name, char *buf, size_t len);

/* A TCP port nothing listens on right now. */
int api_free_port(void);

/* Starts `$IMAGEJOBS_BIN serve` with args on port, stderr to log_path, and
 * waits (up to timeout_s) until /readyz answers 200. Returns the pid, or -1. */
pid_t api_serve(int port, const char *const *args, const char *log_path, double timeout_s);

/* SIGTERM, then waits up to timeout_s; returns the exit status, or -1 when
 * it had to be killed. */
int api_stop(pid_t pid, double timeout_s);

/* Starts `$IMAGEJOBS_BIN serve` as api_serve does, without waiting. Returns
 * the pid, or -1. */
pid_t api_spawn(int port, const char *const *args, const char *log_path);

/* Waits (up to timeout_s) until /readyz on port answers 200. 0, or -1 when
 * pid died or the time ran out (pid is left running then). */
int api_wait_ready(int port, pid_t pid, double timeout_s);

/* Starts argv[0] (searched in PATH) with argv, in directory dir (NULL: this
 * one), its stdout and stderr appended to log_path (emptied first when
 * truncate), and no signal blocked: the runtime blocks SIGINT and SIGTERM
 * in the test process, and exec would keep that mask. Returns the pid, or
 * -1; the child exits 126 or 127 when it cannot change directory or exec. */
pid_t api_exec(const char *const *argv, const char *dir, const char *log_path, bool truncate);

/* A private redis-server on 127.0.0.1:port (no persistence, its files and
 * DIR/redis.log in dir), answering PING within timeout_s: its pid, or -1
 * (it exited, or was killed when the time ran out). */
pid_t api_redis_start(int port, const char *dir, double timeout_s);

/* SIGKILL and collect; returns the wait status. */
int api_kill(pid_t pid);

#endif
