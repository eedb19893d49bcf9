/* cli_progress: progress reporting on stderr for long jobs (oracle, train).
 * On a terminal: one bar redrawn in place, at most 10 times a second
 *   [#########.........] 12/30 docs  1.9k tok/s  ETA 1m20s  6.0k samples
 * Otherwise (logs, CI): a plain line at most every `period_s` seconds plus
 * the final one. Quiet: nothing. */
#ifndef KVZ_CLI_PROGRESS_H
#define KVZ_CLI_PROGRESS_H

#include <stddef.h>

typedef struct cli_progress {
    int quiet, tty;
    double period_s;    /* plain-line period; 0: 10 s */
    double last_print;  /* monotonic seconds of the last output */
    int drawn;          /* a bar is on the current line */
} cli_progress;

/* tty from isatty(stderr); KVZAP_PROGRESS=plain|bar overrides (tests). */
void cli_progress_init(cli_progress *p, int quiet);
/* done/total units of `unit` (e.g. "docs"), rate in `rate_unit` per second
 * (e.g. tokens/s), extra free text (may be NULL). force: print now. */
void cli_progress_update(cli_progress *p, size_t done, size_t total, const char *unit,
                         double rate, const char *rate_unit, double elapsed_s, const char *extra,
                         int force);
/* Ends a bar's line (so the next message starts on a fresh line). */
void cli_progress_end(cli_progress *p);
/* "1.2k", "3.4M" style compact numbers into buf. */
const char *cli_human_count(double v, char *buf, size_t len);
/* "42s", "3m05s", "1h02m" into buf. */
const char *cli_human_duration(double s, char *buf, size_t len);

#endif
