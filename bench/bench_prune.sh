#!/usr/bin/env bash
# bench_prune: the pruned runtime's memory and speed (not a test; run by hand,
# results in docs/benchmarks.md). For each context length T, on the default
# model, greedy generation of D new tokens from a T-token prompt (the sample
# corpus' texts, concatenated):
#   dense      the plain forward (contiguous KV cache)
#   full       the ragged cache evicting nothing (same prefill chunks)
#   kvzap tau  KVzap threshold, prefill in chunks of C tokens evicting between
#              them, and eviction while decoding (--prune-decoding)
# and prints one markdown row each: kvpress's compression, K/V MiB kept vs
# the full cache, the cache's peak MiB, prefill and decode seconds, decode
# tokens/s, the policy's share of the prefill and decode time (scoring,
# decisions, compaction) and the scoring's (the surrogate's) alone. Needs python3 (stdlib) to pull the corpus texts out of the JSONL.
#
# usage: bench/bench_prune.sh --surrogate DIR [--build DIR | --kvzap BIN] [--model M]
#          [--lengths "4096 8128"] [--taus "-4.25 -3.5 -3"] [--decode 64]
#          [--chunk 512] [--threads N] [--device cpu|cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-cpu kvzap= model="$HOME/.cache/kvzap/SmolLM2-135M-Instruct.Q4_1.gguf" surrogate=
lengths="4096 8128" taus="-4.25 -3.5 -3" decode=64 chunk=512 threads=0 device=cpu
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --kvzap) kvzap=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --surrogate) surrogate=$2; shift 2 ;;
    --lengths) lengths=$2; shift 2 ;;
    --taus) taus=$2; shift 2 ;;
    --decode) decode=$2; shift 2 ;;
    --chunk) chunk=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    *) echo "bench_prune: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$surrogate" ] || { echo "bench_prune: --surrogate DIR is required" >&2; exit 2; }
kvzap=${kvzap:-$build/kvzap}
[ -x "$kvzap" ] || { echo "bench_prune: $kvzap not built" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/corpus.txt" data/sample/corpus/*.jsonl <<'EOF'
import json, sys
out = open(sys.argv[1], "w", encoding="utf-8")
for path in sys.argv[2:]:
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line:
            d = json.loads(line)
            out.write((d.get("text") or "") + "\n\n")
EOF
"$kvzap" tokenize "$model" --file "$work/corpus.txt" --no-special > "$work/ids.txt"
total=$(wc -w < "$work/ids.txt")
thr=()
[ "$threads" != 0 ] && thr=(--threads "$threads")

row() { # label T args...
  local label=$1 T=$2; shift 2
  local err="$work/err.txt"
  "$kvzap" generate "$model" --prompt-ids "$(tr ' ' '\n' < "$work/ids.txt" | head -n "$T" | tr '\n' ' ')" \
    --max-tokens "$decode" --ids --bench --device "$device" "${thr[@]}" "$@" > "$work/out.txt" 2> "$err" ||
    { echo "| $T | $label | failed: $(tail -1 "$err") |"; return; }
  python3 - "$err" "$T" "$label" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
T, label = sys.argv[2], sys.argv[3]
b = re.search(r"prefill ([\d.]+) s .*?; (\d+) decode steps ([\d.]+) s \(([\d.]+) tokens/s\); pruning policy ([\d.]+) s in the prefill \(([\d.]+)%\), ([\d.]+) s in decoding \(([\d.]+)%\); of which scoring \(the surrogate\) ([\d.]+) s \(([\d.]+)%\) and ([\d.]+) s \(([\d.]+)%\); peak RSS ([\d.]+) MiB", text)
p = re.search(r"compression ([\d.]+) .*?; kept (\d+) of (\d+) KV pairs; K/V ([\d.]+) MiB vs ([\d.]+) MiB full; cache peak ([\d.]+) MiB", text)
if not b:
    print(f"| {T} | {label} | no bench line |"); sys.exit()
comp = f"{float(p.group(1)):.3f}" if p else "0 (dense)"
kv = f"{p.group(4)} / {p.group(5)}" if p else "-"
peak = p.group(6) if p else "-"
print(f"| {T} | {label} | {comp} | {kv} | {peak} | {b.group(1)} | {b.group(3)} | {b.group(4)} | {b.group(6)}% / {b.group(8)}% | {b.group(10)}% / {b.group(12)}% | {b.group(13)} |")
EOF
}

echo "corpus: $total tokens; model $(basename "$model"); surrogate $surrogate; decode $decode; chunk $chunk; device $device"
echo
echo "| T | method | compression | K/V MiB kept / full | cache peak MiB | prefill s | decode s | decode tok/s | policy share prefill / decode | surrogate share prefill / decode | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for T in $lengths; do
  [ "$T" -le "$total" ] || { echo "| $T | corpus has only $total tokens |"; continue; }
  row dense "$T"
  row full "$T" --prune full --prefill-chunk "$chunk" --prune-decoding
  for tau in $taus; do
    row "kvzap tau $tau" "$T" --prune kvzap --surrogate "$surrogate" --tau "$tau" \
      --prefill-chunk "$chunk" --prune-decoding
  done
done
