"""Streamed materialization of a `.pemn` file's masked weights, for ``pemn.load``.

Each layer's weight ``W = (table[:n] * float32(scale)) * mask`` (formats/pemn-v1.md section 10: the
same two float32 multiplications, in the same order, as ``fileformat.reader.decode_weights``) is
computed one cache-sized piece at a time and written straight into the layer's destination tensor;
the pieces are hashed in layer order into the fingerprint (SHA-256 of the little-endian float32
weights) as they are made.

Invariants:

* Bits: every destination receives exactly the reference reader's float32 weights (cast to the
  destination's dtype by one rounding, as ``tensor.to(dtype)`` would), on every path and with any
  number of threads; the fingerprint is checked over the float32 values before any cast.
* Memory: besides the destinations, at most one value table per bank that is still needed
  (none on the CPU float32 path when the bank's last reader is a largest reader: the table is
  generated inside that layer's destination, which is masked in place last), every mask packed (one
  bit per weight: a raw stream as stored, a rice stream decoded into packed bits a chunk of codewords
  at a time), and a bounded window of pieces in flight. Nothing holds all weights twice.
* Validation first: ``check_masks`` validates every mask (as ``decode_mask`` does) before any value
  is generated; the caller checks names and shapes before that.

Two paths: on the CPU, numpy pieces spread over the worker threads (``_parallel``) with the fused
generator (``rng.unit_values_into``: the numpy kernel, or the numba one when ``rng.choose_generator``
picks it once for the whole load from the number of values the file generates; same bits either
way, masking always in numpy); on an accelerator (or with ``kernel="torch"``), the torch
generator on the device, pieces multiplied on the device and copied back only to be hashed, on a
background thread.
"""

from __future__ import annotations

import hashlib
import queue
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from . import rng
from ._parallel import BARRIER, ordered
from .errors import ConfigError
from .fileformat.codecs import decode_mask_packed
from .fileformat.reader import PemnFile, check_fingerprint
from .strategies import bank_index_map

__all__ = ["MaskSource", "check_masks", "stream_weights"]

PIECE = 1 << 16  # weights per CPU piece (a multiple of 8: raw masks unpack from whole bytes)
DEVICE_PIECE = 1 << 22  # weights per accelerator piece (bounds the host copy made for hashing)


@dataclass
class MaskSource:
    """One layer's validated mask as MSB-first packed bits, unpacked a piece at a time."""

    numel: int
    packed: np.ndarray

    def piece(self, start: int, stop: int) -> np.ndarray:
        """Mask entries ``start .. stop-1`` as 0/1 uint8; ``start`` is a multiple of 8."""
        return np.unpackbits(self.packed[start // 8 : (stop + 7) // 8], count=stop - start)

    def full(self) -> np.ndarray:
        """The whole flat mask as bool."""
        return self.piece(0, self.numel).view(bool)


def check_masks(pf: PemnFile) -> list[MaskSource]:
    """Validate every layer's mask (same checks and errors as ``decode_masks``), in layer order."""
    return [MaskSource(layer.numel, decode_mask_packed(data, layer.numel, layer.coding, layer.name))
            for layer, data in zip(pf.layers, pf.mask_streams(), strict=True)]  # fmt: skip


@dataclass
class _Layer:
    name: str
    bank: int
    numel: int
    scale: float
    mask: MaskSource
    dest: torch.Tensor | None  # flat view of the destination, or None (fingerprint only)

    @property
    def fast(self) -> bool:
        """Destination is CPU float32: pieces are computed in place, no temporary."""
        return self.dest is not None and self.dest.device.type == "cpu" and self.dest.dtype == torch.float32


def _le_bytes(piece: np.ndarray):
    piece = piece if sys.byteorder == "little" else piece.astype("<f4")
    return np.ascontiguousarray(piece).data.cast("B")


def stream_weights(
    pf: PemnFile,
    masks: list[MaskSource],
    destinations: Mapping[str, torch.Tensor | None],
    *,
    verify: bool = True,
    kernel: str = "auto",
) -> None:
    """Write every layer's weights into ``destinations[name]`` (contiguous, the layer's shape, any
    dtype and device; None: compute for the fingerprint only) and check the fingerprint.

    Raises ChecksumError on a fingerprint mismatch (the destinations then hold the regenerated,
    untrusted weights). ``kernel``: "auto" (numpy on the CPU, torch on an accelerator) or "torch"
    (the device path even on the CPU, to test it without an accelerator).
    """
    if kernel not in ("auto", "torch"):
        raise ConfigError(f"kernel must be 'auto' or 'torch', found {kernel!r}")
    layers = []
    for source, mask in zip(pf.plan.layers, masks, strict=False):
        dest = destinations.get(source.name)
        if dest is not None:
            if tuple(dest.shape) != tuple(source.shape) or not dest.is_contiguous():
                raise ValueError(f"destination of layer {source.name!r} must be contiguous of shape {source.shape}")
            dest = dest.detach().view(-1)
        layers.append(_Layer(source.name, source.bank, source.numel, source.scale, mask, dest))
    devices = {layer.dest.device for layer in layers if layer.dest is not None}
    if len(devices) > 1:
        raise ValueError(f"destinations are on several devices: {sorted(map(str, devices))}")
    device = devices.pop() if devices else torch.device("cpu")
    if device.type == "cpu" and kernel == "auto":
        digest = _stream_cpu(pf, layers, verify)
    else:
        digest = _stream_device(pf, layers, device, verify)
    if verify:
        check_fingerprint(pf, digest)


# --------------------------------------------------------------------------------------- CPU
class _Table:
    """A bank's expanded unit values, produced a piece at a time: generated, stored or gathered."""

    def __init__(self, pf: PemnFile, bank: int, generator: str):
        self.seed, self.distribution, self.generator = pf.plan.seed, pf.plan.distribution, generator
        self.spec = pf.plan.banks[bank]
        stored = pf.stored_values(bank)
        self.unit = np.asarray(stored, dtype=np.float32) if stored is not None else None
        self.index = bank_index_map(pf.plan, self.spec)  # None unless tiled (rp)
        if self.index is not None and self.unit is None:
            self.unit = rng.unit_values(self.seed, self.spec.index, self.spec.size, self.distribution,
                                        generator=generator)  # fmt: skip

    def fill(self, out: np.ndarray, start: int) -> None:
        stop = start + out.shape[0]
        if self.unit is None:  # neither stored nor tiled (__init__ sets unit whenever index is set)
            rng.unit_values_into(out, self.seed, self.spec.index, start, self.distribution, generator=self.generator)
        elif self.index is not None:
            np.take(self.unit, self.index[start:stop], out=out)
        else:
            np.copyto(out, self.unit[start:stop])


def _bounds(n: int):
    return [(s, min(s + PIECE, n)) for s in range(0, n, PIECE)]


def _stream_cpu(pf: PemnFile, layers: list[_Layer], verify: bool) -> str:
    h = hashlib.sha256()
    for piece in ordered(_cpu_tasks(pf, layers), window=16):
        if piece is not None and verify:
            h.update(_le_bytes(piece))
    return h.hexdigest()


def _cpu_tasks(pf: PemnFile, layers: list[_Layer]):
    """Zero-argument tasks in layer order; each returns the float32 piece to hash, or None.

    The generator (numpy or numba) is chosen once, from the values the file generates in all.
    A bank read by one layer is generated straight into that layer's pieces. A bank read by several
    is first written whole into a table (the last reader's own destination when it is a largest
    CPU float32 reader: it is masked in place after every other reader has read it), then read.
    """
    generated = sum(spec.size for spec in pf.plan.banks if pf.stored_values(spec.index) is None)
    gen = rng.choose_generator(generated)
    readers: dict[int, list[int]] = {}
    for i, layer in enumerate(layers):
        readers.setdefault(layer.bank, []).append(i)
    tables: dict[int, tuple[np.ndarray, bool]] = {}  # bank -> (values [0, need), hosted in the last reader)
    for i, layer in enumerate(layers):
        users = readers[layer.bank]
        if len(users) == 1:
            source = _Table(pf, layer.bank, gen)
            for s, e in _bounds(layer.numel):
                yield partial(_finish, layer, s, e, fill=partial(source.fill, start=s))
            continue
        if i == users[0]:
            source = _Table(pf, layer.bank, gen)
            need = max(layers[j].numel for j in users)
            last = layers[users[-1]]
            hosted = last.fast and last.numel == need
            table = last.dest.numpy() if hosted and last.dest is not None else np.empty(need, dtype=np.float32)
            tables[layer.bank] = (table, hosted)
            for s, e in _bounds(need):
                yield partial(source.fill, table[s:e], start=s)
            yield BARRIER
        table, hosted = tables[layer.bank]
        in_place = False
        if i == users[-1]:
            del tables[layer.bank]
            in_place = hosted
            if in_place:
                yield BARRIER  # every other reader has read the table: mask it in place now
        for s, e in _bounds(layer.numel):
            if in_place:
                yield partial(_finish, layer, s, e, fill=_keep)
            else:
                yield partial(_finish, layer, s, e, values=table[s:e])


def _keep(out: np.ndarray) -> None:
    """Fill for a piece that already holds its table values."""


def _finish(layer: _Layer, s: int, e: int, *, values: np.ndarray | None = None, fill=None) -> np.ndarray:
    """Piece ``[s, e)`` of ``layer``: table values (given, or written by ``fill``), times the
    float32 scale, times the mask; stored into the destination; returned for hashing."""
    out = layer.dest.numpy()[s:e] if layer.fast and layer.dest is not None else np.empty(e - s, dtype=np.float32)
    scale = np.float32(layer.scale)
    if values is not None:
        np.multiply(values, scale, out=out)
    else:
        fill(out)
        np.multiply(out, scale, out=out)
    np.multiply(out, layer.mask.piece(s, e), out=out)
    if layer.dest is not None and not layer.fast:
        layer.dest[s:e].copy_(torch.from_numpy(out))
    return out


# --------------------------------------------------------------------------------------- device
class _BackgroundHash:
    """SHA-256 fed from a bounded queue by a background thread (hashing overlaps device work)."""

    def __init__(self):
        self._h = hashlib.sha256()
        self._q: queue.Queue = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._run, name="pemn-fingerprint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            self._h.update(_le_bytes(item))

    def update(self, piece: np.ndarray) -> None:
        self._q.put(piece)

    def finish(self) -> str:
        self._q.put(None)
        self._thread.join()
        return self._h.hexdigest()


def _device_table(pf: PemnFile, bank: int, device: torch.device) -> torch.Tensor:
    spec = pf.plan.banks[bank]
    stored = pf.stored_values(bank)
    if stored is not None:
        unit = torch.from_numpy(np.array(stored, dtype=np.float32)).to(device)
    else:
        unit = rng.unit_values(pf.plan.seed, bank, spec.size, pf.plan.distribution, device=device, kernel="torch")
    index = bank_index_map(pf.plan, spec, device=device)
    return unit if index is None else unit[index]


def _stream_device(pf: PemnFile, layers: list[_Layer], device: torch.device, verify: bool) -> str:
    last_use = {layer.bank: i for i, layer in enumerate(layers)}
    tables: dict[int, torch.Tensor] = {}
    hasher = _BackgroundHash() if verify else None
    try:
        for i, layer in enumerate(layers):
            if layer.bank not in tables:
                tables[layer.bank] = _device_table(pf, layer.bank, device)
            table = tables[layer.bank]
            mask = torch.from_numpy(layer.mask.full()).to(device)
            scale = torch.tensor(layer.scale, dtype=torch.float32, device=device)
            for s in range(0, layer.numel, DEVICE_PIECE):
                e = min(s + DEVICE_PIECE, layer.numel)
                piece = table[s:e] * scale
                piece.mul_(mask[s:e])
                if hasher is not None:
                    hasher.update(piece.cpu().numpy())
                if layer.dest is not None:
                    layer.dest[s:e].copy_(piece)
            if last_use[layer.bank] == i:
                del tables[layer.bank]
    finally:
        digest = hasher.finish() if hasher is not None else ""
    return digest
