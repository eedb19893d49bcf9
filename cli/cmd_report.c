/* cmd_report: `kvzap report` renders the training report (SVG plots via
 * gnuplot, index.html, README.md) from the files `kvzap train` wrote, prints
 * the per-layer R^2 summary and the path of index.html. */
#include <stdio.h>
#include <string.h>

#include "../trainer/report.h"
#include "commands.h"

static const char USAGE[] = "usage: kvzap report [DIR] [--out DIR] [--quiet]\n";

static const char HELP[] =
    "\nReads the output of `kvzap train` in DIR (default out/surrogates: metrics.json,\n"
    "train_log.csv, predictions/layer_<l>.csv, compression.csv) and writes a report\n"
    "directory, DIR/report unless --out names another: SVG plots drawn with gnuplot\n"
    "(R^2 per layer, loss curves, predicted-vs-oracle densities, compression vs\n"
    "threshold, keep overlap), index.html and README.md. metrics.json is required;\n"
    "a plot whose input file is missing is skipped and listed. The directory is\n"
    "built beside its final name and renamed into place, replacing an older report.\n\n"
    "  --out DIR   write the report to DIR instead of DIR/report\n"
    "  --quiet     print only the path of index.html\n\n"
    "Needs gnuplot (Debian gnuplot-nox; scripts/install-deps). Files: docs/training-output.md.\n";

int cmd_report(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("%s%s", USAGE, HELP);
        return 0;
    }
    const char *dir = NULL;
    kvz_report_options opt = {0};
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc)
            opt.out_dir = argv[++i];
        else if (!strncmp(argv[i], "--out=", 6))
            opt.out_dir = argv[i] + 6;
        else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q"))
            quiet = 1;
        else if (!strcmp(argv[i], "--out"))
            return cli_usage_error("report", "--out needs a directory", USAGE);
        else if (argv[i][0] == '-' || dir)
            return cli_usage_error("report", "unexpected argument", USAGE);
        else
            dir = argv[i];
    }
    kvz_report_summary sum;
    kvz_error err = {0};
    if (kvz_report_render(dir ? dir : "out/surrogates", &opt, &sum, &err))
        return cli_error("report", err.msg);
    if (!quiet)
        kvz_report_summary_print(&sum, stdout);
    printf("%s%s\n", quiet ? "" : "report: ", sum.index_html);
    kvz_report_summary_free(&sum);
    return 0;
}
