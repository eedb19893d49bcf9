/* ridge: exact ridge regression for the Linear surrogate (spec section 3),
 * with sklearn Ridge(alpha) semantics: fit_intercept=True, the intercept is
 * not penalized, X and Y are centered. Per layer, with n samples x [D],
 * y [Hkv], means mu_x, mu_y:
 *   A = sum x x^T - n mu_x mu_x^T + alpha I        [D, D]
 *   B = sum x y^T - n mu_x mu_y^T                  [D, Hkv]
 *   A W^T = B  (Cholesky, LAPACK dpotrf/dpotrs, float64)
 *   b = mu_y - W mu_x
 * Everything is float64; the float32 entry point only rounds the result.
 *
 * Two ways in: the float64 sufficient statistics (exactly what
 * kvzip_oracle/oracle_store.h stores under /ridge/<l>), or an accumulator that
 * builds them from float32 row blocks on a backend (kvz_op_ridge_add: rows
 * converted to float64, then dsyrk / dgemm; cpu: OpenBLAS, cuda: cuBLAS), so
 * a layer can be streamed or fitted from rows held on a device.
 *
 * Note: centering from raw sums (xtx - n mu mu^T) cancels digits when the
 * means are large next to the spread (|mu|/sigma = 1e4 costs ~8 of the 16
 * digits); hidden states after RMSNorm are far from that. */
#ifndef KVZ_RIDGE_H
#define KVZ_RIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "../ops/backend.h"

/* The float64 sums over the samples (row-major). xtx is the full symmetric
 * matrix (both triangles). y_sq_sum may be NULL where not needed. */
typedef struct kvz_ridge_stats {
    size_t d_in, d_out;   /* D, Hkv */
    const double *xtx;    /* [D, D]   sum x x^T */
    const double *xty;    /* [D, Hkv] sum x y^T */
    const double *x_sum;  /* [D] */
    const double *y_sum;  /* [Hkv] */
    const double *y_sq_sum; /* [Hkv] sum y^2 (unused by the solve; may be NULL) */
    int64_t count;        /* n */
} kvz_ridge_stats;

/* Solves the ridge problem above. w: [Hkv, D] row-major (nn.Linear layout),
 * b: [Hkv]. alpha >= 0. Errors: KVZ_EINVAL for count < 1, a negative or
 * non-finite alpha, NULL arrays, non-finite statistics, or a system that is
 * not (numerically) positive definite ("ridge: X^T X + alpha I is not
 * positive definite at feature k (alpha 0 with collinear or constant
 * features?); use alpha > 0"); KVZ_ENOMEM. */
int kvz_ridge_solve_f64(const kvz_ridge_stats *st, double alpha, double *w, double *b,
                        kvz_error *err);
/* Same, rounded to float32 (w [Hkv, D], b [Hkv], e.g. a kvz_surrogate layer). */
int kvz_ridge_solve(const kvz_ridge_stats *st, double alpha, float *w, float *b, kvz_error *err);

/* ---------- accumulator: statistics from float32 row blocks ---------- */

typedef struct kvz_ridge_acc kvz_ridge_acc; /* opaque */

/* An accumulator with its sums on the host (cpu), or on backend be. */
int kvz_ridge_acc_create(size_t d_in, size_t d_out, kvz_ridge_acc **out, kvz_error *err);
int kvz_ridge_acc_create_on(kvz_backend *be, size_t d_in, size_t d_out, kvz_ridge_acc **out,
                            kvz_error *err);
void kvz_ridge_acc_free(kvz_ridge_acc *acc);
/* Adds n rows: x [n, D], y [n, Hkv], row-major float32 in the accumulator's
 * backend memory (host arrays for kvz_ridge_acc_create). Non-finite values
 * give KVZ_EINVAL ("ridge: row r feature k of the block is not finite"),
 * and the accumulator is unchanged. n == 0 is a no-op. */
int kvz_ridge_acc_add(kvz_ridge_acc *acc, const float *x, const float *y, size_t n,
                      kvz_error *err);
/* Copies a backend accumulator's sums to its host mirror (no-op on the host). */
int kvz_ridge_acc_download(kvz_ridge_acc *acc, kvz_error *err);
/* Read-only view of the sums (xtx symmetrized; valid until the next
 * kvz_ridge_acc_add or free); on a backend accumulator, the sums of the
 * last kvz_ridge_acc_download. */
kvz_ridge_stats kvz_ridge_acc_stats(kvz_ridge_acc *acc);
/* download + stats + kvz_ridge_solve. */
int kvz_ridge_acc_solve(kvz_ridge_acc *acc, double alpha, float *w, float *b, kvz_error *err);

/* Fits w [Hkv, D], b [Hkv] (host) from n rows held on backend be: x [n, D]
 * fp32 or fp16 (widened), y [n, Hkv] fp32. */
int kvz_ridge_fit_rows(kvz_backend *be, kvz_buf x, kvz_buf y, size_t n, size_t d_in,
                       size_t d_out, double alpha, float *w, float *b, kvz_error *err);

#endif
