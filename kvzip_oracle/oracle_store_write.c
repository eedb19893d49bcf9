/* oracle_store_write: the writing side of oracle_store.h (kvz_oracle_run_*):
 * argument and document checks, starting or resuming a run in
 * "<output>.parts/", committing a shard (close + fsync the shard, save
 * ridge.h5, rename the shard), and finish (last shard, merge, cleanup). */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/config.h"
#include "../common/kvz_file.h"
#include "../data/corpus.h"
#include "oracle_store_internal.h"

struct kvz_oracle_run {
    char *output, *parts;
    kvz_oracle_meta meta; /* strings owned by meta_strs */
    char *meta_strs[KVZ_OSTORE_META_N_STRS];
    size_t docs_per_shard;
    kvz_ostore_ridge ridge;
    kvz_ostore_progress prog; /* committed (what ridge.h5 covers) */
    kvz_ostore_shard shard;
    int shard_open, failed, finished;
    size_t n_docs, n_samples; /* including the open shard */
    char warning[KVZ_ERRMSG_MAX]; /* finish: what could not be tidied up ("" if nothing) */
};

static int check_meta(const char *output, const kvz_oracle_meta *m, size_t docs_per_shard,
                      kvz_error *err)
{
    if (!m->n_layers || !m->d_model || !m->n_kv_heads)
        return kvz_fail(err, KVZ_EINVAL, "%s: n_layers, d_model and n_kv_heads must be > 0",
                        output);
    if (docs_per_shard == 0)
        return kvz_fail(err, KVZ_EINVAL, "%s: docs_per_shard must be > 0", output);
    if (!kvz_config_enum_name("oracle.hidden_dtype", m->hidden_dtype) ||
        !kvz_config_enum_name("oracle.scoring", m->scoring))
        return kvz_fail(err, KVZ_EINVAL, "%s: unknown hidden_dtype %d or scoring %d", output,
                        m->hidden_dtype, m->scoring);
    if (m->n_layers > 100000 || m->d_model > (1u << 20) || m->n_kv_heads > (1u << 20))
        return kvz_fail(err, KVZ_EINVAL, "%s: implausible shape L=%zu D=%zu Hkv=%zu", output,
                        m->n_layers, m->d_model, m->n_kv_heads);
    return KVZ_OK;
}

static int check_output_dir(const char *output, kvz_error *err)
{
    char *dir = kvz_path_dirname(output);
    if (!dir)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", output);
    int rc = KVZ_OK;
    if (!kvz_path_is_dir(dir))
        rc = kvz_fail(err, KVZ_EIO, "%s: output directory does not exist", dir);
    else if (access(dir, W_OK | X_OK) != 0)
        rc = kvz_fail(err, KVZ_EIO, "%s: output directory is not writable: %s", dir,
                      strerror(errno));
    free(dir);
    return rc;
}

static void run_free(kvz_oracle_run *r)
{
    if (r->shard_open)
        kvz_ostore_shard_abort(&r->shard);
    kvz_ostore_ridge_free(&r->ridge);
    kvz_ostore_meta_free_strs(r->meta_strs);
    free(r->output);
    free(r->parts);
    free(r);
}

static kvz_oracle_run *run_alloc(const char *output, const kvz_oracle_meta *m, size_t dps)
{
    kvz_oracle_run *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    size_t n = strlen(output);
    r->output = strdup(output);
    r->parts = malloc(n + sizeof ".parts");
    r->docs_per_shard = dps;
    if (r->parts)
        snprintf(r->parts, n + sizeof ".parts", "%s.parts", output);
    int bad = !r->output || !r->parts || kvz_ostore_meta_copy(m, &r->meta, r->meta_strs) < 0 ||
              (m->ridge_stats &&
               kvz_ostore_ridge_init(&r->ridge, m->n_layers, m->d_model, m->n_kv_heads) < 0);
    if (bad) {
        run_free(r);
        return NULL;
    }
    return r;
}

/* Removes an earlier run's parts directory, when it holds only what the
 * store writes there (shards, ridge.h5, their temporaries, the merge's). */
static int discard_parts(const char *parts, kvz_error *err)
{
    if (!kvz_path_is_dir(parts))
        return kvz_fail(err, KVZ_EIO, "%s: exists but is not a directory", parts);
    DIR *d = opendir(parts);
    if (!d)
        return kvz_fail(err, KVZ_EIO, "%s: cannot read: %s", parts, strerror(errno));
    int rc = KVZ_OK;
    struct dirent *e;
    while (rc == KVZ_OK && (e = readdir(d))) {
        const char *n = e->d_name;
        int ours = !strcmp(n, ".") || !strcmp(n, "..") || !strncmp(n, "shard-", 6) ||
                   !strncmp(n, "ridge.h5", 8) || !strncmp(n, "final.h5", 8);
        if (!ours)
            rc = kvz_fail(err, KVZ_EINVAL,
                          "%s: holds '%s', which kvzap did not write; not removing it", parts, n);
    }
    closedir(d);
    if (rc == KVZ_OK && kvz_remove_tree(parts) != 0)
        rc = kvz_fail(err, KVZ_EIO, "%s: cannot remove the earlier run: %s", parts,
                      strerror(errno));
    return rc;
}

/* New parts directory with an empty commit record. */
static int start_fresh(kvz_oracle_run *r, int overwrite, kvz_error *err)
{
    if (kvz_path_exists(r->output) && !overwrite)
        return kvz_fail(err, KVZ_EINVAL, "%s: already exists (pass --overwrite to replace it)",
                        r->output);
    if (mkdir(r->parts, 0777) != 0)
        return kvz_fail(err, KVZ_EIO, "%s: cannot create: %s", r->parts, strerror(errno));
    return kvz_ostore_progress_save(r->parts, &r->meta, &r->prog, &r->ridge, err);
}

static int resume_parts(kvz_oracle_run *r, kvz_error *err)
{
    if (!kvz_path_is_dir(r->parts))
        return kvz_fail(err, KVZ_EIO, "%s: exists but is not a directory", r->parts);
    int rc = kvz_ostore_progress_load(r->parts, &r->meta, &r->prog, &r->ridge, err);
    if (rc == KVZ_ENOTFOUND) { /* stopped before the first commit record */
        memset(&r->prog, 0, sizeof r->prog);
        rc = kvz_ostore_parts_clean(r->parts, 0, err);
        return rc ? rc : kvz_ostore_progress_save(r->parts, &r->meta, &r->prog, &r->ridge, err);
    }
    return rc ? rc : kvz_ostore_parts_recover(r->parts, &r->prog, err);
}

int kvz_oracle_run_open(const char *output, const kvz_oracle_meta *meta, size_t docs_per_shard,
                        int resume, int overwrite, kvz_oracle_run **out, size_t *n_docs_done,
                        kvz_error *err)
{
    kvz_h5_quiet();
    *out = NULL;
    if (n_docs_done)
        *n_docs_done = 0;
    if (!output || !*output || !meta)
        return kvz_fail(err, KVZ_EINVAL, "oracle output: no path or parameters given");
    int rc = check_meta(output, meta, docs_per_shard, err);
    if (rc == KVZ_OK)
        rc = check_output_dir(output, err);
    if (rc != KVZ_OK)
        return rc;
    kvz_oracle_run *r = run_alloc(output, meta, docs_per_shard);
    if (!r)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", output);
    if (kvz_path_exists(r->parts) && !resume && overwrite)
        rc = discard_parts(r->parts, err); /* --overwrite: start over */
    if (rc != KVZ_OK)
        ;
    else if (!kvz_path_exists(r->parts))
        rc = start_fresh(r, overwrite, err);
    else if (!resume)
        rc = kvz_fail(err, KVZ_EINVAL,
                      "%s: holds an earlier, unfinished run of this output; pass --resume to "
                      "continue it, or --overwrite to discard it and start over",
                      r->parts);
    else
        rc = resume_parts(r, err);
    if (rc != KVZ_OK) {
        run_free(r);
        return rc;
    }
    r->n_docs = r->prog.n_docs;
    r->n_samples = r->prog.n_samples;
    if (n_docs_done)
        *n_docs_done = r->n_docs;
    *out = r;
    return KVZ_OK;
}

/* ---------- appending ---------- */

static int check_record(const kvz_oracle_run *r, const kvz_oracle_doc_record *rec,
                        const kvz_oracle_doc_samples *s, kvz_error *err)
{
    const kvz_oracle_meta *m = &r->meta;
    size_t doc = r->n_docs;
    int need_hidden = m->store_hidden || m->ridge_stats;
    if (!rec || !s || s->n == 0 || !s->token_id || !s->position || !s->log_scores ||
        (need_hidden && !s->hidden))
        return kvz_fail(err, KVZ_EINVAL, "%s: document %zu: missing record, samples, "
                        "token ids, positions, log-scores or hidden states", r->output, doc);
    if (rec->split != KVZ_SPLIT_TRAIN && rec->split != KVZ_SPLIT_TEST)
        return kvz_fail(err, KVZ_EINVAL, "%s: document %zu: split %d is neither train nor test",
                        r->output, doc, rec->split);
    size_t big = (size_t)INT32_MAX;
    if (s->n > big || rec->n_text_tokens > big || rec->n_prompt_tokens > big ||
        rec->context_end > big || rec->repeat_end > big || rec->context_start > big ||
        rec->repeat_start > big || r->n_docs >= big)
        return kvz_fail(err, KVZ_EINVAL, "%s: document %zu: a count exceeds int32", r->output,
                        doc);
    for (size_t i = 0; i < s->n; i++)
        if (s->position[i] < 0 || (i > 0 && s->position[i] <= s->position[i - 1]))
            return kvz_fail(err, KVZ_EINVAL,
                            "%s: document %zu: positions must be >= 0 and strictly ascending "
                            "(sample %zu has %d)",
                            r->output, doc, i, (int)s->position[i]);
    return KVZ_OK;
}

/* Non-finite hidden values, or values float16 cannot hold when stored so. */
static int check_hidden(const kvz_oracle_run *r, const kvz_oracle_doc_samples *s, kvz_error *err)
{
    const kvz_oracle_meta *m = &r->meta;
    if (!s->hidden || !(m->store_hidden || m->ridge_stats))
        return KVZ_OK;
    int f16 = m->store_hidden && m->hidden_dtype == KVZ_HIDDEN_FLOAT16;
    size_t per_layer = s->n * m->d_model;
    for (size_t i = 0; i < m->n_layers * per_layer; i++) {
        float v = s->hidden[i];
        if (isfinite(v) && !(f16 && fabsf(v) >= 65520.0f))
            continue;
        size_t l = i / per_layer, row = (i % per_layer) / m->d_model;
        if (!isfinite(v))
            return kvz_fail(err, KVZ_EINVAL, "%s: document %zu: non-finite hidden value at "
                            "layer %zu, sample %zu", r->output, r->n_docs, l, row);
        return kvz_fail(err, KVZ_EINVAL, "%s: document %zu: hidden value %g at layer %zu, "
                        "sample %zu overflows float16 (use oracle.hidden_dtype=float32)",
                        r->output, r->n_docs, (double)v, l, row);
    }
    return KVZ_OK;
}

/* close + fsync the shard, save ridge.h5 covering it, rename the shard. */
static int commit_shard(kvz_oracle_run *r, kvz_error *err)
{
    int rc = kvz_ostore_shard_close_tmp(&r->shard, err);
    if (rc != KVZ_OK)
        return rc;
    kvz_ostore_progress next = {r->n_docs, r->n_samples, r->prog.n_shards + 1};
    rc = kvz_ostore_progress_save(r->parts, &r->meta, &next, &r->ridge, err);
    if (rc != KVZ_OK)
        return rc;
    r->prog = next;
    rc = kvz_ostore_shard_publish(&r->shard, err);
    if (rc != KVZ_OK) { /* committed: the ".tmp" shard must stay for resume */
        kvz_ostore_shard_release(&r->shard);
        r->shard_open = 0;
        return rc;
    }
    r->shard_open = 0;
    return KVZ_OK;
}

static int append_doc(kvz_oracle_run *r, const kvz_oracle_doc_record *rec,
                      const kvz_oracle_doc_samples *s, kvz_error *err)
{
    if (!r->shard_open) {
        size_t dps = r->docs_per_shard, nt = r->meta.n_tokens;
        size_t hint = nt && dps <= SIZE_MAX / nt ? dps * nt : 0; /* samples <= n_tokens/doc */
        int rc = kvz_ostore_shard_begin(&r->shard, r->parts, r->prog.n_shards, &r->meta,
                                        r->n_docs, r->n_samples, hint, err);
        if (rc != KVZ_OK)
            return rc;
        r->shard_open = 1;
    }
    int rc = kvz_ostore_shard_append(&r->shard, rec, s, err);
    if (rc != KVZ_OK)
        return rc;
    if (r->meta.ridge_stats && rec->split == KVZ_SPLIT_TRAIN &&
        kvz_ostore_ridge_add(&r->ridge, s->n, s->hidden, s->log_scores) < 0)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory (ridge sums)", r->output);
    r->n_docs++;
    r->n_samples += s->n;
    return r->shard.n_docs >= r->docs_per_shard ? commit_shard(r, err) : KVZ_OK;
}

int kvz_oracle_run_append(kvz_oracle_run *r, const kvz_oracle_doc_record *rec,
                          const kvz_oracle_doc_samples *s, kvz_error *err)
{
    kvz_h5_quiet();
    if (r->failed || r->finished)
        return kvz_fail(err, KVZ_EINVAL, "%s: the run %s; close it (and resume)", r->output,
                        r->failed ? "had an error" : "is finished");
    int rc = check_record(r, rec, s, err);
    if (rc == KVZ_OK)
        rc = check_hidden(r, s, err);
    if (rc != KVZ_OK)
        return rc; /* nothing written: the run can go on */
    rc = append_doc(r, rec, s, err);
    if (rc != KVZ_OK)
        r->failed = 1;
    return rc;
}

int kvz_oracle_run_finish(kvz_oracle_run *r, kvz_error *err)
{
    kvz_h5_quiet();
    if (r->failed || r->finished)
        return kvz_fail(err, KVZ_EINVAL, "%s: the run %s", r->output,
                        r->failed ? "had an error; close it and resume" : "is already finished");
    int rc = r->shard_open ? commit_shard(r, err) : KVZ_OK;
    if (rc == KVZ_OK)
        rc = kvz_ostore_merge(r->parts, r->output, &r->meta, &r->prog, &r->ridge, err);
    if (rc != KVZ_OK) {
        r->failed = 1;
        return rc;
    }
    /* output is complete and in place: a parts directory that cannot be
     * removed is left behind with a warning, not a failure */
    kvz_error tidy = {0};
    if (kvz_ostore_parts_remove(r->parts, &tidy) != KVZ_OK)
        if (snprintf(r->warning, sizeof r->warning, "%s is complete; %s (remove it by hand)",
                     r->output, tidy.msg) >= (int)sizeof r->warning)
            memcpy(r->warning + sizeof r->warning - 4, "...", 4); /* cut: say so */
    r->finished = 1;
    return KVZ_OK;
}

const char *kvz_oracle_run_warning(const kvz_oracle_run *r)
{
    return r->warning;
}

void kvz_oracle_run_close(kvz_oracle_run *r)
{
    if (r)
        run_free(r);
}

size_t kvz_oracle_run_n_documents(const kvz_oracle_run *r)
{
    return r->n_docs;
}

size_t kvz_oracle_run_n_samples(const kvz_oracle_run *r)
{
    return r->n_samples;
}
