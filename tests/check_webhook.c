/*
 * check_webhook.c - the webhook actor's guard (actors/webhook/guard.c): the
 * URL check of the create, the address check of every connect (the SSRF
 * guard), and the signature against one computed by `openssl dgst`.
 */
#include "config.h"

#include "actors/webhook.h"
#include "tests/runner.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <string.h>

static bool s_allowed(const char *ip)
{
    struct sockaddr_storage ss = {0};
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        ck_assert_int_eq(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        ck_assert_int_eq(inet_pton(AF_INET, ip, &a->sin_addr), 1);
    }
    const char *why = NULL;
    bool ok = webhook_addr_allowed((struct sockaddr *)&ss, &why);
    ck_assert_ptr_nonnull(why);
    ck_assert(ok || *why);
    return ok;
}

START_TEST(test_private_addresses_are_refused)
{
    static const char *const refused[] = {"127.0.0.1",
                                          "127.255.0.9",
                                          "10.1.2.3",
                                          "172.16.0.1",
                                          "172.31.255.255",
                                          "192.168.1.1",
                                          "169.254.169.254",
                                          "100.64.0.1",
                                          "0.0.0.0",
                                          "224.0.0.1",
                                          "255.255.255.255",
                                          "::1",
                                          "::",
                                          "fe80::1",
                                          "fc00::1",
                                          "fd12:3456::1",
                                          "ff02::1",
                                          "::ffff:127.0.0.1",
                                          "::ffff:10.0.0.1",
                                          "::127.0.0.1",
                                          "64:ff9b::a9fe:a9fe",
                                          "fec0::1"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        ck_assert_msg(!s_allowed(refused[i]), "%s allowed", refused[i]);
    static const char *const allowed[] = {"93.184.216.34", "8.8.8.8",      "172.32.0.1",
                                          "100.128.0.1",   "2606:4700::1", "::ffff:8.8.8.8",
                                          "192.169.0.1"};
    for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++)
        ck_assert_msg(s_allowed(allowed[i]), "%s refused", allowed[i]);
}
END_TEST

START_TEST(test_urls)
{
    char why[200];
    static const char *const good[] = {"http://example.com/", "https://example.com:8443/h?x=1",
                                       "HTTPS://EXAMPLE.com", "http://10.0.0.1/h",
                                       "http://[::1]:9000/x"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        ck_assert_msg(webhook_url_check(good[i], why, sizeof why) == 0, "%s: %s", good[i], why);
    static const char *const bad[] = {"",
                                      "example.com/x",
                                      "ftp://example.com/",
                                      "http://",
                                      "https://u:p@example.com/",
                                      "gopher://x/",
                                      "file:///etc/passwd",
                                      "http://exa mple.com/"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why[0] = '\0';
        ck_assert_msg(webhook_url_check(bad[i], why, sizeof why) < 0, "%s accepted", bad[i]);
        ck_assert_ptr_nonnull(strstr(why, "webhook.url"));
    }
}
END_TEST

START_TEST(test_signature_matches_openssl_dgst)
{
    /* printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key */
    char sig[160];
    ck_assert_int_eq(webhook_sign("key", 1700000000, "{\"a\":1}", 7, sig, sizeof sig), 0);
    ck_assert_str_eq(sig, "t=1700000000,v1="
                          "a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03");
    ck_assert_int_lt(webhook_sign("key", 1700000000, "{\"a\":1}", 7, sig, 20), 0);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("webhook");
    TCase *tc = tcase_create("guard");
    tcase_add_test(tc, test_private_addresses_are_refused);
    tcase_add_test(tc, test_urls);
    tcase_add_test(tc, test_signature_matches_openssl_dgst);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
