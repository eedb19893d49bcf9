/* cmd_score: `kvzap score`: the runtime API on the command line. Loads an
 * exported surrogate (kvpress directory or GGUF), predicts the log-scores of
 * one layer's hidden states from an oracle dataset, writes them as CSV and
 * reports R^2 against the oracle's targets. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"
#include "../kvzip_oracle/oracle_store.h"
#include "../trainer/export.h"
#include "../trainer/metrics.h"
#include "cli_forward.h"
#include "commands.h"

static const char USAGE[] =
    "usage: kvzap score SURROGATE DATASET --layer L [--split all|train|test] [--out FILE]\n"
    "                   [--no-verify]\n";

static const char HELP[] =
    "\nSURROGATE: an export (kvzap export / kvzap train's linear/ or mlp/), DATASET: an\n"
    "oracle .h5 with hidden states. Writes one CSV line per sample of the split:\n"
    "  sample,doc_index,position,split,pred_0..pred_{Hkv-1}\n"
    "to FILE (atomically) or stdout, and prints MSE / R^2 / Pearson r against the\n"
    "oracle's log-scores on stderr. --split defaults to test (the held-out documents).\n"
    "DATASET is checked against its integrity seal first (one read of the file);\n"
    "--no-verify skips that.\n";

typedef struct score_args {
    const char *surrogate, *dataset, *out;
    size_t layer;
    int have_layer, split; /* split: -1 all, 0 train, 1 test */
    int no_verify;
} score_args;

static int parse_args(int argc, char **argv, score_args *a)
{
    a->split = 1;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(arg, "--layer") && has_value) {
            char *end;
            unsigned long long v = strtoull(argv[++i], &end, 10);
            if (*end || argv[i][0] == '-' || !argv[i][0])
                return cli_usage_error("score", "--layer needs a layer index", USAGE);
            a->layer = (size_t)v;
            a->have_layer = 1;
        } else if (!strcmp(arg, "--split") && has_value) {
            const char *s = argv[++i];
            a->split = !strcmp(s, "all") ? -1 : !strcmp(s, "train") ? 0 : !strcmp(s, "test") ? 1 : 2;
            if (a->split == 2)
                return cli_usage_error("score", "--split is all, train or test", USAGE);
        } else if (!strcmp(arg, "--out") && has_value) {
            a->out = argv[++i];
        } else if (!strcmp(arg, "--no-verify")) {
            a->no_verify = 1;
        } else if (arg[0] != '-' && !a->surrogate) {
            a->surrogate = arg;
        } else if (arg[0] != '-' && !a->dataset) {
            a->dataset = arg;
        } else {
            return cli_usage_error("score", "unexpected argument", USAGE);
        }
    }
    if (!a->surrogate || !a->dataset || !a->have_layer)
        return cli_usage_error("score", "SURROGATE, DATASET and --layer are required", USAGE);
    return 0;
}

typedef struct score_job {
    kvz_surrogate *s;
    kvz_oracle_file *f;
    const kvz_oracle_file_info *in;
    int32_t *doc, *pos;
    uint8_t *split;
    float *x, *y, *pred; /* selected rows only: [n, D], [n, Hkv], [n, Hkv] */
    size_t *rows, n;
} score_job;

static int check_shapes(const score_args *a, score_job *j, kvz_error *err)
{
    if (!j->in->store_hidden)
        return kvz_fail(err, KVZ_EINVAL, "%s: the dataset has no hidden states", a->dataset);
    if (a->layer >= j->in->n_layers || a->layer >= j->s->n_layers)
        return kvz_fail(err, KVZ_EINVAL,
                        "--layer %zu is out of range: %s has %zu layers, %s has %zu", a->layer,
                        a->dataset, j->in->n_layers, a->surrogate, j->s->n_layers);
    if (j->s->d_in != j->in->d_model || j->s->d_out != j->in->n_kv_heads)
        return kvz_fail(err, KVZ_EINVAL,
                        "%s: surrogate shape %zu -> %zu does not match the dataset (%zu -> %zu)",
                        a->surrogate, j->s->d_in, j->s->d_out, j->in->d_model, j->in->n_kv_heads);
    return KVZ_OK;
}

/* Reads the selected rows of the layer (row by row into packed buffers). */
static int load_rows(const score_args *a, score_job *j, kvz_error *err)
{
    size_t N = j->in->n_samples, D = j->in->d_model, H = j->in->n_kv_heads;
    j->doc = malloc(N * sizeof *j->doc);
    j->pos = malloc(N * sizeof *j->pos);
    j->split = malloc(N);
    j->rows = malloc(N * sizeof *j->rows);
    j->x = malloc(N * D * sizeof *j->x);
    j->y = malloc(N * H * sizeof *j->y);
    j->pred = malloc(N * H * sizeof *j->pred);
    if (!j->doc || !j->pos || !j->split || !j->rows || !j->x || !j->y || !j->pred)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory");
    int rc = kvz_oracle_file_read_samples(j->f, 0, N, NULL, j->doc, j->pos, j->split, err);
    rc = rc ? rc : kvz_oracle_file_read_hidden(j->f, a->layer, 0, N, j->x, err);
    rc = rc ? rc : kvz_oracle_file_read_scores(j->f, a->layer, 0, N, j->y, err);
    for (size_t r = 0; rc == KVZ_OK && r < N; r++) {
        if (a->split >= 0 && j->split[r] != a->split)
            continue;
        memmove(j->x + j->n * D, j->x + r * D, D * sizeof(float));
        memmove(j->y + j->n * H, j->y + r * H, H * sizeof(float));
        j->rows[j->n++] = r;
    }
    if (rc == KVZ_OK && j->n == 0)
        rc = kvz_fail(err, KVZ_EINVAL, "%s: no samples in the requested split", a->dataset);
    return rc;
}

static int write_csv(const score_args *a, const score_job *j, kvz_error *err)
{
    kvz_atomic_file af = {0};
    FILE *out = stdout;
    if (a->out) {
        int rc = kvz_atomic_open(a->out, &af, err);
        if (rc)
            return rc;
        out = af.fp;
    }
    size_t H = j->in->n_kv_heads;
    fprintf(out, "sample,doc_index,position,split");
    for (size_t h = 0; h < H; h++)
        fprintf(out, ",pred_%zu", h);
    fputc('\n', out);
    for (size_t i = 0; i < j->n; i++) {
        size_t r = j->rows[i];
        fprintf(out, "%zu,%d,%d,%s", r, j->doc[r], j->pos[r], j->split[r] ? "test" : "train");
        for (size_t h = 0; h < H; h++)
            fprintf(out, ",%.9g", j->pred[i * H + h]);
        fputc('\n', out);
    }
    return a->out ? kvz_atomic_commit(&af, err) : KVZ_OK;
}

static void free_job(score_job *j)
{
    kvz_surrogate_free(j->s);
    kvz_oracle_file_close(j->f);
    free(j->doc);
    free(j->pos);
    free(j->split);
    free(j->rows);
    free(j->x);
    free(j->y);
    free(j->pred);
}

int cmd_score(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("%s%s", USAGE, HELP);
        return 0;
    }
    score_args a = {0};
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    score_job j = {0};
    kvz_error err = {0};
    kvz_metrics m = {0};
    rc = kvz_export_load(a.surrogate, &j.s, &err);
    rc = rc ? rc : kvz_oracle_file_open_ex(a.dataset, !a.no_verify, &j.f, &err);
    if (rc == KVZ_OK)
        j.in = kvz_oracle_file_get_info(j.f);
    rc = rc ? rc : check_shapes(&a, &j, &err);
    rc = rc ? rc : load_rows(&a, &j, &err);
    rc = rc ? rc : kvz_surrogate_predict(j.s, a.layer, j.x, j.n, j.pred, NULL, &err);
    rc = rc ? rc : write_csv(&a, &j, &err);
    if (rc == KVZ_OK && kvz_metrics_compute(j.pred, j.y, j.n, j.in->n_kv_heads, &m, NULL) == KVZ_OK)
        fprintf(stderr, "layer %zu, %zu samples: MSE %.4f  R2 %.4f  Pearson r %.4f\n", a.layer, j.n,
                m.overall.mse, m.overall.r2, m.overall.pearson);
    kvz_metrics_free(&m);
    free_job(&j);
    return rc ? cli_error("score", err.msg) : 0;
}
