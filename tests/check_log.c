/*
 * check_log.c - runtime/log.c: lines below the level are dropped; each line
 * is "<UTC time to the microsecond>Z <LEVEL> [<thread name>] <text>" and
 * one write(2); the thread name is per thread ("main" until set); an
 * over-long line is cut, never split.
 *
 * The tests point file descriptor 2 at a temporary file while they log and
 * read the lines back from it.
 */
#include "config.h"

#include "runtime/log.h"
#include "tests/runner.h"

#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static FILE *s_capture;
static int s_saved_stderr = -1;

/* From here on, log lines go to a temporary file. */
static void s_capture_start(void)
{
    fflush(stderr);
    s_capture = tmpfile();
    ck_assert_ptr_nonnull(s_capture);
    s_saved_stderr = dup(STDERR_FILENO);
    ck_assert_int_ge(s_saved_stderr, 0);
    ck_assert_int_ge(dup2(fileno(s_capture), STDERR_FILENO), 0);
}

/* Restores stderr; returns what was logged (caller frees). */
static char *s_capture_end(void)
{
    dup2(s_saved_stderr, STDERR_FILENO);
    close(s_saved_stderr);
    s_saved_stderr = -1;
    long n = ftell(s_capture);
    ck_assert_int_ge(n, 0);
    char *text = calloc(1, (size_t)n + 1);
    rewind(s_capture);
    ck_assert_uint_eq(fread(text, 1, (size_t)n, s_capture), (size_t)n);
    fclose(s_capture);
    s_capture = NULL;
    return text;
}

static int s_count_lines(const char *text)
{
    int n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

static void s_assert_matches(const char *text, const char *pattern)
{
    regex_t re;
    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NEWLINE | REG_NOSUB), 0);
    int rc = regexec(&re, text, 0, NULL, 0);
    regfree(&re);
    ck_assert_msg(rc == 0, "no line matches /%s/ in:\n%s", pattern, text);
}

static void s_setup(void)
{
    log_set_level(LOG_INFO);
    log_set_thread_name(NULL);
}

START_TEST(test_line_format)
{
    s_capture_start();
    log_info("schema at version %d", 1);
    log_warn("redis down: %s", "connection refused");
    log_error("giving up");
    char *text = s_capture_end();
    ck_assert_int_eq(s_count_lines(text), 3);
    static const char *const stamp = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                                     "\\.[0-9]{6}Z ";
    char pattern[256];
    snprintf(pattern, sizeof pattern, "%sINFO  \\[main\\] schema at version 1$", stamp);
    s_assert_matches(text, pattern);
    snprintf(pattern, sizeof pattern, "%sWARN  \\[main\\] redis down: connection refused$", stamp);
    s_assert_matches(text, pattern);
    snprintf(pattern, sizeof pattern, "%sERROR \\[main\\] giving up$", stamp);
    s_assert_matches(text, pattern);
    free(text);
}
END_TEST

START_TEST(test_level_filters)
{
    s_capture_start();
    log_debug("d1"); /* the default level is info */
    log_info("i1");
    log_set_level(LOG_WARN);
    log_info("i2");
    log_warn("w2");
    log_error("e2");
    log_set_level(LOG_ERROR);
    log_warn("w3");
    log_error("e3");
    log_set_level(LOG_DEBUG);
    log_debug("d4");
    char *text = s_capture_end();
    ck_assert_int_eq(s_count_lines(text), 5);
    s_assert_matches(text, "INFO  \\[main\\] i1$");
    s_assert_matches(text, "WARN  \\[main\\] w2$");
    s_assert_matches(text, "ERROR \\[main\\] e2$");
    s_assert_matches(text, "ERROR \\[main\\] e3$");
    s_assert_matches(text, "DEBUG \\[main\\] d4$");
    ck_assert_ptr_null(strstr(text, "d1"));
    ck_assert_ptr_null(strstr(text, "i2"));
    ck_assert_ptr_null(strstr(text, "w3"));
    free(text);
}
END_TEST

START_TEST(test_level_names_parse)
{
    log_level_t l = LOG_ERROR;
    ck_assert_int_eq(log_level_parse("debug", &l), 0);
    ck_assert_int_eq(l, LOG_DEBUG);
    ck_assert_int_eq(log_level_parse("INFO", &l), 0);
    ck_assert_int_eq(l, LOG_INFO);
    ck_assert_int_eq(log_level_parse("Warn", &l), 0);
    ck_assert_int_eq(l, LOG_WARN);
    ck_assert_int_eq(log_level_parse("error", &l), 0);
    ck_assert_int_eq(l, LOG_ERROR);
    ck_assert_int_eq(log_level_parse("verbose", &l), -1);
    ck_assert_int_eq(log_level_parse("", &l), -1);
    ck_assert_int_eq(log_level_parse("warning", &l), -1);
    ck_assert_int_eq(l, LOG_ERROR); /* untouched by a refusal */
}
END_TEST

static void *s_named_thread(void *arg)
{
    ck_assert_str_eq(log_thread_name(), "main"); /* not inherited */
    log_set_thread_name(arg);
    log_info("from the thread");
    return NULL;
}

START_TEST(test_thread_name_per_thread)
{
    ck_assert_str_eq(log_thread_name(), "main");
    s_capture_start();
    log_set_thread_name("store");
    log_info("from the test thread");
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, s_named_thread, "generator-3"), 0);
    pthread_join(t, NULL);
    log_info("still the test thread");
    log_set_thread_name(NULL);
    log_info("back to main");
    char *text = s_capture_end();
    ck_assert_int_eq(s_count_lines(text), 4);
    s_assert_matches(text, "INFO  \\[store\\] from the test thread$");
    s_assert_matches(text, "INFO  \\[generator-3\\] from the thread$");
    s_assert_matches(text, "INFO  \\[store\\] still the test thread$");
    s_assert_matches(text, "INFO  \\[main\\] back to main$");
    free(text);
    /* a long name is cut to fit, never overflows */
    char name[100];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = 0;
    log_set_thread_name(name);
    ck_assert_uint_lt(strlen(log_thread_name()), 32);
    ck_assert_uint_gt(strlen(log_thread_name()), 0);
}
END_TEST

START_TEST(test_json_lines_parse_with_their_fields)
{
    log_set_format(LOG_JSON);
    log_set_instance("web-1");
    log_set_thread_name("generator-0");
    s_capture_start();
    log_info("cancel of 0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9/3 observed at step %d", 7);
    log_warn("job 0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9 \"quoted\"\tand\\slashes");
    log_error("no job here; bytes \xff\xfe are not UTF-8");
    log_debug("dropped at the info level");
    char *text = s_capture_end();
    log_set_format(LOG_TEXT);
    log_set_instance(NULL);
    log_set_thread_name(NULL);
    ck_assert_int_eq(s_count_lines(text), 3);
    json_t *lines[3];
    char *save = NULL;
    char *line = strtok_r(text, "\n", &save);
    for (int i = 0; i < 3; i++, line = strtok_r(NULL, "\n", &save)) {
        ck_assert_ptr_nonnull(line);
        json_error_t e;
        lines[i] = json_loads(line, 0, &e);
        ck_assert_msg(json_is_object(lines[i]), "not JSON: %s (%s)", line, e.text);
        ck_assert_str_eq(json_string_value(json_object_get(lines[i], "actor")), "generator-0");
        ck_assert_str_eq(json_string_value(json_object_get(lines[i], "instance")), "web-1");
        ck_assert_uint_eq(strlen(json_string_value(json_object_get(lines[i], "time"))), 27);
    }
    ck_assert_str_eq(json_string_value(json_object_get(lines[0], "level")), "info");
    ck_assert_str_eq(json_string_value(json_object_get(lines[0], "msg")),
                     "cancel of 0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9/3 observed at step 7");
    ck_assert_str_eq(json_string_value(json_object_get(lines[0], "job_id")),
                     "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9");
    ck_assert_int_eq(json_integer_value(json_object_get(lines[0], "combination")), 3);
    ck_assert_str_eq(json_string_value(json_object_get(lines[1], "level")), "warn");
    ck_assert_str_eq(json_string_value(json_object_get(lines[1], "msg")),
                     "job 0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9 \"quoted\"\tand\\slashes");
    ck_assert_ptr_null(json_object_get(lines[1], "combination"));
    ck_assert_ptr_null(json_object_get(lines[2], "job_id"));
    ck_assert_str_eq(json_string_value(json_object_get(lines[2], "msg")),
                     "no job here; bytes ?? are not UTF-8");
    for (int i = 0; i < 3; i++)
        json_decref(lines[i]);
    free(text);
    log_format_t f;
    ck_assert_int_eq(log_format_parse("JSON", &f), 0);
    ck_assert_int_eq(f, LOG_JSON);
    ck_assert_int_eq(log_format_parse("text", &f), 0);
    ck_assert_int_eq(f, LOG_TEXT);
    ck_assert_int_eq(log_format_parse("xml", &f), -1);
}
END_TEST

START_TEST(test_long_line_is_cut_not_split)
{
    char *big = malloc(5000);
    memset(big, 'x', 4999);
    big[4999] = 0;
    s_capture_start();
    log_warn("%s", big);
    log_info("next");
    char *text = s_capture_end();
    ck_assert_int_eq(s_count_lines(text), 2);
    char *nl = strchr(text, '\n');
    ck_assert_uint_le((size_t)(nl - text) + 1, 2048);
    ck_assert_uint_gt((size_t)(nl - text), 2000);
    s_assert_matches(text, "INFO  \\[main\\] next$");
    free(text);
    free(big);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");
    tcase_add_checked_fixture(tc, s_setup, NULL);
    tcase_add_test(tc, test_line_format);
    tcase_add_test(tc, test_level_filters);
    tcase_add_test(tc, test_level_names_parse);
    tcase_add_test(tc, test_thread_name_per_thread);
    tcase_add_test(tc, test_long_line_is_cut_not_split);
    tcase_add_test(tc, test_json_lines_parse_with_their_fields);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
