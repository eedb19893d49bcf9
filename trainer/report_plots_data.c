/* report_plots_data: the plots drawn from the trainer's bulk CSV files:
 * loss_curves.svg (train_log.csv) and density_layer_<l>.svg
 * (predictions/layer_<l>.csv, binned here into 2D histograms). */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"
#include "report_internal.h"

typedef struct loss_row {
    double layer, epoch, train, val;
} loss_row;

static int by_layer_epoch(const void *a, const void *b)
{
    const loss_row *x = a, *y = b;
    if (x->layer != y->layer)
        return x->layer < y->layer ? -1 : 1;
    return (x->epoch > y->epoch) - (x->epoch < y->epoch);
}

static int read_loss_rows(const rep_csv *t, loss_row *rows, kvz_error *err)
{
    for (size_t r = 0; r < t->n_rows; r++) {
        double *v[4] = {&rows[r].layer, &rows[r].epoch, &rows[r].train, &rows[r].val};
        for (size_t k = 0; k < 4; k++) {
            int rc = rep_csv_number(t, r, k, v[k], err);
            if (rc)
                return rc;
        }
    }
    qsort(rows, t->n_rows, sizeof *rows, by_layer_epoch);
    return KVZ_OK;
}

/* gnuplot/loss.dat: one block (index) per layer; returns blocks, layer ids. */
static int write_loss_dat(const rep_ctx *c, const loss_row *rows, size_t n, int *layers,
                          size_t *n_layers, double range[2], kvz_error *err)
{
    FILE *fp;
    char *path;
    int rc = rep_open_work_file(c, "loss.dat", &fp, &path, err);
    if (rc)
        return rc;
    *n_layers = 0;
    range[0] = INFINITY;
    range[1] = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || rows[i].layer != rows[i - 1].layer) {
            fprintf(fp, "%s# layer %g: epoch train_loss val_loss\n", i ? "\n\n" : "",
                    rows[i].layer);
            layers[(*n_layers)++] = (int)rows[i].layer;
        }
        fprintf(fp, "%g %.8g %.8g\n", rows[i].epoch, rows[i].train, rows[i].val);
        double v[2] = {rows[i].train, rows[i].val};
        for (int k = 0; k < 2; k++)
            if (isfinite(v[k])) {
                range[0] = v[k] < range[0] ? v[k] : range[0];
                range[1] = v[k] > range[1] ? v[k] : range[1];
            }
    }
    rc = rep_close_work_file(fp, path, err);
    free(path);
    return rc;
}

static void loss_clause(FILE *s, size_t block, int layer, const char *style, int titled)
{
    if (titled)
        fprintf(s, ", \\\n  'gnuplot/loss.dat' index %zu u 1:2 w l %s t 'layer %d train', \\\n"
                   "  '' index %zu u 1:3 w l dt 2 %s t 'layer %d val'",
                block, style, layer, block, style, layer);
    else
        fprintf(s, ", \\\n  'gnuplot/loss.dat' index %zu u 1:2 w l %s notitle, \\\n"
                   "  '' index %zu u 1:3 w l dt 2 %s notitle",
                block, style, block, style);
}

static void loss_script(FILE *s, const int *layers, size_t n_layers, const double range[2],
                        double max_epoch)
{
    static const char *const hi_colors[3] = {"#1f77b4", "#ff7f0e", "#d62728"};
    size_t hi[3] = {0, n_layers / 2, n_layers - 1};
    int log_y = range[0] > 0 && range[1] / range[0] > 5;
    fprintf(s,
            "set title 'MLP training curves (every layer; first, middle and last highlighted)' "
            "font ',15'\n"
            "set xlabel 'epoch'\nset ylabel 'MSE loss (log-score²)%s'\n%s"
            "set key outside right top\nset xtics %d\n"
            "plot keyentry w l lw 2 lc rgb 'black' t 'train (solid)', \\\n"
            "  keyentry w l lw 2 dt 2 lc rgb 'black' t 'validation (dashed)', \\\n"
            "  keyentry w l lw 1 lc rgb '#bbbbbb' t 'other layers'",
            log_y ? ", log scale" : "", log_y ? "set logscale y\n" : "",
            (int)(max_epoch / 15) + 1);
    for (size_t b = 0; b < n_layers; b++)
        if (b != hi[0] && b != hi[1] && b != hi[2])
            loss_clause(s, b, layers[b], "lw 0.8 lc rgb '#bbbbbb'", 0);
    for (int k = 0; k < 3; k++) {
        if (k > 0 && hi[k] == hi[k - 1])
            continue;
        char style[64];
        snprintf(style, sizeof style, "lw 2.5 lc rgb '%s'", hi_colors[k]);
        loss_clause(s, hi[k], layers[hi[k]], style, 1);
    }
    fputc('\n', s);
}

static int finish(rep_ctx *c, const char *name, FILE *s, char **bufp, kvz_error *err)
{
    int bad = ferror(s);
    fclose(s); /* sets *bufp */
    char *buf = *bufp;
    int rc = bad ? kvz_fail(err, KVZ_ENOMEM, "report: out of memory") : KVZ_OK;
    if (!rc)
        rc = rep_gnuplot_run(c, name, buf, err);
    free(buf);
    return rc ? rc : rep_strlist_addf(&c->plots, err, "%s.svg", name);
}

static int draw_loss(rep_ctx *c, const loss_row *rows, size_t n, kvz_error *err)
{
    int *layers = malloc(n * sizeof *layers);
    size_t n_layers = 0;
    double range[2];
    if (!layers)
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    int rc = write_loss_dat(c, rows, n, layers, &n_layers, range, err);
    char *buf;
    size_t len;
    FILE *s = NULL;
    if (!rc && rep_script_begin(&buf, &len, &s, "loss_curves", 900, 500))
        rc = kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    if (!rc) {
        double max_epoch = 1;
        for (size_t i = 0; i < n; i++)
            max_epoch = rows[i].epoch > max_epoch ? rows[i].epoch : max_epoch;
        loss_script(s, layers, n_layers, range, max_epoch);
        rc = finish(c, "loss_curves", s, &buf, err);
    }
    free(layers);
    return rc;
}

int rep_plot_loss_curves(rep_ctx *c, kvz_error *err)
{
    static const char *const cols[4] = {"layer", "epoch", "train_loss", "val_loss"};
    char *path = kvz_path_join(c->train_dir, "train_log.csv");
    if (!path)
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    rep_csv t;
    kvz_error why = {0};
    int rc = rep_csv_load(path, cols, 4, &t, &why);
    free(path);
    loss_row *rows = NULL;
    if (!rc && t.n_rows == 0)
        rc = kvz_fail(&why, KVZ_EFORMAT, "%s: no data rows", t.path);
    if (!rc && !(rows = malloc(t.n_rows * sizeof *rows)))
        rc = kvz_fail(&why, KVZ_ENOMEM, "report: out of memory");
    if (!rc)
        rc = read_loss_rows(&t, rows, &why);
    size_t n = t.n_rows;
    rep_csv_free(&t);
    if (rc == KVZ_ENOMEM)
        rc = kvz_fail(err, rc, "%s", why.msg);
    else if (rc)
        rc = rep_strlist_addf(&c->skipped, err, "loss_curves.svg: %s", why.msg);
    else
        rc = draw_loss(c, rows, n, err);
    free(rows);
    return rc;
}

/* ---- density plots ---- */

#define REP_BINS 60

typedef struct density {
    int layer;
    size_t n;              /* pairs binned */
    double lo, hi;         /* common range of both axes */
    unsigned *counts[2];   /* [REP_BINS * REP_BINS] for linear, mlp; x = oracle */
    unsigned max_count;
} density;

/* Reads oracle/linear/mlp; fills vals[3][n] with the finite rows. */
static int read_pairs(const rep_csv *t, double *vals[3], size_t *n, kvz_error *err)
{
    *n = 0;
    for (size_t r = 0; r < t->n_rows; r++) {
        double v[3];
        for (size_t k = 0; k < 3; k++) {
            int rc = rep_csv_number(t, r, k, &v[k], err);
            if (rc)
                return rc;
        }
        if (!isfinite(v[0]) || !isfinite(v[1]) || !isfinite(v[2]))
            continue;
        for (size_t k = 0; k < 3; k++)
            vals[k][*n] = v[k];
        ++*n;
    }
    return *n ? KVZ_OK : kvz_fail(err, KVZ_EFORMAT, "%s: no finite data rows", t->path);
}

static size_t bin_of(double v, const density *d)
{
    double f = (v - d->lo) / (d->hi - d->lo) * REP_BINS;
    return f < 0 ? 0 : f >= REP_BINS ? REP_BINS - 1 : (size_t)f;
}

static void bin_pairs(double *vals[3], density *d)
{
    d->lo = INFINITY;
    d->hi = -INFINITY;
    for (size_t k = 0; k < 3; k++)
        for (size_t i = 0; i < d->n; i++) {
            d->lo = vals[k][i] < d->lo ? vals[k][i] : d->lo;
            d->hi = vals[k][i] > d->hi ? vals[k][i] : d->hi;
        }
    double pad = (d->hi - d->lo) * 0.02 + 1e-6;
    d->lo -= pad;
    d->hi += pad;
    for (int m = 0; m < 2; m++)
        for (size_t i = 0; i < d->n; i++) {
            unsigned *cell = &d->counts[m][bin_of(vals[0][i], d) * REP_BINS +
                                           bin_of(vals[m + 1][i], d)];
            ++*cell;
            d->max_count = *cell > d->max_count ? *cell : d->max_count;
        }
}

static int write_density_dat(const rep_ctx *c, const density *d, kvz_error *err)
{
    char file[64];
    snprintf(file, sizeof file, "density_layer_%d.dat", d->layer);
    FILE *fp;
    char *path;
    int rc = rep_open_work_file(c, file, &fp, &path, err);
    if (rc)
        return rc;
    double w = (d->hi - d->lo) / REP_BINS;
    for (int m = 0; m < 2; m++) {
        fprintf(fp, "%s# %s: oracle_bin_center predicted_bin_center count (NaN = empty)\n",
                m ? "\n\n" : "", m ? "mlp" : "linear");
        for (size_t ix = 0; ix < REP_BINS; ix++) {
            for (size_t iy = 0; iy < REP_BINS; iy++) {
                unsigned cnt = d->counts[m][ix * REP_BINS + iy];
                fprintf(fp, "%.6g %.6g ", d->lo + (ix + 0.5) * w, d->lo + (iy + 0.5) * w);
                if (cnt)
                    fprintf(fp, "%u\n", cnt);
                else
                    fputs("NaN\n", fp);
            }
            fputc('\n', fp);
        }
    }
    rc = rep_close_work_file(fp, path, err);
    free(path);
    return rc;
}

static const rep_layer *find_layer(const rep_metrics *m, int layer)
{
    for (size_t i = 0; i < m->n_layers; i++)
        if (m->layers[i].layer == layer)
            return &m->layers[i];
    return NULL;
}

static void density_panel(FILE *s, const density *d, int m, double r2)
{
    char r2_text[48] = "";
    if (isfinite(r2))
        snprintf(r2_text, sizeof r2_text, " (R² = %.3f)", r2);
    fprintf(s,
            "set title '%s%s' font ',14'\n"
            "plot 'gnuplot/density_layer_%d.dat' index %d u 1:2:3 w image notitle, \\\n"
            "  x w l dt 2 lw 1.5 lc rgb 'black' t 'y = x'\n",
            m ? "MLP" : "Linear", r2_text, d->layer, m);
}

static int draw_density(rep_ctx *c, const density *d, kvz_error *err)
{
    int rc = write_density_dat(c, d, err);
    if (rc)
        return rc;
    char name[64], *buf;
    size_t len;
    FILE *s;
    snprintf(name, sizeof name, "density_layer_%d", d->layer);
    if (rep_script_begin(&buf, &len, &s, name, 1100, 520))
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    const rep_layer *l = find_layer(&c->metrics, d->layer);
    fprintf(s,
            "set multiplot layout 1,2 title 'Layer %d: predicted vs oracle log-score, %zu "
            "held-out pairs (all KV heads)' font ',15'\n"
            "set size ratio -1\nset xrange [%g:%g]\nset yrange [%g:%g]\n"
            "set xlabel 'oracle log-score (log KVzip+ score)'\n"
            "set ylabel 'predicted log-score'\nset key top left\n"
            "set logscale cb\nset cbrange [1:%u]\nset cblabel 'pairs per bin (log scale)'\n"
            "set palette defined (0 '#440154', 1 '#3b528b', 2 '#21918c', 3 '#5ec962', "
            "4 '#fde725')\n",
            d->layer, d->n, d->lo, d->hi, d->lo, d->hi, d->max_count > 1 ? d->max_count : 2);
    density_panel(s, d, 0, l ? l->linear.r2 : NAN);
    density_panel(s, d, 1, l ? l->mlp.r2 : NAN);
    fputs("unset multiplot\n", s);
    return finish(c, name, s, &buf, err);
}

/* Loads, bins and plots one predictions file; input problems become notes. */
static int density_for(rep_ctx *c, int layer, const char *path, kvz_error *err)
{
    static const char *const cols[3] = {"oracle", "linear", "mlp"};
    rep_csv t;
    kvz_error why = {0};
    density d = {.layer = layer};
    double *vals[3] = {NULL, NULL, NULL};
    int rc = rep_csv_load(path, cols, 3, &t, &why);
    for (int k = 0; k < 3 && !rc; k++)
        if (!(vals[k] = malloc((t.n_rows + 1) * sizeof *vals[k])))
            rc = kvz_fail(&why, KVZ_ENOMEM, "report: out of memory");
    if (!rc)
        rc = read_pairs(&t, vals, &d.n, &why);
    for (int m = 0; m < 2 && !rc; m++)
        if (!(d.counts[m] = calloc(REP_BINS * REP_BINS, sizeof *d.counts[m])))
            rc = kvz_fail(&why, KVZ_ENOMEM, "report: out of memory");
    if (!rc)
        bin_pairs(vals, &d);
    rep_csv_free(&t);
    if (rc == KVZ_ENOMEM)
        rc = kvz_fail(err, rc, "%s", why.msg);
    else if (rc)
        rc = rep_strlist_addf(&c->skipped, err, "density_layer_%d.svg: %s", layer, why.msg);
    else
        rc = draw_density(c, &d, err);
    for (int k = 0; k < 3; k++)
        free(vals[k]);
    free(d.counts[0]);
    free(d.counts[1]);
    return rc;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Layer numbers of the predictions/layer_<l>.csv files, sorted. */
static int list_prediction_layers(const char *dir, int **out, size_t *n, kvz_error *err)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return KVZ_ENOTFOUND;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int layer, used = 0;
        if (sscanf(e->d_name, "layer_%d.csv%n", &layer, &used) != 1 ||
            used != (int)strlen(e->d_name) || layer < 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            int *v = realloc(*out, cap * sizeof *v);
            if (!v) {
                closedir(d);
                return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
            }
            *out = v;
        }
        (*out)[(*n)++] = layer;
    }
    closedir(d);
    if (*n)
        qsort(*out, *n, sizeof **out, cmp_int);
    return KVZ_OK;
}

int rep_plot_densities(rep_ctx *c, kvz_error *err)
{
    char *dir = kvz_path_join(c->train_dir, "predictions");
    int *layers = NULL;
    size_t n = 0;
    if (!dir)
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    int rc = list_prediction_layers(dir, &layers, &n, err);
    if (rc == KVZ_ENOTFOUND)
        rc = rep_strlist_addf(&c->skipped, err, "density_layer_<l>.svg: %s: not found", dir);
    else if (!rc && n == 0)
        rc = rep_strlist_addf(&c->skipped, err,
                              "density_layer_<l>.svg: %s: no layer_<l>.csv files", dir);
    for (size_t i = 0; i < n && !rc; i++) {
        char file[64];
        snprintf(file, sizeof file, "layer_%d.csv", layers[i]);
        char *path = kvz_path_join(dir, file);
        rc = path ? density_for(c, layers[i], path, err)
                  : kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
        free(path);
    }
    free(layers);
    free(dir);
    return rc;
}
