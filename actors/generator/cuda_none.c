/*
 * cuda_none.c - the CUDA engine's functions in a build without CUDA: no
 * devices, and opening one says why, so backend.c links either way.
 */
#include "config.h"

#include "actors/generator/engines.h"

#include <stdio.h>

#define S_NOT_BUILT "CUDA backend not built (configure --with-cuda on a machine with nvcc)"

int gen_cuda_count(void)
{
    return 0;
}

int gen_cuda_open(int device, gen_cuda_t **out, char *err, size_t errlen)
{
    *out = NULL;
    snprintf(err, errlen, "%s", S_NOT_BUILT);
    return -1;
}

void gen_cuda_close(gen_cuda_t **gp)
{
    *gp = NULL;
}

void gen_cuda_set_wakeup(gen_cuda_t *g, void (*fn)(void *arg), void *arg) {}

int gen_cuda_begin(gen_cuda_t *g, const sampler_scene_t *sc, uint32_t steps)
{
    return -1;
}

gen_status_t gen_cuda_advance(gen_cuda_t *g)
{
    return GEN_ERROR;
}

int gen_cuda_wait(gen_cuda_t *g)
{
    return -1;
}

uint32_t gen_cuda_steps_done(const gen_cuda_t *g)
{
    return 0;
}

const uint8_t *gen_cuda_pixels(const gen_cuda_t *g)
{
    return NULL;
}

int gen_cuda_snapshot(gen_cuda_t *g, uint8_t *rgb_out)
{
    return -1;
}

void gen_cuda_abort(gen_cuda_t *g) {}

const char *gen_cuda_error(const gen_cuda_t *g)
{
    return S_NOT_BUILT;
}
