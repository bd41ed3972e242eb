/*
 * watch.c - `imagejobs watch` and `submit --wait`: a job's event stream
 * (GET /api/jobs/{id}/events, docs/events.md) followed with libcurl until
 * the job ends.
 *
 * On a terminal one progress bar per combination, redrawn in place (at
 * most ten times a second); when stdout is not a terminal, one plain line
 * per durable event; with --json, one JSON line per event:
 * {"id": ..., "event": ..., "data": <the server's data>}. A dropped stream
 * is resumed with Last-Event-ID (lossless, on any instance). Ctrl-C asks on
 * the terminal whether to cancel the job; a second Ctrl-C leaves at once,
 * without cancelling.
 */
#include "config.h"

#include "cmd/client.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define COMBOS_MAX 10000
#define BAR_WIDTH 30
#define RETRIES 30

typedef struct {
    long done, total; /* images */
    long step, steps; /* of the image in flight (0: none) */
    char status[16];  /* "" while it runs */
} combo_t;

typedef struct {
    const cli_t *cli;
    const char *job_id;
    bool tty;
    /* the SSE parser (WHATWG "Server-sent events": lines, fields, blank
     * line dispatches) */
    char *line;
    size_t len, cap;
    char event[32], id[32], last_id[32];
    char *data;
    size_t data_len, data_cap;
    /* what the events said */
    combo_t *combos;
    size_t ncombos;
    long completed, total;
    char final[24]; /* the end event's job_status */
    int drawn;      /* lines of bars on the terminal */
    double drawn_at;
} watch_t;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ display */

static void s_bar(char *out, size_t len, long done, long total)
{
    int fill = total > 0 ? (int)(done * BAR_WIDTH / total) : 0;
    if (fill > BAR_WIDTH)
        fill = BAR_WIDTH;
    snprintf(out, len, "[%.*s%.*s]", fill, "##############################", BAR_WIDTH - fill,
             "..............................");
}

static void s_draw(watch_t *w, bool force)
{
    if (!w->tty || w->cli->json)
        return;
    double now = s_now();
    if (!force && now - w->drawn_at < 0.1)
        return;
    w->drawn_at = now;
    if (w->drawn)
        printf("\033[%dA", w->drawn);
    char bar[2 * BAR_WIDTH + 8];
    s_bar(bar, sizeof bar, w->completed, w->total);
    printf("\r\033[Kjob %.8s %s %ld/%ld images%s%s\n", w->job_id, bar, w->completed, w->total,
           w->final[0] ? "  " : "", w->final);
    for (size_t i = 0; i < w->ncombos; i++) {
        combo_t *c = &w->combos[i];
        /* the images made, and the one in flight as a fraction */
        long scaled =
            c->done * 1000 + (c->steps > 0 && !c->status[0] ? c->step * 1000 / c->steps : 0);
        s_bar(bar, sizeof bar, scaled, c->total * 1000);
        if (c->status[0])
            printf("\r\033[K  combination %-3zu %s %ld/%ld  %s\n", i, bar, c->done, c->total,
                   c->status);
        else if (c->steps > 0)
            printf("\r\033[K  combination %-3zu %s %ld/%ld  step %ld/%ld\n", i, bar, c->done,
                   c->total, c->step, c->steps);
        else
            printf("\r\033[K  combination %-3zu %s %ld/%ld\n", i, bar, c->done, c->total);
    }
    w->drawn = (int)w->ncombos + 1;
    fflush(stdout);
}

/* A plain line (not a terminal, not --json). */
static void s_line(const watch_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_line(const watch_t *w, const char *fmt, ...)
{
    if (w->tty || w->cli->json)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

/* ------------------------------------------------------------ events */

static combo_t *s_combo(watch_t *w, json_int_t i)
{
    return i >= 0 && (size_t)i < w->ncombos ? &w->combos[i] : NULL;
}

static void s_on_snapshot(watch_t *w, json_t *doc)
{
    json_t *combos = json_object_get(doc, "combinations");
    size_t n = json_array_size(combos);
    if (n > COMBOS_MAX)
        n = COMBOS_MAX;
    free(w->combos);
    w->combos = calloc(n ? n : 1, sizeof *w->combos);
    if (!w->combos)
        abort();
    w->ncombos = n;
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(combos, i);
        w->combos[i].done = (long)json_integer_value(json_object_get(c, "completed_images"));
        w->combos[i].total = (long)json_integer_value(json_object_get(c, "total_images"));
        const char *st = json_string_value(json_object_get(c, "status"));
        if (st && strcmp(st, "pending") && strcmp(st, "processing"))
            snprintf(w->combos[i].status, sizeof w->combos[i].status, "%s", st);
    }
    w->completed = (long)json_integer_value(json_object_get(doc, "completed_images"));
    w->total = (long)json_integer_value(json_object_get(doc, "total_images"));
    const char *st = json_string_value(json_object_get(doc, "job_status"));
    s_line(w, "job %s: %s, %ld/%ld images, %zu combinations", w->job_id, st ? st : "?",
           w->completed, w->total, n);
}

static void s_dispatch(watch_t *w)
{
    snprintf(w->last_id, sizeof w->last_id, "%s", w->id);
    const char *ev = w->event[0] ? w->event : "message";
    const char *text = w->data ? w->data : "";
    if (w->cli->json) {
        json_t *data = json_loads(text, 0, NULL);
        json_t *line = json_pack("{s:s,s:s,s:o?}", "id", w->id, "event", ev, "data",
                                 data ? data : json_string(text));
        char *s = json_dumps(line, JSON_COMPACT);
        json_decref(line);
        if (s)
            printf("%s\n", s);
        free(s);
        fflush(stdout);
    }
    json_t *d = json_loads(text, 0, NULL);
    json_int_t comb = json_integer_value(json_object_get(d, "combination"));
    combo_t *c = json_object_get(d, "combination") ? s_combo(w, comb) : NULL;
    if (!strcmp(ev, "snapshot")) {
        s_on_snapshot(w, d);
    } else if (!strcmp(ev, "progress") && c) {
        c->step = (long)json_integer_value(json_object_get(d, "step"));
        c->steps = (long)json_integer_value(json_object_get(d, "steps"));
    } else if (!strcmp(ev, "image")) {
        if (c) {
            c->done++;
            c->step = 0;
        }
        w->completed = (long)json_integer_value(json_object_get(d, "completed_images"));
        s_line(w, "combination %lld: image %lld recorded (%ld/%ld)", (long long)comb,
               (long long)json_integer_value(json_object_get(d, "image_index")), w->completed,
               w->total);
    } else if (!strcmp(ev, "cancel")) {
        s_line(w, "job %s: cancel requested (%s)", w->job_id,
               json_string_value(json_object_get(d, "mode")));
    } else if (!strcmp(ev, "stopped") && c) {
        const char *st = json_string_value(json_object_get(d, "status"));
        snprintf(c->status, sizeof c->status, "%s", st ? st : "stopped");
        c->done = (long)json_integer_value(json_object_get(d, "completed_images"));
        s_line(w, "combination %lld: %s with %ld images", (long long)comb, c->status, c->done);
    } else if (!strcmp(ev, "end")) {
        const char *st = json_string_value(json_object_get(d, "job_status"));
        snprintf(w->final, sizeof w->final, "%s", st ? st : "?");
        w->completed = (long)json_integer_value(json_object_get(d, "completed_images"));
        s_line(w, "job %s: %s, %ld/%ld images", w->job_id, w->final, w->completed, w->total);
    }
    json_decref(d);
    s_draw(w, !strcmp(ev, "end"));
}

/* One line of the stream (without its end). */
static void s_field(watch_t *w, const char *line, size_t n)
{
    if (n == 0) { /* a blank line: the event is complete */
        if (w->data_len)
            s_dispatch(w);
        w->event[0] = '\0';
        w->data_len = 0;
        if (w->data)
            w->data[0] = '\0';
        return;
    }
    if (line[0] == ':')
        return; /* a comment: keep-alive */
    const char *colon = memchr(line, ':', n);
    size_t k = colon ? (size_t)(colon - line) : n;
    const char *v = colon ? colon + 1 : line + n;
    size_t vn = colon ? n - k - 1 : 0;
    if (vn && *v == ' ')
        v++, vn--;
    if (k == 5 && !memcmp(line, "event", 5)) {
        snprintf(w->event, sizeof w->event, "%.*s", (int)vn, v);
    } else if (k == 2 && !memcmp(line, "id", 2)) {
        snprintf(w->id, sizeof w->id, "%.*s", (int)vn, v);
    } else if (k == 4 && !memcmp(line, "data", 4)) {
        if (w->data_len + vn + 2 > w->data_cap) {
            w->data_cap = (w->data_len + vn + 2) * 2;
            if (!(w->data = realloc(w->data, w->data_cap)))
                abort();
        }
        if (w->data_len)
            w->data[w->data_len++] = '\n';
        memcpy(w->data + w->data_len, v, vn);
        w->data_len += vn;
        w->data[w->data_len] = '\0';
    }
}

static size_t s_on_bytes(char *p, size_t size, size_t n, void *arg)
{
    watch_t *w = arg;
    size_t k = size * n;
    for (size_t i = 0; i < k; i++) {
        char ch = p[i];
        if (ch == '\n' || ch == '\r') {
            /* CRLF: the LF after a CR ends nothing more */
            if (ch == '\n' && w->len == 0 && i > 0 && p[i - 1] == '\r')
                continue;
            s_field(w, w->line ? w->line : "", w->len);
            w->len = 0;
            continue;
        }
        if (w->len + 2 > w->cap) {
            w->cap = w->cap ? w->cap * 2 : 1024;
            if (w->cap > (64u << 20) || !(w->line = realloc(w->line, w->cap)))
                return 0;
        }
        w->line[w->len++] = ch;
        w->line[w->len] = '\0';
    }
    return k;
}

/* One connection to the stream: 0 when it ended (the job's end came, or
 * the server closed it), -1 on a transport error, 1 when Ctrl-C stopped
 * it; *status the HTTP status. */
static int s_stream(watch_t *w, long *status)
{
    CURL *h = curl_easy_init();
    if (!h)
        return -1;
    char url[1024], auth[256], last[64];
    snprintf(url, sizeof url, "%s/api/jobs/%s/events", w->cli->url, w->job_id);
    struct curl_slist *hl = curl_slist_append(NULL, "Accept: text/event-stream");
    if (w->cli->token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", w->cli->token);
        hl = curl_slist_append(hl, auth);
    }
    if (w->last_id[0]) {
        snprintf(last, sizeof last, "Last-Event-ID: %s", w->last_id);
        hl = curl_slist_append(hl, last);
    }
    w->len = 0;
    w->data_len = 0;
    w->event[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_on_bytes);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    /* the server sends a keep-alive every 15 s: silence past a minute is
     * a dead connection */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, cli_progress);
    CURLcode rc = curl_easy_perform(h);
    *status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    if (rc == CURLE_ABORTED_BY_CALLBACK)
        return 1;
    if (rc == CURLE_WRITE_ERROR && *status == 200 && w->final[0])
        return 0;
    if (rc != CURLE_OK) {
        if (!w->final[0])
            fprintf(stderr, "imagejobs: the event stream of %s broke: %s\n", w->job_id,
                    curl_easy_strerror(rc));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ Ctrl-C */

/* Asks on the terminal; 'y' cancels. Returns 1 (cancel), 0 (go on) or -1
 * (a second Ctrl-C: leave). */
static int s_ask(const watch_t *w)
{
    fprintf(stderr, "\nCancel job %s? Images already made are kept. [y/N] ", w->job_id);
    fflush(stderr);
    int fd = open("/dev/tty", O_RDONLY | O_CLOEXEC);
    int in = fd >= 0 ? fd : STDIN_FILENO;
    char answer[16];
    size_t n = 0;
    int result = 0;
    for (;;) {
        /* a second Ctrl-C may come before the read starts: look at the
         * count at least every 100 ms rather than block in read() */
        if (cli_interrupts > 1) {
            result = -1;
            break;
        }
        struct pollfd pf = {.fd = in, .events = POLLIN};
        int ready = poll(&pf, 1, 100);
        if (ready < 0 && errno != EINTR)
            break;
        if (ready <= 0)
            continue;
        char ch;
        ssize_t r = read(in, &ch, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || ch == '\n')
            break;
        if (n + 1 < sizeof answer)
            answer[n++] = ch;
    }
    answer[n] = '\0';
    if (fd >= 0)
        close(fd);
    if (result == 0)
        result = (answer[0] == 'y' || answer[0] == 'Y') ? 1 : 0;
    return result;
}

static void s_cancel(const watch_t *w)
{
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s/cancel", w->job_id);
    char *out = NULL;
    long status = cli_call(w->cli, "POST", path, NULL, NULL, &out, NULL);
    if (status == 200 || status == 202) {
        json_t *doc = json_loads(out, 0, NULL);
        const char *msg = json_string_value(json_object_get(doc, "message"));
        fprintf(stderr, "%s\n", msg ? msg : out);
        json_decref(doc);
    } else if (status > 0) {
        cli_refused(status, out);
    }
    free(out);
}

/* ------------------------------------------------------------ the loop */

int cli_watch_job(const cli_t *c, const char *job_id, const char *out_dir)
{
    watch_t w = {.cli = c, .job_id = job_id, .tty = isatty(STDOUT_FILENO) == 1};
    int rc = CLI_REFUSED, failures = 0;
    for (;;) {
        long status = 0;
        int r = s_stream(&w, &status);
        if (w.final[0])
            break;
        if (r == 1) { /* Ctrl-C */
            if (w.tty && !c->json)
                w.drawn = 0; /* the prompt moved the cursor: draw anew */
            int ask = s_ask(&w);
            if (ask < 0) {
                fprintf(stderr, "\nleft without cancelling; the job goes on\n");
                rc = CLI_LEFT;
                goto out;
            }
            cli_interrupts = 0;
            if (ask > 0)
                s_cancel(&w);
            continue; /* from the last event id: nothing is missed */
        }
        if (status == 204) { /* resumed after the end: read how it ended */
            int unused;
            json_t *doc = cli_get_job(c, job_id, NULL, &unused);
            const char *s = json_string_value(json_object_get(doc, "job_status"));
            snprintf(w.final, sizeof w.final, "%s", s ? s : "");
            json_decref(doc);
            if (w.final[0])
                break;
        }
        if (status >= 400) { /* the stream's answer was read as events: ask again */
            json_t *doc = cli_get_job(c, job_id, NULL, &rc); /* says why it is refused */
            if (doc)
                rc = cli_refused(status, NULL);
            json_decref(doc);
            goto out;
        }
        if (++failures > RETRIES) {
            fprintf(stderr, "imagejobs: gave up on the event stream of %s\n", job_id);
            goto out;
        }
        struct timespec pause = {1, 0}; /* then resume from the last event id */
        nanosleep(&pause, NULL);
    }
    rc = cli_exit_for(w.final);
    if (out_dir) {
        int d = cli_download(c, job_id, out_dir);
        if (d != CLI_OK)
            rc = d;
    }
out:
    free(w.line);
    free(w.data);
    free(w.combos);
    return rc;
}
