#!/usr/bin/env bash
# The README's user flow, run for real; its output is what README.md quotes.
#   bash scripts/user_flow.sh > benchmarks/results/user_flow.txt 2>&1
# A dense model trained on Fashion-MNIST -> pemn compress (with and without distillation, same
# budget) -> pemn inspect -> pemn eval. One CPU thread, so the run is comparable on a busy machine.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
run() { local shown="$*"; echo "\$ ${shown//$repo\//}"; "$@"; echo; }
run python "$repo/examples/train_dense.py" --model convmixer_64_4 --epochs 3 --train-samples 20000 --threads 1 --out model.pt
run pemn compress model.pt --arch convmixer_64_4 --strategy onelayer --data fashion-mnist \
    --epochs 3 --max-train-samples 20000 --threads 1 --quiet -o model.pemn
run pemn compress model.pt --arch convmixer_64_4 --strategy onelayer --data fashion-mnist \
    --epochs 3 --max-train-samples 20000 --threads 1 --quiet --no-distill -o no-distill.pemn
run pemn inspect model.pemn
run pemn eval model.pemn --data fashion-mnist
run pemn verify model.pemn
run pemn eval no-distill.pemn --data fashion-mnist
run ls -l model.pt model.pemn no-distill.pemn
