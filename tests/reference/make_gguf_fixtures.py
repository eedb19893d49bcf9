"""Reference fixtures for the GGUF reader and dequantization (tests/test_gguf*.c,
tests/test_dequant*.c).

Writes into tests/fixtures/gguf/:
  all_types.gguf      a small GGUF v3 file (general.alignment 64) with metadata of
                      every value type (scalars, arrays of every element type incl.
                      strings, unicode, empty strings, min/max integers, u64 max)
                      and tensors of every supported ggml type (F32 F16 BF16 Q8_0
                      Q4_0 Q4_1 Q4_K Q6_K) with awkward 1-D..4-D shapes, plus one
                      Q5_K tensor (valid, but not dequantizable by kvzap).
  all_types.json      expected metadata (type names; integers as decimal strings,
                      floats as IEEE bit patterns in hex) and, per tensor, GGML
                      shape, type, data offset, and the element offset of its
                      expected values in all_types.f32.
  all_types.f32       expected dequantized values, little-endian float32,
                      computed by gguf.quants.dequantize (gguf-py) from the bytes
                      in all_types.gguf.
  default_model.json  facts about the real default model
                      (SmolLM2-135M-Instruct.Q4_1.gguf): metadata, tensor count
                      and per-type counts, and for a few tensors the first 16 and
                      last 16 dequantized values (float32 bit patterns) and their
                      float64 sum, all from gguf-py.

Run (needs PyPI packages gguf and numpy; the project refenv has them):
  /root/.cache/kvzap/refenv/bin/python tests/reference/make_gguf_fixtures.py \
      [~/.cache/kvzap/SmolLM2-135M-Instruct.Q4_1.gguf]
"""

import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "gguf"
RNG = np.random.default_rng(20240607)


def f32_bits(x):
    return "0x%08x" % struct.unpack("<I", struct.pack("<f", x))[0]


def f64_bits(x):
    return "0x%016x" % struct.unpack("<Q", struct.pack("<d", x))[0]


# ---------------------------------------------------------------- metadata

SCALARS = [
    ("test.u8", V.UINT8, 255),
    ("test.i8", V.INT8, -128),
    ("test.u16", V.UINT16, 65535),
    ("test.i16", V.INT16, -32768),
    ("test.u32", V.UINT32, 4294967295),
    ("test.i32", V.INT32, -2147483648),
    ("test.f32", V.FLOAT32, 0.1),
    ("test.f32_neg", V.FLOAT32, -1.5e-38),
    ("test.bool_true", V.BOOL, True),
    ("test.bool_false", V.BOOL, False),
    ("test.string", V.STRING, "hello"),
    ("test.string_empty", V.STRING, ""),
    ("test.string_unicode", V.STRING, "h\u00e9llo \u2713 \u65e5\u672c\u8a9e \U0001f999"),
    ("test.string_escapes", V.STRING, 'line1\nline2\t"quoted" \\ end'),
    ("test.string_long", V.STRING, "0123456789abcdef" * 20),
    ("test.u64", V.UINT64, 2**64 - 1),
    ("test.i64", V.INT64, -(2**63)),
    ("test.i64_pos", V.INT64, 2**63 - 1),
    ("test.f64", V.FLOAT64, 3.141592653589793),
    ("test.f64_tiny", V.FLOAT64, -1e-300),
]

ARRAYS = [
    ("arr.u8", V.UINT8, [0, 1, 255]),
    ("arr.i8", V.INT8, [-128, 0, 127]),
    ("arr.u16", V.UINT16, [0, 65535]),
    ("arr.i16", V.INT16, [-32768, 32767, -1]),
    ("arr.u32", V.UINT32, [4294967295, 7]),
    ("arr.i32", V.INT32, [-1, 2, -3, 2147483647]),
    ("arr.f32", V.FLOAT32, [0.5, -1.25, 1e-8, 3.4e38]),
    ("arr.bool", V.BOOL, [True, False, True]),
    ("arr.string", V.STRING, ["a", "", "\u00fcn\u00ef", "\U0001f999 llama", "x" * 100]),
    ("arr.u64", V.UINT64, [0, 2**64 - 1]),
    ("arr.i64", V.INT64, [-(2**63), 2**63 - 1, -5]),
    ("arr.f64", V.FLOAT64, [2.5, -0.0, 1e300]),
    ("arr.long_i32", V.INT32, list(range(-50, 50))),
]


def expected_value(vtype, v):
    if vtype in (V.UINT8, V.INT8, V.UINT16, V.INT16, V.UINT32, V.INT32, V.UINT64, V.INT64):
        return str(int(v))
    if vtype == V.FLOAT32:
        return f32_bits(v)
    if vtype == V.FLOAT64:
        return f64_bits(v)
    if vtype == V.BOOL:
        return bool(v)
    return v  # string


def add_metadata(w, meta):
    for key, vtype, v in SCALARS:
        w.add_key_value(key, v, vtype)
        meta[key] = {"type": vtype.name.lower(), "value": expected_value(vtype, v)}
    for key, etype, vals in ARRAYS:
        w.add_key_value(key, vals, V.ARRAY, sub_type=etype)
        meta[key] = {"type": "array", "elem_type": etype.name.lower(),
                     "values": [expected_value(etype, v) for v in vals]}


# ---------------------------------------------------------------- tensors

def f16_with_specials(shape):
    x = RNG.standard_normal(shape).astype(np.float16)
    flat = x.reshape(-1)
    specials = [np.inf, -np.inf, np.nan, 0.0, -0.0, 65504.0, -65504.0,
                6.0e-8, -6.0e-8, 6.1e-5, 1.0e-7]
    flat[: len(specials)] = np.array(specials, dtype=np.float16)
    return x


def bf16_bytes(shape):
    x = (RNG.standard_normal(shape) * 100).astype(np.float32)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)
    flat = bits.reshape(-1)
    flat[:6] = [0x7F80, 0xFF80, 0x7FC1, 0x8000, 0x0001, 0x7F7F]  # inf,-inf,nan,-0,denorm,max
    return bits.view(np.uint8).reshape(*shape[:-1], shape[-1] * 2)


def random_blocks(qtype, n_rows, row_len, f16_fields):
    """Random bytes for qtype blocks, with the fp16 scale fields (byte offsets in
    f16_fields) set to finite random values so no block decodes to inf/NaN."""
    block, tsize = gguf.GGML_QUANT_SIZES[qtype]
    nb = n_rows * row_len // block
    raw = RNG.integers(0, 256, size=(nb, tsize), dtype=np.uint8)
    for off in f16_fields:
        d = (RNG.random(nb) * 0.02 + 1e-3).astype(np.float16)
        d[::3] *= -1
        raw[:, off:off + 2] = d.view(np.uint8).reshape(nb, 2)
    return raw.reshape(n_rows, row_len // block * tsize)


def quantized(qtype, shape):
    x = RNG.standard_normal(shape).astype(np.float32)
    return gguf.quants.quantize(x, qtype)


def tensor_list():
    """(name, array, raw_dtype) in file order; numpy shape = reversed GGML ne."""
    return [
        ("f32.vec7", RNG.standard_normal(7).astype(np.float32), None),
        ("f32.3d", RNG.standard_normal((2, 3, 5)).astype(np.float32), None),
        ("f16.5x33", f16_with_specials((5, 33)), None),
        ("f16.4d", RNG.standard_normal((2, 1, 3, 2)).astype(np.float16), None),
        ("bf16.3x17", bf16_bytes((3, 17)), Q.BF16),
        ("q8_0.5x64", quantized(Q.Q8_0, (5, 64)), Q.Q8_0),
        ("q8_0.random", random_blocks(Q.Q8_0, 3, 32, [0]), Q.Q8_0),
        ("q4_0.3x96", quantized(Q.Q4_0, (3, 96)), Q.Q4_0),
        ("q4_0.random", random_blocks(Q.Q4_0, 2, 64, [0]), Q.Q4_0),
        ("q4_1.5x32", quantized(Q.Q4_1, (5, 32)), Q.Q4_1),
        ("q4_1.random", random_blocks(Q.Q4_1, 3, 32, [0, 2]), Q.Q4_1),
        ("q4_1.4d", quantized(Q.Q4_1, (2, 1, 3, 32)), Q.Q4_1),
        ("q4_k.3x256", random_blocks(Q.Q4_K, 3, 256, [0, 2]), Q.Q4_K),
        ("q4_k.1x512", random_blocks(Q.Q4_K, 1, 512, [0, 2]), Q.Q4_K),
        ("q6_k.2x512", random_blocks(Q.Q6_K, 2, 512, [208]), Q.Q6_K),
        ("q6_k.3x256", random_blocks(Q.Q6_K, 3, 256, [208]), Q.Q6_K),
        ("q5_k.unsupported", random_blocks(Q.Q5_K, 1, 256, [0, 2]), Q.Q5_K),
    ]


def write_all_types():
    path = OUT / "all_types.gguf"
    w = gguf.GGUFWriter(str(path), "kvztest")
    w.add_custom_alignment(64)
    meta = {}
    add_metadata(w, meta)
    for name, arr, raw in tensor_list():
        w.add_tensor(name, arr, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # general.architecture / general.alignment were added by the writer
    meta["general.architecture"] = {"type": "string", "value": "kvztest"}
    meta["general.alignment"] = {"type": "uint32", "value": "64"}
    return path, meta


def reference_dequant(t):
    raw = np.asarray(t.data).view(np.uint8).reshape(-1)
    qtype = Q(t.tensor_type)
    block, tsize = gguf.GGML_QUANT_SIZES[qtype]
    row_len = int(t.shape[0])  # GGUFReader shape is GGML order
    rows = raw.reshape(-1, row_len // block * tsize)
    return gguf.quants.dequantize(rows, qtype).astype(np.float32).reshape(-1)


def describe_tensors(path):
    r = gguf.GGUFReader(str(path))
    tensors, values = [], []
    n = 0
    for t in r.tensors:
        entry = {"name": t.name, "ne": [int(x) for x in t.shape], "type": Q(t.tensor_type).name,
                 "type_id": int(t.tensor_type), "offset": int(t.data_offset - r.data_offset),
                 "nbytes": int(t.n_bytes), "numel": int(t.n_elements)}
        if Q(t.tensor_type) != Q.Q5_K:
            v = reference_dequant(t)
            assert v.size == t.n_elements
            entry["values_at"] = n
            values.append(v)
            n += v.size
        tensors.append(entry)
    return r, tensors, np.concatenate(values).astype("<f4")


def main_all_types():
    OUT.mkdir(parents=True, exist_ok=True)
    path, meta = write_all_types()
    r, tensors, values = describe_tensors(path)
    values.tofile(OUT / "all_types.f32")
    doc = {"version": 3, "alignment": 64, "data_offset": int(r.data_offset),
           "n_kv": len(meta), "metadata": meta, "tensors": tensors,
           "values_file": "all_types.f32", "n_values": int(values.size)}
    (OUT / "all_types.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"{path}: {path.stat().st_size} bytes, {len(tensors)} tensors, {values.size} values")


# ---------------------------------------------------------------- real model

MODEL_TENSORS = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
                 "blk.29.ffn_down.weight", "blk.0.attn_norm.weight", "output_norm.weight"]
MODEL_KEYS = {"general.architecture": "llama", "llama.block_count": 30,
              "llama.embedding_length": 576, "llama.attention.head_count": 9,
              "llama.attention.head_count_kv": 3}


def main_default_model(model):
    r = gguf.GGUFReader(str(model))
    by_type = {}
    for t in r.tensors:
        by_type[Q(t.tensor_type).name] = by_type.get(Q(t.tensor_type).name, 0) + 1
    keys = {}
    for k, expect in MODEL_KEYS.items():
        f = r.fields[k]
        v = f.contents()
        assert v == expect, (k, v)
        keys[k] = v
    samples = {}
    for name in MODEL_TENSORS:
        t = next(t for t in r.tensors if t.name == name)
        v = reference_dequant(t)
        samples[name] = {"type": Q(t.tensor_type).name, "ne": [int(x) for x in t.shape],
                         "first16": [f32_bits(x) for x in v[:16]],
                         "last16": [f32_bits(x) for x in v[-16:]],
                         "sum": float(np.sum(v, dtype=np.float64))}
    doc = {"file": os.path.basename(str(model)), "version": int(r.fields["GGUF.version"].contents()),
           "n_tensors": len(r.tensors), "n_kv": len(r.fields) - 3,
           "data_offset": int(r.data_offset), "tensor_types": by_type,
           "metadata": keys, "n_vocab_tokens": len(r.fields["tokenizer.ggml.tokens"].data),
           "samples": samples}
    (OUT / "default_model.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{model}: {len(r.tensors)} tensors {by_type}")


if __name__ == "__main__":
    main_all_types()
    default = Path.home() / ".cache" / "kvzap" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    main_default_model(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
