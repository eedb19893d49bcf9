/* cuda_train_data_nocuda: the twin of cuda_train_data.cu for builds without
 * CUDA: pinned memory, device memory info and device-resident training rows
 * all fail with KVZ_EUNSUPPORTED; freeing is a no-op. */
#include "kvz_cuda_train.h"

static int no_cuda(kvz_error *err, const char *what)
{
    return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: this kvzap was built without CUDA", what);
}

int kvz_cuda_host_alloc(void **out, size_t bytes, kvz_error *err)
{
    (void)bytes;
    if (out)
        *out = NULL;
    return no_cuda(err, "cuda pinned memory");
}

void kvz_cuda_host_free(void *p)
{
    (void)p;
}

int kvz_cuda_mem_info(size_t *free_bytes, size_t *total_bytes, kvz_error *err)
{
    if (free_bytes)
        *free_bytes = 0;
    if (total_bytes)
        *total_bytes = 0;
    return no_cuda(err, "cuda memory info");
}

size_t kvz_cuda_rows_bytes(size_t cap, size_t d_in, size_t d_out, int x_fp16, size_t block_rows)
{
    size_t x = x_fp16 ? 2 : 4;
    return cap * (d_in * x + d_out * 4) + (x_fp16 ? block_rows * d_in * 4 : 0);
}

int kvz_cuda_rows_create(size_t cap, size_t d_in, size_t d_out, int x_fp16, size_t block_rows,
                         size_t extra_bytes, kvz_cuda_rows **out, kvz_error *err)
{
    (void)cap, (void)d_in, (void)d_out, (void)x_fp16, (void)block_rows, (void)extra_bytes;
    if (out)
        *out = NULL;
    return no_cuda(err, "cuda rows");
}

void kvz_cuda_rows_free(kvz_cuda_rows *r)
{
    (void)r;
}

int kvz_cuda_rows_append(kvz_cuda_rows *r, const float *x, const float *y, size_t n,
                         kvz_error *err)
{
    (void)r, (void)x, (void)y, (void)n;
    return no_cuda(err, "cuda rows: append");
}

int kvz_cuda_rows_wait(kvz_cuda_rows *r, kvz_error *err)
{
    (void)r;
    return no_cuda(err, "cuda rows: wait");
}

size_t kvz_cuda_rows_count(const kvz_cuda_rows *r)
{
    (void)r;
    return 0;
}

void kvz_cuda_rows_clear(kvz_cuda_rows *r)
{
    (void)r;
}

int kvz_cuda_rows_gather(const kvz_cuda_rows *r, const int64_t *idx_dev, size_t row0, size_t n,
                         float *x_out, float *y_out, kvz_error *err)
{
    (void)r, (void)idx_dev, (void)row0, (void)n, (void)x_out, (void)y_out;
    return no_cuda(err, "cuda rows: gather");
}
