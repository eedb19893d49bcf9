#!/usr/bin/env bash
# bench_train: per-layer training speed of kvzap's MLP surrogate (kvz_mlp_train,
# the default recipe) and ridge fit (kvz_ridge_acc_add + kvz_ridge_solve) vs the
# same MLP recipe in PyTorch (CPU, float32) and scikit-learn Ridge, on the same
# synthetic data and thread count. Not a test. Prints a markdown table.
# Usage: bench/bench_train.sh [--build DIR] [--threads N] [--n N] [--epochs N] [--repeat N]
#   defaults: build dir "build", threads = all cores, n 20000 samples, epochs 15,
#   repeat 1 (best of N runs per side). Shape: D=576, Hkv=3, hidden D/8 = 72.
# Env: KVZ_PYTHON (default /root/.cache/kvzap/refenv/bin/python; needs numpy,
#      torch, scikit-learn, threadpoolctl). OPENBLAS_CORETYPE, when unset, is
#      chosen as `kvzap train` does (cli_tune_openblas: SkylakeX with AVX-512F,
#      Haswell with AVX2), so the C side runs the kernels the CLI would.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build threads=$(nproc) n=20000 epochs=15 repeat=1
D=576 HKV=3
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --n) n=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    *) echo "bench_train: unknown argument $1" >&2; exit 2 ;;
  esac
done
py=${KVZ_PYTHON:-/root/.cache/kvzap/refenv/bin/python}
lib=$build/libkvzap.a
[ -f "$lib" ] || { echo "bench_train: $lib not built (scripts/build)" >&2; exit 1; }
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell; fi
fi
# Percent of all cores busy over the next second (other users of the machine).
cpu_busy() {
  local a b
  read -r -a a < <(head -1 /proc/stat); sleep 1; read -r -a b < <(head -1 /proc/stat)
  local tot=0 i
  for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
  echo "$(( 100 * (tot - (b[4] - a[4]) - (b[5] - a[5])) / (tot > 0 ? tot : 1) ))%"
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
hdf5_libs=$(pkg-config --libs hdf5 2>/dev/null || echo -lhdf5)
cc -O2 -std=c11 -Wall -Wextra -I. bench/bench_train.c "$lib" -o "$tmp/bench_train" \
  $(pkg-config --cflags --libs openblas yaml-0.1 jansson libpcre2-8 libutf8proc) \
  $hdf5_libs -lm -lpthread
"$py" bench/train_reference_bench.py gen "$tmp/data.f32" "$n" "$D" "$HKV"
echo "load average before: $(cut -d" " -f1-3 /proc/loadavg); CPU busy before kvzap: $(cpu_busy)"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads $threads; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "data: n=$n synthetic rows, D=$D, Hkv=$HKV, hidden $((D / 8)); epochs $epochs; best of $repeat"
k=$("$tmp/bench_train" "$tmp/data.f32" "$n" "$D" "$HKV" "$threads" "$epochs" "$repeat")
echo "load average between: $(cut -d" " -f1-3 /proc/loadavg); CPU busy before torch: $(cpu_busy)"
p=$("$py" bench/train_reference_bench.py bench "$tmp/data.f32" "$n" "$D" "$HKV" "$threads" "$epochs" "$repeat")
echo "load average after: $(cut -d" " -f1-3 /proc/loadavg); CPU busy after: $(cpu_busy)"
echo
"$py" - "$k" "$p" <<'PY'
import json, sys
k, p = (json.loads(a) for a in sys.argv[1:3])
km, pm = k["mlp"], p["mlp"]
print(f"kvzap: OpenBLAS core {k['openblas_core']}, {k['openblas_threads']} threads; "
      f"torch {p['torch']} ({p['torch_threads']} threads), scikit-learn {p['sklearn']} "
      f"(BLAS limited by threadpoolctl: {p['blas_limited']})")
print()
print("| measure | kvzap | reference | ratio (kvzap faster by) |")
print("|---|---|---|---|")
print(f"| MLP samples/s (n_train x epochs / s) | {km['samples_per_s']:.0f} ({km['seconds']:.3f} s) "
      f"| torch {pm['samples_per_s']:.0f} ({pm['seconds']:.3f} s) "
      f"| {km['samples_per_s'] / pm['samples_per_s']:.2f}x |")
for key, name in (("ridge_f32", "float32"), ("ridge_f64", "float64")):
    print(f"| ridge fit s (kvzap float64 sums) | {k['ridge']['seconds']:.4f} "
          f"| sklearn Ridge {name} {p[key]['seconds']:.4f} "
          f"| {p[key]['seconds'] / k['ridge']['seconds']:.2f}x |")
print(f"| MLP final validation MSE (sanity) | {km['val_mse']:.4g} | torch {pm['val_mse']:.4g} | - |")
print(f"| ridge training MSE (sanity) | {k['ridge']['train_mse']:.5g} "
      f"| sklearn float32 {p['ridge_f32']['train_mse']:.5g}, float64 {p['ridge_f64']['train_mse']:.5g} | - |")
PY
