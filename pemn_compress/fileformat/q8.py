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
256 levels from their minimum to their maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import Q8_LEVELS, Q8_MAX_NUMEL

__all__ = ["OUTLIER_FACTOR", "Q8Entry", "dequantize", "quantize", "stored_bytes"]

OUTLIER_FACTOR = 16  # benchmarks/results/leftover_int8_files.md: -0.07 to +0.01 points at 40x and 60x
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


def quantize(values: np.ndarray) -> Q8Entry | None:
    """The q8 form of a float array (any shape, read in C order), or None when q8 cannot hold it, would be
    coarser than float16 or is not smaller: a non-finite value, more than ``Q8_MAX_NUMEL`` values, a range
    or an outlier outside float16's range, a step under ``SMALLEST_STEP`` for values that differ."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if flat.size == 0 or flat.size > Q8_MAX_NUMEL or not np.isfinite(flat).all():
        return None
    magnitude = np.abs(flat).astype(np.float64)
    outlier = magnitude > OUTLIER_FACTOR * float(np.median(magnitude))
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
