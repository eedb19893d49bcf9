/* checkpoint: the format-independent model handle. Opens a GGUF file, an HF
 * directory (config.json + model.safetensors or a sharded index), or a
 * directory holding exactly one .gguf; exposes the architecture config and
 * every tensor under its CANONICAL Hugging Face name with its PyTorch shape:
 *   model.embed_tokens.weight                    [vocab, d_model]
 *   model.layers.{i}.self_attn.{q,k,v,o}_proj.{weight,bias}
 *   model.layers.{i}.self_attn.{q,k}_norm.weight [head_dim]      (Qwen3)
 *   model.layers.{i}.input_layernorm.weight      [d_model]
 *   model.layers.{i}.post_attention_layernorm.weight
 *   model.layers.{i}.mlp.{gate,up,down}_proj.weight
 *   model.norm.weight, lm_head.weight (absent when tied)
 * GGUF names (token_embd, blk.N.attn_q, ...) are mapped to these, and for
 * llama-architecture GGUFs the q/k row permutation of llama.cpp's converter
 * is undone on read, so values match what transformers holds in memory.
 * Opening checks that every tensor the config implies exists with that shape
 * and a readable type. */
#ifndef KVZ_CHECKPOINT_H
#define KVZ_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "gguf.h"
#include "model_config.h"
#include "safetensors.h"

typedef struct kvz_checkpoint kvz_checkpoint; /* opaque */

typedef enum kvz_checkpoint_format {
    KVZ_CKPT_SAFETENSORS = 1,
    KVZ_CKPT_GGUF = 2
} kvz_checkpoint_format;

typedef struct kvz_tensor_desc {
    const char *name;        /* canonical name (owned by the checkpoint) */
    const char *stored_name; /* name in the file ("blk.0.attn_q.weight") */
    uint32_t n_dims;
    uint64_t shape[4];       /* PyTorch order: [out, in] */
    uint64_t numel;
    const char *type_name;   /* "F32", "BF16", "Q4_1", ... */
    const char *file;        /* the file that stores it */
} kvz_tensor_desc;

int kvz_checkpoint_open(const char *path, kvz_checkpoint **out, kvz_error *err);

/* Where a model named by the user lives, offline: spec itself when it
 * exists; else, when spec looks like a Hugging Face id ("org/name", or
 * "org/name@revision" with a branch, tag or commit hash; default revision
 * "main"), its snapshot in the local Hugging Face cache: $HF_HUB_CACHE, else
 * $HF_HOME/hub, else ~/.cache/huggingface/hub, layout
 * models--org--name/{refs/<revision>, snapshots/<commit>/}. Never touches
 * the network. *out is malloc'ed (a copy of spec when it is neither, so the
 * caller reports the missing file). KVZ_ENOTFOUND with one message saying
 * where it looked (missing model, missing ref, missing snapshot).
 * kvz_checkpoint_open, kvz_tokenizer_load and kvz_chat_template_load call it. */
int kvz_model_locate(const char *spec, char **out, kvz_error *err);
void kvz_checkpoint_close(kvz_checkpoint *ck);

const kvz_model_config *kvz_checkpoint_config(const kvz_checkpoint *ck);
kvz_checkpoint_format kvz_checkpoint_format_of(const kvz_checkpoint *ck);
const char *kvz_checkpoint_path(const kvz_checkpoint *ck);      /* as given */
/* Directory beside the weights (tokenizer.json, tokenizer_config.json live there). */
const char *kvz_checkpoint_dir(const kvz_checkpoint *ck);
/* The GGUF handle (tokenizer/template metadata), or NULL for safetensors. */
const kvz_gguf *kvz_checkpoint_gguf(const kvz_checkpoint *ck);
/* The config source for messages: ".../config.json" or the GGUF path. */
const char *kvz_checkpoint_config_source(const kvz_checkpoint *ck);

/* Tensors sorted by canonical name. */
size_t kvz_checkpoint_n_tensors(const kvz_checkpoint *ck);
int kvz_checkpoint_tensor_at(const kvz_checkpoint *ck, size_t i, kvz_tensor_desc *out);
/* KVZ_ENOTFOUND (with a message) when the checkpoint has no such tensor. */
int kvz_checkpoint_find(const kvz_checkpoint *ck, const char *name, kvz_tensor_desc *out,
                        kvz_error *err);
int kvz_checkpoint_has(const kvz_checkpoint *ck, const char *name);

/* Reads tensor name as fp32 (F16/BF16/quantized converted; llama GGUF q/k
 * un-permuted) into dst[dst_numel]; dst_numel must equal the tensor's numel. */
int kvz_checkpoint_read_f32(const kvz_checkpoint *ck, const char *name, float *dst,
                            size_t dst_numel, kvz_error *err);

/* ---------- summary for `kvzap info` ---------- */
#define KVZ_CKPT_MAX_TYPES 16
typedef struct kvz_checkpoint_type_count {
    char type_name[16];
    size_t n_tensors;
    uint64_t n_params;
} kvz_checkpoint_type_count;

typedef struct kvz_checkpoint_summary {
    kvz_checkpoint_format format;
    size_t n_files;
    uint64_t file_bytes;  /* all files together */
    size_t n_tensors;
    uint64_t n_params;    /* elements of all tensors */
    size_t n_types;
    kvz_checkpoint_type_count types[KVZ_CKPT_MAX_TYPES]; /* most tensors first */
} kvz_checkpoint_summary;

void kvz_checkpoint_describe(const kvz_checkpoint *ck, kvz_checkpoint_summary *out);
size_t kvz_checkpoint_n_files(const kvz_checkpoint *ck);
const char *kvz_checkpoint_file(const kvz_checkpoint *ck, size_t i);

/* Content hash (SHA-256, lower-case hex) of the checkpoint's files, so a
 * surrogate can be matched to the exact weights it was trained for. A GGUF
 * checkpoint: the file's SHA-256 (what `sha256sum model.gguf` prints). An HF
 * directory: the SHA-256 of the manifest *manifest_or_NULL (malloc'ed):
 * one "<sha256>  <file name>\n" line for config.json and then each weight
 * file in the order kvz_checkpoint_file lists them, exactly what
 * `sha256sum config.json <weight files>` prints when run in that directory.
 * Reads every weight byte once (about the disk's speed). */
int kvz_checkpoint_sha256(const kvz_checkpoint *ck, char out[65], char **manifest_or_NULL,
                          kvz_error *err);

#endif
