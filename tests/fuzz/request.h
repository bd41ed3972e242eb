/*
 * request.h - for the body harnesses: the fuzz input as the body of an
 * http_request_t, as the server library hands one to the http actor (a
 * NUL-terminated copy, body_len bytes). Included by one harness each.
 */
#ifndef IMAGEJOBS_FUZZ_REQUEST_H
#define IMAGEJOBS_FUZZ_REQUEST_H

#include "actors/http/server.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* rq with a malloc'd copy of data as its body (free it with request_free). */
static void request_make(http_request_t *rq, const char *path, const uint8_t *data, size_t size)
{
    char *body = malloc(size + 1);
    if (!body)
        abort();
    memcpy(body, data, size);
    body[size] = '\0';
    *rq = (http_request_t){
        .method = 3, /* POST (http-parser and llhttp alike); the checks do not read it */
        .path = path,
        .body = body,
        .body_len = size,
        .content_type = "application/json",
    };
}

static void request_free(http_request_t *rq)
{
    free((char *)rq->body);
    rq->body = NULL;
}

#endif
