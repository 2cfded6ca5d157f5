"""Straight-through top-k masking (edge-popup, Ramanujan et al., CVPR 2020).

The mask keeps the ``kept_count(density, n)`` entries of largest ``|scores|`` in a layer. The
threshold is found once per forward with ``kthvalue`` (a selection, not a full sort); the backward
passes the incoming gradient through unchanged to ``|scores|`` (and on through ``abs`` to the
scores), so each score learns from ``grad_w * weight * sign(score)``: growing ``|score|`` keeps a
weight, whatever the score's sign.
"""

from __future__ import annotations

import math

import torch

__all__ = ["kept_count", "topk_mask", "ste_topk_mask"]


def kept_count(density: float, numel: int) -> int:
    """How many weights a mask of ``density`` keeps: floor(density * n + 1/2), at least 1."""
    return min(numel, max(1, math.floor(density * numel + 0.5)))


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A 0/1 tensor shaped like ``scores`` with ones at the ``k`` largest ``|scores|``.

    Exactly ``k`` ones unless scores tie at the threshold (a measure-zero event for float scores).
    """
    n = scores.numel()
    if k >= n:
        return torch.ones_like(scores)
    magnitude = scores.detach().abs()
    threshold = magnitude.flatten().kthvalue(n - k).values  # the (n-k)-th smallest magnitude
    return (magnitude > threshold).to(scores.dtype)


class _StraightThroughTopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int) -> torch.Tensor:
        return topk_mask(scores, k)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def ste_topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``topk_mask`` of ``|scores|`` whose gradient flows straight through to ``|scores|``."""
    return _StraightThroughTopK.apply(scores.abs(), k)
