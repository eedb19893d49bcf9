#!/usr/bin/env bash
# test_oracle_dry_run: `kvzap oracle --dry-run` (issue 20) writes nothing
# (no dataset, no parts directory, no parent directory) and predicts what the
# real run then does: the same documents, samples and prompt tokens exactly,
# and the dataset's size within 15%.
# Env (set by ctest): KVZAP, KVZ_FIXTURES.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAIL: $*"; exit 1; }
for i in $(seq 1 12); do
  printf '{"text": "Note %s: the cache keeps keys and values of every head in layer %s, and the surrogate decides."}\n' "$i" "$i"
done > c.jsonl
args=(--quiet --model "$KVZ_FIXTURES/tiny/qwen3_f16" --corpus c.jsonl --output sub/d.h5
  --n-tokens 12 --min-tokens 0 --max-tokens 100000 --train-docs 9 --test-docs 3)
"$KVZAP" oracle "${args[@]}" --dry-run > plan.txt
cat plan.txt
[ ! -e sub ] || fail "the dry run created sub/"
grep -q "nothing written" plan.txt || fail "no plan printed"
"$KVZAP" oracle "${args[@]}" > run.txt
cat run.txt
docs=$(sed -n 's/.*: \([0-9]*\) documents, \([0-9]*\) samples; \([0-9]*\) prompt tokens.*/\1 \2 \3/p' run.txt)
read -r d s t <<<"$docs"
grep -Eq "documents +$d of" plan.txt || fail "documents: plan vs run ($d)"
grep -Eq "samples +$s " plan.txt || fail "samples: plan vs run ($s)"
grep -Eq "prompt tokens \(context \+ repeat\) +$t$" plan.txt || fail "prompt tokens: plan vs run ($t)"
python3 - <<'PY' || fail "size estimate off by more than 15%"
import os, re
plan = open("plan.txt").read()
m = re.search(r"with hidden states\s+([\d.]+) (B|KiB|MiB|GiB)", plan)
est = float(m[1]) * {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[m[2]]
real = os.path.getsize("sub/d.h5")
print(f"estimated {est:.0f} bytes, real {real} bytes ({est / real:.3f}x)")
assert abs(est / real - 1) <= 0.15
PY
echo ok
