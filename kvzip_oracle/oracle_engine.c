/* oracle_engine: the engine interface (oracle_engine.h) and its CPU
 * implementation: kvz_forward on the ops' thread pool, scores by
 * kvz_oracle_score_single, results complete when score returns. The CUDA
 * engine is in oracle_engine_cuda.c. */
#include "oracle_engine_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "../kernels/kvz_cuda_pipeline.h"

static int open_cpu(const kvz_checkpoint *ck, kvz_oracle_engine *e, kvz_error *err)
{
    kvz_forward_options fo = {(int)e->opt.threads, 0, 0};
    int rc = kvz_forward_create(ck, &fo, &e->cpu, err);
    if (rc == KVZ_OK) {
        e->cfg = kvz_forward_config(e->cpu);
        e->precision = "float32";
        snprintf(e->device_name, sizeof e->device_name, "cpu");
    }
    return rc;
}

int kvz_oracle_engine_open(const kvz_checkpoint *ck, const kvz_oracle_engine_options *opt,
                           kvz_oracle_engine **out, kvz_error *err)
{
    *out = NULL;
    kvz_oracle_engine *e = calloc(1, sizeof *e);
    if (!e)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory");
    e->opt = *opt;
    if (e->opt.n_slots == 0)
        e->opt.n_slots = 2;
    int rc = opt->device == KVZ_DEVICE_CUDA ? kvz_oracle_cuda_engine_open(ck, e, err)
                                            : open_cpu(ck, e, err);
    if (rc != KVZ_OK) {
        kvz_oracle_engine_free(e);
        return rc;
    }
    *out = e;
    return KVZ_OK;
}

void kvz_oracle_engine_free(kvz_oracle_engine *e)
{
    if (!e)
        return;
    kvz_forward_free(e->cpu);
    kvz_oracle_cuda_engine_free(e->cuda);
    free(e);
}

const kvz_model_config *kvz_oracle_engine_config(const kvz_oracle_engine *e)
{
    return e->cfg;
}

const char *kvz_oracle_engine_device(const kvz_oracle_engine *e)
{
    return e->device_name;
}

const char *kvz_oracle_engine_precision(const kvz_oracle_engine *e)
{
    return e->precision;
}

kvz_forward *kvz_oracle_engine_cpu_forward(kvz_oracle_engine *e)
{
    return e->cpu;
}

void *kvz_oracle_engine_host_alloc(void *engine, size_t bytes)
{
    kvz_oracle_engine *e = engine;
    return e->cuda ? kvz_cuda_pinned_alloc(bytes) : malloc(bytes);
}

void kvz_oracle_engine_host_free(void *engine, void *p)
{
    kvz_oracle_engine *e = engine;
    if (e->cuda)
        kvz_cuda_pinned_free(p);
    else
        free(p);
}

int kvz_oracle_engine_score(kvz_oracle_engine *e, const kvz_oracle_prompt *p,
                            const size_t *positions, size_t n, float *out_hidden,
                            float *out_logscores, size_t slot, kvz_error *err)
{
    if (e->cuda)
        return kvz_oracle_cuda_engine_score(e, p, positions, n, out_hidden, out_logscores, slot,
                                            err);
    return kvz_oracle_score_single(e->cpu, p, positions, n, out_hidden, out_logscores, err);
}

int kvz_oracle_engine_ready(kvz_oracle_engine *e, size_t slot, kvz_error *err)
{
    return e->cuda ? kvz_oracle_cuda_engine_ready(e, slot, err) : KVZ_OK;
}
