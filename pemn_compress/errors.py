"""The pemn-compress exception tree.

Every error the library raises on purpose is a ``PemnError``. Errors about the
content of a file or of user input also subclass ``ValueError`` so that code
written against plain Python conventions still catches them.

    PemnError
    ├── ConfigError (ValueError)          an invalid option: density, ratio, strategy, ...
    ├── ModelError (ValueError)           architecture / state-dict / layer mismatch
    │   └── UnknownModelError (KeyError)  a name that the model registry does not know
    ├── DataError (ValueError)            a data set that is missing, malformed or the wrong shape
    │   └── DataNotFoundError             the files are not there (says how to get them)
    ├── FormatError (ValueError)          a .pemn file that cannot be read
    │   ├── ContainerError                not a valid safetensors container / truncated
    │   ├── HeaderError                   PEMN header missing, malformed or inconsistent
    │   │   └── MissingKeyError           a required header key is absent
    │   ├── VersionError                  a format version newer than this reader
    │   ├── ChecksumError                 a checksum or the weight fingerprint does not match
    │   ├── LimitError                    a declared size beyond what the file justifies
    │   └── ShapeError                    a tensor's shape or length disagrees with the header
    ├── TrustError                        loading would execute code; needs trust_code=True
    ├── UserCodeError (ValueError)        a module:function / module:Class reference that cannot be
    │                                     imported, or does not give what was expected
    └── CheckpointError                   a training checkpoint that cannot be resumed

Messages name the layer, tensor or key, and say what was expected and what was found. They are
written in the words of the Python API (argument names such as ``trust_code=True``); where the
command line has other words (``--trust-code``), the error also carries ``cli_message``, which the
CLI prints instead.
"""

from __future__ import annotations

import re

__all__ = [
    "CheckpointError",
    "ChecksumError",
    "ConfigError",
    "ContainerError",
    "DataError",
    "DataNotFoundError",
    "FormatError",
    "HeaderError",
    "LimitError",
    "MissingKeyError",
    "ModelError",
    "PemnError",
    "ShapeError",
    "TrustError",
    "UnknownModelError",
    "UserCodeError",
    "VersionError",
]


class PemnError(Exception):
    """Root of every error raised on purpose by pemn-compress.

    ``cli_message``: the same message in the command line's words (flags instead of arguments),
    when they differ; the CLI prints it instead of ``str(error)``.
    """

    def __init__(self, *args: object, cli_message: str | None = None):
        super().__init__(*args)
        self.cli_message = cli_message


class ConfigError(PemnError, ValueError):
    """An option has an invalid value (density outside (0, 1], unknown strategy, ...)."""


class ModelError(PemnError, ValueError):
    """A model, state dict or layer table does not match what was expected."""


class UnknownModelError(ModelError, KeyError):
    """The model registry has no entry of that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(PemnError, ValueError):
    """A data set is malformed or does not fit the model."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The data files are missing; the message says how to get them."""


class FormatError(PemnError, ValueError):
    """A .pemn file cannot be read."""


class ContainerError(FormatError):
    """The file is not a valid safetensors container (bad header length, truncated, overlapping data)."""


class HeaderError(FormatError):
    """The PEMN header is malformed or inconsistent with the tensors."""


class MissingKeyError(HeaderError):
    """A required PEMN header key is absent."""


class VersionError(FormatError):
    """The file's format version is newer than this reader understands."""


class ChecksumError(FormatError):
    """A checksum or the regenerated-weight fingerprint does not match."""


class LimitError(FormatError):
    """A declared size is beyond what the file's bytes justify (hostile or corrupted file)."""


class ShapeError(FormatError):
    """A tensor's shape, dtype or length disagrees with the header."""


class TrustError(PemnError):
    """Following an architecture reference would import or run code; pass trust_code=True to allow it."""


class UserCodeError(PemnError, ValueError):
    """A ``module:function`` or ``module:Class`` reference cannot be imported, or what it names is not
    what was expected (not callable, or it did not return an ``nn.Module``)."""


class CheckpointError(PemnError):
    """A training checkpoint is missing, corrupted or was made with other settings."""


def option_error(name: str, problem: str) -> ConfigError:
    """``ConfigError("epochs must ...")`` that the CLI shows as ``--epochs must ...`` (an option
    named ``name`` in the Python API is the flag ``--name`` with dashes on the command line)."""
    return ConfigError(f"{name} {problem}", cli_message=f"--{name.replace('_', '-')} {problem}")


_BOOLEAN_FLAGS = {"resume", "trust-code", "allow-pickle"}  # flags that are True/False arguments in Python


def _as_arguments(cli_text: str) -> str:
    """The command line's words in the Python API's: ``--no-distill`` -> ``distill=False``,
    ``--resume`` -> ``resume=True``, ``--batch-size`` -> ``batch_size``."""
    def word(match: re.Match) -> str:
        negated, name = match.group(1), match.group(2)
        if negated:
            return f"{name.replace('-', '_')}=False"
        return name.replace("-", "_") + ("=True" if name in _BOOLEAN_FLAGS else "")

    return re.sub(r"(?<![\w-])--(no-)?([a-z][a-z0-9-]*)", word, cli_text)


def worded(error: type[PemnError], cli_text: str) -> PemnError:
    """``error`` with ``cli_text`` for the command line and the same text in argument names for Python."""
    return error(_as_arguments(cli_text), cli_message=cli_text)
