#!/usr/bin/env python3
"""make_oracle_chunked_fixtures.py: reference for chunked KVzip+ scoring
(spec section 2, kvpress's KVzipPress with kvzip_plus_normalization=True),
checked by tests/test_kvzip_chunked.c.

Run (PyPI packages: torch, transformers>=5, accelerate, gguf, tokenizers,
numpy; same env as make_forward_fixtures.py):
    /root/.cache/kvzap/refenv/bin/python tests/reference/make_oracle_chunked_fixtures.py

What it does, literally and in fp32 eager (kvpress is not needed; when it is
installed, its own KVzipPress runs as a cross-check, see kvpress_crosscheck):
  - model: ~/.cache/kvzap/SmolLM2-135M-Instruct.Q4_1.gguf through transformers'
    GGUF loader (fp32), tokenizer rebuilt from the GGUF (make_tokenizer_fixtures),
    chat template = the GGUF's own.
  - prompt as kvpress's pipeline forms it: render [user: t + '#'*(len(t)+10)]
    with add_generation_prompt=True, enable_thinking=False, split at the
    separator; context ids = encode(part before, add_special_tokens=False);
    prefix_length from a dummy rendering as the press computes it; suffix ids =
    encode(part after, add_special_tokens=False). t = document.strip().
  - one prefill (DynamicCache) with input_layernorm hooks for x; then per chunk
    of CHUNK_SIZE context tokens the repeat input (instruction [+ last 8 ids of
    the previous chunk], suffix, chunk) runs on the cache with a forward hook on
    every self_attn that computes the score from q (q_proj, RoPE), the cache's
    keys/values and hidden_states, exactly as the press's score_kvzip does
    (subset keys: sinks [0, min(4, start)), chunk, own causal; softmax; / ||x||;
    * ||W_O^g v||; max over group heads and all repeat rows). The softmax is
    taken in log space in float64 (log_softmax of the fp32 logits) so nothing
    underflows; the log-score is stored. The cache is cropped back afterwards.
Writes tests/fixtures/oracle_chunked/smollm2.json + smollm2.bin (raw
little-endian arrays; the index gives offset, dtype, shape):
  ids [n_ids] i32, suffix_ids i32, repeat{c} i32 (each chunk's repeat input),
  logscore_layers i32 [nl], logscores f32 [nl, n_ctx, Hkv] (all context
  positions, those layers), hidden_pos i32 [m] (absolute), hidden f32 [L, m, D].
"""
import json
import os
import sys

import numpy as np
import torch
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import rotate_half

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "fixtures", "oracle_chunked")
sys.path.insert(0, HERE)
from make_forward_fixtures import GGUF, Bin, load  # noqa: E402

CHUNK_SIZE = 512
N_SINK = 4
PREV_TAIL = 8
LOGSCORE_LAYERS = [0, 7, 15, 29]
FIRST = "\n\nRepeat the previous context exactly."
NEXT = "\n\nRepeat the part of the previous context exactly, starting with"


def render(tok, template, content):
    return tok.apply_chat_template([{"role": "user", "content": content}], chat_template=template,
                                   add_generation_prompt=True, tokenize=False, enable_thinking=False)


def build_prompt(tok, template, text):
    t = text.strip()
    sep = "#" * (len(t) + 10)
    context, suffix = render(tok, template, t + sep).split(sep)
    dummy = "dummy context"
    dsep = "\n" + "#" * len(dummy)
    dctx, dsuffix = render(tok, template, dummy + dsep).split(dsep)
    assert dsuffix == suffix
    prefix_text = dctx.split(dummy)[0]
    assert context == prefix_text + t
    ids = tok.encode(context, add_special_tokens=False)
    prefix_length = len(tok.encode(prefix_text, add_special_tokens=False))
    assert ids[:prefix_length] == tok.encode(prefix_text, add_special_tokens=False)
    return ids, prefix_length, tok.encode(suffix, add_special_tokens=False)


def chunks_of(ctx_ids, size):
    return [ctx_ids[s:s + size] for s in range(0, len(ctx_ids), size)]


def repeat_inputs(tok, ctx_ids):
    first = tok.encode(FIRST, add_special_tokens=False)
    nxt = tok.encode(NEXT, add_special_tokens=False)
    out, chunks = [], chunks_of(ctx_ids, CHUNK_SIZE)
    for c, a in enumerate(chunks):
        q = first if c == 0 else nxt + chunks[c - 1][-PREV_TAIL:]
        out.append((len(a), q, a))
    return out


class Scorer:
    """Forward hook on self_attn computing one chunk's KVzip+ log-scores."""

    def __init__(self, model, n_ctx_total):
        cfg = model.config
        self.L, self.Hkv = cfg.num_hidden_layers, cfg.num_key_value_heads
        self.scores = torch.full((self.L, self.Hkv, n_ctx_total), float("nan"), dtype=torch.float64)
        self.start = self.end = 0

    def hook(self, module, args, kwargs, output):
        x = kwargs["hidden_states"][0]                      # [q, D]
        cache = kwargs.get("past_key_values") or kwargs.get("past_key_value") or self.cache
        li = module.layer_idx
        keys = cache.layers[li].keys[0]                     # [Hkv, T, dh]
        values = cache.layers[li].values[0]
        cfg = module.config
        H, Hkv, dh = cfg.num_attention_heads, cfg.num_key_value_heads, module.head_dim
        G, q_len = H // Hkv, x.shape[0]
        q = module.q_proj(x).view(q_len, H, dh).transpose(0, 1)  # [H, q, dh]
        if hasattr(module, "q_norm"):
            q = module.q_norm(q)
        cos, sin = kwargs["position_embeddings"]
        q = q * cos[0] + rotate_half(q) * sin[0]
        sink = min(N_SINK, self.start)
        sel = lambda t: torch.cat([t[:, :sink], t[:, self.start:self.end], t[:, -q_len:]], dim=1)
        k, v = sel(keys), sel(values)                       # [Hkv, S, dh]
        k = k.repeat_interleave(G, dim=0)
        v = v.repeat_interleave(G, dim=0)
        logits = (q @ k.transpose(1, 2)) / (dh ** 0.5)      # [H, q, S] fp32
        causal = torch.ones(q_len, q_len, dtype=torch.bool).triu(1)
        logits = logits.double()
        logits[:, :, -q_len:] = logits[:, :, -q_len:].masked_fill(causal, float("-inf"))
        log_a = torch.log_softmax(logits, dim=-1)
        log_a = log_a - torch.log(x.double().norm(dim=-1))[None, :, None]
        wo = module.o_proj.weight.view(cfg.hidden_size, H, dh)          # [D, H, dh]
        wov = torch.einsum("dhe,hse->hsd", wo, v)                        # [H, S, D] fp32
        log_a = log_a + torch.log(wov.double().norm(dim=-1))[:, None, :]
        n = self.end - self.start
        y = log_a[:, :, sink:sink + n].amax(dim=1).view(Hkv, G, n).amax(dim=1)
        self.scores[li, :, self.start:self.end] = y
        return output


def run(model, tok, text):
    ids, prefix_length, suffix_ids = build_prompt(tok, GGUF_TEMPLATE, text)
    n = len(ids)
    layers = model.model.layers
    xs = [None] * len(layers)
    hooks = [layer.input_layernorm.register_forward_hook(
        lambda m, i, o, li=li: xs.__setitem__(li, o[0].detach().clone()))
        for li, layer in enumerate(layers)]
    cache = DynamicCache()
    with torch.inference_mode():
        model.model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
    for h in hooks:
        h.remove()
    scorer = Scorer(model, n)
    scorer.cache = cache
    hooks = [layer.self_attn.register_forward_hook(scorer.hook, with_kwargs=True) for layer in layers]
    reps = []
    scorer.start = prefix_length
    for n_chunk, q, a in repeat_inputs(tok, ids[prefix_length:]):
        scorer.end = scorer.start + n_chunk
        rep = q + suffix_ids + a
        reps.append(rep)
        with torch.inference_mode():
            model.model(input_ids=torch.tensor([rep]), past_key_values=cache, use_cache=True)
        for layer in cache.layers:  # drop the repeat input, as the press does
            layer.keys, layer.values = layer.keys[:, :, :n], layer.values[:, :, :n]
        assert cache.get_seq_length() == n
        scorer.start = scorer.end
    for h in hooks:
        h.remove()
    return ids, prefix_length, suffix_ids, reps, xs, scorer.scores


GGUF_TEMPLATE = None


def kvpress_crosscheck(model, tok, ids, p0, suffix_ids, scores):
    """Optional (pip install kvpress --no-deps; tried with 0.5.5): kvpress's own
    KVzipPress scoring on the same ids, prefix_length and suffix, compared with
    ours. Only shims: compress_post skipped (it asserts a non-eager model) and
    the cache handed to its hook (transformers 5.x no longer passes
    past_key_values to the attention module)."""
    try:
        from kvpress import KVzipPress
    except ImportError:
        print("kvpress not installed: cross-check skipped")
        return
    press = KVzipPress(compression_ratio=0.5, kvzip_plus_normalization=True, chunk_size=CHUNK_SIZE)
    cache = DynamicCache()
    with torch.inference_mode():
        model.model(input_ids=torch.tensor([ids]), past_key_values=cache)
    press.prefix_length, press._suffix_ids = p0, torch.tensor([suffix_ids])
    press._context_ids, press._cache = torch.tensor([ids]), cache
    for layer in model.model.layers:
        layer.self_attn.rotary_emb = model.model.rotary_emb
    press.compress_post = lambda model: None
    hook = press.forward_hook
    press.forward_hook = lambda mod, inp, kw, out: hook(mod, inp, {**kw, "past_key_values": cache}, out)
    with torch.inference_mode():
        press._perform_kvzip_compression(model, tok)
    theirs = torch.log(press.score_val[:, 0, :, p0:].double())
    worst = float((theirs - scores[:, :, p0:]).abs().max())
    print("kvpress KVzipPress vs ours: max |delta log-score| = %.3g" % worst)
    assert worst < 1e-4, worst


def main():
    global GGUF_TEMPLATE
    from gguf import GGUFReader
    from make_tokenizer_fixtures import smollm2_reference
    torch.manual_seed(0)
    tok = smollm2_reference()
    GGUF_TEMPLATE = GGUFReader(GGUF).fields["tokenizer.chat_template"].contents()
    model = load(os.path.dirname(GGUF), gguf_file=os.path.basename(GGUF))
    with open(os.path.join(OUT, "document.txt"), encoding="utf-8") as f:
        text = f.read()
    ids, p0, suffix_ids, reps, xs, scores = run(model, tok, text)
    n = len(ids)
    assert (n - p0 + CHUNK_SIZE - 1) // CHUNK_SIZE >= 3, n - p0
    assert torch.isfinite(scores[:, :, p0:]).all()
    kvpress_crosscheck(model, tok, ids, p0, suffix_ids, scores)
    b = Bin()
    b.add("ids", np.array(ids, dtype=np.int32))
    b.add("suffix_ids", np.array(suffix_ids, dtype=np.int32))
    for c, rep in enumerate(reps):
        b.add("repeat%d" % c, np.array(rep, dtype=np.int32))
    b.add("logscore_layers", np.array(LOGSCORE_LAYERS, dtype=np.int32))
    sel = scores[LOGSCORE_LAYERS][:, :, p0:].permute(0, 2, 1)          # [nl, n_ctx, Hkv]
    b.add("logscores", sel.float().numpy())
    hp = sorted(set([p0, p0 + 1, p0 + 3, p0 + 4, p0 + CHUNK_SIZE, (p0 + n) // 2, n - 1]))
    b.add("hidden_pos", np.array(hp, dtype=np.int32))
    b.add("hidden", torch.stack([x[hp] for x in xs]).numpy())
    meta = {"source": os.path.basename(GGUF), "document": "document.txt", "chunk_size": CHUNK_SIZE,
            "n_ids": n, "context_start": p0, "context_end": n, "n_chunks": len(reps),
            "n_layers": len(xs), "n_kv_heads": model.config.num_key_value_heads,
            "d_model": model.config.hidden_size,
            "transformers": __import__("transformers").__version__}
    import make_forward_fixtures as mff
    mff.OUT = OUT
    b.write("smollm2", meta)
    print("ids", n, "prefix", p0, "chunks", [len(r) for r in reps],
          "logscore range", float(sel.min()), float(sel.max()))


if __name__ == "__main__":
    main()
