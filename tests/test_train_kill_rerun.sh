#!/usr/bin/env bash
# test_train_kill_rerun: output directories are complete as a whole or absent
# (issue 14, findings 2, 6 and 7).
#  1. A re-run of `kvzap train` into a complete output, SIGKILLed while it
#     writes, leaves the old output exactly as it was (diff -r), and
#     `kvzap export` from it still carries the old run's numbers.
#  2. The temporaries the killed run left (<out>.tmp.<pid>, and stale
#     report/export/file temporaries of dead processes) are removed by the
#     next run; a temporary of a live process is kept.
#  3. A report that cannot be written (disk full) makes `kvzap train` exit
#     non-zero, saying the training outputs are complete.
# Env (set by ctest): KVZAP, KVZ_FIXTURES.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAIL: $*"; exit 1; }

for i in $(seq 1 12); do
  printf '{"text": "Note %s: the cache keeps keys and values of every head, layer %s."}\n' "$i" "$i"
done > c.jsonl
"$KVZAP" oracle --quiet --set model.path="$KVZ_FIXTURES/tiny/qwen3_f16" --set oracle.corpus=c.jsonl \
  --set oracle.n_tokens=16 --set oracle.min_doc_tokens=0 --set oracle.max_doc_tokens=100000 \
  --set oracle.train_docs_per_subset=9 --set oracle.test_docs_per_subset=3 \
  --set oracle.output=d.h5 >/dev/null

train() { "$KVZAP" train --quiet --no-report --set train.dataset=d.h5 "$@"; }

# --- 1. kill a re-run into a complete output ---
train --set train.output=out --set train.epochs=2 --set train.seed=1 >/dev/null
[ -f out/metrics.json ] || fail "first run did not complete"
cp -a out snapshot
# the re-run trains much longer and with another seed, so every file differs
"$KVZAP" train --quiet --no-report --set train.dataset=d.h5 --set train.output=out \
  --set train.epochs=4000 --set train.seed=2 >/dev/null 2>&1 &
pid=$!
# kill once the re-run has written something (its predictions of layer 0)
for _ in $(seq 1 600); do
  if compgen -G "out.tmp.$pid/predictions/layer_*.csv" >/dev/null ||
     ! cmp -s out/predictions/layer_0.csv snapshot/predictions/layer_0.csv; then
    break
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
kill -KILL "$pid" 2>/dev/null || fail "the re-run ended before it could be killed (too fast?)"
wait "$pid" 2>/dev/null || true
diff -r snapshot out || fail "the killed re-run changed the complete output"
[ -d "out.tmp.$pid" ] || fail "expected the killed run's temporary out.tmp.$pid"
"$KVZAP" export --set train.output=out --set export.output=ex >/dev/null
python3 - <<'PY' || fail "the export does not carry the complete run's R^2"
import json
want = [l["mlp"]["r2"] for l in json.load(open("snapshot/metrics.json"))["layers"]]
got = json.load(open("ex/config.json"))["kvzap"]["metrics"]["r2"]
print("export R^2", got, "complete run's", want)
assert got == want
PY
echo "killed re-run: old output unchanged, export carries its R^2"

# --- 2. stale temporaries are removed by the next run, live ones kept ---
sleep 1000 & live=$!
trap 'kill "$live" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "out.tmp.$live" out/report.tmp.999999999 ex.tmp.999999999
touch out/metrics.csv.tmp.999999999 "out/metrics.csv.tmp.$live"
dead=$(sh -c 'echo $$')   # a pid that has exited
mkdir "out.tmp.$dead"
train --set train.output=out --set train.epochs=2 --set train.seed=1 >/dev/null
[ ! -e "out.tmp.$pid" ] || fail "the killed run's out.tmp.$pid was not removed"
[ ! -e "out.tmp.$dead" ] || fail "out.tmp.$dead (dead pid) was not removed"
[ -d "out.tmp.$live" ] || fail "out.tmp.$live (a live process) was removed"
for f in metrics.csv compression.csv predictions linear mlp; do  # (timings differ)
  diff -r "snapshot/$f" "out/$f" || fail "re-run with the first run's settings differs in $f"
done
"$KVZAP" report out >/dev/null 2>&1 || true
[ ! -e out/report.tmp.999999999 ] || fail "stale report temporary not removed by kvzap report"
"$KVZAP" export --set train.output=out --set export.output=ex --overwrite >/dev/null
[ ! -e ex.tmp.999999999 ] || fail "stale export temporary not removed by kvzap export"
kill "$live"
echo "stale temporaries removed (dead pids), live one kept"

# --- 3. a full disk while the report is written fails the command ---
if command -v gnuplot >/dev/null; then
  rm -rf out2
  set +e
  # ulimit -f: writes past 64 KiB fail with EFBIG (SIGXFSZ ignored), like a full disk
  (trap '' XFSZ; ulimit -f 64; "$KVZAP" train --quiet --set train.dataset=d.h5 \
     --set train.output=out2 --set train.epochs=2 >out2.stdout 2>out2.stderr)
  rc=$?
  set -e
  cat out2.stderr
  [ "$rc" -ne 0 ] || fail "train exited 0 although the report could not be written"
  grep -q "report could not be written" out2.stderr || fail "no clear message"
  [ ! -e out2/report ] || fail "a partial report is in place"
  echo "report on a full disk: exit $rc"
else
  echo "gnuplot missing: part 3 not run"
fi
echo "ok"
