/* cuda_score_nocuda: the twin of cuda_score.cu for builds without CUDA:
 * kvz_cuda_kvzip_score_layer fails with KVZ_EUNSUPPORTED. */
#include "kvz_cuda_ops.h"

int kvz_cuda_kvzip_score_layer(const kvz_layer_tap *tap, const kvz_model_config *cfg,
                               size_t p0, size_t p1, size_t r0, size_t r1,
                               float *out_logscores, kvz_error *err)
{
    (void)tap, (void)cfg, (void)p0, (void)p1, (void)r0, (void)r1, (void)out_logscores;
    return kvz_fail(err, KVZ_EUNSUPPORTED,
                    "kvzip score (cuda): this kvzap was built without CUDA");
}
