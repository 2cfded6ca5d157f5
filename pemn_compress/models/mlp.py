"""A multilayer perceptron for small images: the simplest network to mask.

    Flatten -> layers x [Linear(-> hidden) -> BatchNorm1d -> ReLU] -> Linear(hidden, num_classes)

Linear layers have no bias by default, like the paper's models (``bias=True`` turns them on);
BatchNorm keeps its affine parameters. Training needs batches of at least 2 (BatchNorm1d).

Registered: ``mlp_3`` (3 hidden layers of 512, 28x28 grayscale) and ``test_mlp`` (1 hidden layer of 32).
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import check_bool, check_int, register_model

__all__ = ["MLP"]


class MLP(nn.Module):
    """Fully connected classifier over flattened images.

    Args:
        in_chans: input image channels.
        img_size: input side; the first layer takes in_chans * img_size**2 features.
        num_classes: classifier outputs.
        hidden: width of every hidden layer.
        layers: number of hidden layers (Linear + BatchNorm1d + ReLU).
        bias: give every Linear a bias (off by default).
    """

    def __init__(
        self,
        in_chans: int = 1,
        img_size: int = 28,
        num_classes: int = 10,
        hidden: int = 512,
        layers: int = 3,
        bias: bool = False,
    ):
        super().__init__()
        owner = type(self).__name__
        in_chans = check_int(owner, "in_chans", in_chans)
        img_size = check_int(owner, "img_size", img_size)
        num_classes = check_int(owner, "num_classes", num_classes)
        hidden = check_int(owner, "hidden", hidden)
        layers = check_int(owner, "layers", layers)
        bias = check_bool(owner, "bias", bias)

        self.flatten = nn.Flatten()
        body: list[nn.Module] = []
        features = in_chans * img_size * img_size
        for _ in range(layers):
            body += [nn.Linear(features, hidden, bias=bias), nn.BatchNorm1d(hidden), nn.ReLU()]
            features = hidden
        self.body = nn.Sequential(*body)
        self.head = nn.Linear(features, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)  # (B, C * H * W)
        x = self.body(x)  # (B, hidden)
        return self.head(x)  # (B, num_classes)


@register_model
def mlp_3(*, in_chans=1, img_size=28, num_classes=10, hidden=512, layers=3, bias=False) -> MLP:
    """MLP 784-512-512-512-10 for 28x28 grayscale."""
    return MLP(**locals())  # locals() here is exactly the argument dict


@register_model
def test_mlp(*, in_chans=1, img_size=28, num_classes=10, hidden=32, layers=1, bias=False) -> MLP:
    """A tiny MLP (one hidden layer of 32) for tests."""
    return MLP(**locals())
