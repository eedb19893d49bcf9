/* test_oracle_writer: the oracle's writer thread (kvzip_oracle/oracle_writer.h)
 * with an injected append function: documents are appended in submission
 * order with their own data, an append error stops the loop and comes back
 * labelled with the document, a compute error (cancelled slot) drains and
 * joins cleanly, and custom host allocators are used for every buffer.
 * Then the writer with the real store: a crashed run resumes on another
 * device at the same precision, and is refused at another precision. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/config.h"
#include "data/corpus.h"
#include "kvz_test.h"
#include "kvzip_oracle/oracle_writer.h"

enum { L = 3, D = 5, HKV = 2, NMAX = 7, MAX_DOCS = 64 };

typedef struct sink {
    size_t n_appended;
    size_t order[MAX_DOCS];
    int data_ok[MAX_DOCS];
    size_t fail_at;   /* document index whose append fails (SIZE_MAX: none) */
    int slow;         /* sleep in append, so the producer runs ahead */
    size_t n_ready;
} sink;

static void nap_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* Every value a slot carries is derived from the document index. */
static float value(size_t doc, size_t i)
{
    return (float)(doc * 1000 + i);
}

static void fill(kvz_oracle_slot *s, size_t doc)
{
    s->index = doc;
    snprintf(s->label, sizeof s->label, "document %zu (doc%zu.txt)", doc, doc);
    s->n = 1 + doc % NMAX;
    s->n_prompt_tokens = 10 + doc;
    for (size_t i = 0; i < s->n; i++) {
        s->token_id[i] = (int32_t)(doc * 100 + i);
        s->position[i] = (int32_t)i;
    }
    for (size_t i = 0; i < L * s->n * D; i++)
        s->hidden[i] = value(doc, i);
    for (size_t i = 0; i < L * s->n * HKV; i++)
        s->scores[i] = -value(doc, i);
}

static int check_slot(const kvz_oracle_slot *s)
{
    size_t doc = s->index;
    if (s->n != 1 + doc % NMAX || s->n_prompt_tokens != 10 + doc)
        return 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->token_id[i] != (int32_t)(doc * 100 + i))
            return 0;
    for (size_t i = 0; i < L * s->n * D; i++)
        if (s->hidden[i] != value(doc, i))
            return 0;
    for (size_t i = 0; i < L * s->n * HKV; i++)
        if (s->scores[i] != -value(doc, i))
            return 0;
    return 1;
}

static int sink_append(void *user, const kvz_oracle_slot *slot, kvz_error *err)
{
    sink *k = user;
    if (k->slow)
        nap_ms(3);
    if (slot->index == k->fail_at)
        return kvz_fail(err, KVZ_EIO, "out.h5.parts/shard.h5.tmp: cannot write shard (injected)");
    if (k->n_appended < MAX_DOCS) {
        k->order[k->n_appended] = slot->index;
        k->data_ok[k->n_appended] = check_slot(slot);
    }
    k->n_appended++;
    return KVZ_OK;
}

static int sink_ready(void *user, const kvz_oracle_slot *slot, kvz_error *err)
{
    (void)slot, (void)err;
    ((sink *)user)->n_ready++;
    return KVZ_OK;
}

static size_t n_allocs, n_frees;
static void *count_alloc(void *user, size_t bytes)
{
    (void)user;
    n_allocs++;
    return malloc(bytes);
}
static void count_free(void *user, void *p)
{
    (void)user;
    n_frees++;
    free(p);
}

static kvz_oracle_writer_options options(sink *k)
{
    kvz_oracle_writer_options o = {0};
    o.n_slots = 2, o.n_max = NMAX, o.n_layers = L, o.d_model = D, o.n_kv_heads = HKV;
    o.with_hidden = 1;
    o.append = sink_append, o.append_user = k;
    o.ready = sink_ready, o.ready_user = k;
    o.host_alloc = count_alloc, o.host_free = count_free;
    return o;
}

/* Produces docs [0, n_docs); a compute "error" at compute_fail cancels the
 * slot and stops. Returns the loop's status (first error). */
static int produce(sink *k, size_t n_docs, size_t compute_fail, kvz_error *err,
                   kvz_oracle_writer_stats *stats)
{
    kvz_oracle_writer_options o = options(k);
    kvz_oracle_writer *w = NULL;
    int rc = kvz_oracle_writer_start(&o, &w, err);
    if (rc)
        return rc;
    for (size_t d = 0; rc == KVZ_OK && d < n_docs; d++) {
        kvz_oracle_slot *s = NULL;
        rc = kvz_oracle_writer_acquire(w, &s, err);
        if (rc)
            break;
        fill(s, d);
        if (d == compute_fail) {
            kvz_oracle_writer_cancel(w, s);
            rc = kvz_fail(err, KVZ_EINVAL, "document %zu: injected compute error", d);
            break;
        }
        kvz_oracle_writer_submit(w, s);
    }
    kvz_error werr = {0};
    int wrc = kvz_oracle_writer_finish(w, &werr);
    if (rc == KVZ_OK && wrc != KVZ_OK) {
        rc = wrc;
        *err = werr;
    }
    kvz_oracle_writer_get_stats(w, stats);
    kvz_oracle_writer_free(w);
    return rc;
}

static void test_order_and_data(int slow)
{
    sink k = {0};
    k.fail_at = (size_t)-1, k.slow = slow;
    kvz_error err = {0};
    kvz_oracle_writer_stats st;
    n_allocs = n_frees = 0;
    int rc = produce(&k, 40, (size_t)-1, &err, &st);
    KVZ_CHECK_OK(rc, err);
    KVZ_CHECK(k.n_appended == 40, "appended %zu of 40", k.n_appended);
    KVZ_CHECK(k.n_ready == 40, "ready called %zu times", k.n_ready);
    int in_order = 1, data_ok = 1;
    for (size_t i = 0; i < 40; i++)
        in_order &= k.order[i] == i, data_ok &= k.data_ok[i];
    KVZ_CHECK(in_order, "documents appended out of order");
    KVZ_CHECK(data_ok, "a slot's data was overwritten before its append");
    KVZ_CHECK(st.docs_appended == 40 && st.last_index == 39, "stats: %zu docs, last %zu",
              st.docs_appended, st.last_index);
    size_t samples = 0;
    for (size_t d = 0; d < 40; d++)
        samples += 1 + d % NMAX;
    KVZ_CHECK(st.samples_appended == samples, "stats: %zu samples", st.samples_appended);
    KVZ_CHECK(n_allocs == 2 * 4 && n_frees == n_allocs, "host buffers: %zu allocs, %zu frees",
              n_allocs, n_frees);
}

static void test_append_error(void)
{
    sink k = {0};
    k.fail_at = 5, k.slow = 1;
    kvz_error err = {0};
    kvz_oracle_writer_stats st;
    int rc = produce(&k, 30, (size_t)-1, &err, &st);
    KVZ_CHECK(rc == KVZ_EIO, "rc %d", rc);
    KVZ_CHECK(strstr(err.msg, "document 5 (doc5.txt): out.h5.parts/shard.h5.tmp: cannot write") ==
                  err.msg,
              "message: %s", err.msg);
    KVZ_CHECK(k.n_appended == 5 && st.docs_appended == 5, "appended %zu (stats %zu), want 5",
              k.n_appended, st.docs_appended);
}

static void test_compute_error(void)
{
    sink k = {0};
    k.fail_at = (size_t)-1, k.slow = 1;
    kvz_error err = {0};
    kvz_oracle_writer_stats st;
    int rc = produce(&k, 30, 7, &err, &st);
    KVZ_CHECK(rc == KVZ_EINVAL, "rc %d", rc);
    KVZ_CHECK(strstr(err.msg, "document 7: injected") != NULL, "message: %s", err.msg);
    /* documents before the failing one are all committed (drained) */
    KVZ_CHECK(k.n_appended == 7 && st.docs_appended == 7, "appended %zu, want 7", k.n_appended);
}

static void test_bad_options(void)
{
    kvz_oracle_writer_options o = {0};
    kvz_oracle_writer *w = (kvz_oracle_writer *)1;
    kvz_error err = {0};
    KVZ_CHECK(kvz_oracle_writer_start(&o, &w, &err) == KVZ_EINVAL && w == NULL, "%s", err.msg);
    kvz_oracle_writer_free(NULL);
}

/* ---------- with the real store ---------- */

static int store_append(void *user, const kvz_oracle_slot *slot, kvz_error *err)
{
    kvz_oracle_doc_samples smp = {slot->n, slot->token_id, slot->position, slot->hidden,
                                  slot->scores};
    return kvz_oracle_run_append(user, &slot->rec, &smp, err);
}

static kvz_oracle_meta store_meta(const char *device, const char *precision)
{
    return (kvz_oracle_meta){.model_path = "m.gguf", .model_architecture = "llama",
                             .corpus = "c.jsonl", .text_field = "text", .subset_field = "subset",
                             .scoring = KVZ_SCORING_KVZIP_PLUS, .chunk_size = 2048,
                             .n_tokens = NMAX, .seed = 1, .hidden_dtype = KVZ_HIDDEN_FLOAT32,
                             .store_hidden = 1, .ridge_stats = 1, .n_layers = L, .d_model = D,
                             .n_kv_heads = HKV, .n_documents_planned = 10,
                             .corpus_fingerprint = "0123456789abcdef", .device = device,
                             .precision = precision};
}

/* Three documents through the writer into a run that then "crashes". */
static void write_three(const char *out)
{
    kvz_oracle_meta m = store_meta("cpu", "float32");
    kvz_oracle_run *r = NULL;
    size_t done = 99;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_oracle_run_open(out, &m, 1, 0, 0, &r, &done, &err), err);
    if (!r)
        return;
    sink k = {0};
    kvz_oracle_writer_options o = options(&k);
    o.append = store_append, o.append_user = r, o.host_alloc = NULL, o.host_free = NULL;
    kvz_oracle_writer *w = NULL;
    KVZ_CHECK_OK(kvz_oracle_writer_start(&o, &w, &err), err);
    for (size_t d = 0; w && d < 3; d++) {
        kvz_oracle_slot *s = NULL;
        KVZ_CHECK_OK(kvz_oracle_writer_acquire(w, &s, &err), err);
        if (!s)
            break;
        fill(s, d);
        kvz_oracle_doc_record rec = {"doc.txt", "", KVZ_SPLIT_TRAIN, 5, 20, 2, 2 + s->n, 12, 20};
        s->rec = rec;
        for (size_t i = 0; i < s->n; i++)
            s->position[i] = (int32_t)(2 + i);
        kvz_oracle_writer_submit(w, s);
    }
    KVZ_CHECK_OK(kvz_oracle_writer_finish(w, &err), err);
    kvz_oracle_writer_free(w);
    kvz_oracle_run_close(r); /* no finish: a crash after 3 committed documents */
}

static void test_resume_precision(void)
{
    char out[4096];
    snprintf(out, sizeof out, "%s/run.h5", kvz_test_tmpdir());
    write_three(out);
    kvz_oracle_run *r = NULL;
    size_t done = 0;
    kvz_error err = {0};
    kvz_oracle_meta bf16 = store_meta("cuda:0 Some GPU", "bfloat16");
    KVZ_CHECK(kvz_oracle_run_open(out, &bf16, 1, 1, 0, &r, &done, &err) == KVZ_EINVAL &&
                  strstr(err.msg, "model.precision was 'float32', now 'bfloat16'"),
              "bf16 resume of a float32 run: %s", err.msg);
    kvz_oracle_run_close(r);
    r = NULL;
    kvz_oracle_meta fp32 = store_meta("cuda:0 Some GPU", "float32");
    KVZ_CHECK_OK(kvz_oracle_run_open(out, &fp32, 1, 1, 0, &r, &done, &err), err);
    KVZ_CHECK(done == 3, "resumed at document %zu, want 3", done);
    kvz_oracle_run_close(r);
}

int main(void)
{
    test_order_and_data(0);
    test_order_and_data(1);
    test_append_error();
    test_compute_error();
    test_bad_options();
    test_resume_precision();
    return kvz_test_done();
}
