/* metrics: held-out quality of a surrogate against the oracle, per output
 * column (KV head) and overall. pred p and oracle o are [n, Hkv] row-major
 * float32; every sum is float64. For a column (or, "overall", for all n*Hkv
 * entries taken as one flat vector):
 *   mse     = mean (p - o)^2
 *   r2      = 1 - SSE / SST, SSE = sum (p - o)^2, SST = sum (o - mean(o))^2
 *             (overall: SST around the mean of all entries, i.e. the flat
 *             vector; NaN when SST == 0)
 *   pearson = cov(p, o) / (std(p) std(o))   (NaN when either is constant);
 *             pearson^2 is the "squared Pearson correlation" of the paper
 * Pruning view, for compression ratios c in {2, 3, 4} (fraction pruned
 * f = 1 - 1/c): per column, n_keep = n - floor(f * n) entries are kept. The
 * oracle keeps its n_keep highest scores (threshold = its f-quantile), the
 * surrogate its n_keep highest predictions (its own f-quantile threshold, the
 * same compression); ties go to the lower row index. keep_overlap[c] =
 * |kept by both| / n_keep, the fraction of the oracle's kept entries the
 * surrogate also keeps (1 = same decisions). Overall: the mean over columns
 * (every column keeps the same n_keep, so this is also the pooled fraction). */
#ifndef KVZ_METRICS_H
#define KVZ_METRICS_H

#include <stddef.h>

#include "../common/kvz_error.h"

enum { KVZ_METRICS_N_RATIOS = 3 };

/* The compression ratios of keep_overlap[]: 2, 3, 4. */
extern const double kvz_metrics_ratios[KVZ_METRICS_N_RATIOS];

typedef struct kvz_metrics_values {
    double mse, r2, pearson;
    double keep_overlap[KVZ_METRICS_N_RATIOS];
} kvz_metrics_values;

typedef struct kvz_metrics {
    size_t n, d_out;
    kvz_metrics_values overall;
    kvz_metrics_values *col; /* [d_out], owned */
} kvz_metrics;

/* Fills m (free with kvz_metrics_free). Errors: KVZ_EINVAL (n == 0,
 * d_out == 0, NULL arrays, a non-finite value: "metrics: oracle row r column
 * h is not finite"), KVZ_ENOMEM. */
int kvz_metrics_compute(const float *pred, const float *oracle, size_t n, size_t d_out,
                        kvz_metrics *m, kvz_error *err);
void kvz_metrics_free(kvz_metrics *m);

#endif
