"""What kind of file is this? Names a file from its first bytes and its size, for one-line errors.

Used when a file that should be a `.pemn` (``read_pemn``) or a model (``pemn compress``) cannot be
read: instead of "safetensors header claims 578712552184433488 bytes" the user reads "model.pt: a
PyTorch checkpoint (zip archive, torch.save); expected a .pemn file (pemn compress writes one)".

Standard library only (the reader stays importable without torch). Nothing here decides whether a
file is accepted: ``sniff`` only names what the first bytes show, and returns ``None`` when they
show nothing it knows. A file that looks like a plausible `.pemn` gets kind ``"pemn"`` (``describe``
returns ``None`` for it): the real reader judges those, with its detailed messages.
"""

from __future__ import annotations

import math
import os
import struct
import unicodedata
from dataclasses import dataclass

from ..errors import ContainerError, FormatError, HeaderError, LimitError
from .constants import FORMAT_NAME, KEY_FORMAT, MAX_HEADER_BYTES

__all__ = ["EXPECTED_PEMN", "PREFIX_BYTES", "Sniffed", "describe", "sniff", "sniff_file", "wrong_file_error"]

PREFIX_BYTES = 64 * 1024  # what ``sniff_file`` reads first (a safetensors header may need more)
TAIL_BYTES = 22 + 0xFFFF  # a zip's end-of-central-directory record lies within this of the end
MAX_SNIFF_HEADER = 16 * 1024 * 1024  # the largest safetensors header ``sniff_file`` reads to count tensors
EXPECTED_PEMN = "expected a .pemn file (pemn compress writes one)"

TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickle of torch's legacy magic number
_ZIP_LOCAL = b"PK\x03\x04"
_ZIP_END = b"PK\x05\x06"
_MAGICS = (  # (magic, what): cheap and unambiguous
    (b"\x1f\x8b\x08", "a gzip-compressed file"),
    (b"\xfd7zXZ\x00", "an xz-compressed file"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x93NUMPY", "a NumPy array file (.npy)"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras .h5?)"),
    (b"GGUF", "a GGUF model file"),
    (b"\x7fELF", "an executable (ELF)"),
)
# safetensors dtype -> bytes per element (more than the .pemn reader accepts: plain files use them)
_ITEMSIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip


@dataclass(frozen=True)
class Sniffed:
    """What a file's first bytes show.

    kind: "empty", "text", "torch-zip", "torch-legacy", "pickle", "zip", "compressed" (and the other
    magic numbers), "safetensors" (a valid-looking safetensors file without PEMN metadata),
    "truncated" (a safetensors/.pemn file cut short: ``pemn`` says which), "pemn" (plausible .pemn).
    what: the description, "a text file (\\"hello wor...\\")".
    sure: False when the evidence is a couple of bytes only (a bare pickle opcode): callers then add
    the description to their own message instead of replacing it.
    truncated: the file is cut short (a zip without its end record, a safetensors file whose header
    or data offsets reach past the end).
    """

    kind: str
    what: str
    sure: bool = True
    truncated: bool = False
    pemn: bool = False


def _snippet(text: str, limit: int = 20) -> str:
    """The first characters of ``text``, quoted, control and format characters escaped."""
    out = []
    for ch in text[:limit]:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return '"' + "".join(out) + ("..." if len(text) > limit else "") + '"'


def _text(prefix: bytes) -> str | None:
    """``prefix`` as text when it is UTF-8 with (almost) only printable characters, else None."""
    chunk = prefix[:4096]
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(chunk) - 3 or exc.reason != "unexpected end of data":
            return None
        text = chunk[: exc.start].decode("utf-8")  # a character cut by the prefix's end
    if not text or "\x00" in text:
        return None
    bad = sum(1 for ch in text if not (ch.isprintable() or ch in "\n\r\t\f\v" or unicodedata.category(ch) == "Cf"))
    return text if bad * 10 <= len(text) else None  # a few escape sequences: still text


def _zip_entry(prefix: bytes) -> str:
    """The name of the first entry of a zip archive ("" if the local header is cut)."""
    if len(prefix) < 30:
        return ""
    (name_len,) = struct.unpack("<H", prefix[26:28])
    return prefix[30 : 30 + name_len].decode("utf-8", "replace")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _safetensors(prefix: bytes | memoryview, size: int) -> Sniffed | None:
    """A file that starts like safetensors (header length <= the limit, then "{")."""
    (n,) = struct.unpack("<Q", bytes(prefix[:8]))
    visible = bytes(prefix[8 : 8 + n])
    if 8 + n > size:
        pemn = b'"pemn.' in visible or b'"format":"pemn"' in visible
        what = "a .pemn file" if pemn else "a safetensors file"
        return Sniffed("truncated", f"{what} cut short (truncated: {size} of at least {8 + n} bytes; its header claims "
                                    f"{n} bytes)", truncated=True, pemn=pemn)
    if len(visible) < n:
        return None  # the caller did not read the whole header
    from .container import strict_json  # here: container imports this module

    try:
        header = strict_json(visible.decode("utf-8"), ValueError, "header")
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return None
    spans = []
    for info in header.values():
        if not (isinstance(info, dict) and set(info) == {"dtype", "shape", "data_offsets"}):
            return None
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not (dtype in _ITEMSIZE and isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
                and isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            return None
        if offsets[0] < 0 or offsets[1] - offsets[0] != math.prod(shape) * _ITEMSIZE[dtype]:
            return None
        spans.append(tuple(offsets))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            return None  # holes or overlaps: not a clean file cut short; the reader says what is wrong
        position = end
    pemn = metadata.get(KEY_FORMAT) == FORMAT_NAME or any(key.startswith("pemn.") for key in metadata)
    total = 8 + n + position
    if total > size:
        what = "a .pemn file" if pemn else "a safetensors file"
        return Sniffed("truncated", f"{what} cut short (truncated: {size} of {total} bytes; its tensor data runs "
                                    "outside the file)", truncated=True, pemn=pemn)
    if pemn or total != size:
        return Sniffed("pemn", "a .pemn file") if pemn else None
    return Sniffed("safetensors", f"a safetensors file without PEMN metadata ({_plural(len(header), 'tensor')}; "
                                  "a dense model's weights, not a .pemn file)")


def sniff(prefix: bytes | memoryview, size: int, tail: bytes | memoryview | None = None) -> Sniffed | None:
    """Name the file whose first bytes are ``prefix`` and whose length is ``size``; None if unknown.

    ``prefix`` may be the whole file; a safetensors file is only described in full (tensor count,
    truncation by its data offsets) when ``prefix`` holds its whole header. ``tail`` (the last
    ``TAIL_BYTES`` or the whole file), when given, lets a zip archive without its end record be
    called cut short.
    """
    head = bytes(prefix[:4096])  # prefix may be a whole (large) file: copy only what is looked at
    if size == 0:
        return Sniffed("empty", "an empty file (0 bytes, too short for anything)")
    if head.startswith(_ZIP_LOCAL):
        entry = _zip_entry(head)
        torch = entry.endswith((".pkl", "/version")) or b"data.pkl" in head
        if tail is not None and _ZIP_END not in bytes(tail[-TAIL_BYTES:]):
            what = "a PyTorch checkpoint" if torch else "a zip archive"
            return Sniffed("torch-zip" if torch else "zip", f"{what} cut short (a zip archive of {size} bytes without "
                                                              "its end record)", truncated=True)
        if torch:
            return Sniffed("torch-zip", "a PyTorch checkpoint (zip archive, torch.save)")
        return Sniffed("zip", "a zip archive" + (f" (first entry {_snippet(entry, 40)})" if entry else ""))
    if head.startswith(_ZIP_END):
        return Sniffed("zip", "an empty zip archive")
    if head.startswith(TORCH_LEGACY_MAGIC):
        return Sniffed("torch-legacy", "a PyTorch checkpoint (legacy pickle format, torch.save)")
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return Sniffed("pickle", f"a Python pickle (protocol {head[1]})", sure=False)
    for magic, what in _MAGICS:
        if head.startswith(magic):
            return Sniffed("compressed" if "compressed" in what else "other", what)
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= MAX_HEADER_BYTES:
        return _safetensors(prefix, size)
    text = _text(head)
    if text is not None:
        return Sniffed("text", f"a text file ({_snippet(text.lstrip())})")
    return None


def describe(prefix: bytes | memoryview, size: int, tail: bytes | memoryview | None = None) -> str | None:
    """What the file is, in words; None when unknown or when it looks like a plausible `.pemn`."""
    found = sniff(prefix, size, tail)
    return None if found is None or found.kind == "pemn" else found.what


def sniff_file(path: str | os.PathLike) -> Sniffed | None:
    """``sniff`` on a file: reads its first bytes (the whole safetensors header, up to 16 MiB) and its tail."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            prefix = fh.read(PREFIX_BYTES)
            if len(prefix) >= 9 and prefix[8:9] == b"{":
                (n,) = struct.unpack("<Q", prefix[:8])
                if len(prefix) < 8 + n <= min(size, 8 + MAX_SNIFF_HEADER):
                    prefix += fh.read(8 + n - len(prefix))
            tail = None
            if prefix.startswith(_ZIP_LOCAL):
                fh.seek(max(0, size - TAIL_BYTES))
                tail = fh.read()
    except OSError:
        return None
    return sniff(prefix, size, tail)


def wrong_file_error(exc: FormatError, blob: bytes | memoryview, label: str | None) -> FormatError | None:
    """The one-line error for a file that ``sniff`` recognises as another kind than `.pemn`, or None.

    ``<label>: <what it is>; expected a .pemn file (pemn compress writes one)``, where ``label`` is
    the path as the user gave it (None: bytes, "the data"). The class says what is wrong: a
    ``HeaderError`` for a plain safetensors file (a valid container without PEMN metadata), a
    ``ContainerError`` for anything else that is not a whole safetensors container (another format,
    text, a file cut short). Weak evidence (a bare pickle opcode) only adds the kind to the reader's
    own error, class and words kept. Plausible `.pemn` files, files the sniffer does not know and
    limit errors of safetensors files keep the reader's detailed error (None).
    """
    if not isinstance(exc, (ContainerError, LimitError, HeaderError)):
        return None
    label = "the data" if label is None else label
    blob = memoryview(blob)
    found = sniff(blob, len(blob), blob[-TAIL_BYTES:])
    if found is None or found.kind == "pemn":
        return None
    if found.kind == "safetensors":
        if isinstance(exc, LimitError) or (isinstance(exc, HeaderError) and type(exc) is not HeaderError):
            return None
        return HeaderError(f"{label}: {found.what}; {EXPECTED_PEMN}")
    if isinstance(exc, HeaderError):
        return None  # header errors come after a valid container: only a plain safetensors file is renamed
    if not found.sure:
        return type(exc)(f"{label}: {found.what}, not a .pemn file: {exc}")
    complete = "expected a complete .pemn file (copy or write it again)"
    expected = complete if found.truncated and found.pemn else EXPECTED_PEMN
    return ContainerError(f"{label}: {found.what}; {expected}")
