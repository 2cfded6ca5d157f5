"""Whole pickled modules (``torch.save(model)``): reading them with consent, and the ``__main__`` trap.

Unpickling runs code named by the file, so it happens only behind ``allow_pickle=True``
(``--allow-pickle``). A class defined in the script that saved the model lives in that script's
``__main__`` module and cannot be found by any other process. ``unpickle`` then either

* resolves ``__main__.X`` from the module of the architecture the user named (``arch="mymodel:MyNet"``,
  ``--arch mymodel:MyNet``): the user's explicit statement that the class now lives there; only names
  the file refers to under ``__main__`` are looked up, and only in that module; or
* raises one ``ModelError`` naming the class and both fixes (move the class into a module, or save
  ``state_dict()`` and name the architecture).

``rebuild_reference`` says how a pickled module can be rebuilt without the pickle, where that is
knowable: its class is importable (not ``__main__``) and constructing it without arguments gives the
same parameter and buffer names and shapes. Anything else records no reference.
"""

from __future__ import annotations

import pickle
import re
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._terminal import one_line
from .errors import ModelError
from .usercode import import_module, importable_working_folder, is_reference, resolve

__all__ = ["MainClassError", "main_global", "rebuild_reference", "unpickle"]

_MISSING_MAIN = re.compile(r"Can't get attribute '([\w.]+)' on <module '__main__'")


class MainClassError(ModelError):
    """The pickle refers to a class of the saving script's ``__main__``."""


def main_global(message: str) -> str | None:
    """``MyNet`` from a torch/pickle message naming ``__main__.MyNet`` (or None)."""
    found = re.search(r"(?:^|GLOBAL )__main__\.([\w.]+)", message) or _MISSING_MAIN.search(message)
    return found.group(1) if found else None


def main_class_error(path: Path, name: str) -> MainClassError:
    """One error naming the class and both fixes, in the words of the API and of the CLI."""
    module = re.sub(r"(?<!^)(?=[A-Z])", "_", name.split(".")[0]).lower() or "mymodel"
    head = (
        f"{path} holds a pickled {name} whose class was defined in the script that saved it (__main__), "
        "so no other program can rebuild it. Either move class " + name + f" into a module (e.g. {module}.py) "
        "and save the model again, or save model.state_dict() instead and name the architecture with "
    )
    return MainClassError(
        head + f'arch="{module}:{name}" (with allow_pickle=True, arch="{module}:{name}" also reads this file '
        "once the class lives in that module)",
        cli_message=head + f"--arch {module}:{name} (with --allow-pickle, --arch {module}:{name} also reads "
        "this file once the class lives in that module)",
    )


def _remapping_pickle_module(module: types.ModuleType) -> types.ModuleType:
    """A stand-in for ``pickle`` whose Unpickler finds ``__main__.X`` as ``module.X``."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, mod_name: str, name: str) -> Any:
            if mod_name == "__main__":
                target: Any = module
                for part in name.split("."):
                    if not hasattr(target, part):
                        raise AttributeError(f"Can't get attribute {name!r} on <module '__main__'>")
                    target = getattr(target, part)
                return target
            return super().find_class(mod_name, name)

    shim = types.ModuleType("pemn_remapping_pickle")
    shim.__dict__.update({k: v for k, v in vars(pickle).items() if not k.startswith("__")})
    shim.Unpickler = Unpickler  # type: ignore[attr-defined]
    return shim


def unpickle(path: Path, arch: str | None = None) -> Any:
    """``torch.load(path, weights_only=False)``; ``__main__`` names resolved from ``arch``'s module."""
    kwargs: dict[str, Any] = {}
    if arch is not None and is_reference(arch):
        module = import_module(arch.partition(":")[0], reference=arch, role="architecture")
        kwargs["pickle_module"] = _remapping_pickle_module(module)
    try:
        with importable_working_folder():  # a class in mymodel.py next to the user is found, as everywhere
            return torch.load(path, map_location="cpu", weights_only=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - anything unpickling user objects can raise
        name = main_global(str(exc))
        if name is not None:
            raise main_class_error(path, name) from exc
        raise ModelError(f"cannot unpickle {path}: {type(exc).__name__}: {one_line(str(exc))}") from exc


def _structure(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def rebuild_reference(model: nn.Module, arch: str | None = None) -> dict | None:
    """An ``import`` architecture reference that rebuilds ``model`` without its pickle, or None.

    ``arch`` (a ``module:Class`` the user named) is preferred; else the class's own module, unless it
    is ``__main__``. The reference is kept only when ``Class()`` builds (on the meta device, so no
    memory is spent) a module with exactly the same state-dict names and shapes.
    """
    cls = type(model)
    candidates = []
    if arch is not None and is_reference(arch):
        candidates.append(arch)
    if cls.__module__ != "__main__" and "<locals>" not in cls.__qualname__:
        candidates.append(f"{cls.__module__}:{cls.__qualname__}")
    for target in candidates:
        try:
            found = resolve(target, role="architecture")
            if not isinstance(found, type) and not callable(found):
                continue
            with torch.device("meta"):
                built = found()
        except Exception:  # noqa: BLE001 - not rebuildable without arguments: record nothing
            continue
        if isinstance(built, nn.Module) and _structure(built) == _structure(model):
            return {"kind": "import", "target": target, "kwargs": {}}
    return None
