/* metrics: MSE, R^2, Pearson r and the top-k keep overlap of a surrogate's
 * predictions against the oracle (definitions in metrics.h). */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const double kvz_metrics_ratios[KVZ_METRICS_N_RATIOS] = {2.0, 3.0, 4.0};

typedef struct ranked {
    float v;
    size_t row;
} ranked;

/* Descending value, then ascending row. */
static int cmp_desc(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    if (a->v != b->v)
        return a->v > b->v ? -1 : 1;
    return (a->row > b->row) - (a->row < b->row);
}

/* mse, r2, pearson of a strided vector (n elements, stride between them). */
static void moments(const float *p, const float *o, size_t n, size_t stride,
                    kvz_metrics_values *out)
{
    double sp = 0, so = 0;
    for (size_t i = 0; i < n; i++) {
        sp += p[i * stride];
        so += o[i * stride];
    }
    double mp = sp / (double)n, mo = so / (double)n;
    double sse = 0, sst = 0, spp = 0, spo = 0;
    for (size_t i = 0; i < n; i++) {
        double dp = (double)p[i * stride] - mp, dob = (double)o[i * stride] - mo;
        double r = (double)p[i * stride] - (double)o[i * stride];
        sse += r * r;
        sst += dob * dob;
        spp += dp * dp;
        spo += dp * dob;
    }
    out->mse = sse / (double)n;
    out->r2 = sst > 0 ? 1.0 - sse / sst : NAN;
    out->pearson = (sst > 0 && spp > 0) ? spo / sqrt(spp * sst) : NAN;
}

/* rank[row] = position of row in descending order of column h. */
static void rank_column(const float *v, size_t n, size_t d_out, size_t h, ranked *buf,
                        size_t *rank)
{
    for (size_t i = 0; i < n; i++) {
        buf[i].v = v[i * d_out + h];
        buf[i].row = i;
    }
    qsort(buf, n, sizeof *buf, cmp_desc);
    for (size_t k = 0; k < n; k++)
        rank[buf[k].row] = k;
}

static void keep_overlap(const size_t *rank_p, const size_t *rank_o, size_t n, double *out)
{
    for (int c = 0; c < KVZ_METRICS_N_RATIOS; c++) {
        double f = 1.0 - 1.0 / kvz_metrics_ratios[c];
        size_t keep = n - (size_t)floor(f * (double)n), both = 0;
        for (size_t i = 0; i < n; i++)
            both += rank_p[i] < keep && rank_o[i] < keep;
        out[c] = (double)both / (double)keep;
    }
}

static int check_finite(const float *v, size_t n, size_t d_out, const char *what,
                        kvz_error *err)
{
    for (size_t i = 0; i < n * d_out; i++)
        if (!isfinite(v[i]))
            return kvz_fail(err, KVZ_EINVAL, "metrics: %s row %zu column %zu is not finite",
                            what, i / d_out, i % d_out);
    return KVZ_OK;
}

int kvz_metrics_compute(const float *pred, const float *oracle, size_t n, size_t d_out,
                        kvz_metrics *m, kvz_error *err)
{
    memset(m, 0, sizeof *m);
    if (!pred || !oracle || n == 0 || d_out == 0)
        return kvz_fail(err, KVZ_EINVAL, "metrics: empty or NULL input (n=%zu, Hkv=%zu)", n,
                        d_out);
    int rc = check_finite(pred, n, d_out, "prediction", err);
    if (!rc)
        rc = check_finite(oracle, n, d_out, "oracle", err);
    if (rc)
        return rc;
    ranked *buf = malloc(n * sizeof *buf);
    size_t *rank_p = malloc(n * sizeof *rank_p), *rank_o = malloc(n * sizeof *rank_o);
    m->col = calloc(d_out, sizeof *m->col);
    if (!buf || !rank_p || !rank_o || !m->col) {
        rc = kvz_fail(err, KVZ_ENOMEM, "metrics: out of memory (%zu rows)", n);
        kvz_metrics_free(m);
        goto done;
    }
    m->n = n;
    m->d_out = d_out;
    moments(pred, oracle, n * d_out, 1, &m->overall);
    for (size_t h = 0; h < d_out; h++) {
        moments(pred + h, oracle + h, n, d_out, &m->col[h]);
        rank_column(pred, n, d_out, h, buf, rank_p);
        rank_column(oracle, n, d_out, h, buf, rank_o);
        keep_overlap(rank_p, rank_o, n, m->col[h].keep_overlap);
        for (int c = 0; c < KVZ_METRICS_N_RATIOS; c++)
            m->overall.keep_overlap[c] += m->col[h].keep_overlap[c] / (double)d_out;
    }
done:
    free(buf);
    free(rank_p);
    free(rank_o);
    return rc;
}

void kvz_metrics_free(kvz_metrics *m)
{
    if (!m)
        return;
    free(m->col);
    memset(m, 0, sizeof *m);
}
