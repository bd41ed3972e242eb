/*
 * render.c - `imagejobs render --prompt TEXT -o FILE.png`: runs the sampler
 * synchronously on one backend and writes a PNG. A command of the binary,
 * like serve and migrate: it uses the generation engine's public API
 * (backend.h, png.h) and nothing of the actors.
 */
#include "config.h"

#include "cmd/render.h"

#include "actors/generator/backend.h"
#include "actors/generator/png.h"
#include "runtime/clock.h"
#include "runtime/options.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    R_PROMPT,
    R_SEED,
    R_INDEX,
    R_WIDTH,
    R_HEIGHT,
    R_STEPS,
    R_BACKEND,
    R_PLUGIN_DIR,
    R_BACKEND_OPTIONS,
    R_OUTPUT,
    R_NOPTS
};

static const option_t s_options[R_NOPTS] = {
    [R_PROMPT] = {"prompt", NULL, NULL, "TEXT", NULL, "what to draw (1 to 1000 bytes)"},
    [R_SEED] = {"seed", NULL, NULL, "N", "0", "seed, 0 to 2^64-1"},
    [R_INDEX] = {"index", NULL, NULL, "N", "0", "image index within a combination"},
    [R_WIDTH] = {"width", NULL, NULL, "W", "512", "width, a multiple of 8 from 64 to 2048"},
    [R_HEIGHT] = {"height", NULL, NULL, "H", "512", "height, a multiple of 8 from 64 to 2048"},
    [R_STEPS] = {"steps", NULL, NULL, "T", "30", "sampler steps, 1 to 200"},
    [R_BACKEND] = {"backend", "IMAGEJOBS_BACKEND", NULL, "BACKEND", "auto",
                   "auto (CUDA when a device exists), cpu, cuda, or plugin:PATH / plugin:NAME"},
    [R_PLUGIN_DIR] = {"plugin-dir", "IMAGEJOBS_PLUGIN_DIR", NULL, "DIR", IMAGEJOBS_PLUGIN_DIR,
                      "where plugin:NAME is looked up"},
    [R_BACKEND_OPTIONS] = {"backend-options", "IMAGEJOBS_BACKEND_OPTIONS", NULL, "STRING", NULL,
                           "options handed to the plugin's open"},
    [R_OUTPUT] = {"output", NULL, NULL, "FILE.png", NULL, "where to write the PNG", 'o'},
};

static int s_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno)
        return -1;
    *out = v;
    return 0;
}

int render_main(int argc, char **argv)
{
    const char *v[R_NOPTS];
    char err[256];
    int rc = options_parse(s_options, R_NOPTS, v, argc, argv,
                           "usage: imagejobs render --prompt TEXT [options] -o FILE.png", err,
                           sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "imagejobs render: %s\n", err);
        return rc < 0 ? 2 : 0;
    }
    if (!v[R_PROMPT] || !v[R_OUTPUT]) {
        fprintf(stderr, "imagejobs render: --%s is required (see --help)\n",
                !v[R_PROMPT] ? "prompt" : "output");
        return 2;
    }
    gen_params_t p = {.prompt = v[R_PROMPT]};
    long width, height, steps, index;
    gen_backend_kind_t kind;
    if (s_parse_u64(v[R_SEED], &p.seed) < 0) {
        fprintf(stderr, "imagejobs render: --seed must be an integer from 0 to 2^64-1, not '%s'\n",
                v[R_SEED]);
        return 2;
    }
    if (options_long("index", v[R_INDEX], 0, 1000000, &index, err, sizeof err) < 0
        || options_long("width", v[R_WIDTH], 1, 1L << 20, &width, err, sizeof err) < 0
        || options_long("height", v[R_HEIGHT], 1, 1L << 20, &height, err, sizeof err) < 0
        || options_long("steps", v[R_STEPS], 0, 1L << 20, &steps, err, sizeof err) < 0) {
        fprintf(stderr, "imagejobs render: %s\n", err);
        return 2;
    }
    if (gen_backend_kind_parse(v[R_BACKEND], &kind) < 0) {
        fprintf(stderr,
                "imagejobs render: --backend must be auto, cpu, cuda or plugin:PATH|NAME, not "
                "'%s'\n",
                v[R_BACKEND]);
        return 2;
    }
    p.image_index = (uint32_t)index;
    p.width = (uint32_t)width;
    p.height = (uint32_t)height;
    p.steps = (uint32_t)steps;
    /* the engine's checks name the field; report them before opening a device */
    if (gen_params_check(&p, err, sizeof err) < 0) {
        fprintf(stderr, "imagejobs render: %s\n", err);
        return 2;
    }

    gen_plugin_t *plugin = NULL;
    if (kind == GEN_BACKEND_PLUGIN
        && !(plugin = gen_plugin_load(gen_backend_plugin_spec(v[R_BACKEND]), v[R_PLUGIN_DIR],
                                      v[R_BACKEND_OPTIONS], err, sizeof err))) {
        fprintf(stderr, "imagejobs render: %s\n", err);
        return 2;
    }
    gen_backend_t *b = gen_backend_open_for(kind, plugin, 0, NULL, err, sizeof err);
    if (!b) {
        fprintf(stderr, "imagejobs render: %s\n", err);
        int status = plugin ? 2 : 1; /* a plugin that cannot open: a start-up error */
        gen_plugin_unload(&plugin);
        return status;
    }
    uint8_t *rgb = NULL, *png = NULL;
    size_t png_len = 0;
    double ms_step = 0, t0 = clock_mono_ms(), t_png = 0;
    rc = gen_render_sync(b, &p, &rgb, &ms_step, err, sizeof err);
    double t_gen = clock_mono_ms() - t0;
    if (rc == 0) {
        double t1 = clock_mono_ms();
        rc = gen_png_encode(rgb, p.width, p.height, &png, &png_len, err, sizeof err);
        t_png = clock_mono_ms() - t1;
    }
    if (rc == 0)
        rc = gen_png_write_file(v[R_OUTPUT], png, png_len, err, sizeof err);
    if (rc == 0) {
        printf("backend %s: %ux%u, %u steps, seed %llu: %.2f ms/step, %.1f ms in all; "
               "png %.1f ms, %zu bytes -> %s\n",
               gen_backend_name(b), p.width, p.height, p.steps, (unsigned long long)p.seed, ms_step,
               t_gen, t_png, png_len, v[R_OUTPUT]);
    } else {
        fprintf(stderr, "imagejobs render: %s\n", err);
    }
    free(png);
    free(rgb);
    gen_backend_close(&b);
    gen_plugin_unload(&plugin);
    return rc == 0 ? 0 : 1;
}
