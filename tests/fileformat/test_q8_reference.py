"""Version 3's int8 leftovers (formats/pemn-v3.md, group ``q8``) checked against oracles that are neither
reader's code:

* a hand-computed decode (section 4's example, an outlier at a chosen position) of a file built here by
  hand: the container, the deflated header and the checksums written from the specs with struct, json,
  zlib and hashlib, not with the package's writer;
* integer arithmetic: ``lo + c * step`` computed exactly as an integer multiple of 2**-24 (every float16 is
  one), then rounded once to float32, for every code and float16 ranges of every magnitude: the float32
  arithmetic both readers use must give those bits (section 4 says it does);
* a pure-Python decode of every version 3 valid vector from its raw tensors (positions, codes, ranges by
  row), which both readers must match bit for bit;
* the float32 leftovers of a real folded model, which the decoded values must stay within the grid's
  precision of (inliers) or be the float16 rounding of (outliers, chosen by section 5's rule).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import REPO

from pemn_compress.config import MaskConfig
from pemn_compress.export import _leftover_state, to_bytes
from pemn_compress.fileformat.q8 import dequantize
from pemn_compress.fileformat.reader import read_pemn
from pemn_compress.models import create_model
from pemn_compress.surgery import mask_

V3 = REPO / "formats" / "vectors" / "v3" / "valid"
V3_VALID = sorted(json.loads((V3 / "expected.json").read_text())["vectors"])

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ref(reference_reader):
    return reference_reader


# ----------------------------------------------------------------------------------- a file built by hand
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2,
            "U8": 1, "BOOL": 1}
NUMPY = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "U16": "<u2", "U8": "u1", "I8": "i1"}


def _unpack(blob: bytes) -> tuple[dict, dict[str, tuple[str, np.ndarray]]]:
    """(PEMN header object, tensors by name as (safetensors dtype, array)) of a version 2 or 3 file."""
    (n,) = struct.unpack("<Q", blob[:8])
    entries = json.loads(blob[8 : 8 + n])
    entries.pop("__metadata__")
    data = blob[8 + n :]
    tensors = {}
    for name, entry in entries.items():
        begin, end = entry["data_offsets"]
        array = np.frombuffer(data[begin:end], NUMPY[entry["dtype"]]).reshape(entry["shape"]).copy()
        tensors[name] = (entry["dtype"], array)
    header = json.loads(zlib.decompress(tensors.pop("header")[1].tobytes(), -15))
    return header, tensors


def _pack(header: dict, tensors: dict[str, tuple[str, np.ndarray]], version: str = "3") -> bytes:
    """A version 2/3 file from the specs: tensors by descending item size then name (v1 5.7), the header
    text deflated raw into ``header`` (v2 3), ``checksums.data`` over every tensor but ``header`` (v2 5)."""
    order = sorted(tensors, key=lambda t: (-ITEMSIZE[tensors[t][0]], t))
    header["checksums"]["data"] = hashlib.sha256(b"".join(tensors[t][1].tobytes() for t in order)).hexdigest()
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    every = {**tensors, "header": ("U8", np.frombuffer(packer.compress(text) + packer.flush(), np.uint8))}
    metadata = {"format": "pemn", "pemn.header_bytes": str(len(text)),
                "pemn.header_sha256": hashlib.sha256(text).hexdigest(), "pemn.version": version}
    head: dict = {"__metadata__": metadata}
    offset, data = 0, b""
    for name in sorted(every, key=lambda t: (-ITEMSIZE[every[t][0]], t)):
        dtype, array = every[name]
        raw = np.ascontiguousarray(array).tobytes()
        head[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        offset, data = offset + len(raw), data + raw
    text = json.dumps(head, separators=(",", ":")).encode("ascii")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def test_section_4_example_decodes_by_hand(ref):
    """lo -0.5, step 0.25: codes 0, 1, 255 are -0.5, -0.25, 63.25 (section 4's example); an outlier 1000 at
    position 5 takes no code, the codes after it fill positions 6 and 7."""
    header, tensors = _unpack((V3 / "int8_mixed_groups.pemn").read_bytes())
    assert [row for row in header["dense"]["tensors"] if row[2] == "q8"] == [["0.bias", [8], "q8", 1]]
    tensors["dense.q8"] = ("U8", np.array([0, 1, 255, 2, 128, 254, 3], np.uint8))
    tensors["dense.q8_range"] = ("F16", np.array([-0.5, 0.25], np.float16))
    tensors["dense.q8_index"] = ("U16", np.array([5], np.uint16))
    tensors["dense.q8_value"] = ("F16", np.array([1000.0], np.float16))
    blob = _pack(header, tensors)
    expected = np.array([-0.5, -0.25, 63.25, 0.0, 31.5, 1000.0, 63.0, 0.25], np.float32)
    out = ref.read(blob)
    assert out["version"] == 3 and out["dense"]["0.bias"].dtype == np.float32
    assert out["dense"]["0.bias"].tobytes() == expected.tobytes()
    assert read_pemn(blob).dense_arrays()["0.bias"].tobytes() == expected.tobytes()
    # the rows of the other groups are read as stored, beside it
    assert out["dense"]["4.bias"].dtype == np.float32 and out["dense"]["2.bias"].dtype == np.float16

    tensors["dense.q8_index"] = ("U16", np.array([8], np.uint16))  # position n: row 23b
    with pytest.raises(ref.ShapeError):
        ref.read(_pack(header, tensors))
    tensors["dense.q8_index"] = ("U16", np.array([5], np.uint16))
    with pytest.raises(ref.HeaderError):  # the same file labelled version 2: int8 is unknown there (section 2)
        ref.read(_pack(header, tensors, version="2"))


def test_every_value_an_outlier_and_a_zero_length_code_tensor(ref):
    """k = n: no code at all, dense.q8 present and empty; lo and step are read but unused."""
    header, tensors = _unpack((V3 / "int8_mixed_groups.pemn").read_bytes())
    next(row for row in header["dense"]["tensors"] if row[2] == "q8")[3] = 8
    values = np.array([-2.0, 0.5, 65504.0, -0.0, 2.0**-24, 3.0, -65504.0, 0.125], np.float16)
    tensors["dense.q8"] = ("U8", np.zeros(0, np.uint8))
    tensors["dense.q8_range"] = ("F16", np.array([7.0, -3.0], np.float16))
    tensors["dense.q8_index"] = ("U16", np.arange(8, dtype=np.uint16))
    tensors["dense.q8_value"] = ("F16", values)
    blob = _pack(header, tensors)
    assert ref.read(blob)["dense"]["0.bias"].tobytes() == values.astype(np.float32).tobytes()
    assert read_pemn(blob).dense_arrays()["0.bias"].tobytes() == values.astype(np.float32).tobytes()


# ----------------------------------------------------------------------------------- integer arithmetic
def _float16_grid() -> np.ndarray:
    """Finite float16 values of every exponent, both signs, subnormals and the extremes among them."""
    bits = np.arange(0, 0x7C00, 97, dtype=np.uint16)  # positive finite patterns, a stride through all exponents
    extremes = np.array([0x0000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x3C01, 0x7BFF], np.uint16)
    positive = np.unique(np.concatenate([bits, extremes])).view(np.float16)
    return np.concatenate([positive, -positive])


def test_float32_arithmetic_is_the_exact_value_rounded_once(ref):
    """Section 4: ``lo + c * step`` computed exactly and rounded once to float32. Every float16 is an integer
    times 2**-24 (at most 2**40 of them), so the exact value is (L + c * S) * 2**-24 with L + c * S an int64
    below 2**53: exact in binary64, then rounded once. Both readers' float32 arithmetic must give it."""
    grid = _float16_grid()
    lows = grid[:: max(1, grid.size // 120)]
    steps = np.concatenate([grid[grid > 0][:: max(1, int((grid > 0).sum()) // 60)], np.zeros(1, np.float16)])
    codes = np.arange(256, dtype=np.uint8)
    rounded = 0
    for lo in lows:
        L = int(np.float64(lo) * 2**24)
        assert L == np.float64(lo) * 2**24
        for step in steps:
            S = int(np.float64(step) * 2**24)
            exact = (L + codes.astype(np.int64) * S).astype(np.float64) * 2.0**-24  # exact: |L + c S| < 2**49
            expected = exact.astype(np.float32)  # the one rounding
            rounded += int((expected.astype(np.float64) != exact).sum())
            ours = ref._decode_q8(codes, lo, step, np.zeros(0, np.uint16), np.zeros(0, np.float16), 256)
            theirs = dequantize(codes, lo, step, np.zeros(0, np.uint16), np.zeros(0, np.float16), 256)
            assert ours.tobytes() == expected.tobytes(), (float(lo), float(step))
            assert theirs.tobytes() == expected.tobytes(), (float(lo), float(step))
    assert rounded > 10_000  # the grid does reach values float32 cannot hold exactly


# ----------------------------------------------------------------------------------- the vectors, decoded by hand
def _q8_rows_by_hand(blob: bytes) -> dict[str, np.ndarray]:
    """Every q8 row of a file decoded with Python integers and one rounding per value (section 4), from the
    raw tensors: ranges two per row, codes and outliers consumed in table order."""
    header, tensors = _unpack(blob)
    if "dense.q8" not in tensors:  # no q8 row (checked by the readers): nothing to decode
        return {}
    codes, ranges = tensors["dense.q8"][1].tolist(), tensors["dense.q8_range"][1]
    index, value = tensors["dense.q8_index"][1].tolist(), tensors["dense.q8_value"][1]
    out, e, c_at, k_at = {}, 0, 0, 0
    for key, shape, group, *rest in header["dense"]["tensors"]:
        if group != "q8":
            continue
        n, k = math.prod(shape), rest[0]
        lo, step = (int(np.float64(x) * 2**24) for x in ranges[2 * e : 2 * e + 2])
        positions = dict(zip(index[k_at : k_at + k], value[k_at : k_at + k], strict=True))
        flat = []
        for p in range(n):
            if p in positions:
                flat.append(np.float32(positions[p]))  # float16 widened: exact
            else:
                flat.append(np.float32(float(lo + codes[c_at] * step) * 2.0**-24))
                c_at += 1
        out[key] = np.array(flat, np.float32).reshape(shape)
        e, k_at = e + 1, k_at + k
    assert c_at == len(codes) and k_at == len(index) and 2 * e == ranges.size
    return out


@pytest.mark.parametrize("name", V3_VALID)
def test_both_readers_decode_the_q8_vectors_as_by_hand(name, ref):
    blob = (V3 / name).read_bytes()
    by_hand = _q8_rows_by_hand(blob)
    ours, theirs = ref.read(blob)["dense"], read_pemn(blob).dense_arrays()
    q8 = [row[0] for row in ref.read(blob)["stored_header"]["dense"]["tensors"] if row[2] == "q8"]
    assert sorted(by_hand) == sorted(q8)
    for key in q8:
        assert ours[key].dtype == theirs[key].dtype == np.float32 and ours[key].shape == theirs[key].shape
        assert ours[key].tobytes() == theirs[key].tobytes() == by_hand[key].tobytes(), key  # bits: NaN included


# ----------------------------------------------------------------------------------- a real folded model
def _folded_model(name: str) -> torch.nn.Module:
    """A zoo model with BatchNorm statistics and affine parameters of trained-looking spread, a few channels
    with a tiny running variance (folded: scales hundreds of times the others), masked."""
    model = create_model(name)
    gen = torch.Generator().manual_seed(20240603)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.weight.copy_(1 + 0.3 * torch.randn(c, generator=gen))
                module.bias.copy_(0.2 * torch.randn(c, generator=gen))
                module.running_mean.copy_(0.5 * torch.randn(c, generator=gen))
                module.running_var.copy_(0.05 + torch.rand(c, generator=gen) * 2)
                module.running_var[torch.randperm(c, generator=gen)[: max(1, c // 32)]] = 1e-6
    mask_(model, MaskConfig(strategy="onelayer", density=0.2, seed=3))
    return model


@pytest.mark.parametrize("model_name", ["test_resnet", "convmixer_64_4"])
def test_decoded_leftovers_are_the_folded_values_on_a_grid(model_name, ref):
    """Each q8 entry against the float32 leftovers export folds (``_leftover_state``): outliers are those over 16
    times the median magnitude and decode to their float16 rounding; lo and step are section 5's; every other
    value is within step / 2 of its decoded value (the lowest ones within lo's float16 rounding, when lo rounded
    up), plus the decode's own float32 rounding."""
    model = _folded_model(model_name)
    blob = to_bytes(model, dense_dtype="int8", fold_batchnorm=True)
    state, folded = _leftover_state(model, fold_batchnorm=True)
    assert folded
    out = ref.read(blob)
    tensors = out["stored_header"]["dense"]["tensors"]
    raw, _ = ref.parse_container(blob)[:2]
    q8 = [row for row in tensors if row[2] == "q8"]
    assert q8 and any(k for *_, k in q8), "the tiny variances should give outliers"
    k_at = 0
    for e, (key, _, _, k) in enumerate(q8):
        x = state[key].detach().float().numpy().reshape(-1)
        v = out["dense"][key].reshape(-1)
        lo, step = (np.float64(t) for t in raw["dense.q8_range"][2 * e : 2 * e + 2])
        positions = raw["dense.q8_index"][k_at : k_at + k].astype(np.int64)
        k_at += k
        magnitude = np.abs(x.astype(np.float64))
        outlier = magnitude > 16 * np.median(magnitude)
        assert np.array_equal(np.flatnonzero(outlier), positions), key
        assert v[outlier].tobytes() == x[outlier].astype(np.float16).astype(np.float32).tobytes(), key
        inliers = x[~outlier].astype(np.float64)
        assert lo == np.float64(np.float16(inliers.min())), key
        assert step == np.float64(np.float16((inliers.max() - lo) / 255)), key
        slack = np.spacing(np.abs(inliers).astype(np.float32)).astype(np.float64) + np.spacing(np.float32(abs(lo)))
        bound = max(step / 2, lo - inliers.min()) + slack
        error = np.abs(v[~outlier].astype(np.float64) - inliers)
        assert (error <= bound).all(), (key, float(error.max()), float(step))
