"""What may reach a terminal or stdout: text made safe and one line long, JSON made strict.

Text from a file (layer names, provenance, header strings) or from a user (paths, exception messages
of their code) is untrusted. One rule makes it safe, ``sanitize``: every character that is not
printable (C0 and C1 controls, DEL, escape sequences' ESC, bidi overrides and isolates, zero-width
marks, line and paragraph separators, BOM, lone surrogates, unassigned code points) is written as its
Python escape, so ``"\\x1b[31m"`` shows as the harmless text ``\\x1b[31m`` and the result is always
one line. ``one_line`` is the same rule for messages: line breaks become single spaces first, and the
text may be shortened. Both are idempotent (their output holds printable characters only).

Imports nothing heavy: the CLI's ``--help`` and the torch-free commands use it.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["json_safe", "one_line", "sanitize"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    """``char`` as a Python escape: ``\\n``, ``\\x1b``, ``\\u202e`` or ``\\U000e0001``."""
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def sanitize(value: Any) -> str:
    """``value`` as one line of printable text (non-strings as compact JSON): every non-printable
    character made visible as its escape; printable text, spaces and backslashes unchanged."""
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        except (TypeError, ValueError):
            value = repr(value)
    return "".join(char if char.isprintable() else _escape(char) for char in value)


def one_line(value: BaseException | str, limit: int | None = 300) -> str:
    """A message, or an exception's message (its class name when empty), as one safe line: the
    non-blank lines stripped and joined by single spaces, at most ``limit`` characters of that text
    kept (``...`` marks a cut; None keeps all), then ``sanitize``-d."""
    text = str(value).strip()
    if not text and isinstance(value, BaseException):
        text = type(value).__name__
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    if limit is not None and len(line) > limit:
        line = line[: limit - 3] + "..."
    return sanitize(line)


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinity (a diverged loss, a crafted provenance) replaced by None, in
    nested dicts, lists and tuples too, so ``json.dumps(..., allow_nan=False)`` gives strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
