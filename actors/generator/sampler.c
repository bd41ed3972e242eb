/*
 * sampler.c - the sampler's host-side set-up: the noise schedule of each
 * step and the scene a prompt, a seed and an image index describe (see
 * sampler.h for the model and its parity rules).
 *
 * Host code only, run once per step or once per image, never per pixel: it
 * reads the prompt's words, hashes, and draws the scene's parameters from a
 * deterministic generator, in double. Both backends take its results as
 * plain data, so they see the very same numbers; built, like the rest of
 * the engine, with -ffp-contract=off.
 */
#include "config.h"

#include "actors/generator/sampler.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Cosine schedule (Nichol & Dhariwal 2021) over continuous time in [0, 1]. */
static double s_abar(double t)
{
    const double s = 0.008, half_pi = 1.57079632679489661923;
    double f = cos((t + s) / (1.0 + s) * half_pi), f0 = cos(s / (1.0 + s) * half_pi);
    double a = (f * f) / (f0 * f0);
    return a < 1e-4 ? 1e-4 : (a > 1.0 ? 1.0 : a);
}

void sampler_step_init(uint32_t k, uint32_t steps, sampler_step_t *st)
{
    double t = (double)(steps - k) / steps, tn = (double)(steps - k - 1) / steps;
    double a = s_abar(t), an = k + 1 == steps ? 1.0 : s_abar(tn);
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
} rng_t;

static uint64_t s_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform double in [lo, hi). */
static double s_rand(rng_t *r, double lo, double hi)
{
    return lo + (hi - lo) * (double)(s_splitmix(&r->s) >> 11) * (1.0 / 9007199254740992.0);
}

static sampler_rgb_t s_hsl(double h, double s, double l)
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
    W_FOREST = 1 << 0,
    W_SNOW = 1 << 1,
    W_WATER = 1 << 2,
    W_MOUNTAIN = 1 << 3,
    W_DESERT = 1 << 4,
    W_SUNSET = 1 << 5,
    W_NIGHT = 1 << 6,
    W_DAY = 1 << 7,
    W_ABSTRACT = 1 << 8,
    W_MIST = 1 << 9,
    W_NEON = 1 << 10,
};

typedef struct {
    const char *word;
    unsigned flags;
    int hue; /* a colour word's hue in degrees, -1 none; -2 white, -3 black */
} word_t;

static const word_t s_words[] = {
    {"forest", W_FOREST, -1},
    {"woods", W_FOREST, -1},
    {"tree", W_FOREST, -1},
    {"pine", W_FOREST, -1},
    {"jungle", W_FOREST, 120},
    {"snow", W_SNOW, -1},
    {"winter", W_SNOW, -1},
    {"ice", W_SNOW, 195},
    {"frozen", W_SNOW, 195},
    {"arctic", W_SNOW, 200},
    {"lake", W_WATER, -1},
    {"sea", W_WATER, 205},
    {"ocean", W_WATER, 205},
    {"river", W_WATER, -1},
    {"beach", W_WATER, 45},
    {"water", W_WATER, -1},
    {"coast", W_WATER, -1},
    {"mountain", W_MOUNTAIN, -1},
    {"hill", W_MOUNTAIN, -1},
    {"valley", W_MOUNTAIN, -1},
    {"peak", W_MOUNTAIN, -1},
    {"alps", W_MOUNTAIN | W_SNOW, -1},
    {"desert", W_DESERT, 35},
    {"dune", W_DESERT, 35},
    {"sand", W_DESERT, 40},
    {"canyon", W_DESERT, 20},
    {"sunset", W_SUNSET, 25},
    {"sunrise", W_SUNSET, 35},
    {"dusk", W_SUNSET, 280},
    {"dawn", W_SUNSET, 330},
    {"evening", W_SUNSET, -1},
    {"night", W_NIGHT, -1},
    {"moon", W_NIGHT, -1},
    {"star", W_NIGHT, -1},
    {"midnight", W_NIGHT, -1},
    {"day", W_DAY, -1},
    {"summer", W_DAY, 100},
    {"sunny", W_DAY, 50},
    {"fog", W_MIST, -1},
    {"mist", W_MIST, -1},
    {"cloud", W_MIST, -1},
    {"rain", W_MIST, 210},
    {"abstract", W_ABSTRACT, -1},
    {"pattern", W_ABSTRACT, -1},
    {"fractal", W_ABSTRACT, -1},
    {"dream", W_ABSTRACT, -1},
    {"swirl", W_ABSTRACT, -1},
    {"marble", W_ABSTRACT, -1},
    {"nebula", W_ABSTRACT, 290},
    {"galaxy", W_ABSTRACT, 260},
    {"cosmic", W_ABSTRACT, 270},
    {"psychedelic", W_ABSTRACT | W_NEON, -1},
    {"geometric", W_ABSTRACT, -1},
    {"neon", W_ABSTRACT | W_NEON, 300},
    {"liquid", W_ABSTRACT, -1},
    {"fire", 0, 15},
    {"lava", 0, 10},
    {"volcano", W_MOUNTAIN, 10},
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
static unsigned s_prompt_words(const char *prompt, int *hue, int *nhue)
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
        for (size_t i = 0; i < sizeof s_words / sizeof *s_words; i++) {
            size_t len = strlen(s_words[i].word);
            if (n >= len && n <= len + 3 && !memcmp(w, s_words[i].word, len)) {
                flags |= s_words[i].flags;
                if (s_words[i].hue != -1 && *nhue < 4)
                    hue[(*nhue)++] = s_words[i].hue;
                break;
            }
        }
    }
    return flags;
}

static uint64_t s_fnv1a(const char *s, uint64_t h)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* A hue for the i-th colour word, or hashed ones when there are none. */
static double s_pick_hue(const int *hue, int nhue, int i, double fallback)
{
    for (int k = 0; k < nhue; k++) {
        int h = hue[(i + k) % nhue];
        if (h >= 0)
            return h;
    }
    return fallback;
}

void sampler_scene_init(sampler_scene_t *sc, const char *prompt, uint64_t seed,
                        uint32_t image_index, uint32_t width, uint32_t height)
{
    memset(sc, 0, sizeof *sc);
    sc->key[0] = (uint32_t)seed;
    sc->key[1] = (uint32_t)(seed >> 32);
    sc->image_index = image_index;
    sc->width = width;
    sc->height = height;

    uint64_t hp = s_fnv1a(prompt, 0xcbf29ce484222325ull);
    uint64_t hl = hp ^ (seed * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)image_index << 40);
    rng_t pr = {hp}, lr = {hl};
    s_splitmix(&lr.s);
    sc->lattice = (uint32_t)s_splitmix(&lr.s);
    sc->ofs_x = (float)s_rand(&lr, -200.0, 200.0);
    sc->ofs_y = (float)s_rand(&lr, -200.0, 200.0);
    sc->warp = 0.004f;

    int hue[4] = {0}, nhue = 0;
    unsigned w = s_prompt_words(prompt, hue, &nhue);
    int white = 0, black = 0;
    for (int i = 0; i < nhue; i++)
        white |= hue[i] == -2, black |= hue[i] == -3;
    double base_hue = s_rand(&pr, 0.0, 360.0);
    double jitter = s_rand(&lr, -12.0, 12.0);

    int landscape_words = (w
                           & (W_FOREST | W_SNOW | W_WATER | W_MOUNTAIN | W_DESERT | W_SUNSET
                              | W_NIGHT | W_DAY | W_MIST))
                          != 0;
    double pick = s_rand(&pr, 0.0, 1.0);
    sc->kind = (w & W_ABSTRACT) || (!landscape_words && pick < 0.35) ? SAMPLER_ABSTRACT
                                                                     : SAMPLER_LANDSCAPE;

    if (sc->kind == SAMPLER_ABSTRACT) {
        /* dark, middle and light stops a hue step apart: a few related
         * colours per prompt rather than the whole rainbow */
        double h0 = s_pick_hue(hue, nhue, 0, base_hue) + jitter;
        double step = s_rand(&pr, 20.0, 75.0) * (s_rand(&pr, 0, 1) < 0.5 ? -1 : 1);
        double h1 = nhue > 1 && hue[1] >= 0 ? hue[1] : h0 + step;
        double sat = w & W_NEON ? 1.0 : s_rand(&pr, 0.55, 0.85);
        double lo = black ? 0.08 : s_rand(&pr, 0.12, 0.3);
        double hi = white ? 0.9 : s_rand(&pr, 0.68, 0.85);
        sc->pal[0] = s_hsl(h0 - step * 0.5, sat * 0.9, lo);
        sc->pal[1] = s_hsl(h0, sat, 0.5 * (lo + hi) + 0.05);
        sc->pal[2] = s_hsl(h1 + step * 0.3, sat * 0.8, hi);
        sc->shade = s_hsl(h0 + 180.0, 0.4, black ? 0.04 : 0.12);
        sc->freq = (float)s_rand(&lr, 1.2, 2.2);
        sc->swirl = (float)s_rand(&pr, 1.5, 3.0);
        int nblobs = (int)s_rand(&lr, 0.0, 3.99);
        for (int i = 0; i < SAMPLER_BLOBS; i++) {
            double aspect = (double)width / height;
            sc->blob_x[i] = (float)(aspect * s_rand(&lr, -0.38, 0.38));
            sc->blob_y[i] = (float)s_rand(&lr, 0.15, 0.85);
            sc->blob_r[i] = i < nblobs ? (float)s_rand(&lr, 0.05, 0.2) : -1.0f;
            sc->blob_col[i] = s_hsl(s_rand(&lr, 0, 1) < 0.5 ? h0 : h1, s_rand(&lr, 0.5, 0.9),
                                    s_rand(&lr, 0.45, 0.7));
        }
        return;
    }

    /* landscape: time of day from the words, else from the prompt's hash */
    int mood; /* 0 day, 1 sunset, 2 night, 3 mist */
    if (w & W_NIGHT)
        mood = 2;
    else if (w & W_SUNSET)
        mood = 1;
    else if (w & W_MIST)
        mood = 3;
    else if (w & W_DAY)
        mood = 0;
    else {
        double m = s_rand(&pr, 0.0, 1.0);
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
    double sky_hue = (blue >= 0 ? blue : 212.0 + s_rand(&pr, -15.0, 15.0)) + jitter;
    double warm = accent >= 0 ? accent : 28.0 + s_rand(&pr, -15.0, 15.0) + jitter;
    double natural = s_rand(&pr, 0.0, 1.0) < 0.6 ? s_rand(&pr, 60.0, 170.0) : base_hue;
    double land_hue = green >= 0 ? green : (w & W_FOREST ? 135.0 : (w & W_DESERT ? 30.0 : natural));
    land_hue += jitter;

    switch (mood) {
    case 0:
        sc->sky_top = s_hsl(sky_hue, 0.65, 0.42);
        sc->sky_horizon = s_hsl(sky_hue - 15.0, 0.45, 0.82);
        sc->sun = s_hsl(accent >= 0 ? accent : 50.0, 0.9, 0.88);
        sc->cloud = sampler_rgb(0.97f, 0.97f, 0.98f);
        sc->glow = 0.25f;
        break;
    case 1:
        sc->sky_top = s_hsl(sky_hue + 45.0, 0.5, 0.28);
        sc->sky_horizon = s_hsl(warm, 0.85, 0.62);
        sc->sun = s_hsl(warm + 15.0, 1.0, 0.72);
        sc->cloud = s_hsl(warm - 20.0, 0.55, 0.6);
        sc->glow = 0.45f;
        break;
    case 2:
        sc->sky_top = s_hsl(sky_hue + 18.0, 0.6, 0.06);
        sc->sky_horizon = s_hsl(accent >= 0 ? accent : sky_hue + 10.0, 0.45, 0.24);
        sc->sun = sampler_rgb(0.95f, 0.94f, 0.86f);
        sc->cloud = s_hsl(sky_hue + 20.0, 0.25, 0.22);
        sc->glow = 0.18f;
        sc->stars = 0.9f;
        break;
    default:
        sc->sky_top = s_hsl(sky_hue + 10.0, 0.2, 0.62);
        sc->sky_horizon = s_hsl(accent >= 0 ? accent : sky_hue, 0.25, 0.86);
        sc->sun = sampler_rgb(1.0f, 0.98f, 0.92f);
        sc->cloud = sampler_rgb(0.9f, 0.91f, 0.93f);
        sc->glow = 0.15f;
        break;
    }
    if (black)
        sc->sky_top = sampler_scale(sc->sky_top, 0.5f);
    sc->haze = sampler_mix(sc->sky_horizon, sc->sky_top, 0.15f);
    sc->horizon = (float)s_rand(&lr, 0.5, 0.68);
    double aspect = (double)width / height;
    sc->sun_x = (float)(aspect * s_rand(&lr, -0.35, 0.35));
    sc->sun_y = (float)(mood == 1 ? s_rand(&lr, 0.16, 0.3) : s_rand(&lr, 0.1, 0.3));
    sc->sun_r = (float)(mood == 2 ? s_rand(&lr, 0.03, 0.05) : s_rand(&lr, 0.04, 0.075));
    sc->clouds = (float)(mood == 3 ? s_rand(&lr, 0.25, 0.4) : s_rand(&lr, -0.1, 0.3));
    sc->cloud_scale = (float)s_rand(&lr, 1.5, 3.0);
    sc->snow = w & W_SNOW ? 0.9f : (white ? 0.5f : 0.0f);
    sc->water_level = (w & W_WATER) || (!(w & (W_DESERT | W_FOREST)) && s_rand(&pr, 0.0, 1.0) < 0.3)
                          ? sc->horizon + (float)s_rand(&lr, 0.05, 0.12)
                          : 2.0f;

    /* four ridges, far to near: the far ones high and hazy, the near ones
     * darker, with trees in a forest, smooth and low in a desert */
    int desert = (w & W_DESERT) != 0, forest = (w & W_FOREST) != 0;
    double mountains = w & W_MOUNTAIN ? 1.4 : (desert ? 0.45 : 1.0);
    double dark = mood == 2 ? 0.09 : (mood == 1 ? 0.22 : 0.33);
    for (int i = 0; i < SAMPLER_LAYERS; i++) {
        double depth = (double)i / (SAMPLER_LAYERS - 1); /* 0 far .. 1 near */
        sc->layer_base[i] =
            (float)(sc->horizon + 0.02 + 0.11 * depth * depth * 2.2 + s_rand(&lr, -0.02, 0.02));
        sc->layer_amp[i] = (float)(mountains * (0.34 - 0.2 * depth) * s_rand(&lr, 0.6, 1.2));
        sc->layer_freq[i] =
            (float)((desert ? 0.7 : 1.4) * (1.0 + 1.5 * depth) * s_rand(&lr, 0.7, 1.3));
        sc->layer_off[i] = (float)s_rand(&lr, -100.0, 100.0);
        sc->layer_trees[i] =
            forest && i >= 1 ? 1.0f : (i == 3 && !desert && s_rand(&lr, 0, 1) < 0.3 ? 0.6f : 0.0f);
        if (sc->water_level < 1.0f && i >= 2) {
            /* shores: a bank that slopes into the water from one side */
            double side = s_rand(&lr, 0.0, 1.0) < 0.5 ? -1.0 : 1.0;
            sc->layer_tilt[i] = (float)(side * s_rand(&lr, 0.35, 0.6));
            sc->layer_base[i] = (float)(sc->water_level + 0.18 + 0.12 * (i - 2));
            sc->layer_amp[i] *= 0.6f;
        }
        double hue_i = land_hue + (forest ? s_rand(&lr, -10.0, 10.0) : 25.0 * depth);
        double sat = desert ? 0.55 : (forest ? 0.45 : 0.3);
        double light = (0.22 + 0.28 * (1.0 - depth)) * (dark / 0.33) + (desert ? 0.22 : 0.0);
        if (desert && i == 0)
            hue_i = 20.0;
        sc->layer_col[i] =
            sampler_mix(s_hsl(hue_i, sat, light), sc->haze, (float)(0.55 * (1.0 - depth)));
    }
    sc->water = s_hsl(sky_hue + 5.0, 0.5, mood == 2 ? 0.06 : 0.22);
    sc->ground_a = s_hsl(land_hue + 20.0, 0.4, desert ? 0.55 : 0.3);
    sc->ground_b = s_hsl(sky_hue, 0.3, 0.75);
}
