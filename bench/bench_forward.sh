#!/usr/bin/env bash
# bench_forward: prefill speed of kvzap's fp32 CPU forward pass vs transformers'
# CPU forward on the same machine and thread count, plus this machine's sgemm
# rate for the same projection shapes. Not a test. Prints a markdown table.
# Usage: bench/bench_forward.sh [--build DIR] [--threads N] [--repeat N] [LENGTHS...]
#   defaults: build dir "build", threads = all cores, repeat 3, lengths 512 2048.
# Env: KVZAP_DEFAULT_MODEL (GGUF; default ~/.cache/kvzap/SmolLM2-135M-Instruct.Q4_1.gguf),
#      KVZ_PYTHON (default /root/.cache/kvzap/refenv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
build=build threads=$(nproc) repeat=3 lengths=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    *) lengths+=("$1"); shift ;;
  esac
done
[ ${#lengths[@]} -gt 0 ] || lengths=(512 2048)
model=${KVZAP_DEFAULT_MODEL:-$HOME/.cache/kvzap/SmolLM2-135M-Instruct.Q4_1.gguf}
py=${KVZ_PYTHON:-/root/.cache/kvzap/refenv/bin/python}
kvzap=$build/kvzap
[ -x "$kvzap" ] || { echo "bench_forward: $kvzap not built (scripts/build)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cc -O2 bench/sgemm_peak.c -o "$tmp/sgemm_peak" $(pkg-config --cflags --libs openblas)
# Model shapes from `kvzap info --json`-free parsing: the GGUF metadata via kvzap info.
read -r D Q KV FF < <("$py" - "$model" <<'PY'
import sys
from gguf import GGUFReader
r = GGUFReader(sys.argv[1]); a = bytes(r.fields["general.architecture"].parts[-1]).decode()
g = lambda k: int(r.fields[f"{a}.{k}"].parts[-1][0])
D, H, Hkv = g("embedding_length"), g("attention.head_count"), g("attention.head_count_kv")
print(D, D, D // H * Hkv, g("feed_forward_length"))
PY
)
echo "load average before: $(cut -d" " -f1-3 /proc/loadavg)"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads $threads; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "model: $model (D=$D, Q=$Q, KV=$KV, d_ff=$FF)"
echo
echo "| tokens | kvzap s | kvzap tok/s | kvzap GFLOP/s | kvzap sgemm GFLOP/s | sgemm peak (same shapes) | proj/peak | transformers s | transformers tok/s | speedup | kvzap RSS MiB | transformers RSS MiB | argmax kvzap/hf | OpenBLAS core |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for T in "${lengths[@]}"; do
  ids=$("$py" -c "print(','.join(str((i*7919+13)%49152) for i in range($T)))")
  k=$("$kvzap" logits "$model" --ids "$ids" --bench --repeat "$repeat" --json --threads "$threads")
  core=$("$py" -c 'import json,sys; print(json.loads(sys.argv[1])["openblas_core"])' "$k")
  # the same OpenBLAS kernels kvzap ran with (it picks them itself, see cli_tune_openblas)
  p=$(OPENBLAS_CORETYPE=$core "$tmp/sgemm_peak" "$T" "$threads" "$D" "$Q" "$KV" "$FF" "$repeat")
  h=$("$py" bench/bench_transformers.py "$model" "$T" "$threads" "$repeat" 2>/dev/null | tail -1)
  "$py" - "$k" "$p" "$h" <<'PY'
import json, sys
k, p, h = (json.loads(x) for x in sys.argv[1:4])
print(f"| {k['n_tokens']} | {k['seconds']:.3f} | {k['tokens_per_s']:.0f} | {k['gflops']:.1f} | {k['proj_gflops']:.1f} "
      f"| {p['layer_mix_gflops']:.1f} | {k['proj_gflops']/p['layer_mix_gflops']*100:.0f}% | {h['seconds']:.3f} "
      f"| {h['tokens_per_s']:.0f} | {h['seconds']/k['seconds']:.2f}x | {k['peak_rss_mib']:.0f} | {h['peak_rss_mib']:.0f} "
      f"| {k['argmax'][-1]}/{h['argmax_last']} | {k['openblas_core']} |")
PY
done
