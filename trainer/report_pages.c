/* report_pages: the report's pages, index.html (self-contained but for the
 * linked SVGs) and README.md: provenance from metrics.json, the per-layer
 * metrics table, per-head detail, the figures and the skipped plots. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"
#include "report_internal.h"

typedef enum { PAGE_HTML, PAGE_MD } page_kind;

/* Writes s escaped for the page (HTML entities, or Markdown table pipes). */
static void put_text(FILE *fp, page_kind k, const char *s)
{
    for (; *s; s++) {
        if (k == PAGE_HTML && *s == '&')
            fputs("&amp;", fp);
        else if (k == PAGE_HTML && *s == '<')
            fputs("&lt;", fp);
        else if (k == PAGE_HTML && *s == '>')
            fputs("&gt;", fp);
        else if (k == PAGE_HTML && *s == '"')
            fputs("&quot;", fp);
        else if (k == PAGE_MD && (*s == '|' || *s == '`'))
            fputc(*s == '|' ? '/' : '\'', fp);
        else if (*s == '\n')
            fputc(' ', fp);
        else
            fputc(*s, fp);
    }
}

static void put_cell(FILE *fp, page_kind k, double v, const char *fmt)
{
    fputs(k == PAGE_HTML ? "<td>" : " ", fp);
    if (isfinite(v))
        fprintf(fp, fmt, v);
    else
        fputs("-", fp);
    fputs(k == PAGE_HTML ? "</td>" : " |", fp);
}

/* A figure's caption from its file name. */
static void caption(char *out, size_t cap, const char *svg)
{
    int layer;
    if (!strcmp(svg, "r2_by_layer.svg"))
        snprintf(out, cap, "Held-out R² per layer, Linear vs MLP; the shaded band is the "
                           "paper's 0.63-0.77 (squared Pearson of the MLP surrogates).");
    else if (!strcmp(svg, "loss_curves.svg"))
        snprintf(out, cap, "MLP training (solid) and validation (dashed) loss per epoch for "
                           "every layer; first, middle and last layer highlighted.");
    else if (!strcmp(svg, "compression.svg"))
        snprintf(out, cap, "Fraction of KV pairs pruned vs threshold tau for the oracle and "
                           "both surrogates (test split); shaded: the reference thresholds.");
    else if (!strcmp(svg, "keep_overlap.svg"))
        snprintf(out, cap, "Of the pairs the oracle keeps at 2x/3x/4x compression, the "
                           "fraction the surrogate keeps too (MLP solid, Linear dashed).");
    else if (sscanf(svg, "density_layer_%d.svg", &layer) == 1)
        snprintf(out, cap, "Layer %d: 2D histogram of predicted vs oracle log-score on "
                           "held-out pairs (log color scale); dashed: y = x.", layer);
    else
        snprintf(out, cap, "%s", svg);
}

static const char *const HTML_HEAD =
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    "<title>kvzap training report</title>\n<style>\n"
    "body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}\n"
    "table{border-collapse:collapse;margin:0.8em 0}\n"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}\n"
    "th{background:#f2f2f2}td.k,th.k{text-align:left}\n"
    "figure{margin:1.5em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}\n"
    "figcaption{color:#555;font-size:0.95em}.skip{color:#a35200}\n"
    "</style>\n</head>\n<body>\n<h1>kvzap training report</h1>\n";

static void provenance(FILE *fp, page_kind k, const rep_ctx *c)
{
    const rep_metrics *m = &c->metrics;
    if (k == PAGE_HTML)
        fputs("<h2>Provenance</h2>\n<table>\n<tr><th class=\"k\">training output</th>"
              "<td class=\"k\">", fp);
    else
        fputs("## Provenance\n\n| key | value |\n|---|---|\n| training output | `", fp);
    put_text(fp, k, c->train_dir);
    fputs(k == PAGE_HTML ? "</td></tr>\n" : "` |\n", fp);
    for (size_t i = 0; i < m->n_prov; i++) {
        fputs(k == PAGE_HTML ? "<tr><th class=\"k\">" : "| ", fp);
        put_text(fp, k, m->prov_keys[i]);
        fputs(k == PAGE_HTML ? "</th><td class=\"k\">" : " | `", fp);
        put_text(fp, k, m->prov_values[i]);
        fputs(k == PAGE_HTML ? "</td></tr>\n" : "` |\n", fp);
    }
    fputs(k == PAGE_HTML ? "</table>\n" : "\n", fp);
}

static const char *const TABLE_NOTE =
    "Held-out (test split) quality per trained layer. R² = 1 - SSE/SST of the predicted "
    "log-scores over all KV heads; Pearson r; MSE in log-score²; keep overlap at 2x/3x/4x: "
    "with thresholds pruning 1/2, 2/3, 3/4 of the pairs per head, the fraction of the "
    "oracle-kept pairs the surrogate keeps too. The paper reports r² 0.63-0.77 for MLP "
    "surrogates.";

static void layer_table_head(FILE *fp, page_kind k)
{
    if (k == PAGE_HTML) {
        fprintf(fp, "<h2>Quality per layer</h2>\n<p>%s</p>\n<table>\n<tr><th rowspan=\"2\">"
                    "layer</th><th colspan=\"3\">Linear</th><th colspan=\"3\">MLP</th>"
                    "<th colspan=\"3\">keep overlap, Linear</th><th colspan=\"3\">keep overlap,"
                    " MLP</th><th rowspan=\"2\">test pairs</th></tr>\n<tr>",
                TABLE_NOTE);
        for (int g = 0; g < 2; g++)
            fputs("<th>R<sup>2</sup></th><th>Pearson r</th><th>MSE</th>", fp);
        for (int g = 0; g < 2; g++)
            fputs("<th>2x</th><th>3x</th><th>4x</th>", fp);
        fputs("</tr>\n", fp);
    } else {
        fprintf(fp, "## Quality per layer\n\n%s\n\n| layer | Linear R² | Linear r | Linear MSE "
                    "| MLP R² | MLP r | MLP MSE | Lin 2x | Lin 3x | Lin 4x | MLP 2x | MLP 3x "
                    "| MLP 4x | test pairs |\n|",
                TABLE_NOTE);
        for (int i = 0; i < 14; i++)
            fputs("---:|", fp);
        fputc('\n', fp);
    }
}

static void model_cells(FILE *fp, page_kind k, const rep_model *m)
{
    put_cell(fp, k, m->r2, "%.4f");
    put_cell(fp, k, m->pearson, "%.4f");
    put_cell(fp, k, m->mse, "%.4g");
}

static void layer_table(FILE *fp, page_kind k, const rep_metrics *m)
{
    layer_table_head(fp, k);
    for (size_t i = 0; i < m->n_layers; i++) {
        const rep_layer *l = &m->layers[i];
        fprintf(fp, k == PAGE_HTML ? "<tr><td>%d</td>" : "| %d |", l->layer);
        model_cells(fp, k, &l->linear);
        model_cells(fp, k, &l->mlp);
        for (int j = 0; j < 3; j++)
            put_cell(fp, k, l->linear.keep_overlap[j], "%.4f");
        for (int j = 0; j < 3; j++)
            put_cell(fp, k, l->mlp.keep_overlap[j], "%.4f");
        put_cell(fp, k, l->n_test, "%.0f");
        fputs(k == PAGE_HTML ? "</tr>\n" : "\n", fp);
    }
    fputs(k == PAGE_HTML ? "</table>\n" : "\n", fp);
}

static void head_table(FILE *fp, page_kind k, const rep_layer *l)
{
    size_t n = l->linear.n_heads > l->mlp.n_heads ? l->linear.n_heads : l->mlp.n_heads;
    if (k == PAGE_HTML)
        fprintf(fp, "<details><summary>layer %d: per KV head</summary>\n<table>\n<tr><th>head"
                    "</th><th>Linear R<sup>2</sup></th><th>Linear r</th><th>Linear MSE</th>"
                    "<th>MLP R<sup>2</sup></th><th>MLP r</th><th>MLP MSE</th></tr>\n",
                l->layer);
    else
        fprintf(fp, "Layer %d:\n\n| head | Linear R² | Linear r | Linear MSE | MLP R² | "
                    "MLP r | MLP MSE |\n|---:|---:|---:|---:|---:|---:|---:|\n",
                l->layer);
    for (size_t h = 0; h < n; h++) {
        fprintf(fp, k == PAGE_HTML ? "<tr><td>%zu</td>" : "| %zu |", h);
        const rep_model *ms[2] = {&l->linear, &l->mlp};
        for (int j = 0; j < 2; j++) {
            int have = h < ms[j]->n_heads;
            put_cell(fp, k, have ? ms[j]->heads[h][1] : NAN, "%.4f");
            put_cell(fp, k, have ? ms[j]->heads[h][2] : NAN, "%.4f");
            put_cell(fp, k, have ? ms[j]->heads[h][0] : NAN, "%.4g");
        }
        fputs(k == PAGE_HTML ? "</tr>\n" : "\n", fp);
    }
    fputs(k == PAGE_HTML ? "</table></details>\n" : "\n", fp);
}

static void head_tables(FILE *fp, page_kind k, const rep_metrics *m)
{
    int any = 0;
    for (size_t i = 0; i < m->n_layers; i++)
        any |= m->layers[i].linear.n_heads || m->layers[i].mlp.n_heads;
    if (!any)
        return;
    fputs(k == PAGE_HTML ? "<h2>Quality per KV head</h2>\n" : "## Quality per KV head\n\n", fp);
    for (size_t i = 0; i < m->n_layers; i++)
        if (m->layers[i].linear.n_heads || m->layers[i].mlp.n_heads)
            head_table(fp, k, &m->layers[i]);
}

static void figures(FILE *fp, page_kind k, const rep_ctx *c)
{
    fputs(k == PAGE_HTML ? "<h2>Figures</h2>\n" : "## Figures\n\n", fp);
    for (size_t i = 0; i < c->plots.n; i++) {
        char cap[300];
        caption(cap, sizeof cap, c->plots.v[i]);
        if (k == PAGE_HTML)
            fprintf(fp, "<figure><img src=\"%s\" alt=\"%s\"><figcaption>%s</figcaption>"
                        "</figure>\n",
                    c->plots.v[i], c->plots.v[i], cap);
        else
            fprintf(fp, "![%s](%s)\n\n%s\n\n", c->plots.v[i], c->plots.v[i], cap);
    }
    if (!c->skipped.n)
        return;
    fputs(k == PAGE_HTML ? "<h2>Skipped plots</h2>\n<ul class=\"skip\">\n"
                         : "## Skipped plots\n\n", fp);
    for (size_t i = 0; i < c->skipped.n; i++) {
        fputs(k == PAGE_HTML ? "<li>" : "- ", fp);
        put_text(fp, k, c->skipped.v[i]);
        fputs(k == PAGE_HTML ? "</li>\n" : "\n", fp);
    }
    fputs(k == PAGE_HTML ? "</ul>\n" : "\n", fp);
}

static int write_page(const rep_ctx *c, page_kind k, kvz_error *err)
{
    char *path = kvz_path_join(c->work_dir, k == PAGE_HTML ? "index.html" : "README.md");
    if (!path)
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    kvz_atomic_file f;
    int rc = kvz_atomic_open(path, &f, err);
    free(path);
    if (rc)
        return rc;
    fputs(k == PAGE_HTML ? HTML_HEAD : "# kvzap training report\n\n", f.fp);
    provenance(f.fp, k, c);
    layer_table(f.fp, k, &c->metrics);
    figures(f.fp, k, c);
    head_tables(f.fp, k, &c->metrics);
    if (k == PAGE_HTML)
        fputs("</body>\n</html>\n", f.fp);
    return kvz_atomic_commit(&f, err);
}

int rep_write_pages(const rep_ctx *c, kvz_error *err)
{
    int rc = write_page(c, PAGE_HTML, err);
    return rc ? rc : write_page(c, PAGE_MD, err);
}
