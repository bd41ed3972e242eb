/*
 * instances.c - real `imagejobs serve` processes for the end-to-end tests
 * (instances.h): a database of the test's own, instances on it with the
 * suite's Redis, and jobs created through them.
 */
#include "config.h"

#include "tests/instances.h"

#include "tests/api_check.h"

#include <check.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

inst_t inst_all[INST_MAX];
int inst_n;
static char s_dbname[64];
static char s_prefix[48] = "ij_test";
char inst_conninfo[1024];
static char s_other_dbname[64]; /* a second deployment's database */
char inst_other_conninfo[1024];
static bool s_cleanup_registered;

void inst_cleanup(void)
{
    for (int i = 0; i < inst_n; i++)
        if (inst_all[i].pid > 0) {
            api_kill(inst_all[i].pid);
            inst_all[i].pid = 0;
        }
    inst_n = 0;
    if (s_dbname[0]) {
        api_check_database_drop(s_dbname);
        s_dbname[0] = 0;
    }
    if (s_other_dbname[0]) {
        api_check_database_drop(s_other_dbname);
        s_other_dbname[0] = 0;
    }
}

void inst_database(const char *prefix)
{
    if (!s_cleanup_registered) {
        atexit(inst_cleanup);
        s_cleanup_registered = true;
    }
    snprintf(s_prefix, sizeof s_prefix, "%s", prefix); /* names the instances' logs too */
    api_check_database_create(prefix, s_dbname, sizeof s_dbname, inst_conninfo,
                              sizeof inst_conninfo);
}

/* A second database, for instances of another deployment on the same Redis. */
void inst_other_database(void)
{
    char prefix[80];
    snprintf(prefix, sizeof prefix, "%s_other", s_prefix);
    api_check_database_create(prefix, s_other_dbname, sizeof s_other_dbname, inst_other_conninfo,
                              sizeof inst_other_conninfo);
}

void inst_launch(inst_t *in)
{
    const char *args[24] = {"--redis",      getenv("IMAGEJOBS_TEST_REDIS"),
                            "--database",   in->conninfo ? in->conninfo : inst_conninfo,
                            "--generators", in->generators,
                            "--instance",   in->name};
    int n = 8;
    for (int i = 0; in->extra[i]; i++)
        args[n++] = in->extra[i];
    args[n] = NULL;
    char log[256];
    snprintf(log, sizeof log, "tests/%s.%s.log", s_prefix, in->name);
    in->pid = api_spawn(in->port, args, log);
    ck_assert_int_gt(in->pid, 0);
    ck_assert_msg(api_wait_ready(in->port, in->pid, 60) == 0,
                  "instance %s did not become ready (see tests/%s.%s.log)", in->name, s_prefix,
                  in->name);
}

/* Starts an instance with that many generators and extra options
 * (NULL-terminated pairs), and waits until it is ready. */
inst_t *inst_start(const char *name, const char *generators, ...)
{
    ck_assert_int_lt(inst_n, INST_MAX);
    inst_t *in = &inst_all[inst_n++];
    memset(in, 0, sizeof *in);
    snprintf(in->name, sizeof in->name, "%s-%d", name, (int)getpid());
    snprintf(in->generators, sizeof in->generators, "%s", generators);
    in->port = api_free_port();
    ck_assert_int_gt(in->port, 0);
    va_list ap;
    va_start(ap, generators);
    const char *a;
    for (int i = 0; i < 7 && (a = va_arg(ap, const char *)); i++)
        in->extra[i] = a;
    va_end(ap);
    inst_launch(in);
    return in;
}

/* SIGTERM (must exit 0), then the same instance again on the same port. */
void inst_restart(inst_t *in)
{
    ck_assert_int_eq(api_stop(in->pid, 20), 0);
    in->pid = 0;
    inst_launch(in);
}

/* A job of `combos` combinations; its id (caller frees). */
char *inst_create(inst_t *in, int combos, int size, int steps, int images)
{
    char body[1024];
    int n = snprintf(body, sizeof body, "{\"prompt\":\"a lighthouse at dusk\",\"combinations\":[");
    for (int i = 0; i < combos; i++)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s{\"seed\":%d}", i ? "," : "", i + 1);
    snprintf(body + n, sizeof body - (size_t)n,
             "],\"images_per_combination\":%d,\"width\":%d,\"height\":%d,\"steps\":%d}", images,
             size, size, steps);
    return inst_post_job(in, body);
}

/* POST /api/jobs with body, which must answer 201; the job's id. */
char *inst_post_job(inst_t *in, const char *body)
{
    api_response_t r =
        api_check_call(in->port, "POST", "/api/jobs", "Content-Type: application/json\r\n", body);
    ck_assert_msg(r.status == 201, "create: %d %s", r.status, r.body);
    char *id = strdup(api_check_str(r.json, "job_id"));
    api_response_free(&r);
    return id;
}
