/* oracle: the harvest loop behind `kvzap oracle` (see oracle.h). Reads top
 * to bottom: open the model on its engine (oracle_engine.h: cpu or cuda),
 * tokenizer and chat template; select the corpus; open (or resume) the
 * crash-safe store; then per document: read its text, build the prompt,
 * sample positions, score into a writer slot and hand it to the writer
 * thread (oracle_writer.h), which appends it while the next document is
 * scored; finally (writer joined) merge. */
#include "oracle.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <hdf5.h>

#include "../common/kvz_file.h"
#include "../data/corpus.h"
#include "../ops/backend.h"
#include "../model/chat_template.h"
#include "../model/checkpoint.h"
#include "../model/forward.h"
#include "../model/tokenizer.h"
#include "kvzip_chunked.h"
#include "oracle_doc.h"
#include "oracle_engine.h"
#include "oracle_store.h"
#include "oracle_writer.h"

typedef struct harvest {
    const kvz_run_config *cfg;
    const kvz_oracle_options *opt;
    char *output;             /* final .h5 path */
    kvz_checkpoint *ck;
    kvz_oracle_engine *engine;
    int device;               /* resolved KVZ_DEVICE_CPU / KVZ_DEVICE_CUDA */
    kvz_tokenizer *tok;
    kvz_chat_template *tpl;
    const kvz_model_config *mc;
    char *config_json;
    char fingerprint[17];     /* of the selected documents, hex */
    kvz_corpus *corpus;
    kvz_oracle_run *run;
    char model_sha256[65];    /* kvz_checkpoint_sha256 of model.path */
    size_t max_samples;       /* min(oracle.n_tokens, longest selected document + slack) */
    size_t *positions;        /* [max_samples] the document being scored */
    size_t samples0;          /* samples committed before this run */
    kvz_oracle_progress prog;
    double t0, t_loop0, t_loop1; /* call start; document loop start/end */
} harvest;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void report(harvest *h, kvz_oracle_phase phase)
{
    h->prog.phase = phase;
    h->prog.elapsed_s = now_s() - h->t0;
    if (h->opt->progress)
        h->opt->progress(&h->prog, h->opt->user);
}

/* ---------- setup ---------- */

/* "<output>" or "<output>.h5" when it has no .h5/.hdf5/.hdf extension. */
static char *final_output_path(const char *output)
{
    size_t n = strlen(output);
    const char *exts[] = {".h5", ".hdf5", ".hdf"};
    for (size_t i = 0; i < 3; i++) {
        size_t e = strlen(exts[i]);
        if (n > e && strcmp(output + n - e, exts[i]) == 0)
            return strdup(output);
    }
    char *p = malloc(n + 4);
    if (p)
        memcpy(p, output, n), memcpy(p + n, ".h5", 4);
    return p;
}

/* mkdir -p of the directory holding path. */
static int make_parent_dirs(const char *path, kvz_error *err)
{
    char *dir = strdup(path);
    if (!dir)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory");
    char *slash = strrchr(dir, '/');
    int rc = KVZ_OK;
    if (slash && slash != dir) {
        *slash = '\0';
        /* every prefix ending before a '/', then the whole directory */
        for (char *p = strchr(dir + 1, '/'); rc == KVZ_OK; p = strchr(p + 1, '/')) {
            if (p)
                *p = '\0';
            if (mkdir(dir, 0777) != 0 && errno != EEXIST)
                rc = kvz_fail(err, KVZ_EIO, "%s: cannot create directory '%s': %s", path, dir,
                              strerror(errno));
            else if (!kvz_path_is_dir(dir))
                rc = kvz_fail(err, KVZ_EIO, "%s: '%s' exists and is not a directory", path, dir);
            if (!p)
                break;
            *p = '/';
        }
    }
    free(dir);
    return rc;
}

static int wants_hidden(const kvz_run_config *cfg)
{
    return cfg->oracle.store_hidden || cfg->oracle.ridge_stats;
}

/* model.device auto: cuda when a real device is there and the scoring runs
 * on it (chunked scoring is CPU only), else cpu. The CPU emulator of CUDA
 * builds with KVZ_CUDA_EMU is a test device: only an explicit cuda uses it. */
static int resolve_device(const kvz_run_config *cfg)
{
    if (cfg->model.device != KVZ_DEVICE_AUTO)
        return cfg->model.device;
    if (cfg->oracle.scoring == KVZ_SCORING_CHUNKED ||
        kvz_backend_auto_kind() != KVZ_BACKEND_CUDA)
        return KVZ_DEVICE_CPU;
    return KVZ_DEVICE_CUDA;
}

enum { MAX_SAMPLES_SLACK = 64 };

static int open_engine(harvest *h, kvz_error *err)
{
    const kvz_run_config *cfg = h->cfg;
    kvz_oracle_engine_options eo = {h->device,         cfg->model.precision,
                                    cfg->model.threads, cfg->oracle.scoring,
                                    2,                  h->max_samples,
                                    wants_hidden(cfg)};
    int rc = kvz_oracle_engine_open(h->ck, &eo, &h->engine, err);
    if (rc == KVZ_OK) { /* the engine holds its own weights: unmap the checkpoint */
        h->mc = kvz_oracle_engine_config(h->engine);
        h->prog.device = kvz_oracle_engine_device(h->engine);
        h->prog.precision = kvz_oracle_engine_precision(h->engine);
        kvz_checkpoint_close(h->ck);
        h->ck = NULL;
    }
    return rc;
}

static int open_model(harvest *h, kvz_error *err)
{
    const kvz_run_config *cfg = h->cfg;
    h->device = resolve_device(cfg);
    int rc = kvz_checkpoint_open(cfg->model.path, &h->ck, err);
    if (rc)
        return rc;
    h->mc = kvz_checkpoint_config(h->ck);
    /* provenance: which exact weights (dataset attribute model_sha256) */
    rc = kvz_checkpoint_sha256(h->ck, h->model_sha256, NULL, err);
    if (rc)
        return rc;
    const char *tok_path = cfg->model.tokenizer ? cfg->model.tokenizer : cfg->model.path;
    const char *family = cfg->model.chat_template;
    if (family && strcmp(family, "auto") == 0)
        family = NULL;
    rc = kvz_tokenizer_load(tok_path, &h->tok, err);
    rc = rc ? rc : kvz_chat_template_load(cfg->model.path, family, &h->tpl, err);
    return rc;
}

/* After the corpus is selected: the engine, sized for the most samples a
 * selected document can give (not oracle.n_tokens, which may be far larger
 * than any document), and the model config JSON. */
static int start_engine(harvest *h, kvz_error *err)
{
    size_t longest = 0;
    for (size_t i = 0; i < kvz_corpus_count(h->corpus); i++) {
        size_t n = kvz_corpus_doc_at(h->corpus, i)->n_tokens;
        longest = n > longest ? n : longest;
    }
    /* |P| <= the document's own token count plus what the chat template's
     * boundaries can add (a few tokens); harvest_document checks it */
    size_t n_tokens = h->cfg->oracle.n_tokens ? h->cfg->oracle.n_tokens : 1;
    h->max_samples = longest + MAX_SAMPLES_SLACK < n_tokens ? longest + MAX_SAMPLES_SLACK : n_tokens;
    int rc = open_engine(h, err);
    if (rc == KVZ_OK && !(h->config_json = kvz_model_config_to_json(h->mc)))
        rc = kvz_fail(err, KVZ_ENOMEM, "out of memory");
    if (rc == KVZ_OK)
        report(h, KVZ_ORACLE_STARTING);
    return rc;
}

static int select_corpus(harvest *h, kvz_error *err)
{
    const kvz_run_config *cfg = h->cfg;
    kvz_corpus_options co = {cfg->oracle.corpus,
                             cfg->oracle.text_field,
                             cfg->oracle.subset_field,
                             cfg->oracle.min_doc_tokens,
                             cfg->oracle.max_doc_tokens,
                             cfg->oracle.train_docs_per_subset,
                             cfg->oracle.test_docs_per_subset,
                             (uint64_t)cfg->oracle.seed};
    report(h, KVZ_ORACLE_SELECTING);
    int rc = kvz_corpus_select(&co, h->tok, &h->corpus, err);
    if (rc == KVZ_OK)
        h->prog.docs_total = kvz_corpus_count(h->corpus);
    return rc;
}

static uint64_t fnv1a(uint64_t hash, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        hash = (hash ^ p[i]) * 0x100000001B3ull;
    return hash;
}

/* FNV-1a over every selected document's source, subset, split and text, so
 * --resume notices a corpus edited between runs. Reads each text once. */
static int corpus_fingerprint(harvest *h, kvz_error *err)
{
    uint64_t hash = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < kvz_corpus_count(h->corpus); i++) {
        const kvz_corpus_doc *d = kvz_corpus_doc_at(h->corpus, i);
        char *text = NULL;
        size_t len = 0;
        int rc = kvz_corpus_read_text(h->corpus, i, &text, &len, err);
        if (rc)
            return rc;
        hash = fnv1a(hash, d->source, strlen(d->source) + 1);
        hash = fnv1a(hash, d->subset, strlen(d->subset) + 1);
        hash = fnv1a(hash, &d->split, sizeof d->split);
        hash = fnv1a(hash, text, len);
        free(text);
    }
    snprintf(h->fingerprint, sizeof h->fingerprint, "%016llx", (unsigned long long)hash);
    return KVZ_OK;
}

static void fill_meta(const harvest *h, kvz_oracle_meta *m)
{
    const kvz_run_config *cfg = h->cfg;
    memset(m, 0, sizeof *m);
    m->model_path = cfg->model.path;
    m->model_sha256 = h->model_sha256;
    m->model_architecture = h->mc->architecture;
    m->model_config_json = h->config_json;
    m->tokenizer = kvz_tokenizer_describe(h->tok);
    m->chat_template = kvz_chat_family_name(kvz_chat_template_family(h->tpl));
    m->corpus = cfg->oracle.corpus;
    m->text_field = cfg->oracle.text_field;
    m->subset_field = cfg->oracle.subset_field;
    m->scoring = cfg->oracle.scoring;
    m->chunk_size = cfg->oracle.chunk_size;
    m->n_tokens = cfg->oracle.n_tokens;
    m->min_doc_tokens = cfg->oracle.min_doc_tokens;
    m->max_doc_tokens = cfg->oracle.max_doc_tokens;
    m->train_docs_per_subset = cfg->oracle.train_docs_per_subset;
    m->test_docs_per_subset = cfg->oracle.test_docs_per_subset;
    m->seed = cfg->oracle.seed;
    m->hidden_dtype = cfg->oracle.hidden_dtype;
    m->store_hidden = cfg->oracle.store_hidden;
    m->ridge_stats = cfg->oracle.ridge_stats;
    m->n_layers = h->mc->n_layers;
    m->d_model = h->mc->d_model;
    m->n_kv_heads = h->mc->n_kv_heads;
    m->n_documents_planned = kvz_corpus_count(h->corpus);
    m->corpus_fingerprint = h->fingerprint;
    m->device = kvz_oracle_engine_device(h->engine);
    m->precision = kvz_oracle_engine_precision(h->engine);
}

static int alloc_buffers(harvest *h, kvz_error *err)
{
    size_t n = h->max_samples;
    h->positions = malloc((n ? n : 1) * sizeof *h->positions);
    if (!h->positions)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory (%zu samples)", n);
    return KVZ_OK;
}

/* ---------- one document ---------- */

/* The scored sequence, whichever scoring mode built it. */
typedef struct doc_prompt {
    kvz_oracle_prompt single;
    kvz_chunked_prompt chunked;
    const int32_t *ids;
    size_t n_ids, p0, p1, r0, r1;
} doc_prompt;

static int build_prompt(harvest *h, const char *text, size_t len, doc_prompt *dp,
                        kvz_error *err)
{
    memset(dp, 0, sizeof *dp);
    if (h->cfg->oracle.scoring == KVZ_SCORING_CHUNKED) {
        int rc = kvz_chunked_prompt_build(h->tok, h->tpl, text, len, &dp->chunked, err);
        dp->ids = dp->chunked.ids;
        dp->n_ids = dp->chunked.n_ids;
        dp->p0 = dp->chunked.context_start;
        dp->p1 = dp->chunked.context_end;
        return rc;
    }
    int rc = kvz_oracle_prompt_build(h->tok, h->tpl, text, len, &dp->single, err);
    dp->ids = dp->single.ids;
    dp->n_ids = dp->single.n_ids;
    dp->p0 = dp->single.context_start;
    dp->p1 = dp->single.context_end;
    dp->r0 = dp->single.repeat_start;
    dp->r1 = dp->single.repeat_end;
    return rc;
}

static void free_prompt(doc_prompt *dp)
{
    kvz_oracle_prompt_free(&dp->single);
    kvz_chunked_prompt_free(&dp->chunked);
}

/* Spec 2: "the first 4 context positions get score 1.0" (log-score 0).
 * kvzip_chunked.c follows kvpress, which forces absolute positions 0..3
 * (template tokens for chat models) instead; the dataset follows the spec. */
static void force_first_context_scores(harvest *h, const doc_prompt *dp, size_t n,
                                       float *scores)
{
    size_t L = h->mc->n_layers, Hkv = h->mc->n_kv_heads;
    for (size_t s = 0; s < n && h->positions[s] < dp->p0 + 4; s++)
        for (size_t l = 0; l < L; l++)
            for (size_t k = 0; k < Hkv; k++)
                scores[(l * n + s) * Hkv + k] = 0.0f;
}

/* Scores into the slot's buffers (complete once the engine says the slot is
 * ready: at once on the CPU, after the device copy on cuda). */
static int score_prompt(harvest *h, const doc_prompt *dp, size_t n, kvz_oracle_slot *slot,
                        kvz_error *err)
{
    float *hidden = wants_hidden(h->cfg) ? slot->hidden : NULL;
    if (h->cfg->oracle.scoring == KVZ_SCORING_CHUNKED) {
        kvz_forward *fwd = kvz_oracle_engine_cpu_forward(h->engine);
        if (!fwd)
            return kvz_fail(err, KVZ_EUNSUPPORTED,
                            "oracle.scoring=chunked runs on the CPU only; use --device cpu");
        int rc = kvz_kvzip_chunked_score(fwd, h->tok, &dp->chunked, h->cfg->oracle.chunk_size,
                                         h->positions, n, hidden, slot->scores, err);
        if (rc == KVZ_OK)
            force_first_context_scores(h, dp, n, slot->scores);
        return rc;
    }
    return kvz_oracle_engine_score(h->engine, &dp->single, h->positions, n, hidden,
                                   slot->scores, slot->id, err);
}

/* Everything but the scores: ids, positions, the documents-table row. */
static void fill_slot(const kvz_corpus_doc *doc, size_t index, const doc_prompt *dp,
                      const size_t *positions, size_t n, kvz_oracle_slot *slot)
{
    for (size_t s = 0; s < n; s++) {
        slot->token_id[s] = dp->ids[positions[s]];
        slot->position[s] = (int32_t)positions[s];
    }
    kvz_oracle_doc_record rec = {doc->source, doc->subset, doc->split, doc->n_tokens,
                                 dp->n_ids,   dp->p0,      dp->p1,     dp->r0,
                                 dp->r1};
    slot->rec = rec;
    slot->index = index;
    slot->n = n;
    slot->n_prompt_tokens = dp->n_ids;
    snprintf(slot->label, sizeof slot->label, "document %zu (%s)", index, doc->source);
}

/* Runs on the writer thread: the store's append. */
static int append_slot(void *user, const kvz_oracle_slot *slot, kvz_error *err)
{
    harvest *h = user;
    if (h->opt->dry_run) /* the timed pass of a dry run stores nothing */
        return KVZ_OK;
    kvz_oracle_doc_samples smp = {slot->n, slot->token_id, slot->position, slot->hidden,
                                  slot->scores};
    return kvz_oracle_run_append(h->run, &slot->rec, &smp, err);
}

/* Runs on the writer thread: the engine's results are in the slot. */
static int slot_ready(void *user, const kvz_oracle_slot *slot, kvz_error *err)
{
    harvest *h = user;
    return kvz_oracle_engine_ready(h->engine, slot->id, err);
}

/* Runs on the writer thread as it ends. Debian's HDF5 is built thread-safe:
 * each thread has its own error stack, and a failed write leaves entries
 * that the thread's exit would leak; clear them here. */
static void writer_thread_exit(void *user)
{
    (void)user;
    H5Eclear2(H5E_DEFAULT);
}

/* Computes document `index` into slot (not yet submitted). */
static int harvest_document(harvest *h, size_t index, kvz_oracle_slot *slot, kvz_error *err)
{
    const kvz_corpus_doc *doc = kvz_corpus_doc_at(h->corpus, index);
    char *text = NULL;
    size_t len = 0, n = 0;
    doc_prompt dp;
    memset(&dp, 0, sizeof dp);
    int rc = kvz_corpus_read_text(h->corpus, index, &text, &len, err);
    rc = rc ? rc : build_prompt(h, text, len, &dp, err);
    size_t want = rc ? 0 : dp.p1 - dp.p0 < h->cfg->oracle.n_tokens ? dp.p1 - dp.p0
                                                                   : h->cfg->oracle.n_tokens;
    if (rc == KVZ_OK && want > h->max_samples) /* the slack of start_engine was too small */
        rc = kvz_fail(err, KVZ_EUNSUPPORTED,
                      "its context has %zu tokens in the chat template but the buffers hold "
                      "%zu samples (its own count was %zu): please report this",
                      dp.p1 - dp.p0, h->max_samples, doc->n_tokens);
    if (rc == KVZ_OK) {
        n = kvz_oracle_sample_positions(dp.p0, dp.p1, h->cfg->oracle.n_tokens,
                                        (uint64_t)h->cfg->oracle.seed, doc->key, h->positions);
        rc = score_prompt(h, &dp, n, slot, err);
    }
    if (rc == KVZ_OK)
        fill_slot(doc, index, &dp, h->positions, n, slot);
    if (rc && err) {
        char msg[KVZ_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", err->msg);
        kvz_fail(err, rc, "document %zu (%s): %s", index, doc->source, msg);
    }
    free_prompt(&dp);
    free(text);
    return rc;
}

/* ---------- the job ---------- */

/* Progress = what the writer has committed; reported when it changed. */
static void update_progress(harvest *h, kvz_oracle_writer *w, size_t first)
{
    kvz_oracle_writer_stats st;
    kvz_oracle_writer_get_stats(w, &st);
    if (first + st.docs_appended == h->prog.docs_done)
        return;
    h->prog.docs_done = first + st.docs_appended;
    h->prog.samples_written = h->samples0 + st.samples_appended;
    h->prog.tokens_this_run = st.prompt_tokens_appended;
    h->prog.current_source = kvz_corpus_doc_at(h->corpus, st.last_index)->source;
    report(h, KVZ_ORACLE_HARVESTING);
    h->t_loop1 = now_s();
}

static int start_writer(harvest *h, kvz_oracle_writer **w, kvz_error *err)
{
    kvz_oracle_writer_options wo = {0};
    wo.n_slots = 2;
    wo.n_max = h->max_samples;
    wo.n_layers = h->mc->n_layers;
    wo.d_model = h->mc->d_model;
    wo.n_kv_heads = h->mc->n_kv_heads;
    wo.with_hidden = wants_hidden(h->cfg);
    wo.append = append_slot, wo.append_user = h;
    wo.ready = slot_ready, wo.ready_user = h;
    wo.host_alloc = kvz_oracle_engine_host_alloc;
    wo.host_free = kvz_oracle_engine_host_free;
    wo.alloc_user = h->engine;
    wo.thread_exit = writer_thread_exit;
    return kvz_oracle_writer_start(&wo, w, err);
}

/* Documents [first, end): scored here, appended by the writer thread, which
 * owns the store until kvz_oracle_writer_finish returns. */
static int pipeline_documents(harvest *h, size_t first, size_t end, kvz_error *err)
{
    kvz_oracle_writer *w = NULL;
    int rc = start_writer(h, &w, err);
    if (rc)
        return rc;
    for (size_t i = first; rc == KVZ_OK && i < end; i++) {
        kvz_oracle_slot *slot = NULL;
        rc = kvz_oracle_writer_acquire(w, &slot, err);
        if (rc)
            break;
        update_progress(h, w, first);
        rc = harvest_document(h, i, slot, err);
        if (rc)
            kvz_oracle_writer_cancel(w, slot);
        else
            kvz_oracle_writer_submit(w, slot);
    }
    kvz_error werr = {0};
    int wrc = kvz_oracle_writer_finish(w, &werr); /* drains: earlier documents commit */
    if (rc == KVZ_OK && wrc != KVZ_OK) {
        rc = wrc;
        if (err)
            *err = werr;
    }
    update_progress(h, w, first);
    kvz_oracle_writer_free(w);
    return rc;
}

static int run_documents(harvest *h, size_t first, kvz_oracle_summary *sum, kvz_error *err)
{
    size_t total = kvz_corpus_count(h->corpus), end = total;
    if (h->opt->stop_after_docs && first + h->opt->stop_after_docs < total)
        end = first + h->opt->stop_after_docs; /* testing hook: leave the run resumable */
    h->prog.docs_done = h->prog.docs_resumed = first;
    h->samples0 = h->prog.samples_written = kvz_oracle_run_n_samples(h->run);
    report(h, KVZ_ORACLE_HARVESTING);
    h->t_loop0 = now_s();
    int rc = pipeline_documents(h, first, end, err);
    if (rc != KVZ_OK || end < total)
        return rc;
    report(h, KVZ_ORACLE_MERGING);
    rc = kvz_oracle_run_finish(h->run, err);
    if (rc == KVZ_OK) {
        sum->finished = 1;
        snprintf(sum->warning, sizeof sum->warning, "%s", kvz_oracle_run_warning(h->run));
        report(h, KVZ_ORACLE_DONE);
    }
    return rc;
}

/* --dry-run: every selected document's prompt (template + tokenizer) for
 * the counts, then a timed pass over the first documents through the real
 * pipeline with appends switched off. Sizes follow docs/oracle-format.md
 * (chunk and HDF5 overhead not counted: a few percent). */
static int dry_run(harvest *h, kvz_oracle_plan *p, kvz_error *err)
{
    const kvz_run_config *cfg = h->cfg;
    size_t L = h->mc->n_layers, D = h->mc->d_model, H = h->mc->n_kv_heads, n = kvz_corpus_count(h->corpus);
    memset(p, 0, sizeof *p);
    double per_doc_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const kvz_corpus_doc *doc = kvz_corpus_doc_at(h->corpus, i);
        char *text = NULL;
        size_t len = 0;
        doc_prompt dp;
        memset(&dp, 0, sizeof dp);
        int rc = kvz_corpus_read_text(h->corpus, i, &text, &len, err);
        rc = rc ? rc : build_prompt(h, text, len, &dp, err);
        if (rc == KVZ_OK) {
            size_t ctx = dp.p1 - dp.p0;
            p->samples += ctx < cfg->oracle.n_tokens ? ctx : cfg->oracle.n_tokens;
            p->prompt_tokens += dp.n_ids;
            per_doc_bytes += 45.0 + (double)strlen(doc->source) + strlen(doc->subset);
        }
        free_prompt(&dp);
        free(text);
        if (rc) {
            char msg[KVZ_ERRMSG_MAX];
            snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
            return kvz_fail(err, rc, "document %zu (%s): %s", i, doc->source, msg);
        }
        size_t s = 0;
        while (s < p->n_subsets && strcmp(p->subsets[s].name, doc->subset))
            s++;
        if (s == p->n_subsets && s < KVZ_ORACLE_PLAN_MAX_SUBSETS)
            snprintf(p->subsets[p->n_subsets++].name, sizeof p->subsets[0].name, "%s",
                     doc->subset);
        if (s < KVZ_ORACLE_PLAN_MAX_SUBSETS) {
            if (doc->split == KVZ_SPLIT_TEST)
                p->subsets[s].test_docs++;
            else
                p->subsets[s].train_docs++;
        }
    }
    p->n_docs = n;
    double hid = cfg->oracle.hidden_dtype == KVZ_HIDDEN_FLOAT32 ? 4.0 : 2.0;
    double ridge = cfg->oracle.ridge_stats ? 8.0 * (double)L * (double)(D * D + D * H + D + 2 * H) : 0;
    /* HDF5 objects: ~3 KiB each (header, attributes, chunk index), measured
     * on small files; 15 sample/document datasets, 2 per layer, 5 per layer
     * with ridge sums; the root attributes hold the model config JSON */
    double objects = 15.0 + 2.0 * (double)L + (cfg->oracle.ridge_stats ? 5.0 * (double)L : 0);
    double base = (double)p->samples * (13.0 + 4.0 * (double)(L * H)) + per_doc_bytes + ridge +
                  3072.0 * objects + (double)strlen(h->config_json) + 8192;
    p->bytes_without_hidden = base;
    p->bytes_with_hidden = base + (double)p->samples * (double)(L * D) * hid;
    size_t k = h->opt->dry_run_timed_docs ? h->opt->dry_run_timed_docs : 2;
    k = k < n ? k : n;
    double t0 = now_s();
    h->t_loop0 = t0;
    int rc = pipeline_documents(h, 0, k, err);
    p->timed_seconds = now_s() - t0;
    p->timed_docs = k;
    p->timed_tokens = h->prog.tokens_this_run;
    if (rc == KVZ_OK && p->timed_tokens)
        p->estimated_seconds = p->timed_seconds * (double)p->prompt_tokens / (double)p->timed_tokens;
    return rc;
}

static void free_harvest(harvest *h)
{
    kvz_oracle_run_close(h->run);
    kvz_corpus_free(h->corpus);
    kvz_oracle_engine_free(h->engine);
    kvz_chat_template_free(h->tpl);
    kvz_tokenizer_free(h->tok);
    kvz_checkpoint_close(h->ck);
    free(h->config_json);
    free(h->output);
    free(h->positions);
}

static void fill_summary(const harvest *h, kvz_oracle_summary *s)
{
    snprintf(s->output, sizeof s->output, "%s", h->output ? h->output : "");
    s->n_documents = h->prog.docs_done;
    s->n_samples = h->prog.samples_written;
    s->docs_resumed = h->prog.docs_resumed;
    s->corpus_scanned = h->corpus ? kvz_corpus_n_scanned(h->corpus) : 0;
    s->corpus_eligible = h->corpus ? kvz_corpus_n_eligible_seen(h->corpus) : 0;
    s->tokens_this_run = h->prog.tokens_this_run;
    s->seconds = now_s() - h->t0;
    s->harvest_seconds = h->t_loop1 > h->t_loop0 ? h->t_loop1 - h->t_loop0 : 0.0;
    snprintf(s->device, sizeof s->device, "%s", h->prog.device ? h->prog.device : "");
    snprintf(s->precision, sizeof s->precision, "%s",
             h->prog.precision ? h->prog.precision : "");
}

int kvz_oracle_harvest(const kvz_run_config *cfg, const kvz_oracle_options *opt,
                       kvz_oracle_summary *summary_or_NULL, kvz_error *err)
{
    /* HDF5 1.10 (before 1.14.1, HDFFV-11052) keeps a freed file in its ID
     * table when H5Fclose fails (e.g. EFBIG/ENOSPC while flushing) and then
     * crashes in its atexit handler; the store closes every file itself, so
     * skip that handler (a no-op once the library is initialized). */
    H5dont_atexit();
    kvz_oracle_options no_opt = {0};
    kvz_oracle_summary sum = {0};
    harvest h = {0};
    h.cfg = cfg;
    h.opt = opt ? opt : &no_opt;
    h.t0 = now_s();
    int rc = kvz_config_require(cfg, "model.path", err);
    rc = rc ? rc : kvz_config_require(cfg, "oracle.corpus", err);
    rc = rc ? rc : kvz_config_require(cfg, "oracle.output", err);
    if (rc == KVZ_OK && !(h.output = final_output_path(cfg->oracle.output)))
        rc = kvz_fail(err, KVZ_ENOMEM, "out of memory");
    if (!h.opt->dry_run)
        rc = rc ? rc : make_parent_dirs(h.output, err);
    rc = rc ? rc : open_model(&h, err);
    rc = rc ? rc : select_corpus(&h, err);
    rc = rc ? rc : corpus_fingerprint(&h, err);
    rc = rc ? rc : start_engine(&h, err);
    rc = rc ? rc : alloc_buffers(&h, err);
    size_t first = 0;
    if (rc == KVZ_OK && h.opt->dry_run) {
        rc = dry_run(&h, &sum.plan, err);
        fill_summary(&h, &sum);
        if (summary_or_NULL)
            *summary_or_NULL = sum;
        free_harvest(&h);
        return rc;
    }
    if (rc == KVZ_OK) {
        kvz_oracle_meta meta;
        fill_meta(&h, &meta);
        rc = kvz_oracle_run_open(h.output, &meta, cfg->oracle.docs_per_shard, h.opt->resume,
                                 h.opt->overwrite, &h.run, &first, err);
    }
    rc = rc ? rc : run_documents(&h, first, &sum, err);
    fill_summary(&h, &sum);
    if (summary_or_NULL)
        *summary_or_NULL = sum;
    free_harvest(&h);
    return rc;
}
