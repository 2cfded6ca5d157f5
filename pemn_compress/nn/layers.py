"""Masked layers over fixed pseudo-random weights, and the value banks they read from.

A masked layer subclasses its dense counterpart (so ``isinstance(layer, nn.Conv2d)`` still holds)
but its ``weight`` is not an ``nn.Parameter``: it is a read-only view of a shared ``ValueBank``
times the layer's float32 scale, rebuilt from the seed, never seen by optimizers or checkpoints.
What trains is ``scores`` (same shape as the weight); the forward uses
``weight * topk_mask(scores)`` with a straight-through gradient.

Layers that share values (onelayer, mp, rp) share the same ``ValueBank`` submodule (like tied
weights), so they read one tensor, not copies; ``model.to()`` moves it once and ``parameters()``
lists a learnable bank once. Bank buffers are non-persistent: checkpoints never hold them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from ..strategies import BankSpec, LayerSource, ValuePlan, bank_index_map, bank_values
from .topk import kept_count, masked_weight_ste, topk_mask

__all__ = [
    "MaskedConv1d",
    "MaskedConv2d",
    "MaskedLayer",
    "MaskedLinear",
    "ValueBank",
    "ValueBanks",
]


class ValueBank(nn.Module):
    """One vector of unit values (a prototype) and, for rp, the map that tiles it to N_max entries."""

    def __init__(self, plan: ValuePlan, spec: BankSpec, device=None, learn: bool = False):
        super().__init__()
        self.spec = spec
        unit = bank_values(plan, spec, device=device or "cpu")  # (size,)
        if learn:
            self.unit = nn.Parameter(unit)
        else:
            self.register_buffer("unit", unit, persistent=False)
        index = bank_index_map(plan, spec, device=device or "cpu")  # (length,) or None
        if index is None:
            self.index = None
            self.table = None
        elif learn:  # gather on demand so gradients reach the few unique values
            self.register_buffer("index", index, persistent=False)
            self.table = None
        else:  # fixed values: expand once, every layer views the same table
            self.index = None
            self.register_buffer("table", unit[index], persistent=False)

    def values(self, n: int) -> torch.Tensor:
        """The first ``n`` entries of the (expanded) vector: a view unless values are learned."""
        if self.table is not None:
            return self.table[:n]
        if self.index is not None:
            return self.unit[self.index[:n]]
        return self.unit[:n]

    def extra_repr(self) -> str:
        s = self.spec
        return f"index={s.index}, size={s.size}, length={s.length}, tiling={s.tiling}"


class ValueBanks(nn.ModuleList):
    """All banks of one masked model, in plan order."""

    def __init__(self, plan: ValuePlan, device=None, learn: bool = False):
        super().__init__(ValueBank(plan, spec, device, learn) for spec in plan.banks)


class MaskedLayer(nn.Module):
    """The masking machinery shared by every masked layer type, listed first among a masked layer's
    bases (``MaskedLinear(MaskedLayer, nn.Linear)``) so it overrides the dense layer's ``weight``.

    Instances are made from a dense layer with ``from_dense`` (the dense weight is dropped: a PEMN
    network never uses trained weights).
    """

    dense_type: type[nn.Module]
    value_bank: ValueBank  # shared with the other layers of its bank (tied), never a copy
    source: LayerSource  # the layer's entry in the value plan: name, shape, bank, scale
    density: float
    kept: int  # weights the mask keeps: kept_count(density, weights)
    scores: nn.Parameter  # what trains, shape of the weight
    _scale: torch.Tensor  # float32 scalar buffer, not saved

    @classmethod
    def from_dense(
        cls, dense: nn.Module, bank: ValueBank, source: LayerSource, density: float, generator: torch.Generator
    ):
        """A masked copy of ``dense`` (its other parameters and buffers shared, not copied); a ``ModelError``
        when its weight does not have the planned shape."""
        weight = dense.weight
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != tuple(source.shape):
            found = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise ModelError(f"layer {source.name}: weight shape {found} != planned {source.shape}")
        layer = cls.__new__(cls)
        state = dict(dense.__dict__)
        for key in ("_parameters", "_buffers", "_modules"):
            state[key] = type(state[key])(state[key])  # own dicts, same tensors
        layer.__dict__.update(state)
        del layer._parameters["weight"]
        layer.value_bank = bank  # shared submodule (tied), never a copy
        scale = torch.tensor(source.scale, dtype=torch.float32, device=weight.device)
        layer.register_buffer("_scale", scale, persistent=False)
        layer.source = source
        layer.density = float(density)
        layer.kept = kept_count(density, math.prod(source.shape))
        layer.scores = nn.Parameter(torch.empty(source.shape, dtype=torch.float32))
        layer._init_scores(generator)
        layer.scores.data = layer.scores.data.to(weight.device)
        return layer

    @property
    def init_bound(self) -> float:
        """The bound of the initial scores (Kaiming-uniform, as in edge-popup): ``1 / sqrt(fan_in)``."""
        return 1.0 / math.sqrt(max(1, math.prod(self.source.shape[1:])))

    def _init_scores(self, generator: torch.Generator | None = None) -> None:
        """Kaiming-uniform scores in ``[-init_bound, init_bound]``."""
        bound = self.init_bound
        with torch.no_grad():
            cpu = torch.empty(self.source.shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
            self.scores.copy_(cpu)

    def reset_parameters(self) -> None:  # dense layers re-init their weight here; we re-init scores
        self._init_scores()

    @property
    def weight(self) -> torch.Tensor:
        """The fixed weight (no gradient): bank values times the layer's float32 scale."""
        values = self.value_bank.values(self.kept_numel)
        return values.view(self.source.shape) * self._scale

    @property
    def kept_numel(self) -> int:
        return math.prod(self.source.shape)

    def mask(self) -> torch.Tensor:
        """The current boolean mask (top ``density`` fraction of |scores|)."""
        return topk_mask(self.scores.detach(), self.kept).bool()

    def masked_weight(self) -> torch.Tensor:
        """``weight * mask`` with the straight-through gradient to ``scores`` (one fused autograd node)."""
        return masked_weight_ste(self.weight, self.scores, self.kept)

    def materialized_weight(self) -> torch.Tensor:
        """``weight * mask`` as a plain tensor: exactly what the forward multiplies inputs by."""
        with torch.no_grad():
            return self.weight * topk_mask(self.scores.detach(), self.kept)

    def extra_repr(self) -> str:
        base = self.dense_type.extra_repr(self)
        return f"{base}, density={self.density}, bank={self.source.bank}, scale={self.source.scale:.6g}"


# The dense layers' writable ``weight`` attribute is a read-only property in MaskedLayer, on purpose.
class MaskedLinear(MaskedLayer, nn.Linear):  # type: ignore[override]
    dense_type = nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


class MaskedConv1d(MaskedLayer, nn.Conv1d):  # type: ignore[override]
    dense_type = nn.Conv1d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)


class MaskedConv2d(MaskedLayer, nn.Conv2d):  # type: ignore[override]
    dense_type = nn.Conv2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)
