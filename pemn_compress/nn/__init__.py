"""Masked layers, value banks and the straight-through top-k they use."""

from .layers import MaskedConv1d, MaskedConv2d, MaskedLayer, MaskedLinear, ValueBank, ValueBanks
from .topk import kept_count, masked_weight_ste, ste_topk_mask, topk_mask

__all__ = [
    "MaskedConv1d",
    "MaskedConv2d",
    "MaskedLayer",
    "MaskedLinear",
    "ValueBank",
    "ValueBanks",
    "kept_count",
    "masked_weight_ste",
    "ste_topk_mask",
    "topk_mask",
]
