"""The whole PEMN method in one file: a zoo model, a strategy, masks trained on Fashion-MNIST,
evaluation, a `.pemn` file, its size report, and the file loaded back as a plain model.

    python examples/quickstart.py                       # convmixer_64_4, onelayer, 3 epochs
    python examples/quickstart.py --strategy rp --ratio 1e-3 --epochs 1 --train-samples 10000
"""

from __future__ import annotations

import argparse
import os

import torch

import pemn_compress as pemn
from pemn_compress.config import DEFAULT_DENSITY
from pemn_compress.data import BatchLoader, get_dataset
from pemn_compress.fileformat.summary import summarize
from pemn_compress.progress import RichProgress

# float16 leftovers change a few predictions at most (2 of 10,000 test images in a stock-Debian run);
# a real fault (wrong weights, a wrong mask) costs tens of points
MAX_ROUNDING_CHANGE = 0.005


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convmixer_64_4", help="zoo model name (see pemn_compress.list_models())")
    parser.add_argument("--strategy", default="onelayer", choices=["dense", "onelayer", "mp", "rp"])
    parser.add_argument("--ratio", type=float, default=None, help="rp only: unique values = int(N_max * ratio) + 1")
    parser.add_argument("--density", type=float, default=DEFAULT_DENSITY, help="fraction of weights each mask keeps")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--train-samples", type=int, default=None, help="use a stratified subset of the training set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--augment", action="store_true",
        help="random crop + flip of training images (off, as in `pemn compress`: benchmarks/results/recipe_*)",
    )  # fmt: skip
    parser.add_argument("--out", default="quickstart.pemn")
    args = parser.parse_args()

    data = get_dataset("fashion-mnist")  # Debian package dataset-fashion-mnist
    if args.train_samples:
        data = data.subset(args.train_samples, None, seed=args.seed)
    train = BatchLoader.from_dataset(
        data, "train", batch_size=128, shuffle=True, seed=args.seed, drop_last=True,
        crop_padding=data.suggested_crop_padding if args.augment else 0, hflip=args.augment,
    )  # fmt: skip
    test = BatchLoader.from_dataset(data, "test", batch_size=1000)

    # 1. a zoo model whose weights will never be trained
    model = pemn.create_model(args.model, in_chans=data.in_chans, num_classes=data.num_classes)
    # 2. fixed pseudo-random weights (signed constants, the default) + trainable scores in every Linear/Conv
    config = pemn.MaskConfig(density=args.density, strategy=args.strategy, ratio=args.ratio, seed=args.seed)
    pemn.mask_(model, config)
    # 3. learn the masks (and the BatchNorm affine parameters)
    trainer = pemn.Trainer(
        model, train, test, pemn.TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed), callbacks=[RichProgress()]
    )
    result = trainer.fit()
    print(f"masked model accuracy: {result.final_acc:.4f}  ({result.images_per_sec:,.0f} training images/s)")

    # 4. write the tiny file: seed + masks + BatchNorm (float16, the default), and report its real size
    recipe = {"epochs": args.epochs, "lr": args.lr, "optimizer": "adamw", "schedule": "cosine", "augment": args.augment}
    provenance = {"dataset": "fashion-mnist", "recipe": recipe}
    pemn.save(model, args.out, provenance=provenance)
    summary = summarize(pemn.read_pemn(args.out), args.out)
    print(
        f"{args.out}: {os.path.getsize(args.out):,} bytes on disk; "
        f"dense fp32 safetensors would be {summary['totals']['dense_fp32_bytes']:,} bytes "
        f"(ratio {summary['totals']['disk_ratio']:.1f}x); unique values {summary['totals']['unique_values']:,}"
    )

    # 5. load it back as a plain dense model (weights regenerated bit-exactly: load verifies their
    # fingerprint) and check it still classifies; record the accuracy the file itself reaches
    deployed = pemn.load(args.out, device="auto")
    _, accuracy = pemn.evaluate(deployed, test)
    print(
        f"loaded from {args.out}: accuracy {accuracy:.4f} on {next(deployed.parameters()).device} "
        f"({100 * (accuracy - result.final_acc):+.2f} points: float16 leftovers round BatchNorm, which can "
        "flip a few test images; dense_dtype='float32' keeps the outputs bit-exact)"
    )
    if abs(accuracy - result.final_acc) > MAX_ROUNDING_CHANGE:
        raise SystemExit(f"the loaded model's accuracy is more than {100 * MAX_ROUNDING_CHANGE:.1f} points off")
    pemn.save(model, args.out, provenance={**provenance, "accuracy": accuracy})


if __name__ == "__main__":
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    main()
