/* mlp_work: private to trainer/mlp*.c. The reusable batch workspace for the
 * MLP forward/backward on a backend (mlp.c), the documented splitmix64 RNG
 * (see mlp.h), and the plan of the recipe (mlp_plan.c): option checks, the
 * validation split and the epoch orders, the same on every backend. */
#ifndef KVZ_MLP_WORK_H
#define KVZ_MLP_WORK_H

#include <stddef.h>
#include <stdint.h>

#include "mlp.h"

#include "../ops/backend.h"

typedef struct kvz_mlp_work kvz_mlp_work;

/* Activations on backend be for batches of up to max_rows rows. Errors:
 * KVZ_ENOMEM (host or backend memory). */
int kvz_mlp_work_create(kvz_backend *be, kvz_mlp_shape s, size_t max_rows, kvz_mlp_work **out,
                        kvz_error *err);
void kvz_mlp_work_free(kvz_mlp_work *w);
/* kvz_mlp_loss_grad on the work's backend for 1 <= n <= max_rows rows, no
 * allocation: flat [n_params], x [n, D], y [n, Hkv], grad [n_params] (NULL:
 * the loss only) and the double *loss are backend memory; only enqueues
 * (cuda). GEMMs at prec. */
int kvz_mlp_work_loss_grad(kvz_mlp_shape s, const float *flat, const float *x, const float *y,
                           size_t n, kvz_mlp_work *w, kvz_gemm_precision prec, double *loss,
                           float *grad, kvz_error *err);

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

/* ---------- the plan: option checks, split, epoch orders, log ---------- */

/* Refuses bad kvz_mlp_options (epochs/batch_size, lr, betas, eps, weight
 * decay, clip, val_fraction) and n == 0, with "mlp: ..." messages. */
int kvz_mlp_check_options(const kvz_mlp_options *o, size_t n, kvz_error *err);

/* Which rows train and validate, and in which order an epoch visits them. */
typedef struct kvz_mlp_plan {
    size_t n, n_train, n_val;
    size_t *train_rows; /* [n_train] ascending dataset rows of the training split */
    size_t *val_rows;   /* [n_val] ascending validation rows */
    size_t *order;      /* [n_train] after kvz_mlp_plan_epoch: epoch e visits
                           train_rows[order[0]], train_rows[order[1]], ... */
} kvz_mlp_plan;

/* The split of n rows: o->val_rows when given, else ceil(val_fraction * n)
 * rows from the seeded shuffle (salt KVZ_MLP_SALT_SPLIT). Errors: KVZ_EINVAL
 * (bad val_rows, no training row left), KVZ_ENOMEM. */
int kvz_mlp_plan_create(const kvz_mlp_options *o, size_t n, kvz_mlp_plan *p, kvz_error *err);
/* p->order for 0-based epoch e: o->perms[e] when given (checked to be a
 * permutation), else the seeded shuffle (salt KVZ_MLP_SALT_SHUFFLE + e). */
int kvz_mlp_plan_epoch(kvz_mlp_plan *p, const kvz_mlp_options *o, size_t e, kvz_error *err);
void kvz_mlp_plan_free(kvz_mlp_plan *p);

/* Zeroed log arrays for epochs epochs and steps steps (freed on failure). */
int kvz_mlp_log_alloc(kvz_mlp_log *log, size_t epochs, size_t steps, kvz_error *err);

#endif
