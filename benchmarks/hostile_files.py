"""Hand-made hostile `.pemn` files, beyond formats/vectors/invalid, and the check that each is harmless.

``build_hostile()`` returns ``Hostile`` files in five groups:

* **code**: architecture references that try to import or call code: ``import`` kind without trust
  (``os:system``, ``subprocess:run``, ``builtins:exec``, a module planted next to the file), registry
  names such as ``__import__``, and ``kwargs`` that try to smuggle objects, code strings or a ``name``
  colliding with ``create_model``'s own argument. The readers (which build no architecture) may accept
  them as data; ``pemn.load`` must refuse them with a ``PemnError`` and import or run nothing.
* **size**: rice masks that claim a huge decoded size with a few bytes.
* **text**: layer names, provenance, producer and metadata holding ANSI escapes, control characters,
  bidi overrides and rich markup. Valid files: ``pemn inspect`` / ``pemn verify`` must show them
  escaped (no raw ESC byte, markup printed literally), including inside error messages.
* **not-pemn**: valid safetensors files that are not PEMN files.
* **inconsistent**: PEMN headers that disagree with the tensors (data re-signed so the cross-checks,
  not the checksum, must catch them).
* **v2-header**: format version 2's header block (formats/pemn-v2.md): inflation bombs declared small,
  ``pemn.header_bytes`` of 999999999 or of the limit, a header tensor claiming 100 MiB, header tensors of
  the wrong kind, streams that are not one raw DEFLATE stream, the version label against the layout,
  derived keys stated wrong. Each is small on disk (what matters is what it declares) and is refused with
  the right class, within ``SMALL_PEAK`` traced bytes: before allocating anything of the declared size.

The code, size, text and inconsistent groups exist in both format versions (version 2 names end in
``_v2``): every file is made by editing a valid vector (written by the package) with
benchmarks/fuzz_loader.py's file model, which unpacks, edits, repacks and re-signs files of either
version with struct, json, zlib and hashlib only (``edit``, ``base_file``).

``check_hostile(h, workdir)`` runs the package readers, the reference reader, ``pemn.load``,
``pemn inspect`` and ``pemn verify`` on one file with ``os.system``/``subprocess``/``importlib`` watched
and a marker module planted in ``workdir``; it returns what happened. Used by tests/test_hostile_files.py
and benchmarks/reliability.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import math
import os
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

VALID = ROOT / "formats" / "vectors" / "valid"
MARKER = "pemn-hostile-executed"  # a file that exists only if some hostile code ran
PLANTED_MODULE = "pemn_hostile_module"  # importing it creates MARKER
ESC = "\x1b"

__all__ = ["Hostile", "base_file", "build_hostile", "check_hostile", "edit", "fuzz_loader", "make_vectors"]


@dataclass
class Hostile:
    name: str
    group: str
    description: str
    blob: bytes
    read: str  # what read_pemn + decode + fingerprint give: "accepted" or an error class name
    load: str  # what pemn.load gives (no skeleton): "accepted" or an error class name
    message: str = ""  # a substring of the refusal's message (of `load` when read accepts)
    skeleton: str | None = None  # make_vectors.SKELETONS entry pemn.load gets as model= (None: the file's reference)
    heavy: bool = False  # a large file (seconds per read): the CLI is not run on it
    max_peak: int | None = None  # traced bytes the package read may allocate at most (None: not measured)


def _script(name: str, relative: str):
    """The repository script ``relative`` as module ``name`` (loaded once)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def make_vectors():
    return _script("pemn_make_vectors", "formats/make_vectors.py")


def _container(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def fuzz_loader():
    """benchmarks/fuzz_loader.py as a module: its file model (``Candidate``: unpack, edit, repack and
    re-sign a file of either version, with struct/json/zlib/hashlib only) builds every hostile file."""
    return _script("fuzz_loader", "benchmarks/fuzz_loader.py")


def edit(blob: bytes):
    """A valid file (either version) to edit: ``.header``, ``.metadata``, ``.tensors`` (name -> [dtype,
    shape, bytes]), the version 2 hooks; ``.encode()`` repacks and re-signs it."""
    return fuzz_loader().Candidate.from_blob(blob)


def base_file(name: str, version: int = 1) -> bytes:
    """Valid vector ``name`` (written by the package, version 1), re-laid out as ``version``."""
    blob = (VALID / f"{name}.pemn").read_bytes()
    return blob if version == 1 else fuzz_loader().to_version(blob, version)


def _rice_layers(base: bytes, shapes: list[list[int]], *, ones: int = 0, stream: bytes = b"") -> bytes:
    """A consistent file (strategy ``dense``) whose layers are Linear with the given shapes and rice masks
    (``ones``, ``stream``); version 2 leaves the derived keys (banks, bank, scale) out."""
    fz = fuzz_loader()
    e = edit(base)
    e.header["config"].update(strategy="dense", ratio=None, learn_values=False, rescale=True)
    e.header["layers"] = [
        {
            "name": f"l{i}",
            "type": "Linear",
            "shape": s,
            "codec": "rice",
            "ones": ones,
            "rice_k": 0,
            "invert": False,
            "bytes": len(stream),
        }
        for i, s in enumerate(shapes)
    ]
    if e.layout < 2:
        n = [math.prod(s) for s in shapes]
        e.header["banks"] = [
            {"index": i, "size": k, "length": k, "tiling": "none", "stored": False} for i, k in enumerate(n)
        ]
        for i, layer in enumerate(e.header["layers"]):
            layer.update(bank=i, scale=fz.kaiming(layer["shape"]))
    for name in [t for t in e.tensors if t.startswith("values.")]:
        del e.tensors[name]
    e.tensors["masks"] = ["U8", [len(stream) * len(shapes)], stream * len(shapes)]
    return e.encode()


def build_hostile() -> list[Hostile]:
    """Every hostile file: the groups of the module docstring in both format versions (version 2 names
    end in ``_v2``), the version-independent ``not-pemn`` files, and the ``v2-header`` group."""
    out: list[Hostile] = []
    for version in (1, 2):
        out += _hostile_files(version)
    out += _not_pemn()
    out += _v2_header()
    return out


def _hostile_files(version: int) -> list[Hostile]:
    fz = fuzz_loader()
    cm = base_file("cm_onelayer_d50", version)  # registry architecture (test_convmixer)
    seq = base_file("seq_dense_raw_d50", version)  # no architecture reference (skeleton)
    rice = base_file("seq_onelayer_rice_d10", version)
    rp = base_file("seq_rp_copy", version)
    suffix = "" if version == 1 else f"_v{version}"
    out: list[Hostile] = []

    def add(name, *args, **kwargs):
        out.append(Hostile(name + suffix, *args, **kwargs))

    # ---- code: import / call attempts
    touch = f"touch {MARKER}"
    for target, kwargs, what in (
        ("os:system", {"command": touch}, "os.system('touch ...')"),
        ("subprocess:run", {"args": ["touch", MARKER]}, "subprocess.run(['touch', ...])"),
        ("builtins:exec", {"source": f"open({MARKER!r}, 'w')"}, "exec(<code>)"),
        (f"{PLANTED_MODULE}:build", {}, "a module planted next to the file (its import creates the marker)"),
    ):
        e = edit(cm)
        e.header["architecture"] = {"kind": "import", "target": target, "kwargs": kwargs}
        add(
            f"import_{target.split(':')[0].split('_')[-1]}_{target.split(':')[1]}",
            "code",
            f"architecture kind 'import' of {what}, trust off",
            e.encode(),
            "accepted",
            "TrustError",
            "trust_code",
        )
    for name, what in (
        ("__import__", "the builtin __import__"),
        ("os.system", "a dotted callable"),
        ("builtins:eval", "a module:function spelled as a name"),
        ("../../etc/passwd", "a path"),
    ):
        e = edit(cm)
        e.header["architecture"]["name"] = name
        add(
            f"registry_name_{''.join(ch if ch.isalnum() else '_' for ch in name).strip('_')}",
            "code",
            f"registry name {name!r} ({what})",
            e.encode(),
            "accepted",
            "UnknownModelError",
            "unknown model",
        )
    for label, kwargs, message, what in (
        ("name", {"name": "os"}, "unknown argument 'name'", "a 'name' argument colliding with create_model(name, ...)"),
        ("reduce", {"dim": {"__reduce__": ["os.system", [touch]]}}, "JSON value", "a pickle-style __reduce__ object"),
        (
            "code_string",
            {"dim": "__import__('os').system('touch x')"},
            "expected an integer",
            "a code string as a size",
        ),
        ("dunder", {"__class__": "os.system"}, "unknown argument", "a __class__ argument"),
        ("huge_dim", {"dim": 1 << 20}, "", "dim 2**20: a 2**40-weight 1x1 conv if it were built for real"),
    ):
        e = edit(cm)
        e.header["architecture"]["kwargs"].update(kwargs)
        expected = "ShapeError" if label == "huge_dim" else "ModelError"
        add(
            f"registry_kwargs_{label}",
            "code",
            f"registry kwargs with {what}",
            e.encode(),
            "accepted",
            expected,
            message,
        )

    # ---- size: rice masks claiming a huge decoded size
    add(
        "rice_empty_stream_2e31_weights",
        "size",
        "one Linear of 2**31 + 2**16 weights, empty rice stream (0 bytes)",
        _rice_layers(rice, [[1 << 16, (1 << 15) + 1]]),
        "LimitError",
        "LimitError",
        "limit",
    )
    add(
        "rice_layer_over_2e34",
        "size",
        "one layer of 2**34 + 2**17 weights, 1 rice byte",
        _rice_layers(rice, [[1 << 17, (1 << 17) + 1]], ones=1, stream=b"\x00"),
        "LimitError",
        "LimitError",
        "limit",
    )
    add(
        "rice_ones_1e9_two_bytes",
        "size",
        "a [40000, 40000] layer whose 2-byte rice stream claims 10**9 ones",
        _rice_layers(rice, [[40000, 40000]], ones=10**9, stream=b"\x00\x00"),
        "ShapeError",
        "ModelError",
        "codewords need",
    )  # pemn.load refuses earlier: no architecture for layer 'l0'
    gap = 1_500_000_000  # one codeword with k = 40: 41 bits that place a one at weight 1.5e9
    bits = "0" + format(gap, "040b")
    bits += "0" * (-len(bits) % 8)
    stream = int(bits, 2).to_bytes(len(bits) // 8, "big")
    e = edit(_rice_layers(rice, [[50000, 51200]], ones=1, stream=stream))
    e.header["layers"][0]["rice_k"] = 40
    add(
        "rice_long_gap_over_limit",
        "size",
        "6 rice bytes placing a one at weight 1.5e9 of a 2.56e9-weight layer",
        e.encode(),
        "LimitError",
        "LimitError",
        "limit",
    )

    # ---- text: escapes and markup (valid files) and inside an error message
    names = ["\x1b[31mred\x1b[0m", "\x1b]0;pwned\x07\u202eevil\u200b", "[bold red]markup[/]\r\x1b[2Kfake ok"]
    e = edit(seq)
    for layer, name in zip(e.header["layers"], names, strict=True):
        layer["name"] = name
    add(
        "ansi_layer_names",
        "text",
        "layer names with ANSI colour/OSC title/erase-line escapes, rich markup, bidi override",
        e.encode(),
        "accepted",
        "ModelError",
        "does not exist",
        skeleton="tiny_seq",
    )
    e = edit(cm)
    e.header["provenance"] = {
        "dataset": "\x1b[2J\x1b[H[link=file:///etc/passwd]click[/link]",
        "accuracy": "\x1b[5m99.9%",
        "recipe": {"\x1b[31mkey": "\x07\x08\x7f"},
        "note": "[red]not red[/red] \u009b31m",
    }
    e.header["producer"] = {"name": "\x1b[32mpemn-compress", "version": "\x1b[0m9.9\r"}
    e.metadata["\x1b[31mextra"] = "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"
    add(
        "ansi_provenance_producer_metadata",
        "text",
        "provenance, producer and an extra metadata key with escapes/markup",
        e.encode(),
        "accepted",
        "accepted",
    )
    e = edit(seq)
    e.header["layers"][0]["name"] = "\x1b[31mred\x1b[0m[blink]"
    e.header["layers"][0]["ones"] += 1
    add(
        "ansi_in_error_message",
        "text",
        "an escape-laden layer name inside a refusal message",
        e.encode(),
        "ShapeError",
        "ModelError",
        "kept weights",
        skeleton="tiny_seq",
    )

    # ---- inconsistent header and tensors (data re-signed: the cross-checks must catch them)
    e = edit(seq)
    donor = edit(cm)
    e.tensors, e.order = donor.tensors, donor.order
    add(
        "header_of_another_file",
        "inconsistent",
        "seq_dense_raw_d50's PEMN header over cm_onelayer_d50's tensors, re-signed",
        e.encode(),
        "ShapeError",
        "ShapeError",
        "masks",
    )
    e = edit(rp)
    values = np.frombuffer(e.tensors["values.0"][2], "<f4")
    e.tensors["values.0"] = ["F64", [values.size], values.astype("<f8").tobytes()]
    add(
        "values_tensor_float64",
        "inconsistent",
        "the stored value vector as F64",
        e.encode(),
        "ShapeError",
        "ShapeError",
        "values.0",
    )
    e = edit(seq)
    e.tensors["masks"][1] = [len(e.tensors["masks"][2]), 1]
    add(
        "masks_tensor_2d",
        "inconsistent",
        "the masks tensor with shape [n, 1]",
        e.encode(),
        "ShapeError",
        "ShapeError",
        "masks",
    )
    e = edit(seq)
    e.tensors["dense.f32"][1] = [1, len(e.tensors["dense.f32"][2]) // 4]
    add(
        "dense_group_2d",
        "inconsistent",
        "dense.f32 with shape [1, n]",
        e.encode(),
        "ShapeError",
        "ShapeError",
        "dense.f32",
    )
    e = edit(seq)
    layer = e.header["layers"][0]
    layer.update(codec="rice", rice_k=0, invert=False, bytes=fz.layer_bytes(layer))  # a raw stream read as rice
    add(
        "raw_stream_declared_rice",
        "inconsistent",
        "a raw mask stream declared as rice (k 0): decodes, to other bits",
        e.encode(),
        "ChecksumError",
        "ChecksumError",
        "fingerprint",
        skeleton="tiny_seq",
    )
    for label, names in (("missing", ["blocks.9.3"]), ("not_a_string", [7])):
        e = edit(cm)
        e.header["dense"]["folded_batchnorm"] = names
        add(
            f"folded_batchnorm_{label}",
            "inconsistent",
            f"dense.folded_batchnorm naming {names[0]!r}, with no folded weight/bias entries in the table",
            e.encode(),
            "HeaderError",  # readers check folded names against the dense table (spec 11.2)
            "HeaderError",
            "folded_batchnorm",
        )
    if version == 1:  # version 2 lays the header tensor out between dense.f32 and masks: no adjacent pair
        (n,) = struct.unpack("<Q", seq[:8])
        entries, data = json.loads(seq[8 : 8 + n]), seq[8 + n :]
        order = sorted((n for n in entries if n != "__metadata__"), key=lambda n: entries[n]["data_offsets"])
        first, second = order[-2], order[-1]  # adjacent in the buffer: [first][second]
        (f0, f1), (_, s1) = entries[first]["data_offsets"], entries[second]["data_offsets"]
        swapped = json.loads(json.dumps(entries))
        swapped[second]["data_offsets"] = [f0, f0 + (s1 - f1)]  # still an exact tiling, same buffer (checksum) ...
        swapped[first]["data_offsets"] = [f0 + (s1 - f1), s1]  # ... but each entry now reads the other's bytes
        add(
            "container_offsets_swapped",
            "inconsistent",
            f"entries {first!r} and {second!r} pointing at each other's bytes (tiling and data checksum intact)",
            _container(swapped, data),
            "ShapeError",
            "ShapeError",
            "mask of layer",
            skeleton="tiny_seq",
        )
    return out


def _not_pemn() -> list[Hostile]:
    """Valid safetensors files that are not PEMN files (no PEMN header to speak of: one version)."""
    w = np.arange(6, dtype=np.float32)
    out: list[Hostile] = []

    def add(*args, **kwargs):
        out.append(Hostile(*args, **kwargs))

    add(
        "safetensors_no_metadata",
        "not-pemn",
        "a safetensors file without __metadata__",
        _container({"weight": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}}, w.tobytes()),
        "HeaderError",
        "HeaderError",
        "not a .pemn file",
    )
    add(
        "safetensors_format_pt",
        "not-pemn",
        "a torch safetensors file (format 'pt')",
        _container(
            {"__metadata__": {"format": "pt"}, "weight": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}},
            w.tobytes(),
        ),
        "HeaderError",
        "HeaderError",
        "not a .pemn file",
    )
    for version, key in ((1, "pemn.header"), (2, "pemn.header_bytes")):
        add(
            "safetensors_pemn_without_header" + ("" if version == 1 else "_v2"),
            "not-pemn",
            f"format 'pemn', version {version}, tensors named masks/dense.f32, no PEMN header",
            _container(
                {
                    "__metadata__": {"format": "pemn", "pemn.version": str(version)},
                    "masks": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                    "dense.f32": {"dtype": "F32", "shape": [6], "data_offsets": [8, 32]},
                },
                bytes(8) + w.tobytes(),
            ),
            "MissingKeyError",
            "MissingKeyError",
            key,
        )
    many = {f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for i in range(100_001)}
    add(
        "safetensors_100001_tensors",
        "not-pemn",
        "100,001 zero-length tensors (over MAX_TENSORS), a 5.7 MB header",
        _container(many),
        "LimitError",
        "LimitError",
        "tensors",
        heavy=True,
    )
    add(
        "safetensors_pickle_bytes",
        "not-pemn",
        "a pickle (torch.save) where a .pemn file is expected",
        b"\x80\x02\x63os\nsystem\nq\x00X\x05\x00\x00\x00touchq\x01\x85q\x02Rq\x03.",
        "LimitError",
        "LimitError",
        "header claims",
    )
    return out


SMALL_PEAK = 4 << 20  # what reading a hostile v2 file may allocate at most (traced): nothing it merely declares


def _v2_header() -> list[Hostile]:
    """Version 2's header block (formats/pemn-v2.md sections 2, 3 and 6): declared sizes, inflation
    bombs, header tensors of the wrong kind, streams that are not one raw DEFLATE stream, the version
    label against the layout, derived keys that disagree. Each small on disk; those that declare or
    hide a large size are refused within SMALL_PEAK bytes of traced allocation (before allocating it)."""
    fz = fuzz_loader()
    seq = base_file("seq_dense_raw_d50", 2)
    out: list[Hostile] = []

    def add(name, description, blob, read, load, message, *, peak=SMALL_PEAK, skeleton="tiny_seq", **kwargs):
        out.append(
            Hostile(name, "v2-header", description, blob, read, load, message, skeleton, max_peak=peak, **kwargs)
        )

    def file(stream=None, header_bytes=None, **attrs):
        e = edit(seq)
        if stream is not None:
            e.header_stream = stream
        if header_bytes is not None:
            e.header_bytes_edit = lambda n: header_bytes
        for key, value in attrs.items():
            setattr(e, key, value)
        return e

    def bomb(size):  # the header text, then ``size`` zero bytes: one valid stream, far longer than declared
        return lambda t: fz.deflate_raw(t, final=False) + fz.zero_bomb(size)

    add(
        "v2_inflation_bomb_declared_small",
        "a 64 KB header stream inflating to the 1 KB header then 64 MiB of zeros; pemn.header_bytes: the 1 KB",
        file(bomb(64 << 20)).encode(),
        "HeaderError",
        "HeaderError",
        "inflates to more than",
    )
    add(
        "v2_inflation_bomb_zeros_only",
        "a 16 KB stream of 16 MiB of zeros (no JSON at all) where a 1 KB header is declared",
        file(lambda t: fz.zero_bomb()).encode(),
        "HeaderError",
        "HeaderError",
        "inflates to more than",
    )
    add(
        "v2_header_bytes_999999999",
        "pemn.header_bytes 999999999 (over MAX_HEADER_BYTES) over a 64 MiB inflation bomb: refused before inflating",
        file(bomb(64 << 20), "999999999").encode(),
        "LimitError",
        "LimitError",
        "999999999",
    )
    add(
        "v2_header_bytes_max_small_stream",
        "pemn.header_bytes 104857600 (the limit) over the real 1 KB stream: nothing of the declared size allocated",
        file(header_bytes=str(fz.MAX_HEADER_BYTES)).encode(),
        "HeaderError",
        "HeaderError",
        "declares 104857600",
    )
    add(
        "v2_header_bytes_ten_digits",
        "pemn.header_bytes '0000001039': ten digits (the spec allows 1 to 9)",
        file(header_bytes="0000001039").encode(),
        "HeaderError",
        "HeaderError",
        "pemn.header_bytes",
    )
    add(
        "v2_header_bytes_off_by_one",
        "pemn.header_bytes one less than the inflated header",
        file(header_bytes=None, header_bytes_edit=lambda n: str(n - 1)).encode(),
        "HeaderError",
        "HeaderError",
        "inflates to more than",
    )
    e = file()
    e.entry_edits.append(lambda entries: entries["header"].update(shape=[100 << 20]))
    e.entry_edits.append(
        lambda entries: entries["header"].update(
            data_offsets=[entries["header"]["data_offsets"][0], entries["header"]["data_offsets"][0] + (100 << 20)]
        )
    )
    add(
        "v2_header_tensor_claims_100MiB",
        "the header tensor's entry claims 100 MiB of U8 (shape and offsets) in a 1 KB file",
        e.encode(),
        "ContainerError",
        "ContainerError",
        "",
    )
    e = file()
    del e.tensors["header"]
    add("v2_header_tensor_missing", "no header tensor", e.encode(), "ShapeError", "ShapeError", "'header' is missing")
    e = file()
    e.tensors["header"][0] = "F32"
    add(
        "v2_header_tensor_f32",
        "the header stream typed F32 (padded to 4 bytes)",
        e.encode(),
        "ShapeError",
        "ShapeError",
        "1-D uint8",
    )
    e = file()
    e.tensors["header"][1] = lambda n: [1, n]
    add("v2_header_tensor_2d", "the header tensor of shape [1, n]", e.encode(), "ShapeError", "ShapeError", "1-D uint8")
    e = file(header_stream_edits=[lambda s, t: s + b"\x00"])
    add(
        "v2_header_trailing_byte",
        "one zero byte after the final DEFLATE block",
        e.encode(),
        "HeaderError",
        "HeaderError",
        "after its final",
    )
    e = file(header_stream_edits=[lambda s, t: s[:-1]])
    add("v2_header_truncated", "the header stream cut by one byte", e.encode(), "HeaderError", "HeaderError", "")
    add(
        "v2_header_zlib_wrapped",
        "the header as a zlib stream (2-byte header, Adler-32) instead of raw DEFLATE",
        file(lambda t: zlib.compress(t, 9)).encode(),
        "HeaderError",
        "HeaderError",
        "",
    )
    add(
        "v2_header_no_final_block",
        "the header as hand-made stored blocks, none of them final",
        file(lambda t: fz.stored_stream(t, (100,), final=False)).encode(),
        "HeaderError",
        "HeaderError",
        "cut short",
    )
    streams: list[bytes] = []
    e = file(header_stream_edits=[lambda s, t: streams.append(s) or s])
    e.encode()
    e.sign_header = False
    e.metadata["pemn.header_sha256"] = hashlib.sha256(streams[0]).hexdigest()
    add(
        "v2_header_sha256_of_stream",
        "pemn.header_sha256 of the deflated stream instead of the text",
        e.encode(),
        "ChecksumError",
        "ChecksumError",
        "header checksum",
    )
    nested = b'{"a":' + b"[" * (1 << 20) + b"]" * (1 << 20) + b"}"
    add(
        "v2_header_nested_brackets",
        "a 2 KB stream inflating to 2 MiB of nested brackets (depth 2**20), hashed and declared",
        file(header_raw_edits=[lambda t: nested]).encode(),
        "HeaderError",
        "HeaderError",
        "",
        peak=16 << 20,
    )
    e = edit(base_file("seq_dense_raw_d50"))
    stream = fz.deflate_raw(b"{}")
    e.tensors["header"] = ["U8", [len(stream)], stream]
    e.add_to_order("header")
    add(
        "v1_file_with_header_tensor",
        "a complete version 1 file with an extra 'header' tensor",
        e.encode(),
        "HeaderError",
        "HeaderError",
        "tensors not described",
    )
    e = file()
    e.metadata["pemn.version"] = "1"
    add(
        "v2_file_labelled_v1",
        "a version 2 file labelled pemn.version '1'",
        e.encode(),
        "MissingKeyError",
        "MissingKeyError",
        "pemn.header",
    )
    e = file()
    e.metadata["pemn.header"] = fz.canonical_json(edit(base_file("cm_onelayer_d50")).header)
    add(
        "v2_stray_v1_header",
        "a version 2 file also holding another file's header in pemn.header (ignored: the file is valid)",
        e.encode(),
        "accepted",
        "accepted",
        "",
    )
    e = file()
    e.header["layers"][1]["bank"] = 0
    add(
        "v2_derived_bank_conflict",
        "layer 1 stating bank 0 where strategy 'dense' derives bank 1",
        e.encode(),
        "HeaderError",
        "HeaderError",
        "bank must be 1",
    )
    e = file()
    e.header["layers"][1]["bank"] = -1
    add(
        "v2_derived_bank_minus_one",
        "layer 1 stating bank -1 where 'dense' derives bank 1 (-1 was once the reader's own 'left out' mark)",
        e.encode(),
        "HeaderError",
        "HeaderError",
        "bank must be 1",
    )
    e = file()
    e.header["generator"] = {"name": "philox4x32-10", "seed": e.header["config"]["seed"] + 1}
    add(
        "v2_derived_generator_conflict",
        "a generator whose seed differs from config.seed",
        e.encode(),
        "HeaderError",
        "HeaderError",
        "generator.seed",
    )
    return out


# ---------------------------------------------------------------------------------------------- checking
@contextlib.contextmanager
def watch_execution(workdir: Path):
    """Record any os.system / subprocess / importlib.import_module call; plant a module that leaves a marker."""
    import pemn_compress.usercode as usercode  # every import of user code goes through usercode

    calls: list = []
    (workdir / f"{PLANTED_MODULE}.py").write_text(
        f"open({str(workdir / MARKER)!r}, 'w').close()\n\ndef build():\n    return None\n"
    )
    saved = {
        (os, "system"): os.system,
        (subprocess, "Popen"): subprocess.Popen,
        (subprocess, "run"): subprocess.run,
        (usercode.importlib, "import_module"): usercode.importlib.import_module,
    }
    real_import = usercode.importlib.import_module

    def spy(name):
        def record(*args, **kwargs):
            if name == "import_module":  # only the loader's own imports count (torch imports lazily too)
                if sys._getframe(1).f_globals.get("__name__") == "pemn_compress.usercode":
                    calls.append((name, args[:1]))
                return real_import(*args, **kwargs)
            calls.append((name, args[:1]))
            raise RuntimeError(f"{name} called by a hostile file")

        return record

    sys.path.insert(0, str(workdir))
    try:
        for module, attr in saved:
            setattr(module, attr, spy(attr))
        yield calls
    finally:
        for (module, attr), value in saved.items():
            setattr(module, attr, value)
        sys.path.remove(str(workdir))
        sys.modules.pop(PLANTED_MODULE, None)


def _outcome(fn) -> tuple[str, str]:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - classified
        return type(exc).__name__, str(exc)
    return "accepted", ""


def check_hostile(h: Hostile, workdir: Path) -> dict:
    """Everything that happens when the readers, the loader and the CLI meet ``h`` (see module docstring)."""
    import torch
    from click.testing import CliRunner

    import pemn_compress as pemn
    from pemn_compress.cli import cli
    from pemn_compress.errors import PemnError
    from pemn_compress.fileformat.reader import decode_weights, read_pemn, verify_fingerprint

    fz = fuzz_loader()
    ref = fz.reference_reader()
    # a reference reader that reads version 1 only (while it is being taught version 2) is not compared
    skip_reference = fz.declared_version(h.blob) == 2 and not fz.reference_reads_v2()
    torch.set_num_threads(1)
    workdir = Path(workdir)
    path = workdir / f"{h.name}.pemn"
    path.write_bytes(h.blob)
    (workdir / MARKER).unlink(missing_ok=True)

    def package():
        pf = read_pemn(h.blob)
        verify_fingerprint(pf, decode_weights(pf))

    errors = {}
    with watch_execution(workdir) as calls:
        peak = None
        if h.max_peak is not None:  # what reading allocates, not what the file declares
            tracemalloc.start()
        started = time.perf_counter()
        read, read_msg = _outcome(package)
        read_seconds = time.perf_counter() - started
        if h.max_peak is not None:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        reference, ref_msg = _outcome(lambda: ref.read(h.blob))
        model = make_vectors().SKELETONS[h.skeleton]() if h.skeleton else None
        load, load_msg = _outcome(lambda: pemn.load(h.blob, device="cpu", model=model))
        cli_runs = {}
        for command in () if h.heavy else ("inspect", "verify"):
            result = CliRunner().invoke(cli, [command, str(path)])
            text = result.output  # stdout and stderr, as a terminal would show them
            cli_runs[command] = {
                "exit": result.exit_code,
                "raw_esc": ESC in text,
                "traceback": "Traceback" in text,
                "text": text,
            }
        errors = {"read": read_msg, "reference": ref_msg, "load": load_msg}
    executed = (workdir / MARKER).exists()
    pemn_errors = {
        name
        for name in dir(pemn)
        if isinstance(getattr(pemn, name), type) and issubclass(getattr(pemn, name), PemnError)
    }
    return {
        "name": h.name,
        "group": h.group,
        "description": h.description,
        "bytes": len(h.blob),
        "read_seconds": read_seconds,
        "read_peak": peak,
        "max_peak": h.max_peak,
        "read": read,
        "reference": reference,
        "load": load,
        "messages": errors,
        "expected_read": h.read,
        "expected_load": h.load,
        "message": h.message,
        "read_is_pemn_error": read == "accepted" or read in pemn_errors,
        "load_is_pemn_error": load == "accepted" or load in pemn_errors,
        "reference_agrees": skip_reference or (read == "accepted") == (reference == "accepted"),
        "reference_skipped": skip_reference,
        "calls": [c[0] + (f"({c[1][0]!r})" if c[1] else "") for c in calls],
        "executed": executed,
        "cli": {k: {kk: vv for kk, vv in v.items() if kk != "text"} for k, v in cli_runs.items()},
        "cli_text": {k: v["text"] for k, v in cli_runs.items()},
    }


def problems(result: dict) -> list[str]:
    """What is wrong with one ``check_hostile`` result (empty: the file was handled as it must be)."""
    out = []
    if result["read"] != result["expected_read"]:
        out.append(
            f"readers: expected {result['expected_read']}, got {result['read']}: {result['messages']['read'][:160]}"
        )
    if result["load"] != result["expected_load"]:
        out.append(
            f"load: expected {result['expected_load']}, got {result['load']}: {result['messages']['load'][:160]}"
        )
    refusal = result["messages"]["read"] if result["read"] != "accepted" else result["messages"]["load"]
    if result["message"] and result["message"] not in refusal:
        out.append(f"message {result['message']!r} not in {refusal[:160]!r}")
    if not (result["read_is_pemn_error"] and result["load_is_pemn_error"]):
        out.append("an error that is not a PemnError")
    if not result["reference_agrees"]:
        out.append(f"reference reader disagrees: {result['reference']}")
    if result.get("max_peak") is not None and result["read_peak"] > result["max_peak"]:
        out.append(f"reading allocated {result['read_peak']:,} bytes (traced), over {result['max_peak']:,}")
    if result["executed"] or any(not c.startswith("import_module") for c in result["calls"]):
        out.append(f"code ran: {result['calls']}, marker {result['executed']}")
    if any(c.startswith("import_module") for c in result["calls"]):
        out.append(f"an import was attempted: {result['calls']}")
    for command, run in result["cli"].items():
        if run["raw_esc"] or run["traceback"] or run["exit"] not in (0, 1, 2):
            out.append(f"pemn {command}: exit {run['exit']}, raw ESC {run['raw_esc']}, traceback {run['traceback']}")
    return out


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for hostile in build_hostile():
            res = check_hostile(hostile, Path(tmp))
            print(f"{hostile.name:40s} read {res['read']:18s} load {res['load']:18s} {problems(res) or 'ok'}")
