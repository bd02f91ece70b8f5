#!/usr/bin/env bash
# Runtime throughput on a synthetic SmallThinker-4B-A0.6B (random weights, every matrix Q4_0,
# about 2.3 GB): st-bench with 1 and 2 threads, 128-token prompt, 64 decoded tokens, then our
# numbers against llama.cpp's on the same shapes (the baseline in the runtime issue). Builds the
# two tools if needed and writes the model only when it is not there yet.
#   scripts/bench_runtime.sh [extra st-bench flags, e.g. --reps 5 or --kv_f16=false]
#   ST_BENCH_DIR=/data/bench scripts/bench_runtime.sh   model directory (default runs/bench)
#   ST_BUILD_DIR=build-notorch scripts/bench_runtime.sh build directory (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${ST_BENCH_DIR:-runs/bench}
build=${ST_BUILD_DIR:-build}
model="$dir/4b-q4_0_pure.stmf"

if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DST_WITH_TORCH=OFF
fi
cmake --build "$build" -j "${ST_JOBS:-$(nproc)}" --target st-bench st-export

mkdir -p "$dir"
if [[ ! -f $model ]]; then
  echo "== writing the synthetic model $model (once)"
  "$build/infer/tools/st-export" --random-init --config configs/model/smallthinker-4b-a0.6b.json \
    --quant q4_0_pure --output "$model"
fi

# The report goes to the terminal (stderr), one JSON line per thread count to $dir/bench.jsonl.
"$build/infer/tools/st-bench" --model "$model" --threads 1,2 --prompt_tokens 128 --gen_tokens 64 \
  --json "$@" > "$dir/bench.jsonl"

# llama.cpp on these shapes (Q4_0, same machine class): decode tok/s with 1 and 2 threads,
# prefill of 128 tokens with 2 threads. Floors: decode >= 1.3x, prefill >= 1.2x.
json_num() { sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p" <<< "$1"; }
ratio() {  # ours baseline floor
  awk -v o="$1" -v b="$2" -v f="$3" 'BEGIN {
    r = o / b; printf "%6.1f  %8.1f  %5.2fx  (floor %.1fx: %s)", o, b, r, f, (r >= f ? "met" : "BELOW") }'
}
echo
echo "== against llama.cpp (baseline from the runtime issue)"
while IFS= read -r line; do
  t=$(json_num "$line" threads)
  decode=$(json_num "$line" decode_tok_s_median)
  prefill=$(json_num "$line" prefill_tok_s_median)
  case $t in
    1) echo "threads 1  decode  $(ratio "$decode" 20 1.3)"
       printf 'threads 1  prefill %6.1f  (no llama.cpp baseline)\n' "$prefill" ;;
    2) echo "threads 2  decode  $(ratio "$decode" 35 1.3)"
       echo "threads 2  prefill $(ratio "$prefill" 85 1.2)" ;;
    *) printf 'threads %s  decode %.1f, prefill %.1f tok/s (no llama.cpp baseline)\n' \
         "$t" "$decode" "$prefill" ;;
  esac
done < "$dir/bench.jsonl"
echo "(columns: ours tok/s, llama.cpp tok/s, ratio; machines are shared: compare within one run)"
