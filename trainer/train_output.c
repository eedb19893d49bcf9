/* train_output: everything `kvzap train` writes (docs/training-output.md):
 * metrics.json / metrics.csv, train_log.csv, predictions/layer_<l>.csv,
 * compression.csv and the float32 kvpress exports linear/ and mlp/. The
 * directory is built under "<output>.tmp.<pid>" and swapped into place whole
 * when metrics.json (the completion marker) is written, so a killed or
 * failed run leaves an older output as it was, never a mix. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/kvz_file.h"
#include "export.h"
#include "train_internal.h"

/* ---------- small helpers ---------- */

/* mkdir -p path; messages name what (the path the user gave). */
static int mkdir_p(const char *path, const char *what, kvz_error *err)
{
    char *p = strdup(path);
    if (!p)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory");
    int rc = KVZ_OK;
    for (char *s = p + 1;; s++) {
        char c = *s;
        if (c != '/' && c != '\0')
            continue;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            rc = kvz_fail(err, KVZ_EIO, "%s: cannot create directory '%s': %s", what, p,
                          strerror(errno));
        else if (!kvz_path_is_dir(p))
            rc = kvz_fail(err, KVZ_EIO, "%s: '%s' exists and is not a directory", what, p);
        *s = c;
        if (rc || c == '\0')
            break;
    }
    free(p);
    return rc;
}

/* Writes text to dir/name atomically. */
static int write_text(const char *dir, const char *name, const char *text, size_t len,
                      kvz_error *err)
{
    char *path = kvz_path_join(dir, name);
    if (!path)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory");
    kvz_atomic_file f;
    int rc = kvz_atomic_open(path, &f, err);
    if (rc == KVZ_OK) {
        fwrite(text, 1, len, f.fp);
        rc = kvz_atomic_commit(&f, err);
    }
    free(path);
    return rc;
}

/* A growing text buffer. */
typedef struct text_buf {
    char *s;
    size_t len, cap;
    int oom;
} text_buf;

static void tb_printf(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_printf(text_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || b->oom)
        return;
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static int tb_write(text_buf *b, const char *dir, const char *name, kvz_error *err)
{
    int rc = b->oom ? kvz_fail(err, KVZ_ENOMEM, "out of memory")
                    : write_text(dir, name, b->s ? b->s : "", b->len, err);
    free(b->s);
    memset(b, 0, sizeof *b);
    return rc;
}

/* ---------- setup and the epoch log ---------- */

/* What kvzap train writes into its output directory (plus the report that
 * `kvzap train`/`kvzap report` render there). */
static const char *const OUTPUT_ENTRIES[] = {"metrics.json",    "metrics.csv", "train_log.csv",
                                             "compression.csv", "predictions", "linear",
                                             "mlp",             "report"};

/* 1 when name is one of OUTPUT_ENTRIES, or a temporary of one
 * ("<entry>.tmp.<pid>" / ".old.<pid>", left by a killed run). */
static int own_entry(const char *name)
{
    for (size_t i = 0; i < sizeof OUTPUT_ENTRIES / sizeof *OUTPUT_ENTRIES; i++) {
        size_t n = strlen(OUTPUT_ENTRIES[i]);
        if (!strncmp(name, OUTPUT_ENTRIES[i], n) &&
            (!name[n] || !strncmp(name + n, ".tmp.", 5) || !strncmp(name + n, ".old.", 5)))
            return 1;
    }
    return 0;
}

/* An existing train.output is replaced only when it holds nothing else. */
static int check_replaceable(const char *path, kvz_error *err)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return KVZ_OK;
    if (!S_ISDIR(st.st_mode))
        return kvz_fail(err, KVZ_EIO, "%s: exists and is not a directory (train.output)", path);
    DIR *d = opendir(path);
    if (!d)
        return kvz_fail(err, KVZ_EIO, "%s: cannot read: %s", path, strerror(errno));
    int rc = KVZ_OK;
    struct dirent *e;
    while (rc == KVZ_OK && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && !own_entry(e->d_name))
            rc = kvz_fail(err, KVZ_EINVAL,
                          "%s: holds '%s', which kvzap train does not write; not replacing "
                          "it (choose another train.output, or move it away)",
                          path, e->d_name);
    closedir(d);
    return rc;
}

int train_out_prepare(trainer *t, kvz_error *err)
{
    const char *final = t->cfg->train.output;
    t->json_mark = kvz_json_mark_now();
    t->metrics_layers = json_array();
    if (!t->metrics_layers)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory");
    snprintf(t->sum.output, sizeof t->sum.output, "%s", final);
    int rc = check_replaceable(final, err);
    char *parent = NULL;
    if (rc == KVZ_OK) { /* the temporary goes beside the output: create its parents */
        parent = strdup(final);
        if (!parent)
            return kvz_fail(err, KVZ_ENOMEM, "out of memory");
        size_t n = strlen(parent);
        while (n > 1 && parent[n - 1] == '/')
            parent[--n] = '\0';
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent) {
            *slash = '\0';
            rc = mkdir_p(parent, final, err);
        }
        free(parent);
    }
    rc = rc ? rc : kvz_outdir_begin(final, &t->out, err);
    if (rc)
        return rc;
    t->out_dir = t->out.tmp_path;
    char *pred = kvz_path_join(t->out_dir, "predictions");
    rc = pred ? mkdir_p(pred, pred, err) : kvz_fail(err, KVZ_ENOMEM, "out of memory");
    free(pred);
    text_buf b = {t->log_csv, t->log_len, t->log_cap, 0};
    tb_printf(&b, "layer,epoch,lr,train_loss,val_loss,seconds\n");
    t->log_csv = b.s;
    t->log_len = b.len;
    t->log_cap = b.cap;
    return rc ? rc : b.oom ? kvz_fail(err, KVZ_ENOMEM, "out of memory") : KVZ_OK;
}

void train_out_abort(trainer *t)
{
    kvz_outdir_abort(&t->out);
    t->out_dir = NULL;
}

int train_out_log_epoch(trainer *t, size_t layer, size_t epoch, double lr, double train_loss,
                        double val_loss, double seconds, kvz_error *err)
{
    text_buf b = {t->log_csv, t->log_len, t->log_cap, 0};
    tb_printf(&b, "%zu,%zu,%.9g,%.9g,%.9g,%.3f\n", layer, epoch, lr, train_loss, val_loss, seconds);
    t->log_csv = b.s;
    t->log_len = b.len;
    t->log_cap = b.cap;
    return b.oom ? kvz_fail(err, KVZ_ENOMEM, "out of memory") : KVZ_OK;
}

/* ---------- metrics of one layer ---------- */

static json_t *values_json(const kvz_metrics_values *v, int with_overlap)
{
    json_t *o = json_pack("{s:f, s:f, s:f}", "mse", v->mse, "r2", v->r2, "pearson", v->pearson);
    if (with_overlap)
        json_object_set_new(o, "keep_overlap",
                            json_pack("{s:f, s:f, s:f}", "2x", v->keep_overlap[0], "3x",
                                      v->keep_overlap[1], "4x", v->keep_overlap[2]));
    return o;
}

json_t *train_metrics_json(const kvz_metrics *m)
{
    json_t *o = values_json(&m->overall, 1), *heads = json_array();
    for (size_t h = 0; h < m->d_out; h++)
        json_array_append_new(heads, values_json(&m->col[h], 1));
    json_object_set_new(o, "heads", heads);
    return o;
}

static void count_pruned(double *pruned, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < TRAIN_N_TAU; k++)
            pruned[k] += (double)y[i] < TRAIN_TAU(k);
}

static int add_model_metrics(json_t *obj, const float *pred, const layer_data *d, size_t H,
                             kvz_error *err)
{
    kvz_metrics m = {0};
    int rc = kvz_metrics_compute(pred, d->test_y, d->n_test, H, &m, err);
    if (rc == KVZ_OK) {
        json_t *mj = train_metrics_json(&m);
        json_object_update(obj, mj);
        json_decref(mj);
    }
    kvz_metrics_free(&m);
    return rc;
}

int train_out_layer(trainer *t, size_t layer, const layer_data *d, const float *pred_linear,
                    const float *pred_mlp, json_t *layer_obj, kvz_error *err)
{
    size_t H = t->info->n_kv_heads, n = d->n_test * H;
    int rc = KVZ_OK;
    if (pred_linear)
        rc = add_model_metrics(json_object_get(layer_obj, "linear"), pred_linear, d, H, err);
    if (rc == KVZ_OK && pred_mlp)
        rc = add_model_metrics(json_object_get(layer_obj, "mlp"), pred_mlp, d, H, err);
    if (rc) {
        char msg[KVZ_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
        return kvz_fail(err, rc, "layer %zu metrics: %s", layer, msg);
    }
    count_pruned(t->pruned[0], d->test_y, n);
    if (pred_linear)
        count_pruned(t->pruned[1], pred_linear, n);
    if (pred_mlp)
        count_pruned(t->pruned[2], pred_mlp, n);
    t->pairs += (double)n;
    json_array_append(t->metrics_layers, layer_obj);
    return KVZ_OK;
}

/* ---------- predictions for density plots ---------- */

static int wants_predictions(const trainer *t, size_t layer)
{
    size_t n = t->n_sel;
    return n && (layer == t->layers[0] || layer == t->layers[n / 2] || layer == t->layers[n - 1]);
}

int train_out_predictions(trainer *t, size_t layer, const layer_data *d,
                          const float *pred_linear, const float *pred_mlp, kvz_error *err)
{
    if (!wants_predictions(t, layer) || d->n_test == 0)
        return KVZ_OK;
    size_t H = t->info->n_kv_heads, rows = TRAIN_MAX_PREDICTION_PAIRS / H;
    size_t stride = d->n_test > rows ? (d->n_test + rows - 1) / rows : 1;
    text_buf b = {0};
    tb_printf(&b, "head,oracle,linear,mlp\n");
    for (size_t r = 0; r < d->n_test; r += stride)
        for (size_t h = 0; h < H; h++) {
            size_t i = r * H + h;
            tb_printf(&b, "%zu,%.9g,%.9g,%.9g\n", h, d->test_y[i],
                      pred_linear ? pred_linear[i] : NAN, pred_mlp ? pred_mlp[i] : NAN);
        }
    char name[64];
    snprintf(name, sizeof name, "predictions/layer_%zu.csv", layer);
    return tb_write(&b, t->out_dir, name, err);
}

/* ---------- the final files ---------- */

static int write_metrics_json(trainer *t, kvz_error *err)
{
    const kvz_oracle_file_info *in = t->info;
    json_t *root = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:O}", "dataset",
                             t->cfg->train.dataset, "model", in->model_path ? in->model_path : "",
                             "architecture", in->model_architecture ? in->model_architecture : "",
                             "n_layers", (json_int_t)in->n_layers, "d_model",
                             (json_int_t)in->d_model, "n_kv_heads", (json_int_t)in->n_kv_heads,
                             "mlp_hidden", (json_int_t)(t->want_mlp ? t->d_hidden : 0), "layers",
                             t->metrics_layers);
    if (root) /* provenance: the exact weights the dataset came from */
        json_object_set_new(root, "model_sha256", json_string(in->model_sha256));
    if (root) { /* where the MLP trained (docs/gpu-trainer.md) */
        json_object_set_new(root, "device", json_string(t->rows.ready ? "cuda" : "cpu"));
        json_object_set_new(root, "gpu_precision",
                            t->rows.ready ? json_string(kvz_gemm_precision_name(t->precision))
                                          : json_null());
    }
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text || kvz_json_failed_since(t->json_mark)) {
        free(text);
        return kvz_fail(err, KVZ_ENOMEM, "out of memory (building metrics.json)");
    }
    size_t len = strlen(text);
    int rc = write_text(t->out_dir, "metrics.json", text, len, err);
    free(text);
    return rc;
}

static double jnum(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return v ? json_number_value(v) : NAN;
}

static void csv_row(text_buf *b, size_t layer, const char *model, const char *head, json_t *o,
                    size_t n_test)
{
    json_t *ko = json_object_get(o, "keep_overlap");
    tb_printf(b, "%zu,%s,%s,%zu,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g\n", layer, model, head, n_test,
              jnum(o, "mse"), jnum(o, "r2"), jnum(o, "pearson"), jnum(ko, "2x"), jnum(ko, "3x"),
              jnum(ko, "4x"));
}

static int write_metrics_csv(trainer *t, kvz_error *err)
{
    text_buf b = {0};
    tb_printf(&b, "layer,model,head,n_test,mse,r2,pearson,keep_overlap_2x,keep_overlap_3x,"
                  "keep_overlap_4x\n");
    size_t i;
    json_t *lo;
    json_array_foreach(t->metrics_layers, i, lo)
    {
        size_t layer = (size_t)json_integer_value(json_object_get(lo, "layer"));
        size_t n_test = (size_t)json_integer_value(json_object_get(lo, "n_test"));
        const char *models[2] = {"linear", "mlp"};
        for (int m = 0; m < 2; m++) {
            json_t *o = json_object_get(lo, models[m]);
            if (!o || !json_object_get(o, "r2"))
                continue;
            csv_row(&b, layer, models[m], "all", o, n_test);
            size_t h;
            json_t *ho;
            json_array_foreach(json_object_get(o, "heads"), h, ho)
            {
                char head[32];
                snprintf(head, sizeof head, "%zu", h);
                csv_row(&b, layer, models[m], head, ho, n_test);
            }
        }
    }
    return tb_write(&b, t->out_dir, "metrics.csv", err);
}

static int write_compression_csv(trainer *t, kvz_error *err)
{
    if (t->pairs <= 0)
        return KVZ_OK;
    text_buf b = {0};
    tb_printf(&b, "model,tau,compression\n");
    const char *names[3] = {"oracle", "linear", "mlp"};
    int have[3] = {1, t->want_linear, t->want_mlp};
    for (int m = 0; m < 3; m++)
        for (size_t k = 0; have[m] && k < TRAIN_N_TAU; k++)
            tb_printf(&b, "%s,%.2f,%.6f\n", names[m], TRAIN_TAU(k), t->pruned[m][k] / t->pairs);
    return tb_write(&b, t->out_dir, "compression.csv", err);
}

static int write_export(trainer *t, const kvz_surrogate *s, const char *name, kvz_error *err)
{
    char *path = kvz_path_join(t->out_dir, name);
    if (!path)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory");
    kvz_export_info info = {t->info->model_path, t->info->model_architecture,
                            t->cfg->train.dataset, NULL, NULL, 0, t->info->model_sha256};
    kvz_export_options o = kvz_export_default_options();
    o.format = KVZ_EXPORT_KVPRESS;
    o.dtype = KVZ_EXPORT_F32;
    o.overwrite = 1;
    o.info = &info;
    int rc = kvz_export_write(s, path, &o, err);
    free(path);
    return rc;
}

int train_out_finish(trainer *t, kvz_error *err)
{
    text_buf log = {t->log_csv, t->log_len, t->log_cap, 0};
    t->log_csv = NULL;
    int rc = KVZ_OK;
    if (kvz_json_failed_since(t->json_mark)) /* a metric dropped by jansson */
        rc = kvz_fail(err, KVZ_ENOMEM, "out of memory (building metrics.json)");
    if (rc == KVZ_OK && t->want_mlp)
        rc = tb_write(&log, t->out_dir, "train_log.csv", err); /* frees log.s */
    else
        free(log.s);
    rc = rc ? rc : write_metrics_csv(t, err);
    rc = rc ? rc : write_compression_csv(t, err);
    rc = rc ? rc : t->linear ? write_export(t, t->linear, "linear", err) : KVZ_OK;
    rc = rc ? rc : t->mlp ? write_export(t, t->mlp, "mlp", err) : KVZ_OK;
    rc = rc ? rc : write_metrics_json(t, err); /* last: its presence means the run finished */
    t->out_dir = NULL;
    if (rc)
        kvz_outdir_abort(&t->out);
    else
        rc = kvz_outdir_commit(&t->out, err); /* the whole directory, in one step */
    return rc;
}
