/* mlp: float32 CPU training of one layer's MLP surrogate (spec section 3):
 *   y = W2 gelu(W1 x + b1) + b2,  W1 [Dh, D], b1 [Dh], W2 [Hkv, Dh], b2 [Hkv]
 * gelu exact (erf). The recipe mirrors the reference (skorch + torch):
 *   - init: PyTorch nn.Linear default (kaiming_uniform a=sqrt(5)), i.e. every
 *     weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from OUR RNG
 *     (below; torch's generator is not reproduced);
 *   - loss: MSE averaged over all B*Hkv outputs of a batch;
 *   - clip: torch.nn.utils.clip_grad_norm_(all params, max_norm): total L2
 *     norm g over every gradient element; grads *= min(1, max_norm/(g+1e-6));
 *   - AdamW exactly as torch.optim.AdamW (amsgrad off): p *= 1 - lr*wd (all
 *     parameters, biases included); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *     p -= (lr / (1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps);
 *   - lr: CosineAnnealingLR(T_max = epochs, eta_min = 0) stepped once per
 *     epoch: lr_e = lr0 * (1 + cos(pi e / epochs)) / 2 for epoch e = 0, 1, ...;
 *   - batches of batch_size over a shuffled permutation of the training rows,
 *     last partial batch kept (DataLoader drop_last=False);
 *   - validation split: n_val = ceil(val_fraction * n) rows (sklearn
 *     ShuffleSplit count, as skorch ValidSplit(0.05) uses), monitoring only.
 *
 * RNG (ours, documented so runs are reproducible): splitmix64. A stream is
 * seeded with seed ^ salt (salts: init 0x1417, split 0x5b17, shuffle of epoch
 * e 0x5417 + e). Uniform u in [0,1) = (next() >> 40) * 2^-24 (float32 exact);
 * a draw below k (k >= 1) is r % k for the first r = next() >= 2^64 mod k
 * (unbiased). Shuffles are Fisher-Yates from the top (i = n-1 .. 1, j = draw below
 * i+1). Init fills w1, b1, w2, b2 in that order, row-major.
 *
 * Determinism: for a fixed seed and a fixed OpenBLAS thread count the result
 * is bit-identical run to run (all reductions outside sgemm are sequential).
 * Different thread counts change sgemm's summation order, so results differ
 * in the last bits (seen at D=576, Dh=72: 1 vs 2 threads).
 *
 * Backends: the recipe is written once (mlp_train.c) on the ops of
 * ops/backend.h; kvz_mlp_train runs it on the host (cpu backend),
 * kvz_mlp_train_on on any backend (cuda: the rows live on the device and
 * every step gathers its batch there; nothing waits within an epoch). Same
 * split, same epoch orders and the same operation order on every backend;
 * float32 results agree within the budgets of tests/test_gpu_train.c. */
#ifndef KVZ_MLP_H
#define KVZ_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "../ops/backend.h"
#include "surrogate.h"

typedef struct kvz_mlp_shape {
    size_t d_in, d_hidden, d_out; /* D, Dh, Hkv */
} kvz_mlp_shape;

/* Flat parameter vector used by the single-step functions: w1, b1, w2, b2
 * contiguous in that order (row-major, nn.Linear layout). */
size_t kvz_mlp_n_params(kvz_mlp_shape s);
/* Pointers into a flat vector (any of the four may be used with
 * kvz_surrogate_layer-style code). */
kvz_surrogate_layer kvz_mlp_view(kvz_mlp_shape s, float *flat);
/* nn.Linear default init of the flat vector from `seed` (RNG above). */
void kvz_mlp_init_default(kvz_mlp_shape s, float *flat, uint64_t seed);

/* Progress after each epoch (epoch is 1-based); return nonzero to stop
 * training (kvz_mlp_train then returns KVZ_EINVAL "mlp: stopped by caller"). */
typedef int (*kvz_mlp_progress_fn)(void *ctx, size_t epoch, size_t epochs, double train_loss,
                                   double val_loss, double lr);

typedef struct kvz_mlp_options {
    size_t epochs;        /* 15 */
    size_t batch_size;    /* 512 */
    double lr;            /* 5e-3 (initial; cosine annealed to 0) */
    double beta1, beta2;  /* 0.9, 0.999 */
    double eps;           /* 1e-8 */
    double weight_decay;  /* 0.01 */
    double max_grad_norm; /* 1.0; <= 0 disables clipping */
    double val_fraction;  /* 0.05; 0 = no validation rows */
    uint64_t seed;        /* 0: init, split and shuffles */
    int init;             /* 1: initialize params from seed; 0: train from the given params */
    /* Not in the reference (default 0): with init, start b2 at the training
     * rows' per-column mean of y instead of U(+-1/sqrt(Dh)). Log-scores sit
     * near -5..-10, which AdamW at lr 5e-3 needs hundreds of steps to reach
     * through the bias alone; small datasets have few steps. */
    int init_b2_mean;
    /* Tests / reproduction: when val_rows != NULL, those n_val rows (indices
     * into x) are the validation set and the training rows are all others in
     * ascending order; otherwise the split is drawn from seed. When perms !=
     * NULL it holds epochs permutations of [0, n_train): epoch e visits the
     * training rows in the order train_rows[perms[e * n_train + k]]. */
    const size_t *val_rows;
    size_t n_val;
    const size_t *perms;
    kvz_mlp_progress_fn progress; /* NULL: none */
    void *progress_ctx;
} kvz_mlp_options;

void kvz_mlp_options_default(kvz_mlp_options *o);

/* What kvz_mlp_train records (arrays owned; kvz_mlp_log_free releases). */
typedef struct kvz_mlp_log {
    size_t n_epochs, n_steps;
    double *train_loss; /* [epochs] batch losses averaged, weighted by batch size */
    double *val_loss;   /* [epochs] MSE on the validation rows after the epoch (NaN if none) */
    double *lr;         /* [epochs] lr used during the epoch */
    double *step_loss;  /* [steps] loss of each batch before its update */
    double *grad_norm;  /* [steps] total gradient norm before clipping */
} kvz_mlp_log;

void kvz_mlp_log_free(kvz_mlp_log *log);

/* Trains one layer on in-memory rows x [n, D], y [n, Hkv]. params: the four
 * parameter arrays (e.g. kvz_surrogate_layer_at of an MLP surrogate): read as
 * the initial point when !o->init, always overwritten with the result.
 * log may be NULL. Errors: KVZ_EINVAL (shapes, options, non-finite data,
 * no training rows, bad val_rows/perms, a non-finite loss), KVZ_ENOMEM. */
int kvz_mlp_train(kvz_mlp_shape s, const float *x, const float *y, size_t n,
                  const kvz_mlp_options *o, kvz_surrogate_layer params, kvz_mlp_log *log,
                  kvz_error *err);

/* kvz_mlp_train on backend be: x [n, D] (fp32 or fp16, widened per batch)
 * and y [n, Hkv] (fp32) are backend memory; y_host is a host copy of y
 * (finiteness check, init_b2_mean; NULL when be's memory is host memory:
 * y itself). x must be finite (checked here on host-memory backends; the
 * layer reader guarantees it otherwise). GEMMs at prec (the cpu backend is
 * always fp32). params, log and the result contract are those of
 * kvz_mlp_train; errors also KVZ_EIO / KVZ_ENOMEM from the backend. */
int kvz_mlp_train_on(kvz_backend *be, kvz_mlp_shape s, kvz_buf x, kvz_buf y,
                     const float *y_host, size_t n, const kvz_mlp_options *o,
                     kvz_gemm_precision prec, kvz_surrogate_layer params, kvz_mlp_log *log,
                     kvz_error *err);

/* ---------- building blocks (a streaming source can drive these) ---------- */

/* MSE loss (float64 sum of float32 residuals) of the flat params on n rows;
 * when grad != NULL also the gradient [n_params] of that loss. Errors:
 * KVZ_EINVAL (n == 0, bad shape), KVZ_ENOMEM. */
int kvz_mlp_loss_grad(kvz_mlp_shape s, const float *flat, const float *x, const float *y,
                      size_t n, double *loss, float *grad, kvz_error *err);
/* clip_grad_norm_ on host arrays (kvz_op_clip_grad_norm of the host
 * backend): returns the total norm before clipping; scales grad by
 * min(1, max_norm/(norm+1e-6)) when max_norm > 0. */
double kvz_mlp_clip_grad(float *grad, size_t n, double max_norm);
/* One AdamW update on host arrays (kvz_op_adamw of the host backend; t:
 * 1-based step count after this update's increment). */
void kvz_mlp_adamw_step(float *param, const float *grad, float *m, float *v, size_t n, size_t t,
                        double lr, const kvz_mlp_options *o);
/* The cosine-annealed lr of 0-based epoch e. */
double kvz_mlp_epoch_lr(const kvz_mlp_options *o, size_t epoch);

#endif
