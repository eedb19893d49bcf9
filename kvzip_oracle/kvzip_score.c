/* kvzip_score: KVzip+ log-importance of one layer's context tokens from a
 * forward-pass tap (spec 1.2/1.3), as the four backend phases of
 * ops/backend.h in order: ln ||x_j|| of the repeat queries, ln ||W_O^g v_i||
 * of the context keys, the repeat queries' causal log-normalizers (from the
 * tap when the attention kept them), and the best log-score per context key
 * and KV head. Everything after the logits is float64, in the log domain, so
 * tiny attention weights do not underflow. */
#include "kvzip_score.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_args(const kvz_layer_tap *tap, const kvz_model_config *cfg, size_t p0,
                      size_t p1, size_t r0, size_t r1, const float *out, kvz_error *err)
{
    if (!tap || !cfg || !out || !tap->x || !tap->q || !tap->k || !tap->v || !tap->w_o)
        return kvz_fail(err, KVZ_EINVAL, "kvzip score: NULL tap, config, tap array or output");
    size_t L = tap->layer, T = tap->n_tokens;
    if (cfg->n_heads == 0 || cfg->n_kv_heads == 0 || cfg->n_heads % cfg->n_kv_heads != 0 ||
        cfg->head_dim == 0 || cfg->d_model == 0)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score: layer %zu: bad head config (%zu heads, %zu KV heads, "
                        "head_dim %zu, d_model %zu)",
                        L, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim, cfg->d_model);
    if (tap->pos0 != 0)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score: layer %zu: tap starts at position %zu; the score needs "
                        "one full pass from position 0",
                        L, tap->pos0);
    if (p0 >= p1 || r0 >= r1)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score: layer %zu: empty range: context [%zu, %zu), repeat "
                        "[%zu, %zu)",
                        L, p0, p1, r0, r1);
    if (p1 > r0)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score: layer %zu: context [%zu, %zu) must end at or before the "
                        "repeat [%zu, %zu) starts",
                        L, p0, p1, r0, r1);
    if (r1 > T)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score: layer %zu: repeat [%zu, %zu) goes past the %zu tokens "
                        "of the pass",
                        L, r0, r1, T);
    return KVZ_OK;
}

void kvz_kvzip_ws_free(kvz_kvzip_ws *ws)
{
    if (!ws || !ws->be)
        return;
    kvz_backend_free(ws->be, &ws->log_xnorm);
    kvz_backend_free(ws->be, &ws->lse);
    kvz_backend_free(ws->be, &ws->lognorm);
    ws->be = NULL;
}

/* b holds at least n float64 values (contents lost when it grows). */
static int reserve(kvz_kvzip_ws *ws, kvz_buf *b, size_t n, const char *what, kvz_error *err)
{
    if (b->data && b->numel >= n)
        return KVZ_OK;
    kvz_backend_free(ws->be, b);
    return kvz_backend_alloc(ws->be, KVZ_F64, n, what, b, err);
}

int kvz_kvzip_score_layer(const kvz_layer_tap *tap, const kvz_model_config *cfg, size_t p0,
                          size_t p1, size_t r0, size_t r1, kvz_dtype compute,
                          kvz_kvzip_ws *ws, float *out_logscores, kvz_error *err)
{
    int rc = check_args(tap, cfg, p0, p1, r0, r1, out_logscores, err);
    if (rc != KVZ_OK)
        return rc;
    kvz_backend *be = tap->backend ? tap->backend : kvz_backend_host();
    kvz_kvzip_ws own = {0};
    if (!ws)
        ws = &own;
    if (!ws->be)
        ws->be = be;
    if (ws->be != be)
        return kvz_fail(err, KVZ_EINVAL, "kvzip score: layer %zu: the workspace belongs to "
                        "another backend (%s, not %s)", tap->layer, kvz_backend_name(ws->be),
                        kvz_backend_name(be));
    size_t H = cfg->n_heads, Hkv = cfg->n_kv_heads, dh = cfg->head_dim, D = cfg->d_model;
    size_t nP = p1 - p0, nR = r1 - r0;
    float scale = (float)(1.0 / sqrt((double)dh));
    rc = reserve(ws, &ws->log_xnorm, nR, "the score's query norms", err);
    rc = rc ? rc : reserve(ws, &ws->lse, H * nR, "the score's log-normalizers", err);
    rc = rc ? rc : reserve(ws, &ws->lognorm, H * nP, "the score's value norms", err);
    double *log_xnorm = ws->log_xnorm.data, *lse = ws->lse.data, *lognorm = ws->lognorm.data;
    rc = rc ? rc : kvz_op_row_lognorms(be, tap->x + r0 * D, D, D, nR, log_xnorm, err);
    rc = rc ? rc
            : kvz_op_value_lognorms(be, tap->v, tap->w_o, H, Hkv, dh, D, p0, p1, lognorm, err);
    rc = rc ? rc
            : kvz_op_causal_lse(be, tap->q, tap->k, tap->lse, H, Hkv, dh, scale, r0, r1, lse,
                                err);
    rc = rc ? rc
            : kvz_op_kvzip_best(be, tap->q, tap->k, H, Hkv, dh, scale, p0, p1, r0, r1, lse,
                                log_xnorm, lognorm, compute, out_logscores, err);
    if (ws == &own) {
        int sync = kvz_backend_sync(be, rc ? NULL : err); /* before the scratch goes */
        rc = rc ? rc : sync;
        kvz_kvzip_ws_free(&own);
    }
    if (rc != KVZ_OK && strncmp(err ? err->msg : "", "kvzip", 5) != 0 && err) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        kvz_fail(err, rc, "kvzip score: layer %zu: %s", tap->layer, msg);
    }
    return rc;
}
