/* kvzip_score: KVzip+ log-importance of one layer's context tokens from a
 * forward-pass tap (spec 1.2/1.3). Phase 1, per query head: ||W_O^g v_i|| for
 * the context keys with sgemm in row blocks. Phase 2, per (query head, chunk
 * of repeat queries): for blocks of queries, the log-sum-exp of the full
 * causal row (online, double sums), then the best log-score per context key.
 * Heads of a KV group and chunks are max-reduced at the end. Everything is in
 * the log domain, so tiny attention weights do not underflow. */
#include "kvzip_score.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/ops.h"

enum { SCORE_QBLOCK = 64, SCORE_KBLOCK = 256, SCORE_VBLOCK = 64 };

typedef struct score_job {
    const kvz_layer_tap *tap;
    size_t H, Hkv, dh, D;
    size_t p0, p1, r0, r1;
    float scale;
    size_t n_chunks, chunk_len; /* repeat queries split per head for the threads */
    const double *log_xnorm;    /* [|R|] ln ||x_j|| */
    double *lognorm;            /* [H, |P|] ln ||W_O^g v_i^h|| */
    double *best;               /* [H * n_chunks, |P|] best log-score per (head, chunk) */
    int *status;                /* [H * n_chunks] per-item KVZ_OK / KVZ_ENOMEM */
} score_job;

int kvz_kvzip_value_lognorms(const kvz_layer_tap *tap, size_t H, size_t Hkv, size_t dh,
                             size_t D, size_t g, size_t i0, size_t i1, double *out)
{
    size_t h = g / (H / Hkv), kv_stride = Hkv * dh;
    float *buf = malloc(SCORE_VBLOCK * D * sizeof *buf);
    if (!buf)
        return KVZ_ENOMEM;
    for (size_t b = i0; b < i1; b += SCORE_VBLOCK) {
        size_t nb = i1 - b < SCORE_VBLOCK ? i1 - b : SCORE_VBLOCK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)nb, (blasint)D,
                    (blasint)dh, 1.0f, tap->v + b * kv_stride + h * dh, (blasint)kv_stride,
                    tap->w_o + g * dh, (blasint)(H * dh), 0.0f, buf, (blasint)D);
        kvz_kvzip_row_lognorms(buf, D, nb, out + (b - i0));
    }
    free(buf);
    return KVZ_OK;
}

void kvz_kvzip_row_lognorms(const float *x, size_t D, size_t n, double *out)
{
    for (size_t r = 0; r < n; r++) {
        double ss = 0.0;
        for (size_t c = 0; c < D; c++)
            ss += (double)x[r * D + c] * x[r * D + c];
        out[r] = 0.5 * log(ss);
    }
}

/* s[nq, nk] = scale * q_j . k_i for queries [j0, j0+nq) of head g, keys [i0, i0+nk). */
static void block_logits(const score_job *jb, size_t g, size_t j0, size_t nq, size_t i0,
                         size_t nk, float *s)
{
    size_t h = g / (jb->H / jb->Hkv);
    size_t q_stride = jb->H * jb->dh, kv_stride = jb->Hkv * jb->dh;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)nq, (blasint)nk,
                (blasint)jb->dh, jb->scale, jb->tap->q + j0 * q_stride + g * jb->dh,
                (blasint)q_stride, jb->tap->k + i0 * kv_stride + h * jb->dh,
                (blasint)kv_stride, 0.0f, s, (blasint)nk);
}

/* lse[r] = log-sum-exp of query j0+r's causal row (keys 0..j0+r). */
static void causal_lse(const score_job *jb, size_t g, size_t j0, size_t nq, float *s,
                       double *lse)
{
    double m[SCORE_QBLOCK], l[SCORE_QBLOCK];
    for (size_t r = 0; r < nq; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0;
    }
    size_t end = j0 + nq;
    for (size_t i0 = 0; i0 < end; i0 += SCORE_KBLOCK) {
        size_t nk = end - i0 < SCORE_KBLOCK ? end - i0 : SCORE_KBLOCK;
        block_logits(jb, g, j0, nq, i0, nk, s);
        for (size_t r = 0; r < nq; r++) {
            size_t j = j0 + r;
            if (j < i0)
                continue;
            size_t nvalid = j + 1 - i0 < nk ? j + 1 - i0 : nk;
            const float *row = s + r * nk;
            double bm = -INFINITY;
            for (size_t c = 0; c < nvalid; c++)
                bm = row[c] > bm ? row[c] : bm;
            if (bm > m[r]) {
                l[r] *= exp(m[r] - bm);
                m[r] = bm;
            }
            float mf = (float)m[r];
            l[r] += kvz_vexp_sum(row, nvalid, mf);
        }
    }
    for (size_t r = 0; r < nq; r++)
        lse[r] = m[r] + log(l[r]);
}

/* best[i-p0] = max over queries of block [j0, j0+nq) of the log-score of key i. */
static void context_best(const score_job *jb, size_t g, size_t j0, size_t nq, float *s,
                         const double *lse, const double *lognorm, double *best)
{
    for (size_t i0 = jb->p0; i0 < jb->p1; i0 += SCORE_KBLOCK) {
        size_t nk = jb->p1 - i0 < SCORE_KBLOCK ? jb->p1 - i0 : SCORE_KBLOCK;
        block_logits(jb, g, j0, nq, i0, nk, s);
        for (size_t r = 0; r < nq; r++) {
            double shift = lse[r] + jb->log_xnorm[j0 + r - jb->r0];
            for (size_t c = 0; c < nk; c++) {
                double y = (double)s[r * nk + c] - shift + lognorm[i0 + c - jb->p0];
                double *b = &best[i0 + c - jb->p0];
                if (y > *b)
                    *b = y;
            }
        }
    }
}

static void lognorm_head(void *ctx, size_t g)
{
    const score_job *jb = ctx;
    jb->status[g] = kvz_kvzip_value_lognorms(jb->tap, jb->H, jb->Hkv, jb->dh, jb->D, g, jb->p0,
                                             jb->p1, jb->lognorm + g * (jb->p1 - jb->p0));
}

/* Item = (query head g, chunk of repeat queries). */
static void score_chunk(void *ctx, size_t item)
{
    const score_job *jb = ctx;
    size_t nP = jb->p1 - jb->p0, g = item / jb->n_chunks;
    size_t j_begin = jb->r0 + (item % jb->n_chunks) * jb->chunk_len;
    size_t j_end = jb->r1 - j_begin < jb->chunk_len ? jb->r1 : j_begin + jb->chunk_len;
    double *best = jb->best + item * nP;
    for (size_t i = 0; i < nP; i++)
        best[i] = -INFINITY;
    float *s = malloc((size_t)SCORE_QBLOCK * SCORE_KBLOCK * sizeof *s);
    jb->status[item] = s ? KVZ_OK : KVZ_ENOMEM;
    for (size_t j0 = j_begin; s && j0 < j_end; j0 += SCORE_QBLOCK) {
        size_t nq = j_end - j0 < SCORE_QBLOCK ? j_end - j0 : SCORE_QBLOCK;
        double lse[SCORE_QBLOCK];
        if (jb->tap->lse) /* the forward attention's normalizers: no second pass */
            for (size_t r = 0; r < nq; r++)
                lse[r] = (double)jb->tap->lse[(j0 + r) * jb->H + g];
        else
            causal_lse(jb, g, j0, nq, s, lse);
        context_best(jb, g, j0, nq, s, lse, jb->lognorm + g * nP, best);
    }
    free(s);
}

/* Enough (head, query-chunk) items to keep about twice the threads busy;
 * chunks are whole query blocks. */
static void plan_chunks(score_job *jb)
{
    size_t n_qblocks = (jb->r1 - jb->r0 + SCORE_QBLOCK - 1) / SCORE_QBLOCK;
    size_t threads = (size_t)(kvz_ops_threads() > 0 ? kvz_ops_threads() : 1);
    size_t want = (2 * threads + jb->H - 1) / jb->H;
    size_t n = want < n_qblocks ? want : n_qblocks;
    n = n ? n : 1;
    jb->chunk_len = (n_qblocks + n - 1) / n * SCORE_QBLOCK;
    jb->n_chunks = (jb->r1 - jb->r0 + jb->chunk_len - 1) / jb->chunk_len;
}

static int first_failure(const int *status, size_t n)
{
    for (size_t e = 0; e < n; e++)
        if (status[e] != KVZ_OK)
            return status[e];
    return KVZ_OK;
}

static int check_args(const kvz_layer_tap *tap, const kvz_model_config *cfg, size_t p0,
                      size_t p1, size_t r0, size_t r1, const float *out, kvz_error *err)
{
    if (!tap || !cfg || !out || !tap->x || !tap->q || !tap->k || !tap->v || !tap->w_o)
        return kvz_fail(err, KVZ_EINVAL, "kvzip score: NULL tap, config, tap array or output");
    size_t L = tap->layer, T = tap->n_tokens;
    if (cfg->n_heads == 0 || cfg->n_kv_heads == 0 || cfg->n_heads % cfg->n_kv_heads != 0 ||
        cfg->head_dim == 0 || cfg->d_model == 0)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score: layer %zu: bad head config (%zu heads, %zu KV heads, "
                        "head_dim %zu, d_model %zu)",
                        L, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim, cfg->d_model);
    if (tap->pos0 != 0)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score: layer %zu: tap starts at position %zu; the score needs "
                        "one full pass from position 0",
                        L, tap->pos0);
    if (p0 >= p1 || r0 >= r1)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score: layer %zu: empty range: context [%zu, %zu), repeat "
                        "[%zu, %zu)",
                        L, p0, p1, r0, r1);
    if (p1 > r0)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score: layer %zu: context [%zu, %zu) must end at or before the "
                        "repeat [%zu, %zu) starts",
                        L, p0, p1, r0, r1);
    if (r1 > T)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score: layer %zu: repeat [%zu, %zu) goes past the %zu tokens "
                        "of the pass",
                        L, r0, r1, T);
    return KVZ_OK;
}

/* out[i, h] = max over the group's query heads and their chunks of best. */
static void reduce_groups(const score_job *jb, float *out)
{
    size_t nP = jb->p1 - jb->p0, G = jb->H / jb->Hkv, per_h = G * jb->n_chunks;
    for (size_t i = 0; i < nP; i++)
        for (size_t h = 0; h < jb->Hkv; h++) {
            double b = -INFINITY;
            for (size_t item = h * per_h; item < (h + 1) * per_h; item++)
                b = jb->best[item * nP + i] > b ? jb->best[item * nP + i] : b;
            out[i * jb->Hkv + h] = (float)b;
        }
}

/* Runs the two parallel phases once the job's buffers exist. */
static int run_job(score_job *jb, kvz_error *err)
{
    size_t n_items = jb->H * jb->n_chunks;
    int blas_threads = kvz_ops_threads();
    openblas_set_num_threads(1); /* the items are the parallelism: no nested BLAS threads */
    kvz_parallel_for(jb->H, lognorm_head, jb);
    int rc = first_failure(jb->status, jb->H);
    if (rc == KVZ_OK) {
        kvz_parallel_for(n_items, score_chunk, jb);
        rc = first_failure(jb->status, n_items);
    }
    openblas_set_num_threads(blas_threads);
    if (rc != KVZ_OK)
        return kvz_fail(err, rc, "kvzip score: layer %zu: out of memory", jb->tap->layer);
    return KVZ_OK;
}

int kvz_kvzip_score_layer(const kvz_layer_tap *tap, const kvz_model_config *cfg, size_t p0,
                          size_t p1, size_t r0, size_t r1, float *out_logscores,
                          kvz_error *err)
{
    int rc = check_args(tap, cfg, p0, p1, r0, r1, out_logscores, err);
    if (rc != KVZ_OK)
        return rc;
    score_job jb;
    memset(&jb, 0, sizeof jb);
    jb.tap = tap;
    jb.H = cfg->n_heads, jb.Hkv = cfg->n_kv_heads, jb.dh = cfg->head_dim, jb.D = cfg->d_model;
    jb.p0 = p0, jb.p1 = p1, jb.r0 = r0, jb.r1 = r1;
    jb.scale = (float)(1.0 / sqrt((double)jb.dh));
    plan_chunks(&jb);
    size_t nP = p1 - p0, n_items = jb.H * jb.n_chunks;
    double *log_xnorm = malloc((r1 - r0) * sizeof *log_xnorm);
    double *lognorm = malloc(jb.H * nP * sizeof *lognorm);
    double *best = malloc(n_items * nP * sizeof *best);
    int *status = calloc(n_items, sizeof *status);
    if (!log_xnorm || !lognorm || !best || !status) {
        rc = kvz_fail(err, KVZ_ENOMEM, "kvzip score: layer %zu: out of memory", tap->layer);
    } else {
        kvz_kvzip_row_lognorms(tap->x + r0 * jb.D, jb.D, r1 - r0, log_xnorm);
        jb.log_xnorm = log_xnorm, jb.lognorm = lognorm, jb.best = best, jb.status = status;
        rc = run_job(&jb, err);
        if (rc == KVZ_OK)
            reduce_groups(&jb, out_logscores);
    }
    free(log_xnorm);
    free(lognorm);
    free(best);
    free(status);
    return rc;
}
