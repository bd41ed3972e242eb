/*
 * main.c - the imagejobs command: `serve` runs the service; other
 * subcommands join as their parts land. Everything but the commands' front
 * ends (this file and render.c) lives in libimagejobs.
 */
#include "config.h"

#include "actors/generator.h"
#include "actors/http.h"
#include "actors/redis.h"
#include "actors/store.h"
#include "actors/webhook.h"
#include "cmd/client.h"
#include "cmd/keys.h"
#include "cmd/render.h"
#include "runtime/actor.h"
#include "runtime/backoff.h"
#include "runtime/log.h"
#include "runtime/names.h"
#include "runtime/options.h"
#include "runtime/runtime.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ serve */

enum {
    SERVE_LISTEN,
    SERVE_REDIS,
    SERVE_DATABASE,
    SERVE_GENERATORS,
    SERVE_BACKEND,
    SERVE_COMPUTE_THREADS,
    SERVE_COMPUTE_POOL,
    SERVE_PLUGIN_DIR,
    SERVE_BACKEND_OPTIONS,
    SERVE_INSTANCE,
    SERVE_CANCEL_CHECK,
    SERVE_CORS_ORIGIN,
    SERVE_LEASE,
    SERVE_LOG_LEVEL,
    SERVE_MAX_STREAMS,
    SERVE_STREAM_BUFFER,
    SERVE_STREAM_KEEPALIVE,
    SERVE_VIEW_CACHE_MB,
    SERVE_RT_PRIORITY,
    SERVE_AUTH,
    SERVE_LOG_FORMAT,
    SERVE_WEBHOOK_SECRET,
    SERVE_WEBHOOK_ALLOW_PRIVATE,
    SERVE_WEBHOOK_CONCURRENCY,
    SERVE_WEBHOOK_TIMEOUT,
    SERVE_WEBHOOK_RETRY_BASE,
    SERVE_WEBHOOK_RETRY_MAX,
    SERVE_WEBHOOK_RETRY_FOR,
    SERVE_NOPTS
};

static const option_t s_serve_options[SERVE_NOPTS] = {
    [SERVE_LISTEN] = {"listen", "IMAGEJOBS_LISTEN", NULL, "HOST:PORT", "127.0.0.1:8080",
                      "address the HTTP API listens on"},
    [SERVE_REDIS] = {"redis", "IMAGEJOBS_REDIS", NULL, "URL", "redis://127.0.0.1:6379",
                     "Redis server: redis://HOST:PORT or a unix socket path"},
    [SERVE_DATABASE] = {"database", "IMAGEJOBS_DATABASE", "DATABASE_URL", "CONNINFO",
                        "dbname=imagejobs", "PostgreSQL: libpq conninfo or URI"},
    [SERVE_GENERATORS] = {"generators", "IMAGEJOBS_GENERATORS", NULL, "N", "auto",
                          "generator actors (auto: one per GPU, else one per core)"},
    [SERVE_BACKEND] = {"backend", "IMAGEJOBS_BACKEND", NULL, "BACKEND", "auto",
                       "generation backend: auto, cpu, cuda, or plugin:PATH / plugin:NAME, a "
                       "shared object implementing imagejobs/backend.h (docs/backends.md)"},
    [SERVE_COMPUTE_THREADS] = {"compute-threads", "IMAGEJOBS_COMPUTE_THREADS", NULL, "N", "auto",
                               "threads of the compute pool every CPU generator shares (auto: "
                               "one per online CPU)"},
    [SERVE_COMPUTE_POOL] = {"compute-pool", "IMAGEJOBS_COMPUTE_POOL", NULL, "shared|per-generator",
                            "shared",
                            "shared: one pool for the process; per-generator: each CPU "
                            "generator computes on its own thread, as before the pool "
                            "(for comparison)"},
    [SERVE_PLUGIN_DIR] = {"plugin-dir", "IMAGEJOBS_PLUGIN_DIR", NULL, "DIR", IMAGEJOBS_PLUGIN_DIR,
                          "where plugin:NAME is looked up (NAME.so, imagejobs-backend-NAME.so)"},
    [SERVE_BACKEND_OPTIONS] = {"backend-options", "IMAGEJOBS_BACKEND_OPTIONS", NULL, "STRING", NULL,
                               "options handed to the plugin's open, in its own syntax"},
    [SERVE_INSTANCE] = {"instance", "IMAGEJOBS_INSTANCE", NULL, "NAME", NULL,
                        "instance id shared by Redis and PostgreSQL (default: host-pid)"},
    [SERVE_CANCEL_CHECK] = {"cancel-check", "IMAGEJOBS_CANCEL_CHECK", NULL, "event|poll", "event",
                            "event: cancels published to every generator; poll: the "
                            "seed's Redis flag before each image"},
    [SERVE_CORS_ORIGIN] = {"cors-origin", "IMAGEJOBS_CORS_ORIGIN", NULL, "ORIGIN[,ORIGIN...]", NULL,
                           "origins allowed to call the API from a browser (default: * with "
                           "--auth off, none with auth required; * there only when given)"},
    [SERVE_LEASE] = {"lease", "IMAGEJOBS_LEASE", NULL, "SECONDS", "15",
                     "claim lease on a combination, renewed by its holder"},
    [SERVE_LOG_LEVEL] = {"log-level", "IMAGEJOBS_LOG_LEVEL", NULL, "LEVEL", "info",
                         "debug, info, warn or error"},
    [SERVE_MAX_STREAMS] = {"max-streams", "IMAGEJOBS_MAX_STREAMS", NULL, "N", "10000",
                           "event streams open at once on this instance (503 past it)"},
    [SERVE_STREAM_BUFFER] = {"stream-buffer", "IMAGEJOBS_STREAM_BUFFER", NULL, "BYTES", "1048576",
                             "output queued for a slow event-stream client past which it is "
                             "disconnected (it resumes from its last event id)"},
    [SERVE_STREAM_KEEPALIVE] = {"stream-keepalive", "IMAGEJOBS_STREAM_KEEPALIVE", NULL, "SECONDS",
                                "15",
                                "a \": keep-alive\" comment on an event stream silent this long "
                                "(below your proxies' idle timeout)"},
    [SERVE_VIEW_CACHE_MB] = {"view-cache-mb", "IMAGEJOBS_VIEW_CACHE_MB", NULL, "MB", "64",
                             "job documents GET /api/jobs/{id} answers from memory, kept exact "
                             "by the job events (0: every GET reads PostgreSQL)"},
    [SERVE_RT_PRIORITY] = {"rt-priority", "IMAGEJOBS_RT_PRIORITY", NULL, "N", "0",
                           "run the threads a cancel passes through (http, redis, the "
                           "generators' control threads) at SCHED_FIFO priority N, 1-99, so "
                           "that a cancel never waits for a core (needs CAP_SYS_NICE; 0: off)"},
    [SERVE_AUTH] = {"auth", "IMAGEJOBS_AUTH", NULL, "required|off", "required",
                    "required: every /api/ route needs an API key (imagejobs keys create); "
                    "off: anyone who reaches the port may do anything"},
    [SERVE_LOG_FORMAT] = {"log-format", "IMAGEJOBS_LOG_FORMAT", NULL, "text|json", "text",
                          "text lines, or one JSON object per line (docs/operations.md)"},
    [SERVE_WEBHOOK_SECRET] = {"webhook-secret", "IMAGEJOBS_WEBHOOK_SECRET", NULL, "SECRET", NULL,
                              "key of the webhooks' HMAC-SHA256 signatures; without it this "
                              "instance delivers no webhook (others may)"},
    [SERVE_WEBHOOK_ALLOW_PRIVATE] = {"webhook-allow-private", "IMAGEJOBS_WEBHOOK_ALLOW_PRIVATE",
                                     NULL, NULL, NULL,
                                     "deliver webhooks to loopback, private and link-local "
                                     "addresses too"},
    [SERVE_WEBHOOK_CONCURRENCY] = {"webhook-concurrency", "IMAGEJOBS_WEBHOOK_CONCURRENCY", NULL,
                                   "N", "64", "webhook deliveries in flight at once"},
    [SERVE_WEBHOOK_TIMEOUT] = {"webhook-timeout", "IMAGEJOBS_WEBHOOK_TIMEOUT", NULL, "SECONDS",
                               "10", "one delivery attempt, connect to answer"},
    [SERVE_WEBHOOK_RETRY_BASE] = {"webhook-retry-base", "IMAGEJOBS_WEBHOOK_RETRY_BASE", NULL,
                                  "SECONDS", "10", "first retry's delay, doubling"},
    [SERVE_WEBHOOK_RETRY_MAX] = {"webhook-retry-max", "IMAGEJOBS_WEBHOOK_RETRY_MAX", NULL,
                                 "SECONDS", "3600", "longest delay between retries"},
    [SERVE_WEBHOOK_RETRY_FOR] = {"webhook-retry-for", "IMAGEJOBS_WEBHOOK_RETRY_FOR", NULL,
                                 "SECONDS", "86400",
                                 "a delivery still failing this long after its event is dead"},
};

typedef struct {
    runtime_t *rt;
    actor_t *store, *redis, *http, *webhook;
    actor_t *generators[GENERATORS_MAX];
    int ngenerators;
    gen_pool_t *pool; /* the CPU generators' compute pool */
} service_t;

/* Stops in the reverse order of the flow: no new requests first, then the
 * generators (which give their claims back to the store), then Redis and
 * the store. */
static void s_service_stop(service_t *svc)
{
    http_destroy(&svc->http);
    webhook_destroy(&svc->webhook);
    for (int i = svc->ngenerators; i-- > 0;)
        generator_destroy(&svc->generators[i]);
    gen_pool_destroy(&svc->pool); /* after the generators: their engines left it */
    redis_destroy(&svc->redis);
    store_destroy(&svc->store);
    runtime_destroy(&svc->rt);
}

/* The threads on a cancel's way (docs/cancel.md) at SCHED_FIFO prio: the
 * HTTP actor publishes it, the redis actor carries it between instances,
 * the generators stop. They only wait on sockets and do short work, so
 * they never hold a core for long (the generators only when the compute
 * pool does their pixel work); without the privilege, one warning and
 * ordinary scheduling. */
static void s_realtime(service_t *svc, int prio, bool generators)
{
    actor_t *on[2 + GENERATORS_MAX] = {svc->http, svc->redis};
    int n = 2, failed = 0;
    for (int i = 0; generators && i < svc->ngenerators; i++)
        on[n++] = svc->generators[i];
    for (int i = 0; i < n; i++)
        if (on[i] && (failed = actor_set_realtime(on[i], prio)) != 0)
            break;
    if (failed)
        log_warn("--rt-priority %d: %s; the cancel path runs at ordinary priority", prio,
                 strerror(failed));
    else
        log_info("real-time priority %d (SCHED_FIFO) for http, redis and %d generators", prio,
                 generators ? svc->ngenerators : 0);
}

/* Every stream is a socket: the soft limit on descriptors (1,024 by
 * default) is raised towards want, as far as the hard limit allows. */
static void s_raise_fd_limit(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        log_warn("cannot raise the open file limit to %llu: %s", (unsigned long long)want,
                 strerror(errno));
}

/* SIGINT and SIGTERM: blocked in every thread, taken by sigtimedwait()
 * below or by runtime_wait_signal(). */
static void s_stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
}

/* Applies the schema, retrying while PostgreSQL is unreachable or another
 * instance holds the migration lock; a signal meanwhile stops the retries.
 * store_migrate() bounds each attempt (connect and lock timeouts), so a
 * signal is seen within one attempt. Returns 0, or the signal that
 * arrived. */
static int s_migrate_until_done(const char *conninfo)
{
    sigset_t set;
    s_stop_signals(&set);
    backoff_t backoff;
    backoff_init(&backoff, 0.2, 1.0, 0); /* as the store: ready within 1 s of the return */
    char err[512], last[512] = "";
    struct timespec ts = {0, 0}; /* a signal that came first is taken at once */
    for (;;) {
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig > 0)
            return sig;
        if (store_migrate(conninfo, err, sizeof err) == 0)
            return 0;
        if (strcmp(err, last) != 0) { /* one line per new reason, not per retry */
            log_warn("schema not applied yet (%s); retrying", err);
            snprintf(last, sizeof last, "%s", err);
        }
        double delay = backoff_next(&backoff);
        ts = (struct timespec){(time_t)delay, (long)((delay - (time_t)delay) * 1e9)};
    }
}

static int s_serve(int argc, char **argv)
{
    const char *v[SERVE_NOPTS];
    char err[512];
    int rc = options_parse(s_serve_options, SERVE_NOPTS, v, argc, argv,
                           "usage: imagejobs serve [options]", err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "imagejobs serve: %s\n", err);
        return rc < 0 ? 2 : 0;
    }
    log_level_t level;
    if (log_level_parse(v[SERVE_LOG_LEVEL], &level) < 0) {
        fprintf(stderr, "imagejobs serve: --log-level must be debug, info, warn or error\n");
        return 2;
    }
    log_set_level(level);
    log_format_t format;
    if (log_format_parse(v[SERVE_LOG_FORMAT], &format) < 0) {
        fprintf(stderr, "imagejobs serve: --log-format must be text or json\n");
        return 2;
    }
    log_set_format(format);
    bool poll_mode = strcmp(v[SERVE_CANCEL_CHECK], "poll") == 0;
    if (!poll_mode && strcmp(v[SERVE_CANCEL_CHECK], "event") != 0) {
        fprintf(stderr, "imagejobs serve: --cancel-check must be event or poll\n");
        return 2;
    }
    bool auth = strcmp(v[SERVE_AUTH], "off") != 0;
    if (auth && strcmp(v[SERVE_AUTH], "required") != 0) {
        fprintf(stderr, "imagejobs serve: --auth must be required or off\n");
        return 2;
    }
    gen_backend_kind_t backend;
    if (gen_backend_kind_parse(v[SERVE_BACKEND], &backend) < 0) {
        fprintf(stderr, "imagejobs serve: --backend must be auto, cpu, cuda, plugin:PATH or "
                        "plugin:NAME\n");
        return 2;
    }
    long lease;
    if (options_long("lease", v[SERVE_LEASE], 1, 3600, &lease, err, sizeof err) < 0) {
        fprintf(stderr, "imagejobs serve: %s\n", err);
        return 2;
    }
    long max_streams;
    if (options_long("max-streams", v[SERVE_MAX_STREAMS], 1, 1000000, &max_streams, err, sizeof err)
        < 0) {
        fprintf(stderr, "imagejobs serve: %s\n", err);
        return 2;
    }
    s_raise_fd_limit((rlim_t)max_streams + 1024);
    long stream_buffer;
    if (options_long("stream-buffer", v[SERVE_STREAM_BUFFER], 4096, 1L << 30, &stream_buffer, err,
                     sizeof err)
        < 0) {
        fprintf(stderr, "imagejobs serve: %s\n", err);
        return 2;
    }
    long view_mb, rt_prio;
    if (options_long("view-cache-mb", v[SERVE_VIEW_CACHE_MB], 0, 1L << 20, &view_mb, err,
                     sizeof err)
            < 0
        || options_long("rt-priority", v[SERVE_RT_PRIORITY], 0, 99, &rt_prio, err, sizeof err)
               < 0) {
        fprintf(stderr, "imagejobs serve: %s\n", err);
        return 2;
    }
    long keepalive;
    if (options_long("stream-keepalive", v[SERVE_STREAM_KEEPALIVE], 1, 3600, &keepalive, err,
                     sizeof err)
        < 0) {
        fprintf(stderr, "imagejobs serve: %s\n", err);
        return 2;
    }
    long hook_concurrency;
    webhook_config_t hook_cfg = {.secret = v[SERVE_WEBHOOK_SECRET],
                                 .allow_private = options_flag(v[SERVE_WEBHOOK_ALLOW_PRIVATE])};
    if (options_long("webhook-concurrency", v[SERVE_WEBHOOK_CONCURRENCY], 1, 1000,
                     &hook_concurrency, err, sizeof err)
            < 0
        || options_seconds("webhook-timeout", v[SERVE_WEBHOOK_TIMEOUT], 0.1, 600,
                           &hook_cfg.timeout_s, err, sizeof err)
               < 0
        || options_seconds("webhook-retry-base", v[SERVE_WEBHOOK_RETRY_BASE], 0.01, 86400,
                           &hook_cfg.retry_base_s, err, sizeof err)
               < 0
        || options_seconds("webhook-retry-max", v[SERVE_WEBHOOK_RETRY_MAX], 0.01, 86400,
                           &hook_cfg.retry_max_s, err, sizeof err)
               < 0
        || options_seconds("webhook-retry-for", v[SERVE_WEBHOOK_RETRY_FOR], 0.01, 30 * 86400.,
                           &hook_cfg.retry_for_s, err, sizeof err)
               < 0) {
        fprintf(stderr, "imagejobs serve: %s\n", err);
        return 2;
    }
    hook_cfg.concurrency = (int)hook_concurrency;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    int gpus = backend == GEN_BACKEND_CPU ? 0 : gen_cuda_device_count();
    long ngen;
    if (strcmp(v[SERVE_GENERATORS], "auto") == 0)
        ngen = generator_auto_count(cores, gpus);
    else if (options_long("generators", v[SERVE_GENERATORS], 0, GENERATORS_MAX, &ngen, err,
                          sizeof err)
             < 0) {
        fprintf(stderr, "imagejobs serve: %s\n", err);
        return 2;
    }
    long compute_threads = cores;
    if (strcmp(v[SERVE_COMPUTE_THREADS], "auto") != 0
        && options_long("compute-threads", v[SERVE_COMPUTE_THREADS], 1, 256, &compute_threads, err,
                        sizeof err)
               < 0) {
        fprintf(stderr, "imagejobs serve: %s\n", err);
        return 2;
    }
    bool per_generator = strcmp(v[SERVE_COMPUTE_POOL], "per-generator") == 0;
    if (!per_generator && strcmp(v[SERVE_COMPUTE_POOL], "shared") != 0) {
        fprintf(stderr, "imagejobs serve: --compute-pool must be shared or per-generator\n");
        return 2;
    }
    char instance[64];
    if (v[SERVE_INSTANCE]) {
        snprintf(instance, sizeof instance, "%s", v[SERVE_INSTANCE]);
    } else {
        char host[48] = "host";
        gethostname(host, sizeof host - 1);
        snprintf(instance, sizeof instance, "%s-%ld", host, (long)getpid());
    }

    log_set_instance(instance);

    /* A plugin is loaded (and its table checked) before anything starts:
     * every reason it cannot be is one line and exit status 2. */
    gen_plugin_t *plugin = NULL;
    if (backend == GEN_BACKEND_PLUGIN
        && !(plugin =
                 gen_plugin_load(gen_backend_plugin_spec(v[SERVE_BACKEND]), v[SERVE_PLUGIN_DIR],
                                 v[SERVE_BACKEND_OPTIONS], err, sizeof err))) {
        fprintf(stderr, "imagejobs serve: %s\n", err);
        return 2;
    }

    /* From here on a SIGTERM waits for us to take it: during the first
     * migration attempt, too, instead of killing the process half-way. */
    sigset_t stop;
    s_stop_signals(&stop);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    /* Schema first, when PostgreSQL is there; when it is not (or another
     * instance holds the lock), the service starts anyway (the API answers
     * 503) and keeps trying below. */
    bool migrated = store_migrate(v[SERVE_DATABASE], err, sizeof err) == 0;
    if (!migrated)
        log_warn("schema not applied yet (%s); retrying in the background", err);

    service_t svc = {0};
    svc.rt = runtime_new();
    if (!svc.rt) {
        log_error("cannot start the runtime");
        gen_plugin_unload(&plugin);
        return 1;
    }
    log_info("imagejobs %s instance %s starting", PACKAGE_VERSION, instance);

    store_config_t store_cfg = {
        .conninfo = v[SERVE_DATABASE], .instance = instance, .lease_s = (double)lease};
    redis_config_t redis_cfg = {.url = v[SERVE_REDIS], .instance = instance};
    http_config_t http_cfg = {.listen = v[SERVE_LISTEN],
                              .cors_origin = v[SERVE_CORS_ORIGIN],
                              .auth_required = auth,
                              .instance = instance,
                              .max_streams = (size_t)max_streams,
                              .stream_buffer = (size_t)stream_buffer,
                              .keepalive_s = (double)keepalive,
                              .view_bytes = (size_t)view_mb << 20};
    if (!(svc.store = store_start(svc.rt, &store_cfg, err, sizeof err))
        || !(svc.redis = redis_start(svc.rt, &redis_cfg, err, sizeof err))) {
        log_error("%s", err);
        s_service_stop(&svc);
        gen_plugin_unload(&plugin);
        return 1;
    }
    /* one pool for every CPU generator: as many compute threads as cores,
     * whatever the number of generators (an inline pool: none) */
    if (backend == GEN_BACKEND_CPU || (backend == GEN_BACKEND_AUTO && gpus == 0)) {
        if (!(svc.pool = gen_pool_new(per_generator ? 0 : (unsigned)compute_threads, GEN_POOL_NICE,
                                      err, sizeof err))) {
            log_error("%s", err);
            s_service_stop(&svc);
            return 1;
        }
        if (per_generator)
            log_info("no compute pool: each CPU generator computes on its own thread");
        else
            log_info("compute pool: %ld threads shared by %ld generators", compute_threads, ngen);
    }
    for (long i = 0; i < ngen; i++) {
        char name[32];
        snprintf(name, sizeof name, ACTOR_GENERATOR_PREFIX "%ld", i);
        generator_config_t gcfg = {
            .name = name,
            .instance = instance,
            .backend = backend,
            .plugin = plugin,
            .device = gpus > 0 ? (int)(i % gpus) : 0,
            .pool = svc.pool,
            .poll_mode = poll_mode,
            .lease_renew_s = (double)lease / 3.,
        };
        if (!(svc.generators[svc.ngenerators] = generator_start(svc.rt, &gcfg, err, sizeof err))) {
            /* a plugin that refuses to open is a start-up error like a
             * missing one: the same one line on stderr, status 2 */
            if (plugin)
                fprintf(stderr, "imagejobs serve: %s\n", err);
            else
                log_error("%s", err);
            int status = plugin ? 2 : 1;
            s_service_stop(&svc);
            gen_plugin_unload(&plugin);
            return status;
        }
        svc.ngenerators++;
    }
    hook_cfg.instance = instance;
    if (hook_cfg.secret && *hook_cfg.secret) {
        if (!(svc.webhook = webhook_start(svc.rt, &hook_cfg, err, sizeof err))) {
            log_error("%s", err);
            s_service_stop(&svc);
            return 1;
        }
    } else {
        log_info("no --webhook-secret: this instance delivers no webhook");
    }
    if (!(svc.http = http_start(svc.rt, &http_cfg, err, sizeof err))) {
        log_error("%s", err);
        s_service_stop(&svc);
        gen_plugin_unload(&plugin);
        return 1;
    }
    /* a generator that computes on its own thread (--compute-pool
     * per-generator) would hold a core at real-time priority: not it */
    if (rt_prio > 0)
        s_realtime(&svc, (int)rt_prio, !per_generator);
    log_info("serving http://%s (%d generators, cancel-check %s, auth %s)", v[SERVE_LISTEN],
             svc.ngenerators, v[SERVE_CANCEL_CHECK], auth ? "required" : "off");
    if (!auth)
        log_warn("auth is off: anyone who can reach %s can create, read and cancel any job",
                 v[SERVE_LISTEN]);

    int sig = migrated ? 0 : s_migrate_until_done(v[SERVE_DATABASE]);
    if (sig == 0)
        sig = runtime_wait_signal(svc.rt);
    log_info("%s received: shutting down", strsignal(sig));
    s_service_stop(&svc);
    gen_plugin_unload(&plugin); /* after the generators closed their instances */
    log_info("stopped");
    return 0;
}

/* ---------------------------------------------------------------- migrate */

static const option_t s_migrate_options[] = {
    {"database", "IMAGEJOBS_DATABASE", "DATABASE_URL", "CONNINFO", "dbname=imagejobs",
     "PostgreSQL: libpq conninfo or URI", 0},
};

static int s_migrate(int argc, char **argv)
{
    const char *v[1];
    char err[512];
    int rc = options_parse(s_migrate_options, 1, v, argc, argv,
                           "usage: imagejobs migrate [--database CONNINFO]", err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "imagejobs migrate: %s\n", err);
        return rc < 0 ? 2 : 0;
    }
    if (store_migrate(v[0], err, sizeof err) < 0) {
        fprintf(stderr, "imagejobs migrate: %s\n", err);
        return 1;
    }
    printf("schema up to date\n");
    return 0;
}

/* ------------------------------------------------------------------- main */

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command_t;

static const command_t s_commands[] = {
    {"serve", s_serve, "run the job API and the generators"},
    {"migrate", s_migrate, "create or upgrade the PostgreSQL schema"},
    {"render", render_main, "render one image to a PNG (no service)"},
    {"keys", keys_main, "create, list and revoke API keys (docs/security.md)"},
    {"submit", client_submit, "client: create a job (--wait: follow it, --out: its images)"},
    {"status", client_status, "client: a job's status"},
    {"watch", client_watch, "client: follow a job's progress until it ends"},
    {"cancel", client_cancel, "client: cancel a job (images already made are kept)"},
    {"list", client_list, "client: the jobs, newest first"},
    {"images", client_images, "client: download a job's images"},
};

static void s_usage(FILE *out)
{
    fprintf(out, "usage: imagejobs COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof s_commands / sizeof *s_commands; i++)
        fprintf(out, "  %-10s %s\n", s_commands[i].name, s_commands[i].help);
    fprintf(out, "\n`imagejobs COMMAND --help` lists a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        s_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        s_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("imagejobs %s\n", PACKAGE_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof s_commands / sizeof *s_commands; i++)
        if (!strcmp(argv[1], s_commands[i].name))
            return s_commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "imagejobs: unknown command '%s'\n", argv[1]);
    s_usage(stderr);
    return 2;
}
