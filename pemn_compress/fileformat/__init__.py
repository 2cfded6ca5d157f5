"""The `.pemn` file format, versions 1 to 3 (formats/pemn-v1.md, pemn-v2.md, pemn-v3.md), torch-free:
numpy and the standard library only.

    encode(payload, version=2) -> bytes   writer.py: checksums, canonical header JSON, container
    decode(data) -> PemnFile              reader.py: every check of the spec's section 12, rows 1 to 23

Modules: ``constants`` (names and limits), ``container`` (safetensors, strict), ``codecs`` (raw and
rice masks), ``deflate`` (the version 2 header block), ``header`` (the typed header and its one JSON
conversion, derived keys included), ``payload`` (header plus tensors), ``reader`` / ``writer``,
``q8`` (version 3's int8 leftovers), ``sniff`` (naming files that are not `.pemn`), ``summary`` (size
accounting for ``pemn inspect``).
Turning a torch model into a payload is ``pemn_compress.export``; building a model from a decoded
file is ``pemn_compress.api.load``.
"""

from .header import (
    Architecture,
    BankRecord,
    Checksums,
    DenseEntry,
    DenseRecord,
    FileHeader,
    Fingerprint,
    Generator,
    LayerRecord,
)
from .payload import Payload, PemnFile
from .reader import decode, file_identity, read_pemn
from .writer import encode

__all__ = [
    "Architecture",
    "BankRecord",
    "Checksums",
    "DenseEntry",
    "DenseRecord",
    "FileHeader",
    "Fingerprint",
    "Generator",
    "LayerRecord",
    "Payload",
    "PemnFile",
    "decode",
    "encode",
    "file_identity",
    "read_pemn",
]
