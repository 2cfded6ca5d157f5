"""Value sources: where each masked layer's fixed weights come from (formats/pemn-v1.md section 9).

A strategy turns the list of masked layers (name and weight shape, in model order) into a
``ValuePlan``: a few *banks* of pseudo-random unit values and, per layer, which bank it reads
(always its first ``n_l`` entries) and the float32 scale it multiplies them by.

    dense     one bank per layer                       unique values = sum of n_l
    onelayer  one bank per distinct weight shape       unique values = sum over shapes of n
    mp        one bank of N_max values                 unique values = N_max
    rp        one bank of int(N_max * ratio) + 1       unique values = int(N_max * ratio) + 1
              values, tiled to N_max (copy) or tiled
              then permuted (rand)

Bank ``b`` draws its unit values from generator stream ``b``; the rp permutation of bank ``b``
uses stream ``2**32 + b``. Scales are Kaiming: ``sqrt(2 / fan_in)`` rounded to float32, the layer's
own (``rescale``) or, for mp/rp without rescale, the largest layer's (the paper's setting).

Plans are plain data (no torch), so the file format and the reference reader share them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import rng
from .config import MaskConfig
from .errors import ConfigError

__all__ = [
    "BankSpec",
    "LayerSource",
    "PERMUTATION_STREAM_BASE",
    "ValuePlan",
    "bank_index_map",
    "bank_values",
    "fan_in",
    "kaiming_scale",
    "make_plan",
    "register_strategy",
]

PERMUTATION_STREAM_BASE = 1 << 32


@dataclass(frozen=True)
class BankSpec:
    """A vector of unit values drawn from one generator stream."""

    index: int  # bank number; its values come from stream `index`
    size: int  # unique values generated (what the paper counts)
    length: int  # entries after tiling; == size unless the bank is an rp vector
    tiling: str = "none"  # none | copy | rand


@dataclass(frozen=True)
class LayerSource:
    """Where one masked layer's weights come from."""

    name: str
    shape: tuple[int, ...]
    bank: int  # index into ValuePlan.banks; the layer reads entries [0, numel)
    scale: float  # float32-representable multiplier applied to the unit values

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ValuePlan:
    strategy: str
    distribution: str
    seed: int
    banks: tuple[BankSpec, ...]
    layers: tuple[LayerSource, ...]

    @property
    def unique_values(self) -> int:
        """Number of distinct stored/generated values, the paper's count."""
        return sum(b.size for b in self.banks)

    @property
    def masked_weights(self) -> int:
        return sum(layer.numel for layer in self.layers)


def fan_in(shape: Sequence[int]) -> int:
    """Inputs feeding one output unit: prod(shape[1:]) for Linear (out, in) and Conv (out, in/groups, *k)."""
    if len(shape) < 2:
        raise ConfigError(f"a masked weight needs at least 2 dimensions, found shape {tuple(shape)}")
    return max(1, math.prod(shape[1:]))


def kaiming_scale(shape: Sequence[int]) -> float:
    """Kaiming (He) std for ReLU-like layers, sqrt(2 / fan_in), rounded to float32."""
    return float(np.float32(math.sqrt(2.0 / fan_in(shape))))


_StrategyFn = Callable[[MaskConfig, Sequence[tuple[str, tuple[int, ...]]]], tuple[list[BankSpec], list[int]]]
_STRATEGIES: dict[str, _StrategyFn] = {}


def register_strategy(name: str):
    """Register ``fn(config, layers) -> (banks, bank index per layer)`` under ``name``."""

    def deco(fn: _StrategyFn) -> _StrategyFn:
        _STRATEGIES[name] = fn
        return fn

    return deco


@register_strategy("dense")
def _dense(config, layers):
    banks = [BankSpec(i, math.prod(shape), math.prod(shape)) for i, (_, shape) in enumerate(layers)]
    return banks, list(range(len(layers)))


@register_strategy("onelayer")
def _onelayer(config, layers):
    group_of: dict[tuple[int, ...], int] = {}
    banks: list[BankSpec] = []
    for _, shape in layers:
        if shape not in group_of:
            group_of[shape] = len(banks)
            banks.append(BankSpec(len(banks), math.prod(shape), math.prod(shape)))
    return banks, [group_of[shape] for _, shape in layers]


@register_strategy("mp")
def _mp(config, layers):
    n_max = max(math.prod(shape) for _, shape in layers)
    return [BankSpec(0, n_max, n_max)], [0] * len(layers)


@register_strategy("rp")
def _rp(config, layers):
    n_max = max(math.prod(shape) for _, shape in layers)
    size = min(int(n_max * config.ratio) + 1, n_max)
    return [BankSpec(0, size, n_max, config.rp_mode)], [0] * len(layers)


def make_plan(config: MaskConfig, layers: Sequence[tuple[str, Sequence[int]]]) -> ValuePlan:
    """The value plan for ``layers`` (name, weight shape), in the order they appear in the model."""
    shapes = [(name, tuple(int(d) for d in shape)) for name, shape in layers]
    if not shapes:
        raise ConfigError("no layer to mask: the model has no Linear/Conv1d/Conv2d layer that the filter accepts")
    names = [name for name, _ in shapes]
    if len(set(names)) != len(names):
        raise ConfigError("masked layer names must be unique")
    banks, bank_of = _STRATEGIES[config.strategy](config, shapes)
    largest = max(shapes, key=lambda item: math.prod(item[1]))  # first of the largest layers
    shared_scale = config.strategy in ("mp", "rp") and not config.rescale
    sources = tuple(
        LayerSource(name, shape, bank_of[i], kaiming_scale(largest[1] if shared_scale else shape))
        for i, (name, shape) in enumerate(shapes)
    )
    return ValuePlan(config.strategy, config.distribution, config.seed, tuple(banks), sources)


def bank_values(plan: ValuePlan, bank: BankSpec, *, device=None):
    """The bank's unit values, generated (``bank.size`` of them): numpy, or torch on ``device``."""
    return rng.unit_values(plan.seed, bank.index, bank.size, plan.distribution, device=device)


def bank_index_map(plan: ValuePlan, bank: BankSpec, *, device=None):
    """For a tiled (rp) bank: entry j of the expanded vector is unit[index[j]]; None if not tiled."""
    if bank.tiling == "none":
        return None
    if bank.tiling == "copy":
        idx = np.arange(bank.length, dtype=np.int64) % bank.size
    elif bank.tiling == "rand":
        perm = rng.permutation(plan.seed, PERMUTATION_STREAM_BASE + bank.index, bank.length)
        idx = perm % bank.size
    else:
        raise ConfigError(f"unknown tiling {bank.tiling!r} for bank {bank.index}")
    if device is None:
        return idx
    import torch

    return torch.from_numpy(idx).to(device)
