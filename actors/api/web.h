/*
 * web.h - the page served at / (web/ in the source tree): its files,
 * compiled into the binary at build time (web/embed.sh writes web_assets[]
 * into the build tree's web/assets.c), and the route that serves them.
 *
 * The page is public, as /healthz is: it holds no job data, and every call
 * it makes goes to /api/ with the user's token (docs/security.md).
 */
#ifndef IMAGEJOBS_API_WEB_H
#define IMAGEJOBS_API_WEB_H

#include <stddef.h>

#include "actors/http/server.h"

typedef struct {
    const char *path;         /* "/" for index.html, else "/<name>" */
    const char *content_type; /* with its charset for text */
    const unsigned char *data;
    size_t len;
    const char *etag; /* quoted: "\"<crc>-<size>\"" */
} web_asset_t;

/* Generated (web/assets.c), in the order of WEB_ASSETS in actors/http.am. */
extern const web_asset_t web_assets[];
extern const size_t web_assets_count;

/* The asset at path, or NULL. */
const web_asset_t *web_find(const char *path);

/* Whether an If-None-Match value (a list of entity tags, weak or strong,
 * or "*") names etag. */
int web_etag_matches(const char *if_none_match, const char *etag);

/* GET or HEAD of a page path: 200 with the asset, its ETag, Cache-Control:
 * no-cache (revalidated every time: the names do not change with the
 * bytes) and the page's Content-Security-Policy; 304 when if_none_match
 * (the request's If-None-Match, or NULL) names it; 404 otherwise. */
void web_serve(http_exchange_t *x, const http_request_t *rq, const char *if_none_match);

#endif
