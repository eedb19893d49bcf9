#!/usr/bin/env bash
# test_oracle_chunked_cli: `kvzap oracle` with scoring: chunked end to end on
# the tiny Qwen3 checkpoint (tokenizer and chat template in its folder):
# every context position sampled, finite log-scores, and the spec-2 rule that
# the first 4 context positions score 1.0 (log-score 0) in every layer.
# Env (set by ctest): KVZAP, KVZ_FIXTURES.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
python3 - <<'PY'
import json
words = "keys values heads layers cache prune score budget window tokens".split()
text = " ".join(words[(i * 7) % len(words)] for i in range(50))
with open("docs.jsonl", "w") as f:
    f.write(json.dumps({"text": "Long note: " + text}) + "\n")
PY
"$KVZAP" oracle --quiet --set model.path="$KVZ_FIXTURES/tiny/qwen3_f16" \
  --set oracle.corpus=docs.jsonl --set oracle.output=c.h5 --set oracle.scoring=chunked \
  --set oracle.chunk_size=32 --set oracle.n_tokens=100000 --set oracle.min_doc_tokens=0 \
  --set oracle.max_doc_tokens=100000 --set oracle.train_docs_per_subset=1 \
  --set oracle.test_docs_per_subset=0 --set oracle.hidden_dtype=float32 >/dev/null
n=$(h5dump -a /n_samples c.h5 | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
ctx=$(h5dump -d /documents/context_end c.h5 | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
ctx0=$(h5dump -d /documents/context_start c.h5 | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
[ "$n" -eq $((ctx - ctx0)) ] || { echo "FAIL: $n samples for a context of $((ctx - ctx0))"; exit 1; }
[ "$n" -gt 64 ] || { echo "FAIL: context $n tokens is not longer than two chunks"; exit 1; }
for l in 0 1; do
  first4=$(h5dump -d /layers/$l/log_scores -c 4,2 -y c.h5 | sed -n '/DATA {/,/}/p' |
           grep -oE -- '-?[0-9][0-9.e+-]*' | sort -u | tr '\n' ' ')
  if [ "$first4" != "0 " ]; then
    echo "FAIL: layer $l: first 4 context rows are not all 0: $first4"; exit 1
  fi
  rest=$(h5dump -d /layers/$l/log_scores -s 4,0 -c 4,2 -y c.h5 | sed -n '/DATA {/,/}/p' |
         grep -oE -- '-?[0-9][0-9.e+-]*' | sort -u | tr '\n' ' ')
  [ "$rest" != "0 " ] || { echo "FAIL: layer $l: rows 4..7 are 0 too"; exit 1; }
  if h5dump -d /layers/$l/log_scores c.h5 | grep -qiE "nan|inf"; then
    echo "FAIL: layer $l has non-finite log-scores"; exit 1
  fi
done
echo "PASS: $n context positions, chunked scoring, first 4 rows at log-score 0"
