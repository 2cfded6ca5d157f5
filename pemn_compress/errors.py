"""The pemn-compress exception tree, and the exit status the ``pemn`` command gives each error.

Every error the library raises on purpose is a ``PemnError``. Errors about the content of a file or
of user input also subclass ``ValueError`` so that code written against plain Python conventions
still catches them. Each class says when it is raised; the CLI exit status comes from
``EXIT_CODES`` (the nearest class of an error's MRO that the table names):

    PemnError                                                                          exit 2
    ├── ConfigError (ValueError)          configuration: an invalid option value or combination
    ├── ModelError (ValueError)           model/skeleton: architecture, state dict or layer mismatch
    │   └── UnknownModelError (KeyError)  a name that the model registry does not know
    ├── DataError (ValueError)            data: a data set missing, malformed, empty or the wrong shape
    │   └── DataNotFoundError             the files are not there (says how to get them)
    │       (FileNotFoundError)
    ├── FormatError (ValueError)          file: a .pemn file that cannot be read
    │   ├── ContainerError                not a valid safetensors container / truncated
    │   ├── HeaderError                   PEMN header missing, malformed or inconsistent
    │   │   └── MissingKeyError           a required header key is absent
    │   ├── VersionError                  a format version newer than this reader
    │   ├── ChecksumError                 a checksum or the weight fingerprint does not match
    │   ├── LimitError                    a declared size beyond what the file justifies
    │   └── ShapeError                    a tensor's shape or length disagrees with the header
    ├── TrustError                        loading would execute code; needs trust_code=True
    ├── UserCodeError (ValueError)        user code: a module:function / module:Class reference that
    │                                     cannot be imported, or does not give what was expected
    ├── CheckpointError                   a training checkpoint that cannot be resumed
    └── CommandError                      CLI usage: a command-line argument the command cannot use
        └── VerificationError             ``pemn verify`` read the file but a check failed        exit 1

Outside the tree the table also names ``OSError`` (an unreadable user file, exit 2),
``BrokenPipeError`` (the reader of stdout left, exit 1) and ``KeyboardInterrupt`` (exit 130).
Anything else is a bug: it keeps its traceback and Python's exit status 1.

Two wrappers of ``compress()`` carry where a run saved its checkpoint (``interrupt.py``):
``TrainingInterrupted`` (a ``KeyboardInterrupt``: Ctrl-C) and ``TrainingFailed``, raised for any
error once training has started, with that error as ``error`` and ``__cause__``. They are not
categories of their own: the CLI reports the wrapped error by the table above and adds the checkpoint.

Messages name the layer, tensor or key, and say what was expected and what was found. They are
written in the words of the Python API (argument names such as ``trust_code=True``); where the
command line has other words (``--trust-code``), the error also carries ``cli_message``, which the
CLI prints instead. An error raised while handling another keeps it as ``__cause__``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

__all__ = [
    "EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "CheckpointError",
    "ChecksumError",
    "CommandError",
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
    "VerificationError",
    "VersionError",
    "exit_code",
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
    """Configuration: an option has an invalid type or value (density outside (0, 1], unknown strategy,
    ``epochs="3"``), or options that do not go together; raised before any work starts."""


class ModelError(PemnError, ValueError):
    """Model or skeleton: a model, state dict or layer table does not match what was expected (a missing
    or unexpected layer, a weight shape that differs from the plan, a model file that cannot be read)."""


class UnknownModelError(ModelError, KeyError):
    """The model registry has no entry of that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(PemnError, ValueError):
    """Data: a data set is malformed, empty (a loader that yields no batch), or does not fit the model."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The data files are missing; the message says how to get them."""


class FormatError(PemnError, ValueError):
    """File: a .pemn file cannot be read (the subclasses say which part is wrong)."""


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
    """User code: a ``module:function`` or ``module:Class`` reference cannot be imported, what it names
    is not what was expected (not callable, or it did not return an ``nn.Module``), or calling it raised."""


class CheckpointError(PemnError):
    """A training checkpoint is missing, corrupted or was made with other settings."""


class CommandError(PemnError):
    """CLI usage: an argument typed on the command line that the command cannot use (a path that is a
    folder or does not exist). Raised by the ``pemn`` commands only, never by the library."""


class VerificationError(CommandError):
    """``pemn verify`` read the file but one of its checks failed (a checksum or the weight fingerprint);
    the ``ChecksumError`` is the ``__cause__``."""


# ---------------------------------------------------------------------------------------------
# exit status of the pemn command

EXIT_FAILED = 1  # the command ran but its answer is "no": a verification failed, or stdout was closed
EXIT_ERROR = 2  # bad input: unreadable or malformed file, wrong option, missing data set (click's usage errors too)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), after saving a checkpoint when there is a run to save

# class -> exit status; an error gets the entry of the first class of its MRO listed here.
EXIT_CODES: dict[type[BaseException], int] = {
    VerificationError: EXIT_FAILED,
    PemnError: EXIT_ERROR,
    BrokenPipeError: EXIT_FAILED,
    OSError: EXIT_ERROR,
    KeyboardInterrupt: EXIT_INTERRUPTED,
}


def exit_code(error: BaseException) -> int:
    """The exit status of the ``pemn`` command that stops on ``error`` (``EXIT_CODES``); 1, Python's
    own status for an uncaught exception, for anything the table does not name (a bug)."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


# ---------------------------------------------------------------------------------------------
# option errors


def option_error(name: str, problem: str) -> ConfigError:
    """``ConfigError("epochs must ...")`` that the CLI shows as ``--epochs must ...`` (an option
    named ``name`` in the Python API is the flag ``--name`` with dashes on the command line)."""
    return ConfigError(f"{name} {problem}", cli_message=f"--{name.replace('_', '-')} {problem}")


def check_int(name: str, value: object, *, minimum: int, optional: bool = False) -> None:
    """An ``option_error`` unless ``value`` is an integer (not a bool) >= ``minimum`` (or None when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise option_error(name, f"must be an integer >= {minimum}{' or None' if optional else ''}, found {value!r}")


def check_number(name: str, value: object, *, low: float, high: float | None = None, low_open: bool = True,
                 high_open: bool = False, optional: bool = False) -> None:
    """An ``option_error`` unless ``value`` is a finite int or float (not a bool) in the interval from ``low``
    to ``high`` (None: no upper bound), each end open or closed as told (or None when ``optional``)."""
    if optional and value is None:
        return
    if not _in_interval(value, low=low, high=high, low_open=low_open, high_open=high_open):
        upper = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
        bound = f"{'(' if low_open else '['}{low}, {upper}"
        raise option_error(name, f"must be a number in {bound}{' or None' if optional else ''}, found {value!r}")


def _in_interval(value: object, *, low: float, high: float | None, low_open: bool, high_open: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    above = value > low if low_open else value >= low
    return above and (high is None or (value < high if high_open else value <= high))


def check_bool(name: str, value: object, *, optional: bool = False) -> None:
    """An ``option_error`` unless ``value`` is True or False (or None when ``optional``)."""
    if not (isinstance(value, bool) or (optional and value is None)):
        raise option_error(name, f"must be True or False{' or None' if optional else ''}, found {value!r}")


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """An ``option_error`` unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise option_error(name, f"must be one of {', '.join(choices)}; found {value!r}")


# flags that are True/False arguments in Python
_BOOLEAN_FLAGS = {"resume", "trust-code", "allow-pickle", "fold-batchnorm"}


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
