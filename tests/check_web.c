/*
 * check_web.c - actors/api/web.c: the page's assets as the build embedded
 * them (web/embed.sh), entity-tag matching, and the page served by a real
 * `imagejobs serve` with --auth required: public, with its ETag, 304 on a
 * match, its Content-Security-Policy and the right types, while /api/
 * still wants a key. The page itself, in a browser: tests/test_browser.sh.
 */
#include "config.h"

#include "actors/api/web.h"
#include "tests/api_check.h"
#include "tests/fixture.h"
#include "tests/instances.h"
#include "tests/runner.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ the assets */

START_TEST(test_every_page_file_is_embedded_byte_for_byte)
{
    static const char *const files[][2] = {
        {"/", "web/index.html"}, {"/app.js", "web/app.js"}, {"/style.css", "web/style.css"}};
    const char *srcdir = getenv("srcdir") ? getenv("srcdir") : ".";
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        const web_asset_t *a = web_find(files[i][0]);
        ck_assert_msg(a, "%s is not embedded", files[i][0]);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", srcdir, files[i][1]);
        FILE *f = fopen(path, "rb");
        ck_assert_msg(f, "cannot open %s", path);
        char *buf = malloc(a->len + 2);
        size_t n = fread(buf, 1, a->len + 1, f);
        fclose(f);
        ck_assert_uint_eq(n, a->len);
        ck_assert(memcmp(buf, a->data, a->len) == 0);
        ck_assert_uint_eq(a->data[a->len], 0); /* embed.sh ends each with a NUL */
        ck_assert(a->etag[0] == '"' && a->etag[strlen(a->etag) - 1] == '"');
        free(buf);
    }
    ck_assert_str_eq(web_find("/")->content_type, "text/html; charset=utf-8");
    ck_assert_str_eq(web_find("/app.js")->content_type, "text/javascript; charset=utf-8");
    ck_assert_str_eq(web_find("/style.css")->content_type, "text/css; charset=utf-8");
    ck_assert_ptr_null(web_find("/index.html"));
    ck_assert_ptr_null(web_find("/web/app.js"));
    ck_assert_ptr_null(web_find(""));
    ck_assert_str_ne(web_find("/")->etag, web_find("/app.js")->etag);
}
END_TEST

START_TEST(test_if_none_match_compares_weakly_and_reads_lists)
{
    const char *e = "\"123-45\"";
    ck_assert(web_etag_matches("\"123-45\"", e));
    ck_assert(web_etag_matches("W/\"123-45\"", e));
    ck_assert(web_etag_matches("\"x\", \"123-45\"", e));
    ck_assert(web_etag_matches("\"x\",W/\"123-45\" ", e));
    ck_assert(web_etag_matches("*", e));
    ck_assert(!web_etag_matches("", e));
    ck_assert(!web_etag_matches("\"123-4\"", e));
    ck_assert(!web_etag_matches("\"123-456\"", e));
    ck_assert(!web_etag_matches("123-45", e));
    ck_assert(!web_etag_matches("\"x\", **", e));
    ck_assert(!web_etag_matches(",,,", e));
}
END_TEST

/* ------------------------------------------------------------ served */

static api_response_t s_get(int port, const char *method, const char *path, const char *headers)
{
    return api_check_call(port, method, path, headers, NULL);
}

START_TEST(test_the_page_is_public_cached_by_etag_and_held_to_its_origin)
{
    inst_database("ij_web");
    inst_t *a = inst_start("A", "0", "--auth", "required", NULL);
    char h[512], etag[128];

    api_response_t r = s_get(a->port, "GET", "/", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(api_header(&r, "content-type", h, sizeof h), "text/html; charset=utf-8");
    ck_assert_uint_eq(r.body_len, web_find("/")->len);
    ck_assert(memcmp(r.body, web_find("/")->data, r.body_len) == 0);
    ck_assert_ptr_nonnull(api_header(&r, "etag", etag, sizeof etag));
    ck_assert_str_eq(etag, web_find("/")->etag);
    ck_assert_str_eq(api_header(&r, "cache-control", h, sizeof h), "no-cache");
    ck_assert_ptr_nonnull(api_header(&r, "content-security-policy", h, sizeof h));
    ck_assert_ptr_nonnull(strstr(h, "default-src 'self'"));
    ck_assert_ptr_nonnull(strstr(h, "connect-src 'self'"));
    ck_assert_ptr_nonnull(strstr(h, "img-src 'self' blob: data:"));
    ck_assert_ptr_nonnull(strstr(h, "frame-ancestors 'none'"));
    ck_assert_ptr_null(strstr(h, "unsafe"));
    ck_assert_str_eq(api_header(&r, "x-content-type-options", h, sizeof h), "nosniff");
    api_response_free(&r);

    /* the browser's revalidation: 304, no body, the same headers */
    char cond[256];
    snprintf(cond, sizeof cond, "If-None-Match: %s\r\n", etag);
    r = s_get(a->port, "GET", "/", cond);
    ck_assert_int_eq(r.status, 304);
    ck_assert_uint_eq(r.body_len, 0);
    ck_assert_str_eq(api_header(&r, "etag", h, sizeof h), etag);
    ck_assert_ptr_nonnull(api_header(&r, "content-security-policy", h, sizeof h));
    api_response_free(&r);
    r = s_get(a->port, "GET", "/", "If-None-Match: \"stale-1\"\r\n");
    ck_assert_int_eq(r.status, 200);
    api_response_free(&r);

    r = s_get(a->port, "HEAD", "/app.js", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(api_header(&r, "content-type", h, sizeof h), "text/javascript; charset=utf-8");
    ck_assert_uint_eq(r.body_len, 0);
    api_response_free(&r);
    r = s_get(a->port, "GET", "/style.css", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(api_header(&r, "content-type", h, sizeof h), "text/css; charset=utf-8");
    api_response_free(&r);

    /* outside the page: the API's JSON 404 and 405; /api/ still wants a key */
    r = s_get(a->port, "GET", "/nothing-here.js", NULL);
    ck_assert_int_eq(r.status, 404);
    ck_assert_ptr_nonnull(r.json);
    api_response_free(&r);
    r = s_get(a->port, "POST", "/", NULL);
    ck_assert_int_eq(r.status, 405);
    api_response_free(&r);
    r = s_get(a->port, "GET", "/api/jobs", NULL);
    ck_assert_int_eq(r.status, 401);
    api_response_free(&r);
    inst_cleanup();
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("web");
    TCase *tc = tcase_create("assets");
    tcase_add_test(tc, test_every_page_file_is_embedded_byte_for_byte);
    tcase_add_test(tc, test_if_none_match_compares_weakly_and_reads_lists);
    suite_add_tcase(s, tc);
    if (getenv("IMAGEJOBS_TEST_REDIS") && getenv("IMAGEJOBS_TEST_DATABASE")
        && getenv("IMAGEJOBS_BIN")) {
        tc = tcase_create("served");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_the_page_is_public_cached_by_etag_and_held_to_its_origin);
        suite_add_tcase(s, tc);
    } else {
        printf("SKIP: the served page needs IMAGEJOBS_TEST_REDIS, IMAGEJOBS_TEST_DATABASE and "
               "IMAGEJOBS_BIN\n");
    }
    return s;
}

const test_program_t test_program = {.suite = s_suite};
