/* oracle_store_ridge: the per-layer float64 ridge sums over train-split rows
 * (spec 3 "Linear"): xtx += X^T X (dsyrk, upper triangle; mirrored when
 * written), xty += X^T Y (dgemm), x_sum, y_sum, y_sq_sum, count; X are the
 * float32 hidden states given to append (before any float16 rounding), Y the
 * float32 log-scores. Also their /ridge/<l>/ datasets in an HDF5 file. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oracle_store_internal.h"

int kvz_ostore_ridge_init(kvz_ostore_ridge *r, size_t L, size_t D, size_t H)
{
    memset(r, 0, sizeof *r);
    r->L = L, r->D = D, r->H = H;
    r->xtx = calloc(L * D * D, sizeof(double));
    r->xty = calloc(L * D * H, sizeof(double));
    r->x_sum = calloc(L * D, sizeof(double));
    r->y_sum = calloc(L * H, sizeof(double));
    r->y_sq_sum = calloc(L * H, sizeof(double));
    if (!r->xtx || !r->xty || !r->x_sum || !r->y_sum || !r->y_sq_sum) {
        kvz_ostore_ridge_free(r);
        return -1;
    }
    return 0;
}

void kvz_ostore_ridge_free(kvz_ostore_ridge *r)
{
    free(r->xtx);
    free(r->xty);
    free(r->x_sum);
    free(r->y_sum);
    free(r->y_sq_sum);
    free(r->scratch);
    memset(r, 0, sizeof *r);
}

static int ensure_scratch(kvz_ostore_ridge *r, size_t n)
{
    if (n <= r->scratch_rows)
        return 0;
    double *s = realloc(r->scratch, n * (r->D + r->H) * sizeof(double));
    if (!s)
        return -1;
    r->scratch = s;
    r->scratch_rows = n;
    return 0;
}

/* One layer: X [n, D], Y [n, H] as float64 in scratch, then the sums. */
static void add_layer(kvz_ostore_ridge *r, size_t l, size_t n, const float *x, const float *y)
{
    size_t D = r->D, H = r->H;
    double *X = r->scratch, *Y = r->scratch + n * D;
    double *xs = r->x_sum + l * D, *ys = r->y_sum + l * H, *yq = r->y_sq_sum + l * H;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < D; j++) {
            X[i * D + j] = (double)x[i * D + j];
            xs[j] += X[i * D + j];
        }
        for (size_t h = 0; h < H; h++) {
            double v = (double)y[i * H + h];
            Y[i * H + h] = v;
            ys[h] += v;
            yq[h] += v * v;
        }
    }
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)D, (int)n, 1.0, X, (int)D, 1.0,
                r->xtx + l * D * D, (int)D);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)D, (int)H, (int)n, 1.0, X, (int)D,
                Y, (int)H, 1.0, r->xty + l * D * H, (int)H);
}

int kvz_ostore_ridge_add(kvz_ostore_ridge *r, size_t n, const float *hidden, const float *scores)
{
    if (n == 0)
        return 0;
    if (ensure_scratch(r, n) < 0)
        return -1;
    for (size_t l = 0; l < r->L; l++)
        add_layer(r, l, n, hidden + l * n * r->D, scores + l * n * r->H);
    r->count += (int64_t)n;
    return 0;
}

static void symmetrize(double *a, size_t D)
{
    for (size_t i = 0; i < D; i++)
        for (size_t j = 0; j < i; j++)
            a[i * D + j] = a[j * D + i];
}

/* Writes one [rows, cols] (cols 0: [rows]) float64 dataset in one go. */
static int write_f64(hid_t g, const char *name, const double *v, size_t rows, size_t cols)
{
    size_t row_bytes = (cols ? cols : 1) * sizeof(double);
    hid_t d = kvz_h5_dset_create(g, name, H5T_IEEE_F64LE, rows, cols, 0,
                                 kvz_h5_chunk_rows(row_bytes, 1u << 20));
    if (d < 0)
        return -1;
    int rc = kvz_h5_dset_write_rows(d, H5T_NATIVE_DOUBLE, 0, rows, cols, v);
    if (H5Dclose(d) < 0)
        rc = kvz_h5_note();
    return rc;
}

static int write_layer(kvz_ostore_ridge *r, hid_t root, size_t l)
{
    size_t D = r->D, H = r->H;
    char name[32];
    snprintf(name, sizeof name, "%zu", l);
    hid_t g = kvz_h5_create_group(root, name);
    if (g < 0)
        return -1;
    symmetrize(r->xtx + l * D * D, D);
    int rc = write_f64(g, "xtx", r->xtx + l * D * D, D, D) < 0 ||
             write_f64(g, "xty", r->xty + l * D * H, D, H) < 0 ||
             write_f64(g, "x_sum", r->x_sum + l * D, D, 0) < 0 ||
             write_f64(g, "y_sum", r->y_sum + l * H, H, 0) < 0 ||
             write_f64(g, "y_sq_sum", r->y_sq_sum + l * H, H, 0) < 0 ||
             kvz_h5_attr_put_i64(g, "count", r->count) < 0
             ? -1 : 0;
    if (H5Gclose(g) < 0)
        rc = kvz_h5_note();
    return rc;
}

int kvz_ostore_ridge_write(kvz_ostore_ridge *r, hid_t f)
{
    hid_t root = kvz_h5_create_group(f, "ridge");
    if (root < 0)
        return -1;
    int rc = 0;
    for (size_t l = 0; l < r->L && rc == 0; l++)
        rc = write_layer(r, root, l);
    if (H5Gclose(root) < 0)
        rc = kvz_h5_note();
    return rc;
}

/* Reads one dataset that must have exactly the given shape. */
static int read_f64(hid_t g, const char *name, double *v, size_t rows, size_t cols)
{
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    if (d < 0)
        return -1;
    size_t dims[2];
    int rank = kvz_h5_dset_shape(d, dims);
    int rc = rank == (cols ? 2 : 1) && dims[0] == rows && dims[1] == cols
                 ? kvz_h5_dset_read_rows(d, H5T_NATIVE_DOUBLE, 0, rows, cols, v)
                 : -1;
    H5Dclose(d);
    return rc;
}

int kvz_ostore_ridge_read_layer(hid_t f, size_t l, size_t D, size_t H, double *xtx, double *xty,
                                double *x_sum, double *y_sum, double *y_sq_sum, int64_t *count)
{
    char name[48];
    snprintf(name, sizeof name, "ridge/%zu", l);
    if (H5Lexists(f, "ridge", H5P_DEFAULT) <= 0 || H5Lexists(f, name, H5P_DEFAULT) <= 0)
        return -1;
    hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
    if (g < 0)
        return -1;
    int64_t c = -1;
    int rc = (xtx && read_f64(g, "xtx", xtx, D, D) < 0) ||
             (xty && read_f64(g, "xty", xty, D, H) < 0) ||
             (x_sum && read_f64(g, "x_sum", x_sum, D, 0) < 0) ||
             (y_sum && read_f64(g, "y_sum", y_sum, H, 0) < 0) ||
             (y_sq_sum && read_f64(g, "y_sq_sum", y_sq_sum, H, 0) < 0) ||
             kvz_h5_attr_get_i64(g, "count", &c) < 0 || c < 0
             ? -1 : 0;
    H5Gclose(g);
    if (rc == 0 && count)
        *count = c;
    return rc;
}

int kvz_ostore_ridge_read(kvz_ostore_ridge *r, hid_t f)
{
    size_t D = r->D, H = r->H;
    for (size_t l = 0; l < r->L; l++)
        if (kvz_ostore_ridge_read_layer(f, l, D, H, r->xtx + l * D * D, r->xty + l * D * H,
                                        r->x_sum + l * D, r->y_sum + l * H, r->y_sq_sum + l * H,
                                        &r->count) < 0)
            return -1;
    return 0;
}
