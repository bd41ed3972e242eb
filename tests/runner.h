/*
 * runner.h - the one main() of every Check test program (tests/runner.c).
 *
 * A test program defines `test_program` (its suite and optional hooks) and
 * links tests/libtestsupport.a, whose runner.c holds main(). The runner
 * prints Check's summary line, "100%: Checks: 8, Failures: 0, Errors: 0",
 * on stdout: automake's harness keeps it in tests/<name>.log, where
 * cmd/imagejobs-local and CI read it. Exit status: 0 when every check
 * passed, 77 (automake's "skipped") when `before` skipped the program,
 * 1 otherwise.
 *
 * Check's own environment variables work: CK_VERBOSITY=verbose lists each
 * test, CK_RUN_SUITE / CK_RUN_CASE / CK_INCLUDE_TAGS pick some, CK_FORK=no
 * runs them in one process (for a debugger).
 */
#ifndef IMAGEJOBS_TESTS_RUNNER_H
#define IMAGEJOBS_TESTS_RUNNER_H

#include <check.h>

/* automake's exit status for "skipped" */
#define TEST_SKIP 77

typedef struct {
    /* The program's suite (required). */
    Suite *(*suite)(void);
    /* Runs once in the runner's process, before the suite (and so before
     * Check forks the tests): start a server every test shares, create a
     * database. 0 runs the suite; TEST_SKIP skips the whole program (print
     * why first: fixture_need_env does); anything else fails it. NULL: none. */
    int (*before)(void);
    /* Runs once after the suite, whatever its outcome: stop and check what
     * before started. Returns how many further failures it found (0: none).
     * NULL: none. */
    int (*after)(void);
} test_program_t;

/* Defined by each test program. */
extern const test_program_t test_program;

#endif
