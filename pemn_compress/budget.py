"""File-size budgets: ``--target-size`` / ``--target-ratio``, and the density that meets them.

A `.pemn` file is ``8 + header + masks + leftovers`` bytes (the leftovers: the dense tensors and the
stored value vectors). Before any training, ``choose_density`` picks the density whose *bound* on
that size is at or under the budget, so that the file meets it whatever the masks learn:

- masks: a layer of ``n`` weights keeping ``m = kept_count(density, n)`` is stored in
  ``min(raw, rice)`` bytes (formats/pemn-v1.md section 7); ``mask_bytes_bound(n, m)`` is a bound on
  that for *every* mask with ``m`` ones (proved in its docstring, checked against the encoder by
  tests/test_budget.py);
- leftovers: exact, from a trial encoding of the masked model with the run's options (dense dtype,
  BatchNorm folding), as long as every leftover value stays inside float16's range (a value outside
  it is stored in float32, spec section 11: the one case the bound does not cover; the pipeline
  checks the final size again before writing and refuses rather than writing a file over budget).
  int8 leftovers (format version 3) depend on how many outliers training makes: the trial counts one
  in ``q8.OUTLIER_RESERVE`` values of each ``q8`` entry as an outlier, the most the writer keeps in a
  budgeted file (``export(cap_outliers=True)``: a candidate over that cap widens its entry's grid instead);
- header: the same trial encoding with every field that training decides set to its longest form:
  each layer record as a ``rice`` record with ``ones = n``, ``bytes`` = its bound, ``rice_k = 40``,
  ``invert = false``; the masks tensor as long as the sum of the bounds; the provenance values known
  only after training as ``WORST_FLOAT`` (as long as any float's JSON). Every other field is exact.
  Format version 2 deflates that text: the bound counts it at zlib's ``deflateBound`` of the text's
  length (``writer.encoded_size_bound``), since a smaller text may deflate worse than the trial's.
  That is about the JSON's own length, 2 to 3 times what it deflates to. ``Trial(header_estimate=True)``
  (what ``pemn compress`` uses) counts the header at the trial text's actual deflated size plus
  ``header_margin``: no longer a bound, so the pipeline checks the trained file and, in the rare case
  it is over, makes it fit (``compress._write``: the provenance's recipe left out, then a lower
  density) before writing anything. The library's ``MaskConfig.for_target`` keeps the proved bound.

Sizes are bytes: ``parse_size("40KB") == 40_000``, ``parse_size("40KiB") == 40_960``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

import numpy as np
from torch import nn

from .config import DEFAULT_DENSITY, MaskConfig  # DEFAULT_DENSITY: what a run with a budget uses when it fits
from .errors import ConfigError, PemnError, option_error
from .export import export
from .fileformat.constants import (
    CHECKSUM_ALGORITHM,
    DENSE_PREFIX,
    FORMAT_VERSION,
    HEADER_TENSOR,
    MASKS_TENSOR,
    MAX_RICE_K,
    Q8_GROUP,
    Q8_INDEX,
    Q8_TENSORS,
)
from .fileformat.header import Fingerprint, Json
from .fileformat.payload import Payload
from .fileformat.q8 import reserved_outliers
from .fileformat.reader import read_pemn
from .fileformat.summary import dense_fp32_entries, safetensors_file_size
from .fileformat.writer import encode, encoded_size_bound
from .nn.topk import kept_count
from .surgery import mask_

__all__ = [
    "DEFAULT_DENSITY",
    "WORST_FLOAT",
    "BudgetChoice",
    "SizeBound",
    "Trial",
    "budget_bytes",
    "choose_density",
    "mask_bytes_bound",
    "parse_size",
    "rice_bits_bound",
    "rice_k_range",
]

# A float whose JSON text is as long as any finite float's (24 characters: sign, 17 digits, point,
# 4-character exponent): stands in the trial header for values measured after training (accuracy).
WORST_FLOAT = -2.2250738585072014e-308

# The trial header's fingerprint: 64 hex digits as incompressible as a real digest (a run of one digit
# would deflate to a few bytes and make the trial header smaller than any real one).
_TYPICAL_FINGERPRINT = Fingerprint(CHECKSUM_ALGORITHM, hashlib.sha256(b"pemn trial fingerprint").hexdigest())
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*")


# ----------------------------------------------------------------------------------------------
# Sizes


def parse_size(value: object, *, name: str = "target_size") -> int:
    """Bytes from ``40000``, ``"40000"``, ``"40KB"`` (40,000), ``"40KiB"`` (40,960), ``"1.5MB"``, ``"2MiB"``.

    Units (case-insensitive): B, KB/MB/GB (powers of 1000), KiB/MiB/GiB (powers of 1024). A
    fractional result is rounded down (a budget is a ceiling). Anything else, or less than one
    byte, is an ``option_error`` on ``name``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise option_error(name, f"must be at least 1 byte, found {value}")
        return value
    match = _SIZE.fullmatch(value.lower()) if isinstance(value, str) else None
    if match is None or match.group(2) not in _UNITS:
        raise option_error(
            name, f"must be a size in bytes such as 40000, 40KB, 40KiB, 1.5MB or 2MiB; found {value!r}"
        )
    size = math.floor(Decimal(match.group(1)) * _UNITS[match.group(2)])
    if size < 1:
        raise option_error(name, f"must be at least 1 byte, found {value!r}")
    return size


def budget_bytes(*, target_size: int | None, target_ratio: float | None, dense_fp32_bytes: int) -> int:
    """The largest file size allowed: ``target_size``, or ``floor(dense_fp32_bytes / target_ratio)``."""
    if (target_size is None) == (target_ratio is None):
        raise ConfigError("give exactly one of target_size and target_ratio")
    if target_size is not None:
        return target_size
    return math.floor(dense_fp32_bytes / float(target_ratio))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# Masks


def rice_k_range(n: int) -> range:
    """The rice parameters a writer tries for a layer of ``n`` weights (spec section 7.3)."""
    return range(0, min(MAX_RICE_K, max(1, int(math.log2(n + 1)))) + 1)


def rice_bits_bound(n: int, rarer: int, k: int) -> int:
    """Bits of the rice code with parameter ``k`` of ANY vector of ``n`` bits with ``rarer`` ones.

    Proof: the ``rarer`` gaps ``g_j`` sum to ``p_last + 1 - rarer <= n - rarer``; the code has
    ``sum(g_j >> k) + rarer * (k + 1)`` bits and ``sum(g_j >> k) <= floor(sum(g_j) / 2**k)``.
    """
    return rarer * (k + 1) + (n - rarer) // (1 << k)


def mask_bytes_bound(n: int, ones: int) -> int:
    """An upper bound on the bytes the writer stores for ANY mask of ``n`` weights with ``ones`` ones.

    The writer stores ``min(raw, rice)``: raw is exactly ``ceil(n / 8)``; rice (tried only when the
    rarer value ``m' = min(ones, n - ones)`` occurs) codes ``m'`` ones with the best ``k`` of
    ``rice_k_range(n)``, so its bytes are at most ``ceil(min_k rice_bits_bound(n, m', k) / 8)``.
    Non-decreasing in ``ones`` for ``ones <= n / 2``.
    """
    raw = (n + 7) // 8
    rarer = min(ones, n - ones)
    if rarer == 0:
        return raw
    rice = min(rice_bits_bound(n, rarer, k) for k in rice_k_range(n))
    return min(raw, (rice + 7) // 8)


# ----------------------------------------------------------------------------------------------
# The whole file


@dataclass(frozen=True)
class SizeBound:
    """A bound on the file a density gives: ``masks + leftovers + header`` bytes.

    ``masks``: sum of ``mask_bytes_bound``; ``leftovers``: the dense and value tensors (exact);
    ``header``: the 8-byte length and the safetensors JSON header, with training-dependent fields at
    their longest.
    """

    density: float
    masks: int
    leftovers: int
    header: int
    header_estimated: bool = False  # the header counted at an estimate (``Trial(header_estimate=True)``)

    @property
    def total(self) -> int:
        return self.masks + self.leftovers + self.header


@dataclass(frozen=True)
class BudgetChoice:
    """What ``choose_density`` chose: the density and the bound that fits ``budget``."""

    budget: int  # bytes
    density: float
    bound: SizeBound
    target_size: int | None = None
    target_ratio: float | None = None

    def to_dict(self) -> dict:
        """Plain JSON (the CLI's ``--json`` ``target`` entry)."""
        return {
            "budget_bytes": self.budget, "target_size": self.target_size, "target_ratio": self.target_ratio,
            "density": self.density, "file_bytes_bound": self.bound.total, "masks_bytes_bound": self.bound.masks,
            "leftover_bytes": self.bound.leftovers, "header_bytes_bound": self.bound.header,
        }  # fmt: skip

    def status_line(self) -> str:
        """``target 40,000 B: density 0.23 (masks <= 31,208 B, leftovers 4,100 B, header <= 2,312 B)``."""
        bound = self.bound
        asked = f"{self.target_ratio:g}x = {self.budget:,} B" if self.target_ratio is not None else f"{self.budget:,} B"
        header = f"about {bound.header:,} B" if bound.header_estimated else f"<= {bound.header:,} B"
        return (f"target {asked}: density {self.density:g} (masks <= {bound.masks:,} B, leftovers "
                f"{bound.leftovers:,} B, header {header})")


class Trial:
    """The file of ``model`` encoded once at one density, then bounded at any density.

    ``model``: an unmasked model (copied, never changed); ``config``: the MaskConfig to apply (its
    density is replaced per candidate); ``write_options``: ``export``'s options (dense_dtype,
    fold_batchnorm, architecture); ``provenance(density)``: the provenance the file will record,
    with ``WORST_FLOAT`` for values measured after training.
    """

    def __init__(self, model: nn.Module, config: MaskConfig, *, provenance: Callable[[float], Json] | None = None,
                 format_version: int = FORMAT_VERSION, header_estimate: bool = False, **write_options) -> None:
        self.config = config
        self.format_version = format_version
        self.header_estimate = header_estimate and format_version >= 2
        self.provenance = provenance or (lambda density: None)
        skeleton = copy.deepcopy(model)
        mask_(skeleton, config.replace(density=DEFAULT_DENSITY))
        self.payload = _reserve_outliers(export(skeleton, **write_options, provenance=self.provenance(DEFAULT_DENSITY)))
        self.sizes = [math.prod(record.shape) for record in self.payload.layers]
        self.leftovers = sum(t.nbytes for name, t in self.payload.tensors.items() if name != MASKS_TENSOR)
        self.shrinkable = _shrinkable(skeleton, self.payload, format_version)

    def dense_fp32_bytes(self) -> int:
        """The size of the dense fp32 safetensors file of the model (what ``pemn compress`` reports)."""
        return safetensors_file_size(dense_fp32_entries(read_pemn(encode(self.payload))))

    def bound(self, density: float) -> SizeBound:
        """The bound on the file at ``density`` (see the module docstring)."""
        masks = [mask_bytes_bound(n, kept_count(density, n)) for n in self.sizes]
        if self.header_estimate:  # the digits the file will hold: kept counts and two-digit rice parameters
            layers = tuple(
                dataclasses.replace(record, codec="rice", ones=kept_count(density, n), bytes=b, rice_k=10 + i % 31,
                                    invert=False)
                for i, (record, n, b) in enumerate(zip(self.payload.layers, self.sizes, masks, strict=True))
            )
        else:
            layers = tuple(
                dataclasses.replace(record, codec="rice", ones=n, bytes=b, rice_k=MAX_RICE_K, invert=False)
                for record, n, b in zip(self.payload.layers, self.sizes, masks, strict=True)
            )
        header = dataclasses.replace(self.payload.file_header, config=self.config.replace(density=density),
                                     layers=layers, provenance=self.provenance(density) or {},
                                     fingerprint=_TYPICAL_FINGERPRINT)
        tensors = dict(self.payload.tensors)
        tensors[MASKS_TENSOR] = np.zeros(sum(masks), dtype=np.uint8)
        payload = Payload(header, tensors)
        if self.header_estimate:
            blob = encode(payload, self.format_version)
            total = len(blob) + header_margin(int(read_pemn(blob).tensors[HEADER_TENSOR].size))
        else:
            total = encoded_size_bound(payload, self.format_version)
        return SizeBound(density, sum(masks), self.leftovers, total - sum(masks) - self.leftovers,
                         self.header_estimate)

    def smallest_density(self) -> float:
        """The density at which every layer keeps exactly one weight (the smallest file)."""
        return 1.0 / max(self.sizes)


def _reserve_outliers(payload: Payload) -> Payload:
    """``payload`` with each ``q8`` entry holding ``reserved_outliers(n)`` outliers (its first values, zero:
    only their size counts, and the trial stays a valid file): an untrained model's leftovers have none, a
    trained one's do."""
    dense = payload.file_header.dense
    if not dense.q8_entries():
        return payload
    entries = tuple(
        dataclasses.replace(e, outliers=reserved_outliers(e.numel)) if e.group == Q8_GROUP else e
        for e in dense.tensors
    )
    reserved = dataclasses.replace(dense, tensors=entries)
    tensors = dict(payload.tensors)
    for name, length in reserved.q8_lengths().items():
        tensors[name] = np.zeros(length, dtype=Q8_TENSORS[name][0])
    tensors[Q8_INDEX] = np.concatenate([np.arange(e.outliers or 0, dtype="<u2") for e in reserved.q8_entries()])
    return Payload(dataclasses.replace(payload.file_header, dense=reserved), tensors)


def header_margin(deflated: int) -> int:
    """Bytes added to a trial header's deflated size to estimate the file's (``Trial(header_estimate=True)``).

    The file's header text has other digits than the trial's (kept counts, byte counts, rice parameters,
    accuracies, two SHA-256 digests), and deflate compresses other digits to other lengths: 32 bytes
    and 1/16 of the deflated size (random field values over real headers stayed within +46 B of 778 B).
    """
    return 32 + deflated // 16


def _round_down(x: float, digits: int = 3) -> float:
    """``x`` rounded down to ``digits`` significant decimal digits (a readable density)."""
    exponent = math.floor(math.log10(x))
    quantum = Decimal(1).scaleb(exponent - digits + 1)
    return float((Decimal(x) / quantum).to_integral_value(ROUND_FLOOR) * quantum)


def choose_density(trial: Trial, budget: int, *, target_size: int | None = None,
                   target_ratio: float | None = None) -> BudgetChoice:
    """The density for a file of at most ``budget`` bytes.

    ``DEFAULT_DENSITY`` when its bound fits; else the largest density below it whose bound fits,
    found by bisection on the largest layer's kept count ``M`` (density ``M / n_max``), then rounded
    down to 3 significant digits when that still fits. Invariant: the returned choice's
    ``bound.total <= budget``, its bound computed at exactly the returned density. Raises a
    ``ConfigError`` when even one kept weight per layer does not fit.
    """

    def choice(bound: SizeBound) -> BudgetChoice:
        assert bound.total <= budget, (bound, budget)
        return BudgetChoice(budget, bound.density, bound, target_size=target_size, target_ratio=target_ratio)

    top = trial.bound(DEFAULT_DENSITY)
    if top.total <= budget:
        return choice(top)
    largest = max(trial.sizes)
    low = trial.bound(trial.smallest_density())
    if low.total > budget:
        raise _unreachable(budget, low, trial.shrinkable, target_size=target_size, target_ratio=target_ratio)
    lo, hi = 1, kept_count(DEFAULT_DENSITY, largest)  # fits(lo), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        bound = trial.bound(mid / largest)
        if bound.total <= budget:
            lo, low = mid, bound
        else:
            hi = mid
    rounded = trial.bound(_round_down(low.density))
    return choice(rounded if rounded.total <= budget and rounded.density > 0 else low)


def _shrinkable(model: nn.Module, payload: Payload, format_version: int) -> tuple[str, ...]:
    """The write options that would store ``payload``'s leftovers in fewer bytes than its own settings
    (keys of ``_SHRINK_WORDS``): float16 for float32 leftovers, int8 for float16 ones (not in a version 1 file),
    folding for unfolded BatchNorms."""
    dense = payload.file_header.dense
    options = []
    if f"{DENSE_PREFIX}f32" in payload.tensors and dense.dtype == "float32":
        options.append("dense_dtype")
    elif f"{DENSE_PREFIX}f16" in payload.tensors and dense.dtype == "float16" and format_version != 1:
        options.append("dense_dtype_int8")
    if not dense.folded_batchnorm and any(
        isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
        and module.running_var is not None for module in model.modules()
    ):
        options.append("fold_batchnorm")
    return tuple(options)


# option -> (command-line words, Python words) of the setting that shrinks the leftovers
_SHRINK_WORDS = {
    "dense_dtype": ("--dense-dtype float16", 'dense_dtype="float16"'),
    "dense_dtype_int8": ("--dense-dtype int8", 'dense_dtype="int8"'),
    "fold_batchnorm": ("--fold-batchnorm", "fold_batchnorm=True"),
}


def _unreachable(budget: int, smallest: SizeBound, shrinkable: tuple[str, ...] = (), *,
                 target_size: int | None, target_ratio: float | None) -> PemnError:
    """The one-line error for a budget below the smallest file the model can make: it suggests the
    write options that would shrink the leftovers (``shrinkable``), else a budget that fits."""

    def message(cli: bool) -> str:
        if target_ratio is not None:
            asked = f"{'--target-ratio ' if cli else 'target_ratio='}{target_ratio:g} ({budget:,} B)"
        else:
            asked = f"{'--target-size ' if cli else 'target_size='}{budget:,} B"
        if shrinkable:
            words = " and ".join(_SHRINK_WORDS[option][0 if cli else 1] for option in shrinkable)
            advice = f"raise the target, or shrink the leftovers with {words}"
        else:
            least = f"{'--target-size ' if cli else 'target_size='}{smallest.total}"
            advice = f"no write option makes it smaller: raise the target to {least} or more"
        return (f"{asked} is below the smallest file this model can make, {smallest.total:,} B with one kept "
                f"weight per layer: the leftovers take {smallest.leftovers:,} B and the header {smallest.header:,} B "
                f"(masks <= {smallest.masks:,} B); {advice}")

    return ConfigError(message(cli=False), cli_message=message(cli=True))
