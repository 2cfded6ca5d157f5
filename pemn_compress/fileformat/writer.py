"""Writing `.pemn` bytes, torch-free: ``encode(payload, version=2) -> bytes``.

``encode`` computes the data checksum, serializes the header as canonical JSON, signs it
(``pemn.header_sha256``) and lays out the safetensors container (``container.encode_container``).
Version 2 (the default, formats/pemn-v2.md) leaves derived keys out of the header and stores it as a
raw DEFLATE stream in the ``header`` tensor; version 1 (formats/pemn-v1.md) stores the whole header
as text in the metadata, for readers that know version 1 only. Version 3 (formats/pemn-v3.md) is version 2
with int8 leftovers (``dense.dtype`` ``int8``, group ``q8``): it is written for the files that hold them, and only
for those, so that every other file stays readable by a version 2 reader.
It is deterministic: the same payload always gives the same bytes (for version 2, with one zlib).
Getting a payload out of a torch model is ``pemn_compress.export``; ``pemn_compress.save`` does both
and writes the file atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from ..errors import ConfigError, FormatError
from .constants import (
    CHECKSUM_ALGORITHM,
    FORMAT_NAME,
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    HEADER_TENSOR,
    INT8_VERSION,
    KEY_FORMAT,
    KEY_HEADER,
    KEY_HEADER_BYTES,
    KEY_HEADER_SHA256,
    KEY_VERSION,
    MAX_TOTAL_WEIGHTS,
)
from .container import container_order, encode_container
from .deflate import deflate, deflate_bound
from .header import Checksums, FileHeader, canonical_json
from .payload import Payload

__all__ = ["DEFAULT_DENSE_DTYPE", "canonical_json", "data_checksum", "encode", "encoded_size_bound", "header_text",
           "written_version"]

# Measured by benchmarks/dense_dtype.py (results/dense_dtype_fashion-mnist_cpu.md): on small models the
# BatchNorm leftovers in fp32 take half the file or more, and fp16 halves them with no accuracy change
# beyond noise. fp32 remains an option when outputs must match the masked model bit for bit.
DEFAULT_DENSE_DTYPE = "float16"


def data_checksum(tensors: dict[str, np.ndarray]) -> str:
    """Hex SHA-256 of the data buffer ``encode_container`` lays out for ``tensors`` (no buffer is built),
    the ``header`` tensor left out (version 2: the header holds this checksum)."""
    digest = hashlib.sha256()
    for name in container_order(tensors):
        if name == HEADER_TENSOR:
            continue
        array = np.asarray(tensors[name])
        digest.update(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


def _check_readable(text: str, version: int) -> None:
    """Never write a file a reader refuses: the header text passes the reader's own header checks.

    What the caller chose (an architecture dict or target a reader refuses, for one) is a ConfigError
    naming the reader's objection; the checks cost a small fraction of encoding the masks.
    """
    try:
        FileHeader.from_json(json.loads(text), max_weights=MAX_TOTAL_WEIGHTS, version=version)
    except FormatError as exc:
        raise ConfigError(f"the file would not be readable: {exc}") from exc


def header_text(payload: Payload, version: int = FORMAT_VERSION) -> str:
    """The canonical JSON text of ``payload``'s header in format ``version``, checksums computed.

    Raises ConfigError when the header holds something that is not plain JSON (the caller's
    provenance or architecture: objects, NaN).
    """
    checksums = Checksums(CHECKSUM_ALGORITHM, data_checksum(payload.tensors))
    header = dataclasses.replace(payload.file_header, checksums=checksums)
    try:
        return canonical_json(header.to_json(version))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"provenance and architecture must be plain JSON (no NaN, no objects): {exc}") from exc


def written_version(payload: Payload, version: int = FORMAT_VERSION) -> int:
    """The version ``encode`` writes when asked for ``version``: int8 leftovers need version 3
    (formats/pemn-v3.md), so a payload with them asked for version 2 (the default) is written as 3.
    ConfigError for a version this writer does not know, or version 1 with int8 leftovers."""
    if version not in FORMAT_VERSIONS:
        raise ConfigError(f"format version must be one of {FORMAT_VERSIONS}, found {version!r}")
    if payload.file_header.dense.dtype == "int8" and version < INT8_VERSION:
        if version == 1:
            raise ConfigError(f"int8 leftovers need format version {INT8_VERSION}; format version 1 cannot store "
                              "them: use dense_dtype float16 (--dense-dtype float16) for a version 1 file")
        return INT8_VERSION
    return version


def encode(payload: Payload, version: int = FORMAT_VERSION) -> bytes:
    """The `.pemn` bytes of ``payload`` in format ``version`` (1, 2 or 3; ``written_version``: int8
    leftovers are written as version 3); its header's ``checksums`` is (re)computed from the tensors.
    ConfigError for a header that is not plain JSON or that a reader would refuse, and for a version
    this writer does not know."""
    version = written_version(payload, version)
    if HEADER_TENSOR in payload.tensors:  # a decoded version 2 file: its header tensor is made anew
        payload = Payload(payload.file_header, {k: v for k, v in payload.tensors.items() if k != HEADER_TENSOR})
    text = header_text(payload, version)
    _check_readable(text, version)
    if version == 1:
        return encode_container(payload.tensors, _metadata(1, text))
    block = np.frombuffer(deflate(text.encode("utf-8")), dtype=np.uint8)
    return encode_container({**payload.tensors, HEADER_TENSOR: block}, _metadata(version, text))


def encoded_size_bound(payload: Payload, version: int = FORMAT_VERSION) -> int:
    """At least ``len(encode(payload, version))``, for any payload whose header text is no longer and
    whose tensors are no larger than ``payload``'s (``--target-size`` bounds a file before its masks
    exist). Version 1: the size itself; versions 2 and 3: the deflated header counted at ``deflate_bound``."""
    version = written_version(payload, version)
    text = header_text(payload, version)
    if version == 1:
        return len(encode_container(payload.tensors, _metadata(1, text)))
    block = np.zeros(deflate_bound(len(text.encode("utf-8"))), dtype=np.uint8)
    return len(encode_container({**payload.tensors, HEADER_TENSOR: block}, _metadata(version, text)))


def _metadata(version: int, text: str) -> dict[str, str]:
    """The ``__metadata__`` of a file of ``version`` whose PEMN header is ``text``."""
    encoded = text.encode("utf-8")
    metadata = {
        KEY_FORMAT: FORMAT_NAME,
        KEY_VERSION: str(version),
        KEY_HEADER_SHA256: hashlib.sha256(encoded).hexdigest(),
    }
    if version == 1:
        metadata[KEY_HEADER] = text
    else:
        metadata[KEY_HEADER_BYTES] = str(len(encoded))
    return metadata

