#!/usr/bin/env bash
# prepare_corpus.sh OUTDIR: writes OUTDIR/kjv.txt, the King James Bible from Debian's bible-kjv
# as plain verse text (one verse a line, no headings or verse numbers). Idempotent.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: bash scripts/prepare_corpus.sh OUTDIR" >&2
  exit 2
fi
outdir=$1
out="$outdir/kjv.txt"

if [[ -s "$out" ]]; then
  echo "prepare_corpus: $out exists ($(wc -c <"$out") bytes); skipping"
  exit 0
fi
if ! command -v bible >/dev/null 2>&1; then
  echo "prepare_corpus: the 'bible' program is missing;" \
    "install bible-kjv bible-kjv-text: sudo apt-get install bible-kjv bible-kjv-text" >&2
  exit 1
fi

mkdir -p "$outdir"
tmp=$(mktemp "$outdir/kjv.txt.XXXXXX")
trap 'rm -f "$tmp"' EXIT

# `bible` prints "Book N" chapter headings, blank lines, and verses as "  N text". Keep only
# the verses, drop the verse numbers and any trailing whitespace.
bible -l100000 Gen1:1-Rev22:21 |
  sed -n -E 's/^  [0-9]+ (.*[^[:space:]])[[:space:]]*$/\1/p' >"$tmp"

verses=$(wc -l <"$tmp")
if [[ "$verses" -ne 31102 ]]; then
  echo "prepare_corpus: expected 31102 verses from 'bible', got $verses;" \
    "check the bible-kjv-text installation" >&2
  exit 1
fi
chmod 644 "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "prepare_corpus: wrote $out ($(wc -c <"$out") bytes, $verses verses)"
