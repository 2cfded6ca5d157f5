"""Reading `.pemn` files without torch: ``decode(data)``, ``read_pemn(path)``, masks, regenerated weights.

``decode`` parses and validates everything the file declares *before* any large allocation, in the
order of formats/pemn-v1.md section 12 (version 2: formats/pemn-v2.md, which reads its header from
the ``header`` tensor): the container tiling, the metadata and header hash, the typed
header (``FileHeader.from_json``: shapes, limits, banks, codecs), the tensors the header describes,
the data checksum and the finite-values rule (rows 1 to 23). Every path that materializes weights
(``decode_weights``, ``streaming.stream_weights`` for ``pemn.load``) starts from ``decode``, so none
can produce a non-finite weight. ``decode_weights`` then rebuilds the materialized weights
(``values * scale * mask``) in numpy, bit-exactly.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .. import rng
from ..errors import ChecksumError, HeaderError, LimitError, MissingKeyError, ShapeError, VersionError
from ..strategies import bank_index_map
from .codecs import decode_mask
from .constants import (
    DENSE_GROUPS,
    DENSE_PREFIX,
    FORMAT_NAME,
    FORMAT_VERSIONS,
    HEADER_TENSOR,
    HEX_DIGEST,
    IDENTITY_PREFIX,
    KEY_FORMAT,
    KEY_HEADER,
    KEY_HEADER_BYTES,
    KEY_HEADER_SHA256,
    KEY_VERSION,
    MASKS_TENSOR,
    MAX_HEADER_BYTES,
    Q8_GROUP,
    Q8_INDEX,
    Q8_RANGE,
    Q8_TENSORS,
    VALUES_PREFIX,
)
from .container import data_buffer_without, decode_container, strict_json
from .deflate import inflate
from .header import DEFAULT_MAX_WEIGHTS, FileHeader
from .payload import PemnFile
from .sniff import wrong_file_error

__all__ = [
    "DEFAULT_MAX_WEIGHTS",
    "PemnFile",
    "bank_tables",
    "check_fingerprint",
    "decode",
    "decode_masks",
    "decode_weights",
    "file_identity",
    "read_pemn",
    "verify_fingerprint",
    "weights_fingerprint",
]


def _require_metadata(metadata: dict[str, str], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key not in metadata:
            raise MissingKeyError(f"metadata key {key!r} is missing")


def _named(name: str | None, text: str) -> str:
    """``<name>: <text>``: a checksum error that names the file it was read from (``name`` None: bytes)."""
    return text if name is None else f"{name}: {text}"


def _parse_metadata(metadata: dict[str, str], tensors: Mapping[str, np.ndarray],
                    name: str | None = None) -> tuple[dict, int]:
    """Rows 6 to 12: the format name, the version and the PEMN header object with its hash checked
    (a checksum mismatch names the file, ``name``).

    Version 1 reads the header text from the metadata; version 2 inflates it from the ``header``
    tensor (at most ``pemn.header_bytes`` bytes, declared before anything is inflated).
    """
    if metadata.get(KEY_FORMAT) != FORMAT_NAME:
        found = metadata.get(KEY_FORMAT)
        raise HeaderError(
            f"not a .pemn file: safetensors metadata {KEY_FORMAT!r} is {found!r}, expected {FORMAT_NAME!r}"
        )
    _require_metadata(metadata, (KEY_VERSION,))
    version_text = metadata[KEY_VERSION]
    if not (version_text.isascii() and version_text.isdigit()) or len(version_text) > 6:
        raise HeaderError(f"{KEY_VERSION} must be a decimal integer, found {version_text!r}")
    if int(version_text) > max(FORMAT_VERSIONS):
        raise VersionError(
            f"file is .pemn format version {int(version_text)}; this reader understands up to {max(FORMAT_VERSIONS)}: "
            "upgrade pemn-compress to read it"
        )
    version = int(version_text)
    if version < 1:
        raise HeaderError(f"{KEY_VERSION} must be >= 1, found {version_text}")
    if version == 1:
        _require_metadata(metadata, (KEY_HEADER, KEY_HEADER_SHA256))
        text, where = metadata[KEY_HEADER], KEY_HEADER
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise HeaderError(f"{KEY_HEADER} holds an unpaired surrogate: not valid UTF-8 text") from exc
    else:
        _require_metadata(metadata, (KEY_HEADER_BYTES, KEY_HEADER_SHA256))
        encoded, where = _inflate_header(metadata, tensors), f"the {HEADER_TENSOR!r} tensor"
    if not re.fullmatch(HEX_DIGEST, metadata[KEY_HEADER_SHA256]):
        found = metadata[KEY_HEADER_SHA256][:80]
        raise HeaderError(f"{KEY_HEADER_SHA256} must be 64 lowercase hex digits, found {found!r}")
    digest = hashlib.sha256(encoded).hexdigest()
    if digest != metadata[KEY_HEADER_SHA256]:
        raise ChecksumError(_named(
            name, f"PEMN header checksum mismatch: stored {metadata[KEY_HEADER_SHA256]!r}, computed {digest!r}"
        ))
    if version > 1:
        try:
            text = encoded.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HeaderError(f"the PEMN header in {where} is not valid UTF-8: {exc}") from exc
    header = strict_json(text, HeaderError, "the PEMN header" if version > 1 else KEY_HEADER)
    if not isinstance(header, dict):
        raise HeaderError(f"the PEMN header in {where} must be a JSON object, found {type(header).__name__}")
    return header, version


def _inflate_header(metadata: dict[str, str], tensors: Mapping[str, np.ndarray]) -> bytes:
    """Version 2, row 11: the declared size (1 to 9 digits, within MAX_HEADER_BYTES), then the
    ``header`` tensor (1-D uint8) inflated to exactly that size."""
    size_text = metadata[KEY_HEADER_BYTES]
    if not (size_text.isascii() and size_text.isdigit()) or len(size_text) > 9:
        raise HeaderError(f"{KEY_HEADER_BYTES} must be a decimal integer of 1 to 9 digits, found {size_text[:20]!r}")
    size = int(size_text)
    if size > MAX_HEADER_BYTES:
        raise LimitError(f"{KEY_HEADER_BYTES} declares a {size}-byte PEMN header; the limit is {MAX_HEADER_BYTES}")
    block = tensors.get(HEADER_TENSOR)
    if block is None:
        raise ShapeError(f"tensor {HEADER_TENSOR!r} is missing: a version 2 file keeps its PEMN header there")
    if block.dtype != np.uint8 or block.ndim != 1:
        found = f"{block.dtype} of shape {list(block.shape)}"
        raise ShapeError(f"tensor {HEADER_TENSOR!r} must be 1-D uint8, found {found}")
    return inflate(block.tobytes(), size, f"tensor {HEADER_TENSOR!r}")


def _check_masks_tensor(header: FileHeader, tensors: Mapping[str, np.ndarray]) -> None:
    """Row 16: ``masks`` is 1-D uint8 and exactly as long as the layers' streams together."""
    if MASKS_TENSOR not in tensors:
        raise ShapeError(f"tensor {MASKS_TENSOR!r} is missing")
    masks = tensors[MASKS_TENSOR]
    mask_total = sum(layer.bytes for layer in header.layers)
    if masks.dtype != np.uint8 or masks.ndim != 1 or masks.size != mask_total:
        raise ShapeError(
            f"tensor {MASKS_TENSOR!r} must be 1-D uint8 of {mask_total} bytes (the layers' sum), "
            f"found {masks.dtype} of shape {list(masks.shape)}"
        )


def _check_value_tensors(header: FileHeader, tensors: Mapping[str, np.ndarray]) -> None:
    """Row 18 (tensor part): each stored bank's vector is present, float32 of shape [size]."""
    for bank in header.banks:
        if not bank.stored:
            continue
        where, tname = f"banks[{bank.index}]", f"{VALUES_PREFIX}{bank.index}"
        if tname not in tensors:
            raise ShapeError(f"{where}: stored value vector {tname!r} is missing")
        vec = tensors[tname]
        if vec.dtype != np.float32 or vec.shape != (bank.size,):
            raise ShapeError(
                f"{where}: {tname!r} must be float32 of shape [{bank.size}], found {vec.dtype} {list(vec.shape)}"
            )


def _check_dense_tensors(header: FileHeader, tensors: Mapping[str, np.ndarray]) -> None:
    """Row 19 (tensor part): each group tensor ``dense.<group>`` is 1-D of its dtype and its entries' total;
    version 3's ``q8`` group: its four tensors (formats/pemn-v3.md section 3)."""
    for group, size in header.dense.group_sizes().items():
        if group == Q8_GROUP:
            continue
        _check_group_tensor(tensors, DENSE_PREFIX + group, DENSE_GROUPS[group], size)
    for name, length in header.dense.q8_lengths().items():
        _check_group_tensor(tensors, name, Q8_TENSORS[name][0], length)


def _check_group_tensor(tensors: Mapping[str, np.ndarray], name: str, dtype: str, size: int) -> None:
    array = tensors.get(name)
    if array is None or array.ndim != 1 or array.dtype != np.dtype(dtype) or array.size != size:
        found = "missing" if array is None else f"{array.dtype} of shape {list(array.shape)}"
        raise ShapeError(f"tensor {name!r} must be 1-D {np.dtype(dtype)} of {size} entries, found {found}")


def _check_no_other_tensors(header: FileHeader, tensors: Mapping[str, np.ndarray], version: int) -> None:
    """Row 21: no tensor beyond those the header describes (and, version 2, the ``header`` tensor)."""
    known = {MASKS_TENSOR} | {DENSE_PREFIX + group for group in header.dense.group_sizes() if group != Q8_GROUP}
    known |= set(header.dense.q8_lengths())
    if version > 1:
        known.add(HEADER_TENSOR)
    known |= {f"{VALUES_PREFIX}{bank.index}" for bank in header.banks if bank.stored}
    if set(tensors) - known:
        raise HeaderError(f"tensors not described by the header: {sorted(set(tensors) - known)}")


def _check_q8_values(header: FileHeader, tensors: Mapping[str, np.ndarray]) -> None:
    """Row 23b (version 3, formats/pemn-v3.md section 4): every ``q8`` range (lo, step) is finite, and each
    entry's outlier positions are increasing and inside the entry. ShapeError otherwise."""
    q8 = header.dense.q8_entries()
    if not q8:
        return
    ranges = tensors[Q8_RANGE]
    if not np.isfinite(ranges).all():
        entry = q8[int(np.flatnonzero(~np.isfinite(ranges))[0]) // 2]
        raise ShapeError(f"dense tensor {entry.key!r}: its q8 range (lo, step) is not finite")
    index = tensors[Q8_INDEX]
    start = 0
    for entry in q8:
        count = entry.outliers or 0
        positions = index[start : start + count]
        start += count
        increasing = count < 2 or bool((np.diff(positions.astype(np.int64)) > 0).all())
        if count and (int(positions[-1]) >= entry.numel or not increasing):
            raise ShapeError(f"dense tensor {entry.key!r}: its outlier positions must increase and stay below "
                             f"{entry.numel}, found {positions[:8].tolist()}{'...' if count > 8 else ''}")


def _check_data_checksum(header: FileHeader, blob: bytes, name: str | None = None) -> None:
    """Row 22: the SHA-256 of the data buffer (version 2: without the ``header`` tensor, whose text
    holds this checksum) is ``checksums.data``; a mismatch names the file (``name``)."""
    assert header.checksums is not None  # always set by FileHeader.from_json
    stored = header.checksums.data
    digest_of = hashlib.sha256()
    for part in data_buffer_without(blob, HEADER_TENSOR):
        digest_of.update(part)
    digest = digest_of.hexdigest()
    if digest != stored:
        raise ChecksumError(_named(
            name, f"data checksum mismatch (stored {stored}, computed {digest}): "
            "the file is corrupted (a mask, value or dense tensor byte changed)"
        ))


def _value_bounds(header: FileHeader, tensors: Mapping[str, np.ndarray]) -> list[float]:
    """Row 23, per bank: the largest ``|unit value|`` it can hold (``B_b`` of spec section 10).

    A stored bank's bound is the largest magnitude in its vector (one pass of ``max`` and one of
    ``min``, no temporary); a generated bank's is its distribution's (``rng.unit_bound``, no pass at
    all). ShapeError when a stored vector holds a NaN or an infinity.
    """
    bounds = []
    for bank in header.banks:
        if not bank.stored:
            bounds.append(rng.unit_bound(header.config.distribution))
            continue
        vec = tensors[f"{VALUES_PREFIX}{bank.index}"]
        bound = max(float(vec.max()), -float(vec.min()))  # NaN propagates through max and min
        if not math.isfinite(bound):
            raise ShapeError(
                f"banks[{bank.index}]: stored value vector '{VALUES_PREFIX}{bank.index}' holds a non-finite value: "
                "weights must be finite"
            )
        bounds.append(bound)
    return bounds


def _check_finite_values(header: FileHeader, tensors: Mapping[str, np.ndarray]) -> None:
    """Row 23: every materialized weight is finite, decided before any value is generated.

    For each layer, ``float32(B_b * |scale|)`` must be finite (``B_b``: ``_value_bounds``). Both
    factors are float32 values, so their binary64 product is exact and its rounding to float32 is
    the float32 product's: every ``float32(T_b[i] * scale)`` is then at most that in magnitude.
    """
    bounds = _value_bounds(header, tensors)
    for layer in header.layers:
        with np.errstate(over="ignore"):
            top = np.float32(bounds[layer.bank] * abs(layer.scale))
        if not np.isfinite(top):
            raise ShapeError(
                f"layer {layer.name!r}: scale {layer.scale!r} times the largest unit value {bounds[layer.bank]!r} "
                f"of bank {layer.bank} is not finite in float32: the weights would not be finite"
            )


def _typed_header(obj: dict, tensors: Mapping[str, np.ndarray], max_weights: int, version: int) -> FileHeader:
    """Rows 13 to 21: the typed header, then the tensors it describes."""
    try:
        header = FileHeader.from_json(obj, max_weights=max_weights, version=version)
        for check in (_check_masks_tensor, _check_value_tensors, _check_dense_tensors):
            check(header, tensors)
        _check_no_other_tensors(header, tensors, version)
    except (KeyError, TypeError, AttributeError, OverflowError) as exc:  # unanticipated shapes: still format errors
        raise HeaderError(f"malformed PEMN header: {type(exc).__name__}: {exc}") from exc
    return header


def decode(data: bytes, *, max_weights: int = DEFAULT_MAX_WEIGHTS, name: str | None = None) -> PemnFile:
    """Validate the bytes of a `.pemn` file and return it decoded. Raises a ``FormatError`` subclass.

    Another kind of file (a PyTorch checkpoint, text, plain safetensors, a file cut short) is refused
    in one line that names it: ``<name>: <what it is>; expected a .pemn file ...`` (``name`` None:
    "the data"). A checksum mismatch names it too: ``<name>: data checksum mismatch ...``.
    ``max_weights`` bounds the total masked weights the file may declare (LimitError).
    The returned tensors are views into ``data``.
    """
    tensors, metadata = decode_container(data, name=name)
    try:
        obj, version = _parse_metadata(metadata, tensors, name)
    except HeaderError as exc:  # "not a .pemn file": say what it is instead (a plain safetensors file)
        better = wrong_file_error(exc, data, name)
        if better is None:
            raise
        raise better from exc
    header = _typed_header(obj, tensors, max_weights, version)
    _check_data_checksum(header, data, name)
    _check_finite_values(header, tensors)
    _check_q8_values(header, tensors)
    return PemnFile(header, tensors, obj, metadata, len(data), version, name)


def read_pemn(
    source: str | os.PathLike | bytes, *, max_weights: int = DEFAULT_MAX_WEIGHTS, name: str | None = None
) -> PemnFile:
    """Read and validate a `.pemn` file (a path or its bytes): ``decode`` of its bytes.

    A path that is not a file raises FileNotFoundError; errors name the path (bytes: ``name``).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode(bytes(source), max_weights=max_weights, name=name)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return decode(path.read_bytes(), max_weights=max_weights, name=os.fspath(source))


def file_identity(source: str | os.PathLike | bytes | PemnFile) -> str:
    """The file's identity (formats/pemn-v2.md section 3.1): the hex SHA-256 of the ASCII text
    ``pemn-identity:<version>:<pemn.header_sha256>:<checksums.data>``, after the file passed ``decode``
    (both hashes verified). It names the content, not the bytes: the same for every DEFLATE stream of
    one version 2 header text (another zlib build, level or strategy), and for any container JSON
    layout; two files with the same identity hold the same header text and the same data checksum.

    ``source``: a path, the file's bytes or an already decoded ``PemnFile``.
    """
    pf = source if isinstance(source, PemnFile) else read_pemn(source)
    assert pf.file_header.checksums is not None  # always set by FileHeader.from_json
    text = f"{IDENTITY_PREFIX}:{pf.format_version}:{pf.metadata[KEY_HEADER_SHA256]}:{pf.file_header.checksums.data}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def decode_masks(pf: PemnFile) -> dict[str, np.ndarray]:
    """Boolean masks of every layer, shaped like its weight."""
    masks = {}
    for layer, stream in zip(pf.layers, pf.mask_streams(), strict=True):
        masks[layer.name] = decode_mask(stream, layer.numel, layer.coding, layer.name).reshape(layer.shape)
    return masks


def bank_tables(pf: PemnFile) -> list[np.ndarray]:
    """Each bank's full (expanded) vector of unit values, float32."""
    tables = []
    for spec in pf.plan.banks:
        stored = pf.stored_values(spec.index)
        if stored is not None:
            unit = np.asarray(stored, dtype=np.float32)
        else:
            unit = rng.unit_values(pf.plan.seed, spec.index, spec.size, pf.plan.distribution)
        index = bank_index_map(pf.plan, spec)
        tables.append(unit if index is None else unit[index])
    return tables


def decode_weights(pf: PemnFile, masks: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Materialized float32 weights (``values * scale * mask``) of every masked layer."""
    masks = masks if masks is not None else decode_masks(pf)
    tables = bank_tables(pf)
    weights = {}
    for source in pf.plan.layers:
        values = rng.scaled_values(tables[source.bank][: source.numel], source.scale).reshape(source.shape)
        weights[source.name] = values * masks[source.name].astype(np.float32)
    return weights


def weights_fingerprint(weights: list[np.ndarray]) -> str:
    """SHA-256 over the little-endian float32 bytes of the weights, in layer order."""
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w, dtype="<f4").tobytes())
    return h.hexdigest()


def verify_fingerprint(pf: PemnFile, weights: dict[str, np.ndarray]) -> None:
    """ChecksumError unless ``weights`` (by layer name) hash to the file's fingerprint."""
    check_fingerprint(pf, weights_fingerprint([weights[layer.name] for layer in pf.layers]))


def check_fingerprint(pf: PemnFile, digest: str) -> None:
    """ChecksumError unless ``digest`` (hex SHA-256 of the weights, see ``weights_fingerprint``) is the file's."""
    stored = pf.file_header.fingerprint.value
    if digest != stored:
        raise ChecksumError(_named(
            pf.name, f"regenerated weights do not match the file's fingerprint (stored {stored}, "
            f"computed {digest}): the file or the generator differs"
        ))
