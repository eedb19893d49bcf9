/* layer_stream: the background layer reader of layer_stream.h: a ring of two
 * block buffers filled by one reader thread (HDF5 reads under a mutex, then
 * the finiteness check and train/test routing), handed out in order. */
#include "layer_stream.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { N_SLOTS = 2 };

typedef struct slot {
    float *buf;            /* [block_rows, D + Hkv]: x rows then y rows */
    int pinned, full;
    kvz_layer_block b;
} slot;

struct kvz_layer_stream {
    kvz_layer_stream_config c;
    size_t n_samples, D, H;
    slot slots[N_SLOTS];
    float *stage_x, *stage_y;  /* reader's HDF5 staging [block_rows, D], [block_rows, Hkv] */
    unsigned char *status;     /* [block_rows]: 0 train, 1 test, 2 skipped */
    size_t next_read, next_write;
    pthread_mutex_t lock, hdf5;
    pthread_cond_t changed;
    pthread_t thread;
    int thread_started, reader_done, stop, reader_rc;
    kvz_error reader_err;
};

static int all_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

/* status[r] for the block's n rows; the first non-finite row is an error
 * unless skipping (the message of train.c's former route_row). */
static int classify_rows(kvz_layer_stream *s, size_t layer, size_t row0, size_t n,
                         kvz_error *err)
{
    size_t D = s->D, H = s->H;
    for (size_t r = 0; r < n; r++) {
        const float *y = s->stage_y + r * H;
        int y_ok = all_finite(y, H), x_ok = !s->c.with_x || all_finite(s->stage_x + r * D, D);
        if (!y_ok || !x_ok) {
            if (!s->c.skip_non_finite)
                return kvz_fail(err, KVZ_EFORMAT,
                                "%s: layer %zu sample %zu has a NaN/Inf %s (set "
                                "train.non_finite: skip to drop such samples)",
                                s->c.dataset_name, layer, row0 + r,
                                y_ok ? "hidden state" : "log-score");
            s->status[r] = 2;
        } else
            s->status[r] = s->c.split[row0 + r] != 0;
    }
    return KVZ_OK;
}

/* Copies the block's rows of status `want` after `at` rows already in the slot. */
static size_t copy_rows(kvz_layer_stream *s, slot *sl, size_t n, unsigned char want, size_t at)
{
    size_t D = s->D, H = s->H, br = s->c.block_rows, k = at;
    float *xs = sl->buf, *ys = sl->buf + (s->c.with_x ? br * D : 0);
    for (size_t r = 0; r < n; r++) {
        if (s->status[r] != want)
            continue;
        if (s->c.with_x)
            memcpy(xs + k * D, s->stage_x + r * D, D * sizeof(float));
        memcpy(ys + k * H, s->stage_y + r * H, H * sizeof(float));
        k++;
    }
    return k - at;
}

static int read_block(kvz_layer_stream *s, size_t layer, size_t row0, size_t n, kvz_error *err)
{
    int rc = KVZ_OK;
    pthread_mutex_lock(&s->hdf5);
    if (s->c.with_x)
        rc = kvz_oracle_file_read_hidden(s->c.file, layer, row0, n, s->stage_x, err);
    rc = rc ? rc : kvz_oracle_file_read_scores(s->c.file, layer, row0, n, s->stage_y, err);
    pthread_mutex_unlock(&s->hdf5);
    return rc;
}

/* Fills slot sl with rows [row0, row0+n) of layers[li], routed. */
static int fill_slot(kvz_layer_stream *s, slot *sl, size_t li, size_t row0, size_t n,
                     kvz_error *err)
{
    size_t layer = s->c.layers[li], D = s->D, H = s->H, br = s->c.block_rows;
    int rc = read_block(s, layer, row0, n, err);
    rc = rc ? rc : classify_rows(s, layer, row0, n, err);
    if (rc)
        return rc;
    kvz_layer_block *b = &sl->b;
    memset(b, 0, sizeof *b);
    b->layer = layer;
    b->layer_index = li;
    b->row0 = row0;
    b->n_read = n;
    b->n_train = copy_rows(s, sl, n, 0, 0);
    b->n_test = copy_rows(s, sl, n, 1, b->n_train);
    b->n_skipped = n - b->n_train - b->n_test;
    float *xs = s->c.with_x ? sl->buf : NULL, *ys = sl->buf + (s->c.with_x ? br * D : 0);
    b->train_x = xs;
    b->train_y = ys;
    b->test_x = xs ? xs + b->n_train * D : NULL;
    b->test_y = ys + b->n_train * H;
    b->last_of_layer = row0 + n >= s->n_samples;
    return KVZ_OK;
}

/* Waits for slot i to be empty; 0 when stopping. */
static int wait_empty(kvz_layer_stream *s, slot *sl)
{
    pthread_mutex_lock(&s->lock);
    while (sl->full && !s->stop)
        pthread_cond_wait(&s->changed, &s->lock);
    int go = !s->stop;
    pthread_mutex_unlock(&s->lock);
    return go;
}

static void *reader_main(void *arg)
{
    kvz_layer_stream *s = arg;
    int rc = KVZ_OK;
    for (size_t li = 0; rc == KVZ_OK && li < s->c.n_layers; li++)
        for (size_t r0 = 0; rc == KVZ_OK && r0 < s->n_samples; r0 += s->c.block_rows) {
            slot *sl = &s->slots[s->next_write % N_SLOTS];
            if (!wait_empty(s, sl))
                goto out;
            size_t n = s->n_samples - r0 < s->c.block_rows ? s->n_samples - r0 : s->c.block_rows;
            rc = fill_slot(s, sl, li, r0, n, &s->reader_err);
            pthread_mutex_lock(&s->lock);
            sl->full = rc == KVZ_OK;
            s->next_write += rc == KVZ_OK;
            pthread_cond_broadcast(&s->changed);
            pthread_mutex_unlock(&s->lock);
        }
out:
    pthread_mutex_lock(&s->lock);
    s->reader_rc = rc;
    s->reader_done = 1;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static int alloc_buffers(kvz_layer_stream *s, kvz_error *err)
{
    size_t br = s->c.block_rows, D = s->c.with_x ? s->D : 0, H = s->H;
    size_t bytes = br * (D + H) * sizeof(float);
    for (int i = 0; i < N_SLOTS; i++) {
        slot *sl = &s->slots[i];
        if (s->c.staging && (sl->buf = kvz_backend_host_alloc(s->c.staging, bytes)))
            sl->pinned = 1;
        else
            sl->buf = malloc(bytes);
    }
    s->stage_x = D ? malloc(br * D * sizeof(float)) : NULL;
    s->stage_y = malloc(br * H * sizeof(float));
    s->status = malloc(br);
    if (!s->slots[0].buf || !s->slots[1].buf || (D && !s->stage_x) || !s->stage_y || !s->status)
        return kvz_fail(err, KVZ_ENOMEM, "layer reader: out of memory (%zu rows of %zu values)",
                        br, D + H);
    return KVZ_OK;
}

static void free_stream(kvz_layer_stream *s)
{
    for (int i = 0; i < N_SLOTS; i++) {
        if (s->slots[i].pinned)
            kvz_backend_host_free(s->c.staging, s->slots[i].buf);
        else
            free(s->slots[i].buf);
    }
    free(s->stage_x);
    free(s->stage_y);
    free(s->status);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->hdf5);
    pthread_cond_destroy(&s->changed);
    free(s);
}

int kvz_layer_stream_start(const kvz_layer_stream_config *c, kvz_layer_stream **out,
                           kvz_error *err)
{
    if (!out || !c || !c->file || !c->split || (!c->layers && c->n_layers) || !c->block_rows)
        return kvz_fail(err, KVZ_EINVAL, "layer reader: bad arguments");
    *out = NULL;
    kvz_layer_stream *s = calloc(1, sizeof *s);
    if (!s)
        return kvz_fail(err, KVZ_ENOMEM, "layer reader: out of memory");
    const kvz_oracle_file_info *in = kvz_oracle_file_get_info(c->file);
    s->c = *c;
    s->n_samples = in->n_samples;
    s->D = in->d_model;
    s->H = in->n_kv_heads;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->hdf5, NULL);
    pthread_cond_init(&s->changed, NULL);
    int rc = alloc_buffers(s, err), e;
    /* EAGAIN: no memory (or no thread) for it */
    if (rc == KVZ_OK && (e = pthread_create(&s->thread, NULL, reader_main, s)) != 0)
        rc = kvz_fail(err, KVZ_ENOMEM, "layer reader: cannot start the reader thread: %s%s",
                      strerror(e), e == EAGAIN ? " (out of memory or threads)" : "");
    if (rc != KVZ_OK) {
        free_stream(s);
        return rc;
    }
    s->thread_started = 1;
    *out = s;
    return KVZ_OK;
}

int kvz_layer_stream_next(kvz_layer_stream *s, kvz_layer_block *b, kvz_error *err)
{
    if (!s || !b)
        return kvz_fail(err, KVZ_EINVAL, "layer reader: NULL argument");
    slot *sl = &s->slots[s->next_read % N_SLOTS];
    pthread_mutex_lock(&s->lock);
    while (!sl->full && !s->reader_done)
        pthread_cond_wait(&s->changed, &s->lock);
    int full = sl->full, rc = s->reader_rc;
    pthread_mutex_unlock(&s->lock);
    if (full) {
        *b = sl->b;
        return KVZ_OK;
    }
    if (rc != KVZ_OK) {
        if (err)
            *err = s->reader_err;
        return rc;
    }
    return kvz_fail(err, KVZ_EINVAL, "layer reader: no block left (all layers were read)");
}

void kvz_layer_stream_release(kvz_layer_stream *s)
{
    if (!s)
        return;
    slot *sl = &s->slots[s->next_read % N_SLOTS];
    pthread_mutex_lock(&s->lock);
    if (sl->full) {
        sl->full = 0;
        s->next_read++;
        pthread_cond_broadcast(&s->changed);
    }
    pthread_mutex_unlock(&s->lock);
}

int kvz_layer_stream_pinned(const kvz_layer_stream *s)
{
    return s && s->slots[0].pinned && s->slots[1].pinned;
}

int kvz_layer_stream_read_ridge(kvz_layer_stream *s, size_t layer, double *xtx, double *xty,
                                double *x_sum, double *y_sum, double *y_sq_sum, int64_t *count,
                                kvz_error *err)
{
    if (!s)
        return kvz_fail(err, KVZ_EINVAL, "layer reader: NULL stream");
    pthread_mutex_lock(&s->hdf5);
    int rc = kvz_oracle_file_read_ridge(s->c.file, layer, xtx, xty, x_sum, y_sum, y_sq_sum, count,
                                        err);
    pthread_mutex_unlock(&s->hdf5);
    return rc;
}

void kvz_layer_stream_stop(kvz_layer_stream *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stop = 1;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    if (s->thread_started)
        pthread_join(s->thread, NULL);
    free_stream(s);
}
