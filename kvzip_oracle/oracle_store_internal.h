/* oracle_store_internal: what the oracle_store*.c files share and nobody else
 * uses: HDF5 helpers (quiet error stack, messages with HDF5's reason, the IEEE
 * half type, attributes, row-blocked datasets), float32 -> float16 rounding,
 * the meta attribute table, the ridge accumulator, shard files and the merge.
 * Not a public API: include only from kvzip_oracle/oracle_store*.c. */
#ifndef KVZ_ORACLE_STORE_INTERNAL_H
#define KVZ_ORACLE_STORE_INTERNAL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_file.h"
#include "oracle_store.h"

/* ---------- HDF5 helpers (oracle_store_h5.c) ---------- */

/* Turns off HDF5's automatic error printing (library code never prints). */
void kvz_h5_quiet(void);
/* Remembers HDF5's current innermost reason (the first since kvz_h5_quiet)
 * for the next kvz_h5_fail; returns -1 so failure paths can return it. */
int kvz_h5_note(void);
/* kvz_fail with "<path>: <what>" plus HDF5's innermost reason when there is one. */
int kvz_h5_fail(kvz_error *err, int code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* float32 -> IEEE binary16 bits, round to nearest even (inf/NaN kept). */
uint16_t kvz_f32_to_f16_rne(float f);
/* The little-endian IEEE half type h5py uses for numpy float16 (caller closes). */
hid_t kvz_h5_half_type(void);
/* Variable-length UTF-8 string type (caller closes). */
hid_t kvz_h5_str_type(void);

/* File access / creation property lists: libver earliest..v18 (h5py and
 * h5dump read it). Object creation list with time tracking off. */
hid_t kvz_h5_fapl(void);
hid_t kvz_h5_ocpl(hid_t cls /* H5P_DATASET_CREATE or H5P_GROUP_CREATE */);
/* Truncates; the file gets a KVZ_H5_USERBLOCK-byte user block for the seal. */
hid_t kvz_h5_create_file(const char *path);

/* The integrity seal (docs/oracle-format.md "Integrity"): every HDF5 file the
 * store writes (shards, ridge.h5, the final dataset) reserves a 512-byte user
 * block (libhdf5 skips it; h5py and h5dump read such files as usual). After
 * the file is closed, kvz_h5_seal writes into it "KVZSEAL1", the file size
 * and the XXH3-128 of every byte after the block. kvz_h5_verify checks the
 * seal and the size (always: catches truncation at no cost) and, when full,
 * the hash (one sequential read of the file) BEFORE libhdf5 parses anything,
 * so a damaged file gets a clear message instead of reaching libhdf5's
 * parser (whose faults on corrupt input crash or hang the process). Fletcher-32
 * on every chunk (kvz_h5_dset_create) also catches damage to data read
 * without the full check. Not a defence against a deliberately crafted file
 * with a matching seal. kvz_h5_verify: KVZ_OK; KVZ_ENOTFOUND for an HDF5
 * file without a seal (older kvzap); KVZ_EFORMAT for a damaged, truncated or
 * foreign file; KVZ_EIO when it cannot be read. */
enum { KVZ_H5_USERBLOCK = 512 };
int kvz_h5_seal(const char *path, kvz_error *err);
int kvz_h5_verify(const char *path, int full, kvz_error *err);
hid_t kvz_h5_create_group(hid_t loc, const char *name); /* no time tracking */

/* Scalar attributes. Strings are variable-length UTF-8; NULL is stored "". */
int kvz_h5_attr_put_str(hid_t obj, const char *name, const char *value);
int kvz_h5_attr_put_i64(hid_t obj, const char *name, int64_t value);
int kvz_h5_attr_put_i32(hid_t obj, const char *name, int32_t value);
/* Readers: 0 ok, -1 missing or wrong kind, KVZ_ENOMEM when the copy of a
 * present string cannot be allocated. Strings are malloc'ed. */
int kvz_h5_attr_get_str(hid_t obj, const char *name, char **out);
int kvz_h5_attr_get_i64(hid_t obj, const char *name, int64_t *out);

/* Chunked dataset of rank 1 (cols == 0) or 2 ([rows, cols]); `extendable`
 * makes the row dimension unlimited. chunk_rows >= 1. */
hid_t kvz_h5_dset_create(hid_t loc, const char *name, hid_t type, size_t rows, size_t cols,
                         int extendable, size_t chunk_rows);
/* Rows [row0, row0+n) of a rank-1/2 dataset with `cols` columns (0 for rank 1). */
int kvz_h5_dset_write_rows(hid_t d, hid_t memtype, size_t row0, size_t n, size_t cols,
                           const void *buf);
int kvz_h5_dset_read_rows(hid_t d, hid_t memtype, size_t row0, size_t n, size_t cols, void *buf);
/* Grows an extendable dataset to row0+n rows and writes them. */
int kvz_h5_dset_append_rows(hid_t d, hid_t memtype, size_t row0, size_t n, size_t cols,
                            const void *buf);
/* Shape: returns the rank (1 or 2; -1 on error), dims[1] = 0 for rank 1. */
int kvz_h5_dset_shape(hid_t d, size_t dims[2]);
/* Rows per chunk so that one chunk is about `target_bytes`. */
size_t kvz_h5_chunk_rows(size_t row_bytes, size_t target_bytes);

/* fsync a file or directory by path (0 ok, errno on failure). */
int kvz_fsync_path(const char *path);
/* "dir" of a path ("." when it has no slash); malloc'ed. */
char *kvz_path_dirname(const char *path);

/* ---------- run parameters as attributes (oracle_store_meta.c) ---------- */

int kvz_ostore_meta_put(hid_t obj, const kvz_oracle_meta *m);
/* 0 when every stored field equals m; else 1 and "oracle.n_tokens was 500,
 * now 400" (or "... is missing") in why; KVZ_ENOMEM ("out of memory ...")
 * when a stored string cannot be copied. */
int kvz_ostore_meta_diff(hid_t obj, const kvz_oracle_meta *m, char *why, size_t why_size);
/* Fills m from the attributes (strings malloc'ed into strs[], the
 * m->string fields point at them; free with kvz_ostore_meta_free_strs).
 * Returns 0, -1 naming the missing attribute in why, or KVZ_ENOMEM ("out
 * of memory reading attribute 'x'" in why). */
#define KVZ_OSTORE_META_N_STRS 12 /* string fields of kvz_oracle_meta (checked in oracle_store_meta.c) */
int kvz_ostore_meta_get(hid_t obj, kvz_oracle_meta *m, char *strs[KVZ_OSTORE_META_N_STRS],
                        char *why, size_t why_size);
void kvz_ostore_meta_free_strs(char *strs[KVZ_OSTORE_META_N_STRS]);
/* Deep copy of m's strings into strs[] (out's strings point at them). */
int kvz_ostore_meta_copy(const kvz_oracle_meta *m, kvz_oracle_meta *out,
                         char *strs[KVZ_OSTORE_META_N_STRS]);
const char *kvz_ostore_dtype_name(int hidden_dtype);
const char *kvz_ostore_scoring_name(int scoring);

/* ---------- ridge sums (oracle_store_ridge.c) ---------- */

typedef struct kvz_ostore_ridge {
    size_t L, D, H;
    double *xtx;      /* [L, D, D] upper triangle accumulated, mirrored at save */
    double *xty;      /* [L, D, H] */
    double *x_sum;    /* [L, D] */
    double *y_sum;    /* [L, H] */
    double *y_sq_sum; /* [L, H] */
    int64_t count;    /* train rows added (same for every layer) */
    double *scratch;  /* [max rows, D + H] float64 copies of one layer */
    size_t scratch_rows;
} kvz_ostore_ridge;

int kvz_ostore_ridge_init(kvz_ostore_ridge *r, size_t L, size_t D, size_t H);
void kvz_ostore_ridge_free(kvz_ostore_ridge *r);
/* Adds one document: hidden [L, n, D], scores [L, n, H]. */
int kvz_ostore_ridge_add(kvz_ostore_ridge *r, size_t n, const float *hidden, const float *scores);
/* Writes /ridge/<l>/... under file `f` (xtx symmetrized first). */
int kvz_ostore_ridge_write(kvz_ostore_ridge *r, hid_t f);
/* Reads /ridge/<l>/... into r (sizes already set). 0 ok, -1 missing/mis-shaped. */
int kvz_ostore_ridge_read(kvz_ostore_ridge *r, hid_t f);
/* One layer's sums (any output may be NULL); 0 ok, -1 missing/mis-shaped. */
int kvz_ostore_ridge_read_layer(hid_t f, size_t l, size_t D, size_t H, double *xtx, double *xty,
                                double *x_sum, double *y_sum, double *y_sq_sum, int64_t *count);

/* ---------- the parts directory (oracle_store_parts.c) ---------- */

/* Commit record "<parts>/ridge.h5": meta, the documents, samples and shards
 * it covers and (ridge_stats) the sums. Saved atomically (tmp + rename). */
typedef struct kvz_ostore_progress {
    size_t n_docs, n_samples, n_shards;
} kvz_ostore_progress;

int kvz_ostore_progress_save(const char *parts, const kvz_oracle_meta *m,
                             const kvz_ostore_progress *p, kvz_ostore_ridge *ridge,
                             kvz_error *err);
/* Reads and validates ridge.h5 against m (KVZ_EINVAL naming the differing
 * key); loads the sums into ridge when non-NULL. KVZ_ENOTFOUND when absent. */
int kvz_ostore_progress_load(const char *parts, const kvz_oracle_meta *m,
                             kvz_ostore_progress *p, kvz_ostore_ridge *ridge, kvz_error *err);

/* Removes shards >= n_shards and every "*.tmp" file in parts. */
int kvz_ostore_parts_clean(const char *parts, size_t n_shards, kvz_error *err);
/* Checks shards 0..p->n_shards-1 (renaming a finished newest ".tmp" shard)
 * against p, then cleans the rest (oracle_store_resume.c). */
int kvz_ostore_parts_recover(const char *parts, const kvz_ostore_progress *p, kvz_error *err);
/* Removes every shard, ridge.h5 and the directory itself. */
int kvz_ostore_parts_remove(const char *parts, kvz_error *err);

/* Shard file names: "<parts>/shard-000012.h5" (malloc'ed). */
char *kvz_ostore_shard_path(const char *parts, size_t k, int tmp);

/* The datasets of a shard or final file, in a fixed order: samples/ (4),
 * documents/ (11), then per layer hidden (when store_hidden) and log_scores. */
enum { KVZ_COL_STR, KVZ_COL_U8, KVZ_COL_I32, KVZ_COL_I64, KVZ_COL_F16, KVZ_COL_F32 };
typedef struct kvz_ostore_dset {
    char name[48]; /* "samples/token_id", "layers/3/hidden" */
    int kind;      /* KVZ_COL_* */
    size_t cols;   /* 0: rank 1 */
    int per_doc;   /* rows are documents (else samples) */
} kvz_ostore_dset;
#define KVZ_OSTORE_N_SAMPLE_COLS 4
#define KVZ_OSTORE_N_DOC_COLS 11
#define KVZ_OSTORE_FIRST_LAYER_DSET (KVZ_OSTORE_N_SAMPLE_COLS + KVZ_OSTORE_N_DOC_COLS)
/* malloc'ed list (*n entries); NULL on OOM. */
kvz_ostore_dset *kvz_ostore_dsets(const kvz_oracle_meta *m, size_t *n);
/* Index of layer l's hidden / log_scores dataset in that list. */
size_t kvz_ostore_hidden_index(const kvz_oracle_meta *m, size_t l);
size_t kvz_ostore_scores_index(const kvz_oracle_meta *m, size_t l);
/* File type of a KVZ_COL_* kind (caller closes). */
hid_t kvz_ostore_kind_type(int kind);
/* Creates the groups samples/, documents/, layers/<l>/ under f. */
int kvz_ostore_create_groups(hid_t f, size_t n_layers);
/* Root attributes format, format_version, complete. */
int kvz_ostore_put_format(hid_t f, int complete);

/* Shard being written: extendable datasets under a temporary name. */
typedef struct kvz_ostore_shard {
    char *path, *tmp_path;
    hid_t file;
    kvz_ostore_dset *specs;
    hid_t *dsets; /* [n_dsets] */
    size_t n_dsets;
    const kvz_oracle_meta *meta;
    size_t first_doc, first_sample, n_docs, n_samples;
    void *buf; /* conversion / column buffer */
    size_t buf_bytes;
} kvz_ostore_shard;

int kvz_ostore_shard_begin(kvz_ostore_shard *s, const char *parts, size_t k,
                           const kvz_oracle_meta *m, size_t first_doc, size_t first_sample,
                           size_t rows_hint /* most rows expected; 0 = unknown */,
                           kvz_error *err);
int kvz_ostore_shard_append(kvz_ostore_shard *s, const kvz_oracle_doc_record *rec,
                            const kvz_oracle_doc_samples *d, kvz_error *err);
/* Writes the shard's counts, closes and fsyncs the temporary file (no rename). */
int kvz_ostore_shard_close_tmp(kvz_ostore_shard *s, kvz_error *err);
/* Renames the closed temporary file into place and fsyncs the directory. */
int kvz_ostore_shard_publish(kvz_ostore_shard *s, kvz_error *err);
/* Drops an unfinished shard (closes, removes the temporary file). */
void kvz_ostore_shard_abort(kvz_ostore_shard *s);
/* Frees the shard's memory and handles, leaving its files as they are. */
void kvz_ostore_shard_release(kvz_ostore_shard *s);

/* Shard counts as stored in its attributes; -1 when unreadable. */
typedef struct kvz_ostore_shard_counts {
    size_t first_doc, n_docs, first_sample, n_samples;
} kvz_ostore_shard_counts;
int kvz_ostore_shard_counts_read(const char *path, kvz_ostore_shard_counts *c);

/* ---------- merge (oracle_store_merge.c) ---------- */

/* Merges shards 0..n_shards-1 of `parts` into `output` (tmp name inside parts,
 * complete = 1 last, rename). */
int kvz_ostore_merge(const char *parts, const char *output, const kvz_oracle_meta *m,
                     const kvz_ostore_progress *p, kvz_ostore_ridge *ridge, kvz_error *err);

#endif
