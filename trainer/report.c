/* report: kvz_report_render, the report driver: loads metrics.json, finds
 * gnuplot, draws every plot into "<out>.tmp.<pid>", writes the pages and
 * swaps the directory into place (kvz_outdir: replacing an older report in
 * one step); on failure the temporary directory is removed. Also the
 * terminal summary. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/kvz_file.h"
#include "report_internal.h"

/* The report is built in "<out>.tmp.<pid>" (c->out.tmp_path, also
 * c->work_dir) and swapped into place whole by kvz_outdir_commit. */
static int make_work_dir(rep_ctx *c, const char *final_dir, kvz_error *err)
{
    int rc = kvz_outdir_begin(final_dir, &c->out, err);
    if (rc)
        return rc;
    c->work_dir = c->out.tmp_path;
    char *sub = kvz_path_join(c->work_dir, "gnuplot");
    if (!sub)
        rc = kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    else if (mkdir(sub, 0777) != 0)
        rc = kvz_fail(err, KVZ_EIO, "%s: cannot create: %s", sub, strerror(errno));
    free(sub);
    return rc;
}

static int render_all(rep_ctx *c, kvz_error *err)
{
    int (*const plots[])(rep_ctx *, kvz_error *) = {rep_plot_r2, rep_plot_loss_curves,
                                                   rep_plot_densities, rep_plot_compression,
                                                   rep_plot_keep_overlap};
    for (size_t i = 0; i < sizeof plots / sizeof plots[0]; i++) {
        int rc = plots[i](c, err);
        if (rc)
            return rc;
    }
    return rep_write_pages(c, err);
}

static int fill_summary(rep_ctx *c, char *final_dir, kvz_report_summary *out, kvz_error *err)
{
    const rep_metrics *m = &c->metrics;
    out->out_dir = final_dir;
    out->index_html = kvz_path_join(final_dir, "index.html");
    out->layers = calloc(m->n_layers, sizeof *out->layers);
    if (!out->index_html || !out->layers)
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    out->n_layers = m->n_layers;
    for (size_t i = 0; i < m->n_layers; i++) {
        const rep_layer *l = &m->layers[i];
        kvz_report_layer_row *r = &out->layers[i];
        *r = (kvz_report_layer_row){l->layer, l->linear.r2, l->linear.pearson, l->linear.mse,
                                    l->mlp.r2, l->mlp.pearson, l->mlp.mse,
                                    {l->mlp.keep_overlap[0], l->mlp.keep_overlap[1],
                                     l->mlp.keep_overlap[2]}};
    }
    out->plots = c->plots.v;
    out->n_plots = c->plots.n;
    out->skipped = c->skipped.v;
    out->n_skipped = c->skipped.n;
    memset(&c->plots, 0, sizeof c->plots);
    memset(&c->skipped, 0, sizeof c->skipped);
    return KVZ_OK;
}

/* Renders into the work directory, fills *out (taking *final_dir, then
 * NULL) and only then commits, so a report said to be unwritten never is. */
static int render(rep_ctx *c, const kvz_report_options *opt, char **final_dir,
                  kvz_report_summary *out, kvz_error *err)
{
    if (!kvz_path_is_dir(c->train_dir))
        return kvz_fail(err, KVZ_EIO, "%s: not a directory (expected `kvzap train` output)",
                        c->train_dir);
    char *metrics = kvz_path_join(c->train_dir, "metrics.json");
    if (!metrics)
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    int rc = rep_metrics_load(metrics, &c->metrics, err);
    free(metrics);
    if (!rc)
        rc = rep_gnuplot_find(opt ? opt->gnuplot : NULL, &c->gnuplot, err);
    if (rc)
        return rc;
    *final_dir = opt && opt->out_dir ? strdup(opt->out_dir)
                                     : kvz_path_join(c->train_dir, "report");
    if (!*final_dir)
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    rc = make_work_dir(c, *final_dir, err);
    if (!rc)
        rc = render_all(c, err);
    c->work_dir = NULL;
    if (!rc) {
        rc = fill_summary(c, *final_dir, out, err);
        *final_dir = NULL; /* out->out_dir (or freed with out) */
    }
    if (!rc)
        rc = kvz_outdir_commit(&c->out, err);
    else
        kvz_outdir_abort(&c->out);
    return rc;
}

int kvz_report_render(const char *train_dir, const kvz_report_options *opt,
                      kvz_report_summary *out, kvz_error *err)
{
    memset(out, 0, sizeof *out);
    if (!train_dir)
        return kvz_fail(err, KVZ_EINVAL, "report: no training directory given");
    rep_ctx c = {.train_dir = train_dir};
    char *final_dir = NULL;
    int rc = render(&c, opt, &final_dir, out, err);
    free(final_dir);
    if (rc)
        kvz_report_summary_free(out);
    rep_metrics_free(&c.metrics);
    rep_strlist_free(&c.plots);
    rep_strlist_free(&c.skipped);
    free(c.gnuplot);
    return rc;
}

static void put_value(FILE *out, double v)
{
    if (isfinite(v))
        fprintf(out, " %9.4f", v);
    else
        fprintf(out, " %9s", "-");
}

void kvz_report_summary_print(const kvz_report_summary *s, FILE *out)
{
    fprintf(out, "%5s %9s %9s %9s %9s %9s %9s\n", "layer", "lin R2", "mlp R2", "lin r",
            "mlp r", "mlp ko2x", "mlp ko4x");
    double sum[2] = {0, 0};
    size_t cnt[2] = {0, 0};
    for (size_t i = 0; i < s->n_layers; i++) {
        const kvz_report_layer_row *r = &s->layers[i];
        fprintf(out, "%5d", r->layer);
        double v[6] = {r->linear_r2, r->mlp_r2, r->linear_pearson, r->mlp_pearson,
                       r->mlp_keep_overlap[0], r->mlp_keep_overlap[2]};
        for (int k = 0; k < 6; k++)
            put_value(out, v[k]);
        fputc('\n', out);
        for (int k = 0; k < 2; k++)
            if (isfinite(v[k])) {
                sum[k] += v[k];
                cnt[k]++;
            }
    }
    fprintf(out, "%5s", "mean");
    put_value(out, cnt[0] ? sum[0] / (double)cnt[0] : NAN);
    put_value(out, cnt[1] ? sum[1] / (double)cnt[1] : NAN);
    fprintf(out, "   (paper: MLP r^2 %.2f-%.2f)\n", REP_PAPER_R2_LO, REP_PAPER_R2_HI);
    for (size_t i = 0; i < s->n_skipped; i++)
        fprintf(out, "skipped %s\n", s->skipped[i]);
}

void kvz_report_summary_free(kvz_report_summary *s)
{
    free(s->out_dir);
    free(s->index_html);
    free(s->layers);
    for (size_t i = 0; i < s->n_plots; i++)
        free(s->plots[i]);
    free(s->plots);
    for (size_t i = 0; i < s->n_skipped; i++)
        free(s->skipped[i]);
    free(s->skipped);
    memset(s, 0, sizeof *s);
}
