/*
 * query.h - the query string of a request target, decoded into key/value
 * pairs (application/x-www-form-urlencoded, as browsers and curl send it).
 *
 * Pairs are separated by '&'; a key without '=' has the value ""; empty
 * pairs ("a=1&&b=2") are skipped; a key may repeat, and the pairs keep the
 * order of the string. '+' decodes to a space and %XX to its byte. An escape
 * that is not two hex digits, and %00 (which a C string cannot carry), stay
 * as they were written. Nothing here checks UTF-8: a route that wants text
 * checks the value it reads.
 */
#ifndef IMAGEJOBS_HTTP_QUERY_H
#define IMAGEJOBS_HTTP_QUERY_H

#include <stddef.h>

typedef struct {
    const char *key;
    const char *value;
} http_query_pair_t;

typedef struct {
    http_query_pair_t *pairs; /* count pairs, in the order of the string */
    size_t count;
} http_query_t;

/* Decodes raw (the text after '?' without the fragment, NUL-terminated) in
 * place: the pairs point into raw, which must outlive q. q->pairs is
 * malloc'd when there is at least one pair (http_query_free). */
void http_query_parse(char *raw, http_query_t *q);

/* Frees q's array (not the strings, which live in the parsed text). */
void http_query_free(http_query_t *q);

/* The value of the first pair named key, or NULL when there is none. */
const char *http_query_get(const http_query_t *q, const char *key);

#endif
