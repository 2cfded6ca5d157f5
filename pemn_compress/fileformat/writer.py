"""Writing `.pemn` files: ``save(masked_model, path, ...)``.

The file holds the seed and generator, the explicitly stored value vectors (rp vectors and learned
values: they are tiny), one coded mask per masked layer, the dense leftovers (fp32 or fp16, optionally
with BatchNorm folded to one scale and shift per channel), the architecture reference, checksums,
the fingerprint of the materialized weights and the caller's provenance. Writes are atomic and
deterministic: the same model and arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..errors import ConfigError, ModelError
from ..surgery import masked_layers, plan_of
from .codecs import encode_mask
from .constants import (
    CHECKSUM_ALGORITHM,
    DENSE_DTYPES,
    DENSE_GROUPS,
    DENSE_PREFIX,
    FORMAT_NAME,
    FORMAT_VERSION,
    GENERATOR,
    KEY_FORMAT,
    KEY_HEADER,
    KEY_HEADER_SHA256,
    KEY_VERSION,
    MASKS_TENSOR,
    VALUES_PREFIX,
)
from .container import atomic_write, container_order, encode_container
from .reader import weights_fingerprint

__all__ = ["DEFAULT_DENSE_DTYPE", "canonical_json", "save", "to_bytes"]

# Measured by benchmarks/dense_dtype.py (results/dense_dtype_fashion-mnist_cpu.md): on small models the
# BatchNorm leftovers in fp32 take half the file or more, and fp16 halves them with no accuracy change
# beyond noise. fp32 remains an option when outputs must match the masked model bit for bit.
DEFAULT_DENSE_DTYPE = "float16"


def canonical_json(value) -> str:
    """Sorted keys, no spaces, ASCII only, no NaN: one text per value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _architecture(model: nn.Module, architecture: dict | str | None) -> dict:
    if architecture is None:
        arch = getattr(model, "pemn_arch", None)
        if arch is None:
            return {"kind": "none"}
        return {"kind": "registry", "name": arch["name"], "kwargs": dict(arch["kwargs"])}
    if isinstance(architecture, str):  # "module:function" factory
        if ":" not in architecture:
            raise ConfigError(f"architecture string must be 'module:function', found {architecture!r}")
        return {"kind": "import", "target": architecture, "kwargs": {}}
    if not isinstance(architecture, dict) or architecture.get("kind") not in ("registry", "import", "none"):
        raise ConfigError("architecture must be None, 'module:function' or a dict with kind registry/import/none")
    return dict(architecture)


def _bn_fold(module: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) with BN_eval(x) == x * scale + shift."""
    var = module.running_var.double()
    mean = module.running_mean.double()
    weight = module.weight.double() if module.weight is not None else torch.ones_like(var)
    bias = module.bias.double() if module.bias is not None else torch.zeros_like(var)
    scale = weight / torch.sqrt(var + module.eps)
    return scale.float(), (bias - mean * scale).float()


def _dense_leftovers(model: nn.Module, dense_dtype: str, fold_batchnorm: bool) -> tuple[dict, list, list]:
    """Dense leftovers as a few flat group tensors plus a table [key, shape, group] in storage order.

    ``num_batches_tracked`` counters are not stored (they only matter for momentum=None training).
    """
    masked_names = {name for name, _ in masked_layers(model)}
    skip = {f"{name}.scores" for name in masked_names}
    state = {
        k: v for k, v in model.state_dict().items()
        if k not in skip and ".value_bank." not in f".{k}" and not k.endswith("num_batches_tracked")
    }
    folded = []
    if fold_batchnorm:
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats and module.running_var is not None:
                scale, shift = _bn_fold(module)
                prefix = f"{name}." if name else ""
                for key in ("running_mean", "running_var"):
                    state.pop(prefix + key, None)
                state[prefix + "weight"], state[prefix + "bias"] = scale, shift
                folded.append(name)
    float_group = {"float32": "f32", "float16": "f16"}[dense_dtype]
    groups: dict[str, list[np.ndarray]] = {}
    table = []
    for key in sorted(state):
        value = state[key].detach().cpu()
        if value.dtype.is_floating_point:
            array32 = value.float().numpy()
            with np.errstate(over="ignore"):
                group, array = float_group, array32.astype(DENSE_GROUPS[float_group])
            if not np.isfinite(array).all() and np.isfinite(array32).all():  # outside fp16 range: keep fp32
                group, array = "f32", array32
        else:
            group, array = "i64", value.to(torch.int64).numpy()
        groups.setdefault(group, []).append(array.reshape(-1))
        table.append([key, list(value.shape), group])
    tensors = {DENSE_PREFIX + group: np.concatenate(parts) for group, parts in groups.items()}
    return tensors, table, folded


def to_bytes(
    model: nn.Module,
    *,
    dense_dtype: str = DEFAULT_DENSE_DTYPE,
    fold_batchnorm: bool = False,
    codec: str = "auto",
    architecture: dict | str | None = None,
    provenance: dict | None = None,
) -> bytes:
    """The `.pemn` bytes of a masked model (see ``save``)."""
    if dense_dtype not in DENSE_DTYPES:
        raise ConfigError(f"dense_dtype must be one of {DENSE_DTYPES}, found {dense_dtype!r}")
    plan = plan_of(model)
    config = model.pemn_config
    layers = dict(masked_layers(model))
    if [s.name for s in plan.layers] != list(layers):
        raise ModelError("the model's masked layers no longer match its plan (layers were added or removed after mask_)")
    tensors: dict[str, np.ndarray] = {}
    layer_entries, materialized, streams = [], [], []
    for source in plan.layers:
        layer = layers[source.name]
        mask = layer.mask().cpu().numpy()
        coded = encode_mask(mask, codec)
        streams.append(coded["data"])
        entry = {
            "name": source.name,
            "type": layer.dense_type.__name__,
            "shape": list(source.shape),
            "bank": source.bank,
            "scale": source.scale,
            "codec": coded["codec"],
            "ones": coded["ones"],
            "bytes": int(coded["data"].size),
        }
        if coded["codec"] == "rice":
            entry.update(rice_k=coded["rice_k"], invert=coded["invert"])
        layer_entries.append(entry)
        materialized.append(layer.materialized_weight().cpu().numpy())
    tensors[MASKS_TENSOR] = np.concatenate(streams)
    bank_entries = []
    for spec, bank in zip(plan.banks, model.pemn_values):
        stored = plan.strategy == "rp" or config.learn_values
        if stored:
            tensors[f"{VALUES_PREFIX}{spec.index}"] = bank.unit.detach().cpu().float().numpy().copy()
        bank_entries.append({"index": spec.index, "size": spec.size, "length": spec.length, "tiling": spec.tiling, "stored": stored})
    dense_tensors, dense_table, folded = _dense_leftovers(model, dense_dtype, fold_batchnorm)
    tensors.update(dense_tensors)
    data_digest = hashlib.sha256()
    for name in container_order(tensors):
        data_digest.update(np.asarray(tensors[name]).astype(tensors[name].dtype.newbyteorder("<")).tobytes())
    header = {
        "producer": {"name": "pemn-compress", "version": __version__},
        "generator": {"name": GENERATOR, "seed": plan.seed},
        "config": config.to_dict(),
        "banks": bank_entries,
        "layers": layer_entries,
        "dense": {"dtype": dense_dtype, "folded_batchnorm": folded, "tensors": dense_table},
        "architecture": _architecture(model, architecture),
        "fingerprint": {"algorithm": CHECKSUM_ALGORITHM, "value": weights_fingerprint(materialized)},
        "checksums": {"algorithm": CHECKSUM_ALGORITHM, "data": data_digest.hexdigest()},
        "provenance": provenance or {},
    }
    try:
        text = canonical_json(header)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"provenance and architecture must be plain JSON (no NaN, no objects): {exc}") from None
    metadata = {
        KEY_FORMAT: FORMAT_NAME,
        KEY_VERSION: str(FORMAT_VERSION),
        KEY_HEADER: text,
        KEY_HEADER_SHA256: hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    return encode_container(tensors, metadata)


def save(model: nn.Module, path: str | os.PathLike, **options) -> Path:
    """Write a masked model to ``path`` atomically; returns the path.

    Options: ``dense_dtype`` ("float32" | "float16"), ``fold_batchnorm`` (store BatchNorm as one
    scale and shift per channel; eval-mode deployment only), ``codec`` ("auto" picks raw or rice per
    layer, "raw" forces packed bits), ``architecture`` (None: the zoo reference recorded by
    ``create_model``; "module:function"; or a dict), ``provenance`` (JSON object: dataset,
    accuracy, recipe, ...).
    """
    return atomic_write(path, to_bytes(model, **options))
