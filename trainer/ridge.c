/* ridge: the float64 ridge solve from sufficient statistics (centering,
 * Cholesky via OpenBLAS's LAPACK dpotrf/dpotrs) and the accumulator that
 * builds those statistics from float32 row blocks with dsyrk/dgemm. */
#include "ridge.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK (Fortran ABI, exported by OpenBLAS); no lapacke header needed. */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
extern void dpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a,
                    const int *lda, double *b, const int *ldb, int *info);

enum { RIDGE_BLOCK_ROWS = 256 };

struct kvz_ridge_acc {
    size_t d_in, d_out;
    double *xtx, *xty, *x_sum, *y_sum, *y_sq_sum; /* xtx: upper triangle until viewed */
    double *xbuf, *ybuf;                          /* [BLOCK, D], [BLOCK, Hkv] */
    int64_t count;
};

static int all_finite(const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

static int check_stats(const kvz_ridge_stats *st, double alpha, kvz_error *err)
{
    if (!st || !st->xtx || !st->xty || !st->x_sum || !st->y_sum)
        return kvz_fail(err, KVZ_EINVAL, "ridge: missing statistics (NULL array)");
    if (st->d_in == 0 || st->d_out == 0 || st->d_in > (size_t)0x7fffffff ||
        st->d_out > (size_t)0x7fffffff)
        return kvz_fail(err, KVZ_EINVAL, "ridge: bad dimensions D=%zu Hkv=%zu", st->d_in,
                        st->d_out);
    if (st->count < 1)
        return kvz_fail(err, KVZ_EINVAL, "ridge: no samples (count %lld)",
                        (long long)st->count);
    if (!(alpha >= 0) || !isfinite(alpha))
        return kvz_fail(err, KVZ_EINVAL, "ridge: alpha must be finite and >= 0 (got %g)", alpha);
    size_t D = st->d_in, H = st->d_out;
    if (!all_finite(st->xtx, D * D) || !all_finite(st->xty, D * H) ||
        !all_finite(st->x_sum, D) || !all_finite(st->y_sum, H))
        return kvz_fail(err, KVZ_EINVAL, "ridge: statistics contain non-finite values");
    return KVZ_OK;
}

/* a = xtx - n mu mu^T + alpha I (full), bt[h, i] = xty[i, h] - n mu_x[i] mu_y[h]. */
static void centered_system(const kvz_ridge_stats *st, double alpha, double *a, double *bt,
                            double *mu_x, double *mu_y)
{
    size_t D = st->d_in, H = st->d_out;
    double n = (double)st->count;
    for (size_t i = 0; i < D; i++)
        mu_x[i] = st->x_sum[i] / n;
    for (size_t h = 0; h < H; h++)
        mu_y[h] = st->y_sum[h] / n;
    for (size_t i = 0; i < D; i++)
        for (size_t j = 0; j < D; j++)
            a[i * D + j] = st->xtx[i * D + j] - n * mu_x[i] * mu_x[j];
    for (size_t i = 0; i < D; i++)
        a[i * D + i] += alpha;
    for (size_t h = 0; h < H; h++)
        for (size_t i = 0; i < D; i++)
            bt[h * D + i] = st->xty[i * H + h] - n * mu_x[i] * mu_y[h];
}

/* Cholesky in place; KVZ_EINVAL when a pivot is not positive or is lost in
 * rounding (pivot^2 <= D * eps * original diagonal). */
static int cholesky(double *a, size_t D, kvz_error *err)
{
    double *diag = malloc(D * sizeof *diag);
    if (!diag)
        return kvz_fail(err, KVZ_ENOMEM, "ridge: out of memory (%zu features)", D);
    for (size_t i = 0; i < D; i++)
        diag[i] = a[i * D + i];
    int n = (int)D, info = 0;
    dpotrf_("U", &n, a, &n, &info);
    size_t bad = info > 0 ? (size_t)info - 1 : D;
    for (size_t i = 0; info == 0 && i < D && bad == D; i++) {
        double piv = a[i * D + i];
        if (!(piv * piv > (double)D * DBL_EPSILON * diag[i]))
            bad = i;
    }
    free(diag);
    if (info < 0)
        return kvz_fail(err, KVZ_EINVAL, "ridge: dpotrf rejected argument %d", -info);
    if (bad < D)
        return kvz_fail(err, KVZ_EINVAL,
                        "ridge: X^T X + alpha I is not positive definite at feature %zu "
                        "(alpha 0 with collinear or constant features?); use alpha > 0",
                        bad);
    return KVZ_OK;
}

int kvz_ridge_solve_f64(const kvz_ridge_stats *st, double alpha, double *w, double *b,
                        kvz_error *err)
{
    int rc = check_stats(st, alpha, err);
    if (rc)
        return rc;
    if (!w || !b)
        return kvz_fail(err, KVZ_EINVAL, "ridge: NULL output");
    size_t D = st->d_in, H = st->d_out;
    double *a = malloc(D * D * sizeof *a), *mu_x = malloc(D * sizeof *mu_x);
    double *mu_y = malloc(H * sizeof *mu_y);
    if (!a || !mu_x || !mu_y) {
        rc = kvz_fail(err, KVZ_ENOMEM, "ridge: out of memory (%zu features)", D);
        goto done;
    }
    /* Column-major B [D, Hkv] with ldb = D is row-major W [Hkv, D]: solve in w. */
    centered_system(st, alpha, a, w, mu_x, mu_y);
    rc = cholesky(a, D, err);
    if (rc)
        goto done;
    int n = (int)D, nrhs = (int)H, info = 0;
    dpotrs_("U", &n, &nrhs, a, &n, w, &n, &info);
    if (info != 0) {
        rc = kvz_fail(err, KVZ_EINVAL, "ridge: dpotrs failed (info %d)", info);
        goto done;
    }
    for (size_t h = 0; h < H; h++)
        b[h] = mu_y[h] - cblas_ddot((int)D, w + h * D, 1, mu_x, 1);
done:
    free(a);
    free(mu_x);
    free(mu_y);
    return rc;
}

int kvz_ridge_solve(const kvz_ridge_stats *st, double alpha, float *w, float *b, kvz_error *err)
{
    if (!w || !b)
        return kvz_fail(err, KVZ_EINVAL, "ridge: NULL output");
    int rc = check_stats(st, alpha, err);
    if (rc)
        return rc;
    size_t D = st->d_in, H = st->d_out;
    double *wd = malloc(D * H * sizeof *wd), *bd = malloc(H * sizeof *bd);
    if (!wd || !bd) {
        free(wd);
        free(bd);
        return kvz_fail(err, KVZ_ENOMEM, "ridge: out of memory (%zu x %zu)", H, D);
    }
    rc = kvz_ridge_solve_f64(st, alpha, wd, bd, err);
    if (rc == KVZ_OK) {
        for (size_t i = 0; i < D * H; i++)
            w[i] = (float)wd[i];
        for (size_t h = 0; h < H; h++)
            b[h] = (float)bd[h];
    }
    free(wd);
    free(bd);
    return rc;
}

/* ---------- accumulator ---------- */

int kvz_ridge_acc_create(size_t d_in, size_t d_out, kvz_ridge_acc **out, kvz_error *err)
{
    *out = NULL;
    if (d_in == 0 || d_out == 0 || d_in > (size_t)0x7fffffff || d_out > (size_t)0x7fffffff)
        return kvz_fail(err, KVZ_EINVAL, "ridge: bad dimensions D=%zu Hkv=%zu", d_in, d_out);
    kvz_ridge_acc *a = calloc(1, sizeof *a);
    if (!a)
        return kvz_fail(err, KVZ_ENOMEM, "ridge: out of memory");
    a->d_in = d_in;
    a->d_out = d_out;
    a->xtx = calloc(d_in * d_in, sizeof *a->xtx);
    a->xty = calloc(d_in * d_out, sizeof *a->xty);
    a->x_sum = calloc(d_in, sizeof *a->x_sum);
    a->y_sum = calloc(d_out, sizeof *a->y_sum);
    a->y_sq_sum = calloc(d_out, sizeof *a->y_sq_sum);
    a->xbuf = malloc(RIDGE_BLOCK_ROWS * d_in * sizeof *a->xbuf);
    a->ybuf = malloc(RIDGE_BLOCK_ROWS * d_out * sizeof *a->ybuf);
    if (!a->xtx || !a->xty || !a->x_sum || !a->y_sum || !a->y_sq_sum || !a->xbuf || !a->ybuf) {
        kvz_ridge_acc_free(a);
        return kvz_fail(err, KVZ_ENOMEM, "ridge: out of memory (D=%zu)", d_in);
    }
    *out = a;
    return KVZ_OK;
}

void kvz_ridge_acc_free(kvz_ridge_acc *a)
{
    if (!a)
        return;
    free(a->xtx);
    free(a->xty);
    free(a->x_sum);
    free(a->y_sum);
    free(a->y_sq_sum);
    free(a->xbuf);
    free(a->ybuf);
    free(a);
}

static int check_block_finite(const float *v, size_t n, size_t cols, const char *what,
                              kvz_error *err)
{
    for (size_t r = 0; r < n; r++)
        for (size_t k = 0; k < cols; k++)
            if (!isfinite(v[r * cols + k]))
                return kvz_fail(err, KVZ_EINVAL,
                                "ridge: row %zu %s %zu of the block is not finite", r, what, k);
    return KVZ_OK;
}

/* One block of nb <= RIDGE_BLOCK_ROWS rows into the sums. */
static void acc_block(kvz_ridge_acc *a, const float *x, const float *y, size_t nb)
{
    size_t D = a->d_in, H = a->d_out;
    for (size_t i = 0; i < nb * D; i++)
        a->xbuf[i] = x[i];
    for (size_t i = 0; i < nb * H; i++)
        a->ybuf[i] = y[i];
    /* xtx (upper, row-major) += Xb^T Xb; xty += Xb^T Yb */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)D, (int)nb, 1.0, a->xbuf, (int)D,
                1.0, a->xtx, (int)D);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)D, (int)H, (int)nb, 1.0, a->xbuf,
                (int)D, a->ybuf, (int)H, 1.0, a->xty, (int)H);
    for (size_t r = 0; r < nb; r++) {
        for (size_t i = 0; i < D; i++)
            a->x_sum[i] += a->xbuf[r * D + i];
        for (size_t h = 0; h < H; h++) {
            double v = a->ybuf[r * H + h];
            a->y_sum[h] += v;
            a->y_sq_sum[h] += v * v;
        }
    }
}

int kvz_ridge_acc_add(kvz_ridge_acc *a, const float *x, const float *y, size_t n, kvz_error *err)
{
    if (!a || (n && (!x || !y)))
        return kvz_fail(err, KVZ_EINVAL, "ridge: NULL argument");
    int rc = check_block_finite(x, n, a->d_in, "feature", err);
    if (!rc)
        rc = check_block_finite(y, n, a->d_out, "target", err);
    if (rc)
        return rc;
    for (size_t r = 0; r < n; r += RIDGE_BLOCK_ROWS) {
        size_t nb = n - r < RIDGE_BLOCK_ROWS ? n - r : RIDGE_BLOCK_ROWS;
        acc_block(a, x + r * a->d_in, y + r * a->d_out, nb);
    }
    a->count += (int64_t)n;
    return KVZ_OK;
}

kvz_ridge_stats kvz_ridge_acc_stats(kvz_ridge_acc *a)
{
    size_t D = a->d_in;
    for (size_t i = 0; i < D; i++) /* mirror the upper triangle (idempotent) */
        for (size_t j = 0; j < i; j++)
            a->xtx[i * D + j] = a->xtx[j * D + i];
    kvz_ridge_stats st = {a->d_in, a->d_out, a->xtx, a->xty, a->x_sum, a->y_sum, a->y_sq_sum,
                          a->count};
    return st;
}
