#!/usr/bin/env bash
# The whole pipeline on a fresh Debian 12 machine: install, build, prepare the KJV corpus,
# pretrain the tiny model for a few minutes on CPU, sample from the checkpoint, and export it
# to the quantized model file.
# Re-running continues the existing run in runs/tiny instead of overwriting it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh
bash scripts/build.sh

echo "== corpus: the King James Bible (Debian bible-kjv)"
bash scripts/prepare_corpus.sh runs/data
if [[ ! -s runs/data/kjv-bpe4096.json ]]; then
  echo "== tokenizer: byte-level BPE with 4096 tokens trained on the corpus"
  ./build/data/st-data train-tokenizer --input runs/data/kjv.txt --vocab_size 4096 \
    --output runs/data/kjv-bpe4096.json
fi
if [[ ! -f runs/data/kjv/manifest.json ]] || ! grep -q '"complete": *true' runs/data/kjv/manifest.json; then
  echo "== tokens: HDF5 shards in runs/data/kjv"
  ./build/data/st-data prepare --tokenizer runs/data/kjv-bpe4096.json --input runs/data/kjv.txt \
    --output runs/data/kjv --val_fraction 0.01 --model_config configs/model/tiny.json
fi

echo "== pretraining configs/model/tiny.json (configs/train/tiny.json)"
resume=()
if [[ -f runs/tiny/checkpoint.h5 ]]; then resume=(--resume); fi
./build/train/st-train --config configs/train/tiny.json --run_dir runs/tiny "${resume[@]}"

echo "== sampling from runs/tiny/checkpoint.h5"
./build/train/st-sample --checkpoint runs/tiny/checkpoint.h5 \
  --prompt "And God said" --max_new_tokens 300 --temperature 0.8 --top_k 40 --seed 7

echo "== export to the quantized model file (q4_0 experts, q8_0 attention/embeddings)"
./build/infer/tools/st-export --input runs/tiny/checkpoint.h5 --output runs/tiny/tiny-q4_0.stmf \
  --recipe q4_0 --force
./build/infer/tools/st-inspect --verify --tensors=false --config=false runs/tiny/tiny-q4_0.stmf

echo "== running the exported file with the torch-free runtime (first, scalar slice)"
./build/infer/tools/st-run --model runs/tiny/tiny-q4_0.stmf --prompt "And God said" \
  --max_new_tokens 100 --temperature 0.8 --top_k 40 --seed 7

echo "== training curves and expert load: runs/tiny/metrics.svg"
python3 scripts/plot_metrics.py runs/tiny -o runs/tiny/metrics.svg
