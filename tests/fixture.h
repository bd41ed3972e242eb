/*
 * fixture.h - what the Check tests share: reading the IMAGEJOBS_TEST_*
 * environment and skipping when a service is absent, a runtime and
 * mailboxes for the test thread, and talking to actors from those
 * mailboxes. In tests/libtestsupport.a with the runner.
 *
 * Everything that fails does so with a Check assertion, so these are for
 * test bodies and checked fixtures (which run in the forked test process),
 * except the environment functions, which are also for runner hooks.
 */
#ifndef IMAGEJOBS_TESTS_FIXTURE_H
#define IMAGEJOBS_TESTS_FIXTURE_H

#include "messages/message.h"
#include "runtime/mailbox.h"
#include "runtime/runtime.h"

#include <stdbool.h>
#include <stdint.h>

/* How long a test waits for a message it expects: generous, for sanitizer
 * builds on two busy cores. A message that never comes fails the test when
 * this runs out; nothing asserts how fast it came. */
#define FIXTURE_WAIT_MS 60000

/* ------------------------------------------------------------ environment */

/* The value of environment variable name, or NULL when unset or empty. */
const char *fixture_env(const char *name);

/* For a runner `before` hook: 0 when every variable of the NULL-terminated
 * names is set; otherwise prints "SKIP: <what> need A, B and C
 * (cmd/imagejobs-local test)" and returns TEST_SKIP. */
int fixture_need_env(const char *what, const char *const *names);

/* For one test that needs a service: the value of name, or NULL after
 * printing "SKIP: no <name>" (the test then returns and passes). */
const char *fixture_service(const char *name);

/* ------------------------------------------------------------------ time */

/* Monotonic seconds, for a test's deadlines. */
double fixture_now(void);

/* The poll interval of a test that waits, with a deadline, for a condition
 * it can only observe by asking again (a row, a key, a process state):
 * never a stand-in for an event the test could wait on. */
void fixture_pause_ms(int ms);

/* ----------------------------------------------------- runtime, mailboxes */

/* Removes the directory dir and all it holds (rm -rf; a private server's
 * data directory). Missing is fine. */
void fixture_remove_tree(const char *dir);

/* A new empty directory /tmp/<prefix>-XXXXXX (mkdtemp), malloc'd; fails the
 * test when it cannot be made. The caller removes it (fixture_remove_tree)
 * and frees the name. */
char *fixture_tmpdir(const char *prefix);

/* The runtime of the running test, or NULL outside fixture_setup/_teardown. */
extern runtime_t *fixture_rt;

/* Checked-fixture halves: a fresh runtime per test (log level warn), built
 * after Check's fork; the teardown destroys every mailbox fixture_mailbox
 * made, in reverse order, then the runtime (whose zmq_ctx_term returns only
 * when every socket of every actor is closed). */
void fixture_setup(void);
void fixture_teardown(void);

/* A mailbox of the test thread in fixture_rt, subscribed to topic unless
 * it is NULL. Owned by the fixture: fixture_teardown destroys it. */
mailbox_t *fixture_mailbox(const char *name, const char *topic);

/* -------------------------------------------------------------- messages */

/* The next message to mb (caller owns), which must be of type `type`. */
msg_t *fixture_expect(mailbox_t *mb, msg_type_t type);

/* The next message to mb (caller owns), of any type. */
msg_t *fixture_expect_any(mailbox_t *mb);

/* Fails if anything arrives at mb within ms milliseconds. */
void fixture_expect_none(mailbox_t *mb, int ms);

/* Answers request (borrowed) from mb with reply (consumed, NULLed), as
 * actor_reply() does: its correlation id, the reply flag. */
void fixture_answer(mailbox_t *mb, const msg_t *request, msg_t **reply);

/* A MSG_ERROR with code (a negative errno) and reason (caller owns). */
msg_t *fixture_error(int64_t code, const char *reason);

#endif
