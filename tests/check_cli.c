/*
 * check_cli.c - the command-line client (`imagejobs submit|status|watch|
 * cancel|list|images`) against a real `imagejobs serve` with the suite's
 * Redis and PostgreSQL: images downloaded with --wait --out, bars under a
 * pseudo-terminal and plain lines through a pipe, a cancel from another
 * shell, Ctrl-C answered yes, no and with a second Ctrl-C, every --json
 * output parsed, and every exit status of client.h produced. Every wait is
 * for an outcome (a line of output, an exit), with a generous timeout.
 */
#include "config.h"

#include "tests/api_check.h"
#include "tests/fixture.h"
#include "tests/instances.h"
#include "tests/runner.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------ processes */

typedef struct {
    pid_t pid;
    int fd;  /* stdout (and, on a pty, everything) */
    int err; /* stderr through a pipe (-1 on a pty) */
    char out[1 << 16], errtext[1 << 14];
    size_t nout, nerr;
    int status; /* exit status once reaped, else -1 */
} proc_t;

static char s_url[64];

/* Starts `imagejobs ARGS...` with IMAGEJOBS_URL set (on a pty when pty). */
static void s_start(proc_t *p, bool pty, const char *const *args)
{
    memset(p, 0, sizeof *p);
    p->status = -1;
    p->err = -1;
    const char *argv[32] = {getenv("IMAGEJOBS_BIN")};
    int n = 1;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    setenv("IMAGEJOBS_URL", s_url, 1);
    if (pty) {
        struct winsize ws = {.ws_row = 40, .ws_col = 160};
        p->pid = forkpty(&p->fd, NULL, NULL, &ws);
        ck_assert_int_ge(p->pid, 0);
        if (p->pid == 0) {
            execv(argv[0], (char *const *)argv);
            _exit(127);
        }
    } else {
        int o[2], e[2];
        ck_assert_int_eq(pipe(o), 0);
        ck_assert_int_eq(pipe(e), 0);
        p->pid = fork();
        ck_assert_int_ge(p->pid, 0);
        if (p->pid == 0) {
            dup2(o[1], STDOUT_FILENO);
            dup2(e[1], STDERR_FILENO);
            close(o[0]);
            close(e[0]);
            int null = open("/dev/null", O_RDONLY);
            dup2(null, STDIN_FILENO);
            setsid(); /* no terminal: a prompt could not be answered */
            execv(argv[0], (char *const *)argv);
            _exit(127);
        }
        close(o[1]);
        close(e[1]);
        p->fd = o[0];
        p->err = e[0];
    }
}

/* Reads what is there within ms; false when the process is done (both
 * streams closed). */
static bool s_pump(proc_t *p, int ms)
{
    struct pollfd f[2] = {{.fd = p->fd, .events = POLLIN}, {.fd = p->err, .events = POLLIN}};
    int nf = p->err >= 0 ? 2 : 1;
    if (p->fd < 0 && p->err < 0)
        return false;
    if (poll(f, (nfds_t)nf, ms) <= 0)
        return true;
    for (int i = 0; i < nf; i++) {
        if (!(f[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        char *buf = i == 0 ? p->out : p->errtext;
        size_t *len = i == 0 ? &p->nout : &p->nerr;
        size_t cap = i == 0 ? sizeof p->out : sizeof p->errtext;
        ssize_t r = read(f[i].fd, buf + *len, cap - 1 - *len);
        if (r > 0) {
            *len += (size_t)r;
            buf[*len] = '\0';
        } else {
            close(f[i].fd); /* EOF, or EIO on a pty whose child exited */
            if (i == 0)
                p->fd = -1;
            else
                p->err = -1;
        }
    }
    return p->fd >= 0 || p->err >= 0;
}

/* Waits until stdout holds text. */
static void s_expect_out(proc_t *p, const char *text, double timeout_s)
{
    double end = fixture_now() + timeout_s;
    while (!strstr(p->out, text)) {
        ck_assert_msg(fixture_now() < end, "no '%s' in the output within %.0f s:\n%s\n%s", text,
                      timeout_s, p->out, p->errtext);
        if (!s_pump(p, 100) && !strstr(p->out, text))
            ck_abort_msg("exited without '%s':\n%s\n%s", text, p->out, p->errtext);
    }
}

/* Reads everything and reaps; the exit status. */
static int s_finish(proc_t *p, double timeout_s)
{
    double end = fixture_now() + timeout_s;
    while (s_pump(p, 100))
        ck_assert_msg(fixture_now() < end, "still running after %.0f s:\n%s\n%s", timeout_s, p->out,
                      p->errtext);
    int st;
    ck_assert_int_eq(waitpid(p->pid, &st, 0), p->pid);
    p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return p->status;
}

/* Runs to the end through pipes: the exit status. */
static int s_run(proc_t *p, const char *const *args)
{
    s_start(p, false, args);
    return s_finish(p, 120);
}

static void s_write(proc_t *p, const char *s)
{
    ck_assert_int_eq(write(p->fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* ------------------------------------------------------------ helpers */

static int s_count_pngs(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = strstr(e->d_name, ".png") ? fopen(path, "rb") : NULL;
        unsigned char sig[8] = {0};
        if (f && fread(sig, 1, 8, f) == 8 && !memcmp(sig, "\x89PNG\r\n\x1a\n", 8))
            n++;
        if (f)
            fclose(f);
    }
    closedir(d);
    return n;
}

static void s_rmdir(char *dir)
{
    fixture_remove_tree(dir);
    free(dir);
}

/* The first line of out (a job id), copied. */
static char *s_first_line(const char *out)
{
    size_t n = strcspn(out, "\r\n");
    ck_assert_uint_eq(n, 36);
    return strndup(out, n);
}

/* A job of minutes (one combination, 100 images), submitted: its id. */
static char *s_submit_long(void)
{
    proc_t p;
    const char *args[] = {"submit", "--prompt", "a long night", "--images", "100",
                          "--size", "128x128",  "--steps",      "30",       NULL};
    ck_assert_int_eq(s_run(&p, args), 0);
    return s_first_line(p.out);
}

static json_t *s_wait_images(const char *id, json_int_t n)
{
    for (int i = 0; i < 6000; i++) {
        json_t *j = api_check_job(inst_all[0].port, id);
        if (api_check_int(j, "completed_images") >= n)
            return j;
        json_decref(j);
        usleep(10000);
    }
    ck_abort_msg("job %s never made %lld images", id, (long long)n);
    return NULL;
}

static void s_serve(const char *generators)
{
    inst_database("check_cli");
    inst_t *a = inst_start("A", generators, NULL);
    snprintf(s_url, sizeof s_url, "http://127.0.0.1:%d", a->port);
}

/* ------------------------------------------------------------ tests */

START_TEST(test_submit_wait_out_downloads_every_image_with_plain_lines_when_piped)
{
    s_serve("2");
    char *dir = fixture_tmpdir("ij-cli");
    proc_t p;
    const char *args[] = {"submit", "--prompt", "a lighthouse", "--seed",   "1",     "--seed",
                          "2",      "--style",  "ink",          "--images", "2",     "--size",
                          "96x96",  "--steps",  "10",           "--wait",   "--out", dir,
                          NULL};
    ck_assert_int_eq(s_run(&p, args), 0);
    char *id = s_first_line(p.out);
    /* plain lines, no escape sequences */
    ck_assert_ptr_null(strchr(p.out, '\033'));
    ck_assert_ptr_nonnull(strstr(p.out, "image 1 recorded"));
    ck_assert_ptr_nonnull(strstr(p.out, ": completed, 4/4 images"));
    ck_assert_int_eq(s_count_pngs(dir), 4);
    json_t *j = api_check_job(inst_all[0].port, id);
    ck_assert_str_eq(api_check_str(j, "job_status"), "completed");
    json_t *c1 = json_array_get(json_object_get(j, "combinations"), 1);
    ck_assert_int_eq(api_check_int(c1, "seed"), 2);
    ck_assert_str_eq(api_check_str(c1, "style"), "ink");
    json_decref(j);
    /* images again, into another directory */
    char *again = fixture_tmpdir("ij-cli");
    const char *img[] = {"images", id, "--out", again, NULL};
    ck_assert_int_eq(s_run(&p, img), 0);
    ck_assert_int_eq(s_count_pngs(again), 4);
    s_rmdir(again);
    s_rmdir(dir);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_bars_are_drawn_on_a_terminal)
{
    s_serve("2");
    proc_t p;
    const char *args[] = {"submit", "--prompt", "a lighthouse", "--seed", "1",
                          "--seed", "2",        "--images",     "2",      "--size",
                          "96x96",  "--steps",  "20",           "--wait", NULL};
    s_start(&p, true, args);
    ck_assert_int_eq(s_finish(&p, 120), 0);
    ck_assert_ptr_nonnull(strstr(p.out, "\033[K  combination 0"));
    ck_assert_ptr_nonnull(strstr(p.out, "\033[K  combination 1"));
    ck_assert_ptr_nonnull(strstr(p.out, "[##############################] 4/4 images  completed"));
    ck_assert_ptr_nonnull(strstr(p.out, "\033[3A")); /* redrawn in place */
    inst_cleanup();
}
END_TEST

START_TEST(test_a_cancel_from_another_shell_ends_watch_with_3_and_the_images_kept)
{
    s_serve("1");
    char *id = s_submit_long();
    char *dir = fixture_tmpdir("ij-cli");
    proc_t w, c;
    const char *watch[] = {"watch", id, "--out", dir, NULL};
    s_start(&w, false, watch);
    s_expect_out(&w, "recorded", 60);
    const char *cancel[] = {"cancel", id, NULL};
    ck_assert_int_eq(s_run(&c, cancel), 0);
    ck_assert_ptr_nonnull(strstr(c.out, "Cancel request sent"));
    ck_assert_int_eq(s_finish(&w, 120), 3);
    ck_assert_ptr_nonnull(strstr(w.out, "user_cancelled"));
    json_t *j = api_check_job(inst_all[0].port, id);
    json_int_t made = api_check_int(j, "completed_images");
    ck_assert_int_gt(made, 0);
    ck_assert_int_eq(s_count_pngs(dir), (int)made); /* every image made is kept */
    json_decref(j);
    /* the job has ended: a second cancel is refused (5), its status says 3 */
    ck_assert_int_eq(s_run(&c, cancel), 5);
    ck_assert_ptr_nonnull(strstr(c.errtext, "Job already cancelled"));
    const char *status[] = {"status", id, NULL};
    ck_assert_int_eq(s_run(&c, status), 3);
    s_rmdir(dir);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_ctrl_c_asks_yes_cancels_no_goes_on_twice_leaves)
{
    s_serve("1");
    char *id = s_submit_long();
    const char *watch[] = {"watch", id, NULL};

    /* no: the watch goes on (the job too); then yes: cancelled, exit 3 */
    proc_t p;
    s_start(&p, true, watch);
    s_expect_out(&p, "combination 0", 60);
    s_write(&p, "\003");
    s_expect_out(&p, "Images already made are kept. [y/N]", 30);
    s_write(&p, "n\r");
    json_decref(s_wait_images(id, 2));
    p.nout = 0;
    p.out[0] = '\0';
    s_expect_out(&p, "combination 0", 30); /* drawn again */
    json_t *j = api_check_job(inst_all[0].port, id);
    ck_assert(json_is_false(json_object_get(j, "cancel_requested")));
    json_decref(j);

    /* two Ctrl-C: leaves at once, nothing cancelled */
    proc_t q;
    s_start(&q, true, watch);
    s_expect_out(&q, "combination 0", 60);
    s_write(&q, "\003");
    s_expect_out(&q, "[y/N]", 30);
    s_write(&q, "\003");
    ck_assert_int_eq(s_finish(&q, 30), 130);
    ck_assert_ptr_nonnull(strstr(q.out, "left without cancelling"));
    j = api_check_job(inst_all[0].port, id);
    ck_assert(json_is_false(json_object_get(j, "cancel_requested")));
    ck_assert_str_eq(api_check_str(j, "job_status"), "processing");
    json_decref(j);

    /* the first watch, still there: yes */
    s_write(&p, "\003");
    s_expect_out(&p, "[y/N]", 30);
    s_write(&p, "y\r");
    ck_assert_int_eq(s_finish(&p, 120), 3);
    j = api_check_job(inst_all[0].port, id);
    ck_assert_str_eq(api_check_str(j, "job_status"), "user_cancelled");
    ck_assert_int_ge(api_check_int(j, "completed_images"), 2);
    json_decref(j);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_every_json_output_parses)
{
    s_serve("1");
    proc_t p;
    const char *submit[] = {"submit", "--json",  "--prompt", "a dot",  "--size",
                            "64x64",  "--steps", "2",        "--wait", NULL};
    ck_assert_int_eq(s_run(&p, submit), 0);
    /* JSON lines: the created answer, then one per event */
    char *id = NULL;
    int lines = 0;
    bool end = false;
    for (char *line = strtok(p.out, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        json_error_t e;
        json_t *doc = json_loads(line, 0, &e);
        ck_assert_msg(json_is_object(doc), "not JSON: %s (%s)", line, e.text);
        if (lines == 0)
            id = strdup(api_check_str(doc, "job_id"));
        else if (!strcmp(api_check_str(doc, "event"), "end"))
            end = true;
        json_decref(doc);
    }
    ck_assert(end);
    ck_assert_int_ge(lines, 3);
    const char *const cmds[][6] = {
        {"status", id, "--json", NULL},
        {"list", "--json", "--status", "completed", NULL},
        {"watch", id, "--json", NULL},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        ck_assert_int_eq(s_run(&p, cmds[i]), 0);
        for (char *line = strtok(p.out, "\n"); line; line = strtok(NULL, "\n")) {
            json_t *doc = json_loads(line, 0, NULL);
            ck_assert_msg(json_is_object(doc), "%s: not JSON: %s", cmds[i][0], line);
            json_decref(doc);
        }
    }
    char *dir = fixture_tmpdir("ij-cli");
    const char *images[] = {"images", id, "--out", dir, "--json", NULL};
    ck_assert_int_eq(s_run(&p, images), 0);
    json_t *doc = json_loads(p.out, 0, NULL);
    ck_assert_str_eq(api_check_str(doc, "job_id"), id);
    json_decref(doc);
    char *busy = s_submit_long();
    const char *cancel[] = {"cancel", busy, "--json", "--mode", "after_current_image", NULL};
    ck_assert_int_eq(s_run(&p, cancel), 0);
    doc = json_loads(p.out, 0, NULL);
    ck_assert(json_is_true(json_object_get(doc, "success")));
    json_decref(doc);
    s_rmdir(dir);
    free(busy);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_every_exit_status_is_produced)
{
    s_serve("0");
    proc_t p;
    /* 2: usage */
    const char *const usage[][5] = {
        {"submit", NULL},
        {"submit", "--prompt", "x", "--size", NULL},
        {"submit", "--prompt", "x", "--mode", "immediate"},
        {"status", NULL},
        {"status", "not-a-uuid", NULL},
        {"cancel", "00000000-0000-0000-0000-000000000000", "--mode", "later", NULL},
        {"images", "00000000-0000-0000-0000-000000000000", NULL},
        {"list", "--no-such-flag", NULL},
    };
    for (size_t i = 0; i < sizeof usage / sizeof *usage; i++)
        ck_assert_msg(s_run(&p, usage[i]) == 2, "%s: %d %s", usage[i][0], p.status, p.errtext);
    /* 5: refused (the server's message on stderr) */
    const char *missing[] = {"status", "00000000-0000-0000-0000-000000000000", NULL};
    ck_assert_int_eq(s_run(&p, missing), 5);
    ck_assert_ptr_nonnull(strstr(p.errtext, "404: Job not found"));
    const char *bad[] = {"submit", "--prompt", "x", "--size", "63x64", NULL};
    ck_assert_int_eq(s_run(&p, bad), 5);
    ck_assert_ptr_nonnull(strstr(p.errtext, "400"));
    /* 5: unreachable */
    char saved[64];
    snprintf(saved, sizeof saved, "%s", s_url);
    snprintf(s_url, sizeof s_url, "http://127.0.0.1:%d", api_free_port());
    const char *list[] = {"list", NULL};
    ck_assert_int_eq(s_run(&p, list), 5);
    ck_assert_ptr_nonnull(strstr(p.errtext, "cannot reach"));
    snprintf(s_url, sizeof s_url, "%s", saved);
    /* 4: failed (set by hand: the CLI reads what the server says) */
    const char *sub[] = {"submit", "--prompt", "x", "--size", "64x64", NULL};
    ck_assert_int_eq(s_run(&p, sub), 0);
    char *id = s_first_line(p.out);
    PGconn *db = api_check_db(inst_conninfo);
    ck_assert_int_eq(api_check_sql_long(db,
                                        "WITH u AS (UPDATE jobs SET status = 'failed',"
                                        " finished_at = now(), error = 'a test' WHERE id = $1::uuid"
                                        " RETURNING 1) SELECT count(*) FROM u",
                                        id),
                     1);
    PQfinish(db);
    const char *status[] = {"status", id, NULL};
    ck_assert_int_eq(s_run(&p, status), 4);
    const char *watch[] = {"watch", id, NULL};
    ck_assert_int_eq(s_run(&p, watch), 4);
    ck_assert_ptr_nonnull(strstr(p.out, "failed"));
    /* 0 for a pending job's status */
    ck_assert_int_eq(s_run(&p, sub), 0);
    char *pending = s_first_line(p.out);
    const char *st2[] = {"status", pending, NULL};
    ck_assert_int_eq(s_run(&p, st2), 0);
    ck_assert_ptr_nonnull(strstr(p.out, "pending"));
    free(pending);
    free(id);
    inst_cleanup();
}
END_TEST

START_TEST(test_a_token_is_sent_and_a_wrong_one_is_refused)
{
    inst_database("check_cli");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' keys create --name cli --database '%s' 2>/dev/null",
             getenv("IMAGEJOBS_BIN"), inst_conninfo);
    FILE *f = popen(cmd, "r");
    char token[128] = "";
    ck_assert_ptr_nonnull(fgets(token, sizeof token, f));
    ck_assert_int_eq(pclose(f), 0);
    token[strcspn(token, "\n")] = '\0';
    inst_t *a = inst_start("A", "1", "--auth", "required", NULL);
    snprintf(s_url, sizeof s_url, "http://127.0.0.1:%d", a->port);
    proc_t p;
    const char *none[] = {"list", NULL};
    unsetenv("IMAGEJOBS_TOKEN");
    ck_assert_int_eq(s_run(&p, none), 5);
    ck_assert_ptr_nonnull(strstr(p.errtext, "401"));
    const char *wrong[] = {"list", "--token", "ij_nope", NULL};
    ck_assert_int_eq(s_run(&p, wrong), 5);
    setenv("IMAGEJOBS_TOKEN", token, 1);
    const char *sub[] = {"submit",  "--prompt", "x",      "--size", "64x64",
                         "--steps", "2",        "--wait", NULL};
    ck_assert_int_eq(s_run(&p, sub), 0); /* the events stream takes it too */
    unsetenv("IMAGEJOBS_TOKEN");
    inst_cleanup();
}
END_TEST

START_TEST(test_a_serve_with_json_logs_writes_one_object_per_line)
{
    inst_database("check_cli");
    inst_t *a = inst_start("J", "1", "--log-format", "json", "--log-level", "debug", NULL);
    snprintf(s_url, sizeof s_url, "http://127.0.0.1:%d", a->port);
    char *id = s_submit_long();
    json_decref(s_wait_images(id, 1));
    proc_t p;
    const char *cancel[] = {"cancel", id, NULL};
    ck_assert_int_eq(s_run(&p, cancel), 0);
    json_decref(api_check_wait_final(a->port, id, 60, 20));
    inst_cleanup(); /* its last lines written */
    char path[256];
    snprintf(path, sizeof path, "tests/check_cli.%s.log", a->name);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[8192];
    int n = 0, about_job = 0, with_combination = 0;
    while (fgets(line, sizeof line, f)) {
        json_error_t e;
        json_t *o = json_loads(line, 0, &e);
        ck_assert_msg(json_is_object(o), "line %d is not JSON: %s (%s)", n + 1, line, e.text);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(o, "time")));
        ck_assert_ptr_nonnull(json_string_value(json_object_get(o, "level")));
        ck_assert_ptr_nonnull(json_string_value(json_object_get(o, "actor")));
        ck_assert_ptr_nonnull(json_string_value(json_object_get(o, "msg")));
        ck_assert_str_eq(json_string_value(json_object_get(o, "instance")), a->name);
        const char *job = json_string_value(json_object_get(o, "job_id"));
        if (job && !strcmp(job, id)) {
            about_job++;
            with_combination += json_is_integer(json_object_get(o, "combination"));
        }
        json_decref(o);
        n++;
    }
    fclose(f);
    ck_assert_int_gt(n, 5);
    ck_assert_int_gt(about_job, 0);
    ck_assert_int_gt(with_combination, 0);
    free(id);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_submit_wait_out_downloads_every_image_with_plain_lines_when_piped);
    tcase_add_test(tc, test_bars_are_drawn_on_a_terminal);
    tcase_add_test(tc, test_a_cancel_from_another_shell_ends_watch_with_3_and_the_images_kept);
    tcase_add_test(tc, test_ctrl_c_asks_yes_cancels_no_goes_on_twice_leaves);
    tcase_add_test(tc, test_every_json_output_parses);
    tcase_add_test(tc, test_every_exit_status_is_produced);
    tcase_add_test(tc, test_a_token_is_sent_and_a_wrong_one_is_refused);
    tcase_add_test(tc, test_a_serve_with_json_logs_writes_one_object_per_line);
    suite_add_tcase(s, tc);
    return s;
}

static int s_before(void)
{
    static const char *const need[] = {"IMAGEJOBS_TEST_REDIS", "IMAGEJOBS_TEST_DATABASE",
                                       "IMAGEJOBS_BIN", NULL};
    return fixture_need_env("the CLI tests", need);
}

const test_program_t test_program = {.suite = s_suite, .before = s_before};
