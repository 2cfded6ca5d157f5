"""Mask codecs: ``raw`` packed bits and ``rice`` (Golomb-Rice coded gaps) for densities away from 0.5.

raw
    Bit ``i`` of the flattened (C-order) mask is bit ``7 - i % 8`` of byte ``i // 8`` (most
    significant bit first, as ``numpy.packbits``); the ``ceil(n / 8) * 8 - n`` padding bits are 0.

rice (parameters ``k`` and ``invert``)
    Let ``x = mask XOR invert`` and ``p_0 < ... < p_{m-1}`` the positions of its ones (``m`` is the
    layer's ``ones`` count of ``x``). Each gap ``g_j = p_j - p_{j-1} - 1`` (``p_{-1} = -1``) is written
    as ``g_j >> k`` one-bits, a zero-bit, then the low ``k`` bits of ``g_j``, most significant first.
    The bit stream is packed like raw and padded with zero-bits. For a Bernoulli mask the gaps are
    geometric, for which Golomb codes are optimal; the writer picks the ``k`` with the fewest bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import ConfigError, HeaderError, ShapeError
from ._bitrice import rice_decode_fast, rice_decode_fast_packed
from .constants import MAX_RICE_K

__all__ = [
    "CodedMask",
    "MaskCoding",
    "check_raw",
    "choose_codec",
    "decode_mask",
    "decode_mask_packed",
    "encode_mask",
    "rice_decode",
    "rice_encode",
    "rice_size_bits",
]

WRITE_CODECS = ("auto", "raw")  # what a writer may be asked for: "auto" picks raw or rice per layer


@dataclass(frozen=True)
class MaskCoding:
    """How one layer's mask stream is coded: the layer record's ``codec``, ``ones``, ``rice_k``, ``invert``.

    ``rice_k`` is None and ``invert`` False for ``raw``; ``ones`` counts the ones of ``mask XOR invert``.
    """

    codec: str
    ones: int
    rice_k: int | None = None
    invert: bool = False


@dataclass(frozen=True)
class CodedMask:
    """A coded mask stream and how it is coded (what ``encode_mask`` returns)."""

    coding: MaskCoding
    data: np.ndarray  # uint8, 1-D


def _not_a_stream(data: np.ndarray, name: str) -> str:
    return f"mask of layer {name!r}: expected a 1-D uint8 tensor, found {data.dtype} with {data.ndim} dims"


def raw_encode(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.reshape(-1).astype(np.uint8))


def raw_decode(data: np.ndarray, n: int, name: str) -> np.ndarray:
    expected = (n + 7) // 8
    if data.size != expected:
        raise ShapeError(f"mask of layer {name!r}: raw codec needs {expected} bytes for {n} weights, found {data.size}")
    bits = np.unpackbits(data, count=n).astype(bool)
    if n % 8 and np.unpackbits(data[-1:])[n % 8 :].any():
        raise ShapeError(f"mask of layer {name!r}: padding bits after weight {n} must be zero")
    return bits


def _popcount(data: np.ndarray) -> int:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return int(np.bitwise_count(data).sum(dtype=np.int64))
    return int(sum(np.unpackbits(data[s : s + (1 << 20)]).sum(dtype=np.int64) for s in range(0, data.size, 1 << 20)))


def check_raw(data: np.ndarray, n: int, ones, name: str) -> None:
    """The checks of ``decode_mask`` on a raw mask (length, zero padding, kept count) without unpacking it.

    Lets a streaming reader validate every mask before generating any weight and unpack each one
    later, a cache-sized piece at a time.
    """
    if data.dtype != np.uint8 or data.ndim != 1:
        raise ShapeError(_not_a_stream(data, name))
    expected = (n + 7) // 8
    if data.size != expected:
        raise ShapeError(f"mask of layer {name!r}: raw codec needs {expected} bytes for {n} weights, found {data.size}")
    if n % 8 and np.unpackbits(data[-1:])[n % 8 :].any():
        raise ShapeError(f"mask of layer {name!r}: padding bits after weight {n} must be zero")
    kept = _popcount(data)
    if kept != ones:
        raise ShapeError(f"mask of layer {name!r}: header says {ones} kept weights, mask has {kept}")


def _gaps(x: np.ndarray) -> np.ndarray:
    ones = np.flatnonzero(x)
    return np.diff(ones, prepend=-1) - 1  # (m,)


def rice_size_bits(gaps: np.ndarray, k: int) -> int:
    return int((gaps >> k).sum()) + gaps.size * (k + 1)


def rice_encode(x: np.ndarray, k: int) -> np.ndarray:
    """Golomb-Rice code of the gaps between the ones of the boolean vector ``x``."""
    gaps = _gaps(x.reshape(-1))
    q = gaps >> k
    lengths = q + 1 + k  # bits of each codeword
    total = int(lengths.sum())
    bits = np.zeros(total, dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    # unary part: q ones starting at each codeword start
    if q.sum():
        run_starts = np.repeat(starts, q)
        within = np.arange(run_starts.size) - np.repeat(np.cumsum(q) - q, q)
        bits[run_starts + within] = 1
    # the terminating zero is already 0; remainder bits, most significant first
    for b in range(k):
        bits[starts + q + 1 + b] = (gaps >> (k - 1 - b)) & 1
    return np.packbits(bits)


def rice_decode(data: np.ndarray, n: int, ones: int, k: int, name: str) -> np.ndarray:
    """Inverse of ``rice_encode`` for a vector of ``n`` bits with ``ones`` ones; strict about bounds.

    Vectorized: codeword ``j + 1`` starts at ``f(s_j) = next_zero(s_j) + 1 + k``, so all starts are
    ``f^j(0)``, found for every ``j`` at once by binary lifting (O(L log m) array work, no Python loop
    per codeword). Work and memory are bounded by the stream length, never by header claims.
    """
    if not (0 <= k <= MAX_RICE_K):
        raise HeaderError(f"layer {name!r}: rice parameter k must be in [0, {MAX_RICE_K}], found {k}")
    if not (0 <= ones <= n):
        raise HeaderError(f"layer {name!r}: ones must be in [0, {n}], found {ones}")
    fast = rice_decode_fast(data, n, ones, k)  # bitarray, small k; only ever accepts what this function accepts
    if fast is not None:
        return fast
    bits = np.unpackbits(data)
    length = bits.size
    if ones * (k + 1) > length:  # each codeword has at least k + 1 bits
        raise ShapeError(
            f"mask of layer {name!r}: {ones} rice codewords need at least {ones * (k + 1)} bits, found {length}"
        )
    out = np.zeros(n, dtype=bool)
    if ones == 0:
        if bits.any() or data.size:
            raise ShapeError(f"mask of layer {name!r}: an empty rice stream must have no bytes, found {data.size}")
        return out
    sink = length + 1  # absorbing state: "stream ended inside a codeword"
    # next_zero[i]: first zero-bit at or after i (length when none), for i in [0, length]
    zero_at = np.flatnonzero(bits == 0)
    next_zero = np.full(length + 1, length, dtype=np.int64)
    idx = np.searchsorted(zero_at, np.arange(length + 1))
    has = idx < zero_at.size
    next_zero[has] = zero_at[idx[has]]
    step = np.full(length + 2, sink, dtype=np.int64)
    ends = next_zero + 1 + k  # where the next codeword starts
    ok = (next_zero < length) & (ends <= length)
    step[: length + 1][ok] = ends[ok]
    starts = np.zeros(ones + 1, dtype=np.int64)  # starts[j] = f^j(0); starts[ones] = end of stream
    j = np.arange(ones + 1)
    table = step
    for t in range(int(ones).bit_length()):
        sel = ((j >> t) & 1).astype(bool)
        starts[sel] = table[starts[sel]]
        table = table[table]
    if (starts == sink).any():
        raise ShapeError(f"mask of layer {name!r}: rice stream ends inside one of its {ones} codewords")
    cursor = int(starts[-1])
    if (length + 7) // 8 != (cursor + 7) // 8 + 0 or bits[cursor:].any():
        raise ShapeError(
            f"mask of layer {name!r}: rice stream has {length - cursor} bits after its last codeword "
            "(expected zero padding below one byte)"
        )
    s = starts[:-1]
    z = next_zero[s]
    gaps = (z - s) << k
    for b in range(k):
        gaps |= bits[z + 1 + b].astype(np.int64) << (k - 1 - b)
    positions = np.cumsum(gaps + 1) - 1
    if positions[-1] >= n:
        raise ShapeError(f"mask of layer {name!r}: rice codewords point past weight {n}")
    out[positions] = True
    return out


def choose_codec(mask: np.ndarray) -> CodedMask:
    """The smallest encoding of ``mask``: raw packed bits, or rice over the rarer bit value when smaller."""
    flat = mask.reshape(-1).astype(bool)
    n = flat.size
    ones = int(flat.sum())
    best = CodedMask(MaskCoding("raw", ones), raw_encode(flat))
    invert = ones > n - ones
    x = ~flat if invert else flat
    gaps = _gaps(x)
    if gaps.size:
        sizes = {k: rice_size_bits(gaps, k) for k in range(0, min(MAX_RICE_K, max(1, int(math.log2(n + 1)))) + 1)}
        k = min(sizes, key=lambda key: (sizes[key], key))
        if (sizes[k] + 7) // 8 < best.data.size:
            best = CodedMask(MaskCoding("rice", int(x.sum()), k, bool(invert)), rice_encode(x, k))
    return best


def encode_mask(mask: np.ndarray, codec: str | None = None) -> CodedMask:
    """Code one mask: ``codec`` "auto" (or None) picks the smallest, "raw" forces packed bits.

    Any other ``codec`` is a caller's option error (ConfigError), not a file fault.
    """
    if codec in (None, "auto"):
        return choose_codec(mask)
    if codec == "raw":
        flat = mask.reshape(-1).astype(bool)
        return CodedMask(MaskCoding("raw", int(flat.sum())), raw_encode(flat))
    raise ConfigError(f"codec must be one of {WRITE_CODECS}, found {codec!r}")


def decode_mask(data: np.ndarray, n: int, coding: MaskCoding, name: str) -> np.ndarray:
    """Decode one layer's mask (flat boolean of ``n`` entries) coded as ``coding``."""
    if data.dtype != np.uint8 or data.ndim != 1:
        raise ShapeError(_not_a_stream(data, name))
    if coding.codec == "raw":
        bits = raw_decode(data, n, name)
        if bits.sum() != coding.ones:
            raise ShapeError(
                f"mask of layer {name!r}: header says {coding.ones} kept weights, mask has {int(bits.sum())}"
            )
        return bits
    if coding.codec == "rice":
        if coding.rice_k is None:
            raise HeaderError(f"layer {name!r}: rice codec needs 'rice_k'")
        bits = rice_decode(data, n, coding.ones, coding.rice_k, name)
        return ~bits if coding.invert else bits
    raise HeaderError(f"layer {name!r}: unknown mask codec {coding.codec!r}; expected one of raw, rice")


def decode_mask_packed(data: np.ndarray, n: int, coding: MaskCoding, name: str) -> np.ndarray:
    """``decode_mask`` as MSB-first packed bits (``(n + 7) // 8`` bytes, padding zero): the same checks
    and errors; a raw stream is returned as it is, a rice one decoded without ever holding a byte per
    weight (for the streamed load, which keeps every layer's mask until its weights are made)."""
    if coding.codec == "raw":
        check_raw(data, n, coding.ones, name)
        return data
    packed = None
    if coding.codec == "rice" and coding.rice_k is not None and 0 <= coding.ones <= n:
        packed = rice_decode_fast_packed(data, n, coding.ones, coding.rice_k)  # None: let numpy decide
    if packed is None:  # k above the fast path's, an empty mask, or a stream decode_mask refuses
        bits = decode_mask(data, n, replace(coding, invert=False), name)
        packed = np.packbits(bits)
    if coding.invert:
        packed = ~packed
        if n % 8:
            packed[-1] &= (0xFF << (8 - n % 8)) & 0xFF
    return packed
