#!/usr/bin/env python3
"""oracle_reference_bench.py: the reference side of the oracle benchmark.
Harvests KVzip+ oracle samples the way NVIDIA kvpress' KVzapDataCollector does
(kvzap/data.py), with tests/reference/oracle_reference.py: per document the
spec 1.1 repeat prompt, one fp32 eager forward pass, per layer the scores from
the module's full T x T attention weights (mode "kvpress", the reference's
cost; --mode exact for the float64 log-domain variant), then n_tokens random
context positions' hidden states and scores copied into two tensors
preallocated in RAM for all documents ([N*n_tokens, L, D] and
[N*n_tokens, L, Hkv], zero rows when a document is shorter, as the reference).

Prints one JSON object on stdout: documents, prompt_tokens (tokens of the full
repeat sequences), context_tokens, samples, seconds (harvest only, model load
excluded), tokens_per_s (prompt tokens per second), peak_rss_mb
(ru_maxrss at the end: model + stored samples + attention scratch),
rss_after_load_mb, threads, model, mode, torch/transformers versions.

Run:
  /root/.cache/kvzap/refenv/bin/python bench/oracle_reference_bench.py \
      [--model GGUF_OR_DIR] [--corpus PATH ...] [--n-docs 8] [--n-tokens 500] \
      [--threads 2] [--min-tokens 0] [--max-tokens 0] [--mode kvpress|exact]
--corpus: .jsonl files (field "text"), other files (one document each) or
directories of them (recursive, sorted, hidden files skipped); default
data/sample/corpus, falling back to data/sample. Documents are taken in path
(then line) order; --min-tokens/--max-tokens filter on the plain text's token
count (exclusive bounds, 0 = none; the reference uses 750 and 1250).
Needs (PyPI): torch, transformers>=5, tokenizers, numpy, gguf.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))

import oracle_reference as ref  # noqa: E402

DEFAULT_MODEL = os.path.join(os.environ.get("KVZ_ASSETS", os.path.expanduser("~/.cache/kvzap")),
                             "SmolLM2-135M-Instruct.Q4_1.gguf")


def corpus_files(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            for d, dirs, files in os.walk(p):
                dirs[:] = sorted(x for x in dirs if not x.startswith("."))
                out += [os.path.join(d, f) for f in sorted(files) if not f.startswith(".")]
        elif os.path.isfile(p):
            out.append(p)
    return sorted(out)


def documents(paths):
    for f in corpus_files(paths):
        if f.endswith(".jsonl"):
            with open(f, encoding="utf-8") as fp:
                for line in fp:
                    if line.strip():
                        yield json.loads(line)["text"]
        else:
            with open(f, encoding="utf-8", errors="strict") as fp:
                yield fp.read()


def select(tok, paths, n_docs, lo, hi):
    docs = []
    for text in documents(paths):
        if not text.strip():
            continue
        n = len(tok(text.strip())["input_ids"]) if (lo or hi) else 0
        if (lo and n <= lo) or (hi and n >= hi):
            continue
        docs.append(text)
        if len(docs) == n_docs:
            break
    return docs


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description="reference KVzip+ oracle harvest benchmark")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--corpus", nargs="*")
    ap.add_argument("--n-docs", type=int, default=8)
    ap.add_argument("--n-tokens", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-tokens", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=0)
    ap.add_argument("--mode", choices=["kvpress", "exact"], default="kvpress")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    corpus = a.corpus or [p for p in [os.path.join(ROOT, "data", "sample", "corpus")] if os.path.isdir(p)] \
        or [os.path.join(ROOT, "data", "sample")]
    tok, template = ref.load_tokenizer(a.model)
    model = ref.load_model(a.model)
    cfg = model.config
    docs = select(tok, corpus, a.n_docs, a.min_tokens, a.max_tokens)
    if not docs:
        sys.exit("no documents in %s" % corpus)
    rss_load = rss_mb()
    L, D, Hkv, n = cfg.num_hidden_layers, cfg.hidden_size, cfg.num_key_value_heads, a.n_tokens
    X = torch.zeros(len(docs) * n, L, D, dtype=model.dtype)
    y = torch.zeros(len(docs) * n, L, Hkv, dtype=model.dtype)
    prompt_tokens = context_tokens = 0
    t0 = time.perf_counter()
    for d, text in enumerate(docs):
        rp = ref.repeat_prompt(tok, text, template)
        scores, xs = ref.score_document(model, rp["ids"], rp["P"], rp["R"], a.mode)
        p0, p1 = rp["P"]
        mask = torch.randperm(p1 - p0)[:n]
        for li in range(L):
            X[d * n:d * n + len(mask), li] = xs[li][p0:p1][mask]
            y[d * n:d * n + len(mask), li] = torch.from_numpy(scores[li])[mask]
        prompt_tokens += len(rp["ids"])
        context_tokens += p1 - p0
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "documents": len(docs), "prompt_tokens": prompt_tokens, "context_tokens": context_tokens,
        "samples": len(docs) * n, "seconds": round(seconds, 3),
        "tokens_per_s": round(prompt_tokens / seconds, 2), "peak_rss_mb": round(rss_mb(), 1),
        "rss_after_load_mb": round(rss_load, 1), "threads": a.threads, "mode": a.mode,
        "model": os.path.basename(a.model), "corpus": corpus, "torch": torch.__version__,
        "transformers": __import__("transformers").__version__}))


if __name__ == "__main__":
    main()
