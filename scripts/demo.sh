#!/usr/bin/env bash
# The whole pipeline on a fresh Debian 12 machine: install, build, prepare the KJV corpus,
# pretrain the tiny model for a few minutes on CPU, and sample from the checkpoint.
# Re-running continues the existing run in runs/tiny instead of overwriting it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh
bash scripts/build.sh

echo "== corpus: the King James Bible (Debian bible-kjv), byte-level tokens in HDF5"
bash scripts/prepare_corpus.sh runs/data
if [[ ! -s runs/data/kjv.h5 ]]; then
  ./build/data/st-data --input runs/data/kjv.txt --output runs/data/kjv.h5 \
    --tokenizer byte --val_fraction 0.01 --source "King James Bible (Debian bible-kjv)"
fi

echo "== pretraining configs/model/tiny.json (configs/train/tiny.json)"
resume=()
if [[ -f runs/tiny/checkpoint.h5 ]]; then resume=(--resume); fi
./build/train/st-train --config configs/train/tiny.json --run_dir runs/tiny "${resume[@]}"

echo "== sampling from runs/tiny/checkpoint.h5"
./build/train/st-sample --checkpoint runs/tiny/checkpoint.h5 \
  --prompt "And God said" --max_new_tokens 300 --temperature 0.8 --top_k 40 --seed 7

echo "== training curves and expert load: runs/tiny/metrics.svg"
python3 scripts/plot_metrics.py runs/tiny -o runs/tiny/metrics.svg
