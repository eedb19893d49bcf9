/* train_internal: state shared by train.c (the per-layer loop) and
 * train_output.c (metrics.json/csv, train_log.csv, predictions,
 * compression.csv, exports). Private to trainer/. */
#ifndef KVZ_TRAIN_INTERNAL_H
#define KVZ_TRAIN_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_file.h"
#include "../kvzip_oracle/oracle_store.h"
#include "../model/kvz_json.h"
#include "../ops/backend.h"
#include "layer_stream.h"
#include "metrics.h"
#include "surrogate.h"
#include "train.h"

enum { TRAIN_N_TAU = 81 };            /* tau = -20 .. 0 step 0.25 */
#define TRAIN_TAU(k) (-20.0 + 0.25 * (double)(k))
enum { TRAIN_MAX_PREDICTION_PAIRS = 20000 };

/* A layer's training rows on the device (the MLP trains there, and the
 * ridge falls back to its sums there). */
typedef struct device_rows {
    kvz_buf x, y;  /* [cap, D] (fp16 when the dataset stores fp16: lossless), [cap, Hkv] */
    kvz_buf stage; /* fp32 [block, D]: a block on its way to fp16 */
    size_t n, cap;
    int ready;     /* allocated (the layers train on the device) */
} device_rows;

/* One layer's samples, split by document into train and test. */
typedef struct layer_data {
    size_t n_train, n_test, n_skipped;
    float *train_x, *train_y; /* [n_train, D], [n_train, Hkv] (x NULL without hidden) */
    float *test_x, *test_y;   /* [n_test, D], [n_test, Hkv] */
} layer_data;

typedef struct trainer {
    const kvz_run_config *cfg;
    kvz_train_progress_fn progress;
    void *user;
    double t0;
    kvz_oracle_file *file;
    const kvz_oracle_file_info *info;
    kvz_layer_stream *stream; /* the layer reader (all HDF5 reads while it runs) */
    kvz_backend *device;      /* model.device resolved to cuda (NULL: the cpu): the MLP and
                                 the fallback ridge run there */
    kvz_gemm_precision precision; /* train.gpu_precision */
    device_rows rows;         /* the current layer's training rows on the device */
    uint8_t *split;          /* [N] 0 train, 1 test */
    size_t *layers, n_sel;   /* layers to train, ascending */
    size_t d_hidden;         /* MLP hidden width */
    int want_linear, want_mlp;
    kvz_surrogate *linear, *mlp;
    json_t *metrics_layers;  /* array of per-layer objects (metrics.json) */
    kvz_json_mark json_mark; /* jansson's setters drop values when out of memory: checked
                              * before anything built from them is written */
    char *log_csv;           /* train_log.csv rows */
    size_t log_len, log_cap;
    double pruned[3][TRAIN_N_TAU], pairs; /* compression counts: oracle, linear, mlp */
    kvz_outdir out;           /* train.output, built whole under out.tmp_path */
    char *out_dir;            /* = out.tmp_path while training: where files go */
    kvz_train_summary sum;
} trainer;

/* train_output.c. The output directory is complete as a whole or absent:
 * train_out_prepare refuses an existing train.output that holds anything
 * kvzap train does not write, and starts building "<output>.tmp.<pid>";
 * train_out_finish writes the final files (metrics.json last) and swaps the
 * directory into place; train_out_abort (any failure) removes the
 * temporary, leaving an older output untouched. */
int train_out_prepare(trainer *t, kvz_error *err);
void train_out_abort(trainer *t);
int train_out_log_epoch(trainer *t, size_t layer, size_t epoch, double lr, double train_loss,
                        double val_loss, double seconds, kvz_error *err);
/* Records a layer's metrics (pred_* NULL when that model was not trained). */
int train_out_layer(trainer *t, size_t layer, const layer_data *d, const float *pred_linear,
                    const float *pred_mlp, json_t *layer_obj, kvz_error *err);
int train_out_predictions(trainer *t, size_t layer, const layer_data *d,
                          const float *pred_linear, const float *pred_mlp, kvz_error *err);
int train_out_finish(trainer *t, kvz_error *err);
/* Metrics of one model as a JSON object (keys of docs/training-output.md). */
json_t *train_metrics_json(const kvz_metrics *m);

#endif
