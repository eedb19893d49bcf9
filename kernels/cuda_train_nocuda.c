/* cuda_train_nocuda: the twin of cuda_train.cu for builds without CUDA:
 * every kvz_cuda_train.h operation fails with KVZ_EUNSUPPORTED ("built
 * without CUDA"); freeing is a no-op. */
#include "kvz_cuda_train.h"

static int no_cuda(kvz_error *err, const char *what)
{
    return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: this kvzap was built without CUDA", what);
}

int kvz_cuda_mlp_create(kvz_mlp_shape s, size_t max_rows, unsigned flags, kvz_cuda_mlp **out,
                        kvz_error *err)
{
    (void)s, (void)max_rows, (void)flags;
    if (out)
        *out = NULL;
    return no_cuda(err, "cuda mlp");
}

void kvz_cuda_mlp_free(kvz_cuda_mlp *m)
{
    (void)m;
}

int kvz_cuda_mlp_upload_params(kvz_cuda_mlp *m, const float *flat, kvz_error *err)
{
    (void)m, (void)flat;
    return no_cuda(err, "cuda mlp: uploading params");
}

int kvz_cuda_mlp_download_params(kvz_cuda_mlp *m, float *flat, kvz_error *err)
{
    (void)m, (void)flat;
    return no_cuda(err, "cuda mlp: downloading params");
}

int kvz_cuda_mlp_download_grad(kvz_cuda_mlp *m, float *grad, kvz_error *err)
{
    (void)m, (void)grad;
    return no_cuda(err, "cuda mlp: downloading the gradient");
}

int kvz_cuda_mlp_upload_grad(kvz_cuda_mlp *m, const float *grad, kvz_error *err)
{
    (void)m, (void)grad;
    return no_cuda(err, "cuda mlp: uploading the gradient");
}

int kvz_cuda_mlp_download_moments(kvz_cuda_mlp *m, float *m1, float *v, kvz_error *err)
{
    (void)m, (void)m1, (void)v;
    return no_cuda(err, "cuda mlp: downloading the AdamW moments");
}

int kvz_cuda_mlp_upload_moments(kvz_cuda_mlp *m, const float *m1, const float *v,
                                kvz_error *err)
{
    (void)m, (void)m1, (void)v;
    return no_cuda(err, "cuda mlp: uploading the AdamW moments");
}

int kvz_cuda_mlp_reset_moments(kvz_cuda_mlp *m, kvz_error *err)
{
    (void)m;
    return no_cuda(err, "cuda mlp: zeroing the AdamW moments");
}

int kvz_cuda_mlp_loss_grad(kvz_cuda_mlp *m, const float *x_dev, const float *y_dev, size_t n,
                           double *loss, kvz_error *err)
{
    (void)m, (void)x_dev, (void)y_dev, (void)n, (void)loss;
    return no_cuda(err, "cuda mlp: loss_grad");
}

int kvz_cuda_mlp_loss(kvz_cuda_mlp *m, const float *x_dev, const float *y_dev, size_t n,
                      double *loss, kvz_error *err)
{
    (void)m, (void)x_dev, (void)y_dev, (void)n, (void)loss;
    return no_cuda(err, "cuda mlp: loss");
}

int kvz_cuda_mlp_clip(kvz_cuda_mlp *m, double max_norm, double *norm_before, kvz_error *err)
{
    (void)m, (void)max_norm, (void)norm_before;
    return no_cuda(err, "cuda mlp: clip");
}

int kvz_cuda_mlp_loss_grad_dev(kvz_cuda_mlp *m, const float *x_dev, const float *y_dev,
                               size_t n, double *loss_dev, kvz_error *err)
{
    (void)m, (void)x_dev, (void)y_dev, (void)n, (void)loss_dev;
    return no_cuda(err, "cuda mlp: loss_grad");
}

int kvz_cuda_mlp_clip_dev(kvz_cuda_mlp *m, double max_norm, double *norm_dev, kvz_error *err)
{
    (void)m, (void)max_norm, (void)norm_dev;
    return no_cuda(err, "cuda mlp: clip");
}

int kvz_cuda_mlp_adamw_step(kvz_cuda_mlp *m, size_t t, double lr, double beta1, double beta2,
                            double eps, double weight_decay, kvz_error *err)
{
    (void)m, (void)t, (void)lr, (void)beta1, (void)beta2, (void)eps, (void)weight_decay;
    return no_cuda(err, "cuda mlp: adamw");
}

int kvz_cuda_ridge_create(size_t d_in, size_t d_out, size_t block_rows, kvz_cuda_ridge **out,
                          kvz_error *err)
{
    (void)d_in, (void)d_out, (void)block_rows;
    if (out)
        *out = NULL;
    return no_cuda(err, "cuda ridge");
}

void kvz_cuda_ridge_free(kvz_cuda_ridge *r)
{
    (void)r;
}

int kvz_cuda_ridge_add(kvz_cuda_ridge *r, const float *x_dev, const float *y_dev, size_t n,
                       kvz_error *err)
{
    (void)r, (void)x_dev, (void)y_dev, (void)n;
    return no_cuda(err, "cuda ridge: add");
}

int kvz_cuda_ridge_download(kvz_cuda_ridge *r, double *xtx, double *xty, double *x_sum,
                            double *y_sum, double *y_sq_sum, int64_t *count, kvz_error *err)
{
    (void)r, (void)xtx, (void)xty, (void)x_sum, (void)y_sum, (void)y_sq_sum, (void)count;
    return no_cuda(err, "cuda ridge: download");
}
