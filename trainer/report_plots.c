/* report_plots: the per-layer plots drawn from metrics.json (r2_by_layer.svg,
 * keep_overlap.svg) and the compression-vs-threshold plot (compression.svg
 * from compression.csv): data files and gnuplot scripts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"
#include "report_internal.h"

static void put_num(FILE *fp, double v)
{
    if (isfinite(v))
        fprintf(fp, " %.6g", v);
    else
        fputs(" NaN", fp);
}

/* gnuplot/layers.dat: layer, linear r2, mlp r2, mlp r², linear r²,
 * linear keep overlap 2x 3x 4x, mlp keep overlap 2x 3x 4x. */
static int write_layers_dat(const rep_ctx *c, kvz_error *err)
{
    FILE *fp;
    char *path;
    int rc = rep_open_work_file(c, "layers.dat", &fp, &path, err);
    if (rc)
        return rc;
    fputs("# layer linear_r2 mlp_r2 mlp_pearson2 linear_pearson2 linear_ko2x linear_ko3x "
          "linear_ko4x mlp_ko2x mlp_ko3x mlp_ko4x\n", fp);
    for (size_t i = 0; i < c->metrics.n_layers; i++) {
        const rep_layer *l = &c->metrics.layers[i];
        fprintf(fp, "%d", l->layer);
        put_num(fp, l->linear.r2);
        put_num(fp, l->mlp.r2);
        put_num(fp, l->mlp.pearson * l->mlp.pearson);
        put_num(fp, l->linear.pearson * l->linear.pearson);
        for (int k = 0; k < 3; k++)
            put_num(fp, l->linear.keep_overlap[k]);
        for (int k = 0; k < 3; k++)
            put_num(fp, l->mlp.keep_overlap[k]);
        fputc('\n', fp);
    }
    rc = rep_close_work_file(fp, path, err);
    free(path);
    return rc;
}

/* x range and tic step for a layer axis. */
static void layer_axis(FILE *s, const rep_metrics *m)
{
    int lo = m->layers[0].layer, hi = m->layers[m->n_layers - 1].layer;
    int step = (hi - lo) / 15 + 1;
    fprintf(s, "set xrange [%g:%g]\nset xtics %d\nset mxtics 1\nset xlabel 'layer'\n", lo - 0.5,
            hi + 0.5, step);
}

static int finish_script(rep_ctx *c, const char *name, FILE *s, char **bufp, kvz_error *err)
{
    int bad = ferror(s);
    fclose(s); /* sets *bufp */
    char *buf = *bufp;
    int rc = bad ? kvz_fail(err, KVZ_ENOMEM, "report: out of memory") : KVZ_OK;
    if (!rc)
        rc = rep_gnuplot_run(c, name, buf, err);
    free(buf);
    if (!rc)
        rc = rep_strlist_addf(&c->plots, err, "%s.svg", name);
    return rc;
}

int rep_plot_r2(rep_ctx *c, kvz_error *err)
{
    int rc = write_layers_dat(c, err);
    if (rc)
        return rc;
    double lo = 0.0;
    for (size_t i = 0; i < c->metrics.n_layers; i++) {
        const rep_layer *l = &c->metrics.layers[i];
        if (isfinite(l->linear.r2) && l->linear.r2 - 0.05 < lo)
            lo = l->linear.r2 - 0.05;
        if (isfinite(l->mlp.r2) && l->mlp.r2 - 0.05 < lo)
            lo = l->mlp.r2 - 0.05;
    }
    lo = floor(lo * 10.0) / 10.0;
    char *buf;
    size_t len;
    FILE *s;
    if (rep_script_begin(&buf, &len, &s, "r2_by_layer", 800, 500))
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    layer_axis(s, &c->metrics);
    fprintf(s,
            "set title 'Held-out R² per layer: Linear vs MLP surrogate' font ',15'\n"
            "set ylabel 'R² on the test split (1 = perfect)'\n"
            "set yrange [%g:1]\nset key bottom right\n"
            "set object 1 rect from graph 0, first %g to graph 1, first %g behind "
            "fc rgb '#2ca02c' fs transparent solid 0.15 noborder\n"
            "set label 1 'paper: MLP r² (squared Pearson) %.2f-%.2f' at graph 0.015, first %g "
            "offset 0,0.7 tc rgb '#2a7a2a' font ',11'\n"
            "plot 'gnuplot/layers.dat' u 1:2 w lp lw 2 pt 7 ps 0.8 lc rgb '#1f77b4' t 'Linear R²', \\\n"
            "  '' u 1:3 w lp lw 2 pt 5 ps 0.8 lc rgb '#d62728' t 'MLP R²', \\\n"
            "  '' u 1:4 w l dt 2 lw 1.5 lc rgb '#d62728' t 'MLP r² (squared Pearson)', \\\n"
            "  keyentry w boxes fs transparent solid 0.15 noborder fc rgb '#2ca02c' "
            "t 'paper band (MLP r²)'\n",
            lo, REP_PAPER_R2_LO, REP_PAPER_R2_HI, REP_PAPER_R2_LO, REP_PAPER_R2_HI,
            REP_PAPER_R2_HI);
    return finish_script(c, "r2_by_layer", s, &buf, err);
}

static int has_keep_overlap(const rep_metrics *m, double *lo)
{
    int any = 0;
    *lo = 1.0;
    for (size_t i = 0; i < m->n_layers; i++)
        for (int k = 0; k < 3; k++) {
            double v[2] = {m->layers[i].linear.keep_overlap[k], m->layers[i].mlp.keep_overlap[k]};
            for (int j = 0; j < 2; j++)
                if (isfinite(v[j])) {
                    any = 1;
                    *lo = v[j] < *lo ? v[j] : *lo;
                }
        }
    return any;
}

int rep_plot_keep_overlap(rep_ctx *c, kvz_error *err)
{
    double lo;
    if (!has_keep_overlap(&c->metrics, &lo))
        return rep_strlist_addf(&c->skipped, err,
                                "keep_overlap.svg: metrics.json has no keep_overlap values");
    int rc = write_layers_dat(c, err);
    if (rc)
        return rc;
    lo = floor((lo - 0.05) * 10.0) / 10.0;
    char *buf;
    size_t len;
    FILE *s;
    if (rep_script_begin(&buf, &len, &s, "keep_overlap", 800, 500))
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    layer_axis(s, &c->metrics);
    fprintf(s,
            "set title 'Keep overlap with the oracle at 2x / 3x / 4x compression' font ',15'\n"
            "set ylabel 'oracle-kept pairs also kept (fraction)'\n"
            "set yrange [%g:1]\nset key bottom left maxrows 3\n"
            "c2='#1f77b4'; c3='#ff7f0e'; c4='#2ca02c'\n"
            "plot 'gnuplot/layers.dat' u 1:9 w lp lw 2 pt 7 ps 0.7 lc rgb c2 t 'MLP 2x', \\\n"
            "  '' u 1:10 w lp lw 2 pt 7 ps 0.7 lc rgb c3 t 'MLP 3x', \\\n"
            "  '' u 1:11 w lp lw 2 pt 7 ps 0.7 lc rgb c4 t 'MLP 4x', \\\n"
            "  '' u 1:6 w lp lw 1.5 dt 2 pt 6 ps 0.7 lc rgb c2 t 'Linear 2x', \\\n"
            "  '' u 1:7 w lp lw 1.5 dt 2 pt 6 ps 0.7 lc rgb c3 t 'Linear 3x', \\\n"
            "  '' u 1:8 w lp lw 1.5 dt 2 pt 6 ps 0.7 lc rgb c4 t 'Linear 4x'\n",
            lo < 0 ? 0 : lo);
    return finish_script(c, "keep_overlap", s, &buf, err);
}

/* compression.csv -> gnuplot/compression.dat, one block per known model
 * (oracle, linear, mlp); sets present[m]. */
static const char *const COMP_MODELS[3] = {"oracle", "linear", "mlp"};

static int write_compression_dat(const rep_ctx *c, const rep_csv *t, int present[3],
                                 double range[2], kvz_error *err)
{
    FILE *fp;
    char *path;
    int rc = rep_open_work_file(c, "compression.dat", &fp, &path, err);
    range[0] = INFINITY;
    range[1] = -INFINITY;
    for (int m = 0; m < 3 && !rc; m++) {
        fprintf(fp, "# %s: tau compression\n", COMP_MODELS[m]);
        present[m] = 0;
        for (size_t r = 0; r < t->n_rows && !rc; r++) {
            if (strcmp(t->cells[r * 3], COMP_MODELS[m]))
                continue;
            double tau, frac;
            rc = rep_csv_number(t, r, 1, &tau, err);
            if (!rc)
                rc = rep_csv_number(t, r, 2, &frac, err);
            if (rc || !isfinite(tau))
                continue;
            fprintf(fp, "%.6g", tau);
            put_num(fp, frac);
            fputc('\n', fp);
            present[m] = 1;
            range[0] = tau < range[0] ? tau : range[0];
            range[1] = tau > range[1] ? tau : range[1];
        }
        fputs("\n\n", fp);
    }
    if (fp) {
        int crc = rep_close_work_file(fp, path, err);
        rc = rc ? rc : crc;
    }
    free(path);
    return rc;
}

static void compression_script(FILE *s, const int present[3], const double range[2])
{
    static const char *const titles[3] = {"oracle (KVzip+)", "Linear", "MLP"};
    static const char *const styles[3] = {"lw 2.5 lc rgb 'black'", "lw 2 dt 2 lc rgb '#1f77b4'",
                                          "lw 2 lc rgb '#d62728'"};
    fprintf(s,
            "set title 'Compression vs threshold τ (test split, mean over layers and "
            "heads)' font ',15'\n"
            "set xlabel 'threshold τ (log-score; a KV pair is pruned when y < τ)'\n"
            "set ylabel 'compression (fraction of KV pairs pruned)'\n"
            "set xrange [%g:%g]\nset yrange [0:1]\nset key top left\n"
            "set y2range [0:1]\nset y2tics ('2x' 0.5, '3x' 2.0/3, '4x' 0.75) tc rgb '#666666'\n"
            "set object 1 rect from first %g, graph 0 to first %g, graph 1 behind "
            "fc rgb '#888888' fs transparent solid 0.15 noborder\n"
            "set label 1 'reference thresholds' at first %g, graph 0.10 center font ',11'\n"
            "set label 2 '(Llama-3.1-8B: -9..-6, Qwen3-8B: -6..-3)' at first %g, graph 0.05 "
            "center font ',9'\n"
            "set arrow from graph 0, first 0.5 to graph 1, first 0.5 nohead dt 3 lc rgb '#999999'\n"
            "set arrow from graph 0, first 2.0/3 to graph 1, first 2.0/3 nohead dt 3 lc rgb '#999999'\n"
            "set arrow from graph 0, first 0.75 to graph 1, first 0.75 nohead dt 3 lc rgb '#999999'\n"
            "plot",
            range[0], range[1], REP_REF_TAU_LO, REP_REF_TAU_HI,
            0.5 * (REP_REF_TAU_LO + REP_REF_TAU_HI), 0.5 * (REP_REF_TAU_LO + REP_REF_TAU_HI));
    const char *sep = "";
    for (int m = 0; m < 3; m++)
        if (present[m]) {
            fprintf(s, "%s 'gnuplot/compression.dat' index %d u 1:2 w l %s t '%s'", sep, m,
                    styles[m], titles[m]);
            sep = ", \\\n ";
        }
    fputc('\n', s);
}

int rep_plot_compression(rep_ctx *c, kvz_error *err)
{
    static const char *const cols[3] = {"model", "tau", "compression"};
    char *path = kvz_path_join(c->train_dir, "compression.csv");
    if (!path)
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    rep_csv t;
    kvz_error why = {0};
    int rc = rep_csv_load(path, cols, 3, &t, &why);
    free(path);
    if (rc == KVZ_ENOMEM)
        return kvz_fail(err, rc, "%s", why.msg);
    if (rc)
        return rep_strlist_addf(&c->skipped, err, "compression.svg: %s", why.msg);
    int present[3] = {0, 0, 0};
    double range[2];
    rc = write_compression_dat(c, &t, present, range, &why);
    rep_csv_free(&t);
    if (rc && rc != KVZ_EFORMAT)
        return kvz_fail(err, rc, "%s", why.msg);
    if (!rc && !present[0] && !present[1] && !present[2])
        rc = kvz_fail(&why, KVZ_EFORMAT, "compression.csv: no oracle/linear/mlp rows");
    if (rc)
        return rep_strlist_addf(&c->skipped, err, "compression.svg: %s", why.msg);
    char *buf;
    size_t len;
    FILE *s;
    if (rep_script_begin(&buf, &len, &s, "compression", 800, 500))
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    compression_script(s, present, range);
    return finish_script(c, "compression", s, &buf, err);
}
