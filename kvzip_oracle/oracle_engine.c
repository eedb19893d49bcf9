/* oracle_engine: oracle_engine.h. One kvz_forward on the chosen backend;
 * what differs between backends is only where a layer's scores are computed
 * and how they reach the writer:
 *   cpu   kvz_oracle_score_single (taps on host memory), results complete
 *         when score returns
 *   cuda  the forward's tap scores the layer on the device and gathers the
 *         sampled rows into device staging (kernels/kvz_cuda_pipeline.h, the
 *         one CUDA-specific hook: a copy stream and pinned writer slots);
 *         after the pass the staging goes to the slot's pinned buffers, and
 *         kvz_oracle_engine_ready waits for that slot's event */
#include "oracle_engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "../kernels/kvz_cuda.h"
#include "../kernels/kvz_cuda_pipeline.h"

struct kvz_oracle_engine {
    kvz_oracle_engine_options opt;
    const char *precision;   /* "float32" / "bfloat16" */
    kvz_forward *fwd;
    kvz_cuda_pipeline *pipe; /* cuda only */
};

static int check_cuda(const kvz_oracle_engine_options *o, kvz_error *err)
{
    if (o->scoring == KVZ_SCORING_CHUNKED)
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "oracle.scoring=chunked runs on the CPU only; use --device cpu");
    if (!kvz_backend_compiled(KVZ_BACKEND_CUDA))
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

int kvz_oracle_engine_open(const kvz_checkpoint *ck, const kvz_oracle_engine_options *opt,
                           kvz_oracle_engine **out, kvz_error *err)
{
    *out = NULL;
    int cuda = opt->device == KVZ_DEVICE_CUDA;
    int rc = cuda ? check_cuda(opt, err) : KVZ_OK;
    if (rc)
        return rc;
    kvz_oracle_engine *e = calloc(1, sizeof *e);
    if (!e)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory");
    e->opt = *opt;
    if (e->opt.n_slots == 0)
        e->opt.n_slots = 2;
    int bf16 = cuda && opt->precision == KVZ_PRECISION_BFLOAT16; /* the cpu: always float32 */
    e->precision = bf16 ? "bfloat16" : "float32";
    kvz_forward_options fo = {.n_threads = (int)opt->threads,
                              .device = cuda ? KVZ_BACKEND_CUDA : KVZ_BACKEND_CPU,
                              .precision = bf16 ? KVZ_BF16 : KVZ_F32};
    rc = kvz_forward_create(ck, &fo, &e->fwd, err);
    if (!rc && cuda) {
        const kvz_model_config *c = kvz_forward_config(e->fwd);
        kvz_cuda_pipeline_shape shape = {e->opt.n_slots, e->opt.n_max, c->n_layers, c->d_model,
                                         c->n_kv_heads, e->opt.with_hidden, bf16};
        rc = kvz_cuda_pipeline_create(kvz_backend_stream(kvz_forward_backend(e->fwd)), &shape,
                                      &e->pipe, err);
    }
    if (rc) {
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
    kvz_cuda_pipeline_free(e->pipe); /* waits for the device first */
    kvz_forward_free(e->fwd);
    free(e);
}

const kvz_model_config *kvz_oracle_engine_config(const kvz_oracle_engine *e)
{
    return kvz_forward_config(e->fwd);
}

const char *kvz_oracle_engine_device(const kvz_oracle_engine *e)
{
    return kvz_backend_name(kvz_forward_backend(e->fwd));
}

const char *kvz_oracle_engine_precision(const kvz_oracle_engine *e)
{
    return e->precision;
}

kvz_forward *kvz_oracle_engine_cpu_forward(kvz_oracle_engine *e)
{
    return e->pipe ? NULL : e->fwd;
}

void *kvz_oracle_engine_host_alloc(void *engine, size_t bytes)
{
    kvz_oracle_engine *e = engine;
    return e->pipe ? kvz_cuda_pinned_alloc(bytes) : malloc(bytes);
}

void kvz_oracle_engine_host_free(void *engine, void *p)
{
    kvz_oracle_engine *e = engine;
    if (e->pipe)
        kvz_cuda_pinned_free(p);
    else
        free(p);
}

/* ---------- cuda: scores and sampled rows through the pipeline ---------- */

typedef struct cuda_doc {
    kvz_oracle_engine *e;
    const kvz_oracle_prompt *p;
} cuda_doc;

static int cuda_tap(const kvz_layer_tap *tap, void *user, kvz_error *err)
{
    cuda_doc *d = user;
    const kvz_oracle_prompt *p = d->p;
    return kvz_cuda_pipeline_layer(d->e->pipe, tap, kvz_forward_config(d->e->fwd),
                                   p->context_start, p->context_end, p->repeat_start,
                                   p->repeat_end, err);
}

static int score_cuda(kvz_oracle_engine *e, const kvz_oracle_prompt *p, const size_t *positions,
                      size_t n, float *out_hidden, float *out_logscores, size_t slot,
                      kvz_error *err)
{
    if (!p || !p->ids || !out_logscores || !positions || n == 0 ||
        (e->opt.with_hidden && !out_hidden))
        return kvz_fail(err, KVZ_EINVAL, "oracle (cuda): NULL argument or no samples");
    int rc = kvz_oracle_check_positions(p, positions, n, err);
    rc = rc ? rc
            : kvz_cuda_pipeline_begin(e->pipe, slot, positions, n, p->context_start,
                                      p->context_end - p->context_start, err);
    if (rc != KVZ_OK)
        return rc;
    cuda_doc d = {e, p};
    kvz_forward_reset(e->fwd);
    rc = kvz_forward_run(e->fwd, p->ids, p->n_ids, cuda_tap, &d, KVZ_LOGITS_NONE, NULL, err);
    kvz_forward_reset(e->fwd);
    if (rc == KVZ_OK)
        rc = kvz_cuda_pipeline_copy_out(e->pipe, slot, e->opt.with_hidden ? out_hidden : NULL,
                                        out_logscores, err);
    return rc;
}

int kvz_oracle_engine_score(kvz_oracle_engine *e, const kvz_oracle_prompt *p,
                            const size_t *positions, size_t n, float *out_hidden,
                            float *out_logscores, size_t slot, kvz_error *err)
{
    if (e->pipe)
        return score_cuda(e, p, positions, n, out_hidden, out_logscores, slot, err);
    return kvz_oracle_score_single(e->fwd, p, positions, n, out_hidden, out_logscores, err);
}

int kvz_oracle_engine_ready(kvz_oracle_engine *e, size_t slot, kvz_error *err)
{
    return e->pipe ? kvz_cuda_pipeline_wait(e->pipe, slot, err) : KVZ_OK;
}
