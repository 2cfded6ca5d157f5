"""How a model's density is spread over its masked layers: the same fraction everywhere, or ERK.

``uniform`` (edge-popup, the paper): every layer keeps ``kept_count(density, n)`` of its ``n`` weights.

``erk`` (Erdős–Rényi-kernel scaling, the allocation of sparse training: Evci et al. 2020, "Rigging the
lottery"), under the *same byte budget*: a layer of weight shape ``s`` keeps about
``eps * sum(s) / prod(s)`` of its weights, so small layers (depthwise convolutions, a patch embedding,
the classifier) keep a larger fraction than large ones. ``eps`` is the largest whose masks' byte bound
(``budget.mask_bytes_bound``, summed over the layers) is at most that of the uniform density: the file
meets the same size guarantee (``--target-ratio``) and, masks being entropy-coded, the model keeps more
weights than a uniform density would. Each layer's fraction is capped at 0.5, where the bound stops
growing; at a density of 0.5 or more every layer keeps the uniform fraction (annealing starts there).

The recorded ``MaskConfig.density`` stays the nominal (uniform-equivalent) density; the file stores each
layer's count of ones, so an ERK file is an ordinary `.pemn` file that any reader loads. ``allocate_``
installs itself as the model's allocator (``surgery.ALLOCATOR``): annealing and the budget fit of
``pemn compress`` then keep the allocation when they change the density.
"""

from __future__ import annotations

import functools
import math

from torch import nn

from .budget import mask_bytes_bound
from .nn.topk import kept_count
from .surgery import ALLOCATOR, config_of, masked_layers, set_density_

__all__ = ["ALLOCATIONS", "allocate_", "erk_kept"]

ALLOCATIONS = ("uniform", "erk")
_CAP = 0.5  # the largest fraction ERK gives a layer: mask_bytes_bound grows with the ones up to n / 2


@functools.lru_cache(maxsize=4096)  # annealing asks for a new density at every step
def erk_kept(shapes: tuple[tuple[int, ...], ...], density: float) -> tuple[int, ...]:
    """How many weights each layer of weight ``shapes`` keeps under ERK at the byte budget of ``density``."""
    sizes = [math.prod(s) for s in shapes]
    if density >= _CAP:
        return tuple(kept_count(density, n) for n in sizes)
    budget = sum(mask_bytes_bound(n, kept_count(density, n)) for n in sizes)
    share = [sum(s) / n for s, n in zip(shapes, sizes, strict=True)]

    def kept(eps: float) -> tuple[int, ...]:
        return tuple(min(max(1, math.floor(_CAP * n)), max(1, math.floor(eps * r * n + 0.5)))
                     for n, r in zip(sizes, share, strict=True))  # fmt: skip

    def fits(eps: float) -> bool:
        return sum(mask_bytes_bound(n, k) for n, k in zip(sizes, kept(eps), strict=True)) <= budget

    lo, hi = 0.0, _CAP / min(share)  # fits(lo): one weight per layer; at hi every layer is at its cap
    if fits(hi):
        return kept(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return kept(lo)


def allocate_(model: nn.Module, density: float | None = None) -> nn.Module:
    """Spread ``density`` (default: the model's own) over its masked layers by ERK, in place; return the model.
    ConfigError for a density outside (0, 1]; ModelError for a model that is not masked."""
    density = config_of(model).density if density is None else density
    set_density_(model, density)  # validates; records the nominal density
    layers = [layer for _, layer in masked_layers(model)]
    for layer, kept in zip(layers, erk_kept(tuple(tuple(x.source.shape) for x in layers), density), strict=True):
        layer.kept = kept
        layer.density = kept / math.prod(layer.source.shape)
    object.__setattr__(model, ALLOCATOR, allocate_)  # a later density change re-allocates by ERK
    return model
