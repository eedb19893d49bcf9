/* backend_cpu: the cpu backend of ops/backend.h. Host memory (malloc),
 * every op finished when it returns, the arithmetic of ops/ops.h: OpenBLAS
 * sgemm for linear, the blockwise attention, RMSNorm and SwiGLU split over
 * the ops' thread pool in chunks of rows (per-row arithmetic, so results do
 * not depend on the thread count). bf16 weights and tables are widened to
 * fp32 (linear: a block of output rows at a time); attention always
 * computes in fp32. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

typedef struct cpu_backend {
    kvz_backend head;
    size_t peak;     /* largest head.bytes_held seen */
    float *widened;  /* bf16 linear: a block of W widened to fp32 */
    float *y_block;  /* bf16 linear: the block's outputs */
    size_t widened_floats, y_block_floats;
} cpu_backend;

/* ---------- memory ---------- */

static void cpu_close(kvz_backend *be)
{
    cpu_backend *c = (cpu_backend *)be;
    free(c->widened);
    free(c->y_block);
    free(c);
}

static int cpu_alloc(kvz_backend *be, size_t bytes, const char *what, void **out, kvz_error *err)
{
    cpu_backend *c = (cpu_backend *)be;
    *out = malloc(bytes);
    if (!*out)
        return kvz_fail(err, KVZ_ENOMEM, "cpu: out of memory: cannot allocate %zu bytes for %s",
                        bytes, what);
    if (be->bytes_held + bytes > c->peak)
        c->peak = be->bytes_held + bytes;
    return KVZ_OK;
}

static void cpu_free(kvz_backend *be, void *p, size_t bytes)
{
    (void)be;
    (void)bytes;
    free(p);
}

static int cpu_copy(kvz_backend *be, void *dst, const void *src, size_t bytes, kvz_error *err)
{
    (void)be;
    (void)err;
    memmove(dst, src, bytes);
    return KVZ_OK;
}

static int cpu_sync(kvz_backend *be, kvz_error *err)
{
    (void)be;
    (void)err;
    return KVZ_OK;
}

static size_t cpu_peak(const kvz_backend *be)
{
    return ((const cpu_backend *)be)->peak;
}

/* ---------- ops ---------- */

/* Grows *buf to at least n floats. */
static int reserve(float **buf, size_t *have, size_t n)
{
    if (n <= *have)
        return 0;
    float *p = realloc(*buf, n * sizeof *p);
    if (!p)
        return -1;
    *buf = p;
    *have = n;
    return 0;
}

enum { WIDEN_ROWS = 1024 }; /* output rows of a bf16 W widened at a time */

static int cpu_linear(kvz_backend *be, const float *x, kvz_buf w, const float *bias, float *y,
                      size_t n, size_t n_in, size_t n_out, kvz_error *err)
{
    if (w.dtype == KVZ_F32) {
        kvz_linear(x, w.data, bias, y, n, n_in, n_out);
        return KVZ_OK;
    }
    if (w.dtype != KVZ_BF16)
        return kvz_fail(err, KVZ_EUNSUPPORTED, "cpu: linear: %s weights are not supported",
                        kvz_dtype_name(w.dtype));
    cpu_backend *c = (cpu_backend *)be;
    size_t rows = n_out < WIDEN_ROWS ? n_out : WIDEN_ROWS;
    if (reserve(&c->widened, &c->widened_floats, rows * n_in) ||
        reserve(&c->y_block, &c->y_block_floats, n * rows))
        return kvz_fail(err, KVZ_ENOMEM, "cpu: linear: out of memory widening bf16 weights");
    const uint16_t *w16 = w.data;
    for (size_t o0 = 0; o0 < n_out; o0 += rows) {
        size_t cnt = n_out - o0 < rows ? n_out - o0 : rows;
        for (size_t i = 0; i < cnt * n_in; i++)
            c->widened[i] = kvz_bf16_widen(w16[o0 * n_in + i]);
        kvz_linear(x, c->widened, bias ? bias + o0 : NULL, c->y_block, n, n_in, cnt);
        for (size_t r = 0; r < n; r++)
            memcpy(y + r * n_out + o0, c->y_block + r * cnt, cnt * sizeof *y);
    }
    return KVZ_OK;
}

/* RMSNorm and SwiGLU over the thread pool, 64 rows per item. */
typedef struct rows_job {
    const float *in, *w;
    float *out;
    size_t n_rows, width;
    float eps;
} rows_job;

enum { ROWS_PER_ITEM = 64 };

static size_t item_rows(const rows_job *j, size_t i)
{
    size_t r0 = i * ROWS_PER_ITEM;
    return j->n_rows - r0 < ROWS_PER_ITEM ? j->n_rows - r0 : ROWS_PER_ITEM;
}

static void rmsnorm_item(void *ctx, size_t i)
{
    rows_job *j = ctx;
    size_t r0 = i * ROWS_PER_ITEM;
    kvz_rmsnorm(j->in + r0 * j->width, j->w, j->out + r0 * j->width, item_rows(j, i), j->width,
                j->eps);
}

static void swiglu_item(void *ctx, size_t i)
{
    rows_job *j = ctx;
    size_t r0 = i * ROWS_PER_ITEM;
    kvz_swiglu(j->in + r0 * 2 * j->width, j->out + r0 * j->width, item_rows(j, i), j->width);
}

static int cpu_rmsnorm(kvz_backend *be, const float *x, const float *w, float *y, size_t n_rows,
                       size_t dim, float eps, kvz_error *err)
{
    (void)be;
    (void)err;
    rows_job j = {x, w, y, n_rows, dim, eps};
    kvz_parallel_for((n_rows + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM, rmsnorm_item, &j);
    return KVZ_OK;
}

static int cpu_swiglu(kvz_backend *be, const float *gate_up, float *out, size_t n, size_t d_ff,
                      kvz_error *err)
{
    (void)be;
    (void)err;
    rows_job j = {gate_up, NULL, out, n, d_ff, 0.0f};
    kvz_parallel_for((n + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM, swiglu_item, &j);
    return KVZ_OK;
}

static int cpu_rope(kvz_backend *be, float *x, size_t n_tokens, size_t n_heads, size_t head_dim,
                    size_t pos0, const float *inv_freq, kvz_error *err)
{
    (void)be;
    (void)err;
    kvz_rope_apply(x, n_tokens, n_heads, head_dim, pos0, inv_freq);
    return KVZ_OK;
}

static int cpu_attention(kvz_backend *be, const kvz_attn_args *a, kvz_dtype compute,
                         kvz_error *err)
{
    (void)compute; /* always fp32 here */
    if (kvz_attention(a))
        return kvz_fail(err, KVZ_ENOMEM, "%s: attention: out of memory", be->name);
    return KVZ_OK;
}

static int cpu_ragged_attention(kvz_backend *be, const kvz_ragged_attn_args *a,
                                kvz_error *err)
{
    if (kvz_ragged_attention(a))
        return kvz_fail(err, KVZ_ENOMEM, "%s: ragged attention: out of memory", be->name);
    return KVZ_OK;
}

static int cpu_add(kvz_backend *be, float *h, const float *d, size_t count, kvz_error *err)
{
    (void)be;
    (void)err;
    for (size_t i = 0; i < count; i++)
        h[i] += d[i];
    return KVZ_OK;
}

static int cpu_embed(kvz_backend *be, kvz_buf table, size_t dim, const int32_t *ids, size_t n,
                     float *h, kvz_error *err)
{
    (void)be;
    (void)err;
    for (size_t t = 0; t < n; t++) {
        size_t row = (size_t)ids[t] * dim;
        if (table.dtype == KVZ_F32) {
            memcpy(h + t * dim, (const float *)table.data + row, dim * sizeof *h);
        } else {
            const uint16_t *src = (const uint16_t *)table.data + row;
            for (size_t i = 0; i < dim; i++)
                h[t * dim + i] = kvz_bf16_widen(src[i]);
        }
    }
    return KVZ_OK;
}

static int cpu_copy_rows(kvz_backend *be, float *dst, size_t dst_stride, const float *src,
                         size_t src_stride, size_t n_rows, size_t width, kvz_error *err)
{
    (void)be;
    (void)err;
    for (size_t r = 0; r < n_rows; r++)
        memcpy(dst + r * dst_stride, src + r * src_stride, width * sizeof *dst);
    return KVZ_OK;
}

static int cpu_convert(kvz_backend *be, kvz_buf dst, kvz_buf src, kvz_error *err)
{
    (void)be;
    (void)err;
    /* (the generic layer sent same-dtype copies to copy) */
    for (size_t i = 0; i < src.numel; i++) {
        float x = src.dtype == KVZ_F32    ? ((const float *)src.data)[i]
                  : src.dtype == KVZ_BF16 ? kvz_bf16_widen(((const uint16_t *)src.data)[i])
                                          : kvz_f16_widen(((const uint16_t *)src.data)[i]);
        if (dst.dtype == KVZ_F32)
            ((float *)dst.data)[i] = x;
        else if (dst.dtype == KVZ_BF16)
            ((uint16_t *)dst.data)[i] = kvz_f32_to_bf16(x);
        else
            ((uint16_t *)dst.data)[i] = kvz_f32_to_f16(x);
    }
    return KVZ_OK;
}

static int cpu_fill(kvz_backend *be, kvz_buf b, uint64_t seed, uint64_t tensor, float bound,
                    float value, kvz_error *err)
{
    (void)be;
    (void)err;
    uint64_t key = kvz_fill_key(seed, tensor);
    for (size_t i = 0; i < b.numel; i++) {
        float x = value;
        if (bound != 0.0f) {
            float u = (float)(kvz_splitmix64(key + i) >> 40) * (1.0f / 16777216.0f);
            x = (2.0f * u - 1.0f) * bound;
        }
        if (b.dtype == KVZ_F32)
            ((float *)b.data)[i] = x;
        else
            ((uint16_t *)b.data)[i] = kvz_f32_to_bf16(x);
    }
    return KVZ_OK;
}

static void *cpu_host_alloc(kvz_backend *be, size_t bytes)
{
    (void)be;
    return malloc(bytes);
}

static void cpu_host_free(kvz_backend *be, void *p)
{
    (void)be;
    free(p);
}

/* ---------- KVzip+ score (cpu) ---------- */
/* The phases of kvzip_oracle/kvzip_score.c's algorithm with OpenBLAS sgemm
 * in blocks (queries SCORE_QBLOCK, keys SCORE_KBLOCK, values SCORE_VBLOCK)
 * and the ops' thread pool over (head, block) items, BLAS single-threaded
 * inside them. Every result is per (head, query block) or a max, so it does
 * not depend on the thread count. */

enum { SCORE_QBLOCK = 64, SCORE_KBLOCK = 256, SCORE_VBLOCK = 64 };

typedef struct score_args {
    const float *q, *k, *v, *w_o, *tap_lse;
    size_t H, Hkv, dh, D;
    size_t p0, p1, r0, r1, i0, i1;
    float scale;
    const double *lse, *log_xnorm, *lognorm;
    double *out64;           /* value lognorms [H, i1 - i0] / causal lse [H, |R|] */
    size_t n_chunks, chunk_len; /* best: repeat queries split per head */
    double *best;            /* best: [H * n_chunks, |P|] */
    int *status;             /* per item KVZ_OK / KVZ_ENOMEM */
} score_args;

/* The threads stay out of BLAS while items run in parallel. */
static void score_parallel(size_t n_items, kvz_parallel_fn fn, score_args *a)
{
    int blas_threads = kvz_ops_threads();
    openblas_set_num_threads(1);
    kvz_parallel_for(n_items, fn, a);
    openblas_set_num_threads(blas_threads);
}

static int first_failure(const int *status, size_t n)
{
    for (size_t e = 0; e < n; e++)
        if (status[e] != KVZ_OK)
            return status[e];
    return KVZ_OK;
}

static void row_lognorms(const float *x, size_t ld, size_t width, size_t n, double *out)
{
    for (size_t r = 0; r < n; r++) {
        double ss = 0.0;
        for (size_t c = 0; c < width; c++)
            ss += (double)x[r * ld + c] * x[r * ld + c];
        out[r] = 0.5 * log(ss);
    }
}

static int cpu_row_lognorms(kvz_backend *be, const float *x, size_t ld, size_t width, size_t n,
                            double *out, kvz_error *err)
{
    (void)be, (void)err;
    row_lognorms(x, ld, width, n, out);
    return KVZ_OK;
}

/* Item g: the keys' W_O^g v_i in blocks of SCORE_VBLOCK rows, then norms. */
static void value_lognorms_head(void *ctx, size_t g)
{
    score_args *a = ctx;
    size_t h = g / (a->H / a->Hkv), kv_stride = a->Hkv * a->dh, n = a->i1 - a->i0;
    float *buf = malloc(SCORE_VBLOCK * a->D * sizeof *buf);
    a->status[g] = buf ? KVZ_OK : KVZ_ENOMEM;
    for (size_t b = a->i0; buf && b < a->i1; b += SCORE_VBLOCK) {
        size_t nb = a->i1 - b < SCORE_VBLOCK ? a->i1 - b : SCORE_VBLOCK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)nb, (blasint)a->D,
                    (blasint)a->dh, 1.0f, a->v + b * kv_stride + h * a->dh, (blasint)kv_stride,
                    a->w_o + g * a->dh, (blasint)(a->H * a->dh), 0.0f, buf, (blasint)a->D);
        row_lognorms(buf, a->D, a->D, nb, a->out64 + g * n + (b - a->i0));
    }
    free(buf);
}

static int cpu_value_lognorms(kvz_backend *be, const float *v, const float *w_o, size_t H,
                              size_t Hkv, size_t dh, size_t D, size_t i0, size_t i1,
                              double *out, kvz_error *err)
{
    (void)be;
    score_args a = {.v = v, .w_o = w_o, .H = H, .Hkv = Hkv, .dh = dh, .D = D, .i0 = i0,
                    .i1 = i1, .out64 = out};
    if (!(a.status = calloc(H, sizeof *a.status)))
        return kvz_fail(err, KVZ_ENOMEM, "cpu: value lognorms: out of memory");
    score_parallel(H, value_lognorms_head, &a);
    int rc = first_failure(a.status, H);
    free(a.status);
    return rc ? kvz_fail(err, rc, "cpu: value lognorms: out of memory") : KVZ_OK;
}

/* s[nq, nk] = scale * q_j . k_i for queries [j0, j0+nq) of head g, keys [i0, i0+nk). */
static void block_logits(const score_args *a, size_t g, size_t j0, size_t nq, size_t i0,
                         size_t nk, float *s)
{
    size_t h = g / (a->H / a->Hkv);
    size_t q_stride = a->H * a->dh, kv_stride = a->Hkv * a->dh;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)nq, (blasint)nk,
                (blasint)a->dh, a->scale, a->q + j0 * q_stride + g * a->dh, (blasint)q_stride,
                a->k + i0 * kv_stride + h * a->dh, (blasint)kv_stride, 0.0f, s, (blasint)nk);
}

/* Item = (head g, query block): lse of queries [j0, j0 + nq) over keys
 * 0..j, SCORE_KBLOCK keys at a time with an online max (double sums). */
static void causal_lse_block(void *ctx, size_t item)
{
    score_args *a = ctx;
    size_t nR = a->r1 - a->r0, n_qblocks = (nR + SCORE_QBLOCK - 1) / SCORE_QBLOCK;
    size_t g = item / n_qblocks, j0 = a->r0 + (item % n_qblocks) * SCORE_QBLOCK;
    size_t nq = a->r1 - j0 < SCORE_QBLOCK ? a->r1 - j0 : SCORE_QBLOCK;
    double *lse = a->out64 + g * nR + (j0 - a->r0);
    float *s = malloc((size_t)SCORE_QBLOCK * SCORE_KBLOCK * sizeof *s);
    a->status[item] = s ? KVZ_OK : KVZ_ENOMEM;
    if (!s)
        return;
    double m[SCORE_QBLOCK], l[SCORE_QBLOCK];
    for (size_t r = 0; r < nq; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0;
    }
    size_t end = j0 + nq;
    for (size_t i0 = 0; i0 < end; i0 += SCORE_KBLOCK) {
        size_t nk = end - i0 < SCORE_KBLOCK ? end - i0 : SCORE_KBLOCK;
        block_logits(a, g, j0, nq, i0, nk, s);
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
    free(s);
}

static int cpu_causal_lse(kvz_backend *be, const float *q, const float *k, const float *tap_lse,
                          size_t H, size_t Hkv, size_t dh, float scale, size_t r0, size_t r1,
                          double *lse, kvz_error *err)
{
    (void)be;
    size_t nR = r1 - r0;
    if (tap_lse) { /* the forward attention's normalizers: no second pass */
        for (size_t g = 0; g < H; g++)
            for (size_t r = 0; r < nR; r++)
                lse[g * nR + r] = (double)tap_lse[(r0 + r) * H + g];
        return KVZ_OK;
    }
    size_t n_items = H * ((nR + SCORE_QBLOCK - 1) / SCORE_QBLOCK);
    score_args a = {.q = q, .k = k, .H = H, .Hkv = Hkv, .dh = dh, .scale = scale, .r0 = r0,
                    .r1 = r1, .out64 = lse};
    if (!(a.status = calloc(n_items, sizeof *a.status)))
        return kvz_fail(err, KVZ_ENOMEM, "cpu: causal lse: out of memory");
    score_parallel(n_items, causal_lse_block, &a);
    int rc = first_failure(a.status, n_items);
    free(a.status);
    return rc ? kvz_fail(err, rc, "cpu: causal lse: out of memory") : KVZ_OK;
}

/* Item = (head g, chunk of repeat queries): best[i - p0] = max over the
 * chunk's queries of the log-score of key i (before ln||W_O^g v_i||, which
 * is added in the reduction), SCORE_QBLOCK queries x SCORE_KBLOCK keys of
 * logits at a time. */
static void best_chunk(void *ctx, size_t item)
{
    score_args *a = ctx;
    size_t nP = a->p1 - a->p0, nR = a->r1 - a->r0, g = item / a->n_chunks;
    size_t j_begin = a->r0 + (item % a->n_chunks) * a->chunk_len;
    size_t j_end = a->r1 - j_begin < a->chunk_len ? a->r1 : j_begin + a->chunk_len;
    double *best = a->best + item * nP;
    const double *lognorm = a->lognorm + g * nP;
    for (size_t i = 0; i < nP; i++)
        best[i] = -INFINITY;
    float *s = malloc((size_t)SCORE_QBLOCK * SCORE_KBLOCK * sizeof *s);
    a->status[item] = s ? KVZ_OK : KVZ_ENOMEM;
    for (size_t j0 = j_begin; s && j0 < j_end; j0 += SCORE_QBLOCK) {
        size_t nq = j_end - j0 < SCORE_QBLOCK ? j_end - j0 : SCORE_QBLOCK;
        for (size_t i0 = a->p0; i0 < a->p1; i0 += SCORE_KBLOCK) {
            size_t nk = a->p1 - i0 < SCORE_KBLOCK ? a->p1 - i0 : SCORE_KBLOCK;
            block_logits(a, g, j0, nq, i0, nk, s);
            for (size_t r = 0; r < nq; r++) {
                double shift = a->lse[g * nR + (j0 + r - a->r0)] + a->log_xnorm[j0 + r - a->r0];
                for (size_t c = 0; c < nk; c++) {
                    double y = (double)s[r * nk + c] - shift + lognorm[i0 + c - a->p0];
                    double *b = &best[i0 + c - a->p0];
                    if (y > *b)
                        *b = y;
                }
            }
        }
    }
    free(s);
}

static int cpu_kvzip_best(kvz_backend *be, const float *q, const float *k, size_t H,
                          size_t Hkv, size_t dh, float scale, size_t p0, size_t p1, size_t r0,
                          size_t r1, const double *lse, const double *log_xnorm,
                          const double *lognorm, kvz_dtype compute, float *out,
                          kvz_error *err)
{
    (void)be, (void)compute; /* always fp32 products */
    score_args a = {.q = q, .k = k, .H = H, .Hkv = Hkv, .dh = dh, .scale = scale, .p0 = p0,
                    .p1 = p1, .r0 = r0, .r1 = r1, .lse = lse, .log_xnorm = log_xnorm,
                    .lognorm = lognorm};
    /* Enough (head, chunk) items to keep about twice the threads busy;
     * chunks are whole query blocks. */
    size_t n_qblocks = (r1 - r0 + SCORE_QBLOCK - 1) / SCORE_QBLOCK;
    size_t threads = (size_t)(kvz_ops_threads() > 0 ? kvz_ops_threads() : 1);
    size_t want = (2 * threads + H - 1) / H;
    size_t nc = want < n_qblocks ? want : n_qblocks;
    nc = nc ? nc : 1;
    a.chunk_len = (n_qblocks + nc - 1) / nc * SCORE_QBLOCK;
    a.n_chunks = (r1 - r0 + a.chunk_len - 1) / a.chunk_len;
    size_t nP = p1 - p0, n_items = H * a.n_chunks;
    a.best = malloc(n_items * nP * sizeof *a.best);
    a.status = calloc(n_items, sizeof *a.status);
    int rc = a.best && a.status ? KVZ_OK : KVZ_ENOMEM;
    if (rc == KVZ_OK) {
        score_parallel(n_items, best_chunk, &a);
        rc = first_failure(a.status, n_items);
    }
    if (rc == KVZ_OK) { /* out[i, h] = max over the group's heads and chunks */
        size_t per_h = (H / Hkv) * a.n_chunks;
        for (size_t i = 0; i < nP; i++)
            for (size_t h = 0; h < Hkv; h++) {
                double b = -INFINITY;
                for (size_t it = h * per_h; it < (h + 1) * per_h; it++)
                    b = a.best[it * nP + i] > b ? a.best[it * nP + i] : b;
                out[i * Hkv + h] = (float)b;
            }
    }
    free(a.best);
    free(a.status);
    return rc ? kvz_fail(err, rc, "cpu: kvzip best: out of memory") : KVZ_OK;
}

static int cpu_gather_rows(kvz_backend *be, const float *src, size_t ld, size_t width,
                           size_t base, size_t n_src, const int64_t *idx, size_t n, float *dst,
                           kvz_error *err)
{
    for (size_t s = 0; s < n; s++)
        if (idx[s] < (int64_t)base || (uint64_t)idx[s] - base >= n_src)
            return kvz_fail(err, KVZ_EINVAL,
                            "%s: gather rows: index %lld (#%zu) outside [%zu, %zu)", be->name,
                            (long long)idx[s], s, base, base + n_src);
    for (size_t s = 0; s < n; s++)
        memcpy(dst + s * width, src + ((size_t)idx[s] - base) * ld, width * sizeof *dst);
    return KVZ_OK;
}

static int cpu_download_async(kvz_backend *be, size_t slot, void *host_dst, const void *src,
                              size_t bytes, kvz_error *err)
{
    (void)be, (void)slot, (void)err;
    memcpy(host_dst, src, bytes);
    return KVZ_OK;
}

static int cpu_slot_nop(kvz_backend *be, size_t slot, kvz_error *err)
{
    (void)be, (void)slot, (void)err;
    return KVZ_OK;
}
/* (end of the KVzip+ score, cpu) */

/* ---------- trainer ops (cpu) ---------- */
/* The arithmetic of the cpu trainer as it always was: sgemm, sequential
 * float64 sums, fp32 elementwise loops. Every op here is stateless, so the
 * trainer may call them from several threads at once on disjoint arrays
 * (the parts of a batch). */

static int cpu_gemm(kvz_backend *be, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                    const float *a, const float *b, float beta, float *c,
                    kvz_gemm_precision prec, kvz_error *err)
{
    (void)be, (void)prec, (void)err;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, a,
                (int)(trans_a ? m : k), b, (int)(trans_b ? k : n), beta, c, (int)n);
    return KVZ_OK;
}

static int cpu_bias_rows(kvz_backend *be, float *out, const float *bias, size_t n, size_t m,
                         kvz_error *err)
{
    (void)be, (void)err;
    for (size_t r = 0; r < n; r++)
        memcpy(out + r * m, bias, m * sizeof *out);
    return KVZ_OK;
}

static int cpu_col_sums(kvz_backend *be, const float *v, size_t n, size_t m, float *out,
                        kvz_error *err)
{
    (void)be, (void)err;
    for (size_t j = 0; j < m; j++) {
        double acc = 0;
        for (size_t r = 0; r < n; r++)
            acc += v[r * m + j];
        out[j] = (float)acc;
    }
    return KVZ_OK;
}

static int cpu_gelu(kvz_backend *be, const float *h, float *a, size_t count, kvz_error *err)
{
    (void)be, (void)err;
    kvz_gelu_forward(h, a, count);
    return KVZ_OK;
}

static int cpu_gelu_backward(kvz_backend *be, const float *h, float *da, size_t count,
                             kvz_error *err)
{
    (void)be, (void)err;
    kvz_gelu_backward_mul(h, da, count);
    return KVZ_OK;
}

static int cpu_mse(kvz_backend *be, const float *pred, const float *y, size_t count, float *dy,
                   double *loss, kvz_error *err)
{
    (void)be, (void)err;
    double sse = 0;
    float scale = 2.0f / (float)count;
    for (size_t i = 0; i < count; i++) {
        float r = pred[i] - y[i];
        sse += (double)r * r;
        if (dy)
            dy[i] = scale * r;
    }
    *loss = sse / (double)count;
    return KVZ_OK;
}

static int cpu_clip_grad_norm(kvz_backend *be, float *g, size_t count, double max_norm,
                              double *norm_out, kvz_error *err)
{
    (void)be, (void)err;
    double sq = 0;
    for (size_t i = 0; i < count; i++)
        sq += (double)g[i] * g[i];
    double norm = sqrt(sq);
    if (norm_out)
        *norm_out = norm;
    if (max_norm > 0) {
        double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0) {
            float c = (float)coef;
            for (size_t i = 0; i < count; i++)
                g[i] *= c;
        }
    }
    return KVZ_OK;
}

typedef struct adamw_job {
    float *p, *m, *v;
    const float *g;
    size_t count, n_slices;
    float decay, step_size, bc2_sqrt, b1, b2, eps;
} adamw_job;

static void adamw_slice(void *ctx, size_t c)
{
    const adamw_job *j = ctx;
    size_t i0 = j->count * c / j->n_slices, i1 = j->count * (c + 1) / j->n_slices;
    for (size_t i = i0; i < i1; i++) {
        float g = j->g[i];
        j->p[i] *= j->decay;
        j->m[i] += (g - j->m[i]) * (1.0f - j->b1);
        j->v[i] = j->v[i] * j->b2 + (1.0f - j->b2) * g * g;
        float denom = sqrtf(j->v[i]) / j->bc2_sqrt + j->eps;
        j->p[i] -= j->step_size * (j->m[i] / denom);
    }
}

static int cpu_adamw(kvz_backend *be, float *param, const float *grad, float *m, float *v,
                     size_t count, const kvz_adamw_args *a, kvz_error *err)
{
    (void)be, (void)err;
    double bc1 = 1.0 - pow(a->beta1, (double)a->t), bc2 = 1.0 - pow(a->beta2, (double)a->t);
    int threads = kvz_ops_threads();
    adamw_job j = {param, m, v, grad, count, threads > 1 ? (size_t)threads : 1,
                   (float)(1.0 - a->lr * a->weight_decay), (float)(a->lr / bc1),
                   (float)sqrt(bc2), (float)a->beta1, (float)a->beta2, (float)a->eps};
    kvz_parallel_for(j.n_slices, adamw_slice, &j); /* elementwise: slices change nothing */
    return KVZ_OK;
}

typedef struct combine_job {
    float *dst;
    const float *const *src;
    const float *weight;
    size_t n_src, count, n_slices;
} combine_job;

static void combine_slice(void *ctx, size_t c)
{
    const combine_job *j = ctx;
    size_t i0 = j->count * c / j->n_slices, i1 = j->count * (c + 1) / j->n_slices;
    for (size_t i = i0; i < i1; i++) {
        float g = 0.0f;
        for (size_t p = 0; p < j->n_src; p++)
            g += j->weight[p] * j->src[p][i];
        j->dst[i] = g;
    }
}

static int cpu_combine_parts(kvz_backend *be, float *dst, const float *const *src,
                             const float *weight, size_t n_src, size_t count, double *loss_dst,
                             const double *loss, const size_t *rows, kvz_error *err)
{
    (void)be, (void)err;
    if (loss_dst) {
        size_t total = 0;
        for (size_t p = 0; p < n_src; p++)
            total += rows[p];
        double sum = 0.0;
        for (size_t p = 0; p < n_src; p++)
            sum += loss[p] * (double)rows[p] / (double)total;
        *loss_dst = sum;
    }
    if (dst) {
        int threads = kvz_ops_threads();
        combine_job j = {dst, src, weight, n_src, count, threads > 1 ? (size_t)threads : 1};
        kvz_parallel_for(j.n_slices, combine_slice, &j);
    }
    return KVZ_OK;
}

static int cpu_take_rows(kvz_backend *be, kvz_buf src, size_t width, const int64_t *idx,
                         size_t row0, size_t n, float *dst, kvz_error *err)
{
    size_t rows = src.numel / width;
    for (size_t k = 0; idx && k < n; k++)
        if (idx[k] < 0 || (uint64_t)idx[k] >= rows)
            return kvz_fail(err, KVZ_EINVAL, "%s: take rows: row %lld (#%zu) outside [0, %zu)",
                            be->name, (long long)idx[k], k, rows);
    for (size_t k = 0; k < n; k++) {
        size_t r = idx ? (size_t)idx[k] : row0 + k;
        if (src.dtype == KVZ_F32)
            memcpy(dst + k * width, (const float *)src.data + r * width, width * sizeof *dst);
        else
            for (size_t c = 0; c < width; c++)
                dst[k * width + c] = kvz_f16_widen(((const uint16_t *)src.data)[r * width + c]);
    }
    return KVZ_OK;
}

static int first_nonfinite(const float *v, size_t n, size_t cols, const char *what,
                           kvz_error *err)
{
    for (size_t i = 0; i < n * cols; i++)
        if (!isfinite(v[i]))
            return kvz_fail(err, KVZ_EINVAL, "ridge: row %zu %s %zu of the block is not finite",
                            i / cols, what, i % cols);
    return KVZ_OK;
}

static int cpu_ridge_add(kvz_backend *be, const float *x, const float *y, size_t n, size_t D,
                         size_t H, kvz_buf scratch, kvz_buf sums, kvz_error *err)
{
    (void)be;
    int rc = first_nonfinite(x, n, D, "feature", err);
    rc = rc ? rc : first_nonfinite(y, n, H, "target", err);
    if (rc)
        return rc;
    size_t block = scratch.numel / (D + H);
    double *xbuf = scratch.data, *ybuf = xbuf + block * D, *xtx = sums.data;
    double *xty = xtx + D * D, *x_sum = xty + D * H, *y_sum = x_sum + D, *y_sq = y_sum + H;
    for (size_t r0 = 0; r0 < n; r0 += block) {
        size_t nb = n - r0 < block ? n - r0 : block;
        for (size_t i = 0; i < nb * D; i++)
            xbuf[i] = x[r0 * D + i];
        for (size_t i = 0; i < nb * H; i++)
            ybuf[i] = y[r0 * H + i];
        /* xtx (upper, row-major) += Xb^T Xb; xty += Xb^T Yb */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)D, (int)nb, 1.0, xbuf, (int)D,
                    1.0, xtx, (int)D);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)D, (int)H, (int)nb, 1.0, xbuf,
                    (int)D, ybuf, (int)H, 1.0, xty, (int)H);
        for (size_t r = 0; r < nb; r++) {
            for (size_t i = 0; i < D; i++)
                x_sum[i] += xbuf[r * D + i];
            for (size_t h = 0; h < H; h++) {
                double v = ybuf[r * H + h];
                y_sum[h] += v;
                y_sq[h] += v * v;
            }
        }
    }
    return KVZ_OK;
}

static int cpu_memory(kvz_backend *be, size_t *free_bytes, size_t *total_bytes, kvz_error *err)
{
    long page = sysconf(_SC_PAGESIZE), total = sysconf(_SC_PHYS_PAGES);
    long avail = sysconf(_SC_AVPHYS_PAGES);
    if (page <= 0 || total <= 0 || avail < 0)
        return kvz_fail(err, KVZ_EIO, "%s: cannot read the physical memory size", be->name);
    *free_bytes = (size_t)avail * (size_t)page;
    *total_bytes = (size_t)total * (size_t)page;
    return KVZ_OK;
}
/* (end of the trainer ops, cpu) */

static const kvz_backend_ops CPU_OPS = {
    .close = cpu_close,         .alloc = cpu_alloc,       .free = cpu_free,
    .upload = cpu_copy,         .download = cpu_copy,     .copy = cpu_copy,
    .sync = cpu_sync,           .peak_bytes = cpu_peak,   .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,   .linear = cpu_linear,
    .rmsnorm = cpu_rmsnorm,     .rope = cpu_rope,         .attention = cpu_attention,
    .ragged_attention = cpu_ragged_attention,
    .swiglu = cpu_swiglu,       .add = cpu_add,           .embed = cpu_embed,
    .copy_rows = cpu_copy_rows, .convert = cpu_convert,   .fill = cpu_fill,
    /* KVzip+ score */
    .row_lognorms = cpu_row_lognorms, .value_lognorms = cpu_value_lognorms,
    .causal_lse = cpu_causal_lse,     .kvzip_best = cpu_kvzip_best,
    .gather_rows = cpu_gather_rows,   .download_async = cpu_download_async,
    .slot_record = cpu_slot_nop,      .slot_fence = cpu_slot_nop,
    .slot_wait = cpu_slot_nop,
    /* trainer */
    .gemm = cpu_gemm,                 .bias_rows = cpu_bias_rows,
    .col_sums = cpu_col_sums,         .gelu = cpu_gelu,
    .gelu_backward = cpu_gelu_backward, .mse = cpu_mse,
    .clip_grad_norm = cpu_clip_grad_norm, .adamw = cpu_adamw,
    .combine_parts = cpu_combine_parts, .take_rows = cpu_take_rows,
    .ridge_add = cpu_ridge_add,       .memory = cpu_memory,
};

kvz_backend *kvz_backend_host(void)
{
    static cpu_backend host = {.head = {.ops = &CPU_OPS, .kind = KVZ_BACKEND_CPU,
                                        .host_memory = 1, .name = "cpu"}};
    return &host.head;
}

int kvz_backend_cpu_open(const kvz_backend_options *opt, kvz_backend **out, kvz_error *err)
{
    cpu_backend *c = calloc(1, sizeof *c);
    if (!c)
        return kvz_fail(err, KVZ_ENOMEM, "cpu: out of memory");
    c->head.ops = &CPU_OPS;
    c->head.kind = KVZ_BACKEND_CPU;
    c->head.host_memory = 1;
    snprintf(c->head.name, sizeof c->head.name, "cpu");
    kvz_ops_set_threads(opt ? opt->n_threads : 0);
    *out = &c->head;
    return KVZ_OK;
}
