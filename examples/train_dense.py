"""Train an ordinary dense zoo model on Fashion-MNIST and save its state dict: the starting point of

    python examples/train_dense.py                      # convmixer_64_4, 5 epochs -> model.pt
    pemn compress model.pt --arch convmixer_64_4 --strategy onelayer --data fashion-mnist

The file is a plain ``torch.save(model.state_dict())``, which ``pemn compress`` reads with
``torch.load(weights_only=True)``. Its dense accuracy is printed here and measured again (and used
as the distillation teacher) by ``pemn compress``.
"""

from __future__ import annotations

import argparse
import inspect
import os

import torch

import pemn_compress as pemn
from pemn_compress.api import resolve_device
from pemn_compress.data import BatchLoader, get_dataset
from pemn_compress.models import model_entrypoint
from pemn_compress.progress import RichProgress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convmixer_64_4", help="zoo model name (see pemn_compress.list_models())")
    parser.add_argument("--data", default="fashion-mnist", help="data set spec (as for pemn compress --data)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-samples", type=int, default=None, help="use a stratified subset of the training set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--augment", action="store_true",
        help="random crop + flip of training images (off, as in `pemn compress`: benchmarks/results/recipe_*)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1), help="CPU threads for torch")
    parser.add_argument("--out", default="model.pt")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = get_dataset(args.data)
    if args.train_samples:
        data = data.subset(args.train_samples, None, seed=args.seed)
    device = resolve_device(args.device)
    train = BatchLoader.from_dataset(
        data,
        "train",
        batch_size=args.batch_size,
        shuffle=True,
        seed=args.seed,
        crop_padding=data.suggested_crop_padding if args.augment else 0,
        hflip=args.augment,
        drop_last=True,
        device=device,
    )
    test = BatchLoader.from_dataset(data, "test", batch_size=500, device=device)

    torch.manual_seed(args.seed)
    # the zoo defaults of convmixer_64_4 are Fashion-MNIST's shape; say it anyway for other models
    model = pemn.create_model(args.model, in_chans=data.in_chans, num_classes=data.num_classes)
    config = pemn.TrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=5e-4, seed=args.seed)
    result = pemn.Trainer(model, train, test, config, callbacks=[RichProgress()], device=device).fit()
    torch.save(model.state_dict(), args.out)
    print(f"dense {args.model}: test accuracy {result.final_acc:.4f}; state dict saved to {args.out}")
    defaults = inspect.signature(model_entrypoint(args.model)).parameters
    extra = "".join(f" --arch-kwarg {k}={v}" for k, v in model.pemn_arch["kwargs"].items() if defaults[k].default != v)
    print(f"next: pemn compress {args.out} --arch {args.model}{extra} --strategy onelayer --data {args.data}")


if __name__ == "__main__":
    main()
