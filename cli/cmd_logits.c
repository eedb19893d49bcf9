/* cmd_logits: `kvzap logits` runs the fp32 forward pass on text or token ids
 * and writes the logits as raw little-endian float32 (last position, or every
 * position with --all), printing the shape and the argmax; --bench adds the
 * prefill timing, GFLOP/s and peak RSS used by bench/bench_forward.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"
#include "../ops/ops.h"

char *openblas_get_corename(void);
#include "cli_forward.h"
#include "commands.h"

static const char USAGE[] =
    "usage: kvzap logits [MODEL] (--text STR | --ids 1,2,3) [--all] --out FILE.f32 [--json]\n"
    "                    [--threads N] [--device D] [--precision P] [--bench [--repeat N]]\n"
    "                    [--prune M ... (see below)]\n";

static const char HELP[] =
    "\nRuns the forward pass (batch 1; cpu or cuda) and writes the logits as raw\n"
    "little-endian float32: [vocab] for the last position, or [n_tokens, vocab]\n"
    "row-major with --all. Prints the shape and the argmax of every written row.\n\n"
    "  MODEL         GGUF file or HF directory (default: the cached SmolLM2 GGUF)\n"
    "  --text STR    tokenize STR with the model's tokenizer (BOS/EOS as HF adds them)\n"
    "  --ids LIST    token ids, comma- or space-separated\n"
    "  --all         logits for every position, not just the last\n"
    "  --out FILE    output file (written atomically); optional with --bench\n"
    "  --json        print {\"n_tokens\", \"rows\", \"vocab\", \"argmax\", ...} as JSON\n"
    "  --threads N   compute threads (default: all cores)\n"
    "%s"
    "  --bench       also print prefill seconds, tokens/s, GFLOP/s (whole pass and\n"
    "                sgemm projections) and peak RSS\n"
    "  --repeat N    with --bench: run the pass N times (cache reset between runs)\n"
    "                and report the fastest\n"
    "Pruning (the pass runs on the ragged cache; a single pass is dense, as kvpress's\n"
    "prefill, so pruning shows in the logits with --prefill-chunk):\n%s";

typedef struct logits_args {
    const char *model, *text, *ids, *out;
    int all, json, bench, threads;
    size_t repeat;
    cli_device dev;
    cli_prune prune;
} logits_args;

static int parse_args(int argc, char **argv, logits_args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char **value = !strcmp(s, "--text") ? &a->text : !strcmp(s, "--ids") ? &a->ids
                           : !strcmp(s, "--out") ? &a->out : NULL;
        int is_threads = !strcmp(s, "--threads"), is_repeat = !strcmp(s, "--repeat");
        int is_device = cli_is_device_flag(s), is_prune = cli_is_prune_flag(s);
        if ((value || is_threads || is_repeat || is_device || is_prune) && i + 1 >= argc) {
            char msg[128];
            snprintf(msg, sizeof msg, "%s needs a value", s);
            return cli_usage_error("logits", msg, USAGE);
        }
        if (value)
            *value = argv[++i];
        else if (is_repeat) {
            if (cli_parse_size("logits", "--repeat", argv[++i], &a->repeat))
                return 2;
        } else if (is_device) {
            if (cli_parse_device_flag("logits", s, argv[++i], &a->dev))
                return 2;
        } else if (is_prune) {
            if (cli_parse_prune_flag("logits", s, argv[++i], &a->prune))
                return 2;
        } else if (!strcmp(s, "--prune-decoding")) {
            a->prune.decoding = 1;
        } else if (is_threads) {
            if (cli_parse_threads("logits", argv[++i], &a->threads))
                return 2;
        } else if (!strcmp(s, "--all"))
            a->all = 1;
        else if (!strcmp(s, "--json"))
            a->json = 1;
        else if (!strcmp(s, "--bench"))
            a->bench = 1;
        else if (s[0] == '-' && s[1]) {
            char msg[300];
            snprintf(msg, sizeof msg, "unknown option '%.200s'", s);
            return cli_usage_error("logits", msg, USAGE);
        } else if (!a->model)
            a->model = s;
        else
            return cli_usage_error("logits", "more than one MODEL given", USAGE);
    }
    if (!a->text == !a->ids)
        return cli_usage_error("logits", "give exactly one of --text or --ids", USAGE);
    if (!a->out && !a->bench)
        return cli_usage_error("logits", "--out FILE is required", USAGE);
    if (cli_prune_check("logits", &a->prune))
        return 2;
    if (!a->model)
        a->model = cli_default_model();
    return 0;
}

static int get_ids(const logits_args *a, cli_model *m, int32_t **ids, size_t *n)
{
    if (a->ids)
        return cli_parse_ids("logits", a->ids, ids, n);
    kvz_tokens toks = {0};
    kvz_error err = {0};
    int rc = kvz_tokenize(m->tok, a->text, strlen(a->text), 1, &toks, &err);
    if (!rc && toks.n == 0)
        rc = kvz_fail(&err, KVZ_EINVAL, "--text: the text gives no tokens");
    if (!rc) {
        *ids = toks.ids;
        *n = toks.n;
        toks.ids = NULL;
    }
    kvz_tokens_free(&toks);
    return rc ? cli_error("logits", err.msg) : 0;
}

static int write_logits(const char *path, const float *logits, size_t count)
{
    kvz_atomic_file af;
    kvz_error err = {0};
    int rc = kvz_atomic_open(path, &af, &err);
    if (!rc && fwrite(logits, sizeof *logits, count, af.fp) != count) {
        kvz_atomic_abort(&af);
        return cli_error("logits", "write failed");
    }
    if (!rc)
        rc = kvz_atomic_commit(&af, &err);
    return rc ? cli_error("logits", err.msg) : 0;
}

typedef struct bench_numbers {
    double seconds, model_flops, proj_seconds, proj_flops, rss_mib;
} bench_numbers;

static double forward_flops(const kvz_model_config *c, size_t n, size_t rows)
{
    double D = (double)c->d_model, Q = (double)(c->n_heads * c->head_dim);
    double KV = (double)(c->n_kv_heads * c->head_dim), F = (double)c->d_ff, T = (double)n;
    double per_layer = 2.0 * T * (D * (Q + 2 * KV) + Q * D + 3 * D * F) + 4.0 * Q * T * (T + 1) / 2;
    return (double)c->n_layers * per_layer + 2.0 * (double)rows * D * (double)c->vocab_size;
}

static void print_result(const logits_args *a, const float *logits, size_t n, size_t rows,
                         size_t vocab, const bench_numbers *b)
{
    printf(a->json ? "{\"n_tokens\": %zu, \"rows\": %zu, \"vocab\": %zu, \"argmax\": ["
                   : "logits: %zu tokens, %zu x %zu float32\nargmax:", n, rows, vocab);
    for (size_t r = 0; r < rows; r++)
        printf("%s%zu", a->json ? (r ? ", " : "") : " ",
               kvz_argmax(logits + r * vocab, vocab));
    if (!a->json) {
        printf("\n");
        if (a->bench)
            printf("prefill: %.3f s, %.1f tokens/s, %.2f GFLOP/s; projections (sgemm): %.3f s, "
                   "%.2f GFLOP/s; peak RSS %.1f MiB; %d threads, OpenBLAS core %s\n", b->seconds,
                   (double)n / b->seconds, b->model_flops / b->seconds * 1e-9, b->proj_seconds,
                   b->proj_flops / b->proj_seconds * 1e-9, b->rss_mib, kvz_ops_threads(),
                   openblas_get_corename());
        return;
    }
    printf("]");
    if (a->bench)
        printf(", \"seconds\": %.6f, \"tokens_per_s\": %.3f, \"gflops\": %.3f, \"proj_seconds\": %.6f, "
               "\"proj_gflops\": %.3f, \"peak_rss_mib\": %.1f, \"threads\": %d, \"openblas_core\": \"%s\"",
               b->seconds, (double)n / b->seconds,
               b->model_flops / b->seconds * 1e-9, b->proj_seconds,
               b->proj_flops / b->proj_seconds * 1e-9, b->rss_mib, kvz_ops_threads(),
               openblas_get_corename());
    printf("}\n");
}

static int run_logits(logits_args *a, cli_model *m, const int32_t *ids, size_t n)
{
    const kvz_model_config *c = kvz_forward_config(m->fwd);
    size_t rows = a->all ? n : 1, vocab = c->vocab_size;
    float *logits = malloc(rows * vocab * sizeof *logits);
    if (!logits)
        return cli_error("logits", "out of memory for the logits");
    kvz_error err = {0};
    bench_numbers b = {0};
    int rc = KVZ_OK;
    size_t runs = a->bench && a->repeat ? a->repeat : 1;
    for (size_t r = 0; r < runs && !rc; r++) {
        kvz_forward_reset(m->fwd);
        kvz_ops_linear_stats_reset();
        double t0 = cli_now();
        rc = cli_prefill(m, &a->prune, ids, n, a->all ? KVZ_LOGITS_ALL : KVZ_LOGITS_LAST, logits,
                         &err);
        double seconds = cli_now() - t0;
        if (r == 0 || seconds < b.seconds) {
            b.seconds = seconds;
            kvz_ops_linear_stats(&b.proj_seconds, &b.proj_flops);
        }
    }
    b.model_flops = forward_flops(c, n, rows);
    b.rss_mib = cli_peak_rss_mib();
    int status = rc ? cli_error("logits", err.msg) : 0;
    if (!status && a->out)
        status = write_logits(a->out, logits, rows * vocab);
    if (!status)
        print_result(a, logits, n, rows, vocab, &b);
    if (!status)
        cli_prune_report("logits", &a->prune, m);
    free(logits);
    return status;
}

int cmd_logits(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("%s", USAGE);
        printf(HELP, CLI_DEVICE_HELP, CLI_PRUNE_HELP);
        return 0;
    }
    cli_tune_openblas();
    logits_args a = {0};
    a.dev = (cli_device)CLI_DEVICE_DEFAULT;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    cli_model m;
    if (cli_model_open_pruned("logits", a.model, &a.dev, a.threads, 0, a.text != NULL, &a.prune,
                              &m))
        return 1;
    int32_t *ids = NULL;
    size_t n = 0;
    rc = get_ids(&a, &m, &ids, &n);
    if (!rc)
        rc = run_logits(&a, &m, ids, n);
    free(ids);
    cli_prune_close(&a.prune);
    cli_model_close(&m);
    return rc;
}
