/* test_gpu_train: the trainer on the cuda backend (ops/backend.h, the
 * "trainer ops") against the same trainer on the cpu backend, on small
 * random shapes (D=40, Dh=5, Hkv=3, n=77):
 *   - kvz_mlp_work_loss_grad on cuda vs kvz_mlp_loss_grad (host): the loss
 *     and every gradient tensor within 1e-5 relative (max |diff| over
 *     max |ref| per tensor); the loss-only form gives the same loss; the
 *     parameters and inputs are left as they were;
 *   - kvz_op_clip_grad_norm (below, at and above the norm; norm NULL) and
 *     one kvz_op_adamw step from random moments (t = 3) on cuda vs
 *     kvz_mlp_clip_grad / kvz_mlp_adamw_step: 1e-6;
 *   - a 3-step loss_grad / clip(1.0) / AdamW trajectory on cuda vs the host:
 *     per-step loss and norm, final parameters 1e-5;
 *   - the ridge sums of kvz_ridge_acc_create_on(cuda) + add + download +
 *     stats vs the host accumulator: 1e-10 relative, symmetric xtx; a NaN
 *     feature is refused ("row 5 feature 7") and leaves the sums; the solve
 *     from the cuda sums vs the host solve (1e-6);
 *   - kvz_mlp_train_on(cuda, fp32 rows) vs kvz_mlp_train (cpu), 3 epochs:
 *     parameters within TRAIN_RTOL (below: why that number; the worst
 *     per-tensor difference is printed), step and validation losses 1e-5;
 *   - fp16 rows (a KVZ_F16 buffer): training equals, bit for bit, training
 *     on the fp32 widening of those rows on cuda, and matches the cpu
 *     trainer on the widened rows within TRAIN_RTOL;
 *   - TF32 and BF16 GEMMs: loss_grad's loss within 1e-2 of fp32, and
 *     kvz_mlp_train_on finishes with finite losses and parameters;
 *   - argument errors (kvz_mlp_train_on, the trainer ops, the ridge);
 *   - a NaN feature row: on cuda x is not checked, so training fails with
 *     "mlp: loss is not finite at epoch 1 step K", K the step whose batch
 *     holds the row (from the shared plan, kvz_mlp_plan_* of mlp_work.h),
 *     and frees the log; the cpu trainer refuses the row up front.
 * Device inputs and outputs carry guard floats on both sides (kvz_test_gpu.h).
 * Not here any more: the checks of the removed device-only trainer API
 * (kvz_cuda_mlp_upload_moments / reset_moments, the bit-for-bit
 * loss_grad_dev / clip_dev variants, kvz_cuda_mlp_create's flags and its
 * n > max_rows refusal: kvz_mlp_work_loss_grad documents 1 <= n <= max_rows
 * as its caller's contract).
 * Skipped (77) when the build has no CUDA or the machine has no GPU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "kvz_test_gpu.h"
#include "ops/backend.h"
#include "trainer/mlp.h"
#include "trainer/mlp_work.h"
#include "trainer/ridge.h"

enum { D = 40, DH = 5, HKV = 3, N = 77 };

/* kvz_mlp_train_on(cuda) vs kvz_mlp_train(cpu) after 3 epochs (15 AdamW
 * steps), max |diff| / max |ref| per tensor. The two run the same operation
 * order except inside the GEMMs (cuBLAS vs OpenBLAS summation order) and
 * the batch split (the cpu trainer combines per-thread parts), so they
 * differ by float32 rounding that AdamW's normalized steps carry on. The
 * emulator (cuBLAS on OpenBLAS) measured 7.9e-8 (fp32 rows) and 1.6e-7
 * (fp16 rows), printed below; 1e-4 leaves a factor of 600 and more for a
 * real GPU's GEMM orders (and TF32-free but differently blocked sums),
 * while one wrong step (lr, moments, clip, a batch's rows) moves weights by
 * about lr / (weight scale) = 5e-3 / 0.16, i.e. 3e-2 of their scale. */
#define TRAIN_RTOL 1e-4

/* ---------- helpers ---------- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static kvz_backend *be; /* kvz_test_cuda() */

static void random_fill(float *v, size_t n, float scale)
{
    kvz_test_random_fill(&rng_state, v, n, scale);
}

/* max |got - ref| / max |ref| (NaN counts as worst: returns inf). */
static double worst_rel(const float *got, const float *ref, size_t n, size_t *at)
{
    double worst = 0, scale = 0;
    *at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= worst))
            worst = isnan(d) ? INFINITY : d, *at = i;
        if (fabs(ref[i]) > scale)
            scale = fabs(ref[i]);
    }
    return scale > 0 ? worst / scale : worst > 0 ? INFINITY : 0;
}

/* max |got - ref| <= rtol * max |ref|; returns the relative worst. */
static double check_rel(const char *what, const float *got, const float *ref, size_t n,
                        double rtol)
{
    size_t at = 0;
    double w = worst_rel(got, ref, n, &at);
    KVZ_CHECK(w <= rtol, "%s: max |diff| / max |ref| %.3g at %zu (got %.9g ref %.9g), allowed %.3g",
              what, w, at, got[at], ref[at], rtol);
    return w;
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

/* Per tensor (w1, b1, w2, b2) relative comparison of two flat vectors;
 * returns the worst of the four. */
static double check_flat(const char *what, float *got, float *ref, double rtol)
{
    kvz_surrogate_layer g = kvz_mlp_view(SHAPE, got), r = kvz_mlp_view(SHAPE, ref);
    const float *gp[4] = {g.w1, g.b1, g.w2, g.b2}, *rp[4] = {r.w1, r.b1, r.w2, r.b2};
    const size_t len[4] = {(size_t)DH * D, DH, (size_t)HKV * DH, HKV};
    const char *names[4] = {"w1", "b1", "w2", "b2"};
    double worst = 0;
    for (int i = 0; i < 4; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s %s", what, names[i]);
        double w = check_rel(name, gp[i], rp[i], len[i], rtol);
        worst = w > worst ? w : worst;
    }
    return worst;
}

/* Backend doubles (the losses and norms the ops write). */
static kvz_buf doubles(size_t n)
{
    kvz_error err = {0};
    kvz_buf b = {0};
    KVZ_CHECK_OK(kvz_backend_alloc(be, KVZ_F64, n, "test doubles", &b, &err), err);
    return b;
}

static double fetch_double(const double *d)
{
    kvz_error err = {0};
    double v = NAN;
    KVZ_CHECK_OK(kvz_backend_download(be, &v, d, sizeof v, &err), err);
    return v;
}

static int all_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

/* The view of a guarded array as a kvz_buf of exactly its n floats. */
static kvz_buf guarded_buf(const kvz_guarded *g)
{
    kvz_buf b = kvz_buf_at(g->buf, KVZ_GUARD);
    b.numel = g->n;
    return b;
}

/* ---------- MLP: one step's pieces ---------- */

typedef struct fixture {
    size_t np;
    float *x, *y, *params;
    kvz_guarded dx, dy, dp;
    kvz_mlp_work *w;
    kvz_buf d; /* 8 backend doubles */
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
    int rc = kvz_guarded_create(&f->dx, f->x, (size_t)N * D);
    rc = rc ? rc : kvz_guarded_create(&f->dy, f->y, (size_t)N * HKV);
    rc = rc ? rc : kvz_guarded_create(&f->dp, f->params, f->np);
    if (rc == KVZ_OK) {
        rc = kvz_mlp_work_create(be, SHAPE, N, &f->w, &err);
        KVZ_CHECK_OK(rc, err);
    }
    f->d = doubles(8);
    return rc ? rc : f->d.data ? KVZ_OK : KVZ_ENOMEM;
}

static void fixture_close(fixture *f)
{
    kvz_guarded_check_free(&f->dx, f->x, "x");
    kvz_guarded_check_free(&f->dy, f->y, "y");
    kvz_guarded_check_free(&f->dp, f->params, "params");
    kvz_mlp_work_free(f->w);
    kvz_backend_free(be, &f->d);
    free(f->x), free(f->y), free(f->params);
}

/* Loss and gradient vs the host; leaves the cuda gradient in grad_out. */
static void test_loss_grad(fixture *f, float *grad_out)
{
    kvz_error err = {0};
    float *ref = malloc(f->np * sizeof *ref), *got = malloc(f->np * sizeof *got);
    double loss_ref = 0, *dl = f->d.data;
    kvz_guarded dg;
    kvz_guarded_create(&dg, NULL, f->np); /* unwritten entries read as NaN */
    KVZ_CHECK_OK(kvz_mlp_loss_grad(SHAPE, f->params, f->x, f->y, N, &loss_ref, ref, &err), err);
    KVZ_CHECK_OK(kvz_mlp_work_loss_grad(SHAPE, f->dp.data, f->dx.data, f->dy.data, N, f->w,
                                        KVZ_GEMM_FP32, dl, dg.data, &err), err);
    kvz_guarded_fetch(&dg, got, "gradient");
    double loss = fetch_double(dl);
    check_scalar("loss", loss, loss_ref, 1e-5);
    double worst = check_flat("gradient", got, ref, 1e-5);
    printf("loss_grad: loss rel diff %.3g, worst gradient tensor rel diff %.3g\n",
           fabs(loss - loss_ref) / fabs(loss_ref), worst);
    memcpy(grad_out, got, f->np * sizeof *got);
    /* the loss alone (grad NULL): the same loss */
    KVZ_CHECK_OK(kvz_mlp_work_loss_grad(SHAPE, f->dp.data, f->dx.data, f->dy.data, N, f->w,
                                        KVZ_GEMM_FP32, dl + 1, NULL, &err), err);
    double loss_only = fetch_double(dl + 1);
    KVZ_CHECK(loss_only == loss, "loss without the gradient %.17g vs %.17g", loss_only, loss);
    kvz_guarded_free(&dg);
    free(ref), free(got);
}

/* clip of grad on cuda (norm into a backend double, or NULL) vs the host;
 * returns whether it changed the gradient. */
static int clip_once(fixture *f, const float *grad, double max_norm, int with_norm,
                     const char *what)
{
    kvz_error err = {0};
    float *ref = malloc(f->np * sizeof *ref), *got = malloc(f->np * sizeof *got);
    memcpy(ref, grad, f->np * sizeof *ref);
    double norm_ref = kvz_mlp_clip_grad(ref, f->np, max_norm), *dn = (double *)f->d.data + 2;
    kvz_guarded dg;
    kvz_guarded_create(&dg, grad, f->np);
    KVZ_CHECK_OK(kvz_op_clip_grad_norm(be, dg.data, f->np, max_norm, with_norm ? dn : NULL,
                                       &err), err);
    kvz_guarded_fetch(&dg, got, what);
    char name[128];
    if (with_norm) {
        snprintf(name, sizeof name, "%s: norm", what);
        check_scalar(name, fetch_double(dn), norm_ref, 1e-6);
    }
    check_flat(what, got, ref, 1e-6);
    int changed = memcmp(got, grad, f->np * sizeof *got) != 0;
    kvz_guarded_free(&dg);
    free(ref), free(got);
    return changed;
}

static void test_clip(fixture *f, const float *grad)
{
    float *tmp = malloc(f->np * sizeof *tmp);
    memcpy(tmp, grad, f->np * sizeof *tmp);
    double norm = kvz_mlp_clip_grad(tmp, f->np, 0); /* 0: measure only */
    KVZ_CHECK(norm > 0 && isfinite(norm), "gradient norm %g", norm);
    KVZ_CHECK(!clip_once(f, grad, 0, 1, "clip with max_norm 0"), "max_norm 0 changed the gradient");
    KVZ_CHECK(clip_once(f, grad, 0.37 * norm, 1, "clip below the norm"),
              "clip below the norm did not scale");
    KVZ_CHECK(clip_once(f, grad, 0.37 * norm, 0, "clip below the norm, norm NULL"),
              "clip (norm NULL) below the norm did not scale");
    KVZ_CHECK(!clip_once(f, grad, 10.0 * norm, 1, "clip above the norm"),
              "clip above the norm scaled");
    free(tmp);
}

/* One AdamW step from random moments (t = 3) vs the host. */
static void test_adamw(fixture *f, const float *grad)
{
    kvz_error err = {0};
    size_t np = f->np;
    float *p = malloc(np * sizeof *p), *m1 = malloc(np * sizeof *m1), *v = malloc(np * sizeof *v);
    float *gp = malloc(np * sizeof *gp), *gm = malloc(np * sizeof *gm), *gv = malloc(np * sizeof *gv);
    memcpy(p, f->params, np * sizeof *p);
    random_fill(m1, np, 0.01f);
    random_fill(v, np, 1e-4f);
    for (size_t i = 0; i < np; i++)
        v[i] = fabsf(v[i]);
    kvz_mlp_options o;
    kvz_mlp_options_default(&o);
    kvz_guarded dp, dg, dm, dv;
    kvz_guarded_create(&dp, p, np);
    kvz_guarded_create(&dg, grad, np);
    kvz_guarded_create(&dm, m1, np);
    kvz_guarded_create(&dv, v, np);
    kvz_adamw_args a = {3, 4e-3, o.beta1, o.beta2, o.eps, o.weight_decay};
    KVZ_CHECK_OK(kvz_op_adamw(be, dp.data, dg.data, dm.data, dv.data, np, &a, &err), err);
    kvz_mlp_adamw_step(p, grad, m1, v, np, 3, 4e-3, &o);
    kvz_guarded_fetch(&dp, gp, "adamw params");
    kvz_guarded_fetch(&dm, gm, "adamw m");
    kvz_guarded_fetch(&dv, gv, "adamw v");
    check_flat("adamw params", gp, p, 1e-6);
    check_flat("adamw m", gm, m1, 1e-6);
    check_flat("adamw v", gv, v, 1e-6);
    kvz_guarded_check_free(&dg, grad, "adamw gradient");
    kvz_adamw_args bad = a;
    bad.t = 0;
    KVZ_CHECK(kvz_op_adamw(be, dp.data, dm.data, dm.data, dv.data, np, &bad, &err) == KVZ_EINVAL,
              "adamw t=0 accepted");
    kvz_guarded_free(&dp), kvz_guarded_free(&dm), kvz_guarded_free(&dv);
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
    float *m1 = calloc(np, sizeof *m1), *v = calloc(np, sizeof *v), *got = malloc(np * sizeof *got);
    memcpy(p, f->params, np * sizeof *p);
    kvz_guarded dp, dg, dm, dv;
    kvz_guarded_create(&dp, p, np);
    kvz_guarded_create(&dg, NULL, np);
    kvz_guarded_create(&dm, m1, np);
    kvz_guarded_create(&dv, v, np);
    double *dd = f->d.data;
    for (size_t t = 1; t <= 3; t++) {
        double loss_ref = 0, norm_ref;
        char what[64];
        KVZ_CHECK_OK(kvz_mlp_loss_grad(SHAPE, p, f->x, f->y, N, &loss_ref, g, &err), err);
        norm_ref = kvz_mlp_clip_grad(g, np, o.max_grad_norm);
        kvz_mlp_adamw_step(p, g, m1, v, np, t, o.lr, &o);
        kvz_adamw_args a = {t, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay};
        KVZ_CHECK_OK(kvz_mlp_work_loss_grad(SHAPE, dp.data, f->dx.data, f->dy.data, N, f->w,
                                            KVZ_GEMM_FP32, dd + 3, dg.data, &err), err);
        KVZ_CHECK_OK(kvz_op_clip_grad_norm(be, dg.data, np, o.max_grad_norm, dd + 4, &err), err);
        KVZ_CHECK_OK(kvz_op_adamw(be, dp.data, dg.data, dm.data, dv.data, np, &a, &err), err);
        snprintf(what, sizeof what, "trajectory step %zu loss", t);
        check_scalar(what, fetch_double(dd + 3), loss_ref, 1e-5);
        snprintf(what, sizeof what, "trajectory step %zu norm", t);
        check_scalar(what, fetch_double(dd + 4), norm_ref, 1e-5);
    }
    kvz_guarded_fetch(&dp, got, "trajectory params");
    double worst = check_flat("trajectory params", got, p, 1e-5);
    printf("trajectory: worst parameter tensor rel diff after 3 steps %.3g\n", worst);
    kvz_guarded_fetch(&dm, got, "trajectory m");
    kvz_guarded_fetch(&dv, got, "trajectory v");
    kvz_guarded_free(&dp), kvz_guarded_free(&dg), kvz_guarded_free(&dm), kvz_guarded_free(&dv);
    free(p), free(g), free(m1), free(v), free(got);
}

/* TF32 / BF16 GEMMs: the loss stays within 1e-2 of the host fp32 loss. */
static void test_precision_loss(fixture *f)
{
    kvz_error err = {0};
    double ref = 0, *dl = (double *)f->d.data + 5;
    KVZ_CHECK_OK(kvz_mlp_loss_grad(SHAPE, f->params, f->x, f->y, N, &ref, NULL, &err), err);
    const kvz_gemm_precision precs[2] = {KVZ_GEMM_TF32, KVZ_GEMM_BF16};
    for (int i = 0; i < 2; i++) {
        char what[64];
        KVZ_CHECK_OK(kvz_mlp_work_loss_grad(SHAPE, f->dp.data, f->dx.data, f->dy.data, N, f->w,
                                            precs[i], dl, NULL, &err), err);
        double loss = fetch_double(dl);
        snprintf(what, sizeof what, "%s loss", kvz_gemm_precision_name(precs[i]));
        check_scalar(what, loss, ref, 1e-2);
        printf("%s loss rel diff vs fp32 %.3g\n", kvz_gemm_precision_name(precs[i]),
               fabs(loss - ref) / fabs(ref));
    }
}

/* ---------- MLP: whole training runs ---------- */

static kvz_mlp_options train_options(void)
{
    kvz_mlp_options o;
    kvz_mlp_options_default(&o);
    o.epochs = 3, o.batch_size = 16, o.seed = 5; /* 4 validation rows, 5 steps an epoch */
    return o;
}

/* kvz_mlp_train_on(cuda, x, y) into params (flat [np]) with its log. */
static int train_cuda(fixture *f, kvz_buf x, const kvz_mlp_options *o, kvz_gemm_precision prec,
                      float *flat, kvz_mlp_log *log, kvz_error *err)
{
    return kvz_mlp_train_on(be, SHAPE, x, guarded_buf(&f->dy), f->y, N, o, prec,
                            kvz_mlp_view(SHAPE, flat), log, err);
}

/* The two logs agree: same step counts, step / validation losses 1e-5. */
static void compare_logs(const char *what, const kvz_mlp_log *lg, const kvz_mlp_log *lc)
{
    KVZ_CHECK(lg->n_steps == lc->n_steps && lg->n_epochs == lc->n_epochs,
              "%s: %zu steps %zu epochs vs cpu %zu %zu", what, lg->n_steps, lg->n_epochs,
              lc->n_steps, lc->n_epochs);
    double worst = 0;
    for (size_t i = 0; i < lg->n_steps && i < lc->n_steps; i++) {
        double d = fabs(lg->step_loss[i] - lc->step_loss[i]) / fabs(lc->step_loss[i]);
        worst = d > worst || isnan(d) ? d : worst;
        KVZ_CHECK(d <= 1e-5, "%s: step %zu loss %.9g vs cpu %.9g", what, i + 1, lg->step_loss[i],
                  lc->step_loss[i]);
        KVZ_CHECK(fabs(lg->grad_norm[i] - lc->grad_norm[i]) <= 1e-5 * fabs(lc->grad_norm[i]),
                  "%s: step %zu norm %.9g vs cpu %.9g", what, i + 1, lg->grad_norm[i],
                  lc->grad_norm[i]);
    }
    for (size_t e = 0; e < lg->n_epochs && e < lc->n_epochs; e++)
        KVZ_CHECK(fabs(lg->val_loss[e] - lc->val_loss[e]) <= 1e-5 * fabs(lc->val_loss[e]),
                  "%s: epoch %zu val loss %.9g vs cpu %.9g", what, e + 1, lg->val_loss[e],
                  lc->val_loss[e]);
    printf("%s: worst step loss rel diff %.3g\n", what, worst);
}

/* cuda training on x (fp32 rows, the fixture's) vs the cpu trainer. */
static void test_train_vs_cpu(fixture *f)
{
    kvz_error err = {0};
    kvz_mlp_options o = train_options();
    float *gpu = calloc(f->np, sizeof *gpu), *cpu = calloc(f->np, sizeof *cpu);
    kvz_mlp_log lg = {0}, lc = {0};
    KVZ_CHECK_OK(kvz_mlp_train(SHAPE, f->x, f->y, N, &o, kvz_mlp_view(SHAPE, cpu), &lc, &err),
                 err);
    KVZ_CHECK_OK(train_cuda(f, guarded_buf(&f->dx), &o, KVZ_GEMM_FP32, gpu, &lg, &err), err);
    KVZ_CHECK(lg.n_steps == 15, "%zu steps, want 3 epochs x 5", lg.n_steps);
    double worst = check_flat("train_on(cuda) vs train(cpu) params", gpu, cpu, TRAIN_RTOL);
    printf("train_on(cuda) vs train(cpu), 3 epochs: worst parameter tensor rel diff %.3g "
           "(allowed %.0e)\n", worst, TRAIN_RTOL);
    compare_logs("train_on(cuda) vs train(cpu)", &lg, &lc);
    kvz_mlp_log_free(&lg), kvz_mlp_log_free(&lc);
    free(gpu), free(cpu);
}

/* fp16 rows: an F16 buffer (guards of an fp16 NaN pattern around it). */
static void test_train_fp16(fixture *f)
{
    enum { G16 = 2 * KVZ_GUARD, NAN16 = 0x7e5a };
    kvz_error err = {0};
    size_t nx = (size_t)N * D, total = nx + 2 * G16;
    uint16_t *h16 = malloc(total * sizeof *h16), *back = malloc(total * sizeof *back);
    float *xw = malloc(nx * sizeof *xw);
    for (size_t i = 0; i < total; i++)
        h16[i] = NAN16;
    for (size_t i = 0; i < nx; i++) {
        h16[G16 + i] = kvz_f32_to_f16(f->x[i]);
        xw[i] = kvz_f16_widen(h16[G16 + i]);
    }
    kvz_buf b16 = {0};
    kvz_guarded dxw;
    int rc = kvz_backend_alloc(be, KVZ_F16, total, "fp16 test rows", &b16, &err);
    rc = rc ? rc : kvz_backend_upload(be, b16.data, h16, total * sizeof *h16, &err);
    KVZ_CHECK_OK(rc, err);
    kvz_guarded_create(&dxw, xw, nx);
    kvz_buf x16 = kvz_buf_at(b16, G16);
    x16.numel = nx;
    kvz_mlp_options o = train_options();
    float *g16 = calloc(f->np, sizeof *g16), *g32 = calloc(f->np, sizeof *g32);
    float *cpu = calloc(f->np, sizeof *cpu);
    kvz_mlp_log l16 = {0}, l32 = {0}, lc = {0};
    if (rc == KVZ_OK) {
        KVZ_CHECK_OK(train_cuda(f, x16, &o, KVZ_GEMM_FP32, g16, &l16, &err), err);
        KVZ_CHECK_OK(train_cuda(f, guarded_buf(&dxw), &o, KVZ_GEMM_FP32, g32, &l32, &err), err);
        KVZ_CHECK_OK(kvz_mlp_train(SHAPE, xw, f->y, N, &o, kvz_mlp_view(SHAPE, cpu), &lc, &err),
                     err);
        KVZ_CHECK(memcmp(g16, g32, f->np * sizeof *g16) == 0,
                  "fp16 rows train differently from their fp32 widening");
        KVZ_CHECK(l16.n_steps == l32.n_steps && l16.step_loss && l32.step_loss &&
                      memcmp(l16.step_loss, l32.step_loss, l16.n_steps * sizeof(double)) == 0,
                  "fp16 rows: step losses differ from the fp32 widening's");
        double worst = check_flat("fp16 rows: train_on(cuda) vs train(cpu) params", g16, cpu,
                                  TRAIN_RTOL);
        printf("fp16 rows: train_on(cuda) vs train(cpu) on the widened rows: worst parameter "
               "tensor rel diff %.3g\n", worst);
        compare_logs("fp16 rows vs cpu", &l16, &lc);
        KVZ_CHECK_OK(kvz_backend_download(be, back, b16.data, total * sizeof *back, &err), err);
        KVZ_CHECK(memcmp(back, h16, total * sizeof *back) == 0,
                  "fp16 rows or their guards modified by training");
    }
    kvz_guarded_check_free(&dxw, xw, "widened rows");
    kvz_backend_free(be, &b16);
    kvz_mlp_log_free(&l16), kvz_mlp_log_free(&l32), kvz_mlp_log_free(&lc);
    free(h16), free(back), free(xw), free(g16), free(g32), free(cpu);
}

/* TF32 and BF16 GEMMs: training finishes with finite losses and weights. */
static void test_train_precisions(fixture *f)
{
    const kvz_gemm_precision precs[2] = {KVZ_GEMM_TF32, KVZ_GEMM_BF16};
    kvz_mlp_options o = train_options();
    for (int i = 0; i < 2; i++) {
        kvz_error err = {0};
        const char *name = kvz_gemm_precision_name(precs[i]);
        float *p = calloc(f->np, sizeof *p);
        kvz_mlp_log log = {0};
        KVZ_CHECK_OK(train_cuda(f, guarded_buf(&f->dx), &o, precs[i], p, &log, &err), err);
        KVZ_CHECK(all_finite(p, f->np), "%s: weights not finite", name);
        int finite = log.n_steps == 15;
        for (size_t s = 0; finite && s < log.n_steps; s++)
            finite = isfinite(log.step_loss[s]) && isfinite(log.grad_norm[s]);
        for (size_t e = 0; finite && e < log.n_epochs; e++)
            finite = isfinite(log.train_loss[e]) && isfinite(log.val_loss[e]);
        KVZ_CHECK(finite, "%s: a loss or norm is not finite (%zu steps)", name, log.n_steps);
        if (log.n_epochs)
            printf("%s: final train loss %.6g, val loss %.6g\n", name,
                   log.train_loss[log.n_epochs - 1], log.val_loss[log.n_epochs - 1]);
        kvz_mlp_log_free(&log);
        free(p);
    }
}

static void test_train_errors(fixture *f)
{
    kvz_error err = {0};
    kvz_mlp_options o = train_options();
    float *p = calloc(f->np, sizeof *p);
    kvz_surrogate_layer pv = kvz_mlp_view(SHAPE, p);
    kvz_buf x = guarded_buf(&f->dx), y = guarded_buf(&f->dy), bad;
    kvz_mlp_log log;
    int rc = kvz_mlp_train_on(NULL, SHAPE, x, y, f->y, N, &o, KVZ_GEMM_FP32, pv, &log, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && !log.step_loss, "backend NULL: rc %d", rc);
    rc = kvz_mlp_train_on(be, SHAPE, x, y, NULL, N, &o, KVZ_GEMM_FP32, pv, &log, &err);
    KVZ_CHECK(rc == KVZ_EINVAL, "cuda without a host copy of y: rc %d", rc);
    rc = kvz_mlp_train_on(be, SHAPE, x, y, f->y, 0, &o, KVZ_GEMM_FP32, pv, &log, &err);
    KVZ_CHECK(rc == KVZ_EINVAL, "n = 0: rc %d", rc);
    bad = x, bad.dtype = KVZ_BF16;
    rc = kvz_mlp_train_on(be, SHAPE, bad, y, f->y, N, &o, KVZ_GEMM_FP32, pv, &log, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "bfloat16"), "bf16 x: rc %d '%s'", rc, err.msg);
    bad = y, bad.numel--;
    rc = kvz_mlp_train_on(be, SHAPE, x, bad, f->y, N, &o, KVZ_GEMM_FP32, pv, &log, &err);
    KVZ_CHECK(rc == KVZ_EINVAL, "y one value short: rc %d", rc);
    kvz_mlp_shape s0 = {D, 0, HKV};
    rc = kvz_mlp_train_on(be, s0, x, y, f->y, N, &o, KVZ_GEMM_FP32, pv, &log, &err);
    KVZ_CHECK(rc == KVZ_EINVAL, "Dh = 0: rc %d", rc);
    kvz_mlp_options o0 = o;
    o0.epochs = 0;
    rc = kvz_mlp_train_on(be, SHAPE, x, y, f->y, N, &o0, KVZ_GEMM_FP32, pv, &log, &err);
    KVZ_CHECK(rc == KVZ_EINVAL, "0 epochs: rc %d", rc);
    rc = kvz_mlp_train_on(be, SHAPE, x, y, f->y, N, &o, (kvz_gemm_precision)7, pv, &log, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && !log.step_loss, "precision 7: rc %d '%s'", rc, err.msg);
    /* y is checked on every backend (from the host copy) */
    float *yn = malloc((size_t)N * HKV * sizeof *yn);
    memcpy(yn, f->y, (size_t)N * HKV * sizeof *yn);
    yn[10 * HKV + 2] = NAN;
    rc = kvz_mlp_train_on(be, SHAPE, x, y, yn, N, &o, KVZ_GEMM_FP32, pv, &log, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && !strcmp(err.msg, "mlp: y row 10 column 2 is not finite"),
              "NaN y: rc %d '%s'", rc, err.msg);
    free(yn);
    /* the ops' own checks */
    double *dd = f->d.data;
    KVZ_CHECK(kvz_op_clip_grad_norm(be, f->dp.data, 0, 1.0, dd, &err) == KVZ_EINVAL,
              "clip of 0 values accepted");
    KVZ_CHECK(kvz_op_mse(be, f->dy.data, f->dy.data, 0, NULL, dd, &err) == KVZ_EINVAL,
              "mse of 0 values accepted");
    KVZ_CHECK(kvz_op_gemm(be, 0, 1, 4, 4, 4, f->dx.data, f->dx.data, 0.0f, f->dp.data,
                          (kvz_gemm_precision)7, &err) == KVZ_EINVAL,
              "gemm precision 7 accepted");
    KVZ_CHECK(kvz_op_take_rows(be, x, D, NULL, N - 2, 3, f->dp.data, &err) == KVZ_EINVAL,
              "take_rows past the rows accepted");
    kvz_ridge_acc *acc = NULL;
    KVZ_CHECK(kvz_ridge_acc_create_on(be, 0, HKV, &acc, &err) == KVZ_EINVAL && !acc,
              "ridge D = 0 accepted");
    /* after all that the backend still trains */
    KVZ_CHECK_OK(kvz_mlp_work_loss_grad(SHAPE, f->dp.data, f->dx.data, f->dy.data, N, f->w,
                                        KVZ_GEMM_FP32, dd, NULL, &err), err);
    KVZ_CHECK(isfinite(fetch_double(dd)), "loss after the refused calls not finite");
    free(p);
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

/* A NaN feature in one training row: on cuda x is not checked, so training
 * fails at the step of the batch holding it (step 4 of epoch 1: steps 1-3
 * ran fine, from step 4 on the params are NaN), and frees the log; the cpu
 * trainer refuses the row before training. */
static void test_nan_step(fixture *f)
{
    kvz_error err = {0};
    kvz_mlp_options o;
    kvz_mlp_options_default(&o);
    o.epochs = 2, o.batch_size = 16, o.val_fraction = 0;
    float *x = malloc((size_t)N * D * sizeof *x), *p = malloc(f->np * sizeof *p);
    memcpy(x, f->x, (size_t)N * D * sizeof *x);
    memcpy(p, f->params, f->np * sizeof *p);
    size_t pos = 50, step = pos / 16 + 1, row = row_at(&o, pos); /* step 4 of 5 in epoch 1 */
    x[row * D + 3] = NAN;
    kvz_guarded dx;
    kvz_guarded_create(&dx, x, (size_t)N * D);
    kvz_mlp_log log;
    int rc = train_cuda(f, guarded_buf(&dx), &o, KVZ_GEMM_FP32, p, &log, &err);
    char want[96];
    snprintf(want, sizeof want, "mlp: loss is not finite at epoch 1 step %zu", step);
    KVZ_CHECK(rc == KVZ_EINVAL && strcmp(err.msg, want) == 0, "cuda trainer: rc %d '%s', want '%s'",
              rc, err.msg, want);
    KVZ_CHECK(!log.step_loss && !log.grad_norm, "log kept after the failure");
    kvz_guarded_check_free(&dx, x, "NaN rows");
    rc = kvz_mlp_train(SHAPE, x, f->y, N, &o, kvz_mlp_view(SHAPE, p), &log, &err);
    snprintf(want, sizeof want, "mlp: x row %zu column 3 is not finite", row);
    KVZ_CHECK(rc == KVZ_EINVAL && strcmp(err.msg, want) == 0, "cpu trainer: rc %d '%s', want '%s'",
              rc, err.msg, want);
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
        test_precision_loss(&f);
        test_train_vs_cpu(&f);
        test_train_fp16(&f);
        test_train_precisions(&f);
        test_train_errors(&f);
        test_nan_step(&f);
        free(grad);
    } else {
        KVZ_CHECK(0, "mlp fixture setup failed");
    }
    fixture_close(&f);
}

/* ---------- ridge ---------- */

static void check_sums(const char *what, const kvz_ridge_stats *g, const kvz_ridge_stats *st)
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
    KVZ_CHECK(g->d_in == D && g->d_out == HKV, "%s dims %zu x %zu", what, g->d_in, g->d_out);
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
    kvz_ridge_acc *acc = NULL, *r = NULL;
    KVZ_CHECK_OK(kvz_ridge_acc_create(D, HKV, &acc, &err), err);
    KVZ_CHECK_OK(kvz_ridge_acc_create_on(be, D, HKV, &r, &err), err);
    if (acc && r && dx.data && dy.data) {
        KVZ_CHECK_OK(kvz_ridge_acc_add(acc, x, y, 50, &err), err);
        KVZ_CHECK_OK(kvz_ridge_acc_add(acc, x + 50 * D, y + 50 * HKV, N - 50, &err), err);
        KVZ_CHECK_OK(kvz_ridge_acc_add(r, dx.data, dy.data, 50, &err), err);
        KVZ_CHECK_OK(kvz_ridge_acc_add(r, dx.data + 50 * D, dy.data + 50 * HKV, N - 50, &err),
                     err);
        KVZ_CHECK_OK(kvz_ridge_acc_add(r, dx.data, dy.data, 0, &err), err);
        kvz_ridge_stats st = kvz_ridge_acc_stats(acc);
        KVZ_CHECK_OK(kvz_ridge_acc_download(r, &err), err);
        kvz_ridge_stats got = kvz_ridge_acc_stats(r);
        check_sums("ridge", &got, &st);
        /* the solve from the cuda sums vs the host's */
        float wc[HKV * D], bc[HKV], wg[HKV * D], bg[HKV];
        KVZ_CHECK_OK(kvz_ridge_solve(&st, 1.0, wc, bc, &err), err);
        KVZ_CHECK_OK(kvz_ridge_acc_solve(r, 1.0, wg, bg, &err), err);
        kvz_test_allclose("ridge weights: cuda sums vs host", wg, wc, HKV * D, 1e-7, 1e-6);
        kvz_test_allclose("ridge intercepts: cuda sums vs host", bg, bc, HKV, 1e-7, 1e-6);
        /* A NaN at row 5 feature 7 is refused and leaves the sums as they were. */
        float nan = NAN;
        KVZ_CHECK_OK(kvz_backend_upload(be, dx.data + 5 * D + 7, &nan, sizeof nan, &err), err);
        KVZ_CHECK(kvz_ridge_acc_add(r, dx.data, dy.data, N, &err) == KVZ_EINVAL &&
                      strstr(err.msg, "row 5 feature 7"),
                  "NaN block: %s", err.msg);
        KVZ_CHECK_OK(kvz_ridge_acc_download(r, &err), err);
        got = kvz_ridge_acc_stats(r);
        check_sums("ridge after a refused block", &got, &st);
        KVZ_CHECK_OK(kvz_backend_upload(be, dx.data + 5 * D + 7, &x[5 * D + 7], sizeof nan, &err),
                     err);
    }
    kvz_ridge_acc_free(acc);
    kvz_ridge_acc_free(r);
    kvz_guarded_check_free(&dx, x, "ridge x");
    kvz_guarded_check_free(&dy, y, "ridge y");
    free(x), free(y);
}

int main(void)
{
    if (!kvz_backend_compiled(KVZ_BACKEND_CUDA))
        kvz_test_skip("built without CUDA");
    kvz_error err = {0};
    if (kvz_backend_device_count(KVZ_BACKEND_CUDA, &err) == 0 || !(be = kvz_test_cuda()))
        kvz_test_skip(err.msg[0] ? err.msg : "no CUDA device");
    printf("backend: %s%s\n", kvz_backend_name(be), kvz_backend_emulated() ? " (emulated)" : "");
    test_mlp();
    test_ridge();
    kvz_backend_close(be);
    return kvz_test_done();
}
