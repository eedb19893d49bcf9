/* prune: the KVzap threshold policy with DMSPress semantics (stated in
 * prune.h). The surrogate runs on the host (kvz_surrogate_predict); on a
 * backend whose memory is not the host's, the chunk's x is downloaded
 * first ([n, D] floats per layer and call). */
#include <stdlib.h>
#include <string.h>

#include "prune.h"

typedef struct pending {
    float *score;     /* [Hkv, cap]: undecided tokens' scores, oldest first */
    size_t n, cap;    /* tokens in the buffer */
    size_t pos0;      /* position of the oldest */
    double ratio;     /* evicted / (Hkv x cache length) after the last call */
    int seen;
} pending;

struct kvz_prune_kvzap {
    const kvz_surrogate *s;
    kvz_prune_kvzap_options o;
    size_t n_layers, D, hkv;
    pending *layer;
    float *x, *y, *scratch; /* host: [n, D], [n, Hkv], [n, Dh] */
    int32_t *evict;         /* [n] positions */
    size_t rows;            /* rows the host buffers hold */
};

int kvz_prune_kvzap_create(const kvz_surrogate *s, size_t n_layers, size_t d_model,
                           size_t n_kv_heads, const kvz_prune_kvzap_options *opt,
                           kvz_prune_kvzap **out, kvz_error *err)
{
    *out = NULL;
    if (!s || !opt)
        return kvz_fail(err, KVZ_EINVAL, "kvzap policy: no surrogate or options");
    if (s->n_layers != n_layers || s->d_in != d_model || s->d_out != n_kv_heads)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzap policy: the surrogate is for %zu layers, d_model %zu, %zu KV "
                        "heads; the model has %zu layers, d_model %zu, %zu KV heads",
                        s->n_layers, s->d_in, s->d_out, n_layers, d_model, n_kv_heads);
    kvz_prune_kvzap *p = calloc(1, sizeof *p);
    if (p)
        p->layer = calloc(n_layers, sizeof *p->layer);
    if (!p || !p->layer) {
        free(p);
        return kvz_fail(err, KVZ_ENOMEM, "kvzap policy: out of memory");
    }
    p->s = s;
    p->o = *opt;
    if (!p->o.window)
        p->o.window = 128;
    p->n_layers = n_layers;
    p->D = d_model;
    p->hkv = n_kv_heads;
    *out = p;
    return KVZ_OK;
}

void kvz_prune_kvzap_free(kvz_prune_kvzap *p)
{
    if (!p)
        return;
    for (size_t l = 0; l < p->n_layers; l++)
        free(p->layer[l].score);
    free(p->layer);
    free(p->x), free(p->y), free(p->scratch), free(p->evict);
    free(p);
}

static int host_rows(kvz_prune_kvzap *p, size_t n, kvz_error *err)
{
    if (n <= p->rows)
        return KVZ_OK;
    free(p->x), free(p->y), free(p->scratch), free(p->evict);
    size_t dh = p->s->d_hidden ? p->s->d_hidden : 1;
    p->x = malloc(n * p->D * sizeof *p->x);
    p->y = malloc(n * p->hkv * sizeof *p->y);
    p->scratch = malloc(n * dh * sizeof *p->scratch);
    p->evict = malloc(n * sizeof *p->evict);
    p->rows = p->x && p->y && p->scratch && p->evict ? n : 0;
    return p->rows ? KVZ_OK : kvz_fail(err, KVZ_ENOMEM, "kvzap policy: out of memory for %zu rows", n);
}

/* Appends the chunk's scores (y [n, Hkv]) to the layer's buffer. */
static int push_scores(pending *b, size_t hkv, const float *y, size_t n, kvz_error *err)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        float *fresh = malloc(hkv * cap * sizeof *fresh);
        if (!fresh)
            return kvz_fail(err, KVZ_ENOMEM, "kvzap policy: out of memory for %zu scores", cap);
        for (size_t g = 0; g < hkv && b->n; g++)
            memcpy(fresh + g * cap, b->score + g * b->cap, b->n * sizeof *fresh);
        free(b->score);
        b->score = fresh;
        b->cap = cap;
    }
    for (size_t t = 0; t < n; t++)
        for (size_t g = 0; g < hkv; g++)
            b->score[g * b->cap + b->n + t] = y[t * hkv + g];
    b->n += n;
    return KVZ_OK;
}

int kvz_prune_kvzap_layer(void *user, size_t layer, const float *x, size_t n, size_t pos0,
                          kvz_kv_cache *cache, kvz_error *err)
{
    kvz_prune_kvzap *p = user;
    pending *b = &p->layer[layer];
    int prefill = pos0 == 0;
    if (!prefill && !p->o.decoding)
        return KVZ_OK;
    int rc = host_rows(p, n, err);
    if (rc)
        return rc;
    kvz_backend *be = kvz_kv_cache_backend(cache);
    const float *hx = x;
    if (!kvz_backend_host_memory(be)) {
        rc = kvz_backend_download(be, p->x, x, n * p->D * sizeof(float), err);
        hx = p->x;
    }
    rc = rc ? rc : kvz_surrogate_predict(p->s, layer, hx, n, p->y, p->scratch, err);
    if (rc)
        return rc;
    if (prefill) {
        b->n = 0;
        b->pos0 = 0;
    }
    rc = push_scores(b, p->hkv, p->y, n, err);
    if (rc)
        return rc;
    if (b->n > p->o.window) {
        size_t out = b->n - p->o.window;
        rc = host_rows(p, out, err);
        for (size_t g = 0; !rc && g < p->hkv; g++) {
            size_t m = 0;
            for (size_t j = 0; j < out; j++)
                if (b->score[g * b->cap + j] < p->o.tau)
                    p->evict[m++] = (int32_t)(b->pos0 + j);
            rc = kvz_kv_cache_evict(cache, layer, g, p->evict, m, err);
            memmove(b->score + g * b->cap, b->score + g * b->cap + out,
                    p->o.window * sizeof *b->score);
        }
        if (rc)
            return rc;
        b->n = p->o.window;
        b->pos0 += out;
    }
    size_t len = pos0 + n, kept = 0;
    for (size_t g = 0; g < p->hkv; g++)
        kept += kvz_kv_cache_count(cache, layer, g);
    b->ratio = (double)(p->hkv * len - kept) / (double)(p->hkv * len);
    b->seen = 1;
    return KVZ_OK;
}

double kvz_prune_kvzap_compression(const kvz_prune_kvzap *p)
{
    double sum = 0.0;
    size_t n = 0;
    for (size_t l = 0; l < p->n_layers; l++)
        if (p->layer[l].seen) {
            sum += p->layer[l].ratio;
            n++;
        }
    return n ? sum / (double)n : 0.0;
}
