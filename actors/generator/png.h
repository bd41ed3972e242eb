/*
 * png.h - RGB8 images to and from PNG in memory (libspng).
 *
 * Encoding uses the fast settings (filter "up" only, zlib level 1): about
 * 4 ms for 512x512 instead of 10 with the defaults. It is meant to run
 * outside the step path, once an image is finished.
 */
#ifndef IMAGEJOBS_GEN_PNG_H
#define IMAGEJOBS_GEN_PNG_H

#include <stddef.h>
#include <stdint.h>

/* Encodes width*height*3 bytes of RGB8. *png_out is malloc'd (caller
 * frees), *png_len its size. 0, or -1 with the reason in err. */
int gen_png_encode(const uint8_t *rgb, uint32_t width, uint32_t height, uint8_t **png_out,
                   size_t *png_len, char *err, size_t errlen);

/* Decodes any PNG up to 8192x8192 to RGB8. *rgb_out is malloc'd (caller
 * frees). 0, or -1 with the reason in err. */
int gen_png_decode(const uint8_t *png, size_t png_len, uint8_t **rgb_out, uint32_t *width,
                   uint32_t *height, char *err, size_t errlen);

/* Writes len bytes to path (replacing it). 0, or -1 with the reason in err. */
int gen_png_write_file(const char *path, const uint8_t *data, size_t len, char *err, size_t errlen);

#endif
