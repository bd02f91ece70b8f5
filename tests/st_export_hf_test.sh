#!/usr/bin/env bash
# st-export --format hf from the command line on a tiny model: random weights -> HF directory
# (f32) -> HF directory (bf16, sharded) -> model file; every directory checked by an independent
# Python reader (tests/check_hf_dir.py: json + struct only); the flag errors and --force.
#   tests/st_export_hf_test.sh ST_EXPORT ST_INSPECT SOURCE_DIR BINARY_DIR
set -euo pipefail
st_export=$1 st_inspect=$2 src=$3 bin=$4
source "$(dirname "${BASH_SOURCE[0]}")/test_util.sh"
dir="$bin/test_tmp/st_export_hf"
fresh_dir "$dir"
check_dir() { python3 "$src/tests/check_hf_dir.py" "$@"; }

# description, expected message (regex), then an st-export command line that must fail with it
refused() {
  local what=$1 want=$2
  shift 2
  if "$st_export" "$@" > "$dir/refused.log" 2>&1; then
    echo "FAIL: $what: accepted"; fail=1; return
  fi
  check "$what" matches "$dir/refused.log" "$want"
}

# A small checkpoint: the tiny config with random weights, as a Hugging Face directory (f32).
"$st_export" --random-init --config "$src/configs/model/tiny.json" --seed 5 --format hf \
  --hf_dtype f32 --output "$dir/f32" > "$dir/f32.log" 2>&1 || { cat "$dir/f32.log"; exit 1; }
check "f32 directory" check_dir "$dir/f32" --dtype F32
check "f32 single file" test -f "$dir/f32/model.safetensors" -a ! -e "$dir/f32/model.safetensors.index.json"

# Any source: the f32 directory -> bf16, sharded at 1 MB.
"$st_export" --input "$dir/f32" --format hf --max_shard_size 1MB --output "$dir/bf16" \
  > "$dir/bf16.log" 2> "$dir/bf16.err" || { cat "$dir/bf16.log" "$dir/bf16.err"; exit 1; }
check "bf16 sharded directory, rounding checked" \
  check_dir "$dir/bf16" --dtype BF16 --min_shards 3 --f32_reference "$dir/f32"
check "shard names" test -f "$dir/bf16/model-00001-of-0000$(ls "$dir/bf16" | grep -c '^model-0').safetensors"
check "progress on stderr" matches "$dir/bf16.err" '126/126 tensors, [0-9.]+/[0-9.]+ MB, [0-9.]+ MB/s, ETA [0-9]+ s'
check "summary" matches "$dir/bf16.log" "wrote .*/bf16: 126 tensors in [0-9]+ safetensors files"

# The export imports back into the model file, which verifies.
"$st_export" --input "$dir/bf16" --output "$dir/bf16.stmf" --recipe q4_0 > "$dir/stmf.log" 2>&1 \
  || { cat "$dir/stmf.log"; exit 1; }
check "model file verifies" "$st_inspect" "$dir/bf16.stmf" --verify --tensors=false \
  > "$dir/inspect.log"

# Hugging Face's own tokenizers (Rust, via scripts/reference: installed by
# scripts/fetch_tokenizers.sh) loads the byte tokenizer's tokenizer.json and encodes text to its
# bytes, as ByteTokenizer does. Skipped when the reference packages are not installed.
if command -v node > /dev/null && [[ -d "$src/scripts/reference/node_modules/@anush008/tokenizers" ]]; then
  printf 'In the beginning, h\xc3\xa9llo \xe2\x88\x91 \xf0\x9f\x99\x82\n\ttabs  and spaces\r\n' > "$dir/text.txt"
  node "$src/scripts/reference/encode.mjs" "$dir/f32/tokenizer.json" "$dir/text.txt" > "$dir/ref_ids.txt"
  python3 -c 'import sys; print(str(list(open(sys.argv[1], "rb").read())).replace(" ", ""))' \
    "$dir/text.txt" > "$dir/byte_ids.txt"
  check "HF tokenizers encodes the byte tokenizer.json to bytes" cmp -s "$dir/ref_ids.txt" "$dir/byte_ids.txt"
else
  echo "skip: Hugging Face reference tokenizers not installed (scripts/fetch_tokenizers.sh)"
fi

# Flag errors.
refused "recipe with hf" "--recipe applies only to --format stmf" \
  --input "$dir/f32" --format hf --recipe q8_0 --output "$dir/never"
refused "quant with hf" "--quant applies only to --format stmf" \
  --input "$dir/f32" --format hf --quant q8_0 --output "$dir/never"
refused "hf_dtype with stmf" "--hf_dtype applies only with --format hf" \
  --input "$dir/f32" --hf_dtype f32 --output "$dir/never.stmf"
refused "unknown format" "--format onnx is not a format; use stmf .*, hf .* or gguf" \
  --input "$dir/f32" --format onnx --output "$dir/never"
refused "bad dtype" "unknown Hugging Face weight type 'f16'" \
  --input "$dir/f32" --format hf --hf_dtype f16 --output "$dir/never"
refused "bad shard size" "--max_shard_size: invalid size '5XB'" \
  --input "$dir/f32" --format hf --max_shard_size 5XB --output "$dir/never"
refused "output is the input" "is the --input directory" \
  --input "$dir/f32" --format hf --force --output "$dir/f32/"
check "nothing created by refused commands" test ! -e "$dir/never" -a ! -e "$dir/never.stmf"
refused "non-empty directory" "is not empty .*--force" \
  --input "$dir/f32" --format hf --output "$dir/bf16"
check "refused directory unchanged" check_dir "$dir/bf16" --dtype BF16 --min_shards 3

# --force over the sharded export with one file: the old shards and index go, other files stay.
echo "mine" > "$dir/bf16/README.md"
"$st_export" --input "$dir/f32" --format hf --force --output "$dir/bf16" > "$dir/force.log" 2>&1 \
  || { cat "$dir/force.log"; exit 1; }
check "forced export is one file" check_dir "$dir/bf16" --dtype BF16 --f32_reference "$dir/f32"
check "old shards removed" test -z "$(ls "$dir/bf16" | grep '^model-0' || true)"
check "old index removed" test ! -e "$dir/bf16/model.safetensors.index.json"
check "other files kept" grep -q mine "$dir/bf16/README.md"

# The stmf path still works as before.
"$st_export" --input "$dir/f32" --output "$dir/f32.stmf" --recipe f32 > "$dir/f32stmf.log" 2>&1 \
  || { cat "$dir/f32stmf.log"; exit 1; }
check "stmf export" matches "$dir/f32stmf.log" "recipe f32: .*"

exit $fail
