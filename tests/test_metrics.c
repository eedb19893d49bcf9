/* test_metrics: trainer/metrics against numpy/sklearn values
 * (tests/fixtures/trainer/metrics.*, make_trainer_fixtures.py; one column
 * with ties), plus exact cases (identity, affine, reversed) and errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "trainer/metrics.h"
#include "trainer_fixture.h"

static const char *const FIELD[6] = {"mse", "r2", "pearson", "keep2x", "keep3x", "keep4x"};

static void values_array(const kvz_metrics_values *v, double out[6])
{
    out[0] = v->mse;
    out[1] = v->r2;
    out[2] = v->pearson;
    for (int c = 0; c < KVZ_METRICS_N_RATIOS; c++)
        out[3 + c] = v->keep_overlap[c];
}

static void compare_values(const char *what, const kvz_metrics_values *v, const double *ref)
{
    double got[6];
    values_array(v, got);
    for (int f = 0; f < 6; f++) {
        double tol = f < 3 ? 1e-9 * fmax(1.0, fabs(ref[f])) : 1e-12; /* overlaps: exact ratios */
        KVZ_CHECK(fabs(got[f] - ref[f]) <= tol, "%s %s: C %.12g numpy %.12g", what, FIELD[f],
                  got[f], ref[f]);
    }
}

static void test_fixture(void)
{
    trainer_fixture fx;
    if (trainer_fixture_open(&fx, "metrics")) {
        KVZ_CHECK(0, "metrics fixture unreadable");
        return;
    }
    size_t n = trainer_fixture_int(&fx, "n"), H = trainer_fixture_int(&fx, "d_out");
    float *p = trainer_fixture_f32(&fx, "pred", NULL), *o = trainer_fixture_f32(&fx, "oracle", NULL);
    double *cols = trainer_fixture_f64(&fx, "columns", NULL);
    double *overall = trainer_fixture_f64(&fx, "overall", NULL);
    kvz_metrics m;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_metrics_compute(p, o, n, H, &m, &err), err);
    if (m.col && cols && overall) {
        char what[32];
        for (size_t h = 0; h < H; h++) {
            snprintf(what, sizeof what, "column %zu", h);
            compare_values(what, &m.col[h], cols + 6 * h);
            printf("column %zu: mse %.5f r2 %.5f r %.5f keep %.4f %.4f %.4f\n", h, m.col[h].mse,
                   m.col[h].r2, m.col[h].pearson, m.col[h].keep_overlap[0],
                   m.col[h].keep_overlap[1], m.col[h].keep_overlap[2]);
        }
        compare_values("overall", &m.overall, overall);
    }
    kvz_metrics_free(&m);
    free(p);
    free(o);
    free(cols);
    free(overall);
    trainer_fixture_close(&fx);
}

static void test_exact_cases(void)
{
    enum { N = 12, H = 2 };
    float o[N * H], p[N * H];
    for (size_t i = 0; i < N; i++) {
        o[i * H] = (float)i * 0.5f - 7.0f;
        o[i * H + 1] = (float)((i * 5) % N) - 3.0f; /* distinct values, shuffled */
    }
    kvz_metrics m;
    kvz_error err = {0};
    memcpy(p, o, sizeof p);
    KVZ_CHECK_OK(kvz_metrics_compute(p, o, N, H, &m, &err), err);
    KVZ_CHECK(m.overall.mse == 0 && m.overall.r2 == 1 && fabs(m.overall.pearson - 1) < 1e-12 &&
                  m.overall.keep_overlap[0] == 1 && m.overall.keep_overlap[2] == 1,
              "identity: mse %g r2 %g r %g", m.overall.mse, m.overall.r2, m.overall.pearson);
    kvz_metrics_free(&m);

    for (size_t i = 0; i < N * H; i++)
        p[i] = 2.0f * o[i] + 3.0f; /* monotone: same decisions, r = 1, r2 < 1 */
    KVZ_CHECK_OK(kvz_metrics_compute(p, o, N, H, &m, &err), err);
    for (size_t h = 0; h < H; h++)
        KVZ_CHECK(fabs(m.col[h].pearson - 1) < 1e-12 && m.col[h].keep_overlap[0] == 1 &&
                      m.col[h].keep_overlap[1] == 1 && m.col[h].keep_overlap[2] == 1 &&
                      m.col[h].r2 < 1,
                  "affine column %zu: r %g keep %g %g %g", h, m.col[h].pearson,
                  m.col[h].keep_overlap[0], m.col[h].keep_overlap[1], m.col[h].keep_overlap[2]);
    kvz_metrics_free(&m);

    for (size_t i = 0; i < N * H; i++)
        p[i] = -o[i]; /* reversed: the kept sets are disjoint at 2x and above */
    KVZ_CHECK_OK(kvz_metrics_compute(p, o, N, H, &m, &err), err);
    KVZ_CHECK(fabs(m.col[0].pearson + 1) < 1e-12 && m.col[0].keep_overlap[0] == 0 &&
                  m.col[0].keep_overlap[1] == 0 && m.col[0].keep_overlap[2] == 0,
              "reversed: r %g keep %g", m.col[0].pearson, m.col[0].keep_overlap[0]);
    kvz_metrics_free(&m);

    float c[N * H];
    for (size_t i = 0; i < N * H; i++)
        c[i] = 1.0f; /* constant oracle: r2 and r undefined */
    KVZ_CHECK_OK(kvz_metrics_compute(p, c, N, H, &m, &err), err);
    KVZ_CHECK(isnan(m.col[0].r2) && isnan(m.col[0].pearson), "constant oracle: r2 %g r %g",
              m.col[0].r2, m.col[0].pearson);
    kvz_metrics_free(&m);

    o[5 * H + 1] = -INFINITY;
    int rc = kvz_metrics_compute(p, o, N, H, &m, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "oracle row 5 column 1"), "inf: %d '%s'", rc,
              err.msg);
    rc = kvz_metrics_compute(p, o, 0, H, &m, &err);
    KVZ_CHECK(rc == KVZ_EINVAL, "n 0: %d", rc);
}

int main(void)
{
    test_fixture();
    test_exact_cases();
    return kvz_test_done();
}
