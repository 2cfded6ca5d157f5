"""Rules a second, independent reader found unsaid in formats/pemn-v1.md and pemn-v2.md (issue 26), where a
vector alone does not show them: each is checked on both readers against an oracle that is neither (the
spec's text, integer arithmetic, a file written here by hand, zlib at other settings).

* JSON numbers are their binary64 values; one that overflows or underflows to zero is refused (v1 6.1);
* a second writer reproduces the container bytes from the rules of v1 5.7 (tensor entry key order);
* the Kaiming scale a version 2 reader derives is binary64 division and square root (v1 9.3);
* the defaults of absent config fields are the spec's table, not the product's (v1 6.3);
* the file identity (v2 3.1) does not depend on the DEFLATE stream, and only on the content.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import zlib

import numpy as np
import pytest
from conftest import REPO, edit_pemn

from pemn_compress import errors
from pemn_compress.fileformat.container import decode_container, encode_container
from pemn_compress.fileformat.header import FORMAT_CONFIG_DEFAULTS
from pemn_compress.fileformat.reader import decode_weights, file_identity, read_pemn, verify_fingerprint
from pemn_compress.strategies import kaiming_scale

FORMATS = REPO / "formats"
VECTORS = FORMATS / "vectors"
SETS = {"v1": VECTORS, "v2": VECTORS / "v2"}
VALID = {s: json.loads((f / "valid" / "expected.json").read_text())["vectors"] for s, f in SETS.items()}


@pytest.fixture(scope="module")
def ref(reference_reader):
    return reference_reader


def _both(blob: bytes, ref) -> tuple[str | None, str | None]:
    """(package outcome, reference outcome): None when the file is read, else the error class name."""
    outcomes: list[str | None] = []
    for read in (lambda b: verify_fingerprint(pf := read_pemn(b), decode_weights(pf)), ref.read):
        try:
            read(blob)
            outcomes.append(None)
        except (errors.FormatError, ref.FormatError) as exc:
            outcomes.append(type(exc).__name__)
    return outcomes[0], outcomes[1]


# ----------------------------------------------------------------------------------- numbers (v1 6.1)
NUMBERS = [  # (JSON number, read?): its binary64 value, refused when it overflows or a nonzero decimal becomes 0
    ("0.0", True), ("-0.0", True), ("0e-400", True), ("0.000E999", True),  # zero written as zero: not underflow
    ("5e-324", True),  # the smallest subnormal
    ("2.4703282292062328e-324", True),  # just above half of it: rounds up to 5e-324
    ("2.4703282292062327e-324", False),  # just below half of it: rounds to zero
    ("1e-400", False), ("-1E-400", False), ("0.00001e-320", False),
    ("1.7976931348623157e308", True), ("1.8e308", False), ("1e400", False),
    ("0.50000000000000000000000000001", True),  # over-long: its binary64 value is 0.5
]


@pytest.mark.parametrize("vset", ["v1", "v2"])
@pytest.mark.parametrize("number,read", NUMBERS)
def test_json_numbers_are_binary64_values_without_overflow_or_underflow(vset, number, read, ref):
    """The number stands in an ignored provenance member: only the JSON rule can refuse the file."""
    marked = edit_pemn((SETS[vset] / "valid" / "seq_dense_raw_d50.pemn").read_bytes(),
                       header=lambda h: h.update(provenance={"x": "@@"}))
    outcome = _both(edit_pemn(marked, text=_header_text(marked).replace('"@@"', number)), ref)
    assert outcome == ((None, None) if read else ("HeaderError", "HeaderError")), (number, outcome)


def _header_text(blob: bytes) -> str:
    """The PEMN header text of a version 1 or 2 file, read by hand (metadata or the inflated tensor)."""
    tensors, metadata = decode_container(blob)
    if metadata["pemn.version"] == "1":
        return metadata["pemn.header"]
    return zlib.decompress(tensors["header"].tobytes(), -15).decode("utf-8")


def test_an_overlong_scale_is_its_binary64_value(ref):
    """The valid vector's scale is a decimal that is not the float32 value; its binary64 value is."""
    path = VECTORS / "valid" / "seq_dense_scale_long_decimal.pemn"
    scale = re.search(r'"scale":([0-9.e-]+)', _header_text(path.read_bytes())).group(1)
    assert len(scale) > 30 and float(scale) == float(np.float32(float(scale)))
    assert read_pemn(path).layers[0].scale == ref.read(path)["header"]["layers"][0]["scale"] == float(scale)


# ----------------------------------------------------------------------------------- container bytes (v1 5.7)
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2,
            "U8": 1, "BOOL": 1}
CANONICAL = [
    pytest.param(vset, name, id=f"{vset}/{name}")
    for vset, entries in VALID.items() for name, entry in sorted(entries.items()) if entry.get("canonical", True)
]


@pytest.mark.parametrize("vset,name", CANONICAL)
def test_a_second_writer_reproduces_the_container_bytes(vset, name):
    """v1 5.7, written here from the text alone: ``__metadata__`` first with sorted keys, then the tensors by
    descending item size then name, each entry's keys in the order dtype, shape, data_offsets, separators
    ``,`` and ``:``, ASCII escapes, space padding to a multiple of 8."""
    blob = (SETS[vset] / "valid" / name).read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    parsed = json.loads(blob[8 : 8 + n])
    metadata = parsed.pop("__metadata__")
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for tensor in sorted(parsed, key=lambda t: (-ITEMSIZE[parsed[t]["dtype"]], t)):
        entry = parsed[tensor]
        size = math.prod(entry["shape"]) * ITEMSIZE[entry["dtype"]]
        header[tensor] = {"dtype": entry["dtype"], "shape": entry["shape"], "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-len(text) % 8)
    assert struct.pack("<Q", len(text)) + text == blob[: 8 + n]


def test_readers_depend_on_no_container_order(ref):
    """Tensors reversed, entry keys reversed, metadata last: the same weights and the same identity."""
    base = VECTORS / "valid" / "seq_dense_raw_d50.pemn"
    reordered = VECTORS / "valid" / "seq_dense_container_reordered.pemn"
    (n,) = struct.unpack("<Q", reordered.read_bytes()[:8])
    entries = json.loads(reordered.read_bytes()[8 : 8 + n])
    assert list(entries)[-1] == "__metadata__" and list(entries["masks"]) == ["data_offsets", "shape", "dtype"]
    one, two = ref.read(base), ref.read(reordered)
    assert all(one["weights"][k].tobytes() == two["weights"][k].tobytes() for k in one["weights"])
    assert file_identity(reordered) == ref.file_identity(two) == file_identity(base)


# ----------------------------------------------------------------------------------- Kaiming scale (v1 9.3)
def _exact_float32_sqrt_two_over(fan: int) -> float:
    """float32 nearest to the real sqrt(2 / fan), by integer arithmetic (ties to even)."""
    e = 0  # 2**23 <= sqrt(2 / fan) * 2**e < 2**24
    while 2 * 4**e < fan * 4**23:
        e += 1
    while 2 * 4**e >= fan * 4**24:
        e -= 1
    q = math.isqrt(2 * 4**e // fan)  # floor(sqrt(2 / fan) * 2**e)
    lhs, rhs = (2 * q + 1) ** 2 * fan, 8 * 4**e  # compare q + 1/2 with sqrt(2 / fan) * 2**e
    if lhs < rhs or (lhs == rhs and q % 2):
        q += 1
    return float(np.float32(q / 2.0**e))


FANS = [*range(1, 1200), 4096 * 9 + 1, 2**20 + 3, 2**31 - 1, 2**34]


def test_derived_scales_are_binary64_sqrt_rounded_once_to_float32(ref):
    """Both readers' writer-rule scale equals the exactly rounded float32 of sqrt(2 / fan_in) (the binary64
    computation of the spec gives it on every fan_in tried); float32 arithmetic does not, for many fan_in."""
    exact = [_exact_float32_sqrt_two_over(fan) for fan in FANS]
    assert [kaiming_scale((1, fan)) for fan in FANS] == exact
    assert [ref.kaiming_scale((1, fan)) for fan in FANS] == exact
    float32_path = [float(np.sqrt(np.float32(2) / np.float32(fan))) for fan in FANS]
    assert sum(a != b for a, b in zip(float32_path, exact, strict=True)) > 100  # 15, 25, 33, ...


def test_the_odd_fan_in_vector_derives_binary64_scales(ref):
    path = SETS["v2"] / "valid" / "conv1d_linear_odd_fan_in.pemn"
    out = ref.read(path)
    assert all("scale" not in layer for layer in out["stored_header"]["layers"])  # derived, not stored
    fans = [math.prod(layer["shape"][1:]) for layer in out["header"]["layers"]]
    assert fans == [25, 15]
    scales = [layer["scale"] for layer in out["header"]["layers"]]
    assert scales == [_exact_float32_sqrt_two_over(fan) for fan in fans]
    assert scales == [layer.scale for layer in read_pemn(path).layers]
    assert all(float(np.sqrt(np.float32(2) / np.float32(f))) != s for f, s in zip(fans, scales, strict=True))


# ----------------------------------------------------------------------------------- config defaults (v1 6.3)
def test_absent_config_defaults_are_the_spec_table(ref):
    """The "default" column of v1 section 6.3, parsed from the spec's text, is what both readers use."""
    text = (FORMATS / "pemn-v1.md").read_text()
    section = text[text.index("### 6.3"): text.index("## 7.")]
    table = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            for field in re.findall(r"`(\w+)`", cells[0]):
                table[field] = json.loads(cells[2].strip("`"))
    assert len(table) == 12
    assert table == FORMAT_CONFIG_DEFAULTS == ref.CONFIG_DEFAULTS


# ----------------------------------------------------------------------------------- file identity (v2 3.1)
def _identity_by_hand(blob: bytes) -> str:
    """v2 section 3.1 computed here: SHA-256 of "pemn-identity:<version>:<header sha256>:<checksums.data>"."""
    _, metadata = decode_container(blob)
    data = json.loads(_header_text(blob))["checksums"]["data"]
    text = f"pemn-identity:{int(metadata['pemn.version'])}:{metadata['pemn.header_sha256']}:{data}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _redeflated(blob: bytes, level: int, strategy: int, window: int = -15, memory: int = 8) -> bytes:
    """``blob`` with its header text deflated again by zlib at other settings; nothing else changes."""
    tensors, metadata = decode_container(blob)
    text = zlib.decompress(tensors["header"].tobytes(), -15)
    packer = zlib.compressobj(level, zlib.DEFLATED, window, memory, strategy)
    arrays = {name: np.array(t) for name, t in tensors.items()}
    arrays["header"] = np.frombuffer(packer.compress(text) + packer.flush(), np.uint8)
    return encode_container(arrays, dict(metadata))


SETTINGS = [(0, zlib.Z_DEFAULT_STRATEGY), (1, zlib.Z_FIXED), (6, zlib.Z_FILTERED), (9, zlib.Z_HUFFMAN_ONLY),
            (9, zlib.Z_RLE), (4, zlib.Z_DEFAULT_STRATEGY, -9, 1)]


@pytest.mark.parametrize("name", ["cm_onelayer_d50.pemn", "seq_rp_rand_maxseed_folded.pemn"])
def test_identity_survives_another_deflate(name, ref):
    """What another zlib build does to a version 2 file: other header bytes, the same identity, still read."""
    path = SETS["v2"] / "valid" / name
    blob, pinned = path.read_bytes(), VALID["v2"][name]["identity"]
    assert _identity_by_hand(blob) == pinned
    weights = ref.read(blob)["weights"]
    files = {_redeflated(blob, *setting) for setting in SETTINGS}
    assert blob not in files and len(files) >= 4  # other bytes than the writer's (two settings may coincide)
    for other in files:
        assert file_identity(other) == ref.file_identity(other) == _identity_by_hand(other) == pinned
        out = ref.read(other)
        assert all(out["weights"][k].tobytes() == w.tobytes() for k, w in weights.items())
        assert _both(other, ref) == (None, None)


def test_identity_names_the_content_and_nothing_else(ref):
    """Among the valid vectors, files share an identity exactly when they differ only in how the header is
    deflated, in the container JSON's layout, or in an ignored metadata key."""
    groups: dict[str, set[str]] = {}
    for vset, entries in VALID.items():
        for name, entry in entries.items():
            groups.setdefault(entry["identity"], set()).add(f"{vset}/{name.removesuffix('.pemn')}")
    shared = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    assert shared == [
        ["v1/seq_dense_container_padding", "v1/seq_dense_container_reordered", "v1/seq_dense_raw_d50"],
        ["v2/cm_rp_copy_header_flushed_blocks", "v2/cm_rp_copy_learned"],
        ["v2/seq_dense_header_padding_bits", "v2/seq_dense_metadata_header_ignored", "v2/seq_dense_raw_d50"],
        ["v2/seq_onelayer_header_stored_block", "v2/seq_onelayer_rice_d10"],
    ]
    blob = (SETS["v2"] / "valid" / "cm_onelayer_d50.pemn").read_bytes()
    edited = edit_pemn(blob, header=lambda h: h.update(provenance={"note": "one more key"}))
    assert file_identity(edited) == ref.file_identity(edited) != file_identity(blob)  # the text changed
