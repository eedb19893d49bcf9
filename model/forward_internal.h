/* forward_internal: the kvz_forward struct shared by forward.c (weights,
 * lifetime) and forward_run.c (the pass). Not a public header. */
#ifndef KVZ_FORWARD_INTERNAL_H
#define KVZ_FORWARD_INTERNAL_H

#include "forward.h"

typedef struct layer_weights {
    float *in_norm, *post_norm;
    float *w_qkv, *b_qkv;     /* [(H+2Hkv)*dh, D], bias [(H+2Hkv)*dh] or NULL */
    float *q_norm, *k_norm;   /* [dh] (Qwen3) or NULL */
    float *w_o, *b_o;         /* [D, H*dh] */
    float *w_gate_up, *b_gate_up; /* [2*d_ff, D] gate rows first */
    float *w_down, *b_down;   /* [D, d_ff] */
} layer_weights;

struct kvz_forward {
    kvz_model_config cfg;
    float *weights;
    float *embed, *final_norm, *lm_head;
    layer_weights *layers;
    float *inv_freq;
    float **k_cache, **v_cache; /* per layer [cap, Hkv, dh] */
    size_t cap, n_cached, max_tokens, attn_block;
    float *scratch;
    size_t scratch_floats;
    char source[256];
};

#endif
