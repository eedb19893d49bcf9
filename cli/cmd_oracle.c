/* cmd_oracle: `kvzap oracle`: harvest KVzip+ oracle data (hidden states and
 * log-importance targets, spec sections 1, 2 and 6) from a corpus into an
 * HDF5 dataset, driven by a YAML config (kvzip_oracle/oracle.h does the
 * work; this file parses options and shows progress). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "../kvzip_oracle/oracle.h"
#include "cli_forward.h"
#include "cli_progress.h"
#include "cli_run_config.h"
#include "commands.h"

static const char USAGE[] =
    "usage: kvzap oracle [--config FILE] [--set KEY=VALUE]... [--resume] [--overwrite]\n"
    "                    [--device auto|cpu|cuda] [--precision bfloat16|float32]\n"
    "                    [--threads N] [--quiet]\n";

static const char HELP[] =
    "\nSelects documents from oracle.corpus (JSONL, text files or a directory), runs\n"
    "the repeat-the-text pass of model.path on each, and writes per-layer hidden\n"
    "states, KVzip+ log-scores and ridge statistics to oracle.output (.h5).\n\n"
    "  --config FILE     YAML run configuration (see configs/oracle/ and\n"
    "                    docs/configuration.md); model.path defaults to the default\n"
    "                    model (scripts/fetch-assets)\n"
    "  --set KEY=VALUE   override one key, e.g. --set oracle.n_tokens=200\n"
    "  --resume          continue an interrupted run (\"<output>.parts\"); the result\n"
    "                    is identical to an uninterrupted run with the same config\n"
    "  --overwrite       replace an existing output file\n"
    "  --device D        where the model runs: auto (cuda when a CUDA device is\n"
    "                    present and oracle.scoring is kvzip_plus, else cpu), cpu or\n"
    "                    cuda (same as --set model.device=D; docs/gpu-oracle.md)\n"
    "  --precision P     GPU forward precision: bfloat16 (default) or float32, the\n"
    "                    checking mode (same as --set model.precision=P); --resume\n"
    "                    refuses to mix precisions in one dataset\n"
    "  --threads N       CPU threads (same as --set model.threads=N)\n"
    "  --quiet           no progress output\n"
    "  --stop-after N    (testing) stop after N documents, leaving the run resumable\n\n"
    "Progress goes to stderr: a bar on a terminal, a line every 10 s otherwise.\n"
    "File format: docs/oracle-format.md.\n";

typedef struct oracle_args {
    cli_run_args run; /* --config, --set, --threads, --quiet */
    int resume, overwrite;
    size_t stop_after;
    char device_set[64], precision_set[64]; /* "model.device=..." for --device */
} oracle_args;

/* --device/--precision become --set KEY=VALUE at their place in argv (the
 * config loader validates the value). */
static int add_set(oracle_args *a, const char *key, const char *value, char *buf, size_t size)
{
    size_t k = strlen(key), v = strlen(value);
    if (k + v + 2 > size)
        return cli_usage_error("oracle", "option value too long", USAGE);
    memcpy(buf, key, k);
    buf[k] = '=';
    memcpy(buf + k + 1, value, v + 1);
    a->run.sets[a->run.n_sets++] = buf;
    return 0;
}

static int parse_one(int argc, char **argv, int *i, oracle_args *a)
{
    int rc = cli_run_option("oracle", USAGE, argc, argv, i, &a->run);
    if (rc >= 0)
        return rc;
    const char *arg = argv[*i];
    if (!strcmp(arg, "--resume"))
        a->resume = 1;
    else if (!strcmp(arg, "--overwrite"))
        a->overwrite = 1;
    else if (!strcmp(arg, "--stop-after") && *i + 1 < argc)
        return cli_parse_size("oracle", "--stop-after", argv[++*i], &a->stop_after);
    else if (!strcmp(arg, "--device") && *i + 1 < argc)
        return add_set(a, "model.device", argv[++*i], a->device_set, sizeof a->device_set);
    else if (!strcmp(arg, "--precision") && *i + 1 < argc)
        return add_set(a, "model.precision", argv[++*i], a->precision_set,
                       sizeof a->precision_set);
    else if (!strcmp(arg, "--stop-after") || !strcmp(arg, "--device") ||
             !strcmp(arg, "--precision"))
        return cli_usage_error("oracle", "option needs a value", USAGE);
    else
        return cli_usage_error("oracle", "unexpected argument", USAGE);
    return 0;
}

static void on_progress(const kvz_oracle_progress *p, void *user)
{
    cli_progress *bar = user;
    if (p->phase == KVZ_ORACLE_STARTING) {
        if (!bar->quiet)
            fprintf(stderr, "kvzap oracle: device: %s, %s\n", p->device, p->precision);
        return;
    }
    if (p->phase == KVZ_ORACLE_SELECTING) {
        if (!bar->quiet)
            fprintf(stderr, "kvzap oracle: selecting documents...\n");
        return;
    }
    if (p->phase == KVZ_ORACLE_MERGING) {
        cli_progress_end(bar);
        if (!bar->quiet)
            fprintf(stderr, "kvzap oracle: merging shards into the final file...\n");
        return;
    }
    if (p->phase != KVZ_ORACLE_HARVESTING)
        return;
    char samples[32], extra[64];
    snprintf(extra, sizeof extra, "%s samples",
             cli_human_count((double)p->samples_written, samples, sizeof samples));
    double rate = p->elapsed_s > 0 ? (double)p->tokens_this_run / p->elapsed_s : 0.0;
    cli_progress_update(bar, p->docs_done, p->docs_total, "docs", rate, "tok/s", p->elapsed_s,
                        extra, p->docs_done == p->docs_total || p->docs_done == p->docs_resumed);
}

static void print_summary(const kvz_oracle_summary *s)
{
    char dur[32];
    cli_human_duration(s->seconds, dur, sizeof dur);
    if (!s->finished) {
        printf("stopped after %zu documents (%zu samples); continue with --resume\n",
               s->n_documents, s->n_samples);
        return;
    }
    printf("wrote %s: %zu documents, %zu samples", s->output, s->n_documents, s->n_samples);
    if (s->docs_resumed)
        printf(" (%zu documents from the interrupted run)", s->docs_resumed);
    char hv[32];
    cli_human_duration(s->harvest_seconds, hv, sizeof hv);
    printf("; %zu prompt tokens harvested in %s (%.1f tok/s), %s in all\n", s->tokens_this_run,
           hv, s->harvest_seconds > 0 ? (double)s->tokens_this_run / s->harvest_seconds : 0.0,
           dur);
}

int cmd_oracle(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("%s%s", USAGE, HELP);
        return 0;
    }
    oracle_args a = {0};
    int rc = cli_run_args_init("oracle", argc, &a.run);
    for (int i = 1; rc == 0 && i < argc; i++)
        rc = parse_one(argc, argv, &i, &a);
    kvz_run_config cfg;
    rc = rc ? rc : cli_run_config_load("oracle", &a.run, 1, NULL, &cfg);
    cli_run_args_free(&a.run);
    if (rc)
        return rc;
    cli_tune_openblas();
    cli_progress bar;
    cli_progress_init(&bar, a.run.quiet);
    kvz_oracle_options opt = {a.resume, a.overwrite, a.stop_after, on_progress, &bar};
    kvz_oracle_summary sum;
    kvz_error err = {0};
    rc = kvz_oracle_harvest(&cfg, &opt, &sum, &err);
    cli_progress_end(&bar);
    kvz_config_free(&cfg);
    if (rc)
        return cli_error("oracle", err.msg);
    print_summary(&sum);
    return 0;
}
