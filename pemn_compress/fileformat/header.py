"""The PEMN header (formats/pemn-v1.md section 6.2) as typed records, and its one JSON conversion.

``FileHeader.to_json(version)`` gives the JSON object a writer serializes (``canonical_json``);
``FileHeader.from_json(obj, max_weights=..., version=...)`` is the only way back: it checks the object
section by section, in the order of the spec's section 12 (rows 13 to 20), and raises the error that
section names. What it cannot check alone (the tensors the header describes, the data checksum) is
checked by ``reader.decode``, which calls it.

Format version 2 (formats/pemn-v2.md section 4) leaves out what section 9 derives: ``generator``,
``banks``, each layer's ``bank``, a ``raw`` layer's ``bytes`` and a ``scale`` equal to the writer's
scale rule. ``from_json(..., version=2)`` completes an absent one with its derived value, then checks
everything as version 1 does; a present one is checked (or, for ``scale``, used) as in version 1.

Invariants of a record built by ``from_json``: every type and range of sections 6.2 and 6.3 holds,
the banks are exactly those section 9 derives from ``config`` and the layer shapes, the layers'
weights stay within the per-layer and total limits. ``to_json`` of such a record followed by
``canonical_json`` gives back the text it was read from when that text was canonical and held no
unknown key (the spec lets readers ignore unknown keys, so they are not kept).

numpy only, no torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import MaskConfig
from ..errors import ConfigError, HeaderError, LimitError, MissingKeyError, ShapeError
from ..keys import state_key
from ..strategies import BankSpec, LayerSource, ValuePlan, make_plan
from .codecs import MaskCoding
from .constants import (
    ARCH_KINDS,
    CHECKSUM_ALGORITHM,
    CODECS,
    DENSE_DTYPES,
    DENSE_GROUPS,
    GENERATOR,
    HEX_DIGEST,
    LAYER_NDIM,
    LAYER_TYPES,
    MAX_LAYER_WEIGHTS,
    MAX_NDIM,
    MAX_TOTAL_WEIGHTS,
    Q8_GROUP,
    Q8_MAX_NUMEL,
    Q8_TENSORS,
)

__all__ = [
    "DEFAULT_MAX_WEIGHTS",
    "Architecture",
    "BankRecord",
    "Checksums",
    "DenseEntry",
    "DenseRecord",
    "FileHeader",
    "Fingerprint",
    "Generator",
    "Json",
    "LayerRecord",
    "canonical_json",
]

DEFAULT_MAX_WEIGHTS = 1 << 31  # total masked weights a reader materializes unless told otherwise

Json = Any  # a value parsed by container.strict_json: dict, list, str, int, float, bool or None

IMPORT_TARGET = re.compile(  # "module:function": dotted ASCII identifiers on both sides of one colon
    r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
)
FOLDED_STORED = ("weight", "bias")  # what a folded BatchNorm keeps in the dense table (section 11.2) ...
FOLDED_DROPPED = ("running_mean", "running_var")  # ... and what it must not

REQUIRED_KEYS = (
    "producer", "generator", "config", "banks", "layers", "dense", "architecture", "fingerprint", "checksums",
)
DERIVED_KEYS = ("generator", "banks")  # required in version 1; left out by version 2 writers (derived)


def canonical_json(value: Json) -> str:
    """Sorted keys, no spaces, ASCII only, no NaN: one text per value (spec section 6.1)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


# --------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Generator:
    """``generator``: the value generator (spec section 8) and its seed."""

    name: str
    seed: int

    def to_json(self) -> dict:
        return {"name": self.name, "seed": self.seed}


@dataclass(frozen=True)
class BankRecord:
    """One entry of ``banks``: a value bank as section 9 derives it, and whether its values are stored."""

    index: int
    size: int
    length: int
    tiling: str
    stored: bool

    def to_json(self) -> dict:
        return {
            "index": self.index, "size": self.size, "length": self.length, "tiling": self.tiling, "stored": self.stored,
        }


@dataclass(frozen=True)
class LayerRecord:
    """One entry of ``layers``: a masked layer, the bank it reads and how its mask is coded.

    ``rice_k`` and ``invert`` are set for the ``rice`` codec only (None for ``raw``).
    """

    name: str
    type: str
    shape: tuple[int, ...]
    bank: int
    scale: float
    codec: str
    ones: int
    bytes: int
    rice_k: int | None = None
    invert: bool | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def coding(self) -> MaskCoding:
        """What ``codecs.decode_mask`` needs to decode this layer's stream."""
        return MaskCoding(self.codec, self.ones, self.rice_k, bool(self.invert))

    @property
    def kept(self) -> int:
        """Kept weights of the mask (``ones`` counts the ones of ``mask XOR invert``)."""
        return self.numel - self.ones if self.invert else self.ones

    def to_json(self, derived_scale: float | None = None) -> dict:
        """The layer object; with ``derived_scale`` (version 2), without what section 9 derives: the
        bank, a ``raw`` layer's byte count and the scale when it equals ``derived_scale``."""
        entry = {
            "name": self.name, "type": self.type, "shape": list(self.shape), "bank": self.bank, "scale": self.scale,
            "codec": self.codec, "ones": self.ones, "bytes": self.bytes,
        }
        if self.codec == "rice":
            entry.update(rice_k=self.rice_k, invert=self.invert)
        if derived_scale is not None:
            del entry["bank"]
            if self.codec == "raw":
                del entry["bytes"]
            if self.scale == derived_scale:
                del entry["scale"]
        return entry


@dataclass(frozen=True)
class DenseEntry:
    """One row ``[key, shape, group]`` of ``dense.tensors`` (spec section 11.1); a ``q8`` row (version 3,
    formats/pemn-v3.md) is ``[key, shape, "q8", outliers]``, with its number of float16 outliers."""

    key: str
    shape: tuple[int, ...]
    group: str
    outliers: int | None = None  # q8 only

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def stored(self) -> int:
        """Values in its group's tensor: every element, or (q8) the codes of those that are no outlier."""
        return self.numel - (self.outliers or 0)

    def to_json(self) -> list:
        row = [self.key, list(self.shape), self.group]
        return row if self.outliers is None else [*row, self.outliers]


@dataclass(frozen=True)
class DenseRecord:
    """``dense``: the leftovers' storage dtype, the folded BatchNorm modules and the storage table.

    Invariants of a decoded record: ``folded_batchnorm`` holds unique strings, each naming a module
    whose ``weight`` and ``bias`` are floating entries of the table and whose running statistics are
    not (a loader still refuses a name that is not a BatchNorm module of the model); a ``float32``
    record has no ``f16`` entry.
    """

    dtype: str
    folded_batchnorm: tuple[str, ...]
    tensors: tuple[DenseEntry, ...]

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "folded_batchnorm": list(self.folded_batchnorm),
                "tensors": [entry.to_json() for entry in self.tensors]}

    def group_sizes(self) -> dict[str, int]:
        """Values per group tensor ``dense.<group>``, in first-use order (q8: its codes, outliers left out)."""
        sizes: dict[str, int] = {}
        for entry in self.tensors:
            sizes[entry.group] = sizes.get(entry.group, 0) + entry.stored
        return sizes

    def q8_entries(self) -> tuple[DenseEntry, ...]:
        """The ``q8`` rows, in table order (version 3)."""
        return tuple(entry for entry in self.tensors if entry.group == Q8_GROUP)

    def q8_lengths(self) -> dict[str, int]:
        """The length of each ``q8`` tensor (formats/pemn-v3.md section 3); empty without ``q8`` rows."""
        q8 = self.q8_entries()
        if not q8:
            return {}
        counts = {"codes": sum(e.stored for e in q8), "ranges": 2 * len(q8),
                  "outliers": sum(e.outliers or 0 for e in q8)}
        return {name: counts[counted] for name, (_, counted) in Q8_TENSORS.items()}


@dataclass(frozen=True)
class Architecture:
    """``architecture``: how to rebuild the module (spec section 11.3).

    ``reference`` is the whole object as written (``kind`` plus ``name``/``target``/``kwargs``). On
    reading, the table of section 11.3 is checked (registry: ``name`` a string and ``kwargs`` an
    object; import: ``target`` a ``module:function`` reference and ``kwargs`` an object); what the
    names mean is still untrusted input for the loader.
    """

    kind: str
    reference: dict

    def to_json(self) -> dict:
        return dict(self.reference)


@dataclass(frozen=True)
class Fingerprint:
    """``fingerprint``: SHA-256 of the materialized float32 weights, in layer order (spec section 10)."""

    algorithm: str
    value: str

    def to_json(self) -> dict:
        return {"algorithm": self.algorithm, "value": self.value}


@dataclass(frozen=True)
class Checksums:
    """``checksums``: SHA-256 of the whole data buffer."""

    algorithm: str
    data: str

    def to_json(self) -> dict:
        return {"algorithm": self.algorithm, "data": self.data}


@dataclass(frozen=True)
class FileHeader:
    """The PEMN header, section by section.

    ``producer`` (checked to be ``{name: str, version: str}``) and ``provenance`` (a free JSON object) are
    informative, untrusted JSON kept as read; ``provenance`` None means the optional key is absent.
    ``checksums`` is None in a header handed to ``writer.encode`` (which computes it from the
    tensors) and always set once decoded.
    """

    producer: Json
    generator: Generator
    config: MaskConfig
    banks: tuple[BankRecord, ...]
    layers: tuple[LayerRecord, ...]
    dense: DenseRecord
    architecture: Architecture
    fingerprint: Fingerprint
    checksums: Checksums | None = None
    provenance: Json = None

    def plan(self) -> ValuePlan:
        """The value plan the banks and layers describe (the one ``make_plan`` derives for a valid header)."""
        banks = tuple(BankSpec(b.index, b.size, b.length, b.tiling) for b in self.banks)
        layers = tuple(LayerSource(layer.name, layer.shape, layer.bank, layer.scale) for layer in self.layers)
        return ValuePlan(self.config.strategy, self.config.distribution, self.config.seed, banks, layers)

    def to_json(self, version: int = 1) -> dict:
        """The header object of format ``version``; ``checksums`` must be set.

        Version 2 leaves out what a reader derives (module docstring); version 1 writes everything.
        """
        if self.checksums is None:
            raise ValueError("FileHeader.to_json needs checksums (writer.encode computes them)")
        compact = version >= 2
        derived = make_plan(self.config, [(layer.name, layer.shape) for layer in self.layers]) if compact else None
        obj = {
            "producer": self.producer,
            "generator": self.generator.to_json(),
            "config": self.config.to_dict(),
            "banks": [bank.to_json() for bank in self.banks],
            "layers": [
                layer.to_json(None if derived is None else derived.layers[i].scale)
                for i, layer in enumerate(self.layers)
            ],
            "dense": self.dense.to_json(),
            "architecture": self.architecture.to_json(),
            "fingerprint": self.fingerprint.to_json(),
            "checksums": self.checksums.to_json(),
        }
        if compact:
            for key in DERIVED_KEYS:
                del obj[key]
        if self.provenance is not None:
            obj["provenance"] = self.provenance
        return obj

    @classmethod
    def from_json(cls, obj: dict, *, max_weights: int = DEFAULT_MAX_WEIGHTS, version: int = 1) -> FileHeader:
        """Check the header object section by section and return it typed (see the module docstring).

        ``max_weights``: the caller's limit on the total masked weights (LimitError beyond it).
        ``version``: the file's format version; from 2 on, derived keys may be absent.
        """
        compact = version >= 2
        _check_required(obj, DERIVED_KEYS if compact else ())
        if compact and "generator" not in obj:
            config = _check_config(_require(obj, "config", dict, "header"), None)
            generator = Generator(GENERATOR, config.seed)
        else:
            generator = _check_generator(_require(obj, "generator", dict, "header"))
            config = _check_config(_require(obj, "config", dict, "header"), generator)
        layers = _check_layers(_require(obj, "layers", list, "header"), compact)
        _check_total_weights(layers, max_weights)
        raw_banks = None if compact and "banks" not in obj else _require(obj, "banks", list, "header")
        banks, layers = _check_banks(raw_banks, config, layers)
        dense = _check_dense(_require(obj, "dense", dict, "header"), version)
        _check_dense_not_masked(dense, layers)
        _check_producer(obj["producer"])
        architecture = _check_architecture(_require(obj, "architecture", dict, "header"))
        fingerprint = _check_fingerprint(_require(obj, "fingerprint", dict, "header"))
        checksums = _check_checksums(_require(obj, "checksums", dict, "header"))
        provenance = _require(obj, "provenance", dict, "header") if "provenance" in obj else None
        return cls(obj["producer"], generator, config, banks, layers, dense, architecture, fingerprint, checksums,
                   provenance=provenance)


# --------------------------------------------------------------------------------------- checks
def _require(mapping: Mapping, key: str, kind: type, where: str) -> Any:
    """``mapping[key]`` of JSON type ``kind`` (int: no bool; float: any finite non-bool number).

    MissingKeyError when absent, HeaderError when of another type.
    """
    if key not in mapping:
        raise MissingKeyError(f"{where}: required key {key!r} is missing")
    value = mapping[key]
    if kind is int and (type(value) is not int):
        raise HeaderError(f"{where}.{key}: expected an integer, found {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        raise HeaderError(f"{where}.{key}: expected a finite number, found {value!r}")
    if kind not in (int, float) and not isinstance(value, kind):
        raise HeaderError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, found {type(value).__name__}")
    return value


def _int_list(values: list, what: str) -> list[int]:
    """``values`` if every member is a JSON integer, else HeaderError (a wrong JSON type; a dimension
    of the right type but out of range is the caller's ShapeError)."""
    for value in values:
        if type(value) is not int:
            raise HeaderError(f"{what}: every dimension must be an integer, found {json.dumps(value)[:40]}")
    return values


def _check_required(obj: dict, optional: tuple[str, ...]) -> None:
    """Section 12 row 13: the nine required keys (version 2: seven, ``optional`` may be absent)."""
    for key in REQUIRED_KEYS:
        if key not in obj and key not in optional:
            raise MissingKeyError(f"header: required key {key!r} is missing")


def _check_generator(gen: dict) -> Generator:
    """Row 14: ``generator.name`` is this format's generator, ``seed`` an integer."""
    name = _require(gen, "name", str, "generator")
    if name != GENERATOR:
        raise HeaderError(f"generator.name: expected {GENERATOR!r}, found {name!r}")
    return Generator(name, _require(gen, "seed", int, "generator"))


# Section 6.3: what an absent config field means. The format's own defaults, pinned here: MaskConfig's
# defaults are the product's (they move with measurements) and must not change how a file decodes.
FORMAT_CONFIG_DEFAULTS = {
    "density": 0.5, "strategy": "onelayer", "ratio": None, "rp_mode": "copy", "distribution": "normal", "rescale": True,
    "seed": 0, "learn_values": False, "train_norm": True, "train_bias": True, "train_other": True, "version": 1,
}  # fmt: skip


def _check_config(raw: dict, generator: Generator | None) -> MaskConfig:
    """Row 14: ``config`` is a valid MaskConfig (section 6.3) whose seed is the generator's (version 2
    without ``generator``: None, the generator is derived from the config); absent fields take the
    format's defaults (``FORMAT_CONFIG_DEFAULTS``)."""
    try:
        config = MaskConfig.from_dict({**FORMAT_CONFIG_DEFAULTS, **raw} if isinstance(raw, dict) else raw)
    except (ConfigError, TypeError) as exc:
        raise HeaderError(f"config: {exc}") from exc
    if generator is not None and config.seed != generator.seed:
        raise HeaderError(f"config.seed {config.seed} differs from generator.seed {generator.seed}")
    return config


def _check_layers(raw: list, compact: bool) -> tuple[LayerRecord, ...]:
    """Row 15: a non-empty list of layer objects with unique names (``compact``: version 2, see
    ``_check_layer``)."""
    if not raw:
        raise HeaderError("header.layers is empty: a .pemn file has at least one masked layer")
    layers: list[LayerRecord] = []
    names: set[str] = set()
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise HeaderError(f"layers[{i}]: expected an object")
        name = _require(entry, "name", str, f"layers[{i}]")
        if name in names:
            raise HeaderError(f"layer {name!r}: duplicate layer name")
        names.add(name)
        layers.append(_check_layer(entry, name, compact))
    return tuple(layers)


# placeholders of a version 2 layer whose bank or scale is left out, which ``_check_banks`` replaces by the
# derived value: values no file can hold (a JSON integer below -2**63 is refused, a NaN is not JSON)
_DERIVED_BANK, _DERIVED_SCALE = -(1 << 64), math.nan


def _check_layer(entry: dict, name: str, compact: bool) -> LayerRecord:
    """Row 15, one layer: shape and its limit first, then type, bank, scale and the mask coding.

    ``compact`` (version 2): an absent ``bank`` or ``scale`` is left to ``_check_banks`` (placeholders),
    an absent ``bytes`` of a ``raw`` layer is ``ceil(n / 8)``.
    """
    where = f"layer {name!r}"
    shape = _int_list(_require(entry, "shape", list, where), f"{where}: shape")
    if not (2 <= len(shape) <= 5) or not all(d > 0 for d in shape):
        raise ShapeError(f"{where}: shape must be 2 to 5 positive integers, found {shape!r}")
    n = math.prod(shape)
    if n > MAX_LAYER_WEIGHTS:
        raise LimitError(f"{where}: declares {n} weights; the limit per layer is {MAX_LAYER_WEIGHTS}")
    layer_type = _require(entry, "type", str, where)
    if layer_type not in LAYER_TYPES:
        raise HeaderError(f"{where}: type must be one of {LAYER_TYPES}, found {layer_type!r}")
    if len(shape) != LAYER_NDIM[layer_type]:
        raise ShapeError(
            f"{where}: a {layer_type} weight has {LAYER_NDIM[layer_type]} dimensions, found shape {shape!r}"
        )
    bank = _DERIVED_BANK if compact and "bank" not in entry else _require(entry, "bank", int, where)
    scale = _DERIVED_SCALE if compact and "scale" not in entry else _require(entry, "scale", float, where)
    if float(np.float32(scale)) != scale and not math.isnan(scale):
        raise HeaderError(f"{where}: scale {scale!r} is not exactly representable in float32")
    codec = _require(entry, "codec", str, where)
    if codec not in CODECS:
        raise HeaderError(f"{where}: codec must be one of {CODECS}, found {codec!r}")
    ones = _require(entry, "ones", int, where)
    if not (0 <= ones <= n):
        raise HeaderError(f"{where}: ones must be in [0, {n}], found {ones}")
    rice_k, invert = None, None
    if codec == "rice":
        rice_k = _require(entry, "rice_k", int, where)
        invert = entry.get("invert")
        if not isinstance(invert, bool):
            raise HeaderError(f"{where}: rice codec needs a boolean 'invert'")
    if compact and codec == "raw" and "bytes" not in entry:
        size = (n + 7) // 8
    else:
        size = _require(entry, "bytes", int, where)
    if size < 0:
        raise HeaderError(f"{where}: bytes must be >= 0, found {size}")
    if codec == "raw" and size != (n + 7) // 8:
        raise ShapeError(f"{where}: raw mask needs {(n + 7) // 8} bytes for {n} weights, found {size}")
    return LayerRecord(name, layer_type, tuple(shape), bank, scale, codec, ones, size, rice_k, invert)


def _check_total_weights(layers: tuple[LayerRecord, ...], max_weights: int) -> None:
    """Row 17: the total masked weights within the caller's limit (and never beyond MAX_TOTAL_WEIGHTS)."""
    total = sum(layer.numel for layer in layers)
    if total > min(max_weights, MAX_TOTAL_WEIGHTS):
        raise LimitError(
            f"file declares {total} masked weights in all; this reader's limit is {max_weights} (max_weights=)"
        )


def _check_banks(
    raw: list | None, config: MaskConfig, layers: tuple[LayerRecord, ...]
) -> tuple[tuple[BankRecord, ...], tuple[LayerRecord, ...]]:
    """Row 18: the banks are exactly what the strategy makes of these layers, with the same JSON
    types; ``stored`` is a bool; each layer reads the bank the strategy gives it.

    Version 2: ``raw`` None (``banks`` left out) gives the derived banks; a layer whose bank or scale
    was left out gets the derived one. Returns the banks and the completed layers.
    """
    try:
        expected = make_plan(config, [(layer.name, layer.shape) for layer in layers])
    except ConfigError as exc:
        raise HeaderError(f"config and layers are inconsistent: {exc}") from exc
    stored_rule = config.strategy == "rp" or config.learn_values
    layers = tuple(
        dataclasses.replace(
            layer,
            bank=source.bank if layer.bank == _DERIVED_BANK else layer.bank,
            scale=source.scale if math.isnan(layer.scale) else layer.scale,
        )
        for source, layer in zip(expected.layers, layers, strict=True)
    )
    if raw is None:
        raw = [{**dataclasses.asdict(spec), "stored": stored_rule} for spec in expected.banks]
    if len(raw) != len(expected.banks):
        raise HeaderError(
            f"header.banks: strategy {config.strategy!r} makes {len(expected.banks)} banks, found {len(raw)}"
        )
    banks = []
    for spec, entry in zip(expected.banks, raw, strict=True):
        where = f"banks[{spec.index}]"
        if not isinstance(entry, dict):
            raise HeaderError(f"{where}: expected an object")
        for key in ("index", "size", "length", "tiling"):
            want, found = getattr(spec, key), entry.get(key)
            if found != want or type(found) is not type(want):
                raise HeaderError(f"{where}.{key}: expected {want!r} for these layers, found {found!r}")
        stored = _require(entry, "stored", bool, where)
        if stored != stored_rule:
            raise HeaderError(
                f"{where}.stored: expected {not stored} (values are stored exactly for strategy 'rp' and for "
                f"learned values; strategy {config.strategy!r}, learn_values {config.learn_values}), found {stored}"
            )
        banks.append(BankRecord(spec.index, spec.size, spec.length, spec.tiling, stored))
    for source, layer in zip(expected.layers, layers, strict=True):
        if layer.bank != source.bank:
            raise HeaderError(
                f"layer {source.name!r}: bank must be {source.bank} under strategy {config.strategy!r}, "
                f"found {layer.bank}"
            )
    return tuple(banks), layers


def _check_dense(raw: dict, version: int = 1) -> DenseRecord:
    """Row 19 (header part): dtype, the folded BatchNorm list, the table's rows and unique keys; from
    version 3 on, dtype ``int8`` and ``q8`` rows (formats/pemn-v3.md section 2)."""
    dtypes = DENSE_DTYPES if version >= 3 else tuple(d for d in DENSE_DTYPES if d != "int8")
    groups = (*DENSE_GROUPS, Q8_GROUP) if version >= 3 else tuple(DENSE_GROUPS)
    dtype = _require(raw, "dtype", str, "dense")
    if dtype not in dtypes:
        raise HeaderError(f"dense.dtype must be one of {dtypes}, found {dtype!r}")
    folded = _require(raw, "folded_batchnorm", list, "dense")
    table = _require(raw, "tensors", list, "dense")
    entries: list[DenseEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(table):
        if not (isinstance(item, list) and len(item) in (3, 4) and isinstance(item[0], str)
                and isinstance(item[1], list) and item[2] in groups and len(item) == (4 if item[2] == Q8_GROUP else 3)):
            expected = "[key, shape, group] or [key, shape, 'q8', outliers]" if version >= 3 else "[key, shape, group]"
            raise HeaderError(f"dense.tensors[{i}]: expected {expected} with group in {sorted(groups)}, found {item!r}")
        key, shape, group = item[:3]
        if key in seen:
            raise HeaderError(f"dense.tensors: duplicate key {key!r}")
        seen.add(key)
        _int_list(shape, f"dense tensor {key!r}: shape")
        if len(shape) > MAX_NDIM or not all(d >= 0 for d in shape):
            raise ShapeError(
                f"dense tensor {key!r}: shape must be at most {MAX_NDIM} non-negative integers, found {shape!r}"
            )
        if group == "f16" and dtype == "float32":
            raise HeaderError(f"dense tensor {key!r} is in group 'f16' but dense.dtype is 'float32' (full precision)")
        outliers = _check_q8_row(key, shape, item[3], dtype) if group == Q8_GROUP else None
        entries.append(DenseEntry(key, tuple(shape), group, outliers))
    return DenseRecord(dtype, _check_folded(folded, entries), tuple(entries))


def _check_q8_row(key: str, shape: list[int], outliers: Any, dtype: str) -> int:
    """A ``q8`` row's rules (formats/pemn-v3.md section 2): only under dtype ``int8``, at most
    ``Q8_MAX_NUMEL`` values, an outlier count from 0 to its number of values."""
    if dtype != "int8":
        raise HeaderError(f"dense tensor {key!r} is in group 'q8' but dense.dtype is {dtype!r}, not 'int8'")
    numel = math.prod(shape)
    if numel > Q8_MAX_NUMEL:
        raise HeaderError(f"dense tensor {key!r} in group 'q8' has {numel:,} values: at most {Q8_MAX_NUMEL:,}")
    if not (isinstance(outliers, int) and not isinstance(outliers, bool) and 0 <= outliers <= numel):
        raise HeaderError(f"dense tensor {key!r}: its outlier count must be an integer from 0 to {numel}, "
                          f"found {outliers!r}")
    return outliers


def _check_folded(folded: list, entries: list[DenseEntry]) -> tuple[str, ...]:
    """Row 19: ``folded_batchnorm`` holds unique strings, each a module whose ``weight`` and ``bias``
    are floating table entries and whose running statistics are not (section 11.2)."""
    groups = {entry.key: entry.group for entry in entries}
    names: set[str] = set()
    for name in folded:
        if not isinstance(name, str) or name in names:
            problem = "a duplicate" if isinstance(name, str) else "not a string"
            raise HeaderError(f"dense.folded_batchnorm: {json.dumps(name)[:80]} is {problem}")
        names.add(name)
        for attribute in FOLDED_STORED:
            if groups.get(state_key(name, attribute)) not in ("f32", "f16", Q8_GROUP):
                raise HeaderError(
                    f"dense.folded_batchnorm: {name!r} needs a floating dense entry "
                    f"{state_key(name, attribute)!r} (its folded {attribute})"
                )
        for attribute in FOLDED_DROPPED:
            if state_key(name, attribute) in groups:
                raise HeaderError(
                    f"dense.folded_batchnorm: {name!r} is folded, yet its {state_key(name, attribute)!r} is stored"
                )
    return tuple(folded)


def _check_dense_not_masked(dense: DenseRecord, layers: tuple[LayerRecord, ...]) -> None:
    """Row 19: no leftover is a masked layer's weight (section 11.1): the file stores that weight as a mask."""
    weights = {state_key(layer.name, "weight"): layer.name for layer in layers}
    for entry in dense.tensors:
        if entry.key in weights:
            raise HeaderError(
                f"dense.tensors: {entry.key!r} is the weight of masked layer {weights[entry.key]!r}, "
                "which the file stores as a mask, not as a leftover"
            )


def _check_digest(raw: dict, key: str, where: str) -> str:
    """Row 20: ``raw[key]`` is a SHA-256 as the file writes it, 64 lowercase hex digits (section 6.2)."""
    value = raw.get(key)
    if not (isinstance(value, str) and re.fullmatch(HEX_DIGEST, value)):
        raise HeaderError(f"{where}.{key} must be 64 lowercase hex digits, found {json.dumps(value)[:80]}")
    return value


def _check_producer(raw: Json) -> None:
    """Row 20: ``producer`` is ``{"name": str, "version": str}`` (other keys ignored)."""
    if not (isinstance(raw, dict) and isinstance(raw.get("name"), str) and isinstance(raw.get("version"), str)):
        raise HeaderError(f"producer must be {{'name': str, 'version': str}}, found {json.dumps(raw)[:80]}")


def _check_architecture(raw: dict) -> Architecture:
    """Row 20: a known ``architecture.kind`` and the keys section 11.3 gives it, of their types
    (what they name is checked by the loader)."""
    kind = _require(raw, "kind", str, "architecture")
    if kind not in ARCH_KINDS:
        raise HeaderError(f"architecture.kind must be one of {ARCH_KINDS}, found {kind!r}")
    if kind == "registry" and not isinstance(raw.get("name"), str):
        found = json.dumps(raw.get("name"))[:80]
        raise HeaderError(f"architecture.name: a registry reference needs a string, found {found}")
    if kind == "import":
        target = raw.get("target")
        if not (isinstance(target, str) and IMPORT_TARGET.fullmatch(target)):
            raise HeaderError(f"architecture.target must be 'module:function', found {json.dumps(target)[:80]}")
    if kind != "none" and not isinstance(raw.get("kwargs"), dict):
        found = json.dumps(raw.get("kwargs"))[:80]
        raise HeaderError(f"architecture.kwargs: a {kind} reference needs an object, found {found}")
    return Architecture(kind, dict(raw))


def _check_fingerprint(raw: dict) -> Fingerprint:
    """Row 20: ``{"algorithm": "sha256", "value": hex}``."""
    if raw.get("algorithm") != CHECKSUM_ALGORITHM or not isinstance(raw.get("value"), str):
        raise HeaderError(f"fingerprint must be {{'algorithm': {CHECKSUM_ALGORITHM!r}, 'value': hex}}")
    return Fingerprint(raw["algorithm"], _check_digest(raw, "value", "fingerprint"))


def _check_checksums(raw: dict) -> Checksums:
    """Row 20: ``{"algorithm": "sha256", "data": hex}``."""
    if raw.get("algorithm") != CHECKSUM_ALGORITHM or not isinstance(raw.get("data"), str):
        raise HeaderError(f"checksums must be {{'algorithm': {CHECKSUM_ALGORITHM!r}, 'data': hex}}")
    return Checksums(raw["algorithm"], _check_digest(raw, "data", "checksums"))
