/*
 * check_options.c - runtime/options.c: a flag beats its environment
 * variable, which beats the default; a second variable is an alias read
 * when the first is unset or empty; one-letter aliases; --help; unknown
 * flags, missing values, stray arguments and out-of-range numbers are
 * refused with a message that names the option.
 */
#include "config.h"

#include "runtime/options.h"
#include "tests/runner.h"

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { O_LISTEN, O_DATABASE, O_COUNT, O_OUTPUT, O_FORCE, O_N };

#define ENV_LISTEN "IMAGEJOBS_OPTTEST_LISTEN"
#define ENV_DATABASE "IMAGEJOBS_OPTTEST_DATABASE"
#define ENV_DATABASE_ALT "IMAGEJOBS_OPTTEST_DATABASE_URL"
#define ENV_COUNT "IMAGEJOBS_OPTTEST_COUNT"

static const option_t s_opts[O_N] = {
    [O_LISTEN] = {"listen", ENV_LISTEN, NULL, "HOST:PORT", "127.0.0.1:8080", "where to listen"},
    [O_DATABASE] = {"database", ENV_DATABASE, ENV_DATABASE_ALT, "CONNINFO", "dbname=imagejobs",
                    "PostgreSQL"},
    [O_COUNT] = {"count", ENV_COUNT, NULL, "N", NULL, "how many (no default)"},
    [O_OUTPUT] = {"output", NULL, NULL, "FILE", NULL, "where to write", 'o'},
    [O_FORCE] = {"force", NULL, NULL, NULL, NULL, "a flag without a value", 'f'},
};

static const char *s_v[O_N];
static char s_err[256];

static void s_setup(void)
{
    unsetenv(ENV_LISTEN);
    unsetenv(ENV_DATABASE);
    unsetenv(ENV_DATABASE_ALT);
    unsetenv(ENV_COUNT);
    memset(s_v, 0, sizeof s_v);
    s_err[0] = 0;
}

/* Parses the NULL-terminated arguments after the command name. */
static int s_parse(const char *first, ...)
{
    char *argv[32] = {"imagejobs-test"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *)) {
        ck_assert_int_lt(argc, 31);
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;
    return options_parse(s_opts, O_N, s_v, argc, argv, "usage: imagejobs-test [options]", s_err,
                         sizeof s_err);
}

START_TEST(test_defaults_without_flags_or_variables)
{
    ck_assert_int_eq(s_parse(NULL), 0);
    ck_assert_str_eq(s_v[O_LISTEN], "127.0.0.1:8080");
    ck_assert_str_eq(s_v[O_DATABASE], "dbname=imagejobs");
    ck_assert_ptr_null(s_v[O_COUNT]);
    ck_assert_ptr_null(s_v[O_OUTPUT]);
}
END_TEST

START_TEST(test_variable_beats_default_flag_beats_variable)
{
    setenv(ENV_LISTEN, "0.0.0.0:9000", 1);
    ck_assert_int_eq(s_parse(NULL), 0);
    ck_assert_str_eq(s_v[O_LISTEN], "0.0.0.0:9000");
    ck_assert_int_eq(s_parse("--listen", "127.0.0.1:1", NULL), 0);
    ck_assert_str_eq(s_v[O_LISTEN], "127.0.0.1:1");
    ck_assert_int_eq(s_parse("--listen=127.0.0.1:2", NULL), 0);
    ck_assert_str_eq(s_v[O_LISTEN], "127.0.0.1:2");
    /* the last of a repeated flag wins */
    ck_assert_int_eq(s_parse("--listen", "a:1", "--listen", "b:2", NULL), 0);
    ck_assert_str_eq(s_v[O_LISTEN], "b:2");
}
END_TEST

START_TEST(test_empty_variable_means_unset)
{
    setenv(ENV_LISTEN, "", 1);
    ck_assert_int_eq(s_parse(NULL), 0);
    ck_assert_str_eq(s_v[O_LISTEN], "127.0.0.1:8080");
}
END_TEST

START_TEST(test_second_variable_is_an_alias)
{
    setenv(ENV_DATABASE_ALT, "postgresql://alt/db", 1);
    ck_assert_int_eq(s_parse(NULL), 0);
    ck_assert_str_eq(s_v[O_DATABASE], "postgresql://alt/db");
    setenv(ENV_DATABASE, "", 1); /* empty: the alias still counts */
    ck_assert_int_eq(s_parse(NULL), 0);
    ck_assert_str_eq(s_v[O_DATABASE], "postgresql://alt/db");
    setenv(ENV_DATABASE, "dbname=primary", 1); /* the first variable wins */
    ck_assert_int_eq(s_parse(NULL), 0);
    ck_assert_str_eq(s_v[O_DATABASE], "dbname=primary");
    ck_assert_int_eq(s_parse("--database", "dbname=flag", NULL), 0);
    ck_assert_str_eq(s_v[O_DATABASE], "dbname=flag");
}
END_TEST

START_TEST(test_one_letter_alias)
{
    ck_assert_int_eq(s_parse("-o", "a.png", NULL), 0);
    ck_assert_str_eq(s_v[O_OUTPUT], "a.png");
    ck_assert_int_eq(s_parse("-ob.png", NULL), 0);
    ck_assert_str_eq(s_v[O_OUTPUT], "b.png");
    ck_assert_int_eq(s_parse("--output", "c.png", "--count", "3", NULL), 0);
    ck_assert_str_eq(s_v[O_OUTPUT], "c.png");
    ck_assert_str_eq(s_v[O_COUNT], "3");
}
END_TEST

START_TEST(test_a_flag_without_a_value_reads_1_when_given)
{
    s_setup();
    ck_assert_int_eq(s_parse("--listen", "x:1", NULL), 0);
    ck_assert_ptr_null(s_v[O_FORCE]);
    s_setup();
    ck_assert_int_eq(s_parse("--force", "--listen", "x:1", NULL), 0);
    ck_assert_str_eq(s_v[O_FORCE], "1");
    ck_assert_str_eq(s_v[O_LISTEN], "x:1"); /* it took no value from the next argument */
    s_setup();
    ck_assert_int_eq(s_parse("-f", "-o", "out.png", NULL), 0);
    ck_assert_str_eq(s_v[O_FORCE], "1");
    ck_assert_str_eq(s_v[O_OUTPUT], "out.png");
    s_setup();
    ck_assert_int_eq(s_parse("--force=yes", NULL), -1);
    ck_assert_ptr_nonnull(strstr(s_err, "--force"));
}
END_TEST

START_TEST(test_unknown_flag_is_refused_by_name)
{
    ck_assert_int_eq(s_parse("--listen", "x:1", "--no-such-flag", NULL), -1);
    ck_assert_msg(strstr(s_err, "--no-such-flag") != NULL, "message: %s", s_err);
    ck_assert_int_eq(s_parse("-z", NULL), -1);
    ck_assert_msg(strstr(s_err, "-z") != NULL, "message: %s", s_err);
}
END_TEST

START_TEST(test_missing_value_is_refused)
{
    ck_assert_int_eq(s_parse("--listen", NULL), -1);
    ck_assert_str_eq(s_err, "option --listen needs a value");
    ck_assert_int_eq(s_parse("-o", NULL), -1);
    ck_assert_str_eq(s_err, "option -o needs a value");
}
END_TEST

START_TEST(test_stray_argument_is_refused)
{
    ck_assert_int_eq(s_parse("--count", "2", "extra", NULL), -1);
    ck_assert_msg(strstr(s_err, "'extra'") != NULL, "message: %s", s_err);
    /* a refused parse leaves nothing behind: the next one starts afresh */
    ck_assert_int_eq(s_parse("--count", "4", NULL), 0);
    ck_assert_str_eq(s_v[O_COUNT], "4");
}
END_TEST

START_TEST(test_help_lists_flags_variables_and_defaults)
{
    /* --help prints the usage on stdout (into this test's log) */
    ck_assert_int_eq(s_parse("--count", "1", "--help", NULL), 1);

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    options_usage(f, "usage: imagejobs-test [options]", s_opts, O_N);
    fclose(f);
    static const char *const want[] = {
        "usage: imagejobs-test [options]",
        "--listen HOST:PORT",
        "[" ENV_LISTEN "]",
        "(default: 127.0.0.1:8080)",
        "[" ENV_DATABASE ", " ENV_DATABASE_ALT "]",
        "-o, --output FILE",
        "--help",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        ck_assert_msg(strstr(text, want[i]) != NULL, "no \"%s\" in:\n%s", want[i], text);
    free(text);
}
END_TEST

START_TEST(test_numbers_in_range_only)
{
    long v = -1;
    ck_assert_int_eq(options_long("count", "42", 1, 100, &v, s_err, sizeof s_err), 0);
    ck_assert_int_eq(v, 42);
    ck_assert_int_eq(options_long("count", "1", 1, 100, &v, s_err, sizeof s_err), 0);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(options_long("count", "100", 1, 100, &v, s_err, sizeof s_err), 0);
    ck_assert_int_eq(v, 100);
    ck_assert_int_eq(options_long("offset", "-5", -10, 10, &v, s_err, sizeof s_err), 0);
    ck_assert_int_eq(v, -5);

    static const char *const bad[] = {"0",   "101", "4x",   "",
                                      "abc", "1.5", "0x10", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        v = 7;
        s_err[0] = 0;
        ck_assert_msg(options_long("count", bad[i], 1, 100, &v, s_err, sizeof s_err) == -1,
                      "accepted '%s'", bad[i]);
        ck_assert_int_eq(v, 7); /* untouched */
        char want[128];
        snprintf(want, sizeof want, "--count must be an integer from 1 to 100, not '%s'", bad[i]);
        ck_assert_str_eq(s_err, want);
    }
    ck_assert_int_eq(options_long("count", NULL, 1, 100, &v, s_err, sizeof s_err), -1);
    ck_assert_msg(strstr(s_err, "--count") != NULL, "message: %s", s_err);
}
END_TEST

START_TEST(test_bad_value_from_a_variable_is_refused_by_flag_name)
{
    setenv(ENV_COUNT, "lots", 1);
    ck_assert_int_eq(s_parse(NULL), 0); /* values stay strings until converted */
    ck_assert_str_eq(s_v[O_COUNT], "lots");
    long v;
    ck_assert_int_eq(options_long("count", s_v[O_COUNT], 1, 100, &v, s_err, sizeof s_err), -1);
    ck_assert_msg(strstr(s_err, "--count") && strstr(s_err, "'lots'"), "message: %s", s_err);
}
END_TEST

/* A flag takes no value: given, it reads "1"; its variable may say "0",
 * "false" or "no". Seconds are decimal. */
START_TEST(test_flags_and_seconds)
{
    static const option_t opts[] = {
        {"allow", "IMAGEJOBS_OPTTEST_ALLOW", NULL, NULL, NULL, "a flag"},
        {"wait", NULL, NULL, "SECONDS", "10", "a time"},
    };
    const char *v[2];
    char *argv[] = {"t", "--allow", "--wait", "0.25", NULL};
    unsetenv("IMAGEJOBS_OPTTEST_ALLOW");
    ck_assert_int_eq(options_parse(opts, 2, v, 4, argv, "usage", s_err, sizeof s_err), 0);
    ck_assert(options_flag(v[0]));
    double d;
    ck_assert_int_eq(options_seconds("wait", v[1], 0.01, 60, &d, s_err, sizeof s_err), 0);
    ck_assert(d == 0.25);
    char *plain[] = {"t", NULL};
    ck_assert_int_eq(options_parse(opts, 2, v, 1, plain, "usage", s_err, sizeof s_err), 0);
    ck_assert(!options_flag(v[0]));
    setenv("IMAGEJOBS_OPTTEST_ALLOW", "false", 1);
    ck_assert_int_eq(options_parse(opts, 2, v, 1, plain, "usage", s_err, sizeof s_err), 0);
    ck_assert(!options_flag(v[0]));
    setenv("IMAGEJOBS_OPTTEST_ALLOW", "1", 1);
    ck_assert_int_eq(options_parse(opts, 2, v, 1, plain, "usage", s_err, sizeof s_err), 0);
    ck_assert(options_flag(v[0]));
    unsetenv("IMAGEJOBS_OPTTEST_ALLOW");
    char *valued[] = {"t", "--allow=yes", NULL};
    ck_assert_int_eq(options_parse(opts, 2, v, 2, valued, "usage", s_err, sizeof s_err), -1);
    static const char *const bad[] = {"", "x", "0.001", "61", "1s", "nan"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(options_seconds("wait", bad[i], 0.01, 60, &d, s_err, sizeof s_err), -1);
        ck_assert_ptr_nonnull(strstr(s_err, "--wait"));
    }
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("options");
    TCase *tc = tcase_create("options");
    tcase_add_checked_fixture(tc, s_setup, NULL);
    tcase_add_test(tc, test_defaults_without_flags_or_variables);
    tcase_add_test(tc, test_variable_beats_default_flag_beats_variable);
    tcase_add_test(tc, test_empty_variable_means_unset);
    tcase_add_test(tc, test_second_variable_is_an_alias);
    tcase_add_test(tc, test_one_letter_alias);
    tcase_add_test(tc, test_a_flag_without_a_value_reads_1_when_given);
    tcase_add_test(tc, test_unknown_flag_is_refused_by_name);
    tcase_add_test(tc, test_missing_value_is_refused);
    tcase_add_test(tc, test_stray_argument_is_refused);
    tcase_add_test(tc, test_help_lists_flags_variables_and_defaults);
    tcase_add_test(tc, test_numbers_in_range_only);
    tcase_add_test(tc, test_bad_value_from_a_variable_is_refused_by_flag_name);
    tcase_add_test(tc, test_flags_and_seconds);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
