#!/usr/bin/env python3
"""make_prune_fixtures.py: kvpress DMSPress + KVzapPress reference for the
threshold pruning (KVzap Linear surrogate, sliding window 128), prefill and
decoding.

Writes tests/fixtures/prune/kvpress_dmspress.json: for one ~1700-token prompt
and 8 teacher-forced decode ids, the evicted (layer, KV head, position) sets,
compression ratios, a fixed 2048-id subset of the logits and greedy tokens
that kvpress's own DMSPress(press=KVzapPress(linear), threshold=tau,
sliding_window_size=128, decoding=False/True) produces at two thresholds, plus
the same quantities without a press ("dense").

Run (from the repository root):
    PYTHONPATH=~/.cache/kvzap/kvpress-tf \\
        ~/.cache/kvzap/refenv/bin/python tests/reference/make_prune_fixtures.py
PyPI packages: torch, transformers>=4.56,<5.3 (kvpress 0.5.5's pin: with
transformers >= 5.3 the attention module no longer receives past_key_values /
cache_position, which DMSPress.forward_hook reads), tokenizers, gguf, numpy,
safetensors, kvpress==0.5.5 (--no-deps, see requirements.txt). The refenv has
transformers 5.25, so an overlay with transformers 5.2.0 is put first on
PYTHONPATH (it leaves the refenv untouched for the other scripts):
    ~/.cache/kvzap/refenv/bin/pip install --no-deps --target ~/.cache/kvzap/kvpress-tf \\
        transformers==5.2.0 "huggingface-hub>=1.3,<2" "tokenizers>=0.22,<=0.23.0" kernels==0.12.3
    ~/.cache/kvzap/refenv/bin/pip install --target ~/.cache/kvzap/kvpress-tf httpx
(kernels 0.12.3 because the refenv's kernels 0.19 breaks transformers 5.2's
import). Runtime: about 2-3 minutes on 2 CPU cores.

What it does, in float32:
  - model ~/.cache/kvzap/SmolLM2-135M-Instruct.Q4_1.gguf through transformers'
    GGUF loader, attn_implementation="sdpa". NOT eager: kvpress patches only
    the functions registered in ALL_ATTENTION_FUNCTIONS, and llama's eager
    path bypasses that registry, so with eager the evicted keys would never
    be masked (and masked_key_indices never reset).
  - tokenizer: the real SmolLM2 tokenizer rebuilt from the GGUF
    (make_tokenizer_fixtures.smollm2_reference). Text: the first two
    documents of data/sample/corpus/prose.jsonl joined by "\\n\\n", encoded
    with add_special_tokens=False (no chat template); prompt_ids = the first
    PROMPT_LEN ids, decode_ids = the next N_DECODE ids.
  - surrogate tests/fixtures/prune/surrogate_linear loaded by kvpress's
    KVzapModel.from_pretrained and set as KVzapPress(model_type="linear")
    .kvzap_model; its post_init_from_model (which would fetch
    nvidia/KVzap-linear-<model> from the hub) is replaced by a no-op.
  - scores: a dense prefill with a hook on every self_attn computes the
    surrogate on the hook's hidden_states (input_layernorm output), exactly
    as KVzapPress.score does. Each tau is the midpoint (rounded to a dyadic
    fraction, exact in float32) of the widest gap between consecutive sorted
    scores (all layers, heads, positions pooled) near the quantile that gives
    the target compression.
  - per case, one fresh `with press(model):` run on a DynamicCache: prefill
    (logits_to_keep=1), record masked_key_indices of every self_attn and the
    compression ratios; then the decode ids one at a time (cache_position /
    position_ids = prompt_len + i), record logits per step, then the evicted
    sets and ratios again. A second fresh run (same press settings) prefills
    and generates GREEDY_N tokens greedily (token 0 = argmax of the prefill's
    last logits, then GREEDY_N - 1 single-token steps).
  - DMSPress.forward_hook and KVzapPress.score are wrapped (not changed) to
    record every score DMSPress compares with tau: tau_margin is the minimum
    |score - tau| over them (prefill and decoding steps, teacher-forced and
    greedy runs), asserted >= 1e-4; n_compared_within counts those closer to
    tau than 1e-3 / 1e-2 (same runs); the evicted sets are checked against
    {compared score < tau}. The scores are far denser than 1e-4 (about 1.5e5
    of them): within +-4% of the target compression no gap is wider than
    2.3e-4 (tau 1) / 5.0e-4 (tau 2), so a C check must reproduce the scores to
    better than tau_margin or allow for positions near tau.
  - the sdpa function kvpress patched is wrapped once more to measure, in
    decoding steps, the largest softmax weight that a masked key still gets
    with kvpress's fake keys ("fake_key_max_weight"; 0 = exact masking).

JSON: see the task layout; bitmask hex: bit p%8 of byte p//8 set when position
p is evicted, bytes in order, two lowercase hex digits each, over prompt_len
positions ("after_prefill") or prompt_len + N_DECODE ("after_decode").
"layer_compression" is press.compression_ratios per layer; kvpress does not
update it in decoding steps when decoding=False, so there "after_decode"
repeats the prefill ratios (relative to prompt_len, not prompt_len + 8).
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch

import transformers
from transformers import AutoModelForCausalLM, DynamicCache
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import repeat_kv

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REPO = os.path.dirname(ROOT)
sys.path.insert(0, HERE)
from make_tokenizer_fixtures import smollm2_reference  # noqa: E402

ASSETS = os.environ.get("KVZ_ASSETS", os.path.expanduser("~/.cache/kvzap"))
GGUF = os.path.join(ASSETS, "SmolLM2-135M-Instruct.Q4_1.gguf")
SURROGATE = os.path.join(ROOT, "fixtures", "prune", "surrogate_linear")
CORPUS = os.path.join(REPO, "data", "sample", "corpus", "prose.jsonl")
OUT = os.path.join(ROOT, "fixtures", "prune", "kvpress_dmspress.json")

PROMPT_LEN = 1700
N_DECODE = 8
GREEDY_N = 16
WINDOW = 128
N_LOGIT_IDS = 2048
TARGETS = (0.5, 0.67)          # wanted compression after prefill
MIN_MARGIN = 1e-4

_v = tuple(int(x) for x in transformers.__version__.split(".")[:2])
if not ((4, 56) <= _v < (5, 3)):
    sys.exit(f"transformers {transformers.__version__}: kvpress 0.5.5 needs >=4.56,<5.3 "
             "(see the docstring: PYTHONPATH=~/.cache/kvzap/kvpress-tf)")

import kvpress  # noqa: E402  (patches ALL_ATTENTION_FUNCTIONS on import)
from kvpress import DMSPress, KVzapPress  # noqa: E402
from kvpress.presses.base_press import is_prefilling  # noqa: E402
from kvpress.presses.kvzap_press import KVzapModel  # noqa: E402


# ---------------------------------------------------------------- probes
class FakeKeyProbe:
    """Wraps kvpress's patched sdpa: after it wrote the fake keys in place, the
    largest softmax weight any masked key gets (decoding steps only)."""

    def __init__(self):
        self.max_weight = 0.0
        self.max_rel_logit = -math.inf   # max over masked of (logit - row max)
        self.n_calls = 0
        patched = ALL_ATTENTION_FUNCTIONS["sdpa"]

        def probe(module, query, key, value, attention_mask, dropout=0.0, **kw):
            out = patched(module, query, key, value, attention_mask, dropout, **kw)
            mki = getattr(module, "masked_key_indices", None)
            if query.shape[2] != key.shape[2] and mki is not None:
                self.n_calls += 1
                groups = query.shape[1] // key.shape[1]
                k = repeat_kv(key, groups)
                logits = (query @ k.transpose(-1, -2)) * kw.get("scaling", module.scaling)
                w = torch.softmax(logits, dim=-1)
                m = torch.zeros(key.shape[0], key.shape[1], key.shape[2], dtype=torch.bool)
                m[mki[0], mki[1], mki[2]] = True
                m = m.repeat_interleave(groups, dim=1)[:, :, None, :].expand_as(w)
                self.max_weight = max(self.max_weight, float(w[m].max()))
                rel = logits - logits.max(dim=-1, keepdim=True).values
                self.max_rel_logit = max(self.max_rel_logit, float(rel[m].max()))
            return out

        ALL_ATTENTION_FUNCTIONS["sdpa"] = probe


class CompareRecorder:
    """Wraps press.forward_hook / press.press.score (behaviour unchanged) and
    records every score DMSPress compares with its threshold."""

    def __init__(self, press):
        self.press, self.tau = press, press.threshold
        self.margin = math.inf
        self.n_compared = 0
        self.near = {"1e-3": 0, "1e-2": 0}   # compared scores this close to tau
        self.below = {}      # layer -> set of (g, abs position) with score < tau
        self.first_prefill_scores = {}
        inner = press.press
        orig_score, orig_hook = inner.score, press.forward_hook
        self.last = {}

        def score(module, hidden_states, keys, values, attentions, kwargs):
            s = orig_score(module, hidden_states, keys, values, attentions, kwargs)
            self.last[module.layer_idx] = s
            return s

        def hook(module, inp, kwargs, output):
            layer = module.layer_idx
            q_len = kwargs["hidden_states"].shape[1]
            prefilling = is_prefilling(kwargs["cache_position"], q_len)
            old = None if prefilling else press.scores_buffer.get(layer)
            self.last.pop(layer, None)
            res = orig_hook(module, inp, kwargs, output)
            if layer in self.last:
                new = self.last[layer]
                if prefilling:
                    self.first_prefill_scores[layer] = new.detach().clone()
                full = new if old is None else torch.cat([old, new], dim=-1)
                n = full.shape[-1] - press.scores_buffer[layer].shape[-1]
                if n > 0:
                    comp = full[..., :n].double()
                    self.margin = min(self.margin, float((comp - self.tau).abs().min()))
                    self.n_compared += comp.numel()
                    for key in self.near:
                        self.near[key] += int(((comp - self.tau).abs() < float(key)).sum())
                    cache_len = int(kwargs["cache_position"][-1]) + 1
                    first = cache_len - WINDOW - n          # absolute position of comp[..., 0]
                    b, g, p = torch.where(comp < self.tau)
                    assert (b == 0).all()
                    self.below.setdefault(layer, set()).update(
                        (int(gi), int(pi) + first) for gi, pi in zip(g, p))
            return res

        inner.score = score
        press.forward_hook = hook


# ---------------------------------------------------------------- helpers
def load_model():
    transformers.utils.logging.disable_progress_bar()
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(GGUF), gguf_file=os.path.basename(GGUF),
                                             dtype=torch.float32, attn_implementation="sdpa")
    return m.eval()


def load_surrogate():
    s = KVzapModel.from_pretrained(SURROGATE).float().eval()
    return s


def make_press(surrogate, tau, decoding):
    inner = KVzapPress(model_type="linear")
    inner.kvzap_model = surrogate
    inner.post_init_from_model = lambda model: None    # no hub download
    return DMSPress(press=inner, threshold=tau, sliding_window_size=WINDOW, decoding=decoding)


def self_attns(model):
    return [layer.self_attn for layer in model.model.layers]


def step(model, cache, ids, start):
    ids_t = torch.tensor([ids])
    pos = torch.arange(start, start + len(ids))
    out = model(input_ids=ids_t, past_key_values=cache, use_cache=True, cache_position=pos,
                position_ids=pos[None], logits_to_keep=1)
    return out.logits[0, -1].float()


def logit_record(logits, logit_ids):
    sub = logits[logit_ids].tolist()
    return ([float(f"{v:.7g}") for v in sub], float(torch.linalg.vector_norm(logits.double())),
            int(torch.argmax(logits)))


def evicted_state(model, n_pos, n_layers, n_kv):
    """Per layer: bool [n_kv, n_pos] from masked_key_indices."""
    masks = []
    for attn in self_attns(model):
        m = np.zeros((n_kv, n_pos), dtype=bool)
        mki = getattr(attn, "masked_key_indices", None)
        if mki is not None:
            b, g, p = (t.numpy() for t in mki)
            assert (b == 0).all() and p.max() < n_pos
            assert len(set(zip(g.tolist(), p.tolist()))) == len(p), "duplicate masked index"
            m[g, p] = True
        masks.append(m)
    assert len(masks) == n_layers
    return masks


def hexmask(bits):
    return np.packbits(bits.astype(np.uint8), bitorder="little").tobytes().hex()


def moment(model, press, n_pos, n_layers, n_kv):
    masks = evicted_state(model, n_pos, n_layers, n_kv)
    lc = [float(press.compression_ratios[l]) for l in range(n_layers)]
    return masks, {
        "n_positions": n_pos,
        "compression": float(press.compression_ratio),
        "layer_compression": lc,
        "counts": [int(m.sum()) for m in masks],
        "head_counts": [[int(x) for x in m.sum(axis=1)] for m in masks],
        "evicted": [[hexmask(m[g]) for g in range(n_kv)] for m in masks],
    }


def dense_scores(model, surrogate, prompt_ids):
    """Surrogate scores [L, Hkv, T] on the dense prefill's self_attn inputs."""
    scores, hooks = {}, []
    for attn in self_attns(model):
        def h(mod, args, kwargs, out, attn=attn):
            x = kwargs["hidden_states"]
            scores[mod.layer_idx] = surrogate.layers[mod.layer_idx](x).transpose(1, 2)[0]
        hooks.append(attn.register_forward_hook(h, with_kwargs=True))
    try:
        logits = step(model, DynamicCache(), prompt_ids, 0)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack([scores[l] for l in range(len(scores))]).float(), logits


def choose_tau(scores, target, T):
    """tau for ~target compression after prefill, centred in a wide score gap."""
    L, H, _ = scores.shape
    comp = np.sort(scores[:, :, :T - WINDOW].reshape(-1).astype(np.float64))
    allv = np.sort(scores.reshape(-1).astype(np.float64))
    k = int(round(target * L * H * T))           # evictions wanted
    assert 0 < k < comp.size
    centre = 0.5 * (comp[k - 1] + comp[k])
    for frac in (0.0025, 0.005, 0.01, 0.02, 0.04):
        w = max(2, int(frac * allv.size))
        i0 = max(0, np.searchsorted(allv, centre) - w)
        i1 = min(allv.size - 1, np.searchsorted(allv, centre) + w)
        gaps = np.diff(allv[i0:i1 + 1])
        j = int(np.argmax(gaps))
        lo, hi = allv[i0 + j], allv[i0 + j + 1]
        if hi - lo >= 4 * MIN_MARGIN:
            break
    mid, gap = 0.5 * (lo + hi), hi - lo
    for bits in range(6, 30):                     # coarsest dyadic keeping 45% of the gap
        tau = round(mid * 2 ** bits) / 2 ** bits
        if min(tau - lo, hi - tau) >= 0.45 * gap:
            break
    assert np.float32(tau) == tau
    return float(tau), float(min(tau - lo, hi - tau)), float(gap)


# ---------------------------------------------------------------- main
def main():
    t0 = time.time()
    torch.manual_seed(0)
    tok = smollm2_reference()
    docs = [json.loads(line)["text"] for line in open(CORPUS, encoding="utf-8")]
    text = "\n\n".join(docs[:2])
    all_ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(all_ids) >= PROMPT_LEN + GREEDY_N
    prompt_ids, decode_ids = all_ids[:PROMPT_LEN], all_ids[PROMPT_LEN:PROMPT_LEN + N_DECODE]
    T = len(prompt_ids)

    model = load_model()
    surrogate = load_surrogate()
    cfg = model.config
    n_layers, n_kv, vocab = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.vocab_size
    logit_ids = np.sort(np.random.default_rng(0).choice(vocab, size=N_LOGIT_IDS, replace=False))
    lid = torch.from_numpy(logit_ids)
    probe = FakeKeyProbe()

    with torch.inference_mode():
        # dense reference and prefill scores
        S, dense_prefill = dense_scores(model, surrogate, prompt_ids)
        S_np = S.numpy()
        cache = DynamicCache()
        d_pre = step(model, cache, prompt_ids, 0)
        assert torch.equal(d_pre, dense_prefill)
        d_dec = [step(model, cache, [t], T + i) for i, t in enumerate(decode_ids)]
        cache = DynamicCache()
        g = [int(torch.argmax(step(model, cache, prompt_ids, 0)))]
        for i in range(GREEDY_N - 1):
            g.append(int(torch.argmax(step(model, cache, [g[-1]], T + i))))
        pl, pn, pa = logit_record(d_pre, lid)
        dense = {"prefill_logits": pl, "prefill_norm": pn, "prefill_argmax": pa,
                 "decode_logits": [logit_record(x, lid)[0] for x in d_dec],
                 "decode_norms": [logit_record(x, lid)[1] for x in d_dec],
                 "decode_argmax": [logit_record(x, lid)[2] for x in d_dec],
                 "greedy": g}
        print(f"dense done {time.time() - t0:.1f}s; scores min {S_np.min():.3f} max {S_np.max():.3f}")

        taus = [choose_tau(S_np, c, T) for c in TARGETS]
        cases = []
        for tau, pre_margin, gap in taus:
            for decoding in (False, True):
                press = make_press(surrogate, tau, decoding)
                rec = CompareRecorder(press)
                case = {"tau": tau, "decoding": decoding}
                cache = DynamicCache()
                with press(model):
                    logits = step(model, cache, prompt_ids, 0)
                    m_pre, case["after_prefill"] = moment(model, press, T, n_layers, n_kv)
                    dec = [step(model, cache, [t], T + i) for i, t in enumerate(decode_ids)]
                    m_dec, case["after_decode"] = moment(model, press, T + N_DECODE, n_layers, n_kv)
                prefill_scores = torch.stack([rec.first_prefill_scores[l][0] for l in range(n_layers)])
                max_score_diff = float((prefill_scores - S).abs().max())
                below_teacher = {l: set(v) for l, v in rec.below.items()}
                cache = DynamicCache()
                with press(model):
                    gl = step(model, cache, prompt_ids, 0)
                    greedy = [int(torch.argmax(gl))]
                    for i in range(GREEDY_N - 1):
                        greedy.append(int(torch.argmax(step(model, cache, [greedy[-1]], T + i))))
                pl, pn, pa = logit_record(logits, lid)
                recs = [logit_record(x, lid) for x in dec]
                case.update({
                    "tau_margin": rec.margin, "n_compared": rec.n_compared,
                    "n_compared_within": rec.near,
                    "prefill_logits": pl, "prefill_norm": pn, "prefill_argmax": pa,
                    "decode_logits": [r[0] for r in recs], "decode_norms": [r[1] for r in recs],
                    "decode_argmax": [r[2] for r in recs], "greedy": greedy,
                    "max_abs_prefill_score_diff_vs_dense": max_score_diff,
                })

                # ---- sanity checks
                assert rec.margin >= MIN_MARGIN, f"tau {tau}: margin {rec.margin}"
                assert max_score_diff == 0.0, max_score_diff
                ap, ad = case["after_prefill"], case["after_decode"]
                expect = sum(c / (n_kv * T) for c in ap["counts"]) / n_layers
                assert abs(ap["compression"] - expect) < 1e-12, (ap["compression"], expect)
                for l in range(n_layers):
                    assert abs(ap["layer_compression"][l] - ap["counts"][l] / (n_kv * T)) < 1e-12
                    assert not m_pre[l][:, T - WINDOW:].any(), "window position evicted"
                    # evicted set == {compared prefill score < tau}
                    ref = S_np[l][:, :T - WINDOW] < tau
                    assert np.array_equal(m_pre[l][:, :T - WINDOW], ref)
                    dset = {(int(gg), int(pp)) for gg, pp in zip(*np.nonzero(m_dec[l]))}
                    assert dset == below_teacher.get(l, set()), f"layer {l}: evicted != compared < tau"
                    if not decoding:
                        assert np.array_equal(m_dec[l][:, :T], m_pre[l]) and not m_dec[l][:, T:].any()
                    else:
                        assert np.array_equal(m_dec[l][:, :T - WINDOW], m_pre[l][:, :T - WINDOW])
                        assert not m_dec[l][:, T - WINDOW + N_DECODE:].any()
                        new = S_np[l][:, T - WINDOW:T - WINDOW + N_DECODE] < tau
                        assert np.array_equal(m_dec[l][:, T - WINDOW:T - WINDOW + N_DECODE], new)
                        assert abs(ad["layer_compression"][l] - ad["counts"][l] / (n_kv * (T + N_DECODE))) < 1e-12
                if not decoding:
                    assert ad["compression"] == ap["compression"]
                else:
                    assert any(ad["counts"][l] > ap["counts"][l] for l in range(n_layers))
                assert torch.equal(logits, d_pre), "prefill is dense in DMSPress: logits must match"
                diff = max(float((a - b).abs().max()) for a, b in zip(dec, d_dec))
                case["max_abs_decode_logit_diff_vs_dense"] = diff
                assert diff > 1e-3, "pruned decode logits equal the dense ones"
                print(f"tau {tau:+.6f} (gap {gap:.2e}) decoding={decoding}: compression prefill "
                      f"{ap['compression']:.4f} decode {ad['compression']:.4f}; margin {rec.margin:.3e}; "
                      f"decode logit diff {diff:.3f}; greedy == dense: {greedy == g}  "
                      f"[{time.time() - t0:.1f}s]")
                cases.append(case)

    out = {
        "generator": "tests/reference/make_prune_fixtures.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "kvpress": kvpress.__version__ if hasattr(kvpress, "__version__")
                     else __import__("importlib.metadata").metadata.version("kvpress")},
        "model": os.path.basename(GGUF), "surrogate": os.path.basename(SURROGATE),
        "attn_implementation": "sdpa", "window": WINDOW,
        "n_layers": n_layers, "n_kv_heads": n_kv, "vocab": vocab,
        "text_source": "data/sample/corpus/prose.jsonl documents 1-2 joined by \\n\\n, "
                       "add_special_tokens=False; prompt = first ids, decode = next ids",
        "greedy_note": "greedy[0] = argmax of prefill logits, then 15 single-token steps",
        "fake_key_max_weight": probe.max_weight, "fake_key_max_rel_logit": probe.max_rel_logit,
        "prompt_ids": prompt_ids, "decode_ids": decode_ids, "logit_ids": [int(i) for i in logit_ids],
        "dense": dense, "cases": cases,
    }
    with open(OUT, "w") as f:
        f.write(dumps(out))
        f.write("\n")
    size = os.path.getsize(OUT)
    print(f"fake keys: max softmax weight on a masked key {probe.max_weight:.3e} "
          f"(max logit - row max {probe.max_rel_logit:.1f}, {probe.n_calls} calls)")
    print(f"wrote {OUT} ({size} bytes) in {time.time() - t0:.1f}s")
    assert size < 1_600_000


def dumps(obj, ind=0):
    """JSON with dicts one key a line and scalar lists on one line."""
    pad = " " * ind
    if isinstance(obj, dict):
        items = [f'{pad} {json.dumps(k)}: {dumps(v, ind + 1).lstrip()}' for k, v in obj.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and isinstance(obj[0], (list, dict)):
        return pad + "[\n" + ",\n".join(dumps(v, ind + 1) for v in obj) + "\n" + pad + "]"
    return pad + json.dumps(obj, separators=(",", ":"))


if __name__ == "__main__":
    main()
