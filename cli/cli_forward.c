/* cli_forward: helpers shared by kvzap generate, ppl and logits (see
 * cli_forward.h). */
#include "cli_forward.h"
#include "../trainer/export.h"

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

const char CLI_PRUNE_HELP[] =
    "  --prune kvzap    prune the KV cache with KVzap's threshold policy (kvpress\n"
    "                   DMSPress semantics): a ragged per-head cache that frees memory\n"
    "  --surrogate PATH the surrogates: a kvzap export (kvpress directory or GGUF)\n"
    "  --tau T          evict pairs whose predicted log-score is below T\n"
    "  --window N       the most recent N tokens are never evicted (default 128)\n"
    "  --prune-decoding also evict while decoding (default: prefill only)\n";

int cli_is_prune_flag(const char *opt)
{
    return !strcmp(opt, "--prune") || !strcmp(opt, "--surrogate") || !strcmp(opt, "--tau") ||
           !strcmp(opt, "--window");
}

int cli_parse_prune_flag(const char *cmd, const char *opt, const char *value, cli_prune *p)
{
    if (!strcmp(opt, "--prune")) {
        if (strcmp(value, "kvzap") && strcmp(value, "none")) {
            char msg[200];
            snprintf(msg, sizeof msg, "--prune must be kvzap or none, got '%.100s'", value);
            cli_error(cmd, msg);
            return 2;
        }
        p->method = strcmp(value, "none") ? value : NULL;
        return 0;
    }
    if (!strcmp(opt, "--surrogate")) {
        p->surrogate = value;
        return 0;
    }
    if (!strcmp(opt, "--window"))
        return cli_parse_size(cmd, "--window", value, &p->window);
    char *end = NULL;
    double t = strtod(value, &end);
    if (!*value || *end || t != t) {
        char msg[200];
        snprintf(msg, sizeof msg, "--tau must be a number, got '%.100s'", value);
        cli_error(cmd, msg);
        return 2;
    }
    p->tau = t;
    p->tau_set = 1;
    return 0;
}

int cli_prune_check(const char *cmd, const cli_prune *p)
{
    const char *msg = NULL;
    if (p->method && !p->surrogate)
        msg = "--prune kvzap needs --surrogate PATH";
    else if (p->method && !p->tau_set)
        msg = "--prune kvzap needs --tau T";
    else if (!p->method && (p->surrogate || p->tau_set || p->window || p->decoding))
        msg = "--surrogate, --tau, --window and --prune-decoding need --prune kvzap";
    if (!msg)
        return 0;
    cli_error(cmd, msg);
    return 2;
}

static int prune_trampoline(void *user, size_t layer, const float *x, size_t n, size_t pos0,
                            kvz_kv_cache *cache, kvz_error *err)
{
    cli_prune *p = user;
    return kvz_prune_kvzap_layer(p->policy, layer, x, n, pos0, cache, err);
}

int cli_model_open_pruned(const char *cmd, const char *path, const cli_device *dev,
                          int n_threads, size_t max_tokens, int want_tokenizer, cli_prune *p,
                          cli_model *m)
{
    memset(m, 0, sizeof *m);
    kvz_error err = {0};
    kvz_forward_options opt = forward_options(dev, n_threads, max_tokens);
    int pruned = p && p->method;
    if (pruned) {
        opt.prune = prune_trampoline;
        opt.prune_user = p;
    }
    int rc = kvz_checkpoint_open(path, &m->ck, &err);
    if (!rc && want_tokenizer)
        rc = kvz_tokenizer_load(path, &m->tok, &err);
    if (!rc && pruned) {
        kvz_error why = {0};
        rc = kvz_export_load(p->surrogate, &p->s, &why);
        if (rc)
            kvz_fail(&err, rc, "%s", why.msg);
    }
    if (!rc && pruned) {
        const kvz_model_config *c = kvz_checkpoint_config(m->ck);
        kvz_prune_kvzap_options po = {(float)p->tau, p->window, p->decoding};
        kvz_error why = {0};
        rc = kvz_prune_kvzap_create(p->s, c->n_layers, c->d_model, c->n_kv_heads, &po,
                                    &p->policy, &why);
        if (rc)
            kvz_fail(&err, rc, "%s: %s", p->surrogate, why.msg);
    }
    if (!rc)
        rc = kvz_forward_create(m->ck, &opt, &m->fwd, &err);
    if (rc) {
        cli_model_close(m);
        if (p)
            cli_prune_close(p);
        return cli_error(cmd, err.msg);
    }
    return 0;
}

int cli_model_open(const char *cmd, const char *path, const cli_device *dev, int n_threads,
                   size_t max_tokens, int want_tokenizer, cli_model *m)
{
    return cli_model_open_pruned(cmd, path, dev, n_threads, max_tokens, want_tokenizer, NULL, m);
}

void cli_prune_report(const char *cmd, const cli_prune *p, const cli_model *m)
{
    kvz_kv_cache *c = m->fwd ? kvz_forward_kv_cache(m->fwd) : NULL;
    if (!p || !p->policy || !c)
        return;
    const kvz_model_config *cfg = kvz_forward_config(m->fwd);
    size_t pair = 2 * cfg->head_dim * sizeof(float);
    size_t kept = kvz_kv_cache_kept_pairs(c), full = kvz_kv_cache_full_pairs(c);
    fprintf(stderr,
            "kvzap %s: pruning kvzap (tau %g, window %zu, %s): compression %.4f (kvpress: "
            "evicted / all pairs, mean over layers); kept %zu of %zu KV pairs; K/V %.2f MiB "
            "vs %.2f MiB full; cache peak %.2f MiB\n",
            cmd, p->tau, p->window ? p->window : 128, p->decoding ? "prefill + decoding" : "prefill",
            kvz_prune_kvzap_compression(p->policy), kept, full,
            (double)(kept * pair) / 1048576.0, (double)(full * pair) / 1048576.0,
            (double)kvz_kv_cache_peak_bytes(c) / 1048576.0);
}

void cli_prune_close(cli_prune *p)
{
    kvz_prune_kvzap_free(p->policy);
    kvz_surrogate_free(p->s);
    p->policy = NULL;
    p->s = NULL;
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
