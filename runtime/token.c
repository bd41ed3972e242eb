/*
 * token.c - API tokens: getrandom(2) for the bytes, OpenSSL's libcrypto
 * for SHA-256 and the constant-time comparison.
 */
#include "config.h"

#include "runtime/token.h"

#include "runtime/hex.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

int token_new(char out[TOKEN_STR_LEN])
{
    uint8_t bytes[TOKEN_RANDOM_BYTES];
    size_t got = 0;
    while (got < sizeof bytes) {
        ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    size_t k = (size_t)snprintf(out, TOKEN_STR_LEN, "%s", TOKEN_PREFIX);
    for (size_t i = 0; i < sizeof bytes; i++, k += 2)
        snprintf(out + k, TOKEN_STR_LEN - k, "%02x", bytes[i]);
    OPENSSL_cleanse(bytes, sizeof bytes);
    return 0;
}

bool token_well_formed(const char *s)
{
    size_t p = sizeof TOKEN_PREFIX - 1;
    if (!s || strncmp(s, TOKEN_PREFIX, p) != 0 || strlen(s) != TOKEN_STR_LEN - 1)
        return false;
    for (const char *q = s + p; *q; q++)
        if (hex_digit((unsigned char)*q) < 0)
            return false;
    return true;
}

void token_hash(const char *s, size_t n, uint8_t hash[TOKEN_HASH_LEN])
{
    unsigned int len = TOKEN_HASH_LEN;
    if (!EVP_Digest(s, n, hash, &len, EVP_sha256(), NULL) || len != TOKEN_HASH_LEN)
        abort(); /* SHA-256 cannot fail but for memory */
}

bool token_hash_equal(const uint8_t a[TOKEN_HASH_LEN], const uint8_t b[TOKEN_HASH_LEN])
{
    return CRYPTO_memcmp(a, b, TOKEN_HASH_LEN) == 0;
}

int token_hash_from_hex(const char *s, uint8_t hash[TOKEN_HASH_LEN])
{
    if (!s || strlen(s) != 2 * TOKEN_HASH_LEN)
        return -1;
    for (size_t i = 0; i < TOKEN_HASH_LEN; i++) {
        int hi = hex_digit((unsigned char)s[2 * i]), lo = hex_digit((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        hash[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
