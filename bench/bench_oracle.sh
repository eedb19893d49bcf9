#!/usr/bin/env bash
# bench_oracle: oracle harvest throughput and peak memory of `kvzap oracle`
# (fp32 CPU, single-pass KVzip+, samples streamed to HDF5) vs the PyTorch
# reference of the same definition (bench/oracle_reference_bench.py: fp32
# eager attention, samples kept in RAM like kvpress's collector), same
# documents, same thread count, SmolLM2-135M-Instruct. Not a test.
# Usage: bench/bench_oracle.sh [--build DIR] [--threads N] [--docs-per-subset K]
#   defaults: build dir "build", all cores, K = 1 (5 documents of the sample
#   corpus, one per subset, all inside the 750 < tokens < 1250 filter).
# Env: KVZAP_DEFAULT_MODEL, KVZ_PYTHON (default /root/.cache/kvzap/refenv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
build=build threads=$(nproc) k=1
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --docs-per-subset) k=$2; shift 2 ;;
    *) echo "bench_oracle: unknown argument $1" >&2; exit 2 ;;
  esac
done
model=${KVZAP_DEFAULT_MODEL:-$HOME/.cache/kvzap/SmolLM2-135M-Instruct.Q4_1.gguf}
py=${KVZ_PYTHON:-/root/.cache/kvzap/refenv/bin/python}
kvzap=$build/kvzap
[ -x "$kvzap" ] || { echo "bench_oracle: $kvzap not built (scripts/build)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# 1. kvzap: select K train documents per subset, harvest, stream to HDF5.
/usr/bin/time -f "%e %M" -o "$tmp/time.txt" "$kvzap" oracle --quiet --threads "$threads" \
  --set model.path="$model" --set oracle.corpus=data/sample/corpus \
  --set oracle.output="$tmp/bench.h5" --set oracle.train_docs_per_subset="$k" \
  --set oracle.test_docs_per_subset=0 > "$tmp/kvzap.txt"
read -r wall rss_kb < "$tmp/time.txt"
summary=$(cat "$tmp/kvzap.txt")
ours_tps=$(sed -n 's/.*harvested in [^(]*(\([0-9.]*\) tok\/s).*/\1/p' <<<"$summary")
ours_tokens=$(sed -n 's/.*; \([0-9]*\) prompt tokens.*/\1/p' <<<"$summary")

# 2. the same documents for the reference, as one JSONL file.
h5dump -d /documents/source -y -w 0 "$tmp/bench.h5" | grep -o '"[^"]*:[0-9]*"' | tr -d '"' \
  > "$tmp/sources.txt"
python3 - "$tmp/sources.txt" "$tmp/docs.jsonl" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for src in open(sys.argv[1]).read().split():
        path, line = src.rsplit(":", 1)
        text = open(path, encoding="utf-8").read().split("\n")[int(line) - 1]
        out.write(json.dumps({"text": json.loads(text)["text"]}) + "\n")
PY
n_docs=$(wc -l < "$tmp/docs.jsonl")
"$py" bench/oracle_reference_bench.py --model "$model" --corpus "$tmp/docs.jsonl" \
  --n-docs "$n_docs" --threads "$threads" > "$tmp/ref.json"
read -r ref_tps ref_rss ref_tokens < <(python3 -c '
import json, sys; r = json.load(open(sys.argv[1]))
print(r["tokens_per_s"], r["peak_rss_mb"], r["prompt_tokens"])' "$tmp/ref.json")

ours_rss=$(awk -v k="$rss_kb" 'BEGIN { printf "%.0f", k / 1024 }')
echo "| | documents | prompt tokens | harvest tokens/s | peak RSS (MiB) |"
echo "|---|---|---|---|---|"
echo "| kvzap oracle (fp32 CPU, $threads threads) | $n_docs | $ours_tokens | $ours_tps | $ours_rss |"
echo "| PyTorch reference (fp32 eager, $threads threads) | $n_docs | $ref_tokens | $ref_tps | $ref_rss |"
awk -v a="$ours_tps" -v b="$ref_tps" -v c="$ours_rss" -v d="$ref_rss" \
  'BEGIN { printf "| ratio | | | %.2fx faster | %.2f of the reference |\n", a / b, c / d }'
echo "(kvzap wall time incl. model load and HDF5 merge: ${wall}s; its tokens/s counts the document loop only, as the reference's)"
