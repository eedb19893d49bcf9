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
#include "commands.h"

static const char USAGE[] =
    "usage: kvzap oracle [--config FILE] [--set KEY=VALUE]... [--resume] [--overwrite]\n"
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
    "  --threads N       CPU threads (same as --set model.threads=N)\n"
    "  --quiet           no progress output\n"
    "  --stop-after N    (testing) stop after N documents, leaving the run resumable\n\n"
    "Progress goes to stderr: a bar on a terminal, a line every 10 s otherwise.\n"
    "File format: docs/oracle-format.md.\n";

typedef struct oracle_args {
    const char *config;
    const char **sets;
    size_t n_sets;
    int resume, overwrite, quiet, threads;
    size_t stop_after;
} oracle_args;

static int parse_one(int argc, char **argv, int *i, oracle_args *a)
{
    const char *arg = argv[*i];
    int has_value = *i + 1 < argc;
    if (!strcmp(arg, "--resume"))
        a->resume = 1;
    else if (!strcmp(arg, "--overwrite"))
        a->overwrite = 1;
    else if (!strcmp(arg, "--quiet") || !strcmp(arg, "-q"))
        a->quiet = 1;
    else if (!strcmp(arg, "--config") && has_value)
        a->config = argv[++*i];
    else if (!strcmp(arg, "--set") && has_value)
        a->sets[a->n_sets++] = argv[++*i];
    else if (!strncmp(arg, "--set=", 6))
        a->sets[a->n_sets++] = arg + 6;
    else if (!strcmp(arg, "--threads") && has_value)
        return cli_parse_threads("oracle", argv[++*i], &a->threads);
    else if (!strcmp(arg, "--stop-after") && has_value)
        return cli_parse_size("oracle", "--stop-after", argv[++*i], &a->stop_after);
    else if (!strcmp(arg, "--config") || !strcmp(arg, "--set") || !strcmp(arg, "--threads") ||
             !strcmp(arg, "--stop-after"))
        return cli_usage_error("oracle", "option needs a value", USAGE);
    else
        return cli_usage_error("oracle", "unexpected argument", USAGE);
    return 0;
}

static int load_config(const oracle_args *a, kvz_run_config *cfg)
{
    kvz_error err = {0};
    int rc = kvz_config_init(cfg, &err);
    if (rc == KVZ_OK && !cfg->model.path)
        rc = kvz_config_set(cfg, "model.path", cli_default_model(), &err);
    rc = rc ? rc : a->config ? kvz_config_apply_file(cfg, a->config, &err) : KVZ_OK;
    for (size_t i = 0; rc == KVZ_OK && i < a->n_sets; i++)
        rc = kvz_config_set_arg(cfg, a->sets[i], &err);
    if (rc == KVZ_OK && a->threads > 0) {
        char text[32];
        snprintf(text, sizeof text, "%d", a->threads);
        rc = kvz_config_set(cfg, "model.threads", text, &err);
    }
    rc = rc ? rc : kvz_config_validate(cfg, &err);
    if (rc) {
        kvz_config_free(cfg); /* safe after a failed init: it leaves cfg zeroed */
        return cli_error("oracle", err.msg);
    }
    return 0;
}

static void on_progress(const kvz_oracle_progress *p, void *user)
{
    cli_progress *bar = user;
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
    a.sets = calloc((size_t)argc + 1, sizeof *a.sets);
    if (!a.sets)
        return cli_error("oracle", "out of memory");
    int rc = 0;
    for (int i = 1; rc == 0 && i < argc; i++)
        rc = parse_one(argc, argv, &i, &a);
    kvz_run_config cfg;
    rc = rc ? rc : load_config(&a, &cfg);
    free(a.sets);
    if (rc)
        return rc;
    cli_tune_openblas();
    cli_progress bar;
    cli_progress_init(&bar, a.quiet);
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
