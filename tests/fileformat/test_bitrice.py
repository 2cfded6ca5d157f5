"""The bitarray fast path of the rice decoder (``fileformat/_bitrice.py``) against the reference reader.

The fast path may only accept: whatever it decodes, the reference reader (written from the spec,
formats/reference_reader.py) decodes to the same bits, and whatever the reference reader refuses, the
fast path hands back to the numpy decoder (None). Valid streams with small ``k`` take the fast path.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pemn_compress.errors import ShapeError
from pemn_compress.fileformat._bitrice import ESCAPE, MAX_FAST_K, rice_decode_fast
from pemn_compress.fileformat.codecs import rice_decode, rice_encode

PROPERTIES = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow])


def reference(reference_reader, data: np.ndarray, n: int, ones: int, k: int) -> np.ndarray | None:
    try:
        return reference_reader._decode_rice(data, n, ones, k, False, "l")
    except reference_reader.FormatError:
        return None


@PROPERTIES
@given(n=st.integers(1, 3000), density=st.floats(0.0, 0.6), k=st.integers(0, MAX_FAST_K), seed=st.integers(0, 9))
def test_valid_streams_take_the_fast_path_and_match_the_reference(reference_reader, n, density, k, seed):
    mask = np.random.default_rng(seed).random(n) < density
    if not mask.any():
        mask[n // 2] = True
    data = rice_encode(mask, k)
    fast = rice_decode_fast(data, n, int(mask.sum()), k)
    assert fast is not None
    assert np.array_equal(fast, mask)
    assert np.array_equal(reference(reference_reader, data, n, int(mask.sum()), k), mask)


@PROPERTIES
@given(raw=st.binary(min_size=1, max_size=40), n=st.integers(1, 400), ones=st.integers(1, 40),
       k=st.integers(0, MAX_FAST_K))
def test_any_stream_the_fast_path_accepts_the_reference_accepts_identically(reference_reader, raw, n, ones, k):
    data = np.frombuffer(raw, dtype=np.uint8)
    fast = rice_decode_fast(data, n, ones, k)
    theirs = reference(reference_reader, data, n, ones, k)
    if fast is None:
        return  # the numpy decoder decides (and is checked against the vectors and the reference elsewhere)
    assert theirs is not None and np.array_equal(fast, theirs)


@pytest.mark.parametrize("k", [0, 3])
def test_quotients_beyond_the_escape_word(reference_reader, k):
    # ones at 0 and at 0 + 1 + gap, where the gap's quotient is 2 * ESCAPE + 5: two escape words, then
    # a codeword of 5 one-bits; the positions are exact
    gap = ((2 * ESCAPE + 5) << k) + (1 if k else 0)
    n = gap + 10
    mask = np.zeros(n, dtype=bool)
    mask[[0, gap + 1]] = True
    data = rice_encode(mask, k)
    assert np.array_equal(rice_decode_fast(data, n, 2, k), mask)
    assert np.array_equal(reference(reference_reader, data, n, 2, k), mask)


def test_refusals_keep_the_numpy_decoders_class_and_message():
    mask = np.zeros(100, dtype=bool)
    mask[[3, 50]] = True
    data = rice_encode(mask, 2)
    cut = data[:1]  # ends inside the second codeword
    assert rice_decode_fast(cut, 100, 2, 2) is None
    with pytest.raises(ShapeError, match="ends inside"):
        rice_decode(cut, 100, 2, 2, "l")
    padded = np.concatenate([data, np.zeros(1, dtype=np.uint8)])  # a whole extra byte of padding
    assert rice_decode_fast(padded, 100, 2, 2) is None
    with pytest.raises(ShapeError, match="after its last codeword"):
        rice_decode(padded, 100, 2, 2, "l")
