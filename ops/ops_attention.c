/* ops_attention: blockwise causal grouped-query attention (kvz_attention in
 * ops/ops.h). Each work item is one (head, block of queries); it walks the
 * key blocks it may see with an online softmax (running max m, running sum l,
 * unnormalised output O), so scratch is block x block per item, never T x T.
 * Scores and P.V go through sgemm with OpenBLAS held at one thread while the
 * items run in parallel on the ops' threads. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_error.h"
#include "ops.h"

typedef struct attn_job {
    const kvz_attn_args *a;
    size_t block, n_qblocks;
    int failed;
} attn_job;

typedef struct attn_scratch {
    float *s;     /* [block, block] scores, then probabilities */
    float *o;     /* [block, head_dim] unnormalised output */
    float *m, *l; /* [block] running max and sum */
} attn_scratch;

/* Scores of query rows [i0, i0+nq) against keys [j0, j0+nk), causal mask applied. */
static void block_scores(const kvz_attn_args *a, size_t h, size_t i0, size_t nq, size_t j0,
                         size_t nk, float *s)
{
    size_t kvh = h / (a->n_heads / a->n_kv_heads);
    size_t q_stride = a->n_heads * a->head_dim, kv_stride = a->n_kv_heads * a->head_dim;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)nq, (blasint)nk,
                (blasint)a->head_dim, a->scale, a->q + i0 * q_stride + h * a->head_dim,
                (blasint)q_stride, a->k + j0 * kv_stride + kvh * a->head_dim, (blasint)kv_stride,
                0.0f, s, (blasint)nk);
    if (j0 + nk - 1 <= a->pos0 + i0)
        return; /* every key is at or before the first query: nothing to mask */
    for (size_t r = 0; r < nq; r++) {
        size_t pos = a->pos0 + i0 + r;
        for (size_t c = pos + 1 > j0 ? pos + 1 - j0 : 0; c < nk; c++)
            s[r * nk + c] = -INFINITY;
    }
}

/* Online-softmax update of one row; returns the correction applied to O. */
static float softmax_row_update(float *srow, size_t nk, float *m, float *l)
{
    float block_max = -INFINITY;
    for (size_t c = 0; c < nk; c++)
        if (srow[c] > block_max)
            block_max = srow[c];
    if (block_max == -INFINITY) { /* every key of this block is in the future */
        memset(srow, 0, nk * sizeof *srow);
        return 1.0f;
    }
    float m_new = *m > block_max ? *m : block_max;
    float corr = *m == -INFINITY ? 0.0f : expf(*m - m_new);
    float sum = kvz_vexp_shift_sum(srow, nk, m_new);
    *l = *l * corr + sum;
    *m = m_new;
    return corr;
}

static void attend_block(const kvz_attn_args *a, size_t h, size_t i0, size_t nq, size_t j0,
                         size_t nk, attn_scratch *sc)
{
    size_t dh = a->head_dim, kvh = h / (a->n_heads / a->n_kv_heads);
    size_t kv_stride = a->n_kv_heads * dh;
    block_scores(a, h, i0, nq, j0, nk, sc->s);
    for (size_t r = 0; r < nq; r++) {
        float corr = softmax_row_update(sc->s + r * nk, nk, &sc->m[r], &sc->l[r]);
        if (corr != 1.0f)
            for (size_t d = 0; d < dh; d++)
                sc->o[r * dh + d] *= corr;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)nq, (blasint)dh, (blasint)nk,
                1.0f, sc->s, (blasint)nk, a->v + j0 * kv_stride + kvh * dh, (blasint)kv_stride, 1.0f,
                sc->o, (blasint)dh);
}

static void attn_item(void *ctx, size_t item)
{
    attn_job *job = ctx;
    const kvz_attn_args *a = job->a;
    size_t B = job->block, dh = a->head_dim;
    size_t h = item / job->n_qblocks, i0 = (item % job->n_qblocks) * B;
    size_t nq = a->n_q - i0 < B ? a->n_q - i0 : B;
    float *mem = malloc((B * B + B * dh + 2 * B) * sizeof *mem);
    if (!mem) {
        job->failed = 1;
        return;
    }
    attn_scratch sc = {mem, mem + B * B, mem + B * B + B * dh, mem + B * B + B * dh + B};
    memset(sc.o, 0, nq * dh * sizeof *sc.o);
    for (size_t r = 0; r < nq; r++) {
        sc.m[r] = -INFINITY;
        sc.l[r] = 0.0f;
    }
    size_t n_keys = a->pos0 + i0 + nq;
    for (size_t j0 = 0; j0 < n_keys; j0 += B)
        attend_block(a, h, i0, nq, j0, n_keys - j0 < B ? n_keys - j0 : B, &sc);
    size_t out_stride = a->n_heads * dh;
    for (size_t r = 0; r < nq; r++) {
        float *dst = a->out + (i0 + r) * out_stride + h * dh;
        for (size_t d = 0; d < dh; d++)
            dst[d] = sc.o[r * dh + d] / sc.l[r];
        if (a->lse)
            a->lse[(i0 + r) * a->n_heads + h] = sc.m[r] + logf(sc.l[r]);
    }
    free(mem);
}

int kvz_attention(const kvz_attn_args *a)
{
    if (a->n_q == 0)
        return KVZ_OK;
    attn_job job = {a, a->block ? a->block : 256, 0, 0};
    job.n_qblocks = (a->n_q + job.block - 1) / job.block;
    int threads = kvz_ops_threads();
    openblas_set_num_threads(1);
    kvz_parallel_for(a->n_heads * job.n_qblocks, attn_item, &job);
    openblas_set_num_threads(threads);
    return job.failed ? KVZ_ENOMEM : KVZ_OK;
}

/* ---------- ragged attention (pruned KV cache) ----------
 * Decode (one query): one work item per head, the head's visible kept keys
 * RB at a time: their scores, one online-softmax rescale per block, then
 * P.V. Prefill chunks: one work item per
 * (head, block of RB queries); the block sees a prefix of the head's slab
 * (positions ascend), taken RB keys at a time: scores and P.V through sgemm,
 * the positional mask and the online softmax as in the dense kernel above. */
enum { RB = 64 };

typedef struct ragged_job {
    const kvz_ragged_attn_args *a;
    size_t n_qblocks;
    int failed;
} ragged_job;

static void ragged_decode(const kvz_ragged_attn_args *a, size_t i, size_t h)
{
    size_t dh = a->head_dim, g = h / (a->n_heads / a->n_kv_heads);
    size_t r0 = a->row0 ? (size_t)a->row0[g] : g * a->cap;
    const float *q = a->q + (i * a->n_heads + h) * dh;
    const float *k = a->k + r0 * dh, *v = a->v + r0 * dh;
    const int32_t *pos = a->pos + r0;
    float *out = a->out + (i * a->n_heads + h) * dh;
    int64_t qpos = (int64_t)(a->q_pos0 + i);
    size_t n = (size_t)a->count[g];
    while (n && pos[n - 1] > qpos) /* positions ascend: the visible keys are a prefix */
        n--;
    float m = -INFINITY, l = 0.0f, s[RB];
    memset(out, 0, dh * sizeof *out);
    for (size_t j0 = 0; j0 < n; j0 += RB) { /* a block of keys: scores, one rescale, P.V */
        size_t nk = n - j0 < RB ? n - j0 : RB;
        float bm = -INFINITY;
        for (size_t j = 0; j < nk; j++) {
            const float *kr = k + (j0 + j) * dh;
            float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
            size_t d = 0;
            for (; d + 4 <= dh; d += 4) {
                d0 += q[d] * kr[d];
                d1 += q[d + 1] * kr[d + 1];
                d2 += q[d + 2] * kr[d + 2];
                d3 += q[d + 3] * kr[d + 3];
            }
            for (; d < dh; d++)
                d0 += q[d] * kr[d];
            s[j] = ((d0 + d1) + (d2 + d3)) * a->scale;
            bm = s[j] > bm ? s[j] : bm;
        }
        float m_new = bm > m ? bm : m, corr = expf(m - m_new);
        l *= corr;
        for (size_t d = 0; d < dh; d++)
            out[d] *= corr;
        for (size_t j = 0; j < nk; j++) {
            float p = expf(s[j] - m_new);
            const float *vr = v + (j0 + j) * dh;
            l += p;
            for (size_t d = 0; d < dh; d++)
                out[d] += p * vr[d];
        }
        m = m_new;
    }
    if (l > 0.0f)
        for (size_t d = 0; d < dh; d++)
            out[d] /= l;
}

static void ragged_block(const kvz_ragged_attn_args *a, size_t h, size_t i0, size_t nq,
                         float *mem)
{
    size_t dh = a->head_dim, g = h / (a->n_heads / a->n_kv_heads), qs = a->n_heads * dh;
    size_t r0 = a->row0 ? (size_t)a->row0[g] : g * a->cap;
    const float *k = a->k + r0 * dh, *v = a->v + r0 * dh;
    const int32_t *pos = a->pos + r0;
    float *s = mem, *o = mem + RB * RB, *m = o + RB * dh, *l = m + RB;
    memset(o, 0, nq * dh * sizeof *o);
    for (size_t r = 0; r < nq; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    int64_t last = (int64_t)(a->q_pos0 + i0 + nq - 1);
    size_t n = (size_t)a->count[g], vis = 0;
    while (vis < n && pos[vis] <= last) /* the block's visible prefix */
        vis++;
    for (size_t j0 = 0; j0 < vis; j0 += RB) {
        size_t nk = vis - j0 < RB ? vis - j0 : RB;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)nq, (blasint)nk,
                    (blasint)dh, a->scale, a->q + i0 * qs + h * dh, (blasint)qs, k + j0 * dh,
                    (blasint)dh, 0.0f, s, (blasint)nk);
        for (size_t r = 0; r < nq; r++) {
            int64_t qpos = (int64_t)(a->q_pos0 + i0 + r);
            float *row = s + r * nk;
            for (size_t c = nk; c-- > 0 && pos[j0 + c] > qpos;)
                row[c] = -INFINITY;
            float corr = softmax_row_update(row, nk, &m[r], &l[r]);
            if (corr != 1.0f)
                for (size_t d = 0; d < dh; d++)
                    o[r * dh + d] *= corr;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)nq, (blasint)dh,
                    (blasint)nk, 1.0f, s, (blasint)nk, v + j0 * dh, (blasint)dh, 1.0f, o,
                    (blasint)dh);
    }
    for (size_t r = 0; r < nq; r++) {
        float *dst = a->out + (i0 + r) * qs + h * dh;
        for (size_t d = 0; d < dh; d++)
            dst[d] = l[r] > 0.0f ? o[r * dh + d] / l[r] : 0.0f;
    }
}

static void ragged_item(void *ctx, size_t item)
{
    ragged_job *job = ctx;
    const kvz_ragged_attn_args *a = job->a;
    size_t h = item / job->n_qblocks, i0 = (item % job->n_qblocks) * RB;
    size_t nq = a->n_q - i0 < RB ? a->n_q - i0 : RB;
    if (nq == 1) {
        ragged_decode(a, i0, h);
        return;
    }
    float *mem = malloc((RB * RB + RB * a->head_dim + 2 * RB) * sizeof *mem);
    if (!mem) {
        job->failed = 1;
        return;
    }
    ragged_block(a, h, i0, nq, mem);
    free(mem);
}

int kvz_ragged_attention(const kvz_ragged_attn_args *a)
{
    if (!a->n_q)
        return KVZ_OK;
    ragged_job job = {a, (a->n_q + RB - 1) / RB, 0};
    int threads = kvz_ops_threads();
    openblas_set_num_threads(1);
    kvz_parallel_for(a->n_heads * job.n_qblocks, ragged_item, &job);
    openblas_set_num_threads(threads);
    return job.failed ? KVZ_ENOMEM : KVZ_OK;
}
