/* mlp_train: the MLP training recipe of mlp.h, written once on the backend
 * ops (ops/backend.h): options, validation split and per-epoch orders (the
 * plan, mlp_plan.c), batches gathered from the backend-resident rows,
 * forward/backward (mlp.c), gradient clipping, AdamW, cosine lr, and the
 * training log.
 *
 * Within an epoch nothing waits for the backend: each step writes its loss
 * and gradient norm into a backend array (one slot per step) and the clip
 * factor is decided on the backend, so the host only queues work; the array
 * is downloaded once at the end of the epoch (validation losses likewise).
 * On host-memory backends (cpu) the parts of a batch run on the ops'
 * threads, each with its own workspace and gradient, combined in part order
 * (kvz_op_combine_parts), so results are deterministic for a thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "../ops/ops.h"
#include "mlp.h"
#include "mlp_work.h"

#define MLP_PI 3.14159265358979323846

void kvz_mlp_options_default(kvz_mlp_options *o)
{
    memset(o, 0, sizeof *o);
    o->epochs = 15;
    o->batch_size = 512;
    o->lr = 5e-3;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    o->weight_decay = 0.01;
    o->max_grad_norm = 1.0;
    o->val_fraction = 0.05;
    o->seed = 0;
    o->init = 1;
}

void kvz_mlp_log_free(kvz_mlp_log *log)
{
    if (!log)
        return;
    free(log->train_loss);
    free(log->val_loss);
    free(log->lr);
    free(log->step_loss);
    free(log->grad_norm);
    memset(log, 0, sizeof *log);
}

double kvz_mlp_epoch_lr(const kvz_mlp_options *o, size_t epoch)
{
    return o->lr * 0.5 * (1.0 + cos(MLP_PI * (double)epoch / (double)o->epochs));
}

double kvz_mlp_clip_grad(float *grad, size_t n, double max_norm)
{
    double norm = 0;
    if (n)
        (void)kvz_op_clip_grad_norm(kvz_backend_host(), grad, n, max_norm, &norm, NULL);
    return norm;
}

static kvz_adamw_args adamw_args(const kvz_mlp_options *o, size_t t, double lr)
{
    kvz_adamw_args a = {t, lr, o->beta1, o->beta2, o->eps, o->weight_decay};
    return a;
}

void kvz_mlp_adamw_step(float *param, const float *grad, float *m, float *v, size_t n, size_t t,
                        double lr, const kvz_mlp_options *o)
{
    kvz_adamw_args a = adamw_args(o, t, lr);
    (void)kvz_op_adamw(kvz_backend_host(), param, grad, m, v, n, &a, NULL);
}

/* ---------- the training loop ---------- */

enum { MLP_MAX_PARTS = 16 };

typedef struct mlp_run {
    kvz_backend *be;
    kvz_mlp_shape s;
    const kvz_mlp_options *o;
    kvz_gemm_precision prec;
    kvz_buf x, y;          /* backend rows [n, D] (fp32|fp16), [n, Hkv] */
    const float *y_host;   /* host [n, Hkv] */
    size_t n, n_params, batch;
    kvz_mlp_plan plan;     /* split and epoch order (mlp_plan.c) */
    float *flat_host;      /* host [n_params] */
    int64_t *rows_host;    /* host [max(n_train, n_val)]: index staging */
    kvz_buf state;         /* backend [4 n_params]: */
    float *flat, *grad, *m, *v;
    kvz_buf idx, val_idx;  /* backend int64 [n_train] epoch order, [n_val] */
    kvz_buf xb, yb;        /* backend [batch, D], [batch, Hkv] */
    size_t epoch_steps, val_batches;
    kvz_buf stats;         /* backend double: [epoch_steps] losses, [epoch_steps] norms,
                              [val_batches] validation losses, [n_parts] part losses */
    double *stats_host;
    /* Data parallelism within a batch (host-memory backends): part p of
     * n_parts takes rows [nb*p/P, nb*(p+1)/P) with its own workspace and
     * gradient (sgemm on one BLAS thread each), combined in part order. */
    size_t n_parts;
    kvz_mlp_work *work[MLP_MAX_PARTS];
    kvz_buf part_grad[MLP_MAX_PARTS];
} mlp_run;

static void run_free(mlp_run *r)
{
    kvz_mlp_plan_free(&r->plan);
    free(r->flat_host);
    free(r->rows_host);
    free(r->stats_host);
    kvz_backend_free(r->be, &r->state);
    kvz_backend_free(r->be, &r->idx);
    kvz_backend_free(r->be, &r->val_idx);
    kvz_backend_free(r->be, &r->xb);
    kvz_backend_free(r->be, &r->yb);
    kvz_backend_free(r->be, &r->stats);
    for (size_t p = 0; p < MLP_MAX_PARTS; p++) {
        kvz_mlp_work_free(r->work[p]);
        kvz_backend_free(r->be, &r->part_grad[p]);
    }
}

static int check_finite(const float *v, size_t rows, size_t cols, const char *what,
                        kvz_error *err)
{
    for (size_t i = 0; i < rows * cols; i++)
        if (!isfinite(v[i]))
            return kvz_fail(err, KVZ_EINVAL, "mlp: %s row %zu column %zu is not finite", what,
                            i / cols, i % cols);
    return KVZ_OK;
}

static double *stat_slot(const mlp_run *r, size_t i)
{
    return (double *)r->stats.data + i;
}

static int alloc_run(mlp_run *r, kvz_error *err)
{
    kvz_backend *be = r->be;
    size_t P = r->n_params, B = r->batch, nt = r->plan.n_train, nv = r->plan.n_val;
    r->epoch_steps = (nt + r->o->batch_size - 1) / r->o->batch_size;
    r->val_batches = (nv + r->o->batch_size - 1) / r->o->batch_size;
    int threads = kvz_ops_threads();
    r->n_parts = kvz_backend_host_memory(be) && threads > 1 ? (size_t)threads : 1;
    if (r->n_parts > MLP_MAX_PARTS)
        r->n_parts = MLP_MAX_PARTS;
    size_t n_stats = 2 * r->epoch_steps + r->val_batches + r->n_parts;
    r->flat_host = malloc(P * sizeof *r->flat_host);
    r->rows_host = malloc((nt > nv ? nt : nv) * sizeof *r->rows_host);
    r->stats_host = malloc(n_stats * sizeof *r->stats_host);
    if (!r->flat_host || !r->rows_host || !r->stats_host)
        return kvz_fail(err, KVZ_ENOMEM, "mlp: out of memory (%zu parameters, %zu rows)", P,
                        r->n);
    int rc = kvz_backend_alloc(be, KVZ_F32, 4 * P, "the MLP parameters and AdamW state",
                               &r->state, err);
    rc = rc ? rc : kvz_backend_alloc(be, KVZ_I64, nt, "the epoch order", &r->idx, err);
    rc = rc ? rc : kvz_backend_alloc(be, KVZ_I64, nv, "the validation rows", &r->val_idx, err);
    rc = rc ? rc : kvz_backend_alloc(be, KVZ_F32, B * r->s.d_in, "a batch of x", &r->xb, err);
    rc = rc ? rc : kvz_backend_alloc(be, KVZ_F32, B * r->s.d_out, "a batch of y", &r->yb, err);
    rc = rc ? rc : kvz_backend_alloc(be, KVZ_F64, n_stats, "the step losses", &r->stats, err);
    for (size_t p = 0; rc == KVZ_OK && p < r->n_parts; p++) {
        rc = kvz_mlp_work_create(be, r->s, p == 0 ? B : B / r->n_parts + 1, &r->work[p], err);
        if (rc == KVZ_OK && r->n_parts > 1)
            rc = kvz_backend_alloc(be, KVZ_F32, P, "a part gradient", &r->part_grad[p], err);
    }
    if (rc)
        return rc;
    float *st = r->state.data;
    r->flat = st;
    r->grad = st + P;
    r->m = st + 2 * P;
    r->v = st + 3 * P;
    return KVZ_OK;
}

/* Gathers dataset rows idx[a..b) into the batch buffers rows a..b. */
static int gather_range(const mlp_run *r, const int64_t *idx, size_t a, size_t b,
                        kvz_error *err)
{
    size_t D = r->s.d_in, H = r->s.d_out;
    float *xb = r->xb.data, *yb = r->yb.data;
    int rc = kvz_op_take_rows(r->be, r->x, D, idx + a, 0, b - a, xb + a * D, err);
    return rc ? rc : kvz_op_take_rows(r->be, r->y, H, idx + a, 0, b - a, yb + a * H, err);
}

typedef struct part_job {
    mlp_run *r;
    const int64_t *idx; /* [nb] backend: dataset rows of the batch */
    size_t nb;
    int with_grad;
    int rc[MLP_MAX_PARTS];
    kvz_error err[MLP_MAX_PARTS];
} part_job;

/* Part p: gathers its rows, then loss and gradient on one BLAS thread. */
static void run_part(void *ctx, size_t p)
{
    part_job *j = ctx;
    mlp_run *r = j->r;
    size_t a = j->nb * p / r->n_parts, b = j->nb * (p + 1) / r->n_parts;
    float *xb = r->xb.data, *yb = r->yb.data;
    j->rc[p] = gather_range(r, j->idx, a, b, &j->err[p]);
    if (j->rc[p] == KVZ_OK)
        j->rc[p] = kvz_mlp_work_loss_grad(
            r->s, r->flat, xb + a * r->s.d_in, yb + a * r->s.d_out, b - a, r->work[p], r->prec,
            stat_slot(r, 2 * r->epoch_steps + r->val_batches + p),
            j->with_grad ? (float *)r->part_grad[p].data : NULL, &j->err[p]);
}

/* Loss (into the backend double loss) and gradient (into r->grad, when
 * with_grad) of the batch of dataset rows idx[0..nb) (backend int64). */
static int batch_loss_grad(mlp_run *r, const int64_t *idx, size_t nb, double *loss,
                           int with_grad, kvz_error *err)
{
    float *grad = with_grad ? r->grad : NULL;
    if (r->n_parts == 1 || nb < 2 * r->n_parts) {
        int rc = gather_range(r, idx, 0, nb, err);
        return rc ? rc : kvz_mlp_work_loss_grad(r->s, r->flat, r->xb.data, r->yb.data, nb,
                                                r->work[0], r->prec, loss, grad, err);
    }
    part_job j = {.r = r, .idx = idx, .nb = nb, .with_grad = with_grad};
    kvz_parallel_for(r->n_parts, run_part, &j);
    const float *src[MLP_MAX_PARTS];
    float weight[MLP_MAX_PARTS];
    size_t rows[MLP_MAX_PARTS];
    for (size_t p = 0; p < r->n_parts; p++) {
        if (j.rc[p]) {
            *err = j.err[p];
            return j.rc[p];
        }
        rows[p] = nb * (p + 1) / r->n_parts - nb * p / r->n_parts;
        weight[p] = (float)rows[p] / (float)nb;
        src[p] = r->part_grad[p].data;
    }
    return kvz_op_combine_parts(r->be, grad, src, weight, r->n_parts, r->n_params, loss,
                                stat_slot(r, 2 * r->epoch_steps + r->val_batches), rows, err);
}

/* MSE over the validation rows in batches (NaN when there are none). */
static int validation_loss(mlp_run *r, double *out, kvz_error *err)
{
    size_t nv = r->plan.n_val, B = r->o->batch_size, v0 = 2 * r->epoch_steps;
    *out = NAN;
    if (nv == 0)
        return KVZ_OK;
    const int64_t *idx = r->val_idx.data;
    int rc = KVZ_OK;
    for (size_t i = 0, k = 0; rc == KVZ_OK && i < nv; i += B, k++) {
        size_t nb = nv - i < B ? nv - i : B;
        rc = batch_loss_grad(r, idx + i, nb, stat_slot(r, v0 + k), 0, err);
    }
    rc = rc ? rc : kvz_backend_download(r->be, r->stats_host + v0, stat_slot(r, v0),
                                        r->val_batches * sizeof(double), err);
    if (rc)
        return rc;
    double sse = 0;
    for (size_t i = 0, k = 0; i < nv; i += B, k++) {
        size_t nb = nv - i < B ? nv - i : B;
        sse += r->stats_host[v0 + k] * (double)nb;
    }
    *out = sse / (double)nv;
    return KVZ_OK;
}

/* Epoch e's row order as dataset rows, to the backend. */
static int upload_epoch_order(mlp_run *r, size_t e, kvz_error *err)
{
    size_t nt = r->plan.n_train;
    int rc = kvz_mlp_plan_epoch(&r->plan, r->o, e, err);
    if (rc)
        return rc;
    for (size_t k = 0; k < nt; k++)
        r->rows_host[k] = (int64_t)r->plan.train_rows[r->plan.order[k]];
    return kvz_backend_upload(r->be, r->idx.data, r->rows_host, nt * sizeof(int64_t), err);
}

static int loss_not_finite(size_t e, size_t t, kvz_error *err)
{
    return kvz_fail(err, KVZ_EINVAL, "mlp: loss is not finite at epoch %zu step %zu", e + 1, t);
}

/* One epoch of batches; *t counts AdamW steps. Host-memory backends check
 * each step's loss as it comes; others at the end of the epoch (the later
 * steps have then run with a NaN gradient; the result is the same error). */
static int run_epoch(mlp_run *r, size_t e, size_t *t, kvz_mlp_log *log, double *train_loss,
                     kvz_error *err)
{
    double lr = kvz_mlp_epoch_lr(r->o, e);
    size_t B = r->o->batch_size, ns = r->epoch_steps, t0 = *t, nt = r->plan.n_train;
    int host = kvz_backend_host_memory(r->be);
    const int64_t *idx = r->idx.data;
    int rc = upload_epoch_order(r, e, err);
    for (size_t k = 0; rc == KVZ_OK && k < ns; k++) {
        size_t i = k * B, nb = nt - i < B ? nt - i : B;
        double *loss = stat_slot(r, k);
        rc = batch_loss_grad(r, idx + i, nb, loss, 1, err);
        if (rc == KVZ_OK && host && !isfinite(*loss))
            return loss_not_finite(e, *t + 1, err);
        rc = rc ? rc : kvz_op_clip_grad_norm(r->be, r->grad, r->n_params, r->o->max_grad_norm,
                                             stat_slot(r, ns + k), err);
        ++*t;
        kvz_adamw_args a = adamw_args(r->o, *t, lr);
        rc = rc ? rc : kvz_op_adamw(r->be, r->flat, r->grad, r->m, r->v, r->n_params, &a, err);
    }
    rc = rc ? rc : kvz_backend_download(r->be, r->stats_host, r->stats.data,
                                        2 * ns * sizeof(double), err);
    double sum = 0;
    for (size_t k = 0; rc == KVZ_OK && k < ns; k++) {
        size_t i = k * B, nb = nt - i < B ? nt - i : B;
        double loss = r->stats_host[k];
        if (!isfinite(loss))
            return loss_not_finite(e, t0 + k + 1, err);
        if (log) {
            log->step_loss[t0 + k] = loss;
            log->grad_norm[t0 + k] = r->stats_host[ns + k];
        }
        sum += loss * (double)nb;
    }
    *train_loss = sum / (double)nt;
    return rc;
}

static void copy_params(kvz_mlp_shape s, float *flat, kvz_surrogate_layer p, int to_flat)
{
    kvz_surrogate_layer f = kvz_mlp_view(s, flat);
    float *src[4] = {p.w1, p.b1, p.w2, p.b2}, *dst[4] = {f.w1, f.b1, f.w2, f.b2};
    size_t len[4] = {s.d_hidden * s.d_in, s.d_hidden, s.d_out * s.d_hidden, s.d_out};
    for (int i = 0; i < 4; i++)
        memcpy(to_flat ? dst[i] : src[i], to_flat ? src[i] : dst[i], len[i] * sizeof(float));
}

/* Initial params on the host (default init, b2 = mean of the training
 * targets when asked, or the given ones), uploaded with zero moments. */
static int init_params(mlp_run *r, kvz_surrogate_layer params, kvz_error *err)
{
    size_t H = r->s.d_out, P = r->n_params;
    if (r->o->init) {
        kvz_mlp_init_default(r->s, r->flat_host, r->o->seed);
        float *b2 = kvz_mlp_view(r->s, r->flat_host).b2;
        for (size_t h = 0; r->o->init_b2_mean && h < H; h++) {
            double sum = 0; /* float64 sums */
            for (size_t k = 0; k < r->plan.n_train; k++)
                sum += r->y_host[r->plan.train_rows[k] * H + h];
            b2[h] = (float)(sum / (double)r->plan.n_train);
        }
    } else
        copy_params(r->s, r->flat_host, params, 1);
    int rc = kvz_backend_upload(r->be, r->flat, r->flat_host, P * sizeof(float), err);
    for (size_t i = 0; i < P; i++)
        r->flat_host[i] = 0.0f;
    rc = rc ? rc : kvz_backend_upload(r->be, r->m, r->flat_host, P * sizeof(float), err);
    rc = rc ? rc : kvz_backend_upload(r->be, r->v, r->flat_host, P * sizeof(float), err);
    for (size_t i = 0; rc == KVZ_OK && i < r->plan.n_val; i++)
        r->rows_host[i] = (int64_t)r->plan.val_rows[i];
    if (rc == KVZ_OK && r->plan.n_val)
        rc = kvz_backend_upload(r->be, r->val_idx.data, r->rows_host,
                                r->plan.n_val * sizeof(int64_t), err);
    return rc;
}

static int train_epochs(mlp_run *r, kvz_mlp_log *log, kvz_error *err)
{
    size_t t = 0, B = r->o->batch_size;
    if (log) {
        size_t steps = r->o->epochs * ((r->plan.n_train + B - 1) / B);
        int rc = kvz_mlp_log_alloc(log, r->o->epochs, steps, err);
        if (rc)
            return rc;
    }
    for (size_t e = 0; e < r->o->epochs; e++) {
        double train_loss = 0, val = NAN;
        int rc = run_epoch(r, e, &t, log, &train_loss, err);
        rc = rc ? rc : validation_loss(r, &val, err);
        if (rc)
            return rc;
        double lr = kvz_mlp_epoch_lr(r->o, e);
        if (log) {
            log->train_loss[e] = train_loss;
            log->val_loss[e] = val;
            log->lr[e] = lr;
        }
        if (r->o->progress &&
            r->o->progress(r->o->progress_ctx, e + 1, r->o->epochs, train_loss, val, lr))
            return kvz_fail(err, KVZ_EINVAL, "mlp: stopped by caller after epoch %zu", e + 1);
    }
    return KVZ_OK;
}

int kvz_mlp_train_on(kvz_backend *be, kvz_mlp_shape s, kvz_buf x, kvz_buf y,
                     const float *y_host, size_t n, const kvz_mlp_options *o,
                     kvz_gemm_precision prec, kvz_surrogate_layer params, kvz_mlp_log *log,
                     kvz_error *err)
{
    if (log)
        memset(log, 0, sizeof *log);
    int host = be && kvz_backend_host_memory(be);
    if (host && !y_host)
        y_host = y.data;
    if (!be || !s.d_in || !s.d_hidden || !s.d_out || !x.data || !y.data || !y_host ||
        !params.w1 || !params.b1 || !params.w2 || !params.b2)
        return kvz_fail(err, KVZ_EINVAL, "mlp: bad shape or NULL arrays (D=%zu Dh=%zu Hkv=%zu)",
                        s.d_in, s.d_hidden, s.d_out);
    int rc = kvz_mlp_check_options(o, n, err);
    if (rc)
        return rc;
    if ((x.dtype != KVZ_F32 && x.dtype != KVZ_F16) || y.dtype != KVZ_F32 ||
        x.numel < n * s.d_in || y.numel < n * s.d_out)
        return kvz_fail(err, KVZ_EINVAL,
                        "mlp: %zu rows need x [%zu, %zu] (float32 or float16) and y [%zu, %zu] "
                        "(float32); got %zu %s and %zu %s values",
                        n, n, s.d_in, n, s.d_out, x.numel, kvz_dtype_name(x.dtype), y.numel,
                        kvz_dtype_name(y.dtype));
    if (host && x.dtype == KVZ_F32)
        rc = check_finite(x.data, n, s.d_in, "x", err);
    rc = rc ? rc : check_finite(y_host, n, s.d_out, "y", err);
    if (rc)
        return rc;
    mlp_run r = {.be = be, .s = s, .o = o, .prec = prec, .x = x, .y = y, .y_host = y_host,
                 .n = n, .n_params = kvz_mlp_n_params(s)};
    r.batch = o->batch_size < n ? o->batch_size : n;
    rc = kvz_mlp_plan_create(o, n, &r.plan, err);
    rc = rc ? rc : alloc_run(&r, err);
    rc = rc ? rc : init_params(&r, params, err);
    if (rc == KVZ_OK) {
        int blas_threads = openblas_get_num_threads();
        if (r.n_parts > 1)
            openblas_set_num_threads(1); /* the parts are the parallelism */
        rc = train_epochs(&r, log, err);
        openblas_set_num_threads(blas_threads);
    }
    rc = rc ? rc : kvz_backend_download(be, r.flat_host, r.flat, r.n_params * sizeof(float), err);
    if (!rc)
        copy_params(s, r.flat_host, params, 0);
    else if (log)
        kvz_mlp_log_free(log);
    run_free(&r);
    return rc;
}

int kvz_mlp_train(kvz_mlp_shape s, const float *x, const float *y, size_t n,
                  const kvz_mlp_options *o, kvz_surrogate_layer params, kvz_mlp_log *log,
                  kvz_error *err)
{
    kvz_buf xb = {(void *)x, KVZ_F32, n * s.d_in}, yb = {(void *)y, KVZ_F32, n * s.d_out};
    return kvz_mlp_train_on(kvz_backend_host(), s, xb, yb, y, n, o, KVZ_GEMM_FP32, params, log,
                            err);
}
