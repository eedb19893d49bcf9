/* cli_forward: helpers shared by kvzap generate, ppl and logits (see
 * cli_forward.h). */
#include "cli_forward.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "../ops/backend.h"
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

const char CLI_DEVICE_HELP[] =
    "  --device D       auto (cuda when a device is visible; default), cpu, cuda\n"
    "  --precision P    cuda: bfloat16 (default) or float32; the cpu is always float32\n";

int cli_is_device_flag(const char *opt)
{
    return !strcmp(opt, "--device") || !strcmp(opt, "--precision");
}

int cli_parse_device_flag(const char *cmd, const char *opt, const char *value, cli_device *d)
{
    const char *key = !strcmp(opt, "--device") ? "model.device" : "model.precision";
    for (int v = 0; kvz_config_enum_name(key, v); v++)
        if (!strcmp(kvz_config_enum_name(key, v), value)) {
            *(!strcmp(opt, "--device") ? &d->device : &d->precision) = v;
            return 0;
        }
    char msg[300];
    snprintf(msg, sizeof msg, "%s must be %s, got '%.150s'", opt,
             !strcmp(opt, "--device") ? "auto, cpu or cuda" : "bfloat16 or float32", value);
    cli_error(cmd, msg);
    return 2;
}

/* The forward's options for dev: auto resolved (kvz_backend_auto_kind, as
 * the oracle and the trainer do), bf16 only on cuda. */
static kvz_forward_options forward_options(const cli_device *dev, int n_threads,
                                           size_t max_tokens)
{
    cli_device d = dev ? *dev : (cli_device)CLI_DEVICE_DEFAULT;
    int cuda = d.device == KVZ_DEVICE_CUDA ||
               (d.device == KVZ_DEVICE_AUTO && kvz_backend_auto_kind() == KVZ_BACKEND_CUDA);
    kvz_forward_options o = {.n_threads = n_threads, .max_tokens = max_tokens};
    o.device = cuda ? KVZ_BACKEND_CUDA : KVZ_BACKEND_CPU;
    o.precision = cuda && d.precision == KVZ_PRECISION_BFLOAT16 ? KVZ_BF16 : KVZ_F32;
    return o;
}

int cli_model_open(const char *cmd, const char *path, const cli_device *dev, int n_threads,
                   size_t max_tokens, int want_tokenizer, cli_model *m)
{
    memset(m, 0, sizeof *m);
    kvz_error err = {0};
    kvz_forward_options opt = forward_options(dev, n_threads, max_tokens);
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

char *openblas_get_corename(void);

/* argv of this process from /proc/self/cmdline (NUL-separated), malloc'ed. */
static char **self_argv(char **buf_out)
{
    FILE *fp = fopen("/proc/self/cmdline", "rb");
    if (!fp)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len - 1, fp);
        if (len < cap - 1)
            break;
        char *b = realloc(buf, cap *= 2);
        if (!b)
            free(buf);
        buf = b;
    }
    fclose(fp);
    if (!buf)
        return NULL;
    buf[len] = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += buf[i] == 0;
    char **argv = calloc(n + 2, sizeof *argv);
    if (!argv) {
        free(buf);
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < len && k < n + 1; i += strlen(buf + i) + 1)
        argv[k++] = buf + i;
    *buf_out = buf;
    return argv;
}

void cli_tune_openblas(void)
{
    const char *tune = getenv("KVZAP_BLAS_TUNE");
    if ((tune && !strcmp(tune, "0")) || getenv("OPENBLAS_CORETYPE") ||
        strcmp(openblas_get_corename(), "Prescott") != 0)
        return;
    __builtin_cpu_init();
    const char *core = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                     : __builtin_cpu_supports("avx2") ? "Haswell" : NULL;
    char *buf = NULL;
    char **argv = core ? self_argv(&buf) : NULL;
    if (!argv)
        return;
    setenv("OPENBLAS_CORETYPE", core, 1);
    fflush(NULL);
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE"); /* exec failed: carry on with Prescott */
    free(argv);
    free(buf);
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
