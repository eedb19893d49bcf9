#!/usr/bin/env python3
"""make_forward_fixtures.py: reference activations of the fp32 forward pass for
tests/test_forward_parity*.c and tests/test_generate_smollm2.c.

Run (PyPI packages: torch, transformers>=5, accelerate, safetensors, gguf,
tokenizers, numpy):
    /root/.cache/kvzap/refenv/bin/python tests/reference/make_forward_fixtures.py

Reference: transformers in fp32, attn_implementation="eager", inference_mode.
Models:
  smollm2   ~/.cache/kvzap/SmolLM2-135M-Instruct.Q4_1.gguf (transformers GGUF
            loader, dequantized to fp32). Prompts are tokenized with the real
            SmolLM2 tokenizer rebuilt from the GGUF (make_tokenizer_fixtures.py
            explains why not transformers' GGUF tokenizer conversion); the chat
            prompts use the GGUF's own chat template via apply_chat_template.
  llama3_f32, qwen2_bf16, qwen3_f16, mistral_sharded: tests/fixtures/tiny/
            (no tokenizer, vocab 512, context 512): random ids, fixed seed.
Writes tests/fixtures/forward/<model>.json (index) + <model>.bin (raw
little-endian float32 / int32 arrays; the index gives offset in bytes, dtype
and shape of each array). Per prompt p:
  p.ids [T] i32; p.argmax [T] i32; p.lse [T] f32 (logsumexp of each row);
  p.logit_pos [n] i32 + p.logits [n, V] f32 (full rows at those positions);
  p.x_pos [m] i32 + p.x [L, m, D] f32 (input_layernorm output, every layer);
  for the first prompt, layers 0 and L-1: p.q{l} [T,H,dh] after q_norm+RoPE,
  p.k{l} [T,Hkv,dh] after k_norm+RoPE, p.v{l} [T,Hkv,dh].
smollm2 also: gen{i}.prompt_ids, gen{i}.generated (greedy, 40 new tokens, no
end of sequence among them);
the index holds every prompt's text ("text") so the C test can re-tokenize it,
and for the long prompt the document ("repeat_of") it is the KVzip repeat
prompt of (spec section 1.1).
"""
import json
import os
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "fixtures", "forward")
TINY = os.path.join(ROOT, "fixtures", "tiny")
ASSETS = os.environ.get("KVZ_ASSETS", os.path.expanduser("~/.cache/kvzap"))
GGUF = os.path.join(ASSETS, "SmolLM2-135M-Instruct.Q4_1.gguf")
sys.path.insert(0, HERE)

PROSE = "The old lighthouse keeper climbed the stairs every evening, counting 117 steps."
CODE = ("def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
        "    return a\n\nprint([fib(i) for i in range(10)])\n")
CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
GEN_CHATS = [
    [{"role": "user", "content": "Describe the city of Paris to a tourist."}],
    [{"role": "user", "content": "Write a short poem about the sea."}],
    [{"role": "user", "content": "Explain in two sentences why the sky is blue."}],
]
LONG_PARAGRAPHS = [
    "The history of the river town began with a ferry. Long before the bridge, travellers waited on "
    "the muddy bank while a single flat boat crossed back and forth, pulled along a rope that the "
    "ferryman greased every spring. Merchants complained about the delays, farmers about the fees, "
    "and children about nothing at all, because the crossing was the most exciting part of any trip.",
    "In 1843 the town council voted to build a bridge of stone. The vote was close: seven in favour, "
    "six against, and one member who abstained because his cousin owned the ferry. Work started in "
    "April and stopped in June, when the spring floods washed away the first pier and most of the "
    "scaffolding. The engineer, a patient man from the capital, redrew his plans and moved the piers "
    "further apart so that the water could pass more freely.",
    "The bridge opened three years later. A brass band played, the mayor cut a ribbon that had been "
    "sewn by the schoolchildren, and the ferryman, who had been given a pension and a small garden, "
    "rowed his boat under the new arches one last time while the crowd cheered. Trade doubled within "
    "a decade. A railway station followed, then a post office, a library with four thousand books, "
    "and a market hall where cheese, apples, wool and iron tools were sold every Thursday.",
    "Not everything changed for the better. The mill by the water closed when cheaper flour arrived "
    "by train, and many young people left for the cities in search of work. The population fell from "
    "nine thousand to just over five thousand between 1880 and 1910. Those who stayed learned new "
    "trades: some repaired bicycles and later cars, some opened guest houses for visitors who came to "
    "fish, walk along the river and photograph the famous bridge at sunset.",
    "Today the town is quiet but not asleep. The library has grown to sixty thousand books and a small "
    "room of computers, the market hall hosts concerts in winter, and the bridge, repaired twice and "
    "widened once, still carries traffic across the river. Every summer a festival remembers the "
    "ferry: a replica boat crosses the water on a rope, and for one afternoon the crossing is again "
    "the most exciting part of the trip.",
    "Scientists who study rivers say that the town was lucky. The valley is wide, the banks are made "
    "of firm clay, and the floods, though dangerous, rarely reach the old centre. Measurements taken "
    "since 1901 show that the highest water came in 1927, when the river rose four metres above its "
    "usual level and the lower streets were under water for nine days. A line painted on the wall of "
    "the church marks that height, and children like to stand beside it and look up.",
]
LONG_TEXT = "\n\n".join(LONG_PARAGRAPHS)

FLOAT, INT = "f32", "i32"


class Bin:
    """Accumulates arrays into one binary blob and a JSON index."""

    def __init__(self):
        self.chunks, self.offset, self.index = [], 0, {}

    def add(self, name, arr):
        if arr.dtype.kind in "iu":
            a, dt = np.ascontiguousarray(arr, dtype="<i4"), INT
        else:
            a, dt = np.ascontiguousarray(arr, dtype="<f4"), FLOAT
        self.index[name] = {"offset": self.offset, "dtype": dt, "shape": list(a.shape)}
        b = a.tobytes()
        self.chunks.append(b)
        self.offset += len(b)

    def write(self, name, meta):
        os.makedirs(OUT, exist_ok=True)
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            for c in self.chunks:
                f.write(c)
        meta["arrays"] = self.index
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(meta, f, indent=1)
        print(name, self.offset, "bytes")


def spread(t, n):
    """first, last and n evenly spread positions, sorted, unique."""
    pos = set([0, t - 1])
    pos.update(int(round(i * (t - 1) / (n + 1))) for i in range(1, n + 1))
    return sorted(pos)


def run_prompt(model, ids, x_step, n_logit_spread, with_qkv):
    """Runs ids; returns the dict of arrays for one prompt."""
    cfg = model.config
    layers = model.model.layers
    xs = [None] * len(layers)
    hooks = [layer.input_layernorm.register_forward_hook(
        lambda m, i, o, li=li: xs.__setitem__(li, o[0].detach().clone()))
        for li, layer in enumerate(layers)]
    inp = torch.tensor([ids], dtype=torch.long)
    out = model(input_ids=inp, use_cache=False)
    for h in hooks:
        h.remove()
    logits = out.logits[0].float()
    t = len(ids)
    rec = {"ids": np.array(ids, dtype=np.int32),
           "argmax": logits.argmax(-1).numpy().astype(np.int32),
           "lse": torch.logsumexp(logits.double(), -1).float().numpy()}
    lp = spread(t, n_logit_spread)
    rec["logit_pos"] = np.array(lp, dtype=np.int32)
    rec["logits"] = logits[lp].numpy()
    xp = list(range(0, t, x_step))
    if xp[-1] != t - 1:
        xp.append(t - 1)
    rec["x_pos"] = np.array(xp, dtype=np.int32)
    rec["x"] = torch.stack([x[xp] for x in xs]).numpy()
    if with_qkv:
        pos_ids = torch.arange(t).unsqueeze(0)
        cos, sin = model.model.rotary_emb(xs[0].unsqueeze(0), pos_ids)
        for li in sorted(set([0, len(layers) - 1])):
            q, k, v = qkv_after_rope(layers[li].self_attn, xs[li].unsqueeze(0), cos, sin, cfg)
            rec["q%d" % li], rec["k%d" % li], rec["v%d" % li] = q, k, v
    return rec


def qkv_after_rope(attn, x, cos, sin, cfg):
    """Q, K after (q/k norm and) RoPE and V, as [T, heads, dh], with the
    module's own projections and transformers' apply_rotary_pos_emb."""
    dh = attn.head_dim
    shape = (1, x.shape[1], -1, dh)
    q = attn.q_proj(x).view(shape)
    k = attn.k_proj(x).view(shape)
    v = attn.v_proj(x).view(shape)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return (q.transpose(1, 2)[0].numpy(), k.transpose(1, 2)[0].numpy(), v[0].numpy())


def add_prompt(b, meta, name, rec, text=None):
    for key, arr in rec.items():
        b.add(name + "." + key, arr)
    entry = {"name": name, "n_tokens": int(len(rec["ids"]))}
    if text is not None:
        entry["text"] = text
    meta["prompts"].append(entry)


def model_meta(model, source):
    c = model.config
    return {"source": source, "n_layers": c.num_hidden_layers, "d_model": c.hidden_size,
            "n_heads": c.num_attention_heads, "n_kv_heads": c.num_key_value_heads,
            "head_dim": model.model.layers[0].self_attn.head_dim, "vocab_size": c.vocab_size,
            "transformers": __import__("transformers").__version__, "prompts": []}


def load(path, **kw):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager", **kw)
    return m.eval()


def smollm2():
    from gguf import GGUFReader
    from make_tokenizer_fixtures import smollm2_reference
    tok = smollm2_reference()
    template = GGUFReader(GGUF).fields["tokenizer.chat_template"].contents()
    model = load(os.path.dirname(GGUF), gguf_file=os.path.basename(GGUF))
    meta, b = model_meta(model, os.path.basename(GGUF)), Bin()
    chat_text = tok.apply_chat_template(CHAT, chat_template=template, tokenize=False,
                                        add_generation_prompt=True)
    long_text = tok.apply_chat_template(
        [{"role": "user", "content": LONG_TEXT.strip() + "\n\nRepeat the previous context exactly."},
         {"role": "assistant", "content": LONG_TEXT.strip()}], chat_template=template, tokenize=False)
    prompts = [("prose", PROSE, 1, 1, True), ("code", CODE, 8, 1, False),
               ("chat", chat_text, 8, 1, False), ("long", long_text, 64, 6, False)]
    for name, text, x_step, n_spread, qkv in prompts:
        ids = tok(text, add_special_tokens=True)["input_ids"]
        rec = run_prompt(model, ids, x_step, n_spread, qkv)
        add_prompt(b, meta, name, rec, text)
        if name == "long":
            meta["prompts"][-1]["repeat_of"] = LONG_TEXT  # spec 1.1 repeat prompt of this text
        print(name, len(ids), "tokens")
    assert meta["prompts"][-1]["n_tokens"] >= 1000, meta["prompts"][-1]["n_tokens"]
    meta["generations"] = []
    for gi, msgs in enumerate(GEN_CHATS):
        text = tok.apply_chat_template(msgs, chat_template=template, tokenize=False,
                                       add_generation_prompt=True)
        ids = tok(text, add_special_tokens=True)["input_ids"]
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=40,
                             pad_token_id=tok.pad_token_id)
        gen = out[0, len(ids):].numpy().astype(np.int32)
        assert len(gen) == 40, (msgs, len(gen))  # no early end of sequence
        b.add("gen%d.prompt_ids" % gi, np.array(ids, dtype=np.int32))
        b.add("gen%d.generated" % gi, gen)
        meta["generations"].append({"name": "gen%d" % gi, "text": text, "messages": msgs,
                                    "completion": tok.decode(gen.tolist())})
        print("gen", gi, repr(tok.decode(gen.tolist())))
    b.write("smollm2", meta)


def tiny(name, seed):
    model = load(os.path.join(TINY, name))
    meta, b = model_meta(model, "tiny/" + name), Bin()
    rng = np.random.default_rng(seed)
    v = model.config.vocab_size
    for pname, t, logit_step, qkv in [("short", 17, 1, True), ("long", 300, 8, False)]:
        ids = rng.integers(3, v, size=t).tolist()
        rec = run_prompt(model, ids, 1, 0, qkv)
        lp = list(range(0, t, logit_step)) + ([t - 1] if (t - 1) % logit_step else [])
        with torch.inference_mode():
            full = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
        rec["logit_pos"] = np.array(lp, dtype=np.int32)
        rec["logits"] = full[lp].numpy()
        add_prompt(b, meta, pname, rec)
    b.write(name, meta)


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    with torch.inference_mode():
        for i, name in enumerate(["llama3_f32", "qwen2_bf16", "qwen3_f16", "mistral_sharded"]):
            tiny(name, 1000 + i)
        if "--tiny-only" not in sys.argv:
            smollm2()


if __name__ == "__main__":
    main()
