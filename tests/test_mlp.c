/* test_mlp: trainer/mlp against (a) torch float32 training of the exact
 * recipe with fixed init / split / batch order
 * (tests/fixtures/trainer/mlp.*, make_trainer_fixtures.py): per-step loss,
 * gradient norms, lr, final weights; (b) a float64 reference forward in this
 * file: loss and float32 analytic gradients vs float64 central finite
 * differences; (c) AdamW and clipping formulas; (d) determinism; (e) a
 * teacher-student sanity run; (f) error paths. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "trainer/mlp.h"
#include "trainer/surrogate.h"
#include "trainer_fixture.h"

/* ---------- (a) torch parity ---------- */

static void copy_view(kvz_mlp_shape s, float *dst_flat, kvz_surrogate_layer src)
{
    kvz_surrogate_layer d = kvz_mlp_view(s, dst_flat);
    memcpy(d.w1, src.w1, s.d_hidden * s.d_in * sizeof(float));
    memcpy(d.b1, src.b1, s.d_hidden * sizeof(float));
    memcpy(d.w2, src.w2, s.d_out * s.d_hidden * sizeof(float));
    memcpy(d.b2, src.b2, s.d_out * sizeof(float));
}

static void check_log_array(const char *what, const double *got, const trainer_fixture *fx,
                            const char *name, size_t n, double atol, double rtol)
{
    size_t nref = 0;
    double *ref = trainer_fixture_f64(fx, name, &nref);
    KVZ_CHECK(ref && nref == n, "%s: fixture has %zu entries, C log %zu", what, nref, n);
    if (!ref || nref != n) {
        free(ref);
        return;
    }
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double excess = fabs(got[i] - ref[i]) - (atol + rtol * fabs(ref[i]));
        if (i == 0 || excess > worst) {
            worst = excess;
            wi = i;
        }
    }
    printf("%s: worst entry %zu: C %.9g torch %.9g (|diff| %.3e)\n", what, wi, got[wi], ref[wi],
           fabs(got[wi] - ref[wi]));
    KVZ_CHECK(worst <= 0, "%s: entry %zu C %.9g torch %.9g beyond atol %g rtol %g", what, wi,
              got[wi], ref[wi], atol, rtol);
    free(ref);
}

/* Trained straight into a kvz_surrogate layer, kvz_surrogate_predict gives
 * the loss the trainer computes. */
static void check_surrogate_agrees(kvz_mlp_shape s, const float *flat, const float *x,
                                   const float *y, size_t n)
{
    kvz_surrogate *sur = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_surrogate_create(KVZ_SURROGATE_KIND_MLP, 2, s.d_in, s.d_hidden, s.d_out, &sur,
                                      &err),
                 err);
    if (!sur)
        return;
    kvz_surrogate_layer l1 = kvz_surrogate_layer_at(sur, 1), src = kvz_mlp_view(s, (float *)flat);
    memcpy(l1.w1, src.w1, s.d_hidden * s.d_in * sizeof(float));
    memcpy(l1.b1, src.b1, s.d_hidden * sizeof(float));
    memcpy(l1.w2, src.w2, s.d_out * s.d_hidden * sizeof(float));
    memcpy(l1.b2, src.b2, s.d_out * sizeof(float));
    int contiguous = l1.b1 == l1.w1 + s.d_hidden * s.d_in && l1.w2 == l1.b1 + s.d_hidden &&
                     l1.b2 == l1.w2 + s.d_out * s.d_hidden;
    KVZ_CHECK(contiguous, "surrogate layer block is not w1,b1,w2,b2 contiguous");
    float *pred = malloc(n * s.d_out * sizeof *pred);
    double loss = 0, sse = 0;
    KVZ_CHECK_OK(kvz_surrogate_predict(sur, 1, x, n, pred, NULL, &err), err);
    KVZ_CHECK_OK(kvz_mlp_loss_grad(s, flat, x, y, n, &loss, NULL, &err), err);
    for (size_t i = 0; i < n * s.d_out; i++)
        sse += ((double)pred[i] - y[i]) * ((double)pred[i] - y[i]);
    sse /= (double)(n * s.d_out);
    printf("kvz_surrogate_predict MSE %.9g, trainer loss %.9g\n", sse, loss);
    KVZ_CHECK(fabs(sse - loss) <= 1e-5 * loss, "surrogate MSE %.9g vs trainer %.9g", sse, loss);
    free(pred);
    kvz_surrogate_free(sur);
}

static void test_torch_parity(void)
{
    trainer_fixture fx;
    if (trainer_fixture_open(&fx, "mlp")) {
        KVZ_CHECK(0, "mlp fixture unreadable");
        return;
    }
    kvz_mlp_shape s = {trainer_fixture_int(&fx, "d_in"), trainer_fixture_int(&fx, "d_hidden"),
                       trainer_fixture_int(&fx, "d_out")};
    size_t n = trainer_fixture_int(&fx, "n"), P = kvz_mlp_n_params(s), n_val = 0, n_init = 0;
    float *x = trainer_fixture_f32(&fx, "x", NULL), *y = trainer_fixture_f32(&fx, "y", NULL);
    float *init = trainer_fixture_f32(&fx, "init", &n_init);
    float *final = trainer_fixture_f32(&fx, "final", NULL);
    size_t *val = trainer_fixture_sizes(&fx, "val_rows", &n_val);
    size_t *perms = trainer_fixture_sizes(&fx, "perms", NULL);
    KVZ_CHECK(n_init == P, "init has %zu params, expected %zu", n_init, P);

    kvz_mlp_options o;
    kvz_mlp_options_default(&o);
    o.epochs = trainer_fixture_int(&fx, "epochs");
    o.init = 0;
    o.val_rows = val;
    o.n_val = n_val;
    o.perms = perms;
    float *params = malloc(P * sizeof *params), *got = malloc(P * sizeof *got);
    memcpy(params, init, P * sizeof *params);
    kvz_mlp_log log;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_mlp_train(s, x, y, n, &o, kvz_mlp_view(s, params), &log, &err), err);
    if (log.n_steps) {
        check_log_array("step loss", log.step_loss, &fx, "step_loss", log.n_steps, 1e-4, 0);
        check_log_array("grad norm", log.grad_norm, &fx, "grad_norm", log.n_steps, 0, 1e-4);
        check_log_array("epoch lr", log.lr, &fx, "lr", log.n_epochs, 1e-12, 1e-9);
        check_log_array("train loss", log.train_loss, &fx, "train_loss", log.n_epochs, 1e-4, 0);
        check_log_array("val loss", log.val_loss, &fx, "val_loss", log.n_epochs, 1e-4, 0);
        copy_view(s, got, kvz_mlp_view(s, params));
        /* 1e-4 relative per element, with a 1e-6 floor for weights near 0 */
        kvz_test_allclose("final weights vs torch", got, final, P, 1e-6, 1e-4);
        double *gd = malloc(P * sizeof *gd), *rd = malloc(P * sizeof *rd);
        for (size_t i = 0; i < P; i++) {
            gd[i] = got[i];
            rd[i] = final[i];
        }
        KVZ_CHECK(trainer_rel_err("final weights (normwise)", gd, rd, P) <= 1e-4, "final weights");
        check_surrogate_agrees(s, params, x, y, n);
        free(gd);
        free(rd);
    }
    kvz_mlp_log_free(&log);
    free(params);
    free(got);
    free(x);
    free(y);
    free(init);
    free(final);
    free(val);
    free(perms);
    trainer_fixture_close(&fx);
}

/* ---------- (b) float64 reference loss and finite differences ---------- */

static double ref_loss(kvz_mlp_shape s, const double *th, const float *x, const float *y,
                       size_t n)
{
    size_t D = s.d_in, Dh = s.d_hidden, H = s.d_out;
    const double *w1 = th, *b1 = w1 + Dh * D, *w2 = b1 + Dh, *b2 = w2 + H * Dh;
    double sse = 0, a[64];
    for (size_t r = 0; r < n; r++) {
        for (size_t j = 0; j < Dh; j++) {
            double h = b1[j];
            for (size_t k = 0; k < D; k++)
                h += w1[j * D + k] * x[r * D + k];
            a[j] = 0.5 * h * (1.0 + erf(h / sqrt(2.0)));
        }
        for (size_t o = 0; o < H; o++) {
            double out = b2[o];
            for (size_t j = 0; j < Dh; j++)
                out += w2[o * Dh + j] * a[j];
            sse += (out - y[r * H + o]) * (out - y[r * H + o]);
        }
    }
    return sse / (double)(n * H);
}

static void test_gradients(void)
{
    kvz_mlp_shape s = {5, 4, 3};
    size_t n = 37, P = kvz_mlp_n_params(s);
    float x[37 * 5], y[37 * 3], *theta = malloc(P * sizeof *theta);
    float *grad = malloc(P * sizeof *grad);
    double *th = calloc(P, sizeof *th), *fd = malloc(P * sizeof *fd), *g = malloc(P * sizeof *g);
    unsigned st = 99;
    for (size_t i = 0; i < n * s.d_in; i++) {
        st = st * 1664525u + 1013904223u;
        x[i] = (float)((int)(st >> 9) % 2001 - 1000) / 400.0f;
    }
    for (size_t i = 0; i < n * s.d_out; i++)
        y[i] = sinf((float)i) - 1.5f;
    kvz_mlp_init_default(s, theta, 3);
    double loss = 0;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_mlp_loss_grad(s, theta, x, y, n, &loss, grad, &err), err);
    for (size_t i = 0; i < P; i++)
        th[i] = theta[i];
    double lref = ref_loss(s, th, x, y, n);
    printf("loss: C float32 %.9g, float64 reference %.9g\n", loss, lref);
    KVZ_CHECK(fabs(loss - lref) <= 1e-5 * fabs(lref), "loss %.9g vs reference %.9g", loss, lref);
    /* central differences in float64, h = 1e-5: truncation + rounding ~1e-9 */
    for (size_t i = 0; i < P; i++) {
        double keep = th[i], hstep = 1e-5;
        th[i] = keep + hstep;
        double lp = ref_loss(s, th, x, y, n);
        th[i] = keep - hstep;
        double lm = ref_loss(s, th, x, y, n);
        th[i] = keep;
        fd[i] = (lp - lm) / (2 * hstep);
        g[i] = grad[i];
    }
    /* float32 gradient: allow 1e-4 of the largest gradient entry */
    double rel = trainer_rel_err("float32 gradient vs float64 central differences", g, fd, P);
    KVZ_CHECK(rel <= 1e-4, "gradient rel error %.3e > 1e-4", rel);
    free(theta);
    free(grad);
    free(th);
    free(fd);
    free(g);
}

/* ---------- (c) clipping and AdamW formulas ---------- */

static void test_clip_and_adamw(void)
{
    float g[4] = {3.0f, 4.0f, 0.0f, 0.0f};
    double norm = kvz_mlp_clip_grad(g, 4, 1.0);
    KVZ_CHECK(fabs(norm - 5.0) < 1e-12, "norm %g", norm);
    KVZ_CHECK(fabs(g[0] - 3.0 / (5.0 + 1e-6)) < 1e-7 && fabs(g[1] - 4.0 / (5.0 + 1e-6)) < 1e-7,
              "clipped %g %g", g[0], g[1]);
    float small[2] = {0.3f, 0.4f};
    kvz_mlp_clip_grad(small, 2, 1.0);
    KVZ_CHECK(small[0] == 0.3f && small[1] == 0.4f, "norm 0.5 must not be scaled");

    kvz_mlp_options o;
    kvz_mlp_options_default(&o);
    float p[2] = {0.5f, -0.25f}, m[2] = {0}, v[2] = {0}, gr[2] = {0.1f, -0.02f};
    double pd[2] = {0.5, -0.25}, md[2] = {0}, vd[2] = {0};
    for (size_t t = 1; t <= 3; t++) {
        double lr = 1e-2 / (double)t;
        kvz_mlp_adamw_step(p, gr, m, v, 2, t, lr, &o);
        for (int i = 0; i < 2; i++) { /* torch.optim.AdamW, float64 */
            pd[i] *= 1 - lr * 0.01;
            md[i] = 0.9 * md[i] + 0.1 * gr[i];
            vd[i] = 0.999 * vd[i] + 0.001 * gr[i] * gr[i];
            double denom = sqrt(vd[i]) / sqrt(1 - pow(0.999, (double)t)) + 1e-8;
            pd[i] -= lr / (1 - pow(0.9, (double)t)) * md[i] / denom;
        }
    }
    KVZ_CHECK(fabs(p[0] - pd[0]) < 1e-6 && fabs(p[1] - pd[1]) < 1e-6,
              "AdamW: C %.9g %.9g, float64 formula %.9g %.9g", p[0], p[1], pd[0], pd[1]);
    o.epochs = 15;
    KVZ_CHECK(kvz_mlp_epoch_lr(&o, 0) == 5e-3 && fabs(kvz_mlp_epoch_lr(&o, 15)) < 1e-18 &&
                  fabs(kvz_mlp_epoch_lr(&o, 5) - 5e-3 * 0.75) < 1e-15,
              "cosine lr");
}

/* ---------- (d) determinism, (e) teacher-student sanity ---------- */

/* n rows of a random teacher MLP (D, Dt hidden, H) plus small noise. */
static void teacher_data(size_t n, size_t D, size_t H, float *x, float *y)
{
    kvz_mlp_shape t = {D, 6, H};
    float *th = malloc(kvz_mlp_n_params(t) * sizeof *th);
    kvz_mlp_init_default(t, th, 4242);
    for (size_t i = 0; i < kvz_mlp_n_params(t); i++)
        th[i] *= 3.0f; /* a less linear teacher */
    unsigned st = 7;
    for (size_t i = 0; i < n * D; i++) {
        st = st * 1664525u + 1013904223u;
        x[i] = (float)((int)(st >> 9) % 2001 - 1000) / 500.0f;
    }
    kvz_surrogate_layer v = kvz_mlp_view(t, th);
    float a[6];
    for (size_t r = 0; r < n; r++) {
        for (size_t j = 0; j < 6; j++) {
            double h = v.b1[j];
            for (size_t k = 0; k < D; k++)
                h += v.w1[j * D + k] * x[r * D + k];
            a[j] = (float)(0.5 * h * (1 + erf(h / sqrt(2.0))));
        }
        for (size_t o = 0; o < H; o++) {
            double out = v.b2[o] - 5.0;
            for (size_t j = 0; j < 6; j++)
                out += v.w2[o * 6 + j] * a[j];
            st = st * 1664525u + 1013904223u;
            y[r * H + o] = (float)out + 0.01f * (float)((int)(st >> 9) % 2001 - 1000) / 1000.0f;
        }
    }
    free(th);
}

static void train_once(kvz_mlp_shape s, const float *x, const float *y, size_t n,
                       const kvz_mlp_options *o, float *flat, kvz_mlp_log *log)
{
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_mlp_train(s, x, y, n, o, kvz_mlp_view(s, flat), log, &err), err);
}

static void test_teacher_and_determinism(void)
{
    enum { N = 6000, D = 32, H = 3 };
    kvz_mlp_shape s = {D, 16, H};
    size_t P = kvz_mlp_n_params(s);
    float *x = malloc(N * D * sizeof *x), *y = malloc(N * H * sizeof *y);
    float *a = malloc(P * sizeof *a), *b = malloc(P * sizeof *b), *c = malloc(P * sizeof *c);
    teacher_data(N, D, H, x, y);
    double mean = 0, var = 0;
    for (size_t i = 0; i < N * H; i++)
        mean += y[i] / (double)(N * H);
    for (size_t i = 0; i < N * H; i++)
        var += (y[i] - mean) * (y[i] - mean) / (double)(N * H);
    kvz_mlp_options o;
    kvz_mlp_options_default(&o);
    o.seed = 11;
    o.batch_size = 64; /* enough AdamW steps (~1300) to move the output bias to -5 */
    kvz_mlp_log la, lb, lc;
    train_once(s, x, y, N, &o, a, &la);
    printf("teacher: variance %.4f; val MSE by epoch:", var);
    for (size_t e = 0; e < la.n_epochs; e++)
        printf(" %.4f", la.val_loss[e]);
    printf("\n");
    if (la.n_epochs)
        KVZ_CHECK(la.val_loss[la.n_epochs - 1] < 0.05 * var, "final val MSE %.4f vs variance %.4f",
                  la.val_loss[la.n_epochs - 1], var);
    train_once(s, x, y, N, &o, b, &lb);
    KVZ_CHECK(memcmp(a, b, P * sizeof *a) == 0, "same seed, same threads: results differ");
    int threads = openblas_get_num_threads();
    openblas_set_num_threads(threads > 1 ? 1 : 2);
    train_once(s, x, y, N, &o, c, &lc);
    openblas_set_num_threads(threads);
    printf("determinism: same thread count bit-identical: %s; %d vs %d BLAS threads "
           "bit-identical: %s\n",
           memcmp(a, b, P * sizeof *a) ? "no" : "yes", threads, threads > 1 ? 1 : 2,
           memcmp(a, c, P * sizeof *a) ? "no" : "yes");
    o.seed = 12;
    train_once(s, x, y, N, &o, c, NULL);
    KVZ_CHECK(memcmp(a, c, P * sizeof *a) != 0, "a different seed gives the same weights");
    /* the spec's batch 512 (11 steps per epoch) with the output bias started at the mean */
    o.batch_size = 512;
    o.init_b2_mean = 1;
    kvz_mlp_log ld;
    train_once(s, x, y, N, &o, c, &ld);
    printf("teacher, batch 512, init_b2_mean: val MSE by epoch:");
    for (size_t e = 0; e < ld.n_epochs; e++)
        printf(" %.4f", ld.val_loss[e]);
    printf("\n");
    if (ld.n_epochs)
        KVZ_CHECK(ld.val_loss[0] < var && ld.val_loss[ld.n_epochs - 1] < 0.2 * var,
                  "init_b2_mean: val MSE %.4f (epoch 1) %.4f (last) vs variance %.4f",
                  ld.val_loss[0], ld.val_loss[ld.n_epochs - 1], var);
    kvz_mlp_log_free(&ld);
    kvz_mlp_log_free(&la);
    kvz_mlp_log_free(&lb);
    kvz_mlp_log_free(&lc);
    free(x);
    free(y);
    free(a);
    free(b);
    free(c);
}

/* ---------- (f) init bounds and error paths ---------- */

static void test_init_and_errors(void)
{
    kvz_mlp_shape s = {64, 8, 2};
    size_t P = kvz_mlp_n_params(s);
    float *th = malloc(P * sizeof *th);
    kvz_mlp_init_default(s, th, 1);
    kvz_surrogate_layer v = kvz_mlp_view(s, th);
    double m1 = 0, max1 = 0;
    for (size_t i = 0; i < 8 * 64; i++) {
        m1 += v.w1[i] / 512.0;
        max1 = fmax(max1, fabs(v.w1[i]));
    }
    KVZ_CHECK(max1 <= 0.125 && max1 > 0.12 && fabs(m1) < 0.01, "w1 ~ U(-1/8, 1/8): max %g mean %g",
              max1, m1);
    int in_bound = 1;
    for (size_t i = 0; i < 2 * 8 + 2; i++)
        in_bound &= fabs(v.w2[i]) <= 1.0 / sqrt(8.0);
    KVZ_CHECK(in_bound, "w2/b2 beyond 1/sqrt(Dh)");

    enum { N = 20 };
    float x[N * 64] = {0}, y[N * 2] = {0};
    size_t val[2] = {3, 3}, perm[18];
    kvz_mlp_options o;
    kvz_mlp_options_default(&o);
    o.epochs = 1;
    o.val_rows = val;
    o.n_val = 2;
    kvz_error err = {0};
    int rc = kvz_mlp_train(s, x, y, N, &o, v, NULL, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "val_rows[1]"), "repeated val row: %d '%s'", rc,
              err.msg);
    val[1] = 4;
    for (size_t i = 0; i < 18; i++)
        perm[i] = i;
    perm[5] = 6;
    o.perms = perm;
    rc = kvz_mlp_train(s, x, y, N, &o, v, NULL, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "not a permutation"), "bad perm: %d '%s'", rc,
              err.msg);
    perm[5] = 5;
    x[7 * 64 + 9] = NAN;
    rc = kvz_mlp_train(s, x, y, N, &o, v, NULL, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "x row 7 column 9"), "NaN: %d '%s'", rc,
              err.msg);
    x[7 * 64 + 9] = 0;
    KVZ_CHECK_OK(kvz_mlp_train(s, x, y, N, &o, v, NULL, &err), err);
    o.batch_size = 0;
    rc = kvz_mlp_train(s, x, y, N, &o, v, NULL, &err);
    KVZ_CHECK(rc == KVZ_EINVAL, "batch 0: %d '%s'", rc, err.msg);
    free(th);
}

int main(void)
{
    test_torch_parity();
    test_gradients();
    test_clip_and_adamw();
    test_teacher_and_determinism();
    test_init_and_errors();
    return kvz_test_done();
}
