"""A fast path for decoding ``rice`` mask streams with ``bitarray``'s C prefix-code decoder.

``codecs.rice_decode`` (numpy, vectorized) is the decoder of record: it makes every check of the
format's section 7.3 and names the fault. This module decodes the same streams 5 to 7 times faster
for small Rice parameters (measured in ``benchmarks/results/mask_codecs.md`` and on 10^6-weight
layers: k = 2: 92 ms -> 12 ms; k = 6: 6.1 ms -> 0.9 ms), and is only ever trusted to *accept*:
it returns the decoded mask for a stream that is valid, and None for anything else, in which case
the caller runs the numpy decoder, which raises the precise error. So a stream decodes to the same
bits on both paths, and every refusal has the numpy path's class and message.

The decode tree of parameter ``k`` holds ``ESCAPE << k`` codewords plus one escape word, so it is
built lazily and only for ``k <= MAX_FAST_K`` (2.5 ms at k = 6; at k = 10 it costs 40 ms, more than
the numpy decoder needs for such sparse streams). Quotients of ``ESCAPE`` or more are coded by the
escape word (``ESCAPE`` one-bits) standing for ``ESCAPE`` more one-bits of the next codeword.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from bitarray import bitarray, decodetree
from bitarray.util import int2ba

__all__ = ["CHUNK", "MAX_FAST_K", "rice_decode_fast", "rice_decode_fast_packed"]

MAX_FAST_K = 6
CHUNK = 1 << 16  # codewords decoded at a time
ESCAPE = 32  # quotients below this are words of the tree; the escape word is ESCAPE one-bits
_ESCAPE_SYMBOL = -1
_TREES: dict[int, decodetree] = {}


def _tree(k: int) -> decodetree:
    """The Rice code of parameter ``k`` as a complete prefix code: words ``1^q 0 r`` and the escape."""
    if k not in _TREES:
        code = {_ESCAPE_SYMBOL: bitarray("1" * ESCAPE)}
        for q in range(ESCAPE):
            head = bitarray("1" * q + "0")
            for r in range(1 << k):
                code[(q << k) | r] = head + int2ba(r, length=k) if k else head
        _TREES[k] = decodetree(code)
    return _TREES[k]


def _next_gaps(symbols: Iterator[int], count: int, k: int) -> np.ndarray | None:
    """The next ``count`` gaps of the stream, escapes resolved; None when the stream ends inside a codeword.

    Every pull ends on a real word (a pull that ends on escapes pulls as many more words), so no
    escape is left pending between two calls."""
    try:
        words = np.fromiter(symbols, dtype=np.int64, count=count)
        pending = int(np.count_nonzero(words == _ESCAPE_SYMBOL))
        while pending:  # every escape word delays its gap by one word
            more = np.fromiter(symbols, dtype=np.int64, count=pending)
            words = np.concatenate([words, more])
            pending = int(np.count_nonzero(more == _ESCAPE_SYMBOL))
    except ValueError:  # the iterator ran out (or hit bits that end inside a word)
        return None
    real = np.flatnonzero(words != _ESCAPE_SYMBOL)
    escapes_before = np.diff(real - np.arange(real.size), prepend=0)  # escape words in front of each gap
    return words[real] + ((escapes_before * ESCAPE) << k)


def rice_decode_fast_packed(data: np.ndarray, n: int, ones: int, k: int) -> np.ndarray | None:
    """The decoded mask of a valid ``rice`` stream as MSB-first packed bytes (``(n + 7) // 8``, padding
    bits zero), or None (let numpy decide).

    Accepts exactly what ``codecs.rice_decode`` accepts: ``ones`` codewords, fewer than 8 padding
    bits after the last one and all zero, every position below ``n``. ``k`` above ``MAX_FAST_K``, an
    empty stream or a stream shorter than its codewords' minimum length also go to the numpy decoder.
    Codewords are decoded ``CHUNK`` at a time, so besides the output the decoder holds a bounded
    number of temporaries whatever the layer's size (a streamed load keeps every mask packed).
    """
    if not (0 <= k <= MAX_FAST_K) or ones <= 0 or ones * (k + 1) > 8 * data.size:
        return None
    stream = bitarray(endian="big")
    stream.frombytes(data.tobytes())
    symbols = stream.decode(_tree(k))
    out = np.zeros((n + 7) // 8, dtype=np.uint8)
    last, quotients = -1, 0  # the last kept position; the unary bits read so far
    for done in range(0, ones, CHUNK):
        gaps = _next_gaps(symbols, min(CHUNK, ones - done), k)
        if gaps is None:
            return None
        quotients += int((gaps >> k).sum())
        positions = last + np.cumsum(gaps + 1)
        last = int(positions[-1])
        if last >= n:
            return None
        np.bitwise_or.at(out, positions >> 3, (0x80 >> (positions & 7)).astype(np.uint8))
    end = quotients + ones * (k + 1)  # bits taken by the codewords
    if len(stream) - end >= 8 or stream[end:].any():
        return None
    return out


def rice_decode_fast(data: np.ndarray, n: int, ones: int, k: int) -> np.ndarray | None:
    """``rice_decode_fast_packed`` as a flat bool of ``n`` entries, or None."""
    packed = rice_decode_fast_packed(data, n, ones, k)
    return None if packed is None else np.unpackbits(packed, count=n).view(bool)
