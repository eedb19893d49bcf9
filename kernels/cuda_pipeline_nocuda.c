/* cuda_pipeline_nocuda: the twin of cuda_pipeline.cu (and of the async
 * scorer in cuda_score.cu) for builds without CUDA: allocations return NULL,
 * everything else fails with KVZ_EUNSUPPORTED. */
#include "kvz_cuda_pipeline.h"

static int no_cuda(kvz_error *err)
{
    return kvz_fail(err, KVZ_EUNSUPPORTED,
                    "oracle pipeline (cuda): this kvzap was built without CUDA");
}

void *kvz_cuda_pinned_alloc(size_t bytes)
{
    (void)bytes;
    return NULL;
}

void kvz_cuda_pinned_free(void *p)
{
    (void)p;
}

void kvz_cuda_score_ws_free(kvz_cuda_score_ws *ws)
{
    (void)ws;
}

int kvz_cuda_kvzip_score_layer_async(const kvz_layer_tap *tap, const kvz_model_config *cfg,
                                     size_t p0, size_t p1, size_t r0, size_t r1,
                                     float *out_logscores, void *stream, int tensor_cores,
                                     kvz_cuda_score_ws **ws, kvz_error *err)
{
    (void)tap, (void)cfg, (void)p0, (void)p1, (void)r0, (void)r1, (void)out_logscores;
    (void)stream, (void)tensor_cores, (void)ws;
    return no_cuda(err);
}

int kvz_cuda_pipeline_create(void *compute_stream, const kvz_cuda_pipeline_shape *shape,
                             kvz_cuda_pipeline **out, kvz_error *err)
{
    (void)compute_stream, (void)shape;
    *out = NULL;
    return no_cuda(err);
}

void kvz_cuda_pipeline_free(kvz_cuda_pipeline *p)
{
    (void)p;
}

int kvz_cuda_pipeline_begin(kvz_cuda_pipeline *p, size_t slot, const size_t *positions, size_t n,
                            size_t p0, size_t n_context, kvz_error *err)
{
    (void)p, (void)slot, (void)positions, (void)n, (void)p0, (void)n_context;
    return no_cuda(err);
}

int kvz_cuda_pipeline_layer(kvz_cuda_pipeline *p, const kvz_layer_tap *tap,
                            const kvz_model_config *cfg, size_t p0, size_t p1, size_t r0,
                            size_t r1, kvz_error *err)
{
    (void)p, (void)tap, (void)cfg, (void)p0, (void)p1, (void)r0, (void)r1;
    return no_cuda(err);
}

int kvz_cuda_pipeline_copy_out(kvz_cuda_pipeline *p, size_t slot, float *host_hidden,
                               float *host_scores, kvz_error *err)
{
    (void)p, (void)slot, (void)host_hidden, (void)host_scores;
    return no_cuda(err);
}

int kvz_cuda_pipeline_wait(kvz_cuda_pipeline *p, size_t slot, kvz_error *err)
{
    (void)p, (void)slot;
    return no_cuda(err);
}
