/* cmd_ppl: `kvzap ppl` computes the perplexity of a text file with the fp32
 * forward pass and a sliding window, exactly as the strided-perplexity recipe
 * of the Hugging Face docs ("Perplexity of fixed-length models"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"
#include "cli_forward.h"
#include "commands.h"

static const char USAGE[] =
    "usage: kvzap ppl [MODEL] FILE [--window N=512] [--stride N=256] [--threads N]\n"
    "                 [--device D] [--precision P] [--bench] [--prune M ... (see below)]\n";

static const char HELP[] =
    "\nPerplexity of FILE (UTF-8 text, tokenized with BOS/EOS as HF adds them)\n"
    "with the Hugging Face strided sliding-window recipe: windows of --window\n"
    "tokens start every --stride tokens (begin = 0, stride, 2*stride, ...; end =\n"
    "min(begin + window, n)); each window is a fresh forward pass, and only its\n"
    "last (end - previous end) tokens are scored, so every token after the first\n"
    "is predicted once, with as much left context as the window allows (the\n"
    "first token of a window is never a target). As in the recipe, each window's\n"
    "mean NLL is weighted by (unmasked labels - 1), and the count of scored\n"
    "tokens grows by the same amount; the loop stops after the window that\n"
    "reaches the end. ppl = exp(weighted NLL sum / count).\n\n"
    "  MODEL         GGUF file or HF directory (default: the cached SmolLM2 GGUF)\n"
    "  FILE          text file\n"
    "  --window N    tokens per window (default 512; at most the context length)\n"
    "  --stride N    tokens between window starts (default 256; <= window)\n"
    "  --threads N   compute threads (default: all cores)\n"
    "%s"
    "  --bench       also print seconds, tokens/s and peak RSS\n"
    "Pruning: each window runs on the ragged cache with the policy; a window's\n"
    "single pass is dense (eviction applies after it, as in kvpress's prefill), so\n"
    "use --prefill-chunk N to score tokens against a pruned cache. The prune window\n"
    "is --prune-window here. The compression printed is the mean over windows.\n%s";

typedef struct ppl_args {
    const char *model, *file;
    size_t window, stride;
    int threads, bench;
    cli_device dev;
    cli_prune prune;
} ppl_args;

static int parse_value(ppl_args *a, const char *opt, const char *value)
{
    if (!strcmp(opt, "--window"))
        return cli_parse_size("ppl", "--window", value, &a->window);
    if (!strcmp(opt, "--stride"))
        return cli_parse_size("ppl", "--stride", value, &a->stride);
    if (cli_is_device_flag(opt))
        return cli_parse_device_flag("ppl", opt, value, &a->dev);
    if (cli_is_prune_flag(opt))
        return cli_parse_prune_flag("ppl", opt, value, &a->prune);
    return cli_parse_threads("ppl", value, &a->threads);
}

static int parse_args(int argc, char **argv, ppl_args *a)
{
    const char *positional[2] = {NULL, NULL};
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--window") || !strcmp(s, "--stride") || !strcmp(s, "--threads") ||
            cli_is_device_flag(s) || cli_is_prune_flag(s)) {
            if (i + 1 >= argc) {
                char msg[128];
                snprintf(msg, sizeof msg, "%s needs a value", s);
                return cli_usage_error("ppl", msg, USAGE);
            }
            if (parse_value(a, s, argv[++i]))
                return 2;
        } else if (!strcmp(s, "--bench")) {
            a->bench = 1;
        } else if (!strcmp(s, "--prune-decoding")) {
            a->prune.decoding = 1;
        } else if (s[0] == '-' && s[1]) {
            char msg[300];
            snprintf(msg, sizeof msg, "unknown option '%.200s'", s);
            return cli_usage_error("ppl", msg, USAGE);
        } else if (n_pos < 2) {
            positional[n_pos++] = s;
        } else {
            return cli_usage_error("ppl", "too many arguments", USAGE);
        }
    }
    if (n_pos == 0)
        return cli_usage_error("ppl", "FILE is required", USAGE);
    a->model = n_pos == 2 ? positional[0] : cli_default_model();
    a->file = positional[n_pos - 1];
    if (a->stride > a->window)
        return cli_usage_error("ppl", "--stride must not exceed --window", USAGE);
    return cli_prune_check("ppl", &a->prune);
}

static int read_ids(const ppl_args *a, const kvz_tokenizer *tok, kvz_tokens *toks)
{
    char *text = NULL, msg[600];
    size_t len = 0;
    kvz_error err = {0};
    int rc = kvz_file_read_all(a->file, &text, &len, &err);
    if (!rc && len == 0)
        rc = kvz_fail(&err, KVZ_EINVAL, "%.400s: the file is empty", a->file);
    if (!rc)
        rc = kvz_tokenize(tok, text, len, 1, toks, &err);
    free(text);
    if (rc)
        return cli_error("ppl", err.msg);
    if (toks->n < 2) {
        snprintf(msg, sizeof msg, "%.400s: %zu token(s); perplexity needs at least 2", a->file, toks->n);
        return cli_error("ppl", msg);
    }
    return 0;
}

/* -log softmax(logits)[target], in double. */
static double token_nll(const float *logits, size_t vocab, int32_t target)
{
    float mx = logits[0];
    for (size_t i = 1; i < vocab; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (size_t i = 0; i < vocab; i++)
        sum += exp((double)logits[i] - (double)mx);
    return log(sum) + (double)mx - (double)logits[target];
}

typedef struct ppl_totals {
    double nll, compression;
    size_t n_scored, n_windows, n_run;
} ppl_totals;

static int score_window(cli_model *m, cli_prune *p, const int32_t *ids, size_t len, size_t trg_len,
                        float *logits, ppl_totals *t)
{
    kvz_error err = {0};
    kvz_forward_reset(m->fwd);
    if (cli_prefill(m, p, ids, len, KVZ_LOGITS_ALL, logits, &err))
        return cli_error("ppl", err.msg);
    if (p->policy)
        t->compression += kvz_prune_compression(p->policy);
    size_t vocab = kvz_forward_config(m->fwd)->vocab_size;
    size_t valid = trg_len < len ? trg_len : len; /* labels left unmasked */
    size_t first = len - valid > 1 ? len - valid : 1;
    double window_nll = 0.0;
    for (size_t j = first; j < len; j++)
        window_nll += token_nll(logits + (j - 1) * vocab, vocab, ids[j]);
    /* The recipe weights the window's mean loss by (valid labels - 1). */
    if (len > first && valid > 1) {
        t->nll += window_nll / (double)(len - first) * (double)(valid - 1);
        t->n_scored += valid - 1;
    }
    t->n_windows++;
    t->n_run += len;
    return 0;
}

static int run_ppl(ppl_args *a, cli_model *m, const kvz_tokens *toks)
{
    size_t n = toks->n, vocab = kvz_forward_config(m->fwd)->vocab_size;
    size_t wmax = a->window < n ? a->window : n;
    float *logits = malloc(wmax * vocab * sizeof *logits);
    if (!logits)
        return cli_error("ppl", "out of memory for the window's logits");
    ppl_totals t = {0};
    size_t prev_end = 0;
    double t0 = cli_now();
    int rc = 0;
    for (size_t begin = 0; begin < n && !rc; begin += a->stride) {
        size_t end = begin + a->window < n ? begin + a->window : n;
        rc = score_window(m, &a->prune, toks->ids + begin, end - begin, end - prev_end, logits, &t);
        prev_end = end;
        if (end == n)
            break;
    }
    double seconds = cli_now() - t0;
    free(logits);
    if (rc)
        return rc;
    double mean = t.nll / (double)t.n_scored;
    printf("ppl: %.4f (mean NLL %.6f over %zu scored tokens, %zu tokens, %zu windows)\n", exp(mean),
           mean, t.n_scored, n, t.n_windows);
    if (a->prune.policy)
        printf("pruning %s: compression %.4f (kvpress's, mean over %zu windows)\n", a->prune.method,
               t.compression / (double)t.n_windows, t.n_windows);
    if (a->bench)
        printf("time: %.3f s, %.1f tokens/s through the model, peak RSS %.1f MiB\n", seconds,
               (double)t.n_run / seconds, cli_peak_rss_mib());
    cli_prune_report("ppl", &a->prune, m);
    return 0;
}

int cmd_ppl(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("%s", USAGE);
        printf(HELP, CLI_DEVICE_HELP, CLI_PRUNE_HELP);
        return 0;
    }
    cli_tune_openblas();
    ppl_args a = {NULL, NULL, 512, 256, 0, 0, CLI_DEVICE_DEFAULT, {0}};
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    cli_model m;
    if (cli_model_open_pruned("ppl", a.model, &a.dev, a.threads, a.window, 1, &a.prune, &m))
        return 1;
    kvz_tokens toks = {0};
    rc = read_ids(&a, m.tok, &toks);
    if (!rc)
        rc = run_ppl(&a, &m, &toks);
    kvz_tokens_free(&toks);
    cli_prune_close(&a.prune);
    cli_model_close(&m);
    return rc;
}
