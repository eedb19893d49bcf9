/* cli_forward: helpers shared by kvzap generate, ppl and logits (see
 * cli_forward.h). */
#include "cli_forward.h"
#include "../kvzip_oracle/oracle_doc.h"
#include "../model/chat_template.h"
#include "../trainer/export.h"

#include <errno.h>
#include <math.h>
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
    "  --prune M        prune the KV cache while running, on a ragged per-head cache that\n"
    "                   frees memory: kvzap (the surrogates), or a baseline: full (evict\n"
    "                   nothing), streaming (sinks + recent), random, snapkv (attention of\n"
    "                   the last queries), oracle (the KVzip+ oracle's own scores of the\n"
    "                   prompt: the expensive repeat pass, an upper bound; generate with\n"
    "                   --prompt TEXT only); none (default): the dense cache\n"
    "  --surrogate PATH kvzap: a kvzap export (kvpress directory or GGUF)\n"
    "  --tau T          kvzap: evict pairs whose predicted log-score is below T as they\n"
    "                   leave the window (kvpress DMSPress semantics)\n"
    "  --ratio R        evict the fraction R in [0, 1) of the pairs: the lowest-scored\n"
    "                   outside the window\n"
    "  --prune-mode X   threshold (with --tau), ratio (per head, with --ratio) or budget\n"
    "                   (one budget over all heads and layers, with --ratio)\n"
    "  --window N       the most recent N tokens are never evicted (default 128;\n"
    "                   also --prune-window, the only spelling in ppl)\n"
    "  --sinks N        streaming: the first N tokens are kept (default 4)\n"
    "  --seed N         random: the seed (default 0)\n"
    "  --prune-decoding also evict while decoding (default: prefill only)\n"
    "  --prefill-chunk N run the prompt N tokens at a time, evicting between chunks\n"
    "                   (bounded cache memory on long prompts; default: one pass)\n";

static const char *const PRUNE_VALUE_FLAGS[] = {"--prune",  "--surrogate", "--tau",
                                                "--ratio",  "--prune-mode", "--window",
                                                "--sinks",  "--seed",      "--prefill-chunk",
                                                "--prune-window"};

int cli_is_prune_flag(const char *opt)
{
    for (size_t i = 0; i < sizeof PRUNE_VALUE_FLAGS / sizeof *PRUNE_VALUE_FLAGS; i++)
        if (!strcmp(opt, PRUNE_VALUE_FLAGS[i]))
            return 1;
    return 0;
}

static int prune_flag_error(const char *cmd, const char *fmt, const char *opt, const char *value)
{
    char msg[400];
    snprintf(msg, sizeof msg, fmt, opt, value);
    cli_error(cmd, msg);
    return 2;
}

int cli_parse_prune_flag(const char *cmd, const char *opt, const char *value, cli_prune *p)
{
    if (!strcmp(opt, "--prune-decoding")) {
        p->decoding = 1;
        return 0;
    }
    if (!strcmp(opt, "--prune")) {
        kvz_prune_method m;
        if (strcmp(value, "none") && kvz_prune_method_parse(value, &m))
            return prune_flag_error(cmd,
                                    "%s must be kvzap, oracle, full, streaming, random, snapkv or "
                                    "none, "
                                    "got '%.100s'",
                                    opt, value);
        p->method = strcmp(value, "none") ? value : NULL;
        return 0;
    }
    if (!strcmp(opt, "--surrogate")) {
        p->surrogate = value;
        return 0;
    }
    if (!strcmp(opt, "--prune-mode")) {
        kvz_prune_mode m;
        if (kvz_prune_mode_parse(value, &m))
            return prune_flag_error(cmd, "%s must be threshold, ratio or budget, got '%.100s'",
                                    opt, value);
        p->mode = value;
        return 0;
    }
    if (!strcmp(opt, "--window") || !strcmp(opt, "--prune-window"))
        return cli_parse_size(cmd, opt, value, &p->window);
    if (!strcmp(opt, "--sinks"))
        return cli_parse_size(cmd, "--sinks", value, &p->sinks);
    if (!strcmp(opt, "--prefill-chunk"))
        return cli_parse_size(cmd, "--prefill-chunk", value, &p->prefill_chunk);
    if (!strcmp(opt, "--seed")) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        if (errno || end == value || *end || value[0] == '-')
            return prune_flag_error(cmd, "%s must be a non-negative integer, got '%.100s'", opt,
                                    value);
        p->seed = v;
        p->seed_set = 1;
        return 0;
    }
    char *end = NULL;
    double t = strtod(value, &end);
    int is_tau = !strcmp(opt, "--tau");
    if (!*value || *end || !isfinite(t))
        return prune_flag_error(cmd, "%s must be a finite number, got '%.100s'", opt, value);
    if (!is_tau && !(t >= 0.0 && t < 1.0))
        return prune_flag_error(cmd, "%s must be in [0, 1) (the fraction of pairs to evict), got '%.100s'",
                                opt, value);
    if (is_tau) {
        p->tau = t;
        p->tau_set = 1;
    } else {
        p->ratio = t;
        p->ratio_set = 1;
    }
    return 0;
}

/* The options the flags mean (after cli_prune_check). */
static kvz_prune_options prune_options(const cli_prune *p)
{
    kvz_prune_options o = {0};
    kvz_prune_method_parse(p->method, &o.method);
    if (p->mode)
        kvz_prune_mode_parse(p->mode, &o.mode);
    else
        o.mode = p->tau_set || o.method == KVZ_PRUNE_FULL ? KVZ_PRUNE_THRESHOLD : KVZ_PRUNE_RATIO;
    o.tau = p->tau;
    o.ratio = p->ratio;
    o.window = p->window;
    o.decoding = p->decoding;
    o.n_sink = p->sinks;
    o.seed = p->seed;
    o.surrogate = p->s;
    o.scores = p->oracle_scores;
    o.scores_len = p->oracle_len;
    return o;
}

int cli_prune_check(const char *cmd, const cli_prune *p)
{
    const char *msg = NULL;
    kvz_prune_method m = KVZ_PRUNE_FULL;
    if (p->method)
        kvz_prune_method_parse(p->method, &m);
    int threshold = p->mode ? !strcmp(p->mode, "threshold") : p->tau_set;
    if (!p->method) {
        if (p->surrogate || p->tau_set || p->ratio_set || p->mode || p->window || p->decoding ||
            p->sinks || p->seed_set || p->prefill_chunk)
            msg = "--surrogate, --tau, --ratio, --prune-mode, --window, --sinks, --seed, "
                  "--prune-decoding and --prefill-chunk need --prune";
    } else if (m == KVZ_PRUNE_KVZAP && !p->surrogate) {
        msg = "--prune kvzap needs --surrogate PATH";
    } else if (m != KVZ_PRUNE_KVZAP && p->surrogate) {
        msg = "--surrogate is for --prune kvzap";
    } else if (p->tau_set && p->ratio_set) {
        msg = "give --tau (threshold) or --ratio (ratio, budget), not both";
    } else if (m == KVZ_PRUNE_FULL && (p->tau_set || p->ratio_set || p->mode)) {
        msg = "--prune full evicts nothing: it takes no --tau, --ratio or --prune-mode";
    } else if (m == KVZ_PRUNE_KVZAP && !p->tau_set && !p->ratio_set) {
        msg = "--prune kvzap needs --tau T (threshold) or --ratio R (ratio, budget)";
    } else if (m == KVZ_PRUNE_ORACLE && !p->tau_set && !p->ratio_set) {
        msg = "--prune oracle needs --tau T (threshold) or --ratio R (ratio, budget)";
    } else if (m != KVZ_PRUNE_KVZAP && m != KVZ_PRUNE_ORACLE && m != KVZ_PRUNE_FULL &&
               !p->ratio_set) {
        msg = "streaming, random and snapkv need --ratio R (the fraction to evict)";
    } else if (m != KVZ_PRUNE_KVZAP && m != KVZ_PRUNE_ORACLE && m != KVZ_PRUNE_FULL &&
               threshold) {
        msg = "streaming, random and snapkv have no threshold mode; use --prune-mode ratio or budget";
    } else if (m != KVZ_PRUNE_FULL && threshold && !p->tau_set) {
        msg = "--prune-mode threshold needs --tau T";
    } else if (m != KVZ_PRUNE_FULL && !threshold && p->tau_set) {
        msg = "--prune-mode ratio and budget take --ratio R, not --tau";
    } else if (p->sinks && m != KVZ_PRUNE_STREAMING) {
        msg = "--sinks is for --prune streaming";
    } else if (p->seed_set && m != KVZ_PRUNE_RANDOM) {
        msg = "--seed is for --prune random";
    }
    if (!msg)
        return 0;
    cli_error(cmd, msg);
    return 2;
}

/* --prune oracle: the KVzip+ oracle's log-scores of the prompt (spec 1: the
 * repeat prompt around the text, one dense pass; kvzip_oracle/oracle_doc.h),
 * mapped onto the prompt's positions: its tokens must be the oracle
 * context's, after leading special tokens (BOS), which score +inf. */
static int oracle_scores(const char *path, const kvz_checkpoint *ck, const kvz_tokenizer *tok,
                         int n_threads, cli_prune *p, kvz_error *err)
{
    if (!p->oracle_text)
        return kvz_fail(err, KVZ_EINVAL, "--prune oracle needs the prompt as text (--prompt, "
                        "without --chat): its scores come from the KVzip+ repeat pass over it");
    const kvz_model_config *c = kvz_checkpoint_config(ck);
    size_t L = c->n_layers, hkv = c->n_kv_heads;
    kvz_chat_template *tpl = NULL;
    kvz_oracle_prompt op = {0};
    kvz_tokens toks = {0};
    kvz_forward *f = NULL;
    size_t *positions = NULL;
    float *y = NULL;
    int rc = kvz_chat_template_load(path, NULL, &tpl, err);
    rc = rc ? rc : kvz_oracle_prompt_build(tok, tpl, p->oracle_text, strlen(p->oracle_text), &op, err);
    rc = rc ? rc : kvz_tokenize(tok, p->oracle_text, strlen(p->oracle_text), 1, &toks, err);
    size_t nc = op.context_end - op.context_start, off = toks.n >= nc ? toks.n - nc : 0;
    if (!rc && (toks.n < nc || memcmp(toks.ids + off, op.ids + op.context_start,
                                      nc * sizeof(int32_t))))
        rc = kvz_fail(err, KVZ_EINVAL,
                      "--prune oracle: the prompt's %zu tokens do not end with the oracle "
                      "context's %zu (text with leading or trailing whitespace is stripped by "
                      "the oracle)",
                      toks.n, nc);
    kvz_forward_options fo = {.n_threads = n_threads};
    rc = rc ? rc : kvz_forward_create(ck, &fo, &f, err);
    positions = rc ? NULL : malloc(nc * sizeof *positions);
    y = rc ? NULL : malloc(L * nc * hkv * sizeof *y);
    p->oracle_scores = rc ? NULL : malloc(L * hkv * toks.n * sizeof *p->oracle_scores);
    if (!rc && (!positions || !y || !p->oracle_scores))
        rc = kvz_fail(err, KVZ_ENOMEM, "--prune oracle: out of memory for %zu scores", L * hkv * toks.n);
    for (size_t t = 0; !rc && t < nc; t++)
        positions[t] = op.context_start + t;
    rc = rc ? rc : kvz_oracle_score_single(f, &op, positions, nc, NULL, y, err);
    for (size_t l = 0; !rc && l < L; l++)
        for (size_t g = 0; g < hkv; g++)
            for (size_t t = 0; t < toks.n; t++)
                p->oracle_scores[(l * hkv + g) * toks.n + t] =
                    t < off ? INFINITY : y[(l * nc + (t - off)) * hkv + g];
    if (!rc)
        p->oracle_len = toks.n;
    kvz_forward_free(f);
    kvz_tokens_free(&toks);
    kvz_oracle_prompt_free(&op);
    kvz_chat_template_free(tpl);
    free(positions);
    free(y);
    return rc;
}

/* The policy with its wall-clock time counted (--bench): on cuda the
 * forward's queued work is synchronised first so the policy's share is its
 * own. */
static int timed_policy(void *user, const kvz_prune_call *call, kvz_error *err)
{
    cli_prune *p = user;
    kvz_backend *be = kvz_kv_cache_backend(call->cache);
    int rc = kvz_backend_host_memory(be) ? KVZ_OK : kvz_backend_sync(be, err);
    double t0 = cli_now();
    rc = rc ? rc : kvz_prune_layer(p->policy, call, err);
    p->policy_seconds += cli_now() - t0;
    return rc;
}

int cli_model_open_pruned(const char *cmd, const char *path, const cli_device *dev,
                          int n_threads, size_t max_tokens, int want_tokenizer, cli_prune *p,
                          cli_model *m)
{
    memset(m, 0, sizeof *m);
    kvz_error err = {0};
    kvz_forward_options opt = forward_options(dev, n_threads, max_tokens);
    int pruned = p && p->method;
    int rc = kvz_checkpoint_open(path, &m->ck, &err);
    if (!rc && want_tokenizer)
        rc = kvz_tokenizer_load(path, &m->tok, &err);
    if (!rc && pruned && p->surrogate) {
        kvz_error why = {0};
        rc = kvz_export_load(p->surrogate, &p->s, &why);
        if (rc)
            kvz_fail(&err, rc, "%s", why.msg);
    }
    if (!rc && pruned && !strcmp(p->method, "oracle")) {
        kvz_error why = {0};
        kvz_tokenizer *tok = m->tok;
        rc = tok ? KVZ_OK : kvz_tokenizer_load(path, &tok, &why);
        rc = rc ? rc : oracle_scores(path, m->ck, tok, n_threads, p, &why);
        if (tok != m->tok)
            kvz_tokenizer_free(tok);
        if (rc)
            kvz_fail(&err, rc, "%s", why.msg);
    }
    if (!rc && pruned) {
        const kvz_model_config *c = kvz_checkpoint_config(m->ck);
        size_t ctx = c->max_position_embeddings;
        if (p->window && ctx && p->window > ctx)
            rc = kvz_fail(&err, KVZ_EINVAL,
                          "--window %zu is larger than the model's context (%zu tokens)",
                          p->window, ctx);
        kvz_prune_options po = prune_options(p);
        kvz_error why = {0};
        if (!rc && (rc = kvz_prune_create(c, &po, &p->policy, &why)))
            kvz_fail(&err, rc, "%s%s%s", p->surrogate ? p->surrogate : "",
                     p->surrogate ? ": " : "", why.msg);
        opt.prune = p->timed ? timed_policy : kvz_prune_layer;
        opt.prune_user = p->timed ? (void *)p : (void *)p->policy;
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

int cli_prefill(cli_model *m, cli_prune *p, const int32_t *ids, size_t n, int logits_mode,
                float *logits, kvz_error *err)
{
    size_t chunk = p && p->policy && p->prefill_chunk ? p->prefill_chunk : n;
    size_t vocab = kvz_forward_config(m->fwd)->vocab_size;
    int rc = KVZ_OK;
    for (size_t at = 0; !rc && at < n; at += chunk) {
        size_t len = n - at < chunk ? n - at : chunk;
        int last = at + len == n;
        int mode = logits_mode == KVZ_LOGITS_ALL ? KVZ_LOGITS_ALL : last ? logits_mode : 0;
        float *dst = logits_mode == KVZ_LOGITS_ALL ? logits + at * vocab : logits;
        if (at && p && p->policy)
            kvz_prune_set_prefill(p->policy, 1);
        rc = kvz_forward_run(m->fwd, ids + at, len, NULL, NULL, mode, mode ? dst : NULL, err);
    }
    if (p && p->policy)
        kvz_prune_set_prefill(p->policy, 0);
    return rc;
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
    kvz_prune_options o = prune_options(p);
    char what[160];
    if (o.method == KVZ_PRUNE_FULL)
        snprintf(what, sizeof what, "full");
    else if (o.mode == KVZ_PRUNE_THRESHOLD)
        snprintf(what, sizeof what, "%s threshold, tau %g", p->method, p->tau);
    else
        snprintf(what, sizeof what, "%s %s, ratio %g", p->method, kvz_prune_mode_name(o.mode),
                 p->ratio);
    char chunk[64] = "";
    if (p->prefill_chunk)
        snprintf(chunk, sizeof chunk, ", prefill chunks of %zu", p->prefill_chunk);
    fprintf(stderr,
            "kvzap %s: pruning %s (window %zu, %s%s): compression %.4f (kvpress: evicted / all "
            "pairs, mean over layers; %.4f in the cache now); kept %zu of %zu KV pairs; K/V "
            "%.2f MiB vs %.2f MiB full; cache peak %.2f MiB\n",
            cmd, what, p->window ? p->window : 128, p->decoding ? "prefill + decoding" : "prefill",
            chunk, kvz_prune_compression(p->policy), kvz_kv_cache_compression(c), kept, full,
            (double)(kept * pair) / 1048576.0, (double)(full * pair) / 1048576.0,
            (double)kvz_kv_cache_peak_bytes(c) / 1048576.0);
}

void cli_prune_close(cli_prune *p)
{
    free(p->oracle_scores);
    p->oracle_scores = NULL;
    kvz_prune_free(p->policy);
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
