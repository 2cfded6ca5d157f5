"""What a `.pemn` file holds, torch-free: a typed header and the tensors it describes.

A version 2 file also holds the ``header`` tensor (its PEMN header, deflated); ``tensors`` of a
decoded file include it.

``Payload`` is what ``writer.encode`` serializes; ``PemnFile`` is what ``reader.decode`` returns: a
payload that passed every check of formats/pemn-v1.md section 12 (rows 1 to 23), with the header
object as stored, the container metadata and the size that was read.

Tensors are named as in section 7.1: ``masks`` (every layer's coded stream, in layer order),
``values.<bank>`` (stored value vectors) and ``dense.<group>`` (the leftovers, flattened per group).
On a decoded file they are read-only numpy views into the bytes that were read: nothing is copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import accumulate

import numpy as np

from ..config import MaskConfig
from ..strategies import ValuePlan
from .constants import DENSE_PREFIX, MASKS_TENSOR, Q8_CODES, Q8_GROUP, Q8_INDEX, Q8_RANGE, Q8_VALUE, VALUES_PREFIX
from .header import FileHeader, LayerRecord
from .q8 import dequantize

__all__ = ["Payload", "PemnFile"]


@dataclass
class Payload:
    """A header and its tensors by container name (the header's ``checksums`` may be None: see ``encode``)."""

    file_header: FileHeader
    tensors: dict[str, np.ndarray]

    @property
    def layers(self) -> tuple[LayerRecord, ...]:
        return self.file_header.layers

    def tensor_bytes(self, prefix: str) -> int:
        """Bytes of all tensors whose name starts with ``prefix`` ("masks", "dense.", "values.")."""
        return sum(t.nbytes for name, t in self.tensors.items() if name.startswith(prefix))

    def mask_stream(self, index: int) -> np.ndarray:
        """The coded mask bytes of layer ``index`` (a view into the ``masks`` tensor)."""
        start = sum(layer.bytes for layer in self.layers[:index])
        return self.tensors[MASKS_TENSOR][start : start + self.layers[index].bytes]

    def mask_streams(self) -> list[np.ndarray]:
        """Every layer's coded mask bytes, in layer order (views)."""
        ends = list(accumulate(layer.bytes for layer in self.layers))
        masks = self.tensors[MASKS_TENSOR]
        return [masks[end - layer.bytes : end] for layer, end in zip(self.layers, ends, strict=True)]

    def stored_values(self, bank: int) -> np.ndarray | None:
        """Bank ``bank``'s stored float32 value vector (a view), or None when it is generated."""
        return self.tensors[f"{VALUES_PREFIX}{bank}"] if self.file_header.banks[bank].stored else None

    def dense_arrays(self) -> dict[str, np.ndarray]:
        """Dense leftovers by state-dict key, as stored (views into the group tensors); a ``q8`` entry
        (version 3) decoded to float32 (a new array)."""
        offsets: dict[str, int] = {}
        out = {}
        q8 = 0  # q8 entries so far: the row of its range
        outliers = 0  # q8 outliers so far
        for entry in self.file_header.dense.tensors:
            start = offsets.get(entry.group, 0)
            stop = start + entry.stored
            if entry.group == Q8_GROUP:
                count = entry.outliers or 0
                lo, step = self.tensors[Q8_RANGE][2 * q8 : 2 * q8 + 2]
                flat = dequantize(self.tensors[Q8_CODES][start:stop], lo, step,
                                  self.tensors[Q8_INDEX][outliers : outliers + count],
                                  self.tensors[Q8_VALUE][outliers : outliers + count], entry.numel)
                out[entry.key] = flat.reshape(entry.shape)
                q8, outliers = q8 + 1, outliers + count
            else:
                out[entry.key] = self.tensors[DENSE_PREFIX + entry.group][start:stop].reshape(entry.shape)
            offsets[entry.group] = stop
        return out


@dataclass
class PemnFile(Payload):
    """A validated `.pemn` file (see ``reader.decode``).

    ``header`` is the PEMN header object exactly as stored (unknown keys included; a version 2 file
    leaves derived keys out), for display and for callers that want the JSON; decoding uses the typed
    ``file_header``, complete in every version. ``format_version`` is the file's ``pemn.version``.
    """

    header: dict
    metadata: dict[str, str]
    file_size: int
    format_version: int
    name: str | None = None  # the path it was read from, as given (None: bytes without a name); errors name it
    config: MaskConfig = field(init=False)
    plan: ValuePlan = field(init=False)

    def __post_init__(self) -> None:
        self.config = self.file_header.config
        self.plan = self.file_header.plan()
