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
    "usage: kvzap oracle [--model M] [--corpus C] [--output O] [--n-tokens N] [--dry-run]\n"
    "                    [--min-tokens A --max-tokens B] [--train-docs K --test-docs K]\n"
    "                    [--config FILE] [--set KEY=VALUE]... [--resume] [--overwrite]\n"
    "                    [--device auto|cpu|cuda] [--precision bfloat16|float32]\n"
    "                    [--threads N] [--quiet]\n";

/* Shorthands of config keys (docs/configuration.md "Command-line flags"). */
static const cli_flag FLAGS[] = {
    {"--model", "model.path", NULL, "M"},
    {"--corpus", "oracle.corpus", NULL, "C"},
    {"--output", "oracle.output", NULL, "O"},
    {"--n-tokens", "oracle.n_tokens", NULL, "N"},
    {"--min-tokens", "oracle.min_doc_tokens", NULL, "A"},
    {"--max-tokens", "oracle.max_doc_tokens", NULL, "B"},
    {"--train-docs", "oracle.train_docs_per_subset", NULL, "K"},
    {"--test-docs", "oracle.test_docs_per_subset", NULL, "K"},
    {"--seed", "oracle.seed", NULL, "S"},
    {"--device", "model.device", NULL, "D"},
    {"--precision", "model.precision", NULL, "P"},
    {NULL, NULL, NULL, NULL},
};

/* A bare `kvzap oracle` (no --config, no corpus) runs the quick-start job:
 * the default model on the sample corpus shipped in the source tree. */
#ifndef KVZ_SAMPLE_CORPUS
#define KVZ_SAMPLE_CORPUS "data/sample/corpus"
#endif
static const char *const SAMPLE_JOB[] = {
    ("oracle.corpus=" KVZ_SAMPLE_CORPUS), "oracle.output=out/oracle.h5",
    "oracle.train_docs_per_subset=20", "oracle.test_docs_per_subset=1",
    "oracle.docs_per_shard=4"};

static const char HELP_HEAD[] =
    "\nSelects documents from oracle.corpus (JSONL, text files or a directory), runs\n"
    "the repeat-the-text pass of model.path on each, and writes per-layer hidden\n"
    "states, KVzip+ log-scores and ridge statistics to oracle.output (.h5).\n"
    "Without --config and without a corpus it runs the quick-start job: the default\n"
    "model on the sample corpus (" KVZ_SAMPLE_CORPUS ") into out/oracle.h5.\n"
    "M is a .gguf file, a Hugging Face model directory, or a Hugging Face id\n"
    "(org/name[@revision]) found offline in the local Hugging Face cache.\n\n"
    "Flags (each is the --set it names; flags and --set apply in command-line\n"
    "order after --config, and the last one given for a key wins):\n";

static const char HELP[] =
    "\nOther options:\n"
    "  --config FILE     YAML run configuration (see configs/oracle/ and\n"
    "                    docs/configuration.md); model.path defaults to the default\n"
    "                    model (scripts/fetch-assets)\n"
    "  --set KEY=VALUE   override one key, e.g. --set oracle.n_tokens=200\n"
    "  --resume          continue an interrupted run (\"<output>.parts\"); the result\n"
    "                    is identical to an uninterrupted run with the same config\n"
    "  --overwrite       replace an existing output file\n"
    "  --dry-run         select and tokenize the documents, score the first two to\n"
    "                    time them, and print what the run would do (documents per\n"
    "                    subset and split, prompt tokens, samples, dataset size with\n"
    "                    and without hidden states, estimated time); writes nothing\n"
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
    cli_run_args run; /* --config, --set, --threads, --quiet and FLAGS */
    int resume, overwrite, dry_run;
    size_t stop_after;
} oracle_args;

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
    else if (!strcmp(arg, "--dry-run"))
        a->dry_run = 1;
    else if (!strcmp(arg, "--stop-after") && *i + 1 < argc)
        return cli_parse_size("oracle", "--stop-after", argv[++*i], &a->stop_after);
    else if (!strcmp(arg, "--stop-after"))
        return cli_usage_error("oracle", "option needs a value", USAGE);
    else
        return cli_usage_error("oracle", "unexpected argument", USAGE);
    return 0;
}

/* Puts the sample job's keys before everything the user set, when the user
 * gave neither a config nor a corpus. */
static int add_sample_job(cli_run_args *r)
{
    if (r->config)
        return 0;
    for (size_t i = 0; i < r->n_sets; i++)
        if (!strncmp(r->sets[i], "oracle.corpus=", 14))
            return 0;
    size_t k = sizeof SAMPLE_JOB / sizeof *SAMPLE_JOB;
    const char **sets = calloc(r->n_sets + k + 1, sizeof *sets);
    if (!sets)
        return cli_error("oracle", "out of memory");
    memcpy(sets, SAMPLE_JOB, sizeof SAMPLE_JOB);
    memcpy(sets + k, r->sets, r->n_sets * sizeof *sets);
    free(r->sets);
    r->sets = sets;
    r->n_sets += k;
    if (!r->quiet)
        fprintf(stderr, "kvzap oracle: no config and no corpus given: the quick-start job on "
                        "%s -> out/oracle.h5 (unless --output says otherwise)\n",
                KVZ_SAMPLE_CORPUS);
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

static void print_size(const char *what, double bytes)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4)
        bytes /= 1024, u++;
    printf("  %-34s %.1f %s\n", what, bytes, unit[u]);
}

static void print_plan(const kvz_oracle_summary *s, const kvz_run_config *cfg)
{
    const kvz_oracle_plan *p = &s->plan;
    printf("dry run: nothing written (would write %s)\n", s->output);
    printf("  %-34s %s, %s\n", "device", s->device, s->precision);
    printf("  %-34s %zu of %zu scanned (%zu passed the length filter)\n", "documents",
           p->n_docs, s->corpus_scanned, s->corpus_eligible);
    for (size_t i = 0; i < p->n_subsets; i++)
        printf("    subset %-27s %zu train, %zu test\n", p->subsets[i].name,
               p->subsets[i].train_docs, p->subsets[i].test_docs);
    printf("  %-34s %zu\n", "prompt tokens (context + repeat)", p->prompt_tokens);
    printf("  %-34s %zu (oracle.n_tokens %zu per document)\n", "samples", p->samples,
           cfg->oracle.n_tokens);
    print_size("dataset size, with hidden states", p->bytes_with_hidden);
    print_size("dataset size, without", p->bytes_without_hidden);
    char t[32], est[32];
    cli_human_duration(p->timed_seconds, t, sizeof t);
    cli_human_duration(p->estimated_seconds, est, sizeof est);
    printf("  %-34s %zu documents, %zu tokens in %s\n", "timed pass", p->timed_docs,
           p->timed_tokens, t);
    printf("  %-34s about %s (extrapolated by prompt tokens)\n", "estimated harvest time", est);
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
        printf("%s", USAGE);
        printf("%s", HELP_HEAD);
        cli_print_flags(FLAGS);
        printf("%s", HELP);
        return 0;
    }
    oracle_args a = {0};
    int rc = cli_run_args_init("oracle", argc, &a.run);
    a.run.flags = FLAGS;
    for (int i = 1; rc == 0 && i < argc; i++)
        rc = parse_one(argc, argv, &i, &a);
    rc = rc ? rc : add_sample_job(&a.run);
    kvz_run_config cfg;
    rc = rc ? rc : cli_run_config_load("oracle", &a.run, 1, NULL, &cfg);
    cli_run_args_free(&a.run);
    if (rc)
        return rc;
    cli_tune_openblas();
    cli_progress bar;
    cli_progress_init(&bar, a.run.quiet);
    kvz_oracle_options opt = {a.resume, a.overwrite, a.stop_after, on_progress, &bar,
                              a.dry_run, 0};
    kvz_oracle_summary sum;
    kvz_error err = {0};
    rc = kvz_oracle_harvest(&cfg, &opt, &sum, &err);
    cli_progress_end(&bar);
    if (rc == KVZ_OK && a.dry_run)
        print_plan(&sum, &cfg);
    else if (rc == KVZ_OK)
        print_summary(&sum);
    if (rc == KVZ_OK && sum.warning[0])
        fprintf(stderr, "kvzap oracle: warning: %s\n", sum.warning);
    kvz_config_free(&cfg);
    return rc ? cli_error("oracle", err.msg) : 0;
}
