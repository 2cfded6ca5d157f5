"""Reading a user's model for ``pemn compress``: what ``MODEL`` is, its weights, and whether data fits it.

``read_source(model, arch, allow_pickle)`` classifies ``model``:

* ``zoo``: a registered name (``convmixer_64_4``); untrained;
* ``state_dict``: a ``.pt``/``.pth``/``.bin`` file read with ``torch.load(weights_only=True)`` (a dict
  of tensors, or one under ``state_dict``/``model_state_dict``/``model``/``module``/``net``);
* ``safetensors``: a ``.safetensors`` file;
* ``factory``: ``module:function`` (imports user code: the user's explicit choice; the current folder
  is importable, as with ``python -m``); treated as untrained;
* ``pickle``: a file holding a whole pickled ``nn.Module`` — read only with ``allow_pickle=True``,
  because unpickling runs code from the file (``TrustError`` otherwise, naming the flag);
* ``module``: an ``nn.Module`` handed to ``pemn.compress`` in Python (``module_source``): treated as
  trained, like a state dict (its accuracy decides whether it is a useful distillation teacher).

Wrapper prefixes (``module.`` from DataParallel/DDP, ``_orig_mod.`` from torch.compile) are stripped.
``build_input_model`` builds the architecture — a zoo name's ``in_chans``/``num_classes``/``img_size``
follow the data set, a state dict's architecture is ``arch`` with its defaults plus ``arch_kwargs`` —
and loads the weights; any difference is a ``ModelError`` naming the layers (missing, unexpected,
shape mismatch). ``check_data_fits`` runs one dummy forward with a batch of the data's shape and turns
a failure into a ``DataError`` naming both shapes.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import os
import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._terminal import one_line
from .data import ArrayDataset
from .errors import ConfigError, DataError, ModelError, TrustError, UnknownModelError
from .models import create_model, list_models, model_entrypoint
from .pickled import main_class_error, main_global, rebuild_reference, unpickle
from .surgery import maskable_layers
from .usercode import build_model, is_reference

__all__ = [
    "INPUT_KINDS",
    "Architecture",
    "Source",
    "build_input_model",
    "check_data_fits",
    "check_input_fits",
    "module_source",
    "one_line",
    "read_source",
    "short_list",
    "strip_prefixes",
]

INPUT_KINDS = ("zoo", "state_dict", "safetensors", "factory", "pickle", "module")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar", ".safetensors")


def strip_prefixes(state: dict[str, Any], prefixes: Sequence[str] = STRIPPED_PREFIXES) -> dict[str, Any]:
    """Remove wrapper prefixes: ``module.`` (DataParallel/DDP) when every key has it, and
    ``_orig_mod.`` (torch.compile) wherever it appears as a path segment."""
    state = dict(state)
    changed = True
    while changed and state:
        changed = False
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    if any("._orig_mod." in f".{k}" for k in state):
        state = {f".{k}".replace("._orig_mod.", ".")[1:]: v for k, v in state.items()}
    return state


def short_list(keys: Sequence[str], limit: int = 5) -> str:
    """``a, b, c (+4 more)``."""
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Source:
    """What ``MODEL`` is, and what was read from its file."""

    kind: str  # one of INPUT_KINDS
    path: Path | None = None
    sha256: str | None = None  # of the input file
    state_dict: dict[str, torch.Tensor] | None = None
    module: nn.Module | None = None  # a pickled module

    @property
    def trained(self) -> bool:
        return self.kind in ("state_dict", "safetensors", "pickle", "module")


def module_source(model: nn.Module) -> Source:
    """An ``nn.Module`` given in Python; its ``sha256`` (compared on resume) is over its state dict."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            digest.update(str(value.dtype).encode() + str(tuple(value.shape)).encode())
            digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return Source("module", sha256=digest.hexdigest(), module=model)


def _input_kind(spec: str) -> tuple[str, Path | None]:
    path = Path(spec).expanduser()
    if path.is_file():
        return ("safetensors" if path.suffix.lower() == ".safetensors" else "torch"), path
    if is_reference(spec):
        return "factory", None
    if spec in list_models():
        return "zoo", None
    if path.exists():
        raise ModelError(f"model {spec} is not a file")
    if path.suffix.lower() in _FILE_SUFFIXES or os.sep in spec or (os.altsep and os.altsep in spec):
        raise ModelError(f"model file {spec} does not exist")
    try:
        model_entrypoint(spec)
    except UnknownModelError as exc:
        raise UnknownModelError(
            f"{spec!r} is not a file, a zoo model or module:function ({exc}); see pemn_compress.list_models()"
        ) from exc
    return "zoo", None  # pragma: no cover - list_models() covers every name


def _tensor_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """``obj`` when it is a non-empty dict of tensors by string keys (a state dict), else None."""
    if isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                             for k, v in obj.items()):
        return obj
    return None


def _read_torch_file(path: Path, allow_pickle: bool, arch: str | None = None) -> Source:
    def not_a_checkpoint() -> ModelError | None:  # torch.load failed: say what the file is, if it is known
        from .fileformat.sniff import sniff_file

        kind = sniff_file(path)
        if kind is None or kind.kind == "pickle" or (kind.kind in ("torch-zip", "torch-legacy") and not kind.truncated):
            return None  # a checkpoint torch.load cannot read: its own words say why
        if kind.kind == "pemn":
            return ModelError(f"cannot read {path}: it is a .pemn file (already compressed): "
                              "use pemn inspect / pemn eval")
        if kind.kind == "safetensors":
            return ModelError(f"cannot read {path}: it is a safetensors file: rename it to .safetensors")
        if kind.truncated:
            return ModelError(f"cannot read {path}: it is {kind.what}")
        return ModelError(f"cannot read {path}: it is {kind.what}, not a PyTorch checkpoint or state dict")

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if not (allow_pickle or found):
            named = not_a_checkpoint()
            if named is not None:
                raise named from exc
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
            raise ModelError(
                f"cannot read {path} with torch.load: {detail.group(1).strip() if detail else one_line(exc)}"
            ) from exc
        what = f" (it names {found.group(1)})" if found else ""
        main_name = main_global(found.group(1)) if found else None
        if main_name is not None and not (arch and is_reference(arch)):
            raise main_class_error(path, main_name) from exc
        if not allow_pickle:
            head = (f"{path} holds pickled Python objects{what}, not a plain state dict, and reading it runs code "
                    "from the file; ")
            raise TrustError(
                head + "pass allow_pickle=True only if you trust the file, or save model.state_dict() instead",
                cli_message=head + "add --allow-pickle only if you trust the file, or save model.state_dict() instead",
            ) from exc
        try:
            obj = unpickle(path, arch)
        except ModelError as unpickle_error:
            named = not_a_checkpoint()
            if named is None:
                raise
            raise named from unpickle_error
    except Exception as exc:  # noqa: BLE001 - corrupt zip, not a torch file, ...
        named = not_a_checkpoint()
        raise named or ModelError(f"cannot read {path} with torch.load: {one_line(exc)}") from exc
    if isinstance(obj, nn.Module):
        return Source("pickle", path, module=obj)
    state = _tensor_dict(obj)
    if state is None and isinstance(obj, dict):
        for key in _STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return Source("pickle", path, module=inner)
            state = _tensor_dict(inner)
            if state is not None:
                break
    if state is None:
        if isinstance(obj, dict):
            held = f"a dict with keys {short_list(sorted(map(str, obj)))}"
        else:
            held = f"a {type(obj).__name__}"
        raise ModelError(f"{path} holds {held}; expected a state dict (a dict of tensors) or a pickled nn.Module")
    return Source("state_dict", path, state_dict=strip_prefixes(state))


def _read_safetensors(path: Path) -> Source:
    from safetensors.torch import load_file

    from .fileformat.sniff import sniff_file

    kind = sniff_file(path)  # the header only: a .pemn is a valid safetensors file, but not a model's weights
    if kind is not None and kind.kind == "pemn":
        raise ModelError(f"cannot read {path}: it is a .pemn file (already compressed): use pemn inspect / pemn eval")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...
        if kind is None or kind.kind in ("safetensors", "pickle"):
            raise ModelError(f"cannot read {path} as safetensors: {one_line(exc)}") from exc
        if kind.kind in ("torch-zip", "torch-legacy") and not kind.truncated:
            raise ModelError(f"cannot read {path}: it is {kind.what}: rename it to .pt") from exc
        if kind.truncated:
            raise ModelError(f"cannot read {path}: it is {kind.what}") from exc
        raise ModelError(f"cannot read {path}: it is {kind.what}, not a safetensors file") from exc
    if not state:
        raise ModelError(f"{path} holds no tensor")
    return Source("safetensors", path, state_dict=strip_prefixes(state))


def read_source(model: str, arch: str | None = None, allow_pickle: bool = False) -> Source:
    """Classify ``model`` (see the module docstring) and read its file, if any; ``arch`` is checked
    against the kind (a state dict needs one, nothing else takes one)."""
    kind, path = _input_kind(model)
    if kind == "torch" and path is not None:
        source = _read_torch_file(path, allow_pickle, arch)
    elif kind == "safetensors" and path is not None:
        source = _read_safetensors(path)
    else:
        source = Source(kind)
    if path is not None:
        source.sha256 = _sha256_file(path)
    if source.kind == "pickle" and arch and not is_reference(arch):
        raise ConfigError(
            f"arch for a pickled module must be module:Class (where its class lives now), found {arch!r}",
            cli_message=f"--arch for a pickled module must be module:Class (where its class lives now), found {arch!r}",
        )
    if source.kind in ("zoo", "factory") and arch:
        what = {"zoo": "a zoo name", "factory": "a module:function factory"}[source.kind]
        raise ConfigError(
            f"arch names the architecture of a state dict; {model} is {what}: drop arch",
            cli_message=f"--arch names the architecture of a state dict; {model} is {what}: drop --arch",
        )
    if source.kind in ("state_dict", "safetensors") and not arch:
        kinds = ("a zoo model such as convmixer_64_4 (see pemn_compress.list_models()), "
                 "or module:function / module:Class")
        raise ConfigError(
            f"{model} is a state dict: name its architecture with arch= ({kinds})",
            cli_message=f"{model} is a state dict: name its architecture with --arch ({kinds} from your own code)",
        )
    return source


def _data_kwargs(name: str, data_kwargs: dict | None) -> dict:
    """The zoo arguments that follow the data (``DataSource.zoo_kwargs``: in_chans, num_classes, img_size)
    that the zoo model ``name`` takes; none without data (the zoo model's defaults)."""
    params = inspect.signature(model_entrypoint(name)).parameters
    return {key: value for key, value in (data_kwargs or {}).items() if key in params}


def _match_state_dict(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``model``; any difference is a ``ModelError`` naming the layers."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing {short_list(missing)}")
    if unexpected:
        parts.append(f"unexpected {short_list(unexpected)}")
    if shapes:
        parts.append(f"shape mismatch {short_list(shapes, 3)}")
    if parts:
        raise ModelError(f"the state dict does not match {what}: {'; '.join(parts)}")
    with torch.no_grad():
        model.load_state_dict(state, strict=False)


def _reset_parameters(model: nn.Module) -> nn.Module:
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return model


@dataclass
class Architecture:
    dense: nn.Module  # the input model (trained weights loaded, or freshly built)
    build_fresh: Callable[[], nn.Module]  # a new, untrained copy of the architecture
    reference: dict  # what the file records ({"kind": "none"}: nothing to rebuild the architecture from)
    description: str  # for messages


def _registry_reference(model: nn.Module) -> dict | None:
    arch = getattr(model, "pemn_arch", None)
    if isinstance(arch, dict) and isinstance(arch.get("name"), str) and isinstance(arch.get("kwargs"), dict):
        return {"kind": "registry", "name": arch["name"], "kwargs": copy.deepcopy(arch["kwargs"])}
    return None


def build_input_model(
    source: Source, model: str, arch: str | None, arch_kwargs: dict, seed: int, data_kwargs: dict | None
) -> Architecture:
    """The input model (trained weights loaded) and how to build fresh, untrained copies of it
    (under ``torch.manual_seed(seed)``); ``data_kwargs`` set a zoo model's input and class counts."""
    proto = source.module
    if proto is not None:  # a pickled or given module: fresh copies are re-initialized deep copies

        def fresh_copy() -> nn.Module:
            torch.manual_seed(seed)
            return _reset_parameters(copy.deepcopy(proto))

        pickled_ref = _registry_reference(proto) or rebuild_reference(proto, arch) or {"kind": "none"}
        what = "the pickled" if source.kind == "pickle" else "your"
        return Architecture(proto, fresh_copy, pickled_ref, f"{what} {type(proto).__name__}")

    spec = model if source.kind in ("zoo", "factory") else arch
    if spec is None:
        raise ConfigError(f"{model} is a state dict: name its architecture with arch=",
                          cli_message=f"{model} is a state dict: name its architecture with --arch")
    ref: dict | None
    if is_reference(spec):
        kwargs = dict(arch_kwargs)

        def build() -> nn.Module:
            return build_model(spec, kwargs)

        ref = {"kind": "import", "target": spec, "kwargs": kwargs}
        description = spec
    else:
        kwargs = (_data_kwargs(spec, data_kwargs) if source.kind == "zoo" else {}) | dict(arch_kwargs)

        def build() -> nn.Module:
            return create_model(spec, **kwargs)

        ref = None  # the registry reference (with every default) comes from the built model
        description = f"architecture {spec}"

    def fresh() -> nn.Module:
        torch.manual_seed(seed)
        return build()

    dense = fresh()
    ref = ref or _registry_reference(dense) or {"kind": "none"}  # create_model stamps pemn_arch: never none
    if source.state_dict is not None:
        _match_state_dict(dense, source.state_dict, description)
        dense.eval()
    return Architecture(dense, fresh, ref, description)


def _expected_input(model: nn.Module) -> str:
    arch = getattr(model, "pemn_arch", None)
    kwargs = arch.get("kwargs", {}) if isinstance(arch, dict) else {}
    if "in_chans" in kwargs and "img_size" in kwargs:
        return f"({kwargs['in_chans']}, {kwargs['img_size']}, {kwargs['img_size']})"
    layers = maskable_layers(model)
    if layers:
        name, first = layers[0]
        if isinstance(first, nn.Linear):
            return f"C*H*W = {first.in_features} input features (first layer {name})"
        return f"C = {first.in_channels} input channels (first layer {name})"
    return "another shape"


def check_data_fits(model: nn.Module, data: ArrayDataset, device: torch.device | None = None) -> None:
    """One dummy forward with a batch of the data's shape; failures become a ``DataError``."""
    check_input_fits(model, torch.zeros((2, *data.image_shape)), name=data.name, num_classes=data.num_classes,
                     device=device)


def check_input_fits(model: nn.Module, x: torch.Tensor, *, name: str, num_classes: int | None,
                     classification: bool = True, device: torch.device | None = None) -> int | None:
    """One forward of a small input batch ``x``; failures become a ``DataError`` naming both shapes.

    Classification: the output must be logits ``(batch, classes)``, ``num_classes`` wide when known.
    Returns the number of outputs (classification), else None.
    """
    device = device or next(iter(model.parameters()), torch.empty(0)).device
    x = x[:2].to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - whatever the model raises on a wrong shape
        shape = tuple(x.shape[1:])
        what = "images of shape" if len(shape) == 3 else "inputs of shape"
        raise DataError(
            f"data set {name} has {what} {shape}{' (C, H, W)' if len(shape) == 3 else ''} but the model expects "
            f"{_expected_input(model)}: {one_line(exc, 160)}"
        ) from exc
    finally:
        model.train(was_training)
    if not classification:
        return None
    n = len(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != n:
        found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DataError(f"the model must return logits of shape (batch, classes); for a batch of {n} it returned "
                        f"{found} (for another objective, pass loss= and metric= to pemn.compress)")
    if num_classes is not None and out.shape[1] != num_classes:
        raise DataError(f"the model has {out.shape[1]} outputs but data set {name} has {num_classes} classes")
    return int(out.shape[1])
