/*
 * cuda.cu - the CUDA engine: the sampler's step as a kernel on a stream of
 * this engine's own, driven without ever blocking the caller's loop.
 *
 * Only extern "C" wrappers leave this file, each returning a status and
 * keeping the reason in the engine. The rhythm, per gen_cuda_advance():
 *
 *   - at most ONE step is on the stream at a time, so a cancel stops the
 *     device within one step: the next step is enqueued only once the
 *     previous one has been seen finished;
 *   - after each step an event is recorded (cudaEventQuery says "finished"
 *     without waiting) and a host function is queued that calls the
 *     caller's wakeup (the actor turns it into an ev_async_send), so the
 *     actor's loop sleeps while the GPU works;
 *   - the last step also writes RGB8 and copies it, asynchronously, into
 *     pinned host memory; the same event marks it done.
 *
 * All device and pinned memory is allocated for the largest image at open:
 * nothing in the step path allocates, frees or synchronizes. Only close,
 * gen_cuda_wait and gen_cuda_snapshot (render/tests) wait for the device.
 */
#include "actors/generator/engines.h"

#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_PIXELS ((size_t)GEN_SIZE_MAX * GEN_SIZE_MAX)

struct gen_cuda {
    int device;
    cudaStream_t stream;
    cudaEvent_t done; /* recorded after each queued step */
    float *d_state;   /* 3 floats per pixel */
    uint8_t *d_rgb;
    uint8_t *h_rgb; /* pinned */

    /* written by the owner thread, read by the host-callback thread: set
     * before the first step is queued and not changed while steps run */
    void (*wakeup)(void *arg);
    void *wakeup_arg;

    sampler_scene_t scene;
    uint32_t steps, done_steps;
    int active;
    int in_flight; /* a step is on the stream, not yet seen finished */
    char err[256];
};

static void s_fail(gen_cuda_t *g, const char *what, cudaError_t e)
{
    snprintf(g->err, sizeof g->err, "%s: %s (CUDA error %d)", what, cudaGetErrorString(e), (int)e);
}

static __global__ void s_step_kernel(sampler_scene_t sc, sampler_step_t st, float *state,
                                     uint8_t *rgb)
{
    uint32_t x = blockIdx.x * blockDim.x + threadIdx.x;
    uint32_t y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= sc.width || y >= sc.height)
        return;
    size_t i = ((size_t)y * sc.width + x) * 3;
    sampler_step_pixel(&sc, &st, x, y, state + i, rgb + i);
}

/* RGB8 of the current state, or of the starting noise before any step. */
static __global__ void s_snapshot_kernel(sampler_scene_t sc, int noise, const float *state,
                                         uint8_t *rgb)
{
    uint32_t x = blockIdx.x * blockDim.x + threadIdx.x;
    uint32_t y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= sc.width || y >= sc.height)
        return;
    size_t i = ((size_t)y * sc.width + x) * 3;
    float v[3];
    if (noise)
        sampler_noise(&sc, x, y, v);
    else {
        v[0] = state[i];
        v[1] = state[i + 1];
        v[2] = state[i + 2];
    }
    for (int c = 0; c < 3; c++)
        rgb[i + c] = sampler_to_u8(v[c]);
}

/* Runs on a CUDA-internal thread once the step before it has finished;
 * it may not call CUDA, only the caller's thread-safe wakeup. */
static void CUDART_CB s_host_wakeup(void *arg)
{
    gen_cuda_t *g = (gen_cuda_t *)arg;
    if (g->wakeup)
        g->wakeup(g->wakeup_arg);
}

static dim3 s_grid(const sampler_scene_t *sc, dim3 block)
{
    return dim3((sc->width + block.x - 1) / block.x, (sc->height + block.y - 1) / block.y);
}

extern "C" int gen_cuda_count(void)
{
    int n = 0;
    /* no driver: error 35, n untouched; clear it so it does not linger */
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" int gen_cuda_open(int device, gen_cuda_t **out, char *err, size_t errlen)
{
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        snprintf(err, errlen, "no CUDA device (cudaGetDeviceCount: %s, error %d)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices", (int)e);
        return -1;
    }
    if (device < 0 || device >= n) {
        snprintf(err, errlen, "no CUDA device %d (%d present)", device, n);
        return -1;
    }
    gen_cuda_t *g = (gen_cuda_t *)calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    g->device = device;
    const char *what = "cudaSetDevice";
    if ((e = cudaSetDevice(device)) == cudaSuccess) {
        what = "cudaStreamCreate";
        e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking);
    }
    if (e == cudaSuccess) {
        what = "cudaEventCreate";
        e = cudaEventCreateWithFlags(&g->done, cudaEventDisableTiming);
    }
    if (e == cudaSuccess) {
        what = "cudaMalloc (state)";
        e = cudaMalloc((void **)&g->d_state, S_MAX_PIXELS * 3 * sizeof(float));
    }
    if (e == cudaSuccess) {
        what = "cudaMalloc (pixels)";
        e = cudaMalloc((void **)&g->d_rgb, S_MAX_PIXELS * 3);
    }
    if (e == cudaSuccess) {
        what = "cudaHostAlloc";
        e = cudaHostAlloc((void **)&g->h_rgb, S_MAX_PIXELS * 3, cudaHostAllocDefault);
    }
    if (e != cudaSuccess) {
        snprintf(err, errlen, "%s: %s (CUDA error %d)", what, cudaGetErrorString(e), (int)e);
        cudaGetLastError();
        gen_cuda_close(&g);
        return -1;
    }
    *out = g;
    return 0;
}

extern "C" void gen_cuda_close(gen_cuda_t **gp)
{
    gen_cuda_t *g = *gp;
    if (!g)
        return;
    cudaSetDevice(g->device);
    /* a step of an aborted image may still run and its host function still
     * reference g: wait for the stream before freeing anything */
    if (g->stream)
        cudaStreamSynchronize(g->stream);
    if (g->h_rgb)
        cudaFreeHost(g->h_rgb);
    if (g->d_rgb)
        cudaFree(g->d_rgb);
    if (g->d_state)
        cudaFree(g->d_state);
    if (g->done)
        cudaEventDestroy(g->done);
    if (g->stream)
        cudaStreamDestroy(g->stream);
    cudaGetLastError();
    free(g);
    *gp = NULL;
}

extern "C" void gen_cuda_set_wakeup(gen_cuda_t *g, void (*fn)(void *arg), void *arg)
{
    g->wakeup = fn;
    g->wakeup_arg = arg;
}

extern "C" int gen_cuda_begin(gen_cuda_t *g, const sampler_scene_t *sc, uint32_t steps)
{
    if ((size_t)sc->width * sc->height > S_MAX_PIXELS) {
        snprintf(g->err, sizeof g->err, "image larger than %dx%d", GEN_SIZE_MAX, GEN_SIZE_MAX);
        return -1;
    }
    /* a step of a dropped image may still be on the stream: the next one
     * queues behind it, so reusing the buffers is safe without waiting */
    g->scene = *sc;
    g->steps = steps;
    g->done_steps = 0;
    g->in_flight = 0;
    g->active = 1;
    g->err[0] = 0;
    return 0;
}

/* Queues step done_steps (and, for the last, the copy back), the event and
 * the wakeup. */
static int s_enqueue_step(gen_cuda_t *g)
{
    sampler_step_t st;
    sampler_step_init(g->done_steps, g->steps, &st);
    dim3 block(32, 8);
    cudaSetDevice(g->device);
    s_step_kernel<<<s_grid(&g->scene, block), block, 0, g->stream>>>(g->scene, st, g->d_state,
                                                                     g->d_rgb);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        s_fail(g, "step kernel launch", e);
        return -1;
    }
    if (st.last) {
        size_t len = (size_t)g->scene.width * g->scene.height * 3;
        e = cudaMemcpyAsync(g->h_rgb, g->d_rgb, len, cudaMemcpyDeviceToHost, g->stream);
        if (e != cudaSuccess) {
            s_fail(g, "cudaMemcpyAsync", e);
            return -1;
        }
    }
    if ((e = cudaEventRecord(g->done, g->stream)) != cudaSuccess) {
        s_fail(g, "cudaEventRecord", e);
        return -1;
    }
    if ((e = cudaLaunchHostFunc(g->stream, s_host_wakeup, g)) != cudaSuccess) {
        s_fail(g, "cudaLaunchHostFunc", e);
        return -1;
    }
    g->in_flight = 1;
    return 0;
}

extern "C" gen_status_t gen_cuda_advance(gen_cuda_t *g)
{
    if (!g->active) {
        snprintf(g->err, sizeof g->err, "no image in progress");
        return GEN_ERROR;
    }
    if (g->in_flight) {
        cudaSetDevice(g->device);
        cudaError_t e = cudaEventQuery(g->done);
        if (e == cudaErrorNotReady)
            return GEN_WAIT;
        if (e != cudaSuccess) {
            s_fail(g, "step", e);
            return GEN_ERROR;
        }
        g->in_flight = 0;
        g->done_steps++;
    }
    if (g->done_steps == g->steps)
        return GEN_DONE;
    return s_enqueue_step(g) < 0 ? GEN_ERROR : GEN_WAIT;
}

extern "C" int gen_cuda_wait(gen_cuda_t *g)
{
    cudaSetDevice(g->device);
    cudaError_t e = cudaEventSynchronize(g->done);
    if (e != cudaSuccess) {
        s_fail(g, "cudaEventSynchronize", e);
        return -1;
    }
    return 0;
}

extern "C" uint32_t gen_cuda_steps_done(const gen_cuda_t *g)
{
    return g->active ? g->done_steps : 0;
}

extern "C" const uint8_t *gen_cuda_pixels(const gen_cuda_t *g)
{
    return g->active && !g->in_flight && g->done_steps == g->steps ? g->h_rgb : NULL;
}

extern "C" int gen_cuda_snapshot(gen_cuda_t *g, uint8_t *rgb_out)
{
    if (!g->active) {
        snprintf(g->err, sizeof g->err, "no image in progress");
        return -1;
    }
    cudaSetDevice(g->device);
    cudaError_t e = cudaStreamSynchronize(g->stream);
    if (e != cudaSuccess) {
        s_fail(g, "cudaStreamSynchronize", e);
        return -1;
    }
    /* the in-flight step has finished; gen_cuda_advance will count it */
    int noise = g->done_steps == 0 && !g->in_flight;
    dim3 block(32, 8);
    s_snapshot_kernel<<<s_grid(&g->scene, block), block, 0, g->stream>>>(g->scene, noise,
                                                                         g->d_state, g->d_rgb);
    size_t len = (size_t)g->scene.width * g->scene.height * 3;
    if ((e = cudaGetLastError()) != cudaSuccess
        || (e = cudaMemcpyAsync(rgb_out, g->d_rgb, len, cudaMemcpyDeviceToHost, g->stream))
               != cudaSuccess
        || (e = cudaStreamSynchronize(g->stream)) != cudaSuccess) {
        s_fail(g, "snapshot", e);
        return -1;
    }
    return 0;
}

extern "C" void gen_cuda_abort(gen_cuda_t *g)
{
    /* the queued step (if any) runs to its end unobserved; its wakeup may
     * still arrive and must be ignored by a caller with no image */
    g->active = 0;
    g->in_flight = 0;
    g->done_steps = 0;
}

extern "C" const char *gen_cuda_error(const gen_cuda_t *g)
{
    return g->err;
}
