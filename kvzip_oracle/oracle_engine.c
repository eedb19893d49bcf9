/* oracle_engine: oracle_engine.h, written once for every backend. One
 * kvz_forward on the chosen backend; its layer tap scores the layer
 * (kvz_kvzip_score_layer, the phases as backend ops) into the layer's
 * context scores and gathers the sampled rows (kvz_op_gather_rows) into the
 * writer slot's staging [L, n, Hkv] / [L, n, D]. After the pass the staging
 * goes to the slot's host buffers with asynchronous downloads
 * (kvz_backend_download_async: cuda's copy stream, so document i's copy
 * overlaps document i+1's compute), and kvz_oracle_engine_ready waits for
 * the slot. On a host-memory backend (cpu) the staging IS the slot's host
 * buffers and everything is complete when score returns. */
#include "oracle_engine.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "kvzip_score.h"

struct kvz_oracle_engine {
    kvz_oracle_engine_options opt;
    const char *precision; /* "float32" / "bfloat16" */
    kvz_dtype compute;     /* the score's last phase: KVZ_BF16 in bfloat16 mode */
    kvz_forward *fwd;
    kvz_backend *be;       /* the forward's */
    int host;              /* backend memory is host memory */
    kvz_kvzip_ws ws;
    kvz_buf positions;     /* int64 [n_max] the document's sample positions */
    kvz_buf layer_scores;  /* fp32 [|P|, Hkv] one layer's context scores */
    kvz_buf staging[KVZ_BACKEND_SLOTS][2]; /* not host: per slot scores [L, n_max, Hkv],
                                              hidden [L, n_max, D] */
    int64_t *host_positions; /* [n_max] */
    /* the document being scored */
    const kvz_oracle_prompt *p;
    size_t n;
    float *dst_scores, *dst_hidden; /* where the tap gathers: staging or the host slot */
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
    if (kvz_backend_device_count(KVZ_BACKEND_CUDA, &why) <= 0)
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "model.device: cuda: no CUDA device is available%s%s; use --device cpu "
                        "(or auto)",
                        why.msg[0] ? ": " : "", why.msg);
    return KVZ_OK;
}

static int alloc_buffers(kvz_oracle_engine *e, kvz_error *err)
{
    const kvz_model_config *c = kvz_forward_config(e->fwd);
    size_t L = c->n_layers, n_max = e->opt.n_max;
    e->host_positions = malloc(n_max * sizeof *e->host_positions);
    if (!e->host_positions)
        return kvz_fail(err, KVZ_ENOMEM, "oracle: out of memory");
    int rc = kvz_backend_alloc(e->be, KVZ_I64, n_max, "the sample positions", &e->positions,
                               err);
    for (size_t s = 0; !rc && !e->host && s < e->opt.n_slots; s++) {
        rc = kvz_backend_alloc(e->be, KVZ_F32, L * n_max * c->n_kv_heads,
                               "a writer slot's staged scores", &e->staging[s][0], err);
        if (!rc && e->opt.with_hidden)
            rc = kvz_backend_alloc(e->be, KVZ_F32, L * n_max * c->d_model,
                                   "a writer slot's staged hidden states", &e->staging[s][1],
                                   err);
    }
    return rc;
}

static int check_options(const kvz_oracle_engine_options *opt, kvz_error *err)
{
    if (opt->n_max == 0 || opt->n_slots > KVZ_BACKEND_SLOTS)
        return kvz_fail(err, KVZ_EINVAL, "oracle: %zu samples per document, %zu writer slots "
                        "(1..%d)", opt->n_max, opt->n_slots, KVZ_BACKEND_SLOTS);
    return KVZ_OK;
}

int kvz_oracle_engine_wrap(kvz_forward *f, const kvz_oracle_engine_options *opt,
                           kvz_oracle_engine **out, kvz_error *err)
{
    *out = NULL;
    int rc = check_options(opt, err);
    kvz_oracle_engine *e = rc ? NULL : calloc(1, sizeof *e);
    if (!rc && !e)
        rc = kvz_fail(err, KVZ_ENOMEM, "out of memory");
    if (rc) {
        kvz_forward_free(f);
        return rc;
    }
    e->opt = *opt;
    if (e->opt.n_slots == 0)
        e->opt.n_slots = 2;
    e->fwd = f;
    e->be = kvz_forward_backend(f);
    e->host = kvz_backend_host_memory(e->be);
    /* bfloat16 is a cuda mode (the cpu always computes in float32) */
    int bf16 = kvz_forward_precision(f) == KVZ_BF16;
    e->precision = bf16 ? "bfloat16" : "float32";
    e->compute = bf16 ? KVZ_BF16 : KVZ_F32;
    e->opt.device = kvz_backend_kind_of(e->be) == KVZ_BACKEND_CUDA ? KVZ_DEVICE_CUDA
                                                                   : KVZ_DEVICE_CPU;
    rc = alloc_buffers(e, err);
    if (rc) {
        kvz_oracle_engine_free(e);
        return rc;
    }
    *out = e;
    return KVZ_OK;
}

int kvz_oracle_engine_open(const kvz_checkpoint *ck, const kvz_oracle_engine_options *opt,
                           kvz_oracle_engine **out, kvz_error *err)
{
    *out = NULL;
    int cuda = opt->device == KVZ_DEVICE_CUDA;
    int rc = cuda ? check_cuda(opt, err) : KVZ_OK;
    rc = rc ? rc : check_options(opt, err);
    if (rc)
        return rc;
    int bf16 = cuda && opt->precision == KVZ_PRECISION_BFLOAT16; /* the cpu: always float32 */
    kvz_forward_options fo = {.n_threads = (int)opt->threads,
                              .device = cuda ? KVZ_BACKEND_CUDA : KVZ_BACKEND_CPU,
                              .precision = bf16 ? KVZ_BF16 : KVZ_F32};
    kvz_forward *f = NULL;
    rc = kvz_forward_create(ck, &fo, &f, err);
    rc = rc ? rc : kvz_oracle_engine_wrap(f, opt, out, err);
    if (rc && f) { /* name the model, as the forward's own errors do */
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
        kvz_fail(err, rc, "%s: %s", kvz_checkpoint_path(ck), msg);
    }
    return rc;
}

void kvz_oracle_engine_free(kvz_oracle_engine *e)
{
    if (!e)
        return;
    if (e->be) {
        (void)kvz_backend_sync(e->be, NULL); /* no queued work may still use the buffers */
        for (size_t s = 0; s < e->opt.n_slots; s++)
            (void)kvz_backend_slot_wait(e->be, s, NULL);
        kvz_kvzip_ws_free(&e->ws);
        kvz_backend_free(e->be, &e->positions);
        kvz_backend_free(e->be, &e->layer_scores);
        for (size_t s = 0; s < KVZ_BACKEND_SLOTS; s++)
            kvz_backend_free(e->be, &e->staging[s][0]), kvz_backend_free(e->be, &e->staging[s][1]);
    }
    free(e->host_positions);
    kvz_forward_free(e->fwd);
    free(e);
}

const kvz_model_config *kvz_oracle_engine_config(const kvz_oracle_engine *e)
{
    return kvz_forward_config(e->fwd);
}

const char *kvz_oracle_engine_device(const kvz_oracle_engine *e)
{
    return kvz_backend_name(e->be);
}

const char *kvz_oracle_engine_precision(const kvz_oracle_engine *e)
{
    return e->precision;
}

kvz_forward *kvz_oracle_engine_cpu_forward(kvz_oracle_engine *e)
{
    return e->host ? e->fwd : NULL;
}

void *kvz_oracle_engine_host_alloc(void *engine, size_t bytes)
{
    kvz_oracle_engine *e = engine;
    return kvz_backend_host_alloc(e->be, bytes);
}

void kvz_oracle_engine_host_free(void *engine, void *p)
{
    kvz_oracle_engine *e = engine;
    kvz_backend_host_free(e->be, p);
}

/* ---------- one document ---------- */

/* The layer's context scores, then its sampled rows into the document's
 * destination (layer l of [L, n, Hkv] and [L, n, D]). */
static int engine_tap(const kvz_layer_tap *tap, void *user, kvz_error *err)
{
    kvz_oracle_engine *e = user;
    const kvz_oracle_prompt *p = e->p;
    const kvz_model_config *c = kvz_forward_config(e->fwd);
    size_t nP = p->context_end - p->context_start, Hkv = c->n_kv_heads, D = c->d_model;
    size_t l = tap->layer, n = e->n;
    float *scores = kvz_buf_f32(e->layer_scores);
    int rc = kvz_kvzip_score_layer(tap, c, p->context_start, p->context_end, p->repeat_start,
                                   p->repeat_end, e->compute, &e->ws, scores, err);
    rc = rc ? rc
            : kvz_op_gather_rows(e->be, scores, Hkv, Hkv, p->context_start, nP,
                                 e->positions.data, n, e->dst_scores + l * n * Hkv, err);
    if (!rc && e->dst_hidden)
        rc = kvz_op_gather_rows(e->be, tap->x, D, D, 0, tap->n_tokens, e->positions.data, n,
                                e->dst_hidden + l * n * D, err);
    return rc;
}

int kvz_oracle_engine_score(kvz_oracle_engine *e, const kvz_oracle_prompt *p,
                            const size_t *positions, size_t n, float *out_hidden,
                            float *out_logscores, size_t slot, kvz_error *err)
{
    if (!p || !p->ids || !out_logscores || !positions || n == 0 ||
        (e->opt.with_hidden && !out_hidden))
        return kvz_fail(err, KVZ_EINVAL, "oracle: NULL argument or no samples");
    if (n > e->opt.n_max || slot >= e->opt.n_slots)
        return kvz_fail(err, KVZ_EINVAL, "oracle: %zu samples (at most %zu), slot %zu (of %zu)",
                        n, e->opt.n_max, slot, e->opt.n_slots);
    int rc = kvz_oracle_check_positions(p, positions, n, err);
    if (rc)
        return rc;
    const kvz_model_config *c = kvz_forward_config(e->fwd);
    size_t L = c->n_layers, Hkv = c->n_kv_heads, D = c->d_model;
    size_t nP = p->context_end - p->context_start;
    /* the slot's staging is read by its previous download until that lands */
    rc = kvz_backend_slot_fence(e->be, slot, err);
    if (!rc && e->layer_scores.numel < nP * Hkv) {
        kvz_backend_free(e->be, &e->layer_scores);
        rc = kvz_backend_alloc(e->be, KVZ_F32, nP * Hkv, "a layer's context scores",
                               &e->layer_scores, err);
    }
    for (size_t s = 0; s < n; s++)
        e->host_positions[s] = (int64_t)positions[s];
    rc = rc ? rc
            : kvz_backend_upload(e->be, e->positions.data, e->host_positions,
                                 n * sizeof *e->host_positions, err);
    if (rc)
        return rc;
    e->p = p, e->n = n;
    e->dst_scores = e->host ? out_logscores : kvz_buf_f32(e->staging[slot][0]);
    e->dst_hidden = !e->opt.with_hidden ? NULL
                    : e->host           ? out_hidden
                                        : kvz_buf_f32(e->staging[slot][1]);
    kvz_forward_reset(e->fwd);
    rc = kvz_forward_run(e->fwd, p->ids, p->n_ids, engine_tap, e, KVZ_LOGITS_NONE, NULL, err);
    kvz_forward_reset(e->fwd);
    if (!rc && !e->host) {
        rc = kvz_backend_download_async(e->be, slot, out_logscores, e->dst_scores,
                                        L * n * Hkv * sizeof(float), err);
        if (!rc && e->dst_hidden)
            rc = kvz_backend_download_async(e->be, slot, out_hidden, e->dst_hidden,
                                            L * n * D * sizeof(float), err);
        rc = rc ? rc : kvz_backend_slot_record(e->be, slot, err);
    }
    e->p = NULL;
    return rc;
}

int kvz_oracle_engine_ready(kvz_oracle_engine *e, size_t slot, kvz_error *err)
{
    return kvz_backend_slot_wait(e->be, slot, err);
}
