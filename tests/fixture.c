/*
 * fixture.c - shared test fixtures and helpers (see fixture.h).
 */
#include "config.h"

#include "tests/fixture.h"

#include "runtime/clock.h"
#include "runtime/log.h"
#include "tests/runner.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAILBOXES_MAX 8

runtime_t *fixture_rt;
static mailbox_t *s_mailboxes[MAILBOXES_MAX];
static int s_nmailboxes;

/* ------------------------------------------------------------ environment */

const char *fixture_env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int fixture_need_env(const char *what, const char *const *names)
{
    int missing = 0, n = 0;
    for (; names[n]; n++)
        missing |= !fixture_env(names[n]);
    if (!missing)
        return 0;
    printf("SKIP: %s need ", what);
    for (int i = 0; i < n; i++)
        printf("%s%s", names[i], i + 2 < n ? ", " : (i + 2 == n ? " and " : ""));
    printf(" (cmd/imagejobs-local test)\n");
    fflush(stdout);
    return TEST_SKIP;
}

const char *fixture_service(const char *name)
{
    const char *v = fixture_env(name);
    if (!v) {
        printf("SKIP: no %s\n", name);
        fflush(stdout);
    }
    return v;
}

/* ------------------------------------------------------------------ time */

double fixture_now(void)
{
    return (double)clock_mono_ns() / 1e9;
}

void fixture_pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ----------------------------------------------------- runtime, mailboxes */

void fixture_setup(void)
{
    log_set_level(LOG_WARN);
    fixture_rt = runtime_new();
    ck_assert_ptr_nonnull(fixture_rt);
    s_nmailboxes = 0;
}

void fixture_teardown(void)
{
    while (s_nmailboxes > 0)
        mailbox_destroy(&s_mailboxes[--s_nmailboxes]);
    runtime_destroy(&fixture_rt);
}

mailbox_t *fixture_mailbox(const char *name, const char *topic)
{
    ck_assert_int_lt(s_nmailboxes, MAILBOXES_MAX);
    mailbox_t *mb = mailbox_new(fixture_rt, name);
    ck_assert_msg(mb != NULL, "mailbox %s could not be made", name);
    if (topic)
        ck_assert_int_eq(mailbox_subscribe(mb, topic), 0);
    s_mailboxes[s_nmailboxes++] = mb;
    return mb;
}

/* -------------------------------------------------------------- messages */

msg_t *fixture_expect_any(mailbox_t *mb)
{
    msg_t *m = mailbox_recv(mb, FIXTURE_WAIT_MS);
    ck_assert_msg(m != NULL, "%s: nothing arrived within %d ms", mailbox_name(mb), FIXTURE_WAIT_MS);
    return m;
}

msg_t *fixture_expect(mailbox_t *mb, msg_type_t type)
{
    msg_t *m = mailbox_recv(mb, FIXTURE_WAIT_MS);
    ck_assert_msg(m != NULL, "%s: nothing arrived within %d ms; expected %s", mailbox_name(mb),
                  FIXTURE_WAIT_MS, msg_type_name(type));
    ck_assert_msg(m->type == type, "%s: got %s, expected %s", mailbox_name(mb),
                  msg_type_name(m->type), msg_type_name(type));
    return m;
}

void fixture_expect_none(mailbox_t *mb, int ms)
{
    msg_t *m = mailbox_recv(mb, ms);
    ck_assert_msg(m == NULL, "%s: unexpected %s", mailbox_name(mb),
                  m ? msg_type_name(m->type) : "");
}

void fixture_answer(mailbox_t *mb, const msg_t *request, msg_t **reply)
{
    (*reply)->corr = request->corr;
    (*reply)->flags |= MSG_FLAG_REPLY;
    ck_assert_int_eq(mailbox_send(mb, request->sender, *reply), 0);
    msg_destroy(reply);
}

msg_t *fixture_error(int64_t code, const char *reason)
{
    msg_t *m = msg_new(MSG_ERROR);
    m->error.code = code;
    msg_set_str(&m->error.reason, reason);
    return m;
}

char *fixture_tmpdir(const char *prefix)
{
    char path[256];
    snprintf(path, sizeof path, "/tmp/%s-XXXXXX", prefix);
    ck_assert_msg(mkdtemp(path) != NULL, "mkdtemp %s failed", path);
    char *dir = strdup(path);
    ck_assert_ptr_nonnull(dir);
    return dir;
}

void fixture_remove_tree(const char *dir)
{
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", "--", dir, (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}
