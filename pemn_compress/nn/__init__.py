"""Masked layers, value banks and the straight-through top-k they use."""

from .layers import MaskedConv1d, MaskedConv2d, MaskedLayer, MaskedLinear, ValueBank, ValueBanks
from .topk import kept_count, ste_topk_mask, topk_mask

__all__ = [
    "MaskedConv1d",
    "MaskedConv2d",
    "MaskedLayer",
    "MaskedLinear",
    "ValueBank",
    "ValueBanks",
    "kept_count",
    "ste_topk_mask",
    "topk_mask",
]
