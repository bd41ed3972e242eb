/*
 * main.c - the imagejobs command: `serve` runs the service; other
 * subcommands join as their parts land. Everything but main() lives in
 * libimagejobs.
 */
#include "config.h"

#include "actors/generator/render.h"
#include "runtime/actor.h"
#include "runtime/log.h"
#include "runtime/options.h"
#include "runtime/runtime.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ serve */

enum {
    SERVE_LISTEN,
    SERVE_REDIS,
    SERVE_DATABASE,
    SERVE_GENERATORS,
    SERVE_BACKEND,
    SERVE_INSTANCE,
    SERVE_CANCEL_CHECK,
    SERVE_CORS_ORIGIN,
    SERVE_LOG_LEVEL,
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
    [SERVE_BACKEND] = {"backend", "IMAGEJOBS_BACKEND", NULL, "auto|cpu|cuda", "auto",
                       "generation backend"},
    [SERVE_INSTANCE] = {"instance", "IMAGEJOBS_INSTANCE", NULL, "NAME", NULL,
                        "instance id shared by Redis and PostgreSQL (default: host-pid)"},
    [SERVE_CANCEL_CHECK] = {"cancel-check", "IMAGEJOBS_CANCEL_CHECK", NULL, "event|poll",
                            "event",
                            "event: cancels published to every generator; poll: the "
                            "seed's Redis flag before each image"},
    [SERVE_CORS_ORIGIN] = {"cors-origin", "IMAGEJOBS_CORS_ORIGIN", NULL, "ORIGIN", "*",
                           "Access-Control-Allow-Origin of API responses"},
    [SERVE_LOG_LEVEL] = {"log-level", "IMAGEJOBS_LOG_LEVEL", NULL, "LEVEL", "info",
                         "debug, info, warn or error"},
};

static int s_serve(int argc, char **argv)
{
    const char *v[SERVE_NOPTS];
    char err[256];
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
    if (strcmp(v[SERVE_CANCEL_CHECK], "event") != 0
        && strcmp(v[SERVE_CANCEL_CHECK], "poll") != 0) {
        fprintf(stderr, "imagejobs serve: --cancel-check must be event or poll\n");
        return 2;
    }

    runtime_t *rt = runtime_new();
    if (!rt) {
        log_error("cannot start the runtime");
        return 1;
    }
    log_info("imagejobs %s serving (listen %s, redis %s, cancel-check %s)",
             PACKAGE_VERSION, v[SERVE_LISTEN], v[SERVE_REDIS], v[SERVE_CANCEL_CHECK]);

    int sig = runtime_wait_signal(rt);
    log_info("%s received: shutting down", strsignal(sig));
    runtime_destroy(&rt);
    log_info("stopped");
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
    {"render", render_main, "render one image to a PNG (no service)"},
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
