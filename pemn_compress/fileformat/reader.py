"""Reading `.pemn` files without torch: container, header validation, masks, regenerated weights.

``read_pemn(path)`` parses and validates everything the file declares *before* any large
allocation: the container tiling, the header hash, every tensor checksum, every layer's shape,
bank, codec and mask length, and the total number of weights against a limit. ``decode_weights``
then rebuilds the materialized weights (``values * scale * mask``) in numpy, bit-exactly.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import rng
from ..config import MaskConfig
from ..errors import (
    ChecksumError,
    ConfigError,
    HeaderError,
    LimitError,
    MissingKeyError,
    ShapeError,
    VersionError,
)
from ..strategies import BankSpec, LayerSource, ValuePlan, bank_index_map, make_plan
from .codecs import decode_mask
from .constants import (
    ARCH_KINDS,
    CHECKSUM_ALGORITHM,
    CODECS,
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
    MAX_LAYER_WEIGHTS,
    MAX_TOTAL_WEIGHTS,
    VALUES_PREFIX,
)
from .container import data_buffer, decode_container, strict_json
from .sniff import wrong_file_error

__all__ = [
    "DEFAULT_MAX_WEIGHTS",
    "PemnFile",
    "bank_tables",
    "check_fingerprint",
    "decode_masks",
    "decode_weights",
    "read_pemn",
    "verify_fingerprint",
    "weights_fingerprint",
]

DEFAULT_MAX_WEIGHTS = 1 << 31  # total masked weights a reader materializes unless told otherwise

_REQUIRED = ("producer", "generator", "config", "banks", "layers", "dense", "architecture", "fingerprint", "checksums")
LAYER_TYPES = ("Linear", "Conv1d", "Conv2d")


@dataclass
class PemnFile:
    """A validated `.pemn` file: its header, its tensors (numpy, read-only) and derived objects."""

    header: dict
    tensors: dict[str, np.ndarray]
    metadata: dict[str, str]
    file_size: int
    config: MaskConfig = field(init=False)
    plan: ValuePlan = field(init=False)

    def __post_init__(self) -> None:
        self.config = MaskConfig.from_dict(self.header["config"])
        banks = tuple(BankSpec(b["index"], b["size"], b["length"], b["tiling"]) for b in self.header["banks"])
        layers = tuple(LayerSource(l["name"], tuple(l["shape"]), l["bank"], l["scale"]) for l in self.header["layers"])
        self.plan = ValuePlan(self.config.strategy, self.config.distribution, self.config.seed, banks, layers)

    @property
    def layers(self) -> list[dict]:
        return self.header["layers"]

    def tensor_bytes(self, prefix: str) -> int:
        """Bytes of all tensors whose name starts with ``prefix`` ("masks", "dense.", "values.")."""
        return sum(t.nbytes for name, t in self.tensors.items() if name.startswith(prefix))

    def mask_stream(self, index: int) -> np.ndarray:
        """The coded mask bytes of layer ``index`` (a view into the ``masks`` tensor)."""
        start = sum(layer["bytes"] for layer in self.layers[:index])
        return self.tensors[MASKS_TENSOR][start : start + self.layers[index]["bytes"]]

    def dense_arrays(self) -> dict[str, np.ndarray]:
        """Dense leftovers by state-dict key, as stored (views into the group tensors)."""
        offsets: dict[str, int] = {}
        out = {}
        for key, shape, group in self.header["dense"]["tensors"]:
            n = math.prod(shape)
            start = offsets.get(group, 0)
            out[key] = self.tensors[DENSE_PREFIX + group][start : start + n].reshape(shape)
            offsets[group] = start + n
        return out


def _require(mapping: dict, key: str, kind, where: str):
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


def _parse_metadata(metadata: dict[str, str]) -> dict:
    if metadata.get(KEY_FORMAT) != FORMAT_NAME:
        found = metadata.get(KEY_FORMAT)
        raise HeaderError(f"not a .pemn file: safetensors metadata {KEY_FORMAT!r} is {found!r}, expected {FORMAT_NAME!r}")
    for key in (KEY_VERSION, KEY_HEADER, KEY_HEADER_SHA256):
        if key not in metadata:
            raise MissingKeyError(f"metadata key {key!r} is missing")
    version_text = metadata[KEY_VERSION]
    if not (version_text.isascii() and version_text.isdigit()) or len(version_text) > 6:
        raise HeaderError(f"{KEY_VERSION} must be a decimal integer, found {version_text!r}")
    if int(version_text) > FORMAT_VERSION:
        raise VersionError(
            f"file is .pemn format version {int(version_text)}; this reader understands up to {FORMAT_VERSION}: "
            "upgrade pemn-compress to read it"
        )
    if int(version_text) < 1:
        raise HeaderError(f"{KEY_VERSION} must be >= 1, found {version_text}")
    text = metadata[KEY_HEADER]
    try:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    except UnicodeEncodeError:
        raise HeaderError(f"{KEY_HEADER} holds an unpaired surrogate: not valid UTF-8 text") from None
    if digest != metadata[KEY_HEADER_SHA256]:
        raise ChecksumError(f"PEMN header checksum mismatch: stored {metadata[KEY_HEADER_SHA256]!r}, computed {digest!r}")
    header = strict_json(text, HeaderError, KEY_HEADER)
    if not isinstance(header, dict):
        raise HeaderError(f"{KEY_HEADER} must be a JSON object, found {type(header).__name__}")
    return header


def _validate(header: dict, tensors: dict[str, np.ndarray], max_weights: int) -> None:
    for key in _REQUIRED:
        if key not in header:
            raise MissingKeyError(f"header: required key {key!r} is missing")
    gen = _require(header, "generator", dict, "header")
    if _require(gen, "name", str, "generator") != GENERATOR:
        raise HeaderError(f"generator.name: expected {GENERATOR!r}, found {gen['name']!r}")
    seed = _require(gen, "seed", int, "generator")
    try:
        config = MaskConfig.from_dict(_require(header, "config", dict, "header"))
    except (ConfigError, TypeError) as exc:
        raise HeaderError(f"config: {exc}") from None
    if config.seed != seed:
        raise HeaderError(f"config.seed {config.seed} differs from generator.seed {seed}")

    # ---- layers: shapes and limits first, before anything depends on them
    layers = _require(header, "layers", list, "header")
    if not layers:
        raise HeaderError("header.layers is empty: a .pemn file has at least one masked layer")
    names, total, mask_total = set(), 0, 0
    for i, layer in enumerate(layers):
        where = f"layers[{i}]"
        if not isinstance(layer, dict):
            raise HeaderError(f"{where}: expected an object")
        name = _require(layer, "name", str, where)
        where = f"layer {name!r}"
        if name in names:
            raise HeaderError(f"{where}: duplicate layer name")
        names.add(name)
        shape = _require(layer, "shape", list, where)
        if not (2 <= len(shape) <= 5) or not all(type(d) is int and d > 0 for d in shape):
            raise ShapeError(f"{where}: shape must be 2 to 5 positive integers, found {shape!r}")
        n = math.prod(shape)
        if n > MAX_LAYER_WEIGHTS:
            raise LimitError(f"{where}: declares {n} weights; the limit per layer is {MAX_LAYER_WEIGHTS}")
        total += n
        if _require(layer, "type", str, where) not in LAYER_TYPES:
            raise HeaderError(f"{where}: type must be one of {LAYER_TYPES}, found {layer['type']!r}")
        _require(layer, "bank", int, where)
        scale = _require(layer, "scale", float, where)
        if float(np.float32(scale)) != scale:
            raise HeaderError(f"{where}: scale {scale!r} is not exactly representable in float32")
        codec = _require(layer, "codec", str, where)
        if codec not in CODECS:
            raise HeaderError(f"{where}: codec must be one of {CODECS}, found {codec!r}")
        ones = _require(layer, "ones", int, where)
        if not (0 <= ones <= n):
            raise HeaderError(f"{where}: ones must be in [0, {n}], found {ones}")
        if codec == "rice":
            _require(layer, "rice_k", int, where)
            if not isinstance(layer.get("invert"), bool):
                raise HeaderError(f"{where}: rice codec needs a boolean 'invert'")
        size = _require(layer, "bytes", int, where)
        if size < 0:
            raise HeaderError(f"{where}: bytes must be >= 0, found {size}")
        if codec == "raw" and size != (n + 7) // 8:
            raise ShapeError(f"{where}: raw mask needs {(n + 7) // 8} bytes for {n} weights, found {size}")
        mask_total += size
    if MASKS_TENSOR not in tensors:
        raise ShapeError(f"tensor {MASKS_TENSOR!r} is missing")
    masks = tensors[MASKS_TENSOR]
    if masks.dtype != np.uint8 or masks.ndim != 1 or masks.size != mask_total:
        raise ShapeError(
            f"tensor {MASKS_TENSOR!r} must be 1-D uint8 of {mask_total} bytes (the layers' sum), "
            f"found {masks.dtype} of shape {list(masks.shape)}"
        )
    if total > min(max_weights, MAX_TOTAL_WEIGHTS):
        raise LimitError(f"file declares {total} masked weights in all; this reader's limit is {max_weights} (max_weights=)")

    # ---- banks: must be exactly what the strategy makes of these layers
    try:
        expected = make_plan(config, [(l["name"], tuple(l["shape"])) for l in layers])
    except ConfigError as exc:
        raise HeaderError(f"config and layers are inconsistent: {exc}") from None
    banks = _require(header, "banks", list, "header")
    if len(banks) != len(expected.banks):
        raise HeaderError(f"header.banks: strategy {config.strategy!r} makes {len(expected.banks)} banks, found {len(banks)}")
    for spec, bank in zip(expected.banks, banks):
        where = f"banks[{spec.index}]"
        if not isinstance(bank, dict):
            raise HeaderError(f"{where}: expected an object")
        for key in ("index", "size", "length", "tiling"):
            if bank.get(key) != getattr(spec, key) or type(bank.get(key)) is not type(getattr(spec, key)):
                raise HeaderError(f"{where}.{key}: expected {getattr(spec, key)!r} for these layers, found {bank.get(key)!r}")
        stored = _require(bank, "stored", bool, where)
        tname = f"{VALUES_PREFIX}{spec.index}"
        if stored:
            if tname not in tensors:
                raise ShapeError(f"{where}: stored value vector {tname!r} is missing")
            vec = tensors[tname]
            if vec.dtype != np.float32 or vec.shape != (spec.size,):
                raise ShapeError(f"{where}: {tname!r} must be float32 of shape [{spec.size}], found {vec.dtype} {list(vec.shape)}")
    for spec, layer in zip(expected.layers, layers):
        if layer["bank"] != spec.bank:
            raise HeaderError(f"layer {spec.name!r}: bank must be {spec.bank} under strategy {config.strategy!r}, found {layer['bank']}")

    # ---- dense leftovers, architecture, fingerprint, checksums
    dense = _require(header, "dense", dict, "header")
    if _require(dense, "dtype", str, "dense") not in DENSE_DTYPES:
        raise HeaderError(f"dense.dtype must be one of {DENSE_DTYPES}, found {dense['dtype']!r}")
    _require(dense, "folded_batchnorm", list, "dense")
    table = _require(dense, "tensors", list, "dense")
    group_sizes: dict[str, int] = {}
    seen_keys = set()
    for i, item in enumerate(table):
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and isinstance(item[1], list)
                and item[2] in DENSE_GROUPS):
            raise HeaderError(f"dense.tensors[{i}]: expected [key, shape, group] with group in {sorted(DENSE_GROUPS)}, found {item!r}")
        key, shape, group = item
        if key in seen_keys:
            raise HeaderError(f"dense.tensors: duplicate key {key!r}")
        seen_keys.add(key)
        if len(shape) > 8 or not all(type(d) is int and d >= 0 for d in shape):
            raise ShapeError(f"dense tensor {key!r}: shape must be at most 8 non-negative integers, found {shape!r}")
        group_sizes[group] = group_sizes.get(group, 0) + math.prod(shape)
    for group, size in group_sizes.items():
        name = DENSE_PREFIX + group
        array = tensors.get(name)
        if array is None or array.ndim != 1 or array.dtype != np.dtype(DENSE_GROUPS[group]) or array.size != size:
            found = "missing" if array is None else f"{array.dtype} of shape {list(array.shape)}"
            raise ShapeError(f"tensor {name!r} must be 1-D {np.dtype(DENSE_GROUPS[group])} of {size} entries, found {found}")
    arch = _require(header, "architecture", dict, "header")
    if _require(arch, "kind", str, "architecture") not in ARCH_KINDS:
        raise HeaderError(f"architecture.kind must be one of {ARCH_KINDS}, found {arch['kind']!r}")
    fp = _require(header, "fingerprint", dict, "header")
    if fp.get("algorithm") != CHECKSUM_ALGORITHM or not isinstance(fp.get("value"), str):
        raise HeaderError(f"fingerprint must be {{'algorithm': {CHECKSUM_ALGORITHM!r}, 'value': hex}}")
    checks = _require(header, "checksums", dict, "header")
    if checks.get("algorithm") != CHECKSUM_ALGORITHM or not isinstance(checks.get("data"), str):
        raise HeaderError(f"checksums must be {{'algorithm': {CHECKSUM_ALGORITHM!r}, 'data': hex}}")
    known = {MASKS_TENSOR} | {DENSE_PREFIX + g for g in group_sizes}
    known |= {f"{VALUES_PREFIX}{b['index']}" for b in banks if b["stored"]}
    if set(tensors) - known:
        raise HeaderError(f"tensors not described by the header: {sorted(set(tensors) - known)}")


def read_pemn(
    source: str | os.PathLike | bytes, *, max_weights: int = DEFAULT_MAX_WEIGHTS, name: str | None = None
) -> PemnFile:
    """Read and validate a `.pemn` file (a path or its bytes). Raises a ``FormatError`` subclass.

    Another kind of file (a PyTorch checkpoint, text, plain safetensors, a file cut short) is refused
    in one line that names it: ``<path>: <what it is>; expected a .pemn file ...``; bytes are called
    ``name`` there, or "the data".
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        blob = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        blob = path.read_bytes()
        name = os.fspath(source)
    tensors, metadata = decode_container(blob, name=name)
    try:
        header = _parse_metadata(metadata)
    except HeaderError as exc:  # "not a .pemn file": say what it is instead (a plain safetensors file)
        better = wrong_file_error(exc, blob, name)
        if better is None:
            raise
        raise better from None
    try:
        _validate(header, tensors, max_weights)
    except (KeyError, TypeError, AttributeError, OverflowError) as exc:  # unanticipated shapes: still format errors
        raise HeaderError(f"malformed PEMN header: {type(exc).__name__}: {exc}") from None
    digest = hashlib.sha256(data_buffer(blob)).hexdigest()
    if digest != header["checksums"]["data"]:
        raise ChecksumError(
            f"data checksum mismatch (stored {header['checksums']['data']}, computed {digest}): "
            "the file is corrupted (a mask, value or dense tensor byte changed)"
        )
    return PemnFile(header, tensors, metadata, len(blob))


def decode_masks(pf: PemnFile) -> dict[str, np.ndarray]:
    """Boolean masks of every layer, shaped like its weight."""
    masks = {}
    for i, layer in enumerate(pf.layers):
        n = math.prod(layer["shape"])
        bits = decode_mask(pf.mask_stream(i), n, layer, layer["name"])
        masks[layer["name"]] = bits.reshape(layer["shape"])
    return masks


def bank_tables(pf: PemnFile) -> list[np.ndarray]:
    """Each bank's full (expanded) vector of unit values, float32."""
    tables = []
    for spec, bank in zip(pf.plan.banks, pf.header["banks"]):
        if bank["stored"]:
            unit = np.asarray(pf.tensors[f"{VALUES_PREFIX}{spec.index}"], dtype=np.float32)
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
    check_fingerprint(pf, weights_fingerprint([weights[l["name"]] for l in pf.layers]))


def check_fingerprint(pf: PemnFile, digest: str) -> None:
    """ChecksumError unless ``digest`` (hex SHA-256 of the weights, see ``weights_fingerprint``) is the file's."""
    if digest != pf.header["fingerprint"]["value"]:
        raise ChecksumError(
            f"regenerated weights do not match the file's fingerprint (stored {pf.header['fingerprint']['value']}, "
            f"computed {digest}): the file or the generator differs"
        )

