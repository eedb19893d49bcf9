/* cli_progress: the progress bar / periodic lines on stderr (see the header). */
#include "cli_progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_forward.h"

void cli_progress_init(cli_progress *p, int quiet)
{
    memset(p, 0, sizeof *p);
    p->quiet = quiet;
    p->tty = isatty(STDERR_FILENO);
    const char *mode = getenv("KVZAP_PROGRESS");
    if (mode && !strcmp(mode, "plain"))
        p->tty = 0;
    else if (mode && !strcmp(mode, "bar"))
        p->tty = 1;
    p->period_s = 10.0;
    p->last_print = -1e9;
}

const char *cli_human_count(double v, char *buf, size_t len)
{
    if (v >= 1e9)
        snprintf(buf, len, "%.1fG", v / 1e9);
    else if (v >= 1e6)
        snprintf(buf, len, "%.1fM", v / 1e6);
    else if (v >= 1e4)
        snprintf(buf, len, "%.1fk", v / 1e3);
    else
        snprintf(buf, len, "%.0f", v);
    return buf;
}

const char *cli_human_duration(double s, char *buf, size_t len)
{
    long t = (long)(s + 0.5);
    if (t < 60)
        snprintf(buf, len, "%lds", t);
    else if (t < 3600)
        snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, len, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
    return buf;
}

static void format_status(char *out, size_t len, size_t done, size_t total, const char *unit,
                          double rate, const char *rate_unit, double elapsed_s,
                          const char *extra)
{
    char r[32], eta[32], el[32];
    cli_human_count(rate, r, sizeof r);
    if (done > 0 && done < total)
        cli_human_duration(elapsed_s / (double)done * (double)(total - done), eta, sizeof eta);
    else
        snprintf(eta, sizeof eta, "-");
    cli_human_duration(elapsed_s, el, sizeof el);
    snprintf(out, len, "%zu/%zu %s  %s %s  elapsed %s  ETA %s%s%s", done, total, unit, r,
             rate_unit, el, eta, extra ? "  " : "", extra ? extra : "");
}

void cli_progress_update(cli_progress *p, size_t done, size_t total, const char *unit,
                         double rate, const char *rate_unit, double elapsed_s, const char *extra,
                         int force)
{
    if (p->quiet)
        return;
    double t = cli_now();
    double min_gap = p->tty ? 0.1 : (p->period_s > 0 ? p->period_s : 10.0);
    if (!force && t - p->last_print < min_gap)
        return;
    p->last_print = t;
    char status[512];
    format_status(status, sizeof status, done, total, unit, rate, rate_unit, elapsed_s, extra);
    if (!p->tty) {
        fprintf(stderr, "%s\n", status);
        return;
    }
    enum { WIDTH = 24 };
    char bar[WIDTH + 1];
    size_t fill = total ? done * WIDTH / total : 0;
    for (size_t i = 0; i < WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = '\0';
    fprintf(stderr, "\r\033[K[%s] %s", bar, status);
    fflush(stderr);
    p->drawn = 1;
}

void cli_progress_end(cli_progress *p)
{
    if (p->drawn && !p->quiet)
        fputc('\n', stderr);
    p->drawn = 0;
}
