#!/usr/bin/env bash
# End to end: train a BPE and a tiny model for a few steps with st-train, export the checkpoint
# with st-export (q4_0), and verify the file with st-inspect --verify.
#   bash tests/export_checkpoint_test.sh BUILD_DIR
set -euo pipefail
build=$1
src=$(cd "$(dirname "$0")/.." && pwd)
source "$(dirname "${BASH_SOURCE[0]}")/test_util.sh"
work="$build/test_tmp/export_checkpoint"
fresh_dir "$work"
head -c 400000 "$build/corpus/kjv.txt" >"$work/kjv.txt"
"$build/data/st-data" train-tokenizer --input "$work/kjv.txt" --vocab_size 1000 --output "$work/tok.json"
"$build/data/st-data" prepare --tokenizer "$work/tok.json" --input "$work/kjv.txt" --output "$work/data" \
  --val_fraction 0.05
cat >"$work/train.json" <<JSON
{"model_config": "$src/configs/model/tiny.json", "data": "$work/data", "seq_len": 64,
 "micro_batch_size": 4, "max_steps": 3, "warmup_steps": 1, "log_interval": 1,
 "eval_interval": 0, "eval_batches": 1, "checkpoint_interval": 0, "threads": 1}
JSON
"$build/train/st-train" --config "$work/train.json" --run_dir "$work/run" --quiet
"$build/infer/tools/st-export" --input "$work/run/checkpoint.h5" --output "$work/tiny.stmf" --recipe q4_0
"$build/infer/tools/st-inspect" --verify "$work/tiny.stmf" | tee "$work/inspect.txt"
grep -q "checksums: all .* tensors verified" "$work/inspect.txt"
grep -q "blk.3.ffn_down_t.7" "$work/inspect.txt"
# tiny.json names no eos: the export carries the tokenizer's end-of-text id.
eos=$("$build/data/st-data" encode --tokenizer "$work/tok.json" --text "<|endoftext|>")
grep -qF "tokenizer.eos_token_ids = ${eos}" "$work/inspect.txt"
if "$build/infer/tools/st-export" --input "$work/run/checkpoint.h5" --output "$work/tiny.stmf"; then
  echo "st-export replaced an existing file without --force" >&2
  exit 1
fi
echo "export_checkpoint_test: ok"
