/*
 * check_uuid.c - runtime/uuid.c: v4 UUIDs are canonical lowercase text with
 * the version and variant bits set and never repeat; uuid_valid accepts
 * exactly the canonical 8-4-4-4-12 form.
 */
#include "config.h"

#include "runtime/uuid.h"
#include "tests/runner.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MANY 100000

typedef char uuid_text_t[UUID_STR_LEN];

static void s_assert_v4(const char *u)
{
    ck_assert_uint_eq(strlen(u), 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            ck_assert_msg(u[i] == '-', "%s: no dash at %d", u, i);
        else
            ck_assert_msg(strchr("0123456789abcdef", u[i]) && u[i],
                          "%s: '%c' at %d is not lowercase hex", u, u[i], i);
    }
    ck_assert_msg(u[14] == '4', "%s: version %c, not 4", u, u[14]);
    ck_assert_msg(strchr("89ab", u[19]) != NULL, "%s: variant %c, not RFC 4122", u, u[19]);
}

START_TEST(test_format_version_and_variant)
{
    for (int i = 0; i < 1000; i++) {
        char u[UUID_STR_LEN];
        memset(u, 'x', sizeof u);
        ck_assert_int_eq(uuid_v4(u), 0);
        ck_assert_int_eq(u[36], '\0');
        s_assert_v4(u);
        ck_assert(uuid_valid(u));
    }
}
END_TEST

static int s_cmp(const void *a, const void *b)
{
    return memcmp(a, b, UUID_STR_LEN);
}

START_TEST(test_unique_over_many)
{
    uuid_text_t *all = malloc(MANY * sizeof *all);
    ck_assert_ptr_nonnull(all);
    for (int i = 0; i < MANY; i++)
        ck_assert_int_eq(uuid_v4(all[i]), 0);
    qsort(all, MANY, sizeof *all, s_cmp);
    for (int i = 1; i < MANY; i++)
        ck_assert_msg(memcmp(all[i - 1], all[i], UUID_STR_LEN) != 0, "%s twice", all[i]);
    /* the random bits are random: every hex digit shows up at a random
     * position (a stuck position would give one digit) */
    int seen[16] = {0};
    for (int i = 0; i < MANY; i++) {
        char c = all[i][0];
        seen[c <= '9' ? c - '0' : c - 'a' + 10] = 1;
    }
    for (int d = 0; d < 16; d++)
        ck_assert_msg(seen[d], "digit %x never came first", d);
    free(all);
}
END_TEST

START_TEST(test_valid_accepts_the_canonical_form)
{
    ck_assert(uuid_valid("550e8400-e29b-41d4-a716-446655440000"));
    ck_assert(uuid_valid("550E8400-E29B-41D4-A716-446655440000")); /* any case */
    ck_assert(uuid_valid("00000000-0000-0000-0000-000000000000")); /* any version */
    ck_assert(uuid_valid("6ba7b810-9dad-11d1-80b4-00c04fd430c8")); /* v1 */
}
END_TEST

START_TEST(test_valid_rejects_everything_else)
{
    static const char *const bad[] = {
        "",
        "550e8400-e29b-41d4-a716-44665544000",   /* 35 characters */
        "550e8400-e29b-41d4-a716-4466554400000", /* 37 */
        "550e8400e29b-41d4-a716-4466554400000",  /* dash missing */
        "550e8400-e29b-41d4-a7164-46655440000",  /* dash moved */
        "550e8400-e29b-41d4-a716-44665544000g",  /* not hex */
        "550e8400-e29b-41d4-a716-44665544000 ",
        " 50e8400-e29b-41d4-a716-446655440000",
        "{50e8400-e29b-41d4-a716-446655440000}",
        "550e8400_e29b_41d4_a716_446655440000",
        "550e8400-e29b-41d4-a716-4466554400\xc3\xa9",
        "../../../../../../../../../etc/passw",
        "550e8400-e29b-41d4-a716-446655440000\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(!uuid_valid(bad[i]), "accepted \"%s\"", bad[i]);
    ck_assert(!uuid_valid(NULL));
}
END_TEST

START_TEST(test_list_membership_is_by_whole_id)
{
    const char *a = "0b8a8c3e-6a43-4e53-9d6c-2f1d7e8e2a10",
               *b = "1b8a8c3e-6a43-4e53-9d6c-2f1d7e8e2a11";
    char list[200];
    snprintf(list, sizeof list, "%s,%s", a, b);
    ck_assert(uuid_list_has(list, a));
    ck_assert(uuid_list_has(list, b));
    ck_assert(uuid_list_has(a, a));
    ck_assert(!uuid_list_has(list, "0b8a8c3e-6a43-4e53-9d6c-2f1d7e8e2a1")); /* a prefix */
    ck_assert(!uuid_list_has(list, "b8a8c3e-6a43-4e53-9d6c-2f1d7e8e2a10")); /* a suffix */
    ck_assert(!uuid_list_has(list, "2b8a8c3e-6a43-4e53-9d6c-2f1d7e8e2a12"));
    ck_assert(!uuid_list_has(NULL, a));
    ck_assert(!uuid_list_has(list, ""));
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("uuid");
    TCase *tc = tcase_create("uuid");
    tcase_add_test(tc, test_format_version_and_variant);
    tcase_add_test(tc, test_list_membership_is_by_whole_id);
    tcase_add_test(tc, test_unique_over_many);
    tcase_add_test(tc, test_valid_accepts_the_canonical_form);
    tcase_add_test(tc, test_valid_rejects_everything_else);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
