/*
 * runner.c - main() of the Check test programs: before, the suite, after
 * (see runner.h).
 */
#include "config.h"

#include "tests/runner.h"

#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    if (test_program.before) {
        int rc = test_program.before();
        fflush(stdout);
        if (rc == TEST_SKIP)
            return TEST_SKIP;
        if (rc != 0)
            return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(test_program.suite());
    /* CK_ENV: CK_VERBOSITY when set, else CK_NORMAL (the summary line only,
     * plus each failure) */
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (test_program.after)
        failed += test_program.after();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
