#!/usr/bin/env bash
# Training throughput for the tiny and small configs: tokens/s and the achieved fraction of
# this machine's matmul throughput (torch::mm measured in the same run) and the MoE's share of
# a step, with the experts grouped and as the per-expert loop; then 1 process against
# 2 data-parallel processes on the small config with the all-reduce wait. Builds if needed.
#   scripts/bench_train.sh [extra st-train-bench flags, e.g. --threads 1]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x build/train/st-train-bench ]] || bash scripts/build.sh
# Each config with the experts grouped (the default) and as the per-expert loop (the reference),
# with the MoE's share of a step.
for moe in grouped loop; do
  ./build/train/st-train-bench --model_config configs/model/tiny.json --seq_len 128 --batch 16 \
    --steps 20 --moe $moe "$@"
  ./build/train/st-train-bench --model_config configs/model/small.json --seq_len 512 --batch 8 \
    --steps 4 --moe $moe "$@"
done
# Gradient checkpointing on small at seq 2048: peak memory and tokens/s with and without.
for gc in false true; do
  ./build/train/st-train-bench --model_config configs/model/small.json --seq_len 2048 --batch 1 \
    --steps 1 --grad_checkpoint=$gc "$@"
done
# Mixed precision (bf16 autocast) on tiny: pays only with bf16 arithmetic in hardware.
./build/train/st-train-bench --model_config configs/model/tiny.json --seq_len 128 --batch 16 \
  --steps 3 --precision bf16 "$@"

# Data parallelism: the small config (byte vocabulary) for a few steps, 1 process x 2 threads
# against 2 processes x 1 thread (scripts/launch_local.sh) with the same global batch (8 x 512
# tokens), on the KJV as bytes (prepared here when missing). Prints tokens/s and the time a step
# waits for the gradient all-reduce after its backward.
if [[ ! -f runs/data/kjv-bytes/manifest.json ]] ||
  ! grep -q '"complete": *true' runs/data/kjv-bytes/manifest.json; then
  bash scripts/prepare_corpus.sh runs/data
  ./build/data/st-data prepare --tokenizer byte --input runs/data/kjv.txt \
    --output runs/data/kjv-bytes --val_fraction 0.01 --overwrite
fi
dp=runs/bench-dp
rm -rf "$dp" && mkdir -p "$dp"
for n in 1 2; do
  python3 - "$n" "$dp/small-$n.json" << 'PY'
import json, os, sys
n, out = int(sys.argv[1]), sys.argv[2]
c = json.load(open("configs/train/small.json"))
c["model_config"] = os.path.abspath("configs/model/small.json")
c["data"] = os.path.abspath("runs/data/kjv-bytes")
c.update(micro_batch_size=8 // n, grad_accum_steps=1, max_steps=8, warmup_steps=2,
         log_interval=4, eval_interval=0, checkpoint_interval=0, threads=2 // n)
json.dump(c, open(out, "w"))
PY
done
./build/train/st-train --config "$dp/small-1.json" --run_dir "$dp/run-1" --quiet
bash scripts/launch_local.sh 2 --config "$dp/small-2.json" --run_dir "$dp/run-2" --quiet
python3 - "$dp" << 'PY'
import json, sys
d = sys.argv[1]
def last(run):
    rows = [j for j in map(json.loads, open(f"{d}/{run}/metrics.jsonl")) if j["type"] == "train"]
    return rows[-1]
one, two = last("run-1"), last("run-2")
print("\n== data parallelism, small config, global batch 8 x 512 tokens (steps 5-8)")
print(f"1 process  x 2 threads: {one['tokens_per_s']:8.0f} tokens/s")
print(f"2 processes x 1 thread : {two['tokens_per_s']:8.0f} tokens/s  ({two['tokens_per_s'] / one['tokens_per_s']:.2f}x), "
      f"all-reduce wait {two['allreduce_wait_ms_per_step']:.1f} ms/step")
PY
