/*
 * query.c - see query.h. Decoding happens in place, so a parsed query costs
 * one array and no copy of its text; a target without a query costs nothing.
 */
#include "config.h"

#include "actors/http/query.h"

#include "runtime/hex.h"

#include <stdlib.h>
#include <string.h>

/* Decodes the NUL-terminated s in place; the result is never longer. */
static void s_decode(char *s)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        int hi, lo;
        if (*r == '+') {
            *w++ = ' ';
        } else if (*r == '%' && (hi = hex_digit(r[1])) >= 0 && (lo = hex_digit(r[2])) >= 0
                   && (hi | lo) != 0) {
            *w++ = (char)(hi << 4 | lo);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

void http_query_parse(char *raw, http_query_t *q)
{
    q->pairs = NULL;
    q->count = 0;
    size_t max = 1;
    for (const char *p = raw; *p; p++)
        max += *p == '&';
    for (char *seg = raw; seg;) {
        char *amp = strchr(seg, '&');
        if (amp)
            *amp = '\0';
        if (*seg) {
            if (!q->pairs) {
                q->pairs = malloc(max * sizeof *q->pairs);
                if (!q->pairs)
                    abort();
            }
            char *eq = strchr(seg, '=');
            const char *value = "";
            if (eq) {
                *eq = '\0';
                s_decode(eq + 1);
                value = eq + 1;
            }
            s_decode(seg);
            q->pairs[q->count++] = (http_query_pair_t){seg, value};
        }
        seg = amp ? amp + 1 : NULL;
    }
}

void http_query_free(http_query_t *q)
{
    free(q->pairs);
    q->pairs = NULL;
    q->count = 0;
}

const char *http_query_get(const http_query_t *q, const char *key)
{
    for (size_t i = 0; i < q->count; i++)
        if (strcmp(q->pairs[i].key, key) == 0)
            return q->pairs[i].value;
    return NULL;
}
