"""ConvMixer (Trockman & Kolter, "Patches Are All You Need?", 2022), the PEMN paper's backbone.

    stem:   Conv2d(in_chans, dim, patch_size, stride=patch_size) -> GELU -> BatchNorm2d
    blocks: depth x [ Residual(depthwise Conv2d(dim, dim, kernel_size, groups=dim, padding="same")
                               -> GELU -> BatchNorm2d)
                      -> pointwise Conv2d(dim, dim, 1) -> GELU -> BatchNorm2d ]
    head:   AdaptiveAvgPool2d(1) -> Flatten -> Linear(dim, num_classes)

Biases are off everywhere by default, as in the paper's models (``bias=True`` turns them on in every
conv and the head). For ConvMixer-256 the largest layer is the pointwise conv: 256 * 256 = 65536
weights, the N_max of the mp / rp strategies.

Registered: ``convmixer_256_6``, ``convmixer_256_8``, ``convmixer_512_8`` (CIFAR: 32x32, 3 channels,
kernel 5, patch 2), ``convmixer_192_6_p4`` (the paper's proportions for 28x28, 1 channel: depth 6, kernel 5,
7x7 feature maps, 260k parameters; the recipe benchmark's model), ``convmixer_128_4``, ``convmixer_64_4``
(28x28, 1 channel) and ``test_convmixer``.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import check_bool, check_int, register_model

__all__ = ["ConvMixer"]


class Residual(nn.Module):
    """``x + fn(x)``."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)  # (B, C, H, W)


class ConvMixer(nn.Module):
    """ConvMixer-``dim``/``depth``.

    Args:
        dim: channels of every layer after the stem (the "h" of ConvMixer-h/d).
        depth: number of mixer blocks (the "d").
        kernel_size: side of the depthwise (spatial mixing) kernel.
        patch_size: side and stride of the patch-embedding conv.
        in_chans: input image channels.
        num_classes: classifier outputs.
        img_size: input side; not needed by the network (it pools), checked to be >= patch_size.
        bias: give every conv and the head a bias (off in the paper).
    """

    def __init__(
        self,
        dim: int = 256,
        depth: int = 8,
        kernel_size: int = 5,
        patch_size: int = 2,
        in_chans: int = 3,
        num_classes: int = 10,
        img_size: int = 32,
        bias: bool = False,
    ):
        super().__init__()
        owner = type(self).__name__
        dim = check_int(owner, "dim", dim)
        depth = check_int(owner, "depth", depth)
        kernel_size = check_int(owner, "kernel_size", kernel_size)
        patch_size = check_int(owner, "patch_size", patch_size)
        in_chans = check_int(owner, "in_chans", in_chans)
        num_classes = check_int(owner, "num_classes", num_classes)
        img_size = check_int(owner, "img_size", img_size, minimum=patch_size)
        bias = check_bool(owner, "bias", bias)

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dim, patch_size, stride=patch_size, bias=bias),
            nn.GELU(),
            nn.BatchNorm2d(dim),
        )
        self.blocks = nn.Sequential(
            *[
                nn.Sequential(
                    Residual(
                        nn.Sequential(
                            nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same", bias=bias),
                            nn.GELU(),
                            nn.BatchNorm2d(dim),
                        )
                    ),
                    nn.Conv2d(dim, dim, 1, bias=bias),
                    nn.GELU(),
                    nn.BatchNorm2d(dim),
                )
                for _ in range(depth)
            ]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(dim, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, dim, H / patch, W / patch)
        x = self.blocks(x)  # (B, dim, H / patch, W / patch)
        x = self.pool(x)  # (B, dim)
        return self.head(x)  # (B, num_classes)


@register_model
def convmixer_256_6(
    *, dim=256, depth=6, kernel_size=5, patch_size=2, in_chans=3, num_classes=10, img_size=32, bias=False
) -> ConvMixer:
    """ConvMixer-256/6 for CIFAR: the PEMN paper's main model."""
    return ConvMixer(**locals())  # locals() here is exactly the argument dict


@register_model
def convmixer_256_8(
    *, dim=256, depth=8, kernel_size=5, patch_size=2, in_chans=3, num_classes=10, img_size=32, bias=False
) -> ConvMixer:
    """ConvMixer-256/8 for CIFAR."""
    return ConvMixer(**locals())


@register_model
def convmixer_512_8(
    *, dim=512, depth=8, kernel_size=5, patch_size=2, in_chans=3, num_classes=10, img_size=32, bias=False
) -> ConvMixer:
    """ConvMixer-512/8 for CIFAR."""
    return ConvMixer(**locals())


@register_model
def convmixer_192_6_p4(
    *, dim=192, depth=6, kernel_size=5, patch_size=4, in_chans=1, num_classes=10, img_size=28, bias=False
) -> ConvMixer:
    """ConvMixer-192/6 with 4x4 patches for 28x28 grayscale (Fashion-MNIST): the paper's ConvMixer-256/6
    proportions (depth 6, kernel 5) at a width where one epoch of mask training over 60,000 images takes
    about 2 minutes on one CPU core (benchmarks/results/recipe_candidates_cpu.md). 7x7 feature maps,
    259,968 parameters; its largest layer is the 192 x 192 pointwise conv (36,864 weights)."""
    return ConvMixer(**locals())


@register_model
def convmixer_128_4(
    *, dim=128, depth=4, kernel_size=5, patch_size=2, in_chans=1, num_classes=10, img_size=28, bias=False
) -> ConvMixer:
    """ConvMixer-128/4 for 28x28 grayscale (Fashion-MNIST): 14x14 feature maps."""
    return ConvMixer(**locals())


@register_model
def convmixer_64_4(
    *, dim=64, depth=4, kernel_size=5, patch_size=4, in_chans=1, num_classes=10, img_size=28, bias=False
) -> ConvMixer:
    """ConvMixer-64/4 for 28x28 grayscale: 7x7 feature maps, fast on CPU."""
    return ConvMixer(**locals())


@register_model
def test_convmixer(
    *, dim=16, depth=2, kernel_size=3, patch_size=4, in_chans=1, num_classes=10, img_size=28, bias=False
) -> ConvMixer:
    """A tiny ConvMixer for tests."""
    return ConvMixer(**locals())
