#!/usr/bin/env bash
# st-bench on a tiny random model: it runs with two thread counts and prints every field of the
# report (human-readable on stderr with --json) and of the JSON lines (stdout).
#   tests/st_bench_test.sh ST_EXPORT ST_BENCH SOURCE_DIR BINARY_DIR
set -euo pipefail
st_export=$1 st_bench=$2 src=$3 bin=$4
dir="$bin/test_tmp/st_bench"
mkdir -p "$dir"
"$st_export" --random-init --config "$src/configs/model/tiny.json" --quant q4_0 \
  --output "$dir/tiny.stmf" --force > "$dir/export.log" 2>&1 || { cat "$dir/export.log"; exit 1; }
"$st_bench" --model "$dir/tiny.stmf" --threads 1,2 --prompt_tokens 8 --gen_tokens 4 --reps 1 \
  --warmup 0 --membw_mib 256 --membw_passes 2 --json > "$dir/out.jsonl" 2> "$dir/report.txt"
cat "$dir/report.txt"
cat "$dir/out.jsonl"

fail=0
expect() {  # file pattern
  if ! grep -Eq -- "$2" "$1"; then
    echo "FAIL: no line matching '$2' in $(basename "$1")"
    fail=1
  fi
}
for p in '^model +.*tiny\.stmf' '^config +4 layers, H 128, .*8 experts \(k 2\)' '^types +.*q4_0' \
  '^run +kernels ' '^== threads 1 ==' '^== threads 2 ==' \
  '^memory read bandwidth +[0-9.]+ GB/s' '^prefill +[0-9.]+ tok/s median' \
  '^time to first token +[0-9.]+ ms' '^decode +[0-9.]+ tok/s median' \
  '^ReGLU sparsity +decode [0-9.]+%' '^weight bytes / token +[0-9.]+ MB read \(dense [0-9.]+ MB' \
  '^weight-read bandwidth +[0-9.]+ GB/s = [0-9.]+% of the measured' \
  '^bandwidth-bound decode +[0-9.]+ tok/s' '^peak RSS +[0-9.]+ MiB' '^threads +membw GB/s'; do
  expect "$dir/report.txt" "$p"
done
[[ $(wc -l < "$dir/out.jsonl") -eq 2 ]] || { echo "FAIL: expected 2 JSON lines"; fail=1; }
for k in threads membw_gb_s prefill_tok_s_median decode_tok_s_median ttft_ms_median \
  sparsity_decode weight_bytes_per_token dense_weight_bytes_per_token membw_fraction \
  bw_bound_tok_s peak_rss_mib kernel; do
  expect "$dir/out.jsonl" "\"$k\":"
done
expect "$dir/out.jsonl" '"threads":2[,}]'

# Batched decoding (--batch): one row per count, against B = 1, and a JSON line each.
"$st_bench" --model "$dir/tiny.stmf" --threads 2 --prompt_tokens 8 --gen_tokens 4 --reps 1 \
  --warmup 0 --membw_mib 256 --membw_passes 1 --batch 1,3 --json > "$dir/batch.jsonl" 2> "$dir/batch.txt"
expect "$dir/batch.txt" '^batched decode \(2 threads\)'
expect "$dir/batch.txt" '^ +1 +[0-9.]+ +[0-9.]+ +1\.00x'
expect "$dir/batch.txt" '^ +3 +[0-9.]+ +[0-9.]+ +[0-9.]+x'
expect "$dir/batch.jsonl" '"batch":3,'
# Under a memory budget the bandwidth probe fits in it: half of a 300 MiB budget is below the
# probe's 256 MiB minimum, so it is skipped and said so (a 1 GiB buffer would not fit).
"$st_bench" --model "$dir/tiny.stmf" --threads 1 --prompt_tokens 8 --gen_tokens 4 --reps 1 \
  --warmup 0 --memory_budget 300M > "$dir/budget.txt" 2>&1
expect "$dir/budget.txt" '^note +memory bandwidth probe skipped: half the --memory_budget'
expect "$dir/budget.txt" '^memory read bandwidth +not measured'
exit $fail
