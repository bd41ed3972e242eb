/*
 * web.c - see web.h. The assets are the build's (web/assets.c); this file
 * only finds one, answers conditional requests and sets the headers that
 * hold the page to its own origin.
 */
#include "config.h"

#include "actors/api/web.h"

#include "actors/api/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The page loads nothing from elsewhere and runs nothing inline: scripts
 * and styles are its own files, images its own attachments (as blob: URLs,
 * fetched with the token) or previews (data: URLs from the event stream),
 * and every request goes to its own origin. */
#define WEB_CSP                                                                                    \
    "Content-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "         \
    "form-action 'self'; frame-ancestors 'none'\r\n"

static const char s_page_headers[] = WEB_CSP "X-Content-Type-Options: nosniff\r\n"
                                             "Referrer-Policy: no-referrer\r\n"
                                             "X-Frame-Options: DENY\r\n"
                                             "Cache-Control: no-cache\r\n";

const web_asset_t *web_find(const char *path)
{
    for (size_t i = 0; i < web_assets_count; i++)
        if (strcmp(web_assets[i].path, path) == 0)
            return &web_assets[i];
    return NULL;
}

int web_etag_matches(const char *if_none_match, const char *etag)
{
    size_t elen = strlen(etag);
    for (const char *p = if_none_match; *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, ",");
        size_t k = n;
        while (k && (p[k - 1] == ' ' || p[k - 1] == '\t'))
            k--;
        const char *tag = p;
        if (k == 1 && *tag == '*')
            return 1;
        /* If-None-Match compares weakly (RFC 9110 13.1.2) */
        if (k >= 2 && strncmp(tag, "W/", 2) == 0)
            tag += 2, k -= 2;
        if (k == elen && memcmp(tag, etag, elen) == 0)
            return 1;
        p += n;
    }
    return 0;
}

void web_serve(http_exchange_t *x, const http_request_t *rq, const char *if_none_match)
{
    const web_asset_t *a = web_find(rq->path);
    if (!a) {
        api_error(x, 404, NULL, "Not found");
        return;
    }
    char headers[sizeof s_page_headers + 64];
    snprintf(headers, sizeof headers, "%sETag: %s\r\n", s_page_headers, a->etag);
    if (if_none_match && web_etag_matches(if_none_match, a->etag)) {
        http_respond(x, 304, NULL, headers, NULL, 0);
        return;
    }
    char *body = malloc(a->len ? a->len : 1);
    if (!body)
        abort();
    memcpy(body, a->data, a->len);
    http_respond(x, 200, a->content_type, headers, &body, a->len);
}
