"""Group ``q8`` of the dense leftovers (format version 3, formats/pemn-v3.md): int8 affine codes with
float16 outliers, torch-free.

One entry of ``n`` float values is stored as

* ``lo`` and ``step``, two float16 numbers (in ``dense.q8_range``);
* the positions of its ``k`` outliers, increasing, as uint16 (``dense.q8_index``), and their values as
  float16 (``dense.q8_value``);
* one uint8 code ``c`` for each of the ``n - k`` other values, in order (``dense.q8``), whose value is
  ``lo + c * step`` rounded once to float32. ``c * step`` is exact in float32 (8 bits times the 11 of a
  float16), so plain float32 arithmetic, with or without a fused multiply-add, gives the same bits.

The writer's choice (``quantize``), measured by ``benchmarks/leftover_int8.py`` on the full-data
report's files: an outlier is a value whose magnitude is over ``OUTLIER_FACTOR`` times the entry's
median magnitude (a folded BatchNorm channel with a tiny running variance); the others are spread over
256 levels from their minimum to their maximum. A file written to a size budget keeps at most one outlier
in ``OUTLIER_RESERVE`` values (``allot_outliers``: the farthest off their entry's median first), the
number the budget counts before training; a candidate over that cap widens its entry's grid instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import Q8_LEVELS, Q8_MAX_NUMEL

__all__ = ["OUTLIER_FACTOR", "OUTLIER_RESERVE", "Q8Entry", "allot_outliers", "dequantize", "quantize",
           "reserved_outliers", "stored_bytes"]

OUTLIER_FACTOR = 16  # benchmarks/results/leftover_int8_files.md: -0.07 to +0.01 points at 40x and 60x
# at most one value in this many of a budgeted file's q8 entries is an outlier, what the budget counts. The full-data
# report's --target-ratio 100 files made 40 to 48 in 4,992 values (under 1%); there one in 32 instead of one in 8
# freed 1.9 KB for the masks (density 0.0057 -> 0.0117) and won on every seed ("Outlier reserve of int8 leftovers").
# Where more values are far off their grid (8.5% in the 60x files) a budgeted file pays for the cap: 0.37 to 1.48
# points there (benchmarks/results/leftover_int8_cap.md); --dense-dtype auto stores float16 at those budgets
OUTLIER_RESERVE = 32
# the smallest normal float16: a narrower range (values within 255 * 2**-14 of each other) whose step would round to
# a subnormal or to 0 is better stored in float16, whose own spacing is then finer than the grid's
SMALLEST_STEP = np.float16(2.0**-14)


@dataclass(frozen=True)
class Q8Entry:
    """One entry as the file stores it."""

    codes: np.ndarray  # uint8, one per value that is no outlier
    lo: np.float16
    step: np.float16
    index: np.ndarray  # uint16, the outliers' positions, increasing
    values: np.ndarray  # float16, the outliers' values

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + 4 + self.index.nbytes + self.values.nbytes


def stored_bytes(numel: int, outliers: int) -> int:
    """Bytes an entry of ``numel`` values with ``outliers`` outliers takes in the four q8 tensors."""
    return numel - outliers + 4 + 4 * outliers


def reserved_outliers(numel: int) -> int:
    """The outliers a file may keep for a q8 entry of ``numel`` values: one in ``OUTLIER_RESERVE``, rounded up."""
    return -(-numel // OUTLIER_RESERVE)


def _candidates(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which values are outlier candidates (magnitude over ``OUTLIER_FACTOR`` times the entry's median
    magnitude), and how far each is off: ``|x| / median |x|`` (infinite for a nonzero value of an entry whose
    median is 0), to rank them."""
    magnitude = np.abs(flat).astype(np.float64)
    median = float(np.median(magnitude)) if flat.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        strength = np.where(magnitude > 0, magnitude / median, 0.0) if median == 0 else magnitude / median
    return magnitude > OUTLIER_FACTOR * median, strength


def allot_outliers(entries: list[np.ndarray]) -> list[int]:
    """How many outliers each of these float arrays (a file's int8 leftovers) may keep: all their candidates
    when they number at most ``sum(reserved_outliers(n))``, otherwise that many, taken from the candidates
    farthest off their entry's median (ties in entry order, then position)."""
    flats = [np.asarray(e, dtype=np.float32).reshape(-1) for e in entries]
    held = [0 < f.size <= Q8_MAX_NUMEL and bool(np.isfinite(f).all()) for f in flats]  # quantize's first test
    cap = sum(reserved_outliers(f.size) for f, q in zip(flats, held, strict=True) if q)
    ranked = [_candidates(f) if q else (np.zeros(0, bool), np.zeros(0)) for f, q in zip(flats, held, strict=True)]
    counts = [int(candidate.sum()) for candidate, _ in ranked]
    if sum(counts) <= cap:
        return counts
    owner = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    strength = np.concatenate([strength[candidate] for candidate, strength in ranked])
    kept = owner[np.argsort(-strength, kind="stable")[:cap]]
    return [int(n) for n in np.bincount(kept, minlength=len(flats))]


def quantize(values: np.ndarray, max_outliers: int | None = None) -> Q8Entry | None:
    """The q8 form of a float array (any shape, read in C order), or None when q8 cannot hold it, would be
    coarser than float16 or is not smaller: a non-finite value, more than ``Q8_MAX_NUMEL`` values, a range
    or an outlier outside float16's range, a step under ``SMALLEST_STEP`` for values that differ.
    ``max_outliers``: keep at most that many outliers (the largest in magnitude; the other candidates join
    the grid, widening it)."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if flat.size == 0 or flat.size > Q8_MAX_NUMEL or not np.isfinite(flat).all():
        return None
    outlier, strength = _candidates(flat)
    if max_outliers is not None and int(outlier.sum()) > max_outliers:
        keep = np.argsort(-np.where(outlier, strength, -1.0), kind="stable")[:max_outliers]
        outlier = np.zeros(flat.size, dtype=bool)
        outlier[keep] = True
    inliers = flat[~outlier].astype(np.float64)
    with np.errstate(over="ignore"):
        outlier_values = flat[outlier].astype(np.float16)
        if inliers.size:
            lo = np.float16(inliers.min())
            step = np.float16((inliers.max() - float(lo)) / Q8_LEVELS)
        else:
            lo = step = np.float16(0.0)
    if not (np.isfinite(lo) and np.isfinite(step) and np.isfinite(outlier_values).all()):
        return None
    if inliers.size and inliers.max() > inliers.min() and step < SMALLEST_STEP:  # a grid coarser than float16's own
        return None
    if stored_bytes(flat.size, int(outlier.sum())) >= 2 * flat.size:
        return None
    if step > 0:
        codes = np.clip(np.rint((inliers - float(lo)) / float(step)), 0, Q8_LEVELS).astype(np.uint8)
    else:
        codes = np.zeros(inliers.size, dtype=np.uint8)
    index = np.flatnonzero(outlier).astype(np.uint16)
    return Q8Entry(codes, lo, step, index, outlier_values)


def dequantize(codes: np.ndarray, lo: np.floating, step: np.floating, index: np.ndarray, values: np.ndarray,
               numel: int) -> np.ndarray:
    """The float32 values of one entry (flat): ``lo + code * step`` in float32 where no outlier is, the
    float16 outliers (widened) at their positions. The arguments are as the file stores them."""
    out = np.empty(numel, dtype=np.float32)
    keep = np.ones(numel, dtype=bool)
    keep[index.astype(np.int64)] = False
    out[keep] = np.float32(lo) + codes.astype(np.float32) * np.float32(step)
    out[~keep] = values.astype(np.float32)
    return out
