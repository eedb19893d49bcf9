/* cli_forward: helpers shared by kvzap generate, ppl and logits (see
 * cli_forward.h). */
#include "cli_forward.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "commands.h"

int cli_parse_threads(const char *cmd, const char *text, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < 1 || v > 4096) {
        char msg[300];
        snprintf(msg, sizeof msg, "--threads must be an integer from 1 to 4096, got '%.200s'", text);
        cli_error(cmd, msg);
        return 2;
    }
    *out = (int)v;
    return 0;
}

int cli_parse_size(const char *cmd, const char *opt, const char *text, size_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || v == 0 || v > (1ull << 40)) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s must be a positive integer, got '%.200s'", opt, text);
        cli_error(cmd, msg);
        return 2;
    }
    *out = (size_t)v;
    return 0;
}

static int bad_id(const char *cmd, const char *what)
{
    char msg[300];
    snprintf(msg, sizeof msg, "--ids: '%.200s' is not a token id (non-negative integer)", what);
    cli_error(cmd, msg);
    return 2;
}

int cli_parse_ids(const char *cmd, const char *text, int32_t **ids, size_t *n)
{
    size_t cap = 16, count = 0;
    int32_t *v = malloc(cap * sizeof *v);
    const char *p = text;
    while (v) {
        while (*p == ',' || *p == ' ')
            p++;
        if (!*p)
            break;
        char *end = NULL;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (errno || end == p || x < 0 || x > INT32_MAX || (*end && *end != ',' && *end != ' ')) {
            free(v);
            return bad_id(cmd, p);
        }
        if (count == cap) {
            int32_t *w = realloc(v, (cap *= 2) * sizeof *v);
            if (!w)
                free(v);
            v = w;
            if (!v)
                break;
        }
        v[count++] = (int32_t)x;
        p = end;
    }
    if (!v)
        return cli_error(cmd, "out of memory");
    if (count == 0) {
        free(v);
        cli_error(cmd, "--ids: no token ids given");
        return 2;
    }
    *ids = v;
    *n = count;
    return 0;
}

int cli_model_open(const char *cmd, const char *path, int n_threads, size_t max_tokens,
                   int want_tokenizer, cli_model *m)
{
    memset(m, 0, sizeof *m);
    kvz_error err = {0};
    kvz_forward_options opt = {n_threads, max_tokens, 0};
    int rc = kvz_checkpoint_open(path, &m->ck, &err);
    if (!rc && want_tokenizer)
        rc = kvz_tokenizer_load(path, &m->tok, &err);
    if (!rc)
        rc = kvz_forward_create(m->ck, &opt, &m->fwd, &err);
    if (rc) {
        cli_model_close(m);
        return cli_error(cmd, err.msg);
    }
    return 0;
}

void cli_model_close(cli_model *m)
{
    kvz_forward_free(m->fwd);
    kvz_tokenizer_free(m->tok);
    kvz_checkpoint_close(m->ck);
    memset(m, 0, sizeof *m);
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double cli_peak_rss_mib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0.0;
    return (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
}
