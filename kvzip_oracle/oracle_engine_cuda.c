/* oracle_engine_cuda: the CUDA oracle engine. One kvz_cuda_forward pass per
 * document; its tap (on the forward's stream) scores the layer on the device
 * with the attention's own log-normalizers and gathers the sampled rows into
 * device staging (kernels/kvz_cuda_pipeline.h); after the pass the staging
 * goes to the writer slot's pinned buffers on a copy stream, and the writer
 * thread waits for that slot's event before appending. Plain C: no CUDA
 * headers (kernels/ hides them). */
#include "oracle_engine_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "../kernels/kvz_cuda.h"
#include "../kernels/kvz_cuda_forward.h"
#include "../kernels/kvz_cuda_pipeline.h"

struct kvz_oracle_cuda_engine {
    kvz_cuda_forward *fwd;
    kvz_cuda_pipeline *pipe;
};

/* The tap's view of the document being scored. */
typedef struct cuda_doc {
    kvz_oracle_cuda_engine *c;
    const kvz_model_config *cfg;
    const kvz_oracle_prompt *p;
} cuda_doc;

static int check_device(const kvz_oracle_engine *e, kvz_error *err)
{
    if (e->opt.scoring == KVZ_SCORING_CHUNKED)
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "oracle.scoring=chunked runs on the CPU only; use --device cpu");
    if (!kvz_cuda_compiled())
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "model.device: cuda: this kvzap was built without CUDA; use --device cpu "
                        "(or auto)");
    kvz_error why = {0};
    if (kvz_cuda_device_count(&why) <= 0)
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "model.device: cuda: no CUDA device is available%s%s; use --device cpu "
                        "(or auto)",
                        why.msg[0] ? ": " : "", why.msg);
    return KVZ_OK;
}

static void name_device(kvz_oracle_engine *e)
{
    kvz_cuda_device_info info;
    memset(&info, 0, sizeof info);
    if (kvz_cuda_device_info_get(0, &info, NULL) != KVZ_OK)
        snprintf(info.name, sizeof info.name, "unknown device");
    snprintf(e->device_name, sizeof e->device_name, "cuda:0 %s", info.name);
}

int kvz_oracle_cuda_engine_open(const kvz_checkpoint *ck, kvz_oracle_engine *e, kvz_error *err)
{
    int rc = check_device(e, err);
    if (rc != KVZ_OK)
        return rc;
    kvz_oracle_cuda_engine *c = calloc(1, sizeof *c);
    if (!c)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory");
    e->cuda = c;
    int bf16 = e->opt.precision == KVZ_PRECISION_BFLOAT16;
    kvz_cuda_forward_options fo = {0, bf16 ? KVZ_CUDA_BF16 : KVZ_CUDA_FP32, 0};
    rc = kvz_cuda_forward_create(ck, &fo, &c->fwd, err);
    if (rc != KVZ_OK)
        return rc;
    e->cfg = kvz_cuda_forward_config(c->fwd);
    e->precision = bf16 ? "bfloat16" : "float32";
    name_device(e);
    kvz_cuda_pipeline_shape shape = {e->opt.n_slots, e->opt.n_max, e->cfg->n_layers,
                                     e->cfg->d_model, e->cfg->n_kv_heads, e->opt.with_hidden,
                                     bf16};
    return kvz_cuda_pipeline_create(kvz_cuda_forward_stream(c->fwd), &shape, &c->pipe, err);
}

void kvz_oracle_cuda_engine_free(kvz_oracle_cuda_engine *c)
{
    if (!c)
        return;
    kvz_cuda_pipeline_free(c->pipe); /* waits for the device first */
    kvz_cuda_forward_free(c->fwd);
    free(c);
}

static int cuda_tap(const kvz_layer_tap *tap, void *user, kvz_error *err)
{
    cuda_doc *d = user;
    const kvz_oracle_prompt *p = d->p;
    return kvz_cuda_pipeline_layer(d->c->pipe, tap, d->cfg, p->context_start, p->context_end,
                                   p->repeat_start, p->repeat_end, err);
}

int kvz_oracle_cuda_engine_score(kvz_oracle_engine *e, const kvz_oracle_prompt *p,
                                 const size_t *positions, size_t n, float *out_hidden,
                                 float *out_logscores, size_t slot, kvz_error *err)
{
    kvz_oracle_cuda_engine *c = e->cuda;
    if (!p || !p->ids || !out_logscores || !positions || n == 0 ||
        (e->opt.with_hidden && !out_hidden))
        return kvz_fail(err, KVZ_EINVAL, "oracle (cuda): NULL argument or no samples");
    int rc = kvz_oracle_check_positions(p, positions, n, err);
    rc = rc ? rc
            : kvz_cuda_pipeline_begin(c->pipe, slot, positions, n, p->context_start,
                                      p->context_end - p->context_start, err);
    if (rc != KVZ_OK)
        return rc;
    cuda_doc d = {c, e->cfg, p};
    kvz_cuda_forward_reset(c->fwd);
    rc = kvz_cuda_forward_run(c->fwd, p->ids, p->n_ids, cuda_tap, &d, KVZ_LOGITS_NONE, NULL, err);
    kvz_cuda_forward_reset(c->fwd);
    if (rc == KVZ_OK)
        rc = kvz_cuda_pipeline_copy_out(c->pipe, slot, e->opt.with_hidden ? out_hidden : NULL,
                                        out_logscores, err);
    return rc;
}

int kvz_oracle_cuda_engine_ready(kvz_oracle_engine *e, size_t slot, kvz_error *err)
{
    return kvz_cuda_pipeline_wait(e->cuda->pipe, slot, err);
}
