/* report: `kvzap report`, the training report a person reads.
 * Reads what `kvzap train` writes (docs/training-output.md: metrics.json,
 * train_log.csv, predictions/layer_<l>.csv, compression.csv) and renders SVG
 * plots with gnuplot plus index.html and README.md into one report directory.
 * The directory is built under "<out>.tmp.<pid>" and renamed into place, so a
 * report directory that exists is complete; on any error nothing is left.
 * metrics.json is required; each other input only feeds one plot, which is
 * skipped (and listed in the summary) when its file is missing or unreadable. */
#ifndef KVZ_REPORT_H
#define KVZ_REPORT_H

#include <stddef.h>
#include <stdio.h>

#include "../common/kvz_error.h"

typedef struct kvz_report_options {
    const char *out_dir; /* NULL: <train_dir>/report */
    const char *gnuplot; /* NULL: "gnuplot" searched on $PATH; else a path to it */
} kvz_report_options;

/* One row of metrics.json as the summary shows it (NaN where absent). */
typedef struct kvz_report_layer_row {
    int layer;
    double linear_r2, linear_pearson, linear_mse;
    double mlp_r2, mlp_pearson, mlp_mse;
    double mlp_keep_overlap[3]; /* at 2x, 3x, 4x */
} kvz_report_layer_row;

typedef struct kvz_report_summary {
    char *out_dir;    /* the report directory written */
    char *index_html; /* <out_dir>/index.html */
    size_t n_layers;
    kvz_report_layer_row *layers;
    size_t n_plots;
    char **plots; /* SVG file names written, e.g. "r2_by_layer.svg" */
    size_t n_skipped;
    char **skipped; /* one line per skipped plot: "loss_curves.svg: <why>" */
} kvz_report_summary;

/* Renders the report of train_dir (opt may be NULL). On success fills *out
 * (free with kvz_report_summary_free). Errors: KVZ_EIO/KVZ_EFORMAT naming
 * metrics.json when it is missing or malformed, KVZ_EUNSUPPORTED when gnuplot
 * is not installed, KVZ_EIO when the output cannot be written or gnuplot fails. */
int kvz_report_render(const char *train_dir, const kvz_report_options *opt,
                      kvz_report_summary *out, kvz_error *err);

/* Writes the terminal summary: per-layer R^2/Pearson table, skipped plots. */
void kvz_report_summary_print(const kvz_report_summary *s, FILE *out);

void kvz_report_summary_free(kvz_report_summary *s);

#endif
