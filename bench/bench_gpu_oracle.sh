#!/usr/bin/env bash
# bench_gpu_oracle: the GPU oracle (issue 6 item 6) vs the PyTorch reference
# of the same definition on the same GPU. Not a test. Two sides, run one
# after the other (each holds a 16 GB bf16 model):
#   (a) bench_gpu_oracle (bench/bench_gpu_oracle.c, built with the library):
#       a Qwen3-8B-shaped model (L=36, D=4096, H=32, Hkv=8, dh=128,
#       d_ff=12288, vocab 151936) with random bf16 weights made on the
#       device; per document the CUDA oracle engine's work: forward pass,
#       per-layer KVzip+ scores on the device, gather of the sampled rows,
#       async copy into pinned host buffers (no HDF5); plus the forward pass
#       alone for its MFU
#   (b) bench/oracle_reference_gpu.py: Qwen3ForCausalLM of the same shape in
#       bf16 on the GPU, eager attention, scores from the full attention
#       weights (kvpress' way), samples copied to the host
# Same synthetic repeat prompts on both sides: [16][doc][24][doc][6] with
# --doc-tokens (default 1000) random ids; --docs (default 4) timed documents
# after one warm-up; --samples 500 per document.
# Usage: bench/bench_gpu_oracle.sh [--bin DIR] [--docs N] [--doc-tokens T] [--tiny]
#   --bin: the build dir (or a gpu-pack bin/ dir) holding bench_gpu_oracle or
#   bench/bench_gpu_oracle (default build). --tiny: a tiny shape (smoke run,
#   e.g. under the CPU emulator).
# Env: KVZ_PYTHON (python with torch + transformers; default python3),
#      KVZ_RUNNER (prefix for the binary, e.g. a packed loader; set by
#      scripts/gpu-check).
# Prints a markdown table: tokens/s of full repeat sequences, s/doc, ratio
# (target >= 5x), forward MFU (target >= 40%; peak dense bf16 989.4 TFLOP/s
# for H100 SXM / H200, 756 for H100 PCIe, chosen by device name), peak GPU
# memory of each side.
set -euo pipefail
cd "$(dirname "$0")/.."
bindir=build docs=4 doc_tokens=1000 tiny=
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bindir=$2; shift 2 ;;
    --docs) docs=$2; shift 2 ;;
    --doc-tokens) doc_tokens=$2; shift 2 ;;
    --tiny) tiny=--tiny; shift ;;
    *) echo "bench_gpu_oracle: unknown argument $1" >&2; exit 2 ;;
  esac
done
bin=$bindir/bench/bench_gpu_oracle
[ -x "$bin" ] || bin=$bindir/bench_gpu_oracle
[ -x "$bin" ] || { echo "bench_gpu_oracle: no bench_gpu_oracle under $bindir (a CUDA build)" >&2; exit 1; }
py=${KVZ_PYTHON:-python3}
read -r -a runner <<<"${KVZ_RUNNER:-}"
echo "machine: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1); $(date -u '+%Y-%m-%d %H:%M UTC')"
args=(--docs "$docs" --doc-tokens "$doc_tokens")
[ -n "$tiny" ] && args=(--tiny)
k=$(${runner[@]+"${runner[@]}"} "$bin" "${args[@]}")
echo "kvzap: $k"
p=$("$py" bench/oracle_reference_gpu.py "${args[@]}" 2>"${TMPDIR:-/tmp}/oracle_reference_gpu.err") || {
  echo "reference failed (stderr tail below); kvzap side only"; tail -5 "${TMPDIR:-/tmp}/oracle_reference_gpu.err"
  p='{}'; }
echo "reference: $p"
"$py" - "$k" "$p" <<'PY'
import json, sys
k, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
gib = lambda b: b / 2**30
print(f"device {k['device']} ({k['peak']}); {k['layers']} layers, D={k['d_model']}, "
      f"{k['seq_tokens']} tokens per repeat sequence, {k['docs']} docs, {k['samples']} samples/doc, "
      f"{k['precision']}; kvzap: no HDF5 (engine path to pinned host buffers)")
print()
print("| measure | kvzap (CUDA engine) | PyTorch reference (eager, bf16) | ratio |")
print("|---|---|---|---|")
ratio = k["tokens_per_s"] / p["tokens_per_s"] if p.get("tokens_per_s") else None
print(f"| tokens/s (full repeat sequences) | {k['tokens_per_s']:.0f} | {p.get('tokens_per_s', 'n/a')} "
      f"| {'%.2fx (target >= 5x)' % ratio if ratio else 'n/a'} |")
print(f"| s per document | {k['s_per_doc']:.3f} | {p.get('s_per_doc', 'n/a')} | - |")
print(f"| forward MFU (forward alone, {k['forward_tflops']:.0f} TFLOP/s) | {100 * k['forward_mfu']:.1f}% (target >= 40%) | - | - |")
print(f"| oracle MFU (forward FLOPs / time per document) | {100 * k['oracle_mfu']:.1f}% | - | - |")
pm = p.get("max_memory_allocated")
print(f"| peak GPU memory | {gib(k['peak_gpu_bytes']):.1f} GiB (device in use) | "
      f"{'%.1f GiB (max_memory_allocated)' % gib(pm) if pm else 'n/a'} | - |")
print(f"| model setup s | {k['setup_s']:.1f} | {p.get('setup_s', 'n/a')} | - |")
PY
