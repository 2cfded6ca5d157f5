"""Property tests of the mask codecs (pemn_compress.fileformat.codecs) over arbitrary masks and densities.

The expected values never come from the codec module itself:

* the encoding: a bit-by-bit transcription of formats/pemn-v1.md section 7 in plain Python
  (``spec_raw``, ``spec_rice``), compared byte for byte, so the encoded length is the spec's too;
* the codec choice: the writer's rule of section 7.3 transcribed the same way (``spec_choice``);
* the decoding: the package's decoder and the reference reader's (formats/reference_reader.py).

Hypothesis runs derandomized with a modest number of examples and no deadline, so the suite is
deterministic and a loaded machine cannot fail it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pemn_compress.errors import ShapeError
from pemn_compress.fileformat.codecs import decode_mask, encode_mask, rice_decode, rice_encode

MAX_RICE_K = 40  # formats/pemn-v1.md section 6.3: rice_k in [0, 40]

PROPERTIES = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow])


@st.composite
def masks(draw, max_weights: int = 1500) -> np.ndarray:
    """A boolean mask of 1 to ``max_weights`` weights as one or two dimensions, at any density:
    Bernoulli(p) for any p in [0, 1] (0, 1 and tiny p included), a few ones among zeros, or a few
    zeros among ones (the densities where rice coding wins, inverted or not)."""
    rows = draw(st.integers(1, 3))
    cols = draw(st.integers(1, max_weights // rows))
    n = rows * cols
    kind = draw(st.sampled_from(["bernoulli", "few ones", "few zeros"]))
    if kind == "bernoulli":
        p = draw(st.floats(0.0, 1.0))
        seed = draw(st.integers(0, 2**32 - 1))
        flat = np.random.default_rng(seed).random(n) < p
    else:
        flat = np.zeros(n, dtype=bool)
        flat[draw(st.lists(st.integers(0, n - 1), max_size=min(n, 40)))] = True
        if kind == "few zeros":
            flat = ~flat
    return flat.reshape(rows, cols)


# ----------------------------------------------------------------------------------- the spec, transcribed
def pack(bits: list[int]) -> bytes:
    """Bits to bytes, most significant bit first, the last byte padded with zero bits."""
    bits = bits + [0] * (-len(bits) % 8)
    return bytes(int("".join(str(b) for b in bits[i : i + 8]), 2) for i in range(0, len(bits), 8))


def spec_raw(mask: np.ndarray) -> bytes:
    """Section 7.2: bit i of the flattened (C order) mask is bit 7 - i % 8 of byte i // 8."""
    return pack([int(b) for b in mask.reshape(-1).tolist()])


def gaps(x: list[bool]) -> list[int]:
    """g_j = p_j - p_{j-1} - 1 over the positions p_j of the ones of x, with p_{-1} = -1."""
    out, previous = [], -1
    for position, one in enumerate(x):
        if one:
            out.append(position - previous - 1)
            previous = position
    return out


def spec_rice(x: list[bool], k: int) -> bytes:
    """Section 7.3: per gap, g >> k one-bits, a zero-bit, then the low k bits of g, most significant first."""
    bits: list[int] = []
    for g in gaps(x):
        bits += [1] * (g >> k) + [0] + [(g >> (k - 1 - b)) & 1 for b in range(k)]
    return pack(bits)


def spec_choice(mask: np.ndarray) -> tuple[str, int | None, bool, int]:
    """Section 7.3, "Writers choose": (codec, rice_k, invert, ones) for a mask.

    invert = ones(mask) > n - ones(mask); k in [0, min(40, max(1, floor(log2(n + 1))))] with the
    fewest bits, the smallest k on ties; rice only when its bytes are strictly fewer than raw's
    (never when x has no one). ``ones`` counts the ones of the coded vector (x for rice).
    """
    flat = [bool(b) for b in mask.reshape(-1).tolist()]
    n, ones = len(flat), sum(flat)
    invert = ones > n - ones
    x = [b != invert for b in flat]
    g = gaps(x)
    if not g:
        return "raw", None, False, ones
    top = min(MAX_RICE_K, max(1, (n + 1).bit_length() - 1))  # floor(log2(n + 1)) in integers
    bits = {k: sum((gap >> k) + 1 + k for gap in g) for k in range(top + 1)}
    k = min(bits, key=lambda key: (bits[key], key))
    if -(-bits[k] // 8) < -(-n // 8):
        return "rice", k, invert, len(g)
    return "raw", None, False, ones


def test_spec_example():
    """The worked example of section 7.3: n = 16, ones at 3, 4 and 12, k = 1 -> 0xA7 0x40."""
    x = np.zeros(16, dtype=bool)
    x[[3, 4, 12]] = True
    assert spec_rice(x.tolist(), 1) == bytes([0xA7, 0x40])  # the transcription agrees with the spec's answer
    assert rice_encode(x, 1).tobytes() == bytes([0xA7, 0x40])
    assert np.array_equal(rice_decode(np.array([0xA7, 0x40], dtype=np.uint8), 16, 3, 1, "l"), x)


@pytest.mark.parametrize("n,one,expected", [
    # n = 14, one at 12 (gap 12 = 0b1100): k in [0, floor(log2 15) = 3]; bits k=0: 12+1 = 13, k=1: 6+2 = 8,
    # k=2: 3+3 = 6, k=3: 1+4 = 5: the top of the range wins; 1 byte < 2 raw. Codeword 1 0 100 -> 0xA0
    (14, 12, ("rice", 3, 0xA0)),
    # n = 15, one at 14 (gap 14 = 0b1110): k in [0, 4]; bits 15, 9, 6, 5, 5: k=3 and k=4 tie, the
    # smaller wins. Codeword 1 0 110 -> 0xB0
    (15, 14, ("rice", 3, 0xB0)),
    # n = 8, one at 7 (gap 7): k in [0, 3]; bits 8, 5, 4, 4: 1 byte is not fewer than raw's 1 byte -> raw 0x01
    (8, 7, ("raw", None, 0x01)),
])
def test_codec_choice_by_hand(n, one, expected):
    mask = np.zeros(n, dtype=bool)
    mask[one] = True
    coded = encode_mask(mask)
    codec, k, byte = expected
    assert (coded.coding.codec, coded.coding.rice_k, coded.data.tobytes()) == (codec, k, bytes([byte]))
    assert spec_choice(mask)[:2] == (codec, k)  # the transcription agrees with the hand computation


# ----------------------------------------------------------------------------------- properties
@PROPERTIES
@given(mask=masks())
def test_the_chosen_encoding_round_trips_through_both_readers(mask, reference_reader):
    coded = encode_mask(mask)
    n = mask.size
    assert np.array_equal(decode_mask(coded.data, n, coded.coding, "l"), mask.reshape(-1))
    if coded.coding.codec == "raw":
        theirs = reference_reader._decode_raw(coded.data, n, coded.coding.ones, "l")
    else:
        coding = coded.coding
        theirs = reference_reader._decode_rice(coded.data, n, coding.ones, coding.rice_k, coding.invert, "l")
    assert np.array_equal(theirs, mask.reshape(-1))


@PROPERTIES
@given(mask=masks())
def test_the_codec_choice_follows_the_spec_rule(mask):
    coded = encode_mask(mask)
    assert (coded.coding.codec, coded.coding.rice_k, coded.coding.invert, coded.coding.ones) == spec_choice(mask)
    if coded.coding.codec == "raw":
        expected = spec_raw(mask)
    else:
        expected = spec_rice((mask.reshape(-1) != coded.coding.invert).tolist(), coded.coding.rice_k)
    assert coded.data.dtype == np.uint8 and coded.data.tobytes() == expected


@PROPERTIES
@given(mask=masks())
def test_raw_is_ceil_n_over_8_bytes_with_zero_padding(mask):
    coded = encode_mask(mask, codec="raw")
    n = mask.size
    assert coded.data.size == -(-n // 8)  # section 7.2: ceil(n / 8) bytes
    assert coded.data.tobytes() == spec_raw(mask)  # padding bits zero included
    assert coded.coding.ones == int(np.count_nonzero(mask))


@PROPERTIES
@given(mask=masks(max_weights=600), k=st.integers(0, MAX_RICE_K))
def test_rice_with_any_k_is_the_spec_code_and_decodes_back(mask, k, reference_reader):
    x = mask.reshape(-1)
    data = rice_encode(x, k)
    assert data.tobytes() == spec_rice(x.tolist(), k)  # so its length is the spec's ceil(sum of codeword bits / 8)
    ones = int(np.count_nonzero(x))
    assert np.array_equal(rice_decode(data, x.size, ones, k, "l"), x)
    assert np.array_equal(reference_reader._decode_rice(data, x.size, ones, k, False, "l"), x)
    if ones:  # a whole byte after the last codeword is refused by both readers (section 7.3)
        longer = np.concatenate([data, np.zeros(1, dtype=np.uint8)])
        with pytest.raises(ShapeError):
            rice_decode(longer, x.size, ones, k, "l")
        with pytest.raises(reference_reader.ShapeError):
            reference_reader._decode_rice(longer, x.size, ones, k, False, "l")
