#!/usr/bin/env bash
# test_provenance: the checkpoint's content hash travels from the dataset to
# the surrogates (issue 20): the oracle stores model_sha256 (an HF directory:
# the SHA-256 of `sha256sum config.json <weights>`; a GGUF: `sha256sum` of
# the file), kvzap train carries it into metrics.json, exports carry it
# (kvpress config.json kvzap.source_model_sha256, GGUF metadata), and
# --resume refuses other weights by that hash. Expected values come from
# coreutils' sha256sum, not from kvzap.
# Env (set by ctest): KVZAP, KVZ_FIXTURES, KVZAP_DEFAULT_MODEL.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAIL: $*"; exit 1; }
attr() { h5dump -a "/$2" "$1" | sed -n 's/^ *(0): "\(.*\)"$/\1/p'; }

cp -r "$KVZ_FIXTURES/tiny/qwen3_f16" model
want=$( (cd model && sha256sum config.json model.safetensors) | sha256sum | cut -d' ' -f1)
for i in $(seq 1 9); do
  printf '{"text": "Note %s: the cache keeps keys and values of every head."}\n' "$i"
done > c.jsonl
o() { "$KVZAP" oracle --quiet --set model.path=model --set oracle.corpus=c.jsonl \
  --set oracle.n_tokens=8 --set oracle.min_doc_tokens=0 --set oracle.max_doc_tokens=100000 \
  --set oracle.train_docs_per_subset=6 --set oracle.test_docs_per_subset=2 \
  --set oracle.docs_per_shard=2 "$@"; }
o --set oracle.output=d.h5
got=$(attr d.h5 model_sha256)
[ "$got" = "$want" ] || fail "dataset model_sha256 '$got', sha256sum manifest '$want'"
echo "dataset: model_sha256 = sha256sum manifest ($want)"
# the tokenizer attribute describes the tokenizer used (docs/oracle-format.md)
info_tok=$("$KVZAP" info model | sed -n 's/^tokenizer: *//p')
[ "$(attr d.h5 tokenizer)" = "$info_tok" ] || fail "tokenizer attribute '$(attr d.h5 tokenizer)' != kvzap info '$info_tok'"

"$KVZAP" train --quiet --no-report --set train.dataset=d.h5 --set train.output=t \
  --set train.epochs=1 >/dev/null
python3 -c 'import json,sys; m=json.load(open("t/metrics.json")); sys.exit(m["model_sha256"] != sys.argv[1])' "$want" ||
  fail "metrics.json lacks the hash"
"$KVZAP" export --set train.output=t --set export.output=ex >/dev/null
python3 -c 'import json,sys; c=json.load(open("ex/config.json")); sys.exit(c["kvzap"]["source_model_sha256"] != sys.argv[1])' "$want" ||
  fail "the kvpress export lacks the hash"
"$KVZAP" export --set train.output=t --set export.format=gguf --set export.output=ex.gguf >/dev/null
"$KVZAP" gguf ex.gguf | grep -q "kvzap.source_model_sha256.*$want" || fail "the GGUF export lacks the hash"
echo "metrics.json, kvpress and GGUF exports carry it"

# resume with other weights (one weight byte changed) is refused by the hash
o --set oracle.output=r.h5 --stop-after 2 >/dev/null 2>&1 || true
[ -d r.h5.parts ] || fail "expected an unfinished run"
size=$(stat -c %s model/model.safetensors)
printf '\x01' | dd of=model/model.safetensors bs=1 seek=$((size - 3)) conv=notrunc status=none
set +e
o --set oracle.output=r.h5 --resume 2>err.txt
rc=$?
set -e
cat err.txt
[ "$rc" -ne 0 ] && grep -q "SHA-256" err.txt || fail "resume with other weights was not refused by the hash"

# a GGUF checkpoint: the file's own sha256sum
want=$(sha256sum "$KVZAP_DEFAULT_MODEL" | cut -d' ' -f1)
"$KVZAP" oracle --quiet --threads 2 --set model.path="$KVZAP_DEFAULT_MODEL" --set oracle.corpus=c.jsonl \
  --set oracle.n_tokens=4 --set oracle.min_doc_tokens=0 --set oracle.max_doc_tokens=100000 \
  --set oracle.train_docs_per_subset=1 --set oracle.test_docs_per_subset=1 --set oracle.output=g.h5
[ "$(attr g.h5 model_sha256)" = "$want" ] || fail "GGUF: model_sha256 differs from sha256sum"
echo "GGUF: model_sha256 = sha256sum of the file"
echo ok
