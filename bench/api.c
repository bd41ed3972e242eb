/*
 * bench/api.c - the job API under load, and what idle connections cost.
 *
 * Starts `$IMAGEJOBS_BIN serve --generators 0` on a free loopback port
 * against $IMAGEJOBS_BENCH_REDIS and $IMAGEJOBS_BENCH_DATABASE (or attaches
 * to a running server with --url and --pid), creates jobs (they stay
 * pending: no generator competes for the CPUs), then measures:
 *   - the server's RSS after a warm-up;
 *   - GET /api/jobs/{id} and POST /api/jobs/{id}/cancel: req/s, p50, p99,
 *     p99.9 and the status mix, from a closed-loop epoll load generator in
 *     this process (C keep-alive connections, each with `depth` requests in
 *     flight; requests rotate over the jobs);
 *   - the server's RSS with N idle keep-alive connections, each of which has
 *     been served one GET /healthz, and the cost per connection.
 * Each request's latency is its own: CLOCK_MONOTONIC when it is written to
 * when its response has been read in full (status line, headers and the
 * Content-Length bytes of body). Every response is parsed; a response that
 * is not HTTP, a reset or an early close counts as a connection error.
 * The load generator is one thread sharing the machine's cores with the
 * server, Redis and PostgreSQL: the table says how the CPU time was split.
 *
 * Then, unless --live-generators 0, a live round against a server with
 * generators (`--generators 2` by default):
 *   - GET /healthz (the HTTP layer alone), GET of ended jobs, and nginx
 *     serving the very bytes of an ended job's document (the floor, same
 *     load generator, same run), with the generators idle; then GET of the
 *     running jobs (one per generator), of the ended ones, and nginx again
 *     while the generators work: each GET as a ratio of nginx's req/s;
 *   - real cancels of running jobs: one flow per generator makes a job,
 *     waits until it runs, cancels it and reads it back until it is
 *     user_cancelled (the answer's latency, and the server's requested ->
 *     observed -> stopped times; counts checked);
 *   - a mixed load: paced creates, every other job cancelled as soon as it
 *     is made, N event streams on GET /api/events, and the GET load.
 *
 * With --auth both (the default when it starts the server) the GET and
 * cancel loads run twice in the same run: against `serve --auth off`, then
 * against `serve --auth required` with every request carrying a key's
 * token (a key made with `imagejobs keys create`, its own jobs): the cost
 * of authentication, as the ratio of the two (docs/security.md).
 *
 *   bench/api [--connections N] [--depth N] [--duration S] [--warmup S]
 *             [--jobs N] [--idle N] [--auth off|required|both]
 *             [--live-generators N] [--create-rate R] [--streams N]
 *             [--url http://127.0.0.1:PORT --pid PID]
 */
#include "config.h"

#include "bench/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 64      /* pipelined requests per connection */
#define DRAIN_S 5.0       /* after the window: wait this long for answers */
#define IDLE_WAVE 256     /* idle connections being set up at once */
#define IDLE_SETUP_S 60.0 /* all idle connections served within this */
#define FD_SPARE 64       /* descriptors the bench keeps for itself */

/* the aims of issue 4, in bytes and req/s (MB = 10^6 B, KB = 10^3 B) */
#define AIM_GET_RPS 20000.0
#define AIM_CANCEL_RPS 5000.0
#define AIM_IDLE_RSS 30e6
#define AIM_CONN_BYTES 10e3

static struct {
    int connections, depth, jobs, idle;
    double duration, warmup;
    const char *url;
    int generators;          /* of the server it starts: 0 but in the live round */
    int live_generators;     /* the live round's (0: no live round) */
    double create_rps;       /* the mixed load's paced creates */
    int streams;             /* the mixed load's event streams */
    pid_t pid;               /* the server's, started or attached */
    pid_t pg_pid, redis_pid; /* cmd/imagejobs-local's services, when known */
    pid_t nginx_pid;         /* the floor's, while it runs */
    bool started;            /* we started it (and stop it) */
    struct sockaddr_in addr;
    char log_path[512];
    const char *auth;   /* off, required or both */
    bool auth_on;       /* this round's server requires a key */
    char auth_hdr[128]; /* "Authorization: Bearer ...\r\n" in a required round */
} s_cfg = {.connections = 64,
           .depth = 1,
           .jobs = 1000,
           .idle = 10000,
           .duration = 5.0,
           .warmup = 1.0,
           .auth = "both",
           .live_generators = 2,
           .create_rps = 200,
           .streams = 100};

/* ------------------------------------------------------------ helpers */

static int64_t s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void s_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void s_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench/api: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    if (s_cfg.started && s_cfg.pid > 0) {
        kill(s_cfg.pid, SIGKILL);
        waitpid(s_cfg.pid, NULL, 0);
        fprintf(stderr, "bench/api: server log: %s\n", s_cfg.log_path);
    }
    if (s_cfg.nginx_pid > 0)
        kill(s_cfg.nginx_pid, SIGTERM);
    exit(1);
}

static int s_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of sorted v, in µs. */
static double s_quantile_us(const int64_t *v, size_t n, double q)
{
    if (n == 0)
        return 0.0;
    size_t i = (size_t)(q * (double)n);
    return (double)v[i < n ? i : n - 1] / 1e3;
}

/* A field of the server's /proc/PID/status ("VmRSS:"), in bytes; -1 when
 * unknown. */
static long long s_proc_status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long long v = -1;
    size_t flen = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, flen) == 0) {
            v = strtoll(line + flen, NULL, 10) * 1024;
            break;
        }
    fclose(f);
    return v;
}

static long long s_rss(void)
{
    return s_cfg.pid > 0 ? s_proc_status_kb(s_cfg.pid, "VmRSS:") : -1;
}

/* A process's CPU time (user + system) in seconds and its parent; -1 when
 * unknown. */
static double s_proc_cpu_ppid(pid_t pid, pid_t *ppid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    int parent;
    unsigned long long ut, st;
    if (!p
        || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &parent, &ut, &st)
               != 3)
        return -1;
    if (ppid)
        *ppid = parent;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double s_proc_cpu_s(pid_t pid)
{
    return pid > 0 ? s_proc_cpu_ppid(pid, NULL) : -1;
}

/* PostgreSQL's CPU time: the postmaster and its children (backends, WAL
 * writer, ...). Backends that exit take theirs with them; the server's
 * connection lives as long as it does. */
static double s_pg_cpu_s(pid_t postmaster)
{
    if (postmaster <= 0)
        return -1;
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    double sum = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        pid_t pid = (pid_t)atoi(e->d_name), parent = 0;
        double cpu = s_proc_cpu_ppid(pid, &parent);
        if (cpu >= 0 && (pid == postmaster || parent == postmaster))
            sum += cpu;
    }
    closedir(d);
    return sum;
}

static double s_self_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The machine's busy CPU time (all cores) in seconds, from /proc/stat. */
static double s_machine_busy_s(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 4)
        return -1;
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]; /* not idle, iowait */
    return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

typedef struct {
    double server, self, pg, redis, machine;
} cpu_t;

static cpu_t s_cpu_sample(void)
{
    return (cpu_t){s_proc_cpu_s(s_cfg.pid), s_self_cpu_s(), s_pg_cpu_s(s_cfg.pg_pid),
                   s_proc_cpu_s(s_cfg.redis_pid), s_machine_busy_s()};
}

static int s_fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 2;
}

/* ------------------------------------------------------------ responses */

typedef struct {
    int status;
    size_t head_len; /* through the blank line */
    size_t body_len;
    bool close; /* Connection: close */
} resp_t;

/* Parses the response at the start of buf. Returns its full length once
 * the whole of it (head and Content-Length body) is there, 0 while more is
 * needed, -1 when it is not an HTTP/1.x response we can frame. */
static long s_parse_response(const char *buf, size_t len, resp_t *r)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return len > 64 * 1024 ? -1 : 0;
    if (len < 12 || (memcmp(buf, "HTTP/1.1 ", 9) != 0 && memcmp(buf, "HTTP/1.0 ", 9) != 0)
        || !isdigit((unsigned char)buf[9]) || !isdigit((unsigned char)buf[10])
        || !isdigit((unsigned char)buf[11]))
        return -1;
    memset(r, 0, sizeof *r);
    r->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    r->head_len = (size_t)(end - buf) + 4;
    bool have_length = false;
    for (const char *line = memchr(buf, '\n', r->head_len); line && line < end;
         line = memchr(line, '\n', (size_t)(end - line))) {
        line++;
        if (strncasecmp(line, "content-length:", 15) == 0) {
            char *stop;
            unsigned long long n = strtoull(line + 15, &stop, 10);
            if (stop == line + 15 || n > (1ull << 30))
                return -1;
            r->body_len = (size_t)n;
            have_length = true;
        } else if (strncasecmp(line, "connection:", 11) == 0) {
            const char *v = line + 11;
            while (*v == ' ')
                v++;
            r->close = strncasecmp(v, "close", 5) == 0;
        }
    }
    if (!have_length && !(r->status < 200 || r->status == 204 || r->status == 304))
        return -1; /* this server always frames its bodies */
    if (len < r->head_len + r->body_len)
        return 0;
    return (long)(r->head_len + r->body_len);
}

/* ------------------------------------------------------ blocking client */

/* One keep-alive connection used step by step: start-up, job creation,
 * warm-up. Timeouts on every call. */
typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
    const struct sockaddr_in *addr; /* NULL: the server */
} bconn_t;

static int s_connect_to(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void s_bconn_close(bconn_t *b)
{
    if (b->fd >= 0)
        close(b->fd);
    b->fd = -1;
    b->len = 0;
}

/* Sends req and reads one response; its body is at b->buf + r->head_len
 * until the next call. 0, or -1 (the connection is then closed). */
static int s_bconn_request(bconn_t *b, const char *req, resp_t *r)
{
    if (b->fd < 0 && (b->fd = s_connect_to(b->addr ? b->addr : &s_cfg.addr)) < 0)
        return -1;
    size_t n = strlen(req), off = 0;
    while (off < n) {
        ssize_t w = send(b->fd, req + off, n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto fail;
        off += (size_t)w;
    }
    b->len = 0;
    for (;;) {
        long got = s_parse_response(b->buf, b->len, r);
        if (got < 0)
            goto fail;
        if (got > 0) {
            if (r->close)
                s_bconn_close(b);
            return 0;
        }
        if (b->cap - b->len < 4096) {
            b->cap = b->cap ? b->cap * 2 : 16384;
            if (!(b->buf = realloc(b->buf, b->cap)))
                abort();
        }
        ssize_t rd = recv(b->fd, b->buf + b->len, b->cap - b->len - 1, 0);
        if (rd < 0 && errno == EINTR)
            continue;
        if (rd <= 0)
            goto fail;
        b->len += (size_t)rd;
        b->buf[b->len] = '\0';
    }
fail:
    s_bconn_close(b);
    return -1;
}

/* ------------------------------------------------------------ the server */

/* A free loopback port: bound to port 0 and let go. */
static void s_free_addr(struct sockaddr_in *out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0
        || getsockname(fd, (struct sockaddr *)&a, &alen) < 0)
        s_die("cannot find a free port: %s", strerror(errno));
    close(fd);
    *out = a;
}

static void s_server_start(void)
{
    const char *bin = getenv("IMAGEJOBS_BIN");
    const char *redis = getenv("IMAGEJOBS_BENCH_REDIS");
    const char *db = getenv("IMAGEJOBS_BENCH_DATABASE");
    if (!bin || !redis || !db)
        s_die("IMAGEJOBS_BIN, IMAGEJOBS_BENCH_REDIS and IMAGEJOBS_BENCH_DATABASE must be set "
              "(run it as `cmd/imagejobs-local bench api`), or use --url and --pid");

    s_free_addr(&s_cfg.addr);
    char listen_at[64], generators[16];
    snprintf(listen_at, sizeof listen_at, "127.0.0.1:%d", ntohs(s_cfg.addr.sin_port));
    snprintf(generators, sizeof generators, "%d", s_cfg.generators);

    const char *dir = getenv("IMAGEJOBS_BENCH_PG_DIR");
    if (dir)
        snprintf(s_cfg.log_path, sizeof s_cfg.log_path, "%s/../bench-api.server.log", dir);
    else
        snprintf(s_cfg.log_path, sizeof s_cfg.log_path, "/tmp/imagejobs-bench-api.%d.log",
                 (int)getpid());

    pid_t pid = fork();
    if (pid < 0)
        s_die("fork: %s", strerror(errno));
    if (pid == 0) {
        int log = open(s_cfg.log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (log >= 0) {
            dup2(log, STDOUT_FILENO);
            dup2(log, STDERR_FILENO);
        }
        signal(SIGPIPE, SIG_DFL); /* an ignored signal stays ignored across exec */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execl(bin, bin, "serve", "--listen", listen_at, "--redis", redis, "--database", db,
              "--generators", generators, "--instance", "bench", "--auth",
              s_cfg.auth_on ? "required" : "off", (char *)NULL);
        _exit(127);
    }
    s_cfg.pid = pid;
    s_cfg.started = true;

    /* ready when /readyz answers 200 (the schema is applied at start-up) */
    int64_t deadline = s_now_ns() + 60 * 1000000000LL;
    bconn_t b = {.fd = -1};
    while (s_now_ns() < deadline) {
        resp_t r;
        if (s_bconn_request(&b, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", &r) == 0
            && r.status == 200) {
            s_bconn_close(&b);
            free(b.buf);
            return;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s_cfg.started = false;
            s_die("the server exited at start-up (status %d); see %s",
                  WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), s_cfg.log_path);
        }
        bench_sleep(0.05); /* polling a condition with a deadline */
    }
    s_die("the server was not ready within 60 s; see %s", s_cfg.log_path);
}

/* SIGTERM, then waits up to 20 s. Returns the exit status, -1 if killed. */
static int s_server_stop(double *took_s)
{
    int64_t t0 = s_now_ns();
    kill(s_cfg.pid, SIGTERM);
    int st;
    while (s_now_ns() - t0 < 20 * 1000000000LL) {
        if (waitpid(s_cfg.pid, &st, WNOHANG) == s_cfg.pid) {
            *took_s = (double)(s_now_ns() - t0) / 1e9;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        bench_sleep(0.01);
    }
    kill(s_cfg.pid, SIGKILL);
    waitpid(s_cfg.pid, &st, 0);
    *took_s = (double)(s_now_ns() - t0) / 1e9;
    return -1;
}

/* ------------------------------------------------------------ jobs */

static char (*s_ids)[40];
static size_t s_nids;

static void s_jobs_create(bconn_t *b, int n)
{
    static const char body[] = "{\"prompt\":\"bench/api: a lighthouse at dusk\","
                               "\"combinations\":[{\"style\":\"oil\"},{\"style\":\"ink\"}],"
                               "\"images_per_combination\":2}";
    char req[512];
    snprintf(req, sizeof req,
             "POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             "%sContent-Length: %zu\r\n\r\n%s",
             s_cfg.auth_hdr, strlen(body), body);
    s_ids = calloc((size_t)n, sizeof *s_ids);
    if (!s_ids)
        abort();
    for (int i = 0; i < n; i++) {
        resp_t r;
        if (s_bconn_request(b, req, &r) < 0)
            s_die("POST /api/jobs: no response");
        json_t *doc = json_loadb(b->buf + r.head_len, r.body_len, 0, NULL);
        const char *id = json_string_value(json_object_get(doc, "job_id"));
        if (r.status != 201 || !id || strlen(id) >= sizeof *s_ids)
            s_die("POST /api/jobs answered %d: %.*s", r.status, (int)r.body_len,
                  b->buf + r.head_len);
        strcpy(s_ids[s_nids++], id);
        json_decref(doc);
    }
}

/* ------------------------------------------------------------ load */

typedef struct {
    int fd;
    int inflight;
    int64_t sent[MAX_DEPTH]; /* send times, oldest first from head */
    unsigned head;
    char *in;
    size_t in_len, in_cap;
    char out[MAX_DEPTH * 256];
    size_t out_len, out_off;
    bool want_write;
} lconn_t;

typedef struct {
    const char *name;
    bool cancel;                    /* POST .../cancel, else GET */
    const char *path;               /* GET this path (nginx's document, /healthz), not a job */
    const struct sockaddr_in *addr; /* NULL: the server */
    char (*ids)[40];                /* the jobs to rotate over (NULL: s_ids) */
    size_t nids;
    uint64_t next_id; /* rotation over the jobs */
    /* what the window saw */
    int64_t *lat;
    size_t nlat, cap;
    uint64_t s2xx, s4xx, s5xx, sother, success_true, success_false;
    uint64_t all_true, all_false; /* cancel answers, warm-up and drain too */
    uint64_t conn_errors, unanswered;
    double rps;
    cpu_t cpu0, cpu1;
    double p50, p99, p999, max;
} phase_t;

static int s_epfd = -1;

static void s_lat_add(phase_t *ph, int64_t ns)
{
    if (ph->nlat == ph->cap) {
        ph->cap = ph->cap ? ph->cap * 2 : 1 << 16;
        if (!(ph->lat = realloc(ph->lat, ph->cap * sizeof *ph->lat)))
            abort();
    }
    ph->lat[ph->nlat++] = ns;
}

static void s_lconn_arm(lconn_t *c, bool write)
{
    struct epoll_event ev = {.events = EPOLLIN | (write ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(s_epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_write = write;
}

static int s_lconn_open(const phase_t *ph, lconn_t *c)
{
    c->fd = s_connect_to(ph->addr ? ph->addr : &s_cfg.addr); /* loopback: immediate */
    if (c->fd < 0)
        return -1;
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(s_epfd, EPOLL_CTL_ADD, c->fd, &ev);
    c->inflight = 0;
    c->head = 0;
    c->in_len = c->out_len = c->out_off = 0;
    c->want_write = false;
    return 0;
}

/* Writes what is queued; the rest when the socket is writable. */
static int s_lconn_flush(lconn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_write)
                s_lconn_arm(c, true);
            return 0;
        }
        if (w <= 0)
            return -1;
        c->out_off += (size_t)w;
    }
    c->out_off = c->out_len = 0;
    if (c->want_write)
        s_lconn_arm(c, false);
    return 0;
}

/* Queues requests until depth are in flight, then writes them. */
static int s_lconn_fill(phase_t *ph, lconn_t *c)
{
    while (c->inflight < s_cfg.depth) {
        const char *id =
            ph->ids ? ph->ids[ph->next_id++ % ph->nids] : s_ids[ph->next_id++ % s_nids];
        size_t room = sizeof c->out - c->out_len;
        int n = ph->path ? snprintf(c->out + c->out_len, room,
                                    "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", ph->path)
                : ph->cancel
                    ? snprintf(c->out + c->out_len, room,
                               "POST /api/jobs/%s/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n", id,
                               s_cfg.auth_hdr)
                    : snprintf(c->out + c->out_len, room,
                               "GET /api/jobs/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n", id,
                               s_cfg.auth_hdr);
        if (n < 0 || (size_t)n >= room)
            abort(); /* sized for MAX_DEPTH requests */
        c->out_len += (size_t)n;
        c->sent[(c->head + (unsigned)c->inflight) % MAX_DEPTH] = s_now_ns();
        c->inflight++;
    }
    return s_lconn_flush(c);
}

static void s_lconn_drop(phase_t *ph, lconn_t *c)
{
    ph->conn_errors++;
    epoll_ctl(s_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->inflight = 0;
}

/* Reads and accounts for every complete response. -1: the connection
 * failed (reset, early close, a response we cannot frame). */
static int s_lconn_read(phase_t *ph, lconn_t *c, int64_t t_meas, int64_t t_end, bool refill)
{
    for (;;) {
        if (c->in_cap - c->in_len < 4096) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 16384;
            if (!(c->in = realloc(c->in, c->in_cap)))
                abort();
        }
        ssize_t rd = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (rd < 0 && errno == EINTR)
            continue;
        if (rd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (rd <= 0)
            return -1;
        c->in_len += (size_t)rd;
        if ((size_t)rd < c->in_cap - c->in_len)
            break; /* drained; saves a recv that would say EAGAIN */
    }
    /* the responses read now all arrived by now */
    int64_t now = s_now_ns();
    size_t off = 0;
    bool closing = false;
    for (;;) {
        resp_t r;
        long n = s_parse_response(c->in + off, c->in_len - off, &r);
        if (n < 0 || (n > 0 && c->inflight == 0))
            return -1;
        if (n == 0)
            break;
        int64_t sent = c->sent[c->head];
        c->head = (c->head + 1) % MAX_DEPTH;
        c->inflight--;
        if (ph->cancel) {
            const char *body = c->in + off + r.head_len;
            if (memmem(body, r.body_len, "\"success\":true", 14))
                ph->all_true++;
            else if (memmem(body, r.body_len, "\"success\":false", 15))
                ph->all_false++;
        }
        if (sent >= t_meas && now <= t_end) {
            s_lat_add(ph, now - sent);
            if (r.status >= 200 && r.status < 300)
                ph->s2xx++;
            else if (r.status >= 400 && r.status < 500)
                ph->s4xx++;
            else if (r.status >= 500 && r.status < 600)
                ph->s5xx++;
            else
                ph->sother++;
            if (ph->cancel) {
                const char *body = c->in + off + r.head_len;
                if (memmem(body, r.body_len, "\"success\":true", 14))
                    ph->success_true++;
                else if (memmem(body, r.body_len, "\"success\":false", 15))
                    ph->success_false++;
            }
        }
        off += (size_t)n;
        if (r.close) {
            closing = true;
            break;
        }
    }
    if (off) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    if (closing)
        return -1;
    if (refill && now < t_end)
        return s_lconn_fill(ph, c);
    return 0;
}

/* One route under load: warm-up, then the measured window, then the
 * answers to what is still in flight. */
static void s_load(phase_t *ph)
{
    int nc = s_cfg.connections;
    lconn_t *conns = calloc((size_t)nc, sizeof *conns);
    if (!conns)
        abort();
    int64_t t0 = s_now_ns();
    int64_t t_meas = t0 + (int64_t)(s_cfg.warmup * 1e9);
    int64_t t_end = t_meas + (int64_t)(s_cfg.duration * 1e9);
    for (int i = 0; i < nc; i++) {
        if (s_lconn_open(ph, &conns[i]) < 0)
            s_die("cannot connect to the server: %s", strerror(errno));
        if (s_lconn_fill(ph, &conns[i]) < 0)
            s_lconn_drop(ph, &conns[i]);
    }
    struct epoll_event evs[256];
    bool measuring = false, ended = false;
    for (;;) {
        int64_t now = s_now_ns();
        if (!measuring && now >= t_meas) {
            measuring = true;
            ph->cpu0 = s_cpu_sample();
        }
        if (!ended && now >= t_end) {
            ended = true;
            ph->cpu1 = s_cpu_sample();
        }
        int inflight = 0;
        for (int i = 0; i < nc; i++) {
            lconn_t *c = &conns[i];
            /* a failed connection is replaced while the run lasts */
            if (c->fd < 0 && !ended) {
                if (s_lconn_open(ph, c) < 0 || s_lconn_fill(ph, c) < 0) {
                    if (c->fd >= 0)
                        s_lconn_drop(ph, c);
                    else
                        ph->conn_errors++;
                }
            }
            inflight += c->fd >= 0 ? c->inflight : 0;
        }
        if (ended && inflight == 0)
            break;
        if (ended && now >= t_end + (int64_t)(DRAIN_S * 1e9)) {
            ph->unanswered += (uint64_t)inflight;
            break;
        }
        int n = epoll_wait(s_epfd, evs, 256, 10);
        for (int i = 0; i < n; i++) {
            lconn_t *c = evs[i].data.ptr;
            if (c->fd < 0)
                continue;
            int rc = 0;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                rc = s_lconn_read(ph, c, t_meas, t_end, true);
            if (rc == 0 && (evs[i].events & EPOLLOUT))
                rc = s_lconn_flush(c);
            if (rc < 0)
                s_lconn_drop(ph, c);
        }
    }
    for (int i = 0; i < nc; i++) {
        if (conns[i].fd >= 0) {
            epoll_ctl(s_epfd, EPOLL_CTL_DEL, conns[i].fd, NULL);
            close(conns[i].fd);
        }
        free(conns[i].in);
    }
    free(conns);
    qsort(ph->lat, ph->nlat, sizeof *ph->lat, s_cmp_i64);
    ph->rps = (double)ph->nlat / s_cfg.duration;
    ph->p50 = s_quantile_us(ph->lat, ph->nlat, 0.50);
    ph->p99 = s_quantile_us(ph->lat, ph->nlat, 0.99);
    ph->p999 = s_quantile_us(ph->lat, ph->nlat, 0.999);
    ph->max = ph->nlat ? (double)ph->lat[ph->nlat - 1] / 1e3 : 0;
}

/* ------------------------------------------------------- idle connections */

typedef struct {
    int n;            /* connections asked for */
    int served;       /* answered 200 to GET /healthz and still open */
    int failed;       /* refused, reset, or not answered 200 */
    int closed_later; /* served, then closed by the server before the reading */
    int server_fds;
    long long rss_before, rss_with;
    double setup_s;
    char note[256];
} idle_t;

typedef struct {
    int fd;
    uint8_t state; /* 0 connecting, 1 request sent, 2 served, 3 failed */
    char *in;
    size_t in_len;
} iconn_t;

static void s_iconn_fail(iconn_t *c, idle_t *r)
{
    epoll_ctl(s_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = 3;
    free(c->in);
    c->in = NULL;
    r->failed++;
}

static void s_iconn_event(iconn_t *c, idle_t *r)
{
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if (c->state == 0) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || send(c->fd, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof req - 1)) {
            s_iconn_fail(c, r);
            return;
        }
        c->state = 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(s_epfd, EPOLL_CTL_MOD, c->fd, &ev);
        return;
    }
    char buf[2048];
    ssize_t rd = recv(c->fd, buf, sizeof buf, 0);
    if (rd < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (rd <= 0) {
        s_iconn_fail(c, r);
        return;
    }
    if (!(c->in = realloc(c->in, c->in_len + (size_t)rd)))
        abort();
    memcpy(c->in + c->in_len, buf, (size_t)rd);
    c->in_len += (size_t)rd;
    resp_t resp;
    long n = s_parse_response(c->in, c->in_len, &resp);
    if (n == 0)
        return;
    if (n < 0 || resp.status != 200 || resp.close || (size_t)n != c->in_len) {
        s_iconn_fail(c, r);
        return;
    }
    /* served: it stays open and idle, out of the poll set */
    epoll_ctl(s_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    free(c->in);
    c->in = NULL;
    c->state = 2;
    r->served++;
}

static void s_idle(idle_t *r)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    r->n = s_cfg.idle;
    if ((rlim_t)r->n + FD_SPARE > rl.rlim_cur) {
        r->n = rl.rlim_cur > FD_SPARE ? (int)(rl.rlim_cur - FD_SPARE) : 0;
        snprintf(r->note, sizeof r->note,
                 "descriptor limit %llu: %d idle connections instead of %d",
                 (unsigned long long)rl.rlim_cur, r->n, s_cfg.idle);
    }
    if (s_cfg.pid > 0) { /* the server needs as many, plus its own */
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/limits", (int)s_cfg.pid);
        FILE *f = fopen(path, "r");
        unsigned long long soft = 0;
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "Max open files %llu", &soft) == 1)
                break;
        if (f)
            fclose(f);
        if (soft && soft < (unsigned long long)r->n + 100 && !r->note[0])
            snprintf(r->note, sizeof r->note,
                     "the server's descriptor limit is %llu: it cannot hold %d connections", soft,
                     r->n);
    }

    iconn_t *cs = calloc((size_t)(r->n ? r->n : 1), sizeof *cs);
    if (!cs)
        abort();
    int64_t t0 = s_now_ns(), deadline = t0 + (int64_t)(IDLE_SETUP_S * 1e9);
    int opened = 0;
    struct epoll_event evs[256];
    while (r->served + r->failed < r->n && s_now_ns() < deadline) {
        /* keep IDLE_WAVE handshakes in progress: the listen backlog holds
         * them all, so none waits for a SYN retransmission */
        while (opened < r->n && opened - r->served - r->failed < IDLE_WAVE) {
            iconn_t *c = &cs[opened++];
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (c->fd < 0) {
                c->state = 3;
                r->failed++;
                if (!r->note[0])
                    snprintf(r->note, sizeof r->note, "socket(): %s", strerror(errno));
                continue;
            }
            if (connect(c->fd, (struct sockaddr *)&s_cfg.addr, sizeof s_cfg.addr) < 0
                && errno != EINPROGRESS) {
                close(c->fd);
                c->state = 3;
                r->failed++;
                continue;
            }
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
            epoll_ctl(s_epfd, EPOLL_CTL_ADD, c->fd, &ev);
        }
        int n = epoll_wait(s_epfd, evs, 256, 100);
        for (int i = 0; i < n; i++)
            s_iconn_event(evs[i].data.ptr, r);
    }
    for (int i = 0; i < opened; i++)
        if (cs[i].state < 2) { /* not served in time */
            s_iconn_fail(&cs[i], r);
        }
    r->setup_s = (double)(s_now_ns() - t0) / 1e9;

    /* let the server settle (its frees, its allocator), then read */
    bench_sleep(1.0);
    r->rss_with = s_rss();
    r->server_fds = s_cfg.pid > 0 ? s_fd_count(s_cfg.pid) : -1;

    /* still open? a closed one reads as readable (EOF) or hung up */
    struct pollfd *pf = calloc((size_t)(opened ? opened : 1), sizeof *pf);
    int np = 0;
    for (int i = 0; i < opened; i++)
        if (cs[i].state == 2)
            pf[np++] = (struct pollfd){.fd = cs[i].fd, .events = POLLIN | POLLRDHUP};
    if (np && poll(pf, (nfds_t)np, 0) > 0)
        for (int i = 0; i < np; i++)
            if (pf[i].revents)
                r->closed_later++;
    free(pf);
    for (int i = 0; i < opened; i++) {
        if (cs[i].state == 2)
            close(cs[i].fd);
        free(cs[i].in);
    }
    free(cs);
}

/* ------------------------------------------------------------ report */

static const char *s_verdict(bool ok)
{
    return ok ? "aim met" : "aim MISSED";
}

/* Where the CPU time of the measured window went: each part the bench can
 * name, and the rest (kernel softirq, other processes on the machine). */
static void s_cpu_line(const char *what, const phase_t *ph)
{
    double wall = s_cfg.duration;
    double all = ph->cpu1.machine - ph->cpu0.machine, rest = all;
    char line[512];
    int n = snprintf(line, sizeof line, "  CPU during %-8s", what);
    const struct {
        const char *name;
        double t0, t1;
    } parts[] = {{"server", ph->cpu0.server, ph->cpu1.server},
                 {"bench/api", ph->cpu0.self, ph->cpu1.self},
                 {"PostgreSQL", ph->cpu0.pg, ph->cpu1.pg},
                 {"Redis", ph->cpu0.redis, ph->cpu1.redis}};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        if (parts[i].t0 < 0 || parts[i].t1 < 0)
            continue;
        double t = parts[i].t1 - parts[i].t0;
        rest -= t;
        n += snprintf(line + n, sizeof line - (size_t)n, " %s %.0f%%,", parts[i].name,
                      100 * t / wall);
    }
    printf("%s kernel+other %.0f%%; machine %.0f%% of %ld%%\n", line, 100 * rest / wall,
           100 * all / wall, 100 * sysconf(_SC_NPROCESSORS_ONLN));
}

static void s_phase_rows(const char *route, const phase_t *ph, double aim)
{
    if (aim > 0)
        printf("%-34s %12.0f req/s   >= %6.0f req/s   %s\n", route, ph->rps, aim,
               s_verdict(ph->rps >= aim));
    else
        printf("%-34s %12.0f req/s\n", route, ph->rps);
    printf("  latency µs  p50 %.0f  p99 %.0f  p99.9 %.0f  max %.0f   (%zu requests)\n", ph->p50,
           ph->p99, ph->p999, ph->max, ph->nlat);
    printf("  status      2xx %llu  4xx %llu  5xx %llu  other %llu;  errors: non-2xx %llu, "
           "connection %llu, unanswered %llu\n",
           (unsigned long long)ph->s2xx, (unsigned long long)ph->s4xx, (unsigned long long)ph->s5xx,
           (unsigned long long)ph->sother, (unsigned long long)(ph->s4xx + ph->s5xx + ph->sother),
           (unsigned long long)ph->conn_errors, (unsigned long long)ph->unanswered);
    if (ph->cancel)
        printf("  cancel mix  \"success\":true %llu (pending -> user_cancelled), "
               "\"success\":false %llu (\"Job already cancelled\"); warm-up included: "
               "%llu and %llu\n",
               (unsigned long long)ph->success_true, (unsigned long long)ph->success_false,
               (unsigned long long)ph->all_true, (unsigned long long)ph->all_false);
}

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: bench/api [--connections N] [--depth N] [--duration S] [--warmup S]\n"
            "                 [--jobs N] [--idle N] [--url http://127.0.0.1:PORT --pid PID]\n"
            "  --connections N  keep-alive connections of the load generator (64)\n"
            "  --depth N        requests in flight per connection, pipelined (1, at most %d)\n"
            "  --duration S     measured seconds per route (5)\n"
            "  --warmup S       unmeasured seconds before each route's window (1)\n"
            "  --jobs N         jobs created for the requests to rotate over (1000)\n"
            "  --idle N         idle keep-alive connections for the memory figure (10000)\n"
            "  --auth MODE      off, required (every request with a key's token) or both:\n"
            "                   the loads against each, in one run (both; off with --url)\n"
            "  --live-generators N  the live round's generators (2; 0: no live round):\n"
            "                   GETs of running and ended jobs beside nginx serving the\n"
            "                   same document, real cancels of running jobs, the mixed load\n"
            "  --create-rate R  the mixed load's creates per second (200)\n"
            "  --streams N      the mixed load's GET /api/events streams (100)\n"
            "  --url URL        attach to a running server instead of starting one\n"
            "  --pid PID        its process, for RSS and CPU (without it: not measured)\n"
            "Without --url it starts $IMAGEJOBS_BIN serve --generators 0 against\n"
            "$IMAGEJOBS_BENCH_REDIS and $IMAGEJOBS_BENCH_DATABASE, as\n"
            "`cmd/imagejobs-local bench api` sets them.\n",
            MAX_DEPTH);
}

static double s_num(const char *opt, const char *v, double min, double max)
{
    char *end;
    double d = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end || d < min || d > max) {
        fprintf(stderr, "bench/api: %s wants a number from %g to %g\n", opt, min, max);
        exit(2);
    }
    return d;
}

static void s_parse_url(const char *url)
{
    char host[64];
    int port = 0;
    if (sscanf(url, "http://%63[^:/]:%d", host, &port) != 2 || port <= 0 || port > 65535) {
        fprintf(stderr, "bench/api: --url wants http://IPV4:PORT\n");
        exit(2);
    }
    s_cfg.addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &s_cfg.addr.sin_addr) != 1) {
        fprintf(stderr, "bench/api: --url wants a numeric IPv4 address\n");
        exit(2);
    }
}

/* A key for a required round: `imagejobs keys create`, its token into the
 * header every request carries. */
static void s_make_token(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "'%s' keys create --name bench-api-%d-%lld --database '%s' 2>/dev/null",
             getenv("IMAGEJOBS_BIN"), (int)getpid(), (long long)s_now_ns(),
             getenv("IMAGEJOBS_BENCH_DATABASE"));
    FILE *p = popen(cmd, "r");
    char token[128] = "";
    if (!p || !fgets(token, sizeof token, p) || pclose(p) != 0)
        s_die("imagejobs keys create failed");
    token[strcspn(token, "\n")] = '\0';
    snprintf(s_cfg.auth_hdr, sizeof s_cfg.auth_hdr, "Authorization: Bearer %s\r\n", token);
}

/* `method /api/jobs/{id}<suffix>` for every job, in turn over one
 * connection, each answered 200. */
static void s_each_job(const char *method, const char *suffix)
{
    bconn_t b = {.fd = -1};
    for (size_t i = 0; i < s_nids; i++) {
        char req[256];
        resp_t r;
        snprintf(req, sizeof req, "%s /api/jobs/%s%s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n", method,
                 s_ids[i], suffix, s_cfg.auth_hdr);
        if (s_bconn_request(&b, req, &r) < 0 || r.status != 200)
            s_die("%s /api/jobs/%s%s failed (status %d)", method, s_ids[i], suffix, r.status);
    }
    s_bconn_close(&b);
    free(b.buf);
}

/* One round: the server (auth as s_cfg.auth_on says), its jobs, the
 * warm-up, the idle connections (when idle is given), the two loads, the
 * stop. */
/* sql on the bench's database (TRUNCATE, ANALYZE), which must work. */
static void s_sql(const char *sql)
{
    const char *db = getenv("IMAGEJOBS_BENCH_DATABASE");
    PGconn *c = db ? PQconnectdb(db) : NULL;
    PGresult *r = c && PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK)
        s_die("%s: %s", sql, c ? PQerrorMessage(c) : "no IMAGEJOBS_BENCH_DATABASE");
    PQclear(r);
    PQfinish(c);
}

static void s_round(idle_t *idle, long long *rss_idle, phase_t *get, phase_t *cancel,
                    int *exit_status, double *stop_s)
{
    s_cfg.auth_hdr[0] = '\0';
    /* every round on the same database: an earlier round's jobs gone (the
     * GET document's queue figures read every waiting job) */
    if (!s_cfg.url && s_nids)
        s_sql("TRUNCATE jobs CASCADE");
    if (s_cfg.auth_on)
        s_make_token();
    if (s_cfg.url)
        s_parse_url(s_cfg.url);
    else
        s_server_start();
    free(s_ids);
    s_ids = NULL;
    s_nids = 0;
    bconn_t b = {.fd = -1};
    s_jobs_create(&b, s_cfg.jobs);
    s_bconn_close(&b);
    free(b.buf);
    /* and the planner's statistics of this round's tables, whatever
     * autovacuum has done yet (rounds ran faster one after the other) */
    if (!s_cfg.url)
        s_sql("ANALYZE");
    s_each_job("GET", ""); /* the warm-up: every job read once */
    bench_sleep(0.5);
    if (idle) {
        /* idle connections before the load, so that their cost is measured
         * against the idle reading and not hidden in (or added to) what the
         * load phases leave resident in the server's heap */
        *rss_idle = s_rss();
        idle->rss_before = *rss_idle;
        if (s_cfg.idle > 0)
            s_idle(idle);
    }
    s_load(get);
    /* every job cancelled once first, so that both rounds measure the same
     * mix: repeated cancels of ended jobs (whatever the warm-up reached) */
    s_each_job("POST", "/cancel");
    s_load(cancel);
    if (s_cfg.started) {
        double took = 0;
        int st = s_server_stop(&took);
        if (*exit_status == 0)
            *exit_status = st;
        if (took > *stop_s)
            *stop_s = took;
    }
}

/* ------------------------------------------------------------ nginx, the floor */

/* nginx serving one fixed document on a free loopback port, started the
 * same way as the server (a child of the bench), with as many workers as
 * CPUs (its usual set-up) and keep-alive without a request limit. */
typedef struct {
    pid_t pid;
    char dir[64];
    struct sockaddr_in addr;
    size_t doc_len;
} nginx_t;

static int s_write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

static int s_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void s_nginx_stop(nginx_t *n)
{
    if (n->pid > 0) {
        kill(n->pid, SIGTERM);
        waitpid(n->pid, NULL, 0);
        n->pid = s_cfg.nginx_pid = 0;
    }
    if (n->dir[0])
        nftw(n->dir, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    n->dir[0] = '\0';
}

/* false (with the reason printed) when there is no nginx to run */
static bool s_nginx_start(nginx_t *n, const char *doc, size_t len)
{
    const char *bin = getenv("IMAGEJOBS_BENCH_NGINX");
    if (!bin)
        bin = "/usr/sbin/nginx";
    if (access(bin, X_OK) != 0) {
        printf("note: no nginx at %s (cmd/imagejobs-local bench installs nginx-light): "
               "no floor measured\n",
               bin);
        return false;
    }
    memset(n, 0, sizeof *n);
    snprintf(n->dir, sizeof n->dir, "/tmp/imagejobs-bench-nginx.XXXXXX");
    if (!mkdtemp(n->dir))
        s_die("mkdtemp: %s", strerror(errno));
    s_free_addr(&n->addr);
    char path[128], conf[2048];
    snprintf(path, sizeof path, "%s/root", n->dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/root/job.json", n->dir);
    if (s_write_file(path, doc, len) < 0)
        s_die("cannot write %s", path);
    n->doc_len = len;
    snprintf(conf, sizeof conf,
             "%s"
             "worker_processes auto;\n"
             "daemon off;\n"
             "pid %s/nginx.pid;\n"
             "error_log %s/error.log;\n"
             "events { worker_connections 4096; }\n"
             "http {\n"
             "  access_log off;\n"
             "  client_body_temp_path %s/body;\n"
             "  proxy_temp_path %s/proxy;\n"
             "  fastcgi_temp_path %s/fastcgi;\n"
             "  keepalive_requests 1000000000;\n"
             "  open_file_cache max=16 inactive=3600s;\n"
             "  open_file_cache_valid 3600s;\n"
             "  keepalive_timeout 300s;\n"
             "  types { application/json json; }\n"
             "  server { listen 127.0.0.1:%d; root %s/root; }\n"
             "}\n",
             geteuid() == 0 ? "user root;\n" : "", n->dir, n->dir, n->dir, n->dir, n->dir,
             ntohs(n->addr.sin_port), n->dir);
    snprintf(path, sizeof path, "%s/nginx.conf", n->dir);
    if (s_write_file(path, conf, strlen(conf)) < 0)
        s_die("cannot write %s", path);
    pid_t pid = fork();
    if (pid < 0)
        s_die("fork: %s", strerror(errno));
    if (pid == 0) {
        char log[128];
        snprintf(log, sizeof log, "%s/stderr.log", n->dir);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        signal(SIGPIPE, SIG_DFL);
        execl(bin, bin, "-p", n->dir, "-c", path, "-e", "stderr", (char *)NULL);
        _exit(127);
    }
    n->pid = s_cfg.nginx_pid = pid;
    int64_t deadline = s_now_ns() + 10 * 1000000000LL;
    bconn_t b = {.fd = -1, .addr = &n->addr};
    while (s_now_ns() < deadline) {
        resp_t r;
        if (s_bconn_request(&b, "GET /job.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", &r) == 0
            && r.status == 200 && r.body_len == len) {
            s_bconn_close(&b);
            free(b.buf);
            return true;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            n->pid = s_cfg.nginx_pid = 0;
            s_die("nginx exited at start-up; see %s/stderr.log", n->dir);
        }
        bench_sleep(0.02); /* polling a condition with a deadline */
    }
    s_die("nginx did not answer within 10 s; see %s/stderr.log", n->dir);
}

/* ------------------------------------------------------------ the live round */

/* A thread's latencies, in ms: ns since t0 */
static void s_lat_push(bench_series_t *l, int64_t t0)
{
    bench_push(l, (double)(s_now_ns() - t0) / 1e6);
}

static void s_lat_merge(bench_series_t *into, const bench_series_t *from)
{
    for (size_t i = 0; i < from->n; i++)
        bench_push(into, from->v[i]);
}

/* "p50 X  p99 Y (n)" in ms */
static const char *s_lat_ms(bench_series_t *l, char *buf, size_t len)
{
    bench_sort(l);
    snprintf(buf, len, "p50 %.2f  p99 %.2f  max %.2f ms (%zu)", bench_pct(l, .5), bench_pct(l, .99),
             bench_max(l), l->n);
    return buf;
}

/* A request whose answer is JSON: the document (caller decrefs), NULL on
 * any failure; *status gets the HTTP status (0: no answer). */
static json_t *s_json_request(bconn_t *b, const char *method, const char *path, const char *body,
                              int *status)
{
    char req[1024];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%zu\r\n\r\n%s", method,
             path, body ? "Content-Type: application/json\r\n" : "",
             "Content-Length: ", body ? strlen(body) : 0, body ? body : "");
    resp_t r;
    *status = 0;
    if (s_bconn_request(b, req, &r) < 0)
        return NULL;
    *status = r.status;
    return json_loadb(b->buf + r.head_len, r.body_len, 0, NULL);
}

/* POSTs a job; its id into id (40 bytes), 0, or -1. */
static int s_create(bconn_t *b, const char *body, char *id)
{
    int status;
    json_t *doc = s_json_request(b, "POST", "/api/jobs", body, &status);
    const char *s = json_string_value(json_object_get(doc, "job_id"));
    int rc = status == 201 && s && strlen(s) < 40 ? 0 : -1;
    if (rc == 0)
        strcpy(id, s);
    json_decref(doc);
    return rc;
}

/* GETs job id until its job_status is want (or, with want "processing",
 * its first combination is), within timeout_s: the document, or NULL. */
static json_t *s_await(bconn_t *b, const char *id, const char *want, double timeout_s)
{
    char path[96];
    snprintf(path, sizeof path, "/api/jobs/%s", id);
    double until = bench_mono() + timeout_s;
    while (bench_mono() < until) {
        int status;
        json_t *doc = s_json_request(b, "GET", path, NULL, &status);
        const char *st = json_string_value(json_object_get(doc, "job_status"));
        json_t *c0 = json_array_get(json_object_get(doc, "combinations"), 0);
        const char *cst = json_string_value(json_object_get(c0, "status"));
        if (st && (!strcmp(st, want) || (cst && !strcmp(cst, want))))
            return doc;
        bool ended = st && strcmp(st, "pending") && strcmp(st, "processing");
        json_decref(doc);
        if (ended)
            return NULL;    /* it will never be what we wait for */
        bench_sleep(0.001); /* polling a condition with a deadline */
    }
    return NULL;
}

/* A job that keeps a generator busy until it is cancelled. */
static const char s_long_job[] = "{\"prompt\":\"bench/api: a long night\","
                                 "\"combinations\":[{\"style\":\"ink\"}],"
                                 "\"images_per_combination\":100,\"width\":256,\"height\":256,"
                                 "\"steps\":50}";
/* A job the mixed load makes: done in a few ms of generation. */
static const char s_small_job[] = "{\"prompt\":\"bench/api: a quick sketch\","
                                  "\"combinations\":[{\"style\":\"pencil\"}],"
                                  "\"images_per_combination\":2,\"width\":64,\"height\":64,"
                                  "\"steps\":8}";

/* Real cancels: one thread per generator makes a job, waits until it runs,
 * cancels it and reads it back until it is user_cancelled. */
typedef struct {
    double until;
    bench_series_t response, observed,
        stop; /* cancel answered; server: requested -> observed, stopped */
    uint64_t cycles, success_true, success_false, never_ran, not_cancelled, inconsistent;
} flow_t;

static void *s_flow(void *arg)
{
    flow_t *f = arg;
    bconn_t b = {.fd = -1};
    while (bench_mono() < f->until) {
        char id[40], path[128];
        if (s_create(&b, s_long_job, id) < 0)
            s_die("POST /api/jobs failed in the cancel flow");
        json_t *doc = s_await(&b, id, "processing", 30);
        if (!doc) {
            f->never_ran++;
            continue;
        }
        json_decref(doc);
        snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
        int status;
        int64_t t0 = s_now_ns();
        doc = s_json_request(&b, "POST", path, NULL, &status);
        s_lat_push(&f->response, t0);
        if (status == 200 && json_is_true(json_object_get(doc, "success")))
            f->success_true++;
        else
            f->success_false++;
        json_decref(doc);
        f->cycles++;
        if (!(doc = s_await(&b, id, "user_cancelled", 30))) {
            f->not_cancelled++;
            continue;
        }
        json_t *c0 = json_array_get(json_object_get(doc, "combinations"), 0);
        int64_t req = bench_iso_us(json_string_value(json_object_get(doc, "cancel_requested_at")));
        int64_t obs = bench_iso_us(json_string_value(json_object_get(c0, "cancel_observed_at")));
        int64_t stop = bench_iso_us(json_string_value(json_object_get(c0, "stopped_at")));
        json_int_t done = json_integer_value(json_object_get(doc, "completed_images"));
        if (req < 0 || obs < req || stop < obs
            || (size_t)done != json_array_size(json_object_get(doc, "generated_attach_ids")))
            f->inconsistent++;
        else {
            bench_push(&f->observed, (double)(obs - req) / 1e3);
            bench_push(&f->stop, (double)(stop - req) / 1e3);
        }
        json_decref(doc);
    }
    s_bconn_close(&b);
    free(b.buf);
    return NULL;
}

/* The mixed load's other parts: paced creates, cancels of what was made,
 * and event streams, beside the GET load of the main thread. */
typedef struct {
    double until, create_rps;
    pthread_mutex_t mu;
    char (*made)[40];
    size_t nmade, cap, cancelled;
    bench_series_t create, cancel;
    uint64_t create_errors, cancel_errors, cancel_true, cancel_false;
    int nstreams, streams_open, streams_failed;
    uint64_t events, events_min, events_max;
} mixed_t;

static void *s_mixed_creator(void *arg)
{
    mixed_t *m = arg;
    bconn_t b = {.fd = -1};
    double next = bench_mono();
    while (next < m->until) {
        bench_sleep(next - bench_mono()); /* pacing the load */
        next += 1.0 / m->create_rps;
        char id[40];
        int64_t t0 = s_now_ns();
        if (s_create(&b, s_small_job, id) < 0) {
            m->create_errors++;
            continue;
        }
        s_lat_push(&m->create, t0);
        pthread_mutex_lock(&m->mu);
        if (m->nmade == m->cap) {
            m->cap = m->cap ? m->cap * 2 : 1024;
            if (!(m->made = realloc(m->made, m->cap * sizeof *m->made)))
                abort();
        }
        strcpy(m->made[m->nmade++], id);
        pthread_mutex_unlock(&m->mu);
    }
    s_bconn_close(&b);
    free(b.buf);
    return NULL;
}

/* Cancels every other job made, as soon as it is made: pending ones, and
 * those a generator already took. */
static void *s_mixed_canceller(void *arg)
{
    mixed_t *m = arg;
    bconn_t b = {.fd = -1};
    while (bench_mono() < m->until) {
        char id[40] = "";
        pthread_mutex_lock(&m->mu);
        if (m->cancelled * 2 < m->nmade)
            strcpy(id, m->made[m->cancelled++ * 2]);
        pthread_mutex_unlock(&m->mu);
        if (!id[0]) {
            bench_sleep(0.001); /* nothing made yet: polling, bounded by until */
            continue;
        }
        char path[96];
        snprintf(path, sizeof path, "/api/jobs/%s/cancel", id);
        int status;
        int64_t t0 = s_now_ns();
        json_t *doc = s_json_request(&b, "POST", path, NULL, &status);
        s_lat_push(&m->cancel, t0);
        if (status != 200)
            m->cancel_errors++;
        else if (json_is_true(json_object_get(doc, "success")))
            m->cancel_true++;
        else
            m->cancel_false++;
        json_decref(doc);
    }
    s_bconn_close(&b);
    free(b.buf);
    return NULL;
}

/* nstreams GET /api/events read until the end; events counted by their
 * "event:" lines (a stream's first is its hello). */
static void *s_mixed_streams(void *arg)
{
    mixed_t *m = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int *fds = calloc((size_t)m->nstreams, sizeof *fds);
    uint64_t *count = calloc((size_t)m->nstreams, sizeof *count);
    if (ep < 0 || !fds || !count)
        abort();
    static const char req[] = "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Accept: text/event-stream\r\n\r\n";
    for (int i = 0; i < m->nstreams; i++) {
        fds[i] = s_connect_to(&s_cfg.addr);
        if (fds[i] < 0 || send(fds[i], req, sizeof req - 1, MSG_NOSIGNAL) != sizeof req - 1) {
            m->streams_failed++;
            if (fds[i] >= 0)
                close(fds[i]);
            fds[i] = -1;
            continue;
        }
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    /* "\nevent:" never spans two reads by more than its length: keep the
     * last 6 bytes of each read in front of the next */
    char(*tail)[8] = calloc((size_t)m->nstreams, sizeof *tail);
    char buf[65536 + 8];
    while (tail && bench_mono() < m->until) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 50);
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            size_t keep = strlen(tail[i]);
            memcpy(buf, tail[i], keep);
            ssize_t rd = recv(fds[i], buf + keep, sizeof buf - 8 - keep, 0);
            if (rd <= 0) {
                if (rd < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                m->streams_failed++;
                epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
                close(fds[i]);
                fds[i] = -1;
                continue;
            }
            size_t len = keep + (size_t)rd;
            for (char *p = buf; (p = memmem(p, len - (size_t)(p - buf), "\nevent:", 7)); p += 7)
                count[i]++;
            size_t t = len < 6 ? len : 6;
            memcpy(tail[i], buf + len - t, t);
            tail[i][t] = '\0';
        }
    }
    m->events_min = UINT64_MAX;
    for (int i = 0; i < m->nstreams; i++) {
        if (fds[i] < 0)
            continue;
        m->streams_open++;
        m->events += count[i];
        m->events_min = count[i] < m->events_min ? count[i] : m->events_min;
        m->events_max = count[i] > m->events_max ? count[i] : m->events_max;
        close(fds[i]);
    }
    if (m->streams_open == 0)
        m->events_min = 0;
    free(tail);
    free(count);
    free(fds);
    close(ep);
    return NULL;
}

/* What the live round measured. */
typedef struct {
    int generators;
    phase_t healthz, nginx_idle, get_ended_idle; /* the generators idle */
    phase_t get_running, get_ended, nginx_busy;  /* two of them generating */
    phase_t mixed_get;
    flow_t flow;
    mixed_t mixed;
    size_t nrunning, nended;
    bool floor;
} live_t;

/* POSTs a job per slot of ids and cancels it while it waits: ended jobs. */
static void s_ended_jobs(bconn_t *b, char (*ids)[40], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char path[96];
        int status;
        if (s_create(b, s_long_job, ids[i]) < 0)
            s_die("POST /api/jobs failed");
        snprintf(path, sizeof path, "/api/jobs/%s/cancel", ids[i]);
        json_decref(s_json_request(b, "POST", path, NULL, &status));
        json_t *doc = s_await(b, ids[i], "user_cancelled", 30);
        if (!doc)
            s_die("job %s did not end user_cancelled", ids[i]);
        json_decref(doc);
    }
}

/* A server with generators: GETs of running and of ended jobs (and nginx
 * measured at the same time, the generators busy), real cancels of
 * running jobs, then the mixed load. */
static void s_live(live_t *L, int *exit_status, double *stop_s)
{
    nginx_t nginx_s = {0}, *nginx = &nginx_s;
    s_cfg.auth_on = false;
    s_cfg.auth_hdr[0] = '\0';
    s_cfg.generators = L->generators;
    s_sql("TRUNCATE jobs CASCADE");
    s_server_start();
    bconn_t b = {.fd = -1};
    L->nrunning = (size_t)L->generators;
    char(*running)[40] = calloc(L->nrunning, sizeof *running);
    L->nended = 50;
    char(*ended)[40] = calloc(L->nended, sizeof *ended);
    if (!running || !ended)
        abort();
    s_ended_jobs(&b, ended, L->nended);
    /* nginx serves the bytes the server answers for an ended job */
    char req[256];
    resp_t r;
    snprintf(req, sizeof req, "GET /api/jobs/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", ended[0]);
    if (s_bconn_request(&b, req, &r) < 0 || r.status != 200)
        s_die("GET /api/jobs/%s failed", ended[0]);
    L->floor = s_nginx_start(nginx, b.buf + r.head_len, r.body_len);

    L->healthz = (phase_t){.name = "healthz", .path = "/healthz"};
    s_load(&L->healthz);
    L->get_ended_idle = (phase_t){.name = "GET ended", .ids = ended, .nids = L->nended};
    s_load(&L->get_ended_idle);
    if (L->floor) {
        L->nginx_idle = (phase_t){.name = "nginx", .path = "/job.json", .addr = &nginx->addr};
        s_load(&L->nginx_idle);
    }

    for (size_t i = 0; i < L->nrunning; i++)
        if (s_create(&b, s_long_job, running[i]) < 0)
            s_die("POST /api/jobs failed");
    for (size_t i = 0; i < L->nrunning; i++) {
        json_t *doc = s_await(&b, running[i], "processing", 60);
        if (!doc)
            s_die("job %s never ran", running[i]);
        json_decref(doc);
    }
    L->get_running = (phase_t){.name = "GET running", .ids = running, .nids = L->nrunning};
    L->get_ended = (phase_t){.name = "GET ended", .ids = ended, .nids = L->nended};
    s_load(&L->get_running);
    s_load(&L->get_ended);
    if (L->floor) {
        L->nginx_busy = (phase_t){.name = "nginx", .path = "/job.json", .addr = &nginx->addr};
        s_load(&L->nginx_busy);
    }
    s_nginx_stop(nginx);
    for (size_t i = 0; i < L->nrunning; i++) {
        char path[96];
        int status;
        json_t *doc = s_await(&b, running[i], "processing", 1);
        if (!doc)
            s_die("job %s stopped running during the GET load", running[i]);
        json_decref(doc);
        snprintf(path, sizeof path, "/api/jobs/%s/cancel", running[i]);
        json_decref(s_json_request(&b, "POST", path, NULL, &status));
        if (!(doc = s_await(&b, running[i], "user_cancelled", 30)))
            s_die("job %s did not end user_cancelled", running[i]);
        json_decref(doc);
    }

    /* real cancels: as many flows as generators, so each job runs at once */
    pthread_t th[64];
    flow_t flows[64];
    int nflows = L->generators < 64 ? L->generators : 64;
    double until = bench_mono() + s_cfg.duration;
    for (int i = 0; i < nflows; i++) {
        flows[i] = (flow_t){.until = until};
        if (pthread_create(&th[i], NULL, s_flow, &flows[i]) != 0)
            s_die("pthread_create failed");
    }
    L->flow = (flow_t){0};
    for (int i = 0; i < nflows; i++) {
        pthread_join(th[i], NULL);
        flow_t *f = &flows[i];
        s_lat_merge(&L->flow.response, &f->response);
        s_lat_merge(&L->flow.observed, &f->observed);
        s_lat_merge(&L->flow.stop, &f->stop);
        L->flow.cycles += f->cycles;
        L->flow.success_true += f->success_true;
        L->flow.success_false += f->success_false;
        L->flow.never_ran += f->never_ran;
        L->flow.not_cancelled += f->not_cancelled;
        L->flow.inconsistent += f->inconsistent;
        free(f->response.v), free(f->observed.v), free(f->stop.v);
    }

    /* mixed: creates, cancels, streams and GETs at once */
    mixed_t *m = &L->mixed;
    m->until = bench_mono() + s_cfg.warmup + s_cfg.duration;
    pthread_mutex_init(&m->mu, NULL);
    pthread_t mt[3];
    if (pthread_create(&mt[0], NULL, s_mixed_streams, m) != 0
        || pthread_create(&mt[1], NULL, s_mixed_creator, m) != 0
        || pthread_create(&mt[2], NULL, s_mixed_canceller, m) != 0)
        s_die("pthread_create failed");
    L->mixed_get = (phase_t){.name = "GET mixed", .ids = ended, .nids = L->nended};
    s_load(&L->mixed_get);
    for (int i = 0; i < 3; i++)
        pthread_join(mt[i], NULL);
    pthread_mutex_destroy(&m->mu);

    s_bconn_close(&b);
    free(b.buf);
    double took = 0;
    int st = s_server_stop(&took);
    if (*exit_status == 0)
        *exit_status = st;
    if (took > *stop_s)
        *stop_s = took;
    /* the phases keep pointers to these until printed: freed at exit */
}

static void s_ratio(const char *what, const phase_t *ph, const phase_t *floor)
{
    if (floor && floor->rps > 0)
        printf("  %-32s %8.0f req/s = %.2f x nginx (%.0f req/s)   aim >= 0.5 x: %s\n", what,
               ph->rps, ph->rps / floor->rps, floor->rps, s_verdict(ph->rps >= 0.5 * floor->rps));
}

static void s_live_rows(live_t *L, const phase_t *get_pending)
{
    char a[128], c[128], d[128];
    printf("\nlive round: serve --generators %d (CPU), auth off\n", L->generators);
    printf("the generators idle:\n");
    s_phase_rows("GET /healthz", &L->healthz, 0);
    s_phase_rows("GET /api/jobs/{id} (ended)", &L->get_ended_idle, AIM_GET_RPS);
    s_cpu_line("GET:", &L->get_ended_idle);
    if (L->floor) {
        s_phase_rows("nginx GET /job.json", &L->nginx_idle, 0);
        s_cpu_line("nginx:", &L->nginx_idle);
    }
    printf("%zu jobs running (one per generator):\n", L->nrunning);
    s_phase_rows("GET /api/jobs/{id} (running)", &L->get_running, AIM_GET_RPS);
    s_cpu_line("GET:", &L->get_running);
    s_phase_rows("GET /api/jobs/{id} (ended)", &L->get_ended, AIM_GET_RPS);
    if (L->floor) {
        s_phase_rows("nginx GET /job.json", &L->nginx_busy, 0);
        s_cpu_line("nginx:", &L->nginx_busy);
    }
    printf("\nthe job view against nginx serving a job document (%s) in the same run:\n",
           L->floor ? "same bytes" : "no nginx: not measured");
    const phase_t *idle = L->floor ? &L->nginx_idle : NULL;
    s_ratio("GET /healthz, generators idle", &L->healthz, idle);
    s_ratio("GET ended job, generators idle", &L->get_ended_idle, idle);
    s_ratio("GET pending job (first round)", get_pending, idle);
    s_ratio("GET running job, generating", &L->get_running, L->floor ? &L->nginx_busy : NULL);
    s_ratio("GET ended job, generating", &L->get_ended, L->floor ? &L->nginx_busy : NULL);

    flow_t *f = &L->flow;
    printf("\nreal cancels of running jobs (%d flows: create, wait until it runs, cancel, read "
           "it back until user_cancelled), %.1f s:\n",
           L->generators, s_cfg.duration);
    printf("  %llu cancels (%.1f/s), \"success\":true %llu, other %llu; never ran %llu, not "
           "user_cancelled %llu, inconsistent counts %llu\n",
           (unsigned long long)f->cycles, (double)f->cycles / s_cfg.duration,
           (unsigned long long)f->success_true, (unsigned long long)f->success_false,
           (unsigned long long)f->never_ran, (unsigned long long)f->not_cancelled,
           (unsigned long long)f->inconsistent);
    printf("  cancel answered (client)          %s\n", s_lat_ms(&f->response, a, sizeof a));
    printf("  requested -> observed (server)    %s\n", s_lat_ms(&f->observed, c, sizeof c));
    printf("  requested -> stopped (server)     %s\n", s_lat_ms(&f->stop, d, sizeof d));

    mixed_t *m = &L->mixed;
    printf("\nmixed load, %.1f s (+%.1f s warm-up): creates paced at %.0f/s, every other one "
           "cancelled at once, %d event streams, and the GET load over ended jobs:\n",
           s_cfg.duration, s_cfg.warmup, m->create_rps, m->nstreams);
    printf("  POST /api/jobs          %7.0f/s  %s; errors %llu\n",
           (double)m->create.n / (s_cfg.duration + s_cfg.warmup), s_lat_ms(&m->create, a, sizeof a),
           (unsigned long long)m->create_errors);
    printf("  POST .../cancel         %7.0f/s  %s; \"success\":true %llu, false %llu, "
           "errors %llu\n",
           (double)m->cancel.n / (s_cfg.duration + s_cfg.warmup), s_lat_ms(&m->cancel, c, sizeof c),
           (unsigned long long)m->cancel_true, (unsigned long long)m->cancel_false,
           (unsigned long long)m->cancel_errors);
    printf("  GET /api/events         %d streams open to the end (%d failed), events each: "
           "min %llu max %llu (total %llu)\n",
           m->streams_open, m->streams_failed, (unsigned long long)m->events_min,
           (unsigned long long)m->events_max, (unsigned long long)m->events);
    s_phase_rows("  GET /api/jobs/{id} (mixed)", &L->mixed_get, AIM_GET_RPS);
    s_cpu_line("mixed:", &L->mixed_get);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            s_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--connections"))
            s_cfg.connections = (int)s_num(a, v, 1, 4096), i++;
        else if (!strcmp(a, "--depth"))
            s_cfg.depth = (int)s_num(a, v, 1, MAX_DEPTH), i++;
        else if (!strcmp(a, "--duration"))
            s_cfg.duration = s_num(a, v, 0.1, 3600), i++;
        else if (!strcmp(a, "--warmup"))
            s_cfg.warmup = s_num(a, v, 0, 3600), i++;
        else if (!strcmp(a, "--jobs"))
            s_cfg.jobs = (int)s_num(a, v, 1, 1000000), i++;
        else if (!strcmp(a, "--idle"))
            s_cfg.idle = (int)s_num(a, v, 0, 1000000), i++;
        else if (!strcmp(a, "--auth") && v
                 && (!strcmp(v, "off") || !strcmp(v, "required") || !strcmp(v, "both")))
            s_cfg.auth = v, i++;
        else if (!strcmp(a, "--live-generators"))
            s_cfg.live_generators = (int)s_num(a, v, 0, 64), i++;
        else if (!strcmp(a, "--create-rate"))
            s_cfg.create_rps = s_num(a, v, 1, 100000), i++;
        else if (!strcmp(a, "--streams"))
            s_cfg.streams = (int)s_num(a, v, 0, 10000), i++;
        else if (!strcmp(a, "--url") && v)
            s_cfg.url = v, i++;
        else if (!strcmp(a, "--pid"))
            s_cfg.pid = (pid_t)s_num(a, v, 1, 1 << 30), i++;
        else {
            s_usage(stderr);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);

    /* descriptors for the idle connections, here and (inherited) in the
     * server we start */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max < (rlim_t)s_cfg.idle + 500)
        printf("note: the hard descriptor limit is %llu, below the %d idle connections plus "
               "what the bench and the server need: fewer connections are measured\n",
               (unsigned long long)rl.rlim_max, s_cfg.idle);

    /* cmd/imagejobs-local bench: its PostgreSQL and Redis, for the CPU split */
    const char *pgdir = getenv("IMAGEJOBS_BENCH_PG_DIR");
    if (pgdir && !s_cfg.url) {
        char path[512];
        FILE *f;
        snprintf(path, sizeof path, "%s/data/postmaster.pid", pgdir);
        if ((f = fopen(path, "r"))) {
            if (fscanf(f, "%d", &s_cfg.pg_pid) != 1)
                s_cfg.pg_pid = 0;
            fclose(f);
        }
        snprintf(path, sizeof path, "%s/../redis.pid", pgdir);
        if ((f = fopen(path, "r"))) {
            if (fscanf(f, "%d", &s_cfg.redis_pid) != 1)
                s_cfg.redis_pid = 0;
            fclose(f);
        }
    }

    if (s_cfg.url && !strcmp(s_cfg.auth, "required"))
        s_die("--auth required needs a server the bench starts (no --url)");
    if (s_cfg.url)
        s_cfg.auth = "off";
    if ((s_epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        s_die("epoll_create1: %s", strerror(errno));
    bool both = !strcmp(s_cfg.auth, "both");
    s_cfg.auth_on = !strcmp(s_cfg.auth, "required");
    idle_t idle = {0};
    long long rss_idle = -1;
    /* both: off, required, off, required, so that neither mode always
     * runs first (the first round on a fresh database ran measurably
     * differently); rows [0] and [1] are printed in full */
    enum { ROUNDS = 4 };
    phase_t gets[ROUNDS], cancels[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        gets[i] = (phase_t){.name = "GET"};
        cancels[i] = (phase_t){.name = "cancel", .cancel = true};
    }
    phase_t *get = &gets[0], *cancel = &cancels[0], *aget = &gets[1], *acancel = &cancels[1];
    int exit_status = 0;
    double stop_s = 0;
    for (int round = 0; round < (both ? ROUNDS : 1); round++) {
        if (both)
            s_cfg.auth_on = round % 2 == 1;
        s_round(round == 0 ? &idle : NULL, &rss_idle, &gets[round], &cancels[round], &exit_status,
                &stop_s);
    }
    size_t pending_jobs = s_nids;
    static live_t live;
    bool live_round = !s_cfg.url && s_cfg.live_generators > 0;
    if (live_round) {
        live.generators = s_cfg.live_generators;
        live.mixed.create_rps = s_cfg.create_rps;
        live.mixed.nstreams = s_cfg.streams;
        s_live(&live, &exit_status, &stop_s);
    }

    /* ------------------------------------------------------------ table */
    printf("\nbench/api: server pid %d, %s, http://127.0.0.1:%d\n", (int)s_cfg.pid,
           s_cfg.started ? "started by the bench (--generators 0)" : "attached",
           ntohs(s_cfg.addr.sin_port));
    printf("load: %d keep-alive connections, %d request%s in flight each, closed loop; "
           "%.1f s warm-up + %.1f s measured per route; %zu pending jobs\n",
           s_cfg.connections, s_cfg.depth, s_cfg.depth > 1 ? "s" : "", s_cfg.warmup, s_cfg.duration,
           pending_jobs);
    printf("note: the load generator (one thread), the server, Redis and PostgreSQL share "
           "this machine's %ld CPUs\n\n",
           sysconf(_SC_NPROCESSORS_ONLN));
    s_phase_rows("GET /api/jobs/{id}", get, AIM_GET_RPS);
    s_cpu_line("GET:", get);
    s_phase_rows("POST /api/jobs/{id}/cancel", cancel, AIM_CANCEL_RPS);
    s_cpu_line("cancel:", cancel);
    if (both) {
        printf("\nthe same loads, serve --auth required, each request with a key's token:\n");
        s_phase_rows("GET /api/jobs/{id} (auth)", aget, AIM_GET_RPS);
        s_cpu_line("GET:", aget);
        s_phase_rows("POST .../cancel (auth)", acancel, AIM_CANCEL_RPS);
        s_cpu_line("cancel:", acancel);
        double off_g = 0, on_g = 0, off_c = 0, on_c = 0;
        printf("req/s by round (auth off, required, off, required): GET");
        for (int i = 0; i < ROUNDS; i++)
            printf(" %.0f", gets[i].rps);
        printf(", cancel");
        for (int i = 0; i < ROUNDS; i++)
            printf(" %.0f", cancels[i].rps);
        printf("\n");
        for (int i = 0; i < ROUNDS; i++) {
            *(i % 2 ? &on_g : &off_g) += gets[i].rps;
            *(i % 2 ? &on_c : &off_c) += cancels[i].rps;
        }
        double g = off_g > 0 ? on_g / off_g : 0, c = off_c > 0 ? on_c / off_c : 0;
        printf("auth cost (the two rounds of each mode together): GET %.1f %% fewer req/s "
               "(%.3f x), cancel %.1f %% fewer (%.3f x); aim <= 10 %%: %s, %s\n",
               (1 - g) * 100, g, (1 - c) * 100, c, s_verdict(g >= 0.9), s_verdict(c >= 0.9));
    }
    if (live_round)
        s_live_rows(&live, get);
    printf("\n");
    if (rss_idle >= 0)
        printf("%-34s %12.1f MB      <= %6.1f MB      %s\n", "server RSS idle (after warm-up)",
               rss_idle / 1e6, AIM_IDLE_RSS / 1e6, s_verdict(rss_idle <= AIM_IDLE_RSS));
    else
        printf("%-34s %12s (no --pid)\n", "server RSS idle", "n/a");
    if (s_cfg.idle > 0) {
        printf("idle keep-alive connections: %d asked, %d served GET /healthz and held "
               "(%.1f s to set up), %d failed, %d closed by the server before the reading\n",
               idle.n, idle.served, idle.setup_s, idle.failed, idle.closed_later);
        if (idle.note[0])
            printf("  note: %s\n", idle.note);
        if (idle.rss_with >= 0 && idle.rss_before >= 0) {
            char what[64];
            snprintf(what, sizeof what, "server RSS with %d held", idle.served);
            printf("%-34s %12.1f MB      (server descriptors open: %d)\n", what,
                   idle.rss_with / 1e6, idle.server_fds);
            double per = idle.served ? (double)(idle.rss_with - idle.rss_before) / idle.served : 0;
            printf("%-34s %12.0f B       <= %6.0f B       %s\n", "per idle connection", per,
                   AIM_CONN_BYTES, s_verdict(idle.served > 0 && per <= AIM_CONN_BYTES));
            printf("  = (RSS with them - RSS idle) / %d; measured before the load phases; "
                   "kernel socket memory is not in RSS\n",
                   idle.served);
        }
    }
    if (s_cfg.started)
        printf("\nserver stopped by SIGTERM: exit status %d after %.2f s%s\n", exit_status, stop_s,
               exit_status == 0 ? "" : " (log: see below)");
    if (s_cfg.started && exit_status != 0)
        printf("server log: %s\n", s_cfg.log_path);
    for (int i = 0; i < ROUNDS; i++) {
        free(gets[i].lat);
        free(cancels[i].lat);
    }
    free(s_ids);
    close(s_epfd);
    return 0;
}
