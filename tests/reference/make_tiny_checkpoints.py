#!/usr/bin/env python3
"""make_tiny_checkpoints.py: tiny random HF checkpoints + reference data for the
checkpoint tests (tests/test_checkpoint*.c, tests/test_safetensors*.c).

Run (PyPI packages: torch, transformers>=5, safetensors, gguf, numpy):
    /root/.cache/kvzap/refenv/bin/python tests/reference/make_tiny_checkpoints.py [--skip-gguf-ref]
        [--smollm2-safetensors]

Writes, under tests/fixtures/tiny/:
  <name>/config.json + model.safetensors (or shards + index), saved by
      transformers' own save_pretrained from a randomly initialised model:
        llama3_f32      LlamaForCausalLM, rope_scaling llama3, tied embeddings, f32
        qwen2_bf16      Qwen2ForCausalLM (q/k/v biases), untied, bf16
        qwen3_f16       Qwen3ForCausalLM, head_dim 32 != hidden/heads 16, qk_norm, tied, f16
        mistral_sharded MistralForCausalLM, untied, f32, saved in 3+ shards (index)
  llama3_f32.gguf, qwen3_f16.gguf: the same weights written as GGUF with the
      gguf package, llama's q/k rows permuted the way llama.cpp's converter does,
      so reading them back through the checkpoint API must give the HF tensors.
  reference.json: per checkpoint, the config values transformers holds and per
      tensor the shape, dtype and an exact checksum of the fp32 bit patterns
      (sum over i of bits[i] * (2i+1) mod 2^64) plus the first values as hex bits.
  smollm2_qk.json (unless --skip-gguf-ref): from the real default model
      (~/.cache/kvzap/SmolLM2-135M-Instruct.Q4_1.gguf) loaded by transformers
      (dequantized, q/k reverse-permuted): layer 0 and 29 q_proj/k_proj first
      rows and per-row sums.
--smollm2-safetensors also saves that dequantized model as safetensors +
config.json into ~/.cache/kvzap/smollm2-safetensors/ (not committed).
"""
import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch
import transformers
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "tiny")
ASSETS = os.environ.get("KVZ_ASSETS", os.path.expanduser("~/.cache/kvzap"))

COMMON = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=512, max_position_embeddings=512,
              rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)


def checksum_bits(arr32):
    """sum(bits[i] * (2i+1)) mod 2^64 over the fp32 bit patterns (exact)."""
    bits = np.ascontiguousarray(arr32, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    weights = np.arange(bits.size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    with np.errstate(over="ignore"):
        return int(np.sum(bits * weights, dtype=np.uint64))


def tensor_record(t):
    f32 = t.detach().to(torch.float32).contiguous().numpy()
    flat = f32.reshape(-1)
    return {
        "shape": list(t.shape),
        "dtype": str(t.dtype).replace("torch.", ""),
        "checksum": str(checksum_bits(f32)),
        "first_bits": ["%08x" % v for v in flat[:8].view(np.uint32)],
        "first": [float(v) for v in flat[:8]],
        "sum": float(np.sum(f32, dtype=np.float64)),
    }


def specs():
    return {
        "llama3_f32": (LlamaConfig, LlamaForCausalLM, torch.float32, None, dict(
            rope_theta=500000.0, tie_word_embeddings=True,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 128})),
        "qwen2_bf16": (Qwen2Config, Qwen2ForCausalLM, torch.bfloat16, None, dict(
            rope_theta=1000000.0, tie_word_embeddings=False)),
        "qwen3_f16": (Qwen3Config, Qwen3ForCausalLM, torch.float16, None, dict(
            head_dim=32, rope_theta=1000000.0, tie_word_embeddings=True)),
        "mistral_sharded": (MistralConfig, MistralForCausalLM, torch.float32, "100KB", dict(
            rope_theta=1000000.0, tie_word_embeddings=False, sliding_window=4096)),
    }


def build(name, cfg_cls, model_cls, dtype, shard, extra, seed):
    torch.manual_seed(seed)
    cfg = cfg_cls(**COMMON, **extra)
    model = model_cls(cfg).to(dtype)
    with torch.no_grad():  # norms are initialised to ones; make them non-trivial
        for pname, p in model.named_parameters():
            if "norm" in pname or pname.endswith(".bias"):
                p.copy_((torch.randn_like(p, dtype=torch.float32) * 0.1 + 1.0).to(dtype))
    model.eval()
    outdir = os.path.join(OUT, name)
    shutil.rmtree(outdir, ignore_errors=True)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(outdir, **kw)
    return model


def config_record(model):
    c = model.config
    rp = getattr(c, "rope_parameters", None) or {}
    return {
        "model_type": c.model_type,
        "architecture": c.architectures[0] if c.architectures else type(model).__name__,
        "n_layers": c.num_hidden_layers, "d_model": c.hidden_size,
        "n_heads": c.num_attention_heads, "n_kv_heads": c.num_key_value_heads,
        "head_dim": getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        "d_ff": c.intermediate_size, "vocab_size": c.vocab_size,
        "max_position_embeddings": c.max_position_embeddings, "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": rp.get("rope_theta"), "rope_type": rp.get("rope_type", "default"),
        "rope_factor": rp.get("factor"), "tie_word_embeddings": bool(c.tie_word_embeddings),
        "sliding_window": getattr(c, "sliding_window", None),
    }


def write_gguf(name, model, arch):
    """The same weights as GGUF, named and (for llama) permuted like llama.cpp."""
    import gguf
    c = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = os.path.join(OUT, name + ".gguf")
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_file_type(0 if model.dtype == torch.float32 else 1)

    def permute(t, n_head):
        return t.reshape(n_head, 2, t.shape[0] // n_head // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)

    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
             "self_attn.k_norm": "attn_k_norm", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for hf, t in sd.items():
        if hf == "model.embed_tokens.weight":
            g = "token_embd.weight"
        elif hf == "model.norm.weight":
            g = "output_norm.weight"
        elif hf == "lm_head.weight":
            if c.tie_word_embeddings:
                continue
            g = "output.weight"
        else:
            parts = hf.split(".")
            layer, mod, kind = parts[2], ".".join(parts[3:-1]), parts[-1]
            g = "blk.%s.%s.%s" % (layer, names[mod], kind)
            if arch == "llama" and mod == "self_attn.q_proj":
                t = permute(t, c.num_attention_heads)
            if arch == "llama" and mod == "self_attn.k_proj":
                t = permute(t, c.num_key_value_heads)
        arr = t.numpy() if t.dtype != torch.bfloat16 else t.to(torch.float32).numpy()
        if t.dim() == 1:
            arr = arr.astype(np.float32)  # llama.cpp keeps norms in f32
        w.add_tensor(g, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def smollm2_reference(save_safetensors):
    gguf_path = os.path.join(ASSETS, "SmolLM2-135M-Instruct.Q4_1.gguf")
    real = os.path.realpath(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(real), gguf_file=os.path.basename(real),
                                                 dtype=torch.float32)
    sd = model.state_dict()
    out = {"source": "SmolLM2-135M-Instruct.Q4_1.gguf loaded by transformers %s" % transformers.__version__,
           "tensors": {}}
    for layer in (0, 29):
        for proj in ("q_proj", "k_proj"):
            name = "model.layers.%d.self_attn.%s.weight" % (layer, proj)
            t = sd[name].to(torch.float32).numpy()
            out["tensors"][name] = {
                "shape": list(t.shape),
                "first_rows": [[float(v) for v in t[r, :16]] for r in range(4)],
                "row_sums": [float(v) for v in t.astype(np.float64).sum(axis=1)],
                "row_abs_sums": [float(v) for v in np.abs(t.astype(np.float64)).sum(axis=1)],
            }
    with open(os.path.join(OUT, "smollm2_qk.json"), "w") as f:
        json.dump(out, f, indent=1)
    if save_safetensors:
        # save_pretrained refuses a GGUF-loaded model: write the plain files.
        from safetensors.torch import save_file
        dst = os.path.join(ASSETS, "smollm2-safetensors")
        os.makedirs(dst, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in sd.items()
                   if not (k == "lm_head.weight" and model.config.tie_word_embeddings)}
        save_file(tensors, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
        cfg = model.config.to_dict()
        cfg.pop("quantization_config", None)
        cfg["architectures"] = [type(model).__name__]
        with open(os.path.join(dst, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-gguf-ref", action="store_true")
    ap.add_argument("--smollm2-safetensors", action="store_true")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    ref = {"transformers": transformers.__version__, "checkpoints": {}}
    for seed, (name, (cfg_cls, model_cls, dtype, shard, extra)) in enumerate(specs().items()):
        model = build(name, cfg_cls, model_cls, dtype, shard, extra, 1234 + seed)
        rec = {"config": config_record(model), "tensors": {}}
        for pname, p in model.state_dict().items():
            if pname == "lm_head.weight" and model.config.tie_word_embeddings:
                continue
            rec["tensors"][pname] = tensor_record(p)
        ref["checkpoints"][name] = rec
        if name == "llama3_f32":
            write_gguf(name, model, "llama")
        if name == "qwen3_f16":
            write_gguf(name, model, "qwen3")
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    if not args.skip_gguf_ref:
        smollm2_reference(args.smollm2_safetensors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
