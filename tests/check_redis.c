/*
 * check_redis.c - the redis actor against real redis-server processes.
 *
 * The test thread talks to the actor from a mailbox "test" (requests and
 * replies) and watches the bus topic "cancel" from a mailbox "bus"; it
 * checks Redis itself with a synchronous hiredis client (fine in a test,
 * never in an actor). Tests that need Redis use IMAGEJOBS_TEST_REDIS (the
 * shared server of cmd/imagejobs-local test); outage tests start their own
 * redis-server on a free port so that they can stop and restart it. Without
 * IMAGEJOBS_TEST_REDIS those tests print "SKIP: no IMAGEJOBS_TEST_REDIS" and
 * pass; the configuration tests always run.
 *
 * Other test programs may share the Redis server and publish on
 * imagejobs:cancel: bus events are matched by the job ids a test made up,
 * and this program's instance name is unique to it.
 */
#include "config.h"

#include "actors/redis.h"
#include "runtime/actor.h"
#include "runtime/clock.h"
#include "runtime/mailbox.h"
#include "runtime/runtime.h"
#include "runtime/uuid.h"
#include "tests/fixture.h"
#include "tests/runner.h"

#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 30000      /* generous: sanitizer builds on 2 busy cores */
#define DEADLINE_S 30.0    /* for "eventually" conditions */

static mailbox_t *s_test; /* requests and replies */
static mailbox_t *s_bus;  /* subscribed to "cancel" */
static char s_instance[REDIS_INSTANCE_MAX];

/* ------------------------------------------------------------ fixture */

static void s_setup(void)
{
    snprintf(s_instance, sizeof s_instance, "check-redis-%ld", (long)getpid());
    fixture_setup();
    s_test = fixture_mailbox("test", NULL);
    s_bus = fixture_mailbox("bus", "cancel");
}

#define NEED_REDIS()                                                                               \
    do {                                                                                           \
        if (!fixture_service("IMAGEJOBS_TEST_REDIS"))                                              \
            return;                                                                                \
    } while (0)

static int s_shared_port(void)
{
    const char *url = getenv("IMAGEJOBS_TEST_REDIS");
    const char *colon = strrchr(url, ':');
    ck_assert_msg(colon != NULL, "IMAGEJOBS_TEST_REDIS has no port: %s", url);
    return atoi(colon + 1);
}

static void s_new_id(char id[UUID_STR_LEN])
{
    ck_assert_int_eq(uuid_v4(id), 0);
}

/* ------------------------------------------------------------ the actor */

static actor_t *s_start(const char *url, size_t queue_max)
{
    redis_config_t cfg = {.url = url, .instance = s_instance, .queue_max = queue_max};
    char err[256] = "";
    actor_t *a = redis_start(fixture_rt, &cfg, err, sizeof err);
    ck_assert_msg(a != NULL, "redis_start(%s) failed: %s", url, err);
    return a;
}

/* Sends req (consumed) to the actor; returns its id. */
static uint64_t s_send(msg_t **req)
{
    (*req)->corr = mailbox_next_corr(s_test);
    uint64_t corr = (*req)->corr;
    ck_assert_int_eq(mailbox_send(s_test, REDIS_ACTOR_NAME, *req), 0);
    msg_destroy(req);
    return corr;
}

/* The reply to request corr (replies come back in order). */
static msg_t *s_reply(uint64_t corr)
{
    msg_t *r = mailbox_recv(s_test, WAIT_MS);
    ck_assert_msg(r != NULL, "no reply within %d ms", WAIT_MS);
    ck_assert_msg(r->flags & MSG_FLAG_REPLY, "not a reply: %s", msg_type_name(r->type));
    ck_assert_uint_eq(r->corr, corr);
    return r;
}

static uint64_t s_send_cancel(const char *job_id, const char *mode, int64_t at_us)
{
    msg_t *m = msg_new(MSG_REDIS_CANCEL);
    msg_set_str(&m->redis_cancel.job_id, job_id);
    msg_set_str(&m->redis_cancel.mode, mode);
    m->redis_cancel.requested_at_us = at_us;
    return s_send(&m);
}

static msg_t *s_cancel(const char *job_id, const char *mode, int64_t at_us)
{
    return s_reply(s_send_cancel(job_id, mode, at_us));
}

static void s_expect_ok(msg_t *r)
{
    ck_assert_msg(r->type == MSG_OK, "expected OK, got %s %s", msg_type_name(r->type),
                  r->type == MSG_ERROR && r->error.reason ? r->error.reason : "");
}

static void s_expect_error(msg_t *r, int code)
{
    ck_assert_msg(r->type == MSG_ERROR, "expected ERROR, got %s", msg_type_name(r->type));
    ck_assert_msg(r->error.code == code, "expected code %d, got %lld (%s)", code,
                  (long long)r->error.code, r->error.reason ? r->error.reason : "");
    ck_assert_ptr_nonnull(r->error.reason);
}

static void s_cancel_ok(const char *job_id, const char *mode, int64_t at_us)
{
    msg_t *r = s_cancel(job_id, mode, at_us);
    s_expect_ok(r);
    msg_destroy(&r);
}

static void s_cancel_eagain(const char *job_id)
{
    msg_t *r = s_cancel(job_id, "immediate", 0);
    s_expect_error(r, -EAGAIN);
    msg_destroy(&r);
}

static uint64_t s_send_flag_get(const char *job_id)
{
    msg_t *m = msg_new(MSG_REDIS_FLAG_GET);
    msg_set_str(&m->redis_flag_get.job_id, job_id);
    return s_send(&m);
}

/* REDIS_FLAG_GET: 1 set, 0 not set; fails the test on an error. */
static int s_flag(const char *job_id)
{
    msg_t *r = s_reply(s_send_flag_get(job_id));
    ck_assert_msg(r->type == MSG_REDIS_FLAG, "expected REDIS_FLAG, got %s %s",
                  msg_type_name(r->type),
                  r->type == MSG_ERROR && r->error.reason ? r->error.reason : "");
    int set = r->redis_flag.set;
    msg_destroy(&r);
    return set;
}

static msg_t *s_health(void)
{
    msg_t *m = msg_new(MSG_HEALTH_CHECK);
    msg_t *r = s_reply(s_send(&m));
    ck_assert_int_eq(r->type, MSG_HEALTH);
    ck_assert_ptr_nonnull(r->health.detail);
    return r;
}

/* Polls HEALTH until its ok is `ok`. */
static void s_wait_health(bool ok)
{
    double end = fixture_now() + DEADLINE_S;
    for (;;) {
        msg_t *h = s_health();
        bool got = h->health.ok;
        if (got == ok) {
            msg_destroy(&h);
            return;
        }
        ck_assert_msg(fixture_now() < end, "health never became %s: %s", ok ? "ok" : "not ok",
                      h->health.detail);
        msg_destroy(&h);
        fixture_pause_ms(10);
    }
}

/* ------------------------------------------------------------ bus */

/* The next JOB_CANCEL event about one of ids (or, with ids NULL, the next
 * "recheck"); events about other jobs (other test programs on the shared
 * server) are skipped. */
static msg_t *s_expect_event(const char *const *ids, size_t nids)
{
    double end = fixture_now() + WAIT_MS / 1000.0;
    for (;;) {
        int left = (int)((end - fixture_now()) * 1000);
        ck_assert_msg(left > 0, "no %s event within %d ms", ids ? "cancel" : "recheck",
                      WAIT_MS);
        msg_t *ev = mailbox_recv(s_bus, left);
        ck_assert_msg(ev != NULL, "no %s event within %d ms", ids ? "cancel" : "recheck",
                      WAIT_MS);
        ck_assert_int_eq(ev->type, MSG_JOB_CANCEL);
        ck_assert(ev->flags & MSG_FLAG_EVENT);
        if (!ids) {
            if (!ev->job_cancel.job_id && ev->job_cancel.mode
                && strcmp(ev->job_cancel.mode, "recheck") == 0)
                return ev;
        } else if (ev->job_cancel.job_id) {
            for (size_t i = 0; i < nids; i++)
                if (strcmp(ev->job_cancel.job_id, ids[i]) == 0)
                    return ev;
        }
        msg_destroy(&ev);
    }
}

/* ------------------------------------------------------------ sync client */

static redisContext *s_sync(int port)
{
    struct timeval tv = {.tv_sec = 10};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    ck_assert_msg(c && !c->err, "cannot connect to 127.0.0.1:%d: %s", port,
                  c ? c->errstr : "out of memory");
    redisSetTimeout(c, tv);
    return c;
}

static redisReply *s_cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    ck_assert_msg(r != NULL, "redis command failed: %s", c->errstr);
    return r;
}

/* GET job:{id}:cancelled as a string ("" when absent). */
static void s_get_flag(redisContext *c, const char *id, char *out, size_t outlen)
{
    redisReply *r = s_cmd(c, "GET job:%s:cancelled", id);
    snprintf(out, outlen, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
}

static long long s_ttl(redisContext *c, const char *id)
{
    redisReply *r = s_cmd(c, "TTL job:%s:cancelled", id);
    ck_assert_int_eq(r->type, REDIS_REPLY_INTEGER);
    long long ttl = r->integer;
    freeReplyObject(r);
    return ttl;
}

/* The flag exists with "true" and the seed's TTL. */
static void s_assert_flag(redisContext *c, const char *id)
{
    char v[64];
    s_get_flag(c, id, v, sizeof v);
    ck_assert_str_eq(v, "true");
    long long ttl = s_ttl(c, id);
    ck_assert_msg(ttl > 3590 && ttl <= 3600, "TTL of job:%s:cancelled is %lld", id, ttl);
}

/* Polls until job:{id}:cancelled appears (the queue was written). */
static void s_wait_flag(redisContext *c, const char *id)
{
    double end = fixture_now() + DEADLINE_S;
    char v[64];
    for (s_get_flag(c, id, v, sizeof v); strcmp(v, "true") != 0;
         s_get_flag(c, id, v, sizeof v)) {
        ck_assert_msg(fixture_now() < end, "job:%s:cancelled never appeared", id);
        fixture_pause_ms(10);
    }
    s_assert_flag(c, id);
}

static void s_publish(redisContext *c, const char *payload, size_t len)
{
    redisReply *r = s_cmd(c, "PUBLISH %s %b", REDIS_CANCEL_CHANNEL, payload, len);
    ck_assert_int_eq(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
}

static void s_publishf(redisContext *c, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    s_publish(c, buf, (size_t)n);
}

/* calls of one command on the server since it started (INFO commandstats) */
static long s_calls(redisContext *c, const char *cmd)
{
    redisReply *r = s_cmd(c, "INFO commandstats");
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    char key[64];
    snprintf(key, sizeof key, "cmdstat_%s:calls=", cmd);
    const char *p = strstr(r->str, key);
    long calls = p ? atol(p + strlen(key)) : 0;
    freeReplyObject(r);
    return calls;
}

/* The id of the client named name, or -1. */
static long long s_client_id(redisContext *c, const char *name)
{
    redisReply *r = s_cmd(c, "CLIENT LIST");
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    char want[128];
    snprintf(want, sizeof want, " name=%s ", name);
    long long id = -1;
    for (char *line = r->str; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strstr(line, want) && strncmp(line, "id=", 3) == 0)
            id = atoll(line + 3);
        line = nl ? nl + 1 : NULL;
    }
    freeReplyObject(r);
    return id;
}

/* ------------------------------------------------------------ own server */

/* A redis-server of this test: a child process (killed with us, too). */
typedef struct {
    pid_t pid;
    int port;
    char dir[64];
    char sock[128];
    bool unix_socket;
    bool persist; /* AOF, fsync always: what was acknowledged survives SIGKILL */
} server_t;

static bool s_port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* A free port below the kernel's ephemeral range, so that no outgoing
 * connection takes it while the server is down between restarts. */
static int s_pick_port(void)
{
    for (int i = 0; i < 2000; i++) {
        int port = 20000 + (int)((getpid() * 131 + i * 7919) % 12000);
        if (s_port_free(port))
            return port;
    }
    ck_abort_msg("no free port");
    return -1;
}

static bool s_ping(int port)
{
    struct timeval tv = {.tv_sec = 1};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    bool ok = false;
    if (c && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

/* Starts (or restarts, on the same port) s's server and waits for PING. */
static void s_server_start(server_t *s)
{
    if (!s->dir[0]) {
        snprintf(s->dir, sizeof s->dir, "/tmp/check-redis-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(s->dir));
        snprintf(s->sock, sizeof s->sock, "%s/redis.sock", s->dir);
        s->port = s_pick_port();
    }
    char port[16], log[128];
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(log, sizeof log, "%s/redis.log", s->dir);
    const char *argv[32] = {"redis-server", "--port", port, "--bind", "127.0.0.1",
                            "--save", "", "--dir", s->dir, "--logfile", log,
                            "--enable-debug-command", "local"};
    int argc = 13;
    if (s->persist) {
        argv[argc++] = "--appendonly";
        argv[argc++] = "yes";
        argv[argc++] = "--appendfsync";
        argv[argc++] = "always";
    } else {
        argv[argc++] = "--appendonly";
        argv[argc++] = "no";
    }
    if (s->unix_socket) {
        argv[argc++] = "--unixsocket";
        argv[argc++] = s->sock;
    }
    argv[argc] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* dies with the test process, whatever ends it */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        /* the runtime blocked SIGTERM in this thread; exec keeps the mask */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    double end = fixture_now() + DEADLINE_S;
    while (!s_ping(s->port)) {
        int status;
        ck_assert_msg(waitpid(pid, &status, WNOHANG) == 0,
                      "redis-server on port %d exited (see %s)", s->port, log);
        ck_assert_msg(fixture_now() < end, "redis-server on port %d not ready", s->port);
        fixture_pause_ms(10);
    }
}

/* Stops the server with sig and waits for it to be gone. */
static void s_server_stop(server_t *s, int sig)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, sig);
    int status;
    while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
        ;
    s->pid = 0;
}

static void s_server_cleanup(server_t *s)
{
    s_server_stop(s, SIGKILL);
    if (s->dir[0] && strncmp(s->dir, "/tmp/check-redis-", 17) == 0) {
        char cmd[160];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
        ck_assert_int_eq(system(cmd), 0);
    }
}

static void s_server_url(const server_t *s, char *url, size_t len)
{
    if (s->unix_socket)
        snprintf(url, len, "%s", s->sock);
    else
        snprintf(url, len, "redis://127.0.0.1:%d", s->port);
}

/* Makes the server busy for `seconds` (DEBUG SLEEP from a client that does
 * not wait) and returns once it is: a PING from another client times out. */
static redisContext *s_server_freeze(server_t *s, int seconds)
{
    redisContext *c = s_sync(s->port);
    ck_assert_int_eq(redisAppendCommand(c, "DEBUG SLEEP %d", seconds), REDIS_OK);
    int done = 0;
    while (!done)
        ck_assert_int_eq(redisBufferWrite(c, &done), REDIS_OK);
    double end = fixture_now() + DEADLINE_S;
    struct timeval tv = {.tv_usec = 200000};
    for (;;) {
        redisContext *p = redisConnectWithTimeout("127.0.0.1", s->port, tv);
        ck_assert_ptr_nonnull(p);
        bool busy = p->err != 0;
        if (!busy) {
            redisSetTimeout(p, tv);
            redisReply *r = redisCommand(p, "PING");
            busy = r == NULL;
            if (r)
                freeReplyObject(r);
        }
        redisFree(p);
        if (busy)
            return c;
        ck_assert_msg(fixture_now() < end, "DEBUG SLEEP never took effect");
    }
}

/* ============================================================ tests */

START_TEST(test_bad_config_fails_with_reason)
{
    static const char *const bad_urls[] = {
        NULL, "", "http://127.0.0.1:6379", "redis://", "redis://:6379", "redis://host:",
        "redis://host:0", "redis://host:65536", "redis://host:1234567", "redis://host:63x",
        "redis://host:6379/0", "redis://user:pw@host:6379", "redis://host name",
        "relative/redis.sock", "redis://[::1", "redis://[]:6379", "redis://[zz]:6379",
        "REDIS://host", "unix:///tmp/redis.sock",
    };
    for (size_t i = 0; i < sizeof bad_urls / sizeof *bad_urls; i++) {
        redis_config_t cfg = {.url = bad_urls[i], .instance = "a"};
        char err[256] = "";
        actor_t *a = redis_start(fixture_rt, &cfg, err, sizeof err);
        ck_assert_msg(a == NULL, "URL \"%s\" was accepted", bad_urls[i] ? bad_urls[i] : "(null)");
        ck_assert_msg(strncmp(err, "redis: ", 7) == 0 && strstr(err, "URL"),
                      "URL \"%s\": unclear reason \"%s\"", bad_urls[i] ? bad_urls[i] : "(null)",
                      err);
    }
    char long_path[200];
    memset(long_path, 'x', sizeof long_path - 1);
    long_path[0] = '/';
    long_path[sizeof long_path - 1] = '\0';
    redis_config_t cfg = {.url = long_path, .instance = "a"};
    char err[256] = "";
    ck_assert_ptr_null(redis_start(fixture_rt, &cfg, err, sizeof err));
    ck_assert_msg(strstr(err, "socket path") != NULL, "reason: %s", err);

    static const char *const bad_instances[] = {
        NULL, "", "a b", "tab\there", "\x01", "caf\xc3\xa9",
        "0123456789012345678901234567890123456789012345678901234567890123", /* 64 */
    };
    for (size_t i = 0; i < sizeof bad_instances / sizeof *bad_instances; i++) {
        redis_config_t c2 = {.url = "redis://127.0.0.1:6379", .instance = bad_instances[i]};
        err[0] = '\0';
        ck_assert_ptr_null(redis_start(fixture_rt, &c2, err, sizeof err));
        ck_assert_msg(strstr(err, "instance") != NULL, "reason: %s", err);
    }
    ck_assert_ptr_null(redis_start(fixture_rt, NULL, err, sizeof err));
}
END_TEST

/* Needs no server: nothing listens on the socket path. */
START_TEST(test_starts_while_redis_is_down_and_answers_eagain)
{
    actor_t *a = s_start("/nonexistent/check-redis.sock", 0);
    msg_t *h = s_health();
    ck_assert_int_eq(h->health.ok, 0);
    ck_assert_msg(strstr(h->health.detail, "commands") && strstr(h->health.detail, "subscriber"),
                  "detail: %s", h->health.detail);
    msg_destroy(&h);

    char id[UUID_STR_LEN];
    s_new_id(id);
    msg_t *r = s_cancel(id, "immediate", 0);
    s_expect_error(r, -EAGAIN);
    ck_assert_msg(strstr(r->error.reason, "queued"), "reason: %s", r->error.reason);
    msg_destroy(&r);
    r = s_reply(s_send_flag_get(id));
    s_expect_error(r, -EAGAIN);
    msg_destroy(&r);

    /* malformed requests are refused whatever Redis's state */
    static const char *const bad_ids[] = {NULL, "", "not-a-uuid",
                                          "550e8400-e29b-41d4-a716-44665544000g",
                                          "550e8400e29b41d4a716446655440000"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
        r = s_cancel(bad_ids[i], "immediate", 0);
        s_expect_error(r, -EINVAL);
        msg_destroy(&r);
        r = s_reply(s_send_flag_get(bad_ids[i]));
        s_expect_error(r, -EINVAL);
        msg_destroy(&r);
    }
    r = s_cancel(id, "recheck", 0);
    s_expect_error(r, -EINVAL);
    msg_destroy(&r);
    r = s_cancel(id, "Immediate", 0);
    s_expect_error(r, -EINVAL);
    msg_destroy(&r);
    r = s_cancel(id, "immediate", -1);
    s_expect_error(r, -EINVAL);
    msg_destroy(&r);
    r = s_cancel(id, "immediate", INT64_MAX);
    s_expect_error(r, -EINVAL);
    msg_destroy(&r);

    redis_destroy(&a);
    ck_assert_ptr_null(a);
    /* the name is free again */
    a = s_start("/nonexistent/check-redis.sock", 0);
    redis_destroy(&a);
}
END_TEST

START_TEST(test_cancel_sets_flag_and_publishes)
{
    NEED_REDIS();
    int port = s_shared_port();
    redisContext *c = s_sync(port);
    redisContext *sub = s_sync(port);
    redisReply *r = s_cmd(sub, "SUBSCRIBE %s", REDIS_CANCEL_CHANNEL);
    freeReplyObject(r);

    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char id[UUID_STR_LEN], upper[UUID_STR_LEN], id2[UUID_STR_LEN];
    s_new_id(id);
    s_new_id(id2);
    for (int i = 0; i < UUID_STR_LEN; i++)
        upper[i] = (char)toupper((unsigned char)id[i]);
    /* an upper-case id reaches Redis lower-cased */
    s_cancel_ok(upper, "after_current_image", 1764158400123456LL);
    s_assert_flag(c, id);
    /* mode NULL is immediate, requested_at_us 0 is now */
    int64_t before = clock_wall_us();
    s_cancel_ok(id2, NULL, 0);
    int64_t after = clock_wall_us();
    s_assert_flag(c, id2);

    /* what other instances receive, in order: our test subscriber skips
     * messages of other programs sharing the server */
    char want1[256];
    snprintf(want1, sizeof want1, "%s after_current_image 1764158400123456 %s", id, s_instance);
    int seen = 0;
    while (seen < 2) {
        ck_assert_int_eq(redisGetReply(sub, (void **)&r), REDIS_OK);
        ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
        ck_assert_uint_eq(r->elements, 3);
        const char *payload = r->element[2]->str;
        if (seen == 0 && strncmp(payload, id, 36) == 0) {
            ck_assert_str_eq(payload, want1);
            seen++;
        } else if (seen == 1 && strncmp(payload, id2, 36) == 0) {
            char mode[32], origin[80];
            long long at;
            int n = 0;
            ck_assert_int_eq(sscanf(payload + 37, "%31s %lld %79s%n", mode, &at, origin, &n), 3);
            ck_assert_str_eq(mode, "immediate");
            ck_assert_str_eq(origin, s_instance);
            ck_assert_int_eq((size_t)n, strlen(payload + 37));
            ck_assert(at >= before && at <= after);
            seen++;
        }
        freeReplyObject(r);
    }
    /* a cancel repeated is answered OK again */
    s_cancel_ok(id, "immediate", 0);

    redis_destroy(&a);
    redisFree(sub);
    redisFree(c);
}
END_TEST

/* REDIS_CANCEL_EVENT: the PUBLISH alone, at once, and no flag (the HTTP
 * actor sends it before the store has checked the job exists). */
START_TEST(test_cancel_event_publishes_without_a_flag)
{
    NEED_REDIS();
    int port = s_shared_port();
    redisContext *c = s_sync(port);
    redisContext *sub = s_sync(port);
    redisReply *r = s_cmd(sub, "SUBSCRIBE %s", REDIS_CANCEL_CHANNEL);
    freeReplyObject(r);
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char id[UUID_STR_LEN];
    s_new_id(id);
    msg_t *m = msg_new(MSG_REDIS_CANCEL_EVENT);
    msg_set_str(&m->redis_cancel_event.job_id, id);
    msg_set_str(&m->redis_cancel_event.mode, "immediate");
    m->redis_cancel_event.requested_at_us = 1764158400654321LL;
    ck_assert_int_eq(mailbox_send(s_test, REDIS_ACTOR_NAME, m), 0);
    msg_destroy(&m);

    char want[256];
    snprintf(want, sizeof want, "%s immediate 1764158400654321 %s", id, s_instance);
    for (;;) { /* other programs may share the server: skip their messages */
        ck_assert_int_eq(redisGetReply(sub, (void **)&r), REDIS_OK);
        ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
        int ours = strncmp(r->element[2]->str, id, 36) == 0;
        if (ours)
            ck_assert_str_eq(r->element[2]->str, want);
        freeReplyObject(r);
        if (ours)
            break;
    }
    r = s_cmd(c, "EXISTS job:%s:cancelled", id);
    ck_assert_int_eq(r->integer, 0);
    freeReplyObject(r);
    ck_assert_ptr_null(mailbox_recv(s_test, 100)); /* no reply */

    redis_destroy(&a);
    redisFree(sub);
    redisFree(c);
}
END_TEST

/* Work wake-ups between instances: a job created here is announced on
 * imagejobs:work; one announced by another instance wakes our generators
 * (bus topic "work"); our own announcement is not echoed back. */
START_TEST(test_work_wakeups_cross_redis)
{
    NEED_REDIS();
    int port = s_shared_port();
    redisContext *c = s_sync(port);
    redisContext *sub = s_sync(port);
    redisReply *r = s_cmd(sub, "SUBSCRIBE %s", REDIS_WORK_CHANNEL);
    freeReplyObject(r);
    mailbox_t *work = mailbox_new(fixture_rt, "work-listener");
    ck_assert_ptr_nonnull(work);
    ck_assert_int_eq(mailbox_subscribe(work, "work"), 0);
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char id[UUID_STR_LEN], remote[UUID_STR_LEN];
    s_new_id(id);
    s_new_id(remote);
    msg_t *m = msg_new(MSG_WORK_AVAILABLE); /* as the store publishes it */
    msg_set_str(&m->work_available.job_id, id);
    ck_assert_int_ge(mailbox_publish(s_test, "work", m), 1);
    msg_destroy(&m);
    char want[256];
    snprintf(want, sizeof want, "%s %s", id, s_instance);
    for (;;) {
        ck_assert_int_eq(redisGetReply(sub, (void **)&r), REDIS_OK);
        int ours = strncmp(r->element[2]->str, id, 36) == 0;
        if (ours)
            ck_assert_str_eq(r->element[2]->str, want);
        freeReplyObject(r);
        if (ours)
            break;
    }
    msg_t *echo = mailbox_recv(work, 100); /* our own publish reached us... */
    ck_assert_ptr_nonnull(echo);
    ck_assert_str_eq(echo->work_available.job_id, id);
    msg_destroy(&echo);

    r = s_cmd(c, "PUBLISH %s %s", REDIS_WORK_CHANNEL, "not-a-uuid other-instance");
    freeReplyObject(r);
    char payload[128];
    snprintf(payload, sizeof payload, "%s other-instance", remote);
    r = s_cmd(c, "PUBLISH %s %s", REDIS_WORK_CHANNEL, payload);
    freeReplyObject(r);
    msg_t *ev = mailbox_recv(work, 5000);
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(ev->type, MSG_WORK_AVAILABLE);
    ck_assert_str_eq(ev->work_available.job_id, remote); /* the malformed one dropped */
    msg_destroy(&ev);
    ck_assert_ptr_null(mailbox_recv(work, 200)); /* ...and nothing more: no echo */

    redis_destroy(&a);
    mailbox_destroy(&work);
    redisFree(sub);
    redisFree(c);
}
END_TEST

START_TEST(test_remote_cancel_reaches_the_bus_own_is_skipped)
{
    NEED_REDIS();
    redisContext *c = s_sync(s_shared_port());
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char own[UUID_STR_LEN], remote[UUID_STR_LEN], upper[UUID_STR_LEN];
    s_new_id(own);
    s_new_id(remote);
    for (int i = 0; i < UUID_STR_LEN; i++)
        upper[i] = (char)toupper((unsigned char)remote[i]);
    const char *ids[] = {own, remote};

    /* ours, through the actor and straight from a client: both skipped */
    s_cancel_ok(own, "immediate", 0);
    s_publishf(c, "%s immediate 1764158400000001 %s", own, s_instance);
    /* another instance's, with an upper-case id */
    s_publishf(c, "%s after_current_image 1764158400000002 instance-b", upper);

    msg_t *ev = s_expect_event(ids, 2);
    ck_assert_str_eq(ev->job_cancel.job_id, remote);
    ck_assert_str_eq(ev->job_cancel.mode, "after_current_image");
    ck_assert_int_eq(ev->job_cancel.requested_at_us, 1764158400000002LL);
    ck_assert_str_eq(ev->job_cancel.origin, "instance-b");
    msg_destroy(&ev);

    s_publishf(c, "%s immediate 1764158400000003 b", remote);
    ev = s_expect_event(ids, 2);
    ck_assert_str_eq(ev->job_cancel.job_id, remote);
    ck_assert_str_eq(ev->job_cancel.mode, "immediate");
    ck_assert_str_eq(ev->job_cancel.origin, "b");
    msg_destroy(&ev);

    redis_destroy(&a);
    redisFree(c);
}
END_TEST

START_TEST(test_malformed_messages_are_dropped_and_the_actor_keeps_working)
{
    NEED_REDIS();
    redisContext *c = s_sync(s_shared_port());
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char id[UUID_STR_LEN], good[UUID_STR_LEN];
    s_new_id(id);
    s_new_id(good);
    const char *ids[] = {id, good};
    char bad[40][320];
    int n = 0;
    snprintf(bad[n++], 320, "%s", "");
    snprintf(bad[n++], 320, "%s", " ");
    snprintf(bad[n++], 320, "%s", id);
    snprintf(bad[n++], 320, "%s immediate", id);
    snprintf(bad[n++], 320, "%s immediate 1764158400000000", id);
    snprintf(bad[n++], 320, "%s immediate 1764158400000000 b extra", id);
    snprintf(bad[n++], 320, "%s  immediate 1764158400000000 b", id);
    snprintf(bad[n++], 320, " %s immediate 1764158400000000 b", id);
    snprintf(bad[n++], 320, "%s immediate 1764158400000000 b ", id);
    snprintf(bad[n++], 320, "%s\timmediate 1764158400000000 b", id);
    snprintf(bad[n++], 320, "%.35s immediate 1764158400000000 b", id);
    snprintf(bad[n++], 320, "%.35sg immediate 1764158400000000 b", id);
    snprintf(bad[n++], 320, "%sa immediate 1764158400000000 b", id);
    snprintf(bad[n++], 320, "550e8400e29b41d4a716446655440000abcd immediate 1 b");
    snprintf(bad[n++], 320, "%s recheck 1764158400000000 b", id);
    snprintf(bad[n++], 320, "%s IMMEDIATE 1764158400000000 b", id);
    snprintf(bad[n++], 320, "%s stop 1764158400000000 b", id);
    snprintf(bad[n++], 320, "%s immediate -5 b", id);
    snprintf(bad[n++], 320, "%s immediate 0 b", id);
    snprintf(bad[n++], 320, "%s immediate +5 b", id);
    snprintf(bad[n++], 320, "%s immediate 12a b", id);
    snprintf(bad[n++], 320, "%s immediate 1e15 b", id);
    snprintf(bad[n++], 320, "%s immediate 99999999999999999999 b", id);
    snprintf(bad[n++], 320, "%s immediate 9223372036854775808 b", id);
    snprintf(bad[n++], 320, "%s immediate 4102444800000001 b", id);
    snprintf(bad[n++], 320, "%s immediate 1764158400000000 %0100d", id, 7);
    snprintf(bad[n++], 320, "%s immediate 1764158400000000 b\x01", id);
    snprintf(bad[n++], 320, "%s immediate 1764158400000000 caf\xc3\xa9", id);
    snprintf(bad[n++], 320, "{\"job_id\":\"%s\"}", id);
    for (int i = 0; i < n; i++)
        s_publish(c, bad[i], strlen(bad[i]));
    /* binary: an embedded NUL, and a payload of 1 MiB */
    char nul[128];
    int len = snprintf(nul, sizeof nul, "%s immediate 1764158400000000 b", id);
    nul[len - 1] = '\0';
    s_publish(c, nul, (size_t)len);
    size_t big = 1 << 20;
    char *huge = malloc(big);
    ck_assert_ptr_nonnull(huge);
    memset(huge, 'a', big);
    memcpy(huge, id, 36);
    s_publish(c, huge, big);
    free(huge);

    /* the first event about these jobs is the good one: all above dropped */
    s_publishf(c, "%s immediate 4102444800000000 %.63s", good,
               "!~0123456789012345678901234567890123456789012345678901234567890");
    msg_t *ev = s_expect_event(ids, 2);
    ck_assert_str_eq(ev->job_cancel.job_id, good);
    ck_assert_int_eq(ev->job_cancel.requested_at_us, 4102444800000000LL);
    ck_assert_uint_eq(strlen(ev->job_cancel.origin), 63);
    msg_destroy(&ev);

    /* and it still does its work */
    msg_t *h = s_health();
    ck_assert_msg(h->health.ok, "detail: %s", h->health.detail);
    msg_destroy(&h);
    s_cancel_ok(id, "immediate", 0);
    s_assert_flag(c, id);

    redis_destroy(&a);
    redisFree(c);
}
END_TEST

START_TEST(test_flag_get)
{
    NEED_REDIS();
    redisContext *c = s_sync(s_shared_port());
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char set[UUID_STR_LEN], unset[UUID_STR_LEN], other[UUID_STR_LEN], upper[UUID_STR_LEN];
    s_new_id(set);
    s_new_id(unset);
    s_new_id(other);
    freeReplyObject(s_cmd(c, "SET job:%s:cancelled true EX 60", set));
    freeReplyObject(s_cmd(c, "SET job:%s:cancelled TRUE EX 60", other));
    ck_assert_int_eq(s_flag(set), 1);
    ck_assert_int_eq(s_flag(unset), 0);
    ck_assert_int_eq(s_flag(other), 0); /* only the seed's exact "true" */
    for (int i = 0; i < UUID_STR_LEN; i++)
        upper[i] = (char)toupper((unsigned char)set[i]);
    ck_assert_int_eq(s_flag(upper), 1);
    /* a cancel through the actor is seen by the poll */
    s_cancel_ok(unset, "immediate", 0);
    ck_assert_int_eq(s_flag(unset), 1);

    redis_destroy(&a);
    redisFree(c);
}
END_TEST

START_TEST(test_subscriber_reconnects_and_asks_for_a_recheck)
{
    NEED_REDIS();
    redisContext *c = s_sync(s_shared_port());
    actor_t *a = s_start(getenv("IMAGEJOBS_TEST_REDIS"), 0);
    s_wait_health(true);

    char name[128];
    snprintf(name, sizeof name, "imagejobs:%s:subscriber", s_instance);
    long long id = s_client_id(c, name);
    ck_assert_msg(id > 0, "no client named %s", name);
    freeReplyObject(s_cmd(c, "CLIENT KILL ID %lld", id));

    msg_t *ev = s_expect_event(NULL, 0);
    ck_assert_str_eq(ev->job_cancel.origin, s_instance);
    ck_assert_int_gt(ev->job_cancel.requested_at_us, 0);
    msg_destroy(&ev);
    s_wait_health(true);

    /* resubscribed: remote cancels arrive again */
    char job[UUID_STR_LEN];
    s_new_id(job);
    const char *ids[] = {job};
    s_publishf(c, "%s immediate 1764158400000000 elsewhere", job);
    ev = s_expect_event(ids, 1);
    ck_assert_str_eq(ev->job_cancel.origin, "elsewhere");
    msg_destroy(&ev);

    /* the commands connection killed: it comes back, no recheck needed */
    snprintf(name, sizeof name, "imagejobs:%s:commands", s_instance);
    id = s_client_id(c, name);
    ck_assert_msg(id > 0, "no client named %s", name);
    freeReplyObject(s_cmd(c, "CLIENT KILL ID %lld", id));
    s_new_id(job);
    double end = fixture_now() + DEADLINE_S;
    for (;;) {
        msg_t *r = s_cancel(job, "immediate", 0);
        bool ok = r->type == MSG_OK;
        if (!ok)
            s_expect_error(r, -EAGAIN);
        msg_destroy(&r);
        if (ok)
            break;
        ck_assert_msg(fixture_now() < end, "commands connection never came back");
        fixture_pause_ms(10);
    }
    s_assert_flag(c, job);

    redis_destroy(&a);
    redisFree(c);
}
END_TEST

START_TEST(test_outage_queues_cancels_and_writes_them_on_return)
{
    NEED_REDIS();
    server_t srv = {0};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);

    s_server_stop(&srv, SIGTERM);
    s_wait_health(false);
    msg_t *h = s_health();
    ck_assert_msg(strstr(h->health.detail, "down") || strstr(h->health.detail, "closing"),
                  "detail: %s", h->health.detail);
    msg_destroy(&h);

    char id1[UUID_STR_LEN], id2[UUID_STR_LEN], id3[UUID_STR_LEN];
    s_new_id(id1);
    s_new_id(id2);
    s_new_id(id3);
    s_cancel_eagain(id1);
    s_cancel_eagain(id2);
    s_cancel_eagain(id1); /* deduplicated */
    msg_t *r = s_reply(s_send_flag_get(id1));
    s_expect_error(r, -EAGAIN);
    msg_destroy(&r);
    h = s_health();
    ck_assert_msg(strstr(h->health.detail, "2 cancels queued"), "detail: %s", h->health.detail);
    msg_destroy(&h);

    s_server_start(&srv); /* same port */
    msg_t *ev = s_expect_event(NULL, 0);
    ck_assert_str_eq(ev->job_cancel.origin, s_instance);
    msg_destroy(&ev);

    redisContext *c = s_sync(srv.port);
    s_wait_flag(c, id1);
    s_wait_flag(c, id2);
    s_wait_health(true);
    /* commands are ordered on the connection: once this cancel is answered,
     * everything queued before it has been executed */
    s_cancel_ok(id3, "immediate", 0);
    ck_assert_int_eq(s_calls(c, "set"), 3);
    ck_assert_int_eq(s_calls(c, "publish"), 3);
    ck_assert_int_eq(s_flag(id1), 1);

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

START_TEST(test_redis_down_at_start_then_up)
{
    NEED_REDIS();
    server_t srv = {0};
    s_server_start(&srv);
    s_server_stop(&srv, SIGTERM); /* port and directory chosen, nothing listens */
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    msg_t *h = s_health();
    ck_assert_int_eq(h->health.ok, 0);
    msg_destroy(&h);
    char id[UUID_STR_LEN];
    s_new_id(id);
    s_cancel_eagain(id);

    s_server_start(&srv);
    msg_t *ev = s_expect_event(NULL, 0);
    msg_destroy(&ev);
    redisContext *c = s_sync(srv.port);
    s_wait_flag(c, id);
    s_wait_health(true);

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

START_TEST(test_connection_lost_mid_command_answers_eagain_once)
{
    NEED_REDIS();
    server_t srv = {0};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);

    redisContext *frozen = s_server_freeze(&srv, 60);
    char id[UUID_STR_LEN];
    s_new_id(id);
    uint64_t cancel = s_send_cancel(id, "immediate", 0);
    uint64_t flag = s_send_flag_get(id);
    /* the actor has sent both commands once it answers this */
    msg_t *m = msg_new(MSG_HEALTH_CHECK);
    uint64_t health = s_send(&m);
    msg_t *r = s_reply(health);
    ck_assert_int_eq(r->type, MSG_HEALTH);
    msg_destroy(&r);

    s_server_stop(&srv, SIGKILL);
    redisFree(frozen);
    r = s_reply(cancel);
    s_expect_error(r, -EAGAIN);
    msg_destroy(&r);
    r = s_reply(flag);
    s_expect_error(r, -EAGAIN);
    msg_destroy(&r);

    s_server_start(&srv);
    redisContext *c = s_sync(srv.port);
    s_wait_flag(c, id);
    s_wait_health(true);
    /* exactly once: no second answer to either request is waiting */
    r = mailbox_recv(s_test, 0);
    ck_assert_ptr_null(r);

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

START_TEST(test_unanswered_commands_time_out)
{
    NEED_REDIS();
    server_t srv = {0};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);

    /* Redis alive but silent: the watchdog gives up on the connection
     * (about 5 s) and the request is answered, the cancel kept */
    redisContext *frozen = s_server_freeze(&srv, 120);
    char id[UUID_STR_LEN];
    s_new_id(id);
    msg_t *r = s_cancel(id, "immediate", 0);
    s_expect_error(r, -EAGAIN);
    ck_assert_msg(strstr(r->error.reason, "lost"), "reason: %s", r->error.reason);
    msg_destroy(&r);
    /* a server that accepts connections but does not answer is not up */
    msg_t *h = s_health();
    ck_assert_msg(!h->health.ok, "detail: %s", h->health.detail);
    msg_destroy(&h);

    s_server_stop(&srv, SIGKILL);
    redisFree(frozen);
    s_server_start(&srv);
    redisContext *c = s_sync(srv.port);
    s_wait_flag(c, id);

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

START_TEST(test_large_backlog_is_written_on_return)
{
    NEED_REDIS();
    enum { N = 1000 }; /* several flush windows */
    server_t srv = {0};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);
    s_server_stop(&srv, SIGTERM);
    s_wait_health(false);

    static char ids[N][UUID_STR_LEN];
    static uint64_t corr[N];
    for (int i = 0; i < N; i++) {
        s_new_id(ids[i]);
        corr[i] = s_send_cancel(ids[i], i % 2 ? "immediate" : "after_current_image", 0);
    }
    for (int i = 0; i < N; i++) {
        msg_t *r = s_reply(corr[i]);
        s_expect_error(r, -EAGAIN);
        msg_destroy(&r);
    }

    s_server_start(&srv);
    redisContext *c = s_sync(srv.port);
    double end = fixture_now() + DEADLINE_S;
    while (s_calls(c, "publish") < N) {
        ck_assert_msg(fixture_now() < end, "only %ld of %d cancels written", s_calls(c, "publish"),
                      N);
        fixture_pause_ms(10);
    }
    for (int i = 0; i < N; i++)
        s_assert_flag(c, ids[i]);
    ck_assert_int_eq(s_calls(c, "set"), N);
    ck_assert_int_eq(s_calls(c, "publish"), N);
    msg_t *h = s_health();
    ck_assert_msg(!strstr(h->health.detail, "queued"), "detail: %s", h->health.detail);
    msg_destroy(&h);

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

/* Cancels stream in while Redis is killed and restarted under them: each
 * is answered exactly once (OK or -EAGAIN) and every flag ends up set. */
START_TEST(test_no_cancel_lost_across_restarts)
{
    NEED_REDIS();
    enum { BATCH = 100, BATCHES = 12 };
    server_t srv = {.persist = true};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);

    static char ids[BATCH * BATCHES][UUID_STR_LEN];
    int ok = 0, again = 0;
    for (int b = 0; b < BATCHES; b++) {
        uint64_t corr[BATCH];
        for (int i = 0; i < BATCH; i++) {
            s_new_id(ids[b * BATCH + i]);
            corr[i] = s_send_cancel(ids[b * BATCH + i], "immediate", 0);
        }
        if (b == 2 || b == 7) /* with requests in flight */
            s_server_stop(&srv, SIGKILL);
        if (b == 4 || b == 9)
            s_server_start(&srv);
        for (int i = 0; i < BATCH; i++) {
            msg_t *r = s_reply(corr[i]);
            if (r->type == MSG_OK) {
                ok++;
            } else {
                s_expect_error(r, -EAGAIN);
                again++;
            }
            msg_destroy(&r);
        }
    }
    ck_assert_int_eq(ok + again, BATCH * BATCHES);
    ck_assert_int_gt(again, 0);
    redisContext *c = s_sync(srv.port);
    for (int i = 0; i < BATCH * BATCHES; i++)
        s_wait_flag(c, ids[i]);
    /* nothing more was answered */
    ck_assert_ptr_null(mailbox_recv(s_test, 0));

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

START_TEST(test_queue_is_bounded)
{
    NEED_REDIS();
    server_t srv = {0};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 3);
    s_wait_health(true);
    s_server_stop(&srv, SIGTERM);
    s_wait_health(false);

    char ids[5][UUID_STR_LEN];
    for (int i = 0; i < 5; i++) {
        s_new_id(ids[i]);
        msg_t *r = s_cancel(ids[i], "immediate", 0);
        s_expect_error(r, -EAGAIN);
        ck_assert_msg(strstr(r->error.reason, i < 3 ? "queued" : "full"), "%d: %s", i,
                      r->error.reason);
        msg_destroy(&r);
    }
    msg_t *r = s_cancel(ids[0], "immediate", 0); /* already queued: still kept */
    s_expect_error(r, -EAGAIN);
    ck_assert_msg(strstr(r->error.reason, "queued"), "%s", r->error.reason);
    msg_destroy(&r);

    s_server_start(&srv);
    redisContext *c = s_sync(srv.port);
    for (int i = 0; i < 3; i++)
        s_wait_flag(c, ids[i]);
    s_wait_health(true);
    char extra[UUID_STR_LEN];
    s_new_id(extra);
    s_cancel_ok(extra, "immediate", 0);
    char v[64];
    s_get_flag(c, ids[3], v, sizeof v);
    ck_assert_str_eq(v, "");
    s_get_flag(c, ids[4], v, sizeof v);
    ck_assert_str_eq(v, "");
    ck_assert_int_eq(s_calls(c, "publish"), 4);

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

START_TEST(test_unix_socket)
{
    NEED_REDIS();
    server_t srv = {.unix_socket = true};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    ck_assert_int_eq(url[0], '/');
    actor_t *a = s_start(url, 0);
    s_wait_health(true);
    char id[UUID_STR_LEN];
    s_new_id(id);
    s_cancel_ok(id, "immediate", 0);
    redisContext *c = s_sync(srv.port);
    s_assert_flag(c, id);
    ck_assert_int_eq(s_flag(id), 1);

    /* down and back over the socket as well */
    s_server_stop(&srv, SIGTERM);
    s_wait_health(false);
    s_server_start(&srv);
    s_wait_health(true);

    redisFree(c);
    redis_destroy(&a);
    s_server_cleanup(&srv);
}
END_TEST

START_TEST(test_stop_answers_requests_in_flight)
{
    NEED_REDIS();
    server_t srv = {0};
    s_server_start(&srv);
    char url[160];
    s_server_url(&srv, url, sizeof url);
    actor_t *a = s_start(url, 0);
    s_wait_health(true);

    redisContext *frozen = s_server_freeze(&srv, 60);
    char id[UUID_STR_LEN];
    s_new_id(id);
    uint64_t cancel = s_send_cancel(id, "immediate", 0);
    uint64_t flag = s_send_flag_get(id);
    msg_t *m = msg_new(MSG_HEALTH_CHECK);
    msg_t *r = s_reply(s_send(&m));
    msg_destroy(&r);

    redis_destroy(&a);
    r = s_reply(cancel);
    s_expect_error(r, -EAGAIN);
    msg_destroy(&r);
    r = s_reply(flag);
    s_expect_error(r, -EAGAIN);
    msg_destroy(&r);
    ck_assert_ptr_null(mailbox_recv(s_test, 0));

    redisFree(frozen);
    s_server_cleanup(&srv);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("redis");
    TCase *tc = tcase_create("redis");
    tcase_add_checked_fixture(tc, s_setup, fixture_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_bad_config_fails_with_reason);
    tcase_add_test(tc, test_starts_while_redis_is_down_and_answers_eagain);
    tcase_add_test(tc, test_cancel_sets_flag_and_publishes);
    tcase_add_test(tc, test_cancel_event_publishes_without_a_flag);
    tcase_add_test(tc, test_work_wakeups_cross_redis);
    tcase_add_test(tc, test_remote_cancel_reaches_the_bus_own_is_skipped);
    tcase_add_test(tc, test_malformed_messages_are_dropped_and_the_actor_keeps_working);
    tcase_add_test(tc, test_flag_get);
    tcase_add_test(tc, test_subscriber_reconnects_and_asks_for_a_recheck);
    tcase_add_test(tc, test_outage_queues_cancels_and_writes_them_on_return);
    tcase_add_test(tc, test_redis_down_at_start_then_up);
    tcase_add_test(tc, test_connection_lost_mid_command_answers_eagain_once);
    tcase_add_test(tc, test_unanswered_commands_time_out);
    tcase_add_test(tc, test_large_backlog_is_written_on_return);
    tcase_add_test(tc, test_no_cancel_lost_across_restarts);
    tcase_add_test(tc, test_queue_is_bounded);
    tcase_add_test(tc, test_unix_socket);
    tcase_add_test(tc, test_stop_answers_requests_in_flight);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
