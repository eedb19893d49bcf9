/* cmd_generate: `kvzap generate` greedy decoding with the fp32 forward pass:
 * prompt (optionally rendered with the model's chat template) -> prefill ->
 * argmax tokens until an EOS id or --max-tokens, streaming the decoded text
 * (held back while it ends in an incomplete UTF-8 sequence). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/chat_template.h"
#include "../ops/ops.h"
#include "cli_forward.h"
#include "commands.h"

static const char USAGE[] =
    "usage: kvzap generate [MODEL] (--prompt TEXT [--chat] [--system S] | --prompt-ids LIST)\n"
    "                      [--max-tokens N] [--threads N] [--device D] [--precision P] [--ids]\n"
    "                      [--bench]\n"
    "                      [--prune M [--surrogate PATH] (--tau T | --ratio R) [--prune-mode X]\n"
    "                       [--window N] [--prune-decoding] [--prefill-chunk N] ...]\n";

static const char HELP[] =
    "\nGreedy generation with the forward pass (cpu or cuda). The prompt is tokenized\n"
    "with BOS/EOS as HF adds them; generation stops at any EOS id of the config\n"
    "or the tokenizer, or after --max-tokens new tokens. The new text is streamed\n"
    "to stdout as tokenizer.decode(new ids, skip_special_tokens=True).\n\n"
    "  MODEL            GGUF file or HF directory (default: the cached SmolLM2 GGUF)\n"
    "  --prompt TEXT    the prompt (non-empty)\n"
    "  --prompt-ids L   or the prompt as token ids (comma- or space-separated)\n"
    "  --chat           render [system?, user: TEXT] with the model's chat template\n"
    "                   and add_generation_prompt=True\n"
    "  --system S       with --chat: a system message first\n"
    "  --max-tokens N   new tokens at most (default 64)\n"
    "  --threads N      compute threads (default: all cores)\n"
    "%s"
    "  --ids            print the new token ids (space-separated) instead of text\n"
    "  --bench          print to stderr: prefill and decode seconds, decode tokens/s,\n"
    "                   the pruning policy's share of the time, peak RSS\n"
    "%s";

typedef struct generate_args {
    const char *model, *prompt, *system, *prompt_ids;
    size_t max_new;
    int chat, threads, print_ids, bench;
    cli_device dev;
    cli_prune prune;
} generate_args;

static int parse_value(generate_args *a, const char *opt, const char *value)
{
    if (!strcmp(opt, "--prompt"))
        a->prompt = value;
    else if (!strcmp(opt, "--prompt-ids"))
        a->prompt_ids = value;
    else if (!strcmp(opt, "--system"))
        a->system = value;
    else if (!strcmp(opt, "--max-tokens"))
        return cli_parse_size("generate", "--max-tokens", value, &a->max_new);
    else if (cli_is_prune_flag(opt))
        return cli_parse_prune_flag("generate", opt, value, &a->prune);
    else if (cli_is_device_flag(opt))
        return cli_parse_device_flag("generate", opt, value, &a->dev);
    else
        return cli_parse_threads("generate", value, &a->threads);
    return 0;
}

static int parse_args(int argc, char **argv, generate_args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--prompt") || !strcmp(s, "--prompt-ids") || !strcmp(s, "--system") ||
            !strcmp(s, "--max-tokens") ||
            !strcmp(s, "--threads") || cli_is_device_flag(s) || cli_is_prune_flag(s)) {
            if (i + 1 >= argc) {
                char msg[128];
                snprintf(msg, sizeof msg, "%s needs a value", s);
                return cli_usage_error("generate", msg, USAGE);
            }
            if (parse_value(a, s, argv[++i]))
                return 2;
        } else if (!strcmp(s, "--chat")) {
            a->chat = 1;
        } else if (!strcmp(s, "--ids")) {
            a->print_ids = 1;
        } else if (!strcmp(s, "--bench")) {
            a->bench = 1;
        } else if (!strcmp(s, "--prune-decoding")) {
            a->prune.decoding = 1;
        } else if (s[0] == '-' && s[1]) {
            char msg[300];
            snprintf(msg, sizeof msg, "unknown option '%.200s'", s);
            return cli_usage_error("generate", msg, USAGE);
        } else if (!a->model) {
            a->model = s;
        } else {
            return cli_usage_error("generate", "more than one MODEL given", USAGE);
        }
    }
    if (!a->prompt == !a->prompt_ids)
        return cli_usage_error("generate", "give exactly one of --prompt TEXT or --prompt-ids LIST",
                               USAGE);
    if (a->prompt && !a->prompt[0])
        return cli_usage_error("generate", "--prompt is empty", USAGE);
    if (a->prompt_ids && a->chat)
        return cli_usage_error("generate", "--chat needs --prompt TEXT", USAGE);
    if (a->system && !a->chat)
        return cli_usage_error("generate", "--system needs --chat", USAGE);
    if (cli_prune_check("generate", &a->prune))
        return 2;
    if (!a->model)
        a->model = cli_default_model();
    return 0;
}

/* The text to tokenize: the prompt, or its chat rendering (malloc'ed). */
static int prompt_text(const generate_args *a, char **out)
{
    if (!a->chat) {
        *out = strdup(a->prompt);
        return *out ? 0 : cli_error("generate", "out of memory");
    }
    kvz_chat_template *t = NULL;
    kvz_error err = {0};
    kvz_chat_message msgs[2];
    size_t n = 0;
    if (a->system)
        msgs[n++] = (kvz_chat_message){"system", a->system};
    msgs[n++] = (kvz_chat_message){"user", a->prompt};
    kvz_chat_options opt = {1, 0, NULL};
    int rc = kvz_chat_template_load(a->model, NULL, &t, &err);
    if (!rc)
        rc = kvz_chat_render(t, msgs, n, &opt, out, &err);
    kvz_chat_template_free(t);
    return rc ? cli_error("generate", err.msg) : 0;
}

static int is_eos(const cli_model *m, int32_t id)
{
    const kvz_model_config *c = kvz_forward_config(m->fwd);
    for (size_t i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] == id)
            return 1;
    return id == kvz_tokenizer_eos_id(m->tok);
}

/* Prints the part of decode(ids) not printed yet, unless it ends in U+FFFD
 * (an incomplete multi-byte character) and more may come. */
typedef struct text_stream {
    size_t printed;
} text_stream;

static int stream_text(const cli_model *m, const int32_t *ids, size_t n, int final, text_stream *s)
{
    char *text = NULL;
    size_t len = 0;
    kvz_error err = {0};
    if (kvz_detokenize_bytes(m->tok, ids, n, 1, &text, &len, &err))
        return cli_error("generate", err.msg);
    int incomplete = len >= 3 && !memcmp(text + len - 3, "\xEF\xBF\xBD", 3);
    if ((final || !incomplete) && len > s->printed) {
        fwrite(text + s->printed, 1, len - s->printed, stdout);
        fflush(stdout);
        s->printed = len;
    }
    free(text);
    return 0;
}

static int emit(const generate_args *a, const cli_model *m, const int32_t *ids, size_t n, int final,
                text_stream *s)
{
    if (!a->print_ids)
        return stream_text(m, ids, n, final, s);
    if (!final) {
        printf("%s%ld", n > 1 ? " " : "", (long)ids[n - 1]);
        fflush(stdout);
    }
    return 0;
}

static int decode_loop(generate_args *a, cli_model *m, const kvz_tokens *prompt)
{
    size_t vocab = kvz_forward_config(m->fwd)->vocab_size;
    float *logits = malloc(vocab * sizeof *logits);
    int32_t *out = malloc(a->max_new * sizeof *out);
    kvz_error err = {0};
    text_stream s = {0};
    size_t n_out = 0;
    int rc = !logits || !out ? cli_error("generate", "out of memory") : 0;
    double t0 = cli_now(), t1 = t0;
    size_t n_steps = 0;
    if (!rc && cli_prefill(m, &a->prune, prompt->ids, prompt->n, KVZ_LOGITS_LAST,
                           logits, &err))
        rc = cli_error("generate", err.msg);
    t1 = cli_now();
    double policy_prefill = a->prune.policy_seconds;
    double score_prefill = a->prune.policy ? kvz_prune_score_seconds(a->prune.policy) : 0.0;
    while (!rc && n_out < a->max_new) {
        int32_t next = (int32_t)kvz_argmax(logits, vocab);
        if (is_eos(m, next))
            break;
        out[n_out++] = next;
        rc = emit(a, m, out, n_out, 0, &s);
        if (!rc && n_out < a->max_new) {
            n_steps++;
            if (kvz_forward_run(m->fwd, &next, 1, NULL, NULL, KVZ_LOGITS_LAST, logits, &err))
                rc = cli_error("generate", err.msg);
        }
    }
    double t2 = cli_now();
    if (!rc && a->bench) {
        double dec = t2 - t1, pol = a->prune.policy_seconds;
        double score = a->prune.policy ? kvz_prune_score_seconds(a->prune.policy) : 0.0;
        fprintf(stderr,
                "kvzap generate: bench: prompt %zu tokens, prefill %.3f s (%.1f tokens/s); %zu "
                "decode steps %.3f s (%.2f tokens/s); pruning policy %.3f s in the prefill "
                "(%.2f%%), %.3f s in decoding (%.2f%%); of which scoring (the surrogate) "
                "%.3f s (%.2f%%) and %.3f s (%.2f%%); peak RSS %.1f MiB\n",
                prompt->n, t1 - t0, (double)prompt->n / (t1 - t0), n_steps, dec,
                dec > 0 ? (double)n_steps / dec : 0.0, policy_prefill,
                100.0 * policy_prefill / (t1 - t0), pol - policy_prefill,
                dec > 0 ? 100.0 * (pol - policy_prefill) / dec : 0.0, score_prefill,
                100.0 * score_prefill / (t1 - t0), score - score_prefill,
                dec > 0 ? 100.0 * (score - score_prefill) / dec : 0.0, cli_peak_rss_mib());
    }
    if (!rc)
        rc = emit(a, m, out, n_out, 1, &s);
    if (!rc)
        printf("\n");
    free(logits);
    free(out);
    return rc;
}

int cmd_generate(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("%s", USAGE);
        printf(HELP, CLI_DEVICE_HELP, CLI_PRUNE_HELP);
        return 0;
    }
    cli_tune_openblas();
    generate_args a = {NULL, NULL, NULL, NULL, 64, 0, 0, 0, 0, CLI_DEVICE_DEFAULT, {0}};
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    a.prune.timed = a.bench;
    if (!a.chat)
        a.prune.oracle_text = a.prompt; /* --prune oracle scores the prompt's text */
    char *text = NULL;
    kvz_tokens toks = {0};
    if (a.prompt_ids) {
        if (cli_parse_ids("generate", a.prompt_ids, &toks.ids, &toks.n))
            return 2;
    } else if (prompt_text(&a, &text)) {
        return 1;
    }
    cli_model m;
    kvz_error err = {0};
    rc = cli_model_open_pruned("generate", a.model, &a.dev, a.threads, 0, 1, &a.prune, &m);
    if (!rc && text && kvz_tokenize(m.tok, text, strlen(text), 1, &toks, &err))
        rc = cli_error("generate", err.msg);
    if (!rc && toks.n == 0)
        rc = cli_error("generate", "the prompt gives no tokens");
    if (!rc)
        rc = decode_loop(&a, &m, &toks);
    if (!rc)
        cli_prune_report("generate", &a.prune, &m);
    cli_prune_close(&a.prune);
    kvz_tokens_free(&toks);
    if (m.fwd || m.ck)
        cli_model_close(&m);
    free(text);
    return rc;
}
