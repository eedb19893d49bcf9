/* chat_template: family names, detection from template text, and loading a
 * checkpoint's template (HF directory, tokenizer_config.json, .jinja, GGUF).
 * Rendering lives in chat_template_render.c. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../common/kvz_file.h"
#include "kvz_json.h"
#include "chat_template.h"
#include "checkpoint.h" /* kvz_model_locate */
#include "gguf.h"

struct kvz_chat_template {
    kvz_chat_family family;
    char *text;   /* NULL for a family-only template */
    char *source; /* path or "override" */
};

static const char *const FAMILY_NAMES[KVZ_CHAT_N_FAMILIES] = {
    "chatml-smollm2", "qwen2", "qwen3", "llama3", "llama3.1",
};

const char *kvz_chat_family_name(kvz_chat_family f)
{
    return (unsigned)f < KVZ_CHAT_N_FAMILIES ? FAMILY_NAMES[f] : NULL;
}

const char *kvz_chat_family_names(void)
{
    return "chatml-smollm2, qwen2, qwen3, llama3, llama3.1";
}

int kvz_chat_family_from_name(const char *name, kvz_chat_family *out, kvz_error *err)
{
    for (int i = 0; name && i < KVZ_CHAT_N_FAMILIES; i++)
        if (!strcmp(name, FAMILY_NAMES[i])) {
            *out = (kvz_chat_family)i;
            return KVZ_OK;
        }
    return kvz_fail(err, KVZ_EINVAL, "unknown chat template family '%s' (known: %s)",
                    name ? name : "(null)", kvz_chat_family_names());
}

/* ---------- detection ---------- */

/* A family is recognised when its template contains every `required`
 * substring and none of the `forbidden` ones (markers of variants whose
 * output differs: tools, thinking, other default prompts, dynamic dates). */
typedef struct family_signature {
    kvz_chat_family family;
    const char *required[6];
    const char *forbidden[6];
} family_signature;

static const family_signature SIGNATURES[] = {
    {KVZ_CHAT_QWEN3,
     {"<|im_start|>", "ns.last_query_index", "reasoning_content", "enable_thinking",
      "<think>\\n\\n</think>\\n\\n", NULL},
     {"You are Qwen", NULL}},
    {KVZ_CHAT_QWEN2,
     {"<|im_start|>", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
      "messages[0]['role'] == 'system'", NULL},
     {"<think>", "reasoning_content", "Please reason step by step", NULL}},
    {KVZ_CHAT_CHATML_SMOLLM2,
     {"<|im_start|>", "You are a helpful AI assistant named SmolLM, trained by Hugging Face", NULL},
     {"<think>", "tools", "no_think", "reasoning", NULL}},
    {KVZ_CHAT_LLAMA3_1,
     {"<|start_header_id|>", "Cutting Knowledge Date: December 2023", "Today Date: ",
      "26 Jul 2024", "<|eot_id|>", NULL},
     {"strftime_now", "<|image|>", NULL}},
    {KVZ_CHAT_LLAMA3,
     {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "trim", "bos_token", NULL},
     {"Cutting Knowledge", "date_string", "system_message", "tools", "<|python_tag|>", NULL}},
};

static int signature_matches(const family_signature *s, const char *text)
{
    for (int i = 0; s->required[i]; i++)
        if (!strstr(text, s->required[i]))
            return 0;
    for (int i = 0; s->forbidden[i]; i++)
        if (strstr(text, s->forbidden[i]))
            return 0;
    return 1;
}

static const char *unsupported_hint(const char *text)
{
    if (strstr(text, "strftime_now"))
        return "a Llama-3.2-style template that dates its system block with today's date "
               "(strftime_now)";
    if (strstr(text, "<|im_start|>"))
        return "a ChatML variant that is not one of the known ones";
    if (strstr(text, "<|start_header_id|>"))
        return "a Llama-3 variant that is not one of the known ones";
    return "not a known template";
}

int kvz_chat_template_detect(const char *template_text, kvz_chat_family *out, kvz_error *err)
{
    if (!template_text || !*template_text)
        return kvz_fail(err, KVZ_EUNSUPPORTED, "chat template: the template text is empty");
    for (size_t i = 0; i < sizeof SIGNATURES / sizeof SIGNATURES[0]; i++)
        if (signature_matches(&SIGNATURES[i], template_text)) {
            *out = SIGNATURES[i].family;
            return KVZ_OK;
        }
    return kvz_fail(err, KVZ_EUNSUPPORTED,
                    "chat template: unsupported template (%s); supported families: %s "
                    "(choose one explicitly with --family NAME only if it renders identically)",
                    unsupported_hint(template_text), kvz_chat_family_names());
}

/* ---------- construction ---------- */

static int make_template(kvz_chat_family f, char *text, const char *source,
                         kvz_chat_template **out, kvz_error *err)
{
    kvz_chat_template *t = calloc(1, sizeof *t);
    char *src = strdup(source);
    if (!t || !src) {
        free(t);
        free(src);
        free(text);
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", source);
    }
    t->family = f;
    t->text = text;
    t->source = src;
    *out = t;
    return KVZ_OK;
}

int kvz_chat_template_from_family(kvz_chat_family f, kvz_chat_template **out, kvz_error *err)
{
    *out = NULL;
    if (!kvz_chat_family_name(f))
        return kvz_fail(err, KVZ_EINVAL, "chat template: family %d out of range", (int)f);
    return make_template(f, NULL, "override", out, err);
}

/* Takes ownership of text. */
static int template_from_owned_text(char *text, const char *source, kvz_chat_template **out,
                                    kvz_error *err)
{
    kvz_chat_family f;
    kvz_error sub;
    if (kvz_chat_template_detect(text, &f, &sub)) {
        free(text);
        /* sub.msg starts with "chat template: " */
        return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: %s", source, sub.msg + 15);
    }
    return make_template(f, text, source, out, err);
}

int kvz_chat_template_from_text(const char *template_text, const char *source,
                                kvz_chat_template **out, kvz_error *err)
{
    *out = NULL;
    char *copy = strdup(template_text ? template_text : "");
    if (!copy)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", source);
    return template_from_owned_text(copy, source ? source : "chat template", out, err);
}

void kvz_chat_template_free(kvz_chat_template *t)
{
    if (!t)
        return;
    free(t->text);
    free(t->source);
    free(t);
}

kvz_chat_family kvz_chat_template_family(const kvz_chat_template *t) { return t->family; }
const char *kvz_chat_template_text(const kvz_chat_template *t) { return t->text; }
const char *kvz_chat_template_source(const kvz_chat_template *t) { return t->source; }

/* ---------- reading template text from files ---------- */

/* tokenizer_config.json "chat_template": a string, or [{name, template}] -> "default". */
static int template_from_json_value(json_t *v, const char *path, char **text, kvz_error *err)
{
    if (json_is_string(v)) {
        *text = strdup(json_string_value(v));
        return *text ? KVZ_OK : kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    if (!json_is_array(v))
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: 'chat_template' is neither a string nor a list of {name, template}",
                        path);
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) {
        const char *name = json_string_value(json_object_get(item, "name"));
        json_t *tmpl = json_object_get(item, "template");
        if (name && !strcmp(name, "default") && json_is_string(tmpl)) {
            *text = strdup(json_string_value(tmpl));
            return *text ? KVZ_OK : kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
        }
    }
    return kvz_fail(err, KVZ_ENOTFOUND,
                    "%s: 'chat_template' is a list without a 'default' entry (pass --family NAME)",
                    path);
}

static int read_tokenizer_config(const char *path, char **text, kvz_error *err)
{
    json_error_t jerr;
    /* a failed allocation inside jansson may also leave a mangled value
     * behind a successful load (kvz_json.h) */
    kvz_json_begin();
    json_t *root = json_load_file(path, JSON_DECODE_ANY, &jerr);
    if (kvz_json_failed() || (!root && json_error_code(&jerr) == json_error_out_of_memory)) {
        json_decref(root);
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    if (!root) {
        if (!kvz_path_exists(path))
            return kvz_fail(err, KVZ_EIO, "%s: cannot open: no such file", path);
        return kvz_fail(err, KVZ_EFORMAT, "%s:%d:%d: malformed JSON: %s", path, jerr.line,
                        jerr.column, jerr.text);
    }
    int rc;
    json_t *v = json_is_object(root) ? json_object_get(root, "chat_template") : NULL;
    if (!json_is_object(root))
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: expected a JSON object at the top level", path);
    else if (!v || json_is_null(v))
        rc = kvz_fail(err, KVZ_ENOTFOUND,
                      "%s: no 'chat_template' in this tokenizer config (pass --family NAME)", path);
    else
        rc = template_from_json_value(v, path, text, err);
    json_decref(root);
    return rc;
}

static int read_gguf_template(const char *path, char **text, kvz_error *err)
{
    kvz_gguf *g = NULL;
    int rc = kvz_gguf_open(path, &g, err);
    if (rc)
        return rc;
    const char *s = NULL;
    size_t len = 0;
    kvz_error sub;
    rc = kvz_gguf_get_str(g, "tokenizer.chat_template", &s, &len, &sub);
    if (rc == KVZ_ENOTFOUND)
        rc = kvz_fail(err, KVZ_ENOTFOUND,
                      "%s: no tokenizer.chat_template in this GGUF (pass --family NAME)", path);
    else if (rc)
        rc = kvz_fail(err, rc, "%s", sub.msg);
    else if (memchr(s, '\0', len))
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: tokenizer.chat_template contains a NUL byte", path);
    else if (!(*text = strndup(s, len)))
        rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    kvz_gguf_close(g);
    return rc;
}

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* Reads the first 4 bytes: 1 when they are the GGUF magic. */
static int is_gguf_file(const char *path)
{
    char magic[4] = {0};
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return 0;
    size_t got = fread(magic, 1, 4, fp);
    fclose(fp);
    return got == 4 && !memcmp(magic, "GGUF", 4);
}

static int read_plain_text(const char *path, char **text, kvz_error *err)
{
    size_t len;
    int rc = kvz_file_read_all(path, text, &len, err);
    if (rc == KVZ_OK && strlen(*text) != len) {
        free(*text);
        *text = NULL;
        return kvz_fail(err, KVZ_EFORMAT, "%s: template file contains a NUL byte", path);
    }
    return rc;
}

/* The file inside an HF directory the template comes from (malloc'ed):
 * chat_template.jinja takes precedence over tokenizer_config.json, as in
 * transformers. */
static char *template_file_in_dir(const char *dir)
{
    char *jinja = kvz_path_join(dir, "chat_template.jinja");
    if (jinja && kvz_path_exists(jinja))
        return jinja;
    free(jinja);
    return kvz_path_join(dir, "tokenizer_config.json");
}

/* Reads the template text for path; *file is the file it came from (malloc'ed). */
static int read_template_text(const char *path, char **text, char **file, kvz_error *err)
{
    int is_dir = kvz_path_is_dir(path);
    *file = is_dir ? template_file_in_dir(path) : strdup(path);
    if (!*file)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    const char *f = *file;
    if (is_dir)
        return ends_with(f, ".jinja") ? read_plain_text(f, text, err)
                                      : read_tokenizer_config(f, text, err);
    if (!kvz_path_exists(f))
        return kvz_fail(err, KVZ_EIO, "%s: cannot open: no such file or directory", f);
    if (ends_with(f, ".json"))
        return read_tokenizer_config(f, text, err);
    if (is_gguf_file(f))
        return read_gguf_template(f, text, err);
    if (ends_with(f, ".jinja"))
        return read_plain_text(f, text, err);
    return kvz_fail(err, KVZ_EUNSUPPORTED,
                    "%s: not a GGUF file, an HF directory, a tokenizer_config.json or a .jinja "
                    "template",
                    f);
}

int kvz_chat_template_load(const char *model_path, const char *override_or_NULL,
                           kvz_chat_template **out, kvz_error *err)
{
    *out = NULL;
    if (override_or_NULL && strcmp(override_or_NULL, "auto") != 0) {
        kvz_chat_family f = KVZ_CHAT_CHATML_SMOLLM2;
        int rc = kvz_chat_family_from_name(override_or_NULL, &f, err);
        return rc ? rc : kvz_chat_template_from_family(f, out, err);
    }
    if (!model_path)
        return kvz_fail(err, KVZ_EINVAL, "chat template: no model path given");
    char *text = NULL, *file = NULL, *path = NULL; /* path: kvz_model_locate */
    int rc = kvz_model_locate(model_path, &path, err);
    rc = rc ? rc : read_template_text(path, &text, &file, err);
    if (rc == KVZ_OK)
        rc = template_from_owned_text(text, file, out, err);
    free(file);
    free(path);
    return rc;
}
