/*
 * uuid.h - random (version 4) UUIDs from the kernel's CSPRNG, and the
 * strict check of UUID text that every API id goes through.
 */
#ifndef IMAGEJOBS_UUID_H
#define IMAGEJOBS_UUID_H

#include <stdbool.h>

#define UUID_STR_LEN 37 /* 36 characters and the NUL */

/* Writes a fresh lowercase v4 UUID to out. Returns 0, or -1 if getrandom
 * failed (errno). */
int uuid_v4(char out[UUID_STR_LEN]);

/* True when s is exactly 36 characters of canonical 8-4-4-4-12 hex (any
 * case, any version). */
bool uuid_valid(const char *s);

/* Whether id is one of the comma-separated ids of list (NULL: none). */
bool uuid_list_has(const char *list, const char *id);

#endif
