/* cmd_template: `kvzap template` renders a conversation with a model's chat
 * template (model/chat_template.h) and prints the exact rendered string. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"
#include "../model/chat_template.h"
#include "commands.h"

static const char USAGE[] =
    "usage: kvzap template [MODEL] [--family NAME] [--system S] [--user U] [--assistant A]...\n"
    "                      [--repeat-prompt TEXT | --repeat-file PATH]\n"
    "                      [--generation-prompt] [--no-thinking] [--date DATE] [--verbose]\n";

static const char HELP[] =
    "\nRenders a conversation exactly as transformers' apply_chat_template(messages,\n"
    "tokenize=False) does with the model's chat template, and prints it to stdout\n"
    "(no newline added).\n\n"
    "  MODEL               GGUF file, HF directory, tokenizer_config.json or .jinja file\n"
    "                      (default: the cached SmolLM2-135M-Instruct GGUF)\n"
    "  --family NAME       skip detection: chatml-smollm2, qwen2, qwen3, llama3, llama3.1\n"
    "  --system S, --user U, --assistant A\n"
    "                      append a message; repeat them to build a conversation in order\n"
    "  --repeat-prompt TEXT  the KVzip+ oracle prompt for TEXT: [user: TEXT.strip() +\n"
    "                      \"\\n\\nRepeat the previous context exactly.\", assistant: TEXT.strip()]\n"
    "  --repeat-file PATH  the same, with the document read from PATH\n"
    "  --generation-prompt append the assistant header (add_generation_prompt=True)\n"
    "  --no-thinking       Qwen3: enable_thinking=False (empty think block after the header)\n"
    "  --date DATE         llama3.1: the 'Today Date' (default \"26 Jul 2024\")\n"
    "  --verbose           print the detected family and its source to stderr\n";

typedef struct template_args {
    const char *model, *family, *repeat_text, *repeat_file, *date;
    kvz_chat_message *msgs;
    size_t n_msgs;
    int generation_prompt, no_thinking, verbose;
} template_args;

static const char *message_role(const char *flag)
{
    if (!strcmp(flag, "--system"))
        return "system";
    if (!strcmp(flag, "--user"))
        return "user";
    if (!strcmp(flag, "--assistant"))
        return "assistant";
    return NULL;
}

/* Options that take a value; returns the field to set, or NULL. */
static const char **value_option(template_args *a, const char *flag)
{
    if (!strcmp(flag, "--family"))
        return &a->family;
    if (!strcmp(flag, "--repeat-prompt"))
        return &a->repeat_text;
    if (!strcmp(flag, "--repeat-file"))
        return &a->repeat_file;
    if (!strcmp(flag, "--date"))
        return &a->date;
    return NULL;
}

static int parse_flag(template_args *a, const char *flag)
{
    if (!strcmp(flag, "--generation-prompt"))
        a->generation_prompt = 1;
    else if (!strcmp(flag, "--no-thinking"))
        a->no_thinking = 1;
    else if (!strcmp(flag, "--verbose"))
        a->verbose = 1;
    else
        return 0;
    return 1;
}

static int parse_args(int argc, char **argv, template_args *a)
{
    char msg[256];
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *role = message_role(arg);
        const char **field = value_option(a, arg);
        if ((role || field) && i + 1 >= argc) {
            snprintf(msg, sizeof msg, "%s needs a value", arg);
            return cli_usage_error("template", msg, USAGE);
        }
        if (role) {
            a->msgs[a->n_msgs++] = (kvz_chat_message){role, argv[++i]};
        } else if (field) {
            *field = argv[++i];
        } else if (parse_flag(a, arg)) {
            continue;
        } else if (arg[0] == '-' || a->model) {
            snprintf(msg, sizeof msg, "unexpected argument '%s'", arg);
            return cli_usage_error("template", msg, USAGE);
        } else {
            a->model = arg;
        }
    }
    return 0;
}

static int check_args(const template_args *a)
{
    int repeat = (a->repeat_text != NULL) + (a->repeat_file != NULL);
    if (repeat > 1)
        return cli_usage_error("template", "give --repeat-prompt or --repeat-file, not both",
                               USAGE);
    if (repeat && a->n_msgs)
        return cli_usage_error("template", "--repeat-* builds its own conversation; drop "
                               "--system/--user/--assistant", USAGE);
    if (!repeat && !a->n_msgs)
        return cli_usage_error("template", "nothing to render: give messages or --repeat-prompt",
                               USAGE);
    return 0;
}

static int render(const kvz_chat_template *t, const template_args *a, char **out, kvz_error *err)
{
    if (a->repeat_file) {
        char *text = NULL;
        size_t len;
        int rc = kvz_file_read_all(a->repeat_file, &text, &len, err);
        if (rc == KVZ_OK && strlen(text) != len)
            rc = kvz_fail(err, KVZ_EFORMAT, "%s: the document contains a NUL byte", a->repeat_file);
        if (rc == KVZ_OK)
            rc = kvz_chat_render_repeat_prompt(t, text, out, err);
        free(text);
        return rc;
    }
    if (a->repeat_text)
        return kvz_chat_render_repeat_prompt(t, a->repeat_text, out, err);
    kvz_chat_options opt = {a->generation_prompt, a->no_thinking, a->date};
    return kvz_chat_render(t, a->msgs, a->n_msgs, &opt, out, err);
}

static int run(template_args *a)
{
    kvz_chat_template *t = NULL;
    kvz_error err = {0};
    int rc = kvz_chat_template_load(a->model ? a->model : cli_default_model(), a->family, &t, &err);
    if (rc)
        return cli_error("template", err.msg);
    if (a->verbose)
        fprintf(stderr, "kvzap template: family %s (from %s)\n",
                kvz_chat_family_name(kvz_chat_template_family(t)), kvz_chat_template_source(t));
    char *out = NULL;
    rc = render(t, a, &out, &err);
    kvz_chat_template_free(t);
    if (rc)
        return cli_error("template", err.msg);
    fputs(out, stdout);
    free(out);
    return fflush(stdout) == 0 ? 0 : cli_error("template", "cannot write to stdout");
}

int cmd_template(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("%s%s", USAGE, HELP);
        return 0;
    }
    template_args a = {0};
    a.msgs = calloc((size_t)argc + 1, sizeof *a.msgs);
    if (!a.msgs)
        return cli_error("template", "out of memory");
    int rc = parse_args(argc, argv, &a);
    if (rc == 0)
        rc = check_args(&a);
    if (rc == 0)
        rc = run(&a);
    free(a.msgs);
    return rc;
}
