#!/usr/bin/env python3
"""oracle_reference_gpu.py: the PyTorch/transformers side of
bench/bench_gpu_oracle.sh: the KVzip+ oracle definition (spec 1.3, kvpress'
KVzapDataCollector way: scores from the eager attention's full T x T weights,
via the hooks of tests/reference/oracle_reference.py) on one GPU, for a
Qwen3-8B-shaped Qwen3ForCausalLM with random weights made on the device, in
bfloat16, on the same synthetic repeat prompts as bench/bench_gpu_oracle.c
([prefix 16][doc][middle 24][the same doc][suffix 6], xorshift ids).

Per document: one forward pass of the decoder (no LM head, as the C side),
per layer the log-scores [|P|, Hkv] from the attention weights, then
n_samples random context positions' hidden states and scores copied to host
memory. One warm-up document, then --docs timed documents.

Prints one JSON line: tokens_per_s (full repeat sequences), s_per_doc,
max_memory_allocated, seq_tokens, model shape, versions.

Run:  python bench/oracle_reference_gpu.py [--docs 4] [--doc-tokens 1000]
          [--samples 500] [--tiny] [--device cuda|cpu]
--tiny: L=2, D=64, H=4, Hkv=2, dh=16, d_ff=128, vocab 512, 40-token docs (a
smoke run; works on the CPU). Needs (PyPI): torch, transformers>=5, numpy.
"""
import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "reference"))

import oracle_reference as ref  # noqa: E402

PREFIX, MIDDLE, SUFFIX = 16, 24, 6
MASK64 = (1 << 64) - 1


def shape(tiny):
    if tiny:
        return dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, intermediate_size=128, vocab_size=512)
    return dict(num_hidden_layers=36, hidden_size=4096, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, intermediate_size=12288,
                vocab_size=151936)


def prompt(d, doc_tokens, vocab):
    """The C side's make_prompt: ids, P, R."""
    T = PREFIX + 2 * doc_tokens + MIDDLE + SUFFIX
    st = (0x9E3779B97F4A7C15 * (d + 1)) & MASK64
    ids = []
    for _ in range(T):
        st ^= (st << 13) & MASK64
        st ^= st >> 7
        st ^= (st << 17) & MASK64
        ids.append(st % vocab)
    p0, p1 = PREFIX, PREFIX + doc_tokens
    r0 = p1 + MIDDLE
    ids[r0:r0 + doc_tokens] = ids[p0:p1]
    return ids, (p0, p1), (r0, r0 + doc_tokens)


def build_model(tiny, device, dtype):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    cfg = Qwen3Config(**shape(tiny), rope_theta=1e6, rms_norm_eps=1e-6,
                      max_position_embeddings=40960, tie_word_embeddings=False,
                      attn_implementation="eager")
    cfg._attn_implementation = "eager"
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # random init on the device
            model = Qwen3ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def harvest_doc(model, d, a, dev):
    cfg = model.config
    ids, P, R = prompt(d, a.doc_tokens, cfg.vocab_size)
    H, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads

    def on_weights(module, x, weights):
        return ref.layer_log_scores_kvpress(module, x, weights, P, R, H, Hkv)

    taps = ref.AttentionTaps(model, on_weights)
    try:
        with torch.inference_mode():
            model.model(input_ids=torch.tensor([ids], dtype=torch.long, device=dev),
                        use_cache=False)
            p0, p1 = P
            pick = torch.randperm(p1 - p0, device=dev)[:a.samples]
            X = torch.stack([x[p0:p1][pick] for x in taps.x], dim=1).cpu()      # [n, L, D]
            Y = torch.stack([y[pick] for y in taps.y], dim=1).float().cpu()      # [n, L, Hkv]
    finally:
        taps.remove()
    return len(ids), X, Y


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=4)
    ap.add_argument("--doc-tokens", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    if a.tiny:
        a.doc_tokens, a.samples, a.docs = 40, 16, 2
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    t0 = time.perf_counter()
    model = build_model(a.tiny, dev, torch.bfloat16)
    if cuda:
        torch.cuda.synchronize()
    setup = time.perf_counter() - t0
    T, X, Y = harvest_doc(model, 0, a, dev)  # warm-up
    assert torch.isfinite(Y).any(), "no finite scores"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for d in range(1, a.docs + 1):
        T, X, Y = harvest_doc(model, d, a, dev)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    print(json.dumps({
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "precision": "bfloat16", "attn": "eager", "docs": a.docs, "seq_tokens": T,
        "samples": a.samples, "setup_s": round(setup, 2), "s_per_doc": round(wall / a.docs, 4),
        "tokens_per_s": round(T * a.docs / wall, 1),
        "max_memory_allocated": torch.cuda.max_memory_allocated(dev) if cuda else 0,
        "layers": model.config.num_hidden_layers, "d_model": model.config.hidden_size,
        "hidden_shape": list(X.shape), "score_shape": list(Y.shape),
        "torch": torch.__version__, "transformers": __import__("transformers").__version__}))


if __name__ == "__main__":
    main()
