/*
 * png.c - PNG encode/decode of RGB8 through libspng, in memory.
 */
#include "config.h"

#include "actors/generator/png.h"

#include <errno.h>
#include <sched.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pixels encoded between two yields: ~0.3 ms. */
#define S_YIELD_PIXELS 8192

int gen_png_encode(const uint8_t *rgb, uint32_t width, uint32_t height, uint8_t **png_out,
                   size_t *png_len, char *err, size_t errlen)
{
    *png_out = NULL;
    *png_len = 0;
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    if (!ctx) {
        snprintf(err, errlen, "png: out of memory");
        return -1;
    }
    struct spng_ihdr ihdr = {
        .width = width,
        .height = height,
        .bit_depth = 8,
        .color_type = SPNG_COLOR_TYPE_TRUECOLOR,
    };
    int rc = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    if (!rc)
        rc = spng_set_option(ctx, SPNG_FILTER_CHOICE, SPNG_FILTER_CHOICE_UP);
    if (!rc)
        rc = spng_set_option(ctx, SPNG_IMG_COMPRESSION_LEVEL, 1);
    if (!rc)
        rc = spng_set_ihdr(ctx, &ihdr);
    /* row by row, yielding the core every S_YIELD_PIXELS: an encode takes
     * milliseconds (2 ms at 256x256, tens at 2048x2048) on a thread at
     * nice 10, and an actor's thread that lost its core to it would wait
     * for the kernel's next tick (the compute pool yields likewise) */
    if (!rc)
        rc = spng_encode_image(ctx, NULL, 0, SPNG_FMT_PNG,
                               SPNG_ENCODE_PROGRESSIVE | SPNG_ENCODE_FINALIZE);
    size_t stride = (size_t)width * 3, since = 0;
    for (uint32_t y = 0; !rc && y < height; y++) {
        rc = spng_encode_row(ctx, rgb + y * stride, stride);
        if ((since += width) >= S_YIELD_PIXELS) {
            since = 0;
            sched_yield();
        }
    }
    if (rc == SPNG_EOI)
        rc = 0;
    void *buf = NULL;
    if (!rc)
        buf = spng_get_png_buffer(ctx, png_len, &rc);
    spng_ctx_free(ctx);
    if (rc || !buf) {
        free(buf);
        *png_len = 0;
        snprintf(err, errlen, "png encode: %s", spng_strerror(rc));
        return -1;
    }
    /* spng_get_png_buffer hands over a buffer from its allocator: malloc */
    *png_out = buf;
    return 0;
}

int gen_png_decode(const uint8_t *png, size_t png_len, uint8_t **rgb_out, uint32_t *width,
                   uint32_t *height, char *err, size_t errlen)
{
    *rgb_out = NULL;
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) {
        snprintf(err, errlen, "png: out of memory");
        return -1;
    }
    struct spng_ihdr ihdr;
    size_t len = 0;
    uint8_t *rgb = NULL;
    int rc = spng_set_image_limits(ctx, 8192, 8192);
    if (!rc)
        rc = spng_set_png_buffer(ctx, png, png_len);
    if (!rc)
        rc = spng_get_ihdr(ctx, &ihdr);
    if (!rc)
        rc = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &len);
    if (!rc && !(rgb = malloc(len))) {
        spng_ctx_free(ctx);
        snprintf(err, errlen, "png: out of memory");
        return -1;
    }
    if (!rc)
        rc = spng_decode_image(ctx, rgb, len, SPNG_FMT_RGB8, 0);
    spng_ctx_free(ctx);
    if (rc) {
        free(rgb);
        snprintf(err, errlen, "png decode: %s", spng_strerror(rc));
        return -1;
    }
    *width = ihdr.width;
    *height = ihdr.height;
    *rgb_out = rgb;
    return 0;
}

int gen_png_write_file(const char *path, const uint8_t *data, size_t len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = fwrite(data, 1, len, f);
    int e = errno;
    if (fclose(f) != 0 && n == len)
        e = errno, n = 0;
    if (n != len) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(e));
        return -1;
    }
    return 0;
}
