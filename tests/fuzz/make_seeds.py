"""make_seeds: writes the seed corpora of the fuzz targets (tests/fuzz/corpus/)
from small files of the repository (tests/fixtures, data/sample, configs),
plus a few generated inputs: a tiny llama GGUF model (F32/F16/Q8_0 tensors,
byte-level tokenizer metadata and a chat template), safetensors index files
for the shards fuzz_safetensors_index provides, kvpress export containers
(fuzz_export_kvpress's input format), chat-render and BPE inputs. Python
standard library only. The oracle datasets and GGUF exports come from the C
helper (fuzz_make_seeds, built with the tests): scripts/fuzz --seeds runs both.

    python3 tests/fuzz/make_seeds.py [CORPUS_DIR]   (default tests/fuzz/corpus)

Every seed written here stays under 64 KiB (larger fixtures are not
copied); fuzz_make_seeds' oracle datasets are under 100 KiB."""
import json
import os
import shutil
import struct
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
MAX_SEED = 64 * 1024


def write(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    assert len(data) < MAX_SEED, (target, name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(out, target, src, name=None):
    path = os.path.join(ROOT, src)
    with open(path, "rb") as f:
        data = f.read()
    write(out, target, name or os.path.basename(src), data)


def read(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        return f.read()


# ---------- GGUF ----------

def gstr(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return gstr(key) + struct.pack("<I", vtype) + payload


def kv_str(key, s):
    return kv(key, 8, gstr(s))


def kv_u32(key, v):
    return kv(key, 4, struct.pack("<I", v))


def kv_f32(key, v):
    return kv(key, 6, struct.pack("<f", v))


def kv_arr_str(key, values):
    return kv(key, 9, struct.pack("<IQ", 8, len(values)) + b"".join(gstr(v) for v in values))


def kv_arr_i32(key, values):
    return kv(key, 9, struct.pack("<IQ", 5, len(values)) + b"".join(struct.pack("<i", v) for v in values))


def byte_level_alphabet():
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def f16(x):
    return struct.pack("<e", x)


def tensor_bytes(ttype, ne):
    n = 1
    for d in ne:
        n *= d
    vals = [((i * 37) % 19 - 9) / 16.0 for i in range(n)]
    if ttype == 0:  # F32
        return b"".join(struct.pack("<f", v) for v in vals)
    if ttype == 1:  # F16
        return b"".join(f16(v) for v in vals)
    if ttype == 8:  # Q8_0: blocks of 32 = f16 scale + 32 int8
        assert n % 32 == 0
        out = b""
        for blk in range(n // 32):
            out += f16(1.0 / 64) + bytes(((i * 7 + blk) % 200 - 100) & 0xFF for i in range(32))
        return out
    raise ValueError(ttype)


def gguf_file(kvs, tensors, align=32):
    """tensors: [(name, ne (GGML order), type)]"""
    infos, blobs, off = b"", [], 0
    for name, ne, ttype in tensors:
        data = tensor_bytes(ttype, ne)
        infos += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        infos += struct.pack("<IQ", ttype, off)
        pad = (-len(data)) % align
        blobs.append(data + b"\0" * pad)
        off += len(data) + pad
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + infos
    head += b"\0" * ((-len(head)) % align)
    return head + b"".join(blobs)


def tiny_llama_gguf(template):
    d, ff, heads, kv_heads, vocab_extra = 32, 64, 4, 2, ["ab", "<|im_start|>", "<|im_end|>"]
    tokens = byte_level_alphabet() + vocab_extra
    vocab = len(tokens)
    kvs = [kv_str("general.architecture", "llama"), kv_str("general.name", "tiny"),
           kv_u32("llama.block_count", 1), kv_u32("llama.context_length", 128),
           kv_u32("llama.embedding_length", d), kv_u32("llama.feed_forward_length", ff),
           kv_u32("llama.attention.head_count", heads), kv_u32("llama.attention.head_count_kv", kv_heads),
           kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5), kv_f32("llama.rope.freq_base", 10000.0),
           kv_str("tokenizer.ggml.model", "gpt2"), kv_str("tokenizer.ggml.pre", "smollm"),
           kv_arr_str("tokenizer.ggml.tokens", tokens), kv_arr_str("tokenizer.ggml.merges", ["a b"]),
           kv_arr_i32("tokenizer.ggml.token_type", [1] * (vocab - 2) + [3, 3]),
           kv_u32("tokenizer.ggml.bos_token_id", vocab - 2), kv_u32("tokenizer.ggml.eos_token_id", vocab - 1),
           kv_str("tokenizer.chat_template", template)]
    hd = d // heads
    tensors = [("token_embd.weight", [d, vocab], 1), ("output_norm.weight", [d], 0),
               ("blk.0.attn_norm.weight", [d], 0), ("blk.0.attn_q.weight", [d, d], 8),
               ("blk.0.attn_k.weight", [d, kv_heads * hd], 0), ("blk.0.attn_v.weight", [d, kv_heads * hd], 1),
               ("blk.0.attn_output.weight", [d, d], 0), ("blk.0.ffn_norm.weight", [d], 0),
               ("blk.0.ffn_gate.weight", [d, ff], 8), ("blk.0.ffn_up.weight", [d, ff], 1),
               ("blk.0.ffn_down.weight", [ff, d], 0)]
    return gguf_file(kvs, tensors)


def tokenizer_only_gguf(pre):
    kvs = [kv_str("general.architecture", "llama"), kv_str("tokenizer.ggml.model", "gpt2"),
           kv_str("tokenizer.ggml.pre", pre), kv_arr_str("tokenizer.ggml.tokens", byte_level_alphabet() + ["ab"]),
           kv_arr_str("tokenizer.ggml.merges", ["a b"])]
    return gguf_file(kvs, [])


# ---------- the targets ----------

def templates():
    out = {}
    for fam in ["chatml-smollm2", "qwen2", "qwen3", "llama3", "llama3.1"]:
        out[fam] = json.loads(read("tests/fixtures/templates/%s.json" % fam))["template"]
    return out


def main(argv):
    out = os.path.abspath(argv[1]) if len(argv) > 1 else os.path.join(ROOT, "tests", "fuzz", "corpus")
    tmpl = templates()

    # gguf
    copy(out, "gguf", "tests/fixtures/gguf/all_types.gguf")
    write(out, "gguf", "tiny_llama.gguf", tiny_llama_gguf(tmpl["chatml-smollm2"]))
    for pre in ["smollm", "llama-bpe", "qwen2"]:
        write(out, "gguf", "tokenizer_%s.gguf" % pre, tokenizer_only_gguf(pre))
    exports = os.path.join(out, "export_gguf")  # written by fuzz_make_seeds
    for name in sorted(os.listdir(exports)) if os.path.isdir(exports) else []:
        copy(out, "gguf", os.path.join(exports, name), "export_" + name)

    # safetensors (single files)
    for name in ["linear_bf16", "linear_f32", "mlp_bf16", "mlp_f32"]:
        copy(out, "safetensors", "tests/fixtures/export/%s/model.safetensors" % name, name + ".safetensors")
    copy(out, "safetensors", "tests/fixtures/tiny/mistral_sharded/model-00005-of-00005.safetensors",
         "mistral_shard5.safetensors")

    # safetensors index: shard 1 = linear_f32 tensors, shard 2 = mlp_bf16 tensors
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    lin = ["layers.%d.%s" % (i, p) for i in range(3) for p in ("weight", "bias")]
    mlp = ["layers.%d.%d.%s" % (i, k, p) for i in range(3) for k in (0, 2) for p in ("weight", "bias")]
    both = {"metadata": {"total_size": 1792}, "weight_map": dict([(n, s1) for n in lin] + [(n, s2) for n in mlp])}
    write(out, "safetensors_index", "two_shards.json", json.dumps(both, indent=2))
    write(out, "safetensors_index", "one_shard.json", json.dumps({"weight_map": {n: s1 for n in lin}}))
    write(out, "safetensors_index", "subset.json",
          json.dumps({"metadata": {}, "weight_map": {"layers.0.weight": s1, "layers.0.0.bias": s2}}))
    copy(out, "safetensors_index", "tests/fixtures/tiny/mistral_sharded/model.safetensors.index.json",
         "mistral_missing_shards.json")

    # tokenizer.json
    copy(out, "tokenizer_json", "tests/fixtures/tokenizer/synthetic/tokenizer.json", "synthetic.json")
    copy(out, "tokenizer_json", "tests/fixtures/tokenizer/synthetic/tokenizer_string_merges.json",
         "string_merges.json")
    copy(out, "tokenizer_json", "tests/fixtures/tiny/llama3_f32/tokenizer.json", "llama3.json")
    copy(out, "tokenizer_json", "tests/fixtures/tiny/qwen3_f16/tokenizer.json", "qwen3.json")

    # bpe: byte 0 picks the tokenizer (bits 0-1) and add_special (bit 7)
    texts = ["Hello world! It's 2024.", "  leading\n\n\ttabs   and 12345 digits ab abab",
             "caf\u00e9 cafe\u0301 \u4e2d\u6587 \U0001F600 \u2028",
             "<|im_start|>user\nHi<|im_end|>\n<|endoftext|><s></s>",
             "def f(x):\n    return x ** 2  # comment\n"]
    for i, t in enumerate(texts):
        for sel in range(4):
            write(out, "bpe", "text%d_tok%d" % (i, sel), bytes([sel | (0x80 if i % 2 else 0)]) + t.encode())
    write(out, "bpe", "invalid_utf8", b"\x01ab\xc3(\xff\xfe")

    # chat templates: template text and tokenizer_config.json files
    for fam, text in tmpl.items():
        write(out, "chat_template", fam + ".jinja", text)
    copy(out, "chat_template", "tests/fixtures/tiny/llama3_f32/tokenizer_config.json",
         "llama3_tokenizer_config.json")
    copy(out, "chat_template", "tests/fixtures/tiny/qwen3_f16/tokenizer_config.json",
         "qwen3_tokenizer_config.json")
    write(out, "chat_template", "named_list.json",
          json.dumps({"chat_template": [{"name": "tool_use", "template": "x"},
                                        {"name": "default", "template": tmpl["qwen2"]}]}))

    # chat render: family/options byte, roles byte, NUL-separated contents
    convs = [(0, 0b100100, ["Hi", "Hello!", "Bye"]),
             (1 | 0x08, 0b10010000, ["You are terse.", "  strip me \n", "ok"]),
             (2 | 0x08 | 0x10, 0b011001, ["<think>\nplan\n</think>\n\nDone.", "Next?", "Sure"]),
             (3, 0b100100, ["caf\u00e9\u2003", "\u00a0x\u3000"]),
             (4 | 0x20 | 0x08, 0b0110, ["01 Jan 2025", "sys", "user text"]),
             (2, 0b11100100, ["s", "u", "a", "tool"])]
    for i, (b0, b1, msgs) in enumerate(convs):
        write(out, "chat_render", "conv%d" % i, bytes([b0, b1]) + b"\0".join(m.encode() for m in msgs))

    # YAML run configs
    for name in ["anchors", "document_marker", "empty_sections", "flow_style", "layers_scalar",
                 "layers_text_list", "quoted_numbers", "tricky_strings", "comments_only"]:
        copy(out, "config", "tests/fixtures/configs/good/%s.yaml" % name)
    for name in ["layers_duplicate", "int_overflow", "duplicate_key", "two_documents", "unknown_nested_key"]:
        copy(out, "config", "tests/fixtures/configs/bad/%s.yaml" % name, "bad_" + name + ".yaml")
    copy(out, "config", "configs/full.yaml")
    copy(out, "config", "configs/train/default.yaml", "train_default.yaml")
    copy(out, "config", "configs/oracle/smollm2-sample.yaml")

    # corpus readers
    for name in ["code", "dialogue", "math", "multilingual", "prose"]:
        lines = read("data/sample/corpus/%s.jsonl" % name).decode().splitlines()[:2]
        write(out, "corpus_jsonl", name + ".jsonl", "\n".join(lines) + "\n")
    write(out, "corpus_jsonl", "subsets.jsonl",
          '{"text": "one two", "subset": "a"}\n\n{"text": " three ", "subset": "b"}\n'
          '{"text": "caf\\u00e9 \\ud83d\\ude00", "subset": "a", "extra": [1, {"x": null}]}\n'
          '{"text": "no subset"}\n{"text": "last line without newline", "subset": "b"}')
    copy(out, "corpus_text", "data/sample/kv-cache-notes.txt")
    copy(out, "corpus_text", "tests/fixtures/oracle_chunked/document.txt")
    write(out, "corpus_text", "short.txt", "  Hello world.\n\n")
    write(out, "corpus_text", "unicode.txt", "\u2003caf\u00e9 \u4e2d\u6587\n\U0001F600\u2029")

    # model config.json
    for name in ["llama3_f32", "mistral_sharded", "qwen2_bf16", "qwen3_f16"]:
        copy(out, "model_config", "tests/fixtures/tiny/%s/config.json" % name, name + ".json")

    # kvpress exports: u16 LE length of config.json, config.json, model.safetensors
    for name in ["linear_bf16", "linear_f32", "mlp_bf16", "mlp_f32"]:
        cfg = read("tests/fixtures/export/%s/config.json" % name)
        st = read("tests/fixtures/export/%s/model.safetensors" % name)
        write(out, "export_kvpress", name + ".bin", struct.pack("<H", len(cfg)) + cfg + st)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
