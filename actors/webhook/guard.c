/*
 * guard.c - what a webhook may be: the URL check at create (400 for a
 * malformed one), the address check at each connect (the SSRF guard:
 * DNS names are resolved at delivery time, so the check is on the address
 * the socket is about to connect to, after resolution, which a DNS
 * rebinding cannot dodge), and the signature.
 */
#include "config.h"

#include "actors/webhook.h"

#include <curl/curl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int webhook_url_check(const char *url, char *why, size_t whylen)
{
    CURLU *u = curl_url();
    if (!u)
        abort();
    char *scheme = NULL, *host = NULL, *user = NULL, *password = NULL;
    int rc = -1;
    /* no guessing of a scheme: "example.com/hook" is refused */
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        snprintf(why, whylen, "webhook.url is not a valid absolute URL");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK
        || (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        snprintf(why, whylen, "webhook.url must be an http or https URL");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host[0]) {
        snprintf(why, whylen, "webhook.url has no host");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK
        || curl_url_get(u, CURLUPART_PASSWORD, &password, 0) == CURLUE_OK) {
        snprintf(why, whylen, "webhook.url must not carry a user name or password");
        goto out;
    }
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_free(password);
    curl_url_cleanup(u);
    return rc;
}

/* a (host order) within net/bits */
static bool s_in4(uint32_t a, uint32_t net, int bits)
{
    uint32_t mask = bits == 0 ? 0 : 0xFFFFFFFFu << (32 - bits);
    return (a & mask) == (net & mask);
}

static bool s_v4_allowed(uint32_t a, const char **why)
{
    static const struct {
        uint32_t net;
        int bits;
        const char *kind;
    } refused[] = {
        {0x00000000, 8, "unspecified"}, /* 0.0.0.0/8 */
        {0x7F000000, 8, "loopback"},    /* 127/8 */
        {0x0A000000, 8, "private"},     /* 10/8 */
        {0xAC100000, 12, "private"},    /* 172.16/12 */
        {0xC0A80000, 16, "private"},    /* 192.168/16 */
        {0x64400000, 10, "shared"},     /* 100.64/10, carrier-grade NAT */
        {0xA9FE0000, 16, "link-local"}, /* 169.254/16 (cloud metadata) */
        {0xC0000000, 24, "reserved"},   /* 192.0.0/24, IETF protocol assignments */
        {0xC6120000, 15, "reserved"},   /* 198.18/15, benchmarking */
        {0xE0000000, 4, "multicast"},   /* 224/4 */
        {0xF0000000, 4, "reserved"},    /* 240/4 and the broadcast address */
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        if (s_in4(a, refused[i].net, refused[i].bits)) {
            *why = refused[i].kind;
            return false;
        }
    return true;
}

bool webhook_addr_allowed(const struct sockaddr *sa, const char **why)
{
    const char *ignored;
    if (!why)
        why = &ignored;
    *why = "";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return s_v4_allowed(ntohl(in->sin_addr.s_addr), why);
    }
    if (sa->sa_family != AF_INET6) {
        *why = "not an IP address";
        return false;
    }
    const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    static const uint8_t zero[16] = {0};
    if (memcmp(b, mapped, 12) == 0 /* ::ffff:a.b.c.d */
        || (memcmp(b, zero, 12) == 0 && (b[12] | b[13] | b[14] || b[15] > 1))
        || (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B
            && memcmp(b + 4, zero, 8) == 0)) { /* IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96 */
        uint32_t a = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
        return s_v4_allowed(a, why);
    }
    if (memcmp(b, zero, 16) == 0)
        *why = "unspecified"; /* :: */
    else if (memcmp(b, zero, 15) == 0 && b[15] == 1)
        *why = "loopback"; /* ::1 */
    else if ((b[0] & 0xFE) == 0xFC)
        *why = "private"; /* fc00::/7, unique local */
    else if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80)
        *why = "link-local"; /* fe80::/10 */
    else if (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0)
        *why = "private"; /* fec0::/10, the deprecated site-local */
    else if (b[0] == 0xFF)
        *why = "multicast"; /* ff00::/8 */
    else
        return true;
    return false;
}

int webhook_sign(const char *secret, int64_t t, const char *body, size_t len, char *out,
                 size_t outlen)
{
    char prefix[32];
    int n = snprintf(prefix, sizeof prefix, "%lld.", (long long)t);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen;
    /* "<t>.<body>" without building it: HMAC over the two pieces */
    EVP_MAC *alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = alg ? EVP_MAC_CTX_new(alg) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t got = 0;
    int ok = ctx && EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params)
             && EVP_MAC_update(ctx, (const unsigned char *)prefix, (size_t)n)
             && EVP_MAC_update(ctx, (const unsigned char *)body, len)
             && EVP_MAC_final(ctx, mac, &got, sizeof mac);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(alg);
    maclen = (unsigned int)got;
    if (!ok || outlen < (size_t)n + 8 + 2 * maclen)
        return -1;
    size_t k = (size_t)snprintf(out, outlen, "t=%lld,v1=", (long long)t);
    for (unsigned int i = 0; i < maclen; i++)
        k += (size_t)snprintf(out + k, outlen - k, "%02x", mac[i]);
    return 0;
}
