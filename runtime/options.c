/*
 * options.c - table-driven getopt_long with environment fallbacks.
 */
#include "config.h"

#include "runtime/options.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void options_usage(FILE *out, const char *usage, const option_t *opts, size_t n)
{
    fprintf(out, "%s\n\nOptions (each also from the environment variable shown):\n", usage);
    for (size_t i = 0; i < n; i++) {
        char flag[64];
        const char *arg = opts[i].arg ? opts[i].arg : "";
        if (opts[i].short_name)
            snprintf(flag, sizeof flag, "-%c, --%s %s", opts[i].short_name, opts[i].name, arg);
        else
            snprintf(flag, sizeof flag, "--%s %s", opts[i].name, arg);
        fprintf(out, "  %-28s %s\n", flag, opts[i].help);
        if (opts[i].env || opts[i].def) {
            fprintf(out, "  %-28s", "");
            if (opts[i].env)
                fprintf(out, " [%s%s%s]", opts[i].env, opts[i].env_alt ? ", " : "",
                        opts[i].env_alt ? opts[i].env_alt : "");
            if (opts[i].def)
                fprintf(out, " (default: %s)", opts[i].def);
            fputc('\n', out);
        }
    }
    fprintf(out, "  %-28s %s\n", "--help", "print this help and exit");
}

int options_parse(const option_t *opts, size_t n, const char **values, int argc, char **argv,
                  const char *usage, char *err, size_t errlen)
{
    struct option *longopts = calloc(n + 2, sizeof *longopts);
    if (!longopts)
        abort();
    for (size_t i = 0; i < n; i++) {
        longopts[i].name = opts[i].name;
        longopts[i].has_arg = opts[i].arg ? required_argument : no_argument;
        longopts[i].val = 1000 + (int)i;
        const char *v = opts[i].env ? getenv(opts[i].env) : NULL;
        if ((!v || !*v) && opts[i].env_alt)
            v = getenv(opts[i].env_alt);
        values[i] = (v && *v) ? v : opts[i].def;
    }
    longopts[n].name = "help";
    longopts[n].val = 'h';
    char shorts[2 * 64 + 2] = "h";
    for (size_t i = 0, k = 1; i < n && k + 2 < sizeof shorts; i++) {
        if (opts[i].short_name) {
            shorts[k++] = (char)opts[i].short_name;
            if (opts[i].arg)
                shorts[k++] = ':';
            shorts[k] = 0;
        }
    }

    int rc = 0;
    optind = 1;
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, shorts, longopts, NULL);
        if (c == -1)
            break;
        if (c == 'h') {
            options_usage(stdout, usage, opts, n);
            rc = 1;
            break;
        }
        if (c >= 1000 && c < 1000 + (int)n) {
            values[c - 1000] = opts[c - 1000].arg ? optarg : "1";
            continue;
        }
        size_t s;
        for (s = 0; s < n && (c == '?' || c == ':' || opts[s].short_name != c); s++)
            ;
        if (s < n) {
            values[s] = optarg ? optarg : "1";
            continue;
        }
        if (optopt >= 1000 && optopt < 1000 + (int)n)
            snprintf(err, errlen, "option --%s needs a value", opts[optopt - 1000].name);
        else if (optopt && strchr(shorts, optopt))
            snprintf(err, errlen, "option -%c needs a value", optopt);
        else
            snprintf(err, errlen, "unknown option %s (see --help)", argv[optind - 1]);
        rc = -1;
        break;
    }
    if (rc == 0 && optind < argc) {
        snprintf(err, errlen, "unexpected argument '%s' (see --help)", argv[optind]);
        rc = -1;
    }
    free(longopts);
    return rc;
}

int options_long(const char *name, const char *value, long min, long max, long *out, char *err,
                 size_t errlen)
{
    char *end;
    errno = 0;
    long v = value ? strtol(value, &end, 10) : 0;
    if (!value || !*value || *end || errno || v < min || v > max) {
        snprintf(err, errlen, "--%s must be an integer from %ld to %ld, not '%s'", name, min, max,
                 value ? value : "");
        return -1;
    }
    *out = v;
    return 0;
}

bool options_flag(const char *value)
{
    return value && *value && strcmp(value, "0") != 0 && strcasecmp(value, "false") != 0
           && strcasecmp(value, "no") != 0;
}

int options_seconds(const char *name, const char *value, double min, double max, double *out,
                    char *err, size_t errlen)
{
    char *end;
    errno = 0;
    double v = value ? strtod(value, &end) : 0;
    if (!value || !*value || *end || errno || !(v >= min && v <= max)) {
        snprintf(err, errlen, "--%s must be a number of seconds from %g to %g, not '%s'", name, min,
                 max, value ? value : "");
        return -1;
    }
    *out = v;
    return 0;
}
