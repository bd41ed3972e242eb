/*
 * webhook.h - the webhook actor: delivers the job events of the webhook
 * outbox (PostgreSQL, written in the transaction of each change) to the
 * receivers' URLs, signed, at least once, in event order per job.
 * docs/webhooks.md.
 *
 * Key constraint: its loop never blocks. The POSTs are libcurl multi
 * transfers driven from the actor's own libev loop (CURLMOPT_SOCKETFUNCTION
 * / CURLMOPT_TIMERFUNCTION on ev_io / ev_timer), at most `concurrency` at
 * once; names are resolved by libcurl's threaded resolver; the outbox is
 * the store's (WEBHOOK_CLAIM, WEBHOOK_RESULT). A receiver that is down or
 * slow costs one slot per delivery in flight, for at most the time-out.
 */
#ifndef IMAGEJOBS_WEBHOOK_H
#define IMAGEJOBS_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "runtime/actor.h"
#include "runtime/runtime.h"

#define ACTOR_WEBHOOK "webhook"

typedef struct {
    const char *instance; /* claims are this instance's; required */
    const char *secret;   /* HMAC-SHA256 key of the signatures; required, non-empty */
    bool allow_private;   /* deliver to loopback, private, link-local... addresses too */
    int concurrency;      /* deliveries in flight at once; <= 0: 64 */
    double timeout_s;     /* one attempt, connect to last byte; <= 0: 10 */
    double retry_base_s;  /* the first retry's delay; <= 0: 10 */
    double retry_max_s;   /* the longest delay between attempts; <= 0: 3600 */
    double retry_for_s;   /* a failure this long after the event is final; <= 0: 86400 */
} webhook_config_t;

/* Starts the actor named ACTOR_WEBHOOK (cfg is copied). NULL with the
 * reason in err. Owned by the caller: webhook_destroy(). */
actor_t *webhook_start(runtime_t *rt, const webhook_config_t *cfg, char *err, size_t errlen);

/* Stops it; deliveries in flight are dropped, and redelivered (by any
 * instance) once their claim's lease has run out. NULLs *ap. */
void webhook_destroy(actor_t **ap);

/* ---- what the actor and the http actor share (actors/webhook/guard.c) */

/* 0 if url can be a webhook: an absolute http or https URL with a host,
 * no user name or password; else -1 with the reason in why. The address
 * is not looked at here: it is checked at each delivery. */
int webhook_url_check(const char *url, char *why, size_t whylen);

/* true when a delivery may connect to sa: not loopback, private (RFC 1918,
 * IPv6 unique local), shared (100.64/10), link-local, multicast,
 * unspecified, broadcast or reserved, IPv4-mapped IPv6 judged as its IPv4;
 * why names the kind refused. */
bool webhook_addr_allowed(const struct sockaddr *sa, const char **why);

/* The Imagejobs-Signature value for body at unix time t:
 * "t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>", into out. */
int webhook_sign(const char *secret, int64_t t, const char *body, size_t len, char *out,
                 size_t outlen);

#endif
