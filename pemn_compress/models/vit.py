"""A small Vision Transformer (Dosovitskiy et al., 2021), written so that every weight can be masked.

    patch_embed: Conv2d(in_chans, dim, patch_size, stride=patch_size)  -> (B, N, dim) tokens
    cls_token, pos_embed: learnable nn.Parameters (dense, like LayerNorm)
    blocks:      depth x pre-norm [x + attn(LayerNorm(x)); x + mlp(LayerNorm(x))]
                 attn = Linear qkv (dim -> 3*dim), scaled_dot_product_attention, Linear proj (dim -> dim)
                 mlp  = Linear fc1 (dim -> mlp_ratio*dim) -> GELU -> Linear fc2 (-> dim)
    head:        LayerNorm -> Linear(dim, num_classes) on the class token

There is no ``nn.MultiheadAttention``: its packed ``in_proj_weight`` is not an ``nn.Linear`` and
would escape the masks. Linear layers and the patch embedding have no bias by default, like the
paper's models (``bias=True`` turns them all on); LayerNorms keep their affine parameters.
No dropout: mask training regularizes enough and the file stays deterministic.

Registered: ``vit_tiny_6``, ``vit_tiny_8`` (CIFAR: 32x32, 3 channels, dim 192, 3 heads, patch 4),
``vit_small_28`` (28x28 grayscale, dim 96, 3 heads, depth 6, patch 4) and ``test_vit``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from ._registry import check_bool, check_float, check_int, register_model

__all__ = ["Attention", "Block", "Mlp", "VisionTransformer"]


class Attention(nn.Module):
    """Multi-head self-attention over plain ``nn.Linear`` projections ``qkv`` and ``proj``."""

    def __init__(self, dim: int, heads: int, bias: bool = False):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape  # (B, N, C)
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads)  # (B, N, 3, h, C/h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, N, C/h)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, C/h)
        x = x.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.proj(x)  # (B, N, C)


class Mlp(nn.Module):
    """Two Linear layers with a GELU between."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (B, N, hidden) -> (B, N, C)


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, bias: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, bias=bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, N, C)
        return x + self.mlp(self.norm2(x))  # (B, N, C)


class VisionTransformer(nn.Module):
    """ViT with a class token and learned position embeddings.

    Args:
        img_size: input side; the position embedding is sized for (img_size / patch_size)^2 patches.
        patch_size: side and stride of the patch-embedding conv; must divide img_size.
        in_chans: input image channels.
        num_classes: classifier outputs.
        dim: token width; must be divisible by heads.
        depth: number of transformer blocks.
        heads: attention heads.
        mlp_ratio: MLP hidden width / dim.
        bias: biases in the patch embedding and every Linear (off by default).
    """

    def __init__(
        self,
        img_size: int = 32,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 10,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        bias: bool = False,
    ):
        super().__init__()
        owner = type(self).__name__
        img_size = check_int(owner, "img_size", img_size)
        patch_size = check_int(owner, "patch_size", patch_size)
        in_chans = check_int(owner, "in_chans", in_chans)
        num_classes = check_int(owner, "num_classes", num_classes)
        dim = check_int(owner, "dim", dim)
        depth = check_int(owner, "depth", depth)
        heads = check_int(owner, "heads", heads)
        mlp_ratio = check_float(owner, "mlp_ratio", mlp_ratio)
        bias = check_bool(owner, "bias", bias)
        if img_size % patch_size != 0:
            raise ModelError(
                f"{owner}: expected img_size divisible by patch_size, found img_size={img_size}, "
                f"patch_size={patch_size}"
            )
        if dim % heads != 0:
            raise ModelError(f"{owner}: expected dim divisible by heads, found dim={dim}, heads={heads}")
        if int(dim * mlp_ratio) < 1:
            raise ModelError(f"{owner}: expected int(dim * mlp_ratio) >= 1, found dim={dim}, mlp_ratio={mlp_ratio}")

        self.img_size = img_size
        self.in_chans = in_chans
        num_patches = (img_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size, bias=bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))  # (1, 1, C)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))  # (1, N + 1, C)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, bias=bias) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3:] != (self.in_chans, self.img_size, self.img_size):
            raise ModelError(
                f"{type(self).__name__}: expected input (B, {self.in_chans}, {self.img_size}, {self.img_size}), "
                f"found {tuple(x.shape)}"
            )
        x = self.patch_embed(x)  # (B, C, H / p, W / p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, N + 1, C)
        x = self.blocks(x)  # (B, N + 1, C)
        x = self.norm(x[:, 0])  # (B, C)
        return self.head(x)  # (B, num_classes)


@register_model
def vit_tiny_6(
    *, img_size=32, patch_size=4, in_chans=3, num_classes=10, dim=192, depth=6, heads=3, mlp_ratio=4.0, bias=False
) -> VisionTransformer:
    """ViT-Tiny, 6 blocks, for CIFAR (64 patches of 4x4)."""
    return VisionTransformer(**locals())  # locals() here is exactly the argument dict


@register_model
def vit_tiny_8(
    *, img_size=32, patch_size=4, in_chans=3, num_classes=10, dim=192, depth=8, heads=3, mlp_ratio=4.0, bias=False
) -> VisionTransformer:
    """ViT-Tiny, 8 blocks, for CIFAR (64 patches of 4x4)."""
    return VisionTransformer(**locals())


@register_model
def vit_small_28(
    *, img_size=28, patch_size=4, in_chans=1, num_classes=10, dim=96, depth=6, heads=3, mlp_ratio=4.0, bias=False
) -> VisionTransformer:
    """A small ViT for 28x28 grayscale (49 patches of 4x4)."""
    return VisionTransformer(**locals())


@register_model
def test_vit(
    *, img_size=28, patch_size=7, in_chans=1, num_classes=10, dim=16, depth=2, heads=2, mlp_ratio=2.0, bias=False
) -> VisionTransformer:
    """A tiny ViT for tests (16 patches of 7x7)."""
    return VisionTransformer(**locals())
