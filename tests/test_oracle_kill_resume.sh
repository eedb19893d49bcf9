#!/usr/bin/env bash
# test_oracle_kill_resume: a `kvzap oracle` run killed with SIGKILL at
# arbitrary moments (twice) and continued with --resume ends with a dataset
# identical (h5diff: every dataset and attribute) to an uninterrupted run with
# the same config; while interrupted, no final file exists.
# Env (set by ctest): KVZAP, KVZAP_DEFAULT_MODEL.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# 12 short documents in 2 subsets (deterministic text, ~60-120 tokens each)
python3 - <<'PY'
import json, random
rng = random.Random(5)
words = ("cache key value token layer head attention query memory prune score "
         "model surrogate linear ridge oracle repeat context window budget").split()
for subset in ("alpha", "beta"):
    with open(f"{subset}.jsonl", "w") as f:
        for d in range(6):
            n = rng.randint(40, 90)
            text = " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."
            f.write(json.dumps({"text": f"Note {subset}-{d}: {text}"}) + "\n")
PY
mkdir corpus && mv alpha.jsonl beta.jsonl corpus/

args=(--quiet --threads 2
  --set model.path="$KVZAP_DEFAULT_MODEL" --set oracle.corpus=corpus
  --set oracle.min_doc_tokens=0 --set oracle.max_doc_tokens=100000
  --set oracle.train_docs_per_subset=5 --set oracle.test_docs_per_subset=1
  --set oracle.n_tokens=24 --set oracle.docs_per_shard=2 --set oracle.seed=3)
oracle() { "$KVZAP" oracle "${args[@]}" "$@"; }

start=$(date +%s.%N)
oracle --set oracle.output=full.h5 >/dev/null
dur=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
echo "uninterrupted run: ${dur}s"

for frac in 0.35 0.6; do
  [ -e killed.h5 ] && break   # an earlier resume already finished
  # a plain command in the background: $! is kvzap itself (a shell function
  # would put a subshell in between, and SIGKILL would miss kvzap)
  "$KVZAP" oracle "${args[@]}" --resume --set oracle.output=killed.h5 >/dev/null 2>&1 &
  pid=$!
  sleep "$(awk -v d="$dur" -v f="$frac" 'BEGIN { printf "%.3f", d * f }')"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if pgrep -f "oracle.output=killed.h5" >/dev/null; then
    echo "FAIL: the killed run is still running"; exit 1
  fi
  if [ -e killed.h5 ]; then
    echo "killed at ${frac}: the final file exists already (run too fast to interrupt?)"
  else
    echo "killed at ${frac} of the run; parts: $(ls killed.h5.parts 2>/dev/null | tr '\n' ' ')"
  fi
done
[ -e killed.h5 ] || oracle --resume --set oracle.output=killed.h5 >/dev/null
[ -e killed.h5 ] || { echo "FAIL: resume did not produce killed.h5"; exit 1; }
[ ! -e killed.h5.parts ] || { echo "FAIL: parts directory left behind"; exit 1; }
if h5diff -c full.h5 killed.h5; then
  echo "PASS: resumed dataset identical to the uninterrupted one"
else
  echo "FAIL: h5diff reports differences"; exit 1
fi
# the completion attribute is there and the interrupted run left nothing else
h5dump -a /complete killed.h5 | grep -q "(0): 1" || { echo "FAIL: complete != 1"; exit 1; }
