"""Size accounting of a `.pemn` file, without torch: every number ``pemn inspect`` shows.

``summarize(pf, path)`` returns one JSON-ready dict:

    format_version, producer, generator, config, architecture, provenance, dense, banks
    layers[]   name, type, shape, weights, bank, value_source, codec, mask_bytes,
               mask_bits_per_weight, kept, density_kept, information_bits, ...
    totals     file_bytes             real on-disk size (os.path.getsize)
               header_bytes           8-byte length + safetensors JSON header + (version 2) the
                                      deflated PEMN header tensor: everything that is not data
               header_text_bytes      the PEMN header's JSON text (version 1: as stored in the metadata)
               header_deflated_bytes  version 2: the ``header`` tensor (the text deflated); None in v1
               mask_bytes, dense_bytes, values_bytes   the data buffer, by tensor kind
               dense_fp32_bytes       exact on-disk size of the safetensors file of the model that
                                      pemn.load returns, in fp32 (masked weights, dense leftovers,
                                      BatchNorm counters); computed, nothing allocated
               disk_ratio             dense_fp32_bytes / file_bytes (everything counted)
               paper_bits, paper_ratio   the paper's formula: 1 bit per masked weight + 32 bits per
                                      unique value; BatchNorm, seed and header NOT counted
               unique_values          sum of bank sizes (what the paper counts)
               mask_information_bits  sum over layers of n * H(kept / n): no coder can do better
               dense_bound_bytes      the leftovers at the least: float16, BatchNorm as 2 values per
                                      channel (folded), integer buffers as stored
               bound_bytes            the information bound of the file: masks' entropy + dense bound
                                      + stored values; every part's overhead is measured against it
               ...                    and the overheads above that bound

Every string in the result comes from the file as-is: it is untrusted, and whoever displays it
must sanitize it (the CLI does).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence

from .constants import DENSE_PREFIX, HEADER_TENSOR, KEY_HEADER, KEY_HEADER_BYTES, MASKS_TENSOR, VALUES_PREFIX
from .header import DenseEntry, LayerRecord
from .payload import PemnFile

__all__ = ["binary_entropy", "dense_bound_bytes", "dense_fp32_entries", "safetensors_file_size", "summarize"]

# safetensors (Rust) orders tensors by dtype, descending in this enum order, then by name; the
# offsets (and so the header length) depend on that order.
_ST_DTYPE_ORDER = (
    "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64",
)
_ST_RANK = {name: i for i, name in enumerate(_ST_DTYPE_ORDER)}
_ST_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
}
# dense leftover group (constants.DENSE_GROUPS) -> safetensors dtype in the dense fp32 model
_GROUP_TO_ST = {"f32": "F32", "f16": "F32", "i64": "I64", "q8": "F32"}


def _header_text_bytes(pf: PemnFile) -> int:
    """Bytes of the PEMN header's JSON text: declared in version 2, the metadata string in version 1."""
    if pf.format_version >= 2:
        return int(pf.metadata[KEY_HEADER_BYTES])
    return len(pf.metadata[KEY_HEADER].encode("utf-8"))


def binary_entropy(p: float) -> float:
    """H(p) in bits; 0 at p = 0 and p = 1."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1.0 - p) * math.log2(1.0 - p))


def safetensors_file_size(
    entries: Mapping[str, tuple[str, Sequence[int]]], metadata: Mapping[str, str] | None = None
) -> int:
    """Exact size in bytes of the file ``safetensors`` writes for tensors ``{name: (dtype, shape)}``.

    Layout: 8-byte header length, the JSON header (compact, UTF-8, tensors ordered by dtype then
    name, padded with spaces to a multiple of 8), then the data. Nothing is allocated.
    """
    order = sorted(entries, key=lambda name: (-_ST_RANK[entries[name][0]], name))
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name in order:
        dtype, shape = entries[name]
        size = math.prod(shape) * _ST_ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return 8 + len(text) + (-len(text) % 8) + offset


def dense_fp32_entries(pf: PemnFile) -> dict[str, tuple[str, list[int]]]:
    """The state dict ``pemn.load`` returns, as {key: (safetensors dtype, shape)}, stored in fp32.

    That is ``{name}.weight`` of every masked layer, every dense leftover (floating ones as F32),
    and what a BatchNorm holds but the file does not store: ``num_batches_tracked`` (I64 scalar)
    beside every ``running_mean``, and the running statistics of BatchNorms stored folded.
    """
    entries: dict[str, tuple[str, list[int]]] = {}
    for layer in pf.layers:
        entries[f"{layer.name}.weight"] = ("F32", list(layer.shape))
    for entry in pf.file_header.dense.tensors:
        entries[entry.key] = (_GROUP_TO_ST[entry.group], list(entry.shape))
    for name in pf.file_header.dense.folded_batchnorm:
        prefix = f"{name}." if name else ""
        if prefix + "weight" in entries:
            entries.setdefault(prefix + "running_mean", ("F32", entries[prefix + "weight"][1]))
            entries.setdefault(prefix + "running_var", ("F32", entries[prefix + "weight"][1]))
    for key in list(entries):
        if key == "running_mean" or key.endswith(".running_mean"):
            entries.setdefault(key[: -len("running_mean")] + "num_batches_tracked", ("I64", []))
    return entries


def dense_bound_bytes(entries: Sequence[DenseEntry], folded: Sequence[str], float_bytes: int = 2) -> int:
    """The leftovers' part of the information bound: what a deployment file needs at the least.

    Floating values at ``float_bytes`` bytes (2: float16; 1 for a file that chose int8 leftovers), every
    BatchNorm as 2 values per channel (a scale and a shift:
    its running statistics fold into them, spec section 11.2, whether or not this file folded them),
    integer buffers as stored (8 bytes). Keys are the dense table's state-dict keys.
    """
    keys = {entry.key: entry for entry in entries}
    batchnorms = {key[: -len("running_mean")] for key in keys if key == "running_mean" or key.endswith(".running_mean")}
    batchnorms |= {f"{name}." if name else "" for name in folded}
    total, counted = 0, set()
    for prefix in sorted(batchnorms):
        members = [f"{prefix}{stat}" for stat in ("weight", "bias", "running_mean", "running_var")]
        channels = max((keys[key].numel for key in members if key in keys), default=0)
        total += 2 * float_bytes * channels
        counted.update(members)
    for entry in entries:
        if entry.key not in counted:
            total += entry.numel * (8 if entry.group == "i64" else float_bytes)
    return total


def _value_source(pf: PemnFile, layer: LayerRecord, users: Counter) -> str:
    bank = pf.plan.banks[layer.bank]
    if bank.tiling != "none":
        return f"bank {bank.index} ({bank.size:,} values, {bank.tiling})"
    if pf.config.strategy == "dense" or users[bank.index] == 1:
        return "own values"
    if pf.config.strategy == "onelayer":
        return f"shared shape (bank {bank.index})"
    return f"bank {bank.index} ({bank.size:,} values)"


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _layer_summary(pf: PemnFile, layer: LayerRecord, users: Counter, stored: dict[int, bool]) -> dict:
    """One layer's row of ``summarize``: its shape, bank, codec and the bytes and bits of its mask."""
    n = layer.numel
    bits = n * binary_entropy(layer.kept / n)
    bank = pf.plan.banks[layer.bank]
    return {
        "name": layer.name,
        "type": layer.type,
        "shape": list(layer.shape),
        "weights": n,
        "bank": bank.index,
        "bank_size": bank.size,
        "tiling": bank.tiling,
        "values_stored": stored.get(bank.index, False),
        "value_source": _value_source(pf, layer, users),
        "scale": layer.scale,
        "codec": layer.codec,
        "rice_k": layer.rice_k,
        "mask_bytes": layer.bytes,
        "mask_bits_per_weight": 8 * layer.bytes / n,
        "kept": layer.kept,
        "density_kept": layer.kept / n,
        "information_bits": bits,
    }


def summarize(pf: PemnFile, path: str | os.PathLike | None = None) -> dict:
    """All the size and content numbers of a validated file (see the module docstring).

    ``path``: the file on disk, whose real size is measured; None uses the size that was read.
    """
    header = pf.file_header
    file_bytes = os.path.getsize(path) if path is not None else pf.file_size
    users = Counter(layer.bank for layer in pf.layers)
    stored = {bank.index: bank.stored for bank in header.banks}
    layers = [_layer_summary(pf, layer, users, stored) for layer in pf.layers]
    info_bits = sum(layer["information_bits"] for layer in layers)

    mask_bytes = pf.tensor_bytes(MASKS_TENSOR)
    dense_bytes = pf.tensor_bytes(DENSE_PREFIX)
    values_bytes = pf.tensor_bytes(VALUES_PREFIX)
    data_bytes = sum(int(t.nbytes) for name, t in pf.tensors.items() if name != HEADER_TENSOR)
    header_bytes = pf.file_size - data_bytes  # 8 + the JSON header as read (+ the header tensor)
    masked_weights = pf.plan.masked_weights
    unique_values = pf.plan.unique_values
    dense_fp32 = safetensors_file_size(dense_fp32_entries(pf))
    paper_bits = masked_weights + 32 * unique_values
    info_bytes = info_bits / 8
    dense_bound = dense_bound_bytes(header.dense.tensors, header.dense.folded_batchnorm,
                                    1 if header.dense.dtype == "int8" else 2)
    # the information bound: the masks' entropy, fp16 (int8 files: 1 byte) leftovers with BatchNorm folded, stored
    # values as they are
    bound_bytes = info_bytes + dense_bound + values_bytes

    dense_groups = {k[len(DENSE_PREFIX) :]: t for k, t in sorted(pf.tensors.items()) if k.startswith(DENSE_PREFIX)}
    return {
        "format_version": pf.format_version,
        "producer": header.producer,
        "generator": header.generator.to_json(),
        "config": dict(pf.header["config"]),  # as the file states it, in its key order
        "architecture": header.architecture.to_json(),
        "provenance": header.provenance if header.provenance is not None else {},
        "dense": {
            "dtype": header.dense.dtype,
            "folded_batchnorm": list(header.dense.folded_batchnorm),
            "tensors": len(header.dense.tensors),
            "parameters": sum(entry.numel for entry in header.dense.tensors),
            "outliers": sum(entry.outliers or 0 for entry in header.dense.tensors),  # int8 files: kept float16
            "groups": {group: int(t.nbytes) for group, t in dense_groups.items()},
        },
        "banks": [
            {"index": b.index, "size": b.size, "length": b.length, "tiling": b.tiling,
             "stored": stored.get(b.index, False), "layers": users[b.index]}
            for b in pf.plan.banks
        ],
        "layers": layers,
        "totals": {
            "file_bytes": file_bytes,
            "header_bytes": header_bytes,
            "header_text_bytes": _header_text_bytes(pf),
            "header_deflated_bytes": int(pf.tensors[HEADER_TENSOR].nbytes) if HEADER_TENSOR in pf.tensors else None,
            "mask_bytes": mask_bytes,
            "dense_bytes": dense_bytes,
            "values_bytes": values_bytes,
            "masked_weights": masked_weights,
            "unique_values": unique_values,
            "dense_fp32_bytes": dense_fp32,
            "disk_ratio": _ratio(dense_fp32, file_bytes),
            "paper_bits": paper_bits,
            "paper_bytes": paper_bits / 8,
            "paper_ratio": 32 * masked_weights / paper_bits,
            "mask_bits_per_weight": 8 * mask_bytes / masked_weights,
            "density_kept": sum(layer["kept"] for layer in layers) / masked_weights,
            "mask_information_bits": info_bits,
            "mask_information_bytes": info_bytes,
            "mask_overhead_bytes": mask_bytes - info_bytes,
            "mask_overhead_fraction": _ratio(mask_bytes - info_bytes, info_bytes),
            "dense_bound_bytes": dense_bound,
            "dense_overhead_fraction": _ratio(dense_bytes - dense_bound, dense_bound),
            "header_fraction": _ratio(header_bytes, bound_bytes),
            "bound_bytes": bound_bytes,
            "file_overhead_bytes": file_bytes - bound_bytes,
            "file_overhead_fraction": _ratio(file_bytes - bound_bytes, bound_bytes),
        },
    }
