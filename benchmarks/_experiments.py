"""Methods measured by the benchmarks and rejected: kept here, beside the reports that measured them, so
that those reports stay reproducible; the library does not carry them.

Global (cross-layer) density allocation, ``GlobalAllocation`` (issue 13; the full-data report's
``--target-ratio 40 + global allocation`` row, which lost to a uniform density on every seed): one
threshold over every masked layer's scores instead of the same density in every layer. Scores of
different layers start on different scales (Kaiming-uniform, bound ``1/sqrt(fan_in)``,
``MaskedLayer.init_bound``), so each layer's ``|scores|`` are divided by that initial bound: at
initialization every layer keeps about the model's density, and training moves kept weights to the
layers whose scores grow. The model keeps ``sum_l kept_count(density, n_l)`` weights in all (what a
uniform density keeps, so the two compare at equal kept weights): each layer's largest ``|score|``, then
those of largest normalized ``|score|``. A file written from it is an ordinary `.pemn` file (the format
stores each layer's ``ones``). ``allocate_`` records itself as the model's allocator
(``surgery.set_model_density_``), so annealing and the budget fit of ``compress`` keep the allocation.

    compress(options, callbacks=[GlobalAllocation()])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pemn_compress.errors import check_int, check_number
from pemn_compress.nn.topk import kept_count
from pemn_compress.surgery import ALLOCATOR, config_of, masked_layers, set_density_
from pemn_compress.train import Callback, _unwrap


def kept_counts(model: nn.Module, density: float) -> list[int]:
    """How many weights each masked layer keeps under global allocation at ``density`` (model order)."""
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
    Each layer's ``kept`` becomes its ``kept_counts`` entry; the recorded MaskConfig keeps the nominal density."""
    density = config_of(model).density if density is None else density
    set_density_(model, density)  # validates; records the nominal density
    for (_, layer), kept in zip(masked_layers(model), kept_counts(model, density), strict=True):
        layer.kept = kept
        layer.density = kept / math.prod(layer.source.shape)
    object.__setattr__(model, ALLOCATOR, allocate_)  # a later density change re-allocates globally
    return model


class GlobalAllocation(Callback):
    """Re-allocate the masked model's density across layers after every ``every`` optimizer steps (and at
    the start, so a resumed run continues from its checkpoint's scores, and at the end)."""

    def __init__(self, every: int = 1):
        check_int("every", every, minimum=1)
        self.every = every

    def on_fit_start(self, trainer) -> None:
        allocate_(_unwrap(trainer.model))

    def on_batch_end(self, trainer, batch: int, loss: float, correct: int, size: int) -> None:
        if trainer.step % self.every == 0:
            allocate_(_unwrap(trainer.model))

    def on_fit_end(self, trainer, result) -> None:
        allocate_(_unwrap(trainer.model))  # the file is written from the final scores' allocation
