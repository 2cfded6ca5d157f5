"""The safetensors container, written and read by hand so that both are deterministic and strict.

Layout (safetensors): 8-byte little-endian header length N, N bytes of JSON (padded with spaces to a
multiple of 8), then the data buffer. Every tensor entry has ``dtype``, ``shape`` and
``data_offsets`` [begin, end) into the buffer; entries must tile the buffer exactly (no holes, no
overlap). The writer orders tensors by descending item size then name and serializes JSON with
sorted keys, so the same tensors and metadata always give the same bytes.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ContainerError, LimitError
from .constants import MAX_HEADER_BYTES, MAX_NDIM, MAX_TENSORS, ST_DTYPES
from .sniff import wrong_file_error

__all__ = [
    "MAX_JSON_DEPTH",
    "atomic_write",
    "container_order",
    "data_buffer",
    "data_buffer_without",
    "decode_container",
    "encode_container",
    "strict_json",
]

_NUMPY_TO_ST = {np.dtype(v).str if v else None: k for k, v in ST_DTYPES.items() if v}
_NUMPY_TO_ST[np.dtype("u1").str] = "U8"
_NUMPY_TO_ST[np.dtype("i1").str] = "I8"
_NUMPY_TO_ST[np.dtype("?").str] = "BOOL"


def _st_dtype(array: np.ndarray) -> str:
    key = array.dtype.newbyteorder("<").str if array.dtype.byteorder not in ("|",) else array.dtype.str
    if key not in _NUMPY_TO_ST:
        raise ContainerError(f"cannot store dtype {array.dtype} in a safetensors container")
    return _NUMPY_TO_ST[key]


def container_order(tensors: dict[str, np.ndarray]) -> list[str]:
    """The order of tensors in the data buffer: descending item size (keeps alignment), then name."""
    return sorted(tensors, key=lambda name: (-tensors[name].dtype.itemsize, name))


MAX_JSON_DEPTH = 64  # nesting of arrays/objects a reader accepts in any JSON of the file


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


_NONZERO_DIGIT = re.compile(r"[1-9]")


def _binary64(literal: str) -> float:
    """A JSON number with a fraction or an exponent, as its binary64 value (the decimal rounded to nearest,
    ties to even: Python's ``float``). Refused when it overflows, or underflows: a nonzero decimal (a digit
    1 to 9 before the exponent) whose binary64 value is zero (formats/pemn-v1.md section 6.1)."""
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number {literal[:40]} overflows binary64")
    if value == 0.0 and _NONZERO_DIGIT.search(re.split("[eE]", literal, maxsplit=1)[0]):
        raise ValueError(f"number {literal[:40]} underflows binary64 to zero")
    return value


def strict_json(text: str, error: type[Exception], what: str):
    """Parse JSON strictly: no NaN/Infinity, no duplicate keys, depth <= 64, 64-bit integers, numbers that
    neither overflow nor underflow binary64 (section 6.1), no byte order mark (it is not JSON whitespace).

    Every failure, including Python's own limits (recursion, integer digits), becomes ``error``.
    """
    try:
        value = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys, parse_float=_binary64)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise error(f"{what} is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from exc
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise error(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise error(f"{what} holds an unpaired surrogate (not valid Unicode)") from exc
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not (-(1 << 63) <= item < 1 << 64):
                raise error(f"{what} holds an integer outside [-2**63, 2**64)")
    return value


def encode_container(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """Serialize numpy arrays and string metadata to safetensors bytes, deterministically."""
    order = container_order(tensors)
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in order:
        array = np.asarray(tensors[name]).copy(order="C")  # keeps 0-d shapes, unlike ascontiguousarray
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        offsets = [offset, offset + len(data)]
        header[name] = {"dtype": _st_dtype(array), "shape": list(array.shape), "data_offsets": offsets}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), sort_keys=False, ensure_ascii=True).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def decode_container(
    blob: bytes | memoryview, *, name: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse and validate safetensors bytes; return read-only numpy views and the metadata.

    A file that is another kind altogether (a PyTorch checkpoint, text, a file cut short, see
    ``sniff.wrong_file_error``) is refused in one line naming what it is, as a ``ContainerError``:
    ``<name>: a text file ("hello"); expected a .pemn file ...`` (``name`` None: "the data").
    """
    try:
        return _decode_container(blob)
    except (ContainerError, LimitError) as exc:
        better = wrong_file_error(exc, blob, name)
        if better is None:
            raise
        raise better from exc


def _decode_container(blob: bytes | memoryview) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    blob = memoryview(blob)
    if len(blob) < 8:
        raise ContainerError(f"file is {len(blob)} bytes: too short for a safetensors header length (8 bytes)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER_BYTES:
        raise LimitError(f"safetensors header claims {n} bytes; the limit is {MAX_HEADER_BYTES}")
    if 8 + n > len(blob):
        raise ContainerError(
            f"safetensors header claims {n} bytes but the file has only {len(blob) - 8} after the length"
        )
    try:
        text = bytes(blob[8 : 8 + n]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContainerError(f"safetensors header is not valid UTF-8: {exc}") from exc
    header = strict_json(text, ContainerError, "safetensors header")
    if not isinstance(header, dict):
        raise ContainerError(f"safetensors header must be a JSON object, found {type(header).__name__}")
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ContainerError("safetensors __metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise LimitError(f"file declares {len(header)} tensors; the limit is {MAX_TENSORS}")
    buffer = blob[8 + n :]
    spans, tensors = [], {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ContainerError(f"tensor {name!r}: entry must have exactly dtype, shape and data_offsets")
        dtype_name, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype_name not in ST_DTYPES or ST_DTYPES[dtype_name] is None:
            raise ContainerError(f"tensor {name!r}: unsupported dtype {dtype_name!r}")
        if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
            raise ContainerError(
                f"tensor {name!r}: shape must be a list of at most {MAX_NDIM} non-negative integers, found {shape!r}"
            )
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise ContainerError(f"tensor {name!r}: data_offsets must be two integers, found {offsets!r}")
        begin, end = offsets
        dtype = np.dtype(ST_DTYPES[dtype_name])
        expected = math.prod(shape) * dtype.itemsize
        if not (0 <= begin <= end <= len(buffer)):
            raise ContainerError(f"tensor {name!r}: data_offsets {offsets} outside the {len(buffer)}-byte data buffer")
        if end - begin != expected:
            raise ContainerError(
                f"tensor {name!r}: {end - begin} bytes of data for shape {shape} {dtype_name} (expected {expected})"
            )
        spans.append((begin, end, name))
        tensors[name] = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(shape)
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            kind = "overlaps the previous tensor" if begin < position else f"leaves a hole at byte {position}"
            raise ContainerError(f"tensor {name!r} {kind}: the data buffer must be tiled exactly")
        position = end
    if position != len(buffer):
        raise ContainerError(f"data buffer has {len(buffer) - position} trailing bytes not owned by any tensor")
    return tensors, metadata


def data_buffer(blob: bytes | memoryview) -> memoryview:
    """The data buffer of a container already accepted by ``decode_container``."""
    blob = memoryview(blob)
    (n,) = struct.unpack("<Q", blob[:8])
    return blob[8 + n :]


def data_buffer_without(blob: bytes | memoryview, name: str) -> tuple[memoryview, memoryview]:
    """The data buffer of an accepted container with tensor ``name``'s bytes cut out: the parts before
    and after them (the whole buffer and an empty part when there is no such tensor)."""
    buffer = data_buffer(blob)
    (n,) = struct.unpack("<Q", memoryview(blob)[:8])
    entry = json.loads(bytes(memoryview(blob)[8 : 8 + n])).get(name)
    if entry is None:
        return buffer, buffer[:0]
    begin, end = entry["data_offsets"]
    return buffer[:begin], buffer[end:]


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Readers see either the old file or the complete new one, never a partial file; on any error the
    temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
