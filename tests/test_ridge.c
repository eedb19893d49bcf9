/* test_ridge: trainer/ridge against numpy's float64 closed form and sklearn
 * Ridge (tests/fixtures/trainer/ridge.*, make_trainer_fixtures.py), through
 * both entry points (fixture sums; accumulator over float32 blocks), plus
 * exact recovery of a noiseless linear map and the error paths. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "trainer/ridge.h"
#include "trainer_fixture.h"

static void check_solution(const char *what, const double *w, const double *b,
                           const trainer_fixture *fx, const char *tag, size_t D, size_t H)
{
    const char *refs[2] = {"", "sklearn_"};
    for (int r = 0; r < 2; r++) {
        char name[64], label[160];
        snprintf(name, sizeof name, "w_%s%s", refs[r], tag);
        double *wr = trainer_fixture_f64(fx, name, NULL);
        snprintf(name, sizeof name, "b_%s%s", refs[r], tag);
        double *br = trainer_fixture_f64(fx, name, NULL);
        KVZ_CHECK(wr && br, "fixture arrays for %s", tag);
        if (wr && br) {
            snprintf(label, sizeof label, "%s alpha %s W vs %s", what, tag, r ? "sklearn" : "numpy");
            double ew = trainer_rel_err(label, w, wr, D * H);
            snprintf(label, sizeof label, "%s alpha %s b vs %s", what, tag, r ? "sklearn" : "numpy");
            double eb = trainer_rel_err(label, b, br, H);
            KVZ_CHECK(ew <= 1e-6 && eb <= 1e-6, "%s %s: W rel %.3e b rel %.3e > 1e-6", what, tag, ew,
                      eb);
        }
        free(wr);
        free(br);
    }
}

static void test_fixture_paths(void)
{
    trainer_fixture fx;
    if (trainer_fixture_open(&fx, "ridge")) {
        KVZ_CHECK(0, "ridge fixture unreadable");
        return;
    }
    size_t n = trainer_fixture_int(&fx, "n"), D = trainer_fixture_int(&fx, "d_in");
    size_t H = trainer_fixture_int(&fx, "d_out");
    double *xtx = trainer_fixture_f64(&fx, "xtx", NULL), *xty = trainer_fixture_f64(&fx, "xty", NULL);
    double *xs = trainer_fixture_f64(&fx, "x_sum", NULL), *ys = trainer_fixture_f64(&fx, "y_sum", NULL);
    double *yss = trainer_fixture_f64(&fx, "y_sq_sum", NULL);
    float *x = trainer_fixture_f32(&fx, "x", NULL), *y = trainer_fixture_f32(&fx, "y", NULL);
    double *w = malloc(D * H * sizeof *w), *b = malloc(H * sizeof *b);
    kvz_error err = {0};
    kvz_ridge_stats st = {D, H, xtx, xty, xs, ys, yss, (int64_t)n};
    const char *tags[2] = {"a1", "a1e-3"};
    const double alphas[2] = {1.0, 1e-3};
    for (int a = 0; a < 2; a++) {
        KVZ_CHECK_OK(kvz_ridge_solve_f64(&st, alphas[a], w, b, &err), err);
        check_solution("from numpy sums", w, b, &fx, tags[a], D, H);
    }

    /* accumulator: blocks of 7 and 293 rows (the second crosses the internal block) */
    kvz_ridge_acc *acc = NULL;
    KVZ_CHECK_OK(kvz_ridge_acc_create(D, H, &acc, &err), err);
    KVZ_CHECK_OK(kvz_ridge_acc_add(acc, x, y, 7, &err), err);
    KVZ_CHECK_OK(kvz_ridge_acc_add(acc, x + 7 * D, y + 7 * H, n - 7, &err), err);
    kvz_ridge_stats as = kvz_ridge_acc_stats(acc);
    KVZ_CHECK(as.count == (int64_t)n, "count %lld", (long long)as.count);
    KVZ_CHECK(trainer_rel_err("acc xtx", as.xtx, xtx, D * D) <= 1e-13, "xtx");
    KVZ_CHECK(trainer_rel_err("acc xty", as.xty, xty, D * H) <= 1e-13, "xty");
    KVZ_CHECK(trainer_rel_err("acc x_sum", as.x_sum, xs, D) <= 1e-13, "x_sum");
    KVZ_CHECK(trainer_rel_err("acc y_sum", as.y_sum, ys, H) <= 1e-13, "y_sum");
    KVZ_CHECK(trainer_rel_err("acc y_sq_sum", as.y_sq_sum, yss, H) <= 1e-13, "y_sq_sum");
    for (int a = 0; a < 2; a++) {
        KVZ_CHECK_OK(kvz_ridge_solve_f64(&as, alphas[a], w, b, &err), err);
        check_solution("accumulator", w, b, &fx, tags[a], D, H);
    }
    /* float32 output = rounded float64 output */
    float *wf = malloc(D * H * sizeof *wf), *bf = malloc(H * sizeof *bf);
    KVZ_CHECK_OK(kvz_ridge_solve(&as, 1e-3, wf, bf, &err), err);
    int same = 1;
    for (size_t i = 0; i < D * H; i++)
        same &= wf[i] == (float)w[i];
    for (size_t h = 0; h < H; h++)
        same &= bf[h] == (float)b[h];
    KVZ_CHECK(same, "kvz_ridge_solve is not the float64 result rounded");

    /* a non-finite row is rejected and leaves the sums alone */
    x[3 * D + 5] = NAN;
    int rc = kvz_ridge_acc_add(acc, x, y, 10, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "row 3 feature 5"), "NaN row: rc %d '%s'", rc,
              err.msg);
    KVZ_CHECK(kvz_ridge_acc_stats(acc).count == (int64_t)n, "count changed by a rejected block");
    kvz_ridge_acc_free(acc);
    free(wf);
    free(bf);
    free(w);
    free(b);
    free(x);
    free(y);
    free(xtx);
    free(xty);
    free(xs);
    free(ys);
    free(yss);
    trainer_fixture_close(&fx);
}

/* y = W x + b exactly (no noise), alpha 0: the solve recovers W and b. */
static void test_exact_recovery(void)
{
    enum { N = 500, D = 6, H = 2 };
    float x[N * D], y[N * H];
    double W[H * D], bias[H] = {-4.0, 2.5};
    unsigned s = 12345;
    for (size_t i = 0; i < H * D; i++)
        W[i] = ((double)(i % 7) - 3.0) / 4.0;
    for (size_t r = 0; r < N; r++) {
        for (size_t k = 0; k < D; k++) {
            s = s * 1103515245u + 12345u;
            x[r * D + k] = (float)((s >> 8) % 1000) / 250.0f + (float)k;
        }
        for (size_t h = 0; h < H; h++) {
            double acc = bias[h];
            for (size_t k = 0; k < D; k++)
                acc += W[h * D + k] * x[r * D + k];
            y[r * H + h] = (float)acc;
        }
    }
    kvz_ridge_acc *acc = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_ridge_acc_create(D, H, &acc, &err), err);
    KVZ_CHECK_OK(kvz_ridge_acc_add(acc, x, y, N, &err), err);
    kvz_ridge_stats st = kvz_ridge_acc_stats(acc);
    double w[H * D], b[H];
    KVZ_CHECK_OK(kvz_ridge_solve_f64(&st, 0.0, w, b, &err), err);
    /* y was rounded to float32: allow ~1e-6 */
    KVZ_CHECK(trainer_rel_err("exact W", w, W, H * D) <= 2e-6, "W not recovered");
    KVZ_CHECK(trainer_rel_err("exact b", b, bias, H) <= 2e-6, "b not recovered");
    kvz_ridge_acc_free(acc);
}

static void expect_einval(const char *what, int rc, const kvz_error *err, const char *needle)
{
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err->msg, needle), "%s: rc %d msg '%s' (want '%s')",
              what, rc, err->msg, needle);
}

static void test_errors(void)
{
    enum { N = 50, D = 4, H = 1 };
    float x[N * D], y[N];
    for (size_t r = 0; r < N; r++) {
        x[r * D + 0] = (float)r;
        x[r * D + 1] = (float)(r * r % 17);
        x[r * D + 2] = 2.0f * x[r * D + 0]; /* collinear with feature 0 */
        x[r * D + 3] = (float)(r % 5);
        y[r] = (float)r;
    }
    kvz_ridge_acc *acc = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_ridge_acc_create(D, H, &acc, &err), err);
    KVZ_CHECK_OK(kvz_ridge_acc_add(acc, x, y, N, &err), err);
    kvz_ridge_stats st = kvz_ridge_acc_stats(acc);
    double w[D], b[H];
    expect_einval("collinear alpha 0", kvz_ridge_solve_f64(&st, 0.0, w, b, &err), &err,
                  "not positive definite");
    printf("collinear alpha 0: %s\n", err.msg);
    KVZ_CHECK_OK(kvz_ridge_solve_f64(&st, 1.0, w, b, &err), err);
    expect_einval("negative alpha", kvz_ridge_solve_f64(&st, -1.0, w, b, &err), &err, "alpha");
    kvz_ridge_stats empty = st;
    empty.count = 0;
    expect_einval("no samples", kvz_ridge_solve_f64(&empty, 1.0, w, b, &err), &err, "no samples");
    kvz_ridge_acc_free(acc);

    /* a constant feature with alpha 0 */
    for (size_t r = 0; r < N; r++)
        x[r * D + 2] = 3.0f;
    KVZ_CHECK_OK(kvz_ridge_acc_create(D, H, &acc, &err), err);
    KVZ_CHECK_OK(kvz_ridge_acc_add(acc, x, y, N, &err), err);
    st = kvz_ridge_acc_stats(acc);
    expect_einval("constant alpha 0", kvz_ridge_solve_f64(&st, 0.0, w, b, &err), &err,
                  "not positive definite");
    kvz_ridge_acc_free(acc);
    expect_einval("bad dims", kvz_ridge_acc_create(0, 1, &acc, &err), &err, "bad dimensions");
}

int main(void)
{
    test_fixture_paths();
    test_exact_recovery();
    test_errors();
    return kvz_test_done();
}
