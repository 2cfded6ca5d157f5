"""Writing `.pemn` bytes, torch-free: ``encode(payload) -> bytes``.

``encode`` computes the data checksum, serializes the header as canonical JSON, signs it
(``pemn.header_sha256``) and lays out the safetensors container (``container.encode_container``).
It is deterministic: the same payload always gives the same bytes. Getting a payload out of a torch
model is ``pemn_compress.export``; ``pemn_compress.save`` does both and writes the file atomically.
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
    KEY_FORMAT,
    KEY_HEADER,
    KEY_HEADER_SHA256,
    KEY_VERSION,
    MAX_TOTAL_WEIGHTS,
)
from .container import container_order, encode_container
from .header import Checksums, FileHeader, canonical_json
from .payload import Payload

__all__ = ["DEFAULT_DENSE_DTYPE", "canonical_json", "data_checksum", "encode"]

# Measured by benchmarks/dense_dtype.py (results/dense_dtype_fashion-mnist_cpu.md): on small models the
# BatchNorm leftovers in fp32 take half the file or more, and fp16 halves them with no accuracy change
# beyond noise. fp32 remains an option when outputs must match the masked model bit for bit.
DEFAULT_DENSE_DTYPE = "float16"


def data_checksum(tensors: dict[str, np.ndarray]) -> str:
    """Hex SHA-256 of the data buffer ``encode_container`` lays out for ``tensors`` (no buffer is built)."""
    digest = hashlib.sha256()
    for name in container_order(tensors):
        array = np.asarray(tensors[name])
        digest.update(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


def _check_readable(text: str) -> None:
    """Never write a file a reader refuses: the header text passes the reader's own header checks.

    What the caller chose (an architecture dict or target a reader refuses, for one) is a ConfigError
    naming the reader's objection; the checks cost a small fraction of encoding the masks.
    """
    try:
        FileHeader.from_json(json.loads(text), max_weights=MAX_TOTAL_WEIGHTS)
    except FormatError as exc:
        raise ConfigError(f"the file would not be readable: {exc}") from exc


def encode(payload: Payload) -> bytes:
    """The `.pemn` bytes of ``payload``; its header's ``checksums`` is (re)computed from the tensors.

    Raises ConfigError when the header holds something that is not plain JSON (the caller's
    provenance or architecture: objects, NaN).
    """
    checksums = Checksums(CHECKSUM_ALGORITHM, data_checksum(payload.tensors))
    header = dataclasses.replace(payload.file_header, checksums=checksums)
    try:
        text = canonical_json(header.to_json())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"provenance and architecture must be plain JSON (no NaN, no objects): {exc}") from exc
    _check_readable(text)
    metadata = {
        KEY_FORMAT: FORMAT_NAME,
        KEY_VERSION: str(FORMAT_VERSION),
        KEY_HEADER: text,
        KEY_HEADER_SHA256: hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    return encode_container(payload.tensors, metadata)

