"""The model registry: named factory functions, and the architecture reference they leave behind.

timm-style. A family module decorates its factories with ``@register_model``; ``create_model(name,
**kwargs)`` calls one and stamps the returned module with

    module.pemn_arch = {"name": "<registered name>", "kwargs": {<every factory argument>: <value>}}

where ``kwargs`` is the factory's *full* keyword set (its defaults merged with the caller's
arguments), made of JSON values only (int, float, str, bool, None, lists of them). A `.pemn` file
stores that dict, and ``create_model(arch["name"], **arch["kwargs"])`` rebuilds the exact same
architecture without importing any user code.

A factory takes keyword arguments only, each with a JSON-serializable default, and no ``**kwargs``
(the registry could not record what it accepted otherwise). Names are ``lower_snake_case``; every
family also registers tiny ``test_*`` variants so that tests parametrize over the registry.

The small ``check_*`` helpers validate constructor arguments with ``ModelError`` messages that name
the class, the argument, what was expected and what was found; ``create_model`` prefixes them with
the registered name.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import inspect
import math
import numbers
import re
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from ..errors import ModelError, UnknownModelError

__all__ = [
    "arch_of",
    "check_bool",
    "check_float",
    "check_int",
    "create_model",
    "list_models",
    "model_entrypoint",
    "register_model",
]

_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")

# name -> factory. The registry is the one piece of module-level state: it is filled once, at
# import time of the family modules, and never changed afterwards.
_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}


# ---------------------------------------------------------------------------------------------
# JSON-safe argument values


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as a plain JSON value (int, float, str, bool, None or list), or ``ModelError``.

    numpy / torch scalars become Python numbers, tuples become lists; NaN and infinities are
    refused because JSON cannot hold them.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):  # int, numpy.int64, ... (bool handled above)
        return int(value)
    if isinstance(value, numbers.Real):  # float, numpy.float32, ...
        value = float(value)
        if not math.isfinite(value):
            raise ModelError(f"{where}: expected a finite number, found {value!r}")
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ModelError(
        f"{where}: expected a JSON value (int, float, str, bool, None or a list of them), "
        f"found {type(value).__name__} {value!r}"
    )


def _coerce_like_default(value: Any, default: Any) -> Any:
    """An int given where the default is a float is recorded as a float (``mlp_ratio=4`` == ``4.0``)."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# ---------------------------------------------------------------------------------------------
# Registration


def _signature(fn: Callable[..., nn.Module]) -> inspect.Signature:
    return inspect.signature(fn)


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its ``__name__`` and return it unchanged.

    ``fn`` must take keyword arguments only (plain or keyword-only), each with a JSON-serializable
    default, and no ``*args`` / ``**kwargs``.
    """
    name = fn.__name__
    if not _NAME_RE.match(name):
        raise ModelError(f"model name {name!r}: expected lower_snake_case (e.g. 'convmixer_256_8')")
    for param in _signature(fn).parameters.values():
        where = f"model {name!r} argument {param.name!r}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ModelError(f"{where}: expected a named keyword argument, found {param.kind.description}")
        if param.default is param.empty:
            raise ModelError(f"{where}: expected a default value, found none")
        _jsonable(param.default, where)
    old = _model_entrypoints.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
        raise ModelError(
            f"model {name!r}: already registered by {old.__module__}.{old.__qualname__}, "
            f"found a second one in {fn.__module__}.{fn.__qualname__}"
        )
    _model_entrypoints[name] = fn  # same function again (importlib.reload): replace
    return fn


def list_models(pattern: str | Iterable[str] | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by one or several ``fnmatch`` patterns."""
    names = sorted(_model_entrypoints)
    if pattern is None:
        return names
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name``; ``UnknownModelError`` (with close matches) if none."""
    fn = _model_entrypoints.get(name) if isinstance(name, str) else None
    if fn is None:
        known = sorted(_model_entrypoints)
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(repr(c) for c in close)}?"
            if close
            else f"known models: {', '.join(known)}"
        )
        raise UnknownModelError(f"unknown model {name!r}: {hint}")
    return fn


# ---------------------------------------------------------------------------------------------
# Creation and the architecture reference


def create_model(name: str, /, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` and stamp it with ``pemn_arch`` (see the module docstring).

    Unknown names raise ``UnknownModelError``; unknown or non-JSON arguments raise ``ModelError``.
    ``name`` is positional-only, so an argument called ``name`` (from a file's ``kwargs``) is checked
    like any other instead of colliding with it (a TypeError).
    Tensors are created on the current default device, so ``with torch.device("meta"):`` builds
    a model without allocating its weights.
    """
    fn = model_entrypoint(name)
    params = _signature(fn).parameters
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise ModelError(
            f"model {name!r}: unknown argument{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)}; accepted: {', '.join(params)}"
        )
    full: dict[str, Any] = {}
    for key, param in params.items():
        value = kwargs.get(key, param.default)
        value = _coerce_like_default(value, param.default)
        full[key] = _jsonable(value, f"model {name!r} argument {key!r}")
    try:
        model = fn(**copy.deepcopy(full))  # the factory cannot alias the recorded lists
    except ModelError as err:
        raise ModelError(f"model {name!r}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {name!r}: expected the factory to return an nn.Module, found {type(model).__name__}")
    setattr(model, "pemn_arch", {"name": name, "kwargs": full})  # noqa: B010 (nn.Module's __setattr__ is typed for tensors)
    return model


def arch_of(module: nn.Module) -> dict[str, Any] | None:
    """A copy of the ``{"name", "kwargs"}`` dict ``create_model`` attached to ``module``, or None.

    Looks through one ``.module`` wrapper (``DistributedDataParallel``, ``DataParallel``).
    """
    for candidate in (module, getattr(module, "module", None)):
        arch = getattr(candidate, "pemn_arch", None)
        if isinstance(arch, dict) and isinstance(arch.get("name"), str) and isinstance(arch.get("kwargs"), dict):
            return copy.deepcopy(arch)
    return None


# ---------------------------------------------------------------------------------------------
# Argument checks shared by the family modules


def check_int(owner: str, key: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or ``ModelError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ModelError(f"{owner} argument {key!r}: expected an integer >= {minimum}, found {value!r}")
    return int(value)


def check_float(owner: str, key: str, value: Any, minimum: float = 0.0) -> float:
    """``value`` as a finite float > ``minimum``, or ``ModelError``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or float(value) <= minimum
    ):
        raise ModelError(f"{owner} argument {key!r}: expected a number > {minimum}, found {value!r}")
    return float(value)


def check_bool(owner: str, key: str, value: Any) -> bool:
    """``value`` if it is a bool, else ``ModelError`` (``bias=1`` is refused, not guessed)."""
    if not isinstance(value, bool):
        raise ModelError(f"{owner} argument {key!r}: expected True or False, found {value!r}")
    return value
