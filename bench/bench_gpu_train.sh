#!/usr/bin/env bash
# bench_gpu_train: the GPU trainer vs the PyTorch reference on one GPU (issue 7
# item 5). Not a test. bench/bench_gpu_train.c is built with the library
# (<build>/bench/bench_gpu_train, CMake); scripts/gpu-pack carries it with its
# shared libraries to a GPU machine without -dev packages.
#   bench/bench_gpu_train.sh [--bin DIR] [--n N] [--epochs E] [--ridge-n N] [--tiny]
#   --bin: the CUDA build dir or a gpu-pack bin/ dir (default build).
#   Writes an HDF5 dataset (1 layer, D=4096, Hkv=8, N=131072 samples,
#   float16 hidden states) to a temp dir, then times
#       (a) kvzap's GPU MLP trainer (hidden 512, batch 512, E=3 epochs, float32
#           and tf32) through kvz_train_run, wall time INCLUDING the HDF5 read;
#       (b) bench/train_reference_gpu.py: the same recipe in PyTorch, data
#           already in GPU memory, fp32 default matmul;
#       (c) ridge fit of 1.2M x 4096 on the GPU: ours (float64 sums from
#           device blocks + host Cholesky) vs torch.linalg (X^T X + solve).
#   Prints a markdown table. --tiny: D=64, N=4096, ridge 8192 rows (smoke run).
# Env: KVZ_PYTHON (python with torch; default python3), KVZ_RUNNER (prefix for
#      the binary, e.g. a packed loader; set by scripts/gpu-check).
set -euo pipefail
cd "$(dirname "$0")/.."
bindir=build
n=131072 D=4096 HKV=8 hidden=512 batch=512 epochs=3 ridge_n=1200000 tiny=
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bindir=$2; shift 2 ;;
    --n) n=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --ridge-n) ridge_n=$2; shift 2 ;;
    --tiny) tiny=--tiny; n=4096 D=64 HKV=8 hidden=32 ridge_n=8192; shift ;;
    *) echo "bench_gpu_train: unknown argument $1" >&2; exit 2 ;;
  esac
done
bin=$bindir/bench/bench_gpu_train
[ -x "$bin" ] || bin=$bindir/bench_gpu_train
[ -x "$bin" ] || { echo "bench_gpu_train: no bench_gpu_train under $bindir (a CUDA build)" >&2; exit 1; }
read -r -a runner <<<"${KVZ_RUNNER:-}"
run_bin() { ${runner[@]+"${runner[@]}"} "$bin" "$@"; }
py=${KVZ_PYTHON:-python3}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "machine: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1); $(date -u '+%Y-%m-%d %H:%M UTC')"
w=$(run_bin write "$tmp/bench.h5" "$n" "$D" "$HKV")
echo "dataset: $w, $(du -h "$tmp/bench.h5" | cut -f1)"
k32=$(run_bin mlp "$tmp/bench.h5" "$tmp/out32" "$hidden" "$batch" "$epochs" float32)
ktf=$(run_bin mlp "$tmp/bench.h5" "$tmp/outtf" "$hidden" "$batch" "$epochs" tf32)
blocks=$(( ridge_n / 4096 > 0 ? ridge_n / 4096 : 1 ))
kr=$(run_bin ridge "$ridge_n" "$D" "$HKV" "$blocks")
p=$("$py" bench/train_reference_gpu.py $tiny --n "$n" --d "$D" --hkv "$HKV" --hidden "$hidden" \
     --batch "$batch" --epochs "$epochs" --ridge-n "$ridge_n")
"$py" - "$k32" "$ktf" "$kr" "$p" <<'PY'
import json, sys
k32, ktf, kr, p = (json.loads(a) for a in sys.argv[1:5])
print(f"torch {p['torch']} on {p['device']}; D={p['d']}, Hkv={p['hkv']}, hidden {p['hidden']}, batch {p['batch']}, epochs {p['epochs']}")
print()
print("| measure | kvzap | PyTorch reference | kvzap speed-up (>1: kvzap faster) |")
print("|---|---|---|---|")
for name, k in (("float32", k32), ("tf32", ktf)):
    print(f"| MLP samples/s, {name}, wall incl. HDF5 read | {k['samples_per_s_wall']:.0f} ({k['wall_seconds']:.2f} s) "
          f"| {p['mlp']['samples_per_s']:.0f} ({p['mlp']['seconds']:.2f} s, data in GPU memory) "
          f"| {k['samples_per_s_wall'] / p['mlp']['samples_per_s']:.2f}x |")
    print(f"| MLP samples/s, {name}, training loop only | {k['samples_per_s_train']:.0f} ({k['mlp_train_seconds']:.2f} s) "
          f"| {p['mlp']['samples_per_s']:.0f} | {k['samples_per_s_train'] / p['mlp']['samples_per_s']:.2f}x |")
r = p["ridge"]
print(f"| ridge {kr['rows']} x {p['d']} s (ours: float64 sums + host solve) | {kr['seconds']:.2f} "
      f"(accumulate {kr['accumulate_seconds']:.2f}, solve {kr['solve_seconds']:.2f}) "
      f"| torch fp32 {r['seconds']:.2f} | {r['seconds'] / kr['seconds']:.2f}x |")
print(f"| MLP final validation MSE (sanity) | f32 {k32['final_val_loss']:.4g}, tf32 {ktf['final_val_loss']:.4g} | {p['mlp']['val_mse']:.4g} | - |")
PY
