#!/usr/bin/env python3
"""make_oracle_fixtures.py: parity fixtures of the single-pass KVzip+ oracle
(spec section 1) for tests/test_oracle_parity.c, from oracle_reference.py.

Run from the repository root (PyPI packages: torch, transformers>=5,
tokenizers, numpy, gguf; about a minute on 2 cores):
    /root/.cache/kvzap/refenv/bin/python tests/reference/make_oracle_fixtures.py

Step 1 (skip with --keep-tokenizers): the tiny random checkpoints
tests/fixtures/tiny/{qwen3_f16,llama3_f32} (vocab 512) get a small byte-level
BPE tokenizer trained with `tokenizers` on the documents below: 512 tokens in
all (256 byte symbols, the family's special tokens first, then merges), the
normalizer / pre-tokenizer / post-processor / decoder JSON of the real
tokenizer of the family (~/.cache/kvzap/tokenizers/{qwen3,llama3}; the Llama
post-processor's BOS id renumbered), added-token flags as in the real one
(Qwen3's <think> and </think> are not special). tokenizer_config.json keeps
the real settings (bos/eos/pad, add_bos_token) with tokenizer_class
PreTrainedTokenizerFast; chat_template: Qwen3's real template; for Llama the
Meta-Llama-3-8B-Instruct template (kvzap family "llama3"; the Llama-3.2
template in the cache is date dependent), the same text
make_template_fixtures.py pins.

Step 2: per model, per document: oracle_reference.repeat_prompt and
score_document (mode "exact": fp32 model, float64 log-domain scores).
Writes tests/fixtures/oracle/<model>.json + <model>.bin (raw little-endian
arrays; the index gives offset in bytes, dtype f32/i32 and shape):
  <doc>.ids [T] i32               the tokenized repeat prompt
  <doc>.log_scores [L, |P|, Hkv]  y for EVERY context position, float32
  <doc>.x_layers [k] i32          layers whose hidden states are stored
  <doc>.x_pos [m] i32             absolute positions (in P, evenly spread)
  <doc>.x [k, m, D] f32           attention input x at those layers/positions
and in "docs": name, kind, text (the raw document, before strip), rendered
(the chat-template rendering), context [p0, p1], repeat [r0, r1].
Models: smollm2 (the real SmolLM2-135M-Instruct Q4_1 GGUF dequantized to
fp32, real tokenizer rebuilt from the GGUF, its own chatml template; x at
layers 0, 1, 14, 29 and 16 positions to stay small), qwen3_f16, llama3_f32
(tiny; x at every layer, 24 positions; documents cut at line ends so the
whole repeat prompt stays under the 512-token context).
"""
import copy
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "fixtures", "oracle")
TINY = os.path.join(ROOT, "fixtures", "tiny")
ASSETS = os.environ.get("KVZ_ASSETS", os.path.expanduser("~/.cache/kvzap"))
GGUF = os.path.join(ASSETS, "SmolLM2-135M-Instruct.Q4_1.gguf")
sys.path.insert(0, HERE)

import oracle_reference as ref  # noqa: E402

DOCS = [
    ("prose", "prose",
     "  The night train to the coast left at eleven, and Mira was the only passenger in the last carriage.\n"
     "She had packed a thermos of tea, a paperback with a cracked spine and a letter she had not yet opened. "
     "Outside, the suburbs thinned into fields, the fields into dark woods, and every few minutes a level "
     "crossing flashed red and vanished behind her.\n\n"
     "At the third station a conductor with a grey moustache stepped in, punched her ticket twice by "
     "mistake and apologised at length. He told her the line had been closed for nine years, reopened "
     "last spring, and that on clear nights you could see the lighthouse from the viaduct. She thanked "
     "him, waited until his footsteps faded, and finally tore the envelope open.\n"),
    ("code", "code",
     "#include <stdio.h>\n#include <stdlib.h>\n\n"
     "/* Counts how often each byte value occurs in a file. */\n"
     "int main(int argc, char **argv)\n{\n"
     "    if (argc != 2) {\n        fprintf(stderr, \"usage: %s FILE\\n\", argv[0]);\n        return 2;\n    }\n"
     "    FILE *fp = fopen(argv[1], \"rb\");\n    if (!fp) {\n        perror(argv[1]);\n        return 1;\n    }\n"
     "    size_t counts[256] = {0};\n    int c;\n    while ((c = fgetc(fp)) != EOF)\n        counts[c]++;\n"
     "    fclose(fp);\n    for (int b = 0; b < 256; b++)\n        if (counts[b])\n"
     "            printf(\"%3d %zu\\n\", b, counts[b]);\n    return 0;\n}\n"),
    ("german", "non-English",
     "Am Rand des kleinen Dorfes stand eine alte Mühle, deren Flügel sich seit Jahrzehnten nicht mehr "
     "gedreht hatten. Die Kinder erzählten sich, dass dort nachts ein Müller mit weißem Bart umgehe und "
     "Mehl über die Schwelle streue.\n"
     "Als im Frühjahr eine Studentin aus Köln kam, um die Mühle für ihre Abschlussarbeit zu vermessen, "
     "fand sie statt eines Gespensts nur Schwalbennester, rostige Zahnräder und eine Kiste voller Briefe "
     "aus dem Jahr 1923. Sie übersetzte sie in einem Café am Marktplatz, Wort für Wort, und las sie "
     "abends den Großeltern vor, die sich an jeden Namen erinnerten.\n"),
    ("math", "math",
     "Claim: for every integer n >= 1, the sum 1 + 3 + 5 + ... + (2n - 1) equals n^2.\n\n"
     "Proof by induction. For n = 1 the sum is 1 = 1^2. Assume the claim holds for some n, so that "
     "1 + 3 + ... + (2n - 1) = n^2. Adding the next odd number 2n + 1 to both sides gives "
     "n^2 + 2n + 1 = (n + 1)^2, which is the claim for n + 1.\n\n"
     "Example: with n = 7 we get 1 + 3 + 5 + 7 + 9 + 11 + 13 = 49 = 7^2. Geometrically, each odd "
     "number adds an L-shaped border of 2n + 1 unit squares to an n x n square, turning it into an "
     "(n + 1) x (n + 1) square. \u2200 n \u2208 \u2115: \u03a3 (2k \u2212 1) = n\u00b2.\n"),
]

SPECIALS = {
    "qwen3": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
    "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
               "<|eot_id|>"],
}
TINY_DIRS = {"qwen3": "qwen3_f16", "llama3": "llama3_f32"}
VOCAB = 512
TINY_LIMIT = 500  # repeat prompt tokens (context 512)


# ---------------------------------------------------------------- tokenizers
def train_tiny_tokenizer(family):
    """Trains the 512-token BPE; returns the tokenizer.json dict."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    real = json.load(open(os.path.join(ASSETS, "tokenizers", family, "tokenizer.json"), encoding="utf-8"))
    real_tk = Tokenizer.from_str(json.dumps(real))
    tk = Tokenizer(models.BPE())
    tk.normalizer = real_tk.normalizer
    tk.pre_tokenizer = real_tk.pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS[family], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [d[2] for d in DOCS] * 3 + [ref.INSTRUCTION, "user assistant system"]
    tk.train_from_iterator(corpus, trainer=trainer)
    out = json.loads(tk.to_str())
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        out[key] = copy.deepcopy(real[key])
    for k, v in real["model"].items():  # the real model flags (ignore_merges, prefixes, ...)
        if k not in ("vocab", "merges"):
            out["model"][k] = v
    flags = {a["content"]: a for a in real["added_tokens"]}
    ids = {a["content"]: a["id"] for a in out["added_tokens"]}
    for a in out["added_tokens"]:
        a.update({k: v for k, v in flags[a["content"]].items() if k != "id"})
    renumber_post_processor(out["post_processor"], ids)
    n = len(out["model"]["vocab"]) + sum(1 for a in out["added_tokens"] if a["content"] not in out["model"]["vocab"])
    assert n <= VOCAB, n
    return out


def renumber_post_processor(p, ids):
    if not p:
        return
    if p.get("type") == "Sequence":
        for q in p["processors"]:
            renumber_post_processor(q, ids)
    if p.get("type") == "TemplateProcessing":
        for name, st in p["special_tokens"].items():
            st["ids"] = [ids[t] for t in st["tokens"]]


def tiny_tokenizer_config(family, tj):
    from make_template_fixtures import LLAMA3_TEMPLATE as llama3_template
    real = json.load(open(os.path.join(ASSETS, "tokenizers", family, "tokenizer_config.json"), encoding="utf-8"))
    cfg = {k: v for k, v in real.items() if k not in ("added_tokens_decoder", "additional_special_tokens")}
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["model_max_length"] = 512
    if cfg.get("pad_token") not in SPECIALS[family]:  # Llama's <|finetune_right_pad_id|>
        cfg["pad_token"] = "<|end_of_text|>"
    cfg["added_tokens_decoder"] = {str(a["id"]): {k: v for k, v in a.items() if k != "id"}
                                   for a in tj["added_tokens"]}
    if family == "qwen3":
        cfg["additional_special_tokens"] = ["<|im_start|>", "<|im_end|>"]
        cfg["chat_template"] = real["chat_template"]
    else:
        cfg["chat_template"] = llama3_template
    return cfg


def write_tiny_tokenizers():
    for family, d in TINY_DIRS.items():
        tj = train_tiny_tokenizer(family)
        cfg = tiny_tokenizer_config(family, tj)
        path = os.path.join(TINY, d)
        with open(os.path.join(path, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False, indent=1)
        with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=1)
        print(d, "tokenizer:", len(tj["model"]["vocab"]), "vocab entries,", len(tj["model"]["merges"]), "merges")


# ---------------------------------------------------------------- fixtures
class Bin:
    """Arrays into one blob + JSON index (as make_forward_fixtures.py)."""

    def __init__(self):
        self.chunks, self.offset, self.index = [], 0, {}

    def add(self, name, arr):
        if arr.dtype.kind in "iu":
            a, dt = np.ascontiguousarray(arr, dtype="<i4"), "i32"
        else:
            a, dt = np.ascontiguousarray(arr, dtype="<f4"), "f32"
        self.index[name] = {"offset": self.offset, "dtype": dt, "shape": list(a.shape)}
        self.chunks.append(a.tobytes())
        self.offset += len(self.chunks[-1])

    def write(self, name, meta):
        os.makedirs(OUT, exist_ok=True)
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            for c in self.chunks:
                f.write(c)
        meta["arrays"] = self.index
        with open(os.path.join(OUT, name + ".json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False, indent=1)
        print(name, self.offset, "bytes")


def spread_in(p0, p1, m):
    """m positions of [p0, p1), first and last included, evenly spread."""
    n = p1 - p0
    if n <= m:
        return list(range(p0, p1))
    return sorted(set(p0 + int(round(i * (n - 1) / (m - 1))) for i in range(m)))


def fit_document(tok, template, text, limit):
    """Drops trailing lines (then words) until the repeat prompt has < limit tokens."""
    while True:
        rp = ref.repeat_prompt(tok, text, template)
        if len(rp["ids"]) < limit:
            return text
        cut = text.rstrip().rfind("\n")
        text = text[:cut] if cut > len(text) // 2 else text.rstrip().rsplit(" ", 1)[0]


def build(name, model, tok, template, x_layers, n_x, limit=None):
    cfg = model.config
    meta = {"model": name, "n_layers": cfg.num_hidden_layers, "d_model": cfg.hidden_size,
            "n_heads": cfg.num_attention_heads, "n_kv_heads": cfg.num_key_value_heads,
            "transformers": __import__("transformers").__version__,
            "scores": "exact: fp32 model q/k/v/x, float64 log-domain log_softmax over the causal row",
            "hidden": "x_layers x x_pos subset of the attention inputs", "docs": []}
    b = Bin()
    x_layers = x_layers or list(range(cfg.num_hidden_layers))
    for dname, kind, text in DOCS:
        if limit:
            text = fit_document(tok, template, text, limit)
        rp = ref.repeat_prompt(tok, text, template)
        y, xs = ref.score_document(model, rp["ids"], rp["P"], rp["R"])
        assert np.isfinite(y).all(), dname
        xp = spread_in(rp["P"][0], rp["P"][1], n_x)
        b.add(dname + ".ids", np.array(rp["ids"], np.int32))
        b.add(dname + ".log_scores", y)
        b.add(dname + ".x_layers", np.array(x_layers, np.int32))
        b.add(dname + ".x_pos", np.array(xp, np.int32))
        b.add(dname + ".x", torch.stack([xs[li][xp] for li in x_layers]).numpy())
        meta["docs"].append({"name": dname, "kind": kind, "text": text, "rendered": rp["rendered"],
                             "n_tokens": len(rp["ids"]), "context": list(rp["P"]), "repeat": list(rp["R"])})
        print(name, dname, "T", len(rp["ids"]), "P", rp["P"], "R", rp["R"],
              "y in [%.2f, %.2f]" % (y.min(), y.max()))
    b.write(name, meta)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    from transformers import AutoTokenizer
    if "--keep-tokenizers" not in sys.argv:
        write_tiny_tokenizers()
    for d in TINY_DIRS.values():
        path = os.path.join(TINY, d)
        tok = AutoTokenizer.from_pretrained(path)
        build(d, ref.load_model(path), tok, None, None, 24, TINY_LIMIT)
    if "--tiny-only" not in sys.argv:
        tok, template = ref.load_tokenizer(GGUF)
        build("smollm2", ref.load_model(GGUF), tok, template, [0, 1, 14, 29], 16)


if __name__ == "__main__":
    main()
