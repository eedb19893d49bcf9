"""make_export_fixtures: kvpress parity fixtures for the surrogate export.

Builds two tiny KVzap surrogates (Linear and MLP; L=3 modules, D=32, Hkv=2,
MLP hidden D/8=4) with seeded float32 weights, using kvpress's own
KVzapModel/KVzapConfig (kvpress/presses/kvzap_press.py), and writes into
tests/fixtures/export/:

  <kind>.json            sizes, the weights by tensor name (float32 values),
                         inputs x [n, L, D], and KVzapModel outputs
                         y_f32 [n, L, Hkv] (float32 weights) and
                         y_bf16w [n, L, Hkv] (weights rounded to bf16 by torch,
                         computed in float32)
  <kind>_f32/, <kind>_bf16/   KVzapModel.save_pretrained directories
                         (config.json + model.safetensors) in float32 and
                         bfloat16: the exact files kvpress itself writes.

tests/test_export.c builds the same surrogate in C, exports it, and compares
tensors, config keys and predictions against these.

Also: --check-export DIR [DIR...] loads C-written exports with
KVzapModel.from_pretrained and compares their predictions with the fixture
(used by hand; CI never runs Python).

Run:  /root/.cache/kvzap/refenv/bin/python tests/reference/make_export_fixtures.py
Needs (PyPI): torch, transformers, safetensors, numpy, kvpress (installed with
--no-deps plus its import-time deps cachetools, datasets, pandas, fire, ...).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

from kvpress.presses.kvzap_press import KVzapConfig, KVzapModel

L, D, HKV, DH, N = 3, 32, 2, 4, 5
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "export")


def build(kind, seed):
    torch.manual_seed(0)
    cfg = KVzapConfig(input_dim=D, output_dim=HKV, n_modules=L, hidden_dim=DH if kind == "mlp" else None)
    model = KVzapModel(cfg).float().eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(rng.normal(0.0, 0.4, size=tuple(p.shape)).astype(np.float32)))
    x = rng.normal(0.0, 1.5, size=(N, L, D)).astype(np.float32)
    return model, x


def forward(model, x):
    with torch.no_grad():
        return model.float()(torch.from_numpy(x)).numpy().astype(np.float32)


def floats(a):
    return [float(v) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def write_kind(kind, seed):
    model, x = build(kind, seed)
    y_f32 = forward(model, x)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    d32 = os.path.join(OUT, f"{kind}_f32")
    dbf = os.path.join(OUT, f"{kind}_bf16")
    model.float().save_pretrained(d32)
    model.to(torch.bfloat16).save_pretrained(dbf)
    y_bf16w = forward(KVzapModel.from_pretrained(dbf), x)
    fixture = {
        "kind": kind,
        "n_layers": L,
        "d_in": D,
        "d_hidden": DH if kind == "mlp" else 0,
        "d_out": HKV,
        "n": N,
        "tensors": {k: {"shape": list(v.shape), "values": floats(v.float().numpy())} for k, v in state.items()},
        "x": floats(x),
        "y_f32": floats(y_f32),
        "y_bf16w": floats(y_bf16w),
    }
    with open(os.path.join(OUT, f"{kind}.json"), "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")


def check_exports(dirs):
    ok = True
    for d in dirs:
        model = KVzapModel.from_pretrained(d)
        kind = "mlp" if model.config.hidden_dim is not None else "linear"
        loaded_dtype = model.dtype
        with open(os.path.join(OUT, f"{kind}.json")) as f:
            fx = json.load(f)
        x = np.asarray(fx["x"], dtype=np.float32).reshape(N, L, D)
        ref = np.asarray(fx["y_bf16w" if loaded_dtype == torch.bfloat16 else "y_f32"], dtype=np.float32)
        got = forward(model, x).reshape(-1)
        err = float(np.max(np.abs(got - ref)))
        print(f"{d}: loaded by kvpress KVzapModel ({kind}, {loaded_dtype}, config.kvzap="
              f"{getattr(model.config, 'kvzap', None)}); max |y - fixture| = {err:.3g}")
        ok &= err <= 1e-5
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-export", nargs="+", metavar="DIR")
    args = ap.parse_args()
    if args.check_export:
        sys.exit(0 if check_exports(args.check_export) else 1)
    os.makedirs(OUT, exist_ok=True)
    write_kind("linear", 11)
    write_kind("mlp", 12)


if __name__ == "__main__":
    main()
