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

__all__ = ["kept_count", "masked_weight_ste", "topk_mask", "ste_topk_mask"]


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


def _threshold_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest ``|scores|``: the comparison ``topk_mask`` makes."""
    n = scores.numel()
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    magnitude = scores.detach().abs()
    threshold = magnitude.flatten().kthvalue(n - k).values
    return magnitude > threshold


class _MaskedWeight(torch.autograd.Function):
    """``weight * topk_mask(|scores|)`` forward; straight through ``|.|`` to the scores backward."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
        keep = _threshold_mask(scores, k)
        ctx.save_for_backward(weight, scores, keep if ctx.needs_input_grad[0] else None)
        return weight * keep  # bool promotes to 1.0 / 0.0: the same product as weight * float mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, scores, keep = ctx.saved_tensors
        grad_weight = grad * keep if ctx.needs_input_grad[0] else None
        # as autograd computes it through mul then abs: (grad * weight) * sgn(scores)
        grad_scores = (grad * weight) * scores.sgn() if ctx.needs_input_grad[1] else None
        return grad_weight, grad_scores, None


def masked_weight_ste(weight: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """``weight * ste_topk_mask(scores, k)`` as one autograd node (same values and gradients)."""
    return _MaskedWeight.apply(weight, scores, k)
