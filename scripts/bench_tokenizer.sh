#!/usr/bin/env bash
# bench_tokenizer.sh [BUILD_DIR] [--tokenizer TOKENIZER_JSON] [--input TEXT_FILE] [--mb N]
#
# Compares the encoding speed (MB/s, MB = 10^6 bytes) of our tokenizer with Hugging Face's
# (scripts/reference/encode.mjs: the Rust `tokenizers` crate through Node bindings) on the same
# text and tokenizer. Builds nothing; needs a built tree:
#   BUILD_DIR/data/st-data                  (ours: `st-data encode ... --bench`)
#   BUILD_DIR/tokenizers/qwen3/tokenizer.json and scripts/reference/node_modules
#                                           (bash scripts/fetch_tokenizers.sh BUILD_DIR/tokenizers)
#   BUILD_DIR/corpus/kjv.txt                (bash scripts/prepare_corpus.sh BUILD_DIR/corpus)
# Defaults: BUILD_DIR=build (under the source tree), the Qwen3 tokenizer, and the KJV text
# replicated to about --mb (default 40) MB, cached as BUILD_DIR/bench/kjv_<N>mb.txt.
# Both sides time only the encoding and report their best of 3 runs.
set -euo pipefail

prog=bench_tokenizer
die() {
  echo "$prog: $*" >&2
  exit 1
}
usage() {
  echo "usage: bash scripts/bench_tokenizer.sh [BUILD_DIR] [--tokenizer TOKENIZER_JSON]" \
    "[--input TEXT_FILE] [--mb N]" >&2
  exit 2
}

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=""
tok=""
input=""
mb=40
while [[ $# -gt 0 ]]; do
  case $1 in
    --tokenizer) [[ $# -ge 2 ]] || usage; tok=$2; shift 2 ;;
    --input) [[ $# -ge 2 ]] || usage; input=$2; shift 2 ;;
    --mb) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || usage; mb=$2; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "$prog: unknown option $1" >&2; usage ;;
    *) [[ -z "$build" ]] || usage; build=$1; shift ;;
  esac
done
build=${build:-$src/build}
tok=${tok:-$build/tokenizers/qwen3/tokenizer.json}
st_data="$build/data/st-data"
encode_mjs="$src/scripts/reference/encode.mjs"

[[ -x "$st_data" ]] || die "$st_data is missing; build the tree first (scripts/build.sh)"
command -v node >/dev/null 2>&1 || die "node is missing; install nodejs npm"
[[ -d "$src/scripts/reference/node_modules/@anush008/tokenizers" ]] ||
  die "the reference is not installed; run: bash scripts/fetch_tokenizers.sh $build/tokenizers"
[[ -s "$tok" ]] || die "tokenizer $tok is missing; run: bash scripts/fetch_tokenizers.sh $build/tokenizers"

if [[ -z "$input" ]]; then
  kjv="$build/corpus/kjv.txt"
  [[ -s "$kjv" ]] || die "$kjv is missing; run: bash scripts/prepare_corpus.sh $build/corpus"
  input="$build/bench/kjv_${mb}mb.txt"
  want=$((mb * 1000000))
  if [[ ! -s "$input" || $(wc -c <"$input") -lt $want ]]; then
    mkdir -p "$build/bench"
    tmp=$(mktemp "$input.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    while [[ $(wc -c <"$tmp") -lt $want ]]; do cat "$kjv" >>"$tmp"; done
    chmod 644 "$tmp"
    mv -f "$tmp" "$input"
    trap - EXIT
  fi
fi
[[ -s "$input" ]] || die "input $input is missing or empty"
bytes=$(wc -c <"$input")
echo "$prog: $input ($bytes bytes), tokenizer $tok"

# The number before "MB/s" in a line of the given output.
mbs_of() { grep -oE '[0-9]+(\.[0-9]+)?[[:space:]]*MB/s' <<<"$1" | head -n 1 | grep -oE '^[0-9]+(\.[0-9]+)?'; }

if ! ours_out=$("$st_data" encode --tokenizer "$tok" --input "$input" --bench 2>&1); then
  echo "$ours_out" | tail -n 10 >&2
  die "st-data encode --bench failed"
fi
ours=$(mbs_of "$ours_out") || die "st-data encode --bench printed no 'MB/s' line: $(tail -n 3 <<<"$ours_out")"

echo "$prog: running the reference (3 runs; slower, about $((bytes / 1500000 + 1)) s each)..."
if ! ref_out=$(node "$encode_mjs" "$tok" "$input" --bench 2>&1); then
  echo "$ref_out" | tail -n 10 >&2
  die "the reference (encode.mjs --bench) failed"
fi
ref=$(mbs_of "$ref_out") || die "encode.mjs --bench printed no 'MB/s' line: $ref_out"

echo "ours:      $ours MB/s   ($(grep -m1 'MB/s' <<<"$ours_out"))"
echo "reference: $ref MB/s   ($(grep -m1 'MB/s' <<<"$ref_out"))"
awk -v o="$ours" -v r="$ref" 'BEGIN {
  if (r > 0) printf "ratio ours/reference: %.2fx\n", o / r; else print "ratio: n/a (reference 0 MB/s)" }'
