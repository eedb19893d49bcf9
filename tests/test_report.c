/* test_report: kvz_report_render on synthetic `kvzap train` output (4 layers,
 * 3 KV heads, predictions with correlated noise): every SVG is drawn and
 * well-formed, index.html/README.md link them and show metrics.json's
 * numbers; missing optional inputs skip their plot with a note; missing or
 * corrupt metrics.json, a missing gnuplot, a failing gnuplot and an
 * unwritable output directory fail cleanly without leaving a report dir. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/kvz_file.h"
#include "kvz_test.h"
#include "trainer/report.h"

#define N_LAYERS 4
#define KVZ_PI 3.14159265358979323846
static const double LIN_R2[N_LAYERS] = {0.5012, 0.5317, 0.5544, 0.5209};
static const double MLP_R2[N_LAYERS] = {0.6523, 0.6871, 0.7105, 0.6688};
static const double LIN_R[N_LAYERS] = {0.7081, 0.7292, 0.7446, 0.7218};
static const double MLP_R[N_LAYERS] = {0.8077, 0.8289, 0.8429, 0.8178};
static const double MLP_MSE[N_LAYERS] = {0.7431, 0.6987, 0.6512, 0.7204};

static char *path_in(const char *dir, const char *name)
{
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    KVZ_CHECK(fp != NULL, "cannot write %s", path);
    if (fp) {
        fputs(text, fp);
        fclose(fp);
    }
}

static void write_metrics(const char *dir)
{
    FILE *fp = fopen(path_in(dir, "metrics.json"), "w");
    fprintf(fp, "{\"dataset\": \"out/oracle.h5\", \"model\": \"models/SmolLM2 <test>.gguf\", "
                "\"n_layers\": 30, \"d_model\": 576, \"n_kv_heads\": 3, \"mlp_hidden\": 72,\n"
                " \"layers\": [\n");
    for (int l = N_LAYERS - 1; l >= 0; l--) { /* unsorted on purpose */
        fprintf(fp, "  {\"layer\": %d, \"n_train\": 9500, \"n_val\": 500, \"n_test\": 1000,\n",
                l * 9);
        for (int m = 0; m < 2; m++) {
            double r2 = m ? MLP_R2[l] : LIN_R2[l], r = m ? MLP_R[l] : LIN_R[l];
            double mse = m ? MLP_MSE[l] : 0.9 + 0.01 * l;
            fprintf(fp, "   \"%s\": {\"mse\": %.4f, \"r2\": %.4f, \"pearson\": %.4f, \"heads\": [",
                    m ? "mlp" : "linear", mse, r2, r);
            for (int h = 0; h < 3; h++)
                fprintf(fp, "%s{\"mse\": %.4f, \"r2\": %.4f, \"pearson\": %.4f}", h ? ", " : "",
                        mse + 0.01 * h, r2 - 0.01 * h, r - 0.01 * h);
            fprintf(fp, "], \"keep_overlap\": {\"2x\": %.4f, \"3x\": %.4f, \"4x\": %.4f}",
                    0.80 + 0.05 * m + 0.01 * l, 0.74 + 0.05 * m, 0.69 + 0.05 * m - 0.01 * l);
            fprintf(fp, m ? ", \"train_seconds\": 3.1, \"final_train_loss\": 0.7, "
                            "\"final_val_loss\": 0.75}\n"
                          : ", \"fit_seconds\": 0.02},\n");
        }
        fprintf(fp, "  }%s\n", l ? "," : "");
    }
    fputs(" ]}\n", fp);
    fclose(fp);
}

static void write_train_log(const char *dir)
{
    FILE *fp = fopen(path_in(dir, "train_log.csv"), "w");
    fputs("layer,epoch,lr,train_loss,val_loss,seconds\n", fp);
    for (int l = 0; l < N_LAYERS; l++)
        for (int e = 1; e <= 15; e++) {
            double tr = 2.5 * exp(-0.35 * e) + 0.6 + 0.03 * l;
            fprintf(fp, "%d,%d,%.6g,%.6f,%.6f,%.3f\n", l * 9, e,
                    0.0025 * (1 + cos(KVZ_PI * e / 15)), tr, tr * 1.06 + 0.02, 0.2 * e);
        }
    fclose(fp);
}

static double gaussian(unsigned long long *s)
{
    double u[2];
    for (int i = 0; i < 2; i++) {
        *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
        u[i] = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
    }
    return sqrt(-2 * log(u[0])) * cos(2 * KVZ_PI * u[1]);
}

static void write_predictions(const char *dir, int layer, int n)
{
    char name[64];
    snprintf(name, sizeof name, "predictions/layer_%d.csv", layer);
    FILE *fp = fopen(path_in(dir, name), "w");
    unsigned long long s = 12345 + (unsigned long long)layer;
    fputs("head,oracle,linear,mlp\n", fp);
    for (int i = 0; i < n; i++) {
        double y = -8 + 3 * gaussian(&s), common = gaussian(&s);
        double lin = -2.4 + 0.7 * y + 1.2 * common + 0.8 * gaussian(&s);
        double mlp = -1.2 + 0.85 * y + 0.8 * common + 0.5 * gaussian(&s);
        fprintf(fp, "%d,%.5f,%.5f,%.5f\n", i % 3, y, lin, mlp);
    }
    fclose(fp);
}

static void write_compression(const char *dir)
{
    static const char *const models[3] = {"oracle", "linear", "mlp"};
    static const double mean[3] = {-8, -8.2, -8.1}, sd[3] = {3, 2.4, 2.7};
    FILE *fp = fopen(path_in(dir, "compression.csv"), "w");
    fputs("model,tau,compression\n", fp);
    for (int m = 0; m < 3; m++)
        for (int k = 0; k <= 80; k++) {
            double tau = -20 + 0.25 * k;
            fprintf(fp, "%s,%.2f,%.6f\n", models[m], tau,
                    0.5 * erfc(-(tau - mean[m]) / (sd[m] * sqrt(2.0))));
        }
    fclose(fp);
}

static void write_training_output(const char *dir)
{
    mkdir(dir, 0777);
    mkdir(path_in(dir, "predictions"), 0777);
    write_metrics(dir);
    write_train_log(dir);
    write_predictions(dir, 0, 3000);
    write_predictions(dir, 27, 3000);
    write_compression(dir);
}

static char *slurp(const char *path)
{
    char *text = NULL;
    if (kvz_file_read_all(path, &text, NULL, NULL))
        return NULL;
    return text;
}

static void check_svg(const char *dir, const char *name)
{
    char *text = slurp(path_in(dir, name));
    KVZ_CHECK(text != NULL, "%s: missing", name);
    if (!text)
        return;
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == ' '))
        text[--n] = '\0';
    const char *start = text + strspn(text, " \n");
    KVZ_CHECK(n > 3000, "%s: only %zu bytes", name, n);
    KVZ_CHECK(!strncmp(start, "<?xml", 5) || !strncmp(start, "<svg", 4), "%s: starts '%.20s'",
              name, start);
    KVZ_CHECK(n >= 6 && !strcmp(text + n - 6, "</svg>"), "%s: does not end with </svg>", name);
    KVZ_CHECK(strstr(text, "<path") || strstr(text, "<polyline") || strstr(text, "<image"),
              "%s: draws nothing", name);
    free(text);
}

/* Entries of dir whose name starts with prefix. */
static int count_prefixed(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += !strncmp(e->d_name, prefix, strlen(prefix));
    if (d)
        closedir(d);
    return n;
}

static const char *const ALL_SVGS[] = {"r2_by_layer.svg",     "loss_curves.svg",
                                       "density_layer_0.svg", "density_layer_27.svg",
                                       "compression.svg",     "keep_overlap.svg"};
#define N_SVGS (sizeof ALL_SVGS / sizeof ALL_SVGS[0])

static void check_pages(const char *report)
{
    char *html = slurp(path_in(report, "index.html"));
    char *md = slurp(path_in(report, "README.md"));
    KVZ_CHECK(html && md, "index.html or README.md missing in %s", report);
    if (!html || !md) {
        free(html);
        free(md);
        return;
    }
    KVZ_CHECK(strstr(html, "<!DOCTYPE html>") && strstr(html, "</html>"), "index.html incomplete");
    for (size_t i = 0; i < N_SVGS; i++) {
        char ref[96];
        snprintf(ref, sizeof ref, "<img src=\"%s\"", ALL_SVGS[i]);
        KVZ_CHECK(strstr(html, ref) != NULL, "index.html does not embed %s", ALL_SVGS[i]);
        snprintf(ref, sizeof ref, "(%s)", ALL_SVGS[i]);
        KVZ_CHECK(strstr(md, ref) != NULL, "README.md does not link %s", ALL_SVGS[i]);
        check_svg(report, ALL_SVGS[i]);
    }
    for (int l = 0; l < N_LAYERS; l++) {
        char num[4][16];
        snprintf(num[0], 16, "%.4f", LIN_R2[l]);
        snprintf(num[1], 16, "%.4f", MLP_R2[l]);
        snprintf(num[2], 16, "%.4f", MLP_R[l]);
        snprintf(num[3], 16, "%.4f", MLP_MSE[l]);
        for (int k = 0; k < 4; k++) {
            char cell[96];
            snprintf(cell, sizeof cell, "<td>%s</td>", num[k]);
            KVZ_CHECK(strstr(html, cell) != NULL, "index.html lacks %s (layer %d)", cell, l);
            KVZ_CHECK(strstr(md, num[k]) != NULL, "README.md lacks %s (layer %d)", num[k], l);
        }
    }
    KVZ_CHECK(strstr(html, "<td>0.8200</td>") != NULL, "index.html lacks the keep overlap 0.82");
    KVZ_CHECK(strstr(html, "out/oracle.h5") && strstr(html, "SmolLM2 &lt;test&gt;.gguf"),
              "index.html lacks the escaped provenance");
    KVZ_CHECK(strstr(md, "out/oracle.h5") != NULL, "README.md lacks the dataset");
    free(html);
    free(md);
}

static void test_full_report(const char *train)
{
    kvz_report_summary sum;
    kvz_error err = {0};
    int rc = kvz_report_render(train, NULL, &sum, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc)
        return;
    KVZ_CHECK(sum.n_plots == N_SVGS, "%zu plots", sum.n_plots);
    KVZ_CHECK(sum.n_skipped == 0, "skipped: %s", sum.n_skipped ? sum.skipped[0] : "");
    KVZ_CHECK(sum.n_layers == N_LAYERS && sum.layers[1].layer == 9 &&
                  fabs(sum.layers[1].mlp_r2 - MLP_R2[1]) < 1e-9,
              "summary rows wrong");
    KVZ_CHECK(strstr(sum.index_html, "/report/index.html") != NULL, "index %s", sum.index_html);
    check_pages(sum.out_dir);
    KVZ_CHECK(count_prefixed(train, "report.") == 0, "a report.tmp/old dir was left");
    FILE *fp = tmpfile();
    kvz_report_summary_print(&sum, fp);
    rewind(fp);
    char text[4096] = "";
    text[fread(text, 1, sizeof text - 1, fp)] = '\0';
    fclose(fp);
    KVZ_CHECK(strstr(text, "mlp R2") && strstr(text, "0.6871") && strstr(text, "mean"),
              "summary print: %s", text);
    kvz_report_summary_free(&sum);
    /* Rendering again replaces the old report completely. */
    write_text(path_in(path_in(train, "report"), "stale.txt"), "old");
    rc = kvz_report_render(train, NULL, &sum, &err);
    KVZ_CHECK_OK(rc, err);
    KVZ_CHECK(!kvz_path_exists(path_in(path_in(train, "report"), "stale.txt")),
              "the old report was not replaced");
    KVZ_CHECK(count_prefixed(train, "report.") == 0, "a report.tmp/old dir was left");
    kvz_report_summary_free(&sum);
}

static void test_missing_optional(const char *train, const char *tmp)
{
    unlink(path_in(train, "train_log.csv"));
    unlink(path_in(train, "compression.csv"));
    unlink(path_in(train, "predictions/layer_0.csv"));
    write_text(path_in(train, "predictions/layer_27.csv"), "head,oracle,linear,mlp\n0,-3,x,1\n");
    kvz_report_options opt = {.out_dir = path_in(tmp, "other_report")};
    kvz_report_summary sum;
    kvz_error err = {0};
    int rc = kvz_report_render(train, &opt, &sum, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc)
        return;
    KVZ_CHECK(sum.n_plots == 2 && sum.n_skipped == 3, "%zu plots, %zu skipped", sum.n_plots,
              sum.n_skipped);
    const char *want[3] = {"loss_curves.svg: ", "density_layer_27.svg: ", "compression.svg: "};
    for (size_t i = 0; i < 3 && sum.n_skipped == 3; i++)
        KVZ_CHECK(!strncmp(sum.skipped[i], want[i], strlen(want[i])), "note %zu: %s", i,
                  sum.skipped[i]);
    KVZ_CHECK(sum.n_skipped == 3 && strstr(sum.skipped[1], "line 2: 'x' is not a number"),
              "bad predictions note");
    KVZ_CHECK(!kvz_path_exists(path_in(opt.out_dir, "loss_curves.svg")), "loss plot drawn");
    char *html = slurp(path_in(opt.out_dir, "index.html"));
    KVZ_CHECK(html && strstr(html, "Skipped plots") && strstr(html, "train_log.csv: not found"),
              "index.html does not note the skipped plots");
    KVZ_CHECK(html && !strstr(html, "loss_curves.svg\""), "index.html embeds a skipped plot");
    free(html);
    kvz_report_summary_free(&sum);
}

static void expect_failure(const char *train, const kvz_report_options *opt, int code,
                           const char *needle, const char *what)
{
    kvz_report_summary sum;
    kvz_error err = {0};
    int rc = kvz_report_render(train, opt, &sum, &err);
    KVZ_CHECK(rc == code, "%s: rc %d (want %d): %s", what, rc, code, err.msg);
    KVZ_CHECK(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, err.msg,
              needle);
    KVZ_CHECK(sum.index_html == NULL && sum.n_plots == 0, "%s: summary filled on failure", what);
    if (!rc)
        kvz_report_summary_free(&sum);
}

static void test_bad_metrics(const char *tmp)
{
    char *dir = path_in(tmp, "bad");
    mkdir(dir, 0777);
    expect_failure(dir, NULL, KVZ_EIO, "bad/metrics.json: cannot open", "missing metrics.json");
    write_text(path_in(dir, "metrics.json"), "{\"layers\": [{\"layer\": 0, \"linear\": {");
    expect_failure(dir, NULL, KVZ_EFORMAT, "metrics.json: invalid JSON", "truncated JSON");
    write_text(path_in(dir, "metrics.json"),
               "{\"layers\": [{\"layer\": 0, \"linear\": {\"mse\": \"big\", \"r2\": 0.5, "
               "\"pearson\": 0.7}, \"mlp\": {\"mse\": 1, \"r2\": 0.5, \"pearson\": 0.7}}]}");
    expect_failure(dir, NULL, KVZ_EFORMAT, "metrics.json: layers[0].linear.mse: expected a number",
                   "wrong type");
    write_text(path_in(dir, "metrics.json"), "{\"layers\": []}");
    expect_failure(dir, NULL, KVZ_EFORMAT, "metrics.json: \"layers\" is empty", "no layers");
    expect_failure(path_in(tmp, "nowhere"), NULL, KVZ_EIO, "nowhere: not a directory",
                   "missing training dir");
    KVZ_CHECK(count_prefixed(dir, "report") == 0, "a report dir was created for bad input");
}

static void test_bad_output(const char *train, const char *tmp)
{
    write_text(path_in(tmp, "a_file"), "x");
    kvz_report_options opt = {.out_dir = path_in(path_in(tmp, "a_file"), "report")};
    expect_failure(train, &opt, KVZ_EIO, "a_file/report.tmp.", "output under a regular file");
    opt.out_dir = path_in(tmp, "failed_report");
    opt.gnuplot = "/bin/false";
    expect_failure(train, &opt, KVZ_EIO, "gnuplot failed (exit status 1)", "failing gnuplot");
    KVZ_CHECK(count_prefixed(tmp, "failed_report") == 0, "a partial report dir was left");
}

int main(void)
{
    const char *tmp = kvz_test_tmpdir();
    char train[512];
    snprintf(train, sizeof train, "%s/surrogates", tmp);
    write_training_output(train);
    kvz_report_options no_gnuplot = {.gnuplot = "/nonexistent/gnuplot"};
    expect_failure(train, &no_gnuplot, KVZ_EUNSUPPORTED,
                   "gnuplot not found: install gnuplot-nox (scripts/install-deps)", "no gnuplot");
    test_bad_metrics(tmp);
    if (!kvz_path_exists("/usr/bin/gnuplot") && system("command -v gnuplot >/dev/null") != 0) {
        if (kvz_test_failed)
            return kvz_test_done();
        kvz_test_skip("gnuplot not installed (scripts/install-deps installs gnuplot-nox)");
    }
    test_full_report(train);
    test_bad_output(train, tmp);
    test_missing_optional(train, tmp);
    return kvz_test_done();
}
