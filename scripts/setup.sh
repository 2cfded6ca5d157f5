#!/usr/bin/env bash
# Sets up a fresh Debian machine for pemn-compress, as root or with sudo:
#   - the Debian packages: dataset-fashion-mnist (the data) and python3-venv (stock Debian lacks it);
#   - a virtual environment in .venv (stock Debian has no `python` and its system pip refuses to
#     install: "externally managed environment"), holding torch 2.13.0 (CPU build, installed first so
#     that pip never pulls a multi-GB CUDA build) and this package with its test and plot extras;
#   - .venv/constraints.txt pinning the torch the venv holds: every install here goes through it, and
#     `.venv/bin/pip install -c .venv/constraints.txt timm` adds a package without replacing that torch
#     (pip refuses, instead of downloading another build, when the package needs another torch).
# Afterwards run the programs from .venv/bin (.venv/bin/pemn, .venv/bin/python), or `source .venv/bin/activate`.
# On a GPU machine, install your CUDA torch into .venv before running this (it keeps a torch that imports).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}

need=()
dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || need+=(dataset-fashion-mnist)
if [ ! -x .venv/bin/python ] && ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: apt-get install ${need[*]}" >&2
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: apt-get not found; install ${need[*]} yourself (or set PEMN_FASHION_MNIST_DIR to a folder with the Fashion-MNIST IDX files)" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch 2.13.0 (CPU)" >&2
  "$VPY" -m pip install -q "torch==2.13.0"
fi
# the torch the venv holds, whatever its build (a CUDA torch installed beforehand is kept as well)
"$VPY" -c "import torch; print('torch==' + torch.__version__)" > .venv/constraints.txt
echo "setup: installing pemn-compress into .venv (constraints: $(cat .venv/constraints.txt))" >&2
"$VPY" -m pip install -q -c .venv/constraints.txt -e ".[test,plots]"
