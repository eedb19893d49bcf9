/* chat_template_render: the per-family renderers of chat_template.h and the
 * Python str.strip()/isspace semantics they rely on. Each renderer mirrors
 * its Jinja template statement by statement (see the template text quoted in
 * the JSON fixtures in tests/fixtures/templates); the fixtures are the ground truth. */
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "chat_template.h"
#include "../common/kvz_utf8.h"

/* ---------- growable output buffer ---------- */

typedef struct strbuf {
    char *data;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* A byte span of a NUL-terminated message string. */
typedef struct span {
    const char *p;
    size_t n;
} span;

static span span_of(const char *s) { return (span){s, strlen(s)}; }
static void sb_span(strbuf *b, span s) { sb_put(b, s.p, s.n); }

/* ---------- Python whitespace ---------- */

int kvz_py_isspace(uint32_t cp)
{
    if (cp > 0x10FFFF)
        return 0;
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
    if (p->category == UTF8PROC_CATEGORY_ZS)
        return 1;
    return p->bidi_class == UTF8PROC_BIDI_CLASS_WS || p->bidi_class == UTF8PROC_BIDI_CLASS_B ||
           p->bidi_class == UTF8PROC_BIDI_CLASS_S;
}

void kvz_py_strip_span(const char *s, size_t len, size_t *begin, size_t *end)
{
    const utf8proc_uint8_t *u = (const utf8proc_uint8_t *)s;
    size_t i = 0, first = len, last_end = 0;
    while (i < len) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(u + i, (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0) { /* invalid UTF-8: treat the byte as non-space */
            k = 1;
            cp = 0xFFFD;
        }
        if (!kvz_py_isspace((uint32_t)cp)) {
            if (first == len)
                first = i;
            last_end = i + (size_t)k;
        }
        i += (size_t)k;
    }
    *begin = first == len ? len : first;
    *end = first == len ? len : last_end;
}

char *kvz_py_strip(const char *s)
{
    size_t b, e;
    kvz_py_strip_span(s, strlen(s), &b, &e);
    char *out = malloc(e - b + 1);
    if (out) {
        memcpy(out, s + b, e - b);
        out[e - b] = '\0';
    }
    return out;
}

static span py_strip(span s)
{
    size_t b, e;
    kvz_py_strip_span(s.p, s.n, &b, &e);
    return (span){s.p + b, e - b};
}

/* Python s.lstrip('\n') / s.rstrip('\n'). */
static span lstrip_nl(span s)
{
    while (s.n && s.p[0] == '\n') {
        s.p++;
        s.n--;
    }
    return s;
}

static span rstrip_nl(span s)
{
    while (s.n && s.p[s.n - 1] == '\n')
        s.n--;
    return s;
}

/* Position of the first / last occurrence of needle in s, or -1. */
static long span_find(span s, const char *needle, int last)
{
    size_t m = strlen(needle);
    long found = -1;
    for (size_t i = 0; m <= s.n && i + m <= s.n; i++)
        if (!memcmp(s.p + i, needle, m)) {
            found = (long)i;
            if (!last)
                break;
        }
    return found;
}

static int span_starts(span s, const char *pre)
{
    size_t m = strlen(pre);
    return s.n >= m && !memcmp(s.p, pre, m);
}

static int span_ends(span s, const char *suf)
{
    size_t m = strlen(suf);
    return s.n >= m && !memcmp(s.p + s.n - m, suf, m);
}

/* ---------- ChatML families ---------- */

#define SMOLLM2_SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
#define QWEN2_SYSTEM "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

static void chatml_turn(strbuf *b, const char *role, span content)
{
    sb_puts(b, "<|im_start|>");
    sb_puts(b, role);
    sb_puts(b, "\n");
    sb_span(b, content);
    sb_puts(b, "<|im_end|>\n");
}

static void render_smollm2(strbuf *b, const kvz_chat_message *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i == 0 && strcmp(m[0].role, "system") != 0)
            chatml_turn(b, "system", span_of(SMOLLM2_SYSTEM));
        chatml_turn(b, m[i].role, span_of(m[i].content));
    }
}

static void render_qwen2(strbuf *b, const kvz_chat_message *m, size_t n)
{
    int has_system = !strcmp(m[0].role, "system");
    chatml_turn(b, "system", span_of(has_system ? m[0].content : QWEN2_SYSTEM));
    for (size_t i = has_system ? 1 : 0; i < n; i++)
        chatml_turn(b, m[i].role, span_of(m[i].content));
}

/* The Qwen3 template's ns.last_query_index: the last user message that is not
 * a wrapped tool response (n-1 when there is none). */
static size_t qwen3_last_query(const kvz_chat_message *m, size_t n)
{
    for (size_t k = n; k-- > 0;) {
        span c = span_of(m[k].content);
        if (!strcmp(m[k].role, "user") &&
            !(span_starts(c, "<tool_response>") && span_ends(c, "</tool_response>")))
            return k;
    }
    return n - 1;
}

static void qwen3_assistant(strbuf *b, span content, int after_query, int is_last)
{
    span reasoning = {"", 0};
    long close_last = span_find(content, "</think>", 1);
    if (close_last >= 0) {
        long close_first = span_find(content, "</think>", 0);
        span head = rstrip_nl((span){content.p, (size_t)close_first});
        long open = span_find(head, "<think>", 1);
        if (open >= 0)
            head = (span){head.p + open + 7, head.n - (size_t)open - 7};
        reasoning = lstrip_nl(head);
        size_t after = (size_t)close_last + 8;
        content = lstrip_nl((span){content.p + after, content.n - after});
    }
    sb_puts(b, "<|im_start|>assistant\n");
    if (after_query && (is_last || reasoning.n)) {
        sb_puts(b, "<think>\n");
        sb_span(b, lstrip_nl(rstrip_nl(reasoning)));
        sb_puts(b, "\n</think>\n\n");
        content = lstrip_nl(content);
    }
    sb_span(b, content);
    sb_puts(b, "<|im_end|>\n");
}

static void render_qwen3(strbuf *b, const kvz_chat_message *m, size_t n)
{
    if (!strcmp(m[0].role, "system"))
        chatml_turn(b, "system", span_of(m[0].content));
    size_t last_query = qwen3_last_query(m, n);
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(m[i].role, "user") || (!strcmp(m[i].role, "system") && i > 0))
            chatml_turn(b, m[i].role, span_of(m[i].content));
        else if (!strcmp(m[i].role, "assistant"))
            qwen3_assistant(b, span_of(m[i].content), i > last_query, i == n - 1);
    }
}

/* ---------- Llama-3 families ---------- */

#define LLAMA3_BOS "<|begin_of_text|>"

static void llama3_turn(strbuf *b, const char *role, span content)
{
    sb_puts(b, "<|start_header_id|>");
    sb_puts(b, role);
    sb_puts(b, "<|end_header_id|>\n\n");
    sb_span(b, content);
    sb_puts(b, "<|eot_id|>");
}

static void render_llama3(strbuf *b, const kvz_chat_message *m, size_t n)
{
    sb_puts(b, LLAMA3_BOS);
    for (size_t i = 0; i < n; i++)
        llama3_turn(b, m[i].role, py_strip(span_of(m[i].content)));
}

static void render_llama3_1(strbuf *b, const kvz_chat_message *m, size_t n, const char *date)
{
    int has_system = !strcmp(m[0].role, "system");
    sb_puts(b, LLAMA3_BOS "<|start_header_id|>system<|end_header_id|>\n\n"
               "Cutting Knowledge Date: December 2023\nToday Date: ");
    sb_puts(b, date ? date : "26 Jul 2024");
    sb_puts(b, "\n\n");
    if (has_system)
        sb_span(b, py_strip(span_of(m[0].content)));
    sb_puts(b, "<|eot_id|>");
    for (size_t i = has_system ? 1 : 0; i < n; i++)
        llama3_turn(b, m[i].role, py_strip(span_of(m[i].content)));
}

/* ---------- checks and dispatch ---------- */

static int valid_utf8(const char *s)
{
    return kvz_utf8_validate(s, strlen(s), NULL, NULL) == KVZ_OK;
}

static int role_is(const char *role, const char *a, const char *b, const char *c)
{
    return !strcmp(role, a) || !strcmp(role, b) || !strcmp(role, c);
}

/* Roles the family's template renders faithfully without tools. */
static int role_supported(kvz_chat_family f, const char *role)
{
    switch (f) {
    case KVZ_CHAT_QWEN2:
    case KVZ_CHAT_QWEN3:
        return role_is(role, "system", "user", "assistant");
    case KVZ_CHAT_LLAMA3_1:
        return strcmp(role, "tool") != 0 && strcmp(role, "ipython") != 0;
    default:
        return 1;
    }
}

static int check_messages(kvz_chat_family f, const kvz_chat_message *m, size_t n, kvz_error *err)
{
    const char *name = kvz_chat_family_name(f);
    if (n == 0)
        return kvz_fail(err, KVZ_EINVAL, "chat template %s: a conversation needs at least one message",
                        name);
    for (size_t i = 0; i < n; i++) {
        if (!m[i].role || !m[i].content)
            return kvz_fail(err, KVZ_EINVAL, "chat template %s: message %zu has no %s", name, i,
                            m[i].role ? "content" : "role");
        if (!role_supported(f, m[i].role))
            return kvz_fail(err, KVZ_EUNSUPPORTED,
                            "chat template %s: message %zu has role '%s', which this renderer does "
                            "not support (tool conversations are not implemented)",
                            name, i, m[i].role);
        if (!valid_utf8(m[i].content) || !valid_utf8(m[i].role))
            return kvz_fail(err, KVZ_EINVAL, "chat template %s: message %zu is not valid UTF-8",
                            name, i);
    }
    return KVZ_OK;
}

static void render_generation_prompt(strbuf *b, kvz_chat_family f, const kvz_chat_options *o)
{
    if (f == KVZ_CHAT_LLAMA3 || f == KVZ_CHAT_LLAMA3_1) {
        sb_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        return;
    }
    sb_puts(b, "<|im_start|>assistant\n");
    if (f == KVZ_CHAT_QWEN3 && o->disable_thinking)
        sb_puts(b, "<think>\n\n</think>\n\n");
}

int kvz_chat_render(const kvz_chat_template *t, const kvz_chat_message *msgs, size_t n,
                    const kvz_chat_options *opt_or_NULL, char **out, kvz_error *err)
{
    static const kvz_chat_options defaults = {0, 0, NULL};
    const kvz_chat_options *o = opt_or_NULL ? opt_or_NULL : &defaults;
    *out = NULL;
    if (!t)
        return kvz_fail(err, KVZ_EINVAL, "chat template: no template given");
    kvz_chat_family f = kvz_chat_template_family(t);
    int rc = check_messages(f, msgs, n, err);
    if (rc)
        return rc;
    strbuf b = {0};
    sb_puts(&b, "");
    switch (f) {
    case KVZ_CHAT_CHATML_SMOLLM2: render_smollm2(&b, msgs, n); break;
    case KVZ_CHAT_QWEN2: render_qwen2(&b, msgs, n); break;
    case KVZ_CHAT_QWEN3: render_qwen3(&b, msgs, n); break;
    case KVZ_CHAT_LLAMA3: render_llama3(&b, msgs, n); break;
    case KVZ_CHAT_LLAMA3_1: render_llama3_1(&b, msgs, n, o->date_string); break;
    default: break;
    }
    if (o->add_generation_prompt)
        render_generation_prompt(&b, f, o);
    if (b.oom) {
        free(b.data);
        return kvz_fail(err, KVZ_ENOMEM, "chat template: out of memory rendering %zu messages", n);
    }
    *out = b.data;
    return KVZ_OK;
}

int kvz_chat_render_repeat_prompt(const kvz_chat_template *t, const char *text, char **out,
                                  kvz_error *err)
{
    *out = NULL;
    if (!text || !valid_utf8(text))
        return kvz_fail(err, KVZ_EINVAL, "repeat prompt: the document text is not valid UTF-8");
    char *stripped = kvz_py_strip(text);
    size_t n = stripped ? strlen(stripped) : 0;
    char *user = stripped ? malloc(n + sizeof KVZ_REPEAT_INSTRUCTION) : NULL;
    if (!user) {
        free(stripped);
        return kvz_fail(err, KVZ_ENOMEM, "repeat prompt: out of memory");
    }
    memcpy(user, stripped, n);
    memcpy(user + n, KVZ_REPEAT_INSTRUCTION, sizeof KVZ_REPEAT_INSTRUCTION);
    kvz_chat_message msgs[2] = {{"user", user}, {"assistant", stripped}};
    int rc = kvz_chat_render(t, msgs, 2, NULL, out, err);
    free(user);
    free(stripped);
    return rc;
}
