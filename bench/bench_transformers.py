"""transformers' CPU forward (the comparison side of bench/bench_forward.sh):
loads the GGUF with AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)
in fp32 with eager attention, torch.set_num_threads(THREADS), and times a
prefill of T token ids under torch.inference_mode (logits_to_keep=1, the same
work as `kvzap logits` without --all), best of REPEAT after one warm-up.
Prints one JSON object.

Run: /root/.cache/kvzap/refenv/bin/python bench/bench_transformers.py GGUF T THREADS [REPEAT]
Needs (PyPI): torch, transformers, gguf, accelerate (tests/reference/requirements.txt).
"""
import json, os, resource, sys, time

import torch
from transformers import AutoModelForCausalLM


def main():
    path, T, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    repeat = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                                 gguf_file=os.path.basename(path),
                                                 dtype=torch.float32, attn_implementation="eager")
    model.eval()
    ids = torch.tensor([[(i * 7919 + 13) % model.config.vocab_size for i in range(T)]])
    best = None
    with torch.inference_mode():
        for r in range(repeat + 1):
            t0 = time.perf_counter()
            logits = model(ids, logits_to_keep=1, use_cache=False).logits
            s = time.perf_counter() - t0
            if r > 0 and (best is None or s < best):
                best = s
    print(json.dumps({"T": T, "threads": threads, "seconds": best, "tokens_per_s": T / best,
                      "argmax_last": int(logits[0, -1].argmax()),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                      "torch": torch.__version__, "transformers": __import__("transformers").__version__}))


if __name__ == "__main__":
    main()
