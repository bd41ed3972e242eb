/*
 * sampler.h - all per-pixel math of the generator, once, for the CPU (plain
 * C) and for CUDA (the same functions compiled __host__ __device__).
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
 * into a sampler_scene_t. Like a real model it reads the current noisy
 * state: the state bends the coordinates at which the scene is evaluated,
 * and fine detail fades in as the noise level falls, so every step depends
 * on the previous one.
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
        float t = sampler_max(sampler_trees(tx, seed), 0.8f * sampler_trees(tx + 0.5f, seed ^ 0x55u));
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
/* (plain static inline: host code in both C and CUDA translation units) */

/* Cosine schedule (Nichol & Dhariwal 2021) over continuous time in [0, 1]. */
static inline double sampler_abar(double t)
{
    const double s = 0.008, half_pi = 1.57079632679489661923;
    double f = cos((t + s) / (1.0 + s) * half_pi), f0 = cos(s / (1.0 + s) * half_pi);
    double a = (f * f) / (f0 * f0);
    return a < 1e-4 ? 1e-4 : (a > 1.0 ? 1.0 : a);
}

/* Schedule scalars of step k (0-based) of `steps`. */
static inline void sampler_step_init(uint32_t k, uint32_t steps, sampler_step_t *st)
{
    double t = (double)(steps - k) / steps, tn = (double)(steps - k - 1) / steps;
    double a = sampler_abar(t), an = k + 1 == steps ? 1.0 : sampler_abar(tn);
    st->sa = (float)sqrt(a);
    st->s1a = (float)sqrt(1.0 - a);
    st->sa_next = (float)sqrt(an);
    st->s1a_next = (float)sqrt(1.0 - an);
    /* fine detail arrives over the second half of the schedule */
    double d = 1.0 - t;
    st->detail = (float)(d < 0.5 ? 0.3 + 0.8 * d : (d > 1.0 ? 1.0 : 0.7 + 0.6 * (d - 0.5)));
    st->first = k == 0;
    st->last = k + 1 == steps;
}

/* Deterministic host-side generator for scene parameters. */
typedef struct {
    uint64_t s;
} sampler_rng_t;

static inline uint64_t sampler_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform double in [lo, hi). */
static inline double sampler_rand(sampler_rng_t *r, double lo, double hi)
{
    return lo + (hi - lo) * (double)(sampler_splitmix(&r->s) >> 11) * (1.0 / 9007199254740992.0);
}

static inline sampler_rgb_t sampler_hsl(double h, double s, double l)
{
    h = fmod(h, 360.0);
    if (h < 0)
        h += 360.0;
    double c = (1.0 - fabs(2.0 * l - 1.0)) * s, hp = h / 60.0;
    double x = c * (1.0 - fabs(fmod(hp, 2.0) - 1.0)), m = l - c / 2.0;
    double r = 0, g = 0, b = 0;
    if (hp < 1)
        r = c, g = x;
    else if (hp < 2)
        r = x, g = c;
    else if (hp < 3)
        g = c, b = x;
    else if (hp < 4)
        g = x, b = c;
    else if (hp < 5)
        r = x, b = c;
    else
        r = c, b = x;
    return sampler_rgb((float)(r + m), (float)(g + m), (float)(b + m));
}

/* What the prompt's words ask for. */
enum {
    SAMPLER_W_FOREST = 1 << 0,
    SAMPLER_W_SNOW = 1 << 1,
    SAMPLER_W_WATER = 1 << 2,
    SAMPLER_W_MOUNTAIN = 1 << 3,
    SAMPLER_W_DESERT = 1 << 4,
    SAMPLER_W_SUNSET = 1 << 5,
    SAMPLER_W_NIGHT = 1 << 6,
    SAMPLER_W_DAY = 1 << 7,
    SAMPLER_W_ABSTRACT = 1 << 8,
    SAMPLER_W_MIST = 1 << 9,
    SAMPLER_W_NEON = 1 << 10,
};

typedef struct {
    const char *word;
    unsigned flags;
    int hue; /* a colour word's hue in degrees, -1 none; -2 white, -3 black */
} sampler_word_t;

static const sampler_word_t sampler_words[] = {
    {"forest", SAMPLER_W_FOREST, -1},
    {"woods", SAMPLER_W_FOREST, -1},
    {"tree", SAMPLER_W_FOREST, -1},
    {"pine", SAMPLER_W_FOREST, -1},
    {"jungle", SAMPLER_W_FOREST, 120},
    {"snow", SAMPLER_W_SNOW, -1},
    {"winter", SAMPLER_W_SNOW, -1},
    {"ice", SAMPLER_W_SNOW, 195},
    {"frozen", SAMPLER_W_SNOW, 195},
    {"arctic", SAMPLER_W_SNOW, 200},
    {"lake", SAMPLER_W_WATER, -1},
    {"sea", SAMPLER_W_WATER, 205},
    {"ocean", SAMPLER_W_WATER, 205},
    {"river", SAMPLER_W_WATER, -1},
    {"beach", SAMPLER_W_WATER, 45},
    {"water", SAMPLER_W_WATER, -1},
    {"coast", SAMPLER_W_WATER, -1},
    {"mountain", SAMPLER_W_MOUNTAIN, -1},
    {"hill", SAMPLER_W_MOUNTAIN, -1},
    {"valley", SAMPLER_W_MOUNTAIN, -1},
    {"peak", SAMPLER_W_MOUNTAIN, -1},
    {"alps", SAMPLER_W_MOUNTAIN | SAMPLER_W_SNOW, -1},
    {"desert", SAMPLER_W_DESERT, 35},
    {"dune", SAMPLER_W_DESERT, 35},
    {"sand", SAMPLER_W_DESERT, 40},
    {"canyon", SAMPLER_W_DESERT, 20},
    {"sunset", SAMPLER_W_SUNSET, 25},
    {"sunrise", SAMPLER_W_SUNSET, 35},
    {"dusk", SAMPLER_W_SUNSET, 280},
    {"dawn", SAMPLER_W_SUNSET, 330},
    {"evening", SAMPLER_W_SUNSET, -1},
    {"night", SAMPLER_W_NIGHT, -1},
    {"moon", SAMPLER_W_NIGHT, -1},
    {"star", SAMPLER_W_NIGHT, -1},
    {"midnight", SAMPLER_W_NIGHT, -1},
    {"day", SAMPLER_W_DAY, -1},
    {"summer", SAMPLER_W_DAY, 100},
    {"sunny", SAMPLER_W_DAY, 50},
    {"fog", SAMPLER_W_MIST, -1},
    {"mist", SAMPLER_W_MIST, -1},
    {"cloud", SAMPLER_W_MIST, -1},
    {"rain", SAMPLER_W_MIST, 210},
    {"abstract", SAMPLER_W_ABSTRACT, -1},
    {"pattern", SAMPLER_W_ABSTRACT, -1},
    {"fractal", SAMPLER_W_ABSTRACT, -1},
    {"dream", SAMPLER_W_ABSTRACT, -1},
    {"swirl", SAMPLER_W_ABSTRACT, -1},
    {"marble", SAMPLER_W_ABSTRACT, -1},
    {"nebula", SAMPLER_W_ABSTRACT, 290},
    {"galaxy", SAMPLER_W_ABSTRACT, 260},
    {"cosmic", SAMPLER_W_ABSTRACT, 270},
    {"psychedelic", SAMPLER_W_ABSTRACT | SAMPLER_W_NEON, -1},
    {"geometric", SAMPLER_W_ABSTRACT, -1},
    {"neon", SAMPLER_W_ABSTRACT | SAMPLER_W_NEON, 300},
    {"liquid", SAMPLER_W_ABSTRACT, -1},
    {"fire", 0, 15},
    {"lava", 0, 10},
    {"volcano", SAMPLER_W_MOUNTAIN, 10},
    {"red", 0, 2},
    {"crimson", 0, 350},
    {"orange", 0, 28},
    {"amber", 0, 40},
    {"gold", 0, 45},
    {"yellow", 0, 55},
    {"lime", 0, 90},
    {"green", 0, 125},
    {"emerald", 0, 145},
    {"teal", 0, 175},
    {"cyan", 0, 185},
    {"turquoise", 0, 175},
    {"blue", 0, 215},
    {"azure", 0, 205},
    {"navy", 0, 230},
    {"indigo", 0, 250},
    {"purple", 0, 275},
    {"violet", 0, 280},
    {"lavender", 0, 265},
    {"magenta", 0, 310},
    {"pink", 0, 330},
    {"rose", 0, 345},
    {"white", 0, -2},
    {"silver", 0, -2},
    {"black", 0, -3},
    {"dark", 0, -3},
};

/* Scans the prompt word by word (ASCII letters, case-folded; a word matches
 * a table entry it starts with, so "snowy" and "mountains" count). */
static inline unsigned sampler_prompt_words(const char *prompt, int *hue, int *nhue)
{
    unsigned flags = 0;
    *nhue = 0;
    const char *p = prompt;
    while (*p) {
        while (*p && !((*p | 32) >= 'a' && (*p | 32) <= 'z'))
            p++;
        char w[24];
        size_t n = 0;
        while (((*p | 32) >= 'a' && (*p | 32) <= 'z')) {
            if (n + 1 < sizeof w)
                w[n++] = (char)(*p | 32);
            p++;
        }
        w[n] = 0;
        if (n < 3)
            continue;
        for (size_t i = 0; i < sizeof sampler_words / sizeof *sampler_words; i++) {
            size_t len = strlen(sampler_words[i].word);
            if (n >= len && n <= len + 3 && !memcmp(w, sampler_words[i].word, len)) {
                flags |= sampler_words[i].flags;
                if (sampler_words[i].hue != -1 && *nhue < 4)
                    hue[(*nhue)++] = sampler_words[i].hue;
                break;
            }
        }
    }
    return flags;
}

static inline uint64_t sampler_fnv1a(const char *s, uint64_t h)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* A hue for the i-th colour word, or hashed ones when there are none. */
static inline double sampler_pick_hue(const int *hue, int nhue, int i, double fallback)
{
    for (int k = 0; k < nhue; k++) {
        int h = hue[(i + k) % nhue];
        if (h >= 0)
            return h;
    }
    return fallback;
}

/* Builds the picture's parameters: the prompt decides kind, mood and
 * palette; the seed and image index decide layout and small colour shifts. */
static inline void sampler_scene_init(sampler_scene_t *sc, const char *prompt, uint64_t seed,
                                      uint32_t image_index, uint32_t width, uint32_t height)
{
    memset(sc, 0, sizeof *sc);
    sc->key[0] = (uint32_t)seed;
    sc->key[1] = (uint32_t)(seed >> 32);
    sc->image_index = image_index;
    sc->width = width;
    sc->height = height;

    uint64_t hp = sampler_fnv1a(prompt, 0xcbf29ce484222325ull);
    uint64_t hl = hp ^ (seed * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)image_index << 40);
    sampler_rng_t pr = {hp}, lr = {hl};
    sampler_splitmix(&lr.s);
    sc->lattice = (uint32_t)sampler_splitmix(&lr.s);
    sc->ofs_x = (float)sampler_rand(&lr, -200.0, 200.0);
    sc->ofs_y = (float)sampler_rand(&lr, -200.0, 200.0);
    sc->warp = 0.004f;

    int hue[4] = {0}, nhue = 0;
    unsigned w = sampler_prompt_words(prompt, hue, &nhue);
    int white = 0, black = 0;
    for (int i = 0; i < nhue; i++)
        white |= hue[i] == -2, black |= hue[i] == -3;
    double base_hue = sampler_rand(&pr, 0.0, 360.0);
    double jitter = sampler_rand(&lr, -12.0, 12.0);

    int landscape_words = (w
                           & (SAMPLER_W_FOREST | SAMPLER_W_SNOW | SAMPLER_W_WATER
                              | SAMPLER_W_MOUNTAIN | SAMPLER_W_DESERT | SAMPLER_W_SUNSET
                              | SAMPLER_W_NIGHT | SAMPLER_W_DAY | SAMPLER_W_MIST))
                          != 0;
    double pick = sampler_rand(&pr, 0.0, 1.0);
    sc->kind = (w & SAMPLER_W_ABSTRACT) || (!landscape_words && pick < 0.35) ? SAMPLER_ABSTRACT
                                                                             : SAMPLER_LANDSCAPE;

    if (sc->kind == SAMPLER_ABSTRACT) {
        /* dark, middle and light stops a hue step apart: a few related
         * colours per prompt rather than the whole rainbow */
        double h0 = sampler_pick_hue(hue, nhue, 0, base_hue) + jitter;
        double step = sampler_rand(&pr, 20.0, 75.0) * (sampler_rand(&pr, 0, 1) < 0.5 ? -1 : 1);
        double h1 = nhue > 1 && hue[1] >= 0 ? hue[1] : h0 + step;
        double sat = w & SAMPLER_W_NEON ? 1.0 : sampler_rand(&pr, 0.55, 0.85);
        double lo = black ? 0.08 : sampler_rand(&pr, 0.12, 0.3);
        double hi = white ? 0.9 : sampler_rand(&pr, 0.68, 0.85);
        sc->pal[0] = sampler_hsl(h0 - step * 0.5, sat * 0.9, lo);
        sc->pal[1] = sampler_hsl(h0, sat, 0.5 * (lo + hi) + 0.05);
        sc->pal[2] = sampler_hsl(h1 + step * 0.3, sat * 0.8, hi);
        sc->shade = sampler_hsl(h0 + 180.0, 0.4, black ? 0.04 : 0.12);
        sc->freq = (float)sampler_rand(&lr, 1.2, 2.2);
        sc->swirl = (float)sampler_rand(&pr, 1.5, 3.0);
        int nblobs = (int)sampler_rand(&lr, 0.0, 3.99);
        for (int i = 0; i < SAMPLER_BLOBS; i++) {
            double aspect = (double)width / height;
            sc->blob_x[i] = (float)(aspect * sampler_rand(&lr, -0.38, 0.38));
            sc->blob_y[i] = (float)sampler_rand(&lr, 0.15, 0.85);
            sc->blob_r[i] = i < nblobs ? (float)sampler_rand(&lr, 0.05, 0.2) : -1.0f;
            sc->blob_col[i] =
                sampler_hsl(sampler_rand(&lr, 0, 1) < 0.5 ? h0 : h1, sampler_rand(&lr, 0.5, 0.9),
                            sampler_rand(&lr, 0.45, 0.7));
        }
        return;
    }

    /* landscape: time of day from the words, else from the prompt's hash */
    int mood; /* 0 day, 1 sunset, 2 night, 3 mist */
    if (w & SAMPLER_W_NIGHT)
        mood = 2;
    else if (w & SAMPLER_W_SUNSET)
        mood = 1;
    else if (w & SAMPLER_W_MIST)
        mood = 3;
    else if (w & SAMPLER_W_DAY)
        mood = 0;
    else {
        double m = sampler_rand(&pr, 0.0, 1.0);
        mood = m < 0.4 ? 0 : (m < 0.7 ? 1 : (m < 0.85 ? 2 : 3));
    }
    /* colour words go where such colours occur: warm ones to the sun and
     * the sunset, greens to the land, blues to sky and water */
    double accent = -1.0, green = -1.0, blue = -1.0;
    for (int i = 0; i < nhue; i++) {
        double h = hue[i];
        if (h < 0)
            continue;
        if ((h < 65.0 || h > 290.0) && accent < 0)
            accent = h;
        else if (h >= 65.0 && h < 170.0 && green < 0)
            green = h;
        else if (h >= 170.0 && h <= 290.0 && blue < 0)
            blue = h;
    }
    double sky_hue = (blue >= 0 ? blue : 212.0 + sampler_rand(&pr, -15.0, 15.0)) + jitter;
    double warm = accent >= 0 ? accent : 28.0 + sampler_rand(&pr, -15.0, 15.0) + jitter;
    double natural = sampler_rand(&pr, 0.0, 1.0) < 0.6 ? sampler_rand(&pr, 60.0, 170.0) : base_hue;
    double land_hue =
        green >= 0 ? green
                   : (w & SAMPLER_W_FOREST ? 135.0 : (w & SAMPLER_W_DESERT ? 30.0 : natural));
    land_hue += jitter;

    switch (mood) {
    case 0:
        sc->sky_top = sampler_hsl(sky_hue, 0.65, 0.42);
        sc->sky_horizon = sampler_hsl(sky_hue - 15.0, 0.45, 0.82);
        sc->sun = sampler_hsl(accent >= 0 ? accent : 50.0, 0.9, 0.88);
        sc->cloud = sampler_rgb(0.97f, 0.97f, 0.98f);
        sc->glow = 0.25f;
        break;
    case 1:
        sc->sky_top = sampler_hsl(sky_hue + 45.0, 0.5, 0.28);
        sc->sky_horizon = sampler_hsl(warm, 0.85, 0.62);
        sc->sun = sampler_hsl(warm + 15.0, 1.0, 0.72);
        sc->cloud = sampler_hsl(warm - 20.0, 0.55, 0.6);
        sc->glow = 0.45f;
        break;
    case 2:
        sc->sky_top = sampler_hsl(sky_hue + 18.0, 0.6, 0.06);
        sc->sky_horizon = sampler_hsl(accent >= 0 ? accent : sky_hue + 10.0, 0.45, 0.24);
        sc->sun = sampler_rgb(0.95f, 0.94f, 0.86f);
        sc->cloud = sampler_hsl(sky_hue + 20.0, 0.25, 0.22);
        sc->glow = 0.18f;
        sc->stars = 0.9f;
        break;
    default:
        sc->sky_top = sampler_hsl(sky_hue + 10.0, 0.2, 0.62);
        sc->sky_horizon = sampler_hsl(accent >= 0 ? accent : sky_hue, 0.25, 0.86);
        sc->sun = sampler_rgb(1.0f, 0.98f, 0.92f);
        sc->cloud = sampler_rgb(0.9f, 0.91f, 0.93f);
        sc->glow = 0.15f;
        break;
    }
    if (black)
        sc->sky_top = sampler_scale(sc->sky_top, 0.5f);
    sc->haze = sampler_mix(sc->sky_horizon, sc->sky_top, 0.15f);
    sc->horizon = (float)sampler_rand(&lr, 0.5, 0.68);
    double aspect = (double)width / height;
    sc->sun_x = (float)(aspect * sampler_rand(&lr, -0.35, 0.35));
    sc->sun_y = (float)(mood == 1 ? sampler_rand(&lr, 0.16, 0.3) : sampler_rand(&lr, 0.1, 0.3));
    sc->sun_r = (float)(mood == 2 ? sampler_rand(&lr, 0.03, 0.05) : sampler_rand(&lr, 0.04, 0.075));
    sc->clouds = (float)(mood == 3 ? sampler_rand(&lr, 0.25, 0.4) : sampler_rand(&lr, -0.1, 0.3));
    sc->cloud_scale = (float)sampler_rand(&lr, 1.5, 3.0);
    sc->snow = w & SAMPLER_W_SNOW ? 0.9f : (white ? 0.5f : 0.0f);
    sc->water_level = (w & SAMPLER_W_WATER)
                              || (!(w & (SAMPLER_W_DESERT | SAMPLER_W_FOREST))
                                  && sampler_rand(&pr, 0.0, 1.0) < 0.3)
                          ? sc->horizon + (float)sampler_rand(&lr, 0.05, 0.12)
                          : 2.0f;

    /* four ridges, far to near: the far ones high and hazy, the near ones
     * darker, with trees in a forest, smooth and low in a desert */
    int desert = (w & SAMPLER_W_DESERT) != 0, forest = (w & SAMPLER_W_FOREST) != 0;
    double mountains = w & SAMPLER_W_MOUNTAIN ? 1.4 : (desert ? 0.45 : 1.0);
    double dark = mood == 2 ? 0.09 : (mood == 1 ? 0.22 : 0.33);
    for (int i = 0; i < SAMPLER_LAYERS; i++) {
        double depth = (double)i / (SAMPLER_LAYERS - 1); /* 0 far .. 1 near */
        sc->layer_base[i] = (float)(sc->horizon + 0.02 + 0.11 * depth * depth * 2.2
                                    + sampler_rand(&lr, -0.02, 0.02));
        sc->layer_amp[i] = (float)(mountains * (0.34 - 0.2 * depth) * sampler_rand(&lr, 0.6, 1.2));
        sc->layer_freq[i] =
            (float)((desert ? 0.7 : 1.4) * (1.0 + 1.5 * depth) * sampler_rand(&lr, 0.7, 1.3));
        sc->layer_off[i] = (float)sampler_rand(&lr, -100.0, 100.0);
        sc->layer_trees[i] =
            forest && i >= 1 ? 1.0f
                             : (i == 3 && !desert && sampler_rand(&lr, 0, 1) < 0.3 ? 0.6f : 0.0f);
        if (sc->water_level < 1.0f && i >= 2) {
            /* shores: a bank that slopes into the water from one side */
            double side = sampler_rand(&lr, 0.0, 1.0) < 0.5 ? -1.0 : 1.0;
            sc->layer_tilt[i] = (float)(side * sampler_rand(&lr, 0.35, 0.6));
            sc->layer_base[i] = (float)(sc->water_level + 0.18 + 0.12 * (i - 2));
            sc->layer_amp[i] *= 0.6f;
        }
        double hue_i = land_hue + (forest ? sampler_rand(&lr, -10.0, 10.0) : 25.0 * depth);
        double sat = desert ? 0.55 : (forest ? 0.45 : 0.3);
        double light = (0.22 + 0.28 * (1.0 - depth)) * (dark / 0.33) + (desert ? 0.22 : 0.0);
        if (desert && i == 0)
            hue_i = 20.0;
        sc->layer_col[i] =
            sampler_mix(sampler_hsl(hue_i, sat, light), sc->haze, (float)(0.55 * (1.0 - depth)));
    }
    sc->water = sampler_hsl(sky_hue + 5.0, 0.5, mood == 2 ? 0.06 : 0.22);
    sc->ground_a = sampler_hsl(land_hue + 20.0, 0.4, desert ? 0.55 : 0.3);
    sc->ground_b = sampler_hsl(sky_hue, 0.3, 0.75);
}

#endif
