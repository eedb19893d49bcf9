#!/usr/bin/env bash
# test_cli_flags: the everyday command line (issue 20).
#  1. Every shorthand flag of oracle/train/export (from --help) is documented
#     in docs/configuration.md.
#  2. A flag and --set for the same key: the later one on the command line
#     wins (both orders); an unknown flag is a usage error.
#  3. A whole pipeline with flags only gives the same dataset and surrogates
#     as the same run with --set.
#  4. Models from a Hugging Face cache made here (HF_HUB_CACHE, HF_HOME):
#     org/name, org/name@commit, a ref whose snapshot is missing, an unknown
#     model; nothing touches the network.
# Env (set by ctest): KVZAP, KVZ_FIXTURES, KVZ_SOURCE_DIR.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAIL: $*"; exit 1; }
expect_fail() { # expect_fail REGEX CMD...: non-zero exit, stderr matches
  local re=$1; shift
  set +e; "$@" >out.txt 2>err.txt; local rc=$?; set -e
  [ "$rc" -ne 0 ] || fail "exit 0: $*"
  grep -Eq -- "$re" err.txt || fail "stderr of '$*' lacks /$re/: $(head -c 400 err.txt)"
}

# --- 1. docs list every flag ---
for cmd in oracle train export; do
  flags=$("$KVZAP" $cmd --help | sed -n '/^Flags/,/^$/p' | grep -o '^  --[a-z-]*' | tr -d ' ')
  [ -n "$flags" ] || fail "$cmd --help lists no flags"
  for f in $flags; do
    grep -q -- "\`$f" "$KVZ_SOURCE_DIR/docs/configuration.md" ||
      fail "docs/configuration.md does not document kvzap $cmd $f"
  done
done
echo "docs list every flag"

# --- 2. order: the last one wins ---
tiny="$KVZ_FIXTURES/tiny/qwen3_f16"
expect_fail "^kvzap oracle: second: cannot open" "$KVZAP" oracle --quiet --model "$tiny" --output o.h5 \
  --corpus first --set oracle.corpus=second
expect_fail "^kvzap oracle: second: cannot open" "$KVZAP" oracle --quiet --model "$tiny" --output o.h5 \
  --set oracle.corpus=first --corpus second
expect_fail "unexpected argument" "$KVZAP" oracle --corpuss x
expect_fail "option needs a value" "$KVZAP" train --data
echo "flag vs --set: the later wins"

# --- 3. flags only == --set ---
for i in $(seq 1 9); do
  printf '{"text": "Note %s: the cache keeps keys and values of every head."}\n' "$i"
done > c.jsonl
"$KVZAP" oracle --quiet --model "$tiny" --corpus c.jsonl --output f.h5 --n-tokens 8 \
  --min-tokens 0 --max-tokens 100000 --train-docs 6 --test-docs 2
"$KVZAP" oracle --quiet --set model.path="$tiny" --set oracle.corpus=c.jsonl \
  --set oracle.output=s.h5 --set oracle.n_tokens=8 --set oracle.min_doc_tokens=0 \
  --set oracle.max_doc_tokens=100000 --set oracle.train_docs_per_subset=6 \
  --set oracle.test_docs_per_subset=2
h5diff -c f.h5 s.h5 || fail "flags and --set datasets differ"
"$KVZAP" train --quiet --no-report --data f.h5 --output tf --model-type mlp --layers 0,1 --epochs 2
"$KVZAP" train --quiet --no-report --set train.dataset=f.h5 --set train.output=ts \
  --set train.model=mlp --set train.layers=0,1 --set train.epochs=2
diff -r tf/mlp ts/mlp && diff tf/metrics.csv ts/metrics.csv || fail "flags and --set training differ"
"$KVZAP" export --input tf --output e.gguf --format gguf --kind mlp --dtype float32 >/dev/null
"$KVZAP" export --set train.output=ts --set export.output=s.gguf --set export.format=gguf \
  --set export.model=mlp --set export.dtype=float32 >/dev/null
cmp e.gguf s.gguf || fail "flags and --set exports differ"
echo "flags-only pipeline = --set pipeline"

# --- 4. the Hugging Face cache ---
hub=$work/hub
mkdir -p "$hub/models--acme--tiny/snapshots/0123abcd" "$hub/models--acme--tiny/refs"
cp "$tiny"/* "$hub/models--acme--tiny/snapshots/0123abcd/"
printf '0123abcd' > "$hub/models--acme--tiny/refs/main"
printf 'ffff0000\n' > "$hub/models--acme--tiny/refs/v2"
HF_HUB_CACHE=$hub "$KVZAP" info acme/tiny | grep -q "snapshots/0123abcd" ||
  HF_HUB_CACHE=$hub "$KVZAP" info acme/tiny | grep -qi "qwen3" || fail "acme/tiny not resolved"
HF_HUB_CACHE=$hub "$KVZAP" info acme/tiny@0123abcd >/dev/null || fail "org/name@commit"
mkdir -p home/hub && mv "$hub"/models--acme--tiny home/hub/
HF_HUB_CACHE= HF_HOME=$work/home "$KVZAP" info acme/tiny >/dev/null || fail "HF_HOME/hub not used"
mv home/hub/models--acme--tiny "$hub"/
expect_fail "points to commit ffff0000, but .*snapshots/ffff0000 is missing" \
  env HF_HUB_CACHE="$hub" "$KVZAP" info acme/tiny@v2
expect_fail "acme/nothing: not a local path, and not in the Hugging Face cache \(looked for .*models--acme--nothing, from HF_HUB_CACHE\)" \
  env HF_HUB_CACHE="$hub" "$KVZAP" info acme/nothing
expect_fail "revision 'nope' is not in the Hugging Face cache" \
  env HF_HUB_CACHE="$hub" "$KVZAP" info acme/tiny@nope
HF_HUB_CACHE=$hub "$KVZAP" oracle --quiet --model acme/tiny --corpus c.jsonl --output h.h5 \
  --n-tokens 8 --min-tokens 0 --max-tokens 100000 --train-docs 6 --test-docs 2
h5dump -a /model_path h.h5 | grep -q '"acme/tiny"' || fail "model_path should stay the id"
h5diff f.h5 h.h5 /layers /layers || fail "the cached snapshot gives other numbers"
echo "Hugging Face cache: ok"
echo ok
