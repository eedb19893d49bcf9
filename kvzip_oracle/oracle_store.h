/* oracle_store: the oracle's HDF5 dataset (format "kvzap-oracle", version 2;
 * docs/oracle-format.md), written crash-safely, sealed against damage, and
 * read back by the trainer.
 *
 * Writing (kvz_oracle_run_*): documents arrive one at a time in dataset order
 * (document index 0, 1, 2, ...). They go to shard files in "<output>.parts/":
 * shard k holds documents [k*docs_per_shard, (k+1)*docs_per_shard), is written
 * under a temporary name and renamed when full, so a finished shard is never
 * lost and an unfinished one is never mistaken for finished. Memory is one
 * document's samples plus (ridge_stats) the float64 sums, independent of corpus
 * size. The ridge sums (train split only, spec 3 "Linear") are accumulated in
 * document order and saved atomically as "<output>.parts/ridge.h5" together
 * with the number of documents they cover, right before a shard is renamed;
 * on resume, shards beyond what ridge.h5 covers are discarded and redone, so
 * the sums (and the whole dataset) are bit-identical to an uninterrupted run.
 * kvz_oracle_run_finish merges the shards into "<output>" (temporary name,
 * attribute complete = 1 written last, then rename) and removes the parts
 * directory. Resume checks that every parameter in kvz_oracle_meta matches the
 * interrupted run and says which one differs.
 *
 * Integrity (version 2): every file (shards, ridge.h5, the final dataset)
 * starts with a 512-byte HDF5 user block holding a seal written after the
 * file is closed: "KVZSEAL1", the file size, XXH3-128 of every later byte
 * (oracle_store_internal.h, kvz_h5_seal). Readers check it before libhdf5
 * parses the file; every chunked dataset carries the Fletcher-32 filter.
 * Version 1 files (no seal, no Fletcher-32) are read only unverified.
 *
 * Final file layout (all plain HDF5 types: int32/int64/uint8, IEEE float16 /
 * float32 / float64, variable-length UTF-8 strings; N samples, M documents):
 *   /                       attributes: format="kvzap-oracle", format_version=2,
 *                           complete=1, every kvz_oracle_meta field, n_samples,
 *                           n_documents, kvzap_version
 *   /samples/token_id       int32 [N]
 *   /samples/doc_index      int32 [N]   row in /documents
 *   /samples/position       int32 [N]   absolute position in the prompt sequence
 *   /samples/split          uint8 [N]   0 train, 1 test
 *   /documents/source, subset            vlen str [M]
 *   /documents/split                      uint8 [M]
 *   /documents/n_text_tokens, n_prompt_tokens, context_start, context_end,
 *             repeat_start, repeat_end, n_samples                 int32 [M]
 *   /documents/sample_start              int64 [M]   first row in /samples
 *   /layers/<l>/hidden      float16|float32 [N, D]  (when store_hidden)
 *   /layers/<l>/log_scores  float32 [N, Hkv]
 *   /ridge/<l>/xtx [D, D], xty [D, Hkv], x_sum [D], y_sum [Hkv], y_sq_sum [Hkv]
 *                           float64, attribute count (int64)  (when ridge_stats)
 * <l> is the decimal layer index ("0", "1", ...). Per-layer datasets are
 * chunked by rows (about 1 MiB per chunk) so one layer reads sequentially
 * without touching the others. Samples of one document are contiguous, in
 * ascending position. */
#ifndef KVZ_ORACLE_STORE_H
#define KVZ_ORACLE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"

#define KVZ_ORACLE_FORMAT "kvzap-oracle"
#define KVZ_ORACLE_FORMAT_VERSION 2

/* Run identity and parameters; stored as root attributes. Strings may be NULL
 * (stored as ""). Enum fields hold the config's KVZ_* values and are stored
 * as their names ("float16", "kvzip_plus"). */
typedef struct kvz_oracle_meta {
    const char *model_path, *model_architecture, *model_config_json;
    const char *tokenizer, *chat_template;
    const char *corpus, *text_field, *subset_field;
    int scoring;      /* KVZ_SCORING_* (common/config.h) */
    size_t chunk_size;
    size_t n_tokens, min_doc_tokens, max_doc_tokens;
    size_t train_docs_per_subset, test_docs_per_subset;
    int64_t seed;
    int hidden_dtype; /* KVZ_HIDDEN_* */
    int store_hidden, ridge_stats;
    size_t n_layers, d_model, n_kv_heads;
    size_t n_documents_planned; /* documents the corpus selection chose */
    const char *corpus_fingerprint; /* hash of the selected documents (sources, splits,
                                       texts): resume refuses a changed corpus */
    const char *device;    /* the engine that ran ("cpu", "cuda:0 <name>"); informational:
                              resume may continue on another device */
    const char *precision; /* "float32" or "bfloat16": resume refuses a change (files
                              written before this attribute read as "float32") */
    const char *model_sha256; /* content hash of the checkpoint's files
                                 (kvz_checkpoint_sha256): resume refuses other
                                 weights; "" in files written before it */
} kvz_oracle_meta;

/* One document's row in /documents. */
typedef struct kvz_oracle_doc_record {
    const char *source, *subset;
    int split; /* KVZ_SPLIT_* (data/corpus.h) */
    size_t n_text_tokens, n_prompt_tokens;
    size_t context_start, context_end, repeat_start, repeat_end;
} kvz_oracle_doc_record;

/* One document's samples (n >= 1). */
typedef struct kvz_oracle_doc_samples {
    size_t n;
    const int32_t *token_id;  /* [n] */
    const int32_t *position;  /* [n] ascending */
    const float *hidden;      /* [L, n, D]; needed when store_hidden or ridge_stats
                                 (only stored when store_hidden); else may be NULL */
    const float *log_scores;  /* [L, n, Hkv] */
} kvz_oracle_doc_samples;

typedef struct kvz_oracle_run kvz_oracle_run; /* opaque */

/* Starts (resume = 0) or continues (resume = 1) a run writing `output`.
 * resume = 0 fails if "<output>.parts" holds an earlier run ("... pass
 * --resume to continue it, or remove it") and if output exists (unless
 * overwrite). resume = 1 with no parts directory starts fresh; with one, meta
 * must match (KVZ_EINVAL naming the differing key). *n_docs_done: documents
 * already committed (the caller continues at that document index). Checks
 * that the output's directory is writable (KVZ_EIO naming it). */
int kvz_oracle_run_open(const char *output, const kvz_oracle_meta *meta, size_t docs_per_shard,
                        int resume, int overwrite, kvz_oracle_run **out, size_t *n_docs_done,
                        kvz_error *err);
/* Appends the next document (errors: KVZ_EINVAL for shape mismatches or
 * non-finite hidden values; KVZ_EIO for write failures such as a full disk,
 * naming the file). After an error the run must be closed; what was
 * committed stays resumable. */
int kvz_oracle_run_append(kvz_oracle_run *r, const kvz_oracle_doc_record *rec,
                          const kvz_oracle_doc_samples *s, kvz_error *err);
/* Commits the last shard, merges everything into output atomically, removes
 * the parts directory. Once output is in place the call succeeds: a parts
 * directory that cannot be removed (or no memory to remove it) is left
 * behind and named by kvz_oracle_run_warning. */
int kvz_oracle_run_finish(kvz_oracle_run *r, kvz_error *err);
/* "" or one line on what finish could not tidy up (the dataset is complete). */
const char *kvz_oracle_run_warning(const kvz_oracle_run *r);
/* Frees r; uncommitted work of an unfinished shard is dropped. */
void kvz_oracle_run_close(kvz_oracle_run *r);
/* Documents and samples committed so far (including the current shard). */
size_t kvz_oracle_run_n_documents(const kvz_oracle_run *r);
size_t kvz_oracle_run_n_samples(const kvz_oracle_run *r);

/* ---------- reading a finished dataset ---------- */

typedef struct kvz_oracle_file kvz_oracle_file; /* opaque */

typedef struct kvz_oracle_file_info {
    int format_version;
    size_t n_layers, d_model, n_kv_heads, n_samples, n_documents;
    int store_hidden, ridge_stats, hidden_dtype, scoring;
    int64_t seed;
    const char *model_path, *model_architecture, *model_config_json;
    const char *tokenizer, *chat_template; /* owned by the file handle */
    const char *model_sha256;              /* "" when the file predates it */
} kvz_oracle_file_info;

/* Errors: KVZ_EIO (cannot open), KVZ_EFORMAT ("x.h5: not a kvzap-oracle
 * dataset", "x.h5: incomplete (the run did not finish; resume it)",
 * "x.h5: format version 2, this kvzap reads version 1", missing or
 * inconsistently shaped datasets). */
int kvz_oracle_file_open(const char *path, kvz_oracle_file **out, kvz_error *err);
/* kvz_oracle_file_open with the integrity check chosen: verify = 1 (what
 * kvz_oracle_file_open does) reads the whole file once and compares it with
 * its seal before libhdf5 opens it ("x.h5: corrupt: ...", "x.h5: truncated:
 * ..."; about the cost of one sequential read: disk speed, XXH3 hashes at
 * several GB/s); verify = 0 skips the hash (the seal's recorded size is still
 * checked when there is one, and Fletcher-32 still guards every data chunk
 * read) and also reads unsealed format-1 files of older kvzap versions. */
int kvz_oracle_file_open_ex(const char *path, int verify, kvz_oracle_file **out,
                            kvz_error *err);
void kvz_oracle_file_close(kvz_oracle_file *f);
const kvz_oracle_file_info *kvz_oracle_file_get_info(const kvz_oracle_file *f);

/* Rows [row0, row0+n) of layer `layer`, converted to float32. */
int kvz_oracle_file_read_hidden(kvz_oracle_file *f, size_t layer, size_t row0, size_t n,
                                float *out /* [n, D] */, kvz_error *err);
int kvz_oracle_file_read_scores(kvz_oracle_file *f, size_t layer, size_t row0, size_t n,
                                float *out /* [n, Hkv] */, kvz_error *err);
/* Any output pointer may be NULL. */
int kvz_oracle_file_read_samples(kvz_oracle_file *f, size_t row0, size_t n, int32_t *token_id,
                                 int32_t *doc_index, int32_t *position, uint8_t *split,
                                 kvz_error *err);
/* Per-document split and sample ranges: arrays of n_documents (any may be NULL). */
int kvz_oracle_file_read_doc_table(kvz_oracle_file *f, uint8_t *split, int64_t *sample_start,
                                   int32_t *n_samples, kvz_error *err);
/* Float64 ridge sums of one layer (train split). KVZ_ENOTFOUND when the
 * dataset has no ridge statistics. */
int kvz_oracle_file_read_ridge(kvz_oracle_file *f, size_t layer, double *xtx /* [D, D] */,
                               double *xty /* [D, Hkv] */, double *x_sum /* [D] */,
                               double *y_sum /* [Hkv] */, double *y_sq_sum /* [Hkv] */,
                               int64_t *count, kvz_error *err);

#endif
