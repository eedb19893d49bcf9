"""Writes tests/fixtures/forward_ops/rope_inv_freq.json: RoPE inv_freq exactly as
transformers computes it (default and llama3 scaling via ROPE_INIT_FUNCTIONS /
the rotary embedding module), plus cos/sin at a few positions, for
tests/test_forward_ops.c.

Run: /root/.cache/kvzap/refenv/bin/python tests/reference/make_forward_ops_fixtures.py
Needs (PyPI): torch, transformers (see tests/reference/requirements.txt).
"""
import json, os
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

CASES = [
    dict(name="default_10k_dh64", theta=10000.0, head_dim=64, scaling=None),
    dict(name="default_100k_dh64", theta=100000.0, head_dim=64, scaling=None),
    dict(name="default_1m_dh128", theta=1000000.0, head_dim=128, scaling=None),
    dict(name="llama3_500k_dh128", theta=500000.0, head_dim=128,
         scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_position_embeddings=8192)),
    dict(name="llama3_500k_dh64_f8", theta=500000.0, head_dim=64,
         scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_position_embeddings=8192)),
    dict(name="llama3_500k_dh16_small_ctx", theta=500000.0, head_dim=16,
         scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_position_embeddings=64)),
]
POSITIONS = [0, 1, 7, 100, 4095, 8191, 131000]


def main():
    out = {"transformers": __import__("transformers").__version__, "positions": POSITIONS, "cases": []}
    for c in CASES:
        params = {"rope_type": "default", "rope_theta": c["theta"]}
        if c["scaling"]:
            params.update(c["scaling"])
        cfg = LlamaConfig(hidden_size=c["head_dim"] * 4, num_attention_heads=4, head_dim=c["head_dim"],
                          max_position_embeddings=131072, rope_parameters=params)
        emb = LlamaRotaryEmbedding(cfg)
        x = torch.zeros(1, 1, len(POSITIONS), c["head_dim"])
        cos, sin = emb(x, torch.tensor([POSITIONS]))
        half = c["head_dim"] // 2
        out["cases"].append(dict(
            name=c["name"], theta=c["theta"], head_dim=c["head_dim"], scaling=c["scaling"],
            inv_freq=emb.inv_freq.tolist(),
            cos=cos[0, :, :half].tolist(), sin=sin[0, :, :half].tolist()))
    dst = os.path.join(os.path.dirname(__file__), "..", "fixtures", "forward_ops", "rope_inv_freq.json")
    with open(dst, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", dst)


if __name__ == "__main__":
    main()
