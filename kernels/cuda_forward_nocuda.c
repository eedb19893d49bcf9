/* cuda_forward_nocuda: the twin of kernels/cuda_forward*.cu for builds
 * without CUDA: kvz_cuda_forward.h and kvz_cuda_attention.h, where every
 * operation fails with KVZ_EUNSUPPORTED, freeing is a no-op and the getters
 * return 0 / NULL. */
#include "kvz_cuda_attention.h"
#include "kvz_cuda_forward.h"

static int no_cuda(kvz_error *err, const char *what)
{
    return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: this kvzap build has no CUDA backend", what);
}

int kvz_cuda_forward_create(const kvz_checkpoint *ck, const kvz_cuda_forward_options *opt,
                            kvz_cuda_forward **out, kvz_error *err)
{
    (void)ck, (void)opt;
    if (out)
        *out = NULL;
    return no_cuda(err, "cuda forward");
}

int kvz_cuda_forward_create_random(const kvz_model_config *cfg, uint64_t seed,
                                   const kvz_cuda_forward_options *opt, kvz_cuda_forward **out,
                                   kvz_error *err)
{
    (void)cfg, (void)seed, (void)opt;
    if (out)
        *out = NULL;
    return no_cuda(err, "cuda forward");
}

void kvz_cuda_forward_free(kvz_cuda_forward *f)
{
    (void)f;
}

const kvz_model_config *kvz_cuda_forward_config(const kvz_cuda_forward *f)
{
    (void)f;
    return NULL;
}

void kvz_cuda_forward_reset(kvz_cuda_forward *f)
{
    (void)f;
}

void kvz_cuda_forward_truncate(kvz_cuda_forward *f, size_t n_tokens)
{
    (void)f, (void)n_tokens;
}

size_t kvz_cuda_forward_n_cached(const kvz_cuda_forward *f)
{
    (void)f;
    return 0;
}

int kvz_cuda_forward_run(kvz_cuda_forward *f, const int32_t *ids, size_t n, kvz_tap_fn tap,
                         void *user, int logits_mode, float *logits, kvz_error *err)
{
    (void)f, (void)ids, (void)n, (void)tap, (void)user, (void)logits_mode, (void)logits;
    return no_cuda(err, "cuda forward");
}

void *kvz_cuda_forward_stream(const kvz_cuda_forward *f)
{
    (void)f;
    return NULL;
}

size_t kvz_cuda_forward_device_bytes(const kvz_cuda_forward *f)
{
    (void)f;
    return 0;
}

size_t kvz_cuda_forward_peak_device_bytes(const kvz_cuda_forward *f)
{
    (void)f;
    return 0;
}

int kvz_cuda_attention(const kvz_attn_args *a, kvz_error *err)
{
    (void)a;
    return no_cuda(err, "cuda attention");
}
