/*
 * token.h - API tokens (docs/security.md): made from the kernel's CSPRNG,
 * known to the service only by their SHA-256, compared in constant time.
 *
 * A token is TOKEN_PREFIX and 64 lower-case hex digits (32 random bytes):
 * "ij_" makes a leaked one recognisable to secret scanners and to people.
 * Nothing here logs: a token or its hash never reaches a log line.
 */
#ifndef IMAGEJOBS_TOKEN_H
#define IMAGEJOBS_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOKEN_PREFIX "ij_"
#define TOKEN_RANDOM_BYTES 32
/* "ij_" + 64 hex digits + NUL */
#define TOKEN_STR_LEN (sizeof TOKEN_PREFIX - 1 + 2 * TOKEN_RANDOM_BYTES + 1)
#define TOKEN_HASH_LEN 32

/* A new token into out (TOKEN_STR_LEN bytes), from getrandom(2). 0, or -1
 * (errno) when the kernel gives no randomness. */
int token_new(char out[TOKEN_STR_LEN]);

/* True when s has a token's shape (prefix, 64 hex digits, nothing more). */
bool token_well_formed(const char *s);

/* SHA-256 of the n bytes of s into hash. */
void token_hash(const char *s, size_t n, uint8_t hash[TOKEN_HASH_LEN]);

/* Compares two hashes in time independent of where they differ. */
bool token_hash_equal(const uint8_t a[TOKEN_HASH_LEN], const uint8_t b[TOKEN_HASH_LEN]);

/* 64 hex digits (either case) into hash; -1 when s is not that. */
int token_hash_from_hex(const char *s, uint8_t hash[TOKEN_HASH_LEN]);

#endif
