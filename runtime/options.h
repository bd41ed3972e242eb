/*
 * options.h - command-line flags, each also settable by an environment
 * variable, from one table per command.
 *
 * Precedence: flag, then environment variable(s), then the default. Values
 * are kept as strings (pointers into argv, environ or the table: not
 * owned); options_long() and friends convert them with range checks.
 */
#ifndef IMAGEJOBS_OPTIONS_H
#define IMAGEJOBS_OPTIONS_H

#include <stdbool.h>
#include <stdio.h>

typedef struct {
    const char *name;    /* long flag, without "--" */
    const char *env;     /* IMAGEJOBS_* variable, or NULL */
    const char *env_alt; /* a second variable (DATABASE_URL), or NULL */
    const char *arg;     /* placeholder shown in --help ("HOST:PORT"); NULL: a flag
                          * without a value, which reads "1" when given */
    const char *def;     /* default, or NULL for none */
    const char *help;
    int short_name; /* one-letter alias ('o' for -o), or 0 */
} option_t;

/* Parses argv (argv[0] is the command name) against opts[0..n). values[i]
 * receives option i's value or NULL. Positional arguments are rejected.
 * Returns 0, 1 when --help was given (usage already printed), or -1 with
 * a message in err. */
int options_parse(const option_t *opts, size_t n, const char **values, int argc, char **argv,
                  const char *usage, char *err, size_t errlen);

/* Prints usage and the table: flags, placeholders, variables, defaults. */
void options_usage(FILE *out, const char *usage, const option_t *opts, size_t n);

/* Converts a decimal integer within [min, max]; -1 (with a message in err
 * naming the option) when it is not one. */
int options_long(const char *name, const char *value, long min, long max, long *out, char *err,
                 size_t errlen);

/* A flag's value: set unless absent, empty, "0", "false" or "no" (an
 * environment variable may say so). */
bool options_flag(const char *value);

/* Converts a decimal number of seconds within [min, max], as
 * options_long(). */
int options_seconds(const char *name, const char *value, double min, double max, double *out,
                    char *err, size_t errlen);

#endif
