"""Beyond classification: a small autoencoder on Fashion-MNIST compressed with your own loss and metric.

The masks do not care what the network computes: here it reconstructs its input, the loss is the mean squared
error, and the file records the reconstruction PSNR (dB, higher is better) of the test images, measured on the
file as `pemn.load` loads it.

    python examples/autoencoder.py                                  # 5 epochs on all 60,000 images
    python examples/autoencoder.py --epochs 1 --train-samples 2000 --test-samples 500 --threads 1
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import Dataset

import pemn_compress as pemn
from pemn_compress.data import get_dataset


class Images(Dataset):
    """Fashion-MNIST images as (input, target) = (x, x), pixels scaled to [0, 1]: the data of a reconstruction."""

    def __init__(self, images):  # (N, 1, 28, 28) uint8
        self.images = torch.from_numpy(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i].float().div_(255)  # (1, 28, 28)
        return x, x


def build(hidden: int = 128) -> nn.Module:
    """784 -> hidden -> 784, BatchNorm in the middle (trained and stored dense), sigmoid output."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(),
        nn.Linear(512, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Linear(hidden, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(),
        nn.Linear(512, 784), nn.Sigmoid(), nn.Unflatten(1, (1, 28, 28)),
    )  # fmt: skip


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(output, target)


def psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of each image's PSNR in dB, for pixels in [0, 1]."""
    per_image = (output - target).pow(2).flatten(1).mean(dim=1).clamp_min(1e-10)  # (B,)
    return (10 * torch.log10(1.0 / per_image)).mean()


PSNR = pemn.Metric("psnr", psnr, higher_is_better=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-samples", type=int, default=None, help="the first N training images")
    parser.add_argument("--test-samples", type=int, default=None, help="the first N test images")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="autoencoder.pemn")
    args = parser.parse_args()

    data = get_dataset("fashion-mnist")
    train, test = Images(data.x_train[: args.train_samples]), Images(data.x_test[: args.test_samples])
    torch.manual_seed(0)
    result = pemn.compress(build(), train, test=test, output=args.out, loss=mse, metric=PSNR, data="fashion-mnist",
                           epochs=args.epochs, threads=args.threads, progress=True)
    print(f"{result.output}: {result.file_bytes:,} bytes ({result.ratio:.1f}x smaller than dense fp32), "
          f"{result.metric_name} {result.metric:.2f} dB on {len(test):,} test images")

    model = pemn.load(result.output, model=build(), device="cpu")  # the file records no architecture: give it
    _, loaded = pemn.evaluate(model, torch.utils.data.DataLoader(test, batch_size=500), loss=mse, metric=PSNR)
    print(f"loaded back: psnr {loaded:.2f} dB")


if __name__ == "__main__":
    main()
