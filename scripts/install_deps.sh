#!/usr/bin/env bash
# Installs the Debian 12 packages smallthinker.cpp needs; only missing ones, so re-runs are
# quick and need no network. Uses sudo when not root.
#   scripts/install_deps.sh            everything (LibTorch included)
#   scripts/install_deps.sh --no-torch only what the torch-free tools (st-data, runtime) need
set -euo pipefail

packages=(build-essential cmake ninja-build ccache pkg-config git
          libabsl-dev libgflags-dev libhdf5-dev hdf5-tools nlohmann-json3-dev
          libgtest-dev libgmock-dev libbenchmark-dev libpcre2-dev liburing-dev
          libicu-dev clang libclang-rt-14-dev bible-kjv bible-kjv-text python3 python3-h5py
          libcpp-httplib-dev libssl-dev zlib1g-dev libbrotli-dev)
# st-server's chat page is tested in headless Chromium (tests/chat_page_test.sh).
packages+=(chromium)
# Node.js runs Hugging Face's reference tokenizer (npm) in the tests; keep a preinstalled one.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi
if [[ "${1:-}" != "--no-torch" ]]; then
  packages+=(libtorch-dev libopenblas0-openmp libgloo-dev)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install_deps: need root or sudo to install: ${missing[*]}" >&2; exit 1
  fi
fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
