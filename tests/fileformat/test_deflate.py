"""The version 2 header block (formats/pemn-v2.md section 3): the writer's DEFLATE stream, its size
bound (what ``--target-size`` counts the header at) and the reader's strict inflate."""

from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pemn_compress.errors import HeaderError
from pemn_compress.fileformat.deflate import deflate, deflate_bound, inflate, stored_blocks


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.binary(max_size=5000))
def test_deflate_stays_within_its_bound_and_inflates_back(text):
    stream = deflate(text)
    assert len(stream) <= deflate_bound(len(text))
    assert zlib.decompress(stream, -15) == text  # zlib itself is the oracle of RFC 1951
    assert inflate(stream, len(text), "t") == text


@pytest.mark.parametrize("length", [0, 1, 7, 65_535, 65_536, 200_000])
def test_incompressible_text_and_stored_blocks_stay_within_the_bound(length):
    text = os.urandom(length)  # random bytes: the worst case for a compressor
    assert len(deflate(text)) <= deflate_bound(length)
    stored = stored_blocks(text)
    # RFC 1951 3.2.4: 5 bytes per block of at most 65,535 bytes, one empty block for no text
    assert len(stored) == length + 5 * max(1, -(-length // 65_535)) <= deflate_bound(length)
    assert zlib.decompress(stored, -15) == text


def test_the_bound_is_zlibs_deflatebound_for_these_settings():
    # zlib's deflateBound for window 15, memory level 8, no wrapper, worked by hand for n = 100,000:
    # 100000 + 24 (n >> 12) + 6 (n >> 14) + 0 (n >> 25) + 13 - 6
    assert deflate_bound(100_000) == 100_037
    assert deflate_bound(0) == 7


def _stream(text: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(text) + packer.flush()


@pytest.mark.parametrize(
    "stream, size, message",
    [
        (_stream(b"x" * 100)[:-2], 100, "cut short"),
        (_stream(b"x" * 100) + b"\x00", 100, "after its final DEFLATE block"),
        (_stream(b"x" * 100), 99, "more than the 99 bytes"),
        (_stream(b"x" * 100), 101, "inflates to 100 bytes"),
        (b"\xff\xff\xff", 3, "not a raw DEFLATE stream"),
        (b"", 0, "cut short"),
        (zlib.compress(b"x" * 100), 100, "not a raw DEFLATE stream"),  # a zlib wrapper is not raw DEFLATE
    ],
    ids=["cut", "trailing", "longer", "shorter", "garbage", "empty", "zlib-wrapper"],
)
def test_inflate_refuses_what_the_spec_refuses(stream, size, message):
    with pytest.raises(HeaderError, match=message):
        inflate(stream, size, "tensor 'header'")


def test_an_inflation_bomb_costs_at_most_the_declared_size():
    bomb = _stream(b"\x00" * 50_000_000)  # 50 MB of zeros in about 50 KB
    assert len(bomb) < 100_000
    with pytest.raises(HeaderError, match="more than the 1000 bytes"):
        inflate(bomb, 1000, "tensor 'header'")
