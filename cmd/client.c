/*
 * client.c - `imagejobs submit|status|cancel|list|images` (and the
 * options and HTTP calls `watch` shares, watch.c): the job API from a
 * terminal or a script, over libcurl's easy interface.
 *
 * The server comes from --url or IMAGEJOBS_URL (default
 * http://127.0.0.1:8080), the API key from --token or IMAGEJOBS_TOKEN. With
 * --json a command prints the server's JSON on stdout and nothing else;
 * messages go to stderr either way. Exit statuses: client.h.
 */
#include "config.h"

#include "cmd/client.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

volatile int cli_interrupts;

/* ------------------------------------------------------------ HTTP */

typedef struct {
    char *data;
    size_t len, cap;
} body_t;

static size_t s_collect(char *p, size_t size, size_t n, void *arg)
{
    body_t *b = arg;
    size_t k = size * n;
    if (b->len + k + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + k + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return 0; /* libcurl fails the transfer */
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, k);
    b->len += k;
    b->data[b->len] = '\0';
    return k;
}

int cli_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    return cli_interrupts > 0;
}

long cli_call(const cli_t *c, const char *method, const char *path, const char *body,
              const char *const *headers, char **out, size_t *outlen)
{
    CURL *h = curl_easy_init();
    if (!h) {
        fprintf(stderr, "imagejobs: cannot start libcurl\n");
        return -1;
    }
    char url[2048], auth[256];
    snprintf(url, sizeof url, "%s%s", c->url, path);
    struct curl_slist *hl = NULL;
    if (c->token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
        hl = curl_slist_append(hl, auth);
    }
    if (body)
        hl = curl_slist_append(hl, "Content-Type: application/json");
    for (size_t i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    body_t b = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    } else if (!strcmp(method, "POST")) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, cli_progress);
    CURLcode rc = curl_easy_perform(h);
    long status = -1;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    } else if (rc != CURLE_ABORTED_BY_CALLBACK) {
        fprintf(stderr, "imagejobs: cannot reach %s: %s\n", c->url, curl_easy_strerror(rc));
    }
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    if (status < 0) {
        free(b.data);
        return -1;
    }
    if (!b.data && !(b.data = calloc(1, 1)))
        abort();
    *out = b.data;
    if (outlen)
        *outlen = b.len;
    return status;
}

int cli_refused(long status, const char *body)
{
    json_t *doc = body ? json_loads(body, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(doc, "error"));
    fprintf(stderr, "imagejobs: the server answered %ld: %s\n", status,
            msg ? msg : (body && *body ? body : "(no message)"));
    json_decref(doc);
    return CLI_REFUSED;
}

int cli_exit_for(const char *job_status)
{
    if (!job_status)
        return CLI_REFUSED;
    if (!strcmp(job_status, "user_cancelled"))
        return CLI_CANCELLED;
    if (!strcmp(job_status, "failed"))
        return CLI_FAILED;
    return CLI_OK;
}

/* ------------------------------------------------------------ options */

enum {
    O_URL = 1000,
    O_TOKEN,
    O_JSON,
    O_PROMPT,
    O_SEED,
    O_STYLE,
    O_IMAGES,
    O_SIZE,
    O_STEPS,
    O_PRIORITY,
    O_CANCEL_AFTER,
    O_WAIT,
    O_OUT,
    O_MODE,
    O_STATUS,
    O_LIMIT,
    O_HELP,
};

static const struct option s_long[] = {
    {"url", required_argument, NULL, O_URL},
    {"token", required_argument, NULL, O_TOKEN},
    {"json", no_argument, NULL, O_JSON},
    {"prompt", required_argument, NULL, O_PROMPT},
    {"seed", required_argument, NULL, O_SEED},
    {"style", required_argument, NULL, O_STYLE},
    {"images", required_argument, NULL, O_IMAGES},
    {"size", required_argument, NULL, O_SIZE},
    {"steps", required_argument, NULL, O_STEPS},
    {"priority", required_argument, NULL, O_PRIORITY},
    {"cancel-after", required_argument, NULL, O_CANCEL_AFTER},
    {"wait", no_argument, NULL, O_WAIT},
    {"out", required_argument, NULL, O_OUT},
    {"mode", required_argument, NULL, O_MODE},
    {"status", required_argument, NULL, O_STATUS},
    {"limit", required_argument, NULL, O_LIMIT},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

#define LIST_MAX 100

/* What a command was given. */
typedef struct {
    cli_t cli;
    const char *prompt, *size, *cancel_after, *out, *mode, *status;
    const char *seeds[LIST_MAX], *styles[LIST_MAX];
    int nseeds, nstyles;
    long images, steps, priority, limit;
    bool wait, has_priority;
    const char *id; /* the positional JOB_ID */
} args_t;

static const char s_usage[] =
    "usage: imagejobs submit --prompt TEXT [--seed N ...] [--style S ...] [--images N]\n"
    "                        [--size WxH] [--steps N] [--priority P] [--cancel-after 90s]\n"
    "                        [--wait] [--out DIR]\n"
    "       imagejobs status JOB_ID\n"
    "       imagejobs watch JOB_ID [--out DIR]\n"
    "       imagejobs cancel JOB_ID [--mode immediate|after_current_image]\n"
    "       imagejobs list [--status pending,processing,...] [--limit N]\n"
    "       imagejobs images JOB_ID --out DIR\n"
    "Every command: --url URL (IMAGEJOBS_URL, default http://127.0.0.1:8080),\n"
    "  --token TOKEN (IMAGEJOBS_TOKEN), --json (the server's JSON on stdout, nothing else).\n"
    "submit: combinations are every seed with every style (--seed 1 --seed 2 --style a: two).\n"
    "  --out implies --wait: the images are downloaded into DIR when the job ends.\n"
    "watch and submit --wait: one progress bar per combination on a terminal, plain lines\n"
    "  otherwise; Ctrl-C asks whether to cancel the job (images already made are kept),\n"
    "  a second Ctrl-C leaves without cancelling.\n"
    "Exit status: 0 completed (cancel: accepted), 2 usage, 3 the job ended user_cancelled,\n"
    "  4 failed, 5 the server refused or could not be reached, 130 left with Ctrl-C.\n";

static long s_long_arg(const char *cmd, const char *name, const char *v, long min, long max,
                       bool *bad)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (!*v || *end || errno || n < min || n > max) {
        fprintf(stderr, "imagejobs %s: --%s must be an integer from %ld to %ld, not '%s'\n", cmd,
                name, min, max, v);
        *bad = true;
    }
    return n;
}

/* Parses argv into a; which options the command takes is checked by the
 * caller. Returns -1 (usage printed), 1 (--help printed) or 0. */
static int s_parse(int argc, char **argv, args_t *a, bool want_id)
{
    const char *cmd = argv[0];
    memset(a, 0, sizeof *a);
    a->cli.url = getenv("IMAGEJOBS_URL");
    if (!a->cli.url || !*a->cli.url)
        a->cli.url = "http://127.0.0.1:8080";
    a->cli.token = getenv("IMAGEJOBS_TOKEN");
    if (a->cli.token && !*a->cli.token)
        a->cli.token = NULL;
    bool bad = false;
    optind = 1;
    opterr = 0;
    int o;
    while ((o = getopt_long(argc, argv, "", s_long, NULL)) != -1) {
        switch (o) {
        case O_URL:
            a->cli.url = optarg;
            break;
        case O_TOKEN:
            a->cli.token = *optarg ? optarg : NULL;
            break;
        case O_JSON:
            a->cli.json = true;
            break;
        case O_PROMPT:
            a->prompt = optarg;
            break;
        case O_SEED:
            if (a->nseeds == LIST_MAX) {
                fprintf(stderr, "imagejobs %s: at most %d seeds\n", cmd, LIST_MAX);
                return -1;
            }
            a->seeds[a->nseeds++] = optarg;
            break;
        case O_STYLE:
            if (a->nstyles == LIST_MAX) {
                fprintf(stderr, "imagejobs %s: at most %d styles\n", cmd, LIST_MAX);
                return -1;
            }
            a->styles[a->nstyles++] = optarg;
            break;
        case O_IMAGES:
            a->images = s_long_arg(cmd, "images", optarg, 1, 1000, &bad);
            break;
        case O_STEPS:
            a->steps = s_long_arg(cmd, "steps", optarg, 1, 10000, &bad);
            break;
        case O_PRIORITY:
            a->priority = s_long_arg(cmd, "priority", optarg, -1000, 1000, &bad);
            a->has_priority = true;
            break;
        case O_LIMIT:
            a->limit = s_long_arg(cmd, "limit", optarg, 1, 1000, &bad);
            break;
        case O_SIZE:
            a->size = optarg;
            break;
        case O_CANCEL_AFTER:
            a->cancel_after = optarg;
            break;
        case O_WAIT:
            a->wait = true;
            break;
        case O_OUT:
            a->out = optarg;
            break;
        case O_MODE:
            a->mode = optarg;
            break;
        case O_STATUS:
            a->status = optarg;
            break;
        case O_HELP:
            fputs(s_usage, stdout);
            return 1;
        default:
            if (optopt && optopt >= O_URL)
                fprintf(stderr, "imagejobs %s: option --%s needs a value\n", cmd,
                        s_long[optopt - O_URL].name);
            else
                fprintf(stderr, "imagejobs %s: unknown option %s (see --help)\n", cmd,
                        argv[optind - 1]);
            return -1;
        }
    }
    if (bad)
        return -1;
    size_t n = strlen(a->cli.url);
    if (n < 8 || (strncmp(a->cli.url, "http://", 7) && strncmp(a->cli.url, "https://", 8))) {
        fprintf(stderr, "imagejobs %s: --url must be http://HOST:PORT or https://...\n", cmd);
        return -1;
    }
    if (a->cli.url[n - 1] == '/') {
        static char url[1024];
        snprintf(url, sizeof url, "%.*s", (int)(n - 1), a->cli.url);
        a->cli.url = url;
    }
    if (want_id) {
        if (optind >= argc) {
            fprintf(stderr, "imagejobs %s: which job? (imagejobs %s JOB_ID)\n", cmd, cmd);
            return -1;
        }
        a->id = argv[optind++];
        if (strlen(a->id) != 36 || strspn(a->id, "0123456789abcdefABCDEF-") != 36) {
            fprintf(stderr, "imagejobs %s: '%s' is not a job id (a UUID)\n", cmd, a->id);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "imagejobs %s: unexpected argument '%s' (see --help)\n", cmd, argv[optind]);
        return -1;
    }
    return 0;
}

/* Ctrl-C: counted, and the transfer in progress gives up (cli_progress). */
static void s_on_sigint(int sig)
{
    (void)sig;
    cli_interrupts++;
}

static void s_signals(void)
{
    struct sigaction sa = {.sa_handler = s_on_sigint};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a read of the prompt returns EINTR */
    sigaction(SIGINT, &sa, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Refuses the options cmd does not take (allowed: " name name ... ");
 * true when it did. */
static bool s_extra(const args_t *a, const char *cmd, const char *allowed)
{
    const struct {
        const char *name;
        bool given;
    } o[] = {
        {"prompt", a->prompt},
        {"seed", a->nseeds},
        {"style", a->nstyles},
        {"images", a->images},
        {"size", a->size},
        {"steps", a->steps},
        {"priority", a->has_priority},
        {"cancel-after", a->cancel_after},
        {"wait", a->wait},
        {"out", a->out},
        {"mode", a->mode},
        {"status", a->status},
        {"limit", a->limit},
    };
    for (size_t i = 0; i < sizeof o / sizeof *o; i++) {
        char word[32];
        snprintf(word, sizeof word, " %s ", o[i].name);
        if (o[i].given && !strstr(allowed, word)) {
            fprintf(stderr, "imagejobs %s: --%s is not an option of %s (see --help)\n", cmd,
                    o[i].name, cmd);
            return true;
        }
    }
    return false;
}

/* Parses and checks; *rc is the exit status when it returns false. */
static bool s_begin(int argc, char **argv, args_t *a, bool want_id, const char *allowed, int *rc)
{
    int p = s_parse(argc, argv, a, want_id);
    if (p == 0 && !s_extra(a, argv[0], allowed)) {
        s_signals();
        return true;
    }
    *rc = p > 0 ? CLI_OK : CLI_USAGE;
    return false;
}

/* Prints body (the server's JSON) on stdout, as it came. */
static void s_print_json(const char *body)
{
    fputs(body, stdout);
    if (!*body || body[strlen(body) - 1] != '\n')
        fputc('\n', stdout);
    fflush(stdout);
}

/* ------------------------------------------------------------ submit */

static json_t *s_submit_body(const args_t *a, bool *bad)
{
    json_t *doc = json_pack("{s:s}", "prompt", a->prompt);
    json_t *combos = json_array();
    int ns = a->nseeds ? a->nseeds : 1, nt = a->nstyles ? a->nstyles : 1;
    for (int i = 0; i < ns; i++) {
        for (int k = 0; k < nt; k++) {
            json_t *c = json_object();
            if (a->nseeds) {
                char *end;
                errno = 0;
                unsigned long long seed = strtoull(a->seeds[i], &end, 10);
                if (!*a->seeds[i] || *end || errno || *a->seeds[i] == '-') {
                    fprintf(stderr,
                            "imagejobs submit: --seed must be an integer from 0, not '%s'\n",
                            a->seeds[i]);
                    *bad = true;
                }
                json_object_set_new(c, "seed", json_integer((json_int_t)seed));
            }
            if (a->nstyles)
                json_object_set_new(c, "style", json_string(a->styles[k]));
            json_array_append_new(combos, c);
        }
    }
    json_object_set_new(doc, "combinations", combos);
    if (a->images)
        json_object_set_new(doc, "images_per_combination", json_integer(a->images));
    if (a->steps)
        json_object_set_new(doc, "steps", json_integer(a->steps));
    if (a->has_priority)
        json_object_set_new(doc, "priority", json_integer(a->priority));
    if (a->size) {
        unsigned w, h;
        char x;
        if (sscanf(a->size, "%u%c%u", &w, &x, &h) != 3 || (x != 'x' && x != 'X')) {
            fprintf(stderr, "imagejobs submit: --size must be WIDTHxHEIGHT, as 512x512\n");
            *bad = true;
        } else {
            json_object_set_new(doc, "width", json_integer(w));
            json_object_set_new(doc, "height", json_integer(h));
        }
    }
    return doc;
}

int client_submit(int argc, char **argv)
{
    args_t a;
    int rc;
    if (!s_begin(argc, argv, &a, false,
                 " prompt seed style images size steps priority cancel-after wait out ", &rc))
        return rc;
    if (!a.prompt) {
        fprintf(stderr, "imagejobs submit: --prompt is required\n");
        return CLI_USAGE;
    }
    bool bad = false;
    json_t *doc = s_submit_body(&a, &bad);
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (bad || !body) {
        free(body);
        return CLI_USAGE;
    }
    char after[128];
    const char *headers[2] = {NULL, NULL};
    if (a.cancel_after) {
        snprintf(after, sizeof after, "Cancel-After: %s", a.cancel_after);
        headers[0] = after;
    }
    char *out = NULL;
    long status = cli_call(&a.cli, "POST", "/api/jobs", body, headers, &out, NULL);
    free(body);
    if (status < 0)
        return cli_interrupts ? CLI_LEFT : CLI_REFUSED;
    if (status != 201) {
        rc = cli_refused(status, out);
        free(out);
        return rc;
    }
    json_t *created = json_loads(out, 0, NULL);
    const char *id = json_string_value(json_object_get(created, "job_id"));
    if (!id) {
        rc = cli_refused(status, out);
    } else {
        if (a.cli.json)
            s_print_json(out);
        else
            printf("%s\n", id);
        fflush(stdout);
        rc = a.wait || a.out ? cli_watch_job(&a.cli, id, a.out) : CLI_OK;
    }
    json_decref(created);
    free(out);
    return rc;
}

/* ------------------------------------------------------------ status */

json_t *cli_get_job(const cli_t *c, const char *id, char **text, int *rc)
{
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s", id);
    char *out = NULL;
    long status = cli_call(c, "GET", path, NULL, NULL, &out, NULL);
    if (status < 0) {
        *rc = cli_interrupts ? CLI_LEFT : CLI_REFUSED;
        return NULL;
    }
    json_t *doc = status == 200 ? json_loads(out, 0, NULL) : NULL;
    if (!json_is_object(doc)) {
        *rc = cli_refused(status, out);
        json_decref(doc);
        free(out);
        return NULL;
    }
    if (text)
        *text = out;
    else
        free(out);
    return doc;
}

int client_status(int argc, char **argv)
{
    args_t a;
    int rc;
    if (!s_begin(argc, argv, &a, true, " ", &rc))
        return rc;
    char *text = NULL;
    json_t *doc = cli_get_job(&a.cli, a.id, &text, &rc);
    if (!doc)
        return rc;
    const char *st = json_string_value(json_object_get(doc, "job_status"));
    if (a.cli.json) {
        s_print_json(text);
    } else {
        printf("job %s: %s, %lld/%lld images", a.id, st ? st : "?",
               (long long)json_integer_value(json_object_get(doc, "completed_images")),
               (long long)json_integer_value(json_object_get(doc, "total_images")));
        const char *reason = json_string_value(json_object_get(doc, "cancel_reason"));
        if (reason)
            printf(" (cancelled: %s)", reason);
        printf("\n");
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(doc, "combinations"), i, c)
        {
            const char *style = json_string_value(json_object_get(c, "style"));
            printf("  combination %zu: seed %lld%s%s, %s, %lld/%lld images\n", i,
                   (long long)json_integer_value(json_object_get(c, "seed")),
                   style && *style ? ", style " : "", style && *style ? style : "",
                   json_string_value(json_object_get(c, "status")),
                   (long long)json_integer_value(json_object_get(c, "completed_images")),
                   (long long)json_integer_value(json_object_get(c, "total_images")));
        }
    }
    rc = !strcmp(st ? st : "", "pending") || !strcmp(st ? st : "", "processing") ? CLI_OK
                                                                                 : cli_exit_for(st);
    json_decref(doc);
    free(text);
    return rc;
}

/* ------------------------------------------------------------ watch */

int client_watch(int argc, char **argv)
{
    args_t a;
    int rc;
    if (!s_begin(argc, argv, &a, true, " out ", &rc))
        return rc;
    return cli_watch_job(&a.cli, a.id, a.out);
}

/* ------------------------------------------------------------ cancel */

int client_cancel(int argc, char **argv)
{
    args_t a;
    int rc;
    if (!s_begin(argc, argv, &a, true, " mode ", &rc))
        return rc;
    if (a.mode && strcmp(a.mode, "immediate") && strcmp(a.mode, "after_current_image")) {
        fprintf(stderr, "imagejobs cancel: --mode must be immediate or after_current_image\n");
        return CLI_USAGE;
    }
    char path[128], body[64];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", a.id);
    if (a.mode)
        snprintf(body, sizeof body, "{\"mode\":\"%s\"}", a.mode);
    char *out = NULL;
    long status = cli_call(&a.cli, "POST", path, a.mode ? body : NULL, NULL, &out, NULL);
    if (status < 0)
        return cli_interrupts ? CLI_LEFT : CLI_REFUSED;
    json_t *doc = json_loads(out, 0, NULL);
    bool accepted =
        (status == 200 || status == 202) && json_is_true(json_object_get(doc, "success"));
    const char *msg = json_string_value(json_object_get(doc, "message"));
    if (status != 200 && status != 202) {
        rc = cli_refused(status, out);
    } else {
        if (a.cli.json)
            s_print_json(out);
        else
            printf("%s\n", msg ? msg : out);
        if (!accepted && !a.cli.json)
            fprintf(stderr, "imagejobs cancel: not cancelled: %s\n", msg ? msg : "refused");
        rc = accepted ? CLI_OK : CLI_REFUSED;
    }
    json_decref(doc);
    free(out);
    return rc;
}

/* ------------------------------------------------------------ list */

int client_list(int argc, char **argv)
{
    args_t a;
    int rc;
    if (!s_begin(argc, argv, &a, false, " status limit ", &rc))
        return rc;
    char path[512] = "/api/jobs";
    size_t n = strlen(path);
    char sep = '?';
    if (a.status) {
        char *esc = curl_easy_escape(NULL, a.status, 0);
        n += (size_t)snprintf(path + n, sizeof path - n, "%cstatus=%s", sep, esc ? esc : "");
        curl_free(esc);
        sep = '&';
    }
    if (a.limit)
        snprintf(path + n, sizeof path - n, "%climit=%ld", sep, a.limit);
    char *out = NULL;
    long status = cli_call(&a.cli, "GET", path, NULL, NULL, &out, NULL);
    if (status < 0)
        return cli_interrupts ? CLI_LEFT : CLI_REFUSED;
    json_t *doc = status == 200 ? json_loads(out, 0, NULL) : NULL;
    if (!json_is_object(doc)) {
        rc = cli_refused(status, out);
    } else if (a.cli.json) {
        s_print_json(out);
        rc = CLI_OK;
    } else {
        printf("%-36s  %-14s  %9s  %-27s  %s\n", "JOB", "STATUS", "IMAGES", "CREATED", "PROMPT");
        size_t i;
        json_t *j;
        json_array_foreach(json_object_get(doc, "jobs"), i, j)
        {
            char images[32];
            snprintf(images, sizeof images, "%lld/%lld",
                     (long long)json_integer_value(json_object_get(j, "completed_images")),
                     (long long)json_integer_value(json_object_get(j, "total_images")));
            const char *prompt = json_string_value(json_object_get(j, "prompt"));
            printf("%-36s  %-14s  %9s  %-27s  %.60s\n",
                   json_string_value(json_object_get(j, "job_id")),
                   json_string_value(json_object_get(j, "job_status")), images,
                   json_string_value(json_object_get(j, "created_at")), prompt ? prompt : "");
        }
        if (json_is_string(json_object_get(doc, "next_cursor")))
            fprintf(stderr, "(more: the API's next_cursor, GET /api/jobs?cursor=%s)\n",
                    json_string_value(json_object_get(doc, "next_cursor")));
        rc = CLI_OK;
    }
    json_decref(doc);
    free(out);
    return rc;
}

/* ------------------------------------------------------------ images */

int cli_download(const cli_t *c, const char *job_id, const char *dir)
{
    int rc;
    json_t *doc = cli_get_job(c, job_id, NULL, &rc);
    if (!doc)
        return rc;
    if (mkdir(dir, 0777) < 0 && errno != EEXIST) {
        fprintf(stderr, "imagejobs: cannot make %s: %s\n", dir, strerror(errno));
        json_decref(doc);
        return CLI_REFUSED;
    }
    rc = CLI_OK;
    size_t i;
    json_t *att;
    json_array_foreach(json_object_get(doc, "generated_attach_ids"), i, att)
    {
        const char *aid = json_string_value(att);
        char path[128], file[4096];
        snprintf(path, sizeof path, "/api/attachments/%s", aid ? aid : "");
        char *png = NULL;
        size_t len = 0;
        long status = cli_call(c, "GET", path, NULL, NULL, &png, &len);
        if (status != 200) {
            rc = status < 0 ? CLI_REFUSED : cli_refused(status, png);
            free(png);
            break;
        }
        snprintf(file, sizeof file, "%s/%s-%03zu.png", dir, job_id, i + 1);
        FILE *f = fopen(file, "wb");
        bool ok = f && fwrite(png, 1, len, f) == len;
        if (f && fclose(f) != 0)
            ok = false;
        free(png);
        if (!ok) {
            fprintf(stderr, "imagejobs: cannot write %s: %s\n", file, strerror(errno));
            rc = CLI_REFUSED;
            break;
        }
        fprintf(stderr, "%s (%zu bytes)\n", file, len);
    }
    json_decref(doc);
    return rc;
}

int client_images(int argc, char **argv)
{
    args_t a;
    int rc;
    if (!s_begin(argc, argv, &a, true, " out ", &rc))
        return rc;
    if (!a.out) {
        fprintf(stderr, "imagejobs images: --out DIR is required\n");
        return CLI_USAGE;
    }
    rc = cli_download(&a.cli, a.id, a.out);
    if (rc == CLI_OK && a.cli.json) {
        char *text = NULL;
        json_t *doc = cli_get_job(&a.cli, a.id, &text, &rc);
        if (doc)
            s_print_json(text);
        json_decref(doc);
        free(text);
    }
    return rc;
}
