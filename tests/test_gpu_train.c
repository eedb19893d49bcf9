/* test_gpu_train: the CUDA trainer of kernels/kvz_cuda_train.h against the
 * CPU trainer on small random shapes (D=40, Dh=5, Hkv=3, n=77): loss and
 * every gradient vs kvz_mlp_loss_grad (relative 1e-5 per tensor), clip and
 * one AdamW step vs kvz_mlp_clip_grad / kvz_mlp_adamw_step (1e-6), a 3-step
 * loss_grad/clip/AdamW trajectory, and the ridge sums vs kvz_ridge_acc_*
 * (1e-10 relative), plus argument and non-finite errors. The device-result
 * variants (loss_grad_dev, clip_dev) match the host-returning ones bit for
 * bit, and a NaN feature fails kvz_mlp_train_cuda_host at the step whose
 * batch holds that row (from the trainers' shared plan, mlp_work.h). Device inputs carry
 * guard floats on both sides, host outputs guard floats after the data.
 * Skipped (77) when the build has no CUDA or the machine has no GPU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kvz_cuda.h"
#include "kernels/kvz_cuda_ops.h"
#include "kernels/kvz_cuda_train.h"
#include "kvz_test.h"
#include "kvz_test_gpu.h"
#include "trainer/mlp.h"
#include "trainer/mlp_cuda.h"
#include "trainer/mlp_work.h"
#include "trainer/ridge.h"

enum { D = 40, DH = 5, HKV = 3, N = 77, GUARD = 16 };

/* ---------- helpers ---------- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static void random_fill(float *v, size_t n, float scale)
{
    kvz_test_random_fill(&rng_state, v, n, scale);
}

/* Host buffer of n floats followed by GUARD pattern floats. */
static float *guarded_host(size_t n)
{
    float *v = calloc(n + GUARD, sizeof *v);
    if (v)
        kvz_test_fill_guard(v + n, GUARD);
    return v;
}

static void check_host_guard(const float *v, size_t n, const char *what)
{
    KVZ_CHECK(kvz_test_guard_intact(v + n, GUARD), "%s: host guard overwritten", what);
}

/* max |got - ref| <= rtol * max |ref| (+ a tiny floor for all-zero refs). */
static void check_rel(const char *what, const float *got, const float *ref, size_t n,
                      double rtol)
{
    double worst = 0, scale = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= worst)) /* NaN counts as worst */
            worst = d, at = i;
        if (fabs(ref[i]) > scale)
            scale = fabs(ref[i]);
    }
    KVZ_CHECK(worst <= rtol * scale + 1e-30, "%s: max |diff| %.3g at %zu (got %.9g ref %.9g), "
              "allowed %.3g", what, worst, at, got[at], ref[at], rtol * scale);
}

static void check_rel_f64(const char *what, const double *got, const double *ref, size_t n,
                          double rtol)
{
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - ref[i]);
        worst = d > worst || isnan(d) ? d : worst;
        scale = fabs(ref[i]) > scale ? fabs(ref[i]) : scale;
    }
    KVZ_CHECK(worst <= rtol * scale + 1e-300, "%s: max |diff| %.3g, allowed %.3g", what, worst,
              rtol * scale);
}

static void check_scalar(const char *what, double got, double ref, double rtol)
{
    KVZ_CHECK(fabs(got - ref) <= rtol * fabs(ref), "%s: got %.17g ref %.17g", what, got, ref);
}

static const kvz_mlp_shape SHAPE = {D, DH, HKV};

/* Per tensor (w1, b1, w2, b2) relative comparison of two flat vectors. */
static void check_flat(const char *what, float *got, float *ref, double rtol)
{
    kvz_surrogate_layer g = kvz_mlp_view(SHAPE, got), r = kvz_mlp_view(SHAPE, ref);
    char name[128];
    snprintf(name, sizeof name, "%s w1", what);
    check_rel(name, g.w1, r.w1, (size_t)DH * D, rtol);
    snprintf(name, sizeof name, "%s b1", what);
    check_rel(name, g.b1, r.b1, DH, rtol);
    snprintf(name, sizeof name, "%s w2", what);
    check_rel(name, g.w2, r.w2, (size_t)HKV * DH, rtol);
    snprintf(name, sizeof name, "%s b2", what);
    check_rel(name, g.b2, r.b2, HKV, rtol);
}

/* ---------- MLP ---------- */

typedef struct fixture {
    size_t np;
    float *x, *y, *params;
    kvz_guarded dx, dy;
    kvz_cuda_mlp *m;
} fixture;

static int fixture_open(fixture *f)
{
    kvz_error err = {0};
    memset(f, 0, sizeof *f);
    f->np = kvz_mlp_n_params(SHAPE);
    f->x = malloc((size_t)N * D * sizeof *f->x);
    f->y = malloc((size_t)N * HKV * sizeof *f->y);
    f->params = malloc(f->np * sizeof *f->params);
    if (!f->x || !f->y || !f->params)
        return KVZ_ENOMEM;
    random_fill(f->x, (size_t)N * D, 2.0f);
    random_fill(f->y, (size_t)N * HKV, 3.0f);
    kvz_mlp_init_default(SHAPE, f->params, 7);
    kvz_guarded_create(&f->dx, f->x, (size_t)N * D);
    kvz_guarded_create(&f->dy, f->y, (size_t)N * HKV);
    int rc = kvz_cuda_mlp_create(SHAPE, N, 0, &f->m, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_mlp_upload_params(f->m, f->params, &err);
    return rc;
}

static void fixture_close(fixture *f)
{
    kvz_guarded_check_free(&f->dx, f->x, "x");
    kvz_guarded_check_free(&f->dy, f->y, "y");
    kvz_cuda_mlp_free(f->m);
    free(f->x), free(f->y), free(f->params);
}

/* Loss and gradient vs the CPU; leaves the GPU gradient in *grad_out. */
static void test_loss_grad(fixture *f, float *grad_out)
{
    kvz_error err = {0};
    float *ref = malloc(f->np * sizeof *ref), *got = guarded_host(f->np);
    double loss_ref = 0, loss = 0;
    KVZ_CHECK_OK(kvz_mlp_loss_grad(SHAPE, f->params, f->x, f->y, N, &loss_ref, ref, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_loss_grad(f->m, f->dx.data, f->dy.data, N, &loss, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_download_grad(f->m, got, &err), err);
    check_host_guard(got, f->np, "gradient download");
    check_scalar("loss", loss, loss_ref, 1e-5);
    check_flat("gradient", got, ref, 1e-5);
    memcpy(grad_out, got, f->np * sizeof *got);
    float *p = guarded_host(f->np);
    KVZ_CHECK_OK(kvz_cuda_mlp_download_params(f->m, p, &err), err);
    check_host_guard(p, f->np, "params download");
    KVZ_CHECK(memcmp(p, f->params, f->np * sizeof *p) == 0, "params changed by loss_grad");
    free(ref), free(got), free(p);
}

/* Clip of the GPU gradient (max_norm below the norm, so it scales) vs CPU. */
static void test_clip(fixture *f, const float *grad)
{
    kvz_error err = {0};
    float *ref = malloc(f->np * sizeof *ref), *got = guarded_host(f->np);
    memcpy(ref, grad, f->np * sizeof *ref);
    double norm_full = kvz_mlp_clip_grad(ref, f->np, 0); /* 0: measure only */
    double max_norm = 0.37 * norm_full, norm = 0;
    double norm_ref = kvz_mlp_clip_grad(ref, f->np, max_norm);
    KVZ_CHECK_OK(kvz_cuda_mlp_upload_grad(f->m, grad, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_clip(f->m, max_norm, &norm, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_download_grad(f->m, got, &err), err);
    check_host_guard(got, f->np, "clipped gradient download");
    check_scalar("gradient norm", norm, norm_ref, 1e-6);
    check_flat("clipped gradient", got, ref, 1e-6);
    free(ref), free(got);
}

/* One AdamW step from random moments (t = 3) vs the CPU. */
static void test_adamw(fixture *f, const float *grad)
{
    kvz_error err = {0};
    size_t np = f->np;
    float *p = malloc(np * sizeof *p), *m1 = malloc(np * sizeof *m1), *v = malloc(np * sizeof *v);
    float *gp = guarded_host(np), *gm = guarded_host(np), *gv = guarded_host(np);
    memcpy(p, f->params, np * sizeof *p);
    random_fill(m1, np, 0.01f);
    random_fill(v, np, 1e-4f);
    for (size_t i = 0; i < np; i++)
        v[i] = fabsf(v[i]);
    kvz_mlp_options o;
    kvz_mlp_options_default(&o);
    KVZ_CHECK_OK(kvz_cuda_mlp_upload_grad(f->m, grad, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_upload_moments(f->m, m1, v, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_adamw_step(f->m, 3, 4e-3, o.beta1, o.beta2, o.eps, o.weight_decay,
                                         &err), err);
    kvz_mlp_adamw_step(p, grad, m1, v, np, 3, 4e-3, &o);
    KVZ_CHECK_OK(kvz_cuda_mlp_download_params(f->m, gp, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_download_moments(f->m, gm, gv, &err), err);
    check_host_guard(gp, np, "params download"), check_host_guard(gm, np, "m download");
    check_host_guard(gv, np, "v download");
    check_flat("adamw params", gp, p, 1e-6);
    check_flat("adamw m", gm, m1, 1e-6);
    check_flat("adamw v", gv, v, 1e-6);
    KVZ_CHECK(kvz_cuda_mlp_adamw_step(f->m, 0, 1e-3, 0.9, 0.999, 1e-8, 0, &err) == KVZ_EINVAL,
              "adamw t=0 accepted");
    free(p), free(m1), free(v), free(gp), free(gm), free(gv);
}

/* Three loss_grad / clip(1.0) / AdamW steps from the same start. */
static void test_trajectory(fixture *f)
{
    kvz_error err = {0};
    size_t np = f->np;
    kvz_mlp_options o;
    kvz_mlp_options_default(&o);
    float *p = malloc(np * sizeof *p), *g = malloc(np * sizeof *g);
    float *m1 = calloc(np, sizeof *m1), *v = calloc(np, sizeof *v), *got = guarded_host(np);
    memcpy(p, f->params, np * sizeof *p);
    KVZ_CHECK_OK(kvz_cuda_mlp_upload_params(f->m, f->params, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_reset_moments(f->m, &err), err);
    for (size_t t = 1; t <= 3; t++) {
        double loss_ref = 0, loss = 0, norm_ref, norm = 0;
        char what[64];
        KVZ_CHECK_OK(kvz_mlp_loss_grad(SHAPE, p, f->x, f->y, N, &loss_ref, g, &err), err);
        norm_ref = kvz_mlp_clip_grad(g, np, o.max_grad_norm);
        kvz_mlp_adamw_step(p, g, m1, v, np, t, o.lr, &o);
        KVZ_CHECK_OK(kvz_cuda_mlp_loss_grad(f->m, f->dx.data, f->dy.data, N, &loss, &err), err);
        KVZ_CHECK_OK(kvz_cuda_mlp_clip(f->m, o.max_grad_norm, &norm, &err), err);
        KVZ_CHECK_OK(kvz_cuda_mlp_adamw_step(f->m, t, o.lr, o.beta1, o.beta2, o.eps,
                                             o.weight_decay, &err), err);
        snprintf(what, sizeof what, "trajectory step %zu loss", t);
        check_scalar(what, loss, loss_ref, 1e-5);
        snprintf(what, sizeof what, "trajectory step %zu norm", t);
        check_scalar(what, norm, norm_ref, 1e-5);
    }
    KVZ_CHECK_OK(kvz_cuda_mlp_download_params(f->m, got, &err), err);
    check_host_guard(got, np, "trajectory params");
    check_flat("trajectory params", got, p, 1e-5);
    free(p), free(g), free(m1), free(v), free(got);
}

static void test_mlp_errors(fixture *f)
{
    kvz_error err = {0};
    double loss = 0;
    kvz_cuda_mlp *m = NULL;
    KVZ_CHECK(kvz_cuda_mlp_loss_grad(f->m, f->dx.data, f->dy.data, 0, &loss, &err) == KVZ_EINVAL,
              "n = 0 accepted");
    KVZ_CHECK(kvz_cuda_mlp_loss_grad(f->m, f->dx.data, f->dy.data, N + 1, &loss, &err) ==
                  KVZ_EINVAL, "n > max_rows accepted");
    kvz_mlp_shape bad = {D, 0, HKV};
    KVZ_CHECK(kvz_cuda_mlp_create(bad, 8, 0, &m, &err) == KVZ_EINVAL && !m, "Dh = 0 accepted");
    KVZ_CHECK(kvz_cuda_mlp_create(SHAPE, 8, 0x80, &m, &err) == KVZ_EINVAL && !m,
              "unknown flags accepted");
    /* TF32 contexts are created; only checked loosely (TF32 GEMMs differ ~1e-3). */
    KVZ_CHECK_OK(kvz_cuda_mlp_create(SHAPE, N, KVZ_CUDA_TRAIN_TF32, &m, &err), err);
    if (m) {
        KVZ_CHECK_OK(kvz_cuda_mlp_upload_params(m, f->params, &err), err);
        KVZ_CHECK_OK(kvz_cuda_mlp_loss_grad(m, f->dx.data, f->dy.data, N, &loss, &err), err);
        double ref = 0;
        KVZ_CHECK_OK(kvz_mlp_loss_grad(SHAPE, f->params, f->x, f->y, N, &ref, NULL, &err), err);
        check_scalar("tf32 loss", loss, ref, 1e-2);
    }
    kvz_cuda_mlp_free(m);
}

/* Downloads the device double at d. */
static double device_double(const double *d)
{
    kvz_error err = {0};
    double v = NAN;
    KVZ_CHECK_OK(kvz_cuda_download(&v, d, sizeof v, &err), err);
    return v;
}

static void check_same_bits(const char *what, const void *got, const void *ref, size_t bytes)
{
    KVZ_CHECK(memcmp(got, ref, bytes) == 0, "%s: device-result variant differs in its bits",
              what);
}

/* clip vs clip_dev from the same gradient; returns whether the clip changed it. */
static int compare_clip(fixture *f, const float *grad, double max_norm, double *norm_dev)
{
    kvz_error err = {0};
    float *g_host = malloc(f->np * sizeof *g_host), *g_dev = malloc(f->np * sizeof *g_dev);
    double norm = 0;
    KVZ_CHECK_OK(kvz_cuda_mlp_upload_grad(f->m, grad, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_clip(f->m, max_norm, &norm, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_download_grad(f->m, g_host, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_upload_grad(f->m, grad, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_clip_dev(f->m, max_norm, norm_dev, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_download_grad(f->m, g_dev, &err), err);
    double nd = device_double(norm_dev);
    check_same_bits("clip_dev norm", &nd, &norm, sizeof nd);
    check_same_bits("clip_dev gradient", g_dev, g_host, f->np * sizeof *g_dev);
    int changed = memcmp(g_host, grad, f->np * sizeof *grad) != 0;
    free(g_host), free(g_dev);
    return changed;
}

/* loss_grad_dev / clip_dev vs loss_grad / clip, bit for bit. */
static void test_dev_variants(fixture *f)
{
    kvz_error err = {0};
    double *d = NULL, loss = 0, norm = 0;
    float *g_host = malloc(f->np * sizeof *g_host), *g_dev = malloc(f->np * sizeof *g_dev);
    KVZ_CHECK_OK(kvz_cuda_alloc((void **)&d, 2 * sizeof *d, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_upload_params(f->m, f->params, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_loss_grad(f->m, f->dx.data, f->dy.data, N, &loss, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_download_grad(f->m, g_host, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_loss_grad_dev(f->m, f->dx.data, f->dy.data, N, d, &err), err);
    KVZ_CHECK_OK(kvz_cuda_mlp_download_grad(f->m, g_dev, &err), err);
    double ld = device_double(d);
    check_same_bits("loss_grad_dev loss", &ld, &loss, sizeof ld);
    check_same_bits("loss_grad_dev gradient", g_dev, g_host, f->np * sizeof *g_dev);
    KVZ_CHECK(kvz_cuda_mlp_loss_grad_dev(f->m, f->dx.data, f->dy.data, N, NULL, &err) ==
                  KVZ_EINVAL, "loss_grad_dev without a result accepted");
    KVZ_CHECK(!compare_clip(f, g_host, 0, d + 1), "clip with max_norm 0 changed the gradient");
    norm = device_double(d + 1);
    KVZ_CHECK(norm > 0 && isfinite(norm), "gradient norm %g", norm);
    KVZ_CHECK(compare_clip(f, g_host, 0.37 * norm, d + 1), "clip below the norm did not scale");
    KVZ_CHECK(!compare_clip(f, g_host, 10.0 * norm, d + 1), "clip above the norm scaled");
    kvz_cuda_free(d);
    free(g_host), free(g_dev);
}

/* The dataset row that epoch 0 visits at position pos (the trainers' plan). */
static size_t row_at(const kvz_mlp_options *o, size_t pos)
{
    kvz_error err = {0};
    kvz_mlp_plan plan;
    size_t row = 0;
    memset(&plan, 0, sizeof plan);
    KVZ_CHECK_OK(kvz_mlp_plan_create(o, N, &plan, &err), err);
    KVZ_CHECK_OK(kvz_mlp_plan_epoch(&plan, o, 0, &err), err);
    if (plan.order && pos < plan.n_train)
        row = plan.train_rows[plan.order[pos]];
    kvz_mlp_plan_free(&plan);
    return row;
}

/* A NaN feature in one training row: kvz_mlp_train_cuda_host fails with the
 * 1-based global step of the batch holding it (step 4 of epoch 0, so steps
 * 1-3 ran fine and from step 4 on the params are NaN), and frees the log. */
static void test_nan_step(fixture *f)
{
    kvz_error err = {0};
    kvz_mlp_options o;
    kvz_mlp_options_default(&o);
    o.epochs = 2, o.batch_size = 16, o.val_fraction = 0;
    float *x = malloc((size_t)N * D * sizeof *x), *p = malloc(f->np * sizeof *p);
    memcpy(x, f->x, (size_t)N * D * sizeof *x);
    memcpy(p, f->params, f->np * sizeof *p);
    size_t pos = 50, step = pos / 16 + 1; /* step 4 of 5 in epoch 0 */
    x[row_at(&o, pos) * D + 3] = NAN;
    kvz_mlp_log log;
    int rc = kvz_mlp_train_cuda_host(SHAPE, x, f->y, N, &o, NULL, kvz_mlp_view(SHAPE, p), &log,
                                     &err);
    char want[96];
    snprintf(want, sizeof want, "mlp: loss is not finite at step %zu", step);
    KVZ_CHECK(rc == KVZ_EINVAL && strcmp(err.msg, want) == 0, "GPU trainer: rc %d '%s', want '%s'",
              rc, err.msg, want);
    KVZ_CHECK(!log.step_loss && !log.grad_norm, "log kept after the failure");
    free(x), free(p);
}

static void test_mlp(void)
{
    fixture f;
    if (fixture_open(&f) == KVZ_OK) {
        float *grad = malloc(f.np * sizeof *grad);
        test_loss_grad(&f, grad);
        test_clip(&f, grad);
        test_adamw(&f, grad);
        test_trajectory(&f);
        test_mlp_errors(&f);
        test_dev_variants(&f);
        test_nan_step(&f);
        free(grad);
    } else {
        KVZ_CHECK(0, "mlp fixture setup failed");
    }
    fixture_close(&f);
}

/* ---------- ridge ---------- */

typedef struct ridge_sums {
    double *xtx, *xty, *x_sum, *y_sum, *y_sq_sum;
    int64_t count;
} ridge_sums;

static void ridge_download(kvz_cuda_ridge *r, ridge_sums *s)
{
    kvz_error err = {0};
    s->xtx = malloc((size_t)D * D * sizeof(double));
    s->xty = malloc((size_t)D * HKV * sizeof(double));
    s->x_sum = malloc(D * sizeof(double));
    s->y_sum = malloc(HKV * sizeof(double));
    s->y_sq_sum = malloc(HKV * sizeof(double));
    KVZ_CHECK_OK(kvz_cuda_ridge_download(r, s->xtx, s->xty, s->x_sum, s->y_sum, s->y_sq_sum,
                                         &s->count, &err), err);
}

static void ridge_sums_free(ridge_sums *s)
{
    free(s->xtx), free(s->xty), free(s->x_sum), free(s->y_sum), free(s->y_sq_sum);
}

static void check_sums(const char *what, const ridge_sums *g, const kvz_ridge_stats *st)
{
    char name[96];
    snprintf(name, sizeof name, "%s xtx", what);
    check_rel_f64(name, g->xtx, st->xtx, (size_t)D * D, 1e-10);
    snprintf(name, sizeof name, "%s xty", what);
    check_rel_f64(name, g->xty, st->xty, (size_t)D * HKV, 1e-10);
    snprintf(name, sizeof name, "%s x_sum", what);
    check_rel_f64(name, g->x_sum, st->x_sum, D, 1e-10);
    snprintf(name, sizeof name, "%s y_sum", what);
    check_rel_f64(name, g->y_sum, st->y_sum, HKV, 1e-10);
    snprintf(name, sizeof name, "%s y_sq_sum", what);
    check_rel_f64(name, g->y_sq_sum, st->y_sq_sum, HKV, 1e-10);
    KVZ_CHECK(g->count == st->count, "%s count %lld vs %lld", what, (long long)g->count,
              (long long)st->count);
    for (size_t i = 0; i < D; i++)
        for (size_t j = 0; j < i; j++)
            KVZ_CHECK(g->xtx[i * D + j] == g->xtx[j * D + i], "%s xtx not symmetric at %zu,%zu",
                      what, i, j);
}

static void test_ridge(void)
{
    kvz_error err = {0};
    float *x = malloc((size_t)N * D * sizeof *x), *y = malloc((size_t)N * HKV * sizeof *y);
    random_fill(x, (size_t)N * D, 1.5f);
    random_fill(y, (size_t)N * HKV, 4.0f);
    for (size_t i = 0; i < (size_t)N * HKV; i++)
        y[i] -= 6.0f; /* log-score-like offsets */
    kvz_guarded dx, dy;
    kvz_guarded_create(&dx, x, (size_t)N * D);
    kvz_guarded_create(&dy, y, (size_t)N * HKV);
    kvz_ridge_acc *acc = NULL;
    kvz_cuda_ridge *r = NULL;
    KVZ_CHECK_OK(kvz_ridge_acc_create(D, HKV, &acc, &err), err);
    KVZ_CHECK_OK(kvz_cuda_ridge_create(D, HKV, 32, &r, &err), err); /* 32: adds split */
    if (acc && r && dx.data && dy.data) {
        KVZ_CHECK_OK(kvz_ridge_acc_add(acc, x, y, 50, &err), err);
        KVZ_CHECK_OK(kvz_ridge_acc_add(acc, x + 50 * D, y + 50 * HKV, N - 50, &err), err);
        KVZ_CHECK_OK(kvz_cuda_ridge_add(r, dx.data, dy.data, 50, &err), err);
        KVZ_CHECK_OK(kvz_cuda_ridge_add(r, dx.data + 50 * D, dy.data + 50 * HKV, N - 50, &err),
                     err);
        KVZ_CHECK_OK(kvz_cuda_ridge_add(r, dx.data, dy.data, 0, &err), err);
        kvz_ridge_stats st = kvz_ridge_acc_stats(acc);
        ridge_sums got;
        ridge_download(r, &got);
        check_sums("ridge", &got, &st);
        ridge_sums_free(&got);
        /* A NaN at row 5 feature 7 is refused and leaves the sums as they were. */
        float nan = NAN;
        KVZ_CHECK_OK(kvz_cuda_upload(dx.data + 5 * D + 7, &nan, sizeof nan, &err), err);
        KVZ_CHECK(kvz_cuda_ridge_add(r, dx.data, dy.data, N, &err) == KVZ_EINVAL &&
                      strstr(err.msg, "row 5 feature 7"),
                  "NaN block: %s", err.msg);
        ridge_download(r, &got);
        check_sums("ridge after a refused block", &got, &st);
        ridge_sums_free(&got);
        KVZ_CHECK_OK(kvz_cuda_upload(dx.data + 5 * D + 7, &x[5 * D + 7], sizeof nan, &err), err);
    }
    kvz_ridge_acc_free(acc);
    kvz_cuda_ridge_free(r);
    kvz_guarded_check_free(&dx, x, "ridge x");
    kvz_guarded_check_free(&dy, y, "ridge y");
    free(x), free(y);
}

int main(void)
{
    if (!kvz_backend_compiled(KVZ_BACKEND_CUDA))
        kvz_test_skip("built without CUDA");
    kvz_error err = {0};
    if (kvz_cuda_device_count(&err) == 0)
        kvz_test_skip(err.msg[0] ? err.msg : "no CUDA device");
    test_mlp();
    test_ridge();
    return kvz_test_done();
}
