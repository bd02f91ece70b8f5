#!/usr/bin/env bash
# Training throughput for the tiny and small configs: tokens/s and the achieved fraction of
# this machine's matmul throughput (torch::mm measured in the same run). Builds if needed.
#   scripts/bench_train.sh [extra st-train-bench flags, e.g. --threads 1]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x build/train/st-train-bench ]] || bash scripts/build.sh
./build/train/st-train-bench --model_config configs/model/tiny.json --seq_len 128 --batch 16 --steps 20 "$@"
./build/train/st-train-bench --model_config configs/model/small.json --seq_len 512 --batch 8 --steps 4 "$@"
