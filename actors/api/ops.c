/*
 * ops.c - the routes for operators, outside /api/ (no key): liveness
 * (GET /healthz), readiness (GET /readyz: PostgreSQL and Redis asked) and
 * the Prometheus metrics (GET /metrics, runtime/metrics.h,
 * docs/operations.md).
 */
#include "config.h"

#include "actors/api/api.h"

#include "runtime/metrics.h"
#include "runtime/names.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

void api_healthz(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    api_json(x, 200, json_pack("{s:s}", "status", "ok"), NULL);
}

enum { READY_DATABASE, READY_REDIS };

typedef struct ready ready_t;
typedef struct {
    ready_t *rd;
    int which;
} ready_slot_t;

struct ready {
    ready_slot_t slot[2];
    bool ok[2];
    int left; /* replies still to come */
};

static void s_ready_answer(http_exchange_t *x, const ready_t *rd)
{
    bool db = rd->ok[READY_DATABASE], redis = rd->ok[READY_REDIS];
    if (db && redis) {
        api_json(x, 200, json_pack("{s:s,s:b,s:b}", "status", "ready", "redis", 1, "database", 1),
                 NULL);
        return;
    }
    const char *error = !db && !redis ? "database and redis unavailable"
                        : !db         ? "database unavailable"
                                      : "redis unavailable";
    api_json(x, 503,
             json_pack("{s:s,s:b,s:b,s:s}", "status", "unavailable", "redis", redis, "database", db,
                       "error", error),
             NULL);
}

static void s_ready_reply(actor_t *self, http_exchange_t *x, int status, msg_t *reply, void *arg)
{
    ready_slot_t *slot = arg;
    ready_t *rd = slot->rd;
    rd->ok[slot->which] = status == 0 && reply->type == MSG_HEALTH && reply->health.ok;
    if (--rd->left > 0)
        return;
    if (x)
        s_ready_answer(x, rd);
    free(rd);
}

void api_readyz(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    const http_config_t *cfg = api_config(self);
    const char *to[2] = {[READY_DATABASE] = cfg->store, [READY_REDIS] = cfg->redis};
    ready_t *rd = calloc(1, sizeof *rd);
    if (!rd)
        abort();
    rd->left = 2;
    int sent = 0;
    for (int i = 0; i < 2; i++) {
        rd->slot[i] = (ready_slot_t){rd, i};
        msg_t *m = msg_new(MSG_HEALTH_CHECK);
        msg_set_str(&m->health_check.from, ACTOR_HTTP);
        if (api_send(self, x, to[i], m, s_ready_reply, &rd->slot[i]) == 0)
            sent++;
        else
            rd->left--; /* not there: not ready */
        msg_destroy(&m);
    }
    if (sent == 0) {
        s_ready_answer(x, rd);
        free(rd);
    }
}

/* ------------------------------------------------------------ metrics */

void api_metrics(actor_t *self, http_exchange_t *x, const http_request_t *rq, char *id)
{
    char *text = NULL;
    size_t len = metrics_render(&text);
    http_respond(x, 200, "text/plain; version=0.0.4; charset=utf-8", "Cache-Control: no-store\r\n",
                 &text, len);
}
