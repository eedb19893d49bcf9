/* mlp_train_cuda: kvz_mlp_train's recipe (mlp.h) with every batch on a CUDA
 * device: the validation split and per-epoch permutations come from the same
 * RNG streams as the CPU trainer, the epoch's row order is uploaded once per
 * epoch, and each step gathers its batch on the device from the
 * device-resident rows, then loss/grad, clip and AdamW run there
 * (kernels/kvz_cuda_train.h). Also the GPU ridge fit from those rows.
 *
 * Within an epoch nothing waits for the device: each step writes its loss
 * and gradient norm into a device array (one slot per step) and the clip
 * factor is decided on the device, so the host only queues work. The array
 * is downloaded once at the end of the epoch, which fills the step log,
 * sums the epoch's train loss and checks finiteness. */
#include "mlp_cuda.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/kvz_cuda_ops.h"
#include "mlp_work.h"
#include "ridge.h"

const char *kvz_mlp_cuda_precision_name(kvz_mlp_cuda_precision p)
{
    return p == KVZ_MLP_CUDA_TF32 ? "tf32" : p == KVZ_MLP_CUDA_BFLOAT16 ? "bfloat16" : "float32";
}

typedef struct cuda_run {
    kvz_mlp_shape s;
    const kvz_mlp_options *o;
    const kvz_cuda_rows *rows;
    size_t n, n_params;
    kvz_mlp_plan plan;                     /* split and epoch order (mlp_plan.c) */
    int64_t *epoch_rows;                   /* host [n_train]: train_rows[order[k]] */
    float *flat;                           /* host params */
    kvz_cuda_mlp *mlp;
    int64_t *idx_dev, *val_dev;            /* device [n_train], [n_val] */
    float *xb_dev, *yb_dev;                /* device [B, D], [B, Hkv] */
    size_t epoch_steps;                    /* steps per epoch */
    double *steps_dev, *steps_host;        /* [2 * epoch_steps]: losses, then norms */
} cuda_run;

static void run_free(cuda_run *r)
{
    kvz_mlp_plan_free(&r->plan);
    free(r->epoch_rows);
    free(r->flat);
    kvz_cuda_mlp_free(r->mlp);
    kvz_cuda_free(r->idx_dev);
    kvz_cuda_free(r->val_dev);
    kvz_cuda_free(r->xb_dev);
    kvz_cuda_free(r->yb_dev);
    kvz_cuda_free(r->steps_dev);
    free(r->steps_host);
}

static int setup_rows(cuda_run *r, kvz_error *err)
{
    int rc = kvz_mlp_plan_create(r->o, r->n, &r->plan, err);
    if (!rc && !(r->epoch_rows = malloc(r->n * sizeof *r->epoch_rows)))
        rc = kvz_fail(err, KVZ_ENOMEM, "mlp: out of memory");
    return rc;
}

static unsigned precision_flags(const kvz_mlp_cuda_options *co)
{
    if (!co)
        return 0;
    return co->precision == KVZ_MLP_CUDA_TF32       ? KVZ_CUDA_TRAIN_TF32
           : co->precision == KVZ_MLP_CUDA_BFLOAT16 ? KVZ_CUDA_TRAIN_BF16
                                                    : 0;
}

static int alloc_device(cuda_run *r, const kvz_mlp_cuda_options *co, kvz_error *err)
{
    size_t B = r->o->batch_size < r->n ? r->o->batch_size : r->n;
    int rc = kvz_cuda_mlp_create(r->s, B, precision_flags(co), &r->mlp, err);
    rc = rc ? rc : kvz_cuda_alloc((void **)&r->idx_dev, r->plan.n_train * sizeof(int64_t), err);
    size_t n_val_alloc = r->plan.n_val ? r->plan.n_val : 1;
    rc = rc ? rc : kvz_cuda_alloc((void **)&r->val_dev, n_val_alloc * sizeof(int64_t), err);
    rc = rc ? rc : kvz_cuda_alloc((void **)&r->xb_dev, B * r->s.d_in * sizeof(float), err);
    rc = rc ? rc : kvz_cuda_alloc((void **)&r->yb_dev, B * r->s.d_out * sizeof(float), err);
    r->epoch_steps = (r->plan.n_train + r->o->batch_size - 1) / r->o->batch_size;
    size_t n_slots = 2 * (r->epoch_steps ? r->epoch_steps : 1);
    rc = rc ? rc : kvz_cuda_alloc((void **)&r->steps_dev, n_slots * sizeof(double), err);
    if (rc == KVZ_OK && !(r->steps_host = malloc(n_slots * sizeof *r->steps_host)))
        rc = kvz_fail(err, KVZ_ENOMEM, "mlp: out of memory");
    for (size_t i = 0; rc == KVZ_OK && i < r->plan.n_val; i++)
        r->epoch_rows[i] = (int64_t)r->plan.val_rows[i];
    if (rc == KVZ_OK && r->plan.n_val)
        rc = kvz_cuda_upload(r->val_dev, r->epoch_rows, r->plan.n_val * sizeof(int64_t), err);
    return rc;
}

/* Initial params on the host (kvz_mlp_init_default / b2 mean / given), uploaded. */
static int init_params(cuda_run *r, const float *y, kvz_surrogate_layer params, kvz_error *err)
{
    kvz_surrogate_layer f = kvz_mlp_view(r->s, r->flat);
    size_t H = r->s.d_out;
    if (r->o->init) {
        kvz_mlp_init_default(r->s, r->flat, r->o->seed);
        for (size_t h = 0; r->o->init_b2_mean && h < H; h++) {
            double sum = 0;
            for (size_t k = 0; k < r->plan.n_train; k++)
                sum += y[r->plan.train_rows[k] * H + h];
            f.b2[h] = (float)(sum / (double)r->plan.n_train);
        }
    } else {
        memcpy(f.w1, params.w1, r->s.d_hidden * r->s.d_in * sizeof(float));
        memcpy(f.b1, params.b1, r->s.d_hidden * sizeof(float));
        memcpy(f.w2, params.w2, H * r->s.d_hidden * sizeof(float));
        memcpy(f.b2, params.b2, H * sizeof(float));
    }
    return kvz_cuda_mlp_upload_params(r->mlp, r->flat, err);
}

/* Epoch e's row order (mlp_train.c's epoch_order), uploaded as dataset rows. */
static int upload_epoch_order(cuda_run *r, size_t e, kvz_error *err)
{
    size_t nt = r->plan.n_train;
    int rc = kvz_mlp_plan_epoch(&r->plan, r->o, e, err);
    if (rc)
        return rc;
    for (size_t k = 0; k < nt; k++)
        r->epoch_rows[k] = (int64_t)r->plan.train_rows[r->plan.order[k]];
    return kvz_cuda_upload(r->idx_dev, r->epoch_rows, nt * sizeof(int64_t), err);
}

static double validation_loss(cuda_run *r, int *rc, kvz_error *err)
{
    if (r->plan.n_val == 0)
        return NAN;
    double sse = 0;
    size_t B = r->o->batch_size;
    for (size_t i = 0; *rc == KVZ_OK && i < r->plan.n_val; i += B) {
        size_t nb = r->plan.n_val - i < B ? r->plan.n_val - i : B;
        double loss = 0;
        *rc = kvz_cuda_rows_gather(r->rows, r->val_dev + i, 0, nb, r->xb_dev, r->yb_dev, err);
        *rc = *rc ? *rc : kvz_cuda_mlp_loss(r->mlp, r->xb_dev, r->yb_dev, nb, &loss, err);
        sse += loss * (double)nb;
    }
    return sse / (double)r->plan.n_val;
}

/* Queues step k of the epoch (global step t) on batch rows idx_dev[i ..
 * i+nb): its loss goes to steps_dev[k], its gradient norm to
 * steps_dev[epoch_steps + k]; nothing waits. */
static int train_step(cuda_run *r, size_t k, size_t i, size_t nb, size_t t, double lr,
                      kvz_error *err)
{
    const kvz_mlp_options *o = r->o;
    double *loss_dev = r->steps_dev + k, *norm_dev = r->steps_dev + r->epoch_steps + k;
    int rc = kvz_cuda_rows_gather(r->rows, r->idx_dev + i, 0, nb, r->xb_dev, r->yb_dev, err);
    rc = rc ? rc : kvz_cuda_mlp_loss_grad_dev(r->mlp, r->xb_dev, r->yb_dev, nb, loss_dev, err);
    rc = rc ? rc : kvz_cuda_mlp_clip_dev(r->mlp, o->max_grad_norm, norm_dev, err);
    rc = rc ? rc : kvz_cuda_mlp_adamw_step(r->mlp, t, lr, o->beta1, o->beta2, o->eps,
                                           o->weight_decay, err);
    return rc;
}

/* Downloads the epoch's step losses and norms (the epoch's one wait), logs
 * them and sums the train loss as the CPU trainer does. t0: global steps
 * before this epoch. The first non-finite loss fails with its 1-based global
 * step. Unlike the CPU trainer, which stops at that step, the later steps
 * of the epoch have already run on the device (with a NaN gradient); the
 * result is the same error either way and the params are not returned. */
static int collect_epoch(cuda_run *r, size_t t0, kvz_mlp_log *log, double *train_loss,
                         kvz_error *err)
{
    size_t B = r->o->batch_size, ns = r->epoch_steps;
    const double *loss = r->steps_host, *norm = r->steps_host + ns;
    int rc = kvz_cuda_download(r->steps_host, r->steps_dev, 2 * ns * sizeof(double), err);
    double sum = 0;
    for (size_t k = 0; rc == KVZ_OK && k < ns; k++) {
        size_t i = k * B, nb = r->plan.n_train - i < B ? r->plan.n_train - i : B;
        if (!isfinite(loss[k]))
            return kvz_fail(err, KVZ_EINVAL, "mlp: loss is not finite at step %zu", t0 + k + 1);
        if (log) {
            log->step_loss[t0 + k] = loss[k];
            log->grad_norm[t0 + k] = norm[k];
        }
        sum += loss[k] * (double)nb;
    }
    *train_loss = sum / (double)r->plan.n_train;
    return rc;
}

static int run_epoch(cuda_run *r, size_t e, size_t *t, kvz_mlp_log *log, double *train_loss,
                     kvz_error *err)
{
    double lr = kvz_mlp_epoch_lr(r->o, e);
    size_t B = r->o->batch_size, t0 = *t;
    int rc = upload_epoch_order(r, e, err);
    for (size_t k = 0; rc == KVZ_OK && k < r->epoch_steps; k++) {
        size_t i = k * B, nb = r->plan.n_train - i < B ? r->plan.n_train - i : B;
        ++*t;
        rc = train_step(r, k, i, nb, *t, lr, err);
    }
    return rc ? rc : collect_epoch(r, t0, log, train_loss, err);
}

static int train_epochs(cuda_run *r, kvz_mlp_log *log, kvz_error *err)
{
    size_t t = 0, B = r->o->batch_size;
    size_t steps = r->o->epochs * ((r->plan.n_train + B - 1) / B);
    int rc = log ? kvz_mlp_log_alloc(log, r->o->epochs, steps, err) : KVZ_OK;
    for (size_t e = 0; rc == KVZ_OK && e < r->o->epochs; e++) {
        double train_loss = 0;
        rc = run_epoch(r, e, &t, log, &train_loss, err);
        double val = rc == KVZ_OK ? validation_loss(r, &rc, err) : NAN;
        double lr = kvz_mlp_epoch_lr(r->o, e);
        if (rc == KVZ_OK && log) {
            log->train_loss[e] = train_loss;
            log->val_loss[e] = val;
            log->lr[e] = lr;
        }
        if (rc == KVZ_OK && r->o->progress &&
            r->o->progress(r->o->progress_ctx, e + 1, r->o->epochs, train_loss, val, lr))
            rc = kvz_fail(err, KVZ_EINVAL, "mlp: stopped by caller after epoch %zu", e + 1);
    }
    return rc;
}

static int check_args(kvz_mlp_shape s, const kvz_cuda_rows *rows, const float *y, size_t n,
                      const kvz_mlp_options *o, kvz_surrogate_layer p, kvz_error *err)
{
    if (!s.d_in || !s.d_hidden || !s.d_out || !rows || !y || !o || !p.w1 || !p.b1 || !p.w2 ||
        !p.b2)
        return kvz_fail(err, KVZ_EINVAL, "mlp: bad shape or NULL arguments (D=%zu Dh=%zu Hkv=%zu)",
                        s.d_in, s.d_hidden, s.d_out);
    int rc = kvz_mlp_check_options(o, n, err);
    if (rc)
        return rc;
    if (kvz_cuda_rows_count(rows) != n)
        return kvz_fail(err, KVZ_EINVAL, "mlp: %zu rows requested, %zu held on the device", n,
                        kvz_cuda_rows_count(rows));
    for (size_t i = 0; i < n * s.d_out; i++)
        if (!isfinite(y[i]))
            return kvz_fail(err, KVZ_EINVAL, "mlp: y row %zu column %zu is not finite",
                            i / s.d_out, i % s.d_out);
    return KVZ_OK;
}

int kvz_mlp_train_cuda(kvz_mlp_shape s, const kvz_cuda_rows *rows, const float *y_host, size_t n,
                       const kvz_mlp_options *o, const kvz_mlp_cuda_options *co,
                       kvz_surrogate_layer params, kvz_mlp_log *log, kvz_error *err)
{
    if (log)
        memset(log, 0, sizeof *log);
    int rc = check_args(s, rows, y_host, n, o, params, err);
    if (rc)
        return rc;
    cuda_run r = {.s = s, .o = o, .rows = rows, .n = n, .n_params = kvz_mlp_n_params(s)};
    rc = setup_rows(&r, err);
    if (!rc && !(r.flat = malloc(r.n_params * sizeof *r.flat)))
        rc = kvz_fail(err, KVZ_ENOMEM, "mlp: out of memory");
    rc = rc ? rc : alloc_device(&r, co, err);
    rc = rc ? rc : init_params(&r, y_host, params, err);
    rc = rc ? rc : train_epochs(&r, log, err);
    rc = rc ? rc : kvz_cuda_mlp_download_params(r.mlp, r.flat, err);
    if (!rc) {
        kvz_surrogate_layer f = kvz_mlp_view(s, r.flat);
        memcpy(params.w1, f.w1, s.d_hidden * s.d_in * sizeof(float));
        memcpy(params.b1, f.b1, s.d_hidden * sizeof(float));
        memcpy(params.w2, f.w2, s.d_out * s.d_hidden * sizeof(float));
        memcpy(params.b2, f.b2, s.d_out * sizeof(float));
    } else if (log)
        kvz_mlp_log_free(log);
    run_free(&r);
    return rc;
}

enum { HOST_UPLOAD_ROWS = 4096 };

int kvz_mlp_train_cuda_host(kvz_mlp_shape s, const float *x, const float *y, size_t n,
                            const kvz_mlp_options *o, const kvz_mlp_cuda_options *co,
                            kvz_surrogate_layer params, kvz_mlp_log *log, kvz_error *err)
{
    if (log)
        memset(log, 0, sizeof *log);
    if (!x || !y || !n || !s.d_in || !s.d_out)
        return kvz_fail(err, KVZ_EINVAL, "mlp: NULL rows or zero sizes");
    kvz_cuda_rows *rows = NULL;
    int rc = kvz_cuda_rows_create(n, s.d_in, s.d_out, 0, HOST_UPLOAD_ROWS, 0, &rows, err);
    for (size_t r0 = 0; rc == KVZ_OK && r0 < n; r0 += HOST_UPLOAD_ROWS) {
        size_t k = n - r0 < HOST_UPLOAD_ROWS ? n - r0 : HOST_UPLOAD_ROWS;
        rc = kvz_cuda_rows_append(rows, x + r0 * s.d_in, y + r0 * s.d_out, k, err);
    }
    rc = rc ? rc : kvz_cuda_rows_wait(rows, err);
    rc = rc ? rc : kvz_mlp_train_cuda(s, rows, y, n, o, co, params, log, err);
    kvz_cuda_rows_free(rows);
    return rc;
}

/* ---------- ridge from the device rows ---------- */

enum { RIDGE_BLOCK_ROWS = 4096 };

static int ridge_accumulate(const kvz_cuda_rows *rows, kvz_cuda_ridge *acc, size_t D, size_t H,
                            kvz_error *err)
{
    float *xb = NULL, *yb = NULL;
    size_t n = kvz_cuda_rows_count(rows);
    int rc = kvz_cuda_alloc((void **)&xb, RIDGE_BLOCK_ROWS * D * sizeof(float), err);
    rc = rc ? rc : kvz_cuda_alloc((void **)&yb, RIDGE_BLOCK_ROWS * H * sizeof(float), err);
    for (size_t r0 = 0; rc == KVZ_OK && r0 < n; r0 += RIDGE_BLOCK_ROWS) {
        size_t k = n - r0 < RIDGE_BLOCK_ROWS ? n - r0 : RIDGE_BLOCK_ROWS;
        rc = kvz_cuda_rows_gather(rows, NULL, r0, k, xb, yb, err);
        rc = rc ? rc : kvz_cuda_ridge_add(acc, xb, yb, k, err);
    }
    kvz_cuda_free(xb);
    kvz_cuda_free(yb);
    return rc;
}

int kvz_ridge_fit_cuda(const kvz_cuda_rows *rows, size_t d_in, size_t d_out, double alpha,
                       float *w, float *b, kvz_error *err)
{
    size_t D = d_in, H = d_out;
    double *buf = malloc((D * D + D * H + D + 2 * H) * sizeof(double));
    if (!buf)
        return kvz_fail(err, KVZ_ENOMEM, "ridge: out of memory");
    kvz_ridge_stats st = {D, H, buf, buf + D * D, buf + D * D + D * H, buf + D * D + D * H + D,
                          buf + D * D + D * H + D + H, 0};
    kvz_cuda_ridge *acc = NULL;
    int rc = kvz_cuda_ridge_create(D, H, RIDGE_BLOCK_ROWS, &acc, err);
    rc = rc ? rc : ridge_accumulate(rows, acc, D, H, err);
    rc = rc ? rc : kvz_cuda_ridge_download(acc, buf, buf + D * D, buf + D * D + D * H,
                                           buf + D * D + D * H + D, buf + D * D + D * H + D + H,
                                           &st.count, err);
    rc = rc ? rc : kvz_ridge_solve(&st, alpha, w, b, err);
    kvz_cuda_ridge_free(acc);
    free(buf);
    return rc;
}
