/* ridge: the float64 ridge solve from sufficient statistics (centering,
 * Cholesky via OpenBLAS's LAPACK dpotrf/dpotrs) and the accumulator that
 * builds those statistics from float32 row blocks on a backend
 * (kvz_op_ridge_add), written once for the host and a device. */
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

/* Rows converted to float64 at a time: 256 keeps a block in cache on the
 * cpu; a device wants bigger blocks. */
enum { RIDGE_BLOCK_ROWS_HOST = 256, RIDGE_BLOCK_ROWS_DEVICE = 4096 };

struct kvz_ridge_acc {
    kvz_backend *be;
    size_t d_in, d_out;
    kvz_buf sums;    /* backend float64: xtx (upper triangle), xty, x_sum, y_sum, y_sq_sum */
    kvz_buf scratch; /* backend float64 [block, D + Hkv] */
    double *host;    /* the sums on the host: = sums.data on host memory, else a mirror */
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

static size_t n_sums(size_t D, size_t H)
{
    return D * D + D * H + D + 2 * H;
}

int kvz_ridge_acc_create_on(kvz_backend *be, size_t d_in, size_t d_out, kvz_ridge_acc **out,
                            kvz_error *err)
{
    *out = NULL;
    if (d_in == 0 || d_out == 0 || d_in > (size_t)0x7fffffff || d_out > (size_t)0x7fffffff)
        return kvz_fail(err, KVZ_EINVAL, "ridge: bad dimensions D=%zu Hkv=%zu", d_in, d_out);
    kvz_ridge_acc *a = calloc(1, sizeof *a);
    if (!a)
        return kvz_fail(err, KVZ_ENOMEM, "ridge: out of memory");
    a->be = be;
    a->d_in = d_in;
    a->d_out = d_out;
    int host = kvz_backend_host_memory(be);
    size_t ns = n_sums(d_in, d_out);
    size_t block = host ? RIDGE_BLOCK_ROWS_HOST : RIDGE_BLOCK_ROWS_DEVICE;
    int rc = kvz_backend_alloc(be, KVZ_F64, ns, "the ridge sums", &a->sums, err);
    rc = rc ? rc : kvz_backend_alloc(be, KVZ_F64, block * (d_in + d_out), "the ridge block",
                                     &a->scratch, err);
    a->host = rc ? NULL : host ? a->sums.data : calloc(ns, sizeof(double));
    if (rc == KVZ_OK && !a->host)
        rc = kvz_fail(err, KVZ_ENOMEM, "ridge: out of memory (D=%zu)", d_in);
    if (rc == KVZ_OK) {
        memset(a->host, 0, ns * sizeof(double));
        rc = kvz_backend_upload(be, a->sums.data, a->host, ns * sizeof(double), err);
    }
    if (rc) {
        kvz_ridge_acc_free(a);
        return rc;
    }
    *out = a;
    return KVZ_OK;
}

int kvz_ridge_acc_create(size_t d_in, size_t d_out, kvz_ridge_acc **out, kvz_error *err)
{
    return kvz_ridge_acc_create_on(kvz_backend_host(), d_in, d_out, out, err);
}

void kvz_ridge_acc_free(kvz_ridge_acc *a)
{
    if (!a)
        return;
    if (a->host && a->host != a->sums.data)
        free(a->host);
    kvz_backend_free(a->be, &a->sums);
    kvz_backend_free(a->be, &a->scratch);
    free(a);
}

int kvz_ridge_acc_add(kvz_ridge_acc *a, const float *x, const float *y, size_t n, kvz_error *err)
{
    if (!a || (n && (!x || !y)))
        return kvz_fail(err, KVZ_EINVAL, "ridge: NULL argument");
    int rc = kvz_op_ridge_add(a->be, x, y, n, a->d_in, a->d_out, a->scratch, a->sums, err);
    if (rc == KVZ_OK)
        a->count += (int64_t)n;
    return rc;
}

int kvz_ridge_acc_download(kvz_ridge_acc *a, kvz_error *err)
{
    if (a->host == a->sums.data)
        return KVZ_OK;
    return kvz_backend_download(a->be, a->host, a->sums.data,
                                n_sums(a->d_in, a->d_out) * sizeof(double), err);
}

kvz_ridge_stats kvz_ridge_acc_stats(kvz_ridge_acc *a)
{
    size_t D = a->d_in, H = a->d_out;
    double *xtx = a->host;
    for (size_t i = 0; i < D; i++) /* mirror the upper triangle (idempotent) */
        for (size_t j = 0; j < i; j++)
            xtx[i * D + j] = xtx[j * D + i];
    kvz_ridge_stats st = {D, H, xtx, xtx + D * D, xtx + D * D + D * H,
                          xtx + D * D + D * H + D, xtx + D * D + D * H + D + H, a->count};
    return st;
}

int kvz_ridge_acc_solve(kvz_ridge_acc *a, double alpha, float *w, float *b, kvz_error *err)
{
    int rc = kvz_ridge_acc_download(a, err);
    if (rc)
        return rc;
    kvz_ridge_stats st = kvz_ridge_acc_stats(a);
    return kvz_ridge_solve(&st, alpha, w, b, err);
}

int kvz_ridge_fit_rows(kvz_backend *be, kvz_buf x, kvz_buf y, size_t n, size_t d_in,
                       size_t d_out, double alpha, float *w, float *b, kvz_error *err)
{
    size_t D = d_in, H = d_out;
    if (!x.data || !y.data || y.dtype != KVZ_F32 || (x.dtype != KVZ_F32 && x.dtype != KVZ_F16) ||
        x.numel < n * D || y.numel < n * H)
        return kvz_fail(err, KVZ_EINVAL, "ridge: %zu rows need x [%zu, %zu] and y [%zu, %zu]", n,
                        n, D, n, H);
    kvz_ridge_acc *acc = NULL;
    int rc = kvz_ridge_acc_create_on(be, D, H, &acc, err);
    if (rc == KVZ_OK && x.dtype == KVZ_F32) /* the rows as they are */
        rc = kvz_ridge_acc_add(acc, x.data, y.data, n, err);
    else if (rc == KVZ_OK) { /* fp16 x: widened a block at a time */
        kvz_buf xb = {0};
        rc = kvz_backend_alloc(be, KVZ_F32, RIDGE_BLOCK_ROWS_DEVICE * D, "a ridge block of x",
                               &xb, err);
        for (size_t r0 = 0; rc == KVZ_OK && r0 < n; r0 += RIDGE_BLOCK_ROWS_DEVICE) {
            size_t k = n - r0 < RIDGE_BLOCK_ROWS_DEVICE ? n - r0 : RIDGE_BLOCK_ROWS_DEVICE;
            rc = kvz_op_take_rows(be, x, D, NULL, r0, k, xb.data, err);
            rc = rc ? rc : kvz_ridge_acc_add(acc, xb.data, (const float *)y.data + r0 * H, k, err);
        }
        kvz_backend_free(be, &xb);
    }
    rc = rc ? rc : kvz_ridge_acc_solve(acc, alpha, w, b, err);
    kvz_ridge_acc_free(acc);
    return rc;
}
