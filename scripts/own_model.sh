#!/usr/bin/env bash
# Your own model, end to end, as a user types it: the three routes into a .pemn file (state dict +
# --arch module:Class, a module:function factory, a pickled module), then inspect, eval, verify and
# pemn.load in deployment code. Run from the repository after scripts/setup.sh:
#   bash scripts/own_model.sh > benchmarks/results/own_model.txt 2>&1
# It works in a temporary folder holding the user's module (mymodel.py), removed afterwards.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$repo/.venv/bin/python" ] && export PATH="$repo/.venv/bin:$PATH"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
QUICK="--max-train-samples 5000 --epochs 2 --threads 1"
show() { echo; echo "\$ $*"; "$@" 2>&1 | sed -e "s#$work#<work>#g"; echo "(exit ${PIPESTATUS[0]})"; }

cat > mymodel.py <<'PY'
from torch import nn


class MyNet(nn.Module):
    """A small CNN for 28x28 grey images."""

    def __init__(self, width=32, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


def build(width=32):
    return MyNet(width)
PY
echo "# mymodel.py (in the working folder):"; cat mymodel.py

echo; echo "## Route 1: a state dict + --arch module:Class"
show python -c "import torch, mymodel; torch.manual_seed(0); torch.save(mymodel.MyNet().state_dict(), 'mynet.pt')"
show pemn compress mynet.pt $QUICK --quiet
show pemn compress mynet.pt --arch mymodel:MyNet $QUICK --quiet --no-distill   # untrained here: nothing to distil
show pemn eval mynet.pemn
show pemn eval mynet.pemn --trust-code

echo; echo "## Route 2: a module:function factory (untrained: no distillation)"
show pemn compress mymodel:build --arch-kwarg width=16 $QUICK --quiet -o factory.pemn
show pemn eval factory.pemn --arch mymodel:build --arch-kwarg width=16

echo; echo "## Route 3: a pickled module (torch.save(model))"
cat > save_main.py <<'PY'
import torch
from torch import nn


class MyNet(nn.Module):  # defined in the script itself: it lives in __main__
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    def forward(self, x):
        return self.body(x)


torch.save(MyNet(), "main.pt")
PY
show python save_main.py
show pemn compress main.pt $QUICK --quiet --allow-pickle
show python -c "import torch, mymodel; torch.manual_seed(0); torch.save(mymodel.MyNet(), 'whole.pt')"
show pemn compress whole.pt $QUICK --quiet
show pemn compress whole.pt $QUICK --quiet --allow-pickle --no-distill
show pemn inspect whole.pemn
show pemn eval whole.pemn --trust-code
show pemn verify whole.pemn

echo; echo "## Wrong files"
echo "hello" > notes.pt
show pemn compress notes.pt --arch mymodel:MyNet $QUICK --quiet
show pemn inspect mynet.pt
head -c 3000 mynet.pemn > cut.pemn
show pemn eval cut.pemn

echo; echo "## Deployment code"
cat > deploy.py <<'PY'
import gzip
import os
from pathlib import Path

import numpy as np
import torch
import pemn_compress as pemn

model = pemn.load("mynet.pemn", device="cpu", trust_code=True)   # the file imports mymodel:MyNet
to_input = pemn.input_transform(model)                           # the normalization recorded in the file
folder = Path(os.environ.get("PEMN_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))  # Debian's package
with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as fh:
    images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)   # raw uint8 bytes
with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as fh:
    labels = np.frombuffer(fh.read(), np.uint8, offset=8)
with torch.no_grad():
    predicted = torch.cat([model(to_input(images[i:i + 500])).argmax(1) for i in range(0, len(images), 500)])
print(f"accuracy from the raw IDX bytes: {(predicted.numpy() == labels).mean():.4f}")
PY
show python deploy.py
