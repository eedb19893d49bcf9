#!/usr/bin/env bash
# bench_verify.sh [--build DIR] [GIB]: how fast kvzap checks an oracle
# dataset's integrity seal (XXH3-128 over the whole file). Writes GIB
# (default 2) GiB of random bytes to a temporary file, seals it, verifies it
# from the page cache and (as root) from disk. Not a test; run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
if [ "${1:-}" = "--build" ]; then build=$2; shift 2; fi
gib=${1:-2}
bytes=$((gib * 1024 * 1024 * 1024))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I. $(pkg-config --cflags hdf5 2>/dev/null || echo -I/usr/include/hdf5/serial) \
  bench/bench_verify.c "$build/libkvzap.a" -lxxhash -lhdf5_serial -lm -o "$work/bench_verify"
head -c "$bytes" /dev/urandom > "$work/data.h5"
echo "file: $gib GiB; machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
"$work/bench_verify" "$work/data.h5" "$bytes" --cold
