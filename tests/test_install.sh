#!/usr/bin/env bash
# test_install: `cmake --install` gives a tree a runtime can build against
# (docs/runtime-api.md). Installs the build this test belongs to (the CMake
# build directory holding $KVZAP; a CUDA build as well as a CPU one) into a
# temporary prefix, checks what is there, builds the example
# docs/examples/score_export.c from the installed copy twice, with
# pkg-config (PKG_CONFIG_PATH) and with CMake (find_package(kvzap)), and runs
# both builds on the kvpress exports in tests/fixtures/export: their
# log-scores must match kvpress's own (KVzapModel outputs stored with the
# fixtures: y_f32, and y_bf16w for the bfloat16 exports) to 1e-5.
# Without a build directory above $KVZAP (KVZ_INSTALL_TEST_FRESH=1 forces
# it), configures and builds the source tree afresh with -DKVZ_CUDA=OFF
# (minutes, not seconds).
# Env (set by ctest): KVZAP, KVZ_FIXTURES, KVZ_SOURCE_DIR.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
src=${KVZ_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
fixtures=${KVZ_FIXTURES:-$src/tests/fixtures}

# --- the build to install: the CMake build directory holding $KVZAP ---
build=
if [ "${KVZ_INSTALL_TEST_FRESH:-0}" != 1 ] && [ -n "${KVZAP:-}" ]; then
  d=$(cd "$(dirname "$KVZAP")" && pwd)
  while [ "$d" != / ]; do
    if [ -f "$d/CMakeCache.txt" ] && [ -f "$d/cmake_install.cmake" ]; then build=$d; break; fi
    d=$(dirname "$d")
  done
fi
if [ -z "$build" ]; then
  build=$work/build
  echo "no build directory above \$KVZAP: configuring $src afresh (-DKVZ_CUDA=OFF)"
  cmake -S "$src" -B "$build" -DKVZ_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$work/configure.log" 2>&1 ||
    { cat "$work/configure.log"; fail "configure"; }
  cmake --build "$build" -j "$(nproc)" --target kvzap >"$work/build.log" 2>&1 ||
    { tail -50 "$work/build.log"; fail "build"; }
fi
cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
cc=$(cache CMAKE_C_COMPILER)
cc=${cc:-cc}
echo "installing $build (KVZ_CUDA=$(cache KVZ_CUDA), KVZ_SANITIZE=$(cache KVZ_SANITIZE), C compiler $cc)"

prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "cmake --install"; }

# --- the installed tree ---
[ -x "$prefix/bin/kvzap" ] || fail "no bin/kvzap"
pc=$(find "$prefix" -name kvzap.pc -path '*/pkgconfig/*')
[ -n "$pc" ] || fail "no kvzap.pc"
cfgdir=$(dirname "$(find "$prefix" -name kvzapConfig.cmake -path '*/cmake/kvzap/*')")
for f in kvzapConfig.cmake kvzapConfigVersion.cmake; do
  [ -f "$cfgdir/$f" ] || fail "no lib/cmake/kvzap/$f"
done
libdir=$(dirname "$(dirname "$pc")")
[ -f "$libdir/libkvzap.a" ] || fail "no libkvzap.a beside lib/pkgconfig"
for h in common/kvz_error.h trainer/surrogate.h trainer/export.h; do
  [ -f "$prefix/include/kvzap/$h" ] || fail "no include/kvzap/$h"
done
examples=$prefix/share/doc/kvzap/examples
for f in score_export.c CMakeLists.txt; do
  [ -f "$examples/$f" ] || fail "no share/doc/kvzap/examples/$f"
done
# every installed header compiles on its own, from the installed tree alone
# (its relative includes resolve there)
while IFS= read -r h; do
  rel=${h#"$prefix/include/"}
  printf '#include <%s>\n' "$rel" | "$cc" -std=c11 -Wall -Wextra -Werror -fsyntax-only \
    -I "$prefix/include" -x c - || fail "installed header $rel does not compile on its own"
done < <(find "$prefix/include" -name '*.h')
version=$("$prefix/bin/kvzap" --version)
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
pcversion=$(pkg-config --modversion kvzap)
[ "$version" = "kvzap $pcversion" ] || fail "installed CLI says '$version', kvzap.pc '$pcversion'"
echo "installed: $(cd "$prefix" && find . -type f | sort | tr '\n' ' ')"

# --- the example, built against the installed tree ---
# shellcheck disable=SC2046
"$cc" -std=c11 -Wall -Wextra -Werror "$examples/score_export.c" $(pkg-config --cflags kvzap) \
  $(pkg-config --static --libs kvzap) -o "$work/score_export_pc" ||
  fail "pkg-config build of the example (cflags: $(pkg-config --cflags kvzap); libs: $(pkg-config --static --libs kvzap))"
cmake -S "$examples" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_COMPILE_WARNING_AS_ERROR=ON >"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log"; fail "find_package(kvzap) project: configure"; }
cmake --build "$work/cmake" >>"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log"; fail "find_package(kvzap) project: build"; }
echo "built the example with pkg-config and with find_package(kvzap)"

# --- run both on the fixtures: rows x[:, layer, :], expected y[:, layer, :] ---
n_checked=0
for kind in linear mlp; do
  for dtype in f32 bf16; do
    ref=$([ "$dtype" = f32 ] && echo y_f32 || echo y_bf16w)
    n_layers=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["n_layers"])' \
      "$fixtures/export/$kind.json")
    for layer in $(seq 0 $((n_layers - 1))); do
      python3 - "$fixtures/export/$kind.json" "$layer" "$ref" "$work/x.txt" "$work/want.txt" <<'EOF'
import json, sys
f = json.load(open(sys.argv[1])); l = int(sys.argv[2]); ref = f[sys.argv[3]]
n, L, D, H = f["n"], f["n_layers"], f["d_in"], f["d_out"]
with open(sys.argv[4], "w") as o:
    for i in range(n):
        o.write(" ".join(repr(v) for v in f["x"][(i * L + l) * D:(i * L + l + 1) * D]) + "\n")
with open(sys.argv[5], "w") as o:
    for i in range(n):
        o.write(" ".join(repr(v) for v in ref[(i * L + l) * H:(i * L + l + 1) * H]) + "\n")
EOF
      for bin in score_export_pc cmake/score_export; do
        "$work/$bin" "$fixtures/export/${kind}_$dtype" "$layer" "$work/x.txt" >"$work/got.txt" \
          2>"$work/err.txt" || { cat "$work/err.txt"; fail "$bin ${kind}_$dtype layer $layer"; }
        python3 - "$work/got.txt" "$work/want.txt" <<'EOF' || fail "$bin ${kind}_$dtype layer $layer: log-scores differ from kvpress"
import sys
got = [[float(v) for v in l.split()] for l in open(sys.argv[1])]
want = [[float(v) for v in l.split()] for l in open(sys.argv[2])]
if len(got) != len(want) or any(len(a) != len(b) for a, b in zip(got, want)):
    sys.exit(f"shape: got {[len(r) for r in got]}, want {[len(r) for r in want]}")
err = max(abs(a - b) for ra, rb in zip(got, want) for a, b in zip(ra, rb))
if err > 1e-5:
    sys.exit(f"max |got - kvpress| = {err:.3g} > 1e-5")
EOF
        n_checked=$((n_checked + 1))
      done
    done
  done
done
# the synthetic rows (no ROWS argument) and stdin work too
"$work/score_export_pc" "$fixtures/export/linear_f32" >"$work/synthetic.txt" 2>/dev/null
[ "$(wc -l <"$work/synthetic.txt")" = 3 ] || fail "synthetic rows: expected 3 lines"
"$work/cmake/score_export" "$fixtures/export/mlp_bf16" 2 - <"$work/x.txt" >"$work/stdin.txt" 2>/dev/null
"$work/score_export_pc" "$fixtures/export/mlp_bf16" 2 "$work/x.txt" >"$work/file.txt" 2>/dev/null
cmp -s "$work/stdin.txt" "$work/file.txt" || fail "rows from stdin differ from rows from a file"
echo "PASS: $n_checked runs of the installed example match kvpress to 1e-5"
