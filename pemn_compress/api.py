"""``save`` and ``load``: the glue between masked models and `.pemn` files.

``save(model, path, ...)`` exports the model to a payload (``pemn_compress.export``), encodes it
(``fileformat.writer.encode``, torch-free) and writes the bytes atomically.

``load(path)`` validates the whole file (``fileformat.reader``), rebuilds the architecture (zoo
reference, a caller's skeleton, or — only with ``trust_code=True`` — an imported factory), checks
every layer name and shape against the file before any weight is built, regenerates the weights
bit-exactly, verifies their fingerprint and returns an eval-mode module with plain dense weights
(``masked=False``) or the masked, trainable form (``masked=True``).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from .budget import parse_size
from .errors import ConfigError, ModelError, PemnError, ShapeError, TrustError
from .export import to_bytes
from .fileformat.constants import FORMAT_VERSION
from .fileformat.container import atomic_write
from .fileformat.header import Json
from .fileformat.reader import DEFAULT_MAX_WEIGHTS, PemnFile, read_pemn
from .fileformat.writer import DEFAULT_DENSE_DTYPE
from .keys import state_key
from .streaming import MaskSource, check_masks, stream_weights
from .surgery import layer_weight, mask_, maskable_layers, masked_layers, plan_of, values_of
from .usercode import build_model, is_reference

__all__ = ["build_architecture", "load", "resolve_device", "save"]


def save(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    dense_dtype: str = DEFAULT_DENSE_DTYPE,
    fold_batchnorm: bool = False,
    codec: str = "auto",
    architecture: dict | str | None = None,
    provenance: Json = None,
    target_size: int | str | None = None,
    format_version: int = FORMAT_VERSION,
) -> Path:
    """Write a masked model to ``path`` atomically; returns the path.

    dense_dtype: "float16" (default: halves the dense leftovers), "float32" (outputs match the
        masked model bit for bit) or "int8" (a quarter of float32, the values far outside a tensor's
        256-level grid kept in float16, with ``target_size`` at most one value in ``q8.OUTLIER_RESERVE``, what
        ``MaskConfig.for_target`` counts; written as format version 3, formats/pemn-v3.md).
    fold_batchnorm: store each BatchNorm as one scale and shift per channel (eval-mode deployment
        only: such a file cannot be loaded with ``masked=True``).
    codec: "auto" picks raw or rice per layer, whichever is smaller; "raw" forces packed bits.
    architecture: None records the zoo reference that ``create_model`` left on the model (or none);
        "module:function" records a factory (loading it needs ``trust_code=True``); or a dict with
        ``kind`` registry / import / none.
    provenance: a JSON object stored as-is (dataset, accuracy, recipe, ...).
    target_size: a budget in bytes (``40000``, ``"40KB"``, ``"40KiB"``, see ``budget.parse_size``): the
        masks are fixed at save time, so a file that would be larger is refused (ConfigError, nothing
        written) rather than changed; no other option is changed to fit either. Choose the density
        before training with ``MaskConfig.for_target`` to meet a budget.
    format_version: 2 (default: the compact deflated header of formats/pemn-v2.md) or 1 (for readers
        that only know formats/pemn-v1.md); int8 leftovers are written as 3 from 2 (and refused with 1).
        ``load`` reads all three.

    Readers see the old file or the complete new one, never a partial file. Raises ConfigError for
    an invalid option and ModelError for a model that is not masked.
    """
    budget = None if target_size is None else parse_size(target_size)
    blob = to_bytes(model, dense_dtype=dense_dtype, fold_batchnorm=fold_batchnorm, codec=codec,
                    architecture=architecture, provenance=provenance, format_version=format_version,
                    cap_outliers=budget is not None)
    if budget is not None and len(blob) > budget:
        raise ConfigError(
            f"the file would be {len(blob):,} B, over target_size {budget:,} B; nothing was written: mask the "
            "model with MaskConfig.for_target(model, target_size=...) before training, or store smaller "
            "leftovers (dense_dtype='float16' or 'int8', fold_batchnorm=True)"
        )
    return atomic_write(path, blob)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or None) is CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was requested but CUDA is not available (use device='cpu' or 'auto')")
    return device


def build_architecture(arch: dict, *, trust_code: bool = False) -> nn.Module:
    """Rebuild the module an architecture reference names. Imports user code only with trust_code."""
    kind = arch.get("kind")
    if kind == "registry":
        from .models import create_model

        kwargs = arch.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise ModelError("architecture.kwargs must be an object")
        # the name is untrusted: create_model answers a missing or non-string name with UnknownModelError
        return create_model(cast(str, arch.get("name")), **kwargs)
    if kind == "import":
        target = arch.get("target", "")
        if not trust_code:
            raise TrustError(
                f"the file's architecture is built by importing {target!r}, which runs code; "
                "pass trust_code=True only if you trust the file, or pass model=<skeleton>",
                cli_message=f"the file's architecture is built by importing {target!r}, which runs code; "
                "add --trust-code only if you trust the file, or name the architecture yourself with --arch",
            )
        if not is_reference(target):
            raise ModelError(f"architecture.target must be 'module:function' or 'module:Class', found {target!r}")
        kwargs = arch.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise ModelError("architecture.kwargs must be an object")
        return build_model(target, kwargs)
    raise ModelError(
        "the file carries no architecture reference: pass model=<an nn.Module with the same layers>, "
        "e.g. pemn.load(path, model=MyNet())",
        cli_message="the file carries no architecture reference: name it with --arch (a zoo name or "
        "module:function / module:Class from your code, with --arch-kwarg KEY=VALUE for its arguments)",
    )


def _probe_architecture(pf: PemnFile, trust_code: bool) -> nn.Module:
    """Build the file's architecture on the meta device, within a budget of modules and tensors.

    The reference's kwargs are untrusted: ``depth=10**6`` would spend minutes and gigabytes creating
    modules even on the meta device, and a huge ``kernel_size`` makes torch overflow computing a
    storage size. A model that matches the file has about one tensor per entry of the file's layer and
    dense tables, so construction stops (ModelError) once it registers far more than that; any other
    failure to build from the file's reference is a ModelError too.
    """
    from torch.nn.modules import module as torch_module

    described = len(pf.layers) + len(pf.file_header.dense.tensors)
    budget = {"modules": 16 * described + 256, "tensors": 4 * described + 256}
    counts = {"modules": 0, "tensors": 0}
    thread = threading.get_ident()

    def count(kind: str):
        def hook(module, name, value):
            if threading.get_ident() == thread:
                counts[kind] += 1
                if counts[kind] > budget[kind]:
                    raise ModelError(
                        f"the file's architecture builds more than {budget[kind]} {kind} while the file describes "
                        f"{described} tensors: refusing to build it (check architecture.kwargs)"
                    )

        return hook

    handles = [
        torch_module.register_module_module_registration_hook(count("modules")),
        torch_module.register_module_parameter_registration_hook(count("tensors")),
        torch_module.register_module_buffer_registration_hook(count("tensors")),
    ]
    try:
        with torch.device("meta"):
            return build_architecture(pf.file_header.architecture.reference, trust_code=trust_code)
    except PemnError:
        raise
    except Exception as exc:  # noqa: BLE001 - a reference that cannot be built: the file's fault
        raise ModelError(f"the file's architecture cannot be built: {type(exc).__name__}: {str(exc)[:300]}") from exc
    finally:
        for handle in handles:
            handle.remove()


def _check_layers(pf: PemnFile, skeleton: nn.Module, *, mismatch: type[PemnError]) -> dict[str, nn.Module]:
    """Map file layers onto the skeleton's maskable layers; names, types and shapes must agree.

    ``mismatch``: the error for a shape that differs: ModelError when the caller gave the skeleton
    (the model is wrong for the file), ShapeError when the file's own reference built it (the file
    contradicts itself).
    """
    available = dict(maskable_layers(skeleton))
    found = {}
    for layer in pf.layers:
        name = layer.name
        module = available.get(name)
        if module is None:
            raise ModelError(f"layer {name!r} of the file does not exist (or is not Linear/Conv) in the model")
        if type(module).__name__ != layer.type and not any(c.__name__ == layer.type for c in type(module).__mro__):
            raise ModelError(f"layer {name!r}: file has a {layer.type}, model has a {type(module).__name__}")
        shape = layer_weight(module, name).shape
        if tuple(shape) != layer.shape:
            raise mismatch(f"layer {name!r}: file shape {list(layer.shape)}, model shape {list(shape)}")
        found[name] = module
    return found


def _dense_state(
    pf: PemnFile, expected: dict[str, torch.Tensor], *, mismatch: type[PemnError]
) -> dict[str, torch.Tensor]:
    """The file's dense leftovers as tensors of the model's dtypes; keys and shapes must agree
    (``mismatch``: the error for a shape that differs, as in ``_check_layers``)."""
    stored = pf.dense_arrays()
    expected = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}  # never stored
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise ModelError(
            f"dense parameters differ from the model: missing in file {missing[:8]}, not in model {unexpected[:8]}"
        )
    state = {}
    for key, ref in expected.items():
        array = stored[key]
        if list(array.shape) != list(ref.shape):
            raise mismatch(f"dense tensor {key!r}: file shape {list(array.shape)}, model shape {list(ref.shape)}")
        state[key] = torch.from_numpy(np.array(array)).to(ref.dtype)
    return state


def _unfold_batchnorm(model: nn.Module, folded: tuple[Json, ...], state: dict[str, torch.Tensor]) -> None:
    """Folded BatchNorm: weight/bias hold scale/shift; stats become (0, 1) and eps 0 so eval is x*scale+shift."""
    for name in folded:
        try:  # names come from the file: a missing module or a non-string is the file's fault
            module = (model.get_submodule(name) if name else model) if isinstance(name, str) else None
        except AttributeError:
            module = None
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ModelError(f"folded BatchNorm {name!r} is not a BatchNorm module in the model")
        if module.running_mean is None or module.running_var is None:
            raise ModelError(f"folded BatchNorm {name!r} tracks no running statistics in the model")
        prefix = f"{name}." if name else ""
        state[prefix + "running_mean"] = torch.zeros_like(module.running_mean)
        state[prefix + "running_var"] = torch.ones_like(module.running_var)
        module.eps = 0.0


def _materialize_probe(probe: nn.Module, pf: PemnFile, trust_code: bool) -> nn.Module:
    """Reuse the checked meta-device model: allocate it uninitialized (no wasted random init).

    Safe when every tensor of the module is overwritten by the file: all state-dict entries are either
    masked weights or stored leftovers (checked by ``_dense_state``) except ``num_batches_tracked``,
    zeroed here. A module with non-persistent buffers (computed in ``__init__``) is built normally.
    """
    persistent = set(probe.state_dict())
    if any(name not in persistent for name, _ in probe.named_buffers()):
        return build_architecture(pf.file_header.architecture.reference, trust_code=trust_code)
    skeleton = probe.to_empty(device="cpu")
    with torch.no_grad():
        for name, buffer in skeleton.named_buffers():
            if name.endswith("num_batches_tracked"):
                buffer.zero_()
    return skeleton


def load(
    path: str | os.PathLike | bytes,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | None = None,
    model: nn.Module | None = None,
    trust_code: bool = False,
    masked: bool = False,
    *,
    verify: bool = True,
    max_weights: int = DEFAULT_MAX_WEIGHTS,
) -> nn.Module:
    """Load a `.pemn` file as a runnable module.

    device: "auto" (CUDA when present), "cuda", "cpu" or a torch.device.
    dtype: cast floating parameters after loading (e.g. torch.float16); None keeps float32. The masked
        weights are made in this dtype directly (the fingerprint is still checked on float32 values).
    model: a skeleton with the same layer names and shapes (required when the file names no zoo model).
        Its masked layers' weights are overwritten in place when they already are contiguous float32
        tensors on the CPU and the load is for the CPU in float32 (then no second copy is made); else
        they are replaced by new tensors on ``device``. On a ChecksumError the skeleton may hold the
        regenerated (unverified) weights.
    trust_code: allow an architecture reference that imports code ("module:function").
    masked: return the masked, trainable form (scores reproduce the stored masks) instead of dense weights.
    verify: check the regenerated weights against the file's fingerprint.

    Weights are streamed: each layer is generated, masked and hashed a piece at a time straight into
    its destination (on the CPU over all cores; on CUDA by the torch generator on the device), see
    ``pemn_compress.streaming``.
    """
    target = resolve_device(device)
    pf = read_pemn(path, max_weights=max_weights)
    mismatch: type[PemnError] = ModelError if model is not None else ShapeError
    skeleton = model if model is not None else _file_skeleton(pf, trust_code)
    layers = _check_layers(pf, skeleton, mismatch=mismatch)
    folded = pf.file_header.dense.folded_batchnorm
    masks = check_masks(pf)  # every mask validated before any weight is generated
    if masked:
        if folded:
            raise ModelError(
                "this file stores BatchNorm folded for deployment (pemn compress's default), so it cannot be "
                "loaded in trainable form (masked=True): to fine-tune, write it with --no-fold-batchnorm "
                "(pemn.save(..., fold_batchnorm=False))"
            )
        if verify:  # the fingerprint, streamed: no weight is kept
            stream_weights(pf, masks, {name: None for name in layers}, verify=True)
        mask_(skeleton, pf.config, filter_fn=lambda module, name: name in layers)
        if plan_of(skeleton).layers != pf.plan.layers:
            raise ModelError("the model's layer order differs from the file's: the value plan would not match")
        _restore_masked(pf, skeleton, masks)
        expected = {
            k: v for k, v in skeleton.state_dict().items()
            if not k.endswith(".scores") and ".value_bank." not in f".{k}"
        }
        state = _dense_state(pf, expected, mismatch=mismatch)
    else:
        weight_keys = {state_key(name, "weight") for name in layers}
        expected = {k: v for k, v in skeleton.state_dict().items() if k not in weight_keys}
        if folded:
            stats = {f"{n}.{stat}" if n else stat for n in folded for stat in ("running_mean", "running_var")}
            expected = {k: v for k, v in expected.items() if k not in stats}
        state = _dense_state(pf, expected, mismatch=mismatch)  # leftovers checked before any weight is generated
        destinations = _weight_destinations(skeleton, layers, target, dtype)
        stream_weights(pf, masks, destinations, verify=verify)
        with torch.no_grad():
            for name, module in layers.items():
                weight = layer_weight(module, name)
                if destinations[name] is not weight:
                    module.weight = nn.Parameter(destinations[name], requires_grad=weight.requires_grad)
    _unfold_batchnorm(skeleton, folded, state)
    skeleton.load_state_dict(state, strict=False)
    setattr(skeleton, "pemn_file_header", pf.header)  # noqa: B010 (nn.Module's __setattr__ is typed for tensors)
    skeleton = skeleton.to(target)
    if dtype is not None:
        skeleton = skeleton.to(dtype)
    return skeleton.eval()


def _file_skeleton(pf: PemnFile, trust_code: bool) -> nn.Module:
    """The module the file's architecture reference builds, checked before any storage exists.

    Built on the meta device first: a hostile header cannot make us allocate a huge model before its
    layers were checked against the file's (validated, size-limited) layer table and its parameter
    count against what the file describes.
    """
    probe = _probe_architecture(pf, trust_code)
    _check_layers(pf, probe, mismatch=ShapeError)
    masked_total = sum(layer.numel for layer in pf.layers)
    dense_total = sum(entry.numel for entry in pf.file_header.dense.tensors)
    probe_total = sum(t.numel() for t in probe.state_dict().values())
    if probe_total > 2 * (masked_total + dense_total) + 1024:
        raise ModelError(f"the architecture has {probe_total} parameters but the file describes only "
                         f"{masked_total + dense_total}: refusing to build it")
    return _materialize_probe(probe, pf, trust_code)


def _weight_destinations(
    skeleton: nn.Module, layers: dict[str, nn.Module], target: torch.device, dtype
) -> dict[str, torch.Tensor]:
    """Where each masked layer's weight is written: the skeleton's own tensor when it already is
    what the load returns (contiguous float32 on the CPU) and its storage belongs to no other
    parameter or buffer (tied weights are never overwritten), else a new uninitialized tensor of the
    final dtype on the target device."""
    final = dtype if dtype is not None and dtype.is_floating_point else torch.float32
    owners = Counter(
        t.untyped_storage().data_ptr()
        for _, t in (
            *skeleton.named_parameters(remove_duplicate=False), *skeleton.named_buffers(remove_duplicate=False)
        )
        if t.device.type == "cpu" and t.numel()
    )
    out = {}
    for name, module in layers.items():
        weight = layer_weight(module, name)
        reuse = (
            target.type == "cpu" and final == torch.float32 and weight.device.type == "cpu"
            and weight.dtype == torch.float32 and weight.is_contiguous() and weight.numel()
            and owners[weight.untyped_storage().data_ptr()] == 1
        )
        out[name] = weight if reuse else torch.empty(tuple(weight.shape), dtype=final, device=target)
    return out


def _restore_masked(pf: PemnFile, model: nn.Module, masks: list[MaskSource]) -> None:
    """Scores that reproduce the stored masks (kept: 1 + small seeded noise; dropped: below 1)."""
    generator = torch.Generator().manual_seed(pf.config.seed)
    by_name = dict(masked_layers(model))
    for layer, mask in zip(pf.layers, masks, strict=True):
        module = by_name[layer.name]
        keep = torch.from_numpy(mask.full().reshape(layer.shape))
        noise = torch.rand(keep.shape, generator=generator) * 0.5
        with torch.no_grad():
            module.scores.copy_(torch.where(keep, 1.0 + noise, noise))
        module.kept = int(keep.sum())
    for spec, bank in zip(pf.plan.banks, values_of(model), strict=True):
        stored = pf.stored_values(spec.index)
        if stored is not None:
            with torch.no_grad():
                bank.unit.copy_(torch.from_numpy(np.array(stored)))
                if bank.table is not None:
                    from .strategies import bank_index_map

                    bank.table.copy_(bank.unit[bank_index_map(pf.plan, spec, device=bank.unit.device)])
