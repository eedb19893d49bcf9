/* train: the `kvzap train` job as a library call. Reads an oracle dataset
 * (kvzip_oracle/oracle_store.h) one layer at a time, fits the Linear
 * surrogate (exact float64 ridge, from the dataset's ridge sums when present)
 * and the MLP surrogate (trainer/mlp.h) on the training split, measures both
 * on the held-out test split (trainer/metrics.h), and writes the directory
 * described in docs/training-output.md. Memory: one layer's samples
 * (N x (D + Hkv) floats) plus the surrogates. */
#ifndef KVZ_TRAIN_H
#define KVZ_TRAIN_H

#include <stddef.h>

#include "../common/config.h"
#include "../common/kvz_error.h"

typedef enum kvz_train_phase {
    KVZ_TRAIN_LOADING = 0, /* reading a layer */
    KVZ_TRAIN_LINEAR,      /* ridge fit of a layer done */
    KVZ_TRAIN_EPOCH,       /* one MLP epoch done */
    KVZ_TRAIN_LAYER_DONE,  /* metrics of a layer done */
    KVZ_TRAIN_WRITING
} kvz_train_phase;

typedef struct kvz_train_progress {
    kvz_train_phase phase;
    size_t layer, layers_done, layers_total;
    size_t epoch, epochs;
    double train_loss, val_loss;
    double linear_r2, mlp_r2; /* LAYER_DONE: held-out R^2 (NaN when not trained) */
    double elapsed_s;
} kvz_train_progress;

typedef void (*kvz_train_progress_fn)(const kvz_train_progress *p, void *user);

typedef struct kvz_train_summary {
    char output[4096];
    size_t n_layers_trained, n_train, n_test, n_skipped_nonfinite;
    double seconds;
} kvz_train_summary;

/* cfg: the train section (and model.threads). Errors name the dataset or
 * output and the problem: incomplete or other-version datasets, layers out
 * of range, no test documents (metrics need them), NaN/Inf samples with
 * train.non_finite: error, an MLP requested from a dataset without hidden
 * states, an unwritable output. */
int kvz_train_run(const kvz_run_config *cfg, kvz_train_progress_fn progress, void *user,
                  kvz_train_summary *summary_or_NULL, kvz_error *err);

#endif
