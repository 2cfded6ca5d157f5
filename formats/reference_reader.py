#!/usr/bin/env python3
"""Reference reader for `.pemn` files of versions 1, 2 and 3, using only numpy and the Python standard library.

It is written from the specifications (formats/pemn-v1.md; formats/pemn-v2.md for what version 2
changes: the PEMN header deflated in the ``header`` tensor, derived keys left out, the data checksum
without the ``header`` tensor; formats/pemn-v3.md for what version 3 adds: ``dense.dtype`` ``int8`` and
the dense group ``q8``, one byte per value on a 256-level grid with float16 outliers), independently of
the pemn_compress package: it never imports that package or torch, it has its own Philox4x32-10, its
own rice decoder (a plain loop over codewords), its own strategy rules, its own derivation of the keys
version 2 leaves out (zlib only inflates) and its own q8 decoder. The golden vectors in
formats/vectors/ (version 1), formats/vectors/v2/ and formats/vectors/v3/ are read by both, and both
must give the same float32 bits or the same error class.

    import reference_reader as ref
    out = ref.read("model.pemn")          # a path, or the file's bytes
    out["weights"]["head"]                # float32 array: values * scale * mask, bit-exact
    out["masks"], out["dense"], out["values"], out["header"], out["metadata"]
    out["dense"]["stem.2.weight"]         # a leftover as stored; a q8 entry (v3) decoded to float32
    out["header"]                         # the PEMN header completed with its derived keys (v2)
    out["stored_header"], out["version"]  # the header object as stored, and the format version
    ref.file_identity(out)                # SHA-256 naming the content, whatever DEFLATE made the header (v2 3.1)

    python formats/reference_reader.py model.pemn [more.pemn ...]   # JSON summary, exit 1 on error

Every refusal is a ``FormatError`` subclass whose name matches the package's error of the same
meaning (ContainerError, HeaderError, MissingKeyError, VersionError, ChecksumError, LimitError,
ShapeError), so a test vector can name the expected error by class name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import zlib

import numpy as np

__all__ = [
    "ChecksumError",
    "ContainerError",
    "FormatError",
    "HeaderError",
    "LimitError",
    "MissingKeyError",
    "ShapeError",
    "VersionError",
    "file_identity",
    "philox4x32_10",
    "read",
    "summary",
    "unit_values",
]


# ------------------------------------------------------------------------------------------ errors
class FormatError(ValueError):
    """The bytes are not a readable `.pemn` file."""


class ContainerError(FormatError):
    """Not a valid safetensors container."""


class HeaderError(FormatError):
    """The PEMN header is malformed or inconsistent."""


class MissingKeyError(HeaderError):
    """A required key is absent."""


class VersionError(FormatError):
    """The file's format version is newer than 3."""


class ChecksumError(FormatError):
    """A hash does not match: header, data buffer or weight fingerprint."""


class LimitError(FormatError):
    """A declared size beyond the reader's limits."""


class ShapeError(FormatError):
    """A tensor's dtype, shape or length disagrees with the header."""


# ------------------------------------------------------------------------------------------ constants (spec names)
FORMAT_NAME = "pemn"
FORMAT_VERSIONS = (1, 2, 3)  # the versions this reader implements
FORMAT_VERSION = max(FORMAT_VERSIONS)
KEY_FORMAT, KEY_VERSION, KEY_HEADER, KEY_HEADER_SHA256 = "format", "pemn.version", "pemn.header", "pemn.header_sha256"
KEY_HEADER_BYTES = "pemn.header_bytes"  # v2: the inflated header text's length, 1 to 9 ASCII digits
MASKS_TENSOR, DENSE_PREFIX, VALUES_PREFIX = "masks", "dense.", "values."
HEADER_TENSOR = "header"  # v2: U8, the header text as one raw DEFLATE stream (RFC 1951)
DENSE_GROUPS = {"f32": "<f4", "f16": "<f2", "i64": "<i8"}
GENERATOR = "philox4x32-10"
DISTRIBUTIONS = ("normal", "signed_constant", "uniform")
STRATEGIES = ("dense", "onelayer", "mp", "rp")
RP_MODES = ("copy", "rand")
LAYER_TYPES = ("Linear", "Conv1d", "Conv2d")
LAYER_NDIM = {"Linear": 2, "Conv1d": 3, "Conv2d": 4}  # a layer type's weight dimensions
CODECS = ("raw", "rice")
DENSE_DTYPES = ("float32", "float16")
INT8_DTYPE = "int8"  # v3: another dense.dtype, unknown (HeaderError) in versions 1 and 2
INT8_VERSION = 3  # the first version that knows dense.dtype int8 and the group q8
Q8_GROUP = "q8"  # v3: rows [key, shape, "q8", outliers], stored in the four tensors below
Q8_CODES, Q8_RANGE, Q8_INDEX, Q8_VALUE = "dense.q8", "dense.q8_range", "dense.q8_index", "dense.q8_value"
Q8_DTYPES = {Q8_CODES: "u1", Q8_RANGE: "<f2", Q8_INDEX: "<u2", Q8_VALUE: "<f2"}
Q8_MAX_VALUES = 65536  # a q8 entry's outlier positions are 16-bit
ARCH_KINDS = ("registry", "import", "none")
HASH = "sha256"
HEX64 = re.compile("[0-9a-f]{64}")  # how every SHA-256 is written in a file
PERMUTATION_STREAM_BASE = 2**32

SAFETENSORS_DTYPES = {  # safetensors dtype -> numpy; BF16 and the F8 types are not .pemn dtypes
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}

MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_TENSORS = 100_000
MAX_NDIM = 8
MAX_JSON_DEPTH = 64
MAX_LAYER_WEIGHTS = 2**34
DEFAULT_MAX_WEIGHTS = 2**31
MAX_RICE_K = 40
JSON_INT_RANGE = (-(2**63), 2**64)  # [low, high)

CONFIG_DEFAULTS = {
    "density": 0.5, "strategy": "onelayer", "ratio": None, "rp_mode": "copy", "distribution": "normal",
    "rescale": True, "seed": 0, "learn_values": False, "train_norm": True, "train_bias": True,
    "train_other": True, "version": 1,
}

# Philox4x32-10 (Salmon et al. 2011; Random123)
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
PHILOX_ROUNDS = 10
# the two float64 constants of the unit-value mappings, bit for bit (see the spec)
C_NORMAL = float.fromhex("0x1.bb67ae8584cb8p-24")  # 1 / sqrt((2**48 - 1) / 3)
C_UNIFORM = float.fromhex("0x1.bb67ae8584caap-24")  # sqrt(3) / 2**24
CHUNK = 1 << 18  # elements generated per step
# largest |unit value| of each distribution: the extreme integer t mapped as unit_values maps it
UNIT_BOUND = {
    "normal": float(np.float32(float(2**25 - 2) * C_NORMAL)),
    "uniform": float(np.float32(float(2**24 - 1) * C_UNIFORM)),
    "signed_constant": 1.0,
}
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
IMPORT_TARGET = re.compile(f"{_DOTTED}:{_DOTTED}")  # "module:function"


# ------------------------------------------------------------------------------------------ JSON
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_depth(text: str) -> int:
    """Deepest nesting of [ and { outside strings (0 for a scalar)."""
    stripped = _STRING.sub("", text)
    marks = np.frombuffer(stripped.encode("utf-8", "replace"), dtype=np.uint8)
    step = np.zeros(marks.size, dtype=np.int64)
    step[(marks == ord("[")) | (marks == ord("{"))] = 1
    step[(marks == ord("]")) | (marks == ord("}"))] = -1
    return int(np.cumsum(step).max()) if step.size else 0


def _strict_json(text: str, what: str, error: type[FormatError], invalid: str = "is not valid JSON"):
    """json.loads, refusing what the spec refuses: depth > 64, NaN/Infinity, duplicate keys, integers
    outside [-2**63, 2**64), numbers that overflow binary64 or underflow it to zero, unpaired surrogates,
    a byte order mark (json.loads refuses U+FEFF before the value: it is not JSON whitespace)."""
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise error(f"{what} is not acceptable JSON: nesting deeper than {MAX_JSON_DEPTH} levels")

    def pairs(items):
        obj = {}
        for key, value in items:
            if key in obj:
                raise error(f"{what} is not acceptable JSON: duplicate key {key!r}")
            obj[key] = value
        return obj

    def constant(name):
        raise error(f"{what} is not acceptable JSON: {name} is not a JSON number")

    def finite(literal):  # a number with a fraction or exponent: its binary64 value, correctly rounded
        value = float(literal)
        if not math.isfinite(value):
            raise error(f"{what} is not acceptable JSON: number {literal[:40]} overflows binary64")
        mantissa = literal.lower().split("e")[0]
        if value == 0 and mantissa.strip("-0.") != "":  # a nonzero digit rounded away: underflow
            raise error(f"{what} is not acceptable JSON: number {literal[:40]} underflows binary64 to zero")
        return value

    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_constant=constant, parse_float=finite)
    except FormatError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, int digit limit, deep nesting
        raise error(f"{what} {invalid}: {str(exc)[:200]}") from None
    stack = [(value, what)]
    while stack:  # every integer within [-2**63, 2**64), every string valid Unicode
        item, where = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if _SURROGATE.search(k):
                    raise error(f"{where}: a key holds an unpaired surrogate (not valid Unicode)")
                stack.append((v, f"{where}.{k}"))
        elif isinstance(item, str):
            if _SURROGATE.search(item):
                raise error(f"{where}: a string holds an unpaired surrogate (not valid Unicode)")
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
        elif type(item) is int and not (JSON_INT_RANGE[0] <= item < JSON_INT_RANGE[1]):
            raise error(f"{where}: integer with {len(str(abs(item)))} digits is outside [-2**63, 2**64)")
    return value


# ------------------------------------------------------------------------------------------ container
def parse_container(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, str], int, dict[str, tuple[int, int]]]:
    """(tensors, metadata, data_start, offsets) of a safetensors file, validated as the spec requires;
    ``offsets`` maps each tensor name to its [begin, end) byte range in the data buffer."""
    if len(blob) < 8:
        raise ContainerError(f"file of {len(blob)} bytes is too short for the 8-byte safetensors header length")
    header_len = int.from_bytes(blob[:8], "little")
    if header_len > MAX_HEADER_BYTES:
        raise LimitError(f"safetensors header claims {header_len} bytes, over the {MAX_HEADER_BYTES}-byte limit")
    if 8 + header_len > len(blob):
        raise ContainerError(f"safetensors header claims {header_len} bytes; only {len(blob) - 8} follow the length")
    try:
        text = blob[8 : 8 + header_len].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContainerError(f"safetensors header is not valid UTF-8 JSON: {exc}") from None
    entries = _strict_json(text, "safetensors header", ContainerError, "is not valid UTF-8 JSON")
    if not isinstance(entries, dict):
        raise ContainerError(f"safetensors header must be a JSON object, not {type(entries).__name__}")
    metadata = entries.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or any(not isinstance(v, str) for v in metadata.values()):
        raise ContainerError("safetensors __metadata__ must be an object of string values")
    if len(entries) > MAX_TENSORS:
        raise LimitError(f"{len(entries)} tensors declared, over the limit of {MAX_TENSORS}")
    data_start = 8 + header_len
    data_len = len(blob) - data_start
    tensors, spans = {}, []
    for name, entry in entries.items():
        if not isinstance(entry, dict) or sorted(entry) != ["data_offsets", "dtype", "shape"]:
            raise ContainerError(f"tensor {name!r}: entry must have exactly dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
            raise ContainerError(f"tensor {name!r}: unsupported dtype {dtype!r}")
        if not (isinstance(shape, list) and len(shape) <= MAX_NDIM and all(type(d) is int and d >= 0 for d in shape)):
            raise ContainerError(
                f"tensor {name!r}: shape must be at most {MAX_NDIM} non-negative integers, found {shape!r}"
            )
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise ContainerError(f"tensor {name!r}: data_offsets must be two integers, found {offsets!r}")
        begin, end = offsets
        if begin < 0 or end < begin or end > data_len:
            raise ContainerError(f"tensor {name!r}: data_offsets {offsets} outside the {data_len}-byte data buffer")
        np_dtype = np.dtype(SAFETENSORS_DTYPES[dtype])
        need = math.prod(shape) * np_dtype.itemsize
        if end - begin != need:
            raise ContainerError(f"tensor {name!r}: {end - begin} bytes for shape {shape} {dtype}, expected {need}")
        spans.append((begin, end, name))
        raw = blob[data_start + begin : data_start + end]
        tensors[name] = np.frombuffer(raw, dtype=np_dtype).reshape(shape)
    cursor = 0
    for begin, end, name in sorted(spans, key=lambda s: (s[0], s[1])):
        if begin < cursor:
            raise ContainerError(f"tensor {name!r} overlaps the previous tensor: the data buffer must be tiled exactly")
        if begin > cursor:
            raise ContainerError(
                f"tensor {name!r} leaves a hole at byte {cursor}: the data buffer must be tiled exactly"
            )
        cursor = end
    if cursor != data_len:
        raise ContainerError(f"{data_len - cursor} trailing bytes after the last tensor")
    return tensors, metadata, data_start, {name: (begin, end) for begin, end, name in spans}


# ------------------------------------------------------------------------------------------ generator
def philox4x32_10(counter: tuple, key: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Philox4x32-10 on arrays: counter = 4 uint64 arrays (or ints) of 32-bit words, key = 2 ints."""
    lo32 = np.uint64(0xFFFFFFFF)
    x = [np.asarray(c, dtype=np.uint64) for c in counter]
    k0, k1 = key
    for r in range(PHILOX_ROUNDS):
        if r:  # key schedule: bump before every round but the first
            k0, k1 = (k0 + PHILOX_W[0]) & 0xFFFFFFFF, (k1 + PHILOX_W[1]) & 0xFFFFFFFF
        prod0 = x[0] * np.uint64(PHILOX_M[0])  # both factors < 2**32: exact in uint64
        prod1 = x[2] * np.uint64(PHILOX_M[1])
        x = [
            (prod1 >> np.uint64(32)) ^ x[1] ^ np.uint64(k0),
            prod1 & lo32,
            (prod0 >> np.uint64(32)) ^ x[3] ^ np.uint64(k1),
            prod0 & lo32,
        ]
    return tuple(x)


def _words(seed: int, stream: int, first: int, count: int) -> tuple[np.ndarray, ...]:
    index = np.arange(first, first + count, dtype=np.uint64)
    counter = (
        index & np.uint64(0xFFFFFFFF),
        index >> np.uint64(32),
        np.full(count, stream & 0xFFFFFFFF, dtype=np.uint64),
        np.full(count, stream >> 32, dtype=np.uint64),
    )
    return philox4x32_10(counter, (seed & 0xFFFFFFFF, seed >> 32))


def unit_values(seed: int, stream: int, count: int, distribution: str) -> np.ndarray:
    """Elements 0..count-1 of ``stream`` mapped to float32 unit values."""
    out = np.empty(count, dtype=np.float32)
    for first in range(0, count, CHUNK):
        n = min(CHUNK, count - first)
        w = [a.astype(np.int64) for a in _words(seed, stream, first, n)]
        if distribution == "normal":
            total = (w[0] >> 8) + (w[1] >> 8) + (w[2] >> 8) + (w[3] >> 8) - 2 * (2**24 - 1)
            out[first : first + n] = (total.astype(np.float64) * C_NORMAL).astype(np.float32)
        elif distribution == "uniform":
            odd = 2 * (w[0] >> 8) + 1 - 2**24
            out[first : first + n] = (odd.astype(np.float64) * C_UNIFORM).astype(np.float32)
        else:  # signed_constant
            out[first : first + n] = np.where(w[0] >= 2**31, np.float32(-1.0), np.float32(1.0))
    return out


def _permutation(seed: int, stream: int, length: int) -> np.ndarray:
    """range(length) ordered by (Philox word 0, index): a stable sort by the 32-bit key."""
    chunks = [_words(seed, stream, f, min(CHUNK, length - f))[0] for f in range(0, length, CHUNK)]
    keys = np.concatenate(chunks or [np.zeros(0, np.uint64)])
    return np.lexsort((np.arange(length), keys))


# ------------------------------------------------------------------------------------------ masks
def _decode_raw(data: np.ndarray, n: int, ones: int, name: str) -> np.ndarray:
    if data.size != (n + 7) // 8:
        raise ShapeError(f"layer {name!r}: raw mask needs {(n + 7) // 8} bytes for {n} weights, found {data.size}")
    bits = np.unpackbits(data)  # most significant bit first
    if bits[n:].any():
        raise ShapeError(f"layer {name!r}: raw mask padding bits after weight {n} must be zero")
    mask = bits[:n].astype(bool)
    if int(mask.sum()) != ones:
        raise ShapeError(f"layer {name!r}: header says {ones} kept weights, the raw mask has {int(mask.sum())}")
    return mask


def _decode_rice(data: np.ndarray, n: int, ones: int, k: int, invert: bool, name: str) -> np.ndarray:
    """One codeword at a time: unary quotient (ones ended by a zero), then k remainder bits."""
    length = data.size * 8
    if ones * (k + 1) > length:  # every codeword has at least k + 1 bits: refuse before allocating
        raise ShapeError(
            f"layer {name!r}: {ones} rice codewords need at least {ones * (k + 1)} bits, the stream has {length}"
        )
    if ones == 0 and data.size:
        raise ShapeError(f"layer {name!r}: an empty rice stream (ones 0) must have no bytes, found {data.size}")
    bits = np.unpackbits(data).tolist()
    zeros = np.flatnonzero(np.unpackbits(data) == 0).tolist()
    x = np.zeros(n, dtype=bool)
    cursor, z, position = 0, 0, -1
    for _ in range(ones):
        while z < len(zeros) and zeros[z] < cursor:
            z += 1
        if z == len(zeros) or zeros[z] + 1 + k > length:
            raise ShapeError(f"layer {name!r}: the rice stream ends inside one of its {ones} codewords")
        stop = zeros[z]
        gap = stop - cursor
        for bit in bits[stop + 1 : stop + 1 + k]:
            gap = (gap << 1) | bit
        position += gap + 1
        if position >= n:
            raise ShapeError(f"layer {name!r}: a rice codeword points past weight {n}")
        x[position] = True
        cursor = stop + 1 + k
    if length - cursor >= 8 or any(bits[cursor:]):
        raise ShapeError(
            f"layer {name!r}: {length - cursor} bits after its last codeword, expected < 8 zero padding bits"
        )
    return ~x if invert else x


# ------------------------------------------------------------------------------------------ header
def _get(obj: dict, key: str, kind: str, where: str):
    """obj[key] checked against a JSON kind: int, number, str, bool, list, object."""
    if key not in obj:
        raise MissingKeyError(f"{where}: required key {key!r} is missing")
    value = obj[key]
    ok = {
        "int": type(value) is int,
        "number": type(value) in (int, float) and math.isfinite(value),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]
    if not ok:
        raise HeaderError(f"{where}.{key}: expected {kind}, found {json.dumps(value)[:80]}")
    return value


def _config(raw: dict) -> dict:
    unknown = sorted(set(raw) - set(CONFIG_DEFAULTS))
    if unknown:
        raise HeaderError(f"config: unknown MaskConfig field(s) {unknown}")
    c = {**CONFIG_DEFAULTS, **raw}
    d = c["density"]
    if type(d) not in (int, float) or not 0 < d <= 1:
        raise HeaderError(f"config: density must be a number in (0, 1], found {d!r}")
    if c["strategy"] not in STRATEGIES:
        raise HeaderError(f"config: strategy must be one of {STRATEGIES}, found {c['strategy']!r}")
    if c["strategy"] == "rp":
        r = c["ratio"]
        if type(r) not in (int, float) or not 0 < r <= 1:
            raise HeaderError(f"config: strategy 'rp' needs a ratio in (0, 1], found {r!r}")
    elif c["ratio"] is not None:
        raise HeaderError(f"config: ratio applies to strategy 'rp' only, found {c['ratio']!r}")
    if c["rp_mode"] not in RP_MODES:
        raise HeaderError(f"config: rp_mode must be one of {RP_MODES}, found {c['rp_mode']!r}")
    if c["distribution"] not in DISTRIBUTIONS:
        raise HeaderError(f"config: distribution must be one of {DISTRIBUTIONS}, found {c['distribution']!r}")
    if type(c["seed"]) is not int or not 0 <= c["seed"] < 2**63:
        raise HeaderError(f"config: seed must be an integer in [0, 2**63), found {c['seed']!r}")
    for flag in ("rescale", "learn_values", "train_norm", "train_bias", "train_other"):
        if not isinstance(c[flag], bool):
            raise HeaderError(f"config: {flag} must be a boolean, found {c[flag]!r}")
    if c["learn_values"] and c["strategy"] not in ("mp", "rp"):
        raise HeaderError("config: learn_values applies to strategies 'mp' and 'rp' only")
    if type(c["version"]) is not int or c["version"] != 1:
        raise HeaderError(f"config: MaskConfig version must be 1, found {c['version']!r}")
    return c


def expected_banks(config: dict, shapes: list[tuple[int, ...]]) -> tuple[list[dict], list[int]]:
    """The banks (index, size, length, tiling) a strategy makes, and each layer's bank."""
    sizes = [math.prod(s) for s in shapes]
    strategy = config["strategy"]
    if strategy == "dense":
        banks = [{"index": i, "size": n, "length": n, "tiling": "none"} for i, n in enumerate(sizes)]
        return banks, list(range(len(sizes)))
    if strategy == "onelayer":
        first_of: dict[tuple, int] = {}
        for s in shapes:
            first_of.setdefault(s, len(first_of))
        banks = [
            {"index": b, "size": math.prod(s), "length": math.prod(s), "tiling": "none"} for s, b in first_of.items()
        ]
        return banks, [first_of[s] for s in shapes]
    n_max = max(sizes)
    if strategy == "mp":
        return [{"index": 0, "size": n_max, "length": n_max, "tiling": "none"}], [0] * len(sizes)
    size = min(math.floor(n_max * float(config["ratio"])) + 1, n_max)  # product in binary64, then floor
    return [{"index": 0, "size": size, "length": n_max, "tiling": config["rp_mode"]}], [0] * len(sizes)


def kaiming_scale(shape) -> float:
    """float32(sqrt(2 / prod(shape[1:]))): the scale writers use (readers take the header's)."""
    return float(np.float32(math.sqrt(2.0 / max(1, math.prod(shape[1:])))))


def _dims(shape: list, what: str) -> list:
    """A shape's members must be JSON integers (HeaderError); their range is the caller's ShapeError."""
    if not all(type(d) is int for d in shape):
        raise HeaderError(f"{what}: every dimension must be an integer, found {shape!r}")
    return shape


def _key(module: str, attribute: str) -> str:
    """State-dict key of a module's attribute; the root module is named ""."""
    return f"{module}.{attribute}" if module else attribute


def _check_folded(folded: list, groups: dict[str, str]) -> None:
    """Unique strings; each module's weight and bias are floating entries (f32, f16, or v3's q8), its running
    statistics absent."""
    seen = set()
    for name in folded:
        if not isinstance(name, str) or name in seen:
            raise HeaderError(f"dense.folded_batchnorm: {name!r} is not a string or is a duplicate")
        seen.add(name)
        if any(groups.get(_key(name, a)) not in ("f32", "f16", Q8_GROUP) for a in ("weight", "bias")):
            raise HeaderError(f"dense.folded_batchnorm: {name!r} needs floating 'weight' and 'bias' entries")
        if any(_key(name, a) in groups for a in ("running_mean", "running_var")):
            raise HeaderError(f"dense.folded_batchnorm: {name!r} is folded, yet its running statistics are stored")


def _check_architecture(arch: dict) -> None:
    """kind, and the keys of its row in the spec's table 11.3 with their types."""
    kind = _get(arch, "kind", "str", "architecture")
    if kind not in ARCH_KINDS:
        raise HeaderError(f"architecture.kind must be one of {ARCH_KINDS}, found {kind!r}")
    if kind == "registry" and not isinstance(arch.get("name"), str):
        raise HeaderError("architecture.name: a registry reference needs a string")
    if kind == "import" and not (isinstance(arch.get("target"), str) and IMPORT_TARGET.fullmatch(arch["target"])):
        raise HeaderError(f"architecture.target must be 'module:function', found {arch.get('target')!r}")
    if kind != "none" and not isinstance(arch.get("kwargs"), dict):
        raise HeaderError(f"architecture.kwargs: a {kind} reference needs an object")


def _check_finite(header: dict, tensors: dict[str, np.ndarray], distribution: str) -> None:
    """Every weight finite: float32(B_b * |scale|) finite per layer, B_b the largest |unit value| of its bank."""
    bounds = []
    for bank in header["banks"]:
        if bank["stored"]:
            vector = tensors[f"{VALUES_PREFIX}{bank['index']}"]
            if not np.isfinite(vector).all():
                raise ShapeError(f"banks[{bank['index']}]: stored values hold a non-finite value")
            bounds.append(float(np.abs(vector).max()))
        else:
            bounds.append(UNIT_BOUND[distribution])
    for layer in header["layers"]:
        with np.errstate(over="ignore"):
            top = np.float32(bounds[layer["bank"]] * abs(layer["scale"]))  # exact binary64 product, one rounding
        if not np.isfinite(top):
            raise ShapeError(
                f"layer {layer['name']!r}: |scale| times the bank's largest unit value is not finite in float32"
            )


def _q8_rows(header: dict) -> list[tuple[str, list[int], int]]:
    """(key, shape, outliers) of each q8 row of the dense table, in table order (v3)."""
    return [(row[0], row[1], row[3]) for row in header["dense"]["tensors"] if row[2] == Q8_GROUP]


def _check_q8(header: dict, tensors: dict[str, np.ndarray]) -> None:
    """v3 row 23b: every lo and step finite; each row's outlier positions strictly increasing and below
    its number of values. ShapeError otherwise."""
    rows = _q8_rows(header)
    if not rows:
        return
    ranges, index, start = tensors[Q8_RANGE], tensors[Q8_INDEX], 0  # present: row 19 checked them
    for e, (key, shape, k) in enumerate(rows):
        lo, step = ranges[2 * e], ranges[2 * e + 1]
        if not (np.isfinite(lo) and np.isfinite(step)):
            raise ShapeError(f"dense tensor {key!r}: q8 lo {float(lo)} and step {float(step)} must both be finite")
        n = math.prod(shape)
        positions = [int(p) for p in index[start : start + k]]
        start += k
        for before, after in zip([-1, *positions], [*positions, n], strict=True):  # -1 < p_0 < ... < p_(k-1) < n
            if not before < after:
                raise ShapeError(
                    f"dense tensor {key!r}: q8 outlier positions must increase strictly and stay below {n}, "
                    f"found {positions[:10]}{' ...' if k > 10 else ''}"
                )


def _decode_q8(codes: np.ndarray, lo: np.floating, step: np.floating, positions: np.ndarray, values: np.ndarray,
               n: int) -> np.ndarray:
    """v3 section 4: n float32 values. At each outlier position its float16 value widened; every other
    position, in increasing order, the next code c as lo + c * step in float32 arithmetic, lo and step
    widened from float16 (c * step is exact in float32, so the sum is the exact value rounded once)."""
    lo32, step32 = np.float32(lo), np.float32(step)  # float16 -> float32 is exact
    grid = np.add(lo32, np.multiply(codes.astype(np.float32), step32, dtype=np.float32), dtype=np.float32)
    out = np.empty(n, dtype=np.float32)
    other = np.ones(n, dtype=bool)
    other[positions.astype(np.int64)] = False
    out[other] = grid  # n - k codes for the n - k positions that are no outlier, in order
    out[positions.astype(np.int64)] = values.astype(np.float32)
    return out


def derived_scales(config: dict, shapes: list[tuple[int, ...]]) -> list[float]:
    """Each layer's scale by the writer rule of v1 section 9.3 (what a version 2 header may leave out):
    its own Kaiming scale, or, for mp and rp without rescale, that of the first layer of N_max weights."""
    if config["strategy"] in ("mp", "rp") and not config["rescale"]:
        sizes = [math.prod(s) for s in shapes]
        largest = shapes[sizes.index(max(sizes))]  # index() finds the first
        return [kaiming_scale(largest)] * len(shapes)
    return [kaiming_scale(s) for s in shapes]


# top-level keys every version requires, and those version 2 derives when absent (v2 section 4)
REQUIRED_KEYS = ("producer", "generator", "config", "banks", "layers", "dense", "architecture", "fingerprint",
                 "checksums")
DERIVABLE_KEYS = ("generator", "banks")


def _check_header(header: dict, tensors: dict[str, np.ndarray], max_weights: int, version: int) -> tuple[dict, dict]:
    """Every rule of the spec's "Header validation", in its order (v1 section 12 rows 13 to 21; versions 2
    and 3 derive an absent derivable key at the row v2 section 4 names; version 3 adds dtype ``int8``,
    the ``q8`` rows and their four tensors to row 19, v3 sections 2 and 3). Returns the checked config
    and the header completed with the derived keys (a new object; ``header`` is left as stored)."""
    derive = version >= 2  # version 3 is version 2 but for the q8 leftovers
    for key in REQUIRED_KEYS:
        if key not in header and not (derive and key in DERIVABLE_KEYS):
            raise MissingKeyError(f"header: required key {key!r} is missing")
    full = dict(header)
    if "generator" in header:
        generator = _get(header, "generator", "object", "header")
        if _get(generator, "name", "str", "generator") != GENERATOR:
            raise HeaderError(f"generator.name must be {GENERATOR!r}, found {generator['name']!r}")
        seed = _get(generator, "seed", "int", "generator")
        config = _config(_get(header, "config", "object", "header"))
        if config["seed"] != seed:
            raise HeaderError(f"config.seed {config['seed']} differs from generator.seed {seed}")
    else:  # version 2, row 14: the generator is the format's, keyed by config.seed
        config = _config(_get(header, "config", "object", "header"))
        full["generator"] = {"name": GENERATOR, "seed": config["seed"]}

    layers = [dict(layer) if isinstance(layer, dict) else layer for layer in _get(header, "layers", "list", "header")]
    full["layers"] = layers
    if not layers:
        raise HeaderError("header.layers is empty: a .pemn file has at least one masked layer")
    names, total, stream_bytes = set(), 0, 0
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise HeaderError(f"layers[{i}]: expected an object")
        name = _get(layer, "name", "str", f"layers[{i}]")
        where = f"layer {name!r}"
        if name in names:
            raise HeaderError(f"{where}: duplicate layer name")
        names.add(name)
        shape = _dims(_get(layer, "shape", "list", where), f"{where}: shape")
        if not (2 <= len(shape) <= 5 and all(d > 0 for d in shape)):
            raise ShapeError(f"{where}: shape must be 2 to 5 positive integers, found {shape!r}")
        n = math.prod(shape)
        if n > MAX_LAYER_WEIGHTS:
            raise LimitError(f"{where}: {n} weights, over the per-layer limit of {MAX_LAYER_WEIGHTS}")
        total += n
        if _get(layer, "type", "str", where) not in LAYER_TYPES:
            raise HeaderError(f"{where}: type must be one of {LAYER_TYPES}, found {layer['type']!r}")
        if len(shape) != LAYER_NDIM[layer["type"]]:
            raise ShapeError(f"{where}: a {layer['type']} weight needs {LAYER_NDIM[layer['type']]} dimensions")
        if not (derive and "bank" not in layer):  # version 2: an absent bank is derived at row 18
            _get(layer, "bank", "int", where)
        if not (derive and "scale" not in layer):  # version 2: an absent scale is derived at row 18
            scale = _get(layer, "scale", "number", where)
            if float(np.float32(scale)) != scale:
                raise HeaderError(f"{where}: scale {scale!r} is not a float32 value")
        codec = _get(layer, "codec", "str", where)
        if codec not in CODECS:
            raise HeaderError(f"{where}: codec must be one of {CODECS}, found {codec!r}")
        ones = _get(layer, "ones", "int", where)
        if not 0 <= ones <= n:
            raise HeaderError(f"{where}: ones must be in [0, {n}], found {ones}")
        if codec == "rice":
            k = _get(layer, "rice_k", "int", where)
            if not 0 <= k <= MAX_RICE_K:
                raise HeaderError(f"{where}: rice parameter k must be in [0, {MAX_RICE_K}], found {k}")
            if not isinstance(layer.get("invert"), bool):
                raise HeaderError(f"{where}: the rice codec needs a boolean 'invert'")
        if derive and codec == "raw" and "bytes" not in layer:  # version 2: a raw stream's length is derived
            layer["bytes"] = (n + 7) // 8
        size = _get(layer, "bytes", "int", where)  # a rice layer's is never derived
        if size < 0:
            raise HeaderError(f"{where}: bytes must be >= 0, found {size}")
        if codec == "raw" and size != (n + 7) // 8:
            raise ShapeError(f"{where}: raw mask needs {(n + 7) // 8} bytes for {n} weights, found {size}")
        stream_bytes += size
    masks = tensors.get(MASKS_TENSOR)
    if masks is None:
        raise ShapeError(f"tensor {MASKS_TENSOR!r} is missing")
    if masks.dtype != np.uint8 or masks.ndim != 1 or masks.size != stream_bytes:
        raise ShapeError(
            f"tensor {MASKS_TENSOR!r} must be 1-D uint8 of {stream_bytes} bytes, "
            f"found {masks.dtype} {list(masks.shape)}"
        )
    if total > max_weights:
        raise LimitError(f"{total} masked weights in all, over this reader's limit of {max_weights}")

    shapes = [tuple(layer["shape"]) for layer in layers]
    want, bank_of = expected_banks(config, shapes)
    stored_rule = config["strategy"] == "rp" or config["learn_values"]  # v1 section 9.2
    if "banks" not in header:  # version 2, row 18: the banks section 9 derives
        full["banks"] = [{**spec, "stored": stored_rule} for spec in want]
    for layer, b, scale in zip(layers, bank_of, derived_scales(config, shapes), strict=True):
        layer.setdefault("bank", b)  # absent only in version 2 (checked at row 15)
        layer.setdefault("scale", scale)
    banks = _get(full, "banks", "list", "header")
    if len(banks) != len(want):
        raise HeaderError(f"header.banks: strategy {config['strategy']!r} makes {len(want)} banks, found {len(banks)}")
    for spec, bank in zip(want, banks, strict=True):  # same length: checked just above
        where = f"banks[{spec['index']}]"
        if not isinstance(bank, dict):
            raise HeaderError(f"{where}: expected an object")
        for key, value in spec.items():
            if key not in bank or type(bank[key]) is not type(value) or bank[key] != value:
                raise HeaderError(f"{where}.{key}: expected {value!r} for these layers, found {bank.get(key)!r}")
        stored = _get(bank, "stored", "bool", where)
        if stored != stored_rule:
            raise HeaderError(
                f"{where}.stored: values are stored exactly for strategy 'rp' and for learned values, found {stored}"
            )
        if stored:
            vector = tensors.get(f"{VALUES_PREFIX}{spec['index']}")
            if vector is None:
                raise ShapeError(f"{where}: stored value vector '{VALUES_PREFIX}{spec['index']}' is missing")
            if vector.dtype != np.float32 or vector.shape != (spec["size"],):
                raise ShapeError(
                    f"{where}: '{VALUES_PREFIX}{spec['index']}' must be float32 of shape [{spec['size']}], "
                    f"found {vector.dtype} {list(vector.shape)}"
                )
    for layer, b in zip(layers, bank_of, strict=True):  # expected_banks gives one bank per layer
        if layer["bank"] != b:
            raise HeaderError(
                f"layer {layer['name']!r}: bank must be {b} under strategy {config['strategy']!r}, "
                f"found {layer['bank']}"
            )

    dense = _get(header, "dense", "object", "header")
    dtypes = DENSE_DTYPES + ((INT8_DTYPE,) if version >= INT8_VERSION else ())  # v3 section 2, rule 5
    groups = sorted(DENSE_GROUPS) + ([Q8_GROUP] if version >= INT8_VERSION else [])
    if _get(dense, "dtype", "str", "dense") not in dtypes:
        raise HeaderError(f"dense.dtype must be one of {dtypes} in version {version}, found {dense['dtype']!r}")
    folded = _get(dense, "folded_batchnorm", "list", "dense")
    table = _get(dense, "tensors", "list", "dense")
    group_size: dict[str, int] = {}
    q8_rows: list[tuple[int, int]] = []  # (values, outliers) of each q8 row, in table order
    keys = set()
    masked_weights = {_key(layer["name"], "weight") for layer in layers}
    for i, item in enumerate(table):
        # a q8 row has four elements, every other row three (v3 section 2, rule 2)
        width = 4 if isinstance(item, list) and len(item) >= 3 and item[2] == Q8_GROUP else 3
        if not (isinstance(item, list) and len(item) == width and isinstance(item[0], str)
                and isinstance(item[1], list) and isinstance(item[2], str) and item[2] in groups):
            raise HeaderError(
                f"dense.tensors[{i}]: expected [key, shape, group] with group one of {groups}"
                + (f" (or [key, shape, {Q8_GROUP!r}, outliers])" if Q8_GROUP in groups else "")
                + f", found {json.dumps(item)[:120]}"
            )
        key, shape, group = item[:3]
        if key in keys:
            raise HeaderError(f"dense.tensors: duplicate key {key!r}")
        if key in masked_weights:
            raise HeaderError(f"dense.tensors: {key!r} is a masked layer's weight (stored as its mask)")
        keys.add(key)
        _dims(shape, f"dense tensor {key!r}: shape")
        if group == "f16" and dense["dtype"] == "float32":
            raise HeaderError(f"dense tensor {key!r} is in group 'f16' but dense.dtype is 'float32'")
        if not (len(shape) <= MAX_NDIM and all(d >= 0 for d in shape)):
            raise ShapeError(
                f"dense tensor {key!r}: shape must be at most {MAX_NDIM} non-negative integers, found {shape!r}"
            )
        n = math.prod(shape)
        if group == Q8_GROUP:  # v3 section 2, rules 1, 3 and 4
            if dense["dtype"] != INT8_DTYPE:
                raise HeaderError(f"dense tensor {key!r} is in group 'q8' but dense.dtype is {dense['dtype']!r}")
            if n > Q8_MAX_VALUES:
                raise HeaderError(f"dense tensor {key!r}: a q8 entry holds at most {Q8_MAX_VALUES} values, found {n}")
            outliers = item[3]
            if type(outliers) is not int or not 0 <= outliers <= n:  # type(): a boolean is no count
                raise HeaderError(
                    f"dense tensor {key!r}: outliers must be an integer from 0 to {n}, found {json.dumps(outliers)}"
                )
            q8_rows.append((n, outliers))
            continue
        group_size[group] = group_size.get(group, 0) + n
    need = {DENSE_PREFIX + group: (DENSE_GROUPS[group], size) for group, size in group_size.items()}
    if q8_rows:  # v3 section 3: all four, of these lengths, even where a length is 0
        outliers = sum(k for _, k in q8_rows)
        need[Q8_CODES] = (Q8_DTYPES[Q8_CODES], sum(n - k for n, k in q8_rows))
        need[Q8_RANGE] = (Q8_DTYPES[Q8_RANGE], 2 * len(q8_rows))
        need[Q8_INDEX] = (Q8_DTYPES[Q8_INDEX], outliers)
        need[Q8_VALUE] = (Q8_DTYPES[Q8_VALUE], outliers)
    for name, (dtype, size) in need.items():
        array = tensors.get(name)
        if array is None or array.ndim != 1 or array.dtype != np.dtype(dtype) or array.size != size:
            found = "missing" if array is None else f"{array.dtype} {list(array.shape)}"
            raise ShapeError(f"tensor '{name}' must be 1-D {np.dtype(dtype)} of {size} entries, found {found}")

    _check_folded(folded, {item[0]: item[2] for item in table})

    producer = header["producer"]
    if not (isinstance(producer, dict) and isinstance(producer.get("name"), str)
            and isinstance(producer.get("version"), str)):
        raise HeaderError("producer must be an object {name: str, version: str}")
    _check_architecture(_get(header, "architecture", "object", "header"))
    fingerprint = _get(header, "fingerprint", "object", "header")
    if fingerprint.get("algorithm") != HASH or not isinstance(fingerprint.get("value"), str):
        raise HeaderError("fingerprint must be {'algorithm': 'sha256', 'value': <hex>}")
    checksums = _get(header, "checksums", "object", "header")
    if checksums.get("algorithm") != HASH or not isinstance(checksums.get("data"), str):
        raise HeaderError("checksums must be {'algorithm': 'sha256', 'data': <hex>}")
    for where, digest in (("fingerprint.value", fingerprint["value"]), ("checksums.data", checksums["data"])):
        if not HEX64.fullmatch(digest):
            raise HeaderError(f"{where}: a SHA-256 is written as 64 lowercase hex digits, found {digest[:80]!r}")
    if "provenance" in header:
        _get(header, "provenance", "object", "header")
    described = {MASKS_TENSOR} | set(need)  # the dense group tensors, and v3's q8 tensors when a q8 row exists
    described |= {f"{VALUES_PREFIX}{b['index']}" for b in banks if b["stored"]}
    if version >= 2:  # row 21: the deflated header is a tensor of versions 2 and 3 only
        described.add(HEADER_TENSOR)
    extra = sorted(set(tensors) - described)
    if extra:
        raise HeaderError(f"tensors not described by the header: {extra}")
    return config, full


# ------------------------------------------------------------------------------------------ read
def _require(metadata: dict[str, str], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key not in metadata:
            raise MissingKeyError(f"metadata key {key!r} is missing")


def _inflate_header(metadata: dict[str, str], tensors: dict[str, np.ndarray]) -> bytes:
    """Version 2, rows 11b to 11d: the declared length, the ``header`` tensor, then its one raw DEFLATE
    stream inflated to exactly that length (never more than one byte beyond it is produced)."""
    declared = metadata[KEY_HEADER_BYTES]
    if not re.fullmatch(r"[0-9]{1,9}", declared):
        raise HeaderError(f"{KEY_HEADER_BYTES} must be 1 to 9 ASCII digits, found {declared[:40]!r}")
    size = int(declared)
    if size > MAX_HEADER_BYTES:
        raise LimitError(f"{KEY_HEADER_BYTES} declares {size} bytes, over the {MAX_HEADER_BYTES}-byte limit")
    block = tensors.get(HEADER_TENSOR)
    if block is None:
        raise ShapeError(f"tensor {HEADER_TENSOR!r} is missing: a version 2 file keeps its PEMN header there")
    if block.dtype != np.uint8 or block.ndim != 1:
        raise ShapeError(f"tensor {HEADER_TENSOR!r} must be 1-D uint8, found {block.dtype} {list(block.shape)}")
    inflater = zlib.decompressobj(-15)  # raw DEFLATE: no zlib or gzip wrapper
    try:
        text = inflater.decompress(block.tobytes(), size + 1)  # at most one byte more than declared
    except zlib.error as exc:
        raise HeaderError(f"tensor {HEADER_TENSOR!r} is not a raw DEFLATE stream: {exc}") from None
    if len(text) > size:
        raise HeaderError(
            f"tensor {HEADER_TENSOR!r} inflates to more than the {size} bytes {KEY_HEADER_BYTES} declares"
        )
    if not inflater.eof:
        raise HeaderError(f"tensor {HEADER_TENSOR!r} ends before its final DEFLATE block: the stream is cut short")
    if inflater.unused_data:
        raise HeaderError(
            f"tensor {HEADER_TENSOR!r} has {len(inflater.unused_data)} bytes after its final DEFLATE block"
        )
    if len(text) != size:
        raise HeaderError(f"tensor {HEADER_TENSOR!r} inflates to {len(text)} bytes; {KEY_HEADER_BYTES} declares {size}")
    return text


def _header_object(metadata: dict[str, str], tensors: dict[str, np.ndarray]) -> tuple[dict, int]:
    """Rows 6 to 12 of every version: (the PEMN header object as stored, the format version)."""
    if metadata.get(KEY_FORMAT) != FORMAT_NAME:
        raise HeaderError(
            f"not a .pemn file: metadata {KEY_FORMAT!r} is {metadata.get(KEY_FORMAT)!r}, expected {FORMAT_NAME!r}"
        )
    _require(metadata, (KEY_VERSION,))
    version_text = metadata[KEY_VERSION]
    if not re.fullmatch(r"[0-9]{1,6}", version_text):
        raise HeaderError(f"{KEY_VERSION} must be a decimal integer of ASCII digits, found {version_text!r}")
    version = int(version_text)
    if version > FORMAT_VERSION:  # before anything else of the file is read: a newer header may be anything
        raise VersionError(
            f"file is .pemn format version {version}; this reader understands versions "
            f"{', '.join(map(str, FORMAT_VERSIONS))}: a newer reader is needed"
        )
    if version < 1:
        raise HeaderError(f"{KEY_VERSION} must be >= 1, found {version_text!r}")
    if version == 1:  # v1 row 7, then the header text from the metadata
        _require(metadata, (KEY_HEADER, KEY_HEADER_SHA256))
        text = metadata[KEY_HEADER]
        encoded = text.encode("utf-8")  # no surrogates: refused in parse_container
        where = KEY_HEADER
    else:  # v2 row 11a (version 3 alike), then the header text inflated from the header tensor
        _require(metadata, (KEY_HEADER_BYTES, KEY_HEADER_SHA256))
        encoded = _inflate_header(metadata, tensors)
        where = f"the PEMN header in tensor {HEADER_TENSOR!r}"
    if not HEX64.fullmatch(metadata[KEY_HEADER_SHA256]):  # malformed, before any hash is compared
        raise HeaderError(f"{KEY_HEADER_SHA256} is not 64 lowercase hex digits: {metadata[KEY_HEADER_SHA256][:80]!r}")
    digest = hashlib.sha256(encoded).hexdigest()
    if digest != metadata[KEY_HEADER_SHA256]:
        raise ChecksumError(
            f"PEMN header checksum mismatch: stored {metadata[KEY_HEADER_SHA256]!r}, computed {digest!r}"
        )
    if version >= 2:
        try:
            text = encoded.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HeaderError(f"{where} is not valid UTF-8: {exc}") from None
    header = _strict_json(text, where, HeaderError)
    if not isinstance(header, dict):
        raise HeaderError(f"{where} must be a JSON object, found {type(header).__name__}")
    return header, version


def read(source, *, max_weights: int = DEFAULT_MAX_WEIGHTS, verify: bool = True) -> dict:
    """Read, validate and decode a `.pemn` file of version 1, 2 or 3 (a path or its bytes).

    Returns a dict: ``header`` (the decoded PEMN header, completed with the keys versions 2 and 3 derive),
    ``stored_header`` (the header object as stored), ``version`` (the format version), ``metadata``
    (the safetensors metadata), ``weights`` (layer name -> float32 materialized weight), ``masks``
    (layer name -> bool array), ``dense`` (state-dict key -> array as stored; a v3 ``q8`` entry decoded
    to float32, formats/pemn-v3.md section 4), ``values`` (bank index -> stored float32 vector).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        blob = bytes(source)
    else:
        with open(os.fspath(source), "rb") as fh:
            blob = fh.read()
    tensors, metadata, data_start, offsets = parse_container(blob)
    stored, version = _header_object(metadata, tensors)
    config, header = _check_header(stored, tensors, max_weights, version)
    data, h = memoryview(blob)[data_start:], hashlib.sha256()
    if version >= 2:  # v2 section 5: the data buffer with the header tensor's bytes cut out
        begin, end = offsets[HEADER_TENSOR]
        h.update(data[:begin])
        h.update(data[end:])
    else:
        h.update(data)
    data_digest = h.hexdigest()
    if data_digest != header["checksums"]["data"]:
        raise ChecksumError(f"data checksum mismatch: stored {header['checksums']['data']}, computed {data_digest}")
    _check_finite(header, tensors, config["distribution"])
    if version >= INT8_VERSION:  # v3 row 23b
        _check_q8(header, tensors)

    layers = header["layers"]
    masks, start = {}, 0
    for layer in layers:  # every mask before any value is generated
        n = math.prod(layer["shape"])
        stream = tensors[MASKS_TENSOR][start : start + layer["bytes"]]
        start += layer["bytes"]
        if layer["codec"] == "raw":
            flat = _decode_raw(stream, n, layer["ones"], layer["name"])
        else:
            flat = _decode_rice(stream, n, layer["ones"], layer["rice_k"], layer["invert"], layer["name"])
        masks[layer["name"]] = flat.reshape(layer["shape"])

    seed, distribution = config["seed"], config["distribution"]
    tables, values = [], {}
    for bank in header["banks"]:
        if bank["stored"]:
            unit = np.array(tensors[f"{VALUES_PREFIX}{bank['index']}"], dtype=np.float32)
            values[bank["index"]] = unit
        else:
            unit = unit_values(seed, bank["index"], bank["size"], distribution)
        if bank["tiling"] == "copy":
            unit = unit[np.arange(bank["length"]) % bank["size"]]
        elif bank["tiling"] == "rand":
            unit = unit[_permutation(seed, PERMUTATION_STREAM_BASE + bank["index"], bank["length"]) % bank["size"]]
        tables.append(unit)
    weights = {}
    for layer in layers:
        n = math.prod(layer["shape"])
        scaled = np.multiply(tables[layer["bank"]][:n], np.float32(layer["scale"]), dtype=np.float32)
        mask = masks[layer["name"]].astype(np.float32)
        weights[layer["name"]] = np.multiply(scaled.reshape(layer["shape"]), mask, dtype=np.float32)
    if verify:
        h = hashlib.sha256()
        for layer in layers:
            h.update(weights[layer["name"]].astype("<f4").tobytes())
        if h.hexdigest() != header["fingerprint"]["value"]:
            raise ChecksumError(
                f"regenerated weights do not match the fingerprint: stored {header['fingerprint']['value']}, "
                f"computed {h.hexdigest()}"
            )

    dense: dict[str, np.ndarray] = {}
    offset: dict[str, int] = {}
    q8_row = 0  # v3: the q8 rows decoded so far, and their codes and outliers
    codes_at = outliers_at = 0
    for row in header["dense"]["tensors"]:
        key, shape, group = row[:3]
        n = math.prod(shape)
        if group == Q8_GROUP:
            k = row[3]
            lo, step = tensors[Q8_RANGE][2 * q8_row : 2 * q8_row + 2]
            flat = _decode_q8(tensors[Q8_CODES][codes_at : codes_at + n - k], lo, step,
                              tensors[Q8_INDEX][outliers_at : outliers_at + k],
                              tensors[Q8_VALUE][outliers_at : outliers_at + k], n)
            dense[key] = flat.reshape(shape)
            q8_row, codes_at, outliers_at = q8_row + 1, codes_at + n - k, outliers_at + k
            continue
        at = offset.get(group, 0)
        dense[key] = np.array(tensors[DENSE_PREFIX + group][at : at + n]).reshape(shape)
        offset[group] = at + n
    return {
        "header": header, "stored_header": stored, "version": version, "metadata": metadata, "weights": weights,
        "masks": masks, "dense": dense, "values": values,
    }


def file_identity(source) -> str:
    """The identity of a valid file (v2 section 3.1; a path, its bytes or ``read``'s result): SHA-256 of
    ``pemn-identity:<version>:<pemn.header_sha256>:<checksums.data>`` in ASCII, lowercase hex. It does not
    depend on how the header text was deflated, nor on the safetensors JSON layout or extra metadata."""
    result = source if isinstance(source, dict) else read(source)
    text = f"pemn-identity:{result['version']}:{result['metadata'][KEY_HEADER_SHA256]}:"
    text += result["header"]["checksums"]["data"]
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def summary(result: dict) -> dict:
    """A JSON-ready digest of ``read``'s result: layers, shapes, kept counts and weight hashes."""
    h = result["header"]
    return {
        "producer": h["producer"],
        "strategy": h["config"].get("strategy", CONFIG_DEFAULTS["strategy"]),
        "architecture": h["architecture"].get("kind"),
        "fingerprint": h["fingerprint"]["value"],
        "identity": file_identity(result),
        "layers": [
            {
                "name": layer["name"],
                "shape": layer["shape"],
                "codec": layer["codec"],
                "kept": int(result["masks"][layer["name"]].sum()),
                "sha256": hashlib.sha256(result["weights"][layer["name"]].astype("<f4").tobytes()).hexdigest(),
            }
            for layer in h["layers"]
        ],
        "dense": {key: {"dtype": str(a.dtype), "shape": list(a.shape)} for key, a in result["dense"].items()},
    }


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    status, out = 0, {}
    for path in argv:
        try:
            out[path] = summary(read(path))
        except (FormatError, OSError) as exc:
            out[path] = {"error": type(exc).__name__, "message": str(exc)}
            status = 1
    print(json.dumps(out, indent=1, sort_keys=True))
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
