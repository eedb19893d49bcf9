/* mlp_work: private to trainer/mlp*.c. The reusable batch workspace for the
 * MLP forward/backward, and the documented splitmix64 RNG (see mlp.h). */
#ifndef KVZ_MLP_WORK_H
#define KVZ_MLP_WORK_H

#include <stddef.h>
#include <stdint.h>

#include "mlp.h"

typedef struct kvz_mlp_work kvz_mlp_work;

/* Workspace for batches of up to max_rows rows; NULL when out of memory. */
kvz_mlp_work *kvz_mlp_work_create(kvz_mlp_shape s, size_t max_rows);
void kvz_mlp_work_free(kvz_mlp_work *w);
/* Like kvz_mlp_loss_grad for 1 <= n <= max_rows rows; no allocation. */
void kvz_mlp_work_loss_grad(kvz_mlp_shape s, const float *flat, const float *x, const float *y,
                            size_t n, kvz_mlp_work *w, double *loss, float *grad);

enum { KVZ_MLP_SALT_INIT = 0x1417, KVZ_MLP_SALT_SPLIT = 0x5b17, KVZ_MLP_SALT_SHUFFLE = 0x5417 };

static inline uint64_t kvz_mlp_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform integer in [0, k), k >= 1, unbiased (rejects r < 2^64 mod k). */
static inline uint64_t kvz_mlp_rng_below(uint64_t *state, uint64_t k)
{
    uint64_t threshold = (0 - k) % k, r;
    do
        r = kvz_mlp_rng_next(state);
    while (r < threshold);
    return r % k;
}

/* Fisher-Yates from the top: i = n-1 .. 1 swaps v[i] with v[below(i+1)]. */
static inline void kvz_mlp_rng_shuffle(uint64_t *state, size_t *v, size_t n)
{
    for (size_t i = n; i-- > 1;) {
        size_t j = (size_t)kvz_mlp_rng_below(state, (uint64_t)i + 1);
        size_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

#endif
