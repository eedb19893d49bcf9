#!/usr/bin/env bash
# bench_gpu_prune: bench/bench_prune.sh on the GPU (the pruned runtime with
# --device cuda, float32), for scripts/gpu-check. Not a test. Uses the CLI of
# the GPU build ($KVZAP, set by gpu-check, or --bin DIR/kvzap), the default
# model (KVZAP_DEFAULT_MODEL; exits 77 when it is not on the machine) and the
# committed Linear export tests/fixtures/prune/surrogate_linear (trained on the
# sample corpus), at 4096 and 8128 tokens of context.
#   bench/bench_gpu_prune.sh [--bin DIR] [--lengths "4096 8128"] [--taus "-4.2 -3.3 -2.8"]
set -euo pipefail
cd "$(dirname "$0")/.."
bindir=build lengths="4096 8128" taus="-4.2 -3.3 -2.8"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bindir=$2; shift 2 ;;
    --lengths) lengths=$2; shift 2 ;;
    --taus) taus=$2; shift 2 ;;
    *) echo "bench_gpu_prune: unknown argument $1" >&2; exit 2 ;;
  esac
done
kvzap=${KVZAP:-$bindir/kvzap}
model=${KVZAP_DEFAULT_MODEL:-$HOME/.cache/kvzap/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || { echo "bench_gpu_prune: $model is not here (scripts/fetch-assets): skipped"; exit 77; }
echo "machine: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1); $(date -u '+%Y-%m-%d %H:%M UTC')"
exec bench/bench_prune.sh --kvzap "$kvzap" --model "$model" --device cuda \
  --surrogate tests/fixtures/prune/surrogate_linear --lengths "$lengths" --taus "$taus" \
  --decode 32 --chunk 256
