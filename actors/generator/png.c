/*
 * png.c - PNG encode/decode of RGB8 through libspng, in memory.
 */
#include "config.h"

#include "actors/generator/png.h"

#include <errno.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    size_t len = (size_t)width * height * 3;
    int rc = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    if (!rc)
        rc = spng_set_option(ctx, SPNG_FILTER_CHOICE, SPNG_FILTER_CHOICE_UP);
    if (!rc)
        rc = spng_set_option(ctx, SPNG_IMG_COMPRESSION_LEVEL, 1);
    if (!rc)
        rc = spng_set_ihdr(ctx, &ihdr);
    if (!rc)
        rc = spng_encode_image(ctx, rgb, len, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
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
