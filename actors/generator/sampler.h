/*
 * sampler.h - all per-pixel math of the generator, once, for the CPU (plain
 * C) and for CUDA (the same functions compiled __host__ __device__). Only
 * that math lives here; the host-side set-up it reads (the schedule, the
 * scene) is in sampler.c.
 *
 * The model has the shape of a diffusion sampler: the state is 3 floats per
 * pixel (RGB in about [-1, 1]), it starts as Gaussian noise drawn from a
 * counter-based generator (Philox4x32-10: noise of pixel i is a pure
 * function of (seed, image index, i), identical on both backends), and each
 * of `steps` passes runs a "denoiser" over every pixel and a DDIM update
 *
 *     x_{t-1} = sqrt(abar_{t-1}) x0_pred + sqrt(1 - abar_{t-1}) eps_pred.
 *
 * No weights exist here, so the denoiser is analytic: a landscape or an
 * abstract composition whose parameters (palette, layout, frequencies) come
 * from hashing the prompt, the seed and the image index once on the host
 * (sampler.c) into a sampler_scene_t. Like a real model it reads the
 * current noisy state: the state bends the coordinates at which the scene
 * is evaluated, and fine detail fades in as the noise level falls, so every
 * step depends on the previous one.
 *
 * Parity rules (CPU and GPU must agree within 2/255): only IEEE operations
 * and sinf/cosf/expf/logf/sqrtf/floorf (no fast intrinsics, no powf); built
 * with contraction off on both sides (-ffp-contract=off, nvcc --fmad=false);
 * everything continuous in the state, so a last-ulp difference in a libm
 * function stays a last-ulp difference (no thresholds that can flip), and
 * the coordinate warp is small enough that errors shrink from step to step.
 * Scalars that depend only on the step (the schedule) are computed on the
 * host, in double, and passed in.
 */
#ifndef IMAGEJOBS_GEN_SAMPLER_H
#define IMAGEJOBS_GEN_SAMPLER_H

#ifdef __CUDACC__
#define HD __host__ __device__
#else
#define HD
#endif

#include <math.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------ parameters */

enum { SAMPLER_LANDSCAPE = 0, SAMPLER_ABSTRACT = 1 };
#define SAMPLER_LAYERS 4
#define SAMPLER_BLOBS 3

typedef struct {
    float r, g, b;
} sampler_rgb_t;

/* Everything the denoiser knows about the picture: plain data, built once
 * per image on the host (sampler_scene_init) and passed by value to kernels. */
typedef struct {
    uint32_t key[2];      /* Philox key: the seed */
    uint32_t image_index; /* Philox counter word 1 */
    uint32_t width, height;
    uint32_t lattice;   /* hash seed of the procedural noise lattice */
    int32_t kind;       /* SAMPLER_LANDSCAPE or SAMPLER_ABSTRACT */
    float warp;         /* how far the state bends the denoiser's coordinates */
    float ofs_x, ofs_y; /* where in the noise plane this picture sits */

    /* landscape */
    sampler_rgb_t sky_top, sky_horizon, sun, cloud, haze, water, ground_a, ground_b;
    float horizon; /* y of the haze line (0 top, 1 bottom) */
    float sun_x, sun_y, sun_r, glow;
    float clouds, cloud_scale;
    float stars;       /* 0..1 */
    float snow;        /* 0..1 snow on tops and ground */
    float water_level; /* y where a lake starts, > 1 for none */
    float layer_base[SAMPLER_LAYERS], layer_amp[SAMPLER_LAYERS];
    float layer_freq[SAMPLER_LAYERS], layer_off[SAMPLER_LAYERS];
    float layer_trees[SAMPLER_LAYERS]; /* 0..1: conifer tree line on the ridge */
    float layer_tilt[SAMPLER_LAYERS];  /* slope of the base line (shorelines) */
    sampler_rgb_t layer_col[SAMPLER_LAYERS];

    /* abstract: a three-colour gradient over a warped fractal, soft discs */
    sampler_rgb_t pal[3], shade;
    float freq, swirl;
    float blob_x[SAMPLER_BLOBS], blob_y[SAMPLER_BLOBS], blob_r[SAMPLER_BLOBS];
    sampler_rgb_t blob_col[SAMPLER_BLOBS];
} sampler_scene_t;

/* The noise schedule at one step (host-computed so both backends use the
 * very same numbers). */
typedef struct {
    float sa, s1a;           /* sqrt(abar), sqrt(1 - abar) of the state read */
    float sa_next, s1a_next; /* the same for the state written */
    float detail;            /* 0..1: share of fine detail in x0_pred */
    int32_t first;           /* the state is not stored yet: draw the noise */
    int32_t last;            /* also write the RGB8 pixel */
} sampler_step_t;

/* ------------------------------------------------------------ small math */

HD static inline float sampler_max(float a, float b)
{
    return a > b ? a : b;
}

/* ---------------------------------------------------------- Philox4x32-10 */

#define SAMPLER_PHILOX_M0 0xD2511F53u
#define SAMPLER_PHILOX_M1 0xCD9E8D57u
#define SAMPLER_PHILOX_W0 0x9E3779B9u
#define SAMPLER_PHILOX_W1 0xBB67AE85u

/* Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC'11);
 * matches the Random123 known-answer vectors. */
HD static inline void sampler_philox(const uint32_t ctr_in[4], const uint32_t key_in[2],
                                     uint32_t out[4])
{
    uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
    uint32_t k0 = key_in[0], k1 = key_in[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)SAMPLER_PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)SAMPLER_PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += SAMPLER_PHILOX_W0;
        k1 += SAMPLER_PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* A uniform in (0, 1) from 23 bits: k + 0.5 is exact in a float, so the
 * result is never 0 nor 1 and logf() below is finite and negative. */
HD static inline float sampler_uniform(uint32_t u)
{
    return ((float)(u >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

/* The starting noise of pixel (x, y): three N(0, 1) values (Box-Muller). */
HD static inline void sampler_noise(const sampler_scene_t *sc, uint32_t x, uint32_t y, float out[3])
{
    uint32_t ctr[4] = {y * sc->width + x, sc->image_index, 0x6e6f6973u /* "nois" */, 0};
    uint32_t u[4];
    sampler_philox(ctr, sc->key, u);
    const float two_pi = 6.28318530717958647692f;
    float r0 = sqrtf(sampler_max(-2.0f * logf(sampler_uniform(u[0])), 0.0f));
    float r1 = sqrtf(sampler_max(-2.0f * logf(sampler_uniform(u[2])), 0.0f));
    out[0] = r0 * cosf(two_pi * sampler_uniform(u[1]));
    out[1] = r0 * sinf(two_pi * sampler_uniform(u[1]));
    out[2] = r1 * cosf(two_pi * sampler_uniform(u[3]));
}

/* ------------------------------------------------------ procedural noise */

HD static inline uint32_t sampler_mix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    return h;
}

HD static inline uint32_t sampler_hash2(int32_t x, int32_t y, uint32_t seed)
{
    return sampler_mix32((uint32_t)x * 0x8da6b343u ^ (uint32_t)y * 0xd8163841u ^ seed);
}

HD static inline float sampler_fade(float t)
{
    return t * t * t * (t * (t * 6.0f - 15.0f) + 10.0f);
}

HD static inline float sampler_lerp(float a, float b, float t)
{
    return a + (b - a) * t;
}

/* A NaN comes out as lo (never as NaN, so it never reaches a float-to-int
 * conversion); plain comparisons, which compile inline, unlike fminf. */
HD static inline float sampler_clamp(float v, float lo, float hi)
{
    float t = v > lo ? v : lo;
    return t < hi ? t : hi;
}

HD static inline float sampler_smoothstep(float e0, float e1, float v)
{
    float t = sampler_clamp((v - e0) / (e1 - e0), 0.0f, 1.0f);
    return t * t * (3.0f - 2.0f * t);
}

/* 16 hash bits as a float in [-1, 1): the bits become the top of the
 * mantissa of a number in [2, 4) (cheaper than an int-to-float conversion,
 * and exactly (bits / 32768 - 1) on both backends). */
HD static inline float sampler_unit16(uint32_t bits16)
{
    uint32_t u = 0x40000000u | (bits16 << 7);
    float f;
#ifdef __CUDA_ARCH__
    f = __uint_as_float(u);
#else
    memcpy(&f, &u, sizeof f);
#endif
    return f - 3.0f;
}

/* Gradient from a hash: two components in [-1, 1). */
HD static inline float sampler_grad_dot(uint32_t h, float dx, float dy)
{
    return sampler_unit16(h & 0xffffu) * dx + sampler_unit16(h >> 16) * dy;
}

/* 2-D gradient noise, about [-1, 1], C2-continuous. */
HD static inline float sampler_noise2(float x, float y, uint32_t seed)
{
    float fx0 = floorf(x), fy0 = floorf(y);
    uint32_t hx0 = (uint32_t)(int32_t)fx0 * 0x8da6b343u, hx1 = hx0 + 0x8da6b343u;
    uint32_t hy0 = ((uint32_t)(int32_t)fy0 * 0xd8163841u) ^ seed;
    uint32_t hy1 = ((uint32_t)(int32_t)fy0 * 0xd8163841u + 0xd8163841u) ^ seed;
    float dx = x - fx0, dy = y - fy0;
    float n00 = sampler_grad_dot(sampler_mix32(hx0 ^ hy0), dx, dy);
    float n10 = sampler_grad_dot(sampler_mix32(hx1 ^ hy0), dx - 1.0f, dy);
    float n01 = sampler_grad_dot(sampler_mix32(hx0 ^ hy1), dx, dy - 1.0f);
    float n11 = sampler_grad_dot(sampler_mix32(hx1 ^ hy1), dx - 1.0f, dy - 1.0f);
    float u = sampler_fade(dx), v = sampler_fade(dy);
    return 1.4f * sampler_lerp(sampler_lerp(n00, n10, u), sampler_lerp(n01, n11, u), v);
}

/* 1-D gradient noise (ridge lines), about [-1, 1]. */
HD static inline float sampler_noise1(float x, uint32_t seed)
{
    float fx0 = floorf(x);
    int32_t ix = (int32_t)fx0;
    float dx = x - fx0;
    float g0 = sampler_unit16(sampler_hash2(ix, 0x51ed, seed) & 0xffffu);
    float g1 = sampler_unit16(sampler_hash2(ix + 1, 0x51ed, seed) & 0xffffu);
    return 2.0f * sampler_lerp(g0 * dx, g1 * (dx - 1.0f), sampler_fade(dx));
}

/* Fractal sum of `octaves` octaves; octaves past the second are weighted by
 * `detail` (coarse shapes first, fine texture as the noise level falls, as a
 * real diffusion model resolves an image). Each octave is rotated to hide
 * the lattice. */
HD static inline float sampler_fbm2(float x, float y, int octaves, float detail, uint32_t seed)
{
    float sum = 0.0f, amp = 0.5f, norm = 0.0f;
    for (int o = 0; o < octaves; o++) {
        float w = o < 2 ? amp : amp * detail;
        sum += w * sampler_noise2(x, y, seed + (uint32_t)o * 0x9e3779b9u);
        norm += amp;
        float nx = 1.6f * x + 1.2f * y;
        float ny = -1.2f * x + 1.6f * y;
        x = nx + 3.1f;
        y = ny + 1.7f;
        amp *= 0.5f;
    }
    return sum / norm;
}

/* Mountain profile: ridged fractal of x (sharp crests), octaves o0..o1-1
 * of 5. All five sum to at most 0.98; octaves 2..4 to at most 0.185. */
HD static inline float sampler_ridge(float x, int o0, int o1, float detail, uint32_t seed)
{
    float sum = 0.0f, amp = 0.55f, f = 1.0f;
    for (int o = 0; o < o1; o++) {
        if (o >= o0) {
            float n = 1.0f - fabsf(sampler_noise1(x * f, seed + (uint32_t)o * 0x632be5abu));
            float w = o < 2 ? amp : amp * detail;
            sum += w * n * n;
        }
        f *= 2.1f;
        amp *= 0.45f;
    }
    return sum;
}

/* Conifer tree line: a row of triangles of hashed heights, 0 at the cell
 * edges so the silhouette stays continuous. About [0, 1]. */
HD static inline float sampler_trees(float x, uint32_t seed)
{
    float fx = floorf(x);
    float t = x - fx;
    uint32_t h = sampler_hash2((int32_t)fx, 0x7ee5, seed);
    float height = 0.45f + 0.55f * (float)(h & 0xffffu) * (1.0f / 65536.0f);
    float tri = 1.0f - 2.0f * fabsf(t - 0.5f);
    return height * tri;
}

/* ---------------------------------------------------------------- colour */

HD static inline sampler_rgb_t sampler_rgb(float r, float g, float b)
{
    sampler_rgb_t c;
    c.r = r;
    c.g = g;
    c.b = b;
    return c;
}

HD static inline sampler_rgb_t sampler_mix(sampler_rgb_t a, sampler_rgb_t b, float t)
{
    return sampler_rgb(sampler_lerp(a.r, b.r, t), sampler_lerp(a.g, b.g, t),
                       sampler_lerp(a.b, b.b, t));
}

HD static inline sampler_rgb_t sampler_scale(sampler_rgb_t a, float s)
{
    return sampler_rgb(a.r * s, a.g * s, a.b * s);
}

HD static inline sampler_rgb_t sampler_add(sampler_rgb_t a, sampler_rgb_t b)
{
    return sampler_rgb(a.r + b.r, a.g + b.g, a.b + b.b);
}

/* ---------------------------------------------------------- the denoiser */

/* Sky colour at height y: gradient to the horizon, sun glow and (when
 * disc) the sun itself. */
HD static inline sampler_rgb_t sampler_sky(const sampler_scene_t *sc, float x, float y, int disc_on)
{
    float t = sampler_clamp(y / sc->horizon, 0.0f, 1.0f);
    sampler_rgb_t c = sampler_mix(sc->sky_top, sc->sky_horizon, t * sqrtf(t));
    float dx = x - sc->sun_x, dy = y - sc->sun_y;
    float d = sqrtf(dx * dx + dy * dy);
    float glow = sc->glow * expf(-d * 4.0f) + 0.6f * sc->glow * expf(-d * 18.0f);
    c = sampler_add(c, sampler_scale(sc->sun, glow));
    if (!disc_on)
        return c;
    float disc = 1.0f - sampler_smoothstep(sc->sun_r * 0.92f, sc->sun_r, d);
    return sampler_mix(c, sc->sun, disc);
}

/* How much ridge layer i covers height y at x (0: not at all, 1: fully;
 * a soft edge over aa) and, where it covers, its crest line. The early
 * returns are exact, taken only where the coverage is exactly 0: above the
 * highest the ridge could reach, first with no octave evaluated, then with
 * the two coarse ones (most sky pixels stop there). */
HD static inline float sampler_cover(const sampler_scene_t *sc, int i, float x, float y,
                                     float detail, float aa, float *line_out)
{
    float trees_max = sc->layer_trees[i] * (0.05f + 0.012f * (float)i);
    float base = sc->layer_base[i] + sc->layer_tilt[i] * x;
    float amp = sc->layer_amp[i];
    if (y < base - amp * 1.01f - trees_max - aa)
        return 0.0f;
    uint32_t seed = sc->lattice + (uint32_t)i * 0x1234567u;
    float rx = sc->layer_off[i] + x * sc->layer_freq[i];
    float coarse = sampler_ridge(rx, 0, 2, detail, seed);
    if (y < base - amp * (coarse + 0.19f) - trees_max - aa)
        return 0.0f;
    float line = base - amp * (coarse + sampler_ridge(rx, 2, 5, detail, seed));
    if (sc->layer_trees[i] > 0.0f) {
        /* two staggered rows of conifers */
        float f = 16.0f + 9.0f * (float)i, tx = sc->layer_off[i] + x * f;
        float t =
            sampler_max(sampler_trees(tx, seed), 0.8f * sampler_trees(tx + 0.5f, seed ^ 0x55u));
        line -= trees_max * t;
    }
    *line_out = line;
    return sampler_smoothstep(line - aa, line + aa, y);
}

/* Sky with clouds and stars: what shows where no layer covers. */
HD static inline sampler_rgb_t sampler_heavens(const sampler_scene_t *sc, float x, float y,
                                               float x_fix, float y_fix, float detail)
{
    uint32_t seed = sc->lattice;
    sampler_rgb_t c = sampler_sky(sc, x, y, 1);
    /* clouds: stretched fractal, thinning towards the horizon */
    float cn = sampler_fbm2(sc->ofs_x + x * sc->cloud_scale, sc->ofs_y + y * sc->cloud_scale * 3.5f,
                            5, detail, seed ^ 0xc10d5u);
    float cover = sampler_smoothstep(0.55f - sc->clouds, 0.95f - sc->clouds, cn + 0.5f);
    cover *= 1.0f - sampler_smoothstep(sc->horizon * 0.55f, sc->horizon, y);
    float dx = x - sc->sun_x, dy = y - sc->sun_y;
    float lit = sampler_clamp(1.0f - 1.6f * sqrtf(dx * dx + dy * dy), 0.0f, 1.0f);
    sampler_rgb_t cloud = sampler_mix(sc->cloud, sc->sun, 0.45f * lit);
    c = sampler_mix(c, cloud, 0.85f * cover);

    /* stars: one per cell at a hashed spot, tiny next to a cell */
    if (sc->stars > 0.0f) {
        float sx = x_fix * 90.0f + 11.0f, sy = y_fix * 90.0f + 7.0f;
        float fx = floorf(sx), fy = floorf(sy);
        uint32_t h = sampler_hash2((int32_t)fx, (int32_t)fy, seed ^ 0x57a25u);
        float px = fx + 0.25f + 0.5f * (float)(h & 0xffu) * (1.0f / 256.0f);
        float py = fy + 0.25f + 0.5f * (float)((h >> 8) & 0xffu) * (1.0f / 256.0f);
        float bright = sampler_clamp((float)(h >> 24) * (3.0f / 256.0f) - 2.0f, 0.0f, 1.0f);
        float d2 = (sx - px) * (sx - px) + (sy - py) * (sy - py);
        float star = sc->stars * bright * expf(-d2 * 60.0f) * (1.0f - cover)
                     * (1.0f - sampler_smoothstep(0.0f, sc->horizon, y));
        c = sampler_add(c, sampler_rgb(star, star, star * 0.9f));
    }
    return c;
}

/* The lake at (x, y) (warped point; x_fix, y_fix: the pixel's own place):
 * mirrored sky, darker with depth, rippled. */
HD static inline sampler_rgb_t sampler_lake(const sampler_scene_t *sc, float x, float y,
                                            float x_fix, float y_fix, float detail)
{
    float wl = sc->water_level;
    float depth = sampler_clamp((y - wl) / (1.0f - wl), 0.0f, 1.0f);
    /* ripples are fine texture: placed by the pixel, not by the warped
     * point, or their steep slope would amplify tiny state differences
     * from step to step (CPU/GPU parity) */
    float depth_fix = sampler_clamp((y_fix - wl) / (1.0f - wl), 0.0f, 1.0f);
    float persp_fix = 1.0f / (0.05f + depth_fix);
    float ripple = sampler_noise2(x_fix * 40.0f * persp_fix, y_fix * 160.0f * persp_fix,
                                  sc->lattice ^ 0x3a7e4u);
    sampler_rgb_t refl = sampler_sky(sc, x + 0.004f * ripple * detail, 2.0f * wl - y, 0);
    sampler_rgb_t w = sampler_mix(refl, sc->water, 0.3f + 0.5f * depth);
    float glint = expf(-fabsf(x - sc->sun_x) * 14.0f) * (0.5f + 0.5f * ripple);
    return sampler_add(w, sampler_scale(sc->sun, 0.4f * glint * (1.0f - depth)));
}

/* Colour of ridge layer i at (x, y): shaded down from its mean crest
 * height (not from the crest line itself, which would streak), snow near
 * the actual crest. */
HD static inline sampler_rgb_t sampler_layer_colour(const sampler_scene_t *sc, int i, float x,
                                                    float y, float line, float tex)
{
    const sampler_rgb_t snow = sampler_rgb(0.94f, 0.96f, 1.0f);
    const sampler_rgb_t snow_shadow = sampler_rgb(0.62f, 0.70f, 0.86f);
    int ground = i == SAMPLER_LAYERS - 1;
    float mean = sc->layer_base[i] + sc->layer_tilt[i] * x - 0.5f * sc->layer_amp[i];
    float depth = sampler_clamp((y - mean) * 3.0f, 0.0f, 1.0f);
    float shade = 1.0f - (ground ? 0.15f : 0.3f) * depth + 0.08f * tex * (float)(i + 1);
    sampler_rgb_t lc = sampler_scale(sc->layer_col[i], shade);
    /* snow on crests (the band's depth never 0: no 0/0 in smoothstep); the
     * nearest layer is snowy ground */
    float below = y - line;
    float band = 0.02f + 0.025f * (sampler_clamp(tex, -1.0f, 1.0f) + 1.0f);
    float snowy = ground ? sc->snow : sc->snow * (1.0f - sampler_smoothstep(0.0f, band, below));
    sampler_rgb_t sn = sampler_mix(snow, snow_shadow, sampler_clamp(0.5f - 1.2f * tex, 0.0f, 1.0f));
    lc = sampler_mix(lc, sn, snowy);
    if (ground)
        lc = sampler_mix(lc, sc->ground_a, 0.35f * (0.5f + 0.5f * tex) * (1.0f - sc->snow));
    /* aerial perspective: far layers fade into the haze */
    float fog = (float)(SAMPLER_LAYERS - 1 - i) * 0.2f * (1.0f - 0.6f * depth);
    return sampler_mix(lc, sc->haze, fog);
}

/* Composited front to back: the nearest layer first, stopping as soon as
 * something covers the pixel completely (coverage reaches exactly 1), so
 * the ground never pays for the sky and the sky never for the ground. */
HD static inline sampler_rgb_t sampler_landscape(const sampler_scene_t *sc, float x, float y,
                                                 float x_fix, float y_fix, float detail)
{
    float aa = 1.5f / (float)sc->height;
    sampler_rgb_t acc = sampler_rgb(0.0f, 0.0f, 0.0f);
    float through = 1.0f; /* how much of what lies behind still shows */
    float tex = 0.0f;
    int have_tex = 0;
    for (int i = SAMPLER_LAYERS - 1; i >= 0; i--) {
        if (i == 1 && sc->water_level < 1.0f) {
            float m = sampler_smoothstep(sc->water_level - aa, sc->water_level + aa, y);
            if (m > 0.0f) {
                acc = sampler_add(
                    acc, sampler_scale(sampler_lake(sc, x, y, x_fix, y_fix, detail), through * m));
                through *= 1.0f - m;
                if (through == 0.0f)
                    return acc;
            }
        }
        float line = 0.0f;
        float m = sampler_cover(sc, i, x, y, detail, aa, &line);
        if (m == 0.0f)
            continue;
        if (!have_tex) {
            tex = sampler_fbm2(sc->ofs_y + x * 9.0f, sc->ofs_x + y * 9.0f, 4, detail,
                               sc->lattice ^ 0x7e47u);
            have_tex = 1;
        }
        acc = sampler_add(acc,
                          sampler_scale(sampler_layer_colour(sc, i, x, y, line, tex), through * m));
        through *= 1.0f - m;
        if (through == 0.0f)
            return acc;
    }
    return sampler_add(acc,
                       sampler_scale(sampler_heavens(sc, x, y, x_fix, y_fix, detail), through));
}

/* Domain-warped fractal through a cosine palette, with soft discs. */
HD static inline sampler_rgb_t sampler_abstract(const sampler_scene_t *sc, float x, float y,
                                                float detail)
{
    uint32_t seed = sc->lattice;
    float px = sc->ofs_x + x * sc->freq, py = sc->ofs_y + y * sc->freq;
    /* a coarse flow field bends a finer fractal (one level of domain warp) */
    float qx = sampler_noise2(0.6f * px, 0.6f * py, seed);
    float qy = sampler_noise2(0.6f * px + 5.2f, 0.6f * py + 1.3f, seed ^ 0x1f3u);
    float f = sampler_fbm2(px + sc->swirl * qx, py + sc->swirl * qy, 5, detail, seed ^ 0x2e5u);
    float t = sampler_clamp(0.5f + 1.1f * f + 0.45f * qx, 0.0f, 1.0f);
    sampler_rgb_t c =
        sampler_mix(sampler_mix(sc->pal[0], sc->pal[1], sampler_smoothstep(0.0f, 0.55f, t)),
                    sc->pal[2], sampler_smoothstep(0.45f, 1.0f, t));
    /* sheen along the flow's ridges, shadow in its hollows */
    float band = sinf(12.0f * f + 3.0f * qy);
    c = sampler_add(c, sampler_scale(sc->pal[2], 0.08f * band * detail));
    float rr = sqrtf(qx * qx + qy * qy);
    c = sampler_mix(c, sc->shade, sampler_clamp(0.9f * rr - 0.15f, 0.0f, 0.5f));
    for (int i = 0; i < SAMPLER_BLOBS; i++) {
        if (sc->blob_r[i] <= 0.0f)
            continue; /* unused (the same for every pixel) */
        float dx = x - sc->blob_x[i], dy = y - sc->blob_y[i];
        float d = sqrtf(dx * dx + dy * dy) + 0.015f * f;
        float shadow = 0.45f * expf(-fabsf(d - sc->blob_r[i]) * 30.0f);
        c = sampler_scale(c, 1.0f - shadow * 0.6f);
        float in = 1.0f - sampler_smoothstep(sc->blob_r[i] - 0.004f, sc->blob_r[i] + 0.004f, d);
        /* lit from the top left, tinted by the field beneath */
        float light = 0.75f + 0.35f * sampler_clamp(-(dx + dy) / sc->blob_r[i], -1.0f, 1.0f);
        sampler_rgb_t bc = sampler_scale(sampler_mix(sc->blob_col[i], c, 0.2f), light);
        c = sampler_mix(c, bc, 0.92f * in);
    }
    return c;
}

/* x0 prediction for pixel (x, y) given its current state xt (3 floats):
 * colour in [0, 1] mapped to [-1, 1]. The state bends the sampling point:
 * a small warp, so the map from state to prediction contracts. */
HD static inline void sampler_denoise(const sampler_scene_t *sc, uint32_t x, uint32_t y,
                                      const float xt[3], float detail, float x0[3])
{
    float inv_h = 1.0f / (float)sc->height;
    float u0 = ((float)x + 0.5f - 0.5f * (float)sc->width) * inv_h;
    float v0 = ((float)y + 0.5f) * inv_h;
    float u = u0, v = v0;
    float sr = sampler_clamp(xt[0], -3.0f, 3.0f);
    float sg = sampler_clamp(xt[1], -3.0f, 3.0f);
    float sb = sampler_clamp(xt[2], -3.0f, 3.0f);
    u += sc->warp * (sr - 0.5f * sb);
    v += sc->warp * (sg - 0.5f * sb);
    sampler_rgb_t c = sc->kind == SAMPLER_ABSTRACT ? sampler_abstract(sc, u, v, detail)
                                                   : sampler_landscape(sc, u, v, u0, v0, detail);
    /* a soft vignette */
    float du = u * (float)sc->height / (float)sc->width, dv = v - 0.5f;
    c = sampler_scale(c, 1.0f - 0.35f * (du * du + dv * dv));
    x0[0] = sampler_clamp(2.0f * c.r - 1.0f, -1.0f, 1.0f);
    x0[1] = sampler_clamp(2.0f * c.g - 1.0f, -1.0f, 1.0f);
    x0[2] = sampler_clamp(2.0f * c.b - 1.0f, -1.0f, 1.0f);
}

/* State value to an 8-bit channel. */
HD static inline uint8_t sampler_to_u8(float v)
{
    float c = sampler_clamp(0.5f * v + 0.5f, 0.0f, 1.0f);
    return (uint8_t)floorf(c * 255.0f + 0.5f);
}

/* One DDIM step of one pixel: state (3 floats) in place; rgb (3 bytes)
 * written on the last step when not NULL. */
HD static inline void sampler_step_pixel(const sampler_scene_t *sc, const sampler_step_t *st,
                                         uint32_t x, uint32_t y, float *state, uint8_t *rgb)
{
    float xt[3], x0[3];
    if (st->first)
        sampler_noise(sc, x, y, xt);
    else {
        xt[0] = state[0];
        xt[1] = state[1];
        xt[2] = state[2];
    }
    sampler_denoise(sc, x, y, xt, st->detail, x0);
    for (int c = 0; c < 3; c++) {
        float eps = (xt[c] - st->sa * x0[c]) / st->s1a;
        state[c] = st->sa_next * x0[c] + st->s1a_next * eps;
    }
    if (st->last && rgb) {
        rgb[0] = sampler_to_u8(state[0]);
        rgb[1] = sampler_to_u8(state[1]);
        rgb[2] = sampler_to_u8(state[2]);
    }
}

/* ------------------------------------------------------ host-side set-up */
/* In sampler.c (host code, once per step or per image); extern "C" so that
 * cuda.cu calls the same functions as the CPU engine. */

#ifdef __cplusplus
extern "C" {
#endif

/* Schedule scalars of step k (0-based) of `steps`. */
void sampler_step_init(uint32_t k, uint32_t steps, sampler_step_t *st);

/* Builds the picture's parameters: the prompt decides kind, mood and
 * palette; the seed and image index decide layout and small colour shifts.
 * prompt is NUL-terminated; width and height are the image's. */
void sampler_scene_init(sampler_scene_t *sc, const char *prompt, uint64_t seed,
                        uint32_t image_index, uint32_t width, uint32_t height);

#ifdef __cplusplus
}
#endif

#endif
