/* cmd_tokenize: `kvzap tokenize` runs a model's tokenizer (model/tokenizer.h)
 * on text from --text, --file or stdin and prints the token ids, optionally
 * with their code-point offsets, as text or JSON; --decode goes the other
 * way (ids -> text, as tokenizer.decode). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../common/kvz_file.h"
#include "../model/tokenizer.h"
#include "commands.h"

static const char USAGE[] =
    "usage: kvzap tokenize [MODEL] [--text STR | --file PATH] [--offsets] [--no-special] [--json]\n"
    "       kvzap tokenize [MODEL] --decode \"ID ID ...\" [--skip-special]\n";

static const char HELP[] =
    "\nTokenizes text exactly as the model's Hugging Face fast tokenizer does\n"
    "(tok(text, return_offsets_mapping=True)) and prints the ids, space-separated.\n"
    "The text is read from --text, --file, or else stdin, and must be UTF-8.\n\n"
    "  MODEL           GGUF file, HF directory or tokenizer.json\n"
    "                  (default: the cached SmolLM2-135M-Instruct GGUF)\n"
    "  --text STR      tokenize STR\n"
    "  --file PATH     tokenize the contents of PATH\n"
    "  --offsets       one line per token: id, start, end (code points of the\n"
    "                  original text, end exclusive) and the text span as JSON\n"
    "  --no-special    do not add BOS/EOS (add_special_tokens=False)\n"
    "  --json          print {\"ids\": [...], \"offsets\": [[start, end], ...]}\n"
    "  --decode IDS    print tokenizer.decode(IDS) instead (IDS: integers)\n"
    "  --skip-special  with --decode: skip_special_tokens=True\n"
    "  --info          print the tokenizer description to stderr\n";

typedef struct tokenize_args {
    const char *model, *text, *file, *decode;
    int offsets, no_special, json, skip_special, info;
} tokenize_args;

static int parse_args(int argc, char **argv, tokenize_args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char **value = !strcmp(s, "--text") ? &a->text : !strcmp(s, "--file") ? &a->file
                           : !strcmp(s, "--decode") ? &a->decode : NULL;
        if (value) {
            if (i + 1 >= argc) {
                char msg[128];
                snprintf(msg, sizeof msg, "%s needs a value", s);
                return cli_usage_error("tokenize", msg, USAGE);
            }
            *value = argv[++i];
        } else if (!strcmp(s, "--offsets")) {
            a->offsets = 1;
        } else if (!strcmp(s, "--no-special")) {
            a->no_special = 1;
        } else if (!strcmp(s, "--json")) {
            a->json = 1;
        } else if (!strcmp(s, "--skip-special")) {
            a->skip_special = 1;
        } else if (!strcmp(s, "--info")) {
            a->info = 1;
        } else if (s[0] == '-' && s[1]) {
            char msg[300];
            snprintf(msg, sizeof msg, "unknown option '%.200s'", s);
            return cli_usage_error("tokenize", msg, USAGE);
        } else if (!a->model) {
            a->model = s;
        } else {
            return cli_usage_error("tokenize", "more than one MODEL given", USAGE);
        }
    }
    if (a->text && a->file)
        return cli_usage_error("tokenize", "give --text or --file, not both", USAGE);
    if (!a->model)
        a->model = cli_default_model();
    return 0;
}

static int read_stdin(char **out, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, stdin);
        if (n < cap)
            break;
        char *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            return -1;
        }
        buf = bigger;
        cap *= 2;
    }
    if (!buf || ferror(stdin)) {
        free(buf);
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

/* The input text (owned copy) and a name for messages. */
static int get_text(const tokenize_args *a, char **text, size_t *len, const char **name)
{
    kvz_error err = {0};
    if (a->text) {
        *name = "--text";
        *len = strlen(a->text);
        *text = malloc(*len + 1);
        if (!*text)
            return cli_error("tokenize", "out of memory");
        memcpy(*text, a->text, *len + 1);
        return 0;
    }
    if (a->file) {
        *name = a->file;
        return kvz_file_read_all(a->file, text, len, &err) ? cli_error("tokenize", err.msg) : 0;
    }
    *name = "<stdin>";
    return read_stdin(text, len) ? cli_error("tokenize", "<stdin>: read error") : 0;
}

static void print_span_json(const char *text, const kvz_token_span *s)
{
    json_t *j = json_stringn(text + s->byte_start, s->byte_end - s->byte_start);
    char *dump = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    printf("%s", dump ? dump : "\"\"");
    free(dump);
    json_decref(j);
}

static void print_tokens(const tokenize_args *a, const char *text, const kvz_tokens *t)
{
    if (a->json) {
        printf("{\"ids\": [");
        for (size_t i = 0; i < t->n; i++)
            printf("%s%d", i ? ", " : "", t->ids[i]);
        printf("], \"offsets\": [");
        for (size_t i = 0; i < t->n; i++)
            printf("%s[%zu, %zu]", i ? ", " : "", t->spans[i].start, t->spans[i].end);
        printf("]}\n");
        return;
    }
    if (a->offsets) {
        for (size_t i = 0; i < t->n; i++) {
            printf("%d\t%zu\t%zu\t", t->ids[i], t->spans[i].start, t->spans[i].end);
            print_span_json(text, &t->spans[i]);
            printf("\n");
        }
        return;
    }
    for (size_t i = 0; i < t->n; i++)
        printf("%s%d", i ? " " : "", t->ids[i]);
    printf("\n");
}

static int run_encode(const tokenize_args *a, const kvz_tokenizer *tok)
{
    char *text = NULL;
    size_t len = 0;
    const char *name = NULL;
    if (get_text(a, &text, &len, &name))
        return 1;
    kvz_tokens toks;
    kvz_error err = {0};
    int rc = kvz_tokenize(tok, text, len, !a->no_special, &toks, &err);
    if (rc == KVZ_OK)
        print_tokens(a, text, &toks);
    else
        fprintf(stderr, "kvzap tokenize: %s: %s\n", name, err.msg);
    kvz_tokens_free(&toks);
    free(text);
    return rc == KVZ_OK ? 0 : 1;
}

static int run_decode(const tokenize_args *a, const kvz_tokenizer *tok)
{
    size_t n = 0, cap = strlen(a->decode) / 2 + 1;
    int32_t *ids = malloc(cap * sizeof *ids);
    const char *p = a->decode;
    while (ids && *p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) {
            if (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '[' || *p == ']') {
                p++;
                continue;
            }
            free(ids);
            return cli_usage_error("tokenize", "--decode takes integer ids", USAGE);
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    char *text = NULL;
    size_t len = 0;
    kvz_error err = {0};
    int rc = ids ? kvz_detokenize_bytes(tok, ids, n, a->skip_special, &text, &len, &err) : KVZ_ENOMEM;
    if (rc == KVZ_OK) {
        fwrite(text, 1, len, stdout);
        printf("\n");
    } else {
        fprintf(stderr, "kvzap tokenize: %s\n", ids ? err.msg : "out of memory");
    }
    free(text);
    free(ids);
    return rc == KVZ_OK ? 0 : 1;
}

int cmd_tokenize(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("%s%s", USAGE, HELP);
        return 0;
    }
    tokenize_args a = {0};
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    kvz_tokenizer *tok = NULL;
    kvz_error err = {0};
    if (kvz_tokenizer_load(a.model, &tok, &err) != KVZ_OK)
        return cli_error("tokenize", err.msg);
    if (a.info)
        fprintf(stderr, "%s: %s\n", kvz_tokenizer_source(tok), kvz_tokenizer_describe(tok));
    rc = a.decode ? run_decode(&a, tok) : run_encode(&a, tok);
    kvz_tokenizer_free(tok);
    return rc;
}
