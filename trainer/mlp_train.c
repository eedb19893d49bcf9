/* mlp_train: the MLP training recipe of mlp.h: options, validation split,
 * per-epoch shuffles, batches, gradient clipping, AdamW, cosine lr, and the
 * training log. */
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
    double sq = 0;
    for (size_t i = 0; i < n; i++)
        sq += (double)grad[i] * grad[i];
    double norm = sqrt(sq);
    if (max_norm > 0) {
        double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0) {
            float c = (float)coef;
            for (size_t i = 0; i < n; i++)
                grad[i] *= c;
        }
    }
    return norm;
}

void kvz_mlp_adamw_step(float *param, const float *grad, float *m, float *v, size_t n, size_t t,
                        double lr, const kvz_mlp_options *o)
{
    double bc1 = 1.0 - pow(o->beta1, (double)t), bc2 = 1.0 - pow(o->beta2, (double)t);
    float decay = (float)(1.0 - lr * o->weight_decay);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        param[i] *= decay;
        m[i] += (g - m[i]) * (1.0f - b1);
        v[i] = v[i] * b2 + (1.0f - b2) * g * g;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        param[i] -= step_size * (m[i] / denom);
    }
}

/* ---------- the training loop ---------- */

enum { MLP_MAX_PARTS = 16 };

typedef struct mlp_run {
    kvz_mlp_shape s;
    const kvz_mlp_options *o;
    const float *x, *y;
    size_t n, n_params;
    kvz_mlp_plan plan; /* split and epoch order (mlp_plan.c) */
    float *flat, *grad, *m, *v, *xb, *yb;
    /* Data parallelism within a batch: part p of n_parts takes rows
     * [nb*p/P, nb*(p+1)/P) with its own workspace and gradient (sgemm on one
     * BLAS thread each); the parts' losses and gradients are combined in
     * part order, so results are deterministic for a given thread count. */
    size_t n_parts;
    kvz_mlp_work *work[MLP_MAX_PARTS];
    float *part_grad[MLP_MAX_PARTS];
} mlp_run;

static void run_free(mlp_run *r)
{
    kvz_mlp_plan_free(&r->plan);
    free(r->flat);
    free(r->grad);
    free(r->m);
    free(r->v);
    free(r->xb);
    free(r->yb);
    for (size_t p = 0; p < MLP_MAX_PARTS; p++) {
        kvz_mlp_work_free(r->work[p]);
        free(r->part_grad[p]);
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

static int alloc_run(mlp_run *r, kvz_error *err)
{
    size_t P = r->n_params, B = r->o->batch_size;
    r->flat = malloc(P * sizeof *r->flat);
    r->grad = malloc(P * sizeof *r->grad);
    r->m = calloc(P, sizeof *r->m);
    r->v = calloc(P, sizeof *r->v);
    r->xb = malloc(B * r->s.d_in * sizeof *r->xb);
    r->yb = malloc(B * r->s.d_out * sizeof *r->yb);
    int threads = kvz_ops_threads();
    r->n_parts = threads > 1 ? (size_t)threads : 1;
    if (r->n_parts > MLP_MAX_PARTS)
        r->n_parts = MLP_MAX_PARTS;
    int bad = !r->flat || !r->grad || !r->m || !r->v || !r->xb || !r->yb;
    for (size_t p = 0; p < r->n_parts && !bad; p++) {
        r->work[p] = kvz_mlp_work_create(r->s, p == 0 ? B : B / r->n_parts + 1);
        r->part_grad[p] = r->n_parts > 1 ? malloc(P * sizeof(float)) : NULL;
        bad = !r->work[p] || (r->n_parts > 1 && !r->part_grad[p]);
    }
    if (bad)
        return kvz_fail(err, KVZ_ENOMEM, "mlp: out of memory (%zu parameters, batch %zu)", P, B);
    return KVZ_OK;
}

/* Copies dataset rows rows[a..b) into the batch buffers rows a..b. */
static void gather_range(const mlp_run *r, const size_t *rows, size_t a, size_t b)
{
    size_t D = r->s.d_in, H = r->s.d_out;
    for (size_t k = a; k < b; k++) {
        memcpy(r->xb + k * D, r->x + rows[k] * D, D * sizeof *r->xb);
        memcpy(r->yb + k * H, r->y + rows[k] * H, H * sizeof *r->yb);
    }
}

typedef struct part_job {
    mlp_run *r;
    const size_t *rows; /* [nb] dataset rows of the batch */
    size_t nb;
    float *grad;        /* combined gradient, or NULL for the loss only */
    double loss[MLP_MAX_PARTS];
    float weight[MLP_MAX_PARTS];
} part_job;

/* Part p: gathers its rows, then loss and gradient on one BLAS thread. */
static void run_part(void *ctx, size_t p)
{
    part_job *j = ctx;
    mlp_run *r = j->r;
    size_t a = j->nb * p / r->n_parts, b = j->nb * (p + 1) / r->n_parts;
    j->loss[p] = 0.0;
    if (b == a)
        return;
    gather_range(r, j->rows, a, b);
    kvz_mlp_work_loss_grad(r->s, r->flat, r->xb + a * r->s.d_in, r->yb + a * r->s.d_out, b - a,
                           r->work[p], &j->loss[p], j->grad ? r->part_grad[p] : NULL);
}

/* Slice c of the parameters: grad = sum over parts of weight * part grad. */
static void reduce_slice(void *ctx, size_t c)
{
    part_job *j = ctx;
    mlp_run *r = j->r;
    size_t i0 = r->n_params * c / r->n_parts, i1 = r->n_params * (c + 1) / r->n_parts;
    for (size_t i = i0; i < i1; i++) {
        float g = 0.0f;
        for (size_t p = 0; p < r->n_parts; p++)
            g += j->weight[p] * r->part_grad[p][i];
        j->grad[i] = g;
    }
}

/* Loss (and gradient, when grad) of the batch of dataset rows rows[0..nb). */
static void batch_loss_grad(mlp_run *r, const size_t *rows, size_t nb, double *loss, float *grad)
{
    if (r->n_parts == 1 || nb < 2 * r->n_parts) {
        gather_range(r, rows, 0, nb);
        kvz_mlp_work_loss_grad(r->s, r->flat, r->xb, r->yb, nb, r->work[0], loss, grad);
        return;
    }
    part_job j = {r, rows, nb, grad, {0}, {0}};
    kvz_parallel_for(r->n_parts, run_part, &j);
    *loss = 0.0;
    for (size_t p = 0; p < r->n_parts; p++) {
        size_t n_p = nb * (p + 1) / r->n_parts - nb * p / r->n_parts;
        j.weight[p] = (float)n_p / (float)nb;
        *loss += j.loss[p] * (double)n_p / (double)nb;
    }
    if (grad)
        kvz_parallel_for(r->n_parts, reduce_slice, &j);
}

typedef struct adamw_job {
    mlp_run *r;
    size_t t;
    double lr;
} adamw_job;

static void adamw_slice(void *ctx, size_t c)
{
    adamw_job *j = ctx;
    mlp_run *r = j->r;
    size_t i0 = r->n_params * c / r->n_parts, i1 = r->n_params * (c + 1) / r->n_parts;
    kvz_mlp_adamw_step(r->flat + i0, r->grad + i0, r->m + i0, r->v + i0, i1 - i0, j->t, j->lr,
                       r->o);
}

/* One AdamW update of all parameters, in n_parts slices (elementwise). */
static void adamw_all(mlp_run *r, size_t t, double lr)
{
    adamw_job j = {r, t, lr};
    kvz_parallel_for(r->n_parts, adamw_slice, &j);
}

/* MSE over the validation rows in batches (NaN when there are none). */
static double validation_loss(mlp_run *r)
{
    if (r->plan.n_val == 0)
        return NAN;
    double sse = 0;
    for (size_t i = 0; i < r->plan.n_val; i += r->o->batch_size) {
        size_t nb = r->plan.n_val - i < r->o->batch_size ? r->plan.n_val - i : r->o->batch_size;
        double loss;
        batch_loss_grad(r, r->plan.val_rows + i, nb, &loss, NULL);
        sse += loss * (double)nb;
    }
    return sse / (double)r->plan.n_val;
}

/* One epoch of batches; *t counts AdamW steps. */
static int run_epoch(mlp_run *r, size_t e, size_t *t, kvz_mlp_log *log, double *train_loss,
                     kvz_error *err)
{
    double lr = kvz_mlp_epoch_lr(r->o, e), sum = 0;
    size_t B = r->o->batch_size, *rows = malloc(B * sizeof *rows);
    if (!rows)
        return kvz_fail(err, KVZ_ENOMEM, "mlp: out of memory");
    for (size_t i = 0; i < r->plan.n_train; i += B) {
        size_t nb = r->plan.n_train - i < B ? r->plan.n_train - i : B;
        for (size_t k = 0; k < nb; k++)
            rows[k] = r->plan.train_rows[r->plan.order[i + k]];

        double loss;
        batch_loss_grad(r, rows, nb, &loss, r->grad);
        if (!isfinite(loss)) {
            free(rows);
            return kvz_fail(err, KVZ_EINVAL, "mlp: loss is not finite at epoch %zu step %zu",
                            e + 1, *t + 1);
        }
        double norm = kvz_mlp_clip_grad(r->grad, r->n_params, r->o->max_grad_norm);
        ++*t;
        adamw_all(r, *t, lr);
        if (log) {
            log->step_loss[*t - 1] = loss;
            log->grad_norm[*t - 1] = norm;
        }
        sum += loss * (double)nb;
    }
    free(rows);
    *train_loss = sum / (double)r->plan.n_train;
    return KVZ_OK;
}

static void copy_params(kvz_mlp_shape s, float *flat, kvz_surrogate_layer p, int to_flat)
{
    kvz_surrogate_layer f = kvz_mlp_view(s, flat);
    float *src[4] = {p.w1, p.b1, p.w2, p.b2}, *dst[4] = {f.w1, f.b1, f.w2, f.b2};
    size_t len[4] = {s.d_hidden * s.d_in, s.d_hidden, s.d_out * s.d_hidden, s.d_out};
    for (int i = 0; i < 4; i++)
        memcpy(to_flat ? dst[i] : src[i], to_flat ? src[i] : dst[i], len[i] * sizeof(float));
}

/* b2[h] = mean of y[:, h] over the training rows (float64 sums). */
static void bias_to_target_mean(mlp_run *r)
{
    float *b2 = kvz_mlp_view(r->s, r->flat).b2;
    size_t H = r->s.d_out;
    for (size_t h = 0; h < H; h++) {
        double sum = 0;
        for (size_t k = 0; k < r->plan.n_train; k++)
            sum += r->y[r->plan.train_rows[k] * H + h];
        b2[h] = (float)(sum / (double)r->plan.n_train);
    }
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
        double train_loss = 0;
        int rc = kvz_mlp_plan_epoch(&r->plan, r->o, e, err);
        if (!rc)
            rc = run_epoch(r, e, &t, log, &train_loss, err);
        if (rc)
            return rc;
        double val = validation_loss(r), lr = kvz_mlp_epoch_lr(r->o, e);
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

int kvz_mlp_train(kvz_mlp_shape s, const float *x, const float *y, size_t n,
                  const kvz_mlp_options *o, kvz_surrogate_layer params, kvz_mlp_log *log,
                  kvz_error *err)
{
    if (log)
        memset(log, 0, sizeof *log);
    if (!s.d_in || !s.d_hidden || !s.d_out || !x || !y || !params.w1 || !params.b1 ||
        !params.w2 || !params.b2)
        return kvz_fail(err, KVZ_EINVAL, "mlp: bad shape or NULL arrays (D=%zu Dh=%zu Hkv=%zu)",
                        s.d_in, s.d_hidden, s.d_out);
    int rc = kvz_mlp_check_options(o, n, err);
    if (!rc)
        rc = check_finite(x, n, s.d_in, "x", err);
    if (!rc)
        rc = check_finite(y, n, s.d_out, "y", err);
    if (rc)
        return rc;
    mlp_run r = {.s = s, .o = o, .x = x, .y = y, .n = n, .n_params = kvz_mlp_n_params(s)};
    rc = kvz_mlp_plan_create(o, n, &r.plan, err);
    if (!rc)
        rc = alloc_run(&r, err);
    if (!rc) {
        if (o->init) {
            kvz_mlp_init_default(s, r.flat, o->seed);
            if (o->init_b2_mean)
                bias_to_target_mean(&r);
        } else
            copy_params(s, r.flat, params, 1);
        int blas_threads = openblas_get_num_threads();
        if (r.n_parts > 1)
            openblas_set_num_threads(1); /* the parts are the parallelism */
        rc = train_epochs(&r, log, err);
        openblas_set_num_threads(blas_threads);
    }
    if (!rc)
        copy_params(s, r.flat, params, 0);
    else if (log)
        kvz_mlp_log_free(log);
    run_free(&r);
    return rc;
}
