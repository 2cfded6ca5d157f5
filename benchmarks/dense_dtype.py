"""Which storage for the dense leftovers (BatchNorm, biases): fp32, fp16, or BatchNorm folded?

Trains one masked model briefly on Fashion-MNIST, writes it with each option, and reports for each
file: on-disk bytes, the bytes taken by masks and by dense leftovers, and the test accuracy measured
by loading that file. The default in ``pemn_compress/fileformat/writer.py`` and the spec's
"Dense leftovers" section are based on this table.

    python benchmarks/dense_dtype.py
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path

import _harness as h
import torch

import pemn_compress as pemn
from pemn_compress.data import BatchLoader, get_dataset
from pemn_compress.fileformat.constants import DENSE_PREFIX, MASKS_TENSOR

OPTIONS = [("float32", False), ("float16", False), ("float32", True), ("float16", True)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="convmixer_64_4,resnet20")
    parser.add_argument("--strategy", default="onelayer")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=12000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = get_dataset("fashion-mnist").subset(args.train_samples, None, seed=0)
    test = BatchLoader.from_dataset(data, "test", batch_size=1000)
    command = "python benchmarks/dense_dtype.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    lines = [
        "# Dense leftovers: fp32 vs fp16 vs folded BatchNorm",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Strategy {args.strategy}, density 0.5, {args.epochs} epochs on {args.train_samples} Fashion-MNIST images, "
        f"accuracy on the full test set measured by loading each file; {h.today()}.",
        "",
        "| model | leftovers | file bytes | mask bytes | dense leftover bytes | leftovers share | accuracy % "
        "| change vs fp32 (pts) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = pemn.create_model(name, in_chans=1, num_classes=10)
        pemn.mask_(model, pemn.MaskConfig(strategy=args.strategy))
        train = BatchLoader.from_dataset(
            data, "train", batch_size=128, shuffle=True, crop_padding=2, hflip=True, drop_last=True
        )
        pemn.Trainer(model, train, test, pemn.TrainConfig(epochs=args.epochs)).fit()
        reference = None
        with tempfile.TemporaryDirectory() as tmp:
            for dtype, fold in OPTIONS:
                path = Path(tmp) / f"{name}_{dtype}_{fold}.pemn"
                pemn.save(model, path, dense_dtype=dtype, fold_batchnorm=fold)
                pf = pemn.read_pemn(path)
                masks, dense = pf.tensor_bytes(MASKS_TENSOR), pf.tensor_bytes(DENSE_PREFIX)
                accuracy = pemn.evaluate(pemn.load(path, device="cpu"), test)[1]
                reference = accuracy if reference is None else reference
                size = os.path.getsize(path)
                label = dtype + (" + BN folded" if fold else "")
                lines.append(
                    f"| {name} | {label} | {size:,} | {masks:,} | {dense:,} | {100 * dense / size:.1f}% | "
                    f"{100 * accuracy:.2f} | {100 * (accuracy - reference):+.2f} |"
                )
                print(lines[-1], flush=True)
    h.write_text(Path(args.out) / "dense_dtype_fashion-mnist_cpu.md", lines)


if __name__ == "__main__":
    main()
