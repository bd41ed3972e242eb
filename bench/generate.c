/*
 * generate.c - the generator's cost: ms per step and images per second at
 * 256x256, 512x512 and 1024x1024 (30 steps) on each backend this machine
 * has, plus the PNG encode time. Prints one table.
 *
 *   bench/generate [--steps N] [--repeat N] [--backend cpu|cuda|all] [--combinations K]
 *
 * Each figure is the median over --repeat images (default 3) of a landscape
 * and an abstract prompt alternately, after one warm-up image per backend
 * (the first CUDA launch loads the module). ns/px is the step cost divided
 * by the pixel count: flat means the cost grows linearly with the size.
 *
 * --combinations K (CPU) adds the throughput of K combinations rendered at
 * once, each by its own thread with its own backend, as K generators do:
 * images/s over all of them, with the process's compute pool (one thread
 * per core, tiles round-robin) and without it (each backend on an inline
 * pool: its thread computes itself, as before the pool), in alternating
 * rounds of the same images.
 */
#include "config.h"

#include "actors/generator/backend.h"
#include "actors/generator/png.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double s_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, s_cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int s_bench_backend(gen_backend_kind_t kind, uint32_t steps, int repeat)
{
    static const char *const prompts[] = {"mountains at sunset", "abstract neon swirl"};
    static const uint32_t sizes[] = {256, 512, 1024};
    char err[256];
    gen_backend_t *b = gen_backend_open(kind, err, sizeof err);
    if (!b) {
        fprintf(stderr, "generate: %s\n", err);
        return -1;
    }
    uint8_t *rgb = NULL;
    gen_params_t warm = {.prompt = prompts[0], .seed = 1, .width = 256, .height = 256, .steps = 2};
    if (gen_render_sync(b, &warm, &rgb, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "generate: %s\n", err);
        gen_backend_close(&b);
        return -1;
    }
    free(rgb);
    char name[32];
    if (kind == GEN_BACKEND_CPU)
        snprintf(name, sizeof name, "cpu (%u thr)", gen_pool_threads(gen_pool_process()));
    else
        snprintf(name, sizeof name, "%s", gen_backend_name(b));

    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        double step_ms[16], image_ms[16], png_ms[16];
        size_t png_bytes = 0;
        for (int r = 0; r < repeat; r++) {
            gen_params_t p = {.prompt = prompts[r % 2],
                              .seed = 100 + (uint64_t)r,
                              .width = sizes[s],
                              .height = sizes[s],
                              .steps = steps};
            double t0 = s_now_ms();
            if (gen_render_sync(b, &p, &rgb, &step_ms[r], err, sizeof err) < 0) {
                fprintf(stderr, "generate: %s\n", err);
                gen_backend_close(&b);
                return -1;
            }
            image_ms[r] = s_now_ms() - t0;
            uint8_t *png;
            double t1 = s_now_ms();
            if (gen_png_encode(rgb, p.width, p.height, &png, &png_bytes, err, sizeof err) < 0) {
                fprintf(stderr, "generate: %s\n", err);
                free(rgb);
                gen_backend_close(&b);
                return -1;
            }
            png_ms[r] = s_now_ms() - t1;
            free(png);
            free(rgb);
        }
        double ms = s_median(step_ms, repeat), img = s_median(image_ms, repeat);
        double px = (double)sizes[s] * sizes[s];
        printf("| %-12s | %4ux%-4u | %5u | %9.3f | %10.1f | %8.1f | %8.2f | %6.1f | %9zu |\n", name,
               sizes[s], sizes[s], steps, ms, ms * 1e6 / px, img, 1000.0 / img,
               s_median(png_ms, repeat), png_bytes);
        fflush(stdout);
    }
    gen_backend_close(&b);
    return 0;
}

/* ------------------------------------------------------------ K at once */

typedef struct {
    gen_pool_t *pool; /* NULL: the process's */
    uint32_t size, steps;
    int images, index;
    int rc;
} s_comb_t;

static void *s_comb_thread(void *arg)
{
    s_comb_t *c = arg;
    char err[256];
    gen_backend_t *b = gen_backend_open_with(GEN_BACKEND_CPU, 0, c->pool, err, sizeof err);
    if (!b) {
        fprintf(stderr, "generate: %s\n", err);
        c->rc = -1;
        return NULL;
    }
    for (int i = 0; i < c->images && c->rc == 0; i++) {
        gen_params_t p = {.prompt = i % 2 ? "abstract neon swirl" : "mountains at sunset",
                          .seed = 200 + (uint64_t)c->index,
                          .image_index = (uint32_t)i,
                          .width = c->size,
                          .height = c->size,
                          .steps = c->steps};
        uint8_t *rgb = NULL;
        if (gen_render_sync(b, &p, &rgb, NULL, err, sizeof err) < 0) {
            fprintf(stderr, "generate: %s\n", err);
            c->rc = -1;
        }
        free(rgb);
    }
    gen_backend_close(&b);
    return NULL;
}

/* images/s of k combinations at once on pool (NULL: the process's). */
static double s_combinations_once(gen_pool_t *pool, int k, uint32_t size, uint32_t steps,
                                  int images)
{
    s_comb_t c[64];
    pthread_t t[64];
    double t0 = s_now_ms();
    for (int i = 0; i < k; i++) {
        c[i] = (s_comb_t){.pool = pool, .size = size, .steps = steps, .images = images, .index = i};
        if (pthread_create(&t[i], NULL, s_comb_thread, &c[i]) != 0) {
            fprintf(stderr, "generate: cannot start a thread\n");
            exit(1);
        }
    }
    int rc = 0;
    for (int i = 0; i < k; i++) {
        pthread_join(t[i], NULL);
        rc |= c[i].rc;
    }
    if (rc)
        exit(1);
    return k * images / ((s_now_ms() - t0) / 1000.0);
}

static int s_bench_combinations(int k, uint32_t steps, int repeat)
{
    char err[256];
    gen_pool_t *none = gen_pool_new(0, GEN_POOL_NICE, err, sizeof err);
    if (!none || !gen_pool_process()) {
        fprintf(stderr, "generate: %s\n", none ? "no compute pool" : err);
        return -1;
    }
    const uint32_t size = 256;
    const int images = 4;
    double with[16], without[16];
    for (int r = 0; r < repeat; r++) { /* alternating, so that noise falls on both */
        with[r] = s_combinations_once(NULL, k, size, steps, images);
        without[r] = s_combinations_once(none, k, size, steps, images);
    }
    double ratio[16];
    for (int r = 0; r < repeat; r++)
        ratio[r] = with[r] / without[r];
    double w = s_median(with, repeat), wo = s_median(without, repeat);
    printf("\n%d combinations at once, %ux%u, %u steps, %d images each, median of %d rounds:\n", k,
           size, size, steps, images, repeat);
    printf("| compute                           | images/s |\n");
    printf("|-----------------------------------|----------|\n");
    printf("| pool (%2u threads, shared)         | %8.2f |\n", gen_pool_threads(gen_pool_process()),
           w);
    printf("| none (each combination's thread)  | %8.2f |\n", wo);
    printf("pool / none: %.3f (median of the %d rounds' own ratios: %.3f)\n", w / wo, repeat,
           s_median(ratio, repeat));
    gen_pool_destroy(&none);
    return 0;
}

int main(int argc, char **argv)
{
    uint32_t steps = 30;
    int repeat = 3;
    const char *which = "all";
    int combinations = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc)
            which = argv[++i];
        else if (!strcmp(argv[i], "--combinations") && i + 1 < argc)
            combinations = atoi(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: bench/generate [--steps N] [--repeat N] [--backend cpu|cuda|all] "
                    "[--combinations K]\n");
            return 2;
        }
    }
    if (steps < 1 || steps > 200 || repeat < 1 || repeat > 16 || combinations < 0
        || combinations > 64) {
        fprintf(stderr, "generate: --steps 1..200, --repeat 1..16, --combinations 0..64\n");
        return 2;
    }
    int devices = gen_cuda_device_count();
    printf("bench/generate: %u steps, median of %d images, %ld CPUs online, %d CUDA device(s)\n\n",
           steps, repeat, sysconf(_SC_NPROCESSORS_ONLN), devices);
    printf("| backend      | size      | steps |   ms/step | ns/px/step | image ms | images/s "
           "| png ms | png bytes |\n");
    printf("|--------------|-----------|-------|-----------|------------|----------|----------"
           "|--------|-----------|\n");
    int rc = 0;
    if (!strcmp(which, "all") || !strcmp(which, "cpu"))
        rc |= s_bench_backend(GEN_BACKEND_CPU, steps, repeat);
    if (!strcmp(which, "all") || !strcmp(which, "cuda")) {
        if (devices > 0)
            rc |= s_bench_backend(GEN_BACKEND_CUDA, steps, repeat);
        else if (!strcmp(which, "cuda")) {
            fprintf(stderr, "generate: no CUDA device\n");
            rc = -1;
        } else
            printf("| cuda         | (no CUDA device: skipped) |\n");
    }
    if (combinations > 0 && (!strcmp(which, "all") || !strcmp(which, "cpu")))
        rc |= s_bench_combinations(combinations, steps, repeat);
    return rc ? 1 : 0;
}
