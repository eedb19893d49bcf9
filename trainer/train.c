/* train: the per-layer training loop behind `kvzap train` (see train.h).
 * Reads top to bottom: open the dataset, choose layers, then per layer read
 * its samples split by document, fit Linear (ridge) and MLP, measure both on
 * the test split, record; finally write everything (train_output.c). */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/kvz_file.h"
#include "../ops/ops.h"
#include "mlp.h"
#include "ridge.h"
#include "train_internal.h"

enum { READ_BLOCK_ROWS = 4096 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void report(trainer *t, kvz_train_progress *p)
{
    p->elapsed_s = now_s() - t->t0;
    p->layers_total = t->n_sel;
    if (t->progress)
        t->progress(p, t->user);
}

/* ---------- setup ---------- */

/* A missing dataset whose "<path>.parts" exists: the oracle run is unfinished. */
static void hint_unfinished_run(const char *path, int rc, kvz_error *err)
{
    size_t n = strlen(path);
    char *parts = malloc(n + sizeof ".parts");
    if (parts && err) {
        memcpy(parts, path, n);
        memcpy(parts + n, ".parts", sizeof ".parts");
        if (kvz_path_is_dir(parts)) {
            char msg[KVZ_ERRMSG_MAX];
            snprintf(msg, sizeof msg, "%s", err->msg);
            kvz_fail(err, rc, "%s (the oracle run is unfinished: %s exists; continue it with "
                     "kvzap oracle --resume)", msg, parts);
        }
    }
    free(parts);
}

static int open_dataset(trainer *t, kvz_error *err)
{
    const char *path = t->cfg->train.dataset;
    int rc = kvz_oracle_file_open_ex(path, t->cfg->train.verify_dataset, &t->file, err);
    if (rc && access(path, F_OK) != 0)
        hint_unfinished_run(path, rc, err);
    if (rc)
        return rc;
    t->info = kvz_oracle_file_get_info(t->file);
    size_t N = t->info->n_samples;
    if (N == 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: the dataset has no samples", t->cfg->train.dataset);
    t->split = malloc(N);
    if (!t->split)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory");
    return kvz_oracle_file_read_samples(t->file, 0, N, NULL, NULL, NULL, t->split, err);
}

static int choose_layers(trainer *t, kvz_error *err)
{
    const kvz_layer_list *ll = &t->cfg->train.layers;
    size_t L = t->info->n_layers;
    t->n_sel = ll->all ? L : ll->n;
    t->layers = malloc((t->n_sel ? t->n_sel : 1) * sizeof *t->layers);
    if (!t->layers)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory");
    for (size_t i = 0; i < t->n_sel; i++) {
        int64_t l = ll->all ? (int64_t)i : ll->ids[i];
        if (l < 0 || (size_t)l >= L)
            return kvz_fail(err, KVZ_EINVAL,
                            "%s: train.layers: layer %lld is out of range (the dataset's model "
                            "has %zu layers, 0..%zu)",
                            t->cfg->train.dataset, (long long)l, L, L - 1);
        t->layers[i] = (size_t)l;
    }
    for (size_t i = 1; i < t->n_sel; i++) /* ascending (insertion sort; n is small) */
        for (size_t j = i; j > 0 && t->layers[j] < t->layers[j - 1]; j--) {
            size_t tmp = t->layers[j];
            t->layers[j] = t->layers[j - 1];
            t->layers[j - 1] = tmp;
        }
    return KVZ_OK;
}

static int create_models(trainer *t, kvz_error *err)
{
    int model = t->cfg->train.model;
    const kvz_oracle_file_info *in = t->info;
    t->want_linear = model == KVZ_SURROGATE_LINEAR || model == KVZ_SURROGATE_BOTH;
    t->want_mlp = model == KVZ_SURROGATE_MLP || model == KVZ_SURROGATE_BOTH;
    if (t->want_mlp && !in->store_hidden)
        return kvz_fail(err, KVZ_EINVAL,
                        "%s: the dataset has no hidden states (oracle.store_hidden was false), "
                        "so only the Linear surrogate can be trained (train.model: linear)",
                        t->cfg->train.dataset);
    if (!in->store_hidden && !in->ridge_stats)
        return kvz_fail(err, KVZ_EINVAL,
                        "%s: the dataset has neither hidden states nor ridge statistics; "
                        "nothing can be trained from it",
                        t->cfg->train.dataset);
    t->d_hidden = t->cfg->train.mlp_hidden ? t->cfg->train.mlp_hidden : in->d_model / 8;
    if (t->d_hidden == 0)
        t->d_hidden = 1;
    int rc = KVZ_OK;
    if (t->want_linear)
        rc = kvz_surrogate_create(KVZ_SURROGATE_KIND_LINEAR, in->n_layers, in->d_model, 0,
                                  in->n_kv_heads, &t->linear, err);
    if (rc == KVZ_OK && t->want_mlp)
        rc = kvz_surrogate_create(KVZ_SURROGATE_KIND_MLP, in->n_layers, in->d_model, t->d_hidden,
                                  in->n_kv_heads, &t->mlp, err);
    return rc;
}

/* ---------- reading one layer ---------- */

static void free_layer(layer_data *d)
{
    free(d->train_x);
    free(d->train_y);
    free(d->test_x);
    free(d->test_y);
    memset(d, 0, sizeof *d);
}

static int alloc_layer(trainer *t, layer_data *d, int with_x, kvz_error *err)
{
    size_t N = t->info->n_samples, D = t->info->d_model, H = t->info->n_kv_heads;
    size_t n_test = 0;
    for (size_t r = 0; r < N; r++)
        n_test += t->split[r] != 0;
    size_t n_train = N - n_test;
    d->train_y = malloc((n_train ? n_train : 1) * H * sizeof(float));
    d->test_y = malloc((n_test ? n_test : 1) * H * sizeof(float));
    if (with_x) {
        d->train_x = malloc((n_train ? n_train : 1) * D * sizeof(float));
        d->test_x = malloc((n_test ? n_test : 1) * D * sizeof(float));
    }
    if (!d->train_y || !d->test_y || (with_x && (!d->train_x || !d->test_x)))
        return kvz_fail(err, KVZ_ENOMEM, "out of memory (one layer: %zu samples x %zu dims)", N, D);
    return KVZ_OK;
}

/* Uploads a block's training rows after those the device holds (fp16
 * rows: converted on the device); done before the block goes back to the
 * reader. */
static int rows_append(trainer *t, const kvz_layer_block *b, kvz_error *err)
{
    device_rows *r = &t->rows;
    size_t D = t->info->d_model, H = t->info->n_kv_heads, k = b->n_train;
    if (r->n + k > r->cap)
        return kvz_fail(err, KVZ_EINVAL, "layer reader: %zu training rows, room for %zu",
                        r->n + k, r->cap);
    int rc = kvz_backend_upload(t->device, (float *)r->y.data + r->n * H, b->train_y,
                                k * H * sizeof(float), err);
    if (rc == KVZ_OK && r->x.dtype == KVZ_F32)
        rc = kvz_backend_upload(t->device, (float *)r->x.data + r->n * D, b->train_x,
                                k * D * sizeof(float), err);
    else if (rc == KVZ_OK) {
        kvz_buf dst = kvz_buf_at(r->x, r->n * D), src = r->stage;
        dst.numel = src.numel = k * D;
        rc = kvz_backend_upload(t->device, r->stage.data, b->train_x, k * D * sizeof(float), err);
        rc = rc ? rc : kvz_op_convert(t->device, dst, src, err);
    }
    if (rc == KVZ_OK)
        r->n += k;
    return rc;
}

/* Appends a block's routed rows to the layer (and its training rows to the
 * device when the layer trains there). */
static int take_block(trainer *t, layer_data *d, const kvz_layer_block *b, kvz_error *err)
{
    size_t D = t->info->d_model, H = t->info->n_kv_heads;
    if (b->train_x)
        memcpy(d->train_x + d->n_train * D, b->train_x, b->n_train * D * sizeof(float));
    memcpy(d->train_y + d->n_train * H, b->train_y, b->n_train * H * sizeof(float));
    if (b->test_x)
        memcpy(d->test_x + d->n_test * D, b->test_x, b->n_test * D * sizeof(float));
    memcpy(d->test_y + d->n_test * H, b->test_y, b->n_test * H * sizeof(float));
    d->n_train += b->n_train;
    d->n_test += b->n_test;
    d->n_skipped += b->n_skipped;
    return t->rows.ready && b->n_train ? rows_append(t, b, err) : KVZ_OK;
}

/* Device room for the layer's training rows (fp16 when the dataset stores
 * fp16 hidden states: lossless), allocated for the first layer (every
 * layer has the same split). When the rows and the MLP's own needs plus a
 * 256 MiB margin do not fit the free device memory: KVZ_ENOMEM naming the
 * numbers, or under model.device auto the layers train on the cpu. */
static int prepare_rows(trainer *t, kvz_error *err)
{
    device_rows *r = &t->rows;
    if (!t->device || !t->info->store_hidden || !t->want_mlp)
        return KVZ_OK;
    if (r->ready) {
        r->n = 0;
        return KVZ_OK;
    }
    size_t N = t->info->n_samples, n_train = 0, D = t->info->d_model, Dh = t->d_hidden;
    for (size_t i = 0; i < N; i++)
        n_train += t->split[i] == 0;
    size_t B = t->cfg->train.batch_size, H = t->info->n_kv_heads, cap = n_train ? n_train : 1;
    int fp16 = t->info->hidden_dtype == KVZ_HIDDEN_FLOAT16;
    size_t rows_bytes = cap * (D * (fp16 ? 2 : 4) + H * 4) + (fp16 ? READ_BLOCK_ROWS * D * 4 : 0);
    size_t extra = (4 * (Dh * D + Dh + H * Dh + H) + B * (4 * Dh + 3 * H + D)) * sizeof(float) +
                   2 * n_train * sizeof(int64_t) + ((size_t)256 << 20);
    size_t free_b = 0, total_b = 0;
    int rc = kvz_backend_memory(t->device, &free_b, &total_b, err);
    if (rc == KVZ_OK && rows_bytes + extra > free_b)
        rc = kvz_fail(err, KVZ_ENOMEM,
                      "%s: the layer's %zu training rows need %zu bytes on the device (with the "
                      "MLP and a 256 MiB margin %zu) but only %zu of %zu are free",
                      kvz_backend_name(t->device), n_train, rows_bytes, rows_bytes + extra,
                      free_b, total_b);
    rc = rc ? rc : kvz_backend_alloc(t->device, fp16 ? KVZ_F16 : KVZ_F32, cap * D,
                                     "the layer's training x", &r->x, err);
    rc = rc ? rc : kvz_backend_alloc(t->device, KVZ_F32, cap * H, "the layer's training y",
                                     &r->y, err);
    if (rc == KVZ_OK && fp16)
        rc = kvz_backend_alloc(t->device, KVZ_F32, READ_BLOCK_ROWS * D, "a block of x",
                               &r->stage, err);
    if (rc == KVZ_OK) {
        r->cap = cap;
        r->n = 0;
        r->ready = 1;
        return KVZ_OK;
    }
    kvz_backend_free(t->device, &r->x);
    kvz_backend_free(t->device, &r->y);
    kvz_backend_free(t->device, &r->stage);
    if (rc == KVZ_ENOMEM && t->cfg->model.device == KVZ_DEVICE_AUTO) {
        kvz_backend_close(t->device); /* auto: a layer too big for the device trains on the cpu */
        t->device = NULL;
        return KVZ_OK;
    }
    return rc;
}

static int read_layer(trainer *t, size_t layer, layer_data *d, kvz_error *err)
{
    int rc = alloc_layer(t, d, t->info->store_hidden, err);
    rc = rc ? rc : prepare_rows(t, err);
    for (int last = 0; rc == KVZ_OK && !last;) {
        kvz_layer_block b;
        rc = kvz_layer_stream_next(t->stream, &b, err);
        if (rc == KVZ_OK && b.layer != layer)
            rc = kvz_fail(err, KVZ_EINVAL, "layer reader: got layer %zu, expected %zu", b.layer,
                          layer);
        rc = rc ? rc : take_block(t, d, &b, err);
        last = rc == KVZ_OK && b.last_of_layer;
        kvz_layer_stream_release(t->stream);
    }
    return rc;
}

/* ---------- fitting ---------- */

static int fit_linear(trainer *t, size_t layer, const layer_data *d, kvz_error *err)
{
    kvz_surrogate_layer p = kvz_surrogate_layer_at(t->linear, layer);
    size_t D = t->info->d_model, H = t->info->n_kv_heads;
    double alpha = t->cfg->train.ridge_alpha;
    if (t->info->ridge_stats && d->n_skipped == 0) { /* exact sums of the fp32 states */
        double *buf = malloc((D * D + D * H + D + 2 * H) * sizeof(double));
        if (!buf)
            return kvz_fail(err, KVZ_ENOMEM, "out of memory");
        kvz_ridge_stats st = {D, H, buf, buf + D * D, buf + D * D + D * H,
                              buf + D * D + D * H + D, buf + D * D + D * H + D + H, 0};
        int rc = kvz_layer_stream_read_ridge(t->stream, layer, buf, buf + D * D,
                                             buf + D * D + D * H, buf + D * D + D * H + D,
                                             buf + D * D + D * H + D + H, &st.count, err);
        rc = rc ? rc : kvz_ridge_solve(&st, alpha, p.w1, p.b1, err);
        free(buf);
        return rc;
    }
    if (!d->train_x)
        return kvz_fail(err, KVZ_EINVAL, "layer %zu: no hidden states to fit the ridge from", layer);
    if (t->rows.ready) /* the training rows are on the device already: float64 sums there */
        return kvz_ridge_fit_rows(t->device, t->rows.x, t->rows.y, t->rows.n, D, H, alpha, p.w1,
                                  p.b1, err);
    kvz_buf x = {d->train_x, KVZ_F32, d->n_train * D}, y = {d->train_y, KVZ_F32, d->n_train * H};
    return kvz_ridge_fit_rows(kvz_backend_host(), x, y, d->n_train, D, H, alpha, p.w1, p.b1, err);
}

typedef struct epoch_ctx {
    trainer *t;
    size_t layer;
    double t_start;
    int rc;
    kvz_error *err;
} epoch_ctx;

static int on_epoch(void *ctx, size_t epoch, size_t epochs, double train_loss, double val_loss,
                    double lr)
{
    epoch_ctx *c = ctx;
    c->rc = train_out_log_epoch(c->t, c->layer, epoch, lr, train_loss, val_loss,
                                now_s() - c->t_start, c->err);
    kvz_train_progress p = {KVZ_TRAIN_EPOCH, c->layer, 0, 0, epoch, epochs, train_loss,
                            val_loss, NAN, NAN, 0};
    report(c->t, &p);
    return c->rc != KVZ_OK;
}

static int fit_mlp(trainer *t, size_t layer, const layer_data *d, json_t *obj, kvz_error *err)
{
    const kvz_run_config *c = t->cfg;
    kvz_mlp_shape shape = {t->info->d_model, t->d_hidden, t->info->n_kv_heads};
    kvz_mlp_options o;
    kvz_mlp_options_default(&o);
    o.epochs = c->train.epochs;
    o.batch_size = c->train.batch_size;
    o.lr = c->train.lr;
    o.beta1 = c->train.beta1;
    o.beta2 = c->train.beta2;
    o.eps = c->train.eps;
    o.weight_decay = c->train.weight_decay;
    o.max_grad_norm = c->train.grad_clip;
    o.val_fraction = c->train.val_fraction;
    o.seed = (uint64_t)c->train.seed + 0x9E3779B97F4A7C15ull * (uint64_t)(layer + 1);
    o.init_b2_mean = c->train.mlp_init_output_bias;
    epoch_ctx ec = {t, layer, now_s(), KVZ_OK, err};
    o.progress = on_epoch;
    o.progress_ctx = &ec;
    kvz_mlp_log log = {0};
    kvz_surrogate_layer params = kvz_surrogate_layer_at(t->mlp, layer);
    int rc = t->rows.ready
                 ? kvz_mlp_train_on(t->device, shape, t->rows.x, t->rows.y, d->train_y,
                                    d->n_train, &o, t->precision, params, &log, err)
                 : kvz_mlp_train(shape, d->train_x, d->train_y, d->n_train, &o, params, &log, err);
    if (ec.rc)
        rc = ec.rc;
    if (rc == KVZ_OK && log.n_epochs > 0) {
        json_object_set_new(obj, "train_seconds", json_real(now_s() - ec.t_start));
        json_object_set_new(obj, "device", json_string(t->rows.ready ? "cuda" : "cpu"));
        if (t->rows.ready)
            json_object_set_new(obj, "gpu_precision",
                                json_string(kvz_gemm_precision_name(t->precision)));
        json_object_set_new(obj, "final_train_loss", json_real(log.train_loss[log.n_epochs - 1]));
        double v = log.val_loss[log.n_epochs - 1];
        json_object_set_new(obj, "final_val_loss", isfinite(v) ? json_real(v) : json_null());
    }
    kvz_mlp_log_free(&log);
    return rc;
}

/* ---------- one layer ---------- */

static int predict_test(const kvz_surrogate *s, size_t layer, const layer_data *d, float **out,
                        kvz_error *err)
{
    *out = malloc((d->n_test ? d->n_test : 1) * s->d_out * sizeof(float));
    if (!*out)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory");
    return kvz_surrogate_predict(s, layer, d->test_x, d->n_test, *out, NULL, err);
}

static int measure_layer(trainer *t, size_t layer, const layer_data *d, json_t *lin_obj,
                         json_t *mlp_obj, kvz_error *err)
{
    float *pl = NULL, *pm = NULL;
    int rc = KVZ_OK;
    if (t->want_linear)
        rc = predict_test(t->linear, layer, d, &pl, err);
    if (rc == KVZ_OK && t->want_mlp)
        rc = predict_test(t->mlp, layer, d, &pm, err);
    json_t *layer_obj = json_pack("{s:I, s:I, s:I, s:I}", "layer", (json_int_t)layer, "n_train",
                                  (json_int_t)d->n_train, "n_test", (json_int_t)d->n_test,
                                  "n_skipped_nonfinite", (json_int_t)d->n_skipped);
    if (lin_obj)
        json_object_set(layer_obj, "linear", lin_obj);
    if (mlp_obj)
        json_object_set(layer_obj, "mlp", mlp_obj);
    rc = rc ? rc : train_out_layer(t, layer, d, pl, pm, layer_obj, err);
    rc = rc ? rc : train_out_predictions(t, layer, d, pl, pm, err);
    json_decref(layer_obj);
    free(pl);
    free(pm);
    return rc;
}

/* Prefixes a fit's error ("ridge: ...", "mlp: ...") with the dataset and layer. */
static void name_layer(const trainer *t, size_t layer, int rc, kvz_error *err)
{
    const char *path = t->cfg->train.dataset;
    if (!err || strncmp(err->msg, path, strlen(path)) == 0) /* already named */
        return;
    char msg[KVZ_ERRMSG_MAX];
    snprintf(msg, sizeof msg, "%s", err->msg);
    kvz_fail(err, rc, "%s: layer %zu: %s", path, layer, msg);
}

static int train_layer(trainer *t, size_t idx, kvz_error *err)
{
    size_t layer = t->layers[idx];
    kvz_train_progress p = {KVZ_TRAIN_LOADING, layer, idx, 0, 0, 0, NAN, NAN, NAN, NAN, 0};
    report(t, &p);
    layer_data d = {0};
    json_t *lin = t->want_linear ? json_object() : NULL, *mlp = t->want_mlp ? json_object() : NULL;
    int rc = read_layer(t, layer, &d, err);
    if (rc == KVZ_OK && d.n_train == 0)
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: layer %zu has no training samples",
                      t->cfg->train.dataset, layer);
    if (rc == KVZ_OK && d.n_test == 0 && t->info->store_hidden)
        rc = kvz_fail(err, KVZ_EFORMAT,
                      "%s: no test-split samples (held-out metrics need test documents; set "
                      "oracle.test_docs_per_subset >= 1)",
                      t->cfg->train.dataset);
    double t_fit = now_s();
    int fitting = rc == KVZ_OK; /* errors from here on come from the fits */
    if (rc == KVZ_OK && t->want_linear) {
        rc = fit_linear(t, layer, &d, err);
        json_object_set_new(lin, "fit_seconds", json_real(now_s() - t_fit));
        p.phase = KVZ_TRAIN_LINEAR;
        report(t, &p);
    }
    if (rc == KVZ_OK && t->want_mlp)
        rc = fit_mlp(t, layer, &d, mlp, err);
    if (rc && fitting)
        name_layer(t, layer, rc, err);
    if (rc == KVZ_OK && t->info->store_hidden)
        rc = measure_layer(t, layer, &d, lin, mlp, err);
    if (rc == KVZ_OK) {
        t->sum.n_train += d.n_train;
        t->sum.n_test += d.n_test;
        t->sum.n_skipped_nonfinite += d.n_skipped;
        p.phase = KVZ_TRAIN_LAYER_DONE;
        p.layers_done = idx + 1;
        p.linear_r2 = lin && json_object_get(lin, "r2") ? json_real_value(json_object_get(lin, "r2")) : NAN;
        p.mlp_r2 = mlp && json_object_get(mlp, "r2") ? json_real_value(json_object_get(mlp, "r2")) : NAN;
        report(t, &p);
    }
    json_decref(lin);
    json_decref(mlp);
    free_layer(&d);
    return rc;
}

/* ---------- the job ---------- */

/* model.device: auto = cuda when this build has it and a real device is
 * visible (kvz_backend_auto_kind); cuda opens the backend or fails with its
 * message. */
static int choose_device(trainer *t, kvz_error *err)
{
    int want = t->cfg->model.device, gpu_prec = t->cfg->train.gpu_precision;
    t->precision = gpu_prec == KVZ_GPU_MATH_TF32       ? KVZ_GEMM_TF32
                   : gpu_prec == KVZ_GPU_MATH_BFLOAT16 ? KVZ_GEMM_BF16
                                                       : KVZ_GEMM_FP32;
    if (want == KVZ_DEVICE_CPU ||
        (want == KVZ_DEVICE_AUTO && kvz_backend_auto_kind() != KVZ_BACKEND_CUDA))
        return KVZ_OK;
    kvz_error why = {0};
    if (want == KVZ_DEVICE_CUDA && !kvz_backend_compiled(KVZ_BACKEND_CUDA))
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "model.device is cuda but this kvzap was built without CUDA (use "
                        "--device cpu or auto)");
    if (want == KVZ_DEVICE_CUDA && kvz_backend_device_count(KVZ_BACKEND_CUDA, &why) < 1)
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "model.device is cuda but no CUDA device is usable%s%s (use --device cpu "
                        "or auto)",
                        why.msg[0] ? ": " : "", why.msg);
    kvz_backend_options opt = {KVZ_BACKEND_CUDA, 0, 0};
    int rc = kvz_backend_open(&opt, &t->device, &why);
    if (rc == KVZ_OK || want == KVZ_DEVICE_AUTO) {
        if (rc)
            t->device = NULL;
        return KVZ_OK;
    }
    return kvz_fail(err, rc, "model.device is cuda: %s", why.msg);
}

static int start_reader(trainer *t, kvz_error *err)
{
    kvz_layer_stream_config c = {t->file, t->cfg->train.dataset, t->split, t->layers, t->n_sel,
                                 t->info->store_hidden,
                                 t->cfg->train.non_finite == KVZ_NON_FINITE_SKIP,
                                 READ_BLOCK_ROWS, t->device};
    return kvz_layer_stream_start(&c, &t->stream, err);
}

static void free_trainer(trainer *t)
{
    kvz_layer_stream_stop(t->stream); /* before the file it reads */
    if (t->device) {
        kvz_backend_free(t->device, &t->rows.x);
        kvz_backend_free(t->device, &t->rows.y);
        kvz_backend_free(t->device, &t->rows.stage);
        kvz_backend_close(t->device);
    }
    kvz_oracle_file_close(t->file);
    kvz_surrogate_free(t->linear);
    kvz_surrogate_free(t->mlp);
    json_decref(t->metrics_layers);
    free(t->split);
    free(t->layers);
    free(t->log_csv);
    train_out_abort(t); /* no-op after a commit */
}

int kvz_train_run(const kvz_run_config *cfg, kvz_train_progress_fn progress, void *user,
                  kvz_train_summary *summary_or_NULL, kvz_error *err)
{
    trainer t = {0};
    t.cfg = cfg;
    t.progress = progress;
    t.user = user;
    t.t0 = now_s();
    if (cfg->model.threads)
        kvz_ops_set_threads((int)cfg->model.threads);
    int rc = kvz_config_require(cfg, "train.dataset", err);
    rc = rc ? rc : kvz_config_require(cfg, "train.output", err);
    rc = rc ? rc : choose_device(&t, err);
    rc = rc ? rc : open_dataset(&t, err);
    rc = rc ? rc : choose_layers(&t, err);
    rc = rc ? rc : create_models(&t, err);
    rc = rc ? rc : start_reader(&t, err);
    rc = rc ? rc : train_out_prepare(&t, err);
    for (size_t i = 0; rc == KVZ_OK && i < t.n_sel; i++)
        rc = train_layer(&t, i, err);
    if (rc == KVZ_OK) {
        kvz_train_progress p = {KVZ_TRAIN_WRITING, 0, t.n_sel, 0, 0, 0, NAN, NAN, NAN, NAN, 0};
        report(&t, &p);
        rc = train_out_finish(&t, err);
    }
    t.sum.n_layers_trained = rc == KVZ_OK ? t.n_sel : 0;
    t.sum.seconds = now_s() - t.t0;
    if (summary_or_NULL)
        *summary_or_NULL = t.sum;
    free_trainer(&t);
    return rc;
}
