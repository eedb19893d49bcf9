/* backend: the generic layer of ops/backend.h, written once for every
 * backend: dtypes and buffer views, opening a backend by kind (the registry:
 * cpu always, cuda in CUDA builds), the byte accounting of allocations, and
 * the kvz_op_* entry points, which check their arguments and then call the
 * backend's table. */
#include "backend.h"

#include <stdlib.h>
#include <string.h>

size_t kvz_dtype_size(kvz_dtype t)
{
    switch (t) {
    case KVZ_F32: case KVZ_I32: return 4;
    case KVZ_BF16: case KVZ_F16: return 2;
    case KVZ_F64: case KVZ_I64: return 8;
    }
    return 0;
}

const char *kvz_dtype_name(kvz_dtype t)
{
    switch (t) {
    case KVZ_F32: return "float32";
    case KVZ_BF16: return "bfloat16";
    case KVZ_F16: return "float16";
    case KVZ_F64: return "float64";
    case KVZ_I32: return "int32";
    case KVZ_I64: return "int64";
    }
    return "unknown";
}

kvz_buf kvz_buf_at(kvz_buf b, size_t first)
{
    kvz_buf v = b;
    if (first > b.numel)
        first = b.numel;
    v.data = b.data ? (char *)b.data + first * kvz_dtype_size(b.dtype) : NULL;
    v.numel = b.numel - first;
    return v;
}

float *kvz_buf_f32(kvz_buf b)
{
    return b.dtype == KVZ_F32 ? (float *)b.data : NULL;
}

/* ---------- opening ---------- */

int kvz_backend_compiled(kvz_backend_kind kind)
{
#ifdef KVZ_HAVE_CUDA
    return kind == KVZ_BACKEND_CPU || kind == KVZ_BACKEND_CUDA;
#else
    return kind == KVZ_BACKEND_CPU;
#endif
}

int kvz_backend_open(const kvz_backend_options *opt, kvz_backend **out, kvz_error *err)
{
    *out = NULL;
    kvz_backend_options o = opt ? *opt : (kvz_backend_options){KVZ_BACKEND_CPU, 0, 0};
    if (o.kind == KVZ_BACKEND_CPU)
        return kvz_backend_cpu_open(&o, out, err);
    if (o.kind != KVZ_BACKEND_CUDA)
        return kvz_fail(err, KVZ_EINVAL, "backend: unknown kind %d", (int)o.kind);
#ifdef KVZ_HAVE_CUDA
    return kvz_backend_cuda_open(&o, out, err);
#else
    return kvz_fail(err, KVZ_EUNSUPPORTED,
                    "cuda: this kvzap was built without CUDA; use --device cpu (or auto)");
#endif
}

void kvz_backend_close(kvz_backend *be)
{
    if (be)
        be->ops->close(be);
}

const char *kvz_backend_name(const kvz_backend *be) { return be->name; }
kvz_backend_kind kvz_backend_kind_of(const kvz_backend *be) { return be->kind; }
int kvz_backend_host_memory(const kvz_backend *be) { return be->host_memory; }
void *kvz_backend_stream(const kvz_backend *be) { return be->stream; }
size_t kvz_backend_bytes_held(const kvz_backend *be) { return be->bytes_held; }
size_t kvz_backend_peak_bytes(const kvz_backend *be) { return be->ops->peak_bytes(be); }

/* ---------- devices ---------- */

#ifdef KVZ_HAVE_CUDA
/* kernels/device.cu */
int kvz_cuda_device_count(kvz_error *err);
int kvz_cuda_device_info_get(int device, kvz_device_info *out, kvz_error *err);
int kvz_cuda_emulated(void);
#endif

int kvz_backend_device_count(kvz_backend_kind kind, kvz_error *err)
{
    if (kind == KVZ_BACKEND_CPU)
        return 1;
#ifdef KVZ_HAVE_CUDA
    if (kind == KVZ_BACKEND_CUDA)
        return kvz_cuda_device_count(err);
#endif
    kvz_fail(err, KVZ_EUNSUPPORTED, "cuda: this kvzap was built without CUDA");
    return 0;
}

int kvz_backend_device_info(kvz_backend_kind kind, int device, kvz_device_info *out,
                            kvz_error *err)
{
#ifdef KVZ_HAVE_CUDA
    if (kind == KVZ_BACKEND_CUDA)
        return kvz_cuda_device_info_get(device, out, err);
#endif
    (void)device, (void)out;
    return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: no device information",
                    kind == KVZ_BACKEND_CPU ? "cpu" : "cuda: this kvzap was built without CUDA;");
}

int kvz_backend_emulated(void)
{
#ifdef KVZ_HAVE_CUDA
    return kvz_cuda_emulated();
#else
    return 0;
#endif
}

kvz_backend_kind kvz_backend_auto_kind(void)
{
    if (kvz_backend_device_count(KVZ_BACKEND_CUDA, NULL) > 0 && !kvz_backend_emulated())
        return KVZ_BACKEND_CUDA;
    return KVZ_BACKEND_CPU;
}

/* ---------- memory ---------- */

void *kvz_backend_host_alloc(kvz_backend *be, size_t bytes)
{
    return be->ops->host_alloc(be, bytes ? bytes : 1);
}

void kvz_backend_host_free(kvz_backend *be, void *p)
{
    if (p)
        be->ops->host_free(be, p);
}

/* The floating-point storage types of weights and conversions. */
static int valid_dtype(kvz_dtype t)
{
    return t == KVZ_F32 || t == KVZ_BF16 || t == KVZ_F16;
}

static int any_dtype(kvz_dtype t)
{
    return (unsigned)t <= (unsigned)KVZ_I64;
}

int kvz_backend_alloc(kvz_backend *be, kvz_dtype dtype, size_t numel, const char *what,
                      kvz_buf *out, kvz_error *err)
{
    memset(out, 0, sizeof *out);
    if (!any_dtype(dtype))
        return kvz_fail(err, KVZ_EINVAL, "%s: alloc: unknown dtype %d", be->name, (int)dtype);
    size_t es = kvz_dtype_size(dtype), n = numel ? numel : 1;
    if (n > SIZE_MAX / es)
        return kvz_fail(err, KVZ_ENOMEM, "%s: cannot allocate %zu elements for %s", be->name,
                        numel, what ? what : "a buffer");
    void *p = NULL;
    int rc = be->ops->alloc(be, n * es, what ? what : "a buffer", &p, err);
    if (rc)
        return rc;
    *out = (kvz_buf){p, dtype, numel};
    be->bytes_held += n * es;
    return KVZ_OK;
}

void kvz_backend_free(kvz_backend *be, kvz_buf *b)
{
    if (!b->data)
        return;
    size_t bytes = (b->numel ? b->numel : 1) * kvz_dtype_size(b->dtype);
    be->ops->free(be, b->data, bytes);
    be->bytes_held -= bytes < be->bytes_held ? bytes : be->bytes_held;
    memset(b, 0, sizeof *b);
}

int kvz_backend_upload(kvz_backend *be, void *dst, const void *host_src, size_t bytes,
                       kvz_error *err)
{
    if (!bytes)
        return KVZ_OK;
    if (!dst || !host_src)
        return kvz_fail(err, KVZ_EINVAL, "%s: upload: NULL pointer", be->name);
    return be->ops->upload(be, dst, host_src, bytes, err);
}

int kvz_backend_download(kvz_backend *be, void *host_dst, const void *src, size_t bytes,
                         kvz_error *err)
{
    if (!bytes)
        return be->ops->sync(be, err);
    if (!host_dst || !src)
        return kvz_fail(err, KVZ_EINVAL, "%s: download: NULL pointer", be->name);
    return be->ops->download(be, host_dst, src, bytes, err);
}

int kvz_backend_copy(kvz_backend *be, void *dst, const void *src, size_t bytes, kvz_error *err)
{
    if (!bytes || dst == src)
        return KVZ_OK;
    if (!dst || !src)
        return kvz_fail(err, KVZ_EINVAL, "%s: copy: NULL pointer", be->name);
    return be->ops->copy(be, dst, src, bytes, err);
}

int kvz_backend_sync(kvz_backend *be, kvz_error *err)
{
    return be->ops->sync(be, err);
}

/* ---------- ops ---------- */

#define NEED(cond, op)                                                                  \
    do {                                                                                \
        if (!(cond))                                                                    \
            return kvz_fail(err, KVZ_EINVAL, "%s: %s: bad arguments (%s)", be->name, op, \
                            #cond);                                                     \
    } while (0)

int kvz_op_linear(kvz_backend *be, const float *x, kvz_buf w, const float *bias_or_NULL,
                  float *y, size_t n, size_t n_in, size_t n_out, kvz_error *err)
{
    if (!n || !n_out)
        return KVZ_OK;
    NEED(x && y && w.data && n_in && n_in <= SIZE_MAX / n_out && w.numel >= n_in * n_out &&
             valid_dtype(w.dtype),
         "linear");
    return be->ops->linear(be, x, w, bias_or_NULL, y, n, n_in, n_out, err);
}

int kvz_op_rmsnorm(kvz_backend *be, const float *x, const float *w, float *y, size_t n_rows,
                   size_t dim, float eps, kvz_error *err)
{
    if (!n_rows)
        return KVZ_OK;
    NEED(x && w && y && dim, "rmsnorm");
    return be->ops->rmsnorm(be, x, w, y, n_rows, dim, eps, err);
}

int kvz_op_rope(kvz_backend *be, float *x, size_t n_tokens, size_t n_heads, size_t head_dim,
                size_t pos0, const float *inv_freq, kvz_error *err)
{
    if (!n_tokens || !n_heads)
        return KVZ_OK;
    NEED(x && inv_freq && head_dim && head_dim % 2 == 0, "rope");
    return be->ops->rope(be, x, n_tokens, n_heads, head_dim, pos0, inv_freq, err);
}

int kvz_op_attention(kvz_backend *be, const kvz_attn_args *a, kvz_dtype compute,
                     kvz_error *err)
{
    NEED(a && a->q && a->k && a->v && a->out && a->n_heads && a->n_kv_heads && a->head_dim &&
             a->n_heads % a->n_kv_heads == 0 && (compute == KVZ_F32 || compute == KVZ_BF16),
         "attention");
    if (!a->n_q)
        return KVZ_OK;
    return be->ops->attention(be, a, compute, err);
}

int kvz_op_ragged_attention(kvz_backend *be, const kvz_ragged_attn_args *a, kvz_error *err)
{
    NEED(a && a->q && a->k && a->v && a->pos && a->count && a->out && a->n_heads &&
             a->n_kv_heads && a->head_dim && a->n_heads % a->n_kv_heads == 0,
         "ragged attention");
    if (!a->n_q)
        return KVZ_OK;
    return be->ops->ragged_attention(be, a, err);
}

int kvz_op_swiglu(kvz_backend *be, const float *gate_up, float *out, size_t n, size_t d_ff,
                  kvz_error *err)
{
    if (!n || !d_ff)
        return KVZ_OK;
    NEED(gate_up && out, "swiglu");
    return be->ops->swiglu(be, gate_up, out, n, d_ff, err);
}

int kvz_op_add(kvz_backend *be, float *h, const float *d, size_t count, kvz_error *err)
{
    if (!count)
        return KVZ_OK;
    NEED(h && d, "add");
    return be->ops->add(be, h, d, count, err);
}

int kvz_op_embed(kvz_backend *be, kvz_buf table, size_t dim, const int32_t *ids, size_t n,
                 float *h, kvz_error *err)
{
    if (!n)
        return KVZ_OK;
    NEED(table.data && ids && h && dim && (table.dtype == KVZ_F32 || table.dtype == KVZ_BF16),
         "embed");
    size_t rows = table.numel / dim;
    for (size_t t = 0; t < n; t++)
        if (ids[t] < 0 || (size_t)ids[t] >= rows)
            return kvz_fail(err, KVZ_EINVAL, "%s: embed: id %ld at %zu is outside the table (%zu rows)",
                            be->name, (long)ids[t], t, rows);
    return be->ops->embed(be, table, dim, ids, n, h, err);
}

int kvz_op_copy_rows(kvz_backend *be, float *dst, size_t dst_stride, const float *src,
                     size_t src_stride, size_t n_rows, size_t width, kvz_error *err)
{
    if (!n_rows || !width)
        return KVZ_OK;
    NEED(dst && src && dst_stride >= width && src_stride >= width, "copy_rows");
    return be->ops->copy_rows(be, dst, dst_stride, src, src_stride, n_rows, width, err);
}

int kvz_op_convert(kvz_backend *be, kvz_buf dst, kvz_buf src, kvz_error *err)
{
    if (!src.numel)
        return KVZ_OK;
    NEED(dst.data && src.data && dst.numel >= src.numel && valid_dtype(dst.dtype) &&
             valid_dtype(src.dtype),
         "convert");
    if (dst.dtype == src.dtype)
        return kvz_backend_copy(be, dst.data, src.data, src.numel * kvz_dtype_size(src.dtype),
                                err);
    return be->ops->convert(be, dst, src, err);
}

int kvz_op_fill(kvz_backend *be, kvz_buf b, uint64_t seed, uint64_t tensor, float bound,
                float value, kvz_error *err)
{
    if (!b.numel)
        return KVZ_OK;
    NEED(b.data && (b.dtype == KVZ_F32 || b.dtype == KVZ_BF16), "fill");
    return be->ops->fill(be, b, seed, tensor, bound, value, err);
}

/* ---------- KVzip+ score ops ---------- */

/* The head layout every score op shares. */
static int heads_ok(size_t H, size_t Hkv, size_t dh)
{
    return H && Hkv && dh && H % Hkv == 0 && H <= 65535 && dh <= 4096;
}

int kvz_op_row_lognorms(kvz_backend *be, const float *x, size_t ld, size_t width, size_t n,
                        double *out, kvz_error *err)
{
    if (!n)
        return KVZ_OK;
    NEED(x && out && width && ld >= width, "row lognorms");
    return be->ops->row_lognorms(be, x, ld, width, n, out, err);
}

int kvz_op_value_lognorms(kvz_backend *be, const float *v, const float *w_o, size_t H,
                          size_t Hkv, size_t dh, size_t D, size_t i0, size_t i1, double *out,
                          kvz_error *err)
{
    if (i0 == i1)
        return KVZ_OK;
    NEED(v && w_o && out && heads_ok(H, Hkv, dh) && D && i0 < i1, "value lognorms");
    return be->ops->value_lognorms(be, v, w_o, H, Hkv, dh, D, i0, i1, out, err);
}

int kvz_op_causal_lse(kvz_backend *be, const float *q, const float *k, const float *tap_lse,
                      size_t H, size_t Hkv, size_t dh, float scale, size_t r0, size_t r1,
                      double *lse, kvz_error *err)
{
    if (r0 == r1)
        return KVZ_OK;
    NEED(lse && (tap_lse || (q && k)) && heads_ok(H, Hkv, dh) && r0 < r1, "causal lse");
    return be->ops->causal_lse(be, q, k, tap_lse, H, Hkv, dh, scale, r0, r1, lse, err);
}

int kvz_op_kvzip_best(kvz_backend *be, const float *q, const float *k, size_t H, size_t Hkv,
                      size_t dh, float scale, size_t p0, size_t p1, size_t r0, size_t r1,
                      const double *lse, const double *log_xnorm, const double *lognorm,
                      kvz_dtype compute, float *out, kvz_error *err)
{
    NEED(q && k && lse && log_xnorm && lognorm && out && heads_ok(H, Hkv, dh) && p0 < p1 &&
             p1 <= r0 && r0 < r1 && (compute == KVZ_F32 || compute == KVZ_BF16),
         "kvzip best");
    return be->ops->kvzip_best(be, q, k, H, Hkv, dh, scale, p0, p1, r0, r1, lse, log_xnorm,
                               lognorm, compute, out, err);
}

int kvz_op_gather_rows(kvz_backend *be, const float *src, size_t ld, size_t width,
                       size_t base, size_t n_src, const int64_t *idx, size_t n, float *dst,
                       kvz_error *err)
{
    if (!n || !width)
        return KVZ_OK;
    NEED(src && idx && dst && ld >= width && n_src, "gather rows");
    return be->ops->gather_rows(be, src, ld, width, base, n_src, idx, n, dst, err);
}

int kvz_backend_download_async(kvz_backend *be, size_t slot, void *host_dst, const void *src,
                               size_t bytes, kvz_error *err)
{
    if (!bytes)
        return KVZ_OK;
    NEED(host_dst && src && slot < KVZ_BACKEND_SLOTS, "download async");
    return be->ops->download_async(be, slot, host_dst, src, bytes, err);
}

int kvz_backend_slot_record(kvz_backend *be, size_t slot, kvz_error *err)
{
    NEED(slot < KVZ_BACKEND_SLOTS, "slot record");
    return be->ops->slot_record(be, slot, err);
}

int kvz_backend_slot_fence(kvz_backend *be, size_t slot, kvz_error *err)
{
    NEED(slot < KVZ_BACKEND_SLOTS, "slot fence");
    return be->ops->slot_fence(be, slot, err);
}

int kvz_backend_slot_wait(kvz_backend *be, size_t slot, kvz_error *err)
{
    NEED(slot < KVZ_BACKEND_SLOTS, "slot wait");
    return be->ops->slot_wait(be, slot, err);
}
/* (end of the KVzip+ score ops) */

/* ---------- trainer ops ---------- */

const char *kvz_gemm_precision_name(kvz_gemm_precision p)
{
    return p == KVZ_GEMM_TF32 ? "tf32" : p == KVZ_GEMM_BF16 ? "bfloat16" : "float32";
}

/* BLAS sizes are int. */
static int blas_size(size_t v)
{
    return v <= (size_t)0x7fffffff;
}

int kvz_op_gemm(kvz_backend *be, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                const float *a, const float *b, float beta, float *c, kvz_gemm_precision prec,
                kvz_error *err)
{
    if (!m || !n)
        return KVZ_OK;
    NEED(a && b && c && k && blas_size(m) && blas_size(n) && blas_size(k) &&
             (prec == KVZ_GEMM_FP32 || prec == KVZ_GEMM_TF32 || prec == KVZ_GEMM_BF16),
         "gemm");
    return be->ops->gemm(be, trans_a != 0, trans_b != 0, m, n, k, a, b, beta, c, prec, err);
}

int kvz_op_bias_rows(kvz_backend *be, float *out, const float *bias, size_t n, size_t m,
                     kvz_error *err)
{
    if (!n || !m)
        return KVZ_OK;
    NEED(out && bias, "bias rows");
    return be->ops->bias_rows(be, out, bias, n, m, err);
}

int kvz_op_col_sums(kvz_backend *be, const float *v, size_t n, size_t m, float *out,
                    kvz_error *err)
{
    if (!m)
        return KVZ_OK;
    NEED(out && (v || !n) && m <= (size_t)0x7fffffff, "column sums");
    return be->ops->col_sums(be, v, n, m, out, err);
}

int kvz_op_gelu(kvz_backend *be, const float *h, float *a, size_t count, kvz_error *err)
{
    if (!count)
        return KVZ_OK;
    NEED(h && a, "gelu");
    return be->ops->gelu(be, h, a, count, err);
}

int kvz_op_gelu_backward(kvz_backend *be, const float *h, float *da, size_t count,
                         kvz_error *err)
{
    if (!count)
        return KVZ_OK;
    NEED(h && da, "gelu backward");
    return be->ops->gelu_backward(be, h, da, count, err);
}

int kvz_op_mse(kvz_backend *be, const float *pred, const float *y, size_t count, float *dy,
               double *loss, kvz_error *err)
{
    NEED(pred && y && loss && count, "mse");
    return be->ops->mse(be, pred, y, count, dy, loss, err);
}

int kvz_op_clip_grad_norm(kvz_backend *be, float *g, size_t count, double max_norm,
                          double *norm, kvz_error *err)
{
    NEED(g && count, "clip grad norm");
    return be->ops->clip_grad_norm(be, g, count, max_norm, norm, err);
}

int kvz_op_adamw(kvz_backend *be, float *param, const float *grad, float *m, float *v,
                 size_t count, const kvz_adamw_args *a, kvz_error *err)
{
    if (!count)
        return KVZ_OK;
    NEED(param && grad && m && v && a && a->t >= 1, "adamw");
    return be->ops->adamw(be, param, grad, m, v, count, a, err);
}

int kvz_op_combine_parts(kvz_backend *be, float *dst, const float *const *src,
                         const float *weight, size_t n_src, size_t count, double *loss_dst,
                         const double *loss, const size_t *rows, kvz_error *err)
{
    NEED(n_src && (!dst || (src && weight)) && (!loss_dst || (loss && rows)),
         "combine parts");
    for (size_t p = 0; dst && p < n_src; p++)
        NEED(src[p], "combine parts");
    return be->ops->combine_parts(be, dst, src, weight, n_src, count, loss_dst, loss, rows, err);
}

int kvz_op_take_rows(kvz_backend *be, kvz_buf src, size_t width, const int64_t *idx,
                     size_t row0, size_t n, float *dst, kvz_error *err)
{
    if (!n || !width)
        return KVZ_OK;
    NEED(src.data && dst && (src.dtype == KVZ_F32 || src.dtype == KVZ_F16), "take rows");
    size_t rows = src.numel / width;
    if (!idx && (row0 > rows || n > rows - row0))
        return kvz_fail(err, KVZ_EINVAL, "%s: take rows: rows %zu..%zu of %zu", be->name, row0,
                        row0 + n, rows);
    return be->ops->take_rows(be, src, width, idx, row0, n, dst, err);
}

int kvz_op_ridge_add(kvz_backend *be, const float *x, const float *y, size_t n, size_t D,
                     size_t H, kvz_buf scratch, kvz_buf sums, kvz_error *err)
{
    if (!n)
        return KVZ_OK;
    NEED(x && y && D && H && blas_size(D) && blas_size(H) && scratch.data &&
             scratch.dtype == KVZ_F64 && scratch.numel >= D + H && sums.data &&
             sums.dtype == KVZ_F64 && sums.numel >= D * D + D * H + D + 2 * H,
         "ridge add");
    return be->ops->ridge_add(be, x, y, n, D, H, scratch, sums, err);
}

int kvz_backend_memory(kvz_backend *be, size_t *free_bytes, size_t *total_bytes,
                       kvz_error *err)
{
    size_t f = 0, t = 0;
    int rc = be->ops->memory(be, &f, &t, err);
    if (free_bytes)
        *free_bytes = f;
    if (total_bytes)
        *total_bytes = t;
    return rc;
}
/* (end of the trainer ops) */
