/* oracle_writer: the oracle's writer thread. The document loop fills a slot
 * (one document's samples and record) while the writer thread appends the
 * previous slot to the store, so computing document i+1 overlaps writing
 * document i. A bounded queue of n_slots (2: double buffering) slots, each
 * owning its sample buffers; documents are appended in submission order.
 *
 * HDF5 (Debian's serial build) is not thread-safe: while the writer runs,
 * only its thread calls the append function (which does the HDF5 work); the
 * caller must not touch the store between kvz_oracle_writer_start and
 * kvz_oracle_writer_finish.
 *
 * Errors: the first failing append stops the writer; later submissions are
 * dropped and the next kvz_oracle_writer_acquire returns that error. The
 * message is prefixed with the slot's label ("document 3 (c.jsonl:4): ..."). */
#ifndef KVZ_ORACLE_WRITER_H
#define KVZ_ORACLE_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "oracle_store.h"

/* One document in flight. Buffers are sized for n_max samples. */
typedef struct kvz_oracle_slot {
    size_t id;               /* 0 .. n_slots-1, fixed for the slot's life */
    size_t index;            /* the document's index in the corpus selection */
    char label[512];         /* prefix for errors, e.g. "document 3 (c.jsonl:4)" */
    kvz_oracle_doc_record rec; /* strings borrowed: must outlive the append */
    size_t n;                /* samples in this document (<= n_max) */
    size_t n_prompt_tokens;  /* for progress */
    int32_t *token_id;       /* [n_max] */
    int32_t *position;       /* [n_max] */
    float *hidden;           /* [L, n, D] (row stride uses n, not n_max) */
    float *scores;           /* [L, n, Hkv] */
} kvz_oracle_slot;

/* Appends one slot (the store's append). Runs on the writer thread. */
typedef int (*kvz_oracle_append_fn)(void *user, const kvz_oracle_slot *slot, kvz_error *err);
/* Waits until the slot's buffers hold their final data (e.g. a device copy
 * into them); runs on the writer thread before append. May be NULL. */
typedef int (*kvz_oracle_ready_fn)(void *user, const kvz_oracle_slot *slot, kvz_error *err);
/* Host buffer allocation for the slots (e.g. pinned memory); NULL: malloc/free. */
typedef void *(*kvz_oracle_host_alloc_fn)(void *user, size_t bytes);
typedef void (*kvz_oracle_host_free_fn)(void *user, void *p);

typedef struct kvz_oracle_writer_options {
    size_t n_slots;          /* >= 1; 0 means 2 */
    size_t n_max, n_layers, d_model, n_kv_heads;
    int with_hidden;         /* allocate hidden buffers */
    kvz_oracle_append_fn append;
    void *append_user;
    kvz_oracle_ready_fn ready;
    void *ready_user;
    kvz_oracle_host_alloc_fn host_alloc;
    kvz_oracle_host_free_fn host_free;
    void *alloc_user;
    /* Called on the writer thread just before it ends (e.g. to release the
     * thread's HDF5 error stack: a thread-safe HDF5 keeps one per thread).
     * May be NULL. */
    void (*thread_exit)(void *user);
    void *thread_exit_user;
} kvz_oracle_writer_options;

typedef struct kvz_oracle_writer kvz_oracle_writer; /* opaque */

/* Allocates the slots and starts the thread. KVZ_ENOMEM, KVZ_EINVAL. */
int kvz_oracle_writer_start(const kvz_oracle_writer_options *opt, kvz_oracle_writer **out,
                            kvz_error *err);
/* Waits for a free slot. Returns the writer's error instead once an append
 * failed (*slot is then NULL). */
int kvz_oracle_writer_acquire(kvz_oracle_writer *w, kvz_oracle_slot **slot, kvz_error *err);
/* Queues a filled slot for appending (FIFO). */
void kvz_oracle_writer_submit(kvz_oracle_writer *w, kvz_oracle_slot *slot);
/* Gives an acquired slot back unused (e.g. its document failed). */
void kvz_oracle_writer_cancel(kvz_oracle_writer *w, kvz_oracle_slot *slot);

typedef struct kvz_oracle_writer_stats {
    size_t docs_appended, samples_appended, prompt_tokens_appended;
    size_t last_index;       /* index of the last appended document */
} kvz_oracle_writer_stats;
/* What the writer has committed so far (thread-safe snapshot). */
void kvz_oracle_writer_get_stats(kvz_oracle_writer *w, kvz_oracle_writer_stats *out);

/* Appends everything submitted, stops and joins the thread. Returns the
 * first append error (KVZ_OK if none). After it the caller owns the store
 * again. Call exactly once before kvz_oracle_writer_free. */
int kvz_oracle_writer_finish(kvz_oracle_writer *w, kvz_error *err);
/* Frees the slots (finishes first if needed); NULL is fine. */
void kvz_oracle_writer_free(kvz_oracle_writer *w);

#endif
