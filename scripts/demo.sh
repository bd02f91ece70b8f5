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

echo "== generating with the torch-free runtime (st-run, streaming)"
./build/infer/tools/st-run --model runs/tiny/tiny-q4_0.stmf --prompt "And God said" \
  --max_new_tokens 100 --temperature 0.8 --top_k 40 --seed 7

echo "== chatting with st-run --chat (ChatML template from the file; one message a line on stdin)"
printf '%s\n' "Who made the heaven and the earth?" "And what did he say?" |
  ./build/infer/tools/st-run --model runs/tiny/tiny-q4_0.stmf --chat \
    --system "You are a preacher." --max_new_tokens 60 --temperature 0.7 --top_k 40 --seed 7

echo "== perplexity of the last 20 kB of the corpus under the q4_0 file (st-perplexity)"
tail -c 20000 runs/data/kjv.txt > runs/tiny/heldout.txt
./build/infer/tools/st-perplexity --model runs/tiny/tiny-q4_0.stmf --file runs/tiny/heldout.txt \
  --ctx 256

echo "== decode and prefill speed (st-bench)"
./build/infer/tools/st-bench --model runs/tiny/tiny-q4_0.stmf --prompt_tokens 64 --gen_tokens 64

echo "== training curves and expert load: runs/tiny/metrics.svg"
python3 scripts/plot_metrics.py runs/tiny -o runs/tiny/metrics.svg
