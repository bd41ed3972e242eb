/*
 * sse_client.c - see sse_client.h.
 *
 * Three layers, each working on whatever bytes have arrived so that no split
 * matters: the socket fills `raw`; the body decoder (chunked, Content-Length
 * or until EOF) moves body bytes from `raw` to `text`; the line parser
 * consumes complete lines of `text` and builds events. Each layer keeps its
 * own position, so a 100 KB data line that trickles in is scanned once.
 */
#include "config.h"

#include "tests/sse_client.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SSE_HEAD_MAX (64 * 1024)
#define SSE_BUF_MAX ((size_t)64 * 1024 * 1024)
#define SSE_READ_SIZE 16384

typedef struct {
    char *p;
    size_t len, cap;
} sse_buf_t;

typedef enum { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE } body_kind_t;

typedef enum {
    CHUNK_SIZE,     /* reading a size line */
    CHUNK_DATA,     /* chunk_left bytes of data to go */
    CHUNK_DATA_END, /* the CRLF after a chunk's data */
    CHUNK_TRAILER,  /* trailer lines, up to an empty one */
} chunk_state_t;

typedef struct {
    char *name, *value;
} sse_header_t;

struct sse {
    int fd;
    int status;
    bool head_done;
    bool is_stream; /* 200 text/event-stream */
    bool eof;       /* the socket said EOF */
    bool body_done; /* the body decoder saw its end */
    int error;      /* sticky errno, 0: none */

    sse_header_t *headers;
    size_t n_headers;

    sse_buf_t raw; /* bytes from the socket not yet decoded */
    size_t raw_pos;

    body_kind_t body_kind;
    unsigned long long body_left; /* BODY_LENGTH */
    chunk_state_t chunk_state;
    unsigned long long chunk_left;

    sse_buf_t text;   /* decoded body bytes; for a non-stream, the body */
    size_t text_pos;  /* start of the first unparsed line */
    size_t text_scan; /* where the search for its end resumes */
    bool skip_lf;     /* the last line ended in CR: a next LF belongs to it */
    bool bom_checked;

    /* the standard's buffers */
    sse_buf_t data;
    sse_buf_t type;
    sse_buf_t id_buf;
    sse_buf_t last_id;
    int comments;
    long retry_ms;

    /* what the last dispatched event points into */
    sse_buf_t ev_data, ev_type, ev_id;
};

/* ------------------------------------------------------------- helpers */

static long long s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The poll() timeout left until deadline (-1: none). */
static int s_left(long long deadline)
{
    if (deadline < 0)
        return -1;
    long long left = deadline - s_now_ms();
    return left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

static long long s_deadline(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : s_now_ms() + timeout_ms;
}

/* Appends n bytes and keeps the buffer NUL-terminated. 0, or -1 (ENOMEM). */
static int s_buf_add(sse_buf_t *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        if (b->len + n + 1 > SSE_BUF_MAX) {
            errno = ENOMEM;
            return -1;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            errno = ENOMEM;
            return -1;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int s_buf_cat(sse_buf_t *b, const char *str)
{
    return s_buf_add(b, str, strlen(str));
}

static int s_buf_set(sse_buf_t *b, const char *p, size_t n)
{
    b->len = 0;
    return s_buf_add(b, p, n);
}

static const char *s_buf_str(const sse_buf_t *b)
{
    return b->p ? b->p : "";
}

static void s_buf_free(sse_buf_t *b)
{
    free(b->p);
    *b = (sse_buf_t){0};
}

static int s_fail(sse_t *s, int err)
{
    if (!s->error)
        s->error = err;
    errno = s->error;
    return -1;
}

static int s_write_all(int fd, const char *p, size_t n, long long deadline)
{
    while (n) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int r = poll(&pfd, 1, s_left(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            errno = ETIMEDOUT;
        if (r <= 0)
            return -1;
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads what the socket has into raw, waiting up to deadline.
 * 1: bytes came; 0: EOF; -1: errno (ETIMEDOUT, or a socket error). */
static int s_fill(sse_t *s, long long deadline)
{
    if (s->eof)
        return 0;
    if (s->raw_pos > 0 && s->raw_pos * 2 >= s->raw.len) {
        memmove(s->raw.p, s->raw.p + s->raw_pos, s->raw.len - s->raw_pos);
        s->raw.len -= s->raw_pos;
        s->raw_pos = 0;
    }
    for (;;) {
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
        int r = poll(&pfd, 1, s_left(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        char chunk[SSE_READ_SIZE];
        ssize_t n = recv(s->fd, chunk, sizeof chunk, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            s->eof = true;
            return 0;
        }
        if (s_buf_add(&s->raw, chunk, (size_t)n) < 0)
            return -1;
        return 1;
    }
}

/* ---------------------------------------------------------------- head */

static char *s_strndup_trim(const char *p, size_t n)
{
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r'))
        n--;
    return strndup(p, n);
}

/* Whether the comma-separated header value list contains token. */
static bool s_has_token(const char *list, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ';')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p = strchr(e, ',');
    }
    return false;
}

/* Parses the head raw[0, n): the status line and the header lines, each
 * ended by CRLF or LF. 0, or -1 when it is not an HTTP/1.x response. */
static int s_parse_head(sse_t *s, const char *p, size_t n)
{
    const char *end = p + n;
    const char *eol = memchr(p, '\n', n);
    if (!eol || n < 12 || strncmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ')
        return -1;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (!isdigit((unsigned char)p[i]))
            return -1;
        status = status * 10 + (p[i] - '0');
    }
    for (p = eol + 1; p < end; p = eol + 1) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p)
            continue; /* the blank line that ends the head, or junk */
        sse_header_t *h = realloc(s->headers, (s->n_headers + 1) * sizeof *h);
        if (!h)
            return -1;
        s->headers = h;
        h[s->n_headers].name = s_strndup_trim(p, (size_t)(colon - p));
        h[s->n_headers].value = s_strndup_trim(colon + 1, (size_t)(eol - colon - 1));
        s->n_headers++;
    }
    s->status = status;

    const char *ct = sse_header(s, "content-type");
    size_t ctl = ct ? strcspn(ct, "; \t") : 0;
    s->is_stream = status == 200 && ctl == strlen("text/event-stream")
                   && strncasecmp(ct, "text/event-stream", ctl) == 0;

    const char *te = sse_header(s, "transfer-encoding");
    const char *cl = sse_header(s, "content-length");
    if (status / 100 == 1 || status == 204 || status == 304) {
        s->body_kind = BODY_NONE;
    } else if (te && s_has_token(te, "chunked")) {
        s->body_kind = BODY_CHUNKED;
        s->chunk_state = CHUNK_SIZE;
    } else if (cl) {
        char *e;
        errno = 0;
        unsigned long long v = strtoull(cl, &e, 10);
        if (errno || e == cl || *e || !isdigit((unsigned char)*cl))
            return -1;
        s->body_kind = BODY_LENGTH;
        s->body_left = v;
    } else {
        s->body_kind = BODY_CLOSE;
    }
    if (s->body_kind == BODY_NONE || (s->body_kind == BODY_LENGTH && s->body_left == 0))
        s->body_done = true;
    return 0;
}

/* Reads up to the blank line after the headers. 0, or -1 with errno. */
static int s_read_head(sse_t *s, long long deadline)
{
    while (!s->head_done) {
        const char *p = s->raw.p ? s->raw.p : "";
        size_t n = s->raw.len;
        size_t head_len = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            if (p[i] != '\n')
                continue;
            if (p[i + 1] == '\n') {
                head_len = i + 2;
                break;
            }
            if (p[i + 1] == '\r' && i + 2 < n && p[i + 2] == '\n') {
                head_len = i + 3;
                break;
            }
        }
        if (head_len) {
            if (s_parse_head(s, p, head_len) < 0)
                return s_fail(s, EPROTO);
            s->raw_pos = head_len;
            s->head_done = true;
            return 0;
        }
        if (n > SSE_HEAD_MAX)
            return s_fail(s, EPROTO);
        int r = s_fill(s, deadline);
        if (r == 0)
            return s_fail(s, n ? EPROTO : ECONNRESET);
        if (r < 0)
            return errno == ETIMEDOUT ? -1 : s_fail(s, errno);
    }
    return 0;
}

/* ---------------------------------------------------------------- body */

/* Moves the body bytes that raw holds into text. 0, or -1 (EPROTO, ENOMEM). */
static int s_decode(sse_t *s)
{
    while (!s->body_done && s->raw_pos < s->raw.len) {
        const char *p = s->raw.p + s->raw_pos;
        size_t n = s->raw.len - s->raw_pos;
        if (s->body_kind == BODY_CLOSE || s->body_kind == BODY_LENGTH) {
            if (s->body_kind == BODY_LENGTH && n > s->body_left)
                n = (size_t)s->body_left;
            if (s_buf_add(&s->text, p, n) < 0)
                return -1;
            s->raw_pos += n;
            if (s->body_kind == BODY_LENGTH && (s->body_left -= n) == 0)
                s->body_done = true;
            continue;
        }
        if (s->chunk_state == CHUNK_DATA) {
            if (n > s->chunk_left)
                n = (size_t)s->chunk_left;
            if (s_buf_add(&s->text, p, n) < 0)
                return -1;
            s->raw_pos += n;
            if ((s->chunk_left -= n) == 0)
                s->chunk_state = CHUNK_DATA_END;
            continue;
        }
        /* the other states read whole lines */
        const char *eol = memchr(p, '\n', n);
        if (!eol) {
            if (n > 4096) /* no size line or trailer is that long */
                return s_fail(s, EPROTO);
            return 0;
        }
        size_t line_len = (size_t)(eol - p);
        if (line_len && p[line_len - 1] == '\r')
            line_len--;
        s->raw_pos += (size_t)(eol - p) + 1;
        switch (s->chunk_state) {
        case CHUNK_SIZE: {
            unsigned long long size = 0;
            size_t i = 0;
            for (; i < line_len && isxdigit((unsigned char)p[i]); i++) {
                if (size > (1ULL << 40))
                    return s_fail(s, EPROTO);
                int d = isdigit((unsigned char)p[i]) ? p[i] - '0' : (p[i] | 0x20) - 'a' + 10;
                size = size * 16 + (unsigned)d;
            }
            /* digits, then optional blanks and ";extensions" */
            size_t j = i;
            while (j < line_len && (p[j] == ' ' || p[j] == '\t'))
                j++;
            if (i == 0 || (j < line_len && p[j] != ';'))
                return s_fail(s, EPROTO);
            s->chunk_left = size;
            s->chunk_state = size ? CHUNK_DATA : CHUNK_TRAILER;
            break;
        }
        case CHUNK_DATA_END:
            if (line_len != 0)
                return s_fail(s, EPROTO);
            s->chunk_state = CHUNK_SIZE;
            break;
        case CHUNK_TRAILER:
            if (line_len == 0)
                s->body_done = true;
            break;
        case CHUNK_DATA:
            break;
        }
    }
    return 0;
}

/* --------------------------------------------------------- event stream */

/* The standard's "dispatch the event" at a blank line. 1: an event for the
 * caller (moved to ev_*); 0: none (no data). -1: ENOMEM. */
static int s_dispatch(sse_t *s)
{
    if (s_buf_set(&s->last_id, s_buf_str(&s->id_buf), s->id_buf.len) < 0)
        return -1;
    if (s->data.len == 0) {
        s->type.len = 0;
        return 0;
    }
    if (s->data.p[s->data.len - 1] == '\n')
        s->data.p[--s->data.len] = '\0';
    /* hand the data buffer over without copying a large data line */
    sse_buf_t t = s->ev_data;
    s->ev_data = s->data;
    s->data = t;
    s->data.len = 0;
    if (s->data.p)
        s->data.p[0] = '\0';
    const char *type = s->type.len ? s->type.p : "message";
    if (s_buf_set(&s->ev_type, type, strlen(type)) < 0
        || s_buf_set(&s->ev_id, s_buf_str(&s->last_id), s->last_id.len) < 0)
        return -1;
    s->type.len = 0;
    return 1;
}

/* One line of the stream, without its end. 1: an event was dispatched;
 * 0: not; -1: ENOMEM. */
static int s_line(sse_t *s, const char *p, size_t n)
{
    if (n == 0)
        return s_dispatch(s);
    if (p[0] == ':') {
        s->comments++;
        return 0;
    }
    const char *colon = memchr(p, ':', n);
    size_t name_len = colon ? (size_t)(colon - p) : n;
    const char *v = colon ? colon + 1 : p + n;
    size_t vn = (size_t)(p + n - v);
    if (vn && *v == ' ')
        v++, vn--;
#define IS(lit) (name_len == sizeof lit - 1 && memcmp(p, lit, name_len) == 0)
    if (IS("event")) {
        if (s_buf_set(&s->type, v, vn) < 0)
            return -1;
    } else if (IS("data")) {
        if (s_buf_add(&s->data, v, vn) < 0 || s_buf_add(&s->data, "\n", 1) < 0)
            return -1;
    } else if (IS("id")) {
        if (!memchr(v, '\0', vn) && s_buf_set(&s->id_buf, v, vn) < 0)
            return -1;
    } else if (IS("retry")) {
        long ms = 0;
        size_t i = 0;
        for (; i < vn && isdigit((unsigned char)v[i]) && ms < 1000000000L; i++)
            ms = ms * 10 + (v[i] - '0');
        if (vn && i == vn)
            s->retry_ms = ms;
    }
#undef IS
    return 0;
}

/* Parses the complete lines text holds until one dispatches an event.
 * 1: an event; 0: need more bytes; -1: ENOMEM. */
static int s_parse(sse_t *s)
{
    if (!s->bom_checked) {
        size_t have = s->text.len - s->text_pos;
        const char *p = s->text.p + s->text_pos;
        if (have < 3 && (have == 0 || memcmp(p, "\xEF\xBB\xBF", have) == 0) && !s->body_done)
            return 0; /* maybe a BOM, split */
        if (have >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
            s->text_pos += 3;
        s->bom_checked = true;
        s->text_scan = s->text_pos;
    }
    while (s->text_pos < s->text.len) {
        const char *base = s->text.p;
        if (s->skip_lf) {
            s->skip_lf = false;
            if (base[s->text_pos] == '\n') {
                s->text_pos++;
                s->text_scan = s->text_pos;
                continue;
            }
        }
        size_t i = s->text_scan;
        while (i < s->text.len && base[i] != '\n' && base[i] != '\r')
            i++;
        if (i == s->text.len) {
            s->text_scan = i;
            break;
        }
        size_t start = s->text_pos;
        s->skip_lf = base[i] == '\r';
        s->text_pos = s->text_scan = i + 1;
        int r = s_line(s, base + start, i - start);
        if (r != 0)
            return r;
    }
    /* drop what was parsed, keep the partial line */
    if (s->text_pos > 0 && s->text_pos * 2 >= s->text.len) {
        memmove(s->text.p, s->text.p + s->text_pos, s->text.len - s->text_pos);
        s->text.len -= s->text_pos;
        s->text_scan -= s->text_pos;
        s->text_pos = 0;
        s->text.p[s->text.len] = '\0';
    }
    return 0;
}

/* For an answer that is not a stream: the whole body into text, within the
 * deadline (what came by then is kept). */
static void s_read_body(sse_t *s, long long deadline)
{
    while (!s->body_done && !s->error) {
        if (s_decode(s) < 0)
            return;
        if (s->body_done)
            break;
        int r = s_fill(s, deadline);
        if (r == 0) {
            if (s->body_kind == BODY_CLOSE)
                s->body_done = true;
            return;
        }
        if (r < 0)
            return;
    }
}

/* ------------------------------------------------------------------ API */

sse_t *sse_open_opts(int port, const char *path, const sse_opts_t *opts)
{
    sse_opts_t o = opts ? *opts : (sse_opts_t){.timeout_ms = -1};
    long long deadline = s_deadline(o.timeout_ms);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return NULL;
    if (o.rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o.rcvbuf, sizeof o.rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        if (errno != EINPROGRESS) {
            int e = errno;
            close(fd);
            errno = e;
            return NULL;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int r;
        while ((r = poll(&pfd, 1, s_left(deadline))) < 0 && errno == EINTR)
            ;
        int err = 0;
        socklen_t len = sizeof err;
        if (r == 0)
            err = ETIMEDOUT;
        else if (r < 0)
            err = errno;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            close(fd);
            errno = err;
            return NULL;
        }
    }

    sse_t *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    s->fd = fd;
    s->retry_ms = -1;

    sse_buf_t req = {0};
    char host[64];
    snprintf(host, sizeof host, " HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n", port);
    int ok = s_buf_cat(&req, "GET ") == 0 && s_buf_cat(&req, path) == 0
             && s_buf_cat(&req, host) == 0
             && s_buf_cat(&req, "Accept: text/event-stream\r\nCache-Control: no-cache\r\n") == 0;
    if (ok && o.last_event_id)
        ok = s_buf_cat(&req, "Last-Event-ID: ") == 0 && s_buf_cat(&req, o.last_event_id) == 0
             && s_buf_cat(&req, "\r\n") == 0;
    if (ok && o.extra_headers)
        ok = s_buf_cat(&req, o.extra_headers) == 0;
    ok = ok && s_buf_cat(&req, "\r\n") == 0;
    if (!ok || s_write_all(fd, req.p, req.len, deadline) < 0)
        s_fail(s, errno ? errno : EIO);
    s_buf_free(&req);

    if (!s->error && s_read_head(s, deadline) == 0 && !s->is_stream)
        s_read_body(s, deadline);
    if (!s->text.p)
        s_buf_add(&s->text, "", 0);
    return s;
}

sse_t *sse_open(int port, const char *path, const char *last_event_id, const char *extra_headers,
                int timeout_ms)
{
    sse_opts_t o = {
        .last_event_id = last_event_id, .extra_headers = extra_headers, .timeout_ms = timeout_ms};
    return sse_open_opts(port, path, &o);
}

int sse_next(sse_t *s, sse_event_t *ev, int timeout_ms)
{
    long long deadline = s_deadline(timeout_ms);
    if (s->error)
        return s_fail(s, s->error);
    if (!s->head_done && s_read_head(s, deadline) < 0)
        return -1;
    if (!s->is_stream) {
        s_read_body(s, deadline); /* when the head came only now */
        return s_fail(s, EPROTO);
    }
    for (;;) {
        if (s_decode(s) < 0)
            return s_fail(s, errno);
        int r = s_parse(s);
        if (r < 0)
            return s_fail(s, errno);
        if (r == 1) {
            ev->id = s_buf_str(&s->ev_id);
            ev->event = s_buf_str(&s->ev_type);
            ev->data = s_buf_str(&s->ev_data);
            ev->data_len = s->ev_data.len;
            return 1;
        }
        if (s->body_done)
            return 0; /* a partial line or event left over is dropped */
        r = s_fill(s, deadline);
        if (r == 0) {
            if (s->body_kind != BODY_CLOSE)
                return s_fail(s, ECONNRESET);
            s->body_done = true;
        } else if (r < 0) {
            return errno == ETIMEDOUT ? -1 : s_fail(s, errno);
        }
    }
}

int sse_status(const sse_t *s)
{
    return s->status;
}

const char *sse_header(const sse_t *s, const char *name)
{
    for (size_t i = 0; i < s->n_headers; i++)
        if (s->headers[i].name && strcasecmp(s->headers[i].name, name) == 0)
            return s->headers[i].value;
    return NULL;
}

const char *sse_body(const sse_t *s)
{
    return s->is_stream ? "" : s_buf_str(&s->text);
}

const char *sse_last_event_id(const sse_t *s)
{
    return s_buf_str(&s->last_id);
}

int sse_comments(const sse_t *s)
{
    return s->comments;
}

long sse_retry_ms(const sse_t *s)
{
    return s->retry_ms;
}

int sse_fd(const sse_t *s)
{
    return s->fd;
}

void sse_set_rcvbuf(sse_t *s, int bytes)
{
    setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

void sse_close(sse_t *s)
{
    if (!s)
        return;
    close(s->fd);
    for (size_t i = 0; i < s->n_headers; i++) {
        free(s->headers[i].name);
        free(s->headers[i].value);
    }
    free(s->headers);
    sse_buf_t *bufs[] = {&s->raw,     &s->text,    &s->data,    &s->type, &s->id_buf,
                         &s->last_id, &s->ev_data, &s->ev_type, &s->ev_id};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        s_buf_free(bufs[i]);
    free(s);
}
