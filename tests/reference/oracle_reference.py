#!/usr/bin/env python3
"""oracle_reference.py: the PyTorch reference of the single-pass KVzip+ oracle
(spec /work/shared/spec/kvzap-reference.md section 1), importable and as a CLI.

PyPI packages: torch, transformers>=5, tokenizers, numpy (gguf for the
SmolLM2 GGUF model). No h5py, no kvpress.

Definitions, as kvpress' kvzap/data.py (repeat_prompt_tokenization and the
KVzapDataCollector forward hook) computes them:
  1.1 t = text.strip(); rendered = apply_chat_template([user: t + "\\n\\nRepeat
      the previous context exactly.", assistant: t], tokenize=False); ids and
      offsets = tokenizer(rendered, return_offsets_mapping=True) (default
      add_special_tokens); prefix, middle, rest = rendered.split(t) (exactly
      three parts); P/R bounds = first token whose START offset is >= the
      character boundary (len(ids) when none, i.e. m[n] = total length).
  1.2 one causal forward pass over all ids; per layer x = input of self_attn
      (after input_layernorm), q after q_norm + RoPE, k after k_norm + RoPE, v.
  1.3 s[h,i] = max over g in group(h), j in R of a[g,j,i] * ||W_O^g v_i|| / ||x_j||,
      y = ln s.

Two ways to evaluate 1.3:
  exact (default; the fixtures): q, k, v, x come from the fp32 model (the
      module's own projections / norms / apply_rotary_pos_emb on the captured
      attention input), then everything else is float64 in the log domain:
      log a = log_softmax over the causal row (only rows j in R are needed),
      y = max_{g,j} (log a + log||W_O^g v_i|| - log||x_j||). So y is finite
      wherever the fp32 probability would underflow to 0 (ln 0 = -inf).
  kvpress: what the reference does on the GPU, in the model dtype: the eager
      attention weights the module returns (full T x T per head), then
      a / ||x|| * ||W_O v||, amax, torch.log. Used by the benchmark
      (bench/oracle_reference_bench.py), since it is the reference's cost.

CLI (prints a JSON summary of one document; --out writes an .npz):
  python tests/reference/oracle_reference.py --model DIR_OR_GGUF [--tokenizer DIR]
      [--chat-template FILE] --text-file doc.txt [--mode exact|kvpress] [--out x.npz]
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

INSTRUCTION = "\n\nRepeat the previous context exactly."


# ---------------------------------------------------------------- 1.1 prompt
def render_repeat_prompt(tokenizer, text, chat_template=None):
    """(t, rendered): the spec 1.1 conversation rendered by apply_chat_template."""
    t = text.strip()
    messages = [{"role": "user", "content": t + INSTRUCTION},
                {"role": "assistant", "content": t}]
    kw = {"chat_template": chat_template} if chat_template is not None else {}
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, **kw)
    return t, rendered


def first_start_at_or_after(starts, boundary):
    """First k with starts[k] >= boundary; len(starts) when none (m[n] = length)."""
    for k, s in enumerate(starts):
        if s >= boundary:
            return k
    return len(starts)


def repeat_prompt(tokenizer, text, chat_template=None):
    """Spec 1.1: dict(t, rendered, ids, offsets, P=(p0, p1), R=(r0, r1))."""
    t, rendered = render_repeat_prompt(tokenizer, text, chat_template)
    enc = tokenizer(rendered, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    parts = rendered.split(t)
    if len(parts) != 3:
        raise ValueError("the text appears %d times in the rendered prompt (need 2)" % (len(parts) - 1))
    prefix, middle, _ = parts
    starts = [o[0] for o in offsets]
    b = [len(prefix), len(prefix) + len(t), len(prefix) + len(t) + len(middle),
         len(prefix) + 2 * len(t) + len(middle)]
    k = [first_start_at_or_after(starts, x) for x in b]
    if k[0] >= k[1] or k[2] >= k[3]:
        raise ValueError("empty context or repeat range: %s" % k)
    return {"t": t, "rendered": rendered, "ids": ids, "offsets": offsets,
            "P": (k[0], k[1]), "R": (k[2], k[3])}


# ---------------------------------------------------------------- 1.2 taps
class AttentionTaps:
    """Forward pre-hooks (with kwargs) on every layer's self_attn keep the
    attention input x [T, D] and the (cos, sin) position embeddings. With
    on_weights(module, x, weights) -> y, a forward hook also hands the eager
    attention weights [H, T, T] to it inside the pass and keeps only y (as
    kvpress' hook does, so only one layer's T x T weights are alive)."""

    def __init__(self, model, on_weights=None):
        self.layers = model.model.layers
        self.x = [None] * len(self.layers)
        self.rope = [None] * len(self.layers)
        self.y = [None] * len(self.layers)
        self.on_weights = on_weights
        self.handles = []
        for li, layer in enumerate(self.layers):
            self.handles.append(layer.self_attn.register_forward_pre_hook(
                self._pre(li), with_kwargs=True))
            if on_weights:
                self.handles.append(layer.self_attn.register_forward_hook(self._post(li)))

    def _pre(self, li):
        def hook(module, args, kwargs):
            hs = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            self.x[li] = hs[0].detach()
            self.rope[li] = kwargs.get("position_embeddings")
        return hook

    def _post(self, li):
        def hook(module, args, output):
            self.y[li] = self.on_weights(module, self.x[li], output[1][0].detach())
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def qkv(attn, x, rope):
    """q [H, T, dh] after (q_norm and) RoPE, k and v [Hkv, T, dh], from the
    module's own projections, as its forward computes them."""
    dh = attn.head_dim
    shape = (1, x.shape[0], -1, dh)
    q = attn.q_proj(x[None]).view(shape)
    k = attn.k_proj(x[None]).view(shape)
    v = attn.v_proj(x[None]).view(shape)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    cos, sin = rope
    q, k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    return q[0], k[0], v.transpose(1, 2)[0]


def wo_v_norms(attn, v, n_heads):
    """||W_O^g v_i^{h(g)}|| for every query head g: [H, T] (dtype of v)."""
    d_model, hd = attn.o_proj.weight.shape
    dh = hd // n_heads
    wo = attn.o_proj.weight.to(v.dtype).view(d_model, n_heads, dh).permute(1, 2, 0)  # [H, dh, D]
    group = n_heads // v.shape[0]
    vg = v.repeat_interleave(group, dim=0)  # [H, T, dh]
    return torch.linalg.vector_norm(torch.bmm(vg, wo), dim=-1)


# ---------------------------------------------------------------- 1.3 scores
def layer_log_scores_exact(attn, x, rope, P, R, n_heads, n_kv):
    """y [|P|, Hkv] float64, log-domain, rows j in R of the causal softmax."""
    q, k, v = qkv(attn, x, rope)
    q, k, v, x = q.double(), k.double(), v.double(), x.double()
    dh = q.shape[-1]
    group = n_heads // n_kv
    r0, r1 = R
    p0, p1 = P
    kg = k.repeat_interleave(group, dim=0)  # [H, T, dh]
    logits = torch.matmul(q[:, r0:r1], kg[:, :r1].transpose(1, 2)) / math.sqrt(dh)  # [H, |R|, r1]
    j = torch.arange(r0, r1)[:, None]
    i = torch.arange(r1)[None, :]
    logits = logits.masked_fill(i > j, float("-inf"))
    log_a = torch.log_softmax(logits, dim=-1)[:, :, p0:p1]  # [H, |R|, |P|]
    log_x = torch.log(torch.linalg.vector_norm(x[r0:r1], dim=-1))  # [|R|]
    log_wov = torch.log(wo_v_norms(attn, v, n_heads)[:, p0:p1])  # [H, |P|]
    s = (log_a - log_x[None, :, None]).amax(dim=1) + log_wov  # [H, |P|]
    return s.view(n_kv, group, p1 - p0).amax(dim=1).T  # [|P|, Hkv]


def layer_log_scores_kvpress(attn, x, weights, P, R, n_heads, n_kv):
    """As kvpress' hook, in the model dtype: eager weights [H, T, T]."""
    dh = attn.head_dim
    v = attn.v_proj(x[None]).view(1, x.shape[0], -1, dh).transpose(1, 2)[0]
    s = weights / torch.linalg.vector_norm(x, dim=-1)[None, :, None]
    s = s * wo_v_norms(attn, v, n_heads)[:, None, :]
    s = s[:, R[0]:R[1], P[0]:P[1]].amax(dim=1)
    group = n_heads // n_kv
    return torch.log(s.view(n_kv, group, -1).amax(dim=1)).T


def score_document(model, ids, P, R, mode="exact"):
    """One forward pass. Returns (log_scores [L, |P|, Hkv] float32 numpy,
    xs: list of L tensors [T, D] float32 (the attention inputs))."""
    cfg = model.config
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    on_weights = None
    if mode == "kvpress":
        def on_weights(module, x, weights):
            return layer_log_scores_kvpress(module, x, weights, P, R, n_heads, n_kv)
    taps = AttentionTaps(model, on_weights)
    try:
        with torch.inference_mode():
            model.model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
            out = []
            for li, layer in enumerate(taps.layers):
                y = taps.y[li]
                if mode == "exact":
                    y = layer_log_scores_exact(layer.self_attn, taps.x[li], taps.rope[li], P, R,
                                               n_heads, n_kv)
                out.append(y.float().numpy())
    finally:
        taps.remove()
    return np.stack(out), taps.x


# ---------------------------------------------------------------- loading
def load_model(path):
    """fp32, eager attention; path: an HF dir or a .gguf file."""
    from transformers import AutoModelForCausalLM
    kw = {}
    if path.endswith(".gguf"):
        kw["gguf_file"] = os.path.basename(path)
        path = os.path.dirname(os.path.abspath(path))
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager", **kw)
    return m.eval()


def load_tokenizer(model_path, tokenizer_path=None):
    """(tokenizer, chat_template text or None). A GGUF gets the real SmolLM2
    tokenizer rebuilt by make_tokenizer_fixtures.smollm2_reference() and the
    GGUF's own template; otherwise AutoTokenizer on tokenizer_path/model_path."""
    if model_path.endswith(".gguf") and tokenizer_path is None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from gguf import GGUFReader
        from make_tokenizer_fixtures import smollm2_reference
        template = GGUFReader(model_path).fields["tokenizer.chat_template"].contents()
        return smollm2_reference(), template
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tokenizer_path or model_path), None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer")
    ap.add_argument("--chat-template", help="file with template text (default: the tokenizer's)")
    ap.add_argument("--text-file", required=True)
    ap.add_argument("--mode", choices=["exact", "kvpress"], default="exact")
    ap.add_argument("--out", help="write ids, P, R, log_scores, x to this .npz")
    a = ap.parse_args()
    tok, template = load_tokenizer(a.model, a.tokenizer)
    if a.chat_template:
        with open(a.chat_template) as f:
            template = f.read()
    with open(a.text_file, encoding="utf-8") as f:
        text = f.read()
    model = load_model(a.model)
    rp = repeat_prompt(tok, text, template)
    y, xs = score_document(model, rp["ids"], rp["P"], rp["R"], a.mode)
    if a.out:
        np.savez(a.out, ids=np.array(rp["ids"], np.int32), P=np.array(rp["P"]), R=np.array(rp["R"]),
                 log_scores=y, x=torch.stack(xs).numpy())
    print(json.dumps({"n_tokens": len(rp["ids"]), "P": rp["P"], "R": rp["R"],
                      "log_scores_shape": list(y.shape), "mean": float(y.mean()),
                      "min": float(y.min()), "max": float(y.max())}))


if __name__ == "__main__":
    main()
