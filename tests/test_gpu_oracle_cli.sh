#!/usr/bin/env bash
# test_gpu_oracle_cli: `kvzap oracle --device cuda` end to end on the tiny
# Qwen3 checkpoint: the start line names the device and precision, the run
# attributes record them, --resume continues a float32 CUDA run on the CPU
# (same definition) but refuses bfloat16 (naming model.precision), and
# chunked scoring is refused on cuda. Skips (77) without a CUDA device.
# Env (set by ctest): KVZAP, KVZ_FIXTURES.
set -euo pipefail
if "$KVZAP" devices 2>&1 | grep -qi "no CUDA devices"; then
  echo "no CUDA device"; exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
python3 - <<'PY'
import json
words = "keys values heads layers cache prune score budget window tokens".split()
with open("docs.jsonl", "w") as f:
    for d in range(3):
        text = " ".join(words[(i * 7 + d) % len(words)] for i in range(14))
        f.write(json.dumps({"text": "Note %d: %s." % (d, text)}) + "\n")
PY
o() { "$KVZAP" oracle --set model.path="$KVZ_FIXTURES/tiny/qwen3_f16" --set oracle.corpus=docs.jsonl \
        --set oracle.n_tokens=8 --set oracle.min_doc_tokens=0 --set oracle.max_doc_tokens=100000 \
        --set oracle.train_docs_per_subset=2 --set oracle.test_docs_per_subset=1 \
        --set oracle.docs_per_shard=1 "$@"; }
attr() { h5dump -a "/$2" "$1" | sed -n 's/.*(0): "\(.*\)".*/\1/p'; }
fail() { echo "FAIL: $*"; exit 1; }

o --set oracle.output=a.h5 --device cuda --precision float32 --stop-after 1 >/dev/null 2>err.txt ||
  { cat err.txt; fail "float32 cuda run"; }
grep -q "^kvzap oracle: device: cuda:0 .*, float32$" err.txt || { cat err.txt; fail "no device line"; }
if o --quiet --set oracle.output=a.h5 --resume --device cuda --precision bfloat16 >/dev/null 2>err.txt; then
  fail "bfloat16 resume of a float32 run was accepted"
fi
grep -q "cannot resume: model.precision was 'float32', now 'bfloat16'" err.txt || { cat err.txt; fail "message"; }
o --quiet --set oracle.output=a.h5 --resume --device cpu >/dev/null 2>err.txt ||
  { cat err.txt; fail "float32 cpu resume of a float32 cuda run"; }
[ "$(attr a.h5 precision)" = float32 ] || fail "a.h5 precision '$(attr a.h5 precision)'"

o --quiet --set oracle.output=b.h5 --device cuda >/dev/null 2>err.txt || { cat err.txt; fail "bf16 run"; }
[ "$(attr b.h5 precision)" = bfloat16 ] || fail "b.h5 precision '$(attr b.h5 precision)'"
case "$(attr b.h5 device)" in cuda:0\ *) ;; *) fail "b.h5 device '$(attr b.h5 device)'" ;; esac
if h5dump -d /layers/1/log_scores b.h5 | grep -qiE "nan"; then fail "NaN log-scores"; fi

if o --quiet --set oracle.output=c.h5 --device cuda --set oracle.scoring=chunked >/dev/null 2>err.txt; then
  fail "chunked scoring on cuda was accepted"
fi
grep -q "oracle.scoring=chunked runs on the CPU only; use --device cpu" err.txt || { cat err.txt; fail "chunked message"; }
echo "ok"
