#!/usr/bin/env bash
# test_gpu_cli: `kvzap logits`, `ppl` and `generate` with --device cuda
# against --device cpu on the tiny Llama-3 checkpoint, both float32: logits of
# every position (--all) within 1e-4 x max|logit| and the same argmax rows,
# perplexity within 1e-5 relative, the same greedy ids; --precision bfloat16
# runs (finite logits within 5e-2 x max|logit|, a finite perplexity); the
# device each run used is the one asked for. Skips (77) without a CUDA device
# (the emulator build counts as one). Env (set by ctest): KVZAP, KVZ_FIXTURES.
set -euo pipefail
if "$KVZAP" devices 2>&1 | grep -qi "no CUDA devices"; then
  echo "no CUDA device"; exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
model="$KVZ_FIXTURES/tiny/llama3_f32"
fail() { echo "FAIL: $*"; exit 1; }
text="keys values heads layers cache prune score budget window tokens keys values"

for dev in cpu cuda; do
  "$KVZAP" logits "$model" --text "$text" --all --out $dev.f32 --json --device $dev \
    --precision float32 > $dev.json 2> $dev.err || { cat $dev.err; fail "logits --device $dev"; }
done
"$KVZAP" logits "$model" --text "$text" --all --out bf16.f32 --json --device cuda \
  --precision bfloat16 > bf16.json 2> bf16.err || { cat bf16.err; fail "logits bfloat16"; }
python3 - <<'PY' || fail "logits differ"
import array, json, math
def load(name):
    a = array.array("f")
    with open(name, "rb") as f:
        a.frombytes(f.read())
    return a
cpu, cuda, bf16 = load("cpu.f32"), load("cuda.f32"), load("bf16.f32")
meta = [json.load(open(n + ".json")) for n in ("cpu", "cuda", "bf16")]
assert len(cpu) == len(cuda) == len(bf16) > 0, (len(cpu), len(cuda), len(bf16))
scale = max(abs(v) for v in cpu)
for name, got, tol in (("cuda float32", cuda, 1e-4), ("cuda bfloat16", bf16, 5e-2)):
    assert all(math.isfinite(v) for v in got), name + ": non-finite logits"
    worst = max(abs(a - b) for a, b in zip(got, cpu))
    print("%s vs cpu: max |diff| %.3g (max |logit| %.3g, limit %.0e x)" % (name, worst, scale, tol))
    assert worst <= tol * scale, name
assert meta[0]["argmax"] == meta[1]["argmax"], "argmax rows differ (float32)"
PY

printf '%s\n' "$text $text $text" > text.txt
for dev in cpu cuda; do
  "$KVZAP" ppl "$model" text.txt --window 16 --stride 8 --device $dev --precision float32 \
    > ppl_$dev.txt 2>&1 || { cat ppl_$dev.txt; fail "ppl --device $dev"; }
done
python3 - <<'PY' || fail "perplexities differ"
import re
def ppl(name):
    m = re.search(r"ppl: ([0-9.eE+-]+)", open(name).read())
    assert m, open(name).read()
    return float(m.group(1))
a, b = ppl("ppl_cpu.txt"), ppl("ppl_cuda.txt")
print("ppl cpu %.8g cuda %.8g" % (a, b))
assert abs(a - b) <= 1e-5 * abs(a), (a, b)
PY

for dev in cpu cuda; do
  "$KVZAP" generate "$model" --prompt "$text" --max-tokens 12 --ids --device $dev \
    --precision float32 > gen_$dev.txt 2> gen_$dev.err || { cat gen_$dev.err; fail "generate --device $dev"; }
done
cmp -s gen_cpu.txt gen_cuda.txt || { cat gen_cpu.txt gen_cuda.txt; fail "greedy ids differ"; }
[ -s gen_cuda.txt ] || fail "generate --device cuda printed nothing"
"$KVZAP" generate "$model" --prompt "$text" --max-tokens 4 --ids --device cuda \
  --precision bfloat16 > gen_bf16.txt 2>&1 || { cat gen_bf16.txt; fail "generate bfloat16"; }
echo "ok: logits, ppl and generate agree on cuda and cpu"
