#!/usr/bin/env bash
# test_oom_injection: out-of-memory injection over the main CLI paths
# (docs/fault-injection.md). The LD_PRELOAD shim tests/fault/kvz_failalloc.so
# makes exactly the n-th allocation fail; for each path this runs it once to
# count its allocations N, then once for every n of a deterministic sample of
# [1, N] (all of the first 30, then 40 spread log-uniformly, seeded), in two
# counting scopes (own: calls made by kvzap's code, jansson's included, as it
# allocates through kvzap (model/kvz_json.c); all: calls from every library
# too, but libhdf5's and libcrypto's, see below). Each faulted run must either
#   - fail cleanly: exit 1..125 (no signal, no hang), stderr exactly one line
#     "kvzap CMD: ..." naming the problem ("out of memory" / "Cannot allocate
#     memory"; in the all scope a library's own wording is counted, not
#     failed), no sanitizer report, and nothing that looks complete (oracle:
#     no .h5 marked complete; train: no metrics.json; export: no export);
#     kvzap train whose report alone failed may exit 1 with its two lines and
#     complete training outputs identical to the baseline's (by design);
#   - or tolerate the failure, exit 0 and produce output identical to the
#     baseline run (timings aside).
# Failures at the sites listed in KNOWN_SITES (not fixed yet) are reported as
# KNOWN instead of FAIL.
# Paths: info (default GGUF: its tokenizer and metadata), generate (tiny HF
# checkpoint, chat template, 3 tokens), generate_gguf (default model, own
# scope, a smaller sample: each run loads 135M parameters), oracle (2
# documents, tiny model), train (on the baseline oracle dataset), export (of
# the baseline training output). About 2 minutes on 2 cores.
# Env (set by ctest): KVZAP, KVZ_FIXTURES, KVZAP_DEFAULT_MODEL; optional:
#   KVZ_FAILALLOC    the shim (default <dir of $KVZAP>/tests/fault/kvz_failalloc.so)
#   KVZ_OOM_PATHS    paths to run (default: all of the above)
#   KVZ_OOM_SCOPES   scopes (default "own all")
#   KVZ_OOM_FIRST / KVZ_OOM_SPREAD / KVZ_OOM_SEED   the sample (30 / 40 / 14)
#   KVZ_OOM_EXCLUDE  libraries left out of the all scope (libhdf5,libcrypto)
#   KVZ_OOM_VERBOSE=1  also list the all-scope messages not saying "memory"
#   KVZ_OOM_KEEP=1   keep the work directory (printed) for inspection
set -uo pipefail

if ldd "$KVZAP" 2>/dev/null | grep -E 'libasan|libclang_rt\.asan' >/dev/null; then  # no -q: with pipefail, grep -q's early exit kills ldd (SIGPIPE)
  echo "SKIP: $KVZAP is built with AddressSanitizer, whose allocator an LD_PRELOAD malloc shim cannot replace"
  exit 77
fi
shim=${KVZ_FAILALLOC:-$(cd "$(dirname "$KVZAP")" && pwd)/tests/fault/kvz_failalloc.so}
[ -f "$shim" ] || { echo "FAIL: the shim $shim is not built (target kvz_failalloc)"; exit 1; }
case $shim in /*) ;; *) shim=$PWD/$shim ;; esac
KVZAP=$(cd "$(dirname "$KVZAP")" && pwd)/$(basename "$KVZAP")
src_dir=${KVZ_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}

work=$(mktemp -d)
if [ "${KVZ_OOM_KEEP:-0}" = 1 ]; then
  echo "work directory: $work"
else
  trap 'rm -rf "$work"' EXIT
fi
cd "$work" || exit 1

# one thread everywhere: the allocation sequence is then deterministic.
# OPENBLAS_CORETYPE set keeps the CLI from re-executing itself
# (cli_tune_openblas), which would restart the count.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
[ -n "${OPENBLAS_CORETYPE:-}" ] || export KVZAP_BLAS_TUNE=0
unset KVZ_FAIL_ALLOC_AT KVZ_FAIL_ALLOC_SCOPE KVZ_ALLOC_COUNT_FILE KVZ_FAIL_ALLOC_VERBOSE \
  KVZ_FAIL_ALLOC_PROGRAM KVZ_FAIL_ALLOC_EXCLUDE

tiny=$KVZ_FIXTURES/tiny/qwen3_f16
# scope all: allocations made on behalf of libhdf5 (a libhdf5 frame on the
# stack) are left out: HDF5 1.10.8 crashes (endless error-stack recursion,
# a NULL dereference) when an allocation fails while it initialises itself
# (docs/fault-injection.md)
# Likewise libcrypto (OpenSSL 3, SHA-256 of the checkpoint): EVP_MD_fetch
# dereferences a NULL lock when its lazy initialisation ran out of memory.
exclude=${KVZ_OOM_EXCLUDE-libhdf5,libcrypto}
for i in 1 2; do
  printf '{"text": "Note %s: the cache keeps the keys and values of every attention head, and the pruner drops the least useful ones."}\n' "$i"
done > "$work/corpus.jsonl"

# Known findings, not fixed yet (docs/fault-injection.md lists them with
# their diagnosis): a faulted run that does not fail cleanly is rerun with a
# backtrace of the failed allocation (KVZ_FAIL_ALLOC_VERBOSE=2, addr2line);
# its site is the innermost kvzap frame outside the generic helpers
# (model/kvz_json.c, common/kvz_file.c), with the functions it is inlined
# into; when the site ("function at file:line") contains one of these
# patterns the run is reported as KNOWN instead of FAIL. Remove an entry
# once its cause is fixed.
KNOWN_SITES=(
  # none: every site the test found is fixed (docs/fault-injection.md)
)

# site_of DIR N SCOPE PATH: the resolved kvzap frames of allocation N's
# failure, one "function at file:line" per line
site_of() {
  local dir=$1.bt
  (export KVZ_FAIL_ALLOC_VERBOSE=2; run_one "$dir" "$2" "$3" "$4")
  command -v addr2line >/dev/null || return 0
  grep -o "$(basename "$KVZAP")(+0x[0-9a-f]*)" "$dir/stderr" | sed 's/.*(+\(0x[0-9a-f]*\))/\1/' |
    while read -r a; do printf '0x%x\n' $((a - 1)); done |
    addr2line -f -i -p -e "$KVZAP" 2>/dev/null | sed "s|$src_dir/||"
}

# cmd_PATH: the command of one run, in the current (fresh) directory.
# out_PATH: what "complete output" means, checked after a clean failure
# (prints a problem, empty if none); same_PATH: compares with the baseline.
T=(timeout -k 5 120)
cmd_info() { "${T[@]}" "$KVZAP" info "$KVZAP_DEFAULT_MODEL"; }
cmd_generate() { "${T[@]}" "$KVZAP" generate "$tiny" --chat --prompt "Hello world, how are you?" --max-tokens 3 --threads 1; }
cmd_generate_gguf() { "${T[@]}" "$KVZAP" generate "$KVZAP_DEFAULT_MODEL" --prompt "The KV cache" --max-tokens 3 --threads 1; }
cmd_oracle() {
  "${T[@]}" "$KVZAP" oracle --quiet --threads 1 --device cpu --set model.path="$tiny" \
    --set oracle.corpus="$work/corpus.jsonl" --set oracle.n_tokens=8 --set oracle.min_doc_tokens=0 \
    --set oracle.max_doc_tokens=100000 --set oracle.train_docs_per_subset=1 \
    --set oracle.test_docs_per_subset=1 --set oracle.docs_per_shard=1 --set oracle.output=o.h5
}
cmd_train() {
  "${T[@]}" "$KVZAP" train --quiet --threads 1 --device cpu --set train.dataset="$work/base_oracle/o.h5" \
    --set train.output=tr --set train.epochs=2
}
cmd_export() { "${T[@]}" "$KVZAP" export --set train.output="$work/base_train/tr" --set export.output=ex; }

out_info() { :; }
out_generate() { :; }
out_generate_gguf() { :; }
out_oracle() {
  [ -e o.h5 ] || return 0
  if h5dump -a /complete o.h5 2>/dev/null | grep -q "(0): 1"; then echo "o.h5 exists and is marked complete"; fi
}
out_train() { [ ! -e tr/metrics.json ] || echo "tr/metrics.json (the completion marker) exists"; }
out_export() { [ ! -e ex ] || echo "the export directory ex exists"; }

same_stdout() { cmp -s stdout "$1/stdout" || echo "stdout differs from the baseline"; }
same_info() { same_stdout "$1"; }
same_generate() { same_stdout "$1"; }
same_generate_gguf() { same_stdout "$1"; }
same_oracle() {
  h5diff -c "$1/o.h5" o.h5 >/dev/null 2>&1 || echo "o.h5 differs from the baseline (h5diff)"
}
# same_tree BASE_TR TR [DIFF OPTIONS]: training outputs equal but for the
# timings (metrics.json *_seconds, the seconds column of train_log.csv)
same_tree() {
  local a=$1 b=$2
  shift 2
  diff -r -I '_seconds"' -x train_log.csv "$@" "$a" "$b" >/dev/null &&
    cmp -s <(cut -d, -f1-5 "$a/train_log.csv") <(cut -d, -f1-5 "$b/train_log.csv")
}
same_train() { same_tree "$1/tr" tr || echo "tr/ differs from the baseline (diff -r)"; }
# report_only_failed DIR BASE: kvzap train said the report could not be
# written but the training outputs are complete; true when they are identical
# to the baseline's and no report/ exists
report_only_failed() {
  sed -n 2p "$1/stderr" | grep -q "^kvzap train: the training outputs in tr are complete" || return 1
  [ ! -e "$1/tr/report" ] || return 1
  same_tree "$2/tr" "$1/tr" -x report
}
same_export() { diff -r "$1/ex" ex >/dev/null || echo "ex/ differs from the baseline (diff -r)"; }

# run_one DIR N SCOPE PATH: run PATH in fresh DIR with allocation N failing
# (0: none) and the count in DIR/count; sets rc. The shim is preloaded into
# timeout too, but only arms itself in the process named kvzap.
run_one() {
  local dir=$1 n=$2 scope=$3 path=$4
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" &&
    export KVZ_FAIL_ALLOC_AT=$n KVZ_FAIL_ALLOC_SCOPE=$scope KVZ_ALLOC_COUNT_FILE="$dir/count" \
      KVZ_FAIL_ALLOC_PROGRAM=kvzap KVZ_FAIL_ALLOC_EXCLUDE="$exclude" LD_PRELOAD="$shim${LD_PRELOAD:+:$LD_PRELOAD}" &&
    "cmd_$path" >stdout 2>stderr)
  rc=$?
}

# sample N SEED: all of 1..FIRST, then SPREAD distinct n log-uniform in (FIRST, N]
sample() {
  python3 - "$1" "$2" "${KVZ_OOM_FIRST:-30}" "${KVZ_OOM_SPREAD:-40}" <<'PY'
import math, random, sys
n, seed, first, spread = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
picks = set(range(1, min(first, n) + 1))
rng = random.Random(seed)
if n > first:
    want = min(spread, n - first)
    tries = 0
    while len(picks) < min(first, n) + want and tries < 100000:
        tries += 1
        picks.add(min(n, first + max(1, int(round(math.exp(rng.uniform(0, math.log(n - first))))))))
    picks.add(n)
print(" ".join(map(str, sorted(picks))))
PY
}

failures=0
summary=()
known=0
finding() { # finding PATH SCOPE N TEXT
  local key="$1:$2:$3" frames site pat
  frames=$(site_of "$work/run" "$3" "$2" "$1")
  # the first frame outside the helpers and what it is inlined into
  site=$(awk '/model\/kvz_json\.c|common\/kvz_file\.c/ && !seen { next }
              { seen = 1; print }' <<<"$frames" | awk 'NR == 1 || /^ *\(inlined by\)/ { print; next } { exit }')
  for pat in "${KNOWN_SITES[@]}"; do
    if [ -n "$site" ] && grep -qF -- "$pat" <<<"$site"; then
      echo "  KNOWN $key ($pat): $4"
      known=$((known + 1))
      return
    fi
  done
  echo "  FAIL $key: $4"
  [ -n "$frames" ] && echo "$frames" | head -n 8 | sed 's/^/      /'
  failures=$((failures + 1))
}

paths=${KVZ_OOM_PATHS:-"info generate generate_gguf oracle train export"}
scopes=${KVZ_OOM_SCOPES:-"own all"}
t_all=$(date +%s)
# train reads the oracle baseline, export the train baseline (own scope)
for path in oracle train; do
  run_one "$work/base_$path" 0 own "$path"
  [ "$rc" -eq 0 ] || { echo "FAIL: the $path baseline exits $rc: $(head -c 600 "$work/base_$path/stderr")"; exit 1; }
done
for path in $paths; do
  for scope in $scopes; do
    [ "$path" = generate_gguf ] && [ "$scope" != own ] && continue
    t0=$(date +%s)
    base=$work/base_$path
    [ "$scope" = own ] || base=$work/base_${path}_$scope
    rc=0
    [ -f "$base/count" ] || run_one "$base" 0 "$scope" "$path"
    if [ "$rc" -ne 0 ]; then
      echo "FAIL: $path ($scope): the baseline run exits $rc: $(head -c 600 "$base/stderr")"
      failures=$((failures + 1)); continue
    fi
    total=$(awk '$1 == "count" { print $2 }' "$base/count")
    if [ "$path" = generate_gguf ]; then
      ns=$(KVZ_OOM_FIRST=${KVZ_OOM_FIRST:-8} KVZ_OOM_SPREAD=${KVZ_OOM_SPREAD_GGUF:-12} sample "$total" "${KVZ_OOM_SEED:-14}-$path-$scope")
    else
      ns=$(sample "$total" "${KVZ_OOM_SEED:-14}-$path-$scope")
    fi
    tried=0 clean=0 tolerated=0 notfired=0 unclear=0 reportfail=0
    for n in $ns; do
      d=$work/run
      run_one "$d" "$n" "$scope" "$path"
      tried=$((tried + 1))
      fired=$(awk '$1 == "fired" { print $2 }' "$d/count" 2>/dev/null)
      where=$(awk '$1 == "caller" { c = $2 } $1 == "object" { o = $2 } END { if (c) print o "+" c }' "$d/count" 2>/dev/null)
      if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        finding "$path" "$scope" "$n" "hang (killed after 120 s) [$where]"; continue
      elif [ "$rc" -ge 126 ]; then
        finding "$path" "$scope" "$n" "exit $rc (signal $((rc - 128))) [$where]: $(tail -n 3 "$d/stderr" | tr '\n' '|')"; continue
      fi
      if grep -qE 'Sanitizer|runtime error:' "$d/stderr"; then
        finding "$path" "$scope" "$n" "sanitizer report [$where]: $(head -n 3 "$d/stderr" | tr '\n' '|')"; continue
      fi
      if [ "$rc" -eq 0 ]; then
        if [ "$fired" != 1 ]; then
          notfired=$((notfired + 1))   # the run made fewer allocations than the baseline
        fi
        problem=$(cd "$d" && "same_$path" "$base")
        if [ -n "$problem" ]; then
          finding "$path" "$scope" "$n" "exit 0 after the failed allocation but $problem [$where]"
        else
          tolerated=$((tolerated + 1))
        fi
        continue
      fi
      lines=$(grep -c . "$d/stderr")
      msg=$(head -n 1 "$d/stderr")
      only_report=0
      if [ "$path" = train ] && [ "$lines" -eq 2 ] && report_only_failed "$d" "$base"; then
        # by design (cmd_train.c finish_report): the training outputs are
        # complete, the report is not; exit 1 with two lines saying so
        lines=1 only_report=1
      fi
      if [ "$lines" -ne 1 ] || [[ $msg != "kvzap "* ]]; then
        finding "$path" "$scope" "$n" "exit $rc with $lines stderr lines (expected one 'kvzap CMD: ...') [$where]: $(head -n 4 "$d/stderr" | tr '\n' '|')"
        continue
      fi
      if ! grep -qiE 'out of memory|cannot allocate memory' <<<"$msg"; then
        if [ "$scope" = own ]; then
          finding "$path" "$scope" "$n" "exit $rc, the message does not say out of memory [$where]: $msg"
          continue
        fi
        # a library that reports its failed allocation as something else
        # (jansson: "invalid token") is noted, not failed
        unclear=$((unclear + 1))
        [ "${KVZ_OOM_VERBOSE:-0}" = 1 ] && echo "  note $path:$scope:$n: unclear message [$where]: $msg"
      fi
      problem=
      [ "$only_report" = 1 ] || problem=$(cd "$d" && "out_$path")
      if [ -n "$problem" ]; then
        finding "$path" "$scope" "$n" "exit $rc but $problem [$where]"
        continue
      fi
      clean=$((clean + 1))
      reportfail=$((reportfail + only_report))
    done
    dt=$(( $(date +%s) - t0 ))
    extra=
    [ "$reportfail" -gt 0 ] && extra+=", $reportfail of them only the report"
    [ "$unclear" -gt 0 ] && extra+=", $unclear with a message not saying out of memory"
    [ "$notfired" -gt 0 ] && extra+=", $notfired not reached"
    line=$(printf '%-13s %-3s N=%-6s tried %2d: %2d clean failures, %2d tolerated (exit 0, identical)%s, %ds' \
      "$path" "$scope" "$total" "$tried" "$clean" "$tolerated" "$extra" "$dt")
    echo "$line"
    summary+=("$line")
  done
done
echo "--- summary ($(( $(date +%s) - t_all ))s in all; $known known findings, see KNOWN_SITES)"
printf '%s\n' "${summary[@]}"
if [ "$failures" -gt 0 ]; then
  echo "FAIL: $failures faulted runs did not fail cleanly"
  exit 1
fi
echo "PASS: every injected allocation failure fails cleanly or is tolerated"
