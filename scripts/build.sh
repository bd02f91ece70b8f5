#!/usr/bin/env bash
# Configures and builds into build/ (Release, Ninja, ccache when present).
#   scripts/build.sh             everything
#   scripts/build.sh --no-torch  only the torch-free parts (data/, infer/, model config)
set -euo pipefail
cd "$(dirname "$0")/.."
torch=ON
if [[ "${1:-}" == "--no-torch" ]]; then torch=OFF; fi
jobs=${ST_JOBS:-$(nproc)}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DST_WITH_TORCH=$torch
cmake --build build -j "$jobs"
