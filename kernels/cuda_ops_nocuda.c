/* cuda_ops_nocuda: the twin of cuda_ops.cu for builds without CUDA: every
 * kvz_cuda_ops.h operation fails with KVZ_EUNSUPPORTED ("built without
 * CUDA"); freeing and releasing are no-ops. The score's twin is
 * cuda_score_nocuda.c. */
#include "kvz_cuda_ops.h"

static int no_cuda(kvz_error *err, const char *what)
{
    return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: this kvzap was built without CUDA", what);
}

int kvz_cuda_alloc(void **out, size_t bytes, kvz_error *err)
{
    (void)bytes;
    if (out)
        *out = NULL;
    return no_cuda(err, "cuda alloc");
}

void kvz_cuda_free(void *dev)
{
    (void)dev;
}

int kvz_cuda_upload(void *dev_dst, const void *host_src, size_t bytes, kvz_error *err)
{
    (void)dev_dst, (void)host_src, (void)bytes;
    return no_cuda(err, "cuda upload");
}

int kvz_cuda_download(void *host_dst, const void *dev_src, size_t bytes, kvz_error *err)
{
    (void)host_dst, (void)dev_src, (void)bytes;
    return no_cuda(err, "cuda download");
}

int kvz_cuda_copy(void *dev_dst, const void *dev_src, size_t bytes, kvz_error *err)
{
    (void)dev_dst, (void)dev_src, (void)bytes;
    return no_cuda(err, "cuda copy");
}

int kvz_cuda_sync(kvz_error *err)
{
    return no_cuda(err, "cuda sync");
}

void kvz_cuda_ops_release(void)
{
}

int kvz_cuda_rmsnorm(const float *x, const float *w, float *y, size_t n_rows, size_t dim,
                     float eps, kvz_error *err)
{
    (void)x, (void)w, (void)y, (void)n_rows, (void)dim, (void)eps;
    return no_cuda(err, "cuda rmsnorm");
}

int kvz_cuda_head_rmsnorm(float *x, const float *w, size_t n_tokens, size_t n_heads,
                          size_t head_dim, float eps, kvz_error *err)
{
    (void)x, (void)w, (void)n_tokens, (void)n_heads, (void)head_dim, (void)eps;
    return no_cuda(err, "cuda head rmsnorm");
}

int kvz_cuda_rope_apply(float *x, size_t n_tokens, size_t n_heads, size_t head_dim,
                        size_t pos0, const float *inv_freq, kvz_error *err)
{
    (void)x, (void)n_tokens, (void)n_heads, (void)head_dim, (void)pos0, (void)inv_freq;
    return no_cuda(err, "cuda rope");
}

int kvz_cuda_swiglu(const float *gate_up, float *out, size_t n_rows, size_t d_ff,
                    kvz_error *err)
{
    (void)gate_up, (void)out, (void)n_rows, (void)d_ff;
    return no_cuda(err, "cuda swiglu");
}
