"""From a masked torch model to a `.pemn` payload: ``export(model, ...) -> Payload``.

The payload holds the seed and generator, the explicitly stored value vectors (rp vectors and
learned values: they are tiny), one coded mask per masked layer, the dense leftovers (fp32 or fp16,
optionally with BatchNorm folded to one scale and shift per channel, formats/pemn-v1.md section 11),
the architecture reference, the fingerprint of the materialized weights and the caller's provenance.
Everything else about bytes (checksums, canonical JSON, the container) is ``fileformat.writer.encode``,
which needs no torch. Export is deterministic: the same model and options give the same payload.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import nn

from ._version import __version__
from .errors import ConfigError, ModelError
from .fileformat.codecs import WRITE_CODECS, encode_mask
from .fileformat.constants import (
    ARCH_KINDS,
    CHECKSUM_ALGORITHM,
    DENSE_DTYPES,
    DENSE_FLOAT_GROUP,
    DENSE_GROUPS,
    DENSE_PREFIX,
    FORMAT_VERSION,
    GENERATOR,
    MASKS_TENSOR,
    Q8_CODES,
    Q8_GROUP,
    Q8_INDEX,
    Q8_RANGE,
    Q8_TENSORS,
    Q8_VALUE,
    VALUES_PREFIX,
)
from .fileformat.header import (
    Architecture,
    BankRecord,
    DenseEntry,
    DenseRecord,
    FileHeader,
    Fingerprint,
    Generator,
    Json,
    LayerRecord,
)
from .fileformat.payload import Payload
from .fileformat.q8 import Q8Entry, allot_outliers, quantize
from .fileformat.reader import weights_fingerprint
from .fileformat.writer import DEFAULT_DENSE_DTYPE, encode
from .nn.layers import MaskedLayer
from .strategies import LayerSource
from .surgery import config_of, masked_layers, plan_of, values_of

__all__ = ["PRODUCER", "export", "to_bytes"]

PRODUCER = "pemn-compress"  # header.producer.name


def export(
    model: nn.Module,
    *,
    dense_dtype: str = DEFAULT_DENSE_DTYPE,
    fold_batchnorm: bool = False,
    codec: str = "auto",
    architecture: dict | str | None = None,
    provenance: Json = None,
    cap_outliers: bool = False,
) -> Payload:
    """The payload of a masked model (options as ``pemn_compress.save``; its header's checksums unset).
    ``cap_outliers``: int8 leftovers keep at most one float16 outlier in ``q8.OUTLIER_RESERVE`` values, the
    number a size budget counts (``q8.allot_outliers``); otherwise every value far off its grid stays float16.

    Raises ConfigError for an invalid option, ModelError for a model that is not masked or whose
    masked layers no longer match its plan.
    """
    _check_options(dense_dtype=dense_dtype, codec=codec)
    plan = plan_of(model)
    layers = dict(masked_layers(model))
    if [s.name for s in plan.layers] != list(layers):
        raise ModelError(
            "the model's masked layers no longer match its plan (layers were added or removed after mask_)"
        )
    records, streams, materialized = [], [], []
    for source in plan.layers:
        layer = layers[source.name]
        record, stream = _layer_record(source, layer, codec=codec)
        records.append(record)
        streams.append(stream)
        materialized.append(layer.materialized_weight().cpu().numpy())
    tensors: dict[str, np.ndarray] = {MASKS_TENSOR: np.concatenate(streams)}
    banks, values = _banks(model)
    tensors.update(values)
    dense, dense_tensors = _dense_leftovers(model, dense_dtype=dense_dtype, fold_batchnorm=fold_batchnorm,
                                            cap_outliers=cap_outliers)
    tensors.update(dense_tensors)
    header = FileHeader(
        producer={"name": PRODUCER, "version": __version__},
        generator=Generator(GENERATOR, plan.seed),
        config=config_of(model),
        banks=banks,
        layers=tuple(records),
        dense=dense,
        architecture=_architecture(model, architecture),
        fingerprint=Fingerprint(CHECKSUM_ALGORITHM, weights_fingerprint(materialized)),
        provenance=provenance or {},
    )
    return Payload(header, tensors)


def to_bytes(model: nn.Module, *, format_version: int = FORMAT_VERSION, **options) -> bytes:
    """The `.pemn` bytes of a masked model: ``encode(export(model, **options), format_version)``."""
    return encode(export(model, **options), format_version)


def _check_options(*, dense_dtype: str, codec: str) -> None:
    """ConfigError for an option value no writer accepts, before any work."""
    if dense_dtype not in DENSE_DTYPES:
        raise ConfigError(f"dense_dtype must be one of {DENSE_DTYPES}, found {dense_dtype!r}")
    if codec not in WRITE_CODECS:
        raise ConfigError(f"codec must be one of {WRITE_CODECS}, found {codec!r}")


def _layer_record(source: LayerSource, layer: MaskedLayer, *, codec: str) -> tuple[LayerRecord, np.ndarray]:
    """One masked layer's header record (``source``: its entry in the model's plan) and its coded mask stream."""
    coded = encode_mask(layer.mask().cpu().numpy(), codec)
    coding = coded.coding
    rice = coding.codec == "rice"
    record = LayerRecord(
        name=source.name,
        type=layer.dense_type.__name__,
        shape=tuple(source.shape),
        bank=source.bank,
        scale=source.scale,
        codec=coding.codec,
        ones=coding.ones,
        bytes=int(coded.data.size),
        rice_k=coding.rice_k if rice else None,
        invert=coding.invert if rice else None,
    )
    return record, coded.data


def _banks(model: nn.Module) -> tuple[tuple[BankRecord, ...], dict[str, np.ndarray]]:
    """The bank records and the value vectors stored explicitly (rp banks and learned values)."""
    plan = plan_of(model)
    stored = plan.strategy == "rp" or config_of(model).learn_values
    records, values = [], {}
    for spec, bank in zip(plan.banks, values_of(model), strict=False):
        if stored:
            values[f"{VALUES_PREFIX}{spec.index}"] = bank.unit.detach().cpu().float().numpy().copy()
        records.append(BankRecord(spec.index, spec.size, spec.length, spec.tiling, stored))
    return tuple(records), values


def _architecture(model: nn.Module, architecture: dict | str | None) -> Architecture:
    """The reference to record: the zoo's (None), a "module:function" factory, or the caller's dict."""
    if architecture is None:
        arch = getattr(model, "pemn_arch", None)
        if arch is None:
            return Architecture("none", {"kind": "none"})
        return Architecture("registry", {"kind": "registry", "name": arch["name"], "kwargs": dict(arch["kwargs"])})
    if isinstance(architecture, str):
        if ":" not in architecture:
            raise ConfigError(f"architecture string must be 'module:function', found {architecture!r}")
        return Architecture("import", {"kind": "import", "target": architecture, "kwargs": {}})
    if not isinstance(architecture, dict) or architecture.get("kind") not in ARCH_KINDS:
        raise ConfigError("architecture must be None, 'module:function' or a dict with kind registry/import/none")
    return Architecture(architecture["kind"], dict(architecture))


def _bn_fold(module: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) with BN_eval(x) == x * scale + shift, computed in float64.

    Only for a module that tracks running statistics (both buffers exist).
    """
    var = cast(torch.Tensor, module.running_var).double()
    mean = cast(torch.Tensor, module.running_mean).double()
    weight = module.weight.double() if module.weight is not None else torch.ones_like(var)
    bias = module.bias.double() if module.bias is not None else torch.zeros_like(var)
    scale = weight / torch.sqrt(var + module.eps)
    return scale.float(), (bias - mean * scale).float()


def _leftover_state(model: nn.Module, *, fold_batchnorm: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict minus masked scores, value banks and ``num_batches_tracked`` counters (they only
    matter for momentum=None training), with BatchNorms folded when asked; and the folded names."""
    skip = {f"{name}.scores" for name, _ in masked_layers(model)}
    state = {
        k: v for k, v in model.state_dict().items()
        if k not in skip and ".value_bank." not in f".{k}" and not k.endswith("num_batches_tracked")
    }
    folded = []
    if fold_batchnorm:
        for name, module in model.named_modules():
            if (isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
                    and module.running_var is not None):
                scale, shift = _bn_fold(module)
                prefix = f"{name}." if name else ""
                for key in ("running_mean", "running_var"):
                    state.pop(prefix + key, None)
                state[prefix + "weight"], state[prefix + "bias"] = scale, shift
                folded.append(name)
    return state, folded


def _stored_leftover(value: torch.Tensor, float_group: str) -> tuple[str, np.ndarray]:
    """(group, array) of one leftover: floats in ``float_group`` (fp32 when outside fp16's range), others int64."""
    if not value.dtype.is_floating_point:
        return "i64", value.to(torch.int64).numpy()
    array32 = value.float().numpy()
    with np.errstate(over="ignore"):
        array = array32.astype(DENSE_GROUPS[float_group])
    if not np.isfinite(array).all() and np.isfinite(array32).all():
        return "f32", array32
    return float_group, array


def _dense_leftovers(
    model: nn.Module, *, dense_dtype: str, fold_batchnorm: bool, cap_outliers: bool = False
) -> tuple[DenseRecord, dict[str, np.ndarray]]:
    """The ``dense`` record (storage table in sorted key order) and its flat group tensors; ``int8``
    (format version 3): each floating leftover that q8 holds in fewer bytes than float16 in group ``q8``, the
    file's outliers at most ``q8.OUTLIER_RESERVE``'s share with ``cap_outliers`` (``allot_outliers``)."""
    state, folded = _leftover_state(model, fold_batchnorm=fold_batchnorm)
    float_group = DENSE_FLOAT_GROUP[dense_dtype]
    groups: dict[str, list[np.ndarray]] = {}
    q8: list[Q8Entry] = []
    table = []
    floats = [key for key in sorted(state) if dense_dtype == "int8" and state[key].dtype.is_floating_point]
    arrays = [state[key].detach().cpu().float().numpy() for key in floats]
    allowed = dict(zip(floats, allot_outliers(arrays) if cap_outliers else [None] * len(floats), strict=True))
    for key in sorted(state):
        value = state[key].detach().cpu()
        coded = quantize(value.float().numpy(), allowed[key]) if key in allowed else None
        if coded is not None:
            q8.append(coded)
            table.append(DenseEntry(key, tuple(value.shape), Q8_GROUP, int(coded.index.size)))
            continue
        group, array = _stored_leftover(value, float_group)
        groups.setdefault(group, []).append(array.reshape(-1))
        table.append(DenseEntry(key, tuple(value.shape), group))
    tensors = {DENSE_PREFIX + group: np.concatenate(parts) for group, parts in groups.items()}
    if q8:
        tensors.update(_q8_tensors(q8))
    return DenseRecord(dense_dtype, tuple(folded), tuple(table)), tensors


def _q8_tensors(entries: list[Q8Entry]) -> dict[str, np.ndarray]:
    """Group q8's four tensors (formats/pemn-v3.md section 3), entries in table order."""
    parts = {
        Q8_CODES: [e.codes for e in entries],
        Q8_RANGE: [np.array([e.lo, e.step], dtype=np.float16) for e in entries],
        Q8_INDEX: [e.index for e in entries],
        Q8_VALUE: [e.values for e in entries],
    }
    return {name: np.concatenate(parts[name]).astype(dtype) for name, (dtype, _) in Q8_TENSORS.items()}
