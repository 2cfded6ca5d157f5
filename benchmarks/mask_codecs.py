"""Mask codecs beyond the per-layer bound: do context-adaptive coders beat raw/rice on trained masks?

A `.pemn` mask keeps an exact top-k per layer, so the per-layer information bound is ``n*H(m/n)``
bits and the v1 codecs (``raw`` packbits, ``rice`` Golomb-Rice gaps; formats/pemn-v1.md section 7)
are measured against it. Trained masks are not i.i.d. inside a layer: output channels (rows) and
input positions (columns) end at different densities. This benchmark trains small zoo models on
Fashion-MNIST with the ``pemn compress`` CLI (cached under ``--work``), reads their masks back and
codes every layer with:

- ``v1``: the package's writer choice (raw or rice, whichever is smaller), exact bytes;
- ``group-rice`` (candidate a, real, vectorized numpy): the kept count of every row (or every column,
  or one count for the whole layer: a per-layer choice) is coded first; rows whose counts suggest the
  same Rice parameter and invert flag are concatenated and coded as one Rice stream (its best
  parameter in 5 bits);
- ``group-ac`` (candidate a, real): the same counts, then a binary arithmetic coder with the exact
  enumerative probability ``remaining ones / remaining bits`` of the row: its ideal is
  ``sum log2 C(n_g, m_g)`` plus the counts;
- ``ctx-ac`` (candidate b, real): an adaptive binary arithmetic coder, no side information, whose
  context is (bucket of the row's density so far, bucket of the column's density so far in earlier
  rows, previous bit of the row), with Krichevsky-Trofimov counts per context;
- ``bitarray sc``: ``bitarray.util.sc_encode`` (bitarray's own sparse compression), for item 2.

Every real coder decodes every layer back and the result is asserted equal to the mask. Ideal
columns: the per-layer bound, the per-group enumerative bound (+ the real bits of the counts) and the
ideal adaptive code length of several context models. Each candidate's real size is reported with
the writer's fallback (per layer the smaller of the candidate and v1, as a v2 writer would choose);
the CSV also has every coder alone. The i.i.d. control codes random masks with every layer's
shape and kept count (a good coder gains about 0% there).

Decode speed is measured in one run, single thread, as MB of decoded mask (one bit per weight) per
second, and reported as ratios to the package's numpy ``rice_decode`` on the same layers. Item 2
compares that decoder with a bitarray one (``bitarray.decodetree`` of the Rice code plus an escape
word, the same checks), identical output asserted on every layer.

    python benchmarks/mask_codecs.py                 # trains into --work once (about 30 min of one core)
    python benchmarks/mask_codecs.py --work DIR      # reuses the trained files cached in DIR
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime
import json
import math
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bitarray
import bitarray.util
import numpy as np

from pemn_compress.fileformat.codecs import (
    CodedMask,
    choose_codec,
    decode_mask,
    rice_decode,
    rice_encode,
    rice_size_bits,
)
from pemn_compress.fileformat.payload import PemnFile
from pemn_compress.fileformat.reader import decode_masks, read_pemn

# (model, max train samples, epochs): sized so that the nine runs take about half an hour of one core
TRAIN_PLAN = [
    ("mlp_3", 20000, 3),
    ("convmixer_128_4", 10000, 3),
    ("resnet20", 8000, 2),
]
DENSITIES = (0.5, 0.1, 0.05)
RESULTS = Path(__file__).parent / "results"


# ----------------------------------------------------------------------------------------------
# trained masks


def trained_path(work: Path, model: str, density: float) -> Path:
    """Where the trained `.pemn` file of one (model, density) run is cached."""
    return work / f"{model}_d{density:g}.pemn"


def train_command(model: str, density: float, out: Path, threads: int = 1) -> list[str]:
    """The ``pemn compress`` command line of one run of ``TRAIN_PLAN``."""
    samples, epochs = {name: (s, e) for name, s, e in TRAIN_PLAN}[model]
    return [
        "python",
        "-m",
        "pemn_compress",
        "compress",
        model,
        "--density",
        str(density),
        "--epochs",
        str(epochs),
        "--max-train-samples",
        str(samples),
        "--threads",
        str(threads),
        "--seed",
        "0",
        "--quiet",
        "--json",
        "--output",
        str(out),
    ]


def train_all(work: Path, models: list[str], densities: tuple[float, ...], threads: int = 1) -> None:
    """Run ``pemn compress`` for every (model, density) whose file is not cached in ``work`` yet."""
    work.mkdir(parents=True, exist_ok=True)
    for model in models:
        for density in densities:
            out = trained_path(work, model, density)
            if out.exists():
                continue
            cmd = [sys.executable] + train_command(model, density, out, threads)[1:]
            start = time.perf_counter()
            result = subprocess.run(cmd, check=True, capture_output=True, text=True)
            (work / f"{out.stem}.json").write_text(result.stdout)
            print(f"trained {out.name} in {time.perf_counter() - start:.0f} s", flush=True)


def load_layers(path: Path | PemnFile) -> list[dict]:
    """Masks of a `.pemn` file (a path, or the file read) as ``{"name", "shape", "mask"}`` with ``mask`` 2-D:
    (output channel, rest)."""
    pf = path if isinstance(path, PemnFile) else read_pemn(path)
    masks = decode_masks(pf)
    return [
        {
            "name": layer.name,
            "shape": list(layer.shape),
            "mask": masks[layer.name].reshape(layer.shape[0], -1),
        }
        for layer in pf.layers
    ]


def file_facts(path: Path) -> dict:
    """Test accuracy and training recipe recorded in a `.pemn` file's provenance."""
    prov = read_pemn(path).header["provenance"]
    recipe = prov.get("recipe", {})
    return {
        "accuracy": prov.get("accuracy"),
        "train_samples": prov.get("train_samples"),
        "epochs": recipe.get("epochs"),
    }


def random_control(layers: list[dict], seed: int = 0) -> list[dict]:
    """The i.i.d. control: uniformly random masks with every layer's shape and exact kept count."""
    rng = np.random.default_rng(seed)
    out = []
    for layer in layers:
        mask = layer["mask"]
        flat = np.zeros(mask.size, dtype=bool)
        flat[rng.choice(mask.size, size=int(mask.sum()), replace=False)] = True
        out.append({**layer, "mask": flat.reshape(mask.shape)})
    return out


# ----------------------------------------------------------------------------------------------
# ideal code lengths


def entropy_bits(n: int, m: int) -> float:
    """``n * H(m / n)``: the per-layer information bound in bits."""
    if m in (0, n):
        return 0.0
    p = m / n
    return -n * (p * math.log2(p) + (1 - p) * math.log2(1 - p))


def log2_binomial(n: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``log2 C(n, m)`` elementwise: the enumerative code length of a group of ``n`` bits with ``m`` ones."""
    lg = np.vectorize(math.lgamma, otypes=[float])
    return (lg(n + 1) - lg(m + 1) - lg(n - m + 1)) / math.log(2)


def adaptive_bits(bits: np.ndarray, ctx: np.ndarray) -> float:
    """Ideal code length of ``bits`` coded in order with Krichevsky-Trofimov counts per context ``ctx``."""
    bits = bits.reshape(-1).astype(np.int64)
    ctx = ctx.reshape(-1)
    order = np.argsort(ctx, kind="stable")
    b, c = bits[order], ctx[order]
    first = np.r_[True, c[1:] != c[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(b.size), 0))
    ones_before = np.cumsum(b) - b
    ones_before = ones_before - ones_before[group_start]
    seen = np.arange(b.size) - group_start
    p1 = (ones_before + 0.5) / (seen + 1.0)
    return float(-np.log2(np.where(b == 1, p1, 1.0 - p1)).sum())


def bucket(ones: np.ndarray | int, count: np.ndarray | int, density: float) -> np.ndarray | int:
    """Bucket (0..6) of a running density estimate against the layer density: log2 ratio cut at ±2, ±1, ±0.5.

    The estimate is ``(ones + 2 d) / (count + 2)`` (a prior of two bits at the layer density ``d``).
    """
    rate = (np.asarray(ones) + 2.0 * density) / (np.asarray(count) + 2.0)
    return np.searchsorted(density * BUCKET_CUTS, rate, side="right")


BUCKET_CUTS = np.array([0.25, 0.5, 2**-0.5, 2**0.5, 2.0, 4.0])


def context_ids(mask: np.ndarray, model: str) -> np.ndarray:
    """Context of every bit of a 2-D mask (rows coded in order) for the named context model."""
    rows, cols = mask.shape
    x = mask.astype(np.int64)
    density = x.sum() / x.size
    left = np.zeros_like(x)
    left[:, 1:] = x[:, :-1]
    above = np.zeros_like(x)
    above[1:, :] = x[:-1, :]
    if model == "row":
        return np.repeat(np.arange(rows), cols).reshape(rows, cols)
    if model == "col":
        return np.tile(np.arange(cols), (rows, 1))
    if model == "left+above":
        return 2 * left + above
    row_b = bucket(np.cumsum(x, axis=1) - x, np.arange(cols)[None, :], density)
    col_b = bucket(np.cumsum(x, axis=0) - x, np.arange(rows)[:, None], density)
    ctx = 7 * row_b + col_b
    if model == "rowb_colb":
        return ctx
    if model == "rowb_colb_left":
        return 2 * ctx + left
    raise ValueError(model)


CONTEXT_MODELS = ("row", "col", "left+above", "rowb_colb", "rowb_colb_left")


def row_col_logistic_bits(mask: np.ndarray, iterations: int = 30) -> float:
    """Headroom estimate, no coder: ``P(bit) = sigmoid(a_row + b_col)`` fitted to the mask (maximum likelihood).

    Code length of the mask under the fitted model plus the MDL price of its parameters
    (``0.5 log2`` of the bits each parameter sees). Row and column rates at once, which neither the
    per-group counts nor a bucketed context captures fully; a real coder would pay more.
    """
    rows, cols = mask.shape
    x = mask.astype(np.float64)
    row_rate = (x.sum(axis=1) + 0.5) / (cols + 1.0)
    a, b = np.log(row_rate / (1 - row_rate)), np.zeros(cols)
    for _ in range(iterations):  # alternating Newton steps: fitted row and column sums match the mask's
        p = 1 / (1 + np.exp(-(a[:, None] + b[None, :])))
        a = np.clip(a + (x.sum(axis=1) - p.sum(axis=1)) / np.maximum((p * (1 - p)).sum(axis=1), 1e-9), -30, 30)
        p = 1 / (1 + np.exp(-(a[:, None] + b[None, :])))
        b = np.clip(b + (x.sum(axis=0) - p.sum(axis=0)) / np.maximum((p * (1 - p)).sum(axis=0), 1e-9), -30, 30)
    p = np.clip(1 / (1 + np.exp(-(a[:, None] + b[None, :]))), 1e-12, 1 - 1e-12)
    data_bits = float(-np.log2(np.where(mask, p, 1 - p)).sum())
    return data_bits + 0.5 * (rows * math.log2(max(cols, 2)) + cols * math.log2(max(rows, 2)))


# ----------------------------------------------------------------------------------------------
# bit-level helpers (counts block)


def zigzag(v: int) -> int:
    """Signed to unsigned: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ..."""
    return 2 * v if v >= 0 else -2 * v - 1


def unzigzag(u: int) -> int:
    """Inverse of ``zigzag``."""
    return u // 2 if u % 2 == 0 else -(u + 1) // 2


def expected_counts(m: int, groups: int) -> np.ndarray:
    """Kept counts spread evenly over ``groups`` equal groups, summing exactly to ``m``."""
    g = np.arange(groups + 1, dtype=np.int64)
    return np.diff(m * g // groups)


def encode_counts(counts: np.ndarray, axis: int, m: int) -> list[int]:
    """Bits of the counts block: 2-bit grouping, 5-bit Rice parameter, Rice codes of all counts but the last.

    Each count is coded as ``zigzag(count - expected)``; the last one follows from the layer's ``m``.
    """
    residual = [zigzag(int(c - e)) for c, e in zip(counts[:-1], expected_counts(m, counts.size)[:-1], strict=True)]
    arr = np.array(residual, dtype=np.int64)
    k = min(range(20), key=lambda k: rice_size_bits(arr, k)) if arr.size else 0
    bits = [axis >> 1, axis & 1] + [(k >> (4 - i)) & 1 for i in range(5)]
    for u in residual:
        bits += [1] * (u >> k) + [0] + [(u >> (k - 1 - i)) & 1 for i in range(k)]
    return bits


def decode_counts(bits: np.ndarray, m: int, rows: int, cols: int) -> tuple[int, np.ndarray, int]:
    """Inverse of ``encode_counts``: (axis, counts, bits used); ``rows x cols`` is the layer's 2-D shape."""
    axis = 2 * int(bits[0]) + int(bits[1])
    k = int("".join(str(int(b)) for b in bits[2:7]), 2)
    groups = group_shape(axis, rows, cols)[0]
    pos = 7
    expected = expected_counts(m, groups)
    counts = np.empty(groups, dtype=np.int64)
    for g in range(groups - 1):
        q = 0
        while bits[pos]:
            q += 1
            pos += 1
        pos += 1
        r = 0
        for _ in range(k):
            r = 2 * r + int(bits[pos])
            pos += 1
        counts[g] = expected[g] + unzigzag((q << k) | r)
    counts[-1] = m - counts[:-1].sum()
    return axis, counts, pos


GROUPINGS = ("rows", "cols", "layer")  # output channels, columns (input position), the whole layer


def oriented(mask: np.ndarray, axis: int) -> np.ndarray:
    """The layer's 2-D mask with its groups as rows: output channels (0), columns (1) or one group (2)."""
    return (mask, mask.T, mask.reshape(1, -1))[axis]


def group_shape(axis: int, rows: int, cols: int) -> tuple[int, int]:
    """(groups, bits per group) of a grouping of a ``rows x cols`` mask."""
    return ((rows, cols), (cols, rows), (1, rows * cols))[axis]


def unoriented(groups: np.ndarray, axis: int, rows: int, cols: int) -> np.ndarray:
    """Inverse of ``oriented``."""
    return (groups, groups.T, groups.reshape(rows, cols))[axis]


def best_axis(mask: np.ndarray) -> int:
    """The grouping (rows, columns, whole layer) with the smallest enumerative bound plus counts."""
    costs = []
    for axis in range(len(GROUPINGS)):
        g = oriented(mask, axis)
        counts = g.sum(axis=1)
        ideal = log2_binomial(np.full(counts.size, g.shape[1]), counts).sum()
        costs.append(ideal + len(encode_counts(counts, axis, int(mask.sum()))))
    return int(np.argmin(costs))


# ----------------------------------------------------------------------------------------------
# candidate a: group-rice (vectorized)


def rice_k_for(n: int, m: int) -> int:
    """Rice parameter of a group of ``n`` bits with ``m`` ones (after inverting a dense group)."""
    ones = min(m, n - m)
    if ones == 0:
        return 0
    mean_gap = (n - ones) / ones
    return max(0, int(math.floor(math.log2(max(mean_gap * math.log(2), 1.0)))))


def group_classes(n: int, counts: np.ndarray) -> list[tuple[tuple[int, bool], np.ndarray]]:
    """Groups sharing one (Rice parameter, invert) pair, in key order; empty and full groups need no bits."""
    keys = [(rice_k_for(n, int(c)), bool(c > n - c)) for c in counts]
    classes: dict[tuple[int, bool], list[int]] = {}
    for g, (key, c) in enumerate(zip(keys, counts, strict=True)):
        if 0 < c < n:
            classes.setdefault(key, []).append(g)
    return [(key, np.array(classes[key])) for key in sorted(classes)]


def rice_decode_at(bits: np.ndarray, start: int, count: int, k: int) -> tuple[np.ndarray, int]:
    """Gaps of ``count`` Rice codewords starting at bit ``start`` of ``bits``, and the end position.

    Vectorized by binary lifting over codeword starts, as the package's ``rice_decode``.
    """
    sub = bits[start:]
    length = sub.size
    zero_at = np.flatnonzero(sub == 0)
    idx = np.searchsorted(zero_at, np.arange(length + 1))
    next_zero = np.where(idx < zero_at.size, zero_at[np.minimum(idx, zero_at.size - 1)], length)
    step = np.minimum(next_zero + 1 + k, length)
    starts = np.zeros(count + 1, dtype=np.int64)
    j = np.arange(count + 1)
    table = step
    for t in range(int(count).bit_length()):
        sel = ((j >> t) & 1).astype(bool)
        starts[sel] = table[starts[sel]]
        table = table[table]
    s = starts[:-1]
    z = next_zero[s]
    gaps = (z - s) << k
    for b in range(k):
        gaps |= sub[z + 1 + b].astype(np.int64) << (k - 1 - b)
    return gaps, start + int(starts[-1])


def group_rice_encode(mask: np.ndarray) -> bytes:
    """Candidate a, Rice flavour: counts block, then one Rice stream per (parameter, invert) class of groups."""
    axis = best_axis(mask)
    g = oriented(mask, axis)
    counts = g.sum(axis=1)
    bits = encode_counts(counts, axis, int(mask.sum()))
    chunks = [np.array(bits, dtype=np.uint8)]
    for (_, invert), members in group_classes(g.shape[1], counts):
        x = g[members].reshape(-1) ^ invert
        gaps = np.diff(np.flatnonzero(x), prepend=-1) - 1
        k = min(range(32), key=lambda k: (rice_size_bits(gaps, k), k))  # noqa: B023 (used at once)
        chunks.append(np.array([(k >> (4 - i)) & 1 for i in range(5)], dtype=np.uint8))
        chunks.append(np.unpackbits(rice_encode(x, k))[: rice_size_bits(gaps, k)])
    return np.packbits(np.concatenate(chunks)).tobytes()


def group_rice_decode(data: bytes, rows: int, cols: int, m: int) -> np.ndarray:
    """Inverse of ``group_rice_encode``: the 2-D boolean mask."""
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    axis, counts, pos = decode_counts(bits, m, rows, cols)
    n = group_shape(axis, rows, cols)[1]
    g = np.zeros((counts.size, n), dtype=bool)
    g[counts == n] = True
    for (_, invert), members in group_classes(n, counts):
        k = int("".join(str(int(b)) for b in bits[pos : pos + 5]), 2)
        pos += 5
        c = counts[members]
        ones = int(np.where(invert, n - c, c).sum())
        gaps, pos = rice_decode_at(bits, pos, ones, k)
        x = np.zeros(members.size * n, dtype=bool)
        x[np.cumsum(gaps + 1) - 1] = True
        g[members] = x.reshape(members.size, n) ^ invert
    return unoriented(g, axis, rows, cols)


# ----------------------------------------------------------------------------------------------
# binary arithmetic coder (32-bit, carry-less, as lpaq1), probabilities in 16 bits


class ArithEncoder:
    """Binary arithmetic encoder; ``encode(bit, p1)`` with ``p1 = P(bit = 1) * 65536`` in [1, 65535]."""

    def __init__(self) -> None:
        self.x1, self.x2, self.out = 0, 0xFFFFFFFF, bytearray()

    def encode(self, bit: int, p1: int) -> None:
        """Narrow the interval to the part of ``bit``, shifting out the settled leading bytes."""
        xmid = self.x1 + (((self.x2 - self.x1) * p1) >> 16)
        if bit:
            self.x2 = xmid
        else:
            self.x1 = xmid + 1
        while not (self.x1 ^ self.x2) & 0xFF000000:
            self.out.append(self.x2 >> 24)
            self.x1 = (self.x1 << 8) & 0xFFFFFFFF
            self.x2 = ((self.x2 << 8) & 0xFFFFFFFF) | 0xFF

    def finish(self) -> bytes:
        """The coded bytes: one flush byte (the decoder reads 0xFF past the end)."""
        self.out.append(self.x1 >> 24)
        return bytes(self.out)


class ArithDecoder:
    """Inverse of ``ArithEncoder``: ``decode(p1)`` with the encoder's probability returns the bit."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.x1, self.x2, self.x = data, 4, 0, 0xFFFFFFFF, 0
        for i in range(4):
            self.x = (self.x << 8) | (data[i] if i < len(data) else 0xFF)

    def decode(self, p1: int) -> int:
        """The next bit."""
        xmid = self.x1 + (((self.x2 - self.x1) * p1) >> 16)
        bit = int(self.x <= xmid)
        if bit:
            self.x2 = xmid
        else:
            self.x1 = xmid + 1
        while not (self.x1 ^ self.x2) & 0xFF000000:
            self.x1 = (self.x1 << 8) & 0xFFFFFFFF
            self.x2 = ((self.x2 << 8) & 0xFFFFFFFF) | 0xFF
            self.x = ((self.x << 8) & 0xFFFFFFFF) | (self.data[self.pos] if self.pos < len(self.data) else 0xFF)
            self.pos += 1
        return bit


def enumerative_p1(ones_left: int, bits_left: int) -> int:
    """16-bit probability of a one when ``ones_left`` of the group's ``bits_left`` remaining bits are ones."""
    return min(65535, max(1, (ones_left << 16) // bits_left))


def kt_p1(n0: int, n1: int) -> int:
    """16-bit Krichevsky-Trofimov probability of a one after ``n0`` zeros and ``n1`` ones."""
    return min(65535, max(1, ((2 * n1 + 1) << 15) // (n0 + n1 + 1)))


# ----------------------------------------------------------------------------------------------
# candidate a: group-ac; candidate b: ctx-ac


def group_ac_encode(mask: np.ndarray) -> bytes:
    """Candidate a, arithmetic flavour: counts block, then every group with its enumerative probability."""
    axis = best_axis(mask)
    g = oriented(mask, axis)
    counts = g.sum(axis=1)
    head = np.packbits(np.array(encode_counts(counts, axis, int(mask.sum())), dtype=np.uint8)).tobytes()
    enc = ArithEncoder()
    n = g.shape[1]
    for row, ones in zip(g.tolist(), counts.tolist(), strict=True):
        left = n
        for bit in row:
            if 0 < ones < left:
                enc.encode(bit, enumerative_p1(ones, left))
            ones -= bit
            left -= 1
    return head + enc.finish()


def group_ac_decode(data: bytes, rows: int, cols: int, m: int) -> np.ndarray:
    """Inverse of ``group_ac_encode``: the 2-D boolean mask."""
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    axis, counts, pos = decode_counts(bits, m, rows, cols)
    dec = ArithDecoder(data[(pos + 7) // 8 :])
    n = group_shape(axis, rows, cols)[1]
    out = np.zeros((counts.size, n), dtype=bool)
    for r, ones in enumerate(counts.tolist()):
        row = [0] * n
        for left in range(n, 0, -1):
            if ones == 0:
                break
            bit = 1 if ones == left else dec.decode(enumerative_p1(ones, left))
            row[n - left] = bit
            ones -= bit
        out[r] = row
    return unoriented(out, axis, rows, cols)


def row_bucket_table(cols: int, density: float) -> list[list[float]]:
    """Per position in the row, the ones-so-far thresholds of the row buckets (``bisect`` gives the bucket)."""
    return [[density * cut * (c + 2.0) - 2.0 * density for cut in BUCKET_CUTS] for c in range(cols)]


def ctx_ac_code(mask: np.ndarray | None, data: bytes | None, rows: int, cols: int, m: int):
    """Candidate b, encoder (``mask`` given) or decoder (``data`` given): one pass, same model both ways.

    Context: 7 x 7 x 2 = (row-density bucket so far, column-density bucket over earlier rows, left bit),
    matching ``context_ids(.., "rowb_colb_left")``; adaptive KT counts per context.
    """
    density = m / (rows * cols)
    n0, n1 = [0] * 98, [0] * 98
    col_ones = np.zeros(cols, dtype=np.int64)
    thresholds = row_bucket_table(cols, density)
    enc = ArithEncoder() if mask is not None else None
    dec = ArithDecoder(data) if data is not None else None
    src = mask.tolist() if mask is not None else None
    out = np.zeros((rows, cols), dtype=bool)
    for r in range(rows):
        col_ctx = (14 * bucket(col_ones, r, density)).tolist()
        row = src[r] if src is not None else [0] * cols
        ones, left = 0, 0
        for c in range(cols):
            ctx = col_ctx[c] + 2 * bisect.bisect_right(thresholds[c], ones) + left
            p1 = kt_p1(n0[ctx], n1[ctx])
            if enc is not None:
                bit = row[c]
                enc.encode(bit, p1)
            else:
                bit = dec.decode(p1)
                row[c] = bit
            if bit:
                n1[ctx] += 1
            else:
                n0[ctx] += 1
            ones += bit
            left = bit
        out[r] = row
        col_ones += out[r]
    return enc.finish() if enc is not None else out


def ctx_ac_encode(mask: np.ndarray) -> bytes:
    """Candidate b encoder (see ``ctx_ac_code``)."""
    rows, cols = mask.shape
    return ctx_ac_code(mask.astype(np.int64), None, rows, cols, int(mask.sum()))


def ctx_ac_decode(data: bytes, rows: int, cols: int, m: int) -> np.ndarray:
    """Candidate b decoder (see ``ctx_ac_code``)."""
    return ctx_ac_code(None, data, rows, cols, m)


# ----------------------------------------------------------------------------------------------
# v1 and bitarray


def v1_encode(mask: np.ndarray) -> CodedMask:
    """The package's writer choice (raw or rice), as it lands in a `.pemn` file."""
    return choose_codec(mask)


def v1_decode(coded: CodedMask, n: int) -> np.ndarray:
    """The package's reader."""
    return decode_mask(coded.data, n, coded.coding, "layer")


def rice_only(mask: np.ndarray) -> dict:
    """Rice stream of a layer with the writer's ``k`` and ``invert`` even where raw would be smaller."""
    flat = mask.reshape(-1)
    invert = bool(flat.sum() > flat.size - flat.sum())
    x = flat ^ invert
    gaps = np.diff(np.flatnonzero(x), prepend=-1) - 1
    k = min(range(min(40, max(1, int(math.log2(flat.size + 1)))) + 1), key=lambda k: (rice_size_bits(gaps, k), k))
    return {"k": k, "invert": invert, "ones": int(x.sum()), "data": rice_encode(x, k)}


RICE_Q_ESCAPE = 32  # bitarray decode tree: quotients below this, plus an escape word of this many one-bits
_TREES: dict[int, bitarray.decodetree] = {}


def rice_tree(k: int) -> bitarray.decodetree:
    """``bitarray.decodetree`` of the Rice code of parameter ``k``, complete thanks to an escape symbol.

    Words ``1^q 0 r`` (q < ``RICE_Q_ESCAPE``) decode to the gap ``(q << k) | r``; the word of
    ``RICE_Q_ESCAPE`` one-bits decodes to -1 and adds ``RICE_Q_ESCAPE << k`` to the next gap.
    """
    if k not in _TREES:
        code = {-1: bitarray.bitarray("1" * RICE_Q_ESCAPE)}
        for q in range(RICE_Q_ESCAPE):
            for r in range(1 << k):
                word = bitarray.bitarray("1" * q + "0")
                if k:
                    word += bitarray.util.int2ba(r, length=k)
                code[(q << k) | r] = word
        _TREES[k] = bitarray.decodetree(code)
    return _TREES[k]


def rice_decode_bitarray(data: np.ndarray, n: int, ones: int, k: int) -> np.ndarray:
    """Rice decode with bitarray: C-level prefix-code decoding of the gaps, then numpy for positions.

    Makes the checks of the package's ``rice_decode`` (section 7.3 of the format) so that the speeds
    compare like for like; a stream that ends inside a codeword raises ValueError from the iterator.
    """
    ba = bitarray.bitarray()
    ba.frombytes(data.tobytes())
    if ones * (k + 1) > len(ba) or (ones == 0 and len(ba)):
        raise ValueError("rice stream too short for its codewords, or bytes for an empty stream")
    out = np.zeros(n, dtype=bool)
    if ones == 0:
        return out
    it = ba.decode(rice_tree(k))
    symbols = np.fromiter(it, dtype=np.int64, count=ones)
    escapes = int((symbols < 0).sum())
    while escapes:  # each escape word delays one gap: read as many more symbols
        more = np.fromiter(it, dtype=np.int64, count=escapes)
        symbols = np.concatenate([symbols, more])
        escapes = int((more < 0).sum())
    real = np.flatnonzero(symbols >= 0)
    escapes_before = np.diff(real - np.arange(real.size), prepend=0)
    gaps = symbols[real] + (escapes_before << k) * RICE_Q_ESCAPE
    end = int((gaps >> k).sum()) + ones * (k + 1)
    if len(ba) - end >= 8 or ba[end:].any():
        raise ValueError("rice stream has bits after its last codeword beyond zero padding")
    positions = np.cumsum(gaps + 1) - 1
    if positions[-1] >= n:
        raise ValueError("rice codewords point past the layer")
    out[positions] = True
    return out


def sc_encode(mask: np.ndarray) -> bytes:
    """``bitarray.util.sc_encode`` of the flat mask (bitarray's own sparse compression)."""
    return bitarray.util.sc_encode(bitarray.bitarray(mask.reshape(-1).tolist()))


def sc_decode(data: bytes, n: int) -> np.ndarray:
    """Inverse of ``sc_encode``, back to a numpy boolean vector."""
    ba = bitarray.util.sc_decode(data)
    return np.frombuffer(ba.unpack(), dtype=bool)[:n]


# ----------------------------------------------------------------------------------------------
# measuring


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` calls (single thread)."""
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_layer(layer: dict) -> dict:
    """Exact sizes (bytes), ideal sizes (bits) and round trips of every coder on one layer."""
    mask = layer["mask"]
    rows, cols = mask.shape
    n, m = mask.size, int(mask.sum())
    v1 = v1_encode(mask)
    assert np.array_equal(v1_decode(v1, n), mask.reshape(-1))
    rec = {
        "layer": layer["name"],
        "shape": "x".join(map(str, layer["shape"])),
        "n": n,
        "ones": m,
        "v1_codec": v1.coding.codec,
        "v1": int(v1.data.size),
        "bound_bits": entropy_bits(n, m),
    }
    for axis, label in enumerate(GROUPINGS):
        g = oriented(mask, axis)
        counts = g.sum(axis=1)
        rec[f"enum_{label}_bits"] = float(log2_binomial(np.full(counts.size, g.shape[1]), counts).sum())
        rec[f"counts_{label}_bits"] = len(encode_counts(counts, axis, m))
    axis = best_axis(mask)
    rec["axis"] = GROUPINGS[axis]
    rec["group_ideal_bits"] = rec[f"enum_{rec['axis']}_bits"] + rec[f"counts_{rec['axis']}_bits"]
    for model in CONTEXT_MODELS:
        rec[f"adaptive_{model}_bits"] = adaptive_bits(mask, context_ids(mask, model))
    rec["logistic_row_col_bits"] = min(row_col_logistic_bits(mask), rec["bound_bits"])
    coded = {
        "group_rice": (group_rice_encode(mask), group_rice_decode),
        "group_ac": (group_ac_encode(mask), group_ac_decode),
        "ctx_ac": (ctx_ac_encode(mask), ctx_ac_decode),
    }
    for key, (data, decode) in coded.items():
        assert np.array_equal(decode(data, rows, cols, m), mask), (key, layer["name"])
        rec[key] = len(data)
        layer[f"_{key}"] = data
    sc = sc_encode(mask)
    assert np.array_equal(sc_decode(sc, n), mask.reshape(-1))
    rec["bitarray_sc"] = len(sc)
    layer["_v1"], layer["_sc"] = v1, sc
    return rec


def decode_speeds(layers: list[dict], repeat: int) -> dict:
    """Seconds to decode all ``layers`` with each coder (best of ``repeat``; pure-Python coders best of two)."""
    shapes = [(layer["mask"].shape, int(layer["mask"].sum())) for layer in layers]
    rice = [rice_only(layer["mask"]) for layer in layers]
    for layer, r in zip(layers, rice, strict=True):  # same output as the numpy decoder: asserted
        flat = layer["mask"].reshape(-1)
        got = rice_decode_bitarray(r["data"], flat.size, r["ones"], r["k"]) ^ r["invert"]
        assert np.array_equal(got, flat), layer["name"]
    for r in rice:
        rice_tree(r["k"])  # trees are static per k: built once, outside the timing

    def run(fn):
        return lambda: [fn(layer, shape) for layer, shape in zip(layers, shapes, strict=True)]

    def run_rice(fn):
        return lambda: [fn(layer, r) for layer, r in zip(layers, rice, strict=True)]

    return {
        "v1": timed(run(lambda L, s: v1_decode(L["_v1"], L["mask"].size)), repeat),
        "rice_numpy": timed(
            run_rice(lambda L, r: rice_decode(r["data"], L["mask"].size, r["ones"], r["k"], "x")), repeat
        ),
        "rice_bitarray": timed(
            run_rice(lambda L, r: rice_decode_bitarray(r["data"], L["mask"].size, r["ones"], r["k"])), repeat
        ),
        "bitarray_sc": timed(run(lambda L, s: sc_decode(L["_sc"], L["mask"].size)), repeat),
        "group_rice": timed(run(lambda L, s: group_rice_decode(L["_group_rice"], *s[0], s[1])), repeat),
        "group_ac": timed(run(lambda L, s: group_ac_decode(L["_group_ac"], *s[0], s[1])), min(2, repeat)),
        "ctx_ac": timed(run(lambda L, s: ctx_ac_decode(L["_ctx_ac"], *s[0], s[1])), min(2, repeat)),
    }


REAL = ("group_rice", "group_ac", "ctx_ac", "bitarray_sc")


def summarize_set(recs: list[dict]) -> dict:
    """Totals over the layers of one (model, density, trained or random) set; ideal bits rounded up per layer."""

    def ceil_bytes(key):
        return sum(math.ceil(r[key] / 8) for r in recs)

    tot = {
        "n": sum(r["n"] for r in recs),
        "v1": sum(r["v1"] for r in recs),
        "bound": ceil_bytes("bound_bits"),
        "group_ideal": ceil_bytes("group_ideal_bits"),
    }
    for model in CONTEXT_MODELS:
        tot[f"adaptive_{model}"] = ceil_bytes(f"adaptive_{model}_bits")
    for key in REAL:
        tot[key] = sum(r[key] for r in recs)
        tot[f"{key}_fallback"] = sum(min(r[key], r["v1"]) for r in recs)
    tot["layer_enum"] = ceil_bytes("enum_layer_bits")
    tot["logistic_row_col"] = ceil_bytes("logistic_row_col_bits")
    for label in GROUPINGS:
        tot[f"{label}_grouped_layers"] = sum(r["axis"] == label for r in recs)
    return tot


def saving(new: float, old: float) -> str:
    """Percent saved against ``old`` (negative: larger)."""
    return f"{100 * (1 - new / old):+.1f}%"


def verdicts(sets: list[dict], target: float = 5.0) -> list[str]:
    """One line per trained set: each real coder's saving vs v1 beside its saving on the random control."""
    control = {(s["model"], s["density"]): s["totals"] for s in sets if s["kind"] == "random"}
    lines = [f"Savings vs v1 with fallback, trained masks (random control in brackets); target {target:g}%:", ""]
    for s in sets:
        if s["kind"] != "trained":
            continue
        t, c = s["totals"], control[(s["model"], s["density"])]
        parts = [
            f"{key.replace('_', '-')} {saving(t[f'{key}_fallback'], t['v1'])} ({saving(c[f'{key}_fallback'], c['v1'])})"
            for key in ("group_rice", "group_ac", "ctx_ac")
        ]
        best = max(100 * (1 - t[f"{key}_fallback"] / t["v1"]) for key in ("group_rice", "group_ac", "ctx_ac"))
        met = "met" if best >= target else "not met"
        lines.append(f"- {s['model']} density {s['density']}: " + ", ".join(parts) + f": {met}")
    return lines


def _summary_lines(sets: list[dict], command: str) -> list[str]:
    """The report's head, the totals table, the verdicts and the trained files."""
    lines = [
        "# Mask codecs beyond the per-layer bound (trained masks)",
        "",
        f"Command: `{command}` ({datetime.date.today().isoformat()}; numpy {np.__version__}, "
        f"bitarray {bitarray.__version__}, Python {platform.python_version()}, {platform.machine()}, 1 thread), "
        "run from the repository root with this checkout importable (`PYTHONPATH=.`). The first run trains "
        "the nine files into `--work` (default: a folder in the temp dir, about 30 minutes of one core on an "
        "idle machine, longer on a shared one); later runs with the same `--work` only measure (under a minute).",
        "",
        "Masks: "
        + "; ".join(f"{m} trained {e} epochs on {s:,} Fashion-MNIST images" for m, s, e in TRAIN_PLAN)
        + " (`pemn compress --max-train-samples S --epochs E --density D --seed 0 --threads 1`, "
        "onelayer defaults otherwise). *random*: the i.i.d. control, uniformly random masks with the same "
        "layer shapes and kept counts.",
        "",
        "All sizes are bytes of mask payload summed over the model's masked layers (each layer byte-aligned; "
        "ideal bit counts rounded up per layer). *v1*: the package's writer (raw or rice per layer). "
        "*bound*: sum of n·H(m/n). *group ideal*: sum of log2 C(n_g, m_g) over the rows or the columns "
        "(or the whole layer, whichever is smallest per layer) + the real bits of the counts block. *ctx ideal*: "
        "ideal adaptive (KT) code length of the context model ctx-ac codes (rowb_colb_left; other models in the "
        "ideal table below). Real coders, every layer round-tripped: *group-rice*, *group-ac*, *ctx-ac* (see "
        "the script's docstring), each with the v2 writer's fallback (per layer the smaller of it and v1); "
        "*ctx-ac* also alone (no fallback), to compare with its ideal. Ideals have no fallback. Savings are "
        "against v1.",
        "",
        "| model | density | masks | weights | v1 | bound | bound vs v1 | group ideal | group-rice | group-ac "
        "| ctx ideal | ctx-ac alone | ctx-ac | best saving vs v1 | best vs bound |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sets:
        t = s["totals"]
        best = min(t["group_rice_fallback"], t["group_ac_fallback"], t["ctx_ac_fallback"])
        lines.append(
            f"| {s['model']} | {s['density']} | {s['kind']} | {t['n']:,} | {t['v1']:,} | {t['bound']:,} "
            f"| {saving(t['bound'], t['v1'])} "
            f"| {t['group_ideal']:,} ({saving(t['group_ideal'], t['v1'])}) "
            f"| {t['group_rice_fallback']:,} ({saving(t['group_rice_fallback'], t['v1'])}) "
            f"| {t['group_ac_fallback']:,} ({saving(t['group_ac_fallback'], t['v1'])}) "
            f"| {t['adaptive_rowb_colb_left']:,} | {t['ctx_ac']:,} "
            f"| {t['ctx_ac_fallback']:,} ({saving(t['ctx_ac_fallback'], t['v1'])}) "
            f"| {saving(best, t['v1'])} | {saving(best, t['bound'])} |"
        )
    lines += ["", *verdicts(sets)]
    lines += [
        "",
        "Trained files (test accuracy on the full Fashion-MNIST test split, from each file's provenance):",
        "",
    ]
    lines += [
        f"- {s['model']} density {s['density']}: {s['facts']['train_samples']:,} training images x "
        f"{s['facts']['epochs']} epochs, accuracy {s['facts']['accuracy']:.4f}"
        for s in sets
        if s["kind"] == "trained"
    ]
    return lines


def _layer_lines(sets: list[dict], layer_rows: list[dict]) -> list[str]:
    """The per-layer table of the trained masks (the larger layers)."""
    lines = [
        "",
        "## Per layer (trained masks, layers with at least 10% of their model's weights)",
        "",
        "| model | density | layer | shape | v1 (codec) | bound | group ideal (grouping) | group-ac | ctx-ac |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    model_n = {(s["model"], s["density"]): s["totals"]["n"] for s in sets}
    for r in layer_rows:
        if r["masks"] != "trained" or r["n"] < 0.1 * model_n[(r["model"], r["density"])]:
            continue
        lines.append(
            f"| {r['model']} | {r['density']} | {r['layer']} | {r['shape']} | {r['v1']:,} ({r['v1_codec']}) "
            f"| {math.ceil(r['bound_bits'] / 8):,} | {math.ceil(r['group_ideal_bits'] / 8):,} ({r['axis']}) "
            f"| {r['group_ac']:,} | {r['ctx_ac']:,} |"
        )
    return lines


def _ideal_lines(sets: list[dict]) -> list[str]:
    """The ideal code lengths table."""
    lines = [
        "",
        "## Ideal code lengths (bytes, no coder)",
        "",
        "*layer enum*: sum of log2 C(n, m), the bound of an exact-count layer (below n·H(m/n) by about "
        "0.5·log2(2πnpq) bits). *group ideal*: as above. Context columns: ideal adaptive (KT) code length "
        "with contexts *row* (output channel), *col* (input position), *left+above* (previous bit in the "
        "row, same position in the previous row), *rowb_colb* (7 buckets of the row's density so far x 7 "
        "of the column's density in earlier rows), *rowb_colb_left* (the same x the previous bit; ctx-ac "
        "codes this one). *logistic*: P = sigmoid(a_row + b_col) fitted to the mask plus 0.5·log2 of the "
        "bits each parameter sees (a headroom estimate for row and column structure together, capped at "
        "the bound per layer).",
        "",
        "| model | density | masks | bound | layer enum | group ideal | "
        + " | ".join(CONTEXT_MODELS)
        + " | logistic |",
        "|---|---:|---|---:|---:|---:|" + "---:|" * (len(CONTEXT_MODELS) + 1),
    ]
    for s in sets:
        t = s["totals"]
        lines.append(
            f"| {s['model']} | {s['density']} | {s['kind']} | {t['bound']:,} | {t['layer_enum']:,} "
            f"| {t['group_ideal']:,} | "
            + " | ".join(f"{t[f'adaptive_{mdl}']:,}" for mdl in CONTEXT_MODELS)
            + f" | {t['logistic_row_col']:,} |"
        )
    return lines


def _bitarray_lines(sets: list[dict]) -> list[str]:
    """bitarray's coder against v1."""
    lines = [
        "",
        "## bitarray",
        "",
        "| model | density | masks | v1 | bitarray sc_encode | vs v1 |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for s in sets:
        t = s["totals"]
        lines.append(
            f"| {s['model']} | {s['density']} | {s['kind']} | {t['v1']:,} | {t['bitarray_sc']:,} "
            f"| {saving(t['bitarray_sc'], t['v1'])} |"
        )
    return lines


def _speed_lines(speed: dict) -> list[str]:
    """The decode speed table."""
    lines = [
        "",
        "## Decode speed (trained masks, all layers of a model at one density)",
        "",
        "Ratios of decode throughput (MB of decoded mask at one bit per weight per second) to the "
        "package's numpy `rice_decode` on the same layers, in one run. *rice numpy* (the base) and "
        "*rice bitarray* decode the rice stream of every layer (forced rice, the writer's k and invert, "
        "even where v1 stores raw); *v1* is the package's reader on the file's own choice (raw is a "
        "packbits copy). Best of `--repeat` runs (5); the pure-Python arithmetic decoders (group-ac, ctx-ac) "
        "best of two. group-ac and ctx-ac are pure-Python loops (one step per bit) and group-rice parses its "
        "counts in Python: their ratios measure this prototype, not what a compiled coder would do. On a "
        "shared machine single ratios move by up to 2x between runs. Absolute MB/s of rice numpy in the "
        "last column, for scale only.",
        "",
        "| model | density | " + " | ".join(speed["columns"]) + " | rice numpy MB/s |",
        "|---|---:|" + "---:|" * (len(speed["columns"]) + 1),
    ]
    for row in speed["rows"]:
        sec = row["seconds"]
        lines.append(
            f"| {row['model']} | {row['density']} | "
            + " | ".join(f"{sec['rice_numpy'] / sec[c]:.3g}x" for c in speed["columns"])
            + f" | {row['mask_mb'] / sec['rice_numpy']:.0f} |"
        )
    return lines


def render(sets: list[dict], speed: dict, command: str, layer_rows: list[dict]) -> str:
    """The Markdown report (``layer_rows``: the CSV rows, for the per-layer section)."""
    lines = _summary_lines(sets, command) + _layer_lines(sets, layer_rows) + _ideal_lines(sets)
    return "\n".join(lines + _bitarray_lines(sets) + _speed_lines(speed)) + "\n"


# ----------------------------------------------------------------------------------------------
# issue 27, item 3: would a low-density code save 5% of a whole file at the budgets that need it?

CANDIDATES = ("group_rice", "group_ac", "ctx_ac")


def file_saving(path: Path) -> dict:
    """The masks of one `.pemn` file coded by every candidate (with the writer's fallback, layer by layer),
    and what the best one saves of the masks and of the whole file on disk."""
    pf = read_pemn(path)
    recs = [measure_layer(layer) for layer in load_layers(pf)]
    totals = summarize_set(recs)
    best = min(CANDIDATES, key=lambda key: totals[f"{key}_fallback"])
    saved = totals["v1"] - totals[f"{best}_fallback"]
    file_bytes = path.stat().st_size
    return {
        "file": path.name,
        "file_bytes": file_bytes,
        "density": pf.config.density,
        "v1": totals["v1"],
        "bound": totals["bound"],
        **{key: totals[f"{key}_fallback"] for key in CANDIDATES},
        "best": best,
        "saved": saved,
        "of_masks": 100 * saved / totals["v1"],
        "of_file": 100 * saved / file_bytes,
    }


def render_files(rows: list[dict], command: str, target: float = 5.0) -> str:
    """The per-file table and the verdict against issue 27's bar (``target`` percent of the file)."""
    lines = [
        "# Low-density mask codes on the full-data report's files",
        "",
        f"Command: `{command}` ({datetime.date.today().isoformat()}; numpy {np.__version__}, Python "
        f"{platform.python_version()}). The masks of the given `.pemn` files (trained on all of Fashion-MNIST, "
        "10 epochs, by `benchmarks/frontier.py`) coded by each candidate of `benchmarks/mask_codecs.py` with the "
        "writer's fallback (per layer the smaller of the candidate and v1; every layer round-tripped). Issue 27 "
        f"adopts a new mask code only if it saves at least {target:g}% of the whole file.",
        "",
        "| file | bytes | density | masks v1 | bound | group-rice | group-ac | ctx-ac | best saves | of masks "
        "| of the file |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['file']} | {r['file_bytes']:,} | {r['density']:.4g} | {r['v1']:,} | {r['bound']:,} "
            f"| {r['group_rice']:,} | {r['group_ac']:,} | {r['ctx_ac']:,} | {r['saved']:,} B "
            f"({r['best'].replace('_', '-')}) | {r['of_masks']:.1f}% | {r['of_file']:.1f}% |"
        )
    most = max(rows, key=lambda r: r["of_file"])
    met = "met" if most["of_file"] >= target else "not met"
    lines += [
        "",
        f"Largest saving of a whole file: {most['of_file']:.1f}% ({most['file']}), bar {target:g}%: **{met}**.",
        "",
    ]
    return "\n".join(lines)


def main_files(paths: list[Path], out: Path, command: str) -> None:
    """``--files``: the item-3 verdict on real files, written to ``out``."""
    rows = []
    for path in paths:
        rows.append(file_saving(path))
        print(json.dumps(rows[-1]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_files(rows, command))
    print(f"wrote {out}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "pemn-mask-codecs"),
        help="folder of the cached trained files (default: a folder in the temp dir)",
    )
    parser.add_argument("--models", default=",".join(m for m, _, _ in TRAIN_PLAN))
    parser.add_argument("--densities", default=",".join(map(str, DENSITIES)))
    parser.add_argument("--repeat", type=int, default=5, help="timing runs of the vectorized decoders")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument(
        "--files", nargs="+", type=Path, metavar="PEMN",
        help="only measure the masks of these .pemn files and what the best code saves of each whole file "
        "(writes mask_codecs_files.md in --out)",
    )
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    shown = [a for i, a in enumerate(argv) if a != "--work" and (i == 0 or argv[i - 1] != "--work")]
    command = " ".join(["python benchmarks/mask_codecs.py"] + [shlex.quote(a) for a in shown])
    if args.files:
        main_files(args.files, Path(args.out) / "mask_codecs_files.md", command)
        return
    models, densities = args.models.split(","), tuple(float(d) for d in args.densities.split(","))
    work = Path(args.work)
    train_all(work, models, densities)
    if args.train_only:
        return
    sets, speed_rows, csv_rows = [], [], []
    for model in models:
        for density in densities:
            path = trained_path(work, model, density)
            trained, facts = load_layers(path), file_facts(path)
            for kind, layers in (("trained", trained), ("random", random_control(trained))):
                recs = [measure_layer(layer) for layer in layers]
                csv_rows += [{"model": model, "density": density, "masks": kind, **r} for r in recs]
                totals = summarize_set(recs)
                sets.append({"model": model, "density": density, "kind": kind, "facts": facts, "totals": totals})
                print(f"{model} d={density} {kind}: {json.dumps(sets[-1]['totals'])}", flush=True)
                if kind == "trained":
                    speed_rows.append(
                        {
                            "model": model,
                            "density": density,
                            "mask_mb": sum(r["n"] for r in recs) / 8e6,
                            "seconds": decode_speeds(layers, args.repeat),
                        }
                    )
    columns = ["v1", "rice_numpy", "rice_bitarray", "bitarray_sc", "group_rice", "group_ac", "ctx_ac"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mask_codecs.md").write_text(render(sets, {"columns": columns, "rows": speed_rows}, command, csv_rows))
    with open(out / "mask_codecs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(csv_rows[0]))
        writer.writeheader()
        writer.writerows(csv_rows)
    (out / "mask_codecs.json").write_text(
        json.dumps({"command": command, "sets": sets, "decode_seconds": speed_rows}, indent=1) + "\n"
    )
    print(f"wrote {out / 'mask_codecs.md'}")


if __name__ == "__main__":
    main()
