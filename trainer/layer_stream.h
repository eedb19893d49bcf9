/* layer_stream: the trainer's layer reader. A background thread reads the
 * selected layers of an oracle dataset in order, in row blocks (hidden
 * states + log-scores), checks every row for NaN/Inf (refused or skipped as
 * train.non_finite says) and routes it to the train or test split, into a
 * ring of two block buffers (the staging host memory of a backend when
 * asked: pinned on cuda; malloc otherwise). The consumer takes blocks in order and gives
 * each back when done, so the reader works on the NEXT blocks (across the
 * layer boundary) while the consumer uploads or trains.
 *
 * HDF5 (Debian's serial build) is not thread-safe: while a stream runs, every
 * HDF5 call of the trainer goes through the stream's mutex (the reader's
 * reads, and kvz_layer_stream_read_ridge for the consumer). */
#ifndef KVZ_LAYER_STREAM_H
#define KVZ_LAYER_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "../kvzip_oracle/oracle_store.h"
#include "../ops/backend.h"

typedef struct kvz_layer_stream_config {
    kvz_oracle_file *file;    /* read only through the stream while it runs */
    const char *dataset_name; /* for messages */
    const uint8_t *split;     /* [n_samples] 0 train, 1 test */
    const size_t *layers;     /* layers to read, in this order */
    size_t n_layers;
    int with_x;               /* read hidden states (else scores only) */
    int skip_non_finite;      /* 0: a NaN/Inf row is an error; 1: it is dropped */
    size_t block_rows;        /* dataset rows per block (>= 1) */
    kvz_backend *staging;     /* block buffers from kvz_backend_host_alloc of this
                                 backend (pinned on cuda); NULL: malloc */
} kvz_layer_stream_config;

/* One block: dataset rows [row0, row0 + n_read) of `layer`, routed. The
 * arrays stay valid until kvz_layer_stream_release. */
typedef struct kvz_layer_block {
    size_t layer, layer_index;   /* dataset layer; position in config.layers */
    size_t row0, n_read;
    size_t n_train, n_test, n_skipped;
    const float *train_x, *train_y; /* [n_train, D] (NULL without x), [n_train, Hkv] */
    const float *test_x, *test_y;   /* [n_test, D], [n_test, Hkv] */
    int last_of_layer;
} kvz_layer_block;

typedef struct kvz_layer_stream kvz_layer_stream;

/* Starts the reader thread. Errors: KVZ_EINVAL, KVZ_ENOMEM, KVZ_EIO. */
int kvz_layer_stream_start(const kvz_layer_stream_config *c, kvz_layer_stream **out,
                           kvz_error *err);
/* The next block (waits for it). A read or non-finite error of the reader
 * arrives here, after the blocks read before it, with the reader's message
 * (e.g. "x.h5: layer 3 sample 17 has a NaN/Inf log-score (set
 * train.non_finite: skip to drop such samples)"). KVZ_EINVAL past the end. */
int kvz_layer_stream_next(kvz_layer_stream *s, kvz_layer_block *b, kvz_error *err);
/* Gives the block of the last kvz_layer_stream_next back to the reader. */
void kvz_layer_stream_release(kvz_layer_stream *s);
/* 1 when the block buffers came from config.staging (pinned on cuda). */
int kvz_layer_stream_pinned(const kvz_layer_stream *s);
/* kvz_oracle_file_read_ridge under the stream's HDF5 mutex. */
int kvz_layer_stream_read_ridge(kvz_layer_stream *s, size_t layer, double *xtx, double *xty,
                                double *x_sum, double *y_sum, double *y_sq_sum, int64_t *count,
                                kvz_error *err);
/* Stops the reader (it may be mid-layer), joins it and frees; NULL is fine. */
void kvz_layer_stream_stop(kvz_layer_stream *s);

#endif
