"""User code: the one import policy for every entry point that runs it.

A *reference* is ``module:attribute`` (``mymodel:build``, ``mymodel:MyNet``, ``pkg.sub:Outer.make``).
``pemn compress`` (``MODEL`` or ``--arch``), ``pemn eval --arch``, ``pemn.load`` of a file whose
architecture imports code (only with ``trust_code=True``) and ``module:function`` data hooks all
resolve references here, so they behave the same:

* the current working folder is importable while the module is imported and while the reference is
  called, as with ``python -m`` (a ``mymodel.py`` next to you is found from any entry point), and
  is taken off ``sys.path`` again afterwards;
* a function or a class is accepted (``module:function`` and ``module:Class``); what it returns is
  checked (``build_model``: an ``nn.Module``);
* every failure is a ``UserCodeError`` whose message names the reference.

Nothing here decides *whether* code may run: that is the caller's consent rule (a reference the
user typed is their code; a reference read from a file needs ``trust_code=True``).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from ._terminal import one_line
from .errors import PemnError, UserCodeError

__all__ = [
    "REFERENCE_RE",
    "build_model",
    "call_reference",
    "import_module",
    "importable_working_folder",
    "is_reference",
    "resolve",
]

REFERENCE_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_reference(text: object) -> bool:
    """True for ``module:attribute`` text (dotted names allowed on both sides)."""
    return isinstance(text, str) and REFERENCE_RE.match(text) is not None


@contextlib.contextmanager
def importable_working_folder() -> Iterator[None]:
    """The current folder first on ``sys.path`` for the duration (as ``python -m`` does), then removed."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


def import_module(module_name: str, *, reference: str, role: str = "reference") -> Any:
    """Import ``module_name`` with the working folder importable; failures name ``reference``."""
    with importable_working_folder():
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            where = f" (looked in the current folder {os.getcwd()} and on sys.path)" if exc.name == module_name else ""
            raise UserCodeError(
                f"{role} {reference}: cannot import module {module_name!r}: {one_line(exc)}{where}"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - an error raised by the user's module while importing
            raise UserCodeError(
                f"{role} {reference}: importing module {module_name!r} raised {type(exc).__name__}: {one_line(exc)}"
            ) from exc


def resolve(reference: str, *, role: str = "reference") -> Any:
    """Import ``module`` and return ``attribute`` of ``module:attribute``; ``role`` names what the
    reference is for in messages (``"--arch"``, ``"data hook"``, ...)."""
    if not is_reference(reference):
        raise UserCodeError(f"{role} {reference!r} must look like module:function or module:Class (e.g. mymodel:build)")
    module_name, _, attr = reference.partition(":")
    obj = import_module(module_name, reference=reference, role=role)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserCodeError(f"{role} {reference}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def call_reference(reference: str, *args: Any, role: str = "reference", **kwargs: Any) -> Any:
    """``resolve(reference)(*args, **kwargs)`` with the working folder importable during the call;
    errors raised by the user's code become ``UserCodeError`` (a ``PemnError`` passes unchanged)."""
    target = resolve(reference, role=role)
    if not callable(target):
        raise UserCodeError(f"{role} {reference} is not callable: it is a {type(target).__name__}")
    with importable_working_folder():
        try:
            return target(*args, **kwargs)
        except PemnError:
            raise
        except Exception as exc:  # noqa: BLE001 - user code
            shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
            raise UserCodeError(f"{role} {reference}({shown}) raised {type(exc).__name__}: {one_line(exc)}") from exc


def build_model(reference: str, kwargs: dict | None = None, *, role: str = "architecture") -> Any:
    """The ``nn.Module`` that ``module:function(**kwargs)`` or ``module:Class(**kwargs)`` returns."""
    from torch import nn

    model = call_reference(reference, role=role, **copy.deepcopy(kwargs or {}))
    if not isinstance(model, nn.Module):
        raise UserCodeError(f"{role} {reference} must return an nn.Module, found {type(model).__name__}")
    return model
