"""The examples beyond the quickstart run as a user types them, on small real subsets of Fashion-MNIST.

examples/autoencoder.py compresses a reconstruction model with its own loss and metric: the file records the
metric's name, direction and value, and the value is the PSNR an independent computation (numpy, per image)
finds for the loaded file on the same test images.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import pemn_compress as pemn
from pemn_compress.data import get_dataset

REPO = Path(__file__).resolve().parents[1]


def test_autoencoder_records_the_psnr_of_its_file(tmp_path):
    out = tmp_path / "ae.pemn"
    args = ["--epochs", "1", "--train-samples", "1000", "--test-samples", "300", "--threads", "1", "--out", str(out)]
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "autoencoder.py"), *args], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    provenance = pemn.read_pemn(out).header["provenance"]
    assert provenance["task"] == {"loss": "__main__:mse", "metric": "psnr", "higher_is_better": True}
    assert "accuracy" not in provenance and provenance["metric"]["name"] == "psnr"

    build = runpy.run_path(str(REPO / "examples" / "autoencoder.py"))["build"]  # the example's architecture
    model = pemn.load(out, model=build(), device="cpu")
    images = get_dataset("fashion-mnist").x_test[:300].astype(np.float32) / 255  # (300, 1, 28, 28)
    with torch.no_grad():
        reconstructed = model(torch.from_numpy(images)).numpy().astype(np.float64)
    mse = ((reconstructed - images.astype(np.float64)) ** 2).reshape(300, -1).mean(axis=1)
    psnr = float(np.mean(10 * np.log10(1.0 / mse)))
    assert abs(provenance["metric"]["value"] - psnr) < 1e-3
    zero_output = float(np.mean(10 * np.log10(1.0 / (images.astype(np.float64) ** 2).reshape(300, -1).mean(axis=1))))
    assert psnr > zero_output + 1.0  # the outputs depend on the inputs' pixels, not a blank image (7.7 dB)
    printed = float(proc.stdout.split("psnr ")[1].split(" dB")[0])
    assert abs(printed - psnr) < 0.006  # printed to 2 decimals
    # `pemn eval` cannot run the user's metric (code, not recorded): it says so and where to measure it
    refused = subprocess.run([sys.executable, "-m", "pemn_compress", "eval", str(out)], capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "pemn.evaluate(model, loader, loss=..., metric=...)" in refused.stderr
