/* checkpoint: one handle over HF safetensors directories and GGUF files;
 * canonical HF tensor names, PyTorch shapes, fp32 reads with llama.cpp's q/k
 * permutation undone, and the required-tensor check (see checkpoint.h). */
#include "checkpoint.h"

#include <openssl/evp.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/kvz_file.h"
#include "dequant.h"

typedef struct ck_entry {
    char *name;                     /* canonical */
    const char *stored;             /* name in the file */
    const kvz_st_tensor *st;        /* safetensors source, or */
    const kvz_gguf_tensor_info *gt; /* GGUF source */
    uint32_t n_dims;
    uint64_t shape[4];
    uint64_t numel;
    size_t permute_heads;           /* > 0: undo llama.cpp's q/k row permutation */
} ck_entry;

struct kvz_checkpoint {
    kvz_checkpoint_format format;
    char *path, *dir, *config_source;
    kvz_model_config cfg;
    kvz_safetensors *st;
    kvz_gguf *gguf;
    size_t n_entries;
    ck_entry *entries; /* sorted by canonical name */
};

/* ---------- small helpers ---------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

static void format_dims(const uint64_t *shape, uint32_t n, char *buf, size_t cap)
{
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (uint32_t d = 0; d < n && k < cap; d++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%llu", d ? ", " : "",
                              (unsigned long long)shape[d]);
    if (k < cap)
        snprintf(buf + k, cap - k, "]");
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const ck_entry *)a)->name, ((const ck_entry *)b)->name);
}

static const ck_entry *find_entry(const kvz_checkpoint *ck, const char *name)
{
    ck_entry key = {.name = (char *)name};
    return bsearch(&key, ck->entries, ck->n_entries, sizeof key, cmp_entry);
}

static const char *entry_file(const kvz_checkpoint *ck, const ck_entry *e)
{
    if (e->st)
        return kvz_safetensors_file_path(ck->st, e->st->file_index);
    return kvz_gguf_path(ck->gguf);
}

static const char *entry_type(const ck_entry *e)
{
    if (e->st)
        return kvz_st_dtype_name(e->st->dtype);
    const char *n = kvz_ggml_type_name(e->gt->type);
    return n ? n : "?";
}

/* ---------- GGUF names -> canonical HF names ---------- */

static const struct {
    const char *ggml, *hf;
} BLOCK_NAMES[] = {
    {"attn_q", "self_attn.q_proj"},        {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},        {"attn_output", "self_attn.o_proj"},
    {"attn_q_norm", "self_attn.q_norm"},   {"attn_k_norm", "self_attn.k_norm"},
    {"attn_norm", "input_layernorm"},      {"ffn_norm", "post_attention_layernorm"},
    {"ffn_gate", "mlp.gate_proj"},         {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
};

/* "blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight"; other
 * names map per the fixed table or stay as they are. malloc'ed. */
static char *canonical_from_ggml(const char *g)
{
    char buf[256];
    unsigned layer;
    int used = 0;
    if (!strcmp(g, "token_embd.weight"))
        return strdup("model.embed_tokens.weight");
    if (!strcmp(g, "output_norm.weight"))
        return strdup("model.norm.weight");
    if (!strcmp(g, "output.weight"))
        return strdup("lm_head.weight");
    if (sscanf(g, "blk.%u.%n", &layer, &used) == 1 && used > 0) {
        const char *rest = g + used, *dot = strrchr(rest, '.');
        for (size_t i = 0; dot && i < sizeof BLOCK_NAMES / sizeof BLOCK_NAMES[0]; i++)
            if (strlen(BLOCK_NAMES[i].ggml) == (size_t)(dot - rest) &&
                !strncmp(rest, BLOCK_NAMES[i].ggml, (size_t)(dot - rest))) {
                snprintf(buf, sizeof buf, "model.layers.%u.%s%s", layer, BLOCK_NAMES[i].hf, dot);
                return strdup(buf);
            }
    }
    return strdup(g);
}

/* llama.cpp permutes q/k rows (weights and biases) of llama GGUFs. */
static size_t permute_heads_for(const kvz_model_config *cfg, int is_llama_gguf, const char *name)
{
    if (!is_llama_gguf)
        return 0;
    if (strstr(name, ".self_attn.q_proj."))
        return cfg->n_heads;
    if (strstr(name, ".self_attn.k_proj."))
        return cfg->n_kv_heads;
    return 0;
}

/* ---------- entry tables ---------- */

static int alloc_entries(kvz_checkpoint *ck, size_t n, kvz_error *err)
{
    ck->entries = calloc(n ? n : 1, sizeof *ck->entries);
    return ck->entries ? KVZ_OK : kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", ck->path);
}

static int entries_from_safetensors(kvz_checkpoint *ck, kvz_error *err)
{
    size_t n = kvz_safetensors_n_tensors(ck->st);
    int rc = alloc_entries(ck, n, err);
    for (size_t i = 0; !rc && i < n; i++) {
        const kvz_st_tensor *t = kvz_safetensors_tensor(ck->st, i);
        if (t->n_dims > 4)
            continue; /* never a transformer weight; not exposed */
        ck_entry *e = &ck->entries[ck->n_entries];
        e->name = strdup(t->name);
        if (!e->name)
            return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", ck->path);
        ck->n_entries++;
        e->stored = t->name;
        e->st = t;
        e->n_dims = t->n_dims;
        memcpy(e->shape, t->shape, t->n_dims * sizeof t->shape[0]);
        e->numel = t->numel;
    }
    return rc;
}

static int entries_from_gguf(kvz_checkpoint *ck, kvz_error *err)
{
    size_t n = kvz_gguf_n_tensors(ck->gguf);
    int rc = alloc_entries(ck, n, err);
    int is_llama = ck->cfg.arch == KVZ_ARCH_LLAMA;
    for (size_t i = 0; !rc && i < n; i++) {
        const kvz_gguf_tensor_info *t = kvz_gguf_tensor(ck->gguf, i);
        ck_entry *e = &ck->entries[ck->n_entries];
        e->name = canonical_from_ggml(t->name);
        if (!e->name)
            return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", ck->path);
        ck->n_entries++;
        e->stored = t->name;
        e->gt = t;
        e->n_dims = t->n_dims;
        for (uint32_t d = 0; d < t->n_dims; d++)
            e->shape[d] = t->ne[t->n_dims - 1 - d];
        e->numel = t->numel;
        e->permute_heads = permute_heads_for(&ck->cfg, is_llama, e->name);
    }
    if (rc)
        return rc;
    qsort(ck->entries, ck->n_entries, sizeof *ck->entries, cmp_entry);
    for (size_t i = 1; i < ck->n_entries; i++)
        if (!strcmp(ck->entries[i - 1].name, ck->entries[i].name))
            return kvz_fail(err, KVZ_EFORMAT, "%s: tensors '%s' and '%s' both map to '%s'",
                            ck->path, ck->entries[i - 1].stored, ck->entries[i].stored,
                            ck->entries[i].name);
    return KVZ_OK;
}

/* ---------- what the config implies ---------- */

typedef struct expect {
    char name[128];
    uint32_t n_dims;
    uint64_t shape[2];
} expect;

static int check_one(const kvz_checkpoint *ck, const expect *x, kvz_error *err)
{
    const ck_entry *e = find_entry(ck, x->name);
    const char *src = ck->format == KVZ_CKPT_GGUF ? "the GGUF metadata" : "config.json";
    if (!e)
        return kvz_fail(err, KVZ_EFORMAT, "%s: missing tensor '%s' (required by %s: %s, %zu layers)",
                        ck->path, x->name, src, kvz_arch_name(ck->cfg.arch), ck->cfg.n_layers);
    if (e->n_dims != x->n_dims || memcmp(e->shape, x->shape, x->n_dims * sizeof x->shape[0])) {
        char got[96], want[96];
        format_dims(e->shape, e->n_dims, got, sizeof got);
        format_dims(x->shape, x->n_dims, want, sizeof want);
        char stored[160] = "";
        if (strcmp(e->stored, x->name))
            snprintf(stored, sizeof stored, " (%s)", e->stored);
        return kvz_fail(err, KVZ_EFORMAT, "%s: tensor %s%s has shape %s but %s implies %s",
                        entry_file(ck, e), x->name, stored, got, src, want);
    }
    if (e->st && !kvz_st_dtype_is_float_weight(e->st->dtype))
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "%s: tensor '%s' has dtype %s, which cannot be read as weights (supported: F32, F16, BF16)",
                        entry_file(ck, e), x->name, entry_type(e));
    if (e->gt && !kvz_ggml_type_supported(e->gt->type))
        return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: tensor '%s' (%s) has unsupported type %s",
                        entry_file(ck, e), e->stored, x->name, entry_type(e));
    return KVZ_OK;
}

static int expect_tensor(const kvz_checkpoint *ck, const char *name, uint64_t d0, uint64_t d1,
                         kvz_error *err)
{
    expect x = {.n_dims = d1 ? 2 : 1, .shape = {d0, d1}};
    snprintf(x.name, sizeof x.name, "%s", name);
    return check_one(ck, &x, err);
}

static int check_layer(const kvz_checkpoint *ck, size_t l, kvz_error *err)
{
    const kvz_model_config *c = &ck->cfg;
    uint64_t q = (uint64_t)c->n_heads * c->head_dim, kv = (uint64_t)c->n_kv_heads * c->head_dim;
    uint64_t D = c->d_model, F = c->d_ff;
    const struct {
        const char *suffix;
        uint64_t d0, d1;
        int present;
    } T[] = {
        {"self_attn.q_proj.weight", q, D, 1},      {"self_attn.k_proj.weight", kv, D, 1},
        {"self_attn.v_proj.weight", kv, D, 1},     {"self_attn.o_proj.weight", D, q, 1},
        {"self_attn.q_proj.bias", q, 0, c->qkv_bias}, {"self_attn.k_proj.bias", kv, 0, c->qkv_bias},
        {"self_attn.v_proj.bias", kv, 0, c->qkv_bias}, {"self_attn.o_proj.bias", D, 0, c->o_bias},
        {"self_attn.q_norm.weight", c->head_dim, 0, c->qk_norm},
        {"self_attn.k_norm.weight", c->head_dim, 0, c->qk_norm},
        {"input_layernorm.weight", D, 0, 1},       {"post_attention_layernorm.weight", D, 0, 1},
        {"mlp.gate_proj.weight", F, D, 1},         {"mlp.up_proj.weight", F, D, 1},
        {"mlp.down_proj.weight", D, F, 1},         {"mlp.gate_proj.bias", F, 0, c->mlp_bias},
        {"mlp.up_proj.bias", F, 0, c->mlp_bias},   {"mlp.down_proj.bias", D, 0, c->mlp_bias},
    };
    char name[128];
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        if (!T[i].present)
            continue;
        snprintf(name, sizeof name, "model.layers.%zu.%s", l, T[i].suffix);
        int rc = expect_tensor(ck, name, T[i].d0, T[i].d1, err);
        if (rc)
            return rc;
    }
    return KVZ_OK;
}

static int check_required(const kvz_checkpoint *ck, kvz_error *err)
{
    const kvz_model_config *c = &ck->cfg;
    int rc = expect_tensor(ck, "model.embed_tokens.weight", c->vocab_size, c->d_model, err);
    for (size_t l = 0; !rc && l < c->n_layers; l++)
        rc = check_layer(ck, l, err);
    if (!rc)
        rc = expect_tensor(ck, "model.norm.weight", c->d_model, 0, err);
    if (!rc && (!c->tie_word_embeddings || find_entry(ck, "lm_head.weight")))
        rc = expect_tensor(ck, "lm_head.weight", c->vocab_size, c->d_model, err);
    return rc;
}

/* ---------- opening ---------- */

static int open_hf(kvz_checkpoint *ck, const char *weights, kvz_error *err)
{
    ck->format = KVZ_CKPT_SAFETENSORS;
    ck->config_source = kvz_path_join(ck->dir, "config.json");
    if (!ck->config_source)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", ck->path);
    if (!kvz_path_exists(ck->config_source))
        return kvz_fail(err, KVZ_ENOTFOUND,
                        "%s: no config.json: an HF checkpoint directory needs config.json beside its safetensors weights",
                        ck->dir);
    int rc = kvz_model_config_load_json(ck->config_source, &ck->cfg, err);
    if (!rc)
        rc = kvz_safetensors_open(weights, &ck->st, err);
    if (!rc)
        rc = entries_from_safetensors(ck, err);
    return rc ? rc : check_required(ck, err);
}

static int open_gguf_file(kvz_checkpoint *ck, const char *file, kvz_error *err)
{
    ck->format = KVZ_CKPT_GGUF;
    ck->config_source = strdup(file);
    if (!ck->config_source)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", file);
    int rc = kvz_gguf_open(file, &ck->gguf, err);
    if (!rc)
        rc = kvz_model_config_from_gguf(ck->gguf, &ck->cfg, err);
    if (!rc)
        rc = entries_from_gguf(ck, err);
    return rc ? rc : check_required(ck, err);
}

/* The single .gguf in dir (malloc'ed path), or an error. */
static int find_single_gguf(const char *dir, char **out, kvz_error *err)
{
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d)
        return kvz_fail(err, KVZ_EIO, "%s: cannot list the directory", dir);
    size_t count = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (ends_with(de->d_name, ".gguf") && count++ == 0)
            *out = kvz_path_join(dir, de->d_name);
    closedir(d);
    if (count == 1 && *out)
        return KVZ_OK;
    free(*out);
    *out = NULL;
    if (count == 0)
        return kvz_fail(err, KVZ_ENOTFOUND,
                        "%s: no weights: no config.json, model.safetensors or .gguf file", dir);
    return kvz_fail(err, KVZ_EINVAL, "%s: %zu .gguf files: name the one to use", dir, count);
}

static int open_dir(kvz_checkpoint *ck, kvz_error *err)
{
    static const char *const HF_FILES[] = {"config.json", "model.safetensors",
                                           "model.safetensors.index.json"};
    for (size_t i = 0; i < 3; i++) {
        char *p = kvz_path_join(ck->path, HF_FILES[i]);
        int exists = p && kvz_path_exists(p);
        free(p);
        if (exists)
            return open_hf(ck, ck->path, err);
    }
    char *gguf = NULL;
    int rc = find_single_gguf(ck->path, &gguf, err);
    if (!rc)
        rc = open_gguf_file(ck, gguf, err);
    free(gguf);
    return rc;
}

static int open_path(kvz_checkpoint *ck, kvz_error *err)
{
    if (!kvz_path_exists(ck->path))
        return kvz_fail(err, KVZ_EIO, "%s: no such file or directory", ck->path);
    int is_dir = kvz_path_is_dir(ck->path);
    ck->dir = is_dir ? strdup(ck->path) : dir_of(ck->path);
    if (!ck->dir)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", ck->path);
    if (is_dir)
        return open_dir(ck, err);
    if (ends_with(ck->path, "config.json"))
        return open_hf(ck, ck->dir, err);
    if (ends_with(ck->path, ".safetensors") || ends_with(ck->path, ".json"))
        return open_hf(ck, ck->path, err);
    return open_gguf_file(ck, ck->path, err);
}

int kvz_checkpoint_open(const char *path, kvz_checkpoint **out, kvz_error *err)
{
    *out = NULL;
    kvz_checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    int located = kvz_model_locate(path, &ck->path, err); /* a file, a directory, an HF id */
    if (located != KVZ_OK) {
        free(ck);
        return located;
    }
    int rc = open_path(ck, err);
    if (rc) {
        kvz_checkpoint_close(ck);
        return rc;
    }
    *out = ck;
    return KVZ_OK;
}

void kvz_checkpoint_close(kvz_checkpoint *ck)
{
    if (!ck)
        return;
    for (size_t i = 0; i < ck->n_entries; i++)
        free(ck->entries[i].name);
    free(ck->entries);
    kvz_safetensors_close(ck->st);
    if (ck->gguf)
        kvz_gguf_close(ck->gguf);
    free(ck->path);
    free(ck->dir);
    free(ck->config_source);
    free(ck);
}

/* ---------- accessors ---------- */

const kvz_model_config *kvz_checkpoint_config(const kvz_checkpoint *ck) { return &ck->cfg; }
kvz_checkpoint_format kvz_checkpoint_format_of(const kvz_checkpoint *ck) { return ck->format; }
const char *kvz_checkpoint_path(const kvz_checkpoint *ck) { return ck->path; }
const char *kvz_checkpoint_dir(const kvz_checkpoint *ck) { return ck->dir; }
const kvz_gguf *kvz_checkpoint_gguf(const kvz_checkpoint *ck) { return ck->gguf; }
const char *kvz_checkpoint_config_source(const kvz_checkpoint *ck) { return ck->config_source; }
size_t kvz_checkpoint_n_tensors(const kvz_checkpoint *ck) { return ck->n_entries; }

static void fill_desc(const kvz_checkpoint *ck, const ck_entry *e, kvz_tensor_desc *out)
{
    memset(out, 0, sizeof *out);
    out->name = e->name;
    out->stored_name = e->stored;
    out->n_dims = e->n_dims;
    memcpy(out->shape, e->shape, sizeof out->shape);
    out->numel = e->numel;
    out->type_name = entry_type(e);
    out->file = entry_file(ck, e);
}

int kvz_checkpoint_tensor_at(const kvz_checkpoint *ck, size_t i, kvz_tensor_desc *out)
{
    if (i >= ck->n_entries)
        return KVZ_ENOTFOUND;
    fill_desc(ck, &ck->entries[i], out);
    return KVZ_OK;
}

int kvz_checkpoint_find(const kvz_checkpoint *ck, const char *name, kvz_tensor_desc *out,
                        kvz_error *err)
{
    const ck_entry *e = find_entry(ck, name);
    if (!e)
        return kvz_fail(err, KVZ_ENOTFOUND, "%s: no tensor '%s'", ck->path, name);
    if (out)
        fill_desc(ck, e, out);
    return KVZ_OK;
}

int kvz_checkpoint_has(const kvz_checkpoint *ck, const char *name)
{
    return find_entry(ck, name) != NULL;
}

/* ---------- reading ---------- */

/* GGUF row (h, i, s) = h*hd + 2i + s holds HF row (h, s, i) = h*hd + s*hd/2 + i. */
static int unpermute_rows(const kvz_checkpoint *ck, const ck_entry *e, float *dst, kvz_error *err)
{
    size_t rows = (size_t)e->shape[0], cols = (size_t)(e->numel / e->shape[0]);
    size_t heads = e->permute_heads, hd = rows / heads, half = hd / 2;
    if (rows % heads || hd % 2)
        return kvz_fail(err, KVZ_EFORMAT, "%s: tensor '%s': %zu rows do not split into %zu heads of even size",
                        entry_file(ck, e), e->stored, rows, heads);
    float *tmp = malloc(e->numel * sizeof *tmp);
    if (!tmp)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", entry_file(ck, e));
    memcpy(tmp, dst, e->numel * sizeof *tmp);
    for (size_t h = 0; h < heads; h++)
        for (size_t s = 0; s < 2; s++)
            for (size_t i = 0; i < half; i++)
                memcpy(dst + (h * hd + s * half + i) * cols, tmp + (h * hd + 2 * i + s) * cols,
                       cols * sizeof *dst);
    free(tmp);
    return KVZ_OK;
}

int kvz_checkpoint_read_f32(const kvz_checkpoint *ck, const char *name, float *dst,
                            size_t dst_numel, kvz_error *err)
{
    const ck_entry *e = find_entry(ck, name);
    if (!e)
        return kvz_fail(err, KVZ_ENOTFOUND, "%s: no tensor '%s'", ck->path, name);
    if (dst_numel != e->numel)
        return kvz_fail(err, KVZ_EINVAL, "%s: tensor '%s' has %llu elements, destination holds %zu",
                        entry_file(ck, e), name, (unsigned long long)e->numel, dst_numel);
    if (e->st)
        return kvz_safetensors_to_f32(ck->st, e->st, dst, dst_numel, err);
    int rc = kvz_gguf_tensor_to_f32(ck->gguf, e->gt, dst, err);
    if (!rc && e->permute_heads)
        rc = unpermute_rows(ck, e, dst, err);
    return rc;
}

/* ---------- summary ---------- */

static void count_type(kvz_checkpoint_summary *s, const char *type, uint64_t numel)
{
    size_t i = 0;
    while (i < s->n_types && strcmp(s->types[i].type_name, type))
        i++;
    if (i == s->n_types) {
        if (s->n_types == KVZ_CKPT_MAX_TYPES)
            return;
        snprintf(s->types[i].type_name, sizeof s->types[i].type_name, "%s", type);
        s->n_types++;
    }
    s->types[i].n_tensors++;
    s->types[i].n_params += numel;
}

static int cmp_type_count(const void *a, const void *b)
{
    const kvz_checkpoint_type_count *x = a, *y = b;
    if (x->n_tensors != y->n_tensors)
        return x->n_tensors > y->n_tensors ? -1 : 1;
    return strcmp(x->type_name, y->type_name);
}

size_t kvz_checkpoint_n_files(const kvz_checkpoint *ck)
{
    return ck->st ? kvz_safetensors_n_files(ck->st) : 1;
}

const char *kvz_checkpoint_file(const kvz_checkpoint *ck, size_t i)
{
    if (ck->st)
        return kvz_safetensors_file_path(ck->st, i);
    return i == 0 ? kvz_gguf_path(ck->gguf) : NULL;
}

void kvz_checkpoint_describe(const kvz_checkpoint *ck, kvz_checkpoint_summary *s)
{
    memset(s, 0, sizeof *s);
    s->format = ck->format;
    s->n_files = kvz_checkpoint_n_files(ck);
    for (size_t i = 0; i < s->n_files; i++) {
        struct stat stt;
        if (ck->st)
            s->file_bytes += kvz_safetensors_file_size(ck->st, i);
        else if (stat(kvz_checkpoint_file(ck, i), &stt) == 0)
            s->file_bytes += (uint64_t)stt.st_size;
    }
    for (size_t i = 0; i < ck->n_entries; i++) {
        s->n_tensors++;
        s->n_params += ck->entries[i].numel;
        count_type(s, entry_type(&ck->entries[i]), ck->entries[i].numel);
    }
    qsort(s->types, s->n_types, sizeof s->types[0], cmp_type_count);
}

/* ---------- content hash ---------- */

/* SHA-256 of one file, hex. */
static int sha256_file(const char *path, char hex[65], kvz_error *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return kvz_fail(err, KVZ_EIO, "%s: cannot open to hash: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    enum { BLOCK = 4 << 20 };
    unsigned char *buf = malloc(BLOCK);
    int rc = ctx && buf && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1
                 ? KVZ_OK
                 : kvz_fail(err, KVZ_ENOMEM, "%s: out of memory (hash)", path);
    size_t got;
    while (rc == KVZ_OK && (got = fread(buf, 1, BLOCK, fp)) > 0)
        if (EVP_DigestUpdate(ctx, buf, got) != 1)
            rc = kvz_fail(err, KVZ_EIO, "%s: hashing failed", path);
    if (rc == KVZ_OK && ferror(fp))
        rc = kvz_fail(err, KVZ_EIO, "%s: read error while hashing", path);
    unsigned char md[32];
    unsigned int md_len = 0;
    if (rc == KVZ_OK && (EVP_DigestFinal_ex(ctx, md, &md_len) != 1 || md_len != 32))
        rc = kvz_fail(err, KVZ_EIO, "%s: hashing failed", path);
    for (unsigned i = 0; rc == KVZ_OK && i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    EVP_MD_CTX_free(ctx);
    free(buf);
    fclose(fp);
    return rc;
}

int kvz_checkpoint_sha256(const kvz_checkpoint *ck, char out[65], char **manifest_or_NULL,
                          kvz_error *err)
{
    if (manifest_or_NULL)
        *manifest_or_NULL = NULL;
    if (ck->format == KVZ_CKPT_GGUF)
        return sha256_file(ck->path, out, err);
    size_t n = kvz_checkpoint_n_files(ck), cap = (n + 1) * 80 + 1, len = 0;
    char *manifest = malloc(cap);
    if (!manifest)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory (hash)", ck->path);
    int rc = KVZ_OK;
    for (size_t i = 0; i <= n && rc == KVZ_OK; i++) {
        const char *file = i == 0 ? ck->config_source : kvz_checkpoint_file(ck, i - 1);
        const char *base = strrchr(file, '/');
        base = base ? base + 1 : file;
        char hex[65];
        rc = sha256_file(file, hex, err);
        size_t need = 64 + 2 + strlen(base) + 2;
        if (rc == KVZ_OK && len + need >= cap) {
            char *m = realloc(manifest, cap = 2 * cap + need);
            if (!m)
                rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory (hash)", ck->path);
            else
                manifest = m;
        }
        if (rc == KVZ_OK)
            len += (size_t)snprintf(manifest + len, cap - len, "%s  %s\n", hex, base);
    }
    if (rc == KVZ_OK) {
        unsigned char md[32];
        unsigned int md_len = 0;
        if (EVP_Digest(manifest, len, md, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32)
            rc = kvz_fail(err, KVZ_EIO, "%s: hashing failed", ck->path);
        for (unsigned i = 0; rc == KVZ_OK && i < 32; i++)
            snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
    if (rc == KVZ_OK && manifest_or_NULL)
        *manifest_or_NULL = manifest;
    else
        free(manifest);
    return rc;
}

/* ---------- models from the Hugging Face cache ---------- */

static int hf_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.';
}

/* "org/name[@rev]" with HF's characters; *slash and *at point into spec. */
static int looks_like_hf_id(const char *spec, const char **slash, const char **at)
{
    *slash = *at = NULL;
    if (!spec[0] || spec[0] == '.' || spec[0] == '/' || spec[0] == '~')
        return 0;
    for (const char *p = spec; *p; p++) {
        if (*p == '/' && !*slash && !*at && p > spec && hf_id_char(p[1]))
            *slash = p;
        else if (*p == '@' && *slash && !*at && p > *slash + 1 && p[1])
            *at = p;
        else if (!hf_id_char(*p) && !(*at && *p == '/'))
            return 0;
    }
    return *slash != NULL;
}

/* The hub cache directory and, in *how, which variable chose it. */
static char *hf_hub_dir(const char **how)
{
    const char *v = getenv("HF_HUB_CACHE");
    if (v && *v) {
        *how = "HF_HUB_CACHE";
        return strdup(v);
    }
    v = getenv("HF_HOME");
    if (v && *v) {
        *how = "HF_HOME/hub";
        return kvz_path_join(v, "hub");
    }
    v = getenv("HOME");
    *how = "~/.cache/huggingface/hub";
    return v && *v ? kvz_path_join(v, ".cache/huggingface/hub") : NULL;
}

/* First line of a small file (refs/<revision> holds a commit hash). */
static char *read_ref(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    if (kvz_file_read_all(path, &text, &len, NULL) != KVZ_OK)
        return NULL;
    text[strcspn(text, "\r\n")] = '\0';
    return text;
}

int kvz_model_locate(const char *spec, char **out, kvz_error *err)
{
    *out = NULL;
    const char *slash, *at;
    if (kvz_path_exists(spec) || !looks_like_hf_id(spec, &slash, &at)) {
        *out = strdup(spec);
        return *out ? KVZ_OK : kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", spec);
    }
    const char *how;
    char *hub = hf_hub_dir(&how);
    size_t org_len = (size_t)(slash - spec);
    size_t name_len = (size_t)((at ? at : spec + strlen(spec)) - slash - 1);
    const char *rev = at ? at + 1 : "main";
    char repo[600];
    snprintf(repo, sizeof repo, "models--%.*s--%.*s", (int)org_len, spec, (int)name_len,
             slash + 1);
    char *model_dir = hub ? kvz_path_join(hub, repo) : NULL;
    int rc = KVZ_OK;
    char *snap = NULL;
    if (!model_dir) {
        rc = kvz_fail(err, KVZ_ENOTFOUND,
                      "%s: not a local path, and no Hugging Face cache to look in (set "
                      "HF_HUB_CACHE or HF_HOME)",
                      spec);
    } else if (!kvz_path_is_dir(model_dir)) {
        rc = kvz_fail(err, KVZ_ENOTFOUND,
                      "%s: not a local path, and not in the Hugging Face cache (looked for "
                      "%s, from %s); download it first (huggingface-cli download %.*s) or "
                      "give a local path",
                      spec, model_dir, how, (int)(org_len + 1 + name_len), spec);
    } else {
        char refs[700], *commit = NULL;
        snprintf(refs, sizeof refs, "%s/refs/%s", model_dir, rev);
        if (kvz_path_exists(refs))
            commit = read_ref(refs);
        char snaps[800];
        snprintf(snaps, sizeof snaps, "%s/snapshots/%s", model_dir, commit ? commit : rev);
        if (kvz_path_is_dir(snaps))
            snap = strdup(snaps);
        else if (commit)
            rc = kvz_fail(err, KVZ_ENOTFOUND,
                          "%s: the Hugging Face cache's %s points to commit %s, but %s is "
                          "missing (an interrupted download?)",
                          spec, refs, commit, snaps);
        else
            rc = kvz_fail(err, KVZ_ENOTFOUND,
                          "%s: revision '%s' is not in the Hugging Face cache (no %s and no "
                          "%s)",
                          spec, rev, refs, snaps);
        free(commit);
        if (rc == KVZ_OK && !snap)
            rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", spec);
    }
    free(model_dir);
    free(hub);
    *out = snap;
    return rc;
}
