/* oracle_store_merge: builds the final dataset from the committed shards.
 * Fixed-size datasets of exactly N samples / M documents, chunked by rows
 * (about 1 MiB per chunk), filled dataset by dataset (layer by layer), shard
 * by shard, in blocks of one chunk's rows (bounded memory; no conversion,
 * the bytes are copied as stored). Written to "<parts>/final.h5.tmp" with
 * complete = 1 as the last attribute, closed, sealed (kvz_h5_seal), fsynced,
 * then renamed to the output. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oracle_store_internal.h"

#define FINAL_CHUNK_BYTES (1u << 20)

typedef struct merge_ctx {
    const char *parts;
    const kvz_ostore_progress *p;
    hid_t out;
    kvz_ostore_shard_counts *counts; /* [p->n_shards] */
    int oom; /* an allocation of kvzap's failed (the error says "out of memory") */
} merge_ctx;

/* Rows gathered from the shards into blocks of one chunk at fixed global
 * offsets, so the final file's writes (and bytes) do not depend on where the
 * shard boundaries fell. */
typedef struct block_writer {
    hid_t dst, type;
    int vlen;
    size_t cols, row_bytes, block; /* rows per block */
    size_t row0, fill;             /* global row of buf[0], rows in buf */
    unsigned char *buf;
} block_writer;

/* Frees the strings HDF5 allocated when reading the buffered rows. */
static int bw_reclaim(block_writer *w)
{
    int rc = 0;
    if (w->vlen && w->fill) {
        hsize_t dims = w->fill;
        hid_t ms = H5Screate_simple(1, &dims, NULL);
        if (ms < 0 || H5Dvlen_reclaim(w->type, ms, H5P_DEFAULT, w->buf) < 0)
            rc = -1;
        if (ms >= 0)
            H5Sclose(ms);
    }
    return rc;
}

static int bw_flush(block_writer *w)
{
    if (w->fill == 0)
        return 0;
    int rc = kvz_h5_dset_write_rows(w->dst, w->type, w->row0, w->fill, w->cols, w->buf);
    if (bw_reclaim(w) < 0)
        rc = -1;
    w->row0 += w->fill;
    w->fill = 0;
    return rc;
}

/* Appends rows [0, n) of src to the writer. */
static int bw_copy(block_writer *w, hid_t src, size_t n)
{
    for (size_t r = 0; r < n;) {
        size_t k = n - r < w->block - w->fill ? n - r : w->block - w->fill;
        if (kvz_h5_dset_read_rows(src, w->type, r, k, w->cols, w->buf + w->fill * w->row_bytes) <
            0)
            return -1;
        w->fill += k;
        r += k;
        if (w->fill == w->block && bw_flush(w) < 0)
            return -1;
    }
    return 0;
}

/* Appends dataset `sp` of shard k (which must start where the writer is). */
static int copy_from_shard(merge_ctx *c, size_t k, const kvz_ostore_dset *sp, block_writer *w)
{
    const kvz_ostore_shard_counts *sc = &c->counts[k];
    size_t dims[2], n = sp->per_doc ? sc->n_docs : sc->n_samples;
    size_t first = sp->per_doc ? sc->first_doc : sc->first_sample;
    char *path = kvz_ostore_shard_path(c->parts, k, 0);
    if (!path)
        c->oom = 1;
    hid_t f = path ? H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    hid_t src = f >= 0 ? H5Dopen2(f, sp->name, H5P_DEFAULT) : -1;
    int rc = -1;
    if (src >= 0 && first == w->row0 + w->fill && kvz_h5_dset_shape(src, dims) > 0 &&
        dims[0] == n && dims[1] == sp->cols)
        rc = bw_copy(w, src, n);
    if (src >= 0)
        H5Dclose(src);
    if (f >= 0)
        H5Fclose(f);
    free(path);
    return rc;
}

/* Every shard's counts, read once. */
static int read_counts(merge_ctx *c)
{
    c->counts = calloc(c->p->n_shards ? c->p->n_shards : 1, sizeof *c->counts);
    if (!c->counts)
        return -(c->oom = 1);
    for (size_t k = 0; k < c->p->n_shards; k++) {
        char *path = kvz_ostore_shard_path(c->parts, k, 0);
        if (!path)
            c->oom = 1;
        int rc = path ? kvz_ostore_shard_counts_read(path, &c->counts[k]) : -1;
        free(path);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int merge_dset(merge_ctx *c, const kvz_ostore_dset *sp)
{
    size_t rows = sp->per_doc ? c->p->n_docs : c->p->n_samples;
    block_writer w = {.type = kvz_ostore_kind_type(sp->kind), .cols = sp->cols};
    if (w.type < 0)
        return -1;
    w.vlen = H5Tis_variable_str(w.type) > 0;
    w.row_bytes = H5Tget_size(w.type) * (sp->cols ? sp->cols : 1);
    w.block = kvz_h5_chunk_rows(w.row_bytes, FINAL_CHUNK_BYTES);
    if (w.block > rows)
        w.block = rows ? rows : 1;
    w.buf = malloc(w.block * w.row_bytes);
    if (!w.buf)
        c->oom = 1;
    w.dst = w.buf ? kvz_h5_dset_create(c->out, sp->name, w.type, rows, sp->cols, 0, w.block) : -1;
    int rc = w.dst >= 0 ? 0 : -1;
    for (size_t k = 0; k < c->p->n_shards && rc == 0; k++)
        rc = copy_from_shard(c, k, sp, &w);
    if (rc == 0)
        rc = bw_flush(&w);
    if (rc == 0 && w.row0 != rows)
        rc = -1;
    if (rc != 0)
        bw_reclaim(&w);
    if (w.dst >= 0 && H5Dclose(w.dst) < 0)
        rc = kvz_h5_note();
    H5Tclose(w.type);
    free(w.buf);
    return rc;
}

static int write_root(hid_t f, const kvz_oracle_meta *m, const kvz_ostore_progress *p)
{
    return kvz_ostore_put_format(f, -1) < 0 || kvz_ostore_meta_put(f, m) < 0 ||
                   kvz_h5_attr_put_i64(f, "n_samples", (int64_t)p->n_samples) < 0 ||
                   kvz_h5_attr_put_i64(f, "n_documents", (int64_t)p->n_docs) < 0 ||
                   kvz_h5_attr_put_str(f, "kvzap_version", KVZ_VERSION) < 0 ||
                   kvz_ostore_create_groups(f, m->n_layers) < 0
               ? -1 : 0;
}

static int fill_file(merge_ctx *c, const kvz_oracle_meta *m, kvz_ostore_ridge *ridge)
{
    size_t n_dsets;
    kvz_ostore_dset *specs = kvz_ostore_dsets(m, &n_dsets);
    if (!specs)
        c->oom = 1;
    int rc = specs && read_counts(c) == 0 && write_root(c->out, m, c->p) == 0 ? 0 : -1;
    for (size_t i = 0; specs && i < n_dsets && rc == 0; i++)
        rc = merge_dset(c, &specs[i]);
    free(specs);
    if (rc == 0 && m->ridge_stats)
        rc = kvz_ostore_ridge_write(ridge, c->out);
    if (rc == 0) /* last: marks the file complete */
        rc = kvz_h5_attr_put_i32(c->out, "complete", 1);
    return rc;
}

/* fsync tmp, rename it to output, fsync output's directory. */
static int publish(const char *tmp, const char *output, kvz_error *err)
{
    int e = kvz_fsync_path(tmp);
    if (e)
        return kvz_fail(err, KVZ_EIO, "%s: cannot sync: %s", tmp, strerror(e));
    if (rename(tmp, output) != 0)
        return kvz_fail(err, KVZ_EIO, "%s: cannot rename into place: %s", output,
                        strerror(errno));
    char *dir = kvz_path_dirname(output);
    e = dir ? kvz_fsync_path(dir) : ENOMEM;
    free(dir);
    if (e)
        return kvz_fail(err, KVZ_EIO, "%s: cannot sync its directory: %s", output, strerror(e));
    return KVZ_OK;
}

int kvz_ostore_merge(const char *parts, const char *output, const kvz_oracle_meta *m,
                     const kvz_ostore_progress *p, kvz_ostore_ridge *ridge, kvz_error *err)
{
    char *tmp = kvz_path_join(parts, "final.h5.tmp");
    if (!tmp)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", parts);
    merge_ctx c = {parts, p, kvz_h5_create_file(tmp), NULL, 0};
    int bad = c.out < 0 || fill_file(&c, m, ridge) < 0;
    if (c.out >= 0 && H5Fclose(c.out) < 0)
        bad = kvz_h5_note();
    free(c.counts);
    int rc = !bad   ? kvz_h5_seal(tmp, err)
             : c.oom ? kvz_fail(err, KVZ_ENOMEM, "%s: out of memory building the merged dataset %s",
                                output, tmp)
                     : kvz_h5_fail(err, KVZ_EIO, output, "cannot build the merged dataset %s", tmp);
    rc = rc ? rc : publish(tmp, output, err);
    if (rc != KVZ_OK)
        unlink(tmp);
    free(tmp);
    return rc;
}
