/* test_chat_template_load: where templates come from and how failures read.
 * The real assets (default GGUF, Qwen3 tokenizer_config.json, the Llama-3.2
 * tokenizer dir without a template), HF directories built in a temp dir
 * (chat_template.jinja precedence, list-form chat_template), overrides, and
 * the errors for unknown templates, unknown family names and bad messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sys/stat.h>

#include "common/kvz_file.h"
#include "kvz_test.h"
#include "model/chat_template.h"

static char *fixture_template(const char *family)
{
    char rel[128];
    snprintf(rel, sizeof rel, "templates/%s.json", family);
    json_t *root = json_load_file(kvz_test_fixture(rel), 0, NULL);
    char *s = root ? strdup(json_string_value(json_object_get(root, "template"))) : NULL;
    json_decref(root);
    return s;
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char *path = kvz_path_join(dir, name);
    FILE *fp = fopen(path, "wb");
    KVZ_CHECK(fp != NULL, "cannot write %s", path);
    if (fp) {
        fputs(text, fp);
        fclose(fp);
    }
    free(path);
}

/* Loads path (with override), expects rc and, when ok, the family. */
static void expect_load(const char *path, const char *override, int want_rc, const char *family,
                        const char *msg_part)
{
    kvz_chat_template *t = NULL;
    kvz_error err = {0};
    int rc = kvz_chat_template_load(path, override, &t, &err);
    KVZ_CHECK(rc == want_rc, "load %s (override %s): rc %d want %d: %s", path,
              override ? override : "-", rc, want_rc, err.msg);
    if (rc == KVZ_OK && family)
        KVZ_CHECK(!strcmp(kvz_chat_family_name(kvz_chat_template_family(t)), family),
                  "load %s: family %s want %s", path,
                  kvz_chat_family_name(kvz_chat_template_family(t)), family);
    if (rc != KVZ_OK && msg_part)
        KVZ_CHECK(strstr(err.msg, msg_part) != NULL, "load %s: message '%s' lacks '%s'", path,
                  err.msg, msg_part);
    KVZ_CHECK(rc == KVZ_OK || t == NULL, "out not NULL on failure");
    kvz_chat_template_free(t);
}

static void check_real_assets(void)
{
    const char *gguf = getenv("KVZAP_DEFAULT_MODEL");
    const char *assets = getenv("KVZ_ASSETS");
    if (!gguf || !assets)
        kvz_test_skip("KVZAP_DEFAULT_MODEL / KVZ_ASSETS not set");
    kvz_chat_template *t = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_chat_template_load(gguf, NULL, &t, &err), err);
    char *want = fixture_template("chatml-smollm2");
    if (t) {
        KVZ_CHECK(kvz_chat_template_family(t) == KVZ_CHAT_CHATML_SMOLLM2, "GGUF family");
        KVZ_CHECK(want && !strcmp(kvz_chat_template_text(t), want), "GGUF template text differs");
    }
    free(want);
    kvz_chat_template_free(t);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizers/qwen3", assets);
    expect_load(path, NULL, KVZ_OK, "qwen3", NULL);
    expect_load(path, "auto", KVZ_OK, "qwen3", NULL);
    snprintf(path, sizeof path, "%s/tokenizers/qwen3/tokenizer_config.json", assets);
    expect_load(path, NULL, KVZ_OK, "qwen3", NULL);
    snprintf(path, sizeof path, "%s/tokenizers/llama3", assets);
    expect_load(path, NULL, KVZ_ENOTFOUND, NULL, "tokenizer_config.json: no 'chat_template'");
    expect_load(path, "llama3", KVZ_OK, "llama3", NULL);
}

static void check_hf_dirs(void)
{
    const char *tmp = kvz_test_tmpdir();
    char *llama = fixture_template("llama3");
    json_t *cfg = json_pack("{s:[{s:s,s:s},{s:s,s:s}]}", "chat_template", "name", "tool_use",
                            "template", "garbage", "name", "default", "template", llama);
    char *dir = kvz_path_join(tmp, "listform");
    char *cfgpath = kvz_path_join(dir, "tokenizer_config.json");
    KVZ_CHECK(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    json_dump_file(cfg, cfgpath, 0);
    expect_load(dir, NULL, KVZ_OK, "llama3", NULL);
    /* chat_template.jinja wins over tokenizer_config.json */
    char *qwen3 = fixture_template("qwen3");
    write_file(dir, "chat_template.jinja", qwen3);
    expect_load(dir, NULL, KVZ_OK, "qwen3", NULL);
    write_file(dir, "chat_template.jinja", "{{ messages }} [INST]");
    expect_load(dir, NULL, KVZ_EUNSUPPORTED, NULL, "chat_template.jinja: unsupported template");
    json_decref(cfg);
    cfg = json_pack("{s:[{s:s,s:s}]}", "chat_template", "name", "rag", "template", llama);
    json_dump_file(cfg, cfgpath, 0);
    expect_load(cfgpath, NULL, KVZ_ENOTFOUND, NULL, "without a 'default' entry");
    write_file(dir, "broken.json", "{\"chat_template\": ");
    char *broken = kvz_path_join(dir, "broken.json");
    expect_load(broken, NULL, KVZ_EFORMAT, NULL, "malformed JSON");
    expect_load("/nonexistent/model.gguf", NULL, KVZ_EIO, NULL, "/nonexistent/model.gguf");
    expect_load("/nonexistent", "nope", KVZ_EINVAL, NULL, "known: chatml-smollm2, qwen2");
    json_decref(cfg);
    free(broken);
    free(qwen3);
    free(llama);
    free(cfgpath);
    free(dir);
}

static void check_detection_edges(void)
{
    kvz_chat_family f;
    kvz_error err = {0};
    char *t31 = fixture_template("llama3.1");
    /* Llama-3.2 style: dated with strftime_now -> unsupported, never a guess */
    const char *mark = "{%- if not date_string is defined %}";
    char *at = t31 ? strstr(t31, mark) : NULL;
    KVZ_CHECK(at != NULL, "llama3.1 fixture lacks the date block");
    if (at) {
        size_t n = strlen(t31) + 64;
        char *t32 = malloc(n);
        snprintf(t32, n, "%.*s{%%- if strftime_now is defined %%}%s", (int)(at - t31), t31, at);
        KVZ_CHECK(kvz_chat_template_detect(t32, &f, &err) == KVZ_EUNSUPPORTED, "3.2 detected");
        KVZ_CHECK(strstr(err.msg, "strftime_now") != NULL, "message: %s", err.msg);
        free(t32);
    }
    free(t31);
    KVZ_CHECK(kvz_chat_template_detect("", &f, &err) == KVZ_EUNSUPPORTED, "empty text");
    KVZ_CHECK(kvz_chat_template_detect("{% for m in messages %}<|im_start|>{{ m.content }}"
                                       "{% endfor %}", &f, &err) == KVZ_EUNSUPPORTED,
              "plain ChatML must not be guessed");
    KVZ_CHECK(kvz_chat_family_from_name("llama3.1", &f, &err) == KVZ_OK && f == KVZ_CHAT_LLAMA3_1,
              "from_name");
    KVZ_CHECK(kvz_chat_family_from_name("LLAMA3", &f, &err) == KVZ_EINVAL, "case-sensitive");
}

static void check_render_errors(void)
{
    kvz_chat_template *q = NULL, *l = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_chat_template_from_family(KVZ_CHAT_QWEN3, &q, &err), err);
    KVZ_CHECK_OK(kvz_chat_template_from_family(KVZ_CHAT_LLAMA3, &l, &err), err);
    char *out = NULL;
    kvz_chat_message tool[2] = {{"user", "hi"}, {"tool", "{}"}};
    KVZ_CHECK(kvz_chat_render(q, tool, 2, NULL, &out, &err) == KVZ_EUNSUPPORTED, "tool role");
    KVZ_CHECK(strstr(err.msg, "role 'tool'") != NULL, "message: %s", err.msg);
    KVZ_CHECK(kvz_chat_render(q, tool, 0, NULL, &out, &err) == KVZ_EINVAL, "empty conversation");
    kvz_chat_message bad[1] = {{"user", "caf\xC3"}};
    KVZ_CHECK(kvz_chat_render(l, bad, 1, NULL, &out, &err) == KVZ_EINVAL, "invalid UTF-8");
    KVZ_CHECK(kvz_chat_render_repeat_prompt(l, "\xff", &out, &err) == KVZ_EINVAL, "bad repeat");
    KVZ_CHECK(out == NULL, "out stays NULL on failure");
    kvz_chat_message custom[1] = {{"narrator", " x "}};
    KVZ_CHECK_OK(kvz_chat_render(l, custom, 1, NULL, &out, &err), err);
    KVZ_CHECK(out && !strcmp(out, "<|begin_of_text|><|start_header_id|>narrator<|end_header_id|>"
                                  "\n\nx<|eot_id|>"),
              "llama3 custom role: %s", out);
    free(out);
    kvz_chat_template_free(q);
    kvz_chat_template_free(l);
}

/* Runs command and returns its stdout (malloc'ed). */
static char *capture(const char *command)
{
    FILE *p = popen(command, "r");
    if (!p)
        return NULL;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (len + 1 == cap) {
            char *grown = realloc(buf, cap *= 2);
            if (!grown)
                free(buf);
            buf = grown;
        }
    }
    if (buf)
        buf[len] = '\0';
    pclose(p);
    return buf;
}

/* The CLI prints exactly what the library renders (no newline added). */
static void check_cli_output(void)
{
    const char *kvzap = getenv("KVZAP"), *assets = getenv("KVZ_ASSETS");
    if (!kvzap || !assets)
        return;
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "'%s' template '%s/tokenizers/qwen3' --system S --user U --assistant A --user V "
             "--generation-prompt --no-thinking",
             kvzap, assets);
    char *got = capture(cmd);
    const char *want = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                       "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nV<|im_end|>\n"
                       "<|im_start|>assistant\n<think>\n\n</think>\n\n";
    KVZ_CHECK(got && !strcmp(got, want), "kvzap template qwen3 output: [%s]", got);
    free(got);
    snprintf(cmd, sizeof cmd, "'%s' template --repeat-prompt ' doc \t'", kvzap);
    got = capture(cmd);
    want = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
           "Face<|im_end|>\n<|im_start|>user\ndoc\n\nRepeat the previous context exactly."
           "<|im_end|>\n<|im_start|>assistant\ndoc<|im_end|>\n";
    KVZ_CHECK(got && !strcmp(got, want), "kvzap template repeat output: [%s]", got);
    free(got);
}

int main(void)
{
    check_cli_output();
    check_detection_edges();
    check_render_errors();
    check_hf_dirs();
    check_real_assets();
    return kvz_test_done();
}
