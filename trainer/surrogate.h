/* surrogate: the per-layer KVzap surrogate models (spec section 3) as one
 * object: what the trainer fills, what exports write and load, and the
 * runtime API that turns hidden states into log-scores.
 *   Linear: y = W x + b                       W [Hkv, D], b [Hkv]
 *   MLP:    y = W2 gelu(W1 x + b1) + b2       W1 [Dh, D], b1 [Dh], W2 [Hkv, Dh], b2 [Hkv]
 * gelu is the exact erf form. Row-major, PyTorch nn.Linear layout (out, in).
 * All layers' parameters live in one float32 allocation. */
#ifndef KVZ_SURROGATE_H
#define KVZ_SURROGATE_H

#include <stddef.h>

#include "../common/kvz_error.h"

enum { KVZ_SURROGATE_KIND_LINEAR = 0, KVZ_SURROGATE_KIND_MLP = 1 };

typedef struct kvz_surrogate {
    int kind;          /* KVZ_SURROGATE_KIND_* */
    size_t n_layers;   /* L: one module per model layer, in layer order */
    size_t d_in;       /* D */
    size_t d_hidden;   /* Dh (MLP); 0 for Linear */
    size_t d_out;      /* Hkv */
    float *params;     /* all layers, layer-major; see kvz_surrogate_layer */
    size_t layer_stride; /* floats per layer */
} kvz_surrogate;

/* Pointers into one layer's block (w2/b2 NULL for Linear). For Linear,
 * w1/b1 are W/b. */
typedef struct kvz_surrogate_layer {
    float *w1, *b1, *w2, *b2;
} kvz_surrogate_layer;

/* Allocates zeroed parameters. d_hidden must be 0 for Linear, > 0 for MLP. */
int kvz_surrogate_create(int kind, size_t n_layers, size_t d_in, size_t d_hidden, size_t d_out,
                         kvz_surrogate **out, kvz_error *err);
void kvz_surrogate_free(kvz_surrogate *s);
kvz_surrogate_layer kvz_surrogate_layer_at(const kvz_surrogate *s, size_t layer);

/* y[n, Hkv] = module_layer(x[n, D]), float32, BLAS sgemm. scratch: NULL
 * (allocated internally) or at least n * d_hidden floats. */
int kvz_surrogate_predict(const kvz_surrogate *s, size_t layer, const float *x, size_t n,
                          float *y, float *scratch_or_NULL, kvz_error *err);

#endif
