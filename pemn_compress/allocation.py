"""Global (cross-layer) density allocation: one threshold over every masked layer's scores.

Edge-popup keeps the same fraction of every layer. Issue 13 asks whether comparing scores *across*
layers, as global magnitude pruning compares weights, trains better masks at the same number of kept
weights: layers whose weights matter more would keep more of them. At ``--target-ratio 40`` (density
about 0.09) a uniform density leaves a 5x5 depthwise kernel about 2 of its 25 weights.

Scores of different layers start on different scales (Kaiming-uniform, bound ``1/sqrt(fan_in)``,
``nn.layers.MaskedLayer.init_bound``): a raw comparison would hand nearly every kept weight to the
layers of small fan-in before any training. So each layer's ``|scores|`` are divided by that initial
bound, i.e. compared relative to where they started: at initialization every layer keeps about the
model's density, and training moves weights to the layers whose scores grow.

``allocate_(model)`` sets each masked layer's kept count: the model keeps ``sum_l kept_count(density,
n_l)`` weights in all (what a uniform density keeps, so the two are compared at equal kept weights),
each layer's largest ``|score|``, then those of largest normalized ``|score|`` (so every layer keeps at
least one). The kept weights of a layer are then its largest ``|scores|``, as always, so a file written
from it is an ordinary `.pemn` file: the format stores each layer's ``ones`` and readers take the masks
as stored. A lower density keeps a
subset of what a higher one kept (one threshold, raised).

``GlobalAllocation`` is the trainer callback that re-allocates after every optimizer step (and at the
start, so a resumed run continues from its checkpoint's scores). ``set_model_density_`` is how code
that changes a model's density (``annealing.DensityAnnealing``, ``compress._fit``) keeps the model's
allocation: globally when the model was allocated globally, uniformly otherwise.

    compress(options, callbacks=[GlobalAllocation()])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import check_int, check_number
from .nn.topk import kept_count
from .surgery import config_of, masked_layers, set_density_
from .train import Callback, Trainer, TrainResult, _unwrap

__all__ = ["GlobalAllocation", "allocate_", "is_global", "kept_counts", "set_model_density_"]

_MARK = "pemn_allocation"  # model attribute: "global" once allocate_ ran on it


def kept_counts(model: nn.Module, density: float) -> list[int]:
    """How many weights each masked layer keeps under global allocation at ``density`` (model order).

    In all ``sum_l kept_count(density, n_l)`` weights: each layer's largest ``|score|`` (every layer keeps
    at least one weight, as under a uniform density), then those whose ``|score| / initial bound`` is
    above one threshold over every layer.
    """
    check_number("density", density, low=0.0, high=1.0, low_open=True)
    layers = [layer for _, layer in masked_layers(model)]
    if not layers:
        return []
    with torch.no_grad():
        normalized = [(layer.scores.detach().abs() / layer.init_bound).flatten().float() for layer in layers]
        total = sum(kept_count(density, t.numel()) for t in normalized)
        for t in normalized:
            t[t.argmax()] = math.inf  # each layer's first weight is kept whatever the threshold
        flat = torch.cat([t.to("cpu") for t in normalized])
        if total >= flat.numel():
            return [t.numel() for t in normalized]
        threshold = flat.kthvalue(flat.numel() - total).values
        return [int((t > threshold.to(t.device)).sum()) for t in normalized]


def allocate_(model: nn.Module, density: float | None = None) -> nn.Module:
    """Allocate ``density`` (default: the model's own) across layers globally, in place; return the model.

    Each layer's ``kept`` becomes its ``kept_counts`` entry and its ``density`` attribute that fraction;
    the recorded MaskConfig keeps the model's nominal density. ModelError for a model that is not masked.
    """
    density = config_of(model).density if density is None else density
    set_density_(model, density)  # validates; records the nominal density
    for (_, layer), kept in zip(masked_layers(model), kept_counts(model, density), strict=True):
        layer.kept = kept
        layer.density = kept / math.prod(layer.source.shape)
    object.__setattr__(model, _MARK, "global")
    return model


def is_global(model: nn.Module) -> bool:
    return getattr(model, _MARK, None) == "global"


def set_model_density_(model: nn.Module, density: float) -> nn.Module:
    """Change the model's density keeping its allocation: ``allocate_`` when it is allocated globally,
    ``surgery.set_density_`` (every layer the same fraction) otherwise."""
    return allocate_(model, density) if is_global(model) else set_density_(model, density)


class GlobalAllocation(Callback):
    """Re-allocate the masked model's density across layers after every ``every`` optimizer steps."""

    def __init__(self, every: int = 1):
        check_int("every", every, minimum=1)
        self.every = every

    def on_fit_start(self, trainer: Trainer) -> None:
        allocate_(_unwrap(trainer.model))

    def on_batch_end(self, trainer: Trainer, batch: int, loss: float, correct: int, size: int) -> None:
        if trainer.step % self.every == 0:
            allocate_(_unwrap(trainer.model))

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        allocate_(_unwrap(trainer.model))  # the file is written from the final scores' allocation
