/*
 * check_plugin.c - backend plugins (include/imagejobs/backend.h) end to
 * end, through real `imagejobs serve` processes (and the plugin engine on
 * its own, through actors/generator/backend.h):
 *   - every load error (file missing, symbol missing, ABI major mismatch,
 *     open refused, name not in --plugin-dir) is one "imagejobs serve:"
 *     line and exit status 2, and the same for render;
 *   - the same job gives byte-identical PNGs through --backend cpu and
 *     through the procedural plugin, which also generates and cancels like
 *     the built-in engine;
 *   - a slow plugin whose one step would take minutes, but reads the cancel
 *     flag, is interrupted inside that step by a cancel (and by a SIGTERM),
 *     as the plugin's own log shows: the generator's loop went on reading
 *     its inbox while the step ran;
 *   - errors from begin, step and pixels fail their combination with the
 *     plugin's message, and the instance goes on to the next job; a plugin
 *     that crashes in open ends serve and render with a line naming it;
 *   - the example plugin (examples/backend-plugin/), built with its own
 *     Makefile against the installed header (tests/tests.am), generates a
 *     job with previews, and a cancel stops its step before the step would
 *     have ended, by the server's timestamps and the plugin's own trace.
 * Every wait is for an outcome, with a generous timeout; nothing asserts a
 * duration against a fixed time (bench/cancel-latency measures them): the
 * example's cancel is compared with its own configured step length.
 */
#include "config.h"

#include "actors/generator/backend.h"
#include "tests/api_check.h"
#include "tests/fixture.h"
#include "tests/instances.h"
#include "tests/runner.h"
#include "tests/sse_client.h"

#include <check.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The file's contents (caller frees), "" when it cannot be read. */
static char *s_slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n < 2)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* How many times needle occurs in haystack. */
static int s_count(const char *haystack, const char *needle)
{
    int n = 0;
    for (const char *p = haystack; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* Runs `$IMAGEJOBS_BIN args...`, its output into log; its exit status
 * (-1 unless it exited). */
static int s_run(const char *const *args, const char *log)
{
    const char *argv[32] = {getenv("IMAGEJOBS_BIN")};
    int n = 1;
    for (; args[n - 1]; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    pid_t pid = api_exec(argv, NULL, log, true);
    ck_assert_int_gt(pid, 0);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Waits until path holds needle `times` times; fails after timeout_s.
 * With b, calls gen_advance(b) before each look, as an actor's wakeups
 * would. */
static void s_wait_log_advancing(const char *path, const char *needle, int times, double timeout_s,
                                 gen_backend_t *b)
{
    double end = fixture_now() + timeout_s;
    for (;;) {
        if (b) {
            gen_status_t st = gen_advance(b);
            ck_assert_msg(st == GEN_WAIT || st == GEN_MORE, "%d %s", st, gen_error(b));
        }
        char *text = s_slurp(path);
        int n = s_count(text, needle);
        free(text);
        if (n >= times)
            return;
        ck_assert_msg(fixture_now() < end, "'%s' not %d times in %s", needle, times, path);
        fixture_pause_ms(b ? 1 : 20);
    }
}

static void s_wait_log(const char *path, const char *needle, int times, double timeout_s)
{
    s_wait_log_advancing(path, needle, times, timeout_s, NULL);
}

static void s_abs(const char *rel, char *out, size_t len)
{
    char cwd[PATH_MAX];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_lt(snprintf(out, len, "%s/%s", cwd, rel), (int)len);
}

/* ------------------------------------------------------------ load errors */

/* Whether the suite's Redis and PostgreSQL are there (else "SKIP: ..."). */
static bool s_services(void)
{
    return fixture_service("IMAGEJOBS_TEST_REDIS") && fixture_service("IMAGEJOBS_TEST_DATABASE");
}

/* A command's end with a plugin that cannot be used: exit status 2 and
 * one "imagejobs CMD: ..." line saying why; or, for a plugin that crashes,
 * any end but a clean one (death by the signal, or a sanitizer's exit
 * status) after the host's line naming the plugin and the call. */
static void s_check_exit(const char *cmd, const char *backend, int rc, const char *out,
                         const char *says, bool crashes)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "imagejobs %s: ", cmd);
    if (crashes)
        ck_assert_msg(rc != 0 && rc != 2, "%s %s: exit status %d: %s", cmd, backend, rc, out);
    else
        ck_assert_msg(rc == 2, "%s %s: exit status %d, not 2: %s", cmd, backend, rc, out);
    ck_assert_msg(crashes || s_count(out, prefix) == 1, "%s %s: not one error line: %s", cmd,
                  backend, out);
    ck_assert_msg(strstr(out, says), "%s %s: no '%s' in: %s", cmd, backend, says, out);
}

START_TEST(test_every_load_error_is_one_line_and_status_2)
{
    const char *redis = fixture_env("IMAGEJOBS_TEST_REDIS");
    const char *db = fixture_env("IMAGEJOBS_TEST_DATABASE");
    static const struct {
        const char *backend, *dir, *options;
        const char *says;
        bool needs_services; /* open happens when the generators start */
        bool crashes;        /* the plugin kills the process: not status 2 */
    } cases[] = {
        {"plugin:" TEST_PLUGIN_DIR "/missing.so", NULL, NULL, "No such file or directory", false,
         false},
        {"plugin:" TEST_PLUGIN_DIR "/no-entry.so", NULL, NULL, "has no imagejobs_backend_entry()",
         false, false},
        {"plugin:" TEST_PLUGIN_DIR "/abi-2.so", NULL, NULL, "is built for backend ABI 2.0", false,
         false},
        {"plugin:missing", TEST_PLUGIN_DIR, NULL, "plugin 'missing' not found", false, false},
        {"plugin:", NULL, NULL, "needs a path or a name", false, false},
        {"plugin:" TEST_PLUGIN_DIR "/open-fails.so", NULL, NULL,
         "failed to open: test plugin: open refused", true, false},
        {"plugin:" PROCEDURAL_PLUGIN, NULL, "colour=blue", "unknown option 'colour=blue'", true,
         false},
        {"plugin:" TEST_PLUGIN_DIR "/open-crashes.so", NULL, NULL,
         "imagejobs: the backend plugin " TEST_PLUGIN_DIR
         "/open-crashes.so crashed in its open() (SIGSEGV)",
         true, true},
    };
    char port[16];
    snprintf(port, sizeof port, "127.0.0.1:%d", api_free_port());
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (cases[i].needs_services && (!redis || !db)) {
            printf("SKIP: %s needs IMAGEJOBS_TEST_REDIS and IMAGEJOBS_TEST_DATABASE\n",
                   cases[i].backend);
            continue;
        }
        const char *args[20] = {"serve",        "--backend", cases[i].backend, "--listen", port,
                                "--generators", "1"};
        int n = 7;
        if (redis && db) {
            args[n++] = "--redis";
            args[n++] = redis;
            args[n++] = "--database";
            args[n++] = db;
        }
        if (cases[i].dir) {
            args[n++] = "--plugin-dir";
            args[n++] = cases[i].dir;
        }
        if (cases[i].options) {
            args[n++] = "--backend-options";
            args[n++] = cases[i].options;
        }
        args[n] = NULL;
        const char *log = "tests/check_plugin.errors.log";
        int rc = s_run(args, log);
        char *out = s_slurp(log);
        s_check_exit("serve", cases[i].backend, rc, out, cases[i].says, cases[i].crashes);
        free(out);

        if (cases[i].dir) /* render takes the same flags */
            continue;
        const char *r[] = {"render",
                           "--prompt",
                           "p",
                           "--width",
                           "64",
                           "--height",
                           "64",
                           "--steps",
                           "1",
                           "--backend",
                           cases[i].backend,
                           "--backend-options",
                           cases[i].options ? cases[i].options : "",
                           "-o",
                           "tests/check_plugin.render.png",
                           NULL};
        rc = s_run(r, log);
        out = s_slurp(log);
        s_check_exit("render", cases[i].backend, rc, out, cases[i].says, cases[i].crashes);
        free(out);
    }
}
END_TEST

/* ------------------------------------------- the procedural plugin */

/* Runs the job body on `in` to its end; the PNGs of its images, in order
 * (caller frees each and the array), their count in *n. */
static api_response_t *s_job_pngs(inst_t *in, const char *body, size_t *n)
{
    api_response_t r =
        api_check_call(in->port, "POST", "/api/jobs", "Content-Type: application/json\r\n", body);
    ck_assert_msg(r.status == 201, "create: %d %s", r.status, r.body);
    char *id = strdup(api_check_str(r.json, "job_id"));
    api_response_free(&r);
    json_t *job = api_check_wait_final(in->port, id, 120, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "completed");
    json_t *ids = json_object_get(job, "generated_attach_ids");
    *n = json_array_size(ids);
    api_response_t *pngs = calloc(*n, sizeof *pngs);
    for (size_t i = 0; i < *n; i++) {
        char path[128];
        snprintf(path, sizeof path, "/api/attachments/%s",
                 json_string_value(json_array_get(ids, i)));
        pngs[i] = api_check_call(in->port, "GET", path, NULL, NULL);
        ck_assert_int_eq(pngs[i].status, 200);
    }
    json_decref(job);
    free(id);
    return pngs;
}

/* Watches job id's events with previews to its end; how many previews
 * came, each of them w x h. */
static int s_previews(inst_t *in, const char *id, json_int_t w, json_int_t h)
{
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/events?previews=1", id);
    sse_t *sse = sse_open(in->port, path, NULL, NULL, 10000);
    ck_assert_ptr_nonnull(sse);
    ck_assert_int_eq(sse_status(sse), 200);
    int previews = 0;
    for (;;) {
        sse_event_t ev;
        ck_assert_int_eq(sse_next(sse, &ev, 120000), 1);
        if (!strcmp(ev.event, "end"))
            break;
        if (strcmp(ev.event, "preview"))
            continue;
        json_t *d = json_loads(ev.data, 0, NULL);
        ck_assert_ptr_nonnull(d);
        ck_assert_int_eq(api_check_int(d, "width"), w);
        ck_assert_int_eq(api_check_int(d, "height"), h);
        json_decref(d);
        previews++;
    }
    sse_close(sse);
    return previews;
}

START_TEST(test_procedural_plugin_gives_the_cpu_images_and_cancels)
{
    static const char body[] =
        "{\"prompt\":\"a lighthouse on a stormy coast\","
        "\"combinations\":[{\"seed\":7,\"style\":\"oil painting\"}],"
        "\"images_per_combination\":2,\"width\":128,\"height\":96,\"steps\":6}";
    if (!s_services())
        return;
    inst_database("check_plugin");
    inst_t *cpu = inst_start("cpu", "1", "--backend", "cpu", NULL);
    size_t n_cpu, n_plug;
    api_response_t *a = s_job_pngs(cpu, body, &n_cpu);
    inst_cleanup();

    inst_database("check_plugin");
    inst_t *pl = inst_start("procedural", "1", "--backend", "plugin:" PROCEDURAL_PLUGIN, NULL);
    api_response_t *b = s_job_pngs(pl, body, &n_plug);
    ck_assert_int_eq(n_cpu, 2);
    ck_assert_int_eq(n_plug, 2);
    for (size_t i = 0; i < n_cpu; i++) {
        ck_assert_int_gt(a[i].body_len, 100);
        ck_assert_msg(a[i].body_len == b[i].body_len
                          && !memcmp(a[i].body, b[i].body, a[i].body_len),
                      "image %zu differs: %zu bytes on cpu, %zu through the plugin", i,
                      a[i].body_len, b[i].body_len);
        api_response_free(&a[i]);
        api_response_free(&b[i]);
    }
    free(a);
    free(b);

    /* previews, rendered on the plugin's worker after its steps */
    char *watched = inst_create(pl, 1, 256, 40, 2);
    ck_assert_int_gt(s_previews(pl, watched, 128, 128), 0); /* 256x256 box-averaged to 128 */
    free(watched);
    char path[128];

    /* a real cancel through the plugin: images made are kept, it stops */
    char *id = inst_create(pl, 1, 128, 20, 100);
    for (double end = fixture_now() + 120;;) {
        json_t *j = api_check_job(pl->port, id);
        json_int_t done = api_check_int(j, "completed_images");
        json_decref(j);
        if (done >= 1)
            break;
        ck_assert_msg(fixture_now() < end, "no image through the plugin");
        fixture_pause_ms(20);
    }
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    api_response_t r = api_check_call(pl->port, "POST", path, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert(json_is_true(json_object_get(r.json, "success")));
    api_response_free(&r);
    json_t *job = api_check_wait_final(pl->port, id, 60, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    json_int_t done = api_check_int(job, "completed_images");
    ck_assert_int_ge(done, 1);
    ck_assert_int_lt(done, 100);
    ck_assert_int_eq(done,
                     (json_int_t)json_array_size(json_object_get(job, "generated_attach_ids")));
    json_t *c0 = json_array_get(json_object_get(job, "combinations"), 0);
    ck_assert_str_eq(api_check_str(c0, "status"), "cancelled");
    json_decref(job);
    free(id);
    inst_cleanup();
}
END_TEST

/* ------------------------------------------------- a slow plugin */

/* Posts a job of one 64x64 image of `steps` steps with that prompt; its id
 * (caller frees). */
static char *s_post_job(inst_t *in, const char *prompt, int steps)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"prompt\":\"%s\",\"images_per_combination\":1,\"width\":64,\"height\":64,"
             "\"steps\":%d}",
             prompt, steps);
    api_response_t r =
        api_check_call(in->port, "POST", "/api/jobs", "Content-Type: application/json\r\n", body);
    ck_assert_int_eq(r.status, 201);
    char *id = strdup(api_check_str(r.json, "job_id"));
    api_response_free(&r);
    return id;
}

/* A job of one image of 3 steps, each of which the slow plugin would take
 * step_ms for. */
static char *s_slow_job(inst_t *in)
{
    return s_post_job(in, "slow", 3);
}

/* An instance on a fresh database with one generator on the slow test
 * plugin (found by name), each step step_ms long, its log (emptied) at
 * tests/check_plugin.NAME.txt, whose absolute path goes into log. */
static inst_t *s_slow_instance(const char *name, long step_ms, char *log, size_t loglen)
{
    static char options[PATH_MAX + 128]; /* the instance keeps it for a restart */
    char rel[64];
    snprintf(rel, sizeof rel, "tests/check_plugin.%s.txt", name);
    s_abs(rel, log, loglen);
    unlink(log);
    snprintf(options, sizeof options, "step_ms=%ld,log=%s", step_ms, log);
    inst_database("check_plugin");
    return inst_start(name, "1", "--backend", "plugin:slow", "--plugin-dir", TEST_PLUGIN_DIR,
                      "--backend-options", options, NULL);
}

START_TEST(test_a_cancel_interrupts_a_slow_plugins_step)
{
    char log[PATH_MAX + 64];
    if (!s_services())
        return;
    /* a step of 10 minutes: only the cancel flag can end it within the test */
    inst_t *in = s_slow_instance("slow", 600000, log, sizeof log);
    s_wait_log(log, "open device 0", 1, 30);

    char *id = s_slow_job(in);
    s_wait_log(log, "step 1 started", 1, 60);
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    api_response_t r = api_check_call(in->port, "POST", path, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(api_check_str(r.json, "current_status"), "processing");
    api_response_free(&r);
    json_t *job = api_check_wait_final(in->port, id, 120, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    ck_assert_int_eq(api_check_int(job, "completed_images"), 0);
    json_t *c0 = json_array_get(json_object_get(job, "combinations"), 0);
    ck_assert_str_eq(api_check_str(c0, "status"), "cancelled");
    /* observed by the generator's loop while the plugin's step ran */
    ck_assert_ptr_nonnull(json_string_value(json_object_get(c0, "cancel_observed_at")));
    json_decref(job);
    free(id);
    s_wait_log(log, "step 1 interrupted by the cancel flag", 1, 60);
    s_wait_log(log, "abort", 1, 60);
    char *text = s_slurp(log);
    ck_assert_msg(!strstr(text, "step 1 done"), "the step ran to its end: %s", text);
    free(text);

    /* the same generator takes the next job; a SIGTERM in its step ends it too */
    id = s_slow_job(in);
    s_wait_log(log, "step 1 started", 2, 60);
    ck_assert_int_eq(api_stop(in->pid, 60), 0);
    in->pid = 0;
    s_wait_log(log, "step 1 interrupted by the cancel flag", 2, 30);
    s_wait_log(log, "close", 1, 30);
    text = s_slurp(log);
    ck_assert_msg(!strstr(text, "step 1 done"), "a step ran to its end: %s", text);
    free(text);
    free(id);
    inst_cleanup();
}
END_TEST

/* ------------------------------------------- errors inside a plugin */

START_TEST(test_plugin_errors_fail_their_combination_and_the_instance_goes_on)
{
    char log[PATH_MAX + 64];
    if (!s_services())
        return;
    inst_t *in = s_slow_instance("errors", 5, log, sizeof log);
    static const struct {
        const char *prompt, *says;
    } cases[] = {
        {"fail:begin", "begin: test plugin: begin failed, as the prompt asked"},
        {"fail:step:2", "step: test plugin: step 2 failed, as the prompt asked"},
        {"fail:pixels", "pixels: test plugin: pixels failed, as the prompt asked"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *id = s_post_job(in, cases[i].prompt, 3);
        json_t *job = api_check_wait_final(in->port, id, 60, 20);
        ck_assert_str_eq(api_check_str(job, "job_status"), "failed");
        json_t *c0 = json_array_get(json_object_get(job, "combinations"), 0);
        ck_assert_str_eq(api_check_str(c0, "status"), "failed");
        ck_assert_msg(strstr(api_check_str(c0, "error"), cases[i].says), "%s: error '%s'",
                      cases[i].prompt, api_check_str(c0, "error"));
        ck_assert_msg(strstr(api_check_str(job, "error"), cases[i].says), "%s: job error '%s'",
                      cases[i].prompt, api_check_str(job, "error"));
        ck_assert_int_eq(api_check_int(job, "completed_images"), 0);
        json_decref(job);
        free(id);
    }
    /* the same generator, the same plugin instance, takes the next job */
    char *id = s_post_job(in, "fine", 3);
    json_t *job = api_check_wait_final(in->port, id, 60, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "completed");
    ck_assert_int_eq(api_check_int(job, "completed_images"), 1);
    json_decref(job);
    free(id);
    char *text = s_slurp(log);
    ck_assert_msg(s_count(text, "open device") == 1, "the plugin was opened again: %s", text);
    free(text);
    inst_cleanup();
}
END_TEST

/* ------------------------------------------- the example plugin */

/* An ISO 8601 UTC time of the API ("2026-12-01T15:38:58.571899Z") in s. */
static double s_iso(json_t *o, const char *key)
{
    const char *t = api_check_str(o, key);
    struct tm tm = {0};
    int us = 0;
    ck_assert_msg(sscanf(t, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                         &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &us)
                      == 7,
                  "%s: '%s'", key, t);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (double)timegm(&tm) + us / 1e6;
}

/* The time in the example's trace line "...: step K of N <what> at T" of
 * the log at path (waiting for it). */
static double s_trace_time(const char *path, const char *line_start)
{
    s_wait_log(path, line_start, 1, 60);
    char *text = s_slurp(path);
    double t = 0;
    const char *at = strstr(strstr(text, line_start), " at ");
    ck_assert_msg(at && sscanf(at, " at %lf", &t) == 1, "no time after '%s'", line_start);
    free(text);
    return t;
}

START_TEST(test_the_example_plugin_generates_and_a_cancel_cuts_its_step_short)
{
    /* a step of at least STEP_MS: the cancel must end it well before */
    enum { STEP_MS = 800 };
    char options[64];
    snprintf(options, sizeof options, "step_ms=%d,trace=1", STEP_MS);
    if (!s_services())
        return;
    inst_database("check_plugin");
    inst_t *in = inst_start("example", "1", "--backend", "plugin:" EXAMPLE_PLUGIN,
                            "--backend-options", options, NULL);
    char log[PATH_MAX];
    snprintf(log, sizeof log, "tests/check_plugin.%s.log", in->name);

    /* a real job, with previews of the zoom as it goes */
    char *id = inst_create(in, 1, 64, 3, 1);
    ck_assert_int_gt(s_previews(in, id, 64, 64), 0);
    json_t *job = api_check_wait_final(in->port, id, 60, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "completed");
    json_decref(job);
    free(id);

    /* a cancel early in step 2 of 20: requested while the step runs, and
     * seen by the generator and by the plugin before the step's end */
    id = inst_create(in, 1, 64, 20, 1);
    double started = s_trace_time(log, "mandelbrot[0]: step 2 of 20 started");
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
    api_response_t r = api_check_call(in->port, "POST", path, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    api_response_free(&r);
    job = api_check_wait_final(in->port, id, 60, 20);
    ck_assert_str_eq(api_check_str(job, "job_status"), "user_cancelled");
    json_t *c0 = json_array_get(json_object_get(job, "combinations"), 0);
    ck_assert_str_eq(api_check_str(c0, "status"), "cancelled");
    double requested = s_iso(job, "cancel_requested_at");
    double observed = s_iso(c0, "cancel_observed_at");
    double stopped = s_iso(c0, "stopped_at");
    json_decref(job);
    double cut = s_trace_time(log, "mandelbrot[0]: step 2 of 20 cancelled");
    double end = started + STEP_MS / 1000.0; /* when step 2 would have ended */
    printf("example plugin: step 2 began at +0 ms, cancel requested +%.1f, observed +%.1f, "
           "stopped +%.1f, the plugin's step cut at +%.1f ms (a step: %d ms)\n",
           (requested - started) * 1000, (observed - started) * 1000, (stopped - started) * 1000,
           (cut - started) * 1000, STEP_MS);
    ck_assert_msg(requested >= started, "the cancel came before step 2 began");
    ck_assert_msg(observed < end && stopped < end && cut < end,
                  "the stop came after step 2 would have ended (see the line above)");
    char *text = s_slurp(log);
    ck_assert_msg(!strstr(text, "step 2 of 20 done"), "step 2 ran to its end");
    free(text);
    free(id);
    inst_cleanup();
}
END_TEST

/* ------------------------------------------------- the engine alone */

static atomic_int s_wakeups;

static void s_count_wakeup(void *arg)
{
    atomic_fetch_add(&s_wakeups, 1);
}

static gen_plugin_t *s_load(const char *spec, const char *options)
{
    char err[512];
    gen_plugin_t *pl = gen_plugin_load(spec, NULL, options, err, sizeof err);
    ck_assert_msg(pl != NULL, "%s: %s", spec, err);
    return pl;
}

/* Runs b's image from gen_begin on, as an actor does (gen_advance until
 * GEN_DONE) but waiting here where an actor would wait for the wakeup. */
static void s_until_done(gen_backend_t *b)
{
    for (;;) {
        gen_status_t st = gen_advance(b);
        ck_assert_msg(st != GEN_ERROR, "%s", gen_error(b));
        if (st == GEN_DONE)
            return;
        if (st == GEN_WAIT)
            fixture_pause_ms(1);
    }
}

START_TEST(test_engine_matches_cpu_after_an_abort_in_flight)
{
    char err[512];
    gen_params_t big = {
        .prompt = "a valley of pines", .seed = 5, .width = 512, .height = 512, .steps = 50};
    gen_params_t p = {.prompt = "a lighthouse at dusk, oil painting",
                      .seed = 11,
                      .image_index = 3,
                      .width = 192,
                      .height = 128,
                      .steps = 7};
    gen_backend_t *cpu = gen_backend_open(GEN_BACKEND_CPU, err, sizeof err);
    ck_assert_msg(cpu != NULL, "%s", err);
    uint8_t *want = NULL;
    ck_assert_int_eq(gen_render_sync(cpu, &p, &want, NULL, err, sizeof err), 0);
    gen_backend_close(&cpu);

    gen_plugin_t *pl = s_load(PROCEDURAL_PLUGIN, "preview=1");
    gen_backend_t *b = gen_backend_open_for(GEN_BACKEND_PLUGIN, pl, 0, NULL, err, sizeof err);
    ck_assert_msg(b != NULL, "%s", err);
    ck_assert_str_eq(gen_backend_name(b), "plugin:procedural");
    atomic_store(&s_wakeups, 0);
    gen_backend_set_wakeup(b, s_count_wakeup, NULL);

    /* a big image, dropped while its steps run on the worker */
    ck_assert_int_eq(gen_begin(b, &big, err, sizeof err), 0);
    while (gen_steps_done(b) < 2) {
        gen_status_t st = gen_advance(b);
        ck_assert_msg(st == GEN_WAIT || st == GEN_MORE, "%d %s", st, gen_error(b));
        fixture_pause_ms(1);
    }
    gen_abort(b); /* returns at once: the step in flight sees the flag */
    ck_assert_ptr_null(gen_pixels(b));
    ck_assert_int_eq(gen_advance(b), GEN_ERROR); /* no image now */

    /* the next image is the CPU's, byte for byte, and then its previews */
    ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), 0);
    uint8_t prev[128 * 128 * 3];
    uint32_t pw, ph;
    ck_assert_int_eq(gen_preview(b, 128, prev, &pw, &ph), -1); /* the first ask: pending */
    ck_assert(gen_preview_pending(b));
    s_until_done(b);
    ck_assert_int_gt(atomic_load(&s_wakeups), 0);
    ck_assert_int_eq(gen_steps_done(b), 7);
    ck_assert_int_eq(memcmp(gen_pixels(b), want, (size_t)p.width * p.height * 3), 0);
    ck_assert_int_eq(gen_preview(b, 128, prev, &pw, &ph), 0);
    ck_assert_int_eq(pw, 128);
    ck_assert_int_eq(ph, 85); /* 192x128 at a longest side of 128 */

    /* the plugin's own limits are checked before anything is queued */
    gen_params_t odd = p;
    odd.steps = 201;
    ck_assert_int_eq(gen_begin(b, &odd, err, sizeof err), -1);
    gen_backend_close(&b);
    gen_plugin_unload(&pl);
    free(want);
}
END_TEST

/* Calls gen_advance (as the actor's wakeups would) until the plugin's log
 * holds needle `times` times. */
static void s_advance_until(gen_backend_t *b, const char *log, const char *needle, int times)
{
    s_wait_log_advancing(log, needle, times, 60, b);
}

START_TEST(test_engine_abort_and_close_do_not_wait_for_a_slow_step)
{
    char err[512], log[PATH_MAX + 64], options[PATH_MAX + 128];
    s_abs("tests/check_plugin.engine.txt", log, sizeof log);
    unlink(log);
    snprintf(options, sizeof options, "step_ms=600000,log=%s", log);
    gen_plugin_t *pl = s_load(TEST_PLUGIN_DIR "/slow.so", options);
    gen_backend_t *b = gen_backend_open_for(GEN_BACKEND_PLUGIN, pl, 0, NULL, err, sizeof err);
    ck_assert_msg(b != NULL, "%s", err);
    gen_params_t p = {.prompt = "slow", .width = 64, .height = 64, .steps = 2};
    for (int round = 1; round <= 2; round++) {
        ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), 0);
        s_advance_until(b, log, "step 1 started", round);
        /* a 10-minute step in flight: the tcase's 60 s would run out if
         * gen_advance, gen_abort or gen_begin waited for it */
        ck_assert_int_eq(gen_advance(b), GEN_WAIT);
        gen_abort(b);
        s_wait_log(log, "step 1 interrupted by the cancel flag", round, 60);
    }
    ck_assert_int_eq(gen_begin(b, &p, err, sizeof err), 0);
    s_advance_until(b, log, "step 1 started", 3);
    gen_backend_close(&b); /* raises the flag, joins the worker */
    s_wait_log(log, "close", 1, 1);
    gen_plugin_unload(&pl);
}
END_TEST

START_TEST(test_loader_checks_the_table)
{
    char err[512];
    gen_plugin_t *pl = s_load(TEST_PLUGIN_DIR "/minor-99.so", NULL); /* newer minor: fine */
    gen_plugin_unload(&pl);
    ck_assert_ptr_null(
        gen_plugin_load(TEST_PLUGIN_DIR "/short-table.so", NULL, NULL, err, sizeof err));
    ck_assert_msg(strstr(err, "ABI 1.0 needs"), "%s", err);
    ck_assert_ptr_null(gen_plugin_load(TEST_PLUGIN_DIR "/abi-2.so", NULL, NULL, err, sizeof err));
    ck_assert_msg(strstr(err, "built for backend ABI 2.0, this imagejobs speaks 1.x"), "%s", err);
    /* a name: NAME.so, then imagejobs-backend-NAME.so in the directory */
    pl = gen_plugin_load("slow", TEST_PLUGIN_DIR, NULL, err, sizeof err);
    ck_assert_msg(pl != NULL, "%s", err);
    ck_assert_str_eq(gen_plugin_path(pl), TEST_PLUGIN_DIR "/slow.so");
    gen_plugin_unload(&pl);
    ck_assert_ptr_null(gen_plugin_load("slow", NULL, NULL, err, sizeof err));
    gen_backend_kind_t k;
    ck_assert_int_eq(gen_backend_kind_parse("plugin:x", &k), 0);
    ck_assert_int_eq(k, GEN_BACKEND_PLUGIN);
    ck_assert_str_eq(gen_backend_plugin_spec("plugin:/a/b.so"), "/a/b.so");
    ck_assert_ptr_null(gen_backend_plugin_spec("cpu"));
    ck_assert_ptr_null(gen_backend_open_for(GEN_BACKEND_PLUGIN, NULL, 0, NULL, err, sizeof err));
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("plugin");
    TCase *tc = tcase_create("plugin");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_every_load_error_is_one_line_and_status_2);
    tcase_add_test(tc, test_procedural_plugin_gives_the_cpu_images_and_cancels);
    tcase_add_test(tc, test_a_cancel_interrupts_a_slow_plugins_step);
    tcase_add_test(tc, test_plugin_errors_fail_their_combination_and_the_instance_goes_on);
    tcase_add_test(tc, test_the_example_plugin_generates_and_a_cancel_cuts_its_step_short);
    suite_add_tcase(s, tc);
    TCase *engine = tcase_create("engine");
    tcase_set_timeout(engine, 60);
    tcase_add_test(engine, test_engine_matches_cpu_after_an_abort_in_flight);
    tcase_add_test(engine, test_engine_abort_and_close_do_not_wait_for_a_slow_step);
    tcase_add_test(engine, test_loader_checks_the_table);
    suite_add_tcase(s, engine);
    return s;
}

static int s_before(void)
{
    static const char *const need[] = {"IMAGEJOBS_BIN", NULL};
    return fixture_need_env("the plugin tests", need);
}

const test_program_t test_program = {.suite = s_suite, .before = s_before};
