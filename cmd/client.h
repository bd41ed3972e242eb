/*
 * client.h - the command-line client of the job API: `imagejobs submit`,
 * `status`, `watch`, `cancel`, `list`, `images` (README "The command-line
 * client"). A command, not an actor: its HTTP calls (libcurl's easy
 * interface) may wait.
 *
 * Exit statuses, for scripts: 0 the job completed (status: the call
 * worked; cancel: the cancel was accepted), 2 bad usage, 3 the job ended
 * user_cancelled, 4 it failed, 5 the server refused (its error on stderr)
 * or could not be reached, 130 left with a second Ctrl-C.
 */
#ifndef IMAGEJOBS_CMD_CLIENT_H
#define IMAGEJOBS_CMD_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>
#include <jansson.h>

enum {
    CLI_OK = 0,
    CLI_USAGE = 2,
    CLI_CANCELLED = 3,
    CLI_FAILED = 4,
    CLI_REFUSED = 5,
    CLI_LEFT = 130,
};

typedef struct {
    const char *url;   /* http://HOST:PORT, no trailing slash */
    const char *token; /* NULL: none */
    bool json;         /* the server's JSON on stdout, nothing else */
} cli_t;

/* The commands (argv[0] is the command's name). */
int client_submit(int argc, char **argv);
int client_status(int argc, char **argv);
int client_watch(int argc, char **argv);
int client_cancel(int argc, char **argv);
int client_list(int argc, char **argv);
int client_images(int argc, char **argv);

/* ---- shared by client.c and watch.c ---- */

/* One request: method path (under c->url) with an optional JSON body and
 * extra header lines ("Name: value", NULL-terminated). Returns the HTTP
 * status with the body in *out (malloc'd, NUL-terminated, caller frees), or
 * -1 after saying on stderr why no answer came. */
long cli_call(const cli_t *c, const char *method, const char *path, const char *body,
              const char *const *headers, char **out, size_t *outlen);

/* libcurl's XFERINFOFUNCTION of every transfer: it gives up once Ctrl-C
 * was pressed (the caller asks what to do). */
int cli_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d);

/* GET /api/jobs/{id}: the document (caller decrefs) and, when text is not
 * NULL, its text (caller frees); or NULL with the exit status in *rc after
 * saying on stderr what went wrong. */
json_t *cli_get_job(const cli_t *c, const char *id, char **text, int *rc);

/* Says on stderr what the server answered (its {"error": ...}) and returns
 * CLI_REFUSED. */
int cli_refused(long status, const char *body);

/* The exit status of a job that ended with this status. */
int cli_exit_for(const char *job_status);

/* Follows the job's events until it ends (bars on a terminal, plain lines
 * otherwise, JSON lines with --json); Ctrl-C asks whether to cancel. Then
 * downloads its images into out_dir (NULL: none). The exit status. */
int cli_watch_job(const cli_t *c, const char *job_id, const char *out_dir);

/* Downloads the job's images into dir (made if missing): one line per file
 * on stderr. 0, or the exit status of what failed. */
int cli_download(const cli_t *c, const char *job_id, const char *dir);

/* Ctrl-C presses since the last reset (a SIGINT handler counts them). */
extern volatile int cli_interrupts;

#endif
