"""CIFAR-style ResNets (He et al., "Deep Residual Learning for Image Recognition", 2016, section 4.2).

    stem:   Conv2d 3x3 (in_chans -> width) -> BatchNorm2d -> ReLU
    stages: 3 stages of n BasicBlocks with width, 2*width, 4*width channels; the first block of
            stages 2 and 3 halves the resolution (stride 2)
    head:   AdaptiveAvgPool2d(1) -> Flatten -> Linear(4*width, num_classes)

depth = 6n + 2 (ResNet-20: n = 3, ResNet-32: n = 5, ResNet-56: n = 9). Shortcuts are identity
unless the shape changes, then a 1x1 conv + BatchNorm ("option B"), so that every weight is a conv
the masks can reach. Convs and the head have no bias by default (``bias=True`` turns them on).
Adaptive pooling makes the network work on 28x28 as well as 32x32 inputs.

Registered: ``resnet20``, ``resnet32``, ``resnet56`` (CIFAR: 32x32, 3 channels, width 16) and
``test_resnet`` (one block per stage, width 8, 28x28 grayscale).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from ._registry import check_bool, check_int, register_model

__all__ = ["BasicBlock", "ResNet"]


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with a residual connection (option-B shortcut)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, bias: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=bias),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, planes, H / stride, W / stride)
        out = self.bn2(self.conv2(out))  # (B, planes, H / stride, W / stride)
        return F.relu(out + self.shortcut(x))  # (B, planes, H / stride, W / stride)


class ResNet(nn.Module):
    """CIFAR ResNet-``depth``.

    Args:
        depth: total conv + linear layers on the main path; 6n + 2 with n blocks per stage.
        width: channels of the first stage (the stages have width, 2*width, 4*width).
        in_chans: input image channels.
        num_classes: classifier outputs.
        img_size: input side; the network pools adaptively, checked to be >= 4 (two stride-2 stages).
        bias: give every conv and the head a bias (off by default, like the paper's models).
    """

    def __init__(
        self,
        depth: int = 20,
        width: int = 16,
        in_chans: int = 3,
        num_classes: int = 10,
        img_size: int = 32,
        bias: bool = False,
    ):
        super().__init__()
        owner = type(self).__name__
        depth = check_int(owner, "depth", depth, minimum=8)
        if (depth - 2) % 6 != 0:
            raise ModelError(f"{owner} argument 'depth': expected 6n + 2 (8, 14, 20, 32, 56, ...), found {depth}")
        width = check_int(owner, "width", width)
        in_chans = check_int(owner, "in_chans", in_chans)
        num_classes = check_int(owner, "num_classes", num_classes)
        check_int(owner, "img_size", img_size, minimum=4)
        bias = check_bool(owner, "bias", bias)
        n = (depth - 2) // 6

        self.conv1 = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(width)
        planes = [width, 2 * width, 4 * width]
        in_planes = width
        stages = []
        for i, p in enumerate(planes):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, p, stride=stride, bias=bias))
                in_planes = p
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(planes[-1], num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, w, H, W)
        x = self.layer1(x)  # (B, w, H, W)
        x = self.layer2(x)  # (B, 2w, H / 2, W / 2)
        x = self.layer3(x)  # (B, 4w, H / 4, W / 4)
        x = self.pool(x)  # (B, 4w)
        return self.fc(x)  # (B, num_classes)


@register_model
def resnet20(*, depth=20, width=16, in_chans=3, num_classes=10, img_size=32, bias=False) -> ResNet:
    """ResNet-20 for CIFAR (0.27M weights)."""
    return ResNet(**locals())  # locals() here is exactly the argument dict


@register_model
def resnet32(*, depth=32, width=16, in_chans=3, num_classes=10, img_size=32, bias=False) -> ResNet:
    """ResNet-32 for CIFAR (0.46M weights)."""
    return ResNet(**locals())


@register_model
def resnet56(*, depth=56, width=16, in_chans=3, num_classes=10, img_size=32, bias=False) -> ResNet:
    """ResNet-56 for CIFAR (0.85M weights)."""
    return ResNet(**locals())


@register_model
def test_resnet(*, depth=8, width=8, in_chans=1, num_classes=10, img_size=28, bias=False) -> ResNet:
    """A tiny ResNet-8 (one block per stage, width 8) for tests."""
    return ResNet(**locals())
