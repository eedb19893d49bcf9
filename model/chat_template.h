/* chat_template: chat-template family detection and exact rendering.
 * Owns: recognising which known chat template a checkpoint ships (from the
 * template TEXT in tokenizer_config.json, chat_template.jinja or the GGUF key
 * tokenizer.chat_template), and rendering a conversation exactly as
 * transformers' tokenizer.apply_chat_template(messages, tokenize=False) does
 * for that template. There is no general Jinja engine: each family has one
 * C renderer, checked byte-for-byte against fixtures that transformers
 * rendered from the real template text (tests/reference/make_template_fixtures.py).
 *
 * Families:
 *   chatml-smollm2  SmolLM2-Instruct ChatML; inserts the default system message
 *                   "You are a helpful AI assistant named SmolLM, trained by
 *                   Hugging Face" when the first message is not a system one.
 *   qwen2           Qwen2.5-Instruct ChatML; default system "You are Qwen,
 *                   created by Alibaba Cloud. You are a helpful assistant."
 *   qwen3           Qwen3 (hybrid thinking): assistant turns after the last
 *                   user query get "<think>\n{reasoning}\n</think>\n\n"; the
 *                   final one always does (an empty think block by default).
 *                   Conversations with tools / tool messages are not supported.
 *   llama3          Meta-Llama-3-Instruct: "<|begin_of_text|>" then per message
 *                   header + content.strip() + "<|eot_id|>".
 *   llama3.1        Llama-3.1/3.3-Instruct: a system block dated
 *                   "Cutting Knowledge Date: December 2023\nToday Date: <date>"
 *                   (date_string default "26 Jul 2024"), no tools.
 *
 * BOS: the llama3 families write "<|begin_of_text|>" into the rendered TEXT
 * (the template's bos_token). A tokenizer that also adds BOS on encode (the
 * HF Llama-3 post-processor does, by default) then yields two BOS tokens,
 * exactly as HF does for tokenizer(apply_chat_template(...)). That is the
 * tokenizer's concern, not this module's: the text here is what HF renders.
 *
 * Python string semantics: "strip" means Python str.strip() (Jinja's trim):
 * Unicode whitespace as Python's str.isspace() defines it (general category
 * Zs, or bidirectional class WS, B or S), see kvz_py_isspace(). All text is
 * UTF-8 and must be valid UTF-8 (rendering rejects invalid input). */
#ifndef KVZ_CHAT_TEMPLATE_H
#define KVZ_CHAT_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"

typedef enum kvz_chat_family {
    KVZ_CHAT_CHATML_SMOLLM2 = 0,
    KVZ_CHAT_QWEN2,
    KVZ_CHAT_QWEN3,
    KVZ_CHAT_LLAMA3,
    KVZ_CHAT_LLAMA3_1,
    KVZ_CHAT_N_FAMILIES
} kvz_chat_family;

/* "chatml-smollm2", "qwen2", "qwen3", "llama3", "llama3.1" (NULL if out of range). */
const char *kvz_chat_family_name(kvz_chat_family f);
/* Exact (case-sensitive) name lookup; unknown: KVZ_EINVAL naming the known ones. */
int kvz_chat_family_from_name(const char *name, kvz_chat_family *out, kvz_error *err);
/* The known names joined by ", " (static string). */
const char *kvz_chat_family_names(void);

/* Recognises the family from template text. Unknown template: KVZ_EUNSUPPORTED
 * (never a guess). Messages start with "chat template:"; callers that know the
 * file prefix their own name. */
int kvz_chat_template_detect(const char *template_text, kvz_chat_family *out, kvz_error *err);

typedef struct kvz_chat_template kvz_chat_template; /* opaque */

/* Loads the template of a checkpoint: model_path is an HF directory
 * (chat_template.jinja if present, else tokenizer_config.json's
 * "chat_template": a string, or a list of {name, template} using "default"),
 * a tokenizer_config.json file, a .jinja file, or a GGUF file (key
 * tokenizer.chat_template). override_or_NULL names a family and skips
 * detection (NULL or "auto" = detect); the path is then not read at all. */
int kvz_chat_template_load(const char *model_path, const char *override_or_NULL,
                           kvz_chat_template **out, kvz_error *err);
/* From template text already in memory; source names it in messages. */
int kvz_chat_template_from_text(const char *template_text, const char *source,
                                kvz_chat_template **out, kvz_error *err);
/* A template that is just the family (no text). */
int kvz_chat_template_from_family(kvz_chat_family f, kvz_chat_template **out, kvz_error *err);
void kvz_chat_template_free(kvz_chat_template *t);

kvz_chat_family kvz_chat_template_family(const kvz_chat_template *t);
/* The template text as read (NULL for an override/family-only template). */
const char *kvz_chat_template_text(const kvz_chat_template *t);
/* Where the text came from (a path, or "override"). */
const char *kvz_chat_template_source(const kvz_chat_template *t);

typedef struct kvz_chat_message {
    const char *role;    /* "system", "user", "assistant" (llama3/chatml: any role) */
    const char *content; /* UTF-8 */
} kvz_chat_message;

/* Zero-initialised options are transformers' defaults. */
typedef struct kvz_chat_options {
    int add_generation_prompt; /* append the assistant header */
    int disable_thinking;      /* Qwen3: enable_thinking=False (affects the generation prompt) */
    const char *date_string;   /* llama3.1: NULL = "26 Jul 2024" */
} kvz_chat_options;

/* Renders msgs[0..n) into *out (malloc'ed, NUL-terminated). n must be >= 1.
 * Roles a family's template silently drops, or renders only with tools
 * (qwen: anything but system/user/assistant; llama3.1: tool/ipython), are
 * rejected with KVZ_EUNSUPPORTED rather than rendered wrongly. */
int kvz_chat_render(const kvz_chat_template *t, const kvz_chat_message *msgs, size_t n,
                    const kvz_chat_options *opt_or_NULL, char **out, kvz_error *err);

/* The KVzip+ oracle prompt of spec 1.1: with s = Python text.strip(),
 * [user: s + "\n\nRepeat the previous context exactly.", assistant: s],
 * rendered without a generation prompt. */
#define KVZ_REPEAT_INSTRUCTION "\n\nRepeat the previous context exactly."
int kvz_chat_render_repeat_prompt(const kvz_chat_template *t, const char *text, char **out,
                                  kvz_error *err);

/* --- Python str whitespace semantics --- */
/* Python's str.isspace() for one code point. */
int kvz_py_isspace(uint32_t cp);
/* The span [*begin, *end) of s[0..len) that Python's str.strip() keeps
 * (byte offsets; s must be valid UTF-8). */
void kvz_py_strip_span(const char *s, size_t len, size_t *begin, size_t *end);
/* Python str.strip() as a new malloc'ed string (NULL on OOM). */
char *kvz_py_strip(const char *s);

#endif
