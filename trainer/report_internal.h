/* report_internal: what the report_*.c files share (not public API): the
 * parsed metrics.json, the render context, a tiny CSV reader, string lists,
 * and the gnuplot runner. */
#ifndef KVZ_REPORT_INTERNAL_H
#define KVZ_REPORT_INTERNAL_H

#include <stddef.h>
#include <stdio.h>

#include "../common/kvz_error.h"
#include "../common/kvz_file.h"
#include "report.h"

/* One model's held-out metrics on one layer (NaN where absent). */
typedef struct rep_model {
    double mse, r2, pearson;
    double keep_overlap[3]; /* 2x, 3x, 4x */
    double seconds;         /* fit_seconds (linear) or train_seconds (mlp) */
    size_t n_heads;
    double (*heads)[3]; /* per KV head: mse, r2, pearson */
} rep_model;

typedef struct rep_layer {
    int layer;
    double n_train, n_val, n_test; /* NaN where absent */
    rep_model linear, mlp;
} rep_layer;

typedef struct rep_metrics {
    size_t n_layers;
    rep_layer *layers; /* sorted by layer */
    size_t n_prov;     /* top-level keys other than "layers", as text */
    char **prov_keys;
    char **prov_values;
} rep_metrics;

int rep_metrics_load(const char *path, rep_metrics *out, kvz_error *err);
void rep_metrics_free(rep_metrics *m);

typedef struct rep_strlist {
    size_t n, cap;
    char **v;
} rep_strlist;

int rep_strlist_addf(rep_strlist *l, kvz_error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void rep_strlist_free(rep_strlist *l);

/* The render in progress: inputs, the temporary report dir, results. */
typedef struct rep_ctx {
    const char *train_dir;
    kvz_outdir out;      /* the report directory being built (kvz_file.h) */
    char *work_dir;      /* out.tmp_path while rendering: where everything is written */
    char *gnuplot;       /* resolved gnuplot executable */
    rep_metrics metrics;
    rep_strlist plots;   /* SVG names written, in figure order */
    rep_strlist skipped; /* "name.svg: why" */
} rep_ctx;

/* A CSV file with a header row; cell(r, c) is the text of requested column c. */
typedef struct rep_csv {
    char *path;
    char *buf;
    size_t n_rows, n_cols;
    char **cells;   /* [n_rows * n_cols] */
    size_t *lineno; /* [n_rows]: 1-based line of each row, for messages */
} rep_csv;

/* Loads path keeping the named columns (all must be in the header).
 * KVZ_ENOTFOUND when the file does not exist. */
int rep_csv_load(const char *path, const char *const *cols, size_t n_cols, rep_csv *out,
                 kvz_error *err);
/* Parses cell (row, col) as a finite-or-NaN double. */
int rep_csv_number(const rep_csv *t, size_t row, size_t col, double *out, kvz_error *err);
void rep_csv_free(rep_csv *t);

/* Finds gnuplot (opt_path, else $PATH); KVZ_EUNSUPPORTED when absent. */
int rep_gnuplot_find(const char *opt_path, char **out, kvz_error *err);
/* Writes <work>/gnuplot/<name>.gp from script and runs it with the working
 * directory <work>; checks the exit status and that <name>.svg exists. */
int rep_gnuplot_run(const rep_ctx *c, const char *name, const char *script, kvz_error *err);
/* Opens <work>/gnuplot/<file> for a data file or script. */
int rep_open_work_file(const rep_ctx *c, const char *file, FILE **fp, char **path, kvz_error *err);
int rep_close_work_file(FILE *fp, const char *path, kvz_error *err);

/* The common gnuplot preamble: svg terminal of w x h, output name.svg. */
int rep_script_begin(char **buf, size_t *len, FILE **fp, const char *name, int w, int h);

/* Plots. Each writes <name>.svg and adds it to c->plots, or adds a note to
 * c->skipped when its input is missing/unusable; errors are write/gnuplot. */
int rep_plot_r2(rep_ctx *c, kvz_error *err);
int rep_plot_keep_overlap(rep_ctx *c, kvz_error *err);
int rep_plot_loss_curves(rep_ctx *c, kvz_error *err);
int rep_plot_compression(rep_ctx *c, kvz_error *err);
int rep_plot_densities(rep_ctx *c, kvz_error *err);

/* index.html and README.md into the work dir. */
int rep_write_pages(const rep_ctx *c, kvz_error *err);

/* Reference values (spec sections 3 and 5). */
#define REP_PAPER_R2_LO 0.63
#define REP_PAPER_R2_HI 0.77
#define REP_REF_TAU_LO (-9.0)
#define REP_REF_TAU_HI (-3.0)

#endif
