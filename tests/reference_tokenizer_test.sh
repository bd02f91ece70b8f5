#!/usr/bin/env bash
# reference_tokenizer_test.sh ST_DATA BUILD_DIR: our tokenizer against Hugging Face's own
# implementation (scripts/reference/encode.mjs: the Rust `tokenizers` crate via Node bindings).
#
#  1. Trains a BPE tokenizer with ours on the first 300 KB of BUILD_DIR/corpus/kjv.txt
#     (st-data train-tokenizer --vocab_size 1000) and checks that, for a handful of sample
#     texts, `st-data encode` with that tokenizer.json gives exactly the ids Hugging Face's
#     tokenizers gives loading the same file (so the file we write is a valid tokenizer.json
#     that HF reads the way we do).
#  2. Checks our encoding with the real Qwen3 tokenizer (BUILD_DIR/tokenizers/qwen3/
#     tokenizer.json) against the reference on the same samples plus a chat transcript.
#
# Needs: BUILD_DIR/corpus/kjv.txt (scripts/prepare_corpus.sh), BUILD_DIR/tokenizers/qwen3 and
# scripts/reference/node_modules (scripts/fetch_tokenizers.sh), node. Works in
# BUILD_DIR/reference_tokenizer_test (recreated each run; kept for inspection on failure).
set -uo pipefail

prog=reference_tokenizer_test
if [[ $# -ne 2 ]]; then
  echo "usage: bash tests/reference_tokenizer_test.sh ST_DATA_BINARY BUILD_DIR" >&2
  exit 2
fi
st_data=$1
build=$2
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
encode_mjs="$src/scripts/reference/encode.mjs"
corpus="$build/corpus/kjv.txt"
qwen="$build/tokenizers/qwen3/tokenizer.json"
work="$build/reference_tokenizer_test"

die() {
  echo "$prog: $*" >&2
  exit 1
}

[[ -x "$st_data" ]] || die "st-data binary '$st_data' is missing or not executable (build it first)"
command -v node >/dev/null 2>&1 || die "node is missing; install nodejs npm"
[[ -d "$src/scripts/reference/node_modules/@anush008/tokenizers" ]] ||
  die "the reference packages are not installed; run: bash scripts/fetch_tokenizers.sh $build/tokenizers"
[[ -s "$corpus" ]] ||
  die "$corpus is missing; run: bash scripts/prepare_corpus.sh $build/corpus"
[[ -s "$qwen" ]] ||
  die "$qwen is missing; run: bash scripts/fetch_tokenizers.sh $build/tokenizers"

rm -rf "$work"
mkdir -p "$work/samples" || die "cannot create $work"

# ---- sample texts (exact bytes; non-ASCII written as UTF-8 escapes)
printf '%b' "The quick brown fox didn't jump; it's 3.14 meters, 1,234,567 times in 2024-03-15.\n\
We've seen I'LL and   runs   of spaces, trailing spaces   \n\
tabs\tand\t\tmore\ttabs, a blank line:\n\n\
and \"quotes\" (brackets) <|endoftext|>glued<|endoftext|> to words.\n" >"$work/samples/english.txt"
head -n 60 "$corpus" >"$work/samples/kjv_head.txt"
tail -c 20000 "$corpus" | tail -n +2 >"$work/samples/kjv_unseen.txt"
printf '\xe4\xb8\xad\xe6\x96\x87\xe6\xb5\x8b\xe8\xaf\x95\xef\xbc\x8c\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88 \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 \xf0\x9f\x99\x82\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xf0\x9f\x87\xaf\xf0\x9f\x87\xb5 caf\xc3\xa9 cafe\xcc\x81 \xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82\xc2\xa0\xe3\x80\x80x\n' \
  >"$work/samples/cjk_emoji.txt"
printf '%b' \
  '#include <cstdio>\n\n// Sums the squares of 1..n.\nint SumSquares(int n) {\n' \
  '\tint total = 0;\n\tfor (int i = 1; i <= n; ++i) {\n\t\ttotal += i * i;  // no overflow check\n' \
  '\t}\n\treturn total;\n}\n\nint main() { std::printf("%d\\n", SumSquares(10)); }\n' \
  >"$work/samples/code.txt"
printf '%s' '<|im_start|>system
You are a helpful assistant.<|im_end|>
<|im_start|>user
Hello! How are you?<|im_end|>
<|im_start|>assistant
<think>
The user greets me.
</think>

Fine, thanks.<|im_end|>
' >"$work/samples/chat.txt"

# JSON array of ids -> one id a line ("" for []); fails unless it is exactly such an array.
to_lines() {
  local flat
  flat=$(tr -d ' \t\r\n' <"$1")
  [[ "$flat" =~ ^\[(-?[0-9]+(,-?[0-9]+)*)?\]$ ]] || return 1
  flat=${flat#[}
  flat=${flat%]}
  [[ -z "$flat" ]] || printf '%s\n' "$flat" | tr ',' '\n'
}

failures=0
checks=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# compare LABEL TOKENIZER_JSON SAMPLE
compare() {
  local label=$1 tok=$2 sample=$3
  local base="$work/$label"
  checks=$((checks + 1))
  if ! "$st_data" encode --tokenizer "$tok" --input "$sample" >"$base.ours.json" 2>"$base.ours.err"; then
    fail "$label: st-data encode --tokenizer $tok --input $sample failed:"
    tail -n 10 "$base.ours.err" >&2
    return
  fi
  if ! node "$encode_mjs" "$tok" "$sample" >"$base.ref.json" 2>"$base.ref.err"; then
    fail "$label: the reference (node scripts/reference/encode.mjs $tok $sample) failed:"
    tail -n 10 "$base.ref.err" >&2
    return
  fi
  if ! to_lines "$base.ours.json" >"$base.ours.ids"; then
    fail "$label: st-data encode did not print a JSON array of ids on stdout; it printed:"
    head -c 500 "$base.ours.json" >&2
    echo >&2
    return
  fi
  to_lines "$base.ref.json" >"$base.ref.ids" || {
    fail "$label: unexpected output from encode.mjs"
    return
  }
  if cmp -s "$base.ref.ids" "$base.ours.ids"; then
    echo "ok: $label ($(wc -l <"$base.ref.ids") ids)"
  else
    fail "$label: our ids differ from Hugging Face's (line N = id N-1; - reference, + ours;" \
      "files in $work):"
    diff -u --label "reference $label" --label "ours $label" "$base.ref.ids" "$base.ours.ids" |
      head -n 40 >&2
  fi
}

# ---- 1. a tokenizer we train, read by both
head -c 300000 "$corpus" >"$work/train.txt"
if ! "$st_data" train-tokenizer --input "$work/train.txt" --vocab_size 1000 \
  --output "$work/tok.json" >"$work/train.log" 2>&1; then
  echo "FAIL: st-data train-tokenizer failed:" >&2
  tail -n 20 "$work/train.log" >&2
  exit 1
fi
[[ -s "$work/tok.json" ]] || die "st-data train-tokenizer wrote no $work/tok.json"
for s in english kjv_head kjv_unseen cjk_emoji code; do
  compare "trained_$s" "$work/tok.json" "$work/samples/$s.txt"
done

# ---- 2. the real Qwen3 vocabulary
cat "$work/samples/"{english,kjv_head,cjk_emoji,code}.txt >"$work/samples/mixed.txt"
for s in mixed chat kjv_unseen; do
  compare "qwen_$s" "$qwen" "$work/samples/$s.txt"
done

if ((failures > 0)); then
  echo "$prog: $failures of $checks checks failed (work files in $work)" >&2
  exit 1
fi
echo "$prog: all $checks checks agree with Hugging Face's tokenizers"
