"""The v2 header block: the PEMN header text as one raw DEFLATE stream (RFC 1951), formats/pemn-v2.md.

``deflate`` is the writer's side (fixed zlib settings, so one zlib gives one byte string);
``inflate`` is the reader's: it never produces more than the size the metadata declared, and it
refuses a stream that is cut short, inflates to another size or has bytes after its final block.
``deflate_bound`` is the most bytes ``deflate`` can give for a text of a given length (for
``--target-size``, which must bound the header before the masks exist).
"""

from __future__ import annotations

import zlib

from ..errors import HeaderError

__all__ = ["deflate", "deflate_bound", "inflate", "stored_blocks"]

# Writer settings (spec v2 section 3): best compression, a raw stream (no zlib or gzip wrapper), the
# 32 KiB window and zlib's default memory level, for which zlib documents the tight bound below.
LEVEL, WINDOW_BITS, MEM_LEVEL = 9, -15, 8


def deflate(text: bytes) -> bytes:
    """``text`` as one raw DEFLATE stream (level 9, 32 KiB window, memory level 8), never longer than
    ``deflate_bound(len(text))``: should the zlib at hand exceed it (zlib documents that it does not;
    a zlib-compatible library might), the text goes out in stored blocks instead."""
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, WINDOW_BITS, MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY)
    stream = packer.compress(text) + packer.flush()
    return stream if len(stream) <= deflate_bound(len(text)) else stored_blocks(text)


def deflate_bound(length: int) -> int:
    """The most bytes ``deflate`` gives for ``length`` input bytes: zlib's ``deflateBound`` for these
    settings (window 15, memory level 8, no wrapper), ``n + n>>12 + n>>14 + n>>25 + 7``, which is also
    at least the ``n + 5 * ceil(n / 65535)`` of ``stored_blocks`` (5 bytes for an empty text)."""
    return length + (length >> 12) + (length >> 14) + (length >> 25) + 7


def stored_blocks(text: bytes) -> bytes:
    """``text`` as a raw DEFLATE stream of stored (uncompressed) blocks, RFC 1951 section 3.2.4: per
    block of at most 65,535 bytes, a header byte (BFINAL on the last, BTYPE 00), LEN and NLEN (16-bit
    little-endian), then the bytes."""
    out = bytearray()
    chunks = [text[i : i + 0xFFFF] for i in range(0, len(text), 0xFFFF)] or [b""]
    for i, chunk in enumerate(chunks):
        out.append(1 if i == len(chunks) - 1 else 0)
        out += len(chunk).to_bytes(2, "little") + (len(chunk) ^ 0xFFFF).to_bytes(2, "little") + chunk
    return bytes(out)


def inflate(stream: bytes, size: int, what: str) -> bytes:
    """The ``size`` bytes ``stream`` inflates to; HeaderError (naming ``what``) unless ``stream`` is one
    complete raw DEFLATE stream of exactly ``size`` bytes with nothing after its final block.

    At most ``size + 1`` bytes are ever produced, whatever the stream declares (no inflation bomb).
    """
    unpacker = zlib.decompressobj(WINDOW_BITS)
    try:
        text = unpacker.decompress(stream, size + 1)
    except zlib.error as exc:
        raise HeaderError(f"{what} is not a raw DEFLATE stream: {exc}") from exc
    if len(text) > size:
        raise HeaderError(f"{what} inflates to more than the {size} bytes pemn.header_bytes declares")
    if not unpacker.eof:
        raise HeaderError(f"{what} ends before its final DEFLATE block (the stream is cut short)")
    if unpacker.unused_data:
        raise HeaderError(f"{what} has {len(unpacker.unused_data)} bytes after its final DEFLATE block")
    if len(text) != size:
        raise HeaderError(f"{what} inflates to {len(text)} bytes; pemn.header_bytes declares {size}")
    return text
