/* mlp_plan: the device-independent part of the MLP recipe (mlp.h): the
 * option checks, the validation split and the per-epoch row orders from the
 * documented RNG streams, plus the log, so every backend the trainer
 * (mlp_train.c) runs on refuses the same options and visits the same rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mlp_work.h"

int kvz_mlp_check_options(const kvz_mlp_options *o, size_t n, kvz_error *err)
{
    if (!o || o->epochs == 0 || o->batch_size == 0 || o->batch_size > ((size_t)1 << 24))
        return kvz_fail(err, KVZ_EINVAL, "mlp: epochs and batch_size must be >= 1");
    if (!(o->lr >= 0) || !(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1) ||
        !(o->eps >= 0) || !(o->weight_decay >= 0) || !isfinite(o->max_grad_norm) ||
        !(o->val_fraction >= 0 && o->val_fraction < 1))
        return kvz_fail(err, KVZ_EINVAL,
                        "mlp: bad optimizer options (lr %g, betas %g/%g, eps %g, weight_decay %g, "
                        "val_fraction %g)",
                        o->lr, o->beta1, o->beta2, o->eps, o->weight_decay, o->val_fraction);
    if (n < 1)
        return kvz_fail(err, KVZ_EINVAL, "mlp: no training rows");
    return KVZ_OK;
}

/* is_val[n]: 1 for validation rows, from o->val_rows or the seeded shuffle. */
static int choose_split(const kvz_mlp_options *o, kvz_mlp_plan *p, unsigned char *is_val,
                        kvz_error *err)
{
    size_t n = p->n;
    if (o->val_rows) {
        for (size_t i = 0; i < o->n_val; i++) {
            if (o->val_rows[i] >= n || is_val[o->val_rows[i]])
                return kvz_fail(err, KVZ_EINVAL,
                                "mlp: val_rows[%zu] = %zu is out of range or repeated", i,
                                o->val_rows[i]);
            is_val[o->val_rows[i]] = 1;
        }
        p->n_val = o->n_val;
    } else {
        p->n_val = (size_t)ceil(o->val_fraction * (double)n);
        size_t *perm = malloc(n * sizeof *perm);
        if (!perm)
            return kvz_fail(err, KVZ_ENOMEM, "mlp: out of memory");
        for (size_t i = 0; i < n; i++)
            perm[i] = i;
        uint64_t rng = o->seed ^ KVZ_MLP_SALT_SPLIT;
        kvz_mlp_rng_shuffle(&rng, perm, n);
        for (size_t i = 0; i < p->n_val && i < n; i++)
            is_val[perm[i]] = 1;
        free(perm);
    }
    if (p->n_val >= n)
        return kvz_fail(err, KVZ_EINVAL, "mlp: no training rows left (%zu rows, %zu validation)",
                        n, p->n_val);
    p->n_train = n - p->n_val;
    return KVZ_OK;
}

int kvz_mlp_plan_create(const kvz_mlp_options *o, size_t n, kvz_mlp_plan *p, kvz_error *err)
{
    memset(p, 0, sizeof *p);
    p->n = n;
    unsigned char *is_val = calloc(n ? n : 1, 1);
    if (!is_val)
        return kvz_fail(err, KVZ_ENOMEM, "mlp: out of memory");
    int rc = choose_split(o, p, is_val, err);
    if (!rc) {
        p->train_rows = malloc(p->n_train * sizeof *p->train_rows);
        p->val_rows = malloc((p->n_val ? p->n_val : 1) * sizeof *p->val_rows);
        p->order = malloc(p->n_train * sizeof *p->order);
        if (!p->train_rows || !p->val_rows || !p->order)
            rc = kvz_fail(err, KVZ_ENOMEM, "mlp: out of memory");
    }
    for (size_t i = 0, it = 0, iv = 0; !rc && i < n; i++) {
        if (is_val[i])
            p->val_rows[iv++] = i;
        else
            p->train_rows[it++] = i;
    }
    free(is_val);
    if (rc)
        kvz_mlp_plan_free(p);
    return rc;
}

int kvz_mlp_plan_epoch(kvz_mlp_plan *p, const kvz_mlp_options *o, size_t e, kvz_error *err)
{
    size_t nt = p->n_train;
    if (o->perms) {
        const size_t *perm = o->perms + e * nt;
        memset(p->order, 0xff, nt * sizeof *p->order); /* SIZE_MAX marks unseen */
        for (size_t k = 0; k < nt; k++) {
            if (perm[k] >= nt || p->order[perm[k]] != (size_t)-1)
                return kvz_fail(err, KVZ_EINVAL,
                                "mlp: perms of epoch %zu is not a permutation of [0, %zu) "
                                "(entry %zu = %zu)",
                                e, nt, k, perm[k]);
            p->order[perm[k]] = k;
        }
        memcpy(p->order, perm, nt * sizeof *p->order);
        return KVZ_OK;
    }
    for (size_t k = 0; k < nt; k++)
        p->order[k] = k;
    uint64_t rng = o->seed ^ (KVZ_MLP_SALT_SHUFFLE + (uint64_t)e);
    kvz_mlp_rng_shuffle(&rng, p->order, nt);
    return KVZ_OK;
}

void kvz_mlp_plan_free(kvz_mlp_plan *p)
{
    free(p->train_rows);
    free(p->val_rows);
    free(p->order);
    p->train_rows = p->val_rows = p->order = NULL;
}

int kvz_mlp_log_alloc(kvz_mlp_log *log, size_t epochs, size_t steps, kvz_error *err)
{
    memset(log, 0, sizeof *log);
    log->n_epochs = epochs;
    log->n_steps = steps;
    log->train_loss = calloc(epochs, sizeof(double));
    log->val_loss = calloc(epochs, sizeof(double));
    log->lr = calloc(epochs, sizeof(double));
    log->step_loss = calloc(steps, sizeof(double));
    log->grad_norm = calloc(steps, sizeof(double));
    if (!log->train_loss || !log->val_loss || !log->lr || !log->step_loss || !log->grad_norm) {
        kvz_mlp_log_free(log);
        return kvz_fail(err, KVZ_ENOMEM, "mlp: out of memory for the log");
    }
    return KVZ_OK;
}
