/*
 * check_token.c - runtime/token.c: a token's shape and randomness, SHA-256
 * against the standard's test vectors, the hex of a hash, and the
 * constant-time comparison's answers.
 */
#include "config.h"

#include "runtime/token.h"
#include "tests/runner.h"

#include <check.h>
#include <stdio.h>
#include <string.h>

static void s_hex(const uint8_t h[TOKEN_HASH_LEN], char out[2 * TOKEN_HASH_LEN + 1])
{
    for (size_t i = 0; i < TOKEN_HASH_LEN; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

START_TEST(test_tokens_have_the_prefix_64_hex_digits_and_differ)
{
    char a[TOKEN_STR_LEN], b[TOKEN_STR_LEN];
    ck_assert_int_eq(token_new(a), 0);
    ck_assert_int_eq(token_new(b), 0);
    ck_assert_uint_eq(strlen(a), 3 + 64);
    ck_assert(strncmp(a, "ij_", 3) == 0);
    ck_assert(token_well_formed(a));
    ck_assert_str_ne(a, b);
    /* the shape check refuses what is not one */
    ck_assert(!token_well_formed(NULL));
    ck_assert(!token_well_formed(""));
    ck_assert(!token_well_formed(a + 3));
    char c[TOKEN_STR_LEN + 1];
    snprintf(c, sizeof c, "%sa", a);
    ck_assert(!token_well_formed(c));
    snprintf(c, sizeof c, "%s", a);
    c[10] = 'g';
    ck_assert(!token_well_formed(c));
    c[10] = 'A'; /* hex in either case is still hex */
    ck_assert(token_well_formed(c));
}
END_TEST

START_TEST(test_sha256_gives_the_standards_vectors)
{
    uint8_t h[TOKEN_HASH_LEN];
    char hex[2 * TOKEN_HASH_LEN + 1];
    token_hash("abc", 3, h);
    s_hex(h, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    token_hash("", 0, h);
    s_hex(h, hex);
    ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
END_TEST

START_TEST(test_hashes_round_trip_through_hex_and_compare)
{
    uint8_t h[TOKEN_HASH_LEN], back[TOKEN_HASH_LEN];
    char hex[2 * TOKEN_HASH_LEN + 1];
    token_hash("ij_example", 10, h);
    s_hex(h, hex);
    ck_assert_int_eq(token_hash_from_hex(hex, back), 0);
    ck_assert(token_hash_equal(h, back));
    back[TOKEN_HASH_LEN - 1] ^= 1; /* the last byte counts too */
    ck_assert(!token_hash_equal(h, back));
    back[TOKEN_HASH_LEN - 1] ^= 1;
    back[0] ^= 0x80;
    ck_assert(!token_hash_equal(h, back));
    ck_assert_int_eq(token_hash_from_hex("abc", back), -1);
    hex[5] = 'z';
    ck_assert_int_eq(token_hash_from_hex(hex, back), -1);
    ck_assert_int_eq(token_hash_from_hex(NULL, back), -1);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("token");
    TCase *tc = tcase_create("token");
    tcase_add_test(tc, test_tokens_have_the_prefix_64_hex_digits_and_differ);
    tcase_add_test(tc, test_sha256_gives_the_standards_vectors);
    tcase_add_test(tc, test_hashes_round_trip_through_hex_and_compare);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
