/* cmd_train: `kvzap train`: fit the Linear and MLP surrogates of every layer
 * from an oracle dataset (trainer/train.h), then render the report
 * (trainer/report.h) and print the per-layer held-out R^2. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "../trainer/report.h"
#include "../trainer/train.h"
#include "cli_forward.h"
#include "cli_progress.h"
#include "cli_run_config.h"
#include "commands.h"

static const char USAGE[] =
    "usage: kvzap train [--data D] [--output T] [--model-type linear|mlp|both] [--layers L]\n"
    "                   [--config FILE] [--set KEY=VALUE]... [--threads N] [--no-report]\n"
    "                   [--no-verify] [--device auto|cpu|cuda]\n"
    "                   [--precision float32|tf32|bfloat16] [--quiet]\n";

/* Shorthands of config keys (docs/configuration.md "Command-line flags"). */
static const cli_flag FLAGS[] = {
    {"--data", "train.dataset", NULL, "D"},
    {"--output", "train.output", NULL, "T"},
    {"--model-type", "train.model", NULL, "KIND"},
    {"--layers", "train.layers", NULL, "L"},
    {"--epochs", "train.epochs", NULL, "N"},
    {"--seed", "train.seed", NULL, "S"},
    {"--device", "model.device", NULL, "D"},
    {"--precision", "train.gpu_precision", NULL, "P"},
    {"--no-verify", "train.verify_dataset", "false", NULL},
    {NULL, NULL, NULL, NULL},
};

static const char HELP_HEAD[] =
    "\nReads train.dataset (an oracle .h5 from `kvzap oracle`) one layer at a time, fits\n"
    "the Linear surrogate (exact float64 ridge) and the MLP surrogate (AdamW recipe of\n"
    "the reference) on the training documents, measures both on the held-out test\n"
    "documents, and writes train.output: linear/ and mlp/ (kvpress layout, float32),\n"
    "metrics.json/csv, train_log.csv, predictions, compression.csv and report/.\n\n"
    "Flags (each is the --set it names; flags and --set apply in command-line\n"
    "order after --config, and the last one given for a key wins):\n";

static const char HELP[] =
    "\nOther options:\n"
    "  --config FILE     YAML run configuration (configs/train/, docs/configuration.md)\n"
    "  --set KEY=VALUE   override one key, e.g. --set train.layers=0,1,2\n"
    "  --threads N       CPU threads (same as --set model.threads=N)\n"
    "  --no-report       skip the plots (kvzap report renders them later)\n"
    "  --quiet           no progress output\n\n"
    "--no-verify skips the dataset's integrity check (one sequential read of the file).\n"
    "--device: auto (CUDA when a device is visible), cpu or cuda: where the MLP trains\n"
    "and the ridge sums are accumulated when the dataset has none (docs/gpu-trainer.md).\n"
    "--precision: GPU GEMM precision: float32 (strict, default), tf32 or bfloat16 (bf16\n"
    "inputs, fp32 accumulation).\n"
    "Output files: docs/training-output.md. Export for kvpress: kvzap export.\n";

typedef struct train_args {
    cli_run_args run; /* --config, --set, --threads, --quiet and FLAGS */
    int no_report;
} train_args;

static int parse_one(int argc, char **argv, int *i, train_args *a)
{
    int rc = cli_run_option("train", USAGE, argc, argv, i, &a->run);
    if (rc >= 0)
        return rc;
    if (!strcmp(argv[*i], "--no-report"))
        a->no_report = 1;
    else
        return cli_usage_error("train", "unexpected argument", USAGE);
    return 0;
}

typedef struct train_view {
    cli_progress bar;
    size_t n_rows;
    struct {
        size_t layer;
        double linear_r2, mlp_r2;
    } rows[4096];
} train_view;

static void on_progress(const kvz_train_progress *p, void *user)
{
    train_view *v = user;
    char extra[128];
    if (p->phase == KVZ_TRAIN_LAYER_DONE && v->n_rows < 4096) {
        v->rows[v->n_rows].layer = p->layer;
        v->rows[v->n_rows].linear_r2 = p->linear_r2;
        v->rows[v->n_rows].mlp_r2 = p->mlp_r2;
        v->n_rows++;
    }
    if (p->phase == KVZ_TRAIN_EPOCH)
        snprintf(extra, sizeof extra, "layer %zu epoch %zu/%zu  train %.4f  val %.4f", p->layer,
                 p->epoch, p->epochs, p->train_loss, p->val_loss);
    else if (p->phase == KVZ_TRAIN_LAYER_DONE)
        snprintf(extra, sizeof extra, "layer %zu done  R2 linear %.3f  mlp %.3f", p->layer,
                 p->linear_r2, p->mlp_r2);
    else if (p->phase == KVZ_TRAIN_WRITING)
        snprintf(extra, sizeof extra, "writing outputs");
    else
        snprintf(extra, sizeof extra, "layer %zu: %s", p->layer,
                 p->phase == KVZ_TRAIN_LOADING ? "reading" : "ridge fitted");
    double rate = p->elapsed_s > 0 ? (double)p->layers_done / p->elapsed_s : 0;
    cli_progress_update(&v->bar, p->layers_done, p->layers_total, "layers", rate * 60.0,
                        "layers/min", p->elapsed_s, extra,
                        p->phase == KVZ_TRAIN_LAYER_DONE || p->phase == KVZ_TRAIN_WRITING);
}

static void print_r2_table(const train_view *v)
{
    printf("layer  R2 linear  R2 mlp   (held-out test documents)\n");
    for (size_t i = 0; i < v->n_rows; i++)
        printf("%5zu  %9.4f  %6.4f\n", v->rows[i].layer, v->rows[i].linear_r2, v->rows[i].mlp_r2);
}

/* Renders the report and prints its summary; without it, our own table.
 * A report that cannot be written fails the command (exit 1), after saying
 * that the training outputs themselves are complete. */
static int finish_report(const char *out_dir, const train_view *v, int no_report)
{
    if (no_report) {
        print_r2_table(v);
        return 0;
    }
    kvz_report_summary sum;
    kvz_error err = {0};
    if (kvz_report_render(out_dir, NULL, &sum, &err) != KVZ_OK) {
        print_r2_table(v);
        fprintf(stderr,
                "kvzap train: the report could not be written: %s\n"
                "kvzap train: the training outputs in %s are complete (metrics.json); "
                "%s/report was not written: fix the cause and run `kvzap report %s`, or "
                "pass --no-report\n",
                err.msg, out_dir, out_dir, out_dir);
        return 1;
    }
    kvz_report_summary_print(&sum, stdout);
    printf("report: %s\n", sum.index_html);
    kvz_report_summary_free(&sum);
    return 0;
}

int cmd_train(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("%s%s", USAGE, HELP_HEAD);
        cli_print_flags(FLAGS);
        printf("%s", HELP);
        return 0;
    }
    train_args a = {0};
    int rc = cli_run_args_init("train", argc, &a.run);
    a.run.flags = FLAGS;
    for (int i = 1; rc == 0 && i < argc; i++)
        rc = parse_one(argc, argv, &i, &a);
    kvz_run_config cfg;
    static const char *const required[] = {"train.dataset", "train.output", NULL};
    rc = rc ? rc : cli_run_config_load("train", &a.run, 0, required, &cfg);
    cli_run_args_free(&a.run);
    if (rc)
        return rc;
    cli_tune_openblas();
    train_view *v = calloc(1, sizeof *v);
    if (!v) {
        kvz_config_free(&cfg);
        return cli_error("train", "out of memory");
    }
    cli_progress_init(&v->bar, a.run.quiet);
    v->bar.period_s = 5.0;
    kvz_train_summary sum;
    kvz_error err = {0};
    int report_failed = 0;
    rc = kvz_train_run(&cfg, on_progress, v, &sum, &err);
    cli_progress_end(&v->bar);
    if (rc == KVZ_OK) {
        printf("trained %zu layers on %zu samples (%zu held out) in %.1f s -> %s\n",
               sum.n_layers_trained, sum.n_train / (sum.n_layers_trained ? sum.n_layers_trained : 1),
               sum.n_test / (sum.n_layers_trained ? sum.n_layers_trained : 1), sum.seconds,
               sum.output);
        if (sum.n_skipped_nonfinite)
            printf("skipped %zu samples with NaN/Inf values (train.non_finite: skip)\n",
                   sum.n_skipped_nonfinite);
        report_failed = finish_report(sum.output, v, a.no_report);
    }
    free(v);
    kvz_config_free(&cfg);
    return rc ? cli_error("train", err.msg) : report_failed;
}
