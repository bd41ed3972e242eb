/*
 * plugin.c - the plugin engine: a generation backend loaded from a shared
 * object through the public interface include/imagejobs/backend.h.
 *
 * gen_plugin_load() dlopens the library once per process and checks its
 * table (symbol, ABI major, size); each generator then opens its own
 * instance with gen_plug_open(). Every call into an instance runs on a
 * worker thread of that instance, never on the generator's loop: the loop
 * hands the worker one command at a time (begin, step, pixels, abort) and
 * gets GEN_WAIT back until it is done; the worker then wakes the loop
 * through the wakeup callback (ev_async_send), as the CUDA engine's host
 * callback does. A cancel is gen_plug_abort() on the loop's thread: it sets
 * the instance's cancel flag (an atomic the plugin reads inside its step)
 * and returns at once, whatever the plugin is doing; the step in flight
 * ends on the worker, its result unobserved.
 *
 * The loop and the worker share one mutex, held only for a few stores
 * (never across a plugin call), so the loop never waits on a plugin.
 *
 * Previews: the plugin's state is its worker's while a step runs, so the
 * loop never calls the plugin's preview. Once the loop asks for a preview
 * of an image (gen_plug_preview), the worker renders one after each step
 * of that image into a cache, and the loop copies the latest from there;
 * the first ask of an image finds none yet and says "pending".
 *
 * A plugin that crashes takes the process with it (see s_crash_handler):
 * the host only says which plugin and which call before it goes.
 */
#include "config.h"

#include "actors/generator/engines.h"
#include "actors/generator/pool.h"

#include "imagejobs/backend.h"
#include "runtime/clock.h"
#include "runtime/log.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The table fields of ABI 1.0: a plugin's table must have them all. */
#define S_API_V1_0_SIZE (offsetof(imagejobs_backend_api_t, close) + sizeof(void (*)(void)))

struct gen_plugin {
    void *dl;
    const imagejobs_backend_api_t *api;
    char *path;
    char *options;
    pthread_mutex_t open_mu; /* the interface promises one open at a time */
    atomic_uint opened;      /* instances opened so far (their index) */
};

/* ------------------------------------------------- a plugin that crashes */

/* A plugin runs inside the process: a crash in it is the process's death,
 * and nothing may go on after it (any memory may be damaged by then). What
 * the host does is say so. Each worker notes the call it is in, and a
 * handler installed at the first load writes one line naming the plugin
 * and the call before the signal goes on to what was there before it: a
 * sanitizer's report, or the default action (a core, death by the signal).
 * A crash on any other thread passes through untouched. There is no
 * alternate stack: a plugin that overflows its stack dies without the line. */
static _Thread_local const char *s_call;      /* the plugin call this worker is in, or NULL */
static _Thread_local const char *s_call_path; /* and the plugin's path */
static const int s_crash_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
static const char *const s_crash_names[] = {"SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT"};
#define S_CRASH_SIGNALS (sizeof s_crash_signals / sizeof *s_crash_signals)
static struct sigaction s_crash_prev[S_CRASH_SIGNALS];
static pthread_once_t s_crash_once = PTHREAD_ONCE_INIT;

/* Appends s to line (async-signal-safe: no stdio in a handler). */
static void s_crash_put(char *line, size_t *n, size_t cap, const char *s)
{
    while (s && *s && *n < cap)
        line[(*n)++] = *s++;
}

static void s_crash_handler(int sig, siginfo_t *si, void *ctx)
{
    size_t i = 0;
    while (i + 1 < S_CRASH_SIGNALS && s_crash_signals[i] != sig)
        i++;
    if (s_call) {
        char line[1024];
        size_t n = 0;
        s_crash_put(line, &n, sizeof line - 1, "imagejobs: the backend plugin ");
        s_crash_put(line, &n, sizeof line - 1, s_call_path);
        s_crash_put(line, &n, sizeof line - 1, " crashed in its ");
        s_crash_put(line, &n, sizeof line - 1, s_call);
        s_crash_put(line, &n, sizeof line - 1, "() (");
        s_crash_put(line, &n, sizeof line - 1, s_crash_names[i]);
        s_crash_put(line, &n, sizeof line - 1, "); the process ends with it\n");
        ssize_t w = write(STDERR_FILENO, line, n);
        (void)w;
        s_call = NULL; /* a second fault here goes straight on */
    }
    const struct sigaction *prev = &s_crash_prev[i];
    if ((prev->sa_flags & SA_SIGINFO) && prev->sa_sigaction) {
        prev->sa_sigaction(sig, si, ctx);
    } else if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
        prev->sa_handler(sig);
    } else {
        /* pending until the handler returns, then the default action */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigemptyset(&dfl.sa_mask);
        sigaction(sig, &dfl, NULL);
        raise(sig);
    }
}

static void s_crash_install(void)
{
    for (size_t i = 0; i < S_CRASH_SIGNALS; i++) {
        struct sigaction sa = {.sa_sigaction = s_crash_handler,
                               .sa_flags = SA_SIGINFO | SA_ONSTACK};
        sigemptyset(&sa.sa_mask);
        sigaction(s_crash_signals[i], &sa, &s_crash_prev[i]);
    }
}

/* ------------------------------------------------------------ loading */

/* NAME or PATH -> the file to dlopen: anything with a '/' is a path; a
 * name is looked up in dir as NAME.so, then imagejobs-backend-NAME.so. */
static int s_resolve(const char *spec, const char *dir, char *out, size_t outlen, char *err,
                     size_t errlen)
{
    if (!spec || !*spec) {
        snprintf(err, errlen, "--backend plugin: needs a path or a name (plugin:PATH|plugin:NAME)");
        return -1;
    }
    if (strchr(spec, '/')) {
        snprintf(out, outlen, "%s", spec);
        return 0;
    }
    if (!dir || !*dir) {
        snprintf(err, errlen, "plugin '%s': no --plugin-dir to look it up in", spec);
        return -1;
    }
    struct stat st;
    snprintf(out, outlen, "%s/%s.so", dir, spec);
    if (stat(out, &st) == 0)
        return 0;
    snprintf(out, outlen, "%s/imagejobs-backend-%s.so", dir, spec);
    if (stat(out, &st) == 0)
        return 0;
    snprintf(err, errlen, "plugin '%s' not found: neither %s/%s.so nor %s exists", spec, dir, spec,
             out);
    return -1;
}

gen_plugin_t *gen_plugin_load(const char *spec, const char *dir, const char *options, char *err,
                              size_t errlen)
{
    char path[4096];
    if (s_resolve(spec, dir, path, sizeof path, err, errlen) < 0)
        return NULL;
    pthread_once(&s_crash_once, s_crash_install);
    struct stat st;
    if (stat(path, &st) < 0) {
        snprintf(err, errlen, "plugin %s: %s", path, strerror(errno));
        return NULL;
    }
    dlerror();
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        const char *why = dlerror();
        snprintf(err, errlen, "plugin %s cannot be loaded: %s", path, why ? why : "dlopen failed");
        return NULL;
    }
    dlerror();
    void *sym = dlsym(dl, IMAGEJOBS_BACKEND_ENTRY_SYMBOL);
    const char *why = dlerror();
    if (!sym || why) {
        snprintf(err, errlen, "plugin %s has no %s() (not an imagejobs backend plugin?)", path,
                 IMAGEJOBS_BACKEND_ENTRY_SYMBOL);
        dlclose(dl);
        return NULL;
    }
    /* the usual POSIX dance: a data pointer to a function pointer */
    imagejobs_backend_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry);
    const imagejobs_backend_api_t *api = entry();
    uint32_t major = api ? IMAGEJOBS_BACKEND_ABI_MAJOR_OF(api->abi_version) : 0;
    if (!api) {
        snprintf(err, errlen, "plugin %s: %s() returned no table", path,
                 IMAGEJOBS_BACKEND_ENTRY_SYMBOL);
    } else if (major != IMAGEJOBS_BACKEND_ABI_MAJOR) {
        snprintf(err, errlen,
                 "plugin %s is built for backend ABI %u.%u, this imagejobs speaks %u.x "
                 "(rebuild it against this imagejobs' imagejobs/backend.h)",
                 path, major, IMAGEJOBS_BACKEND_ABI_MINOR_OF(api->abi_version),
                 IMAGEJOBS_BACKEND_ABI_MAJOR);
        api = NULL;
    } else if (api->size < S_API_V1_0_SIZE) {
        snprintf(err, errlen, "plugin %s: its function table is %u bytes, ABI 1.0 needs %zu", path,
                 api->size, (size_t)S_API_V1_0_SIZE);
        api = NULL;
    } else if (!api->open || !api->describe || !api->begin || !api->step || !api->pixels
               || !api->abort || !api->error || !api->close) {
        snprintf(err, errlen, "plugin %s: its function table lacks a required function", path);
        api = NULL;
    }
    if (!api) {
        dlclose(dl);
        return NULL;
    }
    gen_plugin_t *pl = calloc(1, sizeof *pl);
    if (!pl || !(pl->path = strdup(path)) || !(pl->options = strdup(options ? options : ""))) {
        snprintf(err, errlen, "out of memory");
        if (pl) {
            free(pl->path);
            free(pl);
        }
        dlclose(dl);
        return NULL;
    }
    pl->dl = dl;
    pl->api = api;
    pthread_mutex_init(&pl->open_mu, NULL);
    log_info("backend plugin %s loaded (ABI %u.%u)", path, major,
             IMAGEJOBS_BACKEND_ABI_MINOR_OF(api->abi_version));
    return pl;
}

void gen_plugin_unload(gen_plugin_t **pp)
{
    gen_plugin_t *pl = *pp;
    if (!pl)
        return;
#if !defined(__SANITIZE_ADDRESS__)
    /* Under ASan the module stays mapped: LeakSanitizer symbolises its
     * reports at exit, and a leak in an unmapped module reads
     * "<unknown module>". */
    dlclose(pl->dl);
#endif
    pthread_mutex_destroy(&pl->open_mu);
    free(pl->path);
    free(pl->options);
    free(pl);
    *pp = NULL;
}

const char *gen_plugin_path(const gen_plugin_t *pl)
{
    return pl->path;
}

/* ------------------------------------------------------------ an instance */

typedef enum { CMD_NONE, CMD_BEGIN, CMD_STEP, CMD_PIXELS, CMD_ABORT } cmd_t;

struct gen_plug {
    const gen_plugin_t *lib;
    const imagejobs_backend_api_t *api;
    imagejobs_backend_t *inst; /* the worker's alone once open is done */
    imagejobs_backend_info_t info;
    char name[64];
    imagejobs_backend_cancel_t cancel;
    pthread_t worker;
    bool started;

    pthread_mutex_t mu;
    pthread_cond_t cmd_cv;  /* worker: a command (or stop) */
    pthread_cond_t done_cv; /* gen_plug_wait, open: a command finished */
    void (*wake)(void *arg);
    void *wake_arg;
    bool stop;
    /* the slot: at most one command waits; a newer one replaces it */
    cmd_t cmd;
    uint64_t cmd_seq;
    imagejobs_backend_image_t image; /* CMD_BEGIN's, strings owned */
    uint64_t image_id;               /* CMD_BEGIN's image (the loop's count) */
    int64_t cancel_ns;               /* when the loop raised the flag (monotonic) */
    /* previews: asked by the loop for image pv_want_image, at most
     * pv_want_side; the worker's latest in pv (for image pv_image) */
    uint64_t pv_want_image;
    uint32_t pv_want_side;
    uint64_t pv_image;
    uint32_t pv_w, pv_h, pv_step;
    uint8_t *pv;
    size_t pv_cap;
    /* the worker's result of command done_seq */
    uint64_t done_seq;
    imagejobs_backend_status_t status;
    uint32_t done_steps;
    char done_err[256];
    bool open_done;
    int open_rc;

    /* the loop's side (no lock: only the loop's thread touches these) */
    uint64_t images; /* images begun: the current one's id */
    bool pv_pending; /* the last gen_plug_preview: one will come */
    uint64_t seq;    /* the last command submitted */
    cmd_t last;      /* and what it was */
    bool active;     /* an image is begun and not aborted */
    bool finished;   /* its pixels are in rgb */
    uint32_t steps, steps_done;
    uint32_t width, height;
    uint8_t *rgb; /* the finished image (RGB8), written by the worker's CMD_PIXELS */
    size_t rgb_cap;
    int device;
    unsigned index;
    char err[256];
};

static void s_image_free(imagejobs_backend_image_t *im)
{
    free((char *)im->prompt);
    free((char *)im->style);
    memset(im, 0, sizeof *im);
}

static void s_copy_error(gen_plug_t *p, char *dst, size_t len, const char *what)
{
    const char *m = p->api->error(p->inst);
    snprintf(dst, len, "%s: %s", what, m && *m ? m : "failed (no message)");
}

/* Worker: the finished pixels into p->rgb as RGB8. */
static imagejobs_backend_status_t s_fetch_pixels(gen_plug_t *p, char *err, size_t errlen)
{
    imagejobs_backend_pixels_t px = {.size = sizeof px};
    imagejobs_backend_status_t st = p->api->pixels(p->inst, &px);
    if (st != IMAGEJOBS_BACKEND_OK) {
        if (st != IMAGEJOBS_BACKEND_CANCELLED)
            s_copy_error(p, err, errlen, "pixels");
        return st;
    }
    if (!px.data || px.width != p->width || px.height != p->height
        || (px.channels != 3 && px.channels != 4) || px.stride < (size_t)px.width * px.channels) {
        snprintf(err, errlen,
                 "pixels: the plugin returned a %ux%u image of %u channels, stride %zu "
                 "(expected %ux%u, 3 or 4 channels)",
                 px.width, px.height, px.channels, px.stride, p->width, p->height);
        return IMAGEJOBS_BACKEND_ERROR;
    }
    size_t need = (size_t)px.width * px.height * 3;
    if (need > p->rgb_cap) {
        uint8_t *rgb = realloc(p->rgb, need);
        if (!rgb) {
            snprintf(err, errlen, "out of memory for a %ux%u image", px.width, px.height);
            return IMAGEJOBS_BACKEND_NO_MEMORY;
        }
        p->rgb = rgb;
        p->rgb_cap = need;
    }
    for (uint32_t y = 0; y < px.height; y++) {
        const uint8_t *src = px.data + y * px.stride;
        uint8_t *dst = p->rgb + (size_t)y * px.width * 3;
        if (px.channels == 3) {
            memcpy(dst, src, (size_t)px.width * 3);
        } else {
            for (uint32_t x = 0; x < px.width; x++)
                memcpy(dst + 3 * x, src + 4 * x, 3);
        }
    }
    return IMAGEJOBS_BACKEND_OK;
}

/* Worker, after a step of image_id while the loop wants its previews: the
 * plugin renders into *buf (the worker's), the result is copied into the
 * cache under the lock, so the loop never sees a half-written one. */
static void s_preview_after_step(gen_plug_t *p, uint64_t image_id, uint32_t side, uint32_t step,
                                 uint8_t **buf, size_t *cap)
{
    size_t need = (size_t)side * side * 3;
    if (need > *cap) {
        uint8_t *nb = realloc(*buf, need);
        if (!nb)
            return;
        *buf = nb;
        *cap = need;
    }
    imagejobs_backend_preview_t pv = {.size = sizeof pv, .max_side = side, .rgb = *buf};
    s_call = "preview";
    if (p->api->preview(p->inst, &pv) != IMAGEJOBS_BACKEND_OK || pv.width < 1 || pv.height < 1
        || pv.width > side || pv.height > side)
        return; /* no preview this time; the loop keeps the last one */
    pthread_mutex_lock(&p->mu);
    if (p->pv_want_image == image_id && need > p->pv_cap) {
        uint8_t *nb = realloc(p->pv, need);
        if (nb) {
            p->pv = nb;
            p->pv_cap = need;
        }
    }
    if (p->pv_want_image == image_id && need <= p->pv_cap) {
        memcpy(p->pv, *buf, (size_t)pv.width * pv.height * 3);
        p->pv_image = image_id;
        p->pv_w = pv.width;
        p->pv_h = pv.height;
        p->pv_step = step;
    }
    pthread_mutex_unlock(&p->mu);
}

static void *s_worker(void *arg)
{
    gen_plug_t *p = arg;
    char err[256] = "";
    char name[32];
    snprintf(name, sizeof name, "plugin-%u", p->index);
    log_set_thread_name(name);
    s_call_path = p->lib->path;
    /* the plugin's steps are batch work, like the compute pool's: below the
     * generator's loop (nice 0), which must take a cancel at once */
    gen_pool_nice_self(GEN_POOL_NICE);

    /* open and describe here: every call of the instance on this thread */
    imagejobs_backend_open_args_t oa = {.size = sizeof oa,
                                        .options = p->lib->options,
                                        .device = p->device,
                                        .index = p->index,
                                        .cancel = &p->cancel};
    const char *why = NULL;
    pthread_mutex_lock((pthread_mutex_t *)&p->lib->open_mu);
    s_call = "open";
    imagejobs_backend_status_t st = p->api->open(&oa, &p->inst, &why);
    if (st != IMAGEJOBS_BACKEND_OK || !p->inst)
        snprintf(err, sizeof err, "%s", why && *why ? why : "open failed (no message)");
    pthread_mutex_unlock((pthread_mutex_t *)&p->lib->open_mu);
    if (st == IMAGEJOBS_BACKEND_OK && p->inst) {
        p->info.size = sizeof p->info;
        s_call = "describe";
        if (p->api->describe(p->inst, &p->info) != IMAGEJOBS_BACKEND_OK) {
            s_copy_error(p, err, sizeof err, "describe");
            s_call = "close";
            p->api->close(p->inst);
            p->inst = NULL;
            st = IMAGEJOBS_BACKEND_ERROR;
        }
    }
    s_call = NULL;
    pthread_mutex_lock(&p->mu);
    p->open_done = true;
    p->open_rc = p->inst ? 0 : -1;
    snprintf(p->done_err, sizeof p->done_err, "%s", err);
    pthread_cond_broadcast(&p->done_cv);
    if (!p->inst) {
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }

    bool image = false; /* the plugin holds an image (begun, not aborted) */
    uint64_t image_id = 0;
    uint32_t steps = 0; /* the image's full steps done, as step() last said */
    uint8_t *pv = NULL; /* the plugin renders into this, then it goes to p->pv */
    size_t pv_cap = 0;
    for (;;) {
        while (!p->stop && p->cmd == CMD_NONE)
            pthread_cond_wait(&p->cmd_cv, &p->mu);
        if (p->stop)
            break;
        cmd_t cmd = p->cmd;
        uint64_t seq = p->cmd_seq;
        if (cmd == CMD_BEGIN)
            image_id = p->image_id;
        uint32_t pv_side = p->pv_want_image == image_id ? p->pv_want_side : 0;
        imagejobs_backend_image_t im = p->image;
        memset(&p->image, 0, sizeof p->image); /* the strings are ours now */
        p->cmd = CMD_NONE;
        /* a new image starts with the flag down; an abort that comes after
         * this point (under the same lock) raises it again for this begin */
        if (cmd == CMD_BEGIN) {
            atomic_store(&p->cancel, 0);
            p->cancel_ns = 0;
        }
        pthread_mutex_unlock(&p->mu);

        err[0] = 0;
        switch (cmd) {
        case CMD_BEGIN:
            s_call = "abort";
            if (image)
                p->api->abort(p->inst);
            steps = 0;
            s_call = "begin";
            st = p->api->begin(p->inst, &im);
            image = true;
            if (st != IMAGEJOBS_BACKEND_OK && st != IMAGEJOBS_BACKEND_CANCELLED)
                s_copy_error(p, err, sizeof err, "begin");
            break;
        case CMD_STEP: /* a call that does part of a step leaves steps as it was */
            s_call = "step";
            st = p->api->step(p->inst, &steps);
            if (st < 0)
                s_copy_error(p, err, sizeof err, "step");
            if ((st == IMAGEJOBS_BACKEND_MORE || st == IMAGEJOBS_BACKEND_DONE) && pv_side > 0)
                s_preview_after_step(p, image_id, pv_side, steps, &pv, &pv_cap);
            break;
        case CMD_PIXELS:
            s_call = "pixels";
            st = s_fetch_pixels(p, err, sizeof err);
            break;
        case CMD_ABORT:
        default:
            s_call = "abort";
            if (image)
                p->api->abort(p->inst);
            image = false;
            st = IMAGEJOBS_BACKEND_OK;
            break;
        }
        s_call = NULL;
        s_image_free(&im);

        pthread_mutex_lock(&p->mu);
        if (st == IMAGEJOBS_BACKEND_CANCELLED && p->cancel_ns > 0) /* bench/README.md */
            log_info("the plugin's call returned %lld us after the cancel flag was raised",
                     (long long)((clock_mono_ns() - p->cancel_ns) / 1000));
        p->done_seq = seq;
        p->status = st;
        p->done_steps = steps;
        snprintf(p->done_err, sizeof p->done_err, "%s", err);
        pthread_cond_broadcast(&p->done_cv);
        void (*wake)(void *) = p->wake;
        void *wake_arg = p->wake_arg;
        pthread_mutex_unlock(&p->mu);
        if (wake && cmd != CMD_ABORT)
            wake(wake_arg); /* thread-safe by contract: ev_async_send */
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    s_call = "abort";
    if (image)
        p->api->abort(p->inst);
    s_call = "close";
    p->api->close(p->inst);
    s_call = NULL;
    p->inst = NULL;
    free(pv);
    return NULL;
}

int gen_plug_open(const gen_plugin_t *lib, int device, gen_plug_t **out, char *err, size_t errlen)
{
    *out = NULL;
    gen_plug_t *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->lib = lib;
    p->api = lib->api;
    p->device = device;
    p->index = atomic_fetch_add((atomic_uint *)&lib->opened, 1);
    atomic_init(&p->cancel, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cmd_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    int rc = pthread_create(&p->worker, NULL, s_worker, p);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the plugin's worker thread: %s", strerror(rc));
        gen_plug_close(&p);
        return -1;
    }
    p->started = true;
    /* start-up (an actor's init, not its loop): waiting for open is fine */
    pthread_mutex_lock(&p->mu);
    while (!p->open_done)
        pthread_cond_wait(&p->done_cv, &p->mu);
    rc = p->open_rc;
    pthread_mutex_unlock(&p->mu);
    if (rc < 0) {
        snprintf(err, errlen, "plugin %s failed to open: %s", lib->path, p->done_err);
        gen_plug_close(&p);
        return -1;
    }
    snprintf(p->name, sizeof p->name, "plugin:%s",
             p->info.name && *p->info.name ? p->info.name : "unnamed");
    p->done_err[0] = 0;
    *out = p;
    return 0;
}

void gen_plug_close(gen_plug_t **pp)
{
    gen_plug_t *p = *pp;
    if (!p)
        return;
    if (p->started) {
        pthread_mutex_lock(&p->mu);
        p->stop = true;
        atomic_store(&p->cancel, 1); /* a step in flight ends soon */
        p->cancel_ns = clock_mono_ns();
        pthread_cond_signal(&p->cmd_cv);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->worker, NULL);
    }
    s_image_free(&p->image);
    free(p->pv);
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->cmd_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->rgb);
    free(p);
    *pp = NULL;
}

const char *gen_plug_name(const gen_plug_t *p)
{
    return p->name;
}

void gen_plug_set_wakeup(gen_plug_t *p, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&p->mu);
    p->wake = fn;
    p->wake_arg = arg;
    pthread_mutex_unlock(&p->mu);
}

/* Loop: puts cmd in the slot (replacing any command not yet taken). */
static void s_submit(gen_plug_t *p, cmd_t cmd, imagejobs_backend_image_t *im)
{
    pthread_mutex_lock(&p->mu);
    s_image_free(&p->image);
    if (im) {
        p->image = *im;
        memset(im, 0, sizeof *im);
    }
    p->cmd = cmd;
    p->cmd_seq = ++p->seq;
    p->image_id = p->images;
    pthread_cond_signal(&p->cmd_cv);
    pthread_mutex_unlock(&p->mu);
    p->last = cmd;
}

int gen_plug_check(const gen_plug_t *p, uint32_t width, uint32_t height, uint32_t steps, char *err,
                   size_t errlen)
{
    const imagejobs_backend_info_t *in = &p->info;
    const struct {
        const char *what;
        uint32_t v, lo, hi;
    } dims[] = {{"width", width, in->min_width, in->max_width},
                {"height", height, in->min_height, in->max_height}};
    for (size_t i = 0; i < 2; i++) {
        if ((dims[i].lo && dims[i].v < dims[i].lo) || (dims[i].hi && dims[i].v > dims[i].hi)) {
            snprintf(err, errlen, "%s %u is outside what %s supports (%u to %u)", dims[i].what,
                     dims[i].v, p->name, dims[i].lo, dims[i].hi ? dims[i].hi : UINT32_MAX);
            return -1;
        }
        if (in->size_multiple > 1 && dims[i].v % in->size_multiple) {
            snprintf(err, errlen, "%s %u is not a multiple of %u, as %s needs", dims[i].what,
                     dims[i].v, in->size_multiple, p->name);
            return -1;
        }
    }
    if (in->max_steps && steps > in->max_steps) {
        snprintf(err, errlen, "%u steps are more than %s supports (%u)", steps, p->name,
                 in->max_steps);
        return -1;
    }
    return 0;
}

int gen_plug_begin(gen_plug_t *p, const char *prompt, uint64_t seed, uint32_t image_index,
                   uint32_t width, uint32_t height, uint32_t steps, char *err, size_t errlen)
{
    gen_plug_abort(p);
    if (gen_plug_check(p, width, height, steps, err, errlen) < 0)
        return -1;
    imagejobs_backend_image_t im = {.size = sizeof im,
                                    .prompt = strdup(prompt),
                                    .style = strdup(""),
                                    .seed = seed,
                                    .image_index = image_index,
                                    .width = width,
                                    .height = height,
                                    .steps = steps};
    if (!im.prompt || !im.style) {
        s_image_free(&im);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->images++;
    p->width = width;
    p->height = height;
    p->steps = steps;
    p->steps_done = 0;
    p->finished = false;
    p->active = true;
    p->err[0] = 0;
    s_submit(p, CMD_BEGIN, &im);
    return 0;
}

gen_status_t gen_plug_advance(gen_plug_t *p)
{
    if (!p->active) {
        snprintf(p->err, sizeof p->err, "no image in progress");
        return GEN_ERROR;
    }
    if (p->finished)
        return GEN_DONE;
    pthread_mutex_lock(&p->mu);
    bool done = p->done_seq == p->seq;
    imagejobs_backend_status_t st = p->status;
    uint32_t steps = p->done_steps;
    if (done && st < 0)
        snprintf(p->err, sizeof p->err, "%s", p->done_err);
    pthread_mutex_unlock(&p->mu);
    if (!done)
        return GEN_WAIT; /* the worker's wakeup brings us back */

    if (st == IMAGEJOBS_BACKEND_CANCELLED) {
        /* nobody asked: an abort never leaves the image active */
        snprintf(p->err, sizeof p->err, "%s: the plugin stopped the image as cancelled, unasked",
                 p->name);
        return GEN_ERROR;
    }
    if (st < 0)
        return GEN_ERROR;
    switch (p->last) {
    case CMD_BEGIN:
        s_submit(p, CMD_STEP, NULL);
        return GEN_WAIT;
    case CMD_STEP:
        if (steps > p->steps) {
            snprintf(p->err, sizeof p->err, "%s reported %u steps done of %u", p->name, steps,
                     p->steps);
            return GEN_ERROR;
        }
        p->steps_done = steps;
        if (st == IMAGEJOBS_BACKEND_DONE) {
            p->steps_done = p->steps;
            s_submit(p, CMD_PIXELS, NULL);
        } else {
            s_submit(p, CMD_STEP, NULL);
        }
        return GEN_WAIT;
    case CMD_PIXELS:
        p->finished = true;
        return GEN_DONE;
    default:
        snprintf(p->err, sizeof p->err, "no image in progress");
        return GEN_ERROR;
    }
}

int gen_plug_wait(gen_plug_t *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->done_seq != p->seq)
        pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

uint32_t gen_plug_steps_done(const gen_plug_t *p)
{
    return p->active ? p->steps_done : 0;
}

const uint8_t *gen_plug_pixels(const gen_plug_t *p)
{
    return p->active && p->finished ? p->rgb : NULL;
}

void gen_plug_abort(gen_plug_t *p)
{
    if (!p->active)
        return;
    p->active = false;
    p->finished = false;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->cancel, 1); /* read by the plugin inside its step */
    p->cancel_ns = clock_mono_ns();
    pthread_mutex_unlock(&p->mu);
    s_submit(p, CMD_ABORT, NULL);
}

const char *gen_plug_error(const gen_plug_t *p)
{
    return p->err;
}

int gen_plug_preview(gen_plug_t *p, uint32_t max_side, uint8_t *rgb_out, uint32_t *w_out,
                     uint32_t *h_out)
{
    p->pv_pending = false;
    if (!p->api->preview || !(p->info.flags & IMAGEJOBS_BACKEND_CAN_PREVIEW)) {
        snprintf(p->err, sizeof p->err, "%s offers no previews", p->name);
        return -1;
    }
    if (!p->active || max_side == 0) {
        snprintf(p->err, sizeof p->err, "%s",
                 max_side ? "no image in progress" : "a preview needs a size of at least 1");
        return -1;
    }
    pthread_mutex_lock(&p->mu);
    p->pv_want_image = p->images; /* from now on, one after each step */
    p->pv_want_side = max_side;
    bool have = p->pv_image == p->images && p->pv_w && p->pv_w <= max_side && p->pv_h <= max_side;
    if (have) {
        memcpy(rgb_out, p->pv, (size_t)p->pv_w * p->pv_h * 3);
        *w_out = p->pv_w;
        *h_out = p->pv_h;
    }
    pthread_mutex_unlock(&p->mu);
    if (!have) {
        p->pv_pending = true;
        snprintf(p->err, sizeof p->err, "the first preview of this image comes after a step");
        return -1;
    }
    return 0;
}

bool gen_plug_preview_pending(const gen_plug_t *p)
{
    return p->pv_pending;
}
