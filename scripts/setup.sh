#!/usr/bin/env bash
# Sets up a fresh Debian machine for pemn-compress: the Fashion-MNIST data package and the Python
# package with its test extras. torch is pinned to the CPU build first so that pip never pulls a
# multi-GB CUDA build; on a GPU machine install your CUDA torch before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "warning: apt-get not found; set PEMN_FASHION_MNIST_DIR to a folder with the Fashion-MNIST IDX files" >&2
  fi
fi
if ! python3 -c "import torch" >/dev/null 2>&1; then
  python3 -m pip install -q "torch==2.13.0"
fi
python3 -m pip install -q -e ".[test,plots]"
