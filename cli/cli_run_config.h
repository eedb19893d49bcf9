/* cli_run_config: the run-configuration options the job commands (oracle,
 * train) share: --config FILE, --set KEY=VALUE (repeatable), --threads N,
 * --quiet; and loading them into a validated kvz_run_config. */
#ifndef KVZ_CLI_RUN_CONFIG_H
#define KVZ_CLI_RUN_CONFIG_H

#include <stddef.h>

#include "../common/config.h"

/* A command's shorthand flags: `--flag VALUE` (or, with a fixed value, just
 * `--flag`) is `--set key=VALUE` at the same place on the command line, so
 * flags, --set and --device-style options apply in command-line order after
 * --config, and the last one given for a key wins. */
typedef struct cli_flag {
    const char *flag;  /* "--corpus" */
    const char *key;   /* "oracle.corpus" */
    const char *value; /* NULL: takes an argument; else the value it sets */
    const char *arg;   /* the argument's name in --help ("PATH"), NULL with a value */
} cli_flag;

typedef struct cli_run_args {
    const char *config;
    const char **sets; /* [argc], filled by cli_run_option */
    size_t n_sets;
    int threads, quiet;
    const cli_flag *flags; /* the command's shorthands (NULL-flag terminated), or NULL */
    char **owned;          /* "key=value" strings built for flags, [argc] */
    size_t n_owned;
} cli_run_args;

/* The --help lines of a flag table ("  --corpus PATH     = oracle.corpus"). */
void cli_print_flags(const cli_flag *flags);

/* Allocates a->sets for argc arguments; returns 1 (after printing) on OOM. */
int cli_run_args_init(const char *cmd, int argc, cli_run_args *a);
void cli_run_args_free(cli_run_args *a);
/* Consumes argv[*i] (and its value) when it is one of the shared options:
 * returns 0 when consumed, 2 after printing a usage error, -1 when argv[*i]
 * is not a shared option (the command handles it). */
int cli_run_option(const char *cmd, const char *usage, int argc, char **argv, int *i,
                   cli_run_args *a);
/* Defaults (model.path = the default model when with_default_model), then
 * --config, each --set, --threads, validation, then the required keys
 * (NULL-terminated list). Prints "kvzap CMD: ..." and returns 1 on error
 * (cfg freed); 0 with cfg filled. */
int cli_run_config_load(const char *cmd, const cli_run_args *a, int with_default_model,
                        const char *const *required, kvz_run_config *cfg);

#endif
