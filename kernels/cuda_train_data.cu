/* cuda_train_data: the data side of the CUDA trainer (kvz_cuda_train.h):
 * pinned host buffers, device memory info, and one layer's training rows
 * held on the device (x as fp16 or fp32, y fp32) with an async block upload
 * on the context's own stream and a gather kernel that builds fp32 batches
 * (x_batch[k] = x_all[idx[k]]) on the default stream. */
#include <stdint.h>
#include <stdlib.h>

#include <cuda_fp16.h>

#include "cuda_ops_internal.cuh"

extern "C" {
#include "kvz_cuda_train.h"
}

enum { DATA_THREADS = 256 };
static const size_t DEVICE_MARGIN_BYTES = (size_t)256 << 20;

extern "C" int kvz_cuda_host_alloc(void **out, size_t bytes, kvz_error *err)
{
    if (!out || bytes == 0)
        return kvz_fail(err, KVZ_EINVAL, "cuda pinned memory: NULL output or 0 bytes");
    *out = NULL;
    return kvz_cuda_check(cudaMallocHost(out, bytes), "cuda pinned memory: cudaMallocHost", err);
}

extern "C" void kvz_cuda_host_free(void *p)
{
    if (p)
        (void)cudaFreeHost(p);
}

extern "C" int kvz_cuda_mem_info(size_t *free_bytes, size_t *total_bytes, kvz_error *err)
{
    size_t f = 0, t = 0;
    int rc = kvz_cuda_check(cudaMemGetInfo(&f, &t), "cuda memory info: cudaMemGetInfo", err);
    if (free_bytes)
        *free_bytes = f;
    if (total_bytes)
        *total_bytes = t;
    return rc;
}

struct kvz_cuda_rows {
    size_t cap, d_in, d_out, block_rows, n;
    int x_fp16;
    void *x;          /* [cap, D] __half or float */
    float *y;         /* [cap, Hkv] */
    float *staging;   /* [block_rows, D] fp32 (fp16 storage only) */
    cudaStream_t stream;
    int have_stream;
};

extern "C" size_t kvz_cuda_rows_bytes(size_t cap, size_t d_in, size_t d_out, int x_fp16,
                                      size_t block_rows)
{
    size_t xb = x_fp16 ? sizeof(__half) : sizeof(float);
    return cap * (d_in * xb + d_out * sizeof(float)) +
           (x_fp16 ? block_rows * d_in * sizeof(float) : 0);
}

extern "C" void kvz_cuda_rows_free(kvz_cuda_rows *r)
{
    if (!r)
        return;
    if (r->have_stream) {
        (void)cudaStreamSynchronize(r->stream);
        (void)cudaStreamDestroy(r->stream);
    }
    (void)cudaFree(r->x);
    (void)cudaFree(r->y);
    (void)cudaFree(r->staging);
    free(r);
}

static int rows_fit(size_t need, size_t extra, kvz_error *err)
{
    size_t free_b = 0, total_b = 0;
    int rc = kvz_cuda_mem_info(&free_b, &total_b, err);
    if (rc == KVZ_OK && need + extra + DEVICE_MARGIN_BYTES > free_b)
        rc = kvz_fail(err, KVZ_ENOMEM,
                      "cuda rows: the layer needs %zu bytes on the device (+ %zu for the model "
                      "and a %zu margin) but only %zu of %zu are free",
                      need, extra, DEVICE_MARGIN_BYTES, free_b, total_b);
    return rc;
}

static int rows_alloc(kvz_cuda_rows *r, kvz_error *err)
{
    size_t xb = r->x_fp16 ? sizeof(__half) : sizeof(float);
    int rc = kvz_cuda_check(cudaMalloc(&r->x, r->cap * r->d_in * xb),
                            "cuda rows: allocating the hidden states", err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaMalloc((void **)&r->y, r->cap * r->d_out * sizeof(float)),
                            "cuda rows: allocating the targets", err);
    if (rc == KVZ_OK && r->x_fp16)
        rc = kvz_cuda_check(cudaMalloc((void **)&r->staging,
                                       r->block_rows * r->d_in * sizeof(float)),
                            "cuda rows: allocating the upload staging block", err);
    if (rc == KVZ_OK) {
        rc = kvz_cuda_check(cudaStreamCreate(&r->stream), "cuda rows: cudaStreamCreate", err);
        r->have_stream = rc == KVZ_OK;
    }
    return rc;
}

extern "C" int kvz_cuda_rows_create(size_t cap, size_t d_in, size_t d_out, int x_fp16,
                                    size_t block_rows, size_t extra_bytes, kvz_cuda_rows **out,
                                    kvz_error *err)
{
    if (!out)
        return kvz_fail(err, KVZ_EINVAL, "cuda rows: NULL output");
    *out = NULL;
    const size_t big = (size_t)1 << 40;
    if (!cap || !d_in || !d_out || !block_rows || cap > big / d_in || block_rows > big / d_in)
        return kvz_fail(err, KVZ_EINVAL, "cuda rows: bad sizes (%zu rows, D=%zu, Hkv=%zu, "
                        "block %zu)", cap, d_in, d_out, block_rows);
    int rc = rows_fit(kvz_cuda_rows_bytes(cap, d_in, d_out, x_fp16, block_rows), extra_bytes, err);
    if (rc != KVZ_OK)
        return rc;
    kvz_cuda_rows *r = (kvz_cuda_rows *)calloc(1, sizeof *r);
    if (!r)
        return kvz_fail(err, KVZ_ENOMEM, "cuda rows: out of host memory");
    r->cap = cap;
    r->d_in = d_in;
    r->d_out = d_out;
    r->block_rows = block_rows;
    r->x_fp16 = x_fp16 != 0;
    rc = rows_alloc(r, err);
    if (rc != KVZ_OK) {
        kvz_cuda_rows_free(r);
        return rc;
    }
    *out = r;
    return KVZ_OK;
}

static __global__ void f32_to_f16_kernel(const float *v, size_t n, __half *out)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2half_rn(v[i]);
}

extern "C" int kvz_cuda_rows_append(kvz_cuda_rows *r, const float *x, const float *y, size_t n,
                                    kvz_error *err)
{
    if (!r || !x || !y)
        return kvz_fail(err, KVZ_EINVAL, "cuda rows: append: NULL argument");
    if (n > r->block_rows || n > r->cap - r->n)
        return kvz_fail(err, KVZ_EINVAL,
                        "cuda rows: append of %zu rows (block %zu) to %zu of %zu held", n,
                        r->block_rows, r->n, r->cap);
    if (n == 0)
        return KVZ_OK;
    size_t D = r->d_in, H = r->d_out;
    int rc;
    if (r->x_fp16) {
        rc = kvz_cuda_check(cudaMemcpyAsync(r->staging, x, n * D * sizeof(float),
                                            cudaMemcpyHostToDevice, r->stream),
                            "cuda rows: uploading hidden states (cudaMemcpyAsync)", err);
        if (rc == KVZ_OK) {
            f32_to_f16_kernel<<<kvz_cuda_blocks_for(n * D, DATA_THREADS), DATA_THREADS, 0,
                                r->stream>>>(r->staging, n * D, (__half *)r->x + r->n * D);
            rc = kvz_cuda_check_launch("cuda rows: fp32 -> fp16", err);
        }
    } else {
        rc = kvz_cuda_check(cudaMemcpyAsync((float *)r->x + r->n * D, x, n * D * sizeof(float),
                                            cudaMemcpyHostToDevice, r->stream),
                            "cuda rows: uploading hidden states (cudaMemcpyAsync)", err);
    }
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaMemcpyAsync(r->y + r->n * H, y, n * H * sizeof(float),
                                            cudaMemcpyHostToDevice, r->stream),
                            "cuda rows: uploading targets (cudaMemcpyAsync)", err);
    if (rc == KVZ_OK)
        r->n += n;
    return rc;
}

extern "C" int kvz_cuda_rows_wait(kvz_cuda_rows *r, kvz_error *err)
{
    if (!r)
        return kvz_fail(err, KVZ_EINVAL, "cuda rows: wait: NULL context");
    return kvz_cuda_check(cudaStreamSynchronize(r->stream),
                          "cuda rows: waiting for the uploads (cudaStreamSynchronize)", err);
}

extern "C" size_t kvz_cuda_rows_count(const kvz_cuda_rows *r)
{
    return r ? r->n : 0;
}

extern "C" void kvz_cuda_rows_clear(kvz_cuda_rows *r)
{
    if (r)
        r->n = 0;
}

/* out[k, j] = float(src[row(k), j]), row(k) = idx ? idx[k] : row0 + k. */
static __global__ void gather_f16_kernel(const __half *src, const int64_t *idx, size_t row0,
                                         size_t n, size_t cols, float *out)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n * cols;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t k = i / cols, j = i % cols;
        size_t row = idx ? (size_t)idx[k] : row0 + k;
        out[i] = __half2float(src[row * cols + j]);
    }
}

static __global__ void gather_f32_kernel(const float *src, const int64_t *idx, size_t row0,
                                         size_t n, size_t cols, float *out)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n * cols;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t k = i / cols, j = i % cols;
        size_t row = idx ? (size_t)idx[k] : row0 + k;
        out[i] = src[row * cols + j];
    }
}

extern "C" int kvz_cuda_rows_gather(const kvz_cuda_rows *r, const int64_t *idx_dev, size_t row0,
                                    size_t n, float *x_out, float *y_out, kvz_error *err)
{
    if (!r || !x_out || !y_out)
        return kvz_fail(err, KVZ_EINVAL, "cuda rows: gather: NULL argument");
    if (!idx_dev && (row0 > r->n || n > r->n - row0))
        return kvz_fail(err, KVZ_EINVAL, "cuda rows: gather of rows %zu..%zu but %zu are held",
                        row0, row0 + n, r->n);
    if (n == 0)
        return KVZ_OK;
    size_t D = r->d_in, H = r->d_out;
    unsigned bx = kvz_cuda_blocks_for(n * D, DATA_THREADS);
    if (r->x_fp16)
        gather_f16_kernel<<<bx, DATA_THREADS>>>((const __half *)r->x, idx_dev, row0, n, D, x_out);
    else
        gather_f32_kernel<<<bx, DATA_THREADS>>>((const float *)r->x, idx_dev, row0, n, D, x_out);
    int rc = kvz_cuda_check_launch("cuda rows: gathering hidden states", err);
    if (rc == KVZ_OK) {
        gather_f32_kernel<<<kvz_cuda_blocks_for(n * H, DATA_THREADS), DATA_THREADS>>>(
            r->y, idx_dev, row0, n, H, y_out);
        rc = kvz_cuda_check_launch("cuda rows: gathering targets", err);
    }
    return rc;
}
