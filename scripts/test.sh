#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite with ctest.
# This is the command CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
(cd build && ctest --output-on-failure -j "${ST_JOBS:-$(nproc)}" "$@")
# The model-file loader's libFuzzer target, for a short fixed time (needs clang).
if [[ -z "${ST_SKIP_FUZZ:-}" ]]; then
  JOBS="${ST_JOBS:-$(nproc)}" bash scripts/fuzz.sh "${ST_FUZZ_SECONDS:-90}"
fi
