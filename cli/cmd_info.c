/* cmd_info: `kvzap info [MODEL] [--json] [--tensors]`: what a checkpoint is
 * (architecture config, tensor types and counts, parameters, files) and which
 * tokenizer and chat template it ships. MODEL: a GGUF file, an HF directory,
 * or a directory with one .gguf; default: the cached default model. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "model/chat_template.h"
#include "model/tokenizer.h"
#include "model/checkpoint.h"
#include "model/kvz_json.h"

static const char USAGE[] =
    "usage: kvzap info [MODEL] [--json] [--tensors]\n"
    "  MODEL      GGUF file, HF checkpoint directory (config.json + safetensors),\n"
    "             or a directory holding one .gguf (default: the cached default model)\n"
    "  --json     print one JSON object instead of text\n"
    "  --tensors  also list every tensor (canonical HF name, shape, type)\n";

typedef struct info_opts {
    const char *model;
    int json, tensors;
} info_opts;

/* ---------- facts shared by text and JSON output ---------- */

typedef struct info_extra {
    char tokenizer[KVZ_ERRMSG_MAX + 512];
    char chat_template[KVZ_ERRMSG_MAX + 512];
} info_extra;

/* describe_*: a checkpoint without a tokenizer / template is described as
 * "(none: why)"; running out of memory is an error of the command instead
 * (returns KVZ_ENOMEM with err filled), not a fact about the checkpoint. */
static int describe_chat_template(const kvz_checkpoint *ck, char *out, size_t cap, kvz_error *fatal)
{
    const char *src = kvz_checkpoint_gguf(ck) ? kvz_checkpoint_file(ck, 0) : kvz_checkpoint_dir(ck);
    kvz_chat_template *t = NULL;
    kvz_error err = {0};
    int rc = kvz_chat_template_load(src, NULL, &t, &err);
    if (rc == KVZ_ENOMEM) {
        *fatal = err;
        return rc;
    }
    if (rc != KVZ_OK) {
        snprintf(out, cap, "(none: %s)", err.msg);
        return KVZ_OK;
    }
    snprintf(out, cap, "%s (from %s)", kvz_chat_family_name(kvz_chat_template_family(t)),
             kvz_chat_template_source(t));
    kvz_chat_template_free(t);
    return KVZ_OK;
}

static int describe_tokenizer(const kvz_checkpoint *ck, char *out, size_t cap, kvz_error *fatal)
{
    kvz_tokenizer *t = NULL;
    kvz_error err = {0};
    const kvz_gguf *g = kvz_checkpoint_gguf(ck);
    int rc = g ? kvz_tokenizer_from_gguf(g, &t, &err)
               : kvz_tokenizer_load(kvz_checkpoint_dir(ck), &t, &err);
    if (rc == KVZ_ENOMEM) {
        *fatal = err;
        return rc;
    }
    if (rc != KVZ_OK) {
        snprintf(out, cap, "(none: %s)", err.msg);
        return KVZ_OK;
    }
    snprintf(out, cap, "%s", kvz_tokenizer_describe(t));
    kvz_tokenizer_free(t);
    return KVZ_OK;
}

static void format_shape(const kvz_tensor_desc *d, char *buf, size_t cap)
{
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (uint32_t i = 0; i < d->n_dims && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%" PRIu64, i ? ", " : "", d->shape[i]);
    if (k < cap)
        snprintf(buf + k, cap - k, "]");
}

static void format_rope_scaling(const kvz_model_config *c, char *buf, size_t cap)
{
    const kvz_rope_scaling *s = &c->rope_scaling;
    if (s->type == KVZ_ROPE_SCALING_LLAMA3)
        snprintf(buf, cap,
                 "llama3 (factor %g, low_freq_factor %g, high_freq_factor %g, original context %zu)",
                 s->factor, s->low_freq_factor, s->high_freq_factor,
                 s->original_max_position_embeddings);
    else
        snprintf(buf, cap, "none");
}

static void format_types(const kvz_checkpoint_summary *s, char *buf, size_t cap)
{
    size_t k = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < s->n_types && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%s x %zu", i ? ", " : "",
                              s->types[i].type_name, s->types[i].n_tensors);
}

/* ---------- text ---------- */

#define LINE(key, ...)                      \
    do {                                    \
        printf("%-17s ", key ":");          \
        printf(__VA_ARGS__);                \
        printf("\n");                       \
    } while (0)

static void print_text_config(const kvz_model_config *c)
{
    char buf[256];
    if (strcmp(kvz_arch_name(c->arch), c->architecture))
        LINE("architecture", "%s (%s)", kvz_arch_name(c->arch), c->architecture);
    else
        LINE("architecture", "%s", c->architecture);
    LINE("layers", "%zu", c->n_layers);
    LINE("hidden size", "%zu", c->d_model);
    LINE("heads", "%zu", c->n_heads);
    LINE("KV heads", "%zu", c->n_kv_heads);
    LINE("head dim", "%zu", c->head_dim);
    LINE("FFN size", "%zu", c->d_ff);
    LINE("vocab", "%zu", c->vocab_size);
    LINE("context length", "%zu", c->max_position_embeddings);
    LINE("rope theta", "%g", c->rope_theta);
    format_rope_scaling(c, buf, sizeof buf);
    LINE("rope scaling", "%s", buf);
    LINE("rms norm eps", "%g", c->rms_norm_eps);
    LINE("tied embeddings", "%s", c->tie_word_embeddings ? "yes" : "no");
    LINE("biases", "qkv %s, o %s, mlp %s", c->qkv_bias ? "yes" : "no", c->o_bias ? "yes" : "no",
         c->mlp_bias ? "yes" : "no");
    LINE("qk norm", "%s", c->qk_norm ? "yes" : "no");
    if (c->sliding_window)
        LINE("sliding window", "%zu", c->sliding_window);
    else
        LINE("sliding window", "none");
    if (c->dtype[0])
        LINE("config dtype", "%s", c->dtype);
    char ids[160];
    size_t k = (size_t)snprintf(ids, sizeof ids, "bos %ld, eos", c->bos_token_id);
    for (size_t i = 0; i < c->n_eos && k < sizeof ids; i++)
        k += (size_t)snprintf(ids + k, sizeof ids - k, "%s %ld", i ? "," : "", c->eos_token_ids[i]);
    if (!c->n_eos && k < sizeof ids)
        snprintf(ids + k, sizeof ids - k, " -1");
    LINE("special ids", "%s", ids);
}

static void print_text(const kvz_checkpoint *ck, const info_extra *x, int tensors)
{
    kvz_checkpoint_summary s;
    kvz_checkpoint_describe(ck, &s);
    char buf[512];
    LINE("model", "%s", kvz_checkpoint_path(ck));
    LINE("format", "%s", s.format == KVZ_CKPT_GGUF ? "GGUF" : "safetensors");
    print_text_config(kvz_checkpoint_config(ck));
    format_types(&s, buf, sizeof buf);
    LINE("tensor types", "%s", buf);
    LINE("tensors", "%zu", s.n_tensors);
    LINE("parameters", "%" PRIu64 " (%.1fM)", s.n_params, (double)s.n_params / 1e6);
    LINE("file size", "%" PRIu64 " bytes in %zu file(s)", s.file_bytes, s.n_files);
    for (size_t i = 0; i < s.n_files; i++)
        LINE("file", "%s", kvz_checkpoint_file(ck, i));
    LINE("tokenizer", "%s", x->tokenizer);
    LINE("chat template", "%s", x->chat_template);
    if (!tensors)
        return;
    printf("\n");
    for (size_t i = 0; i < kvz_checkpoint_n_tensors(ck); i++) {
        kvz_tensor_desc d;
        kvz_checkpoint_tensor_at(ck, i, &d);
        format_shape(&d, buf, sizeof buf);
        printf("%-52s %-16s %-6s %s\n", d.name, buf, d.type_name, d.stored_name);
    }
}

/* ---------- JSON ---------- */

static json_t *json_config(const kvz_model_config *c)
{
    char *text = kvz_model_config_to_json(c);
    if (!text)
        errno = ENOMEM; /* print_json checks it */
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    return j ? j : json_null();
}

static json_t *json_tensors(const kvz_checkpoint *ck)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < kvz_checkpoint_n_tensors(ck); i++) {
        kvz_tensor_desc d;
        kvz_checkpoint_tensor_at(ck, i, &d);
        json_t *shape = json_array();
        for (uint32_t k = 0; k < d.n_dims; k++)
            json_array_append_new(shape, json_integer((json_int_t)d.shape[k]));
        json_array_append_new(arr, json_pack("{s:s, s:s, s:o, s:s}", "name", d.name, "stored_name",
                                             d.stored_name, "shape", shape, "type", d.type_name));
    }
    return arr;
}

static json_t *json_summary(const kvz_checkpoint *ck)
{
    kvz_checkpoint_summary s;
    kvz_checkpoint_describe(ck, &s);
    json_t *types = json_object(), *files = json_array();
    for (size_t i = 0; i < s.n_types; i++)
        json_object_set_new(types, s.types[i].type_name, json_integer((json_int_t)s.types[i].n_tensors));
    for (size_t i = 0; i < s.n_files; i++)
        json_array_append_new(files, json_string(kvz_checkpoint_file(ck, i)));
    return json_pack("{s:s, s:o, s:I, s:I, s:I, s:o}", "format",
                     s.format == KVZ_CKPT_GGUF ? "gguf" : "safetensors", "tensor_types", types,
                     "tensors", (json_int_t)s.n_tensors, "parameters", (json_int_t)s.n_params,
                     "file_bytes", (json_int_t)s.file_bytes, "files", files);
}

static int print_json(const kvz_checkpoint *ck, const info_extra *x, int tensors)
{
    /* jansson's setters return no error to check here (a failed allocation
     * drops the key): any failed allocation (kvz_json.h, or kvzap's own:
     * errno ENOMEM) and nothing is printed */
    errno = 0;
    kvz_json_begin();
    json_t *root = json_summary(ck);
    if (!root)
        return cli_error("info", "out of memory");
    json_object_set_new(root, "model", json_string(kvz_checkpoint_path(ck)));
    json_object_set_new(root, "config", json_config(kvz_checkpoint_config(ck)));
    json_object_set_new(root, "tokenizer", json_string(x->tokenizer));
    json_object_set_new(root, "chat_template", json_string(x->chat_template));
    if (tensors)
        json_object_set_new(root, "tensor_list", json_tensors(ck));
    if (errno == ENOMEM || kvz_json_failed()) {
        json_decref(root);
        return cli_error("info", "out of memory");
    }
    int rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(9));
    printf("\n");
    json_decref(root);
    if (rc && kvz_json_failed())
        return cli_error("info", "out of memory writing JSON");
    return rc ? cli_error("info", "cannot write JSON") : 0;
}

/* ---------- entry ---------- */

static int parse_args(int argc, char **argv, info_opts *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            o->json = 1;
        else if (!strcmp(argv[i], "--tensors"))
            o->tensors = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            return cli_usage_error("info", "unknown option", USAGE);
        else if (o->model)
            return cli_usage_error("info", "more than one MODEL given", USAGE);
        else
            o->model = argv[i];
    }
    if (!o->model)
        o->model = cli_default_model();
    return 0;
}

int cmd_info(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(USAGE, stdout);
        return 0;
    }
    info_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    kvz_checkpoint *ck = NULL;
    kvz_error err = {0};
    if (kvz_checkpoint_open(o.model, &ck, &err) != KVZ_OK)
        return cli_error("info", err.msg);
    info_extra x;
    if (describe_tokenizer(ck, x.tokenizer, sizeof x.tokenizer, &err) ||
        describe_chat_template(ck, x.chat_template, sizeof x.chat_template, &err)) {
        kvz_checkpoint_close(ck);
        return cli_error("info", err.msg);
    }
    rc = o.json ? print_json(ck, &x, o.tensors) : (print_text(ck, &x, o.tensors), 0);
    kvz_checkpoint_close(ck);
    return rc;
}
