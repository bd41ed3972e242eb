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
static double sampler_abar(double t)
{
    const double s = 0.008, half_pi = 1.57079632679489661923;
    double f = cos((t + s) / (1.0 + s) * half_pi), f0 = cos(s / (1.0 + s) * half_pi);
    double a = (f * f) / (f0 * f0);
    return a < 1e-4 ? 1e-4 : (a > 1.0 ? 1.0 : a);
}

void sampler_step_init(uint32_t k, uint32_t steps, sampler_step_t *st)
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

static uint64_t sampler_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform double in [lo, hi). */
static double sampler_rand(sampler_rng_t *r, double lo, double hi)
{
    return lo + (hi - lo) * (double)(sampler_splitmix(&r->s) >> 11) * (1.0 / 9007199254740992.0);
}

static sampler_rgb_t sampler_hsl(double h, double s, double l)
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
static unsigned sampler_prompt_words(const char *prompt, int *hue, int *nhue)
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

static uint64_t sampler_fnv1a(const char *s, uint64_t h)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* A hue for the i-th colour word, or hashed ones when there are none. */
static double sampler_pick_hue(const int *hue, int nhue, int i, double fallback)
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
