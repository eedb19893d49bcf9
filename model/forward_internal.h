/* forward_internal: the kvz_forward struct shared by forward.c (weights,
 * lifetime) and forward_run.c (the pass). Not a public header. Every array
 * is backend memory; fp32 unless it is a kvz_buf of the forward's dtype. */
#ifndef KVZ_FORWARD_INTERNAL_H
#define KVZ_FORWARD_INTERNAL_H

#include "forward.h"

typedef struct layer_weights {
    float *in_norm, *post_norm;   /* [D] */
    kvz_buf w_qkv;                /* [(H+2Hkv)*dh, D]: q rows, then k, then v */
    float *b_qkv;                 /* [(H+2Hkv)*dh] or NULL */
    float *q_norm, *k_norm;       /* [dh] (Qwen3) or NULL */
    kvz_buf w_o;                  /* [D, H*dh] */
    float *b_o;                   /* [D] or NULL */
    kvz_buf w_gate_up;            /* [2*d_ff, D] gate rows first */
    float *b_gate_up;             /* [2*d_ff] or NULL */
    kvz_buf w_down;               /* [D, d_ff] */
    float *b_down;                /* [D] or NULL */
} layer_weights;

/* Views of the scratch for n tokens (fp32). */
typedef struct run_buffers {
    float *h;       /* [n, D] residual stream */
    float *x;       /* [n, D] normed input of a block */
    float *qkv;     /* [n, Q+2KV] */
    float *q;       /* [n, Q] */
    float *attn;    /* [n, Q] */
    float *proj;    /* [n, D] */
    float *gate_up; /* [n, 2F] */
    float *act;     /* [n, F] */
    float *lse;     /* [n, H] */
    float *kn, *vn; /* [n, KV] the chunk's keys and values (pruned forward) */
} run_buffers;

struct kvz_forward {
    kvz_model_config cfg;
    kvz_backend *be;
    kvz_dtype dtype;           /* of the weight matrices (opt.precision) */
    kvz_buf pool[2];           /* weights: [0] fp32 (norms, biases; and the matrices when
                                  dtype is fp32), [1] the matrices in dtype (bf16) */
    kvz_buf embed, lm_head;    /* [vocab, D] views (lm_head == embed when tied) */
    float *final_norm;         /* [D] */
    layer_weights *layers;     /* [n_layers] */
    kvz_buf inv_freq;          /* [dh/2] */
    kvz_buf *k_cache, *v_cache; /* per layer [cap, Hkv, dh] */
    size_t cap, n_cached, max_tokens, attn_block;
    kvz_prune_fn prune;        /* non-NULL: ragged cache below instead of k/v_cache */
    void *prune_user;
    kvz_kv_cache *ragged;
    kvz_buf scratch;           /* the run_buffers for scratch_tokens tokens */
    size_t scratch_tokens;
    run_buffers b;
    kvz_buf w_o_f32;           /* bf16: the tap's fp32 copy of one W_o */
    kvz_buf logits;            /* not host memory: [logit_rows, vocab] on the backend */
    size_t logit_rows;
    char source[256];
};

#endif
